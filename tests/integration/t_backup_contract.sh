#!/usr/bin/env bash
# CONTRACT TEST: the operator against a double of multiadmin's REST API
# (tests/integration/multiadmin_contract.py, shapes from Multigres
# proto/multiadminservice.proto), not the real multiadmin. The Shard's
# BackupHealthy condition follows what GetBackups answers: no backup
# (False/NoBackup), a failed one (False/BackupFailed), one completed 2 h ago
# (True/BackupCompleted, multigres_operator_last_backup_age_seconds ~7200),
# no serving replica (Unknown/NoReplica), and multiadmin unreachable
# (Unknown/MultiadminUnreachable). The requests carry the shard's database,
# table group and shard.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-backup-contract c=bkc
port=${MGOP_IT_MA_PORT:-19481}
state=$IT_LOGS/ma-contract.state reqs=$IT_LOGS/ma-contract.requests
echo none >"$state"; : >"$reqs"
python3 "$(dirname "$0")/multiadmin_contract.py" "$port" "$state" "$reqs" 2>"$IT_LOGS/ma-contract.log" &
ma_pid=$!
new_namespace $ns
start_operator bkc --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns --multiadmin-address "127.0.0.1:$port" \
  --backup-check-interval 2s --metrics-bind-address 127.0.0.1:0
cleanup() { stop_operator bkc; kill "$ma_pid" 2>/dev/null || true; wait "$ma_pid" 2>/dev/null || true; }
trap cleanup EXIT
wait_log bkc '"msg":"serving /metrics on 127.0.0.1:0 (port ' || fail "no metrics server"
mport=$(grep -o 'serving /metrics on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/bkc.log" | grep -o '[0-9]*$')

cluster_manifest $ns $c | kubectl apply -f - >/dev/null
shard=
find_shard() { shard=$(kubectl get -n $ns shard -l multigres.com/cluster=$c -o jsonpath='{.items[0].metadata.name}' 2>/dev/null); [ -n "$shard" ]; }
wait_for 60 "the Shard" find_shard || fail "no Shard"
cond() { kubectl get -n $ns shard "$shard" -o jsonpath='{.status.conditions[?(@.type=="BackupHealthy")].status}/{.status.conditions[?(@.type=="BackupHealthy")].reason}' 2>/dev/null; }
is() { [ "$(cond)" = "$1" ]; }
expect() { # STATE WANT
  echo "$1" >"$state"
  wait_for 40 "BackupHealthy $2 for $1" is "$2" || fail "$1: BackupHealthy is '$(cond)', want $2"
  note "$1: BackupHealthy $2 ($(kubectl get -n $ns shard "$shard" -o jsonpath='{.status.conditions[?(@.type=="BackupHealthy")].message}'))"
}
expect none False/NoBackup
q=$(python3 -c 'import json,sys; print([json.loads(l)["query"] for l in open(sys.argv[1]) if json.loads(l)["path"]=="/api/v1/backups"][-1])' "$reqs")
[ "$q" = "database=postgres&table_group=default&shard=0-inf" ] || fail "GetBackups query: $q"
expect failed False/BackupFailed
expect completed2h True/BackupCompleted
age=$(curl -s "http://127.0.0.1:$mport/metrics" | grep "^multigres_operator_last_backup_age_seconds{shard=\"$shard\",namespace=\"$ns\"}" | awk '{print $2}')
[ -n "$age" ] || fail "no multigres_operator_last_backup_age_seconds for $shard"
python3 -c "import sys; a=float(sys.argv[1]); sys.exit(0 if 7190 <= a <= 7400 else 1)" "$age" || fail "last backup age $age, want ~7200"
note "multigres_operator_last_backup_age_seconds $age"
msg=$(kubectl get -n $ns shard "$shard" -o jsonpath='{.status.conditions[?(@.type=="BackupHealthy")].message}')
[[ $msg == "last complete backup c2h (full) at "* ]] || fail "message: $msg"
expect noreplica Unknown/NoReplica
# unreachable: nothing listens on the port any more
kill "$ma_pid"; wait "$ma_pid" 2>/dev/null || true
wait_for 40 "BackupHealthy Unknown/MultiadminUnreachable" is Unknown/MultiadminUnreachable ||
  fail "unreachable: BackupHealthy is '$(cond)'"
note "unreachable: BackupHealthy Unknown/MultiadminUnreachable"
# the age gauge stays what was last known (7200 s and counting), not reset
age2=$(curl -s "http://127.0.0.1:$mport/metrics" | grep "^multigres_operator_last_backup_age_seconds{shard=\"$shard\"" | awk '{print $2}')
[ -n "$age2" ] || fail "the age gauge vanished while multiadmin is unreachable"
note "ok"
