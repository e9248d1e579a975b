#!/usr/bin/env bash
# Argo CD: a commit that changes a pool's replicas (overrides-cluster's
# analytics pool, replicasPerCell 1 -> 2) is synced; the Application goes
# Progressing, then Healthy at the new revision, and the pool's StatefulSet
# has 2 replicas. On the test control plane the operator converges in about a
# second, faster than Argo CD refreshes, so the operator is paused (SIGSTOP)
# from the commit until Argo CD shows Progressing: what a real cluster shows
# while the operator has not yet observed the new generation. Needs g_10's
# Application.
set -euo pipefail
source "$MGOP_CP_DIR/env"; source "$(dirname "$0")/../integration/lib.sh"; source "$(dirname "$0")/lib.sh"
ns=gitops-argo app=samples c=overrides-cluster
f=$GITOPS_DIR/work/samples/samples/overrides.yaml
sel=multigres.com/cluster=$c,multigres.com/pool=analytics
op=$(cat "$IT_LOGS/gitops.pid")
[ "$(app_state $app)" = Synced/Healthy ] || fail "the Application is not Synced/Healthy to begin with"
[ "$(kubectl -n $ns get sts -l $sel -o jsonpath='{.items[*].spec.replicas}')" = 1 ] || fail "the analytics pool does not start at 1 replica"
python3 - "$f" <<'PY'
import re, sys
p = sys.argv[1]; s = open(p).read()
new, n = re.subn(r"(analytics:.*?replicasPerCell: )1", r"\g<1>2", s, count=1, flags=re.S)
assert n == 1, "no analytics replicasPerCell in overrides.yaml"
open(p, "w").write(new)
PY
kill -STOP "$op"
trap 'kill -CONT "$op" 2>/dev/null || true' EXIT
rev=$(git_commit samples "scale the analytics pool to 2")
t0=$(date +%s)
app_refresh $app
trail=$GITOPS_DIR/health-trail
: >"$trail"
track() { # track STATE SECONDS: record "<revision> <sync>/<health>" changes until STATE
  local i s
  for ((i = 0; i < $2 * 2; i++)); do
    s="$(app_get $app '{.status.sync.revision}') $(app_state $app)"
    [ "$(tail -n1 "$trail")" = "$s" ] || echo "$s" >>"$trail"
    [ "$s" = "$rev $1" ] && return 0
    sleep 0.5
  done
  return 1
}
track Synced/Progressing 180 || fail "never Progressing at $rev: $(tr '\n' ';' <"$trail")"
progressing=$(elapsed_since "$t0")
why=$(app_get $app "{.status.resources[?(@.name==\"$c\")].health.message}")
[[ $why == *"not yet seen generation"* ]] || fail "unexpected Progressing message: $why"
kill -CONT "$op"
t1=$(date +%s)
track Synced/Healthy 180 || fail "not Synced/Healthy at $rev: $(tr '\n' ';' <"$trail")"
note "health trail: $(tr '\n' ';' <"$trail")"
[ "$(kubectl -n $ns get sts -l $sel -o jsonpath='{.items[*].spec.replicas}')" = 2 ] || fail "the analytics pool was not scaled to 2"
clusters_ready $ns || fail "Healthy but a cluster is not Ready"
echo "replicas 1 -> 2 in Git: Progressing ('$why') ${progressing}s after the commit; Healthy $(elapsed_since "$t1")s after the operator resumed"
