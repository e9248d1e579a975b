/* multigres-op.c - the policy of multigres-op: kinds, the loop, flags, main.
 *
 * Table of contents
 *   1. Kind table          which resources we watch, and how
 *   2. Event handling      what a watch event does (today: one JSON log line)
 *   3. The loop            one poll()-driven loop over every watch
 *   4. Flags               parsing, --help, --version
 *   5. main                (behind MGOP_NO_MAIN so tests can include this file)
 */
#define MULTIGRES_OP_IMPLEMENTATION
#include "multigres-op.h"

#include <signal.h>

/* ======================================================================
 * 1. Kind table
 * ==================================================================== */
struct mgop_kind {
  const char *kind;     /* MultigresCluster                    */
  const char *group;    /* multigres.com ("" for core)         */
  const char *version;  /* v1alpha1                            */
  const char *plural;   /* multigresclusters                   */
};

static const struct mgop_kind mgop_kinds[] = {
    {"MultigresCluster", "multigres.com", "v1alpha1", "multigresclusters"},
};
#define MGOP_NKINDS (sizeof(mgop_kinds) / sizeof(mgop_kinds[0]))

/* Collection path, namespaced when ns is non-empty. */
static void mgop_kind_path(const struct mgop_kind *k, const char *ns, char *out, size_t cap) {
  if (k->group[0])
    snprintf(out, cap, "/apis/%s/%s%s%s/%s", k->group, k->version, ns[0] ? "/namespaces/" : "", ns, k->plural);
  else
    snprintf(out, cap, "/api/%s%s%s/%s", k->version, ns[0] ? "/namespaces/" : "", ns, k->plural);
}

/* ======================================================================
 * 2. Event handling
 * ==================================================================== */
/* Logs one watch event as a JSON line: kind, type, namespace, name, uid,
 * resourceVersion and generation, so tests and humans can follow it. */
static void mgop_log_event(void *ctx, struct mgop_watch *w, const char *type, const struct mgop_json *j, int obj) {
  char ns[64], name[254], uid[64], rv[32], f[1024];
  long long gen = 0;
  struct mgop_buf b;
  struct mgop_jw jw;
  (void)ctx;
  mgop_json_path_str(j, obj, "metadata.namespace", ns, sizeof(ns));
  mgop_json_path_str(j, obj, "metadata.name", name, sizeof(name));
  mgop_json_path_str(j, obj, "metadata.uid", uid, sizeof(uid));
  mgop_json_path_str(j, obj, "metadata.resourceVersion", rv, sizeof(rv));
  mgop_json_i64(j, mgop_json_path(j, obj, "metadata.generation"), &gen);
  mgop_buf_init(&b, f, sizeof(f));
  mgop_jw_init(&jw, &b);
  mgop_jw_key(&jw, "kind"); mgop_jw_str(&jw, w->kind);
  mgop_jw_key(&jw, "type"); mgop_jw_str(&jw, type);
  mgop_jw_key(&jw, "namespace"); mgop_jw_str(&jw, ns);
  mgop_jw_key(&jw, "name"); mgop_jw_str(&jw, name);
  mgop_jw_key(&jw, "uid"); mgop_jw_str(&jw, uid);
  mgop_jw_key(&jw, "resourceVersion"); mgop_jw_str(&jw, rv);
  mgop_jw_key(&jw, "generation"); mgop_jw_i64(&jw, gen);
  mgop_log_fields(MGOP_INFO, "watch", "event", mgop_buf_cstr(&b));
}

/* ======================================================================
 * 3. The loop
 * ==================================================================== */
static volatile sig_atomic_t mgop_stop_signal;

static void mgop_on_signal(int sig) { mgop_stop_signal = sig; }

static struct mgop_kubecfg mgop_cfg;
static struct mgop_kube mgop_api;
static struct mgop_watch mgop_watches[MGOP_NKINDS];

struct mgop_options {
  const char *kubeconfig;
  const char *context;
  const char *watch_namespace;
};

int mgop_run(const struct mgop_options *opt); /* also called by tests */
int mgop_run(const struct mgop_options *opt) {
  struct sigaction sa;
  char path[384];
  size_t i;
  int rc;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = mgop_on_signal; /* no SA_RESTART: poll() must wake up */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  if ((rc = mgop_kubecfg_auto(&mgop_cfg, opt->kubeconfig, opt->context))) {
    MGOP_LOG(MGOP_ERROR, ("cannot load the Kubernetes configuration: %s", mgop_errmsg()));
    return 2;
  }
  if ((rc = mgop_kube_init(&mgop_api, &mgop_cfg))) {
    MGOP_LOG(MGOP_ERROR, ("cannot set up the API client (%s): %s", mgop_cfg.source, mgop_errmsg()));
    return 2;
  }
  MGOP_LOG(MGOP_INFO, ("multigres-op %s starting; API server %s://%s:%s (%s)", MGOP_VERSION, mgop_cfg.scheme,
                       mgop_cfg.host, mgop_cfg.port, mgop_cfg.source));
  srand((unsigned)(mgop_now_ms() ^ getpid()));
  for (i = 0; i < MGOP_NKINDS; i++) {
    mgop_kind_path(&mgop_kinds[i], opt->watch_namespace, path, sizeof(path));
    mgop_watch_init(&mgop_watches[i], &mgop_api, mgop_kinds[i].kind, path, NULL, mgop_log_event, NULL);
  }

  while (!mgop_stop_signal) {
    struct pollfd pfd[MGOP_NKINDS];
    int owner[MGOP_NKINDS], n = 0;
    long long now = mgop_now_ms(), wait = 1000;
    for (i = 0; i < MGOP_NKINDS; i++) {
      struct mgop_watch *w = &mgop_watches[i];
      long long due = mgop_watch_wake_ms(w, now);
      if (w->state != MGOP_W_STREAM && due == 0) {
        mgop_watch_step(w, now);
        due = mgop_watch_wake_ms(w, mgop_now_ms());
      }
      if (due < wait) wait = due;
      if (mgop_watch_fd(w) >= 0) {
        pfd[n].fd = mgop_watch_fd(w);
        pfd[n].events = POLLIN;
        pfd[n].revents = 0;
        owner[n++] = (int)i;
      }
    }
    if (poll(pfd, (nfds_t)n, (int)wait) < 0 && errno != EINTR) {
      MGOP_LOG(MGOP_ERROR, ("poll failed: %s", strerror(errno)));
      break;
    }
    now = mgop_now_ms();
    for (int p = 0; p < n; p++) {
      struct mgop_watch *w = &mgop_watches[owner[p]];
      if (pfd[p].revents || mgop_watch_wake_ms(w, now) == 0) mgop_watch_step(w, now);
    }
  }
  MGOP_LOG(MGOP_INFO, ("shutting down on signal %d", (int)mgop_stop_signal));
  for (i = 0; i < MGOP_NKINDS; i++) mgop_watch_close(&mgop_watches[i]);
  mgop_kube_free(&mgop_api);
  return 0;
}

/* ======================================================================
 * 4. Flags
 * ==================================================================== */
static const char mgop_usage[] =
    "Usage: multigres-op [flags]\n"
    "\n"
    "Kubernetes operator for Multigres. Watches multigres.com/v1alpha1 resources\n"
    "and makes the cluster match them.\n"
    "\n"
    "Flags:\n"
    "  --kubeconfig PATH        kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)\n"
    "  --context NAME           kubeconfig context (default: current-context)\n"
    "  --namespace NS           watch only this namespace (default: all namespaces)\n"
    "  --zap-log-level LEVEL    debug, info, warn or error (default: info)\n"
    "  --zap-encoder ENC        json or console (default: json)\n"
    "  --zap-devel              development logging: console encoder, debug level\n"
    "  --version                print the version and exit\n"
    "  -h, --help               print this help and exit\n";

/* Accepts --flag=value and --flag value. Returns 0, or 2 with a message. */
int mgop_parse_flags(int argc, char **argv, struct mgop_options *opt, int *exit_now);
int mgop_parse_flags(int argc, char **argv, struct mgop_options *opt, int *exit_now) {
  *exit_now = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = NULL, *eq;
    char name[64];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      fputs(mgop_usage, stdout);
      *exit_now = 1;
      return 0;
    }
    if (strncmp(a, "--", 2) != 0) {
      fprintf(stderr, "multigres-op: unexpected argument \"%s\"; flags start with --, see --help\n", a);
      return 2;
    }
    eq = strchr(a, '=');
    snprintf(name, sizeof(name), "%.*s", (int)(eq ? (size_t)(eq - a) : strlen(a)), a);
    if (!strcmp(name, "--version")) {
      printf("multigres-op %s\n", MGOP_VERSION);
      *exit_now = 1;
      return 0;
    }
    if (!strcmp(name, "--zap-devel")) {
      if (eq && strcmp(eq + 1, "true") && strcmp(eq + 1, "false")) {
        fprintf(stderr, "multigres-op: --zap-devel takes true or false, not \"%s\"\n", eq + 1);
        return 2;
      }
      if (!eq || !strcmp(eq + 1, "true")) {
        mgop_log_json = 0;
        mgop_log_level = MGOP_DEBUG;
      }
      continue;
    }
    if (strcmp(name, "--kubeconfig") && strcmp(name, "--context") && strcmp(name, "--namespace") &&
        strcmp(name, "--zap-log-level") && strcmp(name, "--zap-encoder")) {
      fprintf(stderr, "multigres-op: unknown flag \"%s\"; see --help for the supported flags\n", name);
      return 2;
    }
    if (eq) val = eq + 1;
    else if (i + 1 < argc) val = argv[++i];
    else {
      fprintf(stderr, "multigres-op: flag %s needs a value\n", name);
      return 2;
    }
    if (!strcmp(name, "--kubeconfig")) opt->kubeconfig = val;
    else if (!strcmp(name, "--context")) opt->context = val;
    else if (!strcmp(name, "--namespace")) opt->watch_namespace = val;
    else if (!strcmp(name, "--zap-log-level")) {
      if (!strcmp(val, "debug")) mgop_log_level = MGOP_DEBUG;
      else if (!strcmp(val, "info")) mgop_log_level = MGOP_INFO;
      else if (!strcmp(val, "warn")) mgop_log_level = MGOP_WARN;
      else if (!strcmp(val, "error")) mgop_log_level = MGOP_ERROR;
      else {
        fprintf(stderr, "multigres-op: --zap-log-level must be debug, info, warn or error, not \"%s\"\n", val);
        return 2;
      }
    } else if (!strcmp(name, "--zap-encoder")) {
      if (!strcmp(val, "json")) mgop_log_json = 1;
      else if (!strcmp(val, "console")) mgop_log_json = 0;
      else {
        fprintf(stderr, "multigres-op: --zap-encoder must be json or console, not \"%s\"\n", val);
        return 2;
      }
    }
  }
  return 0;
}

/* ======================================================================
 * 5. main
 * ==================================================================== */
#ifndef MGOP_NO_MAIN
int main(int argc, char **argv) {
  struct mgop_options opt = {NULL, NULL, ""};
  int exit_now, rc = mgop_parse_flags(argc, argv, &opt, &exit_now);
  if (rc || exit_now) return rc;
  return mgop_run(&opt);
}
#endif
