#!/usr/bin/env bash
# Prune: what the spec drops is deleted, and only that. Step 1 drops two
# pools (one Retain, one Delete), a shard's multiorch cell and a kept cell's
# local topology server; step 2 drops a whole cell. Every other object keeps
# its uid; the Retain pool's PVCs stay, the Delete pool's go; an Event
# "Pruned" names what went and the metric counts it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-prune c=p1
new_namespace $ns
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
start_operator prune --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns --metrics-bind-address=127.0.0.1:$port
trap 'stop_operator prune' EXIT

# manifest CELLS ORCH_CELLS POOLS: the cluster with those parts
manifest() {
  cat <<EOF
apiVersion: multigres.com/v1alpha1
kind: MultigresCluster
metadata: {name: $c, namespace: $ns}
spec:
  cells:
$1
  databases:
  - name: postgres
    default: true
    tablegroups:
    - name: default
      default: true
      shards:
      - name: "0-inf"
        spec:
          multiorch: {cells: [$2]}
          pools:
$3
EOF
}
cell_a='  - {name: zone-a, zone: us-east-1a}'
cell_b_topo='  - name: zone-b
    zone: us-east-1b
    spec:
      localTopoServer: {etcd: {replicas: 1}}
      multigateway: {replicas: 1}'
cell_b='  - name: zone-b
    zone: us-east-1b
    spec:
      multigateway: {replicas: 1}'
cell_c='  - {name: zone-c, zone: us-east-1c}'
pool_main='            main: {type: readWrite, cells: [zone-a], replicasPerCell: 1}'
pool_keep='            keep: {type: readOnly, cells: [zone-a, zone-b, zone-c], replicasPerCell: 1}'
pool_ret='            ret: {type: readOnly, cells: [zone-a], replicasPerCell: 1}'
pool_del='            del: {type: readOnly, cells: [zone-b], replicasPerCell: 1, pvcDeletionPolicy: {whenDeleted: Delete}}'

# every object of the cluster, with its uid
objects() {
  kubectl get -n $ns toposervers,cells,tablegroups,shards,deploy,sts,svc,cm,pdb -l multigres.com/cluster=$c \
    -o jsonpath='{range .items[*]}{.kind}/{.metadata.name} {.metadata.uid}{"\n"}{end}' | sort
}
ready_again() {
  wait_for 180 "Ready for generation $1" sh -c "kubectl get -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}/{.status.observedGeneration}' | grep -qx 'True/$1'"
}

manifest "$cell_a
$cell_b_topo
$cell_c" "zone-a, zone-b" "$pool_main
$pool_keep
$pool_ret
$pool_del" | kubectl apply -f - >/dev/null
kubectl wait -n $ns --for=condition=Ready mgc/$c --timeout=240s >/dev/null || fail "never Ready"
wait_for 60 "the pools' PVCs exist" sh -c "[ \$(kubectl get -n $ns pvc -l multigres.com/cluster=$c,multigres.com/pool=ret -o name | wc -l) = 1 ] && [ \$(kubectl get -n $ns pvc -l multigres.com/cluster=$c,multigres.com/pool=del -o name | wc -l) = 1 ]" ||
  fail "the ret and del pools have no PVC: $(jget -n $ns pvc -o name)"
before=$(objects)
for want in "Deployment/$c-postgres-default-0-inf-multiorch-zone-b-" "TopoServer/$c-zone-b-" "StatefulSet/$c-postgres-default-0-inf-pool-ret-" \
  "StatefulSet/$c-postgres-default-0-inf-pool-del-" "Cell/$c-zone-c-"; do
  [[ $before == *"$want"* ]] || fail "the starting tree has no $want*: $before"
done
pvc_ret=$(jget -n $ns pvc -l multigres.com/cluster=$c,multigres.com/pool=ret -o name)

# step 1: two pools, a multiorch cell and a local topology server go
gen=$(jget -n $ns mgc $c -o jsonpath='{.metadata.generation}')
manifest "$cell_a
$cell_b
$cell_c" "zone-a" "$pool_main
$pool_keep" | kubectl apply -f - >/dev/null
ready_again $((gen + 1)) || fail "not Ready after step 1"
wait_for 30 "step 1 pruned" sh -c "! kubectl get -n $ns toposervers -l multigres.com/cluster=$c -o name | grep -q zone-b" || fail "the local TopoServer stayed"
sleep 3 # the garbage collector's share (pods, PVCs) and any stray write
after=$(objects)
gone=$(comm -23 <(echo "$before") <(echo "$after") | cut -d' ' -f1)
new=$(comm -13 <(echo "$before") <(echo "$after"))
[ -z "$new" ] || fail "step 1 changed or added objects (uid differs): $new"
# what must go: the two pools' StatefulSets and headless Services, the
# zone-b multiorch Deployment and Service, the local TopoServer and its etcd
# StatefulSet, Services and PDB
bad=$(grep -v -E "pool-(ret|del)-|multiorch-zone-b-|$c-zone-b-.*topo" <<<"$gone" || true)
[ -z "$bad" ] || fail "step 1 deleted objects still in the spec: $bad"
for k in StatefulSet/$c-postgres-default-0-inf-pool-ret- StatefulSet/$c-postgres-default-0-inf-pool-del- Service/$c-postgres-default-0-inf-pool-ret- \
  Deployment/$c-postgres-default-0-inf-multiorch-zone-b- Service/$c-postgres-default-0-inf-multiorch-zone-b- TopoServer/$c-zone-b- StatefulSet/$c-zone-b-; do
  [[ $gone == *"$k"* ]] || fail "step 1 did not prune $k*; gone: $gone"
done
[ "$(jget -n $ns pvc -l multigres.com/cluster=$c,multigres.com/pool=ret -o name)" = "$pvc_ret" ] ||
  fail "the Retain pool's PVC was deleted"
wait_for 30 "the Delete pool's PVC is gone" sh -c "[ -z \"\$(kubectl get -n $ns pvc -l multigres.com/cluster=$c,multigres.com/pool=del -o name)\" ]" ||
  fail "the Delete pool's PVC outlived its StatefulSet"
n_step1=$(wc -l <<<"$gone")
note "step 1 pruned $n_step1 objects; the rest kept their uids"

# step 2: a whole cell goes (its Cell, gateway, and the pool's zone-c set)
before=$after
gen=$(jget -n $ns mgc $c -o jsonpath='{.metadata.generation}')
manifest "$cell_a
$cell_b" "zone-a" "$pool_main
            keep: {type: readOnly, cells: [zone-a, zone-b], replicasPerCell: 1}" | kubectl apply -f - >/dev/null
ready_again $((gen + 1)) || fail "not Ready after step 2"
wait_for 30 "step 2 pruned" sh -c "! kubectl get -n $ns cells -l multigres.com/cluster=$c -o name | grep -q zone-c" || fail "the Cell stayed"
sleep 3
after=$(objects)
gone=$(comm -23 <(echo "$before") <(echo "$after") | cut -d' ' -f1)
new=$(comm -13 <(echo "$before") <(echo "$after"))
# the Cells and the Shard change (allCells, pools) in place: same uid, so
# they are not in `new`
[ -z "$new" ] || fail "step 2 changed or added objects (uid differs): $new"
bad=$(grep -v -E "zone-c" <<<"$gone" || true)
[ -z "$bad" ] || fail "step 2 deleted objects still in the spec: $bad"
for k in Cell/$c-zone-c- Deployment/$c-zone-c-multigateway- Service/$c-zone-c-multigateway- StatefulSet/$c-postgres-default-0-inf-pool-keep-zo; do
  [[ $gone == *"$k"* ]] || fail "step 2 did not prune $k*; gone: $gone"
done
n_step2=$(wc -l <<<"$gone")

# the story: an Event, log lines, the metric
evs=$(jget -n $ns events.events.k8s.io --field-selector regarding.name=$c -o jsonpath='{range .items[*]}{.reason}: {.note}{"\n"}{end}')
grep -q "^Pruned: deleted .*TopoServer $c-zone-b-" <<<"$evs" || fail "no Pruned Event naming the TopoServer: $evs"
grep -q "^Pruned: deleted .*Cell $c-zone-c-" <<<"$evs" || fail "no Pruned Event naming the Cell: $evs"
logged=$(count_log prune '"msg":"pruned"')
[ "$logged" = $((n_step1 + n_step2)) ] || fail "log has $logged pruned lines, expected $((n_step1 + n_step2))"
m=$(curl -s "http://127.0.0.1:$port/metrics")
grep -qx "multigres_operator_pruned_objects_total $((n_step1 + n_step2))" <<<"$m" ||
  fail "metric: $(grep pruned <<<"$m")"
operator_alive prune || fail "operator exited"
