#!/usr/bin/env bash
# The serving path never waits on the reconcile loop, and the operator dies
# and stops cleanly:
#  - with the API server SIGKILLed for 20 s, admission reviews sent to the
#    webhook are all answered within 2 s each, from the template cache, with
#    the right verdict and message; /healthz and /metrics answer too; the
#    cluster converges once the API server is back;
#  - SIGKILL of the operator in the middle of reconciling three clusters,
#    then a restart: all converge, with exactly the objects of an
#    undisturbed cluster (no duplicates);
#  - SIGTERM of the leader exits 0 within 2 s and releases the Lease, also
#    while the API server is frozen (then without the release).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-serving
new_namespace $ns
start_operator serving --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns \
  --webhook-enable --webhook-bind-address 127.0.0.1:0 --webhook-service-namespace $ns \
  --webhook-configuration-name it-serving-none --webhook-extra-sans 127.0.0.1 --webhook-owner-deployment= \
  --metrics-bind-address 127.0.0.1:0 --health-probe-bind-address 127.0.0.1:0
trap 'stop_operator serving; stop_operator serving2; stop_operator lead' EXIT
wait_log serving '"msg":"webhook: serving certificate ' || fail "the webhook never got a certificate"
wport=$(grep -o 'admission webhook on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/serving.log" | grep -o '[0-9]*$')
mport=$(grep -o 'serving /metrics on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/serving.log" | grep -o '[0-9]*$')
pport=$(grep -o 'serving /healthz and /readyz on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/serving.log" | grep -o '[0-9]*$')

kubectl apply -n $ns -f - >/dev/null <<'Y'
apiVersion: multigres.com/v1alpha1
kind: CellTemplate
metadata: {name: fast}
spec:
  multigateway: {replicas: 1}
Y
wait_for 30 "/readyz 200" sh -c "[ \$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$pport/readyz) = 200 ]" ||
  fail "/readyz never 200"
wait_log serving '"kind":"CellTemplate","type":"ADDED","namespace":"'$ns'","name":"fast"' || fail "the template was not seen"

review() { # UID TEMPLATE
  printf '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"%s","kind":{"group":"multigres.com","version":"v1alpha1","kind":"MultigresCluster"},"operation":"CREATE","namespace":"%s","userInfo":{"username":"alice"},"object":{"metadata":{"name":"c"},"spec":{"templateDefaults":{"cellTemplate":"%s"},"cells":[{"name":"a","zone":"us-east-1a"}]}}}}' "$1" $ns "$2"
}
admit() { # UID TEMPLATE -> the response, or fails after 2 s
  curl -sk --max-time 2 -H 'Content-Type: application/json' --data-binary "$(review "$1" "$2")" \
    "https://127.0.0.1:$wport/validate"
}

# --- the API server SIGKILLed for 20 s while reviews keep coming ---------
"$ROOT/tests/controlplane/cp.sh" restart-apiserver --kill 20 >"$IT_LOGS/serving-restart.log" 2>&1 &
restarter=$!
sleep 1
answered=0 slow=0 worst=0
t_end=$(( $(date +%s) + 18 ))
while [ "$(date +%s)" -lt "$t_end" ]; do
  t0=$(date +%s%N)
  ok=$(admit "ok$answered" fast) || { slow=$((slow + 1)); continue; }
  bad=$(admit "bad$answered" nope) || { slow=$((slow + 1)); continue; }
  health=$(curl -s --max-time 2 "http://127.0.0.1:$pport/healthz") || { slow=$((slow + 1)); continue; }
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  [ "$ms" -gt "$worst" ] && worst=$ms
  [[ $ok == *'"allowed":true'* && $ok != *warnings* ]] || fail "a valid cluster was not admitted cleanly during the outage: $ok"
  [[ $bad == *'"allowed":false'* && $bad == *'TemplateNotFound'*'CellTemplate \"nope\"'* ]] ||
    fail "an invalid cluster was not refused with the reason during the outage: $bad"
  [ "$health" = ok ] || fail "/healthz said: $health"
  answered=$((answered + 1))
  sleep 0.3
done
apiserver_down=$(grep -c 'kube-apiserver down for 20s' "$IT_LOGS/serving-restart.log" || true)
[ "$apiserver_down" = 1 ] || fail "the API server was not down during the test: $(cat "$IT_LOGS/serving-restart.log")"
[ "$slow" = 0 ] || fail "$slow requests got no answer within 2 s while the API server was down"
[ "$answered" -ge 10 ] || fail "only $answered rounds answered"
curl -s --max-time 2 "http://127.0.0.1:$mport/metrics" >"$IT_LOGS/serving-metrics.txt" || fail "/metrics did not answer"
grep -q '^multigres_operator_webhook_request_total{operation="CREATE",resource="multigresclusters",result="denied"}' \
  "$IT_LOGS/serving-metrics.txt" || fail "the denials were not counted"
note "API server down 20 s: $answered rounds of 2 reviews + /healthz answered, slowest round ${worst} ms"
wait "$restarter" || fail "the API server did not come back"
operator_alive serving || fail "the operator died during the outage"

cluster_manifest $ns s0 | kubectl apply -f - >/dev/null
kubectl wait -n $ns --for=condition=Ready mgc/s0 --timeout=180s >/dev/null || fail "s0 never Ready after the outage"

# --- SIGKILL in the middle of reconciling, then a restart ----------------
for c in s1 s2 s3; do cluster_manifest $ns $c | kubectl apply -f - >/dev/null; done
wait_log serving '"msg":"applied","kind":"StatefulSet","namespace":"'$ns'","name":"s1-' 60 || fail "s1 never started"
kill -KILL "$(cat "$IT_LOGS/serving.pid")"
rm -f "$IT_LOGS/serving.pid"
start_operator serving2 --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
for c in s1 s2 s3; do
  kubectl wait -n $ns --for=condition=Ready mgc/$c --timeout=180s >/dev/null || fail "$c never Ready after the restart"
done
objects() { # CLUSTER: kind and name of every object it owns, its own name replaced by X
  for k in toposervers cells tablegroups shards statefulsets deployments services configmaps poddisruptionbudgets; do
    kubectl get -n $ns "$k" -l multigres.com/cluster="$1" -o name
  done | sed -E "s/$1/X/g; s/[0-9a-f]{8}/H/g" | sort # name hashes differ between clusters
}
want=$(objects s0)
for c in s1 s2 s3; do
  got=$(objects $c)
  [ "$got" = "$want" ] || fail "$c does not have exactly the objects of an undisturbed cluster: $(diff <(echo "$want") <(echo "$got") || true)"
done
note "SIGKILL mid-reconcile: after the restart s1..s3 each own the same $(wc -l <<<"$want") objects as s0"
stop_operator serving2

# --- SIGTERM: exit 0 within 2 s, Lease released --------------------------
lease=multigres-operator.multigres.com
stop_within() { # NAME: sets ms to how long the exit took; checks the exit code
  local pid t0 code=0
  pid=$(cat "$IT_LOGS/$1.pid")
  t0=$(date +%s%N)
  kill -TERM "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && return 1
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  wait "$pid" 2>/dev/null || code=$?
  rm -f "$IT_LOGS/$1.pid"
  [ "$code" = 0 ] || { note "$1 exited $code after SIGTERM"; return 1; }
}
start_operator lead --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns --leader-elect --leader-election-namespace $ns
wait_log lead '"msg":"leader election: ' 30 >/dev/null
wait_for 30 "lead holds the Lease" grep -q 'is the leader' "$IT_LOGS/lead.log" || fail "never led"
kubectl annotate -n $ns mgc s1 poke="$(date +%s)" --overwrite >/dev/null # work in flight, if any
stop_within lead || fail "SIGTERM did not end the leader cleanly within 2.5 s"
[ "$ms" -lt 2000 ] || fail "SIGTERM took ${ms} ms"
[ -z "$(jget -n $ns lease $lease -o jsonpath='{.spec.holderIdentity}')" ] || fail "SIGTERM did not release the Lease"
note "SIGTERM: exit 0 after ${ms} ms, Lease released"

start_operator lead --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns --leader-elect --leader-election-namespace $ns
wait_for 30 "lead holds the Lease again" sh -c "[ \$(grep -c 'is the leader' '$IT_LOGS/lead.log') -ge 1 ]" || fail "never led again"
# the API server restarted above: find it by its port rather than trusting a pid file
apid=$(pgrep -n -f -- "kube-apiserver.*--secure-port=$MGOP_APISERVER_PORT( |$)") || fail "no kube-apiserver on port $MGOP_APISERVER_PORT"
kill -STOP "$apid"
rc=0; stop_within lead || rc=1
kill -CONT "$apid"
[ "$rc" = 0 ] || fail "SIGTERM with the API server frozen did not end the leader cleanly within 2.5 s"
[ "$ms" -lt 2000 ] || fail "SIGTERM with the API server frozen took ${ms} ms"
note "SIGTERM with the API server frozen: exit 0 after ${ms} ms"
wait_for 60 "the API server answers again" kubectl get --raw /readyz || fail "the API server did not come back"
