#!/usr/bin/env bash
# Deletion safety: the annotation multigres.com/deletion-policy: Orphan.
#  - the operator puts its finalizer multigres.com/orphan on the annotated
#    cluster (and none on a cluster without the annotation);
#  - `kubectl delete` of the cluster: its StatefulSets (pool, etcd), their
#    PVCs and the shard's password Secret survive the garbage collector with
#    no owner references and the label multigres.com/orphaned-from=<uid>;
#    their pods keep running (same UIDs); the Deployments and CRs are gone;
#    an Orphaned Event and multigres_operator_orphaned_resources say so;
#  - re-created with another pool layout, or a smaller storage size: Stalled
#    (OrphansIncompatible / StorageShrinkRefused) naming the field, and the
#    orphans are not touched (same resourceVersions);
#  - re-created with the same spec: adopted (owner references to the new
#    Shard/TopoServer, label gone, the Secret owned by the new Shard), Ready,
#    the same pod UIDs, no rollout; an Adopted Event and
#    multigres_operator_reclaims_total{result="adopted"};
#  - the webhook refuses removing or changing the annotation while the
#    deletion is in progress;
#  - a cluster without the annotation is deleted as before: everything goes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-orphan c=orph plain=plain vwc=it-orphan-config
new_namespace $ns
opkc=$IT_LOGS/orphan-op.kubeconfig
operator_kubeconfig $ns it-orphan-op "$opkc"
start_operator orphan --kubeconfig "$opkc" --namespace $ns \
  --metrics-bind-address 127.0.0.1:0 --health-probe-bind-address 127.0.0.1:0 \
  --webhook-enable --webhook-bind-address 127.0.0.1:0 --webhook-service-namespace $ns \
  --webhook-configuration-name $vwc --webhook-extra-sans 127.0.0.1 --webhook-owner-deployment= \
  --webhook-cert-check-interval 3s
cleanup() {
  kubectl delete validatingwebhookconfiguration $vwc --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete clusterrolebinding it-orphan-op --ignore-not-found >/dev/null 2>&1 || true
  stop_operator orphan
  for m in $(kubectl get -n $ns mgc -o name 2>/dev/null); do
    kubectl patch -n $ns "$m" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
  done
  kubectl delete namespace $ns --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT
wait_log orphan '"msg":"serving the admission webhook on 127.0.0.1:0 (port ' || fail "no webhook server"
wait_log orphan '"msg":"serving /metrics on 127.0.0.1:0 (port ' || fail "no metrics server"
wport=$(grep -o 'admission webhook on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/orphan.log" | grep -o '[0-9]*$')
mport=$(grep -o 'serving /metrics on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/orphan.log" | grep -o '[0-9]*$')
webhook_config() {
  local_webhooks $vwc "$wport" $ns 'vmultigrescluster|multigresclusters|"CREATE", "UPDATE"' \
    'vchildren-delete|cells, tablegroups, shards, toposervers|"DELETE"|{matchLabels: {multigres.com/deletion-policy: Orphan}}' ||
    fail "webhook configuration rejected"
  wait_for 30 "CA bundle patched" sh -c "kubectl get validatingwebhookconfiguration $vwc -o jsonpath='{.webhooks[1].clientConfig.caBundle}' | grep -q ." ||
    fail "the operator did not patch the CA bundle"
}
webhook_config

manifest() { # NAME POOL SIZE [ANNOTATION]
  local ann=""
  [ -n "${4:-}" ] && ann="  annotations: {multigres.com/deletion-policy: $4}"
  cat <<YAML
apiVersion: multigres.com/v1alpha1
kind: MultigresCluster
metadata:
  name: $1
  namespace: $ns
$ann
spec:
  cells: [{name: zone-a, zone: us-east-1a}]
$(databases_yaml)
      - name: 0-inf
        spec: {pools: {$2: {type: readWrite, replicasPerCell: 2, storage: {size: $3}}}}
YAML
}
metrics() { curl -s "http://127.0.0.1:$mport/metrics"; }
events() { kubectl get -n $ns events.events.k8s.io -o jsonpath='{range .items[*]}{.reason} {.regarding.name} {.note}{"\n"}{end}'; }
# "kind/name uid rv owners orphaned-from" per object of the cluster that holds data
data_objects() {
  kubectl get -n $ns sts,pvc -l multigres.com/cluster=$c -o jsonpath='{range .items[*]}{.kind}/{.metadata.name} {.metadata.uid} {.metadata.resourceVersion} {.metadata.ownerReferences[*].kind}: {.metadata.labels.multigres\.com/orphaned-from}{"\n"}{end}' | sort
}
secret() { kubectl get -n $ns secret -l multigres.com/cluster=$c,app.kubernetes.io/component=postgres-password -o jsonpath="$1"; }
pod_uids() { # the StatefulSets' pods
  kubectl get -n $ns pods -l "multigres.com/cluster=$c,app.kubernetes.io/component in (shard-pool,toposerver)" \
    -o jsonpath='{range .items[*]}{.metadata.name}={.metadata.uid}{"\n"}{end}' | sort
}
status_of() { kubectl get -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type=="Stalled")].status}/{.status.conditions[?(@.type=="Stalled")].reason}'; }

# ---- the annotated cluster, and one without the annotation
manifest $c main 1Gi Orphan | kubectl apply -f - >/dev/null || fail "the annotated cluster was refused"
manifest $plain main 1Gi | kubectl apply -f - >/dev/null || fail "the plain cluster was refused"
out=$(manifest bad main 1Gi Keep | kubectl apply -f - 2>&1) && fail "deletion-policy Keep was accepted"
[[ $out == *"must be Orphan"* ]] || fail "deletion-policy Keep refused without the reason: $out"
kubectl wait -n $ns --for=condition=Ready mgc/$c mgc/$plain --timeout=240s >/dev/null || fail "never Ready"
fins=$(kubectl get -n $ns mgc $c -o jsonpath='{.metadata.finalizers}')
[[ $fins == *multigres.com/orphan* ]] || fail "no finalizer multigres.com/orphan on the annotated cluster: $fins"
fins=$(kubectl get -n $ns mgc $plain -o jsonpath='{.metadata.finalizers}')
[ -z "$fins" ] || fail "a cluster without the annotation got finalizers: $fins"
uid=$(kubectl get -n $ns mgc $c -o jsonpath='{.metadata.uid}')
labelled=$(kubectl get -n $ns shards,toposervers,cells,tablegroups -l multigres.com/cluster=$c,multigres.com/deletion-policy=Orphan -o name | wc -l)
[ "$labelled" = 4 ] || fail "the 4 child CRs are not labelled deletion-policy=Orphan ($labelled)"
[ -z "$(kubectl get -n $ns shards -l multigres.com/cluster=$plain,multigres.com/deletion-policy -o name)" ] ||
  fail "a child of the plain cluster is labelled deletion-policy"
shard=$(kubectl get -n $ns shards -l multigres.com/cluster=$c -o name)
out=$(kubectl delete -n $ns "$shard" --wait=false 2>&1) && fail "a user deleted a Shard of an Orphan cluster"
[[ $out == *"whose deletion-policy is Orphan"* ]] || fail "Shard deletion refused without the reason: $out"
before=$(data_objects)
pods=$(pod_uids)
sec_uid=$(secret '{.items[0].metadata.uid}')
nsts=$(grep -c '^StatefulSet/' <<<"$before" || true)
npvc=$(grep -c '^PersistentVolumeClaim/' <<<"$before" || true)
npods=$(grep -c = <<<"$pods" || true)
[ "$nsts" = 2 ] || fail "expected 2 StatefulSets (pool, etcd): $before"
[ "$npvc" = 6 ] && [ "$npods" = 5 ] || fail "expected 6 PVCs (2 pool + 3 etcd + the shard's backup) and 5 pods: $before / $pods"
[ -n "$sec_uid" ] || fail "no password Secret"
note "Ready: $nsts StatefulSets, $npvc PVCs, $npods pods, a password Secret; finalizer multigres.com/orphan"

# ---- delete: the data stays, detached and labelled; the rest goes
kubectl delete -n $ns mgc $c --wait=true --timeout=90s >/dev/null || fail "the cluster was not deleted"
gone() { [ -z "$(kubectl get -n $ns deploy,shards,toposervers,cells,tablegroups -l multigres.com/cluster=$c -o name)" ]; }
wait_for 90 "the cluster's Deployments and CRs collected" gone || fail "the garbage collector left: $(kubectl get -n $ns deploy,shards,toposervers,cells,tablegroups -l multigres.com/cluster=$c -o name)"
sleep 3 # the collector had its chance at the StatefulSets too
after=$(data_objects)
while read -r obj u rv owners from; do
  [ -z "$obj" ] && continue
  grep -q "^$obj $u " <<<"$after" || fail "$obj ($u) did not survive: $after"
  line=$(grep "^$obj " <<<"$after")
  [[ $line == *" : $uid" ]] || fail "$obj not detached and labelled orphaned-from=$uid: $line"
done <<<"$before"
[ "$(pod_uids)" = "$pods" ] || fail "pods changed: $(pod_uids) (were $pods)"
phases=$(kubectl get -n $ns pods -l "multigres.com/cluster=$c" -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | sort -u)
[ "$phases" = Running ] || fail "the orphans' pods are not all Running: $phases"
[ "$(secret '{.items[0].metadata.uid}/{.items[0].metadata.ownerReferences}/{.items[0].metadata.labels.multigres\.com/orphaned-from}')" = "$sec_uid//$uid" ] ||
  fail "the password Secret was not kept detached: $(secret '{.items[0].metadata}')"
pol=$(kubectl get -n $ns sts -l multigres.com/cluster=$c -o jsonpath='{range .items[*]}{.spec.persistentVolumeClaimRetentionPolicy.whenDeleted}{"\n"}{end}' | sort -u)
[ "$pol" = Retain ] || fail "orphaned StatefulSets do not retain their PVCs: $pol"
m=$(metrics)
grep -q "^multigres_operator_orphaned_resources{namespace=\"$ns\",cluster=\"$c\"} 9\$" <<<"$m" ||
  fail "multigres_operator_orphaned_resources is not 9 (2 StatefulSets, 6 PVCs, 1 Secret): $(grep orphaned <<<"$m")"
LINT=${MGOP_METRICS_LINT:-${MGOP_CACHE:-$HOME/.cache/multigres-op}/tools/bin/metrics-lint}
[ -x "$LINT" ] || fail "metrics-lint not built ($LINT); run make tools"
# the orphan series pass the checker (seed 003's *_total gauges aside, as in t_metrics)
lint=$("$LINT" <<<"$m" 2>&1 | grep -v -e '^multigres_operator_cluster_cells_total: non-counter' \
  -e '^multigres_operator_cluster_shards_total: non-counter' || true)
[ -z "$lint" ] || fail "the exposition fails the checker: $lint"
ev=$(events)
grep -q "^Orphaned $c deletion-policy Orphan: detached 2 StatefulSets, 6 PersistentVolumeClaims and 1 Secrets" <<<"$ev" ||
  fail "no Orphaned Event: $ev"
note "deleted: 2 StatefulSets, 6 PVCs, 1 Secret orphaned from $uid; the same $npods pods Running; Event and gauge"
orphans=$(data_objects)

untouched() { # the orphans exactly as they were left (resourceVersions too)
  [ "$(data_objects)" = "$orphans" ] || fail "$1: the orphans were touched: $(diff <(echo "$orphans") <(data_objects) || true)"
  [ "$(pod_uids)" = "$pods" ] || fail "$1: pods changed"
  [ "$(secret '{.items[0].metadata.ownerReferences}/{.items[0].metadata.labels.multigres\.com/orphaned-from}')" = "/$uid" ] ||
    fail "$1: the Secret was touched"
}
stalled_with() { # REASON TEXT
  wait_for 60 "Stalled $1" sh -c "kubectl get -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type==\"Stalled\")].reason}' | grep -qx $1" ||
    fail "not Stalled $1: $(status_of)"
  msg=$(kubectl get -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type=="Stalled")].message}')
  [[ $msg == *"$2"* ]] || fail "the Stalled message does not name $2: $msg"
}
delete_again() {
  kubectl delete -n $ns mgc $c --wait=true --timeout=60s >/dev/null || fail "the stalled cluster was not deleted"
}

# ---- another pool layout: Stalled, nothing touched
manifest $c other 1Gi Orphan | kubectl apply -f - >/dev/null || fail "re-create (other pool) refused"
stalled_with OrphansIncompatible "spec.databases[name=postgres].tablegroups[name=default].shards[name=0-inf].pools.main"
sleep 3
untouched "another pool layout"
note "another pool layout: Stalled: ${msg:0:160}..."
delete_again
untouched "deleting the stalled cluster"

# ---- a smaller storage size: refused at admission (the webhook sees the
# orphans' volumes); without the webhook, Stalled; nothing touched either way
out=$(manifest $c main 512Mi Orphan | kubectl apply -f - 2>&1) && fail "the webhook admitted a smaller storage size over the orphans"
[[ $out == *"StorageShrinkRefused: spec.databases[name=postgres].tablegroups[name=default].shards[name=0-inf].pools.main.storage.size"* ]] ||
  fail "the webhook refused without naming the field: $out"
kubectl delete validatingwebhookconfiguration $vwc >/dev/null
manifest $c main 512Mi Orphan | kubectl apply -f - >/dev/null || fail "re-create (512Mi) refused without the webhook"
stalled_with StorageShrinkRefused "pools.main.storage.size"
sleep 3
untouched "a smaller storage size"
note "a smaller storage size: refused by the webhook; without it Stalled StorageShrinkRefused"
delete_again
webhook_config
m=$(metrics)
grep -q '^multigres_operator_reclaims_total{result="refused"} [1-9]' <<<"$m" || fail "refusals not counted: $(grep reclaims <<<"$m")"

# ---- the same spec: adopted, no pod restarted
manifest $c main 1Gi Orphan | kubectl apply -f - >/dev/null || fail "re-create refused"
kubectl wait -n $ns --for=condition=Ready mgc/$c --timeout=180s >/dev/null || fail "the re-created cluster never Ready: $(status_of)"
uid2=$(kubectl get -n $ns mgc $c -o jsonpath='{.metadata.uid}')
adopted() { [ -z "$(kubectl get -n $ns sts,pvc,secret -l multigres.com/cluster=$c,multigres.com/orphaned-from -o name)" ]; }
wait_for 60 "the orphaned-from labels removed" adopted || fail "still labelled: $(kubectl get -n $ns sts,pvc,secret -l multigres.com/orphaned-from -o name)"
now=$(data_objects)
while read -r obj u rv owners from; do
  [ -z "$obj" ] && continue
  grep -q "^$obj $u " <<<"$now" || fail "$obj is not the same object (uid $u): $now"
done <<<"$before"
owners=$(kubectl get -n $ns sts -l multigres.com/cluster=$c -o jsonpath='{range .items[*]}{.metadata.ownerReferences[0].kind}{"\n"}{end}' | sort | tr '\n' ' ')
[ "$owners" = "Shard TopoServer " ] || fail "the StatefulSets are not owned by the new Shard/TopoServer: $owners"
[ "$(pod_uids)" = "$pods" ] || fail "pods were restarted: $(pod_uids) (were $pods)"
revs=$(kubectl get -n $ns sts -l multigres.com/cluster=$c -o jsonpath='{range .items[*]}{.status.currentRevision}={.status.updateRevision}{"\n"}{end}')
while IFS== read -r cur upd; do [ "$cur" = "$upd" ] || fail "a rollout started: $revs"; done <<<"$revs"
so=$(secret '{.items[0].metadata.uid}/{.items[0].metadata.ownerReferences[0].kind}')
[ "$so" = "$sec_uid/Shard" ] || fail "the password Secret was not adopted by the new Shard: $so"
ev=$(events)
grep -q "^Adopted $c adopted " <<<"$ev" || fail "no Adopted Event: $ev"
m=$(metrics)
grep -q '^multigres_operator_reclaims_total{result="adopted"} 1$' <<<"$m" || fail "the reclaim was not counted: $(grep reclaims <<<"$m")"
grep -q "^multigres_operator_orphaned_resources{" <<<"$m" && fail "the orphaned gauge stayed after the adoption: $(grep orphaned_resources <<<"$m")"
note "re-created ($uid2): adopted, the same $npods pods, no rollout, the Secret owned by the new Shard"

# ---- the webhook: the annotation is fixed while a deletion is in progress
kubectl patch -n $ns mgc $c --type=json -p '[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/hold"}]' >/dev/null ||
  fail "cannot add a holding finalizer"
# a foreground deletion (Argo CD's default prune): the collector deletes the
# children at once, unless the webhook holds them until the data is detached
kubectl delete -n $ns mgc $c --cascade=foreground --wait=false >/dev/null
out=$(kubectl annotate -n $ns mgc $c multigres.com/deletion-policy- 2>&1) && fail "the annotation was removed during the deletion"
[[ $out == *"cannot change while the cluster is being deleted"* ]] || fail "refused without the reason: $out"
out=$(kubectl annotate -n $ns --overwrite mgc $c multigres.com/deletion-policy=Delete 2>&1) && fail "the annotation was changed during the deletion"
[[ $out == *"cannot change while the cluster is being deleted"* ]] || fail "refused without the reason: $out"
held() { [ "$(kubectl get -n $ns mgc $c -o jsonpath='{.metadata.finalizers}')" = '["example.com/hold"]' ]; }
wait_for 60 "the operator's finalizer dropped after orphaning" held || fail "finalizers: $(kubectl get -n $ns mgc $c -o jsonpath='{.metadata.finalizers}')"
[ -z "$(kubectl get -n $ns sts -l multigres.com/cluster=$c -o jsonpath='{.items[*].metadata.ownerReferences}')" ] ||
  fail "the StatefulSets were not detached the second time"
kubectl patch -n $ns mgc $c --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null || fail "cannot release the hold"
wait_for 90 "the cluster's Deployments and CRs collected (foreground)" gone || fail "the garbage collector left: $(kubectl get -n $ns deploy,shards,toposervers,cells,tablegroups -l multigres.com/cluster=$c -o name)"
sleep 3
[ "$(pod_uids)" = "$pods" ] || fail "pods changed in the foreground deletion: $(pod_uids) (were $pods)"
[ "$(kubectl get -n $ns sts -l multigres.com/cluster=$c,multigres.com/orphaned-from=$uid2 -o name | wc -l)" = 2 ] ||
  fail "the StatefulSets are not labelled orphaned-from=$uid2 after the foreground deletion"
note "webhook: removing or changing the annotation refused while deleting; a foreground deletion orphaned them again, same pods"

# ---- without the annotation: normal cascading deletion
plain_sts=$(kubectl get -n $ns sts -l multigres.com/cluster=$plain -o name | wc -l)
[ "$plain_sts" = 2 ] || fail "the plain cluster has $plain_sts StatefulSets"
kubectl delete -n $ns mgc $plain --wait=true --timeout=60s >/dev/null || fail "the plain cluster was not deleted"
plain_gone() { [ -z "$(kubectl get -n $ns sts,deploy -l multigres.com/cluster=$plain -o name)" ]; }
wait_for 90 "the plain cluster's workloads collected" plain_gone || fail "left behind: $(kubectl get -n $ns sts,deploy -l multigres.com/cluster=$plain -o name)"
[ -z "$(kubectl get -n $ns sts,pvc -l multigres.com/cluster=$plain,multigres.com/orphaned-from -o name)" ] ||
  fail "objects of the plain cluster were orphaned"
note "no annotation: StatefulSets and Deployments deleted by the garbage collector (PVCs per pvcDeletionPolicy)"
operator_alive orphan || fail "operator exited"
