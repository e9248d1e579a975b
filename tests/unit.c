/* Unit tests for multigres-op. Includes the whole program (MGOP_NO_MAIN) so
 * static functions are reachable. Ends with the line "N passed, N failed".
 *
 * Table of contents
 *   1. Harness
 *   2. Chunked decoder and line splitter
 *   3. HTTP response head
 *   4. JSON accessors and writer
 *   5. kubeconfig and in-cluster config
 *   6. Scripted fake API server (faults a real one can't produce on demand)
 *   7. TLS against a local mbedTLS server
 *   8. Flags
 *   9. Runner
 *  10. Webhook and metrics mechanism: PKI, request parser, HTTP(S) server
 *  11. Topology: protobuf wire format, base64, etcd responses, records
 *  12. The field walk: every CRD field acted on, refused, or listed
 */
#define MGOP_NO_MAIN
#define MGOP_DNS_WAIT_MS 200 /* test_dns_deadline: 3 s in the operator */
#include "../multigres-op.c"

#include <sys/wait.h>

/* ======================================================================
 * 1. Harness
 * ==================================================================== */
static int t_failed_checks;
static const char *t_fixtures = "tests/fixtures";

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "    CHECK failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      t_failed_checks++;                                                        \
    }                                                                           \
  } while (0)
#define CHECK_STR(a, b)                                                                              \
  do {                                                                                               \
    const char *a_ = (a), *b_ = (b);                                                                 \
    if (strcmp(a_, b_) != 0) {                                                                       \
      fprintf(stderr, "    CHECK_STR failed at %s:%d: \"%s\" != \"%s\"\n", __FILE__, __LINE__, a_, b_); \
      t_failed_checks++;                                                                             \
    }                                                                                                \
  } while (0)

static unsigned t_rand_state = 12345;
static unsigned t_rand(void) {
  t_rand_state = t_rand_state * 1103515245u + 12345u;
  return (t_rand_state >> 16) & 0x7fff;
}

/* ======================================================================
 * 2. Chunked decoder and line splitter
 * ==================================================================== */
static const char t_chunked_msg[] =
    "5\r\nhello\r\n"
    "6;name=value\r\n world\r\n"
    "1A\r\nabcdefghijklmnopqrstuvwxyz\r\n"
    "0\r\n"
    "X-Trailer: 1\r\n"
    "\r\n"
    "NEXT";
static const char t_chunked_payload[] = "hello worldabcdefghijklmnopqrstuvwxyz";

/* Decodes msg fed in the given split sizes; returns payload, consumed bytes. */
static int t_decode_split(const char *msg, size_t len, const size_t *splits, size_t nsplits, char *out,
                          size_t *outlen, size_t *consumed, int *state) {
  struct mgop_chunked d;
  size_t pos = 0, o = 0, s = 0;
  mgop_chunked_init(&d);
  while (pos < len && d.state != MGOP_CH_DONE) {
    size_t take = nsplits ? splits[s++ % nsplits] : 1;
    unsigned char piece[256];
    size_t outn = 0;
    long used;
    if (take > len - pos) take = len - pos;
    if (take > sizeof(piece)) take = sizeof(piece);
    memcpy(piece, msg + pos, take);
    used = mgop_chunked_decode(&d, piece, take, piece, &outn); /* in place, as the reader does */
    if (used < 0) return (int)used;
    memcpy(out + o, piece, outn);
    o += outn;
    pos += (size_t)used;
    if ((size_t)used < take && d.state != MGOP_CH_DONE) return -100; /* must consume all unless done */
  }
  *outlen = o;
  *consumed = pos;
  *state = d.state;
  return 0;
}

static void test_chunked_whole(void) {
  char out[256];
  size_t outlen, consumed, split = sizeof(t_chunked_msg);
  int state;
  CHECK(t_decode_split(t_chunked_msg, sizeof(t_chunked_msg) - 1, &split, 1, out, &outlen, &consumed, &state) == 0);
  CHECK(outlen == strlen(t_chunked_payload) && memcmp(out, t_chunked_payload, outlen) == 0);
  CHECK(state == MGOP_CH_DONE);
  CHECK(consumed == sizeof(t_chunked_msg) - 1 - 4); /* "NEXT" belongs to the next response */
}

static void test_chunked_bytewise(void) {
  char out[256];
  size_t outlen = 0, consumed = 0, one = 1;
  int state = -1;
  CHECK(t_decode_split(t_chunked_msg, sizeof(t_chunked_msg) - 1, &one, 1, out, &outlen, &consumed, &state) == 0);
  CHECK(outlen == strlen(t_chunked_payload) && memcmp(out, t_chunked_payload, outlen) == 0);
  CHECK(state == MGOP_CH_DONE);
  CHECK(consumed == sizeof(t_chunked_msg) - 1 - 4);
}

static void test_chunked_random_splits(void) {
  /* a long body with many chunk sizes, decoded under 500 random splittings */
  static char msg[64 * 1024], want[32 * 1024], out[32 * 1024];
  size_t mlen = 0, wlen = 0;
  int ok = 1;
  for (int c = 0; c < 200; c++) {
    size_t n = 1 + t_rand() % 150;
    mlen += (size_t)sprintf(msg + mlen, c % 3 ? "%zx\r\n" : "%zX;ext=%d\r\n", n, c);
    for (size_t i = 0; i < n; i++) {
      char ch = (char)('a' + (t_rand() % 26));
      if (i % 37 == 36) ch = '\n'; /* watch lines cross chunk edges */
      msg[mlen++] = ch;
      want[wlen++] = ch;
    }
    msg[mlen++] = '\r';
    msg[mlen++] = '\n';
  }
  mlen += (size_t)sprintf(msg + mlen, "0\r\n\r\n");
  for (int trial = 0; trial < 500; trial++) {
    size_t splits[16], outlen, consumed;
    int state;
    for (int i = 0; i < 16; i++) splits[i] = 1 + t_rand() % (trial % 2 ? 7 : 200);
    if (t_decode_split(msg, mlen, splits, 16, out, &outlen, &consumed, &state) != 0 || outlen != wlen ||
        memcmp(out, want, wlen) != 0 || consumed != mlen || state != MGOP_CH_DONE) {
      ok = 0;
      fprintf(stderr, "    random split trial %d differs\n", trial);
      break;
    }
  }
  CHECK(ok);
}

static void test_chunked_errors(void) {
  static const char *bad[] = {
      "zz\r\n",                       /* not hex */
      "\r\n",                         /* empty size */
      "5\r\nhelloX\r\n",              /* data not followed by CRLF */
      "1000000000000000\r\n",         /* 16 hex digits: absurd size */
      "5\rX",                         /* CR not followed by LF */
      "0\r\n\rX",                     /* bad final CRLF */
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char out[64];
    size_t outlen, consumed, one = 1;
    int state;
    int r = t_decode_split(bad[i], strlen(bad[i]), &one, 1, out, &outlen, &consumed, &state);
    if (r != MGOP_ERR_HTTP) fprintf(stderr, "    bad chunked input %zu accepted (r=%d)\n", i, r);
    CHECK(r == MGOP_ERR_HTTP);
  }
}

struct t_lines_ctx { char got[8][64]; int n; };
static int t_on_line(void *ctx, char *line, size_t n) {
  struct t_lines_ctx *c = ctx;
  if (c->n < 8) snprintf(c->got[c->n++], sizeof(c->got[0]), "%.*s", (int)n, line);
  return 0;
}

static void test_lines(void) {
  char buf[16];
  struct mgop_lines l;
  struct t_lines_ctx c = {{{0}}, 0};
  mgop_lines_init(&l, buf, sizeof(buf), t_on_line, &c);
  CHECK(mgop_lines_feed(&l, "ab", 2) == 0);
  CHECK(mgop_lines_feed(&l, "c\nde", 4) == 0);
  CHECK(mgop_lines_feed(&l, "f\n\n", 3) == 0); /* empty line ignored */
  CHECK(mgop_lines_feed(&l, "0123456789", 10) == 0);
  CHECK(mgop_lines_feed(&l, "abcdefghij\nok\n", 14) == 0); /* 20-byte line > 15: skipped */
  CHECK(c.n == 3);
  CHECK_STR(c.got[0], "abc");
  CHECK_STR(c.got[1], "def");
  CHECK_STR(c.got[2], "ok");
  CHECK(l.overlong == 1);
  /* a line of exactly cap-1 bytes still fits */
  CHECK(mgop_lines_feed(&l, "123456789012345\n", 16) == 0);
  CHECK(c.n == 4 && l.overlong == 1);
}

/* --- streaming LIST scanner ---------------------------------------------- */
struct t_items { char got[8][160]; int n, truncated; };
static int t_on_item(void *ctx, char *item, size_t n, int truncated) {
  struct t_items *c = ctx;
  if (c->n < 8) snprintf(c->got[c->n], sizeof(c->got[0]), "%.*s", (int)n, item);
  c->n++;
  c->truncated += truncated;
  return 0;
}

/* Braces, brackets and escaped quotes inside strings; "items" as a value, as a
 * nested key and inside metadata; only the top-level items[] yields items. */
static const char t_list_body[] =
    " {\"kind\":\"items\",\"metadata\":{\"resourceVersion\":\"42\",\"continue\":\"c1\",\"items\":[1]},"
    "\"x\":{\"items\":[{\"no\":1}]},\"items\" : [ {\"metadata\":{\"name\":\"a\"},\"s\":\"}{][\\\"\\\\\"}"
    " ,\n{\"metadata\":{\"name\":\"b\\\"}\"},\"v\":[{\"items\":[]}]},{\"u\":\"\\u007d\"} ],\"trail\":\"]}\"}\r\n";
static const char *const t_list_items[] = {
    "{\"metadata\":{\"name\":\"a\"},\"s\":\"}{][\\\"\\\\\"}",
    "{\"metadata\":{\"name\":\"b\\\"}\"},\"v\":[{\"items\":[]}]}",
    "{\"u\":\"\\u007d\"}",
};

/* Feeds body in pieces (sizes cycled from splits) and checks what came out. */
static int t_scan_split(const char *body, size_t len, const size_t *splits, int nsplits) {
  static struct mgop_list_scan s;
  static char item[256];
  static jsmntok_t tok[64];
  struct t_items got = {{{0}}, 0, 0};
  struct mgop_json env;
  char rv[16], cont[16];
  int k = 0, ok;
  mgop_list_scan_init(&s, item, sizeof(item), t_on_item, &got);
  for (size_t off = 0; off < len;) {
    size_t n = splits[k++ % nsplits];
    if (n > len - off) n = len - off;
    if (mgop_list_scan_feed(&s, body + off, n)) return 0;
    off += n;
  }
  if (mgop_list_scan_end(&s, &env, tok, 64)) return 0;
  mgop_json_path_str(&env, 0, "metadata.resourceVersion", rv, sizeof(rv));
  mgop_json_path_str(&env, 0, "metadata.continue", cont, sizeof(cont));
  ok = got.n == 3 && !got.truncated && !strcmp(rv, "42") && !strcmp(cont, "c1");
  ok = ok && mgop_json_is(&env, mgop_json_key(&env, 0, "items"), JSMN_ARRAY) &&
       env.tok[mgop_json_key(&env, 0, "items")].size == 0;
  for (int i = 0; ok && i < 3; i++) ok = !strcmp(got.got[i], t_list_items[i]);
  return ok;
}

static void test_list_scan_splits(void) {
  size_t len = sizeof(t_list_body) - 1, one = 1, all = len;
  int bad = 0;
  CHECK(t_scan_split(t_list_body, len, &all, 1));
  CHECK(t_scan_split(t_list_body, len, &one, 1));
  for (int trial = 0; trial < 300; trial++) {
    size_t splits[8];
    for (int i = 0; i < 8; i++) splits[i] = 1 + t_rand() % (trial % 2 ? 5 : 60);
    bad += !t_scan_split(t_list_body, len, splits, 8);
  }
  CHECK(bad == 0);
}

static int t_scan_whole(const char *body, size_t cap, struct t_items *got, int *end_rc) {
  static struct mgop_list_scan s;
  static char item[256];
  static jsmntok_t tok[64];
  struct mgop_json env;
  int rc;
  memset(got, 0, sizeof(*got));
  mgop_list_scan_init(&s, item, cap, t_on_item, got);
  rc = mgop_list_scan_feed(&s, body, strlen(body));
  *end_rc = rc ? rc : mgop_list_scan_end(&s, &env, tok, 64);
  return rc;
}

/* metadata.managedFields go before an object is parsed, wherever metadata
 * is (a list item, a watch event's object); nothing else does */
static int t_drop_mf(const char *in, const char *want) {
  static char buf[512];
  size_t n = strlen(in);
  memcpy(buf, in, n + 1);
  n = mgop_json_drop_managed_fields(buf, n);
  buf[n] = 0;
  if (strcmp(buf, want)) fprintf(stderr, "    drop_managed_fields(%s)\n      = %s\n   want %s\n", in, buf, want);
  return !strcmp(buf, want);
}

static void test_drop_managed_fields(void) {
  static jsmntok_t tok[64];
  struct mgop_json j;
  char name[8];
  const char *same[] = {
      "{\"spec\":{\"managedFields\":[1]},\"data\":{\"managedFields\":\"x\"}}", /* not metadata */
      "{\"metadata\":{\"labels\":{\"managedFields\":[1]}}}",                   /* a level down */
      "{\"metadata\":{\"name\":\"\\\"managedFields\\\":[1]\"}}",              /* inside a string */
      "{\"kind\":\"metadata\",\"x\":{\"managedFields\":[1]}}",                   /* "metadata" a value */
      "{\"metadata\":{\"managedFields\":null}}",                                /* not a list */
      "{\"metadata\":{\"managedFields\":[{\"a\":1}",                           /* cut short */
      "{\"metadata\":{\"name\":\"managedFields\"}}",                            /* a value */
  };
  CHECK(t_drop_mf("{\"metadata\":{\"name\":\"a\",\"managedFields\":[{\"manager\":\"x\",\"fieldsV1\":{\"f:a\":{}}}]},"
                  "\"spec\":{}}",
                  "{\"metadata\":{\"name\":\"a\"},\"spec\":{}}"));
  CHECK(t_drop_mf("{\"metadata\":{\"managedFields\":[],\"name\":\"a\"}}", "{\"metadata\":{\"name\":\"a\"}}"));
  CHECK(t_drop_mf("{\"metadata\":{\"managedFields\":[{}]}}", "{\"metadata\":{}}"));
  CHECK(t_drop_mf("{\"type\":\"ADDED\",\"object\":{\"metadata\" : {\"uid\":\"u\" , \"managedFields\" : [ {\"a\":\"]\\\"}\"} ] }"
                  ",\"status\":{\"metadata\":{\"managedFields\":[2],\"b\":1}}}}",
                  "{\"type\":\"ADDED\",\"object\":{\"metadata\" : {\"uid\":\"u\"  },\"status\":{\"metadata\":{\"b\":1}}}}"));
  for (size_t i = 0; i < sizeof(same) / sizeof(same[0]); i++) CHECK(t_drop_mf(same[i], same[i]));
  /* one object: its own metadata's only, and nothing past where that closes */
  {
    static const struct { const char *in, *want; } one[] = {
        {"{\"type\":\"ADDED\",\"object\":{\"metadata\" : {\"uid\":\"u\" , \"managedFields\" : [ {\"a\":\"]\\\"}\"} ] }"
         ",\"status\":{\"metadata\":{\"managedFields\":[2],\"b\":1}}}}",
         "{\"type\":\"ADDED\",\"object\":{\"metadata\" : {\"uid\":\"u\"  },\"status\":{\"metadata\":{\"managedFields\":[2],\"b\":1}}}}"},
        {"{\"kind\":\"metadata\",\"metadata\":{\"labels\":{\"metadata\":\"x\"},\"managedFields\":[{}]},\"spec\":{}}",
         "{\"kind\":\"metadata\",\"metadata\":{\"labels\":{\"metadata\":\"x\"}},\"spec\":{}}"},
        /* the first metadata holds none: what follows is not looked at */
        {"{\"metadata\":{\"name\":\"a\"},\"spec\":{\"metadata\":{\"managedFields\":[1]}}}",
         "{\"metadata\":{\"name\":\"a\"},\"spec\":{\"metadata\":{\"managedFields\":[1]}}}"},
        {"{\"metadata\":{\"managedFields\":[{\"a\":1}", "{\"metadata\":{\"managedFields\":[{\"a\":1}"}, /* cut short */
        {"{\"spec\":{}}", "{\"spec\":{}}"},
    };
    for (size_t i = 0; i < sizeof(one) / sizeof(one[0]); i++) {
      static char buf[512];
      size_t n = strlen(one[i].in);
      memcpy(buf, one[i].in, n + 1);
      n = mgop_json_drop_object_managed_fields(buf, n);
      buf[n] = 0;
      if (strcmp(buf, one[i].want)) fprintf(stderr, "    drop_object_managed_fields(%s)\n      = %s\n", one[i].in, buf);
      CHECK_STR(buf, one[i].want);
    }
  }
  { /* what is left parses, and reads the same */
    char doc[] = "{\"metadata\":{\"managedFields\":[{\"f:x\":{}}],\"name\":\"n1\"},\"x\":[1]}";
    size_t n = mgop_json_drop_managed_fields(doc, strlen(doc));
    CHECK(mgop_json_parse(&j, doc, n, tok, 64) == 0 && mgop_json_path_str(&j, 0, "metadata.name", name, sizeof(name)) == 0);
    CHECK_STR(name, "n1");
    CHECK(mgop_json_key(&j, mgop_json_key(&j, 0, "metadata"), "managedFields") < 0);
  }
}

static void test_list_scan_errors(void) {
  static char big_env[MGOP_LIST_ENVELOPE_MAX + 64];
  struct t_items got;
  int end;
  CHECK(t_scan_whole("[{}]", 256, &got, &end) == MGOP_ERR_PARSE);
  CHECK(t_scan_whole("{\"items\":[1]}", 256, &got, &end) == MGOP_ERR_PARSE);
  CHECK(t_scan_whole("{\"items\":[{}{}]}", 256, &got, &end) == MGOP_ERR_PARSE && got.n == 1);
  CHECK(t_scan_whole("{\"items\":[{},]}", 256, &got, &end) == MGOP_ERR_PARSE);
  CHECK(t_scan_whole("{\"items\":[,{}]}", 256, &got, &end) == MGOP_ERR_PARSE);
  CHECK(t_scan_whole("{\"items\":[]} x", 256, &got, &end) == MGOP_ERR_PARSE);
  CHECK(t_scan_whole("{\"items\":[]}{}", 256, &got, &end) == MGOP_ERR_PARSE);
  /* the scanner leaves JSON grammar to jsmn: a bad envelope fails at the end */
  CHECK(t_scan_whole("{\"items\":[],\"a\":tru}", 256, &got, &end) == 0 && end == MGOP_ERR_PARSE);
  CHECK(t_scan_whole("{\"items\":[{\"a\":\"}", 256, &got, &end) == 0 && end == MGOP_ERR_PARSE); /* truncated */
  CHECK(t_scan_whole("{\"metadata\":{}}", 256, &got, &end) == 0 && end == MGOP_ERR_TYPE);      /* no items */
  CHECK(t_scan_whole("{\"items\":{}}", 256, &got, &end) == 0 && end == MGOP_ERR_TYPE);
  CHECK(t_scan_whole("{\"items\":null}", 256, &got, &end) == 0 && end == 0 && got.n == 0);
  CHECK(t_scan_whole("{\"items\":[]}", 256, &got, &end) == 0 && end == 0 && got.n == 0);
  /* an element over the item buffer is cut short and flagged; the next is whole */
  CHECK(t_scan_whole("{\"items\":[{\"name\":\"0123456789abcdef\"},{\"n\":1}]}", 16, &got, &end) == 0 && end == 0);
  CHECK(got.n == 2 && got.truncated == 1 && !strcmp(got.got[0], "{\"name\":\"0123456") &&
        !strcmp(got.got[1], "{\"n\":1}"));
  /* exactly cap bytes still fits */
  CHECK(t_scan_whole("{\"items\":[{\"n\":1}]}", 7, &got, &end) == 0 && end == 0 && got.n == 1 && !got.truncated);
  /* the envelope is bounded, with the knob named */
  memset(big_env, 'x', sizeof(big_env) - 1);
  memcpy(big_env, "{\"kind\":\"", 9);
  CHECK(t_scan_whole(big_env, 256, &got, &end) == MGOP_ERR_TOOBIG && strstr(mgop_errmsg(), "MGOP_LIST_ENVELOPE_MAX"));
  /* and the name of a skipped object is found for the log */
  {
    char name[16];
    const char obj[] = "{\"metadata\":{\"annotations\":{\"x\":\"\\\"name\\\":\\\"no\"},\"name\":\"big-one\",\"namespace";
    mgop_list_item_str(obj, sizeof(obj) - 1, "name", name, sizeof(name));
    CHECK_STR(name, "big-one");
    mgop_list_item_str(obj, sizeof(obj) - 1, "namespace", name, sizeof(name));
    CHECK_STR(name, "");
  }
}

/* ======================================================================
 * 3. HTTP response head
 * ==================================================================== */
static void test_http_head(void) {
  struct mgop_http_resp r;
  const char *h1 = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ntransfer-encoding: Chunked\r\n\r\n";
  const char *h2 = "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 12\r\nConnection: close\r\n\r\n";
  const char *h3 = "HTTP/1.0 204 No Content\n\n";
  CHECK(mgop_http_parse_head(h1, strlen(h1), &r, 0) == 0);
  CHECK(r.status == 200 && r.chunked && r.content_length == -1 && !r.close && !r.body_done);
  CHECK_STR(r.content_type, "application/json");
  CHECK(mgop_http_parse_head(h2, strlen(h2), &r, 0) == 0);
  CHECK(r.status == 429 && r.retry_after_s == 7 && r.content_length == 12 && r.close);
  CHECK(mgop_http_parse_head(h3, strlen(h3), &r, 0) == 0);
  CHECK(r.status == 204 && r.close && r.body_done);
  CHECK(mgop_http_parse_head("HTTP/1.1 20 OK\r\n\r\n", 18, &r, 0) == MGOP_ERR_HTTP);
  CHECK(mgop_http_parse_head("SPDY/3 200 OK\r\n\r\n", 17, &r, 0) == MGOP_ERR_HTTP);
  {
    const char *bad = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
    CHECK(mgop_http_parse_head(bad, strlen(bad), &r, 0) == MGOP_ERR_HTTP);
    bad = "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n";
    CHECK(mgop_http_parse_head(bad, strlen(bad), &r, 0) == MGOP_ERR_HTTP);
    bad = "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n";
    CHECK(mgop_http_parse_head(bad, strlen(bad), &r, 0) == MGOP_ERR_HTTP);
  }
}

/* ======================================================================
 * 4. JSON accessors and writer
 * ==================================================================== */
static jsmntok_t t_tok[256];

static void test_json_accessors(void) {
  const char *doc = "{\"metadata\":{\"name\":\"minimal\",\"generation\":3,\"labels\":{\"a.b/c\":\"x\"}},"
                    "\"items\":[1,{\"k\":\"v\"},[true,false,null]],\"esc\":\"q\\\"\\\\\\n\\u00e9\\ud83d\\ude00\","
                    "\"neg\":-42, \"big\":123456789012, \"f\":1.5e3}";
  struct mgop_json j;
  char s[64];
  long long v;
  int b;
  CHECK(mgop_json_parse(&j, doc, strlen(doc), t_tok, 256) == 0);
  CHECK(mgop_json_path_str(&j, 0, "metadata.name", s, sizeof(s)) == 0);
  CHECK_STR(s, "minimal");
  CHECK(mgop_json_i64(&j, mgop_json_path(&j, 0, "metadata.generation"), &v) == 0 && v == 3);
  CHECK(mgop_json_i64(&j, mgop_json_path(&j, 0, "neg"), &v) == 0 && v == -42);
  CHECK(mgop_json_i64(&j, mgop_json_path(&j, 0, "big"), &v) == 0 && v == 123456789012LL);
  CHECK(mgop_json_i64(&j, mgop_json_path(&j, 0, "f"), &v) == MGOP_ERR_TYPE); /* not an integer */
  CHECK(mgop_json_path_str(&j, 0, "items[1].k", s, sizeof(s)) == 0);
  CHECK_STR(s, "v");
  CHECK(mgop_json_bool(&j, mgop_json_path(&j, 0, "items[2][0]"), &b) == 0 && b == 1);
  CHECK(mgop_json_bool(&j, mgop_json_path(&j, 0, "items[2][1]"), &b) == 0 && b == 0);
  CHECK(mgop_json_is_null(&j, mgop_json_path(&j, 0, "items[2][2]")));
  CHECK(mgop_json_path(&j, 0, "items[3]") == -1);
  CHECK(mgop_json_path(&j, 0, "items[-1]") == -1);
  CHECK(mgop_json_path(&j, 0, "items[x]") == -1);
  CHECK(mgop_json_path(&j, 0, "metadata.missing") == -1);
  CHECK(mgop_json_path(&j, 0, "metadata.name.deeper") == -1); /* a string has no keys */
  /* a dotted key can't be reached by path; mgop_json_key takes it whole */
  CHECK(mgop_json_key(&j, mgop_json_path(&j, 0, "metadata.labels"), "a.b/c") > 0);
  CHECK(mgop_json_path_str(&j, 0, "esc", s, sizeof(s)) == 0);
  CHECK_STR(s, "q\"\\\n\xc3\xa9\xf0\x9f\x98\x80");
  /* wrong types are reported, never misread */
  CHECK(mgop_json_str(&j, mgop_json_path(&j, 0, "metadata.generation"), s, sizeof(s)) == MGOP_ERR_TYPE);
  CHECK(mgop_json_i64(&j, mgop_json_path(&j, 0, "metadata.name"), &v) == MGOP_ERR_TYPE);
  CHECK(mgop_json_bool(&j, mgop_json_path(&j, 0, "items"), &b) == MGOP_ERR_TYPE);
  CHECK(mgop_json_i64(&j, -1, &v) == MGOP_ERR_TYPE);
  /* output buffer too small */
  memset(s, 'x', sizeof(s));
  CHECK(mgop_json_path_str(&j, 0, "metadata.name", s, 4) == MGOP_ERR_TOOBIG);
  /* and leaves "", never a cut prefix without its NUL (a caller that ignores
   * the code, e.g. a pool's cell name in a stall message, read past it) */
  CHECK_STR(s, "");
}

static void test_json_malformed(void) {
  static const char *bad[] = {
      "",                       "   ",          "{",          "{\"a\":}",    "{\"a\" 1}",      "[1,2",
      "{\"a\":1}}",             "{\"a\":1} x",  "tru",        "{\"a\":tru}", "{\"a\":1.2.3}",  "{\"a\":-}",
      "{\"a\":\"\\x\"}",        "\"unterminated", "{1:2}",    "[1] [2]",     "{\"a\":nul}",    "{\"a\":+1}",
  };
  struct mgop_json j;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int r = mgop_json_parse(&j, bad[i], strlen(bad[i]), t_tok, 256);
    if (r == 0) {
      /* jsmn accepts bad escapes lexically: they must fail when decoded */
      char s[16];
      r = mgop_json_path_str(&j, 0, "a", s, sizeof(s));
    }
    if (r == 0) fprintf(stderr, "    malformed JSON %zu accepted: %s\n", i, bad[i]);
    CHECK(r != 0);
  }
  /* escapes that decode badly */
  {
    static const char *badesc[] = {"\"\\ud83d\"", "\"\\ude00\"", "\"\\u12\"", "\"\\u0000\""};
    for (size_t i = 0; i < 4; i++) {
      char s[16];
      /* rejected by the tokenizer or by the decoder, never accepted */
      int r = mgop_json_parse(&j, badesc[i], strlen(badesc[i]), t_tok, 256);
      if (r == 0) r = mgop_json_str(&j, 0, s, sizeof(s));
      CHECK(r == MGOP_ERR_PARSE);
    }
  }
  /* more tokens than we allow */
  {
    char big[2048];
    size_t n = 0;
    big[n++] = '[';
    for (int i = 0; i < 300; i++) n += (size_t)sprintf(big + n, "%s1", i ? "," : "");
    big[n++] = ']';
    CHECK(mgop_json_parse(&j, big, n, t_tok, 256) == MGOP_ERR_TOOBIG);
  }
}

static void test_json_writer(void) {
  char mem[256];
  struct mgop_buf b;
  struct mgop_jw w;
  struct mgop_json j;
  char s[32];
  long long v;
  mgop_buf_init(&b, mem, sizeof(mem));
  mgop_jw_init(&w, &b);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "name"); mgop_jw_str(&w, "a\"b\n\x01");
  mgop_jw_key(&w, "list"); mgop_jw_arr(&w); mgop_jw_i64(&w, 1); mgop_jw_bool(&w, 0); mgop_jw_null(&w);
  mgop_jw_obj(&w); mgop_jw_obj_end(&w); mgop_jw_arr_end(&w);
  mgop_jw_key(&w, "n"); mgop_jw_i64(&w, -7);
  mgop_jw_obj_end(&w);
  mgop_buf_cstr(&b);
  CHECK_STR(b.p, "{\"name\":\"a\\\"b\\n\\u0001\",\"list\":[1,false,null,{}],\"n\":-7}");
  CHECK(mgop_json_parse(&j, b.p, b.len, t_tok, 256) == 0);
  CHECK(mgop_json_path_str(&j, 0, "name", s, sizeof(s)) == 0);
  CHECK_STR(s, "a\"b\n\x01");
  CHECK(mgop_json_i64(&j, mgop_json_path(&j, 0, "n"), &v) == 0 && v == -7);
  /* overflow is sticky and reported */
  mgop_buf_init(&b, mem, 8);
  mgop_jw_init(&w, &b);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "a-long-key");
  CHECK(b.overflow);
}

/* Table-driven: every rule of the overrides merge. */
static void test_json_merge(void) {
  static const struct { const char *base, *over, *want, *rule; } cases[] = {
      {"{\"a\":1,\"b\":2}", "{\"b\":3,\"c\":4}", "{\"a\":1,\"b\":3,\"c\":4}", "maps merge; over wins"},
      {"{\"m\":{\"x\":1,\"y\":{\"z\":1}}}", "{\"m\":{\"y\":{\"w\":2}}}", "{\"m\":{\"x\":1,\"y\":{\"z\":1,\"w\":2}}}",
       "nested maps merge recursively"},
      {"{\"l\":[1,2,3]}", "{\"l\":[9]}", "{\"l\":[9]}", "lists replace whole"},
      {"{\"s\":\"a\"}", "{\"s\":{\"k\":1}}", "{\"s\":{\"k\":1}}", "a type change replaces"},
      {"{\"m\":{\"k\":1}}", "{\"m\":\"x\"}", "{\"m\":\"x\"}", "a scalar replaces a map"},
      {"{\"a\":1,\"b\":2}", "{\"a\":null}", "{\"b\":2}", "null removes the key"},
      {"{\"a\":1}", "{\"n\":null}", "{\"a\":1}", "null for a missing key adds nothing"},
      {"{\"a\":1}", "{}", "{\"a\":1}", "empty over changes nothing"},
      {"{}", "{\"a\":{\"b\":[{\"c\":\"d\\\"e\"}]}}", "{\"a\":{\"b\":[{\"c\":\"d\\\"e\"}]}}", "escapes survive"},
      {"{\"r\":{\"requests\":{\"cpu\":\"100m\",\"memory\":\"1Gi\"}}}", "{\"r\":{\"requests\":{\"cpu\":\"2\"}}}",
       "{\"r\":{\"requests\":{\"cpu\":\"2\",\"memory\":\"1Gi\"}}}", "partial resources keep the rest"},
  };
  static jsmntok_t tb[128], to[128];
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct mgop_json b, o;
    char mem[512];
    struct mgop_buf out;
    struct mgop_jw w;
    CHECK(mgop_json_parse(&b, cases[i].base, strlen(cases[i].base), tb, 128) == 0);
    CHECK(mgop_json_parse(&o, cases[i].over, strlen(cases[i].over), to, 128) == 0);
    mgop_buf_init(&out, mem, sizeof(mem));
    mgop_jw_init(&w, &out);
    mgop_json_merge(&w, &b, 0, &o, 0);
    mgop_buf_cstr(&out);
    if (strcmp(out.p, cases[i].want)) fprintf(stderr, "    merge rule \"%s\": got %s\n", cases[i].rule, out.p);
    CHECK(strcmp(out.p, cases[i].want) == 0);
  }
  /* absent sides */
  {
    struct mgop_json b;
    char mem[64];
    struct mgop_buf out;
    struct mgop_jw w;
    CHECK(mgop_json_parse(&b, "{\"a\":1}", 7, tb, 128) == 0);
    mgop_buf_init(&out, mem, sizeof(mem));
    mgop_jw_init(&w, &out);
    mgop_json_merge(&w, &b, 0, &b, -1);
    CHECK(strcmp(mgop_buf_cstr(&out), "{\"a\":1}") == 0);
  }
}

static void test_fnv(void) {
  /* published FNV-1a test vectors */
  CHECK(mgop_fnv1a32(MGOP_FNV32_INIT, "", 0) == 0x811c9dc5u);
  CHECK(mgop_fnv1a32(MGOP_FNV32_INIT, "a", 1) == 0xe40c292cu);
  CHECK(mgop_fnv1a32(MGOP_FNV32_INIT, "foobar", 6) == 0xbf9cf968u);
  CHECK(mgop_fnv1a64(MGOP_FNV64_INIT, "a", 1) == 0xaf63dc4c8601ec8cull);
  CHECK(mgop_fnv1a64(MGOP_FNV64_INIT, "foobar", 6) == 0x85944171f73967e8ull);
}

/* ======================================================================
 * 5. kubeconfig and in-cluster config
 * ==================================================================== */
static struct mgop_kubecfg t_cfg;
static char t_tmpdir[256];

static void t_write(const char *dir, const char *name, const char *text) {
  char path[512];
  FILE *f;
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  f = fopen(path, "w");
  if (!f) { perror(path); exit(3); }
  fputs(text, f);
  fclose(f);
}

static char *t_read_fixture(const char *name, char *buf, size_t cap) {
  char path[512];
  size_t n;
  snprintf(path, sizeof(path), "%s/%s", t_fixtures, name);
  if (mgop_read_file(path, buf, cap - 1, &n)) { fprintf(stderr, "missing fixture %s\n", path); exit(3); }
  buf[n] = 0;
  return buf;
}

static void t_b64(const char *in, char *out, size_t cap) {
  size_t olen;
  mbedtls_base64_encode((unsigned char *)out, cap, &olen, (const unsigned char *)in, strlen(in));
  out[olen] = 0;
}

static int t_load(const char *yaml, const char *ctx) {
  return mgop_kubecfg_from_yaml(&t_cfg, yaml, strlen(yaml), t_tmpdir, ctx);
}

static void test_kubeconfig_inline_certs(void) {
  static char ca[4096], crt[4096], key[4096], ca64[8192], crt64[8192], key64[8192], yaml[32768];
  t_b64(t_read_fixture("test-ca.crt", ca, sizeof(ca)), ca64, sizeof(ca64));
  t_b64(t_read_fixture("server.crt", crt, sizeof(crt)), crt64, sizeof(crt64));
  t_b64(t_read_fixture("server.key", key, sizeof(key)), key64, sizeof(key64));
  snprintf(yaml, sizeof(yaml),
           "apiVersion: v1\nkind: Config\ncurrent-context: dev\n"
           "clusters:\n- name: other\n  cluster:\n    server: https://10.0.0.1:1\n"
           "- name: local\n  cluster:\n    server: https://127.0.0.1:6443/\n    certificate-authority-data: %s\n"
           "contexts:\n- name: dev\n  context:\n    cluster: local\n    user: admin\n    namespace: team-a\n"
           "users:\n- name: admin\n  user:\n    client-certificate-data: %s\n    client-key-data: %s\n",
           ca64, crt64, key64);
  CHECK(t_load(yaml, NULL) == 0);
  CHECK_STR(t_cfg.scheme, "https");
  CHECK_STR(t_cfg.host, "127.0.0.1");
  CHECK_STR(t_cfg.port, "6443");
  CHECK_STR(t_cfg.path_prefix, "");
  CHECK_STR(t_cfg.namespace_, "team-a");
  CHECK(t_cfg.ca_len == strlen(ca) + 1 && memcmp(t_cfg.ca, ca, strlen(ca)) == 0);
  CHECK(t_cfg.cert_len == strlen(crt) + 1 && t_cfg.key_len == strlen(key) + 1);
  CHECK(t_cfg.token[0] == 0 && !t_cfg.insecure);
  /* the material must be usable by the TLS layer as loaded */
  {
    struct mgop_tls t;
    CHECK(mgop_tls_client_init(&t, &t_cfg) == 0);
    CHECK(t.ready && t.ca.raw.len > 0 && t.cert.raw.len > 0);
    mgop_tls_free(&t);
  }
}

static void test_kubeconfig_files_token_context(void) {
  static char yaml[4096];
  char ca[4096];
  t_read_fixture("test-ca.crt", ca, sizeof(ca));
  t_write(t_tmpdir, "ca.crt", ca);
  t_write(t_tmpdir, "tok", "file-token-1\n");
  snprintf(yaml, sizeof(yaml),
           "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
           "clusters:\n- name: c\n  cluster:\n    server: https://[::1]:8443/prefix/\n"
           "    certificate-authority: ca.crt\n    tls-server-name: kubernetes.default.svc\n"
           "- name: insecure\n  cluster:\n    server: https://example.test\n    insecure-skip-tls-verify: true\n"
           "contexts:\n- name: a\n  context: {cluster: c, user: tokuser}\n"
           "- name: b\n  context: {cluster: insecure, user: fileuser}\n"
           "users:\n- name: tokuser\n  user:\n    token: abc.def\n"
           "- name: fileuser\n  user:\n    tokenFile: tok\n");
  CHECK(t_load(yaml, NULL) == 0);
  CHECK_STR(t_cfg.host, "::1");
  CHECK_STR(t_cfg.port, "8443");
  CHECK_STR(t_cfg.path_prefix, "/prefix");
  CHECK_STR(t_cfg.tls_server_name, "kubernetes.default.svc");
  CHECK_STR(t_cfg.token, "abc.def");
  CHECK(t_cfg.ca_len == strlen(ca) + 1); /* read relative to the kubeconfig's dir */
  /* --context picks another context: insecure cluster, token from a file */
  CHECK(t_load(yaml, "b") == 0);
  CHECK_STR(t_cfg.context, "b");
  CHECK_STR(t_cfg.host, "example.test");
  CHECK_STR(t_cfg.port, "443");
  CHECK(t_cfg.insecure == 1 && t_cfg.ca_len == 0);
  CHECK_STR(t_cfg.token, "file-token-1");
  /* the token file rotates: a forced reload picks up the new one */
  t_write(t_tmpdir, "tok", "file-token-2");
  CHECK(mgop_kubecfg_reload_token(&t_cfg, mgop_now_ms(), 0) == 0);
  CHECK_STR(t_cfg.token, "file-token-1"); /* not yet due */
  CHECK(mgop_kubecfg_reload_token(&t_cfg, mgop_now_ms(), 1) == 0);
  CHECK_STR(t_cfg.token, "file-token-2");
}

static void test_kubeconfig_errors(void) {
  struct { const char *yaml, *ctx, *needle; } cases[] = {
      {"apiVersion: v1\nclusters: [\n", NULL, "not valid YAML"},
      {"- just\n- a list\n", NULL, "not a YAML mapping"},
      {"apiVersion: v1\nkind: Config\n", NULL, "no current-context"},
      {"current-context: x\ncontexts: []\n", NULL, "no context named \"x\""},
      {"current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n", NULL, "no cluster named \"c\""},
      {"current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\nclusters: [{name: c, cluster: {}}]\n",
       NULL, "server is missing"},
      {"current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
       "clusters: [{name: c, cluster: {server: 'ftp://h'}}]\n", NULL, "scheme must be https"},
      {"current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
       "clusters: [{name: c, cluster: {server: 'https://h:99999'}}]\n", NULL, "bad port"},
      {"current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
       "clusters: [{name: c, cluster: {server: 'https://h'}}]\n", NULL, "neither certificate-authority"},
      {"current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
       "clusters: [{name: c, cluster: {server: 'https://h', insecure-skip-tls-verify: true}}]\n"
       "users: [{name: u, user: {exec: {command: aws}}}]\n", NULL, "exec/auth-provider"},
      {"current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n"
       "clusters: [{name: c, cluster: {server: 'https://h', insecure-skip-tls-verify: true}}]\n"
       "users: [{name: u, user: {client-certificate-data: QUJD}}]\n", NULL, "without a key"},
      {"current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
       "clusters: [{name: c, cluster: {server: 'https://h', certificate-authority-data: '!!!'}}]\n", NULL,
       "not valid base64"},
      {"current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
       "clusters: [{name: c, cluster: {server: 'https://h', certificate-authority: /nonexistent/ca}}]\n", NULL,
       "cannot open /nonexistent/ca"},
      {"current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
       "clusters: [{name: c, cluster: {server: 'https://h', insecure-skip-tls-verify: true}}]\n", "nope",
       "no context named \"nope\""},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int r = t_load(cases[i].yaml, cases[i].ctx);
    if (r == 0 || !strstr(mgop_errmsg(), cases[i].needle))
      fprintf(stderr, "    kubeconfig case %zu: r=%d msg=\"%s\" (want \"%s\")\n", i, r, mgop_errmsg(),
              cases[i].needle);
    CHECK(r != 0 && strstr(mgop_errmsg(), cases[i].needle));
  }
  /* a CA that is not a certificate fails in TLS setup with a clear message */
  {
    const char *y = "current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\n"
                    "clusters: [{name: c, cluster: {server: 'https://h', certificate-authority-data: QUJD}}]\n";
    struct mgop_tls t;
    CHECK(t_load(y, NULL) == 0);
    CHECK(mgop_tls_client_init(&t, &t_cfg) == MGOP_ERR_TLS && strstr(mgop_errmsg(), "certificate-authority"));
    mgop_tls_free(&t);
  }
}

static void test_in_cluster(void) {
  char sa[300], ca[4096];
  snprintf(sa, sizeof(sa), "%s/sa", t_tmpdir);
  mkdir(sa, 0700);
  t_write(sa, "ca.crt", t_read_fixture("test-ca.crt", ca, sizeof(ca)));
  t_write(sa, "token", "sa-token-1\n");
  t_write(sa, "namespace", "multigres-operator\n");
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
  CHECK(mgop_kubecfg_in_cluster(&t_cfg, sa) == MGOP_ERR_CONFIG && strstr(mgop_errmsg(), "KUBERNETES_SERVICE_HOST"));
  setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  CHECK(mgop_kubecfg_in_cluster(&t_cfg, sa) == 0);
  CHECK_STR(t_cfg.host, "10.96.0.1");
  CHECK_STR(t_cfg.port, "443");
  CHECK_STR(t_cfg.tls_server_name, ""); /* verified as 10.96.0.1: an iPAddress SAN */
  CHECK_STR(t_cfg.token, "sa-token-1");
  CHECK_STR(t_cfg.namespace_, "multigres-operator");
  CHECK_STR(t_cfg.source, "in-cluster");
  /* kubelet rotates the projected token: the reload picks it up */
  t_write(sa, "token", "sa-token-2\n");
  CHECK(mgop_kubecfg_reload_token(&t_cfg, t_cfg.token_loaded_ms + MGOP_TOKEN_RELOAD_MS + 1, 0) == 0);
  CHECK_STR(t_cfg.token, "sa-token-2");
  /* an empty token file is an error, and the old token stays */
  t_write(sa, "token", "\n");
  CHECK(mgop_kubecfg_reload_token(&t_cfg, 0, 1) == MGOP_ERR_CONFIG);
  CHECK_STR(t_cfg.token, "sa-token-2");
  setenv("KUBERNETES_SERVICE_PORT", "notaport", 1);
  CHECK(mgop_kubecfg_in_cluster(&t_cfg, sa) == MGOP_ERR_CONFIG);
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
}

static void test_url_parse(void) {
  char s[8], h[64], p[8], path[64];
  CHECK(mgop_url_parse("https://a.b:6443", s, 8, h, 64, p, 8, path, 64) == 0);
  CHECK_STR(h, "a.b"); CHECK_STR(p, "6443"); CHECK_STR(path, "");
  CHECK(mgop_url_parse("http://h/x/y//", s, 8, h, 64, p, 8, path, 64) == 0);
  CHECK_STR(s, "http"); CHECK_STR(p, "80"); CHECK_STR(path, "/x/y");
  CHECK(mgop_url_parse("https://[fe80::1]:1/", s, 8, h, 64, p, 8, path, 64) == 0);
  CHECK_STR(h, "fe80::1");
  CHECK(mgop_url_parse("a.b:6443", s, 8, h, 64, p, 8, path, 64) == MGOP_ERR_CONFIG);
  CHECK(mgop_url_parse("https://:1", s, 8, h, 64, p, 8, path, 64) == MGOP_ERR_CONFIG);
  CHECK(mgop_url_parse("https://h:0", s, 8, h, 64, p, 8, path, 64) == MGOP_ERR_CONFIG);
  CHECK(mgop_url_parse("https://h:1x", s, 8, h, 64, p, 8, path, 64) == MGOP_ERR_CONFIG);
  CHECK(mgop_url_parse("https://[::1", s, 8, h, 64, p, 8, path, 64) == MGOP_ERR_CONFIG);
}

/* ======================================================================
 * 6. Scripted fake API server
 * A forked child answers each accepted connection's requests from a script
 * of raw responses, so a test can inject what a real API server won't
 * produce on demand: 410s, 429s, truncated chunks, split events.
 * ==================================================================== */
struct t_step { const char *expect; const char *reply; int close_after; };

static int t_listen(int *port) {
  struct sockaddr_in a;
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 8)) { perror("bind"); exit(3); }
  getsockname(fd, (struct sockaddr *)&a, &len);
  *port = ntohs(a.sin_port);
  return fd;
}

/* Reads one request head; returns its first line. */
static int t_read_request(int fd, char *line, size_t cap) {
  char buf[8192];
  size_t n = 0;
  while (n < sizeof(buf) - 1) {
    ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
    if (r <= 0) return -1;
    n += (size_t)r;
    buf[n] = 0;
    if (strstr(buf, "\r\n\r\n")) break;
  }
  snprintf(line, cap, "%.*s", (int)strcspn(buf, "\r\n"), buf);
  return 0;
}

/* Child: serve the steps in order, whichever connection asks next (a watch
 * has its own connection beside the request one). "expect" must be a
 * substring of the request line or the child exits 1, which the test sees.
 * Replies are written in small pieces so chunk edges fall anywhere. */
static void t_serve(int lfd, const struct t_step *steps, int n) {
  int conns[8], nconn = 0;
  for (int i = 0; i < n; i++) {
    char line[2048];
    int cfd = -1;
    while (cfd < 0) {
      struct pollfd p[9];
      p[0] = (struct pollfd){lfd, POLLIN, 0};
      for (int c = 0; c < nconn; c++) p[c + 1] = (struct pollfd){conns[c], POLLIN, 0};
      int polled = nconn; /* a connection accepted now is polled next turn */
      if (poll(p, (nfds_t)nconn + 1, 10000) <= 0) _exit(4);
      if (p[0].revents && nconn < 8) conns[nconn++] = accept(lfd, NULL, NULL);
      for (int c = 0; c < polled && cfd < 0; c++) {
        if (!p[c + 1].revents) continue;
        if (t_read_request(conns[c], line, sizeof(line)) == 0) {
          cfd = conns[c];
        } else { /* the client closed this one */
          close(conns[c]);
          conns[c--] = conns[--nconn];
          break;
        }
      }
    }
    if (!strstr(line, steps[i].expect)) {
      fprintf(stderr, "    fake server step %d: got \"%s\", want \"%s\"\n", i, line, steps[i].expect);
      _exit(1);
    }
    for (size_t off = 0, len = strlen(steps[i].reply); off < len;) {
      size_t piece = 1 + (size_t)(t_rand() % (len > 4096 ? 4096 : 9));
      if (piece > len - off) piece = len - off;
      if (write(cfd, steps[i].reply + off, piece) < 0) _exit(2);
      off += piece;
      if (t_rand() % 4 == 0) usleep(200);
    }
    if (steps[i].close_after) {
      for (int c = 0; c < nconn; c++)
        if (conns[c] == cfd) conns[c] = conns[--nconn];
      close(cfd);
    }
  }
  usleep(100000);
  _exit(0);
}

static pid_t t_fake_start(const struct t_step *steps, int n, int *port) {
  int lfd = t_listen(port);
  pid_t pid = fork();
  if (pid == 0) t_serve(lfd, steps, n);
  close(lfd);
  return pid;
}

static int t_fake_wait(pid_t pid) {
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 99;
}

static void t_fake_client(struct mgop_kube *k, int port) {
  memset(&t_cfg, 0, sizeof(t_cfg));
  snprintf(t_cfg.scheme, sizeof(t_cfg.scheme), "http");
  snprintf(t_cfg.host, sizeof(t_cfg.host), "127.0.0.1");
  snprintf(t_cfg.port, sizeof(t_cfg.port), "%d", port);
  mgop_kube_init(k, &t_cfg);
}

struct t_events { char log[16][96]; int n; };
static void t_record(void *ctx, struct mgop_watch *w, const char *type, const struct mgop_json *j, int obj) {
  struct t_events *e = ctx;
  char name[64];
  (void)w;
  if (!j) return; /* LIST_BEGIN / LIST_END */
  mgop_json_path_str(j, obj, "metadata.name", name, sizeof(name));
  if (e->n < 16) snprintf(e->log[e->n++], sizeof(e->log[0]), "%s %s", type, name);
}

#define T_OBJ(name, rv) "{\"metadata\":{\"name\":\"" name "\",\"resourceVersion\":\"" rv "\"}}"

/* Builds "HTTP/1.1 200 OK" + a chunked body, one chunk per piece (NULL-ended),
 * so chunk sizes are computed, never hand-counted. */
static const char *t_chunked(char *out, size_t cap, const char *const *pieces) {
  size_t n = (size_t)snprintf(out, cap, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  for (; *pieces; pieces++) n += (size_t)snprintf(out + n, cap - n, "%zx\r\n%s\r\n", strlen(*pieces), *pieces);
  snprintf(out + n, cap - n, "0\r\n\r\n");
  return out;
}

/* "HTTP/1.1 200 OK" with a Content-Length body, the length computed. */
static const char *t_plain(char *out, size_t cap, const char *body) {
  snprintf(out, cap, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
  return out;
}

static void test_fake_list_pages_and_watch_410(void) {
  static char page1[1024], page2[1024], relist[1024], watch1[1024], watch2[1024];
  static const char *const page1_pieces[] = {"{\"metadata\":{\"continue\":\"tok1\"",
                                             "},\"items\":[" T_OBJ("a", "5") "]}", NULL};
  /* a bookmark, an event split across chunks, then a 410 ERROR event */
  static const char *const watch1_pieces[] = {
      "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"12\"}}}\n{\"type\":\"A",
      "DDED\",\"object\":{\"metadata\":{\"name\":\"d\",\"resourceVersion\":\"13\"}}}\n",
      "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"code\":410,\"reason\":\"Gone\"}}\n", NULL};
  static const char *const watch2_pieces[] = {
      "{\"type\":\"DELETED\",\"object\":{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"21\"}}}\n", NULL};
  /* the first list may come from the watch cache (resourceVersion=0); its
   * continue page and the relist after the 410 must not go back in time */
  struct t_step steps[5] = {
      {"GET /apis/x/v1/things?limit=500&resourceVersion=0 ", t_chunked(page1, sizeof(page1), page1_pieces), 0},
      /* page 2, Content-Length body */
      {"limit=500&continue=tok1 ",
       t_plain(page2, sizeof(page2),
               "{\"metadata\":{\"resourceVersion\":\"10\"},\"items\":[" T_OBJ("b", "7") ",{\"metadata\":{\"name\":\"c\"}}]}"),
       0},
      {"watch=1&allowWatchBookmarks=true&resourceVersion=10", t_chunked(watch1, sizeof(watch1), watch1_pieces), 1},
      /* relist after 410, then a new watch from the new list's version */
      {"GET /apis/x/v1/things?limit=500 ",
       t_plain(relist, sizeof(relist), "{\"metadata\":{\"resourceVersion\":\"20\"},\"items\":[" T_OBJ("a", "5") "]}"), 0},
      {"resourceVersion=20", t_chunked(watch2, sizeof(watch2), watch2_pieces), 1},
  };
  struct mgop_kube k;
  static struct mgop_watch w;
  struct t_events ev = {{{0}}, 0};
  int port, rounds = 0;
  pid_t pid = t_fake_start(steps, 5, &port);
  t_fake_client(&k, port);
  mgop_watch_init(&w, &k, "Thing", "/apis/x/v1/things", NULL, t_record, &ev);
  while (ev.n < 6 && rounds++ < 400) {
    mgop_watch_step(&w, mgop_now_ms());
    if (w.state == MGOP_W_STREAM) {
      struct pollfd p = {w.conn.fd, POLLIN, 0};
      poll(&p, 1, 20);
    }
  }
  CHECK(ev.n == 6);
  CHECK_STR(ev.log[0], "SYNC a");
  CHECK_STR(ev.log[1], "SYNC b");
  CHECK_STR(ev.log[2], "SYNC c");
  CHECK_STR(ev.log[3], "ADDED d");
  CHECK_STR(ev.log[4], "SYNC a");
  CHECK_STR(ev.log[5], "DELETED a");
  CHECK(w.relists == 2);
  CHECK_STR(w.rv, "21");
  /* let the server finish writing the stream before hanging up on it */
  for (rounds = 0; rounds < 100 && w.state == MGOP_W_STREAM; rounds++) {
    struct pollfd p = {w.conn.fd, POLLIN, 0};
    poll(&p, 1, 20);
    mgop_watch_step(&w, mgop_now_ms());
  }
  mgop_watch_close(&w);
  mgop_kube_free(&k);
  CHECK(t_fake_wait(pid) == 0);
}

struct t_list_events { int sync, list_end; char names[8][32]; int nnames; };
static void t_count_events(void *ctx, struct mgop_watch *w, const char *type, const struct mgop_json *j, int obj) {
  struct t_list_events *e = ctx;
  char name[32];
  (void)w;
  if (!strcmp(type, "LIST_END")) e->list_end++;
  if (!j || strcmp(type, "SYNC")) return;
  e->sync++;
  mgop_json_path_str(j, obj, "metadata.name", name, sizeof(name));
  if (name[0] != 'o' && e->nnames < 8) snprintf(e->names[e->nnames++], sizeof(e->names[0]), "%s", name);
}

/* A page of 300 objects holds ~58000 tokens, beyond the 32768 one document
 * may have: streamed item by item it lists. On page 2 one object is larger
 * than MGOP_BODY_MAX and one has more tokens than MGOP_JSON_TOKENS_MAX: each
 * is skipped alone, the rest still arrive, and no LIST_END says the kind was
 * seen whole. */
static void test_fake_list_beyond_token_bound(void) {
  static char page1[256 * 1024], page2[MGOP_BODY_MAX + 256 * 1024], body[MGOP_BODY_MAX + 200 * 1024];
  static char list1[sizeof(body) + 256], list2[sizeof(body) + 256];
  static struct mgop_watch w;
  struct t_list_events ev = {0, 0, {{0}}, 0};
  struct mgop_kube k;
  size_t n = 0;
  int port, rounds = 0;
  n += (size_t)sprintf(page1 + n, "{\"kind\":\"ThingList\",\"metadata\":{\"continue\":\"p2\"},\"items\":[");
  for (int i = 0; i < 300; i++) {
    n += (size_t)sprintf(page1 + n, "%s{\"metadata\":{\"name\":\"o%03d\",\"resourceVersion\":\"%d\"},\"spec\":{\"a\":[",
                         i ? "," : "", i, i);
    for (int v = 0; v < 180; v++) n += (size_t)sprintf(page1 + n, v ? ",%d" : "%d", v);
    n += (size_t)sprintf(page1 + n, "]}}");
  }
  sprintf(page1 + n, "]}");
  n = (size_t)sprintf(page2, "{\"metadata\":{\"resourceVersion\":\"77\"},\"items\":[" T_OBJ("p1", "70")
                              ",{\"metadata\":{\"name\":\"huge\"},\"pad\":\"");
  memset(page2 + n, 'x', MGOP_BODY_MAX + 10);
  n += MGOP_BODY_MAX + 10;
  n += (size_t)sprintf(page2 + n, "\"},{\"metadata\":{\"name\":\"tokens\"},\"a\":[0");
  for (int v = 0; v < MGOP_JSON_TOKENS_MAX; v++) memcpy(page2 + n + 2 * (size_t)v, ",1", 2);
  n += 2 * MGOP_JSON_TOKENS_MAX;
  sprintf(page2 + n, "]}," T_OBJ("p2", "71") "]}");
  struct t_step steps[3] = {
      {"GET /apis/x/v1/things?limit=500&resourceVersion=0 ", t_plain(list1, sizeof(list1), page1), 0},
      {"limit=500&continue=p2 ", t_plain(list2, sizeof(list2), page2), 0},
      {"watch=1&allowWatchBookmarks=true&resourceVersion=77",
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 1},
  };
  (void)body;
  pid_t pid = t_fake_start(steps, 3, &port);
  t_fake_client(&k, port);
  mgop_watch_init(&w, &k, "Thing", "/apis/x/v1/things", NULL, t_count_events, &ev);
  int saved_level = mgop_log_level;
  mgop_log_level = MGOP_ERROR + 1; /* the two skipped objects are logged: expected */
  while (w.state != MGOP_W_STREAM && w.restarts == 0 && rounds++ < 50) mgop_watch_step(&w, mgop_now_ms());
  mgop_log_level = saved_level;
  CHECK(ev.sync == 302);
  CHECK(ev.nnames == 2 && !strcmp(ev.names[0], "p1") && !strcmp(ev.names[1], "p2"));
  CHECK(w.overlong == 2);
  CHECK(ev.list_end == 0); /* incomplete: nothing may be inferred deleted */
  CHECK_STR(w.rv, "77");
  CHECK(w.restarts == 1);
  for (rounds = 0; rounds < 100 && w.state == MGOP_W_STREAM; rounds++) {
    struct pollfd p = {w.conn.fd, POLLIN, 0};
    poll(&p, 1, 20);
    mgop_watch_step(&w, mgop_now_ms());
  }
  mgop_watch_close(&w);
  mgop_kube_free(&k);
  CHECK(t_fake_wait(pid) == 0);
}

/* A list that fails on a later page leaves rv empty: a watch must never
 * start from a list it did not finish. A malformed item fails the page. */
static void test_fake_list_failed_page(void) {
  static char p1[512], p3[512];
  struct t_step steps[3] = {
      {"limit=500 ", t_plain(p1, sizeof(p1), "{\"metadata\":{\"resourceVersion\":\"5\",\"continue\":\"c\"},\"items\":["
                                             T_OBJ("a", "5") "]}"), 0},
      {"continue=c", "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\n{}", 0},
      {"limit=500 ", t_plain(p3, sizeof(p3), "{\"metadata\":{\"resourceVersion\":\"6\"},\"items\":[{\"a\":1},2]}"), 0},
  };
  struct mgop_kube k;
  char rv[32] = "stale";
  unsigned long skipped = 9;
  int port, items = 0;
  pid_t pid = t_fake_start(steps, 3, &port);
  t_fake_client(&k, port);
  CHECK(mgop_kube_list(&k, NULL, "/apis/x/v1/things", NULL, &items, rv, sizeof(rv), &skipped) == MGOP_ERR_STATUS);
  CHECK_STR(rv, "");
  CHECK(mgop_kube_list(&k, NULL, "/apis/x/v1/things", NULL, &items, rv, sizeof(rv), &skipped) == MGOP_ERR_PARSE);
  CHECK(strstr(mgop_errmsg(), "items[1]") != NULL);
  CHECK_STR(rv, "");
  mgop_kube_free(&k);
  CHECK(t_fake_wait(pid) == 0);
}

/* DELETE: 200 and 404 (already gone) succeed; 409 (the uid precondition
 * failed: another object of that name) is an error the caller can tell. */
static void test_fake_delete_statuses(void) {
  static const struct t_step steps[] = {
      {"DELETE /x/a ", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 0},
      {"DELETE /x/b ", "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}", 0},
      {"DELETE /x/c ", "HTTP/1.1 409 Conflict\r\nContent-Length: 54\r\n\r\n{\"kind\":\"Status\",\"message\":\"Precondition failed: UID\"}", 0},
  };
  struct mgop_kube k;
  int port, status = 0;
  pid_t pid = t_fake_start(steps, 3, &port);
  t_fake_client(&k, port);
  CHECK(mgop_kube_delete(&k, "/x/a", "Background", "u-1", &status) == 0 && status == 200);
  CHECK(mgop_kube_delete(&k, "/x/b", "Background", "u-2", &status) == 0 && status == 404);
  CHECK(mgop_kube_delete(&k, "/x/c", "Background", "u-3", &status) == MGOP_ERR_STATUS && status == 409);
  CHECK(strstr(mgop_errmsg(), "Precondition failed") != NULL);
  CHECK(k.stats.errors == 1); /* the 409; a 404 answers "absent", it is not an error */
  mgop_kube_free(&k);
  CHECK(t_fake_wait(pid) == 0);
}

/* What an apply's answer tells: resourceVersion, uid, generation, and
 * spec.replicas where the object has one (-1 where not). */
static void test_fake_apply_answer(void) {
  static const char sts[] = "{\"kind\":\"StatefulSet\",\"metadata\":{\"name\":\"s\",\"uid\":\"u-9\",\"resourceVersion\":\"42\","
                            "\"generation\":1},\"spec\":{\"replicas\":3},\"status\":{\"replicas\":0}}";
  static const char svc[] = "{\"kind\":\"Service\",\"metadata\":{\"name\":\"v\",\"uid\":\"u-8\",\"resourceVersion\":\"43\"},"
                            "\"spec\":{\"ports\":[]}}";
  static char r1[512], r2[512];
  struct t_step steps[2] = {{"PATCH /x/s?fieldManager=multigres-operator&force=true ", r1, 0},
                            {"PATCH /x/v?fieldManager=multigres-operator&force=true ", r2, 0}};
  struct mgop_kube k;
  struct mgop_applied res;
  int port, status = 0;
  pid_t pid;
  snprintf(r1, sizeof(r1), "HTTP/1.1 201 Created\r\nContent-Length: %zu\r\n\r\n%s", strlen(sts), sts);
  snprintf(r2, sizeof(r2), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(svc), svc);
  pid = t_fake_start(steps, 2, &port);
  t_fake_client(&k, port);
  CHECK(mgop_kube_apply(&k, "/x/s", "{}", 2, &res, &status) == MGOP_OK && status == 201);
  CHECK_STR(res.rv, "42");
  CHECK_STR(res.uid, "u-9");
  CHECK(res.generation == 1 && res.replicas == 3);
  CHECK(mgop_kube_apply(&k, "/x/v", "{}", 2, &res, &status) == MGOP_OK && status == 200);
  CHECK(strcmp(res.uid, "u-8") == 0 && res.replicas == -1);
  mgop_kube_free(&k);
  CHECK(t_fake_wait(pid) == 0);
}

static void test_fake_truncated_and_429(void) {
  static const struct t_step steps[] = {
      {"GET /a ", "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\nContent-Length: 2\r\n\r\n{}", 0},
      /* truncated chunked body: the connection closes mid-chunk */
      {"GET /b ", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"partial\":", 1},
      /* a garbled chunk header */
      {"GET /c ", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n", 1},
      /* the client must recover on a fresh connection */
      {"GET /d ", "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}", 0},
  };
  struct mgop_kube k;
  char mem[256];
  struct mgop_buf out;
  int port, status;
  pid_t pid = t_fake_start(steps, 4, &port);
  t_fake_client(&k, port);
  mgop_buf_init(&out, mem, sizeof(mem));
  CHECK(mgop_kube_request(&k, "GET", "/a", NULL, NULL, 0, &out, &status) == 0);
  CHECK(status == 429 && k.last_retry_after_s == 3);
  CHECK(mgop_kube_request(&k, "GET", "/b", NULL, NULL, 0, &out, &status) == MGOP_ERR_CLOSED);
  CHECK(mgop_kube_request(&k, "GET", "/c", NULL, NULL, 0, &out, &status) == MGOP_ERR_HTTP);
  CHECK(mgop_kube_request(&k, "GET", "/d", NULL, NULL, 0, &out, &status) == 0);
  CHECK(status == 200 && out.len == 11 && memcmp(out.p, "{\"ok\":true}", 11) == 0);
  CHECK(k.stats.errors == 3);
  mgop_kube_free(&k);
  CHECK(t_fake_wait(pid) == 0);
}

static void test_fake_overlong_event_relists(void) {
  static char reply[MGOP_WATCH_LINE_MAX + 4096];
  static struct t_step steps[4];
  struct mgop_kube k;
  static struct mgop_watch w;
  struct t_events ev = {{{0}}, 0};
  int port, rounds = 0;
  size_t n = 0, pad = MGOP_WATCH_LINE_MAX + 10;
  n += (size_t)sprintf(reply, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n", pad + 1);
  memset(reply + n, 'x', pad);
  n += pad;
  n += (size_t)sprintf(reply + n, "\n\r\n");
  static char list1[256], list2[256];
  steps[0] = (struct t_step){"limit=500", t_plain(list1, sizeof(list1), "{\"metadata\":{\"resourceVersion\":\"1\"},\"items\":[]}"), 0};
  steps[1] = (struct t_step){"resourceVersion=1", reply, 1};
  steps[2] = (struct t_step){"limit=500",
                             t_plain(list2, sizeof(list2), "{\"metadata\":{\"resourceVersion\":\"9\"},\"items\":[" T_OBJ("z", "9") "]}"), 0};
  steps[3] = (struct t_step){"resourceVersion=9", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 1};
  pid_t pid = t_fake_start(steps, 4, &port);
  t_fake_client(&k, port);
  mgop_watch_init(&w, &k, "Thing", "/apis/x/v1/things", NULL, t_record, &ev);
  while (w.relists < 2 && rounds++ < 2000) {
    mgop_watch_step(&w, mgop_now_ms());
    if (w.state == MGOP_W_STREAM) {
      struct pollfd p = {w.conn.fd, POLLIN, 0};
      poll(&p, 1, 20);
    }
  }
  for (int i = 0; i < 20 && ev.n < 1; i++) mgop_watch_step(&w, mgop_now_ms());
  CHECK(w.overlong == 1);
  CHECK(w.relists == 2);
  CHECK(ev.n == 1 && !strcmp(ev.log[0], "SYNC z"));
  mgop_watch_close(&w);
  mgop_kube_free(&k);
  kill(pid, SIGTERM);
  t_fake_wait(pid);
}

/* A stream the server has not ended a minute after its timeoutSeconds is
 * dead: closed, backed off and resumed from its resourceVersion. Silence
 * before that is a quiet kind, not a dead stream, bookmark or not. */
static void test_fake_watch_silent_past_timeout(void) {
  static char watch1[1024], watch2[1024], list1[256];
  static const char *const first[] = {"{\"type\":\"ADDED\",\"object\":" T_OBJ("a", "2") "}\n",
                                      "{\"type\":\"BOOKMARK\",\"object\":{\"metadata\":{\"resourceVersion\":\"5\"}}}\n", NULL};
  static const char *const second[] = {"{\"type\":\"ADDED\",\"object\":" T_OBJ("b", "6") "}\n", NULL};
  struct t_step steps[3];
  struct mgop_kube k;
  static struct mgop_watch w;
  struct t_events ev = {{{0}}, 0};
  int port, rounds = 0;
  long long silent_from;
  t_chunked(watch1, sizeof(watch1), first);
  watch1[strlen(watch1) - 5] = 0; /* no last chunk: the stream stays open, silent */
  steps[0] = (struct t_step){"limit=500", t_plain(list1, sizeof(list1), "{\"metadata\":{\"resourceVersion\":\"1\"},\"items\":[]}"), 0};
  steps[1] = (struct t_step){"resourceVersion=1&timeoutSeconds=", watch1, 0};
  steps[2] = (struct t_step){"resourceVersion=5&timeoutSeconds=", t_chunked(watch2, sizeof(watch2), second), 1};
  pid_t pid = t_fake_start(steps, 3, &port);
  t_fake_client(&k, port);
  mgop_watch_init(&w, &k, "Thing", "/apis/x/v1/things", NULL, t_record, &ev);
  while (strcmp(w.rv, "5") && rounds++ < 400) {
    mgop_watch_step(&w, mgop_now_ms());
    if (w.state == MGOP_W_STREAM) poll(&(struct pollfd){w.conn.fd, POLLIN, 0}, 1, 20);
  }
  CHECK_STR(w.rv, "5");
  CHECK(w.timeout_s >= MGOP_WATCH_TIMEOUT_S / 2 && w.timeout_s <= MGOP_WATCH_TIMEOUT_S);
  usleep(200000); /* the server writes its reply in pieces: let it finish before we hang up */
  mgop_watch_step(&w, mgop_now_ms());
  silent_from = w.last_data_ms;
  CHECK(mgop_watch_step(&w, silent_from + w.timeout_s * 1000LL) == MGOP_OK && w.state == MGOP_W_STREAM);
  CHECK(mgop_watch_step(&w, silent_from + w.timeout_s * 1000LL + MGOP_WATCH_GRACE_MS + 1) == MGOP_ERR_TIMEOUT);
  CHECK(w.state == MGOP_W_BACKOFF);
  w.next_ms = 0; /* no wait for the backoff */
  for (rounds = 0; strcmp(w.rv, "6") && rounds < 400; rounds++) {
    mgop_watch_step(&w, mgop_now_ms());
    if (w.state == MGOP_W_STREAM) poll(&(struct pollfd){w.conn.fd, POLLIN, 0}, 1, 20);
  }
  CHECK_STR(w.rv, "6");
  CHECK(w.restarts == 2 && w.relists == 1); /* resumed from the bookmark's version, not relisted */
  CHECK(ev.n == 2 && !strcmp(ev.log[0], "ADDED a") && !strcmp(ev.log[1], "ADDED b"));
  usleep(200000);
  mgop_watch_close(&w);
  mgop_kube_free(&k);
  CHECK(t_fake_wait(pid) == 0);
  for (int i = 0; i < 1000; i++) {
    int t = mgop_watch_timeout_s();
    if (t < MGOP_WATCH_TIMEOUT_S / 2 || t > MGOP_WATCH_TIMEOUT_S) {
      CHECK(!"timeoutSeconds out of its range");
      break;
    }
  }
}

static void test_fake_watch_honours_retry_after(void) {
  static char list[256];
  struct t_step steps[2] = {
      {"limit=500", t_plain(list, sizeof(list), "{\"metadata\":{\"resourceVersion\":\"3\"},\"items\":[]}"), 0},
      {"resourceVersion=3", "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n", 1},
  };
  struct mgop_kube k;
  static struct mgop_watch w;
  int port;
  long long now;
  pid_t pid = t_fake_start(steps, 2, &port);
  t_fake_client(&k, port);
  mgop_watch_init(&w, &k, "Thing", "/apis/x/v1/things", NULL, NULL, NULL);
  now = mgop_now_ms();
  mgop_watch_step(&w, now);
  CHECK(w.state == MGOP_W_BACKOFF);
  CHECK(w.next_ms - now >= 2000); /* not the 200 ms first backoff */
  CHECK(w.next_ms - now <= 2500);
  mgop_watch_close(&w);
  mgop_kube_free(&k);
  CHECK(t_fake_wait(pid) == 0);
}

/* Watches sharing a list connection: both LISTs go over one connection,
 * kept alive, and each LIST step stops at START (the owner opens the
 * streams later); the streams then get connections of their own. */
static void test_fake_watch_shared_list_conn(void) {
  static char list1[256], list2[256];
  static struct mgop_watch w[2];
  static const char *const empty = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
  struct t_step steps[4] = {
      {"GET /apis/x/v1/things?limit=500&resourceVersion=0 ",
       t_plain(list1, sizeof(list1), "{\"metadata\":{\"resourceVersion\":\"4\"},\"items\":[" T_OBJ("a", "4") "]}"), 0},
      {"GET /apis/x/v1/others?limit=500&resourceVersion=0 ",
       t_plain(list2, sizeof(list2), "{\"metadata\":{\"resourceVersion\":\"5\"},\"items\":[" T_OBJ("b", "5") "]}"), 0},
      {"/apis/x/v1/things?watch=1&allowWatchBookmarks=true&resourceVersion=4", empty, 1},
      {"/apis/x/v1/others?watch=1&allowWatchBookmarks=true&resourceVersion=5", empty, 1},
  };
  struct t_events ev = {{{0}}, 0};
  struct mgop_kube k;
  struct mgop_conn lister;
  int port, lister_fd;
  pid_t pid = t_fake_start(steps, 4, &port);
  t_fake_client(&k, port);
  mgop_conn_init(&lister);
  mgop_watch_init(&w[0], &k, "Thing", "/apis/x/v1/things", NULL, t_record, &ev);
  mgop_watch_init(&w[1], &k, "Other", "/apis/x/v1/others", NULL, t_record, &ev);
  w[0].list_conn = w[1].list_conn = &lister;
  mgop_watch_step(&w[0], mgop_now_ms());
  lister_fd = lister.fd;
  mgop_watch_step(&w[1], mgop_now_ms());
  CHECK(w[0].state == MGOP_W_START && w[1].state == MGOP_W_START); /* listed, not started */
  CHECK(w[0].conn.fd < 0 && w[1].conn.fd < 0);
  CHECK(lister_fd >= 0 && lister.fd == lister_fd); /* one connection, still open */
  CHECK(k.stats.reconnects == 1);
  CHECK(ev.n == 2 && !strcmp(ev.log[0], "SYNC a") && !strcmp(ev.log[1], "SYNC b"));
  CHECK_STR(w[0].rv, "4");
  CHECK_STR(w[1].rv, "5");
  for (int i = 0; i < 2; i++) {
    mgop_watch_step(&w[i], mgop_now_ms());
    CHECK(w[i].restarts == 1 && w[i].conn.fd != lister.fd);
  }
  for (int i = 0; i < 2; i++) mgop_watch_close(&w[i]);
  mgop_conn_close(&lister);
  mgop_kube_free(&k);
  CHECK(t_fake_wait(pid) == 0);
}

/* A server for pipelined GETs, in a child: on one connection it reads
 * until all `want` request heads are in (the client must write them all
 * before it reads: a client waiting between them would hang here and the
 * child exit 4), checks their request lines against want_line[i] in order
 * and that each asks for metadata only, writes the first `answer` replies
 * back to back in small pieces, then, if answer < want, hangs up and serves
 * the rest one request at a time on the client's next connection. */
static void t_pipe_serve(int lfd, const char *const *want_line, const char *const *reply, int want, int answer) {
  static char buf[65536];
  size_t n = 0;
  int heads = 0, cfd = accept(lfd, NULL, NULL);
  char *p = buf;
  while (heads < want) {
    struct pollfd pf = {cfd, POLLIN, 0};
    ssize_t r;
    if (poll(&pf, 1, 5000) <= 0) _exit(4);
    if ((r = read(cfd, buf + n, sizeof(buf) - 1 - n)) <= 0) _exit(3);
    n += (size_t)r;
    buf[n] = 0;
    heads = 0;
    for (char *q = buf; (q = strstr(q, "\r\n\r\n")); q += 4) heads++;
  }
  for (int i = 0; i < want; i++) {
    char *end = strstr(p, "\r\n\r\n");
    *end = 0;
    if (strncmp(p, want_line[i], strlen(want_line[i])) || !strstr(p, "as=PartialObjectMetadata;")) {
      fprintf(stderr, "    pipelined request %d: got \"%.120s\", want \"%s\"\n", i, p, want_line[i]);
      _exit(1);
    }
    p = end + 4;
  }
  for (int i = 0; i < answer; i++)
    for (size_t off = 0, len = strlen(reply[i]); off < len;) {
      size_t piece = 1 + (size_t)(t_rand() % 9);
      if (piece > len - off) piece = len - off;
      if (send(cfd, reply[i] + off, piece, MSG_NOSIGNAL) < 0) break; /* the client may stop reading early */
      off += piece;
    }
  if (answer < want) {
    char line[2048];
    close(cfd);
    cfd = accept(lfd, NULL, NULL);
    for (int i = answer; i < want; i++) {
      if (t_read_request(cfd, line, sizeof(line)) || strncmp(line, want_line[i], strlen(want_line[i]))) _exit(5);
      if (send(cfd, reply[i], strlen(reply[i]), MSG_NOSIGNAL) < 0) _exit(2);
    }
  }
  usleep(100000);
  _exit(0);
}

/* The CRDs' look: eight GETs pipelined on one connection, answers read in
 * order whatever their framing (Content-Length, chunked, 404); an outdated
 * CRD is named; a server that hangs up after three answers gets the other
 * five asked one by one on a new connection, and the look still completes. */
static void test_crd_read_pipelined(void) {
  static char replies[8][512], lines[8][160];
  const char *reply[8], *want_line[8];
  char why[400];
  for (int round = 0; round < 2; round++) {
    struct mgop_kube k;
    int port, lfd = t_listen(&port), result;
    pid_t pid;
    for (int i = 0; i < 8; i++) {
      char body[256];
      int outdated = round == 0 && i == 4;
      snprintf(lines[i], sizeof(lines[i]), "GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/%s.multigres.com?resourceVersion=0 ",
               mgop_kinds[K_CLUSTER + i].plural);
      snprintf(body, sizeof(body), "{\"kind\":\"PartialObjectMetadata\",\"metadata\":{\"name\":\"%s.multigres.com\","
               "\"annotations\":{\"multigres.com/schema-version\":\"%d\"}}}", mgop_kinds[K_CLUSTER + i].plural,
               outdated ? MGOP_CRD_SCHEMA - 1 : MGOP_CRD_SCHEMA);
      if (i % 2) /* chunked: one chunk */
        snprintf(replies[i], sizeof(replies[i]), "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
                 strlen(body), body);
      else
        snprintf(replies[i], sizeof(replies[i]), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n%s\r\n%s", strlen(body),
                 round == 1 && i == 2 ? "Connection: close\r\n" : "", body);
      reply[i] = replies[i];
      want_line[i] = lines[i];
    }
    pid = fork();
    if (pid == 0) t_pipe_serve(lfd, want_line, reply, 8, round == 0 ? 8 : 3);
    close(lfd);
    t_fake_client(&k, port);
    result = mgop_crd_read(&k, why, sizeof(why));
    if (round == 0) {
      CHECK(result == MGOP_CRD_OUTDATED);
      CHECK(strstr(why, "CRD toposervers.multigres.com has schema version 2") != NULL);
      CHECK(k.stats.requests == 8 && k.stats.reconnects == 1); /* one connection, no second try */
      CHECK(k.conn.fd < 0); /* three answers were still in flight: not reused */
    } else {
      CHECK(result == MGOP_CRD_CURRENT);
      CHECK(k.stats.requests == 13 && k.stats.reconnects == 2); /* eight written, five asked again */
    }
    CHECK(k.accept == NULL);
    mgop_kube_free(&k);
    CHECK(t_fake_wait(pid) == 0);
  }
}

/* Reads one request, head and Content-Length body; returns its first line. */
static int t_read_whole_request(int fd, char *line, size_t cap) {
  char buf[8192], *end = NULL, *cl;
  size_t n = 0, want = 0;
  while (n < sizeof(buf) - 1 && (!end || n < want)) {
    ssize_t r = read(fd, buf + n, sizeof(buf) - 1 - n);
    if (r <= 0) return -1;
    n += (size_t)r;
    buf[n] = 0;
    if (!end && (end = strstr(buf, "\r\n\r\n"))) {
      cl = strcasestr(buf, "Content-Length:");
      want = (size_t)(end + 4 - buf) + (cl && cl < end ? strtoul(cl + 15, NULL, 10) : 0);
    }
  }
  snprintf(line, cap, "%.*s", (int)strcspn(buf, "\r\n"), buf);
  return 0;
}

/* Child for the apply pool: holds the first `hold` requests until all of
 * them are open at once (exit 5 when they never are: the pool sent them one
 * by one), then answers every request at once. Each answer carries a
 * resourceVersion from the object's name (/things/oN -> "10N"); /things/bad
 * gets 422. */
static void t_pool_serve(int lfd, int hold, int total, int lists) {
  int conns[8], nconn = 0, answered = 0, pending[8] = {0}, npending = 0, held = 1;
  long long until = mgop_now_ms() + 20000; /* valgrind is slow */
  char names[8][64];
  while (answered < total) {
    struct pollfd p[9];
    p[0] = (struct pollfd){lfd, POLLIN, 0};
    for (int i = 0; i < nconn; i++) p[i + 1] = (struct pollfd){conns[i], pending[i] ? 0 : POLLIN, 0};
    if (mgop_now_ms() > until) _exit(5);
    if (poll(p, (nfds_t)nconn + 1, 100) < 0) _exit(4);
    int polled = nconn; /* a connection accepted now is polled next turn */
    if (p[0].revents && nconn < 8) conns[nconn++] = accept(lfd, NULL, NULL);
    for (int i = 0; i < polled; i++) {
      char line[2048], *s;
      if (!(p[i + 1].revents & POLLIN) || pending[i]) continue;
      if (t_read_whole_request(conns[i], line, sizeof(line))) { /* closed */
        close(conns[i]);
        conns[i] = conns[--nconn];
        pending[i] = pending[nconn];
        memcpy(names[i], names[nconn], sizeof(names[0]));
        break;
      }
      s = strstr(line, "/things/");
      snprintf(names[i], sizeof(names[i]), "%.*s", s ? (int)strcspn(s + 8, "? ") : 0, s ? s + 8 : "");
      pending[i] = 1;
      npending++;
    }
    if (held && npending < hold) continue;
    held = 0;
    for (int i = 0; i < nconn; i++) {
      char reply[768], body[400];
      if (!pending[i]) continue;
      if (lists) { /* /things/lN: N items; /things/missing: 404 */
        int n = names[i][0] == 'l' ? atoi(names[i] + 1) : -1, off;
        off = snprintf(body, sizeof(body), "{\"kind\":\"List\",\"metadata\":{\"resourceVersion\":\"5%d\"},\"items\":[", n);
        for (int k = 0; k < n && k < 9; k++)
          off += snprintf(body + off, sizeof(body) - (size_t)off, "%s{\"metadata\":{\"name\":\"i%d\"}}", k ? "," : "", k);
        snprintf(body + off, sizeof(body) - (size_t)off, "]}");
        snprintf(reply, sizeof(reply), "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 n >= 0 ? "200 OK" : "404 Not Found", strlen(body), body);
      } else if (!strcmp(names[i], "bad"))
        snprintf(body, sizeof(body), "{\"kind\":\"Status\",\"message\":\"spec.x: Invalid value\"}");
      else
        snprintf(body, sizeof(body), "{\"metadata\":{\"name\":\"%.20s\",\"uid\":\"u-%.20s\",\"resourceVersion\":\"10%.8s\","
                 "\"generation\":1}}", names[i], names[i], names[i][0] == 'o' ? names[i] + 1 : "0");
      if (!lists)
        snprintf(reply, sizeof(reply), "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 strcmp(names[i], "bad") ? "200 OK" : "422 Unprocessable Entity", strlen(body), body);
      if (write(conns[i], reply, strlen(reply)) < 0) _exit(2);
      pending[i] = 0;
      npending--;
      answered++;
    }
  }
  usleep(100000);
  _exit(0);
}

/* The pool tests' server (t_pool_serve in a child), a client k of it and
 * a pool of two started workers; the child's pid. */
static pid_t t_pool_setup(struct mgop_kube *k, struct mgop_pool *pool, int hold, int total, int lists) {
  int port, lfd = t_listen(&port);
  pid_t pid = fork();
  if (pid == 0) t_pool_serve(lfd, hold, total, lists);
  close(lfd);
  t_fake_client(k, port);
  CHECK(mgop_pool_init(pool, 2, &t_cfg, NULL, NULL) == MGOP_OK);
  CHECK(mgop_pool_start(pool) == MGOP_OK && pool->running == 2);
  if (pool->running != 2) fprintf(stderr, "    pool: %d of %d running: %s\n", pool->running, pool->nworkers, mgop_errmsg());
  return pid;
}

/* Several applies in flight: two workers and the caller send a batch of
 * three at once (the server answers none before all three are open), the
 * results land in their own jobs, a 422 keeps its status and message, and
 * the workers' requests are counted. */
static void test_apply_pool(void) {
  static struct mgop_pool pool;
  static struct mgop_pool_job jobs[5];
  static const char *const names[5] = {"o1", "o2", "o3", "bad", "o5"};
  char paths[5][64];
  struct mgop_kube k;
  struct mgop_kube_stats st = {0, 0, 0, 0, 0};
  pid_t pid = t_pool_setup(&k, &pool, 3, 8, 0);
  for (int i = 0; i < 5; i++) {
    snprintf(paths[i], sizeof(paths[i]), "/apis/x/v1/namespaces/d/things/%s", names[i]);
    jobs[i] = (struct mgop_pool_job){.path = paths[i], .json = "{}", .len = 2};
  }
  mgop_pool_apply(&pool, &k, jobs, 3);
  for (int i = 0; i < 3; i++) {
    char rv[16];
    snprintf(rv, sizeof(rv), "10%d", i + 1);
    CHECK(jobs[i].rc == MGOP_OK && jobs[i].status == 200);
    CHECK_STR(jobs[i].res.rv, rv);
  }
  CHECK(pool.max_in_flight == 3);
  mgop_pool_apply(&pool, &k, jobs, 5);
  CHECK(jobs[3].rc == MGOP_ERR_STATUS && jobs[3].status == 422 && strstr(jobs[3].err, "spec.x: Invalid value"));
  CHECK(jobs[4].rc == MGOP_OK);
  CHECK_STR(jobs[4].res.uid, "u-o5");
  mgop_pool_take_stats(&pool, &st);
  CHECK(st.requests + k.stats.requests == 8 && st.writes + k.stats.writes == 8);
  CHECK(st.requests >= 2); /* the workers' share is counted */
  mgop_pool_take_stats(&pool, &st);
  CHECK(st.requests + k.stats.requests == 8); /* taken once */
  mgop_pool_stop(&pool);
  CHECK(pool.running == 0);
  mgop_kube_free(&k);
  CHECK(t_fake_wait(pid) == 0);
}

/* Several lists at once (the start-up's): two workers and the caller list
 * three kinds (the server answers none before all three are open); every
 * item reaches its watch's handler, one handler at a time; each watch ends
 * in START with its list's resourceVersion, an optional kind's 404 in
 * ABSENT. */
struct t_many { int begin[4], end[4], sync[4], inside, overlap; };
static struct t_many t_many;
static void t_many_event(void *ctx, struct mgop_watch *w, const char *type, const struct mgop_json *j, int obj) {
  int i = (int)(intptr_t)ctx;
  (void)w, (void)j, (void)obj;
  if (__atomic_add_fetch(&t_many.inside, 1, __ATOMIC_SEQ_CST) > 1) t_many.overlap = 1;
  usleep(2000); /* long enough for two unguarded handlers to meet */
  if (!strcmp(type, "LIST_BEGIN")) t_many.begin[i]++;
  else if (!strcmp(type, "LIST_END")) t_many.end[i]++;
  else if (!strcmp(type, "SYNC")) t_many.sync[i]++;
  __atomic_sub_fetch(&t_many.inside, 1, __ATOMIC_SEQ_CST);
}

/* Name lookups with a deadline: a resolver that answers "slow.test" only
 * after 300 ms stands in for a DNS server that drops a query. Its caller
 * gives up after MGOP_DNS_WAIT_MS (200 ms here), a caller behind it fails
 * at once, and the next one after the slow answer gets its own; a caller
 * behind a younger question waits for it. An address literal asks nobody. */
static int t_dns_calls;
static int t_dns_fake(const char *host, const char *port, int numeric_only, struct mgop_dns_answer *a) {
  struct sockaddr_in *in = (struct sockaddr_in *)&a->addr[0];
  if (numeric_only) return mgop_dns_getaddrinfo(host, port, 1, a);
  __atomic_add_fetch(&t_dns_calls, 1, __ATOMIC_RELAXED);
  if (!strcmp(host, "slow.test")) usleep(300 * 1000);
  if (!strcmp(host, "medium.test")) usleep(120 * 1000);
  a->n = 0;
  if (!strcmp(host, "none.test")) {
    snprintf(a->err, sizeof(a->err), "Name does not resolve");
    return EAI_NONAME;
  }
  memset(in, 0, sizeof(*in));
  in->sin_family = AF_INET;
  in->sin_port = htons((uint16_t)atoi(port));
  in->sin_addr.s_addr = htonl(0x7f000001);
  a->family[0] = AF_INET;
  a->len[0] = sizeof(*in);
  a->n = a->total = 1;
  return 0;
}

/* two threads asking at once: each must get the answer to its question */
static void *t_dns_asker(void *arg) {
  static _Thread_local struct mgop_dns_answer a;
  long wrong = 0, base = (long)(intptr_t)arg;
  for (int i = 0; i < 200; i++) {
    char port[16];
    snprintf(port, sizeof(port), "%ld", base + i);
    if (mgop_dns_lookup("fast.test", port, mgop_now_ms() + 5000, &a) != MGOP_OK || a.n != 1 ||
        ((struct sockaddr_in *)&a.addr[0])->sin_port != htons((uint16_t)(base + i)))
      wrong++;
  }
  return (void *)(intptr_t)wrong;
}

static void *t_dns_medium(void *arg) {
  static struct mgop_dns_answer a;
  (void)arg;
  return (void *)(intptr_t)(mgop_dns_lookup("medium.test", "80", mgop_now_ms() + 5000, &a) != MGOP_OK);
}

static void test_dns_deadline(void) {
  static struct mgop_dns_answer a;
  long long t0;
  mgop_dns_resolve = t_dns_fake;
  CHECK(mgop_dns_lookup("127.0.0.1", "80", mgop_now_ms() + 1000, &a) == MGOP_OK && a.n == 1 && a.family[0] == AF_INET);
  CHECK(mgop_dns_lookup("::1", "80", mgop_now_ms() + 1000, &a) == MGOP_OK && a.n == 1 && a.family[0] == AF_INET6);
  CHECK(t_dns_calls == 0); /* literals: no question asked */
  CHECK(mgop_dns_lookup("fast.test", "8080", mgop_now_ms() + 1000, &a) == MGOP_OK && a.n == 1 &&
        ((struct sockaddr_in *)&a.addr[0])->sin_port == htons(8080));
  CHECK(mgop_dns_lookup("none.test", "80", mgop_now_ms() + 1000, &a) == MGOP_ERR_IO &&
        strstr(mgop_errmsg(), "none.test") && strstr(mgop_errmsg(), "Name does not resolve"));
  /* slow.test answers after 300 ms: its caller, with a 100 ms deadline,
   * waits MGOP_DNS_WAIT_MS (200 ms here, one retry of a dropped query in
   * the operator) and gives up; the next caller finds the question
   * unanswered that long already and fails at once; after the answer,
   * lookups go on */
  t0 = mgop_now_ms();
  CHECK(mgop_dns_lookup("slow.test", "80", t0 + 100, &a) == MGOP_ERR_TIMEOUT && strstr(mgop_errmsg(), "slow.test") &&
        strstr(mgop_errmsg(), "no answer"));
  CHECK(mgop_now_ms() - t0 >= 190 && mgop_now_ms() - t0 < 290); /* not the 100 ms deadline, nor the 300 ms lookup */
  t0 = mgop_now_ms();
  CHECK(mgop_dns_lookup("fast.test", "80", t0 + 5000, &a) == MGOP_ERR_TIMEOUT &&
        strstr(mgop_errmsg(), "lookup of slow.test before it is still unanswered after"));
  CHECK(mgop_now_ms() - t0 < 120); /* at once, not at the 5 s deadline (margin for valgrind) */
  usleep(200 * 1000);
  t0 = mgop_now_ms();
  CHECK(mgop_dns_lookup("fast.test", "81", t0 + 100, &a) == MGOP_OK && a.n == 1 &&
        ((struct sockaddr_in *)&a.addr[0])->sin_port == htons(81));
  CHECK(t_dns_calls == 4);
  { /* a caller behind a younger question (medium.test: 120 ms) waits for it */
    pthread_t t;
    void *rc = (void *)1;
    CHECK(pthread_create(&t, NULL, t_dns_medium, NULL) == 0);
    usleep(30 * 1000);
    t0 = mgop_now_ms();
    CHECK(mgop_dns_lookup("fast.test", "84", t0 + 5000, &a) == MGOP_OK &&
          ((struct sockaddr_in *)&a.addr[0])->sin_port == htons(84));
    CHECK(mgop_now_ms() - t0 >= 50 && mgop_now_ms() - t0 < 190);
    pthread_join(t, &rc);
    CHECK(rc == NULL && t_dns_calls == 6);
  }
  t_dns_calls = 0;
  {
    pthread_t t[2];
    void *wrong[2] = {(void *)1, (void *)1};
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&t[i], NULL, t_dns_asker, (void *)(intptr_t)(1000 + 1000 * i)) == 0);
    for (int i = 0; i < 2; i++) pthread_join(t[i], &wrong[i]);
    CHECK(wrong[0] == NULL && wrong[1] == NULL && t_dns_calls == 400);
  }
  mgop_dns_resolve = mgop_dns_getaddrinfo;
  /* no real lookup of a name here: glibc then keeps a resolver context
   * that valgrind counts as lost in the fake servers' forked children (the
   * integration tests' kubeconfigs name hosts; the shipped binary is musl's) */
  CHECK(mgop_dns_getaddrinfo("localhost", "80", 1, &a) != 0 && a.n == 0 && a.err[0]); /* a name is no literal */
  mgop_dns_stop(1000);
  CHECK(!mgop_dns.started); /* ended; the next name starts it again */
}

static void test_list_many(void) {
  static struct mgop_pool pool;
  static struct mgop_watch w[4];
  struct mgop_watch *ws[4] = {&w[0], &w[1], &w[2], &w[3]};
  static const char *const names[4] = {"l3", "l5", "l2", "missing"};
  struct mgop_conn lister;
  struct mgop_kube k;
  struct mgop_kube_stats st = {0, 0, 0, 0, 0};
  pid_t pid = t_pool_setup(&k, &pool, 3, 4, 1);
  mgop_conn_init(&lister);
  memset(&t_many, 0, sizeof(t_many));
  for (int i = 0; i < 4; i++) {
    char path[64];
    snprintf(path, sizeof(path), "/apis/x/v1/namespaces/d/things/%s", names[i]);
    mgop_watch_init(&w[i], &k, names[i], path, NULL, t_many_event, (void *)(intptr_t)i);
    w[i].list_conn = &lister;
  }
  w[3].optional = 1;
  mgop_watch_list_many(ws, 4, &pool, mgop_now_ms());
  CHECK(!t_many.overlap);
  CHECK(t_many.sync[0] == 3 && t_many.sync[1] == 5 && t_many.sync[2] == 2 && t_many.sync[3] == 0);
  for (int i = 0; i < 3; i++) {
    char rv[8];
    snprintf(rv, sizeof(rv), "5%c", names[i][1]);
    CHECK(t_many.begin[i] == 1 && t_many.end[i] == 1 && w[i].state == MGOP_W_START);
    CHECK_STR(w[i].rv, rv);
  }
  CHECK(t_many.end[3] == 0 && w[3].state == MGOP_W_ABSENT);
  mgop_pool_take_stats(&pool, &st);
  CHECK(st.requests + k.stats.requests == 4 && st.requests >= 1); /* the workers' lists are counted */
  mgop_pool_stop(&pool);
  mgop_conn_close(&lister);
  mgop_kube_free(&k);
  CHECK(t_fake_wait(pid) == 0);
}

/* ======================================================================
 * 7. TLS against a local mbedTLS server
 * ==================================================================== */
/* Serves `connections` TLS connections with the fixture pair crt/key, at
 * most TLS 1.2 when tls12; answers each request with 200 and the protocol
 * version it negotiated ("TLSv1.3") as the body. */
static void t_tls_server_pair(int lfd, int connections, const char *crt_name, const char *key_name, int tls12) {
  mbedtls_ssl_config conf;
  mbedtls_x509_crt crt;
  mbedtls_pk_context key;
  static char pem[8192];
  mbedtls_ssl_config_init(&conf);
  mbedtls_x509_crt_init(&crt);
  mbedtls_pk_init(&key);
  mgop_tls_global_init();
  t_read_fixture(crt_name, pem, sizeof(pem));
  if (mbedtls_x509_crt_parse(&crt, (const unsigned char *)pem, strlen(pem) + 1)) _exit(3);
  t_read_fixture(key_name, pem, sizeof(pem));
  if (mbedtls_pk_parse_key(&key, (const unsigned char *)pem, strlen(pem) + 1, NULL, 0, mbedtls_ctr_drbg_random,
                           &mgop_drbg))
    _exit(3);
  mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
  mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &mgop_drbg);
  mbedtls_ssl_conf_own_cert(&conf, &crt, &key);
  if (tls12) mbedtls_ssl_conf_max_tls_version(&conf, MBEDTLS_SSL_VERSION_TLS1_2);
  for (int i = 0; i < connections; i++) {
    mbedtls_ssl_context ssl;
    int cfd = accept(lfd, NULL, NULL), r;
    unsigned char buf[4096];
    char reply[128];
    mbedtls_ssl_init(&ssl);
    mbedtls_ssl_setup(&ssl, &conf);
    mbedtls_ssl_set_bio(&ssl, &cfd, mgop_fd_send, mgop_fd_recv, NULL); /* cfd blocks */
    r = mbedtls_ssl_handshake(&ssl);
    if (r == 0 && mbedtls_ssl_read(&ssl, buf, sizeof(buf)) > 0) {
      const char *v = mbedtls_ssl_get_version(&ssl);
      int n = snprintf(reply, sizeof(reply), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(v), v);
      mbedtls_ssl_write(&ssl, (const unsigned char *)reply, (size_t)n);
    }
    mbedtls_ssl_close_notify(&ssl);
    mbedtls_ssl_free(&ssl);
    close(cfd);
  }
  _exit(0);
}

static void t_tls_server(int lfd, int connections) {
  t_tls_server_pair(lfd, connections, "server.crt", "server.key", 0);
}

/* GET /version over mgop_kube, trusting the fixture CA ca_name; the status,
 * or an error; the body (the server's protocol version) into version. */
static int t_tls_get_ca(int port, const char *host, const char *server_name, const char *ca_name, char *version,
                        size_t vcap) {
  struct mgop_kube k;
  struct mgop_buf out;
  char ca[4096];
  int status = 0, rc;
  memset(&t_cfg, 0, sizeof(t_cfg));
  snprintf(t_cfg.scheme, sizeof(t_cfg.scheme), "https");
  snprintf(t_cfg.host, sizeof(t_cfg.host), "%s", host);
  snprintf(t_cfg.port, sizeof(t_cfg.port), "%d", port);
  snprintf(t_cfg.tls_server_name, sizeof(t_cfg.tls_server_name), "%s", server_name);
  t_read_fixture(ca_name, ca, sizeof(ca));
  memcpy(t_cfg.ca, ca, strlen(ca) + 1);
  t_cfg.ca_len = strlen(ca) + 1;
  if ((rc = mgop_kube_init(&k, &t_cfg))) return rc;
  mgop_buf_init(&out, version, vcap - 1);
  rc = mgop_kube_request(&k, "GET", "/version", NULL, NULL, 0, &out, &status);
  mgop_buf_cstr(&out);
  mgop_kube_free(&k);
  return rc ? rc : status;
}

static int t_tls_get(int port, const char *host, const char *server_name) {
  char version[32];
  return t_tls_get_ca(port, host, server_name, "test-ca.crt", version, sizeof(version));
}

/* API servers usually have RSA certificates from an RSA-2048 CA: TLS 1.3
 * (RSA-PSS signatures) and TLS 1.2 (ECDHE-RSA), the IP SAN matched, a
 * wrong CA refused; and the ECDSA fixture over TLS 1.2 (ECDHE-ECDSA). */
static void test_tls_rsa_and_versions(void) {
  char v[32];
  int port, lfd = t_listen(&port);
  pid_t pid = fork();
  if (pid == 0) t_tls_server_pair(lfd, 3, "rsa-server.crt", "rsa-server.key", 0);
  close(lfd);
  CHECK(t_tls_get_ca(port, "127.0.0.1", "", "rsa-ca.crt", v, sizeof(v)) == 200);
  CHECK_STR(v, "TLSv1.3");
  CHECK(t_tls_get_ca(port, "localhost", "", "rsa-ca.crt", v, sizeof(v)) == 200);
  CHECK(t_tls_get_ca(port, "127.0.0.1", "", "test-ca.crt", v, sizeof(v)) == MGOP_ERR_TLS);
  t_fake_wait(pid);
  lfd = t_listen(&port);
  if ((pid = fork()) == 0) t_tls_server_pair(lfd, 1, "rsa-server.crt", "rsa-server.key", 1);
  close(lfd);
  CHECK(t_tls_get_ca(port, "127.0.0.1", "", "rsa-ca.crt", v, sizeof(v)) == 200);
  CHECK_STR(v, "TLSv1.2");
  t_fake_wait(pid);
  lfd = t_listen(&port);
  if ((pid = fork()) == 0) t_tls_server_pair(lfd, 1, "server.crt", "server.key", 1);
  close(lfd);
  CHECK(t_tls_get_ca(port, "127.0.0.1", "", "test-ca.crt", v, sizeof(v)) == 200);
  CHECK_STR(v, "TLSv1.2");
  t_fake_wait(pid);
}

/* The extension `type` of a ClientHello record (rec, n bytes): its body
 * and length, or NULL. */
static const unsigned char *t_hello_ext(const unsigned char *rec, size_t n, unsigned type, size_t *len) {
  size_t i = 5 + 4 + 2 + 32; /* record header, handshake header, version, random */
  if (n < i + 1 || rec[0] != 22 || rec[5] != 1) return NULL;
  i += 1 + rec[i];                                        /* session id */
  if (i + 2 > n) return NULL;
  i += 2 + ((size_t)rec[i] << 8 | rec[i + 1]);           /* cipher suites */
  if (i + 1 > n) return NULL;
  i += 1 + rec[i];                                        /* compression */
  for (i += 2; i + 4 <= n;) {                             /* extensions */
    unsigned t = (unsigned)rec[i] << 8 | rec[i + 1];
    size_t l = (size_t)rec[i + 2] << 8 | rec[i + 3];
    if (i + 4 + l > n) return NULL;
    if (t == type) return *len = l, rec + i + 4;
    i += 4 + l;
  }
  return NULL;
}

/* The client offers P-256 first, and its one key share is P-256 (mbedTLS
 * makes it in a quarter of X25519's time; a Go server takes a group the
 * client sent a share for, so no HelloRetryRequest): the ClientHello as
 * sent, read by a plain TCP peer that then hangs up. */
static void test_tls_client_key_share(void) {
  unsigned char hello[4096];
  const unsigned char *e;
  size_t n = 0, len = 0;
  int port, lfd = t_listen(&port), pfd[2];
  pid_t pid;
  CHECK(pipe(pfd) == 0);
  if ((pid = fork()) == 0) {
    int cfd = accept(lfd, NULL, NULL);
    ssize_t r;
    struct timeval tv = {2, 0};
    setsockopt(cfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    while (n < 5 || n < 5 + ((size_t)hello[3] << 8 | hello[4])) { /* one whole record */
      if ((r = read(cfd, hello + n, sizeof(hello) - n)) <= 0) break;
      n += (size_t)r;
    }
    if (write(pfd[1], hello, n) != (ssize_t)n) _exit(3);
    close(cfd);
    _exit(0);
  }
  close(lfd);
  close(pfd[1]);
  CHECK(t_tls_get(port, "127.0.0.1", "") == MGOP_ERR_TLS); /* the peer hung up */
  for (ssize_t r; n < sizeof(hello) && (r = read(pfd[0], hello + n, sizeof(hello) - n)) > 0;) n += (size_t)r;
  close(pfd[0]);
  CHECK(t_fake_wait(pid) == 0);
  CHECK((e = t_hello_ext(hello, n, 0x000a, &len)) != NULL); /* supported_groups */
  CHECK(e && len >= 6 && e[2] == 0x00 && e[3] == 0x17 && e[4] == 0x00 && e[5] == 0x1d);
  CHECK((e = t_hello_ext(hello, n, 0x0033, &len)) != NULL); /* key_share */
  CHECK(e && len >= 4 && e[2] == 0x00 && e[3] == 0x17);
  CHECK(e && len == 2 + 4 + 65); /* one share: an uncompressed P-256 point */
}

static void test_tls_verification(void) {
  int port, lfd = t_listen(&port);
  pid_t pid = fork();
  if (pid == 0) t_tls_server(lfd, 4);
  close(lfd);
  CHECK(t_tls_get(port, "127.0.0.1", "") == 200);                  /* IP SAN match via host */
  CHECK(t_tls_get(port, "127.0.0.1", "kubernetes.default.svc") == 200); /* DNS SAN match */
  CHECK(t_tls_get(port, "localhost", "") == 200);                  /* DNS SAN via host */
  CHECK(t_tls_get(port, "127.0.0.1", "wrong.example") == MGOP_ERR_TLS);
  CHECK(strstr(mgop_errmsg(), "certificate rejected") != NULL);
  t_fake_wait(pid);
}

/* A client connecting to an IP verifies it against the iPAddress SANs: as
 * the host, or given as tls-server-name; 127.0.0.2 and ::1 are not in the
 * certificate (the connection still goes to 127.0.0.1). */
static void test_tls_ip_san(void) {
  int port, lfd = t_listen(&port);
  pid_t pid = fork();
  if (pid == 0) t_tls_server(lfd, 4);
  close(lfd);
  CHECK(t_tls_get(port, "127.0.0.1", "") == 200);
  CHECK(t_tls_get(port, "127.0.0.1", "127.0.0.1") == 200);
  CHECK(t_tls_get(port, "127.0.0.1", "127.0.0.2") == MGOP_ERR_TLS);
  CHECK(strstr(mgop_errmsg(), "certificate rejected") != NULL);
  CHECK(t_tls_get(port, "127.0.0.1", "::1") == MGOP_ERR_TLS);
  t_fake_wait(pid);
}

/* mbedTLS's own name check: IPv4 and IPv6 literals against iPAddress SANs,
 * DNS names against dNSName SANs, never one for the other. */
static void test_ip_san_matcher(void) {
  mbedtls_x509_crt crt, ca;
  static char pem[8192];
  uint32_t flags = 0;
  mbedtls_x509_crt_init(&crt);
  mbedtls_x509_crt_init(&ca);
  t_read_fixture("server.crt", pem, sizeof(pem));
  CHECK(mbedtls_x509_crt_parse(&crt, (const unsigned char *)pem, strlen(pem) + 1) == 0);
  t_read_fixture("test-ca.crt", pem, sizeof(pem));
  CHECK(mbedtls_x509_crt_parse(&ca, (const unsigned char *)pem, strlen(pem) + 1) == 0);
  CHECK(mbedtls_x509_crt_verify(&crt, &ca, NULL, "127.0.0.1", &flags, NULL, NULL) == 0 && flags == 0);
  CHECK(mbedtls_x509_crt_verify(&crt, &ca, NULL, "localhost", &flags, NULL, NULL) == 0 && flags == 0);
  CHECK(mbedtls_x509_crt_verify(&crt, &ca, NULL, "127.0.0.2", &flags, NULL, NULL) != 0 &&
        (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH));
  CHECK(mbedtls_x509_crt_verify(&crt, &ca, NULL, "::ffff:127.0.0.1", &flags, NULL, NULL) != 0 &&
        (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH));
  mbedtls_x509_crt_free(&ca);
  mbedtls_x509_crt_free(&crt);
}

/* ======================================================================
 * 7b. State: names, fingerprint table, work set
 * ==================================================================== */
static void test_names(void) {
  char out[300], want[64];
  const char *single[] = {"minimal", "global-topo"};
  const char *cell[] = {"minimal", "zone-a"};
  const char *lng[] = {"a-very-long-cluster-name-xx", "postgres", "a-table-group-with-a-long-name", "0-inf", "zone-a"};
  uint32_t h = MGOP_FNV32_INIT;
  CHECK(mgop_name(out, sizeof(out), MGOP_LIMIT_DEFAULT, 0, single, 2) == 0);
  CHECK_STR(out, "minimal-global-topo");
  /* hashed: FNV-1a-32 over each part followed by NUL */
  h = mgop_fnv1a32(h, "minimal", 8);
  h = mgop_fnv1a32(h, "zone-a", 7);
  snprintf(want, sizeof(want), "minimal-zone-a-%08x", h);
  CHECK(mgop_name(out, sizeof(out), MGOP_LIMIT_DEFAULT, 1, cell, 2) == 0);
  CHECK_STR(out, want);
  /* worked examples from the reference operator (docs/components.md §2) */
  {
    const char *c[] = {"minimal", "zone-a"}, *sh[] = {"minimal", "postgres", "default", "0-inf"};
    CHECK(mgop_name(out, sizeof(out), MGOP_LIMIT_DEFAULT, 1, c, 2) == 0);
    CHECK_STR(out, "minimal-zone-a-96c88ae0");
    CHECK(mgop_name(out, sizeof(out), MGOP_LIMIT_DEFAULT, 1, sh, 4) == 0);
    CHECK_STR(out, "minimal-postgres-default-0-inf-1e3c045c");
  }
  {
    const char *odd[] = {"9Lives", "A_b"};
    CHECK(mgop_name(out, sizeof(out), MGOP_LIMIT_SERVICE, 0, odd, 2) == 0);
    CHECK_STR(out, "x9lives-a-b"); /* lower-cased, '_' -> '-', letter first for 63-long names */
  }
  /* too long for a StatefulSet: cut, "---", hash, exactly the limit */
  CHECK(mgop_name(out, sizeof(out), MGOP_LIMIT_STS, 1, lng, 5) == 0);
  CHECK(strlen(out) == MGOP_LIMIT_STS);
  CHECK(strstr(out, "---") != NULL);
  {
    char other[300];
    const char *lng2[] = {"a-very-long-cluster-name-xx", "postgres", "a-table-group-with-a-long-name", "0-inf", "zone-b"};
    CHECK(mgop_name(other, sizeof(other), MGOP_LIMIT_STS, 1, lng2, 5) == 0);
    CHECK(strcmp(out, other) != 0);
    CHECK(strlen(other) == strlen(out));
  }
  /* parts that join alike hash apart: "a-b"+"c" vs "a"+"b-c" */
  {
    const char *p1[] = {"a-b", "c"}, *p2[] = {"a", "b-c"};
    char n1[64], n2[64];
    mgop_name(n1, sizeof(n1), 63, 1, p1, 2);
    mgop_name(n2, sizeof(n2), 63, 1, p2, 2);
    CHECK(strcmp(n1, n2) != 0);
  }
}

/* The progress recheck backs off (30, 60, 120, 240, 300, 300 s) while the
 * cluster converges, an event-started turn in between keeps the net's time,
 * and Ready/Stalled/error turns queue none (the next wait starts at 30 s). */
static void test_recheck_backoff(void) {
  struct mgop_root_ref root;
  long long t = 1000000, want[] = {30000, 60000, 120000, 240000, 300000, 300000}, d;
  memset(&root, 0, sizeof(root));
  for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
    d = mgop_recheck_delay(&root, t, 1);
    CHECK(d == want[i]);
    t += d; /* the recheck itself starts the next turn, on time */
  }
  d = mgop_recheck_delay(&root, t + 5, 1); /* a late pop is still the recheck */
  CHECK(d == MGOP_PROGRESS_RECHECK_MAX_MS);
  t += 5 + d;
  /* events' turns 200 s and 1 s before the net is due: it stays due then */
  CHECK(mgop_recheck_delay(&root, t - 200000, 1) == 200000);
  CHECK(mgop_recheck_delay(&root, t - 1000, 1) == 1000);
  CHECK(root.recheck_due == t && root.recheck_ms == MGOP_PROGRESS_RECHECK_MAX_MS);
  CHECK(mgop_recheck_delay(&root, t + 40000, 0) == -1); /* Ready: none, and the next wait starts over */
  CHECK(root.recheck_due == 0 && root.recheck_ms == 0);
  CHECK(mgop_recheck_delay(&root, t + 500000, 1) == MGOP_PROGRESS_RECHECK_MS);
  CHECK(mgop_recheck_delay(&root, t + 510000, 1) == 20000); /* an event's turn 10 s later */
  CHECK(mgop_recheck_delay(&root, t + 530000, 1) == 60000); /* the net, then doubled */
  CHECK(mgop_recheck_delay(NULL, t, 1) == MGOP_PROGRESS_RECHECK_MS); /* not tracked: the first interval */
  CHECK(mgop_recheck_delay(NULL, t, 0) == -1);
}

/* One apply's result handed to mgop_apply_result as a worker would: kind
 * and name in r's cluster, answered with status, resourceVersion rv,
 * generation gen and spec.replicas (-1: none). d is left describing it. */
static int t_apply_result(struct mgop_rctx *r, struct mgop_desired *d, int kind, const char *name, int status,
                          const char *rv, long long gen, long long replicas, int *rejected) {
  struct mgop_pool_job j;
  int first_rc = 0;
  memset(d, 0, sizeof(*d));
  memset(&j, 0, sizeof(j));
  d->kind = kind;
  snprintf(d->name, sizeof(d->name), "%s", name);
  d->hash = 7;
  j.status = status;
  snprintf(j.res.rv, sizeof(j.res.rv), "%s", rv);
  snprintf(j.res.uid, sizeof(j.res.uid), "u-%s", name);
  j.res.generation = gen;
  j.res.replicas = replicas;
  return mgop_apply_result(r, d, &j, &first_rc, rejected);
}

/* A workload the turn created has none ready and the replicas the server
 * stored, so the turn's status says 0/3 at once and the watch's first report
 * of it (the same) costs no second status write; an update (200) keeps what
 * the watch last said. */
static void test_apply_result_created_workload(void) {
  struct mgop_rctx r;
  struct mgop_desired d;
  int rejected = 0, ready, desired;
  struct mgop_fp *f;
  memset(&r, 0, sizeof(r));
  r.ns = "ut-applied";
  r.name = "c";
  CHECK(t_apply_result(&r, &d, K_STS, "c-pool", 201, "11", 1, 3, &rejected) == MGOP_OK && !rejected);
  f = mgop_fp_find(mgop_fp_key("StatefulSet", "ut-applied", "c-pool"));
  CHECK(f != NULL && f->desired == 3 && f->ready == 0);
  CHECK(mgop_workload_ready(&r, "StatefulSet", "c-pool", &ready, &desired) == 0 && ready == 0 && desired == 3);
  /* the watch has since seen 3 ready; a later apply (200) leaves that be */
  if (f) f->ready = 3;
  CHECK(t_apply_result(&r, &d, K_STS, "c-pool", 200, "11", 2, 5, &rejected) == MGOP_OK);
  CHECK(f != NULL && f->desired == 3 && f->ready == 3);
  /* a created Service has no replicas: its row keeps none */
  CHECK(t_apply_result(&r, &d, K_SVC, "c-svc", 201, "11", 2, -1, &rejected) == MGOP_OK);
  f = mgop_fp_find(mgop_fp_key("Service", "ut-applied", "c-svc"));
  CHECK(f != NULL && f->desired == 0 && f->ready == 0);
  mgop_fp_remove(mgop_fp_key("StatefulSet", "ut-applied", "c-pool"));
  mgop_fp_remove(mgop_fp_key("Service", "ut-applied", "c-svc"));
}

/* A turn's context on a fresh reconcile arena, as mgop_reconcile sets one up. */
static void t_turn_begin(struct mgop_rctx *r, const char *ns, const char *name) {
  memset(r, 0, sizeof(*r));
  mgop_arena_reset(&mgop_server.arena);
  mgop_arena_init(&mgop_server.arena, mgop_server.arena_mem, sizeof(mgop_server.arena_mem));
  r->arena = &mgop_server.arena;
  r->ns = ns, r->name = name;
}

/* A turn takes the cluster the early turn kept for it whole, once, and
 * GETs any other (and that cluster again). Up to 06415e4 the kept copy's
 * first byte was cleared as the turn set its buffer up: every start's
 * first turn failed ("JSON document is empty"), which the start figure
 * counted. The fake server answers only the GETs expected, in order. */
static void test_turn_root_kept(void) {
  static char a2[256], b1[256];
  const char *kept = "{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"4\"}}";
  struct t_step steps[] = {
      {"GET /apis/multigres.com/v1alpha1/namespaces/ut-tr/multigresclusters/a ", t_plain(a2, sizeof(a2), T_OBJ("a", "5")), 0},
      {"GET /apis/multigres.com/v1alpha1/namespaces/ut-tr/multigresclusters/b ", t_plain(b1, sizeof(b1), T_OBJ("b", "7")), 0},
  };
  struct mgop_kube k, *saved = mgop_api_ptr;
  struct mgop_buf b;
  struct mgop_json j;
  static jsmntok_t tok[64];
  char rv[16] = "";
  int port;
  pid_t pid = t_fake_start(steps, 2, &port);
  t_fake_client(&k, port);
  mgop_api_ptr = &k;
  memcpy(mgop_server.root_body, kept, strlen(kept));
  mgop_server.root_early = strlen(kept);
  mgop_server.root_early_key = mgop_fp_key("MultigresCluster", "ut-tr", "a");
  /* its own turn: the kept copy, no request */
  CHECK(mgop_turn_root("ut-tr", "a", &b) == MGOP_OK);
  CHECK(b.p == mgop_server.root_body && b.len == strlen(kept) && !memcmp(b.p, kept, b.len));
  CHECK(mgop_json_parse(&j, b.p, b.len, tok, 64) == MGOP_OK);
  mgop_json_path_str(&j, 0, "metadata.resourceVersion", rv, sizeof(rv));
  CHECK(!strcmp(rv, "4"));
  CHECK(mgop_server.root_early == 0);
  /* its next turn reads it (the fake server's first step) */
  CHECK(mgop_turn_root("ut-tr", "a", &b) == MGOP_OK);
  CHECK(mgop_json_parse(&j, b.p, b.len, tok, 64) == MGOP_OK);
  mgop_json_path_str(&j, 0, "metadata.resourceVersion", rv, sizeof(rv));
  CHECK(!strcmp(rv, "5"));
  /* a copy kept for a is not b's: b is read, and the copy is dropped (b's
   * answer is in root_body now) */
  mgop_server.root_early = strlen(kept);
  CHECK(mgop_turn_root("ut-tr", "b", &b) == MGOP_OK);
  CHECK(mgop_json_parse(&j, b.p, b.len, tok, 64) == MGOP_OK);
  mgop_json_path_str(&j, 0, "metadata.name", rv, sizeof(rv));
  CHECK(!strcmp(rv, "b"));
  CHECK(mgop_server.root_early == 0);
  mgop_api_ptr = saved;
  mgop_kube_free(&k);
  CHECK(t_fake_wait(pid) == 0);
}

/* A turn's children's status writes go out as one batch, before the
 * root's. The faults a real API server does not make on demand: one write
 * of the batch refused (500) while the others succeed. The refused one
 * keeps no hash (the next turn writes it again) and reports its failure
 * to whoever needs its status (the Shard's podRoles patch); the others are
 * recorded as written, their echoes known by resourceVersion; an object
 * queued twice flushes the first write before the second, in order. */
static void test_status_batch_fault(void) {
  static char ok1[512], ok2[512];
  static struct mgop_rctx r;
  const char *err500 = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 35\r\n\r\n{\"message\":\"etcdserver: timed out\"}";
  struct t_step steps[] = {
      {"PATCH /apis/multigres.com/v1alpha1/namespaces/ut-sb/cells/c-a/status", t_plain(ok1, sizeof(ok1), T_OBJ("c-a", "11")), 0},
      {"PATCH /apis/multigres.com/v1alpha1/namespaces/ut-sb/shards/c-s/status", err500, 0},
      {"PATCH /apis/multigres.com/v1alpha1/namespaces/ut-sb/cells/c-a/status", t_plain(ok2, sizeof(ok2), T_OBJ("c-a", "12")), 0},
  };
  struct mgop_kube k, *saved = mgop_api_ptr;
  struct mgop_fp *cell, *shard;
  uint64_t ck = mgop_fp_key("Cell", "ut-sb", "c-a"), sk = mgop_fp_key("Shard", "ut-sb", "c-s"), first_hash;
  int port, w1, w2, w3;
  pid_t pid = t_fake_start(steps, 3, &port);
  t_fake_client(&k, port);
  mgop_api_ptr = &k;
  t_turn_begin(&r, "ut-sb", "c");
  cell = mgop_fp_upsert(ck), shard = mgop_fp_upsert(sk);
  CHECK(cell && shard);
  if (!cell || !shard) return;
  snprintf(cell->uid, sizeof(cell->uid), "u-a"), snprintf(shard->uid, sizeof(shard->uid), "u-s");
  mgop_server.status_batch.open = 1, mgop_server.status_batch.n = 0;
  w1 = mgop_write_status(&r, K_CELL, "c-a", cell, 0, 0, "GatewayNotReady", "0/1 ready", 1, "Initializing", NULL, NULL);
  w2 = mgop_write_status(&r, K_SHARD, "c-s", shard, 0, 0, "NotAllPodsReady", "0/1 ready", 1, "Initializing", NULL, NULL);
  CHECK(w1 == 1 && w2 == 1 && mgop_server.status_batch.n == 2); /* queued: nothing sent yet */
  CHECK(cell->status_hash == 0 && shard->status_hash == 0);
  /* the Cell again: its first write and the Shard's go out first */
  w3 = mgop_write_status(&r, K_CELL, "c-a", cell, 1, 0, "GatewayReady", "1/1 ready", 1, "Healthy", NULL, NULL);
  CHECK(w3 == 1 && mgop_server.status_batch.n == 1);
  first_hash = cell->status_hash;
  CHECK(first_hash != 0 && cell->seen_rv == mgop_uid_hash("11"));
  CHECK(shard->status_hash == 0); /* refused: written again next turn */
  CHECK(mgop_status_flush_for(&r, ck) == 0);
  CHECK(cell->status_hash != 0 && cell->status_hash != first_hash && cell->seen_rv == mgop_uid_hash("12"));
  mgop_server.status_batch.open = 0;
  CHECK(t_fake_wait(pid) == 0); /* the three requests, in this order */
  /* a refused Shard write is reported to its podRoles patch */
  {
    struct t_step again[] = {{"PATCH /apis/multigres.com/v1alpha1/namespaces/ut-sb/shards/c-s/status", err500, 0}};
    pid = t_fake_start(again, 1, &port);
    mgop_kube_free(&k);
    t_fake_client(&k, port);
    mgop_server.status_batch.open = 1, mgop_server.status_batch.n = 0;
    CHECK(mgop_write_status(&r, K_SHARD, "c-s", shard, 0, 0, "NotAllPodsReady", "0/1 ready", 1, "Initializing", NULL,
                            NULL) == 1);
    CHECK(mgop_status_flush_for(&r, sk) != 0 && shard->status_hash == 0);
    mgop_server.status_batch.open = 0;
    CHECK(t_fake_wait(pid) == 0);
  }
  mgop_kube_free(&k);
  mgop_api_ptr = saved;
  mgop_fp_remove(ck), mgop_fp_remove(sk);
  mgop_arena_reset(&mgop_server.arena);
}

/* The end of a turn in one batch: its Event and the root's status while it
 * is not Ready go out beside the children's, and a Ready root is written at
 * once, after them (the batch still open). Faults a real API server does not
 * make on demand: the Event refused (403), which is logged and costs the
 * turn nothing; then the root's write of the batch refused (500), which the
 * flush reports for the root's key and which keeps no hash. */
static void test_status_batch_event_root(void) {
  static char ok1[512], ok2[512];
  static struct mgop_rctx r;
  const char *err403 = "HTTP/1.1 403 Forbidden\r\nContent-Length: 33\r\n\r\n{\"message\":\"events is forbidden\"}";
  const char *err500 = "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 35\r\n\r\n{\"message\":\"etcdserver: timed out\"}";
  struct t_step steps[] = {
      {"POST /apis/events.k8s.io/v1/namespaces/ut-se/events", err403, 0},
      {"PATCH /apis/multigres.com/v1alpha1/namespaces/ut-se/multigresclusters/c/status", t_plain(ok1, sizeof(ok1), T_OBJ("c", "21")), 0},
      {"PATCH /apis/multigres.com/v1alpha1/namespaces/ut-se/multigresclusters/c/status", t_plain(ok2, sizeof(ok2), T_OBJ("c", "22")), 0},
      {"PATCH /apis/multigres.com/v1alpha1/namespaces/ut-se/multigresclusters/c/status", err500, 0},
  };
  struct mgop_kube k, *saved = mgop_api_ptr;
  struct mgop_fp *root;
  uint64_t rk = mgop_fp_key("MultigresCluster", "ut-se", "c"), h1;
  int port;
  pid_t pid = t_fake_start(steps, 4, &port);
  t_fake_client(&k, port);
  mgop_api_ptr = &k;
  t_turn_begin(&r, "ut-se", "c");
  root = mgop_fp_upsert(rk);
  CHECK(root != NULL);
  if (!root) return;
  mgop_status_open();
  mgop_event(&r, K_CLUSTER, "c", "u-c", "Normal", "Applied", "Apply", "applied 1 object: Service c-svc");
  CHECK(mgop_server.status_batch.n == 1 && mgop_server.status_batch.w[0].reason != NULL); /* queued */
  CHECK(mgop_write_status(&r, K_CLUSTER, "c", root, 0, 0, "Progressing", "0/1 cells ready", 1, "Initializing", NULL,
                          NULL) == 1);
  CHECK(mgop_server.status_batch.n == 2 && root->status_hash == 0); /* queued beside the Event */
  CHECK(mgop_status_flush_for(&r, rk) == 0); /* the Event's 403 is not the root's */
  h1 = root->status_hash;
  CHECK(h1 != 0 && root->seen_rv == mgop_uid_hash("21") && mgop_server.status_batch.n == 0);
  /* Ready: written at once though the batch is open */
  CHECK(mgop_write_status(&r, K_CLUSTER, "c", root, 1, 0, "Converged", "1/1 cells ready", 1, "Healthy", NULL, NULL) == 1);
  CHECK(mgop_server.status_batch.n == 0 && root->status_hash != 0 && root->status_hash != h1 &&
        root->seen_rv == mgop_uid_hash("22"));
  /* not Ready again, and refused within the batch */
  h1 = root->status_hash;
  CHECK(mgop_write_status(&r, K_CLUSTER, "c", root, 0, 0, "Progressing", "0/1 cells ready", 1, "Progressing", NULL,
                          NULL) == 1);
  CHECK(mgop_status_flush_for(&r, rk) == MGOP_ERR_STATUS && root->status_hash == h1);
  mgop_server.status_batch.open = 0;
  CHECK(t_fake_wait(pid) == 0); /* the four requests, in this order */
  mgop_kube_free(&k);
  mgop_api_ptr = saved;
  mgop_fp_remove(rk);
  mgop_arena_reset(&mgop_server.arena);
}

static void test_fp_table(void) {
  uint64_t k1 = mgop_fp_key("StatefulSet", "ns", "a"), k2 = mgop_fp_key("StatefulSet", "ns", "b");
  size_t before = mgop_fp_count();
  struct mgop_fp *f;
  CHECK(k1 != k2 && k1 != 0);
  CHECK(mgop_fp_key("Service", "ns", "a") != k1); /* the kind is part of the key */
  CHECK(mgop_fp_find(k1) == NULL);
  f = mgop_fp_upsert(k1);
  CHECK(f != NULL && f->key == k1);
  f->applied_hash = 42;
  CHECK(mgop_fp_upsert(k1) == f && mgop_fp_find(k1)->applied_hash == 42);
  CHECK(mgop_fp_upsert(k2) != NULL);
  CHECK(mgop_fp_count() == before + 2);
  mgop_fp_remove(k1);
  CHECK(mgop_fp_find(k1) == NULL && mgop_fp_find(k2) != NULL); /* tombstone keeps k2 reachable */
  mgop_fp_remove(k2);
  CHECK(mgop_fp_count() == before);
  /* the table fills, then refuses, then recovers after removals */
  {
    size_t added = 0;
    char name[32];
    for (int i = 0; i < (int)mgop_fp_slots() + 10; i++) {
      snprintf(name, sizeof(name), "x%d", i);
      if (mgop_fp_upsert(mgop_fp_key("K", "n", name))) added++;
    }
    CHECK(added == mgop_fp_slots() - before); /* every row, then refused */
    CHECK(mgop_fp_span() == mgop_fp_slots());
    for (int i = 0; i < (int)mgop_fp_slots() + 10; i++) {
      snprintf(name, sizeof(name), "x%d", i);
      mgop_fp_remove(mgop_fp_key("K", "n", name));
    }
    CHECK(mgop_fp_count() == before);
    CHECK(mgop_fp_upsert(mgop_fp_key("K", "n", "again")) != NULL);
    mgop_fp_remove(mgop_fp_key("K", "n", "again"));
    mgop_fp_compact();
  }
  /* compaction clears the tombstones and keeps every live row, its fields
   * and its reachability (rows that probed past a tombstone move home) */
  {
    char name[32];
    int lost = 0, fields = 0;
    for (int i = 0; i < 3000; i++) {
      snprintf(name, sizeof(name), "c%d", i);
      f = mgop_fp_upsert(mgop_fp_key("K", "n", name));
      CHECK(f != NULL);
      if (f) f->applied_gen = i;
    }
    for (int i = 0; i < 3000; i += 2) { /* every other one: tombstones inside the chains */
      snprintf(name, sizeof(name), "c%d", i);
      mgop_fp_remove(mgop_fp_key("K", "n", name));
    }
    CHECK(mgop_fp_tombstones() >= 1500);
    { /* rows do not move: a pointer taken before compaction stays good */
      struct mgop_fp *kept = mgop_fp_find(mgop_fp_key("K", "n", "c1"));
      mgop_fp_compact();
      CHECK(kept != NULL && kept == mgop_fp_find(mgop_fp_key("K", "n", "c1")) && kept->applied_gen == 1);
    }
    CHECK(mgop_fp_tombstones() == 0);
    CHECK(mgop_fp_count() == before + 1500);
    for (int i = 0; i < 3000; i++) {
      snprintf(name, sizeof(name), "c%d", i);
      f = mgop_fp_find(mgop_fp_key("K", "n", name));
      if ((i % 2 == 0) != (f == NULL)) lost++;
      if (f && f->applied_gen == i) fields++;
    }
    CHECK(lost == 0 && fields == 1500);
    { /* no row was left twice; removed rows are reused before new ones */
      size_t live = 0, span = mgop_fp_span();
      for (size_t i = 0; i < span; i++)
        if (mgop_fp_at(i)) live++;
      CHECK(live == before + 1500);
      for (int i = 0; i < 1500; i++) {
        snprintf(name, sizeof(name), "r%d", i);
        CHECK(mgop_fp_upsert(mgop_fp_key("K", "n", name)) != NULL);
      }
      CHECK(mgop_fp_span() == span); /* the 1500 rows freed above, not new pages */
      for (int i = 0; i < 1500; i++) {
        snprintf(name, sizeof(name), "r%d", i);
        mgop_fp_remove(mgop_fp_key("K", "n", name));
      }
    }
    for (int i = 1; i < 3000; i += 2) {
      snprintf(name, sizeof(name), "c%d", i);
      mgop_fp_remove(mgop_fp_key("K", "n", name));
    }
    mgop_fp_compact();
    CHECK(mgop_fp_count() == before && mgop_fp_tombstones() == 0);
  }
}

/* Two encodings of one value hash alike (key order, Go's \u003c escapes,
 * whitespace); a changed value does not; beyond the bounds is 0. */
static void test_json_canon_hash(void) {
  static const char a[] = "{\"b\":[1,{\"y\":\"x<y\",\"x\":true}],\"a\":\"m\"}";
  static const char b[] = "{ \"a\" : \"m\", \"b\": [1, {\"x\": true, \"y\": \"x\\u003cy\"}] }";
  static const char c[] = "{\"a\":\"m\",\"b\":[{\"x\":true,\"y\":\"x<y\"},1]}"; /* array order counts */
  static const char d[] = "{\"a\":\"1\",\"b\":[1,{\"y\":\"x<y\",\"x\":true}]}";
  static const char e[] = "{\"a\":1,\"b\":[1,{\"y\":\"x<y\",\"x\":true}]}"; /* "1" is not 1 */
  char deep[64];
  jsmntok_t t1[64], t2[64];
  struct mgop_json j1, j2;
  uint64_t ha;
  CHECK(mgop_json_parse(&j1, a, sizeof(a) - 1, t1, 64) == 0 && mgop_json_parse(&j2, b, sizeof(b) - 1, t2, 64) == 0);
  ha = mgop_json_canon_hash(&j1, 0);
  CHECK(ha != 0 && ha == mgop_json_canon_hash(&j2, 0));
  CHECK(mgop_json_parse(&j2, c, sizeof(c) - 1, t2, 64) == 0 && mgop_json_canon_hash(&j2, 0) != ha);
  CHECK(mgop_json_parse(&j2, d, sizeof(d) - 1, t2, 64) == 0 && mgop_json_canon_hash(&j2, 0) != ha);
  CHECK(mgop_json_parse(&j1, e, sizeof(e) - 1, t1, 64) == 0 && mgop_json_canon_hash(&j1, 0) != mgop_json_canon_hash(&j2, 0));
  memset(deep, 0, sizeof(deep));
  for (int i = 0; i < MGOP_CANON_DEPTH + 2; i++) deep[i] = '[', deep[2 * (MGOP_CANON_DEPTH + 2) - 1 - i] = ']';
  CHECK(mgop_json_parse(&j1, deep, strlen(deep), t1, 64) == 0 && mgop_json_canon_hash(&j1, 0) == 0);
  { /* one member left out, at the top only, in any encoding of its key */
    static const char f[] = "{\"a\":\"m\",\"podRoles\":{\"p-0\":\"PRIMARY\"},\"b\":{\"podRoles\":1}}";
    static const char g[] = "{\"b\":{\"podRoles\":1},\"pod\\u0052oles\":{},\"a\":\"m\"}";
    static const char h[] = "{\"a\":\"m\",\"b\":{\"podRoles\":1}}";
    static const char k[] = "{\"a\":\"m\",\"b\":{}}";
    uint64_t hf;
    CHECK(mgop_json_parse(&j1, f, sizeof(f) - 1, t1, 64) == 0 && mgop_json_parse(&j2, g, sizeof(g) - 1, t2, 64) == 0);
    hf = mgop_json_canon_hash_except(&j1, 0, "podRoles");
    CHECK(hf != 0 && hf == mgop_json_canon_hash_except(&j2, 0, "podRoles") && hf != mgop_json_canon_hash(&j1, 0));
    CHECK(mgop_json_parse(&j2, h, sizeof(h) - 1, t2, 64) == 0 && hf == mgop_json_canon_hash(&j2, 0));
    CHECK(mgop_json_parse(&j2, k, sizeof(k) - 1, t2, 64) == 0 && hf != mgop_json_canon_hash_except(&j2, 0, "podRoles"));
  }
}

/* After a restart: the live status (as the API server encodes it) and the
 * body we would write compare equal; the Ready state and its transition
 * time come from the live object and are kept. */
static void test_adopt_status(void) {
  static const char live[] =
      "{\"metadata\":{\"name\":\"x\"},\"status\":{\"phase\":\"Healthy\",\"observedGeneration\":2,\"message\":\"a \\u003e b\","
      "\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"reason\":\"R\",\"message\":\"m\",\"observedGeneration\":2,"
      "\"lastTransitionTime\":\"2026-01-02T03:04:05Z\"},{\"type\":\"Stalled\",\"status\":\"False\",\"reason\":\"R\","
      "\"message\":\"m\",\"observedGeneration\":2,\"lastTransitionTime\":\"2026-01-02T03:04:05Z\"}]}}";
  static const char ours[] =
      "{\"status\":{\"conditions\":[{\"lastTransitionTime\":\"2026-01-02T03:04:05Z\",\"message\":\"m\",\"observedGeneration\":2,"
      "\"reason\":\"R\",\"status\":\"True\",\"type\":\"Ready\"},{\"lastTransitionTime\":\"2026-01-02T03:04:05Z\",\"message\":\"m\","
      "\"observedGeneration\":2,\"reason\":\"R\",\"status\":\"False\",\"type\":\"Stalled\"}],\"message\":\"a > b\","
      "\"observedGeneration\":2,\"phase\":\"Healthy\"}}";
  static const char changed[] = "{\"status\":{\"phase\":\"Progressing\"}}";
  jsmntok_t tok[128];
  struct mgop_json j;
  struct mgop_fp f;
  memset(&f, 0, sizeof(f));
  CHECK(mgop_json_parse(&j, live, sizeof(live) - 1, tok, 128) == 0);
  mgop_adopt_status(&f, &j, 0);
  CHECK(f.status_hash != 0 && f.status_hash == mgop_status_hash(ours, sizeof(ours) - 1));
  CHECK(f.status_hash != mgop_status_hash(changed, sizeof(changed) - 1));
  CHECK(f.cond_ready == 1 && f.cond_since == 1767323045LL); /* 2026-01-02T03:04:05Z */
  f.status_hash = 7; /* known already: a later event does not overwrite what we track */
  f.cond_since = 5;
  mgop_adopt_status(&f, &j, 0);
  CHECK(f.status_hash == 7 && f.cond_since == 5);
  { /* the sixth condition (its type is the longest) keeps its time as well */
    static const char topo[] =
        "{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"lastTransitionTime\":\"2026-01-02T03:04:05Z\"},"
        "{\"type\":\"TopologyRegistered\",\"status\":\"False\",\"reason\":\"Disabled\","
        "\"lastTransitionTime\":\"2026-01-02T03:04:06Z\"}]}}";
    memset(&f, 0, sizeof(f));
    CHECK(mgop_json_parse(&j, topo, sizeof(topo) - 1, tok, 128) == 0);
    mgop_adopt_status(&f, &j, 0);
    CHECK(f.xcond_state == 1 && f.xcond_since == 1767323046LL);
  }
}

/* Prune's ownership test: label and a chain of controller references up to
 * this cluster's uid; a broken chain or another uid is not ours. */
static void test_prune_owner_depth(void) {
  uint64_t cl = mgop_cluster_hash("ns", "c1"), root = mgop_fp_key("MultigresCluster", "ns", "c1");
  uint64_t ku = mgop_fp_key("Shard", "ns", "s"), kt = mgop_fp_key("TableGroup", "ns", "t"), kw = mgop_fp_key("StatefulSet", "ns", "w");
  struct mgop_fp *tg = mgop_fp_upsert(kt), *sh = mgop_fp_upsert(ku), *sts = mgop_fp_upsert(kw);
  CHECK(tg && sh && sts);
  if (!tg || !sh || !sts) return;
  CHECK(cl != mgop_cluster_hash("ns2", "c1") && cl != mgop_cluster_hash("ns", "c2"));
  snprintf(tg->uid, sizeof(tg->uid), "uid-tg");
  snprintf(sh->uid, sizeof(sh->uid), "uid-sh");
  tg->cluster = sh->cluster = sts->cluster = cl;
  tg->owner_key = root, tg->owner_uid = mgop_uid_hash("uid-root");
  sh->owner_key = kt, sh->owner_uid = mgop_uid_hash("uid-tg");
  sts->owner_key = ku, sts->owner_uid = mgop_uid_hash("uid-sh");
  CHECK(mgop_owner_depth(tg, cl, root, mgop_uid_hash("uid-root")) == 1);
  CHECK(mgop_owner_depth(sts, cl, root, mgop_uid_hash("uid-root")) == 3);
  CHECK(mgop_owner_depth(sts, cl, root, mgop_uid_hash("uid-other")) == 0); /* an earlier cluster of that name */
  snprintf(sh->uid, sizeof(sh->uid), "uid-sh2"); /* the Shard was re-created: the old chain breaks */
  CHECK(mgop_owner_depth(sts, cl, root, mgop_uid_hash("uid-root")) == 0);
  snprintf(sh->uid, sizeof(sh->uid), "uid-sh");
  sh->cluster = mgop_cluster_hash("ns", "c2"); /* a link of another cluster */
  CHECK(mgop_owner_depth(sts, cl, root, mgop_uid_hash("uid-root")) == 0);
  mgop_fp_remove(kt);
  mgop_fp_remove(ku);
  mgop_fp_remove(kw);
}

static void test_work_set(void) {
  struct mgop_work w;
  long long now = 1000000;
  CHECK(mgop_work_depth() == 0);
  CHECK(mgop_work_add("MultigresCluster", "ns", "b", now + 50) == 0);
  CHECK(mgop_work_add("MultigresCluster", "ns", "a", now) == 0);
  CHECK(mgop_work_add("MultigresCluster", "ns", "a", now + 999) == 0); /* dedup keeps the earlier time */
  CHECK(mgop_work_depth() == 2);
  CHECK(mgop_work_next_due(now) == 0);
  CHECK(mgop_work_pop(now, &w) == 0 && !strcmp(w.name, "a"));
  CHECK(mgop_work_pop(now, &w) == MGOP_ERR_AGAIN); /* b is not due yet */
  CHECK(mgop_work_next_due(now) == 50);
  CHECK(mgop_work_pop(now + 50, &w) == 0 && !strcmp(w.name, "b"));
  CHECK(mgop_work_depth() == 0 && mgop_work_next_due(now) == -1);
  {
    char big[100];
    memset(big, 'x', 99);
    big[99] = 0;
    CHECK(mgop_work_add("MultigresCluster", "ns", big, now) == MGOP_ERR_TOOBIG);
  }
}

/* The work set's hash index, full: every root found after each pop has
 * shifted its probe run back, the set refusing one more, pops in time
 * order, and a retry counting its attempts. */
static int t_work_all_found(int live[], int n) { /* each live root is still one entry */
  size_t depth = mgop_work_depth();
  for (int i = 0; i < n; i++) {
    char name[16];
    if (!live[i]) continue;
    snprintf(name, sizeof(name), "c%d", i);
    if (mgop_work_add(i % 3 ? "MultigresCluster" : "CellTemplate", i % 2 ? "ns-a" : "ns-b", name, LLONG_MAX) ||
        mgop_work_depth() != depth)
      return 0;
  }
  return 1;
}

static void test_work_index(void) {
  static int live[MGOP_WORK_SLOTS];
  struct mgop_work w;
  long long last = -1;
  int popped = 0, order_ok = 1, found_ok = 1;
  CHECK(mgop_work_depth() == 0);
  for (int i = 0; i < MGOP_WORK_SLOTS; i++) { /* not_before a permutation of 0..SLOTS-1 */
    char name[16];
    snprintf(name, sizeof(name), "c%d", i);
    live[i] = 1;
    CHECK(mgop_work_add(i % 3 ? "MultigresCluster" : "CellTemplate", i % 2 ? "ns-a" : "ns-b", name,
                        (long long)((i * 389) % MGOP_WORK_SLOTS)) == MGOP_OK);
  }
  CHECK(mgop_work_depth() == MGOP_WORK_SLOTS);
  CHECK(mgop_work_add("MultigresCluster", "ns-a", "one-more", 0) == MGOP_ERR_NOMEM);
  CHECK(strstr(mgop_errmsg(), "work set full") != NULL);
  CHECK(t_work_all_found(live, MGOP_WORK_SLOTS));
  CHECK(mgop_work_depth() == MGOP_WORK_SLOTS); /* the check added nothing */
  while (mgop_work_pop(LLONG_MAX - 1, &w) == MGOP_OK) {
    order_ok &= w.not_before > last;
    last = w.not_before;
    live[atoi(w.name + 1)] = 0;
    popped++;
    if (popped % 64 == 0 || popped > MGOP_WORK_SLOTS - 8) found_ok &= t_work_all_found(live, MGOP_WORK_SLOTS);
    if (popped == MGOP_WORK_SLOTS / 2) { /* a popped one comes back as a new entry, and goes */
      CHECK(mgop_work_add(w.kind, w.ns, w.name, w.not_before) == MGOP_OK);
      CHECK(mgop_work_depth() == (size_t)(MGOP_WORK_SLOTS - popped + 1));
      CHECK(mgop_work_pop(LLONG_MAX - 1, &w) == MGOP_OK && w.not_before == last);
    }
  }
  CHECK(popped == MGOP_WORK_SLOTS && order_ok && found_ok);
  CHECK(mgop_work_depth() == 0 && mgop_work_next_due(0) == -1);
  CHECK(mgop_work_add("MultigresCluster", "ns-a", "r", 10) == MGOP_OK); /* a retry: one more attempt, later */
  CHECK(mgop_work_pop(10, &w) == MGOP_OK && w.attempts == 0);
  CHECK(mgop_work_retry(&w, 20) == MGOP_OK && mgop_work_next_due(10) == 10);
  CHECK(mgop_work_pop(20, &w) == MGOP_OK && w.attempts == 1 && mgop_work_depth() == 0);
}

/* ======================================================================
 * 7c. render: the builders, offline
 * ==================================================================== */
/* Renders files into a buffer; returns the exit code. */
static int t_render(const char *const *files, int n, char *out, size_t cap) {
  struct mgop_options opt;
  FILE *f = fmemopen(out, cap, "w");
  int rc;
  memset(&opt, 0, sizeof(opt));
  for (int i = 0; i < n; i++) opt.render_files[opt.nrender++] = files[i];
  rc = mgop_render(&opt, f);
  fclose(f);
  return rc;
}

/* Renders the one manifest yaml (written to NAME in the test directory). */
static int t_render_yaml(const char *name, const char *yaml, char *out, size_t cap) {
  char file[300];
  const char *files[] = {file};
  snprintf(file, sizeof(file), "%s/%s", t_tmpdir, name);
  t_write(t_tmpdir, name, yaml);
  return t_render(files, 1, out, cap);
}

static void test_render_minimal(void) {
  static char out[512 * 1024];
  static jsmntok_t tok[8192];
  const char *files[] = {"config/samples/minimal.yaml"};
  /* the reference operator's names for this sample (docs/components.md 2.3), and each owner */
  static const char *want[][3] = {
      {"TopoServer", "minimal-global-topo", "MultigresCluster"},
      {"Cell", "minimal-zone-a-96c88ae0", "MultigresCluster"},
      {"TableGroup", "minimal-postgres-default-f7d4ad4a", "MultigresCluster"},
      {"Shard", "minimal-postgres-default-0-inf-1e3c045c", "TableGroup"},
      {"Service", "minimal-global-topo", "TopoServer"},
      {"Service", "minimal-global-topo-headless", "TopoServer"},
      {"StatefulSet", "minimal-global-topo", "TopoServer"},
      {"PodDisruptionBudget", "minimal-global-topo", "TopoServer"},
      {"Deployment", "minimal-multiadmin", "MultigresCluster"},
      {"Service", "minimal-multiadmin", "MultigresCluster"},
      {"Deployment", "minimal-multiadmin-web", "MultigresCluster"},
      {"Service", "minimal-multiadmin-web", "MultigresCluster"},
      {"Service", "minimal-multigateway", "MultigresCluster"},
      {"Service", "minimal-multigateway-replica", "MultigresCluster"},
      {"Deployment", "minimal-zone-a-multigateway-0ccc2e8b", "Cell"},
      {"Service", "minimal-zone-a-multigateway-0ccc2e8b", "Cell"},
      {"ConfigMap", "minimal-postgres-default-0-inf-1e3c045c-pg-hba", "Shard"},
      {"ConfigMap", "minimal-postgres-default-0-inf-1e3c045c-exporter-queries", "Shard"},
      {"Service", "minimal-postgres-default-0-inf-pool-default-zone-a-h---22cdf02c", "Shard"},
      {"StatefulSet", "minimal-postgres-default-0-inf-pool-defau---a3a0d77b", "Shard"},
      {"PodDisruptionBudget", "minimal-postgres-default-0-inf-pdb-7138f1d2", "Shard"},
      {"Deployment", "minimal-postgres-default-0-inf-multiorch-zone-a-bbe2a333", "Shard"},
      {"Service", "minimal-postgres-default-0-inf-multiorch-zone-a-bbe2a333", "Shard"},
  };
  const int nwant = (int)(sizeof(want) / sizeof(want[0]));
  char *p, *save = NULL;
  int n = 0;
  CHECK(t_render(files, 1, out, sizeof(out)) == 0);
  for (p = strtok_r(out, "\n", &save); p; p = strtok_r(NULL, "\n", &save)) {
    struct mgop_json j;
    char kind[32], name[80], label[64], owner[32];
    int labels, ctl = 0;
    if (p[0] != '{') continue; /* comments and --- separators */
    CHECK(mgop_json_parse(&j, p, strlen(p), tok, 8192) == 0);
    mgop_json_path_str(&j, 0, "kind", kind, sizeof(kind));
    mgop_json_path_str(&j, 0, "metadata.name", name, sizeof(name));
    mgop_json_path_str(&j, 0, "metadata.ownerReferences[0].kind", owner, sizeof(owner));
    if (n < nwant) {
      CHECK_STR(kind, want[n][0]);
      CHECK_STR(name, want[n][1]);
      CHECK_STR(owner, want[n][2]);
    }
    labels = mgop_json_path(&j, 0, "metadata.labels");
    CHECK(mgop_json_str(&j, mgop_json_key(&j, labels, "app.kubernetes.io/managed-by"), label, sizeof(label)) == 0);
    CHECK_STR(label, "multigres-operator");
    CHECK(mgop_json_str(&j, mgop_json_key(&j, labels, "multigres.com/cluster"), label, sizeof(label)) == 0);
    CHECK_STR(label, "minimal");
    CHECK(mgop_json_bool(&j, mgop_json_path(&j, 0, "metadata.ownerReferences[0].controller"), &ctl) == 0 && ctl);
    if (!strcmp(kind, "StatefulSet")) { /* PVCs are retained unless a policy says Delete */
      char pol[16];
      CHECK(mgop_json_path_str(&j, 0, "spec.persistentVolumeClaimRetentionPolicy.whenDeleted", pol, sizeof(pol)) == 0);
      CHECK_STR(pol, "Retain");
      CHECK(mgop_json_path_str(&j, 0, "spec.persistentVolumeClaimRetentionPolicy.whenScaled", pol, sizeof(pol)) == 0);
      CHECK_STR(pol, "Retain");
    }
    if (!strcmp(kind, "StatefulSet") && strstr(name, "pool-defau")) { /* pools roll under the operator's control */
      char strat[16];
      CHECK(mgop_json_path_str(&j, 0, "spec.updateStrategy.type", strat, sizeof(strat)) == 0);
      CHECK_STR(strat, "OnDelete");
    }
    { /* every container sets its pull policy (the reference forgets) */
      int tmpl = mgop_json_path(&j, 0, "spec.template.spec.containers");
      for (int c = 0; tmpl >= 0 && c < j.tok[tmpl].size; c++) {
        char pull[32];
        CHECK(mgop_json_path_str(&j, mgop_json_at(&j, tmpl, c), "imagePullPolicy", pull, sizeof(pull)) == 0);
        CHECK_STR(pull, "IfNotPresent");
      }
    }
    n++;
  }
  CHECK(n == nwant);
}

static void test_render_defaults_and_errors(void) {
  static char out[256 * 1024];
  const char *ext[] = {"config/samples/external-etcd.yaml"};
  const char *tmpl[] = {"config/samples/minimal.yaml", "config/samples/default-templates/core.yaml"};
  /* an external global etcd: no global TopoServer and no global etcd
   * workloads; the isolated cell's local TopoServer, owned by its Cell */
  CHECK(t_render(ext, 1, out, sizeof(out)) == 0);
  CHECK(strstr(out, "global-topo") == NULL);
  CHECK(strstr(out, "{\"apiVersion\":\"multigres.com/v1alpha1\",\"kind\":\"TopoServer\",\"metadata\":{\"name\":"
                    "\"external-etcd-cluster-zone-b-isolated-562---b8bcdd8b\"") != NULL);
  CHECK(strstr(out, "\"app.kubernetes.io/component\":\"local-toposerver\",\"multigres.com/cluster\":\"external-etcd-cluster\","
                    "\"multigres.com/cell\":\"zone-b-isolated\"}") != NULL);
  /* the namespace's "default" CoreTemplate is the third level of the chain */
  CHECK(t_render(tmpl, 2, out, sizeof(out)) == 0);
  CHECK(strstr(out, "\"kind\":\"TopoServer\"") != NULL);
  {
    char bad[300];
    const char *files[] = {bad};
    snprintf(bad, sizeof(bad), "%s/bad-ref.yaml", t_tmpdir);
    t_write(t_tmpdir, "bad-ref.yaml",
            "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: x}\n"
            "spec:\n  globalTopoServer: {templateRef: nope}\n");
    fprintf(stderr, "    (expected errors follow)\n");
    CHECK(t_render(files, 1, out, sizeof(out)) == 1);
    t_write(t_tmpdir, "bad-ref.yaml", "just: [a, list\n");
    CHECK(t_render(files, 1, out, sizeof(out)) == 2);
    t_write(t_tmpdir, "bad-ref.yaml", "kind: ConfigMap\n");
    CHECK(t_render(files, 1, out, sizeof(out)) == 1);
  }
}

/* ======================================================================
 * 7d. the defaults chain, table-driven
 * ==================================================================== */
/* Resolves one cluster (YAML) with templates (a YAML stream) offline, the
 * way render does; returns the tree's rc and leaves the context in *r. */
static const char *t_resolve_ns = "default";
static int t_resolve(const char *cluster, const char *templates, struct mgop_rctx *r) {
  static char scratch[256 * 1024], text[64 * 1024];
  struct mgop_buf sb;
  int n;
  mgop_arena_reset(&mgop_server.arena); /* frees what the last case took (sanitizer builds malloc) */
  mgop_arena_init(&mgop_server.arena, mgop_server.arena_mem, sizeof(mgop_server.arena_mem));
  mgop_nmanifests = 0;
  mgop_manifest_used = 0;
  mgop_render_ns = "default";
  n = snprintf(text, sizeof(text), "%s\n---\n%s\n", cluster, templates ? templates : "");
  mgop_buf_init(&sb, scratch, sizeof(scratch));
  if (mgop_yaml_to_json_docs(text, (size_t)n, &sb, mgop_collect_manifest, (void *)"test")) {
    fprintf(stderr, "    t_resolve: %s\n", mgop_errmsg());
    return -100;
  }
  memset(r, 0, sizeof(*r));
  r->render = 1;
  r->arena = &mgop_server.arena;
  r->ns = t_resolve_ns;
  r->manifests = mgop_manifests;
  r->nmanifests = mgop_nmanifests;
  for (int i = 0; i < mgop_nmanifests; i++)
    if (mgop_manifests[i].kind == K_CLUSTER) {
      r->name = mgop_manifests[i].name;
      if (mgop_parse_arena(r->arena, mgop_manifests[i].json, mgop_manifests[i].len, &r->root)) return -101;
    }
  if (!r->name) return -102;
  r->spec = mgop_json_key(&r->root, 0, "spec");
  return mgop_reconcile_tree(r);
}

/* The value at path in the first desired object of kind whose name has
 * name_part, as JSON text ("" when absent). */
static const char *t_desired_value(struct mgop_rctx *r, const char *kind, const char *name_part, const char *path) {
  static char out[2048];
  static jsmntok_t tok[8192];
  out[0] = 0;
  for (int i = 0; i < r->ndesired; i++) {
    struct mgop_json j;
    int t;
    if (strcmp(mgop_kinds[r->desired[i].kind].kind, kind) || !strstr(r->desired[i].name, name_part)) continue;
    if (mgop_json_parse(&j, r->desired[i].json, r->desired[i].len, tok, 8192)) return "(unparsable)";
    t = mgop_json_path(&j, 0, path);
    if (t >= 0) snprintf(out, sizeof(out), "%.*s", j.tok[t].end - j.tok[t].start, j.js + j.tok[t].start);
    return out;
  }
  return "(no such object)";
}

#define T_CLUSTER "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: c}\n"
#define T_CELL(name, n) "apiVersion: multigres.com/v1alpha1\nkind: CellTemplate\nmetadata: {name: " name "}\n" \
  "spec: {multigateway: {replicas: " #n ", resources: {requests: {cpu: 7m}}}}\n---\n"
#define T_CORE(name, n) "apiVersion: multigres.com/v1alpha1\nkind: CoreTemplate\nmetadata: {name: " name "}\n" \
  "spec: {globalTopoServer: {etcd: {replicas: " #n "}}, multiadmin: {replicas: " #n "}}\n---\n"
#define T_SHARD(name, n) "apiVersion: multigres.com/v1alpha1\nkind: ShardTemplate\nmetadata: {name: " name "}\n" \
  "spec: {multiorch: {replicas: " #n "}, pools: {main: {type: readWrite, replicasPerCell: " #n \
  ", cells: [a], storage: {size: " #n "Gi}}}}\n---\n"
#define T_SHARDS(extra) "  databases:\n  - name: postgres\n    default: true\n    tablegroups:\n    - name: default\n" \
  "      default: true\n      shards:\n      - name: 0-inf\n" extra

/* Every level of the 4-level chain, for every component, every overrides
 * merge rule as the resolver applies it, and the errors. */
static void test_resolver_chain(void) {
  static const struct {
    const char *what, *cluster, *templates, *kind, *name_part, *path, *want;
  } cases[] = {
      /* cells: multigateway */
      {"cell: built-in", T_CLUSTER "spec: {cells: [{name: a, zone: z}]}", NULL,
       "Deployment", "multigateway", "spec.replicas", "1"},
      {"cell: namespace default template", T_CLUSTER "spec: {cells: [{name: a, zone: z}]}", T_CELL("default", 2),
       "Deployment", "multigateway", "spec.replicas", "2"},
      {"cell: templateDefaults beats default", T_CLUSTER "spec: {templateDefaults: {cellTemplate: t}, cells: [{name: a, zone: z}]}",
       T_CELL("default", 2) T_CELL("t", 3), "Deployment", "multigateway", "spec.replicas", "3"},
      {"cell: explicit cellTemplate beats templateDefaults",
       T_CLUSTER "spec: {templateDefaults: {cellTemplate: t}, cells: [{name: a, zone: z, cellTemplate: u}]}",
       T_CELL("default", 2) T_CELL("t", 3) T_CELL("u", 4), "Deployment", "multigateway", "spec.replicas", "4"},
      {"cell: inline spec beats every template",
       T_CLUSTER "spec: {templateDefaults: {cellTemplate: t}, cells: [{name: a, zone: z, spec: {multigateway: {replicas: 5}}}]}",
       T_CELL("default", 2) T_CELL("t", 3), "Deployment", "multigateway", "spec.replicas", "5"},
      {"cell: overrides replace a scalar of the template",
       T_CLUSTER "spec: {cells: [{name: a, zone: z, cellTemplate: t, overrides: {multigateway: {replicas: 6}}}]}",
       T_CELL("t", 3), "Deployment", "multigateway", "spec.replicas", "6"},
      {"cell: overrides merge maps (template's resources kept)",
       T_CLUSTER "spec: {cells: [{name: a, zone: z, cellTemplate: t, overrides: {multigateway: {replicas: 6}}}]}",
       T_CELL("t", 3), "Deployment", "multigateway", "spec.template.spec.containers[0].resources.requests.cpu", "7m"},
      {"cell: overrides merge nested maps (both sides kept)",
       T_CLUSTER "spec: {cells: [{name: a, zone: z, cellTemplate: t, overrides: {multigateway: {resources: {limits: {memory: 9Mi}}}}}]}",
       T_CELL("t", 3), "Deployment", "multigateway", "spec.template.spec.containers[0].resources",
       "{\"requests\":{\"cpu\":\"7m\"},\"limits\":{\"memory\":\"9Mi\"}}"},
      /* core: global etcd and multiadmin */
      {"core: built-in etcd", T_CLUSTER "spec: {cells: [{name: a, zone: z}]}", NULL,
       "StatefulSet", "global-topo", "spec.replicas", "3"},
      {"core: namespace default template", T_CLUSTER "spec: {cells: [{name: a, zone: z}]}", T_CORE("default", 5),
       "StatefulSet", "global-topo", "spec.replicas", "5"},
      {"core: templateDefaults beats default",
       T_CLUSTER "spec: {templateDefaults: {coreTemplate: t}, cells: [{name: a, zone: z}]}", T_CORE("default", 5) T_CORE("t", 1),
       "StatefulSet", "global-topo", "spec.replicas", "1"},
      {"core: templateRef beats templateDefaults",
       T_CLUSTER "spec: {templateDefaults: {coreTemplate: t}, globalTopoServer: {templateRef: u}, cells: [{name: a, zone: z}]}",
       T_CORE("t", 1) T_CORE("u", 7), "StatefulSet", "global-topo", "spec.replicas", "7"},
      {"core: inline etcd beats templates",
       T_CLUSTER "spec: {templateDefaults: {coreTemplate: t}, globalTopoServer: {etcd: {replicas: 9}}, cells: [{name: a, zone: z}]}",
       T_CORE("t", 1), "StatefulSet", "global-topo", "spec.replicas", "9"},
      {"core: inline etcd keeps built-in defaults for the rest",
       T_CLUSTER "spec: {globalTopoServer: {etcd: {replicas: 1}}, cells: [{name: a, zone: z}]}", NULL,
       "StatefulSet", "global-topo", "spec.volumeClaimTemplates[0].spec.resources.requests.storage", "1Gi"},
      {"multiadmin: template", T_CLUSTER "spec: {templateDefaults: {coreTemplate: t}, cells: [{name: a, zone: z}]}",
       T_CORE("t", 2), "Deployment", "multiadmin", "spec.replicas", "2"},
      {"multiadmin: inline beats template",
       T_CLUSTER "spec: {templateDefaults: {coreTemplate: t}, multiadmin: {spec: {replicas: 4}}, cells: [{name: a, zone: z}]}",
       T_CORE("t", 2), "Deployment", "multiadmin", "spec.replicas", "4"},
      /* shards: multiorch and pools */
      {"shard: namespace default template", T_CLUSTER "spec:\n  cells: [{name: a, zone: z}]\n" T_SHARDS(""),
       T_SHARD("default", 2), "StatefulSet", "pool-main", "spec.replicas", "2"},
      {"shard: templateDefaults beats default",
       T_CLUSTER "spec:\n  templateDefaults: {shardTemplate: t}\n  cells: [{name: a, zone: z}]\n" T_SHARDS(""),
       T_SHARD("default", 2) T_SHARD("t", 3), "StatefulSet", "pool-main", "spec.replicas", "3"},
      {"shard: explicit shardTemplate beats templateDefaults",
       T_CLUSTER "spec:\n  templateDefaults: {shardTemplate: t}\n  cells: [{name: a, zone: z}]\n" T_SHARDS("        shardTemplate: u\n"),
       T_SHARD("t", 3) T_SHARD("u", 4), "StatefulSet", "pool-main", "spec.replicas", "4"},
      {"shard: overrides merge into a pool (scalar replaced)",
       T_CLUSTER "spec:\n  cells: [{name: a, zone: z}]\n" T_SHARDS("        shardTemplate: u\n        overrides: {pools: {main: {replicasPerCell: 1}}}\n"),
       T_SHARD("u", 4), "StatefulSet", "pool-main", "spec.replicas", "1"},
      {"shard: overrides keep the template's other pool fields",
       T_CLUSTER "spec:\n  cells: [{name: a, zone: z}]\n" T_SHARDS("        shardTemplate: u\n        overrides: {pools: {main: {replicasPerCell: 1}}}\n"),
       T_SHARD("u", 4), "StatefulSet", "pool-main", "spec.volumeClaimTemplates[0].spec.resources.requests.storage", "4Gi"},
      {"shard: overrides replace lists whole (pool cells)",
       T_CLUSTER "spec:\n  cells: [{name: a, zone: z}, {name: b, zone: y}]\n"
       T_SHARDS("        shardTemplate: u\n        overrides: {pools: {main: {cells: [b]}}}\n"),
       T_SHARD("u", 4), "StatefulSet", "pool-main", "metadata.labels", "~\"multigres.com/cell\":\"b\""},
      /* PVC policy: shard > table group > cluster > template > Retain, field by field */
      {"pvc: built-in Retain", T_CLUSTER "spec:\n  cells: [{name: a, zone: z}]\n" T_SHARDS(""), NULL,
       "StatefulSet", "pool-defau", "spec.persistentVolumeClaimRetentionPolicy.whenDeleted", "Retain"},
      {"pvc: the template when nothing else says",
       T_CLUSTER "spec:\n  cells: [{name: a, zone: z}]\n" T_SHARDS("        shardTemplate: p\n"),
       "apiVersion: multigres.com/v1alpha1\nkind: ShardTemplate\nmetadata: {name: p}\n"
       "spec: {pvcDeletionPolicy: {whenDeleted: Delete}, pools: {main: {cells: [a]}}}\n",
       "StatefulSet", "pool-main", "spec.persistentVolumeClaimRetentionPolicy.whenDeleted", "Delete"},
      {"pvc: the cluster ranks above the template",
       T_CLUSTER "spec:\n  pvcDeletionPolicy: {whenDeleted: Retain}\n  cells: [{name: a, zone: z}]\n" T_SHARDS("        shardTemplate: p\n"),
       "apiVersion: multigres.com/v1alpha1\nkind: ShardTemplate\nmetadata: {name: p}\n"
       "spec: {pvcDeletionPolicy: {whenDeleted: Delete}, pools: {main: {cells: [a], pvcDeletionPolicy: {whenDeleted: Delete}}}}\n",
       "StatefulSet", "pool-main", "spec.persistentVolumeClaimRetentionPolicy.whenDeleted", "Retain"},
      {"pvc: the table group ranks above the cluster",
       T_CLUSTER "spec:\n  pvcDeletionPolicy: {whenScaled: Retain}\n  cells: [{name: a, zone: z}]\n"
       "  databases:\n  - name: postgres\n    default: true\n    tablegroups:\n    - name: default\n      default: true\n"
       "      pvcDeletionPolicy: {whenScaled: Delete}\n      shards: [{name: 0-inf}]\n", NULL,
       "StatefulSet", "pool-defau", "spec.persistentVolumeClaimRetentionPolicy.whenScaled", "Delete"},
      {"pvc: shard overrides rank above the table group, field by field",
       T_CLUSTER "spec:\n  cells: [{name: a, zone: z}]\n"
       "  databases:\n  - name: postgres\n    default: true\n    tablegroups:\n    - name: default\n      default: true\n"
       "      pvcDeletionPolicy: {whenScaled: Delete, whenDeleted: Delete}\n"
       "      shards: [{name: 0-inf, shardTemplate: p, overrides: {pvcDeletionPolicy: {whenScaled: Retain}}}]\n",
       "apiVersion: multigres.com/v1alpha1\nkind: ShardTemplate\nmetadata: {name: p}\nspec: {pools: {main: {cells: [a]}}}\n",
       "StatefulSet", "pool-main", "spec.persistentVolumeClaimRetentionPolicy",
       "{\"whenDeleted\":\"Delete\",\"whenScaled\":\"Retain\"}"},
      {"shard: multiorch from the template", T_CLUSTER "spec:\n  cells: [{name: a, zone: z}]\n" T_SHARDS("        shardTemplate: u\n"),
       T_SHARD("u", 2), "Deployment", "multiorch", "spec.replicas", "2"},
  };
  static struct mgop_rctx r;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int rc = t_resolve(cases[i].cluster, cases[i].templates, &r);
    const char *got = rc ? "(error)" : t_desired_value(&r, cases[i].kind, cases[i].name_part, cases[i].path);
    /* "~x": the value contains x */
    int match = cases[i].want[0] == '~' ? strstr(got, cases[i].want + 1) != NULL : !strcmp(got, cases[i].want);
    if (rc || !match)
      fprintf(stderr, "    chain case \"%s\": rc %d (%s %s), got %s, want %s\n", cases[i].what, rc, r.stalled_reason,
              r.stalled_msg, got, cases[i].want);
    CHECK(rc == 0 && match);
  }
  mgop_arena_reset(&mgop_server.arena);
}

/* The error cases: Stalled with a reason, and a message naming the field. */
static void test_resolver_errors(void) {
  static const struct { const char *what, *cluster, *templates, *reason, *field; } cases[] = {
      {"missing cellTemplate", T_CLUSTER "spec: {cells: [{name: a, zone: z, cellTemplate: nope}]}", NULL,
       "TemplateNotFound", "spec.cells[name=a].cellTemplate"},
      {"missing templateDefaults.cellTemplate", T_CLUSTER "spec: {templateDefaults: {cellTemplate: nope}, cells: [{name: a, zone: z}]}",
       NULL, "TemplateNotFound", "spec.templateDefaults.cellTemplate"},
      {"missing globalTopoServer.templateRef",
       T_CLUSTER "spec: {globalTopoServer: {templateRef: nope}, cells: [{name: a, zone: z}]}", NULL, "TemplateNotFound",
       "spec.globalTopoServer.templateRef"},
      {"missing templateDefaults.coreTemplate", T_CLUSTER "spec: {templateDefaults: {coreTemplate: nope}, cells: [{name: a, zone: z}]}",
       NULL, "TemplateNotFound", "spec.templateDefaults.coreTemplate"},
      {"missing shardTemplate", T_CLUSTER "spec:\n  cells: [{name: a, zone: z}]\n" T_SHARDS("        shardTemplate: nope\n"), NULL,
       "TemplateNotFound", "shards[name=0-inf].shardTemplate"},
      {"missing templateDefaults.shardTemplate",
       T_CLUSTER "spec:\n  templateDefaults: {shardTemplate: nope}\n  cells: [{name: a, zone: z}]\n" T_SHARDS(""), NULL,
       "TemplateNotFound", "spec.templateDefaults.shardTemplate"},
      {"overrides not a mapping", T_CLUSTER "spec: {cells: [{name: a, zone: z, overrides: [1]}]}", NULL, "InvalidOverride",
       "spec.cells[name=a].overrides"},
      {"external etcd in a template", T_CLUSTER "spec: {globalTopoServer: {templateRef: t}, cells: [{name: a, zone: z}]}",
       "apiVersion: multigres.com/v1alpha1\nkind: CoreTemplate\nmetadata: {name: t}\n"
       "spec: {globalTopoServer: {external: {endpoints: [http://e:2379]}}}\n", "UnsupportedValue", "globalTopoServer.external"},
      {"no cells", T_CLUSTER "spec: {cells: []}", NULL, "InvalidSpec", "spec.cells"},
      {"a pool in an unknown cell",
       T_CLUSTER "spec:\n  cells: [{name: a, zone: z}]\n" T_SHARDS("        spec: {pools: {p: {cells: [b]}}}\n"), NULL,
       "InvalidSpec", "shards[name=0-inf].pools.p.cells names cell \"b\""},
      {"a multiorch in an unknown cell",
       T_CLUSTER "spec:\n  cells: [{name: a, zone: z}]\n" T_SHARDS("        spec: {multiorch: {cells: [b]}}\n"), NULL,
       "InvalidSpec", "shards[name=0-inf].multiorch.cells names cell \"b\""},
  };
  static struct mgop_rctx r;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int rc = t_resolve(cases[i].cluster, cases[i].templates, &r);
    int ok = rc != 0 && !strcmp(r.stalled_reason, cases[i].reason) && strstr(r.stalled_msg, cases[i].field);
    if (!ok)
      fprintf(stderr, "    error case \"%s\": rc %d, reason \"%s\", message \"%s\"\n", cases[i].what, rc, r.stalled_reason,
              r.stalled_msg);
    CHECK(ok);
  }
  mgop_arena_reset(&mgop_server.arena);
}

struct t_yaml_docs { char out[2][512]; int n; };

/* ======================================================================
 * 7e. limits: every bound fits the CRD's maxima, or is reported
 * ==================================================================== */
/* n cells named cNN-xxx (30 characters), each with a local etcd when local. */
static void t_cells_yaml(char *out, size_t cap, int n, int local) {
  struct mgop_buf b;
  mgop_buf_init(&b, out, cap);
  mgop_buf_puts(&b, "  cells:\n");
  for (int i = 0; i < n; i++)
    mgop_buf_printf(&b, "  - {name: c%02d-xxxxxxxxxxxxxxxxxxxxxxxxxx, zone: z%d%s}\n", i, i,
                    local ? ", spec: {localTopoServer: {etcd: {replicas: 3}}}" : "");
  mgop_buf_cstr(&b);
}

#define T_LONG_NAME "aaaaaaaaaaaaaaaaaaaaaaaaa" /* 25: the CEL maximum of a cluster name */
#define T_LONG_NS "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn" /* 63 */

/* Two 512-character images (the CRD's maxLength), digest-pinned: each
 * container gets its own, exactly. */
static void test_limits_images(void) {
  static struct mgop_rctx r;
  static char yaml[4096], pg[MGOP_CRD_IMAGE_MAX + 1], mp[MGOP_CRD_IMAGE_MAX + 1], want[MGOP_CRD_IMAGE_MAX + 3];
  const char *digest = "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  size_t dl = strlen(digest);
  CHECK(sizeof(T_LONG_NS) - 1 == MGOP_CRD_NAMESPACE_MAX && sizeof(T_LONG_NAME) - 1 == MGOP_CRD_CLUSTER_NAME_MAX);
  memset(pg, 'p', MGOP_CRD_IMAGE_MAX - dl);
  memcpy(pg + MGOP_CRD_IMAGE_MAX - dl, digest, dl + 1);
  memset(mp, 'm', MGOP_CRD_IMAGE_MAX - dl);
  memcpy(mp + MGOP_CRD_IMAGE_MAX - dl, digest, dl + 1);
  memcpy(pg, "reg.example/pg/", 15);
  memcpy(mp, "reg.example/mp/", 15);
  CHECK(strlen(pg) == MGOP_CRD_IMAGE_MAX && strlen(mp) == MGOP_CRD_IMAGE_MAX);
  snprintf(yaml, sizeof(yaml), T_CLUSTER "spec:\n  images: {postgres: \"%s\", multipooler: \"%s\", multiorch: \"%s\"}\n"
           "  cells: [{name: a, zone: z}]\n", pg, mp, pg);
  CHECK(t_resolve(yaml, NULL, &r) == 0 && !r.stalled_reason[0]);
  CHECK_STR(t_desired_value(&r, "StatefulSet", "pool", "spec.template.spec.initContainers[0].image"), pg);
  CHECK_STR(t_desired_value(&r, "Deployment", "multiorch", "spec.template.spec.containers[0].image"), pg);
  CHECK_STR(t_desired_value(&r, "StatefulSet", "pool", "spec.template.spec.containers[0].image"), mp);
  CHECK_STR(t_desired_value(&r, "StatefulSet", "pool", "spec.template.spec.initContainers[0].restartPolicy"), "Always");
  (void)want;
  /* one character more than any buffer holds: a Stalled error naming the field, not the default image */
  snprintf(yaml, sizeof(yaml), T_CLUSTER "spec:\n  images: {multipooler: \"x%s\"}\n  cells: [{name: a, zone: z}]\n", mp);
  t_resolve(yaml, NULL, &r);
  CHECK_STR(r.stalled_reason, "LimitReached");
  CHECK(strstr(r.stalled_msg, "spec.images.multipooler is longer than 512 characters") != NULL);
  CHECK(strstr(r.stalled_msg, "(limit value_length)") != NULL);
}

/* A 50-cell cluster, each cell with its own etcd, every name at its
 * length limit: all 819 objects render, with their values whole. */
static void test_limits_fifty_cells(void) {
  static struct mgop_rctx r;
  static char yaml[32 * 1024], cells[16 * 1024], root_path[MGOP_CRD_ROOT_PATH_MAX + 1], size[MGOP_CRD_QUANTITY_MAX + 1];
  memset(root_path, 'r', MGOP_CRD_ROOT_PATH_MAX);
  root_path[0] = '/';
  memset(size, '0', MGOP_CRD_QUANTITY_MAX);
  memcpy(size + MGOP_CRD_QUANTITY_MAX - 3, "1Gi", 4);
  t_cells_yaml(cells, sizeof(cells), MGOP_CRD_CELLS_MAX, 1);
  snprintf(yaml, sizeof(yaml), "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: " T_LONG_NAME
           "}\nspec:\n  globalTopoServer: {etcd: {rootPath: \"%s\", storage: {size: \"%s\"}}}\n%s" T_SHARDS(
           "        spec: {pools: {ppppppppppppppppppppppppp: {storage: {size: \"%s\"}}}}\n"
           "    - {name: ttttttttttttttttttttttttt, shards: [{name: 0-inf}]}\n"), root_path, size, cells, size);
  t_resolve_ns = T_LONG_NS;
  CHECK(t_resolve(yaml, NULL, &r) == 0);
  t_resolve_ns = "default";
  CHECK_STR(r.stalled_reason, "");
  CHECK(r.ncells == MGOP_CRD_CELLS_MAX);
  /* two table groups (one named at its 25-character limit), one pool each, in every cell */
  CHECK(r.ndesired == MGOP_OBJECTS_OF(MGOP_CRD_CELLS_MAX, 2, 2, 2 * MGOP_CRD_CELLS_MAX));
  CHECK(r.ntg == 2 && r.nshard_names == 2);
  {
    char want[MGOP_CRD_ROOT_PATH_MAX + 40];
    int orch = 0, pools = 0;
    CHECK_STR(t_desired_value(&r, "StatefulSet", "-postgres-", "spec.volumeClaimTemplates[0].spec.resources.requests.storage"),
              size);
    CHECK_STR(t_desired_value(&r, "StatefulSet", "global-topo", "spec.volumeClaimTemplates[0].spec.resources.requests.storage"),
              size);
    snprintf(want, sizeof(want), "--topo-global-root=%s", root_path);
    CHECK_STR(t_desired_value(&r, "Deployment", "multiorch", "spec.template.spec.containers[0].args[4]"), want);
    /* a multiorch and a pool in every cell: nothing was dropped */
    for (int i = 0; i < r.ndesired; i++) {
      orch += r.desired[i].kind == K_DEPLOY && strstr(r.desired[i].json, "\"app.kubernetes.io/component\":\"multiorch\"");
      pools += r.desired[i].kind == K_STS && strstr(r.desired[i].json, "\"app.kubernetes.io/component\":\"shard-pool\"");
    }
    CHECK(orch == 2 * MGOP_CRD_CELLS_MAX && pools == 2 * MGOP_CRD_CELLS_MAX);
  }
  { /* its status, stalled with a long message, fits the status buffer */
    unsigned long long before = mgop_limit_hits[MGOP_L_VALUE_LENGTH];
    uint64_t root = mgop_fp_key("MultigresCluster", r.ns, r.name);
    char ns_copy[64];
    snprintf(ns_copy, sizeof(ns_copy), "%s", T_LONG_NS);
    r.ns = ns_copy;
    snprintf(r.stalled_reason, sizeof(r.stalled_reason), "LimitReached");
    memset(r.stalled_msg, 'm', sizeof(r.stalled_msg) - 1);
    r.stalled_msg[sizeof(r.stalled_msg) - 1] = 0;
    for (int i = 0; i < MGOP_TREFS_MAX; i++) { /* every template it can name, named at the 63-character limit */
      memset(&r.trefs[i], 0, sizeof(r.trefs[i]));
      r.trefs[i].kind = K_CORET + i % 3;
      r.trefs[i].found = 1;
      snprintf(r.trefs[i].name, sizeof(r.trefs[i].name), "t%02d%s", i,
               "-ttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt");
      CHECK(strlen(r.trefs[i].name) == 63);
    }
    r.ntrefs = MGOP_TREFS_MAX;
    mgop_reconcile_status(&r, 1);
    CHECK(mgop_limit_hits[MGOP_L_VALUE_LENGTH] == before);
    mgop_series_drop(root);
    mgop_fp_remove(root);
  }
  for (int i = 0; i < r.ndesired; i++) CHECK(strstr(r.desired[i].json, "\"namespace\":\"" T_LONG_NS "\"") != NULL);
}

/* The largest tree the schema admits (8 pools in each of 50 cells, 20
 * table groups) is more than one cluster may own: it stalls, and says
 * which field and which limit, instead of failing over and over. */
static void test_limits_largest_tree(void) {
  static struct mgop_rctx r;
  static char yaml[48 * 1024], cells[16 * 1024], pools[1024];
  struct mgop_buf b;
  CHECK(MGOP_OBJECTS_SCHEMA_MAX > MGOP_DESIRED_MAX); /* so the stall below is the designed answer */
  t_cells_yaml(cells, sizeof(cells), MGOP_CRD_CELLS_MAX, 1);
  mgop_buf_init(&b, pools, sizeof(pools));
  for (int p = 0; p < MGOP_CRD_POOLS_MAX; p++) mgop_buf_printf(&b, "%sp%d: {replicasPerCell: 3}", p ? ", " : "", p);
  mgop_buf_cstr(&b);
  mgop_buf_init(&b, yaml, sizeof(yaml));
  mgop_buf_printf(&b, T_CLUSTER "spec:\n%s  databases:\n  - name: postgres\n    default: true\n    tablegroups:\n", cells);
  for (int t = 0; t < MGOP_CRD_TABLEGROUPS_MAX; t++)
    mgop_buf_printf(&b, "    - {name: %s%d, default: %s, shards: [{name: 0-inf, spec: {pools: {%s}}}]}\n",
                    t ? "tg" : "default", t ? t : 0, t ? "false" : "true", pools);
  mgop_buf_cstr(&b);
  if (!strstr(yaml, "default0")) CHECK(0); /* the default table group is named default */
  for (char *p = strstr(yaml, "default0"); p; p = strstr(p, "default0")) memmove(p + 7, p + 8, strlen(p + 8) + 1);
  CHECK(!b.overflow);
  CHECK(t_resolve(yaml, NULL, &r) != 0);
  CHECK_STR(r.stalled_reason, "LimitReached");
  CHECK(strstr(r.stalled_msg, "the cluster needs more than 1024 objects") != NULL);
  CHECK(strstr(r.stalled_msg, "spec.databases[name=postgres].tablegroups[name=default].shards[name=0-inf]") != NULL);
  CHECK(strstr(r.stalled_msg, "(limit objects_per_cluster)") != NULL);
  CHECK(r.ndesired == MGOP_DESIRED_MAX);
}

/* Metric label sets at the CRD's maxima keep every label, so ready and
 * desired stay two series; one that cannot fit is counted, not cut. */
static void test_limits_metric_labels(void) {
  char shard[MGOP_SHARD_CR_NAME_MAX + 1], pool[MGOP_CRD_POOL_NAME_MAX + 1], big[MGOP_LABELS_MAX + 1];
  uint64_t owner = 0x5eed;
  int rows = 0;
  unsigned long long before = mgop_limit_hits[MGOP_L_METRIC_LABELS];
  static char text[256 * 1024];
  struct mgop_buf b;
  memset(shard, 's', sizeof(shard) - 1);
  shard[sizeof(shard) - 1] = 0;
  memset(pool, 'p', sizeof(pool) - 1);
  pool[sizeof(pool) - 1] = 0;
  mgop_gauge_pair(owner, mgop_f_pool, "shard", shard, "pool", pool, T_LONG_NS, 2, 3);
  for (size_t i = 0; i < mgop_series_cap; i++) {
    if (mgop_series[i].owner != owner) continue;
    rows++;
    CHECK(strstr(mgop_series[i].labels, shard) && strstr(mgop_series[i].labels, pool) &&
          strstr(mgop_series[i].labels, "namespace=\"" T_LONG_NS "\""));
    CHECK(strstr(mgop_series[i].labels, mgop_series[i].value == 2 ? "state=\"ready\"" : "state=\"desired\"") != NULL);
  }
  CHECK(rows == 2);
  CHECK(mgop_limit_hits[MGOP_L_METRIC_LABELS] == before);
  memset(big, 'b', sizeof(big) - 1);
  big[sizeof(big) - 1] = 0;
  mgop_gauge_pair(owner, mgop_f_pool, "shard", big, "pool", pool, T_LONG_NS, 2, 3);
  CHECK(mgop_limit_hits[MGOP_L_METRIC_LABELS] == before + 2); /* both series refused */
  rows = 0;
  for (size_t i = 0; i < mgop_series_cap; i++) rows += mgop_series[i].owner == owner;
  CHECK(rows == 2);
  mgop_buf_init(&b, text, sizeof(text) - 1);
  mgop_metrics_render(&b);
  mgop_buf_cstr(&b);
  CHECK(strstr(text, "# TYPE multigres_operator_limit_reached_total counter") != NULL);
  CHECK(strstr(text, "multigres_operator_limit_reached_total{limit=\"metric_labels\"}") != NULL);
  mgop_series_drop(owner);
}

/* The series table is indexed: a set finds its row again after other
 * clusters' rows were dropped around it (no duplicate row, no lost one),
 * and a full table refuses and counts instead of overwriting. */
static int t_series_rows(uint64_t owner) {
  int n = 0;
  for (size_t i = 0; i < mgop_series_cap; i++) n += mgop_series[i].family && mgop_series[i].owner == owner;
  return n;
}

static void test_metric_series(void) {
  char l[64];
  unsigned long long full_before = mgop_series_full;
  for (uint64_t o = 1; o <= 300; o++)
    for (int k = 0; k < 5; k++) {
      snprintf(l, sizeof(l), "cluster=\"c%d\",k=\"%d\"", (int)o, k);
      mgop_gauge_set(0x1000 + o, mgop_f_cells, l, (double)k);
    }
  for (uint64_t o = 1; o <= 300; o += 3) mgop_series_drop(0x1000 + o);
  for (uint64_t o = 2; o <= 300; o += 3) { /* set again: the same rows */
    for (int k = 0; k < 5; k++) {
      snprintf(l, sizeof(l), "cluster=\"c%d\",k=\"%d\"", (int)o, k);
      mgop_gauge_set(0x1000 + o, mgop_f_cells, l, 10.0 + k);
    }
  }
  CHECK(t_series_rows(0x1000 + 1) == 0 && t_series_rows(0x1000 + 2) == 5 && t_series_rows(0x1000 + 3) == 5);
  {
    int total = 0, updated = 0;
    for (size_t i = 0; i < mgop_series_cap; i++)
      if (mgop_series[i].family == mgop_f_cells && mgop_series[i].owner > 0x1000 && mgop_series[i].owner <= 0x1000 + 300) {
        total++;
        updated += (mgop_series[i].owner - 0x1000) % 3 == 2 && mgop_series[i].value >= 10.0;
      }
    CHECK(total == 200 * 5 && updated == 100 * 5);
  }
  { /* dense: the rows in use are the first ones, so memory follows them */
    int dense = 1;
    for (size_t i = 0; i < mgop_series_cap; i++) dense &= (i < mgop_series_used) == (mgop_series[i].family != NULL);
    CHECK(dense);
  }
  for (uint64_t o = 1; o <= 300; o++) mgop_series_drop(0x1000 + o);
  size_t others = mgop_series_used;
  for (size_t i = 0; i < mgop_series_cap + 5; i++) {
    snprintf(l, sizeof(l), "n=\"%zu\"", i);
    mgop_gauge_set(0x9999, mgop_f_cells, l, 1);
  }
  CHECK(t_series_rows(0x9999) == (int)mgop_series_cap - (int)others);
  CHECK(mgop_series_used == mgop_series_cap && mgop_series_full > full_before);
  mgop_series_drop(0x9999);
  CHECK(t_series_rows(0x9999) == 0);
}

/* A status turn keeps the series it set and drops its cluster's others (a
 * removed cell, an old phase), never another cluster's (a series is its
 * family and labels, which name its cluster); the rows it kept
 * are found by the index after the sweep closed the table up. */
static double t_series_value(uint64_t owner, const char *labels) {
  for (size_t i = 0; i < mgop_series_used; i++)
    if (mgop_series[i].owner == owner && !strcmp(mgop_series[i].labels, labels)) return mgop_series[i].value;
  return -1;
}

static void test_metric_series_sweep(void) {
  const uint64_t a = 0x5eed1, b = 0x5eed2;
  size_t used;
  mgop_series_begin();
  mgop_gauge_set(a, mgop_f_cells, "cell=\"z1\"", 1);
  mgop_gauge_set(a, mgop_f_cells, "cell=\"z2\"", 2);
  mgop_gauge_set(a, mgop_f_cluster_info, "phase=\"Progressing\"", 1);
  mgop_gauge_set(b, mgop_f_cells, "cell=\"b1\"", 5);
  mgop_series_sweep(a);
  CHECK(t_series_rows(a) == 3 && t_series_rows(b) == 1);
  mgop_series_begin(); /* b's turn: a's rows stay, set or not */
  mgop_gauge_set(b, mgop_f_cells, "cell=\"b1\"", 6);
  mgop_series_sweep(b);
  CHECK(t_series_rows(a) == 3 && t_series_value(b, "cell=\"b1\"") == 6);
  mgop_series_begin(); /* a's turn: z2 is gone, the phase moved on */
  mgop_gauge_set(a, mgop_f_cells, "cell=\"z1\"", 11);
  mgop_gauge_set(a, mgop_f_cluster_info, "phase=\"Healthy\"", 1);
  used = mgop_series_used;
  mgop_series_sweep(a);
  CHECK(mgop_series_used == used - 2 && t_series_rows(a) == 2 && t_series_rows(b) == 1);
  CHECK(t_series_value(a, "cell=\"z2\"") < 0 && t_series_value(a, "phase=\"Progressing\"") < 0);
  CHECK(t_series_value(a, "cell=\"z1\"") == 11 && t_series_value(a, "phase=\"Healthy\"") == 1);
  mgop_series_begin(); /* the index finds the kept rows: a set updates, adds none */
  used = mgop_series_used;
  mgop_gauge_set(a, mgop_f_cells, "cell=\"z1\"", 12);
  mgop_gauge_set(b, mgop_f_cells, "cell=\"b1\"", 7);
  CHECK(mgop_series_used == used && t_series_value(a, "cell=\"z1\"") == 12 && t_series_value(b, "cell=\"b1\"") == 7);
  mgop_series_drop(a);
  mgop_series_drop(b);
  CHECK(t_series_rows(a) == 0 && t_series_rows(b) == 0);
}

/* The watch echo of the operator's own template write queues no upkeep
 * turn (that turn began with a GET: one per write); anyone else's change,
 * or a new generation, still does. */
static int t_count_work(void) {
  struct mgop_work w;
  int n = 0;
  while (mgop_work_pop(LLONG_MAX, &w) == MGOP_OK) n++;
  return n;
}

static void test_template_own_echo(void) {
  static jsmntok_t tok[256];
  struct mgop_json j;
#define T_ECHO_OBJ "{\"metadata\":{\"name\":\"echo\",\"namespace\":\"t\",\"generation\":1,\"resourceVersion\":\"%s\"},\"spec\":{}}"
  char buf[300];
  struct mgop_template_ref *t;
  int kind = -1;
  for (int i = 0; i < K_COUNT; i++)
    if (!strcmp(mgop_kinds[i].kind, "ShardTemplate")) kind = i;
  CHECK(kind >= 0);
  t_count_work();
  snprintf(buf, sizeof(buf), T_ECHO_OBJ, "5");
  CHECK(mgop_json_parse(&j, buf, strlen(buf), tok, 256) == MGOP_OK);
  mgop_on_template_event(kind, "ADDED", "t", "echo", &j, 0);
  CHECK(t_count_work() == 1); /* new: upkeep */
  t = mgop_template_find(mgop_fp_key("ShardTemplate", "t", "echo"));
  CHECK(t != NULL);
  if (!t) return;
  snprintf(t->own_rv[1], sizeof(t->own_rv[1]), "7"); /* as a status patch leaves it */
  snprintf(buf, sizeof(buf), T_ECHO_OBJ, "7");
  CHECK(mgop_json_parse(&j, buf, strlen(buf), tok, 256) == MGOP_OK);
  mgop_on_template_event(kind, "MODIFIED", "t", "echo", &j, 0);
  CHECK(t_count_work() == 0); /* our own echo */
  snprintf(buf, sizeof(buf), T_ECHO_OBJ, "8");
  CHECK(mgop_json_parse(&j, buf, strlen(buf), tok, 256) == MGOP_OK);
  mgop_on_template_event(kind, "MODIFIED", "t", "echo", &j, 0);
  CHECK(t_count_work() == 1); /* someone else's write */
  mgop_on_template_event(kind, "DELETED", "t", "echo", &j, 0);
  t_count_work();
}

/* A full cluster table: the cluster that does not fit is reported (log
 * and counter here; its turn stalls with the same message), not dropped. */
static void test_limits_cluster_table(void) {
  unsigned long long before = mgop_limit_hits[MGOP_L_CLUSTERS];
  char name[32];
  static char text[256 * 1024];
  struct mgop_buf b;
  for (int i = 0; i < MGOP_WORK_SLOTS; i++) {
    snprintf(name, sizeof(name), "c%d", i);
    mgop_roots_set("full", name, 1);
  }
  CHECK(mgop_root_find("full", "c0") != NULL);
  CHECK(mgop_limit_hits[MGOP_L_CLUSTERS] == before);
  mgop_roots_set("full", "one-too-many", 1);
  CHECK(mgop_root_find("full", "one-too-many") == NULL);
  CHECK(mgop_limit_hits[MGOP_L_CLUSTERS] == before + 1);
  mgop_buf_init(&b, text, sizeof(text) - 1);
  mgop_metrics_render(&b);
  mgop_buf_cstr(&b);
  snprintf(name, sizeof(name), "%llu", before + 1);
  {
    char want[128];
    snprintf(want, sizeof(want), "multigres_operator_limit_reached_total{limit=\"clusters\"} %s\n", name);
    CHECK(strstr(text, want) != NULL);
  }
  mgop_roots_set("full", "c0", 0); /* room again: the next event tracks it */
  mgop_roots_set("full", "one-too-many", 1);
  CHECK(mgop_root_find("full", "one-too-many") != NULL);
  memset(mgop_server.roots, 0, sizeof(mgop_server.roots));
}

/* ======================================================================
 * 7f. storage: live StatefulSets keep their volumeClaimTemplates
 * ==================================================================== */
static void test_quantity(void) {
  CHECK(mgop_quantity("1Gi") == 1073741824.0);
  CHECK(mgop_quantity("10Gi") > mgop_quantity("9.5Gi"));
  CHECK(mgop_quantity("1G") == 1e9 && mgop_quantity("1G") < mgop_quantity("1Gi"));
  CHECK(mgop_quantity("500M") == 5e8 && mgop_quantity("1e9") == 1e9 && mgop_quantity("1073741824") == 1073741824.0);
  CHECK(mgop_quantity("1500m") == 1.5);
  CHECK(mgop_quantity("") < 0 && mgop_quantity("Gi") < 0 && mgop_quantity("1Gb") < 0 && mgop_quantity("0x10") < 0 &&
        mgop_quantity("nan") < 0 && mgop_quantity("inf") < 0);
}

#define T_POOL_CLUSTER(size, etcd) T_CLUSTER "spec:\n  globalTopoServer: {etcd: {replicas: " #etcd "}}\n" \
  "  cells: [{name: a, zone: z}]\n" T_SHARDS("        spec: {pools: {main: {storage: {size: " size "}}}}\n")

/* The live StatefulSet names, as the watch would have recorded them. */
static void t_live_sts(struct mgop_rctx *r, const char *name_part, const char *vct_size, int replicas) {
  for (int i = 0; i < r->ndesired; i++) {
    struct mgop_fp *f;
    if (r->desired[i].kind != K_STS || !strstr(r->desired[i].name, name_part)) continue;
    f = mgop_fp_upsert(mgop_fp_key("StatefulSet", r->ns, r->desired[i].name));
    f->flags |= MGOP_FP_EXISTS;
    mgop_sts_fact_set(f->key, 0, vct_size, strstr(r->desired[i].json, "ETCD_INITIAL_CLUSTER") ? replicas : 0, "test");
    f->desired = replicas;
    f->grown_hash = 0;
  }
}

static void t_forget_sts(struct mgop_rctx *r) {
  for (int i = 0; i < r->ndesired; i++)
    if (r->desired[i].kind == K_STS) {
      mgop_sts_fact_set(mgop_fp_key("StatefulSet", r->ns, r->desired[i].name), 1, "", 0, "");
      mgop_fp_remove(mgop_fp_key("StatefulSet", r->ns, r->desired[i].name));
    }
}

static void test_storage_growth(void) {
  static struct mgop_rctx r;
  const char *vct = "spec.volumeClaimTemplates[0].spec.resources.requests.storage";
  /* a new cluster: the sizes as asked */
  CHECK(t_resolve(T_POOL_CLUSTER("10Gi", 3), NULL, &r) == 0);
  CHECK_STR(t_desired_value(&r, "StatefulSet", "-postgres-", vct), "10Gi");
  CHECK(r.ngrows == 0);
  t_live_sts(&r, "-postgres-", "10Gi", 3);
  t_live_sts(&r, "global-topo", "1Gi", 3);
  /* grown: the StatefulSet keeps 10Gi (immutable), its PVCs are queued to grow */
  CHECK(t_resolve(T_POOL_CLUSTER("20Gi", 3), NULL, &r) == 0);
  CHECK_STR(r.stalled_reason, "");
  CHECK_STR(t_desired_value(&r, "StatefulSet", "-postgres-", vct), "10Gi");
  CHECK(r.ngrows == 1 && !strcmp(r.grows[0].size, "20Gi") && !strcmp(r.grows[0].vct, "pgdata") &&
        strstr(r.grows[0].sts, "-postgres-") != NULL);
  CHECK(strstr(r.grows[0].field, "shards[name=0-inf].pools.main.storage.size (cell a") != NULL);
  /* once every PVC has grown, nothing is queued (no LIST per turn) */
  {
    struct mgop_fp *f = mgop_fp_find(mgop_fp_key("StatefulSet", "default", r.grows[0].sts));
    CHECK(f != NULL);
    if (f) f->grown_hash = r.grows[0].hash;
    CHECK(t_resolve(T_POOL_CLUSTER("20Gi", 3), NULL, &r) == 0 && r.ngrows == 0);
  }
  /* shrunk: refused, the live size kept */
  CHECK(t_resolve(T_POOL_CLUSTER("5Gi", 3), NULL, &r) == 0);
  CHECK_STR(r.stalled_reason, "StorageShrinkRefused");
  CHECK(strstr(r.stalled_msg, "pools.main.storage.size (cell a, from inline) is 5Gi, smaller than the 10Gi of the "
                              "existing volumes") != NULL);
  CHECK_STR(t_desired_value(&r, "StatefulSet", "-postgres-", vct), "10Gi");
  /* the same size in other words is no change */
  CHECK(t_resolve(T_POOL_CLUSTER("10240Mi", 3), NULL, &r) == 0 && r.ngrows == 0 && !r.stalled_reason[0]);
  /* etcd members are fixed: the live count is kept and the change refused */
  CHECK(t_resolve(T_POOL_CLUSTER("10Gi", 5), NULL, &r) == 0);
  CHECK_STR(r.stalled_reason, "EtcdReplicasImmutable");
  CHECK(strstr(r.stalled_msg, "spec.globalTopoServer.etcd.replicas is 5, but the etcd cluster") != NULL);
  CHECK(strstr(r.stalled_msg, "apply templates first") != NULL);
  CHECK_STR(t_desired_value(&r, "StatefulSet", "global-topo", "spec.replicas"), "3");
  /* the member count comes from the live StatefulSet's ETCD_INITIAL_CLUSTER */
  {
    static jsmntok_t tok[8192];
    struct mgop_json j;
    int32_t members = -1;
    for (int i = 0; i < r.ndesired; i++)
      if (r.desired[i].kind == K_STS && mgop_json_parse(&j, r.desired[i].json, r.desired[i].len, tok, 8192) == 0)
        members = strstr(r.desired[i].name, "global-topo") ? mgop_etcd_members_of(&j, 0) : members;
    CHECK(members == 3);
  }
  /* a hand-scaled etcd StatefulSet is reverted, not taken for a membership change */
  {
    struct mgop_fp *f = NULL;
    for (int i = 0; i < r.ndesired; i++)
      if (r.desired[i].kind == K_STS && strstr(r.desired[i].name, "global-topo"))
        f = mgop_fp_find(mgop_fp_key("StatefulSet", "default", r.desired[i].name));
    CHECK(f != NULL);
    if (f) f->desired = 5;
    CHECK(t_resolve(T_POOL_CLUSTER("10Gi", 3), NULL, &r) == 0 && !r.stalled_reason[0]);
    CHECK_STR(t_desired_value(&r, "StatefulSet", "global-topo", "spec.replicas"), "3");
  }
  t_forget_sts(&r);
}

/* The webhook refuses what the live StatefulSets cannot take. */
/* One AdmissionReview POSTed to /validate: the answer in out, its HTTP status returned. */
static int t_admit(const char *body, char *out, size_t cap) {
  struct mgop_http_req req;
  struct mgop_srv_resp resp;
  memset(&req, 0, sizeof(req));
  memset(&resp, 0, sizeof(resp));
  snprintf(req.method, sizeof(req.method), "POST");
  snprintf(req.path, sizeof(req.path), "/validate");
  mgop_buf_init(&resp.body, out, cap - 1);
  mgop_serve_webhook(NULL, &req, body, strlen(body), &resp);
  mgop_buf_cstr(&resp.body);
  return resp.status;
}

static void test_admission_storage(void) {
#define T_UPDATE(size, etcd)                                                                                        \
  "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"s\",\"kind\":"    \
  "{\"kind\":\"MultigresCluster\"},\"operation\":\"UPDATE\",\"namespace\":\"ns\",\"userInfo\":{\"username\":\"a\"}," \
  "\"object\":{\"metadata\":{\"name\":\"c\"},\"spec\":{\"globalTopoServer\":{\"etcd\":{\"replicas\":" #etcd "}},"    \
  "\"cells\":[{\"name\":\"a\",\"zone\":\"z\"}],\"databases\":[{\"name\":\"postgres\",\"default\":true,"             \
  "\"tablegroups\":[{\"name\":\"default\",\"default\":true,\"shards\":[{\"name\":\"0-inf\",\"spec\":{\"pools\":"    \
  "{\"main\":{\"storage\":{\"size\":\"" size "\"}}}}}]}]}]}}}}"
  static const struct { const char *body, *says; int allowed; } cases[] = {
      {T_UPDATE("20Gi", 3), "\"allowed\":true", 1},
      {T_UPDATE("5Gi", 3), "StorageShrinkRefused", 0},
      {T_UPDATE("10Gi", 5), "EtcdReplicasImmutable", 0},
  };
  static struct mgop_rctx r;
  static char out[64 * 1024];
  CHECK(t_resolve(T_POOL_CLUSTER("10Gi", 3), NULL, &r) == 0); /* the cluster c as it runs, in namespace ns */
  for (int i = 0; i < r.ndesired; i++) {
    struct mgop_fp *f;
    if (r.desired[i].kind != K_STS) continue;
    f = mgop_fp_upsert(mgop_fp_key("StatefulSet", "ns", r.desired[i].name));
    f->flags |= MGOP_FP_EXISTS;
    f->desired = 3;
    mgop_sts_fact_set(f->key, 0, strstr(r.desired[i].name, "global-topo") ? "1Gi" : "10Gi",
                      strstr(r.desired[i].name, "global-topo") ? 3 : 0, "test");
  }
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    t_admit(cases[i].body, out, sizeof(out));
    if (!(strstr(out, cases[i].says) && strstr(out, cases[i].allowed ? "\"allowed\":true" : "\"allowed\":false")))
      fprintf(stderr, "    storage admission case %zu: %s\n", i, out);
    CHECK(strstr(out, cases[i].says) != NULL);
    CHECK(strstr(out, cases[i].allowed ? "\"allowed\":true" : "\"allowed\":false") != NULL);
  }
  for (int i = 0; i < r.ndesired; i++)
    if (r.desired[i].kind == K_STS) mgop_fp_remove(mgop_fp_key("StatefulSet", "ns", r.desired[i].name));
  mgop_arena_reset(&mgop_server.arena);
#undef T_UPDATE
}

static int t_yaml_cb(void *ctx, const char *json, size_t n, int index) {
  struct t_yaml_docs *g = ctx;
  if (index < 2) snprintf(g->out[index], 512, "%.*s", (int)n, json);
  g->n = index + 1;
  return 0;
}

static void test_yaml_to_json(void) {
  static char scratch[4096];
  struct mgop_buf b;
  struct t_yaml_docs got = {{{0}}, 0};
  const char *y = "a: 1\nb: '1'\nc: true\nd: ~\ne: [x, 0755, -0.5e3]\nf: \"q\\\"\"\ng:\n  h: null\n---\n- 1\n";
  int rc;
  mgop_buf_init(&b, scratch, sizeof(scratch));
  rc = mgop_yaml_to_json_docs(y, strlen(y), &b, t_yaml_cb, &got);
  CHECK(rc == 0 && got.n == 2);
  CHECK_STR(got.out[0], "{\"a\":1,\"b\":\"1\",\"c\":true,\"d\":null,\"e\":[\"x\",\"0755\",-0.5e3],\"f\":\"q\\\"\",\"g\":{\"h\":null}}");
  CHECK_STR(got.out[1], "[1]");
  CHECK(mgop_yaml_to_json_docs("a: [1,\n", 7, &b, t_yaml_cb, &got) == MGOP_ERR_PARSE);
}

/* ======================================================================
 * 7d. Backups: the defaults chain, pod parts, admission warning, certificates
 * ==================================================================== */
/* The first rendered object of kind whose name contains name_part, parsed
 * into j (its text copied to line). */
static int t_rendered(const char *out, const char *kind, const char *name_part, char *line, size_t cap,
                      struct mgop_json *j, jsmntok_t *tok, int ntok) {
  char want[64];
  snprintf(want, sizeof(want), "\"kind\":\"%s\"", kind);
  for (const char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
    const char *e = strchr(p, '\n');
    size_t n = e ? (size_t)(e - p) : strlen(p);
    char name[256];
    if (p[0] != '{' || n >= cap) continue;
    memcpy(line, p, n);
    line[n] = 0;
    if (!strstr(line, want) || mgop_json_parse(j, line, n, tok, ntok)) continue;
    if (mgop_json_path_str(j, 0, "metadata.name", name, sizeof(name)) == 0 && strstr(name, name_part)) return 0;
  }
  return -1;
}

/* The index of container name in the pod template, or -1. */
static int t_container(const struct mgop_json *j, const char *name) { /* a container or a native sidecar */
  static const char *const lists[] = {"spec.template.spec.containers", "spec.template.spec.initContainers"};
  for (int l = 0; l < 2; l++) {
    int cs = mgop_json_path(j, 0, lists[l]);
    for (int i = 0; cs >= 0 && i < j->tok[cs].size; i++) {
      char n[32];
      if (mgop_json_path_str(j, mgop_json_at(j, cs, i), "name", n, sizeof(n)) == 0 && !strcmp(n, name))
        return mgop_json_at(j, cs, i);
    }
  }
  return -1;
}

/* Whether the string array at path under t holds s. */
static int t_has_str(const struct mgop_json *j, int t, const char *path, const char *s) {
  int a = mgop_json_path(j, t, path);
  for (int i = 0; a >= 0 && i < j->tok[a].size; i++) {
    char v[1200];
    if (mgop_json_str(j, mgop_json_at(j, a, i), v, sizeof(v)) == 0 && !strcmp(v, s)) return 1;
  }
  return 0;
}

static void test_backup_builtin_default(void) {
  static char out[512 * 1024], line[64 * 1024], v[256];
  static jsmntok_t tok[8192];
  struct mgop_json j;
  const char *files[] = {"config/samples/minimal.yaml"};
  int c;
  CHECK(t_render(files, 1, out, sizeof(out)) == 0);
  /* no level sets backup: filesystem, /backups, 10Gi, ReadWriteOnce */
  CHECK(t_rendered(out, "Shard", "minimal-postgres-default-0-inf", line, sizeof(line), &j, tok, 8192) == 0);
  CHECK(mgop_json_path_str(&j, 0, "spec.backup.type", v, sizeof(v)) == 0 && !strcmp(v, "filesystem"));
  CHECK(mgop_json_path_str(&j, 0, "spec.backup.filesystem.path", v, sizeof(v)) == 0 && !strcmp(v, "/backups"));
  CHECK(mgop_json_path_str(&j, 0, "spec.backup.filesystem.storage.size", v, sizeof(v)) == 0 && !strcmp(v, "10Gi"));
  CHECK(t_has_str(&j, 0, "spec.backup.filesystem.storage.accessModes", "ReadWriteOnce"));
  CHECK(mgop_json_path_str(&j, 0, "spec.backup.pgbackrestTLS.secretName", v, sizeof(v)) == 0 &&
        !strcmp(v, "minimal-postgres-default-0-inf-1e3c045c-pgbackrest-tls"));
  CHECK(mgop_json_path(&j, 0, "spec.backup.encryption") < 0);
  CHECK(t_rendered(out, "StatefulSet", "pool-defau", line, sizeof(line), &j, tok, 8192) == 0);
  CHECK(strstr(line, "{\"name\":\"backup-data\",\"persistentVolumeClaim\":{\"claimName\":"
                     "\"backup-data-minimal-postgres-default-0-inf-811a09a5\"}}") != NULL);
  CHECK(strstr(line, "{\"key\":\"tls.crt\",\"path\":\"pgbackrest.crt\"},{\"key\":\"tls.key\",\"path\":"
                     "\"pgbackrest.key\"}") != NULL);
  c = t_container(&j, "postgres");
  CHECK(t_has_str(&j, c, "args", "--pgbackrest-cert-dir=/certs/pgbackrest"));
  CHECK(t_has_str(&j, c, "args", "--pgbackrest-port=8432"));
  CHECK(strstr(line, "{\"name\":\"backup-data\",\"mountPath\":\"/backups\"}") != NULL);
  c = t_container(&j, "multipooler");
  CHECK(t_has_str(&j, c, "args", "--pgbackrest-cert-file=/certs/pgbackrest/pgbackrest.crt"));
  CHECK(t_has_str(&j, c, "args", "--pgbackrest-key-file=/certs/pgbackrest/pgbackrest.key"));
  CHECK(t_has_str(&j, c, "args", "--pgbackrest-ca-file=/certs/pgbackrest/ca.crt"));
  CHECK(!strstr(line, "pgbackrest-cipher"));
  CHECK(!strstr(line, "AWS_"));
}

static void test_backup_chain_filesystem(void) {
  static char out[1024 * 1024], line[64 * 1024], v[256];
  static jsmntok_t tok[8192];
  struct mgop_json j;
  const char *files[] = {"config/samples/backup-filesystem.yaml"};
  int c;
  CHECK(t_render(files, 1, out, sizeof(out)) == 0);
  /* cluster level: path, class, RWX, encryption; table group orders: size */
  CHECK(t_rendered(out, "Shard", "backup-fs-postgres-default-0-inf", line, sizeof(line), &j, tok, 8192) == 0);
  CHECK(mgop_json_path_str(&j, 0, "spec.backup.filesystem.path", v, sizeof(v)) == 0 && !strcmp(v, "/var/backups"));
  CHECK(mgop_json_path_str(&j, 0, "spec.backup.filesystem.storage.size", v, sizeof(v)) == 0 && !strcmp(v, "20Gi"));
  CHECK(mgop_json_path_str(&j, 0, "spec.backup.encryption.secretName", v, sizeof(v)) == 0 &&
        !strcmp(v, "backup-fs-cipher"));
  CHECK(t_rendered(out, "Shard", "backup-fs-postgres-orders-0-inf", line, sizeof(line), &j, tok, 8192) == 0);
  CHECK(mgop_json_path_str(&j, 0, "spec.backup.filesystem.storage.size", v, sizeof(v)) == 0 && !strcmp(v, "50Gi"));
  CHECK(mgop_json_path_str(&j, 0, "spec.backup.filesystem.storage.class", v, sizeof(v)) == 0 &&
        !strcmp(v, "nfs-client"));
  CHECK(mgop_json_path_str(&j, 0, "spec.backup.filesystem.path", v, sizeof(v)) == 0 && !strcmp(v, "/var/backups"));
  CHECK(t_has_str(&j, 0, "spec.backup.filesystem.storage.accessModes", "ReadWriteMany"));
  /* both cells' StatefulSets of a shard mount the one PVC of that shard */
  {
    int n = 0;
    for (const char *p = strstr(out, "\"claimName\":\"backup-data-backup-fs-postgres-orders-0-inf-9967e8ea\""); p;
         p = strstr(p + 1, "\"claimName\":\"backup-data-backup-fs-postgres-orders-0-inf-9967e8ea\""))
      n++;
    CHECK(n == 2);
  }
  CHECK(t_rendered(out, "StatefulSet", "orders-0-inf-pool", line, sizeof(line), &j, tok, 8192) == 0);
  c = t_container(&j, "multipooler");
  CHECK(t_has_str(&j, c, "args", "--pgbackrest-cipher-key-file=/secrets/pgbackrest-cipher/keys.json"));
  CHECK(strstr(line, "{\"name\":\"pgbackrest-cipher\",\"secret\":{\"secretName\":\"backup-fs-cipher\"") != NULL);
  CHECK(strstr(line, "{\"name\":\"backup-data\",\"mountPath\":\"/var/backups\"}") != NULL);
  c = t_container(&j, "postgres"); /* only multipooler reads the cipher key */
  CHECK(!t_has_str(&j, c, "args", "--pgbackrest-cipher-key-file=/secrets/pgbackrest-cipher/keys.json"));
}

static void test_backup_chain_s3(void) {
  static char out[1024 * 1024], line[64 * 1024], v[256];
  static jsmntok_t tok[8192];
  struct mgop_json j;
  const char *files[] = {"config/samples/backup-s3.yaml"};
  CHECK(t_render(files, 1, out, sizeof(out)) == 0);
  CHECK(strstr(out, "backup-data") == NULL); /* no volume for S3 */
  CHECK(t_rendered(out, "StatefulSet", "default-0-inf-pool", line, sizeof(line), &j, tok, 8192) == 0);
  CHECK(strstr(line, "{\"name\":\"AWS_REGION\",\"value\":\"us-east-1\"},{\"name\":\"AWS_ACCESS_KEY_ID\",\"valueFrom\":"
                     "{\"secretKeyRef\":{\"name\":\"backup-s3-credentials\",\"key\":\"AWS_ACCESS_KEY_ID\"}}}") != NULL);
  CHECK(strstr(line, "\"sources\":[{\"secret\":{\"name\":\"backup-s3-pgbackrest\"") != NULL);
  CHECK(mgop_json_path(&j, 0, "spec.template.spec.serviceAccountName") < 0);
  /* the analytics shard switches credentials to IRSA: no key Secret there */
  CHECK(t_rendered(out, "StatefulSet", "analytics-0-inf-pool", line, sizeof(line), &j, tok, 8192) == 0);
  CHECK(mgop_json_path_str(&j, 0, "spec.template.spec.serviceAccountName", v, sizeof(v)) == 0 &&
        !strcmp(v, "analytics-backup-irsa"));
  CHECK(strstr(line, "AWS_ACCESS_KEY_ID") == NULL);
  CHECK(strstr(line, "{\"name\":\"AWS_REGION\",\"value\":\"us-east-1\"}") != NULL);
  CHECK(t_rendered(out, "Shard", "analytics-0-inf", line, sizeof(line), &j, tok, 8192) == 0);
  CHECK(mgop_json_path_str(&j, 0, "spec.backup.s3.keyPrefix", v, sizeof(v)) == 0 && !strcmp(v, "prod/backup-s3"));
  CHECK(mgop_json_path_str(&j, 0, "spec.backup.s3.endpoint", v, sizeof(v)) == 0 &&
        !strcmp(v, "http://minio.storage.svc:9000"));
  CHECK(mgop_json_path(&j, 0, "spec.backup.s3.credentialsSecret") < 0);
}

/* A table group may not move the repository away from its database's. */
static void test_backup_location_conflict(void) {
  static char out[256 * 1024];
  char f[300];
  const char *files[] = {f};
  struct mgop_backup_loc a, b;
  snprintf(f, sizeof(f), "%s/bk-conflict.yaml", t_tmpdir);
  t_write(t_tmpdir, "bk-conflict.yaml",
          "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: c}\nspec:\n"
          "  cells: [{name: a, zone: z}]\n"
          "  backup: {type: s3, s3: {bucket: one, region: r}}\n"
          "  databases:\n  - name: postgres\n    default: true\n    tablegroups:\n"
          "    - {name: default, default: true, shards: [{name: 0-inf}]}\n"
          "    - {name: t, shards: [{name: 0-inf}], backup: {type: s3, s3: {bucket: two, region: r}}}\n");
  fprintf(stderr, "    (an expected error follows)\n");
  CHECK(t_render(files, 1, out, sizeof(out)) == 1);
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  a.type = b.type = MGOP_BACKUP_S3;
  CHECK(mgop_backup_location_diff(&a, &b) == NULL);
  snprintf(a.credentials_secret, sizeof(a.credentials_secret), "x"); /* credentials may differ */
  CHECK(mgop_backup_location_diff(&a, &b) == NULL);
  snprintf(a.key_prefix, sizeof(a.key_prefix), "p");
  CHECK_STR(mgop_backup_location_diff(&a, &b), "s3.keyPrefix");
  a.type = MGOP_BACKUP_FILESYSTEM;
  CHECK_STR(mgop_backup_location_diff(&a, &b), "type");
}

/* Admission warns when a ReadWriteOnce backup volume spans cells. */
static void test_backup_rwo_warning(void) {
  static const char *docs[] = {
      /* 0: built-in default (RWO), two cells: warns */
      "{\"metadata\":{\"name\":\"w\"},\"spec\":{\"cells\":[{\"name\":\"a\",\"zone\":\"z1\"},{\"name\":\"b\",\"zone\":\"z2\"}]}}",
      /* 1: ReadWriteMany: no warning */
      "{\"metadata\":{\"name\":\"w\"},\"spec\":{\"cells\":[{\"name\":\"a\",\"zone\":\"z1\"},{\"name\":\"b\",\"zone\":\"z2\"}],"
      "\"backup\":{\"type\":\"filesystem\",\"filesystem\":{\"storage\":{\"accessModes\":[\"ReadWriteMany\"]}}}}}",
      /* 2: one cell: no warning */
      "{\"metadata\":{\"name\":\"w\"},\"spec\":{\"cells\":[{\"name\":\"a\",\"zone\":\"z1\"}]}}",
      /* 3: s3: no warning */
      "{\"metadata\":{\"name\":\"w\"},\"spec\":{\"cells\":[{\"name\":\"a\",\"zone\":\"z1\"},{\"name\":\"b\",\"zone\":\"z2\"}],"
      "\"backup\":{\"type\":\"s3\",\"s3\":{\"bucket\":\"b\",\"region\":\"r\"}}}}",
  };
  static jsmntok_t tok[512];
  mgop_arena_init(&mgop_admit_arena, mgop_admit_arena_mem, sizeof(mgop_admit_arena_mem));
  for (int i = 0; i < 4; i++) {
    struct mgop_verdict v;
    struct mgop_json j;
    memset(&v, 0, sizeof(v));
    v.allowed = 1;
    mgop_arena_reset(&mgop_admit_arena);
    CHECK(mgop_json_parse(&j, docs[i], strlen(docs[i]), tok, 512) == 0);
    mgop_admit_cluster(&j, 0, "default", &v);
    CHECK(v.allowed);
    CHECK(!strstr(v.warning, "ReadWriteOnce") == (i != 0));
    if (i == 0) CHECK(strstr(v.warning, "pods run in 2 cells") != NULL);
  }
}

/* The pgBackRest peer certificate: serverAuth and clientAuth, CN pgbackrest,
 * renewed when a third of its life is left or when the CA changed. */
static void test_backup_peer_certificate(void) {
  static struct mgop_pki_pair ca, other, leaf, serving;
  const char *names[] = {"pgbackrest", "my-shard"};
  long long now = 1800000000LL, nb = 0, na = 0;
  mbedtls_x509_crt crt;
  CHECK(mgop_pki_make_ca(&ca, "multigres-pgbackrest-ca", 10LL * 365 * 86400, now) == 0);
  CHECK(mgop_pki_make_ca(&other, "multigres-pgbackrest-ca", 10LL * 365 * 86400, now) == 0);
  CHECK(mgop_pki_make_peer(&leaf, &ca, names, 2, 3000, now) == 0);
  CHECK(mgop_pki_make_serving(&serving, &ca, names, 2, 3000, now) == 0);
  mbedtls_x509_crt_init(&crt);
  CHECK(mbedtls_x509_crt_parse(&crt, (const unsigned char *)leaf.cert, leaf.cert_len + 1) == 0);
  CHECK(mbedtls_x509_crt_check_extended_key_usage(&crt, MBEDTLS_OID_SERVER_AUTH,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)) == 0);
  CHECK(mbedtls_x509_crt_check_extended_key_usage(&crt, MBEDTLS_OID_CLIENT_AUTH,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)) == 0);
  mbedtls_x509_crt_free(&crt);
  mbedtls_x509_crt_init(&crt); /* a webhook serving certificate stays serverAuth only */
  CHECK(mbedtls_x509_crt_parse(&crt, (const unsigned char *)serving.cert, serving.cert_len + 1) == 0);
  CHECK(mbedtls_x509_crt_check_extended_key_usage(&crt, MBEDTLS_OID_CLIENT_AUTH,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)) != 0);
  mbedtls_x509_crt_free(&crt);
  CHECK(mgop_pki_verify(leaf.cert, leaf.cert_len, ca.cert, ca.cert_len, "pgbackrest", now) == 0);
  /* the renewal point: a third of the configured lifetime before the end */
  mgop_pgbr_cert_validity_s = 3000;
  CHECK(mgop_pki_validity(leaf.cert, leaf.cert_len, &nb, &na) == 0);
  CHECK(na == now + 3000);
  CHECK(mgop_pgbr_stale(leaf.cert, ca.cert, now) == NULL);
  CHECK(mgop_pgbr_stale(leaf.cert, ca.cert, now + 1995) == NULL);
  CHECK_STR(mgop_pgbr_stale(leaf.cert, ca.cert, now + 2005), "due for renewal");
  CHECK_STR(mgop_pgbr_stale(leaf.cert, other.cert, now), "not signed by the CA");
  CHECK_STR(mgop_pgbr_stale("", ca.cert, now), "missing");
  /* a bundle of the new and the old CA trusts certificates of either */
  {
    static char bundle[2 * MGOP_PKI_PEM_MAX];
    snprintf(bundle, sizeof(bundle), "%s%s", other.cert, ca.cert);
    CHECK(mgop_pgbr_stale(leaf.cert, bundle, now) == NULL);
  }
  mgop_pgbr_cert_validity_s = 365LL * 24 * 3600;
  /* the clock function a test can set */
  mgop_fake_now_s = 12345;
  CHECK(mgop_wall_s() == 12345);
  mgop_fake_now_s = 0;
  CHECK(mgop_wall_s() > 1700000000LL);
}

/* ======================================================================
 * 7e. multiadmin: GetBackups (proto3 JSON), RFC 3339, BackupHealthy verdicts
 * ==================================================================== */
static void test_rfc3339(void) {
  long long t = 0;
  CHECK(mgop_rfc3339_s("1970-01-01T00:00:00Z", 20, &t) == 0 && t == 0);
  CHECK(mgop_rfc3339_s("2026-12-02T04:03:36Z", 20, &t) == 0 && t == 1796184216LL);
  CHECK(mgop_rfc3339_s("2026-12-02T04:03:36.123456789Z", 30, &t) == 0 && t == 1796184216LL);
  CHECK(mgop_rfc3339_s("2026-12-02T06:03:36+02:00", 25, &t) == 0 && t == 1796184216LL);
  CHECK(mgop_rfc3339_s("2026-12-02T02:03:36-02:00", 25, &t) == 0 && t == 1796184216LL);
  CHECK(mgop_rfc3339_s("2000-02-29T12:00:00Z", 20, &t) == 0 && t == 951825600LL);
  CHECK(mgop_rfc3339_s("2026-12-02T04:03:36", 19, &t) != 0);   /* no zone */
  CHECK(mgop_rfc3339_s("2026-13-02T04:03:36Z", 20, &t) != 0);  /* month 13 */
  CHECK(mgop_rfc3339_s("2026-12-02T04:03:36.Z", 21, &t) != 0); /* empty fraction */
  CHECK(mgop_rfc3339_s("2026-12-02T04:03:36+0200", 24, &t) != 0);
  CHECK(mgop_rfc3339_s("", 0, &t) != 0);
}

static void test_multiadmin_parse_backups(void) {
  static const char two[] =
      "{\"backups\":[{\"backupId\":\"20261202-020000F\",\"database\":\"postgres\",\"tableGroup\":\"default\","
      "\"shard\":\"0-inf\",\"type\":\"full\",\"status\":\"BACKUP_STATUS_COMPLETE\",\"backupTime\":\"2026-12-02T02:00:00Z\","
      "\"backupSizeBytes\":\"1234567\",\"poolerType\":\"REPLICA\"},"
      "{\"backupId\":\"20261202-030000D\",\"type\":\"differential\",\"status\":\"BACKUP_STATUS_FAILED\","
      "\"backupTime\":\"2026-12-02T03:00:00.5Z\"},"
      "{\"backupId\":\"old\",\"type\":\"full\",\"status\":2,\"backupTime\":\"2026-12-01T02:00:00Z\"},"
      "{\"backupId\":\"running\",\"status\":\"BACKUP_STATUS_INCOMPLETE\"}]}";
  struct mgop_ma_backups b;
  CHECK(mgop_ma_parse_backups(two, sizeof(two) - 1, &b) == 0);
  CHECK(b.n == 4 && b.complete == 2 && b.failed == 1 && b.incomplete == 1);
  CHECK(b.complete_s == 1796176800LL);
  CHECK_STR(b.complete_id, "20261202-020000F");
  CHECK_STR(b.complete_type, "full");
  CHECK(b.newest_s == 1796180400LL && b.newest_status == MGOP_MA_FAILED);
  CHECK_STR(b.newest_id, "20261202-030000D");
  /* an empty list is omitted (proto3): none, not an error */
  CHECK(mgop_ma_parse_backups("{}", 2, &b) == 0 && b.n == 0 && b.complete_s == 0);
  CHECK(mgop_ma_parse_backups("{\"backups\":[]}", 14, &b) == 0 && b.n == 0);
  /* a status omitted as zero is UNKNOWN */
  CHECK(mgop_ma_parse_backups("{\"backups\":[{\"backupId\":\"a\",\"backupTime\":\"2026-12-02T02:00:00Z\"}]}", 66, &b) == 0);
  CHECK(b.n == 1 && b.complete == 0 && b.newest_status == MGOP_MA_UNKNOWN);
  CHECK(mgop_ma_parse_backups("[]", 2, &b) != 0);
  CHECK(mgop_ma_parse_backups("{\"backups\":{}}", 14, &b) != 0);
  CHECK(mgop_ma_parse_backups("{\"backups\":[1]}", 15, &b) != 0);
  CHECK(mgop_ma_parse_backups("{\"backups\":[", 12, &b) != 0);
}

/* A GetBackups answer, as the checker thread judges it and the loop applies it. */
static void t_bh_from_list(struct mgop_bh *h, const struct mgop_ma_backups *b) {
  struct mgop_bh_verdict v;
  memset(&v, 0, sizeof(v));
  mgop_bh_verdict_of(b, &v);
  mgop_bh_apply(h, &v);
}

static int t_bh_has(uint64_t key) {
  for (int i = 0; i < mgop_bh_span; i++)
    if (mgop_bh_table[i].key == key) return 1;
  return 0;
}

/* Collects the checker thread's answers until each of the slots has a
 * verdict and no check out (at most 3 s), asking for what the tick still
 * has due meanwhile. */
static int t_bh_settle(struct mgop_bh *const *hs, int n) {
  long long until = mgop_now_ms() + 3000;
  for (;;) {
    int out = 0;
    mgop_bh_collect();
    for (int i = 0; i < n; i++) out += hs[i]->asked || !hs[i]->reason[0];
    if (!out) return 1;
    if (mgop_now_ms() > until) return 0;
    mgop_backup_tick();
    usleep(1000);
  }
}

/* The checks run on the checker thread, not the loop: a tick asks for
 * every check due and takes the verdicts back. Checks asked before their
 * multiadmin failed to answer share its verdict word for word, without a
 * call of their own; a verdict that changed queues its cluster, an
 * unchanged one queues nothing (no API request while idle); an answer for
 * a Shard forgotten meanwhile is dropped; a full ring asks for the rest as
 * answers come back. */
static void test_backup_tick(void) {
  struct mgop_bh *a, *b, *other, *many[40];
  struct mgop_work item;
  long long now = mgop_now_ms(), saved_interval = mgop_backup_check_ms;
  const char *saved_ma = mgop_ma_override;
  struct mgop_work drained;
  unsigned long calls;
  int most = 0, all_unreachable = 1;
  while (mgop_work_pop(now + 3600000, &drained) == MGOP_OK) {} /* an empty work set */
  mgop_backup_check_ms = 1000;
  mgop_ma_override = "127.0.0.1:1"; /* nothing listens: refused at once */
  a = mgop_bh_slot(0xa1), b = mgop_bh_slot(0xb2), other = mgop_bh_slot(0xc3);
  CHECK(a && b && other);
  if (!a || !b || !other) return;
  snprintf(a->ns, sizeof(a->ns), "ns"), snprintf(a->cluster, sizeof(a->cluster), "c1");
  *b = *a, b->key = 0xb2;
  snprintf(other->ns, sizeof(other->ns), "ns"), snprintf(other->cluster, sizeof(other->cluster), "c2");
  a->checked_ms = now - 5000, b->checked_ms = now - 2000, other->checked_ms = now; /* other not due */
  calls = __atomic_load_n(&mgop_bhc.calls, __ATOMIC_RELAXED);
  CHECK(mgop_backup_tick() > 0); /* other's, in about a second */
  CHECK(a->asked && b->asked && !other->asked);
  CHECK(t_bh_settle((struct mgop_bh *[]){a, b}, 2));
  CHECK_STR(a->reason, "MultiadminUnreachable");
  CHECK_STR(b->reason, "MultiadminUnreachable");
  CHECK_STR(a->msg, b->msg); /* the same verdict, so no status churns between them */
  CHECK(__atomic_load_n(&mgop_bhc.calls, __ATOMIC_RELAXED) - calls == 1); /* same multiadmin: one call */
  CHECK(other->reason[0] == 0 && other->checked_ms == now);
  CHECK(mgop_work_pop(mgop_now_ms() + 10, &item) == MGOP_OK && !strcmp(item.name, "c1"));
  CHECK(mgop_work_pop(mgop_now_ms() + 10, &item) != MGOP_OK); /* c1 once, c2 not */
  /* the same verdict again: a call (asked after the last one failed), nothing queued */
  a->checked_ms = b->checked_ms = mgop_now_ms() - 5000;
  other->checked_ms = mgop_now_ms();
  calls = __atomic_load_n(&mgop_bhc.calls, __ATOMIC_RELAXED);
  mgop_backup_tick();
  CHECK(t_bh_settle((struct mgop_bh *[]){a, b}, 2));
  CHECK(__atomic_load_n(&mgop_bhc.calls, __ATOMIC_RELAXED) - calls == 1);
  CHECK(mgop_work_pop(mgop_now_ms() + 10, &item) != MGOP_OK);
  /* forgotten while its check is out: the answer finds no slot to change */
  a->checked_ms = mgop_now_ms() - 5000;
  mgop_backup_tick();
  CHECK(a->asked);
  mgop_bh_forget(0xa1);
  for (long long until = mgop_now_ms() + 3000; !most && mgop_now_ms() < until; usleep(1000)) {
    pthread_mutex_lock(&mgop_bhc.mu);
    most = mgop_bhc.answers; /* a's, once the thread is through with it */
    pthread_mutex_unlock(&mgop_bhc.mu);
  }
  CHECK(most == 1);
  mgop_bh_collect();
  CHECK(mgop_work_pop(mgop_now_ms() + 10, &item) != MGOP_OK && !t_bh_has(0xa1));
  most = 0;
  mgop_bh_forget(0xb2), mgop_bh_forget(0xc3);
  CHECK(mgop_backup_tick() == -1); /* nothing left to check */
  /* more due than the ring holds: the rest is asked as answers come back */
  for (int i = 0; i < 40; i++) {
    many[i] = mgop_bh_slot(0xd00 + (uint64_t)i);
    CHECK(many[i] != NULL);
    if (!many[i]) return;
    snprintf(many[i]->ns, sizeof(many[i]->ns), "ns"), snprintf(many[i]->cluster, sizeof(many[i]->cluster), "c3");
    many[i]->checked_ms = mgop_now_ms() - 5000;
  }
  pthread_mutex_lock(&mgop_bhc.mu); /* the thread takes nothing until all of the first tick's asks are in */
  for (int i = 0; i < 40; i++) mgop_bh_ask(many[i], mgop_now_ms());
  pthread_mutex_unlock(&mgop_bhc.mu);
  for (int i = 0; i < 40; i++) most += many[i]->asked;
  CHECK(most == MGOP_BHC_RING);
  pthread_cond_broadcast(&mgop_bhc.cv);
  CHECK(t_bh_settle(many, 40));
  for (int i = 0; i < 40; i++) all_unreachable &= !strcmp(many[i]->reason, "MultiadminUnreachable");
  CHECK(all_unreachable);
  while (mgop_work_pop(mgop_now_ms() + 10, &drained) == MGOP_OK) {}
  for (int i = 0; i < 40; i++) mgop_bh_forget(0xd00 + (uint64_t)i);
  mgop_backup_check_ms = saved_interval;
  mgop_ma_override = saved_ma;
}

/* A cluster whose multiadmin has no ready pod gets MultiadminNotReady at
 * once, with no call and nothing for the tick to ask (a new cluster's
 * first turn writes its final word; no second turn for Unreachable); the
 * turn that sees a ready pod asks at once; with --multiadmin-address the
 * Deployment is not what answers, so it asks regardless. */
static void test_backup_gate(void) {
  static struct mgop_rctx r;
  struct mgop_bh *h;
  struct mgop_work drained;
  const char *saved_ma = mgop_ma_override;
  long long saved_interval = mgop_backup_check_ms;
  while (mgop_work_pop(mgop_now_ms() + 3600000, &drained) == MGOP_OK) {}
  memset(&r, 0, sizeof(r));
  r.ns = "ns", r.name = "gate";
  snprintf(r.shard_names[0], sizeof(r.shard_names[0]), "gate-postgres-default-0-inf");
  snprintf(r.shard_db[0], sizeof(r.shard_db[0]), "postgres");
  snprintf(r.shard_tgn[0], sizeof(r.shard_tgn[0]), "default");
  snprintf(r.shard_sn[0], sizeof(r.shard_sn[0]), "0-inf");
  mgop_backup_check_ms = 1000;
  mgop_ma_override = NULL;
  h = mgop_bh_slot(0xf1);
  CHECK(h != NULL);
  if (!h) return;
  mgop_backup_health(&r, 0, h, 0, 0);
  CHECK(!h->asked && h->checked_ms == 0 && h->state == 0);
  CHECK_STR(h->reason, "MultiadminNotReady");
  CHECK(strstr(h->msg, "gate-multiadmin") != NULL);
  CHECK(mgop_backup_tick() == -1 && !h->asked); /* the tick asks nothing for it */
  mgop_dns_resolve = t_dns_fake; /* the Service's name as 127.0.0.1: no real lookup (see test_dns_deadline) */
  /* a ready pod while the ring is full (many multiadmins ready at once):
   * no turn of the cluster may come again, so the tick asks once there is room */
  mgop_bhc_stop(2000);
  pthread_mutex_lock(&mgop_bhc.mu);
  mgop_bhc.asks = MGOP_BHC_RING; /* full, and no thread to empty it */
  pthread_mutex_unlock(&mgop_bhc.mu);
  mgop_backup_health(&r, 0, h, 0, 1);
  CHECK(!h->asked && h->ask_due && h->checked_ms == 0);
  mgop_backup_tick(); /* still full: still due */
  CHECK(!h->asked && h->ask_due);
  pthread_mutex_lock(&mgop_bhc.mu);
  mgop_bhc.asks = 0; /* room */
  pthread_mutex_unlock(&mgop_bhc.mu);
  mgop_backup_tick();
  CHECK(h->asked && !h->ask_due && h->checked_ms > 0);
  CHECK(t_bh_settle((struct mgop_bh *[]){h}, 1) && strcmp(h->reason, "MultiadminNotReady") != 0);
  mgop_backup_health(&r, 0, h, 0, 0); /* no ready pod again: back to the gate */
  CHECK(!h->asked && h->checked_ms == 0 && !h->ask_due);
  CHECK_STR(h->reason, "MultiadminNotReady");
  mgop_backup_health(&r, 0, h, 0, 1);            /* a ready pod: asked now */
  CHECK(h->asked && h->checked_ms > 0);
  CHECK(t_bh_settle((struct mgop_bh *[]){h}, 1) && strcmp(h->reason, "MultiadminNotReady") != 0);
  mgop_dns_resolve = mgop_dns_getaddrinfo;
  /* --multiadmin-address: asked with no ready pod too */
  mgop_ma_override = "127.0.0.1:1";
  h->checked_ms = mgop_now_ms() - 5000;
  mgop_backup_health(&r, 0, h, 0, 0);
  CHECK(h->asked);
  CHECK(t_bh_settle((struct mgop_bh *[]){h}, 1));
  CHECK_STR(h->reason, "MultiadminUnreachable");
  while (mgop_work_pop(mgop_now_ms() + 10, &drained) == MGOP_OK) {}
  mgop_bh_forget(0xf1);
  mgop_backup_check_ms = saved_interval;
  mgop_ma_override = saved_ma;
}

/* A restart writes what the live Shard showed until the first check
 * answers, and keeps its lastTransitionTime when the answer agrees. */
static void test_backup_adopt(void) {
  struct mgop_bh *h;
  struct mgop_ma_backups none;
  mgop_fake_now_s = 1796184000LL;
  mgop_bh_adopt(0xe1, "False", 1796100000LL, "NoBackup", "multiadmin lists no complete backup");
  h = mgop_bh_slot(0xe1);
  CHECK(h && h->state == 2 && h->since_s == 1796100000LL);
  if (!h) return;
  CHECK_STR(h->reason, "NoBackup");
  CHECK_STR(h->msg, "multiadmin lists no complete backup");
  memset(&none, 0, sizeof(none));
  t_bh_from_list(h, &none); /* still False: the time stays */
  CHECK(h->state == 2 && h->since_s == 1796100000LL);
  mgop_bh_forget(0xe1);
  /* a condition whose words are not ours (too long): only its time is kept */
  mgop_bh_adopt(0xe2, "Unknown", 1796100000LL, NULL, NULL);
  h = mgop_bh_slot(0xe2);
  CHECK(h && h->since_s == 0 && h->adopted_since == 1796100000LL);
  if (h) {
    mgop_bh_set(h, 0, "Checking", "waiting");
    CHECK(h->since_s == 1796100000LL); /* Unknown before and now: the live time */
  }
  mgop_bh_forget(0xe2);
  mgop_fake_now_s = 0;
}

static void test_backup_health_verdicts(void) {
  struct mgop_bh h;
  struct mgop_ma_backups b;
  memset(&h, 0, sizeof(h));
  memset(&b, 0, sizeof(b));
  mgop_fake_now_s = 1796184000LL;
  t_bh_from_list(&h, &b); /* none */
  CHECK(h.state == 2);
  CHECK_STR(h.reason, "NoBackup");
  CHECK(h.since_s == 1796184000LL);
  b.n = b.failed = 1;
  b.newest_s = 1796180400LL;
  b.newest_status = MGOP_MA_FAILED;
  snprintf(b.newest_id, sizeof(b.newest_id), "f1");
  mgop_fake_now_s += 60;
  t_bh_from_list(&h, &b); /* failed: still False, the transition time stays */
  CHECK(h.state == 2 && h.since_s == 1796184000LL);
  CHECK_STR(h.reason, "BackupFailed");
  b.n = 2;
  b.complete = 1;
  b.complete_s = 1796176800LL;
  snprintf(b.complete_id, sizeof(b.complete_id), "c1");
  t_bh_from_list(&h, &b); /* a complete one, but the newer one failed */
  CHECK(h.state == 2);
  CHECK(strstr(h.msg, "the newest backup f1") != NULL);
  b.newest_s = b.complete_s;
  b.newest_status = MGOP_MA_COMPLETE;
  snprintf(b.complete_type, sizeof(b.complete_type), "full");
  t_bh_from_list(&h, &b);
  CHECK(h.state == 1 && h.since_s == 1796184060LL && h.last_s == 1796176800LL);
  CHECK_STR(h.reason, "BackupCompleted");
  CHECK_STR(h.msg, "last complete backup c1 (full) at 2026-12-02T02:00:00Z");
  /* a restart keeps the live condition's transition time when the state agrees */
  memset(&h, 0, sizeof(h));
  h.adopted_state = 1;
  h.adopted_since = 1700000000LL;
  t_bh_from_list(&h, &b);
  CHECK(h.since_s == 1700000000LL);
  mgop_fake_now_s = 0;
}

/* mgop_http_call against a one-shot local server that echoes the request:
 * request line, headers and body sent; status and body read; a refused
 * connection is an error with no status. */
static void test_http_call_plain(void) {
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1, status = -1, rc;
  struct sockaddr_in a;
  socklen_t al = sizeof(a);
  char port[16], body[1024], req[2048];
  static struct mgop_conn c;
  struct mgop_buf out;
  pid_t pid;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CHECK(bind(ls, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(ls, 1) == 0);
  getsockname(ls, (struct sockaddr *)&a, &al);
  snprintf(port, sizeof(port), "%d", ntohs(a.sin_port));
  pid = fork();
  if (pid == 0) { /* the server: echo the request's first line and body length */
    int fd = accept(ls, NULL, NULL);
    ssize_t n = 0, k;
    char resp[2300];
    while (n < (ssize_t)sizeof(req) - 1 && (k = read(fd, req + n, sizeof(req) - 1 - (size_t)n)) > 0) {
      n += k;
      req[n] = 0;
      if (strstr(req, "\r\n\r\n") && strstr(req, "{\"type\":\"full\"}")) break;
    }
    k = snprintf(resp, sizeof(resp), "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %zu"
                 "\r\n\r\n%s", strlen(req), req);
    if (write(fd, resp, (size_t)k) < 0) _exit(1);
    close(fd);
    _exit(0);
  }
  mgop_conn_init(&c);
  mgop_buf_init(&out, body, sizeof(body));
  rc = mgop_http_call(&c, "127.0.0.1", port, "POST", "/api/v1/backups", "{\"type\":\"full\"}", 15, &out, &status,
                      mgop_now_ms() + 5000);
  waitpid(pid, NULL, 0);
  close(ls);
  CHECK(rc == 0 && status == 201);
  CHECK(out.len > 31 && strncmp(body, "POST /api/v1/backups HTTP/1.1\r\n", 31) == 0);
  CHECK(strstr(body, "\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"type\":\"full\"}") != NULL);
  CHECK(strstr(body, "\r\nConnection: close\r\n") != NULL);
  CHECK(mgop_http_call(&c, "127.0.0.1", port, "GET", "/", NULL, 0, &out, &status, mgop_now_ms() + 2000) != 0);
  CHECK(status == 0); /* nobody listens any more: no status */
}

/* ======================================================================
 * 7e2. Tracing: W3C trace context, the OTEL_* settings, OTLP JSON export
 * ==================================================================== */
static void test_traceparent(void) {
  struct mgop_trace_ctx c;
  char out[56];
  const char *ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  CHECK(mgop_traceparent_parse(ok, strlen(ok), &c) == 0 && (c.flags & 1) && c.trace_id[0] == 0x4b && c.span_id[7] == 0xb7);
  mgop_traceparent_format(&c, out);
  CHECK(strcmp(out, ok) == 0);
  CHECK(mgop_traceparent_parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", 55, &c) != 0); /* upper */
  CHECK(mgop_traceparent_parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01", 55, &c) != 0);
  CHECK(mgop_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", 55, &c) != 0);
  CHECK(mgop_traceparent_parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 55, &c) != 0);
  CHECK(mgop_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", 57, &c) != 0);
  CHECK(mgop_traceparent_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-later", 61, &c) == 0 &&
        !(c.flags & 1)); /* a later version keeps 00's prefix */
  CHECK(mgop_traceparent_parse("00-4bf92f35", 11, &c) != 0 && strstr(mgop_errmsg(), "traceparent") != NULL);
}

/* getenv over a table: "NAME=value" entries. */
static const char *const *t_env;
static const char *t_getenv(const char *name) {
  size_t n = strlen(name);
  for (int i = 0; t_env && t_env[i]; i++)
    if (!strncmp(t_env[i], name, n) && t_env[i][n] == '=') return t_env[i] + n + 1;
  return NULL;
}
static int t_trace_cfg(struct mgop_trace_cfg *c, const char *const *env) {
  t_env = env;
  return mgop_trace_config(c, t_getenv, "9.9.9");
}

static void test_trace_config(void) {
  static struct mgop_trace_cfg c;
  const char *none[] = {NULL};
  const char *base[] = {"OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318/", "OTEL_SERVICE_NAME=op-a",
                        "OTEL_RESOURCE_ATTRIBUTES=k8s.cluster.name=edge%20a,service.name=ignored",
                        "OTEL_EXPORTER_OTLP_HEADERS=x-api-key=s%3Dcret, x-team = db", NULL};
  const char *full[] = {"OTEL_EXPORTER_OTLP_ENDPOINT=http://a:1", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://b:2/t",
                        "OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_TRACES_SAMPLER=traceidratio",
                        "OTEL_TRACES_SAMPLER_ARG=0.25", NULL};
  const char *off1[] = {"OTEL_EXPORTER_OTLP_ENDPOINT=http://a:1", "OTEL_TRACES_EXPORTER=none", NULL};
  const char *off2[] = {"OTEL_EXPORTER_OTLP_ENDPOINT=http://a:1", "OTEL_SDK_DISABLED=true", NULL};
  const char *bad[][4] = {
      {"OTEL_EXPORTER_OTLP_ENDPOINT=http://a:1", "OTEL_TRACES_EXPORTER=zipkin", NULL, "OTEL_TRACES_EXPORTER"},
      {"OTEL_EXPORTER_OTLP_ENDPOINT=collector:4318", NULL, NULL, "OTEL_EXPORTER_OTLP_ENDPOINT"},
      {"OTEL_EXPORTER_OTLP_ENDPOINT=http://a:1", "OTEL_TRACES_SAMPLER=sometimes", NULL, "OTEL_TRACES_SAMPLER"},
      {"OTEL_EXPORTER_OTLP_ENDPOINT=http://a:1", "OTEL_TRACES_SAMPLER=traceidratio", "OTEL_TRACES_SAMPLER_ARG=2",
       "OTEL_TRACES_SAMPLER_ARG"},
      {"OTEL_EXPORTER_OTLP_ENDPOINT=http://a:1", "OTEL_BSP_MAX_QUEUE_SIZE=99999", NULL, "OTEL_BSP_MAX_QUEUE_SIZE"},
      {"OTEL_EXPORTER_OTLP_ENDPOINT=http://a:1", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=600", NULL, "above OTEL_BSP_MAX_QUEUE_SIZE"},
      {"OTEL_EXPORTER_OTLP_ENDPOINT=https://a:1", NULL, NULL, "OTEL_EXPORTER_OTLP_CERTIFICATE"},
      {"OTEL_EXPORTER_OTLP_ENDPOINT=http://a:1", "OTEL_EXPORTER_OTLP_HEADERS=novalue", NULL, "OTEL_EXPORTER_OTLP_HEADERS"},
      {"OTEL_EXPORTER_OTLP_ENDPOINT=http://a:1", "OTEL_EXPORTER_OTLP_HEADERS=a b=c", NULL, "not a header name"},
      {"OTEL_EXPORTER_OTLP_ENDPOINT=http://a:1", "OTEL_EXPORTER_OTLP_TIMEOUT=10s", NULL, "OTEL_EXPORTER_OTLP_TIMEOUT"},
  };
  CHECK(t_trace_cfg(&c, none) == 0 && !c.enabled);
  CHECK(t_trace_cfg(&c, off1) == 0 && !c.enabled);
  CHECK(t_trace_cfg(&c, off2) == 0 && !c.enabled);
  CHECK(t_trace_cfg(&c, base) == 0 && c.enabled);
  CHECK(strcmp(c.url, "http://collector:4318/v1/traces") == 0);
  CHECK(strcmp(c.headers, "x-api-key: s=cret\r\nx-team: db\r\n") == 0);
  CHECK(strstr(c.resource, "{\"key\":\"service.name\",\"value\":{\"stringValue\":\"op-a\"}}") != NULL);
  CHECK(strstr(c.resource, "\"service.version\",\"value\":{\"stringValue\":\"9.9.9\"}") != NULL);
  CHECK(strstr(c.resource, "\"k8s.cluster.name\",\"value\":{\"stringValue\":\"edge a\"}") != NULL);
  CHECK(strstr(c.resource, "ignored") == NULL);
  CHECK(c.sampler == MGOP_SAMPLE_PB_ALWAYS_ON && c.queue_max == MGOP_TRACE_QUEUE_DEFAULT && c.batch_max == 512);
  CHECK(c.delay_ms == 5000 && c.timeout_ms == 10000 && !c.note[0]);
  CHECK(t_trace_cfg(&c, full) == 0 && c.enabled && strcmp(c.url, "http://b:2/t") == 0);
  CHECK(c.sampler == MGOP_SAMPLE_RATIO && c.ratio == 0.25 && strstr(c.note, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc") != NULL);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    const char *env[4] = {bad[i][0], bad[i][1], bad[i][2], NULL};
    int rc = t_trace_cfg(&c, env);
    CHECK(rc == MGOP_ERR_CONFIG);
    if (rc != MGOP_ERR_CONFIG || !strstr(mgop_errmsg(), bad[i][3]))
      fprintf(stderr, "  bad[%zu]: rc %d, message %s\n", i, rc, mgop_errmsg());
    CHECK(strstr(mgop_errmsg(), bad[i][3]) != NULL);
  }
}

/* Child: answers POSTs with the given statuses in order (keep-alive, or a
 * new connection when the client closed), writing each body to dir/N. */
static void t_otlp_server(int lfd, const int *statuses, int n, const char *dir) {
  int fd = -1;
  for (int i = 0; i < n; i++) {
    char buf[65536], path[340], resp[200];
    size_t got = 0;
    long clen = -1;
    char *body = NULL;
    for (;;) {
      ssize_t r;
      if (fd < 0) fd = accept(lfd, NULL, NULL);
      r = read(fd, buf + got, sizeof(buf) - 1 - got);
      if (r <= 0) { close(fd), fd = -1, got = 0; continue; }
      got += (size_t)r;
      buf[got] = 0;
      if (!body && (body = strstr(buf, "\r\n\r\n"))) {
        char *cl = strcasestr(buf, "Content-Length:");
        body += 4;
        clen = cl ? strtol(cl + 15, NULL, 10) : 0;
      }
      if (body && (long)(got - (size_t)(body - buf)) >= clen) break;
    }
    snprintf(path, sizeof(path), "%s/%d", dir, i);
    FILE *f = fopen(path, "w");
    if (f) fwrite(buf, 1, got, f), fclose(f);
    snprintf(resp, sizeof(resp), "HTTP/1.1 %d X\r\nContent-Type: application/json\r\n%sContent-Length: 2\r\n\r\n{}",
             statuses[i], statuses[i] == 503 ? "Retry-After: 1\r\n" : "");
    if (write(fd, resp, strlen(resp)) < 0) _exit(1);
  }
  _exit(0);
}

static char *t_slurp(const char *path, char *buf, size_t cap) {
  size_t n = 0;
  buf[0] = 0;
  if (mgop_read_file(path, buf, cap - 1, &n)) return buf;
  buf[n] = 0;
  return buf;
}

static void test_trace_export(void) {
  static struct mgop_trace_cfg c;
  static char got[65536];
  struct mgop_trace_stats st;
  struct mgop_span root, child, extra;
  struct mgop_json j;
  char url[80], dir[300], path[320], t[33], sid[17], line[600];
  int port, lfd = t_listen(&port), statuses[] = {503, 200, 400};
  const char *env[] = {url, "OTEL_BSP_MAX_QUEUE_SIZE=2", "OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20x", NULL};
  pid_t pid;
  snprintf(url, sizeof(url), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:%d/v1/traces", port);
  snprintf(dir, sizeof(dir), "%s/otlp", t_tmpdir);
  mkdir(dir, 0700);
  if (t_trace_cfg(&c, env)) fprintf(stderr, "  config: %s\n", mgop_errmsg());
  CHECK(c.enabled && c.queue_max == 2 && c.batch_max == 2);
  CHECK(mgop_trace_start(&c) == 0 && mgop_trace_on());
  if ((pid = fork()) == 0) t_otlp_server(lfd, statuses, 3, dir);
  mgop_span_begin(&root, "MultigresCluster.Reconcile", MGOP_SPAN_INTERNAL, NULL);
  CHECK(root.recording && mgop_span_cur == &root && mgop_all_zero(root.parent, 8));
  mgop_span_str(&root, "k8s.resource.name", "a \"quoted\" name");
  mgop_span_int(&root, "multigres.generation", 7);
  mgop_span_bool(&root, "admission.allowed", 1);
  mgop_span_begin(&child, "child", MGOP_SPAN_CLIENT, NULL); /* the thread's current span is its parent */
  CHECK(memcmp(child.ctx.trace_id, root.ctx.trace_id, 16) == 0 && memcmp(child.parent, root.ctx.span_id, 8) == 0);
  mgop_span_error(&child, "it failed: %d", 42);
  mgop_span_end(&child);
  CHECK(mgop_span_cur == &root);
  mgop_span_end(&root);
  CHECK(mgop_span_cur == NULL);
  mgop_span_begin(&extra, "third", MGOP_SPAN_INTERNAL, NULL);
  mgop_span_end(&extra); /* the queue holds 2: dropped */
  mgop_trace_get_stats(&st);
  CHECK(st.dropped_full == 1);
  CHECK(mgop_trace_export_step(1, mgop_now_ms() + 5000) == 1); /* 503 (Retry-After: 1), then 200 */
  mgop_span_begin(&extra, "refused", MGOP_SPAN_SERVER, NULL);
  mgop_span_end(&extra);
  CHECK(mgop_trace_export_step(1, mgop_now_ms() + 5000) == 1); /* 400: dropped as rejected */
  CHECK(mgop_trace_export_step(1, mgop_now_ms() + 1000) == 0); /* nothing left */
  waitpid(pid, NULL, 0);
  close(lfd);
  mgop_trace_get_stats(&st);
  CHECK(st.exported == 2 && st.dropped_rejected == 1 && st.requests == 3 && st.failures == 2);
  snprintf(path, sizeof(path), "%s/1", dir);
  t_slurp(path, got, sizeof(got));
  CHECK(strncmp(got, "POST /v1/traces HTTP/1.1\r\n", 26) == 0);
  CHECK(strstr(got, "\r\nContent-Type: application/json\r\n") && strstr(got, "\r\nauthorization: Bearer x\r\n"));
  {
    const char *body = strstr(got, "\r\n\r\n");
    int spans;
    static jsmntok_t tok[2048];
    CHECK(body && mgop_json_parse(&j, body + 4, strlen(body + 4), tok, 2048) == 0);
    if (!body) return;
    spans = mgop_json_path(&j, 0, "resourceSpans");
    spans = mgop_json_path(&j, mgop_json_at(&j, spans, 0), "scopeSpans");
    spans = mgop_json_key(&j, mgop_json_at(&j, spans, 0), "spans");
    CHECK(mgop_json_is(&j, spans, JSMN_ARRAY) && j.tok[spans].size == 2);
    mgop_hex(root.ctx.trace_id, 16, t);
    mgop_hex(root.ctx.span_id, 8, sid);
    snprintf(line, sizeof(line), "\"traceId\":\"%s\",\"spanId\":\"", t);
    CHECK(strstr(body, line) != NULL);
    snprintf(line, sizeof(line), "\"parentSpanId\":\"%s\",\"name\":\"child\",\"kind\":3", sid);
    CHECK(strstr(body, line) != NULL);
    CHECK(strstr(body, "\"status\":{\"code\":2,\"message\":\"it failed: 42\"}") != NULL);
    CHECK(strstr(body, "{\"key\":\"k8s.resource.name\",\"value\":{\"stringValue\":\"a \\\"quoted\\\" name\"}}") != NULL);
    CHECK(strstr(body, "{\"key\":\"multigres.generation\",\"value\":{\"intValue\":\"7\"}}") != NULL);
    CHECK(strstr(body, "{\"key\":\"service.name\",\"value\":{\"stringValue\":\"multigres-operator\"}}") != NULL);
  }
  c.enabled = 0; /* tracing off again for the tests after this one */
  CHECK(mgop_trace_start(&c) == 0 && !mgop_trace_on());
  mgop_span_begin(&extra, "off", MGOP_SPAN_INTERNAL, NULL);
  CHECK(!extra.recording && mgop_span_cur == NULL);
  mgop_span_end(&extra);
}

static void test_trace_sampler_and_attrs(void) {
  static struct mgop_trace_cfg c;
  struct mgop_span s, k;
  struct mgop_trace_ctx unsampled;
  int sampled = 0;
  const char *ratio[] = {"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9", "OTEL_TRACES_SAMPLER=parentbased_traceidratio",
                         "OTEL_TRACES_SAMPLER_ARG=0.5", NULL};
  char big[300];
  CHECK(t_trace_cfg(&c, ratio) == 0 && mgop_trace_start(&c) == 0);
  for (int i = 0; i < 400; i++) {
    mgop_span_begin(&s, "r", MGOP_SPAN_INTERNAL, NULL);
    sampled += s.recording;
    s.recording = 0; /* not queued */
    mgop_span_end(&s);
  }
  CHECK(sampled > 140 && sampled < 260); /* about half of the roots */
  mgop_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", 55, &unsampled);
  mgop_span_begin(&s, "child of unsampled", MGOP_SPAN_INTERNAL, &unsampled);
  CHECK(!s.recording && !(s.ctx.flags & 1) && s.ctx.trace_id[0] == 0x4b); /* parent-based: follows the parent */
  mgop_span_end(&s);
  mgop_traceparent_parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 55, &unsampled);
  mgop_span_begin(&k, "late parent", MGOP_SPAN_INTERNAL, NULL);
  mgop_span_continue(&k, &unsampled, NULL);
  CHECK(k.recording && k.ctx.trace_id[0] == 0x4b && k.parent[7] == 0xb7);
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = 0;
  for (int i = 0; i < 10; i++) mgop_span_str(&k, "k", big); /* 1 KiB of attributes: the rest counted */
  CHECK(k.attrs_dropped > 0 && k.attrs_len <= sizeof(k.attrs));
  k.recording = 0;
  mgop_span_end(&k);
  c.enabled = 0;
  mgop_trace_start(&c);
}

/* ======================================================================
 * 7f. Backup schedule: cron parsing and the next fire time (UTC)
 * ==================================================================== */
static long long t_utc(int y, int mo, int d, int h, int mi) {
  struct tm tm;
  memset(&tm, 0, sizeof(tm));
  tm.tm_year = y - 1900, tm.tm_mon = mo - 1, tm.tm_mday = d, tm.tm_hour = h, tm.tm_min = mi;
  return (long long)timegm(&tm);
}

static void test_cron_parse(void) {
  struct mgop_cron c;
  CHECK(mgop_cron_parse("0 3 * * *", &c) == 0);
  CHECK(c.minute == 1 && c.hour == 1u << 3 && c.dom_any && c.dow_any && c.month == 0x1ffe);
  CHECK(mgop_cron_parse("*/15 0-6/2,23 1,15 */3 1-5", &c) == 0);
  CHECK(c.minute == ((1ULL << 0) | (1ULL << 15) | (1ULL << 30) | (1ULL << 45)));
  CHECK(c.hour == ((1u << 0) | (1u << 2) | (1u << 4) | (1u << 6) | (1u << 23)));
  CHECK(c.dom == ((1u << 1) | (1u << 15)) && !c.dom_any);
  CHECK(c.month == ((1u << 1) | (1u << 4) | (1u << 7) | (1u << 10)));
  CHECK(c.dow == 0x3e && !c.dow_any);
  CHECK(mgop_cron_parse("0 0 * * 7", &c) == 0 && c.dow == 1); /* 7 is Sunday */
  CHECK(mgop_cron_parse("5/20 * * * *", &c) == 0 && c.minute == ((1ULL << 5) | (1ULL << 25) | (1ULL << 45)));
  CHECK(mgop_cron_parse("  0   3 * *    *  ", &c) == 0);
  CHECK(mgop_cron_parse("0 3 * *", &c) != 0);        /* 4 fields */
  CHECK(mgop_cron_parse("0 3 * * * *", &c) != 0);    /* 6 fields */
  CHECK(mgop_cron_parse("60 3 * * *", &c) != 0);
  CHECK(mgop_cron_parse("0 24 * * *", &c) != 0);
  CHECK(mgop_cron_parse("0 3 0 * *", &c) != 0);
  CHECK(mgop_cron_parse("0 3 * 13 *", &c) != 0);
  CHECK(mgop_cron_parse("0 3 * * 8", &c) != 0);
  CHECK(mgop_cron_parse("5-1 * * * *", &c) != 0);    /* descending */
  CHECK(mgop_cron_parse("*/0 * * * *", &c) != 0);
  CHECK(mgop_cron_parse("1,,2 * * * *", &c) != 0);
  CHECK(mgop_cron_parse("1, * * * *", &c) != 0);
  CHECK(mgop_cron_parse("@daily", &c) != 0);
  CHECK(mgop_cron_parse("0 3 * JAN *", &c) != 0);    /* names are not supported */
}

static void test_cron_next(void) {
  struct mgop_cron c;
  CHECK(mgop_cron_parse("0 3 * * *", &c) == 0);
  CHECK(mgop_cron_next(&c, t_utc(2026, 12, 2, 1, 0)) == t_utc(2026, 12, 2, 3, 0));
  CHECK(mgop_cron_next(&c, t_utc(2026, 12, 2, 3, 0)) == t_utc(2026, 12, 3, 3, 0)); /* strictly after */
  CHECK(mgop_cron_next(&c, t_utc(2026, 12, 2, 3, 0) - 1) == t_utc(2026, 12, 2, 3, 0));
  CHECK(mgop_cron_next(&c, t_utc(2026, 12, 31, 4, 0)) == t_utc(2027, 1, 1, 3, 0)); /* year end */
  CHECK(mgop_cron_parse("*/15 * * * *", &c) == 0);
  CHECK(mgop_cron_next(&c, t_utc(2026, 12, 2, 4, 7) + 30) == t_utc(2026, 12, 2, 4, 15));
  CHECK(mgop_cron_parse("30 2 29 2 *", &c) == 0); /* leap day */
  CHECK(mgop_cron_next(&c, t_utc(2026, 12, 2, 0, 0)) == t_utc(2028, 2, 29, 2, 30));
  CHECK(mgop_cron_parse("0 0 1 * 1", &c) == 0); /* the 1st or a Monday (both restricted: either) */
  CHECK(mgop_cron_next(&c, t_utc(2026, 12, 2, 0, 0)) == t_utc(2026, 12, 7, 0, 0)); /* Monday 7th */
  CHECK(mgop_cron_next(&c, t_utc(2026, 12, 28, 0, 0)) == t_utc(2027, 1, 1, 0, 0)); /* Friday the 1st */
  CHECK(mgop_cron_parse("0 0 * * 1", &c) == 0); /* Mondays only (day of month is a star) */
  CHECK(mgop_cron_next(&c, t_utc(2026, 12, 28, 0, 0)) == t_utc(2027, 1, 4, 0, 0));
  CHECK(mgop_cron_parse("0 0 31 2 *", &c) == 0);  /* never */
  CHECK(mgop_cron_next(&c, t_utc(2026, 12, 2, 0, 0)) == -1);
}

/* The jittered fire time: a fixed offset per shard within the bound. */
static void test_backup_schedule_jitter(void) {
  struct mgop_cron c;
  struct mgop_bh a, b;
  long long base = 0, na, nb;
  CHECK(mgop_cron_parse("0 3 * * *", &c) == 0);
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  a.key = 1, b.key = 2;
  na = mgop_sched_next(&a, &c, t_utc(2026, 12, 2, 1, 0), 600, &base);
  CHECK(base == t_utc(2026, 12, 2, 3, 0) && na >= base && na <= base + 600);
  CHECK(mgop_sched_next(&a, &c, t_utc(2026, 12, 2, 1, 0), 600, &base) == na); /* stable */
  nb = mgop_sched_next(&b, &c, t_utc(2026, 12, 2, 1, 0), 600, &base);
  CHECK(nb >= base && nb <= base + 600 && nb != na);
  CHECK(mgop_sched_next(&a, &c, t_utc(2026, 12, 2, 1, 0), 0, &base) == base); /* no jitter */
  { /* the request bodies (BackupRequest, ExpireBackupsRequest in proto3 JSON) */
    static struct mgop_rctx tr;
    char body[300];
    snprintf(tr.shard_db[0], sizeof(tr.shard_db[0]), "postgres");
    snprintf(tr.shard_tgn[0], sizeof(tr.shard_tgn[0]), "default");
    snprintf(tr.shard_sn[0], sizeof(tr.shard_sn[0]), "0-inf");
    mgop_sched_shard_json(&tr, 0, body, sizeof(body), "\"type\":\"full\"");
    CHECK_STR(body, "{\"database\":\"postgres\",\"tableGroup\":\"default\",\"shard\":\"0-inf\",\"type\":\"full\"}");
    mgop_sched_shard_json(&tr, 0, body, sizeof(body), NULL);
    CHECK_STR(body, "{\"database\":\"postgres\",\"tableGroup\":\"default\",\"shard\":\"0-inf\"}");
  }
}

/* ======================================================================
 * 8. Flags
 * ==================================================================== */
static void test_flags(void) {
  struct mgop_options opt;
  memset(&opt, 0, sizeof(opt));
  opt.watch_namespace = "";
  int exit_now;
  char *ok[] = {"x", "--kubeconfig=/k", "--context", "c", "--namespace=ns", "--zap-log-level", "warn", NULL};
  char *unknown[] = {"x", "--frobnicate", NULL};
  char *badlevel[] = {"x", "--zap-log-level=loud", NULL};
  char *noval[] = {"x", "--kubeconfig", NULL};
  int saved_level = mgop_log_level;
  CHECK(mgop_parse_flags(7, ok, &opt, &exit_now) == 0 && !exit_now);
  CHECK_STR(opt.kubeconfig, "/k");
  CHECK_STR(opt.context, "c");
  CHECK_STR(opt.watch_namespace, "ns");
  CHECK(mgop_log_level == MGOP_WARN);
  mgop_log_level = saved_level;
  fprintf(stderr, "    (expected errors follow)\n");
  CHECK(mgop_parse_flags(2, unknown, &opt, &exit_now) == 2);
  CHECK(mgop_parse_flags(2, badlevel, &opt, &exit_now) == 2);
  CHECK(mgop_parse_flags(2, noval, &opt, &exit_now) == 2);
  { /* table sizes: a count, bounded; the tables are allocated by mgop_run */
    char *sizes[] = {"x", "--max-objects=32768", "--max-metric-series", "16384", NULL};
    char *small[] = {"x", "--max-objects=10", NULL};
    char *word[] = {"x", "--max-metric-series=lots", NULL};
    CHECK(mgop_parse_flags(4, sizes, &opt, &exit_now) == 0 && opt.max_objects == 32768 && opt.max_series == 16384);
    CHECK(mgop_parse_flags(2, small, &opt, &exit_now) == 2);
    CHECK(mgop_parse_flags(2, word, &opt, &exit_now) == 2);
  }
  { /* zap modes (seed 003): devel by default; explicit flags win in any order */
    char *none[] = {"x", NULL};
    char *prod[] = {"x", "--zap-devel=false", NULL};
    char *level_first[] = {"x", "--zap-log-level=error", "--zap-devel", NULL};
    char *ints[] = {"x", "--zap-devel=false", "--zap-log-level", "0", "--zap-encoder=console", NULL};
    char *badbool[] = {"x", "--leader-elect=yes", NULL};
    char *leader[] = {"x", "--leader-elect", "--leader-election-namespace=ops", "--leader-election-id", "l", NULL};
    int saved_json = mgop_log_json;
    CHECK(mgop_parse_flags(1, none, &opt, &exit_now) == 0 && mgop_log_level == MGOP_DEBUG && mgop_log_json == 0);
    CHECK(mgop_parse_flags(2, prod, &opt, &exit_now) == 0 && mgop_log_level == MGOP_INFO && mgop_log_json == 1);
    CHECK(mgop_parse_flags(3, level_first, &opt, &exit_now) == 0 && mgop_log_level == MGOP_ERROR && mgop_log_json == 0);
    CHECK(mgop_parse_flags(5, ints, &opt, &exit_now) == 0 && mgop_log_level == MGOP_DEBUG && mgop_log_json == 0);
    CHECK(mgop_parse_flags(2, badbool, &opt, &exit_now) == 2);
    CHECK(mgop_parse_flags(5, leader, &opt, &exit_now) == 0 && opt.leader_elect == 1);
    CHECK_STR(opt.leader_election_namespace, "ops");
    CHECK_STR(opt.leader_election_id, "l");
    mgop_log_level = saved_level;
    mgop_log_json = saved_json;
  }
  { /* the reference operator's flags: what we do is accepted, what we cannot do is refused by name */
    char *dropin[] = {"x", "--metrics-secure=false", "--enable-http2", "--webhook-port", "10250",
                      "--webhook-service-account=op", "--zap-time-encoding=rfc3339", "--image-update-strategy",
                      "immediate", NULL};
    char *secure[] = {"x", "--metrics-secure", NULL};
    char *lazy[] = {"x", "--image-update-strategy=lazy", NULL};
    char *later[] = {"x", "--image-update-strategy=later", NULL};
    char *port[] = {"x", "--webhook-port=0", NULL};
    char *enc[] = {"x", "--zap-time-encoding=unix", NULL};
    char ts[48];
    int saved_json = mgop_log_json;
    memset(&opt, 0, sizeof(opt));
    setenv("POD_NAMESPACE", "ops-ns", 1);
    CHECK(mgop_parse_flags(9, dropin, &opt, &exit_now) == 0 && opt.enable_http2 == 1);
    CHECK_STR(opt.webhook_bind, ":10250");
    CHECK_STR(opt.webhook_service_account, "op");
    CHECK_STR(opt.webhook_service_ns, "ops-ns"); /* POD_NAMESPACE, as the reference's Deployment sets it */
    CHECK(mgop_log_time == 4 && mgop_log_ts(ts, sizeof(ts)) == 0 && strlen(ts) == 20 && ts[19] == 'Z');
    mgop_log_time = 2; /* nano: a number in JSON */
    CHECK(mgop_log_ts(ts, sizeof(ts)) == 1 && strlen(ts) >= 19 && !strchr(ts, 'T'));
    mgop_log_time = -1;
    unsetenv("POD_NAMESPACE");
    CHECK(mgop_parse_flags(2, secure, &opt, &exit_now) == 0 && opt.metrics_secure == 1); /* --metrics-secure is served now */
    {
      char *certless[] = {"x", "--metrics-cert-path", "/etc/certs", NULL};
      struct mgop_options o2;
      memset(&o2, 0, sizeof(o2));
      o2.watch_namespace = "";
      CHECK(mgop_parse_flags(3, certless, &o2, &exit_now) == 2); /* a certificate for plain HTTP: refused */
    }
    CHECK(mgop_parse_flags(2, lazy, &opt, &exit_now) == 0 && mgop_img_defaults.lazy == 1);
    mgop_img_defaults.lazy = 0;
    CHECK(mgop_parse_flags(2, later, &opt, &exit_now) == 2);
    CHECK(mgop_parse_flags(2, port, &opt, &exit_now) == 2);
    CHECK(mgop_parse_flags(2, enc, &opt, &exit_now) == 2);
    mgop_log_level = saved_level;
    mgop_log_json = saved_json;
  }
}

/* ======================================================================
 * 8a. a relist that misses objects: they were deleted while the watch was
 *     down, and the operator forgets them (so it recreates children)
 * ==================================================================== */
static void t_event(int kind, const char *type, const char *json) {
  static jsmntok_t tok[256];
  struct mgop_json j;
  if (!json) {
    mgop_on_event((void *)(intptr_t)kind, NULL, type, NULL, -1);
    return;
  }
  CHECK(mgop_json_parse(&j, json, strlen(json), tok, 256) == 0);
  mgop_on_event((void *)(intptr_t)kind, NULL, type, &j, 0);
}

static void test_relist_sweeps(void) {
#define T_CELL_OBJ(n) "{\"metadata\":{\"namespace\":\"rl\",\"name\":\"" n "\",\"uid\":\"u-" n "\",\"resourceVersion\":\"1\"," \
  "\"generation\":1,\"labels\":{\"multigres.com/cluster\":\"c\"}}}"
#define T_ROOT_OBJ(n) "{\"metadata\":{\"namespace\":\"rl\",\"name\":\"" n "\",\"uid\":\"r-" n "\",\"generation\":1}}"
  int saved = mgop_log_level;
  mgop_log_level = MGOP_ERROR;
  t_event(K_CLUSTER, "LIST_BEGIN", NULL);
  t_event(K_CLUSTER, "SYNC", T_ROOT_OBJ("c"));
  t_event(K_CLUSTER, "SYNC", T_ROOT_OBJ("gone"));
  t_event(K_CLUSTER, "LIST_END", NULL);
  t_event(K_CELL, "LIST_BEGIN", NULL);
  t_event(K_CELL, "SYNC", T_CELL_OBJ("a"));
  t_event(K_CELL, "SYNC", T_CELL_OBJ("b"));
  t_event(K_CELL, "LIST_END", NULL);
  t_event(K_CELL, "ADDED", T_CELL_OBJ("d"));
  CHECK(mgop_fp_find(mgop_fp_key("Cell", "rl", "a")) && mgop_fp_find(mgop_fp_key("Cell", "rl", "b")));
  CHECK(mgop_fp_find(mgop_fp_key("Cell", "rl", "d")) != NULL);
  CHECK(mgop_root_find("rl", "gone") != NULL);
  /* the watch was down: b and d were deleted meanwhile, and so was a cluster */
  t_event(K_CELL, "LIST_BEGIN", NULL);
  t_event(K_CELL, "SYNC", T_CELL_OBJ("a"));
  t_event(K_CELL, "LIST_END", NULL);
  CHECK(mgop_fp_find(mgop_fp_key("Cell", "rl", "a")) != NULL);
  CHECK(mgop_fp_find(mgop_fp_key("Cell", "rl", "b")) == NULL);
  CHECK(mgop_fp_find(mgop_fp_key("Cell", "rl", "d")) == NULL);
  t_event(K_CLUSTER, "LIST_BEGIN", NULL);
  t_event(K_CLUSTER, "SYNC", T_ROOT_OBJ("c"));
  t_event(K_CLUSTER, "LIST_END", NULL);
  CHECK(mgop_root_find("rl", "c") != NULL);
  CHECK(mgop_root_find("rl", "gone") == NULL);
  /* a failed relist (no LIST_END) forgets nothing */
  t_event(K_CELL, "LIST_BEGIN", NULL);
  CHECK(mgop_fp_find(mgop_fp_key("Cell", "rl", "a")) != NULL);
  /* clean up what this test put in the global tables */
  mgop_fp_remove(mgop_fp_key("Cell", "rl", "a"));
  mgop_roots_set("rl", "c", 0);
  while (mgop_work_depth() > 0) {
    struct mgop_work item;
    if (mgop_work_pop(LLONG_MAX, &item)) break;
  }
  mgop_log_level = saved;
#undef T_CELL_OBJ
#undef T_ROOT_OBJ
}

/* A turn asks whether its cluster has orphaned StatefulSets: only a
 * cluster one was seen for scans the object table; the answer is the
 * table's, and the filter's "maybe" stays after the orphan is adopted. */
static void test_orphan_filter(void) {
#define T_ORPHAN_STS(orphaned) "{\"metadata\":{\"namespace\":\"of\",\"name\":\"x-pool\",\"uid\":\"u-x\"," \
  "\"resourceVersion\":\"3\",\"generation\":1,\"labels\":{\"app.kubernetes.io/managed-by\":\"multigres-operator\"," \
  "\"multigres.com/cluster\":\"x\"" orphaned "}}}"
  static struct mgop_rctx r;
  int saved = mgop_log_level;
  mgop_log_level = MGOP_ERROR;
  r.ns = "of";
  r.name = "x";
  CHECK(!mgop_orphan_maybe(mgop_cluster_hash("of", "x")) && !mgop_has_orphans(&r));
  t_event(K_STS, "ADDED", T_ORPHAN_STS(",\"multigres.com/orphaned-from\":\"uid-old\""));
  CHECK(mgop_orphan_maybe(mgop_cluster_hash("of", "x")) && mgop_has_orphans(&r));
  r.name = "y"; /* another cluster of the namespace */
  CHECK(!mgop_has_orphans(&r));
  r.name = "x";
  t_event(K_STS, "MODIFIED", T_ORPHAN_STS("")); /* adopted: the label went */
  CHECK(mgop_orphan_maybe(mgop_cluster_hash("of", "x")) && !mgop_has_orphans(&r));
  mgop_fp_remove(mgop_fp_key("StatefulSet", "of", "x-pool"));
  mgop_sts_fact_set(mgop_fp_key("StatefulSet", "of", "x-pool"), 1, "", 0, "a test's");
  while (mgop_work_depth() > 0) {
    struct mgop_work w;
    mgop_work_pop(LLONG_MAX, &w);
  }
  mgop_log_level = saved;
#undef T_ORPHAN_STS
}

static void t_drain_work(void);

/* The watch echo of our own write (an apply, a status write, the
 * cluster's metadata patch) wakes nobody; any other version, or a deletion,
 * wakes the cluster as before. */
static void test_own_echo(void) {
#define T_CELL_RV(rv, gen) "{\"metadata\":{\"namespace\":\"ec\",\"name\":\"a\",\"uid\":\"u-a\",\"resourceVersion\":\"" rv "\"," \
  "\"generation\":" gen ",\"labels\":{\"multigres.com/cluster\":\"c\"}}}"
#define T_CM_RV(rv) "{\"metadata\":{\"namespace\":\"ec\",\"name\":\"c-cm\",\"uid\":\"u-cm\",\"resourceVersion\":\"" rv "\"," \
  "\"labels\":{\"multigres.com/cluster\":\"c\"}}}"
#define T_ROOT_RV(rv) "{\"metadata\":{\"namespace\":\"ec\",\"name\":\"c\",\"uid\":\"r-c\",\"resourceVersion\":\"" rv "\",\"generation\":1}}"
  struct mgop_rctx r;
  struct mgop_desired d;
  struct mgop_fp *f, *root;
  int rejected = 0, saved = mgop_log_level;
  mgop_log_level = MGOP_ERROR;
  t_drain_work();
  memset(&r, 0, sizeof(r));
  r.ns = "ec";
  r.name = "c";
  /* a Cell the turn applied (version 10) and whose status it wrote (11) */
  CHECK(t_apply_result(&r, &d, K_CELL, "a", 201, "10", 1, -1, &rejected) == MGOP_OK);
  f = mgop_fp_find(mgop_fp_key("Cell", "ec", "a"));
  mgop_note_own_write(f, "11", 1);
  t_event(K_CELL, "ADDED", T_CELL_RV("10", "1"));
  t_event(K_CELL, "MODIFIED", T_CELL_RV("11", "1"));
  CHECK(mgop_work_depth() == 0);
  CHECK(f != NULL && f->seen_rv == mgop_uid_hash("11")); /* the echoes kept our status write's version */
  t_event(K_CELL, "MODIFIED", T_CELL_RV("12", "2")); /* someone else's edit */
  CHECK(mgop_work_depth() == 1 && f->seen_gen == 2);
  t_drain_work();
  t_event(K_CELL, "DELETED", T_CELL_RV("12", "2"));
  CHECK(mgop_work_depth() == 1);
  t_drain_work();
  /* a ConfigMap (in sync by resourceVersion): its echo leaves it in sync */
  CHECK(t_apply_result(&r, &d, K_CM, "c-cm", 201, "20", 1, -1, &rejected) == MGOP_OK);
  t_event(K_CM, "ADDED", T_CM_RV("20"));
  CHECK(mgop_work_depth() == 0 && mgop_in_sync(&d, mgop_fp_find(mgop_fp_key("ConfigMap", "ec", "c-cm"))));
  t_event(K_CM, "MODIFIED", T_CM_RV("21"));
  CHECK(mgop_work_depth() == 1 && !mgop_in_sync(&d, mgop_fp_find(mgop_fp_key("ConfigMap", "ec", "c-cm"))));
  t_drain_work();
  /* the cluster: its metadata patch (30) and status write (31) are echoes, a spec edit (32) is not */
  root = mgop_fp_upsert(mgop_fp_key("MultigresCluster", "ec", "c"));
  t_event(K_CLUSTER, "ADDED", T_ROOT_RV("29"));
  CHECK(mgop_work_depth() == 1);
  t_drain_work();
  mgop_note_own_write(root, "30", 0);
  mgop_note_own_write(root, "31", 1);
  mgop_note_own_write(root, "", 1); /* an answer without a version changes nothing */
  t_event(K_CLUSTER, "MODIFIED", T_ROOT_RV("30"));
  t_event(K_CLUSTER, "MODIFIED", T_ROOT_RV("31"));
  CHECK(mgop_work_depth() == 0);
  t_event(K_CLUSTER, "MODIFIED", T_ROOT_RV("32"));
  CHECK(mgop_work_depth() == 1);
  t_drain_work();
  mgop_fp_remove(mgop_fp_key("Cell", "ec", "a"));
  mgop_fp_remove(mgop_fp_key("ConfigMap", "ec", "c-cm"));
  mgop_fp_remove(mgop_fp_key("MultigresCluster", "ec", "c"));
  mgop_roots_set("ec", "c", 0);
  mgop_log_level = saved;
#undef T_CELL_RV
#undef T_CM_RV
#undef T_ROOT_RV
}

/* ======================================================================
 * 8c. why a cluster does not converge: unschedulable pods and node zones
 * ==================================================================== */
#define T_POD(name, owner_kind, owner, sched, reason)                                                        \
  "{\"metadata\":{\"namespace\":\"us\",\"name\":\"" name "\",\"labels\":{\"multigres.com/cluster\":\"c\"},"  \
  "\"ownerReferences\":[{\"kind\":\"" owner_kind "\",\"name\":\"" owner "\",\"controller\":true}]},"          \
  "\"status\":{\"phase\":\"Pending\",\"conditions\":[{\"type\":\"PodScheduled\",\"status\":\"" sched "\","   \
  "\"reason\":\"Unschedulable\",\"message\":\"" reason "\"}]}}"
#define T_NODE(name, zone, region)                                                                           \
  "{\"metadata\":{\"name\":\"" name "\",\"labels\":{\"topology.kubernetes.io/zone\":\"" zone "\","           \
  "\"topology.kubernetes.io/region\":\"" region "\"}}}"
#define T_NOMATCH "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector."

static void t_drain_work(void) {
  while (mgop_work_depth() > 0) {
    struct mgop_work item;
    if (mgop_work_pop(LLONG_MAX, &item)) break;
  }
}

static void test_unschedulable_pods(void) {
  char why[320] = "", msg[600], w[320];
  int saved = mgop_log_level;
  mgop_log_level = MGOP_ERROR;
  t_drain_work();
  t_event(K_POD, "LIST_BEGIN", NULL);
  t_event(K_POD, "SYNC", T_POD("c-pool-0", "StatefulSet", "c-pool", "False", T_NOMATCH));
  t_event(K_POD, "SYNC", T_POD("c-gw-5d4f9-x2x", "ReplicaSet", "c-gw-5d4f9", "False", "pod has unbound immediate PersistentVolumeClaims"));
  t_event(K_POD, "SYNC", T_POD("c-admin-77-abc", "ReplicaSet", "c-admin-77", "True", ""));
  t_event(K_POD, "LIST_END", NULL);
  CHECK(mgop_work_depth() == 1); /* cluster c woke (once: the set coalesces) */
  CHECK(mgop_unsched_why("StatefulSet", "us", "c-pool", w, sizeof(w)) == 1);
  CHECK_STR(w, "pod c-pool-0 cannot be scheduled: Unschedulable: " T_NOMATCH);
  CHECK(mgop_unsched_why("Deployment", "us", "c-gw", w, sizeof(w)) == 1 && strstr(w, "unbound immediate"));
  CHECK(mgop_unsched_why("Deployment", "us", "c-admin", w, sizeof(w)) == 0);
  /* status: a not-ready workload's message names the reason; the first goes to the cluster's */
  snprintf(msg, sizeof(msg), "0/3 pool pods ready");
  mgop_status_why("StatefulSet", "us", "c-pool", 0, msg, sizeof(msg), why, sizeof(why));
  CHECK_STR(msg, "0/3 pool pods ready; pod c-pool-0 cannot be scheduled: Unschedulable: " T_NOMATCH);
  mgop_status_why("Deployment", "us", "c-gw", 0, msg, sizeof(msg), why, sizeof(why));
  CHECK(strstr(why, "c-pool-0") && !strstr(why, "c-gw"));
  snprintf(msg, sizeof(msg), "1/1 ready");
  mgop_status_why("Deployment", "us", "c-gw", 1, msg, sizeof(msg), why, sizeof(why)); /* ready: nothing said */
  CHECK_STR(msg, "1/1 ready");
  /* an unchanged event wakes nobody; the pod schedules: the row goes and the cluster wakes */
  t_drain_work();
  t_event(K_POD, "MODIFIED", T_POD("c-pool-0", "StatefulSet", "c-pool", "False", T_NOMATCH));
  CHECK(mgop_work_depth() == 0);
  t_event(K_POD, "MODIFIED", T_POD("c-pool-0", "StatefulSet", "c-pool", "True", ""));
  CHECK(mgop_unsched_why("StatefulSet", "us", "c-pool", w, sizeof(w)) == 0 && mgop_work_depth() == 1);
  t_event(K_POD, "DELETED", T_POD("c-gw-5d4f9-x2x", "ReplicaSet", "c-gw-5d4f9", "False", "x"));
  CHECK(mgop_unsched_why("Deployment", "us", "c-gw", w, sizeof(w)) == 0);
  /* a relist that no longer shows a pod forgets it */
  t_event(K_POD, "ADDED", T_POD("c-pool-1", "StatefulSet", "c-pool", "False", T_NOMATCH));
  CHECK(mgop_unsched_why("StatefulSet", "us", "c-pool", w, sizeof(w)) == 1);
  t_event(K_POD, "LIST_BEGIN", NULL);
  t_event(K_POD, "LIST_END", NULL);
  CHECK(mgop_unsched_why("StatefulSet", "us", "c-pool", w, sizeof(w)) == 0);
  /* the table is bounded: past MGOP_UNSCHED_SLOTS pods, rows are refused and
   * counted (limit unschedulable_pods, and logged); scans stop at the rows used */
  CHECK(mgop_server.unsched_span <= 2);
  mgop_log_level = MGOP_ERROR + 1;
  {
    unsigned long long hits = mgop_limit_hits[MGOP_L_UNSCHEDULABLE];
    for (int i = 0; i <= MGOP_UNSCHED_SLOTS; i++) {
      char pod[600];
      snprintf(pod, sizeof(pod), T_POD("p-%d", "StatefulSet", "big", "False", "x"), i);
      t_event(K_POD, "ADDED", pod);
    }
    CHECK(mgop_limit_hits[MGOP_L_UNSCHEDULABLE] == hits + 1 && mgop_server.unsched_span == MGOP_UNSCHED_SLOTS);
    CHECK(!strcmp(mgop_limit_names[MGOP_L_UNSCHEDULABLE], "unschedulable_pods"));
    mgop_limit_hits[MGOP_L_UNSCHEDULABLE] = hits;
  }
  memset(mgop_server.unsched, 0, sizeof(mgop_server.unsched));
  mgop_server.unsched_span = 0;
  t_drain_work();
  mgop_log_level = saved;
}

static void test_cell_zone_warnings(void) {
  static jsmntok_t tok[128];
  struct mgop_json j;
  char out[300] = "";
  const char spec[] = "{\"cells\":[{\"name\":\"a\",\"zone\":\"us-east-1a\"},{\"name\":\"b\",\"zone\":\"mars-1a\"},"
                      "{\"name\":\"c\",\"region\":\"mars\"},{\"name\":\"d\",\"region\":\"us-east-1\"}]}";
  int saved = mgop_log_level;
  mgop_log_level = MGOP_ERROR;
  CHECK(mgop_json_parse(&j, spec, sizeof(spec) - 1, tok, 128) == 0);
  mgop_cell_zone_warnings(&j, 0, out, sizeof(out)); /* no node list yet: no guess */
  CHECK_STR(out, "");
  t_event(K_NODE, "LIST_BEGIN", NULL);
  t_event(K_NODE, "SYNC", T_NODE("n1", "us-east-1a", "us-east-1"));
  t_event(K_NODE, "SYNC", T_NODE("n2", "us-east-1b", "us-east-1"));
  t_event(K_NODE, "LIST_END", NULL);
  mgop_cell_zone_warnings(&j, 0, out, sizeof(out));
  CHECK(strstr(out, "spec.cells[1].zone \"mars-1a\" matches no node's topology.kubernetes.io/zone label") != NULL);
  CHECK(strstr(out, "spec.cells[2].region \"mars\" matches no node's topology.kubernetes.io/region label") != NULL);
  CHECK(!strstr(out, "cells[0]") && !strstr(out, "cells[3]"));
  /* the node goes: its zone no longer counts */
  t_event(K_NODE, "DELETED", T_NODE("n1", "us-east-1a", "us-east-1"));
  out[0] = 0;
  mgop_cell_zone_warnings(&j, 0, out, sizeof(out));
  CHECK(strstr(out, "cells[0].zone") != NULL && !strstr(out, "cells[3]"));
  /* admission returns it as a warning and still allows the cluster */
  {
    static char body[64 * 1024];
    static const char review[] =
        "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"z1\","
        "\"kind\":{\"group\":\"multigres.com\",\"version\":\"v1alpha1\",\"kind\":\"MultigresCluster\"},"
        "\"operation\":\"CREATE\",\"namespace\":\"ns\",\"userInfo\":{\"username\":\"alice\"},"
        "\"object\":{\"metadata\":{\"name\":\"c\"},\"spec\":{\"cells\":[{\"name\":\"a\",\"zone\":\"mars-1a\"}]}}}}";
    mgop_arena_init(&mgop_server.arena, mgop_server.arena_mem, sizeof(mgop_server.arena_mem));
    CHECK(t_admit(review, body, sizeof(body)) == 200 && strstr(body, "\"allowed\":true") &&
          strstr(body, "\"warnings\":[\"spec.cells[0].zone \\\"mars-1a\\\" matches no node"));
    mgop_arena_reset(&mgop_server.arena);
  }
  /* past MGOP_NODE_SLOTS nodes: limit nodes counted once, and no more warnings (the zone set is partial) */
  CHECK(mgop_server.nodes_span == 2);
  mgop_log_level = MGOP_ERROR + 1;
  {
    unsigned long long hits = mgop_limit_hits[MGOP_L_NODES];
    for (int i = 0; i < MGOP_NODE_SLOTS; i++) { /* n2 holds a row: the last one is refused */
      char node[300];
      snprintf(node, sizeof(node), T_NODE("m-%d", "mars-1a", "mars"), i);
      t_event(K_NODE, "ADDED", node);
    }
    CHECK(mgop_limit_hits[MGOP_L_NODES] == hits + 1 && mgop_server.nodes_span == MGOP_NODE_SLOTS);
    out[0] = 0;
    mgop_cell_zone_warnings(&j, 0, out, sizeof(out));
    CHECK_STR(out, "");
    mgop_limit_hits[MGOP_L_NODES] = hits;
  }
  memset(mgop_server.nodes, 0, sizeof(mgop_server.nodes));
  mgop_server.nodes_synced = mgop_server.nodes_overflow = mgop_server.nodes_span = 0;
  mgop_log_level = saved;
}
#undef T_POD
#undef T_NODE
#undef T_NOMATCH

/* ======================================================================
 * 8a. orphan and reclaim: the patch bodies and the compatibility check
 * ==================================================================== */
static void test_orphan_patches(void) {
  char mem[1024];
  struct mgop_buf b;
  mgop_buf_init(&b, mem, sizeof(mem));
  CHECK(mgop_orphan_patch(&b, "u-1", 1) == MGOP_OK);
  CHECK_STR(mgop_buf_cstr(&b), "{\"metadata\":{\"ownerReferences\":null,\"labels\":{\"multigres.com/orphaned-from\":"
            "\"u-1\"}},\"spec\":{\"persistentVolumeClaimRetentionPolicy\":{\"whenDeleted\":\"Retain\","
            "\"whenScaled\":\"Retain\"}}}");
  mgop_buf_init(&b, mem, sizeof(mem));
  CHECK(mgop_orphan_patch(&b, "u-1", 0) == MGOP_OK); /* PVCs and Secrets: metadata only */
  CHECK_STR(mgop_buf_cstr(&b), "{\"metadata\":{\"ownerReferences\":null,\"labels\":{\"multigres.com/orphaned-from\":"
            "\"u-1\"}}}");
  mgop_buf_init(&b, mem, sizeof(mem));
  CHECK(mgop_adopt_patch(&b, 0, NULL, NULL) == MGOP_OK);
  CHECK_STR(mgop_buf_cstr(&b), "{\"metadata\":{\"labels\":{\"multigres.com/orphaned-from\":null}}}");
  mgop_buf_init(&b, mem, sizeof(mem));
  CHECK(mgop_adopt_patch(&b, K_SHARD, "s1", "u-2") == MGOP_OK);
  CHECK_STR(mgop_buf_cstr(&b), "{\"metadata\":{\"labels\":{\"multigres.com/orphaned-from\":null},\"ownerReferences\":"
            "[{\"apiVersion\":\"multigres.com/v1alpha1\",\"kind\":\"Shard\",\"name\":\"s1\",\"uid\":\"u-2\","
            "\"controller\":true,\"blockOwnerDeletion\":true}]}}");
  mgop_buf_init(&b, mem, 40); /* too small: an error, never a cut body */
  CHECK(mgop_orphan_patch(&b, "u-1", 1) == MGOP_ERR_TOOBIG);
}

static void test_orphan_compat(void) {
  static struct mgop_desired d[4];
  static struct mgop_orphan o[3];
  char field[300];
  memset(d, 0, sizeof(d));
  memset(o, 0, sizeof(o));
  d[0].kind = K_STS; snprintf(d[0].name, sizeof(d[0].name), "c-global-topo");
  d[1].kind = K_SVC; snprintf(d[1].name, sizeof(d[1].name), "c-pool-main");  /* a Service of that name is no home */
  d[2].kind = K_STS; snprintf(d[2].name, sizeof(d[2].name), "c-pool-main");
  d[3].kind = K_STS; snprintf(d[3].name, sizeof(d[3].name), "c-pool-new");   /* a new pool: fine */
  snprintf(o[0].name, sizeof(o[0].name), "c-global-topo");
  snprintf(o[0].component, sizeof(o[0].component), "toposerver");
  snprintf(o[1].name, sizeof(o[1].name), "c-pool-main");
  CHECK(mgop_orphans_missing(o, 2, d, 4) == -1);
  CHECK(mgop_orphans_missing(o, 2, d, 2) == 1);  /* only the Service: the pool's StatefulSet is missing */
  CHECK(mgop_orphans_missing(o, 0, d, 0) == -1);
  snprintf(o[2].name, sizeof(o[2].name), "c-pool-old");
  snprintf(o[2].component, sizeof(o[2].component), "shard-pool");
  snprintf(o[2].database, sizeof(o[2].database), "postgres");
  snprintf(o[2].tablegroup, sizeof(o[2].tablegroup), "default");
  snprintf(o[2].shard, sizeof(o[2].shard), "0-inf");
  snprintf(o[2].pool, sizeof(o[2].pool), "old");
  snprintf(o[2].cell, sizeof(o[2].cell), "zone-a");
  CHECK(mgop_orphans_missing(o, 3, d, 4) == 2);
  mgop_orphan_field(&o[2], field, sizeof(field));
  CHECK_STR(field, "spec.databases[name=postgres].tablegroups[name=default].shards[name=0-inf].pools.old (cell zone-a)");
  mgop_orphan_field(&o[0], field, sizeof(field));
  CHECK_STR(field, "spec.globalTopoServer.etcd");
  snprintf(o[0].component, sizeof(o[0].component), "local-toposerver");
  snprintf(o[0].cell, sizeof(o[0].cell), "zone-b");
  mgop_orphan_field(&o[0], field, sizeof(field));
  CHECK_STR(field, "spec.cells[name=zone-b].localTopoServer");
}

/* ======================================================================
 * 8b. admission: POST /validate, offline (no API server: no template exists)
 * ==================================================================== */
struct t_review_call { const char *body; int status, done; char out[8192]; };
static void *t_review_thread(void *arg) { /* one review answered on a thread of its own */
  struct t_review_call *c = arg;
  c->status = t_admit(c->body, c->out, sizeof(c->out));
  __atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void test_admission(void) {
#define T_REVIEW(uid, kind, op, user, extra)                                                              \
  "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"" uid "\"," \
  "\"kind\":{\"group\":\"multigres.com\",\"version\":\"v1alpha1\",\"kind\":\"" kind "\"},\"operation\":\"" op \
  "\",\"namespace\":\"ns\",\"userInfo\":{\"username\":\"" user "\"}" extra "}}"
  static const struct { const char *what, *body; int status, allowed; const char *says; } cases[] = {
      {"cluster naming a missing template", T_REVIEW("u1", "MultigresCluster", "CREATE", "alice",
       ",\"object\":{\"metadata\":{\"name\":\"c\"},\"spec\":{\"templateDefaults\":{\"cellTemplate\":\"nope\"},"
       "\"cells\":[{\"name\":\"a\",\"zone\":\"z\"}]}}"), 200, 0,
       "TemplateNotFound: spec.templateDefaults.cellTemplate names CellTemplate \\\"nope\\\""},
      {"cluster whose pool names an unknown cell", T_REVIEW("u2", "MultigresCluster", "UPDATE", "alice",
       ",\"object\":{\"metadata\":{\"name\":\"c\"},\"spec\":{\"cells\":[{\"name\":\"a\",\"zone\":\"z\"}],\"databases\":"
       "[{\"name\":\"postgres\",\"default\":true,\"tablegroups\":[{\"name\":\"default\",\"default\":true,\"shards\":"
       "[{\"name\":\"0-inf\",\"spec\":{\"pools\":{\"p\":{\"cells\":[\"b\"]}}}}]}]}]}}"), 200, 0,
       "pools.p.cells names cell \\\"b\\\", which is not in spec.cells"},
      {"a valid cluster", T_REVIEW("u3", "MultigresCluster", "CREATE", "alice",
       ",\"object\":{\"metadata\":{\"name\":\"c\"},\"spec\":{\"cells\":[{\"name\":\"a\",\"zone\":\"z\"}]}}"), 200, 1,
       "\"uid\":\"u3\""},
      {"a template with consumers", T_REVIEW("u4", "CellTemplate", "DELETE", "alice",
       ",\"oldObject\":{\"metadata\":{\"name\":\"default\"},\"status\":{\"consumers\":[\"a\",\"b\"]}}"), 200, 0,
       "CellTemplate \\\"default\\\" is in use by MultigresClusters a, b (status.consumers)"},
      {"a template nobody uses", T_REVIEW("u5", "ShardTemplate", "DELETE", "alice",
       ",\"oldObject\":{\"metadata\":{\"name\":\"t\"},\"status\":{}}"), 200, 1, "\"allowed\":true"},
      {"a user editing a child", T_REVIEW("u6", "Shard", "UPDATE", "alice", ",\"object\":{}"), 200, 0,
       "Shard resources are owned by the multigres operator and read-only"},
      {"the operator writing a child", T_REVIEW("u7", "Cell", "UPDATE", "system:serviceaccount:op:op", ",\"object\":{}"),
       200, 1, "\"allowed\":true"},
      {"the garbage collector orphaning a child",
       T_REVIEW("u8", "Cell", "UPDATE", "system:serviceaccount:kube-system:generic-garbage-collector", ",\"object\":{}"),
       200, 1, "\"allowed\":true"},
      {"a user deleting a child (it is recreated)", T_REVIEW("u9", "TopoServer", "DELETE", "alice", ""), 200, 1,
       "\"allowed\":true"},
      {"an unknown deletion-policy", T_REVIEW("o1", "MultigresCluster", "CREATE", "alice",
       ",\"object\":{\"metadata\":{\"name\":\"c\",\"annotations\":{\"multigres.com/deletion-policy\":\"Keep\"}},"
       "\"spec\":{\"cells\":[{\"name\":\"a\",\"zone\":\"z\"}]}}"), 200, 0, "it must be Orphan"},
      {"removing deletion-policy during a deletion", T_REVIEW("o2", "MultigresCluster", "UPDATE", "alice",
       ",\"object\":{\"metadata\":{\"name\":\"c\"},\"spec\":{}},\"oldObject\":{\"metadata\":{\"name\":\"c\","
       "\"deletionTimestamp\":\"2026-01-01T00:00:00Z\",\"annotations\":{\"multigres.com/deletion-policy\":\"Orphan\"}}}"),
       200, 0, "cannot change while the cluster is being deleted (it was \\\"Orphan\\\")"},
      {"setting deletion-policy during a deletion", T_REVIEW("o3", "MultigresCluster", "UPDATE", "alice",
       ",\"object\":{\"metadata\":{\"name\":\"c\",\"annotations\":{\"multigres.com/deletion-policy\":\"Orphan\"}}},"
       "\"oldObject\":{\"metadata\":{\"name\":\"c\",\"deletionTimestamp\":\"2026-01-01T00:00:00Z\"}}"),
       200, 0, "(it was \\\"unset\\\")"},
      {"a finalizer dropped during an Orphan deletion", T_REVIEW("o4", "MultigresCluster", "UPDATE", "alice",
       ",\"object\":{\"metadata\":{\"name\":\"c\",\"annotations\":{\"multigres.com/deletion-policy\":\"Orphan\"}}},"
       "\"oldObject\":{\"metadata\":{\"name\":\"c\",\"deletionTimestamp\":\"2026-01-01T00:00:00Z\","
       "\"finalizers\":[\"x\"],\"annotations\":{\"multigres.com/deletion-policy\":\"Orphan\"}}}"), 200, 1,
       "\"allowed\":true"},
      {"removing deletion-policy from a live cluster", T_REVIEW("o5", "MultigresCluster", "UPDATE", "alice",
       ",\"object\":{\"metadata\":{\"name\":\"c\"},\"spec\":{\"cells\":[{\"name\":\"a\",\"zone\":\"z\"}]}},"
       "\"oldObject\":{\"metadata\":{\"name\":\"c\",\"annotations\":{\"multigres.com/deletion-policy\":\"Orphan\"}}}"),
       200, 1, "\"allowed\":true"},
      {"the collector deleting a child of an Orphan cluster",
       T_REVIEW("o6", "Shard", "DELETE", "system:serviceaccount:kube-system:generic-garbage-collector",
       ",\"oldObject\":{\"metadata\":{\"name\":\"s\",\"labels\":{\"multigres.com/cluster\":\"c\","
       "\"multigres.com/deletion-policy\":\"Orphan\"}}}"), 200, 0,
       "Shard belongs to MultigresCluster c, whose deletion-policy is Orphan"},
      {"the operator pruning a child of an Orphan cluster", T_REVIEW("o7", "Cell", "DELETE", "system:serviceaccount:op:op",
       ",\"oldObject\":{\"metadata\":{\"name\":\"s\",\"labels\":{\"multigres.com/deletion-policy\":\"Orphan\"}}}"),
       200, 1, "\"allowed\":true"},
      {"no request.object", T_REVIEW("u10", "MultigresCluster", "CREATE", "alice", ""), 200, 1,
       "no request.object"},
      {"not JSON", "{\"request\":", 400, 0, "AdmissionReview"},
      {"no uid", "{\"request\":{\"kind\":{\"kind\":\"Cell\"}}}", 400, 0, "request.uid"},
  };
  static char out[64 * 1024];
  char saved_user[256];
  snprintf(saved_user, sizeof(saved_user), "%s", mgop_wh.operator_user);
  snprintf(mgop_wh.operator_user, sizeof(mgop_wh.operator_user), "system:serviceaccount:op:op");
  mgop_arena_reset(&mgop_server.arena);
  mgop_arena_init(&mgop_server.arena, mgop_server.arena_mem, sizeof(mgop_server.arena_mem));
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    int status = t_admit(cases[i].body, out, sizeof(out));
    {
      int ok = status == cases[i].status && strstr(out, cases[i].says) != NULL &&
               (cases[i].status != 200 || strstr(out, cases[i].allowed ? "\"allowed\":true" : "\"allowed\":false"));
      if (!ok) fprintf(stderr, "    admission case \"%s\": HTTP %d: %s\n", cases[i].what, status, out);
      CHECK(ok);
    }
  }
  /* the metrics counted the reviews: 8 answered for multigres kinds */
  {
    unsigned long long n = 0;
    for (int o = 0; o < 4; o++)
      for (int k = 0; k <= K_SHARD; k++) n += mgop_wh_metrics.c.total[o][k][0] + mgop_wh_metrics.c.total[o][k][1];
    CHECK(n >= 10);
  }
  /* an answer does not wait for mgop_shared.mu, which the loop holds
   * through its metric sweeps (and, at nice 10, can be preempted in) */
  {
    struct t_review_call call = {.body = cases[2].body};
    pthread_t th;
    long long until = mgop_now_ms() + 2000;
    pthread_mutex_lock(&mgop_shared.mu);
    CHECK(pthread_create(&th, NULL, t_review_thread, &call) == 0);
    while (!__atomic_load_n(&call.done, __ATOMIC_ACQUIRE) && mgop_now_ms() < until) usleep(1000);
    CHECK(__atomic_load_n(&call.done, __ATOMIC_ACQUIRE)); /* else it waited for the lock held here */
    pthread_mutex_unlock(&mgop_shared.mu);
    pthread_join(th, NULL);
    CHECK(call.status == 200 && strstr(call.out, "\"allowed\":true"));
  }
  snprintf(mgop_wh.operator_user, sizeof(mgop_wh.operator_user), "%s", saved_user);
  mgop_arena_reset(&mgop_server.arena);
#undef T_REVIEW
}

/* ======================================================================
 * 8c. admission from the template cache (the serving thread's view)
 * ==================================================================== */
static int t_tcache_put(const char *ns, const char *name, const char *json) {
  static jsmntok_t tok[4096];
  struct mgop_json j;
  if (mgop_json_parse(&j, json, strlen(json), tok, 4096)) return -1;
  mgop_tcache_put(mgop_fp_key("CellTemplate", ns, name), &j, 0);
  return 0;
}

static void t_tcache_clear(void) {
  memset(mgop_tcache.rows, 0, sizeof(mgop_tcache.rows));
  mgop_tcache.used = 0;
  mgop_tcache.synced = mgop_tcache.incomplete = 0;
  mgop_tcache.refused = 0;
}

static void test_admission_cache(void) {
  static const char review[] =
      "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"c1\","
      "\"kind\":{\"group\":\"multigres.com\",\"version\":\"v1alpha1\",\"kind\":\"MultigresCluster\"},"
      "\"operation\":\"CREATE\",\"namespace\":\"ns\",\"userInfo\":{\"username\":\"alice\"},\"object\":{\"metadata\":"
      "{\"name\":\"c\"},\"spec\":{\"templateDefaults\":{\"cellTemplate\":\"fast\"},\"cells\":[{\"name\":\"a\","
      "\"zone\":\"z\"}]}}}}";
  static char out[64 * 1024], big[24 * 1024], obj[32 * 1024];
  int saved = mgop_tcache_enabled;
  mgop_tcache_enabled = 1;
  t_tcache_clear();

  /* not listed yet: a miss proves nothing, so the cluster is admitted, saying why */
  t_admit(review, out, sizeof(out));
  CHECK(strstr(out, "\"allowed\":true") != NULL);
  CHECK(strstr(out, "is not in the template cache, which is not complete") != NULL);

  /* listed: the miss is real, the cluster is refused as the reconciler would stall it */
  mgop_tcache.synced = 1;
  t_admit(review, out, sizeof(out));
  CHECK(strstr(out, "\"allowed\":false") != NULL);
  CHECK(strstr(out, "TemplateNotFound") != NULL);

  /* the template arrives on the watch: admitted, with neither status nor managedFields kept */
  memset(big, 'm', sizeof(big) - 1);
  big[sizeof(big) - 1] = 0;
  snprintf(obj, sizeof(obj), "{\"metadata\":{\"name\":\"fast\",\"namespace\":\"ns\",\"generation\":3,"
           "\"managedFields\":[{\"manager\":\"%s\"}]},\"spec\":{\"multigateway\":{\"replicas\":2}},"
           "\"status\":{\"consumers\":[\"x\"]}}", big);
  CHECK(t_tcache_put("ns", "fast", obj) == 0);
  t_admit(review, out, sizeof(out));
  CHECK(strstr(out, "\"allowed\":true") != NULL);
  CHECK(strstr(out, "warnings") == NULL);
  CHECK(mgop_tcache.used < 200); /* metadata and spec only */
  CHECK(memmem(mgop_tcache.text, mgop_tcache.used, "managedFields", 13) == NULL);

  /* churn far past the cache's size: compaction keeps the newest text of each */
  for (int round = 0; round < 400; round++) {
    char name[32];
    int n = 1000 + (int)(t_rand() % 20000);
    snprintf(name, sizeof(name), "t%d", round % 40);
    snprintf(obj, sizeof(obj), "{\"metadata\":{\"name\":\"%s\",\"namespace\":\"ns\"},\"spec\":{\"round\":%d,"
             "\"pad\":\"%.*s\"}}", name, round, n, big);
    CHECK(t_tcache_put("ns", name, obj) == 0);
  }
  for (int i = 0; i < 40; i++) {
    struct mgop_rctx r;
    struct mgop_json j;
    char name[32];
    long long round = -1;
    memset(&r, 0, sizeof(r));
    r.ns = "ns";
    r.arena = &mgop_admit_arena;
    mgop_arena_reset(&mgop_admit_arena);
    snprintf(name, sizeof(name), "t%d", i);
    CHECK(mgop_tcache_get(&r, K_CELLT, name, &j) == MGOP_OK);
    mgop_json_i64(&j, mgop_json_path(&j, 0, "spec.round"), &round);
    CHECK(round == 360 + i);
  }
  CHECK(mgop_tcache.used <= sizeof(mgop_tcache.text));

  /* more templates than rows: from then on a miss is "cannot tell", never "not found" */
  for (int i = 0; i < MGOP_TEMPLATE_SLOTS + 10; i++) {
    char name[32];
    snprintf(name, sizeof(name), "many%d", i);
    snprintf(obj, sizeof(obj), "{\"metadata\":{\"name\":\"%s\",\"namespace\":\"ns\"},\"spec\":{}}", name);
    t_tcache_put("ns", name, obj);
  }
  CHECK(mgop_tcache.incomplete == 1);
  {
    struct mgop_rctx r;
    struct mgop_json j;
    memset(&r, 0, sizeof(r));
    r.ns = "ns";
    r.arena = &mgop_admit_arena;
    CHECK(mgop_tcache_get(&r, K_CELLT, "never-seen", &j) == MGOP_ERR_AGAIN);
  }
  t_tcache_clear();
  mgop_arena_reset(&mgop_admit_arena);
  mgop_tcache_enabled = saved;
}

/* A blocked request ends within a slice once shutdown begins (any thread),
 * and a write is refused before it leaves when the Lease is not held. */
static int t_never(void) { return 0; }
static void test_abort_and_write_gate(void) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a;
  socklen_t al = sizeof(a);
  struct mgop_kubecfg *cfg = calloc(1, sizeof(*cfg));
  struct mgop_kube *k = calloc(1, sizeof(*k));
  char port[8];
  int status = 0, rc;
  long long t0;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  CHECK(bind(lfd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(lfd, 4) == 0);
  getsockname(lfd, (struct sockaddr *)&a, &al);
  snprintf(port, sizeof(port), "%d", ntohs(a.sin_port));
  snprintf(cfg->scheme, sizeof(cfg->scheme), "http");
  snprintf(cfg->host, sizeof(cfg->host), "127.0.0.1");
  snprintf(cfg->port, sizeof(cfg->port), "%s", port);
  CHECK(mgop_kube_init(k, cfg) == MGOP_OK);

  /* the write gate: nothing is sent (the listener never sees a connection) */
  k->may_write = t_never;
  rc = mgop_kube_request(k, "PATCH", "/x", "application/json", "{}", 2, NULL, &status);
  CHECK(rc == MGOP_ERR_AUTH && strstr(mgop_errmsg(), "does not hold the Lease") != NULL);
  CHECK(k->stats.requests == 0);
  k->may_write = NULL;

  /* a GET to a server that accepts and never answers: blocked until aborted */
  mgop_io_abort = 1;
  t0 = mgop_now_ms();
  rc = mgop_kube_request(k, "GET", "/slow", NULL, NULL, 0, NULL, &status);
  CHECK(rc == MGOP_ERR_TIMEOUT && mgop_now_ms() - t0 < 50); /* refused before it starts */
  mgop_io_abort = 0;
  {
    pid_t child = fork();
    if (child == 0) { /* abort 300 ms into the wait, as a signal handler would */
      usleep(300 * 1000);
      kill(getppid(), SIGUSR1);
      _exit(0);
    }
    struct sigaction sa, old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = mgop_on_signal;
    sigaction(SIGUSR1, &sa, &old);
    k->timeout_ms = 10000;
    t0 = mgop_now_ms();
    rc = mgop_kube_request(k, "GET", "/slow", NULL, NULL, 0, NULL, &status);
    long long took = mgop_now_ms() - t0;
    CHECK(rc == MGOP_ERR_TIMEOUT);
    CHECK(took >= 250 && took < 300 + 3 * MGOP_IO_SLICE_MS);
    waitpid(child, NULL, 0);
    sigaction(SIGUSR1, &old, NULL);
  }
  mgop_io_abort = 0;
  mgop_stop_signal = 0;
  mgop_kube_free(k);
  free(k);
  free(cfg);
  close(lfd);
}

/* ======================================================================
 * 9. Runner
 * ==================================================================== */
/* section 10 (after main): PKI, request parser, HTTP(S) server */
/* ======================================================================
 * 12. The field walk (issue #13): one rule, a field is acted on or refused
 *
 * Every leaf of every user-edited kind (MultigresCluster, and the three
 * templates through a cluster that resolves them), read from crds.yaml, is
 * set in a base document to schema-valid values; the cluster is rendered
 * in-process and its workloads plus its topology records are hashed (our
 * own child resources are left out: they echo the resolved spec whether
 * anything acts on it or not). Each value is compared with a scaffold: the
 * same document with the leaf's parents created (and their required
 * fields), the leaf itself unset, so creating a parent never counts as the
 * leaf acting. A leaf is acted on when a value changes the hash, refused
 * when the render stalls naming it. Otherwise it must be covered at run
 * time (t_field_runtime, with its test); a new CRD field that does none of
 * these fails here.
 * MGOP_WALK_VERBOSE=1 prints every leaf's outcome (0 acted on, 1 refused,
 * 2 run-time, 3 fixed, 4 neither); MGOP_WALK_DEBUG=PATH-PART prints the
 * scaffold and the edited documents of matching leaves.
 * ==================================================================== */
#define T_SEGS 24
struct t_leaf {
  int kind;                    /* K_CLUSTER, K_CORET, K_CELLT, K_SHARDT  */
  char seg[T_SEGS][64];        /* keys, "[]" (an element) or "*" (a key) */
  int sch[T_SEGS + 1];         /* schema of the value at each depth       */
  int nseg, key;               /* key: the last named segment             */
  char path[512];              /* "spec.cells[].zone"                     */
};

static struct mgop_json t_sch;
static jsmntok_t t_sch_tok[MGOP_JSON_TOKENS_MAX];
static char t_sch_json[256 * 1024];

/* Leaves that matter only at run time, each with the test that covers it. */
static const struct { const char *path, *test; } t_field_runtime[] = {
    {"apiVersion", "the API server's (test_render_minimal)"},
    {"kind", "the API server's (test_render_minimal)"},
    {"metadata", "names: test_render_minimal; deletion-policy: test_admission, t_orphan"},
    {"status", "written by the operator: test_adopt_status, test_backup_health_verdicts"},
    /* a leading "." matches at any depth */
    {".backup.schedule", "multiadmin is asked at run time: test_backup_schedule_jitter, t_backup_contract"},
    {".backup.scheduleJitterSeconds", "test_backup_schedule_jitter, t_backup_contract"},
    {".backup.retention", "multiadmin expires backups at run time: t_backup_contract"},
    {".backup.filesystem.storage", "the backup PVC is created live, once: t_backup; RWO warning: test_backup_rwo_warning"},
    {"spec.topologyPruning", "read by the topology sync; t_topology covers pruning on (the default), not off"},
    {"spec.imageUpdatePolicy", "which default image set, against the recorded one: test_images_resolve, t_images"},
    {"spec.externalGateway.enabled", "alone (no IPs, no annotations) it shows only in status.gateway: test_exposure"},
    {"spec.externalAdminWeb.enabled", "alone (no IPs, no annotations) it shows only in status.adminWeb: test_exposure"},
    {".etcd.maintenance.defragmentationEnabled", "the loop's look at a managed etcd: test_defrag_pick, t_etcd_defrag"},
};

/* The base of leaves that only mean something beside another setting: a
 * table group's or shard's s3 location must equal its database's, and its
 * credentials replace the database's whole (useEnvCredentials drops the
 * database's Secret). */
static const char t_walk_cluster_s3[] =
    "{\"apiVersion\":\"multigres.com/v1alpha1\",\"kind\":\"MultigresCluster\",\"metadata\":{\"name\":\"w\"},"
    "\"spec\":{\"cells\":[{\"name\":\"a\",\"zone\":\"z1\"}],"
    "\"databases\":[{\"name\":\"postgres\",\"default\":true,\"backup\":{\"type\":\"s3\",\"s3\":{\"bucket\":\"walk-value\","
    "\"region\":\"walk-value\",\"credentialsSecret\":\"walk-creds\"}},\"tablegroups\":[{\"name\":\"default\",\"default\":true,\"shards\":[{\"name\":\"0-inf\"}]}]}]}}";
/* the issuer of the cluster's Certificates, which exist with internalTLS */
static const char t_walk_cluster_tls[] =
    "{\"apiVersion\":\"multigres.com/v1alpha1\",\"kind\":\"MultigresCluster\",\"metadata\":{\"name\":\"w\"},"
    "\"spec\":{\"internalTLS\":{\"enabled\":true},\"cells\":[{\"name\":\"a\",\"zone\":\"z1\"}]}}";
static const struct { const char *prefix, *base; } t_field_bases[] = {
    {"spec.issuerName", t_walk_cluster_tls},
    {"spec.databases[].tablegroups[].backup.s3", t_walk_cluster_s3},
    {"spec.databases[].tablegroups[].shards[].backup.s3", t_walk_cluster_s3},
};

/* Leaves whose only schema-valid value (CEL) is the base's own. */
static const struct { const char *path, *why; } t_field_fixed[] = {
    {"spec.databases[].name", "CEL: the only database is postgres in v1alpha1"},
    {"spec.databases[].default", "CEL: the database must be the default one"},
    {"spec.databases[].tablegroups[].default", "CEL: exactly one default table group, named default"},
    {"spec.databases[].tablegroups[].shards[].name", "CEL: the only shard is 0-inf in v1alpha1"},
};

/* Keys of one object that CEL makes exclusive: the walk, setting one,
 * drops the others the base has. */
static const struct { const char *at, *keys; } t_field_exclusive[] = {
    {"spec.globalTopoServer", " etcd external templateRef "},
    {"spec.multiadmin", " spec templateRef "},
    {"spec.multiadminWeb", " spec templateRef "},
    {"spec.cells[]", " zone zoneId region "},
};

/* Values the schema alone cannot tell (a URL, a cron line, a cell that
 * exists), by the end of the path; "|" separates candidates. */
static const struct { const char *suffix, *values; } t_field_hints[] = {
    {"tolerations[].effect", "\"NoSchedule\""},
    {"tolerations[].operator", "\"Exists\""},
    {"accessModes[]", "\"ReadWriteMany\""},
    {"cells[]", "\"b\"|\"a\""},
    {"endpoints[]", "\"https://walk-etcd:2379\"|\"http://walk-etcd2:2379\""},
    {"affinity", "{\"nodeAffinity\":{\"requiredDuringSchedulingIgnoredDuringExecution\":{\"nodeSelectorTerms\":"
                 "[{\"matchExpressions\":[{\"key\":\"walk\",\"operator\":\"Exists\"}]}]}}}"},
    {".schedule", "\"0 3 * * *\""},
    {".autoCompactionRetention", "\"2h\""}, /* not 1h, the default */
    {".metricExportInterval", "\"5000\""},
    {".otlpEndpoint", "\"http://walk-otel:4318\""},
    {".s3.endpoint", "\"http://walk-minio:9000\""},
    {"Template", "\"walk\""},
    {".templateRef", "\"walk\""},
    {".rootPath", "\"/walk\""},
    {".path", "\"/walk-backups\""},
    {".image", "\"example.com/walk:1\""},
    {"images.multigateway", "\"example.com/walk:1\""},
    {"images.multiorch", "\"example.com/walk:1\""},
    {"images.multipooler", "\"example.com/walk:1\""},
    {"images.multiadmin", "\"example.com/walk:1\""},
    {"images.multiadminWeb", "\"example.com/walk:1\""},
    {"images.postgres", "\"example.com/walk:1\""},
    {".certCommonName", "\"walk.example.com\""},
};

/* Map keys a leaf "...*" adds. */
static const char *t_field_map_key(const char *path) {
  if (strstr(path, "resources.limits") || strstr(path, "resources.requests")) return "ephemeral-storage";
  if (strstr(path, "nnotations")) return "walk.example.com/a";
  if (strstr(path, "postgresConfig")) return "work_mem";
  return "walk";
}

/* The base cluster of the walk: two cells (so a cell list can change) and
 * the one shard spelled out; the exclusive groups at their first choice. */
static const char t_walk_cluster[] =
    "{\"apiVersion\":\"multigres.com/v1alpha1\",\"kind\":\"MultigresCluster\",\"metadata\":{\"name\":\"w\"},"
    "\"spec\":{\"globalTopoServer\":{\"etcd\":{}},\"multiadmin\":{\"spec\":{}},"
    "\"cells\":[{\"name\":\"a\",\"zone\":\"z1\"},{\"name\":\"b\",\"zone\":\"z2\"}],"
    "\"databases\":[{\"name\":\"postgres\",\"default\":true,\"tablegroups\":[{\"name\":\"default\",\"default\":true,"
    "\"shards\":[{\"name\":\"0-inf\"}]}]}]}}";
/* ... and the one that resolves every template named walk */
static const char t_walk_templated[] =
    "{\"apiVersion\":\"multigres.com/v1alpha1\",\"kind\":\"MultigresCluster\",\"metadata\":{\"name\":\"w\"},"
    "\"spec\":{\"templateDefaults\":{\"coreTemplate\":\"walk\",\"cellTemplate\":\"walk\",\"shardTemplate\":\"walk\"},"
    "\"cells\":[{\"name\":\"a\",\"zone\":\"z1\"},{\"name\":\"b\",\"zone\":\"z2\"}]}}";
/* templates named walk, each unlike the built-in defaults (so naming one acts) */
static const char *const t_walk_templates[K_SHARDT + 1] = {
    [K_CORET] = "{\"apiVersion\":\"multigres.com/v1alpha1\",\"kind\":\"CoreTemplate\",\"metadata\":{\"name\":\"walk\"},"
                "\"spec\":{\"globalTopoServer\":{\"etcd\":{\"replicas\":5}},\"multiadmin\":{\"replicas\":2},"
                "\"multiadminWeb\":{\"replicas\":2}}}",
    [K_CELLT] = "{\"apiVersion\":\"multigres.com/v1alpha1\",\"kind\":\"CellTemplate\",\"metadata\":{\"name\":\"walk\"},"
                "\"spec\":{\"multigateway\":{\"replicas\":2}}}",
    [K_SHARDT] = "{\"apiVersion\":\"multigres.com/v1alpha1\",\"kind\":\"ShardTemplate\",\"metadata\":{\"name\":\"walk\"},"
                 "\"spec\":{\"multiorch\":{\"replicas\":2},\"pools\":{\"main\":{\"replicasPerCell\":2}}}}",
};

/* path is prefix or under it; a prefix starting with "." may sit at any depth. */
static int t_path_under(const char *path, const char *prefix) {
  size_t n = strlen(prefix);
  const char *at = path;
  if (prefix[0] == '.') {
    while ((at = strstr(at, prefix)) && at[n] != 0 && at[n] != '.' && at[n] != '[') at++;
    return at != NULL;
  }
  return !strncmp(path, prefix, n) && (path[n] == 0 || path[n] == '.' || path[n] == '[');
}

static int t_ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && !strcmp(s + a - b, suffix);
}

static int t_sch_is(int sch, const char *type) {
  char t[16] = "";
  mgop_json_path_str(&t_sch, sch, "type", t, sizeof(t));
  return !strcmp(t, type);
}

/* A value for a string with a pattern, by the pattern's shape. */
static const char *t_pattern_value(int sch) {
  static const struct { const char *shape, *value; } shapes[] = {
      {"ns|us", "\"7s\"|\"9s\""}, {"^[0-9a-f]*$", "\"0a1b\"|\"2c3d\""}, {"[KMGTPE]i", "\"3Gi\"|\"5Gi\""}, {"[0-9]{1,3}\\.", "\"10.1.2.3\"|\"10.1.2.4\""},
      {"[-._a-zA-Z0-9]", "\"walk\"|\"walk2\""}, {"[a-z0-9]([-a-z0-9]*[a-z0-9])?", "\"walk\"|\"walk2\""},
  };
  char pat[512];
  if (mgop_json_str(&t_sch, mgop_json_key(&t_sch, sch, "pattern"), pat, sizeof(pat))) return NULL;
  for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++)
    if (strstr(pat, shapes[i].shape)) return shapes[i].value;
  fprintf(stderr, "    field walk: no sample value for pattern %s: add its shape to t_pattern_value\n", pat);
  t_failed_checks++;
  return "\"walk\"";
}

/* Splits "v1|v2" into out; returns how many. */
static int t_split_cands(const char *v, char out[][512], int cap) {
  int n = 0;
  while (*v && n < cap) {
    size_t l = strcspn(v, "|");
    snprintf(out[n++], 512, "%.*s", (int)l, v);
    v += l + (v[l] == '|');
  }
  return n;
}

/* Candidate values of a leaf, JSON-encoded; the first is the one a
 * required field gets in a scaffold. Returns how many. */
static int t_field_cands(int sch, const char *path, char out[][512], int cap) {
  int n = 0, en = mgop_json_key(&t_sch, sch, "enum");
  long long lo = 1, hi = -1;
  for (size_t i = 0; i < sizeof(t_field_hints) / sizeof(t_field_hints[0]); i++)
    if (t_ends_with(path, t_field_hints[i].suffix)) return t_split_cands(t_field_hints[i].values, out, cap);
  if (en >= 0) {
    for (int i = 0; i < t_sch.tok[en].size && n < cap; i++) {
      struct mgop_str s = mgop_json_raw(&t_sch, mgop_json_at(&t_sch, en, i));
      snprintf(out[n++], 512, "\"%.*s\"", (int)s.n, s.p);
    }
    return n;
  }
  if (t_sch_is(sch, "boolean")) return snprintf(out[0], 512, "true"), snprintf(out[1], 512, "false"), 2;
  if (t_sch_is(sch, "integer")) {
    mgop_json_i64(&t_sch, mgop_json_key(&t_sch, sch, "minimum"), &lo);
    mgop_json_i64(&t_sch, mgop_json_key(&t_sch, sch, "maximum"), &hi);
    snprintf(out[n++], 512, "%lld", lo);
    snprintf(out[n++], 512, "%lld", lo + 2);
    if (hi > lo + 2) snprintf(out[n++], 512, "%lld", hi);
    return n;
  }
  if (t_sch_is(sch, "object")) return snprintf(out[0], 512, "{\"walk\":\"x\"}"), 1;
  if (mgop_json_key(&t_sch, sch, "anyOf") >= 0) return t_split_cands("\"3Gi\"|\"5Gi\"", out, cap);
  if (mgop_json_key(&t_sch, sch, "pattern") >= 0) return t_split_cands(t_pattern_value(sch), out, cap);
  return t_split_cands("\"walk-value\"|\"walk-other\"", out, cap);
}

static int t_sch_required(int sch, const char *key) {
  int req = mgop_json_key(&t_sch, sch, "required");
  for (int i = 0; req >= 0 && i < t_sch.tok[req].size; i++) {
    char k[64];
    if (!mgop_json_str(&t_sch, mgop_json_at(&t_sch, req, i), k, sizeof(k)) && !strcmp(k, key)) return 1;
  }
  return 0;
}

static void t_synth(struct mgop_jw *w, int sch, const char *path);

/* An object's required fields (but skip, which the caller writes). A
 * required enum that names a sibling object (backup.type: s3) picks the
 * sibling on the path (next) and brings it along. */
static void t_synth_required(struct mgop_jw *w, int sch, const char *path, const char *skip, const char *next) {
  int props = mgop_json_key(&t_sch, sch, "properties"), req = mgop_json_key(&t_sch, sch, "required");
  for (int i = 0; req >= 0 && i < t_sch.tok[req].size; i++) {
    char k[64], sub[600], pick[64] = "";
    int ps;
    mgop_json_str(&t_sch, mgop_json_at(&t_sch, req, i), k, sizeof(k));
    if (skip && !strcmp(k, skip)) continue;
    ps = mgop_json_key(&t_sch, props, k);
    snprintf(sub, sizeof(sub), "%s.%s", path, k);
    if (mgop_json_key(&t_sch, ps, "enum") >= 0) {
      int en = mgop_json_key(&t_sch, ps, "enum");
      mgop_json_str(&t_sch, mgop_json_at(&t_sch, en, 0), pick, sizeof(pick));
      for (int e = 0; next && e < t_sch.tok[en].size; e++) {
        char v[64];
        if (!mgop_json_str(&t_sch, mgop_json_at(&t_sch, en, e), v, sizeof(v)) && !strcmp(v, next))
          snprintf(pick, sizeof(pick), "%s", v);
      }
      mgop_jw_key(w, k);
      mgop_jw_str(w, pick);
      if (mgop_json_key(&t_sch, props, pick) >= 0 && (!next || strcmp(pick, next))) {
        mgop_jw_key(w, pick);
        snprintf(sub, sizeof(sub), "%s.%s", path, pick);
        t_synth(w, mgop_json_key(&t_sch, props, pick), sub);
      }
      continue;
    }
    mgop_jw_key(w, k);
    t_synth(w, ps, sub);
  }
}

/* A minimal valid value of a schema. */
static void t_synth(struct mgop_jw *w, int sch, const char *path) {
  char c[4][512];
  if (mgop_json_key(&t_sch, sch, "properties") >= 0) {
    mgop_jw_obj(w);
    t_synth_required(w, sch, path, NULL, NULL);
    mgop_jw_obj_end(w);
  } else if (t_sch_is(sch, "array")) {
    long long min = 0;
    char sub[600];
    mgop_json_i64(&t_sch, mgop_json_key(&t_sch, sch, "minItems"), &min);
    snprintf(sub, sizeof(sub), "%s[]", path);
    mgop_jw_arr(w);
    if (min > 0) t_synth(w, mgop_json_key(&t_sch, sch, "items"), sub);
    mgop_jw_arr_end(w);
  } else if (t_sch_is(sch, "object")) {
    MGOP_JW_LIT(w, "{}");
  } else {
    t_field_cands(sch, path, c, 4);
    mgop_jw_raw(w, c[0], strlen(c[0]));
  }
}

/* The path of the first n segments: "spec.cells[]". */
static void t_leaf_prefix(const struct t_leaf *lf, int n, char *out, size_t cap) {
  size_t o = 0;
  out[0] = 0;
  for (int i = 0; i < n && o < cap; i++)
    o += (size_t)snprintf(out + o, cap - o, "%s%s", i && strcmp(lf->seg[i], "[]") ? "." : "", lf->seg[i]);
}

static const char *t_exclusive_group(const char *at, const char *key) {
  char k[70];
  snprintf(k, sizeof(k), " %s ", key);
  for (size_t i = 0; i < sizeof(t_field_exclusive) / sizeof(t_field_exclusive[0]); i++)
    if (!strcmp(at, t_field_exclusive[i].at) && strstr(t_field_exclusive[i].keys, k)) return t_field_exclusive[i].keys;
  return NULL;
}

/* One edit of the walk: the scaffold (value NULL: the path exists, with
 * its required fields, the leaf only if the base or the schema needs it)
 * or the scaffold with the leaf set to value. */
struct t_edit { const struct t_leaf *lf; const char *value, *first; };

static void t_emit(struct mgop_jw *w, const struct mgop_json *j, int t, int i, const struct t_edit *e);

/* Copies an object's members but skip and, when group is set, the keys CEL
 * makes exclusive with skip. */
static void t_copy_members(struct mgop_jw *w, const struct mgop_json *j, int t, const char *skip, const char *group) {
  if (t < 0 || !mgop_json_is(j, t, JSMN_OBJECT)) return;
  for (int k = t + 1, i = 0; i < j->tok[t].size; i++, k = mgop_json_next(j, k + 1)) {
    char name[70], pad[72];
    mgop_json_str(j, k, name, sizeof(name));
    snprintf(pad, sizeof(pad), " %s ", name);
    if ((skip && !strcmp(name, skip)) || (group && strstr(group, pad))) continue;
    mgop_jw_key(w, name);
    mgop_jw_copy(w, j, k + 1);
  }
}

/* The leaf's value at its key: v, [v] for a list of scalars, or the base
 * map with one key set for a map. */
static void t_leaf_value(struct mgop_jw *w, const struct mgop_json *j, int child, const struct t_edit *e, const char *v) {
  const struct t_leaf *lf = e->lf;
  const char *tail = lf->key + 1 < lf->nseg ? lf->seg[lf->key + 1] : "";
  const char *mk = t_field_map_key(lf->path);
  if (!strcmp(tail, "[]")) mgop_jw_arr(w);
  if (!strcmp(tail, "*")) {
    mgop_jw_obj(w);
    t_copy_members(w, j, child, mk, NULL);
    mgop_jw_key(w, mk);
  }
  mgop_jw_raw(w, v, strlen(v));
  if (!strcmp(tail, "[]")) mgop_jw_arr_end(w);
  if (!strcmp(tail, "*")) mgop_jw_obj_end(w);
}

static void t_emit_object(struct mgop_jw *w, const struct mgop_json *j, int t, int i, const struct t_edit *e) {
  const struct t_leaf *lf = e->lf;
  const char *key = lf->seg[i];
  char at[512];
  int child = t >= 0 ? mgop_json_key(j, t, key) : -1;
  t_leaf_prefix(lf, i, at, sizeof(at));
  mgop_jw_obj(w);
  t_copy_members(w, j, t, key, t_exclusive_group(at, key));
  if (t < 0) t_synth_required(w, lf->sch[i], at, key, key);
  if (i != lf->key) {
    mgop_jw_key(w, key);
    t_emit(w, j, child, i + 1, e);
  } else if (e->value) {
    mgop_jw_key(w, key);
    t_leaf_value(w, j, child, e, e->value);
  } else if (child >= 0) {
    mgop_jw_key(w, key);
    mgop_jw_copy(w, j, child);
  } else if (t_sch_required(lf->sch[i], key)) {
    mgop_jw_key(w, key);
    t_leaf_value(w, j, -1, e, e->first);
  }
  mgop_jw_obj_end(w);
}

/* Writes the base value t (-1: absent) with the edit applied from depth i:
 * through a list's first element, a map's first key (or a new one). */
static void t_emit(struct mgop_jw *w, const struct mgop_json *j, int t, int i, const struct t_edit *e) {
  const char *seg = e->lf->seg[i];
  if (!strcmp(seg, "[]")) {
    int has = t >= 0 && mgop_json_is(j, t, JSMN_ARRAY) && j->tok[t].size > 0;
    mgop_jw_arr(w);
    t_emit(w, j, has ? mgop_json_at(j, t, 0) : -1, i + 1, e);
    for (int k = 1; has && k < j->tok[t].size; k++) mgop_jw_copy(w, j, mgop_json_at(j, t, k));
    mgop_jw_arr_end(w);
  } else if (!strcmp(seg, "*")) {
    int has = t >= 0 && mgop_json_is(j, t, JSMN_OBJECT) && j->tok[t].size > 0;
    char first[70] = "walk";
    if (has) mgop_json_str(j, t + 1, first, sizeof(first));
    mgop_jw_obj(w);
    mgop_jw_key(w, first);
    t_emit(w, j, has ? t + 2 : -1, i + 1, e);
    t_copy_members(w, j, t, first, NULL);
    mgop_jw_obj_end(w);
  } else {
    t_emit_object(w, j, t, i, e);
  }
}

/* Resolves and builds the documents (a cluster and templates, JSON) as
 * render does; the hash of every desired object and topology record, or
 * of the stall (*refused 1) or the error (*refused -1). */
static uint64_t t_walk_render(const char *const *docs, int n, char *msg, size_t cap, int *refused) {
  static struct mgop_rctx r;
  static char topo[64 * 1024];
  uint64_t h = MGOP_FNV64_INIT;
  int rc;
  FILE *f;
  mgop_arena_reset(&mgop_server.arena);
  mgop_arena_init(&mgop_server.arena, mgop_server.arena_mem, sizeof(mgop_server.arena_mem));
  mgop_nmanifests = 0;
  mgop_manifest_used = 0;
  mgop_render_ns = "default";
  for (int i = 0; i < n; i++) mgop_collect_manifest((void *)"walk", docs[i], strlen(docs[i]), i);
  memset(&r, 0, sizeof(r));
  r.render = 1;
  r.arena = &mgop_server.arena;
  r.ns = "default";
  r.manifests = mgop_manifests;
  r.nmanifests = mgop_nmanifests;
  r.name = mgop_manifests[0].name;
  msg[0] = 0;
  *refused = 0;
  if (mgop_parse_arena(r.arena, mgop_manifests[0].json, mgop_manifests[0].len, &r.root)) {
    *refused = -1;
    snprintf(msg, cap, "unparsable: %s", mgop_errmsg());
    return mgop_fnv1a64(h, msg, strlen(msg));
  }
  r.spec = mgop_json_key(&r.root, 0, "spec");
  rc = mgop_reconcile_tree(&r);
  if (r.stalled_reason[0] || rc) {
    *refused = r.stalled_reason[0] ? 1 : -1;
    snprintf(msg, cap, "%s: %s", r.stalled_reason, r.stalled_reason[0] ? r.stalled_msg : mgop_errmsg());
    return mgop_fnv1a64(h, msg, strlen(msg));
  }
  for (int i = 0; i < r.ndesired; i++) /* our own child resources only echo the resolved spec: not an effect */
    if (mgop_kinds[r.desired[i].kind].role == MGOP_ROLE_WORKLOAD) h = mgop_fnv1a64(h, r.desired[i].json, r.desired[i].len);
  f = fmemopen(topo, sizeof(topo), "w");
  mgop_topo_render(&r, f);
  fclose(f);
  return mgop_fnv1a64(h, topo, strnlen(topo, sizeof(topo)));
}

enum { T_ACTED, T_REFUSED, T_RUNTIME, T_FIXED, T_NONE, T_OUTCOMES };
struct t_walk {
  int count[T_OUTCOMES], walked;
  char doc[64 * 1024], scaffold[64 * 1024];
};

/* The leaf's documents: the edited one first, then the other base
 * documents (a cluster walk's templates, or a template walk's cluster). */
static int t_walk_docs(const struct t_leaf *lf, const char *edited, const char **docs) {
  int n = 0;
  docs[n++] = lf->kind == K_CLUSTER ? edited : t_walk_templated;
  for (int k = K_CORET; k <= K_SHARDT; k++) docs[n++] = k == lf->kind ? edited : t_walk_templates[k];
  return n;
}

/* Writes the leaf's edit (value NULL: the scaffold) of the base document. */
static void t_walk_edit(const struct t_leaf *lf, const char *value, const char *first, char *out, size_t cap) {
  static jsmntok_t tok[4096];
  const char *base = lf->kind == K_CLUSTER ? t_walk_cluster : t_walk_templates[lf->kind];
  struct mgop_json j;
  for (size_t i = 0; lf->kind == K_CLUSTER && i < sizeof(t_field_bases) / sizeof(t_field_bases[0]); i++)
    if (t_path_under(lf->path, t_field_bases[i].prefix)) base = t_field_bases[i].base;
  struct mgop_buf b;
  struct mgop_jw w;
  struct t_edit e = {lf, value, first};
  mgop_json_parse(&j, base, strlen(base), tok, 4096);
  mgop_buf_init(&b, out, cap);
  mgop_jw_init(&w, &b);
  t_emit(&w, &j, 0, 0, &e);
  mgop_buf_cstr(&b);
}

/* Acted on, refused naming the leaf, or neither, over every candidate. */
static int t_walk_try(const struct t_leaf *lf, struct t_walk *wk) {
  char cands[4][512], msg_s[700], msg_t[700];
  const char *docs[4];
  int n = t_field_cands(lf->sch[lf->nseg], lf->path, cands, 4), ref_s, ref_t, outcome = T_NONE;
  uint64_t hs, ht;
  t_walk_edit(lf, NULL, cands[0], wk->scaffold, sizeof(wk->scaffold));
  hs = t_walk_render(docs, t_walk_docs(lf, wk->scaffold, docs), msg_s, sizeof(msg_s), &ref_s);
  if (ref_s < 0) fprintf(stderr, "    field walk: %s: the scaffold does not render: %s\n", lf->path, msg_s);
  for (int c = 0; c < n && outcome != T_ACTED; c++) {
    t_walk_edit(lf, cands[c], cands[0], wk->doc, sizeof(wk->doc));
    if (!strcmp(wk->doc, wk->scaffold)) continue; /* the value the scaffold has */
    ht = t_walk_render(docs, t_walk_docs(lf, wk->doc, docs), msg_t, sizeof(msg_t), &ref_t);
    if (getenv("MGOP_WALK_DEBUG") && strstr(lf->path, getenv("MGOP_WALK_DEBUG")))
      fprintf(stderr, "S=%s\n  -> %d %s\nT=%s\n  -> %d %s\n", wk->scaffold, ref_s, msg_s, wk->doc, ref_t, msg_t);
    if (ht == hs) continue;
    if (ref_t == 1 && ref_s != 1 && strstr(msg_t, lf->seg[lf->key])) outcome = T_REFUSED;
    else if (ref_t == 0) outcome = T_ACTED;
    else if (getenv("MGOP_WALK_VERBOSE")) fprintf(stderr, "    field walk: %s = %s: %s\n", lf->path, cands[c], msg_t);
  }
  return outcome;
}

static int t_walk_classify(const struct t_leaf *lf, struct t_walk *wk) {
  for (size_t i = 0; i < sizeof(t_field_runtime) / sizeof(t_field_runtime[0]); i++)
    if (t_path_under(lf->path, t_field_runtime[i].path)) return T_RUNTIME;
  for (size_t i = 0; lf->kind == K_CLUSTER && i < sizeof(t_field_fixed) / sizeof(t_field_fixed[0]); i++)
    if (!strcmp(lf->path, t_field_fixed[i].path)) return T_FIXED;
  return t_walk_try(lf, wk);
}

/* One leaf: acted on, refused, or covered at run time; anything else fails. */
static void t_walk_leaf(struct t_leaf *lf, struct t_walk *wk) {
  int outcome = t_walk_classify(lf, wk);
  const char *kind = mgop_kinds[lf->kind].kind;
  wk->walked++;
  if (getenv("MGOP_WALK_VERBOSE")) fprintf(stderr, "    walk %s %s: %d\n", kind, lf->path, outcome);
  if (outcome == T_NONE)
    fprintf(stderr, "    field walk: %s %s is accepted and ignored: act on it or refuse it (or list it in "
            "t_field_runtime with the test that covers it)\n", kind, lf->path);
  CHECK(outcome != T_NONE);
  wk->count[outcome]++;
}

static void t_walk_schema(struct t_leaf *lf, int depth, struct t_walk *wk) {
  int sch = lf->sch[depth], props = mgop_json_key(&t_sch, sch, "properties");
  int addl = mgop_json_key(&t_sch, sch, "additionalProperties"), items = mgop_json_key(&t_sch, sch, "items");
  if (depth >= T_SEGS) { CHECK(!"schema deeper than T_SEGS"); return; }
  if (props >= 0) {
    for (int k = props + 1, i = 0; i < t_sch.tok[props].size; i++, k = mgop_json_next(&t_sch, k + 1)) {
      mgop_json_str(&t_sch, k, lf->seg[depth], sizeof(lf->seg[depth]));
      lf->sch[depth + 1] = k + 1;
      t_walk_schema(lf, depth + 1, wk);
    }
    return;
  }
  if ((addl >= 0 && mgop_json_is(&t_sch, addl, JSMN_OBJECT)) || items >= 0) {
    snprintf(lf->seg[depth], sizeof(lf->seg[depth]), "%s", items >= 0 ? "[]" : "*");
    lf->sch[depth + 1] = items >= 0 ? items : addl;
    t_walk_schema(lf, depth + 1, wk);
    return;
  }
  lf->nseg = depth;
  for (lf->key = depth - 1; lf->key > 0 && (!strcmp(lf->seg[lf->key], "[]") || !strcmp(lf->seg[lf->key], "*"));)
    lf->key--;
  t_leaf_prefix(lf, depth, lf->path, sizeof(lf->path));
  t_walk_leaf(lf, wk);
}

static const char *t_walk_kind;
static int t_crd_doc(void *ctx, const char *json, size_t n, int index) {
  static jsmntok_t tok[MGOP_JSON_TOKENS_MAX];
  struct mgop_json j;
  char kind[64] = "";
  (void)ctx;
  (void)index;
  if (mgop_json_parse(&j, json, n, tok, MGOP_JSON_TOKENS_MAX)) return MGOP_OK;
  mgop_json_path_str(&j, 0, "spec.names.kind", kind, sizeof(kind));
  if (strcmp(kind, t_walk_kind) || n >= sizeof(t_sch_json)) return MGOP_OK;
  memcpy(t_sch_json, json, n);
  return mgop_json_parse(&t_sch, t_sch_json, n, t_sch_tok, MGOP_JSON_TOKENS_MAX);
}

/* Loads the openAPIV3Schema of one kind from crds.yaml; its token, or -1. */
static int t_load_schema(int kind) {
  static char text[512 * 1024], scratch[512 * 1024];
  struct mgop_buf sb;
  size_t n;
  t_sch.ntok = 0;
  t_walk_kind = mgop_kinds[kind].kind;
  if (mgop_read_file("crds.yaml", text, sizeof(text), &n)) return -1;
  mgop_buf_init(&sb, scratch, sizeof(scratch));
  if (mgop_yaml_to_json_docs(text, n, &sb, t_crd_doc, NULL) || !t_sch.ntok) return -1;
  return mgop_json_path(&t_sch, 0, "spec.versions[0].schema.openAPIV3Schema");
}

static void test_field_walk(void) {
  static struct t_walk wk;
  static struct t_leaf lf;
  static const int kinds[] = {K_CLUSTER, K_CORET, K_CELLT, K_SHARDT};
  memset(&wk, 0, sizeof(wk));
  for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
    memset(&lf, 0, sizeof(lf));
    lf.kind = kinds[k];
    lf.sch[0] = t_load_schema(kinds[k]);
    CHECK(lf.sch[0] >= 0);
    if (lf.sch[0] >= 0) t_walk_schema(&lf, 0, &wk);
  }
  fprintf(stderr, "    field walk: %d leaves walked: %d acted on, %d refused, %d run-time, %d fixed by CEL, "
          "%d ignored\n", wk.walked, wk.count[T_ACTED], wk.count[T_REFUSED], wk.count[T_RUNTIME],
          wk.count[T_FIXED], wk.count[T_NONE]);
  CHECK(wk.walked > 400 && wk.count[T_ACTED] > 200);
  mgop_arena_reset(&mgop_server.arena);
}

/* multigateway.buffer: a flag for each field set, none for the others;
 * maxFailoverDuration shorter than window (set or multigateway's default)
 * is refused. Go durations are compared by value. */
static void test_gateway_buffer(void) {
  static char out[512 * 1024];
  CHECK(mgop_go_duration_ns("1500ms") == 1.5e9 && mgop_go_duration_ns("1h30m") == 5400e9);
  CHECK(mgop_go_duration_ns("2m") > mgop_go_duration_ns("90s") && mgop_go_duration_ns("1.5s") == 1.5e9);
  CHECK(mgop_go_duration_ns("10") < 0 && mgop_go_duration_ns("") < 0 && mgop_go_duration_ns("3d") < 0);
  CHECK(t_render_yaml("buffer.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: b}\n"
          "spec: {cells: [{name: a, zone: z, spec: {multigateway: {buffer: {enabled: true, window: 1500ms, "
          "maxFailoverDuration: 1m, size: 50}}}}, {name: c, zone: y}]}\n", out, sizeof(out)) == 0);
  CHECK(strstr(out, "\"--log-level=info\",\"--buffer-enabled=true\",\"--buffer-window=1500ms\","
                    "\"--buffer-max-failover-duration=1m\",\"--buffer-size=50\"]") != NULL);
  CHECK(strstr(out, "--buffer-drain-concurrency") == NULL && strstr(out, "--buffer-min-time") == NULL);
  { /* cell c sets none: its gateway has no --buffer flag */
    const char *c = strstr(out, "\"--cell=c\"");
    CHECK(c != NULL && strncmp(c, "\"--cell=c\",\"--log-level=info\"]", 30) == 0);
  }
  fprintf(stderr, "    (an expected error follows)\n");
  CHECK(t_render_yaml("buffer.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: b}\n"
          "spec: {cells: [{name: a, zone: z, spec: {multigateway: {buffer: {window: 30s}}}}]}\n", out, sizeof(out)) != 0); /* 30s window, default 20s cap */
}

/* externalGateway / externalAdminWeb: while enabled, the global Service
 * carries the externalIPs and annotations, and the status names the first
 * IP; disabled, none of it (the status member is null, so a merge patch
 * removes it, and the canonical hash takes null as absent). */
static void test_exposure(void) {
  static char out[512 * 1024], sbuf[4096];
  static struct mgop_rctx r;
  static jsmntok_t tok[256];
  struct mgop_buf b;
  struct mgop_jw w;
  CHECK(t_render_yaml("exposed.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: e}\n"
          "spec:\n  cells: [{name: a, zone: z}]\n"
          "  externalGateway: {enabled: true, externalIPs: [203.0.113.7, '2001:db8::7'], "
          "annotations: {lb.example.com/pool: edge}}\n"
          "  externalAdminWeb: {enabled: false, externalIPs: [203.0.113.8]}\n", out, sizeof(out)) == 0);
  {
    const char *gw = strstr(out, "\"kind\":\"Service\",\"metadata\":{\"name\":\"e-multigateway\""),
               *web = strstr(out, "\"kind\":\"Service\",\"metadata\":{\"name\":\"e-multiadmin-web\"");
    const char *gw_end = gw ? strstr(gw, "\n") : NULL;
    CHECK(gw != NULL && web != NULL && gw_end != NULL);
    if (gw && gw_end) {
      char obj[4096];
      snprintf(obj, sizeof(obj), "%.*s", (int)(gw_end - gw), gw);
      CHECK(strstr(obj, "\"lb.example.com/pool\":\"edge\"") != NULL);
      CHECK(strstr(obj, "\"externalIPs\":[\"203.0.113.7\",\"2001:db8::7\"]") != NULL);
    }
    CHECK(strstr(out, "203.0.113.8") == NULL); /* disabled: nothing */
  }
  {
    const char *json = "{\"spec\":{\"externalGateway\":{\"enabled\":true,\"externalIPs\":[\"203.0.113.7\"]},"
                       "\"externalAdminWeb\":{\"enabled\":false}}}";
    struct mgop_json st, live;
    jsmntok_t stok[64], ltok[16];
    mgop_rctx_clear(&r);
    CHECK(mgop_json_parse(&r.root, json, strlen(json), tok, 256) == 0);
    r.spec = mgop_json_key(&r.root, 0, "spec");
    mgop_buf_init(&b, sbuf, sizeof(sbuf));
    mgop_jw_init(&w, &b);
    mgop_jw_obj(&w);
    mgop_exposure_status(&w, &r, "externalGateway", "gateway");
    mgop_exposure_status(&w, &r, "externalAdminWeb", "adminWeb");
    mgop_jw_obj_end(&w);
    CHECK_STR(sbuf, "{\"gateway\":{\"externalEndpoint\":\"203.0.113.7\"},\"adminWeb\":null}");
    /* what the API server shows after that merge patch hashes the same */
    CHECK(mgop_json_parse(&st, sbuf, b.len, stok, 64) == 0);
    {
      static const char shown[] = "{\"gateway\":{\"externalEndpoint\":\"203.0.113.7\"}}";
      CHECK(mgop_json_parse(&live, shown, sizeof(shown) - 1, ltok, 16) == 0);
    }
    CHECK(mgop_json_canon_hash(&st, 0) == mgop_json_canon_hash(&live, 0));
  }
}

/* spec.postgresPasswordSecretRef: pool pods mount the user's Secret and key
 * as the password file; without it, the shard's own Secret, key password. */
static void test_password_ref(void) {
  static char out[512 * 1024];
  CHECK(t_render_yaml("pwref.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: p}\n"
          "spec: {cells: [{name: a, zone: z}], postgresPasswordSecretRef: {name: team-pg, key: superuser}}\n", out, sizeof(out)) == 0);
  CHECK(strstr(out, "{\"name\":\"postgres-password\",\"secret\":{\"secretName\":\"team-pg\",\"defaultMode\":292,"
                    "\"items\":[{\"key\":\"superuser\",\"path\":\"password\"}]}}") != NULL);
  CHECK(strstr(out, "-postgres-password\"") == NULL);
  CHECK(t_render_yaml("pwref.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: p}\n"
          "spec: {cells: [{name: a, zone: z}]}\n", out, sizeof(out)) == 0);
  CHECK(strstr(out, "-postgres-password\",\"defaultMode\":292,\"items\":[{\"key\":\"password\",\"path\":\"password\"}]") != NULL);
}

/* spec.observability: OTEL_* on the data-plane containers (after their own
 * entries), each field else the operator's own variable; "disabled" sets
 * none; nothing set anywhere adds nothing (no pod changes on upgrade). */
static void test_observability(void) {
  static char out[512 * 1024];
  static const char fields[] =
      "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: o}\n"
      "spec: {cells: [{name: a, zone: z}], observability: {otlpEndpoint: 'http://otel:4318', "
      "otlpMetricsEndpoint: 'http://vmagent:4318/v1/metrics', tracesSampler: parentbased_traceidratio}}\n";
  unsetenv("OTEL_METRICS_EXPORTER");
  CHECK(mgop_otel_init() == 0);
  CHECK(t_render_yaml("otel.yaml", fields, out, sizeof(out)) == 0);
  CHECK(strstr(out, "\"env\":[{\"name\":\"OTEL_EXPORTER_OTLP_ENDPOINT\",\"value\":\"http://otel:4318\"},"
                    "{\"name\":\"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT\",\"value\":\"http://vmagent:4318/v1/metrics\"},"
                    "{\"name\":\"OTEL_TRACES_SAMPLER\",\"value\":\"parentbased_traceidratio\"},"
                    "{\"name\":\"OTEL_RESOURCE_ATTRIBUTES\",\"value\":\"multigres.cluster=o,multigres.component=multigateway\"}]") != NULL);
  CHECK(strstr(out, "multigres.component=multiorch\"}]") != NULL && strstr(out, "multigres.component=pgctld\"}]") != NULL &&
        strstr(out, "multigres.component=multipooler\"}]") != NULL);
  CHECK(strstr(out, "/etc/postgres-password/password\"},{\"name\":\"OTEL_EXPORTER_OTLP_ENDPOINT\"") != NULL); /* after its own */
  CHECK(strstr(out, "multigres.component=multiadmin") == NULL);
  /* the sampling file: a ConfigMap volume, mounted where its variable says */
  CHECK(t_render_yaml("otel.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: o}\n"
          "spec: {cells: [{name: a, zone: z}], observability: {tracesSampler: multigres_custom, "
          "samplingConfigRef: {name: sampler}}}\n", out, sizeof(out)) == 0);
  CHECK(strstr(out, "{\"name\":\"OTEL_TRACES_SAMPLER_CONFIG\",\"value\":\"/etc/otel/sampling-config.yaml\"}") != NULL);
  CHECK(strstr(out, "\"volumeMounts\":[{\"name\":\"otel-sampling-config\",\"mountPath\":\"/etc/otel\",\"readOnly\":true}]") != NULL);
  CHECK(strstr(out, "\"volumes\":[{\"name\":\"otel-sampling-config\",\"configMap\":{\"name\":\"sampler\",\"items\":"
                    "[{\"key\":\"sampling-config.yaml\",\"path\":\"sampling-config.yaml\"}]}}]") != NULL); /* the gateway's only volume */
  CHECK(strstr(out, "/etc/postgres-password\",\"readOnly\":true},{\"name\":\"otel-sampling-config\"") != NULL ||
        strstr(out, ",{\"name\":\"otel-sampling-config\",\"mountPath\":\"/etc/otel\",\"readOnly\":true}]") != NULL);
  /* the operator's own variable fills a field the spec leaves unset */
  setenv("OTEL_METRICS_EXPORTER", "otlp", 1);
  CHECK(mgop_otel_init() == 0);
  CHECK(t_render_yaml("otel.yaml", fields, out, sizeof(out)) == 0);
  CHECK(strstr(out, "{\"name\":\"OTEL_METRICS_EXPORTER\",\"value\":\"otlp\"}") != NULL);
  CHECK(t_render_yaml("otel.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: o}\n"
          "spec: {cells: [{name: a, zone: z}], observability: {otlpEndpoint: disabled}}\n", out, sizeof(out)) == 0);
  CHECK(strstr(out, "OTEL_") == NULL);
  unsetenv("OTEL_METRICS_EXPORTER");
  CHECK(mgop_otel_init() == 0);
  CHECK(t_render_yaml("otel.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: o}\n"
          "spec: {cells: [{name: a, zone: z}]}\n", out, sizeof(out)) == 0);
  CHECK(strstr(out, "OTEL_") == NULL);
  {
    static char big[MGOP_OTEL_VALUE_MAX + 2];
    memset(big, 'x', sizeof(big) - 1);
    setenv("OTEL_EXPORTER_OTLP_ENDPOINT", big, 1);
    CHECK(mgop_otel_init() == 2);
    unsetenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    CHECK(mgop_otel_init() == 0);
  }
}

/* MULTI_CELL_AT_LEAST_2 over exactly two cells: one more PDB per cell
 * (minAvailable 1, the cell in its selector); three cells, or AT_LEAST_2
 * (a database's policy over the cluster's), none. */
static int t_count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
  return n;
}

static void test_cell_pdbs(void) {
  static char out[512 * 1024];
  CHECK(t_render_yaml("pdb.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: m}\n"
          "spec: {durabilityPolicy: MULTI_CELL_AT_LEAST_2, cells: [{name: a, zone: z1}, {name: b, zone: z2}]}\n", out, sizeof(out)) == 0);
  CHECK(t_count(out, "-cell-a-pdb-") == 1 && t_count(out, "-cell-b-pdb-") == 1);
  CHECK(strstr(out, "\"minAvailable\":1,\"unhealthyPodEvictionPolicy\":\"AlwaysAllow\",\"selector\":{\"matchLabels\":"
                    "{\"app.kubernetes.io/instance\":\"m\",\"app.kubernetes.io/component\":\"shard-pool\","
                    "\"multigres.com/cluster\":\"m\",\"multigres.com/cell\":\"a\"") != NULL);
  CHECK(t_render_yaml("pdb.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: m}\n"
          "spec: {durabilityPolicy: MULTI_CELL_AT_LEAST_2, cells: [{name: a, zone: z1}, {name: b, zone: z2}, "
          "{name: c, zone: z3}]}\n", out, sizeof(out)) == 0);
  CHECK(t_count(out, "-cell-a-pdb-") == 0);
  CHECK(t_render_yaml("pdb.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: m}\n"
          "spec: {durabilityPolicy: MULTI_CELL_AT_LEAST_2, cells: [{name: a, zone: z1}, {name: b, zone: z2}], "
          "databases: [{name: postgres, default: true, durabilityPolicy: AT_LEAST_2, tablegroups: [{name: default, "
          "default: true, shards: [{name: 0-inf}]}]}]}\n", out, sizeof(out)) == 0);
  CHECK(t_count(out, "-cell-a-pdb-") == 0);
}

/* postgresSuperuser reaches pgctld, multipooler and multiadmin-web
 * (POSTGRES_USER, escaped); a shard's initdbArgs reach pgctld
 * (POSTGRES_INITDB_ARGS) and nothing else. */
/* internalTLS, certCommonName, issuerName: the Certificates (names, DNS
 * names, issuer) and, on each component, its Secret volume and flags. */
static void test_render_tls(void) {
  static char out[512 * 1024];
  static const char head[] = "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: t}\n"
                             "spec:\n  cells: [{name: a, zone: z1}]\n";
  char yaml[1024];
  CHECK(t_render_yaml("tls.yaml", head, out, sizeof(out)) == 0);
  CHECK(t_count(out, "\"kind\":\"Certificate\"") == 0 && t_count(out, "--grpc-cert") == 0);
  snprintf(yaml, sizeof(yaml), "%s  internalTLS: {enabled: true}\n", head);
  CHECK(t_render_yaml("tls.yaml", yaml, out, sizeof(out)) == 0);
  CHECK(t_count(out, "\"kind\":\"Certificate\"") == 4);
  CHECK(t_count(out, "\"issuerRef\":{\"name\":\"supabase-issuer\",\"kind\":\"ClusterIssuer\",\"group\":\"cert-manager.io\"}") == 4);
  CHECK(strstr(out, "\"secretName\":\"multipooler.t.default.multigres.internal\"") != NULL);
  /* multigateway also answers to multipooler's name */
  CHECK(strstr(out, "\"dnsNames\":[\"multigateway.t.default.multigres.internal\","
                    "\"multipooler.t.default.multigres.internal\"]") != NULL);
  /* four servers; three clients of multipooler, which check its name */
  CHECK(t_count(out, "--grpc-cert=") == 4 && t_count(out, "--grpc-server-ca=") == 4);
  CHECK(t_count(out, "\"--multipooler-grpc-server-name=multipooler.t.default.multigres.internal\"") == 3);
  CHECK(strstr(out, "\"--grpc-cert=/etc/multigres/tls/tls.crt\"") && strstr(out, "\"--grpc-cert=/etc/multiadmin/tls/tls.crt\"") &&
        strstr(out, "\"--grpc-cert=/etc/multigateway/tls-internal/tls.crt\""));
  CHECK(t_count(out, "{\"name\":\"tls-certs\",\"secret\":{\"secretName\":\"multiorch.t.default.multigres.internal\","
                     "\"defaultMode\":292}}") == 1);
  CHECK(t_count(out, "--pg-tls-cert-file") == 0);
  /* the pods carry the issuance count of their certificates: not issued yet (render) counts as the first */
  CHECK(t_count(out, "\"multigres.com/tls-revision\":\"i1\"") == 4);
  snprintf(yaml, sizeof(yaml), "%s  certCommonName: db.example.com\n  issuerName: corp-ca\n", head);
  CHECK(t_render_yaml("tls.yaml", yaml, out, sizeof(out)) == 0);
  CHECK(t_count(out, "\"kind\":\"Certificate\"") == 1 && t_count(out, "--grpc-cert") == 0);
  CHECK(strstr(out, "\"secretName\":\"t-pg-tls\"") && strstr(out, "\"dnsNames\":[\"db.example.com\",\"example.com\"]") &&
        strstr(out, "\"issuerRef\":{\"name\":\"corp-ca\""));
  CHECK(t_count(out, "\"--pg-tls-cert-file=/etc/multigateway/tls/tls.crt\"") == 1);
  CHECK(t_count(out, "\"multigres.com/tls-revision\":\"p1\"") == 1 && t_count(out, "tls-revision") == 1);
  CHECK(t_count(out, "{\"name\":\"tls-certs\",\"secret\":{\"secretName\":\"t-pg-tls\",\"defaultMode\":292}}") == 1);
  /* an external global etcd with TLS: its client side on the four components that open the topology */
  CHECK(t_render_yaml("tls.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: t}\n"
                      "spec:\n  globalTopoServer: {external: {endpoints: ['https://e:2379'], caSecret: eca, "
                      "clientCertSecret: ecl}}\n  cells: [{name: a, zone: z1}]\n", out, sizeof(out)) == 0);
  CHECK(t_count(out, "\"--topo-etcd-tls-cert=/etc/multigres/topo-client-tls/tls.crt\"") == 4 &&
        t_count(out, "\"--topo-etcd-tls-key=/etc/multigres/topo-client-tls/tls.key\"") == 4 &&
        t_count(out, "\"--topo-etcd-tls-ca=/etc/multigres/topo-client-tls/ca.crt\"") == 4);
  CHECK(t_count(out, "{\"name\":\"topo-client-tls\",\"mountPath\":\"/etc/multigres/topo-client-tls\",\"readOnly\":true}") == 4);
  CHECK(t_count(out, "{\"name\":\"topo-client-tls\",\"projected\":{\"defaultMode\":292,\"sources\":[{\"secret\":"
                     "{\"name\":\"ecl\",\"items\":[{\"key\":\"tls.crt\",\"path\":\"tls.crt\"},{\"key\":\"tls.key\","
                     "\"path\":\"tls.key\"}]}},{\"secret\":{\"name\":\"eca\",\"items\":[{\"key\":\"ca.crt\","
                     "\"path\":\"ca.crt\"}]}}]}}") == 4);
  /* admission: the reference's default issuer is named when none is */
  static const char review[] =
      "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"t1\","
      "\"kind\":{\"group\":\"multigres.com\",\"version\":\"v1alpha1\",\"kind\":\"MultigresCluster\"},"
      "\"operation\":\"CREATE\",\"namespace\":\"ns\",\"userInfo\":{\"username\":\"alice\"},\"object\":"
      "{\"metadata\":{\"name\":\"t\"},\"spec\":{\"internalTLS\":{\"enabled\":true},\"cells\":[{\"name\":\"a\",\"zone\":\"z\"}]}}}}";
  mgop_arena_init(&mgop_server.arena, mgop_server.arena_mem, sizeof(mgop_server.arena_mem));
  t_admit(review, out, sizeof(out));
  CHECK(strstr(out, "\"allowed\":true") && strstr(out, "spec.issuerName is unset: the certificates come from the "
                                                       "ClusterIssuer supabase-issuer"));
  mgop_arena_reset(&mgop_server.arena);
}

/* etcd.maintenance: compaction and quota in etcd's environment, with the
 * reference's defaults when unset; the default retention follows the mode. */
static void test_etcd_maintenance(void) {
  static char out[512 * 1024];
  static const char head[] = "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: m}\n"
                             "spec:\n  cells: [{name: a, zone: z1}]\n";
  char yaml[1024];
#define T_ENV(n, v) "{\"name\":\"" n "\",\"value\":\"" v "\"}"
  CHECK(t_render_yaml("em.yaml", head, out, sizeof(out)) == 0);
  CHECK(t_count(out, T_ENV("ETCD_AUTO_COMPACTION_MODE", "periodic") "," T_ENV("ETCD_AUTO_COMPACTION_RETENTION", "1h") ","
                     T_ENV("ETCD_QUOTA_BACKEND_BYTES", "2147483648")) == 1);
  snprintf(yaml, sizeof(yaml), "%s  globalTopoServer: {etcd: {maintenance: {autoCompactionMode: revision, "
           "quotaBackendBytes: 536870912}}}\n", head);
  CHECK(t_render_yaml("em.yaml", yaml, out, sizeof(out)) == 0);
  CHECK(t_count(out, T_ENV("ETCD_AUTO_COMPACTION_MODE", "revision") "," T_ENV("ETCD_AUTO_COMPACTION_RETENTION", "10000") ","
                     T_ENV("ETCD_QUOTA_BACKEND_BYTES", "536870912")) == 1);
  fprintf(stderr, "    (an expected error follows)\n");
  snprintf(yaml, sizeof(yaml), "%s  globalTopoServer: {etcd: {maintenance: {quotaBackendBytes: 1024}}}\n", head);
  CHECK(t_render_yaml("em.yaml", yaml, out, sizeof(out)) != 0);
#undef T_ENV
}

/* postgresInitSecretsRef: the key mounted into pgctld only, named by
 * POSTGRES_INIT_SECRETS_FILE; the document's shape as pgctld reads it. */
static void test_init_secrets(void) {
  static char out[512 * 1024];
  char why[300];
  struct mgop_json j;
  static const struct { const char *doc; int ok; const char *why; } cases[] = {
      {"{}", 1, ""},
      {"{\"roles\":{\"app\":\"s3cret\",\"ro\":\"SCRAM-SHA-256$4096:abc\"},\"database_settings\":{\"postgres\":"
       "{\"work_mem\":\"8MB\",\"myext.flag\":\"on\"}},\"future\":1}", 1, ""},
      {"[]", 0, "the document is not a JSON object"},
      {"{\"roles\":[\"app\"]}", 0, "\"roles\" is not an object"},
      {"{\"roles\":{\"app\":\"\"}}", 0, "roles.app is not a non-empty string"},
      {"{\"roles\":{\"app\":5}}", 0, "roles.app is not a non-empty string"},
      {"{\"roles\":{\"admin\":\"x\"}}", 0, "roles.admin is the superuser"},
      {"{\"database_settings\":{\"postgres\":\"x\"}}", 0, "database_settings.postgres is not an object"},
      {"{\"database_settings\":{\"postgres\":{\"wrok_mem\":\"1MB\"}}}", 0, "did you mean work_mem?"},
      {"{\"database_settings\":{\"postgres\":{\"work_mem\":8}}}", 0, "database_settings.postgres.work_mem is not a string"},
  };
  mgop_arena_init(&mgop_server.arena, mgop_server.arena_mem, sizeof(mgop_server.arena_mem));
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    why[0] = 0;
    CHECK(mgop_parse_arena(&mgop_server.arena, cases[i].doc, strlen(cases[i].doc), &j) == MGOP_OK);
    CHECK(mgop_init_secrets_valid(&j, "admin", why, sizeof(why)) == cases[i].ok);
    if (!strstr(why, cases[i].why)) fprintf(stderr, "    case %zu: %s\n", i, why);
    CHECK(strstr(why, cases[i].why) != NULL);
  }
  mgop_arena_reset(&mgop_server.arena);
  CHECK(t_render_yaml("is.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: i}\n"
                      "spec:\n  postgresInitSecretsRef: {name: day0}\n  cells: [{name: a, zone: z1}]\n", out, sizeof(out)) == 0);
  CHECK(t_count(out, "{\"name\":\"postgres-init-secrets\",\"secret\":{\"secretName\":\"day0\",\"defaultMode\":292,"
                     "\"items\":[{\"key\":\"init-secrets.json\",\"path\":\"init-secrets.json\"}]}}") == 1);
  /* one pool StatefulSet: one mount and one variable, on pgctld */
  CHECK(t_count(out, "{\"name\":\"postgres-init-secrets\",\"mountPath\":\"/etc/postgres-init-secrets\",\"readOnly\":true}") == 1);
  CHECK(t_count(out, "{\"name\":\"POSTGRES_INIT_SECRETS_FILE\",\"value\":\"/etc/postgres-init-secrets/init-secrets.json\"}") == 1);
  {
    const char *ctr = strstr(out, "\"name\":\"POSTGRES_INIT_SECRETS_FILE\""), *pg = strstr(out, "\"/usr/local/bin/pgctld\"");
    const char *mp = pg ? strstr(pg, "\"name\":\"multipooler\"") : NULL;
    CHECK(ctr && pg && mp && ctr > pg && ctr < mp); /* in pgctld's container, before multipooler's */
  }
  CHECK(t_render_yaml("is.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: i}\n"
                      "spec:\n  postgresInitSecretsRef: {name: day0, key: boot.json}\n  cells: [{name: a, zone: z1}]\n",
                      out, sizeof(out)) == 0);
  CHECK(t_count(out, "\"items\":[{\"key\":\"boot.json\",\"path\":\"init-secrets.json\"}]") == 1);
}

static void test_superuser_initdb(void) {
  static char out[512 * 1024];
  CHECK(t_render_yaml("su.yaml", "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: s}\n"
          "spec:\n  postgresSuperuser: admin\n  cells: [{name: a, zone: z1}]\n  databases:\n  - name: postgres\n"
          "    default: true\n    tablegroups:\n    - name: default\n      default: true\n"
          "      shards: [{name: 0-inf, spec: {initdbArgs: '--icu-locale=\"en_US\"'}}]\n", out, sizeof(out)) == 0);
  CHECK(t_count(out, "{\"name\":\"POSTGRES_USER\",\"value\":\"admin\"}") == 3);
  CHECK(t_count(out, "{\"name\":\"POSTGRES_INITDB_ARGS\",\"value\":\"--icu-locale=\\\"en_US\\\"\"}") == 1);
  CHECK(t_count(out, "\"POSTGRES_USER\",\"value\":\"postgres\"") == 0);
}

/* postgresConfig: a ConfigMap with postgresql.conf (values single-quoted,
 * quotes doubled), included by pgctld, its hash on the pool pods; a setting
 * the data plane owns, or a name that is not one, is refused. */
static void test_postgres_config(void) {
  static char out[512 * 1024];
  char hash1[40] = "", hash2[40] = "";
  const char *h;
  static const char head[] = "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: pc}\n"
                             "spec:\n  cells: [{name: a, zone: z1}]\n  databases:\n  - name: postgres\n    default: true\n"
                             "    tablegroups:\n    - name: default\n      default: true\n      shards: [{name: 0-inf, spec: ";
  char yaml[1024];
  snprintf(yaml, sizeof(yaml), "%s{postgresConfig: {work_mem: 64MB, search_path: \"'$user', public\"}}}]\n", head);
  CHECK(t_render_yaml("pc.yaml", yaml, out, sizeof(out)) == 0);
  CHECK(strstr(out, "\"postgresql.conf\":\"work_mem = '64MB'\\nsearch_path = '''$user'', public'\\n\"") != NULL);
  CHECK(strstr(out, "{\"name\":\"POSTGRES_INITDB_EXTRA_CONF\",\"value\":\"/etc/postgres-config/postgresql.conf\"}") != NULL);
  CHECK((h = strstr(out, "\"multigres.com/postgres-config-hash\":\"")) != NULL);
  if (h) snprintf(hash1, sizeof(hash1), "%.16s", h + 37);
  snprintf(yaml, sizeof(yaml), "%s{postgresConfig: {work_mem: 128MB, search_path: \"'$user', public\"}}}]\n", head);
  CHECK(t_render_yaml("pc.yaml", yaml, out, sizeof(out)) == 0);
  CHECK((h = strstr(out, "\"multigres.com/postgres-config-hash\":\"")) != NULL);
  if (h) snprintf(hash2, sizeof(hash2), "%.16s", h + 37);
  CHECK(hash1[0] && hash2[0] && strcmp(hash1, hash2)); /* a change rolls the pods */
  fprintf(stderr, "    (expected errors follow)\n");
  snprintf(yaml, sizeof(yaml), "%s{postgresConfig: {port: \"5433\"}}}]\n", head);
  CHECK(t_render_yaml("pc.yaml", yaml, out, sizeof(out)) != 0);
  snprintf(yaml, sizeof(yaml), "%s{postgresConfig: {\"Work Mem\": 1MB}}}]\n", head);
  CHECK(t_render_yaml("pc.yaml", yaml, out, sizeof(out)) != 0);
  snprintf(yaml, sizeof(yaml), "%s{postgresConfig: {TimeZone: UTC, timezone: UTC}}}]\n", head); /* one parameter */
  CHECK(t_render_yaml("pc.yaml", yaml, out, sizeof(out)) != 0);
  snprintf(yaml, sizeof(yaml), "%s{postgresConfig: {TimeZone: UTC, pg_stat_statements.max: \"500\"}}}]\n", head);
  CHECK(t_render_yaml("pc.yaml", yaml, out, sizeof(out)) == 0);
  CHECK(strstr(out, "TimeZone = 'UTC'\\npg_stat_statements.max = '500'") != NULL);
  snprintf(yaml, sizeof(yaml), "%s{}}]\n", head); /* none: nothing of it */
  CHECK(t_render_yaml("pc.yaml", yaml, out, sizeof(out)) == 0);
  CHECK(strstr(out, "postgres-config") == NULL && strstr(out, "POSTGRES_INITDB_EXTRA_CONF") == NULL);
  /* postgresConfigRef: its key mounted and included first, postgresConfig after it (so it wins) */
  snprintf(yaml, sizeof(yaml), "%s{postgresConfigRef: {name: legacy, key: custom.conf}, postgresConfig: {work_mem: 8MB}}}]\n",
           head);
  CHECK(t_render_yaml("pc.yaml", yaml, out, sizeof(out)) == 0);
  CHECK(strstr(out, "\"postgresql.conf\":\"include '/etc/postgres-config-ref/custom.conf'\\nwork_mem = '8MB'\\n\"") != NULL);
  CHECK(strstr(out, "{\"name\":\"postgres-config-ref\",\"configMap\":{\"name\":\"legacy\",\"items\":[{\"key\":"
                    "\"custom.conf\",\"path\":\"custom.conf\"}]}}") != NULL);
  CHECK(strstr(out, "{\"name\":\"postgres-config-ref\",\"mountPath\":\"/etc/postgres-config-ref\",\"readOnly\":true}") != NULL);
  CHECK((h = strstr(out, "\"multigres.com/postgres-config-hash\":\"")) != NULL);
  if (h) snprintf(hash1, sizeof(hash1), "%.16s", h + 37);
  snprintf(yaml, sizeof(yaml), "%s{postgresConfigRef: {name: other, key: custom.conf}, postgresConfig: {work_mem: 8MB}}}]\n",
           head);
  CHECK(t_render_yaml("pc.yaml", yaml, out, sizeof(out)) == 0 && (h = strstr(out, "\"multigres.com/postgres-config-hash\":\"")));
  CHECK(h && strncmp(hash1, h + 37, 16)); /* another ConfigMap: the pods roll */
  snprintf(yaml, sizeof(yaml), "%s{postgresConfigRef: {name: legacy, key: \"a/b\"}}}]\n", head);
  CHECK(t_render_yaml("pc.yaml", yaml, out, sizeof(out)) != 0); /* not a ConfigMap key */
}

/* Every pool pod runs postgres_exporter on :9187 (where the scrape
 * annotations point) with the shard's queries ConfigMap; the image is the
 * operator's, from MULTIGRES_IMAGE_POSTGRES_EXPORTER, and not in the revision. */
static void test_exporter_sidecar(void) {
  static char out[512 * 1024];
  const char *files[] = {"config/samples/minimal.yaml"};
  char rev[MGOP_IMG_REV_LEN + 1];
  unsetenv("MULTIGRES_IMAGE_POSTGRES_EXPORTER");
  CHECK(mgop_img_defaults_init() == 0);
  snprintf(rev, sizeof(rev), "%s", mgop_img_defaults.rev);
  CHECK(t_render(files, 1, out, sizeof(out)) == 0);
  CHECK(t_count(out, "{\"name\":\"postgres-exporter\",\"image\":\"" MGOP_IMAGE_POSTGRES_EXPORTER "\"") == 1);
  CHECK(strstr(out, "\"args\":[\"--web.listen-address=:9187\",\"--extend.query-path=/etc/postgres-exporter/queries.yml\"]") != NULL);
  CHECK(strstr(out, "{\"name\":\"DATA_SOURCE_USER\",\"value\":\"postgres\"},"
                    "{\"name\":\"DATA_SOURCE_PASS_FILE\",\"value\":\"/etc/postgres-password/password\"}") != NULL);
  CHECK(strstr(out, "\"ports\":[{\"name\":\"metrics\",\"containerPort\":9187,\"protocol\":\"TCP\"}]") != NULL);
  CHECK(strstr(out, "\"prometheus.io/port\":\"9187\"") != NULL);
  CHECK(strstr(out, "{\"name\":\"postgres-exporter-queries\",\"configMap\":{\"name\":"
                    "\"minimal-postgres-default-0-inf-1e3c045c-exporter-queries\"}}") != NULL);
  CHECK(strstr(out, "\"queries.yml\":\"# postgres_exporter custom queries") != NULL);
  CHECK(strstr(out, "multigres_replication:\\n") && strstr(out, "multigres_wal:\\n") &&
        strstr(out, "multigres_connections:\\n") && strstr(out, "multigres_database:\\n"));
  setenv("MULTIGRES_IMAGE_POSTGRES_EXPORTER", " mirror.example/pe:v1 ", 1);
  CHECK(mgop_img_defaults_init() == 0);
  CHECK_STR(mgop_img_defaults.rev, rev); /* not one of the set's components */
  CHECK(t_render(files, 1, out, sizeof(out)) == 0);
  CHECK(strstr(out, "{\"name\":\"postgres-exporter\",\"image\":\"mirror.example/pe:v1\"") != NULL);
  unsetenv("MULTIGRES_IMAGE_POSTGRES_EXPORTER");
  CHECK(mgop_img_defaults_init() == 0);
}

/* pgctld is a native sidecar (an init container that always restarts), and
 * the pool's identity is postgres's runAsUser/runAsGroup, multipooler's equal
 * to it or refused. */
static void test_pool_pod_shape(void) {
  static char out[512 * 1024];
  static const char head[] = "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: id}\n"
                             "spec:\n  cells: [{name: a, zone: z1}]\n  databases:\n  - name: postgres\n    default: true\n"
                             "    tablegroups:\n    - name: default\n      default: true\n      shards: [{name: 0-inf, spec: "
                             "{pools: {p: {type: readWrite, ";
  char yaml[1024];
  snprintf(yaml, sizeof(yaml), "%s}}}}]\n", head);
  CHECK(t_render_yaml("id.yaml", yaml, out, sizeof(out)) == 0);
  CHECK(strstr(out, "\"initContainers\":[{\"name\":\"postgres\",\"image\":\"" MGOP_IMAGE_PGCTLD "\",\"restartPolicy\":\"Always\"") != NULL);
  CHECK(strstr(out, "\"containers\":[{\"name\":\"multipooler\"") != NULL);
  CHECK(t_count(out, "\"securityContext\":{\"runAsNonRoot\":true,\"runAsUser\":999,\"runAsGroup\":999}") == 3);
  snprintf(yaml, sizeof(yaml), "%spostgres: {runAsUser: 26, runAsGroup: 27}}}}}]\n", head);
  CHECK(t_render_yaml("id.yaml", yaml, out, sizeof(out)) == 0);
  CHECK(t_count(out, "\"securityContext\":{\"runAsNonRoot\":true,\"runAsUser\":26,\"runAsGroup\":27}") == 2);
  fprintf(stderr, "    (an expected error follows)\n");
  snprintf(yaml, sizeof(yaml), "%spostgres: {runAsUser: 26}, multipooler: {runAsUser: 999}}}}}]\n", head);
  CHECK(t_render_yaml("id.yaml", yaml, out, sizeof(out)) != 0);
}

/* postgresConfig names against PostgreSQL 17's own catalog: case-insensitive,
 * extensions' dotted names pass, unknown ones are refused with the nearest. */
static void test_pg_param_check(void) {
  char msg[300];
  size_t n = sizeof(mgop_pg17_params) / sizeof(mgop_pg17_params[0]);
  CHECK(n > 300);
  for (size_t i = 1; i < n; i++) CHECK(strcmp(mgop_pg17_params[i - 1], mgop_pg17_params[i]) < 0); /* bsearch */
  CHECK(mgop_pg_param_check("work_mem", msg, sizeof(msg)) == 0);
  CHECK(mgop_pg_param_check("TimeZone", msg, sizeof(msg)) == 0);
  CHECK(mgop_pg_param_check("summarize_wal", msg, sizeof(msg)) == 0);          /* new in 17 */
  CHECK(mgop_pg_param_check("debug_parallel_query", msg, sizeof(msg)) == 0);   /* a developer option */
  CHECK(mgop_pg_param_check("pg_stat_statements.track", msg, sizeof(msg)) == 0);
  CHECK(mgop_pg_param_check("work_men", msg, sizeof(msg)) != 0);
  CHECK(strstr(msg, "work_men is not a PostgreSQL 17 parameter") && strstr(msg, "did you mean work_mem?"));
  CHECK(mgop_pg_param_check("old_snapshot_threshold", msg, sizeof(msg)) != 0); /* removed in 17 */
  CHECK(mgop_pg_param_check("server_version", msg, sizeof(msg)) != 0);         /* internal: not settable */
  CHECK(mgop_pg_param_check("zzzzzzzz", msg, sizeof(msg)) != 0 && !strstr(msg, "did you mean"));
  CHECK(mgop_pg_param_check("Port", msg, sizeof(msg)) != 0 && strstr(msg, "set by the data plane"));
  CHECK(mgop_pg_param_check("work mem", msg, sizeof(msg)) != 0 && strstr(msg, "not a PostgreSQL parameter name"));
  CHECK(mgop_pg_param_check("", msg, sizeof(msg)) != 0);
  CHECK(mgop_edit_distance("kitten", "sitting") == 3 && mgop_edit_distance("", "abc") == 3);
  CHECK(mgop_edit_distance("same", "same") == 0);
  { /* a ShardTemplate is checked on its own, before any cluster uses it */
    static char out[16 * 1024];
    t_admit("{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"p1\","
            "\"kind\":{\"group\":\"multigres.com\",\"version\":\"v1alpha1\",\"kind\":\"ShardTemplate\"},"
            "\"operation\":\"CREATE\",\"namespace\":\"ns\",\"userInfo\":{\"username\":\"alice\"},\"object\":"
            "{\"metadata\":{\"name\":\"t\"},\"spec\":{\"postgresConfig\":{\"work_mem\":\"4MB\",\"shared_bufers\":\"1GB\"}}}}}",
            out, sizeof(out));
    CHECK(strstr(out, "\"allowed\":false") != NULL);
    CHECK(strstr(out, "spec.postgresConfig: shared_bufers is not a PostgreSQL 17 parameter") != NULL);
    CHECK(strstr(out, "did you mean shared_buffers?") != NULL);
  }
}

/* The fields Multigres cannot honour are refused, at admission and in
 * render, naming the field: a cell's metadata (no place in the Cell
 * record), a readOnly pool (no read-only pooler), a cell's external etcd
 * TLS other than the global topology's (one TLS set-up per process). The
 * same Secrets as the global's are accepted and mounted once. */
static void test_field_refusals(void) {
#define T_UREVIEW(kind, op, obj)                                                                             \
  "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"w1\","     \
  "\"kind\":{\"group\":\"multigres.com\",\"version\":\"v1alpha1\",\"kind\":\"" kind "\"},\"operation\":\"" \
  op "\",\"namespace\":\"ns\",\"userInfo\":{\"username\":\"alice\"},\"object\":" obj "}}"
  static char out[512 * 1024];
  static const char meta[] = T_UREVIEW("MultigresCluster", "CREATE",
      "{\"metadata\":{\"name\":\"c\"},\"spec\":{\"cells\":[{\"name\":\"a\",\"zone\":\"z\"},{\"name\":\"b\",\"zone\":\"y\","
      "\"metadata\":\"rack 7\"}]}}");
  static const char read_only[] = T_UREVIEW("ShardTemplate", "CREATE",
      "{\"metadata\":{\"name\":\"t\"},\"spec\":{\"pools\":{\"p\":{\"type\":\"readWrite\"},\"q\":{\"type\":\"readOnly\"}}}}");
  static const char read_write[] = T_UREVIEW("ShardTemplate", "UPDATE",
      "{\"metadata\":{\"name\":\"t\"},\"spec\":{\"postgresConfig\":{\"work_mem\":\"64MB\"},\"pools\":{\"p\":"
      "{\"type\":\"readWrite\",\"fsGroup\":999}},\"initdbArgs\":\"--data-checksums\"}}");
  static const char defrag[] = T_UREVIEW("MultigresCluster", "CREATE",
      "{\"metadata\":{\"name\":\"c\"},\"spec\":{\"globalTopoServer\":{\"etcd\":{\"maintenance\":{\"defragmentationEnabled\":true}}},"
      "\"cells\":[{\"name\":\"a\",\"zone\":\"z\"}]}}");
  static const char ext_tls[] =
      "apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: x}\n"
      "spec:\n  globalTopoServer: {external: {endpoints: ['https://g:2379'], caSecret: %s, clientCertSecret: gcl}}\n"
      "  cells: [{name: a, zone: z, spec: {localTopoServer: {external: {endpoints: ['https://e:2379'], caSecret: %s}}}}]\n";
  char doc[1024];
  mgop_arena_init(&mgop_server.arena, mgop_server.arena_mem, sizeof(mgop_server.arena_mem));
  t_admit(meta, out, sizeof(out));
  CHECK(strstr(out, "\"allowed\":false") != NULL && strstr(out, "spec.cells[name=b].metadata is set") != NULL);
  t_admit(read_only, out, sizeof(out));
  CHECK(strstr(out, "\"allowed\":false") != NULL && strstr(out, "spec.pools.q.type is \\\"readOnly\\\"") != NULL);
  t_admit(read_write, out, sizeof(out)); /* readWrite, fsGroup, initdbArgs, postgresConfig: admitted, no warning */
  CHECK(strstr(out, "\"allowed\":true") != NULL && strstr(out, "warnings") == NULL);
  t_admit(defrag, out, sizeof(out)); /* acted on at run time: admitted without a warning */
  CHECK(strstr(out, "\"allowed\":true") != NULL && strstr(out, "warnings") == NULL);
  fprintf(stderr, "    (an expected error follows)\n");
  snprintf(doc, sizeof(doc), ext_tls, "gca", "other-ca");
  CHECK(t_render_yaml("celltls.yaml", doc, out, sizeof(out)) != 0);
  snprintf(doc, sizeof(doc), ext_tls, "gca", "gca"); /* the global's own Secret: mounted once, flags once */
  CHECK(t_render_yaml("celltls.yaml", doc, out, sizeof(out)) == 0);
  CHECK(strstr(out, "--topo-etcd-tls-ca=/etc/multigres/topo-client-tls/ca.crt") != NULL);
  CHECK(strstr(out, "\"name\":\"gca\"") != NULL && strstr(out, "other-ca") == NULL);
  mgop_arena_reset(&mgop_server.arena);
#undef T_UREVIEW
}

/* etcd's maintenance answers (as etcd 3.5 writes them) and the pick: the
 * gate (every member answered, one leader) and followers before the
 * leader, the most free space first, half free and 8 MiB at least. */
static void test_defrag_pick(void) {
  static struct mgop_defrag_view v;
  static const char status[] = "{\"header\":{\"cluster_id\":\"1\",\"member_id\":\"11975791918105126159\",\"revision\":\"1\"},"
      "\"version\":\"3.5.35\",\"dbSize\":\"22503424\",\"leader\":\"11706740456508220416\",\"raftIndex\":\"8\","
      "\"dbSizeInUse\":\"16384\",\"errors\":[\"memberID:1 alarm:NOSPACE\"]}";
  static const char members[] = "{\"header\":{\"member_id\":\"1\"},\"members\":[{\"ID\":\"3465089203331334342\",\"name\":\"m3\","
      "\"peerURLs\":[\"http://127.0.0.1:23103\"],\"clientURLs\":[\"http://127.0.0.1:23003\"]},{\"ID\":\"7\",\"name\":\"m4\"}]}";
  struct mgop_etcd_status st;
  char why[300];
  int deferred;
  CHECK(mgop_etcd_parse_status(status, sizeof(status) - 1, &st) == MGOP_OK);
  CHECK(st.db_size == 22503424 && st.db_in_use == 16384 && st.alarms == 1);
  CHECK(st.member_id == 11975791918105126159ULL && st.leader == 11706740456508220416ULL);
  CHECK(mgop_etcd_parse_status("{\"dbSize\":\"-5\"}", 15, &st) != MGOP_OK);
  CHECK(mgop_etcd_parse_members(members, sizeof(members) - 1, &v.m) == MGOP_OK);
  CHECK(v.m.n == 2 && !strcmp(v.m.name[0], "m3") && !strcmp(v.m.url[0], "http://127.0.0.1:23003"));
  CHECK(v.m.id[0] == 3465089203331334342ULL && v.m.url[1][0] == 0); /* not started: no client URL */
  /* three members: 1 the leader (30 MiB free of 40), 2 (20 of 30), 3 (1 of 30) */
  memset(&v, 0, sizeof(v));
  v.m.n = 3;
  for (int i = 0; i < 3; i++) snprintf(v.m.name[i], sizeof(v.m.name[i]), "m%d", i + 1);
  v.st[0] = (struct mgop_etcd_status){40 << 20, 10 << 20, 1, 1, 0};
  v.st[1] = (struct mgop_etcd_status){30 << 20, 10 << 20, 2, 1, 0};
  v.st[2] = (struct mgop_etcd_status){30 << 20, 29 << 20, 3, 1, 0};
  CHECK(mgop_defrag_pick(&v, &deferred, why, sizeof(why)) == 1 && !deferred); /* a follower before the leader */
  v.st[1].db_in_use = 20 << 20;                                               /* m2: a third free, not half */
  CHECK(mgop_defrag_pick(&v, &deferred, why, sizeof(why)) == 0 && !deferred); /* then the leader */
  v.st[0].db_in_use = 33 << 20;                                               /* m1: 7 MiB free, under 8 */
  CHECK(mgop_defrag_pick(&v, &deferred, why, sizeof(why)) == -1 && !deferred && strstr(why, "8 MiB") != NULL);
  v.st[0].db_in_use = 1 << 20;
  snprintf(v.err[2], sizeof(v.err[2]), "connection refused");                 /* the gate: one did not answer */
  CHECK(mgop_defrag_pick(&v, &deferred, why, sizeof(why)) == -1 && deferred && strstr(why, "member m3 did not answer") != NULL);
  v.err[2][0] = 0;
  v.st[2].leader = 3;                                                          /* two leaders named */
  CHECK(mgop_defrag_pick(&v, &deferred, why, sizeof(why)) == -1 && deferred && strstr(why, "different leaders") != NULL);
  v.st[2].leader = 0;
  CHECK(mgop_defrag_pick(&v, &deferred, why, sizeof(why)) == -1 && deferred && strstr(why, "knows no leader") != NULL);
}

/* Image sets: the revision is the reference operator's (vectors computed
 * apart, with Python's hashlib over the sorted name=image lines), and the
 * lazy strategy holds a cluster on its recorded set until acknowledged. */
static int t_img_cluster(struct mgop_rctx *r, const char *json) {
  static jsmntok_t tok[512];
  mgop_rctx_clear(r);
  r->ns = "ns";
  r->name = "c";
  if (mgop_json_parse(&r->root, json, strlen(json), tok, 512)) return -1;
  r->spec = mgop_json_key(&r->root, 0, "spec");
  mgop_images_resolve(r);
  return 0;
}

static void test_images_resolve(void) {
  static struct mgop_rctx r;
  static char json[8192];
  char img[MGOP_IMAGE_BUF];
  const char *old_rec = "{\\\"multiadmin\\\":\\\"a:1\\\",\\\"multiadminWeb\\\":\\\"w:1\\\",\\\"multigateway\\\":\\\"g:1\\\","
                        "\\\"multiorch\\\":\\\"o:1\\\",\\\"multipooler\\\":\\\"p:1\\\",\\\"postgres\\\":\\\"pg:1\\\"}";
  struct mgop_img_set old;
  char old_rev[MGOP_IMG_REV_LEN + 1];
  unsetenv("MULTIGRES_IMAGE_MULTIGATEWAY");
  CHECK(mgop_img_defaults_init() == 0);
  CHECK_STR(mgop_img_defaults.rev, "7c6a2df2f184"); /* the built-in set */
  setenv("MULTIGRES_IMAGE_MULTIGATEWAY", "  example.com/gw:b \n", 1);
  CHECK(mgop_img_defaults_init() == 0);
  CHECK_STR(mgop_img_defaults.set.img[MGOP_IMG_MULTIGATEWAY], "example.com/gw:b"); /* trimmed */
  CHECK_STR(mgop_img_defaults.rev, "6237b7149d31");
  {
    static char big[MGOP_CRD_IMAGE_MAX + 2];
    memset(big, 'x', sizeof(big) - 1);
    setenv("MULTIGRES_IMAGE_MULTIGATEWAY", big, 1);
    CHECK(mgop_img_defaults_init() == 2); /* named on stderr, never cut */
    setenv("MULTIGRES_IMAGE_MULTIGATEWAY", "example.com/gw:b", 1);
    CHECK(mgop_img_defaults_init() == 0);
  }
  for (int i = 0; i < MGOP_IMG_COUNT; i++) snprintf(old.img[i], MGOP_IMAGE_BUF, "%s", "");
  snprintf(old.img[MGOP_IMG_MULTIADMIN], MGOP_IMAGE_BUF, "a:1");
  snprintf(old.img[MGOP_IMG_MULTIADMIN_WEB], MGOP_IMAGE_BUF, "w:1");
  snprintf(old.img[MGOP_IMG_MULTIGATEWAY], MGOP_IMAGE_BUF, "g:1");
  snprintf(old.img[MGOP_IMG_MULTIORCH], MGOP_IMAGE_BUF, "o:1");
  snprintf(old.img[MGOP_IMG_MULTIPOOLER], MGOP_IMAGE_BUF, "p:1");
  snprintf(old.img[MGOP_IMG_POSTGRES], MGOP_IMAGE_BUF, "pg:1");
  mgop_img_revision(&old, old_rev);

  /* a new cluster adopts the defaults and must record them */
  CHECK(t_img_cluster(&r, "{\"metadata\":{},\"spec\":{\"imageUpdatePolicy\":{\"strategy\":\"lazy\"}}}") == 0);
  CHECK(r.img.lazy && !r.img.pending && r.img.record_stale && !r.img.recorded);
  CHECK_STR(r.img.applied_rev, mgop_img_defaults.rev);
  CHECK_STR(mgop_image(&r, MGOP_IMG_MULTIGATEWAY, img, sizeof(img)), "example.com/gw:b");
  /* lazy, recorded older set, nothing acknowledged: held, children keep it */
  snprintf(json, sizeof(json), "{\"metadata\":{\"annotations\":{\"multigres.com/applied-images\":\"%s\"}},"
           "\"spec\":{\"imageUpdatePolicy\":{\"strategy\":\"lazy\"},\"images\":{\"postgres\":\"mine:9\"}}}", old_rec);
  CHECK(t_img_cluster(&r, json) == 0);
  CHECK(r.img.recorded == 1 && !r.img.record_stale && r.img.pinned == 1u << MGOP_IMG_POSTGRES);
  CHECK(r.img.pending && !strcmp(r.img.pending, "AwaitingAcknowledgement"));
  CHECK_STR(r.img.applied_rev, old_rev);
  CHECK_STR(mgop_image(&r, MGOP_IMG_MULTIGATEWAY, img, sizeof(img)), "g:1");
  CHECK_STR(mgop_image(&r, MGOP_IMG_POSTGRES, img, sizeof(img)), "mine:9"); /* a pin always wins */
  /* a wrong acknowledgement changes nothing and says so */
  snprintf(json, sizeof(json), "{\"metadata\":{\"annotations\":{\"multigres.com/applied-images\":\"%s\"}},"
           "\"spec\":{\"imageUpdatePolicy\":{\"strategy\":\"lazy\",\"acknowledgedRevision\":\"abcdef012345\"}}}", old_rec);
  CHECK(t_img_cluster(&r, json) == 0);
  CHECK(r.img.pending && !strcmp(r.img.pending, "RevisionMismatch"));
  CHECK_STR(mgop_image(&r, MGOP_IMG_MULTIGATEWAY, img, sizeof(img)), "g:1");
  /* the available revision acknowledged: adopted, the record rewritten */
  snprintf(json, sizeof(json), "{\"metadata\":{\"annotations\":{\"multigres.com/applied-images\":\"%s\"}},"
           "\"spec\":{\"imageUpdatePolicy\":{\"strategy\":\"lazy\",\"acknowledgedRevision\":\"%s\"}}}", old_rec,
           mgop_img_defaults.rev);
  CHECK(t_img_cluster(&r, json) == 0);
  CHECK(!r.img.pending && r.img.record_stale);
  CHECK_STR(mgop_image(&r, MGOP_IMG_MULTIGATEWAY, img, sizeof(img)), "example.com/gw:b");
  /* immediate (the operator's default here) ignores the record */
  snprintf(json, sizeof(json), "{\"metadata\":{\"annotations\":{\"multigres.com/applied-images\":\"%s\"}},\"spec\":{}}",
           old_rec);
  CHECK(t_img_cluster(&r, json) == 0);
  CHECK(!r.img.lazy && !r.img.pending && r.img.record_stale);
  CHECK_STR(mgop_image(&r, MGOP_IMG_MULTIORCH, img, sizeof(img)), MGOP_IMAGE_MULTIGRES);
  /* --image-update-strategy lazy is the default a cluster may override */
  mgop_img_defaults.lazy = 1;
  CHECK(t_img_cluster(&r, json) == 0);
  CHECK(r.img.lazy && r.img.pending);
  mgop_img_defaults.lazy = 0;
  /* an incomplete annotation is not trusted: status.images.applied is the fallback */
  {
    char st[512];
    size_t o = 0;
    for (const char *p = old_rec; *p; p++) if (*p != '\\') st[o++] = *p; /* unescaped: an object, not a string */
    st[o] = 0;
    snprintf(json, sizeof(json), "{\"metadata\":{\"annotations\":{\"multigres.com/applied-images\":\"{\\\"multiadmin\\\":\\\"a:1\\\"}\"}},"
             "\"spec\":{\"imageUpdatePolicy\":{\"strategy\":\"lazy\"}},\"status\":{\"images\":{\"applied\":%s}}}", st);
  }
  CHECK(t_img_cluster(&r, json) == 0);
  CHECK(r.img.record_invalid && r.img.recorded == 2 && r.img.pending && r.img.record_stale);
  CHECK_STR(mgop_image(&r, MGOP_IMG_MULTIPOOLER, img, sizeof(img)), "p:1");
  /* no usable record at all: the defaults (nothing to hold) */
  CHECK(t_img_cluster(&r, "{\"metadata\":{\"annotations\":{\"multigres.com/applied-images\":\"junk\"}},"
                          "\"spec\":{\"imageUpdatePolicy\":{\"strategy\":\"lazy\"}}}") == 0);
  CHECK(r.img.record_invalid && !r.img.recorded && !r.img.pending);
  unsetenv("MULTIGRES_IMAGE_MULTIGATEWAY");
  CHECK(mgop_img_defaults_init() == 0 && !strcmp(mgop_img_defaults.rev, "7c6a2df2f184"));
  mgop_img_defaults.from_env = 0;
}

/* Every flag the parser takes is in --help and in docs/operations.md. */
static void test_flags_documented(void) {
  static char doc[256 * 1024];
  size_t n;
  char name[80];
  CHECK(mgop_read_file("docs/operations.md", doc, sizeof(doc) - 1, &n) == 0);
  doc[n] = 0;
  for (size_t i = 0; i < sizeof(mgop_flags) / sizeof(mgop_flags[0]); i++) {
    snprintf(name, sizeof(name), "--%s", mgop_flags[i].name);
    if (!strstr(mgop_usage, name)) fprintf(stderr, "    --help lacks %s\n", name);
    if (!strstr(doc, name)) fprintf(stderr, "    docs/operations.md lacks %s\n", name);
    CHECK(strstr(mgop_usage, name) != NULL && strstr(doc, name) != NULL);
  }
}

static void test_pki_round_trip(void);
static void test_pki_san_ip_eku(void);
static void test_pki_renewal(void);
static void test_http_request_parser(void);
static void test_http_request_authorization(void);
static void test_srv_listen_addresses(void);
static void test_srv_https_swap(void);
static void test_srv_plain(void);
static void test_srv_pool(void);
static void test_pb_varint_golden(void);
static void test_pb_decode(void);
static void test_b64(void);
static void test_topo_records_golden(void);
static void test_pooler_roles(void);
static void test_topo_records_keep_unknown(void);
static void test_etcd_responses(void);
static void test_etcd_unreachable_endpoints(void);
static void test_pooler_record(void);
static void test_roll_order(void);
static void test_roll_waits(void);
static void test_roll_observed(void);
static void test_tls_heap_bound(void);
static void test_tls_heap_cache(void);
static void test_tls_ticket_wait(void);
static void test_drain_steps(void);

struct t_case { const char *name; void (*fn)(void); };
static const struct t_case t_cases[] = {
    {"chunked_whole", test_chunked_whole},
    {"orphan_patches", test_orphan_patches},
    {"orphan_compat", test_orphan_compat},
    {"chunked_bytewise", test_chunked_bytewise},
    {"chunked_random_splits", test_chunked_random_splits},
    {"chunked_errors", test_chunked_errors},
    {"lines", test_lines},
    {"list_scan_splits", test_list_scan_splits},
    {"list_scan_errors", test_list_scan_errors},
    {"drop_managed_fields", test_drop_managed_fields},
    {"http_head", test_http_head},
    {"json_accessors", test_json_accessors},
    {"json_malformed", test_json_malformed},
    {"json_writer", test_json_writer},
    {"json_merge", test_json_merge},
    {"resolver_chain", test_resolver_chain},
    {"resolver_errors", test_resolver_errors},
    {"admission", test_admission},
    {"admission_cache", test_admission_cache},
    {"field_walk", test_field_walk},
    {"field_refusals", test_field_refusals},
    {"defrag_pick", test_defrag_pick},
    {"abort_and_write_gate", test_abort_and_write_gate},
    {"limits_images", test_limits_images},
    {"limits_fifty_cells", test_limits_fifty_cells},
    {"limits_largest_tree", test_limits_largest_tree},
    {"limits_metric_labels", test_limits_metric_labels},
    {"limits_cluster_table", test_limits_cluster_table},
    {"metric_series", test_metric_series},
    {"metric_series_sweep", test_metric_series_sweep},
    {"template_own_echo", test_template_own_echo},
    {"quantity", test_quantity},
    {"storage_growth", test_storage_growth},
    {"admission_storage", test_admission_storage},
    {"relist_sweeps", test_relist_sweeps},
    {"orphan_filter", test_orphan_filter},
    {"unschedulable_pods", test_unschedulable_pods},
    {"cell_zone_warnings", test_cell_zone_warnings},
    {"fnv", test_fnv},
    {"kubeconfig_inline_certs", test_kubeconfig_inline_certs},
    {"kubeconfig_files_token_context", test_kubeconfig_files_token_context},
    {"kubeconfig_errors", test_kubeconfig_errors},
    {"in_cluster", test_in_cluster},
    {"url_parse", test_url_parse},
    {"fake_list_pages_and_watch_410", test_fake_list_pages_and_watch_410},
    {"fake_list_beyond_token_bound", test_fake_list_beyond_token_bound},
    {"fake_list_failed_page", test_fake_list_failed_page},
    {"fake_truncated_and_429", test_fake_truncated_and_429},
    {"fake_overlong_event_relists", test_fake_overlong_event_relists},
    {"fake_watch_silent_past_timeout", test_fake_watch_silent_past_timeout},
    {"fake_watch_honours_retry_after", test_fake_watch_honours_retry_after},
    {"fake_watch_shared_list_conn", test_fake_watch_shared_list_conn},
    {"crd_read_pipelined", test_crd_read_pipelined},
    {"apply_pool", test_apply_pool},
    {"list_many", test_list_many},
    {"dns_deadline", test_dns_deadline},
    {"ip_san_matcher", test_ip_san_matcher},
    {"tls_verification", test_tls_verification},
    {"tls_ip_san", test_tls_ip_san},
    {"tls_rsa_and_versions", test_tls_rsa_and_versions},
    {"tls_client_key_share", test_tls_client_key_share},
    {"names", test_names},
    {"fake_apply_answer", test_fake_apply_answer},
    {"fp_table", test_fp_table},
    {"apply_result_created_workload", test_apply_result_created_workload},
    {"recheck_backoff", test_recheck_backoff},
    {"own_echo", test_own_echo},
    {"fake_delete_statuses", test_fake_delete_statuses},
    {"json_canon_hash", test_json_canon_hash},
    {"adopt_status", test_adopt_status},
    {"prune_owner_depth", test_prune_owner_depth},
    {"work_set", test_work_set},
    {"work_index", test_work_index},
    {"render_minimal", test_render_minimal},
    {"render_defaults_and_errors", test_render_defaults_and_errors},
    {"backup_builtin_default", test_backup_builtin_default},
    {"backup_chain_filesystem", test_backup_chain_filesystem},
    {"backup_chain_s3", test_backup_chain_s3},
    {"backup_location_conflict", test_backup_location_conflict},
    {"backup_rwo_warning", test_backup_rwo_warning},
    {"backup_peer_certificate", test_backup_peer_certificate},
    {"rfc3339", test_rfc3339},
    {"multiadmin_parse_backups", test_multiadmin_parse_backups},
    {"backup_health_verdicts", test_backup_health_verdicts},
    {"backup_tick", test_backup_tick},
    {"backup_gate", test_backup_gate},
    {"status_batch_fault", test_status_batch_fault},
    {"status_batch_event_root", test_status_batch_event_root},
    {"turn_root_kept", test_turn_root_kept},
    {"backup_adopt", test_backup_adopt},
    {"http_call_plain", test_http_call_plain},
    {"http_request_authorization", test_http_request_authorization},
    {"traceparent", test_traceparent},
    {"trace_config", test_trace_config},
    {"trace_export", test_trace_export},
    {"trace_sampler_and_attrs", test_trace_sampler_and_attrs},
    {"cron_parse", test_cron_parse},
    {"cron_next", test_cron_next},
    {"backup_schedule_jitter", test_backup_schedule_jitter},
    {"yaml_to_json", test_yaml_to_json},
    {"flags", test_flags},
    {"flags_documented", test_flags_documented},
    {"images_resolve", test_images_resolve},
    {"gateway_buffer", test_gateway_buffer},
    {"exposure", test_exposure},
    {"password_ref", test_password_ref},
    {"observability", test_observability},
    {"cell_pdbs", test_cell_pdbs},
    {"superuser_initdb", test_superuser_initdb},
    {"render_tls", test_render_tls},
    {"etcd_maintenance", test_etcd_maintenance},
    {"init_secrets", test_init_secrets},
    {"postgres_config", test_postgres_config},
    {"pg_param_check", test_pg_param_check},
    {"drain_steps", test_drain_steps},
    {"pool_pod_shape", test_pool_pod_shape},
    {"exporter_sidecar", test_exporter_sidecar},
    {"pki_round_trip", test_pki_round_trip},
    {"pki_san_ip_eku", test_pki_san_ip_eku},
    {"pki_renewal", test_pki_renewal},
    {"http_request_parser", test_http_request_parser},
    {"srv_listen_addresses", test_srv_listen_addresses},
    {"srv_https_swap", test_srv_https_swap},
    {"srv_plain", test_srv_plain},
    {"srv_pool", test_srv_pool},
    {"pb_varint_golden", test_pb_varint_golden},
    {"pb_decode", test_pb_decode},
    {"b64", test_b64},
    {"topo_records_golden", test_topo_records_golden},
    {"topo_records_keep_unknown", test_topo_records_keep_unknown},
    {"etcd_responses", test_etcd_responses},
    {"etcd_unreachable_endpoints", test_etcd_unreachable_endpoints},
    {"pooler_record", test_pooler_record},
    {"pooler_roles", test_pooler_roles},
    {"roll_order", test_roll_order},
    {"roll_waits", test_roll_waits},
    {"roll_observed", test_roll_observed},
    {"tls_heap_bound", test_tls_heap_bound},
    {"tls_heap_cache", test_tls_heap_cache},
    {"tls_ticket_wait", test_tls_ticket_wait},
};

int main(int argc, char **argv) {
  int passed = 0, failed = 0;
  const char *only = argc > 1 ? argv[1] : NULL;
  if (getenv("MGOP_FIXTURES")) t_fixtures = getenv("MGOP_FIXTURES");
  snprintf(t_tmpdir, sizeof(t_tmpdir), "/tmp/mgop-unit-XXXXXX");
  if (!mkdtemp(t_tmpdir)) { perror("mkdtemp"); return 3; }
  signal(SIGPIPE, SIG_IGN);
  mgop_log_level = getenv("MGOP_TEST_LOG") ? MGOP_DEBUG : MGOP_ERROR + 1; /* quiet: tests check results, not logs */
  mgop_tls_global_init();
  for (size_t i = 0; i < sizeof(t_cases) / sizeof(t_cases[0]); i++) {
    int before = t_failed_checks;
    if (only && !strstr(t_cases[i].name, only)) continue;
    t_cases[i].fn();
    if (t_failed_checks == before) {
      passed++;
      printf("ok   %s\n", t_cases[i].name);
    } else {
      failed++;
      printf("FAIL %s\n", t_cases[i].name);
    }
    fflush(stdout);
  }
  {
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", t_tmpdir);
    if (system(cmd)) { /* best effort */ }
  }
  mgop_bhc_stop(1000);
  mgop_dns_stop(1000); /* as the operator does on its way out: no thread left for valgrind's leak check */
  printf("%d passed, %d failed\n", passed, failed);
  if (only && !passed && !failed) { /* a mistyped name runs nothing: that is no pass */
    fprintf(stderr, "no test name contains \"%s\"\n", only);
    return 2;
  }
  return failed ? 1 : 0;
}

/* ======================================================================
 * 10. Webhook and metrics mechanism: PKI, request parser, HTTP(S) server
 *
 * Client and server share one process and no thread: the server listens
 * on 127.0.0.1:0 and whenever a client call would wait, the test pumps the
 * server one poll() turn, as the operator's loop does (no fork, so nothing
 * but the server's own state is in play, under valgrind too).
 * ==================================================================== */
#define T_SVC "multigres-operator-webhook-service.multigres-operator.svc"
#define T_SVC_LOCAL T_SVC ".cluster.local"
static const char *const t_svc_names[] = {T_SVC, T_SVC_LOCAL, "127.0.0.1"};
#define T_RAW(lit) (lit), sizeof(lit) - 1 /* a literal and its length */

static int t_has_san(const mbedtls_x509_crt *crt, int tag, const void *v, size_t n) {
  for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s && s->buf.p; s = s->next)
    if (s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | tag) && s->buf.len == n && !memcmp(s->buf.p, v, n)) return 1;
  return 0;
}

static void test_pki_round_trip(void) {
  static struct mgop_pki_pair ca, ca2, leaf, clamped, loaded;
  mbedtls_x509_crt cacrt, crt;
  char dn[256], s1[80], s2[80];
  unsigned char lo[4] = {127, 0, 0, 1};
  long long now = (long long)time(NULL), nb = 0, na = 0;
  uint32_t flags = 0;
  const char *bad_names[] = {"a,b"};
  CHECK(mgop_pki_make_ca(&ca, "multigres-operator-ca", 10LL * 365 * 86400, now) == MGOP_OK);
  CHECK(mgop_pki_make_serving(&leaf, &ca, t_svc_names, 3, 3600, now) == MGOP_OK);
  CHECK(strncmp(ca.cert, "-----BEGIN CERTIFICATE-----", 27) == 0 && ca.cert_len == strlen(ca.cert));
  CHECK(strncmp(leaf.key, "-----BEGIN EC PRIVATE KEY-----", 30) == 0 && leaf.key_len == strlen(leaf.key));
  mbedtls_x509_crt_init(&cacrt);
  mbedtls_x509_crt_init(&crt);
  CHECK(mbedtls_x509_crt_parse(&cacrt, (const unsigned char *)ca.cert, ca.cert_len + 1) == 0);
  CHECK(mbedtls_x509_crt_parse(&crt, (const unsigned char *)leaf.cert, leaf.cert_len + 1) == 0);
  /* the CA */
  CHECK(mbedtls_x509_dn_gets(dn, sizeof(dn), &cacrt.subject) > 0);
  CHECK_STR(dn, "CN=multigres-operator-ca");
  CHECK(mbedtls_x509_crt_get_ca_istrue(&cacrt) == 1);
  CHECK(mbedtls_x509_crt_check_key_usage(&cacrt, MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN) == 0);
  CHECK(mbedtls_pk_get_type(&cacrt.pk) == MBEDTLS_PK_ECKEY && 
        mbedtls_ecp_keypair_get_group_id(mbedtls_pk_ec(cacrt.pk)) == MBEDTLS_ECP_DP_SECP256R1);
  CHECK(mbedtls_x509_crt_verify(&cacrt, &cacrt, NULL, NULL, &flags, NULL, NULL) == 0 && flags == 0); /* self-signed */
  /* the serving certificate: CN, SAN (DNS and IP), EKU, key usage, chain */
  CHECK(mbedtls_x509_dn_gets(dn, sizeof(dn), &crt.subject) > 0);
  CHECK_STR(dn, "CN=" T_SVC);
  CHECK(mbedtls_x509_crt_get_ca_istrue(&crt) == 0);
  CHECK(mbedtls_x509_crt_has_ext_type(&crt, MBEDTLS_X509_EXT_SUBJECT_ALT_NAME) &&
        mbedtls_x509_crt_has_ext_type(&crt, MBEDTLS_X509_EXT_EXTENDED_KEY_USAGE));
  CHECK(t_has_san(&crt, 2, T_SVC, strlen(T_SVC)) && t_has_san(&crt, 2, T_SVC_LOCAL, strlen(T_SVC_LOCAL)));
  CHECK(t_has_san(&crt, 7, lo, 4));
  CHECK(mbedtls_x509_crt_check_extended_key_usage(&crt, MBEDTLS_OID_SERVER_AUTH,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)) == 0);
  CHECK(mbedtls_x509_crt_check_extended_key_usage(&crt, MBEDTLS_OID_CLIENT_AUTH,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH)) != 0);
  CHECK(mbedtls_x509_crt_check_key_usage(&crt, MBEDTLS_X509_KU_DIGITAL_SIGNATURE) == 0);
  CHECK(mbedtls_x509_crt_check_key_usage(&crt, MBEDTLS_X509_KU_KEY_CERT_SIGN) != 0);
  flags = 0;
  CHECK(mbedtls_x509_crt_verify(&crt, &cacrt, NULL, T_SVC_LOCAL, &flags, NULL, NULL) == 0 && flags == 0);
  CHECK(mbedtls_x509_crt_verify(&crt, &cacrt, NULL, T_SVC, &flags, NULL, NULL) == 0 && flags == 0);
  CHECK(mbedtls_x509_crt_verify(&crt, &cacrt, NULL, "other.example", &flags, NULL, NULL) != 0 &&
        (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH));
  /* validity honours the request; the serial is random and 16 bytes */
  CHECK(mgop_pki_validity(leaf.cert, leaf.cert_len, &nb, &na) == MGOP_OK);
  CHECK(na == now + 3600 && nb == now - MGOP_PKI_BACKDATE_S);
  CHECK(mgop_pki_not_after(ca.cert, ca.cert_len, &na) == MGOP_OK && na == now + 10LL * 365 * 86400);
  CHECK(mgop_pki_serial_hex(ca.cert, ca.cert_len, s1, sizeof(s1)) == MGOP_OK && strlen(s1) == 32);
  CHECK(mgop_pki_serial_hex(leaf.cert, leaf.cert_len, s2, sizeof(s2)) == MGOP_OK && strcmp(s1, s2) != 0);
  /* the library's own verification, including names, IPs, time and a rotated CA */
  CHECK(mgop_pki_verify(leaf.cert, leaf.cert_len, ca.cert, ca.cert_len, T_SVC, now) == MGOP_OK);
  CHECK(mgop_pki_verify(leaf.cert, leaf.cert_len, ca.cert, ca.cert_len, "127.0.0.1", now) == MGOP_OK);
  CHECK(mgop_pki_verify(leaf.cert, leaf.cert_len, ca.cert, ca.cert_len, "10.0.0.1", now) == MGOP_ERR_TLS);
  CHECK(mgop_pki_verify(leaf.cert, leaf.cert_len, ca.cert, ca.cert_len, "x.example", now) == MGOP_ERR_TLS);
  CHECK(mgop_pki_verify(leaf.cert, leaf.cert_len, ca.cert, ca.cert_len, T_SVC, now + 7200) == MGOP_ERR_TLS);
  CHECK(strstr(mgop_errmsg(), "expired") != NULL);
  CHECK(mgop_pki_make_ca(&ca2, "multigres-operator-ca", 86400, now) == MGOP_OK);
  CHECK(mgop_pki_verify(leaf.cert, leaf.cert_len, ca2.cert, ca2.cert_len, T_SVC, now) == MGOP_ERR_TLS);
  /* a serving certificate never outlives its CA */
  CHECK(mgop_pki_make_serving(&clamped, &ca2, t_svc_names, 1, 10LL * 86400, now) == MGOP_OK);
  CHECK(mgop_pki_not_after(clamped.cert, clamped.cert_len, &na) == MGOP_OK && na == now + 86400);
  /* pairs load back (from PEM with or without the NUL) and must match */
  CHECK(mgop_pki_pair_load(&loaded, leaf.cert, leaf.cert_len, leaf.key, leaf.key_len + 1) == MGOP_OK);
  CHECK(loaded.cert_len == leaf.cert_len && !strcmp(loaded.cert, leaf.cert) && !strcmp(loaded.key, leaf.key));
  CHECK(mgop_pki_pair_load(&loaded, leaf.cert, leaf.cert_len, ca.key, ca.key_len) == MGOP_ERR_CONFIG);
  CHECK(mgop_pki_pair_load(&loaded, "junk", 4, leaf.key, leaf.key_len) == MGOP_ERR_PARSE);
  /* bad requests name the problem */
  CHECK(mgop_pki_make_serving(&clamped, &ca, bad_names, 1, 3600, now) == MGOP_ERR_CONFIG);
  CHECK(mgop_pki_make_serving(&clamped, &ca, t_svc_names, 0, 3600, now) == MGOP_ERR_CONFIG);
  CHECK(mgop_pki_make_serving(&clamped, &ca, t_svc_names, 1, 0, now) == MGOP_ERR_CONFIG);
  CHECK(mgop_pki_make_ca(&ca2, "", 3600, now) == MGOP_ERR_CONFIG);
  {
    struct mgop_pki_pair swapped = ca;
    memcpy(swapped.key, leaf.key, leaf.key_len + 1);
    swapped.key_len = leaf.key_len;
    CHECK(mgop_pki_make_serving(&clamped, &swapped, t_svc_names, 1, 3600, now) == MGOP_ERR_CONFIG);
    CHECK(mgop_pki_make_serving(&clamped, &leaf, t_svc_names, 1, 3600, now) == MGOP_ERR_CONFIG); /* not a CA */
  }
  mbedtls_x509_crt_free(&crt);
  mbedtls_x509_crt_free(&cacrt);
}

/* The 3.6 SAN/EKU writers: IPv6 and IPv4 literals become iPAddress SANs (16
 * and 4 bytes), names dNSName; EKU serverAuth only; verification by IP. */
static void test_pki_san_ip_eku(void) {
  static struct mgop_pki_pair ca, leaf;
  static const char *const mixed[] = {"::1", "svc.example", "10.1.2.3"};
  static const unsigned char v6[16] = {[15] = 1}, v4[4] = {10, 1, 2, 3};
  long long now = (long long)time(NULL);
  mbedtls_x509_crt m;
  char dn[128];
  CHECK(mgop_pki_make_ca(&ca, "multigres-operator-ca", 86400, now) == MGOP_OK);
  CHECK(mgop_pki_make_serving(&leaf, &ca, mixed, 3, 3600, now) == MGOP_OK);
  mbedtls_x509_crt_init(&m);
  CHECK(mbedtls_x509_crt_parse(&m, (const unsigned char *)leaf.cert, leaf.cert_len + 1) == 0);
  CHECK(t_has_san(&m, 7, v6, 16) && t_has_san(&m, 7, v4, 4) && t_has_san(&m, 2, "svc.example", 11));
  CHECK(!t_has_san(&m, 2, "::1", 3) && !t_has_san(&m, 2, "10.1.2.3", 8));
  CHECK(mbedtls_x509_dn_gets(dn, sizeof(dn), &m.subject) > 0);
  CHECK_STR(dn, "CN=svc.example"); /* the first DNS name, not the IP */
  CHECK(mbedtls_x509_crt_check_extended_key_usage(&m, MBEDTLS_OID_SERVER_AUTH,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH)) == 0);
  CHECK(mbedtls_x509_crt_check_extended_key_usage(&m, MBEDTLS_OID_CODE_SIGNING,
                                                  MBEDTLS_OID_SIZE(MBEDTLS_OID_CODE_SIGNING)) != 0);
  mbedtls_x509_crt_free(&m);
  CHECK(mgop_pki_verify(leaf.cert, leaf.cert_len, ca.cert, ca.cert_len, "::1", now) == MGOP_OK);
  CHECK(mgop_pki_verify(leaf.cert, leaf.cert_len, ca.cert, ca.cert_len, "10.1.2.3", now) == MGOP_OK);
  CHECK(mgop_pki_verify(leaf.cert, leaf.cert_len, ca.cert, ca.cert_len, "::2", now) == MGOP_ERR_TLS);
  CHECK(mgop_pki_verify(leaf.cert, leaf.cert_len, ca.cert, ca.cert_len, "10.1.2.4", now) == MGOP_ERR_TLS);
}

static void test_pki_renewal(void) {
  static struct mgop_pki_pair ca, leaf;
  long long t = 1800000000LL, na = 0; /* 2027-01-15: tests do not depend on the clock */
  CHECK(mgop_pki_make_ca(&ca, "multigres-operator-ca", 10LL * 365 * 86400, t) == MGOP_OK);
  /* lifetime = 3000 s + 1 h backdating = 6600 s; a third is 2200 s */
  CHECK(mgop_pki_make_serving(&leaf, &ca, t_svc_names, 2, 3000, t) == MGOP_OK);
  CHECK(mgop_pki_not_after(leaf.cert, leaf.cert_len, &na) == MGOP_OK && na == t + 3000);
  CHECK(mgop_pki_needs_renewal(leaf.cert, leaf.cert_len, t, 0) == 0);
  CHECK(mgop_pki_needs_renewal(leaf.cert, leaf.cert_len, t + 799, 0) == 0);  /* 2201 s left */
  CHECK(mgop_pki_needs_renewal(leaf.cert, leaf.cert_len, t + 801, 0) == 1);  /* 2199 s left */
  CHECK(mgop_pki_needs_renewal(leaf.cert, leaf.cert_len, t, 2999) == 0);     /* margin not reached */
  CHECK(mgop_pki_needs_renewal(leaf.cert, leaf.cert_len, t, 3001) == 1);     /* margin reached */
  CHECK(mgop_pki_needs_renewal(leaf.cert, leaf.cert_len, t + 5000, 0) == 1); /* expired */
  CHECK(mgop_pki_needs_renewal("not a certificate", 17, t, 0) == 1);
  /* the CA: 10 years, renewed 30 days before the end as the design says */
  CHECK(mgop_pki_needs_renewal(ca.cert, ca.cert_len, t + 9LL * 365 * 86400, 30LL * 86400) == 1); /* < 1/3 left */
  CHECK(mgop_pki_needs_renewal(ca.cert, ca.cert_len, t + 365LL * 86400, 30LL * 86400) == 0);
}

struct t_req_case {
  const char *in;
  int rc, status;
  const char *method, *path, *query;
  long long cl;
  int close;
};

static void test_http_request_authorization(void) {
  static char req[6000];
  static struct mgop_http_req r;
  const char *ok = "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc.def\r\n\r\n";
  CHECK(mgop_http_parse_request(ok, strlen(ok), 8192, 1024, &r) == MGOP_OK && strcmp(r.authorization, "Bearer abc.def") == 0);
  CHECK(mgop_http_parse_request("GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27, 8192, 1024, &r) == MGOP_OK && !r.authorization[0]);
  snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %05000d\r\n\r\n", 7);
  CHECK(mgop_http_parse_request(req, strlen(req), 8192, 1024, &r) == MGOP_ERR_TOOBIG && r.status == 431);
}

static void test_http_request_parser(void) {
  static const struct t_req_case cases[] = {
      {"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", MGOP_OK, 0, "GET", "/metrics", "", -1, 0},
      {"POST /validate-multigres-com-v1alpha1-multigrescluster?timeout=10s HTTP/1.1\r\nHost: svc:443\r\n"
       "Content-Type: application/json\r\nAccept: application/json\r\nContent-Length: 2\r\n\r\n{}",
       MGOP_OK, 0, "POST", "/validate-multigres-com-v1alpha1-multigrescluster", "timeout=10s", 2, 0},
      {"GET / HTTP/1.0\r\n\r\n", MGOP_OK, 0, "GET", "/", "", -1, 1},
      {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", MGOP_OK, 0, "GET", "/", "", -1, 0},
      {"GET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n", MGOP_OK, 0, "GET", "/", "", -1, 1},
      {"GET / HTTP/1.1\r\nHost: x\r\nConnection: closed\r\n\r\n", MGOP_OK, 0, "GET", "/", "", -1, 0},
      {"\r\n\nGET /healthz HTTP/1.1\nHost: x\n\n", MGOP_OK, 0, "GET", "/healthz", "", -1, 0},
      {"GET http://h:1/p?q=1 HTTP/1.1\r\nHost: h\r\n\r\n", MGOP_OK, 0, "GET", "/p", "q=1", -1, 0},
      {"GET https://h?q HTTP/1.1\r\nHost: h\r\n\r\n", MGOP_OK, 0, "GET", "/", "q", -1, 0},
      {"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", MGOP_OK, 0, "OPTIONS", "*", "", -1, 0},
      {"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc", MGOP_OK, 0, "POST", "/x",
       "", 3, 0},
      {"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length:  007 \r\n\r\n", MGOP_OK, 0, "POST", "/x", "", 7, 0},
      {"PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", MGOP_OK, 0, "PUT", "/x", "",
       1, 0},
      /* incomplete */
      {"", MGOP_ERR_AGAIN, 0, NULL, NULL, NULL, 0, 0},
      {"\r", MGOP_ERR_AGAIN, 0, NULL, NULL, NULL, 0, 0},
      {"GE", MGOP_ERR_AGAIN, 0, NULL, NULL, NULL, 0, 0},
      {"GET / HTTP/1.1\r\nHost: x\r\n", MGOP_ERR_AGAIN, 0, NULL, NULL, NULL, 0, 0},
      {"GET / HTTP/1.1\r\nHost: x\r\n\r", MGOP_ERR_AGAIN, 0, NULL, NULL, NULL, 0, 0},
      /* malformed request line */
      {"GET / HTTP/1.1 x\r\nHost: x\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"GET /\r\nHost: x\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"G@T / HTTP/1.1\r\nHost: x\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"\x16\x03\x01\x02\x00\x01", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0}, /* TLS to the plain port */
      {"GET / http/1.1\r\nHost: x\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"GET / HTTP/2.0\r\nHost: x\r\n\r\n", MGOP_ERR_HTTP, 505, NULL, NULL, NULL, 0, 0},
      {"GET noslash HTTP/1.1\r\nHost: x\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"GET /a\x01 HTTP/1.1\r\nHost: x\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"GET * HTTP/1.1\r\nHost: x\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"GET /\rX HTTP/1.1\r\nHost: x\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"\rGET / HTTP/1.1\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"ABCDEFGHIJKLMNOPQ / HTTP/1.1\r\nHost: x\r\n\r\n", MGOP_ERR_HTTP, 501, NULL, NULL, NULL, 0, 0},
      /* header fields */
      {"GET / HTTP/1.1\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0}, /* no Host */
      {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"GET / HTTP/1.1\r\nHost: a\r\nno colon\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"PUT /x HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n", MGOP_ERR_HTTP, 417, NULL, NULL, NULL, 0, 0},
      /* Content-Length */
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\n", MGOP_ERR_HTTP, 400, NULL, NULL, NULL, 0, 0},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", MGOP_ERR_HTTP, 400, NULL,
       NULL, NULL, 0, 0},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999999\r\n\r\n", MGOP_ERR_TOOBIG, 413,
       NULL, NULL, NULL, 0, 0},
      {"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048577\r\n\r\n", MGOP_ERR_TOOBIG, 413, NULL, NULL, NULL, 0, 0},
      /* chunked and other transfer codings are refused */
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", MGOP_ERR_HTTP,
       411, NULL, NULL, NULL, 0, 0},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, Chunked\r\nContent-Length: 5\r\n\r\n", MGOP_ERR_HTTP,
       411, NULL, NULL, NULL, 0, 0},
      {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", MGOP_ERR_HTTP, 501, NULL, NULL, NULL, 0, 0},
  };
  static char big[20000];
  struct mgop_http_req r;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct t_req_case *c = &cases[i];
    size_t n = strlen(c->in);
    int rc;
    if (strstr(c->in, "X-Nul")) n += strlen(c->in + n + 1) + 1; /* the case with a NUL inside */
    rc = mgop_http_parse_request(c->in, n, 8192, 1024 * 1024, &r);
    if (rc != c->rc || (rc != MGOP_OK && rc != MGOP_ERR_AGAIN && r.status != c->status)) {
      fprintf(stderr, "    parser case %zu: rc %d status %d (%s), want rc %d status %d\n", i, rc, r.status,
              r.error ? r.error : "", c->rc, c->status);
      t_failed_checks++;
      continue;
    }
    if (rc != MGOP_OK) {
      CHECK(rc == MGOP_ERR_AGAIN || (r.error && r.error[0]));
      continue;
    }
    CHECK_STR(r.method, c->method);
    CHECK_STR(r.path, c->path);
    CHECK_STR(r.query, c->query);
    CHECK(r.content_length == c->cl && r.body_len == (size_t)(c->cl < 0 ? 0 : c->cl));
    CHECK(r.close == c->close);
    CHECK(r.head_len <= n && r.head_len + r.body_len <= n + 7);
    /* every strict prefix of a good head is incomplete, never an error */
    for (size_t k = 0; k < r.head_len; k++) {
      struct mgop_http_req pr;
      int prc = mgop_http_parse_request(c->in, k, 8192, 1024 * 1024, &pr);
      if (prc != MGOP_ERR_AGAIN) {
        fprintf(stderr, "    parser case %zu: prefix %zu gave rc %d\n", i, k, prc);
        t_failed_checks++;
        break;
      }
    }
  }
  CHECK(mgop_http_parse_request(cases[1].in, strlen(cases[1].in), 8192, 1024, &r) == MGOP_OK);
  CHECK_STR(r.content_type, "application/json");
  CHECK(mgop_http_parse_request(cases[12].in, strlen(cases[12].in), 8192, 1024, &r) == MGOP_OK && r.expect_continue);

  /* pipelined: three requests back to back in one buffer */
  {
    static const char pipe[] = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                               "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                               "GET /c?d=e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    const char *want[] = {"/a", "/b", "/c"};
    size_t off = 0, len = sizeof(pipe) - 1;
    for (int k = 0; k < 3; k++) {
      CHECK(mgop_http_parse_request(pipe + off, len - off, 8192, 1024, &r) == MGOP_OK);
      CHECK_STR(r.path, want[k]);
      if (k == 1) CHECK(r.body_len == 3 && !memcmp(pipe + off + r.head_len, "abc", 3));
      if (k == 2) CHECK(r.close && !strcmp(r.query, "d=e"));
      off += r.head_len + r.body_len;
    }
    CHECK(off == len);
  }
  /* oversize heads: 431 whether or not the end is in sight; long targets 414 */
  memset(big, 'a', sizeof(big));
  memcpy(big, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ", 32);
  CHECK(mgop_http_parse_request(big, 9000, 8192, 1024, &r) == MGOP_ERR_TOOBIG && r.status == 431);
  memcpy(big + 9000, "\r\n\r\n", 4);
  CHECK(mgop_http_parse_request(big, 9004, 8192, 1024, &r) == MGOP_ERR_TOOBIG && r.status == 431);
  CHECK(mgop_http_parse_request(big, 9004, 16384, 1024, &r) == MGOP_OK && r.head_len == 9004);
  {
    struct mgop_buf b;
    mgop_buf_init(&b, big, sizeof(big));
    mgop_buf_puts(&b, "GET / HTTP/1.1\r\nHost: x\r\n");
    for (int k = 0; k < MGOP_HTTP_HEADERS_MAX; k++) mgop_buf_printf(&b, "X-H%d: v\r\n", k);
    mgop_buf_puts(&b, "\r\n");
    CHECK(mgop_http_parse_request(b.p, b.len, 8192, 1024, &r) == MGOP_ERR_TOOBIG && r.status == 431);
    mgop_buf_init(&b, big, sizeof(big));
    mgop_buf_puts(&b, "GET /");
    for (int k = 0; k < MGOP_HTTP_TARGET_MAX; k++) mgop_buf_puts(&b, "p");
    mgop_buf_puts(&b, " HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(mgop_http_parse_request(b.p, b.len, 8192, 1024, &r) == MGOP_ERR_TOOBIG && r.status == 414);
  }
  CHECK_STR(mgop_http_reason(431), "Request Header Fields Too Large");
  CHECK_STR(mgop_http_reason(299), "OK");
}

static void test_srv_listen_addresses(void) {
  static struct mgop_srv_conn conns[1];
  struct mgop_srv s;
  mgop_srv_init(&s, "t", 0, conns, 1, NULL, NULL);
  CHECK(mgop_srv_port(&s) == -1);
  CHECK(mgop_srv_listen(&s, "nonsense") == MGOP_ERR_CONFIG);
  CHECK(mgop_srv_listen(&s, "[::1") == MGOP_ERR_CONFIG);
  CHECK(mgop_srv_listen(&s, "1.2.3.4:99999") == MGOP_ERR_CONFIG);
  CHECK(mgop_srv_listen(&s, "::1:80") == MGOP_ERR_CONFIG); /* IPv6 needs brackets */
  CHECK(mgop_srv_listen(&s, "127.0.0.1:") == MGOP_ERR_CONFIG);
  CHECK(strstr(mgop_errmsg(), "HOST:PORT") != NULL);
  CHECK(mgop_srv_listen(&s, "127.0.0.1:0") == MGOP_OK && mgop_srv_port(&s) > 0);
  CHECK(mgop_srv_listen(&s, ":0") == MGOP_OK && mgop_srv_port(&s) > 0); /* all interfaces */
  {
    struct mgop_srv s2;
    char addr[32];
    mgop_srv_init(&s2, "t2", 0, conns, 1, NULL, NULL);
    snprintf(addr, sizeof(addr), ":%d", mgop_srv_port(&s));
    CHECK(mgop_srv_listen(&s2, addr) == MGOP_ERR_IO); /* in use */
    CHECK(strstr(mgop_errmsg(), "cannot listen") != NULL);
  }
  if (mgop_srv_listen(&s, "[::1]:0") == MGOP_OK) CHECK(mgop_srv_port(&s) > 0); /* when the host has IPv6 */
  CHECK(mgop_srv_wake_ms(&s, mgop_now_ms()) == 60000);
  mgop_srv_close(&s);
  CHECK(mgop_srv_port(&s) == -1);
}

/* --- the server side ------------------------------------------------------------ */
struct t_srv_ctx { int swap_requested, requests; };

static void t_srv_handler(void *ctx, const struct mgop_http_req *req, const char *body, size_t n,
                          struct mgop_srv_resp *resp) {
  struct t_srv_ctx *x = ctx;
  x->requests++;
  if (!strcmp(req->path, "/echo") && !strcmp(req->method, "POST")) {
    resp->status = 200;
    snprintf(resp->content_type, sizeof(resp->content_type), "application/json");
    mgop_buf_printf(&resp->body, "{\"got\":%zu,\"ct\":\"%s\",\"q\":\"%s\",\"body\":", n, req->content_type, req->query);
    mgop_buf_append(&resp->body, body, n);
    mgop_buf_puts(&resp->body, "}");
  } else if (!strcmp(req->path, "/swap")) {
    x->swap_requested = 1;
    resp->status = 200;
    mgop_buf_puts(&resp->body, "swapping");
  } else if (!strcmp(req->path, "/metrics") && (!strcmp(req->method, "GET") || !strcmp(req->method, "HEAD"))) {
    resp->status = 200;
    snprintf(resp->content_type, sizeof(resp->content_type), "text/plain; version=0.0.4; charset=utf-8");
    mgop_buf_printf(&resp->body, "# TYPE mgop_test_requests_total counter\nmgop_test_requests_total %d\n", x->requests);
  } else if (!strcmp(req->path, "/big")) {
    resp->status = 200;
    for (int i = 0; i < 200000; i++) mgop_buf_append(&resp->body, &"0123456789abcdef"[i % 16], 1);
  } else if (!strcmp(req->path, "/huge")) { /* larger than any response buffer: a 500 */
    resp->status = 200;
    for (int i = 0; i < MGOP_SRV_BIG_MAX + 1; i += 1000) mgop_buf_printf(&resp->body, "%01000d", 0);
  } else if (!strcmp(req->path, "/bye")) {
    resp->status = 204;
    resp->close = 1;
  } else {
    resp->status = 404;
    snprintf(resp->headers, sizeof(resp->headers), "X-Test: 1\r\n");
    mgop_buf_puts(&resp->body, "not found\n");
  }
}

/* Client and server share this process: while a client call would wait,
 * it pumps the server one poll() turn, as the operator's loop does. */
static struct mgop_srv *t_srv;
static struct t_srv_ctx *t_srvx;
static const struct mgop_pki_pair *t_swap_to; /* installed when a client asks /swap */

static void t_pump(int ms) {
  struct pollfd pfd[16];
  int n = mgop_srv_pollfds(t_srv, pfd, 16);
  long long w = mgop_srv_wake_ms(t_srv, mgop_now_ms());
  CHECK(w >= 0 && w <= 60000);
  if (w < ms) ms = (int)w;
  if (poll(pfd, (nfds_t)n, ms) < 0) CHECK(errno == EINTR);
  mgop_srv_step(t_srv, pfd, n, mgop_now_ms());
  if (t_srvx && t_srvx->swap_requested && t_swap_to) {
    CHECK(mgop_srv_set_cert(t_srv, t_swap_to->cert, t_swap_to->cert_len, t_swap_to->key, t_swap_to->key_len) ==
          MGOP_OK);
    t_srvx->swap_requested = 0;
  }
}

static void t_pump_for(int ms) {
  long long end = mgop_now_ms() + ms;
  while (mgop_now_ms() < end) t_pump(5);
}

/* --- the client side ------------------------------------------------------------ */
static char t_cbody[512 * 1024];

/* Connects (and, with tls, handshakes) without blocking the server. */
static int t_cli_open(struct mgop_conn *c, int port, struct mgop_tls *tls, const char *server_name) {
  struct sockaddr_in a;
  long long end = mgop_now_ms() + 10000;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), r, err = 0;
  socklen_t elen = sizeof(err);
  mgop_conn_init(c);
  if (fd < 0) return MGOP_ERR_IO;
  c->fd = fd;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) && errno != EINPROGRESS) return MGOP_ERR_IO;
  for (;;) {
    struct pollfd p = {fd, POLLOUT, 0};
    if (poll(&p, 1, 0) == 1) break;
    if (mgop_now_ms() > end) return MGOP_ERR_TIMEOUT;
    t_pump(5);
  }
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) || err) return MGOP_ERR_IO;
  if (!tls) return MGOP_OK;
  mbedtls_ssl_init(&c->ssl);
  c->ssl_init = 1;
  c->tls_on = 1;
  if (mbedtls_ssl_setup(&c->ssl, &tls->conf)) return MGOP_ERR_TLS;
  if (server_name && mbedtls_ssl_set_hostname(&c->ssl, server_name)) return MGOP_ERR_TLS;
  mbedtls_ssl_set_bio(&c->ssl, &c->fd, mgop_fd_send, mgop_fd_recv, NULL);
  while ((r = mbedtls_ssl_handshake(&c->ssl)) != 0) {
    if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE) return MGOP_ERR_TLS;
    if (mgop_now_ms() > end) return MGOP_ERR_TIMEOUT;
    t_pump(5);
  }
  return MGOP_OK;
}

static int t_cli_write(struct mgop_conn *c, const char *p, size_t n) {
  long long end = mgop_now_ms() + 10000;
  while (n > 0) {
    int w = c->tls_on ? mbedtls_ssl_write(&c->ssl, (const unsigned char *)p, n)
                      : mgop_fd_send(&c->fd, (const unsigned char *)p, n);
    if (w == MBEDTLS_ERR_SSL_WANT_READ || w == MBEDTLS_ERR_SSL_WANT_WRITE) {
      if (mgop_now_ms() > end) return MGOP_ERR_TIMEOUT;
      t_pump(5);
      continue;
    }
    if (w < 0) return MGOP_ERR_IO;
    p += w;
    n -= (size_t)w;
  }
  return MGOP_OK;
}

/* Writes raw bytes (if any), reads one response; the body goes to t_cbody. */
static int t_exchange(struct mgop_conn *c, const char *raw, size_t n, struct mgop_http_resp *r, struct mgop_buf *b,
                      int head_request) {
  long long end = mgop_now_ms() + 10000;
  int rc;
  if (raw && n && (rc = t_cli_write(c, raw, n))) return rc;
  while ((rc = mgop_http_read_head(c, r, 0)) == MGOP_ERR_AGAIN) {
    if (mgop_now_ms() > end) return MGOP_ERR_TIMEOUT;
    t_pump(5);
  }
  if (rc) return rc;
  if (head_request) r->body_done = 1;
  mgop_buf_init(b, t_cbody, sizeof(t_cbody) - 1);
  while ((rc = mgop_http_read_body(c, r, mgop_sink_buf, b, 0)) == MGOP_ERR_AGAIN) {
    if (mgop_now_ms() > end) return MGOP_ERR_TIMEOUT;
    t_pump(5);
  }
  if (rc) return rc;
  mgop_buf_cstr(b);
  return r->status;
}

/* 1 when the server closes the connection within wait_ms (after what it
 * had to say, which is skipped). */
static int t_closed(struct mgop_conn *c, long long wait_ms) {
  unsigned char b[256];
  long long end = mgop_now_ms() + wait_ms;
  for (;;) {
    int n = mgop_conn_read(c, b, sizeof(b), 0);
    if (n == MGOP_ERR_CLOSED || n == MGOP_ERR_IO) return 1;
    if (n > 0) continue;
    if (mgop_now_ms() > end) return 0;
    t_pump(5);
  }
}

static void t_peer_serial(struct mgop_conn *c, char *out, size_t cap) {
  const mbedtls_x509_crt *p = mbedtls_ssl_get_peer_cert(&c->ssl);
  out[0] = 0;
  if (p) mgop_hex_serial(&p->serial, out, cap);
}

static void test_srv_https_swap(void) {
  static struct mgop_pki_pair ca, other_ca, cert1, cert2;
  static struct mgop_srv_conn conns[4];
  static struct mgop_srv s;
  static struct mgop_kubecfg cfg, ipcfg, badcfg;
  static struct mgop_tls tls, iptls, badtls;
  static char post[256 * 1024];
  struct t_srv_ctx x = {0, 0};
  struct mgop_conn a, b, c, d;
  struct mgop_http_resp r;
  struct mgop_buf body;
  char serial1[80], serial2[80], serial[80];
  long long now = (long long)time(NULL);
  size_t n;
  int port;
  CHECK(mgop_pki_make_ca(&ca, "multigres-operator-ca", 86400, now) == MGOP_OK);
  CHECK(mgop_pki_make_ca(&other_ca, "multigres-operator-ca", 86400, now) == MGOP_OK);
  CHECK(mgop_pki_make_serving(&cert1, &ca, t_svc_names, 3, 3600, now) == MGOP_OK);
  CHECK(mgop_pki_make_serving(&cert2, &ca, t_svc_names, 3, 3600, now) == MGOP_OK);
  CHECK(mgop_pki_serial_hex(cert1.cert, cert1.cert_len, serial1, sizeof(serial1)) == MGOP_OK);
  CHECK(mgop_pki_serial_hex(cert2.cert, cert2.cert_len, serial2, sizeof(serial2)) == MGOP_OK);
  CHECK(strcmp(serial1, serial2) != 0);
  mgop_srv_init(&s, "webhook", 1, conns, 4, t_srv_handler, &x);
  t_srv = &s;
  t_srvx = &x;
  t_swap_to = &cert2;
  CHECK(mgop_srv_listen(&s, "127.0.0.1:0") == MGOP_OK);
  port = mgop_srv_port(&s);
  {
    struct pollfd pfd[8];
    CHECK(mgop_srv_pollfds(&s, pfd, 8) == 0); /* HTTPS without a certificate accepts nothing */
  }
  CHECK(mgop_srv_set_cert(&s, cert1.key, cert1.key_len, cert1.key, cert1.key_len) == MGOP_ERR_PARSE);
  CHECK(mgop_srv_set_cert(&s, cert1.cert, cert1.cert_len, cert2.key, cert2.key_len) == MGOP_ERR_CONFIG);
  CHECK(mgop_srv_set_cert(&s, cert1.cert, cert1.cert_len, cert1.key, cert1.key_len) == MGOP_OK);
  mgop_srv_cert_serial(&s, serial, sizeof(serial));
  CHECK_STR(serial, serial1);

  /* clients: verify as the service name; as the IP (its SAN); a wrong CA */
  memset(&cfg, 0, sizeof(cfg));
  snprintf(cfg.scheme, sizeof(cfg.scheme), "https");
  snprintf(cfg.host, sizeof(cfg.host), "127.0.0.1");
  snprintf(cfg.port, sizeof(cfg.port), "%d", port);
  snprintf(cfg.tls_server_name, sizeof(cfg.tls_server_name), T_SVC);
  memcpy(cfg.ca, ca.cert, ca.cert_len + 1);
  cfg.ca_len = ca.cert_len + 1;
  ipcfg = cfg;
  ipcfg.tls_server_name[0] = 0;
  badcfg = cfg;
  memcpy(badcfg.ca, other_ca.cert, other_ca.cert_len + 1);
  badcfg.ca_len = other_ca.cert_len + 1;
  CHECK(mgop_tls_client_init(&tls, &cfg) == MGOP_OK);
  CHECK(mgop_tls_client_init(&iptls, &ipcfg) == MGOP_OK);
  CHECK(mgop_tls_client_init(&badtls, &badcfg) == MGOP_OK);

  /* A: keep-alive connection on the first certificate; POST a body */
  CHECK(t_cli_open(&a, port, &tls, T_SVC) == MGOP_OK);
  t_peer_serial(&a, serial, sizeof(serial));
  CHECK_STR(serial, serial1);
  CHECK(t_exchange(&a, T_RAW("POST /echo?timeout=10s HTTP/1.1\r\nHost: " T_SVC "\r\nContent-Type: application/json\r\n"
                             "Content-Length: 7\r\n\r\n{\"x\":1}"), &r, &body, 0) == 200);
  CHECK_STR(body.p, "{\"got\":7,\"ct\":\"application/json\",\"q\":\"timeout=10s\",\"body\":{\"x\":1}}");
  CHECK_STR(r.content_type, "application/json");
  CHECK(!r.close);
  /* a body larger than the connection buffer, answered by a response larger than its buffer */
  n = (size_t)snprintf(post, sizeof(post), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
  memset(post + n, 'z', 100000);
  CHECK(t_exchange(&a, post, n + 100000, &r, &body, 0) == 200);
  CHECK(body.len == 100000 + strlen("{\"got\":100000,\"ct\":\"\",\"q\":\"\",\"body\":}") &&
        !strncmp(body.p, "{\"got\":100000,", 14) && body.p[body.len - 2] == 'z');
  CHECK(t_exchange(&a, T_RAW("GET /big HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 200);
  CHECK(body.len == 200000 && body.p[199999] == 'f' && body.p[16] == '0');
  /* Expect: 100-continue: the interim response, then the real one */
  CHECK(t_exchange(&a, T_RAW("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"),
                   &r, &body, 0) == 100);
  CHECK(t_exchange(&a, T_RAW("hello"), &r, &body, 0) == 200);
  CHECK(strstr(body.p, "\"body\":hello}") != NULL);
  /* ask for the certificate swap (the pump installs cert2 right after this step) */
  CHECK(t_exchange(&a, T_RAW("POST /swap HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"), &r, &body, 0) == 200);
  t_pump(5);
  mgop_srv_cert_serial(&s, serial, sizeof(serial));
  CHECK_STR(serial, serial2);

  /* B: a new connection sees the new certificate; C verifies the IP SAN */
  CHECK(t_cli_open(&b, port, &tls, T_SVC) == MGOP_OK);
  t_peer_serial(&b, serial, sizeof(serial));
  CHECK_STR(serial, serial2);
  CHECK(t_exchange(&b, T_RAW("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 200);
  CHECK(strstr(body.p, "mgop_test_requests_total ") != NULL);
  CHECK(t_cli_open(&c, port, &iptls, "127.0.0.1") == MGOP_OK);
  CHECK(t_exchange(&c, T_RAW("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 404);
  CHECK_STR(body.p, "not found\n");

  /* A still works, still on the first certificate: no downtime */
  CHECK(t_exchange(&a, T_RAW("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"), &r, &body, 0) == 200);
  CHECK(strstr(body.p, "\"body\":ok}") != NULL);
  t_peer_serial(&a, serial, sizeof(serial));
  CHECK_STR(serial, serial1);
  CHECK(s.stats.active == 3 && s.gens[0].live && s.gens[1].live);
  /* a response too large for any buffer is a 500, and the connection closes */
  CHECK(t_exchange(&b, T_RAW("GET /huge HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 500);
  CHECK(r.close && t_closed(&b, 2000));
  mgop_conn_close(&b);
  t_pump_for(50);
  /* a client that does not trust us: counted, logged, no harm done */
  CHECK(t_cli_open(&d, port, &badtls, T_SVC) == MGOP_ERR_TLS);
  mgop_conn_close(&d);
  t_pump_for(50);
  CHECK(s.stats.handshake_errors == 1);
  /* once A goes, nothing holds the first certificate */
  mgop_conn_close(&a);
  t_pump_for(50);
  CHECK(s.stats.active == 1 && s.gens[s.cur].live && !s.gens[!s.cur].live);

  CHECK(s.stats.cert_swaps == 1);
  CHECK(s.stats.requests == 9 && x.requests == 9);
  CHECK(s.stats.responses_5xx == 1 && s.stats.responses_4xx == 1);
  CHECK(s.stats.active_high == 3);
  /* swapping faster than connections drain: the oldest generation's are closed */
  CHECK(t_cli_open(&a, port, &tls, T_SVC) == MGOP_OK);                  /* on cert2 */
  CHECK(t_exchange(&a, T_RAW("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 200);
  CHECK(mgop_srv_set_cert(&s, cert1.cert, cert1.cert_len, cert1.key, cert1.key_len) == MGOP_OK);
  CHECK(t_cli_open(&b, port, &tls, T_SVC) == MGOP_OK);                  /* on cert1 */
  CHECK(t_exchange(&b, T_RAW("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 200);
  CHECK(mgop_srv_set_cert(&s, cert2.cert, cert2.cert_len, cert2.key, cert2.key_len) == MGOP_OK);
  CHECK(mgop_srv_set_cert(&s, cert1.cert, cert1.cert_len, cert1.key, cert1.key_len) == MGOP_OK);
  CHECK(t_closed(&a, 2000));                                             /* its generation was the oldest */
  CHECK(t_exchange(&b, T_RAW("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 200);
  mgop_conn_close(&a);
  mgop_conn_close(&b);
  mgop_conn_close(&c);
  mgop_srv_close(&s);
  for (int i = 0; i < MGOP_SRV_TLS_GENS; i++) CHECK(!s.gens[i].live);
  CHECK(s.stats.active == 0);
  mgop_tls_free(&tls);
  mgop_tls_free(&iptls);
  mgop_tls_free(&badtls);
  t_srv = NULL;
  t_srvx = NULL;
  t_swap_to = NULL;
}

static void test_srv_plain(void) {
  static struct mgop_srv_conn conns[3];
  static struct mgop_srv s;
  static char hdr[10000];
  static const char pipe[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                             "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                             "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                             "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n";
  struct t_srv_ctx x = {0, 0};
  struct mgop_conn c, k1, k2, k3, k4;
  struct mgop_http_resp r;
  struct mgop_buf body;
  int port;
  memset(conns, 0x5a, sizeof(conns)); /* a slot is set up at its first use, not at init (its pages untouched) */
  mgop_srv_init(&s, "metrics", 0, conns, 3, t_srv_handler, &x);
  CHECK(s.span == 0 && conns[0].fd == 0x5a5a5a5a && conns[2].gen == 0x5a5a5a5a);
  s.request_timeout_ms = 1000;
  t_srv = &s;
  t_srvx = &x;
  CHECK(mgop_srv_listen(&s, ":0") == MGOP_OK); /* all interfaces, reached on 127.0.0.1 */
  port = mgop_srv_port(&s);

  /* pipelined requests in one write, HEAD among them */
  CHECK(t_cli_open(&c, port, NULL, NULL) == MGOP_OK);
  CHECK(t_exchange(&c, pipe, sizeof(pipe) - 1, &r, &body, 0) == 200);
  CHECK_STR(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
  CHECK(!strncmp(body.p, "# TYPE mgop_test_requests_total counter\n", 40));
  CHECK(t_exchange(&c, NULL, 0, &r, &body, 0) == 200 && strstr(body.p, "\"body\":abc}") != NULL);
  CHECK(t_exchange(&c, NULL, 0, &r, &body, 1) == 200 && r.content_length > 0 && body.len == 0);
  CHECK(t_exchange(&c, NULL, 0, &r, &body, 0) == 404 && !strcmp(body.p, "not found\n"));
  CHECK(t_exchange(&c, T_RAW("GET /bye HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 204 && r.close);
  CHECK(t_closed(&c, 2000));
  mgop_conn_close(&c);

  /* what the server refuses, each answered and then closed */
  CHECK(t_cli_open(&c, port, NULL, NULL) == MGOP_OK);
  CHECK(t_exchange(&c, T_RAW("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
                   &r, &body, 0) == 411);
  CHECK(r.close && strstr(body.p, "Content-Length") != NULL && t_closed(&c, 2000));
  mgop_conn_close(&c);
  CHECK(t_cli_open(&c, port, NULL, NULL) == MGOP_OK);
  memset(hdr, 'h', sizeof(hdr));
  memcpy(hdr, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: ", 32);
  memcpy(hdr + sizeof(hdr) - 4, "\r\n\r\n", 4);
  CHECK(t_exchange(&c, hdr, sizeof(hdr), &r, &body, 0) == 431 && r.close && t_closed(&c, 2000));
  mgop_conn_close(&c);
  CHECK(t_cli_open(&c, port, NULL, NULL) == MGOP_OK);
  CHECK(t_exchange(&c, T_RAW("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n"), &r, &body, 0) == 413);
  CHECK(t_closed(&c, 2000));
  mgop_conn_close(&c);
  CHECK(t_cli_open(&c, port, NULL, NULL) == MGOP_OK);
  CHECK(t_exchange(&c, T_RAW("GET /metrics HTTP/1.0\r\n\r\n"), &r, &body, 0) == 200 && r.close && t_closed(&c, 2000));
  mgop_conn_close(&c);

  /* slowloris: half a head, a trickle, then nothing: the deadline (1 s here) closes it */
  CHECK(t_cli_open(&c, port, NULL, NULL) == MGOP_OK);
  CHECK(t_cli_write(&c, T_RAW("GET /metrics HTTP/1.1\r\nHo")) == MGOP_OK);
  t_pump_for(400);
  CHECK(t_cli_write(&c, T_RAW("st")) == MGOP_OK); /* trickling does not extend it */
  t_pump_for(400);
  CHECK(s.stats.timeouts == 0);
  CHECK(t_closed(&c, 3000));
  CHECK(s.stats.timeouts == 1);
  mgop_conn_close(&c);

  /* a full table: the least recently used idle connection makes room */
  t_pump_for(50);
  CHECK(s.stats.active == 0);
  CHECK(t_cli_open(&k1, port, NULL, NULL) == MGOP_OK && t_cli_open(&k2, port, NULL, NULL) == MGOP_OK &&
        t_cli_open(&k3, port, NULL, NULL) == MGOP_OK);
  CHECK(t_exchange(&k1, T_RAW("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 200);
  t_pump_for(20);
  CHECK(t_exchange(&k2, T_RAW("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 200);
  t_pump_for(20);
  CHECK(t_exchange(&k3, T_RAW("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 200);
  CHECK(s.stats.active == 3 && s.stats.evicted == 0 && s.span == 3);
  CHECK(t_cli_open(&k4, port, NULL, NULL) == MGOP_OK);
  CHECK(t_exchange(&k4, T_RAW("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 200);
  CHECK(s.stats.evicted == 1);
  CHECK(t_closed(&k1, 2000));
  CHECK(t_exchange(&k2, T_RAW("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 200);
  CHECK(t_exchange(&k3, T_RAW("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 200);
  mgop_conn_close(&k1);
  mgop_conn_close(&k2);
  mgop_conn_close(&k3);
  mgop_conn_close(&k4);
  t_pump_for(50);
  CHECK(s.stats.active == 0);
  CHECK(s.stats.responses_4xx == 4 && s.stats.responses_5xx == 0 && s.stats.handshake_errors == 0);
  mgop_srv_close(&s);
  t_srv = NULL;
  t_srvx = NULL;
}

/* The shared pool: request bodies never take its last buffer, and when it
 * is empty, large requests and large responses get 503 + Retry-After. */
static void test_srv_pool(void) {
  static struct mgop_srv_conn conns[6];
  static struct mgop_srv s;
  static char post[128];
  struct t_srv_ctx x = {0, 0};
  struct mgop_conn k1, k2, k3, k4;
  struct mgop_http_resp r;
  struct mgop_buf body;
  int port, n, used = 0;
  mgop_srv_init(&s, "pool", 0, conns, 6, t_srv_handler, &x);
  t_srv = &s;
  t_srvx = &x;
  CHECK(mgop_srv_listen(&s, "127.0.0.1:0") == MGOP_OK);
  port = mgop_srv_port(&s);
  n = snprintf(post, sizeof(post), "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789");
  /* two large bodies in progress hold two of the three buffers */
  CHECK(t_cli_open(&k1, port, NULL, NULL) == MGOP_OK && t_cli_write(&k1, post, (size_t)n) == MGOP_OK);
  CHECK(t_cli_open(&k2, port, NULL, NULL) == MGOP_OK && t_cli_write(&k2, post, (size_t)n) == MGOP_OK);
  t_pump_for(50);
  for (int i = 0; i < MGOP_SRV_BIG_SLOTS; i++) used += mgop_srv_pool_used[i];
  CHECK(used == 2);
  /* a third large body is turned away: the last buffer is for responses */
  CHECK(t_cli_open(&k3, port, NULL, NULL) == MGOP_OK);
  CHECK(t_exchange(&k3, post, (size_t)n, &r, &body, 0) == 503 && r.retry_after_s == 1 && r.close);
  mgop_conn_close(&k3);
  /* which a large response still gets */
  CHECK(t_cli_open(&k4, port, NULL, NULL) == MGOP_OK);
  CHECK(t_exchange(&k4, T_RAW("GET /big HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 200 && body.len == 200000);
  /* and so does the body that completes */
  memset(t_cbody, 'q', 100000 - 10);
  CHECK(t_cli_write(&k1, t_cbody, 100000 - 10) == MGOP_OK);
  CHECK(t_exchange(&k1, NULL, 0, &r, &body, 0) == 200 && body.len > 100000 && !strncmp(body.p, "{\"got\":100000,", 14));
  /* with every buffer taken (faked here), a large response is a 503 too */
  for (int i = 0; i < MGOP_SRV_BIG_SLOTS; i++)
    if (!mgop_srv_pool_used[i]) mgop_srv_pool_used[i] = 2;
  CHECK(t_exchange(&k4, T_RAW("GET /big HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 503 && r.close);
  CHECK(t_exchange(&k1, T_RAW("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), &r, &body, 0) == 200); /* small: fine */
  for (int i = 0; i < MGOP_SRV_BIG_SLOTS; i++)
    if (mgop_srv_pool_used[i] == 2) mgop_srv_pool_used[i] = 0;
  CHECK(s.stats.pool_exhausted == 2);
  mgop_conn_close(&k1);
  mgop_conn_close(&k2);
  mgop_conn_close(&k4);
  t_pump_for(50);
  CHECK(s.stats.active == 0);
  used = 0;
  for (int i = 0; i < MGOP_SRV_BIG_SLOTS; i++) used += mgop_srv_pool_used[i];
  CHECK(used == 0);
  mgop_srv_close(&s);
  t_srv = NULL;
  t_srvx = NULL;
}

/* ======================================================================
 * 11. Topology: protobuf wire format, base64, etcd responses, records
 *
 * Golden bytes are worked out by hand from proto/clustermetadata.proto:
 * a key byte is (field << 3) | wire type, so field 1 LEN is 0x0a, field 2
 * LEN 0x12, field 3 LEN 0x1a, field 4 LEN 0x22, field 3 VARINT 0x18,
 * field 4 VARINT 0x20, field 5 VARINT 0x28, field 9 VARINT 0x48.
 * ==================================================================== */
#define T_BYTES(lit) (const unsigned char *)(lit), sizeof(lit) - 1
static int t_bytes_eq(const struct mgop_buf *b, const unsigned char *want, size_t n) {
  if (b->len == n && !memcmp(b->p, want, n)) return 1;
  fprintf(stderr, "    got %zu bytes:", b->len);
  for (size_t i = 0; i < b->len; i++) fprintf(stderr, " %02x", (unsigned char)b->p[i]);
  fprintf(stderr, "\n    want %zu bytes:", n);
  for (size_t i = 0; i < n; i++) fprintf(stderr, " %02x", want[i]);
  fprintf(stderr, "\n");
  return 0;
}

static void test_pb_varint_golden(void) {
  char mem[64];
  struct mgop_buf b;
  mgop_buf_init(&b, mem, sizeof(mem));
  mgop_pb_varint(&b, 0);
  CHECK(t_bytes_eq(&b, T_BYTES("\x00")));
  b.len = 0;
  mgop_pb_varint(&b, 1);
  CHECK(t_bytes_eq(&b, T_BYTES("\x01")));
  b.len = 0;
  mgop_pb_varint(&b, 127);
  CHECK(t_bytes_eq(&b, T_BYTES("\x7f")));
  b.len = 0;
  mgop_pb_varint(&b, 128);
  CHECK(t_bytes_eq(&b, T_BYTES("\x80\x01")));
  b.len = 0;
  mgop_pb_varint(&b, 300); /* the protobuf documentation's example */
  CHECK(t_bytes_eq(&b, T_BYTES("\xac\x02")));
  b.len = 0;
  mgop_pb_varint(&b, UINT64_MAX);
  CHECK(t_bytes_eq(&b, T_BYTES("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")));
  b.len = 0;
  mgop_pb_uint(&b, 4, 0); /* proto3: a default is not written */
  mgop_pb_str(&b, 1, "");
  CHECK(b.len == 0);
  mgop_pb_uint(&b, 16, 1); /* field 16: key 0x80 0x01 */
  CHECK(t_bytes_eq(&b, T_BYTES("\x80\x01\x01")));
  { /* a nested body over 127 bytes gets a two-byte length */
    char big[400];
    struct mgop_buf bb;
    size_t m;
    mgop_buf_init(&bb, big, sizeof(big));
    m = mgop_pb_msg_begin(&bb, 2);
    for (int i = 0; i < 200; i++) mgop_buf_append(&bb, "x", 1);
    mgop_pb_msg_end(&bb, m);
    CHECK(bb.len == 203 && (unsigned char)big[0] == 0x12 && (unsigned char)big[1] == 0xc8 &&
          (unsigned char)big[2] == 0x01 && big[3] == 'x' && big[202] == 'x');
  }
  { /* a full buffer is an overflow, not a silent cut */
    char small[4];
    struct mgop_buf sb;
    mgop_buf_init(&sb, small, sizeof(small));
    mgop_pb_str(&sb, 1, "postgres");
    CHECK(sb.overflow);
  }
}

static void test_pb_decode(void) {
  static const unsigned char msg[] = "\x08\xac\x02"     /* 1: varint 300        */
                                     "\x12\x03" "abc"   /* 2: bytes "abc"       */
                                     "\x1d\x01\x02\x03\x04" /* 3: fixed32       */
                                     "\x21\x01\x00\x00\x00\x00\x00\x00\x80"; /* 4: fixed64 */
  struct mgop_pb_field f;
  size_t pos = 0;
  CHECK(mgop_pb_next(msg, sizeof(msg) - 1, &pos, &f) == 1 && f.field == 1 && f.wire == MGOP_PB_VARINT && f.v == 300 &&
        f.start == 0 && f.end == 3);
  CHECK(mgop_pb_next(msg, sizeof(msg) - 1, &pos, &f) == 1 && f.field == 2 && f.wire == MGOP_PB_LEN && f.n == 3 &&
        !memcmp(f.p, "abc", 3));
  CHECK(mgop_pb_next(msg, sizeof(msg) - 1, &pos, &f) == 1 && f.field == 3 && f.v == 0x04030201u);
  CHECK(mgop_pb_next(msg, sizeof(msg) - 1, &pos, &f) == 1 && f.field == 4 && f.v == 0x8000000000000001ull);
  CHECK(mgop_pb_next(msg, sizeof(msg) - 1, &pos, &f) == 0);
  { /* malformed: each is an error, never a read past the end */
    static const struct { const char *p; size_t n; } bad[] = {
        {"\x08", 1},                 /* varint value missing          */
        {"\x08\x80", 2},             /* varint cut in the middle       */
        {"\x00\x01", 2},             /* field number 0                 */
        {"\x0b", 1},                 /* wire type 3 (group start)      */
        {"\x0f", 1},                 /* wire type 7                    */
        {"\x0a\x05" "ab", 4},        /* length past the end            */
        {"\x0a\xff\xff\xff\xff\x0f", 6}, /* a huge length              */
        {"\x1d\x01\x02", 3},         /* fixed32 cut                    */
        {"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12}, /* varint over 10 bytes */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
      pos = 0;
      CHECK(mgop_pb_next((const unsigned char *)bad[i].p, bad[i].n, &pos, &f) == MGOP_ERR_PARSE);
    }
  }
}

static void test_b64(void) {
  static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  static const char *const enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"}; /* RFC 4648 s.10 */
  char out[32];
  unsigned char dec[32];
  size_t n;
  for (int i = 0; i < 7; i++) {
    CHECK(mgop_b64_encode(plain[i], strlen(plain[i]), out, sizeof(out)) == (long)strlen(enc[i]));
    CHECK_STR(out, enc[i]);
    CHECK(mgop_b64_decode(enc[i], strlen(enc[i]), dec, sizeof(dec), &n) == MGOP_OK && n == strlen(plain[i]) &&
          !memcmp(dec, plain[i], n));
  }
  CHECK(mgop_b64_encode("foobar", 6, out, 8) == MGOP_ERR_TOOBIG); /* 8 chars + NUL do not fit in 8 */
  CHECK(mgop_b64_decode("Zg=", 3, dec, sizeof(dec), &n) == MGOP_ERR_PARSE);
  CHECK(mgop_b64_decode("Z===", 4, dec, sizeof(dec), &n) == MGOP_ERR_PARSE);
  CHECK(mgop_b64_decode("Zg==Zg==", 8, dec, sizeof(dec), &n) == MGOP_ERR_PARSE); /* padding in the middle */
  CHECK(mgop_b64_decode("Zm9v\n", 5, dec, sizeof(dec), &n) == MGOP_ERR_PARSE);
  CHECK(mgop_b64_decode("Zm9-", 4, dec, sizeof(dec), &n) == MGOP_ERR_PARSE);   /* URL alphabet is not etcd's */
  CHECK(mgop_b64_decode("Zm9vYmFy", 8, dec, 5, &n) == MGOP_ERR_TOOBIG);
}

/* Cell{name: zone-a, server_addresses: [c-zone-a-topo.ns.svc:2379], root: /multigres/zone-a} */
static const char t_cell_golden[] = "\x0a\x06" "zone-a"
                                    "\x12\x19" "c-zone-a-topo.ns.svc:2379"
                                    "\x1a\x11" "/multigres/zone-a";
/* Database{name: postgres, backup_location: {filesystem: {path: /backups}},
 * cells: [zone-a, zone-b], bootstrap_durability_policy: {policy_name:
 * AT_LEAST_2, quorum_type: QUORUM_TYPE_AT_LEAST_N (3), required_count: 2}} */
static const char t_db_golden[] = "\x0a\x08" "postgres"
                                  "\x12\x0c" "\x0a\x0a" "\x0a\x08" "/backups"
                                  "\x1a\x06" "zone-a" "\x1a\x06" "zone-b"
                                  "\x22\x10" "\x0a\x0a" "AT_LEAST_2" "\x18\x03" "\x20\x02";

static void t_db_fs(struct mgop_topo_db *d, const char *path) {
  memset(d, 0, sizeof(*d));
  d->name = "postgres";
  d->fs_path = path;
  d->cells[0] = "zone-a";
  d->cells[1] = "zone-b";
  d->ncells = 2;
  d->policy_name = "AT_LEAST_2";
  d->quorum_type = MGOP_QUORUM_AT_LEAST_N;
  d->required_count = 2;
}

static void test_topo_records_golden(void) {
  char mem[512];
  struct mgop_buf b;
  struct mgop_topo_cell c;
  struct mgop_topo_db d;
  memset(&c, 0, sizeof(c));
  c.name = "zone-a";
  c.addrs[0] = "c-zone-a-topo.ns.svc:2379";
  c.naddrs = 1;
  c.root = "/multigres/zone-a";
  mgop_buf_init(&b, mem, sizeof(mem));
  CHECK(mgop_topo_cell_encode(&c, NULL, 0, &b) == MGOP_OK);
  CHECK(t_bytes_eq(&b, T_BYTES(t_cell_golden)));

  t_db_fs(&d, "/backups");
  mgop_buf_init(&b, mem, sizeof(mem));
  CHECK(mgop_topo_db_encode(&d, NULL, 0, &b) == MGOP_OK);
  CHECK(t_bytes_eq(&b, T_BYTES(t_db_golden)));

  /* encryption required: BackupLocation gains field 3 = true (0x18 0x01) */
  d.require_encryption = 1;
  mgop_buf_init(&b, mem, sizeof(mem));
  CHECK(mgop_topo_db_encode(&d, NULL, 0, &b) == MGOP_OK);
  CHECK(t_bytes_eq(&b, T_BYTES("\x0a\x08" "postgres"
                               "\x12\x0e" "\x0a\x0a" "\x0a\x08" "/backups" "\x18\x01"
                               "\x1a\x06" "zone-a" "\x1a\x06" "zone-b"
                               "\x22\x10" "\x0a\x0a" "AT_LEAST_2" "\x18\x03" "\x20\x02")));

  /* s3 (BackupLocation field 2) and the multi-cell policy (quorum 4) */
  memset(&d, 0, sizeof(d));
  d.name = "postgres";
  d.s3 = 1;
  d.bucket = "b";
  d.region = "us-east-1";
  d.use_env_credentials = 1;
  d.cells[0] = "z";
  d.ncells = 1;
  d.policy_name = "MULTI_CELL_AT_LEAST_2";
  d.quorum_type = MGOP_QUORUM_MULTI_CELL_AT_LEAST_N;
  d.required_count = 2;
  mgop_buf_init(&b, mem, sizeof(mem));
  CHECK(mgop_topo_db_encode(&d, NULL, 0, &b) == MGOP_OK);
  CHECK(t_bytes_eq(&b, T_BYTES("\x0a\x08" "postgres"
                               "\x12\x12" "\x12\x10" "\x0a\x01" "b" "\x12\x09" "us-east-1" "\x28\x01"
                               "\x1a\x01" "z"
                               "\x22\x1b" "\x0a\x15" "MULTI_CELL_AT_LEAST_2" "\x18\x04" "\x20\x02")));
}

/* Fields Multigres owns survive the operator's read-modify-write. */
static void test_topo_records_keep_unknown(void) {
  /* stored: the golden Database, with BackupLocation.authoritative_generation
   * (field 4) = 7 and a top-level field 9 = 1 that this operator does not know */
  static const char stored[] = "\x0a\x08" "postgres"
                               "\x12\x0e" "\x0a\x0a" "\x0a\x08" "/backups" "\x20\x07"
                               "\x1a\x06" "zone-a" "\x1a\x06" "zone-b"
                               "\x22\x10" "\x0a\x0a" "AT_LEAST_2" "\x18\x03" "\x20\x02"
                               "\x48\x01";
  char mem[512];
  struct mgop_buf b;
  struct mgop_topo_db d;
  t_db_fs(&d, "/backups");
  mgop_buf_init(&b, mem, sizeof(mem));
  CHECK(mgop_topo_db_encode(&d, T_BYTES(stored), &b) == MGOP_OK);
  CHECK(t_bytes_eq(&b, T_BYTES(stored))); /* nothing to change: the same bytes, so no write */
  t_db_fs(&d, "/b2");
  d.ncells = 1; /* zone-b removed */
  mgop_buf_init(&b, mem, sizeof(mem));
  CHECK(mgop_topo_db_encode(&d, T_BYTES(stored), &b) == MGOP_OK);
  CHECK(t_bytes_eq(&b, T_BYTES("\x0a\x08" "postgres"
                               "\x12\x09" "\x0a\x05" "\x0a\x03" "/b2" "\x20\x07"
                               "\x1a\x06" "zone-a"
                               "\x22\x10" "\x0a\x0a" "AT_LEAST_2" "\x18\x03" "\x20\x02"
                               "\x48\x01")));
  { /* a Cell keeps its unknown fields too; a corrupt stored value is an error */
    static const char cstored[] = "\x0a\x01" "a" "\x2a\x02" "hi";
    struct mgop_topo_cell c;
    memset(&c, 0, sizeof(c));
    c.name = "a";
    mgop_buf_init(&b, mem, sizeof(mem));
    CHECK(mgop_topo_cell_encode(&c, T_BYTES(cstored), &b) == MGOP_OK);
    CHECK(t_bytes_eq(&b, T_BYTES(cstored)));
    mgop_buf_init(&b, mem, sizeof(mem));
    CHECK(mgop_topo_cell_encode(&c, T_BYTES("\x0a\x09" "a"), &b) == MGOP_ERR_PARSE);
  }
  { /* the JSON view names what it knows and lists the rest by number */
    char js[1024];
    struct mgop_buf jb;
    struct mgop_jw w;
    mgop_buf_init(&jb, js, sizeof(js));
    mgop_jw_init(&w, &jb);
    CHECK(mgop_topo_db_json(T_BYTES(stored), &w) == MGOP_OK);
    CHECK_STR(mgop_buf_cstr(&jb),
              "{\"name\":\"postgres\",\"backupLocation\":{\"filesystem\":{\"path\":\"/backups\"},\"otherFields\":[4]},"
              "\"cells\":[\"zone-a\",\"zone-b\"],\"bootstrapDurabilityPolicy\":{\"policyName\":\"AT_LEAST_2\","
              "\"quorumType\":\"QUORUM_TYPE_AT_LEAST_N\",\"requiredCount\":2},\"otherFields\":[9]}");
    mgop_buf_init(&jb, js, sizeof(js));
    mgop_jw_init(&w, &jb);
    CHECK(mgop_topo_cell_json(T_BYTES(t_cell_golden), &w) == MGOP_OK);
    CHECK_STR(mgop_buf_cstr(&jb), "{\"name\":\"zone-a\",\"serverAddresses\":[\"c-zone-a-topo.ns.svc:2379\"],"
                                  "\"root\":\"/multigres/zone-a\"}");
  }
}

struct t_kvs { int n; char key[4][128]; unsigned char val[4][64]; size_t vlen[4]; long long mod[4], ver[4]; };
static int t_kv_collect(void *ctx, const struct mgop_etcd_kv *kv) {
  struct t_kvs *k = ctx;
  if (k->n >= 4) return MGOP_ERR_NOMEM;
  snprintf(k->key[k->n], sizeof(k->key[0]), "%s", kv->key);
  memcpy(k->val[k->n], kv->value, kv->value_len < 64 ? kv->value_len : 64);
  k->vlen[k->n] = kv->value_len;
  k->mod[k->n] = kv->mod_revision;
  k->ver[k->n] = kv->version;
  k->n++;
  return MGOP_OK;
}

/* Bodies as etcd 3.5's gateway writes them (int64 as strings, defaults left out). */
static void test_etcd_responses(void) {
  static const char range[] =
      "{\"header\":{\"cluster_id\":\"14841639068965178418\",\"member_id\":\"10276657743932975437\",\"revision\":\"7\","
      "\"raft_term\":\"2\"},\"kvs\":[{\"key\":\"L211bHRpZ3Jlcy9nbG9iYWwvY2VsbHMvem9uZS1hL0NlbGw=\",\"create_revision\":"
      "\"5\",\"mod_revision\":\"6\",\"version\":\"2\",\"value\":\"CgZ6b25lLWE=\"},{\"key\":\"L2E=\",\"create_revision\":"
      "\"3\",\"mod_revision\":\"3\",\"version\":\"1\"}],\"count\":\"2\"}";
  static const char empty[] = "{\"header\":{\"cluster_id\":\"1\",\"member_id\":\"2\",\"revision\":\"7\",\"raft_term\":\"2\"}}";
  static const char txn_ok[] = "{\"header\":{\"revision\":\"8\"},\"succeeded\":true,\"responses\":[{\"response_put\":"
                               "{\"header\":{\"revision\":\"8\"}}}]}";
  static const char txn_no[] = "{\"header\":{\"revision\":\"8\"},\"responses\":[{\"response_range\":{\"header\":{}}}]}";
  static const char del[] = "{\"header\":{\"revision\":\"9\"},\"deleted\":\"1\"}";
  static const char err[] = "{\"error\":\"etcdserver: mvcc: required revision has been compacted\",\"code\":11,"
                            "\"message\":\"etcdserver: mvcc: required revision has been compacted\"}";
  struct t_kvs k;
  long long rev = 0, d = -1;
  int ok = -1;
  char msg[128];
  memset(&k, 0, sizeof(k));
  CHECK(mgop_etcd_parse_range(range, sizeof(range) - 1, t_kv_collect, &k, &rev) == MGOP_OK);
  CHECK(rev == 7 && k.n == 2);
  CHECK_STR(k.key[0], "/multigres/global/cells/zone-a/Cell");
  CHECK(k.vlen[0] == 8 && !memcmp(k.val[0], "\x0a\x06zone-a", 8) && k.mod[0] == 6 && k.ver[0] == 2);
  CHECK_STR(k.key[1], "/a");
  CHECK(k.vlen[1] == 0 && k.mod[1] == 3); /* keys_only: no value */
  memset(&k, 0, sizeof(k));
  CHECK(mgop_etcd_parse_range(empty, sizeof(empty) - 1, t_kv_collect, &k, &rev) == MGOP_OK && k.n == 0 && rev == 7);
  CHECK(mgop_etcd_parse_txn(txn_ok, sizeof(txn_ok) - 1, &ok, &rev) == MGOP_OK && ok == 1 && rev == 8);
  CHECK(mgop_etcd_parse_txn(txn_no, sizeof(txn_no) - 1, &ok, &rev) == MGOP_OK && ok == 0); /* false is left out */
  CHECK(mgop_etcd_parse_delete(del, sizeof(del) - 1, &d) == MGOP_OK && d == 1);
  CHECK(mgop_etcd_parse_delete(empty, sizeof(empty) - 1, &d) == MGOP_OK && d == 0);
  mgop_etcd_error_message(err, sizeof(err) - 1, msg, sizeof(msg));
  CHECK_STR(msg, "etcdserver: mvcc: required revision has been compacted");
  mgop_etcd_error_message("<html>502</html>\n", 17, msg, sizeof(msg));
  CHECK_STR(msg, "<html>502</html> ");
  /* malformed: errors, never a crash */
  CHECK(mgop_etcd_parse_range("[]", 2, t_kv_collect, &k, NULL) != MGOP_OK);
  CHECK(mgop_etcd_parse_range("{\"kvs\":{}}", 10, t_kv_collect, &k, NULL) != MGOP_OK);
  CHECK(mgop_etcd_parse_range("{\"kvs\":[{\"key\":\"@@@@\"}]}", 24, t_kv_collect, &k, NULL) != MGOP_OK);
  CHECK(mgop_etcd_parse_range("{\"kvs\":[{\"key\":\"L2E=\",\"version\":\"x\"}]}", 38, t_kv_collect, &k, NULL) != MGOP_OK);
  CHECK(mgop_etcd_parse_txn("{\"succeeded\":\"yes\"}", 19, &ok, NULL) != MGOP_OK);
  CHECK(mgop_etcd_parse_txn("{\"header\":", 10, &ok, NULL) != MGOP_OK);
}

/* A loopback port nobody listens on (bound, then closed). */
static int t_free_port(void) {
  struct sockaddr_in a;
  socklen_t len = sizeof(a);
  int fd = socket(AF_INET, SOCK_STREAM, 0), port;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || getsockname(fd, (struct sockaddr *)&a, &len)) port = 1;
  else port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

/* No etcd answers: every endpoint is tried, within the deadline, and the
 * error names the last endpoint and why. */
static void test_etcd_unreachable_endpoints(void) {
  static struct mgop_etcd e;
  int p1 = t_free_port(), p2 = t_free_port(), created = -1, rc;
  char ep1[64], ep2[64];
  const char *eps[2] = {ep1, ep2};
  long long t0;
  snprintf(ep1, sizeof(ep1), "http://127.0.0.1:%d", p1);
  snprintf(ep2, sizeof(ep2), "http://127.0.0.1:%d", p2);
  CHECK(mgop_etcd_init(&e, eps, 2, NULL, 0, NULL, 0, NULL, 0) == MGOP_OK);
  t0 = mgop_now_ms();
  rc = mgop_etcd_create(&e, "/x", "v", 1, &created);
  CHECK(rc != MGOP_OK && created == 0);
  CHECK(mgop_now_ms() - t0 < 2 * MGOP_ETCD_TIMEOUT_MS + 500);
  CHECK(strstr(e.last_error, ep1) != NULL && strstr(e.last_error, ep2) != NULL); /* every endpoint tried, named */
  CHECK(strstr(mgop_errmsg(), "refused") != NULL);
  CHECK(e.failures == 1 && e.calls == 1);
  { /* https without a CA is a configuration error naming the field */
    const char *tls_ep[1] = {"https://127.0.0.1:2379"};
    CHECK(mgop_etcd_init(&e, tls_ep, 1, NULL, 0, NULL, 0, NULL, 0) == MGOP_ERR_CONFIG);
    CHECK(strstr(mgop_errmsg(), "caSecret") != NULL);
  }
  mgop_etcd_free(&e);
}

/* A MultiPooler record as multipooler registers it, bytes worked out from
 * proto/clustermetadata.proto: id=1 ID{component=1 MULTIPOOLER, cell=2,
 * name=3}, type=6, hostname=8, and a field this reader does not know. */
static void test_pooler_record(void) {
  static const unsigned char rec[] = {0x0a, 0x0f, 0x08, 0x01, 0x12, 0x06, 'z', 'o', 'n', 'e', '-', 'a', 0x1a, 0x03,
                                      'p', '-', '1', 0x30, 0x01, 0x42, 0x01, 'h', 0x58, 0x07};
  unsigned char big[400];
  struct mgop_topo_pooler p;
  CHECK(mgop_topo_pooler_parse(rec, sizeof(rec), &p) == MGOP_OK);
  CHECK(!strcmp(p.cell, "zone-a") && !strcmp(p.name, "p-1") && p.type == MGOP_POOLER_PRIMARY);
  CHECK(mgop_topo_pooler_parse(rec, 17, &p) == MGOP_OK && p.type == MGOP_POOLER_UNKNOWN); /* type absent */
  CHECK(mgop_topo_pooler_parse(rec, 10, &p) == MGOP_ERR_PARSE);                            /* id cut short */
  CHECK(mgop_topo_pooler_parse(rec, 0, &p) == MGOP_OK && !p.name[0] && !p.type);
  { /* an id that is not a message */
    static const unsigned char bad[] = {0x0a, 0x02, 0x0f, 0xff, 0x30, 0x02};
    CHECK(mgop_topo_pooler_parse(bad, sizeof(bad), &p) == MGOP_ERR_PARSE);
  }
  /* a name longer than fits: "" (never a cut prefix), the type still read */
  memset(big, 'n', sizeof(big));
  big[0] = 0x0a, big[1] = 0x83, big[2] = 0x02; /* id, 259 bytes */
  big[3] = 0x1a, big[4] = 0x80, big[5] = 0x02; /* name, 256 bytes */
  big[262] = 0x30, big[263] = 0x02;
  CHECK(mgop_topo_pooler_parse(big, 264, &p) == MGOP_OK && !p.name[0] && p.type == MGOP_POOLER_REPLICA);
}

/* Pooler roles for Shard status.podRoles: a record counts for StatefulSet
 * "pool-a" only when its name is "pool-a-<ordinal>" (multipooler's
 * --service-id is the pod name) with an ordinal a StatefulSet of at most 32
 * replicas can have; PRIMARY, REPLICA and DRAINED land in their masks. */
static void t_pooler_kv(struct mgop_role_read *rr, const char *name, int type) {
  unsigned char v[128];
  size_t n = strlen(name), at = 0;
  struct mgop_etcd_kv kv;
  v[at++] = 0x0a, v[at++] = (unsigned char)(2 + 2 + 6 + 2 + n);         /* id=1 ID{...} */
  v[at++] = 0x08, v[at++] = 0x01;                                      /* component MULTIPOOLER */
  v[at++] = 0x12, v[at++] = 6, memcpy(v + at, "zone-a", 6), at += 6;   /* cell */
  v[at++] = 0x1a, v[at++] = (unsigned char)n, memcpy(v + at, name, n), at += n;
  if (type) v[at++] = 0x30, v[at++] = (unsigned char)type;             /* type=6 */
  memset(&kv, 0, sizeof(kv));
  kv.value = v, kv.value_len = at;
  CHECK(mgop_role_on_pooler(rr, &kv) == MGOP_OK);
}
static void test_pooler_roles(void) {
  struct mgop_role_read rr = {"pool-a", {0, 0, 0}};
  t_pooler_kv(&rr, "pool-a-0", MGOP_POOLER_REPLICA);
  t_pooler_kv(&rr, "pool-a-2", MGOP_POOLER_PRIMARY);
  t_pooler_kv(&rr, "pool-a-31", MGOP_POOLER_DRAINED);
  t_pooler_kv(&rr, "pool-a-1", 0);                      /* shut down: type cleared */
  t_pooler_kv(&rr, "pool-a-32", MGOP_POOLER_PRIMARY);   /* no such ordinal */
  t_pooler_kv(&rr, "pool-a-1-0", MGOP_POOLER_PRIMARY);  /* another StatefulSet's pod */
  t_pooler_kv(&rr, "pool-ab-3", MGOP_POOLER_PRIMARY);
  t_pooler_kv(&rr, "pool-a-", MGOP_POOLER_PRIMARY);
  t_pooler_kv(&rr, "pool-a-x", MGOP_POOLER_PRIMARY);
  CHECK(rr.mask[0] == 1u << 2 && rr.mask[1] == 1u && rr.mask[2] == 1u << 31);
  { /* not a protobuf message: skipped, not an error that stops the range */
    struct mgop_etcd_kv kv;
    static const unsigned char junk[] = {0x0a, 0x7f};
    memset(&kv, 0, sizeof(kv));
    kv.value = junk, kv.value_len = sizeof(junk);
    CHECK(mgop_role_on_pooler(&rr, &kv) == MGOP_OK && rr.mask[0] == 1u << 2);
  }
}

/* pods of two StatefulSets, 3 each, every one stale and Ready */
static int t_roll_pods(struct mgop_roll_pod *p, int primary_set, int primary_ordinal) {
  int n = 0;
  for (int s = 0; s < 2; s++)
    for (int o = 0; o < 3; o++, n++) {
      memset(&p[n], 0, sizeof(p[n]));
      snprintf(p[n].name, sizeof(p[n].name), "sts%d-%d", s, o);
      p[n].set = s, p[n].ordinal = o, p[n].stale = 1, p[n].ready = 1;
      p[n].primary = s == primary_set && o == primary_ordinal;
    }
  return n;
}

/* The order a shard is rolled in, one decision per replacement. */
static void t_roll_expect(struct mgop_roll_pod *p, int n, const char *want, int guessed) {
  char got[200] = "";
  for (int step = 0; step < n + 1; step++) {
    struct mgop_roll_pick k = mgop_roll_next(p, n, 1);
    CHECK(!k.wait);
    CHECK(k.stale == n - step);
    if (k.pod < 0) break;
    CHECK(k.primary == (step == n - 1)); /* the primary, and only it, last */
    if (k.primary) CHECK(k.guessed == guessed);
    snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", step ? " " : "", p[k.pod].name);
    p[k.pod].stale = 0; /* replaced, Ready again */
  }
  CHECK(!strcmp(got, want));
  if (strcmp(got, want)) fprintf(stderr, "    order: %s\n    want:  %s\n", got, want);
}

/* The drain's steps (requested -> draining -> ready-for-deletion), its
 * grace and its timeout; a pod whose drain is under way is rolled first. */
static void test_drain_steps(void) {
  struct mgop_roll_pod p[8];
  const long long t = 1800000000;
  jsmntok_t tok[64];
  struct mgop_json j;
  long long at;
  static const char pod[] = "{\"metadata\":{\"name\":\"x\",\"annotations\":{\"drain.multigres.com/state\":"
                            "\"draining\",\"drain.multigres.com/requested-at\":\"2027-01-15T08:00:00Z\"}}}";
  int n;
  CHECK(mgop_drain_next(MGOP_DRAIN_NONE, 0, t, 1) == MGOP_DRAIN_DO_REQUEST);
  CHECK(mgop_drain_next(MGOP_DRAIN_REQUESTED, t, t, 1) == MGOP_DRAIN_DO_DRAIN);
  CHECK(mgop_drain_next(MGOP_DRAIN_DRAINING, t, t + MGOP_DRAIN_GRACE_S - 1, 1) == MGOP_DRAIN_DO_WAIT);
  CHECK(mgop_drain_next(MGOP_DRAIN_DRAINING, t, t + MGOP_DRAIN_GRACE_S, 1) == MGOP_DRAIN_DO_DELETE);
  CHECK(mgop_drain_next(MGOP_DRAIN_DRAINING, 0, t, 1) == MGOP_DRAIN_DO_DELETE); /* no time: no wait */
  { /* --drain-grace: the wait follows it, bounded below the drain timeout */
    struct mgop_options o;
    int exit_now;
    char *g60[] = {"x", "--drain-grace=60s", NULL}, *g0[] = {"x", "--drain-grace", "0", NULL};
    char *gbig[] = {"x", "--drain-grace=241s", NULL};
    int saved_level = mgop_log_level, saved_json = mgop_log_json;
    memset(&o, 0, sizeof(o));
    o.watch_namespace = "";
    CHECK(mgop_parse_flags(2, g60, &o, &exit_now) == 0 && mgop_drain_grace_s == 60);
    CHECK(mgop_drain_next(MGOP_DRAIN_DRAINING, t, t + 59, 1) == MGOP_DRAIN_DO_WAIT);
    CHECK(mgop_drain_next(MGOP_DRAIN_DRAINING, t, t + 60, 1) == MGOP_DRAIN_DO_DELETE);
    CHECK(mgop_parse_flags(3, g0, &o, &exit_now) == 0 && mgop_drain_grace_s == 0);
    CHECK(mgop_drain_next(MGOP_DRAIN_DRAINING, t, t, 1) == MGOP_DRAIN_DO_DELETE);
    fprintf(stderr, "    (an expected error follows)\n");
    CHECK(mgop_parse_flags(2, gbig, &o, &exit_now) == 2 && mgop_drain_grace_s == 0);
    mgop_drain_grace_s = MGOP_DRAIN_GRACE_S;
    mgop_log_level = saved_level, mgop_log_json = saved_json;
  }
  CHECK(mgop_drain_next(MGOP_DRAIN_READY, t, t, 0) == MGOP_DRAIN_DO_DELETE);
  CHECK(mgop_drain_next(MGOP_DRAIN_REQUESTED, t, t + MGOP_DRAIN_TIMEOUT_S, 1) == MGOP_DRAIN_DO_TIMEOUT);
  CHECK(mgop_drain_next(MGOP_DRAIN_REQUESTED, t, t + MGOP_DRAIN_TIMEOUT_S, 0) == MGOP_DRAIN_DO_DRAIN); /* a scale-down waits */
  CHECK(mgop_json_parse(&j, pod, strlen(pod), tok, 64) == 0);
  CHECK(mgop_drain_of(&j, 0, &at) == MGOP_DRAIN_DRAINING);
  {
    struct tm tm = {0};
    tm.tm_year = 2027 - 1900, tm.tm_mon = 0, tm.tm_mday = 15, tm.tm_hour = 8;
    CHECK(at == (long long)timegm(&tm));
  }
  n = t_roll_pods(p, 1, 1);
  p[3].drain = MGOP_DRAIN_REQUESTED; /* sts1-0: its drain began (an earlier pick) */
  {
    struct mgop_roll_pick k = mgop_roll_next(p, n, 1);
    CHECK(k.pod == 3 && !k.primary);
  }
  p[3].drain = MGOP_DRAIN_NONE, p[4].drain = MGOP_DRAIN_DRAINING; /* sts1-1, the primary, mid-drain */
  {
    struct mgop_roll_pick k = mgop_roll_next(p, n, 1);
    CHECK(k.pod == 4 && k.primary);
  }
}

static void test_roll_order(void) {
  struct mgop_roll_pod p[8];
  int n = t_roll_pods(p, 1, 1); /* the primary: ordinal 1 of the second StatefulSet */
  t_roll_expect(p, n, "sts0-2 sts0-1 sts0-0 sts1-2 sts1-0 sts1-1", 0);
  n = t_roll_pods(p, -1, -1); /* no role known: ordinal 0 of the first StatefulSet stands in */
  t_roll_expect(p, n, "sts0-2 sts0-1 sts1-2 sts1-1 sts1-0 sts0-0", 1);
  n = t_roll_pods(p, 0, 2);
  p[1].stale = p[4].stale = 0; /* some already updated: only the stale ones, primary last */
  {
    struct mgop_roll_pick k = mgop_roll_next(p, n, 1);
    CHECK(k.pod == 0 && k.stale == 4);
  }
  for (int i = 0; i < n; i++) p[i].stale = 0; /* nothing stale: nothing to do, nothing to wait for */
  {
    struct mgop_roll_pick k = mgop_roll_next(p, n, 0);
    CHECK(k.pod == -1 && !k.wait && k.stale == 0);
  }
}

/* Never a second pod down: a replacement not Ready yet, a pod terminating,
 * a StatefulSet short of pods. A stale pod down on its own goes first. */
static void test_roll_waits(void) {
  struct mgop_roll_pod p[8];
  struct mgop_roll_pick k;
  int n = t_roll_pods(p, 1, 1);
  p[5].stale = 0, p[5].ready = 0; /* sts1-2 just replaced, not Ready yet */
  k = mgop_roll_next(p, n, 1);
  CHECK(k.pod == -1 && k.wait && k.blocker == 5);
  p[5].ready = 1, p[2].terminating = 1; /* sts0-2 going */
  k = mgop_roll_next(p, n, 1);
  CHECK(k.pod == -1 && k.wait && k.blocker == 2);
  p[2].terminating = 0;
  k = mgop_roll_next(p, n, 0); /* its replacement not created yet */
  CHECK(k.pod == -1 && k.wait && k.blocker == -1);
  p[0].ready = 0; /* a stale replica down on its own: replaced first */
  k = mgop_roll_next(p, n, 1);
  CHECK(k.pod == 0 && !k.primary && !k.wait);
  p[3].ready = 0; /* two down: wait */
  k = mgop_roll_next(p, n, 1);
  CHECK(k.pod == -1 && k.wait);
  p[0].ready = 1, p[3].ready = 1, p[4].ready = 0; /* the primary down: never replaced while down */
  k = mgop_roll_next(p, n, 1);
  CHECK(k.pod == -1 && k.wait && k.blocker == 4);
}

/* A StatefulSet's revision counts only once its controller has seen the
 * spec: the generation the watch shows and the one our apply returned. */
static void test_roll_observed(void) {
  static const char *const docs[] = {
      /* the controller is behind the spec: updateRevision is the old one */
      "{\"metadata\":{\"generation\":5},\"spec\":{\"replicas\":1},\"status\":{\"observedGeneration\":4,"
      "\"replicas\":1,\"updatedReplicas\":1,\"readyReplicas\":1,\"updateRevision\":\"s-old\"}}",
      /* it caught up: one pod stale */
      "{\"metadata\":{\"generation\":5},\"spec\":{\"replicas\":1},\"status\":{\"observedGeneration\":5,"
      "\"replicas\":1,\"updatedReplicas\":0,\"readyReplicas\":1,\"updateRevision\":\"s-new\"}}",
      /* a new StatefulSet its controller has not reported on */
      "{\"metadata\":{\"generation\":1},\"spec\":{\"replicas\":1}}",
  };
  static const int want[] = {0, 1, 0};
  struct mgop_fp f;
  struct mgop_json j;
  for (int i = 0; i < 3; i++) {
    memset(&f, 0, sizeof(f));
    CHECK(mgop_json_parse(&j, docs[i], strlen(docs[i]), t_tok, 256) == 0);
    mgop_json_i64(&j, mgop_json_path(&j, 0, "metadata.generation"), &f.seen_gen);
    mgop_observe_readiness(K_STS, &j, 0, &f);
    CHECK(mgop_sts_observed(&f) == want[i]);
    if (i == 1) {
      CHECK(f.stale == 1 && f.update_rev == mgop_fnv1a64(MGOP_FNV64_INIT, "s-new", 5));
      f.applied_gen = 6; /* our apply's generation, which the watch has not shown yet */
      CHECK(!mgop_sts_observed(&f));
      f.observed_gen = 6;
      CHECK(mgop_sts_observed(&f));
    }
  }
}

/* Small blocks mbedTLS frees stay in the thread's cache and come back,
 * zeroed, to the next request of their size class, without libc's lock;
 * they are not counted as in use; each class keeps MGOP_TLS_CACHE_DEPTH;
 * and the bound still counts every block mbedTLS holds. */
static void test_tls_heap_cache(void) {
  void *a, *b, *c[MGOP_TLS_CACHE_DEPTH + 2];
  size_t used0 = __atomic_load_n(&mgop_tls_heap_used, __ATOMIC_RELAXED);
  CHECK((a = mbedtls_calloc(1, 100)) != NULL);
  CHECK(malloc_usable_size(a) >= 128); /* its class: 100 rounded up to 128 */
  memset(a, 0xab, 100);
  mbedtls_free(a);
  CHECK(__atomic_load_n(&mgop_tls_heap_used, __ATOMIC_RELAXED) == used0); /* cached is not in use */
  CHECK((b = mbedtls_calloc(4, 25)) == a); /* the same class: the same block */
  CHECK(((unsigned char *)b)[0] == 0 && ((unsigned char *)b)[99] == 0);
  CHECK(__atomic_load_n(&mgop_tls_heap_used, __ATOMIC_RELAXED) == used0 + malloc_usable_size(b));
  mbedtls_free(b);
  for (int i = 0; i < MGOP_TLS_CACHE_DEPTH + 2; i++) CHECK((c[i] = mbedtls_calloc(1, 64)) != NULL);
  for (int i = 0; i < MGOP_TLS_CACHE_DEPTH + 2; i++) mbedtls_free(c[i]);
  CHECK(mgop_tls_cache.n[64 / MGOP_TLS_CACHE_STEP - 1] <= MGOP_TLS_CACHE_DEPTH);
  CHECK(__atomic_load_n(&mgop_tls_heap_used, __ATOMIC_RELAXED) == used0);
  mgop_tls_cache_flush(&mgop_tls_cache); /* what a thread's end does */
  for (int k = 0; k < MGOP_TLS_CACHE_CLASSES; k++) CHECK(mgop_tls_cache.n[k] == 0);
}

/* While one connection's full handshake brings a server's ticket, another
 * to the same server and credentials waits for it; when the first answers
 * without one (or fails), the waiter goes on and brings it itself; and a
 * waiter never waits past its own deadline. */
struct t_waiter { struct mgop_conn c; long long deadline, waited; };
static void *t_ticket_waiter(void *arg) {
  struct t_waiter *w = arg;
  long long t0 = mgop_now_ms();
  mgop_tls_sess_offer(&w->c, w->deadline);
  w->waited = mgop_now_ms() - t0;
  return NULL;
}

static void test_tls_ticket_wait(void) {
  struct mgop_conn first;
  struct t_waiter w;
  pthread_t th;
  mgop_conn_init(&first);
  mgop_conn_init(&w.c);
  first.sess_key = w.c.sess_key = 0x5e55105e55105eull;
  mgop_tls_sess_offer(&first, mgop_now_ms() + 1000);
  CHECK(first.brings == 1 && !first.offered); /* nobody's ticket: it brings one */
  w.deadline = mgop_now_ms() + 5000;
  CHECK(pthread_create(&th, NULL, t_ticket_waiter, &w) == 0);
  usleep(30 * 1000);
  mgop_tls_sess_not_coming(&first); /* answered without a ticket */
  pthread_join(th, NULL);
  CHECK(first.brings == 0);
  CHECK(w.waited >= 20 && w.waited < MGOP_TLS_TICKET_WAIT_MS); /* it waited, and was woken */
  CHECK(w.c.brings == 1 && !w.c.offered);                      /* now it brings the ticket */
  { /* a third waits no longer than its deadline */
    struct t_waiter late;
    /* w's turn to bring it starts now: on a loaded machine the waiter's
     * thread may have taken it longer ago than the third's deadline, and
     * then the third rightly waits less (CI once saw that) */
    pthread_mutex_lock(&mgop_tls_sess.mu);
    for (int i = 0; i < MGOP_TLS_SESSIONS; i++)
      if (mgop_tls_sess.slot[i].key == w.c.sess_key && !mgop_tls_sess.slot[i].used)
        mgop_tls_sess.slot[i].coming_until = mgop_now_ms() + MGOP_TLS_TICKET_WAIT_MS;
    pthread_mutex_unlock(&mgop_tls_sess.mu);
    mgop_conn_init(&late.c);
    late.c.sess_key = w.c.sess_key;
    late.deadline = mgop_now_ms() + 20;
    t_ticket_waiter(&late);
    CHECK(late.waited >= 15 && late.waited < MGOP_TLS_TICKET_WAIT_MS && !late.c.brings && !late.c.offered);
  }
  mgop_conn_close(&w.c); /* closing clears what it was to bring */
  CHECK(w.c.brings == 0);
  {
    struct t_waiter next;
    mgop_conn_init(&next.c);
    next.c.sess_key = w.c.sess_key;
    next.deadline = mgop_now_ms() + 1000;
    t_ticket_waiter(&next);
    CHECK(next.waited < 20 && next.c.brings == 1); /* nobody brings one: no wait */
    mgop_tls_sess_not_coming(&next.c);
  }
}

/* mbedTLS's heap is libc's behind a counter: blocks are handed out until the
 * bytes in use would pass MGOP_TLS_HEAP_SIZE, then refused (NULL, which
 * mbedTLS reports as an allocation failure); freeing makes room again, and
 * the high water the metric shows covers the peak. */
static void test_tls_heap_bound(void) {
  enum { BLOCK = 64 * 1024, MAXB = MGOP_TLS_HEAP_SIZE / BLOCK + 2 };
  void *b[MAXB];
  int n = 0;
  size_t hw0 = mgop_tls_heap_high_water();
  CHECK(mbedtls_calloc((size_t)MGOP_TLS_HEAP_SIZE + 1, 1) == NULL); /* one block beyond the bound */
  CHECK(mbedtls_calloc(SIZE_MAX / 2, 4) == NULL);                     /* n * size overflows */
  while (n < MAXB && (b[n] = mbedtls_calloc(1, BLOCK))) {
    CHECK(((unsigned char *)b[n])[BLOCK - 1] == 0); /* calloc's zeros */
    n++;
  }
  CHECK(n > 0 && n < MAXB); /* refused before the bound was passed */
  CHECK(mgop_tls_heap_high_water() <= (size_t)MGOP_TLS_HEAP_SIZE);
  CHECK(mgop_tls_heap_high_water() >= (size_t)n * BLOCK && mgop_tls_heap_high_water() >= hw0);
  mbedtls_free(b[--n]);
  CHECK((b[n] = mbedtls_calloc(1, BLOCK)) != NULL); /* room again */
  n++;
  while (n > 0) mbedtls_free(b[--n]);
  mbedtls_free(NULL);
  CHECK((b[0] = mbedtls_calloc(8, BLOCK / 8)) != NULL); /* all handed back */
  mbedtls_free(b[0]);
}
