#!/usr/bin/env bash
# /metrics, /healthz and /readyz: the exposition passes the Prometheus
# checker (tests/metrics-lint: expfmt's parser and promlint, what
# `promtool check metrics` runs), carries the controller-runtime families and
# every multigres_operator_* gauge of seed 003 for a converged cluster, and
# follows the cluster away when it is deleted.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-metrics c=m1
LINT=${MGOP_METRICS_LINT:-${MGOP_CACHE:-$HOME/.cache/multigres-op}/tools/bin/metrics-lint}
[ -x "$LINT" ] || fail "metrics-lint not built ($LINT); run make tools"
new_namespace $ns
start_operator metrics --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns \
  --metrics-bind-address 127.0.0.1:0 --health-probe-bind-address 127.0.0.1:0
trap 'stop_operator metrics' EXIT
wait_log metrics '"msg":"serving /metrics on 127.0.0.1:0 (port ' || fail "no metrics server"
mport=$(grep -o 'serving /metrics on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/metrics.log" | grep -o '[0-9]*$')
pport=$(grep -o 'serving /healthz and /readyz on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/metrics.log" | grep -o '[0-9]*$')

[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$pport/healthz)" = 200 ] || fail "/healthz is not 200"
wait_for 30 "/readyz 200 once the watches listed" sh -c "[ \$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$pport/readyz) = 200 ]" ||
  fail "/readyz never 200"
[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$pport/nope)" = 404 ] || fail "an unknown path is not 404"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST http://127.0.0.1:$mport/metrics)" = 405 ] || fail "POST /metrics is not 405"

cluster_manifest $ns $c | kubectl apply -f - >/dev/null
kubectl wait -n $ns --for=condition=Ready mgc/$c --timeout=180s >/dev/null || fail "never Ready"
curl -s -D "$IT_LOGS/metrics.head" http://127.0.0.1:$mport/metrics >"$IT_LOGS/metrics.txt" || fail "GET /metrics failed"
grep -qi '^content-type: text/plain; version=0.0.4' "$IT_LOGS/metrics.head" || fail "wrong Content-Type"
# seed 003 names a few gauges *_total; promlint flags that, and we keep the names for compatibility
"$LINT" <"$IT_LOGS/metrics.txt" 2>"$IT_LOGS/metrics.lint" ||
  ! grep -v -e '^multigres_operator_cluster_cells_total: non-counter metrics should not have "_total" suffix$' \
    -e '^multigres_operator_cluster_shards_total: non-counter metrics should not have "_total" suffix$' \
    "$IT_LOGS/metrics.lint" | grep . || fail "the exposition fails the checker: $(cat "$IT_LOGS/metrics.lint")"
grep -q 'parse:' "$IT_LOGS/metrics.lint" && fail "the exposition does not parse: $(cat "$IT_LOGS/metrics.lint")"
m=$IT_LOGS/metrics.txt
for want in \
  'controller_runtime_reconcile_total{controller="multigrescluster",result="success"} [1-9]' \
  'controller_runtime_reconcile_time_seconds_count{controller="multigrescluster"} [1-9]' \
  'multigres_reconciliation_duration_seconds_bucket{controller="multigrescluster",le="+Inf"} [1-9]' \
  'workqueue_depth{name="multigres"} [0-9]' \
  "multigres_operator_cluster_info{name=\"$c\",namespace=\"$ns\",phase=\"Healthy\"} 1" \
  "multigres_operator_cluster_cells_total{cluster=\"$c\",namespace=\"$ns\"} 1" \
  "multigres_operator_cluster_shards_total{cluster=\"$c\",namespace=\"$ns\"} 1" \
  "multigres_operator_cell_gateway_replicas{cell=\"$c-zone-a-[0-9a-f]*\",namespace=\"$ns\",state=\"ready\"} 1" \
  "multigres_operator_shard_pool_replicas{shard=\"$c-postgres-default-0-inf-[0-9a-f]*\",pool=\"default\",namespace=\"$ns\",state=\"ready\"} 3" \
  "multigres_operator_shard_pool_replicas{shard=\"$c-postgres-default-0-inf-[0-9a-f]*\",pool=\"default\",namespace=\"$ns\",state=\"desired\"} 3" \
  "multigres_operator_toposerver_replicas{name=\"$c-global-topo\",namespace=\"$ns\",state=\"ready\"} 3" \
  'process_resident_memory_bytes [1-9]' \
  'multigres_operator_arena_high_water_bytes [1-9]' \
  'multigres_operator_tls_heap_high_water_bytes [1-9]' \
  'multigres_operator_tls_handshakes_total{resumed="false"} [1-9]' \
  'multigres_operator_tls_handshakes_total{resumed="true"} [1-9]'; do
  grep -q "^$want" "$m" || fail "missing from /metrics: $want"
done
note "$(grep -c '^# TYPE' "$m") families, RSS $(awk '/^process_resident_memory_bytes/ {printf "%.1f MiB", $2/1048576}' "$m")"

# the cluster's series leave with it
kubectl delete -n $ns mgc $c --wait=true >/dev/null
wait_for 20 "the cluster's series gone" sh -c "! curl -s http://127.0.0.1:$mport/metrics | grep -q 'namespace=\"$ns\"'" ||
  fail "series of a deleted cluster remain"
operator_alive metrics || fail "operator exited"
