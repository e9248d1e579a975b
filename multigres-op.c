/* multigres-op.c - the policy of multigres-op: kinds, reconcile, status,
 * flags and main. The mechanism is in multigres-op.h.
 *
 * Table of contents
 *   1. Kind table          every resource we watch, its role and paths
 *   2. Built-in defaults   the last level of the defaults chain
 *   3. Reconcile context   one root being reconciled (live, render or admission);
 *                          limits; the template cache; the operator's state (mgop_server)
 *   4. Resolution          inline spec > templateDefaults > "default" template > built-in
 *   5. Builders            desired objects: metadata, TopoServers, PDBs, workloads
 *   6. Apply               fingerprint check, server-side apply, prune
 *   7. Status              kstatus conditions and rollups; metric series; Events
 *   8. Reconcile one root  cells, shards and pools; the tree in three phases;
 *                          topology records; rolling pool pods, scale-down
 *   9. Events              watch events -> fingerprints, template uses, the work set
 *  10. Leader election     a coordination.k8s.io Lease; only the leader writes
 *  11. Admission webhook   POST /validate, its certificates and CA bundle
 *  12. Metrics             /metrics, /healthz, /readyz (on the serving thread)
 *  13. The loop            threads and what they share; the loop over watches and work;
 *                          the serving thread; the Lease thread
 *  14. render              the same builders, offline, for pull-request review
 *  15. Flags and main      (main behind MGOP_NO_MAIN so tests can include this file)
 */
#define MULTIGRES_OP_IMPLEMENTATION
#include "multigres-op.h"

#include <ctype.h>
#include <strings.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sched.h>
#include <sys/syscall.h>
#include <mbedtls/sha256.h>

#define MGOP_GROUP "multigres.com"
#define MGOP_API_VERSION "multigres.com/v1alpha1"
#define MGOP_MANAGER "multigres-operator"
#define MGOP_HASH_ANNOTATION "multigres.com/spec-hash"
/* Pre-encoded JSON literal; its length comes from sizeof, never by hand. */
#define MGOP_JW_LIT(w, lit) mgop_jw_raw((w), (lit), sizeof(lit) - 1)
#define MGOP_MANAGED_SELECTOR "app.kubernetes.io%2Fmanaged-by%3Dmultigres-operator"

/* ======================================================================
 * 1. Kind table
 * ==================================================================== */
enum mgop_role { MGOP_ROLE_ROOT, MGOP_ROLE_TEMPLATE, MGOP_ROLE_CHILD, MGOP_ROLE_WORKLOAD, MGOP_ROLE_OBSERVED };
enum mgop_kind_id {
  K_CLUSTER, K_CORET, K_CELLT, K_SHARDT,              /* user-edited     */
  K_TOPO, K_CELL, K_TG, K_SHARD,                      /* our children    */
  K_STS, K_DEPLOY, K_SVC, K_CM, K_PDB,                /* our workloads   */
  K_CERT,                                             /* ... if served   */
  K_POD, K_NODE,                                      /* only read       */
  K_COUNT
};
struct mgop_kind {
  const char *kind;
  const char *api_version; /* apiVersion field                         */
  const char *prefix;      /* /apis/GROUP/VERSION or /api/v1             */
  const char *plural;
  enum mgop_role role;
  int generation;          /* metadata.generation tracks spec changes  */
};
static const struct mgop_kind mgop_kinds[K_COUNT] = {
    [K_CLUSTER] = {"MultigresCluster", MGOP_API_VERSION, "/apis/" MGOP_API_VERSION, "multigresclusters", MGOP_ROLE_ROOT, 1},
    [K_CORET] = {"CoreTemplate", MGOP_API_VERSION, "/apis/" MGOP_API_VERSION, "coretemplates", MGOP_ROLE_TEMPLATE, 1},
    [K_CELLT] = {"CellTemplate", MGOP_API_VERSION, "/apis/" MGOP_API_VERSION, "celltemplates", MGOP_ROLE_TEMPLATE, 1},
    [K_SHARDT] = {"ShardTemplate", MGOP_API_VERSION, "/apis/" MGOP_API_VERSION, "shardtemplates", MGOP_ROLE_TEMPLATE, 1},
    [K_TOPO] = {"TopoServer", MGOP_API_VERSION, "/apis/" MGOP_API_VERSION, "toposervers", MGOP_ROLE_CHILD, 1},
    [K_CELL] = {"Cell", MGOP_API_VERSION, "/apis/" MGOP_API_VERSION, "cells", MGOP_ROLE_CHILD, 1},
    [K_TG] = {"TableGroup", MGOP_API_VERSION, "/apis/" MGOP_API_VERSION, "tablegroups", MGOP_ROLE_CHILD, 1},
    [K_SHARD] = {"Shard", MGOP_API_VERSION, "/apis/" MGOP_API_VERSION, "shards", MGOP_ROLE_CHILD, 1},
    [K_STS] = {"StatefulSet", "apps/v1", "/apis/apps/v1", "statefulsets", MGOP_ROLE_WORKLOAD, 1},
    [K_DEPLOY] = {"Deployment", "apps/v1", "/apis/apps/v1", "deployments", MGOP_ROLE_WORKLOAD, 1},
    [K_SVC] = {"Service", "v1", "/api/v1", "services", MGOP_ROLE_WORKLOAD, 0},
    [K_CM] = {"ConfigMap", "v1", "/api/v1", "configmaps", MGOP_ROLE_WORKLOAD, 0},
    [K_PDB] = {"PodDisruptionBudget", "policy/v1", "/apis/policy/v1", "poddisruptionbudgets", MGOP_ROLE_WORKLOAD, 1},
    /* cert-manager's, for internalTLS and certCommonName (section 5, TLS);
     * its watch is optional: without cert-manager it costs no requests */
    [K_CERT] = {"Certificate", "cert-manager.io/v1", "/apis/cert-manager.io/v1", "certificates", MGOP_ROLE_WORKLOAD, 1},
    /* why pods do not schedule (managed pods only), which zones exist (section 9) */
    [K_POD] = {"Pod", "v1", "/api/v1", "pods", MGOP_ROLE_OBSERVED, 0},
    [K_NODE] = {"Node", "v1", "/api/v1", "nodes", MGOP_ROLE_OBSERVED, 0},
};

/* A kind whose objects a cluster owns (its children and workloads): watched
 * by the managed-by label, pruned, read by the early turn. */
static int mgop_kind_owned(int kind) {
  return mgop_kinds[kind].role == MGOP_ROLE_CHILD || mgop_kinds[kind].role == MGOP_ROLE_WORKLOAD;
}

static void mgop_collection_path(int kind, const char *ns, char *out, size_t cap) {
  const struct mgop_kind *k = &mgop_kinds[kind];
  snprintf(out, cap, "%s%s%s/%s", k->prefix, ns[0] ? "/namespaces/" : "", ns, k->plural);
}

static void mgop_item_path(int kind, const char *ns, const char *name, char *out, size_t cap) {
  const struct mgop_kind *k = &mgop_kinds[kind];
  snprintf(out, cap, "%s/namespaces/%s/%s/%s", k->prefix, ns, k->plural, name);
}

/* ======================================================================
 * 2. Built-in defaults
 * The operator's own values, the last level of the chain. Written as JSON
 * so the same merge code applies them as applies templates.
 * ==================================================================== */
#define MGOP_IMAGE_ETCD "gcr.io/etcd-development/etcd:v3.6.7"
#define MGOP_IMAGE_MULTIGRES "ghcr.io/multigres/multigres:sha-4f39f4a"
#define MGOP_IMAGE_PGCTLD "ghcr.io/multigres/pgctld:sha-4f39f4a"
#define MGOP_IMAGE_ADMIN_WEB "ghcr.io/multigres/multiadmin-web:sha-b505c90"
/* the pool pods' metrics sidecar; not one of the image set's components (as
 * in the reference operator), so MULTIGRES_IMAGE_POSTGRES_EXPORTER changes it
 * for every cluster at once */
#define MGOP_IMAGE_POSTGRES_EXPORTER "quay.io/prometheuscommunity/postgres-exporter:v0.20.1"

static const char mgop_default_global_topo[] =
    "{\"etcd\":{\"image\":\"" MGOP_IMAGE_ETCD "\",\"replicas\":3,\"storage\":{\"size\":\"1Gi\"},"
    "\"resources\":{\"requests\":{\"cpu\":\"100m\",\"memory\":\"256Mi\"},\"limits\":{\"memory\":\"512Mi\"}},"
    "\"rootPath\":\"/multigres/global\"}}";

/* ======================================================================
 * 3. Reconcile context
 * ==================================================================== */
/* ---- Limits: the CRD's maxima (config/crd/gen-crds.py) and every bound of
 * one cluster derived from them, here and nowhere else. A bound the schema
 * cannot reach fits by construction; one it can (objects per cluster, the
 * process-wide tables) is reported when reached: a Stalled condition naming
 * the field and the limit, its Event, a log line and
 * multigres_operator_limit_reached_total{limit} (mgop_limit_reached). */
#define MGOP_CRD_NAMESPACE_MAX 63     /* a Kubernetes namespace               */
#define MGOP_CRD_CLUSTER_NAME_MAX 25  /* CEL on metadata.name                 */
#define MGOP_CRD_CELLS_MAX 50         /* spec.cells maxItems                  */
#define MGOP_CRD_CELL_NAME_MAX 30
#define MGOP_CRD_DATABASES_MAX 1      /* spec.databases maxItems              */
#define MGOP_CRD_DATABASE_NAME_MAX 30
#define MGOP_CRD_TABLEGROUPS_MAX 20   /* per database                         */
#define MGOP_CRD_TABLEGROUP_NAME_MAX 25
#define MGOP_CRD_SHARDS_PER_TG 1      /* a list map keyed by name, and CEL: name == '0-inf' */
#define MGOP_CRD_SHARD_NAME_MAX 25
#define MGOP_CRD_POOLS_MAX 8          /* pools maxProperties                  */
#define MGOP_CRD_POOL_NAME_MAX 62     /* template pool keys: < 63             */
#define MGOP_CRD_IMAGE_MAX 512        /* spec.images.*, etcd.image            */
#define MGOP_CRD_QUANTITY_MAX 63      /* storage.size                         */
#define MGOP_CRD_ROOT_PATH_MAX 512    /* etcd/external rootPath               */
#define MGOP_CRD_STORAGE_CLASS_MAX 63
/* what follows for one cluster */
#define MGOP_TABLEGROUPS_MAX (MGOP_CRD_DATABASES_MAX * MGOP_CRD_TABLEGROUPS_MAX)
#define MGOP_SHARDS_MAX (MGOP_TABLEGROUPS_MAX * MGOP_CRD_SHARDS_PER_TG)
/* distinct templates one cluster can name: CoreTemplates (globalTopoServer,
 * multiadmin, multiadminWeb, templateDefaults, "default"), one CellTemplate
 * per cell plus templateDefaults and "default", the same for shards */
#define MGOP_TREFS_MAX (5 + MGOP_CRD_CELLS_MAX + 2 + MGOP_SHARDS_MAX + 2)
/* Objects of the largest tree: 11 cluster-wide (global etcd 5, multiadmin
 * 6), 8 per cell (Cell, local TopoServer and its etcd 4, multigateway 2),
 * a TableGroup each, per shard 4 (Shard, 2 ConfigMaps, PDB) plus 2 per cell
 * of a multiorch and 2 per (pool, cell). */
#define MGOP_OBJECTS_OF(cells, tgs, shards, pool_cells) \
  (11 + 8 * (cells) + (tgs) + (shards) * (4 + 2 * (cells)) + 2 * (pool_cells))
/* The schema admits 8 pools in each of 50 cells for 20 shards: 18,511
 * objects, about 65 MB of JSON. The budget is what a 50-cell cluster with one
 * pool per cell and a shard needs, with room for more pools or table
 * groups; past it the cluster stalls (and the webhook refuses it) with a
 * message that names the field. */
#define MGOP_OBJECTS_SCHEMA_MAX \
  MGOP_OBJECTS_OF(MGOP_CRD_CELLS_MAX, MGOP_TABLEGROUPS_MAX, MGOP_SHARDS_MAX, \
                  MGOP_SHARDS_MAX * MGOP_CRD_POOLS_MAX * MGOP_CRD_CELLS_MAX)
#define MGOP_DESIRED_MAX 1024
#define MGOP_APPLIES_IN_FLIGHT_DEFAULT 4 /* --max-applies-in-flight */
_Static_assert(MGOP_OBJECTS_SCHEMA_MAX == 18511, "docs/operations.md (Limits) quotes this figure");
_Static_assert(MGOP_OBJECTS_OF(MGOP_CRD_CELLS_MAX, 1, 1, MGOP_CRD_CELLS_MAX) * 3 / 2 <= MGOP_DESIRED_MAX,
               "a 50-cell cluster with a pool in every cell fits with room to spare");
/* One turn's arena holds every desired object (a pool StatefulSet is about
 * 6 KiB, most others 1-3 KiB) and the resolved settings. Measured: 1024
 * objects of a 50-cell cluster (8 pools, local etcds) take 3.9 MiB; 6 KiB
 * an object leaves half again for larger inline settings. Pages are touched
 * only as far as the largest cluster reaches. */
#define MGOP_ARENA_BYTES ((size_t)MGOP_DESIRED_MAX * 6 * 1024)
/* A status patch, the root's being the largest: five conditions and the
 * message (each up to the 600 characters of a stall) and two more, a
 * summary per cell, every template the cluster resolved (names of at most
 * 63) and the image sets. */
#define MGOP_STATUS_BUF (7 * (200 + 600) + MGOP_CRD_CELLS_MAX * (MGOP_CRD_CELL_NAME_MAX + 64) + \
                         MGOP_TREFS_MAX * (63 + 4) + 2048 + MGOP_STATUS_TOPO_BUF + MGOP_STATUS_IMAGES_BUF)
/* A turn's children's status writes go out together (mgop_status_flush):
 * this many at most per round; more take further rounds, not a limit */
#define MGOP_STATUS_BATCH_MAX 64
/* status.topology: the root and the registered names (a removed cell stays
 * listed until pruned, so twice the cells) */
#define MGOP_STATUS_TOPO_BUF (MGOP_CRD_ROOT_PATH_MAX + (2 * MGOP_CRD_CELLS_MAX + 8) * (63 + 4) + 128)
/* StatefulSets whose PVCs one turn expands; more wait for the next turn */
#define MGOP_GROWS_MAX 32
/* Rolling (section 8): one shard's pool StatefulSets (a pool per cell) and
 * the pods a turn looks at; a shard with more pods is not rolled, and says so */
#define MGOP_ROLL_SETS_MAX (MGOP_CRD_POOLS_MAX * MGOP_CRD_CELLS_MAX)
#define MGOP_ROLL_PODS_MAX 1024
/* a held scale-down (the primary did not move) asks multiadmin again after */
#define MGOP_SCALE_HOLD_RETRY_MS 10000
/* switch-primary's catch-up timeout: multiadmin answers within our deadline */
#define MGOP_SWITCH_CATCHUP "1.5s"
_Static_assert(MGOP_MA_TIMEOUT_MS >= 2000, "MGOP_SWITCH_CATCHUP must end before the multiadmin call's deadline");
/* buffers that hold one CRD value (+1 for the NUL) */
#define MGOP_IMAGE_BUF (MGOP_CRD_IMAGE_MAX + 1)
/* The images of the Multigres components (section 4, image sets), in the
 * order of their revision lines: sorted by lower-cased name. */
enum { MGOP_IMG_MULTIADMIN, MGOP_IMG_MULTIADMIN_WEB, MGOP_IMG_MULTIGATEWAY, MGOP_IMG_MULTIORCH, MGOP_IMG_MULTIPOOLER,
       MGOP_IMG_POSTGRES, MGOP_IMG_COUNT };
struct mgop_img_set { char img[MGOP_IMG_COUNT][MGOP_IMAGE_BUF]; };
#define MGOP_IMG_REV_LEN 12 /* hex digits of a set's revision */
/* the applied-images annotation: the set as JSON, every image escaped */
#define MGOP_IMG_RECORD_BUF (MGOP_IMG_COUNT * (2 * MGOP_CRD_IMAGE_MAX + 24) + 8)
/* status.images: three sets (effective, applied, available) and the rest */
#define MGOP_STATUS_IMAGES_BUF (3 * MGOP_IMG_COUNT * (2 * MGOP_CRD_IMAGE_MAX + 24) + 256)
#define MGOP_QUANTITY_BUF (MGOP_CRD_QUANTITY_MAX + 1)
#define MGOP_ROOT_PATH_BUF (MGOP_CRD_ROOT_PATH_MAX + 1)
/* A metric label set, the widest one: shard="<Shard name>",pool="<pool>",
 * namespace="<ns>",state="desired". A Shard name is
 * cluster-db-tg-shard-<8 hex>; names are DNS labels, nothing to escape. */
#define MGOP_SHARD_CR_NAME_MAX (MGOP_CRD_CLUSTER_NAME_MAX + MGOP_CRD_DATABASE_NAME_MAX + \
                                MGOP_CRD_TABLEGROUP_NAME_MAX + MGOP_CRD_SHARD_NAME_MAX + 4 + 8)
#define MGOP_LABELS_MAX (sizeof("shard=\"\",pool=\"\",namespace=\"\",state=\"desired\"") + \
                         MGOP_SHARD_CR_NAME_MAX + MGOP_CRD_POOL_NAME_MAX + MGOP_CRD_NAMESPACE_MAX)
struct mgop_desired {
  int kind;
  char name[MGOP_NAME_MAX + 1];
  char *json;
  size_t len;
  uint64_t hash;
};

/* Offline render keeps the manifests it read here. */
struct mgop_manifest { int kind; char ns[64]; char name[254]; char *json; size_t len; };
#define MGOP_MANIFESTS_MAX 64

#define MGOP_TEMPLATE_FINALIZER "multigres.com/template-in-use"

struct mgop_rctx {
  int render;                 /* 1: offline, no API calls             */
  int live_templates;         /* render, but templates from the API   */
  int cached_templates;       /* render, templates from the watch cache
                                 (admission, on the serving thread)    */
  int admission;              /* render for a review: never reads the
                                 loop's tables (section 13)            */
  const char *ns, *name;
  char uid[40];
  long long generation;
  struct mgop_json root;      /* the MultigresCluster                 */
  int spec;                   /* its spec token                       */
  struct mgop_arena *arena;
  struct mgop_desired desired[MGOP_DESIRED_MAX];
  int ndesired;
  /* resolution results and errors (Stalled) */
  char stalled_reason[64];
  char stalled_msg[512];
  char resolved_core[300];    /* "CoreTemplate/NAME" or "built-in"    */
  int ncells, nshards, ntg, nshard_names;
  char tg_names[MGOP_TABLEGROUPS_MAX][254]; /* TableGroup CRs of this cluster */
  char shard_names[MGOP_SHARDS_MAX][254];   /* Shard CRs, with their table group */
  char shard_tg[MGOP_SHARDS_MAX][254];
  char shard_db[MGOP_SHARDS_MAX][32];
  char shard_tgn[MGOP_SHARDS_MAX][32];      /* its table group's and its own name */
  char shard_sn[MGOP_SHARDS_MAX][32];
  char shard_cron[MGOP_SHARDS_MAX][101];    /* its backup.schedule ("" none), jitter, retention */
  int shard_jitter[MGOP_SHARDS_MAX], shard_keep[MGOP_SHARDS_MAX];
  char where[240];            /* field path being built, for limit messages */
  char backup_warn[512];      /* a shard's RWO backup volume spans cells (admission warns) */
  /* StatefulSets whose volumes this turn grows in place (after the apply) */
  struct mgop_grow {
    char sts[64], vct[16];
    char size[MGOP_QUANTITY_BUF];
    char field[400];
    uint64_t hash;
  } grows[MGOP_GROWS_MAX];
  int ngrows, expanded;
  int pool_sets, orch_sets, pool_replicas;
  /* every template this turn looked up, found or not: a per-turn cache,
   * and the record of what the cluster uses (consumers, propagation) */
  struct mgop_tref {
    int kind, found, terminating;
    char name[254];
    struct mgop_json j;
  } trefs[MGOP_TREFS_MAX];
  int ntrefs;
  char applied_note[900];     /* what this turn applied, for its Event */
  size_t applied_note_len;
  /* render mode inputs */
  struct mgop_manifest *manifests;
  int nmanifests;
  /* counters for status and metrics */
  int applied, skipped, failed;
  char last_error[512];
  int root_ready;             /* the status this turn wrote says Ready */
  /* deletion policy (section 6, orphan and reclaim) */
  int orphan_policy;          /* annotation deletion-policy: Orphan    */
  int has_orphan_fin;         /* our finalizer is on the cluster       */
  int adopting;               /* orphans of a deleted cluster of this name exist */
  /* topology records (section 8): the global topology, what each cell's
   * record says, how the sync went, what status.topology lists */
  struct mgop_json topo_doc;  /* the resolved globalTopoServer         */
  char topo_addr[1024], topo_root[MGOP_ROOT_PATH_BUF];
  struct mgop_topo_want_cell {
    char name[64], addrs[1100], root[MGOP_ROOT_PATH_BUF];
    int defrag;                 /* a managed etcd with defragmentationEnabled */
  } topo_cells[MGOP_CRD_CELLS_MAX];
  int ntopo_cells;
  int topo_state;             /* 0 not tried, 1 registered and read back, -1 not */
  char topo_reason[32], topo_msg[480];
  int topo_cell_state[MGOP_CRD_CELLS_MAX];
  char topo_cell_msg[MGOP_CRD_CELLS_MAX][200];
  char topo_reg_cells[MGOP_CRD_CELLS_MAX * 2][64], topo_reg_dbs[8][64];
  int ntopo_reg_cells, ntopo_reg_dbs;
  /* rolling (section 8): per shard, what this turn's roll step or a held
   * scale-down says, for the Shard's RollingUpdate condition */
  char roll_note[MGOP_SHARDS_MAX][600];
  int roll_held[MGOP_SHARDS_MAX];         /* 1: a scale-down held (primary); 2: one drains */
  int password_ref_checked;   /* spec.postgresPasswordSecretRef read this turn */
  /* spec.postgresInitSecretsRef: the Secret and key, the pool pods' pieces */
  struct mgop_init_secrets {
    char name[254], key[254];
    int checked;                /* read and valid this turn             */
    char volume[254 + 254 + 200], mount[160], env[160]; /* ",{...}" or "" */
  } init;
  /* TLS (section 5): spec.internalTLS.enabled, certCommonName, issuerName */
  struct mgop_tls_want {
    int internal;
    char cn[254], issuer[254];
  } tls;
  /* images (section 4): the default set this cluster is on, and why */
  struct mgop_img_state {
    int resolved;
    int lazy;                     /* the update strategy in effect        */
    unsigned pinned;              /* components spec.images pins (bits)   */
    struct mgop_img_set applied;  /* the default set the children use     */
    char applied_rev[MGOP_IMG_REV_LEN + 1];
    int recorded;                 /* a complete record: 1 annotation, 2 status */
    int record_invalid;           /* the annotation was there but unusable */
    struct mgop_img_set record;
    char record_rev[MGOP_IMG_REV_LEN + 1];
    int record_stale;             /* the annotation must be (re)written   */
    const char *pending;          /* why a new default set waits, or NULL */
    char ack[65];                 /* spec.imageUpdatePolicy.acknowledgedRevision */
  } img;
};

/* A fresh context. The four tables read only below their counts (objects,
 * templates, volume growths, topology cells: 420 of its 474 KB) are not
 * zeroed, so a review or a turn does not first write half a megabyte;
 * appending initialises the element. */
static void mgop_rctx_clear(struct mgop_rctx *r) {
#define MGOP_AFTER(m) (offsetof(struct mgop_rctx, m) + sizeof(((struct mgop_rctx *)0)->m))
  static const size_t span[][2] = {
      {0, offsetof(struct mgop_rctx, desired)},
      {MGOP_AFTER(desired), offsetof(struct mgop_rctx, grows)},
      {MGOP_AFTER(grows), offsetof(struct mgop_rctx, trefs)},
      {MGOP_AFTER(trefs), offsetof(struct mgop_rctx, topo_cells)},
      {MGOP_AFTER(topo_cells), sizeof(struct mgop_rctx)},
  };
  _Static_assert(offsetof(struct mgop_rctx, desired) < offsetof(struct mgop_rctx, grows) &&
                     offsetof(struct mgop_rctx, grows) < offsetof(struct mgop_rctx, trefs) &&
                     offsetof(struct mgop_rctx, trefs) < offsetof(struct mgop_rctx, topo_cells),
                 "mgop_rctx_clear skips these four tables in this order");
#undef MGOP_AFTER
  for (size_t i = 0; i < sizeof(span) / sizeof(span[0]); i++) memset((char *)r + span[i][0], 0, span[i][1] - span[i][0]);
}

static struct mgop_kube *mgop_api_ptr; /* live mode API client            */

/* What the loop shares with the serving thread (the rules: section 13). */
static struct {
  pthread_mutex_t mu;          /* guards this struct's plain fields, the
                                  series table and mgop_stats (section 6) */
  struct mgop_kube_stats api;  /* the loop's counters, copied by mgop_publish */
  unsigned long long watch_events[K_COUNT], watch_relists[K_COUNT];
  size_t fingerprints, work_depth, arena_high;
  struct mgop_pki_pair offer;  /* a certificate for the webhook to serve   */
  int offered;
  int synced;                  /* atomic: every watch listed once          */
  long long beat_ms;           /* atomic: the loop turned, or sent a request */
  int stop_pipe[2];            /* written once at shutdown; never read     */
  int offer_pipe[2];           /* a byte per certificate offered           */
  int wake_pipe[2];            /* wakes the loop (the Lease was lost)      */
  int crd_outdated;            /* the installed CRDs are older than this binary */
  char crd_msg[400];           /* which, for /readyz                        */
} mgop_shared = {.mu = PTHREAD_MUTEX_INITIALIZER,
                 .stop_pipe = {-1, -1}, .offer_pipe = {-1, -1}, .wake_pipe = {-1, -1}};
static int mgop_may_write(void);       /* leader election (section 10)    */

/* Now as a metav1.MicroTime (RFC 3339, microseconds, UTC). */
static void mgop_micro_time(char *out, size_t cap) {
  struct timespec now;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &tm);
  snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
           tm.tm_min, tm.tm_sec, now.tv_nsec / 1000);
}

/* qsort comparator for an array of C strings. */
static int mgop_cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static void mgop_stall(struct mgop_rctx *r, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void mgop_stall(struct mgop_rctx *r, const char *reason, const char *fmt, ...) {
  va_list ap;
  if (r->stalled_reason[0]) return; /* keep the first cause */
  snprintf(r->stalled_reason, sizeof(r->stalled_reason), "%s", reason);
  va_start(ap, fmt);
  vsnprintf(r->stalled_msg, sizeof(r->stalled_msg), fmt, ap);
  va_end(ap);
}

/* A bound was reached: counted per limit (multigres_operator_limit_reached_total),
 * logged, and the cluster stalls with a message naming the field and the
 * limit; its status write makes the Warning Event, and the webhook refuses
 * the same spec with the same message. */
enum mgop_limit_id {
  MGOP_L_OBJECTS, MGOP_L_ARENA, MGOP_L_TEMPLATES_PER_CLUSTER, MGOP_L_VALUE_LENGTH, MGOP_L_CLUSTERS,
  MGOP_L_TEMPLATES, MGOP_L_FINGERPRINTS, MGOP_L_METRIC_LABELS, MGOP_L_METRIC_SERIES, MGOP_L_STS_FACTS,
  MGOP_L_UNSCHEDULABLE, MGOP_L_NODES, MGOP_L_COUNT
};
static const char *const mgop_limit_names[MGOP_L_COUNT] = {
    "objects_per_cluster", "reconcile_arena", "templates_per_cluster", "value_length", "clusters",
    "templates", "fingerprints", "metric_labels", "metric_series", "statefulset_facts", "unschedulable_pods", "nodes"};
static unsigned long long mgop_limit_hits[MGOP_L_COUNT];

/* Counted and logged only: a process-wide table, no cluster to stall. The
 * log line is written the 1st, 2nd, 4th, 8th... time, so a table that stays
 * full is visible without flooding the log every turn. */
static void mgop_limit_note(int limit, const char *what) {
  unsigned long long n = __atomic_add_fetch(&mgop_limit_hits[limit], 1, __ATOMIC_RELAXED); /* any thread */
  if ((n & (n - 1)) == 0)
    MGOP_LOG(MGOP_ERROR, ("limit %s reached (%llu time%s): %s", mgop_limit_names[limit], n, n == 1 ? "" : "s", what));
}

static void mgop_limit_reached(struct mgop_rctx *r, int limit, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void mgop_limit_reached(struct mgop_rctx *r, int limit, const char *fmt, ...) {
  char msg[sizeof(r->stalled_msg)];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (r->stalled_reason[0]) return; /* one cause per turn, counted once */
  if (!r->render || r->live_templates) __atomic_add_fetch(&mgop_limit_hits[limit], 1, __ATOMIC_RELAXED);
  MGOP_LOG(MGOP_WARN, ("MultigresCluster %s/%s: limit %s reached: %s", r->ns, r->name, mgop_limit_names[limit], msg));
  mgop_stall(r, "LimitReached", "%s (limit %s)", msg, mgop_limit_names[limit]);
}

/* A string value of the spec that must fit buf: the CRD's maxLength sizes
 * buf, so too long means the schema and the code disagree; say so. */
static int mgop_spec_str(struct mgop_rctx *r, const struct mgop_json *j, int t, const char *path, char *buf, size_t cap,
                         const char *field) {
  int rc = mgop_json_path_str(j, t, path, buf, cap);
  if (rc == MGOP_ERR_TOOBIG) {
    buf[0] = 0;
    mgop_limit_reached(r, MGOP_L_VALUE_LENGTH, "%s is longer than %zu characters", field, cap - 1);
  }
  return rc;
}

/* Parses JSON text into arena-allocated tokens. */
static int mgop_parse_arena(struct mgop_arena *a, const char *js, size_t n, struct mgop_json *out) {
  unsigned maxtok = (unsigned)(n / 2 + 16);
  jsmntok_t *tok;
  if (maxtok > MGOP_JSON_TOKENS_MAX) maxtok = MGOP_JSON_TOKENS_MAX;
  tok = mgop_arena_alloc(a, maxtok * sizeof(jsmntok_t));
  if (!tok) return mgop_seterr(MGOP_ERR_NOMEM, "reconcile arena exhausted");
  return mgop_json_parse(out, js, n, tok, maxtok);
}

/* The template cache: what the template watches last showed (metadata and
 * spec only), for admission on the serving thread, which must answer
 * without an API call. The loop writes it (section 9) under the write
 * lock; admission copies one template out under the read lock. */
#define MGOP_TEMPLATE_SLOTS 512           /* templates tracked (all namespaces) */
#define MGOP_TCACHE_BYTES (1024 * 1024)   /* their metadata+spec text           */
#define MGOP_TCACHE_WAIT_MS 500           /* admission's budget for the lock    */
struct mgop_tcache_row { uint64_t key; uint32_t off, len; int toobig; };
static struct {
  pthread_rwlock_t lock;
  struct mgop_tcache_row rows[MGOP_TEMPLATE_SLOTS];
  char text[MGOP_TCACHE_BYTES];
  size_t used;                /* text bytes, live and dead             */
  int synced;                 /* every template kind listed once       */
  int incomplete;             /* a template found no row: misses prove nothing */
  unsigned long long refused; /* templates too large for what is left  */
} mgop_tcache = {.lock = PTHREAD_RWLOCK_INITIALIZER};
static int mgop_tcache_enabled; /* live: the loop fills the template cache */

/* A template for admission: MGOP_ERR_NOTFOUND when the cache says it does
 * not exist, MGOP_ERR_AGAIN when the cache cannot tell (not synced yet,
 * no room for it, or the lock not had within the budget). */
static int mgop_tcache_get(struct mgop_rctx *r, int kind, const char *name, struct mgop_json *out) {
  uint64_t key = mgop_fp_key(mgop_kinds[kind].kind, r->ns, name);
  struct timespec until = mgop_realtime_in_ms(MGOP_TCACHE_WAIT_MS);
  char *mem = NULL;
  size_t n = 0;
  int rc = MGOP_ERR_NOTFOUND, toobig = 0, synced;
  if (pthread_rwlock_timedrdlock(&mgop_tcache.lock, &until))
    return mgop_seterr(MGOP_ERR_AGAIN, "the template cache was busy for %d ms", MGOP_TCACHE_WAIT_MS);
  synced = mgop_tcache.synced && !mgop_tcache.incomplete;
  for (int i = 0; i < MGOP_TEMPLATE_SLOTS; i++) {
    const struct mgop_tcache_row *row = &mgop_tcache.rows[i];
    if (row->key != key) continue;
    toobig = row->toobig;
    if (!toobig && (mem = mgop_arena_alloc(r->arena, row->len + 1))) {
      memcpy(mem, mgop_tcache.text + row->off, row->len);
      n = row->len;
      rc = MGOP_OK;
    } else if (!toobig) {
      rc = mgop_seterr(MGOP_ERR_NOMEM, "admission arena exhausted");
    }
    break;
  }
  pthread_rwlock_unlock(&mgop_tcache.lock);
  if (toobig)
    return mgop_seterr(MGOP_ERR_AGAIN, "%s \"%s\" is not in the template cache (%d bytes, all in use)",
                       mgop_kinds[kind].kind, name, MGOP_TCACHE_BYTES);
  if (rc == MGOP_ERR_NOTFOUND && !synced)
    return mgop_seterr(MGOP_ERR_AGAIN, "%s \"%s\" is not in the template cache, which is not complete (the template "
                       "watches have not listed once yet, or the cache is full)", mgop_kinds[kind].kind, name);
  if (rc) return rc;
  return mgop_parse_arena(r->arena, mem, n, out);
}

/* ---- the operator's state ------------------------------------------------
 * Gathered in one struct, as redis keeps its `server`: everything below is
 * owned by the reconcile loop (the main thread). The serving and Lease
 * threads never touch it, except the node table, which admission reads
 * under mgop_tcache.lock. What does cross threads (mgop_shared, mgop_tcache,
 * mgop_lease, the webhook's server) is listed once, in section 13. */
/* Every MultigresCluster we know of, with the templates its last turn
 * looked up (as fingerprint keys): who consumes which template. */
struct mgop_root_ref {
  char ns[64];
  char name[64];
  int used;
  int uses_known;                   /* reconciled once since start       */
  uint32_t epoch;                   /* list epoch when last seen          */
  int nuses;
  uint64_t uses[MGOP_TREFS_MAX];
  long long recheck_ms;             /* the progress recheck's interval now */
  long long recheck_due;            /* when it fires (0: none queued)      */
};

/* Templates seen on the watches, so a key leads back to a name. */
struct mgop_template_ref {
  uint64_t key;                     /* 0: free                           */
  int kind;
  char ns[64];
  char name[254];
  long long generation;
  int terminating;
  uint64_t status_hash;             /* last status we wrote              */
  uint32_t epoch;                   /* list epoch when last seen          */
  char own_rv[2][24];               /* resourceVersions our last finalizer
                                       apply and status patch made: their
                                       watch echoes need no upkeep turn   */
};
#define MGOP_UNSCHED_SLOTS 2048 /* unschedulable pods remembered; more: limit unschedulable_pods */
#define MGOP_NODE_SLOTS 1024    /* nodes whose zone is known; more: limit nodes, zone warnings off */
#define MGOP_ZONE_LABEL "topology.kubernetes.io/zone"
#define MGOP_REGION_LABEL "topology.kubernetes.io/region"
struct mgop_unsched {
  uint64_t pod;      /* fp key of the pod; 0: free row */
  uint64_t workload; /* fp key of its StatefulSet or Deployment */
  uint32_t epoch;    /* list epoch it was last seen in */
  char pod_name[64];
  char reason[240];  /* "Unschedulable: 0/4 nodes are available: ..." */
};
struct mgop_node_ref { uint64_t key; uint32_t epoch; char zone[64], region[64]; };

static struct mgop_server {
  struct mgop_kubecfg cfg;           /* where the API server is, who we are */
  struct mgop_kube api;              /* the loop's own API connection       */
  struct mgop_watch watches[K_COUNT];
  struct mgop_pool pool;             /* applies in flight beside the loop's */
  struct mgop_pool_job jobs[MGOP_DESIRED_MAX];  /* one phase's applies      */
  int job_desired[MGOP_DESIRED_MAX];            /* ... their desired index  */
  struct mgop_status_batch {         /* a turn's status writes and Events (section 7) */
    int open, n;
    struct mgop_status_pending {
      uint64_t key, hash;
      int kind;
      const char *name;
      const char *reason;            /* an Event's (its POST), or NULL: a status write */
    } w[MGOP_STATUS_BATCH_MAX];
    struct mgop_pool_job jobs[MGOP_STATUS_BATCH_MAX];
  } status_batch;
  uint32_t list_epoch[K_COUNT];      /* per kind: bumped by each (re)list (section 9) */
  /* the clusters (by mgop_cluster_hash, a Bloom filter of 4,096 bits) that
   * an orphaned StatefulSet was seen for: every turn asks whether its
   * cluster has orphans, and only these scan the object table for them (a
   * bit stays set after the orphans go: a false "maybe" costs the scan) */
  uint64_t orphan_clusters[64];
  struct mgop_root_ref roots[MGOP_WORK_SLOTS];             /* every cluster seen  */
  size_t roots_span;                 /* rows ever used: scans stop there (untouched pages cost nothing) */
  struct mgop_template_ref templates[MGOP_TEMPLATE_SLOTS]; /* every template seen */
  size_t templates_span;             /* rows ever used: scans stop there (a start's scan of all 512 was 51 page faults) */
  struct mgop_unsched unsched[MGOP_UNSCHED_SLOTS];         /* pods the scheduler refused */
  int unsched_span;                  /* rows ever used: scans stop there    */
  struct mgop_node_ref nodes[MGOP_NODE_SLOTS];  /* under mgop_tcache.lock    */
  int nodes_span;                    /* rows ever used (under the lock too) */
  int nodes_synced;                  /* the Node watch listed completely once */
  int nodes_overflow;                /* a node found no row: the zone set is partial */
  struct mgop_arena arena;           /* one turn's memory, reset per turn   */
  unsigned char arena_mem[MGOP_ARENA_BYTES];
  char root_body[256 * 1024];        /* the MultigresCluster as GET returns it */
  size_t root_early;                 /* > 0: root_body holds the early turn's cluster (this
                                      * many bytes, root_early_key's), which its turn reads
                                      * there instead of by a GET; whatever else writes
                                      * root_body clears it */
  uint64_t root_early_key;
  int crd_checked;                   /* the CRDs' schema version was found current */
  long long crd_next_ms;             /* the next look while it was not      */
} mgop_server;

/* ======================================================================
 * 4. Resolution
 * ==================================================================== */
/* Fetches a template's JSON (live: GET; render: from the files given).
 * Returns MGOP_ERR_NOTFOUND when it does not exist. */
static int mgop_fetch_uncached(struct mgop_rctx *r, int kind, const char *name, struct mgop_json *out) {
  if (r->cached_templates) return mgop_tcache_get(r, kind, name, out);
  if (r->render && !r->live_templates) {
    for (int i = 0; i < r->nmanifests; i++) {
      struct mgop_manifest *m = &r->manifests[i];
      if (m->kind == kind && !strcmp(m->name, name) && !strcmp(m->ns, r->ns))
        return mgop_parse_arena(r->arena, m->json, m->len, out);
    }
    return MGOP_ERR_NOTFOUND;
  }
  if (mgop_tcache_enabled) { /* the watches' copy, when it can tell (complete,
    * listed): a template absent there needs no GET, in every turn of every
    * cluster that names a default template nobody made; one created later
    * wakes the clusters that looked for it (mgop_note_uses) */
    int rc = mgop_tcache_get(r, kind, name, out);
    if (rc != MGOP_ERR_AGAIN) return rc;
  }
  {
    char path[512];
    size_t cap = 256 * 1024;
    char *mem = mgop_arena_alloc(r->arena, cap);
    struct mgop_buf b;
    int status, rc;
    if (!mem) return mgop_seterr(MGOP_ERR_NOMEM, "reconcile arena exhausted");
    mgop_buf_init(&b, mem, cap);
    mgop_item_path(kind, r->ns, name, path, sizeof(path));
    rc = mgop_kube_get(mgop_api_ptr, path, &b, &status);
    if (rc) return rc;
    mgop_arena_trim(r->arena, mem, cap, b.len);
    return mgop_parse_arena(r->arena, b.p, b.len, out);
  }
}

/* A template, once per turn: later lookups reuse the first answer, so every
 * component of the cluster sees the same version of it. */
static int mgop_fetch(struct mgop_rctx *r, int kind, const char *name, struct mgop_json *out) {
  struct mgop_tref *t;
  int rc;
  for (int i = 0; i < r->ntrefs; i++) {
    t = &r->trefs[i];
    if (t->kind != kind || strcmp(t->name, name)) continue;
    if (!t->found) return MGOP_ERR_NOTFOUND;
    *out = t->j;
    return MGOP_OK;
  }
  if (r->ntrefs == MGOP_TREFS_MAX) {
    mgop_limit_reached(r, MGOP_L_TEMPLATES_PER_CLUSTER, "%s: the cluster references more than %d distinct templates; "
                       "share templates between cells and shards", r->where[0] ? r->where : "spec", MGOP_TREFS_MAX);
    return MGOP_ERR_CONFIG;
  }
  rc = mgop_fetch_uncached(r, kind, name, out);
  if (rc && rc != MGOP_ERR_NOTFOUND) return rc;
  t = &r->trefs[r->ntrefs++];
  memset(t, 0, sizeof(*t));
  t->kind = kind;
  snprintf(t->name, sizeof(t->name), "%s", name);
  t->found = rc == MGOP_OK;
  if (t->found) {
    t->j = *out;
    t->terminating = mgop_json_path(out, 0, "metadata.deletionTimestamp") >= 0;
  }
  return rc;
}

/* Writes base ⊕ over into the arena and parses it back. */
static int mgop_merge_to(struct mgop_rctx *r, const struct mgop_json *base, int bt, const struct mgop_json *over,
                         int ot, struct mgop_json *out) {
  size_t cap = 64 * 1024;
  char *mem = mgop_arena_alloc(r->arena, cap);
  struct mgop_buf b;
  struct mgop_jw w;
  if (!mem) return mgop_seterr(MGOP_ERR_NOMEM, "reconcile arena exhausted");
  mgop_buf_init(&b, mem, cap);
  mgop_jw_init(&w, &b);
  mgop_json_merge(&w, base, bt, over, ot);
  if (b.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "resolved configuration larger than 64 KiB");
  mgop_arena_trim(r->arena, mem, cap, b.len);
  return mgop_parse_arena(r->arena, b.p, b.len, out);
}

/* The global topology server: spec.globalTopoServer.{etcd,external,templateRef},
 * else spec.templateDefaults.coreTemplate, else CoreTemplate "default",
 * else built-in. Result: a resolved {etcd:{...}} or {external:{...}}. */
static int mgop_resolve_global_topo(struct mgop_rctx *r, struct mgop_json *out) {
  struct mgop_json builtin, tmpl;
  const struct mgop_json *root = &r->root;
  int gts = mgop_json_key(root, r->spec, "globalTopoServer"), layer = -1, rc;
  char ref[254] = "";
  const struct mgop_json *layer_doc = NULL;
  int ext = mgop_json_key(root, gts, "external");
  rc = mgop_parse_arena(r->arena, mgop_default_global_topo, sizeof(mgop_default_global_topo) - 1, &builtin);
  if (rc) return rc;
  if (ext >= 0) { /* an external etcd: no TopoServer, nothing to merge */
    snprintf(r->resolved_core, sizeof(r->resolved_core), "external");
    return mgop_merge_to(r, root, gts, root, -1, out);
  }
  if (mgop_json_key(root, gts, "etcd") >= 0) {
    snprintf(r->resolved_core, sizeof(r->resolved_core), "inline");
    layer_doc = root;
    layer = gts;
  } else {
    const char *field = "spec.globalTopoServer.templateRef";
    mgop_json_path_str(root, gts, "templateRef", ref, sizeof(ref));
    if (!ref[0]) {
      field = "spec.templateDefaults.coreTemplate";
      mgop_json_path_str(root, r->spec, "templateDefaults.coreTemplate", ref, sizeof(ref));
    }
    if (ref[0]) {
      rc = mgop_fetch(r, K_CORET, ref, &tmpl);
      if (rc == MGOP_ERR_NOTFOUND) {
        mgop_stall(r, "TemplateNotFound", "%s names CoreTemplate \"%s\", which does not exist in namespace %s; create it "
                   "or fix the name", field, ref, r->ns);
        return MGOP_ERR_NOTFOUND;
      }
      if (rc) return rc;
      snprintf(r->resolved_core, sizeof(r->resolved_core), "CoreTemplate/%s", ref);
    } else {
      rc = mgop_fetch(r, K_CORET, "default", &tmpl);
      if (rc && rc != MGOP_ERR_NOTFOUND) return rc;
      snprintf(r->resolved_core, sizeof(r->resolved_core), rc ? "built-in" : "CoreTemplate/default");
    }
    if (r->resolved_core[0] == 'C') {
      layer_doc = &tmpl;
      layer = mgop_json_path(&tmpl, 0, "spec.globalTopoServer");
    }
  }
  if (layer_doc && mgop_json_key(layer_doc, layer, "external") >= 0) {
    mgop_stall(r, "UnsupportedValue", "%s sets globalTopoServer.external; a template may only configure a managed etcd; "
               "put external settings in spec.globalTopoServer.external", r->resolved_core);
    return MGOP_ERR_CONFIG;
  }
  return mgop_merge_to(r, &builtin, 0, layer_doc ? layer_doc : &builtin, layer_doc ? layer : -1, out);
}

/* ======================================================================
 * 5. Builders
 * ==================================================================== */
/* A Kubernetes quantity (10Gi, 1.5G, 500M, 1e9, 1073741824) as a number of
 * bytes; -1 when it is not one. Enough to order two storage sizes. */
static double mgop_quantity(const char *q) {
  static const struct { const char *sfx; double mul; } sfx[] = {
      {"Ki", 1024.0}, {"Mi", 1048576.0}, {"Gi", 1073741824.0}, {"Ti", 1099511627776.0},
      {"Pi", 1125899906842624.0}, {"Ei", 1152921504606846976.0}, {"n", 1e-9}, {"u", 1e-6}, {"m", 1e-3},
      {"k", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"P", 1e15}, {"E", 1e18}, {"", 1}};
  char *end;
  double v;
  if (!q || !*q || strpbrk(q, "xXnN") == q || strpbrk(q, "xX") || !strchr("+-.0123456789", q[0])) return -1;
  v = strtod(q, &end);
  if (end == q) return -1;
  for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++)
    if (!strcmp(end, sfx[i].sfx)) return v * sfx[i].mul;
  return -1;
}

/* What an existing StatefulSet fixed at creation: its volumeClaimTemplates[0]
 * storage request (a quantity is at most 63 characters in the CRD) and, for
 * etcd, the members it was bootstrapped with (ETCD_INITIAL_CLUSTER; 0: not
 * etcd). Admission refuses a shrink or a membership change from them on the
 * serving thread while the loop learns them from its watch, so they live
 * here under a lock rather than in the loop's fp table. A linear table: a
 * lookup is rare (admission, a reconcile turn) and a few thousand rows. */
struct mgop_sts_fact {
  uint64_t key; /* mgop_fp_key("StatefulSet", ns, name) */
  char vct_size[64];
  int32_t etcd_members;
  /* A pool StatefulSet's pods as their poolers registered in the topology
   * (bit i: ordinal i; replicasPerCell is at most 32): the loop reads them
   * every --pooler-role-interval for Shard status.podRoles. */
  uint32_t primary, replica, drained;
  long long roles_ms;         /* mgop_now_ms() of the last read; 0: never */
};
static struct {
  pthread_mutex_t mu;
  size_t used, cap;           /* cap: a quarter of the object table's rows */
  struct mgop_sts_fact *row;  /* allocated with it, at start-up          */
} mgop_sts_facts = {PTHREAD_MUTEX_INITIALIZER, 0, 0, NULL};

/* Start-up, before the threads: the table, a quarter of the object table. */
static int mgop_sts_facts_init(void) {
  size_t cap = mgop_fp_slots() / 4;
  if (mgop_sts_facts.row) return MGOP_OK;
  if (!(mgop_sts_facts.row = mgop_table_alloc(cap ? cap : 1, sizeof(*mgop_sts_facts.row))))
    return mgop_seterr(MGOP_ERR_NOMEM, "cannot allocate %zu StatefulSet rows", cap);
  mgop_sts_facts.cap = cap;
  return MGOP_OK;
}

/* The loop, on a StatefulSet watch event: records (or, gone=1, forgets) it. */
static void mgop_sts_fact_set(uint64_t key, int gone, const char *vct_size, int32_t etcd_members, const char *what) {
  size_t i;
  int full = 0;
  pthread_mutex_lock(&mgop_sts_facts.mu);
  if (mgop_sts_facts_init()) abort(); /* sized at start-up; here only in tests */
  for (i = 0; i < mgop_sts_facts.used && mgop_sts_facts.row[i].key != key; i++) {}
  if (gone) {
    if (i < mgop_sts_facts.used) mgop_sts_facts.row[i] = mgop_sts_facts.row[--mgop_sts_facts.used];
  } else if (i == mgop_sts_facts.used && i == mgop_sts_facts.cap) {
    full = 1;
  } else {
    struct mgop_sts_fact *f = &mgop_sts_facts.row[i];
    if (i == mgop_sts_facts.used) memset(f, 0, sizeof(*f)), mgop_sts_facts.used++; /* no roles of a row gone */
    f->key = key;
    snprintf(f->vct_size, sizeof(f->vct_size), "%s", vct_size);
    f->etcd_members = etcd_members;
  }
  pthread_mutex_unlock(&mgop_sts_facts.mu);
  if (full) {
    char msg[600];
    snprintf(msg, sizeof(msg), "StatefulSet facts table full (%zu rows); %s: its storage size and etcd members are not "
             "known, so a change to them is not refused before the API server rejects it; raise --max-objects",
             mgop_sts_facts.cap, what);
    mgop_limit_note(MGOP_L_STS_FACTS, msg);
  }
}

/* Any thread: a copy of the facts of StatefulSet ns/name; 0 when none. */
static int mgop_sts_fact_get(const char *ns, const char *name, struct mgop_sts_fact *out) {
  uint64_t key = mgop_fp_key("StatefulSet", ns, name);
  int found = 0;
  pthread_mutex_lock(&mgop_sts_facts.mu);
  for (size_t i = 0; i < mgop_sts_facts.used && !found; i++)
    if (mgop_sts_facts.row[i].key == key) *out = mgop_sts_facts.row[i], found = 1;
  pthread_mutex_unlock(&mgop_sts_facts.mu);
  return found;
}

/* The loop: the roles just read for StatefulSet key (primary, replica and
 * drained masks; NULL: keep what was known, only the time of the try). */
static void mgop_sts_roles_set(uint64_t key, const uint32_t *masks, long long now) {
  pthread_mutex_lock(&mgop_sts_facts.mu);
  for (size_t i = 0; i < mgop_sts_facts.used; i++)
    if (mgop_sts_facts.row[i].key == key) {
      struct mgop_sts_fact *f = &mgop_sts_facts.row[i];
      if (masks) f->primary = masks[0], f->replica = masks[1], f->drained = masks[2];
      f->roles_ms = now;
    }
  pthread_mutex_unlock(&mgop_sts_facts.mu);
}

/* The storage request written into a StatefulSet's volumeClaimTemplates.
 * The field is immutable, so a StatefulSet that exists keeps the size it
 * was created with (the apply is never rejected for it); a larger size is
 * recorded to expand its PVCs in place after the apply (mgop_expand_volumes),
 * a smaller one is refused: volumes never shrink. */
static const char *mgop_vct_size(struct mgop_rctx *r, const char *sts, const char *vct, const char *want, long long replicas,
                                 const char *field) {
  static _Thread_local struct mgop_sts_fact fact; /* what is returned points into it, until the next call */
  struct mgop_fp *f;
  double w = mgop_quantity(want), have;
  uint64_t h;
  if (!mgop_sts_fact_get(r->ns, sts, &fact) || !fact.vct_size[0]) return want; /* new: as asked */
  have = mgop_quantity(fact.vct_size);
  if (w < 0 || have < 0) return want; /* not a quantity: the API server says why */
  if (w < have) {
    mgop_stall(r, "StorageShrinkRefused", "%s is %s, smaller than the %s of the existing volumes of StatefulSet %s; "
               "volumes can grow but never shrink: set %s or more", field, want, fact.vct_size, sts, fact.vct_size);
    return fact.vct_size;
  }
  /* the fp table is the loop's: admission lists the growth and never applies it */
  f = r->admission ? NULL : mgop_fp_find(mgop_fp_key("StatefulSet", r->ns, sts));
  h = mgop_fnv1a64(mgop_fnv1a64(MGOP_FNV64_INIT, want, strlen(want) + 1), &replicas, sizeof(replicas));
  if (w > have && (!f || f->grown_hash != h) && r->ngrows < MGOP_GROWS_MAX) {
    struct mgop_grow *g = &r->grows[r->ngrows++];
    memset(g, 0, sizeof(*g));
    snprintf(g->sts, sizeof(g->sts), "%s", sts);
    snprintf(g->vct, sizeof(g->vct), "%s", vct);
    snprintf(g->size, sizeof(g->size), "%s", want);
    snprintf(g->field, sizeof(g->field), "%s", field);
    g->hash = h;
  }
  return fact.vct_size;
}

/* An etcd cluster's membership is fixed at bootstrap (ETCD_INITIAL_CLUSTER,
 * which the watch records): an existing etcd StatefulSet keeps its member
 * count and a change is refused. A hand-edited spec.replicas is not a
 * change of membership: the apply reverts it. */
static long long mgop_etcd_replicas(struct mgop_rctx *r, const char *sts, long long want, const char *field) {
  struct mgop_sts_fact fact;
  if (!mgop_sts_fact_get(r->ns, sts, &fact) || fact.etcd_members <= 0 || fact.etcd_members == want) return want;
  mgop_stall(r, "EtcdReplicasImmutable", "%s is %lld, but the etcd cluster %s was created with %d members and its "
             "membership is fixed: restore %d (a different size needs a new cluster; a template that arrives after "
             "its cluster, as in one `kubectl apply -f dir/` or one sync, changes it too: apply templates first)",
             field, want, sts, (int)fact.etcd_members, (int)fact.etcd_members);
  return fact.etcd_members;
}
/* A desired object in the making: the writer, and where the hash goes. */
struct mgop_build {
  struct mgop_rctx *r;
  struct mgop_buf b;
  struct mgop_jw w;
  size_t hash_at;
  int kind;
  char name[MGOP_NAME_MAX + 1];
  int user_annotations;   /* a map in r->root copied into metadata.annotations, or -1 */
};

static int mgop_build_begin(struct mgop_rctx *r, struct mgop_build *o, int kind, const char *name) {
  size_t cap = 32 * 1024;
  char *mem = mgop_arena_alloc(r->arena, cap);
  if (!mem) return mgop_seterr(MGOP_ERR_NOMEM, "reconcile arena exhausted");
  o->r = r;
  o->kind = kind;
  o->user_annotations = -1;
  snprintf(o->name, sizeof(o->name), "%s", name);
  mgop_buf_init(&o->b, mem, cap);
  mgop_jw_init(&o->w, &o->b);
  mgop_jw_obj(&o->w);
  mgop_jw_key(&o->w, "apiVersion");
  mgop_jw_str(&o->w, mgop_kinds[kind].api_version);
  mgop_jw_key(&o->w, "kind");
  mgop_jw_str(&o->w, mgop_kinds[kind].kind);
  return MGOP_OK;
}

/* Identity of an object below the cluster: each part may be NULL. */
struct mgop_ids { const char *cell, *database, *tablegroup, *shard, *pool; };

static void mgop_id_labels(struct mgop_jw *w, const struct mgop_ids *ids) {
  if (!ids) return;
  if (ids->cell) { mgop_jw_key(w, "multigres.com/cell"); mgop_jw_str(w, ids->cell); }
  if (ids->database) { mgop_jw_key(w, "multigres.com/database"); mgop_jw_str(w, ids->database); }
  if (ids->tablegroup) { mgop_jw_key(w, "multigres.com/tablegroup"); mgop_jw_str(w, ids->tablegroup); }
  if (ids->shard) { mgop_jw_key(w, "multigres.com/shard"); mgop_jw_str(w, ids->shard); }
  if (ids->pool) { mgop_jw_key(w, "multigres.com/pool"); mgop_jw_str(w, ids->pool); }
}

/* The labels every object carries (DESIGN section 2: app.kubernetes.io and multigres.com). */
static void mgop_labels(struct mgop_jw *w, const char *cluster, const char *component) {
  mgop_jw_key(w, "app.kubernetes.io/name"); mgop_jw_str(w, "multigres");
  mgop_jw_key(w, "app.kubernetes.io/instance"); mgop_jw_str(w, cluster);
  mgop_jw_key(w, "app.kubernetes.io/component"); mgop_jw_str(w, component);
  mgop_jw_key(w, "app.kubernetes.io/part-of"); mgop_jw_str(w, "multigres");
  mgop_jw_key(w, "app.kubernetes.io/managed-by"); mgop_jw_str(w, MGOP_MANAGER);
  mgop_jw_key(w, "multigres.com/cluster"); mgop_jw_str(w, cluster);
}

/* The selector subset: stable for the object's lifetime. */
static void mgop_selector_labels(struct mgop_jw *w, const char *cluster, const char *component) {
  mgop_jw_key(w, "app.kubernetes.io/instance"); mgop_jw_str(w, cluster);
  mgop_jw_key(w, "app.kubernetes.io/component"); mgop_jw_str(w, component);
  mgop_jw_key(w, "multigres.com/cluster"); mgop_jw_str(w, cluster);
}

/* metadata with labels, the spec-hash annotation placeholder, and the owner. */
static void mgop_build_meta_ids(struct mgop_build *o, const char *component, const struct mgop_ids *ids,
                                int owner_kind, const char *owner_name, const char *owner_uid) {
  struct mgop_jw *w = &o->w;
  struct mgop_rctx *r = o->r;
  mgop_jw_key(w, "metadata");
  mgop_jw_obj(w);
  mgop_jw_key(w, "name"); mgop_jw_str(w, o->name);
  mgop_jw_key(w, "namespace"); mgop_jw_str(w, r->ns);
  mgop_jw_key(w, "labels");
  mgop_jw_obj(w);
  mgop_labels(w, r->name, component);
  mgop_id_labels(w, ids);
  /* children of an Orphan cluster say so: the webhook holds their deletion
   * until the data they own is detached (section 6, orphan and reclaim) */
  if (r->orphan_policy && mgop_kinds[o->kind].role == MGOP_ROLE_CHILD) {
    mgop_jw_key(w, "multigres.com/deletion-policy"); mgop_jw_str(w, "Orphan");
  }
  mgop_jw_obj_end(w);
  mgop_jw_key(w, "annotations");
  mgop_jw_obj(w);
  mgop_jw_key(w, MGOP_HASH_ANNOTATION);
  o->hash_at = o->b.len + 1; /* after the opening quote */
  mgop_jw_str(w, "0000000000000000");
  if (mgop_json_is(&r->root, o->user_annotations, JSMN_OBJECT)) /* CEL keeps them out of multigres.com/ */
    for (int i = 0, k = o->user_annotations + 1; i < r->root.tok[o->user_annotations].size; i++, k = mgop_json_next(&r->root, k + 1)) {
      char key[320]; /* a prefix of 253, '/', a name of 63 */
      if (mgop_json_str(&r->root, k, key, sizeof(key))) continue; /* the API server refuses such a key anyway */
      mgop_jw_key(w, key);
      mgop_jw_copy(w, &r->root, k + 1);
    }
  mgop_jw_obj_end(w);
  mgop_jw_key(w, "ownerReferences");
  mgop_jw_arr(w);
  mgop_jw_obj(w);
  mgop_jw_key(w, "apiVersion"); mgop_jw_str(w, mgop_kinds[owner_kind].api_version);
  mgop_jw_key(w, "kind"); mgop_jw_str(w, mgop_kinds[owner_kind].kind);
  mgop_jw_key(w, "name"); mgop_jw_str(w, owner_name);
  mgop_jw_key(w, "uid"); mgop_jw_str(w, owner_uid);
  mgop_jw_key(w, "controller"); mgop_jw_bool(w, 1);
  mgop_jw_key(w, "blockOwnerDeletion"); mgop_jw_bool(w, 1);
  mgop_jw_obj_end(w);
  mgop_jw_arr_end(w);
  mgop_jw_obj_end(w);
}

/* Closes the object, stamps the hash of its bytes into the annotation and
 * adds it to the desired list. */
static int mgop_build_end(struct mgop_build *o) {
  struct mgop_rctx *r = o->r;
  struct mgop_desired *d;
  char hex[17];
  mgop_jw_obj_end(&o->w);
  if (o->b.overflow || o->b.len >= o->b.cap) /* room for the NUL below */
    return mgop_seterr(MGOP_ERR_TOOBIG, "%s %s is larger than 32 KiB", mgop_kinds[o->kind].kind, o->name);
  if (r->ndesired >= MGOP_DESIRED_MAX) {
    mgop_limit_reached(r, MGOP_L_OBJECTS, "the cluster needs more than %d objects; %s %s of %s is one too many: every "
                       "pool makes a StatefulSet and a Service in each cell it runs in (all cells when pools.*.cells "
                       "is unset), and every shard a multiorch per cell; list fewer cells per pool, or use fewer "
                       "pools, table groups or cells", MGOP_DESIRED_MAX, mgop_kinds[o->kind].kind, o->name,
                       r->where[0] ? r->where : "spec");
    return mgop_seterr(MGOP_ERR_NOMEM, "more than %d objects for one cluster", MGOP_DESIRED_MAX);
  }
  d = &r->desired[r->ndesired++];
  memset(d, 0, sizeof(*d));
  d->kind = o->kind;
  snprintf(d->name, sizeof(d->name), "%s", o->name);
  d->json = o->b.p;
  d->len = o->b.len;
  /* a review only checks that the tree builds: no hash (a tenth of its time) */
  d->hash = r->admission ? 0 : mgop_fnv1a64(MGOP_FNV64_INIT, o->b.p, o->b.len);
  snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)d->hash);
  memcpy(o->b.p + o->hash_at, hex, 16);
  /* NUL-terminated too: the status code searches the text (strstr) */
  o->b.p[o->b.len] = 0;
  mgop_arena_trim(r->arena, o->b.p, o->b.cap, o->b.len + 1);
  return MGOP_OK;
}

/* Copies a resolved value to key (skips when absent). */
static void mgop_copy_key(struct mgop_jw *w, const char *key, const struct mgop_json *j, int t) {
  if (t < 0) return;
  mgop_jw_key(w, key);
  mgop_jw_copy(w, j, t);
}

static const char *mgop_str_or(const struct mgop_json *j, int t, const char *path, char *buf, size_t cap,
                               const char *fallback) {
  if (mgop_json_path_str(j, t, path, buf, cap) == MGOP_OK && buf[0]) return buf;
  return fallback;
}

/* s as the inside of a JSON string, into out (cap 6x+1 never truncates). */
static const char *mgop_json_inner(const char *s, char *out, size_t cap) {
  struct mgop_buf b;
  mgop_buf_init(&b, out, cap);
  mgop_json_escape(&b, s, strlen(s));
  if (b.overflow) out[0] = 0;
  else out[b.len < cap ? b.len : cap - 1] = 0;
  return out;
}

/* A PodDisruptionBudget over the pods of component (+ ids): minAvailable
 * when min_available > 0, else maxUnavailable 1. Unhealthy pods may always
 * be evicted, so a crash-looping pod never blocks a node drain. */
static int mgop_build_pdb(struct mgop_rctx *r, int owner_kind, const char *owner_name, const char *owner_uid,
                          const char *name, const char *component, const struct mgop_ids *ids, int min_available) {
  struct mgop_build o;
  int rc;
  if ((rc = mgop_build_begin(r, &o, K_PDB, name))) return rc;
  mgop_build_meta_ids(&o, component, ids, owner_kind, owner_name, owner_uid);
  mgop_jw_key(&o.w, "spec"); mgop_jw_obj(&o.w);
  if (min_available > 0) { mgop_jw_key(&o.w, "minAvailable"); mgop_jw_i64(&o.w, min_available); }
  else { mgop_jw_key(&o.w, "maxUnavailable"); mgop_jw_i64(&o.w, 1); }
  mgop_jw_key(&o.w, "unhealthyPodEvictionPolicy"); mgop_jw_str(&o.w, "AlwaysAllow");
  mgop_jw_key(&o.w, "selector"); mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, "matchLabels"); mgop_jw_obj(&o.w);
  mgop_selector_labels(&o.w, r->name, component);
  mgop_id_labels(&o.w, ids);
  mgop_jw_obj_end(&o.w); mgop_jw_obj_end(&o.w);
  mgop_jw_obj_end(&o.w);
  return mgop_build_end(&o);
}

/* Which topology server a builder makes: the cluster's global one, or a
 * cell's local one (owned by its Cell; pods labelled with the cell and the
 * component local-toposerver, so the global Services never select them). */
struct mgop_topo_target {
  const char *name;         /* TopoServer, StatefulSet and client Service   */
  const char *cell;         /* NULL: the global topology server            */
  int owner_kind;           /* of the TopoServer CR                        */
  const char *owner_name, *owner_uid;
};

static void mgop_topo_selector(struct mgop_jw *w, struct mgop_rctx *r, const struct mgop_topo_target *t) {
  mgop_selector_labels(w, r->name, t->cell ? "local-toposerver" : "toposerver");
  if (t->cell) { mgop_jw_key(w, "multigres.com/cell"); mgop_jw_str(w, t->cell); }
}

static void mgop_topo_labels(struct mgop_jw *w, struct mgop_rctx *r, const struct mgop_topo_target *t) {
  mgop_labels(w, r->name, t->cell ? "local-toposerver" : "toposerver");
  if (t->cell) { mgop_jw_key(w, "multigres.com/cell"); mgop_jw_str(w, t->cell); }
}

/* etcd.maintenance: MVCC history compaction and the backend quota, as
 * etcd's environment, always (the reference operator's defaults: periodic,
 * 1h, 2 GiB; etcd's own is no compaction at all, so history grows until
 * the quota stops writes). defragmentationEnabled is run time's
 * (mgop_defrag_cluster). The schema's CEL checks the values; this repeats
 * the quota's range for render, which has no API server. */
#define MGOP_ETCD_QUOTA_DEFAULT 2147483648LL
#define MGOP_ETCD_QUOTA_MIN 1048576LL
#define MGOP_ETCD_QUOTA_MAX 8589934592LL
static int mgop_etcd_maintenance_env(struct mgop_rctx *r, struct mgop_jw *w, const struct mgop_json *topo, int etcd) {
  int m = mgop_json_key(topo, etcd, "maintenance");
  char mode_buf[16], keep[40], quota[24];
  long long q = MGOP_ETCD_QUOTA_DEFAULT;
  const char *mode = mgop_str_or(topo, m, "autoCompactionMode", mode_buf, sizeof(mode_buf), "periodic");
  if (!mgop_str_or(topo, m, "autoCompactionRetention", keep, sizeof(keep), NULL))
    snprintf(keep, sizeof(keep), "%s", strcmp(mode, "revision") ? "1h" : "10000");
  mgop_json_i64(topo, mgop_json_key(topo, m, "quotaBackendBytes"), &q);
  if (q < MGOP_ETCD_QUOTA_MIN || q > MGOP_ETCD_QUOTA_MAX) {
    mgop_stall(r, "InvalidSpec", "%s.etcd.maintenance.quotaBackendBytes is %lld; etcd takes 1048576 (1 MiB) to "
               "8589934592 (8 GiB): set it in that range, never below the current backend size", r->where, q);
    return MGOP_ERR_CONFIG;
  }
  snprintf(quota, sizeof(quota), "%lld", q);
  const char *env[][2] = {{"ETCD_AUTO_COMPACTION_MODE", mode}, {"ETCD_AUTO_COMPACTION_RETENTION", keep},
                          {"ETCD_QUOTA_BACKEND_BYTES", quota}};
  for (size_t i = 0; i < sizeof(env) / sizeof(env[0]); i++) {
    mgop_jw_obj(w);
    mgop_jw_key(w, "name"); mgop_jw_str(w, env[i][0]);
    mgop_jw_key(w, "value"); mgop_jw_str(w, env[i][1]);
    mgop_jw_obj_end(w);
  }
  return MGOP_OK;
}

/* A TopoServer CR (cr=1), or its etcd StatefulSet and Services (cr=0,
 * owned by the CR whose uid is topo_uid). */
static int mgop_build_topo(struct mgop_rctx *r, const struct mgop_json *topo, const struct mgop_topo_target *t, int cr,
                           const char *topo_uid) {
  struct mgop_build o;
  struct mgop_ids ids = {t->cell, NULL, NULL, NULL, NULL};
  const char *component = t->cell ? "local-toposerver" : "toposerver";
  char name[64], headless[80], image[MGOP_IMAGE_BUF], size[MGOP_QUANTITY_BUF], klass[128], pull[32];
  int etcd = mgop_json_key(topo, 0, "etcd"), rc;
  long long replicas = 3;
  mgop_json_i64(topo, mgop_json_key(topo, etcd, "replicas"), &replicas);
  snprintf(name, sizeof(name), "%s", t->name);
  snprintf(headless, sizeof(headless), "%s-headless", name);
  mgop_str_or(topo, etcd, "image", image, sizeof(image), MGOP_IMAGE_ETCD);
  mgop_str_or(topo, etcd, "storage.size", size, sizeof(size), "1Gi");
  mgop_str_or(topo, etcd, "storage.class", klass, sizeof(klass), "");

  if (!cr) { /* the etcd StatefulSet: what cannot change on a live one */
    char field[300];
    if (t->cell)
      snprintf(field, sizeof(field), "%.240s.localTopoServer.etcd.replicas", r->where);
    else if (r->resolved_core[0] == 'C') /* from a CoreTemplate: an implicit "default" surprises, so name it */
      snprintf(field, sizeof(field), "spec.globalTopoServer.etcd.replicas (from %.200s)", r->resolved_core);
    else
      snprintf(field, sizeof(field), "spec.globalTopoServer.etcd.replicas");
    replicas = mgop_etcd_replicas(r, name, replicas, field);
    snprintf(field, sizeof(field), "%.240s.%setcd.storage.size", t->cell ? r->where : "spec.globalTopoServer",
             t->cell ? "localTopoServer." : "");
    { /* the answer may be size itself */
      const char *keep = mgop_vct_size(r, name, "data", size, replicas, field);
      if (keep != size) snprintf(size, sizeof(size), "%s", keep);
    }
  }
  if (cr) { /* the TopoServer CR */
    if ((rc = mgop_build_begin(r, &o, K_TOPO, name))) return rc;
    mgop_build_meta_ids(&o, t->cell ? "local-topo" : "global-topo", t->cell ? &ids : NULL, t->owner_kind, t->owner_name,
                        t->owner_uid);
    mgop_jw_key(&o.w, "spec");
    mgop_jw_obj(&o.w);
    mgop_copy_key(&o.w, "etcd", topo, etcd);
    mgop_jw_obj_end(&o.w);
    return mgop_build_end(&o);
  }

  /* client Service */
  if ((rc = mgop_build_begin(r, &o, K_SVC, name))) return rc;
  mgop_build_meta_ids(&o, component, t->cell ? &ids : NULL, K_TOPO, name, topo_uid);
  mgop_jw_key(&o.w, "spec");
  mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, "type"); mgop_jw_str(&o.w, "ClusterIP");
  mgop_jw_key(&o.w, "selector"); mgop_jw_obj(&o.w); mgop_topo_selector(&o.w, r, t); mgop_jw_obj_end(&o.w);
  mgop_jw_key(&o.w, "ports");
  mgop_jw_arr(&o.w);
  MGOP_JW_LIT(&o.w, "{\"name\":\"client\",\"port\":2379,\"targetPort\":2379,\"protocol\":\"TCP\"}");
  mgop_jw_arr_end(&o.w);
  mgop_jw_obj_end(&o.w);
  if ((rc = mgop_build_end(&o))) return rc;

  /* headless peer Service: members find each other before they are ready */
  if ((rc = mgop_build_begin(r, &o, K_SVC, headless))) return rc;
  mgop_build_meta_ids(&o, component, t->cell ? &ids : NULL, K_TOPO, name, topo_uid);
  mgop_jw_key(&o.w, "spec");
  mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, "clusterIP"); mgop_jw_str(&o.w, "None");
  mgop_jw_key(&o.w, "publishNotReadyAddresses"); mgop_jw_bool(&o.w, 1);
  mgop_jw_key(&o.w, "selector"); mgop_jw_obj(&o.w); mgop_topo_selector(&o.w, r, t); mgop_jw_obj_end(&o.w);
  mgop_jw_key(&o.w, "ports");
  mgop_jw_arr(&o.w);
  MGOP_JW_LIT(&o.w, "{\"name\":\"client\",\"port\":2379,\"targetPort\":2379,\"protocol\":\"TCP\"}");
  MGOP_JW_LIT(&o.w, "{\"name\":\"peer\",\"port\":2380,\"targetPort\":2380,\"protocol\":\"TCP\"}");
  mgop_jw_arr_end(&o.w);
  mgop_jw_obj_end(&o.w);
  if ((rc = mgop_build_end(&o))) return rc;

  /* the etcd StatefulSet */
  if ((rc = mgop_build_begin(r, &o, K_STS, name))) return rc;
  mgop_build_meta_ids(&o, component, t->cell ? &ids : NULL, K_TOPO, name, topo_uid);
  {
    struct mgop_jw *w = &o.w;
    char cluster_arg[2048], url[256];
    struct mgop_buf cb;
    char wd_own[16], wd_topo[16], wd_cluster[16], ws_own[16], ws_topo[16], ws_cluster[16];
    /* field by field: the etcd's own policy, the topology server's (seed
     * 003: globalTopoServer.pvcDeletionPolicy), the cluster's, then Retain */
    const char *when_deleted = mgop_str_or(topo, etcd, "pvcDeletionPolicy.whenDeleted", wd_own, sizeof(wd_own),
        mgop_str_or(topo, 0, "pvcDeletionPolicy.whenDeleted", wd_topo, sizeof(wd_topo),
        mgop_str_or(&r->root, r->spec, "pvcDeletionPolicy.whenDeleted", wd_cluster, sizeof(wd_cluster), "Retain")));
    const char *when_scaled = mgop_str_or(topo, etcd, "pvcDeletionPolicy.whenScaled", ws_own, sizeof(ws_own),
        mgop_str_or(topo, 0, "pvcDeletionPolicy.whenScaled", ws_topo, sizeof(ws_topo),
        mgop_str_or(&r->root, r->spec, "pvcDeletionPolicy.whenScaled", ws_cluster, sizeof(ws_cluster), "Retain")));
    mgop_buf_init(&cb, cluster_arg, sizeof(cluster_arg));
    for (long long i = 0; i < replicas && i < 9; i++)
      mgop_buf_printf(&cb, "%s%s-%lld=http://%s-%lld.%s.%s.svc:2380", i ? "," : "", name, i, name, i, headless, r->ns);
    mgop_buf_cstr(&cb);
    mgop_jw_key(w, "spec");
    mgop_jw_obj(w);
    mgop_jw_key(w, "replicas"); mgop_jw_i64(w, replicas);
    mgop_jw_key(w, "serviceName"); mgop_jw_str(w, headless);
    mgop_jw_key(w, "podManagementPolicy"); mgop_jw_str(w, "Parallel");
    mgop_jw_key(w, "selector"); mgop_jw_obj(w);
    mgop_jw_key(w, "matchLabels"); mgop_jw_obj(w); mgop_topo_selector(w, r, t); mgop_jw_obj_end(w);
    mgop_jw_obj_end(w);
    mgop_jw_key(w, "persistentVolumeClaimRetentionPolicy"); mgop_jw_obj(w);
    mgop_jw_key(w, "whenDeleted"); mgop_jw_str(w, when_deleted);
    mgop_jw_key(w, "whenScaled"); mgop_jw_str(w, when_scaled);
    mgop_jw_obj_end(w);
    mgop_jw_key(w, "template"); mgop_jw_obj(w);
    mgop_jw_key(w, "metadata"); mgop_jw_obj(w);
    mgop_jw_key(w, "labels"); mgop_jw_obj(w); mgop_topo_labels(w, r, t); mgop_jw_obj_end(w);
    mgop_jw_obj_end(w);
    mgop_jw_key(w, "spec"); mgop_jw_obj(w);
    mgop_jw_key(w, "containers"); mgop_jw_arr(w); mgop_jw_obj(w);
    mgop_jw_key(w, "name"); mgop_jw_str(w, "etcd");
    mgop_jw_key(w, "image"); mgop_jw_str(w, image);
    mgop_jw_key(w, "imagePullPolicy"); /* the cluster's, as every other component */
    mgop_jw_str(w, mgop_str_or(&r->root, r->spec, "images.imagePullPolicy", pull, sizeof(pull), "IfNotPresent"));
    mgop_jw_key(w, "env"); mgop_jw_arr(w);
    MGOP_JW_LIT(w, "{\"name\":\"POD_NAME\",\"valueFrom\":{\"fieldRef\":{\"fieldPath\":\"metadata.name\"}}}");
    mgop_jw_obj(w); mgop_jw_key(w, "name"); mgop_jw_str(w, "ETCD_NAME"); mgop_jw_key(w, "value"); mgop_jw_str(w, "$(POD_NAME)"); mgop_jw_obj_end(w);
    mgop_jw_obj(w); mgop_jw_key(w, "name"); mgop_jw_str(w, "ETCD_DATA_DIR"); mgop_jw_key(w, "value"); mgop_jw_str(w, "/var/lib/etcd/data"); mgop_jw_obj_end(w);
    mgop_jw_obj(w); mgop_jw_key(w, "name"); mgop_jw_str(w, "ETCD_LISTEN_CLIENT_URLS"); mgop_jw_key(w, "value"); mgop_jw_str(w, "http://0.0.0.0:2379"); mgop_jw_obj_end(w);
    snprintf(url, sizeof(url), "http://$(POD_NAME).%s.%s.svc:2379", headless, r->ns);
    mgop_jw_obj(w); mgop_jw_key(w, "name"); mgop_jw_str(w, "ETCD_ADVERTISE_CLIENT_URLS"); mgop_jw_key(w, "value"); mgop_jw_str(w, url); mgop_jw_obj_end(w);
    mgop_jw_obj(w); mgop_jw_key(w, "name"); mgop_jw_str(w, "ETCD_LISTEN_PEER_URLS"); mgop_jw_key(w, "value"); mgop_jw_str(w, "http://0.0.0.0:2380"); mgop_jw_obj_end(w);
    snprintf(url, sizeof(url), "http://$(POD_NAME).%s.%s.svc:2380", headless, r->ns);
    mgop_jw_obj(w); mgop_jw_key(w, "name"); mgop_jw_str(w, "ETCD_INITIAL_ADVERTISE_PEER_URLS"); mgop_jw_key(w, "value"); mgop_jw_str(w, url); mgop_jw_obj_end(w);
    mgop_jw_obj(w); mgop_jw_key(w, "name"); mgop_jw_str(w, "ETCD_INITIAL_CLUSTER"); mgop_jw_key(w, "value"); mgop_jw_str(w, cluster_arg); mgop_jw_obj_end(w);
    mgop_jw_obj(w); mgop_jw_key(w, "name"); mgop_jw_str(w, "ETCD_INITIAL_CLUSTER_STATE"); mgop_jw_key(w, "value"); mgop_jw_str(w, "new"); mgop_jw_obj_end(w);
    mgop_jw_obj(w); mgop_jw_key(w, "name"); mgop_jw_str(w, "ETCD_INITIAL_CLUSTER_TOKEN"); mgop_jw_key(w, "value"); mgop_jw_str(w, name); mgop_jw_obj_end(w);
    mgop_jw_obj(w); mgop_jw_key(w, "name"); mgop_jw_str(w, "ETCD_LISTEN_METRICS_URLS"); mgop_jw_key(w, "value"); mgop_jw_str(w, "http://0.0.0.0:2381"); mgop_jw_obj_end(w);
    if ((rc = mgop_etcd_maintenance_env(r, w, topo, etcd))) return rc;
    mgop_jw_arr_end(w);
    mgop_jw_key(w, "ports"); mgop_jw_arr(w);
    MGOP_JW_LIT(w, "{\"name\":\"client\",\"containerPort\":2379,\"protocol\":\"TCP\"}");
    MGOP_JW_LIT(w, "{\"name\":\"peer\",\"containerPort\":2380,\"protocol\":\"TCP\"}");
    MGOP_JW_LIT(w, "{\"name\":\"metrics\",\"containerPort\":2381,\"protocol\":\"TCP\"}");
    mgop_jw_arr_end(w);
    mgop_jw_key(w, "readinessProbe");
    MGOP_JW_LIT(w, "{\"httpGet\":{\"path\":\"/readyz\",\"port\":2381},\"periodSeconds\":5,\"failureThreshold\":3}");
    mgop_jw_key(w, "livenessProbe");
    MGOP_JW_LIT(w, "{\"httpGet\":{\"path\":\"/livez\",\"port\":2381},\"initialDelaySeconds\":15,\"periodSeconds\":10,\"failureThreshold\":5}");
    mgop_copy_key(w, "resources", topo, mgop_json_key(topo, etcd, "resources"));
    mgop_jw_key(w, "volumeMounts");
    MGOP_JW_LIT(w, "[{\"name\":\"data\",\"mountPath\":\"/var/lib/etcd\"}]");
    mgop_jw_obj_end(w); mgop_jw_arr_end(w); /* containers */
    mgop_copy_key(w, "imagePullSecrets", &r->root, mgop_json_path(&r->root, r->spec, "images.imagePullSecrets"));
    mgop_copy_key(w, "tolerations", topo, mgop_json_path(topo, 0, "placement.tolerations"));
    mgop_jw_obj_end(w); /* pod spec */
    mgop_jw_obj_end(w); /* template */
    mgop_jw_key(w, "volumeClaimTemplates"); mgop_jw_arr(w); mgop_jw_obj(w);
    mgop_jw_key(w, "metadata"); mgop_jw_obj(w); mgop_jw_key(w, "name"); mgop_jw_str(w, "data");
    mgop_jw_key(w, "labels"); mgop_jw_obj(w); mgop_topo_labels(w, r, t); mgop_jw_obj_end(w);
    mgop_jw_obj_end(w);
    mgop_jw_key(w, "spec"); mgop_jw_obj(w);
    { /* fixed at creation, like the size: volumeClaimTemplates are immutable */
      int modes = mgop_json_path(topo, etcd, "storage.accessModes");
      if (mgop_json_is(topo, modes, JSMN_ARRAY) && topo->tok[modes].size > 0) mgop_copy_key(w, "accessModes", topo, modes);
      else { mgop_jw_key(w, "accessModes"); MGOP_JW_LIT(w, "[\"ReadWriteOnce\"]"); }
    }
    if (klass[0]) { mgop_jw_key(w, "storageClassName"); mgop_jw_str(w, klass); }
    mgop_jw_key(w, "resources"); mgop_jw_obj(w); mgop_jw_key(w, "requests"); mgop_jw_obj(w);
    mgop_jw_key(w, "storage"); mgop_jw_str(w, size);
    mgop_jw_obj_end(w); mgop_jw_obj_end(w);
    mgop_jw_obj_end(w); /* pvc spec */
    mgop_jw_obj_end(w); mgop_jw_arr_end(w);
    mgop_jw_obj_end(w); /* sts spec */
  }
  if ((rc = mgop_build_end(&o))) return rc;
  /* quorum survives voluntary disruptions: one member at a time */
  return mgop_build_pdb(r, K_TOPO, name, topo_uid, name, component, t->cell ? &ids : NULL, 0);
}

/* ======================================================================
 * 6. Apply
 * ==================================================================== */
/* Which cluster a row belongs to: its namespace and multigres.com/cluster label. */
static uint64_t mgop_cluster_hash(const char *ns, const char *cluster) {
  uint64_t h = mgop_fnv1a64(MGOP_FNV64_INIT, ns, strlen(ns) + 1);
  h = mgop_fnv1a64(h, cluster, strlen(cluster) + 1);
  return h ? h : 1;
}

/* uids and resourceVersions, kept as hashes where they are only compared */
static uint64_t mgop_uid_hash(const char *uid) { return mgop_fnv1a64(MGOP_FNV64_INIT, uid, strlen(uid)); }

/* Our own writes and their watch echoes. A write's answer carries the
 * resourceVersion it made; the watch later reports that same version, which
 * tells the loop nothing it does not know, and its turn would only GET the
 * cluster to find nothing to do (one such turn per cluster after every
 * apply, in the 1,000-cluster run). A row remembers two versions of ours:
 * applied_rv (an apply, or the cluster's metadata patch) and, for kinds
 * whose sync is judged by generation, seen_rv (a status write; what a
 * watch event last showed otherwise). An event of either is an echo and
 * wakes nobody; any other version, a deletion, or a write whose answer did
 * not give its version wakes the cluster as before. */
static void mgop_note_own_write(struct mgop_fp *f, const char *rv, int status_write) {
  if (!f || !rv[0]) return;
  if (status_write) f->seen_rv = mgop_uid_hash(rv);
  else f->applied_rv = mgop_uid_hash(rv);
}

static int mgop_is_own_echo(const struct mgop_fp *f, const char *rv) {
  uint64_t h;
  if (!f || !rv[0]) return 0;
  h = mgop_uid_hash(rv);
  return h == f->applied_rv || h == f->seen_rv;
}

static uint64_t mgop_desired_key(const struct mgop_rctx *r, const struct mgop_desired *d) {
  return mgop_fp_key(mgop_kinds[d->kind].kind, r->ns, d->name);
}

/* In sync: we applied these exact bytes and nobody changed the spec since. */
static int mgop_in_sync(const struct mgop_desired *d, const struct mgop_fp *f) {
  if (!f || !(f->flags & MGOP_FP_EXISTS) || f->applied_hash != d->hash) return 0;
  if (mgop_kinds[d->kind].generation) return f->seen_gen == f->applied_gen;
  return f->seen_rv == f->applied_rv;
}

/* One apply's result: counted, logged, kept in the object table. Returns
 * rc when the API server is unreachable or refuses us (the turn stops),
 * 0 otherwise; a rejected object is counted in *rejected, its rc kept in
 * *first_rc, and the turn goes on. */
static int mgop_apply_result(struct mgop_rctx *r, const struct mgop_desired *d, const struct mgop_pool_job *j,
                             int *first_rc, int *rejected) {
  uint64_t key = mgop_desired_key(r, d);
  struct mgop_fp *f;
  if (j->rc) {
    int status = j->status;
    mgop_seterr(j->rc, "%s", j->err);
    r->failed++;
    if (!r->last_error[0]) snprintf(r->last_error, sizeof(r->last_error), "%s", mgop_errmsg());
    MGOP_LOG(MGOP_WARN, ("apply %s %s/%s failed: %s", mgop_kinds[d->kind].kind, r->ns, d->name, mgop_errmsg()));
    if (status < 400 || status >= 500 || status == 401 || status == 403 || status == 429)
      return j->rc; /* the API server is unreachable or refuses us: nothing after this would fare better */
    /* the API server rejects this object: a human must look; the objects
     * after it are still applied, and the turn reports every rejection */
    if (status == 422 || status == 400)
      mgop_stall(r, "ApplyRejected", "%s %s was rejected: %s", mgop_kinds[d->kind].kind, d->name, mgop_errmsg());
    if (!*first_rc) *first_rc = j->rc;
    (*rejected)++;
    return MGOP_OK;
  }
  r->applied++;
  if (r->applied_note_len < sizeof(r->applied_note) - 80)
    r->applied_note_len += (size_t)snprintf(r->applied_note + r->applied_note_len,
                                            sizeof(r->applied_note) - r->applied_note_len, "%s%s %s",
                                            r->applied > 1 ? ", " : "", mgop_kinds[d->kind].kind, d->name);
  f = mgop_fp_upsert(key);
  if (!f)
    mgop_limit_reached(r, MGOP_L_FINGERPRINTS, "%s %s was applied, but the operator's object table is full (%zu "
                       "rows for all clusters), so it cannot tell when it is in sync: raise --max-objects (about 26 "
                       "per minimal cluster) or run fewer clusters per operator", mgop_kinds[d->kind].kind, d->name,
                       mgop_fp_slots());
  if (f) {
    f->cluster = mgop_cluster_hash(r->ns, r->name);
    f->kind = d->kind + 1; /* swept by a relist that does not show it */
    f->epoch = mgop_server.list_epoch[d->kind];
    /* a new generation is not settled until its controller says so */
    if (mgop_kinds[d->kind].generation && j->res.generation != f->seen_gen) f->flags &= ~MGOP_FP_SETTLED;
    f->applied_hash = d->hash;
    f->applied_gen = j->res.generation;
    f->applied_rv = mgop_uid_hash(j->res.rv);
    /* until the watch reports it, what we wrote is what exists */
    f->flags |= MGOP_FP_EXISTS;
    if (j->status == 201) f->flags |= MGOP_FP_CREATED;
    /* a workload created now has none ready and the replicas the server
     * stored: this turn's status says so (0/1, not 0/0), and the watch's
     * first report of it changes nothing, so the status is not written
     * twice in a row */
    if (j->status == 201 && (d->kind == K_STS || d->kind == K_DEPLOY) && j->res.replicas >= 0 &&
        j->res.replicas <= INT32_MAX) {
      f->desired = (int32_t)j->res.replicas;
      f->ready = 0;
    }
    f->seen_gen = j->res.generation;
    f->seen_rv = mgop_uid_hash(j->res.rv);
    snprintf(f->uid, sizeof(f->uid), "%s", j->res.uid);
  }
  {
    char fields[512];
    snprintf(fields, sizeof(fields), "\"kind\":\"%s\",\"namespace\":\"%s\",\"name\":\"%s\",\"resourceVersion\":\"%s\"",
             mgop_kinds[d->kind].kind, r->ns, d->name, j->res.rv);
    mgop_log_fields(MGOP_INFO, "reconcile", "applied", fields);
  }
  return MGOP_OK;
}

/* Applies every desired object from index `from` that is out of sync, as
 * one batch: the objects of a phase never depend on each other (a child
 * needs its owner's uid, so owners are a phase before), so they go out
 * several at a time (--max-applies-in-flight) and their results are read in
 * order. A rejected object does not hold back the others: the first error
 * is returned once all were tried. */
static int mgop_apply_from(struct mgop_rctx *r, int from) {
  struct mgop_pool_job *jobs = mgop_server.jobs;
  int n = 0, first_rc = MGOP_OK, rejected = 0, stop = -1;
  for (int i = from; i < r->ndesired; i++) {
    struct mgop_desired *d = &r->desired[i];
    char path[512];
    if (mgop_in_sync(d, mgop_fp_find(mgop_desired_key(r, d)))) {
      r->skipped++;
      continue;
    }
    mgop_item_path(d->kind, r->ns, d->name, path, sizeof(path));
    memset(&jobs[n], 0, offsetof(struct mgop_pool_job, err) + 1);
    if (!(jobs[n].path = mgop_arena_strndup(r->arena, path, strlen(path))))
      return mgop_seterr(MGOP_ERR_NOMEM, "reconcile arena exhausted");
    jobs[n].json = d->json;
    jobs[n].len = d->len;
    mgop_server.job_desired[n++] = i;
  }
  if (!n) return MGOP_OK;
  if (!mgop_may_write()) return mgop_seterr(MGOP_ERR_STATUS, "not the leader any more: not applying");
  mgop_pool_apply(&mgop_server.pool, mgop_api_ptr, jobs, n);
  mgop_pool_take_stats(&mgop_server.pool, &mgop_api_ptr->stats);
  for (int k = 0; k < n; k++)
    if (mgop_apply_result(r, &r->desired[mgop_server.job_desired[k]], &jobs[k], &first_rc, &rejected) && stop < 0)
      stop = k;
  if (stop >= 0) return mgop_seterr(jobs[stop].rc, "%s", jobs[stop].err);
  if (rejected > 1 && !strncmp(r->stalled_reason, "ApplyRejected", 13)) {
    size_t len = strlen(r->stalled_msg);
    snprintf(r->stalled_msg + len, sizeof(r->stalled_msg) - len, " (and %d more object%s rejected this turn; see the "
             "operator log)", rejected - 1, rejected == 2 ? "" : "s");
  }
  if (first_rc) { /* the message of the first rejection, not the last */
    for (int k = 0; k < n; k++)
      if (jobs[k].rc == first_rc) return mgop_seterr(first_rc, "%s", jobs[k].err);
  }
  return first_rc;
}

/* The uid of an owned object: from our table, or a stable placeholder when
 * rendering offline. */
static const char *mgop_uid_of(struct mgop_rctx *r, int kind, const char *name) {
  struct mgop_fp *f;
  if (r->render) return "00000000-0000-0000-0000-000000000000";
  f = mgop_fp_find(mgop_fp_key(mgop_kinds[kind].kind, r->ns, name));
  return f && f->uid[0] ? f->uid : NULL;
}

/* Metric series and counters, written by the status code; exposed by
 * section 11. */
#define MGOP_SERIES_DEFAULT 2048 /* --max-metric-series: about 7 a minimal cluster */
struct mgop_series {
  uint64_t owner;            /* root key of the cluster; 0: free      */
  const char *family;        /* a name from mgop_families              */
  char labels[MGOP_LABELS_MAX]; /* rendered: a="x",b="y"               */
  double value;
};
/* Rows are dense, [0, mgop_series_used), found through an open-addressing
 * index of row numbers: the pages the table costs follow the series that
 * exist, not --max-metric-series (a hashed table of rows touched them all
 * once a few thousand were spread over it), and /metrics reads only those. */
static struct mgop_series *mgop_series; /* mgop_series_cap rows, allocated at start-up */
static uint32_t *mgop_series_index;     /* row + 1; 0 empty */
static size_t mgop_series_cap, mgop_series_icap;
static uint64_t *mgop_series_set; /* a bit a row: set by the status turn under way (mgop_series_begin) */
#define MGOP_SERIES_ROWS_MAX ((size_t)1 << 28)

/* Start-up, before the threads (or a test's first gauge): the table. */
static int mgop_series_init(size_t rows) {
  if (mgop_series) return MGOP_OK;
  if (rows < 2 || rows > MGOP_SERIES_ROWS_MAX)
    return mgop_seterr(MGOP_ERR_NOMEM, "a metric series table of %zu rows: between 2 and %zu", rows,
                       MGOP_SERIES_ROWS_MAX);
  mgop_series_icap = mgop_dense_index_slots(rows);
  mgop_series = mgop_table_alloc(rows, sizeof(*mgop_series));
  mgop_series_index = mgop_table_alloc(mgop_series_icap, sizeof(*mgop_series_index));
  mgop_series_set = mgop_table_alloc((rows + 63) / 64, sizeof(*mgop_series_set));
  if (!mgop_series || !mgop_series_index || !mgop_series_set) {
    mgop_series = NULL;
    return mgop_seterr(MGOP_ERR_NOMEM, "cannot allocate a metric series table of %zu rows", rows);
  }
  mgop_series_cap = rows;
  return MGOP_OK;
}
static unsigned long long mgop_series_full; /* sets that found no free row */

enum { MGOP_C_CLUSTER, MGOP_C_TEMPLATE, MGOP_C_COUNT }; /* our "controllers": the two kinds of work */
static const char *const mgop_controller_names[MGOP_C_COUNT] = {"multigrescluster", "template"};
/* from half a millisecond: admission answers in well under 5 ms, and its
 * histogram must show by how much */
static const double mgop_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
#define MGOP_NBUCKETS ((int)(sizeof(mgop_buckets) / sizeof(mgop_buckets[0])))
struct mgop_histogram { unsigned long long bucket[MGOP_NBUCKETS], count; double sum; };
static struct {
  unsigned long long success[MGOP_C_COUNT], error[MGOP_C_COUNT], requeue[MGOP_C_COUNT];
  struct mgop_histogram latency[MGOP_C_COUNT];
  unsigned long long adds;
  unsigned long long pruned; /* objects deleted because the tree no longer has them */
  unsigned long long reclaims_adopted, reclaims_refused; /* orphans of a deleted cluster: taken back, or not */
  long long start_s;
  long long start_ms;  /* monotonic, at main(): for the first turn's log line */
  int turned;          /* 1: a turn was done (logged); 2: the first failed (logged), none done yet */
  int listed;          /* the start's full lists are logged */
} mgop_stats;

static void mgop_histogram_observe(struct mgop_histogram *h, double v) {
  for (int i = 0; i < MGOP_NBUCKETS; i++)
    if (v <= mgop_buckets[i]) h->bucket[i]++;
  h->count++;
  h->sum += v;
}

/* One reconcile turn finished: result "success", "error" or "requeue". */
static void mgop_metrics_turn(int controller, const char *result, double seconds) {
  pthread_mutex_lock(&mgop_shared.mu);
  if (!strcmp(result, "error")) mgop_stats.error[controller]++;
  else if (!strcmp(result, "requeue")) mgop_stats.requeue[controller]++;
  else mgop_stats.success[controller]++;
  mgop_histogram_observe(&mgop_stats.latency[controller], seconds);
  pthread_mutex_unlock(&mgop_shared.mu);
}

/* Appends name="value" to a label buffer, escaped as the format asks. The
 * buffers are sized for the longest names the CRD allows; a label that
 * does not fit all the same is counted and logged, never silently cut. */
static int mgop_label(char *buf, size_t cap, const char *name, const char *value) {
  size_t n = strlen(buf), need = n + (n ? 1 : 0) + strlen(name) + 3;
  for (const char *p = value; *p; p++) need += (*p == '\\' || *p == '"' || *p == '\n') ? 2 : 1;
  if (need >= cap) {
    char what[160];
    snprintf(what, sizeof(what), "label %s=\"%.40s...\" does not fit the %zu-byte label set; the series is "
             "not written", name, value, cap);
    mgop_limit_note(MGOP_L_METRIC_LABELS, what);
    return -1;
  }
  if (n) buf[n++] = ',';
  n += (size_t)snprintf(buf + n, cap - n, "%s=\"", name); /* need < cap: everything below fits */
  for (const char *p = value; *p; p++) {
    if (*p == '\\' || *p == '"') buf[n++] = '\\', buf[n++] = *p;
    else if (*p == '\n') buf[n++] = '\\', buf[n++] = 'n';
    else buf[n++] = *p;
  }
  buf[n++] = '"';
  buf[n] = 0;
  return 0;
}

static void mgop_gauge_set_locked(uint64_t owner, const char *family, const char *labels, double value);
static void mgop_gauge_set(uint64_t owner, const char *family, const char *labels, double value) {
  pthread_mutex_lock(&mgop_shared.mu);
  mgop_gauge_set_locked(owner, family, labels, value);
  pthread_mutex_unlock(&mgop_shared.mu);
}

/* A status turn sets dozens of series: the index finds each by a hash of
 * family and labels (a scan of the whole table each time was the cost at
 * scale). */
static size_t mgop_series_used;
/* A cluster's status turn sets its series again and then drops those it did
 * not set (a cell, shard or phase that is gone): mgop_series_set has a bit
 * for each row the turn set (a bit, not a field: a field cost every row 8
 * bytes). Dropping them all first and setting them again cost a rebuild of
 * the whole index every turn (a tenth of the operator's CPU at 1,000
 * clusters), and a scrape in between saw the cluster without them. */
static void mgop_series_mark(size_t row) { mgop_series_set[row / 64] |= 1ull << (row % 64); }
static void mgop_series_unmark(size_t row) { mgop_series_set[row / 64] &= ~(1ull << (row % 64)); }
static int mgop_series_marked(size_t row) { return (int)(mgop_series_set[row / 64] >> (row % 64) & 1); }
static size_t mgop_series_home(const char *family, const char *labels) {
  uint64_t h = mgop_fnv1a64(MGOP_FNV64_INIT, family, strlen(family) + 1);
  return (size_t)(mgop_fnv1a64(h, labels, strlen(labels)) % mgop_series_icap);
}

static void mgop_gauge_set_locked(uint64_t owner, const char *family, const char *labels, double value) {
  size_t i;
  struct mgop_series *s;
  if (mgop_series_init(MGOP_SERIES_DEFAULT)) abort(); /* sized at start-up; here only in tests */
  for (i = mgop_series_home(family, labels); mgop_series_index[i]; i = (i + 1) % mgop_series_icap) {
    s = &mgop_series[mgop_series_index[i] - 1];
    if (s->family == family && !strcmp(s->labels, labels)) {
      s->owner = owner;
      s->value = value;
      mgop_series_mark(mgop_series_index[i] - 1);
      return;
    }
  }
  if (mgop_series_used >= mgop_series_cap) {
    char what[300];
    mgop_series_full++;
    snprintf(what, sizeof(what), "metric series table full (%zu series; raise --max-metric-series); %s{%.160s} is not "
             "exposed", mgop_series_cap, family, labels);
    mgop_limit_note(MGOP_L_METRIC_SERIES, what);
    return;
  }
  s = &mgop_series[mgop_series_used];
  mgop_series_index[i] = (uint32_t)++mgop_series_used;
  s->owner = owner;
  s->family = family;
  snprintf(s->labels, sizeof(s->labels), "%s", labels);
  s->value = value;
  mgop_series_mark(mgop_series_used - 1);
}

/* Drops owner's rows, all of them (a cluster or its orphans went away) or
 * those its status turn did not set: the rest close up, in order, and the
 * index is rebuilt when a row went. */
static void mgop_series_drop_rows(uint64_t owner, int all) {
  size_t kept = 0, was;
  pthread_mutex_lock(&mgop_shared.mu);
  was = mgop_series_used;
  for (size_t i = 0; i < was; i++)
    if (mgop_series[i].owner != owner || (!all && mgop_series_marked(i))) {
      if (kept != i) {
        mgop_series[kept] = mgop_series[i];
        mgop_series_unmark(kept); /* the row's bit moves with it */
        if (mgop_series_marked(i)) mgop_series_mark(kept);
      }
      kept++;
    }
  if (kept != was) {
    for (size_t r = kept; r < was; r++) mgop_series_unmark(r);
    memset(&mgop_series[kept], 0, (was - kept) * sizeof(mgop_series[0]));
    mgop_series_used = kept;
    memset(mgop_series_index, 0, mgop_series_icap * sizeof(mgop_series_index[0]));
    for (size_t r = 0; r < kept; r++)
      mgop_dense_index_put(mgop_series_index, mgop_series_icap, mgop_series_home(mgop_series[r].family,
                           mgop_series[r].labels), r);
  }
  pthread_mutex_unlock(&mgop_shared.mu);
}

static void mgop_series_drop(uint64_t owner) { mgop_series_drop_rows(owner, 1); }

/* A status turn begins: the series it sets from now on are its own. */
static void mgop_series_begin(void) {
  pthread_mutex_lock(&mgop_shared.mu);
  if (mgop_series_init(MGOP_SERIES_DEFAULT)) abort(); /* sized at start-up; here only in tests */
  memset(mgop_series_set, 0, (mgop_series_used + 63) / 64 * sizeof(*mgop_series_set));
  pthread_mutex_unlock(&mgop_shared.mu);
}

/* ... and ends: owner's rows it did not set go. */
static void mgop_series_sweep(uint64_t owner) { mgop_series_drop_rows(owner, 0); }

/* The families seed 003 names, in the order they are exposed. */
static const char mgop_f_cluster_info[] = "multigres_operator_cluster_info";
static const char mgop_f_cells[] = "multigres_operator_cluster_cells_total";
static const char mgop_f_shards[] = "multigres_operator_cluster_shards_total";
static const char mgop_f_gateway[] = "multigres_operator_cell_gateway_replicas";
static const char mgop_f_pool[] = "multigres_operator_shard_pool_replicas";
static const char mgop_f_topo[] = "multigres_operator_toposerver_replicas";
static const char mgop_f_orphaned[] = "multigres_operator_orphaned_resources";
static const char mgop_f_backup_age[] = "multigres_operator_last_backup_age_seconds";
static const char mgop_f_backup_missed[] = "multigres_operator_backup_missed_runs";
static const char mgop_f_rolling[] = "multigres_operator_rolling_update_in_progress";
static const struct { const char *name, *help; } mgop_families[] = {
    {mgop_f_cluster_info, "Cluster phase tracking (always 1)."},
    {mgop_f_cells, "Cells of the cluster."},
    {mgop_f_shards, "Shards of the cluster."},
    {mgop_f_gateway, "multigateway replicas of a cell, by state (ready, desired)."},
    {mgop_f_pool, "Pool replicas of a shard, by state (ready, desired)."},
    {mgop_f_topo, "etcd members of a TopoServer, by state (ready, desired)."},
    {mgop_f_orphaned, "Objects detached from a deleted cluster (deletion-policy Orphan) and not adopted again."},
    {mgop_f_backup_age, "Seconds since the newest complete backup of a shard, as multiadmin lists them."},
    {mgop_f_backup_missed, "Scheduled backups of a shard missed since the operator started."},
    {mgop_f_rolling, "1 while a shard's pool pods are being replaced (or a scale-down waits for the primary to move), else 0."},
};

/* A replica pair for one object: state="ready" and state="desired". */
static void mgop_gauge_pair(uint64_t owner, const char *family, const char *k1, const char *v1, const char *k2,
                            const char *v2, const char *ns, int ready, int desired) {
  char l[MGOP_LABELS_MAX];
  for (int i = 0; i < 2; i++) {
    int bad;
    l[0] = 0;
    bad = mgop_label(l, sizeof(l), k1, v1);
    if (k2) bad |= mgop_label(l, sizeof(l), k2, v2);
    bad |= mgop_label(l, sizeof(l), "namespace", ns);
    bad |= mgop_label(l, sizeof(l), "state", i ? "desired" : "ready");
    if (!bad) mgop_gauge_set(owner, family, l, i ? desired : ready);
  }
}

static void mgop_event(struct mgop_rctx *r, int kind, const char *name, const char *uid, const char *type,
                       const char *reason, const char *action, const char *note); /* section 7 */
static void mgop_enqueue(const char *ns, const char *name, long long delay_ms); /* section 9 */

/* ---- prune ---------------------------------------------------------------- */
/* After a turn that built the whole tree, whatever of this cluster the watches
 * show and the tree no longer has is deleted: an object is ours when it has
 * the cluster's label (rows come from the managed-by watches) and its
 * controller ownerReferences lead, row by row, to the cluster's own uid.
 * Children go before their parents; each DELETE names the uid it saw, so an
 * object re-created under the same name stays. PVCs are never deleted here:
 * the StatefulSet's persistentVolumeClaimRetentionPolicy (pvcDeletionPolicy)
 * decides whether its volumes go with it. */
#define MGOP_PRUNE_MAX MGOP_DESIRED_MAX /* per turn; more waits for the next */
struct mgop_prune_item { uint64_t key; int kind, depth, found; char name[MGOP_NAME_MAX + 1]; char uid[40]; };
static struct mgop_prune_item mgop_prune_items[MGOP_PRUNE_MAX];

/* How many owner links from f up to the cluster (uid root_uid), or 0 when
 * the chain breaks: not ours, or of an earlier cluster of the same name. */
static int mgop_owner_depth(const struct mgop_fp *f, uint64_t cluster, uint64_t root_key, uint64_t root_uid) {
  for (int depth = 1; depth <= 6; depth++) {
    const struct mgop_fp *p;
    if (!f->owner_key) return 0;
    if (f->owner_key == root_key) return f->owner_uid == root_uid ? depth : 0;
    p = mgop_fp_find(f->owner_key);
    if (!p || p->cluster != cluster || !p->uid[0] || mgop_uid_hash(p->uid) != f->owner_uid) return 0;
    f = p;
  }
  return 0;
}

static int mgop_cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static int mgop_cmp_prune(const void *a, const void *b) { /* deepest first */
  const struct mgop_prune_item *x = a, *y = b;
  return y->depth - x->depth;
}

struct mgop_prune_list { struct mgop_rctx *r; int kind, n; };
/* A LIST item: names the candidates (rows hold hashes, not names). */
static int mgop_prune_on_item(void *ctx, const struct mgop_json *j, int item) {
  struct mgop_prune_list *pl = ctx;
  char name[MGOP_NAME_MAX + 1], uid[40];
  uint64_t key;
  if (mgop_json_path_str(j, item, "metadata.name", name, sizeof(name)) ||
      mgop_json_path_str(j, item, "metadata.uid", uid, sizeof(uid)))
    return MGOP_OK;
  if (mgop_json_path(j, item, "metadata.deletionTimestamp") >= 0) return MGOP_OK; /* already going */
  key = mgop_fp_key(mgop_kinds[pl->kind].kind, pl->r->ns, name);
  for (int i = 0; i < pl->n; i++) {
    struct mgop_prune_item *c = &mgop_prune_items[i];
    if (c->key != key || strcmp(c->uid, uid)) continue;
    snprintf(c->name, sizeof(c->name), "%s", name);
    c->found = 1;
  }
  return MGOP_OK;
}

/* Deletes one candidate; returns 1 when deleted. */
static int mgop_prune_one(struct mgop_rctx *r, struct mgop_prune_item *c, char *note, size_t *note_len, size_t cap) {
  char path[512], fields[600];
  int status = 0;
  mgop_item_path(c->kind, r->ns, c->name, path, sizeof(path));
  if (mgop_kube_delete(mgop_api_ptr, path, "Background", c->uid, &status)) {
    if (status == 409) return 0; /* another object of that name now: not ours to delete */
    snprintf(r->last_error, sizeof(r->last_error), "%s", mgop_errmsg());
    return -1;
  }
  pthread_mutex_lock(&mgop_shared.mu); /* the serving thread renders it */
  mgop_stats.pruned++;
  pthread_mutex_unlock(&mgop_shared.mu);
  snprintf(fields, sizeof(fields), "\"kind\":\"%s\",\"namespace\":\"%s\",\"name\":\"%s\",\"uid\":\"%s\"",
           mgop_kinds[c->kind].kind, r->ns, c->name, c->uid);
  mgop_log_fields(MGOP_INFO, "reconcile", "pruned", fields);
  if (*note_len < cap - 80)
    *note_len += (size_t)snprintf(note + *note_len, cap - *note_len, "%s%s %s", *note_len ? ", " : "",
                                  mgop_kinds[c->kind].kind, c->name);
  return 1;
}

static int mgop_prune(struct mgop_rctx *r) {
  uint64_t want[MGOP_DESIRED_MAX], cl = mgop_cluster_hash(r->ns, r->name);
  uint64_t root_key = mgop_fp_key("MultigresCluster", r->ns, r->name), root_uid = mgop_uid_hash(r->uid);
  int n = 0, more = 0, pruned = 0, rc = MGOP_OK;
  char note[900];
  size_t note_len = 0;
  for (int i = 0; i < r->ndesired; i++) want[i] = mgop_desired_key(r, &r->desired[i]);
  qsort(want, (size_t)r->ndesired, sizeof(want[0]), mgop_cmp_u64);
  for (size_t i = 0; i < mgop_fp_span(); i++) {
    struct mgop_fp *f = mgop_fp_at(i);
    int depth;
    if (!f || f->cluster != cl || f->kind <= 0 || !(f->flags & MGOP_FP_EXISTS) || !f->uid[0]) continue;
    if (bsearch(&f->key, want, (size_t)r->ndesired, sizeof(want[0]), mgop_cmp_u64)) continue;
    if (!(depth = mgop_owner_depth(f, cl, root_key, root_uid))) continue;
    if (n == MGOP_PRUNE_MAX) { more = 1; break; }
    memset(&mgop_prune_items[n], 0, sizeof(mgop_prune_items[0]));
    mgop_prune_items[n].key = f->key;
    mgop_prune_items[n].kind = f->kind - 1;
    mgop_prune_items[n].depth = depth;
    snprintf(mgop_prune_items[n].uid, sizeof(mgop_prune_items[n].uid), "%s", f->uid);
    n++;
  }
  if (!n) return MGOP_OK;
  if (!mgop_may_write()) return mgop_seterr(MGOP_ERR_STATUS, "not the leader any more: not pruning");
  for (int kind = 0; kind < K_COUNT; kind++) { /* names from a LIST of this cluster's objects of each kind */
    struct mgop_prune_list pl = {r, kind, n};
    char path[512], rv[32];
    int any = 0;
    for (int i = 0; i < n; i++) any |= mgop_prune_items[i].kind == kind;
    if (!any) continue;
    mgop_collection_path(kind, r->ns, path, sizeof(path));
    snprintf(path + strlen(path), sizeof(path) - strlen(path), "?labelSelector=%s%%2Cmultigres.com%%2Fcluster%%3D%s",
             MGOP_MANAGED_SELECTOR, r->name);
    rc = mgop_kube_list(mgop_api_ptr, NULL, path, mgop_prune_on_item, &pl, rv, sizeof(rv), NULL);
    if (rc == MGOP_ERR_NOTFOUND && kind == K_CERT) { /* cert-manager uninstalled: its CRD took them along */
      for (int i = 0; i < n; i++)
        if (mgop_prune_items[i].kind == kind) mgop_fp_remove(mgop_prune_items[i].key); /* no side tables */
      rc = MGOP_OK;
    }
    if (rc) return rc;
  }
  qsort(mgop_prune_items, (size_t)n, sizeof(mgop_prune_items[0]), mgop_cmp_prune);
  for (int i = 0; i < n && rc == MGOP_OK; i++) {
    int one;
    if (!mgop_prune_items[i].found) continue; /* gone already, or another uid: the watch will say */
    one = mgop_prune_one(r, &mgop_prune_items[i], note, &note_len, sizeof(note));
    if (one < 0) rc = MGOP_ERR_STATUS;
    else pruned += one;
  }
  if (pruned) {
    char msg[1000];
    snprintf(msg, sizeof(msg), "deleted %d object%s the spec no longer has: %s%s", pruned, pruned == 1 ? "" : "s", note,
             note_len >= sizeof(note) - 80 ? ", ..." : "");
    mgop_event(r, K_CLUSTER, r->name, r->uid, "Normal", "Pruned", "Prune", msg);
  }
  if (more) {
    MGOP_LOG(MGOP_INFO, ("%s/%s: more than %d objects to prune; the rest in the next turn", r->ns, r->name,
                         MGOP_PRUNE_MAX));
    mgop_enqueue(r->ns, r->name, 0);
  }
  return rc;
}

/* ---- orphan and reclaim ---------------------------------------------------
 * The annotation multigres.com/deletion-policy: Orphan on a cluster keeps
 * its data when the cluster is deleted. What holds data: the StatefulSets
 * (pools and etcd), their PVCs, and each shard's postgres password Secret
 * (a new random one would lock the old data out). While the annotation is
 * set the cluster carries the finalizer multigres.com/orphan, so the
 * garbage collector cannot start on its children (Cells, TopoServers,
 * TableGroups, Shards, which own the workloads) until the operator has
 * detached those objects: owner references removed, label
 * multigres.com/orphaned-from=<cluster uid>, StatefulSets set to keep their
 * PVCs. Pods stay owned by their (surviving) StatefulSet and keep running.
 * A cluster created again under the same name finds the orphans by the
 * StatefulSet watch (MGOP_FP_ORPHANED); when its tree still has every
 * orphaned StatefulSet and no volume shrinks or etcd membership change, the
 * normal apply puts the new owners' references back (the pod template is
 * byte for byte the same, so no pod restarts) and the label goes; otherwise
 * it stalls naming the field, and nothing of the orphans is touched. */
#define MGOP_DELETION_POLICY_ANNOTATION "multigres.com/deletion-policy"
#define MGOP_ORPHANED_FROM_LABEL "multigres.com/orphaned-from"
#define MGOP_ORPHAN_FINALIZER "multigres.com/orphan"
#define MGOP_ORPHAN_MANAGER "multigres-operator-orphan" /* owns the finalizer and the label */
#define MGOP_ORPHANS_MAX 256 /* objects one LIST pass patches; more: another pass */

/* The kinds an Orphan deletion detaches, LISTed by the cluster's labels.
 * Secrets are never listed (the operator must not read Secrets): their
 * names follow from the Shards. */
enum { MGOP_O_STS, MGOP_O_PVC, MGOP_O_KINDS };
static const struct { const char *kind, *prefix, *plural; } mgop_orphan_kinds[MGOP_O_KINDS] = {
    {"StatefulSet", "/apis/apps/v1", "statefulsets"},
    {"PersistentVolumeClaim", "/api/v1", "persistentvolumeclaims"},
};

/* The collection (name NULL) or item path of an orphan kind. */
static void mgop_orphan_path(int okind, const char *ns, const char *name, char *out, size_t cap) {
  snprintf(out, cap, "%s/namespaces/%.63s/%s%s%.253s", mgop_orphan_kinds[okind].prefix, ns,
           mgop_orphan_kinds[okind].plural, name ? "/" : "", name ? name : "");
}

/* One object as a LIST of a cluster's objects shows it. */
struct mgop_orphan {
  char name[128];     /* StatefulSets 63, their PVCs 73, Shards 117 */
  char from[40];      /* its orphaned-from label ("": none)        */
  int owned;          /* it has ownerReferences                    */
  char component[64], cell[64], database[64], tablegroup[64], shard[64], pool[64];
};
static struct mgop_orphan mgop_orphans[MGOP_ORPHANS_MAX];
/* check: instead of collecting, compare each StatefulSet with this turn's
 * tree and keep the first one it lacks in mgop_orphans[0] (any number). */
struct mgop_orphan_list { int n, more; const struct mgop_rctx *check; int miss; };

/* Index of the first orphaned StatefulSet the desired tree does not have
 * (another pool layout, another cell, no etcd), or -1: all are adopted. */
static int mgop_orphans_missing(const struct mgop_orphan *o, int n, const struct mgop_desired *d, int nd) {
  for (int i = 0; i < n; i++) {
    int found = 0;
    for (int k = 0; k < nd && !found; k++) found = d[k].kind == K_STS && !strcmp(d[k].name, o[i].name);
    if (!found) return i;
  }
  return -1;
}

static int mgop_orphan_on_item(void *ctx, const struct mgop_json *j, int item) {
  struct mgop_orphan_list *ol = ctx;
  struct mgop_orphan *o;
  int labels = mgop_json_path(j, item, "metadata.labels"), refs = mgop_json_path(j, item, "metadata.ownerReferences");
  static const struct { const char *key; size_t off; } keys[] = {
      {MGOP_ORPHANED_FROM_LABEL, offsetof(struct mgop_orphan, from)},
      {"app.kubernetes.io/component", offsetof(struct mgop_orphan, component)},
      {"multigres.com/cell", offsetof(struct mgop_orphan, cell)},
      {"multigres.com/database", offsetof(struct mgop_orphan, database)},
      {"multigres.com/tablegroup", offsetof(struct mgop_orphan, tablegroup)},
      {"multigres.com/shard", offsetof(struct mgop_orphan, shard)},
      {"multigres.com/pool", offsetof(struct mgop_orphan, pool)}};
  if (!ol->check && ol->n == MGOP_ORPHANS_MAX) { ol->more = 1; return MGOP_OK; }
  o = &mgop_orphans[ol->check ? ol->miss : ol->n]; /* checking: slot 1 is scratch once 0 holds a miss */
  memset(o, 0, sizeof(*o));
  if (mgop_json_path_str(j, item, "metadata.name", o->name, sizeof(o->name))) return MGOP_OK; /* not ours: too long */
  if (mgop_json_path(j, item, "metadata.deletionTimestamp") >= 0) return MGOP_OK; /* going anyway */
  for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
    char *dst = (char *)o + keys[k].off;
    if (mgop_json_str(j, mgop_json_key(j, labels, keys[k].key), dst, keys[k].key == keys[0].key ? 40 : 64)) dst[0] = 0;
  }
  o->owned = mgop_json_is(j, refs, JSMN_ARRAY) && j->tok[refs].size > 0;
  if (ol->check) {
    if (!ol->miss && mgop_orphans_missing(o, 1, ol->check->desired, ol->check->ndesired) == 0) ol->miss = 1;
    return MGOP_OK;
  }
  ol->n++;
  return MGOP_OK;
}

/* LISTs the cluster's objects of one orphan kind into mgop_orphans; with
 * orphans_only, only those carrying the orphaned-from label. */
static int mgop_orphan_list(struct mgop_rctx *r, int okind, int orphans_only, struct mgop_orphan_list *ol) {
  char path[600], rv[32];
  size_t n;
  const struct mgop_rctx *check = ol->check;
  memset(ol, 0, sizeof(*ol));
  ol->check = check;
  mgop_orphan_path(okind, r->ns, NULL, path, sizeof(path));
  n = strlen(path);
  snprintf(path + n, sizeof(path) - n, "?labelSelector=%s%%2Cmultigres.com%%2Fcluster%%3D%.63s%s",
           MGOP_MANAGED_SELECTOR, r->name, orphans_only ? "%2Cmultigres.com%2Forphaned-from" : "");
  return mgop_kube_list(mgop_api_ptr, NULL, path, mgop_orphan_on_item, ol, rv, sizeof(rv), NULL);
}

/* The merge patch that detaches an object from a deleted cluster: no owner
 * references, the orphaned-from label; a StatefulSet also keeps its PVCs
 * from now on, whatever pvcDeletionPolicy said (adoption applies it again). */
static int mgop_orphan_patch(struct mgop_buf *b, const char *cluster_uid, int sts) {
  struct mgop_jw w;
  mgop_jw_init(&w, b);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "metadata"); mgop_jw_obj(&w);
  mgop_jw_key(&w, "ownerReferences"); mgop_jw_raw(&w, "null", 4);
  mgop_jw_key(&w, "labels"); mgop_jw_obj(&w);
  mgop_jw_key(&w, MGOP_ORPHANED_FROM_LABEL); mgop_jw_str(&w, cluster_uid);
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  if (sts) {
    mgop_jw_key(&w, "spec"); mgop_jw_obj(&w);
    mgop_jw_key(&w, "persistentVolumeClaimRetentionPolicy");
    MGOP_JW_LIT(&w, "{\"whenDeleted\":\"Retain\",\"whenScaled\":\"Retain\"}");
    mgop_jw_obj_end(&w);
  }
  mgop_jw_obj_end(&w);
  return b->overflow ? mgop_seterr(MGOP_ERR_TOOBIG, "orphan patch too large") : MGOP_OK;
}

/* The merge patch that takes an orphan back: the label goes and, when an
 * owner is named, it becomes the controller owner again. */
static int mgop_adopt_patch(struct mgop_buf *b, int owner_kind, const char *owner_name, const char *owner_uid) {
  struct mgop_jw w;
  mgop_jw_init(&w, b);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "metadata"); mgop_jw_obj(&w);
  mgop_jw_key(&w, "labels"); mgop_jw_obj(&w);
  mgop_jw_key(&w, MGOP_ORPHANED_FROM_LABEL); mgop_jw_raw(&w, "null", 4);
  mgop_jw_obj_end(&w);
  if (owner_name) {
    mgop_jw_key(&w, "ownerReferences"); mgop_jw_arr(&w); mgop_jw_obj(&w);
    mgop_jw_key(&w, "apiVersion"); mgop_jw_str(&w, mgop_kinds[owner_kind].api_version);
    mgop_jw_key(&w, "kind"); mgop_jw_str(&w, mgop_kinds[owner_kind].kind);
    mgop_jw_key(&w, "name"); mgop_jw_str(&w, owner_name);
    mgop_jw_key(&w, "uid"); mgop_jw_str(&w, owner_uid);
    mgop_jw_key(&w, "controller"); mgop_jw_bool(&w, 1);
    mgop_jw_key(&w, "blockOwnerDeletion"); mgop_jw_bool(&w, 1);
    mgop_jw_obj_end(&w); mgop_jw_arr_end(&w);
  }
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  return b->overflow ? mgop_seterr(MGOP_ERR_TOOBIG, "adopt patch too large") : MGOP_OK;
}

/* The spec field that made an orphaned StatefulSet, from its labels. */
static void mgop_orphan_field(const struct mgop_orphan *o, char *out, size_t cap) {
  if (!strcmp(o->component, "toposerver"))
    snprintf(out, cap, "spec.globalTopoServer.etcd");
  else if (!strcmp(o->component, "local-toposerver"))
    snprintf(out, cap, "spec.cells[name=%s].localTopoServer", o->cell);
  else if (!strcmp(o->component, "shard-pool"))
    snprintf(out, cap, "spec.databases[name=%s].tablegroups[name=%s].shards[name=%s].pools.%s (cell %s)", o->database,
             o->tablegroup, o->shard, o->pool, o->cell);
  else
    snprintf(out, cap, "spec (component %s)", o->component[0] ? o->component : "unknown");
}

/* The series of multigres_operator_orphaned_resources for a cluster name:
 * owned apart from the cluster's own series, which go with the cluster. */
static uint64_t mgop_orphan_series_key(const char *ns, const char *name) {
  return mgop_fp_key("Orphaned", ns, name);
}

static void mgop_orphan_gauge(const char *ns, const char *name, int count) {
  char l[MGOP_LABELS_MAX] = "";
  if (count <= 0) {
    mgop_series_drop(mgop_orphan_series_key(ns, name));
    return;
  }
  if (!mgop_label(l, sizeof(l), "namespace", ns) && !mgop_label(l, sizeof(l), "cluster", name))
    mgop_gauge_set(mgop_orphan_series_key(ns, name), mgop_f_orphaned, l, count);
}

static int mgop_patch_object(const char *path, const char *json, size_t n, int *status) {
  int rc = mgop_kube_merge_patch(mgop_api_ptr, path, MGOP_ORPHAN_MANAGER, json, n, NULL, status);
  return rc == MGOP_ERR_NOTFOUND ? MGOP_OK : rc; /* gone already: nothing to keep */
}

/* Has the StatefulSet watch seen orphans of this cluster's name? */
static int mgop_orphan_maybe(uint64_t cl) { /* mgop_server.orphan_clusters */
  unsigned a = (unsigned)(cl % 4096), b = (unsigned)((cl >> 32) % 4096);
  return (mgop_server.orphan_clusters[a / 64] >> (a % 64) & 1) && (mgop_server.orphan_clusters[b / 64] >> (b % 64) & 1);
}

static void mgop_orphan_mark(uint64_t cl) {
  unsigned a = (unsigned)(cl % 4096), b = (unsigned)((cl >> 32) % 4096);
  mgop_server.orphan_clusters[a / 64] |= 1ull << (a % 64);
  mgop_server.orphan_clusters[b / 64] |= 1ull << (b % 64);
}

static int mgop_has_orphans(const struct mgop_rctx *r) {
  uint64_t cl = mgop_cluster_hash(r->ns, r->name);
  if (!mgop_orphan_maybe(cl)) return 0;
  for (size_t i = 0; i < mgop_fp_span(); i++) {
    const struct mgop_fp *f = mgop_fp_at(i);
    if (f && f->cluster == cl && f->kind == K_STS + 1 && (f->flags & MGOP_FP_EXISTS) && (f->flags & MGOP_FP_ORPHANED))
      return 1;
  }
  return 0;
}

/* Detaches the cluster's StatefulSets and PVCs (those still attached or not
 * yet labelled; orphans of an earlier cluster of that name stay as they
 * are) and its shards' password Secrets. counts[] per kind: detached now
 * or by an earlier pass of this deletion. */
static int mgop_orphan_detach(struct mgop_rctx *r, int counts[MGOP_O_KINDS + 1]) {
  char mem[1024], path[600];
  struct mgop_buf b;
  int rc, status;
  for (int k = 0; k < MGOP_O_KINDS; k++) {
    struct mgop_orphan_list ol = {.n = 0};
    int passes = 0;
    counts[k] = 0;
    do {
      if ((rc = mgop_orphan_list(r, k, 0, &ol))) return rc;
      for (int i = 0; i < ol.n; i++) {
        struct mgop_orphan *o = &mgop_orphans[i];
        if (!o->owned && o->from[0]) { counts[k] += !strcmp(o->from, r->uid); continue; }
        mgop_buf_init(&b, mem, sizeof(mem));
        if ((rc = mgop_orphan_patch(&b, r->uid, k == MGOP_O_STS))) return rc;
        mgop_orphan_path(k, r->ns, o->name, path, sizeof(path));
        if ((rc = mgop_patch_object(path, b.p, b.len, &status))) return rc;
        counts[k]++;
      }
    } while (ol.more && ++passes < 64); /* each pass labels what it saw: the next LIST skips them */
  }
  /* the password Secrets, one per Shard: named after it. Not while orphans
   * of an earlier cluster of this name wait (this one never adopted them):
   * the Secrets are theirs, detached already */
  counts[MGOP_O_KINDS] = 0;
  if (!mgop_has_orphans(r)) {
    struct mgop_orphan_list ol = {.n = 0};
    char shards[600], rv[32];
    snprintf(shards, sizeof(shards), "/apis/" MGOP_API_VERSION "/namespaces/%.63s/shards", r->ns);
    snprintf(path, sizeof(path), "%.300s?labelSelector=multigres.com%%2Fcluster%%3D%.63s", shards, r->name);
    memset(&ol, 0, sizeof(ol));
    if ((rc = mgop_kube_list(mgop_api_ptr, NULL, path, mgop_orphan_on_item, &ol, rv, sizeof(rv), NULL))) return rc;
    if (ol.more) return mgop_seterr(MGOP_ERR_TOOBIG, "more than %d Shards", MGOP_ORPHANS_MAX);
    for (int i = 0; i < ol.n; i++) {
      char secret[600];
      snprintf(secret, sizeof(secret), "/api/v1/namespaces/%.63s/secrets/%.253s-postgres-password", r->ns,
               mgop_orphans[i].name);
      mgop_buf_init(&b, mem, sizeof(mem));
      if ((rc = mgop_orphan_patch(&b, r->uid, 0))) return rc;
      rc = mgop_kube_merge_patch(mgop_api_ptr, secret, MGOP_ORPHAN_MANAGER, b.p, b.len, NULL, &status);
      if (rc == MGOP_ERR_NOTFOUND) continue;
      if (rc) return rc;
      counts[MGOP_O_KINDS]++;
    }
  }
  return MGOP_OK;
}

/* The cluster's child CRs carry the label deletion-policy=Orphan, by which
 * the webhook refuses their deletion (a foreground deletion of the cluster
 * deletes them at once, and their workloads with them). Once the data is
 * detached the label goes, and the garbage collector's next try succeeds. */
static int mgop_orphan_release_children(struct mgop_rctx *r) {
  static const int kinds[] = {K_SHARD, K_TG, K_CELL, K_TOPO};
  static const char patch[] = "{\"metadata\":{\"labels\":{\"multigres.com/deletion-policy\":null}}}";
  char path[600], rv[32];
  int rc, status;
  for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
    struct mgop_orphan_list ol = {.n = 0};
    memset(&ol, 0, sizeof(ol));
    mgop_collection_path(kinds[k], r->ns, path, sizeof(path));
    snprintf(path + strlen(path), sizeof(path) - strlen(path),
             "?labelSelector=multigres.com%%2Fcluster%%3D%.63s%%2Cmultigres.com%%2Fdeletion-policy", r->name);
    if ((rc = mgop_kube_list(mgop_api_ptr, NULL, path, mgop_orphan_on_item, &ol, rv, sizeof(rv), NULL))) return rc;
    for (int i = 0; i < ol.n; i++) {
      size_t n;
      mgop_collection_path(kinds[k], r->ns, path, sizeof(path));
      n = strlen(path);
      snprintf(path + n, sizeof(path) - n, "/%.253s", mgop_orphans[i].name);
      if ((rc = mgop_patch_object(path, patch, sizeof(patch) - 1, &status))) return rc;
    }
    if (ol.more) return mgop_seterr(MGOP_ERR_TOOBIG, "more than %d %ss", MGOP_ORPHANS_MAX, mgop_kinds[kinds[k]].kind);
  }
  return MGOP_OK;
}

/* Adds (want=1) or drops our finalizer: server-side apply as a manager that
 * owns nothing else, so other finalizers stay. */
static int mgop_orphan_finalizer(struct mgop_rctx *r, int want) {
  char mem[1024], path[512];
  struct mgop_buf b;
  struct mgop_jw w;
  int status, rc;
  if (!mgop_may_write()) return mgop_seterr(MGOP_ERR_STATUS, "not the leader: the finalizer waits");
  mgop_buf_init(&b, mem, sizeof(mem));
  mgop_jw_init(&w, &b);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "apiVersion"); mgop_jw_str(&w, MGOP_API_VERSION);
  mgop_jw_key(&w, "kind"); mgop_jw_str(&w, "MultigresCluster");
  mgop_jw_key(&w, "metadata"); mgop_jw_obj(&w);
  mgop_jw_key(&w, "name"); mgop_jw_str(&w, r->name);
  mgop_jw_key(&w, "namespace"); mgop_jw_str(&w, r->ns);
  if (want) { mgop_jw_key(&w, "finalizers"); mgop_jw_arr(&w); mgop_jw_str(&w, MGOP_ORPHAN_FINALIZER); mgop_jw_arr_end(&w); }
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  if (b.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "finalizer patch too large");
  mgop_item_path(K_CLUSTER, r->ns, r->name, path, sizeof(path));
  snprintf(path + strlen(path), sizeof(path) - strlen(path), "?fieldManager=" MGOP_ORPHAN_MANAGER "&force=true");
  rc = mgop_kube_request(mgop_api_ptr, "PATCH", path, "application/apply-patch+yaml", b.p, b.len, NULL, &status);
  if (rc) return rc;
  if (status == 404 || status == 409) return MGOP_OK; /* gone, or another incarnation */
  if (status != 200) return mgop_seterr(MGOP_ERR_STATUS, "finalizer %s on %s/%s: HTTP %d", MGOP_ORPHAN_FINALIZER,
                                        r->ns, r->name, status);
  MGOP_LOG(MGOP_INFO, ("MultigresCluster %s/%s: finalizer %s %s", r->ns, r->name, MGOP_ORPHAN_FINALIZER,
                       want ? "added (deletion-policy Orphan)" : "removed"));
  return MGOP_OK;
}

/* A cluster being deleted: with the Orphan policy its data is detached
 * first; then our finalizer goes and the garbage collector does the rest. */
static int mgop_cluster_deleting(struct mgop_rctx *r) {
  int counts[MGOP_O_KINDS + 1], rc, total;
  char note[600];
  if (!r->has_orphan_fin) return MGOP_OK;
  if (!r->orphan_policy) return mgop_orphan_finalizer(r, 0); /* the policy was dropped before the deletion */
  if (!mgop_may_write()) return mgop_seterr(MGOP_ERR_STATUS, "not the leader: orphaning waits");
  if ((rc = mgop_orphan_detach(r, counts))) {
    MGOP_LOG(MGOP_WARN, ("MultigresCluster %s/%s: orphaning failed (retried): %s", r->ns, r->name, mgop_errmsg()));
    return rc;
  }
  total = counts[MGOP_O_STS] + counts[MGOP_O_PVC] + counts[MGOP_O_KINDS];
  snprintf(note, sizeof(note), "deletion-policy Orphan: detached %d StatefulSets, %d PersistentVolumeClaims and %d "
           "Secrets (label %s=%s, no owner references); their pods keep running. Re-create the cluster with the "
           "same name and spec to adopt them again", counts[MGOP_O_STS], counts[MGOP_O_PVC], counts[MGOP_O_KINDS],
           MGOP_ORPHANED_FROM_LABEL, r->uid);
  mgop_event(r, K_CLUSTER, r->name, r->uid, "Normal", "Orphaned", "Delete", note);
  MGOP_LOG(MGOP_INFO, ("MultigresCluster %s/%s: %s", r->ns, r->name, note));
  mgop_orphan_gauge(r->ns, r->name, total);
  if ((rc = mgop_orphan_release_children(r))) return rc;
  return mgop_orphan_finalizer(r, 0);
}

static void mgop_reclaim_count(int adopted) {
  pthread_mutex_lock(&mgop_shared.mu); /* the serving thread renders them */
  if (adopted) mgop_stats.reclaims_adopted++;
  else mgop_stats.reclaims_refused++;
  pthread_mutex_unlock(&mgop_shared.mu);
}

/* Before the workloads of a cluster with orphans are applied: every
 * orphaned StatefulSet must be in the tree, and nothing may stall (a
 * smaller volume, another etcd membership). Else the turn stops here and
 * the orphans stay as they are. */
static int mgop_reclaim_check(struct mgop_rctx *r) {
  struct mgop_orphan_list ol = {.check = r};
  int rc;
  if (r->stalled_reason[0]) {
    size_t n = strlen(r->stalled_msg);
    snprintf(r->stalled_msg + n, sizeof(r->stalled_msg) - n, " (orphans of a deleted cluster of this name are not "
             "adopted until this is fixed; nothing was changed)");
    mgop_reclaim_count(0);
    return MGOP_ERR_CONFIG;
  }
  if ((rc = mgop_orphan_list(r, MGOP_O_STS, 1, &ol))) return rc;
  if (ol.miss) {
    const int miss = 0;
    char field[400];
    mgop_orphan_field(&mgop_orphans[miss], field, sizeof(field));
    mgop_stall(r, "OrphansIncompatible", "StatefulSet %s (%s), orphaned from the deleted cluster %s of this name, has "
               "no place in this spec: %s is missing; restore it as it was to adopt the orphans, or delete them "
               "(label %s=%s); nothing was changed", mgop_orphans[miss].name, field, mgop_orphans[miss].from, field,
               MGOP_ORPHANED_FROM_LABEL, mgop_orphans[miss].from);
    mgop_reclaim_count(0);
    return MGOP_ERR_CONFIG;
  }
  return MGOP_OK;
}

/* After a turn applied the whole tree over the orphans (their StatefulSets
 * now name the new owners): the label goes from them and their PVCs, and
 * each Secret gets its new Shard as owner. */
static int mgop_reclaim_finish(struct mgop_rctx *r) {
  char mem[1024], path[600], from[40] = "";
  struct mgop_buf b;
  int rc, status, adopted = 0, left = 0;
  for (int k = 0; k < MGOP_O_KINDS; k++) {
    struct mgop_orphan_list ol = {.n = 0};
    if ((rc = mgop_orphan_list(r, k, 1, &ol))) return rc;
    for (int i = 0; i < ol.n; i++) {
      struct mgop_orphan *o = &mgop_orphans[i];
      if (k == MGOP_O_STS && !o->owned) { left++; continue; } /* not applied yet: the next turn */
      if (!from[0]) snprintf(from, sizeof(from), "%s", o->from);
      mgop_buf_init(&b, mem, sizeof(mem));
      if ((rc = mgop_adopt_patch(&b, 0, NULL, NULL))) return rc;
      mgop_orphan_path(k, r->ns, o->name, path, sizeof(path));
      if ((rc = mgop_patch_object(path, b.p, b.len, &status))) return rc;
      adopted++;
    }
    if (ol.more) left++;
  }
  for (int s = 0; s < r->nshard_names; s++) { /* the Secrets: owned by their Shard again */
    const char *uid = mgop_uid_of(r, K_SHARD, r->shard_names[s]);
    if (!uid) { left++; continue; }
    mgop_buf_init(&b, mem, sizeof(mem));
    if ((rc = mgop_adopt_patch(&b, K_SHARD, r->shard_names[s], uid))) return rc;
    snprintf(path, sizeof(path), "/api/v1/namespaces/%.63s/secrets/%.253s-postgres-password", r->ns,
             r->shard_names[s]);
    if ((rc = mgop_patch_object(path, b.p, b.len, &status))) return rc;
  }
  if (left) {
    mgop_enqueue(r->ns, r->name, 1000);
    return MGOP_OK;
  }
  {
    char note[400];
    snprintf(note, sizeof(note), "adopted %d StatefulSets and PersistentVolumeClaims (and the shards' password "
             "Secrets) orphaned from the deleted cluster %s; their pods were not restarted", adopted,
             from[0] ? from : "of this name");
    mgop_event(r, K_CLUSTER, r->name, r->uid, "Normal", "Adopted", "Reclaim", note);
    MGOP_LOG(MGOP_INFO, ("MultigresCluster %s/%s: %s", r->ns, r->name, note));
  }
  mgop_reclaim_count(1);
  mgop_orphan_gauge(r->ns, r->name, 0);
  r->adopting = 0;
  return MGOP_OK;
}

/* ======================================================================
 * 7. Status
 * ==================================================================== */
/* Writes the five conditions. Ready/Available agree; Reconciling/Progressing
 * agree and are True while converging; Stalled is True on an error that
 * needs a human. `since` is the last transition time. */
static void mgop_backup_condition(struct mgop_jw *w, long long generation); /* section 8: BackupHealthy */
static void mgop_bh_adopt(uint64_t key, const char *status, long long since, const char *reason, const char *msg);
static void mgop_sched_adopt(uint64_t key, const struct mgop_json *j, int bs);
/* A sixth condition some kinds carry (TopologyRegistered), or NULL. */
struct mgop_xcond {
  const char *type;
  int status;
  const char *reason, *message;
  const struct mgop_xcond *next; /* one more (ImageRolloutPending), with */
  long long since;               /* its own transition time             */
};
static void mgop_condition(struct mgop_jw *w, const char *type, int status, const char *reason, const char *message,
                           long long generation, long long since) {
  char ts[32];
  time_t t = (time_t)since;
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
  mgop_jw_obj(w);
  mgop_jw_key(w, "lastTransitionTime"); mgop_jw_str(w, ts);
  mgop_jw_key(w, "message"); mgop_jw_str(w, message);
  mgop_jw_key(w, "observedGeneration"); mgop_jw_i64(w, generation);
  mgop_jw_key(w, "reason"); mgop_jw_str(w, reason);
  mgop_jw_key(w, "status"); mgop_jw_str(w, status ? "True" : "False");
  mgop_jw_key(w, "type"); mgop_jw_str(w, type);
  mgop_jw_obj_end(w);
}

static void mgop_conditions(struct mgop_jw *w, int ready, int stalled, const char *reason, const char *message,
                            long long generation, long long since, const struct mgop_xcond *x, long long xsince) {
  const struct mgop_xcond *first = x;
  static const char *types[] = {"Available", "Progressing", "Ready", "Reconciling", "Stalled"};
  mgop_jw_key(w, "conditions");
  mgop_jw_arr(w);
  for (int i = 0; i < 5; i++) {
    int on = (i == 0 || i == 2) ? ready : (i == 4) ? stalled : (!ready && !stalled);
    mgop_condition(w, types[i], on, reason, message, generation, since);
  }
  mgop_backup_condition(w, generation);
  for (; x; x = x->next) /* the first extra's time is kept in the object's row */
    mgop_condition(w, x->type, x->status, x->reason, x->message, generation, x == first ? xsince : x->since);
  mgop_jw_arr_end(w);
}

/* The status in a {"status":{...}} body or an object, hashed so that the
 * live object (as the API server encodes it) and what we would write
 * compare equal when they say the same: 0 when unknown. */
static jsmntok_t mgop_status_tok[8192 / 2 + 16]; /* a status body is at most 8 KiB */
static uint64_t mgop_status_hash(const char *body, size_t n) {
  struct mgop_json j;
  if (mgop_json_parse(&j, body, n, mgop_status_tok, sizeof(mgop_status_tok) / sizeof(mgop_status_tok[0]))) return 0;
  return mgop_json_canon_hash_except(&j, mgop_json_key(&j, 0, "status"), "podRoles"); /* written apart */
}

/* A Shard's status.podRoles, hashed the same for the live object and what
 * we would write; an absent one hashes as an empty map. */
static uint64_t mgop_roles_hash(const struct mgop_json *j, int roles) {
  static const char empty[] = "{}";
  static jsmntok_t tok[2];
  struct mgop_json e;
  if (roles >= 0) return mgop_json_canon_hash(j, roles);
  mgop_json_parse(&e, empty, 2, tok, 2);
  return mgop_json_canon_hash(&e, 0);
}

/* What the live object already shows, learnt once (after a restart, or for
 * a row new to us): its status hash, and its Ready state with the time of
 * its last transition, so an unchanged condition keeps its time and a
 * converged object costs no write. */
static void mgop_adopt_status(struct mgop_fp *f, const struct mgop_json *j, int obj) {
  int st, conds;
  if (!f) return;
  st = mgop_json_key(j, obj, "status");
  if (st < 0) return;
  if (!f->status_hash) f->status_hash = mgop_json_canon_hash_except(j, st, "podRoles");
  if (!f->roles_hash) f->roles_hash = mgop_roles_hash(j, mgop_json_key(j, st, "podRoles"));
  if (mgop_json_key(j, st, "backupSchedule") >= 0) mgop_sched_adopt(f->key, j, mgop_json_key(j, st, "backupSchedule"));
  conds = mgop_json_key(j, st, "conditions");
  if (f->cond_since || !mgop_json_is(j, conds, JSMN_ARRAY)) return;
  {
    int ready = -1, stalled = 0;
    long long since = 0;
    for (int i = 0; i < j->tok[conds].size; i++) {
      int c = mgop_json_at(j, conds, i);
      char type[32], cs[8], ltt[40]; /* the longest type: TopologyRegistered */
      struct tm tm;
      if (mgop_json_path_str(j, c, "type", type, sizeof(type)) || mgop_json_path_str(j, c, "status", cs, sizeof(cs)))
        continue;
      if (!strcmp(type, "Stalled")) stalled = !strcmp(cs, "True");
      if (!strcmp(type, "BackupHealthy")) {
        char why[32], said[320]; /* mgop_bh's reason and msg: longer ones are not ours to repeat */
        int told = !mgop_json_path_str(j, c, "reason", why, sizeof(why)) &&
                   !mgop_json_path_str(j, c, "message", said, sizeof(said));
        memset(&tm, 0, sizeof(tm));
        if (mgop_json_path_str(j, c, "lastTransitionTime", ltt, sizeof(ltt)) == MGOP_OK &&
            strptime(ltt, "%Y-%m-%dT%H:%M:%SZ", &tm))
          mgop_bh_adopt(f->key, cs, (long long)timegm(&tm), told ? why : NULL, told ? said : NULL);
      }
      if (!strcmp(type, "TopologyRegistered") || !strcmp(type, "RollingUpdate")) { /* the sixth condition: its time too */
        memset(&tm, 0, sizeof(tm));
        if (mgop_json_path_str(j, c, "lastTransitionTime", ltt, sizeof(ltt)) == MGOP_OK &&
            strptime(ltt, "%Y-%m-%dT%H:%M:%SZ", &tm)) {
          f->xcond_state = 1 + !strcmp(cs, "True");
          f->xcond_since = (long long)timegm(&tm);
        }
      }
      if (strcmp(type, "Ready")) continue;
      ready = !strcmp(cs, "True");
      memset(&tm, 0, sizeof(tm));
      if (mgop_json_path_str(j, c, "lastTransitionTime", ltt, sizeof(ltt)) == MGOP_OK &&
          strptime(ltt, "%Y-%m-%dT%H:%M:%SZ", &tm))
        since = (long long)timegm(&tm);
    }
    if (ready < 0 || since <= 0) return;
    f->cond_ready = stalled ? 2 : ready;
    f->cond_since = since;
  }
}

/* The end of a turn goes out together: while the batch is open, its status
 * writes of the children (TopoServers, Cells, Shards, TableGroups), the
 * root's while it is not Ready, and its Events are queued (their bodies in
 * the turn's arena), and mgop_status_flush sends them side by side on the
 * apply pool. One after another they were six round trips in a row in every
 * new cluster's first turn, and three in each later turn that applied
 * something. A root that is Ready is written after the flush, so whoever
 * reads it Ready finds its children's statuses already written. An object
 * queued twice, a full batch or a full arena flushes first; whatever cannot
 * be queued is written at once. */
static void mgop_status_flush(struct mgop_rctx *r);

/* Adds one write to the open batch, its strings copied into the turn's
 * arena: a status merge patch of path (reason NULL; key and h record it),
 * or an Event's POST to path (reason its reason). 1, or 0 when the arena
 * has no room and the caller writes it at once. */
static int mgop_batch_add(struct mgop_rctx *r, int kind, const char *name, const char *reason, const char *path,
                          const struct mgop_buf *b, uint64_t key, uint64_t h) {
  struct mgop_status_batch *sb = &mgop_server.status_batch;
  struct mgop_pool_job *j;
  char *json, *ipath, *iname, *ireason = NULL;
  if (sb->n == MGOP_STATUS_BATCH_MAX) mgop_status_flush(r);
  if (!(json = mgop_arena_strndup(r->arena, b->p, b->len)) ||
      !(ipath = mgop_arena_strndup(r->arena, path, strlen(path))) ||
      !(iname = mgop_arena_strndup(r->arena, name, strlen(name))) ||
      (reason && !(ireason = mgop_arena_strndup(r->arena, reason, strlen(reason)))))
    return 0;
  j = &sb->jobs[sb->n];
  memset(j, 0, offsetof(struct mgop_pool_job, err) + 1);
  j->path = ipath;
  j->json = json;
  j->len = b->len;
  j->status_patch = !reason;
  j->method = reason ? "POST" : NULL;
  sb->w[sb->n++] = (struct mgop_status_pending){key, h, kind, iname, ireason};
  return 1;
}

static int mgop_status_queue(struct mgop_rctx *r, int kind, const char *name, const char *path,
                             const struct mgop_buf *b, uint64_t h) {
  struct mgop_status_batch *sb = &mgop_server.status_batch;
  uint64_t key = mgop_fp_key(mgop_kinds[kind].kind, r->ns, name);
  if (!sb->open || r->render) return 0;
  for (int i = 0; i < sb->n; i++)
    if (!sb->w[i].reason && sb->w[i].key == key) { mgop_status_flush(r); break; } /* its writes stay in order */
  return mgop_batch_add(r, kind, name, NULL, path, b, key, h);
}

/* Queues an Event's POST in the open batch: 1, or 0 when it cannot be
 * queued (no batch open, or no room in the arena) and is sent at once. */
static int mgop_event_queue(struct mgop_rctx *r, int kind, const char *name, const char *reason, const char *path,
                            const struct mgop_buf *b) {
  if (!mgop_server.status_batch.open) return 0;
  return mgop_batch_add(r, kind, name, reason, path, b, 0, 0);
}

/* Sends the queued status writes (several in flight) and records each
 * as mgop_write_status_x does one; returns the rc of key's write when it
 * was among them and failed, else 0. */
static int mgop_status_flush_for(struct mgop_rctx *r, uint64_t key) {
  struct mgop_status_batch *sb = &mgop_server.status_batch;
  int n = sb->n, failed = 0;
  if (!n) return 0;
  sb->n = 0;
  mgop_pool_apply(&mgop_server.pool, mgop_api_ptr, sb->jobs, n);
  mgop_pool_take_stats(&mgop_server.pool, &mgop_api_ptr->stats);
  for (int i = 0; i < n; i++) {
    const struct mgop_status_pending *w = &sb->w[i];
    struct mgop_fp *f;
    if (w->reason) { /* an Event: best effort, as mgop_event's own */
      if (sb->jobs[i].rc || sb->jobs[i].status != 201)
        MGOP_LOG(MGOP_WARN, ("event %s on %s %s/%s not recorded (HTTP %d): %s", w->reason, mgop_kinds[w->kind].kind,
                             r->ns, w->name, sb->jobs[i].status, sb->jobs[i].err));
      continue;
    }
    f = mgop_fp_find(w->key);
    if (sb->jobs[i].rc) {
      if (w->key == key) failed = sb->jobs[i].rc;
      mgop_seterr(sb->jobs[i].rc, "%s", sb->jobs[i].err);
      MGOP_LOG(MGOP_WARN, ("status of %s %s/%s not written: %s", mgop_kinds[w->kind].kind, r->ns, w->name,
                           mgop_errmsg()));
      continue;
    }
    if (!f) continue; /* forgotten meanwhile: nothing to record */
    f->status_hash = w->hash;
    if (mgop_kinds[w->kind].generation) mgop_note_own_write(f, sb->jobs[i].res.rv, 1);
  }
  return failed;
}

static void mgop_status_flush(struct mgop_rctx *r) { mgop_status_flush_for(r, 0); }
static void mgop_status_open(void) {
  if (mgop_server.status_batch.open) return;
  mgop_server.status_batch.open = 1;
  mgop_server.status_batch.n = 0;
}

/* Patches `status` when it differs from what we last wrote: returns 1 when
 * it wrote (or queued the write in the open batch), 0 when nothing
 * changed, or an error. The transition time is kept in the object's
 * fingerprint row. */

static int mgop_write_status_x(struct mgop_rctx *r, int kind, const char *name, struct mgop_fp *f, int ready,
                               int stalled, const char *reason, const char *message, long long generation,
                               const char *phase, void (*extra)(struct mgop_jw *, void *), void *extra_ctx,
                               const struct mgop_xcond *x) {
  char mem[MGOP_STATUS_BUF], path[512], rv[24];
  struct mgop_buf b;
  struct mgop_jw w;
  int state = stalled ? 2 : ready, status, rc;
  uint64_t h;
  long long now = (long long)time(NULL);
  if (!f) return MGOP_ERR_NOMEM;
  if (f->cond_ready != state || f->cond_since == 0) {
    f->cond_ready = state;
    f->cond_since = now;
  }
  if (x && (f->xcond_state != 1 + !!x->status || f->xcond_since == 0)) {
    f->xcond_state = 1 + !!x->status;
    f->xcond_since = now;
  }
  mgop_buf_init(&b, mem, sizeof(mem));
  mgop_jw_init(&w, &b);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "status");
  mgop_jw_obj(&w);
  mgop_conditions(&w, ready, stalled, reason, message, generation, f->cond_since, x, f->xcond_since);
  if (extra) extra(&w, extra_ctx);
  mgop_jw_key(&w, "message"); mgop_jw_str(&w, message);
  mgop_jw_key(&w, "observedGeneration"); mgop_jw_i64(&w, generation);
  mgop_jw_key(&w, "phase"); mgop_jw_str(&w, phase);
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  if (b.overflow) {
    char what[400];
    snprintf(what, sizeof(what), "the status of %s %s/%s is larger than %d bytes and is not written",
             mgop_kinds[kind].kind, r->ns, name, MGOP_STATUS_BUF);
    mgop_limit_note(MGOP_L_VALUE_LENGTH, what);
    return mgop_seterr(MGOP_ERR_TOOBIG, "status of %s too large", name);
  }
  h = mgop_status_hash(b.p, b.len);
  if (h && h == f->status_hash) return MGOP_OK; /* idle costs no write */
  if (r->render) return MGOP_OK;
  if (!mgop_may_write()) return mgop_seterr(MGOP_ERR_STATUS, "not the leader any more: not writing status");
  mgop_item_path(kind, r->ns, name, path, sizeof(path));
  if (!(kind == K_CLUSTER && ready) && mgop_status_queue(r, kind, name, path, &b, h)) return 1; /* written by the flush */
  rc = mgop_kube_patch_status(mgop_api_ptr, path, b.p, b.len, rv, &status);
  if (rc == MGOP_OK) {
    f->status_hash = h;
    if (mgop_kinds[kind].generation) mgop_note_own_write(f, rv, 1);
    return 1; /* written */
  }
  MGOP_LOG(MGOP_WARN, ("status of %s %s/%s not written: %s", mgop_kinds[kind].kind, r->ns, name, mgop_errmsg()));
  return rc;
}

static int mgop_write_status(struct mgop_rctx *r, int kind, const char *name, struct mgop_fp *f, int ready, int stalled,
                             const char *reason, const char *message, long long generation, const char *phase,
                             void (*extra)(struct mgop_jw *, void *), void *extra_ctx) {
  return mgop_write_status_x(r, kind, name, f, ready, stalled, reason, message, generation, phase, extra, extra_ctx,
                             NULL);
}

struct mgop_topo_status { int replicas, ready; const char *client, *peer; };
static void mgop_topo_status_extra(struct mgop_jw *w, void *ctx) {
  struct mgop_topo_status *t = ctx;
  char peer[96];
  snprintf(peer, sizeof(peer), "%s-headless", t->client);
  mgop_jw_key(w, "clientService"); mgop_jw_str(w, t->client);
  mgop_jw_key(w, "peerService"); mgop_jw_str(w, peer);
  mgop_jw_key(w, "readyReplicas"); mgop_jw_i64(w, t->ready);
  mgop_jw_key(w, "replicas"); mgop_jw_i64(w, t->replicas);
}

static void mgop_img_status(struct mgop_jw *w, const struct mgop_rctx *r); /* section 5, image sets */
static void mgop_img_condition(struct mgop_rctx *r, struct mgop_xcond *c, char *msg, size_t cap);
/* status.gateway / status.adminWeb: the first external IP while the
 * exposure is enabled; null (removed) otherwise. */
static void mgop_exposure_status(struct mgop_jw *w, const struct mgop_rctx *r, const char *spec_key, const char *key) {
  int ex = mgop_json_key(&r->root, r->spec, spec_key), on = 0;
  char ip[64] = "";
  if (ex >= 0) mgop_json_bool(&r->root, mgop_json_key(&r->root, ex, "enabled"), &on);
  mgop_jw_key(w, key);
  if (!on) { mgop_jw_null(w); return; }
  mgop_json_str(&r->root, mgop_json_at(&r->root, mgop_json_key(&r->root, ex, "externalIPs"), 0), ip, sizeof(ip));
  mgop_jw_obj(w);
  mgop_jw_key(w, "externalEndpoint"); mgop_jw_str(w, ip);
  mgop_jw_obj_end(w);
}

struct mgop_root_status {
  int topo_ready, admin_ready, cells, ready_cells, shards, ready_shards;
  const char *topo_name;
  const struct mgop_rctx *r;      /* its templates: trefs */
  char admin_svc[64];
  /* per-cell and per-database rollups, as seed 001 shows them */
  char cell_name[MGOP_CRD_CELLS_MAX][64];
  int cell_ready[MGOP_CRD_CELLS_MAX], cell_gw_ready[MGOP_CRD_CELLS_MAX];
  int ndb;
  char db_name[8][32];
  int db_ready[8], db_total[8];
};
static void mgop_root_status_extra(struct mgop_jw *w, void *ctx) {
  struct mgop_root_status *s = ctx;
  mgop_jw_key(w, "cells"); mgop_jw_obj(w);
  for (int i = 0; i < s->cells && i < MGOP_CRD_CELLS_MAX; i++) {
    if (!s->cell_name[i][0]) continue;
    mgop_jw_key(w, s->cell_name[i]); mgop_jw_obj(w);
    mgop_jw_key(w, "gatewayReplicas"); mgop_jw_i64(w, s->cell_gw_ready[i]);
    mgop_jw_key(w, "ready"); mgop_jw_bool(w, s->cell_ready[i]);
    mgop_jw_obj_end(w);
  }
  mgop_jw_obj_end(w);
  mgop_jw_key(w, "databases"); mgop_jw_obj(w);
  for (int i = 0; i < s->ndb; i++) {
    mgop_jw_key(w, s->db_name[i]); mgop_jw_obj(w);
    mgop_jw_key(w, "readyShards"); mgop_jw_i64(w, s->db_ready[i]);
    mgop_jw_key(w, "totalShards"); mgop_jw_i64(w, s->db_total[i]);
    mgop_jw_obj_end(w);
  }
  mgop_jw_obj_end(w);
  mgop_img_status(w, s->r);
  mgop_exposure_status(w, s->r, "externalGateway", "gateway");
  mgop_exposure_status(w, s->r, "externalAdminWeb", "adminWeb");
  mgop_jw_key(w, "globalTopoServer"); mgop_jw_obj(w);
  mgop_jw_key(w, "available"); mgop_jw_str(w, s->topo_ready ? "True" : "False");
  mgop_jw_key(w, "serviceName"); mgop_jw_str(w, s->topo_name);
  mgop_jw_obj_end(w);
  mgop_jw_key(w, "multiadmin"); mgop_jw_obj(w);
  mgop_jw_key(w, "available"); mgop_jw_str(w, s->admin_ready ? "True" : "False");
  mgop_jw_key(w, "serviceName"); mgop_jw_str(w, s->admin_svc);
  mgop_jw_obj_end(w);
  mgop_jw_key(w, "readyCells"); mgop_jw_i64(w, s->ready_cells);
  mgop_jw_key(w, "readyShards"); mgop_jw_i64(w, s->ready_shards);
  mgop_jw_key(w, "resolvedTemplates"); mgop_jw_obj(w); /* the templates this turn found, by kind */
  {
    static const char *const keys[] = {"coreTemplates", "cellTemplates", "shardTemplates"};
    for (int k = 0; k < 3; k++) {
      int any = 0;
      for (int i = 0; i < s->r->ntrefs; i++) {
        if (!s->r->trefs[i].found || s->r->trefs[i].kind != K_CORET + k) continue;
        if (!any++) { mgop_jw_key(w, keys[k]); mgop_jw_arr(w); }
        mgop_jw_str(w, s->r->trefs[i].name);
      }
      if (any) mgop_jw_arr_end(w);
    }
  }
  mgop_jw_obj_end(w);
  mgop_jw_key(w, "topology"); mgop_jw_obj(w); /* Multigres's records, for pruning what the spec drops */
  mgop_jw_key(w, "globalRoot"); mgop_jw_str(w, s->r->topo_root);
  if (s->r->topo_state) {
    mgop_jw_key(w, "registeredCells"); mgop_jw_arr(w);
    for (int i = 0; i < s->r->ntopo_reg_cells; i++) mgop_jw_str(w, s->r->topo_reg_cells[i]);
    mgop_jw_arr_end(w);
    mgop_jw_key(w, "registeredDatabases"); mgop_jw_arr(w);
    for (int i = 0; i < s->r->ntopo_reg_dbs; i++) mgop_jw_str(w, s->r->topo_reg_dbs[i]);
    mgop_jw_arr_end(w);
  } else { /* not tried this turn: what the live status says stands */
    int t = mgop_json_path(&s->r->root, 0, "status.topology.registeredCells");
    if (mgop_json_is(&s->r->root, t, JSMN_ARRAY)) mgop_jw_key(w, "registeredCells"), mgop_jw_copy(w, &s->r->root, t);
    t = mgop_json_path(&s->r->root, 0, "status.topology.registeredDatabases");
    if (mgop_json_is(&s->r->root, t, JSMN_ARRAY)) mgop_jw_key(w, "registeredDatabases"), mgop_jw_copy(w, &s->r->root, t);
  }
  mgop_jw_obj_end(w);
  mgop_jw_key(w, "totalCells"); mgop_jw_i64(w, s->cells);
  mgop_jw_key(w, "totalShards"); mgop_jw_i64(w, s->shards);
}

/* A Kubernetes Event (events.k8s.io/v1) about one of our objects. Best
 * effort: an Event that cannot be written is logged, never retried. */
static void mgop_event(struct mgop_rctx *r, int kind, const char *name, const char *uid, const char *type,
                       const char *reason, const char *action, const char *note) {
  char mem[4096], path[300], ts[96], host[64] = "";
  struct mgop_buf b;
  struct mgop_jw w;
  struct timespec now;
  int status;
  if (r->render || !mgop_may_write()) return;
  clock_gettime(CLOCK_REALTIME, &now); /* also names the Event */
  mgop_micro_time(ts, sizeof(ts));
  gethostname(host, sizeof(host) - 1);
  mgop_buf_init(&b, mem, sizeof(mem));
  mgop_jw_init(&w, &b);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "apiVersion"); mgop_jw_str(&w, "events.k8s.io/v1");
  mgop_jw_key(&w, "kind"); mgop_jw_str(&w, "Event");
  mgop_jw_key(&w, "metadata"); mgop_jw_obj(&w);
  {
    char ename[280]; /* as client-go names them: object name, '.', hex nanoseconds */
    snprintf(ename, sizeof(ename), "%.235s.%llx", name,
             (unsigned long long)now.tv_sec * 1000000000ull + (unsigned long long)now.tv_nsec);
    mgop_jw_key(&w, "name"); mgop_jw_str(&w, ename);
  }
  mgop_jw_key(&w, "namespace"); mgop_jw_str(&w, r->ns);
  mgop_jw_obj_end(&w);
  mgop_jw_key(&w, "eventTime"); mgop_jw_str(&w, ts);
  mgop_jw_key(&w, "reportingController"); mgop_jw_str(&w, "multigres.com/" MGOP_MANAGER);
  mgop_jw_key(&w, "reportingInstance"); mgop_jw_str(&w, host[0] ? host : MGOP_MANAGER);
  mgop_jw_key(&w, "type"); mgop_jw_str(&w, type);
  mgop_jw_key(&w, "reason"); mgop_jw_str(&w, reason);
  mgop_jw_key(&w, "action"); mgop_jw_str(&w, action);
  mgop_jw_key(&w, "note"); mgop_jw_strn(&w, note, strlen(note) > 1000 ? 1000 : strlen(note));
  mgop_jw_key(&w, "regarding"); mgop_jw_obj(&w);
  mgop_jw_key(&w, "apiVersion"); mgop_jw_str(&w, mgop_kinds[kind].api_version);
  mgop_jw_key(&w, "kind"); mgop_jw_str(&w, mgop_kinds[kind].kind);
  mgop_jw_key(&w, "namespace"); mgop_jw_str(&w, r->ns);
  mgop_jw_key(&w, "name"); mgop_jw_str(&w, name);
  if (uid && uid[0]) { mgop_jw_key(&w, "uid"); mgop_jw_str(&w, uid); }
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  if (b.overflow) return;
  snprintf(path, sizeof(path), "/apis/events.k8s.io/v1/namespaces/%s/events", r->ns);
  if (mgop_event_queue(r, kind, name, reason, path, &b)) return; /* sent by the flush, with the turn's status */
  {
    char resp[2048], why[300] = "";
    struct mgop_buf out;
    mgop_buf_init(&out, resp, sizeof(resp));
    status = 0;
    if (mgop_kube_request(mgop_api_ptr, "POST", path, "application/json", b.p, b.len, &out, &status) || status != 201) {
      if (status) mgop_kube_status_message(out.p, out.len, why, sizeof(why));
      MGOP_LOG(MGOP_WARN, ("event %s on %s %s/%s not recorded (HTTP %d): %s", reason, mgop_kinds[kind].kind, r->ns, name,
                           status, why[0] ? why : mgop_errmsg()));
    }
  }
}

/* ======================================================================
 * 8. Reconcile one root
 * ==================================================================== */

/* ---- the rest of the tree ------------------------------------------------ */
/* An external topology server is spoken to as etcd v3 (its JSON gateway):
 * another implementation is refused, naming the field, rather than written
 * to as if it were etcd. */
static void mgop_topo_implementation(struct mgop_rctx *r, const struct mgop_json *doc, int ext, const char *field) {
  char impl[64] = "";
  if (ext < 0 || mgop_json_path_str(doc, ext, "implementation", impl, sizeof(impl)) || !impl[0]) return;
  if (strcmp(impl, "etcd") && strcmp(impl, "etcd2"))
    mgop_stall(r, "UnsupportedValue", "%s is \"%.63s\": the operator registers the topology in etcd only; unset it or "
               "set etcd", field, impl);
}

/* Where the components find the global topology. */
static void mgop_topo_address(struct mgop_rctx *r, const struct mgop_json *topo, char *addr, size_t acap, char *root,
                              size_t rcap) {
  int ext = mgop_json_key(topo, 0, "external");
  mgop_topo_implementation(r, topo, ext, "spec.globalTopoServer.external.implementation");
  mgop_spec_str(r, topo, 0, ext >= 0 ? "external.rootPath" : "etcd.rootPath", root, rcap,
                ext >= 0 ? "spec.globalTopoServer.external.rootPath" : "spec.globalTopoServer.etcd.rootPath");
  if (!root[0]) snprintf(root, rcap, "/multigres/global");
  if (ext >= 0) {
    int eps = mgop_json_key(topo, ext, "endpoints");
    struct mgop_buf b;
    mgop_buf_init(&b, addr, acap);
    for (int i = 0; i < (mgop_json_is(topo, eps, JSMN_ARRAY) ? topo->tok[eps].size : 0); i++) {
      char ep[512], *h;
      if (mgop_json_str(topo, mgop_json_at(topo, eps, i), ep, sizeof(ep))) continue;
      h = strstr(ep, "://") ? strstr(ep, "://") + 3 : ep; /* the flag takes host:port */
      mgop_buf_printf(&b, "%s%s", b.len ? "," : "", h);
    }
    /* the children carry it in globalTopoServer.address (maxLength 512) */
    if (b.overflow || b.len > MGOP_CRD_ROOT_PATH_MAX) {
      b.len = 0;
      mgop_limit_reached(r, MGOP_L_VALUE_LENGTH, "spec.globalTopoServer.external.endpoints: the host:port list is "
                         "longer than %d characters; list fewer endpoints (or shorter names)", MGOP_CRD_ROOT_PATH_MAX);
    }
    mgop_buf_cstr(&b);
  } else {
    const char *parts[] = {r->name, "global-topo"};
    char name[64];
    mgop_name(name, sizeof(name), MGOP_LIMIT_STS, 0, parts, 2);
    snprintf(addr, acap, "%s.%s.svc:2379", name, r->ns);
  }
}

/* One level of the chain for a component: inline spec, a named template,
 * spec.templateDefaults, the namespace's "default" template; then the
 * component's overrides on top. Built-in defaults are applied by the
 * builders field by field. */
struct mgop_chain {
  const char *what;          /* field path for messages, e.g. spec.cells[zone-a] */
  const struct mgop_json *doc; /* the document holding comp            */
  int comp;                  /* the component object in doc, or -1     */
  const char *inline_key;    /* "spec"                                 */
  const char *ref_key;       /* "templateRef", "cellTemplate", ...     */
  const char *defaults_key;  /* key in spec.templateDefaults           */
  int tkind;                 /* template kind                          */
  const char *tsection;      /* where the settings sit in the template */
  const char *overrides_key; /* "overrides" or NULL                    */
};

static int mgop_resolve_chain(struct mgop_rctx *r, const struct mgop_chain *c, struct mgop_json *out, char *source,
                              size_t scap) {
  static const char empty_doc[] = "{}";
  struct mgop_json empty, tmpl, first;
  const struct mgop_json *ldoc = NULL;
  int layer = -1, rc, inl = c->inline_key && c->comp >= 0 ? mgop_json_key(c->doc, c->comp, c->inline_key) : -1;
  char ref[254] = "", field[300] = "";
  if ((rc = mgop_parse_arena(r->arena, empty_doc, 2, &empty))) return rc;
  if (inl >= 0) {
    ldoc = c->doc;
    layer = inl;
    snprintf(source, scap, "inline");
  } else {
    if (c->ref_key && c->comp >= 0 && mgop_json_path_str(c->doc, c->comp, c->ref_key, ref, sizeof(ref)) == MGOP_OK &&
        ref[0])
      snprintf(field, sizeof(field), "%s.%s", c->what, c->ref_key);
    else if (c->defaults_key) {
      char path[96];
      snprintf(path, sizeof(path), "templateDefaults.%s", c->defaults_key);
      if (mgop_json_path_str(&r->root, r->spec, path, ref, sizeof(ref)) == MGOP_OK && ref[0])
        snprintf(field, sizeof(field), "spec.%s", path);
    }
    if (ref[0]) {
      rc = mgop_fetch(r, c->tkind, ref, &tmpl);
      if (rc == MGOP_ERR_NOTFOUND) {
        mgop_stall(r, "TemplateNotFound", "%s names %s \"%s\", which does not exist in namespace %s; create it or fix "
                   "the name", field, mgop_kinds[c->tkind].kind, ref, r->ns);
        return rc;
      }
      if (rc) return rc;
      snprintf(source, scap, "%s/%s", mgop_kinds[c->tkind].kind, ref);
    } else {
      rc = mgop_fetch(r, c->tkind, "default", &tmpl);
      if (rc && rc != MGOP_ERR_NOTFOUND) return rc;
      snprintf(source, scap, rc ? "built-in" : "%s/default", mgop_kinds[c->tkind].kind);
      if (rc) ref[0] = 0;
      else snprintf(ref, sizeof(ref), "default");
    }
    if (ref[0]) {
      ldoc = &tmpl;
      layer = mgop_json_path(&tmpl, 0, c->tsection);
    }
  }
  if ((rc = mgop_merge_to(r, &empty, 0, ldoc ? ldoc : &empty, ldoc ? layer : -1, &first))) return rc;
  {
    int ov = c->overrides_key && c->comp >= 0 ? mgop_json_key(c->doc, c->comp, c->overrides_key) : -1;
    if (ov >= 0 && !mgop_json_is(c->doc, ov, JSMN_OBJECT)) {
      mgop_stall(r, "InvalidOverride", "%s.%s must be a mapping of fields to override", c->what, c->overrides_key);
      return MGOP_ERR_CONFIG;
    }
    return mgop_merge_to(r, &first, 0, c->doc, ov, out);
  }
}

/* ---- image sets -------------------------------------------------------------
 * Images are operator configuration, resolved at each turn and never written
 * into the spec: spec.images.<component> (a pin) > the operator's default
 * set. The default set is built in, each image overridable by an environment
 * variable, and fixed at start; its revision names it. Under the lazy
 * strategy a cluster stays on the default set it runs (recorded in the
 * applied-images annotation, status.images as a fallback) until
 * spec.imageUpdatePolicy.acknowledgedRevision names the new set's revision.
 * The names, the revision algorithm and the annotation are the reference
 * operator's, so a cluster moved between the two keeps its record. */
#define MGOP_APPLIED_IMAGES_ANNOTATION "multigres.com/applied-images"
static const struct mgop_img_comp {
  const char *key;  /* in spec.images and status.images */
  const char *line; /* in the revision's lines          */
  const char *env, *builtin;
} mgop_img_comps[MGOP_IMG_COUNT] = {
    {"multiadmin", "multiadmin", "MULTIGRES_IMAGE_MULTIADMIN", MGOP_IMAGE_MULTIGRES},
    {"multiadminWeb", "multiadminweb", "MULTIGRES_IMAGE_MULTIADMIN_WEB", MGOP_IMAGE_ADMIN_WEB},
    {"multigateway", "multigateway", "MULTIGRES_IMAGE_MULTIGATEWAY", MGOP_IMAGE_MULTIGRES},
    {"multiorch", "multiorch", "MULTIGRES_IMAGE_MULTIORCH", MGOP_IMAGE_MULTIGRES},
    {"multipooler", "multipooler", "MULTIGRES_IMAGE_MULTIPOOLER", MGOP_IMAGE_MULTIGRES},
    {"postgres", "postgres", "MULTIGRES_IMAGE_POSTGRES", MGOP_IMAGE_PGCTLD},
};
/* Set at start (mgop_img_defaults_init, the flag), read-only after: the
 * serving thread's reviews read it too. */
static struct {
  struct mgop_img_set set;
  char rev[MGOP_IMG_REV_LEN + 1];
  int lazy;      /* --image-update-strategy lazy */
  unsigned from_env;
  char exporter[MGOP_IMAGE_BUF]; /* the postgres-exporter sidecar's */
} mgop_img_defaults;

/* The first 12 hex digits of sha256 over "name=image" lines, sorted,
 * joined with newlines. */
static void mgop_img_revision(const struct mgop_img_set *s, char out[MGOP_IMG_REV_LEN + 1]) {
  mbedtls_sha256_context c;
  unsigned char h[32];
  mbedtls_sha256_init(&c);
  mbedtls_sha256_starts(&c, 0);
  for (int i = 0; i < MGOP_IMG_COUNT; i++) {
    if (i) mbedtls_sha256_update(&c, (const unsigned char *)"\n", 1);
    mbedtls_sha256_update(&c, (const unsigned char *)mgop_img_comps[i].line, strlen(mgop_img_comps[i].line));
    mbedtls_sha256_update(&c, (const unsigned char *)"=", 1);
    mbedtls_sha256_update(&c, (const unsigned char *)s->img[i], strlen(s->img[i]));
  }
  mbedtls_sha256_finish(&c, h);
  mbedtls_sha256_free(&c);
  for (int i = 0; i < MGOP_IMG_REV_LEN / 2; i++) snprintf(out + 2 * i, 3, "%02x", h[i]);
}

/* One default image: the environment variable (blanks trimmed), else the
 * built-in. Returns 0 (built-in), 1 (from the environment), or 2 with the
 * reason on stderr. */
static int mgop_img_from_env(const char *env, const char *builtin, char out[MGOP_IMAGE_BUF]) {
  const char *v = getenv(env), *end;
  while (v && isspace((unsigned char)*v)) v++;
  end = v ? v + strlen(v) : NULL;
  while (end && end > v && isspace((unsigned char)end[-1])) end--;
  if (!v || end == v) {
    snprintf(out, MGOP_IMAGE_BUF, "%s", builtin);
    return 0;
  }
  if (end - v > MGOP_CRD_IMAGE_MAX) {
    fprintf(stderr, "multigres-op: %s is %d characters long; an image reference is at most %d (as in "
            "spec.images): shorten it, e.g. pin by digest without a tag\n", env, (int)(end - v), MGOP_CRD_IMAGE_MAX);
    return 2;
  }
  snprintf(out, MGOP_IMAGE_BUF, "%.*s", (int)(end - v), v);
  return 1;
}

/* The default set: built in, or from MULTIGRES_IMAGE_<COMPONENT>; and the
 * exporter's. Returns 0, or 2 with the reason on stderr. */
static int mgop_img_defaults_init(void) {
  for (int i = 0; i < MGOP_IMG_COUNT; i++) {
    int rc = mgop_img_from_env(mgop_img_comps[i].env, mgop_img_comps[i].builtin, mgop_img_defaults.set.img[i]);
    if (rc == 2) return 2;
    if (rc == 1) mgop_img_defaults.from_env |= 1u << i;
  }
  if (mgop_img_from_env("MULTIGRES_IMAGE_POSTGRES_EXPORTER", MGOP_IMAGE_POSTGRES_EXPORTER, mgop_img_defaults.exporter) == 2)
    return 2;
  mgop_img_revision(&mgop_img_defaults.set, mgop_img_defaults.rev);
  return 0;
}

/* A complete set from a JSON object ({"multigateway": "...", ...}): 1, or 0
 * when a component is missing, empty or too long. */
static int mgop_img_set_from(const struct mgop_json *j, int obj, struct mgop_img_set *s) {
  if (!mgop_json_is(j, obj, JSMN_OBJECT)) return 0;
  for (int i = 0; i < MGOP_IMG_COUNT; i++)
    if (mgop_json_str(j, mgop_json_key(j, obj, mgop_img_comps[i].key), s->img[i], MGOP_IMAGE_BUF) || !s->img[i][0])
      return 0;
  return 1;
}

/* What the cluster recorded: the annotation first (it survives a restore
 * that drops status), then status.images.applied. */
static void mgop_img_recorded(struct mgop_rctx *r) {
  struct mgop_img_state *m = &r->img;
  int ann = mgop_json_key(&r->root, mgop_json_path(&r->root, 0, "metadata.annotations"), MGOP_APPLIED_IMAGES_ANNOTATION);
  if (ann >= 0) {
    char text[MGOP_IMG_RECORD_BUF];
    jsmntok_t tok[2 * MGOP_IMG_COUNT + 8];
    struct mgop_json j;
    if (!mgop_json_str(&r->root, ann, text, sizeof(text)) &&
        !mgop_json_parse(&j, text, strlen(text), tok, sizeof(tok) / sizeof(tok[0])) && mgop_img_set_from(&j, 0, &m->record))
      m->recorded = 1;
    else
      m->record_invalid = 1;
  }
  if (!m->recorded && mgop_img_set_from(&r->root, mgop_json_path(&r->root, 0, "status.images.applied"), &m->record))
    m->recorded = 2;
  if (m->recorded) mgop_img_revision(&m->record, m->record_rev);
}

/* Which default set the children use this turn. Pure: reads the cluster
 * and the operator's defaults, so admission and render resolve the same. */
static void mgop_images_resolve(struct mgop_rctx *r) {
  struct mgop_img_state *m = &r->img;
  char strategy[16];
  if (m->resolved) return;
  m->resolved = 1;
  if (!mgop_img_defaults.rev[0]) mgop_img_defaults_init(); /* main does it first; tests that include this file may not */
  m->lazy = mgop_img_defaults.lazy;
  if (mgop_json_path_str(&r->root, r->spec, "imageUpdatePolicy.strategy", strategy, sizeof(strategy)) == MGOP_OK &&
      strategy[0])
    m->lazy = !strcmp(strategy, "lazy");
  mgop_json_path_str(&r->root, r->spec, "imageUpdatePolicy.acknowledgedRevision", m->ack, sizeof(m->ack));
  for (int i = 0; i < MGOP_IMG_COUNT; i++) {
    char pin[8], path[40];
    snprintf(path, sizeof(path), "images.%s", mgop_img_comps[i].key);
    /* MGOP_ERR_TOOBIG (a pin longer than 8) counts as set */
    if (mgop_json_path_str(&r->root, r->spec, path, pin, sizeof(pin)) != MGOP_ERR_NOTFOUND && pin[0]) m->pinned |= 1u << i;
  }
  mgop_img_recorded(r);
  m->applied = mgop_img_defaults.set;
  if (m->lazy && m->recorded && strcmp(m->record_rev, mgop_img_defaults.rev) && strcmp(m->ack, mgop_img_defaults.rev)) {
    m->applied = m->record;
    m->pending = !m->ack[0] || !strcmp(m->ack, m->record_rev) ? "AwaitingAcknowledgement" : "RevisionMismatch";
  }
  mgop_img_revision(&m->applied, m->applied_rev);
  m->record_stale = m->recorded != 1 || strcmp(m->record_rev, m->applied_rev);
}

#define MGOP_IMG_ALL ((1u << MGOP_IMG_COUNT) - 1)
static void mgop_img_set_json(struct mgop_jw *w, const char *key, const struct mgop_img_set *set) {
  mgop_jw_key(w, key);
  mgop_jw_obj(w);
  for (int i = 0; i < MGOP_IMG_COUNT; i++) { mgop_jw_key(w, mgop_img_comps[i].key); mgop_jw_str(w, set->img[i]); }
  mgop_jw_obj_end(w);
}

/* status.images: what the children use, where it comes from, and the
 * default sets (applied, and available while it waits) when defaults take
 * part. */
static void mgop_img_status(struct mgop_jw *w, const struct mgop_rctx *r) {
  const struct mgop_img_state *m = &r->img;
  struct mgop_img_set eff = m->applied;
  for (int i = 0; i < MGOP_IMG_COUNT; i++) {
    char path[40];
    snprintf(path, sizeof(path), "images.%s", mgop_img_comps[i].key);
    if (m->pinned & (1u << i)) mgop_json_path_str(&r->root, r->spec, path, eff.img[i], MGOP_IMAGE_BUF);
  }
  mgop_jw_key(w, "images");
  mgop_jw_obj(w);
  mgop_img_set_json(w, "effective", &eff);
  mgop_jw_key(w, "source");
  mgop_jw_str(w, m->pinned == MGOP_IMG_ALL ? "explicit" : m->pinned ? "mixed" : "defaults");
  mgop_jw_key(w, "updateStrategy"); mgop_jw_str(w, m->lazy ? "lazy" : "immediate");
  /* a member that no longer applies is null: a merge patch keeps what it omits */
  if (m->pinned != MGOP_IMG_ALL) {
    mgop_img_set_json(w, "applied", &m->applied);
    mgop_jw_key(w, "appliedRevision"); mgop_jw_str(w, m->applied_rev);
    mgop_jw_key(w, "availableRevision"); mgop_jw_str(w, mgop_img_defaults.rev);
  } else {
    mgop_jw_key(w, "applied"); mgop_jw_null(w);
    mgop_jw_key(w, "appliedRevision"); mgop_jw_null(w);
    mgop_jw_key(w, "availableRevision"); mgop_jw_null(w);
  }
  if (m->pending) mgop_img_set_json(w, "available", &mgop_img_defaults.set);
  else mgop_jw_key(w, "available"), mgop_jw_null(w);
  mgop_jw_obj_end(w);
}

/* When the live cluster's condition TYPE last turned to STATUS: its
 * lastTransitionTime while it says the same, else now. */
static long long mgop_live_cond_since(const struct mgop_rctx *r, const char *type, int status, char *reason, size_t cap) {
  int conds = mgop_json_path(&r->root, 0, "status.conditions");
  if (cap) reason[0] = 0;
  for (int i = 0; mgop_json_is(&r->root, conds, JSMN_ARRAY) && i < r->root.tok[conds].size; i++) {
    int c = mgop_json_at(&r->root, conds, i);
    char t[40], st[8], ltt[40];
    struct tm tm;
    if (mgop_json_path_str(&r->root, c, "type", t, sizeof(t)) || strcmp(t, type)) continue;
    mgop_json_path_str(&r->root, c, "reason", reason, cap);
    memset(&tm, 0, sizeof(tm));
    if (!mgop_json_path_str(&r->root, c, "status", st, sizeof(st)) && !strcmp(st, status ? "True" : "False") &&
        !mgop_json_path_str(&r->root, c, "lastTransitionTime", ltt, sizeof(ltt)) &&
        strptime(ltt, "%Y-%m-%dT%H:%M:%SZ", &tm))
      return (long long)timegm(&tm);
    break;
  }
  return (long long)time(NULL);
}

static void mgop_event(struct mgop_rctx *r, int kind, const char *name, const char *uid, const char *type,
                       const char *reason, const char *action, const char *note);
/* ImageRolloutPending: True while a new default set waits for its
 * acknowledgement. A wrong acknowledgement is also a Warning Event, once. */
static void mgop_img_condition(struct mgop_rctx *r, struct mgop_xcond *c, char *msg, size_t cap) {
  const struct mgop_img_state *m = &r->img;
  char was[40];
  *c = (struct mgop_xcond){"ImageRolloutPending", m->pending != NULL, m->pending ? m->pending : "ImagesUpToDate", msg,
                           NULL, 0};
  if (m->pending)
    snprintf(msg, cap, "default image set %s is available but not adopted; holding %s until "
             "spec.imageUpdatePolicy.acknowledgedRevision is set to \"%s\"%s%.64s%s", mgop_img_defaults.rev,
             m->applied_rev, mgop_img_defaults.rev, m->ack[0] && strcmp(m->ack, m->record_rev) ? " (it names \"" : "",
             m->ack[0] && strcmp(m->ack, m->record_rev) ? m->ack : "",
             m->ack[0] && strcmp(m->ack, m->record_rev) ? "\", which is not the available set: it has no effect)" : "");
  else if (m->pinned == MGOP_IMG_ALL)
    snprintf(msg, cap, "every image is pinned in spec.images");
  else
    snprintf(msg, cap, "running default image set %s", m->applied_rev);
  c->since = mgop_live_cond_since(r, c->type, c->status, was, sizeof(was));
  if (m->pending && !strcmp(m->pending, "RevisionMismatch") && strcmp(was, "RevisionMismatch"))
    mgop_event(r, K_CLUSTER, r->name, r->uid, "Warning", "ImagesRevisionMismatch", "ResolveImages", msg);
}

/* spec.images.<component>, else the default set the cluster is on. */
static const char *mgop_image(struct mgop_rctx *r, int comp, char *buf, size_t cap) {
  char path[64], field[80];
  snprintf(path, sizeof(path), "images.%s", mgop_img_comps[comp].key);
  snprintf(field, sizeof(field), "spec.images.%s", mgop_img_comps[comp].key);
  if (mgop_spec_str(r, &r->root, r->spec, path, buf, cap, field) == MGOP_OK && buf[0]) return buf;
  mgop_images_resolve(r);
  return r->img.applied.img[comp];
}

static const char *mgop_log_level_of(struct mgop_rctx *r, const char *comp, char *buf, size_t cap) {
  char path[64];
  snprintf(path, sizeof(path), "logLevels.%s", comp);
  return mgop_str_or(&r->root, r->spec, path, buf, cap, "info");
}

/* A container in the making. */
struct mgop_ctr {
  const char *name, *image;
  const char *command;           /* JSON array literal or NULL      */
  const char *args[32];
  int nargs;
  const char *env;               /* JSON array literal or NULL      */
  const char *ports;             /* JSON array literal              */
  const char *ready_path, *live_path;
  int probe_port;                /* 0: no probes                    */
  const struct mgop_json *res_doc;
  int res_tok;                   /* resources from the resolved spec */
  const char *res_default;       /* JSON literal when unset         */
  const char *mounts;            /* JSON array literal or NULL      */
  const char *security;          /* JSON object literal or NULL     */
  const char *otel;              /* data-plane component for the OTEL_*
                                    environment (observability), or NULL */
  int sidecar;                   /* a native sidecar: an init container
                                    with restartPolicy Always, started
                                    before the others and stopped after */
};

/* ---- observability -----------------------------------------------------------
 * The data-plane containers' OTEL_* environment: each variable from its
 * spec.observability field, else from the operator's own environment (read
 * at start), so pods inherit the operator's collector with no setting;
 * otlpEndpoint "disabled" sets none. With any variable set, the resource
 * attributes name the cluster and the component. The reference operator's
 * mapping. */
static const struct { const char *field, *var; } mgop_otel_vars[] = {
    {"otlpEndpoint", "OTEL_EXPORTER_OTLP_ENDPOINT"},
    {"otlpMetricsEndpoint", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"},
    {"otlpProtocol", "OTEL_EXPORTER_OTLP_PROTOCOL"},
    {"tracesExporter", "OTEL_TRACES_EXPORTER"},
    {"metricsExporter", "OTEL_METRICS_EXPORTER"},
    {"logsExporter", "OTEL_LOGS_EXPORTER"},
    {"metricExportInterval", "OTEL_METRIC_EXPORT_INTERVAL"},
    {"metricsTemporality", "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"},
    {"histogramAggregation", "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION"},
    {"tracesSampler", "OTEL_TRACES_SAMPLER"},
};
#define MGOP_OTEL_N (sizeof(mgop_otel_vars) / sizeof(mgop_otel_vars[0]))
#define MGOP_OTEL_VALUE_MAX 2048 /* the CRD's bound on otlpEndpoint, the longest */
/* the env entries: each value escaped (x2), its name and the attributes */
#define MGOP_OTEL_ENV_BUF (MGOP_OTEL_N * (2 * MGOP_OTEL_VALUE_MAX + 96) + 512)
static struct {
  int read;
  char value[MGOP_OTEL_N][MGOP_OTEL_VALUE_MAX + 1]; /* the operator's own ("" unset) */
} mgop_otel_env;

/* Reads the operator's OTEL_* variables once: 0, or 2 with the reason on
 * stderr when one is longer than the CRD allows its field. */
static int mgop_otel_init(void) {
  for (size_t i = 0; i < MGOP_OTEL_N; i++) {
    const char *v = getenv(mgop_otel_vars[i].var);
    if (v && strlen(v) > MGOP_OTEL_VALUE_MAX) {
      fprintf(stderr, "multigres-op: %s is %zu characters long; at most %d are passed to the data plane (as in "
              "spec.observability.%s)\n", mgop_otel_vars[i].var, strlen(v), MGOP_OTEL_VALUE_MAX, mgop_otel_vars[i].field);
      return 2;
    }
    snprintf(mgop_otel_env.value[i], sizeof(mgop_otel_env.value[i]), "%s", v ? v : "");
  }
  mgop_otel_env.read = 1;
  return 0;
}

/* observability.samplingConfigRef: the ConfigMap and key (1), or 0 when
 * unset or telemetry is disabled. Mounted at /etc/otel, its file named by
 * OTEL_TRACES_SAMPLER_CONFIG, in every container that gets OTEL_*. */
static int mgop_otel_sampling(struct mgop_rctx *r, char *name, size_t ncap, char *key, size_t kcap) {
  int obs = mgop_json_key(&r->root, r->spec, "observability"), ref = mgop_json_key(&r->root, obs, "samplingConfigRef");
  char ep[16];
  if (ref < 0 || (!mgop_json_path_str(&r->root, obs, "otlpEndpoint", ep, sizeof(ep)) && !strcmp(ep, "disabled"))) return 0;
  if (mgop_json_path_str(&r->root, ref, "name", name, ncap) || !name[0]) return 0;
  if (mgop_json_path_str(&r->root, ref, "key", key, kcap) || !key[0]) snprintf(key, kcap, "sampling-config.yaml");
  return 1;
}

/* The OTEL env entries of one container, comma-separated JSON objects
 * without brackets, into out; returns their length (0: none). */
static size_t mgop_otel_env_json(struct mgop_rctx *r, const char *component, char *out, size_t cap) {
  int obs = mgop_json_key(&r->root, r->spec, "observability");
  char v[MGOP_OTEL_VALUE_MAX + 1], attrs[200];
  struct mgop_buf b;
  struct mgop_jw w;
  int any = 0;
  if (!mgop_otel_env.read) mgop_otel_init(); /* main reads it first; tests that include this file may not */
  if (!mgop_json_path_str(&r->root, obs, "otlpEndpoint", v, sizeof(v)) && !strcmp(v, "disabled")) return 0;
  mgop_buf_init(&b, out, cap);
  mgop_jw_init(&w, &b);
  mgop_jw_arr(&w);
  for (size_t i = 0; i < MGOP_OTEL_N; i++) {
    if (mgop_json_path_str(&r->root, obs, mgop_otel_vars[i].field, v, sizeof(v)) || !v[0])
      snprintf(v, sizeof(v), "%s", mgop_otel_env.value[i]);
    if (!v[0]) continue;
    mgop_jw_obj(&w);
    mgop_jw_key(&w, "name"); mgop_jw_str(&w, mgop_otel_vars[i].var);
    mgop_jw_key(&w, "value"); mgop_jw_str(&w, v);
    mgop_jw_obj_end(&w);
    any = 1;
  }
  {
    char name[254], key[254], file[280];
    if (mgop_otel_sampling(r, name, sizeof(name), key, sizeof(key))) {
      snprintf(file, sizeof(file), "/etc/otel/%s", key);
      mgop_jw_obj(&w);
      mgop_jw_key(&w, "name"); mgop_jw_str(&w, "OTEL_TRACES_SAMPLER_CONFIG");
      mgop_jw_key(&w, "value"); mgop_jw_str(&w, file);
      mgop_jw_obj_end(&w);
      any = 1;
    }
  }
  if (any) {
    snprintf(attrs, sizeof(attrs), "multigres.cluster=%s,multigres.component=%s", r->name, component);
    mgop_jw_obj(&w);
    mgop_jw_key(&w, "name"); mgop_jw_str(&w, "OTEL_RESOURCE_ATTRIBUTES");
    mgop_jw_key(&w, "value"); mgop_jw_str(&w, attrs);
    mgop_jw_obj_end(&w);
  }
  mgop_jw_arr_end(&w);
  if (!any || b.overflow || b.len < 2) return 0; /* sized for every field at its maximum: cannot overflow */
  memmove(out, out + 1, b.len - 2); /* without the brackets */
  out[b.len - 2] = 0;
  return b.len - 2;
}

/* KEY: the JSON array literal `own` (or none) with the elements `more`
 * (comma-separated, no brackets) appended, as one raw value (the writer
 * puts a comma between two). Nothing when both are empty. */
static void mgop_write_array_plus(struct mgop_jw *w, const char *key, const char *own, const char *more, size_t n) {
  static _Thread_local char all[MGOP_OTEL_ENV_BUF + 4096]; /* a container's own entries: at most a few KiB */
  size_t o = own ? strlen(own) : 0;
  int len;
  if (!o && !n) return;
  mgop_jw_key(w, key);
  if (!n) { mgop_jw_raw(w, own, o); return; }
  len = o > 2 ? snprintf(all, sizeof(all), "%.*s,%.*s]", (int)(o - 1), own, (int)n, more)
              : snprintf(all, sizeof(all), "[%.*s]", (int)n, more);
  if (len < 0 || (size_t)len >= sizeof(all)) { mgop_jw_raw(w, "[]", 2); w->b->overflow = 1; return; } /* reported */
  mgop_jw_raw(w, all, (size_t)len);
}

static void mgop_write_env(struct mgop_rctx *r, struct mgop_jw *w, const struct mgop_ctr *c) {
  static _Thread_local char otel[MGOP_OTEL_ENV_BUF];
  size_t n = c->otel ? mgop_otel_env_json(r, c->otel, otel, sizeof(otel)) : 0;
  mgop_write_array_plus(w, "env", c->env, otel, n);
}

static void mgop_write_mounts(struct mgop_rctx *r, struct mgop_jw *w, const struct mgop_ctr *c) {
  char name[254], key[254];
  static const char mount[] = "{\"name\":\"otel-sampling-config\",\"mountPath\":\"/etc/otel\",\"readOnly\":true}";
  int sampling = c->otel && mgop_otel_sampling(r, name, sizeof(name), key, sizeof(key));
  mgop_write_array_plus(w, "volumeMounts", c->mounts, mount, sampling ? sizeof(mount) - 1 : 0);
}

static void mgop_write_container(struct mgop_rctx *r, struct mgop_jw *w, const struct mgop_ctr *c) {
  char pull[32], probe[160];
  mgop_jw_obj(w);
  mgop_jw_key(w, "name"); mgop_jw_str(w, c->name);
  mgop_jw_key(w, "image"); mgop_jw_str(w, c->image);
  if (c->sidecar) { mgop_jw_key(w, "restartPolicy"); mgop_jw_str(w, "Always"); }
  mgop_jw_key(w, "imagePullPolicy");
  mgop_jw_str(w, mgop_str_or(&r->root, r->spec, "images.imagePullPolicy", pull, sizeof(pull), "IfNotPresent"));
  if (c->command) { mgop_jw_key(w, "command"); mgop_jw_raw(w, c->command, strlen(c->command)); }
  if (c->nargs) {
    mgop_jw_key(w, "args");
    mgop_jw_arr(w);
    for (int i = 0; i < c->nargs; i++) mgop_jw_str(w, c->args[i]);
    mgop_jw_arr_end(w);
  }
  mgop_write_env(r, w, c);
  if (c->ports) { mgop_jw_key(w, "ports"); mgop_jw_raw(w, c->ports, strlen(c->ports)); }
  if (c->probe_port) {
    snprintf(probe, sizeof(probe), "{\"httpGet\":{\"path\":\"%s\",\"port\":%d},\"periodSeconds\":5,\"failureThreshold\":30}",
             c->ready_path, c->probe_port);
    mgop_jw_key(w, "startupProbe"); mgop_jw_raw(w, probe, strlen(probe));
    snprintf(probe, sizeof(probe), "{\"httpGet\":{\"path\":\"%s\",\"port\":%d},\"periodSeconds\":10}", c->live_path,
             c->probe_port);
    mgop_jw_key(w, "livenessProbe"); mgop_jw_raw(w, probe, strlen(probe));
    snprintf(probe, sizeof(probe), "{\"httpGet\":{\"path\":\"%s\",\"port\":%d},\"periodSeconds\":5}", c->ready_path,
             c->probe_port);
    mgop_jw_key(w, "readinessProbe"); mgop_jw_raw(w, probe, strlen(probe));
  }
  mgop_jw_key(w, "resources");
  if (c->res_doc && c->res_tok >= 0) mgop_jw_copy(w, c->res_doc, c->res_tok);
  else mgop_jw_raw(w, c->res_default, strlen(c->res_default));
  mgop_write_mounts(r, w, c);
  if (c->security) { mgop_jw_key(w, "securityContext"); mgop_jw_raw(w, c->security, strlen(c->security)); }
  mgop_jw_obj_end(w);
}

/* What a pod template needs besides its containers. */
struct mgop_podspec {
  const char *component;
  const struct mgop_ids *ids;
  const struct mgop_json *doc;   /* resolved component settings        */
  int comp;                      /* ... their token                    */
  int tolerations;               /* token in tol_doc, or -1            */
  const struct mgop_json *tol_doc; /* where they are (NULL: doc)        */
  const char *zone_key, *zone;   /* nodeSelector, or NULL              */
  const struct mgop_ctr *ctr;
  int nctr;
  const char *volumes;           /* JSON array literal or NULL         */
  const char *annotations;       /* JSON object literal or NULL        */
  const char *service_account;   /* serviceAccountName, or NULL        */
  long long fs_group;            /* securityContext.fsGroup, or 0      */
};

static void mgop_write_pod_template(struct mgop_rctx *r, struct mgop_jw *w, const struct mgop_podspec *p) {
  int labels = mgop_json_key(p->doc, p->comp, "podLabels"), ann = mgop_json_key(p->doc, p->comp, "podAnnotations");
  int secrets = mgop_json_path(&r->root, r->spec, "images.imagePullSecrets");
  mgop_jw_key(w, "template"); mgop_jw_obj(w);
  mgop_jw_key(w, "metadata"); mgop_jw_obj(w);
  mgop_jw_key(w, "labels");
  if (labels >= 0) { /* user labels first, ours on top: ours win */
    struct mgop_json mine;
    char mem[2048];
    struct mgop_buf b;
    struct mgop_jw lw;
    mgop_buf_init(&b, mem, sizeof(mem));
    mgop_jw_init(&lw, &b);
    mgop_jw_obj(&lw); mgop_labels(&lw, r->name, p->component); mgop_id_labels(&lw, p->ids); mgop_jw_obj_end(&lw);
    if (!b.overflow && mgop_parse_arena(r->arena, b.p, b.len, &mine) == MGOP_OK) mgop_json_merge(w, p->doc, labels, &mine, 0);
  } else {
    mgop_jw_obj(w); mgop_labels(w, r->name, p->component); mgop_id_labels(w, p->ids); mgop_jw_obj_end(w);
  }
  if (ann >= 0 || p->annotations) {
    mgop_jw_key(w, "annotations");
    if (ann >= 0 && p->annotations) {
      struct mgop_json extra;
      if (mgop_parse_arena(r->arena, p->annotations, strlen(p->annotations), &extra) == MGOP_OK)
        mgop_json_merge(w, p->doc, ann, &extra, 0);
    } else if (ann >= 0) mgop_jw_copy(w, p->doc, ann);
    else mgop_jw_raw(w, p->annotations, strlen(p->annotations));
  }
  mgop_jw_obj_end(w);
  mgop_jw_key(w, "spec"); mgop_jw_obj(w);
  if (p->service_account) { mgop_jw_key(w, "serviceAccountName"); mgop_jw_str(w, p->service_account); }
  if (secrets >= 0) { mgop_jw_key(w, "imagePullSecrets"); mgop_jw_copy(w, &r->root, secrets); }
  if (p->zone_key) {
    mgop_jw_key(w, "nodeSelector"); mgop_jw_obj(w); mgop_jw_key(w, p->zone_key); mgop_jw_str(w, p->zone); mgop_jw_obj_end(w);
  }
  mgop_copy_key(w, "affinity", p->doc, mgop_json_key(p->doc, p->comp, "affinity"));
  if (p->tolerations >= 0) mgop_copy_key(w, "tolerations", p->tol_doc ? p->tol_doc : p->doc, p->tolerations);
  if (p->fs_group > 0) { /* the volumes' group, so the containers share files and sockets */
    mgop_jw_key(w, "securityContext"); mgop_jw_obj(w);
    mgop_jw_key(w, "fsGroup"); mgop_jw_i64(w, p->fs_group);
    mgop_jw_obj_end(w);
  }
  for (int pass = 0; pass < 2; pass++) { /* native sidecars (init containers) first, then the rest */
    int n = 0;
    for (int i = 0; i < p->nctr; i++) n += (p->ctr[i].sidecar == 0) == pass;
    if (!n && !pass) continue;
    mgop_jw_key(w, pass ? "containers" : "initContainers"); mgop_jw_arr(w);
    for (int i = 0; i < p->nctr; i++)
      if ((p->ctr[i].sidecar == 0) == pass) mgop_write_container(r, w, &p->ctr[i]);
    mgop_jw_arr_end(w);
  }
  {
    char name[254], key[254], vol[700] = "";
    int otel = 0, n = 0;
    for (int i = 0; i < p->nctr; i++) otel |= p->ctr[i].otel != NULL;
    if (otel && mgop_otel_sampling(r, name, sizeof(name), key, sizeof(key))) {
      struct mgop_buf b;
      struct mgop_jw v;
      mgop_buf_init(&b, vol, sizeof(vol));
      mgop_jw_init(&v, &b);
      mgop_jw_obj(&v);
      mgop_jw_key(&v, "name"); mgop_jw_str(&v, "otel-sampling-config");
      mgop_jw_key(&v, "configMap"); mgop_jw_obj(&v);
      mgop_jw_key(&v, "name"); mgop_jw_str(&v, name);
      mgop_jw_key(&v, "items"); mgop_jw_arr(&v);
      mgop_jw_obj(&v); mgop_jw_key(&v, "key"); mgop_jw_str(&v, key); mgop_jw_key(&v, "path"); mgop_jw_str(&v, key); mgop_jw_obj_end(&v);
      mgop_jw_arr_end(&v);
      mgop_jw_obj_end(&v);
      mgop_jw_obj_end(&v);
      n = b.overflow ? 0 : (int)b.len; /* 2 x 253 characters fit */
    }
    mgop_write_array_plus(w, "volumes", p->volumes, vol, (size_t)n);
  }
  mgop_jw_obj_end(w);
  mgop_jw_obj_end(w);
}

static void mgop_write_selector(struct mgop_rctx *r, struct mgop_jw *w, const char *component, const struct mgop_ids *ids) {
  mgop_jw_key(w, "selector"); mgop_jw_obj(w);
  mgop_jw_key(w, "matchLabels"); mgop_jw_obj(w);
  mgop_selector_labels(w, r->name, component);
  mgop_id_labels(w, ids);
  mgop_jw_obj_end(w);
  mgop_jw_obj_end(w);
}

static int mgop_build_deployment(struct mgop_rctx *r, int owner_kind, const char *owner_name, const char *owner_uid,
                                 const char *name, long long replicas, const struct mgop_podspec *p) {
  struct mgop_build o;
  int rc;
  if ((rc = mgop_build_begin(r, &o, K_DEPLOY, name))) return rc;
  mgop_build_meta_ids(&o, p->component, p->ids, owner_kind, owner_name, owner_uid);
  mgop_jw_key(&o.w, "spec"); mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, "replicas"); mgop_jw_i64(&o.w, replicas);
  mgop_write_selector(r, &o.w, p->component, p->ids);
  mgop_write_pod_template(r, &o.w, p);
  mgop_jw_obj_end(&o.w);
  return mgop_build_end(&o);
}

/* A Service selecting the component (and ids), with pre-encoded ports. */
/* A Service; `exposure` names a spec key (externalGateway,
 * externalAdminWeb) whose externalIPs and annotations it carries while
 * enabled, or is NULL. */
static int mgop_build_service_x(struct mgop_rctx *r, int owner_kind, const char *owner_name, const char *owner_uid,
                                const char *name, const char *component, const struct mgop_ids *ids, int headless,
                                const char *ports, const char *exposure) {
  struct mgop_build o;
  int rc, ex = exposure ? mgop_json_key(&r->root, r->spec, exposure) : -1, on = 0;
  if (ex >= 0) mgop_json_bool(&r->root, mgop_json_key(&r->root, ex, "enabled"), &on);
  if ((rc = mgop_build_begin(r, &o, K_SVC, name))) return rc;
  if (on) o.user_annotations = mgop_json_key(&r->root, ex, "annotations");
  mgop_build_meta_ids(&o, component, ids, owner_kind, owner_name, owner_uid);
  mgop_jw_key(&o.w, "spec"); mgop_jw_obj(&o.w);
  if (headless) {
    mgop_jw_key(&o.w, "clusterIP"); mgop_jw_str(&o.w, "None");
    mgop_jw_key(&o.w, "publishNotReadyAddresses"); mgop_jw_bool(&o.w, 1);
  } else {
    mgop_jw_key(&o.w, "type"); mgop_jw_str(&o.w, "ClusterIP");
  }
  mgop_jw_key(&o.w, "selector"); mgop_jw_obj(&o.w);
  mgop_selector_labels(&o.w, r->name, component);
  mgop_id_labels(&o.w, ids);
  mgop_jw_obj_end(&o.w);
  mgop_jw_key(&o.w, "ports"); mgop_jw_raw(&o.w, ports, strlen(ports));
  if (on && mgop_json_is(&r->root, mgop_json_key(&r->root, ex, "externalIPs"), JSMN_ARRAY)) {
    mgop_jw_key(&o.w, "externalIPs");
    mgop_jw_copy(&o.w, &r->root, mgop_json_key(&r->root, ex, "externalIPs"));
  }
  mgop_jw_obj_end(&o.w);
  return mgop_build_end(&o);
}

static int mgop_build_service(struct mgop_rctx *r, int owner_kind, const char *owner_name, const char *owner_uid,
                              const char *name, const char *component, const struct mgop_ids *ids, int headless,
                              const char *ports) {
  return mgop_build_service_x(r, owner_kind, owner_name, owner_uid, name, component, ids, headless, ports, NULL);
}

static long long mgop_i64_or(const struct mgop_json *j, int t, const char *path, long long fallback) {
  long long v;
  if (mgop_json_i64(j, mgop_json_path(j, t, path), &v) == MGOP_OK) return v;
  return fallback;
}

/* multiadmin, multiadmin-web and the cluster-wide gateway Services. */
/* ---- TLS: cert-manager Certificates -------------------------------------------
 * spec.internalTLS.enabled: one Certificate per component (multiadmin,
 * multigateway, multiorch, multipooler), named, with its Secret, after the
 * component's identity <component>.<cluster>.<namespace>.multigres.internal
 * (the reference operator's names, so its Secrets carry over); the
 * components verify each other by that name, not by cluster DNS.
 * spec.certCommonName: multigateway's public PostgreSQL certificate,
 * Certificate and Secret <cluster>-pg-tls (the reference names them after
 * the CN and the fixed "generated-certs", which two clusters in one
 * namespace would share). All from the ClusterIssuer spec.issuerName
 * (unset: supabase-issuer, the reference's default), owned by the cluster.
 * The spec is the reference's: RSA 2048, 44640h, so renewal (cert-manager
 * renews at two thirds) is years away; the components read the files at
 * start, so a renewed certificate takes effect as pods restart. */
#define MGOP_TLS_DEFAULT_ISSUER "supabase-issuer"
#define MGOP_TLS_DOMAIN "multigres.internal"
#define MGOP_TLS_CN_MAX 64 /* X.509's upper bound on a common name */
enum { MGOP_TLS_ADMIN, MGOP_TLS_GATEWAY, MGOP_TLS_ORCH, MGOP_TLS_POOLER, MGOP_TLS_COMPONENTS };
static const char *const mgop_tls_components[MGOP_TLS_COMPONENTS] = {"multiadmin", "multigateway", "multiorch",
                                                                      "multipooler"};
/* the flags and mounts per component; the mount directories are the reference's */
static const struct {
  const char *volume, *dir;
  int client; /* also dials multipoolers: the --multipooler-grpc-* flags */
} mgop_tls_mounts[MGOP_TLS_COMPONENTS] = {
    {"tls-certs", "/etc/multiadmin/tls", 1},
    {"tls-certs-internal", "/etc/multigateway/tls-internal", 1},
    {"tls-certs", "/etc/multigres/tls", 1},
    {"tls-certs", "/etc/multigres/tls", 0},
};
#define MGOP_TLS_ARGS 12 /* 9 of internalTLS, 3 of the topology client */

/* What this cluster asks for, into r->tls. */
static void mgop_tls_of(struct mgop_rctx *r) {
  int on = 0;
  memset(&r->tls, 0, sizeof(r->tls));
  mgop_json_bool(&r->root, mgop_json_path(&r->root, r->spec, "internalTLS.enabled"), &on);
  r->tls.internal = on;
  mgop_str_or(&r->root, r->spec, "certCommonName", r->tls.cn, sizeof(r->tls.cn), NULL);
  if (!mgop_str_or(&r->root, r->spec, "issuerName", r->tls.issuer, sizeof(r->tls.issuer), NULL))
    snprintf(r->tls.issuer, sizeof(r->tls.issuer), "%s", MGOP_TLS_DEFAULT_ISSUER);
}

/* A component's identity: its Certificate's, Secret's and DNS name. */
static void mgop_tls_identity(const struct mgop_rctx *r, int comp, char *out, size_t cap) {
  snprintf(out, cap, "%s.%s.%s." MGOP_TLS_DOMAIN, mgop_tls_components[comp], r->name, r->ns);
}

/* One Certificate: dns (n names) from issuer; server and/or client use. */
static int mgop_build_cert(struct mgop_rctx *r, const char *name, const char *component, const char *const *dns, int n,
                           int client) {
  struct mgop_build o;
  int rc;
  if ((rc = mgop_build_begin(r, &o, K_CERT, name))) return rc;
  mgop_build_meta_ids(&o, component, NULL, K_CLUSTER, r->name, r->uid);
  mgop_jw_key(&o.w, "spec"); mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, "secretName"); mgop_jw_str(&o.w, name);
  mgop_jw_key(&o.w, "secretTemplate"); mgop_jw_obj(&o.w); /* the Secret says whose it is */
  mgop_jw_key(&o.w, "labels"); mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, "app.kubernetes.io/part-of"); mgop_jw_str(&o.w, "multigres");
  mgop_jw_key(&o.w, "multigres.com/cluster"); mgop_jw_str(&o.w, r->name);
  mgop_jw_obj_end(&o.w); mgop_jw_obj_end(&o.w);
  if (strlen(dns[0]) <= MGOP_TLS_CN_MAX) { mgop_jw_key(&o.w, "commonName"); mgop_jw_str(&o.w, dns[0]); }
  mgop_jw_key(&o.w, "dnsNames"); mgop_jw_arr(&o.w);
  for (int i = 0; i < n; i++) mgop_jw_str(&o.w, dns[i]);
  mgop_jw_arr_end(&o.w);
  mgop_jw_key(&o.w, "duration"); mgop_jw_str(&o.w, "44640h0m0s");
  mgop_jw_key(&o.w, "privateKey"); MGOP_JW_LIT(&o.w, "{\"algorithm\":\"RSA\",\"size\":2048,\"rotationPolicy\":\"Always\"}");
  mgop_jw_key(&o.w, "usages");
  if (client) MGOP_JW_LIT(&o.w, "[\"digital signature\",\"key encipherment\",\"server auth\",\"client auth\"]");
  else MGOP_JW_LIT(&o.w, "[\"digital signature\",\"key encipherment\",\"server auth\"]");
  mgop_jw_key(&o.w, "issuerRef"); mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, "name"); mgop_jw_str(&o.w, r->tls.issuer);
  mgop_jw_key(&o.w, "kind"); mgop_jw_str(&o.w, "ClusterIssuer");
  mgop_jw_key(&o.w, "group"); mgop_jw_str(&o.w, "cert-manager.io");
  mgop_jw_obj_end(&o.w);
  mgop_jw_obj_end(&o.w);
  return mgop_build_end(&o);
}

/* Live, before the first Certificate: cert-manager must be installed. Its
 * watch is ABSENT when the API server did not serve certificates; ask the
 * group again (a discovery GET, which every user may make) and start the
 * watch once it is there. Missing, it is an error the turn retries, so
 * installing cert-manager is enough. */
static int mgop_tls_check_cert_manager(struct mgop_rctx *r) {
  static char body[64 * 1024];
  struct mgop_buf b;
  int status = 0, rc;
  if (r->render || mgop_server.watches[K_CERT].state != MGOP_W_ABSENT) return MGOP_OK;
  mgop_buf_init(&b, body, sizeof(body));
  rc = mgop_kube_get(mgop_api_ptr, "/apis/cert-manager.io/v1", &b, &status);
  if (rc == MGOP_ERR_NOTFOUND)
    return mgop_seterr(MGOP_ERR_STATUS, "%s needs cert-manager, and the API server serves no cert-manager.io/v1 "
                       "Certificates: install cert-manager (its CRDs and controller), or unset %s",
                       r->tls.internal ? "spec.internalTLS.enabled" : "spec.certCommonName",
                       r->tls.internal ? "it" : "the field");
  if (rc) return rc;
  mgop_watch_enable(&mgop_server.watches[K_CERT]);
  MGOP_LOG(MGOP_INFO, ("cert-manager.io/v1 is served now: watching Certificates"));
  return MGOP_OK;
}

/* A renewed certificate reaches the components as they restart (they read
 * the files at start), so their pods carry multigres.com/tls-revision: the
 * issuance count of each certificate they mount ("i" internal, "p" the
 * public one). cert-manager's renewal moves it, and the pods roll (pool
 * pods through the operator's safe roll). Not issued yet counts as the
 * first issuance, so the first certificate rolls nothing; render and
 * admission (which never read the loop's tables) say 1. */
static int mgop_tls_revision(const struct mgop_rctx *r, const char *cert) {
  const struct mgop_fp *f = r->render ? NULL : mgop_fp_find(mgop_fp_key("Certificate", r->ns, cert));
  return f && f->cert_revision > 1 ? f->cert_revision : 1;
}

/* The pod annotation of comp's certificates ("{...}"), or NULL without TLS;
 * extra (",\"key\":\"value\"" or "") goes inside the object. */
static const char *mgop_tls_pod_annotations(const struct mgop_rctx *r, int comp, const char *extra, char *out, size_t cap) {
  char id[MGOP_NAME_MAX + 1], rev[32] = "";
  int n = 0;
  if (r->tls.internal) {
    mgop_tls_identity(r, comp, id, sizeof(id));
    n += snprintf(rev + n, sizeof(rev) - (size_t)n, "i%d", mgop_tls_revision(r, id));
  }
  if (comp == MGOP_TLS_GATEWAY && r->tls.cn[0]) {
    snprintf(id, sizeof(id), "%s-pg-tls", r->name);
    snprintf(rev + n, sizeof(rev) - (size_t)n, "p%d", mgop_tls_revision(r, id));
  }
  if (!rev[0]) return extra[0] ? (snprintf(out, cap, "{%s}", extra + 1), out) : NULL;
  snprintf(out, cap, "{\"multigres.com/tls-revision\":\"%s\"%s}", rev, extra);
  return out;
}

/* The cluster's Certificates (phase 1, owned by the cluster). */
static int mgop_build_certs(struct mgop_rctx *r) {
  char id[MGOP_TLS_COMPONENTS][MGOP_NAME_MAX + 1], pub[MGOP_NAME_MAX + 1];
  int rc;
  if (!r->tls.internal && !r->tls.cn[0]) return MGOP_OK;
  snprintf(r->where, sizeof(r->where), "%s", r->tls.internal ? "spec.internalTLS" : "spec.certCommonName");
  if ((rc = mgop_tls_check_cert_manager(r))) return rc;
  for (int c = 0; r->tls.internal && c < MGOP_TLS_COMPONENTS; c++) mgop_tls_identity(r, c, id[c], sizeof(id[c]));
  for (int c = 0; r->tls.internal && c < MGOP_TLS_COMPONENTS; c++) {
    /* multigateway also answers to multipooler's name: Multigres forwards
     * cancel requests between gateways with the --multipooler-grpc-* flags */
    const char *dns[2] = {id[c], id[MGOP_TLS_POOLER]};
    if ((rc = mgop_build_cert(r, id[c], mgop_tls_components[c], dns, c == MGOP_TLS_GATEWAY ? 2 : 1, 1))) return rc;
  }
  if (r->tls.cn[0]) {
    const char *dns[2] = {r->tls.cn, r->tls.cn + 3}; /* also the name without "db.", as the reference does */
    snprintf(pub, sizeof(pub), "%s-pg-tls", r->name);
    if ((rc = mgop_build_cert(r, pub, "multigateway", dns, strncmp(r->tls.cn, "db.", 3) || !r->tls.cn[3] ? 1 : 2, 0)))
      return rc;
  }
  return MGOP_OK;
}

/* "[x, y]" from the elements a and b, each "" or ",{...}" (as built for
 * appending to a list); NULL when both are empty or out is too small. */
static const char *mgop_json_list2(char *out, size_t cap, const char *a, const char *b) {
  struct mgop_buf lb;
  const char *first = a[0] ? a : b, *second = a[0] ? b : "";
  if (!first[0]) return NULL;
  mgop_buf_init(&lb, out, cap);
  mgop_buf_printf(&lb, "[%s%s]", first + 1, second);
  return lb.overflow ? NULL : out;
}

/* A component's TLS pieces: its volumes (",{...}" each, to append to the
 * pod's list), its mounts (the same, for the container) and its flags
 * (args[i] point into bufs). Returns how many flags. Two sources:
 *  - internalTLS: the component's certificate (above);
 *  - an external global etcd with caSecret and/or clientCertSecret: the
 *    client side of that TLS for every component that opens the topology
 *    (not pgctld, which shares the data volume), one projected volume at
 *    /etc/multigres/topo-client-tls and the --topo-etcd-tls-* flags, as
 *    the reference operator wires it. The flags are process-wide, so a
 *    cell's own external etcd uses these Secrets or none
 *    (mgop_cell_refusals). */
#define MGOP_TOPO_TLS_DIR "/etc/multigres/topo-client-tls"
struct mgop_tls_parts {
  char volume[MGOP_NAME_MAX + 160 + 2 * MGOP_NAME_MAX + 320], mount[200 + 120];
  char bufs[MGOP_TLS_ARGS][MGOP_NAME_MAX + 64];
};
static int mgop_tls_topo_client(const struct mgop_rctx *r, struct mgop_tls_parts *t, int n) {
  const struct mgop_json *topo = &r->topo_doc;
  int ext = topo->tok ? mgop_json_key(topo, 0, "external") : -1;
  char ca[254] = "", cl[254] = "";
  struct mgop_buf vb;
  if (ext < 0) return n;
  mgop_json_path_str(topo, ext, "caSecret", ca, sizeof(ca));
  mgop_json_path_str(topo, ext, "clientCertSecret", cl, sizeof(cl));
  if (!ca[0] && !cl[0]) return n;
  vb = mgop_buf_resume(t->volume, sizeof(t->volume), strlen(t->volume));
  mgop_buf_puts(&vb, ",{\"name\":\"topo-client-tls\",\"projected\":{\"defaultMode\":292,\"sources\":[");
  if (cl[0])
    mgop_buf_printf(&vb, "{\"secret\":{\"name\":\"%s\",\"items\":[{\"key\":\"tls.crt\",\"path\":\"tls.crt\"},"
                    "{\"key\":\"tls.key\",\"path\":\"tls.key\"}]}}", cl);
  if (ca[0])
    mgop_buf_printf(&vb, "%s{\"secret\":{\"name\":\"%s\",\"items\":[{\"key\":\"ca.crt\",\"path\":\"ca.crt\"}]}}",
                    cl[0] ? "," : "", ca);
  mgop_buf_puts(&vb, "]}}");
  mgop_buf_cstr(&vb);
  snprintf(t->mount + strlen(t->mount), sizeof(t->mount) - strlen(t->mount),
           ",{\"name\":\"topo-client-tls\",\"mountPath\":\"" MGOP_TOPO_TLS_DIR "\",\"readOnly\":true}");
  if (cl[0]) {
    snprintf(t->bufs[n++], sizeof(t->bufs[0]), "--topo-etcd-tls-cert=" MGOP_TOPO_TLS_DIR "/tls.crt");
    snprintf(t->bufs[n++], sizeof(t->bufs[0]), "--topo-etcd-tls-key=" MGOP_TOPO_TLS_DIR "/tls.key");
  }
  if (ca[0]) snprintf(t->bufs[n++], sizeof(t->bufs[0]), "--topo-etcd-tls-ca=" MGOP_TOPO_TLS_DIR "/ca.crt");
  return n;
}

static int mgop_tls_component(const struct mgop_rctx *r, int comp, struct mgop_tls_parts *t, const char **args) {
  char id[MGOP_NAME_MAX + 1], pooler[MGOP_NAME_MAX + 1];
  const char *d = mgop_tls_mounts[comp].dir;
  int n = 0;
  t->volume[0] = t->mount[0] = 0;
  if (r->tls.internal) {
    mgop_tls_identity(r, comp, id, sizeof(id));
    mgop_tls_identity(r, MGOP_TLS_POOLER, pooler, sizeof(pooler));
    snprintf(t->volume, sizeof(t->volume), ",{\"name\":\"%s\",\"secret\":{\"secretName\":\"%s\",\"defaultMode\":292}}",
             mgop_tls_mounts[comp].volume, id);
    snprintf(t->mount, sizeof(t->mount), ",{\"name\":\"%s\",\"mountPath\":\"%s\",\"readOnly\":true}",
             mgop_tls_mounts[comp].volume, d);
    snprintf(t->bufs[n++], sizeof(t->bufs[0]), "--grpc-cert=%s/tls.crt", d);
    snprintf(t->bufs[n++], sizeof(t->bufs[0]), "--grpc-key=%s/tls.key", d);
    snprintf(t->bufs[n++], sizeof(t->bufs[0]), "--grpc-ca=%s/ca.crt", d);
    snprintf(t->bufs[n++], sizeof(t->bufs[0]), "--grpc-server-ca=%s/ca.crt", d);
    if (mgop_tls_mounts[comp].client) {
      snprintf(t->bufs[n++], sizeof(t->bufs[0]), "--multipooler-grpc-cert=%s/tls.crt", d);
      snprintf(t->bufs[n++], sizeof(t->bufs[0]), "--multipooler-grpc-key=%s/tls.key", d);
      snprintf(t->bufs[n++], sizeof(t->bufs[0]), "--multipooler-grpc-ca=%s/ca.crt", d);
      snprintf(t->bufs[n++], sizeof(t->bufs[0]), "--multipooler-grpc-server-name=%s", pooler);
      snprintf(t->bufs[n++], sizeof(t->bufs[0]), "--multipooler-grpc-require-tls");
    }
  }
  n = mgop_tls_topo_client(r, t, n);
  for (int i = 0; i < n; i++) args[i] = t->bufs[i];
  return n;
}

static int mgop_build_admin(struct mgop_rctx *r, const char *addr, const char *root) {
  struct mgop_json admin, web;
  struct mgop_chain c = {"spec.multiadmin", &r->root, mgop_json_key(&r->root, r->spec, "multiadmin"), "spec",
                         "templateRef", "coreTemplate", K_CORET, "spec.multiadmin", NULL};
  char src[300], image[MGOP_IMAGE_BUF], level[16], name[64], web_name[80], a1[1100], a2[600], env[1024 + 400], user[64], user_json[6 * 63 + 1];
  const char *parts[] = {r->name, "multiadmin"};
  struct mgop_ctr ctr;
  struct mgop_podspec p;
  int rc;
  snprintf(r->where, sizeof(r->where), "spec.multiadmin");
  if ((rc = mgop_resolve_chain(r, &c, &admin, src, sizeof(src)))) return rc;
  mgop_name(name, sizeof(name), MGOP_LIMIT_SERVICE, 0, parts, 2);
  memset(&ctr, 0, sizeof(ctr));
  ctr.name = "multiadmin";
  ctr.image = mgop_image(r, MGOP_IMG_MULTIADMIN, image, sizeof(image));
  ctr.command = "[\"/multigres/bin/multiadmin\"]";
  snprintf(a1, sizeof(a1), "--topo-global-server-addresses=%s", addr);
  snprintf(a2, sizeof(a2), "--topo-global-root=%s", root);
  char lv[40]; /* lives until the container is written below */
  {
    snprintf(lv, sizeof(lv), "--log-level=%s", mgop_log_level_of(r, "multiadmin", level, sizeof(level)));
    const char *args[] = {"--http-port=18000", "--grpc-port=18070", a1, a2, "--service-map=grpc-multiadmin",
                          "--pprof-http=true", lv};
    memcpy(ctr.args, args, sizeof(args));
    ctr.nargs = 7;
  }
  static _Thread_local struct mgop_tls_parts tls; /* 3 KiB */
  char vols[sizeof(tls.volume) + 2], mounts[sizeof(tls.mount) + 2];
  ctr.nargs += mgop_tls_component(r, MGOP_TLS_ADMIN, &tls, ctr.args + ctr.nargs);
  ctr.mounts = mgop_json_list2(mounts, sizeof(mounts), tls.mount, "");
  ctr.ports = "[{\"name\":\"http\",\"containerPort\":18000,\"protocol\":\"TCP\"},"
              "{\"name\":\"grpc\",\"containerPort\":18070,\"protocol\":\"TCP\"}]";
  ctr.ready_path = "/ready";
  ctr.live_path = "/live";
  ctr.probe_port = 18000;
  ctr.res_doc = &admin;
  ctr.res_tok = mgop_json_key(&admin, 0, "resources");
  ctr.res_default = "{\"requests\":{\"cpu\":\"100m\",\"memory\":\"128Mi\"},\"limits\":{\"memory\":\"256Mi\"}}";
  memset(&p, 0, sizeof(p));
  p.component = "multiadmin";
  p.doc = &admin;
  p.comp = 0;
  p.tolerations = mgop_json_path(&r->root, r->spec, "multiadmin.placement.tolerations");
  p.tol_doc = &r->root; /* the cluster's own spec: placement is not in the template chain */
  p.ctr = &ctr;
  p.nctr = 1;
  p.volumes = mgop_json_list2(vols, sizeof(vols), tls.volume, "");
  char pod_ann[96];
  p.annotations = mgop_tls_pod_annotations(r, MGOP_TLS_ADMIN, "", pod_ann, sizeof(pod_ann));
  if ((rc = mgop_build_deployment(r, K_CLUSTER, r->name, r->uid, name, mgop_i64_or(&admin, 0, "replicas", 1), &p)))
    return rc;
  p.volumes = p.annotations = NULL; /* multiadmin-web's pod: no certificate */
  if ((rc = mgop_build_service(r, K_CLUSTER, r->name, r->uid, name, "multiadmin", NULL, 0,
                               "[{\"name\":\"http\",\"port\":18000,\"targetPort\":18000,\"protocol\":\"TCP\"},"
                               "{\"name\":\"grpc\",\"port\":18070,\"targetPort\":18070,\"protocol\":\"TCP\"}]")))
    return rc;

  /* multiadmin-web */
  c.what = "spec.multiadminWeb";
  c.comp = mgop_json_key(&r->root, r->spec, "multiadminWeb");
  c.tsection = "spec.multiadminWeb";
  if ((rc = mgop_resolve_chain(r, &c, &web, src, sizeof(src)))) return rc;
  snprintf(web_name, sizeof(web_name), "%s-web", name);
  memset(&ctr, 0, sizeof(ctr));
  ctr.name = "multiadmin-web";
  ctr.image = mgop_image(r, MGOP_IMG_MULTIADMIN_WEB, image, sizeof(image));
  snprintf(env, sizeof(env),
           "[{\"name\":\"HOSTNAME\",\"value\":\"::\"},{\"name\":\"MULTIADMIN_API_URL\",\"value\":\"http://%s:18000\"},"
           "{\"name\":\"POSTGRES_HOST\",\"value\":\"%s-multigateway\"},{\"name\":\"POSTGRES_PORT\",\"value\":\"5432\"},"
           "{\"name\":\"POSTGRES_DATABASE\",\"value\":\"postgres\"},{\"name\":\"POSTGRES_USER\",\"value\":\"%s\"}]",
           name, r->name, mgop_json_inner(mgop_str_or(&r->root, r->spec, "postgresSuperuser", user, sizeof(user), "postgres"),
                                          user_json, sizeof(user_json)));
  ctr.env = env;
  ctr.ports = "[{\"name\":\"http\",\"containerPort\":18100,\"protocol\":\"TCP\"}]";
  ctr.ready_path = ctr.live_path = "/";
  ctr.probe_port = 18100;
  ctr.res_doc = &web;
  ctr.res_tok = mgop_json_key(&web, 0, "resources");
  ctr.res_default = "{\"requests\":{\"cpu\":\"50m\",\"memory\":\"64Mi\"},\"limits\":{\"memory\":\"128Mi\"}}";
  p.component = "multiadmin-web";
  p.doc = &web;
  p.ctr = &ctr;
  if ((rc = mgop_build_deployment(r, K_CLUSTER, r->name, r->uid, web_name, mgop_i64_or(&web, 0, "replicas", 1), &p)))
    return rc;
  if ((rc = mgop_build_service_x(r, K_CLUSTER, r->name, r->uid, web_name, "multiadmin-web", NULL, 0,
                                 "[{\"name\":\"http\",\"port\":18100,\"targetPort\":18100,\"protocol\":\"TCP\"}]",
                                 "externalAdminWeb")))
    return rc;

  /* the cluster-wide gateway Services span every cell */
  snprintf(web_name, sizeof(web_name), "%s-multigateway", r->name);
  if ((rc = mgop_build_service_x(r, K_CLUSTER, r->name, r->uid, web_name, "multigateway", NULL, 0,
                                 "[{\"name\":\"postgres\",\"port\":5432,\"targetPort\":\"postgres\",\"protocol\":\"TCP\"}]",
                                 "externalGateway")))
    return rc;
  snprintf(web_name, sizeof(web_name), "%s-multigateway-replica", r->name);
  return mgop_build_service(r, K_CLUSTER, r->name, r->uid, web_name, "multigateway", NULL, 0,
                            "[{\"name\":\"pg-replica\",\"port\":5433,\"targetPort\":\"pg-replica\",\"protocol\":\"TCP\"}]");
}

/* A cell: where its pods go. */
static void mgop_cell_zone(const struct mgop_json *j, int cell, const char **key, char *zone, size_t cap) {
  *key = NULL;
  if (mgop_json_path_str(j, cell, "zone", zone, cap) == MGOP_OK && zone[0]) *key = "topology.kubernetes.io/zone";
  else if (mgop_json_path_str(j, cell, "zoneId", zone, cap) == MGOP_OK && zone[0]) *key = "topology.k8s.aws/zone-id";
  else if (mgop_json_path_str(j, cell, "region", zone, cap) == MGOP_OK && zone[0]) *key = "topology.kubernetes.io/region";
}

/* A Go duration ("1h30m", "1.5s", "300ms") in nanoseconds, or -1. The
 * CRD's pattern admits exactly these; this reads them for comparison. */
static double mgop_go_duration_ns(const char *v) {
  static const struct { const char *unit; double ns; } units[] = {
      {"ns", 1}, {"us", 1e3}, {"\xc2\xb5s", 1e3}, {"\xce\xbcs", 1e3}, {"ms", 1e6}, {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};
  double total = 0;
  if (!*v) return -1;
  while (*v) {
    char *end;
    double n = strtod(v, &end);
    size_t best = 0;
    int u = -1;
    if (end == v || n < 0) return -1;
    for (int i = 0; i < (int)(sizeof(units) / sizeof(units[0])); i++) /* the longest unit that matches: ms before m */
      if (!strncmp(end, units[i].unit, strlen(units[i].unit)) && strlen(units[i].unit) > best)
        best = strlen(units[i].unit), u = i;
    if (u < 0) return -1;
    total += n * units[u].ns;
    v = end + best;
  }
  return total;
}

/* multigateway's --buffer-* flags from multigateway.buffer: one a field set
 * (unset: no flag, the binary's default). Returns how many were written to
 * out, or -1 (Stalled) when maxFailoverDuration would be below window. */
#define MGOP_BUFFER_ARGS 6
static int mgop_gateway_buffer_args(struct mgop_rctx *r, const char *what, const struct mgop_json *cfg, int gwt,
                                    char out[MGOP_BUFFER_ARGS][128]) {
  static const struct { const char *key, *flag; int kind; } f[MGOP_BUFFER_ARGS] = { /* kind: 0 bool, 1 duration, 2 int */
      {"enabled", "buffer-enabled", 0}, {"window", "buffer-window", 1},
      {"maxFailoverDuration", "buffer-max-failover-duration", 1},
      {"minTimeBetweenFailovers", "buffer-min-time-between-failovers", 1}, {"size", "buffer-size", 2},
      {"drainConcurrency", "buffer-drain-concurrency", 2}};
  int buf = mgop_json_key(cfg, gwt, "buffer"), n = 0;
  char window[72] = "10s", maxf[72] = "20s"; /* multigateway's own defaults */
  if (!mgop_json_is(cfg, buf, JSMN_OBJECT)) return 0;
  for (int i = 0; i < MGOP_BUFFER_ARGS; i++) {
    int t = mgop_json_key(cfg, buf, f[i].key), b;
    long long v;
    char d[72];
    if (t < 0) continue;
    if (f[i].kind == 0 && !mgop_json_bool(cfg, t, &b)) snprintf(out[n++], 128, "--%s=%s", f[i].flag, b ? "true" : "false");
    if (f[i].kind == 1 && !mgop_json_str(cfg, t, d, sizeof(d))) {
      snprintf(out[n++], 128, "--%s=%s", f[i].flag, d);
      if (i == 1) snprintf(window, sizeof(window), "%s", d);
      if (i == 2) snprintf(maxf, sizeof(maxf), "%s", d);
    }
    if (f[i].kind == 2 && !mgop_json_i64(cfg, t, &v)) snprintf(out[n++], 128, "--%s=%lld", f[i].flag, v);
  }
  if (mgop_go_duration_ns(maxf) < mgop_go_duration_ns(window)) {
    mgop_stall(r, "InvalidSpec", "%s.multigateway.buffer: maxFailoverDuration (%s) is shorter than window (%s); "
               "multigateway needs it at least as long: raise maxFailoverDuration or lower window (unset: 20s and 10s)",
               what, maxf, window);
    return -1;
  }
  return n;
}

/* What a cell may not ask for, refused where it is asked:
 *  - metadata: Multigres's Cell record (proto/clustermetadata.proto: name,
 *    server_addresses, root) has no field to hold it;
 *  - an external local etcd's caSecret/clientCertSecret other than the
 *    global topology's: every Multigres component takes one etcd TLS set-up
 *    per process (--topo-etcd-tls-ca, -cert, -key) and opens the global and
 *    its cell's topology with it, so the global's Secrets, mounted already
 *    (mgop_tls_topo_client), are the only ones a cell can use. */
static int mgop_cell_refusals(struct mgop_rctx *r, int cell, const char *what, const struct mgop_json *cfg) {
  static const char *const keys[] = {"caSecret", "clientCertSecret"};
  int ext = mgop_json_key(cfg, mgop_json_key(cfg, 0, "localTopoServer"), "external");
  int gext = r->topo_doc.tok ? mgop_json_key(&r->topo_doc, 0, "external") : -1;
  int meta = mgop_json_key(&r->root, cell, "metadata");
  if (mgop_json_is(&r->root, meta, JSMN_STRING) && r->root.tok[meta].end > r->root.tok[meta].start) {
    mgop_stall(r, "InvalidSpec", "%s.metadata is set, but Multigres's Cell topology record (name, server_addresses "
               "and root in proto/clustermetadata.proto) has no field to hold it, so it cannot be copied there; "
               "remove it (a note for people fits an annotation of the MultigresCluster)", what);
    return MGOP_ERR_CONFIG;
  }
  for (int i = 0; ext >= 0 && i < 2; i++) {
    char mine[254] = "", global[254] = "";
    mgop_json_path_str(cfg, ext, keys[i], mine, sizeof(mine));
    if (gext >= 0) mgop_json_path_str(&r->topo_doc, gext, keys[i], global, sizeof(global));
    if (!mine[0] || !strcmp(mine, global)) continue;
    mgop_stall(r, "InvalidSpec", "%s: localTopoServer.external.%s is \"%s\" but spec.globalTopoServer.external.%s is "
               "%s%s%s: Multigres components take one etcd TLS set-up per process (--topo-etcd-tls-ca, "
               "--topo-etcd-tls-cert, --topo-etcd-tls-key) for the global and the cell topology alike; name the same "
               "Secret in both, or leave the cell's unset", what, keys[i], mine, keys[i], global[0] ? "\"" : "",
               global[0] ? global : "unset", global[0] ? "\"" : "");
    return MGOP_ERR_CONFIG;
  }
  return MGOP_OK;
}

/* One cell: its Cell CR (workloads=0, phase 1), its local TopoServer CR
 * (workloads=2, phase 2), or its workloads (workloads=1, phase 3). */
static void mgop_topo_note_cell(struct mgop_rctx *r, const char *name, const char *cr, const struct mgop_json *cfg,
                                const char *gaddr, const char *groot); /* topology records, below */
static int mgop_build_cell(struct mgop_rctx *r, int cell, int workloads, const char *addr, const char *root) {
  struct mgop_json cfg;
  char name[64], cr[254], src[300], what[128], zone[64], image[MGOP_IMAGE_BUF], level[16], gw[254], gws[64];
  char a_addr[1100], a_root[600], a_cell[96], a_lv[40], a_buf[MGOP_BUFFER_ARGS][128];
  const char *zone_key, *uid;
  struct mgop_ids ids;
  struct mgop_chain c;
  int rc;
  if (mgop_json_path_str(&r->root, cell, "name", name, sizeof(name)) || !name[0]) {
    mgop_stall(r, "InvalidSpec", "spec.cells[] has an entry without a name; give every cell a name");
    return MGOP_ERR_CONFIG;
  }
  {
    const char *parts[] = {r->name, name};
    mgop_name(cr, sizeof(cr), MGOP_LIMIT_DEFAULT, 1, parts, 2);
  }
  snprintf(what, sizeof(what), "spec.cells[name=%s]", name);
  snprintf(r->where, sizeof(r->where), "%s", what);
  c = (struct mgop_chain){what, &r->root, cell, "spec", "cellTemplate", "cellTemplate", K_CELLT, "spec", "overrides"};
  if ((rc = mgop_resolve_chain(r, &c, &cfg, src, sizeof(src)))) return rc;
  if (!workloads && (rc = mgop_cell_refusals(r, cell, what, &cfg))) return rc;
  mgop_cell_zone(&r->root, cell, &zone_key, zone, sizeof(zone));
  memset(&ids, 0, sizeof(ids));
  ids.cell = name;
  if (!workloads) {
    struct mgop_build o;
    int cells = mgop_json_key(&r->root, r->spec, "cells");
    if ((rc = mgop_build_begin(r, &o, K_CELL, cr))) return rc;
    mgop_build_meta_ids(&o, "cell", &ids, K_CLUSTER, r->name, r->uid);
    mgop_jw_key(&o.w, "spec"); mgop_jw_obj(&o.w);
    mgop_jw_key(&o.w, "name"); mgop_jw_str(&o.w, name);
    if (zone_key) {
      mgop_jw_key(&o.w, strstr(zone_key, "zone-id") ? "zoneId" : strstr(zone_key, "region") ? "region" : "zone");
      mgop_jw_str(&o.w, zone);
    }
    mgop_copy_key(&o.w, "multigateway", &cfg, mgop_json_key(&cfg, 0, "multigateway"));
    mgop_copy_key(&o.w, "multigatewayPlacement", &cfg, mgop_json_key(&cfg, 0, "multigatewayPlacement"));
    mgop_copy_key(&o.w, "topoServer", &cfg, mgop_json_key(&cfg, 0, "localTopoServer"));
    mgop_jw_key(&o.w, "globalTopoServer"); mgop_jw_obj(&o.w);
    mgop_jw_key(&o.w, "address"); mgop_jw_str(&o.w, addr);
    mgop_jw_key(&o.w, "rootPath"); mgop_jw_str(&o.w, root);
    mgop_jw_key(&o.w, "implementation"); mgop_jw_str(&o.w, "etcd");
    mgop_jw_obj_end(&o.w);
    mgop_jw_key(&o.w, "allCells"); mgop_jw_arr(&o.w);
    for (int i = 0; i < r->root.tok[cells].size; i++) {
      char n[64];
      if (mgop_json_path_str(&r->root, mgop_json_at(&r->root, cells, i), "name", n, sizeof(n)) == MGOP_OK) mgop_jw_str(&o.w, n);
    }
    mgop_jw_arr_end(&o.w);
    mgop_jw_obj_end(&o.w);
    mgop_topo_note_cell(r, name, cr, &cfg, addr, root);
    return mgop_build_end(&o);
  }
  uid = mgop_uid_of(r, K_CELL, cr);
  if (!uid) return mgop_seterr(MGOP_ERR_STATUS, "Cell %s has no uid yet", cr);
  { /* a local topology server: its CR in phase 2 (owned by the Cell), its etcd in phase 3 */
    int lt = mgop_json_key(&cfg, 0, "localTopoServer");
    if (mgop_json_key(&cfg, lt, "etcd") >= 0) {
      struct mgop_json builtin, local;
      struct mgop_topo_target t;
      char tname[64];
      const char *tparts[] = {cr, "topo"};
      mgop_name(tname, sizeof(tname), MGOP_LIMIT_STS, 1, tparts, 2);
      t = (struct mgop_topo_target){tname, name, K_CELL, cr, uid};
      if ((rc = mgop_parse_arena(r->arena, mgop_default_global_topo, sizeof(mgop_default_global_topo) - 1, &builtin)))
        return rc;
      if ((rc = mgop_merge_to(r, &builtin, 0, &cfg, lt, &local))) return rc;
      if (workloads == 2) return mgop_build_topo(r, &local, &t, 1, NULL);
      {
        const char *tuid = mgop_uid_of(r, K_TOPO, tname);
        if (!tuid) return mgop_seterr(MGOP_ERR_STATUS, "TopoServer %s has no uid yet", tname);
        if ((rc = mgop_build_topo(r, &local, &t, 0, tuid))) return rc;
      }
    } else if (workloads == 2) {
      return MGOP_OK;
    }
  }
  {
    const char *parts[] = {r->name, name, "multigateway"};
    mgop_name(gw, sizeof(gw), MGOP_LIMIT_DEFAULT, 1, parts, 3);
    mgop_name(gws, sizeof(gws), MGOP_LIMIT_SERVICE, 1, parts, 3);
  }
  {
    struct mgop_ctr ctr;
    struct mgop_podspec p;
    int gwt = mgop_json_key(&cfg, 0, "multigateway");
    memset(&ctr, 0, sizeof(ctr));
    ctr.name = "multigateway";
    ctr.image = mgop_image(r, MGOP_IMG_MULTIGATEWAY, image, sizeof(image));
    ctr.otel = "multigateway";
    snprintf(a_addr, sizeof(a_addr), "--topo-global-server-addresses=%s", addr);
    snprintf(a_root, sizeof(a_root), "--topo-global-root=%s", root);
    snprintf(a_cell, sizeof(a_cell), "--cell=%s", name);
    snprintf(a_lv, sizeof(a_lv), "--log-level=%s", mgop_log_level_of(r, "multigateway", level, sizeof(level)));
    {
      const char *args[] = {"multigateway", "--http-port=15100", "--grpc-port=15170", "--pg-port=5432",
                            "--pg-replica-port=5433", a_addr, a_root, a_cell, a_lv};
      int nb = mgop_gateway_buffer_args(r, what, &cfg, gwt, a_buf);
      _Static_assert(sizeof(args) / sizeof(args[0]) + MGOP_BUFFER_ARGS + MGOP_TLS_ARGS + 2 <=
                         sizeof(ctr.args) / sizeof(ctr.args[0]),
                     "the gateway's arguments fit a container");
      if (nb < 0) return MGOP_ERR_CONFIG;
      memcpy(ctr.args, args, sizeof(args));
      ctr.nargs = 9;
      for (int i = 0; i < nb; i++) ctr.args[ctr.nargs++] = a_buf[i];
    }
    /* internal mTLS, and the public PostgreSQL certificate (certCommonName) */
    static _Thread_local struct mgop_tls_parts tls; /* 3 KiB */
    char vols[2 * sizeof(tls.volume) + 2], mounts[2 * sizeof(tls.mount) + 2];
    ctr.nargs += mgop_tls_component(r, MGOP_TLS_GATEWAY, &tls, ctr.args + ctr.nargs);
    {
      char pub_vol[MGOP_NAME_MAX + 160] = "", pub_mnt[200] = "";
      if (r->tls.cn[0]) {
        snprintf(pub_vol, sizeof(pub_vol), ",{\"name\":\"tls-certs\",\"secret\":{\"secretName\":\"%s-pg-tls\","
                 "\"defaultMode\":292}}", r->name);
        snprintf(pub_mnt, sizeof(pub_mnt), ",{\"name\":\"tls-certs\",\"mountPath\":\"/etc/multigateway/tls\","
                 "\"readOnly\":true}");
        ctr.args[ctr.nargs++] = "--pg-tls-cert-file=/etc/multigateway/tls/tls.crt";
        ctr.args[ctr.nargs++] = "--pg-tls-key-file=/etc/multigateway/tls/tls.key";
      }
      ctr.mounts = mgop_json_list2(mounts, sizeof(mounts), tls.mount, pub_mnt);
      mgop_json_list2(vols, sizeof(vols), tls.volume, pub_vol);
    }
    ctr.ports = "[{\"name\":\"http\",\"containerPort\":15100,\"protocol\":\"TCP\"},"
                "{\"name\":\"grpc\",\"containerPort\":15170,\"protocol\":\"TCP\"},"
                "{\"name\":\"postgres\",\"containerPort\":5432,\"protocol\":\"TCP\"},"
                "{\"name\":\"pg-replica\",\"containerPort\":5433,\"protocol\":\"TCP\"}]";
    ctr.ready_path = "/ready";
    ctr.live_path = "/live";
    ctr.probe_port = 15100;
    ctr.res_doc = &cfg;
    ctr.res_tok = mgop_json_key(&cfg, gwt, "resources");
    ctr.res_default = "{\"requests\":{\"cpu\":\"100m\",\"memory\":\"128Mi\"},\"limits\":{\"memory\":\"256Mi\"}}";
    memset(&p, 0, sizeof(p));
    p.component = "multigateway";
    p.ids = &ids;
    p.doc = &cfg;
    p.comp = gwt;
    p.tolerations = mgop_json_path(&cfg, 0, "multigatewayPlacement.tolerations");
    p.zone_key = zone_key;
    p.zone = zone;
    p.ctr = &ctr;
    p.nctr = 1;
    p.volumes = ctr.mounts ? vols : NULL; /* the two lists go together */
    char pod_ann[96];
    p.annotations = mgop_tls_pod_annotations(r, MGOP_TLS_GATEWAY, "", pod_ann, sizeof(pod_ann));
    if ((rc = mgop_build_deployment(r, K_CELL, cr, uid, gw, mgop_i64_or(&cfg, gwt, "replicas", 1), &p))) return rc;
  }
  return mgop_build_service(r, K_CELL, cr, uid, gws, "multigateway", &ids, 0,
                            "[{\"name\":\"http\",\"port\":15100,\"targetPort\":\"http\",\"protocol\":\"TCP\"},"
                            "{\"name\":\"grpc\",\"port\":15170,\"targetPort\":\"grpc\",\"protocol\":\"TCP\"},"
                            "{\"name\":\"postgres\",\"port\":5432,\"targetPort\":\"postgres\",\"protocol\":\"TCP\"}]");
}

/* The built-in database layout when spec.databases is empty. */
static const char mgop_default_databases[] =
    "[{\"name\":\"postgres\",\"default\":true,\"tablegroups\":[{\"name\":\"default\",\"default\":true,"
    "\"shards\":[{\"name\":\"0-inf\"}]}]}]";

/* Field-by-field PVC policy: the most specific level wins, then Retain. */
static const char *mgop_pvc_policy(struct mgop_rctx *r, const char *field, const struct mgop_json *const *docs,
                                   const int *toks, int n, char *buf, size_t cap) {
  char path[64];
  snprintf(path, sizeof(path), "pvcDeletionPolicy.%s", field);
  for (int i = 0; i < n; i++)
    if (toks[i] >= 0 && mgop_json_path_str(docs[i], toks[i], path, buf, cap) == MGOP_OK && buf[0]) return buf;
  return mgop_str_or(&r->root, r->spec, path, buf, cap, "Retain");
}

static const char mgop_pg_hba[] =
    "# TYPE  DATABASE  USER  ADDRESS  METHOD\n"
    "local   all       all            trust\n"
    "host    all       all   127.0.0.1/32  trust\n"
    "host    all       all   ::1/128       trust\n"
    "host    all       all   0.0.0.0/0     scram-sha-256\n"
    "host    all       all   ::/0          scram-sha-256\n"
    "host    replication all 0.0.0.0/0     scram-sha-256\n";

/* The postgres-exporter sidecar's custom queries: replication lag, WAL,
 * connections and database sizes (tests/integration/t_exporter_queries.sh
 * runs each one on a real primary and standby). */
static const char mgop_exporter_queries[] =
    "# postgres_exporter custom queries (--extend.query-path), written by\n"
    "# multigres-op into <Shard>-exporter-queries. Each key is a metric prefix;\n"
    "# each column listed under metrics becomes <prefix>_<column> (LABEL columns\n"
    "# become labels). Every query answers on a primary and on a standby. The\n"
    "# multigres_ prefix keeps them apart from the exporter's built-in pg_ series.\n"
    "multigres_replication:\n"
    "  master: true\n"
    "  query: >-\n"
    "    SELECT CASE WHEN pg_is_in_recovery() THEN 1 ELSE 0 END AS is_standby,\n"
    "    CASE WHEN NOT pg_is_in_recovery() OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0\n"
    "    ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END AS lag_seconds,\n"
    "    CASE WHEN pg_is_in_recovery()\n"
    "    THEN COALESCE(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), 0) ELSE 0 END AS replay_lag_bytes\n"
    "  metrics:\n"
    "    - is_standby:\n"
    "        usage: GAUGE\n"
    "        description: 1 on a standby (in recovery), 0 on the primary\n"
    "    - lag_seconds:\n"
    "        usage: GAUGE\n"
    "        description: Seconds since the last transaction replayed on a standby that has WAL left to replay (0 on the primary and when caught up)\n"
    "    - replay_lag_bytes:\n"
    "        usage: GAUGE\n"
    "        description: WAL received but not yet replayed on a standby, in bytes\n"
    "multigres_replication_standby:\n"
    "  master: true\n"
    "  query: >-\n"
    "    SELECT application_name, COALESCE(host(client_addr), 'local') AS client_addr, state,\n"
    "    COALESCE(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0) AS replay_lag_bytes,\n"
    "    COALESCE(EXTRACT(EPOCH FROM replay_lag), 0) AS replay_lag_seconds\n"
    "    FROM pg_stat_replication WHERE NOT pg_is_in_recovery()\n"
    "  metrics:\n"
    "    - application_name:\n"
    "        usage: LABEL\n"
    "        description: The standby's application_name\n"
    "    - client_addr:\n"
    "        usage: LABEL\n"
    "        description: The standby's address\n"
    "    - state:\n"
    "        usage: LABEL\n"
    "        description: The WAL sender's state\n"
    "    - replay_lag_bytes:\n"
    "        usage: GAUGE\n"
    "        description: WAL the primary has written that this standby has not replayed, in bytes\n"
    "    - replay_lag_seconds:\n"
    "        usage: GAUGE\n"
    "        description: The standby's replay lag as the primary measures it, in seconds\n"
    "multigres_wal:\n"
    "  master: true\n"
    "  query: >-\n"
    "    SELECT COALESCE(pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()\n"
    "    ELSE pg_current_wal_lsn() END, '0/0'), 0) AS position_bytes,\n"
    "    (SELECT count(*) FROM pg_ls_waldir()) AS segments,\n"
    "    (SELECT COALESCE(sum(size), 0) FROM pg_ls_waldir()) AS size_bytes\n"
    "  metrics:\n"
    "    - position_bytes:\n"
    "        usage: COUNTER\n"
    "        description: WAL position (written on the primary, replayed on a standby), in bytes\n"
    "    - segments:\n"
    "        usage: GAUGE\n"
    "        description: WAL segment files in pg_wal\n"
    "    - size_bytes:\n"
    "        usage: GAUGE\n"
    "        description: Size of pg_wal, in bytes\n"
    "multigres_connections:\n"
    "  master: true\n"
    "  query: >-\n"
    "    SELECT COALESCE(state, 'unknown') AS state, count(*) AS count\n"
    "    FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1\n"
    "  metrics:\n"
    "    - state:\n"
    "        usage: LABEL\n"
    "        description: The client backend's state\n"
    "    - count:\n"
    "        usage: GAUGE\n"
    "        description: Client connections in this state\n"
    "multigres_connections_limit:\n"
    "  master: true\n"
    "  query: >-\n"
    "    SELECT current_setting('max_connections')::int AS max,\n"
    "    current_setting('superuser_reserved_connections')::int AS superuser_reserved\n"
    "  metrics:\n"
    "    - max:\n"
    "        usage: GAUGE\n"
    "        description: max_connections\n"
    "    - superuser_reserved:\n"
    "        usage: GAUGE\n"
    "        description: superuser_reserved_connections\n"
    "multigres_database:\n"
    "  master: true\n"
    "  query: >-\n"
    "    SELECT d.datname, pg_database_size(d.datname) AS size_bytes,\n"
    "    (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = d.datname) AS backends\n"
    "    FROM pg_database d WHERE d.datallowconn AND NOT d.datistemplate\n"
    "  metrics:\n"
    "    - datname:\n"
    "        usage: LABEL\n"
    "        description: Database name\n"
    "    - size_bytes:\n"
    "        usage: GAUGE\n"
    "        description: Disk space the database uses, in bytes\n"
    "    - backends:\n"
    "        usage: GAUGE\n"
    "        description: Backends connected to the database\n";

/* The pool pods' metrics sidecar: postgres_exporter on :9187 (where the
 * scrape annotations point), reading its own pod's postgres over loopback as
 * the superuser, with the password file the pod mounts and the queries above.
 * env holds the environment (the superuser's name, JSON-escaped). */
static void mgop_exporter_ctr(struct mgop_ctr *c, const char *su_json, char *env, size_t cap) {
  if (!mgop_img_defaults.rev[0]) mgop_img_defaults_init(); /* main does it first; the unit tests may not */
  memset(c, 0, sizeof(*c));
  c->name = "postgres-exporter";
  c->image = mgop_img_defaults.exporter;
  c->args[0] = "--web.listen-address=:9187";
  c->args[1] = "--extend.query-path=/etc/postgres-exporter/queries.yml";
  c->nargs = 2;
  snprintf(env, cap, "[{\"name\":\"DATA_SOURCE_URI\",\"value\":\"localhost:5432/postgres?sslmode=disable&connect_timeout=5\"},"
           "{\"name\":\"DATA_SOURCE_USER\",\"value\":\"%s\"},"
           "{\"name\":\"DATA_SOURCE_PASS_FILE\",\"value\":\"/etc/postgres-password/password\"}]", su_json);
  c->env = env;
  c->ports = "[{\"name\":\"metrics\",\"containerPort\":9187,\"protocol\":\"TCP\"}]";
  c->res_tok = -1;
  c->res_default = "{\"requests\":{\"cpu\":\"10m\",\"memory\":\"32Mi\"},\"limits\":{\"memory\":\"128Mi\"}}";
  c->mounts = "[{\"name\":\"postgres-password\",\"mountPath\":\"/etc/postgres-password\",\"readOnly\":true},"
              "{\"name\":\"postgres-exporter-queries\",\"mountPath\":\"/etc/postgres-exporter\",\"readOnly\":true}]";
  c->security = "{\"runAsNonRoot\":true,\"runAsUser\":999,\"runAsGroup\":999}";
}

/* A pool's type: readWrite (or unset). Multigres has no read-only pooler:
 * a pooler is PRIMARY or REPLICA and every REPLICA serves reads already, so
 * readOnly is refused (the reference operator's schema now allows
 * readWrite only) rather than run as something it is not. */
#define MGOP_POOL_TYPE_WHY                                                                                 \
  "Multigres has no read-only pooler (a pooler is PRIMARY or REPLICA, and every replica of a readWrite pool " \
  "serves reads already); remove type or set it to readWrite"
/* The pool's type when it is refused (into type), else NULL: admission of
 * a ShardTemplate and the reconciler ask the same question. */
static const char *mgop_pool_type_refused(const struct mgop_json *pdoc, int pv, char *type, size_t cap) {
  type[0] = 0;
  mgop_json_path_str(pdoc, pv, "type", type, cap);
  return type[0] && strcmp(type, "readWrite") ? type : NULL;
}
static int mgop_pool_type(struct mgop_rctx *r, const struct mgop_json *pdoc, int pv, const char *what, const char *pool) {
  char type[16];
  if (!mgop_pool_type_refused(pdoc, pv, type, sizeof(type))) return MGOP_OK;
  mgop_stall(r, "InvalidSpec", "%s.pools.%s.type is \"%s\": " MGOP_POOL_TYPE_WHY, what, pool, type);
  return MGOP_ERR_CONFIG;
}

/* A pool's user and group: postgres's (999/999 unset, the Multigres images'
 * postgres user); multipooler's must be the same, since both write the data
 * directory and the socket directory. The securityContext goes to sec. */
static int mgop_pool_identity(struct mgop_rctx *r, const struct mgop_json *pdoc, int pv, const char *what,
                              const char *pool, char *sec, size_t cap) {
  long long u = 999, g = 999, mu, mg;
  mgop_json_i64(pdoc, mgop_json_path(pdoc, pv, "postgres.runAsUser"), &u);
  mgop_json_i64(pdoc, mgop_json_path(pdoc, pv, "postgres.runAsGroup"), &g);
  mu = u, mg = g;
  mgop_json_i64(pdoc, mgop_json_path(pdoc, pv, "multipooler.runAsUser"), &mu);
  mgop_json_i64(pdoc, mgop_json_path(pdoc, pv, "multipooler.runAsGroup"), &mg);
  if (mu != u || mg != g) {
    mgop_stall(r, "InvalidSpec", "%.200s.pools.%s.multipooler runs as %lld:%lld but postgres as %lld:%lld; both write "
               "the data directory and its socket, so set multipooler.runAsUser/runAsGroup equal to postgres's or "
               "leave them unset", what, pool, mu, mg, u, g);
    return MGOP_ERR_CONFIG;
  }
  snprintf(sec, cap, "{\"runAsNonRoot\":true,\"runAsUser\":%lld,\"runAsGroup\":%lld}", u, g);
  return MGOP_OK;
}

/* spec.postgresPasswordSecretRef: the user's Secret and key (returns 0),
 * or the operator's own per-shard Secret, key "password" (returns 1). The
 * CRD requires both fields and restricts them to name and key characters. */
static int mgop_password_ref(struct mgop_rctx *r, char *name, size_t ncap, char *key, size_t kcap) {
  int ref = mgop_json_key(&r->root, r->spec, "postgresPasswordSecretRef");
  snprintf(key, kcap, "password");
  if (ref < 0 || mgop_json_path_str(&r->root, ref, "name", name, ncap) || !name[0] ||
      mgop_json_path_str(&r->root, ref, "key", key, kcap) || !key[0]) {
    snprintf(key, kcap, "password");
    return 1;
  }
  return 0;
}

/* The user's password Secret must exist and hold the key before pods mount
 * it (else they wait in ContainerCreating with no word from us): once a
 * turn, and an error (retried with backoff: the operator does not watch
 * Secrets) that names the field and the fix. */
static int mgop_check_password_ref(struct mgop_rctx *r, const char *name, const char *key) {
  char path[400], body[16384];
  struct mgop_buf b;
  struct mgop_json j;
  int status, rc, found;
  if (r->password_ref_checked) return MGOP_OK;
  snprintf(path, sizeof(path), "/api/v1/namespaces/%s/secrets/%s", r->ns, name);
  mgop_buf_init(&b, body, sizeof(body));
  rc = mgop_kube_get(mgop_api_ptr, path, &b, &status);
  if (rc == MGOP_ERR_NOTFOUND)
    return mgop_seterr(MGOP_ERR_CONFIG, "spec.postgresPasswordSecretRef names Secret %s, which does not exist in "
                       "namespace %s: create it with the superuser password under the key %s", name, r->ns, key);
  if (rc) return rc;
  rc = mgop_parse_arena(r->arena, b.p, b.len, &j);
  found = !rc && mgop_json_key(&j, mgop_json_key(&j, 0, "data"), key) >= 0; /* the tokens point into body */
  memset(body, 0, sizeof(body)); /* the password does not stay on the stack */
  if (rc) return rc;
  if (!found)
    return mgop_seterr(MGOP_ERR_CONFIG, "spec.postgresPasswordSecretRef: Secret %s has no key %s; add the superuser "
                       "password under that key or set postgresPasswordSecretRef.key to the key that holds it", name, key);
  r->password_ref_checked = 1;
  return MGOP_OK;
}

/* ---- postgresInitSecretsRef -------------------------------------------------
 * Day-0 settings pgctld applies once, when it initialises a data directory:
 * a JSON document {"roles": {role: password or SCRAM verifier},
 * "database_settings": {database: {parameter: value}}} in one key of the
 * user's Secret (default init-secrets.json). The key is mounted into the
 * pgctld container only, and named by POSTGRES_INIT_SECRETS_FILE (the
 * reference operator's wiring; pgctld's --pg-init-secrets-file). Live, the
 * Secret is read once a turn and its shape checked, so a typo is reported
 * by the operator, not found by pgctld failing its first init; the
 * document is not hashed onto the pods (pgctld reads it only at init). */
#define MGOP_INIT_SECRETS_FILE "init-secrets.json"
#define MGOP_INIT_SECRETS_DIR "/etc/postgres-init-secrets"
#define MGOP_INIT_SECRETS_MAX (64 * 1024) /* the document; a Secret may hold 1 MiB, pgctld's is small */

static void mgop_init_secrets_of(struct mgop_rctx *r) {
  struct mgop_init_secrets *in = &r->init;
  int ref = mgop_json_key(&r->root, r->spec, "postgresInitSecretsRef");
  memset(in, 0, sizeof(*in));
  if (mgop_json_path_str(&r->root, ref, "name", in->name, sizeof(in->name)) || !in->name[0]) {
    in->name[0] = 0;
    return;
  }
  if (mgop_json_path_str(&r->root, ref, "key", in->key, sizeof(in->key)) || !in->key[0])
    snprintf(in->key, sizeof(in->key), "%s", MGOP_INIT_SECRETS_FILE);
  snprintf(in->volume, sizeof(in->volume), ",{\"name\":\"postgres-init-secrets\",\"secret\":{\"secretName\":\"%s\","
           "\"defaultMode\":292,\"items\":[{\"key\":\"%s\",\"path\":\"" MGOP_INIT_SECRETS_FILE "\"}]}}", in->name, in->key);
  snprintf(in->mount, sizeof(in->mount), ",{\"name\":\"postgres-init-secrets\",\"mountPath\":\"" MGOP_INIT_SECRETS_DIR
           "\",\"readOnly\":true}");
  snprintf(in->env, sizeof(in->env), ",{\"name\":\"POSTGRES_INIT_SECRETS_FILE\",\"value\":\"" MGOP_INIT_SECRETS_DIR
           "/" MGOP_INIT_SECRETS_FILE "\"}");
}

static int mgop_pg_param_check(const char *key, char *msg, size_t cap); /* postgresConfig, below */

/* The document's shape, as pgctld reads it; unknown top-level keys are
 * ignored, as pgctld ignores them. su: the superuser, whose password comes
 * from the password Secret and must not be set here. */
static int mgop_init_secrets_valid(const struct mgop_json *j, const char *su, char *why, size_t cap) {
  int roles = mgop_json_key(j, 0, "roles"), dbs = mgop_json_key(j, 0, "database_settings");
  if (!mgop_json_is(j, 0, JSMN_OBJECT)) return snprintf(why, cap, "the document is not a JSON object"), 0;
  if (roles >= 0 && !mgop_json_is(j, roles, JSMN_OBJECT)) return snprintf(why, cap, "\"roles\" is not an object"), 0;
  for (int i = 0, k = roles + 1; roles >= 0 && i < j->tok[roles].size; i++, k = mgop_json_next(j, k + 1)) {
    char role[64];
    if (mgop_json_str(j, k, role, sizeof(role)) || !role[0])
      return snprintf(why, cap, "roles: a role name is empty or longer than 63 characters"), 0;
    if (!mgop_json_is(j, k + 1, JSMN_STRING) || j->tok[k + 1].end == j->tok[k + 1].start)
      return snprintf(why, cap, "roles.%s is not a non-empty string (a password or a SCRAM-SHA-256 verifier)", role), 0;
    if (!strcmp(role, su))
      return snprintf(why, cap, "roles.%s is the superuser, whose password comes from the password Secret "
                      "(postgresPasswordSecretRef); remove it", role), 0;
  }
  if (dbs >= 0 && !mgop_json_is(j, dbs, JSMN_OBJECT)) return snprintf(why, cap, "\"database_settings\" is not an object"), 0;
  for (int i = 0, k = dbs + 1; dbs >= 0 && i < j->tok[dbs].size; i++, k = mgop_json_next(j, k + 1)) {
    char db[64];
    if (mgop_json_str(j, k, db, sizeof(db)) || !db[0])
      return snprintf(why, cap, "database_settings: a database name is empty or longer than 63 characters"), 0;
    if (!mgop_json_is(j, k + 1, JSMN_OBJECT)) return snprintf(why, cap, "database_settings.%s is not an object", db), 0;
    for (int p = 0, q = k + 2; p < j->tok[k + 1].size; p++, q = mgop_json_next(j, q + 1)) {
      char name[80], msg[300];
      if (mgop_json_str(j, q, name, sizeof(name)) || mgop_pg_param_check(name, msg, sizeof(msg)))
        return snprintf(why, cap, "database_settings.%s: %.200s", db, name[0] ? msg : "a key is not a string"), 0;
      if (!mgop_json_is(j, q + 1, JSMN_STRING))
        return snprintf(why, cap, "database_settings.%s.%s is not a string", db, name), 0;
    }
  }
  return 1;
}

/* Live, once a turn: the Secret exists, holds the key, and the key holds a
 * document pgctld will take. An error the turn retries (Secrets are not
 * watched), naming the field, the Secret and the fix. */
static int mgop_check_init_secrets(struct mgop_rctx *r, const char *su) {
  static char body[MGOP_INIT_SECRETS_MAX * 2];
  static unsigned char doc[MGOP_INIT_SECRETS_MAX];
  struct mgop_init_secrets *in = &r->init;
  char path[400], why[300] = "";
  struct mgop_buf b;
  struct mgop_json j, d;
  size_t n = 0;
  int status, rc, data, v, ok = 0;
  if (r->render || !in->name[0] || in->checked) return MGOP_OK;
  snprintf(path, sizeof(path), "/api/v1/namespaces/%s/secrets/%s", r->ns, in->name);
  mgop_buf_init(&b, body, sizeof(body));
  rc = mgop_kube_get(mgop_api_ptr, path, &b, &status);
  if (rc == MGOP_ERR_NOTFOUND)
    return mgop_seterr(MGOP_ERR_CONFIG, "spec.postgresInitSecretsRef names Secret %s, which does not exist in namespace "
                       "%s: create it with the day-0 settings (JSON) under the key %s", in->name, r->ns, in->key);
  if (rc == MGOP_ERR_TOOBIG || b.overflow)
    snprintf(why, sizeof(why), "it is larger than %d KiB", MGOP_INIT_SECRETS_MAX / 1024);
  else if (rc) return rc;
  else if ((rc = mgop_parse_arena(r->arena, b.p, b.len, &j))) snprintf(why, sizeof(why), "it cannot be read: %.200s", mgop_errmsg());
  else if ((data = mgop_json_key(&j, 0, "data")), (v = mgop_json_key(&j, data, in->key)) < 0)
    snprintf(why, sizeof(why), "it has no key %.200s", in->key);
  else if (mgop_b64_decode(j.js + j.tok[v].start, (size_t)(j.tok[v].end - j.tok[v].start), doc, sizeof(doc), &n))
    snprintf(why, sizeof(why), "key %.200s is not base64 of at most %d KiB", in->key, MGOP_INIT_SECRETS_MAX / 1024);
  else if (mgop_parse_arena(r->arena, (const char *)doc, n, &d))
    snprintf(why, sizeof(why), "key %.100s is not JSON: %.150s", in->key, mgop_errmsg());
  else ok = mgop_init_secrets_valid(&d, su, why, sizeof(why));
  memset(body, 0, sizeof(body)); /* passwords do not stay in memory */
  memset(doc, 0, sizeof(doc));
  if (!ok)
    return mgop_seterr(MGOP_ERR_CONFIG, "spec.postgresInitSecretsRef: Secret %s: %s (pgctld would refuse it at the "
                       "first start of each new pool pod)", in->name, why);
  in->checked = 1;
  return MGOP_OK;
}

/* The superuser password Secret: created once with a random password and
 * never written again (never applied, so an edit or rotation by the user
 * sticks; never rendered, so no password reaches a pull request). */
static int mgop_ensure_password_secret(struct mgop_rctx *r, const char *name, const char *shard_cr,
                                       const char *owner_uid, const struct mgop_ids *ids, const char *hba_cm) {
  uint64_t key = mgop_fp_key("Secret", r->ns, name);
  struct mgop_fp *f = mgop_fp_find(key), *cm = mgop_fp_find(mgop_fp_key("ConfigMap", r->ns, hba_cm));
  unsigned char raw[24];
  char pw[64], b64[96], path[512], body[4096];
  size_t n;
  struct mgop_build o;
  struct mgop_buf out;
  int rc, status;
  uint64_t shard_uid = mgop_uid_hash(owner_uid);
  /* made for this incarnation of the Shard (a re-created Shard lost it to
   * the garbage collector) */
  if (f && (f->flags & MGOP_FP_EXISTS) && f->owner_uid == shard_uid) return MGOP_OK;
  /* The shard's pg_hba ConfigMap is applied only after this Secret was made
   * (same turn, later phase): when it exists for this Shard, so does the
   * Secret. Secrets are never read, so after a restart this is how we know
   * without a POST. */
  if (cm && (cm->flags & MGOP_FP_EXISTS) && cm->kind && cm->owner_uid == shard_uid) {
    if ((f = mgop_fp_upsert(key))) f->flags |= MGOP_FP_EXISTS, f->owner_uid = shard_uid;
    return MGOP_OK;
  }
  if (mbedtls_ctr_drbg_random(&mgop_drbg, raw, sizeof(raw)))
    return mgop_seterr(MGOP_ERR_TLS, "no randomness for the postgres password");
  mbedtls_base64_encode((unsigned char *)pw, sizeof(pw), &n, raw, sizeof(raw));
  for (size_t i = 0; i < n; i++) if (pw[i] == '+' || pw[i] == '/') pw[i] = 'x'; /* shell- and URL-safe */
  mbedtls_base64_encode((unsigned char *)b64, sizeof(b64), &n, (const unsigned char *)pw, strlen(pw));
  b64[n] = 0;
  if ((rc = mgop_build_begin(r, &o, K_CM, name))) return rc; /* a builder for the bytes only */
  o.b.len = 0;
  mgop_jw_init(&o.w, &o.b);
  mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, "apiVersion"); mgop_jw_str(&o.w, "v1");
  mgop_jw_key(&o.w, "kind"); mgop_jw_str(&o.w, "Secret");
  mgop_build_meta_ids(&o, "postgres-password", ids, K_SHARD, shard_cr, owner_uid);
  mgop_jw_key(&o.w, "type"); mgop_jw_str(&o.w, "Opaque");
  mgop_jw_key(&o.w, "data"); mgop_jw_obj(&o.w); mgop_jw_key(&o.w, "password"); mgop_jw_str(&o.w, b64); mgop_jw_obj_end(&o.w);
  mgop_jw_obj_end(&o.w);
  memset(raw, 0, sizeof(raw));
  memset(pw, 0, sizeof(pw));
  if (o.b.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "Secret %s too large", name);
  snprintf(path, sizeof(path), "/api/v1/namespaces/%s/secrets?fieldManager=" MGOP_MANAGER, r->ns);
  mgop_buf_init(&out, body, sizeof(body));
  rc = mgop_kube_request(mgop_api_ptr, "POST", path, "application/json", o.b.p, o.b.len, &out, &status);
  memset(o.b.p, 0, o.b.len);
  if (rc) return rc;
  if (status != 201 && status != 409) {
    char msg[300];
    mgop_kube_status_message(out.p, out.len, msg, sizeof(msg));
    return mgop_seterr(MGOP_ERR_STATUS, "create Secret %s: HTTP %d: %s", name, status, msg);
  }
  if ((f = mgop_fp_upsert(key))) f->flags |= MGOP_FP_EXISTS, f->owner_uid = shard_uid;
  return MGOP_OK;
}

/* ---- Backups (pgBackRest) -------------------------------------------------
 * A shard's backup settings are resolved field by field along cluster >
 * database > table group > shard (spec.backup at each level, deep-merged),
 * then the built-in default: filesystem backups in /backups on a 10Gi
 * ReadWriteOnce PVC. Filesystem: one PVC per shard, named
 * backup-data-<cluster>-<db>-<tablegroup>-<shard>, mounted by every pool pod
 * of the shard in every cell (so all of them see the same repository; that
 * needs a ReadWriteMany class once the pods are on more than one node, and
 * admission warns). S3: no volume; the region and credentials reach the pods
 * as environment, the bucket, endpoint and key prefix travel in the Database
 * topology record (struct mgop_backup_loc is what that record is written
 * from). pgBackRest's TLS: a CA and a peer certificate per shard from the
 * operator's PKI (or the user's Secret), projected at /certs/pgbackrest. */
#define MGOP_BACKUP_PATH "/backups"
#define MGOP_BACKUP_SIZE "10Gi"
#define MGOP_PGBR_CERT_DIR "/certs/pgbackrest"
#define MGOP_PGBR_PORT 8432
#define MGOP_PGBR_CIPHER_DIR "/secrets/pgbackrest-cipher"
#define MGOP_PGBR_CN "pgbackrest"   /* the name the peers verify (Multigres's own setups use it) */

enum mgop_backup_type { MGOP_BACKUP_FILESYSTEM = 1, MGOP_BACKUP_S3 = 2 };

/* One shard's resolved backup location: what its pool pods mount and what
 * the Database topology record carries (BackupLocation). */
struct mgop_backup_loc {
  int type;                          /* enum mgop_backup_type              */
  char from[16];                     /* level that chose the type: cluster,
                                        database, tablegroup, shard, built-in */
  /* filesystem */
  char path[513];                    /* repository directory in the pods   */
  char pvc[64];                      /* the shard's claim                  */
  char size[MGOP_QUANTITY_BUF], klass[64];
  char access[4][32];
  int naccess, rwx;                  /* rwx: ReadWriteMany is among them   */
  /* s3 */
  char bucket[64], region[64], endpoint[2049], key_prefix[1025];
  int env_credentials;
  char credentials_secret[254], service_account[254];
  /* both */
  char tls_secret[254];              /* ca.crt, tls.crt, tls.key           */
  int tls_own;                       /* 1: the operator issues tls_secret  */
  char encryption_secret[254];       /* keys.json; "" without encryption   */
  char schedule[101];                /* cron, UTC; "" without a schedule   */
  struct mgop_cron cron;
  int jitter_s, retention;           /* retention 0: the operator expires nothing */
};

/* Wall-clock seconds as the backup code reads them: one function, so a
 * test can set the time (mgop_fake_now_s != 0). */
static long long mgop_fake_now_s;
static const char *mgop_fake_clock_file; /* MGOP_FAKE_CLOCK_FILE: tests set the time (unix seconds) */
static long long mgop_wall_s(void) {
  static int looked;
  if (!looked) {
    looked = 1;
    mgop_fake_clock_file = getenv("MGOP_FAKE_CLOCK_FILE");
  }
  if (mgop_fake_clock_file) {
    char buf[32] = "";
    FILE *f = fopen(mgop_fake_clock_file, "r");
    if (f) {
      if (fgets(buf, sizeof(buf), f)) mgop_fake_now_s = atoll(buf);
      fclose(f);
    }
  }
  return mgop_fake_now_s ? mgop_fake_now_s : (long long)time(NULL);
}

/* Lifetimes of the pgBackRest certificates (flags). */
static long long mgop_pgbr_cert_validity_s = 365LL * 24 * 3600, mgop_pgbr_ca_validity_s = 10LL * 365 * 24 * 3600;

/* path's string into buf, else fallback. */
static void mgop_str_into(const struct mgop_json *j, int t, const char *path, char *buf, size_t cap,
                          const char *fallback) {
  if (t < 0 || mgop_json_path_str(j, t, path, buf, cap) != MGOP_OK || !buf[0]) snprintf(buf, cap, "%s", fallback);
}

/* Deep-merges spec.backup of each level present into out (built-in when
 * none). S3 credentials are one choice, not three fields: they come whole
 * from the most specific level that sets any of them (*cred_doc, *cred). */
static int mgop_backup_merge(struct mgop_rctx *r, const struct mgop_json *d, const int *toks, struct mgop_json *out,
                             char *from, size_t fcap, const struct mgop_json **cred_doc, int *cred) {
  static const char *const level[4] = {"cluster", "database", "tablegroup", "shard"};
  static const char builtin[] = "{\"type\":\"filesystem\",\"filesystem\":{}}";
  int rc, any = 0;
  if ((rc = mgop_parse_arena(r->arena, "{}", 2, out))) return rc;
  for (int i = 0; i < 4; i++) {
    const struct mgop_json *doc = i ? d : &r->root;
    int b = toks[i] >= 0 ? mgop_json_key(doc, toks[i], "backup") : -1;
    if (!mgop_json_is(doc, b, JSMN_OBJECT)) continue;
    if ((rc = mgop_merge_to(r, out, 0, doc, b, out))) return rc;
    if (mgop_json_key(doc, b, "type") >= 0) snprintf(from, fcap, "%s", level[i]);
    {
      int s3 = mgop_json_key(doc, b, "s3");
      if (mgop_json_key(doc, s3, "credentialsSecret") >= 0 || mgop_json_key(doc, s3, "serviceAccountName") >= 0 ||
          mgop_json_key(doc, s3, "useEnvCredentials") >= 0)
        *cred_doc = doc, *cred = s3;
    }
    any = 1;
  }
  if (!any) {
    snprintf(from, fcap, "built-in");
    return mgop_parse_arena(r->arena, builtin, sizeof(builtin) - 1, out);
  }
  return MGOP_OK;
}

/* The resolved location of one shard; parts = {cluster, db, tg, shard},
 * shard_cr names its Shard (and so its certificate Secrets). toks are the
 * cluster spec, database, table group and shard tokens (d for the last three). */
static int mgop_backup_resolve(struct mgop_rctx *r, const struct mgop_json *d, const int *toks,
                               const char *const *parts, const char *shard_cr, struct mgop_backup_loc *b) {
  struct mgop_json m;
  const struct mgop_json *cdoc = NULL;
  char type[16] = "";
  int rc, fs, s3, am, cred = -1;
  memset(b, 0, sizeof(*b));
  if ((rc = mgop_backup_merge(r, d, toks, &m, b->from, sizeof(b->from), &cdoc, &cred))) return rc;
  mgop_json_path_str(&m, 0, "type", type, sizeof(type));
  if (strcmp(type, "filesystem") && strcmp(type, "s3")) {
    mgop_stall(r, "InvalidSpec", "%s.backup.type is \"%s\"; use filesystem or s3", r->where, type);
    return MGOP_ERR_CONFIG;
  }
  b->type = type[0] == 's' ? MGOP_BACKUP_S3 : MGOP_BACKUP_FILESYSTEM;
  fs = mgop_json_key(&m, 0, "filesystem");
  s3 = mgop_json_key(&m, 0, "s3");
  if (b->type == MGOP_BACKUP_FILESYSTEM) {
    const char *pvc_parts[] = {"backup-data", parts[0], parts[1], parts[2], parts[3]};
    mgop_str_into(&m, fs, "path", b->path, sizeof(b->path), MGOP_BACKUP_PATH);
    mgop_str_into(&m, fs, "storage.size", b->size, sizeof(b->size), MGOP_BACKUP_SIZE);
    mgop_str_into(&m, fs, "storage.class", b->klass, sizeof(b->klass), "");
    am = mgop_json_path(&m, fs, "storage.accessModes");
    for (int i = 0; mgop_json_is(&m, am, JSMN_ARRAY) && i < m.tok[am].size && b->naccess < 4; i++)
      if (mgop_json_str(&m, mgop_json_at(&m, am, i), b->access[b->naccess], sizeof(b->access[0])) == MGOP_OK)
        b->rwx |= !strcmp(b->access[b->naccess++], "ReadWriteMany");
    if (!b->naccess) snprintf(b->access[b->naccess++], sizeof(b->access[0]), "ReadWriteOnce");
    mgop_name(b->pvc, sizeof(b->pvc), MGOP_LIMIT_SERVICE, 1, pvc_parts, 5);
  } else {
    if (!mgop_json_is(&m, s3, JSMN_OBJECT)) {
      mgop_stall(r, "InvalidSpec", "%s: backup.type is s3 but no level sets backup.s3; set bucket and region", r->where);
      return MGOP_ERR_CONFIG;
    }
    mgop_str_into(&m, s3, "bucket", b->bucket, sizeof(b->bucket), "");
    mgop_str_into(&m, s3, "region", b->region, sizeof(b->region), "");
    mgop_str_into(&m, s3, "endpoint", b->endpoint, sizeof(b->endpoint), "");
    mgop_str_into(&m, s3, "keyPrefix", b->key_prefix, sizeof(b->key_prefix), "");
    if (cdoc) {
      mgop_str_into(cdoc, cred, "credentialsSecret", b->credentials_secret, sizeof(b->credentials_secret), "");
      mgop_str_into(cdoc, cred, "serviceAccountName", b->service_account, sizeof(b->service_account), "");
      mgop_json_bool(cdoc, mgop_json_key(cdoc, cred, "useEnvCredentials"), &b->env_credentials);
    }
    if (!b->bucket[0] || !b->region[0]) {
      mgop_stall(r, "InvalidSpec", "%s: backup.s3 needs bucket and region (merged over every level)", r->where);
      return MGOP_ERR_CONFIG;
    }
    if (b->service_account[0] && (b->credentials_secret[0] || b->env_credentials)) {
      mgop_stall(r, "InvalidSpec", "%s: backup.s3 sets serviceAccountName together with %s; keep one way to get "
                 "credentials", r->where,
                 b->credentials_secret[0] ? "credentialsSecret" : "useEnvCredentials");
      return MGOP_ERR_CONFIG;
    }
  }
  mgop_str_into(&m, 0, "pgbackrestTLS.secretName", b->tls_secret, sizeof(b->tls_secret), "");
  if (!b->tls_secret[0]) {
    snprintf(b->tls_secret, sizeof(b->tls_secret), "%.200s-pgbackrest-tls", shard_cr);
    b->tls_own = 1;
  }
  mgop_str_into(&m, 0, "encryption.secretName", b->encryption_secret, sizeof(b->encryption_secret), "");
  mgop_str_into(&m, 0, "schedule", b->schedule, sizeof(b->schedule), "");
  if (b->schedule[0] && mgop_cron_parse(b->schedule, &b->cron)) {
    mgop_stall(r, "InvalidSpec", "%s: backup.schedule \"%s\": %s", r->where, b->schedule, mgop_errmsg());
    return MGOP_ERR_CONFIG;
  }
  {
    long long v = 0;
    if (mgop_json_i64(&m, mgop_json_key(&m, 0, "scheduleJitterSeconds"), &v) == MGOP_OK && v > 0 && v <= 3600)
      b->jitter_s = (int)v;
    v = 0;
    if (mgop_json_i64(&m, mgop_json_key(&m, 0, "retention"), &v) == MGOP_OK && v > 0 && v <= 1000) b->retention = (int)v;
  }
  return MGOP_OK;
}

/* The location one database's topology record carries (cluster and
 * database levels only): what the topology writer publishes. */
static int mgop_backup_resolve_database(struct mgop_rctx *r, const struct mgop_json *d, int db_tok,
                                        struct mgop_backup_loc *b) {
  const int toks[] = {r->spec, db_tok, -1, -1};
  const char *parts[] = {r->name, "", "", ""};
  return mgop_backup_resolve(r, d, toks, parts, "", b);
}

/* What differs between a shard's location and its database's record, or
 * NULL. Multigres keeps one backup location per database, so a table group
 * or shard may change the volume, credentials, TLS and encryption key, but
 * not where the repository is. */
static const char *mgop_backup_location_diff(const struct mgop_backup_loc *s, const struct mgop_backup_loc *db) {
  if (s->type != db->type) return "type";
  if (s->type == MGOP_BACKUP_FILESYSTEM) return strcmp(s->path, db->path) ? "filesystem.path" : NULL;
  if (strcmp(s->bucket, db->bucket)) return "s3.bucket";
  if (strcmp(s->region, db->region)) return "s3.region";
  if (strcmp(s->endpoint, db->endpoint)) return "s3.endpoint";
  if (strcmp(s->key_prefix, db->key_prefix)) return "s3.keyPrefix";
  if (!s->encryption_secret[0] != !db->encryption_secret[0]) return "encryption";
  return NULL;
}

/* The resolved settings as the Shard's spec.backup (the CRD's shape). */
static void mgop_backup_write(struct mgop_jw *w, const struct mgop_backup_loc *b) {
  mgop_jw_obj(w);
  mgop_jw_key(w, "type"); mgop_jw_str(w, b->type == MGOP_BACKUP_S3 ? "s3" : "filesystem");
  if (b->type == MGOP_BACKUP_FILESYSTEM) {
    mgop_jw_key(w, "filesystem"); mgop_jw_obj(w);
    mgop_jw_key(w, "path"); mgop_jw_str(w, b->path);
    mgop_jw_key(w, "storage"); mgop_jw_obj(w);
    mgop_jw_key(w, "size"); mgop_jw_str(w, b->size);
    if (b->klass[0]) { mgop_jw_key(w, "class"); mgop_jw_str(w, b->klass); }
    mgop_jw_key(w, "accessModes"); mgop_jw_arr(w);
    for (int i = 0; i < b->naccess; i++) mgop_jw_str(w, b->access[i]);
    mgop_jw_arr_end(w);
    mgop_jw_obj_end(w);
    mgop_jw_obj_end(w);
  } else {
    mgop_jw_key(w, "s3"); mgop_jw_obj(w);
    mgop_jw_key(w, "bucket"); mgop_jw_str(w, b->bucket);
    mgop_jw_key(w, "region"); mgop_jw_str(w, b->region);
    if (b->endpoint[0]) { mgop_jw_key(w, "endpoint"); mgop_jw_str(w, b->endpoint); }
    if (b->key_prefix[0]) { mgop_jw_key(w, "keyPrefix"); mgop_jw_str(w, b->key_prefix); }
    if (b->env_credentials) { mgop_jw_key(w, "useEnvCredentials"); mgop_jw_bool(w, 1); }
    if (b->credentials_secret[0]) { mgop_jw_key(w, "credentialsSecret"); mgop_jw_str(w, b->credentials_secret); }
    if (b->service_account[0]) { mgop_jw_key(w, "serviceAccountName"); mgop_jw_str(w, b->service_account); }
    mgop_jw_obj_end(w);
  }
  mgop_jw_key(w, "pgbackrestTLS"); mgop_jw_obj(w);
  mgop_jw_key(w, "secretName"); mgop_jw_str(w, b->tls_secret);
  mgop_jw_obj_end(w);
  if (b->schedule[0]) { mgop_jw_key(w, "schedule"); mgop_jw_str(w, b->schedule); }
  if (b->jitter_s) { mgop_jw_key(w, "scheduleJitterSeconds"); mgop_jw_i64(w, b->jitter_s); }
  if (b->retention) { mgop_jw_key(w, "retention"); mgop_jw_i64(w, b->retention); }
  if (b->encryption_secret[0]) {
    mgop_jw_key(w, "encryption"); mgop_jw_obj(w);
    mgop_jw_key(w, "secretName"); mgop_jw_str(w, b->encryption_secret);
    mgop_jw_obj_end(w);
  }
  mgop_jw_obj_end(w);
}

/* What the pool pods get: extra args, env, mounts and volumes (JSON
 * fragments, each starting with ',' so they append to the fixed lists). */
struct mgop_backup_pod {
  char pgctld_mounts[512], pooler_env[1024], pooler_mounts[768], volumes[1536];
  char a_cert[96], a_port[48], a_crt[96], a_key[96], a_ca[96], a_cipher[128];
};

static void mgop_backup_pod_parts(const struct mgop_backup_loc *b, struct mgop_backup_pod *p) {
  struct mgop_buf v, pm, m;
  char repo_mount[700] = "";
  memset(p, 0, sizeof(*p));
  snprintf(p->a_cert, sizeof(p->a_cert), "--pgbackrest-cert-dir=" MGOP_PGBR_CERT_DIR);
  snprintf(p->a_port, sizeof(p->a_port), "--pgbackrest-port=%d", MGOP_PGBR_PORT);
  snprintf(p->a_crt, sizeof(p->a_crt), "--pgbackrest-cert-file=" MGOP_PGBR_CERT_DIR "/pgbackrest.crt");
  snprintf(p->a_key, sizeof(p->a_key), "--pgbackrest-key-file=" MGOP_PGBR_CERT_DIR "/pgbackrest.key");
  snprintf(p->a_ca, sizeof(p->a_ca), "--pgbackrest-ca-file=" MGOP_PGBR_CERT_DIR "/ca.crt");
  if (b->encryption_secret[0])
    snprintf(p->a_cipher, sizeof(p->a_cipher), "--pgbackrest-cipher-key-file=" MGOP_PGBR_CIPHER_DIR "/keys.json");
  if (b->type == MGOP_BACKUP_FILESYSTEM)
    snprintf(repo_mount, sizeof(repo_mount), ",{\"name\":\"backup-data\",\"mountPath\":\"%s\"}", b->path);
  /* pgctld runs the pgBackRest TLS server: the repository and the certificate */
  mgop_buf_init(&m, p->pgctld_mounts, sizeof(p->pgctld_mounts));
  mgop_buf_printf(&m, "%s,{\"name\":\"pgbackrest-certs\",\"mountPath\":\"" MGOP_PGBR_CERT_DIR "\",\"readOnly\":true}",
                  repo_mount);
  mgop_buf_cstr(&m);
  mgop_buf_init(&pm, p->pooler_mounts, sizeof(p->pooler_mounts));
  mgop_buf_printf(&pm, "%s,{\"name\":\"pgbackrest-certs\",\"mountPath\":\"" MGOP_PGBR_CERT_DIR "\",\"readOnly\":true}",
                  repo_mount);
  if (b->encryption_secret[0])
    mgop_buf_puts(&pm, ",{\"name\":\"pgbackrest-cipher\",\"mountPath\":\"" MGOP_PGBR_CIPHER_DIR "\",\"readOnly\":true}");
  mgop_buf_cstr(&pm);
  { /* S3: region and credentials as the AWS SDK environment */
    struct mgop_buf e;
    mgop_buf_init(&e, p->pooler_env, sizeof(p->pooler_env));
    if (b->type == MGOP_BACKUP_S3) {
      mgop_buf_printf(&e, ",{\"name\":\"AWS_REGION\",\"value\":\"%s\"}", b->region);
      if (b->credentials_secret[0])
        mgop_buf_printf(&e, ",{\"name\":\"AWS_ACCESS_KEY_ID\",\"valueFrom\":{\"secretKeyRef\":{\"name\":\"%s\","
                        "\"key\":\"AWS_ACCESS_KEY_ID\"}}},{\"name\":\"AWS_SECRET_ACCESS_KEY\",\"valueFrom\":"
                        "{\"secretKeyRef\":{\"name\":\"%s\",\"key\":\"AWS_SECRET_ACCESS_KEY\"}}}",
                        b->credentials_secret, b->credentials_secret);
    }
    mgop_buf_cstr(&e);
  }
  mgop_buf_init(&v, p->volumes, sizeof(p->volumes));
  if (b->type == MGOP_BACKUP_FILESYSTEM)
    mgop_buf_printf(&v, ",{\"name\":\"backup-data\",\"persistentVolumeClaim\":{\"claimName\":\"%s\"}}", b->pvc);
  /* cert-manager's layout (ca.crt, tls.crt, tls.key) under the names
   * pgctld and multipooler read; 0444 like the password Secret: the
   * containers run as uid 999 without an fsGroup */
  mgop_buf_printf(&v, ",{\"name\":\"pgbackrest-certs\",\"projected\":{\"defaultMode\":292,\"sources\":[{\"secret\":"
                  "{\"name\":\"%s\",\"items\":[{\"key\":\"ca.crt\",\"path\":\"ca.crt\"},{\"key\":\"tls.crt\",\"path\":"
                  "\"pgbackrest.crt\"},{\"key\":\"tls.key\",\"path\":\"pgbackrest.key\"}]}}]}}", b->tls_secret);
  if (b->encryption_secret[0])
    mgop_buf_printf(&v, ",{\"name\":\"pgbackrest-cipher\",\"secret\":{\"secretName\":\"%s\",\"defaultMode\":292,"
                    "\"items\":[{\"key\":\"keys.json\",\"path\":\"keys.json\"}]}}", b->encryption_secret);
  mgop_buf_cstr(&v);
}

/* The cells the pods of a shard run in (pools' cells, else every cell). */
static int mgop_shard_cell_count(struct mgop_rctx *r, const struct mgop_json *pdoc, int pools) {
  char seen[MGOP_CRD_CELLS_MAX][MGOP_CRD_CELL_NAME_MAX + 1];
  int n = 0, all = mgop_json_key(&r->root, r->spec, "cells");
  int nall = mgop_json_is(&r->root, all, JSMN_ARRAY) ? r->root.tok[all].size : 0;
  for (int pi = 0, pt = pools + 1; pi < pdoc->tok[pools].size; pi++, pt = mgop_json_next(pdoc, pt + 1)) {
    int pc = mgop_json_key(pdoc, pt + 1, "cells");
    if (!mgop_json_is(pdoc, pc, JSMN_ARRAY)) return nall;
    for (int i = 0; i < pdoc->tok[pc].size; i++) {
      char c[MGOP_CRD_CELL_NAME_MAX + 1];
      int dup = 0;
      if (mgop_json_str(pdoc, mgop_json_at(pdoc, pc, i), c, sizeof(c))) continue;
      for (int k = 0; k < n; k++) dup |= !strcmp(seen[k], c);
      if (!dup && n < MGOP_CRD_CELLS_MAX) snprintf(seen[n++], sizeof(seen[0]), "%s", c);
    }
  }
  return n;
}

/* GET one namespaced object by kind path ("persistentvolumeclaims",
 * "secrets"); MGOP_ERR_NOTFOUND when absent. */
static int mgop_core_get(struct mgop_rctx *r, const char *plural, const char *name, struct mgop_buf *out,
                         struct mgop_json *j, jsmntok_t *tok, int ntok) {
  char path[512];
  int status = 0, rc;
  snprintf(path, sizeof(path), "/api/v1/namespaces/%s/%s/%s", r->ns, plural, name);
  if ((rc = mgop_kube_get(mgop_api_ptr, path, out, &status))) return rc;
  return mgop_json_parse(j, out->p, out->len, tok, ntok);
}

/* metadata of an object the backup code writes: labels, and the Shard as
 * controller owner when owned (a Retain PVC has none: nothing deletes it). */
static void mgop_backup_meta(struct mgop_rctx *r, struct mgop_jw *w, const char *name, const char *component,
                             const struct mgop_ids *ids, const char *shard_cr, const char *uid) {
  mgop_jw_key(w, "metadata"); mgop_jw_obj(w);
  mgop_jw_key(w, "name"); mgop_jw_str(w, name);
  mgop_jw_key(w, "namespace"); mgop_jw_str(w, r->ns);
  mgop_jw_key(w, "labels"); mgop_jw_obj(w); mgop_labels(w, r->name, component); mgop_id_labels(w, ids); mgop_jw_obj_end(w);
  if (uid) {
    mgop_jw_key(w, "ownerReferences"); mgop_jw_arr(w); mgop_jw_obj(w);
    mgop_jw_key(w, "apiVersion"); mgop_jw_str(w, MGOP_API_VERSION);
    mgop_jw_key(w, "kind"); mgop_jw_str(w, "Shard");
    mgop_jw_key(w, "name"); mgop_jw_str(w, shard_cr);
    mgop_jw_key(w, "uid"); mgop_jw_str(w, uid);
    mgop_jw_key(w, "controller"); mgop_jw_bool(w, 1);
    mgop_jw_key(w, "blockOwnerDeletion"); mgop_jw_bool(w, 1);
    mgop_jw_obj_end(w); mgop_jw_arr_end(w);
  }
  mgop_jw_obj_end(w);
}

/* The shard's backup PVC: created once when missing, never changed or
 * deleted by the operator. whenDeleted: Delete makes the Shard its owner
 * (the garbage collector removes it with the Shard); Retain leaves it
 * unowned, so it outlives the cluster. The policy is read at creation. */
static int mgop_ensure_backup_pvc(struct mgop_rctx *r, const struct mgop_backup_loc *b, const char *shard_cr,
                                  const char *uid, const struct mgop_ids *ids, const char *when_deleted, int fresh) {
  static char body[16 * 1024], mem[4096];
  static jsmntok_t tok[1024];
  uint64_t key = mgop_fp_key("PersistentVolumeClaim", r->ns, b->pvc);
  struct mgop_fp *f = mgop_fp_find(key);
  struct mgop_buf out, bb;
  struct mgop_jw w;
  struct mgop_json j;
  char path[512];
  int rc, status = 0;
  if (f && (f->flags & MGOP_FP_EXISTS)) return MGOP_OK;
  if (!fresh) { /* a new Shard's PVC: created at once (409: a retained one is there) */
    mgop_buf_init(&out, body, sizeof(body));
    rc = mgop_core_get(r, "persistentvolumeclaims", b->pvc, &out, &j, tok, 1024);
    if (rc == MGOP_OK) goto exists;
    if (rc != MGOP_ERR_NOTFOUND) return rc;
  }
  mgop_buf_init(&bb, mem, sizeof(mem));
  mgop_jw_init(&w, &bb);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "apiVersion"); mgop_jw_str(&w, "v1");
  mgop_jw_key(&w, "kind"); mgop_jw_str(&w, "PersistentVolumeClaim");
  mgop_backup_meta(r, &w, b->pvc, "backup", ids, shard_cr, strcmp(when_deleted, "Delete") ? NULL : uid);
  mgop_jw_key(&w, "spec"); mgop_jw_obj(&w);
  mgop_jw_key(&w, "accessModes"); mgop_jw_arr(&w);
  for (int i = 0; i < b->naccess; i++) mgop_jw_str(&w, b->access[i]);
  mgop_jw_arr_end(&w);
  if (b->klass[0]) { mgop_jw_key(&w, "storageClassName"); mgop_jw_str(&w, b->klass); }
  mgop_jw_key(&w, "resources"); mgop_jw_obj(&w); mgop_jw_key(&w, "requests"); mgop_jw_obj(&w);
  mgop_jw_key(&w, "storage"); mgop_jw_str(&w, b->size);
  mgop_jw_obj_end(&w); mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  if (bb.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "PersistentVolumeClaim %s too large", b->pvc);
  snprintf(path, sizeof(path), "/api/v1/namespaces/%s/persistentvolumeclaims?fieldManager=" MGOP_MANAGER, r->ns);
  mgop_buf_init(&out, body, sizeof(body));
  if ((rc = mgop_kube_request(mgop_api_ptr, "POST", path, "application/json", bb.p, bb.len, &out, &status))) return rc;
  if (status != 201 && status != 409) {
    char msg[300];
    mgop_kube_status_message(out.p, out.len, msg, sizeof(msg));
    return mgop_seterr(MGOP_ERR_STATUS, "create PersistentVolumeClaim %s: HTTP %d: %s", b->pvc, status, msg);
  }
exists:
  if ((f = mgop_fp_upsert(key))) f->flags |= MGOP_FP_EXISTS;
  return MGOP_OK;
}

/* Server-side applies a Secret owned by the Shard. */
static int mgop_backup_put_secret(struct mgop_rctx *r, const char *name, const char *type, const struct mgop_ids *ids,
                                  const char *shard_cr, const char *uid, const char *const *keys,
                                  const char *const *vals, int n) {
  static char mem[48 * 1024], b64[3 * MGOP_PKI_PEM_MAX * 2];
  char path[512];
  struct mgop_buf bb;
  struct mgop_jw w;
  struct mgop_applied res;
  int status = 0, rc;
  mgop_buf_init(&bb, mem, sizeof(mem));
  mgop_jw_init(&w, &bb);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "apiVersion"); mgop_jw_str(&w, "v1");
  mgop_jw_key(&w, "kind"); mgop_jw_str(&w, "Secret");
  mgop_backup_meta(r, &w, name, "pgbackrest-tls", ids, shard_cr, uid);
  mgop_jw_key(&w, "type"); mgop_jw_str(&w, type);
  mgop_jw_key(&w, "data"); mgop_jw_obj(&w);
  for (int i = 0; i < n; i++) {
    size_t bl = 0;
    if (mbedtls_base64_encode((unsigned char *)b64, sizeof(b64), &bl, (const unsigned char *)vals[i], strlen(vals[i])))
      return mgop_seterr(MGOP_ERR_TOOBIG, "Secret %s: %s too large", name, keys[i]);
    mgop_jw_key(&w, keys[i]);
    mgop_jw_strn(&w, b64, bl);
  }
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  if (bb.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "Secret %s too large", name);
  snprintf(path, sizeof(path), "/api/v1/namespaces/%s/secrets/%s", r->ns, name);
  rc = mgop_kube_apply(mgop_api_ptr, path, bb.p, bb.len, &res, &status);
  mbedtls_platform_zeroize(mem, sizeof(mem));
  mbedtls_platform_zeroize(b64, sizeof(b64));
  return rc;
}

/* data.KEY of a parsed Secret, base64-decoded (defined with the webhook). */
static int mgop_secret_value(const struct mgop_json *j, const char *key, char *out, size_t cap);

/* Whether a certificate issued for validity_s is due at now: less than a
 * third of validity_s (or margin_s) left, as the webhook's are. */
static int mgop_pgbr_due(const char *cert, long long validity_s, long long margin_s, long long now) {
  long long na = 0;
  if (!cert[0] || mgop_pki_not_after(cert, strlen(cert), &na)) return 1;
  return na - now < validity_s / 3 || na - now < margin_s;
}

/* Why the peer certificate cert (signed by the CA bundle ca) must be
 * replaced, or NULL when it is good. */
static const char *mgop_pgbr_stale(const char *cert, const char *ca, long long now) {
  if (!cert[0] || !ca[0]) return "missing";
  if (mgop_pgbr_due(cert, mgop_pgbr_cert_validity_s, 0, now)) return "due for renewal";
  if (mgop_pki_verify(cert, strlen(cert), ca, strlen(ca), MGOP_PGBR_CN, now)) return "not signed by the CA";
  return NULL;
}

/* The shard's pgBackRest CA (<shard>-pgbackrest-ca: ca.crt, ca.key, never
 * mounted) and peer certificate (<shard>-pgbackrest-tls: ca.crt, tls.crt,
 * tls.key), rotated like the webhook's: a certificate is replaced once a
 * third of its configured lifetime is left (the CA also when less than a
 * certificate's lifetime is); a new CA is published beside the old one
 * in ca.crt, so pods that still hold the old certificate are trusted while
 * the kubelet refreshes the projected files. The turn is re-queued for the
 * next renewal. */
static int mgop_ensure_pgbackrest_tls(struct mgop_rctx *r, const struct mgop_backup_loc *b, const char *shard_cr,
                                      const char *uid, const struct mgop_ids *ids, int fresh) {
  static char body[64 * 1024], bundle[2 * MGOP_PKI_PEM_MAX], cur_ca[2 * MGOP_PKI_PEM_MAX];
  static char cur_crt[MGOP_PKI_PEM_MAX], ca_crt[MGOP_PKI_PEM_MAX], ca_key[MGOP_PKI_PEM_MAX];
  static struct mgop_pki_pair ca, leaf;
  static jsmntok_t tok[256];
  uint64_t key = mgop_fp_key("Secret", r->ns, b->tls_secret), suid = mgop_uid_hash(uid);
  struct mgop_fp *f = mgop_fp_find(key);
  struct mgop_buf out;
  struct mgop_json j;
  char ca_name[300];
  long long now = mgop_wall_s(), na = 0;
  const char *why;
  int rc, ca_new = 0;
  const char *names[] = {MGOP_PGBR_CN, shard_cr};
  if (f && f->owner_uid == suid && f->renew_at > now) goto requeue;
  cur_ca[0] = cur_crt[0] = 0;
  mgop_buf_init(&out, body, sizeof(body));
  rc = fresh ? MGOP_ERR_NOTFOUND : mgop_core_get(r, "secrets", b->tls_secret, &out, &j, tok, 256);
  if (rc && rc != MGOP_ERR_NOTFOUND) return rc;
  if (!rc) {
    mgop_secret_value(&j, "tls.crt", cur_crt, sizeof(cur_crt));
    mgop_secret_value(&j, "ca.crt", cur_ca, sizeof(cur_ca));
  }
  if (!(why = mgop_pgbr_stale(cur_crt, cur_ca, now))) goto good;
  /* the CA: kept while it has two thirds of a certificate's lifetime left */
  snprintf(ca_name, sizeof(ca_name), "%.200s-pgbackrest-ca", shard_cr);
  ca_crt[0] = ca_key[0] = 0;
  mgop_buf_init(&out, body, sizeof(body));
  rc = fresh ? MGOP_ERR_NOTFOUND : mgop_core_get(r, "secrets", ca_name, &out, &j, tok, 256);
  if (rc && rc != MGOP_ERR_NOTFOUND) return rc;
  if (!rc) {
    mgop_secret_value(&j, "ca.crt", ca_crt, sizeof(ca_crt));
    mgop_secret_value(&j, "ca.key", ca_key, sizeof(ca_key));
  }
  if (!ca_crt[0] || mgop_pki_pair_load(&ca, ca_crt, strlen(ca_crt), ca_key, strlen(ca_key)) ||
      mgop_pgbr_due(ca.cert, mgop_pgbr_ca_validity_s, mgop_pgbr_cert_validity_s, now)) {
    const char *k[] = {"ca.crt", "ca.key"}, *v[2];
    if ((rc = mgop_pki_make_ca(&ca, "multigres-pgbackrest-ca", mgop_pgbr_ca_validity_s, now))) return rc;
    v[0] = ca.cert;
    v[1] = ca.key;
    if ((rc = mgop_backup_put_secret(r, ca_name, "Opaque", ids, shard_cr, uid, k, v, 2))) return rc;
    ca_new = 1;
  }
  if ((rc = mgop_pki_make_peer(&leaf, &ca, names, 2, mgop_pgbr_cert_validity_s, now))) return rc;
  { /* the new CA first; the one it replaces while it is still valid */
    struct mgop_buf bb;
    const char *k[] = {"ca.crt", "tls.crt", "tls.key"}, *v[3];
    mgop_buf_init(&bb, bundle, sizeof(bundle));
    mgop_buf_puts(&bb, ca.cert);
    if (ca_new && ca_crt[0] && !mgop_pgbr_due(ca_crt, 0, 1, now) && strcmp(ca_crt, ca.cert))
      mgop_buf_puts(&bb, ca_crt);
    mgop_buf_cstr(&bb);
    v[0] = bundle;
    v[1] = leaf.cert;
    v[2] = leaf.key;
    rc = mgop_backup_put_secret(r, b->tls_secret, "kubernetes.io/tls", ids, shard_cr, uid, k, v, 3);
    mbedtls_platform_zeroize(&leaf.key, sizeof(leaf.key));
    mbedtls_platform_zeroize(&ca.key, sizeof(ca.key));
    if (rc) return rc;
  }
  MGOP_LOG(MGOP_INFO, ("pgBackRest certificate of Shard %s/%s issued (%s%s)", r->ns, shard_cr, why,
                       ca_new ? ", new CA" : ""));
  snprintf(cur_crt, sizeof(cur_crt), "%s", leaf.cert);
good:
  mgop_pki_not_after(cur_crt, strlen(cur_crt), &na);
  if ((f = mgop_fp_upsert(key))) {
    f->owner_uid = suid;
    f->renew_at = na - mgop_pgbr_cert_validity_s / 3; /* mgop_pgbr_due's third */
  }
requeue:
  /* >=: a look in the very second renewal falls due finds it not yet due
   * (less than a third left is strict), and must come back a second later */
  if (f && f->renew_at >= now) mgop_enqueue(r->ns, r->name, (f->renew_at - now + 1) * 1000);
  return MGOP_OK;
}

/* Phase 3 of a shard's backups: the ReadWriteOnce warning (admission
 * returns it), and, live, the PVC and the certificate Secrets. A Shard this
 * process's apply created (MGOP_FP_CREATED) gets them without a GET first,
 * three round trips less in a new cluster's first turn: what could already
 * be there is a retained PVC (its create answers 409, taken as there) or a
 * former Shard's Secrets waiting for the garbage collector (applied over,
 * with the new owner). Once made, a look comes first again. */
static int mgop_backup_shard(struct mgop_rctx *r, const struct mgop_json *d, int tg, int shard, const char *cr,
                             const char *uid, const struct mgop_ids *ids, const struct mgop_backup_loc *b,
                             const struct mgop_json *pdoc, int pools) {
  struct mgop_fp *row;
  int rc, fresh;
  if (b->type == MGOP_BACKUP_FILESYSTEM && !b->rwx) {
    int cells = mgop_shard_cell_count(r, pdoc, pools);
    if (cells > 1 && !r->backup_warn[0])
      snprintf(r->backup_warn, sizeof(r->backup_warn), "%.200s: filesystem backups on a ReadWriteOnce volume, but the "
               "shard's pods run in %d cells and all mount its one backup PVC, which attaches to one node at a time: "
               "pods elsewhere stay Pending. Use a ReadWriteMany class (backup.filesystem.storage.accessModes: "
               "[ReadWriteMany]) or s3", r->where, cells);
  }
  if (r->render) return MGOP_OK;
  row = mgop_fp_find(mgop_fp_key(mgop_kinds[K_SHARD].kind, r->ns, cr)); /* rows do not move within a turn */
  fresh = row && (row->flags & MGOP_FP_CREATED);
  if (b->type == MGOP_BACKUP_FILESYSTEM) {
    char pol[16];
    int own = mgop_json_key(d, shard, "spec");
    if (own < 0) own = mgop_json_key(d, shard, "overrides");
    {
      const struct mgop_json *docs[] = {d, d};
      const int toks[] = {own, tg};
      if ((rc = mgop_ensure_backup_pvc(r, b, cr, uid, ids, mgop_pvc_policy(r, "whenDeleted", docs, toks, 2, pol,
                                                                         sizeof(pol)), fresh)))
        return rc;
    }
  }
  if (b->tls_own && (rc = mgop_ensure_pgbackrest_tls(r, b, cr, uid, ids, fresh))) return rc;
  if (row) row->flags &= ~MGOP_FP_CREATED;
  return MGOP_OK;
}

/* ---- Backup health --------------------------------------------------------
 * The Shard's BackupHealthy condition, from multiadmin's GetBackups
 * (GET /api/v1/backups?database=&table_group=&shard=), checked at most every
 * --backup-check-interval per shard over one short call (MGOP_MA_TIMEOUT_MS).
 * The calls run on the checker thread, never on the loop: a multiadmin that
 * does not answer, or a name DNS does not, holds up no reconcile. The loop
 * asks (a turn, for a shard due; between turns, mgop_backup_tick) and takes
 * the verdicts back (mgop_bh_collect); checks already waiting for a
 * multiadmin that did not answer get its verdict without another try.
 * Until a shard's first verdict, its condition is what the live Shard
 * showed (a restart writes nothing) or Unknown/Checking. Unknown is an
 * answer too: multiadmin lists a shard's backups through a serving
 * non-primary pooler, so a shard with only its primary gets
 * Unknown/NoReplica, not a guess. The age of the newest complete backup is
 * multigres_operator_last_backup_age_seconds. */
#define MGOP_BH_MAX 1024            /* shards whose backup health is kept */
static long long mgop_backup_check_ms = 120000; /* --backup-check-interval; 0: no checks */
struct mgop_bh {
  uint64_t key;                     /* the Shard's fp key (0: free)          */
  int state;                        /* 0 Unknown, 1 True, 2 False            */
  char reason[32], msg[320];
  long long checked_ms;             /* mgop_now_ms() of the last check       */
  long long since_s;                /* lastTransitionTime                    */
  long long last_s;                 /* newest complete backup (0: none known) */
  int adopted_state;                /* what the live Shard showed at start-up */
  long long adopted_since;
  /* backup.schedule: status.backupSchedule, adopted from the live Shard */
  char cron[101];
  long long next_base_s, next_s;    /* the scheduled minute; plus the jitter */
  long long last_run_s;             /* scheduled time of the last run asked for */
  char job[80], result[16];
  int missed, sched_adopted;
  /* Where its check goes, recorded by the cluster's turn: a due check then
   * runs from the loop (mgop_backup_tick) and needs no turn of its own. */
  uint64_t owner;                   /* the cluster's fp key: its metric series */
  char ns[MGOP_CRD_NAMESPACE_MAX + 1], cluster[MGOP_CRD_CLUSTER_NAME_MAX + 1];
  char shard_cr[MGOP_SHARD_CR_NAME_MAX + 1], db[32], tg[32], sn[32];
  int asked;                        /* its check is with the checker thread */
  int ask_due;                      /* an ask found the ring full: the tick
                                       asks as soon as it has room         */
};
static struct mgop_bh mgop_bh_table[MGOP_BH_MAX];
static int mgop_bh_span; /* rows ever used: scans stop there, so the pages of
                            rows never used are never touched (~1 KB each) */
static const char *mgop_ma_override; /* --multiadmin-address: every cluster's multiadmin (out of cluster) */

static struct mgop_bh *mgop_bh_slot(uint64_t key) {
  struct mgop_bh *free_slot = NULL;
  for (int i = 0; i < mgop_bh_span; i++) {
    if (mgop_bh_table[i].key == key) return &mgop_bh_table[i];
    if (!mgop_bh_table[i].key && !free_slot) free_slot = &mgop_bh_table[i];
  }
  if (!free_slot && mgop_bh_span < MGOP_BH_MAX) free_slot = &mgop_bh_table[mgop_bh_span++];
  if (!free_slot) {
    char what[160];
    snprintf(what, sizeof(what), "backup health is kept for at most %d shards; more get no BackupHealthy condition",
             MGOP_BH_MAX);
    mgop_limit_note(MGOP_L_OBJECTS, what);
    return NULL;
  }
  memset(free_slot, 0, sizeof(*free_slot));
  free_slot->key = key;
  return free_slot;
}

static void mgop_bh_set(struct mgop_bh *h, int state, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void mgop_bh_set(struct mgop_bh *h, int state, const char *reason, const char *fmt, ...) {
  va_list ap;
  if (!h->since_s && h->adopted_since && h->adopted_state == state) { /* a restart: the live condition's time */
    h->since_s = h->adopted_since;
    h->state = state;
  }
  if (h->state != state || !h->since_s) h->since_s = mgop_wall_s();
  h->state = state;
  snprintf(h->reason, sizeof(h->reason), "%s", reason);
  va_start(ap, fmt);
  vsnprintf(h->msg, sizeof(h->msg), fmt, ap);
  va_end(ap);
}

static void mgop_iso_time(long long t, char *out, size_t cap) {
  time_t tt = (time_t)t;
  struct tm tm;
  gmtime_r(&tt, &tm);
  strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Percent-encodes a query value (names are DNS labels; be safe anyway). */
static void mgop_query_value(const char *v, char *out, size_t cap) {
  size_t o = 0;
  for (; *v && o + 4 < cap; v++) {
    unsigned char ch = (unsigned char)*v;
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || strchr("-_.~", ch))
      out[o++] = *v;
    else o += (size_t)snprintf(out + o, cap - o, "%%%02X", (unsigned char)*v);
  }
  out[o] = 0;
}

/* host and port of the multiadmin HTTP endpoint of cluster ns/name. */
static void mgop_ma_endpoint_of(const char *ns, const char *name, char *host, size_t hcap, char *port, size_t pcap) {
  if (mgop_ma_override) {
    const char *colon = strrchr(mgop_ma_override, ':');
    snprintf(host, hcap, "%.*s", colon ? (int)(colon - mgop_ma_override) : (int)strlen(mgop_ma_override),
             mgop_ma_override);
    snprintf(port, pcap, "%s", colon ? colon + 1 : "18000");
    return;
  }
  {
    const char *ap[] = {name, "multiadmin"};
    char svc[64];
    mgop_name(svc, sizeof(svc), MGOP_LIMIT_SERVICE, 0, ap, 2);
    snprintf(host, hcap, "%s.%s.svc", svc, ns);
    snprintf(port, pcap, "18000");
  }
}
static void mgop_ma_endpoint(const struct mgop_rctx *r, char *host, size_t hcap, char *port, size_t pcap) {
  mgop_ma_endpoint_of(r->ns, r->name, host, hcap, port, pcap);
}

/* What one check found, made on the checker thread and applied by the loop
 * (mgop_bh_apply), which alone keeps the lastTransitionTime. */
struct mgop_bh_verdict {
  int state;                        /* 0 Unknown, 1 True, 2 False           */
  char reason[32], msg[320];
  long long last_s;                 /* newest complete backup (0: not known) */
  int unreachable;                  /* no answer at all: shared, not retried */
};

static void mgop_bh_verdict_set(struct mgop_bh_verdict *v, int state, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void mgop_bh_verdict_set(struct mgop_bh_verdict *v, int state, const char *reason, const char *fmt, ...) {
  va_list ap;
  v->state = state;
  snprintf(v->reason, sizeof(v->reason), "%s", reason);
  va_start(ap, fmt);
  vsnprintf(v->msg, sizeof(v->msg), fmt, ap);
  va_end(ap);
}

/* The verdict from a 200 response. */
static void mgop_bh_verdict_of(const struct mgop_ma_backups *b, struct mgop_bh_verdict *v) {
  char t1[32], t2[32];
  v->last_s = b->complete_s;
  mgop_iso_time(b->complete_s, t1, sizeof(t1));
  mgop_iso_time(b->newest_s, t2, sizeof(t2));
  if (b->complete_s && b->newest_status == MGOP_MA_FAILED && b->newest_s > b->complete_s)
    mgop_bh_verdict_set(v, 2, "BackupFailed", "the newest backup %s (%s) failed; the last complete one is %s (%s)",
                        b->newest_id, t2, b->complete_id, t1);
  else if (b->complete_s)
    mgop_bh_verdict_set(v, 1, "BackupCompleted", "last complete backup %s (%s) at %s", b->complete_id,
                        b->complete_type[0] ? b->complete_type : "type unknown", t1);
  else if (b->failed)
    mgop_bh_verdict_set(v, 2, "BackupFailed", "no complete backup; %d failed, the newest %s (%s)", b->failed,
                        b->newest_id, t2);
  else
    mgop_bh_verdict_set(v, 2, "NoBackup", "multiadmin lists no complete backup of this shard (%d listed, %d in "
                        "progress)", b->n, b->incomplete);
}

static void mgop_bh_apply(struct mgop_bh *h, const struct mgop_bh_verdict *v) {
  if (v->last_s) h->last_s = v->last_s;
  mgop_bh_set(h, v->state, v->reason, "%s", v->msg);
}

/* What a Shard's live BackupHealthy said when first seen (status: True,
 * False, Unknown), so a restart keeps its lastTransitionTime, and writes it
 * as it was until the first check answers. */
static void mgop_bh_adopt(uint64_t key, const char *status, long long since, const char *reason, const char *msg) {
  struct mgop_bh *h = mgop_bh_slot(key);
  if (!h || h->since_s) return;
  h->adopted_state = !strcmp(status, "True") ? 1 : !strcmp(status, "False") ? 2 : 0;
  h->adopted_since = since;
  if (reason && reason[0] && msg) mgop_bh_set(h, h->adopted_state, reason, "%s", msg);
}

/* ---- The checker thread --------------------------------------------------
 * Asks multiadmin for one shard's backups at a time, in the order asked.
 * The loop owns mgop_bh_table; the thread sees only the jobs it is handed
 * (where to call, and the slot's key to hand the verdict back with). Both
 * rings are bounded: a full ask ring leaves the rest due for the next tick
 * (the thread's answers wake the loop), a full answer ring holds the thread
 * until the loop collects. Started at the first check. */
#define MGOP_BHC_RING 32
struct mgop_bh_job {
  int slot;
  uint64_t key;                     /* the slot's, when asked               */
  unsigned long long seq;           /* the asks' count, this one included   */
  char host[300], port[16], target[400];
  struct mgop_bh_verdict v;         /* the answer                           */
};
static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;                /* a job, a free answer place, or stop  */
  int started, stop;
  struct mgop_bh_job ask[MGOP_BHC_RING], answer[MGOP_BHC_RING];
  int ask_head, asks, answer_head, answers;
  unsigned long long asked;         /* jobs ever asked (their seq)          */
  unsigned long calls;              /* made (the unit test counts them)     */
} mgop_bhc = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* One GetBackups call, on the checker thread. */
static void mgop_bh_call(const struct mgop_bh_job *j, struct mgop_bh_verdict *v) {
  static struct mgop_conn conn;     /* the checker thread's alone */
  static char body[MGOP_MA_BODY_MAX];
  char msg[200];
  struct mgop_buf out;
  struct mgop_ma_backups b;
  int status = 0, rc;
  memset(v, 0, sizeof(*v));
  mgop_buf_init(&out, body, sizeof(body) - 1);
  mgop_conn_init(&conn);
  rc = mgop_http_call(&conn, j->host, j->port, "GET", j->target, NULL, 0, &out, &status,
                      mgop_now_ms() + MGOP_MA_TIMEOUT_MS);
  if (rc && !status) {
    v->unreachable = 1;
    mgop_bh_verdict_set(v, 0, "MultiadminUnreachable", "multiadmin at %s:%s: %.200s", j->host, j->port,
                        mgop_errmsg());
  } else if (rc) {
    mgop_bh_verdict_set(v, 0, "BadResponse", "multiadmin at %s:%s, HTTP %d: %.200s", j->host, j->port, status,
                        mgop_errmsg());
  } else if (status != 200) {
    mgop_kube_status_message(out.p, out.len, msg, sizeof(msg)); /* grpc-gateway: {"code","message"} */
    if (status == 404 && strstr(msg, "replica"))
      mgop_bh_verdict_set(v, 0, "NoReplica", "multiadmin lists backups through a serving non-primary pooler and has "
                          "none for this shard: %s", msg);
    else
      mgop_bh_verdict_set(v, 0, "MultiadminError", "multiadmin GetBackups: HTTP %d: %s", status, msg);
  } else if (mgop_ma_parse_backups(out.p, out.len, &b)) {
    mgop_bh_verdict_set(v, 0, "BadResponse", "multiadmin GetBackups: %.200s", mgop_errmsg());
  } else {
    mgop_bh_verdict_of(&b, v);
  }
}

static void *mgop_bhc_main(void *arg) {
  struct mgop_bh_job j;
  struct mgop_bh_verdict down;   /* the last multiadmin that did not answer */
  unsigned long long down_upto = 0; /* the jobs asked before that was known */
  char down_host[sizeof(j.host) + sizeof(j.port)] = "", where[sizeof(down_host)];
  (void)arg;
  pthread_mutex_lock(&mgop_bhc.mu);
  for (;;) {
    while (!mgop_bhc.stop && (!mgop_bhc.asks || mgop_bhc.answers == MGOP_BHC_RING))
      pthread_cond_wait(&mgop_bhc.cv, &mgop_bhc.mu);
    if (mgop_bhc.stop) break;
    j = mgop_bhc.ask[mgop_bhc.ask_head];
    mgop_bhc.ask_head = (mgop_bhc.ask_head + 1) % MGOP_BHC_RING;
    mgop_bhc.asks--;
    pthread_mutex_unlock(&mgop_bhc.mu);
    snprintf(where, sizeof(where), "%s:%s", j.host, j.port);
    if (down_host[0] && !strcmp(down_host, where) && j.seq <= down_upto) {
      j.v = down; /* asked before its multiadmin failed to answer: the same verdict, word for word */
      pthread_mutex_lock(&mgop_bhc.mu);
    } else {
      __atomic_add_fetch(&mgop_bhc.calls, 1, __ATOMIC_RELAXED);
      mgop_bh_call(&j, &j.v);
      pthread_mutex_lock(&mgop_bhc.mu);
      if (j.v.unreachable) down = j.v, down_upto = mgop_bhc.asked, memcpy(down_host, where, sizeof(where));
    }
    mgop_bhc.answer[(mgop_bhc.answer_head + mgop_bhc.answers) % MGOP_BHC_RING] = j;
    mgop_bhc.answers++;
    if (mgop_shared.wake_pipe[1] >= 0 && write(mgop_shared.wake_pipe[1], "b", 1) < 0) { /* the loop polls anyway */ }
  }
  mgop_bhc.started = 0;
  pthread_cond_broadcast(&mgop_bhc.cv);
  pthread_mutex_unlock(&mgop_bhc.mu);
  return NULL;
}

/* Hands h's check to the thread (mu held): 1, or 0 when the ring is full
 * (the check stays due: ask_due, for the tick), or 2 when the thread cannot
 * start and that verdict is new (set here, for the caller to write). */
static int mgop_bh_ask(struct mgop_bh *h, long long now) {
  struct mgop_bh_job *j;
  char db[100], tg[100], sh[100];
  if (mgop_bhc.asks == MGOP_BHC_RING) {
    /* a first check (checked_ms 0) is the turn's, not the tick's: without
     * this it waited for the cluster's next turn, which a converged cluster
     * may never take (five of 1,000 kept MultiadminNotReady so, until a
     * restart asked) */
    h->ask_due = 1;
    return 0;
  }
  mgop_bhc.stop = 0; /* a thread told to stop that has not yet: it goes on */
  if (!mgop_bhc.started) {
    int e = mgop_thread_detached(mgop_bhc_main);
    mgop_bhc.started = e == 0;
    if (e) { /* the verdict says so; the next interval tries again */
      int changed = h->state != 0 || strcmp(h->reason, "CheckerNotRunning");
      mgop_bh_set(h, 0, "CheckerNotRunning", "the backup checker thread could not start: %s", strerror(e));
      h->checked_ms = now;
      return changed ? 2 : 1;
    }
  }
  j = &mgop_bhc.ask[(mgop_bhc.ask_head + mgop_bhc.asks) % MGOP_BHC_RING];
  memset(j, 0, sizeof(*j));
  j->slot = (int)(h - mgop_bh_table);
  j->key = h->key;
  j->seq = ++mgop_bhc.asked;
  mgop_ma_endpoint_of(h->ns, h->cluster, j->host, sizeof(j->host), j->port, sizeof(j->port));
  mgop_query_value(h->db, db, sizeof(db));
  mgop_query_value(h->tg, tg, sizeof(tg));
  mgop_query_value(h->sn, sh, sizeof(sh));
  snprintf(j->target, sizeof(j->target), "/api/v1/backups?database=%s&table_group=%s&shard=%s", db, tg, sh);
  mgop_bhc.asks++;
  h->asked = 1;
  h->ask_due = 0;
  h->checked_ms = now;
  return 1;
}

/* Stops the checker thread, waiting at most wait_ms for a call under way. */
static void mgop_bhc_stop(long long wait_ms) {
  pthread_mutex_lock(&mgop_bhc.mu);
  mgop_thread_stop_wait(&mgop_bhc.cv, &mgop_bhc.mu, &mgop_bhc.started, &mgop_bhc.stop, wait_ms);
  mgop_bhc.asks = mgop_bhc.answers = 0; /* what was asked is asked again at the next start */
  pthread_mutex_unlock(&mgop_bhc.mu);
  for (int i = 0; i < mgop_bh_span; i++) mgop_bh_table[i].asked = 0;
}

/* The last-backup-age gauge of a shard, from its newest complete backup. */
static void mgop_bh_age_gauge(const struct mgop_bh *h) {
  char l[MGOP_LABELS_MAX] = "";
  if (!h->last_s) return;
  if (!mgop_label(l, sizeof(l), "shard", h->shard_cr) && !mgop_label(l, sizeof(l), "namespace", h->ns))
    mgop_gauge_set(h->owner, mgop_f_backup_age, l, (double)(mgop_wall_s() - h->last_s));
}

/* The loop: the thread's answers into the table; a verdict that changed
 * wakes its cluster to write it. An answer for a slot forgotten (or given
 * to another Shard) meanwhile is dropped. */
static void mgop_bh_collect(void) {
  pthread_mutex_lock(&mgop_bhc.mu);
  while (mgop_bhc.answers) {
    struct mgop_bh_job j = mgop_bhc.answer[mgop_bhc.answer_head];
    struct mgop_bh *h = &mgop_bh_table[j.slot];
    mgop_bhc.answer_head = (mgop_bhc.answer_head + 1) % MGOP_BHC_RING;
    mgop_bhc.answers--;
    pthread_cond_broadcast(&mgop_bhc.cv); /* a free answer place */
    pthread_mutex_unlock(&mgop_bhc.mu);
    if (h->key == j.key && h->asked) {
      int changed = h->state != j.v.state || strcmp(h->reason, j.v.reason) || strcmp(h->msg, j.v.msg);
      h->asked = 0;
      mgop_bh_apply(h, &j.v);
      mgop_bh_age_gauge(h);
      if (changed) mgop_enqueue(h->ns, h->cluster, 0);
    }
    pthread_mutex_lock(&mgop_bhc.mu);
  }
  pthread_mutex_unlock(&mgop_bhc.mu);
}

/* A shard's turn: records where its check goes, asks for one when due, and
 * gives a shard without any verdict yet its Unknown/Checking, or, while its
 * cluster's multiadmin has no ready pod (admin_pods), Unknown/
 * MultiadminNotReady without asking. */
static void mgop_backup_health(struct mgop_rctx *r, int s, struct mgop_bh *h, uint64_t owner, int admin_pods) {
  long long now = mgop_now_ms();
  h->owner = owner;
  snprintf(h->ns, sizeof(h->ns), "%s", r->ns);
  snprintf(h->cluster, sizeof(h->cluster), "%s", r->name);
  /* a Shard name fits MGOP_SHARD_CR_NAME_MAX by construction; the precision tells gcc -O0 so */
  snprintf(h->shard_cr, sizeof(h->shard_cr), "%.*s", (int)sizeof(h->shard_cr) - 1, r->shard_names[s]);
  snprintf(h->db, sizeof(h->db), "%s", r->shard_db[s]);
  snprintf(h->tg, sizeof(h->tg), "%s", r->shard_tgn[s]);
  snprintf(h->sn, sizeof(h->sn), "%s", r->shard_sn[s]);
  /* the cluster's multiadmin has no ready pod (a new cluster's first
   * turns): its Service has no endpoint, so a call could only fail. The
   * verdict says so now, with no call and no second turn to write
   * MultiadminUnreachable; the turn that sees a ready pod (its Deployment's
   * watch event wakes the cluster) asks at once */
  if (!mgop_ma_override && !admin_pods && !h->asked) {
    h->checked_ms = 0;
    h->ask_due = 0;
    mgop_bh_set(h, 0, "MultiadminNotReady", "multiadmin (Deployment %s-multiadmin) has no ready pod: the first check "
                "waits for one", r->name);
    mgop_bh_age_gauge(h);
    return;
  }
  if (!h->asked && (!h->checked_ms || now - h->checked_ms >= mgop_backup_check_ms)) {
    pthread_mutex_lock(&mgop_bhc.mu);
    mgop_bh_ask(h, now); /* a full ring: the tick asks when answers make room */
    pthread_cond_broadcast(&mgop_bhc.cv);
    pthread_mutex_unlock(&mgop_bhc.mu);
  }
  if (!h->since_s) mgop_bh_set(h, 0, "Checking", "waiting for multiadmin's answer to the first check");
  mgop_bh_age_gauge(h);
}

/* The loop, between turns: takes the answers in, and asks for every check
 * due, in slot order as the ring has room. An unchanged verdict costs
 * no API request, so a converged fleet stays at zero requests while idle.
 * Returns ms until the next check not yet due is (-1: none). Checks asked,
 * and checks due that a full ring left, count on the thread's answers,
 * which wake the loop. */
static long long mgop_backup_tick(void) {
  long long now, next = -1;
  if (!mgop_backup_check_ms) return -1;
  mgop_bh_collect();
  now = mgop_now_ms();
  pthread_mutex_lock(&mgop_bhc.mu);
  for (int i = 0; i < mgop_bh_span; i++) {
    struct mgop_bh *h = &mgop_bh_table[i];
    long long due;
    /* a first check is asked by the cluster's turn, or here if that found the ring full */
    if (!h->key || !h->cluster[0] || (!h->checked_ms && !h->ask_due) || h->asked) continue;
    due = h->ask_due ? 0 : h->checked_ms + mgop_backup_check_ms - now;
    if (due <= 0) { /* asked; or the ring is full, and its answers bring the loop back */
      if (mgop_bh_ask(h, now) == 2) mgop_enqueue(h->ns, h->cluster, 0); /* no thread: the turn writes why */
      continue;
    }
    if (next < 0 || due < next) next = due;
  }
  pthread_cond_broadcast(&mgop_bhc.cv);
  pthread_mutex_unlock(&mgop_bhc.mu);
  return next;
}

/* Set around a Shard's status write: mgop_conditions appends it. */
static const struct mgop_bh *mgop_cond_backup;

static void mgop_backup_condition(struct mgop_jw *w, long long generation) {
  const struct mgop_bh *h = mgop_cond_backup;
  char ts[32];
  if (!h) return;
  mgop_iso_time(h->since_s, ts, sizeof(ts));
  mgop_jw_obj(w);
  mgop_jw_key(w, "lastTransitionTime"); mgop_jw_str(w, ts);
  mgop_jw_key(w, "message"); mgop_jw_str(w, h->msg);
  mgop_jw_key(w, "observedGeneration"); mgop_jw_i64(w, generation);
  mgop_jw_key(w, "reason"); mgop_jw_str(w, h->reason);
  mgop_jw_key(w, "status"); mgop_jw_str(w, h->state == 1 ? "True" : h->state == 2 ? "False" : "Unknown");
  mgop_jw_key(w, "type"); mgop_jw_str(w, "BackupHealthy");
  mgop_jw_obj_end(w);
}

/* ---- Scheduled backups ----------------------------------------------------
 * backup.schedule is a cron in UTC; each shard fires a fixed jitter (a hash
 * of its name, below scheduleJitterSeconds) after the minute. The operator
 * asks multiadmin for one backup at a time in the whole process
 * (POST /api/v1/backups), follows that job (GET /api/v1/jobs/{id}) and, with
 * backup.retention, then asks it to expire older full backups
 * (POST /api/v1/backups/expire). A run noticed more than
 * MGOP_SCHED_GRACE_S late is missed: an Event and a metric, no late backup.
 * The last and next run live in the Shard's status.backupSchedule, so a
 * restarted operator continues where it was. Time is mgop_wall_s(). */
#define MGOP_SCHED_GRACE_S 600
#define MGOP_SCHED_POLL_MS 5000     /* a running job is looked at this often */
static uint64_t mgop_sched_busy;    /* the Shard whose job is running (0: none) */
static long long mgop_sched_busy_ms;

/* A Shard is gone: its slot is free for another. */
static void mgop_bh_forget(uint64_t key) {
  for (int i = 0; i < mgop_bh_span; i++)
    if (mgop_bh_table[i].key == key) {
      if (mgop_sched_busy == key) mgop_sched_busy = 0;
      memset(&mgop_bh_table[i], 0, sizeof(mgop_bh_table[i]));
    }
}

static long long mgop_sched_next(const struct mgop_bh *h, const struct mgop_cron *c, long long after, int jitter_s,
                                 long long *base) {
  uint64_t hk = mgop_fnv1a64(MGOP_FNV64_INIT, &h->key, sizeof(h->key));
  *base = mgop_cron_next(c, after);
  return *base < 0 ? -1 : *base + (jitter_s ? (long long)(hk % (uint64_t)(jitter_s + 1)) : 0);
}

/* One multiadmin call for the schedule; the body into out. */
static int mgop_sched_call(struct mgop_rctx *r, const char *method, const char *target, const char *body,
                           struct mgop_buf *out, int *status) {
  static struct mgop_conn conn;
  char host[300], port[16];
  mgop_ma_endpoint(r, host, sizeof(host), port, sizeof(port));
  mgop_conn_init(&conn);
  return mgop_http_call(&conn, host, port, method, target, body, body ? strlen(body) : 0, out, status,
                        mgop_now_ms() + MGOP_MA_TIMEOUT_MS);
}

/* {"database","tableGroup","shard"} plus extra members ("k":v,... the writer puts the comma). */
static void mgop_sched_shard_json(struct mgop_rctx *r, int s, char *out, size_t cap, const char *extra) {
  struct mgop_buf b;
  struct mgop_jw w;
  mgop_buf_init(&b, out, cap);
  mgop_jw_init(&w, &b);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "database"); mgop_jw_str(&w, r->shard_db[s]);
  mgop_jw_key(&w, "tableGroup"); mgop_jw_str(&w, r->shard_tgn[s]);
  mgop_jw_key(&w, "shard"); mgop_jw_str(&w, r->shard_sn[s]);
  if (extra) mgop_jw_raw(&w, extra, strlen(extra));
  mgop_jw_obj_end(&w);
  mgop_buf_cstr(&b);
}

/* The running job of this shard: done when multiadmin says so; then expire. */
static void mgop_sched_follow(struct mgop_rctx *r, int s, struct mgop_bh *h) {
  static char body[4096];
  char target[700], db[100], tg[100], sh[100], jid[240], st[40] = "";
  struct mgop_buf out;
  struct mgop_json j;
  static jsmntok_t tok[128];
  int status = 0;
  if (mgop_now_ms() - mgop_sched_busy_ms < MGOP_SCHED_POLL_MS) return;
  mgop_sched_busy_ms = mgop_now_ms();
  mgop_query_value(r->shard_db[s], db, sizeof(db));
  mgop_query_value(r->shard_tgn[s], tg, sizeof(tg));
  mgop_query_value(r->shard_sn[s], sh, sizeof(sh));
  mgop_query_value(h->job, jid, sizeof(jid));
  snprintf(target, sizeof(target), "/api/v1/jobs/%s?database=%s&table_group=%s&shard=%s", jid, db, tg, sh);
  mgop_buf_init(&out, body, sizeof(body) - 1);
  if (mgop_sched_call(r, "GET", target, NULL, &out, &status) || status != 200 ||
      mgop_json_parse(&j, out.p, out.len, tok, 128))
    return; /* asked again later; the job stays this shard's */
  mgop_json_path_str(&j, 0, "status", st, sizeof(st));
  if (!strcmp(st, "JOB_STATUS_PENDING") || !strcmp(st, "JOB_STATUS_RUNNING")) {
    snprintf(h->result, sizeof(h->result), "%s", st[11] == 'P' ? "Pending" : "Running");
    return;
  }
  snprintf(h->result, sizeof(h->result), "%s", !strcmp(st, "JOB_STATUS_COMPLETED") ? "Completed"
                                              : !strcmp(st, "JOB_STATUS_FAILED") ? "Failed" : "Unknown");
  mgop_sched_busy = 0;
  h->checked_ms = 0; /* list the backups again now */
  if (!strcmp(h->result, "Completed") && r->shard_keep[s] > 0) {
    char req[600], extra[96];
    snprintf(extra, sizeof(extra), "\"overrides\":{\"repo1-retention-full\":\"%d\"}", r->shard_keep[s]);
    mgop_sched_shard_json(r, s, req, sizeof(req), extra);
    mgop_buf_init(&out, body, sizeof(body) - 1);
    if (mgop_sched_call(r, "POST", "/api/v1/backups/expire", req, &out, &status) || status != 200)
      MGOP_LOG(MGOP_WARN, ("expire backups of Shard %s/%s: HTTP %d: %s", r->ns, r->shard_names[s], status,
                           mgop_errmsg()));
  }
}

/* multigres_operator_backup_missed_runs of a shard that missed any */
static void mgop_backup_missed_gauge(const struct mgop_rctx *r, int s, const struct mgop_bh *h, uint64_t owner) {
  char l[MGOP_LABELS_MAX] = "";
  if (h->missed && !mgop_label(l, sizeof(l), "shard", r->shard_names[s]) && !mgop_label(l, sizeof(l), "namespace", r->ns))
    mgop_gauge_set(owner, mgop_f_backup_missed, l, h->missed);
}

/* One shard's schedule, each turn. Returns ms until it wants a turn (-1: none). */
static long long mgop_backup_schedule(struct mgop_rctx *r, int s, struct mgop_bh *h, uint64_t owner) {
  static char body[4096];
  struct mgop_cron c;
  struct mgop_buf out;
  long long now = mgop_wall_s(), base = 0;
  int status = 0;
  if (!r->shard_cron[s][0] || mgop_cron_parse(r->shard_cron[s], &c)) {
    h->cron[0] = 0;
    h->next_s = 0;
    return -1;
  }
  if (strcmp(h->cron, r->shard_cron[s])) { /* new or changed: from now (or what the live status says) */
    snprintf(h->cron, sizeof(h->cron), "%s", r->shard_cron[s]);
    if (!(h->sched_adopted && h->next_s > 0)) h->next_s = mgop_sched_next(h, &c, now, r->shard_jitter[s], &base);
    h->sched_adopted = 0;
  }
  if (mgop_sched_busy == h->key) mgop_sched_follow(r, s, h);
  mgop_backup_missed_gauge(r, s, h, owner); /* a count adopted from the status after a restart */
  if (h->next_s <= 0 || now < h->next_s) return h->next_s > 0 ? (h->next_s - now) * 1000 : -1;
  if (now - h->next_s > MGOP_SCHED_GRACE_S) { /* missed: say so, and wait for the next one */
    char note[400], t[32];
    mgop_iso_time(h->next_s, t, sizeof(t));
    snprintf(note, sizeof(note), "scheduled backup of %s/%s/%s due at %s was missed (noticed %lld s late); the "
             "next one is on schedule", r->shard_db[s], r->shard_tgn[s], r->shard_sn[s], t, now - h->next_s);
    h->missed++;
    mgop_backup_missed_gauge(r, s, h, owner); /* now: no later turn may come to set it */
    mgop_event(r, K_SHARD, r->shard_names[s], NULL, "Warning", "BackupMissed", "Backup", note);
    MGOP_LOG(MGOP_WARN, ("Shard %s/%s: %s", r->ns, r->shard_names[s], note));
    h->next_s = mgop_sched_next(h, &c, now, r->shard_jitter[s], &base);
    return h->next_s > 0 ? (h->next_s - now) * 1000 : -1;
  }
  if (mgop_sched_busy) return MGOP_SCHED_POLL_MS; /* one shard at a time: wait for the running job */
  {
    char req[600], job[80] = "";
    struct mgop_json j;
    static jsmntok_t tok[64];
    mgop_sched_shard_json(r, s, req, sizeof(req), "\"type\":\"full\"");
    mgop_buf_init(&out, body, sizeof(body) - 1);
    if (mgop_sched_call(r, "POST", "/api/v1/backups", req, &out, &status) || status != 200 ||
        mgop_json_parse(&j, out.p, out.len, tok, 64) || mgop_json_path_str(&j, 0, "jobId", job, sizeof(job)) ||
        !job[0]) {
      MGOP_LOG(MGOP_WARN, ("scheduled backup of Shard %s/%s not started: HTTP %d: %s", r->ns, r->shard_names[s],
                           status, status ? "unexpected answer" : mgop_errmsg()));
      return MGOP_SCHED_POLL_MS; /* tried again until the grace runs out */
    }
    snprintf(h->job, sizeof(h->job), "%s", job);
    snprintf(h->result, sizeof(h->result), "Pending");
    h->last_run_s = h->next_s;
    mgop_sched_busy = h->key;
    mgop_sched_busy_ms = mgop_now_ms();
    MGOP_LOG(MGOP_INFO, ("scheduled backup of Shard %s/%s started: job %s", r->ns, r->shard_names[s], job));
    h->next_s = mgop_sched_next(h, &c, now, r->shard_jitter[s], &base);
  }
  return MGOP_SCHED_POLL_MS;
}

/* status.backupSchedule of a Shard (with the BackupHealthy row pending). */
static void mgop_backup_schedule_status(struct mgop_jw *w) {
  const struct mgop_bh *h = mgop_cond_backup;
  char t[32];
  if (!h || !h->cron[0]) return;
  mgop_jw_key(w, "backupSchedule"); mgop_jw_obj(w);
  if (h->job[0]) { mgop_jw_key(w, "lastJobId"); mgop_jw_str(w, h->job); }
  if (h->result[0]) { mgop_jw_key(w, "lastResult"); mgop_jw_str(w, h->result); }
  if (h->last_run_s > 0) { mgop_iso_time(h->last_run_s, t, sizeof(t)); mgop_jw_key(w, "lastRun"); mgop_jw_str(w, t); }
  mgop_jw_key(w, "missedRuns"); mgop_jw_i64(w, h->missed);
  if (h->next_s > 0) { mgop_iso_time(h->next_s, t, sizeof(t)); mgop_jw_key(w, "nextRun"); mgop_jw_str(w, t); }
  mgop_jw_key(w, "schedule"); mgop_jw_str(w, h->cron);
  mgop_jw_obj_end(w);
}

/* What the live Shard's status.backupSchedule said at start-up. */
static void mgop_sched_adopt(uint64_t key, const struct mgop_json *j, int bs) {
  struct mgop_bh *h = mgop_bh_slot(key);
  char t[40];
  long long v;
  if (!h || h->cron[0]) return;
  if (mgop_json_path_str(j, bs, "nextRun", t, sizeof(t)) == MGOP_OK && !mgop_rfc3339_s(t, strlen(t), &v)) {
    h->next_s = v;
    h->sched_adopted = 1;
  }
  if (mgop_json_path_str(j, bs, "lastRun", t, sizeof(t)) == MGOP_OK && !mgop_rfc3339_s(t, strlen(t), &v))
    h->last_run_s = v;
  mgop_json_path_str(j, bs, "lastJobId", h->job, sizeof(h->job));
  mgop_json_path_str(j, bs, "lastResult", h->result, sizeof(h->result));
}

static long long mgop_scale_down_guard(struct mgop_rctx *r, const char *cr, const char *sts, const char *cell,
                                       long long per); /* section 8, rolling */
/* One shard: phase 2 builds the Shard CR, phase 3 its workloads. */
/* postgresConfig (the shard's, merged per key along the defaults chain):
 * a ConfigMap <Shard>-postgres-config with postgresql.conf, every value
 * single-quoted, that pgctld includes (POSTGRES_INITDB_EXTRA_CONF; Multigres
 * reads it with include_if_exists at every start). Its hash goes on the pool
 * pods, so a change rolls them safely (replicas first, the primary last);
 * Multigres's in-place reload is a gRPC call, which this operator does not
 * make. Settings the data plane owns are refused. Returns 0 (none), 1 (made:
 * hash in *hash) or an error. */
/* pg-catalog begin: generated by scripts/pg-catalog.sh from PostgreSQL 17 (Debian trixie) --describe-config
 * plus its developer options; 355 names, lower-cased (PostgreSQL compares them so) and sorted (bsearch).
 * Do not edit. */
static const char *const mgop_pg17_params[] = {
    "allow_alter_system", "allow_in_place_tablespaces", "allow_system_table_mods", "archive_cleanup_command",
    "archive_command", "archive_library", "archive_mode", "archive_timeout", "array_nulls", "authentication_timeout",
    "autovacuum", "autovacuum_analyze_scale_factor", "autovacuum_analyze_threshold", "autovacuum_freeze_max_age",
    "autovacuum_max_workers", "autovacuum_multixact_freeze_max_age", "autovacuum_naptime",
    "autovacuum_vacuum_cost_delay", "autovacuum_vacuum_cost_limit", "autovacuum_vacuum_insert_scale_factor",
    "autovacuum_vacuum_insert_threshold", "autovacuum_vacuum_scale_factor", "autovacuum_vacuum_threshold",
    "autovacuum_work_mem", "backend_flush_after", "backslash_quote", "backtrace_functions", "bgwriter_delay",
    "bgwriter_flush_after", "bgwriter_lru_maxpages", "bgwriter_lru_multiplier", "bonjour", "bonjour_name",
    "bytea_output", "check_function_bodies", "checkpoint_completion_target", "checkpoint_flush_after",
    "checkpoint_timeout", "checkpoint_warning", "client_connection_check_interval", "client_encoding",
    "client_min_messages", "cluster_name", "commit_delay", "commit_siblings", "commit_timestamp_buffers",
    "compute_query_id", "constraint_exclusion", "cpu_index_tuple_cost", "cpu_operator_cost", "cpu_tuple_cost",
    "createrole_self_grant", "cursor_tuple_fraction", "data_directory", "data_sync_retry", "datestyle",
    "deadlock_timeout", "debug_discard_caches", "debug_io_direct", "debug_logical_replication_streaming",
    "debug_parallel_query", "debug_pretty_print", "debug_print_parse", "debug_print_plan", "debug_print_rewritten",
    "default_statistics_target", "default_table_access_method", "default_tablespace", "default_text_search_config",
    "default_toast_compression", "default_transaction_deferrable", "default_transaction_isolation",
    "default_transaction_read_only", "dynamic_library_path", "dynamic_shared_memory_type", "effective_cache_size",
    "effective_io_concurrency", "enable_async_append", "enable_bitmapscan", "enable_gathermerge",
    "enable_group_by_reordering", "enable_hashagg", "enable_hashjoin", "enable_incremental_sort",
    "enable_indexonlyscan", "enable_indexscan", "enable_material", "enable_memoize", "enable_mergejoin",
    "enable_nestloop", "enable_parallel_append", "enable_parallel_hash", "enable_partition_pruning",
    "enable_partitionwise_aggregate", "enable_partitionwise_join", "enable_presorted_aggregate", "enable_seqscan",
    "enable_sort", "enable_tidscan", "escape_string_warning", "event_source", "event_triggers", "exit_on_error",
    "extension_destdir", "external_pid_file", "extra_float_digits", "file_extend_method", "from_collapse_limit",
    "fsync", "full_page_writes", "geqo", "geqo_effort", "geqo_generations", "geqo_pool_size", "geqo_seed",
    "geqo_selection_bias", "geqo_threshold", "gin_fuzzy_search_limit", "gin_pending_list_limit",
    "gss_accept_delegation", "hash_mem_multiplier", "hba_file", "hot_standby", "hot_standby_feedback",
    "huge_page_size", "huge_pages", "icu_validation_level", "ident_file", "idle_in_transaction_session_timeout",
    "idle_session_timeout", "ignore_checksum_failure", "ignore_invalid_pages", "ignore_system_indexes",
    "intervalstyle", "io_combine_limit", "jit", "jit_above_cost", "jit_debugging_support", "jit_dump_bitcode",
    "jit_expressions", "jit_inline_above_cost", "jit_optimize_above_cost", "jit_profiling_support", "jit_provider",
    "jit_tuple_deforming", "join_collapse_limit", "krb_caseins_users", "krb_server_keyfile", "lc_messages",
    "lc_monetary", "lc_numeric", "lc_time", "listen_addresses", "lo_compat_privileges", "local_preload_libraries",
    "lock_timeout", "log_autovacuum_min_duration", "log_btree_build_stats", "log_checkpoints", "log_connections",
    "log_destination", "log_directory", "log_disconnections", "log_duration", "log_error_verbosity",
    "log_executor_stats", "log_file_mode", "log_filename", "log_hostname", "log_line_prefix", "log_lock_waits",
    "log_min_duration_sample", "log_min_duration_statement", "log_min_error_statement", "log_min_messages",
    "log_parameter_max_length", "log_parameter_max_length_on_error", "log_parser_stats", "log_planner_stats",
    "log_recovery_conflict_waits", "log_replication_commands", "log_rotation_age", "log_rotation_size",
    "log_startup_progress_interval", "log_statement", "log_statement_sample_rate", "log_statement_stats",
    "log_temp_files", "log_timezone", "log_transaction_sample_rate", "log_truncate_on_rotation", "logging_collector",
    "logical_decoding_work_mem", "maintenance_io_concurrency", "maintenance_work_mem", "max_connections",
    "max_files_per_process", "max_locks_per_transaction", "max_logical_replication_workers", "max_notify_queue_pages",
    "max_parallel_apply_workers_per_subscription", "max_parallel_maintenance_workers", "max_parallel_workers",
    "max_parallel_workers_per_gather", "max_pred_locks_per_page", "max_pred_locks_per_relation",
    "max_pred_locks_per_transaction", "max_prepared_transactions", "max_replication_slots", "max_slot_wal_keep_size",
    "max_stack_depth", "max_standby_archive_delay", "max_standby_streaming_delay",
    "max_sync_workers_per_subscription", "max_wal_senders", "max_wal_size", "max_worker_processes",
    "min_dynamic_shared_memory", "min_parallel_index_scan_size", "min_parallel_table_scan_size", "min_wal_size",
    "multixact_member_buffers", "multixact_offset_buffers", "notify_buffers", "output_plugin_libraries",
    "parallel_leader_participation", "parallel_setup_cost", "parallel_tuple_cost", "password_encryption",
    "plan_cache_mode", "port", "post_auth_delay", "pre_auth_delay", "primary_conninfo", "primary_slot_name",
    "quote_all_identifiers", "random_page_cost", "recovery_end_command", "recovery_init_sync_method",
    "recovery_min_apply_delay", "recovery_prefetch", "recovery_target", "recovery_target_action",
    "recovery_target_inclusive", "recovery_target_lsn", "recovery_target_name", "recovery_target_time",
    "recovery_target_timeline", "recovery_target_xid", "recursive_worktable_factor", "remove_temp_files_after_crash",
    "reserved_connections", "restart_after_crash", "restore_command", "row_security", "scram_iterations",
    "search_path", "send_abort_for_crash", "send_abort_for_kill", "seq_page_cost", "serializable_buffers",
    "session_preload_libraries", "session_replication_role", "shared_buffers", "shared_memory_type",
    "shared_preload_libraries", "ssl", "ssl_ca_file", "ssl_cert_file", "ssl_ciphers", "ssl_crl_dir", "ssl_crl_file",
    "ssl_dh_params_file", "ssl_ecdh_curve", "ssl_key_file", "ssl_max_protocol_version", "ssl_min_protocol_version",
    "ssl_passphrase_command", "ssl_passphrase_command_supports_reload", "ssl_prefer_server_ciphers",
    "standard_conforming_strings", "statement_timeout", "stats_fetch_consistency", "subtransaction_buffers",
    "summarize_wal", "superuser_reserved_connections", "sync_replication_slots", "synchronize_seqscans",
    "synchronized_standby_slots", "synchronous_commit", "synchronous_standby_names", "syslog_facility",
    "syslog_ident", "syslog_sequence_numbers", "syslog_split_messages", "tcp_keepalives_count", "tcp_keepalives_idle",
    "tcp_keepalives_interval", "tcp_user_timeout", "temp_buffers", "temp_file_limit", "temp_tablespaces", "timezone",
    "timezone_abbreviations", "trace_notify", "trace_sort", "track_activities", "track_activity_query_size",
    "track_commit_timestamp", "track_counts", "track_functions", "track_io_timing", "track_wal_io_timing",
    "transaction_buffers", "transaction_timeout", "transform_null_equals", "unix_socket_directories",
    "unix_socket_group", "unix_socket_permissions", "update_process_title", "vacuum_buffer_usage_limit",
    "vacuum_cost_delay", "vacuum_cost_limit", "vacuum_cost_page_dirty", "vacuum_cost_page_hit",
    "vacuum_cost_page_miss", "vacuum_failsafe_age", "vacuum_freeze_min_age", "vacuum_freeze_table_age",
    "vacuum_multixact_failsafe_age", "vacuum_multixact_freeze_min_age", "vacuum_multixact_freeze_table_age",
    "wal_buffers", "wal_compression", "wal_consistency_checking", "wal_decode_buffer_size", "wal_init_zero",
    "wal_keep_size", "wal_level", "wal_log_hints", "wal_receiver_create_temp_slot", "wal_receiver_status_interval",
    "wal_receiver_timeout", "wal_recycle", "wal_retrieve_retry_interval", "wal_sender_timeout", "wal_skip_threshold",
    "wal_summary_keep_time", "wal_sync_method", "wal_writer_delay", "wal_writer_flush_after", "work_mem", "xmlbinary",
    "xmloption", "zero_damaged_pages",
};
/* pg-catalog end */
static const char *const mgop_pg_owned[] = {"port", "listen_addresses", "unix_socket_directories", "data_directory",
                                            "hba_file", "ident_file", "wal_level"};
static int mgop_pg_param_cmp(const void *key, const void *elem) { return strcmp(key, *(const char *const *)elem); }

/* A postgresConfig name PostgreSQL 17 would start with: a parameter of its
 * catalog, or an extension's (prefix.name, which PostgreSQL takes as a
 * placeholder). An unknown name in postgresql.conf stops the server at start,
 * so it is refused here, with the nearest name when one is close. 0: fine;
 * otherwise the reason is in msg. */
static int mgop_pg_param_check(const char *key, char *msg, size_t cap) {
  char low[MGOP_EDIT_NAME_MAX];
  const char *near = NULL;
  int best = 4; /* farther than 3 edits is no suggestion */
  size_t n = strlen(key);
  int ok = n > 0 && n < sizeof(low) && (isalpha((unsigned char)key[0]) || key[0] == '_');
  for (size_t i = 0; ok && i < n; i++) {
    ok = isalnum((unsigned char)key[i]) || key[i] == '_' || key[i] == '.';
    low[i] = (char)tolower((unsigned char)key[i]);
  }
  if (!ok) {
    snprintf(msg, cap, "\"%.100s\" is not a PostgreSQL parameter name (letters, digits, _ and, for an extension's, "
             "a prefix and a dot; at most %d characters); fix or remove it", key, MGOP_EDIT_NAME_MAX - 1);
    return -1;
  }
  low[n] = 0;
  for (size_t i = 0; i < sizeof(mgop_pg_owned) / sizeof(mgop_pg_owned[0]); i++)
    if (!strcmp(low, mgop_pg_owned[i])) {
      snprintf(msg, cap, "%s is set by the data plane (pgctld and multipooler depend on it); remove it", key);
      return -1;
    }
  if (strchr(low, '.') || bsearch(low, mgop_pg17_params, sizeof(mgop_pg17_params) / sizeof(mgop_pg17_params[0]),
                                   sizeof(mgop_pg17_params[0]), mgop_pg_param_cmp))
    return 0;
  for (size_t i = 0; i < sizeof(mgop_pg17_params) / sizeof(mgop_pg17_params[0]); i++) {
    int d = mgop_edit_distance(low, mgop_pg17_params[i]);
    if (d < best) best = d, near = mgop_pg17_params[i];
  }
  snprintf(msg, cap, "%s is not a PostgreSQL 17 parameter that postgresql.conf can set (the server would not start)%s%s%s; "
           "fix or remove it", key, near ? "; did you mean " : "", near ? near : "", near ? "?" : "");
  return -1;
}

/* postgresConfigRef (deprecated in favour of postgresConfig, as in the
 * reference operator): a ConfigMap key of postgresql.conf lines. The key is
 * mounted at MGOP_PG_REF_DIR and our postgresql.conf includes it first, so
 * postgresConfig's lines, after it, win. Live, the operator reads the
 * ConfigMap (a GET per turn of the shard: ConfigMaps are not watched) to
 * refuse what postgresConfig refuses and to put its content's hash on the
 * pods, so a changed ConfigMap rolls them at the cluster's next turn; render
 * has no API server and hashes the reference alone. 0, or an error (a
 * stall for bad content; a missing ConfigMap retries with backoff). */
#define MGOP_PG_REF_DIR "/etc/postgres-config-ref"
#define MGOP_PG_REF_MAX (64 * 1024) /* postgresql.conf bytes read from the ConfigMap */
static int mgop_pg_ref_lines(struct mgop_rctx *r, const char *what, const char *name, const char *key, const char *text) {
  int line = 0;
  for (const char *p = text; *p; line++) {
    size_t n = strcspn(p, "\n"), k;
    char pname[128], why[300];
    const char *q = p;
    while (q < p + n && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
    k = strspn(q, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.");
    if (q < p + n && *q != '#') { /* a setting: its name is checked as postgresConfig's are */
      snprintf(pname, sizeof(pname), "%.*s", (int)(k < sizeof(pname) ? k : sizeof(pname) - 1), q);
      if (!k || mgop_pg_param_check(pname, why, sizeof(why))) {
        mgop_stall(r, "InvalidPostgresConfig", "%s.postgresConfigRef: ConfigMap %s, key %s, line %d: %s", what, name, key,
                   line + 1, k ? why : "expected name = value");
        return MGOP_ERR_CONFIG;
      }
    }
    p += n + (p[n] == '\n');
  }
  return MGOP_OK;
}

static int mgop_pg_config_ref(struct mgop_rctx *r, const struct mgop_json *cfg, int ref, const char *what, char *name,
                              char *key, uint64_t *hash) {
  struct mgop_json j;
  struct mgop_buf b;
  char path[600], *text;
  int status, rc, data;
  size_t cap = MGOP_PG_REF_MAX * 2 + 8192;
  if (mgop_json_path_str(cfg, ref, "name", name, 254) || mgop_json_path_str(cfg, ref, "key", key, 254) || !name[0] ||
      !key[0] || key[strspn(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")]) {
    mgop_stall(r, "InvalidPostgresConfig", "%s.postgresConfigRef needs a name and a key (letters, digits, -, _ and .)",
               what);
    return MGOP_ERR_CONFIG;
  }
  if (r->render) { /* offline: the reference, not the content */
    *hash = mgop_fnv1a64(mgop_fnv1a64(MGOP_FNV64_INIT, name, strlen(name) + 1), key, strlen(key));
    return MGOP_OK;
  }
  if (!(text = mgop_arena_alloc(r->arena, cap))) return mgop_seterr(MGOP_ERR_NOMEM, "reconcile arena exhausted");
  mgop_buf_init(&b, text, cap);
  snprintf(path, sizeof(path), "/api/v1/namespaces/%s/configmaps/%s", r->ns, name);
  rc = mgop_kube_get(mgop_api_ptr, path, &b, &status);
  if (rc == MGOP_ERR_NOTFOUND || (!rc && status == 404))
    return mgop_seterr(MGOP_ERR_CONFIG, "%s.postgresConfigRef: ConfigMap %s not found in namespace %s; create it (the "
                       "pool pods cannot start without it) or remove postgresConfigRef", what, name, r->ns);
  if (rc) return rc;
  if (b.overflow)
    return mgop_seterr(MGOP_ERR_CONFIG, "%s.postgresConfigRef: ConfigMap %s is larger than %zu bytes; at most %d bytes "
                       "of postgresql.conf are read (or move the settings into postgresConfig)", what, name, cap,
                       MGOP_PG_REF_MAX);
  if ((rc = mgop_parse_arena(r->arena, b.p, b.len, &j))) return rc;
  data = mgop_json_path(&j, 0, "data");
  text = mgop_arena_alloc(r->arena, MGOP_PG_REF_MAX + 1);
  if (!text) return mgop_seterr(MGOP_ERR_NOMEM, "reconcile arena exhausted");
  if ((rc = mgop_json_str(&j, mgop_json_key(&j, data, key), text, MGOP_PG_REF_MAX + 1))) {
    mgop_stall(r, "InvalidPostgresConfig", "%s.postgresConfigRef: ConfigMap %s %s", what, name,
               rc == MGOP_ERR_TOOBIG ? "holds more than 64 KiB under its key; move settings into postgresConfig"
                                     : "has no such data key; set key to one of its keys");
    return MGOP_ERR_CONFIG;
  }
  if ((rc = mgop_pg_ref_lines(r, what, name, key, text))) return rc;
  *hash = mgop_fnv1a64(MGOP_FNV64_INIT, text, strlen(text));
  return MGOP_OK;
}

static int mgop_build_postgres_config(struct mgop_rctx *r, const struct mgop_json *cfg, const char *what, const char *cr,
                                      const char *uid, const struct mgop_ids *ids, uint64_t *hash, char *ref_name,
                                      char *ref_key) {
  int pc = mgop_json_key(cfg, 0, "postgresConfig"), ref = mgop_json_key(cfg, 0, "postgresConfigRef"), rc;
  int inline_n = mgop_json_is(cfg, pc, JSMN_OBJECT) ? cfg->tok[pc].size : 0;
  uint64_t ref_hash = 0;
  struct mgop_build o;
  char name[300], *text;
  size_t cap = 24 * 1024, len = 0;
  ref_name[0] = ref_key[0] = 0;
  if (inline_n == 0 && !mgop_json_is(cfg, ref, JSMN_OBJECT)) return 0;
  if (!(text = mgop_arena_alloc(r->arena, cap))) return mgop_seterr(MGOP_ERR_NOMEM, "reconcile arena exhausted");
  if (mgop_json_is(cfg, ref, JSMN_OBJECT)) { /* first, so postgresConfig's lines win */
    if ((rc = mgop_pg_config_ref(r, cfg, ref, what, ref_name, ref_key, &ref_hash))) return rc;
    len += (size_t)snprintf(text, cap, "include '" MGOP_PG_REF_DIR "/%s'\n", ref_key);
  }
  for (int i = 0, k = pc + 1; i < inline_n; i++, k = mgop_json_next(cfg, k + 1)) {
    char key[128], val[1024], why[300];
    if (mgop_json_str(cfg, k, key, sizeof(key))) key[0] = 0;
    if (mgop_pg_param_check(key, why, sizeof(why))) {
      mgop_stall(r, "InvalidPostgresConfig", "%s.postgresConfig: %s", what, why);
      return MGOP_ERR_CONFIG;
    }
    for (int j = 0, kj = pc + 1; j < i; j++, kj = mgop_json_next(cfg, kj + 1)) {
      char other[128];
      if (!mgop_json_str(cfg, kj, other, sizeof(other)) && !strcasecmp(other, key)) {
        mgop_stall(r, "InvalidPostgresConfig", "%s.postgresConfig sets %s and %s, one parameter (PostgreSQL names are "
                   "case-insensitive); keep one", what, other, key);
        return MGOP_ERR_CONFIG;
      }
    }
    if (mgop_json_str(cfg, k + 1, val, sizeof(val)) || strpbrk(val, "\n\r")) {
      mgop_stall(r, "InvalidPostgresConfig", "%s.postgresConfig.%s: the value must be one line of at most %zu "
                 "characters", what, key, sizeof(val) - 1);
      return MGOP_ERR_CONFIG;
    }
    len += (size_t)snprintf(text + len, len < cap ? cap - len : 0, "%s = '", key);
    for (const char *c = val; *c && len + 4 < cap; c++) { /* a quote is doubled, a backslash escaped */
      if (*c == '\'' || *c == '\\') text[len++] = *c;
      text[len++] = *c;
    }
    len += (size_t)snprintf(text + len, len < cap ? cap - len : 0, "'\n");
    if (len >= cap) {
      mgop_stall(r, "InvalidPostgresConfig", "%s.postgresConfig renders to more than %zu bytes; set fewer or shorter "
                 "values", what, cap - 1);
      return MGOP_ERR_CONFIG;
    }
  }
  *hash = mgop_fnv1a64(mgop_fnv1a64(MGOP_FNV64_INIT, text, len), &ref_hash, sizeof(ref_hash));
  snprintf(name, sizeof(name), "%s-postgres-config", cr);
  if ((rc = mgop_build_begin(r, &o, K_CM, name))) return rc;
  mgop_build_meta_ids(&o, "postgres-config", ids, K_SHARD, cr, uid);
  mgop_jw_key(&o.w, "data"); mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, "postgresql.conf"); mgop_jw_strn(&o.w, text, len);
  mgop_jw_obj_end(&o.w);
  return (rc = mgop_build_end(&o)) ? rc : 1;
}

/* MULTI_CELL_AT_LEAST_2 (the database's durabilityPolicy, else the
 * cluster's) with the shard's pools in exactly two cells: a write needs a
 * pod in each, so each cell also keeps one pod (a PDB per cell, minAvailable
 * 1), as the reference operator does. More cells: the shard-wide PDB alone. */
static int mgop_build_cell_pdbs(struct mgop_rctx *r, const struct mgop_json *d, int db_tok, const struct mgop_json *pdoc,
                                int pools, int all_cells, const char *cr, const char *uid, const struct mgop_ids *ids,
                                const char *db, const char *tg_name, const char *sname) {
  char policy[32] = "", cells[2][64];
  int n = 0, rc;
  mgop_json_path_str(d, db_tok, "durabilityPolicy", policy, sizeof(policy));
  if (!policy[0]) mgop_json_path_str(&r->root, r->spec, "durabilityPolicy", policy, sizeof(policy));
  if (strcmp(policy, "MULTI_CELL_AT_LEAST_2")) return MGOP_OK;
  for (int pi = 0, pt = pools + 1; pi < pdoc->tok[pools].size; pi++, pt = mgop_json_next(pdoc, pt + 1)) {
    int pcells = mgop_json_key(pdoc, pt + 1, "cells"), own = mgop_json_is(pdoc, pcells, JSMN_ARRAY);
    int nc = own ? pdoc->tok[pcells].size : r->root.tok[all_cells].size;
    for (int ci = 0; ci < nc; ci++) {
      char cell[64] = "";
      int seen = 0;
      if (own) mgop_json_str(pdoc, mgop_json_at(pdoc, pcells, ci), cell, sizeof(cell));
      else mgop_json_path_str(&r->root, mgop_json_at(&r->root, all_cells, ci), "name", cell, sizeof(cell));
      for (int k = 0; k < n && k < 2; k++) seen |= !strcmp(cells[k], cell);
      if (seen || !cell[0]) continue;
      if (n < 2) snprintf(cells[n], sizeof(cells[n]), "%s", cell);
      n++;
    }
  }
  if (n != 2) return MGOP_OK;
  for (int k = 0; k < 2; k++) {
    char pdb[64];
    const char *parts[] = {r->name, db, tg_name, sname, "cell", cells[k], "pdb"};
    struct mgop_ids cids = *ids;
    cids.cell = cells[k];
    mgop_name(pdb, sizeof(pdb), MGOP_LIMIT_SERVICE, 1, parts, 7);
    if ((rc = mgop_build_pdb(r, K_SHARD, cr, uid, pdb, "shard-pool", &cids, 1))) return rc;
  }
  return MGOP_OK;
}

/* A superuser name (at most 63 characters) JSON-escaped, at worst 6 bytes each. */
#define MGOP_SU_JSON_BUF (6 * 63 + 1)
/* What one shard's builders share: its names and resolved settings, and,
 * for its workloads, the pieces every pool pod has. Per thread (admission
 * runs the builders on the serving thread), not on the stack (7 KiB). */
struct mgop_shard_build {
  const struct mgop_json *d;  /* the document the shard is in, and where */
  int db_tok, tg, shard;
  const char *db, *tg_name, *addr, *root;
  char sname[32], cr[254], src[300], what[200];
  struct mgop_json cfg, defpool; /* the resolved shard; the default pool */
  const struct mgop_json *pdoc; /* where its pools are                   */
  int pools;
  struct mgop_ids ids;
  struct mgop_backup_loc bk;
  struct mgop_backup_pod bp;
  /* workloads */
  const char *uid;
  int all_cells;
  char cm[300], secret[300], pw_key[254], su_json[MGOP_SU_JSON_BUF], initdb[6 * 512 + 1];
  int pg_conf;                /* a postgres-config ConfigMap, its hash   */
  uint64_t pg_conf_hash;
  char pg_ref_name[254], pg_ref_key[254]; /* postgresConfigRef ("": none) */
  long long replicas;         /* pool pods of the shard, all cells       */
};

/* The Shard CR (phase 2). */
static int mgop_build_shard_cr(struct mgop_rctx *r, struct mgop_shard_build *sb, const char *tg_cr) {
  struct mgop_build o;
  const char *tg_uid = mgop_uid_of(r, K_TG, tg_cr);
  int rc;
  if (!tg_uid) return mgop_seterr(MGOP_ERR_STATUS, "TableGroup %s has no uid yet", tg_cr);
  if ((rc = mgop_build_begin(r, &o, K_SHARD, sb->cr))) return rc;
  mgop_build_meta_ids(&o, "shard", &sb->ids, K_TG, tg_cr, tg_uid);
  mgop_jw_key(&o.w, "spec"); mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, "databaseName"); mgop_jw_str(&o.w, sb->db);
  mgop_jw_key(&o.w, "tableGroupName"); mgop_jw_str(&o.w, sb->tg_name);
  mgop_jw_key(&o.w, "shardName"); mgop_jw_str(&o.w, sb->sname);
  mgop_jw_key(&o.w, "globalTopoServer"); mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, "address"); mgop_jw_str(&o.w, sb->addr);
  mgop_jw_key(&o.w, "rootPath"); mgop_jw_str(&o.w, sb->root);
  mgop_jw_key(&o.w, "implementation"); mgop_jw_str(&o.w, "etcd");
  mgop_jw_obj_end(&o.w);
  mgop_copy_key(&o.w, "multiorch", &sb->cfg, mgop_json_key(&sb->cfg, 0, "multiorch"));
  mgop_copy_key(&o.w, "pools", sb->pdoc, sb->pools);
  mgop_jw_key(&o.w, "backup"); mgop_backup_write(&o.w, &sb->bk);
  mgop_jw_obj_end(&o.w);
  if (r->nshard_names < MGOP_SHARDS_MAX) { /* the slot mgop_walk_shards fills next */
    snprintf(r->shard_cron[r->nshard_names], sizeof(r->shard_cron[0]), "%s", sb->bk.schedule);
    r->shard_jitter[r->nshard_names] = sb->bk.jitter_s;
    r->shard_keep[r->nshard_names] = sb->bk.retention;
  }
  return mgop_build_end(&o);
}

/* A ConfigMap of the shard with one key. */
static int mgop_build_shard_cm(struct mgop_rctx *r, struct mgop_shard_build *sb, const char *name, const char *component,
                               const char *key, const char *text) {
  struct mgop_build o;
  int rc;
  if ((rc = mgop_build_begin(r, &o, K_CM, name))) return rc;
  mgop_build_meta_ids(&o, component, &sb->ids, K_SHARD, sb->cr, sb->uid);
  mgop_jw_key(&o.w, "data"); mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, key); mgop_jw_str(&o.w, text);
  mgop_jw_obj_end(&o.w);
  return mgop_build_end(&o);
}

/* The pool pod's containers that take a per-pod buffer: their strings. */
struct mgop_pool_bufs {
  char a[8][1100], env0[1600 + 400 + 3200], env1[1700 + 400], env2[256 + MGOP_SU_JSON_BUF], mnt0[1280 + 160], mnt1[1280 + 320];
  char image[MGOP_IMAGE_BUF], pooler_image[MGOP_IMAGE_BUF], level[16];
  struct mgop_tls_parts tls;
};
static const char mgop_pool_service_ports[] =
    "[{\"name\":\"http\",\"port\":15200,\"targetPort\":\"http\",\"protocol\":\"TCP\"},"
    "{\"name\":\"grpc\",\"port\":15270,\"targetPort\":\"grpc\",\"protocol\":\"TCP\"},"
    "{\"name\":\"postgres\",\"port\":5432,\"targetPort\":\"postgres\",\"protocol\":\"TCP\"},"
    "{\"name\":\"pgctld-http\",\"port\":15400,\"targetPort\":\"pgctld-http\",\"protocol\":\"TCP\"}]";

/* pgctld (postgres), the native sidecar of a pool pod in cell. */
static void mgop_pgctld_ctr(struct mgop_rctx *r, const struct mgop_shard_build *sb, int pv, const char *identity,
                            struct mgop_ctr *c, struct mgop_pool_bufs *b) {
  const struct mgop_backup_pod *bp = &sb->bp;
  c->name = "postgres";
  c->sidecar = 1; /* started before multipooler, stopped after it (docs/components.md 7.1) */
  c->image = mgop_image(r, MGOP_IMG_POSTGRES, b->image, sizeof(b->image));
  c->otel = "pgctld";
  c->command = "[\"/usr/local/bin/pgctld\"]";
  snprintf(b->a[0], sizeof(b->a[0]), "--log-level=%s", mgop_log_level_of(r, "pgctld", b->level, sizeof(b->level)));
  {
    const char *args[] = {"server", "--pooler-dir=/var/lib/pooler", "--grpc-port=15470", "--pg-port=5432",
                          "--pg-listen-addresses=*", b->a[0], "--grpc-socket-file=/var/lib/pooler/pgctld.sock",
                          "--pg-hba-template=/etc/pgctld/pg_hba_template.conf", "--http-port=15400",
                          bp->a_cert, bp->a_port};
    memcpy(c->args, args, sizeof(args));
    c->nargs = 11;
  }
  c->env = b->env0;
  snprintf(b->env0, sizeof(b->env0), "[{\"name\":\"PGDATA\",\"value\":\"/var/lib/pooler/pg_data\"},"
           "{\"name\":\"POSTGRES_USER\",\"value\":\"%s\"},"
           "{\"name\":\"POSTGRES_PASSWORD_FILE\",\"value\":\"/etc/postgres-password/password\"}%s%s%s%s%s%s]",
           sb->su_json, sb->initdb[0] ? ",{\"name\":\"POSTGRES_INITDB_ARGS\",\"value\":\"" : "", sb->initdb,
           sb->initdb[0] ? "\"}" : "",
           sb->pg_conf ? ",{\"name\":\"POSTGRES_INITDB_EXTRA_CONF\",\"value\":\"/etc/postgres-config/postgresql.conf\"}" : "",
           r->init.env, bp->pooler_env);
  c->ports = "[{\"name\":\"pgctld-http\",\"containerPort\":15400,\"protocol\":\"TCP\"},"
             "{\"name\":\"pgctld-grpc\",\"containerPort\":15470,\"protocol\":\"TCP\"},"
             "{\"name\":\"pgbackrest\",\"containerPort\":8432,\"protocol\":\"TCP\"}]";
  c->ready_path = c->live_path = "/live";
  c->probe_port = 15400;
  c->res_doc = sb->pdoc;
  c->res_tok = mgop_json_path(sb->pdoc, pv, "postgres.resources");
  c->res_default = "{\"requests\":{\"cpu\":\"100m\",\"memory\":\"256Mi\"},\"limits\":{\"memory\":\"512Mi\"}}";
  c->mounts = b->mnt0;
  snprintf(b->mnt0, sizeof(b->mnt0), "[{\"name\":\"pgdata\",\"mountPath\":\"/var/lib/pooler\"},"
           "{\"name\":\"socket-dir\",\"mountPath\":\"/var/run/postgresql\"},"
           "{\"name\":\"pg-hba-template\",\"mountPath\":\"/etc/pgctld\",\"readOnly\":true},"
           "{\"name\":\"postgres-password\",\"mountPath\":\"/etc/postgres-password\",\"readOnly\":true}%s%s%s%s]",
           sb->pg_conf ? ",{\"name\":\"postgres-config\",\"mountPath\":\"/etc/postgres-config\",\"readOnly\":true}" : "",
           sb->pg_ref_name[0] ? ",{\"name\":\"postgres-config-ref\",\"mountPath\":\"" MGOP_PG_REF_DIR "\",\"readOnly\":true}"
                              : "",
           r->init.mount, bp->pgctld_mounts);
  c->security = identity;
}

/* multipooler, the main container of a pool pod in cell. */
static void mgop_multipooler_ctr(struct mgop_rctx *r, const struct mgop_shard_build *sb, int pv, const char *cell,
                                 const char *identity, struct mgop_ctr *c, struct mgop_pool_bufs *b) {
  const struct mgop_backup_pod *bp = &sb->bp;
  c->name = "multipooler";
  c->image = mgop_image(r, MGOP_IMG_MULTIPOOLER, b->pooler_image, sizeof(b->pooler_image));
  c->otel = "multipooler";
  snprintf(b->a[1], sizeof(b->a[1]), "--topo-global-server-addresses=%s", sb->addr);
  snprintf(b->a[2], sizeof(b->a[2]), "--topo-global-root=%s", sb->root);
  snprintf(b->a[3], sizeof(b->a[3]), "--cell=%s", cell);
  snprintf(b->a[4], sizeof(b->a[4]), "--database=%s", sb->db);
  snprintf(b->a[5], sizeof(b->a[5]), "--table-group=%s", sb->tg_name);
  snprintf(b->a[6], sizeof(b->a[6]), "--shard=%s", sb->sname);
  snprintf(b->a[7], sizeof(b->a[7]), "--log-level=%s", mgop_log_level_of(r, "multipooler", b->level, sizeof(b->level)));
  {
    const char *args[] = {"multipooler", "--http-port=15200", "--grpc-port=15270", "--pooler-dir=/var/lib/pooler",
                          "--socket-file=/var/lib/pooler/pg_sockets/.s.PGSQL.5432", "--service-map=grpc-pooler",
                          b->a[1], b->a[2], b->a[3], b->a[4], b->a[5], b->a[6], "--service-id=$(POD_NAME)", b->a[7],
                          bp->a_crt, bp->a_key, bp->a_ca, bp->a_cipher};
    memcpy(c->args, args, sizeof(args));
    c->nargs = bp->a_cipher[0] ? 18 : 17;
  }
  c->nargs += mgop_tls_component(r, MGOP_TLS_POOLER, &b->tls, c->args + c->nargs);
  c->env = b->env1;
  snprintf(b->env1, sizeof(b->env1), "[{\"name\":\"POD_NAME\",\"valueFrom\":{\"fieldRef\":{\"fieldPath\":\"metadata.name\"}}},"
           "{\"name\":\"PGDATA\",\"value\":\"/var/lib/pooler/pg_data\"},"
           "{\"name\":\"POSTGRES_USER\",\"value\":\"%s\"},"
           "{\"name\":\"POSTGRES_PASSWORD_FILE\",\"value\":\"/etc/postgres-password/password\"}%s]", sb->su_json,
           bp->pooler_env);
  c->ports = "[{\"name\":\"http\",\"containerPort\":15200,\"protocol\":\"TCP\"},"
             "{\"name\":\"grpc\",\"containerPort\":15270,\"protocol\":\"TCP\"},"
             "{\"name\":\"postgres\",\"containerPort\":5432,\"protocol\":\"TCP\"}]";
  c->ready_path = "/ready";
  c->live_path = "/live";
  c->probe_port = 15200;
  c->res_doc = sb->pdoc;
  c->res_tok = mgop_json_path(sb->pdoc, pv, "multipooler.resources");
  c->res_default = "{\"requests\":{\"cpu\":\"100m\",\"memory\":\"128Mi\"},\"limits\":{\"memory\":\"256Mi\"}}";
  c->mounts = b->mnt1;
  snprintf(b->mnt1, sizeof(b->mnt1), "[{\"name\":\"pgdata\",\"mountPath\":\"/var/lib/pooler\"},"
           "{\"name\":\"socket-dir\",\"mountPath\":\"/var/run/postgresql\"},"
           "{\"name\":\"postgres-password\",\"mountPath\":\"/etc/postgres-password\",\"readOnly\":true}%s%s]",
           bp->pooler_mounts, b->tls.mount);
  c->security = identity;
}

/* The pool's PVC retention policy: shard (its inline spec or overrides, pool
 * first), table group, cluster, then the ShardTemplate (pool first), then
 * Retain. */
static void mgop_write_pool_pvc_policy(struct mgop_rctx *r, struct mgop_jw *w, const struct mgop_shard_build *sb,
                                       const char *pool) {
  const struct mgop_json *d = sb->d;
  struct mgop_json tj;
  char pol_d[16], pol_s[16];
  int own = mgop_json_key(d, sb->shard, "spec"), own_pools, t_spec = -1, t_pools;
  memset(&tj, 0, sizeof(tj));
  if (own < 0) own = mgop_json_key(d, sb->shard, "overrides");
  own_pools = mgop_json_key(d, own, "pools");
  if (!strncmp(sb->src, "ShardTemplate/", 14) && mgop_fetch(r, K_SHARDT, sb->src + 14, &tj) == MGOP_OK)
    t_spec = mgop_json_key(&tj, 0, "spec");
  t_pools = mgop_json_key(&tj, t_spec, "pools");
  const struct mgop_json *docs[] = {d, d, d, &r->root, &tj, &tj};
  int toks[] = {mgop_json_key(d, own_pools, pool), own, sb->tg, r->spec, mgop_json_key(&tj, t_pools, pool), t_spec};
  if (t_spec < 0) toks[4] = toks[5] = -1;
  mgop_jw_key(w, "persistentVolumeClaimRetentionPolicy"); mgop_jw_obj(w);
  mgop_jw_key(w, "whenDeleted"); mgop_jw_str(w, mgop_pvc_policy(r, "whenDeleted", docs, toks, 6, pol_d, sizeof(pol_d)));
  mgop_jw_key(w, "whenScaled"); mgop_jw_str(w, mgop_pvc_policy(r, "whenScaled", docs, toks, 6, pol_s, sizeof(pol_s)));
  mgop_jw_obj_end(w);
}

/* The pgdata volumeClaimTemplate of a pool StatefulSet. */
static void mgop_write_pool_vct(struct mgop_rctx *r, struct mgop_jw *w, const struct mgop_shard_build *sb, int pv,
                                const char *pool, const char *cell, const char *sts, const struct mgop_ids *pids,
                                long long reps) {
  char storage_size[MGOP_QUANTITY_BUF], klass[128], field[400];
  const char *want;
  mgop_jw_key(w, "volumeClaimTemplates"); mgop_jw_arr(w); mgop_jw_obj(w);
  mgop_jw_key(w, "metadata"); mgop_jw_obj(w); mgop_jw_key(w, "name"); mgop_jw_str(w, "pgdata");
  mgop_jw_key(w, "labels"); mgop_jw_obj(w); mgop_labels(w, r->name, "shard-pool"); mgop_id_labels(w, pids);
  mgop_jw_obj_end(w); mgop_jw_obj_end(w);
  mgop_jw_key(w, "spec"); mgop_jw_obj(w);
  mgop_jw_key(w, "accessModes");
  if (mgop_json_path(sb->pdoc, pv, "storage.accessModes") >= 0)
    mgop_jw_copy(w, sb->pdoc, mgop_json_path(sb->pdoc, pv, "storage.accessModes"));
  else MGOP_JW_LIT(w, "[\"ReadWriteOnce\"]");
  if (mgop_str_or(sb->pdoc, pv, "storage.class", klass, sizeof(klass), NULL)) {
    mgop_jw_key(w, "storageClassName"); mgop_jw_str(w, klass);
  }
  mgop_jw_key(w, "resources"); mgop_jw_obj(w); mgop_jw_key(w, "requests"); mgop_jw_obj(w);
  want = mgop_str_or(sb->pdoc, pv, "storage.size", storage_size, sizeof(storage_size), "1Gi");
  snprintf(field, sizeof(field), "%.150s.pools.%.62s.storage.size (cell %.30s, from %.30s)", sb->what, pool, cell, sb->src);
  mgop_jw_key(w, "storage"); mgop_jw_str(w, mgop_vct_size(r, sts, "pgdata", want, reps, field));
  mgop_jw_obj_end(w); mgop_jw_obj_end(w);
  mgop_jw_obj_end(w); mgop_jw_obj_end(w); mgop_jw_arr_end(w);
}

/* The token of the cell named cell in spec.cells (all_cells), -1 when it
 * is not there. */
static int mgop_cell_token(struct mgop_rctx *r, int all_cells, const char *cell) {
  int tok = -1;
  for (int k = 0; k < r->root.tok[all_cells].size; k++) {
    char n[64];
    int ct = mgop_json_at(&r->root, all_cells, k);
    if (mgop_json_path_str(&r->root, ct, "name", n, sizeof(n)) == MGOP_OK && !strcmp(n, cell)) tok = ct;
  }
  return tok;
}

/* The cell of a pool: its own cells list's ci-th, else spec.cells' ci-th;
 * the cell's token in spec.cells (-1: not there, stalled). */
static int mgop_pool_cell_at(struct mgop_rctx *r, const struct mgop_shard_build *sb, int pcells, int ci, const char *pool,
                             char *cell, size_t cap) {
  int cell_tok;
  if (mgop_json_is(sb->pdoc, pcells, JSMN_ARRAY)) mgop_json_str(sb->pdoc, mgop_json_at(sb->pdoc, pcells, ci), cell, cap);
  else mgop_json_path_str(&r->root, mgop_json_at(&r->root, sb->all_cells, ci), "name", cell, cap);
  if ((cell_tok = mgop_cell_token(r, sb->all_cells, cell)) < 0)
    mgop_stall(r, "InvalidSpec", "%s.pools.%s.cells names cell \"%s\", which is not in spec.cells; add the cell "
               "or fix the name", sb->what, pool, cell);
  return cell_tok;
}

/* One pool in one cell: its headless Service and StatefulSet. */
static int mgop_build_pool_set(struct mgop_rctx *r, struct mgop_shard_build *sb, const char *pool, int pv, int pcells,
                               int ci, const char *identity) {
  static _Thread_local struct mgop_pool_bufs b; /* 13 KiB */
  char cell[64], zone[64], sts[64], svc[64], vols[4608 + 1632 + 720], pod_ann[320], ref_vol[900] = "";
  const char *zone_key = NULL;
  long long per = mgop_i64_or(sb->pdoc, pv, "replicasPerCell", 3), reps;
  struct mgop_ids pids = sb->ids;
  struct mgop_build o;
  struct mgop_ctr ctr[3];
  struct mgop_podspec p;
  int cell_tok, rc;
  if ((cell_tok = mgop_pool_cell_at(r, sb, pcells, ci, pool, cell, sizeof(cell))) < 0) return MGOP_ERR_CONFIG;
  mgop_cell_zone(&r->root, cell_tok, &zone_key, zone, sizeof(zone));
  pids.cell = cell;
  pids.pool = pool;
  {
    const char *parts[] = {r->name, sb->db, sb->tg_name, sb->sname, "pool", pool, cell};
    const char *hparts[] = {r->name, sb->db, sb->tg_name, sb->sname, "pool", pool, cell, "headless"};
    mgop_name(sts, sizeof(sts), MGOP_LIMIT_STS, 1, parts, 7);
    mgop_name(svc, sizeof(svc), MGOP_LIMIT_SERVICE, 1, hparts, 8);
  }
  if ((rc = mgop_build_service(r, K_SHARD, sb->cr, sb->uid, svc, "shard-pool", &pids, 1, mgop_pool_service_ports)))
    return rc;
  memset(ctr, 0, sizeof(ctr));
  mgop_pgctld_ctr(r, sb, pv, identity, &ctr[0], &b);
  mgop_multipooler_ctr(r, sb, pv, cell, identity, &ctr[1], &b);
  mgop_exporter_ctr(&ctr[2], sb->su_json, b.env2, sizeof(b.env2));
  _Static_assert(sizeof(vols) >= 2 * (300 + 64) + 300 + 254 + (300 + 64) + sizeof(sb->bp.volumes) + sizeof(ref_vol) +
                     sizeof(b.tls.volume) + sizeof(r->init.volume) + 256,
                 "the pool volumes fit");
  if (sb->pg_ref_name[0]) /* postgresConfigRef's key, and only it, as a file */
    snprintf(ref_vol, sizeof(ref_vol), ",{\"name\":\"postgres-config-ref\",\"configMap\":{\"name\":\"%s\",\"items\":"
             "[{\"key\":\"%s\",\"path\":\"%s\"}]}}", sb->pg_ref_name, sb->pg_ref_key, sb->pg_ref_key);
  snprintf(vols, sizeof(vols),
           "[{\"name\":\"socket-dir\",\"emptyDir\":{}},"
           "{\"name\":\"pg-hba-template\",\"configMap\":{\"name\":\"%s\"}},"
           "{\"name\":\"postgres-exporter-queries\",\"configMap\":{\"name\":\"%s-exporter-queries\"}},"
           "{\"name\":\"postgres-password\",\"secret\":{\"secretName\":\"%s\",\"defaultMode\":292,"
           "\"items\":[{\"key\":\"%s\",\"path\":\"password\"}]}}%s%s%s%s%s%s%s]", sb->cm, sb->cr, sb->secret, sb->pw_key,
           sb->pg_conf ? ",{\"name\":\"postgres-config\",\"configMap\":{\"name\":\"" : "", sb->pg_conf ? sb->cr : "",
           sb->pg_conf ? "-postgres-config\"}}" : "", ref_vol, sb->bp.volumes, b.tls.volume, r->init.volume);
  memset(&p, 0, sizeof(p));
  p.component = "shard-pool";
  p.ids = &pids;
  p.doc = sb->pdoc;
  p.comp = pv;
  p.tolerations = mgop_json_key(sb->pdoc, pv, "tolerations");
  mgop_json_i64(sb->pdoc, mgop_json_key(sb->pdoc, pv, "fsGroup"), &p.fs_group); /* unset: none */
  p.zone_key = zone_key;
  p.zone = zone;
  p.ctr = ctr;
  p.nctr = 3;
  p.volumes = vols;
  p.service_account = sb->bk.service_account[0] ? sb->bk.service_account : NULL; /* IRSA */
  { /* the configuration's hash: a change of postgresConfig is a change of the pods */
    char conf_hash[80] = "", extra[256];
    if (sb->pg_conf) snprintf(conf_hash, sizeof(conf_hash), ",\"multigres.com/postgres-config-hash\":\"%016llx\"",
                              (unsigned long long)sb->pg_conf_hash);
    snprintf(extra, sizeof(extra), ",\"prometheus.io/scrape\":\"true\",\"prometheus.io/port\":\"9187\","
             "\"prometheus.io/path\":\"/metrics\"%s", conf_hash);
    p.annotations = mgop_tls_pod_annotations(r, MGOP_TLS_POOLER, extra, pod_ann, sizeof(pod_ann));
  }
  reps = mgop_scale_down_guard(r, sb->cr, sts, cell, per); /* never removes the primary */
  if ((rc = mgop_build_begin(r, &o, K_STS, sts))) return rc;
  mgop_build_meta_ids(&o, "shard-pool", &pids, K_SHARD, sb->cr, sb->uid);
  mgop_jw_key(&o.w, "spec"); mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, "replicas"); mgop_jw_i64(&o.w, reps);
  mgop_jw_key(&o.w, "serviceName"); mgop_jw_str(&o.w, svc);
  mgop_jw_key(&o.w, "podManagementPolicy"); mgop_jw_str(&o.w, "Parallel");
  /* the operator rolls pool pods itself, replicas first, primary last */
  mgop_jw_key(&o.w, "updateStrategy"); MGOP_JW_LIT(&o.w, "{\"type\":\"OnDelete\"}");
  mgop_write_selector(r, &o.w, "shard-pool", &pids);
  mgop_write_pool_pvc_policy(r, &o.w, sb, pool);
  mgop_write_pod_template(r, &o.w, &p);
  mgop_write_pool_vct(r, &o.w, sb, pv, pool, cell, sts, &pids, reps);
  mgop_jw_obj_end(&o.w);
  if ((rc = mgop_build_end(&o))) return rc;
  r->pool_replicas += (int)reps;
  sb->replicas += reps;
  r->pool_sets++;
  return MGOP_OK;
}

/* multiorch per cell: its own list, else every cell with a pool of this shard. */
static int mgop_build_shard_orch(struct mgop_rctx *r, struct mgop_shard_build *sb) {
  const struct mgop_json *cfg = &sb->cfg;
  int orch = mgop_json_key(cfg, 0, "multiorch"), ocells = mgop_json_key(cfg, orch, "cells"), rc;
  int own = mgop_json_is(cfg, ocells, JSMN_ARRAY) && cfg->tok[ocells].size;
  int n = own ? cfg->tok[ocells].size : r->root.tok[sb->all_cells].size;
  for (int ci = 0; ci < n; ci++) {
    char cell[64], dn[254], sv[64], zone[64], a_addr[1100], a_root[600], a_cell[96], a_wt[200], a_lv[40], level[16],
        image[MGOP_IMAGE_BUF];
    const char *zone_key = NULL;
    struct mgop_ids oids = sb->ids;
    struct mgop_ctr ctr;
    struct mgop_podspec p;
    int cell_tok;
    if (own) mgop_json_str(cfg, mgop_json_at(cfg, ocells, ci), cell, sizeof(cell));
    else mgop_json_path_str(&r->root, mgop_json_at(&r->root, sb->all_cells, ci), "name", cell, sizeof(cell));
    if ((cell_tok = mgop_cell_token(r, sb->all_cells, cell)) < 0) {
      mgop_stall(r, "InvalidSpec", "%s.multiorch.cells names cell \"%s\", which is not in spec.cells; add the cell "
                 "or fix the name", sb->what, cell);
      return MGOP_ERR_CONFIG;
    }
    mgop_cell_zone(&r->root, cell_tok, &zone_key, zone, sizeof(zone));
    oids.cell = cell;
    {
      const char *parts[] = {r->name, sb->db, sb->tg_name, sb->sname, "multiorch", cell};
      mgop_name(dn, sizeof(dn), MGOP_LIMIT_DEFAULT, 1, parts, 6);
      mgop_name(sv, sizeof(sv), MGOP_LIMIT_SERVICE, 1, parts, 6);
    }
    memset(&ctr, 0, sizeof(ctr));
    ctr.name = "multiorch";
    ctr.image = mgop_image(r, MGOP_IMG_MULTIORCH, image, sizeof(image));
    ctr.otel = "multiorch";
    snprintf(a_addr, sizeof(a_addr), "--topo-global-server-addresses=%s", sb->addr);
    snprintf(a_root, sizeof(a_root), "--topo-global-root=%s", sb->root);
    snprintf(a_cell, sizeof(a_cell), "--cell=%s", cell);
    snprintf(a_wt, sizeof(a_wt), "--watch-targets=%s/%s/%s", sb->db, sb->tg_name, sb->sname);
    snprintf(a_lv, sizeof(a_lv), "--log-level=%s", mgop_log_level_of(r, "multiorch", level, sizeof(level)));
    {
      const char *args[] = {"multiorch", "--http-port=15300", "--grpc-port=15370", a_addr, a_root, a_cell, a_wt, a_lv};
      memcpy(ctr.args, args, sizeof(args));
      ctr.nargs = 8;
    }
    static _Thread_local struct mgop_tls_parts tls; /* 3 KiB */
    char vols[sizeof(tls.volume) + 2], mounts[sizeof(tls.mount) + 2];
    ctr.nargs += mgop_tls_component(r, MGOP_TLS_ORCH, &tls, ctr.args + ctr.nargs);
    ctr.mounts = mgop_json_list2(mounts, sizeof(mounts), tls.mount, "");
    ctr.ports = "[{\"name\":\"http\",\"containerPort\":15300,\"protocol\":\"TCP\"},"
                "{\"name\":\"grpc\",\"containerPort\":15370,\"protocol\":\"TCP\"}]";
    ctr.ready_path = "/ready";
    ctr.live_path = "/live";
    ctr.probe_port = 15300;
    ctr.res_doc = cfg;
    ctr.res_tok = mgop_json_key(cfg, orch, "resources");
    ctr.res_default = "{\"requests\":{\"cpu\":\"50m\",\"memory\":\"64Mi\"},\"limits\":{\"memory\":\"128Mi\"}}";
    memset(&p, 0, sizeof(p));
    p.component = "multiorch";
    p.ids = &oids;
    p.doc = cfg;
    p.comp = orch;
    p.tolerations = mgop_json_path(cfg, orch, "placement.tolerations");
    p.zone_key = zone_key;
    p.zone = zone;
    p.ctr = &ctr;
    p.nctr = 1;
    p.volumes = mgop_json_list2(vols, sizeof(vols), tls.volume, "");
    char pod_ann[96];
    p.annotations = mgop_tls_pod_annotations(r, MGOP_TLS_ORCH, "", pod_ann, sizeof(pod_ann));
    if ((rc = mgop_build_deployment(r, K_SHARD, sb->cr, sb->uid, dn, mgop_i64_or(cfg, orch, "replicas", 1), &p))) return rc;
    if ((rc = mgop_build_service(r, K_SHARD, sb->cr, sb->uid, sv, "multiorch", &oids, 0,
                                 "[{\"name\":\"http\",\"port\":15300,\"targetPort\":\"http\",\"protocol\":\"TCP\"},"
                                 "{\"name\":\"grpc\",\"port\":15370,\"targetPort\":\"grpc\",\"protocol\":\"TCP\"}]")))
      return rc;
    r->orch_sets++;
  }
  return MGOP_OK;
}

/* The shard's workloads (phase 3): ConfigMaps, password, backup objects,
 * a StatefulSet and headless Service per (pool, cell), the PDBs, multiorch. */
static int mgop_build_shard_workloads(struct mgop_rctx *r, struct mgop_shard_build *sb) {
  const struct mgop_json *pdoc = sb->pdoc;
  char qcm[300];
  int rc, own_secret = mgop_password_ref(r, sb->secret, sizeof(sb->secret), sb->pw_key, sizeof(sb->pw_key));
  if (!(sb->uid = mgop_uid_of(r, K_SHARD, sb->cr))) return mgop_seterr(MGOP_ERR_STATUS, "Shard %s has no uid yet", sb->cr);
  sb->all_cells = mgop_json_key(&r->root, r->spec, "cells");
  snprintf(sb->cm, sizeof(sb->cm), "%s-pg-hba", sb->cr);
  if (own_secret) snprintf(sb->secret, sizeof(sb->secret), "%s-postgres-password", sb->cr);
  if ((rc = mgop_build_shard_cm(r, sb, sb->cm, "pg-hba-config", "pg_hba_template.conf", mgop_pg_hba))) return rc;
  snprintf(qcm, sizeof(qcm), "%s-exporter-queries", sb->cr);
  if ((rc = mgop_build_shard_cm(r, sb, qcm, "postgres-exporter-queries", "queries.yml", mgop_exporter_queries))) return rc;
  if ((rc = mgop_build_postgres_config(r, &sb->cfg, sb->what, sb->cr, sb->uid, &sb->ids, &sb->pg_conf_hash,
                                       sb->pg_ref_name, sb->pg_ref_key)) < 0)
    return rc;
  sb->pg_conf = rc == 1;
  if (!r->render && own_secret && (rc = mgop_ensure_password_secret(r, sb->secret, sb->cr, sb->uid, &sb->ids, sb->cm)))
    return rc;
  if (!r->render && !own_secret && (rc = mgop_check_password_ref(r, sb->secret, sb->pw_key))) return rc;
  { /* the superuser may not be among the init Secret's roles */
    char su[64];
    if ((rc = mgop_check_init_secrets(r, mgop_str_or(&r->root, r->spec, "postgresSuperuser", su, sizeof(su), "postgres"))))
      return rc;
  }
  if ((rc = mgop_backup_shard(r, sb->d, sb->tg, sb->shard, sb->cr, sb->uid, &sb->ids, &sb->bk, pdoc, sb->pools))) return rc;
  mgop_backup_pod_parts(&sb->bk, &sb->bp);
  sb->replicas = 0;
  { /* the superuser (the cluster's) and initdb's extra arguments (the shard's, resolved) */
    char v[520];
    mgop_json_inner(mgop_str_or(&r->root, r->spec, "postgresSuperuser", v, sizeof(v), "postgres"), sb->su_json,
                    sizeof(sb->su_json));
    sb->initdb[0] = 0;
    if (!mgop_json_path_str(&sb->cfg, 0, "initdbArgs", v, sizeof(v)) && v[0]) mgop_json_inner(v, sb->initdb, sizeof(sb->initdb));
  }
  for (int pi = 0, pt = sb->pools + 1; pi < pdoc->tok[sb->pools].size; pi++, pt = mgop_json_next(pdoc, pt + 1)) {
    char pool[64], identity[96];
    int pv = pt + 1, pcells = mgop_json_key(pdoc, pv, "cells");
    int ncells = mgop_json_is(pdoc, pcells, JSMN_ARRAY) ? pdoc->tok[pcells].size : r->root.tok[sb->all_cells].size;
    if (mgop_json_str(pdoc, pt, pool, sizeof(pool))) continue;
    if ((rc = mgop_pool_type(r, pdoc, pv, sb->what, pool))) return rc;
    if ((rc = mgop_pool_identity(r, pdoc, pv, sb->what, pool, identity, sizeof(identity)))) return rc;
    for (int ci = 0; ci < ncells; ci++)
      if ((rc = mgop_build_pool_set(r, sb, pool, pv, pcells, ci, identity))) return rc;
  }
  { /* one shard-wide PDB: the durability floor, max(2, replicas - 1) available */
    char pdb[64];
    const char *parts[] = {r->name, sb->db, sb->tg_name, sb->sname, "pdb"};
    mgop_name(pdb, sizeof(pdb), MGOP_LIMIT_SERVICE, 1, parts, 5);
    if ((rc = mgop_build_pdb(r, K_SHARD, sb->cr, sb->uid, pdb, "shard-pool", &sb->ids,
                             sb->replicas - 1 > 2 ? (int)(sb->replicas - 1) : 2)))
      return rc;
  }
  if ((rc = mgop_build_cell_pdbs(r, sb->d, sb->db_tok, pdoc, sb->pools, sb->all_cells, sb->cr, sb->uid, &sb->ids, sb->db,
                                 sb->tg_name, sb->sname)))
    return rc;
  return mgop_build_shard_orch(r, sb);
}

/* One shard: its names, resolved settings and backup location, then the
 * Shard CR (phase 2) or its workloads (phase 3). */
static int mgop_build_shard(struct mgop_rctx *r, const struct mgop_json *d, const char *db, int db_tok, int tg,
                            const char *tg_name, const char *tg_cr, int shard, int workloads, const char *addr,
                            const char *root) {
  static _Thread_local struct mgop_shard_build sb;
  static const char pool_default[] = "{\"default\":{\"type\":\"readWrite\"}}";
  struct mgop_chain c;
  int rc;
  memset(&sb, 0, sizeof(sb));
  sb.d = d, sb.db_tok = db_tok, sb.tg = tg, sb.shard = shard;
  sb.db = db, sb.tg_name = tg_name, sb.addr = addr, sb.root = root;
  if (mgop_json_path_str(d, shard, "name", sb.sname, sizeof(sb.sname)) || !sb.sname[0])
    snprintf(sb.sname, sizeof(sb.sname), "0-inf");
  {
    const char *parts[] = {r->name, db, tg_name, sb.sname};
    mgop_name(sb.cr, sizeof(sb.cr), MGOP_LIMIT_DEFAULT, 1, parts, 4);
  }
  snprintf(sb.what, sizeof(sb.what), "spec.databases[name=%s].tablegroups[name=%s].shards[name=%s]", db, tg_name, sb.sname);
  snprintf(r->where, sizeof(r->where), "%s", sb.what);
  c = (struct mgop_chain){sb.what, d, shard, "spec", "shardTemplate", "shardTemplate", K_SHARDT, "spec", "overrides"};
  if ((rc = mgop_resolve_chain(r, &c, &sb.cfg, sb.src, sizeof(sb.src)))) return rc;
  sb.pools = mgop_json_key(&sb.cfg, 0, "pools");
  sb.pdoc = &sb.cfg;
  if (!mgop_json_is(&sb.cfg, sb.pools, JSMN_OBJECT) || sb.cfg.tok[sb.pools].size == 0) {
    if ((rc = mgop_parse_arena(r->arena, pool_default, sizeof(pool_default) - 1, &sb.defpool))) return rc;
    sb.pdoc = &sb.defpool;
    sb.pools = 0;
  }
  sb.ids.database = db;
  sb.ids.tablegroup = tg_name;
  sb.ids.shard = sb.sname;
  {
    const int btoks[] = {r->spec, db_tok, tg, shard};
    const char *bparts[] = {r->name, db, tg_name, sb.sname};
    static _Thread_local struct mgop_backup_loc dbk;
    const char *diff;
    if ((rc = mgop_backup_resolve(r, d, btoks, bparts, sb.cr, &sb.bk))) return rc;
    if ((rc = mgop_backup_resolve_database(r, d, db_tok, &dbk))) return rc;
    if ((diff = mgop_backup_location_diff(&sb.bk, &dbk))) {
      mgop_stall(r, "BackupLocationConflict", "%s: the table group or shard changes backup %s, but Multigres keeps one "
                 "backup location per database (its topology record); set it on spec.databases[name=%s].backup or "
                 "spec.backup instead", r->where, diff, db);
      return MGOP_ERR_CONFIG;
    }
  }
  r->nshards++;
  return workloads ? mgop_build_shard_workloads(r, &sb) : mgop_build_shard_cr(r, &sb, tg_cr);
}

/* Walks databases -> table groups -> shards. phase 1: TableGroup CRs;
 * phase 2: Shard CRs; phase 3: shard workloads. */
static int mgop_walk_shards(struct mgop_rctx *r, int phase, const char *addr, const char *root) {
  const struct mgop_json *d = &r->root;
  struct mgop_json builtin;
  int dbs = mgop_json_key(&r->root, r->spec, "databases"), rc;
  if (!mgop_json_is(d, dbs, JSMN_ARRAY) || d->tok[dbs].size == 0) {
    if ((rc = mgop_parse_arena(r->arena, mgop_default_databases, sizeof(mgop_default_databases) - 1, &builtin))) return rc;
    d = &builtin; /* one database postgres, table group default, shard 0-inf */
    dbs = 0;
  }
  r->nshards = 0;
  for (int i = 0; i < d->tok[dbs].size; i++) {
    int db_tok = mgop_json_at(d, dbs, i), tgs = mgop_json_key(d, db_tok, "tablegroups");
    char db[32];
    if (mgop_json_path_str(d, db_tok, "name", db, sizeof(db))) continue;
    for (int t = 0; mgop_json_is(d, tgs, JSMN_ARRAY) && t < d->tok[tgs].size; t++) {
      int tg_tok = mgop_json_at(d, tgs, t), shards = mgop_json_key(d, tg_tok, "shards");
      char tg[32], tg_cr[254];
      if (mgop_json_path_str(d, tg_tok, "name", tg, sizeof(tg))) continue;
      {
        const char *parts[] = {r->name, db, tg};
        mgop_name(tg_cr, sizeof(tg_cr), MGOP_LIMIT_DEFAULT, 1, parts, 3);
      }
      snprintf(r->where, sizeof(r->where), "spec.databases[name=%s].tablegroups[name=%s]", db, tg);
      if (phase == 1) {
        struct mgop_build o;
        struct mgop_ids ids = {NULL, db, tg, NULL, NULL};
        int dflt = 0;
        if ((rc = mgop_build_begin(r, &o, K_TG, tg_cr))) return rc;
        mgop_build_meta_ids(&o, "tablegroup", &ids, K_CLUSTER, r->name, r->uid);
        mgop_json_bool(d, mgop_json_key(d, tg_tok, "default"), &dflt);
        mgop_jw_key(&o.w, "spec"); mgop_jw_obj(&o.w);
        mgop_jw_key(&o.w, "databaseName"); mgop_jw_str(&o.w, db);
        mgop_jw_key(&o.w, "tableGroupName"); mgop_jw_str(&o.w, tg);
        mgop_jw_key(&o.w, "default"); mgop_jw_bool(&o.w, dflt);
        mgop_jw_key(&o.w, "globalTopoServer"); mgop_jw_obj(&o.w);
        mgop_jw_key(&o.w, "address"); mgop_jw_str(&o.w, addr);
        mgop_jw_key(&o.w, "rootPath"); mgop_jw_str(&o.w, root);
        mgop_jw_key(&o.w, "implementation"); mgop_jw_str(&o.w, "etcd");
        mgop_jw_obj_end(&o.w);
        mgop_jw_key(&o.w, "shards"); mgop_jw_arr(&o.w);
        for (int s = 0; mgop_json_is(d, shards, JSMN_ARRAY) && s < d->tok[shards].size; s++) {
          char sn[32];
          if (mgop_json_path_str(d, mgop_json_at(d, shards, s), "name", sn, sizeof(sn))) continue;
          mgop_jw_obj(&o.w); mgop_jw_key(&o.w, "name"); mgop_jw_str(&o.w, sn); mgop_jw_obj_end(&o.w);
        }
        mgop_jw_arr_end(&o.w);
        mgop_jw_obj_end(&o.w);
        if ((rc = mgop_build_end(&o))) return rc;
        if (r->ntg == MGOP_TABLEGROUPS_MAX) {
          mgop_limit_reached(r, MGOP_L_OBJECTS, "%s: more than %d table groups", r->where, MGOP_TABLEGROUPS_MAX);
          return MGOP_ERR_CONFIG;
        }
        snprintf(r->tg_names[r->ntg++], sizeof(r->tg_names[0]), "%s", tg_cr);
        continue;
      }
      for (int s = 0; mgop_json_is(d, shards, JSMN_ARRAY) && s < d->tok[shards].size; s++) {
        int st = mgop_json_at(d, shards, s);
        rc = mgop_build_shard(r, d, db, db_tok, tg_tok, tg, tg_cr, st, phase == 3, addr, root);
        if (rc) return rc;
        if (phase == 2 && r->nshard_names == MGOP_SHARDS_MAX) {
          mgop_limit_reached(r, MGOP_L_OBJECTS, "%s: more than %d shards", r->where, MGOP_SHARDS_MAX);
          return MGOP_ERR_CONFIG;
        }
        if (phase == 2) {
          char sn[32];
          const char *parts[4];
          if (mgop_json_path_str(d, st, "name", sn, sizeof(sn)) || !sn[0]) snprintf(sn, sizeof(sn), "0-inf");
          parts[0] = r->name; parts[1] = db; parts[2] = tg; parts[3] = sn;
          mgop_name(r->shard_names[r->nshard_names], sizeof(r->shard_names[0]), MGOP_LIMIT_DEFAULT, 1, parts, 4);
          snprintf(r->shard_tg[r->nshard_names], sizeof(r->shard_tg[0]), "%s", tg_cr);
          snprintf(r->shard_tgn[r->nshard_names], sizeof(r->shard_tgn[0]), "%s", tg);
          snprintf(r->shard_sn[r->nshard_names], sizeof(r->shard_sn[0]), "%s", sn);
          snprintf(r->shard_db[r->nshard_names++], sizeof(r->shard_db[0]), "%s", db);
        }
      }
    }
  }
  return MGOP_OK;
}

/* Whether StorageClass name allows volume expansion: 1, 0, or an error. */
static int mgop_class_expands(const char *name) {
  static jsmntok_t tok[512];
  char path[300], body[8192];
  struct mgop_buf b;
  struct mgop_json j;
  int status = 0, rc, on = 0;
  snprintf(path, sizeof(path), "/apis/storage.k8s.io/v1/storageclasses/%s", name);
  mgop_buf_init(&b, body, sizeof(body));
  rc = mgop_kube_get(mgop_api_ptr, path, &b, &status);
  if (rc == MGOP_ERR_NOTFOUND) return 0;
  if (rc) return rc;
  if (mgop_json_parse(&j, b.p, b.len, tok, 512)) return 0;
  mgop_json_bool(&j, mgop_json_key(&j, 0, "allowVolumeExpansion"), &on);
  return on;
}

/* One PVC of a growing StatefulSet: patched to the new size when it is
 * bound and its StorageClass allows expansion; otherwise the turn stalls
 * with the reason. Returns 1 when the PVC has the size now, 0 when not yet. */
static int mgop_expand_pvc(struct mgop_rctx *r, const struct mgop_grow *g, const struct mgop_json *j, int pvc) {
  char name[254] = "", cur[MGOP_QUANTITY_BUF] = "", phase[16] = "", klass[MGOP_CRD_STORAGE_CLASS_MAX + 1] = "";
  char path[512], patch[200], resp[4096];
  struct mgop_buf out;
  int status = 0, ok;
  mgop_json_path_str(j, pvc, "metadata.name", name, sizeof(name));
  mgop_json_path_str(j, pvc, "spec.resources.requests.storage", cur, sizeof(cur));
  mgop_json_path_str(j, pvc, "status.phase", phase, sizeof(phase));
  mgop_json_path_str(j, pvc, "spec.storageClassName", klass, sizeof(klass));
  if (mgop_quantity(cur) >= mgop_quantity(g->size)) return 1;
  if (strcmp(phase, "Bound")) {
    MGOP_LOG(MGOP_INFO, ("PVC %s/%s is %s; it grows to %s once bound", r->ns, name, phase[0] ? phase : "not bound",
                         g->size));
    return 0;
  }
  ok = klass[0] ? mgop_class_expands(klass) : 0;
  if (ok < 0) return ok;
  if (!ok) {
    mgop_stall(r, "VolumeExpansionUnsupported", "%s asks for %s, but PVC %s (StatefulSet %s) cannot grow: %s%s%s; the "
               "volumes keep %s: use a StorageClass with allowVolumeExpansion: true, or restore %s", g->field, g->size,
               name, g->sts, klass[0] ? "StorageClass " : "it names no StorageClass", klass,
               klass[0] ? " does not set allowVolumeExpansion: true" : "", cur, cur);
    return 0;
  }
  if (!mgop_may_write()) return mgop_seterr(MGOP_ERR_STATUS, "not the leader any more: not expanding volumes");
  snprintf(path, sizeof(path), "/api/v1/namespaces/%s/persistentvolumeclaims/%s", r->ns, name);
  snprintf(patch, sizeof(patch), "{\"spec\":{\"resources\":{\"requests\":{\"storage\":\"%s\"}}}}", g->size);
  mgop_buf_init(&out, resp, sizeof(resp));
  if ((ok = mgop_kube_request(mgop_api_ptr, "PATCH", path, "application/merge-patch+json", patch, strlen(patch), &out,
                              &status)))
    return ok;
  if (status != 200) {
    char why[300];
    mgop_kube_status_message(out.p, out.len, why, sizeof(why));
    mgop_stall(r, "VolumeExpansionFailed", "%s asks for %s; expanding PVC %s was refused (HTTP %d): %s", g->field,
               g->size, name, status, why);
    return 0;
  }
  MGOP_LOG(MGOP_INFO, ("PVC %s/%s: storage %s -> %s (%s)", r->ns, name, cur, g->size, g->field));
  r->expanded++;
  return 1;
}

/* After the apply: the PVCs of every StatefulSet whose storage grew. The
 * StatefulSet keeps its volumeClaimTemplates (immutable); its existing
 * PVCs are patched in place, which the StorageClass must allow. */
static int mgop_expand_volumes(struct mgop_rctx *r) {
  char path[512];
  size_t cap = MGOP_BODY_MAX;
  char *mem;
  struct mgop_buf b;
  struct mgop_json j;
  int status = 0, rc, items;
  if (!r->ngrows) return MGOP_OK;
  if (!(mem = mgop_arena_alloc(r->arena, cap))) return mgop_seterr(MGOP_ERR_NOMEM, "reconcile arena exhausted");
  mgop_buf_init(&b, mem, cap);
  snprintf(path, sizeof(path), "/api/v1/namespaces/%s/persistentvolumeclaims?labelSelector=multigres.com%%2Fcluster%%3D%s",
           r->ns, r->name);
  if ((rc = mgop_kube_get(mgop_api_ptr, path, &b, &status))) return rc;
  mgop_arena_trim(r->arena, mem, cap, b.len);
  if ((rc = mgop_parse_arena(r->arena, b.p, b.len, &j))) return rc;
  items = mgop_json_key(&j, 0, "items");
  for (int g = 0; g < r->ngrows; g++) {
    struct mgop_grow *gr = &r->grows[g];
    char prefix[100];
    int all = 1;
    size_t pl = (size_t)snprintf(prefix, sizeof(prefix), "%s-%s-", gr->vct, gr->sts);
    for (int i = 0; mgop_json_is(&j, items, JSMN_ARRAY) && i < j.tok[items].size; i++) {
      int pvc = mgop_json_at(&j, items, i);
      char name[254];
      if (mgop_json_path_str(&j, pvc, "metadata.name", name, sizeof(name)) || strncmp(name, prefix, pl) ||
          !name[pl] || strspn(name + pl, "0123456789") != strlen(name + pl))
        continue; /* another StatefulSet's (names are VCT-STS-ORDINAL) */
      rc = mgop_expand_pvc(r, gr, &j, pvc);
      if (rc < 0) return rc;
      all &= rc;
    }
    if (all) {
      struct mgop_fp *f = mgop_fp_find(mgop_fp_key("StatefulSet", r->ns, gr->sts));
      if (f) f->grown_hash = gr->hash; /* every PVC has the size: no LIST next turn */
    }
  }
  if (r->expanded) {
    char note[200];
    snprintf(note, sizeof(note), "expanded %d PersistentVolumeClaim%s in place (storage.size grew)", r->expanded,
             r->expanded == 1 ? "" : "s");
    mgop_event(r, K_CLUSTER, r->name, r->uid, "Normal", "VolumesExpanded", "Expand", note);
  }
  return MGOP_OK;
}

/* Builds (and, live, applies) everything for the cluster in r->root, in
 * three phases so every object can name its owner's uid: the CRs owned by
 * the cluster, then the Shards owned by TableGroups, then the workloads. */
static int mgop_reconcile_phases(struct mgop_rctx *r) {
  struct mgop_json topo;
  char topo_name[64], addr[1024], root[MGOP_ROOT_PATH_BUF];
  const char *parts[2] = {r->name, "global-topo"};
  int topo_managed, rc, cells = mgop_json_key(&r->root, r->spec, "cells"), mark;
  rc = mgop_resolve_global_topo(r, &topo);
  if (rc) return rc;
  topo_managed = mgop_json_key(&topo, 0, "etcd") >= 0;
  mgop_name(topo_name, sizeof(topo_name), MGOP_LIMIT_STS, 0, parts, 2);
  mgop_topo_address(r, &topo, addr, sizeof(addr), root, sizeof(root));
  if (r->stalled_reason[0]) return MGOP_ERR_CONFIG;
  r->topo_doc = topo; /* tokens in the turn's arena */
  snprintf(r->topo_addr, sizeof(r->topo_addr), "%s", addr);
  snprintf(r->topo_root, sizeof(r->topo_root), "%s", root);
  r->ntopo_cells = 0;
  if (!mgop_json_is(&r->root, cells, JSMN_ARRAY) || r->root.tok[cells].size == 0) {
    mgop_stall(r, "InvalidSpec", "spec.cells is empty; add at least one cell, e.g. {name: zone-a, zone: us-east-1a}");
    return MGOP_ERR_CONFIG;
  }
  r->ncells = r->root.tok[cells].size;

  /* phase 1: CRs owned by the cluster, and its Certificates */
  mark = r->ndesired;
  mgop_tls_of(r);
  mgop_init_secrets_of(r);
  if ((rc = mgop_build_certs(r))) return rc;
  snprintf(r->where, sizeof(r->where), "spec.globalTopoServer");
  if (topo_managed) {
    struct mgop_topo_target t = {topo_name, NULL, K_CLUSTER, r->name, r->uid};
    if ((rc = mgop_build_topo(r, &topo, &t, 1, NULL))) return rc;
  }
  for (int i = 0; i < r->ncells; i++)
    if ((rc = mgop_build_cell(r, mgop_json_at(&r->root, cells, i), 0, addr, root))) return rc;
  if ((rc = mgop_walk_shards(r, 1, addr, root))) return rc;
  if (!r->render && (rc = mgop_apply_from(r, mark))) return rc;

  /* phase 2: Shards, owned by their TableGroup; local TopoServers, by their Cell */
  mark = r->ndesired;
  if ((rc = mgop_walk_shards(r, 2, addr, root))) return rc;
  for (int i = 0; i < r->ncells; i++)
    if ((rc = mgop_build_cell(r, mgop_json_at(&r->root, cells, i), 2, addr, root))) return rc;
  if (!r->render && (rc = mgop_apply_from(r, mark))) return rc;

  /* phase 3: workloads */
  mark = r->ndesired;
  snprintf(r->where, sizeof(r->where), "spec.globalTopoServer");
  if (topo_managed) {
    const char *uid = mgop_uid_of(r, K_TOPO, topo_name);
    if (!uid) return mgop_seterr(MGOP_ERR_STATUS, "TopoServer %s has no uid yet", topo_name);
    struct mgop_topo_target t = {topo_name, NULL, K_CLUSTER, r->name, r->uid};
    if ((rc = mgop_build_topo(r, &topo, &t, 0, uid))) return rc;
  }
  if ((rc = mgop_build_admin(r, addr, root))) return rc;
  for (int i = 0; i < r->ncells; i++)
    if ((rc = mgop_build_cell(r, mgop_json_at(&r->root, cells, i), 1, addr, root))) return rc;
  r->pool_sets = r->orch_sets = r->pool_replicas = 0;
  if ((rc = mgop_walk_shards(r, 3, addr, root))) return rc;
  if (r->render) return MGOP_OK;
  if (r->adopting && (rc = mgop_reclaim_check(r))) return rc; /* orphans: all or nothing */
  rc = mgop_apply_from(r, mark);
  { /* volumes grow even when some other object was rejected */
    int erc = mgop_expand_volumes(r);
    return rc ? rc : erc;
  }
}

/* ---- topology records ------------------------------------------------------ */
/* Multigres finds its cells and databases in its global topology (etcd):
 * <root>/cells/<cell>/Cell and <root>/databases/<db>/Database, protobuf
 * values (2.10). After the Kubernetes objects are applied, each turn writes
 * them (Cells create-only, the Database created then compare-and-swapped,
 * keeping fields Multigres owns), reads them back, and prunes the records
 * of cells and databases removed from the spec once their workloads are
 * gone. The global topology server answers within MGOP_ETCD_TIMEOUT_MS per
 * endpoint or the turn moves on: the cluster reports TopologyRegistered
 * False (Reconciling, not Stalled) and retries with its own backoff, so an
 * unreachable topology slows only its own cluster. */
#define MGOP_TOPO_BACKOFF_MIN_MS 2000
#define MGOP_TOPO_BACKOFF_MAX_MS 60000
#define MGOP_TOPO_PRUNE_RECHECK_MS 5000
#define MGOP_TOPO_CAS_TRIES 3

/* Per cluster: the records last verified, and the backoff when not. */
struct mgop_topo_slot {
  uint64_t key;               /* fp key of the MultigresCluster; 0 free */
  uint64_t verified;          /* hash of what was last read back equal */
  long long next_ms;          /* no etcd call before this (backoff)    */
  int backoff_ms;
  char error[400];
  uint64_t etcd_cfg;          /* mgop_topo_etcd_cfg when last pointed here */
  long long defrag_next_ms;   /* the next look at its managed etcds' storage */
};
static struct mgop_topo_slot mgop_topo_slots[MGOP_WORK_SLOTS];
static int mgop_topo_enabled = 1;        /* --topology-registration */
static struct mgop_etcd mgop_topo_etcd;  /* the loop's client; rebuilt when the target changes */
static uint64_t mgop_topo_etcd_cfg;      /* hash of endpoints and PEMs it was built with */

static struct mgop_topo_slot *mgop_topo_slot(const char *ns, const char *name) {
  uint64_t key = mgop_fp_key("MultigresCluster", ns, name);
  struct mgop_topo_slot *free_slot = NULL;
  for (int i = 0; i < MGOP_WORK_SLOTS; i++) {
    if (mgop_topo_slots[i].key == key) return &mgop_topo_slots[i];
    if (!mgop_topo_slots[i].key && !free_slot) free_slot = &mgop_topo_slots[i];
  }
  if (!free_slot) return NULL; /* as many as the cluster table: cannot happen for a tracked cluster */
  memset(free_slot, 0, sizeof(*free_slot));
  free_slot->key = key;
  return free_slot;
}

static int mgop_defrag_enabled(const struct mgop_json *doc, int etcd) {
  int t = mgop_json_path(doc, mgop_json_key(doc, etcd, "maintenance"), "defragmentationEnabled");
  return t >= 0 && mgop_json_is(doc, t, JSMN_PRIMITIVE) && doc->js[doc->tok[t].start] == 't';
}

/* Phase 1 notes each cell's record: where its components find the cell's
 * own topology. A managed local etcd: its client Service and root
 * /multigres/<cell> (or its rootPath); an external one: its endpoints and
 * rootPath; none: the global topology's address and root. */
static void mgop_topo_note_cell(struct mgop_rctx *r, const char *name, const char *cr, const struct mgop_json *cfg,
                                const char *gaddr, const char *groot) {
  struct mgop_topo_want_cell *c;
  int lt = mgop_json_key(cfg, 0, "localTopoServer");
  int et = mgop_json_key(cfg, lt, "etcd"), ext = mgop_json_key(cfg, lt, "external");
  if (r->ntopo_cells >= MGOP_CRD_CELLS_MAX) return;
  {
    char field[300];
    snprintf(field, sizeof(field), "localTopoServer.external.implementation of cell %.63s", name);
    mgop_topo_implementation(r, cfg, ext, field);
  }
  c = &r->topo_cells[r->ntopo_cells++];
  memset(c, 0, sizeof(*c));
  snprintf(c->name, sizeof(c->name), "%s", name);
  if (lt >= 0 && (et >= 0 || ext >= 0)) {
    mgop_json_path_str(cfg, et >= 0 ? et : ext, "rootPath", c->root, sizeof(c->root));
    if (!c->root[0]) snprintf(c->root, sizeof(c->root), "/multigres/%s", name);
  } else {
    snprintf(c->root, sizeof(c->root), "%s", groot);
  }
  if (lt >= 0 && et >= 0) {
    char tname[64];
    const char *tparts[] = {cr, "topo"};
    mgop_name(tname, sizeof(tname), MGOP_LIMIT_STS, 1, tparts, 2);
    snprintf(c->addrs, sizeof(c->addrs), "%s.%s.svc:2379", tname, r->ns);
    c->defrag = mgop_defrag_enabled(cfg, et);
  } else if (lt >= 0 && ext >= 0) {
    int eps = mgop_json_key(cfg, ext, "endpoints");
    struct mgop_buf b;
    mgop_buf_init(&b, c->addrs, sizeof(c->addrs));
    for (int i = 0; mgop_json_is(cfg, eps, JSMN_ARRAY) && i < cfg->tok[eps].size; i++) {
      char ep[MGOP_ETCD_URL_MAX], *h;
      if (mgop_json_str(cfg, mgop_json_at(cfg, eps, i), ep, sizeof(ep))) continue;
      h = strstr(ep, "://") ? strstr(ep, "://") + 3 : ep;
      mgop_buf_printf(&b, "%s%s", b.len ? "," : "", h);
    }
    if (b.overflow) b.len = 0;
    mgop_buf_cstr(&b);
  } else {
    snprintf(c->addrs, sizeof(c->addrs), "%s", gaddr);
  }
}

/* The Cell message of a noted cell: addresses split on ','. */
static void mgop_topo_cell_of(struct mgop_topo_want_cell *w, struct mgop_topo_cell *c, char *split, size_t cap) {
  memset(c, 0, sizeof(*c));
  c->name = w->name;
  c->root = w->root;
  snprintf(split, cap, "%s", w->addrs);
  for (char *save = NULL, *t = strtok_r(split, ",", &save); t && c->naddrs < MGOP_TOPO_LIST_MAX;
       t = strtok_r(NULL, ",", &save))
    c->addrs[c->naddrs++] = t;
}

/* The Database message of spec.databases[i] (or the built-in postgres):
 * backup as the backup code resolves it for the database (cluster, then
 * database, else a filesystem at /backups), so the record and the pool pods
 * agree; durability from the database, else the cluster, else AT_LEAST_2.
 * Strings live in the turn's arena. */
static int mgop_topo_db_of(struct mgop_rctx *r, const struct mgop_json *dbs, int db, struct mgop_topo_db *d) {
  const struct mgop_json *j = &r->root;
  char buf[MGOP_ROOT_PATH_BUF];
  memset(d, 0, sizeof(*d));
#define MGOP_TOPO_DUP(field, doc, tok, path, fallback)                                               \
  do {                                                                                               \
    buf[0] = 0;                                                                                      \
    mgop_json_path_str((doc), (tok), (path), buf, sizeof(buf));                                      \
    if (!buf[0] && (fallback)) snprintf(buf, sizeof(buf), "%s", (const char *)(fallback));          \
    if (!(d->field = mgop_arena_strndup(r->arena, buf, strlen(buf)))) return MGOP_ERR_NOMEM;        \
  } while (0)
#define MGOP_TOPO_SET(field, value)                                                                  \
  do {                                                                                               \
    if (!(d->field = mgop_arena_strndup(r->arena, (value), strlen(value)))) return MGOP_ERR_NOMEM;   \
  } while (0)
  MGOP_TOPO_DUP(name, dbs, db, "name", "postgres");
  { /* the location the pool pods use: one resolution, section 8 */
    static _Thread_local struct mgop_backup_loc loc;
    int rc = mgop_backup_resolve_database(r, dbs, db, &loc);
    if (rc) return rc;
    d->s3 = loc.type == MGOP_BACKUP_S3;
    if (d->s3) {
      MGOP_TOPO_SET(bucket, loc.bucket);
      MGOP_TOPO_SET(region, loc.region);
      MGOP_TOPO_SET(endpoint, loc.endpoint);
      MGOP_TOPO_SET(key_prefix, loc.key_prefix);
      d->use_env_credentials = loc.env_credentials;
    } else {
      MGOP_TOPO_SET(fs_path, loc.path);
    }
    d->require_encryption = loc.encryption_secret[0] != 0;
  }
  {
    char policy[32] = "";
    mgop_json_path_str(dbs, db, "durabilityPolicy", policy, sizeof(policy));
    if (!policy[0]) mgop_json_path_str(j, r->spec, "durabilityPolicy", policy, sizeof(policy));
    d->policy_name = !strcmp(policy, "MULTI_CELL_AT_LEAST_2") ? "MULTI_CELL_AT_LEAST_2" : "AT_LEAST_2";
    d->quorum_type = !strcmp(policy, "MULTI_CELL_AT_LEAST_2") ? MGOP_QUORUM_MULTI_CELL_AT_LEAST_N : MGOP_QUORUM_AT_LEAST_N;
    d->required_count = 2;
  }
#undef MGOP_TOPO_DUP
#undef MGOP_TOPO_SET
  for (int i = 0; i < r->ntopo_cells && d->ncells < MGOP_TOPO_LIST_MAX; i++) d->cells[d->ncells++] = r->topo_cells[i].name;
  return MGOP_OK;
}

/* One key of a Secret in the cluster's namespace, decoded. */
static int mgop_topo_secret(struct mgop_rctx *r, const char *secret, const char *key, char *out, size_t cap,
                            size_t *n) {
  static char body[256 * 1024];
  struct mgop_buf b;
  struct mgop_json j;
  char path[400];
  int status, rc, t;
  *n = 0;
  snprintf(path, sizeof(path), "/api/v1/namespaces/%s/secrets/%s", r->ns, secret);
  mgop_buf_init(&b, body, sizeof(body));
  rc = mgop_kube_get(mgop_api_ptr, path, &b, &status);
  if (rc) return mgop_seterr(rc, "Secret %s/%s: %s", r->ns, secret, rc == MGOP_ERR_NOTFOUND ? "not found" : mgop_errmsg());
  if ((rc = mgop_parse_arena(r->arena, b.p, b.len, &j))) return rc;
  t = mgop_json_key(&j, mgop_json_key(&j, 0, "data"), key);
  if (!mgop_json_is(&j, t, JSMN_STRING)) return mgop_seterr(MGOP_ERR_CONFIG, "Secret %s/%s has no key %s", r->ns, secret, key);
  {
    struct mgop_str s = mgop_json_raw(&j, t);
    if ((rc = mgop_b64_decode(s.p, s.n, (unsigned char *)out, cap, n)))
      return mgop_seterr(rc, "Secret %s/%s key %s: %s", r->ns, secret, key, mgop_errmsg());
  }
  return MGOP_OK;
}

/* Points the loop's etcd client at this cluster's global topology: the
 * managed etcd's client Service over plain HTTP, or the external
 * endpoints with caSecret (ca.crt) and clientCertSecret (tls.crt,
 * tls.key). Kept (with its connection) while the target is the same. */
static int mgop_topo_connect(struct mgop_rctx *r, const struct mgop_json *topo, const char *addr) {
  static char ca[MGOP_PEM_MAX], crt[MGOP_PEM_MAX], key[MGOP_PEM_MAX];
  static char urls[MGOP_ETCD_ENDPOINTS_MAX][MGOP_ETCD_URL_MAX];
  const char *eps[MGOP_ETCD_ENDPOINTS_MAX];
  size_t ca_n = 0, crt_n = 0, key_n = 0;
  int n = 0, ext = mgop_json_key(topo, 0, "external"), rc;
  uint64_t h = MGOP_FNV64_INIT;
  if (ext >= 0) {
    char cas[254] = "", cls[254] = "";
    int list = mgop_json_key(topo, ext, "endpoints");
    for (int i = 0; mgop_json_is(topo, list, JSMN_ARRAY) && i < topo->tok[list].size && n < MGOP_ETCD_ENDPOINTS_MAX; i++)
      if (mgop_json_str(topo, mgop_json_at(topo, list, i), urls[n], sizeof(urls[n])) == MGOP_OK) n++;
    mgop_json_path_str(topo, ext, "caSecret", cas, sizeof(cas));
    mgop_json_path_str(topo, ext, "clientCertSecret", cls, sizeof(cls));
    if (cas[0] && (rc = mgop_topo_secret(r, cas, "ca.crt", ca, sizeof(ca) - 1, &ca_n))) return rc;
    if (cls[0] && ((rc = mgop_topo_secret(r, cls, "tls.crt", crt, sizeof(crt) - 1, &crt_n)) ||
                   (rc = mgop_topo_secret(r, cls, "tls.key", key, sizeof(key) - 1, &key_n))))
      return rc;
  } else {
    snprintf(urls[n++], sizeof(urls[0]), "http://%.240s", addr);
  }
  for (int i = 0; i < n; i++) eps[i] = urls[i], h = mgop_fnv1a64(h, urls[i], strlen(urls[i]) + 1);
  h = mgop_fnv1a64(h, ca, ca_n);
  h = mgop_fnv1a64(h, crt, crt_n);
  h = mgop_fnv1a64(h, key, key_n);
  if (h == mgop_topo_etcd_cfg && mgop_topo_etcd.kube_ready) return MGOP_OK;
  mgop_topo_etcd_cfg = 0;
  if ((rc = mgop_etcd_init(&mgop_topo_etcd, eps, n, ca, ca_n, crt, crt_n, key, key_n))) return rc;
  mgop_topo_etcd_cfg = h;
  return MGOP_OK;
}

/* Points the loop's etcd client at this cluster's global topology unless it
 * points there already: the Secrets of an external etcd are then not read
 * again, so reading pooler roles costs no API request. The sync of a
 * changed spec connects afresh (mgop_topo_connect). */
static int mgop_topo_attach(struct mgop_rctx *r, struct mgop_topo_slot *slot) {
  int rc;
  if (slot && slot->etcd_cfg && slot->etcd_cfg == mgop_topo_etcd_cfg && mgop_topo_etcd.kube_ready) return MGOP_OK;
  if ((rc = mgop_topo_connect(r, &r->topo_doc, r->topo_addr))) return rc;
  if (slot) slot->etcd_cfg = mgop_topo_etcd_cfg;
  return MGOP_OK;
}

/* What one key holds: found, its mod_revision, its value (copied). */
struct mgop_topo_read { int found; long long mod; size_t n; unsigned char v[MGOP_ETCD_VALUE_MAX]; };
static int mgop_topo_read_kv(void *ctx, const struct mgop_etcd_kv *kv) {
  struct mgop_topo_read *rd = ctx;
  rd->found = 1;
  rd->mod = kv->mod_revision;
  rd->n = kv->value_len;
  memcpy(rd->v, kv->value, kv->value_len); /* both MGOP_ETCD_VALUE_MAX */
  return MGOP_OK;
}

/* Writes one record until it reads back as wanted: absent, create it
 * (version 0 guard); present and different, swap it (mod_revision guard)
 * unless create_only. Returns MGOP_OK with *equal 1 when what is stored is
 * what we want, *equal 0 when a create-only record says something else. */
static int mgop_topo_put(const char *key, int create_only, int is_db, const void *want, int *equal, int *wrote) {
  static struct mgop_topo_read rd;
  static char mem[MGOP_ETCD_VALUE_MAX];
  struct mgop_buf b;
  int rc, ok;
  *equal = 0;
  for (int attempt = 0; attempt < MGOP_TOPO_CAS_TRIES; attempt++) {
    memset(&rd, 0, offsetof(struct mgop_topo_read, v));
    if ((rc = mgop_etcd_range(&mgop_topo_etcd, key, 0, 0, mgop_topo_read_kv, &rd))) return rc;
    mgop_buf_init(&b, mem, sizeof(mem));
    rc = is_db ? mgop_topo_db_encode(want, rd.found ? rd.v : NULL, rd.n, &b)
               : mgop_topo_cell_encode(want, rd.found ? rd.v : NULL, rd.n, &b);
    if (rc) return mgop_seterr(rc, "%s: %s", key, mgop_errmsg());
    if (rd.found && b.len == rd.n && !memcmp(b.p, rd.v, rd.n)) {
      *equal = 1; /* read back equal */
      return MGOP_OK;
    }
    if (rd.found && create_only) return MGOP_OK;
    rc = rd.found ? mgop_etcd_update(&mgop_topo_etcd, key, b.p, b.len, rd.mod, &ok)
                  : mgop_etcd_create(&mgop_topo_etcd, key, b.p, b.len, &ok);
    if (rc) return rc;
    if (ok) (*wrote)++; /* read it back on the next round; a lost race reads the winner */
  }
  return mgop_seterr(MGOP_ERR_STATUS, "%s: still changing after %d compare-and-swap rounds", key, MGOP_TOPO_CAS_TRIES);
}

/* Objects of this cluster the spec no longer wants that still exist: the
 * workloads of a removed cell or database are not gone while any is left. */
static int mgop_topo_leftovers(struct mgop_rctx *r) {
  static uint64_t want[MGOP_DESIRED_MAX];
  uint64_t cl = mgop_cluster_hash(r->ns, r->name);
  int left = 0;
  for (int i = 0; i < r->ndesired; i++) want[i] = mgop_desired_key(r, &r->desired[i]);
  qsort(want, (size_t)r->ndesired, sizeof(want[0]), mgop_cmp_u64);
  for (size_t i = 0; i < mgop_fp_span(); i++) {
    struct mgop_fp *f = mgop_fp_at(i);
    if (!f || f->cluster != cl || f->kind <= 0 || !(f->flags & MGOP_FP_EXISTS) || !f->uid[0]) continue;
    if (!bsearch(&f->key, want, (size_t)r->ndesired, sizeof(want[0]), mgop_cmp_u64)) left++;
  }
  return left;
}

/* A name list of the live status (status.topology.<field>). */
static int mgop_topo_prev(struct mgop_rctx *r, const char *field, char (*out)[64], int cap) {
  char path[64];
  int list, n = 0;
  snprintf(path, sizeof(path), "status.topology.%s", field);
  list = mgop_json_path(&r->root, 0, path);
  for (int i = 0; mgop_json_is(&r->root, list, JSMN_ARRAY) && i < r->root.tok[list].size && n < cap; i++)
    if (mgop_json_str(&r->root, mgop_json_at(&r->root, list, i), out[n], 64) == MGOP_OK && out[n][0]) n++;
  return n;
}

static int mgop_topo_has(char (*list)[64], int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (!strcmp(list[i], name)) return 1;
  return 0;
}

static void mgop_topo_add(char (*list)[64], int *n, int cap, const char *name) {
  if (!mgop_topo_has(list, *n, name) && *n < cap) snprintf(list[(*n)++], 64, "%s", name);
}

static void mgop_topo_drop(char (*list)[64], int *n, const char *name) {
  for (int i = 0; i < *n; i++)
    if (!strcmp(list[i], name)) {
      memmove(list[i], list[i + 1], (size_t)(*n - i - 1) * 64);
      (*n)--;
      return;
    }
}

/* The databases the spec wants, in the arena. */
static int mgop_topo_dbs(struct mgop_rctx *r, struct mgop_topo_db *dbs, int cap) {
  struct mgop_json defaults;
  const struct mgop_json *doc = &r->root;
  int list = mgop_json_key(&r->root, r->spec, "databases"), n = 0, rc;
  if (!mgop_json_is(&r->root, list, JSMN_ARRAY) || r->root.tok[list].size == 0) {
    if ((rc = mgop_parse_arena(r->arena, mgop_default_databases, sizeof(mgop_default_databases) - 1, &defaults)))
      return rc;
    doc = &defaults;
    list = 0;
  }
  for (int i = 0; i < doc->tok[list].size && n < cap; i++)
    if ((rc = mgop_topo_db_of(r, doc, mgop_json_at(doc, list, i), &dbs[n++]))) return rc;
  return n;
}

static void mgop_topo_key(char *out, size_t cap, const char *root, const char *dir, const char *name,
                          const char *file) {
  size_t n = strlen(root);
  while (n > 1 && root[n - 1] == '/') n--; /* path.Join: no doubled slash */
  snprintf(out, cap, "%.*s/%s/%s/%s", (int)n, root, dir, name, file);
}

static void mgop_topo_fail(struct mgop_rctx *r, struct mgop_topo_slot *slot, const char *reason, const char *why) {
  long long now = mgop_now_ms();
  r->topo_state = -1;
  snprintf(r->topo_reason, sizeof(r->topo_reason), "%s", reason);
  if (!slot) {
    snprintf(r->topo_msg, sizeof(r->topo_msg), "%.470s", why);
    return;
  }
  slot->verified = 0;
  slot->backoff_ms = slot->backoff_ms ? slot->backoff_ms * 2 : MGOP_TOPO_BACKOFF_MIN_MS;
  if (slot->backoff_ms > MGOP_TOPO_BACKOFF_MAX_MS) slot->backoff_ms = MGOP_TOPO_BACKOFF_MAX_MS;
  slot->next_ms = now + slot->backoff_ms;
  snprintf(slot->error, sizeof(slot->error), "%.390s", why);
  snprintf(r->topo_msg, sizeof(r->topo_msg), "%.400s; retrying in %ds", why, slot->backoff_ms / 1000);
  mgop_enqueue(r->ns, r->name, slot->backoff_ms);
}

/* Records of cells and databases removed from the spec (status.topology
 * lists them, the spec no longer has them), and only those: deleted once
 * no object of the cluster that the spec no longer wants still exists,
 * listed until then. Pruning off: no longer listed, left in etcd. Returns
 * how many wait, or -1 when etcd failed (mgop_topo_fail said why). */
static int mgop_topo_prune(struct mgop_rctx *r, const struct mgop_topo_db *dbs, int ndb, char (*prev_cells)[64],
                           int nprev_cells, char (*prev_dbs)[64], int nprev_dbs, int pruning,
                           struct mgop_topo_slot *slot) {
  int left = mgop_topo_leftovers(r), pending = 0;
  char key[MGOP_ROOT_PATH_BUF + 200];
  for (int pass = 0; pass < 2; pass++) {
    int n = pass ? nprev_dbs : nprev_cells;
    for (int i = 0; i < n; i++) {
      const char *name = pass ? prev_dbs[i] : prev_cells[i];
      int in_spec = 0, rc;
      long long deleted = 0;
      for (int k = 0; !pass && k < r->ntopo_cells; k++) in_spec |= !strcmp(r->topo_cells[k].name, name);
      for (int k = 0; pass && k < ndb; k++) in_spec |= !strcmp(dbs[k].name, name);
      if (in_spec) continue;
      if (!pruning) { /* no longer ours to track: the record stays */
        if (pass) mgop_topo_drop(r->topo_reg_dbs, &r->ntopo_reg_dbs, name);
        else mgop_topo_drop(r->topo_reg_cells, &r->ntopo_reg_cells, name);
        continue;
      }
      if (left) { /* still listed: pruned on a later turn */
        pending++;
        continue;
      }
      mgop_topo_key(key, sizeof(key), r->topo_root, pass ? "databases" : "cells", name, pass ? "Database" : "Cell");
      if ((rc = mgop_etcd_delete(&mgop_topo_etcd, key, &deleted))) {
        char why[480];
        snprintf(why, sizeof(why), "pruning %.100s: global topology server %.340s", key, mgop_topo_etcd.last_error);
        mgop_topo_fail(r, slot, "TopologyUnreachable", why);
        return -1;
      }
      if (pass) mgop_topo_drop(r->topo_reg_dbs, &r->ntopo_reg_dbs, name);
      else mgop_topo_drop(r->topo_reg_cells, &r->ntopo_reg_cells, name);
      {
        char note[500];
        snprintf(note, sizeof(note), "%s %.64s was removed from the spec and its workloads are gone: %s %.250s",
                 pass ? "database" : "cell", name, deleted ? "deleted" : "already absent:", key);
        MGOP_LOG(MGOP_INFO, ("%s/%s: %s", r->ns, r->name, note));
        mgop_event(r, K_CLUSTER, r->name, r->uid, "Normal", "TopologyPruned", "Prune", note);
      }
    }
  }
  if (pending) mgop_enqueue(r->ns, r->name, MGOP_TOPO_PRUNE_RECHECK_MS);
  return pending;
}

/* The records of a turn that built the whole tree: write, read back,
 * prune. Leaves r->topo_state 1 (registered and read back equal) or -1
 * with the reason, and the lists status.topology reports. */
static void mgop_topo_sync(struct mgop_rctx *r) {
  static struct mgop_topo_db dbs[MGOP_CRD_DATABASES_MAX + 4];
  static char prev_cells[MGOP_CRD_CELLS_MAX * 2][64], prev_dbs[8][64], split[1100];
  struct mgop_topo_slot *slot = mgop_topo_slot(r->ns, r->name);
  int ndb, nprev_cells, nprev_dbs, pruning = 1, t, conflict = 0, wrote = 0, pending = 0, rc, eq;
  uint64_t h = MGOP_FNV64_INIT;
  char key[MGOP_ROOT_PATH_BUF + 200];
  r->ntopo_reg_cells = r->ntopo_reg_dbs = 0;
  nprev_cells = mgop_topo_prev(r, "registeredCells", prev_cells, MGOP_CRD_CELLS_MAX * 2);
  nprev_dbs = mgop_topo_prev(r, "registeredDatabases", prev_dbs, 8);
  for (int i = 0; i < nprev_cells; i++) mgop_topo_add(r->topo_reg_cells, &r->ntopo_reg_cells, MGOP_CRD_CELLS_MAX * 2, prev_cells[i]);
  for (int i = 0; i < nprev_dbs; i++) mgop_topo_add(r->topo_reg_dbs, &r->ntopo_reg_dbs, 8, prev_dbs[i]);
  if ((t = mgop_json_path(&r->root, r->spec, "topologyPruning.enabled")) >= 0) mgop_json_bool(&r->root, t, &pruning);
  if ((ndb = mgop_topo_dbs(r, dbs, MGOP_CRD_DATABASES_MAX + 4)) < 0) {
    mgop_topo_fail(r, NULL, "TopologyError", mgop_errmsg());
    return;
  }
  { /* what this turn wants, so an unchanged cluster costs no etcd call */
    static char mem[MGOP_ETCD_VALUE_MAX];
    struct mgop_buf b;
    h = mgop_fnv1a64(h, r->topo_addr, strlen(r->topo_addr) + 1);
    h = mgop_fnv1a64(h, r->topo_root, strlen(r->topo_root) + 1);
    { uint64_t th = mgop_json_canon_hash(&r->topo_doc, 0); h = mgop_fnv1a64(h, &th, sizeof(th)); }
    for (int i = 0; i < r->ntopo_cells; i++) {
      struct mgop_topo_cell c;
      mgop_topo_cell_of(&r->topo_cells[i], &c, split, sizeof(split));
      mgop_buf_init(&b, mem, sizeof(mem));
      mgop_topo_cell_encode(&c, NULL, 0, &b);
      h = mgop_fnv1a64(h, b.p, b.len);
    }
    for (int i = 0; i < ndb; i++) {
      mgop_buf_init(&b, mem, sizeof(mem));
      mgop_topo_db_encode(&dbs[i], NULL, 0, &b);
      h = mgop_fnv1a64(h, b.p, b.len);
    }
  }
  for (int i = 0; i < nprev_cells; i++) { /* removed cells wait for pruning */
    int in_spec = 0;
    for (int c = 0; c < r->ntopo_cells; c++) in_spec |= !strcmp(r->topo_cells[c].name, prev_cells[i]);
    pending += !in_spec;
  }
  for (int i = 0; i < nprev_dbs; i++) {
    int in_spec = 0;
    for (int d = 0; d < ndb; d++) in_spec |= !strcmp(dbs[d].name, prev_dbs[i]);
    pending += !in_spec;
  }
  if (slot && slot->verified == h && !pending) { /* verified before, nothing changed since */
    r->topo_state = 1;
    for (int i = 0; i < r->ntopo_cells; i++) {
      r->topo_cell_state[i] = 1;
      mgop_topo_add(r->topo_reg_cells, &r->ntopo_reg_cells, MGOP_CRD_CELLS_MAX * 2, r->topo_cells[i].name);
    }
    for (int i = 0; i < ndb; i++) mgop_topo_add(r->topo_reg_dbs, &r->ntopo_reg_dbs, 8, dbs[i].name);
    snprintf(r->topo_reason, sizeof(r->topo_reason), "Registered");
    snprintf(r->topo_msg, sizeof(r->topo_msg), "%d cell and %d database records under %.300s read back as written",
             r->ntopo_cells, ndb, r->topo_root);
    return;
  }
  if (slot && mgop_now_ms() < slot->next_ms) { /* backing off: say why, try when it ends */
    r->topo_state = -1;
    snprintf(r->topo_reason, sizeof(r->topo_reason), "TopologyUnreachable");
    snprintf(r->topo_msg, sizeof(r->topo_msg), "%.400s; retrying in %llds", slot->error,
             (slot->next_ms - mgop_now_ms() + 999) / 1000);
    mgop_enqueue(r->ns, r->name, slot->next_ms - mgop_now_ms());
    return;
  }
  if ((rc = mgop_topo_connect(r, &r->topo_doc, r->topo_addr))) {
    mgop_topo_fail(r, slot, "TopologyConfigError", mgop_errmsg());
    return;
  }
  if (slot) slot->etcd_cfg = mgop_topo_etcd_cfg;
  for (int i = 0; i < r->ntopo_cells; i++) {
    struct mgop_topo_cell c;
    mgop_topo_cell_of(&r->topo_cells[i], &c, split, sizeof(split));
    mgop_topo_key(key, sizeof(key), r->topo_root, "cells", c.name, "Cell");
    if ((rc = mgop_topo_put(key, 1, 0, &c, &eq, &wrote))) {
      char why[480];
      snprintf(why, sizeof(why), "global topology server %.400s", mgop_topo_etcd.last_error[0] ? mgop_topo_etcd.last_error : mgop_errmsg());
      mgop_topo_fail(r, slot, rc == MGOP_ERR_STATUS || rc == MGOP_ERR_PARSE ? "TopologyError" : "TopologyUnreachable", why);
      return;
    }
    r->topo_cell_state[i] = eq ? 1 : -1;
    if (eq) mgop_topo_add(r->topo_reg_cells, &r->ntopo_reg_cells, MGOP_CRD_CELLS_MAX * 2, c.name);
    else {
      conflict++;
      snprintf(r->topo_cell_msg[i], sizeof(r->topo_cell_msg[i]), "%.100s says something else; left as "
               "is (create-only): delete it to have it written", key);
    }
  }
  for (int i = 0; i < ndb; i++) {
    mgop_topo_key(key, sizeof(key), r->topo_root, "databases", dbs[i].name, "Database");
    if ((rc = mgop_topo_put(key, 0, 1, &dbs[i], &eq, &wrote))) {
      char why[480];
      snprintf(why, sizeof(why), "global topology server %.400s", mgop_topo_etcd.last_error[0] ? mgop_topo_etcd.last_error : mgop_errmsg());
      mgop_topo_fail(r, slot, rc == MGOP_ERR_STATUS || rc == MGOP_ERR_PARSE ? "TopologyError" : "TopologyUnreachable", why);
      return;
    }
    mgop_topo_add(r->topo_reg_dbs, &r->ntopo_reg_dbs, 8, dbs[i].name);
  }
  if (pending) pending = mgop_topo_prune(r, dbs, ndb, prev_cells, nprev_cells, prev_dbs, nprev_dbs, pruning, slot);
  if (pending < 0) return; /* failed: mgop_topo_fail said why */
  if (slot) slot->backoff_ms = 0, slot->next_ms = 0, slot->verified = conflict || pending ? 0 : h;
  r->topo_state = conflict ? -1 : 1;
  snprintf(r->topo_reason, sizeof(r->topo_reason), "%s", conflict ? "CellRecordConflict" : "Registered");
  if (conflict)
    snprintf(r->topo_msg, sizeof(r->topo_msg), "%d cell record%s under %.300s say%s something else; see the Cell "
             "conditions", conflict, conflict == 1 ? "" : "s", r->topo_root, conflict == 1 ? "s" : "");
  else
    snprintf(r->topo_msg, sizeof(r->topo_msg), "%d cell and %d database records under %.300s read back as written%s",
             r->ntopo_cells, ndb, r->topo_root, pending ? "; records of removed cells wait for their workloads" : "");
  if (wrote) MGOP_LOG(MGOP_INFO, ("topology of %s/%s: %d record write%s under %s", r->ns, r->name, wrote,
                                  wrote == 1 ? "" : "s", r->topo_root));
}

/* ---- rolling pool pods ----------------------------------------------------
 * Pool StatefulSets are OnDelete, so a changed pod template reaches no pod
 * by itself: the operator replaces them (docs/components.md 7.1). A pod is
 * stale when its controller-revision-hash label is not its StatefulSet's
 * status.updateRevision. Per shard, across all its pool StatefulSets (every
 * pool, every cell), one pod at a time: replicas first, the primary last,
 * each replacement Ready (and every StatefulSet back to its replicas) before
 * the next. Roles come from the pooler records in the cell's topology; a
 * shard with none registered as PRIMARY treats ordinal 0 of its first
 * StatefulSet as the likely primary. Before the primary goes, multiadmin is
 * asked for a planned switch-over; if it cannot, the pod is replaced anyway
 * (multiorch elects a new primary) and a Warning Event says so. The need is
 * seen from the StatefulSets' status (pods created but not updated), which
 * the watch already holds: an idle cluster costs no request; a rolling one
 * lists its shard's pool pods once per turn. */
static int mgop_drain_of(const struct mgop_json *j, int pod, long long *at); /* below */
struct mgop_roll_pod {
  char name[64], uid[40];
  int set, ordinal;           /* its StatefulSet (index), its ordinal  */
  int stale, ready, terminating;
  int primary;                /* registered PRIMARY in its cell's topology */
  int drain;                  /* its drain state (MGOP_DRAIN_*)        */
  long long drain_at;         /* drain.multigres.com/requested-at, unix s */
};
/* What to do next for one shard. */
struct mgop_roll_pick {
  int pod;                    /* the pod to replace now; -1: none      */
  int primary;                /* that pod is the primary (or the likely one) */
  int guessed;                /* no pod is registered PRIMARY: ordinal 0 of
                                 the first StatefulSet stands in for it */
  int wait;                   /* stale pods wait for blocker to be Ready */
  int blocker;                /* -1: a StatefulSet is short of pods    */
  int stale;                  /* pods still to replace                 */
};

/* The decision, pure: given every pool pod of a shard (their StatefulSet,
 * ordinal, staleness, readiness, role) and whether every StatefulSet has all
 * its replicas created and ready. A stale pod that is the only one not Ready
 * goes first: it serves nothing, and waiting for it would wait forever when
 * the change is what fixes it. */
static struct mgop_roll_pick mgop_roll_next(const struct mgop_roll_pod *p, int n, int sets_whole) {
  struct mgop_roll_pick k = {-1, 0, 0, 0, -1, 0};
  int primary = -1, guess = -1, down = -1, ndown = 0, going = -1;
  for (int i = 0; i < n; i++) {
    k.stale += p[i].stale;
    if (p[i].terminating) going = i;
    else if (!p[i].ready) ndown++, down = i;
    if (p[i].primary && primary < 0) primary = i;
    if (p[i].ordinal == 0 && (guess < 0 || p[i].set < p[guess].set)) guess = i;
  }
  if (!k.stale) return k;
  k.guessed = primary < 0;
  if (primary < 0) primary = guess;
  if (going >= 0 || !sets_whole || ndown > 1 || (ndown == 1 && (!p[down].stale || down == primary))) {
    k.wait = 1;
    k.blocker = going >= 0 ? going : ndown ? down : -1;
    return k;
  }
  if (ndown == 1) {
    k.pod = down;
    return k;
  }
  for (int i = 0; i < n; i++) /* a drain under way finishes before another begins */
    if (p[i].stale && p[i].drain && k.pod < 0) k.pod = i, k.primary = i == primary;
  if (k.pod >= 0) return k;
  for (int i = 0; i < n; i++) /* replicas: StatefulSet by StatefulSet, highest ordinal first */
    if (p[i].stale && i != primary &&
        (k.pod < 0 || p[i].set < p[k.pod].set || (p[i].set == p[k.pod].set && p[i].ordinal > p[k.pod].ordinal)))
      k.pod = i;
  if (k.pod < 0) k.pod = primary, k.primary = 1;
  return k;
}

/* Whether a StatefulSet's controller has seen its latest spec: the one we
 * applied and the one the watch last showed. Until then its updateRevision
 * and stale count describe the spec before, and a roll that trusted them
 * could see one StatefulSet's change and not its sibling's, and so take the
 * primary while a stale replica waits (or a reverted pod as still stale). */
static int mgop_sts_observed(const struct mgop_fp *f) {
  return f->observed_gen >= f->seen_gen && f->observed_gen >= f->applied_gen;
}

/* One turn's view of one shard's pool StatefulSets and pods (loop-owned
 * scratch, reused shard by shard). */
struct mgop_roll_set { char name[64], cell[64]; uint64_t rev; int desired, ready, pods; };
static struct {
  struct mgop_roll_set sets[MGOP_ROLL_SETS_MAX];
  struct mgop_roll_pod pods[MGOP_ROLL_PODS_MAX];
  int nsets, npods, overflow;
  int unobserved;             /* a set whose controller has not seen its
                                 latest spec yet (-1: none)            */
} mgop_rl;

/* The StatefulSets of shard s this turn built, with what their watch shows.
 * Returns how many have stale pods. */
static int mgop_roll_sets(struct mgop_rctx *r, int s, int *whole, int *updated, int *total) {
  static const char cell_label[] = "\"multigres.com/cell\":\"";
  int stale = 0;
  mgop_rl.nsets = 0;
  mgop_rl.unobserved = -1;
  *whole = 1;
  *updated = *total = 0;
  for (int i = 0; i < r->ndesired && mgop_rl.nsets < MGOP_ROLL_SETS_MAX; i++) {
    struct mgop_desired *d = &r->desired[i];
    struct mgop_roll_set *rs = &mgop_rl.sets[mgop_rl.nsets];
    const char *cl;
    struct mgop_fp *f;
    if (d->kind != K_STS || !strstr(d->json, r->shard_names[s])) continue; /* owned by this shard */
    if (!(f = mgop_fp_find(mgop_fp_key("StatefulSet", r->ns, d->name))) || !(f->flags & MGOP_FP_EXISTS)) continue;
    memset(rs, 0, sizeof(*rs));
    snprintf(rs->name, sizeof(rs->name), "%.63s", d->name); /* a StatefulSet name: at most 52 */
    if ((cl = strstr(d->json, cell_label))) sscanf(cl + sizeof(cell_label) - 1, "%63[^\"]", rs->cell);
    rs->rev = f->update_rev;
    rs->desired = f->desired;
    rs->ready = f->ready;
    *updated += f->desired > f->stale ? f->desired - f->stale : 0;
    *total += f->desired;
    stale += f->stale > 0;
    if (f->ready < f->desired) *whole = 0;
    if (!mgop_sts_observed(f) && mgop_rl.unobserved < 0) mgop_rl.unobserved = mgop_rl.nsets;
    mgop_rl.nsets++;
  }
  return stale;
}

/* One pool pod of the shard (a LIST item). */
static int mgop_roll_on_pod(void *ctx, const struct mgop_json *j, int item) {
  int refs = mgop_json_path(j, item, "metadata.ownerReferences"), conds = mgop_json_path(j, item, "status.conditions");
  char owner[64] = "", hash[128] = "", *dash;
  struct mgop_roll_pod *p;
  int set = -1;
  (void)ctx;
  for (int i = 0; mgop_json_is(j, refs, JSMN_ARRAY) && i < j->tok[refs].size; i++) {
    int ref = mgop_json_at(j, refs, i), ctl = 0;
    char kind[32];
    mgop_json_bool(j, mgop_json_key(j, ref, "controller"), &ctl);
    if (ctl && mgop_json_path_str(j, ref, "kind", kind, sizeof(kind)) == MGOP_OK && !strcmp(kind, "StatefulSet"))
      mgop_json_path_str(j, ref, "name", owner, sizeof(owner));
  }
  for (int i = 0; owner[0] && i < mgop_rl.nsets; i++)
    if (!strcmp(mgop_rl.sets[i].name, owner)) set = i;
  if (set < 0) return MGOP_OK; /* not one of this shard's StatefulSets */
  if (mgop_rl.npods == MGOP_ROLL_PODS_MAX) {
    mgop_rl.overflow = 1;
    return MGOP_OK;
  }
  p = &mgop_rl.pods[mgop_rl.npods];
  memset(p, 0, sizeof(*p));
  if (mgop_json_path_str(j, item, "metadata.name", p->name, sizeof(p->name)) || !(dash = strrchr(p->name, '-')))
    return MGOP_OK;
  mgop_json_path_str(j, item, "metadata.uid", p->uid, sizeof(p->uid));
  p->set = set;
  p->ordinal = atoi(dash + 1);
  mgop_json_str(j, mgop_json_key(j, mgop_json_path(j, item, "metadata.labels"), "controller-revision-hash"), hash,
                sizeof(hash));
  p->stale = mgop_fnv1a64(MGOP_FNV64_INIT, hash, strlen(hash)) != mgop_rl.sets[set].rev;
  p->terminating = mgop_json_path(j, item, "metadata.deletionTimestamp") >= 0;
  p->drain = mgop_drain_of(j, item, &p->drain_at);
  for (int i = 0; mgop_json_is(j, conds, JSMN_ARRAY) && i < j->tok[conds].size; i++) {
    char type[16] = "", st[8] = "";
    int c = mgop_json_at(j, conds, i);
    mgop_json_path_str(j, c, "type", type, sizeof(type));
    mgop_json_path_str(j, c, "status", st, sizeof(st));
    if (!strcmp(type, "Ready")) p->ready = !strcmp(st, "True");
  }
  mgop_rl.sets[set].pods++;
  mgop_rl.npods++;
  return MGOP_OK;
}

/* The key prefix of the pooler records of cell (and of StatefulSet sts's
 * pods, sts non-empty): <cell root>/poolers/multipooler-<cell>-[<sts>-].
 * 0 when the cell's topology is on a server of its own, which the
 * operator does not read. */
static int mgop_pooler_prefix(struct mgop_rctx *r, const char *cell, const char *sts, char *key, size_t cap) {
  const struct mgop_topo_want_cell *c = NULL;
  size_t rl;
  for (int i = 0; i < r->ntopo_cells; i++)
    if (!strcmp(r->topo_cells[i].name, cell)) c = &r->topo_cells[i];
  if (!c || strcmp(c->addrs, r->topo_addr)) return 0;
  rl = strlen(c->root);
  while (rl > 0 && c->root[rl - 1] == '/') rl--;
  snprintf(key, cap, "%.*s/poolers/multipooler-%s-%s%s", (int)rl, c->root, cell, sts, sts[0] ? "-" : "");
  return 1;
}

/* Whether a cell's pooler roles are there to be read: registration on and
 * the cell's topology on the global server (a read may still fail). */
static int mgop_roles_readable(struct mgop_rctx *r, const char *cell) {
  char key[MGOP_ROOT_PATH_BUF + 200];
  return mgop_topo_enabled && mgop_pooler_prefix(r, cell, "", key, sizeof(key));
}

/* The pods registered PRIMARY in a cell's topology: <cell root>/poolers/
 * multipooler-<cell>-<name>/Pooler, read from the global topology server when
 * the cell's topology is there. 1 when read (n may be 0); 0 when roles
 * cannot be known, why says so. */
struct mgop_roll_primaries { char (*names)[64]; int cap, n; };
static int mgop_roll_on_pooler(void *ctx, const struct mgop_etcd_kv *kv) {
  struct mgop_roll_primaries *pr = ctx;
  struct mgop_topo_pooler p;
  if (mgop_topo_pooler_parse(kv->value, kv->value_len, &p) || p.type != MGOP_POOLER_PRIMARY || !p.name[0] ||
      strlen(p.name) >= 64 || pr->n == pr->cap)
    return MGOP_OK;
  snprintf(pr->names[pr->n++], 64, "%.63s", p.name);
  return MGOP_OK;
}
static int mgop_roll_read_primaries(struct mgop_rctx *r, const char *cell, char (*names)[64], int cap, int *n,
                                    char *why, size_t wcap) {
  struct mgop_roll_primaries pr = {names, cap, 0};
  struct mgop_topo_slot *slot = mgop_topo_slot(r->ns, r->name);
  char key[MGOP_ROOT_PATH_BUF + 200];
  *n = 0;
  if (!mgop_topo_enabled) return snprintf(why, wcap, "topology registration is disabled (--topology-registration=false)"), 0;
  if (!mgop_pooler_prefix(r, cell, "", key, sizeof(key)))
    return snprintf(why, wcap, "cell %.64s keeps its topology on its own server, which the operator does not read", cell), 0;
  if (slot && slot->error[0] && mgop_now_ms() < slot->next_ms)
    return snprintf(why, wcap, "the topology server is unreachable: %.200s", slot->error), 0;
  if (mgop_topo_attach(r, slot))
    return snprintf(why, wcap, "the topology server is not usable: %.200s", mgop_errmsg()), 0;
  if (mgop_etcd_range(&mgop_topo_etcd, key, 1, 0, mgop_roll_on_pooler, &pr))
    return snprintf(why, wcap, "the pooler records could not be read: %.200s", mgop_errmsg()), 0;
  *n = pr.n;
  return 1;
}

/* ---- etcd defragmentation ---------------------------------------------------
 * etcd.maintenance.defragmentationEnabled of an operator-managed etcd (the
 * global one, or a cell's): compaction frees pages inside the backend file
 * but never shrinks it; a defragmentation rewrites it. Every
 * MGOP_DEFRAG_INTERVAL_MS (the first one interval after the operator
 * first sees the cluster) a cluster's turn looks at each such etcd: its
 * members (asked through the client Service) and each member's status
 * (asked of that member). It defragments at most one member a look, and
 * only when every member answered and all name the same leader (the health
 * gate), and only a member whose backend is at least half free and
 * MGOP_DEFRAG_MIN_FREE of it, followers before the leader. The next member
 * waits for the next look, so two members are never defragmented at once.
 * A defragmentation blocks that member's requests while bbolt copies the
 * live pages (well under a second for a topology's few MiB); the call is
 * bounded by MGOP_DEFRAG_TIMEOUT_MS and runs on the loop. Events say what
 * was done (EtcdDefragmented) or why not (EtcdDefragDeferred by the gate,
 * EtcdDefragFailed when the members could not be listed or the call failed). */
#define MGOP_DEFRAG_INTERVAL_MS (5LL * 60 * 1000)
#define MGOP_DEFRAG_MIN_FREE (8LL << 20)
#define MGOP_DEFRAG_TIMEOUT_MS 60000LL

struct mgop_defrag_view {
  struct mgop_etcd_members m;
  struct mgop_etcd_status st[MGOP_ETCD_ENDPOINTS_MAX];
  char err[MGOP_ETCD_ENDPOINTS_MAX][200]; /* "" when the member answered */
};

/* The member to defragment, or -1: *deferred 1 when the gate held it back,
 * 0 when no member needs it; why says which. */
static int mgop_defrag_pick(const struct mgop_defrag_view *v, int *deferred, char *why, size_t cap) {
  unsigned long long leader = 0;
  int best = -1;
  *deferred = 1;
  if (v->m.n == 0) return snprintf(why, cap, "the member list is empty"), -1;
  for (int i = 0; i < v->m.n; i++) {
    if (v->err[i][0]) return snprintf(why, cap, "member %s did not answer: %s", v->m.name[i], v->err[i]), -1;
    if (!v->st[i].leader) return snprintf(why, cap, "member %s knows no leader", v->m.name[i]), -1;
    if (leader && v->st[i].leader != leader)
      return snprintf(why, cap, "the members name different leaders (an election is under way)"), -1;
    leader = v->st[i].leader;
  }
  *deferred = 0;
  for (int i = 0; i < v->m.n; i++) {
    long long free_b = v->st[i].db_size - v->st[i].db_in_use, best_free;
    int follower = v->st[i].member_id != leader;
    if (free_b < MGOP_DEFRAG_MIN_FREE || free_b * 2 < v->st[i].db_size) continue;
    if (best < 0) { best = i; continue; }
    best_free = v->st[best].db_size - v->st[best].db_in_use;
    if (follower != (v->st[best].member_id != leader) ? follower : free_b > best_free) best = i;
  }
  if (best < 0)
    snprintf(why, cap, "no member has half of its backend and %lld MiB free", MGOP_DEFRAG_MIN_FREE >> 20);
  return best;
}

/* Points member at one member's client URL, with client's PEMs. */
static int mgop_defrag_member(const struct mgop_etcd *client, struct mgop_etcd *member, const char *url) {
  const struct mgop_kubecfg *c = &client->cfg;
  return mgop_etcd_init(member, &url, 1, c->ca, c->ca_len ? c->ca_len - 1 : 0, c->cert, c->cert_len ? c->cert_len - 1 : 0,
                        c->key, c->key_len ? c->key_len - 1 : 0);
}

/* The view of one etcd cluster reached through client: its members, and
 * each one's status asked of that member (through member). */
static int mgop_defrag_gather(struct mgop_etcd *client, struct mgop_etcd *member, struct mgop_defrag_view *v) {
  int rc;
  if ((rc = mgop_etcd_member_list(client, &v->m))) return rc;
  for (int i = 0; i < v->m.n; i++) {
    v->err[i][0] = 0;
    if (!v->m.url[i][0]) snprintf(v->err[i], sizeof(v->err[i]), "it has not started (no client URL)");
    else if (mgop_defrag_member(client, member, v->m.url[i]) || mgop_etcd_status(member, &v->st[i]))
      snprintf(v->err[i], sizeof(v->err[i]), "%.190s", mgop_errmsg());
  }
  return MGOP_OK;
}

/* One look at an etcd cluster: its view, then the member picked
 * defragmented. 1 when a member was defragmented, 0 when none was
 * (*deferred: held back by the gate), msg says which; <0 when the member
 * list could not be read or the defragmentation failed (msg says). */
static int mgop_defrag_pass(struct mgop_etcd *client, struct mgop_etcd *member, struct mgop_defrag_view *v,
                            int *deferred, char *msg, size_t cap) {
  char why[300];
  int rc, pick;
  *deferred = 0;
  msg[0] = 0;
  if ((rc = mgop_defrag_gather(client, member, v))) {
    snprintf(msg, cap, "the members could not be listed: %.400s", mgop_errmsg());
    return rc;
  }
  if ((pick = mgop_defrag_pick(v, deferred, why, sizeof(why))) < 0) {
    snprintf(msg, cap, "%s", why);
    return 0;
  }
  {
    const char *url = v->m.url[pick];
    struct mgop_etcd_status after;
    long long t0 = mgop_now_ms();
    if ((rc = mgop_defrag_member(client, member, url)) || (rc = mgop_etcd_defragment(member, MGOP_DEFRAG_TIMEOUT_MS))) {
      snprintf(msg, cap, "member %s (%s): the defragmentation failed: %.250s", v->m.name[pick], url, mgop_errmsg());
      return rc;
    }
    if (mgop_etcd_status(member, &after)) after.db_size = -1;
    snprintf(msg, cap, "member %s (%s)%s: backend %.1f MiB with %.1f MiB free, %.1f MiB after, in %lld ms",
             v->m.name[pick], url, v->st[pick].member_id == v->st[pick].leader ? ", the leader" : "",
             v->st[pick].db_size / 1048576.0, (v->st[pick].db_size - v->st[pick].db_in_use) / 1048576.0,
             after.db_size < 0 ? -1.0 : after.db_size / 1048576.0, mgop_now_ms() - t0);
  }
  return 1;
}

/* The cluster's managed etcds with defragmentation on, when their look is
 * due; wakes the cluster for the next look. */
static void mgop_defrag_cluster(struct mgop_rctx *r) {
  static struct mgop_etcd client, member;
  static struct mgop_defrag_view view;
  const char *addrs[1 + MGOP_CRD_CELLS_MAX];
  struct mgop_topo_slot *slot;
  int n = 0, g = mgop_json_key(&r->topo_doc, 0, "etcd");
  long long now = mgop_now_ms();
  if (r->render) return;
  if (g >= 0 && mgop_defrag_enabled(&r->topo_doc, g)) addrs[n++] = r->topo_addr;
  for (int i = 0; i < r->ntopo_cells; i++)
    if (r->topo_cells[i].defrag) addrs[n++] = r->topo_cells[i].addrs;
  if (!n || !(slot = mgop_topo_slot(r->ns, r->name))) return;
  if (!slot->defrag_next_ms) slot->defrag_next_ms = now + MGOP_DEFRAG_INTERVAL_MS; /* a new etcd starts unfragmented */
  if (slot->defrag_next_ms > now) {
    mgop_enqueue(r->ns, r->name, slot->defrag_next_ms - now + 100);
    return;
  }
  slot->defrag_next_ms = now + MGOP_DEFRAG_INTERVAL_MS;
  for (int i = 0; i < n; i++) {
    char url[MGOP_ETCD_URL_MAX], msg[700] = "";
    const char *u = url;
    int deferred = 0, rc;
    snprintf(url, sizeof(url), "http://%.240s", addrs[i]);
    rc = mgop_etcd_init(&client, &u, 1, NULL, 0, NULL, 0, NULL, 0);
    if (rc) snprintf(msg, sizeof(msg), "%.600s", mgop_errmsg());
    else rc = mgop_defrag_pass(&client, &member, &view, &deferred, msg, sizeof(msg));
    if (rc == 1) {
      MGOP_LOG(MGOP_INFO, ("etcd %s of %s/%s defragmented: %s", addrs[i], r->ns, r->name, msg));
      mgop_event(r, K_CLUSTER, r->name, r->uid, "Normal", "EtcdDefragmented", "Defragment", msg);
    } else if (rc < 0 || deferred) {
      char note[1000];
      snprintf(note, sizeof(note), "etcd %.200s: %s; the next look is in %lld s", addrs[i], msg,
               MGOP_DEFRAG_INTERVAL_MS / 1000);
      MGOP_LOG(MGOP_WARN, ("defragmentation of %s/%s: %s", r->ns, r->name, note));
      mgop_event(r, K_CLUSTER, r->name, r->uid, "Warning", rc < 0 ? "EtcdDefragFailed" : "EtcdDefragDeferred",
                 "Defragment", note);
    } else {
      MGOP_LOG(MGOP_DEBUG, ("etcd %s of %s/%s: nothing to defragment: %s", addrs[i], r->ns, r->name, msg));
    }
  }
  mgop_etcd_free(&client);
  mgop_etcd_free(&member);
  mgop_enqueue(r->ns, r->name, MGOP_DEFRAG_INTERVAL_MS + 100);
}

/* ---- pooler roles ----------------------------------------------------------
 * Shard status.podRoles and primaryCell: each pool pod's pooler as it
 * registered in its cell's topology, <cell root>/poolers/multipooler-<cell>-
 * <pod>/Pooler (multipooler's --service-id is the pod name), by its
 * MultiPooler.type (field 6: PRIMARY, REPLICA, DRAINED). One range read per
 * pool StatefulSet covers its pods' keys; it is read at most every
 * --pooler-role-interval and kept with the StatefulSet's facts, and the
 * cluster gets a turn when the next read is due (an unchanged turn costs no
 * API request). Pods whose pooler is not registered, or registered with no
 * type (multipooler clears it when it shuts down), are not listed. A cell
 * whose topology is on a server of its own is not read. */
static long long mgop_role_check_ms = 30000; /* --pooler-role-interval; 0: never */
#define MGOP_POD_ROLES_MAX 64 /* pods a Shard's podRoles lists: the primary first */
struct mgop_pod_role { char pod[64]; const char *role; };
static struct {
  struct mgop_pod_role pod[MGOP_ROLL_PODS_MAX];
  int n;
  char primary_cell[64];
} mgop_shard_roles; /* of the Shard whose status is written next (mgop_shard_status_extra) */

struct mgop_role_read { const char *sts; uint32_t mask[3]; /* primary, replica, drained */ };
static int mgop_role_on_pooler(void *ctx, const struct mgop_etcd_kv *kv) {
  struct mgop_role_read *rr = ctx;
  struct mgop_topo_pooler p;
  size_t n = strlen(rr->sts);
  char *end;
  long ord;
  if (mgop_topo_pooler_parse(kv->value, kv->value_len, &p) || strncmp(p.name, rr->sts, n) || p.name[n] != '-' ||
      p.name[n + 1] < '0' || p.name[n + 1] > '9')
    return MGOP_OK; /* not a pod of this StatefulSet */
  ord = strtol(p.name + n + 1, &end, 10);
  if (*end || ord < 0 || ord > 31) return MGOP_OK;
  if (p.type == MGOP_POOLER_PRIMARY) rr->mask[0] |= 1u << ord;
  else if (p.type == MGOP_POOLER_REPLICA) rr->mask[1] |= 1u << ord;
  else if (p.type == MGOP_POOLER_DRAINED) rr->mask[2] |= 1u << ord;
  return MGOP_OK;
}

/* One pool StatefulSet's roles: 1 read, 0 not readable here (its cell's
 * topology is on a server of its own), -1 the server failed. */
static int mgop_role_read_set(struct mgop_rctx *r, const char *sts, const char *cell, long long now) {
  struct mgop_role_read rr = {sts, {0, 0, 0}};
  char key[MGOP_ROOT_PATH_BUF + 200];
  if (!mgop_pooler_prefix(r, cell, sts, key, sizeof(key))) return 0;
  if (mgop_etcd_range(&mgop_topo_etcd, key, 1, 0, mgop_role_on_pooler, &rr)) return -1;
  mgop_sts_roles_set(mgop_fp_key("StatefulSet", r->ns, sts), rr.mask, now);
  return 1;
}

static int mgop_cmp_pod_role(const void *a, const void *b) { /* the primary first, then by name */
  const struct mgop_pod_role *x = a, *y = b;
  int px = x->role[0] == 'P', py = y->role[0] == 'P';
  return px != py ? py - px : strcmp(x->pod, y->pod);
}

/* Shard s's pods and roles into mgop_shard_roles (sorted), after reading the
 * StatefulSets that are due; a topology server that failed this turn
 * (*topo_down) is not asked again until the next interval. Returns ms until
 * the next read is due, -1 when none is. */
static long long mgop_shard_roles_of(struct mgop_rctx *r, int s, int *topo_down) {
  struct mgop_topo_slot *slot;
  long long now = mgop_now_ms(), next = -1;
  int whole, updated, total;
  mgop_shard_roles.n = 0;
  mgop_shard_roles.primary_cell[0] = 0;
  if (!mgop_topo_enabled || r->render || !mgop_role_check_ms) return -1;
  slot = mgop_topo_slot(r->ns, r->name);
  mgop_roll_sets(r, s, &whole, &updated, &total); /* the shard's pool StatefulSets (the roll is done this turn) */
  for (int i = 0; i < mgop_rl.nsets; i++) {
    const struct mgop_roll_set *set = &mgop_rl.sets[i];
    const char *cell = set->cell;
    struct mgop_sts_fact fact;
    if (!mgop_sts_fact_get(r->ns, set->name, &fact)) continue;
    if (!fact.roles_ms || now - fact.roles_ms >= mgop_role_check_ms) {
      int rc = -1;
      if (!*topo_down && !(slot && slot->error[0] && now < slot->next_ms) && !mgop_topo_attach(r, slot))
        rc = mgop_role_read_set(r, set->name, cell, now);
      if (rc < 0) { /* keep what was known; try again next interval */
        if (!*topo_down)
          MGOP_LOG(MGOP_DEBUG, ("pooler roles of %s/%s not read: %s", r->ns, set->name, mgop_errmsg()));
        *topo_down = 1;
        mgop_sts_roles_set(mgop_fp_key("StatefulSet", r->ns, set->name), NULL, now);
      }
      mgop_sts_fact_get(r->ns, set->name, &fact);
    }
    if (fact.roles_ms) {
      long long due = fact.roles_ms + mgop_role_check_ms - now;
      if (next < 0 || due < next) next = due < 0 ? 0 : due;
    }
    for (int o = 0; o < set->desired && o < 32; o++) {
      struct mgop_pod_role *pr = &mgop_shard_roles.pod[mgop_shard_roles.n];
      const char *role = fact.primary >> o & 1 ? "PRIMARY" : fact.drained >> o & 1 ? "DRAINED"
                         : fact.replica >> o & 1 ? "REPLICA" : NULL;
      if (!role) continue;
      if (mgop_shard_roles.n == MGOP_ROLL_PODS_MAX) break; /* cannot happen: pools x cells x 32 fit */
      snprintf(pr->pod, sizeof(pr->pod), "%.52s-%d", set->name, o);
      pr->role = role;
      mgop_shard_roles.n++;
      if (role[0] == 'P' && !mgop_shard_roles.primary_cell[0])
        snprintf(mgop_shard_roles.primary_cell, sizeof(mgop_shard_roles.primary_cell), "%s", cell);
    }
  }
  qsort(mgop_shard_roles.pod, (size_t)mgop_shard_roles.n, sizeof(mgop_shard_roles.pod[0]), mgop_cmp_pod_role);
  if (mgop_shard_roles.n > MGOP_POD_ROLES_MAX) {
    char what[400];
    snprintf(what, sizeof(what), "Shard %s/%s has %d pods with a role; status.podRoles lists %d of them, the "
             "primary first", r->ns, r->shard_names[s], mgop_shard_roles.n, MGOP_POD_ROLES_MAX);
    mgop_limit_note(MGOP_L_VALUE_LENGTH, what);
    mgop_shard_roles.n = MGOP_POD_ROLES_MAX;
  }
  return next;
}

/* Shard status.podRoles, replaced whole when it differs from what the Shard
 * shows: a JSON patch "add" of the map, since a merge patch cannot drop a
 * pod no longer listed. Written after the rest of the status, which
 * leaves podRoles out (mgop_status_hash). */
static void mgop_write_pod_roles(struct mgop_rctx *r, const char *shard, struct mgop_fp *f) {
  static char mem[MGOP_POD_ROLES_MAX * 96 + 128];
  static jsmntok_t tok[2 * MGOP_POD_ROLES_MAX + 8];
  struct mgop_buf b;
  struct mgop_jw w;
  struct mgop_json j;
  char path[512];
  size_t at;
  int status = 0;
  uint64_t h;
  mgop_buf_init(&b, mem, sizeof(mem));
  mgop_buf_puts(&b, "[{\"op\":\"add\",\"path\":\"/status/podRoles\",\"value\":");
  at = b.len;
  mgop_jw_init(&w, &b);
  mgop_jw_obj(&w);
  for (int i = 0; i < mgop_shard_roles.n; i++) {
    mgop_jw_key(&w, mgop_shard_roles.pod[i].pod);
    mgop_jw_str(&w, mgop_shard_roles.pod[i].role);
  }
  mgop_jw_obj_end(&w);
  if (b.overflow || mgop_json_parse(&j, b.p + at, b.len - at, tok, sizeof(tok) / sizeof(tok[0]))) return; /* sized */
  h = mgop_json_canon_hash(&j, 0);
  mgop_buf_puts(&b, "}]");
  if (b.overflow || h == (f->roles_hash ? f->roles_hash : mgop_roles_hash(NULL, -1)) || r->render ||
      !mgop_may_write())
    return; /* unchanged; never seen counts as none listed */
  /* a JSON patch into status: the Shard's own status write goes first */
  if (mgop_status_flush_for(r, mgop_fp_key("Shard", r->ns, shard))) return;
  mgop_item_path(K_SHARD, r->ns, shard, path, sizeof(path) - 8);
  strcat(path, "/status");
  if (mgop_kube_request(mgop_api_ptr, "PATCH", path, "application/json-patch+json", b.p, b.len, NULL, &status) ==
          MGOP_OK && status == 200)
    f->roles_hash = h;
  else
    MGOP_LOG(MGOP_WARN, ("status.podRoles of Shard %s/%s not written: HTTP %d: %s", r->ns, shard, status,
                         mgop_errmsg()));
}

/* Asks multiadmin for a planned switch-over of shard s's primary (POST
 * /api/v1/shards/{database}/{table_group}/{shard}/switch-primary, body the
 * rest of SwitchPrimaryRequest). 1 when it answered 2xx; 0 with why. The
 * catch-up timeout keeps its answer within our deadline (MGOP_MA_TIMEOUT_MS):
 * a late answer counts as a refusal. */
static int mgop_switch_primary(struct mgop_rctx *r, int s, const char *pod, const char *what, char *why, size_t wcap) {
  static char resp[4096];
  char target[400], db[100], tg[100], sh[100], body[400], msg[240];
  struct mgop_buf out, b;
  struct mgop_jw w;
  int status = 0;
  mgop_query_value(r->shard_db[s], db, sizeof(db));
  mgop_query_value(r->shard_tgn[s], tg, sizeof(tg));
  mgop_query_value(r->shard_sn[s], sh, sizeof(sh));
  snprintf(target, sizeof(target), "/api/v1/shards/%s/%s/%s/switch-primary", db, tg, sh);
  mgop_buf_init(&b, body, sizeof(body));
  mgop_jw_init(&w, &b);
  mgop_jw_obj(&w);
  snprintf(msg, sizeof(msg), "%s: %s pod %s", MGOP_MANAGER, what, pod);
  mgop_jw_key(&w, "reason"); mgop_jw_str(&w, msg);
  mgop_jw_key(&w, "catchupTimeout"); mgop_jw_str(&w, MGOP_SWITCH_CATCHUP);
  mgop_jw_obj_end(&w);
  mgop_buf_cstr(&b);
  mgop_buf_init(&out, resp, sizeof(resp));
  if (mgop_sched_call(r, "POST", target, body, &out, &status))
    return snprintf(why, wcap, "multiadmin did not answer: %.200s", mgop_errmsg()), 0;
  if (status / 100 == 2) return 1;
  mgop_etcd_error_message(out.p, out.len, msg, sizeof(msg)); /* grpc-gateway's {"code","message"} */
  snprintf(why, wcap, "multiadmin answered HTTP %d: %.200s", status, msg);
  return 0;
}

static int mgop_shard_index(struct mgop_rctx *r, const char *cr) {
  for (int s = 0; s < r->nshard_names; s++)
    if (!strcmp(r->shard_names[s], cr)) return s;
  return -1;
}

/* ---- drain ------------------------------------------------------------------
 * A pool pod the operator removes (a roll replaces it, a scale-down takes it
 * away) is drained first, in steps a human, a PodDisruptionBudget or a
 * GitOps tool can follow on the pod's annotations (the reference operator's
 * names): drain.multigres.com/state goes requested -> draining ->
 * ready-for-deletion, drain.multigres.com/requested-at says since when.
 *   requested: Event DrainRequested. Next turn, for the primary, multiadmin
 *     is asked to switch it away (a roll replaces the primary anyway when it
 *     cannot, with a Warning; a scale-down holds instead and asks again);
 *   draining: the pod's pooler record leaves its cell's topology, so
 *     gateways stop sending it new work; --drain-grace (default
 *     MGOP_DRAIN_GRACE_S) after the
 *     request it is ready-for-deletion, and deleted in the same turn.
 * One step per turn and one pod per shard at a time (a roll waits while a
 * scale-down drains, a scale-down steps one replica at a time and waits for
 * the last pod it removed to be gone). A roll's drain not finished
 * MGOP_DRAIN_TIMEOUT_S after its request deletes the pod anyway, with a
 * Warning DrainTimedOut. A scale-down reversed mid-drain clears the
 * annotations, or, once the pooler left the topology, replaces the pod. */
#define MGOP_DRAIN_STATE_ANNOTATION "drain.multigres.com/state"
#define MGOP_DRAIN_AT_ANNOTATION "drain.multigres.com/requested-at"
#define MGOP_DRAIN_GRACE_S 5      /* --drain-grace's default */
#define MGOP_DRAIN_TIMEOUT_S 300
#define MGOP_DRAIN_GRACE_MAX_S 240 /* below the timeout, or every drain would time out */
static long long mgop_drain_grace_s = MGOP_DRAIN_GRACE_S;
enum { MGOP_DRAIN_NONE, MGOP_DRAIN_REQUESTED, MGOP_DRAIN_DRAINING, MGOP_DRAIN_READY };
static const char *const mgop_drain_names[] = {"", "requested", "draining", "ready-for-deletion"};
/* What the next step does, from the state and the clock (pure). */
enum { MGOP_DRAIN_DO_REQUEST, MGOP_DRAIN_DO_DRAIN, MGOP_DRAIN_DO_WAIT, MGOP_DRAIN_DO_DELETE, MGOP_DRAIN_DO_TIMEOUT };
static int mgop_drain_next(int state, long long at, long long now, int may_time_out) {
  if (state != MGOP_DRAIN_NONE && state != MGOP_DRAIN_READY && may_time_out && at > 0 && now - at >= MGOP_DRAIN_TIMEOUT_S)
    return MGOP_DRAIN_DO_TIMEOUT;
  switch (state) {
  case MGOP_DRAIN_NONE: return MGOP_DRAIN_DO_REQUEST;
  case MGOP_DRAIN_REQUESTED: return MGOP_DRAIN_DO_DRAIN;
  case MGOP_DRAIN_DRAINING: return at > 0 && now - at < mgop_drain_grace_s ? MGOP_DRAIN_DO_WAIT : MGOP_DRAIN_DO_DELETE;
  default: return MGOP_DRAIN_DO_DELETE;
  }
}

/* A pod's drain state (MGOP_DRAIN_*; an unknown value counts as requested)
 * and its requested-at in unix seconds (0: absent or unreadable). */
static int mgop_drain_of(const struct mgop_json *j, int pod, long long *at) {
  int ann = mgop_json_path(j, pod, "metadata.annotations");
  char v[40] = "";
  *at = 0;
  if (!mgop_json_str(j, mgop_json_key(j, ann, MGOP_DRAIN_AT_ANNOTATION), v, sizeof(v)) && mgop_rfc3339_s(v, strlen(v), at))
    *at = 0;
  if (mgop_json_str(j, mgop_json_key(j, ann, MGOP_DRAIN_STATE_ANNOTATION), v, sizeof(v)) || !v[0]) return MGOP_DRAIN_NONE;
  for (int i = MGOP_DRAIN_REQUESTED; i <= MGOP_DRAIN_READY; i++)
    if (!strcmp(v, mgop_drain_names[i])) return i;
  return MGOP_DRAIN_REQUESTED;
}

/* The pod's annotations: state (NONE removes both), and requested-at when
 * at > 0. A merge patch guarded on the pod's uid. */
static int mgop_drain_mark(struct mgop_rctx *r, const char *pod, const char *uid, int state, long long at) {
  char path[400], body[400], ts[32] = "";
  int status = 0;
  if (at > 0) mgop_iso_time(at, ts, sizeof(ts));
  if (state == MGOP_DRAIN_NONE)
    snprintf(body, sizeof(body), "{\"metadata\":{\"uid\":\"%s\",\"annotations\":{\"" MGOP_DRAIN_STATE_ANNOTATION "\":null,\""
             MGOP_DRAIN_AT_ANNOTATION "\":null}}}", uid);
  else
    snprintf(body, sizeof(body), "{\"metadata\":{\"uid\":\"%s\",\"annotations\":{\"" MGOP_DRAIN_STATE_ANNOTATION
             "\":\"%s\"%s%s%s}}}", uid, mgop_drain_names[state], ts[0] ? ",\"" MGOP_DRAIN_AT_ANNOTATION "\":\"" : "", ts,
             ts[0] ? "\"" : "");
  mgop_item_path(K_POD, r->ns, pod, path, sizeof(path));
  return mgop_kube_merge_patch(mgop_api_ptr, path, MGOP_MANAGER, body, strlen(body), NULL, &status);
}

/* The pod's pooler record out of its cell's topology (best effort: why says
 * what stopped it). 1 when removed or absent. */
static int mgop_drain_unregister(struct mgop_rctx *r, const char *cell, const char *pod, char *why, size_t wcap) {
  struct mgop_topo_slot *slot = mgop_topo_slot(r->ns, r->name);
  char key[MGOP_ROOT_PATH_BUF + 200];
  size_t n;
  if (!mgop_topo_enabled) return snprintf(why, wcap, "topology registration is disabled"), 0;
  if (!mgop_pooler_prefix(r, cell, "", key, sizeof(key)))
    return snprintf(why, wcap, "cell %.64s keeps its topology on its own server", cell), 0;
  n = strlen(key);
  snprintf(key + n, sizeof(key) - n, "%s/Pooler", pod);
  if (mgop_topo_attach(r, slot) || mgop_etcd_delete(&mgop_topo_etcd, key, NULL))
    return snprintf(why, wcap, "the topology server: %.200s", mgop_errmsg()), 0;
  return 1;
}

struct mgop_drain_pod {
  const char *name, *uid, *cell;
  int state, primary;
  long long at;
  const char *what;   /* "replacing" or "scaling down, removing" (switch-primary's reason) */
  const char *after;  /* Event text: what the switch-over comes before */
  int may_take_primary; /* a roll: the primary goes even when it cannot be switched away */
};
enum { MGOP_DRAIN_WAITS, MGOP_DRAIN_DELETE_NOW, MGOP_DRAIN_HELD };
/* One step of pod p's drain, shard s. Returns MGOP_DRAIN_DELETE_NOW,
 * MGOP_DRAIN_WAITS (the cluster gets a turn when the next step is due) or
 * MGOP_DRAIN_HELD (the primary could not be switched away and may not go);
 * note says what happened or what it waits for. */
static int mgop_drain_step(struct mgop_rctx *r, int s, const struct mgop_drain_pod *p, char *note, size_t ncap) {
  const char *cr = r->shard_names[s], *uid = mgop_uid_of(r, K_SHARD, cr);
  long long now = time(NULL);
  char why[400], ev[900];
  switch (mgop_drain_next(p->state, p->at, now, p->may_take_primary)) {
  case MGOP_DRAIN_DO_REQUEST:
    if (mgop_drain_mark(r, p->name, p->uid, MGOP_DRAIN_REQUESTED, now))
      return snprintf(note, ncap, "pod %s: drain not requested: %.200s", p->name, mgop_errmsg()), MGOP_DRAIN_WAITS;
    snprintf(ev, sizeof(ev), "drain of pod %s requested (%s it%s)", p->name, p->what, p->primary ? "; it is the primary" : "");
    mgop_event(r, K_SHARD, cr, uid, "Normal", "DrainRequested", "Drain", ev);
    mgop_enqueue(r->ns, r->name, 200);
    return snprintf(note, ncap, "draining pod %s: requested", p->name), MGOP_DRAIN_WAITS;
  case MGOP_DRAIN_DO_DRAIN:
    if (p->primary) {
      if (mgop_switch_primary(r, s, p->name, p->what, why, sizeof(why))) {
        snprintf(ev, sizeof(ev), "multiadmin switched the primary away from pod %s before %s", p->name, p->after);
        mgop_event(r, K_SHARD, cr, uid, "Normal", "PrimarySwitched", p->may_take_primary ? "RollingUpdate" : "ScaleDown", ev);
      } else if (!p->may_take_primary) {
        return snprintf(note, ncap, "pod %s is the primary and %.300s", p->name, why), MGOP_DRAIN_HELD;
      } else {
        snprintf(ev, sizeof(ev), "switch-primary for %s/%s/%s failed (%.300s); replacing primary pod %s anyway: "
                 "multiorch elects a new primary among the replicas", r->shard_db[s], r->shard_tgn[s], r->shard_sn[s],
                 why, p->name);
        mgop_event(r, K_SHARD, cr, uid, "Warning", "SwitchPrimaryFailed", "RollingUpdate", ev);
      }
    }
    if (!mgop_drain_unregister(r, p->cell, p->name, why, sizeof(why)))
      MGOP_LOG(MGOP_INFO, ("drain of %s/%s: pooler record left in place (%s)", r->ns, p->name, why));
    if (mgop_drain_mark(r, p->name, p->uid, MGOP_DRAIN_DRAINING, 0))
      return snprintf(note, ncap, "pod %s: drain not marked: %.200s", p->name, mgop_errmsg()), MGOP_DRAIN_WAITS;
    mgop_enqueue(r->ns, r->name, mgop_drain_grace_s * 1000LL + 200);
    return snprintf(note, ncap, "draining pod %s", p->name), MGOP_DRAIN_WAITS;
  case MGOP_DRAIN_DO_WAIT:
    mgop_enqueue(r->ns, r->name, (mgop_drain_grace_s - (now - p->at)) * 1000LL + 200);
    return snprintf(note, ncap, "draining pod %s", p->name), MGOP_DRAIN_WAITS;
  case MGOP_DRAIN_DO_TIMEOUT:
    snprintf(ev, sizeof(ev), "the drain of pod %s, requested %llds ago, is still %s; deleting it anyway", p->name,
             now - p->at, mgop_drain_names[p->state]);
    mgop_event(r, K_SHARD, cr, uid, "Warning", "DrainTimedOut", "Drain", ev);
    return MGOP_DRAIN_DELETE_NOW;
  default:
    if (p->state != MGOP_DRAIN_READY) mgop_drain_mark(r, p->name, p->uid, MGOP_DRAIN_READY, 0); /* seen before it goes */
    return MGOP_DRAIN_DELETE_NOW;
  }
}

/* A scale-down step that cannot go on yet: says why on the Shard
 * (RollingUpdate, reason ScalingDown), asks for another turn in retry_ms and
 * returns the replicas to keep. */
static long long mgop_scale_waits(struct mgop_rctx *r, int s, long long keep, long long retry_ms, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static long long mgop_scale_waits(struct mgop_rctx *r, int s, long long keep, long long retry_ms, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->roll_note[s], sizeof(r->roll_note[s]), fmt, ap);
  va_end(ap);
  r->roll_held[s] = 2;
  mgop_enqueue(r->ns, r->name, retry_ms);
  return keep;
}

/* A pool pod by name: 1 (its uid and drain state filled), 0 when it does
 * not exist, -1 when it could not be read (why). */
struct mgop_pod_seen { char uid[40]; int drain, terminating; long long drain_at; };
static int mgop_pod_get(struct mgop_rctx *r, const char *pod, struct mgop_pod_seen *out, char *why, size_t wcap) {
  static char body[64 * 1024];
  char path[400];
  struct mgop_buf b;
  struct mgop_json j;
  int status = 0;
  memset(out, 0, sizeof(*out));
  mgop_item_path(K_POD, r->ns, pod, path, sizeof(path));
  mgop_buf_init(&b, body, sizeof(body));
  if (mgop_kube_get(mgop_api_ptr, path, &b, &status)) {
    if (status == 404) return 0;
    return snprintf(why, wcap, "pod %s not read: %.200s", pod, mgop_errmsg()), -1;
  }
  if (mgop_parse_arena(r->arena, b.p, b.len, &j))
    return snprintf(why, wcap, "pod %s not parsed: %.200s", pod, mgop_errmsg()), -1;
  mgop_json_path_str(&j, 0, "metadata.uid", out->uid, sizeof(out->uid));
  out->terminating = mgop_json_path(&j, 0, "metadata.deletionTimestamp") >= 0;
  out->drain = mgop_drain_of(&j, 0, &out->drain_at);
  return 1;
}

/* A drain whose reason went away (a scale-down reversed, a rolling update
 * reverted): the pod stays. Requested only: the annotations go. Once its
 * pooler left the topology: the pod is replaced (deleted; the StatefulSet
 * makes it again, and it registers), since nothing else would put its
 * record back. Returns 1 when it deleted the pod. */
static int mgop_drain_revoke(struct mgop_rctx *r, const char *cr, const char *pod, const char *uid, int state,
                             const char *cause, const char *action) {
  char path[400], ev[400];
  int status = 0, deleted = 0;
  if (state == MGOP_DRAIN_REQUESTED) {
    mgop_drain_mark(r, pod, uid, MGOP_DRAIN_NONE, 0);
    snprintf(ev, sizeof(ev), "%s: the drain of pod %s is cancelled", cause, pod);
  } else {
    mgop_item_path(K_POD, r->ns, pod, path, sizeof(path));
    deleted = !mgop_kube_delete(mgop_api_ptr, path, "Background", uid, &status);
    snprintf(ev, sizeof(ev), "%s after pod %s had left the topology: it is replaced", cause, pod);
  }
  mgop_event(r, K_SHARD, cr, mgop_uid_of(r, K_SHARD, cr), "Normal", "DrainCancelled", action, ev);
  return deleted;
}
static void mgop_drain_cancel(struct mgop_rctx *r, const char *cr, const char *pod) {
  struct mgop_pod_seen ps;
  char why[300];
  if (mgop_pod_get(r, pod, &ps, why, sizeof(why)) != 1 || ps.drain == MGOP_DRAIN_NONE || ps.terminating) return;
  mgop_drain_revoke(r, cr, pod, ps.uid, ps.drain, "the scale-down was reversed", "ScaleDown");
}

/* Lowering a pool's replicasPerCell removes the StatefulSet's highest
 * ordinals, one at a time, each drained first (above), and never the
 * primary: when the pod to go is registered PRIMARY, multiadmin switches the
 * primary away first; if it cannot, the StatefulSet keeps its replicas (the
 * scale-down is held, said by the Shard's RollingUpdate condition and an
 * Event) and a later turn asks again. Roles that exist but cannot be read
 * now (the topology server unreachable) hold the step too. Roles unknown
 * (registration off, a cell with its own topology server): ordinal 0, the
 * likely primary, is never removed by a scale-down to one or more. r->roll_held[s]
 * is 1 while held, 2 while a pod drains. Returns the replicas to write. */
static long long mgop_scale_down_guard(struct mgop_rctx *r, const char *cr, const char *sts, const char *cell,
                                       long long per) {
  struct mgop_fp *f = mgop_fp_find(mgop_fp_key("StatefulSet", r->ns, sts));
  char prim[8][64], why[300], note[600], pod[80], last[80], after[200];
  struct mgop_pod_seen ps;
  struct mgop_drain_pod dp;
  int n = 0, s, rc;
  if (r->render || !mgop_may_write() || !f || !(f->flags & MGOP_FP_EXISTS)) return per;
  snprintf(pod, sizeof(pod), "%.63s-%d", sts, f->desired - 1);
  if (f->desired <= per) {
    if (f->flags & MGOP_FP_DRAIN) mgop_drain_cancel(r, cr, pod);
    f->flags &= ~(MGOP_FP_HELD | MGOP_FP_DRAIN);
    return per;
  }
  if ((s = mgop_shard_index(r, cr)) < 0) return per;
  snprintf(last, sizeof(last), "%.63s-%d", sts, f->desired); /* the one the last step removed */
  if ((rc = mgop_pod_get(r, last, &ps, why, sizeof(why))) != 0)
    return mgop_scale_waits(r, s, f->desired, 2000, "scale-down of StatefulSet %.63s: %s", sts,
                            rc > 0 ? "waiting for the last pod removed to be gone" : why);
  if ((rc = mgop_pod_get(r, pod, &ps, why, sizeof(why))) <= 0) {
    if (rc == 0) return f->desired - 1; /* already gone */
    return mgop_scale_waits(r, s, f->desired, 2000, "scale-down of StatefulSet %.63s: %s", sts, why);
  }
  memset(&dp, 0, sizeof(dp));
  dp.name = pod, dp.uid = ps.uid, dp.cell = cell, dp.state = ps.drain, dp.at = ps.drain_at;
  if (mgop_roll_read_primaries(r, cell, prim, 8, &n, why, sizeof(why))) {
    for (int i = 0; i < n; i++) dp.primary |= !strcmp(prim[i], pod);
  } else if (mgop_roles_readable(r, cell)) { /* but not read now: never guess whether this pod is the primary */
    return mgop_scale_waits(r, s, f->desired, 5000, "scale-down of StatefulSet %.63s waits: %.300s", sts, why);
  }
  snprintf(after, sizeof(after), "StatefulSet %.63s scales from %d to %d replicas", sts, f->desired, f->desired - 1);
  dp.what = "scaling down, removing";
  dp.after = after;
  rc = mgop_drain_step(r, s, &dp, note, sizeof(note));
  if (rc == MGOP_DRAIN_DELETE_NOW) {
    f->flags &= ~(MGOP_FP_HELD | MGOP_FP_DRAIN);
    if (f->desired - 1 > per) r->roll_held[s] = 2, mgop_enqueue(r->ns, r->name, 2000); /* the next step */
    return f->desired - 1;
  }
  f->flags |= MGOP_FP_DRAIN;
  if (rc == MGOP_DRAIN_WAITS) {
    snprintf(r->roll_note[s], sizeof(r->roll_note[s]), "scale-down of StatefulSet %.63s from %d to %lld: %.400s", sts,
             f->desired, per, note);
    r->roll_held[s] = 2;
    return f->desired;
  }
  snprintf(r->roll_note[s], sizeof(r->roll_note[s]), "scale-down of StatefulSet %.63s from %d to %lld held: %.400s", sts,
           f->desired, per, note);
  r->roll_held[s] = 1;
  mgop_enqueue(r->ns, r->name, MGOP_SCALE_HOLD_RETRY_MS); /* ready or not, try again */
  if (!(f->flags & MGOP_FP_HELD)) /* once per hold, not per retry */
    mgop_event(r, K_SHARD, cr, mgop_uid_of(r, K_SHARD, cr), "Warning", "ScaleDownHeld", "ScaleDown", r->roll_note[s]);
  f->flags |= MGOP_FP_HELD;
  return f->desired;
}

/* Roles of the listed pods, cell by cell: 1 when every cell was read, 0
 * when some cell's roles cannot be known (registration off, a topology
 * server of its own), -1 when a cell's roles exist but could not be read
 * now (the topology server unreachable). */
static int mgop_roll_roles(struct mgop_rctx *r, char *why, size_t wcap) {
  int known = 1;
  why[0] = 0;
  for (int i = 0; i < mgop_rl.nsets; i++) {
    char prim[8][64], w[300];
    int n = 0, seen = 0;
    for (int k = 0; k < i; k++) seen |= !strcmp(mgop_rl.sets[k].cell, mgop_rl.sets[i].cell);
    if (seen) continue;
    if (!mgop_roll_read_primaries(r, mgop_rl.sets[i].cell, prim, 8, &n, w, sizeof(w))) {
      if (mgop_roles_readable(r, mgop_rl.sets[i].cell) && known >= 0) snprintf(why, wcap, "%s", w), known = -1;
      else if (!why[0]) snprintf(why, wcap, "%s", w);
      if (known > 0) known = 0;
      continue;
    }
    for (int p = 0; p < mgop_rl.npods; p++)
      for (int q = 0; q < n; q++)
        if (!strcmp(mgop_rl.pods[p].name, prim[q])) mgop_rl.pods[p].primary = 1;
  }
  if (known && !why[0]) snprintf(why, wcap, "no pool pod of the shard is registered PRIMARY in the topology");
  return known;
}

/* The pool pods of shard s (into mgop_rl.pods, against mgop_rl.sets):
 * 0, or -1 with the reason in r->roll_note[s]. */
static int mgop_roll_list(struct mgop_rctx *r, int s) {
  char path[700], rv[32], db[100], tg[100], sh[100], cl[80];
  mgop_rl.npods = mgop_rl.overflow = 0;
  mgop_query_value(r->shard_db[s], db, sizeof(db));
  mgop_query_value(r->shard_tgn[s], tg, sizeof(tg));
  mgop_query_value(r->shard_sn[s], sh, sizeof(sh));
  mgop_query_value(r->name, cl, sizeof(cl));
  snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods?labelSelector=%s%%2Cmultigres.com%%2Fcluster%%3D%s"
           "%%2Capp.kubernetes.io%%2Fcomponent%%3Dshard-pool%%2Cmultigres.com%%2Fdatabase%%3D%s"
           "%%2Cmultigres.com%%2Ftablegroup%%3D%s%%2Cmultigres.com%%2Fshard%%3D%s",
           r->ns, MGOP_MANAGED_SELECTOR, cl, db, tg, sh);
  if (mgop_kube_list(mgop_api_ptr, NULL, path, mgop_roll_on_pod, NULL, rv, sizeof(rv), NULL)) {
    snprintf(r->roll_note[s], sizeof(r->roll_note[s]), "pool pods not listed: %.200s", mgop_errmsg());
    return -1;
  }
  if (mgop_rl.overflow) {
    char what[400];
    snprintf(what, sizeof(what), "Shard %.63s/%.254s has more than %d pool pods; they are not rolled", r->ns,
             r->shard_names[s], MGOP_ROLL_PODS_MAX);
    mgop_limit_note(MGOP_L_OBJECTS, what);
    snprintf(r->roll_note[s], sizeof(r->roll_note[s]), "%s (limit objects)", what);
    return -1;
  }
  return 0;
}

/* The roll's flag on shard s's StatefulSets (MGOP_FP_ROLL_DRAIN): set >= 0
 * raises it on that mgop_rl.sets index, MGOP_ROLL_FLAG_CLEAR clears it on
 * all, MGOP_ROLL_FLAG_ASK changes nothing; returns whether any had it. */
enum { MGOP_ROLL_FLAG_CLEAR = -1, MGOP_ROLL_FLAG_ASK = -2 };
static int mgop_roll_drain_flag(struct mgop_rctx *r, int set) {
  int had = 0;
  for (int i = 0; i < mgop_rl.nsets; i++) {
    struct mgop_fp *f = mgop_fp_find(mgop_fp_key("StatefulSet", r->ns, mgop_rl.sets[i].name));
    if (!f) continue;
    had |= !!(f->flags & MGOP_FP_ROLL_DRAIN);
    if (set == MGOP_ROLL_FLAG_CLEAR) f->flags &= ~MGOP_FP_ROLL_DRAIN;
    else if (i == set) f->flags |= MGOP_FP_ROLL_DRAIN;
  }
  return had;
}

/* A pod the roll began to drain that is no longer stale (the change was
 * reverted, or another one made it current): its drain is revoked. One pod
 * replaced per turn at most; returns 1 when one was. */
static int mgop_roll_revoke_fresh(struct mgop_rctx *r, int s) {
  for (int i = 0; i < mgop_rl.npods; i++) {
    struct mgop_roll_pod *p = &mgop_rl.pods[i];
    if (p->stale || p->terminating || p->drain == MGOP_DRAIN_NONE) continue;
    if (mgop_drain_revoke(r, r->shard_names[s], p->name, p->uid, p->drain,
                          "the rolling update was reverted", "RollingUpdate"))
      return 1;
  }
  return 0;
}

/* One step of shard s's roll: at most one pod deleted. */
static void mgop_roll_shard(struct mgop_rctx *r, int s) {
  char path[700], why[400], note[900];
  const char *cr = r->shard_names[s], *uid = mgop_uid_of(r, K_SHARD, cr);
  struct mgop_roll_pick k;
  struct mgop_roll_pod *p;
  int whole, updated, total, status = 0, stale = mgop_roll_sets(r, s, &whole, &updated, &total);
  if (mgop_rl.unobserved >= 0) { /* decide on the specs as they are now: the watch brings the controller's word */
    if (stale || mgop_roll_drain_flag(r, MGOP_ROLL_FLAG_ASK)) {
      snprintf(r->roll_note[s], sizeof(r->roll_note[s]), "waiting for the StatefulSet controller to observe "
               "StatefulSet %s's latest spec", mgop_rl.sets[mgop_rl.unobserved].name);
      MGOP_LOG(MGOP_INFO, ("roll of shard %s/%s waits: %s", r->ns, r->shard_names[s], r->roll_note[s]));
      mgop_enqueue(r->ns, r->name, 5000);
    }
    return;
  }
  if (!stale) { /* nothing stale: no request, unless a drain was left */
    if (!r->roll_held[s] && mgop_roll_drain_flag(r, MGOP_ROLL_FLAG_ASK) && !mgop_roll_list(r, s)) {
      mgop_roll_revoke_fresh(r, s);
      mgop_roll_drain_flag(r, MGOP_ROLL_FLAG_CLEAR);
    }
    return;
  }
  if (r->roll_held[s]) return; /* a scale-down of the shard drains or is held: one pod at a time */
  for (int i = 0; i < mgop_rl.nsets; i++)
    if (!mgop_rl.sets[i].rev) return; /* its controller has not reported a revision yet */
  if (mgop_roll_list(r, s)) return;
  if (mgop_roll_revoke_fresh(r, s)) return;
  for (int i = 0; i < mgop_rl.nsets; i++)
    if (mgop_rl.sets[i].pods != mgop_rl.sets[i].desired) whole = 0;
  if (mgop_roll_roles(r, why, sizeof(why)) < 0) {
    /* the roles exist but cannot be read now: wait rather than guess which pod is the primary */
    snprintf(r->roll_note[s], sizeof(r->roll_note[s]), "waiting for the pooler roles: %.400s", why);
    mgop_enqueue(r->ns, r->name, 5000);
    return;
  }
  k = mgop_roll_next(mgop_rl.pods, mgop_rl.npods, whole);
  if (k.pod < 0) {
    if (k.wait && k.blocker >= 0)
      snprintf(r->roll_note[s], sizeof(r->roll_note[s]), "waiting for pod %s to be Ready",
               mgop_rl.pods[k.blocker].name);
    else if (k.wait) snprintf(r->roll_note[s], sizeof(r->roll_note[s]), "waiting for every pool pod to be created");
    return;
  }
  p = &mgop_rl.pods[k.pod];
  if (k.primary && k.guessed && !p->drain) {
    snprintf(note, sizeof(note), "roles unknown (%.300s): pod %s, ordinal 0 of the shard's first pool StatefulSet, is "
             "treated as the likely primary and replaced last", why, p->name);
    mgop_event(r, K_SHARD, cr, uid, "Normal", "PrimaryUnknown", "RollingUpdate", note);
  }
  {
    struct mgop_drain_pod dp = {p->name, p->uid, mgop_rl.sets[p->set].cell, p->drain, k.primary, p->drain_at,
                                "replacing", "its replacement", 1};
    if (mgop_drain_step(r, s, &dp, note, sizeof(note)) != MGOP_DRAIN_DELETE_NOW) {
      snprintf(r->roll_note[s], sizeof(r->roll_note[s]), "%.590s", note);
      mgop_roll_drain_flag(r, p->set); /* a revert finds the drain it left */
      return;
    }
  }
  mgop_item_path(K_POD, r->ns, p->name, path, sizeof(path));
  if (mgop_kube_delete(mgop_api_ptr, path, "Background", p->uid, &status)) {
    snprintf(r->roll_note[s], sizeof(r->roll_note[s]), "pod %s not deleted: %.200s", p->name, mgop_errmsg());
    return;
  }
  mgop_roll_drain_flag(r, MGOP_ROLL_FLAG_CLEAR); /* its drain is over */
  snprintf(note, sizeof(note), "replacing pod %s (%s; %d of %d pool pods stale)", p->name,
           k.primary ? "the primary, last" : !p->ready ? "not Ready" : "a replica", k.stale, mgop_rl.npods);
  mgop_event(r, K_SHARD, cr, uid, "Normal", "RollingUpdate", "RollingUpdate", note);
  snprintf(r->roll_note[s], sizeof(r->roll_note[s]), "%.590s", note);
  {
    char f[400];
    snprintf(f, sizeof(f), "\"namespace\":\"%s\",\"shard\":\"%s\",\"pod\":\"%s\",\"primary\":%s,\"stale\":%d", r->ns,
             cr, p->name, k.primary ? "true" : "false", k.stale);
    mgop_log_fields(MGOP_INFO, "reconcile", "rolling pod replaced", f);
  }
}

static void mgop_roll(struct mgop_rctx *r) {
  for (int s = 0; s < r->nshard_names; s++) mgop_roll_shard(r, s);
}

/* The tree; a turn that ran out of arena stalls like any other limit. */
static int mgop_reconcile_tree(struct mgop_rctx *r) {
  int rc = mgop_reconcile_phases(r);
  if (rc == MGOP_ERR_NOMEM && strstr(mgop_errmsg(), "arena exhausted"))
    mgop_limit_reached(r, MGOP_L_ARENA, "%s: the cluster's objects and resolved settings do not fit the %zu-byte "
                       "reconcile arena; use fewer cells, pools or table groups, or smaller inline settings",
                       r->where[0] ? r->where : "spec", r->arena->cap);
  return rc;
}

/* ---- status -------------------------------------------------------------- */
/* A workload is ready when its controller saw the latest spec and every
 * replica is ready. */
static int mgop_workload_ready(struct mgop_rctx *r, const char *kind, const char *name, int *ready, int *desired) {
  struct mgop_fp *f = mgop_fp_find(mgop_fp_key(kind, r->ns, name));
  *ready = f ? f->ready : 0;
  *desired = f ? f->desired : 0;
  return f && (f->flags & MGOP_FP_SETTLED) && f->desired > 0 && f->ready >= f->desired;
}

struct mgop_counts { int ready, total; const char *svc; };
static void mgop_cell_status_extra(struct mgop_jw *w, void *ctx) {
  struct mgop_counts *c = ctx;
  mgop_jw_key(w, "gatewayReadyReplicas"); mgop_jw_i64(w, c->ready);
  mgop_jw_key(w, "gatewayReplicas"); mgop_jw_i64(w, c->total);
  mgop_jw_key(w, "gatewayServiceName"); mgop_jw_str(w, c->svc);
}
static void mgop_backup_schedule_status(struct mgop_jw *w); /* section 8 */
static void mgop_shard_status_extra(struct mgop_jw *w, void *ctx) {
  struct mgop_counts *c = ctx;
  mgop_backup_schedule_status(w);
  /* "" when no pod is known PRIMARY: a merge patch keeps a member it omits */
  mgop_jw_key(w, "primaryCell"); mgop_jw_str(w, mgop_shard_roles.primary_cell);
  mgop_jw_key(w, "readyReplicas"); mgop_jw_i64(w, c->ready);
  mgop_jw_key(w, "replicas"); mgop_jw_i64(w, c->total);
}
static void mgop_tg_status_extra(struct mgop_jw *w, void *ctx) {
  struct mgop_counts *c = ctx;
  mgop_jw_key(w, "readyShards"); mgop_jw_i64(w, c->ready);
  mgop_jw_key(w, "totalShards"); mgop_jw_i64(w, c->total);
}

static const char *mgop_phase(int ready, int some) { return ready ? "Healthy" : some ? "Progressing" : "Initializing"; }

static int mgop_unsched_why(const char *kind, const char *ns, const char *name, char *out, size_t cap);

/* Whether cert-manager has issued every Certificate of this turn (Ready, as
 * its watch shows); the first one it has not goes into why. */
static int mgop_certs_issued(const struct mgop_rctx *r, char *why, size_t why_cap) {
  for (int i = 0; i < r->ndesired; i++) {
    const struct mgop_desired *d = &r->desired[i];
    const struct mgop_fp *f;
    if (d->kind != K_CERT) continue;
    f = mgop_fp_find(mgop_fp_key("Certificate", r->ns, d->name));
    if (f && f->ready) continue;
    if (!why[0])
      snprintf(why, why_cap, "Certificate %.130s not issued yet by ClusterIssuer %.80s (kubectl describe it)",
               d->name, r->tls.issuer);
    return 0;
  }
  return 1;
}
/* A workload that is not ready because the scheduler refuses its pods: the
 * reason goes onto msg, and the first of the turn into why (the cluster's). */
static void mgop_status_why(const char *kind, const char *ns, const char *name, int ready, char *msg, size_t cap,
                            char *why, size_t why_cap) {
  char w[320];
  size_t n = strlen(msg);
  if (ready || !mgop_unsched_why(kind, ns, name, w, sizeof(w))) return;
  snprintf(msg + n, cap - n, "; %s", w);
  if (!why[0]) snprintf(why, why_cap, "%s", w);
}

/* A Cell's TopologyRegistered: its record in the global topology. */
static void mgop_topo_cell_cond(struct mgop_rctx *r, const char *cell, struct mgop_xcond *xc, char *buf, size_t cap) {
  *xc = (struct mgop_xcond){"TopologyRegistered", 0, "Pending", "written once the cluster's objects are applied", NULL, 0};
  if (!mgop_topo_enabled) *xc = (struct mgop_xcond){"TopologyRegistered", 0, "Disabled", "--topology-registration=false", NULL, 0};
  for (int t = 0; r->topo_state && t < r->ntopo_cells; t++) {
    if (strcmp(r->topo_cells[t].name, cell)) continue;
    if (r->topo_cell_state[t] > 0) {
      snprintf(buf, cap, "%.200s/cells/%.64s/Cell read back as written", r->topo_root, cell);
      *xc = (struct mgop_xcond){"TopologyRegistered", 1, "Registered", buf, NULL, 0};
    } else if (r->topo_cell_state[t] < 0) {
      *xc = (struct mgop_xcond){"TopologyRegistered", 0, "CellRecordConflict", r->topo_cell_msg[t], NULL, 0};
    } else {
      *xc = (struct mgop_xcond){"TopologyRegistered", 0, r->topo_reason, r->topo_msg, NULL, 0};
    }
  }
}

/* Status of every child from what the watches reported, then the root's. */
static void mgop_reconcile_status(struct mgop_rctx *r, int ok) {
  char topo_name[64], msg[600], why[320] = "";
  const char *parts[2] = {r->name, "global-topo"};
  struct mgop_topo_status ts = {0, 0, NULL, NULL};
  struct mgop_root_status rs;
  int topo_ready = 1, admin_ready, stalled = r->stalled_reason[0] != 0, root_ready, ready_cells = 0, ready_shards = 0;
  int cells = mgop_json_key(&r->root, r->spec, "cells");
  char name[80];
  int rd, ds;
  uint64_t owner = mgop_fp_key("MultigresCluster", r->ns, r->name); /* of its metric series */
  long long sched_wake = -1;         /* ms until a shard's schedule wants a turn */
  long long role_wake = -1;          /* ms until pooler roles are read again */
  int topo_down = 0;                 /* the topology failed a role read this turn */
  memset(&rs, 0, sizeof(rs));
  mgop_series_begin();
  mgop_status_open(); /* mgop_reconcile opened it for the turn's Event; a test may call this alone */
  mgop_name(topo_name, sizeof(topo_name), MGOP_LIMIT_STS, 0, parts, 2);
  {
    struct mgop_fp *topo_fp = mgop_fp_find(mgop_fp_key("TopoServer", r->ns, topo_name));
    if (topo_fp && topo_fp->uid[0]) {
      topo_ready = mgop_workload_ready(r, "StatefulSet", topo_name, &ts.ready, &ts.replicas);
      ts.client = topo_name;
      mgop_gauge_pair(owner, mgop_f_topo, "name", topo_name, NULL, NULL, r->ns, ts.ready, ts.replicas);
      snprintf(msg, sizeof(msg), "%d/%d etcd members ready", ts.ready, ts.replicas);
      mgop_status_why("StatefulSet", r->ns, topo_name, topo_ready, msg, sizeof(msg), why, sizeof(why));
      mgop_write_status(r, K_TOPO, topo_name, topo_fp, topo_ready, 0, topo_ready ? "AllMembersReady" : "MembersNotReady",
                        msg, topo_fp->seen_gen, mgop_phase(topo_ready, ts.ready), mgop_topo_status_extra, &ts);
    }
  }
  {
    const char *ap[] = {r->name, "multiadmin"};
    mgop_name(rs.admin_svc, sizeof(rs.admin_svc), MGOP_LIMIT_SERVICE, 0, ap, 2);
  }
  snprintf(name, sizeof(name), "%s-multiadmin", r->name);
  admin_ready = mgop_workload_ready(r, "Deployment", name, &rd, &ds);
  /* cells */
  for (int i = 0; mgop_json_is(&r->root, cells, JSMN_ARRAY) && i < r->root.tok[cells].size; i++) {
    char cell[64], cr[254], gw[254], gws[64];
    struct mgop_counts c;
    struct mgop_fp *f;
    int ready;
    if (mgop_json_path_str(&r->root, mgop_json_at(&r->root, cells, i), "name", cell, sizeof(cell))) continue;
    {
      const char *p2[] = {r->name, cell}, *p3[] = {r->name, cell, "multigateway"};
      mgop_name(cr, sizeof(cr), MGOP_LIMIT_DEFAULT, 1, p2, 2);
      mgop_name(gw, sizeof(gw), MGOP_LIMIT_DEFAULT, 1, p3, 3);
      mgop_name(gws, sizeof(gws), MGOP_LIMIT_SERVICE, 1, p3, 3);
    }
    ready = mgop_workload_ready(r, "Deployment", gw, &c.ready, &c.total);
    { /* a local topology server, when the turn built one, is part of the cell */
      char tname[64];
      const char *tparts[] = {cr, "topo"};
      struct mgop_fp *tf;
      mgop_name(tname, sizeof(tname), MGOP_LIMIT_STS, 1, tparts, 2);
      tf = mgop_fp_find(mgop_fp_key("TopoServer", r->ns, tname));
      for (int d = 0; d < r->ndesired; d++) {
        struct mgop_topo_status lts = {0, 0, tname, NULL};
        int lready;
        if (r->desired[d].kind != K_TOPO || strcmp(r->desired[d].name, tname)) continue;
        lready = mgop_workload_ready(r, "StatefulSet", tname, &lts.ready, &lts.replicas);
        mgop_gauge_pair(owner, mgop_f_topo, "name", tname, NULL, NULL, r->ns, lts.ready, lts.replicas);
        ready = ready && lready;
        if (tf && tf->uid[0]) {
          snprintf(msg, sizeof(msg), "%d/%d etcd members ready", lts.ready, lts.replicas);
          mgop_status_why("StatefulSet", r->ns, tname, lready, msg, sizeof(msg), why, sizeof(why));
          mgop_write_status(r, K_TOPO, tname, tf, lready, 0, lready ? "AllMembersReady" : "MembersNotReady", msg,
                            tf->seen_gen, mgop_phase(lready, lts.ready), mgop_topo_status_extra, &lts);
        }
        break;
      }
    }
    c.svc = gws;
    mgop_gauge_pair(owner, mgop_f_gateway, "cell", cr, NULL, NULL, r->ns, c.ready, c.total); /* Cell name: unique */
    ready_cells += ready;
    if (i < MGOP_CRD_CELLS_MAX) {
      snprintf(rs.cell_name[i], sizeof(rs.cell_name[i]), "%s", cell);
      rs.cell_ready[i] = ready;
      rs.cell_gw_ready[i] = c.ready;
    }
    f = mgop_fp_find(mgop_fp_key("Cell", r->ns, cr));
    if (f && f->uid[0]) {
      snprintf(msg, sizeof(msg), "%d/%d multigateway pods ready", c.ready, c.total);
      mgop_status_why("Deployment", r->ns, gw, ready, msg, sizeof(msg), why, sizeof(why));
      struct mgop_xcond xc;
      char cmsg[320];
      mgop_topo_cell_cond(r, cell, &xc, cmsg, sizeof(cmsg));
      mgop_write_status_x(r, K_CELL, cr, f, ready, 0, ready ? "GatewayReady" : "GatewayNotReady", msg, f->seen_gen,
                          mgop_phase(ready, c.ready), mgop_cell_status_extra, &c, &xc);
    }
  }
  /* shards: every pool StatefulSet and multiorch Deployment they own */
  for (int s = 0; s < r->nshard_names; s++) {
    struct mgop_fp *f = mgop_fp_find(mgop_fp_key("Shard", r->ns, r->shard_names[s]));
    struct mgop_counts c = {0, 0, NULL};
    int ready = 1, any = 0, npools = 0, pools_ready[MGOP_CRD_POOLS_MAX], pools_total[MGOP_CRD_POOLS_MAX];
    int upd = 0, stale = 0; /* pool pods at their StatefulSet's update revision; StatefulSets with stale ones */
    char pool_names[MGOP_CRD_POOLS_MAX][MGOP_CRD_POOL_NAME_MAX + 2];
    for (int i = 0; i < r->ndesired; i++) {
      struct mgop_desired *d = &r->desired[i];
      struct mgop_fp *w;
      if (d->kind != K_STS && d->kind != K_DEPLOY) continue;
      if (!strstr(d->json, r->shard_names[s])) continue; /* owned by this shard (owner name in its metadata) */
      w = mgop_fp_find(mgop_fp_key(mgop_kinds[d->kind].kind, r->ns, d->name));
      any = 1;
      if (d->kind == K_STS) {
        static const char pool_label[] = "\"multigres.com/pool\":\"";
        const char *pl = strstr(d->json, pool_label);
        char pool[MGOP_CRD_POOL_NAME_MAX + 2] = "";
        int p = 0;
        c.ready += w ? w->ready : 0;
        c.total += w ? w->desired : 0;
        upd += w && w->desired > w->stale ? w->desired - w->stale : 0;
        stale += w && w->stale > 0;
        if (pl) sscanf(pl + sizeof(pool_label) - 1, "%63[^\"]", pool);
        while (p < npools && strcmp(pool_names[p], pool)) p++; /* one StatefulSet per (pool, cell): sum the cells */
        if (p == npools && npools < MGOP_CRD_POOLS_MAX) {
          snprintf(pool_names[npools++], sizeof(pool_names[0]), "%s", pool);
          pools_ready[p] = pools_total[p] = 0;
        }
        if (p < npools) {
          pools_ready[p] += w ? w->ready : 0;
          pools_total[p] += w ? w->desired : 0;
        }
      }
      if (!w || !(w->flags & MGOP_FP_SETTLED) || w->desired <= 0 || w->ready < w->desired) ready = 0;
    }
    ready = ready && any && !r->roll_held[s]; /* a held scale-down is not the spec yet */
    ready_shards += ready;
    for (int p = 0; p < npools; p++) /* one series per pool: its StatefulSets (one per cell) summed */
      mgop_gauge_pair(owner, mgop_f_pool, "shard", r->shard_names[s], "pool", pool_names[p], r->ns, pools_ready[p],
                      pools_total[p]);
    {
      int d = 0;
      while (d < rs.ndb && strcmp(rs.db_name[d], r->shard_db[s])) d++;
      if (d == rs.ndb && d < 8) snprintf(rs.db_name[rs.ndb++], sizeof(rs.db_name[0]), "%s", r->shard_db[s]);
      if (d < 8) { rs.db_total[d]++; rs.db_ready[d] += ready; }
    }
    if (f && f->uid[0]) {
      snprintf(msg, sizeof(msg), "%d/%d pool pods ready%s", c.ready, c.total, ready ? "" : r->roll_held[s] == 1
               ? "; a scale-down waits for the primary to move (condition RollingUpdate)" : r->roll_held[s]
               ? "; a scale-down is under way, one drained pod at a time (condition RollingUpdate)"
               : "; multiorch or pools converging");
      for (int i = 0; !ready && i < r->ndesired; i++) { /* the first of its workloads the scheduler refuses */
        struct mgop_desired *d = &r->desired[i];
        size_t before = strlen(msg);
        if ((d->kind != K_STS && d->kind != K_DEPLOY) || !strstr(d->json, r->shard_names[s])) continue;
        mgop_status_why(mgop_kinds[d->kind].kind, r->ns, d->name, 0, msg, sizeof(msg), why, sizeof(why));
        if (strlen(msg) != before) break;
      }
      struct mgop_bh *h = r->render || !mgop_backup_check_ms ? NULL
                                                             : mgop_bh_slot(mgop_fp_key("Shard", r->ns, r->shard_names[s]));
      if (h) {
        long long want = mgop_backup_schedule(r, s, h, owner);
        if (want >= 0 && (sched_wake < 0 || want < sched_wake)) sched_wake = want;
        mgop_backup_health(r, s, h, owner, rd);
      }
      mgop_cond_backup = h;
      {
        long long due = mgop_shard_roles_of(r, s, &topo_down);
        if (due >= 0 && (role_wake < 0 || due < role_wake)) role_wake = due;
      }
      {
        char rmsg[700];
        struct mgop_xcond xc = {"RollingUpdate", stale || r->roll_held[s], r->roll_held[s] == 1 ? "ScaleDownHeld"
                                : r->roll_held[s] ? "ScalingDown" : stale ? "RollingUpdate" : "UpToDate", rmsg, NULL, 0};
        char l[MGOP_LABELS_MAX] = "";
        snprintf(rmsg, sizeof(rmsg), "%d/%d pods updated%s%.600s", upd, c.total, r->roll_note[s][0] ? "; " : "",
                 r->roll_note[s]);
        if (!(mgop_label(l, sizeof(l), "shard", r->shard_names[s]) | mgop_label(l, sizeof(l), "namespace", r->ns)))
          mgop_gauge_set(owner, mgop_f_rolling, l, xc.status);
        if (mgop_write_status_x(r, K_SHARD, r->shard_names[s], f, ready, 0, ready ? "AllPodsReady" : "NotAllPodsReady",
                                msg, f->seen_gen, mgop_phase(ready, c.ready), mgop_shard_status_extra, &c, &xc) >= 0)
          mgop_write_pod_roles(r, r->shard_names[s], f);
      }
      mgop_cond_backup = NULL;
    }
  }
  /* a schedule needs turns (its POST and status are built from the spec):
   * at the next run, and every check interval in case the clock jumped;
   * health checks come due in mgop_backup_tick, without a turn */
  if (sched_wake >= 0)
    mgop_enqueue(r->ns, r->name, sched_wake < mgop_backup_check_ms ? sched_wake + 100 : mgop_backup_check_ms);
  if (role_wake >= 0) mgop_enqueue(r->ns, r->name, role_wake + 100);
  for (int t = 0; t < r->ntg; t++) {
    struct mgop_fp *f = mgop_fp_find(mgop_fp_key("TableGroup", r->ns, r->tg_names[t]));
    struct mgop_counts c = {0, 0, NULL};
    for (int s = 0; s < r->nshard_names; s++) {
      if (strcmp(r->shard_tg[s], r->tg_names[t])) continue;
      c.total++;
      {
        struct mgop_fp *sf = mgop_fp_find(mgop_fp_key("Shard", r->ns, r->shard_names[s]));
        if (sf && sf->cond_ready == 1) c.ready++;
      }
    }
    if (f && f->uid[0]) {
      int ready = c.total > 0 && c.ready == c.total;
      snprintf(msg, sizeof(msg), "%d/%d shards ready", c.ready, c.total);
      mgop_write_status(r, K_TG, r->tg_names[t], f, ready, 0, ready ? "AllShardsReady" : "ShardsNotReady", msg,
                        f->seen_gen, mgop_phase(ready, c.ready), mgop_tg_status_extra, &c);
    }
  }
  rs.topo_ready = topo_ready;
  rs.topo_name = topo_name;
  rs.cells = r->ncells;
  rs.ready_cells = ready_cells;
  rs.shards = r->nshard_names;
  rs.ready_shards = ready_shards;
  rs.admin_ready = admin_ready;
  rs.r = r;
  root_ready = ok && !stalled && mgop_certs_issued(r, why, sizeof(why)) && topo_ready && admin_ready && r->ncells > 0 &&
               ready_cells == r->ncells &&
               r->nshard_names > 0 && ready_shards == r->nshard_names && (r->topo_state == 1 || !mgop_topo_enabled);
  r->root_ready = root_ready;
  if (stalled) snprintf(msg, sizeof(msg), "%.590s", r->stalled_msg);
  else if (!ok) snprintf(msg, sizeof(msg), "reconcile failed, retrying: %.400s", r->last_error);
  else if (r->topo_state < 0 && topo_ready && admin_ready && ready_cells == r->ncells && ready_shards == r->nshard_names)
    snprintf(msg, sizeof(msg), "topology records not registered: %.560s", r->topo_msg);
  else snprintf(msg, sizeof(msg), "topology %s, multiadmin %s, %d/%d cells ready, %d/%d shards ready%s%.320s",
                topo_ready ? "ready" : "not ready", admin_ready ? "ready" : "not ready", ready_cells, r->ncells,
                ready_shards, r->nshard_names, why[0] && !root_ready ? "; " : "", root_ready ? "" : why);
  {
    struct mgop_fp *root_fp = mgop_fp_upsert(mgop_fp_key("MultigresCluster", r->ns, r->name));
    const char *reason = stalled ? r->stalled_reason : !ok ? "ReconcileError" : root_ready ? "Converged"
                         : r->topo_state < 0 ? r->topo_reason : "Progressing";
    struct mgop_xcond xc = {"TopologyRegistered", r->topo_state == 1, r->topo_state ? r->topo_reason : "Pending",
                            r->topo_state ? r->topo_msg : "written once the cluster's objects are applied", NULL, 0};
    char imsg[400];
    struct mgop_xcond ic;
    if (!mgop_topo_enabled) xc = (struct mgop_xcond){"TopologyRegistered", 0, "Disabled", "--topology-registration=false", NULL, 0};
    mgop_img_condition(r, &ic, imsg, sizeof(imsg));
    xc.next = &ic;
    const char *phase = stalled ? "Degraded" : mgop_phase(root_ready, ready_cells + ready_shards);
    char l[MGOP_LABELS_MAX] = "";
    if (!(mgop_label(l, sizeof(l), "name", r->name) | mgop_label(l, sizeof(l), "namespace", r->ns) |
          mgop_label(l, sizeof(l), "phase", phase)))
      mgop_gauge_set(owner, mgop_f_cluster_info, l, 1);
    l[0] = 0;
    if (!(mgop_label(l, sizeof(l), "cluster", r->name) | mgop_label(l, sizeof(l), "namespace", r->ns))) {
      mgop_gauge_set(owner, mgop_f_cells, l, r->ncells);
      mgop_gauge_set(owner, mgop_f_shards, l, r->nshard_names);
    }
    int wrote = 0, failed;
    /* not Ready: beside the children's (queued); Ready: after them */
    if (!root_ready)
      wrote = mgop_write_status_x(r, K_CLUSTER, r->name, root_fp, root_ready, stalled, reason, msg, r->generation,
                                  phase, mgop_root_status_extra, &rs, &xc);
    failed = mgop_status_flush_for(r, mgop_fp_key("MultigresCluster", r->ns, r->name));
    mgop_server.status_batch.open = 0;
    if (root_ready)
      wrote = mgop_write_status_x(r, K_CLUSTER, r->name, root_fp, root_ready, stalled, reason, msg, r->generation,
                                  phase, mgop_root_status_extra, &rs, &xc);
    else if (failed)
      wrote = failed;
    /* an Event when the story changes: stalled, failing, or converged */
    if (wrote == 1 && (stalled || !ok)) mgop_event(r, K_CLUSTER, r->name, r->uid, "Warning", reason, "Reconcile", msg);
    else if (wrote == 1 && root_ready) mgop_event(r, K_CLUSTER, r->name, r->uid, "Normal", "Converged", "Reconcile", msg);
  }
  mgop_series_sweep(owner);
}

static void mgop_note_uses(const char *ns, const char *name, const struct mgop_rctx *r, int complete);
static void mgop_enqueue(const char *ns, const char *name, long long delay_ms);

#define MGOP_PROGRESS_RECHECK_MS 30000      /* first look at a converging cluster no event woke */
#define MGOP_PROGRESS_RECHECK_MAX_MS 300000 /* the interval doubles up to this */
static struct mgop_root_ref *mgop_root_find(const char *ns, const char *name);

/* The deletion-policy annotation and our finalizer, as the cluster shows them. */
static void mgop_deletion_policy_of(struct mgop_rctx *r) {
  int ann = mgop_json_path(&r->root, 0, "metadata.annotations"), fins = mgop_json_path(&r->root, 0, "metadata.finalizers");
  char v[16];
  r->orphan_policy = mgop_json_str(&r->root, mgop_json_key(&r->root, ann, MGOP_DELETION_POLICY_ANNOTATION), v,
                                   sizeof(v)) == MGOP_OK && !strcmp(v, "Orphan");
  r->has_orphan_fin = 0;
  for (int i = 0; mgop_json_is(&r->root, fins, JSMN_ARRAY) && i < r->root.tok[fins].size; i++) {
    char f[64];
    if (mgop_json_str(&r->root, mgop_json_at(&r->root, fins, i), f, sizeof(f)) == MGOP_OK &&
        !strcmp(f, MGOP_ORPHAN_FINALIZER))
      r->has_orphan_fin = 1;
  }
}

/* One turn for one root: GET, resolve, apply, status. */
/* Writes the default image set the children are about to use into the
 * applied-images annotation, before they use it, so a lazy cluster stays on
 * it even if its status is lost (a restore, kubectl replace). A merge patch
 * with the resourceVersion read this turn: a concurrent edit makes it fail
 * (409) and the turn retries. */
static int mgop_images_record(struct mgop_rctx *r) {
  struct mgop_img_state *m = &r->img;
  char rec[MGOP_IMG_RECORD_BUF], body[2 * MGOP_IMG_RECORD_BUF + 512], rv[64] = "", path[512], note[900];
  struct mgop_buf rb, bb;
  struct mgop_jw w;
  int status, rc, n = 0;
  if (!m->record_stale || r->render || !mgop_may_write()) return MGOP_OK;
  mgop_buf_init(&rb, rec, sizeof(rec));
  mgop_jw_init(&w, &rb);
  mgop_jw_obj(&w);
  for (int i = 0; i < MGOP_IMG_COUNT; i++) { mgop_jw_key(&w, mgop_img_comps[i].key); mgop_jw_str(&w, m->applied.img[i]); }
  mgop_jw_obj_end(&w);
  mgop_json_path_str(&r->root, 0, "metadata.resourceVersion", rv, sizeof(rv));
  mgop_buf_init(&bb, body, sizeof(body));
  mgop_jw_init(&w, &bb);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "metadata"); mgop_jw_obj(&w);
  mgop_jw_key(&w, "annotations"); mgop_jw_obj(&w);
  mgop_jw_key(&w, MGOP_APPLIED_IMAGES_ANNOTATION); mgop_jw_strn(&w, rec, rb.len);
  mgop_jw_obj_end(&w);
  mgop_jw_key(&w, "resourceVersion"); mgop_jw_str(&w, rv);
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  if (rb.overflow || bb.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "the applied-images record does not fit");
  mgop_item_path(K_CLUSTER, r->ns, r->name, path, sizeof(path));
  if ((rc = mgop_kube_merge_patch(mgop_api_ptr, path, MGOP_MANAGER, body, bb.len, rv, &status))) return rc;
  mgop_note_own_write(mgop_fp_find(mgop_fp_key("MultigresCluster", r->ns, r->name)), rv, 0);
  if (m->record_invalid)
    mgop_event(r, K_CLUSTER, r->name, r->uid, "Warning", "ImagesRecordInvalid", "ResolveImages",
               "the " MGOP_APPLIED_IMAGES_ANNOTATION " annotation was not a complete image set and was rewritten");
  if (m->recorded && strcmp(m->record_rev, m->applied_rev)) {
    const char *sep = ": ";
    n = snprintf(note, sizeof(note), "switching to default image set %s (was %s)", m->applied_rev, m->record_rev);
    for (int i = 0; i < MGOP_IMG_COUNT && n > 0 && (size_t)n < sizeof(note); i++)
      if (strcmp(m->record.img[i], m->applied.img[i])) {
        n += snprintf(note + n, sizeof(note) - (size_t)n, "%s%s: %.200s -> %.200s", sep, mgop_img_comps[i].key,
                      m->record.img[i], m->applied.img[i]);
        sep = ", ";
      }
    mgop_event(r, K_CLUSTER, r->name, r->uid, "Normal", "ImagesUpdated", "ResolveImages", note);
    MGOP_LOG(MGOP_INFO, ("MultigresCluster %s/%s: %s", r->ns, r->name, note));
  }
  return MGOP_OK;
}

/* Traces across the admission -> reconcile boundary. The webhook (serving
 * thread) records which trace admitted a cluster's uid at a generation;
 * the reconcile of that generation continues it, for every turn the
 * change takes to converge, up to MGOP_TRACE_FRESH_S after admission. The
 * reference operator carries the same context in annotations a mutating
 * webhook writes; we write nothing into the object (GitOps tools would see
 * a changed annotation on every dry run), and read those annotations when
 * something else set them. A change admitted by another replica, or older
 * than the bound, starts its own trace (with a link when the annotation
 * was stale). */
#define MGOP_TRACE_LINKS 256
#define MGOP_TRACE_FRESH_S 600
#define MGOP_TRACEPARENT_ANNOTATION "multigres.com/traceparent"
#define MGOP_TRACEPARENT_TS_ANNOTATION "multigres.com/traceparent-ts"
static struct {
  pthread_mutex_t mu;
  struct mgop_trace_link {
    char uid[40];
    long long generation, at_s;
    struct mgop_trace_ctx ctx;
  } e[MGOP_TRACE_LINKS];
} mgop_trace_links = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Serving thread: this admission's trace for (uid, generation); the
 * entry of the same uid, else the oldest, makes room. */
static void mgop_trace_link_record(const char *uid, long long generation, const struct mgop_trace_ctx *ctx) {
  struct mgop_trace_link *slot = &mgop_trace_links.e[0];
  if (!uid[0] || strlen(uid) >= sizeof(slot->uid)) return;
  pthread_mutex_lock(&mgop_trace_links.mu);
  for (int i = 0; i < MGOP_TRACE_LINKS; i++) {
    struct mgop_trace_link *e = &mgop_trace_links.e[i];
    if (!strcmp(e->uid, uid)) { slot = e; break; }
    if (e->at_s < slot->at_s) slot = e;
  }
  snprintf(slot->uid, sizeof(slot->uid), "%s", uid);
  slot->generation = generation;
  slot->at_s = (long long)time(NULL);
  slot->ctx = *ctx;
  pthread_mutex_unlock(&mgop_trace_links.mu);
}

static int mgop_trace_link_find(const char *uid, long long generation, struct mgop_trace_ctx *out) {
  int found = 0;
  long long now_s = (long long)time(NULL);
  pthread_mutex_lock(&mgop_trace_links.mu);
  for (int i = 0; i < MGOP_TRACE_LINKS && !found; i++) {
    const struct mgop_trace_link *e = &mgop_trace_links.e[i];
    if (e->uid[0] && !strcmp(e->uid, uid) && e->generation == generation && now_s - e->at_s <= MGOP_TRACE_FRESH_S)
      *out = e->ctx, found = 1;
  }
  pthread_mutex_unlock(&mgop_trace_links.mu);
  return found;
}

/* The reconcile span of a cluster joins the trace that caused it: our own
 * admission of this generation, else a fresh multigres.com/traceparent
 * annotation; a stale one becomes a link of a new trace. */
static void mgop_trace_follow(struct mgop_rctx *r, struct mgop_span *span) {
  struct mgop_trace_ctx parent;
  char tp[80] = "", ts[24] = "";
  int ann = mgop_json_path(&r->root, 0, "metadata.annotations");
  long long at = 0;
  if (!mgop_trace_on()) return;
  if (mgop_trace_link_find(r->uid, r->generation, &parent)) {
    mgop_span_continue(span, &parent, NULL);
    return;
  }
  if (mgop_json_str(&r->root, mgop_json_key(&r->root, ann, MGOP_TRACEPARENT_ANNOTATION), tp, sizeof(tp)) ||
      mgop_traceparent_parse(tp, strlen(tp), &parent))
    return;
  mgop_json_str(&r->root, mgop_json_key(&r->root, ann, MGOP_TRACEPARENT_TS_ANNOTATION), ts, sizeof(ts));
  at = strtoll(ts, NULL, 10);
  if (at > 0 && (long long)time(NULL) - at <= MGOP_TRACE_FRESH_S) mgop_span_continue(span, &parent, NULL);
  else mgop_span_continue(span, NULL, &parent);
}

/* The safety net for a converging cluster (not Ready, not Stalled): a turn
 * MGOP_PROGRESS_RECHECK_MS after its last one even if no watch event wakes
 * it, for what no watch reports. Each time the net itself starts the turn,
 * the next wait doubles, up to MGOP_PROGRESS_RECHECK_MAX_MS; a turn an event
 * started before then keeps the net's time as it was (the item the event
 * took is queued again for it). A cluster waiting many minutes for its Pods
 * to be scheduled then costs a few GETs, not one every 30 s after each burst
 * of Pod events (the 1,000-cluster run's audit: 18-30 turns for half the
 * clusters, most of them this net). A Ready or Stalled cluster, or one
 * retrying an error, has no net; the next converging phase starts at 30 s.
 * Returns the delay to queue, or -1 for none. */
static long long mgop_recheck_delay(struct mgop_root_ref *root, long long turn_started, int converging) {
  long long delay = MGOP_PROGRESS_RECHECK_MS;
  if (!root) return converging ? delay : -1;
  if (!converging) {
    root->recheck_ms = root->recheck_due = 0;
    return -1;
  }
  if (root->recheck_due && turn_started < root->recheck_due) return root->recheck_due - turn_started; /* an event's turn */
  if (root->recheck_due) /* the net started this turn (recheck_ms is set with it) */
    delay = root->recheck_ms * 2 > MGOP_PROGRESS_RECHECK_MAX_MS ? MGOP_PROGRESS_RECHECK_MAX_MS : root->recheck_ms * 2;
  root->recheck_ms = delay;
  root->recheck_due = turn_started + delay;
  return delay;
}

/* The loop's turn (mgop_reconcile), and the early turn's render before it:
 * one context, so the start touches no second one's pages */
static struct mgop_rctx mgop_loop_rctx;

/* The cluster a turn acts on, in root_body: the copy the early turn kept
 * when it is this cluster's (read a few ms ago; a newer version comes as an
 * event), else a GET. The copy serves one turn. */
static int mgop_turn_root(const char *ns, const char *name, struct mgop_buf *b) {
  char path[512];
  int status, kept = mgop_server.root_early && mgop_server.root_early_key == mgop_fp_key("MultigresCluster", ns, name);
  size_t len = mgop_server.root_early;
  mgop_server.root_early = 0;
  if (kept) { /* whole: mgop_buf_init would write a NUL over its first byte (up to 06415e4 it did) */
    *b = (struct mgop_buf){.p = mgop_server.root_body, .len = len, .cap = sizeof(mgop_server.root_body)};
    return MGOP_OK;
  }
  mgop_buf_init(b, mgop_server.root_body, sizeof(mgop_server.root_body));
  mgop_item_path(K_CLUSTER, ns, name, path, sizeof(path));
  return mgop_kube_get(mgop_api_ptr, path, b, &status);
}

static int mgop_reconcile(const char *ns, const char *name, struct mgop_span *span) {
  struct mgop_rctx *r = &mgop_loop_rctx;
  struct mgop_buf b;
  int rc;
  long long started = mgop_now_ms(), recheck;
  mgop_rctx_clear(r);
  mgop_arena_reset(&mgop_server.arena);
  r->arena = &mgop_server.arena;
  r->ns = ns;
  r->name = name;
  rc = mgop_turn_root(ns, name, &b);
  if (rc == MGOP_ERR_NOTFOUND) return MGOP_OK; /* deleted: garbage collection removes the children */
  if (rc) return rc;
  if ((rc = mgop_parse_arena(r->arena, b.p, b.len, &r->root))) return rc;
  mgop_json_path_str(&r->root, 0, "metadata.uid", r->uid, sizeof(r->uid));
  mgop_deletion_policy_of(r);
  if (mgop_json_path(&r->root, 0, "metadata.deletionTimestamp") >= 0) return mgop_cluster_deleting(r);
  if (r->orphan_policy != r->has_orphan_fin && (rc = mgop_orphan_finalizer(r, r->orphan_policy))) return rc;
  r->adopting = mgop_has_orphans(r);
  mgop_json_i64(&r->root, mgop_json_path(&r->root, 0, "metadata.generation"), &r->generation);
  mgop_trace_follow(r, span);
  r->spec = mgop_json_key(&r->root, 0, "spec");
  {
    struct mgop_fp *root_fp = mgop_fp_upsert(mgop_fp_key("MultigresCluster", ns, name));
    char rv[32];
    mgop_adopt_status(root_fp, &r->root, 0);
    /* this turn acts on this version: its watch event, when it comes after
     * (a start's list after the early turn), brings nothing new */
    if (root_fp && mgop_json_path_str(&r->root, 0, "metadata.resourceVersion", rv, sizeof(rv)) == MGOP_OK)
      root_fp->seen_rv = mgop_uid_hash(rv);
  }
  mgop_images_resolve(r);
  if (!mgop_root_find(ns, name)) { /* the cluster table was full when it appeared */
    mgop_stall(r, "LimitReached", "this operator already tracks %d MultigresClusters, the most it can; this one is "
               "not reconciled: delete unused clusters, or run another operator with --namespace for some namespaces "
               "(limit clusters)", MGOP_WORK_SLOTS);
    rc = MGOP_ERR_CONFIG;
  } else if ((rc = mgop_images_record(r)) == MGOP_OK) {
    rc = mgop_reconcile_tree(r);
  }
  if (rc && !r->last_error[0]) snprintf(r->last_error, sizeof(r->last_error), "%s", mgop_errmsg());
  for (int i = 0; i < r->ntrefs; i++)
    if (r->trefs[i].found && r->trefs[i].terminating)
      mgop_stall(r, "TemplateDeleting", "%s \"%s\" is being deleted, but this cluster still resolves it; the "
                 "operator keeps its settings and holds the deletion (finalizer %s) until no cluster uses it: name "
                 "another template or set the values inline, and the deletion completes",
                 mgop_kinds[r->trefs[i].kind].kind, r->trefs[i].name, MGOP_TEMPLATE_FINALIZER);
  /* only a turn that built the whole tree knows what is no longer wanted */
  if (rc == MGOP_OK && !r->stalled_reason[0]) {
    rc = mgop_prune(r);
    if (rc == MGOP_OK && r->adopting) rc = mgop_reclaim_finish(r);
    if (rc && !r->last_error[0]) snprintf(r->last_error, sizeof(r->last_error), "%s", mgop_errmsg());
  }
  /* Multigres's own records, once the objects are applied: an unreachable
   * topology holds Ready (and retries on its own backoff), not the turn */
  if (rc == MGOP_OK && !r->stalled_reason[0] && mgop_may_write() && mgop_topo_enabled) mgop_topo_sync(r);
  if (rc == MGOP_OK && !r->stalled_reason[0] && mgop_may_write()) mgop_defrag_cluster(r);
  /* pool pods whose template changed, one per shard at a time */
  if (rc == MGOP_OK && !r->stalled_reason[0] && mgop_may_write()) mgop_roll(r);
  mgop_note_uses(ns, name, r, rc == MGOP_OK);
  mgop_status_open(); /* from here the turn's Event and status writes go out together */
  if (r->applied) { /* what changed in the cluster, in one Event */
    char note[1000];
    snprintf(note, sizeof(note), "applied %d object%s: %.900s%s", r->applied, r->applied == 1 ? "" : "s", r->applied_note,
             r->applied_note_len >= sizeof(r->applied_note) - 80 ? ", ..." : "");
    mgop_event(r, K_CLUSTER, name, r->uid, "Normal", "Applied", "Apply", note);
  }
  mgop_reconcile_status(r, rc == MGOP_OK);
  {
    char f[256];
    snprintf(f, sizeof(f), "\"namespace\":\"%s\",\"name\":\"%s\",\"applied\":%d,\"unchanged\":%d,\"failed\":%d%s",
             ns, name, r->applied, r->skipped, r->failed, r->stalled_reason[0] ? ",\"stalled\":true" : "");
    mgop_log_fields(r->applied || r->failed ? MGOP_INFO : MGOP_DEBUG, "reconcile", "reconciled", f);
  }
  mgop_span_int(span, "multigres.generation", r->generation);
  mgop_span_int(span, "multigres.objects.applied", r->applied);
  mgop_span_int(span, "multigres.objects.unchanged", r->skipped);
  mgop_span_int(span, "multigres.objects.failed", r->failed);
  if (r->stalled_reason[0]) {
    mgop_span_str(span, "multigres.stalled", r->stalled_reason);
    mgop_span_error(span, "Stalled (%s): %s", r->stalled_reason, r->stalled_msg);
  }
  /* a Stalled cluster waits for a change; other errors retry with backoff;
   * one still converging looks again later even if no watch event wakes it
   * (mgop_recheck_delay; a converged cluster costs nothing while idle) */
  recheck = mgop_recheck_delay(mgop_root_find(ns, name), started, !rc && !r->stalled_reason[0] && !r->root_ready);
  if (recheck >= 0) mgop_enqueue(ns, name, recheck);
  return r->stalled_reason[0] ? MGOP_OK : rc;
}

/* ======================================================================
 * 9. Events
 * ==================================================================== */

static struct mgop_template_ref *mgop_template_find(uint64_t key) {
  for (size_t i = 0; i < mgop_server.templates_span; i++)
    if (mgop_server.templates[i].key == key) return &mgop_server.templates[i];
  return NULL;
}

/* A free row for a new template (its key still 0), or NULL when all are used */
static struct mgop_template_ref *mgop_template_free_row(void) {
  struct mgop_template_ref *t = mgop_template_find(0);
  if (!t && mgop_server.templates_span < MGOP_TEMPLATE_SLOTS) t = &mgop_server.templates[mgop_server.templates_span++];
  return t;
}

static struct mgop_root_ref *mgop_root_find(const char *ns, const char *name) {
  for (size_t i = 0; i < mgop_server.roots_span; i++)
    if (mgop_server.roots[i].used && !strcmp(mgop_server.roots[i].ns, ns) && !strcmp(mgop_server.roots[i].name, name)) return &mgop_server.roots[i];
  return NULL;
}

static int mgop_root_uses(const struct mgop_root_ref *r, uint64_t key) {
  for (int u = 0; u < r->nuses; u++)
    if (r->uses[u] == key) return 1;
  return 0;
}

/* Queues the consumers/finalizer upkeep of one template. */
static void mgop_template_enqueue(uint64_t key, long long delay_ms) {
  struct mgop_template_ref *t = mgop_template_find(key);
  char id[24];
  if (!t) return; /* never seen: nothing to keep up */
  snprintf(id, sizeof(id), "%016llx", (unsigned long long)key);
  if (mgop_work_add(mgop_kinds[t->kind].kind, t->ns, id, mgop_now_ms() + delay_ms))
    MGOP_LOG(MGOP_ERROR, ("cannot queue %s %s/%s: %s", mgop_kinds[t->kind].kind, t->ns, t->name, mgop_errmsg()));
}

/* After a turn: what the cluster uses now. A turn that stopped early saw
 * only part of its templates, so it adds to the record and drops nothing. */
static void mgop_note_uses(const char *ns, const char *name, const struct mgop_rctx *r, int complete) {
  struct mgop_root_ref *root = mgop_root_find(ns, name);
  uint64_t now[MGOP_TREFS_MAX];
  int n = 0;
  if (!root) return;
  for (int i = 0; i < r->ntrefs; i++) now[n++] = mgop_fp_key(mgop_kinds[r->trefs[i].kind].kind, ns, r->trefs[i].name);
  for (int u = 0; u < root->nuses; u++) {
    int still = 0;
    for (int i = 0; i < n; i++) still |= now[i] == root->uses[u];
    if (!still && complete) mgop_template_enqueue(root->uses[u], 0); /* may have lost a consumer */
    if (!still && !complete && n < MGOP_TREFS_MAX) now[n++] = root->uses[u];
  }
  for (int i = 0; i < n; i++)
    if (!mgop_root_uses(root, now[i]) || !root->uses_known) mgop_template_enqueue(now[i], 0); /* gained one */
  memcpy(root->uses, now, sizeof(now[0]) * (size_t)n);
  root->nuses = n;
  root->uses_known = 1;
}

static void mgop_roots_set(const char *ns, const char *name, int present) {
  struct mgop_root_ref *free_slot = NULL;
  for (size_t i = 0; i < mgop_server.roots_span; i++) {
    struct mgop_root_ref *r = &mgop_server.roots[i];
    if (r->used && !strcmp(r->ns, ns) && !strcmp(r->name, name)) {
      if (!present) memset(r, 0, sizeof(*r));
      return;
    }
    if (!r->used && !free_slot) free_slot = r;
  }
  if (present && !free_slot && mgop_server.roots_span < MGOP_WORK_SLOTS)
    free_slot = &mgop_server.roots[mgop_server.roots_span++];
  if (present && !free_slot) { /* its turn stalls with the same message (mgop_reconcile) */
    char what[400];
    snprintf(what, sizeof(what), "cluster table full (%d clusters); MultigresCluster %.63s/%.253s is not reconciled",
             MGOP_WORK_SLOTS, ns, name);
    mgop_limit_note(MGOP_L_CLUSTERS, what);
  }
  if (present && free_slot) {
    /* a cluster name is at most 25 characters (CEL), a namespace 63 */
    snprintf(free_slot->ns, sizeof(free_slot->ns), "%.63s", ns);
    snprintf(free_slot->name, sizeof(free_slot->name), "%.63s", name);
    free_slot->used = 1;
    free_slot->uses_known = 0;
    free_slot->nuses = 0;
    free_slot->recheck_ms = free_slot->recheck_due = 0;
  }
}

static void mgop_enqueue(const char *ns, const char *name, long long delay_ms) {
  pthread_mutex_lock(&mgop_shared.mu);
  mgop_stats.adds++;
  pthread_mutex_unlock(&mgop_shared.mu);
  if (mgop_work_add("MultigresCluster", ns, name, mgop_now_ms() + delay_ms)) {
    char what[900];
    snprintf(what, sizeof(what), "cannot queue MultigresCluster %s/%s: %s", ns, name, mgop_errmsg());
    mgop_limit_note(MGOP_L_CLUSTERS, what);
  }
}

/* Members an etcd StatefulSet was bootstrapped with: the entries of its
 * ETCD_INITIAL_CLUSTER (name=url,...); 0 for any other StatefulSet. */
static int32_t mgop_etcd_members_of(const struct mgop_json *j, int obj) {
  int env = mgop_json_path(j, obj, "spec.template.spec.containers[0].env");
  for (int i = 0; mgop_json_is(j, env, JSMN_ARRAY) && i < j->tok[env].size; i++) {
    int e = mgop_json_at(j, env, i);
    char name[32], value[2048];
    int32_t n = 1;
    if (mgop_json_path_str(j, e, "name", name, sizeof(name)) || strcmp(name, "ETCD_INITIAL_CLUSTER")) continue;
    if (mgop_json_path_str(j, e, "value", value, sizeof(value)) || !value[0]) return 0;
    for (const char *c = value; *c; c++) n += *c == ',';
    return n;
  }
  return 0;
}

/* Readiness of a workload as its controller reports it. */
static void mgop_observe_readiness(int kind, const struct mgop_json *j, int obj, struct mgop_fp *f) {
  long long gen = 0, observed = -1, replicas = 1, ready = 0, updated = 0, created = -1;
  int st = mgop_json_key(j, obj, "status");
  mgop_json_i64(j, mgop_json_path(j, obj, "metadata.generation"), &gen);
  mgop_json_i64(j, mgop_json_key(j, st, "observedGeneration"), &observed);
  mgop_json_i64(j, mgop_json_path(j, obj, "spec.replicas"), &replicas);
  mgop_json_i64(j, mgop_json_key(j, st, "readyReplicas"), &ready);
  mgop_json_i64(j, mgop_json_key(j, st, "updatedReplicas"), &updated);
  f->flags &= ~MGOP_FP_SETTLED;
  if (kind == K_STS || kind == K_DEPLOY) {
    f->desired = (int32_t)replicas;
    f->ready = (int32_t)ready;
    if (kind == K_STS) { /* which pods are stale (section 8, rolling) */
      created = 0;
      mgop_json_i64(j, mgop_json_key(j, st, "replicas"), &created);
      f->stale = created > updated ? (int32_t)(created - updated) : 0;
    }
    /* a scale-down is settled when the pods beyond spec.replicas are gone
     * (status.replicas counts them), not when the controller saw the spec */
    if (observed >= gen && updated >= replicas && created <= replicas) f->flags |= MGOP_FP_SETTLED;
    if (kind == K_STS) {
      char rev[128];
      f->observed_gen = observed;
      f->update_rev = mgop_json_path_str(j, st, "updateRevision", rev, sizeof(rev)) == MGOP_OK
                          ? mgop_fnv1a64(MGOP_FNV64_INIT, rev, strlen(rev)) : 0;
    }
  } else if (kind == K_CERT) { /* issued: cert-manager's Ready condition, and how often */
    int conds = mgop_json_key(j, st, "conditions");
    long long rev = 0;
    mgop_json_i64(j, mgop_json_key(j, st, "revision"), &rev);
    f->cert_revision = rev > 0 && rev < INT32_MAX ? (int32_t)rev : 0;
    f->desired = 1;
    f->ready = 0;
    for (int i = 0; mgop_json_is(j, conds, JSMN_ARRAY) && i < j->tok[conds].size; i++) {
      int c = mgop_json_at(j, conds, i);
      char type[16], status[8];
      if (!mgop_json_path_str(j, c, "type", type, sizeof(type)) && !strcmp(type, "Ready") &&
          !mgop_json_path_str(j, c, "status", status, sizeof(status)))
        f->ready = !strcmp(status, "True");
    }
    f->flags |= MGOP_FP_SETTLED;
  } else {
    f->desired = f->ready = 1;
    f->flags |= MGOP_FP_SETTLED;
  }
}

/* The clusters of ns that use the template key reconcile, and those not
 * reconciled yet since start (they may turn out to use it). */
static void mgop_wake_consumers(const char *ns, uint64_t key) {
  for (size_t i = 0; i < mgop_server.roots_span; i++) {
    struct mgop_root_ref *r = &mgop_server.roots[i];
    if (r->used && !strcmp(r->ns, ns) && (!r->uses_known || mgop_root_uses(r, key))) mgop_enqueue(ns, r->name, 100);
  }
}

/* Packs the text left by live rows to the front (write lock held). */
static void mgop_tcache_compact(void) {
  size_t at = 0;
  for (;;) { /* rows in order of their text: move the lowest not yet moved */
    struct mgop_tcache_row *next = NULL;
    for (int i = 0; i < MGOP_TEMPLATE_SLOTS; i++) {
      struct mgop_tcache_row *row = &mgop_tcache.rows[i];
      if (row->key && !row->toobig && row->off >= at && (!next || row->off < next->off)) next = row;
    }
    if (!next) break;
    memmove(mgop_tcache.text + at, mgop_tcache.text + next->off, next->len);
    next->off = (uint32_t)at;
    at += next->len;
    if (!next->len) at++; /* a zero-length row would be found again */
  }
  mgop_tcache.used = at;
}

static void mgop_tcache_drop(uint64_t key) {
  pthread_rwlock_wrlock(&mgop_tcache.lock);
  for (int i = 0; i < MGOP_TEMPLATE_SLOTS; i++)
    if (mgop_tcache.rows[i].key == key) memset(&mgop_tcache.rows[i], 0, sizeof(mgop_tcache.rows[i]));
  pthread_rwlock_unlock(&mgop_tcache.lock);
}

/* Keeps metadata and spec of a template (not status, not managedFields),
 * as admission will resolve it. Called by the loop on every event. */
static void mgop_tcache_put(uint64_t key, const struct mgop_json *j, int obj) {
  static char text[MGOP_WATCH_LINE_MAX];
  struct mgop_buf b;
  struct mgop_jw w;
  struct mgop_tcache_row *row = NULL, *free_row = NULL;
  int meta = mgop_json_key(j, obj, "metadata"), spec = mgop_json_key(j, obj, "spec");
  mgop_buf_init(&b, text, sizeof(text));
  mgop_jw_init(&w, &b);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "metadata"); mgop_jw_obj(&w);
  static const char *const keep[] = {"name", "namespace", "generation", "deletionTimestamp"};
  for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++) mgop_copy_key(&w, keep[i], j, mgop_json_key(j, meta, keep[i]));
  mgop_jw_obj_end(&w);
  mgop_copy_key(&w, "spec", j, spec);
  mgop_jw_obj_end(&w);
  pthread_rwlock_wrlock(&mgop_tcache.lock);
  for (int i = 0; i < MGOP_TEMPLATE_SLOTS; i++) {
    if (mgop_tcache.rows[i].key == key) row = &mgop_tcache.rows[i];
    else if (!mgop_tcache.rows[i].key && !free_row) free_row = &mgop_tcache.rows[i];
  }
  if (!row) row = free_row;
  if (!row) mgop_tcache.incomplete = 1; /* from now on a miss proves nothing */
  if (row) {
    row->key = key;
    row->len = 0;
    row->toobig = 1; /* until it has a place: admission says it cannot tell */
    if (!b.overflow && mgop_tcache.used + b.len > sizeof(mgop_tcache.text)) mgop_tcache_compact();
    if (!b.overflow && mgop_tcache.used + b.len <= sizeof(mgop_tcache.text)) {
      memcpy(mgop_tcache.text + mgop_tcache.used, b.p, b.len);
      row->off = (uint32_t)mgop_tcache.used;
      row->len = (uint32_t)b.len;
      row->toobig = 0;
      mgop_tcache.used += b.len;
    } else {
      __atomic_add_fetch(&mgop_tcache.refused, 1, __ATOMIC_RELAXED);
    }
  }
  pthread_rwlock_unlock(&mgop_tcache.lock);
  if (!row || row->toobig)
    MGOP_LOG(MGOP_ERROR, ("template cache full (%d templates, %d bytes): admission will not check clusters that use "
                          "this template; the reconciler still does", MGOP_TEMPLATE_SLOTS, MGOP_TCACHE_BYTES));
}

/* The event shows the object exactly as our own last write left it: the
 * upkeep that wrote it has nothing to check again (no GET per write). */
static int mgop_template_own_echo(const struct mgop_template_ref *t, const struct mgop_json *j, int obj) {
  char rv[24];
  if (mgop_json_path_str(j, obj, "metadata.resourceVersion", rv, sizeof(rv)) || !rv[0]) return 0;
  return !strcmp(rv, t->own_rv[0]) || !strcmp(rv, t->own_rv[1]);
}

/* A template changed: its consumers reconcile (and clusters not yet
 * reconciled, which may turn out to use it); its own upkeep is queued. Our
 * own status writes change neither generation nor deletion, so they wake
 * nobody. */
static void mgop_on_template_event(int kind, const char *type, const char *ns, const char *name,
                                   const struct mgop_json *j, int obj) {
  uint64_t key = mgop_fp_key(mgop_kinds[kind].kind, ns, name);
  struct mgop_template_ref *t = mgop_template_find(key);
  long long gen = 0;
  int terminating = mgop_json_path(j, obj, "metadata.deletionTimestamp") >= 0, changed;
  mgop_json_i64(j, mgop_json_path(j, obj, "metadata.generation"), &gen);
  if (!strcmp(type, "DELETED")) {
    if (t) memset(t, 0, sizeof(*t));
    mgop_tcache_drop(key);
    changed = 1;
  } else {
    mgop_tcache_put(key, j, obj);
    if (!t) t = mgop_template_free_row();
    if (!t) {
      char what[600];
      snprintf(what, sizeof(what), "template table full (%d); %s %s/%s is not tracked: its edits do not wake its "
               "clusters and its consumers are not kept", MGOP_TEMPLATE_SLOTS, mgop_kinds[kind].kind, ns, name);
      mgop_limit_note(MGOP_L_TEMPLATES, what);
      return;
    }
    changed = t->key != key || t->generation != gen || t->terminating != terminating;
    if (t->key != key) {
      memset(t, 0, sizeof(*t));
      t->key = key;
      t->kind = kind;
      snprintf(t->ns, sizeof(t->ns), "%s", ns);
      snprintf(t->name, sizeof(t->name), "%s", name);
    }
    t->generation = gen;
    t->terminating = terminating;
    t->epoch = mgop_server.list_epoch[kind];
    if (changed || !mgop_template_own_echo(t, j, obj))
      mgop_template_enqueue(key, 500); /* after its consumers had their turn */
  }
  if (changed) mgop_wake_consumers(ns, key);
}


/* Keeps one template's bookkeeping true: status.consumers lists the clusters
 * that resolve it, and the finalizer holds its deletion while any does.
 * Writes only what differs from the live object. */
static int mgop_template_sync(const char *ns, const char *id) {
  uint64_t key = strtoull(id, NULL, 16);
  struct mgop_template_ref *t = mgop_template_find(key);
  const char *consumers[MGOP_WORK_SLOTS];
  int ncons = 0, all_known = 1, status, rc, has_fin = 0, terminating, same;
  char path[512], mem[8192], ltt[40] = "", live_reason[32] = "";
  long long gen = 0, live_gen = -1;
  struct mgop_buf b, body;
  struct mgop_json j;
  struct mgop_jw w;
  if (!t || strcmp(t->ns, ns)) return MGOP_OK; /* deleted since */
  if (!mgop_may_write()) return mgop_seterr(MGOP_ERR_STATUS, "not the leader: template upkeep waits");
  for (size_t i = 0; i < mgop_server.roots_span; i++) {
    struct mgop_root_ref *r = &mgop_server.roots[i];
    if (!r->used || strcmp(r->ns, ns)) continue;
    if (!r->uses_known) all_known = 0;
    if (mgop_root_uses(r, key)) consumers[ncons++] = r->name;
  }
  qsort(consumers, (size_t)ncons, sizeof(consumers[0]), mgop_cmp_str);
  mgop_arena_reset(&mgop_server.arena);
  mgop_server.root_early = 0; /* root_body is this template's now */
  mgop_buf_init(&b, mgop_server.root_body, sizeof(mgop_server.root_body));
  mgop_item_path(t->kind, ns, t->name, path, sizeof(path));
  rc = mgop_kube_get(mgop_api_ptr, path, &b, &status);
  if (rc == MGOP_ERR_NOTFOUND) return MGOP_OK;
  if (rc) return rc;
  if ((rc = mgop_parse_arena(&mgop_server.arena, b.p, b.len, &j))) return rc;
  {
    int fins = mgop_json_path(&j, 0, "metadata.finalizers");
    for (int i = 0; mgop_json_is(&j, fins, JSMN_ARRAY) && i < j.tok[fins].size; i++) {
      char f[64];
      if (mgop_json_str(&j, mgop_json_at(&j, fins, i), f, sizeof(f)) == MGOP_OK && !strcmp(f, MGOP_TEMPLATE_FINALIZER))
        has_fin = 1;
    }
  }
  terminating = mgop_json_path(&j, 0, "metadata.deletionTimestamp") >= 0;
  mgop_json_i64(&j, mgop_json_path(&j, 0, "metadata.generation"), &gen);

  /* the finalizer: present while in use; kept while some cluster of the
   * namespace has not had its first turn (its use is not known yet) */
  if ((ncons > 0 && !has_fin && !terminating) || (ncons == 0 && has_fin && all_known)) {
    struct mgop_applied res;
    mgop_buf_init(&body, mem, sizeof(mem));
    mgop_jw_init(&w, &body);
    mgop_jw_obj(&w);
    mgop_jw_key(&w, "apiVersion"); mgop_jw_str(&w, MGOP_API_VERSION);
    mgop_jw_key(&w, "kind"); mgop_jw_str(&w, mgop_kinds[t->kind].kind);
    mgop_jw_key(&w, "metadata"); mgop_jw_obj(&w);
    mgop_jw_key(&w, "name"); mgop_jw_str(&w, t->name);
    mgop_jw_key(&w, "namespace"); mgop_jw_str(&w, ns);
    if (ncons > 0) { /* applying without it drops the one we own */
      mgop_jw_key(&w, "finalizers"); mgop_jw_arr(&w); mgop_jw_str(&w, MGOP_TEMPLATE_FINALIZER); mgop_jw_arr_end(&w);
    }
    mgop_jw_obj_end(&w);
    mgop_jw_obj_end(&w);
    if (body.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "finalizer patch too large");
    if ((rc = mgop_kube_apply(mgop_api_ptr, path, body.p, body.len, &res, &status))) return rc;
    memcpy(t->own_rv[0], res.rv, sizeof(t->own_rv[0]));
    MGOP_LOG(MGOP_INFO, ("%s %s/%s: finalizer %s %s", mgop_kinds[t->kind].kind, ns, t->name, MGOP_TEMPLATE_FINALIZER,
                         ncons > 0 ? "added: clusters use it" : "removed: no cluster uses it"));
  } else if (ncons == 0 && has_fin && !all_known) {
    return mgop_seterr(MGOP_ERR_STATUS, "waiting for every cluster of %s to be reconciled once", ns); /* retried */
  }

  /* status: consumers, and Ready (a template is usable once accepted) */
  {
    int st = mgop_json_key(&j, 0, "status"), lc = mgop_json_key(&j, st, "consumers"), conds = mgop_json_key(&j, st, "conditions");
    mgop_json_i64(&j, mgop_json_key(&j, st, "observedGeneration"), &live_gen);
    same = live_gen == gen && mgop_json_is(&j, lc, JSMN_ARRAY) == (ncons > 0) &&
           (ncons == 0 || j.tok[lc].size == ncons);
    for (int i = 0; same && i < ncons; i++) {
      char n[64];
      same = mgop_json_str(&j, mgop_json_at(&j, lc, i), n, sizeof(n)) == MGOP_OK && !strcmp(n, consumers[i]);
    }
    for (int i = 0; mgop_json_is(&j, conds, JSMN_ARRAY) && i < j.tok[conds].size; i++) {
      int c = mgop_json_at(&j, conds, i);
      char type[16], cs[8];
      if (mgop_json_path_str(&j, c, "type", type, sizeof(type)) || strcmp(type, "Ready")) continue;
      if (mgop_json_path_str(&j, c, "status", cs, sizeof(cs)) == MGOP_OK && !strcmp(cs, "True"))
        mgop_json_path_str(&j, c, "lastTransitionTime", ltt, sizeof(ltt));
      mgop_json_path_str(&j, c, "reason", live_reason, sizeof(live_reason));
    }
    same = same && ltt[0] && !strcmp(live_reason, terminating ? "Deleting" : ncons ? "InUse" : "Unused");
    if (same) return MGOP_OK;
    if (!ltt[0]) {
      time_t now = time(NULL);
      struct tm tm;
      gmtime_r(&now, &tm);
      strftime(ltt, sizeof(ltt), "%Y-%m-%dT%H:%M:%SZ", &tm);
    }
    mgop_buf_init(&body, mem, sizeof(mem));
    mgop_jw_init(&w, &body);
    mgop_jw_obj(&w);
    mgop_jw_key(&w, "status"); mgop_jw_obj(&w);
    mgop_jw_key(&w, "observedGeneration"); mgop_jw_i64(&w, gen);
    mgop_jw_key(&w, "consumers");
    if (ncons) {
      mgop_jw_arr(&w);
      for (int i = 0; i < ncons; i++) mgop_jw_str(&w, consumers[i]);
      mgop_jw_arr_end(&w);
    } else {
      mgop_jw_raw(&w, "null", 4); /* merge patch: remove the field */
    }
    mgop_jw_key(&w, "conditions"); mgop_jw_arr(&w); mgop_jw_obj(&w);
    mgop_jw_key(&w, "type"); mgop_jw_str(&w, "Ready");
    mgop_jw_key(&w, "status"); mgop_jw_str(&w, "True");
    mgop_jw_key(&w, "observedGeneration"); mgop_jw_i64(&w, gen);
    mgop_jw_key(&w, "lastTransitionTime"); mgop_jw_str(&w, ltt);
    mgop_jw_key(&w, "reason"); mgop_jw_str(&w, terminating ? "Deleting" : ncons ? "InUse" : "Unused");
    {
      char msg[300];
      if (terminating && ncons)
        snprintf(msg, sizeof(msg), "deletion waits until no cluster uses it (%d do: %s%s)", ncons, consumers[0],
                 ncons > 1 ? ", ..." : "");
      else if (ncons) snprintf(msg, sizeof(msg), "used by %d cluster%s", ncons, ncons == 1 ? "" : "s");
      else snprintf(msg, sizeof(msg), "no cluster uses this template");
      mgop_jw_key(&w, "message"); mgop_jw_str(&w, msg);
    }
    mgop_jw_obj_end(&w); mgop_jw_arr_end(&w);
    mgop_jw_obj_end(&w);
    mgop_jw_obj_end(&w);
    if (body.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "template status too large");
    return mgop_kube_patch_status(mgop_api_ptr, path, body.p, body.len, t->own_rv[1], &status);
  }
}

/* A (re)list brackets what exists: anything of that kind the list did not
 * show was deleted while the watch was down, and no DELETED event will say
 * so. Rows carry the list epoch (mgop_server.list_epoch) in which they were last seen. */

/* A cluster is gone: its templates lose a consumer, its series and its
 * status row go. */
static void mgop_forget_root(const char *ns, const char *name) {
  struct mgop_root_ref *root = mgop_root_find(ns, name);
  uint64_t key = mgop_fp_key("MultigresCluster", ns, name);
  for (int u = 0; root && u < root->nuses; u++) mgop_template_enqueue(root->uses[u], 0);
  mgop_series_drop(key);
  mgop_fp_remove(key);
  if (root) memset(root, 0, sizeof(*root)); /* last: ns and name may point into it */
}

/* --- observed kinds: why pods do not schedule, which zones exist ---------
 * Managed Pods and all Nodes are watched, never written. A pod the
 * scheduler refused (PodScheduled=False) keeps one row naming its workload
 * and the scheduler's words; the row goes when the pod schedules or is
 * deleted, and each change wakes the pod's cluster, whose status messages
 * then name the reason (mgop_unsched_find). Nothing is polled: a converged
 * fleet costs no request. Nodes leave their zone and region labels, which
 * admission checks cells against (mgop_cell_zone_warnings). */

/* The scheduler's reason and message when it could not place the pod. */
static void mgop_pod_unschedulable(const struct mgop_json *j, int obj, char *out, size_t cap) {
  int conds = mgop_json_path(j, obj, "status.conditions");
  out[0] = 0;
  for (int i = 0; mgop_json_is(j, conds, JSMN_ARRAY) && i < j->tok[conds].size; i++) {
    int c = mgop_json_at(j, conds, i);
    char type[32], status[16], reason[64], msg[200];
    mgop_json_path_str(j, c, "type", type, sizeof(type));
    mgop_json_path_str(j, c, "status", status, sizeof(status));
    if (strcmp(type, "PodScheduled") || strcmp(status, "False")) continue;
    mgop_json_path_str(j, c, "reason", reason, sizeof(reason));
    mgop_json_path_str(j, c, "message", msg, sizeof(msg));
    snprintf(out, cap, "%.40s: %.190s", reason[0] ? reason : "NotScheduled", msg[0] ? msg : "no message");
    return;
  }
}

/* The fp key of the workload that controls the pod: a StatefulSet, or the
 * Deployment whose ReplicaSet (name-hash) does. 0 when neither. */
static uint64_t mgop_pod_workload(const struct mgop_json *j, int obj, const char *ns) {
  int refs = mgop_json_path(j, obj, "metadata.ownerReferences");
  for (int i = 0; mgop_json_is(j, refs, JSMN_ARRAY) && i < j->tok[refs].size; i++) {
    int ref = mgop_json_at(j, refs, i), ctl = 0;
    char kind[32], name[254], *dash;
    mgop_json_bool(j, mgop_json_key(j, ref, "controller"), &ctl);
    if (!ctl || mgop_json_path_str(j, ref, "kind", kind, sizeof(kind)) ||
        mgop_json_path_str(j, ref, "name", name, sizeof(name)))
      continue;
    if (!strcmp(kind, "StatefulSet")) return mgop_fp_key("StatefulSet", ns, name);
    if (!strcmp(kind, "ReplicaSet") && (dash = strrchr(name, '-'))) {
      *dash = 0;
      return mgop_fp_key("Deployment", ns, name);
    }
  }
  return 0;
}

static struct mgop_unsched *mgop_unsched_row(uint64_t pod, int create, const char *ns, const char *name) {
  struct mgop_unsched *free_row = NULL;
  for (int i = 0; i < mgop_server.unsched_span; i++) {
    if (mgop_server.unsched[i].pod == pod) return &mgop_server.unsched[i];
    if (!free_row && !mgop_server.unsched[i].pod) free_row = &mgop_server.unsched[i];
  }
  if (!create) return NULL;
  if (!free_row && mgop_server.unsched_span < MGOP_UNSCHED_SLOTS) free_row = &mgop_server.unsched[mgop_server.unsched_span++];
  if (!free_row) {
    char what[512];
    snprintf(what, sizeof(what), "more than %d unschedulable pods at once (MGOP_UNSCHED_SLOTS); Pod %.63s/%.253s is "
             "not remembered: its workload's status does not say why it waits", MGOP_UNSCHED_SLOTS, ns, name);
    mgop_limit_note(MGOP_L_UNSCHEDULABLE, what);
  }
  return free_row;
}

/* Why a workload's pods do not schedule, or NULL. */
static const struct mgop_unsched *mgop_unsched_find(const char *kind, const char *ns, const char *name) {
  uint64_t key = mgop_fp_key(kind, ns, name);
  for (int i = 0; i < mgop_server.unsched_span; i++)
    if (mgop_server.unsched[i].pod && mgop_server.unsched[i].workload == key) return &mgop_server.unsched[i];
  return NULL;
}

static int mgop_unsched_why(const char *kind, const char *ns, const char *name, char *out, size_t cap) {
  const struct mgop_unsched *u = mgop_unsched_find(kind, ns, name);
  if (!u) return 0;
  snprintf(out, cap, "pod %s cannot be scheduled: %s", u->pod_name, u->reason);
  return 1;
}

/* Returns 1 when what status would say about the pod changed. */
static int mgop_on_pod(const char *type, const char *ns, const char *name, const struct mgop_json *j, int obj) {
  uint64_t key = mgop_fp_key("Pod", ns, name), wl = 0;
  struct mgop_unsched *row;
  char reason[sizeof(row->reason)] = "";
  if (strcmp(type, "DELETED")) mgop_pod_unschedulable(j, obj, reason, sizeof(reason));
  if (reason[0]) wl = mgop_pod_workload(j, obj, ns);
  if (!wl) { /* scheduled, gone, or not ours to explain */
    if (!(row = mgop_unsched_row(key, 0, ns, name))) return 0;
    memset(row, 0, sizeof(*row));
    return 1;
  }
  if (!(row = mgop_unsched_row(key, 1, ns, name))) return 0;
  row->epoch = mgop_server.list_epoch[K_POD];
  if (row->pod == key && row->workload == wl && !strcmp(row->reason, reason)) return 0;
  row->pod = key;
  row->workload = wl;
  snprintf(row->pod_name, sizeof(row->pod_name), "%.63s", name);
  memcpy(row->reason, reason, sizeof(reason));
  return 1;
}

static void mgop_on_node_locked(const char *type, uint64_t key, const struct mgop_json *j, int labels);
static void mgop_on_node(const char *type, const char *name, const struct mgop_json *j, int obj) {
  pthread_rwlock_wrlock(&mgop_tcache.lock); /* admission reads the node table too */
  mgop_on_node_locked(type, mgop_fp_key("Node", "", name), j, mgop_json_path(j, obj, "metadata.labels"));
  pthread_rwlock_unlock(&mgop_tcache.lock);
}

static void mgop_on_node_locked(const char *type, uint64_t key, const struct mgop_json *j, int labels) {
  struct mgop_node_ref *row = NULL, *free_row = NULL;
  for (int i = 0; i < mgop_server.nodes_span && !row; i++) {
    if (mgop_server.nodes[i].key == key) row = &mgop_server.nodes[i];
    else if (!free_row && !mgop_server.nodes[i].key) free_row = &mgop_server.nodes[i];
  }
  if (!strcmp(type, "DELETED")) {
    if (row) memset(row, 0, sizeof(*row));
    return;
  }
  if (!row && !free_row && mgop_server.nodes_span < MGOP_NODE_SLOTS) free_row = &mgop_server.nodes[mgop_server.nodes_span++];
  if (!row && !(row = free_row)) {
    char what[200];
    snprintf(what, sizeof(what), "more than %d nodes (MGOP_NODE_SLOTS): admission no longer warns about cell zones "
             "or regions that match no node", MGOP_NODE_SLOTS);
    mgop_limit_note(MGOP_L_NODES, what);
    mgop_server.nodes_overflow = 1;
    return;
  }
  row->key = key;
  row->epoch = mgop_server.list_epoch[K_NODE];
  mgop_json_str(j, mgop_json_key(j, labels, MGOP_ZONE_LABEL), row->zone, sizeof(row->zone));
  mgop_json_str(j, mgop_json_key(j, labels, MGOP_REGION_LABEL), row->region, sizeof(row->region));
}

/* A relist of pods or nodes: rows it did not show are gone. */
static int mgop_observed_list_end(int kind) {
  int gone = 0;
  for (int i = 0; kind == K_POD && i < mgop_server.unsched_span; i++)
    if (mgop_server.unsched[i].pod && mgop_server.unsched[i].epoch != mgop_server.list_epoch[K_POD]) {
      memset(&mgop_server.unsched[i], 0, sizeof(mgop_server.unsched[i]));
      gone++;
    }
  if (kind == K_NODE) pthread_rwlock_wrlock(&mgop_tcache.lock);
  for (int i = 0; kind == K_NODE && i < mgop_server.nodes_span; i++)
    if (mgop_server.nodes[i].key && mgop_server.nodes[i].epoch != mgop_server.list_epoch[K_NODE]) {
      memset(&mgop_server.nodes[i], 0, sizeof(mgop_server.nodes[i]));
      gone++;
    }
  if (kind == K_NODE) {
    mgop_server.nodes_synced = 1;
    pthread_rwlock_unlock(&mgop_tcache.lock);
  }
  if (gone && kind == K_POD) /* their clusters are not known from a bare row */
    for (size_t r = 0; r < mgop_server.roots_span; r++)
      if (mgop_server.roots[r].used) mgop_enqueue(mgop_server.roots[r].ns, mgop_server.roots[r].name, 100);
  return gone;
}

static int mgop_zone_known(int region, const char *value) {
  for (int i = 0; i < mgop_server.nodes_span; i++)
    if (mgop_server.nodes[i].key && !strcmp(region ? mgop_server.nodes[i].region : mgop_server.nodes[i].zone, value)) return 1;
  return 0;
}

/* Admission: a cell whose zone or region no node carries cannot schedule a
 * pod. Reads only the table the Node watch keeps (the loop's; no request),
 * and says nothing before that watch has listed or once it overflowed.
 * Appends "; "-separated warnings to out. */
static void mgop_cell_zone_warnings_locked(const struct mgop_json *j, int spec, char *out, size_t cap);
static void mgop_cell_zone_warnings(const struct mgop_json *j, int spec, char *out, size_t cap) {
  pthread_rwlock_rdlock(&mgop_tcache.lock); /* the loop writes the node table */
  mgop_cell_zone_warnings_locked(j, spec, out, cap);
  pthread_rwlock_unlock(&mgop_tcache.lock);
}

static void mgop_cell_zone_warnings_locked(const struct mgop_json *j, int spec, char *out, size_t cap) {
  int cells = mgop_json_key(j, spec, "cells");
  if (!mgop_server.nodes_synced || mgop_server.nodes_overflow) return;
  for (int i = 0; mgop_json_is(j, cells, JSMN_ARRAY) && i < j->tok[cells].size; i++) {
    int cell = mgop_json_at(j, cells, i);
    for (int k = 0; k < 2; k++) {
      const char *field = k ? "region" : "zone", *label = k ? MGOP_REGION_LABEL : MGOP_ZONE_LABEL;
      char v[64];
      size_t n = strlen(out);
      if (mgop_json_path_str(j, cell, field, v, sizeof(v)) || !v[0]) continue;
      if (!mgop_zone_known(k, v))
        snprintf(out + n, cap - n, "%sspec.cells[%d].%s \"%s\" matches no node's %s label: its pods cannot be "
                 "scheduled", n ? "; " : "", i, field, v, label);
      break; /* the zone, when set, is the nodeSelector; the region only otherwise */
    }
  }
}

/* An owned object is gone: its row, and what side tables keep of it (a
 * StatefulSet's facts for admission, a Shard's backup-health slot). */
static void mgop_forget_object(int kind, uint64_t key) {
  if (kind == K_STS) mgop_sts_fact_set(key, 1, "", 0, "");
  if (kind == K_SHARD) mgop_bh_forget(key);
  mgop_fp_remove(key);
}

static void mgop_on_list_end(int kind) {
  int gone = 0;
  const struct mgop_kind *k = &mgop_kinds[kind];
  if (k->role == MGOP_ROLE_OBSERVED) {
    gone = mgop_observed_list_end(kind);
  } else if (k->role == MGOP_ROLE_ROOT) {
    for (size_t i = 0; i < mgop_server.roots_span; i++) {
      struct mgop_root_ref *r = &mgop_server.roots[i];
      if (!r->used || r->epoch == mgop_server.list_epoch[kind]) continue;
      mgop_forget_root(r->ns, r->name);
      gone++;
    }
  } else if (k->role == MGOP_ROLE_TEMPLATE) {
    for (size_t i = 0; i < mgop_server.templates_span; i++) {
      struct mgop_template_ref *t = &mgop_server.templates[i];
      if (!t->key || t->kind != kind || t->epoch == mgop_server.list_epoch[kind]) continue;
      mgop_wake_consumers(t->ns, t->key); /* it is gone */
      mgop_tcache_drop(t->key);
      memset(t, 0, sizeof(*t));
      gone++;
    }
  } else {
    for (size_t i = 0; i < mgop_fp_span(); i++) {
      struct mgop_fp *f = mgop_fp_at(i);
      if (!f || f->kind != kind + 1 || f->epoch == mgop_server.list_epoch[kind]) continue;
      mgop_forget_object(kind, f->key);
      gone++;
    }
    if (gone) /* the owners are not known from a bare row: every cluster checks its tree */
      for (size_t r = 0; r < mgop_server.roots_span; r++)
        if (mgop_server.roots[r].used) mgop_enqueue(mgop_server.roots[r].ns, mgop_server.roots[r].name, 100);
  }
  if (gone) MGOP_LOG(MGOP_INFO, ("relist of %s: %d object%s deleted while the watch was down", k->kind, gone,
                                 gone == 1 ? "" : "s"));
}

/* Whose the object is, for pruning: the cluster of its labels (managed by
 * us), and its controller ownerReference. */
static void mgop_note_owner(struct mgop_fp *f, const struct mgop_json *j, int obj, const char *ns) {
  int labels = mgop_json_path(j, obj, "metadata.labels"), refs = mgop_json_path(j, obj, "metadata.ownerReferences");
  char cluster[64], by[64];
  f->cluster = f->owner_key = f->owner_uid = 0;
  if (mgop_json_str(j, mgop_json_key(j, labels, "app.kubernetes.io/managed-by"), by, sizeof(by)) || strcmp(by, MGOP_MANAGER) ||
      mgop_json_str(j, mgop_json_key(j, labels, "multigres.com/cluster"), cluster, sizeof(cluster)) || !cluster[0])
    return;
  f->cluster = mgop_cluster_hash(ns, cluster);
  for (int i = 0; mgop_json_is(j, refs, JSMN_ARRAY) && i < j->tok[refs].size; i++) {
    int ref = mgop_json_at(j, refs, i), controller = 0;
    char kind[64], name[MGOP_NAME_MAX + 1], uid[40];
    mgop_json_bool(j, mgop_json_key(j, ref, "controller"), &controller);
    if (!controller || mgop_json_path_str(j, ref, "kind", kind, sizeof(kind)) ||
        mgop_json_path_str(j, ref, "name", name, sizeof(name)) || mgop_json_path_str(j, ref, "uid", uid, sizeof(uid)))
      continue;
    f->owner_key = mgop_fp_key(kind, ns, name);
    f->owner_uid = mgop_uid_hash(uid);
    return;
  }
}

static void mgop_on_event(void *ctx, struct mgop_watch *w, const char *type, const struct mgop_json *j, int obj) {
  int kind = (int)(intptr_t)ctx;
  char ns[64], name[254], cluster[64], rv[24] = "";
  long long gen = 0;
  int echo = 0;
  (void)w;
  if (!j) {
    if (!strcmp(type, "LIST_BEGIN")) mgop_server.list_epoch[kind]++;
    else if (!strcmp(type, "LIST_END")) mgop_on_list_end(kind);
    return;
  }
  if (kind == K_NODE) { /* cluster-scoped: no namespace */
    if (mgop_json_path_str(j, obj, "metadata.name", name, sizeof(name)) == MGOP_OK) mgop_on_node(type, name, j, obj);
    return;
  }
  if (mgop_json_path_str(j, obj, "metadata.namespace", ns, sizeof(ns)) ||
      mgop_json_path_str(j, obj, "metadata.name", name, sizeof(name)))
    return;
  /* one line per event: info for what users edit, debug for our own objects */
  if (mgop_log_level <= (mgop_kinds[kind].role <= MGOP_ROLE_TEMPLATE ? MGOP_INFO : MGOP_DEBUG)) {
    char f[1024], uid[64];
    struct mgop_buf b;
    struct mgop_jw jw;
    mgop_json_path_str(j, obj, "metadata.resourceVersion", rv, sizeof(rv));
    mgop_json_path_str(j, obj, "metadata.uid", uid, sizeof(uid));
    mgop_json_i64(j, mgop_json_path(j, obj, "metadata.generation"), &gen);
    mgop_buf_init(&b, f, sizeof(f));
    mgop_jw_init(&jw, &b);
    mgop_jw_key(&jw, "kind"); mgop_jw_str(&jw, mgop_kinds[kind].kind);
    mgop_jw_key(&jw, "type"); mgop_jw_str(&jw, type);
    mgop_jw_key(&jw, "namespace"); mgop_jw_str(&jw, ns);
    mgop_jw_key(&jw, "name"); mgop_jw_str(&jw, name);
    mgop_jw_key(&jw, "uid"); mgop_jw_str(&jw, uid);
    mgop_jw_key(&jw, "resourceVersion"); mgop_jw_str(&jw, rv);
    mgop_jw_key(&jw, "generation"); mgop_jw_i64(&jw, gen);
    mgop_log_fields(mgop_kinds[kind].role <= MGOP_ROLE_TEMPLATE ? MGOP_INFO : MGOP_DEBUG, "watch", "event",
                    mgop_buf_cstr(&b));
    gen = 0;
  }
  switch (mgop_kinds[kind].role) {
    case MGOP_ROLE_ROOT:
      if (!strcmp(type, "DELETED")) {
        mgop_forget_root(ns, name);
        return;
      }
      mgop_roots_set(ns, name, 1);
      {
        struct mgop_root_ref *r = mgop_root_find(ns, name);
        if (r) r->epoch = mgop_server.list_epoch[kind];
      }
      mgop_json_path_str(j, obj, "metadata.resourceVersion", rv, sizeof(rv));
      if (mgop_is_own_echo(mgop_fp_find(mgop_fp_key("MultigresCluster", ns, name)), rv)) return;
      mgop_enqueue(ns, name, 0);
      return;
    case MGOP_ROLE_TEMPLATE:
      mgop_on_template_event(kind, type, ns, name, j, obj);
      return;
    case MGOP_ROLE_OBSERVED:
      if (mgop_on_pod(type, ns, name, j, obj)) {
        int labels = mgop_json_path(j, obj, "metadata.labels");
        if (mgop_json_str(j, mgop_json_key(j, labels, "multigres.com/cluster"), cluster, sizeof(cluster)) == MGOP_OK)
          mgop_enqueue(ns, cluster, 200);
      }
      return;
    default: break;
  }
  /* a child or workload: record what exists, wake its cluster (unless the
   * event is the echo of our own write) */
  {
    uint64_t key = mgop_fp_key(mgop_kinds[kind].kind, ns, name);
    if (!strcmp(type, "DELETED")) {
      mgop_forget_object(kind, key);
    } else {
      struct mgop_fp *f = mgop_fp_upsert(key);
      if (!f) {
        char what[600];
        snprintf(what, sizeof(what), "object table full (%zu rows); %s %s/%s is not tracked; raise --max-objects",
                 mgop_fp_slots(), mgop_kinds[kind].kind, ns, name);
        mgop_limit_note(MGOP_L_FINGERPRINTS, what);
        return;
      }
      mgop_json_path_str(j, obj, "metadata.resourceVersion", rv, sizeof(rv));
      mgop_json_i64(j, mgop_json_path(j, obj, "metadata.generation"), &gen);
      echo = mgop_is_own_echo(f, rv);
      if (!echo) f->seen_rv = mgop_uid_hash(rv); /* an echo keeps the version of our status write */
      f->seen_gen = gen;
      f->kind = kind + 1;
      f->epoch = mgop_server.list_epoch[kind];
      mgop_json_path_str(j, obj, "metadata.uid", f->uid, sizeof(f->uid));
      f->flags |= MGOP_FP_EXISTS;
      if (f->applied_hash == 0) {
        /* after a restart: trust the hash we stamped on it, so a converged
         * cluster costs no writes when the operator comes back */
        char hex[24];
        int ann = mgop_json_path(j, obj, "metadata.annotations");
        if (mgop_json_str(j, mgop_json_key(j, ann, MGOP_HASH_ANNOTATION), hex, sizeof(hex)) == MGOP_OK) {
          f->applied_hash = strtoull(hex, NULL, 16);
          f->applied_gen = gen;
          f->applied_rv = mgop_uid_hash(rv);
        }
      }
      mgop_observe_readiness(kind, j, obj, f);
      mgop_note_owner(f, j, obj, ns);
      if (mgop_kinds[kind].role == MGOP_ROLE_CHILD) mgop_adopt_status(f, j, obj);
      if (kind == K_STS) {
        char vct[64], what[400];
        if (mgop_json_path_str(j, obj, "spec.volumeClaimTemplates[0].spec.resources.requests.storage", vct, sizeof(vct)))
          vct[0] = 0; /* none, or too long to compare: treated as new */
        snprintf(what, sizeof(what), "StatefulSet %s/%s", ns, name);
        mgop_sts_fact_set(key, 0, vct, mgop_etcd_members_of(j, obj), what);
      }
      if (kind == K_STS) { /* left behind by a deleted cluster (section 6, orphan and reclaim) */
        int labels = mgop_json_path(j, obj, "metadata.labels");
        if (mgop_json_key(j, labels, MGOP_ORPHANED_FROM_LABEL) >= 0) {
          f->flags |= MGOP_FP_ORPHANED;
          mgop_orphan_mark(f->cluster);
        } else {
          f->flags &= ~MGOP_FP_ORPHANED;
        }
      }
    }
  }
  if (!echo) {
    int labels = mgop_json_path(j, obj, "metadata.labels");
    if (mgop_json_str(j, mgop_json_key(j, labels, "multigres.com/cluster"), cluster, sizeof(cluster)) == MGOP_OK)
      mgop_enqueue(ns, cluster, 200); /* coalesce bursts of child events */
  }
}

/* ======================================================================
 * 10. Leader election
 * A coordination.k8s.io/v1 Lease, as client-go's leaderelection does it:
 * another holder's lease counts as expired only when its record has not
 * changed for leaseDurationSeconds by our own clock (no clock-skew trust).
 * Only the leader pops work, so only the leader writes; a leader that has
 * not renewed within the renew deadline stops writing at once and exits.
 * ==================================================================== */
#define MGOP_LEASE_DURATION_S 15
#define MGOP_LEASE_RENEW_DEADLINE_MS 10000
#define MGOP_LEASE_RETRY_MS 2000

/* Owned by the Lease thread (section 13), except the fields marked shared,
 * which it writes and others read with __atomic loads. */
static struct {
  int enabled;                 /* set before the threads start             */
  char ns[64], name[128], identity[128];
  int leading;                 /* shared: we hold the lease                */
  long long renewed_ms;        /* shared: last acquire/renew (monotonic)   */
  long long seen_ok_ms;        /* shared: last time the Lease was read or
                                  written at all (readiness)               */
  int new_term;                /* shared: became leader; the loop takes it */
  int lost;                    /* shared: renew deadline passed            */
  int tried;                   /* shared: a first try is over, won or not  */
  struct mgop_kube api;        /* its own connection: never queued behind
                                  a reconcile's request                    */
  struct mgop_kubecfg cfg;     /* its own copy: token reloads are per client */
  long long next_ms;           /* next attempt                              */
  char observed[300];          /* holder + renewTime as last seen           */
  long long observed_ms;       /* when that record last changed             */
  long long looked_ms;         /* our previous look at the record           */
  long long expires_ms;        /* when another holder's lease runs out      */
  int transitions;             /* leaseTransitions as last seen             */
} mgop_lease;

/* May this process write now? Always without leader election. Any thread. */
static int mgop_may_write(void) {
  if (!mgop_lease.enabled) return 1;
  return __atomic_load_n(&mgop_lease.leading, __ATOMIC_ACQUIRE) &&
         mgop_now_ms() - __atomic_load_n(&mgop_lease.renewed_ms, __ATOMIC_ACQUIRE) < MGOP_LEASE_RENEW_DEADLINE_MS;
}

/* Leader election works: the Lease was read or written within its
 * duration (leader or standby). Any thread; for /readyz. */
static int mgop_lease_healthy(void) {
  if (!mgop_lease.enabled) return 1;
  return mgop_now_ms() - __atomic_load_n(&mgop_lease.seen_ok_ms, __ATOMIC_ACQUIRE) < MGOP_LEASE_DURATION_S * 1000LL;
}


/* The Lease body: holder (empty to release), with resourceVersion for an
 * optimistic update, or without for a create. */
static void mgop_lease_body(struct mgop_buf *b, const char *rv, const char *holder, int duration_s, const char *acquire,
                            const char *renew, int transitions) {
  struct mgop_jw w;
  mgop_jw_init(&w, b);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "apiVersion"); mgop_jw_str(&w, "coordination.k8s.io/v1");
  mgop_jw_key(&w, "kind"); mgop_jw_str(&w, "Lease");
  mgop_jw_key(&w, "metadata"); mgop_jw_obj(&w);
  mgop_jw_key(&w, "name"); mgop_jw_str(&w, mgop_lease.name);
  mgop_jw_key(&w, "namespace"); mgop_jw_str(&w, mgop_lease.ns);
  if (rv) { mgop_jw_key(&w, "resourceVersion"); mgop_jw_str(&w, rv); }
  mgop_jw_obj_end(&w);
  mgop_jw_key(&w, "spec"); mgop_jw_obj(&w);
  mgop_jw_key(&w, "holderIdentity"); mgop_jw_str(&w, holder);
  mgop_jw_key(&w, "leaseDurationSeconds"); mgop_jw_i64(&w, duration_s);
  mgop_jw_key(&w, "acquireTime"); mgop_jw_str(&w, acquire);
  mgop_jw_key(&w, "renewTime"); mgop_jw_str(&w, renew);
  mgop_jw_key(&w, "leaseTransitions"); mgop_jw_i64(&w, transitions);
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
}

/* One try to acquire or renew. Returns 1 when we hold the lease after it. */
static int mgop_lease_try(void) {
  static char resp[16 * 1024];
  static jsmntok_t tok[512];
  char path[400], body[2048], rv[32] = "", holder[128] = "", renew[64] = "", acquire[64] = "", now_s[96], seen[300];
  struct mgop_buf out, b;
  struct mgop_json j;
  long long duration = MGOP_LEASE_DURATION_S, transitions = 0, now = mgop_now_ms();
  int status = 0, rc;
  snprintf(path, sizeof(path), "/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", mgop_lease.ns, mgop_lease.name);
  mgop_micro_time(now_s, sizeof(now_s));
  mgop_buf_init(&out, resp, sizeof(resp));
  rc = mgop_kube_request(&mgop_lease.api, "GET", path, NULL, NULL, 0, &out, &status);
  if (rc) return 0;
  if (status == 200 || status == 404) __atomic_store_n(&mgop_lease.seen_ok_ms, mgop_now_ms(), __ATOMIC_RELEASE);
  if (status == 404) { /* nobody has it: create it, held by us */
    char coll[400];
    mgop_buf_init(&b, body, sizeof(body));
    mgop_lease_body(&b, NULL, mgop_lease.identity, MGOP_LEASE_DURATION_S, now_s, now_s, 0);
    snprintf(coll, sizeof(coll), "/apis/coordination.k8s.io/v1/namespaces/%s/leases", mgop_lease.ns);
    mgop_buf_init(&out, resp, sizeof(resp));
    rc = mgop_kube_request(&mgop_lease.api, "POST", coll, "application/json", b.p, b.len, &out, &status);
    return !rc && status == 201;
  }
  if (status != 200 || out.overflow || mgop_json_parse(&j, out.p, out.len, tok, 512)) {
    if (status == 403)
      MGOP_LOG(MGOP_ERROR, ("leader election: forbidden to read Lease %s/%s; grant get/create/update on leases",
                            mgop_lease.ns, mgop_lease.name));
    return 0;
  }
  mgop_json_path_str(&j, 0, "metadata.resourceVersion", rv, sizeof(rv));
  mgop_json_path_str(&j, 0, "spec.holderIdentity", holder, sizeof(holder));
  mgop_json_path_str(&j, 0, "spec.renewTime", renew, sizeof(renew));
  mgop_json_path_str(&j, 0, "spec.acquireTime", acquire, sizeof(acquire));
  mgop_json_i64(&j, mgop_json_path(&j, 0, "spec.leaseDurationSeconds"), &duration);
  mgop_json_i64(&j, mgop_json_path(&j, 0, "spec.leaseTransitions"), &transitions);
  snprintf(seen, sizeof(seen), "%s@%s", holder, renew);
  if (strcmp(seen, mgop_lease.observed)) {
    /* the record moved: restart its clock from the earliest moment it can
     * have moved, our previous look. That errs towards an earlier takeover
     * by at most one retry period (2 s), still well after the old leader's
     * renew deadline (10 s) has stopped its writes. */
    snprintf(mgop_lease.observed, sizeof(mgop_lease.observed), "%s", seen);
    mgop_lease.observed_ms = mgop_lease.looked_ms ? mgop_lease.looked_ms : now;
  }
  mgop_lease.looked_ms = now;
  mgop_lease.expires_ms = mgop_lease.observed_ms + duration * 1000;
  if (holder[0] && strcmp(holder, mgop_lease.identity) && now < mgop_lease.expires_ms)
    return 0; /* held by someone else, and alive */
  {
    int ours = !strcmp(holder, mgop_lease.identity);
    mgop_buf_init(&b, body, sizeof(body));
    mgop_lease_body(&b, rv, mgop_lease.identity, MGOP_LEASE_DURATION_S, ours && acquire[0] ? acquire : now_s, now_s,
                    (int)transitions + (ours ? 0 : 1));
    mgop_buf_init(&out, resp, sizeof(resp));
    rc = mgop_kube_request(&mgop_lease.api, "PUT", path, "application/json", b.p, b.len, &out, &status);
    if (rc || status != 200) return 0; /* 409: someone else got there first */
    if (!ours) MGOP_LOG(MGOP_INFO, ("leader election: took over Lease %s/%s from \"%s\"", mgop_lease.ns, mgop_lease.name,
                                    holder));
    mgop_lease.transitions = (int)transitions + (ours ? 0 : 1);
    return 1;
  }
}

/* On the Lease thread: acquire or renew when due. Returns -1 when the
 * lease was lost (the process exits), else ms until the next call. */
static long long mgop_lease_step(void) {
  long long now = mgop_now_ms();
  if (!mgop_lease.enabled) return 60000;
  if (now < mgop_lease.next_ms) {
    if (mgop_lease.leading && now - mgop_lease.renewed_ms >= MGOP_LEASE_RENEW_DEADLINE_MS) return -1;
    return mgop_lease.next_ms - now;
  }
  /* a Lease request must give up well before the renew deadline, or a
   * hung API server would keep a stale leader alive until the request timed out */
  mgop_lease.api.timeout_ms = MGOP_LEASE_RENEW_DEADLINE_MS / 3;
  int got = mgop_lease_try();
  if (got) {
    if (!mgop_lease.leading) {
      MGOP_LOG(MGOP_INFO, ("leader election: %s is the leader (Lease %s/%s)", mgop_lease.identity, mgop_lease.ns,
                           mgop_lease.name));
      __atomic_store_n(&mgop_lease.new_term, 1, __ATOMIC_RELEASE); /* the loop gives every cluster a turn */
    }
    __atomic_store_n(&mgop_lease.renewed_ms, mgop_now_ms(), __ATOMIC_RELEASE);
    __atomic_store_n(&mgop_lease.seen_ok_ms, mgop_now_ms(), __ATOMIC_RELEASE);
    __atomic_store_n(&mgop_lease.leading, 1, __ATOMIC_RELEASE);
  } else if (mgop_lease.leading && mgop_now_ms() - mgop_lease.renewed_ms >= MGOP_LEASE_RENEW_DEADLINE_MS) {
    return -1;
  }
  __atomic_store_n(&mgop_lease.tried, 1, __ATOMIC_RELEASE); /* after leading: the early turn reads them in turn */
  mgop_lease.next_ms = mgop_now_ms() + MGOP_LEASE_RETRY_MS;
  if (!mgop_lease.leading && mgop_lease.expires_ms > mgop_now_ms() && mgop_lease.expires_ms < mgop_lease.next_ms)
    mgop_lease.next_ms = mgop_lease.expires_ms + 1; /* try the moment another holder's lease runs out */
  return mgop_lease.next_ms - mgop_now_ms();
}

/* On a clean shutdown: hand the lease back so a standby takes over now,
 * not after the lease duration (client-go's ReleaseOnCancel). */
static void mgop_lease_release(void) {
  static char resp[16 * 1024];
  static jsmntok_t tok[512];
  char path[400], body[2048], rv[32] = "", now_s[96];
  struct mgop_buf out, b;
  struct mgop_json j;
  int status = 0;
  if (!mgop_lease.enabled || !mgop_may_write()) return;
  /* best effort within the 2 s a shutdown may take: two requests of 700 ms */
  mgop_lease.api.timeout_ms = 700;
  snprintf(path, sizeof(path), "/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", mgop_lease.ns, mgop_lease.name);
  mgop_buf_init(&out, resp, sizeof(resp));
  if (mgop_kube_request(&mgop_lease.api, "GET", path, NULL, NULL, 0, &out, &status) || status != 200 ||
      mgop_json_parse(&j, out.p, out.len, tok, 512))
    return;
  mgop_json_path_str(&j, 0, "metadata.resourceVersion", rv, sizeof(rv));
  mgop_micro_time(now_s, sizeof(now_s));
  mgop_buf_init(&b, body, sizeof(body));
  mgop_lease_body(&b, rv, "", 1, now_s, now_s, mgop_lease.transitions);
  mgop_buf_init(&out, resp, sizeof(resp));
  if (mgop_kube_request(&mgop_lease.api, "PUT", path, "application/json", b.p, b.len, &out, &status) == MGOP_OK &&
      status == 200)
    MGOP_LOG(MGOP_INFO, ("leader election: released Lease %s/%s", mgop_lease.ns, mgop_lease.name));
  __atomic_store_n(&mgop_lease.leading, 0, __ATOMIC_RELEASE);
}

/* ======================================================================
 * 11. Admission webhook and its certificates
 * The validating webhook covers what CEL cannot: it resolves a cluster the
 * way the reconciler would (templates read live) and refuses what would
 * stall; it refuses to delete a template that has consumers, and writes to
 * the operator's children by anyone but the operator or the garbage
 * collector. Its certificates: a CA and a serving certificate (ECDSA
 * P-256) in two Secrets owned by the operator Deployment, renewed before
 * expiry by the leader, read by every replica; new connections pick up a
 * new certificate at once. The CA bundle is patched into the
 * ValidatingWebhookConfiguration. There is no mutating webhook: the
 * operator never writes defaults into a spec.
 * ==================================================================== */
#define MGOP_WH_CONNS 16
static struct {
  int enabled, internal_certs;
  const char *bind, *cert_dir, *service, *config_name, *owner_deployment;
  char ns[64];                    /* of the Service and the Secrets   */
  char extra_sans[256];           /* comma list, for out-of-cluster runs */
  long long ca_validity_s, cert_validity_s, check_ms;
  struct mgop_pki_pair ca, serving;
  char prev_ca[MGOP_PKI_PEM_MAX]; /* the CA before the last rotation  */
  char serial[80];                /* of the certificate being served (serving thread) */
  char offered_serial[80];        /* of the one the loop last offered */
  char serving_cert[MGOP_PKI_PEM_MAX];
  char bundle_b64[3 * MGOP_PKI_PEM_MAX];
  char operator_user[256];        /* who the operator is (SelfSubjectReview) */
  char service_account[254];      /* --webhook-service-account: the same when that is not answered */
  long long next_check_ms;
  long long dir_mtime;            /* of tls.crt in cert_dir            */
  struct mgop_srv srv;
  struct mgop_srv_conn conns[MGOP_WH_CONNS];
} mgop_wh;

/* The webhook's own metrics: operation x resource x result. Under a lock
 * of their own, which the loop never takes, so an answer never waits for
 * the loop: at nice 10 it can be preempted holding mgop_shared.mu (a status
 * turn's series sweep). The serving thread counts; /metrics (that thread,
 * or the secure metrics thread) copies them out and renders the copy. */
struct mgop_wh_counts {
  unsigned long long total[4][8][3];
  struct mgop_histogram latency[4][8];
};
static struct {
  pthread_mutex_t mu;
  struct mgop_wh_counts c;
} mgop_wh_metrics = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void mgop_wh_counts_get(struct mgop_wh_counts *out) {
  pthread_mutex_lock(&mgop_wh_metrics.mu);
  *out = mgop_wh_metrics.c;
  pthread_mutex_unlock(&mgop_wh_metrics.mu);
}

static const char *const mgop_wh_ops[4] = {"CREATE", "UPDATE", "DELETE", "CONNECT"};
static const char *const mgop_wh_results[3] = {"allowed", "denied", "error"};

/* base64 data.KEY of a Secret (parsed) into out, NUL-terminated. */
static int mgop_secret_value(const struct mgop_json *j, const char *key, char *out, size_t cap) {
  char b64[3 * MGOP_PKI_PEM_MAX];
  size_t n = 0;
  /* by key, not by path: the keys have dots (tls.crt) */
  if (mgop_json_str(j, mgop_json_key(j, mgop_json_key(j, 0, "data"), key), b64, sizeof(b64))) return MGOP_ERR_NOTFOUND;
  if (mbedtls_base64_decode((unsigned char *)out, cap - 1, &n, (const unsigned char *)b64, strlen(b64)))
    return mgop_seterr(MGOP_ERR_PARSE, "data.%s is not base64", key);
  out[n] = 0;
  return MGOP_OK;
}

/* GETs a Secret of the webhook namespace; MGOP_ERR_NOTFOUND when absent. */
static int mgop_wh_get_secret(const char *name, struct mgop_json *j) {
  static char body[64 * 1024];
  static jsmntok_t tok[256];
  char path[300];
  struct mgop_buf b;
  int status, rc;
  snprintf(path, sizeof(path), "/api/v1/namespaces/%s/secrets/%s", mgop_wh.ns, name);
  mgop_buf_init(&b, body, sizeof(body));
  if ((rc = mgop_kube_get(mgop_api_ptr, path, &b, &status))) return rc;
  return mgop_json_parse(j, b.p, b.len, tok, 256);
}

/* Writes (server-side apply) a Secret owned by the operator Deployment. */
static int mgop_wh_put_secret(const char *name, const char *type, const char *const *keys, const char *const *values,
                              int n) {
  static char mem[32 * 1024];
  char path[300], uid[64] = "", b64[3 * MGOP_PKI_PEM_MAX];
  struct mgop_buf b, out;
  struct mgop_jw w;
  struct mgop_applied res;
  int status = 0, rc;
  if (mgop_wh.owner_deployment[0]) { /* owned by the Deployment: gone with the operator */
    static char dbody[64 * 1024];
    static jsmntok_t tok[4096];
    struct mgop_json j;
    snprintf(path, sizeof(path), "/apis/apps/v1/namespaces/%s/deployments/%s", mgop_wh.ns, mgop_wh.owner_deployment);
    mgop_buf_init(&out, dbody, sizeof(dbody));
    if (mgop_kube_get(mgop_api_ptr, path, &out, &status) == MGOP_OK && !out.overflow &&
        mgop_json_parse(&j, out.p, out.len, tok, 4096) == MGOP_OK)
      mgop_json_path_str(&j, 0, "metadata.uid", uid, sizeof(uid));
  }
  mgop_buf_init(&b, mem, sizeof(mem));
  mgop_jw_init(&w, &b);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "apiVersion"); mgop_jw_str(&w, "v1");
  mgop_jw_key(&w, "kind"); mgop_jw_str(&w, "Secret");
  mgop_jw_key(&w, "metadata"); mgop_jw_obj(&w);
  mgop_jw_key(&w, "name"); mgop_jw_str(&w, name);
  mgop_jw_key(&w, "namespace"); mgop_jw_str(&w, mgop_wh.ns);
  mgop_jw_key(&w, "labels"); mgop_jw_obj(&w);
  mgop_jw_key(&w, "app.kubernetes.io/name"); mgop_jw_str(&w, "multigres-operator");
  mgop_jw_key(&w, "app.kubernetes.io/component"); mgop_jw_str(&w, "webhook-certificates");
  mgop_jw_obj_end(&w);
  if (uid[0]) {
    mgop_jw_key(&w, "ownerReferences"); mgop_jw_arr(&w); mgop_jw_obj(&w);
    mgop_jw_key(&w, "apiVersion"); mgop_jw_str(&w, "apps/v1");
    mgop_jw_key(&w, "kind"); mgop_jw_str(&w, "Deployment");
    mgop_jw_key(&w, "name"); mgop_jw_str(&w, mgop_wh.owner_deployment);
    mgop_jw_key(&w, "uid"); mgop_jw_str(&w, uid);
    mgop_jw_obj_end(&w); mgop_jw_arr_end(&w);
  }
  mgop_jw_obj_end(&w);
  mgop_jw_key(&w, "type"); mgop_jw_str(&w, type);
  mgop_jw_key(&w, "data"); mgop_jw_obj(&w);
  for (int i = 0; i < n; i++) {
    size_t bl = 0;
    if (!values[i] || !values[i][0]) continue;
    mbedtls_base64_encode((unsigned char *)b64, sizeof(b64), &bl, (const unsigned char *)values[i], strlen(values[i]));
    mgop_jw_key(&w, keys[i]);
    mgop_jw_strn(&w, b64, bl);
  }
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  if (b.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "Secret %s too large", name);
  snprintf(path, sizeof(path), "/api/v1/namespaces/%s/secrets/%s", mgop_wh.ns, name);
  rc = mgop_kube_apply(mgop_api_ptr, path, b.p, b.len, &res, &status);
  mbedtls_platform_zeroize(mem, b.len); /* a private key went through here */
  return rc;
}

static void mgop_wh_names(const char **names, int *n, char *store, size_t cap) {
  size_t used = 0;
  *n = 0;
  for (int i = 0; i < 2; i++) { /* service.ns.svc and service.ns.svc.cluster.local */
    int w = snprintf(store + used, cap - used, "%s.%s.svc%s", mgop_wh.service, mgop_wh.ns, i ? ".cluster.local" : "");
    names[(*n)++] = store + used;
    used += (size_t)w + 1;
  }
  for (char *p = mgop_wh.extra_sans; p < mgop_wh.extra_sans + sizeof(mgop_wh.extra_sans) - 1 && *p && *n < 8;) {
    /* the list was split on ',' into NULs at flag time */
    names[(*n)++] = p;
    p += strlen(p) + 1;
  }
}

/* The bundle the API server trusts: the CA, and the previous CA while a
 * certificate it signed may still be served by another replica. */
static void mgop_wh_bundle(void) {
  char pem[2 * MGOP_PKI_PEM_MAX + 2];
  size_t n = 0;
  long long prev_end = 0;
  snprintf(pem, sizeof(pem), "%s", mgop_wh.ca.cert);
  if (mgop_wh.prev_ca[0] && mgop_pki_not_after(mgop_wh.prev_ca, strlen(mgop_wh.prev_ca), &prev_end) == MGOP_OK &&
      prev_end > (long long)time(NULL))
    snprintf(pem + strlen(pem), sizeof(pem) - strlen(pem), "%s", mgop_wh.prev_ca);
  mbedtls_base64_encode((unsigned char *)mgop_wh.bundle_b64, sizeof(mgop_wh.bundle_b64), &n, (const unsigned char *)pem,
                        strlen(pem));
  mgop_wh.bundle_b64[n] = 0;
}

/* caBundle of every webhook of the configuration, when it differs. */
static int mgop_wh_patch_bundle(void) {
  static char body[128 * 1024], patch[64 * 1024];
  static jsmntok_t tok[4096];
  char path[300];
  struct mgop_buf b, p;
  struct mgop_json j;
  int status, rc, hooks, changed = 0;
  snprintf(path, sizeof(path), "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/%s",
           mgop_wh.config_name);
  mgop_buf_init(&b, body, sizeof(body));
  rc = mgop_kube_get(mgop_api_ptr, path, &b, &status);
  if (rc == MGOP_ERR_NOTFOUND) {
    MGOP_LOG(MGOP_WARN, ("ValidatingWebhookConfiguration %s not found; apply install.yaml (the API server will not "
                         "call the webhook without it)", mgop_wh.config_name));
    return MGOP_OK;
  }
  if (rc) return rc;
  if ((rc = mgop_json_parse(&j, b.p, b.len, tok, 4096))) return rc;
  hooks = mgop_json_key(&j, 0, "webhooks");
  mgop_buf_init(&p, patch, sizeof(patch));
  mgop_buf_puts(&p, "[");
  for (int i = 0; mgop_json_is(&j, hooks, JSMN_ARRAY) && i < j.tok[hooks].size; i++) {
    char have[3 * MGOP_PKI_PEM_MAX] = "";
    mgop_json_path_str(&j, mgop_json_at(&j, hooks, i), "clientConfig.caBundle", have, sizeof(have));
    if (!strcmp(have, mgop_wh.bundle_b64)) continue;
    mgop_buf_printf(&p, "%s{\"op\":\"add\",\"path\":\"/webhooks/%d/clientConfig/caBundle\",\"value\":\"%s\"}",
                    changed ? "," : "", i, mgop_wh.bundle_b64);
    changed++;
  }
  mgop_buf_puts(&p, "]");
  if (!changed) return MGOP_OK;
  if (p.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "caBundle patch too large");
  mgop_buf_init(&b, body, sizeof(body));
  rc = mgop_kube_request(mgop_api_ptr, "PATCH", path, "application/json-patch+json", p.p, p.len, &b, &status);
  if (rc) return rc;
  if (status != 200) {
    char msg[300];
    mgop_kube_status_message(b.p, b.len, msg, sizeof(msg));
    return mgop_seterr(MGOP_ERR_STATUS, "patch caBundle of %s: HTTP %d: %s", mgop_wh.config_name, status, msg);
  }
  MGOP_LOG(MGOP_INFO, ("webhook: CA bundle of %s updated (%d webhook%s)", mgop_wh.config_name, changed,
                       changed == 1 ? "" : "s"));
  return MGOP_OK;
}

static void mgop_wh_serve(const struct mgop_pki_pair *pair);

/* On the loop: hands pair to the serving thread, once per certificate. */
static void mgop_wh_offer(const struct mgop_pki_pair *pair) {
  char serial[80] = "";
  mgop_pki_serial_hex(pair->cert, pair->cert_len, serial, sizeof(serial));
  if (!strcmp(serial, mgop_wh.offered_serial)) return;
  pthread_mutex_lock(&mgop_shared.mu);
  mgop_shared.offer = *pair;
  mgop_shared.offered = 1;
  pthread_mutex_unlock(&mgop_shared.mu);
  snprintf(mgop_wh.offered_serial, sizeof(mgop_wh.offered_serial), "%s", serial);
  if (mgop_shared.offer_pipe[1] >= 0 && write(mgop_shared.offer_pipe[1], "c", 1) < 0 && errno != EAGAIN)
    MGOP_LOG(MGOP_WARN, ("webhook: cannot wake the serving thread: %s", strerror(errno)));
  else if (mgop_shared.offer_pipe[1] < 0) /* no serving thread (tests): serve it here */
    mgop_wh_serve(pair);
}

/* On the serving thread: serves pair if it is not what is served already. */
static void mgop_wh_serve(const struct mgop_pki_pair *pair) {
  char serial[80] = "";
  mgop_pki_serial_hex(pair->cert, pair->cert_len, serial, sizeof(serial));
  if (!strcmp(serial, mgop_wh.serial)) return;
  if (mgop_srv_set_cert(&mgop_wh.srv, pair->cert, pair->cert_len, pair->key, pair->key_len)) {
    MGOP_LOG(MGOP_ERROR, ("webhook: cannot use the serving certificate: %s", mgop_errmsg()));
    return;
  }
  MGOP_LOG(MGOP_INFO, ("webhook: serving certificate %s%s", serial, mgop_wh.serial[0] ? " (rotated)" : ""));
  pthread_mutex_lock(&mgop_shared.mu); /* /metrics reads the expiry from it */
  snprintf(mgop_wh.serial, sizeof(mgop_wh.serial), "%s", serial);
  snprintf(mgop_wh.serving_cert, sizeof(mgop_wh.serving_cert), "%s", pair->cert);
  pthread_mutex_unlock(&mgop_shared.mu);
}

#define MGOP_WH_CA_SECRET "multigres-operator-webhook-ca"
#define MGOP_WH_CERT_SECRET "multigres-operator-webhook-cert"

/* Due for renewal: less than a third of its configured lifetime left, or
 * less than two check intervals (the generated certificates are backdated
 * an hour, so their own span overstates the lifetime we asked for). */
static int mgop_wh_due(const char *cert, size_t len, long long validity_s, long long now) {
  long long not_after = 0, margin = mgop_wh.check_ms / 1000 * 2;
  if (!len || mgop_pki_not_after(cert, len, &not_after)) return 1;
  return not_after - now < validity_s / 3 || not_after - now < margin;
}

/* tls.crt and tls.key in dir (a mounted cert-manager Secret) into p when
 * tls.crt's modification time is not *mtime, or force: 1 when loaded (and
 * *mtime set), 0 when unchanged, or an error with the reason. */
static int mgop_cert_dir_load(const char *dir, long long *mtime, int force, struct mgop_pki_pair *p) {
  char path[600], cert[MGOP_PKI_PEM_MAX], key[MGOP_PKI_PEM_MAX];
  struct stat st;
  size_t cl, kl;
  int rc;
  snprintf(path, sizeof(path), "%s/tls.crt", dir);
  if (stat(path, &st)) return mgop_seterr(MGOP_ERR_IO, "certificate %s: %s", path, strerror(errno));
  if (!force && (long long)st.st_mtime == *mtime) return 0;
  if ((rc = mgop_read_file(path, cert, sizeof(cert) - 1, &cl))) return rc;
  snprintf(path, sizeof(path), "%s/tls.key", dir);
  if ((rc = mgop_read_file(path, key, sizeof(key) - 1, &kl))) return rc;
  cert[cl] = key[kl] = 0;
  rc = mgop_pki_pair_load(p, cert, cl, key, kl);
  mbedtls_platform_zeroize(key, sizeof(key));
  if (rc) return rc;
  *mtime = (long long)st.st_mtime;
  return 1;
}

/* The hourly (--webhook-cert-check-interval) check. The leader makes what
 * is missing or near expiry; every replica serves what the Secrets hold. */
static int mgop_wh_certs(void) {
  static struct mgop_pki_pair cand;
  struct mgop_json j;
  char cert[MGOP_PKI_PEM_MAX], key[MGOP_PKI_PEM_MAX], prev[MGOP_PKI_PEM_MAX] = "";
  const char *names[10];
  char store[600];
  int nnames, rc, lead = mgop_may_write(), ca_new = 0;
  long long now = (long long)time(NULL);
  if (!mgop_wh.internal_certs) { /* cert-manager: files in cert_dir, re-read when they change */
    if ((rc = mgop_cert_dir_load(mgop_wh.cert_dir, &mgop_wh.dir_mtime, !mgop_wh.offered_serial[0], &cand)) < 0) {
      char why[512];
      snprintf(why, sizeof(why), "%s", mgop_errmsg()); /* mgop_seterr writes where mgop_errmsg points */
      return mgop_seterr(rc, "webhook %.480s", why);
    }
    if (rc == 1) mgop_wh_offer(&cand);
    return MGOP_OK;
  }
  mgop_wh_names(names, &nnames, store, sizeof(store));
  /* the CA */
  rc = mgop_wh_get_secret(MGOP_WH_CA_SECRET, &j);
  if (rc && rc != MGOP_ERR_NOTFOUND) return rc;
  if (rc == MGOP_OK && mgop_secret_value(&j, "ca.crt", cert, sizeof(cert)) == MGOP_OK &&
      mgop_secret_value(&j, "ca.key", key, sizeof(key)) == MGOP_OK &&
      mgop_pki_pair_load(&mgop_wh.ca, cert, strlen(cert), key, strlen(key)) == MGOP_OK) {
    mgop_secret_value(&j, "ca-previous.crt", prev, sizeof(prev));
    snprintf(mgop_wh.prev_ca, sizeof(mgop_wh.prev_ca), "%s", prev);
  } else {
    mgop_wh.ca.cert_len = 0;
  }
  if (mgop_wh_due(mgop_wh.ca.cert, mgop_wh.ca.cert_len, mgop_wh.ca_validity_s, now)) {
    if (!lead) return mgop_seterr(MGOP_ERR_NOTFOUND, "waiting for the leader to write Secret %s", MGOP_WH_CA_SECRET);
    snprintf(mgop_wh.prev_ca, sizeof(mgop_wh.prev_ca), "%s", mgop_wh.ca.cert_len ? mgop_wh.ca.cert : "");
    if ((rc = mgop_pki_make_ca(&mgop_wh.ca, "multigres-operator-ca", mgop_wh.ca_validity_s, now))) return rc;
    {
      const char *k[] = {"ca.crt", "ca.key", "ca-previous.crt"}, *v[] = {mgop_wh.ca.cert, mgop_wh.ca.key, mgop_wh.prev_ca};
      if ((rc = mgop_wh_put_secret(MGOP_WH_CA_SECRET, "Opaque", k, v, 3))) return rc;
    }
    MGOP_LOG(MGOP_INFO, ("webhook: new CA in Secret %s/%s", mgop_wh.ns, MGOP_WH_CA_SECRET));
    ca_new = 1;
  }
  /* the serving certificate, signed by that CA */
  rc = mgop_wh_get_secret(MGOP_WH_CERT_SECRET, &j);
  if (rc && rc != MGOP_ERR_NOTFOUND) return rc;
  cand.cert_len = 0;
  if (rc == MGOP_OK && mgop_secret_value(&j, "tls.crt", cert, sizeof(cert)) == MGOP_OK &&
      mgop_secret_value(&j, "tls.key", key, sizeof(key)) == MGOP_OK)
    mgop_pki_pair_load(&cand, cert, strlen(cert), key, strlen(key));
  if (!cand.cert_len || ca_new || mgop_wh_due(cand.cert, cand.cert_len, mgop_wh.cert_validity_s, now) ||
      mgop_pki_verify(cand.cert, cand.cert_len, mgop_wh.ca.cert, mgop_wh.ca.cert_len, names[0], now)) {
    if (!lead) return mgop_seterr(MGOP_ERR_NOTFOUND, "waiting for the leader to renew Secret %s", MGOP_WH_CERT_SECRET);
    if ((rc = mgop_pki_make_serving(&cand, &mgop_wh.ca, names, nnames, mgop_wh.cert_validity_s, now))) return rc;
    {
      const char *k[] = {"tls.crt", "tls.key", "ca.crt"}, *v[] = {cand.cert, cand.key, mgop_wh.ca.cert};
      if ((rc = mgop_wh_put_secret(MGOP_WH_CERT_SECRET, "kubernetes.io/tls", k, v, 3))) return rc;
    }
  }
  mbedtls_platform_zeroize(key, sizeof(key));
  mgop_wh_bundle();
  if (lead && (rc = mgop_wh_patch_bundle())) return rc; /* the bundle first: it already trusts the new CA */
  mgop_wh_offer(&cand);
  return MGOP_OK;
}

/* Who we are, so the webhook lets our own writes to children through: on
 * the CRDs' first look's thread, beside its GETs (the lists need not wait
 * for it), client k; the webhook serves no certificate before it is known. */
static void mgop_wh_whoami(struct mgop_kube *k) {
  static char body[16 * 1024];
  static jsmntok_t tok[512];
  static const char req[] = "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"SelfSubjectReview\"}";
  struct mgop_buf b;
  struct mgop_json j;
  int status = 0;
  mgop_buf_init(&b, body, sizeof(body));
  if (mgop_kube_request(k, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", "application/json",
                        req, sizeof(req) - 1, &b, &status) == MGOP_OK &&
      status == 201 && mgop_json_parse(&j, b.p, b.len, tok, 512) == MGOP_OK &&
      mgop_json_path_str(&j, 0, "status.userInfo.username", mgop_wh.operator_user, sizeof(mgop_wh.operator_user)) ==
          MGOP_OK) {
    MGOP_LOG(MGOP_INFO, ("webhook: children are writable only by %s (and the garbage collector)",
                         mgop_wh.operator_user));
    return;
  }
  mgop_wh.operator_user[0] = 0;
  if (mgop_wh.service_account[0]) {
    snprintf(mgop_wh.operator_user, sizeof(mgop_wh.operator_user), "system:serviceaccount:%.63s:%.160s", mgop_wh.ns,
             mgop_wh.service_account);
    MGOP_LOG(MGOP_WARN, ("webhook: SelfSubjectReview failed (HTTP %d); children are writable only by %s "
                         "(--webhook-service-account)", status, mgop_wh.operator_user));
    return;
  }
  MGOP_LOG(MGOP_WARN, ("webhook: SelfSubjectReview failed (HTTP %d); writes to children are not checked", status));
}

/* One admission decision. */
struct mgop_verdict {
  int allowed, code;
  int errored;                    /* allowed only because the check failed */
  char reason[32];
  char message[700];
  char warning[900];
};

static void mgop_deny(struct mgop_verdict *v, int code, const char *reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void mgop_deny(struct mgop_verdict *v, int code, const char *reason, const char *fmt, ...) {
  va_list ap;
  v->allowed = 0;
  v->code = code;
  snprintf(v->reason, sizeof(v->reason), "%s", reason);
  va_start(ap, fmt);
  vsnprintf(v->message, sizeof(v->message), fmt, ap);
  va_end(ap);
}

/* Admission's own memory: it runs on the serving thread, beside the loop. */
static unsigned char mgop_admit_arena_mem[4 * 1024 * 1024];
static struct mgop_arena mgop_admit_arena;

/* A MultigresCluster as the reconciler would resolve it, templates from the
 * watch cache: anything that would stall it is refused with the same
 * message; what the cache cannot tell is admitted with a warning saying so. */
static void mgop_admit_cluster(const struct mgop_json *j, int object, const char *ns, struct mgop_verdict *v) {
  static struct mgop_rctx r;
  char name[64] = "";
  int rc;
  if (!mgop_json_is(j, object, JSMN_OBJECT)) {
    snprintf(v->warning, sizeof(v->warning), "not checked: the review has no request.object");
    return;
  }
  mgop_rctx_clear(&r);
  r.render = 1;
  r.admission = 1;
  r.cached_templates = mgop_tcache_enabled; /* offline (tests, fuzzing): no template exists */
  r.arena = &mgop_admit_arena;
  r.ns = ns;
  mgop_json_path_str(j, object, "metadata.name", name, sizeof(name));
  r.name = name[0] ? name : "new-cluster";
  snprintf(r.uid, sizeof(r.uid), "00000000-0000-0000-0000-000000000000");
  { /* re-parse the object alone: the builders address the cluster from token 0 */
    const char *js = j->js + j->tok[object].start;
    size_t n = (size_t)(j->tok[object].end - j->tok[object].start);
    if ((rc = mgop_parse_arena(r.arena, js, n, &r.root))) {
      snprintf(v->warning, sizeof(v->warning), "not checked: %.250s", mgop_errmsg());
      v->errored = 1;
      return;
    }
  }
  r.spec = mgop_json_key(&r.root, 0, "spec");
  rc = mgop_reconcile_tree(&r);
  if (r.stalled_reason[0]) {
    mgop_deny(v, 422, "Invalid", "%s: %s", r.stalled_reason, r.stalled_msg);
    return;
  }
  if (rc) {
    snprintf(v->warning, sizeof(v->warning), "not fully checked (%.200s); the operator will report problems in status",
             mgop_errmsg());
    v->errored = 1;
  }
  mgop_cell_zone_warnings(&r.root, r.spec, v->warning, sizeof(v->warning));
  if (r.backup_warn[0]) {
    size_t n = strlen(v->warning);
    snprintf(v->warning + n, sizeof(v->warning) - n, "%s%s", n ? "; " : "", r.backup_warn);
  }
  if ((r.tls.internal || r.tls.cn[0]) && !strcmp(r.tls.issuer, MGOP_TLS_DEFAULT_ISSUER) &&
      !mgop_json_is(&r.root, mgop_json_key(&r.root, r.spec, "issuerName"), JSMN_STRING)) {
    size_t n = strlen(v->warning); /* the reference's default, which few clusters have */
    snprintf(v->warning + n, sizeof(v->warning) - n, "%sspec.issuerName is unset: the certificates come from the "
             "ClusterIssuer " MGOP_TLS_DEFAULT_ISSUER " (the reference operator's default); set it to your ClusterIssuer",
             n ? "; " : "");
  }
}

/* The deletion-policy annotation: Orphan or Delete (the default when
 * absent); fixed while a deletion is in progress, since the operator is
 * detaching the data by it (or the garbage collector deleting it). Returns
 * 1 when decided (refused, or a cluster being deleted, which builds
 * nothing more), 0 when the spec is still to be checked. */
static int mgop_admit_deletion_policy(const struct mgop_json *j, int req, const char *op, struct mgop_verdict *v) {
  int obj = mgop_json_key(j, req, "object"), old = mgop_json_key(j, req, "oldObject");
  int now = mgop_json_key(j, mgop_json_path(j, obj, "metadata.annotations"), MGOP_DELETION_POLICY_ANNOTATION);
  int was = mgop_json_key(j, mgop_json_path(j, old, "metadata.annotations"), MGOP_DELETION_POLICY_ANNOTATION);
  char nv[64] = "", ov[64] = "";
  if (now >= 0 && (mgop_json_str(j, now, nv, sizeof(nv)) || (strcmp(nv, "Orphan") && strcmp(nv, "Delete")))) {
    mgop_deny(v, 422, "Invalid", "metadata.annotations[%s] is \"%.40s\": it must be Orphan (keep the data when the "
              "cluster is deleted) or Delete (the default)", MGOP_DELETION_POLICY_ANNOTATION, nv);
    return 1;
  }
  if (strcmp(op, "UPDATE") || mgop_json_path(j, old, "metadata.deletionTimestamp") < 0) return 0;
  if (was >= 0) mgop_json_str(j, was, ov, sizeof(ov));
  if (!strcmp(nv, ov)) return 1; /* a cluster being deleted builds nothing: no more to check */
  mgop_deny(v, 403, "Forbidden", "metadata.annotations[%s] cannot change while the cluster is being deleted (it was "
            "\"%s\"): the deletion is already acting on it", MGOP_DELETION_POLICY_ANNOTATION, ov[0] ? ov : "unset");
  return 1;
}

static void mgop_admit(const struct mgop_json *j, int req, const char *op, const char *kind, const char *ns,
                       struct mgop_verdict *v) {
  int k = -1;
  for (int i = 0; i < K_COUNT; i++)
    if (!strcmp(mgop_kinds[i].kind, kind)) k = i;
  v->allowed = 1;
  if (k < 0) return;
  if (mgop_kinds[k].role == MGOP_ROLE_CHILD && strcmp(op, "DELETE")) {
    char user[256] = "";
    mgop_json_path_str(j, req, "userInfo.username", user, sizeof(user));
    if (!mgop_wh.operator_user[0] || !strcmp(user, mgop_wh.operator_user) ||
        !strcmp(user, "system:serviceaccount:kube-system:generic-garbage-collector") ||
        !strcmp(user, "system:serviceaccount:kube-system:namespace-controller"))
      return;
    mgop_deny(v, 403, "Forbidden", "%s resources are owned by the multigres operator and read-only: change the "
              "MultigresCluster (or its templates) instead; the operator reverts edits to children", kind);
    return;
  }
  if (mgop_kinds[k].role == MGOP_ROLE_CHILD) { /* DELETE */
    int old = mgop_json_key(j, req, "oldObject");
    int labels = mgop_json_path(j, old, "metadata.labels");
    char user[256] = "", policy[16] = "", cluster[64] = "";
    mgop_json_path_str(j, req, "userInfo.username", user, sizeof(user));
    if (mgop_wh.operator_user[0] && !strcmp(user, mgop_wh.operator_user)) return; /* prune */
    if (mgop_json_str(j, mgop_json_key(j, labels, "multigres.com/deletion-policy"), policy, sizeof(policy)) ||
        strcmp(policy, "Orphan"))
      return;
    mgop_json_str(j, mgop_json_key(j, labels, "multigres.com/cluster"), cluster, sizeof(cluster));
    mgop_deny(v, 403, "Forbidden", "%s belongs to MultigresCluster %s, whose deletion-policy is Orphan: it can be "
              "deleted only after the operator has detached the data its workloads hold (the cluster's deletion does "
              "that; the garbage collector retries)", kind, cluster);
    return;
  }
  if (mgop_kinds[k].role == MGOP_ROLE_TEMPLATE && !strcmp(op, "DELETE")) {
    int old = mgop_json_key(j, req, "oldObject"), cons = mgop_json_path(j, old, "status.consumers");
    char name[254] = "", list[400] = "";
    if (!mgop_json_is(j, cons, JSMN_ARRAY) || j->tok[cons].size == 0) return;
    mgop_json_path_str(j, old, "metadata.name", name, sizeof(name));
    for (int i = 0; i < j->tok[cons].size && strlen(list) < sizeof(list) - 80; i++) {
      char c[64];
      if (mgop_json_str(j, mgop_json_at(j, cons, i), c, sizeof(c)) == MGOP_OK)
        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "", c);
    }
    mgop_deny(v, 403, "Forbidden", "%s \"%s\" is in use by MultigresCluster%s %s (status.consumers); point %s at "
              "another template or set the values inline, then delete it", kind, name,
              j->tok[cons].size > 1 ? "s" : "", list, j->tok[cons].size > 1 ? "them" : "it");
    return;
  }
  if (k == K_SHARDT && (!strcmp(op, "CREATE") || !strcmp(op, "UPDATE"))) { /* before any cluster uses it */
    int pc = mgop_json_path(j, mgop_json_key(j, req, "object"), "spec.postgresConfig");
    int pools = mgop_json_path(j, mgop_json_key(j, req, "object"), "spec.pools");
    for (int i = 0, kt = pools + 1; mgop_json_is(j, pools, JSMN_OBJECT) && i < j->tok[pools].size;
         i++, kt = mgop_json_next(j, kt + 1)) {
      char pool[64] = "", type[16];
      mgop_json_str(j, kt, pool, sizeof(pool));
      if (mgop_pool_type_refused(j, kt + 1, type, sizeof(type))) {
        mgop_deny(v, 422, "Invalid", "spec.pools.%s.type is \"%s\": " MGOP_POOL_TYPE_WHY, pool, type);
        return;
      }
    }
    for (int i = 0, kt = pc + 1; mgop_json_is(j, pc, JSMN_OBJECT) && i < j->tok[pc].size; i++, kt = mgop_json_next(j, kt + 1)) {
      char key[128], why[300];
      if (mgop_json_str(j, kt, key, sizeof(key))) key[0] = 0;
      if (mgop_pg_param_check(key, why, sizeof(why))) {
        mgop_deny(v, 422, "Invalid", "spec.postgresConfig: %s", why);
        return;
      }
    }
  }
  if (k == K_CLUSTER && (!strcmp(op, "CREATE") || !strcmp(op, "UPDATE"))) {
    if (mgop_admit_deletion_policy(j, req, op, v)) return;
    mgop_admit_cluster(j, mgop_json_key(j, req, "object"), ns, v);
  }
}

/* The admission span's attributes; an admitted change to a cluster
 * leaves its trace for the reconcile of that generation (dry runs do not:
 * nothing will be reconciled). */
static void mgop_admit_trace(const struct mgop_json *j, int rq, const char *op, const char *kind, const char *ns,
                             const char *review_uid, const struct mgop_verdict *v, struct mgop_span *span) {
  int obj = mgop_json_key(j, rq, strcmp(op, "DELETE") ? "object" : "oldObject");
  char name[254] = "", uid[40] = "";
  long long generation = 0;
  int dry = 0;
  if (!mgop_trace_on()) return;
  mgop_json_bool(j, mgop_json_key(j, rq, "dryRun"), &dry);
  mgop_json_path_str(j, rq, "name", name, sizeof(name));
  mgop_span_str(span, "k8s.resource.kind", kind);
  mgop_span_str(span, "k8s.namespace", ns);
  mgop_span_str(span, "k8s.resource.name", name);
  mgop_span_str(span, "admission.operation", op);
  mgop_span_str(span, "admission.uid", review_uid);
  mgop_span_bool(span, "admission.dry_run", dry);
  mgop_span_bool(span, "admission.allowed", v->allowed);
  if (!v->allowed) mgop_span_str(span, "admission.message", v->message);
  if (v->warning[0]) mgop_span_bool(span, "admission.warnings", 1);
  if (v->errored) mgop_span_error(span, "admitted unchecked: %s", v->warning);
  if (dry || !v->allowed || strcmp(kind, "MultigresCluster") || (strcmp(op, "CREATE") && strcmp(op, "UPDATE"))) return;
  mgop_json_path_str(j, obj, "metadata.uid", uid, sizeof(uid));
  mgop_json_i64(j, mgop_json_path(j, obj, "metadata.generation"), &generation);
  if (!strcmp(op, "UPDATE")) { /* a metadata-only update (kubectl annotate) causes no reconcile of note */
    long long old_generation = -1;
    mgop_json_i64(j, mgop_json_path(j, mgop_json_key(j, rq, "oldObject"), "metadata.generation"), &old_generation);
    if (old_generation == generation) return;
  }
  mgop_trace_link_record(uid, generation, &span->ctx);
}

/* POST /validate: an AdmissionReview in, the same with a response out. */
static void mgop_serve_webhook(void *ctx, const struct mgop_http_req *req, const char *body, size_t body_len,
                               struct mgop_srv_resp *resp) {
  struct mgop_json j;
  struct mgop_verdict v;
  struct mgop_jw w;
  char uid[64] = "", op[16] = "", kind[48] = "", ns[64] = "";
  int rq, opi = 3, ki = -1;
  long long t0 = mgop_now_us();
  struct mgop_span span;
  (void)ctx;
  memset(&v, 0, sizeof(v));
  if (!strcmp(req->path, "/healthz") || !strcmp(req->path, "/readyz")) {
    mgop_buf_puts(&resp->body, "ok\n");
    resp->status = 200;
    return;
  }
  if (strcmp(req->path, "/validate")) {
    resp->status = 404;
    mgop_buf_puts(&resp->body, "not found; the webhook is POST /validate\n");
    return;
  }
  if (strcmp(req->method, "POST")) {
    resp->status = 405;
    snprintf(resp->headers, sizeof(resp->headers), "Allow: POST\r\n");
    return;
  }
  if (!mgop_admit_arena.base) mgop_arena_init(&mgop_admit_arena, mgop_admit_arena_mem, sizeof(mgop_admit_arena_mem));
  mgop_arena_reset(&mgop_admit_arena);
  mgop_span_begin(&span, "Webhook.Validate", MGOP_SPAN_SERVER, NULL);
  mgop_span_str(&span, "http.route", "/validate");
  if (mgop_parse_arena(&mgop_admit_arena, body, body_len, &j) || (rq = mgop_json_key(&j, 0, "request")) < 0 ||
      mgop_json_path_str(&j, rq, "uid", uid, sizeof(uid))) {
    resp->status = 400;
    snprintf(resp->content_type, sizeof(resp->content_type), "text/plain; charset=utf-8");
    mgop_buf_puts(&resp->body, "expected an admission.k8s.io/v1 AdmissionReview with request.uid\n");
    mgop_span_error(&span, "not an AdmissionReview with request.uid");
    mgop_span_end(&span);
    return;
  }
  mgop_json_path_str(&j, rq, "operation", op, sizeof(op));
  mgop_json_path_str(&j, rq, "kind.kind", kind, sizeof(kind));
  mgop_json_path_str(&j, rq, "namespace", ns, sizeof(ns));
  mgop_admit(&j, rq, op, kind, ns, &v);
  mgop_admit_trace(&j, rq, op, kind, ns, uid, &v, &span);
  mgop_arena_reset(&mgop_admit_arena);
  snprintf(resp->content_type, sizeof(resp->content_type), "application/json");
  mgop_jw_init(&w, &resp->body);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "apiVersion"); mgop_jw_str(&w, "admission.k8s.io/v1");
  mgop_jw_key(&w, "kind"); mgop_jw_str(&w, "AdmissionReview");
  mgop_jw_key(&w, "response"); mgop_jw_obj(&w);
  mgop_jw_key(&w, "uid"); mgop_jw_str(&w, uid);
  mgop_jw_key(&w, "allowed"); mgop_jw_bool(&w, v.allowed);
  if (!v.allowed) {
    mgop_jw_key(&w, "status"); mgop_jw_obj(&w);
    mgop_jw_key(&w, "code"); mgop_jw_i64(&w, v.code);
    mgop_jw_key(&w, "reason"); mgop_jw_str(&w, v.reason);
    mgop_jw_key(&w, "message"); mgop_jw_str(&w, v.message);
    mgop_jw_obj_end(&w);
  }
  if (v.warning[0]) {
    mgop_jw_key(&w, "warnings"); mgop_jw_arr(&w);
    mgop_jw_str(&w, v.warning);
    mgop_jw_arr_end(&w);
  }
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  resp->status = 200;
  for (int i = 0; i < 4; i++)
    if (!strcmp(op, mgop_wh_ops[i])) opi = i;
  for (int i = 0; i <= K_SHARD; i++) /* the eight multigres.com kinds come first in the table */
    if (!strcmp(kind, mgop_kinds[i].kind)) ki = i;
  if (ki >= 0) {
    pthread_mutex_lock(&mgop_wh_metrics.mu);
    mgop_wh_metrics.c.total[opi][ki][v.errored ? 2 : v.allowed ? 0 : 1]++;
    mgop_histogram_observe(&mgop_wh_metrics.c.latency[opi][ki], (double)(mgop_now_us() - t0) / 1e6);
    pthread_mutex_unlock(&mgop_wh_metrics.mu);
  }
  MGOP_LOG(v.allowed ? MGOP_DEBUG : MGOP_INFO, ("webhook: %s %s %s/%s: %s%s%s", op, kind, ns, uid,
                                                v.allowed ? "allowed" : "denied: ", v.allowed ? "" : v.message,
                                                v.warning[0] ? " (warning)" : ""));
  mgop_span_end(&span);
}

/* ======================================================================
 * 12. Metrics
 * Prometheus text exposition (version 0.0.4) from fixed tables: labelled
 * gauges owned by a cluster (dropped with it), the reconcile counters and
 * latency histograms per controller, and the process's own figures.
 * ==================================================================== */
static void mgop_metric_head(struct mgop_buf *b, const char *name, const char *type, const char *help) {
  mgop_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void mgop_histogram_write(struct mgop_buf *b, const char *name, const char *labels,
                                 const struct mgop_histogram *h) {
  for (int i = 0; i < MGOP_NBUCKETS; i++)
    mgop_buf_printf(b, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels, mgop_buckets[i], h->bucket[i]);
  mgop_buf_printf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels, h->count);
  mgop_buf_printf(b, "%s_sum{%s} %.6f\n", name, labels, h->sum);
  mgop_buf_printf(b, "%s_count{%s} %llu\n", name, labels, h->count);
}

static long mgop_rss_bytes(void) {
  char buf[128];
  long pages = 0, rss = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f) return -1;
  if (!fgets(buf, sizeof(buf), f) || sscanf(buf, "%ld %ld", &pages, &rss) != 2) rss = -1;
  fclose(f);
  return rss < 0 ? -1 : rss * sysconf(_SC_PAGESIZE);
}


/* Every metric, as text. On the serving thread: what the loop counts is
 * read from its last mgop_publish(), under mgop_shared.mu. */
static void mgop_metrics_render_locked(struct mgop_buf *b);
static void mgop_metrics_render(struct mgop_buf *b) {
  pthread_mutex_lock(&mgop_shared.mu);
  mgop_metrics_render_locked(b);
  pthread_mutex_unlock(&mgop_shared.mu);
}

static void mgop_metrics_render_locked(struct mgop_buf *b) {
  static const char *const hist_names[] = {"controller_runtime_reconcile_time_seconds",
                                           "multigres_reconciliation_duration_seconds"};
  struct mgop_wh_counts wh;
  char l[96];
  mgop_metric_head(b, "controller_runtime_reconcile_total", "counter", "Reconcile turns per controller and result.");
  for (int c = 0; c < MGOP_C_COUNT; c++) {
    mgop_buf_printf(b, "controller_runtime_reconcile_total{controller=\"%s\",result=\"success\"} %llu\n",
                    mgop_controller_names[c], mgop_stats.success[c]);
    mgop_buf_printf(b, "controller_runtime_reconcile_total{controller=\"%s\",result=\"error\"} %llu\n",
                    mgop_controller_names[c], mgop_stats.error[c]);
    mgop_buf_printf(b, "controller_runtime_reconcile_total{controller=\"%s\",result=\"requeue\"} %llu\n",
                    mgop_controller_names[c], mgop_stats.requeue[c]);
  }
  mgop_metric_head(b, "controller_runtime_reconcile_errors_total", "counter", "Reconcile turns that failed.");
  for (int c = 0; c < MGOP_C_COUNT; c++)
    mgop_buf_printf(b, "controller_runtime_reconcile_errors_total{controller=\"%s\"} %llu\n", mgop_controller_names[c],
                    mgop_stats.error[c]);
  for (int h = 0; h < 2; h++) {
    mgop_metric_head(b, hist_names[h], "histogram",
                     h ? "Reconcile latency per controller (seed 000 name)." : "Reconcile latency per controller.");
    for (int c = 0; c < MGOP_C_COUNT; c++) {
      snprintf(l, sizeof(l), "controller=\"%s\"", mgop_controller_names[c]);
      mgop_histogram_write(b, hist_names[h], l, &mgop_stats.latency[c]);
    }
  }
  mgop_metric_head(b, "workqueue_depth", "gauge", "Roots waiting in the work set.");
  mgop_buf_printf(b, "workqueue_depth{name=\"multigres\"} %zu\n", mgop_shared.work_depth);
  mgop_metric_head(b, "workqueue_adds_total", "counter", "Roots added to the work set.");
  mgop_buf_printf(b, "workqueue_adds_total{name=\"multigres\"} %llu\n", mgop_stats.adds);
  mgop_metric_head(b, "multigres_operator_crd_schema_outdated", "gauge",
                   "1 while the installed CRDs are older than this operator: it reconciles nothing.");
  mgop_buf_printf(b, "multigres_operator_crd_schema_outdated %d\n", mgop_shared.crd_outdated);
  mgop_metric_head(b, "leader_election_master_status", "gauge", "1 while this replica holds the Lease.");
  mgop_buf_printf(b, "leader_election_master_status{name=\"%s\"} %d\n",
                  mgop_lease.enabled ? mgop_lease.name : "disabled", mgop_may_write() ? 1 : 0);

  for (size_t f = 0; f < sizeof(mgop_families) / sizeof(mgop_families[0]); f++) {
    mgop_metric_head(b, mgop_families[f].name, "gauge", mgop_families[f].help);
    for (size_t i = 0; i < mgop_series_used; i++)
      if (mgop_series[i].family == mgop_families[f].name)
        mgop_buf_printf(b, "%s{%s} %g\n", mgop_families[f].name, mgop_series[i].labels, mgop_series[i].value);
  }

  mgop_wh_counts_get(&wh);
  mgop_metric_head(b, "multigres_operator_webhook_request_total", "counter", "Admission requests, by result.");
  for (int o = 0; o < 4; o++)
    for (int k = 0; k <= K_SHARD; k++)
      for (int res = 0; res < 3; res++)
        if (wh.total[o][k][res])
          mgop_buf_printf(b, "multigres_operator_webhook_request_total{operation=\"%s\",resource=\"%s\",result=\"%s\"} %llu\n",
                          mgop_wh_ops[o], mgop_kinds[k].plural, mgop_wh_results[res], wh.total[o][k][res]);
  mgop_metric_head(b, "multigres_operator_webhook_request_duration_seconds", "histogram", "Admission latency.");
  for (int o = 0; o < 4; o++)
    for (int k = 0; k <= K_SHARD; k++)
      if (wh.latency[o][k].count) {
        snprintf(l, sizeof(l), "operation=\"%s\",resource=\"%s\"", mgop_wh_ops[o], mgop_kinds[k].plural);
        mgop_histogram_write(b, "multigres_operator_webhook_request_duration_seconds", l, &wh.latency[o][k]);
      }
  mgop_metric_head(b, "multigres_operator_webhook_certificate_expiry_seconds", "gauge",
                   "Unix time the served webhook certificate expires (0: none yet).");
  {
    long long na = 0;
    if (mgop_wh.serial[0]) mgop_pki_not_after(mgop_wh.serving_cert, strlen(mgop_wh.serving_cert), &na);
    mgop_buf_printf(b, "multigres_operator_webhook_certificate_expiry_seconds %lld\n", na);
  }
  mgop_metric_head(b, "multigres_operator_api_requests_total", "counter", "Requests to the API server, by kind.");
  mgop_buf_printf(b, "multigres_operator_api_requests_total{kind=\"all\"} %llu\n", mgop_shared.api.requests);
  mgop_buf_printf(b, "multigres_operator_api_requests_total{kind=\"write\"} %llu\n", mgop_shared.api.writes);
  mgop_buf_printf(b, "multigres_operator_api_requests_total{kind=\"error\"} %llu\n", mgop_shared.api.errors);
  mgop_metric_head(b, "multigres_operator_watch_events_total", "counter", "Watch events received, per kind.");
  for (int k = 0; k < K_COUNT; k++)
    mgop_buf_printf(b, "multigres_operator_watch_events_total{kind=\"%s\"} %llu\n", mgop_kinds[k].kind,
                    mgop_shared.watch_events[k]);
  mgop_metric_head(b, "multigres_operator_watch_relists_total", "counter", "Full LISTs after a 410 or a lost stream.");
  for (int k = 0; k < K_COUNT; k++)
    mgop_buf_printf(b, "multigres_operator_watch_relists_total{kind=\"%s\"} %llu\n", mgop_kinds[k].kind,
                    mgop_shared.watch_relists[k]);
  mgop_metric_head(b, "multigres_operator_pruned_objects_total", "counter",
                   "Objects deleted because their cluster's spec no longer has them.");
  mgop_buf_printf(b, "multigres_operator_pruned_objects_total %llu\n", mgop_stats.pruned);
  mgop_metric_head(b, "multigres_operator_reclaims_total", "counter",
                   "Re-created clusters that found orphans of a deleted cluster of their name: adopted, or refused "
                   "(an incompatible spec; counted per turn).");
  mgop_buf_printf(b, "multigres_operator_reclaims_total{result=\"adopted\"} %llu\n", mgop_stats.reclaims_adopted);
  mgop_buf_printf(b, "multigres_operator_reclaims_total{result=\"refused\"} %llu\n", mgop_stats.reclaims_refused);
  mgop_metric_head(b, "multigres_operator_fingerprints", "gauge", "Rows in use in the fingerprint table.");
  mgop_buf_printf(b, "multigres_operator_fingerprints %zu\n", mgop_shared.fingerprints);
  mgop_metric_head(b, "multigres_operator_metric_series_dropped_total", "counter",
                   "Gauge updates lost because the series table was full.");
  mgop_buf_printf(b, "multigres_operator_metric_series_dropped_total %llu\n", mgop_series_full);
  mgop_metric_head(b, "multigres_operator_limit_reached_total", "counter",
                   "Times a fixed bound was reached (each also stalls the cluster or logs an error naming it).");
  for (int i = 0; i < MGOP_L_COUNT; i++)
    mgop_buf_printf(b, "multigres_operator_limit_reached_total{limit=\"%s\"} %llu\n", mgop_limit_names[i],
                    __atomic_load_n(&mgop_limit_hits[i], __ATOMIC_RELAXED));
  mgop_metric_head(b, "multigres_operator_arena_high_water_bytes", "gauge", "Most reconcile arena bytes ever in use.");
  mgop_buf_printf(b, "multigres_operator_arena_high_water_bytes %zu\n", mgop_shared.arena_high);
  mgop_metric_head(b, "multigres_operator_template_cache_refused_total", "counter",
                   "Templates admission cannot check: the template cache had no room for them.");
  mgop_buf_printf(b, "multigres_operator_template_cache_refused_total %llu\n",
                  __atomic_load_n(&mgop_tcache.refused, __ATOMIC_RELAXED));
  mgop_metric_head(b, "multigres_operator_tls_heap_high_water_bytes", "gauge", "Most mbedTLS heap bytes ever in use.");
  mgop_buf_printf(b, "multigres_operator_tls_heap_high_water_bytes %zu\n", mgop_tls_heap_high_water());
  {
    unsigned long long full, resumed;
    mgop_tls_handshakes(&full, &resumed);
    mgop_metric_head(b, "multigres_operator_tls_handshakes_total", "counter",
                     "TLS handshakes of the operator's clients: full, or resumed from a TLS 1.3 session ticket.");
    mgop_buf_printf(b, "multigres_operator_tls_handshakes_total{resumed=\"false\"} %llu\n", full);
    mgop_buf_printf(b, "multigres_operator_tls_handshakes_total{resumed=\"true\"} %llu\n", resumed);
  }
  {
    struct mgop_trace_stats ts;
    mgop_trace_get_stats(&ts);
    mgop_metric_head(b, "multigres_operator_trace_spans_total", "counter",
                     "The operator's own spans (OTLP tracing): exported, or dropped and why.");
    mgop_buf_printf(b, "multigres_operator_trace_spans_total{outcome=\"exported\"} %llu\n", ts.exported);
    mgop_buf_printf(b, "multigres_operator_trace_spans_total{outcome=\"queue_full\"} %llu\n", ts.dropped_full);
    mgop_buf_printf(b, "multigres_operator_trace_spans_total{outcome=\"export_failed\"} %llu\n", ts.dropped_failed);
    mgop_buf_printf(b, "multigres_operator_trace_spans_total{outcome=\"rejected\"} %llu\n", ts.dropped_rejected);
    mgop_metric_head(b, "multigres_operator_trace_export_requests_total", "counter",
                     "OTLP export requests to the collector, and those that failed (each retry counts).");
    mgop_buf_printf(b, "multigres_operator_trace_export_requests_total{result=\"all\"} %llu\n", ts.requests);
    mgop_buf_printf(b, "multigres_operator_trace_export_requests_total{result=\"error\"} %llu\n", ts.failures);
  }
  mgop_metric_head(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  mgop_buf_printf(b, "process_resident_memory_bytes %ld\n", mgop_rss_bytes());
  mgop_metric_head(b, "process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch.");
  mgop_buf_printf(b, "process_start_time_seconds %lld\n", mgop_stats.start_s);
}

/* On the loop: every watch has listed once. */
static int mgop_synced(void) {
  for (int k = 0; k < K_COUNT; k++)
    if (!mgop_server.watches[k].rv[0] && mgop_server.watches[k].state != MGOP_W_ABSENT) return 0; /* not listed once yet */
  return 1;
}

/* On the loop, after every turn: what the serving thread may show. */
static void mgop_publish(void) {
  int templates_listed = mgop_server.watches[K_CORET].rv[0] && mgop_server.watches[K_CELLT].rv[0] && mgop_server.watches[K_SHARDT].rv[0];
  pthread_mutex_lock(&mgop_shared.mu);
  mgop_shared.api = mgop_server.api.stats;
  for (int k = 0; k < K_COUNT; k++) {
    mgop_shared.watch_events[k] = mgop_server.watches[k].events;
    mgop_shared.watch_relists[k] = mgop_server.watches[k].relists;
  }
  mgop_shared.fingerprints = mgop_fp_count();
  mgop_shared.work_depth = mgop_work_depth();
  mgop_shared.arena_high = mgop_server.arena.high;
  pthread_mutex_unlock(&mgop_shared.mu);
  if (templates_listed != mgop_tcache.synced) { /* a relist in progress does not unsync: rows stay until swept */
    pthread_rwlock_wrlock(&mgop_tcache.lock);
    mgop_tcache.synced = templates_listed;
    pthread_rwlock_unlock(&mgop_tcache.lock);
  }
  __atomic_store_n(&mgop_shared.synced, mgop_synced(), __ATOMIC_RELEASE);
  __atomic_store_n(&mgop_shared.beat_ms, mgop_now_ms(), __ATOMIC_RELEASE);
}

/* /metrics on the metrics address; /healthz and /readyz on the probe
 * address. Every replica serves them, leader or not, from the serving
 * thread: /healthz says the loop turns (it turned, or sent a request,
 * within MGOP_HEALTHZ_STALL_MS); /readyz that the watches are synced and
 * leader election works (this replica holds the Lease or sees who does). */
#define MGOP_HEALTHZ_STALL_MS 120000
static void mgop_serve_http(void *ctx, const struct mgop_http_req *req, const char *body, size_t body_len,
                            struct mgop_srv_resp *resp) {
  (void)ctx, (void)body, (void)body_len;
  if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
    resp->status = 405;
    snprintf(resp->headers, sizeof(resp->headers), "Allow: GET, HEAD\r\n");
    return;
  }
  snprintf(resp->content_type, sizeof(resp->content_type), "text/plain; charset=utf-8");
  if (!strcmp(req->path, "/metrics")) {
    snprintf(resp->content_type, sizeof(resp->content_type), "text/plain; version=0.0.4; charset=utf-8");
    mgop_metrics_render(&resp->body);
    resp->status = 200;
  } else if (!strcmp(req->path, "/healthz") || !strcmp(req->path, "/livez")) {
    long long idle = mgop_now_ms() - __atomic_load_n(&mgop_shared.beat_ms, __ATOMIC_ACQUIRE);
    int live = idle < MGOP_HEALTHZ_STALL_MS;
    if (live) mgop_buf_puts(&resp->body, "ok\n");
    else mgop_buf_printf(&resp->body, "the reconcile loop has not turned for %lld s\n", idle / 1000);
    resp->status = live ? 200 : 503;
  } else if (!strcmp(req->path, "/readyz")) {
    int synced = __atomic_load_n(&mgop_shared.synced, __ATOMIC_ACQUIRE), lease = mgop_lease_healthy(), crd_ok;
    pthread_mutex_lock(&mgop_shared.mu);
    crd_ok = !mgop_shared.crd_outdated;
    if (!crd_ok) mgop_buf_printf(&resp->body, "not reconciling: %s\n", mgop_shared.crd_msg);
    pthread_mutex_unlock(&mgop_shared.mu);
    if (crd_ok && synced && lease)
      mgop_buf_printf(&resp->body, "ok: watches synced; %s\n", !mgop_lease.enabled ? "no leader election"
                                                               : mgop_may_write() ? "leader" : "standby");
    else if (crd_ok)
      mgop_buf_printf(&resp->body, "%s%s%s\n", synced ? "" : "watches not synced yet", !synced && !lease ? "; " : "",
                      lease ? "" : "the Lease could not be read or renewed recently");
    resp->status = crd_ok && synced && lease ? 200 : 503;
  } else {
    mgop_buf_puts(&resp->body, "not found; try /metrics, /healthz or /readyz\n");
    resp->status = 404;
  }
}

/* ======================================================================
 * 13. The loop
 * ==================================================================== */
/* Three threads and the apply workers, each with its own API connection
 * where it needs one (and two more when asked: the trace exporter and the
 * secure metrics server):
 *   the loop     (main thread) watches, reconciles, rotates certificates;
 *                it owns every table of sections 3-9, the watches and
 *                mgop_server.api, and the etcd client of the topology
 *                records (mgop_topo_etcd, its response buffers in 2.10).
 *                It alone takes signals.
 *   serving      the webhook, /metrics, /healthz and /readyz servers. It
 *                makes no API call: admission reads the template cache.
 *   Lease        acquires and renews the Lease on mgop_lease.api.
 *   exporter     POSTs ended spans to the OTLP collector (multigres-op.h
 *                2.12); spans reach it only through the tracer's queue.
 *   metrics      with --metrics-secure only: /metrics over TLS, the token
 *                reviews on mgop_msec.api and their cache, all its own.
 *   apply workers (--max-applies-in-flight minus 1) send a phase's
 *                applies beside the loop's own (mgop_server.pool); each
 *                client and response buffer is the worker's own. When
 *                several kinds are due to be listed (at start), they list
 *                some of them beside the loop (mgop_loop_lists).
 *   backup checker  from the first shard's check: multiadmin's GetBackups,
 *                one at a time, for the loop (mgop_bhc, section 5).
 *   CRD look     at start only, from set-up on (before the SelfSubjectReview):
 *                the CRDs' schema versions on a client of its own
 *                (mgop_crd_first), pipelined; the loop takes the result
 *                once its done flag (atomic) is set, and joins it.
 * What crosses threads, and how (nothing else does):
 *   - mgop_shared.mu guards mgop_shared's plain fields, the metric series
 *     and mgop_stats: the loop writes them, the serving thread (or the
 *     secure metrics thread) renders them; also the webhook's served
 *     certificate, which the serving thread writes under it;
 *   - mgop_wh_metrics.mu guards the webhook's own counters: the serving
 *     thread counts, /metrics copies them out; the loop never takes it;
 *   - mgop_tcache.lock (rwlock) guards the template cache;
 *   - mgop_trace_links.mu guards the admission -> reconcile trace links
 *     (serving writes, loop reads);
 *   - mgop_sts_facts.mu guards the StatefulSets' storage sizes and etcd
 *     members: the loop records them from its watch, admission reads them
 *     (the fp table itself is the loop's alone);
 *   - atomics: mgop_shared.synced and .beat_ms (loop -> serving), the
 *     Lease's leading, renewed_ms, seen_ok_ms, new_term, lost, tried (Lease
 *     -> all), mgop_stop_signal and mgop_io_abort (signal -> all);
 *   - mgop_server.pool.mu: a batch of applies (the jobs) handed to the
 *     workers and back; the loop reads the results and the workers' request
 *     counts only after the batch, under it;
 *   - a batch of lists (mgop_watch_list_many, and mgop_early_turn's):
 *     while the loop waits for it, the workers' list items reach the watch
 *     handlers, and so the loop's tables, one at a time under that batch's
 *     mutex, which the loop's own share of the lists takes too;
 *   - the servers' response-buffer slots (multigres-op.h 2.9), under their
 *     own lock: the serving and secure metrics threads both take them;
 *   - name lookups (multigres-op.h 3.5, mgop_dns): one question and its
 *     answer under the resolver's lock, asked by any thread that connects
 *     to a name;
 *   - backup checks (mgop_bhc.mu): the loop puts copies of where to call
 *     in the ask ring, the checker puts verdicts in the answer ring, and
 *     the loop takes them into mgop_bh_table, which stays the loop's alone
 *     (as does the running job); the scheduled backups' and switch-primary
 *     multiadmin calls are made by the loop;
 *   - pipes: stop (main -> every thread), offer (loop -> serving: a new
 *     certificate in mgop_shared.offer), wake (Lease, CRD look, backup
 *     checker -> loop).
 * The serving thread's servers, connections and admission arena are its
 * own; the loop never touches them after start.
 * The builders run on both (admission renders a cluster): their scratch is
 * _Thread_local. */
static int mgop_stop_signal; /* __atomic only: the handler writes, every thread reads */
static void mgop_on_signal(int sig) {
  __atomic_store_n(&mgop_stop_signal, sig, __ATOMIC_RELEASE);
  __atomic_store_n(&mgop_io_abort, 1, __ATOMIC_RELEASE); /* every blocked request gives up within MGOP_IO_SLICE_MS */
}
static int mgop_signalled(void) { return __atomic_load_n(&mgop_stop_signal, __ATOMIC_ACQUIRE); }

#define MGOP_HTTP_CONNS 8 /* per plain-HTTP server: Prometheus and the kubelet */
static struct mgop_srv mgop_http_srv[2];
static struct mgop_srv_conn mgop_http_conns[2][MGOP_HTTP_CONNS];

/* --metrics-secure: /metrics over TLS, on a thread of its own (it makes
 * API requests, which the serving thread never does). A scraper presents a
 * bearer token; TokenReview says who it is and SubjectAccessReview whether
 * it may get the non-resource URL /metrics (the reference operator's
 * filters, and its metrics-reader ClusterRole). Verdicts are cached by the
 * token's SHA-256: allowed for 2 minutes, refused for 30 s; an API server
 * that cannot answer gets 503, not cached. The certificate: tls.crt and
 * tls.key from --metrics-cert-path (re-read when tls.crt changes), else a
 * self-signed pair made at start and renewed 30 days before it expires. */
#define MGOP_MSEC_CACHE 64
#define MGOP_MSEC_ALLOW_S 120
#define MGOP_MSEC_DENY_S 30
#define MGOP_MSEC_REVIEW_MS 2000
#define MGOP_MSEC_VALIDITY_S (365LL * 24 * 3600)
static struct {
  int enabled;
  char cert_path[512];
  long long cert_mtime, next_check_ms;
  struct mgop_kubecfg cfg;     /* its own copy: token reloads are per client */
  struct mgop_kube api;
  struct mgop_pki_pair ca, pair;
  struct mgop_msec_verdict {
    unsigned char hash[32];
    long long until_s;
    int status;                /* 200, 401 or 403 */
    char why[200];
  } cache[MGOP_MSEC_CACHE];
} mgop_msec;

static void *mgop_msec_main(void *arg);

#define MGOP_LOOP_NICE 10 /* the loop's nice value: below the serving and Lease threads */
/* The serving and Lease threads' scheduler slice (mgop_short_slice): under
 * the smallest default (0.75 ms, one CPU), so they are picked first on
 * wake-up on any node, and over twice an answer's CPU (0.25 to 0.4 ms to
 * resolve a cluster at 100), so an answer is not cut short. With 0.1 ms,
 * the answers that took over 1 ms had used 0.3 ms of CPU and been
 * preempted one to three times, each time waiting 1 to 9 ms for a core. */
#define MGOP_SERVING_SLICE_NS 700000
static int mgop_stopping(void) { return mgop_signalled() || __atomic_load_n(&mgop_lease.lost, __ATOMIC_ACQUIRE); }

/* Linux 6.12+ schedules fair threads by EEVDF, and a thread may ask for a
 * shorter slice (sched_attr.sched_runtime): its virtual deadline comes
 * sooner, so on wake-up it is picked before threads on the default slice
 * (0.75 ms times 1 + log2 of the CPUs, up to 8: 1.5 ms on 2 cores). The
 * serving and Lease threads ask for MGOP_SERVING_SLICE_NS, so a review, a
 * probe or a renewal on a busy node does not wait out another thread's
 * slice. It needs no privilege; an older kernel ignores the field or
 * refuses the call, which changes nothing else (logged at debug). */
struct mgop_sched_attr { uint32_t size, policy; uint64_t flags; int32_t nice; uint32_t priority;
                         uint64_t runtime_ns, deadline_ns, period_ns; };
static void mgop_short_slice(const char *who) {
#ifdef SYS_sched_setattr
  struct mgop_sched_attr a = {sizeof(a), 0 /* SCHED_OTHER */, 0, 0, 0, MGOP_SERVING_SLICE_NS, 0, 0};
  if (syscall(SYS_sched_setattr, 0, &a, 0))
    MGOP_LOG(MGOP_DEBUG, ("%s thread: no short scheduler slice: %s", who, strerror(errno)));
#else
  (void)who;
#endif
}

/* The serving thread: poll() over the three servers and two pipes. */
static void *mgop_serve_main(void *arg) {
  (void)arg;
  mgop_short_slice("serving");
  for (;;) {
    struct pollfd pfd[2 + 2 * (MGOP_HTTP_CONNS + 1) + MGOP_WH_CONNS + 1];
    struct mgop_srv *srvs[3] = {mgop_msec.enabled ? NULL : &mgop_http_srv[0], &mgop_http_srv[1],
                                mgop_wh.enabled ? &mgop_wh.srv : NULL};
    int n = 2, at[3], cnt[3];
    long long wait = 1000;
    pfd[0] = (struct pollfd){mgop_shared.stop_pipe[0], POLLIN, 0};
    pfd[1] = (struct pollfd){mgop_shared.offer_pipe[0], POLLIN, 0};
    for (int i = 0; i < 3; i++) {
      at[i] = n;
      cnt[i] = srvs[i] ? mgop_srv_pollfds(srvs[i], pfd + n, (int)(sizeof(pfd) / sizeof(pfd[0])) - n) : 0;
      n += cnt[i];
      long long due = srvs[i] ? mgop_srv_wake_ms(srvs[i], mgop_now_ms()) : wait;
      if (due < wait) wait = due;
    }
    if (poll(pfd, (nfds_t)n, (int)(wait < 0 ? 0 : wait)) < 0 && errno != EINTR) {
      MGOP_LOG(MGOP_ERROR, ("serving thread: poll failed: %s", strerror(errno)));
      break;
    }
    if (pfd[0].revents) break; /* shutdown */
    if (pfd[1].revents) {
      char drain[16];
      struct mgop_pki_pair pair;
      int offered;
      while (read(mgop_shared.offer_pipe[0], drain, sizeof(drain)) > 0) {}
      pthread_mutex_lock(&mgop_shared.mu);
      offered = mgop_shared.offered;
      if (offered) pair = mgop_shared.offer;
      mgop_shared.offered = 0;
      pthread_mutex_unlock(&mgop_shared.mu);
      if (offered) mgop_wh_serve(&pair);
      mbedtls_platform_zeroize(&pair, sizeof(pair));
    }
    for (int i = 0; i < 3; i++)
      if (srvs[i]) mgop_srv_step(srvs[i], pfd + at[i], cnt[i], mgop_now_ms());
  }
  return NULL;
}

/* The Lease thread: renew on time whatever the loop waits on; on
 * shutdown hand the Lease back (a request the stop did not abort). */
static void *mgop_lease_main(void *arg) {
  (void)arg;
  mgop_short_slice("Lease");
  while (!mgop_signalled()) {
    long long due = mgop_lease_step();
    struct pollfd p = {mgop_shared.stop_pipe[0], POLLIN, 0};
    if (due < 0) {
      MGOP_LOG(MGOP_ERROR, ("leader election: Lease %s/%s not renewed for %d ms; stopping all writes and exiting",
                            mgop_lease.ns, mgop_lease.name, MGOP_LEASE_RENEW_DEADLINE_MS));
      __atomic_store_n(&mgop_lease.lost, 1, __ATOMIC_RELEASE);
      __atomic_store_n(&mgop_io_abort, 1, __ATOMIC_RELEASE); /* the loop's request in flight, if any, ends now */
      if (write(mgop_shared.wake_pipe[1], "l", 1) < 0) { /* the loop also polls at least every second */ }
      return NULL;
    }
    if (poll(&p, 1, (int)(due > 60000 ? 60000 : due)) > 0) break;
  }
  mgop_io_unabortable = 1;
  mgop_lease_release();
  return NULL;
}

static int mgop_pipe(int fds[2]) {
  if (pipe(fds)) return -1;
  for (int i = 0; i < 2; i++) {
    fcntl(fds[i], F_SETFL, O_NONBLOCK);
    fcntl(fds[i], F_SETFD, FD_CLOEXEC);
  }
  return 0;
}

/* The trace exporter: batches of ended spans to the collector until told
 * to stop, then one last flush bounded by MGOP_TRACE_FLUSH_MS (beside the
 * Lease's release, inside SIGTERM's 2 s). */
#define MGOP_TRACE_FLUSH_MS 1000
static int mgop_trace_stopping; /* __atomic: main -> exporter */
static void *mgop_trace_main(void *arg) {
  long long deadline;
  (void)arg;
  while (!__atomic_load_n(&mgop_trace_stopping, __ATOMIC_ACQUIRE)) mgop_trace_export_step(0, 0);
  mgop_io_unabortable = 1; /* the signal aborts requests; this one has its own bound */
  deadline = mgop_now_ms() + MGOP_TRACE_FLUSH_MS;
  while (mgop_now_ms() < deadline && mgop_trace_export_step(1, deadline)) {}
  return NULL;
}

static void mgop_trace_stop(pthread_t thread) {
  __atomic_store_n(&mgop_trace_stopping, 1, __ATOMIC_RELEASE);
  mgop_trace_shutdown();
  pthread_join(thread, NULL);
}

/* Starts the threads with SIGTERM/SIGINT blocked, so signals reach the
 * loop (whose poll() they interrupt). */
static int mgop_crd_first_start(void); /* section 13 */
static int mgop_threads_start(pthread_t *serve, pthread_t *lease, pthread_t *trace, pthread_t *msec, int *started) {
  sigset_t old;
  pthread_attr_t attr;
  int rc = 0;
  mgop_block_stop_signals(&old);
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 1024 * 1024); /* admission resolves a whole cluster on it */
  if (pthread_create(serve, &attr, mgop_serve_main, NULL)) rc = mgop_seterr(MGOP_ERR_IO, "cannot start the serving thread");
  else started[0] = 1;
  /* the workers' handshakes go beside the early turn's pick, not before its reads */
  mgop_server.pool.warm = 1;
  if (!rc) rc = mgop_pool_start(&mgop_server.pool);
  if (!rc && mgop_lease.enabled) {
    if (pthread_create(lease, &attr, mgop_lease_main, NULL)) rc = mgop_seterr(MGOP_ERR_IO, "cannot start the Lease thread");
    else started[1] = 1;
  }
  if (!rc && mgop_msec.enabled) {
    if (pthread_create(msec, &attr, mgop_msec_main, NULL)) rc = mgop_seterr(MGOP_ERR_IO, "cannot start the metrics thread");
    else started[3] = 1;
  }
  if (!rc && mgop_trace_on()) {
    if (pthread_create(trace, &attr, mgop_trace_main, NULL)) rc = mgop_seterr(MGOP_ERR_IO, "cannot start the trace exporter");
    else started[2] = 1;
  }
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return rc;
}

struct mgop_options {
  const char *kubeconfig;
  const char *context;
  const char *watch_namespace;
  const char *render_files[16];
  int nrender;
  const char *render_namespace; /* for manifests that name none */
  int leader_elect;
  const char *leader_election_namespace, *leader_election_id;
  const char *metrics_addr, *probe_addr; /* "0": off */
  int webhook_enable, webhook_internal_certs;
  const char *webhook_bind, *webhook_cert_dir, *webhook_service, *webhook_service_ns, *webhook_config,
      *webhook_owner, *webhook_extra_sans;
  long long webhook_cert_validity_s, webhook_ca_validity_s, webhook_check_s;
  size_t max_objects, max_series; /* 0: the defaults */
  int applies_in_flight;      /* --max-applies-in-flight; 0: the default */
  const char *multiadmin_address;
  int zap_devel, zap_level, zap_level_set, zap_json; /* zap_json -1: by the mode */
  int enable_http2;           /* accepted: the servers speak HTTP/1.1 only */
  int metrics_secure;         /* /metrics over TLS, TokenReview + SubjectAccessReview */
  const char *metrics_cert_path; /* its tls.crt/tls.key; unset: a self-signed pair */
  const char *webhook_port;   /* --webhook-port, as ":PORT" */
  const char *webhook_service_account; /* the operator's identity when SelfSubjectReview does not answer */
};

/* The tables sized by flags, allocated once before the threads start:
 * after this the operator allocates nothing (section 1). */
static int mgop_tables_init(const struct mgop_options *opt) {
  if (mgop_fp_init(opt->max_objects ? opt->max_objects : MGOP_FP_SLOTS_DEFAULT) || mgop_sts_facts_init() ||
      mgop_series_init(opt->max_series ? opt->max_series : MGOP_SERIES_DEFAULT))
    return -1;
  /* /metrics is answered from one big buffer: every series at its widest
   * (family, labels, value) beside the fixed part */
  if (mgop_srv_pool_init(64 * 1024 + mgop_series_cap * (64 + MGOP_LABELS_MAX + 32))) return -1;
  MGOP_LOG(MGOP_INFO, ("tables: %zu object rows (--max-objects), %zu StatefulSet rows, %zu metric series "
                       "(--max-metric-series)", mgop_fp_slots(), mgop_sts_facts.cap, mgop_series_cap));
  return 0;
}

/* Leader election's identity and its own API client (--leader-elect). */
static int mgop_lease_setup(const struct mgop_options *opt) {
  char host[64] = "";
  unsigned char rnd[8] = {0};
  char hex[17];
  gethostname(host, sizeof(host) - 1);
  mgop_lease.enabled = 1;
  snprintf(mgop_lease.ns, sizeof(mgop_lease.ns), "%s",
           opt->leader_election_namespace ? opt->leader_election_namespace
           : mgop_server.cfg.namespace_[0]       ? mgop_server.cfg.namespace_
                                          : "multigres-operator");
  snprintf(mgop_lease.name, sizeof(mgop_lease.name), "%s",
           opt->leader_election_id ? opt->leader_election_id : "multigres-operator.multigres.com");
  /* hostname_random, like client-go: two replicas must never share one */
  if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) { /* no getrandom: time, pid, address */
    unsigned long long x = (unsigned long long)mgop_now_ms() * 1000003ull ^ (unsigned long long)getpid() << 32 ^
                           (unsigned long long)(uintptr_t)&rnd;
    memcpy(rnd, &x, sizeof(rnd));
  }
  for (int i = 0; i < 8; i++) snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
  snprintf(mgop_lease.identity, sizeof(mgop_lease.identity), "%s_%s", host[0] ? host : "multigres-op", hex);
  mgop_kubecfg_copy(&mgop_lease.cfg, &mgop_server.cfg); /* its own token reloads, its own connection */
  if (mgop_kube_init(&mgop_lease.api, &mgop_lease.cfg)) {
    MGOP_LOG(MGOP_ERROR, ("cannot set up the Lease's API client: %s", mgop_errmsg()));
    return 2;
  }
  MGOP_LOG(MGOP_INFO, ("leader election: %s waits for Lease %s/%s", mgop_lease.identity, mgop_lease.ns,
                       mgop_lease.name));
  return 0;
}

/* The admission webhook's server (HTTPS; no connection is accepted before
 * a certificate is installed). */
static int mgop_webhook_setup(const struct mgop_options *opt) {
  snprintf(mgop_wh.ns, sizeof(mgop_wh.ns), "%s",
           opt->webhook_service_ns ? opt->webhook_service_ns
           : mgop_server.cfg.namespace_[0] ? mgop_server.cfg.namespace_ : "multigres-operator");
  mgop_wh.enabled = 1;
  snprintf(mgop_wh.service_account, sizeof(mgop_wh.service_account), "%s",
           opt->webhook_service_account ? opt->webhook_service_account : "");
  if (opt->enable_http2)
    MGOP_LOG(MGOP_INFO, ("--enable-http2: the webhook, metrics and probe servers speak HTTP/1.1 only (TLS offers "
                         "no h2), so clients use HTTP/1.1"));
  mgop_wh.internal_certs = opt->webhook_internal_certs;
  mgop_wh.cert_dir = opt->webhook_cert_dir;
  mgop_wh.service = opt->webhook_service;
  mgop_wh.config_name = opt->webhook_config;
  mgop_wh.owner_deployment = opt->webhook_owner;
  mgop_wh.ca_validity_s = opt->webhook_ca_validity_s;
  mgop_wh.cert_validity_s = opt->webhook_cert_validity_s;
  mgop_wh.check_ms = opt->webhook_check_s * 1000;
  snprintf(mgop_wh.extra_sans, sizeof(mgop_wh.extra_sans), "%s", opt->webhook_extra_sans ? opt->webhook_extra_sans : "");
  for (char *c = mgop_wh.extra_sans; *c; c++)
    if (*c == ',') *c = 0; /* NUL-separated list, read by mgop_wh_names */
  mgop_srv_init(&mgop_wh.srv, "webhook", 1, mgop_wh.conns, MGOP_WH_CONNS, mgop_serve_webhook, NULL);
  if (mgop_srv_listen(&mgop_wh.srv, opt->webhook_bind)) {
    MGOP_LOG(MGOP_ERROR, ("cannot serve the webhook on %s: %s; free the port or pass --webhook-enable=false",
                          opt->webhook_bind, mgop_errmsg()));
    return 2;
  }
  MGOP_LOG(MGOP_INFO, ("serving the admission webhook on %s (port %d), certificates %s", opt->webhook_bind,
                       mgop_srv_port(&mgop_wh.srv), mgop_wh.internal_certs ? "built in" : opt->webhook_cert_dir));
  return 0;
}

/* The served pair: from --metrics-cert-path, or self-signed. 0 when
 * nothing changed or it was replaced; -1 on error (logged). */
static int mgop_msec_cert(int first) {
  long long now_s = (long long)time(NULL);
  if (mgop_msec.cert_path[0]) {
    int rc = mgop_cert_dir_load(mgop_msec.cert_path, &mgop_msec.cert_mtime, first, &mgop_msec.pair);
    if (rc == 1 && mgop_srv_set_cert(&mgop_http_srv[0], mgop_msec.pair.cert, mgop_msec.pair.cert_len, mgop_msec.pair.key,
                                     mgop_msec.pair.key_len))
      rc = -1;
    if (rc < 0) { MGOP_LOG(MGOP_ERROR, ("metrics: %s/tls.crt and tls.key: %s", mgop_msec.cert_path, mgop_errmsg())); return -1; }
    if (rc == 1) MGOP_LOG(MGOP_INFO, ("metrics: serving the certificate in %s", mgop_msec.cert_path));
    return 0;
  }
  if (!first && !mgop_pki_needs_renewal(mgop_msec.pair.cert, mgop_msec.pair.cert_len, now_s, 30LL * 24 * 3600)) return 0;
  {
    char host[256] = "localhost";
    const char *names[] = {"localhost", host, "127.0.0.1"};
    gethostname(host, sizeof(host) - 1);
    if (mgop_pki_make_ca(&mgop_msec.ca, "multigres-operator-metrics", MGOP_MSEC_VALIDITY_S, now_s) ||
        mgop_pki_make_serving(&mgop_msec.pair, &mgop_msec.ca, names, 3, MGOP_MSEC_VALIDITY_S, now_s) ||
        mgop_srv_set_cert(&mgop_http_srv[0], mgop_msec.pair.cert, mgop_msec.pair.cert_len, mgop_msec.pair.key,
                          mgop_msec.pair.key_len))
      { MGOP_LOG(MGOP_ERROR, ("metrics: cannot make a self-signed certificate: %s", mgop_errmsg())); return -1; }
  }
  MGOP_LOG(MGOP_INFO, ("metrics: serving a self-signed certificate (scrapers skip verification, or pass "
                       "--metrics-cert-path)"));
  return 0;
}

static int mgop_msec_setup(const struct mgop_options *opt) {
  mgop_msec.enabled = 1;
  snprintf(mgop_msec.cert_path, sizeof(mgop_msec.cert_path), "%s", opt->metrics_cert_path ? opt->metrics_cert_path : "");
  mgop_kubecfg_copy(&mgop_msec.cfg, &mgop_server.cfg);
  if (mgop_kube_init(&mgop_msec.api, &mgop_msec.cfg)) {
    MGOP_LOG(MGOP_ERROR, ("--metrics-secure: cannot set up its API client: %s", mgop_errmsg()));
    return 2;
  }
  mgop_msec.api.timeout_ms = MGOP_MSEC_REVIEW_MS;
  return mgop_msec_cert(1) ? 2 : 0;
}

/* Starts a review request's body in b: apiVersion, kind, and an open spec. */
static void mgop_msec_request(struct mgop_jw *w, struct mgop_buf *b, char *mem, size_t cap, const char *api_version,
                              const char *kind) {
  mgop_buf_init(b, mem, cap);
  mgop_jw_init(w, b);
  mgop_jw_obj(w);
  mgop_jw_key(w, "apiVersion"); mgop_jw_str(w, api_version);
  mgop_jw_key(w, "kind"); mgop_jw_str(w, kind);
  mgop_jw_key(w, "spec"); mgop_jw_obj(w);
}

/* TokenReview, then SubjectAccessReview: 200, 401 or 403 with why; 503
 * when the API server did not answer (why says so). */
static int mgop_msec_review(const char *token, char *why, size_t cap) {
  static char body[16384], out_mem[32768];
  static jsmntok_t tok[2048];
  struct mgop_buf b, out;
  struct mgop_jw w;
  struct mgop_json j;
  int status = 0, st, user, allowed = 0, authenticated = 0;
  char name[256] = "";
  mgop_msec_request(&w, &b, body, sizeof(body), "authentication.k8s.io/v1", "TokenReview");
  mgop_jw_key(&w, "token"); mgop_jw_str(&w, token);
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  mgop_buf_init(&out, out_mem, sizeof(out_mem));
  if (mgop_kube_request(&mgop_msec.api, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", "application/json",
                        b.p, b.len, &out, &status) || status != 201 ||
      mgop_json_parse(&j, out.p, out.len, tok, sizeof(tok) / sizeof(tok[0])))
    return snprintf(why, cap, "TokenReview failed: %.200s", status ? "unexpected answer" : mgop_errmsg()), 503;
  st = mgop_json_key(&j, 0, "status");
  mgop_json_bool(&j, mgop_json_key(&j, st, "authenticated"), &authenticated);
  if (!authenticated) return snprintf(why, cap, "the bearer token is not valid"), 401;
  user = mgop_json_key(&j, st, "user");
  mgop_json_path_str(&j, user, "username", name, sizeof(name));
  mgop_msec_request(&w, &b, body, sizeof(body), "authorization.k8s.io/v1", "SubjectAccessReview");
  mgop_jw_key(&w, "user"); mgop_jw_str(&w, name);
  for (int i = 0; i < 3; i++) { /* the rest of the user as TokenReview gave it */
    static const char *const keys[] = {"uid", "groups", "extra"};
    int t = mgop_json_key(&j, user, keys[i]);
    if (t >= 0) mgop_jw_key(&w, keys[i]), mgop_jw_copy(&w, &j, t);
  }
  mgop_jw_key(&w, "nonResourceAttributes"); mgop_jw_obj(&w);
  mgop_jw_key(&w, "path"); mgop_jw_str(&w, "/metrics");
  mgop_jw_key(&w, "verb"); mgop_jw_str(&w, "get");
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  if (b.overflow) return snprintf(why, cap, "the token's user is too large to review"), 401;
  mgop_buf_init(&out, out_mem, sizeof(out_mem));
  if (mgop_kube_request(&mgop_msec.api, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                        "application/json", b.p, b.len, &out, &status) || status != 201 ||
      mgop_json_parse(&j, out.p, out.len, tok, sizeof(tok) / sizeof(tok[0])))
    return snprintf(why, cap, "SubjectAccessReview failed: %.200s", status ? "unexpected answer" : mgop_errmsg()), 503;
  mgop_json_bool(&j, mgop_json_path(&j, 0, "status.allowed"), &allowed);
  if (!allowed) return snprintf(why, cap, "%.180s may not get /metrics (grant it the ClusterRole multigres-operator-"
                                "metrics-reader)", name), 403;
  return snprintf(why, cap, "%.180s", name), 200;
}

/* The verdict for this Authorization header, from the cache or a review. */
static int mgop_msec_verdict(const char *authorization, char *why, size_t cap) {
  unsigned char hash[32];
  long long now_s = (long long)time(NULL);
  struct mgop_msec_verdict *slot = &mgop_msec.cache[0];
  int status;
  if (strncasecmp(authorization, "Bearer ", 7) || !authorization[7])
    return snprintf(why, cap, "no bearer token: send Authorization: Bearer <a ServiceAccount token>"), 401;
  mbedtls_sha256((const unsigned char *)authorization + 7, strlen(authorization + 7), hash, 0);
  for (int i = 0; i < MGOP_MSEC_CACHE; i++) {
    struct mgop_msec_verdict *v = &mgop_msec.cache[i];
    if (v->until_s > now_s && !memcmp(v->hash, hash, 32)) return snprintf(why, cap, "%s", v->why), v->status;
    if (v->until_s < slot->until_s) slot = v;
  }
  status = mgop_msec_review(authorization + 7, why, cap);
  if (status == 503) return status;
  memcpy(slot->hash, hash, 32);
  slot->until_s = now_s + (status == 200 ? MGOP_MSEC_ALLOW_S : MGOP_MSEC_DENY_S);
  slot->status = status;
  snprintf(slot->why, sizeof(slot->why), "%.199s", why);
  return status;
}

static void mgop_serve_metrics_secure(void *ctx, const struct mgop_http_req *req, const char *body, size_t body_len,
                                      struct mgop_srv_resp *resp) {
  char why[300];
  (void)ctx, (void)body, (void)body_len;
  snprintf(resp->content_type, sizeof(resp->content_type), "text/plain; charset=utf-8");
  if (strcmp(req->path, "/metrics")) {
    mgop_buf_puts(&resp->body, "not found; this server serves /metrics (the probes have their own port)\n");
    resp->status = 404;
    return;
  }
  if (strcmp(req->method, "GET") && strcmp(req->method, "HEAD")) {
    resp->status = 405;
    snprintf(resp->headers, sizeof(resp->headers), "Allow: GET, HEAD\r\n");
    return;
  }
  resp->status = mgop_msec_verdict(req->authorization, why, sizeof(why));
  if (resp->status != 200) {
    if (resp->status == 401) snprintf(resp->headers, sizeof(resp->headers), "WWW-Authenticate: Bearer\r\n");
    mgop_buf_printf(&resp->body, "%s\n", why);
    return;
  }
  snprintf(resp->content_type, sizeof(resp->content_type), "text/plain; version=0.0.4; charset=utf-8");
  mgop_metrics_render(&resp->body);
}

/* The secure metrics thread: its server, its certificate checks, until stop. */
static void *mgop_msec_main(void *arg) {
  (void)arg;
  while (!mgop_signalled()) {
    struct pollfd pfd[1 + MGOP_HTTP_CONNS + 1];
    int n = mgop_srv_pollfds(&mgop_http_srv[0], pfd + 1, MGOP_HTTP_CONNS + 1);
    long long wait = mgop_srv_wake_ms(&mgop_http_srv[0], mgop_now_ms());
    pfd[0] = (struct pollfd){mgop_shared.stop_pipe[0], POLLIN, 0};
    if (poll(pfd, (nfds_t)n + 1, (int)(wait > 1000 ? 1000 : wait < 0 ? 0 : wait)) < 0 && errno != EINTR) break;
    if (pfd[0].revents) break;
    mgop_srv_step(&mgop_http_srv[0], pfd + 1, n, mgop_now_ms());
    if (mgop_now_ms() >= mgop_msec.next_check_ms) {
      mgop_msec_cert(0);
      mgop_msec.next_check_ms = mgop_now_ms() + (mgop_msec.cert_path[0] ? 60000 : 3600000);
    }
  }
  return NULL;
}

/* /metrics and the probes, on every replica: plain HTTP, or /metrics over
 * TLS on its own thread with --metrics-secure. */
static int mgop_http_setup(const struct mgop_options *opt) {
  for (int i = 0; i < 2; i++) {
    const char *addr = i ? opt->probe_addr : opt->metrics_addr;
    int secure = i == 0 && opt->metrics_secure && addr && strcmp(addr, "0");
    mgop_srv_init(&mgop_http_srv[i], i ? "probes" : "metrics", secure, mgop_http_conns[i], MGOP_HTTP_CONNS,
                  secure ? mgop_serve_metrics_secure : mgop_serve_http, NULL);
    if (secure && mgop_msec_setup(opt)) return 2;
    if (!addr || !strcmp(addr, "0")) continue;
    if (mgop_srv_listen(&mgop_http_srv[i], addr)) {
      MGOP_LOG(MGOP_ERROR, ("cannot serve %s on %s: %s", i ? "/healthz and /readyz" : "/metrics", addr, mgop_errmsg()));
      return 2;
    }
    MGOP_LOG(MGOP_INFO, ("serving %s on %s (port %d)%s", i ? "/healthz and /readyz" : "/metrics", addr,
                         mgop_srv_port(&mgop_http_srv[i]), secure ? " over HTTPS, for bearer tokens allowed to get "
                         "/metrics (TokenReview, SubjectAccessReview)" : ""));
  }
  return 0;
}

/* Everything before the threads: configuration, API clients, tables,
 * watches and listening sockets. 0, or the exit code. */
static int mgop_setup(const struct mgop_options *opt) {
  char path[384];
  if (mgop_kubecfg_auto(&mgop_server.cfg, opt->kubeconfig, opt->context)) {
    MGOP_LOG(MGOP_ERROR, ("cannot load the Kubernetes configuration: %s", mgop_errmsg()));
    return 2;
  }
  if (mgop_kube_init(&mgop_server.api, &mgop_server.cfg)) {
    MGOP_LOG(MGOP_ERROR, ("cannot set up the API client (%s): %s", mgop_server.cfg.source, mgop_errmsg()));
    return 2;
  }
  if (mgop_tables_init(opt)) {
    MGOP_LOG(MGOP_ERROR, ("cannot size the tables: %s", mgop_errmsg()));
    return 2;
  }
  mgop_server.api.may_write = mgop_may_write; /* only the leader's requests may write */
  mgop_server.api.beat_ms = &mgop_shared.beat_ms;
  if (mgop_pool_init(&mgop_server.pool, (opt->applies_in_flight ? opt->applies_in_flight : MGOP_APPLIES_IN_FLIGHT_DEFAULT) - 1,
                     &mgop_server.cfg, mgop_may_write, &mgop_shared.beat_ms)) {
    MGOP_LOG(MGOP_ERROR, ("cannot set up the apply workers: %s", mgop_errmsg()));
    return 2;
  }
  mgop_api_ptr = &mgop_server.api;
  mgop_tcache_enabled = 1;
  mgop_arena_init(&mgop_server.arena, mgop_server.arena_mem, sizeof(mgop_server.arena_mem));
  MGOP_LOG(MGOP_INFO, ("multigres-op %s starting; API server %s://%s:%s (%s)", MGOP_VERSION, mgop_server.cfg.scheme,
                       mgop_server.cfg.host, mgop_server.cfg.port, mgop_server.cfg.source));
  {
    char over[256] = ""; /* the six variable names fit */
    for (int i = 0, n = 0; i < MGOP_IMG_COUNT; i++)
      if (mgop_img_defaults.from_env & (1u << i))
        n += snprintf(over + n, sizeof(over) > (size_t)n ? sizeof(over) - (size_t)n : 0, "%s%s", n ? ", " : "",
                      mgop_img_comps[i].env);
    MGOP_LOG(MGOP_INFO, ("default images: revision %s (%s), update strategy %s", mgop_img_defaults.rev,
                         over[0] ? over : "built in", mgop_img_defaults.lazy ? "lazy" : "immediate"));
  }
  srand((unsigned)(mgop_now_ms() ^ getpid()));
  mgop_stats.start_s = (long long)time(NULL);
  if (mgop_pipe(mgop_shared.stop_pipe) || mgop_pipe(mgop_shared.offer_pipe) || mgop_pipe(mgop_shared.wake_pipe)) {
    MGOP_LOG(MGOP_ERROR, ("pipe: %s", strerror(errno)));
    return 2;
  }
  if (opt->leader_elect && mgop_lease_setup(opt)) return 2;
  for (int i = 0; i < K_COUNT; i++) {
    int owned = mgop_kind_owned(i);
    mgop_collection_path(i, i == K_NODE ? "" : opt->watch_namespace, path, sizeof(path));
    /* Pods are watched for one thing, why a workload's pods do not
     * schedule, and only a Pending pod is unscheduled: a pod that leaves
     * Pending arrives as DELETED, which forgets it (mgop_on_pod). Running
     * pods were 55% of a start's LIST bytes and most of converging's events. */
    mgop_watch_init(&mgop_server.watches[i], &mgop_server.api, mgop_kinds[i].kind, path,
                    i == K_POD ? "labelSelector=" MGOP_MANAGED_SELECTOR "&fieldSelector=status.phase%3DPending"
                    : owned    ? "labelSelector=" MGOP_MANAGED_SELECTOR : NULL,
                    mgop_on_event, (void *)(intptr_t)i);
    /* every LIST goes over the loop's own connection (handlers make no
     * requests): the first turn's GETs then find it open, not a handshake */
    mgop_server.watches[i].list_conn = &mgop_server.api.conn;
  }
  mgop_server.watches[K_CERT].optional = 1;
  if (opt->webhook_enable && mgop_webhook_setup(opt)) return 2;
  /* the CRDs' first look and the webhook's SelfSubjectReview start here,
   * beside the rest of set-up and the loop's lists: the first turn waits
   * for the look, the webhook's certificate for the review */
  if (!mgop_crd_first_start() && mgop_wh.enabled) mgop_wh_whoami(mgop_api_ptr); /* no thread: here, as before */
  return mgop_http_setup(opt);
}

/* The loop yields the CPU to the serving and Lease threads: on a busy node
 * an admission review or a renewal must not queue behind a reconcile's JSON
 * work (nice is per thread on Linux; raising it needs no privilege). */
static void mgop_loop_yields(void) {
  struct sched_param sp = {0};
  if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), MGOP_LOOP_NICE))
    MGOP_LOG(MGOP_WARN, ("cannot lower the reconcile loop's priority: %s", strerror(errno)));
  /* SCHED_BATCH: its wake-ups never preempt a running thread, so a review
   * arriving while the loop parses a watch event runs first (the raw call:
   * it is per thread on Linux, and musl's wrapper refuses it) */
  if (syscall(SYS_sched_setscheduler, 0, SCHED_BATCH, &sp))
    MGOP_LOG(MGOP_WARN, ("cannot make the reconcile loop a batch thread: %s", strerror(errno)));
}

/* ---- CRD schema version --------------------------------------------------
 * The CRDs carry multigres.com/schema-version (config/crd/gen-crds.py); an
 * operator newer than its CRDs would write fields the API server prunes, so
 * it reconciles nothing until they are applied: a log line, /readyz 503 and
 * multigres_operator_crd_schema_outdated say which. Read at start (eight
 * GETs of the CRDs' metadata) and, while not current, every MGOP_CRD_RECHECK_MS; once current,
 * never again (idle costs nothing). A CRD that cannot be read for another
 * reason (no RBAC grant) is logged and not held against the operator. */
#define MGOP_CRD_SCHEMA 3 /* with SCHEMA_VERSION in config/crd/gen-crds.py */
#define MGOP_CRD_RECHECK_MS 10000
enum { MGOP_CRD_CURRENT, MGOP_CRD_OUTDATED, MGOP_CRD_RETRY, MGOP_CRD_NOT_READ };
/* One CRD's answer (rc and status from its GET, its metadata in b): -1 to
 * go on to the next, or the look's result (why filled in). */
static int mgop_crd_judge(int kind, int rc, int status, const struct mgop_buf *b, char *why, size_t why_cap) {
  static jsmntok_t tok[32768];
  struct mgop_json j;
  char v[16];
  long version = 0;
  if (rc == MGOP_ERR_NOTFOUND) {
    snprintf(why, why_cap, "CRD %s.multigres.com is not installed", mgop_kinds[kind].plural);
    return MGOP_CRD_OUTDATED;
  }
  if (rc || mgop_json_parse(&j, b->p, b->len, tok, sizeof(tok) / sizeof(tok[0]))) {
    if (status == 401 || status == 403) { /* not ours to decide: say so once, go on */
      MGOP_LOG(MGOP_WARN, ("CRD schema version not checked: %s (grant get on customresourcedefinitions)",
                           mgop_errmsg()));
      return MGOP_CRD_CURRENT;
    }
    MGOP_LOG(MGOP_WARN, ("CRD schema version: %s; looking again in %d s", mgop_errmsg(), MGOP_CRD_RECHECK_MS / 1000));
    return MGOP_CRD_RETRY;
  }
  if (mgop_json_str(&j, mgop_json_key(&j, mgop_json_path(&j, 0, "metadata.annotations"),
                                      "multigres.com/schema-version"), v, sizeof(v)) == MGOP_OK)
    version = strtol(v, NULL, 10);
  if (version < MGOP_CRD_SCHEMA) {
    snprintf(why, why_cap, "CRD %s.multigres.com has schema version %ld (multigres.com/schema-version), this "
             "operator needs %d: apply the crds.yaml of this release", mgop_kinds[kind].plural, version,
             MGOP_CRD_SCHEMA);
    return MGOP_CRD_OUTDATED;
  }
  return -1;
}

struct mgop_crd_look {
  char *why;
  size_t why_cap;
  int result; /* -1 while every answer so far is current */
  int again;  /* the answer to ask again one by one (not 200 or 404) */
};

/* A pipelined answer: 200 and 404 are judged; anything else (a 401 whose
 * token the one-by-one path re-reads, a 5xx) stops the pipeline there. */
static int mgop_crd_answer(void *ctx, int i, int status, struct mgop_buf *out) {
  struct mgop_crd_look *l = ctx;
  if (status != 200 && status != 404) return l->again = i, 1;
  if (out->overflow)
    mgop_seterr(MGOP_ERR_TOOBIG, "GET CRD %s: response larger than %zu bytes", mgop_kinds[K_CLUSTER + i].plural,
                out->cap);
  l->result = mgop_crd_judge(K_CLUSTER + i, status == 404 ? MGOP_ERR_NOTFOUND : out->overflow ? MGOP_ERR_TOOBIG : 0,
                             status, out, l->why, l->why_cap);
  return l->result >= 0;
}

/* Reads the eight CRDs' schema versions over k: CURRENT (also when not
 * ours to read: 401/403 are logged once and not held against the operator),
 * OUTDATED with why, or RETRY (logged). The eight GETs are pipelined on one
 * connection (one round trip, not eight, on the way to the first turn); from
 * the first answer that is not 200 or 404, or after a lost connection, they
 * are asked one by one. Any thread; one caller at a time. */
static int mgop_crd_read(struct mgop_kube *k, char *why, size_t why_cap) {
  static char body[256 * 1024]; /* a client-side apply's last-applied annotation is in the metadata too */
  static char paths[K_SHARD - K_CLUSTER + 1][128];
  const char *pp[K_SHARD - K_CLUSTER + 1];
  struct mgop_crd_look look = {why, why_cap, -1, -1};
  struct mgop_buf b;
  int answered = 0, n = K_SHARD - K_CLUSTER + 1;
  why[0] = 0;
  for (int i = 0; i < n; i++) {
    /* resourceVersion=0: from kube-apiserver's cache, not a read from etcd
     * (a CRD applied a moment ago is seen at the next look, 10 s later) */
    snprintf(paths[i], sizeof(paths[i]),
             "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/%s.multigres.com?resourceVersion=0",
             mgop_kinds[K_CLUSTER + i].plural);
    pp[i] = paths[i];
  }
  mgop_buf_init(&b, body, sizeof(body));
  /* the metadata alone: a CRD is a few hundred KB of schema (the eight
   * took ~45 ms to fetch and parse at every start), its metadata ~2 KB */
  k->accept = MGOP_ACCEPT_METADATA;
  if (mgop_kube_get_pipelined(k, pp, n, &b, mgop_crd_answer, &look, &answered) < 0)
    MGOP_LOG(MGOP_DEBUG, ("CRD schema version: %s; asking one by one", mgop_errmsg()));
  for (int i = look.again >= 0 ? look.again : answered; look.result < 0 && i < n; i++) {
    int status = 0, rc = mgop_kube_get(k, paths[i], &b, &status);
    look.result = mgop_crd_judge(K_CLUSTER + i, rc, status, &b, why, why_cap);
  }
  k->accept = NULL;
  return look.result < 0 ? MGOP_CRD_CURRENT : look.result;
}

/* The first look runs on a thread with an API connection of its own, from
 * set-up on, while the loop takes its identity, starts its servers and
 * lists (its eight GETs one by one were ~30 ms on the way to the first
 * turn); the loop takes its result, and makes any later look itself. It
 * keeps its normal priority: it is short, and the first turn waits for it. */
static struct {
  pthread_t thread;
  int state;                         /* loop only: 0 none, 1 running, 2 joined */
  int done;                          /* atomic: the thread's result is in      */
  int result;                        /* MGOP_CRD_NOT_READ: the loop looks      */
  int whoami;                        /* it asked the webhook's SelfSubjectReview */
  char why[400];
  struct mgop_kubecfg cfg;           /* its own copy: token reloads are per client */
  struct mgop_kube api;              /* set up and freed by the thread         */
  struct mgop_kube_stats stats;      /* its requests, for the loop's counters  */
} mgop_crd_first;

static void *mgop_crd_first_main(void *arg) {
  (void)arg;
  mgop_crd_first.result = MGOP_CRD_NOT_READ;
  if (mgop_kube_init(&mgop_crd_first.api, &mgop_crd_first.cfg) == MGOP_OK) { /* its certificates parsed here, off the loop */
    mgop_crd_first.api.beat_ms = &mgop_shared.beat_ms;
    mgop_crd_first.result = mgop_crd_read(&mgop_crd_first.api, mgop_crd_first.why, sizeof(mgop_crd_first.why));
    if (mgop_wh.enabled) mgop_wh_whoami(&mgop_crd_first.api), mgop_crd_first.whoami = 1;
    mgop_crd_first.stats = mgop_crd_first.api.stats;
    mgop_kube_free(&mgop_crd_first.api);
  }
  __atomic_store_n(&mgop_crd_first.done, 1, __ATOMIC_RELEASE);
  if (write(mgop_shared.wake_pipe[1], "c", 1) < 0) { /* the loop also polls at least every second */ }
  return NULL;
}

/* In set-up, before the loop's first request: the first look's thread
 * (SIGTERM/SIGINT blocked in it, as in the other threads: the loop takes
 * them); 0 if it cannot start (the loop looks itself). */
static int mgop_crd_first_start(void) {
  sigset_t old;
  mgop_kubecfg_copy(&mgop_crd_first.cfg, &mgop_server.cfg);
  mgop_block_stop_signals(&old);
  if (pthread_create(&mgop_crd_first.thread, NULL, mgop_crd_first_main, NULL) == 0) mgop_crd_first.state = 1;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return mgop_crd_first.state == 1;
}

/* The loop's side: takes a result (the first thread's, or its own look's). */
static void mgop_crd_check(void) {
  char own[400];
  const char *why = own;
  int result = MGOP_CRD_NOT_READ, outdated;
  if (mgop_server.crd_checked) return;
  if (mgop_crd_first.state == 1) {
    if (!__atomic_load_n(&mgop_crd_first.done, __ATOMIC_ACQUIRE)) return;
    pthread_join(mgop_crd_first.thread, NULL);
    mgop_kube_stats_add(&mgop_server.api.stats, &mgop_crd_first.stats);
    mgop_crd_first.state = 2;
    if (mgop_wh.enabled && !mgop_crd_first.whoami) mgop_wh_whoami(mgop_api_ptr); /* its client failed */
    result = mgop_crd_first.result;
    why = mgop_crd_first.why;
  } else if (mgop_now_ms() < mgop_server.crd_next_ms) {
    return;
  }
  if (result == MGOP_CRD_NOT_READ) {
    why = own;
    result = mgop_crd_read(mgop_api_ptr, own, sizeof(own));
  }
  mgop_server.crd_next_ms = mgop_now_ms() + MGOP_CRD_RECHECK_MS;
  if (result == MGOP_CRD_RETRY) return;
  outdated = result == MGOP_CRD_OUTDATED;
  pthread_mutex_lock(&mgop_shared.mu);
  if (outdated && (!mgop_shared.crd_outdated || strcmp(mgop_shared.crd_msg, why)))
    MGOP_LOG(MGOP_ERROR, ("not reconciling: %s", why));
  else if (!outdated && mgop_shared.crd_outdated)
    MGOP_LOG(MGOP_INFO, ("the CRDs have schema version %d now; reconciling", MGOP_CRD_SCHEMA));
  mgop_shared.crd_outdated = outdated;
  snprintf(mgop_shared.crd_msg, sizeof(mgop_shared.crd_msg), "%s", why);
  pthread_mutex_unlock(&mgop_shared.mu);
  mgop_server.crd_checked = !outdated;
}

/* One reconcile, of the root that is due, on the leader. 1 when it ran. */
static int mgop_loop_reconcile(void) {
  struct mgop_work item;
  struct mgop_span span;
  long long t0 = mgop_now_ms();
  int controller, rc;
  if (!mgop_may_write() || !mgop_server.crd_checked || mgop_work_pop(mgop_now_ms(), &item) != MGOP_OK) return 0;
  controller = strcmp(item.kind, "MultigresCluster") ? MGOP_C_TEMPLATE : MGOP_C_CLUSTER;
  {
    char span_name[MGOP_SPAN_NAME_MAX];
    snprintf(span_name, sizeof(span_name), "%s.Reconcile", item.kind);
    mgop_span_begin(&span, span_name, MGOP_SPAN_INTERNAL, NULL);
    mgop_span_str(&span, "k8s.resource.kind", item.kind);
    mgop_span_str(&span, "k8s.namespace", item.ns);
    mgop_span_str(&span, "k8s.resource.name", item.name);
    mgop_span_int(&span, "multigres.attempt", item.attempts);
  }
  rc = controller == MGOP_C_TEMPLATE ? mgop_template_sync(item.ns, item.name) : mgop_reconcile(item.ns, item.name, &span);
  if (rc) mgop_span_error(&span, "%s", mgop_errmsg());
  mgop_span_end(&span);
  mgop_metrics_turn(controller, rc ? "error" : "success", (double)(mgop_now_ms() - t0) / 1000.0);
  /* how long a start takes to act (the bench reads it), and the CPU it
   * took. A turn that failed has not reconciled: the figure waits for one
   * that did, and only the first failure is logged here (each has its
   * warning below). */
  if (!mgop_stats.turned || (mgop_stats.turned == 2 && !rc)) {
    struct rusage ru;
    long long cpu_ms = -1;
    if (!getrusage(RUSAGE_SELF, &ru))
      cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000LL + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
    mgop_stats.turned = rc ? 2 : 1;
    MGOP_LOG(MGOP_INFO, ("first reconcile (%s %s/%s) %s %lld ms after start, %lld ms of CPU", item.kind, item.ns,
                         item.name, rc ? "failed" : "done", mgop_now_ms() - mgop_stats.start_ms, cpu_ms));
  }
  if (rc && !mgop_stopping()) {
    int backoff = 1000 << (item.attempts < 5 ? item.attempts : 5);
    if (mgop_server.api.last_retry_after_s > 0 && mgop_server.api.last_retry_after_s * 1000 > backoff)
      backoff = mgop_server.api.last_retry_after_s * 1000;
    MGOP_LOG(MGOP_WARN, ("reconcile %s/%s failed, retry in %d ms: %s", item.ns, item.name, backoff, mgop_errmsg()));
    mgop_work_retry(&item, mgop_now_ms() + backoff);
  }
  return 1;
}

/* Timed work between turns (backup checks, certificates): the ms until
 * the next is due, at most wait. */
static long long mgop_loop_timers(long long wait) {
  long long due = mgop_work_next_due(mgop_now_ms());
  mgop_crd_check();
  if (!mgop_server.crd_checked && mgop_crd_first.state != 1 && mgop_server.crd_next_ms - mgop_now_ms() < wait)
    wait = mgop_server.crd_next_ms - mgop_now_ms(); /* the first look's thread wakes the loop itself */
  if (due >= 0 && due < wait) wait = due;
  if (mgop_may_write() && (due = mgop_backup_tick()) >= 0 && due < wait) wait = due;
  /* certificates: hourly, or soon after a miss; the first once the first
   * look's thread has said who the operator is (admission needs it) */
  if (mgop_wh.enabled && mgop_crd_first.state != 1 && mgop_now_ms() >= mgop_wh.next_check_ms) {
    int crc = mgop_wh_certs();
    if (crc) MGOP_LOG(MGOP_WARN, ("webhook certificates: %s; retrying in 5 s", mgop_errmsg()));
    mgop_wh.next_check_ms = mgop_now_ms() + (crc ? 5000 : mgop_wh.check_ms);
  }
  if (mgop_wh.enabled && mgop_wh.next_check_ms - mgop_now_ms() < wait) wait = mgop_wh.next_check_ms - mgop_now_ms();
  return wait < 0 ? 0 : wait;
}

/* Kinds due to be listed (all of them at start) are listed at once, on
 * the apply workers' connections beside the loop's own: kube-apiserver
 * serves them in parallel, and those connections are open for the first
 * turn's applies. One kind alone is listed by its step, as before. */
static void mgop_loop_lists(void) {
  struct mgop_watch *due[K_COUNT];
  int n = 0;
  /* the longest early (jobs are taken in order): Pods are most of what is
   * listed (at 10 clusters the Pod list took as long as the eight before
   * it, and began last), then the workloads, then the rest in kind order.
   * The loop itself takes the first job, and at its lower priority on a
   * busy node it is the slowest to get through one: a short one. */
  static const int first[] = {K_CLUSTER, K_POD, K_STS, K_DEPLOY, K_SVC};
  enum { NFIRST = sizeof(first) / sizeof(first[0]) };
  char placed[K_COUNT] = {0};
  for (int i = 0, k; i < NFIRST + K_COUNT; i++) {
    if (placed[k = i < NFIRST ? first[i] : i - NFIRST]) continue;
    placed[k] = 1;
    if (mgop_server.watches[k].state == MGOP_W_LIST && mgop_server.watches[k].list_conn) due[n++] = &mgop_server.watches[k];
  }
  if (n < 2) return;
  mgop_watch_list_many(due, n, &mgop_server.pool, mgop_now_ms());
  mgop_pool_take_stats(&mgop_server.pool, &mgop_server.api.stats);
  if (!mgop_stats.listed) { /* when the clusters the early turn did not take can take theirs (the bench reads it) */
    mgop_stats.listed = 1;
    MGOP_LOG(MGOP_INFO, ("full lists done %lld ms after start (%d kinds)", mgop_now_ms() - mgop_stats.start_ms, n));
  }
}

/* ---- the start's early turn ----------------------------------------------
 * A start's full lists cost kube-apiserver CPU in proportion to the
 * clusters (1.25 s of it at 1,000, 98.9 MB of JSON), and no turn could
 * run before them. So before them, one cluster is read whole on its own,
 * and its turn runs on that view:
 *   1. the first cluster of the cluster list (limit=1);
 *   2. the templates' own lists, whole, and the cluster's unscheduled
 *      Pending Pods (by its label, and spec.nodeName empty: kube-apiserver
 *      keeps pods indexed by node, so it does not filter every pod of the
 *      namespace);
 *   3. its tree, rendered from those by the builders, offline: the names of
 *      the objects it owns;
 *   4. each of those objects by name, all at once on the pool's
 *      connections: a list whose field selector is its metadata.name, which
 *      kube-apiserver answers from one key of its watch cache, with the
 *      cluster's label and the watch's own selector still applied.
 * Why by name: a label-selected list costs kube-apiserver every object of
 * the kind in the namespace (it has no label index), and at 1,000 clusters
 * in one namespace the early turn's lists took 90 ms; a read by name costs
 * the same at 10 clusters as at 1,000.
 * The view is the one the full lists give that cluster: a turn reads no
 * other cluster's objects (its tree, prune and rollups go by its label), and
 * a Pending pod explains a workload only while it is unscheduled. One
 * difference: objects of the cluster that its tree no longer names (a
 * removed cell's) are not read. Its turn then prunes nothing; the full
 * lists show them as new, and their events give the cluster a second turn,
 * which prunes them. The rows stay; the full lists that follow see them
 * again, as watch events, and infer deletions as they always did. When a
 * read fails, the tree does not render, the CRDs' or the Lease's first look
 * is slow, or this replica does not lead, the cluster waits for the full
 * lists, as every cluster did before. */
#define MGOP_EARLY_WAIT_MS 200 /* for the CRDs' first look and the Lease's, begun before */
#define MGOP_EARLY_JOBS 16     /* reads at once: one a pool connection (--max-applies-in-flight), at most this many */

struct mgop_early_list {
  int kind;
  char path[800];
  pthread_mutex_t *serial;
  unsigned long items;
};

static int mgop_early_item(void *ctx, const struct mgop_json *j, int item) {
  struct mgop_early_list *e = ctx;
  e->items++;
  mgop_on_event((void *)(intptr_t)e->kind, NULL, "SYNC", j, item); /* under e->serial (mgop_kube_list_with) */
  return MGOP_OK;
}

static int mgop_early_job(void *arg, struct mgop_kube *k, struct mgop_conn *c, struct mgop_list_scan *scan,
                          char *item, size_t cap) {
  struct mgop_early_list *e = arg;
  const struct mgop_list_bufs b = {scan, item, cap, e->serial, 1};
  char rv[32];
  unsigned long skipped = 0;
  int rc = mgop_kube_list_with(k, c, e->path, mgop_early_item, e, rv, sizeof(rv), &skipped, &b);
  if (rc == MGOP_OK && skipped) rc = mgop_seterr(MGOP_ERR_TOOBIG, "%s: %lu objects too large to read", e->path, skipped);
  if (mgop_watch_not_served(&mgop_server.watches[e->kind], rc))
    rc = MGOP_OK; /* cert-manager's kind, not served: nothing of it exists (its watch says so at its list) */
  return rc;
}

/* The first cluster of the list: ns and name, the object's JSON (in
 * root_body; its turn reads it there), and its row (a SYNC, as the full list's
 * would be). MGOP_ERR_NOTFOUND when there is none. */
static int mgop_early_pick(char *ns, size_t ns_cap, char *name, size_t name_cap, const char **js, size_t *len) {
  char path[800];
  struct mgop_buf b;
  struct mgop_json j;
  int status, rc, item;
  snprintf(path, sizeof(path), "%s?limit=1", mgop_server.watches[K_CLUSTER].path);
  mgop_buf_init(&b, mgop_server.root_body, sizeof(mgop_server.root_body));
  if ((rc = mgop_kube_get(mgop_api_ptr, path, &b, &status))) return rc;
  if (b.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "the first MultigresCluster is over %zu bytes", b.cap);
  if ((rc = mgop_json_parse(&j, b.p, b.len, mgop_tokens, MGOP_JSON_TOKENS_MAX))) return rc;
  item = mgop_json_at(&j, mgop_json_key(&j, 0, "items"), 0);
  if (item < 0) return mgop_seterr(MGOP_ERR_NOTFOUND, "no MultigresCluster");
  if (mgop_json_path_str(&j, item, "metadata.namespace", ns, ns_cap) ||
      mgop_json_path_str(&j, item, "metadata.name", name, name_cap))
    return mgop_seterr(MGOP_ERR_PARSE, "the first MultigresCluster has no namespace or name");
  *js = b.p + j.tok[item].start;
  *len = (size_t)(j.tok[item].end - j.tok[item].start);
  mgop_on_event((void *)(intptr_t)K_CLUSTER, NULL, "SYNC", &j, item);
  return MGOP_OK;
}

/* One early read of kind in ns: the kind's watch selector (it begins with
 * its labelSelector, which the cluster's label joins), then more. */
static int mgop_early_path(struct mgop_early_list *out, int kind, const char *ns, const char *cluster,
                           pthread_mutex_t *serial, const char *more) {
  char coll[400];
  mgop_collection_path(kind, ns, coll, sizeof(coll));
  out->kind = kind;
  out->serial = serial;
  out->items = 0;
  if (snprintf(out->path, sizeof(out->path), "%s?labelSelector=multigres.com%%2Fcluster%%3D%s%%2C%s%s", coll, cluster,
               mgop_server.watches[kind].selector + strlen("labelSelector="), more) >= (int)sizeof(out->path))
    return mgop_seterr(MGOP_ERR_TOOBIG, "the path to read %s of %s/%s (%s) is over %zu bytes", mgop_kinds[kind].kind,
                       ns, cluster, more, sizeof(out->path));
  return MGOP_OK;
}

/* The cluster's unscheduled Pending Pods: the Pod watch's selector ends with
 * its fieldSelector, which an empty spec.nodeName joins (kube-apiserver
 * looks that up in its pod index). */
static int mgop_early_pods(const char *ns, const char *name, struct mgop_early_list *out, pthread_mutex_t *serial) {
  return mgop_early_path(out, K_POD, ns, name, serial, "%2Cspec.nodeName%3D");
}

/* The cluster's tree, rendered into the loop's context (the builders,
 * offline, templates from the watch cache): r->desired names what it owns.
 * The turn clears that context after the reads. */
static int mgop_early_render(const char *ns, const char *name, const char *js, size_t len) {
  struct mgop_rctx *r = &mgop_loop_rctx;
  int rc;
  mgop_rctx_clear(r);
  mgop_arena_reset(&mgop_server.arena);
  r->render = 1;
  r->cached_templates = 1;
  r->arena = &mgop_server.arena;
  r->ns = ns;
  r->name = name;
  if ((rc = mgop_parse_arena(r->arena, js, len, &r->root))) return rc;
  mgop_json_path_str(&r->root, 0, "metadata.uid", r->uid, sizeof(r->uid));
  r->spec = mgop_json_key(&r->root, 0, "spec");
  rc = mgop_reconcile_tree(r);
  if (!rc && r->stalled_reason[0]) rc = mgop_seterr(MGOP_ERR_CONFIG, "%s: %s", r->stalled_reason, r->stalled_msg);
  return rc;
}

/* The rendered objects, read by name: the batch's jobs share them, each
 * taking the next until none is left, so a slow read holds up one
 * connection, not a share of the objects. */
struct mgop_early_reads {
  const struct mgop_rctx *r; /* the render: r->desired */
  int next;                  /* the next object to read (atomic) */
  pthread_mutex_t *serial;
  unsigned long items, reads; /* under serial */
};

static int mgop_early_readable(int kind) {
  return mgop_kind_owned(kind) && mgop_server.watches[kind].state != MGOP_W_ABSENT;
}

static int mgop_early_read_job(void *arg, struct mgop_kube *k, struct mgop_conn *c, struct mgop_list_scan *scan,
                               char *item, size_t cap) {
  struct mgop_early_reads *e = arg;
  for (;;) {
    int i = __atomic_fetch_add(&e->next, 1, __ATOMIC_RELAXED), rc;
    const struct mgop_desired *d;
    struct mgop_early_list one;
    char by_name[sizeof("&fieldSelector=metadata.name%3D") + MGOP_NAME_MAX]; /* d->name fits */
    if (i >= e->r->ndesired) return MGOP_OK;
    d = &e->r->desired[i];
    if (!mgop_early_readable(d->kind)) continue;
    snprintf(by_name, sizeof(by_name), "&fieldSelector=metadata.name%%3D%s", d->name);
    if ((rc = mgop_early_path(&one, d->kind, e->r->ns, e->r->name, e->serial, by_name))) return rc;
    if ((rc = mgop_early_job(&one, k, c, scan, item, cap))) return rc;
    pthread_mutex_lock(e->serial);
    e->items += one.items;
    e->reads++;
    pthread_mutex_unlock(e->serial);
  }
}

/* Runs jobs[0..n) with the templates' whole lists, when there are any */
static void mgop_early_batch(struct mgop_pool_job *jobs, int n, pthread_mutex_t *serial, int templates) {
  struct mgop_watch *ws[3];
  int nws = 0;
  for (int k = K_CORET; templates && k <= K_SHARDT; k++)
    if (mgop_server.watches[k].state == MGOP_W_LIST) ws[nws++] = &mgop_server.watches[k];
  if (nws) mgop_watch_list_batch(ws, nws, jobs, n, serial, &mgop_server.pool, mgop_now_ms());
  else mgop_pool_run(&mgop_server.pool, mgop_api_ptr, &mgop_server.api.conn, jobs, n);
  mgop_pool_take_stats(&mgop_server.pool, &mgop_server.api.stats);
}

static const char *mgop_early_failed(const struct mgop_pool_job *jobs, int n) {
  for (int i = 0; i < n; i++)
    if (jobs[i].rc) return jobs[i].err;
  return NULL;
}

static const char mgop_early_standby[] = "this replica does not lead";

/* Reads the cluster: steps 2 to 4 above. NULL, or why not (for the log;
 * mgop_early_standby: not logged, a standby takes no turn anyway). */
static const char *mgop_early_read(const char *ns, const char *name, const char *js, size_t len,
                                   unsigned long *objects, int *reads, long long at[3]) {
  static struct mgop_pool_job jobs[MGOP_EARLY_JOBS]; /* the loop's, 1 KiB each: not on its stack */
  struct mgop_early_list pods;
  static pthread_mutex_t serial = PTHREAD_MUTEX_INITIALIZER; /* the loop's: no destroy on every way out */
  struct mgop_early_reads e = {&mgop_loop_rctx, 0, &serial, 0, 0};
  const char *why;
  int n = mgop_server.pool.nworkers + 1;
  if (n > MGOP_EARLY_JOBS) n = MGOP_EARLY_JOBS;
  if (mgop_early_pods(ns, name, &pods, &serial)) return mgop_errmsg();
  memset(jobs, 0, sizeof(jobs[0]));
  jobs[0].run = mgop_early_job;
  jobs[0].arg = &pods;
  mgop_early_batch(jobs, 1, &serial, 1);
  mgop_publish(); /* the template cache says whether it is listed */
  if ((why = mgop_early_failed(jobs, 1))) return why;
  at[0] = mgop_now_ms();
  if (mgop_early_render(ns, name, js, len)) return mgop_errmsg();
  at[1] = mgop_now_ms();
  if (__atomic_load_n(&mgop_lease.tried, __ATOMIC_ACQUIRE) && !mgop_may_write())
    return mgop_early_standby; /* it takes no turn: the reads would be for nothing */
  for (int i = 0; i < n; i++) {
    memset(&jobs[i], 0, sizeof(jobs[i]));
    jobs[i].run = mgop_early_read_job;
    jobs[i].arg = &e;
  }
  mgop_early_batch(jobs, n, &serial, 0);
  if ((why = mgop_early_failed(jobs, n))) return why;
  *objects = pods.items + e.items;
  *reads = (int)e.reads + 1;
  at[2] = mgop_now_ms();
  return NULL;
}

/* Once, before the full lists. 1 when the turn ran. */
static int mgop_early_turn(void) {
  char ns[64], name[MGOP_NAME_MAX + 1];
  const char *js = NULL, *why;
  size_t len = 0;
  unsigned long objects = 0;
  long long t0 = mgop_now_ms(), picked, at[3] = {0, 0, 0};
  int rc, reads = 0;
  if ((rc = mgop_early_pick(ns, sizeof(ns), name, sizeof(name), &js, &len))) {
    if (rc != MGOP_ERR_NOTFOUND) MGOP_LOG(MGOP_INFO, ("early turn: none (%s); the full lists come first", mgop_errmsg()));
    return 0;
  }
  picked = mgop_now_ms();
  if ((why = mgop_early_read(ns, name, js, len, &objects, &reads, at))) {
    if (why == mgop_early_standby) return 0;
    MGOP_LOG(MGOP_INFO, ("early turn: MultigresCluster %s/%s waits for the full lists: %s", ns, name, why));
    return 0;
  }
  /* the CRDs' first look and the Lease's, begun before this, in their threads */
  while (((mgop_crd_first.state == 1 && !__atomic_load_n(&mgop_crd_first.done, __ATOMIC_ACQUIRE)) ||
          (!mgop_may_write() && !__atomic_load_n(&mgop_lease.tried, __ATOMIC_ACQUIRE))) &&
         mgop_now_ms() - t0 < MGOP_EARLY_WAIT_MS && !mgop_stopping())
    poll(NULL, 0, 1);
  mgop_crd_check();
  if (!mgop_server.crd_checked || !mgop_may_write()) return 0; /* the loop tells why, as ever; a standby takes no turn */
  /* the new term's turn for every cluster: the full lists' events give it
   * (this cluster had its own just now), and no other cluster is known yet */
  __atomic_store_n(&mgop_lease.new_term, 0, __ATOMIC_RELEASE);
  /* its turn reads the cluster the pick read (js, in root_body), not by a GET */
  memmove(mgop_server.root_body, js, len);
  mgop_server.root_early = len;
  mgop_server.root_early_key = mgop_fp_key("MultigresCluster", ns, name);
  /* where its time went: a start's first turn is a figure of the bench */
  MGOP_LOG(MGOP_INFO, ("early turn: MultigresCluster %s/%s read on its own (%d reads, %lu objects, %lld ms: the "
                       "pick %lld, the lists %lld, the render %lld, the reads %lld, then the Lease's and the CRDs' "
                       "first look %lld); the other clusters wait for the full lists", ns, name, reads, objects,
                       mgop_now_ms() - t0, picked - t0, at[0] - picked, at[1] - at[0], at[2] - at[1],
                       mgop_now_ms() - at[2]));
  return mgop_loop_reconcile();
}

/* The loop: watches, one reconcile, timers, then poll() until something is
 * due. Returns when stopping, or 1 when poll() itself fails. */
static int mgop_loop(void) {
  int yields = 0;
  mgop_publish();
  mgop_early_turn();
  while (!mgop_stopping()) {
    struct pollfd pfd[K_COUNT + 1];
    int owner[K_COUNT], n = 0;
    long long now = mgop_now_ms(), wait = 1000, due;
    /* deleted objects leave tombstones that every miss probes past; no row
     * pointer lives across turns, so this is the place to clear them */
    if (mgop_fp_tombstones() > mgop_fp_slots() / 8) mgop_fp_compact();
    mgop_loop_lists();
    for (int i = 0; i < K_COUNT; i++) {
      struct mgop_watch *w = &mgop_server.watches[i];
      due = mgop_watch_wake_ms(w, now);
      if (w->state != MGOP_W_STREAM && w->state != MGOP_W_START && due == 0) {
        mgop_watch_step(w, now);
        due = mgop_watch_wake_ms(w, mgop_now_ms());
      }
      if (due < wait) wait = due;
      if (mgop_watch_fd(w) >= 0) {
        pfd[n] = (struct pollfd){mgop_watch_fd(w), POLLIN, 0};
        owner[n++] = i;
      }
    }
    /* what the watches just listed is admission's to read before this turn
     * serves a new certificate or reconciles (a webhook serving before the
     * template cache says "listed" would admit clusters it could judge) */
    mgop_publish();
    if (__atomic_exchange_n(&mgop_lease.new_term, 0, __ATOMIC_ACQ_REL))
      for (size_t i = 0; i < mgop_server.roots_span; i++) /* every known cluster gets a turn under the new leader */
        if (mgop_server.roots[i].used) mgop_enqueue(mgop_server.roots[i].ns, mgop_server.roots[i].name, 0);
    /* one root per turn so watches stay fresh; only the leader takes work
     * (the others keep watching, ready to take over) */
    mgop_crd_check(); /* once, before the first turn: it gates reconciling */
    if (mgop_loop_reconcile()) wait = 0;
    /* at the normal priority until the first turn could run: the lists
     * and that turn are the start-up's path, and the webhook serves no
     * certificate before it (mgop_loop_timers) */
    if (!yields && mgop_crd_first.state != 1) mgop_loop_yields(), yields = 1;
    /* streams open after the turn, each on a connection (and a TLS
     * handshake) of its own: the first reconcile after a start acts on the
     * lists without waiting for them (nor for them while the CRDs' first
     * look may still let that turn run) */
    for (int i = 0; i < K_COUNT && !mgop_stopping() && mgop_crd_first.state != 1; i++)
      if (mgop_server.watches[i].state == MGOP_W_START) {
        mgop_watch_step(&mgop_server.watches[i], mgop_now_ms());
        wait = 0; /* the next turn polls the new stream */
      }
    wait = mgop_loop_timers(wait);
    pfd[n] = (struct pollfd){mgop_shared.wake_pipe[0], POLLIN, 0};
    if (poll(pfd, (nfds_t)n + (mgop_shared.wake_pipe[0] >= 0), (int)wait) < 0 && errno != EINTR) {
      MGOP_LOG(MGOP_ERROR, ("poll failed: %s", strerror(errno)));
      return 1;
    }
    if (mgop_shared.wake_pipe[0] >= 0 && (pfd[n].revents & POLLIN)) { /* emptied, or every poll would return at once */
      char drain[64];
      while (read(mgop_shared.wake_pipe[0], drain, sizeof(drain)) > 0) {}
    }
    now = mgop_now_ms();
    for (int p = 0; p < n && !mgop_stopping(); p++) {
      struct mgop_watch *w = &mgop_server.watches[owner[p]];
      if (pfd[p].revents || mgop_watch_wake_ms(w, now) == 0) mgop_watch_step(w, now);
    }
    mgop_publish();
  }
  return 0;
}

int mgop_run(const struct mgop_options *opt); /* also called by tests */
int mgop_run(const struct mgop_options *opt) {
  struct sigaction sa;
  int rc, exit_code = 0, started[4] = {0, 0, 0, 0};
  pthread_t serve_thread, lease_thread, trace_thread, msec_thread;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = mgop_on_signal; /* no SA_RESTART: poll() must wake up */
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  if ((rc = mgop_setup(opt))) {
    if (mgop_crd_first.state == 1) pthread_join(mgop_crd_first.thread, NULL); /* set-up failed after starting it */
    return rc;
  }
  if (mgop_threads_start(&serve_thread, &lease_thread, &trace_thread, &msec_thread, started)) {
    MGOP_LOG(MGOP_ERROR, ("%s", mgop_errmsg()));
    exit_code = 2;
    __atomic_store_n(&mgop_stop_signal, SIGTERM, __ATOMIC_RELEASE);
  }
  mgop_loop();
  if (__atomic_load_n(&mgop_lease.lost, __ATOMIC_ACQUIRE)) exit_code = 1;
  else if (mgop_signalled()) MGOP_LOG(MGOP_INFO, ("shutting down on signal %d", mgop_signalled()));
  /* the threads: the serving one stops at once, the Lease one after
   * handing the Lease back (at most two 700 ms requests) */
  if (mgop_shared.stop_pipe[1] >= 0 && write(mgop_shared.stop_pipe[1], "s", 1) < 0)
    MGOP_LOG(MGOP_WARN, ("cannot signal the threads to stop: %s", strerror(errno)));
  if (started[2]) mgop_trace_stop(trace_thread); /* flushes beside the Lease's release */
  if (started[1]) pthread_join(lease_thread, NULL);
  if (started[0]) pthread_join(serve_thread, NULL);
  if (started[3]) pthread_join(msec_thread, NULL);
  if (mgop_crd_first.state == 1) pthread_join(mgop_crd_first.thread, NULL); /* stopped before its look was taken */
  mgop_pool_stop(&mgop_server.pool);
  mgop_bhc_stop(MGOP_IO_SLICE_MS); /* a backup check under way is not waited out: its thread ends after it */
  mgop_dns_stop(MGOP_IO_SLICE_MS); /* nor a lookup */
  mgop_arena_reset(&mgop_server.arena);
  for (int i = 0; i < 2; i++) mgop_srv_close(&mgop_http_srv[i]);
  if (mgop_wh.enabled) mgop_srv_close(&mgop_wh.srv);
  for (int i = 0; i < K_COUNT; i++) mgop_watch_close(&mgop_server.watches[i]);
  if (mgop_lease.enabled) mgop_kube_free(&mgop_lease.api);
  if (mgop_msec.enabled) mgop_kube_free(&mgop_msec.api);
  mgop_kube_free(&mgop_server.api);
  return exit_code;
}

/* ======================================================================
 * 14. render
 * ==================================================================== */
static struct mgop_manifest mgop_manifests[MGOP_MANIFESTS_MAX];
static int mgop_nmanifests;
static char mgop_manifest_store[2 * 1024 * 1024];
static size_t mgop_manifest_used;
static const char *mgop_render_ns = "default";

static int mgop_collect_manifest(void *ctx, const char *json, size_t n, int index);

/* Reads one manifest file into the manifest table. */
static int mgop_render_read(const char *file, char *text, size_t cap, char *scratch, size_t scap) {
  struct mgop_buf sb;
  size_t n;
  if (mgop_read_file(file, text, cap, &n)) return MGOP_ERR_IO;
  mgop_buf_init(&sb, scratch, scap);
  return mgop_yaml_to_json_docs(text, n, &sb, mgop_collect_manifest, (void *)file);
}

static int mgop_collect_manifest(void *ctx, const char *json, size_t n, int index) {
  static jsmntok_t tok[MGOP_JSON_TOKENS_MAX];
  struct mgop_json j;
  char kind[64], ns[64];
  const char *file = ctx;
  int k = -1;
  while (n > 0 && (json[n - 1] == ' ' || json[n - 1] == '\n')) n--;
  if (n == 0 || (n == 4 && !memcmp(json, "null", 4))) return MGOP_OK; /* an empty document, as kubectl skips it */
  if (mgop_json_parse(&j, json, n, tok, MGOP_JSON_TOKENS_MAX))
    return mgop_seterr(MGOP_ERR_PARSE, "%s document %d: %s", file, index + 1, mgop_errmsg());
  if (mgop_json_path_str(&j, 0, "kind", kind, sizeof(kind))) return MGOP_OK; /* not an object with a kind */
  for (int i = 0; i < K_COUNT; i++)
    if (!strcmp(mgop_kinds[i].kind, kind) && mgop_kinds[i].role <= MGOP_ROLE_TEMPLATE) k = i;
  if (k < 0) return MGOP_OK;
  if (mgop_nmanifests >= MGOP_MANIFESTS_MAX || mgop_manifest_used + n > sizeof(mgop_manifest_store))
    return mgop_seterr(MGOP_ERR_TOOBIG, "too many manifests to render");
  {
    struct mgop_manifest *m = &mgop_manifests[mgop_nmanifests++];
    m->kind = k;
    mgop_json_path_str(&j, 0, "metadata.name", m->name, sizeof(m->name));
    if (mgop_json_path_str(&j, 0, "metadata.namespace", ns, sizeof(ns)) || !ns[0])
      snprintf(ns, sizeof(ns), "%s", mgop_render_ns);
    snprintf(m->ns, sizeof(m->ns), "%s", ns);
    m->json = mgop_manifest_store + mgop_manifest_used;
    memcpy(m->json, json, n);
    m->len = n;
    mgop_manifest_used += n;
  }
  return MGOP_OK;
}

/* The topology records a cluster would write, decoded, as YAML comments
 * after its objects (so the stream still applies as it is). */
static void mgop_topo_render(struct mgop_rctx *r, FILE *out) {
  static struct mgop_topo_db dbs[MGOP_CRD_DATABASES_MAX + 4];
  static char mem[MGOP_ETCD_VALUE_MAX], js[4 * MGOP_ETCD_VALUE_MAX], split[1100];
  char key[MGOP_ROOT_PATH_BUF + 200];
  int ndb = mgop_topo_dbs(r, dbs, MGOP_CRD_DATABASES_MAX + 4);
  fprintf(out, "# Topology records in the global topology server (%s, root %s):\n", r->topo_addr, r->topo_root);
  for (int i = 0; i < r->ntopo_cells + (ndb > 0 ? ndb : 0); i++) {
    struct mgop_buf b, jb;
    struct mgop_jw w;
    struct mgop_topo_cell c;
    int is_db = i >= r->ntopo_cells;
    mgop_buf_init(&b, mem, sizeof(mem));
    mgop_buf_init(&jb, js, sizeof(js));
    mgop_jw_init(&w, &jb);
    if (is_db) {
      mgop_topo_key(key, sizeof(key), r->topo_root, "databases", dbs[i - r->ntopo_cells].name, "Database");
      if (mgop_topo_db_encode(&dbs[i - r->ntopo_cells], NULL, 0, &b) || mgop_topo_db_json((unsigned char *)b.p, b.len, &w))
        continue;
    } else {
      mgop_topo_cell_of(&r->topo_cells[i], &c, split, sizeof(split));
      mgop_topo_key(key, sizeof(key), r->topo_root, "cells", c.name, "Cell");
      if (mgop_topo_cell_encode(&c, NULL, 0, &b) || mgop_topo_cell_json((unsigned char *)b.p, b.len, &w)) continue;
    }
    fprintf(out, "#   %s (%s, %zu bytes): %s\n", key, is_db ? "create, then compare-and-swap" : "create-only", b.len,
            mgop_buf_cstr(&jb));
  }
}

/* Prints every child object for the clusters in the files, as a YAML stream
 * of JSON documents, through the same builders as the live reconcile. */
int mgop_render(const struct mgop_options *opt, FILE *out); /* also called by tests */
int mgop_render(const struct mgop_options *opt, FILE *out) {
  static char text[MGOP_KUBECONFIG_MAX], scratch[512 * 1024];
  static struct mgop_rctx r;
  int rc;
  mgop_arena_init(&mgop_server.arena, mgop_server.arena_mem, sizeof(mgop_server.arena_mem));
  mgop_nmanifests = 0;
  mgop_manifest_used = 0;
  mgop_render_ns = opt->render_namespace ? opt->render_namespace : "default";
  for (int f = 0; f < opt->nrender; f++) {
    const char *path = opt->render_files[f];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
      /* like kubectl -f DIR: its *.yaml, *.yml and *.json files, in name order */
      static char names[64][256], full[64][512];
      char *sorted[64];
      int nn = 0;
      DIR *dir = opendir(path);
      struct dirent *e;
      if (!dir) {
        fprintf(stderr, "multigres-op render: %s: cannot open the directory\n", path);
        return 2;
      }
      while ((e = readdir(dir)) != NULL) {
        size_t l = strlen(e->d_name);
        if (e->d_name[0] == '.' || l >= sizeof(names[0])) continue;
        if (!(l > 5 && !strcmp(e->d_name + l - 5, ".yaml")) && !(l > 4 && !strcmp(e->d_name + l - 4, ".yml")) &&
            !(l > 5 && !strcmp(e->d_name + l - 5, ".json")))
          continue;
        if (nn == 64) {
          closedir(dir);
          fprintf(stderr, "multigres-op render: %s: more than 64 manifest files; pass fewer\n", path);
          return 2;
        }
        snprintf(names[nn], sizeof(names[nn]), "%s", e->d_name);
        sorted[nn] = names[nn];
        nn++;
      }
      closedir(dir);
      qsort(sorted, (size_t)nn, sizeof(sorted[0]), mgop_cmp_str);
      for (int i = 0; i < nn; i++) {
        snprintf(full[i], sizeof(full[i]), "%s/%s", path, sorted[i]);
        if (mgop_render_read(full[i], text, sizeof(text), scratch, sizeof(scratch))) {
          fprintf(stderr, "multigres-op render: %s: %s\n", full[i], mgop_errmsg());
          return 2;
        }
      }
      continue;
    }
    if ((rc = mgop_render_read(path, text, sizeof(text), scratch, sizeof(scratch)))) {
      if (rc == MGOP_ERR_IO) fprintf(stderr, "multigres-op render: %s\n", mgop_errmsg()); /* names the file */
      else fprintf(stderr, "multigres-op render: %s: %s\n", path, mgop_errmsg());
      return 2;
    }
  }
  {
    int clusters = 0;
    for (int i = 0; i < mgop_nmanifests; i++) clusters += mgop_manifests[i].kind == K_CLUSTER;
    if (!clusters) {
      fprintf(stderr, "multigres-op render: no MultigresCluster in the files given; pass the cluster manifest with -f\n");
      return 1;
    }
  }
  for (int i = 0; i < mgop_nmanifests; i++) {
    struct mgop_manifest *m = &mgop_manifests[i];
    if (m->kind != K_CLUSTER) continue;
    mgop_rctx_clear(&r);
    mgop_arena_reset(&mgop_server.arena);
    r.render = 1;
    r.arena = &mgop_server.arena;
    r.ns = m->ns;
    r.name = m->name;
    r.manifests = mgop_manifests;
    r.nmanifests = mgop_nmanifests;
    snprintf(r.uid, sizeof(r.uid), "00000000-0000-0000-0000-000000000000");
    if (mgop_parse_arena(r.arena, m->json, m->len, &r.root)) {
      fprintf(stderr, "multigres-op render: %s: %s\n", m->name, mgop_errmsg());
      mgop_arena_reset(&mgop_server.arena);
      return 2;
    }
    r.spec = mgop_json_key(&r.root, 0, "spec");
    rc = mgop_reconcile_tree(&r);
    if (r.stalled_reason[0] || rc) {
      if (r.stalled_reason[0])
        fprintf(stderr, "multigres-op render: MultigresCluster %s/%s: %s: %s\n", r.ns, r.name, r.stalled_reason,
                r.stalled_msg);
      else
        fprintf(stderr, "multigres-op render: MultigresCluster %s/%s: %s\n", r.ns, r.name, mgop_errmsg());
      mgop_arena_reset(&mgop_server.arena);
      return 1;
    }
    fprintf(out, "# MultigresCluster %s/%s: %d objects\n", r.ns, r.name, r.ndesired);
    for (int d = 0; d < r.ndesired; d++) fprintf(out, "---\n%.*s\n", (int)r.desired[d].len, r.desired[d].json);
    mgop_topo_render(&r, out);
  }
  mgop_arena_reset(&mgop_server.arena);
  return 0;
}

/* ======================================================================
 * 15. Flags and main
 * ==================================================================== */
#define MGOP_RENDER_USAGE "multigres-op render [-n NAMESPACE] -f FILE|DIR [-f FILE|DIR...]"
static const char mgop_usage[] =
    "Usage: multigres-op [flags]\n"
    "       " MGOP_RENDER_USAGE "\n"
    "\n"
    "Kubernetes operator for Multigres. Watches multigres.com/v1alpha1 resources\n"
    "and makes the cluster match them. `render` prints the objects the operator\n"
    "would create for the MultigresClusters (and templates) in FILEs, offline;\n"
    "-n sets the namespace of manifests that name none (default: default).\n"
    "\n"
    "Flags (--flag=value or --flag value; booleans as --flag or --flag=false):\n"
    "  --kubeconfig PATH        kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)\n"
    "  --context NAME           kubeconfig context (default: current-context)\n"
    "  --namespace NS           watch only this namespace (default: all namespaces)\n"
    "  --leader-elect           elect one active replica through a Lease (default: false)\n"
    "  --leader-election-namespace NS  namespace of the Lease (default: the operator's own)\n"
    "  --leader-election-id NAME       name of the Lease (default: multigres-operator.multigres.com)\n"
    "  --metrics-bind-address ADDR     serve /metrics, e.g. :8080 (default: 0, off)\n"
    "  --health-probe-bind-address ADDR  serve /healthz and /readyz, e.g. :8081 (default: 0, off)\n"
    "  --webhook-enable         serve the validating admission webhook (default: true)\n"
    "  --webhook-bind-address ADDR     where it listens (default: :9443)\n"
    "  --webhook-use-internal-certs    built-in CA and certificate in Secrets (default: true);\n"
    "                           false: tls.crt/tls.key from --webhook-cert-dir (cert-manager)\n"
    "  --webhook-cert-dir DIR   (default: /var/run/secrets/webhook)\n"
    "  --webhook-service-name NAME     Service in front of the webhook, for the certificate's names\n"
    "                           (default: multigres-operator-webhook-service)\n"
    "  --webhook-service-namespace NS  its namespace, and the Secrets' (default: the operator's own)\n"
    "  --webhook-configuration-name NAME  ValidatingWebhookConfiguration that gets the CA bundle\n"
    "                           (default: multigres-operator-validating-webhook-configuration)\n"
    "  --webhook-owner-deployment NAME  owner of the certificate Secrets\n"
    "                           (default: multigres-operator)\n"
    "  --webhook-extra-sans LIST       more certificate names or IPs, comma-separated (out-of-cluster runs)\n"
    "  --webhook-cert-validity D       serving certificate lifetime (default: 8760h)\n"
    "  --webhook-ca-validity D         CA lifetime (default: 87600h)\n"
    "  --webhook-cert-check-interval D how often certificates are checked (default: 1h); each is\n"
    "                           renewed when a third of its life or two intervals remain\n"
    "  --backup-check-interval D       how often each shard's backups are listed from multiadmin for\n"
    "                           its BackupHealthy condition (default: 2m; 0: never)\n"
    "  --pooler-role-interval D        how often each pool's pooler records are read from the topology\n"
    "                           for Shard status.podRoles and primaryCell (default: 30s; 0: never)\n"
    "  --drain-grace D          how long a pool pod drains (its pooler out of the topology, so gateways\n"
    "                           stop sending it work) before it is deleted, from its drain request\n"
    "                           (default: 5s; at most 240s; 0: no wait)\n"
    "  --multiadmin-address HOST:PORT  where every cluster's multiadmin HTTP API is reached\n"
    "                           (default: the cluster's multiadmin Service, port 18000;\n"
    "                           for runs outside the cluster and tests)\n"
    "  --pgbackrest-cert-validity D    lifetime of each shard's pgBackRest certificate (default: 8760h);\n"
    "                           renewed when a third of it remains\n"
    "  --pgbackrest-ca-validity D      lifetime of each shard's pgBackRest CA (default: 87600h)\n"
    "  --topology-registration  write each cluster's Cell and Database records into Multigres's\n"
    "                           global topology (default: true); false: none, and Ready does not\n"
    "                           wait for them (test control planes whose etcd pods are simulated)\n"
    "  --max-objects N          rows of the table of objects the operator owns, for all clusters\n"
    "                           (default: 8192; a minimal cluster needs about 26, so 1,000 need\n"
    "                           32768; about 220 bytes each). Full: a cluster stalls, LimitReached\n"
    "  --max-metric-series N    labelled gauge series (default: 2048; about 7 a minimal cluster;\n"
    "                           about 310 bytes each); full: a series is not exposed, and counted\n"
    "  --max-applies-in-flight N  server-side applies of one reconcile phase sent at once, each\n"
    "                           beyond the first on an API connection of its own (default: 4;\n"
    "                           1 to 17; 1: one at a time)\n"
    "  --zap-devel              development mode: console encoder, debug level (default: true)\n"
    "  --zap-log-level LEVEL    debug, info, warn, error, or 0 (debug), 1 (info), 2 (error);\n"
    "                           default: debug with --zap-devel, else info\n"
    "  --zap-encoder ENC        console or json (default: console with --zap-devel, else json)\n"
    "  --zap-stacktrace-level LEVEL  accepted for compatibility; a C binary has no stack traces\n"
    "  --zap-time-encoding E    epoch, millis, nano, iso8601, rfc3339 or rfc3339nano\n"
    "                           (default: ISO 8601 in microseconds)\n"
    "  --version                print the version and exit\n"
    "  -h, --help               print this help and exit\n"
    "The reference operator's flags (docs/operations.md): --webhook-port N (the port of\n"
    "  --webhook-bind-address), --webhook-service-account NAME (also POD_SERVICE_ACCOUNT; POD_NAMESPACE\n"
    "  is the default webhook namespace), --enable-http2 (accepted; the servers speak HTTP/1.1),\n"
    "  --metrics-secure[=true] (/metrics over HTTPS, each scraper's bearer token checked by TokenReview\n"
    "  and SubjectAccessReview: get on /metrics; --metrics-cert-path DIR with tls.crt/tls.key, else\n"
    "  a self-signed certificate)\n"
    "  --image-update-strategy S  immediate (default) or lazy: when clusters that do not set\n"
    "                           spec.imageUpdatePolicy.strategy adopt a changed default image set\n"
    "                           (MULTIGRES_IMAGE_<COMPONENT> overrides a built-in image; docs/operations.md)\n"
    "Commands: multigres-op render [-n NS] -f FILE|DIR ...  (the objects a cluster makes, offline);\n"
    "  multigres-op etcd-defrag --endpoints http://HOST:PORT[,...] [--dry-run]  (one defragmentation\n"
    "  look at an etcd: every member answering, one leader; the member with half its backend free)\n";

/* Every flag the operator accepts; anything else is an error. Each says
 * what it sets: a string of mgop_options (at its offset), or a kind whose
 * value mgop_flag_value checks and stores. */
enum mgop_flag_kind { MGOP_F_STRING, MGOP_F_BOOL, MGOP_F_DURATION, MGOP_F_COUNT, MGOP_F_LEVEL, MGOP_F_ENCODER,
                      MGOP_F_DROPIN };
struct mgop_flag { const char *name; int kind; size_t at; };
#define MGOP_OPT(field) offsetof(struct mgop_options, field)
static const struct mgop_flag mgop_flags[] = {
    {"kubeconfig", MGOP_F_STRING, MGOP_OPT(kubeconfig)},
    {"context", MGOP_F_STRING, MGOP_OPT(context)},
    {"namespace", MGOP_F_STRING, MGOP_OPT(watch_namespace)},
    {"leader-elect", MGOP_F_BOOL, 0},
    {"leader-election-namespace", MGOP_F_STRING, MGOP_OPT(leader_election_namespace)},
    {"leader-election-id", MGOP_F_STRING, MGOP_OPT(leader_election_id)},
    {"zap-devel", MGOP_F_BOOL, 0},
    {"zap-log-level", MGOP_F_LEVEL, 0},
    {"zap-encoder", MGOP_F_ENCODER, 0},
    {"zap-stacktrace-level", MGOP_F_LEVEL, 0},
    {"metrics-bind-address", MGOP_F_STRING, MGOP_OPT(metrics_addr)},
    {"health-probe-bind-address", MGOP_F_STRING, MGOP_OPT(probe_addr)},
    {"webhook-enable", MGOP_F_BOOL, 0},
    {"webhook-use-internal-certs", MGOP_F_BOOL, 0},
    {"webhook-cert-dir", MGOP_F_STRING, MGOP_OPT(webhook_cert_dir)},
    {"webhook-service-name", MGOP_F_STRING, MGOP_OPT(webhook_service)},
    {"webhook-service-namespace", MGOP_F_STRING, MGOP_OPT(webhook_service_ns)},
    {"webhook-bind-address", MGOP_F_STRING, MGOP_OPT(webhook_bind)},
    {"webhook-configuration-name", MGOP_F_STRING, MGOP_OPT(webhook_config)},
    {"webhook-owner-deployment", MGOP_F_STRING, MGOP_OPT(webhook_owner)},
    {"webhook-extra-sans", MGOP_F_STRING, MGOP_OPT(webhook_extra_sans)},
    {"webhook-cert-validity", MGOP_F_DURATION, 0},
    {"webhook-ca-validity", MGOP_F_DURATION, 0},
    {"webhook-cert-check-interval", MGOP_F_DURATION, 0},
    {"pgbackrest-cert-validity", MGOP_F_DURATION, 0},
    {"pgbackrest-ca-validity", MGOP_F_DURATION, 0},
    {"multiadmin-address", MGOP_F_STRING, MGOP_OPT(multiadmin_address)},
    {"backup-check-interval", MGOP_F_DURATION, 0},
    {"pooler-role-interval", MGOP_F_DURATION, 0},
    {"drain-grace", MGOP_F_DURATION, 0},
    {"topology-registration", MGOP_F_BOOL, 0},
    {"max-objects", MGOP_F_COUNT, 0},
    {"max-metric-series", MGOP_F_COUNT, 0},
    {"max-applies-in-flight", MGOP_F_COUNT, 0},
    /* the reference operator's, so a Deployment written for it starts
     * (mgop_flag_dropin says what each does here) */
    {"metrics-secure", MGOP_F_BOOL, 0},
    {"metrics-cert-path", MGOP_F_STRING, MGOP_OPT(metrics_cert_path)},
    {"enable-http2", MGOP_F_BOOL, 0},
    {"webhook-port", MGOP_F_DROPIN, 0},
    {"webhook-service-account", MGOP_F_STRING, MGOP_OPT(webhook_service_account)},
    {"zap-time-encoding", MGOP_F_DROPIN, 0},
    {"image-update-strategy", MGOP_F_DROPIN, 0},
};

/* "90s", "10m", "8760h", "1h30m" -> seconds; -1 when malformed or < 1s. */
static long long mgop_parse_duration(const char *v) {
  long long total = 0;
  if (!*v) return -1;
  while (*v) {
    char *end;
    long long n = strtoll(v, &end, 10);
    if (end == v || n < 0 || n > 100000000) return -1;
    if (*end == 's') total += n;
    else if (*end == 'm') total += n * 60;
    else if (*end == 'h') total += n * 3600;
    else return -1;
    v = end + 1;
  }
  return total >= 1 ? total : -1;
}

/* Accepts --flag=value and --flag value. Returns 0, or 2 with a message. */
/* `render -f FILE... [-n NS]`. */
static int mgop_parse_render(int argc, char **argv, struct mgop_options *opt) {
  for (int i = 2; i < argc; i++) {
    const char *f = NULL;
    if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--filename")) f = i + 1 < argc ? argv[++i] : NULL;
    else if (!strncmp(argv[i], "--filename=", 11)) f = argv[i] + 11;
    else if (!strcmp(argv[i], "-n") || !strcmp(argv[i], "--namespace") || !strncmp(argv[i], "--namespace=", 12)) {
      const char *ns = argv[i][1] == 'n' ? (i + 1 < argc ? argv[++i] : NULL)
                       : argv[i][11] == '=' ? argv[i] + 12 : (i + 1 < argc ? argv[++i] : NULL);
      if (!ns || !ns[0] || strlen(ns) > 63) {
        fprintf(stderr, "multigres-op render: --namespace needs a namespace name (at most 63 characters)\n");
        return 2;
      }
      opt->render_namespace = ns;
      continue;
    } else {
      fprintf(stderr, "multigres-op render: unexpected \"%s\"; usage: %s\n", argv[i], MGOP_RENDER_USAGE);
      return 2;
    }
    if (!f || opt->nrender >= 16) {
      fprintf(stderr, "multigres-op render: -f needs a file (at most 16)\n");
      return 2;
    }
    opt->render_files[opt->nrender++] = f;
  }
  if (!opt->nrender) {
    fprintf(stderr, "multigres-op render: give at least one -f FILE\n");
    return 2;
  }
  return 0;
}

/* --flag, --flag=true, --flag=false (as Go's flag package). */
static int mgop_flag_bool(const struct mgop_flag *f, const char *name, const char *eq, struct mgop_options *opt) {
  int on;
  if (!eq || !strcmp(eq + 1, "true")) on = 1;
  else if (!strcmp(eq + 1, "false")) on = 0;
  else {
    fprintf(stderr, "multigres-op: %s takes true or false, not \"%s\"\n", name, eq + 1);
    return 2;
  }
  if (!strcmp(f->name, "zap-devel")) opt->zap_devel = on;
  else if (!strcmp(f->name, "leader-elect")) opt->leader_elect = on;
  else if (!strcmp(f->name, "webhook-enable")) opt->webhook_enable = on;
  else if (!strcmp(f->name, "webhook-use-internal-certs")) opt->webhook_internal_certs = on;
  else if (!strcmp(f->name, "topology-registration")) mgop_topo_enabled = on;
  else if (!strcmp(f->name, "enable-http2")) opt->enable_http2 = on;
  else if (!strcmp(f->name, "metrics-secure")) opt->metrics_secure = on;
  return 0;
}

/* The reference operator's flags that take a value. */
static int mgop_flag_dropin(const struct mgop_flag *f, const char *name, const char *val, struct mgop_options *opt) {
  static char bind[16];
  static const char *const enc[] = {"epoch", "millis", "nano", "iso8601", "rfc3339", "rfc3339nano"};
  if (!strcmp(f->name, "webhook-port")) { /* the port of --webhook-bind-address */
    char *end;
    long port = strtol(val, &end, 10);
    if (*end || end == val || port < 1 || port > 65535) {
      fprintf(stderr, "multigres-op: %s takes a port from 1 to 65535, not \"%s\"\n", name, val);
      return 2;
    }
    snprintf(bind, sizeof(bind), ":%ld", port);
    opt->webhook_port = bind;
    return 0;
  }
  if (!strcmp(f->name, "zap-time-encoding")) {
    for (int i = 0; i < (int)(sizeof(enc) / sizeof(enc[0])); i++)
      if (!strcmp(val, enc[i])) return mgop_log_time = i, 0;
    fprintf(stderr, "multigres-op: %s must be epoch, millis, nano, iso8601, rfc3339 or rfc3339nano, not \"%s\"\n",
            name, val);
    return 2;
  }
  /* image-update-strategy: the default for clusters that do not set
   * spec.imageUpdatePolicy.strategy (section 4, image sets) */
  if (!strcmp(val, "immediate") || !strcmp(val, "lazy")) return mgop_img_defaults.lazy = !strcmp(val, "lazy"), 0;
  fprintf(stderr, "multigres-op: %s must be immediate or lazy, not \"%s\"\n", name, val);
  return 2;
}

/* A duration flag: seconds, where it goes; 0 only for the check intervals. */
static int mgop_flag_duration(const struct mgop_flag *f, const char *name, const char *val, struct mgop_options *opt) {
  int may_be_off = !strcmp(f->name, "backup-check-interval") || !strcmp(f->name, "pooler-role-interval") ||
                   !strcmp(f->name, "drain-grace");
  long long d = may_be_off && !strcmp(val, "0") ? 0 : mgop_parse_duration(val);
  if (d < 0) {
    fprintf(stderr, "multigres-op: %s takes a duration such as 90s, 10m or 8760h%s, not \"%s\"\n", name,
            may_be_off ? ", or 0 (off)" : "", val);
    return 2;
  }
  if (!strcmp(f->name, "drain-grace") && d > MGOP_DRAIN_GRACE_MAX_S) {
    fprintf(stderr, "multigres-op: %s is at most %ds (drains time out after %ds), not \"%s\"\n", name,
            MGOP_DRAIN_GRACE_MAX_S, MGOP_DRAIN_TIMEOUT_S, val);
    return 2;
  }
  if (!strcmp(f->name, "drain-grace")) mgop_drain_grace_s = d;
  else if (!strcmp(f->name, "backup-check-interval")) mgop_backup_check_ms = d * 1000;
  else if (!strcmp(f->name, "pooler-role-interval")) mgop_role_check_ms = d * 1000;
  else if (!strcmp(f->name, "pgbackrest-cert-validity")) mgop_pgbr_cert_validity_s = d;
  else if (!strcmp(f->name, "pgbackrest-ca-validity")) mgop_pgbr_ca_validity_s = d;
  else if (!strcmp(f->name, "webhook-cert-validity")) opt->webhook_cert_validity_s = d;
  else if (!strcmp(f->name, "webhook-ca-validity")) opt->webhook_ca_validity_s = d;
  else opt->webhook_check_s = d;
  return 0;
}

/* A flag with a value, checked and stored. */
static int mgop_flag_value(const struct mgop_flag *f, const char *name, const char *val, struct mgop_options *opt) {
  switch (f->kind) {
    case MGOP_F_STRING: *(const char **)((char *)opt + f->at) = val; return 0;
    case MGOP_F_DURATION: return mgop_flag_duration(f, name, val, opt);
    case MGOP_F_COUNT: {
      char *end;
      long long n = strtoll(val, &end, 10);
      if (!strcmp(f->name, "max-applies-in-flight")) {
        if (*end || end == val || n < 1 || n > MGOP_POOL_WORKERS_MAX + 1) {
          fprintf(stderr, "multigres-op: %s takes a count from 1 to %d, not \"%s\"\n", name, MGOP_POOL_WORKERS_MAX + 1,
                  val);
          return 2;
        }
        opt->applies_in_flight = (int)n;
        return 0;
      }
      if (*end || end == val || n < 64 || n > 4194304) {
        fprintf(stderr, "multigres-op: %s takes a count from 64 to 4194304, not \"%s\"\n", name, val);
        return 2;
      }
      if (!strcmp(f->name, "max-objects")) opt->max_objects = (size_t)n;
      else opt->max_series = (size_t)n;
      return 0;
    }
    case MGOP_F_LEVEL: { /* names, or the integers of seed 003: 0 debug, 1 info, 2 error */
      int l;
      if (!strcmp(val, "debug") || !strcmp(val, "0")) l = MGOP_DEBUG;
      else if (!strcmp(val, "info") || !strcmp(val, "1")) l = MGOP_INFO;
      else if (!strcmp(val, "warn")) l = MGOP_WARN;
      else if (!strcmp(val, "error") || !strcmp(val, "2") || !strcmp(val, "panic")) l = MGOP_ERROR;
      else {
        fprintf(stderr, "multigres-op: %s must be debug, info, warn, error, panic, 0, 1 or 2, not \"%s\"\n", name, val);
        return 2;
      }
      if (!strcmp(f->name, "zap-log-level")) opt->zap_level = l, opt->zap_level_set = 1;
      return 0;
    }
    case MGOP_F_DROPIN: return mgop_flag_dropin(f, name, val, opt);
    default: /* MGOP_F_ENCODER */
      if (strcmp(val, "json") && strcmp(val, "console")) {
        fprintf(stderr, "multigres-op: --zap-encoder must be json or console, not \"%s\"\n", val);
        return 2;
      }
      opt->zap_json = !strcmp(val, "json");
      return 0;
  }
}

static void mgop_flag_defaults(struct mgop_options *opt) { /* seed 003's */
  opt->webhook_enable = opt->webhook_internal_certs = 1;
  opt->webhook_cert_dir = "/var/run/secrets/webhook";
  opt->webhook_service = "multigres-operator-webhook-service";
  opt->webhook_bind = ":9443";
  opt->webhook_config = "multigres-operator-validating-webhook-configuration";
  opt->webhook_owner = "multigres-operator";
  opt->webhook_cert_validity_s = 365LL * 24 * 3600;
  opt->webhook_ca_validity_s = 10LL * 365 * 24 * 3600;
  opt->webhook_check_s = 3600;
  opt->zap_devel = 1; /* seed 003: --zap-devel defaults to true */
  opt->zap_json = -1;
  opt->zap_level = opt->zap_level_set = 0;
}

/* multigres-op etcd-defrag --endpoints URL[,URL...] [--dry-run]: one look
 * at an etcd cluster, as the operator takes at a managed etcd with
 * defragmentationEnabled (same gate, same pick), for an etcd the operator
 * does not manage or for a look now. Plain http:// endpoints. Exit 0 when
 * the look was taken (whatever it decided), 1 when it could not be. */
static int mgop_etcd_defrag_cmd(int argc, char **argv) {
  static struct mgop_etcd client, member;
  static struct mgop_defrag_view view;
  static char list[MGOP_ETCD_ENDPOINTS_MAX * MGOP_ETCD_URL_MAX];
  const char *eps[MGOP_ETCD_ENDPOINTS_MAX];
  char msg[700] = "", why[300];
  int n = 0, dry = 0, deferred, rc;
  for (int i = 2; i < argc; i++) {
    if (!strcmp(argv[i], "--dry-run")) dry = 1;
    else if (!strcmp(argv[i], "--endpoints") && i + 1 < argc) snprintf(list, sizeof(list), "%s", argv[++i]);
    else if (!strncmp(argv[i], "--endpoints=", 12)) snprintf(list, sizeof(list), "%s", argv[i] + 12);
    else {
      fprintf(stderr, "multigres-op etcd-defrag: unknown argument \"%s\"; usage: multigres-op etcd-defrag "
              "--endpoints http://HOST:PORT[,...] [--dry-run]\n", argv[i]);
      return 2;
    }
  }
  for (char *save = NULL, *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    if (n == MGOP_ETCD_ENDPOINTS_MAX) {
      fprintf(stderr, "multigres-op etcd-defrag: at most %d endpoints\n", MGOP_ETCD_ENDPOINTS_MAX);
      return 2;
    }
    eps[n++] = t;
  }
  if (!n) {
    fprintf(stderr, "multigres-op etcd-defrag: --endpoints is required (http://HOST:PORT[,...])\n");
    return 2;
  }
  if ((rc = mgop_etcd_init(&client, eps, n, NULL, 0, NULL, 0, NULL, 0))) {
    fprintf(stderr, "multigres-op etcd-defrag: %s\n", mgop_errmsg());
    return 2;
  }
  if (dry) {
    int pick;
    if ((rc = mgop_defrag_gather(&client, &member, &view))) goto failed;
    for (int i = 0; i < view.m.n; i++)
      printf("member %s %s: %s\n", view.m.name[i], view.m.url[i], view.err[i]);
    pick = mgop_defrag_pick(&view, &deferred, why, sizeof(why));
    if (pick >= 0) printf("would defragment member %s\n", view.m.name[pick]);
    else printf("%s: %s\n", deferred ? "deferred" : "nothing to defragment", why);
    return 0;
  }
  if ((rc = mgop_defrag_pass(&client, &member, &view, &deferred, msg, sizeof(msg))) < 0) goto failed;
  printf("%s: %s\n", rc == 1 ? "defragmented" : deferred ? "deferred" : "nothing to defragment", msg);
  return 0;
failed:
  fprintf(stderr, "multigres-op etcd-defrag: %s\n", msg[0] ? msg : mgop_errmsg());
  return 1;
}

int mgop_parse_flags(int argc, char **argv, struct mgop_options *opt, int *exit_now);
int mgop_parse_flags(int argc, char **argv, struct mgop_options *opt, int *exit_now) {
  *exit_now = 0;
  mgop_flag_defaults(opt);
  if (argc > 1 && !strcmp(argv[1], "render")) return mgop_parse_render(argc, argv, opt);
  if (argc > 1 && !strcmp(argv[1], "etcd-defrag")) return *exit_now = 1, mgop_etcd_defrag_cmd(argc, argv);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val, *eq;
    char name[64];
    const struct mgop_flag *f = NULL;
    int rc;
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
    for (size_t k = 0; k < sizeof(mgop_flags) / sizeof(mgop_flags[0]); k++)
      if (!strcmp(name + 2, mgop_flags[k].name)) f = &mgop_flags[k];
    if (!f) {
      fprintf(stderr, "multigres-op: unknown flag \"%s\"; see --help for the supported flags\n", name);
      return 2;
    }
    if (f->kind == MGOP_F_BOOL) rc = mgop_flag_bool(f, name, eq, opt);
    else if (eq || i + 1 < argc) val = eq ? eq + 1 : argv[++i], rc = mgop_flag_value(f, name, val, opt);
    else {
      fprintf(stderr, "multigres-op: flag %s needs a value\n", name);
      rc = 2;
    }
    if (rc) return rc;
  }
  /* the mode sets the defaults; explicit flags win, in any order */
  mgop_log_level = opt->zap_level_set ? opt->zap_level : opt->zap_devel ? MGOP_DEBUG : MGOP_INFO;
  mgop_log_json = opt->zap_json >= 0 ? opt->zap_json : !opt->zap_devel;
  if (opt->multiadmin_address) mgop_ma_override = opt->multiadmin_address;
  if (opt->webhook_port) opt->webhook_bind = opt->webhook_port;
  if (opt->metrics_cert_path && !opt->metrics_secure) {
    fprintf(stderr, "multigres-op: --metrics-cert-path is for --metrics-secure (plain HTTP has no certificate): "
            "add --metrics-secure, or drop --metrics-cert-path\n");
    return 2;
  }
  /* the reference's Deployment sets these from the downward API */
  if (!opt->webhook_service_ns && getenv("POD_NAMESPACE") && getenv("POD_NAMESPACE")[0])
    opt->webhook_service_ns = getenv("POD_NAMESPACE");
  if (!opt->webhook_service_account && getenv("POD_SERVICE_ACCOUNT") && getenv("POD_SERVICE_ACCOUNT")[0])
    opt->webhook_service_account = getenv("POD_SERVICE_ACCOUNT");
  return 0;
}

#ifndef MGOP_NO_MAIN
/* The operator's own traces, from the standard OTEL_* variables: 0, or 2
 * with the variable and the fix on stderr. */
static const char *mgop_getenv(const char *name) { return getenv(name); }
static int mgop_tracing_init(void) {
  static struct mgop_trace_cfg cfg;
  if (mgop_trace_config(&cfg, mgop_getenv, MGOP_VERSION) || mgop_trace_start(&cfg)) {
    MGOP_LOG(MGOP_ERROR, ("tracing: %s", mgop_errmsg()));
    return 2;
  }
  if (cfg.note[0]) MGOP_LOG(MGOP_WARN, ("tracing: %s", cfg.note));
  if (cfg.enabled) MGOP_LOG(MGOP_INFO, ("tracing: spans go to %s (OTLP/HTTP JSON, every %lld ms or %d spans)", cfg.url,
                                        cfg.delay_ms, cfg.batch_max));
  return 0;
}

int main(int argc, char **argv) {
  struct mgop_options opt;
  int exit_now, rc;
  mgop_stats.start_ms = mgop_now_ms();
  memset(&opt, 0, sizeof(opt));
  opt.watch_namespace = "";
  rc = mgop_parse_flags(argc, argv, &opt, &exit_now);
  if (rc || exit_now) return rc;
  if ((rc = mgop_img_defaults_init()) || (rc = mgop_otel_init())) return rc;
  if (opt.nrender) return mgop_render(&opt, stdout);
  if ((rc = mgop_tracing_init())) return rc;
  return mgop_run(&opt);
}
#endif
