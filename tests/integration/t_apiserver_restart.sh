#!/usr/bin/env bash
# The API server restarts mid-watch. The operator reconnects and resumes from
# its last resourceVersion (or relists when the server's watch cache no
# longer has it) without losing a change: every object created or changed
# after the restart, and the change made just before it, are seen.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-restart
new_namespace $ns
start_operator restart --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
trap 'stop_operator restart' EXIT
apply_cluster $ns r1
wait_log restart "$(event_needle ADDED $ns r1)" 20 || fail "no ADDED event for r1"

# a change right before the restart, which the operator may or may not see
# before the connection drops
kubectl label -n $ns multigrescluster r1 it/phase=before >/dev/null
rv_before=$(kubectl get -n $ns multigrescluster r1 -o jsonpath='{.metadata.resourceVersion}')

"$ROOT/tests/controlplane/cp.sh" restart-apiserver >&2

# changes right after the restart, while the operator is still reconnecting
apply_cluster $ns r2
kubectl label --overwrite -n $ns multigrescluster r1 it/phase=after >/dev/null
rv_after=$(kubectl get -n $ns multigrescluster r1 -o jsonpath='{.metadata.resourceVersion}')
rv_r2=$(kubectl get -n $ns multigrescluster r2 -o jsonpath='{.metadata.resourceVersion}')

wait_log restart '"msg":"watch interrupted; retrying"' 30 || fail "the operator never noticed the restart"
# r2 arrives as ADDED (watch resumed) or SYNC (relisted): either way, seen
wait_log restart "\"name\":\"r2\",\"uid\"" 40 || fail "r2, created after the restart, was never seen"
r2=$(grep -F '"name":"r2"' "$IT_LOGS/restart.log" || true)
grep -qE '"type":"(ADDED|SYNC)"' <<<"$r2" || fail "r2 seen with a wrong type"
wait_log restart "\"name\":\"r1\"" 5
# r1 at rv_after or later: the watch delivers that event, or a relist (or
# the reconcile's own status write, which can land first while the watch
# backs off) shows a later state that includes the label
newest() { # NAME: the newest resourceVersion logged for it
  local rvs
  rvs=$(grep -F "\"name\":\"$1\",\"uid\"" "$IT_LOGS/restart.log" | grep -o '"resourceVersion":"[0-9]*"' | grep -o '[0-9]*' || true)
  sort -n <<<"${rvs:-0}" | tail -n 1
}
seen_at_least() { # NAME RV SECONDS: until its newest logged resourceVersion is RV or later (in $seen)
  local i
  for ((i = 0; i < $3 * 2; i++)); do
    seen=$(newest "$1")
    [ "$seen" -ge "$2" ] && return 0
    sleep 0.5
  done
  return 1
}
seen_at_least r1 "$rv_after" 40 || fail "r1's change after the restart (rv $rv_after) was lost: newest seen rv $seen"
# the change before the restart was seen too (directly, or folded into the later state)
grep -qF "\"resourceVersion\":\"$rv_before\"" "$IT_LOGS/restart.log" ||
  note "rv $rv_before folded into $rv_after (level-based: the later state includes it)"
# r2 as it was read after the restart, or a later state: the operator's own
# first write (the applied-images annotation) can land before that read
seen_at_least r2 "$rv_r2" 20 || fail "r2 at resourceVersion $rv_r2 (or later) never seen: newest $seen"

# and the stream keeps working afterwards
kubectl delete -n $ns multigrescluster r2 --wait=true >/dev/null
wait_log restart "$(event_needle DELETED $ns r2)" 20 || fail "no DELETED for r2 after the restart"
operator_alive restart || fail "operator exited"
