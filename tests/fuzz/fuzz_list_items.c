/* libFuzzer target: the streaming LIST scanner, fed whole and in pieces whose
 * sizes the input chooses (first byte); both ways must hand over the same
 * items (count and bytes, an FNV hash of each), flag the same ones as
 * truncated, and end the same way. Every whole item goes through jsmn as
 * the list does. A small item buffer makes truncation reachable. */
#define MGOP_NO_MAIN
#include "../../multigres-op.c"

struct fz_seen { uint64_t hash; unsigned long n, truncated; };
static int fz_item(void *ctx, char *item, size_t n, int truncated) {
  static jsmntok_t tok[256];
  struct fz_seen *s = ctx;
  struct mgop_json j;
  s->hash = mgop_fnv1a64(s->hash, item, n) ^ (uint64_t)truncated;
  s->n++;
  s->truncated += (unsigned long)truncated;
  if (!truncated) mgop_json_parse(&j, item, n, tok, 256);
  return 0;
}

static int fz_run(const uint8_t *data, size_t size, size_t piece, struct fz_seen *seen) {
  static struct mgop_list_scan s;
  static char item[512];
  static jsmntok_t tok[128];
  struct mgop_json env;
  int rc = MGOP_OK;
  memset(seen, 0, sizeof(*seen));
  seen->hash = MGOP_FNV64_INIT;
  mgop_list_scan_init(&s, item, sizeof(item), fz_item, seen);
  for (size_t off = 0; off < size && !rc; off += piece)
    rc = mgop_list_scan_feed(&s, (const char *)data + off, size - off < piece ? size - off : piece);
  if (!rc) rc = mgop_list_scan_end(&s, &env, tok, 128) ? 1 : 0;
  if (s.items != seen->n || s.truncated != seen->truncated) __builtin_trap();
  return rc ? (rc == 1 ? 1 : 2) : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct fz_seen whole, split;
  size_t piece;
  int r1, r2;
  if (size < 1) return 0;
  piece = 1 + data[0] % 17;
  data++, size--;
  mgop_log_level = MGOP_ERROR + 1;
  r1 = fz_run(data, size, size ? size : 1, &whole);
  r2 = fz_run(data, size, piece, &split);
  /* a scan error may stop the split run earlier, never elsewhere */
  if (r1 != r2 || whole.n != split.n || whole.hash != split.hash) __builtin_trap();
  return 0;
}
