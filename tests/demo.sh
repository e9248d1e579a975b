#!/usr/bin/env bash
# make demo: a real local control plane, the CRDs, the operator, and the
# minimal sample, then what the operator saw. KEEP=1 leaves it all running.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CP="$ROOT/tests/controlplane/cp.sh"
LOG="$ROOT/build/demo/operator.log"
mkdir -p "$(dirname "$LOG")"
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Building the local control plane (cached after the first run; ~20 min cold)"
"$CP" build
say "Starting kube-apiserver, etcd, controller-manager, scheduler and kwok on 127.0.0.1"
"$CP" up
source "${MGOP_CP_DIR:-/tmp/multigres-op-cp}/env"
cleanup() {
  [ -n "${OP_PID:-}" ] && kill "$OP_PID" 2>/dev/null && wait "$OP_PID" 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ]; then "$CP" down; fi
}
trap cleanup EXIT

say "Installing the CRDs"
kubectl apply --server-side -f "$ROOT/crds.yaml"
for _ in $(seq 12); do # retried: kubectl wait fails at once on a CRD whose status is not filled yet
  kubectl wait --for=condition=Established --timeout=10s crd --all >/dev/null 2>&1 && break
  sleep 1
done
kubectl wait --for=condition=Established --timeout=10s crd --all >/dev/null

say "Running the operator (log: $LOG)"
# kwok simulates the etcd pods, so nothing answers at the cluster's global
# topology address: topology registration is off here (t_topology tests it
# against a real etcd; docs/topology.md)
"$ROOT/multigres-op" --kubeconfig "$KUBECONFIG" --zap-devel=false --webhook-enable=false \
  --topology-registration=false 2>"$LOG" &
OP_PID=$!
sleep 1

say "Applying config/samples/minimal.yaml"
kubectl apply -f "$ROOT/config/samples/minimal.yaml"

say "Waiting for the cluster to converge (kubectl wait --for=condition=Ready)"
start=$(date +%s)
if ! kubectl wait --for=condition=Ready multigrescluster/minimal --timeout=180s; then
  kubectl get multigrescluster minimal -o jsonpath='{.status.conditions}'; echo
  tail -20 "$LOG"
  echo "the sample did not converge" >&2
  exit 1
fi
say "Ready after $(( $(date +%s) - start ))s"

say "The cluster and its children"
kubectl get multigresclusters,toposervers,cells,tablegroups,shards
say "The workloads (kwok runs the pods on fake nodes)"
kubectl get statefulsets,deployments,services,poddisruptionbudgets,pvc -l multigres.com/cluster=minimal
say "Events the operator recorded"
kubectl get events.events.k8s.io --field-selector regarding.name=minimal \
  -o custom-columns=TYPE:.type,REASON:.reason,NOTE:.note
say "Operator log (last lines; one JSON object per line)"
tail -n 15 "$LOG"

if [ "${KEEP:-0}" = 1 ]; then
  trap - EXIT
  say "Left running. KUBECONFIG=$KUBECONFIG; operator pid $OP_PID. Stop with: kill $OP_PID; make cp-down"
fi
