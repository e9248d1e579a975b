/* libFuzzer target: the postgresInitSecretsRef document check (the JSON a
 * user's Secret holds, as pgctld reads it). Whatever the bytes, the check
 * ends; a refusal always says why, in a bounded NUL-terminated message; an
 * accepted document has no superuser among its roles. */
#define MGOP_NO_MAIN
#include "../../multigres-op.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static jsmntok_t tok[4096];
  struct mgop_json j;
  char why[300];
  int ok;
  if (mgop_json_parse(&j, (const char *)data, size, tok, sizeof(tok) / sizeof(tok[0])) != MGOP_OK) return 0;
  memset(why, 0x55, sizeof(why));
  why[0] = 0;
  ok = mgop_init_secrets_valid(&j, "postgres", why, sizeof(why));
  if (ok != 0 && ok != 1) __builtin_trap();
  if (!ok && (!why[0] || !memchr(why, 0, sizeof(why)))) __builtin_trap();
  if (ok && mgop_json_key(&j, mgop_json_key(&j, 0, "roles"), "postgres") >= 0) __builtin_trap();
  return 0;
}
