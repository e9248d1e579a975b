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
ma_t0=$(date +%s) # the double's listing is dated from its start
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
want=$((7200 + $(date +%s) - ma_t0))
python3 -c "import sys; a, w = float(sys.argv[1]), int(sys.argv[2]); sys.exit(0 if w - 10 <= a <= w + 5 else 1)" "$age" "$want" ||
  fail "last backup age $age, want ~$want (7200 s before the double started)"
note "multigres_operator_last_backup_age_seconds $age"
msg=$(kubectl get -n $ns shard "$shard" -o jsonpath='{.status.conditions[?(@.type=="BackupHealthy")].message}')
[[ $msg == "last complete backup c2h (full) at "* ]] || fail "message: $msg"
# an unchanged verdict costs no API request: the checks run between turns
# (three 2 s intervals: the double sees GETs, the API server sees nothing)
api_all() { curl -s "http://127.0.0.1:$mport/metrics" | awk '$1 == "multigres_operator_api_requests_total{kind=\"all\"}" {print $2}'; }
gets() { python3 -c 'import json,sys; print(sum(1 for l in open(sys.argv[1]) if json.loads(l)["path"]=="/api/v1/backups"))' "$reqs"; }
ready() { [ "$(jget -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
wait_for 120 "cluster $c Ready" ready || fail "cluster $c never Ready"
sleep 3 # the last status writes settle
a0=$(api_all) g0=$(gets)
sleep 7
a1=$(api_all) g1=$(gets)
[ -n "$a0" ] && [ "$a0" = "$a1" ] || fail "unchanged backup checks made API requests: $a0 -> $a1"
[ $((g1 - g0)) -ge 2 ] || fail "only $((g1 - g0)) GetBackups in 7 s with a 2 s interval"
note "idle: $((g1 - g0)) GetBackups in 7 s, 0 API requests"
expect noreplica Unknown/NoReplica
# unreachable: nothing listens on the port any more
kill "$ma_pid"; wait "$ma_pid" 2>/dev/null || true
wait_for 40 "BackupHealthy Unknown/MultiadminUnreachable" is Unknown/MultiadminUnreachable ||
  fail "unreachable: BackupHealthy is '$(cond)'"
note "unreachable: BackupHealthy Unknown/MultiadminUnreachable"
# the age gauge stays what was last known (7200 s and counting), not reset
age2=$(curl -s "http://127.0.0.1:$mport/metrics" | grep "^multigres_operator_last_backup_age_seconds{shard=\"$shard\"" | awk '{print $2}')
[ -n "$age2" ] || fail "the age gauge vanished while multiadmin is unreachable"

# ---- the schedule, on a fake clock (MGOP_FAKE_CLOCK_FILE: the operator reads
# its time there), against a fresh double; the restart in the middle checks
# that the state lives in status.backupSchedule, not only in memory
: >"$reqs"; echo completed2h >"$state"
python3 "$(dirname "$0")/multiadmin_contract.py" "$port" "$state" "$reqs" 2>>"$IT_LOGS/ma-contract.log" &
ma_pid=$!
clock=$IT_LOGS/ma-contract.clock
H=$(( ($(date +%s) / 3600 + 1) * 3600 ))   # the next whole hour
echo $((H - 90)) >"$clock"
stop_operator bkc
MGOP_FAKE_CLOCK_FILE=$clock start_operator bkc --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns \
  --multiadmin-address "127.0.0.1:$port" --backup-check-interval 2s --metrics-bind-address 127.0.0.1:0
kubectl patch -n $ns mgc $c --type merge -p '{"spec":{"backup":{"type":"filesystem","filesystem":{},"schedule":"0 * * * *","retention":2}}}' >/dev/null ||
  fail "the schedule was rejected"
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }
sched() { kubectl get -n $ns shard "$shard" -o jsonpath="{.status.backupSchedule.$1}" 2>/dev/null; }
field_is() { [ "$(sched "$1")" = "$2" ]; }
posts() { python3 -c 'import json,sys; print(sum(1 for l in open(sys.argv[1]) if json.loads(l)["method"]=="POST" and json.loads(l)["path"]==sys.argv[2]))' "$reqs" "$1"; }
wait_for 40 "nextRun $(iso $H)" field_is nextRun "$(iso $H)" || fail "nextRun is '$(sched nextRun)', want $(iso $H)"
sleep 3
[ "$(posts /api/v1/backups)" = 0 ] || fail "a backup was asked for before it was due"
note "schedule: nextRun $(iso $H); nothing posted at $(iso $((H - 90)))"

echo $((H + 5)) >"$clock"
has_posts() { [ "$(posts "$1")" = "$2" ]; }
wait_for 40 "POST /api/v1/backups" has_posts /api/v1/backups 1 || fail "no backup asked for at $(iso $((H + 5)))"
body=$(python3 -c 'import json,sys; print(json.dumps([json.loads(l)["body"] for l in open(sys.argv[1]) if json.loads(l)["method"]=="POST"][0], sort_keys=True))' "$reqs")
[ "$body" = '{"database": "postgres", "shard": "0-inf", "tableGroup": "default", "type": "full"}' ] || fail "Backup request body: $body"
wait_for 40 "POST /api/v1/backups/expire" has_posts /api/v1/backups/expire 1 || fail "no expire after the job completed"
body=$(python3 -c 'import json,sys; print(json.dumps([json.loads(l)["body"] for l in open(sys.argv[1]) if json.loads(l)["path"]=="/api/v1/backups/expire"][0], sort_keys=True))' "$reqs")
[[ $body == *'"overrides": {"repo1-retention-full": "2"}'* && $body == *'"shard": "0-inf"'* ]] || fail "expire body: $body"
jobs=$(python3 -c 'import json,sys; print(sum(1 for l in open(sys.argv[1]) if json.loads(l)["path"]=="/api/v1/jobs/job-1"))' "$reqs")
[ "$jobs" -ge 1 ] || fail "the job was never looked at"
wait_for 20 "lastResult Completed" field_is lastResult Completed || fail "lastResult '$(sched lastResult)'"
[ "$(sched lastRun)/$(sched lastJobId)/$(sched nextRun)" = "$(iso $H)/job-1/$(iso $((H + 3600)))" ] ||
  fail "after the run: lastRun/lastJobId/nextRun $(sched lastRun)/$(sched lastJobId)/$(sched nextRun)"
note "run: POST /api/v1/backups at $(iso $((H + 5))), job-1 followed, expire with repo1-retention-full=2; nextRun $(iso $((H + 3600)))"

# missed: the clock jumps past the next run by more than the 10 min grace
echo $((H + 3600 + 700)) >"$clock"
wait_for 40 "missedRuns 1" field_is missedRuns 1 || fail "the missed run was not counted: $(sched missedRuns)"
[ "$(posts /api/v1/backups)" = 1 ] || fail "a late backup was asked for instead of reporting the missed run"
field_is nextRun "$(iso $((H + 7200)))" || fail "nextRun after the miss: $(sched nextRun)"
ev=$(kubectl get -n $ns events.events.k8s.io -o jsonpath='{range .items[*]}{.reason}{"\n"}{end}')
grep -qx BackupMissed <<<"$ev" || fail "no BackupMissed Event"
m=$(curl -s "http://127.0.0.1:$(grep -o 'serving /metrics on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/bkc.log" | tail -1 | grep -o '[0-9]*$')/metrics")
grep -q "^multigres_operator_backup_missed_runs{shard=\"$shard\",namespace=\"$ns\"} 1" <<<"$m" || fail "no missed-run metric"
note "missed: Event BackupMissed, missedRuns 1, multigres_operator_backup_missed_runs 1; nextRun $(iso $((H + 7200)))"

# a restart keeps the schedule: no run repeated, the next one on time
stop_operator bkc
MGOP_FAKE_CLOCK_FILE=$clock start_operator bkc --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns \
  --multiadmin-address "127.0.0.1:$port" --backup-check-interval 2s
sleep 8
[ "$(posts /api/v1/backups)" = 1 ] || fail "the restarted operator asked for another backup"
[ "$(sched nextRun)/$(sched lastRun)" = "$(iso $((H + 7200)))/$(iso $H)" ] ||
  fail "after the restart: nextRun/lastRun $(sched nextRun)/$(sched lastRun)"
echo $((H + 7200 + 3)) >"$clock"
wait_for 40 "the next run after the restart" has_posts /api/v1/backups 2 || fail "no run after the restart"
wait_for 20 "lastRun $(iso $((H + 7200)))" field_is lastRun "$(iso $((H + 7200)))" || fail "lastRun $(sched lastRun)"
note "restart: state kept in status.backupSchedule; the next run at $(iso $((H + 7200))) happened once"
note "ok"
