/* multigres-op.c - the policy of multigres-op: kinds, reconcile, status,
 * flags and main. The mechanism is in multigres-op.h.
 *
 * Table of contents
 *   1. Kind table          every resource we watch, its role and paths
 *   2. Built-in defaults   the last level of the defaults chain
 *   3. Reconcile context   one root being reconciled (live or render)
 *   4. Resolution          inline spec > templateDefaults > "default" template > built-in
 *   5. Builders            desired objects: metadata, TopoServer, etcd
 *   6. Apply               fingerprint check, server-side apply, prune-free
 *   7. Status              kstatus conditions on children and the root
 *   8. Events              watch events -> fingerprints and the work set
 *   9. The loop            one poll()-driven loop over every watch and the work set
 *  10. render              the same builders, offline, for pull-request review
 *  11. Flags and main      (main behind MGOP_NO_MAIN so tests can include this file)
 */
#define MULTIGRES_OP_IMPLEMENTATION
#include "multigres-op.h"

#include <signal.h>

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
enum mgop_role { MGOP_ROLE_ROOT, MGOP_ROLE_TEMPLATE, MGOP_ROLE_CHILD, MGOP_ROLE_WORKLOAD };
enum mgop_kind_id {
  K_CLUSTER, K_CORET, K_CELLT, K_SHARDT,              /* user-edited     */
  K_TOPO, K_CELL, K_TG, K_SHARD,                      /* our children    */
  K_STS, K_DEPLOY, K_SVC, K_CM, K_PDB,                /* our workloads   */
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
};

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

static const char mgop_default_global_topo[] =
    "{\"etcd\":{\"image\":\"" MGOP_IMAGE_ETCD "\",\"replicas\":3,\"storage\":{\"size\":\"1Gi\"},"
    "\"resources\":{\"requests\":{\"cpu\":\"100m\",\"memory\":\"256Mi\"},\"limits\":{\"memory\":\"512Mi\"}},"
    "\"rootPath\":\"/multigres/global\"}}";

/* ======================================================================
 * 3. Reconcile context
 * ==================================================================== */
#define MGOP_DESIRED_MAX 256
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

struct mgop_rctx {
  int render;                 /* 1: offline, no API calls             */
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
  /* render mode inputs */
  struct mgop_manifest *manifests;
  int nmanifests;
  /* counters for status and metrics */
  int applied, skipped, failed;
  char last_error[512];
};

static struct mgop_kube *mgop_api_ptr; /* live mode API client            */

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

/* Parses JSON text into arena-allocated tokens. */
static int mgop_parse_arena(struct mgop_arena *a, const char *js, size_t n, struct mgop_json *out) {
  unsigned maxtok = (unsigned)(n / 2 + 16);
  jsmntok_t *tok;
  if (maxtok > MGOP_JSON_TOKENS_MAX) maxtok = MGOP_JSON_TOKENS_MAX;
  tok = mgop_arena_alloc(a, maxtok * sizeof(jsmntok_t));
  if (!tok) return mgop_seterr(MGOP_ERR_NOMEM, "reconcile arena exhausted");
  return mgop_json_parse(out, js, n, tok, maxtok);
}

/* ======================================================================
 * 4. Resolution
 * ==================================================================== */
/* Fetches a template's JSON (live: GET; render: from the files given).
 * Returns MGOP_ERR_NOTFOUND when it does not exist. */
static int mgop_fetch(struct mgop_rctx *r, int kind, const char *name, struct mgop_json *out) {
  if (r->render) {
    for (int i = 0; i < r->nmanifests; i++) {
      struct mgop_manifest *m = &r->manifests[i];
      if (m->kind == kind && !strcmp(m->name, name) && !strcmp(m->ns, r->ns))
        return mgop_parse_arena(r->arena, m->json, m->len, out);
    }
    return MGOP_ERR_NOTFOUND;
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
    return mgop_parse_arena(r->arena, b.p, b.len, out);
  }
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
/* A desired object in the making: the writer, and where the hash goes. */
struct mgop_build {
  struct mgop_rctx *r;
  struct mgop_buf b;
  struct mgop_jw w;
  size_t hash_at;
  int kind;
  char name[MGOP_NAME_MAX + 1];
};

static int mgop_build_begin(struct mgop_rctx *r, struct mgop_build *o, int kind, const char *name) {
  size_t cap = 32 * 1024;
  char *mem = mgop_arena_alloc(r->arena, cap);
  if (!mem) return mgop_seterr(MGOP_ERR_NOMEM, "reconcile arena exhausted");
  o->r = r;
  o->kind = kind;
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
static void mgop_build_meta(struct mgop_build *o, const char *component, int owner_kind, const char *owner_name,
                            const char *owner_uid) {
  struct mgop_jw *w = &o->w;
  struct mgop_rctx *r = o->r;
  mgop_jw_key(w, "metadata");
  mgop_jw_obj(w);
  mgop_jw_key(w, "name"); mgop_jw_str(w, o->name);
  mgop_jw_key(w, "namespace"); mgop_jw_str(w, r->ns);
  mgop_jw_key(w, "labels");
  mgop_jw_obj(w);
  mgop_labels(w, r->name, component);
  mgop_jw_obj_end(w);
  mgop_jw_key(w, "annotations");
  mgop_jw_obj(w);
  mgop_jw_key(w, MGOP_HASH_ANNOTATION);
  o->hash_at = o->b.len + 1; /* after the opening quote */
  mgop_jw_str(w, "0000000000000000");
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
  if (o->b.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "%s %s is larger than 32 KiB", mgop_kinds[o->kind].kind, o->name);
  if (r->ndesired >= MGOP_DESIRED_MAX) return mgop_seterr(MGOP_ERR_NOMEM, "more than %d objects for one cluster", MGOP_DESIRED_MAX);
  d = &r->desired[r->ndesired++];
  d->kind = o->kind;
  snprintf(d->name, sizeof(d->name), "%s", o->name);
  d->json = o->b.p;
  d->len = o->b.len;
  d->hash = mgop_fnv1a64(MGOP_FNV64_INIT, o->b.p, o->b.len);
  snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)d->hash);
  memcpy(o->b.p + o->hash_at, hex, 16);
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

/* The global TopoServer CR and its etcd StatefulSet and Services. */
static int mgop_build_global_topo(struct mgop_rctx *r, const struct mgop_json *topo, const char *topo_uid) {
  struct mgop_build o;
  char name[64], headless[80], image[256], size[32], klass[128];
  const char *parts[] = {r->name, "global-topo"};
  int etcd = mgop_json_key(topo, 0, "etcd"), rc;
  long long replicas = 3;
  mgop_json_i64(topo, mgop_json_key(topo, etcd, "replicas"), &replicas);
  mgop_name(name, sizeof(name), MGOP_LIMIT_STS, 0, parts, 2);
  snprintf(headless, sizeof(headless), "%s-headless", name);
  mgop_str_or(topo, etcd, "image", image, sizeof(image), MGOP_IMAGE_ETCD);
  mgop_str_or(topo, etcd, "storage.size", size, sizeof(size), "1Gi");
  mgop_str_or(topo, etcd, "storage.class", klass, sizeof(klass), "");

  /* the TopoServer CR, owned by the cluster */
  if ((rc = mgop_build_begin(r, &o, K_TOPO, name))) return rc;
  mgop_build_meta(&o, "global-topo", K_CLUSTER, r->name, r->uid);
  mgop_jw_key(&o.w, "spec");
  mgop_jw_obj(&o.w);
  mgop_copy_key(&o.w, "etcd", topo, etcd);
  mgop_jw_obj_end(&o.w);
  if ((rc = mgop_build_end(&o))) return rc;

  /* client Service */
  if ((rc = mgop_build_begin(r, &o, K_SVC, name))) return rc;
  mgop_build_meta(&o, "global-topo", K_TOPO, name, topo_uid);
  mgop_jw_key(&o.w, "spec");
  mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, "type"); mgop_jw_str(&o.w, "ClusterIP");
  mgop_jw_key(&o.w, "selector"); mgop_jw_obj(&o.w); mgop_selector_labels(&o.w, r->name, "global-topo"); mgop_jw_obj_end(&o.w);
  mgop_jw_key(&o.w, "ports");
  mgop_jw_arr(&o.w);
  MGOP_JW_LIT(&o.w, "{\"name\":\"client\",\"port\":2379,\"targetPort\":2379,\"protocol\":\"TCP\"}");
  mgop_jw_arr_end(&o.w);
  mgop_jw_obj_end(&o.w);
  if ((rc = mgop_build_end(&o))) return rc;

  /* headless peer Service: members find each other before they are ready */
  if ((rc = mgop_build_begin(r, &o, K_SVC, headless))) return rc;
  mgop_build_meta(&o, "global-topo", K_TOPO, name, topo_uid);
  mgop_jw_key(&o.w, "spec");
  mgop_jw_obj(&o.w);
  mgop_jw_key(&o.w, "clusterIP"); mgop_jw_str(&o.w, "None");
  mgop_jw_key(&o.w, "publishNotReadyAddresses"); mgop_jw_bool(&o.w, 1);
  mgop_jw_key(&o.w, "selector"); mgop_jw_obj(&o.w); mgop_selector_labels(&o.w, r->name, "global-topo"); mgop_jw_obj_end(&o.w);
  mgop_jw_key(&o.w, "ports");
  mgop_jw_arr(&o.w);
  MGOP_JW_LIT(&o.w, "{\"name\":\"client\",\"port\":2379,\"targetPort\":2379,\"protocol\":\"TCP\"}");
  MGOP_JW_LIT(&o.w, "{\"name\":\"peer\",\"port\":2380,\"targetPort\":2380,\"protocol\":\"TCP\"}");
  mgop_jw_arr_end(&o.w);
  mgop_jw_obj_end(&o.w);
  if ((rc = mgop_build_end(&o))) return rc;

  /* the etcd StatefulSet */
  if ((rc = mgop_build_begin(r, &o, K_STS, name))) return rc;
  mgop_build_meta(&o, "global-topo", K_TOPO, name, topo_uid);
  {
    struct mgop_jw *w = &o.w;
    char cluster_arg[2048], url[256];
    struct mgop_buf cb;
    char wd_own[16], wd_cluster[16], ws_own[16], ws_cluster[16];
    /* field by field: the etcd's own policy, then the cluster's, then Retain */
    const char *when_deleted = mgop_str_or(topo, etcd, "pvcDeletionPolicy.whenDeleted", wd_own, sizeof(wd_own),
        mgop_str_or(&r->root, r->spec, "pvcDeletionPolicy.whenDeleted", wd_cluster, sizeof(wd_cluster), "Retain"));
    const char *when_scaled = mgop_str_or(topo, etcd, "pvcDeletionPolicy.whenScaled", ws_own, sizeof(ws_own),
        mgop_str_or(&r->root, r->spec, "pvcDeletionPolicy.whenScaled", ws_cluster, sizeof(ws_cluster), "Retain"));
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
    mgop_jw_key(w, "matchLabels"); mgop_jw_obj(w); mgop_selector_labels(w, r->name, "global-topo"); mgop_jw_obj_end(w);
    mgop_jw_obj_end(w);
    mgop_jw_key(w, "persistentVolumeClaimRetentionPolicy"); mgop_jw_obj(w);
    mgop_jw_key(w, "whenDeleted"); mgop_jw_str(w, when_deleted);
    mgop_jw_key(w, "whenScaled"); mgop_jw_str(w, when_scaled);
    mgop_jw_obj_end(w);
    mgop_jw_key(w, "template"); mgop_jw_obj(w);
    mgop_jw_key(w, "metadata"); mgop_jw_obj(w);
    mgop_jw_key(w, "labels"); mgop_jw_obj(w); mgop_labels(w, r->name, "global-topo"); mgop_jw_obj_end(w);
    mgop_jw_obj_end(w);
    mgop_jw_key(w, "spec"); mgop_jw_obj(w);
    mgop_jw_key(w, "containers"); mgop_jw_arr(w); mgop_jw_obj(w);
    mgop_jw_key(w, "name"); mgop_jw_str(w, "etcd");
    mgop_jw_key(w, "image"); mgop_jw_str(w, image);
    mgop_jw_key(w, "imagePullPolicy"); mgop_jw_str(w, "IfNotPresent");
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
    mgop_jw_obj_end(w); /* pod spec */
    mgop_jw_obj_end(w); /* template */
    mgop_jw_key(w, "volumeClaimTemplates"); mgop_jw_arr(w); mgop_jw_obj(w);
    mgop_jw_key(w, "metadata"); mgop_jw_obj(w); mgop_jw_key(w, "name"); mgop_jw_str(w, "data");
    mgop_jw_key(w, "labels"); mgop_jw_obj(w); mgop_labels(w, r->name, "global-topo"); mgop_jw_obj_end(w);
    mgop_jw_obj_end(w);
    mgop_jw_key(w, "spec"); mgop_jw_obj(w);
    mgop_jw_key(w, "accessModes"); MGOP_JW_LIT(w, "[\"ReadWriteOnce\"]");
    if (klass[0]) { mgop_jw_key(w, "storageClassName"); mgop_jw_str(w, klass); }
    mgop_jw_key(w, "resources"); mgop_jw_obj(w); mgop_jw_key(w, "requests"); mgop_jw_obj(w);
    mgop_jw_key(w, "storage"); mgop_jw_str(w, size);
    mgop_jw_obj_end(w); mgop_jw_obj_end(w);
    mgop_jw_obj_end(w); /* pvc spec */
    mgop_jw_obj_end(w); mgop_jw_arr_end(w);
    mgop_jw_obj_end(w); /* sts spec */
  }
  return mgop_build_end(&o);
}

/* ======================================================================
 * 6. Apply
 * ==================================================================== */
static uint64_t mgop_desired_key(const struct mgop_rctx *r, const struct mgop_desired *d) {
  return mgop_fp_key(mgop_kinds[d->kind].kind, r->ns, d->name);
}

/* In sync: we applied these exact bytes and nobody changed the spec since. */
static int mgop_in_sync(const struct mgop_desired *d, const struct mgop_fp *f) {
  if (!f || !(f->flags & MGOP_FP_EXISTS) || f->applied_hash != d->hash) return 0;
  if (mgop_kinds[d->kind].generation) return f->seen_gen == f->applied_gen;
  return strcmp(f->seen_rv, f->applied_rv) == 0;
}

/* Applies every desired object from index `from` that is out of sync. */
static int mgop_apply_from(struct mgop_rctx *r, int from) {
  for (int i = from; i < r->ndesired; i++) {
    struct mgop_desired *d = &r->desired[i];
    uint64_t key = mgop_desired_key(r, d);
    struct mgop_fp *f = mgop_fp_find(key);
    struct mgop_applied res;
    char path[512];
    int status = 0, rc;
    if (mgop_in_sync(d, f)) {
      r->skipped++;
      continue;
    }
    mgop_item_path(d->kind, r->ns, d->name, path, sizeof(path));
    rc = mgop_kube_apply(mgop_api_ptr, path, d->json, d->len, &res, &status);
    if (rc) {
      r->failed++;
      snprintf(r->last_error, sizeof(r->last_error), "%s", mgop_errmsg());
      MGOP_LOG(MGOP_WARN, ("apply %s %s/%s failed: %s", mgop_kinds[d->kind].kind, r->ns, d->name, mgop_errmsg()));
      if (status == 422 || status == 400) /* the API server rejects what we built: a human must look */
        mgop_stall(r, "ApplyRejected", "%s %s was rejected: %s", mgop_kinds[d->kind].kind, d->name, mgop_errmsg());
      return rc;
    }
    r->applied++;
    f = mgop_fp_upsert(key);
    if (f) {
      f->applied_hash = d->hash;
      f->applied_gen = res.generation;
      snprintf(f->applied_rv, sizeof(f->applied_rv), "%s", res.rv);
      /* until the watch reports it, what we wrote is what exists */
      f->flags |= MGOP_FP_EXISTS;
      f->seen_gen = res.generation;
      snprintf(f->seen_rv, sizeof(f->seen_rv), "%s", res.rv);
      snprintf(f->uid, sizeof(f->uid), "%s", res.uid);
    }
    {
      char fields[512];
      snprintf(fields, sizeof(fields), "\"kind\":\"%s\",\"namespace\":\"%s\",\"name\":\"%s\",\"resourceVersion\":\"%s\"",
               mgop_kinds[d->kind].kind, r->ns, d->name, res.rv);
      mgop_log_fields(MGOP_INFO, "reconcile", "applied", fields);
    }
  }
  return MGOP_OK;
}

/* The uid of an owned object: from our table, or a stable placeholder when
 * rendering offline. */
static const char *mgop_uid_of(struct mgop_rctx *r, int kind, const char *name) {
  struct mgop_fp *f;
  if (r->render) return "00000000-0000-0000-0000-000000000000";
  f = mgop_fp_find(mgop_fp_key(mgop_kinds[kind].kind, r->ns, name));
  return f && f->uid[0] ? f->uid : NULL;
}

/* ======================================================================
 * 7. Status
 * ==================================================================== */
/* Writes the five conditions. Ready/Available agree; Reconciling/Progressing
 * agree and are True while converging; Stalled is True on an error that
 * needs a human. `since` is the last transition time. */
static void mgop_conditions(struct mgop_jw *w, int ready, int stalled, const char *reason, const char *message,
                            long long generation, long long since) {
  static const char *types[] = {"Available", "Progressing", "Ready", "Reconciling", "Stalled"};
  char ts[32];
  time_t t = (time_t)since;
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
  mgop_jw_key(w, "conditions");
  mgop_jw_arr(w);
  for (int i = 0; i < 5; i++) {
    int on = (i == 0 || i == 2) ? ready : (i == 4) ? stalled : (!ready && !stalled);
    mgop_jw_obj(w);
    mgop_jw_key(w, "lastTransitionTime"); mgop_jw_str(w, ts);
    mgop_jw_key(w, "message"); mgop_jw_str(w, message);
    mgop_jw_key(w, "observedGeneration"); mgop_jw_i64(w, generation);
    mgop_jw_key(w, "reason"); mgop_jw_str(w, reason);
    mgop_jw_key(w, "status"); mgop_jw_str(w, on ? "True" : "False");
    mgop_jw_key(w, "type"); mgop_jw_str(w, types[i]);
    mgop_jw_obj_end(w);
  }
  mgop_jw_arr_end(w);
}

/* Patches `status` when it differs from what we last wrote. The transition
 * time is kept in the object's fingerprint row. */
static int mgop_write_status(struct mgop_rctx *r, int kind, const char *name, struct mgop_fp *f, int ready, int stalled,
                             const char *reason, const char *message, long long generation, const char *phase,
                             void (*extra)(struct mgop_jw *, void *), void *extra_ctx) {
  char mem[8192], path[512];
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
  mgop_buf_init(&b, mem, sizeof(mem));
  mgop_jw_init(&w, &b);
  mgop_jw_obj(&w);
  mgop_jw_key(&w, "status");
  mgop_jw_obj(&w);
  mgop_conditions(&w, ready, stalled, reason, message, generation, f->cond_since);
  if (extra) extra(&w, extra_ctx);
  mgop_jw_key(&w, "message"); mgop_jw_str(&w, message);
  mgop_jw_key(&w, "observedGeneration"); mgop_jw_i64(&w, generation);
  mgop_jw_key(&w, "phase"); mgop_jw_str(&w, phase);
  mgop_jw_obj_end(&w);
  mgop_jw_obj_end(&w);
  if (b.overflow) return mgop_seterr(MGOP_ERR_TOOBIG, "status of %s too large", name);
  h = mgop_fnv1a64(MGOP_FNV64_INIT, b.p, b.len);
  if (h == f->status_hash) return MGOP_OK; /* idle costs no write */
  if (r->render) return MGOP_OK;
  mgop_item_path(kind, r->ns, name, path, sizeof(path));
  rc = mgop_kube_patch_status(mgop_api_ptr, path, b.p, b.len, &status);
  if (rc == MGOP_OK) f->status_hash = h;
  else MGOP_LOG(MGOP_WARN, ("status of %s %s/%s not written: %s", mgop_kinds[kind].kind, r->ns, name, mgop_errmsg()));
  return rc;
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

struct mgop_root_status { int topo_ready; const char *topo_name; int cells; const char *core; };
static void mgop_root_status_extra(struct mgop_jw *w, void *ctx) {
  struct mgop_root_status *s = ctx;
  mgop_jw_key(w, "globalTopoServer"); mgop_jw_obj(w);
  mgop_jw_key(w, "available"); mgop_jw_str(w, s->topo_ready ? "True" : "False");
  mgop_jw_key(w, "serviceName"); mgop_jw_str(w, s->topo_name);
  mgop_jw_obj_end(w);
  mgop_jw_key(w, "readyCells"); mgop_jw_i64(w, 0);
  mgop_jw_key(w, "resolvedTemplates"); mgop_jw_obj(w);
  mgop_jw_key(w, "coreTemplate"); mgop_jw_str(w, s->core);
  mgop_jw_obj_end(w);
  mgop_jw_key(w, "totalCells"); mgop_jw_i64(w, s->cells);
}

/* ======================================================================
 * 8. Reconcile one root
 * ==================================================================== */
static char mgop_root_body[256 * 1024];
static unsigned char mgop_arena_mem[4 * 1024 * 1024];
static struct mgop_arena mgop_arena;

/* Builds (and, live, applies) everything for the cluster in r->root. */
static int mgop_reconcile_tree(struct mgop_rctx *r) {
  struct mgop_json topo;
  char topo_name[64];
  const char *parts[2] = {r->name, "global-topo"};
  const char *topo_uid;
  int topo_managed, rc, n_before;
  rc = mgop_resolve_global_topo(r, &topo);
  if (rc) return rc;
  topo_managed = mgop_json_key(&topo, 0, "etcd") >= 0;
  mgop_name(topo_name, sizeof(topo_name), MGOP_LIMIT_STS, 0, parts, 2);
  if (topo_managed) {
    /* phase 1: the TopoServer CR, whose uid owns the workloads */
    n_before = r->ndesired;
    topo_uid = mgop_uid_of(r, K_TOPO, topo_name);
    if ((rc = mgop_build_global_topo(r, &topo, topo_uid ? topo_uid : "pending"))) return rc;
    if (!r->render) {
      r->ndesired = n_before + 1; /* apply the CR alone first */
      if ((rc = mgop_apply_from(r, n_before))) return rc;
      topo_uid = mgop_uid_of(r, K_TOPO, topo_name);
      if (!topo_uid) return mgop_seterr(MGOP_ERR_STATUS, "TopoServer %s has no uid after apply", topo_name);
      r->ndesired = n_before;
      if ((rc = mgop_build_global_topo(r, &topo, topo_uid))) return rc;
      if ((rc = mgop_apply_from(r, n_before + 1))) return rc;
    }
  }
  return MGOP_OK;
}

/* Status of the TopoServer and the root from what the watches reported. */
static void mgop_reconcile_status(struct mgop_rctx *r, int ok) {
  char topo_name[64], msg[512];
  const char *parts[2] = {r->name, "global-topo"};
  struct mgop_fp *sts, *topo_fp, *root_fp;
  struct mgop_topo_status ts = {0, 0, NULL, NULL};
  struct mgop_root_status rs;
  int topo_ready, cells, root_ready, stalled = r->stalled_reason[0] != 0;
  int cells_tok = mgop_json_key(&r->root, r->spec, "cells");
  mgop_name(topo_name, sizeof(topo_name), MGOP_LIMIT_STS, 0, parts, 2);
  sts = mgop_fp_find(mgop_fp_key("StatefulSet", r->ns, topo_name));
  topo_fp = mgop_fp_find(mgop_fp_key("TopoServer", r->ns, topo_name));
  if (sts) {
    ts.replicas = sts->desired;
    ts.ready = sts->ready;
  }
  ts.client = topo_name;
  topo_ready = sts && (sts->flags & MGOP_FP_SETTLED) && sts->desired > 0 && sts->ready >= sts->desired;
  if (topo_fp && topo_fp->uid[0]) {
    long long gen = topo_fp->seen_gen;
    snprintf(msg, sizeof(msg), "%d/%d etcd members ready", ts.ready, ts.replicas);
    mgop_write_status(r, K_TOPO, topo_name, topo_fp, topo_ready, 0, topo_ready ? "AllMembersReady" : "MembersNotReady",
                      msg, gen, topo_ready ? "Healthy" : (ts.ready ? "Progressing" : "Initializing"),
                      mgop_topo_status_extra, &ts);
  }
  cells = mgop_json_is(&r->root, cells_tok, JSMN_ARRAY) ? r->root.tok[cells_tok].size : 0;
  rs.topo_ready = topo_ready;
  rs.topo_name = topo_name;
  rs.cells = cells;
  rs.core = r->resolved_core[0] ? r->resolved_core : "built-in";
  /* Cells, table groups and shards are not reconciled yet: the cluster is
   * not Ready while they are missing, and says so. */
  root_ready = 0;
  if (stalled) snprintf(msg, sizeof(msg), "%s", r->stalled_msg);
  else if (!ok) snprintf(msg, sizeof(msg), "reconcile failed, retrying: %.400s", r->last_error);
  else snprintf(msg, sizeof(msg), "global topology server %s; 0/%d cells ready (cells, table groups and shards are "
                "not reconciled by this version)", topo_ready ? "ready" : "not ready", cells);
  root_fp = mgop_fp_upsert(mgop_fp_key("MultigresCluster", r->ns, r->name));
  if (root_fp && root_fp->cond_ready == 0 && root_fp->cond_since == 0) root_fp->cond_ready = -1;
  mgop_write_status(r, K_CLUSTER, r->name, root_fp, root_ready, stalled,
                    stalled ? r->stalled_reason : !ok ? "ReconcileError" : "Progressing", msg, r->generation,
                    stalled ? "Degraded" : "Progressing", mgop_root_status_extra, &rs);
}

/* One turn for one root: GET, resolve, apply, status. */
static int mgop_reconcile(const char *ns, const char *name) {
  static struct mgop_rctx r;
  struct mgop_buf b;
  int status, rc;
  char path[512];
  memset(&r, 0, sizeof(r));
  mgop_arena_reset(&mgop_arena);
  r.arena = &mgop_arena;
  r.ns = ns;
  r.name = name;
  mgop_buf_init(&b, mgop_root_body, sizeof(mgop_root_body));
  mgop_item_path(K_CLUSTER, ns, name, path, sizeof(path));
  rc = mgop_kube_get(mgop_api_ptr, path, &b, &status);
  if (rc == MGOP_ERR_NOTFOUND) return MGOP_OK; /* deleted: garbage collection removes the children */
  if (rc) return rc;
  if ((rc = mgop_parse_arena(r.arena, b.p, b.len, &r.root))) return rc;
  if (mgop_json_path(&r.root, 0, "metadata.deletionTimestamp") >= 0) return MGOP_OK;
  mgop_json_path_str(&r.root, 0, "metadata.uid", r.uid, sizeof(r.uid));
  mgop_json_i64(&r.root, mgop_json_path(&r.root, 0, "metadata.generation"), &r.generation);
  r.spec = mgop_json_key(&r.root, 0, "spec");
  rc = mgop_reconcile_tree(&r);
  if (rc && !r.last_error[0]) snprintf(r.last_error, sizeof(r.last_error), "%s", mgop_errmsg());
  mgop_reconcile_status(&r, rc == MGOP_OK);
  {
    char f[256];
    snprintf(f, sizeof(f), "\"namespace\":\"%s\",\"name\":\"%s\",\"applied\":%d,\"unchanged\":%d,\"failed\":%d%s",
             ns, name, r.applied, r.skipped, r.failed, r.stalled_reason[0] ? ",\"stalled\":true" : "");
    mgop_log_fields(r.applied || r.failed ? MGOP_INFO : MGOP_DEBUG, "reconcile", "reconciled", f);
  }
  /* a Stalled cluster waits for a change; other errors retry with backoff */
  return r.stalled_reason[0] ? MGOP_OK : rc;
}

/* ======================================================================
 * 9. Events
 * ==================================================================== */
struct mgop_root_ref { char ns[64]; char name[64]; int used; };
static struct mgop_root_ref mgop_roots[MGOP_WORK_SLOTS];

static void mgop_roots_set(const char *ns, const char *name, int present) {
  struct mgop_root_ref *free_slot = NULL;
  for (size_t i = 0; i < MGOP_WORK_SLOTS; i++) {
    struct mgop_root_ref *r = &mgop_roots[i];
    if (r->used && !strcmp(r->ns, ns) && !strcmp(r->name, name)) {
      if (!present) r->used = 0;
      return;
    }
    if (!r->used && !free_slot) free_slot = r;
  }
  if (present && free_slot) {
    snprintf(free_slot->ns, sizeof(free_slot->ns), "%s", ns);
    snprintf(free_slot->name, sizeof(free_slot->name), "%s", name);
    free_slot->used = 1;
  }
}

static void mgop_enqueue(const char *ns, const char *name, long long delay_ms) {
  if (mgop_work_add("MultigresCluster", ns, name, mgop_now_ms() + delay_ms))
    MGOP_LOG(MGOP_ERROR, ("cannot queue %s/%s: %s", ns, name, mgop_errmsg()));
}

/* Readiness of a workload as its controller reports it. */
static void mgop_observe_readiness(int kind, const struct mgop_json *j, int obj, struct mgop_fp *f) {
  long long gen = 0, observed = -1, replicas = 1, ready = 0, updated = 0;
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
    if (observed >= gen && updated >= replicas) f->flags |= MGOP_FP_SETTLED;
  } else {
    f->desired = f->ready = 1;
    f->flags |= MGOP_FP_SETTLED;
  }
}

static void mgop_on_event(void *ctx, struct mgop_watch *w, const char *type, const struct mgop_json *j, int obj) {
  int kind = (int)(intptr_t)ctx;
  char ns[64], name[254], cluster[64], rv[24];
  long long gen = 0;
  (void)w;
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
        mgop_roots_set(ns, name, 0);
        mgop_fp_remove(mgop_fp_key("MultigresCluster", ns, name));
        return;
      }
      mgop_roots_set(ns, name, 1);
      mgop_enqueue(ns, name, 0);
      return;
    case MGOP_ROLE_TEMPLATE:
      /* a template change may concern any cluster of its namespace */
      for (size_t i = 0; i < MGOP_WORK_SLOTS; i++)
        if (mgop_roots[i].used && !strcmp(mgop_roots[i].ns, ns)) mgop_enqueue(ns, mgop_roots[i].name, 100);
      return;
    default: break;
  }
  /* a child or workload: record what exists, wake its cluster */
  {
    uint64_t key = mgop_fp_key(mgop_kinds[kind].kind, ns, name);
    if (!strcmp(type, "DELETED")) {
      mgop_fp_remove(key);
    } else {
      struct mgop_fp *f = mgop_fp_upsert(key);
      if (!f) {
        MGOP_LOG(MGOP_ERROR, ("fingerprint table full (%d); raise MGOP_FP_SLOTS", MGOP_FP_SLOTS));
        return;
      }
      mgop_json_path_str(j, obj, "metadata.resourceVersion", rv, sizeof(rv));
      mgop_json_i64(j, mgop_json_path(j, obj, "metadata.generation"), &gen);
      snprintf(f->seen_rv, sizeof(f->seen_rv), "%s", rv);
      f->seen_gen = gen;
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
          snprintf(f->applied_rv, sizeof(f->applied_rv), "%s", rv);
        }
      }
      mgop_observe_readiness(kind, j, obj, f);
    }
  }
  {
    int labels = mgop_json_path(j, obj, "metadata.labels");
    if (mgop_json_str(j, mgop_json_key(j, labels, "multigres.com/cluster"), cluster, sizeof(cluster)) == MGOP_OK)
      mgop_enqueue(ns, cluster, 200); /* coalesce bursts of child events */
  }
}

/* ======================================================================
 * 10. The loop
 * ==================================================================== */
static volatile sig_atomic_t mgop_stop_signal;
static void mgop_on_signal(int sig) { mgop_stop_signal = sig; }

static struct mgop_kubecfg mgop_cfg;
static struct mgop_kube mgop_api;
static struct mgop_watch mgop_watches[K_COUNT];

struct mgop_options {
  const char *kubeconfig;
  const char *context;
  const char *watch_namespace;
  const char *render_files[16];
  int nrender;
};

int mgop_run(const struct mgop_options *opt); /* also called by tests */
int mgop_run(const struct mgop_options *opt) {
  struct sigaction sa;
  char path[384];
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
  mgop_api_ptr = &mgop_api;
  mgop_arena_init(&mgop_arena, mgop_arena_mem, sizeof(mgop_arena_mem));
  MGOP_LOG(MGOP_INFO, ("multigres-op %s starting; API server %s://%s:%s (%s)", MGOP_VERSION, mgop_cfg.scheme,
                       mgop_cfg.host, mgop_cfg.port, mgop_cfg.source));
  srand((unsigned)(mgop_now_ms() ^ getpid()));
  for (int i = 0; i < K_COUNT; i++) {
    int owned = mgop_kinds[i].role == MGOP_ROLE_CHILD || mgop_kinds[i].role == MGOP_ROLE_WORKLOAD;
    mgop_collection_path(i, opt->watch_namespace, path, sizeof(path));
    mgop_watch_init(&mgop_watches[i], &mgop_api, mgop_kinds[i].kind, path, owned ? MGOP_MANAGED_SELECTOR : NULL,
                    mgop_on_event, (void *)(intptr_t)i);
  }

  while (!mgop_stop_signal) {
    struct pollfd pfd[K_COUNT];
    int owner[K_COUNT], n = 0;
    long long now = mgop_now_ms(), wait = 1000, due;
    struct mgop_work item;
    for (int i = 0; i < K_COUNT; i++) {
      struct mgop_watch *w = &mgop_watches[i];
      due = mgop_watch_wake_ms(w, now);
      if (w->state != MGOP_W_STREAM && due == 0) {
        mgop_watch_step(w, now);
        due = mgop_watch_wake_ms(w, mgop_now_ms());
      }
      if (due < wait) wait = due;
      if (mgop_watch_fd(w) >= 0) {
        pfd[n].fd = mgop_watch_fd(w);
        pfd[n].events = POLLIN;
        pfd[n].revents = 0;
        owner[n++] = i;
      }
    }
    /* reconcile what is due, one root per turn so watches stay fresh */
    if (mgop_work_pop(mgop_now_ms(), &item) == MGOP_OK) {
      rc = mgop_reconcile(item.ns, item.name);
      if (rc) {
        int backoff = 1000 << (item.attempts < 5 ? item.attempts : 5);
        if (mgop_api.last_retry_after_s > 0 && mgop_api.last_retry_after_s * 1000 > backoff)
          backoff = mgop_api.last_retry_after_s * 1000;
        MGOP_LOG(MGOP_WARN, ("reconcile %s/%s failed, retry in %d ms: %s", item.ns, item.name, backoff, mgop_errmsg()));
        mgop_work_retry(&item, mgop_now_ms() + backoff);
      }
      wait = 0;
    }
    due = mgop_work_next_due(mgop_now_ms());
    if (due >= 0 && due < wait) wait = due;
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
  mgop_arena_reset(&mgop_arena);
  for (int i = 0; i < K_COUNT; i++) mgop_watch_close(&mgop_watches[i]);
  mgop_kube_free(&mgop_api);
  return 0;
}

/* ======================================================================
 * 11. render
 * ==================================================================== */
static struct mgop_manifest mgop_manifests[MGOP_MANIFESTS_MAX];
static int mgop_nmanifests;
static char mgop_manifest_store[2 * 1024 * 1024];
static size_t mgop_manifest_used;

static int mgop_collect_manifest(void *ctx, const char *json, size_t n, int index) {
  static jsmntok_t tok[MGOP_JSON_TOKENS_MAX];
  struct mgop_json j;
  char kind[64], ns[64];
  const char *file = ctx;
  int k = -1;
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
    if (mgop_json_path_str(&j, 0, "metadata.namespace", ns, sizeof(ns)) || !ns[0]) snprintf(ns, sizeof(ns), "default");
    snprintf(m->ns, sizeof(m->ns), "%s", ns);
    m->json = mgop_manifest_store + mgop_manifest_used;
    memcpy(m->json, json, n);
    m->len = n;
    mgop_manifest_used += n;
  }
  return MGOP_OK;
}

/* Prints every child object for the clusters in the files, as a YAML stream
 * of JSON documents, through the same builders as the live reconcile. */
int mgop_render(const struct mgop_options *opt, FILE *out); /* also called by tests */
int mgop_render(const struct mgop_options *opt, FILE *out) {
  static char text[MGOP_KUBECONFIG_MAX], scratch[512 * 1024];
  static struct mgop_rctx r;
  struct mgop_buf sb;
  int rc;
  mgop_arena_init(&mgop_arena, mgop_arena_mem, sizeof(mgop_arena_mem));
  mgop_nmanifests = 0;
  mgop_manifest_used = 0;
  for (int f = 0; f < opt->nrender; f++) {
    size_t n;
    if (mgop_read_file(opt->render_files[f], text, sizeof(text), &n)) {
      fprintf(stderr, "multigres-op render: %s\n", mgop_errmsg());
      return 2;
    }
    mgop_buf_init(&sb, scratch, sizeof(scratch));
    rc = mgop_yaml_to_json_docs(text, n, &sb, mgop_collect_manifest, (void *)opt->render_files[f]);
    if (rc) {
      fprintf(stderr, "multigres-op render: %s: %s\n", opt->render_files[f], mgop_errmsg());
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
    memset(&r, 0, sizeof(r));
    mgop_arena_reset(&mgop_arena);
    r.render = 1;
    r.arena = &mgop_arena;
    r.ns = m->ns;
    r.name = m->name;
    r.manifests = mgop_manifests;
    r.nmanifests = mgop_nmanifests;
    snprintf(r.uid, sizeof(r.uid), "00000000-0000-0000-0000-000000000000");
    if (mgop_parse_arena(r.arena, m->json, m->len, &r.root)) {
      fprintf(stderr, "multigres-op render: %s: %s\n", m->name, mgop_errmsg());
      mgop_arena_reset(&mgop_arena);
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
      mgop_arena_reset(&mgop_arena);
      return 1;
    }
    fprintf(out, "# MultigresCluster %s/%s: %d objects\n", r.ns, r.name, r.ndesired);
    for (int d = 0; d < r.ndesired; d++) fprintf(out, "---\n%.*s\n", (int)r.desired[d].len, r.desired[d].json);
  }
  mgop_arena_reset(&mgop_arena);
  return 0;
}

/* ======================================================================
 * 12. Flags and main
 * ==================================================================== */
static const char mgop_usage[] =
    "Usage: multigres-op [flags]\n"
    "       multigres-op render -f FILE [-f FILE...]\n"
    "\n"
    "Kubernetes operator for Multigres. Watches multigres.com/v1alpha1 resources\n"
    "and makes the cluster match them. `render` prints the objects the operator\n"
    "would create for the MultigresClusters (and templates) in FILEs, offline.\n"
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
  int first = 1;
  *exit_now = 0;
  if (argc > 1 && !strcmp(argv[1], "render")) {
    first = 2;
    for (int i = 2; i < argc; i++) {
      const char *f = NULL;
      if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--filename")) f = i + 1 < argc ? argv[++i] : NULL;
      else if (!strncmp(argv[i], "--filename=", 11)) f = argv[i] + 11;
      else {
        fprintf(stderr, "multigres-op render: unexpected \"%s\"; usage: multigres-op render -f FILE [-f FILE...]\n", argv[i]);
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
  for (int i = first; i < argc; i++) {
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

#ifndef MGOP_NO_MAIN
int main(int argc, char **argv) {
  struct mgop_options opt;
  int exit_now, rc;
  memset(&opt, 0, sizeof(opt));
  opt.watch_namespace = "";
  rc = mgop_parse_flags(argc, argv, &opt, &exit_now);
  if (rc || exit_now) return rc;
  if (opt.nrender) return mgop_render(&opt, stdout);
  return mgop_run(&opt);
}
#endif
