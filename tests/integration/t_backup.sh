#!/usr/bin/env bash
# Backups on the real control plane: the samples' backup sections become the
# pool pods' volumes, env and args, the shard's backup PVC and its pgBackRest
# certificate Secrets; the certificate rotates (short --pgbackrest-cert-validity);
# CEL refuses changing the encryption Secret once set. (The admission
# warning about a ReadWriteOnce volume across cells is unit-tested:
# backup_rwo_warning.)
#   - filesystem (config/samples/backup-filesystem.yaml): one PVC per shard,
#     mounted by the pool StatefulSets of both cells, owned by the Shard
#     (pvcDeletionPolicy.whenDeleted: Delete); the cipher key to multipooler
#   - the built-in default: a Retain PVC has no owner (nothing deletes it)
#   - s3 (config/samples/backup-s3.yaml): no volume; AWS_REGION and the
#     credentials Secret as env; IRSA's ServiceAccount; the user's TLS Secret
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-backup
new_namespace $ns
start_operator backup --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns --pgbackrest-cert-validity 45s
trap 'stop_operator backup' EXIT

sample() { sed -e "s/^  name: \(.*\)$/  name: \1\n  namespace: $ns/" "$ROOT/config/samples/$1"; }
sample backup-filesystem.yaml | kubectl apply -f - >/dev/null || fail "the filesystem sample was rejected"
sample backup-s3.yaml | kubectl apply -f - >/dev/null || fail "the s3 sample was rejected"

sts_of() { # CLUSTER TABLEGROUP: the pool StatefulSets' names
  kubectl get -n $ns sts -l "multigres.com/cluster=$1,multigres.com/tablegroup=$2,app.kubernetes.io/component=shard-pool" \
    -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'
}
have_sts() { [ "$(sts_of "$1" "$2" | grep -c .)" = "$3" ]; }
wait_for 90 "the filesystem sample's 4 pool StatefulSets" have_sts backup-fs orders 2 || fail "no orders pools"
wait_for 30 "the default table group's pools" have_sts backup-fs default 2 || fail "no default pools"
wait_for 60 "the s3 sample's pools" have_sts backup-s3 analytics 1 || fail "no analytics pool"

# ---- filesystem: one PVC per shard, in both cells' pods
pvc=backup-data-backup-fs-postgres-orders-0-inf-9967e8ea
shard=$(kubectl get -n $ns shard -l multigres.com/cluster=backup-fs,multigres.com/tablegroup=orders -o jsonpath='{.items[0].metadata.name}')
for s in $(sts_of backup-fs orders); do
  claim=$(jget -n $ns sts "$s" -o jsonpath='{.spec.template.spec.volumes[?(@.name=="backup-data")].persistentVolumeClaim.claimName}')
  [ "$claim" = $pvc ] || fail "$s mounts backup claim '$claim', not $pvc"
  mnt=$(jget -n $ns sts "$s" -o jsonpath='{.spec.template.spec.containers[?(@.name=="multipooler")].volumeMounts[?(@.name=="backup-data")].mountPath}')
  [ "$mnt" = /var/backups ] || fail "$s mounts the backups at '$mnt', not /var/backups"
  args=$(jget -n $ns sts "$s" -o jsonpath='{.spec.template.spec.containers[?(@.name=="multipooler")].args}')
  [[ $args == *'--pgbackrest-cipher-key-file=/secrets/pgbackrest-cipher/keys.json'* ]] || fail "$s: no cipher key flag: $args"
  [[ $args == *'--pgbackrest-cert-file=/certs/pgbackrest/pgbackrest.crt'* ]] || fail "$s: no pgBackRest certificate flag"
  args=$(jget -n $ns sts "$s" -o jsonpath='{.spec.template.spec.initContainers[?(@.name=="postgres")].args}')
  [[ $args == *'--pgbackrest-cert-dir=/certs/pgbackrest'* && $args == *'--pgbackrest-port=8432'* ]] ||
    fail "$s: pgctld lacks the pgBackRest TLS server flags: $args"
  items=$(jget -n $ns sts "$s" -o jsonpath='{.spec.template.spec.volumes[?(@.name=="pgbackrest-certs")].projected.sources[0].secret}')
  [[ $items == *"\"name\":\"$shard-pgbackrest-tls\""* && $items == *'"path":"pgbackrest.crt"'* && $items == *'"path":"pgbackrest.key"'* ]] ||
    fail "$s: the certificate is not projected as pgbackrest.crt/.key from $shard-pgbackrest-tls: $items"
done
wait_for 30 "PVC $pvc" jget -n $ns pvc $pvc || fail "no backup PVC $pvc"
v=$(jget -n $ns pvc $pvc -o jsonpath='{.spec.resources.requests.storage}/{.spec.accessModes[0]}/{.spec.storageClassName}/{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')
[ "$v" = "50Gi/ReadWriteMany/nfs-client/Shard/$shard" ] || fail "PVC $pvc: size/mode/class/owner $v"
note "filesystem: $pvc (50Gi RWX, owned by Shard $shard: whenDeleted Delete) mounted by both cells' pools"

# ---- the operator's certificate: CA and peer certificate, verifiable
tls=$shard-pgbackrest-tls
wait_for 30 "Secret $tls" jget -n $ns secret $tls || fail "no Secret $tls"
get_pem() { kubectl get -n $ns secret "$1" -o jsonpath="{.data.${2//./\\.}}" | base64 -d; }
d=$(mktemp -d)
get_pem $tls ca.crt >"$d/ca.crt"; get_pem $tls tls.crt >"$d/tls.crt"; get_pem $tls tls.key >"$d/tls.key"
openssl verify -CAfile "$d/ca.crt" -purpose sslserver "$d/tls.crt" >/dev/null 2>&1 || fail "the certificate does not verify as a server"
openssl verify -CAfile "$d/ca.crt" -purpose sslclient "$d/tls.crt" >/dev/null 2>&1 || fail "the certificate does not verify as a client"
subj=$(openssl x509 -in "$d/tls.crt" -noout -subject)
[[ $subj == *"CN = pgbackrest"* || $subj == *"CN=pgbackrest"* ]] || fail "unexpected subject: $subj"
[ "$(openssl pkey -in "$d/tls.key" -pubout 2>/dev/null)" = "$(openssl x509 -in "$d/tls.crt" -noout -pubkey)" ] || fail "tls.key does not match tls.crt"
t=$(kubectl get -n $ns secret $tls -o jsonpath='{.type}/{.metadata.ownerReferences[0].kind}')
[ "$t" = kubernetes.io/tls/Shard ] || fail "Secret $tls: type/owner $t"
ca_key=$(kubectl get -n $ns secret $shard-pgbackrest-ca -o jsonpath='{.data.ca\.key}')
[ -n "$ca_key" ] || fail "no CA key in $shard-pgbackrest-ca"
serial0=$(openssl x509 -in "$d/tls.crt" -noout -serial)
ca0=$(openssl x509 -in "$d/ca.crt" -noout -serial)

# ---- built-in default and Retain: the s3 sample is s3; the minimal sample is the default
apply_cluster $ns bk-default || fail "the minimal sample was rejected"
rendered=$("$OP_BIN" render -n $ns -f <(sed -e 's/^  name: minimal$/  name: bk-default/' "$ROOT/config/samples/minimal.yaml") 2>&1)
dpvc=$(grep -o '"claimName":"backup-data-[^"]*"' <<<"$rendered" | sort -u | cut -d'"' -f4)
[ -n "$dpvc" ] || fail "render shows no backup claim for the minimal sample"
wait_for 60 "PVC $dpvc" jget -n $ns pvc "$dpvc" || fail "no default backup PVC $dpvc"
v=$(jget -n $ns pvc "$dpvc" -o jsonpath='{.spec.resources.requests.storage}/{.spec.accessModes[0]}/{.metadata.ownerReferences}')
[ "$v" = "10Gi/ReadWriteOnce/" ] || fail "default PVC $dpvc: size/mode/owners $v (want 10Gi, RWO, no owner: Retain)"
note "built-in default: $dpvc 10Gi RWO, unowned (Retain)"

# ---- s3: env and credentials, IRSA, no backup volume, the user's TLS Secret
s=$(sts_of backup-s3 default)
env=$(jget -n $ns sts "$s" -o jsonpath='{.spec.template.spec.containers[?(@.name=="multipooler")].env}')
[[ $env == *'{"name":"AWS_REGION","value":"us-east-1"}'* ]] || fail "$s: no AWS_REGION: $env"
[[ $env == *'"secretKeyRef":{"key":"AWS_ACCESS_KEY_ID","name":"backup-s3-credentials"}'* ]] || fail "$s: no credentials env: $env"
vols=$(jget -n $ns sts "$s" -o jsonpath='{.spec.template.spec.volumes[*].name}')
[[ " $vols " != *" backup-data "* ]] || fail "$s: an S3 shard mounts a backup volume"
src=$(jget -n $ns sts "$s" -o jsonpath='{.spec.template.spec.volumes[?(@.name=="pgbackrest-certs")].projected.sources[0].secret.name}')
[ "$src" = backup-s3-pgbackrest ] || fail "$s: TLS from '$src', not the user's backup-s3-pgbackrest"
own=$(jget -n $ns secret -l multigres.com/cluster=backup-s3,app.kubernetes.io/component=pgbackrest-tls -o name)
[ -z "$own" ] || fail "the operator issued certificates for a cluster that names its own Secret: $own"
s=$(sts_of backup-s3 analytics)
v=$(jget -n $ns sts "$s" -o jsonpath='{.spec.template.spec.serviceAccountName}')
[ "$v" = analytics-backup-irsa ] || fail "$s: serviceAccountName '$v'"
env=$(jget -n $ns sts "$s" -o jsonpath='{.spec.template.spec.containers[?(@.name=="multipooler")].env}')
[[ $env != *AWS_ACCESS_KEY_ID* ]] || fail "$s: IRSA pods still get key env"
note "s3: AWS_REGION + credentials Secret env; IRSA ServiceAccount on analytics; user's TLS Secret mounted"

# ---- admission (CEL): the encryption Secret cannot change once set
out=$(sample backup-filesystem.yaml | sed -e 's/secretName: backup-fs-cipher/secretName: other-cipher/' | kubectl apply -f - 2>&1) &&
  fail "changing backup.encryption.secretName was accepted"
[[ $out == *"backup.encryption cannot be added, removed or changed"* ]] || fail "refused without the message: $out"
note "encryption: a changed secretName is refused"

# ---- rotation: 45 s certificates are renewed with 15 s left; the CA stays
rotated() {
  local s
  s=$(kubectl get -n $ns secret $tls -o jsonpath='{.data.tls\.crt}' | base64 -d | openssl x509 -noout -serial)
  [ -n "$s" ] && [ "$s" != "$serial0" ]
}
wait_for 60 "the pgBackRest certificate rotates" rotated || fail "the certificate never rotated"
get_pem $tls ca.crt >"$d/ca.crt"; get_pem $tls tls.crt >"$d/tls.crt"
openssl verify -CAfile "$d/ca.crt" "$d/tls.crt" >/dev/null 2>&1 || fail "the rotated certificate does not verify"
[ "$(openssl x509 -in "$d/ca.crt" -noout -serial)" = "$ca0" ] || fail "the CA changed with the certificate"
grep -qF "pgBackRest certificate of Shard $ns/$shard issued (due for renewal)" "$IT_LOGS/backup.log" ||
  fail "the operator did not log the renewal"
note "rotation: $serial0 -> $(openssl x509 -in "$d/tls.crt" -noout -serial), same CA"
rm -rf "$d"

note "ok"
