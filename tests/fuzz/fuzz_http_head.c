/* libFuzzer target: the HTTP response head parser. */
#define MGOP_NO_MAIN
#include "../../multigres-op.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct mgop_http_resp r;
  if (mgop_http_parse_head((const char *)data, size, &r, 0) == MGOP_OK) {
    if (r.status < 100 || r.status > 599) __builtin_trap();
    if (r.chunked && r.content_length != -1) __builtin_trap();
  }
  return 0;
}
