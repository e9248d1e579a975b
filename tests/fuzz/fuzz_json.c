/* libFuzzer target: JSON parse and every accessor on arbitrary input. */
#define MGOP_NO_MAIN
#include "../../multigres-op.c"

static jsmntok_t fz_tok[4096];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct mgop_json j;
  char s[256];
  long long v;
  int b;
  { /* dropping managedFields: in bounds on any bytes, never longer, and
     * what parsed before still parses (one value less, at most) */
    static char copy[1 << 20];
    static jsmntok_t tok3[4096];
    struct mgop_json j3;
    size_t n = size < sizeof(copy) ? size : sizeof(copy), m;
    int before;
    memcpy(copy, data, n);
    before = mgop_json_parse(&j3, copy, n, tok3, 4096);
    m = mgop_json_drop_managed_fields(copy, n);
    if (m > n || (before == 0 && mgop_json_parse(&j3, copy, m, tok3, 4096) != 0)) __builtin_trap();
    memcpy(copy, data, n); /* one object's: the same promises */
    m = mgop_json_drop_object_managed_fields(copy, n);
    if (m > n || (before == 0 && mgop_json_parse(&j3, copy, m, tok3, 4096) != 0)) __builtin_trap();
  }
  if (mgop_json_parse(&j, (const char *)data, size, fz_tok, 4096)) return 0;
  for (int t = 0; t < j.ntok; t++) {
    mgop_json_str(&j, t, s, sizeof(s));
    mgop_json_i64(&j, t, &v);
    mgop_json_bool(&j, t, &b);
    mgop_json_next(&j, t);
    mgop_json_at(&j, t, 1);
  }
  mgop_json_path_str(&j, 0, "metadata.name", s, sizeof(s));
  mgop_json_path(&j, 0, "items[0].metadata.labels");
  mgop_json_path(&j, 0, "a[1][2].b");
  { /* the canonical hash: bounded, and the same for our own re-encoding */
    static char out[64 * 1024];
    struct mgop_buf ob;
    struct mgop_jw w;
    static jsmntok_t tok2[4096];
    struct mgop_json j2;
    uint64_t h = mgop_json_canon_hash(&j, 0);
    mgop_buf_init(&ob, out, sizeof(out));
    mgop_jw_init(&w, &ob);
    mgop_jw_copy(&w, &j, 0);
    if (h && !ob.overflow && mgop_json_parse(&j2, ob.p, ob.len, tok2, 4096) == 0 && mgop_json_canon_hash(&j2, 0) != h)
      __builtin_trap();
  }
  return 0;
}
