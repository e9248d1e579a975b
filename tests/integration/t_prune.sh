#!/usr/bin/env bash
# Prune: what the spec drops is deleted, and only that. Step 1 drops two
# pools (one Retain, one Delete), a shard's multiorch cell and a cell's local
# topology server; step 2 drops a table group (its Shard and workloads)
# while the operator is down, so its restart's turns prune them.
# Every other object keeps its uid; Retain PVCs stay, the Delete pool's go;
# an Event "Pruned" names what went, a log line and the metric count each.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-prune c=p1
new_namespace $ns
port=$(free_ports 1)
start_operator prune --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns --metrics-bind-address=127.0.0.1:$port
trap 'stop_operator prune' EXIT

# Cells and (inline) pools are append-only in the CRD, so a pool leaves the
# tree when its shard switches to a template without it; a multiorch cell,
# a cell's local topology server and a table group can go from the spec.
kubectl apply -f - >/dev/null <<EOF
apiVersion: multigres.com/v1alpha1
kind: ShardTemplate
metadata: {name: pr-four, namespace: $ns}
spec:
  multiorch: {cells: [zone-a, zone-b]}
  pools:
    main: {type: readWrite, cells: [zone-a], replicasPerCell: 1}
    keep: {cells: [zone-a, zone-b], replicasPerCell: 1}
    ret: {cells: [zone-a], replicasPerCell: 1}
    del: {cells: [zone-b], replicasPerCell: 1, pvcDeletionPolicy: {whenDeleted: Delete}}
---
apiVersion: multigres.com/v1alpha1
kind: ShardTemplate
metadata: {name: pr-two, namespace: $ns}
spec:
  multiorch: {cells: [zone-a]}
  pools:
    main: {type: readWrite, cells: [zone-a], replicasPerCell: 1}
    keep: {cells: [zone-a, zone-b], replicasPerCell: 1}
EOF
# manifest ZONE_B_SPEC SHARD_TEMPLATE EXTRA_TABLEGROUP
manifest() {
  cat <<EOF
apiVersion: multigres.com/v1alpha1
kind: MultigresCluster
metadata: {name: $c, namespace: $ns}
spec:
  cells:
  - {name: zone-a, zone: us-east-1a}
  - name: zone-b
    zone: us-east-1b
    spec:
$1
      multigateway: {replicas: 1}
$(databases_yaml)
      - {name: "0-inf", shardTemplate: $2}
$3
EOF
}
topo_b='      localTopoServer: {etcd: {replicas: 1}}'
extra_tg='    - name: extra
      shards:
      - name: "0-inf"
        spec:
          multiorch: {cells: [zone-a]}
          pools:
            xp: {type: readWrite, cells: [zone-a], replicasPerCell: 1}'

# every object of the cluster, with its uid
objects() {
  kubectl get -n $ns toposervers,cells,tablegroups,shards,deploy,sts,svc,cm,pdb -l multigres.com/cluster=$c \
    -o jsonpath='{range .items[*]}{.kind}/{.metadata.name} {.metadata.uid}{"\n"}{end}' | sort
}
ready_again() {
  wait_for 180 "Ready for generation $1" sh -c "kubectl get -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}/{.status.observedGeneration}' | grep -qx 'True/$1'"
}
pvcs() { jget -n $ns pvc -l multigres.com/cluster=$c,multigres.com/pool=$1 -o name; }
npvc() { [ "$(kubectl get -n $ns pvc -l multigres.com/cluster=$c,multigres.com/pool=$1 -o name | wc -l)" = "$2" ]; }

manifest "$topo_b" pr-four "$extra_tg" | kubectl apply -f - >/dev/null
kubectl wait -n $ns --for=condition=Ready mgc/$c --timeout=240s >/dev/null || fail "never Ready"
for p in ret del xp; do
  wait_for 60 "a PVC of pool $p" npvc $p 1 || fail "pool $p has no PVC: $(jget -n $ns pvc -o name)"
done
before=$(objects)
for want in "Deployment/$c-postgres-default-0-inf-multiorch-zone-b-" "TopoServer/$c-zone-b-" "StatefulSet/$c-postgres-default-0-inf-pool-ret-" \
  "StatefulSet/$c-postgres-default-0-inf-pool-del-" "TableGroup/$c-postgres-extra-" "Shard/$c-postgres-extra-0-inf-"; do
  [[ $before == *"$want"* ]] || fail "the starting tree has no $want*: $before"
done
pvc_ret=$(pvcs ret)

# step 1: two pools, a multiorch cell and a local topology server go
gen=$(jget -n $ns mgc $c -o jsonpath='{.metadata.generation}')
manifest "" pr-two "$extra_tg" | kubectl apply -f - >/dev/null
ready_again $((gen + 1)) || fail "not Ready after step 1"
wait_for 30 "step 1 pruned" sh -c "! kubectl get -n $ns toposervers -l multigres.com/cluster=$c -o name | grep -q zone-b" || fail "the local TopoServer stayed"
sleep 3 # the garbage collector's share (pods, PVCs) and any stray write
after=$(objects)
gone=$(comm -23 <(echo "$before") <(echo "$after") | cut -d' ' -f1)
new=$(comm -13 <(echo "$before") <(echo "$after"))
[ -z "$new" ] || fail "step 1 changed or added objects (uid differs): $new"
bad=$(grep -v -E "pool-(ret|del)-|multiorch-zone-b-|$c-zone-b-.*topo" <<<"$gone" || true)
[ -z "$bad" ] || fail "step 1 deleted objects still in the spec: $bad"
for k in StatefulSet/$c-postgres-default-0-inf-pool-ret- StatefulSet/$c-postgres-default-0-inf-pool-del- Service/$c-postgres-default-0-inf-pool-ret- \
  Deployment/$c-postgres-default-0-inf-multiorch-zone-b- Service/$c-postgres-default-0-inf-multiorch-zone-b- TopoServer/$c-zone-b- StatefulSet/$c-zone-b-; do
  [[ $gone == *"$k"* ]] || fail "step 1 did not prune $k*; gone: $gone"
done
[ "$(pvcs ret)" = "$pvc_ret" ] || fail "the Retain pool's PVC was deleted"
wait_for 30 "the Delete pool's PVC is gone" npvc del 0 || fail "the Delete pool's PVC outlived its StatefulSet"
n_step1=$(wc -l <<<"$gone")
note "step 1 pruned $n_step1 objects; the rest kept their uids"

# step 2: a table group goes (its TableGroup, Shard and the Shard's
# workloads), while the operator is down. The restart's early turn renders
# the new tree and reads its objects by name, so it does not see these; the
# full lists do, and their events give the cluster the turn that prunes them.
before=$after
pvc_xp=$(pvcs xp)
gen=$(jget -n $ns mgc $c -o jsonpath='{.metadata.generation}')
stop_operator prune
manifest "" pr-two "" | kubectl apply -f - >/dev/null
start_operator prune2 --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns --metrics-bind-address=127.0.0.1:$port
trap 'stop_operator prune2' EXIT
ready_again $((gen + 1)) || fail "not Ready after step 2"
early=$(grep -o '"msg":"early turn: MultigresCluster [^"]*' "$IT_LOGS/prune2.log" || true)
[[ $early == *"MultigresCluster $ns/$c read on its own"* ]] || fail "the restart took no early turn for $c: $early"
first=$(grep -o '"msg":"first reconcile ([^)]*) [a-z]*' "$IT_LOGS/prune2.log" || true)
[ "$first" = "\"msg\":\"first reconcile (MultigresCluster $ns/$c) done" ] || fail "the early turn's reconcile did not succeed: $first"
wait_for 30 "step 2 pruned" sh -c "! kubectl get -n $ns tablegroups -l multigres.com/cluster=$c -o name | grep -q extra" || fail "the TableGroup stayed"
sleep 3
after=$(objects)
gone=$(comm -23 <(echo "$before") <(echo "$after") | cut -d' ' -f1)
new=$(comm -13 <(echo "$before") <(echo "$after"))
[ -z "$new" ] || fail "step 2 changed or added objects (uid differs): $new"
bad=$(grep -v -E "$c-postgres-extra-" <<<"$gone" || true)
[ -z "$bad" ] || fail "step 2 deleted objects still in the spec: $bad"
for k in TableGroup/$c-postgres-extra- Shard/$c-postgres-extra-0-inf- StatefulSet/$c-postgres-extra-0-inf-pool-xp- \
  Deployment/$c-postgres-extra-0-inf-multiorch-zone-a- ConfigMap/$c-postgres-extra-0-inf- PodDisruptionBudget/$c-postgres-extra-0-inf-pdb-; do
  [[ $gone == *"$k"* ]] || fail "step 2 did not prune $k*; gone: $gone"
done
[ "$(pvcs xp)" = "$pvc_xp" ] || fail "the removed table group's PVC was deleted (whenDeleted defaults to Retain)"
n_step2=$(wc -l <<<"$gone")
note "step 2 pruned $n_step2 objects"

# the story: an Event, log lines, the metric
evs=$(jget -n $ns events.events.k8s.io --field-selector regarding.name=$c -o jsonpath='{range .items[*]}{.reason}: {.note}{"\n"}{end}')
grep -q "^Pruned: deleted .*TopoServer $c-zone-b-" <<<"$evs" || fail "no Pruned Event naming the TopoServer: $evs"
grep -q "^Pruned: deleted .*TableGroup $c-postgres-extra-" <<<"$evs" || fail "no Pruned Event naming the TableGroup: $evs"
logged=$(count_log prune '"msg":"pruned"')
[ "$logged" = "$n_step1" ] || fail "the first operator's log has $logged pruned lines, expected $n_step1"
logged=$(count_log prune2 '"msg":"pruned"')
[ "$logged" = "$n_step2" ] || fail "the restarted operator's log has $logged pruned lines, expected $n_step2"
m=$(curl -s "http://127.0.0.1:$port/metrics")
grep -qx "multigres_operator_pruned_objects_total $n_step2" <<<"$m" || # counted since the restart
  fail "metric: $(grep pruned <<<"$m")"
operator_alive prune2 || fail "operator exited"
