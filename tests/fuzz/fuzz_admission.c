/* libFuzzer target: the admission webhook's AdmissionReview decoder and
 * policy (POST /validate), offline: no API server, so every template
 * reference is missing. Whatever the body: no crash, and the answer is a
 * 400 or a well-formed AdmissionReview response echoing request.uid, with
 * a status message whenever it denies. */
#define MGOP_NO_MAIN
#include "../../multigres-op.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char out[256 * 1024];
  static jsmntok_t tok[4096];
  static int init;
  struct mgop_http_req req;
  struct mgop_srv_resp resp;
  struct mgop_json j;
  if (!init) {
    mgop_arena_init(&mgop_server.arena, mgop_server.arena_mem, sizeof(mgop_server.arena_mem));
    snprintf(mgop_wh.operator_user, sizeof(mgop_wh.operator_user), "system:serviceaccount:multigres-operator:multigres-operator");
    mgop_log_level = MGOP_ERROR + 1; /* quiet */
    init = 1;
  }
  memset(&req, 0, sizeof(req));
  memset(&resp, 0, sizeof(resp));
  snprintf(req.method, sizeof(req.method), "POST");
  snprintf(req.path, sizeof(req.path), "/validate");
  mgop_buf_init(&resp.body, out, sizeof(out));
  mgop_serve_webhook(NULL, &req, (const char *)data, size, &resp);
  if (resp.status == 400) return 0;
  if (resp.status != 200 || resp.body.overflow) __builtin_trap();
  if (mgop_json_parse(&j, resp.body.p, resp.body.len, tok, 4096)) __builtin_trap(); /* our own JSON */
  {
    int allowed = -1, r = mgop_json_key(&j, 0, "response");
    char msg[8];
    if (r < 0 || mgop_json_bool(&j, mgop_json_key(&j, r, "allowed"), &allowed)) __builtin_trap();
    if (!allowed && mgop_json_path_str(&j, r, "status.message", msg, sizeof(msg)) == MGOP_ERR_NOTFOUND) __builtin_trap();
  }
  return 0;
}
