#!/usr/bin/env bash
# tests/gitops/run.sh [PATTERN] - the GitOps e2e: real Argo CD and real Flux,
# built from Go modules (build.sh), run out of cluster against a private test
# control plane (tests/controlplane/cp.sh), the operator from the built binary,
# Git served over smart HTTP on loopback (githttp.py). Runs g_*.sh (or those
# matching PATTERN): the Argo CD scenarios with Argo CD running and the Flux
# ones with Flux running, the two parts side by side. One line per scenario
# with its timing; ends with "N passed, N failed". Knobs: MGOP_GITOPS_SOAK
# (seconds a converged Application or Kustomization must stay unchanged,
# default 300, the issue's five minutes), MGOP_GITOPS_PARALLEL (1: Argo CD and
# Flux parts at once; 0: one after the other), MGOP_CP_DIR (default
# /tmp/multigres-op-cp-gitops).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CP="$ROOT/tests/controlplane/cp.sh"
pattern=${1:-}
export MGOP_CP_DIR=${MGOP_CP_DIR:-/tmp/multigres-op-cp-gitops}
export MGOP_GITOPS_SOAK=${MGOP_GITOPS_SOAK:-300}

for p in redis-server:redis-server git:git; do
  command -v "${p%%:*}" >/dev/null || { echo "${p%%:*} missing: apt-get install ${p#*:} (.ci/run does)" >&2; exit 1; }
done
[ -x /usr/lib/git-core/git-http-backend ] || { echo "git http-backend missing (Debian package git)" >&2; exit 1; }

scenarios() { # scenarios GLOB: the g_*.sh of one tool that match PATTERN
  local t
  for t in "$HERE"/$1; do
    [ -n "$pattern" ] && [[ $(basename "$t" .sh) != *$pattern* ]] && continue
    echo "$t"
  done
}
argo=$(scenarios 'g_*_argo_*.sh')
flux=$(scenarios 'g_*_flux_*.sh')
[ -n "$argo$flux" ] || { echo "no scenario matches '$pattern'" >&2; exit 1; }
# build only what the chosen scenarios need
if [ -n "$argo" ]; then
  "$HERE/build.sh" argocd >&2 || { echo "building Argo CD failed" >&2; exit 1; }
  ARGOCD_BIN=$("$HERE/build.sh" dir argocd)
  KUSTOMIZE_BIN=$("$HERE/build.sh" dir kustomize)   # the repo server execs kustomize
fi
if [ -n "$flux" ]; then
  "$HERE/build.sh" flux >&2 || { echo "building Flux failed" >&2; exit 1; }
  FLUX_BIN=$("$HERE/build.sh" dir flux)
fi
"$CP" build >&2 || { echo "control plane build failed" >&2; exit 1; }

export GITOPS_DIR=$MGOP_CP_DIR.gitops
rm -rf "$GITOPS_DIR"; mkdir -p "$GITOPS_DIR"/{repos,work,pids}
"$CP" up >&2 || { echo "control plane did not come up" >&2; exit 1; }
# shellcheck disable=SC1091
source "$MGOP_CP_DIR/env"
source "$ROOT/tests/integration/lib.sh"
source "$HERE/lib.sh"

stop_all() {
  local n
  for n in kustomize-controller source-controller argocd-application-controller argocd-repo-server redis githttp; do
    stop_bg $n
  done
  stop_operator gitops
  kubectl delete validatingwebhookconfiguration gitops-orphan --ignore-not-found >/dev/null 2>&1
  "$CP" down >&2
  rm -rf "$GITOPS_DIR"
}
trap stop_all EXIT

kubectl apply --server-side -f "$ROOT/crds.yaml" >/dev/null || { echo "crds.yaml was rejected" >&2; exit 1; }
# config/samples/backup-filesystem.yaml puts its backups on StorageClass
# nfs-client (ReadWriteMany); here it is the control plane's hostpath
# provisioner under that name, so g_10 can sync the samples as shipped
kubectl apply -f - >/dev/null <<'EOF' || { echo "StorageClass nfs-client was rejected" >&2; exit 1; }
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: nfs-client}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
if [ -n "$argo" ]; then
  kubectl apply --server-side -f "$ARGOCD_BIN/crds/" >/dev/null || { echo "Argo CD CRDs were rejected" >&2; exit 1; }
fi
if [ -n "$flux" ]; then
  kubectl apply --server-side -f "$FLUX_BIN/crds/" >/dev/null || { echo "Flux CRDs were rejected" >&2; exit 1; }
fi
# a CRD just created has no status.conditions yet, which kubectl wait calls an error: retry
wait_for 90 "every CRD Established" kubectl wait --for=condition=Established --timeout=10s crd --all ||
  { echo "CRDs not Established" >&2; exit 1; }

GIT_PORT=$(free_port)
export GIT_URL=http://127.0.0.1:$GIT_PORT
start_bg githttp python3 "$HERE/githttp.py" "$GIT_PORT" "$GITOPS_DIR/repos"
wait_port "$GIT_PORT" 30 || { echo "git server did not listen" >&2; exit 1; }
# The operator as installed: its own service account, and the webhook that
# holds the children of a deletion-policy Orphan cluster while a foreground
# deletion (Argo CD's prune) would collect them (g_45, g_65).
kubectl create namespace mgop-system >/dev/null
opkc=$GITOPS_DIR/operator.kubeconfig
operator_kubeconfig mgop-system gitops-op "$opkc"
start_operator gitops --kubeconfig "$opkc" \
  --webhook-enable --webhook-bind-address 127.0.0.1:0 --webhook-service-namespace mgop-system \
  --webhook-configuration-name gitops-orphan --webhook-extra-sans 127.0.0.1 --webhook-owner-deployment= \
  --webhook-cert-check-interval 3s
wait_log gitops '"msg":"serving the admission webhook on 127.0.0.1:0 (port ' 30 ||
  { echo "the operator's webhook did not start (log $IT_LOGS/gitops.log)" >&2; exit 1; }
orphan_webhook gitops-orphan "$(grep -o 'admission webhook on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/gitops.log" | grep -o '[0-9]*$')" \
  system:serviceaccount:mgop-system:op || { echo "the webhook configuration was rejected" >&2; exit 1; }

start_argocd() {
  local redis rs rsm cm
  redis=$(free_port) rs=$(free_port) rsm=$(free_port) cm=$(free_port)
  kubectl create namespace argocd >/dev/null
  # the health checks exactly as shipped
  kubectl apply -f "$ROOT/config/argocd/argocd-cm.yaml" >/dev/null || return 1
  kubectl apply -f - >/dev/null <<EOF || return 1
apiVersion: v1
kind: Secret
metadata:
  name: argocd-secret
  namespace: argocd
  labels: {app.kubernetes.io/name: argocd-secret, app.kubernetes.io/part-of: argocd}
stringData: {server.secretkey: e2e-only}
---
# only argocd-server creates the default project; core mode has none
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata: {name: default, namespace: argocd}
spec:
  sourceRepos: ['*']
  destinations: [{server: '*', namespace: '*'}]
  clusterResourceWhitelist: [{group: '*', kind: '*'}]
EOF
  start_bg redis redis-server --bind 127.0.0.1 --port "$redis" --save '' --appendonly no
  wait_port "$redis" 30 || return 1
  start_bg argocd-repo-server env ARGOCD_BINARY_NAME=argocd-repo-server ARGOCD_GPG_ENABLED=false \
    PATH="$ARGOCD_BIN:$KUSTOMIZE_BIN:$PATH" "$ARGOCD_BIN/argocd-lite" --address 127.0.0.1 --port "$rs" \
    --metrics-address 127.0.0.1 --metrics-port "$rsm" --redis "127.0.0.1:$redis" --disable-tls --client-ca-path= \
    --loglevel warn
  wait_port "$rs" 60 || return 1
  # ARGOCD_FAKE_IN_CLUSTER: "https://kubernetes.default.svc" is the kubeconfig's cluster;
  # --persist-resource-health: Argo CD v3 keeps each resource's health (and the
  # operator's message) out of the Application's status unless told to
  start_bg argocd-application-controller env ARGOCD_BINARY_NAME=argocd-application-controller \
    ARGOCD_FAKE_IN_CLUSTER=true KUBECONFIG="$KUBECONFIG" "$ARGOCD_BIN/argocd-lite" \
    --namespace argocd --repo-server "127.0.0.1:$rs" --repo-server-plaintext --redis "127.0.0.1:$redis" \
    --metrics-port "$cm" --app-resync 20 --app-resync-jitter 0 --persist-resource-health --loglevel warn
  wait_port "$cm" 60
}

start_flux() {
  local sp sm sh km kh
  sp=$(free_port) sm=$(free_port) sh=$(free_port) km=$(free_port) kh=$(free_port)
  kubectl create namespace flux-system >/dev/null
  mkdir -p "$GITOPS_DIR/flux-storage"
  start_bg source-controller env RUNTIME_NAMESPACE=flux-system KUBECONFIG="$KUBECONFIG" \
    "$FLUX_BIN/source-controller" --watch-all-namespaces=false --enable-leader-election=false \
    --storage-path "$GITOPS_DIR/flux-storage" --storage-addr "127.0.0.1:$sp" --storage-adv-addr "127.0.0.1:$sp" \
    --metrics-addr "127.0.0.1:$sm" --health-addr "127.0.0.1:$sh" --log-level info
  start_bg kustomize-controller env RUNTIME_NAMESPACE=flux-system KUBECONFIG="$KUBECONFIG" \
    "$FLUX_BIN/kustomize-controller" --watch-all-namespaces=false --enable-leader-election=false \
    --metrics-addr "127.0.0.1:$km" --health-addr "127.0.0.1:$kh" --log-level info
  wait_port "$sh" 60 && wait_port "$kh" 60
}

# Each part (Argo CD, Flux) writes one line per scenario into its own results
# file; the two parts run side by side (MGOP_GITOPS_PARALLEL=1, the default:
# they share the control plane and the operator but not a namespace, a tool or
# a Git repository) or one after the other (0).
run_one() { # run_one SCENARIO RESULTS
  local t=$1 res=$2 name start out rc line
  name=$(basename "$t" .sh)
  echo "=== $name" >&2
  start=$(date +%s)
  out=$(bash "$t"); rc=$?
  if [ $rc = 0 ]; then line="ok   $name ($(elapsed_since "$start")s): $out"
  else line="FAIL $name ($(elapsed_since "$start")s): $out"; fi
  echo "$line"; echo "$line" >>"$res"
}
argo_part() {
  local t0 t
  t0=$(date +%s)
  if start_argocd; then
    echo "--- Argo CD $(sed -n 's/^argocd=//p' "$ARGOCD_BIN/VERSIONS") up in $(elapsed_since "$t0")s" >&2
    for t in $argo; do run_one "$t" "$GITOPS_DIR/results.argo"; done
  else
    echo "FAIL argocd: did not start (logs in $IT_LOGS/gitops-argocd-*.log)" | tee -a "$GITOPS_DIR/results.argo"
  fi
  for n in argocd-application-controller argocd-repo-server redis; do stop_bg $n; done
}
flux_part() {
  local t0 t
  t0=$(date +%s)
  if start_flux; then
    echo "--- Flux source-controller/kustomize-controller $(sed -n 's/^source-controller=//p' "$FLUX_BIN/VERSIONS") up in $(elapsed_since "$t0")s" >&2
    for t in $flux; do run_one "$t" "$GITOPS_DIR/results.flux"; done
  else
    echo "FAIL flux: did not start (logs in $IT_LOGS/gitops-*-controller.log)" | tee -a "$GITOPS_DIR/results.flux"
  fi
  for n in kustomize-controller source-controller; do stop_bg $n; done
}
: >"$GITOPS_DIR/results.argo"; : >"$GITOPS_DIR/results.flux"
t_all=$(date +%s)
if [ "${MGOP_GITOPS_PARALLEL:-1}" = 1 ] && [ -n "$argo" ] && [ -n "$flux" ]; then
  argo_part & argo_pid=$!   # a subshell: run.sh's EXIT trap is not inherited
  flux_part
  wait "$argo_pid"
else
  [ -z "$argo" ] || argo_part
  [ -z "$flux" ] || flux_part
fi
passed=$(cat "$GITOPS_DIR/results.argo" "$GITOPS_DIR/results.flux" | grep -c '^ok ')
failed=$(cat "$GITOPS_DIR/results.argo" "$GITOPS_DIR/results.flux" | grep -c '^FAIL ')
failed_names=$(cat "$GITOPS_DIR/results.argo" "$GITOPS_DIR/results.flux" | sed -n 's/^FAIL \([^ :]*\).*/\1/p' | tr '\n' ' ')
if ! operator_alive gitops; then
  echo "FAIL operator: exited during the run"; failed=$((failed + 1)); failed_names+="operator"
fi
[ "$failed" -gt 0 ] && echo "failed: $failed_names" >&2
echo "--- scenarios took $(elapsed_since "$t_all")s (soak ${MGOP_GITOPS_SOAK}s, parallel ${MGOP_GITOPS_PARALLEL:-1})" >&2
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
