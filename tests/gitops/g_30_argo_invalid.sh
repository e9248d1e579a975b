#!/usr/bin/env bash
# Argo CD: a commit naming a ShardTemplate that does not exist syncs (the
# webhook is off, as a cluster without it would be), and Argo CD shows the
# cluster and the Application Degraded with the operator's Stalled message.
# Reverting the commit brings it back to Healthy. Needs g_10's Application.
set -euo pipefail
source "$MGOP_CP_DIR/env"; source "$(dirname "$0")/../integration/lib.sh"; source "$(dirname "$0")/lib.sh"
ns=gitops-argo app=samples c=standard-ha-cluster
f=$GITOPS_DIR/work/samples/samples/templated-cluster.yaml
[ "$(app_state $app)" = Synced/Healthy ] || fail "the Application is not Synced/Healthy to begin with"
cp "$f" "$GITOPS_DIR/templated-cluster.yaml.orig"
sed -i 's/shardTemplate: standard-shard/shardTemplate: no-such-shard-template/' "$f"
grep -q no-such-shard-template "$f" || fail "could not edit templated-cluster.yaml"
git_commit samples "name a ShardTemplate that does not exist" >/dev/null
t0=$(date +%s)
app_refresh $app
wait_app $app Synced/Degraded 180 || fail "the Application did not become Degraded"
degraded=$(elapsed_since "$t0")
op=$(kubectl -n $ns get mgc $c -o jsonpath='{.status.conditions[?(@.type=="Stalled")].message}')
[[ $op == *no-such-shard-template* ]] || fail "the operator's Stalled message does not name the template: $op"
argo=$(app_get $app "{.status.resources[?(@.name==\"$c\")].health.message}")
[ "$argo" = "$op" ] || fail "Argo CD's message differs from the operator's: '$argo' vs '$op'"
[ "$(app_get $app "{.status.resources[?(@.name==\"$c\")].health.status}")" = Degraded ] || fail "the cluster's health is not Degraded"
cp "$GITOPS_DIR/templated-cluster.yaml.orig" "$f"
git_commit samples "revert: back to standard-shard" >/dev/null
t1=$(date +%s)
app_refresh $app
wait_app $app Synced/Healthy 300 || fail "not Healthy again after the revert"
echo "Degraded in ${degraded}s with the operator's message ('${op:0:80}...'); Healthy again $(elapsed_since "$t1")s after the revert"
