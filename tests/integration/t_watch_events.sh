#!/usr/bin/env bash
# A MultigresCluster created, changed and deleted through kubectl reaches the
# operator's watch as ADDED, MODIFIED and DELETED, each logged as one JSON line.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-watch
new_namespace $ns
start_operator watch --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
trap 'stop_operator watch' EXIT
wait_log watch '"msg":"multigres-op' 10 || fail "operator did not start"

apply_cluster $ns w1
wait_log watch "$(event_needle ADDED $ns w1)" 20 || fail "no ADDED event for w1"

kubectl label -n $ns multigrescluster w1 it/touched=yes >/dev/null
wait_log watch "$(event_needle MODIFIED $ns w1)" 20 || fail "no MODIFIED event for w1"

kubectl delete -n $ns multigrescluster w1 --wait=true >/dev/null
wait_log watch "$(event_needle DELETED $ns w1)" 20 || fail "no DELETED event for w1"

# every log line is one JSON object
if command -v python3 >/dev/null; then
  python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1]) if l.strip()]' "$IT_LOGS/watch.log" ||
    fail "a log line is not valid JSON"
fi
# --namespace scopes the watch: another namespace's cluster is not seen
kubectl create namespace it-watch-other >/dev/null 2>&1 || true
apply_cluster it-watch-other w2
sleep 2
[ "$(count_log watch '"name":"w2"')" = 0 ] || fail "--namespace $ns saw a cluster in it-watch-other"
kubectl delete namespace it-watch-other --wait=false >/dev/null
operator_alive watch || fail "operator exited"

# nothing to do costs no CPU: the loop sleeps in poll() (a wake-up byte
# left unread in its pipe once made every poll return at once: a core spent
# while "idle", with no request to show for it)
sleep 2
pid=$(cat "$IT_LOGS/watch.pid")
cpu_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$pid/stat"; }
c0=$(cpu_ticks); sleep 3; c1=$(cpu_ticks)
hz=$(getconf CLK_TCK)
[ $(( (c1 - c0) * 10 )) -le $(( hz * 3 )) ] || fail "idle operator used $(( (c1 - c0) * 1000 / hz )) ms of CPU in 3 s (at most 300)"
note "idle: $(( (c1 - c0) * 1000 / hz )) ms of CPU in 3 s"
