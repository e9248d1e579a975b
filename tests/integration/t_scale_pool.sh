#!/usr/bin/env bash
# Scaling a pool (replicasPerCell 3 -> 2) changes that pool's StatefulSet and
# the Shard that describes it, and no other workload.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-scale c=s1
new_namespace $ns
start_operator scale --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
trap 'stop_operator scale' EXIT
cluster_manifest $ns $c | kubectl apply -f - >/dev/null
kubectl wait -n $ns --for=condition=Ready mgc/$c --timeout=180s >/dev/null || fail "never Ready"
gens() {
  kubectl get -n $ns deploy,sts -l multigres.com/cluster=$c \
    -o jsonpath='{range .items[*]}{.kind}/{.metadata.name}={.metadata.generation}{"\n"}{end}' | sort
}
before=$(gens)
pool=$(kubectl get -n $ns sts -l multigres.com/cluster=$c,app.kubernetes.io/component=shard-pool -o name)
[ -n "$pool" ] || fail "no pool StatefulSet"
kubectl patch -n $ns mgc $c --type=merge -p '{"spec":{"databases":[{"name":"postgres","default":true,"tablegroups":[{"name":"default","default":true,"shards":[{"name":"0-inf","spec":{"pools":{"default":{"type":"readWrite","replicasPerCell":2}}}}]}]}]}}' >/dev/null
wait_for 30 "pool scaled to 2" sh -c "kubectl get -n $ns $pool -o jsonpath='{.spec.replicas}' | grep -qx 2" || fail "the pool was not scaled"
wait_for 60 "Ready again" sh -c "kubectl get -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}/{.status.observedGeneration}/{.metadata.generation}' | awk -F/ '\$1==\"True\" && \$2==\$3' | grep -q ." ||
  fail "not Ready again after scaling"
after=$(gens)
changed=$( (diff <(echo "$before") <(echo "$after") || true) | grep '^>' | sed 's/^> //; s/=.*//')
[ "$changed" = "StatefulSet/${pool#*/}" ] || { note "changed: $changed"; fail "scaling one pool changed other workloads"; }
wait_for 30 "2 pool pods" sh -c "[ \$(kubectl get -n $ns pods -l multigres.com/cluster=$c,app.kubernetes.io/component=shard-pool -o name | wc -l) = 2 ]" ||
  fail "not 2 pool pods"
# Ready again waited for the StatefulSet's status to count 2 pods, and the
# Shard's status is written in the same turn as the cluster's
shard_counts=$(kubectl get -n $ns shard -l multigres.com/cluster=$c -o jsonpath='{.items[0].status.readyReplicas}/{.items[0].status.replicas}')
[ "$shard_counts" = 2/2 ] || fail "the Shard reports $shard_counts pool pods ready, not 2/2"
operator_alive scale || fail "operator exited"
