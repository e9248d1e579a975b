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
kubectl wait --for=condition=Established --timeout=60s crd --all >/dev/null

say "Running the operator (log: $LOG)"
"$ROOT/multigres-op" --kubeconfig "$KUBECONFIG" 2>"$LOG" &
OP_PID=$!
sleep 1

say "Applying config/samples/minimal.yaml"
kubectl apply -f "$ROOT/config/samples/minimal.yaml"
for _ in $(seq 100); do grep -q '"type":"ADDED"' "$LOG" && break; sleep 0.1; done

say "What the API server holds"
kubectl get multigresclusters -A
say "What the operator saw (one JSON line per watch event)"
cat "$LOG"

if [ "${KEEP:-0}" = 1 ]; then
  trap - EXIT
  say "Left running. KUBECONFIG=$KUBECONFIG; operator pid $OP_PID. Stop with: kill $OP_PID; make cp-down"
fi
