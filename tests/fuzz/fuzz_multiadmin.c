/* libFuzzer target: multiadmin's GetBackups response parser and the RFC 3339
 * reader it uses. Whatever the bytes, the parser ends, and what it reports
 * is consistent: counts within the list, the newest complete backup never
 * newer than the newest of any status, ids NUL-terminated. */
#define MGOP_NO_MAIN
#include "../../multigres-op.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct mgop_ma_backups b;
  long long t;
  if (mgop_ma_parse_backups((const char *)data, size, &b) == MGOP_OK) {
    if (b.complete + b.failed + b.incomplete > b.n) __builtin_trap();
    if (b.complete_s > b.newest_s) __builtin_trap();
    if (b.complete_s && !b.complete) __builtin_trap();
    if (memchr(b.complete_id, 0, sizeof(b.complete_id)) == NULL || memchr(b.newest_id, 0, sizeof(b.newest_id)) == NULL)
      __builtin_trap();
  }
  if (size < 64) {
    char s[64];
    memcpy(s, data, size);
    s[size] = 0;
    (void)mgop_rfc3339_s(s, size, &t);
  }
  return 0;
}
