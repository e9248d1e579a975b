#!/usr/bin/env bash
# bench/run.sh [CLUSTERS] - figures to compare across commits, against the
# real local control plane (kwok nodes): N copies of config/samples/minimal.yaml
# in one namespace. Prints one "bench <name> <value> <unit>" line per figure:
#   converge_seconds      apply of N clusters -> all Ready
#   api_requests          requests the operator made to converge them
#   api_writes            of which writes
#   idle_writes_30s       writes during 30 s of idle afterwards (should be 0)
#   rss_kib, hwm_kib      the operator's resident memory now and at its peak
#   reconcile_p50_ms, reconcile_p99_ms  from the reconcile latency histogram
#   render_ms             `multigres-op render` of the sample, offline
#   binary_bytes          the static binary (make static), the one measured
#   webhook_p50_ms/p99_ms, healthz_p50_ms/p99_ms   the serving path
#                         (bench/serving_latency.c, 50 reviews/s over one
#                         keep-alive TLS connection, each followed by a
#                         /healthz), with the loop idle, then while it
#                         applies LOAD_CLUSTERS (100) more clusters
#                         (suffix _idle and _busy)
#                         The operator runs in a session of its own
#                         (setsid: the kernel's autogroup schedules it apart
#                         from kubectl and the load generator, as a pod's
#                         cgroup is on a node); the control plane's
#                         processes each have theirs already (cp.sh)
#   webhook_server_p50/p99_ms_{idle,busy}_le   the same windows from the
#                         webhook's own histogram (request read -> response
#                         queued): the upper bound of the bucket holding the
#                         quantile, without the client's own scheduling
# Timings vary with the machine; compare runs made on the same one. The
# lines are also kept as JSON in bench/results/<date>-<commit>-<N>.json.
set -euo pipefail
N=${1:-${BENCH_CLUSTERS:-10}}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CP="$ROOT/tests/controlplane/cp.sh"
export MGOP_CP_DIR=${MGOP_CP_DIR:-/tmp/multigres-op-bench}
make -s -C "$ROOT" static >&2       # the shipped binary is what we measure
export OP_BIN=$ROOT/build/static/multigres-op
"$CP" build >&2
"$CP" up >&2
trap '"$CP" down >&2' EXIT
source "$MGOP_CP_DIR/env"
export IT_LOGS=$ROOT/build/bench
source "$ROOT/tests/integration/lib.sh"
kubectl apply --server-side -f "$ROOT/crds.yaml" >/dev/null
for _ in $(seq 12); do # retried: kubectl wait fails at once on a CRD whose status is not filled yet
  kubectl wait --for=condition=Established --timeout=10s crd --all >/dev/null 2>&1 && break
  sleep 1
done
kubectl wait --for=condition=Established --timeout=10s crd --all >/dev/null
ns=bench
new_namespace $ns
# every "bench NAME VALUE UNIT" line printed below also goes to the results file
lines=$(mktemp)
exec > >(tee "$lines")
# tables sized for N (and the LOAD_CLUSTERS added later): the defaults hold ~300 minimal clusters
objects=$(( (N + ${LOAD_CLUSTERS:-100}) * 40 )) series=$(( (N + ${LOAD_CLUSTERS:-100}) * 10 ))
[ $objects -ge 8192 ] || objects=8192
[ $series -ge 2048 ] || series=2048
OP_OWN_SESSION=1 start_operator bench --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns --metrics-bind-address 127.0.0.1:0 \
  --max-objects $objects --max-metric-series $series \
  --health-probe-bind-address 127.0.0.1:0 --webhook-enable --webhook-bind-address 127.0.0.1:0 \
  --webhook-service-namespace $ns --webhook-configuration-name bench-none --webhook-extra-sans 127.0.0.1 \
  --webhook-owner-deployment=
trap 'stop_operator bench; "$CP" down >&2' EXIT
wait_log bench '(port ' >/dev/null
port=$(grep -o 'serving /metrics on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/bench.log" | grep -o '[0-9]*$')
metric() { curl -s "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
pid=$(cat "$IT_LOGS/bench.pid")
sleep 2
req0=$(metric 'multigres_operator_api_requests_total{kind="all"}') wr0=$(metric 'multigres_operator_api_requests_total{kind="write"}')
t0=$(date +%s.%N)
for i in $(seq 1 "$N"); do cluster_manifest $ns b$i; echo ---; done | kubectl apply -f - >/dev/null
for i in $(seq 1 "$N"); do
  kubectl wait -n $ns --for=condition=Ready mgc/b$i --timeout=600s >/dev/null || { echo "bench: b$i never Ready" >&2; exit 1; }
done
t1=$(date +%s.%N)
req1=$(metric 'multigres_operator_api_requests_total{kind="all"}') wr1=$(metric 'multigres_operator_api_requests_total{kind="write"}')
sleep 30
wr2=$(metric 'multigres_operator_api_requests_total{kind="write"}')
read -r rss hwm < <(awk '/^VmRSS:/ {r = $2} /^VmHWM:/ {h = $2} END {print r, h}' "/proc/$pid/status")
quantile() { # Q: from the cumulative reconcile histogram, the upper bound of the bucket holding quantile Q
  curl -s "http://127.0.0.1:$port/metrics" | python3 -c '
import re, sys
q = float(sys.argv[1]); b = []
for l in sys.stdin:
    m = re.match(r"controller_runtime_reconcile_time_seconds_bucket\{controller=\"multigrescluster\",le=\"([^\"]+)\"\} (\d+)", l)
    if m: b.append((float("inf") if m.group(1) == "+Inf" else float(m.group(1)), int(m.group(2))))
total = b[-1][1]
print(next(int(le * 1000) if le != float("inf") else -1 for le, n in b if n >= q * total))' "$1"
}
rs=$(date +%s%N); "$OP_BIN" render -f "$ROOT/config/samples/minimal.yaml" >/dev/null; re=$(date +%s%N)
echo "bench clusters $N count"
echo "bench converge_seconds $(python3 -c "print(round($t1 - $t0, 1))") s"
echo "bench api_requests $((${req1%.*} - ${req0%.*})) count"
echo "bench api_writes $((${wr1%.*} - ${wr0%.*})) count"
echo "bench idle_writes_30s $((${wr2%.*} - ${wr1%.*})) count"
echo "bench rss_kib $rss KiB"
echo "bench hwm_kib $hwm KiB"
echo "bench reconcile_p50_ms $(quantile 0.5) ms"
echo "bench reconcile_p99_ms $(quantile 0.99) ms"
echo "bench render_ms $(( (re - rs) / 1000000 )) ms"
echo "bench binary_bytes $(stat -c %s "$ROOT/build/static/multigres-op" 2>/dev/null || echo 0) bytes"

# The serving path, idle and while the loop is busy applying more clusters.
LOAD=${LOAD_CLUSTERS:-100}
wait_log bench '"msg":"webhook: serving certificate ' >/dev/null
wport=$(grep -o 'admission webhook on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/bench.log" | grep -o '[0-9]*$')
pport=$(grep -o 'serving /healthz and /readyz on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/bench.log" | grep -o '[0-9]*$')
# the load generator and the applying kubectl each in a session of their own
# too: in the bench's session they would take the client's own CPU share; the
# generator also asks for the short scheduler slice the operator's serving
# thread has (serving_latency.c), so its own wake-ups do not add to the figures
serving() { setsid -w "$ROOT/build/serving_latency" "$wport" "$pport" $ns "$1" 50; }
# the webhook's own time per review (request read to response queued), from
# its histogram: the upper bound of the bucket holding p50 and p99 over a
# window, without the client's scheduling on a loaded machine
wh_snap() { curl -s "http://127.0.0.1:$port/metrics" | grep -F 'multigres_operator_webhook_request_duration_seconds_bucket{operation="CREATE",resource="multigresclusters"' || true; }
wh_quantiles() { # BEFORE AFTER: "p50_ms p99_ms"
  python3 -c '
import re, sys
def load(t):
    d = {}
    for l in t.splitlines():
        m = re.search(r"le=\"([^\"]+)\"\} (\d+)", l)
        if m: d[float("inf") if m.group(1) == "+Inf" else float(m.group(1))] = int(m.group(2))
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
les = sorted(b); n = b[les[-1]] - a.get(les[-1], 0)
def q(x):
    for le in les:
        if b[le] - a.get(le, 0) >= x * n: return "%g" % (le * 1000) if le != float("inf") else "inf"
print(q(0.5), q(0.99))' "$1" "$2"
}
s0=$(wh_snap)
read -r wi50 wi99 hi50 hi99 ni ei < <(serving 15)
s1=$(wh_snap)
read -r whi50 whi99 < <(wh_quantiles "$s0" "$s1")
applied0=$(count_log bench '"msg":"applied"')
for i in $(seq 1 "$LOAD"); do cluster_manifest $ns w$i; echo ---; done >"$IT_LOGS/bench-load.yaml"
setsid -w kubectl apply -f "$IT_LOGS/bench-load.yaml" >/dev/null &
loader=$!
read -r wb50 wb99 hb50 hb99 nb eb < <(serving 20)
s2=$(wh_snap)
read -r whb50 whb99 < <(wh_quantiles "$s1" "$s2")
wait $loader
applied=$(( $(count_log bench '"msg":"applied"') - applied0 ))
for phase in idle busy; do
  if [ $phase = idle ]; then set -- "$wi50" "$wi99" "$hi50" "$hi99" "$ni" "$ei"; else set -- "$wb50" "$wb99" "$hb50" "$hb99" "$nb" "$eb"; fi
  echo "bench webhook_p50_ms_$phase $1 ms"
  echo "bench webhook_p99_ms_$phase $2 ms"
  echo "bench healthz_p50_ms_$phase $3 ms"
  echo "bench healthz_p99_ms_$phase $4 ms"
  echo "bench serving_requests_$phase $5 count"
  echo "bench serving_errors_$phase $6 count"
done
echo "bench webhook_server_p50_ms_idle_le $whi50 ms"
echo "bench webhook_server_p99_ms_idle_le $whi99 ms"
echo "bench webhook_server_p50_ms_busy_le $whb50 ms"
echo "bench webhook_server_p99_ms_busy_le $whb99 ms"
echo "bench objects_applied_while_busy $applied count"
# the figures as JSON, beside the earlier ones (compare across commits)
exec >&2
sleep 0.2 # tee flushes
mkdir -p "$ROOT/bench/results"
out="$ROOT/bench/results/$(date -u +%Y%m%d)-$(git -C "$ROOT" rev-parse --short HEAD)-$N.json"
python3 - "$lines" "$out" "$(git -C "$ROOT" rev-parse HEAD)" "$(nproc)" <<'PY'
import json, sys, time
figs = {}
for l in open(sys.argv[1]):
    p = l.split()
    if len(p) == 4 and p[0] == "bench":
        try: v = float(p[2])
        except ValueError: v = p[2]
        figs[p[1]] = {"value": v, "unit": p[3]}
json.dump({"commit": sys.argv[3], "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "cpus": int(sys.argv[4]), "figures": figs}, open(sys.argv[2], "w"), indent=1, sort_keys=True)
PY
rm -f "$lines"
echo "bench: results in ${out#$ROOT/}"
