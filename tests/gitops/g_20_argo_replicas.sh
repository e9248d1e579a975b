#!/usr/bin/env bash
# Argo CD: a commit that changes a pool's replicas (overrides-cluster's
# analytics pool, replicasPerCell 1 -> 2) is synced; the Application's health
# goes Progressing while the operator converges, then Healthy, and the pool's
# StatefulSet has 2 replicas. Needs g_10_argo_sync's Application.
set -euo pipefail
source "$MGOP_CP_DIR/env"; source "$(dirname "$0")/../integration/lib.sh"; source "$(dirname "$0")/lib.sh"
ns=gitops-argo app=samples c=overrides-cluster
f=$GITOPS_DIR/work/samples/samples/overrides.yaml
sel=multigres.com/cluster=$c,multigres.com/pool=analytics
[ "$(app_state $app)" = Synced/Healthy ] || fail "the Application is not Synced/Healthy to begin with"
[ "$(kubectl -n $ns get sts -l $sel -o jsonpath='{.items[*].spec.replicas}')" = 1 ] || fail "the analytics pool does not start at 1 replica"
python3 - "$f" <<'PY'
import re, sys
p = sys.argv[1]; s = open(p).read()
new, n = re.subn(r"(analytics:.*?replicasPerCell: )1", r"\g<1>2", s, count=1, flags=re.S)
assert n == 1, "no analytics replicasPerCell in overrides.yaml"
open(p, "w").write(new)
PY
rev=$(git_commit samples "scale the analytics pool to 2")
t0=$(date +%s)
app_refresh $app
trail=$GITOPS_DIR/health-trail
: >"$trail"
for ((i = 0; i < 600; i++)); do   # up to 300 s, every 0.5 s
  s="$(app_get $app '{.status.sync.revision}') $(app_state $app)"
  [ "$(tail -n1 "$trail")" = "$s" ] || echo "$s" >>"$trail"
  [ "$s" = "$rev Synced/Healthy" ] && grep -q "^$rev .*/Progressing$" "$trail" && break
  sleep 0.5
done
after=$(elapsed_since "$t0")
note "health trail: $(tr '\n' ';' <"$trail")"
grep -q "^$rev .*/Progressing$" "$trail" || fail "never Progressing after the commit: $(tr '\n' ';' <"$trail")"
[ "$(tail -n1 "$trail")" = "$rev Synced/Healthy" ] || fail "not Synced/Healthy at $rev after ${after}s: $(tail -n1 "$trail")"
[ "$(kubectl -n $ns get sts -l $sel -o jsonpath='{.items[*].spec.replicas}')" = 2 ] || fail "the analytics pool was not scaled to 2"
clusters_ready $ns || fail "Healthy but a cluster is not Ready"
echo "replicas 1 -> 2 in Git: Progressing then Synced/Healthy at the new revision in ${after}s"
