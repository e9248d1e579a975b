/* multigres-op.h - the mechanism of multigres-op (stb-style single header).
 *
 * The policy (kinds, reconcile, flags, main) lives in multigres-op.c, which
 * #defines MULTIGRES_OP_IMPLEMENTATION and includes this file once.
 *
 * Table of contents
 *   1. Config knobs            compile-time bounds; every buffer is sized here
 *   2. Public API
 *        2.1 base              errors, log, time, arena, string views, buffers
 *        2.2 json              jsmn wrapper (typed accessors) and a writer
 *        2.3 kubeconfig        kubeconfig (libyaml) and in-cluster config
 *        2.4 tls               mbedTLS glue: heap, RNG, client config
 *        2.5 http              connection, request writer, response reader,
 *                              incremental chunked decoder, line splitter
 *        2.6 kube              API requests, streamed paginated LIST, WATCH,
 *                              server-side apply, status patches, a pool
 *                              that keeps several applies in flight
 *        2.7 state             names, the fingerprint table, the work set
 *        2.8 pki               ECDSA P-256 CA and serving certificates (SAN,
 *                              EKU in DER), validity, renewal, verification
 *        2.9 server            HTTP/1.1 + TLS server on the caller's poll():
 *                              request parser, connection table, deadlines,
 *                              hot certificate swap
 *        2.10 multiadmin       plain HTTP/1.1 calls, RFC 3339 times, the
 *                              GetBackups response (proto3 JSON), cron
 *        2.11 topo             protobuf wire format, base64, etcd v3 client
 *                              over its JSON gateway (range, txn, delete)
 *        2.12 trace            W3C trace context, spans, the OTEL_* settings,
 *                              a bounded span queue, OTLP/HTTP JSON export
 *   3. Implementation          (under MULTIGRES_OP_IMPLEMENTATION), the same
 *                              sections in the same order
 *
 * Ownership rule (stated once, holds everywhere): every pointer handed to a
 * callback is borrowed and valid only for the duration of that callback.
 * Nothing in this file calls malloc after start-up except libyaml (bounded by
 * the input size it is given), mbedTLS (through a counter that bounds its
 * bytes in use at MGOP_TLS_HEAP_SIZE) and, in sanitizer builds, the arena.
 *
 * Threads: the mechanism keeps no shared mutable state except the mbedTLS
 * heap's counter (atomic) and RNG (MBEDTLS_THREADING_C: it locks) and the
 * tracer of 2.12 (its queue and counters under its own mutex; its client
 * and scratch belong to the one exporter thread) and the apply pool of 2.6
 * (a batch handed over and given back under its mutex; each worker's client
 * and buffers are its own) and the servers' response-buffer slots of 2.9
 * (taken and given back under their own lock: the serving and secure-metrics
 * threads share them). The last
 * error, the log line and scratch buffers are per thread (_Thread_local);
 * every other object (a kube client, a connection, a server, a watch)
 * belongs to the one thread that made it. What the policy shares between
 * its threads, and under which lock, is stated in multigres-op.c section 13.
 *
 * Error convention: functions return int, 0 (MGOP_OK) or a negative
 * enum mgop_err. A human-readable reason, naming the field and the fix when
 * the user can cause it, is left in mgop_errmsg().
 */
#ifndef MULTIGRES_OP_H
#define MULTIGRES_OP_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <signal.h>
#include <pthread.h>
#include <sys/socket.h>

#define JSMN_STATIC
#define JSMN_STRICT
#include <jsmn.h>

#include <mbedtls/ssl.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/pk.h>

/* ======================================================================
 * 1. Config knobs
 * ==================================================================== */
#ifndef MGOP_VERSION
#define MGOP_VERSION "0.1.0-dev"
#endif
#define MGOP_HTTP_HEAD_MAX (16 * 1024)   /* response/request head limit   */
#define MGOP_HTTP_RBUF (16 * 1024)       /* per-connection read buffer    */
#ifndef MGOP_WATCH_LINE_MAX
#define MGOP_WATCH_LINE_MAX (128 * 1024) /* one watch event; longer: relist */
#endif
#ifndef MGOP_BODY_MAX
#define MGOP_BODY_MAX (1024 * 1024)      /* one object (a LIST item, a GET) */
#endif
#define MGOP_JSON_TOKENS_MAX 32768       /* tokens in one parsed document */
#define MGOP_LIST_ENVELOPE_MAX 8192      /* a LIST body minus its items   */
#define MGOP_JW_DEPTH 64                 /* JSON writer nesting           */
#define MGOP_PEM_MAX (64 * 1024)         /* a CA bundle, a cert, a key    */
#define MGOP_TOKEN_MAX 8192              /* bearer token                  */
#define MGOP_KUBECONFIG_MAX (1024 * 1024)
#ifndef MGOP_TLS_HEAP_SIZE
#define MGOP_TLS_HEAP_SIZE (2 * 1024 * 1024)
#endif
#define MGOP_TLS_SESSIONS 8              /* TLS 1.3 tickets kept: one per
                                            server and credentials      */
#define MGOP_TLS_TICKET_WAIT_MS 100      /* longest wait for another
                                            connection's ticket         */
#define MGOP_LIST_PAGE 500               /* LIST ?limit= (streamed: memory
                                            does not depend on it)        */
#define MGOP_WATCH_TIMEOUT_S 3600        /* server-side ?timeoutSeconds=,
                                            jittered down to half: what
                                            kube-apiserver picks when none
                                            is asked (--min-request-timeout
                                            1800 s, times 1 to 2)         */
#define MGOP_WATCH_GRACE_MS 60000LL      /* a stream not ended this long
                                            after its timeout is dead      */
#define MGOP_TOKEN_RELOAD_MS 60000       /* bound tokens rotate           */
#define MGOP_REQUEST_TIMEOUT_MS 30000
#define MGOP_CONNECT_TIMEOUT_MS 10000
#define MGOP_POOL_WARM_MS 1000           /* a worker's connection opened at
                                            its start (struct mgop_pool) */
#define MGOP_IO_SLICE_MS 100             /* a blocked request notices shutdown */
#define MGOP_BACKOFF_MIN_MS 200
#define MGOP_BACKOFF_MAX_MS 30000
#define MGOP_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
/* pki (2.8) */
#define MGOP_PKI_PEM_MAX 4096            /* one generated cert or key, PEM */
#define MGOP_PKI_NAMES_MAX 16            /* subjectAltName entries         */
#define MGOP_PKI_BACKDATE_S 3600         /* not_before = now - 1h (skew)   */
/* server (2.9): memory is the caller's connection array plus the pool */
#define MGOP_HTTP_TARGET_MAX 1024        /* request path; query the same   */
#define MGOP_HTTP_HEADERS_MAX 64         /* header fields in one request   */
#ifndef MGOP_SRV_HEAD_MAX
#define MGOP_SRV_HEAD_MAX (8 * 1024)     /* request head; 431 beyond       */
#endif
#ifndef MGOP_SRV_RBUF
#define MGOP_SRV_RBUF (16 * 1024)        /* per connection: head + small body */
#endif
#ifndef MGOP_SRV_WBUF
#define MGOP_SRV_WBUF (16 * 1024)        /* per connection: small response */
#endif
#ifndef MGOP_SRV_BIG_MAX
#define MGOP_SRV_BIG_MAX (1024 * 1024)   /* largest request body; and response,
                                            unless mgop_srv_pool_init sizes more */
#endif
#ifndef MGOP_SRV_BIG_SLOTS
#define MGOP_SRV_BIG_SLOTS 3             /* shared pool of BIG_MAX buffers */
#endif
#define MGOP_SRV_TLS_GENS 3              /* current certificate + 2 draining */
#define MGOP_SRV_REQUEST_TIMEOUT_MS 10000 /* accept/first byte -> whole request */
#define MGOP_SRV_WRITE_TIMEOUT_MS 10000  /* one response                   */
#define MGOP_SRV_IDLE_MS 120000          /* idle keep-alive (Go clients: 90 s) */
#define MGOP_SRV_KEEPALIVE_MAX 1000      /* requests per connection        */
#define MGOP_SRV_LINGER_MS 1000          /* drain after an error response  */
/* multiadmin (2.10) */
#define MGOP_MA_TIMEOUT_MS 2000          /* one call, connect to last byte */
#define MGOP_MA_BODY_MAX (64 * 1024)     /* one response body              */
#define MGOP_MA_TOKENS_MAX 4096          /* tokens in one response         */
/* topo (2.11) */
#define MGOP_ETCD_ENDPOINTS_MAX 20       /* the CRD's maxItems             */
#define MGOP_ETCD_URL_MAX 256            /* one endpoint URL               */
#define MGOP_ETCD_TIMEOUT_MS 2000        /* one call, connect included: a
                                            dead topo server costs a turn
                                            at most this per endpoint     */
#define MGOP_ETCD_KEY_MAX 1024           /* one key, decoded               */
#define MGOP_ETCD_VALUE_MAX 8192         /* one value (a topology record)  */
#define MGOP_ETCD_BODY_MAX (256 * 1024)  /* one response (a range of poolers) */
#define MGOP_ETCD_TOKENS_MAX 16384       /* JSON tokens in one response    */

/* ======================================================================
 * 2.1 base
 * ==================================================================== */
enum mgop_err {
  MGOP_OK = 0,
  MGOP_ERR_NOMEM = -1,    /* a fixed bound was reached             */
  MGOP_ERR_IO = -2,       /* socket or file error                  */
  MGOP_ERR_PARSE = -3,    /* malformed input                       */
  MGOP_ERR_TLS = -4,      /* handshake or verification             */
  MGOP_ERR_HTTP = -5,     /* protocol violation by the peer        */
  MGOP_ERR_CONFIG = -6,   /* bad kubeconfig, flag or environment   */
  MGOP_ERR_TIMEOUT = -7,  /* deadline passed                       */
  MGOP_ERR_AGAIN = -8,    /* non-blocking: nothing more right now  */
  MGOP_ERR_CLOSED = -9,   /* peer closed the connection            */
  MGOP_ERR_TOOBIG = -10,  /* input larger than its buffer          */
  MGOP_ERR_AUTH = -11,    /* 401/403                               */
  MGOP_ERR_GONE = -12,    /* 410: resourceVersion too old          */
  MGOP_ERR_NOTFOUND = -13,
  MGOP_ERR_TYPE = -14,    /* JSON value of the wrong type          */
  MGOP_ERR_STATUS = -15   /* HTTP status the caller did not expect */
};

enum mgop_level { MGOP_DEBUG = -1, MGOP_INFO = 0, MGOP_WARN = 1, MGOP_ERROR = 2 };

/* Log a printf-style message as one line: MGOP_LOG(MGOP_INFO, ("x=%d", x)) */
#define MGOP_LOG(level, args)                                  \
  do {                                                         \
    if ((level) >= mgop_log_level) {                           \
      mgop_log_prefix((level), __FILE__, __LINE__);            \
      mgop_log_message args;                                   \
    }                                                          \
  } while (0)

extern int mgop_log_level;   /* minimum level printed              */
/* Set by a signal handler (lock-free atomics are async-signal-safe): every blocking wait of every client returns
 * MGOP_ERR_TIMEOUT within MGOP_IO_SLICE_MS, except on a thread that set
 * mgop_io_unabortable (the Lease release on the way out). */
extern int mgop_io_abort; /* read and written with __atomic builtins only */
extern _Thread_local int mgop_io_unabortable;
extern int mgop_log_json;    /* 1: JSON lines (zap json), 0: console */
extern int mgop_log_time;    /* --zap-time-encoding: -1 ISO 8601 in microseconds (ours); 0 epoch,
                                1 millis, 2 nano (numbers in JSON), 3 iso8601, 4 rfc3339, 5 rfc3339nano */
void mgop_log_prefix(int level, const char *file, int line);
void mgop_log_message(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* One log line with extra structured fields: `fields` is a JSON object
 * body without braces (`"k":"v","n":1`), or NULL. */
void mgop_log_fields(int level, const char *logger, const char *msg, const char *fields);

const char *mgop_err_name(int err);
const char *mgop_errmsg(void);                   /* last detailed reason */
int mgop_seterr(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

long long mgop_now_ms(void);                     /* monotonic             */
long long mgop_now_us(void);                     /* monotonic, microseconds */
void mgop_wall_iso8601(char *out, size_t cap);   /* 2026-11-23T09:33:03.123Z */

struct mgop_str { const char *p; size_t n; };
#define MGOP_STR(lit) ((struct mgop_str){(lit), sizeof(lit) - 1})
int mgop_str_eq(struct mgop_str s, const char *cstr);

/* Fixed-capacity byte buffer; appending past cap fails and sets overflow. */
struct mgop_buf { char *p; size_t len, cap; int overflow; };
void mgop_buf_init(struct mgop_buf *b, char *mem, size_t cap);
int mgop_buf_append(struct mgop_buf *b, const void *data, size_t n);
int mgop_buf_puts(struct mgop_buf *b, const char *s);
int mgop_buf_printf(struct mgop_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *mgop_buf_cstr(struct mgop_buf *b); /* NUL-terminates (needs 1 spare byte) */

/* Bump arena over fixed memory; reset per reconcile. In sanitizer builds
 * (MGOP_SANITIZE) every allocation is a separate malloc so ASan sees it. */
struct mgop_arena {
  unsigned char *base;
  size_t cap, used, high;
#ifdef MGOP_SANITIZE
  void *blocks;
#endif
};
/* Zeroed memory for a table sized at start-up, straight from mmap: a page
 * costs resident memory only once written (calloc may clear it all up
 * front). NULL when it cannot be had. Never freed: it lives as the process. */
void *mgop_table_alloc(size_t n, size_t size);
/* Dense tables (rows [0, used), found through an open-addressing index of
 * row numbers, row + 1, 0 empty): the index's size for a bound of `rows`,
 * which always leaves an empty slot so a probe ends, and the insertion of
 * row `row` at the first empty slot from `home` (a rebuild). */
size_t mgop_dense_index_slots(size_t rows);
void mgop_dense_index_put(uint32_t *index, size_t slots, size_t home, size_t row);
void mgop_arena_init(struct mgop_arena *a, void *mem, size_t cap);
void *mgop_arena_alloc(struct mgop_arena *a, size_t n);
char *mgop_arena_strndup(struct mgop_arena *a, const char *s, size_t n);
void mgop_arena_reset(struct mgop_arena *a);
/* Gives back the unused tail of the most recent allocation p (size cap)
 * once only `used` bytes of it are needed. No-op for any other pointer. */
void mgop_arena_trim(struct mgop_arena *a, void *p, size_t cap, size_t used);

int mgop_read_file(const char *path, char *buf, size_t cap, size_t *len);

/* FNV-1a: 32-bit for names (as the reference operator), 64-bit for keys. */
uint32_t mgop_fnv1a32(uint32_t h, const void *data, size_t n);
#define MGOP_FNV32_INIT 0x811c9dc5u
uint64_t mgop_fnv1a64(uint64_t h, const void *data, size_t n);
#define MGOP_FNV64_INIT 0xcbf29ce484222325ull

/* Levenshtein distance between two short names (for "did you mean");
 * names of MGOP_EDIT_NAME_MAX or more bytes count as far apart. */
#define MGOP_EDIT_NAME_MAX 64
int mgop_edit_distance(const char *a, const char *b);

/* ======================================================================
 * 2.2 json
 * ==================================================================== */
struct mgop_json {
  const char *js;
  size_t len;
  jsmntok_t *tok;
  int ntok;
};
/* Drops every metadata.managedFields (the key, its value and a comma) from
 * the JSON text p[0..n), in place, and returns the new length: the
 * operator never reads them, and they are ~40% of an object's bytes as
 * kube-apiserver sends it (more of its tokens). Text that is not valid JSON
 * is left as the parser will find it. */
size_t mgop_json_drop_managed_fields(char *p, size_t n);
/* The same for one object (a list item, a watch event's line), whose own
 * metadata is the first "metadata" object in it: only that one's, and the
 * scan stops where it closes. */
size_t mgop_json_drop_object_managed_fields(char *p, size_t n);
/* Parses exactly one JSON value (trailing whitespace allowed). */
int mgop_json_parse(struct mgop_json *j, const char *js, size_t len, jsmntok_t *tok, unsigned maxtok);
int mgop_json_next(const struct mgop_json *j, int t);            /* token after t's subtree */
int mgop_json_key(const struct mgop_json *j, int obj, const char *key); /* value token or -1 */
int mgop_json_at(const struct mgop_json *j, int arr, int index);  /* element or -1 */
/* Dotted path with [i] indices: "metadata.name", "items[0].metadata". */
int mgop_json_path(const struct mgop_json *j, int root, const char *path);
int mgop_json_is(const struct mgop_json *j, int t, jsmntype_t type);
int mgop_json_is_null(const struct mgop_json *j, int t);
struct mgop_str mgop_json_raw(const struct mgop_json *j, int t);
/* Decodes a JSON string (escapes, \u with surrogates) into out, NUL-terminated. */
int mgop_json_str(const struct mgop_json *j, int t, char *out, size_t cap);
int mgop_json_i64(const struct mgop_json *j, int t, long long *out);
int mgop_json_bool(const struct mgop_json *j, int t, int *out);
/* Convenience: string at path, or "" when absent/not a string. */
int mgop_json_path_str(const struct mgop_json *j, int root, const char *path, char *out, size_t cap);

struct mgop_jw {
  struct mgop_buf *b;
  int depth;
  unsigned char has_item[MGOP_JW_DEPTH];
  int after_key;
};
void mgop_jw_init(struct mgop_jw *w, struct mgop_buf *b);
void mgop_jw_obj(struct mgop_jw *w);
void mgop_jw_obj_end(struct mgop_jw *w);
void mgop_jw_arr(struct mgop_jw *w);
void mgop_jw_arr_end(struct mgop_jw *w);
void mgop_jw_key(struct mgop_jw *w, const char *key);
void mgop_jw_str(struct mgop_jw *w, const char *s);
void mgop_jw_strn(struct mgop_jw *w, const char *s, size_t n);
void mgop_jw_i64(struct mgop_jw *w, long long v);
void mgop_jw_bool(struct mgop_jw *w, int v);
void mgop_jw_null(struct mgop_jw *w);
void mgop_jw_raw(struct mgop_jw *w, const char *json, size_t n); /* pre-encoded value */
void mgop_json_escape(struct mgop_buf *b, const char *s, size_t n);
/* Deep merge for the defaults chain: writes `base` with `over` laid on top.
 * Objects merge key by key (recursively); scalars and lists in `over`
 * replace; a null in `over` removes the key (RFC 7386). Either side may be
 * -1 (absent). Keys keep base's order, then
 * over's new keys in their order. */
void mgop_json_merge(struct mgop_jw *w, const struct mgop_json *base, int bt, const struct mgop_json *over, int ot);
/* Copies one value verbatim (re-encoding strings) into the writer. */
void mgop_jw_copy(struct mgop_jw *w, const struct mgop_json *j, int t);
/* A hash of one value that ignores how it was written: object keys in any
 * order, strings and keys compared decoded (Go escapes <, > and & where we
 * do not), whitespace ignored. Two encodings of the same value hash alike.
 * 0 when the value is beyond the bounds (depth 16, 128 keys an object,
 * strings of 4 KiB): callers treat 0 as "unknown". */
#define MGOP_CANON_DEPTH 16
#define MGOP_CANON_KEYS 128
uint64_t mgop_json_canon_hash(const struct mgop_json *j, int t);
/* The same for an object without its member key (any encoding of key). */
uint64_t mgop_json_canon_hash_except(const struct mgop_json *j, int t, const char *key);

/* ======================================================================
 * 2.3 kubeconfig
 * ==================================================================== */
struct mgop_kubecfg {
  char source[64];          /* "kubeconfig PATH" or "in-cluster"     */
  char scheme[8];           /* https (http only for local fakes)     */
  char host[256];
  char port[8];
  char path_prefix[256];    /* server URL path, without trailing '/' */
  char tls_server_name[256];
  char context[128];
  char namespace_[64];      /* context or service-account namespace  */
  int insecure;             /* insecure-skip-tls-verify              */
  char token[MGOP_TOKEN_MAX];
  char token_file[512];
  unsigned char ca[MGOP_PEM_MAX];      size_t ca_len;   /* PEM/DER + NUL */
  unsigned char cert[MGOP_PEM_MAX];    size_t cert_len;
  unsigned char key[MGOP_PEM_MAX];     size_t key_len;
  long long token_loaded_ms;
};
/* Load from YAML text; base_dir resolves relative file paths (kubectl rule). */
int mgop_kubecfg_from_yaml(struct mgop_kubecfg *c, const char *text, size_t len, const char *base_dir,
                           const char *context);
int mgop_kubecfg_from_file(struct mgop_kubecfg *c, const char *path, const char *context);
/* In-cluster: KUBERNETES_SERVICE_HOST/PORT and the service-account dir. */
int mgop_kubecfg_in_cluster(struct mgop_kubecfg *c, const char *sa_dir);
/* --kubeconfig flag, then $KUBECONFIG, then in-cluster, then ~/.kube/config. */
int mgop_kubecfg_auto(struct mgop_kubecfg *c, const char *flag_path, const char *context);
/* A copy for another client (its own token reloads) that writes only the
 * bytes in use: the three PEM buffers are 64 KiB each, mostly empty. */
void mgop_kubecfg_copy(struct mgop_kubecfg *dst, const struct mgop_kubecfg *src);
/* Re-read token_file if it is time (or force). Returns MGOP_OK when unchanged too. */
int mgop_kubecfg_reload_token(struct mgop_kubecfg *c, long long now_ms, int force);
int mgop_url_parse(const char *url, char *scheme, size_t scap, char *host, size_t hcap, char *port, size_t pcap,
                   char *path, size_t pathcap);
/* Manifests: each YAML document of `text` converted to one JSON value and
 * handed to fn. Plain scalars true/false/null and numbers become JSON
 * literals (YAML 1.2 core schema); quoted scalars stay strings. */
typedef int (*mgop_doc_fn)(void *ctx, const char *json, size_t n, int index);
int mgop_yaml_to_json_docs(const char *text, size_t len, struct mgop_buf *scratch, mgop_doc_fn fn, void *ctx);

/* ======================================================================
 * 2.4 tls
 * ==================================================================== */
struct mgop_tls {
  mbedtls_ssl_config conf;
  mbedtls_x509_crt ca;
  mbedtls_x509_crt cert;
  mbedtls_pk_context key;
  uint64_t creds;             /* hash of CA, certificate and key: which sessions it may resume */
  int ready;
};
int mgop_tls_global_init(void);
int mgop_tls_client_init(struct mgop_tls *t, const struct mgop_kubecfg *c);
void mgop_tls_free(struct mgop_tls *t);
size_t mgop_tls_heap_high_water(void);
/* TLS 1.3 session resumption: each server's latest ticket, per credentials,
 * is kept process-wide (MGOP_TLS_SESSIONS of them, the oldest replaced), so
 * a client's next connection, or another client's with the same server and
 * credentials (the apply workers', the watches'), resumes it: a fresh
 * ECDHE, no certificate signed or verified on either side. While one
 * connection's full handshake is under way, another to the same server
 * and credentials waits for the ticket it brings (at most
 * MGOP_TLS_TICKET_WAIT_MS, and no longer than that connection's first
 * answer): at start every connection opens at once, and each full one
 * signs with the client key on both sides of a 2-core node. Handshakes
 * so far, full and resumed (with insecure-skip-tls-verify all count as
 * full). */
void mgop_tls_handshakes(unsigned long long *full, unsigned long long *resumed);

/* ======================================================================
 * 2.5 http
 * ==================================================================== */
/* Name lookups with a deadline. getaddrinfo() takes none: musl waits out
 * resolv.conf's timeout (5 s), asking again every 2.5 s, and with DNS down
 * every cluster's turn that looks a name up held the loop that long. A
 * name (an address literal needs no lookup) goes to one resolver thread,
 * started at the first such lookup; the caller waits for its answer until
 * its deadline or MGOP_DNS_WAIT_MS, whichever is later (one dropped query
 * is asked again and answered, as before), or until shutdown, and then
 * gives up (the thread finishes the lookup and drops the answer). One
 * lookup at a time: a caller that finds an earlier one unanswered waits
 * for it, unless it has been unanswered MGOP_DNS_WAIT_MS (DNS is down: a
 * loop of turns must not each pay the wait). MGOP_ERR_TIMEOUT then,
 * MGOP_ERR_IO when the name does not resolve. */
#define MGOP_DNS_ADDRS 8               /* addresses of one answer tried
                                          (a connect error says so when
                                          a name has more)               */
#ifndef MGOP_DNS_WAIT_MS
#define MGOP_DNS_WAIT_MS 3000          /* a lookup's least patience: musl
                                          asks again after 2.5 s, so a
                                          dropped query still recovers;
                                          a question unanswered this long
                                          fails the next caller at once */
#endif
struct mgop_dns_answer {
  int n, total;                        /* kept, and in getaddrinfo's answer */
  int family[MGOP_DNS_ADDRS];
  socklen_t len[MGOP_DNS_ADDRS];
  struct sockaddr_storage addr[MGOP_DNS_ADDRS];
  char err[128];                       /* when n is 0: why               */
};
int mgop_dns_lookup(const char *host, const char *port, long long deadline, struct mgop_dns_answer *a);
/* Ends the resolver thread, waiting at most wait_ms for a lookup under way
 * (it then ends after it). */
void mgop_dns_stop(long long wait_ms);
/* what the resolver thread calls: getaddrinfo() (tests swap in a slow one) */
extern int (*mgop_dns_resolve)(const char *host, const char *port, int numeric_only, struct mgop_dns_answer *a);

struct mgop_conn {
  int fd;
  int tls_on;
  int ssl_init;
  mbedtls_ssl_context ssl;
  uint64_t sess_key;           /* its server and credentials (mgop_tls_handshakes) */
  int offered, verified;       /* a ticket offered; the server's chain verified */
  int brings;                  /* its full handshake brings the ticket others wait for */
  unsigned char rbuf[MGOP_HTTP_RBUF];
  size_t rpos, rlen;
  int reused;                  /* at least one response already read */
};
void mgop_conn_init(struct mgop_conn *c);
int mgop_conn_open(struct mgop_conn *c, struct mgop_tls *tls, const struct mgop_kubecfg *cfg, long long deadline);
/* Opens c ahead of its first request, by resuming: waits (until deadline)
 * for another connection to the server to bring a ticket, and opens
 * nothing without one. A full handshake here would bring the ticket only
 * at this connection's first answer, and the others would wait for it.
 * 1 when opened. */
int mgop_conn_open_ahead(struct mgop_conn *c, struct mgop_tls *tls, const struct mgop_kubecfg *cfg, long long deadline);
int mgop_conn_write(struct mgop_conn *c, const void *buf, size_t n, long long deadline);
/* deadline 0: non-blocking (MGOP_ERR_AGAIN); otherwise wait until deadline. */
int mgop_conn_read(struct mgop_conn *c, void *buf, size_t n, long long deadline);
int mgop_conn_has_buffered(struct mgop_conn *c);
void mgop_conn_close(struct mgop_conn *c);

/* Incremental chunked transfer decoder. Chunk and TLS-record edges need not
 * line up: feed any split, one byte at a time if need be. */
enum mgop_chunk_state {
  MGOP_CH_SIZE, MGOP_CH_EXT, MGOP_CH_SIZE_LF, MGOP_CH_DATA, MGOP_CH_DATA_CR, MGOP_CH_DATA_LF,
  MGOP_CH_TRAILER, MGOP_CH_TRAILER_LINE, MGOP_CH_END_LF, MGOP_CH_DONE
};
struct mgop_chunked { int state; uint64_t remaining; int digits; };
void mgop_chunked_init(struct mgop_chunked *d);
/* Consumes input, writes payload to out (out may equal in). Returns bytes
 * consumed (stops after the final CRLF) or a negative error. */
long mgop_chunked_decode(struct mgop_chunked *d, const unsigned char *in, size_t n, unsigned char *out,
                         size_t *outn);

struct mgop_http_resp {
  int status;
  int chunked;
  long long content_length;   /* -1 when absent              */
  int close;                  /* Connection: close           */
  int retry_after_s;          /* -1 when absent              */
  char content_type[96];
  struct mgop_chunked ch;
  long long body_left;
  int body_done;
  int no_body;
};
/* Parses "HTTP/1.1 200 OK\r\nK: v\r\n...\r\n\r\n" (n includes the blank line). */
int mgop_http_parse_head(const char *buf, size_t n, struct mgop_http_resp *r, int head_request);
int mgop_http_read_head(struct mgop_conn *c, struct mgop_http_resp *r, long long deadline);
typedef int (*mgop_sink_fn)(void *ctx, const char *data, size_t n);
/* Delivers decoded body bytes to sink. deadline 0: process what is buffered or
 * readable now and return MGOP_ERR_AGAIN if the body is not complete. */
int mgop_http_read_body(struct mgop_conn *c, struct mgop_http_resp *r, mgop_sink_fn sink, void *ctx,
                        long long deadline);

/* Splits a byte stream into '\n'-terminated lines of at most cap bytes. An
 * over-long line is skipped whole and counted in `overlong`. */
struct mgop_lines {
  char *buf;
  size_t cap, len;
  int skipping;
  unsigned long overlong;
  int (*on_line)(void *ctx, char *line, size_t n);
  void *ctx;
};
void mgop_lines_init(struct mgop_lines *l, char *buf, size_t cap, int (*on_line)(void *, char *, size_t),
                     void *ctx);
int mgop_lines_feed(void *lines, const char *data, size_t n); /* an mgop_sink_fn */

/* ======================================================================
 * 2.6 kube
 * ==================================================================== */
struct mgop_kube_stats {
  unsigned long long requests, writes, errors, reconnects, token_reloads;
};
struct mgop_kube {
  struct mgop_kubecfg *cfg;
  struct mgop_tls tls;
  struct mgop_conn conn;      /* keep-alive connection for requests */
  struct mgop_kube_stats stats;
  int last_retry_after_s;
  long long timeout_ms;       /* per request; 0: MGOP_REQUEST_TIMEOUT_MS */
  int (*may_write)(void);     /* when set and false, writes are refused
                                 before they leave (leader election)     */
  long long *beat_ms;         /* when set: stamped before every attempt,
                                 so a watchdog sees a waiting caller live */
  const char *peer;           /* for messages; NULL: "API server"      */
  const char *extra_headers;  /* more header lines ("K: v\r\n" each), or NULL */
  const char *accept;         /* the Accept header's value; NULL: application/json */
};
/* An object's metadata alone (PartialObjectMetadata), for an Accept */
#define MGOP_ACCEPT_METADATA "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
int mgop_kube_init(struct mgop_kube *k, struct mgop_kubecfg *cfg);
/* Adds one client's request counts to another's (a thread's client, after
 * the thread is done with it or under the lock that hands it over). */
void mgop_kube_stats_add(struct mgop_kube_stats *into, const struct mgop_kube_stats *from);
void mgop_kube_free(struct mgop_kube *k);
/* One request. *status gets the HTTP status; body (bounded) goes to out,
 * which may be NULL. Retries once on a stale keep-alive connection and once
 * after re-reading a rotated token on 401. */
int mgop_kube_request(struct mgop_kube *k, const char *method, const char *path, const char *content_type,
                      const char *body, size_t body_len, struct mgop_buf *out, int *status);
/* Writes the request line and headers shared by requests and watches. */
int mgop_kube_write_head(struct mgop_kube *k, struct mgop_conn *c, const char *method, const char *path,
                         const char *content_type, size_t body_len, long long deadline);

/* A LIST body, scanned as it streams (any split, byte by byte if need be):
 * each element of the top-level "items" array is found by tracking string,
 * escape and nesting state only, and handed whole to on_item, so memory does
 * not depend on the page size. The rest of the body (kind, apiVersion,
 * metadata.resourceVersion and .continue) is kept as the envelope, with
 * "items" left empty, for mgop_list_scan_end. An element longer than the
 * item buffer is skipped: on_item gets its first `cap` bytes, truncated 1. */
typedef int (*mgop_list_item_fn)(void *ctx, char *item, size_t n, int truncated);
struct mgop_list_scan {
  int state;                  /* before, inside, after the body's object */
  int depth;                  /* open containers; the body's object is 1 */
  int in_str, esc;            /* string state, inside items or not       */
  int key_items;              /* the depth-1 string just read is "items" */
  int val_items;              /* the depth-1 value being read is items'  */
  int in_items;               /* depth 2 is the items array              */
  int expect;                 /* between elements: what may come next    */
  int in_item;                /* bytes go to the item buffer             */
  char key[8];
  size_t key_len;
  char *item;
  size_t cap, len, total;
  mgop_list_item_fn on_item;
  void *ctx;
  unsigned long items, truncated;
  size_t env_len;
  char env[MGOP_LIST_ENVELOPE_MAX];
};
void mgop_list_scan_init(struct mgop_list_scan *s, char *item, size_t cap, mgop_list_item_fn on_item, void *ctx);
int mgop_list_scan_feed(void *scan, const char *data, size_t n); /* an mgop_sink_fn */
/* The body ended: it must have been one whole object. Parses the envelope
 * into env (tokens in tok) and checks items is a list or null. */
int mgop_list_scan_end(struct mgop_list_scan *s, struct mgop_json *env, jsmntok_t *tok, unsigned maxtok);

typedef int (*mgop_item_fn)(void *ctx, const struct mgop_json *j, int item);
/* Paginated LIST of `path` (may carry a query), streamed over connection c
 * (NULL: k's own). Calls fn per item, each parsed on its own, and copies the
 * list's resourceVersion into rv once every page has been read (rv is left
 * empty on failure). An object over MGOP_BODY_MAX bytes or
 * MGOP_JSON_TOKENS_MAX tokens is logged by name and counted in *skipped
 * (may be NULL); the rest of the list goes on. */
int mgop_kube_list(struct mgop_kube *k, struct mgop_conn *c, const char *path, mgop_item_fn fn, void *ctx, char *rv,
                   size_t rvcap, unsigned long *skipped);
/* The same with the caller's scanner and item buffer, so several lists can
 * run at once on several threads (b NULL, or its scan NULL: mgop_kube_list's
 * own, for the loop's thread); with serial set, each item is decoded
 * and handed to fn under that mutex (fn and the shared token array see one
 * item at a time), and so is the envelope. With any_version, the first page
 * asks for resourceVersion=0: kube-apiserver answers from its watch cache
 * (whole, limit ignored) instead of a read from etcd, which is what
 * client-go's informers do for their first list; later pages (served from
 * etcd when the cache is off) carry only continue, as they must. */
struct mgop_list_bufs {
  struct mgop_list_scan *scan;
  char *item;
  size_t cap;
  pthread_mutex_t *serial;
  int any_version;
};
int mgop_kube_list_with(struct mgop_kube *k, struct mgop_conn *c, const char *path, mgop_item_fn fn, void *ctx,
                        char *rv, size_t rvcap, unsigned long *skipped, const struct mgop_list_bufs *b);

/* ABSENT: an optional kind (mgop_watch.optional) the API server does not
 * serve (404 on the list): no requests until mgop_watch_enable. */
enum mgop_watch_state { MGOP_W_LIST, MGOP_W_START, MGOP_W_STREAM, MGOP_W_BACKOFF, MGOP_W_ABSENT };
struct mgop_watch;
/* type is ADDED, MODIFIED, DELETED, or SYNC for objects seen by a (re)list.
 * LIST_BEGIN and LIST_END (j NULL, obj -1) bracket a complete (re)list:
 * whatever it did not show is gone, even if no DELETED event said so (it
 * was deleted while the watch was down). A failed list has no LIST_END, nor
 * has a list that skipped an object too large to decode: nothing is
 * forgotten until a complete relist. */
typedef void (*mgop_event_fn)(void *ctx, struct mgop_watch *w, const char *type, const struct mgop_json *j,
                              int obj);
struct mgop_watch {
  char kind[48];              /* for logs and metrics                 */
  char path[384];             /* collection path                      */
  char selector[256];         /* query selectors, URL-encoded: "labelSelector=...&fieldSelector=...", or "" */
  char rv[32];
  enum mgop_watch_state state;
  long long next_ms;          /* when BACKOFF ends                    */
  long long last_data_ms;
  int backoff_ms;
  /* mgop_watch_init zeroes the fields above conn */
  unsigned long long events, relists, restarts, overlong; /* overlong: events and list items dropped */
  int timeout_s;              /* the stream's timeoutSeconds         */
  unsigned long list_items;   /* objects the last list showed (a debug log line) */
  struct mgop_conn conn;
  struct mgop_http_resp resp;
  struct mgop_lines lines;
  char line[MGOP_WATCH_LINE_MAX];
  mgop_event_fn on_event;
  void *ctx;
  struct mgop_kube *kube;
  int retry_after_s;          /* from the last 429/503, or -1         */
  int optional;               /* a 404 on the list means ABSENT, not an error */
  struct mgop_conn *list_conn; /* NULL: LIST on conn; else a keep-alive one
                                * shared by several watches (see mgop_watch_step) */
};
void mgop_watch_init(struct mgop_watch *w, struct mgop_kube *k, const char *kind, const char *path,
                     const char *selector, mgop_event_fn fn, void *ctx);
/* Drives the state machine: list, (re)start, read what is available.
 * Never blocks longer than one request. With a shared list_conn a LIST
 * step ends in START, and the stream opens at the next step: its owner can
 * list every kind over one TLS handshake and open the streams (one
 * handshake each) after acting on what the lists showed. */
int mgop_watch_step(struct mgop_watch *w, long long now);
struct mgop_pool;
struct mgop_pool_job;
/* The LIST step of every watch of ws[] (each in state LIST with a shared
 * list_conn) at once: the pool's workers list on their own connections
 * while the caller lists on the watches' list_conn, each event handed to
 * on_event one at a time (under a mutex: handlers need no locking of their
 * own, but kinds interleave). Each watch ends as its step would: START,
 * BACKOFF or ABSENT. Start-up lists all kinds this way. */
void mgop_watch_list_many(struct mgop_watch *const *ws, int n, struct mgop_pool *p, long long now);
/* The same with other read jobs in the batch, taken before the lists: their
 * run gets serial, which the lists' events are handed over under (a job
 * whose items reach the same handlers takes it too, as
 * mgop_kube_list_with does with its bufs' serial). At most 32 jobs in all
 * (MGOP_ERR_TOOBIG, with no request made). */
int mgop_watch_list_batch(struct mgop_watch *const *ws, int n, struct mgop_pool_job *extra, int nextra,
                          pthread_mutex_t *serial, struct mgop_pool *p, long long now);
int mgop_watch_fd(const struct mgop_watch *w);     /* -1 when not streaming */
long long mgop_watch_wake_ms(const struct mgop_watch *w, long long now); /* ms until step is due */
void mgop_watch_close(struct mgop_watch *w);
/* An ABSENT watch lists again at its next step (the kind may be served now). */
void mgop_watch_enable(struct mgop_watch *w);
/* rc (mgop_errmsg() its error), a LIST's of w's kind, says the kind is not
 * there for the operator: an optional kind the API server does not serve
 * (404), or one an older Role forbids (403). Such a watch goes ABSENT. */
int mgop_watch_not_served(const struct mgop_watch *w, int rc);

/* Server-side apply of one object (JSON is valid apply YAML), as
 * fieldManager=multigres-operator with force. `item_path` is the object's own
 * path. The new resourceVersion goes to rv. On failure *status is set and the
 * API server's message is in mgop_errmsg(). */
struct mgop_applied {
  char rv[24]; char uid[40]; long long generation;
  long long replicas; /* spec.replicas as the server stored it; -1 when it has none */
};
int mgop_kube_apply(struct mgop_kube *k, const char *item_path, const char *json, size_t n, struct mgop_applied *out,
                    int *status);
/* The same with the caller's response buffer and tokens (any thread). */
int mgop_kube_apply_into(struct mgop_kube *k, const char *item_path, const char *json, size_t n,
                         struct mgop_applied *out, int *status, char *body, size_t cap, jsmntok_t *tok, unsigned ntok);

/* Several applies in flight for one caller: a batch of independent applies
 * runs on `workers` threads, each with an API connection of its own, while
 * the caller runs its share on its own client; mgop_pool_apply returns when
 * every job has its result, so the caller reads them in order as if it had
 * made them one by one. No job may depend on another of its batch. Memory
 * is allocated at start; 0 workers: the caller makes every request. */
#define MGOP_POOL_WORKERS_MAX 16
#define MGOP_POOL_BODY (64 * 1024)   /* one apply response  */
#define MGOP_POOL_TOKENS 4096        /* ... its tokens      */
struct mgop_pool_job {
  const char *path;                  /* the object's item path (caller's) */
  const char *json;
  size_t len;
  int status_patch;                  /* 1: a merge patch of path's status
                                      * subresource (res.rv gets its
                                      * resourceVersion), not an apply    */
  const char *method;                /* or, when set, this request of path
                                      * with json as its body (an Event's
                                      * POST): status, and the server's
                                      * message in err when it refused    */
  /* or, when run is set, any read: run(arg, ...) with the thread's client,
   * connection and list buffers (mgop_pool_run) */
  int (*run)(void *arg, struct mgop_kube *k, struct mgop_conn *c, struct mgop_list_scan *scan, char *item,
             size_t cap);
  void *arg;
  int rc, status;                    /* results                           */
  struct mgop_applied res;
  char err[512];                     /* mgop_errmsg() when rc != 0        */
};
struct mgop_pool_worker;
struct mgop_pool {
  pthread_mutex_t mu;
  pthread_cond_t work, done;
  struct mgop_pool_job *jobs;        /* the batch under way, or NULL      */
  int njobs, next, finished, stop;
  int nworkers, running;             /* made, and threads started         */
  struct mgop_pool_worker *w;
  unsigned long long max_in_flight, in_flight; /* jobs sent and not answered: the most, and now */
  int warm;                          /* set before mgop_pool_start: each worker opens its
                                      * connection as it starts, beside the caller's first
                                      * requests, once another connection brings a ticket
                                      * (mgop_conn_open_ahead, within MGOP_POOL_WARM_MS; a
                                      * job that finds it closed opens it, as ever) */
};
int mgop_pool_init(struct mgop_pool *p, int workers, const struct mgop_kubecfg *cfg, int (*may_write)(void),
                   long long *beat_ms);
int mgop_pool_start(struct mgop_pool *p);  /* the threads (signals blocked by the caller) */
void mgop_pool_apply(struct mgop_pool *p, struct mgop_kube *own, struct mgop_pool_job *jobs, int n);
/* The same for jobs with run set: the caller's share runs on own and
 * own_conn with the default list buffers (scan and item NULL). */
void mgop_pool_run(struct mgop_pool *p, struct mgop_kube *own, struct mgop_conn *own_conn, struct mgop_pool_job *jobs,
                   int n);
/* Adds the workers' request counts to *into and zeroes them (between batches). */
void mgop_pool_take_stats(struct mgop_pool *p, struct mgop_kube_stats *into);
void mgop_pool_stop(struct mgop_pool *p);  /* joins the threads, frees the clients */
/* JSON merge patch of the status subresource; rv (24 bytes, or NULL) gets
 * the resourceVersion the write made, so its watch echo can be told apart. */
int mgop_kube_patch_status(struct mgop_kube *k, const char *item_path, const char *json, size_t n, char *rv,
                           int *status);
/* The same with the caller's response buffer and tokens (any thread). */
int mgop_kube_patch_status_into(struct mgop_kube *k, const char *item_path, const char *json, size_t n, char *rv,
                                int *status, char *body, size_t cap, jsmntok_t *tok, unsigned ntok);
/* JSON merge patch of an object (metadata and spec), as fieldManager
 * `manager`. A uid makes it a precondition on that incarnation (409 when the
 * name now holds another object). 404 is MGOP_ERR_NOTFOUND. rv as for
 * mgop_kube_patch_status. */
int mgop_kube_merge_patch(struct mgop_kube *k, const char *item_path, const char *manager, const char *json, size_t n,
                          char *rv, int *status);
/* GET one object into out (bounded). */
int mgop_kube_get(struct mgop_kube *k, const char *item_path, struct mgop_buf *out, int *status);
/* GETs of paths[0..n) pipelined on k's connection (HTTP/1.1: every request
 * written, then the answers read in order): n round trips for the price of
 * one. Each answer, whatever its status, is read into out and handed to
 * each(ctx, i, status, out); a non-zero return stops there. *answered
 * counts the answers handed over. Returns each()'s non-zero value, 0 when
 * all n were, or a transport error (the connection is closed: a caller
 * that needs the rest asks for them one by one). No retry, no token
 * reload: for reads whose caller has a one-at-a-time path behind it. */
typedef int (*mgop_get_each_fn)(void *ctx, int i, int status, struct mgop_buf *out);
int mgop_kube_get_pipelined(struct mgop_kube *k, const char *const *paths, int n, struct mgop_buf *out,
                            mgop_get_each_fn each, void *ctx, int *answered);
/* DELETE one object; propagation is Background, Foreground or Orphan. With
 * a uid, only that incarnation: a precondition, so an object re-created under
 * the same name is never deleted by mistake (409 Conflict). 404 is success. */
int mgop_kube_delete(struct mgop_kube *k, const char *item_path, const char *propagation, const char *uid,
                     int *status);
/* The "message" of a Kubernetes Status body, or a short excerpt. */
void mgop_kube_status_message(const char *body, size_t n, char *out, size_t cap);

/* ======================================================================
 * 2.7 state
 * ==================================================================== */
#define MGOP_NAME_MAX 253
/* Length limits of the reference operator's names. */
#define MGOP_LIMIT_SERVICE 63   /* Services, PVCs, PDBs  */
#define MGOP_LIMIT_POD 60       /* pod base names         */
#define MGOP_LIMIT_STS 52       /* StatefulSets           */
#define MGOP_LIMIT_DEFAULT 253
/* The reference operator's names: parts lower-cased (other characters become
 * '-'), joined with '-', then "-" + 8-hex FNV-1a-32 of the original parts
 * (each followed by a NUL). Too long: the joined part is cut and "---" +
 * hash appended, exactly `limit` long. A first character that cannot start
 * a name gets an "x" in front. hashed=0 gives the plain join for
 * singletons (still cut with the hash if too long). */
int mgop_name(char *out, size_t cap, size_t limit, int hashed, const char *const *parts, int nparts);

/* One row per object we own: what we last applied and what we last saw.
 * Fixed capacity; open addressing on a 64-bit key of kind/namespace/name. */
#ifndef MGOP_FP_SLOTS_DEFAULT
#define MGOP_FP_SLOTS_DEFAULT 8192 /* --max-objects: about 26 rows a minimal cluster */
#endif
struct mgop_fp {
  uint64_t key;           /* 0: empty, UINT64_MAX: removed              */
  uint64_t applied_hash;  /* hash of the body we last applied           */
  uint64_t status_hash;   /* hash of the status we last wrote           */
  long long applied_gen;  /* generation our apply returned (0: none)    */
  long long seen_gen;     /* generation last seen on a watch            */
  uint64_t applied_rv;    /* hash of the resourceVersion our apply returned */
  uint64_t seen_rv;       /* ... and of the one last seen on a watch (only
                             compared: a hash keeps the row small)      */
  char uid[40];
  int32_t ready, desired; /* readiness summary from the watch           */
  uint32_t flags;
  int32_t cond_ready;     /* Ready state written (or read back from the
                             live object): 0, 1, 2 Stalled             */
  long long cond_since;   /* unix seconds of its last transition (0: not
                             known yet)                                */
  int32_t xcond_state;    /* the extra condition (TopologyRegistered):
                             0 not written, 1 False, 2 True            */
  long long xcond_since;  /* its last transition, unix seconds          */
  int32_t kind;           /* policy's kind id + 1 (0: not from a watch) */
  uint32_t epoch;         /* list epoch of that kind when last seen     */
  /* Ownership, for pruning: hashes, not strings, so the row stays small. */
  uint64_t cluster;       /* hash of namespace/cluster label (0: none)  */
  uint64_t owner_key;     /* fp key of its controller owner (0: none)   */
  uint64_t owner_uid;     /* hash of that owner's uid                   */
  uint64_t grown_hash;    /* StatefulSets: the (size, replicas) whose PVCs
                           * were all expanded, so a turn skips the LIST */
  long long renew_at;     /* certificate Secrets the operator issues: unix
                           * seconds when it is next due (0: unknown)    */
  int32_t stale;          /* StatefulSets: pods created but not at
                           * status.updateRevision (status.replicas -
                           * status.updatedReplicas)                    */
  int32_t cert_revision;  /* Certificates: status.revision, cert-manager's
                           * count of issuances (0: none yet)           */
  uint64_t update_rev;    /* StatefulSets: hash of status.updateRevision */
  long long observed_gen; /* StatefulSets: status.observedGeneration, the
                           * spec its updateRevision and staleness are of
                           * (-1: the status has none; 0: no watch event
                           * yet, only our apply)                        */
  uint64_t roles_hash;    /* Shards: hash of status.podRoles as last
                           * written or seen (0: not known)            */
};
#define MGOP_FP_EXISTS 1u   /* the object exists (seen, not deleted)    */
#define MGOP_FP_SETTLED 2u  /* its controller observed the latest spec  */
#define MGOP_FP_READY 4u    /* its own Ready condition is True (our CRs) */
#define MGOP_FP_ORPHANED 8u /* detached from a deleted cluster (StatefulSets:
                               the multigres.com/orphaned-from label)  */
#define MGOP_FP_HELD 16u    /* pool StatefulSets: a scale-down waits for the
                               primary to move (its Event was emitted)  */
#define MGOP_FP_DRAIN 32u   /* pool StatefulSets: a scale-down drains its
                               highest ordinal                          */
#define MGOP_FP_ROLL_DRAIN 64u /* pool StatefulSets: a rolling update drains
                               one of its pods                          */
#define MGOP_FP_CREATED 128u /* our apply created it (201) and what it owns
                               was not made yet: a Shard's backup PVC and
                               certificate Secrets are created without a
                               GET first (cleared once they are)         */
uint64_t mgop_fp_key(const char *kind, const char *ns, const char *name);
/* The table is allocated once, before its first use: mgop_fp_init(slots)
 * at start-up (--max-objects), or MGOP_FP_SLOTS_DEFAULT on first use.
 * MGOP_ERR_NOMEM when the memory cannot be had or it is already sized. */
int mgop_fp_init(size_t slots);
size_t mgop_fp_slots(void);
struct mgop_fp *mgop_fp_find(uint64_t key);
struct mgop_fp *mgop_fp_upsert(uint64_t key); /* NULL when full */
void mgop_fp_remove(uint64_t key);
size_t mgop_fp_count(void);
/* Tombstones removals leave in the index, and their removal (rows do not
 * move: a row pointer stays good until its key is removed). */
size_t mgop_fp_tombstones(void);
void mgop_fp_compact(void);
/* Row i (0 <= i < mgop_fp_span(), the rows ever used) when it holds a key,
 * else NULL: for a sweep; removing the row returned is safe while sweeping. */
size_t mgop_fp_span(void);
struct mgop_fp *mgop_fp_at(size_t i);


/* The work set: roots (namespace/name of a kind) waiting to be reconciled,
 * de-duplicated, each with a not-before time. Every watch event of a child
 * queues its cluster, so an add finds the root by hash (an index twice the
 * slots, linear probing); a pop, once a turn, scans the slots in use. */
#ifndef MGOP_WORK_SLOTS
#define MGOP_WORK_SLOTS 1024
#endif
struct mgop_work {
  char kind[24];
  char ns[64];
  char name[64];
  long long not_before;
  int attempts;
  int used;
  uint64_t key;               /* hash of kind, ns and name: its index slot */
};
/* Adds (or moves earlier) a root; returns MGOP_ERR_NOMEM when full. */
int mgop_work_add(const char *kind, const char *ns, const char *name, long long not_before);
/* Re-adds a popped item with one more attempt (for its backoff). */
int mgop_work_retry(const struct mgop_work *item, long long not_before);
/* Pops the due root with the earliest not-before time into *out. */
int mgop_work_pop(long long now, struct mgop_work *out);
long long mgop_work_next_due(long long now); /* ms until the next is due, or -1 */
size_t mgop_work_depth(void);

/* ======================================================================
 * 2.8 pki
 *
 * The webhook's built-in PKI: an ECDSA P-256 CA and serving certificates
 * it signs, all in memory (PEM in fixed buffers; the policy keeps them in
 * Secrets), written with mbedTLS 3.6's x509write setters (subjectAltName
 * with dNSName and iPAddress entries, extendedKeyUsage). Times are unix seconds,
 * passed in so tests can move the clock. Random numbers come from the TLS
 * client's CTR_DRBG (mgop_tls_global_init).
 * ==================================================================== */
struct mgop_pki_pair {
  char cert[MGOP_PKI_PEM_MAX];   /* PEM, NUL-terminated                    */
  size_t cert_len;               /* strlen(cert)                           */
  char key[MGOP_PKI_PEM_MAX];    /* PEM "EC PRIVATE KEY", NUL-terminated   */
  size_t key_len;
};
/* Self-signed CA: CN=cn, basicConstraints CA:true pathlen 0 (critical),
 * keyUsage keyCertSign|cRLSign, subject/authority key identifiers,
 * not_before now-1h, not_after now+validity_s. */
int mgop_pki_make_ca(struct mgop_pki_pair *ca, const char *cn, long long validity_s, long long now_s);
/* Serving certificate signed by ca: CN = names[0] (cut to 64), subjectAltName
 * with every name (dNSName, or iPAddress for an IPv4/IPv6 literal),
 * extendedKeyUsage serverAuth, keyUsage digitalSignature, CA:false. */
int mgop_pki_make_serving(struct mgop_pki_pair *out, const struct mgop_pki_pair *ca, const char *const *names,
                          int nnames, long long validity_s, long long now_s);
/* The same with extendedKeyUsage serverAuth and clientAuth: one certificate
 * a peer both serves and presents (pgBackRest's TLS between pool pods). */
int mgop_pki_make_peer(struct mgop_pki_pair *out, const struct mgop_pki_pair *ca, const char *const *names,
                       int nnames, long long validity_s, long long now_s);
/* Fills a pair from PEM text (e.g. a Secret's tls.crt/tls.key) after
 * checking that both parse and the key belongs to the (first) certificate. */
int mgop_pki_pair_load(struct mgop_pki_pair *p, const char *cert, size_t cert_len, const char *key, size_t key_len);
/* not_before/not_after of the first certificate of PEM/DER text; either
 * output may be NULL. */
int mgop_pki_validity(const char *cert, size_t len, long long *not_before_s, long long *not_after_s);
int mgop_pki_not_after(const char *cert, size_t len, long long *not_after_s);
/* 1 when the certificate should be replaced: less than a third of its
 * lifetime (not_after - not_before) or less than margin_s remains, or it
 * does not parse; 0 otherwise. */
int mgop_pki_needs_renewal(const char *cert, size_t len, long long now_s, long long margin_s);
/* Checks that leaf chains to the CA certificate(s) in ca_pem at now_s and
 * is valid for `name` (a DNS name, or an IP literal matched against the
 * iPAddress SANs); name may be NULL. MGOP_ERR_TLS with the reason otherwise
 * ("signed by a rotated CA" shows up here). */
int mgop_pki_verify(const char *leaf, size_t leaf_len, const char *ca_pem, size_t ca_len, const char *name,
                    long long now_s);
/* The certificate's serial number as lower-case hex (for logs, tests). */
int mgop_pki_serial_hex(const char *cert, size_t len, char *out, size_t cap);

/* ======================================================================
 * 2.9 server
 *
 * HTTP/1.1 server (HTTPS when a certificate is installed) for the admission
 * webhook, /metrics and /healthz. No threads: the caller adds the server's
 * pollfds to its own poll() and calls mgop_srv_step on readiness, like a
 * watch. Connections live in a caller-owned fixed array; request bodies and
 * responses larger than the per-connection buffers borrow from a shared pool
 * of MGOP_SRV_BIG_SLOTS buffers (503 with Retry-After when it is empty;
 * request bodies never take the last free one). Chunked request
 * bodies get 411, oversize heads 431, oversize bodies 413. Every connection
 * has a deadline: the whole request within request_timeout_ms of accept (or
 * of its first byte on a keep-alive connection), the response within
 * write_timeout_ms, idle keep-alive for idle_ms. When the table is full, the
 * least recently used idle connection makes room.
 * ==================================================================== */
#include <poll.h>

/* A parsed request head. The parser is pure (no I/O, no globals). */
struct mgop_http_req {
  char method[16];
  char path[MGOP_HTTP_TARGET_MAX];   /* "/validate", or "*"; no query     */
  char query[MGOP_HTTP_TARGET_MAX];  /* after '?', or ""                  */
  char content_type[128];
  char authorization[4096];          /* the Authorization header, or ""   */
  int minor;                         /* HTTP/1.minor                      */
  long long content_length;          /* -1 when absent                    */
  size_t body_len;                   /* bytes of body after the head      */
  size_t head_len;                   /* bytes of head, blank line included */
  int close;                         /* client wants the connection closed */
  int expect_continue;               /* Expect: 100-continue              */
  int nheaders;
  int status;                        /* on error: the status to answer    */
  const char *error;                 /* on error: why (static text)       */
};
/* Parses the request head at the start of buf[0..n). MGOP_OK: complete
 * (req->head_len bytes; the body, req->body_len bytes, follows).
 * MGOP_ERR_AGAIN: incomplete, read more. Otherwise MGOP_ERR_HTTP or
 * MGOP_ERR_TOOBIG with req->status (400, 411, 413, 414, 417, 431, 501, 505)
 * and req->error set; the connection cannot be reused after that. */
int mgop_http_parse_request(const char *buf, size_t n, size_t head_max, size_t body_max,
                            struct mgop_http_req *req);
const char *mgop_http_reason(int status); /* "OK", "Not Found", ... */

/* What a handler fills. body points at a bounded buffer (a pool slot or,
 * when the pool is in use, the connection's own); overflow is answered
 * with a 500 (503 with Retry-After when no pool slot was free). */
/* The shared big buffers (request bodies over the connection buffer, and
 * large responses such as /metrics): slot_bytes each, at least
 * MGOP_SRV_BIG_MAX; once, before the servers start (else the default). */
int mgop_srv_pool_init(size_t slot_bytes);
struct mgop_srv_resp {
  int status;                        /* 0 is answered as 500              */
  char content_type[96];             /* "" for none                       */
  char headers[256];                 /* extra "Name: value\r\n" lines     */
  struct mgop_buf body;
  int close;                         /* close the connection afterwards   */
};
/* Called once per complete request; body is body_len bytes (not
 * NUL-terminated). Everything passed in is borrowed for the call only. */
typedef void (*mgop_srv_handler)(void *ctx, const struct mgop_http_req *req, const char *body, size_t body_len,
                                 struct mgop_srv_resp *resp);

enum mgop_srv_cstate { MGOP_SC_FREE, MGOP_SC_HANDSHAKE, MGOP_SC_READ, MGOP_SC_WRITE, MGOP_SC_LINGER };
struct mgop_srv_conn {
  int fd;
  enum mgop_srv_cstate state;
  int gen;                           /* TLS generation, -1 for plain HTTP */
  int ssl_init;
  short events;                      /* what to poll for: POLLIN/POLLOUT  */
  int more;                          /* work left without readiness       */
  mbedtls_ssl_context ssl;
  long long accepted_ms, deadline_ms, last_ms;
  unsigned requests;                 /* responses completed               */
  int have_head, continue_sent, close_after, after_write_read;
  struct mgop_http_req req;
  int big_in, big_out;               /* pool slots held, or -1            */
  size_t body_got;                   /* body bytes in big_in              */
  size_t scan;                       /* end-of-head search resumes here   */
  size_t rlen, wh_len, wh_off, wb_len, wb_off;
  const char *wbody;
  char peer[64];
  unsigned char rbuf[MGOP_SRV_RBUF];
  char whead[1024];
  char wbuf[MGOP_SRV_WBUF];
};
struct mgop_srv_tls {                /* one certificate generation        */
  mbedtls_ssl_config conf;
  mbedtls_x509_crt crt;
  mbedtls_pk_context key;
  int live, refs;
  unsigned long long seq;
};
struct mgop_srv_stats {
  unsigned long long accepted, requests, responses_4xx, responses_5xx, handshake_errors, timeouts, evicted,
      pool_exhausted, cert_swaps;
  int active, active_high;
};
struct mgop_srv {
  char name[32];                     /* for logs: "webhook", "metrics"    */
  int lfd, port, tls;
  struct mgop_srv_conn *conns;
  int nconns;
  int span;                          /* slots ever used; the rest are free and untouched */
  mgop_srv_handler handler;
  void *ctx;
  struct mgop_srv_tls gens[MGOP_SRV_TLS_GENS];
  int cur;                           /* current generation, -1 none yet   */
  unsigned long long seq;
  long long request_timeout_ms, write_timeout_ms, idle_ms;
  long long accept_pause_until;      /* after EMFILE and the like         */
  unsigned keepalive_max;
  size_t head_max, body_max;
  struct mgop_srv_stats stats;
};
/* tls: 1 for HTTPS (no connection is accepted before mgop_srv_set_cert).
 * conns/nconns: the connection table, owned by the caller. The timeouts
 * and limits are fields the caller may change after init. */
void mgop_srv_init(struct mgop_srv *s, const char *name, int tls, struct mgop_srv_conn *conns, int nconns,
                   mgop_srv_handler handler, void *ctx);
/* Listens on "host:port", "[v6]:port" or ":port" (all interfaces, IPv6
 * dual-stack when available, else IPv4). Port 0 picks a free one. */
int mgop_srv_listen(struct mgop_srv *s, const char *addr);
int mgop_srv_port(const struct mgop_srv *s);   /* the bound port, or -1 */
/* Installs a certificate chain (leaf first) and key, PEM. New connections
 * use it at once; open ones finish on the one they started with. When
 * every generation slot is busy, the connections of the oldest draining
 * one are closed to make room. */
int mgop_srv_set_cert(struct mgop_srv *s, const char *cert, size_t cert_len, const char *key, size_t key_len);
/* Serial (hex) of the certificate new connections get, or "" (tests, logs). */
void mgop_srv_cert_serial(const struct mgop_srv *s, char *out, size_t cap);
/* Fills up to cap pollfds (at most nconns + 1 are needed); returns how many.
 * Not const: it may set up the next connection slot (mgop_srv_slot), so
 * call it on the server's own thread. */
int mgop_srv_pollfds(struct mgop_srv *s, struct pollfd *pfd, int cap);
/* After poll(): pfd/n as filled by mgop_srv_pollfds, revents set. Accepts,
 * handshakes, reads, calls the handler, writes, enforces deadlines.
 * Never blocks. */
void mgop_srv_step(struct mgop_srv *s, const struct pollfd *pfd, int n, long long now);
/* ms until mgop_srv_step is due without any readiness (a deadline, or
 * buffered TLS input); never negative, at most 60000. */
long long mgop_srv_wake_ms(const struct mgop_srv *s, long long now);
/* Closes every connection and the listener; frees the certificates. */
void mgop_srv_close(struct mgop_srv *s);

/* ======================================================================
 * 2.10 multiadmin
 *
 * multiadmin serves its gRPC API as REST/JSON (proto3 JSON mapping: lowerCamel
 * names, zero values omitted, 64-bit integers as strings, enums by name,
 * Timestamps as RFC 3339) over plain HTTP/1.1. One call is one connection
 * (Connection: close), bounded by a deadline, so a silent peer costs at most
 * that much.
 * ==================================================================== */
/* method target (path and query) on host:port, with an optional JSON body;
 * the response body into out (MGOP_ERR_TOOBIG past its capacity), its
 * status in *status. deadline: absolute mgop_now_ms() time. */
int mgop_http_call(struct mgop_conn *c, const char *host, const char *port, const char *method, const char *target,
                   const char *body, size_t n, struct mgop_buf *out, int *status, long long deadline);
/* "2026-12-02T04:03:36Z", "...36.123456Z", "...36+02:00" -> unix seconds. */
int mgop_rfc3339_s(const char *s, size_t n, long long *out);

/* What a GetBackupsResponse says about one shard. */
enum mgop_ma_backup_status { MGOP_MA_UNKNOWN = 0, MGOP_MA_INCOMPLETE = 1, MGOP_MA_COMPLETE = 2, MGOP_MA_FAILED = 3 };
struct mgop_ma_backups {
  int n;                      /* backups listed                          */
  int complete, failed, incomplete;
  long long complete_s;       /* backupTime of the newest COMPLETE (0: none) */
  char complete_id[64], complete_type[16];
  long long newest_s;         /* backupTime of the newest of any status  */
  int newest_status;          /* enum mgop_ma_backup_status              */
  char newest_id[64];
};
/* Parses {"backups":[{"backupId","type","status","backupTime",...}]}.
 * status may be the enum's name or number; entries without a parsable
 * backupTime count but never become the newest. */
int mgop_ma_parse_backups(const char *js, size_t n, struct mgop_ma_backups *out);

/* A five-field cron schedule (minute hour day-of-month month day-of-week),
 * numbers only: a star, N, A-B, steps (star/S, A-B/S, N/S) and comma lists; day-of-week 0-7
 * (0 and 7 are Sunday). As in Vixie cron, when both day fields are
 * restricted a day matching either one fires. */
struct mgop_cron {
  uint64_t minute;               /* bit per minute 0-59                     */
  uint32_t hour, dom;            /* bits 0-23; 1-31                         */
  uint16_t month;                /* bits 1-12                               */
  uint8_t dow;                   /* bits 0-6                                */
  int dom_any, dow_any;          /* the field was a star (or star/1)        */
};
int mgop_cron_parse(const char *s, struct mgop_cron *c);
/* The first matching minute strictly after after_s (UTC, unix seconds),
 * or -1 when none comes within 5 years (e.g. "0 0 31 2 *"). */
long long mgop_cron_next(const struct mgop_cron *c, long long after_s);

/* ======================================================================
 * 2.11 topo: protobuf wire format, base64, etcd v3 over its JSON gateway
 * ==================================================================== */
/* Protobuf wire types (only these four exist in proto3). */
enum { MGOP_PB_VARINT = 0, MGOP_PB_I64 = 1, MGOP_PB_LEN = 2, MGOP_PB_I32 = 5 };
/* Writers append to b; a full buffer sets b->overflow (check once at the
 * end). Proto3: a scalar equal to its default is not written, as Go's
 * proto.Marshal does, so the bytes match Multigres's own. */
void mgop_pb_varint(struct mgop_buf *b, uint64_t v);
void mgop_pb_tag(struct mgop_buf *b, unsigned field, unsigned wire);
void mgop_pb_uint(struct mgop_buf *b, unsigned field, uint64_t v);            /* skipped when 0  */
void mgop_pb_str(struct mgop_buf *b, unsigned field, const char *s);          /* skipped when "" */
void mgop_pb_bytes(struct mgop_buf *b, unsigned field, const void *p, size_t n); /* always written */
/* A nested message: begin writes the tag and returns where its body
 * starts; end inserts the body's length in front of it (minimal varint). */
size_t mgop_pb_msg_begin(struct mgop_buf *b, unsigned field);
void mgop_pb_msg_end(struct mgop_buf *b, size_t start);
/* One field read from msg[0..len): number, wire type, the varint value
 * (VARINT, I64, I32) or the bytes (LEN), and the field's whole encoding
 * [start, end) so a field we do not know is copied through unchanged. */
struct mgop_pb_field {
  unsigned field, wire;
  uint64_t v;
  const unsigned char *p;
  size_t n, start, end;
};
/* 1 when a field was read, 0 at the end, or MGOP_ERR_PARSE (truncated,
 * field 0, a group wire type, a length past the end). */
int mgop_pb_next(const unsigned char *msg, size_t len, size_t *pos, struct mgop_pb_field *f);

/* RFC 4648 base64 with padding. encode: the length written (NUL-terminated)
 * or MGOP_ERR_TOOBIG; decode: MGOP_ERR_PARSE on anything else. */
long mgop_b64_encode(const void *in, size_t n, char *out, size_t cap);
int mgop_b64_decode(const char *in, size_t n, unsigned char *out, size_t cap, size_t *outn);

/* etcd v3 speaks JSON on its client port (the gRPC gateway): POST
 * /v3/kv/range, /v3/kv/put, /v3/kv/txn, /v3/kv/deleterange; keys and values
 * base64, 64-bit integers as strings, proto3 defaults (false, 0, empty)
 * left out. A kv handed to a callback is borrowed (decoded into
 * per-thread scratch) and valid only during the call. */
struct mgop_etcd_kv {
  const char *key;            /* NUL-terminated                      */
  size_t key_len;
  const unsigned char *value;
  size_t value_len;
  long long create_revision, mod_revision, version;
};
typedef int (*mgop_etcd_kv_fn)(void *ctx, const struct mgop_etcd_kv *kv);
/* A RangeResponse body: fn per kv, *revision from the header (may be NULL). */
int mgop_etcd_parse_range(const char *body, size_t n, mgop_etcd_kv_fn fn, void *ctx, long long *revision);
/* A TxnResponse body: succeeded (absent means false) and the revision. */
int mgop_etcd_parse_txn(const char *body, size_t n, int *succeeded, long long *revision);
/* A DeleteRangeResponse body: how many keys went. */
int mgop_etcd_parse_delete(const char *body, size_t n, long long *deleted);
/* The message of an error body ({"error","code","message"}), or an excerpt. */
void mgop_etcd_error_message(const char *body, size_t n, char *out, size_t cap);

/* A client for one etcd cluster: its endpoints tried in turn (the one that
 * last answered first), each call bounded by timeout_ms (connect included),
 * TLS with a CA and an optional client certificate for https:// ones. */
struct mgop_etcd {
  char endpoints[MGOP_ETCD_ENDPOINTS_MAX][MGOP_ETCD_URL_MAX];
  int nendpoints, current;
  long long timeout_ms;
  char last_error[400];       /* "endpoint: reason" of the last failure */
  struct mgop_kubecfg cfg;    /* scheme/host/port of the current one, the PEMs */
  struct mgop_kube kube;
  int kube_ready;
  unsigned long long calls, failures;
};
/* Endpoints are URLs (http://host:port or https://host:port); the PEMs may
 * be NULL for plain HTTP. Frees whatever e held before. */
int mgop_etcd_init(struct mgop_etcd *e, const char *const *endpoints, int n, const void *ca, size_t ca_len,
                   const void *cert, size_t cert_len, const void *key, size_t key_len);
void mgop_etcd_free(struct mgop_etcd *e);
/* prefix: every key starting with `key`; keys_only: values left out. */
int mgop_etcd_range(struct mgop_etcd *e, const char *key, int prefix, int keys_only, mgop_etcd_kv_fn fn, void *ctx);
/* Create-only: a txn guarded on version(key) == 0. *created 0: it exists. */
int mgop_etcd_create(struct mgop_etcd *e, const char *key, const void *val, size_t n, int *created);
/* Compare-and-swap: a txn guarded on mod_revision(key) == mod_revision.
 * *swapped 0: someone else wrote it in between (read again, retry). */
int mgop_etcd_update(struct mgop_etcd *e, const char *key, const void *val, size_t n, long long mod_revision,
                     int *swapped);
/* Deletes one key; *deleted (may be NULL) is 0 when there was none. */
int mgop_etcd_delete(struct mgop_etcd *e, const char *key, long long *deleted);

/* Storage maintenance (the gateway's Cluster and Maintenance services):
 * the members and their client URLs, one member's status (ask a client
 * made for that member alone: status describes whoever answers), and a
 * defragmentation of that member, bounded by timeout_ms (it blocks the
 * member's writes while bbolt copies the live pages). */
struct mgop_etcd_status {
  long long db_size, db_in_use; /* bytes of the backend file, and in use */
  unsigned long long member_id, leader;
  int alarms;                   /* entries of "errors" (NOSPACE, ...)   */
};
struct mgop_etcd_members {
  int n;
  unsigned long long id[MGOP_ETCD_ENDPOINTS_MAX];
  char name[MGOP_ETCD_ENDPOINTS_MAX][64];
  char url[MGOP_ETCD_ENDPOINTS_MAX][MGOP_ETCD_URL_MAX]; /* its first client URL */
};
int mgop_etcd_parse_status(const char *body, size_t n, struct mgop_etcd_status *st);
/* MGOP_ERR_TOOBIG past MGOP_ETCD_ENDPOINTS_MAX members or a longer URL. */
int mgop_etcd_parse_members(const char *body, size_t n, struct mgop_etcd_members *m);
int mgop_etcd_member_list(struct mgop_etcd *e, struct mgop_etcd_members *m);
int mgop_etcd_status(struct mgop_etcd *e, struct mgop_etcd_status *st);
int mgop_etcd_defragment(struct mgop_etcd *e, long long timeout_ms);

/* Multigres's topology records (proto/clustermetadata.proto, package
 * clustermetadata), hand-encoded. Field numbers, checked against
 * Multigres's source:
 *   Cell             name=1 server_addresses=2 (repeated) root=3
 *   Database         name=1 backup_location=2 cells=3 (repeated)
 *                    bootstrap_durability_policy=4
 *   BackupLocation   oneof { filesystem=1 FilesystemBackup{path=1},
 *                    s3=2 S3Backup{bucket=1 region=2 endpoint=3 key_prefix=4
 *                    use_env_credentials=5} } require_initial_repo_encryption=3
 *                    (Multigres owns authoritative_generation=4: kept)
 *   DurabilityPolicy policy_name=1 quorum_type=3 (enum: AT_LEAST_N=3,
 *                    MULTI_CELL_AT_LEAST_N=4) required_count=4
 * Encoding over the stored bytes (`old`, may be NULL) rewrites the fields
 * the operator owns and keeps every other field of `old` as it was, so a
 * field Multigres adds or owns survives our read-modify-write. Owned
 * fields come first in field order, kept ones after: what Go's Marshal
 * writes for a message whose newer fields it does not know. */
#define MGOP_TOPO_LIST_MAX 64         /* cells of a database, addresses of a cell */
enum { MGOP_QUORUM_AT_LEAST_N = 3, MGOP_QUORUM_MULTI_CELL_AT_LEAST_N = 4 };
struct mgop_topo_cell {
  const char *name, *root;
  const char *addrs[MGOP_TOPO_LIST_MAX];
  int naddrs;
};
struct mgop_topo_db {
  const char *name;
  int s3;                             /* 0: filesystem at fs_path       */
  const char *fs_path, *bucket, *region, *endpoint, *key_prefix;
  int use_env_credentials, require_encryption;
  const char *policy_name;
  int quorum_type, required_count;
  const char *cells[MGOP_TOPO_LIST_MAX];
  int ncells;
};
int mgop_topo_cell_encode(const struct mgop_topo_cell *c, const unsigned char *old, size_t old_len, struct mgop_buf *b);
int mgop_topo_db_encode(const struct mgop_topo_db *d, const unsigned char *old, size_t old_len, struct mgop_buf *b);
/* A stored record as JSON (proto3 JSON names), for render and logs. Fields
 * this operator does not know are listed by number in "otherFields". */
int mgop_topo_cell_json(const unsigned char *p, size_t n, struct mgop_jw *w);
int mgop_topo_db_json(const unsigned char *p, size_t n, struct mgop_jw *w);

/* A pooler's record, which multipooler registers itself in its cell's
 * topology: key <cell root>/poolers/multipooler-<cell>-<name>/Pooler (the
 * name is its --service-id), value a MultiPooler message:
 *   MultiPooler  id=1 ID{component=1 cell=2 name=3} type=6 (PoolerType)
 * Only what a role decision needs is read; the rest is skipped. */
enum { MGOP_POOLER_UNKNOWN = 0, MGOP_POOLER_PRIMARY = 1, MGOP_POOLER_REPLICA = 2, MGOP_POOLER_DRAINED = 3 };
struct mgop_topo_pooler {
  char cell[64], name[254];   /* "" when absent or longer than fits     */
  int type;                   /* PoolerType; 0 absent, -1 out of range  */
};
/* MGOP_ERR_PARSE on bytes that are not a protobuf message. */
int mgop_topo_pooler_parse(const unsigned char *p, size_t n, struct mgop_topo_pooler *out);

/* ======================================================================
 * 2.12 trace: W3C trace context, spans, OTLP/HTTP JSON
 *
 * A span is a value on its maker's stack: begin, add attributes, end. An
 * ended, sampled span is copied into a bounded queue (a full queue drops it
 * and counts it); an exporter thread takes batches and POSTs them as OTLP
 * JSON (trace and span ids in hex, 64-bit times as strings, enums as
 * numbers) over the kube client (plain HTTP or TLS, keep-alive). Each
 * thread has a current span: begin makes the new span current, end puts
 * back the one before, and log lines carry its trace_id/span_id. With
 * tracing off (no endpoint) begin and end cost a branch.
 * ==================================================================== */
#define MGOP_TRACE_QUEUE_MAX 2048      /* OTEL_BSP_MAX_QUEUE_SIZE's ceiling */
#define MGOP_TRACE_QUEUE_DEFAULT 512   /* (the SDKs' 2048 costs 4 MiB here) */
#define MGOP_TRACE_BODY_MAX (512 * 1024) /* one export request; more spans: more requests */
#define MGOP_SPAN_NAME_MAX 64
#define MGOP_SPAN_ATTRS_MAX 1024       /* one span's attributes, as OTLP JSON;
                                          more: droppedAttributesCount */
#define MGOP_SPAN_STATUS_MAX 512
#define MGOP_TRACE_HEADERS_MAX 2048    /* OTEL_EXPORTER_OTLP_HEADERS, as lines */
#define MGOP_TRACE_RESOURCE_MAX 2048   /* resource attributes, as OTLP JSON */
#define MGOP_TRACE_ENV_MAX 4096        /* one OTEL_* value */

struct mgop_trace_ctx {
  unsigned char trace_id[16], span_id[8];
  unsigned char flags;                 /* bit 0: sampled                   */
};
/* 1 when neither id is all zero. */
int mgop_trace_ctx_valid(const struct mgop_trace_ctx *c);
/* W3C traceparent "00-<32 hex>-<16 hex>-<2 hex>" (lower-case). A version
 * above 00 is read by 00's layout, as the recommendation says; ff, bad
 * hex and all-zero ids are MGOP_ERR_PARSE with the reason. */
int mgop_traceparent_parse(const char *s, size_t n, struct mgop_trace_ctx *out);
void mgop_traceparent_format(const struct mgop_trace_ctx *c, char out[56]);
void mgop_hex(const unsigned char *p, size_t n, char *out); /* lower-case, NUL-terminated */

enum { MGOP_SPAN_INTERNAL = 1, MGOP_SPAN_SERVER = 2, MGOP_SPAN_CLIENT = 3 }; /* OTLP SpanKind */
enum { MGOP_SPAN_UNSET = 0, MGOP_SPAN_OK = 1, MGOP_SPAN_ERROR = 2 };        /* OTLP Status.code */
struct mgop_span {
  struct mgop_trace_ctx ctx;
  unsigned char parent[8];             /* all zero: a root                 */
  struct mgop_trace_ctx link;          /* invalid: no link                 */
  int kind, status, recording;         /* recording: tracing on and sampled */
  long long start_ns, end_ns;          /* unix time                        */
  char name[MGOP_SPAN_NAME_MAX];
  char attrs[MGOP_SPAN_ATTRS_MAX];     /* KeyValue objects, comma-separated */
  size_t attrs_len;
  int attrs_dropped;
  char status_msg[MGOP_SPAN_STATUS_MAX];
  struct mgop_span *prev;              /* the thread's current span before */
};
/* parent: the span to continue (its trace, its sampling when parent-based),
 * or NULL for the thread's current span, or a new trace when none. */
void mgop_span_begin(struct mgop_span *s, const char *name, int kind, const struct mgop_trace_ctx *parent);
/* Before any child or log line: continue `parent` after all (a trace
 * learnt once the object was read), and/or link to `link`. */
void mgop_span_continue(struct mgop_span *s, const struct mgop_trace_ctx *parent, const struct mgop_trace_ctx *link);
void mgop_span_str(struct mgop_span *s, const char *key, const char *v);
void mgop_span_int(struct mgop_span *s, const char *key, long long v);
void mgop_span_bool(struct mgop_span *s, const char *key, int v);
void mgop_span_error(struct mgop_span *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Stamps the end, restores the thread's previous span, queues it. */
void mgop_span_end(struct mgop_span *s);
/* One span as OTLP JSON (an element of scopeSpans[].spans). */
void mgop_span_json(struct mgop_buf *b, const struct mgop_span *s);
extern _Thread_local struct mgop_span *mgop_span_cur;

/* A buffer that goes on after the len bytes mem already holds. */
static struct mgop_buf mgop_buf_resume(char *mem, size_t cap, size_t len) {
  struct mgop_buf b = {.p = mem, .len = len, .cap = cap, .overflow = 0};
  return b;
}

/* The tracer's settings, read from the standard OTEL_* variables through
 * `get` (getenv, or a table in tests). Tracing is on when a traces
 * endpoint is set and neither OTEL_SDK_DISABLED=true nor
 * OTEL_TRACES_EXPORTER=none says otherwise. */
enum { MGOP_SAMPLE_ALWAYS_ON, MGOP_SAMPLE_ALWAYS_OFF, MGOP_SAMPLE_RATIO,
       MGOP_SAMPLE_PB_ALWAYS_ON, MGOP_SAMPLE_PB_ALWAYS_OFF, MGOP_SAMPLE_PB_RATIO };
struct mgop_trace_cfg {
  int enabled;
  char url[MGOP_TRACE_ENV_MAX];        /* where spans are POSTed           */
  char headers[MGOP_TRACE_HEADERS_MAX];/* "K: v\r\n" lines                 */
  char resource[MGOP_TRACE_RESOURCE_MAX]; /* KeyValue objects              */
  char ca_file[512], cert_file[512], key_file[512];
  int sampler;
  double ratio;
  long long timeout_ms, delay_ms, export_timeout_ms;
  int queue_max, batch_max;
  char note[600];                      /* a setting we read differently from
                                          what it asks (protocol), for a log line */
};
typedef const char *(*mgop_getenv_fn)(const char *name);
/* 0, or MGOP_ERR_CONFIG naming the variable, its value and the fix. */
int mgop_trace_config(struct mgop_trace_cfg *c, mgop_getenv_fn get, const char *version);

/* The process's tracer: its settings, the queue and the counters. */
struct mgop_trace_stats { unsigned long long exported, dropped_full, dropped_failed, dropped_rejected, requests, failures; };
/* Starts tracing with these settings (the PEM files are read now): 0, or
 * MGOP_ERR_CONFIG/IO with the reason. */
int mgop_trace_start(const struct mgop_trace_cfg *c);
int mgop_trace_on(void);
/* The exporter's step: waits until a batch is due (size, delay, or
 * flush), exports it with retries within the export timeout (or until
 * `deadline_ms` when not 0: the flush on the way out). 0 when nothing was
 * queued and `flush` is set. */
int mgop_trace_export_step(int flush, long long deadline_ms);
/* Wakes the exporter to flush and return (mgop_trace_export_step). */
void mgop_trace_wake(void);
/* The process is stopping: an export in progress gives up at once (its
 * batch counted as failed); only the caller's bounded flush goes on. */
void mgop_trace_shutdown(void);
void mgop_trace_get_stats(struct mgop_trace_stats *out);

#endif /* MULTIGRES_OP_H */

/* ######################################################################
 * 3. Implementation
 * #################################################################### */
#ifdef MULTIGRES_OP_IMPLEMENTATION
#ifndef MULTIGRES_OP_IMPLEMENTED
#define MULTIGRES_OP_IMPLEMENTED

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <yaml.h>
#include <mbedtls/base64.h>
#include <mbedtls/error.h>
#include <mbedtls/asn1.h>
#include <mbedtls/net_sockets.h> /* error codes only; we do our own sockets */
#include <psa/crypto.h>
#include <mbedtls/platform.h> /* mbedtls_platform_set_calloc_free: the bounded TLS heap */
#include <malloc.h>         /* malloc_usable_size: what a TLS heap block counts */
#define MGOP_FALLTHROUGH __attribute__((fallthrough))

/* ======================================================================
 * 3.1 base
 * ==================================================================== */
int mgop_log_level = MGOP_INFO;
int mgop_log_json = 1;
int mgop_log_time = -1;
/* Per thread: the loop, the serving thread and the Lease thread each keep
 * their own last error and log line (see "Threads" in section 2.1). */
static _Thread_local char mgop_errbuf[512];

static const char *mgop_level_name(int level) {
  switch (level) {
    case MGOP_DEBUG: return "debug";
    case MGOP_INFO: return "info";
    case MGOP_WARN: return "warn";
    default: return "error";
  }
}

const char *mgop_err_name(int err) {
  switch (err) {
    case MGOP_OK: return "ok";
    case MGOP_ERR_NOMEM: return "out of fixed memory";
    case MGOP_ERR_IO: return "i/o error";
    case MGOP_ERR_PARSE: return "parse error";
    case MGOP_ERR_TLS: return "tls error";
    case MGOP_ERR_HTTP: return "http protocol error";
    case MGOP_ERR_CONFIG: return "configuration error";
    case MGOP_ERR_TIMEOUT: return "timeout";
    case MGOP_ERR_AGAIN: return "again";
    case MGOP_ERR_CLOSED: return "connection closed";
    case MGOP_ERR_TOOBIG: return "too big";
    case MGOP_ERR_AUTH: return "unauthorized";
    case MGOP_ERR_GONE: return "gone";
    case MGOP_ERR_NOTFOUND: return "not found";
    case MGOP_ERR_TYPE: return "wrong type";
    case MGOP_ERR_STATUS: return "unexpected status";
    default: return "unknown error";
  }
}

const char *mgop_errmsg(void) { return mgop_errbuf[0] ? mgop_errbuf : "no details"; }

int mgop_seterr(int err, const char *fmt, ...) {
  char tmp[sizeof(mgop_errbuf)]; /* the arguments may point into mgop_errbuf */
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof(tmp), fmt, ap);
  va_end(ap);
  memcpy(mgop_errbuf, tmp, sizeof(tmp));
  return err;
}

long long mgop_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long mgop_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The CLOCK_REALTIME time ms from now: the clock of pthread's timed waits
 * (a condition's, a rwlock's). A step of the wall clock ends such a wait
 * early or late, so callers check their own monotonic deadline. */
static struct timespec mgop_realtime_in_ms(long long ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += (time_t)(ms / 1000);
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
  return ts;
}

/* Waits on cv (mu held) for at most ms, or until signalled. */
static void mgop_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, long long ms) {
  struct timespec ts = mgop_realtime_in_ms(ms);
  pthread_cond_timedwait(cv, mu, &ts);
}

/* Blocks SIGTERM/SIGINT in the calling thread, old mask in *old: threads
 * created meanwhile inherit it, so only the loop (whose poll() they
 * interrupt) takes them. */
static void mgop_block_stop_signals(sigset_t *old) {
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  pthread_sigmask(SIG_BLOCK, &block, old);
}

/* A worker started on first use (the resolver, the backup checker):
 * detached, on a 1 MiB stack (glibc carves the static TLS from it), with
 * the stop signals blocked like every other thread's. 0, or
 * pthread_create's error. */
static int mgop_thread_detached(void *(*fn)(void *)) {
  pthread_attr_t attr;
  pthread_t t;
  sigset_t old;
  int e;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 1024 * 1024);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  mgop_block_stop_signals(&old);
  e = pthread_create(&t, &attr, fn, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  return e;
}

/* Tells such a worker to stop (mu held; its state's *started and *stop
 * are under mu): sets *stop, wakes it on cv, and waits at most wait_ms
 * for it to clear *started on its way out. */
static void mgop_thread_stop_wait(pthread_cond_t *cv, pthread_mutex_t *mu, const int *started, int *stop,
                                  long long wait_ms) {
  long long until = mgop_now_ms() + wait_ms;
  if (!*started) return;
  *stop = 1;
  pthread_cond_broadcast(cv);
  while (*started && mgop_now_ms() < until) mgop_cond_wait_ms(cv, mu, until - mgop_now_ms());
}

void mgop_wall_iso8601(char *out, size_t cap) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
           tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

int mgop_str_eq(struct mgop_str s, const char *cstr) {
  size_t n = strlen(cstr);
  return s.n == n && memcmp(s.p, cstr, n) == 0;
}

void mgop_buf_init(struct mgop_buf *b, char *mem, size_t cap) {
  b->p = mem;
  b->cap = cap;
  b->len = 0;
  b->overflow = 0;
  if (cap) mem[0] = 0;
}

int mgop_buf_append(struct mgop_buf *b, const void *data, size_t n) {
  if (b->overflow || n > b->cap || b->len > b->cap - n) {
    b->overflow = 1;
    return MGOP_ERR_TOOBIG;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
  return MGOP_OK;
}

int mgop_buf_puts(struct mgop_buf *b, const char *s) { return mgop_buf_append(b, s, strlen(s)); }

int mgop_buf_printf(struct mgop_buf *b, const char *fmt, ...) {
  va_list ap;
  size_t room = b->overflow ? 0 : b->cap - b->len;
  int n;
  va_start(ap, fmt);
  n = vsnprintf(room ? b->p + b->len : NULL, room, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= room) {
    b->overflow = 1;
    return MGOP_ERR_TOOBIG;
  }
  b->len += (size_t)n;
  return MGOP_OK;
}

const char *mgop_buf_cstr(struct mgop_buf *b) {
  if (b->len < b->cap) {
    b->p[b->len] = 0;
  } else {
    b->overflow = 1;
    if (b->cap) b->p[b->cap - 1] = 0;
  }
  return b->p;
}

/* --- logging: zap-compatible JSON lines or console lines ------------- */
static _Thread_local char mgop_logline[8192];
static _Thread_local size_t mgop_loglen;

static void mgop_log_emit(void) {
  if (mgop_loglen >= sizeof(mgop_logline) - 2) mgop_loglen = sizeof(mgop_logline) - 2;
  mgop_logline[mgop_loglen++] = '\n';
  /* one write(2) per line so concurrent writers never interleave */
  ssize_t off = 0;
  while (off < (ssize_t)mgop_loglen) {
    ssize_t w = write(2, mgop_logline + off, mgop_loglen - (size_t)off);
    if (w <= 0) break;
    off += w;
  }
  mgop_loglen = 0;
}

/* The time of a log line as --zap-time-encoding says; 1 when a number. */
static int mgop_log_ts(char *ts, size_t cap) {
  struct timespec now;
  struct tm tm;
  char day[24];
  if (mgop_log_time < 0) return mgop_wall_iso8601(ts, cap), 0;
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
  switch (mgop_log_time) {
    case 0: snprintf(ts, cap, "%lld.%09ld", (long long)now.tv_sec, now.tv_nsec); return 1;
    case 1: snprintf(ts, cap, "%lld.%06ld", (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000, now.tv_nsec % 1000000);
            return 1;
    case 2: snprintf(ts, cap, "%lld", (long long)now.tv_sec * 1000000000LL + now.tv_nsec); return 1;
    case 3: snprintf(ts, cap, "%s.%03ldZ", day, now.tv_nsec / 1000000); return 0;
    case 4: snprintf(ts, cap, "%sZ", day); return 0;
    default: snprintf(ts, cap, "%s.%09ldZ", day, now.tv_nsec); return 0;
  }
}

static void mgop_log_start(int level, const char *logger, const char *caller) {
  char ts[48];
  struct mgop_buf b;
  int number = mgop_log_ts(ts, sizeof(ts));
  mgop_buf_init(&b, mgop_logline, sizeof(mgop_logline) - 2);
  if (mgop_log_json) {
    mgop_buf_printf(&b, number ? "{\"level\":\"%s\",\"ts\":%s" : "{\"level\":\"%s\",\"ts\":\"%s\"",
                    mgop_level_name(level), ts);
    if (logger) mgop_buf_printf(&b, ",\"logger\":\"%s\"", logger);
    if (caller) mgop_buf_printf(&b, ",\"caller\":\"%s\"", caller);
    if (mgop_span_cur) { /* the span this thread works for */
      char t[33], sp[17];
      mgop_hex(mgop_span_cur->ctx.trace_id, 16, t);
      mgop_hex(mgop_span_cur->ctx.span_id, 8, sp);
      mgop_buf_printf(&b, ",\"trace_id\":\"%s\",\"span_id\":\"%s\"", t, sp);
    }
  } else {
    mgop_buf_printf(&b, "%s\t%s\t%s\t", ts, level == MGOP_DEBUG ? "DEBUG" : level == MGOP_INFO ? "INFO"
                                            : level == MGOP_WARN ? "WARN" : "ERROR", logger ? logger : "");
  }
  mgop_loglen = b.overflow ? sizeof(mgop_logline) - 2 : b.len;
}

static void mgop_log_msg_and_fields(const char *msg, const char *fields) {
  struct mgop_buf b;
  b.p = mgop_logline;
  b.cap = sizeof(mgop_logline) - 2;
  b.len = mgop_loglen;
  b.overflow = 0;
  if (mgop_log_json) {
    mgop_buf_puts(&b, ",\"msg\":\"");
    mgop_json_escape(&b, msg, strlen(msg));
    mgop_buf_puts(&b, "\"");
    if (fields && fields[0]) {
      mgop_buf_puts(&b, ",");
      mgop_buf_puts(&b, fields);
    }
    if (b.overflow) { /* keep the line valid JSON even when cut */
      b.overflow = 0;
      b.len = mgop_loglen;
      mgop_buf_puts(&b, ",\"msg\":\"(log line too long, truncated)\"");
    }
    mgop_buf_puts(&b, "}");
  } else {
    mgop_buf_puts(&b, msg);
    if (mgop_span_cur) {
      char t[33], sp[17];
      mgop_hex(mgop_span_cur->ctx.trace_id, 16, t);
      mgop_hex(mgop_span_cur->ctx.span_id, 8, sp);
      mgop_buf_printf(&b, "\t{%s%s\"trace_id\":\"%s\",\"span_id\":\"%s\"}", fields ? fields : "",
                      fields && fields[0] ? "," : "", t, sp);
    } else if (fields && fields[0]) {
      mgop_buf_printf(&b, "\t{%s}", fields);
    }
  }
  mgop_loglen = b.overflow ? b.cap : b.len;
  mgop_log_emit();
}

static _Thread_local char mgop_log_caller[96];
static _Thread_local int mgop_log_pending_level;

void mgop_log_prefix(int level, const char *file, int line) {
  const char *base = strrchr(file, '/');
  snprintf(mgop_log_caller, sizeof(mgop_log_caller), "%s:%d", base ? base + 1 : file, line);
  mgop_log_pending_level = level;
}

void mgop_log_message(const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  mgop_log_start(mgop_log_pending_level, NULL, mgop_log_caller);
  mgop_log_msg_and_fields(msg, NULL);
}

void mgop_log_fields(int level, const char *logger, const char *msg, const char *fields) {
  if (level < mgop_log_level) return;
  mgop_log_start(level, logger, NULL);
  mgop_log_msg_and_fields(msg, fields);
}

/* --- arena ------------------------------------------------------------ */
#ifdef MGOP_SANITIZE
struct mgop_arena_block { struct mgop_arena_block *next; size_t n; };
#endif

void mgop_arena_init(struct mgop_arena *a, void *mem, size_t cap) {
  a->base = mem;
  a->cap = cap;
  a->used = a->high = 0;
#ifdef MGOP_SANITIZE
  a->blocks = NULL;
#endif
}

void *mgop_table_alloc(size_t n, size_t size) {
  void *p;
  if (!n || !size || n > SIZE_MAX / size) return NULL;
#ifdef MGOP_SANITIZE
  (void)p;
  return calloc(n, size); /* where ASan and valgrind can see it */
#endif
  p = mmap(NULL, n * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

size_t mgop_dense_index_slots(size_t rows) { return rows + rows / 4 + 1; } /* short probe chains even when full */

void mgop_dense_index_put(uint32_t *index, size_t slots, size_t home, size_t row) {
  while (index[home]) home = (home + 1) % slots;
  index[home] = (uint32_t)(row + 1);
}

void *mgop_arena_alloc(struct mgop_arena *a, size_t n) {
  size_t need = (n + 15) & ~(size_t)15;
  if (need < n || need > a->cap - a->used) return NULL;
  a->used += need;
  if (a->used > a->high) a->high = a->used;
#ifdef MGOP_SANITIZE
  {
    struct mgop_arena_block *blk = malloc(sizeof(*blk) + n);
    if (!blk) return NULL;
    blk->next = a->blocks;
    blk->n = n;
    a->blocks = blk;
    return blk + 1;
  }
#else
  return a->base + a->used - need;
#endif
}

char *mgop_arena_strndup(struct mgop_arena *a, const char *s, size_t n) {
  char *p = mgop_arena_alloc(a, n + 1);
  if (!p) return NULL;
  memcpy(p, s, n);
  p[n] = 0;
  return p;
}

void mgop_arena_trim(struct mgop_arena *a, void *p, size_t cap, size_t used) {
  size_t had = (cap + 15) & ~(size_t)15, keep = (used + 15) & ~(size_t)15;
  if (keep >= had || had > a->used) return;
#ifdef MGOP_SANITIZE
  if (!a->blocks || (void *)((struct mgop_arena_block *)a->blocks + 1) != p) return;
#else
  if ((unsigned char *)p != a->base + a->used - had) return;
#endif
  a->used -= had - keep;
}

void mgop_arena_reset(struct mgop_arena *a) {
#ifdef MGOP_SANITIZE
  struct mgop_arena_block *blk = a->blocks;
  while (blk) {
    struct mgop_arena_block *next = blk->next;
    free(blk);
    blk = next;
  }
  a->blocks = NULL;
#endif
  a->used = 0;
}

uint32_t mgop_fnv1a32(uint32_t h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 16777619u;
  }
  return h;
}

int mgop_edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  int row[MGOP_EDIT_NAME_MAX + 1];
  if (la >= MGOP_EDIT_NAME_MAX || lb >= MGOP_EDIT_NAME_MAX) return MGOP_EDIT_NAME_MAX;
  for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
  for (size_t i = 1; i <= la; i++) {
    int diag = row[0];
    row[0] = (int)i;
    for (size_t j = 1; j <= lb; j++) {
      int up = row[j], best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      diag = up;
      row[j] = best;
    }
  }
  return row[lb];
}

uint64_t mgop_fnv1a64(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

int mgop_read_file(const char *path, char *buf, size_t cap, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  size_t got = 0;
  if (fd < 0) return mgop_seterr(MGOP_ERR_IO, "cannot open %s: %s", path, strerror(errno));
  for (;;) {
    ssize_t r;
    if (got == cap) {
      char extra;
      r = read(fd, &extra, 1);
      close(fd);
      if (r > 0) return mgop_seterr(MGOP_ERR_TOOBIG, "%s is larger than %zu bytes", path, cap);
      break;
    }
    r = read(fd, buf + got, cap - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      close(fd);
      return mgop_seterr(MGOP_ERR_IO, "cannot read %s: %s", path, strerror(e));
    }
    if (r == 0) {
      close(fd);
      break;
    }
    got += (size_t)r;
  }
  *len = got;
  return MGOP_OK;
}

/* ======================================================================
 * 3.2 json
 * ==================================================================== */
/* The index past the string whose opening quote is p[i], or n. */
static size_t mgop_json_skip_str(const char *p, size_t n, size_t i) {
  for (i++; i < n && p[i] != '"'; i++)
    if (p[i] == '\\') i++;
  return i < n ? i + 1 : n;
}

/* The index past the array or object that opens at p[i], or n. */
static size_t mgop_json_skip_nest(const char *p, size_t n, size_t i) {
  size_t depth = 0;
  while (i < n) {
    char c = p[i];
    if (c == '"') {
      i = mgop_json_skip_str(p, n, i);
      continue;
    }
    i++;
    if (c == '{' || c == '[') depth++;
    else if ((c == '}' || c == ']') && --depth == 0) return i;
  }
  return n;
}

static int mgop_json_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

/* first_only: p is one object (a list item, a watch event), whose own
 * metadata is the first "metadata" object in it; the scan ends where that
 * object closes (about half the bytes: spec and status are never read). */
static size_t mgop_json_drop_mf(char *p, size_t n, int first_only) {
  uint64_t meta = 0; /* bit d: the object at depth d is a "metadata" value (depths past 63: never) */
  unsigned depth = 0, first_depth = 0; /* first_depth: the first metadata object's, once open */
  int key_is_meta = 0; /* the last string read was "metadata" */
  size_t i = 0;
  while (i < n) {
    char c = p[i];
    if (c == '"') {
      size_t s = i, e = mgop_json_skip_str(p, n, i), v = e, end, from, to;
      key_is_meta = e - s == 10 && !memcmp(p + s + 1, "metadata", 8);
      i = e;
      if (e - s != 15 || memcmp(p + s + 1, "managedFields", 13) || depth >= 64 || !(meta >> depth & 1)) continue;
      while (v < n && mgop_json_ws(p[v])) v++;
      if (v >= n || p[v] != ':') continue; /* a value, not a key */
      for (v++; v < n && mgop_json_ws(p[v]); v++) {}
      if (v >= n || (p[v] != '[' && p[v] != '{')) continue; /* null or worse: the parser judges it */
      if ((end = mgop_json_skip_nest(p, n, v)) >= n) return n; /* unclosed: left for the parser */
      for (from = s; from > 0 && mgop_json_ws(p[from - 1]); from--) {}
      to = end;
      if (from > 0 && p[from - 1] == ',') from--; /* ,"managedFields":[...] */
      else { /* the first key: "managedFields":[...], */
        while (to < n && mgop_json_ws(p[to])) to++;
        if (to < n && p[to] == ',') to++;
        else to = end;
      }
      memmove(p + from, p + to, n - to);
      n -= to - from;
      i = from;
      continue;
    }
    i++;
    if (c == '{' || c == '[') {
      depth++;
      if (depth < 64) meta = (meta & ~(1ull << depth)) | ((uint64_t)(c == '{' && key_is_meta) << depth);
      if (first_only && !first_depth && c == '{' && key_is_meta) first_depth = depth;
    } else if (c == '}' || c == ']') {
      if (first_only && first_depth && depth == first_depth) return n;
      if (depth) depth--;
    }
    if (c != ':' && !mgop_json_ws(c)) key_is_meta = 0; /* "metadata" : { keeps it to the brace */
  }
  return n;
}

size_t mgop_json_drop_managed_fields(char *p, size_t n) { return mgop_json_drop_mf(p, n, 0); }
size_t mgop_json_drop_object_managed_fields(char *p, size_t n) { return mgop_json_drop_mf(p, n, 1); }

int mgop_json_parse(struct mgop_json *j, const char *js, size_t len, jsmntok_t *tok, unsigned maxtok) {
  jsmn_parser p;
  int n;
  size_t end;
  j->js = js;
  j->len = len;
  j->tok = tok;
  j->ntok = 0;
  if (len > 0x7fffffff) return mgop_seterr(MGOP_ERR_TOOBIG, "JSON document larger than 2 GiB");
  jsmn_init(&p);
  n = jsmn_parse(&p, js, len, tok, maxtok);
  if (n == JSMN_ERROR_NOMEM)
    return mgop_seterr(MGOP_ERR_TOOBIG, "JSON document has more than %u tokens", maxtok);
  if (n == JSMN_ERROR_PART) return mgop_seterr(MGOP_ERR_PARSE, "JSON document is truncated");
  if (n < 0) return mgop_seterr(MGOP_ERR_PARSE, "JSON document is malformed near byte %u", p.pos);
  if (n == 0) return mgop_seterr(MGOP_ERR_PARSE, "JSON document is empty");
  j->ntok = n;
  /* exactly one top-level value: the first token's subtree must cover all */
  if (mgop_json_next(j, 0) != n) return mgop_seterr(MGOP_ERR_PARSE, "JSON has more than one top-level value");
  end = (size_t)tok[0].end + (tok[0].type == JSMN_STRING); /* a string token excludes its closing quote */
  while (end < len && mgop_json_ws(js[end])) end++;
  if (end != len) return mgop_seterr(MGOP_ERR_PARSE, "JSON has trailing bytes at %zu", end);
  /* a strict primitive check jsmn leaves to us */
  for (int i = 0; i < n; i++) {
    if (tok[i].type == JSMN_PRIMITIVE) {
      struct mgop_str s = mgop_json_raw(j, i);
      if (!(mgop_str_eq(s, "true") || mgop_str_eq(s, "false") || mgop_str_eq(s, "null"))) {
        char *endp;
        char num[64];
        if (s.n == 0 || s.n >= sizeof(num) || !(s.p[0] == '-' || (s.p[0] >= '0' && s.p[0] <= '9')))
          return mgop_seterr(MGOP_ERR_PARSE, "JSON has an invalid literal at byte %d", tok[i].start);
        memcpy(num, s.p, s.n);
        num[s.n] = 0;
        (void)strtod(num, &endp);
        if (*endp) return mgop_seterr(MGOP_ERR_PARSE, "JSON has an invalid number at byte %d", tok[i].start);
      }
    }
  }
  return MGOP_OK;
}

int mgop_json_next(const struct mgop_json *j, int t) {
  int pending = 1;
  if (t < 0) return j->ntok;
  while (pending > 0 && t < j->ntok) {
    pending += j->tok[t].size;
    pending--;
    t++;
  }
  return t;
}

int mgop_json_is(const struct mgop_json *j, int t, jsmntype_t type) {
  return t >= 0 && t < j->ntok && j->tok[t].type == type;
}

int mgop_json_is_null(const struct mgop_json *j, int t) {
  return mgop_json_is(j, t, JSMN_PRIMITIVE) && mgop_str_eq(mgop_json_raw(j, t), "null");
}

struct mgop_str mgop_json_raw(const struct mgop_json *j, int t) {
  struct mgop_str s = {"", 0};
  if (t < 0 || t >= j->ntok) return s;
  s.p = j->js + j->tok[t].start;
  s.n = (size_t)(j->tok[t].end - j->tok[t].start);
  return s;
}

/* Compare a JSON string token to a key without allocating: escapes in keys
 * are rare, so decode only when a backslash appears. */
static int mgop_json_key_eq(const struct mgop_json *j, int t, const char *key, size_t keylen) {
  struct mgop_str s = mgop_json_raw(j, t);
  if (!memchr(s.p, '\\', s.n)) return s.n == keylen && memcmp(s.p, key, keylen) == 0;
  {
    char tmp[256];
    if (mgop_json_str(j, t, tmp, sizeof(tmp)) != MGOP_OK) return 0;
    return strlen(tmp) == keylen && memcmp(tmp, key, keylen) == 0;
  }
}

static int mgop_json_keyn(const struct mgop_json *j, int obj, const char *key, size_t keylen) {
  int i, k;
  if (!mgop_json_is(j, obj, JSMN_OBJECT)) return -1;
  i = obj + 1;
  for (k = 0; k < j->tok[obj].size && i < j->ntok; k++) {
    if (j->tok[i].type == JSMN_STRING && mgop_json_key_eq(j, i, key, keylen)) return i + 1 < j->ntok ? i + 1 : -1;
    i = mgop_json_next(j, i + 1);
  }
  return -1;
}

int mgop_json_key(const struct mgop_json *j, int obj, const char *key) {
  return mgop_json_keyn(j, obj, key, strlen(key));
}

int mgop_json_at(const struct mgop_json *j, int arr, int index) {
  int i, k;
  if (!mgop_json_is(j, arr, JSMN_ARRAY) || index < 0 || index >= j->tok[arr].size) return -1;
  i = arr + 1;
  for (k = 0; k < index; k++) i = mgop_json_next(j, i);
  return i < j->ntok ? i : -1;
}

int mgop_json_path(const struct mgop_json *j, int root, const char *path) {
  int t = root;
  const char *p = path;
  while (*p && t >= 0) {
    if (*p == '.') {
      p++;
      continue;
    }
    if (*p == '[') {
      char *end;
      long idx = strtol(p + 1, &end, 10);
      if (*end != ']' || end == p + 1) return -1;
      t = mgop_json_at(j, t, (int)idx);
      p = end + 1;
    } else {
      size_t n = strcspn(p, ".[");
      t = mgop_json_keyn(j, t, p, n);
      p += n;
    }
  }
  return t;
}

static int mgop_hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int mgop_utf8_put(char *out, size_t cap, size_t *o, unsigned long cp) {
  unsigned char tmp[4];
  size_t n;
  if (cp < 0x80) { tmp[0] = (unsigned char)cp; n = 1; }
  else if (cp < 0x800) { tmp[0] = (unsigned char)(0xC0 | (cp >> 6)); tmp[1] = (unsigned char)(0x80 | (cp & 0x3F)); n = 2; }
  else if (cp < 0x10000) {
    tmp[0] = (unsigned char)(0xE0 | (cp >> 12)); tmp[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    tmp[2] = (unsigned char)(0x80 | (cp & 0x3F)); n = 3;
  } else {
    tmp[0] = (unsigned char)(0xF0 | (cp >> 18)); tmp[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    tmp[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)); tmp[3] = (unsigned char)(0x80 | (cp & 0x3F)); n = 4;
  }
  if (*o + n >= cap) return MGOP_ERR_TOOBIG;
  memcpy(out + *o, tmp, n);
  *o += n;
  return MGOP_OK;
}

static int mgop_hex4(const char *p, const char *end, unsigned long *v) {
  *v = 0;
  if (end - p < 4) return -1;
  for (int i = 0; i < 4; i++) {
    int h = mgop_hexval((unsigned char)p[i]);
    if (h < 0) return -1;
    *v = (*v << 4) | (unsigned long)h;
  }
  return 0;
}

/* Decodes into out; on any error out is "" rather than a cut, unterminated
 * prefix, so a caller that ignores the code still holds a valid C string. */
static int mgop_json_str_decode(const struct mgop_json *j, int t, char *out, size_t cap);
int mgop_json_str(const struct mgop_json *j, int t, char *out, size_t cap) {
  int rc;
  if (cap == 0) return MGOP_ERR_TOOBIG;
  rc = mgop_json_str_decode(j, t, out, cap);
  if (rc != MGOP_OK) out[0] = 0;
  return rc;
}

static int mgop_json_str_decode(const struct mgop_json *j, int t, char *out, size_t cap) {
  struct mgop_str s;
  const char *p, *end;
  size_t o = 0;
  if (cap == 0) return MGOP_ERR_TOOBIG;
  out[0] = 0;
  if (!mgop_json_is(j, t, JSMN_STRING)) return MGOP_ERR_TYPE;
  s = mgop_json_raw(j, t);
  p = s.p;
  end = s.p + s.n;
  while (p < end) {
    unsigned char c = (unsigned char)*p++;
    if (c != '\\') {
      if (o + 1 >= cap) return MGOP_ERR_TOOBIG;
      out[o++] = (char)c;
      continue;
    }
    if (p >= end) return MGOP_ERR_PARSE;
    c = (unsigned char)*p++;
    switch (c) {
      case '"': case '\\': case '/': if (o + 1 >= cap) return MGOP_ERR_TOOBIG; out[o++] = (char)c; break;
      case 'b': if (o + 1 >= cap) return MGOP_ERR_TOOBIG; out[o++] = '\b'; break;
      case 'f': if (o + 1 >= cap) return MGOP_ERR_TOOBIG; out[o++] = '\f'; break;
      case 'n': if (o + 1 >= cap) return MGOP_ERR_TOOBIG; out[o++] = '\n'; break;
      case 'r': if (o + 1 >= cap) return MGOP_ERR_TOOBIG; out[o++] = '\r'; break;
      case 't': if (o + 1 >= cap) return MGOP_ERR_TOOBIG; out[o++] = '\t'; break;
      case 'u': {
        unsigned long cp, lo;
        if (mgop_hex4(p, end, &cp)) return MGOP_ERR_PARSE;
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || mgop_hex4(p + 2, end, &lo) || lo < 0xDC00 ||
              lo > 0xDFFF)
            return MGOP_ERR_PARSE;
          p += 6;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return MGOP_ERR_PARSE;
        }
        if (cp == 0) return MGOP_ERR_PARSE; /* NUL would silently cut C strings */
        if (mgop_utf8_put(out, cap, &o, cp)) return MGOP_ERR_TOOBIG;
        break;
      }
      default: return MGOP_ERR_PARSE;
    }
  }
  out[o] = 0;
  return MGOP_OK;
}

int mgop_json_i64(const struct mgop_json *j, int t, long long *out) {
  struct mgop_str s;
  char num[32], *end;
  long long v;
  if (!mgop_json_is(j, t, JSMN_PRIMITIVE)) return MGOP_ERR_TYPE;
  s = mgop_json_raw(j, t);
  if (s.n == 0 || s.n >= sizeof(num)) return MGOP_ERR_TYPE;
  memcpy(num, s.p, s.n);
  num[s.n] = 0;
  errno = 0;
  v = strtoll(num, &end, 10);
  if (*end || errno || !(num[0] == '-' || (num[0] >= '0' && num[0] <= '9'))) return MGOP_ERR_TYPE;
  *out = v;
  return MGOP_OK;
}

int mgop_json_bool(const struct mgop_json *j, int t, int *out) {
  struct mgop_str s;
  if (!mgop_json_is(j, t, JSMN_PRIMITIVE)) return MGOP_ERR_TYPE;
  s = mgop_json_raw(j, t);
  if (mgop_str_eq(s, "true")) *out = 1;
  else if (mgop_str_eq(s, "false")) *out = 0;
  else return MGOP_ERR_TYPE;
  return MGOP_OK;
}

int mgop_json_path_str(const struct mgop_json *j, int root, const char *path, char *out, size_t cap) {
  int t = mgop_json_path(j, root, path);
  if (cap) out[0] = 0;
  if (t < 0) return MGOP_ERR_NOTFOUND;
  return mgop_json_str(j, t, out, cap);
}

void mgop_json_escape(struct mgop_buf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t run = 0, i = 0;
  for (;;) {
    unsigned char c = 0;
    const char *esc;
    char u[7];
    /* the common case first: a run of characters written as they are (every
     * object the operator renders is mostly such runs) */
    while (i < n && (c = (unsigned char)s[i]) >= 0x20 && c != '"' && c != '\\' && c != 0x7f) i++;
    if (i == n) break;
    if (c == '"') esc = "\\\"";
    else if (c == '\\') esc = "\\\\";
    else if (c == '\n') esc = "\\n";
    else if (c == '\r') esc = "\\r";
    else if (c == '\t') esc = "\\t";
    else {
      u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0'; u[4] = hex[c >> 4]; u[5] = hex[c & 15]; u[6] = 0;
      esc = u;
    }
    mgop_buf_append(b, s + run, i - run);
    mgop_buf_puts(b, esc);
    run = ++i;
  }
  mgop_buf_append(b, s + run, n - run);
}

void mgop_jw_init(struct mgop_jw *w, struct mgop_buf *b) {
  w->b = b;
  w->depth = 0;
  w->has_item[0] = 0;
  w->after_key = 0;
}

static void mgop_jw_sep(struct mgop_jw *w) {
  if (w->after_key) {
    w->after_key = 0;
    return;
  }
  if (w->has_item[w->depth]) mgop_buf_append(w->b, ",", 1);
  w->has_item[w->depth] = 1;
}

static void mgop_jw_open(struct mgop_jw *w, char c) {
  mgop_jw_sep(w);
  mgop_buf_append(w->b, &c, 1);
  if (w->depth + 1 < MGOP_JW_DEPTH) w->depth++;
  else w->b->overflow = 1;
  w->has_item[w->depth] = 0;
}

static void mgop_jw_close(struct mgop_jw *w, char c) {
  mgop_buf_append(w->b, &c, 1);
  if (w->depth > 0) w->depth--;
}

void mgop_jw_obj(struct mgop_jw *w) { mgop_jw_open(w, '{'); }
void mgop_jw_obj_end(struct mgop_jw *w) { mgop_jw_close(w, '}'); }
void mgop_jw_arr(struct mgop_jw *w) { mgop_jw_open(w, '['); }
void mgop_jw_arr_end(struct mgop_jw *w) { mgop_jw_close(w, ']'); }

void mgop_jw_key(struct mgop_jw *w, const char *key) {
  mgop_jw_sep(w);
  mgop_buf_append(w->b, "\"", 1);
  mgop_json_escape(w->b, key, strlen(key));
  mgop_buf_append(w->b, "\":", 2);
  w->after_key = 1;
}

void mgop_jw_strn(struct mgop_jw *w, const char *s, size_t n) {
  mgop_jw_sep(w);
  mgop_buf_append(w->b, "\"", 1);
  mgop_json_escape(w->b, s, n);
  mgop_buf_append(w->b, "\"", 1);
}

void mgop_jw_str(struct mgop_jw *w, const char *s) { mgop_jw_strn(w, s, strlen(s)); }

void mgop_jw_i64(struct mgop_jw *w, long long v) {
  mgop_jw_sep(w);
  mgop_buf_printf(w->b, "%lld", v);
}

void mgop_jw_bool(struct mgop_jw *w, int v) {
  mgop_jw_sep(w);
  mgop_buf_puts(w->b, v ? "true" : "false");
}

void mgop_jw_null(struct mgop_jw *w) {
  mgop_jw_sep(w);
  mgop_buf_puts(w->b, "null");
}

void mgop_jw_raw(struct mgop_jw *w, const char *json, size_t n) {
  mgop_jw_sep(w);
  mgop_buf_append(w->b, json, n);
}

/* Re-encode a string token through the escaper so output is canonical. */
static void mgop_jw_copy_key(struct mgop_jw *w, const struct mgop_json *j, int t) {
  char tmp[512];
  if (mgop_json_str(j, t, tmp, sizeof(tmp)) == MGOP_OK) mgop_jw_key(w, tmp);
  else w->b->overflow = 1; /* keys longer than 512 bytes are not ours to merge */
}

void mgop_jw_copy(struct mgop_jw *w, const struct mgop_json *j, int t) {
  if (t < 0 || t >= j->ntok) {
    mgop_jw_null(w);
    return;
  }
  switch (j->tok[t].type) {
    case JSMN_OBJECT: {
      int i = t + 1;
      mgop_jw_obj(w);
      for (int k = 0; k < j->tok[t].size; k++) {
        mgop_jw_copy_key(w, j, i);
        mgop_jw_copy(w, j, i + 1);
        i = mgop_json_next(j, i + 1);
      }
      mgop_jw_obj_end(w);
      break;
    }
    case JSMN_ARRAY: {
      int i = t + 1;
      mgop_jw_arr(w);
      for (int k = 0; k < j->tok[t].size; k++) {
        mgop_jw_copy(w, j, i);
        i = mgop_json_next(j, i);
      }
      mgop_jw_arr_end(w);
      break;
    }
    case JSMN_STRING: {
      struct mgop_str s = mgop_json_raw(j, t);
      mgop_jw_sep(w); /* the raw text is already valid JSON string content */
      mgop_buf_append(w->b, "\"", 1);
      mgop_buf_append(w->b, s.p, s.n);
      mgop_buf_append(w->b, "\"", 1);
      break;
    }
    default: {
      struct mgop_str s = mgop_json_raw(j, t);
      mgop_jw_raw(w, s.p, s.n);
    }
  }
}

/* Value of key (given as a string token of another document) in obj. */
static int mgop_json_key_tok(const struct mgop_json *j, int obj, const struct mgop_json *kj, int kt) {
  char key[512];
  if (mgop_json_str(kj, kt, key, sizeof(key)) != MGOP_OK) return -1;
  return mgop_json_key(j, obj, key);
}

static char mgop_canon_scratch[4096]; /* one decoded string at a time */

/* The decoded string's hash, so "\u003c" and "<" agree; 0 when too long. */
static uint64_t mgop_canon_str(const struct mgop_json *j, int t) {
  uint64_t h;
  if (mgop_json_str(j, t, mgop_canon_scratch, sizeof(mgop_canon_scratch))) return 0;
  h = mgop_fnv1a64(MGOP_FNV64_INIT, mgop_canon_scratch, strlen(mgop_canon_scratch) + 1);
  return h ? h : 1;
}

/* Feeds one value into h, leaving out the members whose decoded key hashes
 * to skip (0: none) at this level; returns 0 when beyond the bounds. */
static int mgop_canon_feed(const struct mgop_json *j, int t, int depth, uint64_t *h, uint64_t skip) {
  char tag;
  if (t < 0 || t >= j->ntok || depth > MGOP_CANON_DEPTH) return 0;
  switch (j->tok[t].type) {
    case JSMN_OBJECT: { /* members in the order of their decoded keys' hashes: any encoding, any order;
                         * a null member counts as absent (a merge patch's null deletes it) */
      int keys[MGOP_CANON_KEYS], n = j->tok[t].size, i = t + 1;
      uint64_t kh[MGOP_CANON_KEYS];
      if (n > MGOP_CANON_KEYS) return 0;
      for (int k = 0, m = n; k < m; k++, i = mgop_json_next(j, i + 1)) { /* insertion sort: objects are small */
        uint64_t x = mgop_canon_str(j, i);
        int at = k - (m - n);
        if (!x) return 0;
        if ((skip && x == skip) || mgop_json_is_null(j, i + 1)) { n--; continue; }
        while (at > 0 && kh[at - 1] > x) keys[at] = keys[at - 1], kh[at] = kh[at - 1], at--;
        keys[at] = i, kh[at] = x;
      }
      *h = mgop_fnv1a64(*h, "{", 1);
      for (int k = 0; k < n; k++) {
        *h = mgop_fnv1a64(*h, &kh[k], sizeof(kh[k]));
        if (!mgop_canon_feed(j, keys[k] + 1, depth + 1, h, 0)) return 0;
      }
      *h = mgop_fnv1a64(*h, "}", 1);
      return 1;
    }
    case JSMN_ARRAY: {
      int i = t + 1;
      *h = mgop_fnv1a64(*h, "[", 1);
      for (int k = 0; k < j->tok[t].size; k++, i = mgop_json_next(j, i))
        if (!mgop_canon_feed(j, i, depth + 1, h, 0)) return 0;
      *h = mgop_fnv1a64(*h, "]", 1);
      return 1;
    }
    case JSMN_STRING: {
      uint64_t x = mgop_canon_str(j, t);
      if (!x) return 0;
      tag = '"';
      *h = mgop_fnv1a64(*h, &tag, 1);
      *h = mgop_fnv1a64(*h, &x, sizeof(x));
      return 1;
    }
    default: { /* numbers, true, false, null: their text */
      struct mgop_str v = mgop_json_raw(j, t);
      tag = '#';
      *h = mgop_fnv1a64(*h, &tag, 1);
      *h = mgop_fnv1a64(*h, v.p, v.n);
      *h = mgop_fnv1a64(*h, ",", 1);
      return 1;
    }
  }
}

uint64_t mgop_json_canon_hash(const struct mgop_json *j, int t) {
  uint64_t h = MGOP_FNV64_INIT;
  if (!mgop_canon_feed(j, t, 0, &h, 0)) return 0;
  return h ? h : 1;
}

uint64_t mgop_json_canon_hash_except(const struct mgop_json *j, int t, const char *key) {
  uint64_t h = MGOP_FNV64_INIT, skip = mgop_fnv1a64(MGOP_FNV64_INIT, key, strlen(key) + 1);
  if (!mgop_canon_feed(j, t, 0, &h, skip ? skip : 1)) return 0;
  return h ? h : 1;
}

void mgop_json_merge(struct mgop_jw *w, const struct mgop_json *base, int bt, const struct mgop_json *over, int ot) {
  int i;
  if (ot < 0) {
    mgop_jw_copy(w, base, bt);
    return;
  }
  if (bt < 0 || !mgop_json_is(base, bt, JSMN_OBJECT) || !mgop_json_is(over, ot, JSMN_OBJECT)) {
    mgop_jw_copy(w, over, ot); /* scalars, lists, null and type changes replace */
    return;
  }
  mgop_jw_obj(w);
  i = bt + 1;
  for (int k = 0; k < base->tok[bt].size; k++) {
    int ov = mgop_json_key_tok(over, ot, base, i);
    if (!mgop_json_is_null(over, ov)) { /* null in over removes the key (RFC 7386) */
      mgop_jw_copy_key(w, base, i);
      mgop_json_merge(w, base, i + 1, over, ov);
    }
    i = mgop_json_next(base, i + 1);
  }
  i = ot + 1;
  for (int k = 0; k < over->tok[ot].size; k++) {
    if (mgop_json_key_tok(base, bt, over, i) < 0 && !mgop_json_is_null(over, i + 1)) {
      mgop_jw_copy_key(w, over, i);
      mgop_jw_copy(w, over, i + 1);
    }
    i = mgop_json_next(over, i + 1);
  }
  mgop_jw_obj_end(w);
}

/* ======================================================================
 * 3.3 kubeconfig
 * ==================================================================== */
int mgop_url_parse(const char *url, char *scheme, size_t scap, char *host, size_t hcap, char *port, size_t pcap,
                   char *path, size_t pathcap) {
  const char *p = strstr(url, "://"), *h, *hend, *pend;
  size_t n;
  if (!p) return mgop_seterr(MGOP_ERR_CONFIG, "server URL \"%s\" has no scheme; use https://HOST:PORT", url);
  n = (size_t)(p - url);
  if (n >= scap) return mgop_seterr(MGOP_ERR_CONFIG, "server URL \"%s\": scheme too long", url);
  memcpy(scheme, url, n);
  scheme[n] = 0;
  if (strcmp(scheme, "https") && strcmp(scheme, "http"))
    return mgop_seterr(MGOP_ERR_CONFIG, "server URL \"%s\": scheme must be https (or http)", url);
  h = p + 3;
  if (*h == '[') { /* IPv6 literal */
    hend = strchr(h, ']');
    if (!hend) return mgop_seterr(MGOP_ERR_CONFIG, "server URL \"%s\": unterminated [IPv6] host", url);
    h++;
    n = (size_t)(hend - h);
    pend = hend + 1;
  } else {
    hend = h + strcspn(h, ":/?#");
    n = (size_t)(hend - h);
    pend = hend;
  }
  if (n == 0 || n >= hcap) return mgop_seterr(MGOP_ERR_CONFIG, "server URL \"%s\": bad host", url);
  memcpy(host, h, n);
  host[n] = 0;
  if (*pend == ':') {
    const char *ps = pend + 1;
    size_t pn = strspn(ps, "0123456789");
    if (pn == 0 || pn >= pcap || pn > 5 || atoi(ps) < 1 || atoi(ps) > 65535)
      return mgop_seterr(MGOP_ERR_CONFIG, "server URL \"%s\": bad port", url);
    memcpy(port, ps, pn);
    port[pn] = 0;
    pend = ps + pn;
  } else {
    snprintf(port, pcap, "%s", strcmp(scheme, "https") == 0 ? "443" : "80");
  }
  if (*pend && *pend != '/')
    return mgop_seterr(MGOP_ERR_CONFIG, "server URL \"%s\": unexpected \"%s\" after host", url, pend);
  n = strlen(pend);
  while (n > 0 && pend[n - 1] == '/') n--;
  if (n >= pathcap) return mgop_seterr(MGOP_ERR_CONFIG, "server URL \"%s\": path too long", url);
  memcpy(path, pend, n);
  path[n] = 0;
  return MGOP_OK;
}

/* The YAML document tree libyaml builds; small helpers to walk it. */
static yaml_node_t *mgop_y_get(yaml_document_t *d, yaml_node_t *map, const char *key) {
  yaml_node_pair_t *pair;
  if (!map || map->type != YAML_MAPPING_NODE) return NULL;
  for (pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top; pair++) {
    yaml_node_t *k = yaml_document_get_node(d, pair->key);
    if (k && k->type == YAML_SCALAR_NODE && strlen(key) == k->data.scalar.length &&
        memcmp(k->data.scalar.value, key, k->data.scalar.length) == 0)
      return yaml_document_get_node(d, pair->value);
  }
  return NULL;
}

static const char *mgop_y_scalar(yaml_node_t *n) {
  if (!n || n->type != YAML_SCALAR_NODE) return NULL;
  return (const char *)n->data.scalar.value;
}

/* clusters/users/contexts are lists of {name: X, <inner>: {...}} */
static yaml_node_t *mgop_y_named(yaml_document_t *d, yaml_node_t *root, const char *list, const char *name,
                                 const char *inner) {
  yaml_node_t *seq = mgop_y_get(d, root, list);
  yaml_node_item_t *it;
  if (!seq || seq->type != YAML_SEQUENCE_NODE) return NULL;
  for (it = seq->data.sequence.items.start; it < seq->data.sequence.items.top; it++) {
    yaml_node_t *e = yaml_document_get_node(d, *it);
    const char *n = mgop_y_scalar(mgop_y_get(d, e, "name"));
    if (n && strcmp(n, name) == 0) return mgop_y_get(d, e, inner);
  }
  return NULL;
}

static int mgop_y_truthy(const char *v) {
  return v && (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE") || !strcmp(v, "yes"));
}

static void mgop_path_join(char *out, size_t cap, const char *base_dir, const char *path) {
  if (path[0] == '/' || !base_dir || !base_dir[0]) snprintf(out, cap, "%s", path);
  else snprintf(out, cap, "%s/%s", base_dir, path);
}

/* Load a PEM/DER blob from *-data (base64) or from a file path. The buffer
 * gets a trailing NUL counted in the length, as mbedTLS wants for PEM. */
static int mgop_load_blob(unsigned char *dst, size_t cap, size_t *len, const char *b64, const char *file,
                          const char *base_dir, const char *field) {
  size_t n = 0;
  if (b64 && b64[0]) {
    int r = mbedtls_base64_decode(dst, cap - 1, &n, (const unsigned char *)b64, strlen(b64));
    if (r == MBEDTLS_ERR_BASE64_BUFFER_TOO_SMALL)
      return mgop_seterr(MGOP_ERR_TOOBIG, "kubeconfig %s-data is larger than %d bytes", field, MGOP_PEM_MAX - 1);
    if (r) return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig %s-data is not valid base64", field);
  } else if (file && file[0]) {
    char full[1024];
    mgop_path_join(full, sizeof(full), base_dir, file);
    if (mgop_read_file(full, (char *)dst, cap - 1, &n))
      return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig %s: %s", field, mgop_errmsg());
  } else {
    *len = 0;
    return MGOP_OK;
  }
  dst[n] = 0;
  *len = n + 1;
  return MGOP_OK;
}

static int mgop_trim_token(char *tok) {
  size_t n = strlen(tok);
  while (n > 0 && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' ' || tok[n - 1] == '\t')) n--;
  tok[n] = 0;
  return (int)n;
}

void mgop_kubecfg_copy(struct mgop_kubecfg *dst, const struct mgop_kubecfg *src) {
  memcpy(dst, src, offsetof(struct mgop_kubecfg, ca));
  memcpy(dst->ca, src->ca, src->ca_len < sizeof(src->ca) ? src->ca_len : sizeof(src->ca));
  memcpy(dst->cert, src->cert, src->cert_len < sizeof(src->cert) ? src->cert_len : sizeof(src->cert));
  memcpy(dst->key, src->key, src->key_len < sizeof(src->key) ? src->key_len : sizeof(src->key));
  dst->ca_len = src->ca_len;
  dst->cert_len = src->cert_len;
  dst->key_len = src->key_len;
  dst->token_loaded_ms = src->token_loaded_ms;
}

int mgop_kubecfg_reload_token(struct mgop_kubecfg *c, long long now_ms, int force) {
  char tmp[MGOP_TOKEN_MAX];
  size_t n;
  if (!c->token_file[0]) return MGOP_OK;
  if (!force && c->token_loaded_ms && now_ms - c->token_loaded_ms < MGOP_TOKEN_RELOAD_MS) return MGOP_OK;
  if (mgop_read_file(c->token_file, tmp, sizeof(tmp) - 1, &n))
    return mgop_seterr(MGOP_ERR_CONFIG, "token file: %s", mgop_errmsg());
  tmp[n] = 0;
  if (mgop_trim_token(tmp) == 0) return mgop_seterr(MGOP_ERR_CONFIG, "token file %s is empty", c->token_file);
  memcpy(c->token, tmp, strlen(tmp) + 1);
  c->token_loaded_ms = now_ms ? now_ms : 1;
  return MGOP_OK;
}

static int mgop_copy_field(char *dst, size_t cap, const char *src, const char *field) {
  if (!src) {
    dst[0] = 0;
    return MGOP_OK;
  }
  if (strlen(src) >= cap) return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig %s is too long (max %zu)", field, cap - 1);
  memcpy(dst, src, strlen(src) + 1);
  return MGOP_OK;
}

static int mgop_kubecfg_from_doc(struct mgop_kubecfg *c, yaml_document_t *d, const char *base_dir,
                                 const char *context) {
  yaml_node_t *root = yaml_document_get_root_node(d), *ctx, *cl, *us;
  const char *ctxname = context && context[0] ? context : NULL, *clname, *usname, *server, *v;
  int r;
  if (!root || root->type != YAML_MAPPING_NODE)
    return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig is not a YAML mapping (expected apiVersion: v1, kind: Config)");
  if (!ctxname) ctxname = mgop_y_scalar(mgop_y_get(d, root, "current-context"));
  if (!ctxname || !ctxname[0])
    return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig has no current-context; set one with `kubectl config "
                                        "use-context NAME` or pass --context");
  ctx = mgop_y_named(d, root, "contexts", ctxname, "context");
  if (!ctx) return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig contexts[] has no context named \"%s\"", ctxname);
  if ((r = mgop_copy_field(c->context, sizeof(c->context), ctxname, "context name"))) return r;
  clname = mgop_y_scalar(mgop_y_get(d, ctx, "cluster"));
  usname = mgop_y_scalar(mgop_y_get(d, ctx, "user"));
  if ((r = mgop_copy_field(c->namespace_, sizeof(c->namespace_), mgop_y_scalar(mgop_y_get(d, ctx, "namespace")),
                           "contexts[].context.namespace")))
    return r;
  if (!clname) return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig context \"%s\" names no cluster", ctxname);
  cl = mgop_y_named(d, root, "clusters", clname, "cluster");
  if (!cl) return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig clusters[] has no cluster named \"%s\"", clname);
  server = mgop_y_scalar(mgop_y_get(d, cl, "server"));
  if (!server || !server[0])
    return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig clusters[name=%s].cluster.server is missing", clname);
  if ((r = mgop_url_parse(server, c->scheme, sizeof(c->scheme), c->host, sizeof(c->host), c->port,
                          sizeof(c->port), c->path_prefix, sizeof(c->path_prefix))))
    return mgop_seterr(r, "kubeconfig clusters[name=%s].cluster.server: %s", clname, mgop_errmsg());
  if (mgop_y_get(d, cl, "proxy-url"))
    return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig clusters[name=%s].cluster.proxy-url is not supported; "
                                        "remove it or reach the API server directly", clname);
  c->insecure = mgop_y_truthy(mgop_y_scalar(mgop_y_get(d, cl, "insecure-skip-tls-verify")));
  if ((r = mgop_copy_field(c->tls_server_name, sizeof(c->tls_server_name),
                           mgop_y_scalar(mgop_y_get(d, cl, "tls-server-name")), "tls-server-name")))
    return r;
  if ((r = mgop_load_blob(c->ca, sizeof(c->ca), &c->ca_len,
                          mgop_y_scalar(mgop_y_get(d, cl, "certificate-authority-data")),
                          mgop_y_scalar(mgop_y_get(d, cl, "certificate-authority")), base_dir,
                          "certificate-authority")))
    return r;
  if (usname) {
    us = mgop_y_named(d, root, "users", usname, "user");
    if (!us) return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig users[] has no user named \"%s\"", usname);
    if (mgop_y_get(d, us, "exec") || mgop_y_get(d, us, "auth-provider"))
      return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig users[name=%s].user uses an exec/auth-provider plugin, "
                                          "which multigres-op does not run; use a token, tokenFile or a client "
                                          "certificate", usname);
    if ((r = mgop_load_blob(c->cert, sizeof(c->cert), &c->cert_len,
                            mgop_y_scalar(mgop_y_get(d, us, "client-certificate-data")),
                            mgop_y_scalar(mgop_y_get(d, us, "client-certificate")), base_dir,
                            "client-certificate")))
      return r;
    if ((r = mgop_load_blob(c->key, sizeof(c->key), &c->key_len,
                            mgop_y_scalar(mgop_y_get(d, us, "client-key-data")),
                            mgop_y_scalar(mgop_y_get(d, us, "client-key")), base_dir, "client-key")))
      return r;
    if ((c->cert_len == 0) != (c->key_len == 0))
      return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig users[name=%s].user has a client certificate without a "
                                          "key (or a key without a certificate); set both", usname);
    v = mgop_y_scalar(mgop_y_get(d, us, "token"));
    if (v) {
      if (strlen(v) >= sizeof(c->token))
        return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig users[name=%s].user.token is too long", usname);
      memcpy(c->token, v, strlen(v) + 1);
    }
    v = mgop_y_scalar(mgop_y_get(d, us, "tokenFile"));
    if (v && v[0] && !c->token[0]) {
      mgop_path_join(c->token_file, sizeof(c->token_file), base_dir, v);
      if ((r = mgop_kubecfg_reload_token(c, mgop_now_ms(), 1))) return r;
    }
    if (mgop_y_get(d, us, "username") || mgop_y_get(d, us, "password"))
      return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig users[name=%s].user uses basic auth, which Kubernetes "
                                          "removed; use a token or a client certificate", usname);
  }
  if (!strcmp(c->scheme, "https") && !c->insecure && c->ca_len == 0)
    return mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig clusters[name=%s].cluster has neither certificate-authority "
                                        "nor certificate-authority-data; add the API server's CA (or, for "
                                        "throwaway clusters only, insecure-skip-tls-verify: true)", clname);
  return MGOP_OK;
}

static int mgop_yaml_plain_literal(const char *v, size_t n) {
  char tmp[64], *end;
  if ((n == 4 && !memcmp(v, "true", 4)) || (n == 5 && !memcmp(v, "false", 5)) || (n == 4 && !memcmp(v, "null", 4)))
    return 1;
  if (n == 0 || n >= sizeof(tmp)) return 0;
  if (!(v[0] == '-' || (v[0] >= '0' && v[0] <= '9'))) return 0;
  if (n > 1 && v[0] == '0' && v[1] != '.') return 0;       /* 0755 is a string to JSON */
  if (n > 2 && v[0] == '-' && v[1] == '0' && v[2] != '.') return 0;
  memcpy(tmp, v, n);
  tmp[n] = 0;
  (void)strtod(tmp, &end);
  return *end == 0 && strspn(tmp, "-0123456789.eE+") == n;
}

static int mgop_yaml_node_json(yaml_document_t *d, yaml_node_t *node, struct mgop_jw *w, int depth) {
  if (!node || depth > 64) return mgop_seterr(MGOP_ERR_PARSE, "YAML nested deeper than 64 levels");
  switch (node->type) {
    case YAML_SCALAR_NODE: {
      const char *v = (const char *)node->data.scalar.value;
      size_t n = node->data.scalar.length;
      if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && (n == 0 || (n == 1 && v[0] == '~'))) mgop_jw_null(w);
      else if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && mgop_yaml_plain_literal(v, n)) mgop_jw_raw(w, v, n);
      else mgop_jw_strn(w, v, n);
      return MGOP_OK;
    }
    case YAML_SEQUENCE_NODE: {
      yaml_node_item_t *it;
      mgop_jw_arr(w);
      for (it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++) {
        int rc = mgop_yaml_node_json(d, yaml_document_get_node(d, *it), w, depth + 1);
        if (rc) return rc;
      }
      mgop_jw_arr_end(w);
      return MGOP_OK;
    }
    case YAML_MAPPING_NODE: {
      yaml_node_pair_t *pair;
      mgop_jw_obj(w);
      for (pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++) {
        yaml_node_t *k = yaml_document_get_node(d, pair->key);
        char key[512];
        int rc;
        if (!k || k->type != YAML_SCALAR_NODE || k->data.scalar.length >= sizeof(key))
          return mgop_seterr(MGOP_ERR_PARSE, "YAML mapping key at line %zu is not a short scalar",
                             k ? k->start_mark.line + 1 : 0);
        memcpy(key, k->data.scalar.value, k->data.scalar.length);
        key[k->data.scalar.length] = 0;
        mgop_jw_key(w, key);
        if ((rc = mgop_yaml_node_json(d, yaml_document_get_node(d, pair->value), w, depth + 1))) return rc;
      }
      mgop_jw_obj_end(w);
      return MGOP_OK;
    }
    default: return mgop_seterr(MGOP_ERR_PARSE, "empty YAML node");
  }
}

int mgop_yaml_to_json_docs(const char *text, size_t len, struct mgop_buf *scratch, mgop_doc_fn fn, void *ctx) {
  yaml_parser_t parser;
  int index = 0, rc = MGOP_OK;
  if (!yaml_parser_initialize(&parser)) return mgop_seterr(MGOP_ERR_NOMEM, "cannot initialise the YAML parser");
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  for (;;) {
    yaml_document_t doc;
    yaml_node_t *root;
    struct mgop_jw w;
    if (!yaml_parser_load(&parser, &doc)) {
      rc = mgop_seterr(MGOP_ERR_PARSE, "invalid YAML: %s at line %zu column %zu",
                       parser.problem ? parser.problem : "error", parser.problem_mark.line + 1,
                       parser.problem_mark.column + 1);
      break;
    }
    root = yaml_document_get_root_node(&doc);
    if (!root) { /* end of stream */
      yaml_document_delete(&doc);
      break;
    }
    scratch->len = 0;
    scratch->overflow = 0;
    mgop_jw_init(&w, scratch);
    rc = mgop_yaml_node_json(&doc, root, &w, 0);
    yaml_document_delete(&doc);
    if (!rc && scratch->overflow) rc = mgop_seterr(MGOP_ERR_TOOBIG, "YAML document %d is too large", index + 1);
    if (!rc && !(root == NULL)) rc = fn(ctx, scratch->p, scratch->len, index++);
    if (rc) break;
  }
  yaml_parser_delete(&parser);
  return rc;
}

/* Empties c as memset would, but of the three 64 KiB PEM buffers zeroes
 * only the bytes in use (nothing reads past a length): a start's memset of
 * all of it was 50 first touches, 14 us each on a VM, before any request. */
static void mgop_kubecfg_clear(struct mgop_kubecfg *c) {
  memset(c->ca, 0, c->ca_len < sizeof(c->ca) ? c->ca_len : sizeof(c->ca));
  memset(c->cert, 0, c->cert_len < sizeof(c->cert) ? c->cert_len : sizeof(c->cert));
  memset(c->key, 0, c->key_len < sizeof(c->key) ? c->key_len : sizeof(c->key));
  memset(c, 0, offsetof(struct mgop_kubecfg, ca));
  c->ca_len = c->cert_len = c->key_len = 0;
  c->token_loaded_ms = 0;
}

int mgop_kubecfg_from_yaml(struct mgop_kubecfg *c, const char *text, size_t len, const char *base_dir,
                           const char *context) {
  yaml_parser_t parser;
  yaml_document_t doc;
  int r;
  mgop_kubecfg_clear(c);
  snprintf(c->source, sizeof(c->source), "kubeconfig");
  if (len > MGOP_KUBECONFIG_MAX) return mgop_seterr(MGOP_ERR_TOOBIG, "kubeconfig is larger than 1 MiB");
  if (!yaml_parser_initialize(&parser)) return mgop_seterr(MGOP_ERR_NOMEM, "cannot initialise the YAML parser");
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  if (!yaml_parser_load(&parser, &doc)) {
    r = mgop_seterr(MGOP_ERR_CONFIG, "kubeconfig is not valid YAML: %s at line %zu column %zu",
                    parser.problem ? parser.problem : "error", parser.problem_mark.line + 1,
                    parser.problem_mark.column + 1);
    yaml_parser_delete(&parser);
    return r;
  }
  r = mgop_kubecfg_from_doc(c, &doc, base_dir, context);
  yaml_document_delete(&doc);
  yaml_parser_delete(&parser);
  return r;
}

int mgop_kubecfg_from_file(struct mgop_kubecfg *c, const char *path, const char *context) {
  static char text[MGOP_KUBECONFIG_MAX];
  char dir[1024];
  const char *slash;
  size_t n;
  int r;
  if ((r = mgop_read_file(path, text, sizeof(text), &n))) return r;
  slash = strrchr(path, '/');
  if (slash) snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
  else snprintf(dir, sizeof(dir), ".");
  if (slash == path) snprintf(dir, sizeof(dir), "/");
  r = mgop_kubecfg_from_yaml(c, text, n, dir, context);
  memset(text, 0, n); /* the file may hold keys */
  if (r) return mgop_seterr(r, "%s: %s", path, mgop_errmsg());
  snprintf(c->source, sizeof(c->source), "kubeconfig");
  return MGOP_OK;
}

int mgop_kubecfg_in_cluster(struct mgop_kubecfg *c, const char *sa_dir) {
  const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");
  char path[1024];
  size_t n;
  int r;
  mgop_kubecfg_clear(c);
  snprintf(c->source, sizeof(c->source), "in-cluster");
  if (!host || !host[0] || !port || !port[0])
    return mgop_seterr(MGOP_ERR_CONFIG, "not running in a cluster: KUBERNETES_SERVICE_HOST and "
                                        "KUBERNETES_SERVICE_PORT must both be set");
  if (strlen(host) >= sizeof(c->host) || strlen(port) >= sizeof(c->port) || atoi(port) <= 0 || atoi(port) > 65535)
    return mgop_seterr(MGOP_ERR_CONFIG, "KUBERNETES_SERVICE_HOST/PORT (%s:%s) are not a valid address", host, port);
  snprintf(c->scheme, sizeof(c->scheme), "https");
  /* strip IPv6 brackets if the environment carries them */
  if (host[0] == '[') snprintf(c->host, sizeof(c->host), "%.*s", (int)strcspn(host + 1, "]"), host + 1);
  else snprintf(c->host, sizeof(c->host), "%s", host);
  snprintf(c->port, sizeof(c->port), "%s", port);
  /* The API server is verified as the address we connect to: the service
   * IP, which its certificate carries as an iPAddress SAN (mbedTLS 3.6
   * matches those), or a name if the environment gives one. */
  snprintf(path, sizeof(path), "%s/ca.crt", sa_dir);
  if ((r = mgop_read_file(path, (char *)c->ca, sizeof(c->ca) - 1, &n)))
    return mgop_seterr(r, "in-cluster CA: %s", mgop_errmsg());
  c->ca[n] = 0;
  c->ca_len = n + 1;
  snprintf(c->token_file, sizeof(c->token_file), "%s/token", sa_dir);
  if ((r = mgop_kubecfg_reload_token(c, mgop_now_ms(), 1))) return r;
  snprintf(path, sizeof(path), "%s/namespace", sa_dir);
  if (mgop_read_file(path, c->namespace_, sizeof(c->namespace_) - 1, &n) == MGOP_OK) {
    c->namespace_[n] = 0;
    mgop_trim_token(c->namespace_);
  }
  return MGOP_OK;
}

int mgop_kubecfg_auto(struct mgop_kubecfg *c, const char *flag_path, const char *context) {
  const char *env = getenv("KUBECONFIG"), *home = getenv("HOME");
  char path[1024];
  struct stat st;
  if (flag_path && flag_path[0]) return mgop_kubecfg_from_file(c, flag_path, context);
  if (env && env[0]) {
    /* kubectl merges a ':'-separated list; we take the first file that exists */
    const char *p = env;
    while (*p) {
      size_t n = strcspn(p, ":");
      if (n > 0 && n < sizeof(path)) {
        memcpy(path, p, n);
        path[n] = 0;
        if (stat(path, &st) == 0) return mgop_kubecfg_from_file(c, path, context);
      }
      p += n;
      if (*p == ':') p++;
    }
    return mgop_seterr(MGOP_ERR_CONFIG, "KUBECONFIG=%s names no existing file", env);
  }
  if (getenv("KUBERNETES_SERVICE_HOST")) return mgop_kubecfg_in_cluster(c, MGOP_SA_DIR);
  if (home && home[0]) {
    snprintf(path, sizeof(path), "%s/.kube/config", home);
    if (stat(path, &st) == 0) return mgop_kubecfg_from_file(c, path, context);
  }
  return mgop_seterr(MGOP_ERR_CONFIG, "no Kubernetes configuration found: pass --kubeconfig, set KUBECONFIG, "
                                      "run in a Pod, or create ~/.kube/config");
}

/* ======================================================================
 * 3.4 tls
 * ==================================================================== */
static mbedtls_entropy_context mgop_entropy;
static mbedtls_ctr_drbg_context mgop_drbg;
static int mgop_tls_inited;
/* mbedTLS's heap: libc's, behind a counter that refuses an allocation
 * taking the bytes in use past MGOP_TLS_HEAP_SIZE (the handshake or request
 * then fails with mbedTLS's "allocation failed", logged, and is retried).
 * A fixed buffer with mbedTLS's own allocator was bounded too, but its init
 * clears the whole buffer: 512 page faults at every start on a VM, and
 * pages made resident that the heap never used (its high water is a quarter
 * of the buffer). A block counts as malloc_usable_size says (glibc and musl
 * both have it), so no header moves the pointer mbedTLS holds.
 *
 * A handshake allocates and frees a bignum's limbs at nearly every step;
 * with several connections shaking hands at once (at start) libc's heap
 * lock was what they waited on (musl's malloc has one lock). So each
 * thread keeps up to MGOP_TLS_CACHE_DEPTH freed blocks of each small size
 * class and hands them out again without the lock: at most ~17 KiB a
 * thread, not counted as in use, freed when the thread ends. */
#define MGOP_TLS_CACHE_STEP 32    /* size classes: 32, 64, ... bytes    */
#define MGOP_TLS_CACHE_CLASSES 16 /* ... up to 512                       */
#define MGOP_TLS_CACHE_DEPTH 4    /* blocks kept per class and thread    */
static size_t mgop_tls_heap_used, mgop_tls_heap_max;
static _Thread_local struct mgop_tls_cache {
  void *blk[MGOP_TLS_CACHE_CLASSES][MGOP_TLS_CACHE_DEPTH];
  unsigned char n[MGOP_TLS_CACHE_CLASSES];
  int registered;                 /* its thread frees it at exit */
} mgop_tls_cache;
static pthread_key_t mgop_tls_cache_key;
static pthread_once_t mgop_tls_cache_once = PTHREAD_ONCE_INIT;

static void mgop_tls_cache_flush(void *arg) {
  struct mgop_tls_cache *tc = arg;
  for (int c = 0; c < MGOP_TLS_CACHE_CLASSES; c++)
    while (tc->n[c]) free(tc->blk[c][--tc->n[c]]);
}
static void mgop_tls_cache_key_make(void) { pthread_key_create(&mgop_tls_cache_key, mgop_tls_cache_flush); }

static int mgop_tls_heap_count(size_t bytes) { /* 0 when the bound refuses them */
  size_t used = __atomic_add_fetch(&mgop_tls_heap_used, bytes, __ATOMIC_RELAXED);
  if (used > MGOP_TLS_HEAP_SIZE) {
    __atomic_sub_fetch(&mgop_tls_heap_used, bytes, __ATOMIC_RELAXED);
    return 0;
  }
  for (size_t max = __atomic_load_n(&mgop_tls_heap_max, __ATOMIC_RELAXED); used > max;)
    if (__atomic_compare_exchange_n(&mgop_tls_heap_max, &max, used, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) break;
  return 1;
}

static void *mgop_tls_heap_calloc(size_t n, size_t size) {
  size_t want, cls = 0;
  void *p;
  if (size && n > (MGOP_TLS_HEAP_SIZE) / size) return NULL;
  want = n * size;
  if (want && want <= MGOP_TLS_CACHE_STEP * MGOP_TLS_CACHE_CLASSES) {
    cls = (want + MGOP_TLS_CACHE_STEP - 1) / MGOP_TLS_CACHE_STEP; /* 1..CLASSES */
    want = cls * MGOP_TLS_CACHE_STEP;
    if (mgop_tls_cache.n[cls - 1]) {
      p = mgop_tls_cache.blk[cls - 1][--mgop_tls_cache.n[cls - 1]];
      if (!mgop_tls_heap_count(malloc_usable_size(p))) {
        mgop_tls_cache.blk[cls - 1][mgop_tls_cache.n[cls - 1]++] = p;
        return NULL;
      }
      return memset(p, 0, n * size);
    }
  }
  if (!(p = calloc(1, want ? want : 1))) return NULL;
  if (!mgop_tls_heap_count(malloc_usable_size(p))) {
    free(p);
    return NULL;
  }
  return p;
}

static void mgop_tls_heap_free(void *p) {
  size_t bytes, cls;
  if (!p) return;
  bytes = malloc_usable_size(p);
  __atomic_sub_fetch(&mgop_tls_heap_used, bytes, __ATOMIC_RELAXED);
  cls = bytes / MGOP_TLS_CACHE_STEP; /* the class it can serve: its size rounded down */
  if (cls >= 1 && cls <= MGOP_TLS_CACHE_CLASSES && mgop_tls_cache.n[cls - 1] < MGOP_TLS_CACHE_DEPTH) {
    if (!mgop_tls_cache.registered) {
      pthread_once(&mgop_tls_cache_once, mgop_tls_cache_key_make);
      pthread_setspecific(mgop_tls_cache_key, &mgop_tls_cache);
      mgop_tls_cache.registered = 1;
    }
    mgop_tls_cache.blk[cls - 1][mgop_tls_cache.n[cls - 1]++] = p;
    return;
  }
  free(p);
}

int mgop_tls_global_init(void) {
  int r;
  if (mgop_tls_inited) return MGOP_OK;
  mbedtls_platform_set_calloc_free(mgop_tls_heap_calloc, mgop_tls_heap_free);
  mbedtls_entropy_init(&mgop_entropy);
  mbedtls_ctr_drbg_init(&mgop_drbg);
  r = mbedtls_ctr_drbg_seed(&mgop_drbg, mbedtls_entropy_func, &mgop_entropy,
                            (const unsigned char *)"multigres-op", 12);
  if (r) return mgop_seterr(MGOP_ERR_TLS, "cannot seed the random generator (mbedtls -0x%04x)", -r);
#if defined(MBEDTLS_PSA_CRYPTO_C)
  /* TLS 1.3 does its key schedule and AEAD through PSA; its key slots come
   * from the same bounded heap. */
  if ((r = (int)psa_crypto_init()) != PSA_SUCCESS)
    return mgop_seterr(MGOP_ERR_TLS, "cannot start PSA crypto (psa_status %d)", r);
#endif
  mgop_tls_inited = 1;
  return MGOP_OK;
}

size_t mgop_tls_heap_high_water(void) { return __atomic_load_n(&mgop_tls_heap_max, __ATOMIC_RELAXED); }

static int mgop_tls_fail(int r, const char *what) {
  char e[160];
  mbedtls_strerror(r, e, sizeof(e));
  return mgop_seterr(MGOP_ERR_TLS, "%s: %s (mbedtls -0x%04x)", what, e, -r);
}

/* The client's groups, P-256 first: mbedTLS makes a P-256 key share in a
 * quarter of X25519's time (a precomputed fixed-base comb against a
 * Montgomery ladder: 0.25 against 1.0 ms on the bench host) and agrees in
 * the same 0.7 ms, on every handshake, a resumed one too (psk_dhe_ke).
 * The client sends one key share, and a Go server takes a group the client
 * sent a share for over its own order, so no HelloRetryRequest. */
static const uint16_t mgop_tls_client_groups[] = {MBEDTLS_SSL_IANA_TLS_GROUP_SECP256R1, MBEDTLS_SSL_IANA_TLS_GROUP_X25519,
                                                  MBEDTLS_SSL_IANA_TLS_GROUP_SECP384R1, MBEDTLS_SSL_IANA_TLS_GROUP_NONE};

int mgop_tls_client_init(struct mgop_tls *t, const struct mgop_kubecfg *c) {
  int r;
  memset(t, 0, sizeof(*t));
  if ((r = mgop_tls_global_init())) return r;
  mbedtls_ssl_config_init(&t->conf);
  mbedtls_x509_crt_init(&t->ca);
  mbedtls_x509_crt_init(&t->cert);
  mbedtls_pk_init(&t->key);
  t->ready = 1;
  r = mbedtls_ssl_config_defaults(&t->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                  MBEDTLS_SSL_PRESET_DEFAULT);
  if (r) return mgop_tls_fail(r, "TLS defaults");
  mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &mgop_drbg);
  mbedtls_ssl_conf_min_tls_version(&t->conf, MBEDTLS_SSL_VERSION_TLS1_2);
  mbedtls_ssl_conf_groups(&t->conf, mgop_tls_client_groups);
  if (c->insecure) {
    mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_NONE);
  } else {
    if (c->ca_len == 0) return mgop_seterr(MGOP_ERR_CONFIG, "no CA certificate to verify the API server with");
    r = mbedtls_x509_crt_parse(&t->ca, c->ca, c->ca_len);
    if (r < 0) return mgop_tls_fail(r, "certificate-authority is not a valid PEM/DER certificate");
    mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, NULL);
    mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
  }
  t->creds = mgop_fnv1a64(MGOP_FNV64_INIT, c->ca, c->ca_len);
  t->creds = mgop_fnv1a64(t->creds, c->cert, c->cert_len);
  t->creds = mgop_fnv1a64(t->creds, c->key, c->key_len);
  t->creds = mgop_fnv1a64(t->creds, &c->insecure, sizeof(c->insecure));
  mbedtls_ssl_conf_tls13_enable_signal_new_session_tickets(&t->conf, MBEDTLS_SSL_TLS1_3_SIGNAL_NEW_SESSION_TICKETS_ENABLED);
  if (c->cert_len) {
    r = mbedtls_x509_crt_parse(&t->cert, c->cert, c->cert_len);
    if (r) return mgop_tls_fail(r, "client-certificate is not a valid certificate");
    r = mbedtls_pk_parse_key(&t->key, c->key, c->key_len, NULL, 0, mbedtls_ctr_drbg_random, &mgop_drbg);
    if (r) return mgop_tls_fail(r, "client-key is not a valid unencrypted private key");
    r = mbedtls_ssl_conf_own_cert(&t->conf, &t->cert, &t->key);
    if (r) return mgop_tls_fail(r, "client certificate and key do not fit together");
  }
  return MGOP_OK;
}

void mgop_tls_free(struct mgop_tls *t) {
  if (!t->ready) return;
  mbedtls_ssl_config_free(&t->conf);
  mbedtls_x509_crt_free(&t->ca);
  mbedtls_x509_crt_free(&t->cert);
  mbedtls_pk_free(&t->key);
  t->ready = 0;
}

/* The session store (mgop_tls_handshakes). A slot's session is only ever
 * copied out or replaced under the lock. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t ticket;             /* a ticket kept, or a bringer gone */
  struct {
    uint64_t key;
    long long at;
    int used;                        /* s holds key's ticket */
    long long coming_until;          /* without one: a full handshake brings it by then */
    mbedtls_ssl_session s;
  } slot[MGOP_TLS_SESSIONS];
  unsigned long long full, resumed;
} mgop_tls_sess = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {{0, 0, 0, 0, {0}}}, 0, 0};

static uint64_t mgop_tls_sess_key(const struct mgop_tls *t, const struct mgop_kubecfg *cfg) {
  uint64_t h = mgop_fnv1a64(t->creds, cfg->host, strlen(cfg->host) + 1);
  h = mgop_fnv1a64(h, cfg->port, strlen(cfg->port) + 1);
  return mgop_fnv1a64(h, cfg->tls_server_name, strlen(cfg->tls_server_name) + 1);
}

/* key's slot (a ticket, or one coming), or -1; under the lock. */
static int mgop_tls_sess_slot(uint64_t key, long long now) {
  for (int i = 0; i < MGOP_TLS_SESSIONS; i++)
    if (mgop_tls_sess.slot[i].key == key && (mgop_tls_sess.slot[i].used || mgop_tls_sess.slot[i].coming_until > now))
      return i;
  return -1;
}

/* A free slot, else the oldest ticket's; under the lock. */
static int mgop_tls_sess_free_slot(long long now) {
  int pick = -1;
  for (int i = 0; i < MGOP_TLS_SESSIONS && pick < 0; i++)
    if (!mgop_tls_sess.slot[i].used && mgop_tls_sess.slot[i].coming_until <= now) pick = i;
  if (pick < 0) /* all taken: the oldest goes */
    for (int i = pick = 0; i < MGOP_TLS_SESSIONS; i++)
      if (mgop_tls_sess.slot[i].at < mgop_tls_sess.slot[pick].at) pick = i;
  return pick;
}

/* Offers key's ticket, if one is kept, to a connection about to shake
 * hands; while another connection's full handshake brings one, waits for
 * it (until deadline at most); with neither, this connection brings it. */
static void mgop_tls_sess_offer(struct mgop_conn *c, long long deadline) {
  pthread_mutex_lock(&mgop_tls_sess.mu);
  for (;;) {
    long long now = mgop_now_ms(), until;
    int i = mgop_tls_sess_slot(c->sess_key, now);
    if (i >= 0 && mgop_tls_sess.slot[i].used) {
      c->offered = mbedtls_ssl_set_session(&c->ssl, &mgop_tls_sess.slot[i].s) == 0;
      break;
    }
    if (i < 0) { /* this one brings it */
      i = mgop_tls_sess_free_slot(now);
      if (mgop_tls_sess.slot[i].used) mbedtls_ssl_session_free(&mgop_tls_sess.slot[i].s);
      memset(&mgop_tls_sess.slot[i], 0, sizeof(mgop_tls_sess.slot[i]));
      mgop_tls_sess.slot[i].key = c->sess_key;
      mgop_tls_sess.slot[i].at = now;
      mgop_tls_sess.slot[i].coming_until = now + MGOP_TLS_TICKET_WAIT_MS;
      c->brings = 1;
      break;
    }
    until = mgop_tls_sess.slot[i].coming_until < deadline ? mgop_tls_sess.slot[i].coming_until : deadline;
    if (until <= now) break; /* out of time: a full handshake of its own */
    mgop_cond_wait_ms(&mgop_tls_sess.ticket, &mgop_tls_sess.mu, until - now);
  }
  pthread_mutex_unlock(&mgop_tls_sess.mu);
}

/* The connection that was to bring key's ticket will not (it failed, or
 * answered without one): the waiting connections go on, each on its own. */
static void mgop_tls_sess_not_coming(struct mgop_conn *c) {
  if (!c->brings) return;
  c->brings = 0;
  pthread_mutex_lock(&mgop_tls_sess.mu);
  for (int i = 0; i < MGOP_TLS_SESSIONS; i++)
    if (mgop_tls_sess.slot[i].key == c->sess_key && !mgop_tls_sess.slot[i].used) mgop_tls_sess.slot[i].coming_until = 0;
  pthread_cond_broadcast(&mgop_tls_sess.ticket);
  pthread_mutex_unlock(&mgop_tls_sess.mu);
}

/* Keeps the ticket the server just sent (key's slot, else a free or the
 * oldest one); drop: forgets key's ticket instead (a handshake that offered
 * it failed: the next one goes without). */
static void mgop_tls_sess_keep(struct mgop_conn *c, int drop) {
  mbedtls_ssl_session s;
  long long now = mgop_now_ms();
  int pick;
  mbedtls_ssl_session_init(&s);
  if (!drop && mbedtls_ssl_get_session(&c->ssl, &s)) {
    mbedtls_ssl_session_free(&s);
    mgop_tls_sess_not_coming(c);
    return;
  }
  c->brings = 0;
  pthread_mutex_lock(&mgop_tls_sess.mu);
  pick = mgop_tls_sess_slot(c->sess_key, now);
  if (drop) {
    if (pick >= 0 && mgop_tls_sess.slot[pick].used)
      mbedtls_ssl_session_free(&mgop_tls_sess.slot[pick].s), mgop_tls_sess.slot[pick].used = 0;
    if (pick >= 0) mgop_tls_sess.slot[pick].coming_until = 0;
  } else {
    if (pick < 0) pick = mgop_tls_sess_free_slot(now);
    if (mgop_tls_sess.slot[pick].used) mbedtls_ssl_session_free(&mgop_tls_sess.slot[pick].s);
    mgop_tls_sess.slot[pick].s = s; /* the slot owns what s held */
    mgop_tls_sess.slot[pick].key = c->sess_key;
    mgop_tls_sess.slot[pick].at = now;
    mgop_tls_sess.slot[pick].used = 1;
    mgop_tls_sess.slot[pick].coming_until = 0;
  }
  pthread_cond_broadcast(&mgop_tls_sess.ticket);
  pthread_mutex_unlock(&mgop_tls_sess.mu);
  if (drop) mbedtls_ssl_session_free(&s);
}

void mgop_tls_handshakes(unsigned long long *full, unsigned long long *resumed) {
  *full = __atomic_load_n(&mgop_tls_sess.full, __ATOMIC_RELAXED);
  *resumed = __atomic_load_n(&mgop_tls_sess.resumed, __ATOMIC_RELAXED);
}

/* Runs in a full handshake's certificate check only: marks the connection
 * as not resumed (the flags mbedTLS computed stand). */
static int mgop_tls_mark_verified(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags) {
  (void)crt, (void)depth, (void)flags;
  ((struct mgop_conn *)ctx)->verified = 1;
  return 0;
}

/* ======================================================================
 * 3.5 http
 * ==================================================================== */
void mgop_conn_init(struct mgop_conn *c) {
  memset(c, 0, offsetof(struct mgop_conn, rbuf));
  c->fd = -1;
  c->rpos = c->rlen = 0;
}

static int mgop_fd_send(void *ctx, const unsigned char *buf, size_t n) {
  int fd = *(int *)ctx;
  ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
  if (w < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return MBEDTLS_ERR_SSL_WANT_WRITE;
    return MBEDTLS_ERR_NET_SEND_FAILED;
  }
  return (int)w;
}

static int mgop_fd_recv(void *ctx, unsigned char *buf, size_t n) {
  int fd = *(int *)ctx;
  ssize_t r = recv(fd, buf, n, 0);
  if (r < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return MBEDTLS_ERR_SSL_WANT_READ;
    if (errno == ECONNRESET || errno == EPIPE) return MBEDTLS_ERR_NET_CONN_RESET;
    return MBEDTLS_ERR_NET_RECV_FAILED;
  }
  return (int)r;
}

int mgop_io_abort;
_Thread_local int mgop_io_unabortable;

/* Waits for fd to become readable/writable; 0 on ready, MGOP_ERR_TIMEOUT.
 * Waits in slices of MGOP_IO_SLICE_MS so a shutdown (mgop_io_abort) ends
 * a blocked request at once, whichever thread the signal reached. */
static int mgop_wait_fd(int fd, short events, long long deadline) {
  for (;;) {
    struct pollfd p = {fd, events, 0};
    long long left = deadline - mgop_now_ms();
    int r;
    if (__atomic_load_n(&mgop_io_abort, __ATOMIC_RELAXED) && !mgop_io_unabortable) return MGOP_ERR_TIMEOUT;
    if (left <= 0) return MGOP_ERR_TIMEOUT;
    r = poll(&p, 1, (int)(left > MGOP_IO_SLICE_MS ? MGOP_IO_SLICE_MS : left));
    if (r > 0) return MGOP_OK;
    if (r < 0 && errno != EINTR) return MGOP_ERR_IO;
  }
}

static void mgop_sock_tune(int fd) {
  int one = 1, idle = 30, intvl = 10, cnt = 3;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
#ifdef TCP_KEEPIDLE
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
#else
  (void)idle; (void)intvl; (void)cnt;
#endif
}

/* getaddrinfo() into an answer: 0, or its error (a's err says it). */
static int mgop_dns_getaddrinfo(const char *host, const char *port, int numeric_only, struct mgop_dns_answer *a) {
  struct addrinfo hints, *res = NULL, *ai;
  int r;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = numeric_only ? AI_NUMERICHOST : 0;
  a->n = a->total = 0;
  a->err[0] = 0;
  if ((r = getaddrinfo(host, port, &hints, &res))) {
    snprintf(a->err, sizeof(a->err), "%s", gai_strerror(r));
    return r;
  }
  a->total = 0;
  for (ai = res; ai; ai = ai->ai_next) {
    a->total++;
    if (a->n == MGOP_DNS_ADDRS || ai->ai_addrlen > sizeof(a->addr[0])) continue;
    a->family[a->n] = ai->ai_family;
    a->len[a->n] = ai->ai_addrlen;
    memcpy(&a->addr[a->n++], ai->ai_addr, ai->ai_addrlen);
  }
  freeaddrinfo(res);
  if (!a->n) snprintf(a->err, sizeof(a->err), "no usable address");
  return a->n ? 0 : EAI_NONAME;
}
int (*mgop_dns_resolve)(const char *host, const char *port, int numeric_only, struct mgop_dns_answer *a) =
    mgop_dns_getaddrinfo;

/* The resolver thread's state: one question and its answer. asked,
 * answered and taken count questions: the next is asked only once the
 * last answer was taken by its caller (or its caller gave up, given_up),
 * so no caller ever reads an answer to another's question. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int started, stop;
  unsigned long long asked, answered, taken, given_up;
  long long asked_ms;
  char host[256], port[16];
  struct mgop_dns_answer ans;
} mgop_dns = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0, 0, "", "", {0}};

static void *mgop_dns_main(void *arg) {
  static struct mgop_dns_answer ans; /* this thread's alone */
  char host[sizeof(mgop_dns.host)], port[sizeof(mgop_dns.port)];
  (void)arg;
  pthread_mutex_lock(&mgop_dns.mu);
  for (;;) {
    unsigned long long q;
    while (mgop_dns.answered == mgop_dns.asked && !mgop_dns.stop) pthread_cond_wait(&mgop_dns.cv, &mgop_dns.mu);
    if (mgop_dns.stop) break;
    q = mgop_dns.asked;
    memcpy(host, mgop_dns.host, sizeof(host));
    memcpy(port, mgop_dns.port, sizeof(port));
    pthread_mutex_unlock(&mgop_dns.mu);
    mgop_dns_resolve(host, port, 0, &ans);
    pthread_mutex_lock(&mgop_dns.mu);
    mgop_dns.ans = ans;
    mgop_dns.answered = q;
    if (mgop_dns.given_up == q) mgop_dns.taken = q; /* nobody waits for it */
    pthread_cond_broadcast(&mgop_dns.cv);
  }
  /* a question asked meanwhile gets no answer (its caller sees none), and
   * the next lookup starts another thread */
  mgop_dns.ans.n = 0;
  snprintf(mgop_dns.ans.err, sizeof(mgop_dns.ans.err), "the resolver stopped");
  mgop_dns.answered = mgop_dns.taken = mgop_dns.asked;
  mgop_dns.started = mgop_dns.stop = 0;
  pthread_cond_broadcast(&mgop_dns.cv);
  pthread_mutex_unlock(&mgop_dns.mu);
  return NULL;
}

void mgop_dns_stop(long long wait_ms) {
  pthread_mutex_lock(&mgop_dns.mu);
  mgop_thread_stop_wait(&mgop_dns.cv, &mgop_dns.mu, &mgop_dns.started, &mgop_dns.stop, wait_ms);
  pthread_mutex_unlock(&mgop_dns.mu);
}

/* Waits on the resolver (mu held) until question q is answered, or with
 * q 0 until the resolver is free to be asked (the last answer taken; not
 * past MGOP_DNS_WAIT_MS of that question's age), within the deadline and
 * shutdown: 1 when it is. */
static int mgop_dns_wait(unsigned long long q, long long deadline) {
  while (q ? mgop_dns.answered < q : mgop_dns.taken != mgop_dns.asked) {
    long long now = mgop_now_ms(), left = deadline - now;
    if (!q && now - mgop_dns.asked_ms >= MGOP_DNS_WAIT_MS) left = 0;
    if (left <= 0 || __atomic_load_n(&mgop_io_abort, __ATOMIC_RELAXED)) return 0;
    mgop_cond_wait_ms(&mgop_dns.cv, &mgop_dns.mu, left < MGOP_IO_SLICE_MS ? left : MGOP_IO_SLICE_MS);
  }
  return 1;
}

int mgop_dns_lookup(const char *host, const char *port, long long deadline, struct mgop_dns_answer *a) {
  unsigned long long q;
  if (!mgop_dns_resolve(host, port, 1, a)) return MGOP_OK; /* an address: no question to ask */
  if (strlen(host) >= sizeof(mgop_dns.host) || strlen(port) >= sizeof(mgop_dns.port))
    return mgop_seterr(MGOP_ERR_CONFIG, "cannot resolve %.80s: name too long", host);
  if (deadline < mgop_now_ms() + MGOP_DNS_WAIT_MS) deadline = mgop_now_ms() + MGOP_DNS_WAIT_MS;
  pthread_mutex_lock(&mgop_dns.mu);
  if (!mgop_dns.started) {
    mgop_dns.started = mgop_thread_detached(mgop_dns_main) == 0;
    if (!mgop_dns.started) { /* no thread: a lookup without a deadline, as before */
      pthread_mutex_unlock(&mgop_dns.mu);
      return mgop_dns_resolve(host, port, 0, a) ? mgop_seterr(MGOP_ERR_IO, "cannot resolve %s: %s", host, a->err)
                                                : MGOP_OK;
    }
  }
  if (!mgop_dns_wait(0, deadline)) {
    char earlier[sizeof(mgop_dns.host)];
    long long waited = mgop_now_ms() - mgop_dns.asked_ms;
    memcpy(earlier, mgop_dns.host, sizeof(earlier));
    pthread_mutex_unlock(&mgop_dns.mu);
    return mgop_seterr(MGOP_ERR_TIMEOUT, "cannot resolve %s: the lookup of %s before it is still unanswered after "
                       "%lld ms", host, earlier, waited);
  }
  snprintf(mgop_dns.host, sizeof(mgop_dns.host), "%s", host);
  snprintf(mgop_dns.port, sizeof(mgop_dns.port), "%s", port);
  q = ++mgop_dns.asked;
  mgop_dns.asked_ms = mgop_now_ms();
  pthread_cond_broadcast(&mgop_dns.cv);
  if (!mgop_dns_wait(q, deadline)) {
    mgop_dns.given_up = q; /* its answer frees the resolver for the next */
    pthread_mutex_unlock(&mgop_dns.mu);
    return mgop_seterr(MGOP_ERR_TIMEOUT, "cannot resolve %s: no answer from DNS in time", host);
  }
  *a = mgop_dns.ans;
  mgop_dns.taken = q;
  pthread_cond_broadcast(&mgop_dns.cv); /* a caller may be waiting to ask */
  pthread_mutex_unlock(&mgop_dns.mu);
  return a->n ? MGOP_OK : mgop_seterr(MGOP_ERR_IO, "cannot resolve %s: %s", host, a->err);
}

static int mgop_tcp_connect(const char *host, const char *port, long long deadline) {
  static _Thread_local struct mgop_dns_answer ans;
  int fd = -1, r, last_errno = 0;
  if ((r = mgop_dns_lookup(host, port, deadline, &ans))) return r;
  for (int i = 0; i < ans.n; i++) {
    fd = socket(ans.family[i], SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) continue;
    r = connect(fd, (const struct sockaddr *)&ans.addr[i], ans.len[i]);
    if (r < 0 && errno == EINPROGRESS) {
      int err = 0;
      socklen_t len = sizeof(err);
      if (mgop_wait_fd(fd, POLLOUT, deadline) == MGOP_OK && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
          err == 0)
        r = 0;
      else
        last_errno = err ? err : ETIMEDOUT;
    } else if (r < 0) {
      last_errno = errno;
    }
    if (r == 0) break;
    close(fd);
    fd = -1;
  }
  if (fd < 0 && ans.total > ans.n)
    return mgop_seterr(MGOP_ERR_IO, "cannot connect to %s:%s: %s (tried the first %d of its %d addresses)", host,
                       port, strerror(last_errno), ans.n, ans.total);
  if (fd < 0) return mgop_seterr(MGOP_ERR_IO, "cannot connect to %s:%s: %s", host, port, strerror(last_errno));
  mgop_sock_tune(fd);
  return fd;
}

int mgop_conn_open(struct mgop_conn *c, struct mgop_tls *tls, const struct mgop_kubecfg *cfg, long long deadline) {
  int r, fd;
  mgop_conn_close(c);
  fd = mgop_tcp_connect(cfg->host, cfg->port, deadline);
  if (fd < 0) return fd;
  c->fd = fd;
  if (strcmp(cfg->scheme, "https") != 0) return MGOP_OK;
  mbedtls_ssl_init(&c->ssl);
  c->ssl_init = 1;
  c->tls_on = 1;
  if ((r = mbedtls_ssl_setup(&c->ssl, &tls->conf))) {
    mgop_conn_close(c);
    return mgop_tls_fail(r, "TLS setup");
  }
  /* The name to verify (and send as SNI): tls-server-name, else the host,
   * DNS name or IP literal; mbedTLS matches the latter to iPAddress SANs. */
  r = mbedtls_ssl_set_hostname(&c->ssl, cfg->tls_server_name[0] ? cfg->tls_server_name : cfg->host);
  if (r) {
    mgop_conn_close(c);
    return mgop_tls_fail(r, "TLS hostname");
  }
  mbedtls_ssl_set_bio(&c->ssl, &c->fd, mgop_fd_send, mgop_fd_recv, NULL);
  c->sess_key = mgop_tls_sess_key(tls, cfg);
  c->offered = c->verified = c->brings = 0;
  mbedtls_ssl_set_verify(&c->ssl, mgop_tls_mark_verified, c);
  mgop_tls_sess_offer(c, deadline);
  while ((r = mbedtls_ssl_handshake(&c->ssl)) != 0) {
    if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
      if (mgop_wait_fd(c->fd, r == MBEDTLS_ERR_SSL_WANT_READ ? POLLIN : POLLOUT, deadline)) {
        mgop_conn_close(c);
        return mgop_seterr(MGOP_ERR_TIMEOUT, "TLS handshake with %s:%s timed out", cfg->host, cfg->port);
      }
      continue;
    }
    {
      uint32_t flags = mbedtls_ssl_get_verify_result(&c->ssl);
      char vinfo[256] = "";
      if (flags && flags != (uint32_t)-1) mbedtls_x509_crt_verify_info(vinfo, sizeof(vinfo), "", flags);
      if (c->offered) mgop_tls_sess_keep(c, 1);
      mgop_conn_close(c);
      if (vinfo[0]) {
        size_t n = strlen(vinfo);
        if (n && vinfo[n - 1] == '\n') vinfo[n - 1] = 0;
        return mgop_seterr(MGOP_ERR_TLS, "API server %s:%s certificate rejected: %s; check certificate-authority "
                                         "and tls-server-name", cfg->host, cfg->port, vinfo);
      }
      return mgop_tls_fail(r, "TLS handshake");
    }
  }
  if (c->offered && !c->verified && !cfg->insecure) __atomic_add_fetch(&mgop_tls_sess.resumed, 1, __ATOMIC_RELAXED);
  else __atomic_add_fetch(&mgop_tls_sess.full, 1, __ATOMIC_RELAXED);
  return MGOP_OK;
}

int mgop_conn_open_ahead(struct mgop_conn *c, struct mgop_tls *tls, const struct mgop_kubecfg *cfg, long long deadline) {
  uint64_t key = mgop_tls_sess_key(tls, cfg);
  int ready = strcmp(cfg->scheme, "https") != 0;
  pthread_mutex_lock(&mgop_tls_sess.mu);
  while (!ready) {
    long long now = mgop_now_ms();
    int i = mgop_tls_sess_slot(key, now);
    if ((ready = i >= 0 && mgop_tls_sess.slot[i].used) || now >= deadline) break;
    mgop_cond_wait_ms(&mgop_tls_sess.ticket, &mgop_tls_sess.mu, deadline - now);
  }
  pthread_mutex_unlock(&mgop_tls_sess.mu);
  return ready && mgop_conn_open(c, tls, cfg, deadline) == MGOP_OK;
}

int mgop_conn_write(struct mgop_conn *c, const void *buf, size_t n, long long deadline) {
  const unsigned char *p = buf;
  while (n > 0) {
    int w;
    if (c->tls_on) {
      w = mbedtls_ssl_write(&c->ssl, p, n);
      if (w == MBEDTLS_ERR_SSL_WANT_WRITE || w == MBEDTLS_ERR_SSL_WANT_READ) {
        if (mgop_wait_fd(c->fd, w == MBEDTLS_ERR_SSL_WANT_READ ? POLLIN : POLLOUT, deadline))
          return MGOP_ERR_TIMEOUT;
        continue;
      }
      if (w < 0) return MGOP_ERR_IO;
    } else {
      w = mgop_fd_send(&c->fd, p, n);
      if (w == MBEDTLS_ERR_SSL_WANT_WRITE) {
        if (mgop_wait_fd(c->fd, POLLOUT, deadline)) return MGOP_ERR_TIMEOUT;
        continue;
      }
      if (w < 0) return MGOP_ERR_IO;
    }
    p += w;
    n -= (size_t)w;
  }
  return MGOP_OK;
}

int mgop_conn_read(struct mgop_conn *c, void *buf, size_t n, long long deadline) {
  for (;;) {
    int r;
    if (c->fd < 0) return MGOP_ERR_CLOSED;
    r = c->tls_on ? mbedtls_ssl_read(&c->ssl, buf, n) : mgop_fd_recv(&c->fd, buf, n);
    if (r > 0) {
      if (c->brings) mgop_tls_sess_not_coming(c); /* the server sends its tickets before any answer */
      return r;
    }
    if (r == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) { /* TLS 1.3, after the handshake */
      mgop_tls_sess_keep(c, 0);
      continue;
    }
    if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || r == MBEDTLS_ERR_NET_CONN_RESET) return MGOP_ERR_CLOSED;
    if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
      if (deadline == 0) return MGOP_ERR_AGAIN;
      if (mgop_wait_fd(c->fd, r == MBEDTLS_ERR_SSL_WANT_WRITE ? POLLOUT : POLLIN, deadline)) return MGOP_ERR_TIMEOUT;
      continue;
    }
    return MGOP_ERR_IO;
  }
}

int mgop_conn_has_buffered(struct mgop_conn *c) {
  if (c->rpos < c->rlen) return 1;
  return c->tls_on && c->fd >= 0 && mbedtls_ssl_get_bytes_avail(&c->ssl) > 0;
}

void mgop_conn_close(struct mgop_conn *c) {
  mgop_tls_sess_not_coming(c);
  if (c->ssl_init) {
    mbedtls_ssl_free(&c->ssl);
    c->ssl_init = 0;
  }
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->tls_on = 0;
  c->rpos = c->rlen = 0;
  c->reused = 0;
}

/* --- chunked transfer decoding ----------------------------------------- */
void mgop_chunked_init(struct mgop_chunked *d) {
  d->state = MGOP_CH_SIZE;
  d->remaining = 0;
  d->digits = 0;
}

long mgop_chunked_decode(struct mgop_chunked *d, const unsigned char *in, size_t n, unsigned char *out,
                         size_t *outn) {
  size_t i = 0, o = 0;
  while (i < n && d->state != MGOP_CH_DONE) {
    unsigned char c = in[i];
    switch (d->state) {
      case MGOP_CH_SIZE: {
        int h = mgop_hexval(c);
        if (h >= 0) {
          if (++d->digits > 15) return MGOP_ERR_HTTP; /* > 2^60: not a real chunk */
          d->remaining = (d->remaining << 4) | (uint64_t)h;
          i++;
        } else if (d->digits == 0) {
          return MGOP_ERR_HTTP;
        } else if (c == ';' || c == ' ' || c == '\t') {
          d->state = MGOP_CH_EXT;
          i++;
        } else if (c == '\r') {
          d->state = MGOP_CH_SIZE_LF;
          i++;
        } else if (c == '\n') {
          i++;
          goto size_done;
        } else {
          return MGOP_ERR_HTTP;
        }
        break;
      }
      case MGOP_CH_EXT: /* chunk extensions are ignored */
        if (c == '\r') d->state = MGOP_CH_SIZE_LF;
        else if (c == '\n') { i++; goto size_done; }
        i++;
        break;
      case MGOP_CH_SIZE_LF:
        if (c != '\n') return MGOP_ERR_HTTP;
        i++;
      size_done:
        d->digits = 0;
        d->state = d->remaining ? MGOP_CH_DATA : MGOP_CH_TRAILER;
        break;
      case MGOP_CH_DATA: {
        size_t take = n - i;
        if ((uint64_t)take > d->remaining) take = (size_t)d->remaining;
        if (out + o != in + i) memmove(out + o, in + i, take);
        o += take;
        i += take;
        d->remaining -= take;
        if (d->remaining == 0) d->state = MGOP_CH_DATA_CR;
        break;
      }
      case MGOP_CH_DATA_CR:
        if (c == '\r') d->state = MGOP_CH_DATA_LF;
        else if (c == '\n') d->state = MGOP_CH_SIZE;
        else return MGOP_ERR_HTTP;
        i++;
        break;
      case MGOP_CH_DATA_LF:
        if (c != '\n') return MGOP_ERR_HTTP;
        d->state = MGOP_CH_SIZE;
        i++;
        break;
      case MGOP_CH_TRAILER: /* start of a trailer line, or the final CRLF */
        if (c == '\r') d->state = MGOP_CH_END_LF;
        else if (c == '\n') d->state = MGOP_CH_DONE;
        else d->state = MGOP_CH_TRAILER_LINE;
        i++;
        break;
      case MGOP_CH_TRAILER_LINE:
        if (c == '\n') d->state = MGOP_CH_TRAILER;
        i++;
        break;
      case MGOP_CH_END_LF:
        if (c != '\n') return MGOP_ERR_HTTP;
        d->state = MGOP_CH_DONE;
        i++;
        break;
      default: return MGOP_ERR_HTTP;
    }
  }
  *outn = o;
  return (long)i;
}

/* --- response head ------------------------------------------------------ */
static int mgop_hdr_name_eq(const char *a, size_t n, const char *b) {
  if (strlen(b) != n) return 0;
  for (size_t i = 0; i < n; i++) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = (char)(x + 32);
    if (y >= 'A' && y <= 'Z') y = (char)(y + 32);
    if (x != y) return 0;
  }
  return 1;
}

static int mgop_ci_contains(const char *v, size_t n, const char *needle) {
  size_t m = strlen(needle);
  for (size_t i = 0; i + m <= n; i++)
    if (mgop_hdr_name_eq(v + i, m, needle)) return 1;
  return 0;
}

int mgop_http_parse_head(const char *buf, size_t n, struct mgop_http_resp *r, int head_request) {
  const char *p = buf, *end = buf + n, *eol;
  memset(r, 0, sizeof(*r));
  r->content_length = -1;
  r->retry_after_s = -1;
  mgop_chunked_init(&r->ch);
  eol = memchr(p, '\n', (size_t)(end - p));
  if (!eol || eol - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ')
    return mgop_seterr(MGOP_ERR_HTTP, "malformed HTTP status line");
  if (p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9')
    return mgop_seterr(MGOP_ERR_HTTP, "malformed HTTP status code");
  r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
  if (p[7] == '0') r->close = 1; /* HTTP/1.0 closes by default */
  p = eol + 1;
  while (p < end) {
    const char *colon, *v, *ve;
    eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) return mgop_seterr(MGOP_ERR_HTTP, "malformed HTTP header line");
    ve = eol;
    if (ve > p && ve[-1] == '\r') ve--;
    if (ve == p) break; /* blank line: end of head */
    colon = memchr(p, ':', (size_t)(ve - p));
    if (!colon || colon == p) return mgop_seterr(MGOP_ERR_HTTP, "malformed HTTP header line");
    v = colon + 1;
    while (v < ve && (*v == ' ' || *v == '\t')) v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    if (mgop_hdr_name_eq(p, (size_t)(colon - p), "content-length")) {
      long long cl = 0;
      if (v == ve) return mgop_seterr(MGOP_ERR_HTTP, "empty Content-Length");
      for (const char *q = v; q < ve; q++) {
        if (*q < '0' || *q > '9' || cl > (1LL << 50)) return mgop_seterr(MGOP_ERR_HTTP, "bad Content-Length");
        cl = cl * 10 + (*q - '0');
      }
      if (r->content_length >= 0 && r->content_length != cl)
        return mgop_seterr(MGOP_ERR_HTTP, "conflicting Content-Length headers");
      r->content_length = cl;
    } else if (mgop_hdr_name_eq(p, (size_t)(colon - p), "transfer-encoding")) {
      if (mgop_ci_contains(v, (size_t)(ve - v), "chunked")) r->chunked = 1;
    } else if (mgop_hdr_name_eq(p, (size_t)(colon - p), "connection")) {
      if (mgop_ci_contains(v, (size_t)(ve - v), "close")) r->close = 1;
      if (mgop_ci_contains(v, (size_t)(ve - v), "keep-alive")) r->close = 0;
    } else if (mgop_hdr_name_eq(p, (size_t)(colon - p), "retry-after")) {
      int s = 0, ok = v < ve;
      for (const char *q = v; q < ve; q++) {
        if (*q < '0' || *q > '9' || s > 86400) { ok = 0; break; }
        s = s * 10 + (*q - '0');
      }
      if (ok) r->retry_after_s = s;
    } else if (mgop_hdr_name_eq(p, (size_t)(colon - p), "content-type")) {
      snprintf(r->content_type, sizeof(r->content_type), "%.*s", (int)(ve - v), v);
    }
    p = eol + 1;
  }
  if (head_request || r->status == 204 || r->status == 304 || r->status < 200) r->no_body = 1;
  if (r->chunked) r->content_length = -1; /* RFC 9112: chunked wins */
  r->body_left = r->content_length;
  if (r->no_body || r->content_length == 0) r->body_done = 1;
  return MGOP_OK;
}

static const unsigned char *mgop_find_head_end(const unsigned char *p, size_t n) {
  for (size_t i = 0; i + 1 < n; i++) {
    if (p[i] == '\n' && p[i + 1] == '\n') return p + i + 2;
    if (p[i] == '\n' && i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n') return p + i + 3;
  }
  return NULL;
}

static void mgop_rbuf_compact(struct mgop_conn *c) {
  if (c->rpos == 0) return;
  memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
  c->rlen -= c->rpos;
  c->rpos = 0;
}

int mgop_http_read_head(struct mgop_conn *c, struct mgop_http_resp *r, long long deadline) {
  for (;;) {
    const unsigned char *he = mgop_find_head_end(c->rbuf + c->rpos, c->rlen - c->rpos);
    int n;
    if (he) {
      size_t hn = (size_t)(he - (c->rbuf + c->rpos));
      int rc = mgop_http_parse_head((const char *)c->rbuf + c->rpos, hn, r, 0);
      c->rpos += hn;
      return rc;
    }
    mgop_rbuf_compact(c);
    if (c->rlen == sizeof(c->rbuf)) return mgop_seterr(MGOP_ERR_TOOBIG, "HTTP response head over %d bytes",
                                                        MGOP_HTTP_RBUF);
    n = mgop_conn_read(c, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen, deadline);
    if (n < 0) return n;
    c->rlen += (size_t)n;
  }
}

int mgop_http_read_body(struct mgop_conn *c, struct mgop_http_resp *r, mgop_sink_fn sink, void *ctx,
                        long long deadline) {
  size_t budget = 4 * sizeof(c->rbuf); /* per call when non-blocking: be fair to other streams */
  while (!r->body_done) {
    if (c->rpos < c->rlen) {
      unsigned char *p = c->rbuf + c->rpos;
      size_t avail = c->rlen - c->rpos, outn = 0;
      int rc = MGOP_OK;
      if (r->chunked) {
        long used = mgop_chunked_decode(&r->ch, p, avail, p, &outn);
        if (used < 0) return mgop_seterr(MGOP_ERR_HTTP, "malformed chunked encoding");
        c->rpos += (size_t)used;
        if (outn) rc = sink(ctx, (const char *)p, outn);
        if (r->ch.state == MGOP_CH_DONE) r->body_done = 1;
      } else {
        size_t take = avail;
        if (r->body_left >= 0 && (long long)take > r->body_left) take = (size_t)r->body_left;
        c->rpos += take;
        if (r->body_left >= 0) r->body_left -= (long long)take;
        rc = sink(ctx, (const char *)p, take);
        if (r->body_left == 0) r->body_done = 1;
      }
      if (rc) return rc;
      continue;
    }
    c->rpos = c->rlen = 0;
    if (deadline == 0 && budget == 0) return MGOP_ERR_AGAIN;
    {
      int n = mgop_conn_read(c, c->rbuf, sizeof(c->rbuf), deadline);
      if (n == MGOP_ERR_CLOSED && !r->chunked && r->content_length < 0) {
        r->body_done = 1; /* body delimited by close */
        r->close = 1;
        break;
      }
      if (n < 0) return n;
      c->rlen = (size_t)n;
      budget = budget > (size_t)n ? budget - (size_t)n : 0;
    }
  }
  return MGOP_OK;
}

/* --- line splitter ------------------------------------------------------- */
void mgop_lines_init(struct mgop_lines *l, char *buf, size_t cap, int (*on_line)(void *, char *, size_t),
                     void *ctx) {
  l->buf = buf;
  l->cap = cap;
  l->len = 0;
  l->skipping = 0;
  l->overlong = 0;
  l->on_line = on_line;
  l->ctx = ctx;
}

int mgop_lines_feed(void *lines, const char *data, size_t n) {
  struct mgop_lines *l = lines;
  while (n > 0) {
    const char *nl = memchr(data, '\n', n);
    size_t seg = nl ? (size_t)(nl - data) : n;
    if (!l->skipping) {
      if (seg > l->cap - 1 - l->len) {
        l->skipping = 1; /* one event larger than our bound: drop it whole */
        l->len = 0;
      } else {
        memcpy(l->buf + l->len, data, seg);
        l->len += seg;
      }
    }
    if (!nl) break;
    if (l->skipping) {
      l->skipping = 0;
      l->overlong++;
    } else if (l->len > 0) {
      int rc;
      l->buf[l->len] = 0;
      rc = l->on_line(l->ctx, l->buf, l->len);
      l->len = 0;
      if (rc) return rc;
    }
    data = nl + 1;
    n -= seg + 1;
  }
  return MGOP_OK;
}

/* ======================================================================
 * 3.6 kube
 * ==================================================================== */
static jsmntok_t mgop_tokens[MGOP_JSON_TOKENS_MAX];
static char mgop_body[MGOP_BODY_MAX];

int mgop_kube_init(struct mgop_kube *k, struct mgop_kubecfg *cfg) {
  memset(&k->stats, 0, sizeof(k->stats));
  k->cfg = cfg;
  k->last_retry_after_s = -1;
  k->timeout_ms = 0;
  k->may_write = NULL;
  k->beat_ms = NULL;
  k->peer = NULL;
  k->extra_headers = NULL;
  k->accept = NULL;
  mgop_conn_init(&k->conn);
  if (!strcmp(cfg->scheme, "https")) return mgop_tls_client_init(&k->tls, cfg);
  memset(&k->tls, 0, sizeof(k->tls));
  return MGOP_OK;
}

void mgop_kube_free(struct mgop_kube *k) {
  mgop_conn_close(&k->conn);
  mgop_tls_free(&k->tls);
}

int mgop_kube_write_head(struct mgop_kube *k, struct mgop_conn *c, const char *method, const char *path,
                         const char *content_type, size_t body_len, long long deadline) {
  char head[MGOP_HTTP_HEAD_MAX];
  struct mgop_buf b;
  const struct mgop_kubecfg *cfg = k->cfg;
  int v6 = strchr(cfg->host, ':') != NULL;
  mgop_buf_init(&b, head, sizeof(head));
  mgop_buf_printf(&b, "%s %s%s HTTP/1.1\r\nHost: %s%s%s:%s\r\n", method, cfg->path_prefix, path, v6 ? "[" : "",
                  cfg->host, v6 ? "]" : "", cfg->port);
  mgop_buf_printf(&b, "User-Agent: multigres-op/" MGOP_VERSION "\r\nAccept: %s\r\n",
                  k->accept ? k->accept : "application/json");
  if (cfg->token[0]) mgop_buf_printf(&b, "Authorization: Bearer %s\r\n", cfg->token);
  if (content_type) mgop_buf_printf(&b, "Content-Type: %s\r\n", content_type);
  if (body_len || content_type) mgop_buf_printf(&b, "Content-Length: %zu\r\n", body_len);
  if (k->extra_headers) mgop_buf_puts(&b, k->extra_headers);
  mgop_buf_puts(&b, "\r\n");
  if (b.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "request head for %s is too long", path);
  return mgop_conn_write(c, head, b.len, deadline);
}

static int mgop_sink_buf(void *ctx, const char *data, size_t n) {
  struct mgop_buf *b = ctx;
  if (b) mgop_buf_append(b, data, n); /* overflow is recorded; keep draining */
  return MGOP_OK;
}

/* The body of a 2xx response goes to `ok` when given (a streaming reader);
 * any other body, and every body without `ok`, to `out` (may be NULL). */
struct mgop_kube_sink {
  mgop_sink_fn fn;
  void *ctx;
  int rc; /* what fn returned: its message in mgop_errmsg() stands */
};

static int mgop_sink_tracked(void *ctx, const char *data, size_t n) {
  struct mgop_kube_sink *s = ctx;
  return s->rc = s->fn(s->ctx, data, n);
}

/* Opens c to k's server if it is closed; a short per-request deadline
 * bounds the connect too. */
static int mgop_kube_connect(struct mgop_kube *k, struct mgop_conn *c) {
  long long ct = k->timeout_ms > 0 && k->timeout_ms < MGOP_CONNECT_TIMEOUT_MS ? k->timeout_ms : MGOP_CONNECT_TIMEOUT_MS;
  int rc;
  if (c->fd >= 0) return MGOP_OK;
  if ((rc = mgop_conn_open(c, &k->tls, k->cfg, mgop_now_ms() + ct))) return rc;
  k->stats.reconnects++;
  return MGOP_OK;
}

static int mgop_kube_once(struct mgop_kube *k, struct mgop_conn *c, const char *method, const char *path,
                          const char *ctype, const char *body, size_t blen, struct mgop_buf *out,
                          struct mgop_kube_sink *ok, int *status, int *retryable) {
  long long deadline = mgop_now_ms() + (k->timeout_ms > 0 ? k->timeout_ms : MGOP_REQUEST_TIMEOUT_MS);
  struct mgop_http_resp resp;
  int rc, was_reused = c->fd >= 0 && c->reused;
  *retryable = 0;
  if ((rc = mgop_kube_connect(k, c))) return rc;
  rc = mgop_kube_write_head(k, c, method, path, ctype, blen, deadline);
  if (!rc && blen) rc = mgop_conn_write(c, body, blen, deadline);
  if (!rc) rc = mgop_http_read_head(c, &resp, deadline);
  if (rc) {
    /* a keep-alive connection the server closed while idle: retry on a new one */
    *retryable = was_reused && (rc == MGOP_ERR_CLOSED || rc == MGOP_ERR_IO);
    mgop_conn_close(c);
    return mgop_seterr(rc, "%s %s: %s (%s %s:%s)", method, path,
                       rc == MGOP_ERR_CLOSED || rc == MGOP_ERR_IO ? "connection lost" : mgop_err_name(rc),
                       k->peer ? k->peer : "API server", k->cfg->host, k->cfg->port);
  }
  if (out) out->len = 0, out->overflow = 0;
  if (ok && resp.status >= 200 && resp.status < 300) {
    ok->rc = MGOP_OK;
    rc = mgop_http_read_body(c, &resp, mgop_sink_tracked, ok, deadline);
  } else {
    rc = mgop_http_read_body(c, &resp, mgop_sink_buf, out, deadline);
  }
  if (rc || resp.close) mgop_conn_close(c);
  else c->reused = 1;
  if (rc && ok && ok->rc) return rc; /* the reader's own message stands */
  if (rc) return mgop_seterr(rc, "%s %s: reading the response failed: %s", method, path, mgop_err_name(rc));
  *status = resp.status;
  k->last_retry_after_s = resp.retry_after_s;
  if (out && out->overflow)
    return mgop_seterr(MGOP_ERR_TOOBIG, "%s %s: response larger than %zu bytes", method, path, out->cap);
  return MGOP_OK;
}

static int mgop_kube_exchange(struct mgop_kube *k, struct mgop_conn *c, const char *method, const char *path,
                              const char *content_type, const char *body, size_t body_len, struct mgop_buf *out,
                              struct mgop_kube_sink *ok, int *status) {
  int rc, retryable, attempt;
  int is_write = strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;
  *status = 0;
  if (is_write && k->may_write && !k->may_write())
    return mgop_seterr(MGOP_ERR_AUTH, "%s %s: not sent: this replica does not hold the Lease", method, path);
  mgop_kubecfg_reload_token(k->cfg, mgop_now_ms(), 0);
  for (attempt = 0; attempt < 3; attempt++) {
    if (__atomic_load_n(&mgop_io_abort, __ATOMIC_RELAXED) && !mgop_io_unabortable) return mgop_seterr(MGOP_ERR_TIMEOUT, "%s %s: shutting down", method, path);
    if (k->beat_ms) __atomic_store_n(k->beat_ms, mgop_now_ms(), __ATOMIC_RELAXED);
    k->stats.requests++;
    if (is_write) k->stats.writes++;
    rc = mgop_kube_once(k, c, method, path, content_type, body, body_len, out, ok, status, &retryable);
    if (rc && retryable && attempt == 0) continue;
    if (!rc && *status == 401 && k->cfg->token_file[0] && attempt < 2) {
      /* bound service-account tokens rotate: re-read and try again */
      if (mgop_kubecfg_reload_token(k->cfg, mgop_now_ms(), 1) == MGOP_OK) {
        k->stats.token_reloads++;
        continue;
      }
    }
    break;
  }
  /* 404 is an answer (the object is absent, which GETs and DELETEs ask) */
  if (rc || (*status >= 400 && *status != 404)) k->stats.errors++;
  return rc;
}

int mgop_kube_request(struct mgop_kube *k, const char *method, const char *path, const char *content_type,
                      const char *body, size_t body_len, struct mgop_buf *out, int *status) {
  return mgop_kube_exchange(k, &k->conn, method, path, content_type, body, body_len, out, NULL, status);
}

/* --- streaming LIST ------------------------------------------------------------ */
enum { MGOP_LS_BEFORE, MGOP_LS_BODY, MGOP_LS_AFTER }; /* where in the body       */
enum { MGOP_LS_FIRST, MGOP_LS_NEXT, MGOP_LS_SEP };    /* between items' elements */
#define MGOP_LS_DEPTH_MAX 100000 /* far beyond any object; keeps depth from overflowing */

void mgop_list_scan_init(struct mgop_list_scan *s, char *item, size_t cap, mgop_list_item_fn on_item, void *ctx) {
  memset(s, 0, offsetof(struct mgop_list_scan, env));
  s->item = item;
  s->cap = cap;
  s->on_item = on_item;
  s->ctx = ctx;
}

/* String and nesting state, the same for item and envelope bytes. */
static int mgop_ls_track(struct mgop_list_scan *s, char c) {
  if (s->in_str) {
    if (s->esc) s->esc = 0;
    else if (c == '\\') s->esc = 1;
    else if (c == '"') s->in_str = 0;
  } else if (c == '"') {
    s->in_str = 1;
  } else if (c == '{' || c == '[') {
    if (++s->depth > MGOP_LS_DEPTH_MAX) return mgop_seterr(MGOP_ERR_PARSE, "LIST body nested too deeply");
  } else if (c == '}' || c == ']') {
    s->depth--;
  }
  return MGOP_OK;
}

/* The item's bytes from d[0..n), in one run: at the byte that closes it,
 * or at n, copied once; a string's body is skipped to its next quote or
 * backslash without a look at each byte's meaning (list items are nearly
 * all of a LIST's bytes, and most of theirs are in strings). *used: the
 * bytes taken. */
static int mgop_ls_item_run(struct mgop_list_scan *s, const char *d, size_t n, size_t *used) {
  size_t j = 0, room = s->cap - s->len, take;
  int closed = 0, rc;
  while (j < n && !closed) {
    char c = d[j++];
    if (s->in_str && !s->esc)
      while (c != '"' && c != '\\' && j < n) c = d[j++];
    if ((rc = mgop_ls_track(s, c))) return rc;
    closed = !s->in_str && s->depth == 2;
  }
  take = j < room ? j : room;
  memcpy(s->item + s->len, d, take);
  s->len += take;
  s->total += j;
  *used = j;
  if (!closed) return MGOP_OK;
  s->in_item = 0; /* the element closed */
  s->expect = MGOP_LS_SEP;
  s->items++;
  if (s->total > s->len) s->truncated++;
  return s->on_item ? s->on_item(s->ctx, s->item, s->len, s->total > s->len) : MGOP_OK;
}

static int mgop_ls_env_byte(struct mgop_list_scan *s, char c) {
  if (s->env_len >= sizeof(s->env))
    return mgop_seterr(MGOP_ERR_TOOBIG, "LIST body outside its items is over %d bytes (MGOP_LIST_ENVELOPE_MAX)",
                       MGOP_LIST_ENVELOPE_MAX);
  s->env[s->env_len++] = c;
  return MGOP_OK;
}

/* Between the elements of items[]: whitespace and commas are dropped, so
 * the envelope keeps "items":[]. */
static int mgop_ls_items_byte(struct mgop_list_scan *s, char c) {
  if (mgop_json_ws(c)) return MGOP_OK;
  if (c == '{' && s->expect != MGOP_LS_SEP) {
    size_t used;
    s->in_item = 1;
    s->len = s->total = 0;
    return mgop_ls_item_run(s, &c, 1, &used);
  }
  if (c == ',' && s->expect == MGOP_LS_SEP) {
    s->expect = MGOP_LS_NEXT;
    return MGOP_OK;
  }
  if (c == ']' && s->expect != MGOP_LS_NEXT) {
    s->in_items = 0;
    s->depth = 1;
    return mgop_ls_env_byte(s, c);
  }
  return mgop_seterr(MGOP_ERR_PARSE, "LIST items[%lu]: byte 0x%02x where an object was expected", s->items,
                     (unsigned char)c);
}

/* A byte of the body's own object (depth 1), or of a value other than items. */
static int mgop_ls_body_byte(struct mgop_list_scan *s, char c) {
  int was_str = s->in_str, rc;
  if ((rc = mgop_ls_env_byte(s, c)) || (rc = mgop_ls_track(s, c))) return rc;
  if (s->depth == 1 && was_str && s->in_str) { /* inside a depth-1 string: maybe a key */
    if (s->key_len < sizeof(s->key)) s->key[s->key_len] = c;
    s->key_len++;
  } else if (s->depth == 1 && was_str) { /* it ended */
    s->key_items = s->key_len == 5 && !memcmp(s->key, "items", 5);
  } else if (s->depth == 1 && s->in_str) { /* it starts */
    s->key_len = 0;
  } else if (s->depth == 1 && c == ':') {
    s->val_items = s->key_items;
  } else if (s->depth == 1 && c == ',') {
    s->val_items = 0;
  } else if (s->depth == 2 && c == '[' && s->val_items) {
    s->in_items = 1;
    s->expect = MGOP_LS_FIRST;
  } else if (s->depth == 0) {
    s->state = MGOP_LS_AFTER;
  }
  return MGOP_OK;
}

int mgop_list_scan_feed(void *scan, const char *data, size_t n) {
  struct mgop_list_scan *s = scan;
  for (size_t i = 0; i < n; i++) {
    char c = data[i];
    int rc = MGOP_OK;
    if (s->state == MGOP_LS_BODY && s->in_item) {
      size_t used = 1;
      if ((rc = mgop_ls_item_run(s, data + i, n - i, &used))) return rc;
      i += used - 1; /* the loop's i++ takes the last */
      continue;
    }
    if (s->state == MGOP_LS_BODY) {
      if (s->in_items) rc = mgop_ls_items_byte(s, c);
      else rc = mgop_ls_body_byte(s, c);
    } else if (!mgop_json_ws(c)) {
      if (s->state == MGOP_LS_AFTER || c != '{')
        return mgop_seterr(MGOP_ERR_PARSE, "LIST body is not one JSON object (byte 0x%02x)", (unsigned char)c);
      s->state = MGOP_LS_BODY;
      rc = mgop_ls_body_byte(s, c);
    }
    if (rc) return rc;
  }
  return MGOP_OK;
}

int mgop_list_scan_end(struct mgop_list_scan *s, struct mgop_json *env, jsmntok_t *tok, unsigned maxtok) {
  int rc, items;
  if (s->state != MGOP_LS_AFTER) return mgop_seterr(MGOP_ERR_PARSE, "LIST body is truncated");
  if ((rc = mgop_json_parse(env, s->env, s->env_len, tok, maxtok)))
    return mgop_seterr(rc, "LIST body outside its items: %s", mgop_errmsg());
  items = mgop_json_key(env, 0, "items");
  if (!mgop_json_is(env, items, JSMN_ARRAY) && !mgop_json_is_null(env, items))
    return mgop_seterr(MGOP_ERR_TYPE, "the LIST response has no items[] list");
  return MGOP_OK;
}

/* Best effort, for the log only: the first "key":"..." in an object's bytes
 * (metadata comes first in what the API server writes). */
static void mgop_list_item_str(const char *item, size_t n, const char *key, char *out, size_t cap) {
  size_t kl = strlen(key);
  out[0] = 0;
  for (size_t i = 0; i + kl + 4 < n; i++) {
    size_t v = i + kl + 2, e;
    if (item[i] != '"' || memcmp(item + i + 1, key, kl) || item[v - 1] != '"' || item[v] != ':' ||
        item[v + 1] != '"')
      continue;
    for (e = v + 2; e < n && item[e] != '"' && item[e] != '\\' && e - v - 2 < cap - 1; e++) {}
    snprintf(out, cap, "%.*s", (int)(e - v - 2), item + v + 2);
    return;
  }
}

struct mgop_list_ctx {
  const char *path;
  mgop_item_fn fn;
  void *ctx;
  unsigned long skipped;
  pthread_mutex_t *serial;
};

static int mgop_list_on_item_locked(struct mgop_list_ctx *lc, char *item, size_t n, int truncated);
static int mgop_list_on_item(void *ctx, char *item, size_t n, int truncated) {
  struct mgop_list_ctx *lc = ctx;
  int rc;
  /* outside the lock: item is this connection's own buffer, so the lists
   * beside each other drop in parallel (and tokens are then fewer) */
  if (!truncated) n = mgop_json_drop_object_managed_fields(item, n);
  if (!lc->serial) return mgop_list_on_item_locked(lc, item, n, truncated);
  pthread_mutex_lock(lc->serial);
  rc = mgop_list_on_item_locked(lc, item, n, truncated);
  pthread_mutex_unlock(lc->serial);
  return rc;
}

static int mgop_list_on_item_locked(struct mgop_list_ctx *lc, char *item, size_t n, int truncated) {
  struct mgop_json j;
  int rc = truncated ? mgop_seterr(MGOP_ERR_TOOBIG, "larger than %d bytes (MGOP_BODY_MAX)", MGOP_BODY_MAX)
                     : mgop_json_parse(&j, item, n, mgop_tokens, MGOP_JSON_TOKENS_MAX);
  if (rc == MGOP_ERR_TOOBIG) { /* this object only: the others still count */
    char ns[64], name[254];
    mgop_list_item_str(item, n, "namespace", ns, sizeof(ns));
    mgop_list_item_str(item, n, "name", name, sizeof(name));
    MGOP_LOG(MGOP_ERROR, ("LIST %s: object %s/%s skipped: %s%s; the operator cannot see it until it shrinks",
                          lc->path, ns, name, mgop_errmsg(), truncated ? "" : " (MGOP_JSON_TOKENS_MAX)"));
    lc->skipped++;
    return MGOP_OK;
  }
  if (rc) return mgop_seterr(rc, "LIST %s: an item: %s", lc->path, mgop_errmsg());
  return lc->fn ? lc->fn(lc->ctx, &j, 0) : MGOP_OK;
}

/* Items of each page go to fn as they arrive; follows continue. */
int mgop_kube_list(struct mgop_kube *k, struct mgop_conn *c, const char *path, mgop_item_fn fn, void *ctx, char *rv,
                   size_t rvcap, unsigned long *skipped) {
  return mgop_kube_list_with(k, c, path, fn, ctx, rv, rvcap, skipped, NULL);
}

/* The page's envelope: its continue token, or on the last page (cont
 * empty) the list's resourceVersion. */
static int mgop_list_page_end(struct mgop_list_scan *scan, const char *path, char *cont, size_t ccap, char *rv,
                              size_t rvcap) {
  struct mgop_json env;
  int rc = mgop_list_scan_end(scan, &env, mgop_tokens, MGOP_JSON_TOKENS_MAX);
  if (rc) return mgop_seterr(rc, "GET %s: %s", path, mgop_errmsg());
  if (mgop_json_path_str(&env, 0, "metadata.continue", cont, ccap) != MGOP_OK || !cont[0]) {
    cont[0] = 0;
    mgop_json_path_str(&env, 0, "metadata.resourceVersion", rv, rvcap);
  }
  return MGOP_OK;
}

int mgop_kube_list_with(struct mgop_kube *k, struct mgop_conn *c, const char *path, mgop_item_fn fn, void *ctx,
                        char *rv, size_t rvcap, unsigned long *skipped, const struct mgop_list_bufs *b) {
  static struct mgop_list_scan own_scan; /* mgop_kube_list's: its envelope buffer stays off the stack */
  const struct mgop_list_bufs own = {&own_scan, mgop_body, sizeof(mgop_body), b ? b->serial : NULL,
                                     b ? b->any_version : 0};
  char url[2048], cont[1024] = "";
  int status, rc, restarted = 0;
  const char *sep = strchr(path, '?') ? "&" : "?";
  struct mgop_list_ctx lc = {path, fn, ctx, 0, own.serial};
  struct mgop_list_scan *scan;
  if (!b || !b->scan) b = &own;
  scan = b->scan;
  if (rvcap) rv[0] = 0;
  if (skipped) *skipped = 0;
  if (!c) c = &k->conn;
  for (;;) {
    struct mgop_kube_sink ok = {mgop_list_scan_feed, scan, 0};
    struct mgop_buf ub;
    mgop_buf_init(&ub, url, sizeof(url));
    mgop_buf_printf(&ub, "%s%slimit=%d", path, sep, MGOP_LIST_PAGE);
    if (cont[0]) mgop_buf_printf(&ub, "&continue=%s", cont);
    else if (b->any_version) mgop_buf_printf(&ub, "&resourceVersion=0");
    if (ub.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "LIST URL for %s is too long", path);
    mgop_buf_cstr(&ub);
    mgop_list_scan_init(scan, b->item, b->cap, mgop_list_on_item, &lc);
    rc = mgop_kube_exchange(k, c, "GET", url, NULL, NULL, 0, NULL, &ok, &status);
    if (rc) return rc;
    if (status == 410 && cont[0] && !restarted) { /* continue token expired: start over once */
      cont[0] = 0;
      restarted = 1;
      continue;
    }
    if (status == 404) return mgop_seterr(MGOP_ERR_NOTFOUND, "GET %s: 404 Not Found", path);
    if (status == 401 || status == 403)
      return mgop_seterr(MGOP_ERR_AUTH, "GET %s: %d %s: grant list/watch on this resource to the operator", path,
                         status, status == 401 ? "Unauthorized" : "Forbidden");
    if (status != 200) return mgop_seterr(MGOP_ERR_STATUS, "GET %s: HTTP %d", path, status);
    if (b->serial) pthread_mutex_lock(b->serial); /* the envelope's tokens are the shared array */
    rc = mgop_list_page_end(scan, path, cont, sizeof(cont), rv, rvcap);
    if (b->serial) pthread_mutex_unlock(b->serial);
    if (rc) return rc;
    if (!cont[0]) break; /* the last page: rv only now, so a failed list leaves it empty */
    /* a continue token is URL-safe base64 already; no escaping needed */
  }
  if (skipped) *skipped = lc.skipped;
  return MGOP_OK;
}

void mgop_kube_status_message(const char *body, size_t n, char *out, size_t cap) {
  static _Thread_local jsmntok_t tok[512];
  struct mgop_json j;
  if (cap == 0) return;
  out[0] = 0;
  if (n && mgop_json_parse(&j, body, n, tok, 512) == MGOP_OK &&
      mgop_json_path_str(&j, 0, "message", out, cap) == MGOP_OK && out[0])
    return;
  snprintf(out, cap, "%.*s", (int)(n > 200 ? 200 : n), body);
}

static char mgop_small_body[64 * 1024]; /* apply/patch/delete responses */
static jsmntok_t mgop_small_tok[4096];     /* the loop's, to read mgop_small_body */

int mgop_kube_apply(struct mgop_kube *k, const char *item_path, const char *json, size_t n, struct mgop_applied *res,
                    int *status) {
  return mgop_kube_apply_into(k, item_path, json, n, res, status, mgop_small_body, sizeof(mgop_small_body),
                              mgop_small_tok, 4096);
}

int mgop_kube_apply_into(struct mgop_kube *k, const char *item_path, const char *json, size_t n,
                         struct mgop_applied *res, int *status, char *body, size_t cap, jsmntok_t *tok, unsigned ntok) {
  char path[1024];
  struct mgop_buf out;
  int rc;
  snprintf(path, sizeof(path), "%s?fieldManager=multigres-operator&force=true", item_path);
  mgop_buf_init(&out, body, cap);
  rc = mgop_kube_exchange(k, &k->conn, "PATCH", path, "application/apply-patch+yaml", json, n, &out, NULL, status);
  if (rc && rc != MGOP_ERR_TOOBIG) return rc;
  if (*status == 200 || *status == 201) {
    struct mgop_json j;
    memset(res, 0, sizeof(*res));
    res->replicas = -1;
    if (!out.overflow && mgop_json_parse(&j, out.p, out.len, tok, ntok) == MGOP_OK) {
      mgop_json_path_str(&j, 0, "metadata.resourceVersion", res->rv, sizeof(res->rv));
      mgop_json_path_str(&j, 0, "metadata.uid", res->uid, sizeof(res->uid));
      mgop_json_i64(&j, mgop_json_path(&j, 0, "metadata.generation"), &res->generation);
      mgop_json_i64(&j, mgop_json_path(&j, 0, "spec.replicas"), &res->replicas);
    }
    return MGOP_OK;
  }
  {
    char msg[400];
    mgop_kube_status_message(out.p, out.len, msg, sizeof(msg));
    return mgop_seterr(MGOP_ERR_STATUS, "apply %s: HTTP %d: %s", item_path, *status, msg);
  }
}

/* --- the apply pool ---------------------------------------------------------- */
struct mgop_pool_worker {
  struct mgop_pool *pool;
  pthread_t thread;
  struct mgop_kubecfg cfg;           /* its own copy: its own token reloads */
  struct mgop_kube kube;
  char body[MGOP_POOL_BODY];
  jsmntok_t tok[MGOP_POOL_TOKENS];
  struct mgop_list_scan scan;        /* a list job's, with item below      */
  char *item;                        /* MGOP_BODY_MAX, allocated at init:
                                      * only what items touch is resident */
};

/* One job on client k: an apply, or its run function on connection c. */
static void mgop_pool_run_one(struct mgop_kube *k, struct mgop_conn *c, struct mgop_pool_job *j,
                              struct mgop_pool_worker *w) {
  j->status = 0;
  j->err[0] = 0;
  if (j->run)
    j->rc = j->run(j->arg, k, c, w ? &w->scan : NULL, w ? w->item : NULL, w ? MGOP_BODY_MAX : 0);
  else if (j->method) {
    char mem[4096]; /* the caller's share; only a refusal's message is read from the (bounded) answer */
    struct mgop_buf out;
    mgop_buf_init(&out, w ? w->body : mem, w ? sizeof(w->body) : sizeof(mem));
    j->rc = mgop_kube_request(k, j->method, j->path, "application/json", j->json, j->len, &out, &j->status);
    if (!j->rc && (j->status < 200 || j->status > 299)) mgop_kube_status_message(out.p, out.len, j->err, sizeof(j->err));
  } else if (j->status_patch && w)
    j->rc = mgop_kube_patch_status_into(k, j->path, j->json, j->len, j->res.rv, &j->status, w->body, sizeof(w->body),
                                        w->tok, MGOP_POOL_TOKENS);
  else if (j->status_patch)
    j->rc = mgop_kube_patch_status(k, j->path, j->json, j->len, j->res.rv, &j->status);
  else if (w)
    j->rc = mgop_kube_apply_into(k, j->path, j->json, j->len, &j->res, &j->status, w->body, sizeof(w->body), w->tok,
                                 MGOP_POOL_TOKENS);
  else
    j->rc = mgop_kube_apply(k, j->path, j->json, j->len, &j->res, &j->status);
  if (j->rc) snprintf(j->err, sizeof(j->err), "%s", mgop_errmsg());
}

/* Takes the next job of the batch, or -1 (under the mutex). */
static int mgop_pool_take(struct mgop_pool *p) {
  if (!p->jobs || p->next >= p->njobs) return -1;
  if (++p->in_flight > p->max_in_flight) p->max_in_flight = p->in_flight;
  return p->next++;
}

static void mgop_pool_finish(struct mgop_pool *p) { /* under the mutex */
  p->in_flight--;
  if (++p->finished == p->njobs) pthread_cond_signal(&p->done);
}

static void *mgop_pool_main(void *arg) {
  struct mgop_pool_worker *w = arg;
  struct mgop_pool *p = w->pool;
  /* counted at the first job: the caller reads the stats between batches */
  int warmed = p->warm && mgop_conn_open_ahead(&w->kube.conn, &w->kube.tls, w->kube.cfg, mgop_now_ms() + MGOP_POOL_WARM_MS);
  pthread_mutex_lock(&p->mu);
  for (;;) {
    int i;
    while (!p->stop && (i = mgop_pool_take(p)) < 0) pthread_cond_wait(&p->work, &p->mu);
    if (p->stop) break;
    pthread_mutex_unlock(&p->mu);
    w->kube.stats.reconnects += (unsigned)warmed;
    warmed = 0;
    mgop_pool_run_one(&w->kube, &w->kube.conn, &p->jobs[i], w);
    pthread_mutex_lock(&p->mu);
    mgop_pool_finish(p);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

int mgop_pool_init(struct mgop_pool *p, int workers, const struct mgop_kubecfg *cfg, int (*may_write)(void),
                   long long *beat_ms) {
  memset(p, 0, sizeof(*p));
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->work, NULL);
  pthread_cond_init(&p->done, NULL);
  if (workers < 0 || workers > MGOP_POOL_WORKERS_MAX)
    return mgop_seterr(MGOP_ERR_CONFIG, "%d apply workers: between 0 and %d", workers, MGOP_POOL_WORKERS_MAX);
  if (!workers) return MGOP_OK;
  if (!(p->w = mgop_table_alloc((size_t)workers, sizeof(*p->w))))
    return mgop_seterr(MGOP_ERR_NOMEM, "cannot allocate %d apply workers", workers);
  for (int i = 0; i < workers; i++) {
    struct mgop_pool_worker *w = &p->w[i];
    w->pool = p;
    mgop_kubecfg_copy(&w->cfg, cfg);
    if (!(w->item = mgop_table_alloc(1, MGOP_BODY_MAX)) || mgop_kube_init(&w->kube, &w->cfg)) {
      int nomem = !w->item; /* the tables stay mapped, as p->w does: the process ends */
      for (int k = 0; k < i; k++) mgop_kube_free(&p->w[k].kube);
      p->nworkers = 0;
      return nomem ? mgop_seterr(MGOP_ERR_NOMEM, "apply worker %d: cannot allocate its list buffer", i + 1)
                   : mgop_seterr(MGOP_ERR_CONFIG, "apply worker %d: %s", i + 1, mgop_errmsg());
    }
    w->kube.may_write = may_write;
    w->kube.beat_ms = beat_ms;
    p->nworkers++;
  }
  return MGOP_OK;
}

int mgop_pool_start(struct mgop_pool *p) {
  pthread_attr_t attr;
  int rc = MGOP_OK;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 1024 * 1024); /* glibc carves the ~300 KiB of static TLS from it */
  for (; p->running < p->nworkers; p->running++) {
    int e = pthread_create(&p->w[p->running].thread, &attr, mgop_pool_main, &p->w[p->running]);
    if (e) {
      rc = mgop_seterr(MGOP_ERR_IO, "cannot start apply worker %d: %s", p->running + 1, strerror(e));
      break;
    }
  }
  pthread_attr_destroy(&attr);
  return rc;
}

void mgop_pool_apply(struct mgop_pool *p, struct mgop_kube *own, struct mgop_pool_job *jobs, int n) {
  mgop_pool_run(p, own, &own->conn, jobs, n);
}

void mgop_pool_run(struct mgop_pool *p, struct mgop_kube *own, struct mgop_conn *own_conn, struct mgop_pool_job *jobs,
                   int n) {
  int i;
  if (!p || !p->running || n < 2) {
    for (i = 0; i < n; i++) mgop_pool_run_one(own, own_conn, &jobs[i], NULL);
    return;
  }
  pthread_mutex_lock(&p->mu);
  p->jobs = jobs;
  p->njobs = n;
  p->next = p->finished = 0;
  pthread_cond_broadcast(&p->work);
  while ((i = mgop_pool_take(p)) >= 0) { /* the caller takes its share */
    pthread_mutex_unlock(&p->mu);
    mgop_pool_run_one(own, own_conn, &jobs[i], NULL);
    pthread_mutex_lock(&p->mu);
    mgop_pool_finish(p);
  }
  while (p->finished < p->njobs) pthread_cond_wait(&p->done, &p->mu);
  p->jobs = NULL;
  p->njobs = p->next = p->finished = 0;
  pthread_mutex_unlock(&p->mu);
}

void mgop_kube_stats_add(struct mgop_kube_stats *into, const struct mgop_kube_stats *from) {
  into->requests += from->requests;
  into->writes += from->writes;
  into->errors += from->errors;
  into->reconnects += from->reconnects;
  into->token_reloads += from->token_reloads;
}

void mgop_pool_take_stats(struct mgop_pool *p, struct mgop_kube_stats *into) {
  pthread_mutex_lock(&p->mu);
  for (int i = 0; i < p->nworkers; i++) {
    mgop_kube_stats_add(into, &p->w[i].kube.stats);
    memset(&p->w[i].kube.stats, 0, sizeof(p->w[i].kube.stats));
  }
  pthread_mutex_unlock(&p->mu);
}

void mgop_pool_stop(struct mgop_pool *p) {
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_cond_broadcast(&p->work);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->running; i++) pthread_join(p->w[i].thread, NULL);
  for (int i = 0; i < p->nworkers; i++) mgop_kube_free(&p->w[i].kube);
  p->running = p->nworkers = 0;
}

/* The resourceVersion a write's answer (the object) carries, into rv (24
 * bytes; NULL: not wanted). Empty when the answer did not fit or parse: the
 * caller then cannot tell the write's watch echo apart, which only costs a
 * turn. */
static void mgop_kube_written_rv_tok(const struct mgop_buf *out, char *rv, jsmntok_t *tok, unsigned ntok) {
  struct mgop_json j;
  if (!rv) return;
  rv[0] = 0;
  if (!out->overflow && mgop_json_parse(&j, out->p, out->len, tok, ntok) == MGOP_OK)
    mgop_json_path_str(&j, 0, "metadata.resourceVersion", rv, 24);
}

static void mgop_kube_written_rv(const struct mgop_buf *out, char *rv) {
  mgop_kube_written_rv_tok(out, rv, mgop_small_tok, 4096);
}

int mgop_kube_patch_status(struct mgop_kube *k, const char *item_path, const char *json, size_t n, char *rv,
                           int *status) {
  return mgop_kube_patch_status_into(k, item_path, json, n, rv, status, mgop_small_body, sizeof(mgop_small_body),
                                     mgop_small_tok, 4096);
}

int mgop_kube_patch_status_into(struct mgop_kube *k, const char *item_path, const char *json, size_t n, char *rv,
                                int *status, char *body, size_t cap, jsmntok_t *tok, unsigned ntok) {
  char path[1024], msg[400];
  struct mgop_buf out;
  int rc;
  snprintf(path, sizeof(path), "%s/status", item_path);
  mgop_buf_init(&out, body, cap);
  if (rv) rv[0] = 0;
  rc = mgop_kube_request(k, "PATCH", path, "application/merge-patch+json", json, n, &out, status);
  if (rc && rc != MGOP_ERR_TOOBIG) return rc;
  if (*status == 200) {
    mgop_kube_written_rv_tok(&out, rv, tok, ntok);
    return MGOP_OK;
  }
  mgop_kube_status_message(out.p, out.len, msg, sizeof(msg));
  return mgop_seterr(MGOP_ERR_STATUS, "status of %s: HTTP %d: %s", item_path, *status, msg);
}

int mgop_kube_merge_patch(struct mgop_kube *k, const char *item_path, const char *manager, const char *json, size_t n,
                          char *rv, int *status) {
  char path[1024], msg[400];
  struct mgop_buf out;
  int rc;
  snprintf(path, sizeof(path), "%s?fieldManager=%s", item_path, manager);
  mgop_buf_init(&out, mgop_small_body, sizeof(mgop_small_body));
  if (rv) rv[0] = 0;
  rc = mgop_kube_request(k, "PATCH", path, "application/merge-patch+json", json, n, &out, status);
  if (rc && rc != MGOP_ERR_TOOBIG) return rc;
  if (*status == 200) {
    mgop_kube_written_rv(&out, rv);
    return MGOP_OK;
  }
  if (*status == 404) return MGOP_ERR_NOTFOUND;
  mgop_kube_status_message(out.p, out.len, msg, sizeof(msg));
  return mgop_seterr(MGOP_ERR_STATUS, "patch %s: HTTP %d: %s", item_path, *status, msg);
}

int mgop_kube_get(struct mgop_kube *k, const char *item_path, struct mgop_buf *out, int *status) {
  int rc = mgop_kube_request(k, "GET", item_path, NULL, NULL, 0, out, status);
  if (rc) return rc;
  if (*status == 200) {
    if (!out->overflow) out->len = mgop_json_drop_managed_fields(out->p, out->len);
    return MGOP_OK;
  }
  if (*status == 404) return MGOP_ERR_NOTFOUND;
  {
    char msg[400];
    mgop_kube_status_message(out->p, out->len, msg, sizeof(msg));
    return mgop_seterr(MGOP_ERR_STATUS, "GET %s: HTTP %d: %s", item_path, *status, msg);
  }
}

int mgop_kube_get_pipelined(struct mgop_kube *k, const char *const *paths, int n, struct mgop_buf *out,
                            mgop_get_each_fn each, void *ctx, int *answered) {
  long long deadline = mgop_now_ms() + (k->timeout_ms > 0 ? k->timeout_ms : MGOP_REQUEST_TIMEOUT_MS);
  struct mgop_conn *c = &k->conn;
  int rc = MGOP_OK, stop = 0, i;
  *answered = 0;
  mgop_kubecfg_reload_token(k->cfg, mgop_now_ms(), 0);
  if ((rc = mgop_kube_connect(k, c))) return rc;
  for (i = 0; i < n && !rc; i++) rc = mgop_kube_write_head(k, c, "GET", paths[i], NULL, 0, deadline);
  k->stats.requests += (unsigned long long)i;
  for (i = 0; i < n && !rc && !stop; i++) {
    struct mgop_http_resp resp;
    out->len = 0, out->overflow = 0;
    if ((rc = mgop_http_read_head(c, &resp, deadline)) ||
        (rc = mgop_http_read_body(c, &resp, mgop_sink_buf, out, deadline)))
      break;
    if (resp.status >= 400 && resp.status != 404) k->stats.errors++;
    *answered = i + 1;
    stop = each(ctx, i, resp.status, out);
    if (resp.close && i + 1 < n && !stop) rc = MGOP_ERR_CLOSED;
    if (resp.close) mgop_conn_close(c);
  }
  if (rc || (stop && i < n)) mgop_conn_close(c); /* answers still in flight: not reusable */
  else if (c->fd >= 0) c->reused = 1;
  if (rc) return mgop_seterr(rc, "pipelined GETs: %s after %d of %d answers (%s:%s)", mgop_err_name(rc), *answered, n,
                             k->cfg->host, k->cfg->port);
  return stop;
}

int mgop_kube_delete(struct mgop_kube *k, const char *item_path, const char *propagation, const char *uid,
                     int *status) {
  char body[256], msg[400];
  struct mgop_buf out;
  int n = uid && uid[0]
              ? snprintf(body, sizeof(body), "{\"kind\":\"DeleteOptions\",\"apiVersion\":\"v1\",\"preconditions\":"
                         "{\"uid\":\"%.40s\"},\"propagationPolicy\":\"%.16s\"}", uid, propagation)
              : snprintf(body, sizeof(body), "{\"kind\":\"DeleteOptions\",\"apiVersion\":\"v1\",\"propagationPolicy\":"
                         "\"%.16s\"}", propagation);
  int rc;
  mgop_buf_init(&out, mgop_small_body, sizeof(mgop_small_body));
  rc = mgop_kube_request(k, "DELETE", item_path, "application/json", body, (size_t)n, &out, status);
  if (rc && rc != MGOP_ERR_TOOBIG) return rc;
  if (*status == 200 || *status == 202 || *status == 404) return MGOP_OK;
  mgop_kube_status_message(out.p, out.len, msg, sizeof(msg));
  return mgop_seterr(MGOP_ERR_STATUS, "DELETE %s: HTTP %d: %s", item_path, *status, msg);
}

/* --- watch ------------------------------------------------------------------ */
static int mgop_watch_on_line(void *ctx, char *line, size_t n);

void mgop_watch_init(struct mgop_watch *w, struct mgop_kube *k, const char *kind, const char *path,
                     const char *selector, mgop_event_fn fn, void *ctx) {
  memset(w, 0, offsetof(struct mgop_watch, conn));
  snprintf(w->kind, sizeof(w->kind), "%s", kind);
  snprintf(w->path, sizeof(w->path), "%s", path);
  snprintf(w->selector, sizeof(w->selector), "%s", selector ? selector : "");
  w->state = MGOP_W_LIST;
  w->backoff_ms = MGOP_BACKOFF_MIN_MS;
  w->retry_after_s = -1;
  w->kube = k;
  w->list_conn = NULL;
  w->on_event = fn;
  w->ctx = ctx;
  mgop_conn_init(&w->conn);
  mgop_lines_init(&w->lines, w->line, sizeof(w->line), mgop_watch_on_line, w);
}

void mgop_watch_close(struct mgop_watch *w) { mgop_conn_close(&w->conn); }

void mgop_watch_enable(struct mgop_watch *w) {
  if (w->state != MGOP_W_ABSENT) return;
  w->state = MGOP_W_LIST;
  w->backoff_ms = MGOP_BACKOFF_MIN_MS;
}

static void mgop_watch_backoff(struct mgop_watch *w, long long now, const char *why) {
  /* full jitter: uniform in [backoff/2, backoff] */
  int span = w->backoff_ms / 2;
  int wait = w->backoff_ms - (span > 0 ? rand() % (span + 1) : 0);
  char f[512];
  if (w->retry_after_s > 0) { /* the server asked for a pause: honour it, jittered up */
    long long ra = (long long)w->retry_after_s * 1000 + rand() % 250;
    if (ra > MGOP_BACKOFF_MAX_MS) ra = MGOP_BACKOFF_MAX_MS;
    if (ra > wait) wait = (int)ra;
    w->retry_after_s = -1;
  }
  mgop_watch_close(w);
  w->state = MGOP_W_BACKOFF;
  w->next_ms = now + wait;
  w->backoff_ms = w->backoff_ms * 2 > MGOP_BACKOFF_MAX_MS ? MGOP_BACKOFF_MAX_MS : w->backoff_ms * 2;
  {
    struct mgop_buf b;
    mgop_buf_init(&b, f, sizeof(f));
    mgop_buf_printf(&b, "\"kind\":\"%s\",\"retryInMs\":%d,\"error\":\"", w->kind, wait);
    mgop_json_escape(&b, why, strlen(why));
    mgop_buf_puts(&b, "\"");
    mgop_log_fields(MGOP_WARN, "watch", "watch interrupted; retrying", mgop_buf_cstr(&b));
  }
}

static int mgop_watch_list_item(void *ctx, const struct mgop_json *j, int item) {
  struct mgop_watch *w = ctx;
  w->list_items++;
  if (w->on_event) w->on_event(w->ctx, w, "SYNC", j, item);
  return MGOP_OK;
}

static void mgop_watch_event_locked(struct mgop_watch *w, const char *type, pthread_mutex_t *serial) {
  if (!w->on_event) return;
  if (serial) pthread_mutex_lock(serial);
  w->on_event(w->ctx, w, type, NULL, -1);
  if (serial) pthread_mutex_unlock(serial);
}

/* The list streams over the watch's own connection, idle until the watch
 * starts, so event handlers may make requests on the shared one; or over
 * client k's connection c with buffers b (NULL: the loop's; see
 * mgop_kube_list_with). */
static int mgop_watch_do_list(struct mgop_watch *w, struct mgop_kube *k, struct mgop_conn *c,
                              const struct mgop_list_bufs *b) {
  char path[700];
  unsigned long skipped = 0;
  long long t0 = mgop_now_ms();
  int rc;
  /* a watch's first list may be the watch cache's (any version: what came
   * before is nothing); a relist must not go back before what it has seen */
  struct mgop_list_bufs first = {NULL, NULL, 0, NULL, 1};
  if (b) first = *b, first.any_version = 1;
  snprintf(path, sizeof(path), "%s%s%s", w->path, w->selector[0] ? "?" : "", w->selector);
  mgop_watch_event_locked(w, "LIST_BEGIN", b ? b->serial : NULL);
  w->list_items = 0;
  rc = mgop_kube_list_with(k, c, path, mgop_watch_list_item, w, w->rv, sizeof(w->rv), &skipped,
                           w->relists++ ? b : &first);
  mgop_watch_close(w); /* its own connection; a shared one stays open (a failed exchange closed it) */
  w->overlong += skipped;
  if (rc) w->retry_after_s = k->last_retry_after_s;
  else if (skipped) /* what the list did not show may still exist: forget nothing */
    MGOP_LOG(MGOP_WARN, ("watch %s: the list skipped %lu object%s; deletions are inferred at the next complete "
                         "list", w->kind, skipped, skipped == 1 ? "" : "s"));
  else mgop_watch_event_locked(w, "LIST_END", b ? b->serial : NULL);
  MGOP_LOG(MGOP_DEBUG, ("watch %s: listed %lu objects in %lld ms%s", w->kind, w->list_items, mgop_now_ms() - t0,
                        rc ? " (failed)" : ""));
  return rc;
}

int mgop_watch_not_served(const struct mgop_watch *w, int rc) {
  return w->optional && (rc == MGOP_ERR_NOTFOUND || (rc == MGOP_ERR_AUTH && strstr(mgop_errmsg(), ": 403 Forbidden")));
}

/* After a LIST step (rc its result, mgop_errmsg() its error): the state
 * it leaves the watch in. 1 when the caller goes on to start the stream. */
static int mgop_watch_listed(struct mgop_watch *w, int rc, long long now) {
  if (mgop_watch_not_served(w, rc)) {
    mgop_watch_close(w);
    w->rv[0] = 0;
    w->state = MGOP_W_ABSENT;
    if (rc == MGOP_ERR_NOTFOUND)
      MGOP_LOG(MGOP_INFO, ("watch %s: the API server does not serve it; not watched until it is needed", w->kind));
    else /* an older Role without the grant: the rest of the operator works */
      MGOP_LOG(MGOP_WARN, ("watch %s: forbidden (%s); not watched until it is needed: grant list and watch on it "
                           "(the release's RBAC does)", w->kind, mgop_errmsg()));
    return 0;
  }
  if (rc) {
    mgop_watch_backoff(w, now, mgop_errmsg());
    return 0;
  }
  w->state = MGOP_W_START;
  return !w->list_conn; /* with a shared one, the owner starts it when it chooses */
}

struct mgop_list_many {
  struct mgop_watch *w;
  pthread_mutex_t *serial;
};

static int mgop_watch_list_job(void *arg, struct mgop_kube *k, struct mgop_conn *c, struct mgop_list_scan *scan,
                               char *item, size_t cap) {
  struct mgop_list_many *m = arg;
  const struct mgop_list_bufs b = {scan, item, cap, m->serial, 0}; /* the caller's share: scan NULL */
  return mgop_watch_do_list(m->w, k, c, &b);
}

int mgop_watch_list_batch(struct mgop_watch *const *ws, int n, struct mgop_pool_job *extra, int nextra,
                          pthread_mutex_t *serial, struct mgop_pool *p, long long now) {
  struct mgop_pool_job jobs[32];
  struct mgop_list_many m[32];
  struct mgop_kube *own = n > 0 ? ws[0]->kube : NULL; /* the watches share their client and list_conn */
  struct mgop_conn *own_conn = n > 0 ? ws[0]->list_conn : NULL;
  if (n < 0 || nextra < 0 || n + nextra > 32 || (n == 0 && nextra > 0))
    return mgop_seterr(MGOP_ERR_TOOBIG, "a batch of %d lists and %d other jobs (at most 32, one list at least)", n,
                       nextra);
  for (int i = 0; i < nextra; i++) jobs[i] = extra[i];
  for (int i = 0; i < n; i++) {
    m[i] = (struct mgop_list_many){ws[i], serial};
    memset(&jobs[nextra + i], 0, sizeof(jobs[0]));
    jobs[nextra + i].run = mgop_watch_list_job;
    jobs[nextra + i].arg = &m[i];
  }
  mgop_pool_run(p, own, own_conn, jobs, nextra + n);
  for (int i = 0; i < nextra; i++) extra[i] = jobs[i]; /* their results */
  for (int i = 0; i < n; i++) { /* as the step would have, in the caller's thread */
    if (jobs[nextra + i].rc) mgop_seterr(jobs[nextra + i].rc, "%s", jobs[nextra + i].err);
    mgop_watch_listed(ws[i], jobs[nextra + i].rc, now);
  }
  return MGOP_OK;
}

void mgop_watch_list_many(struct mgop_watch *const *ws, int n, struct mgop_pool *p, long long now) {
  pthread_mutex_t serial = PTHREAD_MUTEX_INITIALIZER;
  for (int from = 0; from < n; from += 32)
    mgop_watch_list_batch(ws + from, n - from < 32 ? n - from : 32, NULL, 0, &serial, p, now);
  pthread_mutex_destroy(&serial);
}

/* The server ends a watch at timeoutSeconds; jitter so watches don't
 * restart together. Long, as kube-apiserver's own default: an idle operator
 * reopens one of its watches (one per kind) about every 3 minutes
 * (client-go's 5 to 10 would be 2 a minute). A peer gone dead is found by TCP keepalive
 * (mgop_sock_tune: about a minute), not by the stream's silence, which on a
 * quiet kind lasts until the timeout: kube-apiserver's periodic bookmark
 * comes only once the kind's resourceVersion has moved on. */
static int mgop_watch_timeout_s(void) { return MGOP_WATCH_TIMEOUT_S - rand() % (MGOP_WATCH_TIMEOUT_S / 2); }

static int mgop_watch_start(struct mgop_watch *w) {
  char path[900];
  long long deadline = mgop_now_ms() + MGOP_REQUEST_TIMEOUT_MS;
  int rc;
  snprintf(path, sizeof(path), "%s?watch=1&allowWatchBookmarks=true&resourceVersion=%s&timeoutSeconds=%d%s%s",
           w->path, w->rv, w->timeout_s = mgop_watch_timeout_s(), w->selector[0] ? "&" : "", w->selector);
  mgop_kubecfg_reload_token(w->kube->cfg, mgop_now_ms(), 0);
  if ((rc = mgop_conn_open(&w->conn, &w->kube->tls, w->kube->cfg, mgop_now_ms() + MGOP_CONNECT_TIMEOUT_MS)))
    return rc;
  w->kube->stats.requests++;
  if ((rc = mgop_kube_write_head(w->kube, &w->conn, "GET", path, NULL, 0, deadline)) ||
      (rc = mgop_http_read_head(&w->conn, &w->resp, deadline)))
    return mgop_seterr(rc, "watch %s: %s while starting the watch", w->kind, mgop_err_name(rc));
  if (w->resp.status == 410) return MGOP_ERR_GONE;
  if (w->resp.status == 404 && w->optional) return MGOP_ERR_GONE; /* relist: ABSENT if it is still 404 */
  if (w->resp.status == 401 && w->kube->cfg->token_file[0]) {
    mgop_kubecfg_reload_token(w->kube->cfg, mgop_now_ms(), 1);
    return mgop_seterr(MGOP_ERR_AUTH, "watch %s: 401, token re-read", w->kind);
  }
  if (w->resp.status != 200) {
    w->retry_after_s = w->resp.retry_after_s;
    return mgop_seterr(MGOP_ERR_STATUS, "watch %s: HTTP %d", w->kind, w->resp.status);
  }
  mgop_lines_init(&w->lines, w->line, sizeof(w->line), mgop_watch_on_line, w);
  w->restarts++;
  return MGOP_OK;
}

/* One watch event: {"type":"ADDED","object":{...}}. */
static int mgop_watch_on_line(void *ctx, char *line, size_t n) {
  struct mgop_watch *w = ctx;
  struct mgop_json j;
  char type[16], rv[32];
  int obj, rc;
  rc = mgop_json_parse(&j, line, mgop_json_drop_object_managed_fields(line, n), mgop_tokens, MGOP_JSON_TOKENS_MAX);
  if (rc) {
    MGOP_LOG(MGOP_WARN, ("watch %s: undecodable event skipped, will relist: %s", w->kind, mgop_errmsg()));
    w->overlong++;
    return MGOP_ERR_PARSE;
  }
  obj = mgop_json_key(&j, 0, "object");
  if (mgop_json_path_str(&j, 0, "type", type, sizeof(type)) || !mgop_json_is(&j, obj, JSMN_OBJECT)) {
    MGOP_LOG(MGOP_WARN, ("watch %s: event without type/object skipped, will relist", w->kind));
    return MGOP_ERR_PARSE;
  }
  if (!strcmp(type, "ERROR")) {
    long long code = 0;
    mgop_json_i64(&j, mgop_json_key(&j, obj, "code"), &code);
    return code == 410 ? MGOP_ERR_GONE : mgop_seterr(MGOP_ERR_STATUS, "watch %s: ERROR event code %lld", w->kind, code);
  }
  if (mgop_json_path_str(&j, obj, "metadata.resourceVersion", rv, sizeof(rv)) == MGOP_OK && rv[0])
    memcpy(w->rv, rv, sizeof(rv));
  w->last_data_ms = mgop_now_ms();
  if (!strcmp(type, "BOOKMARK")) return MGOP_OK;
  w->events++;
  if (w->on_event) w->on_event(w->ctx, w, type, &j, obj);
  return MGOP_OK;
}

/* How long a stream may stay silent: the server ends it at its timeout */
static long long mgop_watch_idle_ms(const struct mgop_watch *w) {
  return w->timeout_s * 1000LL + MGOP_WATCH_GRACE_MS;
}

int mgop_watch_step(struct mgop_watch *w, long long now) {
  int rc;
  switch (w->state) {
    case MGOP_W_BACKOFF:
      if (now < w->next_ms) return MGOP_OK;
      w->state = w->rv[0] ? MGOP_W_START : MGOP_W_LIST;
      return mgop_watch_step(w, now);
    case MGOP_W_ABSENT: return MGOP_OK;
    case MGOP_W_LIST:
      rc = mgop_watch_do_list(w, w->kube, w->list_conn ? w->list_conn : &w->conn, NULL);
      if (!mgop_watch_listed(w, rc, now)) return w->state == MGOP_W_BACKOFF ? rc : MGOP_OK;
      MGOP_FALLTHROUGH;
    case MGOP_W_START:
      rc = mgop_watch_start(w);
      if (rc == MGOP_ERR_GONE) {
        mgop_watch_close(w);
        w->rv[0] = 0;
        w->state = MGOP_W_LIST; /* the loop relists on its next turn */
        return MGOP_OK;
      }
      if (rc) {
        mgop_watch_backoff(w, now, mgop_errmsg());
        return rc;
      }
      w->state = MGOP_W_STREAM;
      w->last_data_ms = mgop_now_ms();
      w->backoff_ms = MGOP_BACKOFF_MIN_MS;
      MGOP_FALLTHROUGH; /* the first events may already be buffered */
    case MGOP_W_STREAM: {
      unsigned long before = w->lines.overlong;
      rc = mgop_http_read_body(&w->conn, &w->resp, mgop_lines_feed, &w->lines, 0);
      if (w->lines.overlong != before) {
        w->overlong += w->lines.overlong - before;
        rc = MGOP_ERR_TOOBIG;
      }
      if (rc == MGOP_ERR_AGAIN) {
        if (now - w->last_data_ms <= mgop_watch_idle_ms(w)) return MGOP_OK;
        mgop_watch_backoff(w, now, "not ended by the server after its timeoutSeconds");
        return MGOP_ERR_TIMEOUT;
      }
      w->last_data_ms = now;
      if (rc == MGOP_OK) { /* server ended the watch (timeoutSeconds): resume from rv */
        mgop_watch_close(w);
        w->state = MGOP_W_START;
        return MGOP_OK;
      }
      if (rc == MGOP_ERR_GONE || rc == MGOP_ERR_TOOBIG || rc == MGOP_ERR_PARSE) {
        /* history is gone, or we dropped an event: only a relist is safe */
        mgop_watch_close(w);
        w->rv[0] = 0;
        w->state = MGOP_W_LIST;
        return MGOP_OK;
      }
      mgop_watch_backoff(w, now, rc == MGOP_ERR_CLOSED ? "connection closed mid-stream" : mgop_err_name(rc));
      return rc;
    }
  }
  return MGOP_OK;
}

int mgop_watch_fd(const struct mgop_watch *w) { return w->state == MGOP_W_STREAM ? w->conn.fd : -1; }

long long mgop_watch_wake_ms(const struct mgop_watch *w, long long now) {
  switch (w->state) {
    case MGOP_W_BACKOFF: return w->next_ms > now ? w->next_ms - now : 0;
    case MGOP_W_ABSENT: return MGOP_WATCH_TIMEOUT_S * 1000LL; /* nothing to do until enabled */
    case MGOP_W_STREAM: {
      if (mgop_conn_has_buffered((struct mgop_conn *)&w->conn)) return 0;
      long long idle_end = w->last_data_ms + mgop_watch_idle_ms(w);
      return idle_end > now ? idle_end - now : 0;
    }
    default: return 0;
  }
}

/* ======================================================================
 * 3.7 state
 * ==================================================================== */
int mgop_name(char *out, size_t cap, size_t limit, int hashed, const char *const *parts, int nparts) {
  char joined[MGOP_NAME_MAX * 2 + 2];
  struct mgop_buf b;
  uint32_t h = MGOP_FNV32_INIT;
  char hex[9];
  mgop_buf_init(&b, joined, sizeof(joined) - 1);
  for (int i = 0; i < nparts; i++) {
    const unsigned char *p = (const unsigned char *)parts[i];
    size_t start = b.len;
    if (i) mgop_buf_append(&b, "-", 1), start++;
    h = mgop_fnv1a32(h, parts[i], strlen(parts[i]) + 1); /* hash the original part, then a NUL */
    for (; *p; p++) {
      char c = (char)*p;
      if (*p >= 0x80) { /* one '-' per UTF-8 rune: skip continuation bytes */
        while ((p[1] & 0xC0) == 0x80) p++;
        c = '-';
      } else if (c >= 'A' && c <= 'Z') {
        c = (char)(c + 32);
      } else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
        c = '-';
      }
      mgop_buf_append(&b, &c, 1);
    }
    if (i == 0) { /* DNS names start with a letter (a digit too for 253-long names) */
      char c0 = b.len > start ? joined[start] : 0;
      int ok = (c0 >= 'a' && c0 <= 'z') || (limit == MGOP_NAME_MAX && c0 >= '0' && c0 <= '9');
      if (!ok && !b.overflow) {
        memmove(joined + start + 1, joined + start, b.len - start);
        joined[start] = 'x';
        b.len++;
      }
    }
  }
  if (b.overflow || limit > MGOP_NAME_MAX || limit < 12 || cap <= limit)
    return mgop_seterr(MGOP_ERR_TOOBIG, "name parts too long to build a name");
  mgop_buf_cstr(&b);
  snprintf(hex, sizeof(hex), "%08x", h);
  if (!hashed && b.len <= limit) { /* singletons: {cluster}-global-topo and the like */
    memcpy(out, joined, b.len + 1);
    return MGOP_OK;
  }
  if (b.len + 1 + 8 <= limit) {
    snprintf(out, cap, "%s-%s", joined, hex);
    return MGOP_OK;
  }
  snprintf(out, cap, "%.*s---%s", (int)(limit - 11), joined, hex); /* exactly limit characters */
  return MGOP_OK;
}

/* Rows are dense: a new row takes the place a removed one left, else the
 * next unused one, and never moves while it lives; an open-addressing
 * index of row numbers finds them. So the pages the table costs follow the
 * rows in use, not --max-objects (a bound, not a price; a hashed table of
 * rows touched all of them once a few thousand objects were spread over
 * it), and compaction rebuilds only the index. */
static struct mgop_fp *mgop_fp_table; /* mgop_fp_cap rows; [0, mgop_fp_span) ever used */
static uint32_t *mgop_fp_index;       /* row + 1; 0 empty; MGOP_FP_GONE removed */
static uint32_t *mgop_fp_free;        /* rows removed, reused first (a stack) */
static size_t mgop_fp_cap, mgop_fp_icap, mgop_fp_span_n, mgop_fp_nfree;
static size_t mgop_fp_used;
static size_t mgop_fp_dead; /* index tombstones: a miss probes past them */
#define MGOP_FP_GONE UINT32_MAX
#define MGOP_FP_ROWS_MAX ((size_t)1 << 28)

uint64_t mgop_fp_key(const char *kind, const char *ns, const char *name) {
  uint64_t h = MGOP_FNV64_INIT;
  h = mgop_fnv1a64(h, kind, strlen(kind) + 1);
  h = mgop_fnv1a64(h, ns, strlen(ns) + 1);
  h = mgop_fnv1a64(h, name, strlen(name) + 1);
  return h ? h : 1; /* 0 marks an empty slot */
}

int mgop_fp_init(size_t slots) {
  if (mgop_fp_table) return mgop_seterr(MGOP_ERR_NOMEM, "the object table is already sized (%zu rows)", mgop_fp_cap);
  if (slots < 2 || slots > MGOP_FP_ROWS_MAX)
    return mgop_seterr(MGOP_ERR_NOMEM, "an object table of %zu rows: between 2 and %zu", slots, MGOP_FP_ROWS_MAX);
  mgop_fp_icap = mgop_dense_index_slots(slots);
  mgop_fp_table = mgop_table_alloc(slots, sizeof(*mgop_fp_table));
  mgop_fp_index = mgop_table_alloc(mgop_fp_icap, sizeof(*mgop_fp_index));
  mgop_fp_free = mgop_table_alloc(slots, sizeof(*mgop_fp_free));
  if (!mgop_fp_table || !mgop_fp_index || !mgop_fp_free) {
    mgop_fp_table = NULL;
    return mgop_seterr(MGOP_ERR_NOMEM, "cannot allocate an object table of %zu rows", slots);
  }
  mgop_fp_cap = slots;
  return MGOP_OK;
}

size_t mgop_fp_slots(void) {
  if (!mgop_fp_table && mgop_fp_init(MGOP_FP_SLOTS_DEFAULT)) abort(); /* start-up: nothing to degrade to */
  return mgop_fp_cap;
}

size_t mgop_fp_span(void) { return mgop_fp_span_n; }

/* The index slot holding key (*found 1), or the one it would take: the
 * first tombstone on its chain, else the empty slot ending it. */
static size_t mgop_fp_slot(uint64_t key, int *found) {
  size_t cap, i, first_free = (size_t)-1;
  mgop_fp_slots();
  cap = mgop_fp_icap;
  i = (size_t)(key % cap);
  for (size_t probe = 0; probe < cap; probe++, i = (i + 1) % cap) {
    uint32_t v = mgop_fp_index[i];
    if (v == 0) {
      *found = 0;
      return first_free != (size_t)-1 ? first_free : i;
    }
    if (v == MGOP_FP_GONE) {
      if (first_free == (size_t)-1) first_free = i;
    } else if (mgop_fp_table[v - 1].key == key) {
      *found = 1;
      return i;
    }
  }
  *found = 0;
  return first_free;
}

struct mgop_fp *mgop_fp_find(uint64_t key) {
  int found;
  size_t i = mgop_fp_slot(key, &found);
  return found ? &mgop_fp_table[mgop_fp_index[i] - 1] : NULL;
}

struct mgop_fp *mgop_fp_upsert(uint64_t key) {
  int found;
  size_t i = mgop_fp_slot(key, &found), row;
  if (found) return &mgop_fp_table[mgop_fp_index[i] - 1];
  if (i == (size_t)-1 || mgop_fp_used >= mgop_fp_cap) return NULL;
  row = mgop_fp_nfree ? mgop_fp_free[--mgop_fp_nfree] : mgop_fp_span_n++;
  if (mgop_fp_index[i] == MGOP_FP_GONE) mgop_fp_dead--;
  mgop_fp_index[i] = (uint32_t)(row + 1);
  memset(&mgop_fp_table[row], 0, sizeof(mgop_fp_table[row]));
  mgop_fp_table[row].key = key;
  mgop_fp_used++;
  return &mgop_fp_table[row];
}

struct mgop_fp *mgop_fp_at(size_t i) {
  if (i >= mgop_fp_span_n || mgop_fp_table[i].key == 0) return NULL;
  return &mgop_fp_table[i];
}

void mgop_fp_remove(uint64_t key) {
  int found;
  size_t i = mgop_fp_slot(key, &found), row;
  if (!found) return;
  row = mgop_fp_index[i] - 1;
  memset(&mgop_fp_table[row], 0, sizeof(mgop_fp_table[row])); /* key 0: a free row */
  mgop_fp_free[mgop_fp_nfree++] = (uint32_t)row;
  mgop_fp_index[i] = MGOP_FP_GONE; /* keeps the probe chains through it intact */
  mgop_fp_used--;
  mgop_fp_dead++;
}

size_t mgop_fp_count(void) { return mgop_fp_used; }
size_t mgop_fp_tombstones(void) { return mgop_fp_dead; }

/* Rebuilds the index without tombstones; the rows stay where they are. */
void mgop_fp_compact(void) {
  mgop_fp_slots();
  memset(mgop_fp_index, 0, mgop_fp_icap * sizeof(*mgop_fp_index));
  mgop_fp_dead = 0;
  for (size_t row = 0; row < mgop_fp_span_n; row++)
    if (mgop_fp_table[row].key)
      mgop_dense_index_put(mgop_fp_index, mgop_fp_icap, (size_t)(mgop_fp_table[row].key % mgop_fp_icap), row);
}

static struct mgop_work mgop_work_set[MGOP_WORK_SLOTS];
static size_t mgop_work_used;
static size_t mgop_work_span;                   /* slots ever taken: [0, span) */
static uint32_t mgop_work_free[MGOP_WORK_SLOTS]; /* slots below span given back */
static size_t mgop_work_nfree;
#define MGOP_WORK_INDEX (2 * MGOP_WORK_SLOTS) /* at most half full: every probe meets an empty entry */
static uint32_t mgop_work_index[MGOP_WORK_INDEX]; /* slot + 1; 0: empty */

static uint64_t mgop_work_key(const char *kind, const char *ns, const char *name) {
  uint64_t h = mgop_fnv1a64(MGOP_FNV64_INIT, kind, strlen(kind) + 1); /* the NULs keep "a","bc" from "ab","c" */
  h = mgop_fnv1a64(h, ns, strlen(ns) + 1);
  return mgop_fnv1a64(h, name, strlen(name));
}

/* The index entry of kind/ns/name (*found 1), or the empty one where it
 * would go (*found 0). */
static size_t mgop_work_probe(uint64_t key, const char *kind, const char *ns, const char *name, int *found) {
  size_t i = (size_t)(key % MGOP_WORK_INDEX);
  for (; mgop_work_index[i]; i = (i + 1) % MGOP_WORK_INDEX) {
    const struct mgop_work *w = &mgop_work_set[mgop_work_index[i] - 1];
    if (w->key == key && !strcmp(w->kind, kind) && !strcmp(w->ns, ns) && !strcmp(w->name, name)) {
      *found = 1;
      return i;
    }
  }
  *found = 0;
  return i;
}

/* The index entry that holds slot (which is in the set). */
static size_t mgop_work_entry_of(size_t slot) {
  size_t i = (size_t)(mgop_work_set[slot].key % MGOP_WORK_INDEX);
  while (mgop_work_index[i] != slot + 1) i = (i + 1) % MGOP_WORK_INDEX;
  return i;
}

/* Empties index entry p and moves later entries of its run back into the
 * gap (no tombstones: a probe stops at the first empty entry). An entry at
 * j may fill the gap at p unless its home lies cyclically in (p, j]. */
static void mgop_work_unindex(size_t p) {
  size_t j = p;
  mgop_work_index[p] = 0;
  for (;;) {
    size_t home;
    int stays;
    j = (j + 1) % MGOP_WORK_INDEX;
    if (!mgop_work_index[j]) return;
    home = (size_t)(mgop_work_set[mgop_work_index[j] - 1].key % MGOP_WORK_INDEX);
    stays = p <= j ? (home > p && home <= j) : (home > p || home <= j);
    if (stays) continue;
    mgop_work_index[p] = mgop_work_index[j];
    mgop_work_index[j] = 0;
    p = j;
  }
}

/* Adds kind/ns/name (or moves it earlier); *out: its entry. */
static int mgop_work_put(const char *kind, const char *ns, const char *name, long long not_before,
                         struct mgop_work **out) {
  struct mgop_work *w;
  uint64_t key;
  size_t i, slot;
  int found;
  if (strlen(kind) >= sizeof(w->kind) || strlen(ns) >= sizeof(w->ns) || strlen(name) >= sizeof(w->name))
    return mgop_seterr(MGOP_ERR_TOOBIG, "work item %s %s/%s: name too long", kind, ns, name);
  key = mgop_work_key(kind, ns, name);
  i = mgop_work_probe(key, kind, ns, name, &found);
  if (found) {
    *out = w = &mgop_work_set[mgop_work_index[i] - 1];
    if (not_before < w->not_before) w->not_before = not_before;
    return MGOP_OK;
  }
  if (mgop_work_used >= MGOP_WORK_SLOTS) return mgop_seterr(MGOP_ERR_NOMEM, "work set full (%d roots)", MGOP_WORK_SLOTS);
  slot = mgop_work_nfree ? mgop_work_free[--mgop_work_nfree] : mgop_work_span++;
  w = &mgop_work_set[slot];
  memset(w, 0, sizeof(*w));
  snprintf(w->kind, sizeof(w->kind), "%s", kind);
  snprintf(w->ns, sizeof(w->ns), "%s", ns);
  snprintf(w->name, sizeof(w->name), "%s", name);
  w->not_before = not_before;
  w->key = key;
  w->used = 1;
  mgop_work_index[i] = (uint32_t)slot + 1;
  mgop_work_used++;
  *out = w;
  return MGOP_OK;
}

int mgop_work_add(const char *kind, const char *ns, const char *name, long long not_before) {
  struct mgop_work *w;
  return mgop_work_put(kind, ns, name, not_before, &w);
}

int mgop_work_retry(const struct mgop_work *item, long long not_before) {
  struct mgop_work *w;
  int rc = mgop_work_put(item->kind, item->ns, item->name, not_before, &w);
  if (rc) return rc;
  if (item->attempts + 1 > w->attempts) w->attempts = item->attempts + 1;
  return MGOP_OK;
}

int mgop_work_pop(long long now, struct mgop_work *out) {
  struct mgop_work *best = NULL;
  size_t i;
  for (i = 0; i < mgop_work_span; i++) {
    struct mgop_work *w = &mgop_work_set[i];
    if (w->used && w->not_before <= now && (!best || w->not_before < best->not_before)) best = w;
  }
  if (!best) return MGOP_ERR_AGAIN;
  *out = *best;
  mgop_work_unindex(mgop_work_entry_of((size_t)(best - mgop_work_set)));
  best->used = 0;
  mgop_work_free[mgop_work_nfree++] = (uint32_t)(best - mgop_work_set);
  mgop_work_used--;
  return MGOP_OK;
}

long long mgop_work_next_due(long long now) {
  long long best = -1;
  for (size_t i = 0; i < mgop_work_span; i++) {
    struct mgop_work *w = &mgop_work_set[i];
    if (!w->used) continue;
    if (w->not_before <= now) return 0;
    if (best < 0 || w->not_before - now < best) best = w->not_before - now;
  }
  return best;
}

size_t mgop_work_depth(void) { return mgop_work_used; }

/* ======================================================================
 * 3.8 pki
 * ==================================================================== */
#include <mbedtls/asn1write.h>
#include <mbedtls/oid.h>
#include <mbedtls/ecp.h>
#include <mbedtls/bignum.h>
#include <mbedtls/platform_util.h>

/* Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant). */
static long long mgop_days_from_civil(long long y, unsigned m, unsigned d) {
  long long era;
  unsigned yoe, doy, doe;
  y -= m <= 2;
  era = (y >= 0 ? y : y - 399) / 400;
  yoe = (unsigned)(y - era * 400);
  doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (long long)doe - 719468;
}

static long long mgop_x509_time_unix(const mbedtls_x509_time *t) {
  if (t->mon < 1 || t->mon > 12 || t->day < 1 || t->day > 31) return 0;
  return mgop_days_from_civil(t->year, (unsigned)t->mon, (unsigned)t->day) * 86400LL + t->hour * 3600LL +
         t->min * 60LL + t->sec;
}

/* "YYYYMMDDhhmmss" (UTC), as mbedtls_x509write_crt_set_validity wants. */
static int mgop_pki_timestr(long long t, char *out, size_t cap) {
  struct tm tm;
  time_t tt = (time_t)t;
  if (t < 0 || t > 253402300799LL || !gmtime_r(&tt, &tm)) return MGOP_ERR_CONFIG;
  return strftime(out, cap, "%Y%m%d%H%M%S", &tm) == 14 ? MGOP_OK : MGOP_ERR_CONFIG;
}

static int mgop_pki_rng(void *ctx, unsigned char *out, size_t n) { return mbedtls_ctr_drbg_random(ctx, out, n); }

/* mbedTLS parses PEM only NUL-terminated with the NUL counted; DER as is. */
static _Thread_local char mgop_pki_tmp[MGOP_PEM_MAX + 1];
static const unsigned char *mgop_pki_text(const char *s, size_t *len) {
  if (*len > 0 && (s[*len - 1] == 0 || (unsigned char)s[0] == 0x30)) return (const unsigned char *)s;
  if (*len >= sizeof(mgop_pki_tmp)) return NULL;
  memcpy(mgop_pki_tmp, s, *len);
  mgop_pki_tmp[(*len)++] = 0;
  return (const unsigned char *)mgop_pki_tmp;
}

static int mgop_pki_parse_crt(mbedtls_x509_crt *crt, const char *s, size_t len, const char *what) {
  const unsigned char *p = mgop_pki_text(s, &len);
  int r;
  if (!p) return mgop_seterr(MGOP_ERR_TOOBIG, "%s is larger than %d bytes", what, MGOP_PEM_MAX);
  r = mbedtls_x509_crt_parse(crt, p, len);
  if (r > 0) return mgop_seterr(MGOP_ERR_PARSE, "%s: %d of its certificates do not parse", what, r);
  if (r < 0) return mgop_seterr(MGOP_ERR_PARSE, "%s is not a PEM/DER certificate (mbedtls -0x%04x)", what, -r);
  return MGOP_OK;
}

static int mgop_pki_parse_key(mbedtls_pk_context *pk, const char *s, size_t len, const char *what) {
  const unsigned char *p = mgop_pki_text(s, &len);
  int r;
  if (!p) return mgop_seterr(MGOP_ERR_TOOBIG, "%s is larger than %d bytes", what, MGOP_PEM_MAX);
  if ((r = mgop_tls_global_init())) return r; /* the DRBG blinds EC operations */
  r = mbedtls_pk_parse_key(pk, p, len, NULL, 0, mgop_pki_rng, &mgop_drbg);
  if (p == (const unsigned char *)mgop_pki_tmp) mbedtls_platform_zeroize(mgop_pki_tmp, len);
  if (r) return mgop_seterr(MGOP_ERR_PARSE, "%s is not an unencrypted PEM/DER private key (mbedtls -0x%04x)", what, -r);
  return MGOP_OK;
}

/* 4 or 16 bytes for an IPv4/IPv6 literal, else 0. */
static size_t mgop_pki_ip(const char *name, unsigned char ip[16]) {
  if (inet_pton(AF_INET, name, ip) == 1) return 4;
  if (inet_pton(AF_INET6, name, ip) == 1) return 16;
  return 0;
}

/* DNS names (a leading "*." allowed) and IP literals; nothing a DN string
 * would need escaping for. */
static int mgop_pki_name_ok(const char *n) {
  unsigned char ip[16];
  size_t len = strlen(n);
  if (len == 0 || len > 253) return 0;
  if (mgop_pki_ip(n, ip)) return 1;
  if (n[0] == '*' && n[1] == '.') n += 2;
  for (; *n; n++)
    if (!((*n >= 'a' && *n <= 'z') || (*n >= 'A' && *n <= 'Z') || (*n >= '0' && *n <= '9') || *n == '-' || *n == '.'))
      return 0;
  return 1;
}

static int mgop_pki_genkey(mbedtls_pk_context *key) {
  int r;
  if ((r = mgop_tls_global_init())) return r;
  if ((r = mbedtls_pk_setup(key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY))) ||
      (r = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*key), mgop_pki_rng, &mgop_drbg)))
    return mgop_tls_fail(r, "generating a P-256 key");
  return MGOP_OK;
}

/* subjectAltName: a dNSName, or an iPAddress for an IPv4/IPv6 literal, per
 * name; ips holds the binary addresses the list points into. */
static void mgop_pki_san_list(mbedtls_x509_san_list *san, unsigned char (*ips)[16], const char *const *names, int n) {
  for (int i = 0; i < n; i++) {
    size_t iplen = mgop_pki_ip(names[i], ips[i]);
    memset(&san[i], 0, sizeof(san[i]));
    san[i].node.type = iplen ? MBEDTLS_X509_SAN_IP_ADDRESS : MBEDTLS_X509_SAN_DNS_NAME;
    san[i].node.san.unstructured_name.p = iplen ? ips[i] : (unsigned char *)(uintptr_t)names[i];
    san[i].node.san.unstructured_name.len = iplen ? iplen : strlen(names[i]);
    san[i].next = i + 1 < n ? &san[i + 1] : NULL;
  }
}

/* The leaf certificate's extensions: CA:false, digitalSignature,
 * extendedKeyUsage serverAuth (and clientAuth for a peer), subjectAltName. */
static int mgop_pki_leaf_exts(mbedtls_x509write_cert *w, const char *const *names, int nnames, int peer,
                              const char **step) {
  static const char server_auth[] = MBEDTLS_OID_SERVER_AUTH, client_auth[] = MBEDTLS_OID_CLIENT_AUTH;
  mbedtls_asn1_sequence client = {{MBEDTLS_ASN1_OID, MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH),
                                   (unsigned char *)(uintptr_t)client_auth}, NULL};
  mbedtls_asn1_sequence eku = {{MBEDTLS_ASN1_OID, MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH),
                                (unsigned char *)(uintptr_t)server_auth}, peer ? &client : NULL};
  mbedtls_x509_san_list san[MGOP_PKI_NAMES_MAX];
  unsigned char ips[MGOP_PKI_NAMES_MAX][16];
  int r;
  if (nnames < 1 || nnames > MGOP_PKI_NAMES_MAX) return MBEDTLS_ERR_X509_BAD_INPUT_DATA; /* checked by the caller */
  mgop_pki_san_list(san, ips, names, nnames);
  if ((r = mbedtls_x509write_crt_set_basic_constraints(w, 0, -1))) *step = "basicConstraints";
  else if ((r = mbedtls_x509write_crt_set_key_usage(w, MBEDTLS_X509_KU_DIGITAL_SIGNATURE))) *step = "keyUsage";
  else if ((r = mbedtls_x509write_crt_set_ext_key_usage(w, &eku))) *step = "extendedKeyUsage";
  else if ((r = mbedtls_x509write_crt_set_subject_alternative_name(w, san))) *step = "subjectAltName";
  return r;
}

/* Writes one certificate (PEM) for subject_key, signed by issuer_key. */
static int mgop_pki_write_crt(struct mgop_pki_pair *out, mbedtls_pk_context *subject_key,
                              mbedtls_pk_context *issuer_key, const char *subject, const char *issuer, int is_ca,
                              const char *const *names, int nnames, long long not_before, long long not_after) {
  /* is_ca: 1 a CA, 0 a serving leaf, 2 a peer leaf (serverAuth + clientAuth) */
  mbedtls_x509write_cert w;
  unsigned char sb[16];
  char nb[16], na[16];
  int r, rc = MGOP_OK;
  const char *step = "";
  if (mgop_pki_timestr(not_before, nb, sizeof(nb)) || mgop_pki_timestr(not_after, na, sizeof(na)))
    return mgop_seterr(MGOP_ERR_CONFIG, "certificate validity %lld..%lld is out of range", not_before, not_after);
  mbedtls_x509write_crt_init(&w);
  /* 128 random bits, positive and 16 bytes long */
  if ((r = mbedtls_ctr_drbg_random(&mgop_drbg, sb, sizeof(sb)))) { step = "serial"; goto fail; }
  sb[0] = (unsigned char)((sb[0] & 0x7f) | 0x40);
  mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
  mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
  mbedtls_x509write_crt_set_subject_key(&w, subject_key);
  mbedtls_x509write_crt_set_issuer_key(&w, issuer_key);
  if ((r = mbedtls_x509write_crt_set_subject_name(&w, subject))) { step = "subject"; goto fail; }
  if ((r = mbedtls_x509write_crt_set_issuer_name(&w, issuer))) { step = "issuer"; goto fail; }
  if ((r = mbedtls_x509write_crt_set_serial_raw(&w, sb, sizeof(sb)))) { step = "serial"; goto fail; }
  if ((r = mbedtls_x509write_crt_set_validity(&w, nb, na))) { step = "validity"; goto fail; }
  if ((r = mbedtls_x509write_crt_set_subject_key_identifier(&w))) { step = "subjectKeyIdentifier"; goto fail; }
  if ((r = mbedtls_x509write_crt_set_authority_key_identifier(&w))) { step = "authorityKeyIdentifier"; goto fail; }
  if (is_ca == 1) {
    if ((r = mbedtls_x509write_crt_set_basic_constraints(&w, 1, 0))) { step = "basicConstraints"; goto fail; }
    if ((r = mbedtls_x509write_crt_set_key_usage(&w, MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN))) {
      step = "keyUsage";
      goto fail;
    }
  } else if ((r = mgop_pki_leaf_exts(&w, names, nnames, is_ca == 2, &step))) {
    goto fail;
  }
  if ((r = mbedtls_x509write_crt_pem(&w, (unsigned char *)out->cert, sizeof(out->cert), mgop_pki_rng, &mgop_drbg))) {
    step = "signing";
    goto fail;
  }
  out->cert_len = strlen(out->cert);
  if ((r = mbedtls_pk_write_key_pem(subject_key, (unsigned char *)out->key, sizeof(out->key)))) {
    step = "key PEM";
    goto fail;
  }
  out->key_len = strlen(out->key);
  goto done;
fail: {
    char what[64];
    snprintf(what, sizeof(what), "certificate %s", step);
    rc = mgop_tls_fail(r, what);
  }
done:
  mbedtls_x509write_crt_free(&w);
  return rc;
}

static int mgop_pki_check_validity(long long validity_s, long long now_s) {
  if (validity_s <= 0 || validity_s > 100LL * 366 * 86400 || now_s < MGOP_PKI_BACKDATE_S)
    return mgop_seterr(MGOP_ERR_CONFIG, "certificate validity must be 1 s to 100 years (got %lld s at %lld)",
                       validity_s, now_s);
  return MGOP_OK;
}

int mgop_pki_make_ca(struct mgop_pki_pair *ca, const char *cn, long long validity_s, long long now_s) {
  mbedtls_pk_context key;
  char subject[96];
  int rc;
  memset(ca, 0, sizeof(*ca));
  if (!cn || !mgop_pki_name_ok(cn) || strlen(cn) > 64)
    return mgop_seterr(MGOP_ERR_CONFIG, "CA common name \"%s\" must be 1-64 characters of [A-Za-z0-9.-]", cn ? cn : "");
  if ((rc = mgop_pki_check_validity(validity_s, now_s))) return rc;
  snprintf(subject, sizeof(subject), "CN=%s", cn);
  mbedtls_pk_init(&key);
  rc = mgop_pki_genkey(&key);
  if (!rc)
    rc = mgop_pki_write_crt(ca, &key, &key, subject, subject, 1, NULL, 0, now_s - MGOP_PKI_BACKDATE_S,
                            now_s + validity_s);
  mbedtls_pk_free(&key);
  if (rc) mbedtls_platform_zeroize(ca, sizeof(*ca));
  return rc;
}

static int mgop_pki_make_leaf(struct mgop_pki_pair *out, const struct mgop_pki_pair *ca, const char *const *names,
                              int nnames, long long validity_s, long long now_s, int peer) {
  mbedtls_x509_crt cacrt;
  mbedtls_pk_context cakey, key;
  char subject[96], issuer[512];
  const char *cn = NULL;
  long long not_after = now_s + validity_s, ca_after;
  int rc, r;
  memset(out, 0, sizeof(*out));
  if (nnames < 1 || nnames > MGOP_PKI_NAMES_MAX)
    return mgop_seterr(MGOP_ERR_CONFIG, "a serving certificate needs 1 to %d names (got %d)", MGOP_PKI_NAMES_MAX,
                       nnames);
  for (int i = 0; i < nnames; i++) {
    unsigned char ip[16];
    if (!names[i] || !mgop_pki_name_ok(names[i]))
      return mgop_seterr(MGOP_ERR_CONFIG, "serving certificate name \"%s\" is neither a DNS name nor an IP address",
                         names[i] ? names[i] : "(null)");
    if (!cn && !mgop_pki_ip(names[i], ip)) cn = names[i];
  }
  if (!cn) cn = names[0];
  if ((rc = mgop_pki_check_validity(validity_s, now_s))) return rc;
  snprintf(subject, sizeof(subject), "CN=%.64s", cn);
  mbedtls_x509_crt_init(&cacrt);
  mbedtls_pk_init(&cakey);
  mbedtls_pk_init(&key);
  if ((rc = mgop_pki_parse_crt(&cacrt, ca->cert, ca->cert_len, "CA certificate")) ||
      (rc = mgop_pki_parse_key(&cakey, ca->key, ca->key_len, "CA key")))
    goto done;
  if (mbedtls_pk_check_pair(&cacrt.pk, &cakey, mgop_pki_rng, &mgop_drbg)) {
    rc = mgop_seterr(MGOP_ERR_CONFIG, "the CA key does not belong to the CA certificate");
    goto done;
  }
  if (mbedtls_x509_crt_get_ca_istrue(&cacrt) != 1) {
    rc = mgop_seterr(MGOP_ERR_CONFIG, "the CA certificate is not a CA (basicConstraints CA:false)");
    goto done;
  }
  if ((r = mbedtls_x509_dn_gets(issuer, sizeof(issuer), &cacrt.subject)) < 0) {
    rc = mgop_tls_fail(r, "CA subject");
    goto done;
  }
  /* a certificate never outlives its issuer */
  ca_after = mgop_x509_time_unix(&cacrt.valid_to);
  if (ca_after > 0 && not_after > ca_after) not_after = ca_after;
  if (not_after <= now_s) {
    rc = mgop_seterr(MGOP_ERR_CONFIG, "the CA certificate has expired; make a new CA");
    goto done;
  }
  if ((rc = mgop_pki_genkey(&key))) goto done;
  rc = mgop_pki_write_crt(out, &key, &cakey, subject, issuer, peer ? 2 : 0, names, nnames,
                          now_s - MGOP_PKI_BACKDATE_S, not_after);
done:
  mbedtls_pk_free(&key);
  mbedtls_pk_free(&cakey);
  mbedtls_x509_crt_free(&cacrt);
  if (rc) mbedtls_platform_zeroize(out, sizeof(*out));
  return rc;
}

int mgop_pki_make_serving(struct mgop_pki_pair *out, const struct mgop_pki_pair *ca, const char *const *names,
                          int nnames, long long validity_s, long long now_s) {
  return mgop_pki_make_leaf(out, ca, names, nnames, validity_s, now_s, 0);
}

int mgop_pki_make_peer(struct mgop_pki_pair *out, const struct mgop_pki_pair *ca, const char *const *names,
                       int nnames, long long validity_s, long long now_s) {
  return mgop_pki_make_leaf(out, ca, names, nnames, validity_s, now_s, 1);
}

int mgop_pki_pair_load(struct mgop_pki_pair *p, const char *cert, size_t cert_len, const char *key, size_t key_len) {
  mbedtls_x509_crt crt;
  mbedtls_pk_context pk;
  int rc;
  while (cert_len > 0 && cert[cert_len - 1] == 0) cert_len--;
  while (key_len > 0 && key[key_len - 1] == 0) key_len--;
  if (cert_len >= sizeof(p->cert) || key_len >= sizeof(p->key))
    return mgop_seterr(MGOP_ERR_TOOBIG, "certificate or key larger than %d bytes", MGOP_PKI_PEM_MAX - 1);
  mbedtls_x509_crt_init(&crt);
  mbedtls_pk_init(&pk);
  if (!(rc = mgop_pki_parse_crt(&crt, cert, cert_len, "certificate")) &&
      !(rc = mgop_pki_parse_key(&pk, key, key_len, "key")) && mbedtls_pk_check_pair(&crt.pk, &pk, mgop_pki_rng, &mgop_drbg))
    rc = mgop_seterr(MGOP_ERR_CONFIG, "the key does not belong to the certificate");
  mbedtls_pk_free(&pk);
  mbedtls_x509_crt_free(&crt);
  if (rc) return rc;
  memcpy(p->cert, cert, cert_len);
  p->cert[cert_len] = 0;
  p->cert_len = cert_len;
  memcpy(p->key, key, key_len);
  p->key[key_len] = 0;
  p->key_len = key_len;
  return MGOP_OK;
}

int mgop_pki_validity(const char *cert, size_t len, long long *not_before_s, long long *not_after_s) {
  mbedtls_x509_crt crt;
  int rc;
  mbedtls_x509_crt_init(&crt);
  rc = mgop_pki_parse_crt(&crt, cert, len, "certificate");
  if (!rc) {
    if (not_before_s) *not_before_s = mgop_x509_time_unix(&crt.valid_from);
    if (not_after_s) *not_after_s = mgop_x509_time_unix(&crt.valid_to);
  }
  mbedtls_x509_crt_free(&crt);
  return rc;
}

int mgop_pki_not_after(const char *cert, size_t len, long long *not_after_s) {
  return mgop_pki_validity(cert, len, NULL, not_after_s);
}

int mgop_pki_needs_renewal(const char *cert, size_t len, long long now_s, long long margin_s) {
  long long nb, na, left;
  if (mgop_pki_validity(cert, len, &nb, &na)) return 1;
  left = na - now_s;
  return left < (na - nb) / 3 || left < margin_s || now_s < nb;
}

static int mgop_pki_vrfy_cb(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags) {
  long long now = *(const long long *)ctx;
  (void)depth;
  *flags &= ~(uint32_t)(MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE);
  if (now < mgop_x509_time_unix(&crt->valid_from)) *flags |= MBEDTLS_X509_BADCERT_FUTURE;
  if (now > mgop_x509_time_unix(&crt->valid_to)) *flags |= MBEDTLS_X509_BADCERT_EXPIRED;
  return 0;
}

int mgop_pki_verify(const char *leaf, size_t leaf_len, const char *ca_pem, size_t ca_len, const char *name,
                    long long now_s) {
  mbedtls_x509_crt crt, ca;
  uint32_t flags = 0;
  int rc, r;
  mbedtls_x509_crt_init(&crt);
  mbedtls_x509_crt_init(&ca);
  if ((rc = mgop_pki_parse_crt(&crt, leaf, leaf_len, "certificate")) ||
      (rc = mgop_pki_parse_crt(&ca, ca_pem, ca_len, "CA bundle")))
    goto done;
  /* name: a DNS name, or an IP literal matched against iPAddress SANs */
  r = mbedtls_x509_crt_verify(&crt, &ca, NULL, name, &flags, mgop_pki_vrfy_cb, &now_s);
  if (r || flags) {
    char info[256] = "";
    size_t n;
    mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
    for (n = strlen(info); n > 0 && info[n - 1] == '\n'; n--) info[n - 1] = 0;
    for (char *q = info; *q; q++)
      if (*q == '\n') *q = ';';
    rc = mgop_seterr(MGOP_ERR_TLS, "certificate does not verify%s%s: %s", name ? " for " : "", name ? name : "",
                     info[0] ? info : "verification failed");
  }
done:
  mbedtls_x509_crt_free(&ca);
  mbedtls_x509_crt_free(&crt);
  return rc;
}

static void mgop_hex_serial(const mbedtls_x509_buf *serial, char *out, size_t cap) {
  size_t o = 0;
  if (cap == 0) return;
  for (size_t i = 0; i < serial->len && o + 3 <= cap; i++) o += (size_t)snprintf(out + o, cap - o, "%02x", serial->p[i]);
  out[o] = 0;
}

int mgop_pki_serial_hex(const char *cert, size_t len, char *out, size_t cap) {
  mbedtls_x509_crt crt;
  int rc;
  if (cap) out[0] = 0;
  mbedtls_x509_crt_init(&crt);
  rc = mgop_pki_parse_crt(&crt, cert, len, "certificate");
  if (!rc) mgop_hex_serial(&crt.serial, out, cap);
  mbedtls_x509_crt_free(&crt);
  return rc;
}

/* ======================================================================
 * 3.9 server
 * ==================================================================== */
/* --- request parser (pure) ---------------------------------------------- */
static int mgop_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int mgop_req_fail(struct mgop_http_req *r, int status, const char *why) {
  r->status = status;
  r->error = why;
  return status == 413 || status == 414 || status == 431 ? MGOP_ERR_TOOBIG : MGOP_ERR_HTTP;
}

/* Calls fn for each comma-separated token of a header value (OWS trimmed). */
static int mgop_has_token(const char *v, size_t n, const char *tok) {
  size_t i = 0;
  while (i < n) {
    size_t s = i, e;
    while (i < n && v[i] != ',') i++;
    e = i++;
    while (s < e && (v[s] == ' ' || v[s] == '\t')) s++;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
    if (mgop_hdr_name_eq(v + s, e - s, tok)) return 1;
  }
  return 0;
}

static int mgop_copy_target(char *dst, const char *s, size_t n) {
  if (n >= MGOP_HTTP_TARGET_MAX) return -1;
  memcpy(dst, s, n);
  dst[n] = 0;
  return 0;
}

int mgop_http_parse_request(const char *buf, size_t n, size_t head_max, size_t body_max,
                            struct mgop_http_req *r) {
  size_t lim = n < head_max ? n : head_max, i = 0, hs, he = 0;
  const char *p, *end, *eol, *le, *sp, *t, *tend, *v, *q;
  int hosts = 0, te = 0, chunked = 0, keepalive = 0, close_tok = 0, cl_seen = 0, cl_big = 0;
  unsigned long long cl = 0;
  memset(r, 0, sizeof(*r));
  r->content_length = -1;
  r->minor = 1;
  r->status = 400;
  if (body_max > (1ULL << 50)) body_max = 1ULL << 50;
  /* RFC 9112 2.2: ignore empty lines before the request line */
  while (i < lim && (buf[i] == '\n' || buf[i] == '\r')) {
    if (buf[i] == '\n') {
      i++;
      continue;
    }
    if (i + 1 >= lim) return n >= head_max ? mgop_req_fail(r, 431, "request head too large") : MGOP_ERR_AGAIN;
    if (buf[i + 1] != '\n') return mgop_req_fail(r, 400, "bare CR in the request");
    i += 2;
  }
  hs = i;
  /* early rejection (binary, TLS to a plain port): the method is a token */
  for (size_t k = hs; k < lim && buf[k] != ' '; k++)
    if (!mgop_tchar((unsigned char)buf[k])) return mgop_req_fail(r, 400, "malformed request line");
  for (size_t k = hs; k < lim; k++) {
    if (buf[k] != '\n') continue;
    if (k + 1 < lim && buf[k + 1] == '\n') { he = k + 2; break; }
    if (k + 2 < lim && buf[k + 1] == '\r' && buf[k + 2] == '\n') { he = k + 3; break; }
  }
  if (!he) return n >= head_max ? mgop_req_fail(r, 431, "request head too large") : MGOP_ERR_AGAIN;
  p = buf + hs;
  end = buf + he;

  /* request line: method SP target SP HTTP/1.x */
  eol = memchr(p, '\n', (size_t)(end - p));
  le = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
  for (sp = p; sp < le && mgop_tchar((unsigned char)*sp); sp++) {}
  if (sp == p || sp >= le || *sp != ' ') return mgop_req_fail(r, 400, "malformed request line");
  if ((size_t)(sp - p) >= sizeof(r->method)) return mgop_req_fail(r, 501, "method not implemented");
  memcpy(r->method, p, (size_t)(sp - p));
  t = sp + 1;
  for (tend = t; tend < le && *tend != ' '; tend++)
    if ((unsigned char)*tend <= 0x20 || (unsigned char)*tend >= 0x7f)
      return mgop_req_fail(r, 400, "invalid character in the request target");
  if (tend == t || tend >= le) return mgop_req_fail(r, 400, "malformed request line");
  v = tend + 1;
  if (le - v != 8 || memcmp(v, "HTTP/", 5) || v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' || v[7] > '9')
    return mgop_req_fail(r, 400, "malformed HTTP version");
  if (v[5] != '1') return mgop_req_fail(r, 505, "only HTTP/1.x is supported");
  r->minor = v[7] - '0';
  if (tend - t == 1 && *t == '*') {
    if (strcmp(r->method, "OPTIONS")) return mgop_req_fail(r, 400, "\"*\" target outside OPTIONS");
    r->path[0] = '*';
  } else {
    const char *qm, *hash;
    if (tend - t >= 8 && (mgop_hdr_name_eq(t, 7, "http://") || mgop_hdr_name_eq(t, 8, "https://"))) {
      /* absolute-form: keep the path and query */
      const char *a = memchr(t, ':', (size_t)(tend - t)) + 3;
      while (a < tend && *a != '/' && *a != '?') a++;
      if (a == tend || *a == '?') {
        r->path[0] = '/';
        if (a < tend && mgop_copy_target(r->query, a + 1, (size_t)(tend - a - 1)))
          return mgop_req_fail(r, 414, "request query too long");
        goto target_done;
      }
      t = a;
    }
    if (*t != '/') return mgop_req_fail(r, 400, "request target must start with /");
    if ((hash = memchr(t, '#', (size_t)(tend - t)))) return mgop_req_fail(r, 400, "fragment in the request target");
    qm = memchr(t, '?', (size_t)(tend - t));
    if (mgop_copy_target(r->path, t, (size_t)((qm ? qm : tend) - t)))
      return mgop_req_fail(r, 414, "request path too long");
    if (qm && mgop_copy_target(r->query, qm + 1, (size_t)(tend - qm - 1)))
      return mgop_req_fail(r, 414, "request query too long");
  }
target_done:

  /* header fields */
  for (p = eol + 1; p < end; p = eol + 1) {
    const char *colon, *ve;
    size_t nlen;
    eol = memchr(p, '\n', (size_t)(end - p));
    le = eol > p && eol[-1] == '\r' ? eol - 1 : eol;
    if (le == p) break; /* the blank line */
    if (*p == ' ' || *p == '\t') return mgop_req_fail(r, 400, "obsolete line folding");
    if (++r->nheaders > MGOP_HTTP_HEADERS_MAX) return mgop_req_fail(r, 431, "too many header fields");
    for (colon = p; colon < le && mgop_tchar((unsigned char)*colon); colon++) {}
    if (colon == p || colon >= le || *colon != ':') return mgop_req_fail(r, 400, "malformed header field");
    nlen = (size_t)(colon - p);
    for (q = colon + 1; q < le; q++)
      if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
        return mgop_req_fail(r, 400, "invalid character in a header value");
    v = colon + 1;
    ve = le;
    while (v < ve && (*v == ' ' || *v == '\t')) v++;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
    if (mgop_hdr_name_eq(p, nlen, "content-length")) {
      unsigned long long val = 0;
      int big = 0;
      if (v == ve) return mgop_req_fail(r, 400, "empty Content-Length");
      for (q = v; q < ve; q++) {
        if (*q < '0' || *q > '9') return mgop_req_fail(r, 400, "invalid Content-Length");
        if (val > body_max) big = 1;
        else val = val * 10 + (unsigned)(*q - '0');
      }
      if (val > body_max) big = 1;
      if (cl_seen && (big != cl_big || val != cl)) return mgop_req_fail(r, 400, "conflicting Content-Length headers");
      cl_seen = 1;
      cl_big = big;
      cl = val;
    } else if (mgop_hdr_name_eq(p, nlen, "transfer-encoding")) {
      te = 1;
      if (mgop_ci_contains(v, (size_t)(ve - v), "chunked")) chunked = 1;
    } else if (mgop_hdr_name_eq(p, nlen, "connection")) {
      if (mgop_has_token(v, (size_t)(ve - v), "close")) close_tok = 1;
      if (mgop_has_token(v, (size_t)(ve - v), "keep-alive")) keepalive = 1;
    } else if (mgop_hdr_name_eq(p, nlen, "host")) {
      hosts++;
    } else if (mgop_hdr_name_eq(p, nlen, "expect")) {
      if (!mgop_hdr_name_eq(v, (size_t)(ve - v), "100-continue"))
        return mgop_req_fail(r, 417, "only Expect: 100-continue is supported");
      if (r->minor >= 1) r->expect_continue = 1;
    } else if (mgop_hdr_name_eq(p, nlen, "content-type")) {
      if ((size_t)(ve - v) >= sizeof(r->content_type)) return mgop_req_fail(r, 431, "Content-Type too long");
      memcpy(r->content_type, v, (size_t)(ve - v));
      r->content_type[ve - v] = 0;
    } else if (mgop_hdr_name_eq(p, nlen, "authorization")) {
      if ((size_t)(ve - v) >= sizeof(r->authorization)) return mgop_req_fail(r, 431, "Authorization too long");
      memcpy(r->authorization, v, (size_t)(ve - v));
      r->authorization[ve - v] = 0;
    }
  }
  if (hosts > 1) return mgop_req_fail(r, 400, "more than one Host header");
  if (hosts == 0 && r->minor >= 1) return mgop_req_fail(r, 400, "missing Host header");
  if (te && chunked)
    return mgop_req_fail(r, 411, "chunked request bodies are not supported; send Content-Length");
  if (te) return mgop_req_fail(r, 501, "unsupported Transfer-Encoding");
  if (cl_big) return mgop_req_fail(r, 413, "request body too large");
  r->content_length = cl_seen ? (long long)cl : -1;
  r->body_len = cl_seen ? (size_t)cl : 0;
  r->close = r->minor == 0 ? !keepalive : close_tok;
  r->head_len = he;
  r->status = 0;
  return MGOP_OK;
}

const char *mgop_http_reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 300 ? "OK" : status < 400 ? "Redirect" : status < 500 ? "Client Error" : "Server Error";
  }
}

/* --- buffers shared by every server ------------------------------------- */
_Static_assert(MGOP_SRV_BIG_SLOTS >= 2, "MGOP_SRV_BIG_SLOTS: one for a request body, one for its response");
static char *mgop_srv_pool_mem; /* MGOP_SRV_BIG_SLOTS slots of mgop_srv_big bytes */
static size_t mgop_srv_big;
static unsigned char mgop_srv_pool_used[MGOP_SRV_BIG_SLOTS];

int mgop_srv_pool_init(size_t slot_bytes) {
  if (mgop_srv_pool_mem) return MGOP_OK;
  if (slot_bytes < MGOP_SRV_BIG_MAX) slot_bytes = MGOP_SRV_BIG_MAX;
  if (!(mgop_srv_pool_mem = mgop_table_alloc(MGOP_SRV_BIG_SLOTS, slot_bytes)))
    return mgop_seterr(MGOP_ERR_NOMEM, "cannot allocate %d response buffers of %zu bytes", MGOP_SRV_BIG_SLOTS,
                       slot_bytes);
  mgop_srv_big = slot_bytes;
  return MGOP_OK;
}

static char *mgop_srv_big_buf(int i) { return mgop_srv_pool_mem + (size_t)i * mgop_srv_big; }
static char mgop_srv_drain[4096];

/* The slots are shared by every server (the serving thread's and, with
 * --metrics-secure, the metrics thread's): taken and given back under a lock. */
static pthread_mutex_t mgop_srv_pool_mu = PTHREAD_MUTEX_INITIALIZER;

/* A free slot, if at least min_free are free; else -1. */
static int mgop_srv_pool_take(int min_free) {
  int nfree = 0, slot = -1;
  if (!mgop_srv_pool_mem && mgop_srv_pool_init(MGOP_SRV_BIG_MAX)) return -1; /* sized at start-up */
  pthread_mutex_lock(&mgop_srv_pool_mu);
  for (int i = 0; i < MGOP_SRV_BIG_SLOTS; i++)
    if (!mgop_srv_pool_used[i]) {
      nfree++;
      if (slot < 0) slot = i;
    }
  if (slot >= 0 && nfree >= min_free) mgop_srv_pool_used[slot] = 1;
  else slot = -1;
  pthread_mutex_unlock(&mgop_srv_pool_mu);
  return slot;
}

static int mgop_srv_pool_get(void) { return mgop_srv_pool_take(1); }

/* A request body may take a slot only if one stays free for responses:
 * otherwise requests holding every slot could not be answered. */
static int mgop_srv_pool_get_for_request(void) { return mgop_srv_pool_take(2); }

static void mgop_srv_pool_put(int *slot) {
  if (*slot >= 0) {
    pthread_mutex_lock(&mgop_srv_pool_mu);
    mgop_srv_pool_used[*slot] = 0;
    pthread_mutex_unlock(&mgop_srv_pool_mu);
  }
  *slot = -1;
}

/* --- certificates -------------------------------------------------------- */
static void mgop_srv_gen_free(struct mgop_srv_tls *g) {
  if (!g->live) return;
  mbedtls_ssl_config_free(&g->conf);
  mbedtls_x509_crt_free(&g->crt);
  mbedtls_pk_free(&g->key);
  g->live = 0;
  g->refs = 0;
}

/* --- connections ---------------------------------------------------------- */
static void mgop_srv_free_conn(struct mgop_srv *s, struct mgop_srv_conn *c) {
  if (c->state == MGOP_SC_FREE) return;
  if (c->ssl_init) {
    mbedtls_ssl_free(&c->ssl);
    c->ssl_init = 0;
  }
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  mgop_srv_pool_put(&c->big_in);
  mgop_srv_pool_put(&c->big_out);
  if (c->gen >= 0) {
    struct mgop_srv_tls *g = &s->gens[c->gen];
    g->refs--;
    if (c->gen != s->cur && g->refs <= 0) mgop_srv_gen_free(g);
  }
  c->gen = -1;
  c->state = MGOP_SC_FREE;
  c->more = 0;
  s->stats.active--;
}

/* An incomplete request or idle keep-alive: what eviction may take. */
static int mgop_srv_idle(const struct mgop_srv_conn *c) {
  return c->state == MGOP_SC_READ && !c->have_head && c->rlen == 0 && c->requests > 0;
}
static int mgop_srv_incomplete(const struct mgop_srv_conn *c) {
  return c->state == MGOP_SC_HANDSHAKE || (c->state == MGOP_SC_READ && !c->have_head);
}

/* A slot first used: free, with no socket, TLS context or buffers */
static struct mgop_srv_conn *mgop_srv_conn_fresh(struct mgop_srv_conn *c) {
  c->state = MGOP_SC_FREE;
  c->fd = -1;
  c->gen = -1;
  c->ssl_init = 0;
  c->big_in = c->big_out = -1;
  return c;
}

/* A free slot (a slot never used is set up here, and the span grows),
 * else (evict=1) the one to close: the least recently used idle keep-alive
 * connection, a lingering one, or the oldest connection still sending its
 * head after a second. NULL when none. */
static struct mgop_srv_conn *mgop_srv_slot(struct mgop_srv *s, long long now, int evict) {
  struct mgop_srv_conn *best = NULL;
  int rank = 0;
  for (int i = 0; i < s->span; i++) {
    struct mgop_srv_conn *c = &s->conns[i];
    int cr = 0;
    if (c->state == MGOP_SC_FREE) return c;
    if (mgop_srv_idle(c)) cr = 3;
    else if (c->state == MGOP_SC_LINGER) cr = 2;
    else if (mgop_srv_incomplete(c) && now - c->accepted_ms >= 1000) cr = 1;
    if (cr > rank || (cr && cr == rank && c->last_ms < best->last_ms)) best = c, rank = cr;
  }
  if (s->span < s->nconns) return mgop_srv_conn_fresh(&s->conns[s->span++]);
  if (best && evict) {
    MGOP_LOG(MGOP_DEBUG, ("%s server: table full, closing the connection from %s", s->name, best->peer));
    s->stats.evicted++;
    mgop_srv_free_conn(s, best);
  }
  return best;
}

static int mgop_srv_recv(struct mgop_srv_conn *c, void *buf, size_t n) {
  int r = c->gen >= 0 ? mbedtls_ssl_read(&c->ssl, buf, n) : mgop_fd_recv(&c->fd, buf, n);
  if (r > 0) return r;
  if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
    c->events = r == MBEDTLS_ERR_SSL_WANT_WRITE ? POLLOUT : POLLIN;
    return MGOP_ERR_AGAIN;
  }
  if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || r == MBEDTLS_ERR_NET_CONN_RESET) return MGOP_ERR_CLOSED;
  return MGOP_ERR_IO;
}

static int mgop_srv_send(struct mgop_srv_conn *c, const void *buf, size_t n) {
  int r = c->gen >= 0 ? mbedtls_ssl_write(&c->ssl, buf, n) : mgop_fd_send(&c->fd, buf, n);
  if (r > 0) return r;
  if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
    c->events = r == MBEDTLS_ERR_SSL_WANT_READ ? POLLIN : POLLOUT;
    return MGOP_ERR_AGAIN;
  }
  return MGOP_ERR_IO;
}

/* Puts the head in front of the body when the body's buffer has room, so
 * the response leaves as one write (one TLS record, one segment): a client
 * that reads the head and then the body wakes once, not twice, which is
 * what its tail latency costs on a loaded machine. */
static void mgop_srv_coalesce(struct mgop_srv_conn *c, const char *body) {
  char *buf = NULL;
  size_t cap = 0;
  if (!c->wb_len) return;
  if (body == c->wbuf) buf = c->wbuf, cap = sizeof(c->wbuf);
  else if (c->big_out >= 0 && body == mgop_srv_big_buf(c->big_out)) buf = mgop_srv_big_buf(c->big_out), cap = mgop_srv_big;
  if (!buf || c->wh_len + c->wb_len > cap) return;
  memmove(buf + c->wh_len, buf, c->wb_len);
  memcpy(buf, c->whead, c->wh_len);
  c->wbody = buf;
  c->wb_len += c->wh_len;
  c->wh_len = 0;
}

/* Queues a response: head in whead, body (borrowed) after it. */
static void mgop_srv_queue(struct mgop_srv *s, struct mgop_srv_conn *c, int status, const char *ctype,
                           const char *extra, const char *body, size_t len, int head_only, long long now) {
  char date[40];
  struct tm tm;
  time_t tt = time(NULL);
  struct mgop_buf b;
  date[0] = 0;
  if (gmtime_r(&tt, &tm)) strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  mgop_buf_init(&b, c->whead, sizeof(c->whead));
  mgop_buf_printf(&b, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, mgop_http_reason(status), date);
  if (ctype && ctype[0]) mgop_buf_printf(&b, "Content-Type: %s\r\n", ctype);
  if (status >= 200 && status != 204 && status != 304) mgop_buf_printf(&b, "Content-Length: %zu\r\n", len);
  if (extra && extra[0]) mgop_buf_puts(&b, extra);
  if (status >= 200) {
    if (c->close_after) mgop_buf_puts(&b, "Connection: close\r\n");
    else if (c->req.minor == 0) mgop_buf_puts(&b, "Connection: keep-alive\r\n");
  }
  mgop_buf_puts(&b, "\r\n");
  if (b.overflow) { /* the handler's extra headers were too long */
    MGOP_LOG(MGOP_ERROR, ("%s server: response head over %zu bytes; answering 500", s->name, sizeof(c->whead)));
    status = 500;
    c->close_after = 1;
    len = 0;
    b.len = (size_t)snprintf(c->whead, sizeof(c->whead),
                             "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  }
  if (status >= 500) s->stats.responses_5xx++;
  else if (status >= 400) s->stats.responses_4xx++;
  c->wh_len = b.len;
  c->wh_off = 0;
  c->wbody = body;
  c->wb_len = head_only ? 0 : len;
  mgop_srv_coalesce(c, body);
  c->wb_off = 0;
  c->state = MGOP_SC_WRITE;
  c->events = POLLOUT;
  c->deadline_ms = now + s->write_timeout_ms;
}

/* A response the server makes itself; the connection closes after it. */
static void mgop_srv_error(struct mgop_srv *s, struct mgop_srv_conn *c, int status, const char *why, long long now) {
  int n = snprintf(c->wbuf, sizeof(c->wbuf), "%s\n", why ? why : mgop_http_reason(status));
  MGOP_LOG(MGOP_DEBUG, ("%s server: %d for %s: %s", s->name, status, c->peer, why ? why : ""));
  c->close_after = 1;
  c->have_head = 0;
  mgop_srv_pool_put(&c->big_in);
  mgop_srv_pool_put(&c->big_out);
  mgop_srv_queue(s, c, status, "text/plain; charset=utf-8", status == 503 ? "Retry-After: 1\r\n" : NULL, c->wbuf,
                 (size_t)n, !strcmp(c->req.method, "HEAD"), now);
}

static void mgop_srv_dispatch(struct mgop_srv *s, struct mgop_srv_conn *c, long long now) {
  struct mgop_srv_resp resp;
  const char *body = c->big_in >= 0 ? mgop_srv_big_buf(c->big_in) : (const char *)c->rbuf + c->req.head_len;
  size_t consumed;
  int status;
  memset(&resp, 0, sizeof(resp));
  c->big_out = mgop_srv_pool_get();
  if (c->big_out >= 0) mgop_buf_init(&resp.body, mgop_srv_big_buf(c->big_out), mgop_srv_big);
  else mgop_buf_init(&resp.body, c->wbuf, sizeof(c->wbuf));
  s->stats.requests++;
  s->handler(s->ctx, &c->req, body, c->req.body_len, &resp);
  /* the request is done with: drop it from the buffers */
  consumed = c->big_in >= 0 ? c->req.head_len : c->req.head_len + c->req.body_len;
  mgop_srv_pool_put(&c->big_in);
  memmove(c->rbuf, c->rbuf + consumed, c->rlen - consumed);
  c->rlen -= consumed;
  c->scan = 0;
  c->have_head = 0;
  c->continue_sent = 0;
  c->close_after = c->req.close || resp.close || c->requests + 1 >= s->keepalive_max;
  status = resp.status ? resp.status : 500;
  if (resp.body.overflow || status < 200 || status > 599) {
    int busy = resp.body.overflow && c->big_out < 0; /* a pool buffer might have held it */
    if (busy) s->stats.pool_exhausted++;
    MGOP_LOG(busy ? MGOP_WARN : MGOP_ERROR,
             ("%s server: %s %s: %s", s->name, c->req.method, c->req.path,
              busy ? "response larger than the connection buffer and the pool is in use; answering 503"
                   : resp.body.overflow ? "response larger than its buffer" : "handler set no valid status"));
    mgop_srv_error(s, c, busy ? 503 : 500,
                   busy ? "server busy; retry" : resp.body.overflow ? "response too large" : "no response", now);
    return;
  }
  if (c->big_out >= 0 && resp.body.len <= sizeof(c->wbuf)) { /* give the slot back at once */
    memcpy(c->wbuf, resp.body.p, resp.body.len);
    mgop_srv_pool_put(&c->big_out);
  }
  mgop_srv_queue(s, c, status, resp.content_type, resp.headers, c->big_out >= 0 ? mgop_srv_big_buf(c->big_out) : c->wbuf,
                 resp.body.len, !strcmp(c->req.method, "HEAD"), now);
}

static int mgop_srv_body_done(const struct mgop_srv_conn *c) {
  return c->big_in >= 0 ? c->body_got == c->req.body_len : c->rlen >= c->req.head_len + c->req.body_len;
}

/* Returns 1 when the state changed (go on), 0 to wait for readiness. */
static int mgop_srv_on_read(struct mgop_srv *s, struct mgop_srv_conn *c, long long now) {
  for (;;) {
    unsigned char *dst;
    size_t room;
    int n;
    if (!c->have_head && c->rlen > 0) {
      /* parse once a line has ended (or the buffer is full), not per byte */
      int ready = c->scan == 0 || c->rlen >= s->head_max || memchr(c->rbuf + c->scan, '\n', c->rlen - c->scan);
      c->scan = c->rlen;
      if (ready) {
        int rc = mgop_http_parse_request((const char *)c->rbuf, c->rlen, s->head_max, s->body_max, &c->req);
        if (rc == MGOP_OK) {
          c->have_head = 1;
          if (c->req.head_len + c->req.body_len > sizeof(c->rbuf)) { /* large body: a pool slot */
            size_t have = c->rlen - c->req.head_len;
            if ((c->big_in = mgop_srv_pool_get_for_request()) < 0) {
              s->stats.pool_exhausted++;
              mgop_srv_error(s, c, 503, "server busy; retry", now);
              return 1;
            }
            memcpy(mgop_srv_big_buf(c->big_in), c->rbuf + c->req.head_len, have);
            c->body_got = have;
            c->rlen = c->req.head_len;
          }
          if (c->req.expect_continue && !c->continue_sent && !mgop_srv_body_done(c)) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            c->continue_sent = 1;
            memcpy(c->whead, cont, sizeof(cont) - 1);
            c->wh_len = sizeof(cont) - 1;
            c->wh_off = c->wb_len = c->wb_off = 0;
            c->after_write_read = 1;
            c->state = MGOP_SC_WRITE;
            c->events = POLLOUT;
            return 1;
          }
        } else if (rc != MGOP_ERR_AGAIN) {
          mgop_srv_error(s, c, c->req.status, c->req.error, now);
          return 1;
        }
      }
    }
    if (c->have_head && mgop_srv_body_done(c)) {
      mgop_srv_dispatch(s, c, now);
      return 1;
    }
    if (c->have_head && c->big_in >= 0) {
      dst = (unsigned char *)mgop_srv_big_buf(c->big_in) + c->body_got;
      room = c->req.body_len - c->body_got;
    } else {
      dst = c->rbuf + c->rlen;
      room = sizeof(c->rbuf) - c->rlen;
    }
    if (room == 0) { /* head_max was raised past the buffer */
      mgop_srv_error(s, c, 431, "request head too large", now);
      return 1;
    }
    n = mgop_srv_recv(c, dst, room);
    if (n == MGOP_ERR_AGAIN) return 0;
    if (n < 0) {
      if (c->rlen || c->have_head)
        MGOP_LOG(MGOP_DEBUG, ("%s server: %s closed in the middle of a request", s->name, c->peer));
      mgop_srv_free_conn(s, c);
      return 0;
    }
    if (!c->have_head && c->rlen == 0 && c->requests > 0) /* a new request on a kept-alive connection */
      c->deadline_ms = now + s->request_timeout_ms;
    c->last_ms = now;
    if (c->have_head && c->big_in >= 0) c->body_got += (size_t)n;
    else c->rlen += (size_t)n;
  }
}

static void mgop_srv_linger(struct mgop_srv *s, struct mgop_srv_conn *c, long long now) {
  if (c->gen >= 0 && c->ssl_init) (void)mbedtls_ssl_close_notify(&c->ssl); /* best effort */
  shutdown(c->fd, SHUT_WR);
  mgop_srv_pool_put(&c->big_in);
  mgop_srv_pool_put(&c->big_out);
  c->state = MGOP_SC_LINGER;
  c->events = POLLIN;
  c->deadline_ms = now + MGOP_SRV_LINGER_MS;
  (void)s;
}

static int mgop_srv_on_write(struct mgop_srv *s, struct mgop_srv_conn *c, long long now) {
  while (c->wh_off < c->wh_len || c->wb_off < c->wb_len) {
    int head = c->wh_off < c->wh_len;
    int n = head ? mgop_srv_send(c, c->whead + c->wh_off, c->wh_len - c->wh_off)
                 : mgop_srv_send(c, c->wbody + c->wb_off, c->wb_len - c->wb_off);
    if (n == MGOP_ERR_AGAIN) return 0;
    if (n < 0) {
      MGOP_LOG(MGOP_DEBUG, ("%s server: writing to %s failed", s->name, c->peer));
      mgop_srv_free_conn(s, c);
      return 0;
    }
    if (head) c->wh_off += (size_t)n;
    else c->wb_off += (size_t)n;
  }
  mgop_srv_pool_put(&c->big_out);
  c->last_ms = now;
  if (c->after_write_read) { /* 100 Continue went out: now the body */
    c->after_write_read = 0;
    c->state = MGOP_SC_READ;
    c->events = POLLIN;
    c->deadline_ms = now + s->request_timeout_ms;
    return 1;
  }
  c->requests++;
  if (c->close_after) {
    mgop_srv_linger(s, c, now);
    return 1;
  }
  c->state = MGOP_SC_READ;
  c->events = POLLIN;
  c->deadline_ms = now + (c->rlen ? s->request_timeout_ms : s->idle_ms);
  return 1;
}

static void mgop_srv_on_linger(struct mgop_srv *s, struct mgop_srv_conn *c) {
  for (int i = 0; i < 16; i++) {
    ssize_t r = recv(c->fd, mgop_srv_drain, sizeof(mgop_srv_drain), 0);
    if (r > 0) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    break;
  }
  mgop_srv_free_conn(s, c);
}

static void mgop_srv_handshake_failed(struct mgop_srv *s, struct mgop_srv_conn *c, int r) {
  s->stats.handshake_errors++;
  if (r == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE) {
    MGOP_LOG(MGOP_WARN, ("%s server: %s ended the TLS handshake with an alert; a client that does not trust our "
                         "certificate does this: check the caBundle of the webhook configurations", s->name, c->peer));
  } else if (r == MBEDTLS_ERR_NET_CONN_RESET || r == MBEDTLS_ERR_SSL_CONN_EOF || r == MBEDTLS_ERR_NET_RECV_FAILED) {
    MGOP_LOG(MGOP_DEBUG, ("%s server: %s closed during the TLS handshake", s->name, c->peer));
  } else {
    char e[128];
    mbedtls_strerror(r, e, sizeof(e));
    MGOP_LOG(MGOP_INFO, ("%s server: TLS handshake with %s failed: %s (mbedtls -0x%04x)", s->name, c->peer, e, -r));
  }
  mgop_srv_free_conn(s, c);
}

/* Runs one connection's state machine as far as it goes without blocking. */
static void mgop_srv_progress(struct mgop_srv *s, struct mgop_srv_conn *c, long long now) {
  c->more = 0;
  for (int turn = 0; turn < 32; turn++) {
    switch (c->state) {
      case MGOP_SC_HANDSHAKE: {
        int r = mbedtls_ssl_handshake(&c->ssl);
        if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
          c->events = r == MBEDTLS_ERR_SSL_WANT_READ ? POLLIN : POLLOUT;
          return;
        }
        if (r) {
          mgop_srv_handshake_failed(s, c, r);
          return;
        }
        c->state = MGOP_SC_READ;
        c->events = POLLIN;
        break;
      }
      case MGOP_SC_READ:
        if (!mgop_srv_on_read(s, c, now)) return;
        break;
      case MGOP_SC_WRITE:
        if (!mgop_srv_on_write(s, c, now)) return;
        break;
      case MGOP_SC_LINGER: mgop_srv_on_linger(s, c); return;
      default: return;
    }
  }
  c->more = 1; /* pipelined requests: the rest on the next step, fairly */
}

static void mgop_srv_accept(struct mgop_srv *s, long long now) {
  for (int k = 0; k < 16; k++) {
    struct sockaddr_storage a;
    socklen_t alen = sizeof(a);
    struct mgop_srv_conn *c;
    int fd;
    if (s->tls && s->cur < 0) return;
    if (!mgop_srv_slot(s, now, 0)) return;
    fd = accept4(s->lfd, (struct sockaddr *)&a, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        MGOP_LOG(MGOP_WARN, ("%s server: accept: %s; pausing 100 ms", s->name, strerror(errno)));
        s->accept_pause_until = now + 100;
      }
      return;
    }
    c = mgop_srv_slot(s, now, 1); /* a free one, or one made free */
    memset(c, 0, offsetof(struct mgop_srv_conn, rbuf));
    c->fd = fd;
    c->gen = -1;
    c->big_in = c->big_out = -1;
    c->accepted_ms = c->last_ms = now;
    c->deadline_ms = now + s->request_timeout_ms;
    c->events = POLLIN;
    if (a.ss_family == AF_INET)
      inet_ntop(AF_INET, &((struct sockaddr_in *)&a)->sin_addr, c->peer, sizeof(c->peer));
    else if (a.ss_family == AF_INET6)
      inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&a)->sin6_addr, c->peer, sizeof(c->peer));
    mgop_sock_tune(fd);
    c->state = MGOP_SC_READ;
    s->stats.accepted++;
    if (++s->stats.active > s->stats.active_high) s->stats.active_high = s->stats.active;
    if (s->tls) {
      int r;
      c->gen = s->cur;
      s->gens[c->gen].refs++;
      mbedtls_ssl_init(&c->ssl);
      c->ssl_init = 1;
      if ((r = mbedtls_ssl_setup(&c->ssl, &s->gens[c->gen].conf))) {
        char e[128];
        mbedtls_strerror(r, e, sizeof(e));
        MGOP_LOG(MGOP_WARN, ("%s server: TLS setup for %s failed: %s", s->name, c->peer, e));
        mgop_srv_free_conn(s, c);
        continue;
      }
      mbedtls_ssl_set_bio(&c->ssl, &c->fd, mgop_fd_send, mgop_fd_recv, NULL);
      c->state = MGOP_SC_HANDSHAKE;
    }
    mgop_srv_progress(s, c, now);
  }
}

/* --- public ---------------------------------------------------------------- */
void mgop_srv_init(struct mgop_srv *s, const char *name, int tls, struct mgop_srv_conn *conns, int nconns,
                   mgop_srv_handler handler, void *ctx) {
  memset(s, 0, sizeof(*s));
  snprintf(s->name, sizeof(s->name), "%s", name ? name : "http");
  s->lfd = -1;
  s->port = -1;
  s->tls = tls;
  s->conns = conns;
  s->nconns = nconns;
  s->handler = handler;
  s->ctx = ctx;
  s->cur = -1;
  s->request_timeout_ms = MGOP_SRV_REQUEST_TIMEOUT_MS;
  s->write_timeout_ms = MGOP_SRV_WRITE_TIMEOUT_MS;
  s->idle_ms = MGOP_SRV_IDLE_MS;
  s->keepalive_max = MGOP_SRV_KEEPALIVE_MAX;
  s->head_max = MGOP_SRV_HEAD_MAX < MGOP_SRV_RBUF ? MGOP_SRV_HEAD_MAX : MGOP_SRV_RBUF;
  s->body_max = MGOP_SRV_BIG_MAX;
  /* slots are set up when first used (mgop_srv_slot) and scans stop at
   * span: the slots are 33 KiB each, and touching all of them at start was
   * a page fault apiece (65 for the three servers, 14 us each on a VM) */
  s->span = 0;
}

int mgop_srv_listen(struct mgop_srv *s, const char *addr) {
  char host[256], port[8];
  const char *colon, *ps;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof(ss);
  int fd = -1, one = 1, zero = 0, err = 0;
  if (addr[0] == '[') {
    const char *rb = strchr(addr, ']');
    if (!rb || rb[1] != ':' || (size_t)(rb - addr - 1) >= sizeof(host)) goto bad;
    snprintf(host, sizeof(host), "%.*s", (int)(rb - addr - 1), addr + 1);
    ps = rb + 2;
  } else {
    colon = strrchr(addr, ':');
    if (!colon || (size_t)(colon - addr) >= sizeof(host) || memchr(addr, ':', (size_t)(colon - addr))) goto bad;
    snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
    ps = colon + 1;
  }
  if (!ps[0] || strlen(ps) > 5 || strspn(ps, "0123456789") != strlen(ps) || atoi(ps) > 65535) goto bad;
  snprintf(port, sizeof(port), "%s", ps);
  if (!host[0]) { /* all interfaces: dual-stack [::], else 0.0.0.0 */
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    memset(&a6, 0, sizeof(a6));
    a6.sin6_family = AF_INET6;
    a6.sin6_port = htons((uint16_t)atoi(port));
    a6.sin6_addr = in6addr_any;
    fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
      if (bind(fd, (struct sockaddr *)&a6, sizeof(a6)) == 0 && listen(fd, 128) == 0) goto ok;
      err = errno;
      close(fd);
      if (err == EADDRINUSE || err == EACCES) goto fail;
    }
    memset(&a4, 0, sizeof(a4));
    a4.sin_family = AF_INET;
    a4.sin_port = htons((uint16_t)atoi(port));
    a4.sin_addr.s_addr = htonl(INADDR_ANY);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) { err = errno; goto fail; }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a4, sizeof(a4)) == 0 && listen(fd, 128) == 0) goto ok;
    err = errno;
    close(fd);
    goto fail;
  } else {
    struct addrinfo hints, *res = NULL, *ai;
    int r;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    if ((r = getaddrinfo(host, port, &hints, &res)))
      return mgop_seterr(MGOP_ERR_CONFIG, "%s server: cannot resolve listen address %s: %s", s->name, addr,
                         gai_strerror(r));
    for (ai = res; ai; ai = ai->ai_next) {
      fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0) { err = errno; continue; }
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
      if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 128) == 0) break;
      err = errno;
      close(fd);
      fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) goto fail;
  }
ok:
  if (s->lfd >= 0) close(s->lfd);
  s->lfd = fd;
  s->port = -1;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
    s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
  MGOP_LOG(MGOP_DEBUG, ("%s server listening on %s (port %d, %s)", s->name, addr, s->port, s->tls ? "https" : "http"));
  return MGOP_OK;
fail:
  return mgop_seterr(MGOP_ERR_IO, "%s server: cannot listen on %s: %s", s->name, addr, strerror(err));
bad:
  return mgop_seterr(MGOP_ERR_CONFIG, "%s server: listen address \"%s\" is not HOST:PORT, [IPv6]:PORT or :PORT",
                     s->name, addr);
}

int mgop_srv_port(const struct mgop_srv *s) { return s->lfd >= 0 ? s->port : -1; }

int mgop_srv_set_cert(struct mgop_srv *s, const char *cert, size_t cert_len, const char *key, size_t key_len) {
  struct mgop_srv_tls *g;
  int slot = -1, r, rc, old = s->cur;
  if ((rc = mgop_tls_global_init())) return rc;
  for (int i = 0; i < MGOP_SRV_TLS_GENS && slot < 0; i++)
    if (!s->gens[i].live) slot = i;
  if (slot < 0) { /* every slot busy: the oldest draining generation goes */
    for (int i = 0; i < MGOP_SRV_TLS_GENS; i++)
      if (i != s->cur && (slot < 0 || s->gens[i].seq < s->gens[slot].seq)) slot = i;
    MGOP_LOG(MGOP_INFO, ("%s server: closing %d connections still on a certificate two rotations old", s->name,
                         s->gens[slot].refs));
    for (int i = 0; i < s->span; i++)
      if (s->conns[i].state != MGOP_SC_FREE && s->conns[i].gen == slot) mgop_srv_free_conn(s, &s->conns[i]);
    mgop_srv_gen_free(&s->gens[slot]);
  }
  g = &s->gens[slot];
  memset(g, 0, sizeof(*g));
  mbedtls_ssl_config_init(&g->conf);
  mbedtls_x509_crt_init(&g->crt);
  mbedtls_pk_init(&g->key);
  g->live = 1;
  if ((rc = mgop_pki_parse_crt(&g->crt, cert, cert_len, "serving certificate")) ||
      (rc = mgop_pki_parse_key(&g->key, key, key_len, "serving key")))
    goto fail;
  if (mbedtls_pk_check_pair(&g->crt.pk, &g->key, mgop_pki_rng, &mgop_drbg)) {
    rc = mgop_seterr(MGOP_ERR_CONFIG, "the serving key does not belong to the serving certificate");
    goto fail;
  }
  if ((r = mbedtls_ssl_config_defaults(&g->conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                       MBEDTLS_SSL_PRESET_DEFAULT))) {
    rc = mgop_tls_fail(r, "TLS server defaults");
    goto fail;
  }
  mbedtls_ssl_conf_rng(&g->conf, mbedtls_ctr_drbg_random, &mgop_drbg);
  mbedtls_ssl_conf_min_tls_version(&g->conf, MBEDTLS_SSL_VERSION_TLS1_2);
  if ((r = mbedtls_ssl_conf_own_cert(&g->conf, &g->crt, &g->key))) {
    rc = mgop_tls_fail(r, "serving certificate");
    goto fail;
  }
  g->seq = ++s->seq;
  g->refs = 0;
  s->cur = slot;
  if (old >= 0) {
    s->stats.cert_swaps++;
    if (s->gens[old].refs <= 0) mgop_srv_gen_free(&s->gens[old]);
  }
  {
    char serial[80];
    mgop_hex_serial(&g->crt.serial, serial, sizeof(serial));
    MGOP_LOG(MGOP_DEBUG, ("%s server: serving certificate %s installed", s->name, serial));
  }
  return MGOP_OK;
fail:
  mgop_srv_gen_free(g);
  return rc;
}

void mgop_srv_cert_serial(const struct mgop_srv *s, char *out, size_t cap) {
  if (cap == 0) return;
  out[0] = 0;
  if (s->cur >= 0) mgop_hex_serial(&s->gens[s->cur].crt.serial, out, cap);
}

int mgop_srv_pollfds(struct mgop_srv *s, struct pollfd *pfd, int cap) {
  int n = 0;
  long long now = mgop_now_ms();
  if (s->lfd >= 0 && n < cap && (!s->tls || s->cur >= 0) && now >= s->accept_pause_until &&
      mgop_srv_slot(s, now, 0)) { /* listen only while a slot is free (it may grow the span) */
    pfd[n].fd = s->lfd;
    pfd[n].events = POLLIN;
    pfd[n++].revents = 0;
  }
  for (int i = 0; i < s->span && n < cap; i++) {
    const struct mgop_srv_conn *c = &s->conns[i];
    if (c->state == MGOP_SC_FREE) continue;
    pfd[n].fd = c->fd;
    pfd[n].events = c->events ? c->events : POLLIN;
    pfd[n++].revents = 0;
  }
  return n;
}

static int mgop_srv_buffered(const struct mgop_srv_conn *c) {
  if (c->more) return 1;
  return c->state == MGOP_SC_READ && c->ssl_init && c->gen >= 0 &&
         (mbedtls_ssl_get_bytes_avail(&c->ssl) > 0 || mbedtls_ssl_check_pending(&c->ssl));
}

void mgop_srv_step(struct mgop_srv *s, const struct pollfd *pfd, int n, long long now) {
  int accept_ready = 0;
  for (int i = 0; i < n; i++) {
    if (!pfd[i].revents) continue;
    if (pfd[i].fd == s->lfd) {
      accept_ready = 1;
      continue;
    }
    for (int k = 0; k < s->span; k++) {
      struct mgop_srv_conn *c = &s->conns[k];
      if (c->state != MGOP_SC_FREE && c->fd == pfd[i].fd) {
        mgop_srv_progress(s, c, now);
        break;
      }
    }
  }
  for (int k = 0; k < s->span; k++) {
    struct mgop_srv_conn *c = &s->conns[k];
    if (c->state == MGOP_SC_FREE) continue;
    if (mgop_srv_buffered(c)) mgop_srv_progress(s, c, now);
    if (c->state != MGOP_SC_FREE && now >= c->deadline_ms) {
      if (c->state != MGOP_SC_LINGER && !mgop_srv_idle(c)) {
        s->stats.timeouts++;
        MGOP_LOG(MGOP_DEBUG, ("%s server: %s timed out (%s)", s->name, c->peer,
                              c->state == MGOP_SC_HANDSHAKE ? "TLS handshake"
                              : c->state == MGOP_SC_WRITE   ? "writing the response"
                                                            : "reading the request"));
      }
      mgop_srv_free_conn(s, c);
    }
  }
  if (accept_ready && now >= s->accept_pause_until) mgop_srv_accept(s, now);
}

long long mgop_srv_wake_ms(const struct mgop_srv *s, long long now) {
  long long w = 60000;
  int full = s->span == s->nconns; /* a slot never used is free */
  for (int k = 0; k < s->span; k++)
    if (s->conns[k].state == MGOP_SC_FREE) full = 0;
  if (s->accept_pause_until > now && s->accept_pause_until - now < w) w = s->accept_pause_until - now;
  for (int k = 0; k < s->span; k++) {
    const struct mgop_srv_conn *c = &s->conns[k];
    long long d;
    if (c->state == MGOP_SC_FREE) continue;
    if (mgop_srv_buffered(c)) return 0;
    d = c->deadline_ms - now;
    if (full && mgop_srv_incomplete(c) && c->accepted_ms + 1000 - now < d) d = c->accepted_ms + 1000 - now;
    if (d < w) w = d;
  }
  return w < 0 ? 0 : w;
}

void mgop_srv_close(struct mgop_srv *s) {
  for (int k = 0; k < s->span; k++) mgop_srv_free_conn(s, &s->conns[k]);
  if (s->lfd >= 0) close(s->lfd);
  s->lfd = -1;
  for (int i = 0; i < MGOP_SRV_TLS_GENS; i++) mgop_srv_gen_free(&s->gens[i]);
  s->cur = -1;
}

/* ======================================================================
 * 3.10 multiadmin
 * ==================================================================== */
int mgop_http_call(struct mgop_conn *c, const char *host, const char *port, const char *method, const char *target,
                   const char *body, size_t n, struct mgop_buf *out, int *status, long long deadline) {
  char head[1536], clen[64] = "";
  struct mgop_http_resp resp;
  int len, rc, fd;
  *status = 0;
  if (body) snprintf(clen, sizeof(clen), "Content-Type: application/json\r\nContent-Length: %zu\r\n", n);
  len = snprintf(head, sizeof(head),
                 "%s %s HTTP/1.1\r\nHost: %s:%s\r\nUser-Agent: multigres-op/" MGOP_VERSION "\r\n"
                 "Accept: application/json\r\nConnection: close\r\n%s\r\n", method, target, host, port, clen);
  if (len < 0 || (size_t)len >= sizeof(head)) return mgop_seterr(MGOP_ERR_TOOBIG, "request target too long");
  mgop_conn_close(c);
  fd = mgop_tcp_connect(host, port, deadline);
  if (fd < 0) return fd;
  c->fd = fd;
  if ((rc = mgop_conn_write(c, head, (size_t)len, deadline)) ||
      (body && n && (rc = mgop_conn_write(c, body, n, deadline))) ||
      (rc = mgop_http_read_head(c, &resp, deadline)))
    goto done;
  *status = resp.status;
  out->len = 0;
  out->overflow = 0;
  rc = mgop_http_read_body(c, &resp, mgop_sink_buf, out, deadline);
  if (!rc && out->overflow) rc = mgop_seterr(MGOP_ERR_TOOBIG, "response body larger than %zu bytes", out->cap);
done:
  mgop_conn_close(c);
  return rc;
}

static int mgop_digits(const char *s, int n, int *out) {
  *out = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    *out = *out * 10 + (s[i] - '0');
  }
  return 0;
}

int mgop_rfc3339_s(const char *s, size_t n, long long *out) {
  int y, mo, d, h, mi, se, oh = 0, om = 0;
  size_t i = 19;
  long long days;
  if (n < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' ||
      s[16] != ':' || mgop_digits(s, 4, &y) || mgop_digits(s + 5, 2, &mo) || mgop_digits(s + 8, 2, &d) ||
      mgop_digits(s + 11, 2, &h) || mgop_digits(s + 14, 2, &mi) || mgop_digits(s + 17, 2, &se))
    return mgop_seterr(MGOP_ERR_PARSE, "not an RFC 3339 time");
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
    return mgop_seterr(MGOP_ERR_PARSE, "RFC 3339 time out of range");
  if (s[i] == '.') {
    for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++) {}
    if (s[i - 1] == '.') return mgop_seterr(MGOP_ERR_PARSE, "RFC 3339 fraction without digits");
  }
  if (i + 1 == n && (s[i] == 'Z' || s[i] == 'z')) {
    /* UTC */
  } else if (i + 6 == n && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':' && !mgop_digits(s + i + 1, 2, &oh) &&
             !mgop_digits(s + i + 4, 2, &om) && oh < 24 && om < 60) {
    if (s[i] == '-') oh = -oh, om = -om;
  } else {
    return mgop_seterr(MGOP_ERR_PARSE, "RFC 3339 time without a valid zone");
  }
  { /* days from civil (Howard Hinnant's algorithm) */
    int yy = y - (mo <= 2);
    int era = (yy >= 0 ? yy : yy - 399) / 400;
    unsigned yoe = (unsigned)(yy - era * 400);
    unsigned doy = (unsigned)((153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1);
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    days = (long long)era * 146097 + (long long)doe - 719468;
  }
  *out = days * 86400 + h * 3600 + mi * 60 + se - (oh * 3600 + om * 60);
  return MGOP_OK;
}

static int mgop_ma_status_of(const struct mgop_json *j, int t) {
  char v[40];
  long long num;
  if (t < 0) return MGOP_MA_UNKNOWN; /* zero values are omitted: UNKNOWN */
  if (mgop_json_is(j, t, JSMN_PRIMITIVE) && mgop_json_i64(j, t, &num) == MGOP_OK)
    return num >= 0 && num <= 3 ? (int)num : MGOP_MA_UNKNOWN;
  if (mgop_json_str(j, t, v, sizeof(v))) return MGOP_MA_UNKNOWN;
  if (!strcmp(v, "BACKUP_STATUS_INCOMPLETE")) return MGOP_MA_INCOMPLETE;
  if (!strcmp(v, "BACKUP_STATUS_COMPLETE")) return MGOP_MA_COMPLETE;
  if (!strcmp(v, "BACKUP_STATUS_FAILED")) return MGOP_MA_FAILED;
  return MGOP_MA_UNKNOWN;
}

int mgop_ma_parse_backups(const char *js, size_t n, struct mgop_ma_backups *out) {
  static _Thread_local jsmntok_t tok[MGOP_MA_TOKENS_MAX];
  struct mgop_json j;
  int rc, arr;
  memset(out, 0, sizeof(*out));
  if ((rc = mgop_json_parse(&j, js, n, tok, MGOP_MA_TOKENS_MAX))) return rc;
  if (!mgop_json_is(&j, 0, JSMN_OBJECT)) return mgop_seterr(MGOP_ERR_TYPE, "GetBackupsResponse is not an object");
  arr = mgop_json_key(&j, 0, "backups");
  if (arr < 0) return MGOP_OK; /* an empty list is omitted */
  if (!mgop_json_is(&j, arr, JSMN_ARRAY)) return mgop_seterr(MGOP_ERR_TYPE, "backups is not an array");
  for (int i = 0; i < j.tok[arr].size; i++) {
    int b = mgop_json_at(&j, arr, i), st, tt;
    char ts[64];
    long long t = 0;
    if (!mgop_json_is(&j, b, JSMN_OBJECT)) return mgop_seterr(MGOP_ERR_TYPE, "backups[%d] is not an object", i);
    out->n++;
    st = mgop_ma_status_of(&j, mgop_json_key(&j, b, "status"));
    out->complete += st == MGOP_MA_COMPLETE;
    out->failed += st == MGOP_MA_FAILED;
    out->incomplete += st == MGOP_MA_INCOMPLETE;
    tt = mgop_json_key(&j, b, "backupTime");
    if (mgop_json_str(&j, tt, ts, sizeof(ts)) || mgop_rfc3339_s(ts, strlen(ts), &t)) continue;
    if (t > out->newest_s) {
      out->newest_s = t;
      out->newest_status = st;
      if (mgop_json_str(&j, mgop_json_key(&j, b, "backupId"), out->newest_id, sizeof(out->newest_id)))
        out->newest_id[0] = 0;
    }
    if (st == MGOP_MA_COMPLETE && t > out->complete_s) {
      out->complete_s = t;
      if (mgop_json_str(&j, mgop_json_key(&j, b, "backupId"), out->complete_id, sizeof(out->complete_id)))
        out->complete_id[0] = 0;
      if (mgop_json_str(&j, mgop_json_key(&j, b, "type"), out->complete_type, sizeof(out->complete_type)))
        out->complete_type[0] = 0;
    }
  }
  return MGOP_OK;
}

/* One cron field into bits lo..hi; *any when it is a star (or star/1). */
static int mgop_cron_field(const char *f, size_t n, int lo, int hi, uint64_t *bits, int *any) {
  char part[32];
  size_t i = 0;
  *bits = 0;
  *any = (n == 1 && f[0] == '*') || (n == 3 && !strncmp(f, "*/1", 3));
  while (i < n) {
    size_t j = i, k;
    int a, b, step = 1;
    char *e;
    long v;
    while (j < n && f[j] != ',') j++;
    if (j == i || j - i >= sizeof(part)) return mgop_seterr(MGOP_ERR_PARSE, "empty or over-long cron list item");
    memcpy(part, f + i, j - i);
    part[j - i] = 0;
    k = 0;
    if (part[0] == '*') {
      a = lo, b = hi, k = 1;
    } else {
      v = strtol(part, &e, 10);
      if (e == part || v < lo || v > hi) return mgop_seterr(MGOP_ERR_PARSE, "cron value \"%s\" is not in %d-%d", part, lo, hi);
      a = b = (int)v;
      k = (size_t)(e - part);
      if (part[k] == '-') {
        v = strtol(part + k + 1, &e, 10);
        if (e == part + k + 1 || v < a || v > hi)
          return mgop_seterr(MGOP_ERR_PARSE, "cron range \"%s\" is not ascending within %d-%d", part, lo, hi);
        b = (int)v;
        k = (size_t)(e - part);
      } else if (part[k] == '/') {
        b = hi; /* N/S: from N to the end */
      }
    }
    if (part[k] == '/') {
      v = strtol(part + k + 1, &e, 10);
      if (e == part + k + 1 || v < 1 || v > hi - lo + 1) return mgop_seterr(MGOP_ERR_PARSE, "cron step in \"%s\"", part);
      step = (int)v;
      k = (size_t)(e - part);
    }
    if (part[k]) return mgop_seterr(MGOP_ERR_PARSE, "cron item \"%s\" has trailing characters", part);
    for (int x = a; x <= b; x += step) *bits |= 1ULL << x;
    i = j + 1;
    if (j + 1 == n && f[j] == ',') return mgop_seterr(MGOP_ERR_PARSE, "cron list ends with a comma");
  }
  return MGOP_OK;
}

int mgop_cron_parse(const char *s, struct mgop_cron *c) {
  static const int lo[5] = {0, 0, 1, 1, 0}, hi[5] = {59, 23, 31, 12, 7};
  uint64_t bits[5];
  int any[5], nf = 0, rc;
  memset(c, 0, sizeof(*c));
  for (const char *p = s; *p;) {
    const char *e;
    while (*p == ' ' || *p == '\t') p++;
    if (!*p) break;
    for (e = p; *e && *e != ' ' && *e != '\t'; e++) {}
    if (nf == 5) return mgop_seterr(MGOP_ERR_PARSE, "a cron schedule has 5 fields, \"%s\" has more", s);
    if ((rc = mgop_cron_field(p, (size_t)(e - p), lo[nf], hi[nf], &bits[nf], &any[nf]))) return rc;
    nf++;
    p = e;
  }
  if (nf != 5) return mgop_seterr(MGOP_ERR_PARSE, "a cron schedule has 5 fields (minute hour day month weekday), "
                                  "\"%s\" has %d", s, nf);
  c->minute = bits[0];
  c->hour = (uint32_t)bits[1];
  c->dom = (uint32_t)bits[2];
  c->month = (uint16_t)bits[3];
  c->dow = (uint8_t)((bits[4] | (bits[4] >> 7)) & 0x7f); /* 7 is Sunday too */
  c->dom_any = any[2];
  c->dow_any = any[4];
  return MGOP_OK;
}

static int mgop_cron_day(const struct mgop_cron *c, const struct tm *tm) {
  int dom = (c->dom >> tm->tm_mday) & 1, dow = (c->dow >> tm->tm_wday) & 1;
  if (!((c->month >> (tm->tm_mon + 1)) & 1)) return 0;
  if (c->dom_any || c->dow_any) return dom && dow;
  return dom || dow;
}

long long mgop_cron_next(const struct mgop_cron *c, long long after_s) {
  long long t = (after_s - (after_s % 60 + 60) % 60) + 60; /* the next whole minute */
  long long end = t + 5LL * 366 * 86400;
  while (t < end) {
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    if (!mgop_cron_day(c, &tm)) { /* to the next midnight */
      t += 86400 - (tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec);
      continue;
    }
    if (!((c->hour >> tm.tm_hour) & 1)) { /* to the next hour */
      t += 3600 - (tm.tm_min * 60 + tm.tm_sec);
      continue;
    }
    if (!((c->minute >> tm.tm_min) & 1)) {
      t += 60;
      continue;
    }
    return t;
  }
  return -1;
}


/* ======================================================================
 * 3.11 topo
 * ==================================================================== */
void mgop_pb_varint(struct mgop_buf *b, uint64_t v) {
  unsigned char tmp[10];
  size_t n = 0;
  do {
    tmp[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  mgop_buf_append(b, tmp, n);
}

void mgop_pb_tag(struct mgop_buf *b, unsigned field, unsigned wire) {
  mgop_pb_varint(b, ((uint64_t)field << 3) | (wire & 7));
}

void mgop_pb_uint(struct mgop_buf *b, unsigned field, uint64_t v) {
  if (!v) return;
  mgop_pb_tag(b, field, MGOP_PB_VARINT);
  mgop_pb_varint(b, v);
}

void mgop_pb_bytes(struct mgop_buf *b, unsigned field, const void *p, size_t n) {
  mgop_pb_tag(b, field, MGOP_PB_LEN);
  mgop_pb_varint(b, n);
  mgop_buf_append(b, p, n);
}

void mgop_pb_str(struct mgop_buf *b, unsigned field, const char *s) {
  if (s && s[0]) mgop_pb_bytes(b, field, s, strlen(s));
}

size_t mgop_pb_msg_begin(struct mgop_buf *b, unsigned field) {
  mgop_pb_tag(b, field, MGOP_PB_LEN);
  return b->len;
}

void mgop_pb_msg_end(struct mgop_buf *b, size_t start) {
  unsigned char tmp[10];
  size_t body, n = 0;
  uint64_t v;
  if (b->overflow || start > b->len) return;
  body = b->len - start;
  v = body;
  do {
    tmp[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  if (b->len + n > b->cap) {
    b->overflow = 1;
    return;
  }
  memmove(b->p + start + n, b->p + start, body);
  memcpy(b->p + start, tmp, n);
  b->len += n;
}

static int mgop_pb_read_varint(const unsigned char *msg, size_t len, size_t *pos, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    unsigned char c;
    if (*pos >= len) return MGOP_ERR_PARSE;
    c = msg[(*pos)++];
    v |= (uint64_t)(c & 0x7f) << shift;
    if (!(c & 0x80)) {
      *out = v;
      return MGOP_OK;
    }
  }
  return MGOP_ERR_PARSE; /* more than 10 bytes */
}

int mgop_pb_next(const unsigned char *msg, size_t len, size_t *pos, struct mgop_pb_field *f) {
  uint64_t key, n;
  if (*pos >= len) return 0;
  memset(f, 0, sizeof(*f));
  f->start = *pos;
  if (mgop_pb_read_varint(msg, len, pos, &key) || (key >> 3) == 0 || (key >> 3) > 536870911u)
    return mgop_seterr(MGOP_ERR_PARSE, "protobuf: bad field key at byte %zu", f->start);
  f->field = (unsigned)(key >> 3);
  f->wire = (unsigned)(key & 7);
  switch (f->wire) {
  case MGOP_PB_VARINT:
    if (mgop_pb_read_varint(msg, len, pos, &f->v))
      return mgop_seterr(MGOP_ERR_PARSE, "protobuf: field %u: truncated varint", f->field);
    break;
  case MGOP_PB_I64:
  case MGOP_PB_I32: {
    size_t w = f->wire == MGOP_PB_I64 ? 8 : 4;
    if (len - *pos < w) return mgop_seterr(MGOP_ERR_PARSE, "protobuf: field %u: truncated fixed value", f->field);
    for (size_t i = 0; i < w; i++) f->v |= (uint64_t)msg[*pos + i] << (8 * i);
    *pos += w;
    break;
  }
  case MGOP_PB_LEN:
    if (mgop_pb_read_varint(msg, len, pos, &n) || n > len - *pos)
      return mgop_seterr(MGOP_ERR_PARSE, "protobuf: field %u: length past the end", f->field);
    f->p = msg + *pos;
    f->n = (size_t)n;
    *pos += (size_t)n;
    break;
  default:
    return mgop_seterr(MGOP_ERR_PARSE, "protobuf: field %u: wire type %u is not supported", f->field, f->wire);
  }
  f->end = *pos;
  return 1;
}

static const char mgop_b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

long mgop_b64_encode(const void *in, size_t n, char *out, size_t cap) {
  const unsigned char *p = in;
  size_t need = (n + 2) / 3 * 4, o = 0;
  if (need + 1 > cap) return MGOP_ERR_TOOBIG;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    out[o++] = mgop_b64_alphabet[(v >> 18) & 63];
    out[o++] = mgop_b64_alphabet[(v >> 12) & 63];
    out[o++] = i + 1 < n ? mgop_b64_alphabet[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? mgop_b64_alphabet[v & 63] : '=';
  }
  out[o] = 0;
  return (long)o;
}

static int mgop_b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

int mgop_b64_decode(const char *in, size_t n, unsigned char *out, size_t cap, size_t *outn) {
  size_t o = 0;
  if (n % 4) return mgop_seterr(MGOP_ERR_PARSE, "base64: length %zu is not a multiple of 4", n);
  for (size_t i = 0; i < n; i += 4) {
    int v[4], pad = 0;
    for (int k = 0; k < 4; k++) {
      if (in[i + k] == '=' && i + 4 == n && k >= 2) {
        v[k] = 0;
        pad++;
        continue;
      }
      if (pad || (v[k] = mgop_b64_value(in[i + k])) < 0)
        return mgop_seterr(MGOP_ERR_PARSE, "base64: bad character at %zu", i + (size_t)k);
    }
    if (o + 3 - (size_t)pad > cap) return mgop_seterr(MGOP_ERR_TOOBIG, "base64: value larger than %zu bytes", cap);
    out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
    if (pad < 2) out[o++] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
    if (pad < 1) out[o++] = (unsigned char)((v[2] & 3) << 6 | v[3]);
  }
  *outn = o;
  return MGOP_OK;
}

/* --- etcd responses ------------------------------------------------------------ */
/* Scratch of the one thread that talks to etcd (the loop), as mgop_etcd_body. */
static jsmntok_t mgop_etcd_tok[MGOP_ETCD_TOKENS_MAX];
static char mgop_etcd_key_scratch[MGOP_ETCD_KEY_MAX + 1];
static unsigned char mgop_etcd_val_scratch[MGOP_ETCD_VALUE_MAX];

/* An int64 as the gateway writes it: a string, or a bare number; absent is 0. */
static int mgop_etcd_i64(const struct mgop_json *j, int obj, const char *key, long long *out) {
  int t = mgop_json_key(j, obj, key);
  char num[32], *end;
  *out = 0;
  if (t < 0) return MGOP_OK;
  if (mgop_json_is(j, t, JSMN_PRIMITIVE)) return mgop_json_i64(j, t, out);
  if (mgop_json_str(j, t, num, sizeof(num)) || !num[0]) return mgop_seterr(MGOP_ERR_TYPE, "etcd: %s is not an integer", key);
  errno = 0;
  *out = strtoll(num, &end, 10);
  if (*end || errno) return mgop_seterr(MGOP_ERR_TYPE, "etcd: %s is not an integer", key);
  return MGOP_OK;
}

/* A base64 string field into out (absent: empty). */
static int mgop_etcd_b64_field(const struct mgop_json *j, int obj, const char *key, unsigned char *out, size_t cap,
                               size_t *n) {
  int t = mgop_json_key(j, obj, key);
  struct mgop_str s;
  *n = 0;
  if (t < 0) return MGOP_OK;
  if (!mgop_json_is(j, t, JSMN_STRING)) return mgop_seterr(MGOP_ERR_TYPE, "etcd: %s is not a string", key);
  s = mgop_json_raw(j, t);
  return mgop_b64_decode(s.p, s.n, out, cap, n);
}

static int mgop_etcd_parse(struct mgop_json *j, const char *body, size_t n) {
  if (mgop_json_parse(j, body, n, mgop_etcd_tok, MGOP_ETCD_TOKENS_MAX) || !mgop_json_is(j, 0, JSMN_OBJECT))
    return mgop_seterr(MGOP_ERR_PARSE, "etcd: the response is not a JSON object");
  return MGOP_OK;
}

static int mgop_etcd_header_rev(const struct mgop_json *j, long long *revision) {
  long long rev;
  int rc = mgop_etcd_i64(j, mgop_json_key(j, 0, "header"), "revision", &rev);
  if (!rc && revision) *revision = rev;
  return rc;
}

int mgop_etcd_parse_range(const char *body, size_t n, mgop_etcd_kv_fn fn, void *ctx, long long *revision) {
  struct mgop_json j;
  int kvs, rc;
  if ((rc = mgop_etcd_parse(&j, body, n)) || (rc = mgop_etcd_header_rev(&j, revision))) return rc;
  kvs = mgop_json_key(&j, 0, "kvs");
  if (kvs < 0) return MGOP_OK; /* no key matched */
  if (!mgop_json_is(&j, kvs, JSMN_ARRAY)) return mgop_seterr(MGOP_ERR_TYPE, "etcd: kvs is not a list");
  for (int i = 0; i < j.tok[kvs].size; i++) {
    int kv = mgop_json_at(&j, kvs, i);
    struct mgop_etcd_kv e;
    size_t kn;
    if (!mgop_json_is(&j, kv, JSMN_OBJECT)) return mgop_seterr(MGOP_ERR_TYPE, "etcd: kvs[%d] is not an object", i);
    memset(&e, 0, sizeof(e));
    if ((rc = mgop_etcd_b64_field(&j, kv, "key", (unsigned char *)mgop_etcd_key_scratch, MGOP_ETCD_KEY_MAX, &kn)) ||
        (rc = mgop_etcd_b64_field(&j, kv, "value", mgop_etcd_val_scratch, MGOP_ETCD_VALUE_MAX, &e.value_len)) ||
        (rc = mgop_etcd_i64(&j, kv, "create_revision", &e.create_revision)) ||
        (rc = mgop_etcd_i64(&j, kv, "mod_revision", &e.mod_revision)) ||
        (rc = mgop_etcd_i64(&j, kv, "version", &e.version)))
      return rc;
    mgop_etcd_key_scratch[kn] = 0;
    e.key = mgop_etcd_key_scratch;
    e.key_len = kn;
    e.value = mgop_etcd_val_scratch;
    if (fn && (rc = fn(ctx, &e))) return rc;
  }
  return MGOP_OK;
}

int mgop_etcd_parse_txn(const char *body, size_t n, int *succeeded, long long *revision) {
  struct mgop_json j;
  int rc, t;
  *succeeded = 0;
  if ((rc = mgop_etcd_parse(&j, body, n)) || (rc = mgop_etcd_header_rev(&j, revision))) return rc;
  t = mgop_json_key(&j, 0, "succeeded");
  if (t >= 0 && mgop_json_bool(&j, t, succeeded)) return mgop_seterr(MGOP_ERR_TYPE, "etcd: succeeded is not a boolean");
  return MGOP_OK;
}

int mgop_etcd_parse_delete(const char *body, size_t n, long long *deleted) {
  struct mgop_json j;
  int rc;
  if ((rc = mgop_etcd_parse(&j, body, n)) || (rc = mgop_etcd_header_rev(&j, NULL))) return rc;
  return mgop_etcd_i64(&j, 0, "deleted", deleted);
}

void mgop_etcd_error_message(const char *body, size_t n, char *out, size_t cap) {
  struct mgop_json j;
  out[0] = 0;
  if (mgop_etcd_parse(&j, body, n) == MGOP_OK &&
      (mgop_json_path_str(&j, 0, "message", out, cap) == MGOP_OK || mgop_json_path_str(&j, 0, "error", out, cap) == MGOP_OK) &&
      out[0])
    return;
  snprintf(out, cap, "%.*s", (int)(n > 200 ? 200 : n), body);
  for (char *p = out; *p; p++)
    if (*p == '\n' || *p == '\r') *p = ' ';
}

/* --- etcd client ----------------------------------------------------------------- */
static char mgop_etcd_body[MGOP_ETCD_BODY_MAX]; /* the one thread that talks to etcd: the loop */

void mgop_etcd_free(struct mgop_etcd *e) {
  if (e->kube_ready) mgop_kube_free(&e->kube);
  e->kube_ready = 0;
}

/* Points the client at endpoint i: scheme, host, port; drops the connection. */
static int mgop_etcd_select(struct mgop_etcd *e, int i) {
  char path[64];
  struct mgop_kubecfg *c = &e->cfg;
  e->current = i;
  mgop_conn_close(&e->kube.conn);
  if (mgop_url_parse(e->endpoints[i], c->scheme, sizeof(c->scheme), c->host, sizeof(c->host), c->port,
                     sizeof(c->port), path, sizeof(path)))
    return mgop_seterr(MGOP_ERR_CONFIG, "etcd endpoint %s is not a URL", e->endpoints[i]);
  if (!c->port[0]) snprintf(c->port, sizeof(c->port), "2379");
  if (!strcmp(c->scheme, "https") && !e->kube.tls.ready)
    return mgop_seterr(MGOP_ERR_CONFIG, "etcd endpoint %s is https but no CA certificate was given (caSecret)",
                       e->endpoints[i]);
  return MGOP_OK;
}

int mgop_etcd_init(struct mgop_etcd *e, const char *const *endpoints, int n, const void *ca, size_t ca_len,
                   const void *cert, size_t cert_len, const void *key, size_t key_len) {
  struct mgop_kubecfg *c = &e->cfg;
  int rc;
  mgop_etcd_free(e);
  memset(e, 0, offsetof(struct mgop_etcd, cfg));
  memset(c, 0, sizeof(*c));
  if (n <= 0 || n > MGOP_ETCD_ENDPOINTS_MAX) return mgop_seterr(MGOP_ERR_CONFIG, "etcd: %d endpoints (1 to %d)", n, MGOP_ETCD_ENDPOINTS_MAX);
  for (int i = 0; i < n; i++) {
    if (strlen(endpoints[i]) >= MGOP_ETCD_URL_MAX) return mgop_seterr(MGOP_ERR_TOOBIG, "etcd endpoint %.60s... is too long", endpoints[i]);
    snprintf(e->endpoints[i], MGOP_ETCD_URL_MAX, "%s", endpoints[i]);
  }
  e->nendpoints = n;
  e->timeout_ms = MGOP_ETCD_TIMEOUT_MS;
  if (ca_len >= sizeof(c->ca) || cert_len >= sizeof(c->cert) || key_len >= sizeof(c->key))
    return mgop_seterr(MGOP_ERR_TOOBIG, "etcd: a certificate or key is over %d bytes", MGOP_PEM_MAX);
  /* mbedTLS parses PEM only with its NUL included in the length */
  if (ca_len) memcpy(c->ca, ca, ca_len), c->ca[ca_len] = 0, c->ca_len = ca_len + 1;
  if (cert_len) memcpy(c->cert, cert, cert_len), c->cert[cert_len] = 0, c->cert_len = cert_len + 1;
  if (key_len) memcpy(c->key, key, key_len), c->key[key_len] = 0, c->key_len = key_len + 1;
  snprintf(c->scheme, sizeof(c->scheme), "%s", ca_len ? "https" : "http"); /* TLS set up when there is a CA */
  if ((rc = mgop_kube_init(&e->kube, c))) return rc;
  e->kube_ready = 1;
  e->kube.timeout_ms = e->timeout_ms;
  e->kube.peer = "etcd";
  return mgop_etcd_select(e, 0);
}

/* Appends "endpoint: reason" of one failed attempt to last_error. */
static void mgop_etcd_note(struct mgop_etcd *e, int i, const char *why) {
  size_t n = strlen(e->last_error);
  if (n + 8 >= sizeof(e->last_error)) return;
  snprintf(e->last_error + n, sizeof(e->last_error) - n, "%s%.120s: %.200s", n ? "; " : "", e->endpoints[i], why);
}

/* POST one request, trying each endpoint in turn from the current one. A
 * transport failure or a 5xx moves on; any other answer is the answer.
 * On failure last_error names every endpoint tried and why. */
static int mgop_etcd_call(struct mgop_etcd *e, const char *path, const char *body, size_t n, struct mgop_buf *out) {
  int start = e->current, rc = MGOP_ERR_CONFIG, status = 0;
  e->calls++;
  e->last_error[0] = 0;
  for (int k = 0; k < e->nendpoints; k++) {
    int i = (start + k) % e->nendpoints;
    if ((rc = mgop_etcd_select(e, i))) {
      mgop_etcd_note(e, i, mgop_errmsg());
      continue;
    }
    e->kube.timeout_ms = e->timeout_ms;
    rc = mgop_kube_request(&e->kube, "POST", path, "application/json", body, n, out, &status);
    if (rc == MGOP_OK && status == 200) {
      e->last_error[0] = 0;
      return MGOP_OK;
    }
    if (rc == MGOP_OK) {
      char why[240], what[300];
      mgop_etcd_error_message(out->p, out->len, why, sizeof(why));
      snprintf(what, sizeof(what), "%s answered HTTP %d: %s", path, status, why);
      mgop_etcd_note(e, i, what);
      rc = MGOP_ERR_STATUS;
      if (status < 500) break; /* a request it refuses: another member refuses it too */
      continue;
    }
    mgop_etcd_note(e, i, mgop_errmsg());
  }
  e->failures++;
  return mgop_seterr(rc ? rc : MGOP_ERR_STATUS, "%s", e->last_error);
}

static int mgop_etcd_b64_key(const char *key, char *out, size_t cap) {
  if (mgop_b64_encode(key, strlen(key), out, cap) < 0) return mgop_seterr(MGOP_ERR_TOOBIG, "etcd key %.80s is too long", key);
  return MGOP_OK;
}

int mgop_etcd_range(struct mgop_etcd *e, const char *key, int prefix, int keys_only, mgop_etcd_kv_fn fn, void *ctx) {
  char k64[MGOP_ETCD_KEY_MAX * 2], end64[MGOP_ETCD_KEY_MAX * 2], req[MGOP_ETCD_KEY_MAX * 5];
  struct mgop_buf b, out;
  int rc;
  if ((rc = mgop_etcd_b64_key(key, k64, sizeof(k64)))) return rc;
  mgop_buf_init(&b, req, sizeof(req));
  mgop_buf_printf(&b, "{\"key\":\"%s\"", k64);
  if (prefix) { /* every key with this prefix: range_end is the prefix with its last byte + 1 */
    char end[MGOP_ETCD_KEY_MAX + 1];
    size_t n = strlen(key);
    if (n == 0 || n > MGOP_ETCD_KEY_MAX) return mgop_seterr(MGOP_ERR_CONFIG, "etcd: bad prefix");
    memcpy(end, key, n + 1);
    while (n > 0 && (unsigned char)end[n - 1] == 0xff) end[--n] = 0;
    if (n == 0) return mgop_seterr(MGOP_ERR_CONFIG, "etcd: prefix of 0xff bytes");
    end[n - 1] = (char)((unsigned char)end[n - 1] + 1);
    end[n] = 0;
    if ((rc = mgop_etcd_b64_key(end, end64, sizeof(end64)))) return rc;
    mgop_buf_printf(&b, ",\"range_end\":\"%s\"", end64);
  }
  if (keys_only) mgop_buf_puts(&b, ",\"keys_only\":true");
  mgop_buf_puts(&b, "}");
  if (b.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "etcd range request too long");
  mgop_buf_init(&out, mgop_etcd_body, sizeof(mgop_etcd_body));
  if ((rc = mgop_etcd_call(e, "/v3/kv/range", b.p, b.len, &out))) return rc;
  return mgop_etcd_parse_range(out.p, out.len, fn, ctx, NULL);
}

/* A txn with one compare and one put on success. */
static int mgop_etcd_txn_put(struct mgop_etcd *e, const char *key, const void *val, size_t n, const char *target,
                             long long expect, int *succeeded) {
  static char req[MGOP_ETCD_VALUE_MAX * 2 + MGOP_ETCD_KEY_MAX * 4];
  char k64[MGOP_ETCD_KEY_MAX * 2];
  struct mgop_buf b, out;
  int rc;
  *succeeded = 0;
  if ((rc = mgop_etcd_b64_key(key, k64, sizeof(k64)))) return rc;
  if (n > MGOP_ETCD_VALUE_MAX) return mgop_seterr(MGOP_ERR_TOOBIG, "etcd value for %s is over %d bytes", key, MGOP_ETCD_VALUE_MAX);
  mgop_buf_init(&b, req, sizeof(req));
  mgop_buf_printf(&b, "{\"compare\":[{\"key\":\"%s\",\"target\":\"%s\",\"result\":\"EQUAL\",\"%s\":\"%lld\"}],"
                      "\"success\":[{\"request_put\":{\"key\":\"%s\",\"value\":\"",
                  k64, target, !strcmp(target, "MOD") ? "mod_revision" : "version", expect, k64);
  if (b.cap - b.len < (n + 2) / 3 * 4 + 8) return mgop_seterr(MGOP_ERR_TOOBIG, "etcd txn request too long");
  b.len += (size_t)mgop_b64_encode(val, n, b.p + b.len, b.cap - b.len);
  mgop_buf_puts(&b, "\"}}]}");
  if (b.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "etcd txn request too long");
  mgop_buf_init(&out, mgop_etcd_body, sizeof(mgop_etcd_body));
  if ((rc = mgop_etcd_call(e, "/v3/kv/txn", b.p, b.len, &out))) return rc;
  return mgop_etcd_parse_txn(out.p, out.len, succeeded, NULL);
}

int mgop_etcd_create(struct mgop_etcd *e, const char *key, const void *val, size_t n, int *created) {
  return mgop_etcd_txn_put(e, key, val, n, "VERSION", 0, created);
}

int mgop_etcd_update(struct mgop_etcd *e, const char *key, const void *val, size_t n, long long mod_revision,
                     int *swapped) {
  return mgop_etcd_txn_put(e, key, val, n, "MOD", mod_revision, swapped);
}

static int mgop_etcd_u64(const struct mgop_json *j, int obj, const char *key, unsigned long long *out) {
  char v[32], *end;
  *out = 0;
  if (mgop_json_key(j, obj, key) < 0) return MGOP_OK; /* proto3: zero left out */
  if (mgop_json_path_str(j, obj, key, v, sizeof(v)) || !v[0]) return mgop_seterr(MGOP_ERR_PARSE, "etcd: %s is not a number", key);
  errno = 0;
  *out = strtoull(v, &end, 10);
  if (*end || errno || v[0] == '-') return mgop_seterr(MGOP_ERR_PARSE, "etcd: %s is not a number", key);
  return MGOP_OK;
}

int mgop_etcd_parse_status(const char *body, size_t n, struct mgop_etcd_status *st) {
  struct mgop_json j;
  int rc, errs;
  memset(st, 0, sizeof(*st));
  if ((rc = mgop_etcd_parse(&j, body, n)) || (rc = mgop_etcd_i64(&j, 0, "dbSize", &st->db_size)) ||
      (rc = mgop_etcd_i64(&j, 0, "dbSizeInUse", &st->db_in_use)) || (rc = mgop_etcd_u64(&j, 0, "leader", &st->leader)) ||
      (rc = mgop_etcd_u64(&j, mgop_json_key(&j, 0, "header"), "member_id", &st->member_id)))
    return rc;
  if (st->db_size < 0 || st->db_in_use < 0) return mgop_seterr(MGOP_ERR_PARSE, "etcd: a negative database size");
  errs = mgop_json_key(&j, 0, "errors");
  st->alarms = mgop_json_is(&j, errs, JSMN_ARRAY) ? j.tok[errs].size : 0;
  return MGOP_OK;
}

int mgop_etcd_parse_members(const char *body, size_t n, struct mgop_etcd_members *m) {
  struct mgop_json j;
  int rc, list;
  memset(m, 0, sizeof(*m));
  if ((rc = mgop_etcd_parse(&j, body, n))) return rc;
  list = mgop_json_key(&j, 0, "members");
  if (list >= 0 && !mgop_json_is(&j, list, JSMN_ARRAY)) return mgop_seterr(MGOP_ERR_PARSE, "etcd: members is not a list");
  for (int i = 0; list >= 0 && i < j.tok[list].size; i++) {
    int mem = mgop_json_at(&j, list, i), urls = mgop_json_key(&j, mem, "clientURLs");
    if (m->n == MGOP_ETCD_ENDPOINTS_MAX)
      return mgop_seterr(MGOP_ERR_TOOBIG, "etcd: more than %d members", MGOP_ETCD_ENDPOINTS_MAX);
    if ((rc = mgop_etcd_u64(&j, mem, "ID", &m->id[m->n]))) return rc;
    if (mgop_json_key(&j, mem, "name") >= 0 && mgop_json_path_str(&j, mem, "name", m->name[m->n], sizeof(m->name[0])))
      return mgop_seterr(MGOP_ERR_TOOBIG, "etcd: a member name is over %zu bytes", sizeof(m->name[0]) - 1);
    if (mgop_json_is(&j, urls, JSMN_ARRAY) && j.tok[urls].size > 0 &&
        mgop_json_str(&j, mgop_json_at(&j, urls, 0), m->url[m->n], sizeof(m->url[0])))
      return mgop_seterr(MGOP_ERR_TOOBIG, "etcd: a member's client URL is over %d bytes", MGOP_ETCD_URL_MAX - 1);
    m->n++; /* a member not started yet has no client URL: it stays, with url "" */
  }
  return MGOP_OK;
}

/* A maintenance call: an empty request, the answer in out. */
static int mgop_etcd_call_empty(struct mgop_etcd *e, const char *path, struct mgop_buf *out) {
  mgop_buf_init(out, mgop_etcd_body, sizeof(mgop_etcd_body));
  return mgop_etcd_call(e, path, "{}", 2, out);
}

int mgop_etcd_member_list(struct mgop_etcd *e, struct mgop_etcd_members *m) {
  struct mgop_buf out;
  int rc = mgop_etcd_call_empty(e, "/v3/cluster/member/list", &out);
  return rc ? rc : mgop_etcd_parse_members(out.p, out.len, m);
}

int mgop_etcd_status(struct mgop_etcd *e, struct mgop_etcd_status *st) {
  struct mgop_buf out;
  int rc = mgop_etcd_call_empty(e, "/v3/maintenance/status", &out);
  return rc ? rc : mgop_etcd_parse_status(out.p, out.len, st);
}

int mgop_etcd_defragment(struct mgop_etcd *e, long long timeout_ms) {
  struct mgop_buf out;
  long long was = e->timeout_ms;
  int rc;
  e->timeout_ms = timeout_ms;
  rc = mgop_etcd_call_empty(e, "/v3/maintenance/defragment", &out);
  e->timeout_ms = was;
  return rc;
}

int mgop_etcd_delete(struct mgop_etcd *e, const char *key, long long *deleted) {
  char k64[MGOP_ETCD_KEY_MAX * 2], req[MGOP_ETCD_KEY_MAX * 2 + 32];
  struct mgop_buf out;
  long long d = 0;
  int rc;
  if ((rc = mgop_etcd_b64_key(key, k64, sizeof(k64)))) return rc;
  snprintf(req, sizeof(req), "{\"key\":\"%s\"}", k64);
  mgop_buf_init(&out, mgop_etcd_body, sizeof(mgop_etcd_body));
  if ((rc = mgop_etcd_call(e, "/v3/kv/deleterange", req, strlen(req), &out))) return rc;
  rc = mgop_etcd_parse_delete(out.p, out.len, &d);
  if (deleted) *deleted = d;
  return rc;
}

/* --- Multigres records --------------------------------------------------------- */
/* Copies every field of old[0..n) whose number is not owned (owned[f] set). */
static int mgop_pb_keep_others(const unsigned char *old, size_t n, const unsigned char *owned, unsigned nowned,
                               struct mgop_buf *b) {
  size_t pos = 0;
  struct mgop_pb_field f;
  int r;
  while ((r = mgop_pb_next(old, n, &pos, &f)) == 1)
    if (f.field >= nowned || !owned[f.field]) mgop_buf_append(b, old + f.start, f.end - f.start);
  return r;
}

/* The bytes of the last field `field` (LEN) of msg, or NULL. */
static const unsigned char *mgop_pb_find(const unsigned char *msg, size_t n, unsigned field, size_t *len) {
  size_t pos = 0;
  struct mgop_pb_field f;
  const unsigned char *found = NULL;
  while (mgop_pb_next(msg, n, &pos, &f) == 1)
    if (f.field == field && f.wire == MGOP_PB_LEN) found = f.p, *len = f.n;
  return found;
}

static int mgop_pb_done(struct mgop_buf *b, const char *what) {
  if (b->overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "%s record larger than %zu bytes", what, b->cap);
  return MGOP_OK;
}

int mgop_topo_cell_encode(const struct mgop_topo_cell *c, const unsigned char *old, size_t old_len, struct mgop_buf *b) {
  static const unsigned char owned[] = {0, 1, 1, 1};
  mgop_pb_str(b, 1, c->name);
  for (int i = 0; i < c->naddrs; i++) mgop_pb_bytes(b, 2, c->addrs[i], strlen(c->addrs[i]));
  mgop_pb_str(b, 3, c->root);
  if (old && mgop_pb_keep_others(old, old_len, owned, sizeof(owned), b) < 0) return MGOP_ERR_PARSE;
  return mgop_pb_done(b, "Cell");
}

static int mgop_topo_backup_encode(const struct mgop_topo_db *d, const unsigned char *old, size_t old_len,
                                   struct mgop_buf *b) {
  static const unsigned char owned[] = {0, 1, 1, 1};
  size_t m = mgop_pb_msg_begin(b, 2), inner;
  if (d->s3) {
    inner = mgop_pb_msg_begin(b, 2);
    mgop_pb_str(b, 1, d->bucket);
    mgop_pb_str(b, 2, d->region);
    mgop_pb_str(b, 3, d->endpoint);
    mgop_pb_str(b, 4, d->key_prefix);
    mgop_pb_uint(b, 5, d->use_env_credentials ? 1 : 0);
  } else {
    inner = mgop_pb_msg_begin(b, 1);
    mgop_pb_str(b, 1, d->fs_path);
  }
  mgop_pb_msg_end(b, inner);
  mgop_pb_uint(b, 3, d->require_encryption ? 1 : 0);
  if (old && mgop_pb_keep_others(old, old_len, owned, sizeof(owned), b) < 0) return MGOP_ERR_PARSE;
  mgop_pb_msg_end(b, m);
  return MGOP_OK;
}

int mgop_topo_db_encode(const struct mgop_topo_db *d, const unsigned char *old, size_t old_len, struct mgop_buf *b) {
  static const unsigned char owned[] = {0, 1, 1, 1, 1};
  const unsigned char *old_backup = NULL;
  size_t old_backup_len = 0, m;
  mgop_pb_str(b, 1, d->name);
  if (old) old_backup = mgop_pb_find(old, old_len, 2, &old_backup_len);
  if (mgop_topo_backup_encode(d, old_backup, old_backup_len, b)) return MGOP_ERR_PARSE;
  for (int i = 0; i < d->ncells; i++) mgop_pb_bytes(b, 3, d->cells[i], strlen(d->cells[i]));
  m = mgop_pb_msg_begin(b, 4);
  mgop_pb_str(b, 1, d->policy_name);
  mgop_pb_uint(b, 3, (uint64_t)d->quorum_type);
  mgop_pb_uint(b, 4, (uint64_t)(uint32_t)d->required_count);
  mgop_pb_msg_end(b, m);
  if (old && mgop_pb_keep_others(old, old_len, owned, sizeof(owned), b) < 0) return MGOP_ERR_PARSE;
  return mgop_pb_done(b, "Database");
}

/* --- records as JSON --------------------------------------------------------------- */
/* The string field `field` of msg (last one wins), as "key": value. */
static void mgop_pb_json_str(struct mgop_jw *w, const char *key, const unsigned char *msg, size_t n, unsigned field) {
  size_t len = 0;
  const unsigned char *p = mgop_pb_find(msg, n, field, &len);
  if (p) mgop_jw_key(w, key), mgop_jw_strn(w, (const char *)p, len);
}

/* Every occurrence of the repeated string field `field`, as "key": [...]. */
static void mgop_pb_json_strs(struct mgop_jw *w, const char *key, const unsigned char *msg, size_t n, unsigned field) {
  size_t pos = 0;
  struct mgop_pb_field f;
  int any = 0;
  while (mgop_pb_next(msg, n, &pos, &f) == 1) {
    if (f.field != field || f.wire != MGOP_PB_LEN) continue;
    if (!any++) mgop_jw_key(w, key), mgop_jw_arr(w);
    mgop_jw_strn(w, (const char *)f.p, f.n);
  }
  if (any) mgop_jw_arr_end(w);
}

/* The varint field `field` (last one wins), or 0. */
static uint64_t mgop_pb_uint_of(const unsigned char *msg, size_t n, unsigned field) {
  size_t pos = 0;
  struct mgop_pb_field f;
  uint64_t v = 0;
  while (mgop_pb_next(msg, n, &pos, &f) == 1)
    if (f.field == field && f.wire == MGOP_PB_VARINT) v = f.v;
  return v;
}

/* Fields numbered >= first, or of a wire type we do not expect, by number. */
static int mgop_pb_json_others(struct mgop_jw *w, const unsigned char *msg, size_t n, unsigned first) {
  size_t pos = 0;
  struct mgop_pb_field f;
  int any = 0, r;
  while ((r = mgop_pb_next(msg, n, &pos, &f)) == 1) {
    if (f.field < first) continue;
    if (!any++) mgop_jw_key(w, "otherFields"), mgop_jw_arr(w);
    mgop_jw_i64(w, f.field);
  }
  if (any) mgop_jw_arr_end(w);
  return r;
}

int mgop_topo_cell_json(const unsigned char *p, size_t n, struct mgop_jw *w) {
  int r;
  mgop_jw_obj(w);
  mgop_pb_json_str(w, "name", p, n, 1);
  mgop_pb_json_strs(w, "serverAddresses", p, n, 2);
  mgop_pb_json_str(w, "root", p, n, 3);
  r = mgop_pb_json_others(w, p, n, 4);
  mgop_jw_obj_end(w);
  return r < 0 ? r : MGOP_OK;
}

static void mgop_topo_backup_json(struct mgop_jw *w, const unsigned char *p, size_t n) {
  size_t len = 0;
  const unsigned char *fs = mgop_pb_find(p, n, 1, &len), *s3;
  mgop_jw_obj(w);
  if (fs) {
    mgop_jw_key(w, "filesystem"), mgop_jw_obj(w);
    mgop_pb_json_str(w, "path", fs, len, 1);
    mgop_jw_obj_end(w);
  }
  if ((s3 = mgop_pb_find(p, n, 2, &len))) {
    mgop_jw_key(w, "s3"), mgop_jw_obj(w);
    mgop_pb_json_str(w, "bucket", s3, len, 1);
    mgop_pb_json_str(w, "region", s3, len, 2);
    mgop_pb_json_str(w, "endpoint", s3, len, 3);
    mgop_pb_json_str(w, "keyPrefix", s3, len, 4);
    if (mgop_pb_uint_of(s3, len, 5)) mgop_jw_key(w, "useEnvCredentials"), mgop_jw_bool(w, 1);
    mgop_jw_obj_end(w);
  }
  if (mgop_pb_uint_of(p, n, 3)) mgop_jw_key(w, "requireInitialRepoEncryption"), mgop_jw_bool(w, 1);
  mgop_pb_json_others(w, p, n, 4);
  mgop_jw_obj_end(w);
}

int mgop_topo_db_json(const unsigned char *p, size_t n, struct mgop_jw *w) {
  size_t len = 0;
  const unsigned char *sub;
  int r;
  mgop_jw_obj(w);
  mgop_pb_json_str(w, "name", p, n, 1);
  if ((sub = mgop_pb_find(p, n, 2, &len))) mgop_jw_key(w, "backupLocation"), mgop_topo_backup_json(w, sub, len);
  mgop_pb_json_strs(w, "cells", p, n, 3);
  if ((sub = mgop_pb_find(p, n, 4, &len))) {
    uint64_t q = mgop_pb_uint_of(sub, len, 3), c = mgop_pb_uint_of(sub, len, 4);
    mgop_jw_key(w, "bootstrapDurabilityPolicy"), mgop_jw_obj(w);
    mgop_pb_json_str(w, "policyName", sub, len, 1);
    if (q) {
      mgop_jw_key(w, "quorumType");
      if (q == MGOP_QUORUM_AT_LEAST_N) mgop_jw_str(w, "QUORUM_TYPE_AT_LEAST_N");
      else if (q == MGOP_QUORUM_MULTI_CELL_AT_LEAST_N) mgop_jw_str(w, "QUORUM_TYPE_MULTI_CELL_AT_LEAST_N");
      else mgop_jw_i64(w, (long long)q);
    }
    if (c) mgop_jw_key(w, "requiredCount"), mgop_jw_i64(w, (long long)(int32_t)c);
    mgop_jw_obj_end(w);
  }
  r = mgop_pb_json_others(w, p, n, 5);
  mgop_jw_obj_end(w);
  return r < 0 ? r : MGOP_OK;
}

/* A string field into out, "" when it does not fit (never a cut prefix). */
static void mgop_pb_copy_str(const struct mgop_pb_field *f, char *out, size_t cap) {
  if (f->wire != MGOP_PB_LEN || f->n >= cap) { out[0] = 0; return; }
  memcpy(out, f->p, f->n);
  out[f->n] = 0;
}

int mgop_topo_pooler_parse(const unsigned char *p, size_t n, struct mgop_topo_pooler *out) {
  struct mgop_pb_field f, g;
  size_t pos = 0, ipos;
  int r, q;
  memset(out, 0, sizeof(*out));
  while ((r = mgop_pb_next(p, n, &pos, &f)) == 1) {
    if (f.field == 6 && f.wire == MGOP_PB_VARINT) out->type = f.v > 1000 ? -1 : (int)f.v;
    if (f.field != 1 || f.wire != MGOP_PB_LEN) continue;
    for (ipos = 0; (q = mgop_pb_next(f.p, f.n, &ipos, &g)) == 1;) {
      if (g.field == 2) mgop_pb_copy_str(&g, out->cell, sizeof(out->cell));
      if (g.field == 3) mgop_pb_copy_str(&g, out->name, sizeof(out->name));
    }
    if (q < 0) return mgop_seterr(MGOP_ERR_PARSE, "MultiPooler.id is not a protobuf message");
  }
  return r < 0 ? mgop_seterr(MGOP_ERR_PARSE, "MultiPooler record is not a protobuf message") : MGOP_OK;
}


/* ======================================================================
 * 3.12 trace
 * ==================================================================== */
#include <ctype.h>
#include <pthread.h>
#include <strings.h>
#include <sys/random.h>

_Thread_local struct mgop_span *mgop_span_cur;

void mgop_hex(const unsigned char *p, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) out[2 * i] = digits[p[i] >> 4], out[2 * i + 1] = digits[p[i] & 15];
  out[2 * n] = 0;
}

static int mgop_all_zero(const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return 0;
  return 1;
}

int mgop_trace_ctx_valid(const struct mgop_trace_ctx *c) {
  return !mgop_all_zero(c->trace_id, 16) && !mgop_all_zero(c->span_id, 8);
}

static int mgop_unhex(const char *s, size_t n, unsigned char *out) {
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (v < 0) return -1; /* W3C: lower-case only */
    if (i % 2 == 0) out[i / 2] = (unsigned char)(v << 4);
    else out[i / 2] |= (unsigned char)v;
  }
  return 0;
}

int mgop_traceparent_parse(const char *s, size_t n, struct mgop_trace_ctx *out) {
  unsigned char version[1], flags[1];
  memset(out, 0, sizeof(*out));
  if (n < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' || mgop_unhex(s, 2, version) ||
      mgop_unhex(s + 3, 32, out->trace_id) || mgop_unhex(s + 36, 16, out->span_id) || mgop_unhex(s + 53, 2, flags))
    return mgop_seterr(MGOP_ERR_PARSE, "traceparent \"%.60s\" is not 00-<32 hex>-<16 hex>-<2 hex> (lower-case)", s);
  if (version[0] == 0xff || (version[0] == 0 && n != 55) || (n > 55 && s[55] != '-'))
    return mgop_seterr(MGOP_ERR_PARSE, "traceparent \"%.60s\": version %02x with %zu characters", s, version[0], n);
  if (!mgop_trace_ctx_valid(out)) return mgop_seterr(MGOP_ERR_PARSE, "traceparent \"%.60s\" has an all-zero id", s);
  out->flags = flags[0] & 1;
  return MGOP_OK;
}

void mgop_traceparent_format(const struct mgop_trace_ctx *c, char out[56]) {
  char t[33], sp[17];
  mgop_hex(c->trace_id, 16, t);
  mgop_hex(c->span_id, 8, sp);
  snprintf(out, 56, "00-%s-%s-%02x", t, sp, c->flags & 1);
}

/* Ids: a per-thread xorshift generator seeded from getrandom(2); ids
 * need to be unique, not secret. */
static void mgop_trace_random(unsigned char *p, size_t n) {
  static _Thread_local uint64_t state;
  while (!state)
    if (getrandom(&state, sizeof(state), 0) != (ssize_t)sizeof(state)) state = (uint64_t)mgop_now_us() * 0x9e3779b97f4a7c15ULL;
  do {
    for (size_t i = 0; i < n; i++) {
      state ^= state << 13, state ^= state >> 7, state ^= state << 17;
      p[i] = (unsigned char)(state >> 24);
    }
  } while (mgop_all_zero(p, n));
}

static long long mgop_unix_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The tracer: settings, the queue of ended spans, counters (one lock). */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int on, wake, stopping;
  struct mgop_trace_cfg cfg;
  struct mgop_trace_stats st;
  int head, count;
  struct mgop_span q[MGOP_TRACE_QUEUE_MAX];
  /* the exporter's own (one thread): its client and scratch */
  struct mgop_kubecfg kcfg;
  struct mgop_kube kube;
  struct mgop_span batch[MGOP_TRACE_QUEUE_MAX];
  char body[MGOP_TRACE_BODY_MAX];
  long long last_log_ms;
} mgop_tracer = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

int mgop_trace_on(void) { return __atomic_load_n(&mgop_tracer.on, __ATOMIC_ACQUIRE); }

/* The sampler's decision for a span of this trace, given its parent. */
static int mgop_trace_sampled(const unsigned char *trace_id, const struct mgop_trace_ctx *parent) {
  const struct mgop_trace_cfg *c = &mgop_tracer.cfg;
  int pb = c->sampler >= MGOP_SAMPLE_PB_ALWAYS_ON, base = pb ? c->sampler - MGOP_SAMPLE_PB_ALWAYS_ON : c->sampler;
  uint64_t x = 0;
  if (pb && parent) return parent->flags & 1;
  if (base != MGOP_SAMPLE_RATIO) return base == MGOP_SAMPLE_ALWAYS_ON;
  for (int i = 8; i < 16; i++) x = x << 8 | trace_id[i]; /* the ratio sampler reads the low 8 bytes */
  return c->ratio >= 1.0 || (double)x < c->ratio * 18446744073709551616.0;
}

void mgop_span_begin(struct mgop_span *s, const char *name, int kind, const struct mgop_trace_ctx *parent) {
  s->recording = 0;
  s->prev = mgop_span_cur;
  if (!mgop_trace_on()) return;
  if (!parent && mgop_span_cur) parent = &mgop_span_cur->ctx;
  memset(&s->link, 0, sizeof(s->link));
  memset(s->parent, 0, sizeof(s->parent));
  if (parent && mgop_trace_ctx_valid(parent)) {
    memcpy(s->ctx.trace_id, parent->trace_id, 16);
    memcpy(s->parent, parent->span_id, 8);
  } else {
    parent = NULL;
    mgop_trace_random(s->ctx.trace_id, 16);
  }
  mgop_trace_random(s->ctx.span_id, 8);
  s->ctx.flags = (unsigned char)mgop_trace_sampled(s->ctx.trace_id, parent);
  s->recording = s->ctx.flags & 1;
  s->kind = kind;
  s->status = MGOP_SPAN_UNSET;
  s->status_msg[0] = 0;
  s->attrs_len = 0;
  s->attrs_dropped = 0;
  snprintf(s->name, sizeof(s->name), "%s", name);
  s->start_ns = mgop_unix_ns();
  s->end_ns = 0;
  mgop_span_cur = s; /* also when not sampled: its ids go on log lines */
}

void mgop_span_continue(struct mgop_span *s, const struct mgop_trace_ctx *parent, const struct mgop_trace_ctx *link) {
  if (!mgop_trace_on() || mgop_span_cur != s) return;
  if (parent && mgop_trace_ctx_valid(parent)) {
    memcpy(s->ctx.trace_id, parent->trace_id, 16);
    memcpy(s->parent, parent->span_id, 8);
    s->ctx.flags = (unsigned char)mgop_trace_sampled(s->ctx.trace_id, parent);
    s->recording = s->ctx.flags & 1;
  }
  if (link && mgop_trace_ctx_valid(link)) s->link = *link;
}

/* Appends one KeyValue; `value` is the AnyValue's JSON. Past the buffer
 * the attribute is counted in droppedAttributesCount instead. */
static void mgop_span_kv(struct mgop_span *s, const char *key, const char *value) {
  struct mgop_buf b = mgop_buf_resume(s->attrs, sizeof(s->attrs), s->attrs_len);
  if (!s->recording) return;
  mgop_buf_puts(&b, s->attrs_len ? ",{\"key\":\"" : "{\"key\":\"");
  mgop_json_escape(&b, key, strlen(key));
  mgop_buf_printf(&b, "\",\"value\":%s}", value);
  if (b.overflow) s->attrs_dropped++;
  else s->attrs_len = b.len;
}

void mgop_span_str(struct mgop_span *s, const char *key, const char *v) {
  char val[700];
  struct mgop_buf b;
  if (!s->recording) return;
  mgop_buf_init(&b, val, sizeof(val));
  mgop_buf_puts(&b, "{\"stringValue\":\"");
  mgop_json_escape(&b, v, strlen(v));
  mgop_buf_puts(&b, "\"}");
  if (b.overflow) s->attrs_dropped++;
  else mgop_span_kv(s, key, mgop_buf_cstr(&b));
}

void mgop_span_int(struct mgop_span *s, const char *key, long long v) {
  char val[64];
  snprintf(val, sizeof(val), "{\"intValue\":\"%lld\"}", v);
  mgop_span_kv(s, key, val);
}

void mgop_span_bool(struct mgop_span *s, const char *key, int v) {
  mgop_span_kv(s, key, v ? "{\"boolValue\":true}" : "{\"boolValue\":false}");
}

void mgop_span_error(struct mgop_span *s, const char *fmt, ...) {
  va_list ap;
  if (!s->recording) return;
  s->status = MGOP_SPAN_ERROR;
  va_start(ap, fmt);
  vsnprintf(s->status_msg, sizeof(s->status_msg), fmt, ap);
  va_end(ap);
}

void mgop_span_end(struct mgop_span *s) {
  if (mgop_span_cur == s) mgop_span_cur = s->prev;
  if (!s->recording) return;
  s->end_ns = mgop_unix_ns();
  pthread_mutex_lock(&mgop_tracer.mu);
  if (mgop_tracer.count == mgop_tracer.cfg.queue_max) {
    mgop_tracer.st.dropped_full++;
  } else {
    mgop_tracer.q[(mgop_tracer.head + mgop_tracer.count++) % mgop_tracer.cfg.queue_max] = *s;
    if (mgop_tracer.count >= mgop_tracer.cfg.batch_max) pthread_cond_signal(&mgop_tracer.cv);
  }
  pthread_mutex_unlock(&mgop_tracer.mu);
}

void mgop_span_json(struct mgop_buf *b, const struct mgop_span *s) {
  char t[33], id[17];
  mgop_hex(s->ctx.trace_id, 16, t);
  mgop_hex(s->ctx.span_id, 8, id);
  mgop_buf_printf(b, "{\"traceId\":\"%s\",\"spanId\":\"%s\"", t, id);
  if (!mgop_all_zero(s->parent, 8)) mgop_hex(s->parent, 8, id), mgop_buf_printf(b, ",\"parentSpanId\":\"%s\"", id);
  mgop_buf_puts(b, ",\"name\":\"");
  mgop_json_escape(b, s->name, strlen(s->name));
  mgop_buf_printf(b, "\",\"kind\":%d,\"startTimeUnixNano\":\"%lld\",\"endTimeUnixNano\":\"%lld\",\"flags\":%d", s->kind,
                  s->start_ns, s->end_ns < s->start_ns ? s->start_ns : s->end_ns, 256 | (s->ctx.flags & 1));
  mgop_buf_printf(b, ",\"attributes\":[%.*s]", (int)s->attrs_len, s->attrs);
  if (s->attrs_dropped) mgop_buf_printf(b, ",\"droppedAttributesCount\":%d", s->attrs_dropped);
  if (mgop_trace_ctx_valid(&s->link)) {
    mgop_hex(s->link.trace_id, 16, t);
    mgop_hex(s->link.span_id, 8, id);
    mgop_buf_printf(b, ",\"links\":[{\"traceId\":\"%s\",\"spanId\":\"%s\"}]", t, id);
  }
  if (s->status) {
    mgop_buf_printf(b, ",\"status\":{\"code\":%d", s->status);
    if (s->status_msg[0]) {
      mgop_buf_puts(b, ",\"message\":\"");
      mgop_json_escape(b, s->status_msg, strlen(s->status_msg));
      mgop_buf_puts(b, "\"");
    }
    mgop_buf_puts(b, "}");
  }
  mgop_buf_puts(b, "}");
}

/* --- settings ------------------------------------------------------------ */
/* The signal's own variable (OTEL_EXPORTER_OTLP_TRACES_X) before the
 * general one (OTEL_EXPORTER_OTLP_X); "" when neither is set. */
static const char *mgop_otlp_var(mgop_getenv_fn get, const char *x, const char **name) {
  static _Thread_local char n1[64], n2[64];
  const char *v;
  snprintf(n1, sizeof(n1), "OTEL_EXPORTER_OTLP_TRACES_%s", x);
  snprintf(n2, sizeof(n2), "OTEL_EXPORTER_OTLP_%s", x);
  if ((v = get(n1)) && v[0]) return *name = n1, v;
  *name = n2;
  return (v = get(n2)) ? v : "";
}

static int mgop_env_ms(mgop_getenv_fn get, const char *var, long long dflt, long long max, long long *out) {
  const char *v = get(var);
  char *end;
  long long x;
  *out = dflt;
  if (!v || !v[0]) return MGOP_OK;
  errno = 0;
  x = strtoll(v, &end, 10);
  if (errno || *end || x < 0 || x > max)
    return mgop_seterr(MGOP_ERR_CONFIG, "%s=%.40s: expected a whole number of milliseconds, 0 to %lld", var, v, max);
  *out = x ? x : dflt; /* the spec's "0 means the default" for timeouts and delays */
  return MGOP_OK;
}

static int mgop_pct_decode(const char *s, size_t n, char *out, size_t cap) {
  size_t o = 0;
  while (n && (*s == ' ' || *s == '\t')) s++, n--;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) && isxdigit((unsigned char)s[i + 2])) {
      char h[3] = {s[i + 1], s[i + 2], 0};
      c = (unsigned char)strtol(h, NULL, 16);
      i += 2;
    }
    if (o + 1 >= cap) return -1;
    out[o++] = (char)c;
  }
  while (o && (out[o - 1] == ' ' || out[o - 1] == '\t')) o--;
  out[o] = 0;
  return 0;
}

/* "k1=v1,k2=v2" (W3C baggage-style, values percent-encoded) -> fn per pair. */
typedef int (*mgop_kv_fn)(void *ctx, const char *k, const char *v);
static int mgop_env_pairs(const char *var, const char *list, mgop_kv_fn fn, void *ctx) {
  const char *p = list;
  while (*p) {
    size_t n = strcspn(p, ","), eq;
    char k[256], v[MGOP_TRACE_ENV_MAX];
    while (n && (*p == ' ' || *p == '\t')) p++, n--;
    eq = strcspn(p, "=");
    if (n == 0) { p += *p == ','; continue; }
    if (eq >= n || eq == 0 || mgop_pct_decode(p, eq, k, sizeof(k)) || mgop_pct_decode(p + eq + 1, n - eq - 1, v, sizeof(v)))
      return mgop_seterr(MGOP_ERR_CONFIG, "%s: \"%.*s\" is not key=value (a comma-separated list, values "
                         "percent-encoded)", var, (int)(n > 80 ? 80 : n), p);
    if (fn(ctx, k, v)) return MGOP_ERR_CONFIG;
    p += n + (p[n] == ',');
  }
  return MGOP_OK;
}

static int mgop_trace_header(void *ctx, const char *k, const char *v) {
  struct mgop_trace_cfg *c = ctx;
  size_t n = strlen(c->headers);
  for (const char *q = k; *q; q++)
    if (!isalnum((unsigned char)*q) && !strchr("!#$%&'*+-.^_`|~", *q))
      return mgop_seterr(MGOP_ERR_CONFIG, "OTEL_EXPORTER_OTLP_HEADERS: \"%.60s\" is not a header name", k);
  if (strpbrk(v, "\r\n"))
    return mgop_seterr(MGOP_ERR_CONFIG, "OTEL_EXPORTER_OTLP_HEADERS: the value of %.60s has a line break", k);
  if (snprintf(c->headers + n, sizeof(c->headers) - n, "%s: %s\r\n", k, v) >= (int)(sizeof(c->headers) - n))
    return mgop_seterr(MGOP_ERR_CONFIG, "OTEL_EXPORTER_OTLP_HEADERS: more than %d bytes of headers", MGOP_TRACE_HEADERS_MAX);
  return MGOP_OK;
}

static int mgop_trace_resource_kv(struct mgop_trace_cfg *c, const char *k, const char *v) {
  struct mgop_buf b = mgop_buf_resume(c->resource, sizeof(c->resource), strlen(c->resource));
  mgop_buf_puts(&b, b.len ? ",{\"key\":\"" : "{\"key\":\"");
  mgop_json_escape(&b, k, strlen(k));
  mgop_buf_puts(&b, "\",\"value\":{\"stringValue\":\"");
  mgop_json_escape(&b, v, strlen(v));
  mgop_buf_puts(&b, "\"}}");
  if (b.overflow) return mgop_seterr(MGOP_ERR_CONFIG, "OTEL_RESOURCE_ATTRIBUTES: more than %d bytes as OTLP JSON",
                                     MGOP_TRACE_RESOURCE_MAX);
  mgop_buf_cstr(&b);
  return MGOP_OK;
}

static int mgop_trace_resource_attr(void *ctx, const char *k, const char *v) {
  if (!strcmp(k, "service.name")) return MGOP_OK; /* OTEL_SERVICE_NAME or ours, set first */
  return mgop_trace_resource_kv(ctx, k, v);
}

static int mgop_trace_sampler(struct mgop_trace_cfg *c, mgop_getenv_fn get) {
  static const char *names[] = {"always_on", "always_off", "traceidratio", "parentbased_always_on",
                                "parentbased_always_off", "parentbased_traceidratio"};
  const char *v = get("OTEL_TRACES_SAMPLER"), *arg = get("OTEL_TRACES_SAMPLER_ARG");
  c->sampler = MGOP_SAMPLE_PB_ALWAYS_ON;
  c->ratio = 1.0;
  if (v && v[0]) {
    c->sampler = -1;
    for (int i = 0; i < 6; i++)
      if (!strcmp(v, names[i])) c->sampler = i;
    if (c->sampler < 0)
      return mgop_seterr(MGOP_ERR_CONFIG, "OTEL_TRACES_SAMPLER=%.60s: expected always_on, always_off, traceidratio, "
                         "parentbased_always_on (the default), parentbased_always_off or parentbased_traceidratio", v);
  }
  if ((c->sampler == MGOP_SAMPLE_RATIO || c->sampler == MGOP_SAMPLE_PB_RATIO) && arg && arg[0]) {
    char *end;
    c->ratio = strtod(arg, &end);
    if (*end || !(c->ratio >= 0.0 && c->ratio <= 1.0))
      return mgop_seterr(MGOP_ERR_CONFIG, "OTEL_TRACES_SAMPLER_ARG=%.40s: expected a ratio from 0 to 1", arg);
  }
  return MGOP_OK;
}

/* Endpoint, exporter, protocol: whether tracing is on, and where to. */
static int mgop_trace_endpoint(struct mgop_trace_cfg *c, mgop_getenv_fn get) {
  const char *exp = get("OTEL_TRACES_EXPORTER"), *off = get("OTEL_SDK_DISABLED"), *name, *proto;
  const char *full = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), *base = get("OTEL_EXPORTER_OTLP_ENDPOINT");
  char scheme[8], host[256], port[8], path[1024];
  c->enabled = 0;
  if (off && !strcasecmp(off, "true")) return MGOP_OK;
  if (exp && exp[0] && strcmp(exp, "otlp")) {
    if (!strcmp(exp, "none")) return MGOP_OK;
    return mgop_seterr(MGOP_ERR_CONFIG, "OTEL_TRACES_EXPORTER=%.60s: this operator exports traces over OTLP only; "
                       "set otlp (the default) or none", exp);
  }
  if (full && full[0]) snprintf(c->url, sizeof(c->url), "%s", full);
  else if (base && base[0]) snprintf(c->url, sizeof(c->url), "%.*s/v1/traces", (int)(strlen(base) - (base[strlen(base) - 1] == '/')), base);
  else return MGOP_OK; /* no endpoint: no tracing, as the SDKs' "no-op when unset" */
  if (mgop_url_parse(c->url, scheme, sizeof(scheme), host, sizeof(host), port, sizeof(port), path, sizeof(path)))
    return mgop_seterr(MGOP_ERR_CONFIG, "%s: %s", full && full[0] ? "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" :
                       "OTEL_EXPORTER_OTLP_ENDPOINT", mgop_errmsg());
  proto = mgop_otlp_var(get, "PROTOCOL", &name);
  if (proto[0] && strcmp(proto, "http/json"))
    snprintf(c->note, sizeof(c->note), "%s=%.40s: this operator exports its traces as OTLP/HTTP with JSON encoding "
             "(HTTP/1.1; no gRPC or protobuf in the binary) to %.300s, which must be a collector's OTLP/HTTP receiver "
             "(port 4318 by default)", name, proto, c->url);
  c->enabled = 1;
  return MGOP_OK;
}

int mgop_trace_config(struct mgop_trace_cfg *c, mgop_getenv_fn get, const char *version) {
  const char *name, *v;
  long long q, b;
  int rc;
  memset(c, 0, sizeof(*c));
  if ((rc = mgop_trace_endpoint(c, get)) || !c->enabled) return rc;
  if ((rc = mgop_trace_sampler(c, get))) return rc;
  v = mgop_otlp_var(get, "HEADERS", &name);
  if ((rc = mgop_env_pairs(name, v, mgop_trace_header, c))) return rc;
  v = get("OTEL_SERVICE_NAME");
  if ((rc = mgop_trace_resource_kv(c, "service.name", v && v[0] ? v : "multigres-operator")) ||
      (rc = mgop_trace_resource_kv(c, "service.version", version)) ||
      (rc = mgop_env_pairs("OTEL_RESOURCE_ATTRIBUTES", (v = get("OTEL_RESOURCE_ATTRIBUTES")) ? v : "",
                           mgop_trace_resource_attr, c)))
    return rc;
  v = mgop_otlp_var(get, "TIMEOUT", &name);
  if ((rc = mgop_env_ms(get, name, 10000, 600000, &c->timeout_ms)) ||
      (rc = mgop_env_ms(get, "OTEL_BSP_SCHEDULE_DELAY", 5000, 600000, &c->delay_ms)) ||
      (rc = mgop_env_ms(get, "OTEL_BSP_EXPORT_TIMEOUT", 30000, 600000, &c->export_timeout_ms)) ||
      (rc = mgop_env_ms(get, "OTEL_BSP_MAX_QUEUE_SIZE", MGOP_TRACE_QUEUE_DEFAULT, MGOP_TRACE_QUEUE_MAX, &q)) ||
      (rc = mgop_env_ms(get, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", q < 512 ? q : 512, MGOP_TRACE_QUEUE_MAX, &b)))
    return rc;
  if (b > q)
    return mgop_seterr(MGOP_ERR_CONFIG, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE=%lld is above OTEL_BSP_MAX_QUEUE_SIZE=%lld; "
                       "a batch is taken from the queue", b, q);
  c->queue_max = (int)q, c->batch_max = (int)b;
  snprintf(c->ca_file, sizeof(c->ca_file), "%s", mgop_otlp_var(get, "CERTIFICATE", &name));
  snprintf(c->cert_file, sizeof(c->cert_file), "%s", mgop_otlp_var(get, "CLIENT_CERTIFICATE", &name));
  snprintf(c->key_file, sizeof(c->key_file), "%s", mgop_otlp_var(get, "CLIENT_KEY", &name));
  if (!strncmp(c->url, "https:", 6) && !c->ca_file[0])
    return mgop_seterr(MGOP_ERR_CONFIG, "%s is https, but OTEL_EXPORTER_OTLP_CERTIFICATE is not set: name the "
                       "collector's CA file (the static binary carries no system CA bundle), or use http://", c->url);
  if (!c->cert_file[0] != !c->key_file[0])
    return mgop_seterr(MGOP_ERR_CONFIG, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY "
                       "go together: set both or neither");
  return MGOP_OK;
}

/* --- the exporter ------------------------------------------------------------ */
static int mgop_trace_pem(const char *file, const char *what, unsigned char *buf, size_t *len) {
  size_t n = 0;
  if (!file[0]) return MGOP_OK;
  if (mgop_read_file(file, (char *)buf, MGOP_PEM_MAX - 1, &n))
    return mgop_seterr(MGOP_ERR_CONFIG, "%s %s: %s", what, file, mgop_errmsg());
  buf[n] = 0;
  *len = n + 1; /* mbedTLS parses PEM with its NUL */
  return MGOP_OK;
}

int mgop_trace_start(const struct mgop_trace_cfg *c) {
  struct mgop_kubecfg *k = &mgop_tracer.kcfg;
  int rc;
  if (mgop_trace_on()) { /* again (tests): the old client goes */
    __atomic_store_n(&mgop_tracer.on, 0, __ATOMIC_RELEASE);
    mgop_kube_free(&mgop_tracer.kube);
  }
  pthread_mutex_lock(&mgop_tracer.mu);
  mgop_tracer.cfg = *c;
  mgop_tracer.head = mgop_tracer.count = 0;
  mgop_tracer.stopping = mgop_tracer.wake = 0;
  memset(&mgop_tracer.st, 0, sizeof(mgop_tracer.st));
  pthread_mutex_unlock(&mgop_tracer.mu);
  if (!c->enabled) return MGOP_OK;
  memset(k, 0, sizeof(*k));
  snprintf(k->source, sizeof(k->source), "OTLP endpoint");
  if ((rc = mgop_url_parse(c->url, k->scheme, sizeof(k->scheme), k->host, sizeof(k->host), k->port, sizeof(k->port),
                           k->path_prefix, sizeof(k->path_prefix))) ||
      (rc = mgop_trace_pem(c->ca_file, "OTEL_EXPORTER_OTLP_CERTIFICATE", k->ca, &k->ca_len)) ||
      (rc = mgop_trace_pem(c->cert_file, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", k->cert, &k->cert_len)) ||
      (rc = mgop_trace_pem(c->key_file, "OTEL_EXPORTER_OTLP_CLIENT_KEY", k->key, &k->key_len)) ||
      (rc = mgop_kube_init(&mgop_tracer.kube, k)))
    return rc;
  mgop_tracer.kube.peer = "OTLP collector";
  mgop_tracer.kube.extra_headers = mgop_tracer.cfg.headers;
  __atomic_store_n(&mgop_tracer.on, 1, __ATOMIC_RELEASE);
  return MGOP_OK;
}

void mgop_trace_wake(void) {
  pthread_mutex_lock(&mgop_tracer.mu);
  mgop_tracer.wake = 1;
  pthread_cond_signal(&mgop_tracer.cv);
  pthread_mutex_unlock(&mgop_tracer.mu);
}

void mgop_trace_shutdown(void) {
  pthread_mutex_lock(&mgop_tracer.mu);
  mgop_tracer.stopping = mgop_tracer.wake = 1;
  pthread_cond_signal(&mgop_tracer.cv);
  pthread_mutex_unlock(&mgop_tracer.mu);
}

/* An export that is not the final flush gives up when the process stops. */
static int mgop_trace_abandoned(void) {
  int stopping;
  pthread_mutex_lock(&mgop_tracer.mu);
  stopping = mgop_tracer.stopping;
  pthread_mutex_unlock(&mgop_tracer.mu);
  return stopping && !mgop_io_unabortable;
}

void mgop_trace_get_stats(struct mgop_trace_stats *out) {
  pthread_mutex_lock(&mgop_tracer.mu);
  *out = mgop_tracer.st;
  pthread_mutex_unlock(&mgop_tracer.mu);
}

static void mgop_trace_count(unsigned long long *counter, unsigned long long n) {
  pthread_mutex_lock(&mgop_tracer.mu);
  *counter += n;
  pthread_mutex_unlock(&mgop_tracer.mu);
}

/* Waits on the queue's condition until `until_ms` (monotonic) or a wake. */
static void mgop_trace_wait_locked(long long until_ms) {
  long long left = until_ms - mgop_now_ms();
  if (left <= 0 || mgop_tracer.wake) return;
  mgop_cond_wait_ms(&mgop_tracer.cv, &mgop_tracer.mu, left);
}

/* A failure worth a log line at most every 30 s (a collector down for an
 * hour is one line a half-minute, and the counters say the rest). */
static void mgop_trace_complain(const char *what) {
  long long now = mgop_now_ms();
  if (mgop_tracer.last_log_ms && now - mgop_tracer.last_log_ms < 30000) return;
  mgop_tracer.last_log_ms = now;
  MGOP_LOG(MGOP_WARN, ("OTLP export to %s: %s", mgop_tracer.cfg.url, what));
}

/* POSTs one request body: retries 429/502/503/504 and transport errors
 * (Retry-After, else backoff from 0.5 s) until the deadline. 0, or the
 * error; *rejected when the collector refused the data itself. */
static int mgop_trace_post(const char *body, size_t n, long long deadline, int *rejected) {
  char resp[2048];
  struct mgop_buf out;
  long long backoff = 500;
  const char *path = mgop_tracer.kcfg.path_prefix[0] ? "" : "/";
  *rejected = 0;
  for (;;) {
    long long left = deadline - mgop_now_ms(), wait;
    int status = 0, rc;
    if (left <= 0) return mgop_seterr(MGOP_ERR_TIMEOUT, "export deadline passed");
    if (mgop_trace_abandoned()) return mgop_seterr(MGOP_ERR_TIMEOUT, "shutting down");
    mgop_tracer.kube.timeout_ms = left < mgop_tracer.cfg.timeout_ms ? left : mgop_tracer.cfg.timeout_ms;
    mgop_buf_init(&out, resp, sizeof(resp));
    rc = mgop_kube_request(&mgop_tracer.kube, "POST", path, "application/json", body, n, &out, &status);
    mgop_trace_count(&mgop_tracer.st.requests, 1);
    if (!rc && status / 100 == 2) return MGOP_OK;
    mgop_trace_count(&mgop_tracer.st.failures, 1);
    if (!rc && status != 429 && status != 502 && status != 503 && status != 504) {
      char why[400];
      snprintf(why, sizeof(why), "the collector answered HTTP %d and refused the spans: %.300s", status, mgop_buf_cstr(&out));
      *rejected = 1;
      mgop_trace_complain(why);
      return MGOP_ERR_STATUS;
    }
    if (rc) mgop_trace_complain(mgop_errmsg());
    wait = !rc && mgop_tracer.kube.last_retry_after_s > 0 ? mgop_tracer.kube.last_retry_after_s * 1000LL : backoff;
    backoff = backoff < 8000 ? backoff * 2 : backoff;
    if (mgop_now_ms() + wait >= deadline) return rc ? rc : MGOP_ERR_STATUS;
    pthread_mutex_lock(&mgop_tracer.mu);
    mgop_trace_wait_locked(mgop_now_ms() + wait);
    pthread_mutex_unlock(&mgop_tracer.mu);
  }
}

/* The body of one request: as many of the batch's spans from `from` as
 * fit; returns the index after the last one written. */
static int mgop_trace_body(const struct mgop_span *spans, int from, int n, struct mgop_buf *b) {
  static const char tail[] = "]}]}]}";
  int i;
  mgop_buf_init(b, mgop_tracer.body, sizeof(mgop_tracer.body) - sizeof(tail));
  mgop_buf_printf(b, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[%s]},\"scopeSpans\":[{\"scope\":"
                  "{\"name\":\"multigres-operator\",\"version\":\"" MGOP_VERSION "\"},\"spans\":[", mgop_tracer.cfg.resource);
  for (i = from; i < n; i++) {
    size_t at = b->len;
    if (i > from) mgop_buf_puts(b, ",");
    mgop_span_json(b, &spans[i]);
    if (b->overflow) { /* this one goes in the next request */
      b->overflow = 0;
      b->len = at;
      break;
    }
  }
  b->cap += sizeof(tail);
  mgop_buf_puts(b, tail);
  return i;
}

int mgop_trace_export_step(int flush, long long deadline_ms) {
  int n = 0;
  pthread_mutex_lock(&mgop_tracer.mu);
  if (!flush && mgop_tracer.count < mgop_tracer.cfg.batch_max)
    mgop_trace_wait_locked(mgop_now_ms() + mgop_tracer.cfg.delay_ms);
  flush |= mgop_tracer.wake;
  mgop_tracer.wake = 0;
  while (n < mgop_tracer.count && n < mgop_tracer.cfg.batch_max) {
    mgop_tracer.batch[n++] = mgop_tracer.q[mgop_tracer.head];
    mgop_tracer.head = (mgop_tracer.head + 1) % mgop_tracer.cfg.queue_max;
  }
  mgop_tracer.count -= n;
  pthread_mutex_unlock(&mgop_tracer.mu);
  if (n == 0) return !flush;
  for (int i = 0; i < n;) {
    struct mgop_buf b;
    int next = mgop_trace_body(mgop_tracer.batch, i, n, &b), rejected = 0;
    long long deadline = deadline_ms ? deadline_ms : mgop_now_ms() + mgop_tracer.cfg.export_timeout_ms;
    if (next == i) next = i + 1; /* a span larger than a request: cannot be (bounded fields), but never loop */
    if (!b.overflow && mgop_trace_post(b.p, b.len, deadline, &rejected) == MGOP_OK)
      mgop_trace_count(&mgop_tracer.st.exported, (unsigned long long)(next - i));
    else
      mgop_trace_count(rejected ? &mgop_tracer.st.dropped_rejected : &mgop_tracer.st.dropped_failed,
                       (unsigned long long)(next - i));
    i = next;
  }
  return 1;
}

#endif /* MULTIGRES_OP_IMPLEMENTED */
#endif /* MULTIGRES_OP_IMPLEMENTATION */
