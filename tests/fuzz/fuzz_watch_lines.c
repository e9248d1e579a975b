/* libFuzzer target: a watch stream body (lines of JSON events) through the
 * line splitter and the event decoder, as the watch reads it. */
#define MGOP_NO_MAIN
#include "../../multigres-op.c"

static struct mgop_watch fz_w;
static void fz_event(void *ctx, struct mgop_watch *w, const char *type, const struct mgop_json *j, int obj) {
  char name[64];
  (void)ctx; (void)w; (void)type;
  mgop_json_path_str(j, obj, "metadata.name", name, sizeof(name));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mgop_log_level = MGOP_ERROR + 1;
  mgop_watch_init(&fz_w, NULL, "Fuzz", "/x", NULL, fz_event, NULL);
  mgop_lines_feed(&fz_w.lines, (const char *)data, size);
  return 0;
}
