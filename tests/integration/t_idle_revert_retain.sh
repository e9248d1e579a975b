#!/usr/bin/env bash
# After convergence an idle minute costs zero writes, and so does a restart of
# the operator; a hand-edited or deleted child is put back; three clusters in
# one namespace live side by side and deleting one leaves the others alone;
# with whenDeleted=Retain (the default) PVCs outlive their cluster.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-idle
new_namespace $ns
start_operator idle --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
trap 'stop_operator idle' EXIT
for c in ca cb cc; do cluster_manifest $ns $c | kubectl apply -f - >/dev/null; done
for c in ca cb cc; do
  kubectl wait -n $ns --for=condition=Ready mgc/$c --timeout=240s >/dev/null || fail "$c never Ready"
done
wait_for 30 "statuses settle" sh -c "kubectl get -n $ns mgc -o jsonpath='{range .items[*]}{.status.globalTopoServer.available}{\"\n\"}{end}' | grep -c True | grep -qx 3"
sleep 5

# one idle minute: zero writes
since=$(date +%s)
sleep 60
w=$(writes_by_operator "$since")
[ "$w" = 0 ] || fail "the operator made $w write requests during an idle minute"
note "idle minute: 0 writes"

# a restart on three converged clusters writes nothing: no apply (the
# spec-hash annotations), no status (compared with the live status, its
# transition times kept), no Secret POST, no Event
ltt_before=$(jget -n $ns mgc ca -o jsonpath='{.status.conditions[?(@.type=="Ready")].lastTransitionTime}')
stop_operator idle
since=$(date +%s)
start_operator idle --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns --zap-log-level=debug
for c in ca cb cc; do
  wait_log idle "\"msg\":\"reconciled\",\"namespace\":\"$ns\",\"name\":\"$c\",\"applied\":0," 60 ||
    fail "the restarted operator did not reconcile $c (or applied something)"
done
sleep 60
w=$(writes_by_operator "$since")
[ "$w" = 0 ] || fail "the restarted operator made $w write requests to converged clusters"
[ "$(jget -n $ns mgc ca -o jsonpath='{.status.conditions[?(@.type=="Ready")].lastTransitionTime}')" = "$ltt_before" ] ||
  fail "the restart moved Ready's lastTransitionTime"
note "restart on 3 converged clusters: 0 writes in 60 s"

# a hand edit of a child is reverted
kubectl scale -n $ns sts ca-global-topo --replicas=1 >/dev/null
wait_for 20 "replicas back to 3" sh -c "kubectl get -n $ns sts ca-global-topo -o jsonpath='{.spec.replicas}' | grep -qx 3" ||
  fail "a scaled StatefulSet was not reverted"
# a deleted child is recreated
kubectl delete -n $ns svc ca-global-topo-headless --wait=true >/dev/null
wait_for 20 "headless Service recreated" kubectl get -n $ns svc ca-global-topo-headless || fail "a deleted Service was not recreated"
uid_before=$(jget -n $ns toposerver ca-global-topo -o jsonpath='{.metadata.uid}')
kubectl delete -n $ns toposerver ca-global-topo --wait=true >/dev/null
wait_for 30 "TopoServer recreated" sh -c "kubectl get -n $ns toposerver ca-global-topo -o jsonpath='{.metadata.uid}' | grep -v -x '$uid_before' | grep -q ." ||
  fail "a deleted TopoServer was not recreated"
kubectl wait -n $ns --for=condition=Ready toposerver/ca-global-topo --timeout=120s >/dev/null || fail "recreated TopoServer never Ready"

# deleting one cluster leaves the others untouched; PVCs are retained
rv_a=$(jget -n $ns sts ca-global-topo -o jsonpath='{.metadata.resourceVersion}')
rv_c=$(jget -n $ns sts cc-global-topo -o jsonpath='{.metadata.resourceVersion}')
kubectl delete -n $ns mgc cb --wait=true >/dev/null
wait_for 60 "cb's workloads garbage-collected" sh -c "! kubectl get -n $ns sts cb-global-topo >/dev/null 2>&1" || fail "cb's StatefulSet outlived its cluster"
[ "$(jget -n $ns pvc -l multigres.com/cluster=cb -o name | wc -l)" = 7 ] || fail "cb's 7 PVCs (etcd, pool and the shard's backup) were not retained (whenDeleted defaults to Retain)"
[ "$(jget -n $ns sts ca-global-topo -o jsonpath='{.metadata.resourceVersion}')" = "$rv_a" ] || fail "deleting cb touched ca"
[ "$(jget -n $ns sts cc-global-topo -o jsonpath='{.metadata.resourceVersion}')" = "$rv_c" ] || fail "deleting cb touched cc"
operator_alive idle || fail "operator exited"
