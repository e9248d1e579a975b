# tests/gitops/lib.sh - helpers for the GitOps e2e (run.sh and g_*.sh).
# Sourced after the control plane env ($MGOP_CP_DIR/env) and
# tests/integration/lib.sh (fail, note, wait_for, start_operator ...).
# State shared by run.sh with the scenarios lives in $GITOPS_DIR/env.

GITOPS_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

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
