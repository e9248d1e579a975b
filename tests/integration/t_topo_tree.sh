#!/usr/bin/env bash
# The whole tree for config/samples/minimal.yaml: every CR reaches Ready=True
# on kwok and `kubectl wait --for=condition=Ready` returns; the exact set of
# objects exists with the right owners and labels; every pod runs; and
# `render` shows exactly what the live reconcile applied.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-topo c=t1 topo=t1-global-topo
new_namespace $ns
start_operator topo --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
trap 'stop_operator topo' EXIT
cluster_manifest $ns $c | kubectl apply -f - >/dev/null

kubectl wait -n $ns --for=condition=Ready mgc/$c --timeout=180s >/dev/null || fail "MultigresCluster never Ready"
for k in toposerver cell tablegroup shard; do
  kubectl wait -n $ns --for=condition=Ready $k -l multigres.com/cluster=$c --timeout=30s >/dev/null || fail "a $k is not Ready"
done
# the exact set of objects, with their owners
# names computed with the reference operator's scheme (pinned in tests/unit.c)
expect="Cell/t1-zone-a-4e440dd2:MultigresCluster
ConfigMap/t1-postgres-default-0-inf-1056198a-exporter-queries:Shard
ConfigMap/t1-postgres-default-0-inf-1056198a-pg-hba:Shard
Deployment/t1-multiadmin-web:MultigresCluster
Deployment/t1-multiadmin:MultigresCluster
Deployment/t1-postgres-default-0-inf-multiorch-zone-a-74080dad:Shard
Deployment/t1-zone-a-multigateway-fd926989:Cell
PodDisruptionBudget/t1-global-topo:TopoServer
PodDisruptionBudget/t1-postgres-default-0-inf-pdb-6ba86c9c:Shard
Secret/t1-postgres-default-0-inf-1056198a-pgbackrest-ca:Shard
Secret/t1-postgres-default-0-inf-1056198a-pgbackrest-tls:Shard
Secret/t1-postgres-default-0-inf-1056198a-postgres-password:Shard
Service/t1-global-topo-headless:TopoServer
Service/t1-global-topo:TopoServer
Service/t1-multiadmin-web:MultigresCluster
Service/t1-multiadmin:MultigresCluster
Service/t1-multigateway-replica:MultigresCluster
Service/t1-multigateway:MultigresCluster
Service/t1-postgres-default-0-inf-multiorch-zone-a-74080dad:Shard
Service/t1-postgres-default-0-inf-pool-default-zone-a-headless-48722b6e:Shard
Service/t1-zone-a-multigateway-fd926989:Cell
Shard/t1-postgres-default-0-inf-1056198a:TableGroup
StatefulSet/t1-global-topo:TopoServer
StatefulSet/t1-postgres-default-0-inf-pool-default-zo---96231a19:Shard
TableGroup/t1-postgres-default-4b907a30:MultigresCluster
TopoServer/t1-global-topo:MultigresCluster"
have=$(kubectl get -n $ns toposervers,cells,tablegroups,shards,deploy,sts,svc,cm,secrets,pdb -l multigres.com/cluster=$c \
  -o jsonpath='{range .items[*]}{.kind}/{.metadata.name}:{.metadata.ownerReferences[0].kind}{"\n"}{end}' | sort)
if [ "$have" != "$(echo "$expect" | sort)" ]; then
  diff <(echo "$expect" | sort) <(echo "$have") >&2 || true
  fail "the set of objects differs from the expected one"
fi
[ "$(jget -n $ns pods -l multigres.com/cluster=$c -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | sort | uniq -c | tr -s ' ')" = " 10 Running" ] ||
  fail "not every one of the 10 pods is Running"
[ "$(jget -n $ns sts $topo -o jsonpath='{.status.readyReplicas}')" = 3 ] || fail "etcd StatefulSet not 3/3 ready"
[ "$(jget -n $ns pods -l multigres.com/cluster=$c,app.kubernetes.io/component=toposerver --field-selector=status.phase=Running -o name | wc -l)" = 3 ] || fail "not 3 Running etcd pods"
jget -n $ns svc $topo >/dev/null || fail "client Service missing"
[ "$(jget -n $ns svc $topo-headless -o jsonpath='{.spec.clusterIP}')" = None ] || fail "peer Service is not headless"
[ "$(jget -n $ns pvc -l multigres.com/cluster=$c -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | grep -c Bound)" = 7 ] || fail "etcd, pool and backup PVCs not all bound"

# ownership: cluster -> TopoServer -> workloads, controller refs
[ "$(jget -n $ns toposerver $topo -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].controller}')" = "MultigresCluster/$c/true" ] || fail "TopoServer owner wrong"
for o in sts/$topo svc/$topo svc/$topo-headless deploy/$c-multiadmin; do
  case $o in deploy/*) owner="MultigresCluster/$c/true" ;; *) owner="TopoServer/$topo/true" ;; esac
  [ "$(jget -n $ns $o -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].blockOwnerDeletion}')" = "$owner" ] || fail "$o owner wrong"
  [ "$(jget -n $ns $o -o jsonpath='{.metadata.labels.app\.kubernetes\.io/managed-by} {.metadata.labels.multigres\.com/cluster} {.metadata.labels.app\.kubernetes\.io/instance}')" = "multigres-operator $c $c" ] || fail "$o labels wrong"
done

# status: kstatus conditions and the topology summary
wait_for 30 "cluster status names the topology server available" \
  sh -c "kubectl get -n $ns mgc $c -o jsonpath='{.status.globalTopoServer.available}' | grep -qx True"
gen=$(jget -n $ns mgc $c -o jsonpath='{.metadata.generation}')
[ "$(jget -n $ns mgc $c -o jsonpath='{.status.observedGeneration}')" = "$gen" ] || fail "observedGeneration != generation"
for t in Ready Reconciling Stalled Available Progressing; do
  [ -n "$(jget -n $ns mgc $c -o jsonpath="{.status.conditions[?(@.type==\"$t\")].status}")" ] || fail "condition $t missing"
done
[ "$(jget -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type=="Stalled")].status}')" = False ] || fail "Stalled is not False"
[ "$(jget -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type=="Reconciling")].status}')" = False ] || fail "Reconciling is not False once Ready"
[ "$(jget -n $ns mgc $c -o jsonpath='{.status.readyCells}/{.status.totalCells} {.status.readyShards}/{.status.totalShards} {.status.phase}')" = "1/1 1/1 Healthy" ] || fail "cluster rollups wrong"
[ "$(jget -n $ns toposerver $topo -o jsonpath='{.status.readyReplicas}/{.status.replicas} {.status.phase}')" = "3/3 Healthy" ] || fail "TopoServer status wrong"

# render shows what the live reconcile applied (uids aside)
cluster_manifest $ns $c >"$IT_LOGS/topo-cluster.yaml"
"$OP_BIN" render -f "$IT_LOGS/topo-cluster.yaml" >"$IT_LOGS/topo-render.yaml" || fail "render failed"
wait_for 30 "render matches live" python3 "$ROOT/tests/integration/render_vs_live.py" "$IT_LOGS/topo-render.yaml" $ns ||
  { python3 "$ROOT/tests/integration/render_vs_live.py" "$IT_LOGS/topo-render.yaml" $ns; fail "render differs from the live objects"; }

# per-cell and per-database rollups
[ "$(jget -n $ns mgc $c -o jsonpath='{.status.cells.zone-a.ready} {.status.cells.zone-a.gatewayReplicas} {.status.databases.postgres.readyShards}/{.status.databases.postgres.totalShards} {.status.multiadmin.available}')" = "true 1 1/1 True" ] ||
  fail "per-cell/per-database rollups wrong: $(jget -n $ns mgc $c -o jsonpath='{.status}')"

# Events (events.k8s.io/v1) for what the operator did
evs=$(jget -n $ns events.events.k8s.io --field-selector regarding.name=$c -o jsonpath='{range .items[*]}{.type}/{.reason}/{.reportingController}{"\n"}{end}')
grep -qx "Normal/Applied/multigres.com/multigres-operator" <<<"$evs" || fail "no Applied event: $evs"
grep -qx "Normal/Converged/multigres.com/multigres-operator" <<<"$evs" || fail "no Converged event: $evs"
operator_alive topo || fail "operator exited"
