#!/usr/bin/env bash
# Argo CD: a sync that prunes (a ConfigMap dropped from Git) with every owned
# child of the clusters present deletes only that ConfigMap: the children the
# operator made (Cells, TableGroups, Shards, TopoServers, workloads, Services,
# ConfigMaps, PDBs, PVCs) keep their uids, and Argo CD's sync result prunes
# nothing else. Needs g_10's Application.
set -euo pipefail
source "$MGOP_CP_DIR/env"; source "$(dirname "$0")/../integration/lib.sh"; source "$(dirname "$0")/lib.sh"
ns=gitops-argo app=samples
w=$GITOPS_DIR/work/samples/samples
cat >"$w/gitops-marker.yaml" <<EOF2
apiVersion: v1
kind: ConfigMap
metadata: {name: gitops-marker}
data: {purpose: "dropped from Git to make Argo CD prune"}
EOF2
git_commit samples "add a marker ConfigMap" >/dev/null
app_refresh $app
wait_for 120 "marker created" kubectl -n $ns get cm gitops-marker || fail "the marker was not created"
wait_app $app Synced/Healthy 180 || fail "not Synced/Healthy with the marker"
before=$(children $ns)
n=$(echo "$before" | grep -c .)
[ "$n" -ge 20 ] || fail "only $n owned children to protect"
rm "$w/gitops-marker.yaml"
git_commit samples "drop the marker ConfigMap" >/dev/null
t0=$(date +%s)
app_refresh $app
wait_for 120 "marker pruned" sh -c "! kubectl -n $ns get cm gitops-marker" || fail "Argo CD did not prune the marker"
pruned=$(elapsed_since "$t0")
wait_app $app Synced/Healthy 180 || fail "not Synced/Healthy after the prune"
sleep 5   # a deletion in flight would show as a missing or new uid now
after=$(children $ns)
if [ "$before" != "$after" ]; then
  diff <(echo "$before") <(echo "$after") >&2 || true
  fail "owned children changed across the prune"
fi
gone=$(app_get $app '{range .status.operationState.syncResult.resources[?(@.message=="pruned")]}{.kind}/{.name} {end}')
[ "$gone" = "ConfigMap/gitops-marker " ] || fail "Argo CD pruned more than the marker: $gone"
deleting=$(kubectl get -n $ns cells,tablegroups,shards,toposervers,sts,deploy,pvc -o jsonpath='{range .items[?(@.metadata.deletionTimestamp)]}{.kind}/{.metadata.name} {end}')
[ -z "$deleting" ] || fail "children being deleted: $deleting"
echo "prune removed only ConfigMap/gitops-marker in ${pruned}s; all $n owned children kept their uids"
