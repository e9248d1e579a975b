#!/usr/bin/env bash
# Topology registration against real etcds this test runs itself, as the
# external global topology servers of two clusters (the control plane's etcd
# pods are simulated, and the operator runs outside the cluster):
#   - plain: its first endpoint is dead (each endpoint is tried in turn);
#     records under the cluster's rootPath, decoded by a protobuf reader of
#     the test's own (topo_etcd.py): key paths, fields, field numbers;
#   - a field Multigres owns (BackupLocation.authoritative_generation, 4)
#     survives a spec change of the backup path, and the cluster is Ready
#     again: the changed pool pods are rolled, with no pooler registered the
#     likely primary (ordinal 0) last, replaced although multiadmin cannot
#     switch it (Events PrimaryUnknown, SwitchPrimaryFailed);
#   - a cell added to the spec gets its record and joins Database.cells;
#   - pruning deletes the records status.topology lists that the spec no
#     longer has, and only those (a foreign record stays);
#   - TLS with a client certificate (caSecret, clientCertSecret);
#   - the plain etcd stopped for 30 s: TopologyRegistered False naming the
#     endpoint, Reconciling (not Stalled), not Ready; the TLS cluster keeps
#     converging meanwhile; then recovery writes what changed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-topology a=tp-plain b=tp-tls
T="$ROOT/tests/integration/topo_etcd.py"
etcd_bins=("${MGOP_CACHE:-$HOME/.cache/multigres-op}"/controlplane/*/bin/etcd) # no pipe into head under pipefail
etcd_bin=${etcd_bins[0]}
[ -x "$etcd_bin" ] || fail "no etcd binary in ${MGOP_CACHE:-$HOME/.cache/multigres-op}/controlplane"
dir=$IT_LOGS/topology
rm -rf "$dir"; mkdir -p "$dir"
read -r p1 p1peer p2 p2peer dead < <(free_ports 5)

# start_etcd NAME CLIENT_PORT PEER_PORT SCHEME [TLS flags...]
start_etcd() {
  local name=$1 cport=$2 pport=$3 scheme=$4; shift 4
  "$etcd_bin" --name "$name" --data-dir "$dir/$name.data" \
    --listen-client-urls "$scheme://127.0.0.1:$cport" --advertise-client-urls "$scheme://127.0.0.1:$cport" \
    --listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
    --initial-cluster "$name=http://127.0.0.1:$pport" "$@" >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}
stop_etcd() { local pid; pid=$(cat "$dir/$1.pid" 2>/dev/null) || return 0; kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$dir/$1.pid"; }
cleanup() { stop_operator topology; stop_etcd plain; stop_etcd tls; }
trap cleanup EXIT

# ---- certificates: a CA, the server's (IP 127.0.0.1), a client's
openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key" 2>/dev/null
openssl req -x509 -new -key "$dir/ca.key" -subj /CN=it-topology-ca -days 2 -out "$dir/ca.crt" 2>/dev/null
for who in server client; do
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/$who.key.ec" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$dir/$who.key.ec" -out "$dir/$who.key"
  openssl req -new -key "$dir/$who.key" -subj "/CN=it-topology-$who" -out "$dir/$who.csr" 2>/dev/null
  if [ $who = server ]; then ext="subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth,clientAuth"; else ext="extendedKeyUsage=clientAuth"; fi
  openssl x509 -req -in "$dir/$who.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
    -extfile <(echo "$ext") -out "$dir/$who.crt" 2>/dev/null
done

start_etcd plain "$p1" "$p1peer" http
start_etcd tls "$p2" "$p2peer" https --client-cert-auth --trusted-ca-file "$dir/ca.crt" \
  --cert-file "$dir/server.crt" --key-file "$dir/server.key"
U1=http://127.0.0.1:$p1 U2=https://127.0.0.1:$p2
export TOPO_CA=$dir/ca.crt TOPO_CERT=$dir/client.crt TOPO_KEY=$dir/client.key
wait_for 30 "plain etcd answers" python3 "$T" "$U1" keys /x || fail "plain etcd did not start: $(tail -5 "$dir/plain.log")"
wait_for 30 "TLS etcd answers" python3 "$T" "$U2" keys /x || fail "TLS etcd did not start: $(tail -5 "$dir/tls.log")"
out=$(curl -s --max-time 5 --cacert "$dir/ca.crt" -XPOST "$U2/v3/kv/range" -d '{"key":"AA=="}' 2>&1 || true)
[[ $out != *'"header"'* ]] || fail "the TLS etcd answers without a client certificate: $out"

new_namespace $ns
kubectl -n $ns create secret generic etcd-ca --from-file=ca.crt="$dir/ca.crt" >/dev/null
kubectl -n $ns create secret tls etcd-client --cert="$dir/client.crt" --key="$dir/client.key" >/dev/null
start_operator topology --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns --topology-registration=true
kubectl apply -n $ns -f "$ROOT/config/samples/default-templates/" >/dev/null

# cluster NAME ENDPOINTS ROOT CELLS BACKUP_PATH [TLS]
cluster() {
  local tls=""
  [ -n "${6:-}" ] && tls="      caSecret: etcd-ca
      clientCertSecret: etcd-client"
  cat <<YAML
apiVersion: multigres.com/v1alpha1
kind: MultigresCluster
metadata: {name: $1, namespace: $ns}
spec:
  globalTopoServer:
    external:
      endpoints: [$2]
      rootPath: $3
$tls
  backup: {type: filesystem, filesystem: {path: $5}}
  cells:
$(for c in $4; do echo "  - {name: $c, zone: us-east-1a}"; done)
YAML
}
cond() { jget -n $ns "$1" "$2" -o jsonpath="{.status.conditions[?(@.type==\"$3\")].$4}"; }
# one read of both: two reads can tear (Ready from before a status write, the
# generation from after it)
ready_gen() { [ "$(jget -n $ns mgc "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}/{.status.observedGeneration}')" = "True/$2" ]; }
# an edit that moves the backup path changes the pool pods' mounts: Ready at
# the new generation also means the operator rolled every pool pod (no pooler
# registers here, so by the likely-primary rule, ordinal 0 last)
rec() { python3 "$T" "$1" get "$2"; }
field() { python3 -c 'import json,sys; d=json.loads(sys.argv[1])
for k in sys.argv[2].split("."): d=d[k]
print(json.dumps(d))' "$1" "$2"; }

# ---- 1. plain: records written under the rootPath, read back by the test
cluster $a "http://127.0.0.1:$dead, $U1" /it/plain "zone-a zone-b" /backups | kubectl apply -f - >/dev/null
wait_for 180 "$a Ready" ready_gen $a 1 || fail "$a never Ready: $(jget -n $ns mgc $a -o jsonpath='{.status.conditions}')"
[ "$(cond mgc $a TopologyRegistered status)" = True ] || fail "TopologyRegistered is not True on $a"
keys=$(python3 "$T" "$U1" keys /it/plain/)
[ "$keys" = "/it/plain/cells/zone-a/Cell
/it/plain/cells/zone-b/Cell
/it/plain/databases/postgres/Database" ] || fail "keys under /it/plain/: $keys"
c=$(rec "$U1" /it/plain/cells/zone-a/Cell)
[ "$c" = "{\"name\": \"zone-a\", \"other\": [], \"root\": \"/it/plain\", \"server_addresses\": [\"127.0.0.1:$dead\", \"127.0.0.1:$p1\"]}" ] ||
  fail "Cell zone-a: $c"
d=$(rec "$U1" /it/plain/databases/postgres/Database)
[ "$d" = '{"backup": {"authoritative_generation": null, "filesystem_path": "/backups", "require_initial_repo_encryption": 0, "s3_bucket": null}, "cells": ["zone-a", "zone-b"], "name": "postgres", "other": [], "policy": {"name": "AT_LEAST_2", "quorum_type": 3, "required_count": 2}}' ] ||
  fail "Database: $d"
for cell in zone-a zone-b; do
  cr=$(jget -n $ns cells -l multigres.com/cluster=$a,multigres.com/cell=$cell -o name)
  if [ -z "$cr" ]; then all=$(jget -n $ns cells -o name || true); cr=$(grep -m1 -e "$a-$cell" <<<"$all" || true); fi
  [ "$(jget -n $ns "$cr" -o jsonpath='{.status.conditions[?(@.type=="TopologyRegistered")].status}')" = True ] ||
    fail "$cr: TopologyRegistered is not True: $(jget -n $ns "$cr" -o jsonpath='{.status.conditions}')"
done
[ "$(jget -n $ns mgc $a -o jsonpath='{.status.topology.registeredCells}')" = '["zone-a","zone-b"]' ] ||
  fail "status.topology: $(jget -n $ns mgc $a -o jsonpath='{.status.topology}')"
note "plain: Cell and Database records under /it/plain read back with the expected fields (first endpoint dead)"

# ---- 2. a field Multigres owns survives an update; a new cell joins
python3 "$T" "$U1" add-backup-field /it/plain/databases/postgres/Database 4 7
cluster $a "http://127.0.0.1:$dead, $U1" /it/plain "zone-a zone-b zone-c" /b2 | kubectl apply -f - >/dev/null
wait_for 240 "$a Ready at generation 2" ready_gen $a 2 || fail "$a not Ready after the edit: $(cond mgc $a TopologyRegistered message); $(jget -n $ns mgc $a -o jsonpath='{.status.message}')"
d=$(rec "$U1" /it/plain/databases/postgres/Database)
[ "$(field "$d" backup.filesystem_path)" = '"/b2"' ] || fail "backup path not updated: $d"
[ "$(field "$d" backup.authoritative_generation)" = 7 ] || fail "authoritative_generation lost: $d"
[ "$(field "$d" cells)" = '["zone-a", "zone-b", "zone-c"]' ] || fail "cells not updated: $d"
[ "$(field "$(rec "$U1" /it/plain/cells/zone-c/Cell)" name)" = '"zone-c"' ] || fail "no Cell record for zone-c"
shard=$(jget -n $ns shard -l multigres.com/cluster=$a -o jsonpath='{.items[0].metadata.name}')
evs=$(jget -n $ns events.events.k8s.io --field-selector regarding.name="$shard" -o jsonpath='{range .items[*]}{.type} {.reason}: {.note}{"\n"}{end}')
grep -q "^Normal PrimaryUnknown: roles unknown (no pool pod of the shard is registered PRIMARY in the topology): pod .*-0, ordinal 0" <<<"$evs" ||
  fail "no PrimaryUnknown Event (no pooler registers here): $evs"
last=$(grep "^Normal RollingUpdate: replacing pod" <<<"$evs" | tail -1)
[[ $last == *"-0 (the primary, last; "* ]] || fail "the likely primary (ordinal 0) was not replaced last: $last"
grep -q "^Warning SwitchPrimaryFailed: switch-primary for postgres/default/0-inf failed (multiadmin did not answer" <<<"$evs" ||
  fail "no SwitchPrimaryFailed Warning (multiadmin runs nowhere here): $evs"
note "update: backup path and cells changed, authoritative_generation (field 4) kept; pool pods rolled, ordinal 0 last"

# ---- 3. pruning: what status.topology lists and the spec dropped, only that
# (cells are append-only in the CRD: a cell dropped by an older operator
# version, or by a recreated cluster, is simulated in the status)
python3 "$T" "$U1" put-hex /it/plain/cells/zone-old/Cell "0a087a6f6e652d6f6c64"
python3 "$T" "$U1" put-hex /it/plain/cells/foreign/Cell "0a07666f726569676e"
kubectl -n $ns patch mgc $a --subresource=status --type=merge \
  -p '{"status":{"topology":{"registeredCells":["zone-a","zone-b","zone-c","zone-old"]}}}' >/dev/null
cluster $a "http://127.0.0.1:$dead, $U1" /it/plain "zone-a zone-b zone-c" /b3 | kubectl apply -f - >/dev/null
wait_for 60 "zone-old pruned" sh -c "[ \"\$(python3 '$T' '$U1' get /it/plain/cells/zone-old/Cell)\" = absent ]" ||
  fail "the record of the dropped cell stayed"
[ "$(rec "$U1" /it/plain/cells/foreign/Cell)" != absent ] || fail "a record the cluster never listed was pruned"
[ "$(rec "$U1" /it/plain/cells/zone-a/Cell)" != absent ] || fail "a cell of the spec lost its record"
wait_for 30 "registeredCells without zone-old" sh -c "[ \"\$(kubectl get -n $ns mgc $a -o jsonpath='{.status.topology.registeredCells}')\" = '[\"zone-a\",\"zone-b\",\"zone-c\"]' ]" ||
  fail "status.topology: $(jget -n $ns mgc $a -o jsonpath='{.status.topology}')"
evs=$(jget -n $ns events.events.k8s.io --field-selector regarding.name=$a -o jsonpath='{range .items[*]}{.reason}: {.note}{"\n"}{end}')
grep -q "^TopologyPruned: cell zone-old .*/it/plain/cells/zone-old/Cell" <<<"$evs" || fail "no TopologyPruned Event: $evs"
note "pruning: the listed, dropped cell's record went; a foreign one stayed"

# ---- 4. TLS with a client certificate
cluster $b "$U2" /it/tls "zone-a" /backups tls | kubectl apply -f - >/dev/null
wait_for 180 "$b Ready" ready_gen $b 1 || fail "$b never Ready: $(cond mgc $b TopologyRegistered message)"
[ "$(field "$(rec "$U2" /it/tls/databases/postgres/Database)" cells)" = '["zone-a"]' ] || fail "TLS Database record"
[ "$(field "$(rec "$U2" /it/tls/cells/zone-a/Cell)" server_addresses)" = "[\"127.0.0.1:$p2\"]" ] || fail "TLS Cell record"
note "TLS: records written with the client certificate from clientCertSecret, verified with caSecret"

# ---- 5. the plain etcd down for 30 s
stop_etcd plain
down_at=$(date +%s)
cluster $a "http://127.0.0.1:$dead, $U1" /it/plain "zone-a zone-b zone-c" /b4 | kubectl apply -f - >/dev/null
wait_for 30 "TopologyRegistered False on $a" sh -c "[ \"\$(kubectl get -n $ns mgc $a -o jsonpath='{.status.conditions[?(@.type==\"TopologyRegistered\")].status}')\" = False ]" ||
  fail "TopologyRegistered did not turn False"
msg=$(cond mgc $a TopologyRegistered message)
[ "$(cond mgc $a TopologyRegistered reason)" = TopologyUnreachable ] || fail "reason: $(cond mgc $a TopologyRegistered reason)"
[[ $msg == *"127.0.0.1:$p1"* ]] || fail "the message does not name the endpoint: $msg"
[ "$(cond mgc $a Ready status)/$(cond mgc $a Reconciling status)/$(cond mgc $a Stalled status)" = False/True/False ] ||
  fail "Ready/Reconciling/Stalled: $(jget -n $ns mgc $a -o jsonpath='{.status.conditions}')"
# the other cluster is not held up: an edit converges while $a backs off
t0=$(date +%s)
cluster $b "$U2" /it/tls "zone-a" /tls2 tls | kubectl apply -f - >/dev/null
wait_for 120 "$b Ready at generation 2" ready_gen $b 2 || fail "$b held up by $a's unreachable topology: $(jget -n $ns mgc $b -o jsonpath='{.status.message}')"
[ "$(field "$(rec "$U2" /it/tls/databases/postgres/Database)" backup.filesystem_path)" = '"/tls2"' ] || fail "TLS record not updated"
note "while $a's topology is down: $b converged an edit in $(( $(date +%s) - t0 ))s; $a says: $msg"
sleep $(( 30 - ($(date +%s) - down_at) > 0 ? 30 - ($(date +%s) - down_at) : 0 ))
[ "$(cond mgc $a Ready status)" = False ] || fail "$a Ready while its topology is down"
start_etcd plain "$p1" "$p1peer" http
wait_for 240 "$a Ready again" ready_gen $a 4 || fail "$a did not recover: $(cond mgc $a TopologyRegistered message); $(jget -n $ns mgc $a -o jsonpath='{.status.message}')"
[ "$(field "$(rec "$U1" /it/plain/databases/postgres/Database)" backup.filesystem_path)" = '"/b4"' ] || fail "the change made during the outage was not written"
[ "$(cond mgc $a TopologyRegistered status)" = True ] || fail "TopologyRegistered not True after recovery"
note "recovery: $a registered again with the record the outage held back"
operator_alive topology || fail "operator exited"
