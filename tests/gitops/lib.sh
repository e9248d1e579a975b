# tests/gitops/lib.sh - helpers for the GitOps e2e (run.sh and g_*.sh).
# Sourced after the control plane env ($MGOP_CP_DIR/env) and
# tests/integration/lib.sh (fail, note, wait_for, start_operator ...).
# State shared by run.sh with the scenarios lives in $GITOPS_DIR/env.

GITOPS_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

free_port() { free_ports 1; } # tests/integration/lib.sh: below the ephemeral range

# start_bg NAME COMMAND...: a long-lived helper in its own session, its pid in
# $GITOPS_DIR/pids/NAME.pid and its output in $IT_LOGS/gitops-NAME.log.
start_bg() {
  local name=$1; shift
  mkdir -p "$GITOPS_DIR/pids"
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$GITOPS_DIR/pids/$name.pid" "$@" \
    >>"$IT_LOGS/gitops-$name.log" 2>&1 </dev/null &
  for _ in $(seq 100); do [ -s "$GITOPS_DIR/pids/$name.pid" ] && return 0; sleep 0.05; done
  fail "$name: no pid file"
}

# stop_bg NAME: SIGTERM, then SIGKILL after 10 s; only the pid we started.
stop_bg() {
  local f="$GITOPS_DIR/pids/$1.pid" pid
  pid=$(cat "$f" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$f"
}

bg_alive() { kill -0 "$(cat "$GITOPS_DIR/pids/$1.pid" 2>/dev/null)" 2>/dev/null; }

wait_port() { # wait_port PORT SECONDS
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

# --- Git over smart HTTP -----------------------------------------------------
# git_repo NAME: a bare repository served as $GIT_URL/NAME.git and a work tree
# in $GITOPS_DIR/work/NAME to commit into.
git_repo() {
  local name=$1
  rm -rf "$GITOPS_DIR/repos/$name.git" "$GITOPS_DIR/work/$name"
  git init -q --bare -b main "$GITOPS_DIR/repos/$name.git"
  git init -q -b main "$GITOPS_DIR/work/$name"
}

# git_commit NAME MESSAGE: commit everything in the work tree and push it.
git_commit() {
  local w="$GITOPS_DIR/work/$1"
  git -C "$w" add -A
  git -C "$w" -c user.email=e2e@multigres-op.local -c user.name=e2e commit -q -m "$2"
  git -C "$w" push -q "$GITOPS_DIR/repos/$1.git" main
  git -C "$w" rev-parse HEAD
}

# --- Argo CD -------------------------------------------------------------------
app_get() { kubectl -n argocd get application "$1" -o jsonpath="$2" 2>/dev/null; }
app_state() { app_get "$1" '{.status.sync.status}/{.status.health.status}'; }
app_refresh() { kubectl -n argocd annotate application "$1" argocd.argoproj.io/refresh=normal --overwrite >/dev/null; }

# wait_app NAME STATE SECONDS: until "<sync>/<health>" is STATE (a regex).
wait_app() {
  local i s=""
  for ((i = 0; i < $3 * 2; i++)); do
    s=$(app_state "$1")
    [[ $s =~ ^($2)$ ]] && return 0
    sleep 0.5
  done
  note "application $1 is '$s' after $3 s, wanted '$2'"
  kubectl -n argocd get application "$1" -o yaml >"$IT_LOGS/gitops-app-$1.yaml" 2>&1 || true
  note "its YAML: $IT_LOGS/gitops-app-$1.yaml"
  return 1
}

# --- Flux ----------------------------------------------------------------------
ks_ready() { kubectl -n flux-system get kustomization "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null; }
# ks_first_ready NAME: when Kustomization NAME first succeeded (its earliest
# ReconciliationSucceeded Event, RFC 3339; the Ready condition's
# lastTransitionTime moves on every later reconcile). Fails when it never did.
ks_first_ready() {
  kubectl -n flux-system get events -o json | python3 -c '
import json, sys
t = [e["firstTimestamp"] for e in json.load(sys.stdin)["items"]
     if e["involvedObject"]["name"] == sys.argv[1] and e["reason"] == "ReconciliationSucceeded" and e.get("firstTimestamp")]
if not t: sys.exit("no ReconciliationSucceeded Event for " + sys.argv[1])
print(min(t))' "$1"
}
ks_cond() { kubectl -n flux-system get kustomization "$1" -o jsonpath="{.status.conditions[?(@.type==\"Ready\")].$2}" 2>/dev/null; }

# --- MultigresCluster ------------------------------------------------------------
# clusters_ready NS: every MultigresCluster in NS is Ready=True at its generation.
clusters_ready() {
  local out
  out=$(kubectl -n "$1" get multigresclusters -o jsonpath='{range .items[*]}{.metadata.generation}/{.status.observedGeneration}/{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null) || return 1
  [ -n "$out" ] || return 1
  python3 - "$out" <<'PY'
import sys
for line in sys.argv[1].split():
    g, og, r = line.split("/")
    if g != og or r != "True":
        sys.exit(1)
PY
}

# children NS: every object the operator owns in NS, "kind/name uid", sorted.
children() {
  kubectl get -n "$1" cells,tablegroups,shards,toposervers,deploy,sts,svc,cm,pdb,pvc \
    -o jsonpath='{range .items[*]}{.kind}/{.metadata.name} {.metadata.uid} {.metadata.ownerReferences[0].kind}{"\n"}{end}' |
    awk '$3 != ""' | sort
}

# elapsed_since T0: seconds since the epoch second T0.
elapsed_since() { echo $(( $(date +%s) - $1 )); }

# --- the operator's deletion webhook -------------------------------------------
# orphan_webhook NAME PORT OPERATOR-USER: the webhook vchildren-delete of
# config/webhook (DELETE of a child labelled deletion-policy Orphan), served by
# the out-of-cluster operator on 127.0.0.1:PORT, in every namespace. The
# operator patches the CA bundle in (--webhook-configuration-name NAME).
orphan_webhook() {
  kubectl apply -f - >/dev/null <<EOF2
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: $1}
webhooks:
- name: vchildren-delete.multigres.com
  clientConfig: {url: "https://127.0.0.1:$2/validate"}
  rules: [{apiGroups: [multigres.com], apiVersions: [v1alpha1], operations: [DELETE], resources: [cells, tablegroups, shards, toposervers], scope: Namespaced}]
  objectSelector: {matchLabels: {multigres.com/deletion-policy: Orphan}}
  matchConditions:
  - name: not-the-operator
    expression: "request.userInfo.username != '$3'"
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 5
EOF2
  wait_for 30 "CA bundle patched" sh -c "kubectl get validatingwebhookconfiguration $1 -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | grep -q ."
}

# --- orphan and reclaim (g_45, g_65) ---------------------------------------------
# orphan_data NS CLUSTER: "kind/name uid owner-kinds: orphaned-from" of every
# StatefulSet, PVC and password Secret of the cluster, sorted.
orphan_data() {
  local f='{range .items[*]}{.kind}/{.metadata.name} {.metadata.uid} {.metadata.ownerReferences[*].kind}: {.metadata.labels.multigres\.com/orphaned-from}{"\n"}{end}'
  { kubectl get -n "$1" sts,pvc -l "multigres.com/cluster=$2" -o jsonpath="$f"
    kubectl get -n "$1" secret -l "multigres.com/cluster=$2,app.kubernetes.io/component=postgres-password" -o jsonpath="$f"
  } | sort
}
# orphan_pods NS CLUSTER: "name=uid" of the StatefulSets' pods, sorted.
orphan_pods() {
  kubectl get -n "$1" pods -l "multigres.com/cluster=$2,app.kubernetes.io/component in (shard-pool,toposerver)" \
    -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid}{"\n"}{end}' | sort
}
# set_orphan_annotation FILE NAME: add deletion-policy Orphan to the
# MultigresCluster NAME's metadata in FILE (a Git work tree file).
set_orphan_annotation() {
  python3 - "$1" "$2" <<'PY'
import sys, yaml
path, name = sys.argv[1], sys.argv[2]
docs = list(yaml.safe_load_all(open(path)))
hit = 0
for d in docs:
    if d and d.get("kind") == "MultigresCluster" and d["metadata"]["name"] == name:
        d["metadata"].setdefault("annotations", {})["multigres.com/deletion-policy"] = "Orphan"
        hit += 1
assert hit == 1, f"no MultigresCluster {name} in {path}"
yaml.safe_dump_all(docs, open(path, "w"), sort_keys=False)
PY
}
# check_orphaned NS CLUSTER UID BEFORE PODS: every object of BEFORE (orphan_data)
# that holds data survived with its uid, no owner and orphaned-from=UID, and
# the pods are the same (PODS, orphan_pods). Prints the counts.
check_orphaned() {
  local ns=$1 c=$2 uid=$3 before=$4 pods=$5 after obj u line n=0
  after=$(orphan_data "$ns" "$c")
  while read -r obj u _; do
    [ -z "$obj" ] && continue
    line=$(grep "^$obj $u " <<<"$after") || fail "$obj ($u) did not survive the deletion: $after"
    [[ $line == *" : $uid" ]] || fail "$obj is not detached and labelled orphaned-from=$uid: $line"
    n=$((n + 1))
  done <<<"$before"
  [ "$(orphan_pods "$ns" "$c")" = "$pods" ] || fail "pods changed: $(orphan_pods "$ns" "$c") (were $pods)"
  echo "$n"
}
# check_adopted NS CLUSTER BEFORE PODS: the same objects, owned again, no
# orphaned-from label, the same pods.
check_adopted() {
  local ns=$1 c=$2 before=$3 pods=$4 now obj u line
  now=$(orphan_data "$ns" "$c")
  while read -r obj u _; do
    [ -z "$obj" ] && continue
    line=$(grep "^$obj $u " <<<"$now") || fail "$obj is not the same object (uid $u) after the reclaim: $now"
    [[ $line == *": " ]] || fail "$obj is still labelled orphaned-from: $line"
  done <<<"$before"
  [ "$(kubectl get -n "$ns" sts -l "multigres.com/cluster=$c" -o jsonpath='{range .items[*]}{.metadata.ownerReferences[0].kind}{"\n"}{end}' | sort | tr '\n' ' ')" = "Shard TopoServer " ] ||
    fail "the StatefulSets are not owned by the new Shard and TopoServer"
  [ "$(orphan_pods "$ns" "$c")" = "$pods" ] || fail "pods were restarted: $(orphan_pods "$ns" "$c") (were $pods)"
}

# --- the fleet example (g_80, g_90) -----------------------------------------------
# fleet_repos: two repositories on the git server, made once per run:
#   multigres-op  crds.yaml and config/ of the tree under test, tagged v0.1.0
#                 (what examples/fleet pins);
#   edge-fleet    examples/fleet as shipped, its git.example.com URLs pointing
#                 at this server, minus the operator Applications (the e2e
#                 runs each operator out of cluster).
# Sets FLEET_WORK to edge-fleet's work tree.
fleet_repos() {
  FLEET_WORK=$GITOPS_DIR/work/edge-fleet
  [ -d "$GITOPS_DIR/repos/edge-fleet.git" ] && return 0
  git_repo multigres-op
  local mo=$GITOPS_DIR/work/multigres-op
  cp "$ROOT/crds.yaml" "$mo/"
  cp -r "$ROOT/config" "$mo/"
  git_commit multigres-op "multigres-op as tested" >/dev/null
  git -C "$mo" tag v0.1.0 && git -C "$mo" push -q "$GITOPS_DIR/repos/multigres-op.git" v0.1.0
  git_repo edge-fleet
  cp -r "$ROOT/examples/fleet/." "$FLEET_WORK/"
  fleet_urls "$FLEET_WORK"
  python3 - "$FLEET_WORK"/argocd/apps/*.yaml <<'PY'
import sys, yaml
for path in sys.argv[1:]:
    docs = [d for d in yaml.safe_load_all(open(path)) if d and d["metadata"]["labels"]["component"] != "operator"]
    assert len(docs) == 2, path
    yaml.safe_dump_all(docs, open(path, "w"), sort_keys=False)
PY
  git_commit edge-fleet "examples/fleet as shipped" >/dev/null
}
# fleet_urls DIR|FILE: the example's placeholder URLs -> this git server.
fleet_urls() {
  grep -rl 'https://git.example.com/' "$1" | xargs -r sed -i \
    -e "s|https://git.example.com/fleet.git|$GIT_URL/edge-fleet.git|" \
    -e "s|https://git.example.com/multigres-op.git|$GIT_URL/multigres-op.git|"
}

# orphan_armed NS CLUSTER: wait for the operator's finalizer on the annotated
# cluster, then snapshot what a prune must leave: ORPH_UID, ORPH_BEFORE
# (orphan_data), ORPH_PODS (orphan_pods), ORPH_NSTS (its StatefulSets).
orphan_armed() {
  local ns=$1 c=$2
  wait_for 120 "the orphan finalizer" sh -c "kubectl -n $ns get mgc $c -o jsonpath='{.metadata.finalizers}' | grep -q multigres.com/orphan" ||
    fail "the operator did not put multigres.com/orphan on $c"
  ORPH_UID=$(kubectl -n "$ns" get mgc "$c" -o jsonpath='{.metadata.uid}')
  ORPH_BEFORE=$(orphan_data "$ns" "$c") ORPH_PODS=$(orphan_pods "$ns" "$c")
  ORPH_NSTS=$(grep -c '^StatefulSet/' <<<"$ORPH_BEFORE" || true)
  [ "$ORPH_NSTS" -ge 2 ] && [ -n "$ORPH_PODS" ] || fail "nothing to orphan: $ORPH_BEFORE / $ORPH_PODS"
}
# orphan_pruned NS CLUSTER: after the prune, the collector has taken the
# cluster's Deployments and CRs and left what orphan_armed saw, detached;
# an Orphaned Event says so. Prints how many objects were kept.
orphan_pruned() {
  local ns=$1 c=$2 ev
  wait_for 120 "the cluster's Deployments and CRs collected" sh -c "[ -z \"\$(kubectl get -n $ns deploy,shards,toposervers,cells,tablegroups -l multigres.com/cluster=$c -o name)\" ]" ||
    fail "left behind: $(kubectl get -n "$ns" deploy,shards,toposervers,cells,tablegroups -l "multigres.com/cluster=$c" -o name)"
  sleep 3 # the collector had its chance at the StatefulSets too
  check_orphaned "$ns" "$c" "$ORPH_UID" "$ORPH_BEFORE" "$ORPH_PODS"
  ev=$(kubectl get -n "$ns" events.events.k8s.io -o jsonpath='{range .items[*]}{.reason} {.regarding.name} {.note}{"\n"}{end}')
  grep -q "^Orphaned $c deletion-policy Orphan: detached $ORPH_NSTS StatefulSets" <<<"$ev" || fail "no Orphaned Event: $ev"
}
