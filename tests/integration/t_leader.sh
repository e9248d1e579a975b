#!/usr/bin/env bash
# Leader election (--leader-elect): two replicas elect exactly one leader,
# which alone writes; killing it (SIGKILL, no release) hands over within the
# lease duration and reconciling goes on; a clean shutdown (SIGTERM) releases
# the Lease at once.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-leader c=l1 lease=multigres-operator.multigres.com
new_namespace $ns
flags=(--kubeconfig "$MGOP_KUBECONFIG" --namespace $ns --leader-elect --leader-election-namespace $ns)
start_operator lead-a "${flags[@]}"
start_operator lead-b "${flags[@]}"
trap 'stop_operator lead-a; stop_operator lead-b' EXIT

wait_for 30 "a leader" sh -c "kubectl get -n $ns lease $lease -o jsonpath='{.spec.holderIdentity}' | grep -q ." ||
  fail "nobody took the Lease"
sleep 5 # let both try a few times
holder=$(jget -n $ns lease $lease -o jsonpath='{.spec.holderIdentity}')
leaders=$(grep -l '"msg":"leader election: .* is the leader' "$IT_LOGS"/lead-a.log "$IT_LOGS"/lead-b.log | wc -l)
[ "$leaders" = 1 ] || fail "$leaders replicas claim to lead"
if grep -qF "$holder is the leader" "$IT_LOGS/lead-a.log"; then leader=lead-a follower=lead-b; else leader=lead-b follower=lead-a; fi
grep -qF "$holder is the leader" "$IT_LOGS/$leader.log" || fail "the Lease holder $holder did not log leadership"

cluster_manifest $ns $c | kubectl apply -f - >/dev/null
kubectl wait -n $ns --for=condition=Ready mgc/$c --timeout=180s >/dev/null || fail "never Ready under the leader"
[ "$(count_log $follower '"msg":"reconciled"')" = 0 ] || fail "the follower reconciled (it must not write)"
[ "$(count_log $leader '"msg":"reconciled"')" -gt 0 ] || fail "the leader never reconciled"

# hand over: the leader dies without releasing
kill -KILL "$(cat "$IT_LOGS/$leader.pid")"
t0=$(date +%s)
wait_for 30 "the follower takes over" grep -q '"msg":"leader election: .* is the leader' "$IT_LOGS/$follower.log" ||
  fail "no hand-over"
took=$(( $(date +%s) - t0 ))
note "hand-over after ${took}s (lease duration 15s)"
[ "$took" -le 15 ] || fail "hand-over took ${took}s, more than the lease duration (15s)"
[ "$(jget -n $ns lease $lease -o jsonpath='{.spec.leaseTransitions}')" -ge 1 ] || fail "leaseTransitions not counted"

# the new leader reconciles: a deleted child comes back
kubectl delete -n $ns svc $c-multiadmin --wait=true >/dev/null
wait_for 20 "the Service recreated by the new leader" kubectl get -n $ns svc $c-multiadmin ||
  fail "the new leader did not reconcile"

# a clean shutdown releases the Lease
stop_operator $follower
[ -z "$(jget -n $ns lease $lease -o jsonpath='{.spec.holderIdentity}')" ] || fail "SIGTERM did not release the Lease"
grep -q '"msg":"leader election: released Lease' "$IT_LOGS/$follower.log" || fail "no release logged"

# renewal fails: with the API server frozen (SIGSTOP), the leader cannot
# renew; after the 10 s renew deadline it stops writing and exits 1
start_operator lead-c "${flags[@]}"
wait_for 30 "lead-c leads" grep -q '"msg":"leader election: .* is the leader' "$IT_LOGS/lead-c.log" || fail "lead-c never led"
apid=$(cat "$MGOP_CP_DIR/pids/kube-apiserver.pid")
cpid=$(cat "$IT_LOGS/lead-c.pid")
kill -STOP "$apid"
t0=$(date +%s)
for _ in $(seq 40); do kill -0 "$cpid" 2>/dev/null || break; sleep 0.5; done
kill -CONT "$apid"
took=$(( $(date +%s) - t0 ))
kill -0 "$cpid" 2>/dev/null && fail "the leader kept running ${took}s without renewing"
code=0; wait "$cpid" 2>/dev/null || code=$?
[ "$code" = 1 ] || fail "the leader exited with $code, not 1"
grep -q 'not renewed for 10000 ms; stopping all writes and exiting' "$IT_LOGS/lead-c.log" || fail "no reason logged"
note "with the API server frozen the leader exited 1 after ${took}s"
wait_for 60 "the API server answers again" kubectl get --raw /readyz || fail "the API server did not come back"
