/* bench/serving_latency.c WEBHOOK_PORT PROBE_PORT NAMESPACE SECONDS RATE
 *
 * Latency of the serving path as the API server sees it: AdmissionReview
 * POSTs to https://127.0.0.1:WEBHOOK_PORT/validate over one keep-alive TLS
 * connection (the API server keeps its connections), RATE per second, each
 * a MultigresCluster that the webhook resolves in full; and a GET /healthz
 * on the probe port after each. Prints
 *   webhook_p50_ms webhook_p99_ms healthz_p50_ms healthz_p99_ms count errors
 * on one line (and with SERVING_SAMPLES=FILE, each webhook sample in order
 * as "ms-since-start latency-ms" to FILE, to place the outliers in time).
 * Every answer is checked: a review must come back 200 and allowed with its
 * uid echoed, /healthz must say ok; anything else counts as an error.
 *
 * A C client on the operator's own HTTP/1.1 and TLS code (multigres-op.h),
 * like the API server a compiled client: a Python generator spends more of
 * each request in itself than the webhook does, and on a loaded 2-core
 * machine waits for the CPU after every answer, which the figures would then
 * include. It asks for a short scheduler slice (0.1 ms, as the operator's
 * serving thread did before its 0.7 ms), so it is picked soon after each
 * answer. The certificate is not verified (t_webhook checks it). */
#define MULTIGRES_OP_IMPLEMENTATION
#include "../multigres-op.h"
#include <sys/syscall.h>

#define MAX_SAMPLES 200000

static double wl[MAX_SAMPLES], hl[MAX_SAMPLES], wat[MAX_SAMPLES];

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double *xs, int n, double q) {
  int i;
  if (!n) return -1.0;
  qsort(xs, (size_t)n, sizeof(xs[0]), cmp_double);
  i = (int)(q * n);
  return xs[i < n ? i : n - 1];
}

static void short_slice(void) {
#ifdef SYS_sched_setattr
  struct { uint32_t size, policy; uint64_t flags; int32_t nice; uint32_t prio; uint64_t runtime, deadline, period; } a =
      {48, 0, 0, 0, 0, 100000, 0, 0};
  if (syscall(SYS_sched_setattr, 0, &a, 0)) fprintf(stderr, "serving_latency: no short scheduler slice for the generator\n");
#endif
}

static int client(struct mgop_kube *k, struct mgop_kubecfg *cfg, const char *scheme, const char *port) {
  memset(cfg, 0, sizeof(*cfg));
  snprintf(cfg->source, sizeof(cfg->source), "bench");
  snprintf(cfg->scheme, sizeof(cfg->scheme), "%s", scheme);
  snprintf(cfg->host, sizeof(cfg->host), "127.0.0.1");
  snprintf(cfg->port, sizeof(cfg->port), "%s", port);
  cfg->insecure = 1;
  return mgop_kube_init(k, cfg);
}

static double now_ms(void) { return (double)mgop_now_us() / 1000.0; }

int main(int argc, char **argv) {
  static struct mgop_kubecfg hcfg, pcfg;
  static struct mgop_kube hook, probe;
  static char out[64 * 1024], body[2048];
  double seconds, rate, start, end;
  const char *samples = getenv("SERVING_SAMPLES");
  int nw = 0, nh = 0, errors = 0;
  long i = 0;
  if (argc != 6) {
    fprintf(stderr, "usage: serving_latency WEBHOOK_PORT PROBE_PORT NAMESPACE SECONDS RATE\n");
    return 2;
  }
  seconds = atof(argv[4]), rate = atof(argv[5]);
  if (rate <= 0 || seconds <= 0) return 2;
  short_slice();
  if (client(&hook, &hcfg, "https", argv[1]) || client(&probe, &pcfg, "http", argv[2])) {
    fprintf(stderr, "serving_latency: %s\n", mgop_errmsg());
    return 1;
  }
  start = now_ms();
  end = start + seconds * 1000.0;
  while (now_ms() < end) {
    double due = now_ms() + 1000.0 / rate, t0, t1;
    char uid[32], want[64];
    struct mgop_buf b;
    int status = 0, n;
    snprintf(uid, sizeof(uid), "bench-%ld", i++);
    n = snprintf(body, sizeof(body),
                 "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"%s\","
                 "\"operation\":\"CREATE\",\"namespace\":\"%s\",\"kind\":{\"group\":\"multigres.com\",\"version\":"
                 "\"v1alpha1\",\"kind\":\"MultigresCluster\"},\"userInfo\":{\"username\":\"bench\"},\"object\":"
                 "{\"metadata\":{\"name\":\"load\"},\"spec\":{\"cells\":[{\"name\":\"zone-a\",\"zone\":"
                 "\"us-east-1a\"}]}}}}", uid, argv[3]);
    snprintf(want, sizeof(want), "\"uid\":\"%s\",\"allowed\":true", uid);
    mgop_buf_init(&b, out, sizeof(out) - 1);
    t0 = now_ms();
    if (mgop_kube_request(&hook, "POST", "/validate", "application/json", body, (size_t)n, &b, &status) == MGOP_OK &&
        status == 200 && !b.overflow) {
      t1 = now_ms();
      out[b.len] = 0;
      if (strstr(out, want) && nw < MAX_SAMPLES) wat[nw] = t0 - start, wl[nw++] = t1 - t0;
      else errors++;
    } else {
      errors++;
      fprintf(stderr, "webhook error: HTTP %d: %s\n", status, mgop_errmsg());
    }
    mgop_buf_init(&b, out, sizeof(out) - 1);
    status = 0;
    t0 = now_ms();
    if (mgop_kube_request(&probe, "GET", "/healthz", NULL, NULL, 0, &b, &status) == MGOP_OK && status == 200) {
      t1 = now_ms();
      out[b.len] = 0;
      if (!strcmp(out, "ok\n") && nh < MAX_SAMPLES) hl[nh++] = t1 - t0;
      else errors++;
    } else {
      errors++;
      fprintf(stderr, "healthz error: HTTP %d: %s\n", status, mgop_errmsg());
    }
    if (due > now_ms()) {
      double left = due - now_ms();
      struct timespec ts = {(time_t)(left / 1000.0), (long)((left - (double)(time_t)(left / 1000.0) * 1000.0) * 1e6)};
      nanosleep(&ts, NULL);
    }
  }
  if (samples && *samples) { /* the raw webhook samples, in order: "ms-since-start latency-ms", to place outliers */
    FILE *f = fopen(samples, "w");
    int j;
    if (!f) fprintf(stderr, "serving_latency: %s: %s\n", samples, strerror(errno));
    for (j = 0; f && j < nw; j++) fprintf(f, "%.1f %.3f\n", wat[j], wl[j]);
    if (f) fclose(f);
  }
  printf("%.2f %.2f %.2f %.2f %d %d\n", pct(wl, nw, 0.5), pct(wl, nw, 0.99), pct(hl, nh, 0.5), pct(hl, nh, 0.99), nw,
         errors);
  return 0;
}
