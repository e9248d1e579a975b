/* libFuzzer target: the etcd gateway's responses (range, txn, delete,
 * error, maintenance status, member list) on arbitrary input: errors, never a crash or a read past the end. */
#define MGOP_NO_MAIN
#include "../../multigres-op.c"

static int fz_kv(void *ctx, const struct mgop_etcd_kv *kv) {
  size_t *sum = ctx;
  if (kv->key[kv->key_len] != 0) __builtin_trap(); /* keys are NUL-terminated */
  for (size_t i = 0; i < kv->value_len; i++) *sum += kv->value[i];
  return MGOP_OK;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *body = (const char *)data;
  size_t sum = 0;
  long long rev, deleted;
  int ok;
  char msg[256];
  mgop_etcd_parse_range(body, size, fz_kv, &sum, &rev);
  mgop_etcd_parse_txn(body, size, &ok, &rev);
  if (ok != 0 && ok != 1) __builtin_trap();
  mgop_etcd_parse_delete(body, size, &deleted);
  mgop_etcd_error_message(body, size, msg, sizeof(msg));
  if (strlen(msg) >= sizeof(msg)) __builtin_trap();
  {
    static struct mgop_etcd_members m;
    struct mgop_etcd_status st;
    if (mgop_etcd_parse_status(body, size, &st) == MGOP_OK && (st.db_size < 0 || st.db_in_use < 0)) __builtin_trap();
    if (mgop_etcd_parse_members(body, size, &m) == MGOP_OK) {
      if (m.n < 0 || m.n > MGOP_ETCD_ENDPOINTS_MAX) __builtin_trap();
      for (int i = 0; i < m.n; i++)
        if (strlen(m.url[i]) >= sizeof(m.url[i]) || strlen(m.name[i]) >= sizeof(m.name[i])) __builtin_trap();
    }
  }
  return 0;
}
