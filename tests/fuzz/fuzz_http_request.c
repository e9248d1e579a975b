/* libFuzzer target: the HTTP server's request parser, fed a connection's
 * bytes and parsing request after request as a pipelined connection does.
 * Whatever the input: no crash, and the answers are consistent (a complete
 * head parses the same alone, its strict prefixes are incomplete, errors
 * carry a 4xx/5xx status and a reason). The first byte picks the limits. */
#define MGOP_NO_MAIN
#include "../../multigres-op.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static struct mgop_http_req r, r2;
  const char *p;
  size_t off = 0, head_max, body_max;
  if (size < 1) return 0;
  head_max = 16 + (size_t)(data[0] & 0x7f) * 128; /* 16 .. 16272 */
  body_max = data[0] & 0x80 ? 100 : 1024 * 1024;
  p = (const char *)data + 1;
  size--;
  for (int k = 0; k < 256 && off < size; k++) {
    size_t left = size - off;
    int rc = mgop_http_parse_request(p + off, left, head_max, body_max, &r);
    if (rc == MGOP_ERR_AGAIN) {
      if (left >= head_max) __builtin_trap(); /* a full buffer is never "incomplete" */
      break;
    }
    if (rc != MGOP_OK) {
      int big = r.status == 413 || r.status == 414 || r.status == 431;
      if (r.status < 400 || r.status > 505 || !r.error || !r.error[0]) __builtin_trap();
      if ((rc == MGOP_ERR_TOOBIG) != big || (rc != MGOP_ERR_TOOBIG && rc != MGOP_ERR_HTTP)) __builtin_trap();
      break;
    }
    if (r.status != 0 || r.head_len == 0 || r.head_len > left || r.head_len > head_max) __builtin_trap();
    if (!r.method[0] || strlen(r.method) >= sizeof(r.method)) __builtin_trap();
    if (!(r.path[0] == '/' || (r.path[0] == '*' && !r.path[1]))) __builtin_trap();
    if (strlen(r.path) >= MGOP_HTTP_TARGET_MAX || strlen(r.query) >= MGOP_HTTP_TARGET_MAX) __builtin_trap();
    if (r.body_len > body_max || (r.content_length < 0 ? r.body_len != 0 : (size_t)r.content_length != r.body_len))
      __builtin_trap();
    if (r.minor < 0 || r.minor > 9 || r.nheaders > MGOP_HTTP_HEADERS_MAX) __builtin_trap();
    /* the head alone parses the same; strict prefixes are incomplete */
    if (mgop_http_parse_request(p + off, r.head_len, head_max, body_max, &r2) != MGOP_OK || r2.head_len != r.head_len ||
        strcmp(r2.path, r.path) || strcmp(r2.query, r.query) || r2.body_len != r.body_len || r2.close != r.close)
      __builtin_trap();
    if (mgop_http_parse_request(p + off, r.head_len - 1, head_max, body_max, &r2) != MGOP_ERR_AGAIN) __builtin_trap();
    if (mgop_http_parse_request(p + off, r.head_len / 2, head_max, body_max, &r2) != MGOP_ERR_AGAIN) __builtin_trap();
    if (r.body_len > left - r.head_len) break;
    off += r.head_len + r.body_len;
  }
  return 0;
}
