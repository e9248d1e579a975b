/* libFuzzer target: the HTTP server's connection state machine. Each input
 * is what one client sends on one plain-HTTP connection (then it shuts its
 * side); the server is stepped as the operator's loop steps it, and the
 * client drains the answers. Whatever the bytes: no crash, the server
 * closes the connection in bounded time, and afterwards holds no
 * connection and no pool buffer. */
#define MGOP_NO_MAIN
#include "../../multigres-op.c"

static struct mgop_srv fz_srv;
static struct mgop_srv_conn fz_conns[2];
static char fz_drain[65536];

static void fz_handler(void *ctx, const struct mgop_http_req *req, const char *body, size_t n,
                       struct mgop_srv_resp *resp) {
  (void)ctx;
  resp->status = req->path[1] == 'n' ? 404 : 200;
  if (!strncmp(req->path, "/big", 4)) {
    for (int i = 0; i < 40000; i++) mgop_buf_append(&resp->body, "x", 1);
  } else {
    mgop_buf_printf(&resp->body, "%s %s %zu\n", req->method, req->path, n);
    mgop_buf_append(&resp->body, body, n);
  }
  if (req->path[1] == 'c') resp->close = 1;
}

static void fz_pump(void) {
  struct pollfd pfd[4];
  int n = mgop_srv_pollfds(&fz_srv, pfd, 4);
  poll(pfd, (nfds_t)n, 1);
  mgop_srv_step(&fz_srv, pfd, n, mgop_now_ms());
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct sockaddr_in a;
  size_t off = 0;
  long long end;
  static int inited;
  int fd, closed = 0;
  if (!inited) {
    inited = 1;
    signal(SIGPIPE, SIG_IGN);
    mgop_log_level = MGOP_ERROR + 1;
    mgop_srv_init(&fz_srv, "fuzz", 0, fz_conns, 2, fz_handler, NULL);
    fz_srv.body_max = 64 * 1024;
    if (mgop_srv_listen(&fz_srv, "127.0.0.1:0")) __builtin_trap();
  }
  fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)mgop_srv_port(&fz_srv));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || (connect(fd, (struct sockaddr *)&a, sizeof(a)) && errno != EINPROGRESS)) __builtin_trap();
  end = mgop_now_ms() + 5000;
  if (size == 0) shutdown(fd, SHUT_WR);
  while (!closed) {
    if (off < size) {
      ssize_t w = send(fd, data + off, size - off, MSG_NOSIGNAL);
      if (w > 0) off += (size_t)w;
      else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOTCONN) off = size; /* reset */
      if (off == size) shutdown(fd, SHUT_WR);
    }
    fz_pump();
    for (;;) {
      ssize_t r = recv(fd, fz_drain, sizeof(fz_drain), 0);
      if (r > 0) continue;
      if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) closed = off == size || r < 0;
      break;
    }
    if (mgop_now_ms() > end) __builtin_trap(); /* the server must not hang on to a finished client */
  }
  close(fd);
  while (fz_srv.stats.active > 0) {
    fz_pump();
    if (mgop_now_ms() > end + 2000) __builtin_trap();
  }
  for (int i = 0; i < MGOP_SRV_BIG_SLOTS; i++)
    if (mgop_srv_pool_used[i]) __builtin_trap(); /* a pool buffer leaked */
  return 0;
}
