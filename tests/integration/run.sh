#!/usr/bin/env bash
# tests/integration/run.sh [PATTERN] - run the integration tests against the
# real local control plane (tests/controlplane/cp.sh). Brings it up, installs
# the CRDs, runs every t_*.sh (or those whose name matches PATTERN, an
# extended regular expression: `serving`, `serving|tracing`), tears it down, and
# ends with "N passed, N failed".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CP="$ROOT/tests/controlplane/cp.sh"
pattern=${1:-}

"$CP" build >&2 || { echo "control plane build failed" >&2; exit 1; }
if [ "${MGOP_IT_REUSE_CP:-0}" != 1 ]; then
  "$CP" up >&2 || { echo "control plane did not come up" >&2; exit 1; }
  trap '"$CP" down >&2' EXIT
fi
# shellcheck disable=SC1091
source "${MGOP_CP_DIR:-/tmp/multigres-op-cp}/env"
source "$HERE/lib.sh"

kubectl apply --server-side -f "$ROOT/crds.yaml" >/dev/null || { echo "crds.yaml was rejected" >&2; exit 1; }
# retried: kubectl wait fails at once ("accessor error") on a CRD whose status
# the API server has not filled yet, as tests/gitops/run.sh does too
wait_for 60 "every CRD Established" kubectl wait --for=condition=Established --timeout=10s crd --all >/dev/null || exit 1

passed=0 failed=0 failed_names=()
for t in "$HERE"/t_*.sh; do
  name=$(basename "$t" .sh)
  [ -n "$pattern" ] && [[ ! $name =~ $pattern ]] && continue
  echo "=== $name" >&2
  start=$(date +%s); touch "$IT_LOGS/.start"
  if bash "$t"; then
    passed=$((passed + 1)); echo "ok   $name ($(( $(date +%s) - start ))s)"
  else
    failed=$((failed + 1)); failed_names+=("$name"); echo "FAIL $name ($(( $(date +%s) - start ))s)"
    # CI keeps only what is printed: the end of each operator log this test wrote
    for log in $(find "$IT_LOGS" -name '*.log' -newer "$IT_LOGS/.start"); do
      echo "  --- last lines of $(basename "$log"):" >&2; tail -25 "$log" | cut -c1-600 >&2
    done
  fi
done
[ "$failed" -gt 0 ] && echo "failed: ${failed_names[*]}" >&2
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
