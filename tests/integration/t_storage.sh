#!/usr/bin/env bash
# Storage a live cluster cannot take as-is. Growing a pool's storage.size
# keeps the StatefulSet's (immutable) volumeClaimTemplates and expands its
# bound PVCs in place when the StorageClass allows it; when it does not, the
# cluster says so in Stalled (field, PVC, class) and an Event. Shrinking,
# and changing the etcd member count, is refused at admission (CEL), with a
# message.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-storage c=st1 sc=it-storage-expand
new_namespace $ns
start_operator storage --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
cleanup() {
  stop_operator storage
  kubectl delete storageclass $sc --ignore-not-found >/dev/null 2>&1 || true
}
trap cleanup EXIT

# a class of its own that allows expansion (later: that does not), provisioned
# like the control plane's default one (kube-controller-manager's host-path provisioner)
kubectl apply -f - >/dev/null <<YAML || fail "StorageClass rejected"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: $sc}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
allowVolumeExpansion: true
YAML
manifest() { # SIZE ETCD_REPLICAS
  cat <<YAML
apiVersion: multigres.com/v1alpha1
kind: MultigresCluster
metadata: {name: $c, namespace: $ns}
spec:
  globalTopoServer: {etcd: {replicas: $2}}
  cells: [{name: zone-a, zone: us-east-1a}]
$(databases_yaml)
      - name: 0-inf
        spec: {pools: {main: {type: readWrite, replicasPerCell: 2, storage: {size: $1, class: $sc}}}}
YAML
}
manifest 1Gi 3 | kubectl apply -f - >/dev/null || fail "the cluster was rejected"
kubectl wait -n $ns --for=condition=Ready mgc/$c --timeout=180s >/dev/null || fail "never Ready"
sts=$(kubectl get -n $ns sts -l multigres.com/cluster=$c,app.kubernetes.io/component=shard-pool -o name)
[ -n "$sts" ] || fail "no pool StatefulSet"
sts=${sts#*/}

# the pool's PVCs (the etcd's are in the namespace too): "phase size" per line
pool_pvcs() {
  kubectl get -n $ns pvc -o jsonpath='{range .items[*]}{.metadata.name} {.status.phase} {.spec.resources.requests.storage}{"\n"}{end}' |
    awk -v p="pgdata-$sts-" 'index($1, p) == 1 {print $2, $3}'
}
has_pvcs() { [ "$(pool_pvcs | grep -c "^$1\$")" = 2 ]; } # "PHASE SIZE" on both
wait_for 90 "the pool's 2 PVCs bound" has_pvcs "Bound 1Gi" || fail "the PVCs never bound: $(pool_pvcs | tr '\n' ';')"

# ---- grow: PVCs patched, the StatefulSet's template untouched, no stall
sts_gen=$(kubectl get -n $ns sts $sts -o jsonpath='{.metadata.generation}')
manifest 2Gi 3 | kubectl apply -f - >/dev/null || fail "growing storage was rejected"
wait_for 60 "PVCs at 2Gi" has_pvcs "Bound 2Gi" || fail "the PVCs were not expanded to 2Gi: $(pool_pvcs | tr '\n' ';')"
v=$(kubectl get -n $ns sts $sts -o jsonpath='{.spec.volumeClaimTemplates[0].spec.resources.requests.storage}/{.metadata.generation}')
[ "$v" = "1Gi/$sts_gen" ] || fail "the StatefulSet changed (volumeClaimTemplates/generation: $v, was 1Gi/$sts_gen)"
stalled=$(kubectl get -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type=="Stalled")].status}/{.status.conditions[?(@.type=="Stalled")].reason}')
[ "${stalled%%/*}" = False ] || fail "the cluster stalled after growing its storage: $stalled"
log=$(cat "$IT_LOGS/storage.log")
[[ $log != *ApplyRejected* ]] || fail "an apply was rejected while growing storage"
[[ $log == *"storage 1Gi -> 2Gi"* ]] || fail "the operator did not log the expansion"
ev=$(kubectl get -n $ns events.events.k8s.io -o jsonpath='{range .items[*]}{.reason}{"\n"}{end}')
grep -qx VolumesExpanded <<<"$ev" || fail "no VolumesExpanded Event"
note "grow: PVCs of $sts expanded to 2Gi in place; the StatefulSet kept 1Gi"

# ---- shrink and an etcd resize: refused at admission, with a message
out=$(manifest 1Gi 3 | kubectl apply -f - 2>&1) && fail "shrinking storage was accepted"
[[ $out == *"storage.size cannot shrink"* ]] || fail "shrink refused without the message: $out"
out=$(manifest 2Gi 5 | kubectl apply -f - 2>&1) && fail "changing the etcd replicas was accepted"
[[ $out == *"etcd replicas are fixed"* ]] || fail "etcd resize refused without the message: $out"
note "shrink and etcd resize refused: ${out##*: }"

# ---- a class that cannot expand: the cluster says so (Stalled, Event), nothing is patched
kubectl patch storageclass $sc --type=merge -p '{"allowVolumeExpansion":false}' >/dev/null || fail "cannot patch the StorageClass"
manifest 3Gi 3 | kubectl apply -f - >/dev/null || fail "growing storage was rejected"
wait_for 60 "Stalled VolumeExpansionUnsupported" sh -c \
  "kubectl get -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type==\"Stalled\")].reason}' | grep -qx VolumeExpansionUnsupported" ||
  fail "the cluster does not report that the volumes cannot grow"
msg=$(kubectl get -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type=="Stalled")].message}')
[[ $msg == *"pools.main.storage.size"*"StorageClass $sc does not set allowVolumeExpansion: true"* ]] ||
  fail "the message does not name the field and the class: $msg"
ev=$(kubectl get -n $ns events.events.k8s.io -o jsonpath='{range .items[*]}{.reason}{"\n"}{end}')
grep -qx VolumeExpansionUnsupported <<<"$ev" || fail "no VolumeExpansionUnsupported Event"
has_pvcs "Bound 2Gi" || fail "PVCs changed although the class cannot expand: $(pool_pvcs | tr '\n' ';')"
note "no expansion: $msg"
operator_alive storage || fail "operator exited"
