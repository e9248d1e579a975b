/* libFuzzer target: kubeconfig YAML. Relative file paths resolve under a
 * directory that does not exist, so no real file is read. */
#define MGOP_NO_MAIN
#include "../../multigres-op.c"

static struct mgop_kubecfg fz_cfg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mgop_kubecfg_from_yaml(&fz_cfg, (const char *)data, size, "/nonexistent-fuzz-dir", NULL);
  return 0;
}
