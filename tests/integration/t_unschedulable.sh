#!/usr/bin/env bash
# Why a cluster does not converge: a cell whose zone no node carries.
#  - admission allows the cluster but kubectl prints the webhook's warning
#    naming the field, the zone and the node label (a cell in a zone that
#    exists gets none); fields Multigres cannot honour are refused by the
#    API server's call to the webhook, naming the field (a cell's metadata,
#    a readOnly pool), and defragmentationEnabled is admitted with no warning;
#  - its pool and gateway pods cannot be scheduled, and the Cell, Shard and
#    cluster status messages name a pod and the scheduler's reason instead
#    of a bare count; the cluster in a real zone never names the zone's
#    reason and, once Ready, no scheduling problem;
#  - the operator watches Pending pods only: when a node takes the lost
#    zone for a while, the pods start, leave that watch (a DELETED event)
#    and the reason leaves the messages with them.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-unsched vwc=it-unsched-config
new_namespace $ns
# the operator has its own identity, which the webhook configuration excludes
opkc=$IT_LOGS/unsched-op.kubeconfig
operator_kubeconfig $ns it-unsched-op "$opkc"
start_operator unsched --kubeconfig "$opkc" --namespace $ns \
  --webhook-enable --webhook-bind-address 127.0.0.1:0 --webhook-service-namespace $ns \
  --webhook-configuration-name $vwc --webhook-extra-sans 127.0.0.1 --webhook-owner-deployment= \
  --webhook-cert-check-interval 3s --health-probe-bind-address 127.0.0.1:0
znode= zold=
zone_back() { # the node's zone label as it was
  if [ -n "$zold" ]; then kubectl label node "$znode" "topology.kubernetes.io/zone=$zold" --overwrite >/dev/null
  else kubectl label node "$znode" topology.kubernetes.io/zone- >/dev/null; fi
}
cleanup() {
  [ -z "$znode" ] || zone_back 2>/dev/null || true
  kubectl delete validatingwebhookconfiguration $vwc --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete clusterrolebinding it-unsched-op --ignore-not-found >/dev/null 2>&1 || true
  stop_operator unsched
}
trap cleanup EXIT
wait_log unsched '"msg":"serving the admission webhook on 127.0.0.1:0 (port ' || fail "no webhook server"
wait_log unsched 'serving /healthz and /readyz on 127.0.0.1:0 (port ' || fail "no probe server"
port=$(grep -o 'admission webhook on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/unsched.log" | grep -o '[0-9]*$')
pport=$(grep -o 'serving /healthz and /readyz on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/unsched.log" | grep -o '[0-9]*$')
local_webhooks $vwc "$port" $ns 'vmultigrescluster|multigresclusters|"CREATE", "UPDATE"' \
  'vtemplates|shardtemplates|"CREATE", "UPDATE", "DELETE"' || fail "webhook configuration rejected"
wait_for 30 "CA bundle patched" sh -c \
  "kubectl get validatingwebhookconfiguration $vwc -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | grep -q ." ||
  fail "the operator did not patch the CA bundle"
# the zone check reads the Node watch: wait until every watch has listed
wait_for 30 "/readyz 200" sh -c "[ \$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$pport/readyz) = 200 ]" ||
  fail "/readyz never 200"

cluster() { # NAME ZONE
  printf 'apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: %s, namespace: %s}\nspec:\n  cells: [{name: zone-x, zone: %s}]\n' "$1" $ns "$2"
}
out=$(cluster lost mars-1a | kubectl apply -f - 2>&1) || fail "the cluster was refused: $out"
grep -qF 'Warning: spec.cells[0].zone "mars-1a" matches no node'"'"'s topology.kubernetes.io/zone label' <<<"$out" ||
  fail "kubectl printed no zone warning: $out"
note "kubectl: $(grep -F Warning <<<"$out")"
out=$(cluster found us-east-1a | kubectl apply -f - 2>&1) || fail "the second cluster was refused: $out"
grep -qF 'Warning' <<<"$out" && fail "a cell in an existing zone was warned about: $out"
# fields Multigres cannot honour (docs/api.md): refused, naming the field; defragmentation: acted on, no warning
out=$(printf '%s\n  globalTopoServer: {etcd: {maintenance: {defragmentationEnabled: true}}}\n' "$(cluster inert us-east-1a)" |
  kubectl apply --dry-run=server -f - 2>&1) || fail "the cluster with defragmentationEnabled was refused: $out"
grep -qF 'Warning' <<<"$out" && fail "defragmentationEnabled drew a warning: $out"
out=$(cluster meta us-east-1a | sed 's/zone: us-east-1a}/zone: us-east-1a, metadata: "rack 7"}/' |
  kubectl apply --dry-run=server -f - 2>&1) && fail "a cell with metadata was admitted: $out"
grep -qF 'spec.cells[name=zone-x].metadata is set, but Multigres' <<<"$out" || fail "no reason for the metadata refusal: $out"
out=$(printf 'apiVersion: multigres.com/v1alpha1\nkind: ShardTemplate\nmetadata: {name: ro, namespace: %s}\nspec:\n  pools: {q: {type: readOnly}}\n' $ns |
  kubectl apply --dry-run=server -f - 2>&1) && fail "a readOnly pool was admitted: $out"
grep -qF 'spec.pools.q.type is "readOnly": Multigres has no read-only pooler' <<<"$out" || fail "no reason for the readOnly refusal: $out"
note "refused: cells[].metadata and a readOnly pool, each naming the field"

msg_has() { # KIND NAME TEXT: the object's status.message contains TEXT
  local m
  m=$(jget -n $ns "$1" "$2" -o jsonpath='{.status.message}') || return 1
  [[ $m == *"$3"* ]]
}
reason="node(s) didn't match Pod's node affinity/selector"
wait_for 90 "the cluster's message names the scheduling reason" msg_has mgc lost "$reason" || {
  note "message: $(jget -n $ns mgc lost -o jsonpath='{.status.message}')"
  fail "the cluster's status message does not say why"
}
m=$(jget -n $ns mgc lost -o jsonpath='{.status.message}')
[[ $m == *"cannot be scheduled: Unschedulable: 0/4 nodes are available"* ]] || fail "no pod or reason named: $m"
note "cluster: $m"
cell=$(jget -n $ns cells -l multigres.com/cluster=lost -o jsonpath='{.items[0].metadata.name}')
wait_for 30 "the Cell's message names it" msg_has cell "$cell" "$reason" ||
  fail "Cell $cell: $(jget -n $ns cell "$cell" -o jsonpath='{.status.message}')"
shard=$(jget -n $ns shards -l multigres.com/cluster=lost -o jsonpath='{.items[0].metadata.name}')
wait_for 30 "the Shard's message names it" msg_has shard "$shard" "$reason" ||
  fail "Shard $shard: $(jget -n $ns shard "$shard" -o jsonpath='{.status.message}')"
# the cluster in a real zone never gets the zone's reason; while its volumes
# are being provisioned the scheduler may say "unbound immediate
# PersistentVolumeClaims" for a moment (a reason the message rightly names),
# and once it is Ready its message claims no scheduling problem at all
m=$(jget -n $ns mgc found -o jsonpath='{.status.message}')
[[ $m != *"$reason"* ]] || fail "the schedulable cluster claims the zone's scheduling problem: $m"
wait_for 120 "found Ready" sh -c "[ \"\$(kubectl get -n $ns mgc found -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]" ||
  fail "the schedulable cluster never Ready: $(jget -n $ns mgc found -o jsonpath='{.status.message}')"
m=$(jget -n $ns mgc found -o jsonpath='{.status.message}')
[[ $m != *"cannot be scheduled"* ]] || fail "the schedulable cluster, Ready, still claims a scheduling problem: $m"
# one node takes the lost zone: the pods schedule and leave the Pending watch
znode=$(kubectl get nodes -o jsonpath='{.items[0].metadata.name}')
zold=$(kubectl get node "$znode" -o jsonpath='{.metadata.labels.topology\.kubernetes\.io/zone}')
kubectl label node "$znode" topology.kubernetes.io/zone=mars-1a --overwrite >/dev/null
not_unsched() { ! msg_has mgc lost "cannot be scheduled"; }
wait_for 120 "the lost cluster's message drops the reason once its pods start" not_unsched ||
  fail "node $znode took zone mars-1a, yet: $(jget -n $ns mgc lost -o jsonpath='{.status.message}')"
cell_clear() { ! msg_has cell "$cell" "$reason"; }
wait_for 30 "the Cell's message drops it too" cell_clear ||
  fail "Cell $cell still names the reason: $(jget -n $ns cell "$cell" -o jsonpath='{.status.message}')"
note "zone mars-1a on $znode: the pods started; cluster: $(jget -n $ns mgc lost -o jsonpath='{.status.message}')"
zone_back && znode=
operator_alive unsched || fail "operator exited"
