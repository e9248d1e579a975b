#!/usr/bin/env bash
# bench/run.sh [N ...] - figures to compare across commits, against the real
# local control plane (kwok nodes; tests/controlplane/cp.sh), one control
# plane per size, sized for it. For each N (default: $BENCH_SIZES, else
# "10 100 1000"), N copies of config/samples/minimal.yaml in one namespace;
# then the templated mix ($BENCH_MIX consumers of one CellTemplate, default
# 100; 0 skips it). Prints one "bench <size> <name> <value> <unit>" line per
# figure and keeps them all as JSON in bench/results/<date>-<commit>.json
# (-<HHMMSS> added for a second run of the commit that day);
# bench/plot draws them.
#
# Per size:
#   converge_seconds       apply of N clusters -> all N Ready
#   applied_seconds        apply -> the operator's last object apply (its own
#                          part; the rest is the control plane scheduling and
#                          binding volumes, and kwok starting pods)
#   input_seconds          apply -> kubectl has created the N clusters
#   pvc_bind_p50/p99/max_seconds  the control plane's PVC creation -> bound
#                          (audit log): is provisioning the bottleneck?
#   cpu_seconds            the operator's CPU (user+system) over the converge
#   apiserver_cpu_seconds  kube-apiserver's over the same time (on 2 cores it
#                          is the bound: see bench_own)
#   rss_kib, hwm_kib       resident memory after the idle minute, and its peak
#   api_requests           the operator's requests while converging, from the
#   api_<verb>             API server's audit log (user agent multigres-op/),
#   api_requests_per_cluster  and by verb
#   settle_seconds         all Ready -> the operator's request counter stops
#   idle_requests_60s      requests in the minute after that (want 0)
#   webhook_p50/p99_ms_busy, healthz_p50/p99_ms_busy
#                          the serving path while the N clusters converge
#                          (bench/serving_latency.c: 50 AdmissionReviews a
#                          second over one keep-alive TLS connection, each
#                          followed by a GET /healthz); _idle: the same after;
#   webhook_over_5ms_busy/_idle  the answers over 5 ms as the client timed
#                          them, and webhook_server_over_2_5ms/_5ms_busy/_idle
#                          as the operator's own histogram did (request read
#                          to answer queued): is the tail in the operator?
#                          (from 415814a on)
#   start_to_first_reconcile_ms  operator restarted with the N clusters
#                          present: its exec -> its first reconcile turn
#                          done (up to f906a62 from the script's launch,
#                          which added start_exec_ms; the time of its log
#                          line "first reconcile ...":
#                          a turn that failed is not one: up to 06415e4 the
#                          early turn's always failed, its root's body
#                          cleared, and the figure counted it;
#                          a poller of /metrics every 2 ms, used before
#                          20261205, took CPU from the start it measured,
#                          and so did the log's reader, a python3 begun at
#                          launch, up to 26702f4; it starts a second
#                          later now);
#                          the median of BENCH_RESTARTS restarts (default 5
#                          up to 100 clusters, 1 beyond; before 20261206
#                          one), with _min, _max and _samples; and
#                          _cpu_ms, the median of the CPU the operator
#                          had used by then (the same log line, from
#                          8a70e6f on: less noisy than the wall time on a
#                          busy host)
#   start_exec_ms          the same restarts' median script's launch -> the
#                          operator's exec: the harness's fork and setsid's
#                          exec (start_operator's OP_EXEC_STAMP), not counted
#   start_to_full_lists_ms  the same restarts' median exec -> the full
#                          lists done (its log line "full lists done ..."):
#                          the first turn is the early turn's, on one
#                          cluster's objects alone (from 87f81d4 on); every
#                          other cluster's waits for these
#   start_lists, start_lists_kib, start_lists_apiserver_cpu_ms, start_lists_wall_ms
#                          the floor under it: the LISTs of the last start,
#                          replayed (bench/list_replay.py; start_lists_figs)
# The restart_ figures are the first restart's:
#   restart_to_idle_seconds      exec -> its last request (it is idle): the
#                          audit log's (up to c055db6 launch -> when the
#                          request counter last moved, as quiet saw it,
#                          which was when quiet began if that was later)
#   restart_full_tls_handshakes  the restarted operator's TLS handshakes that were
#                          not resumed (each signs), until idle
#   restart_writes         writes after that restart until idle (want 0)
# Then the same N with the control plane's controllers paused (bench_own,
# BENCH_OWN=0 skips it; BENCH_FULL=0 runs it alone): the operator's own part
# with the API server serving nothing else: own_applied_seconds,
# own_objects_applied, own_cpu_seconds, own_apiserver_cpu_seconds,
# own_api_requests(_per_cluster), own_api_<verb>, own_hwm_kib; with
# BENCH_OWN_RESTARTS=1 then restarts as above on that quiet control plane
# (the N clusters' objects all applied, nothing Ready): own_start_to_*
# and own_start_exec_ms, a cheap start figure at 1,000
# BENCH_FLOOR=1 adds bench_floor: the same objects applied by kubectl alone,
# the API server's and etcd's CPU for them, the floor under the above.
# The mix: mix_converge_seconds, mix_api_requests, and
#   template_change_seconds  one CellTemplate change -> all the consumers'
#                          multigateway Deployments carry it
#   template_change_requests the operator's requests for it
#
# The operator runs in a session of its own (setsid: the kernel's autogroup
# schedules it apart from kubectl and the load generator, as a pod's cgroup is
# on a node); the control plane's processes each have theirs already (cp.sh).
# Timings vary with the machine; compare runs made on the same one.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CP="$ROOT/tests/controlplane/cp.sh"
read -r -a SIZES <<<"${*:-${BENCH_SIZES:-10 100 1000}}"
MIX=${BENCH_MIX:-100}
# BENCH_OP_BIN: measure this binary instead of the tree's static build (an
# A/B of two commits on one host, alternating; its --version is recorded as
# op_version)
BENCH_OP_BIN=${BENCH_OP_BIN:-}
BENCH_OP_FLAGS=${BENCH_OP_FLAGS:-} # more operator flags, e.g. --max-applies-in-flight 1 (an A/B of one knob; the results record them as op_flags)
BINDER=${BENCH_BINDER:-1}
# kube-apiserver flags of every bench control plane (recorded as
# cp_apiserver_args; BENCH_CP_APISERVER_ARGS= runs a stock v1.33 one). The
# default allocates Services' cluster IPs with the bitmap allocator, the
# default up to Kubernetes v1.32: v1.33's IPAddress allocator lists every
# IPAddress object twice per allocation (ipallocator's Used(), for a metric),
# so each ClusterIP Service costs kube-apiserver time in proportion to the
# Services already there. At 1,000 clusters (7,000 such Services) that was
# a third of kube-apiserver's CPU in a profile of bench_own (cache.ListAll
# under createIPAddress and Free), and bench_own took 139-149 s with it
# against 110-121 s without, for the same 34,994 requests. Like the PVC
# binder, a control-plane bottleneck that is not the operator's.
CP_APISERVER_ARGS=${BENCH_CP_APISERVER_ARGS---feature-gates=MultiCIDRServiceAllocator=false}
# how the operator authenticates (recorded as op_auth): token, a
# ServiceAccount's bearer token, as the operator does in a cluster (the
# release's Deployment); cert, the control plane's admin client certificate
# (RSA 2048), as the bench did before 20261206. A client certificate signs
# in every full TLS handshake: 6-7 ms of the operator's start at 10 clusters
# against 2.8 ms with a token, on the bench host.
OP_AUTH=${BENCH_OP_AUTH:-token}
OWN=${BENCH_OWN:-1}   # 0: no bench_own (the operator's part alone)
FULL=${BENCH_FULL:-1} # 0: bench_own alone
FLOOR=${BENCH_FLOOR:-0} # 1: bench_floor too (the API server's cost of the objects alone)
binder_pid=
for n in "${SIZES[@]}" "$MIX"; do
  [[ $n =~ ^[0-9]+$ && $n -le 5000 ]] || { echo "bench: a size is a number of clusters 0..5000, not '$n'" >&2; exit 2; }
done
[[ $OP_AUTH == token || $OP_AUTH == cert ]] || { echo "bench: BENCH_OP_AUTH is token or cert, not '$OP_AUTH'" >&2; exit 2; }
[[ ${BENCH_RESTARTS:-1} =~ ^[1-9][0-9]?$ ]] || { echo "bench: BENCH_RESTARTS is a number of restarts 1..99, not '$BENCH_RESTARTS'" >&2; exit 2; }
make -s -C "$ROOT" static build/serving_latency >&2 # the shipped binary is what we measure
export OP_BIN=${BENCH_OP_BIN:-$ROOT/build/static/multigres-op}
[ -x "$OP_BIN" ] || { echo "bench: BENCH_OP_BIN=$OP_BIN is not an executable" >&2; exit 2; }
"$CP" build >&2
export IT_LOGS=$ROOT/build/bench
source "$ROOT/tests/integration/lib.sh" # start_operator, cluster_manifest, free_ports, ...
lines=$(mktemp)
cp_dir=
cleanup() {
  binder_down
  # a run that failed while bench_own had the controllers paused: resumed,
  # or a stopped process would not take cp.sh's SIGTERM
  [ -z "$cp_dir" ] || { controllers CONT 2>/dev/null || true; stop_operator bench; MGOP_CP_DIR=$cp_dir "$CP" down >&2 || true; }
  rm -f "$lines"
}
trap cleanup EXIT
ns=bench
fig() { echo "bench $1 $2 $3 $4" | tee -a "$lines"; } # SIZE NAME VALUE UNIT
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), ${3:-1}))" "$1" "$2"; }

# cp_up CLUSTERS: a control plane with room for them (a minimal cluster has
# 10 pods, 5 of them in its cell's zone, us-east-1a, which one node in four
# has; 250 pods a node, filled to 80%), the operator's CRDs, namespace $ns
cp_up() {
  export MGOP_CP_DIR=/tmp/multigres-op-bench-$1
  export MGOP_CP_NODES=$(( 4 * ($1 / 40 + 1) )) MGOP_CP_KCM_QPS=${BENCH_KCM_QPS:-200}
  cp_dir=$MGOP_CP_DIR
  MGOP_CP_APISERVER_EXTRA_ARGS="$CP_APISERVER_ARGS" "$CP" up >&2
  source "$MGOP_CP_DIR/env"
  kubectl apply --server-side -f "$ROOT/crds.yaml" >/dev/null
  for _ in $(seq 12); do # kubectl wait fails at once on a CRD whose status is not filled yet
    kubectl wait --for=condition=Established --timeout=10s crd --all >/dev/null 2>&1 && break
    sleep 1
  done
  kubectl wait --for=condition=Established --timeout=10s crd --all >/dev/null
  new_namespace $ns
  op_identity
  if [ "$BINDER" = 1 ]; then binder_up; fi
}

# op_identity: the kubeconfig the operator runs with, op_kubeconfig. For
# BENCH_OP_AUTH=token the integration tests' operator_kubeconfig: a
# ServiceAccount of its own in $ns with a 48-hour token, bound to
# cluster-admin (the bench's webhook configuration is not the one the
# release's ClusterRole names); kubectl stays the admin
op_identity() {
  op_kubeconfig=$MGOP_KUBECONFIG
  [ "$OP_AUTH" = token ] || return 0
  op_kubeconfig=$MGOP_CP_DIR/kubeconfig-bench-operator
  operator_kubeconfig $ns multigres-op-bench "$op_kubeconfig" 48h
}

# binder_up: volumes bound by bench/pvc_binder.py (a PVC binder for
# benchmarks, several requests in flight) instead of the control plane's
# hostpath provisioner, whose single claim worker binds a few PVCs a second
# and would be what the converge time measures at 1,000 clusters. The
# StorageClass bench-prebound becomes the default; nothing claims its
# provisioner but the binder. BENCH_BINDER=0 keeps the hostpath one.
binder_up() {
  kubectl annotate storageclass standard storageclass.kubernetes.io/is-default-class- >/dev/null
  kubectl apply -f - >/dev/null <<'EOF'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: bench-prebound
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: bench.multigres.com/pre-bound
reclaimPolicy: Retain
volumeBindingMode: Immediate
allowVolumeExpansion: true
EOF
  setsid "$ROOT/bench/pvc_binder.py" bench-prebound 2>>"$IT_LOGS/pvc-binder.log" &
  binder_pid=$!
}
binder_down() { [ -z "$binder_pid" ] || { kill -- -"$binder_pid" 2>/dev/null || kill "$binder_pid" 2>/dev/null || true; binder_pid=; }; }

cp_down() { # the operator's audit lines stay in build/bench/audit-<size>.log
  stop_operator bench
  binder_down
  audit_lines '"userAgent":"multigres-op/' >"$IT_LOGS/audit-$1.log" || true
  "$CP" down >&2; cp_dir=
}

# op_start CLUSTERS: the operator ("bench"; its log build/bench/bench.log),
# tables sized for CLUSTERS, on fixed ports (the pollers start before it
# listens): op_ports picks them, op_launch starts it
op_ports() { read -r mport pport wport < <(free_ports 3); }
# op_launched: when (epoch seconds); op_exec_at: when the operator was
# exec'd, which the start figures count from (it waits for the stamp: read
# it once a start)
op_start() { op_ports; rm -f "$IT_LOGS/exec-stamp"; op_launched=$(now); op_launch "$1"; }
op_exec_at() {
  local i
  for ((i = 0; i < 50; i++)); do [ -s "$IT_LOGS/exec-stamp" ] && break; sleep 0.1; done
  [ -s "$IT_LOGS/exec-stamp" ] && { cat "$IT_LOGS/exec-stamp"; return; }
  echo "bench: no exec stamp in 5 s; counting from the launch" >&2
  echo "$op_launched"
}
op_launch() {
  local objects=$(( $1 * 32 )) series=$(( $1 * 16 ))
  [ $objects -ge 8192 ] || objects=8192
  [ $series -ge 2048 ] || series=2048
  OP_EXEC_STAMP=$IT_LOGS/exec-stamp OP_OWN_SESSION=1 start_operator bench --kubeconfig "$op_kubeconfig" --namespace $ns \
    --max-objects $objects --max-metric-series $series \
    --metrics-bind-address 127.0.0.1:$mport --health-probe-bind-address 127.0.0.1:$pport \
    --webhook-enable --webhook-bind-address 127.0.0.1:$wport \
    --webhook-service-namespace $ns --webhook-configuration-name bench-none --webhook-extra-sans 127.0.0.1 \
    --webhook-owner-deployment= $BENCH_OP_FLAGS
}
metric() { curl -s "http://127.0.0.1:$mport/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
op_mem() { # the operator's "VmRSS VmHWM" in KiB
  awk '/^VmRSS:/ {r = $2} /^VmHWM:/ {h = $2} END {print r, h}' "/proc/$(cat "$IT_LOGS/bench.pid")/status"
}
pid_cpu() { # PID: its user+system CPU seconds so far
  awk -v hz="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); print ($12 + $13) / hz}' "/proc/$1/stat"
}
op_cpu() { pid_cpu "$(cat "$IT_LOGS/bench.pid")"; } # the operator's
apiserver_cpu() { pid_cpu "$(cat "$cp_dir/pids/kube-apiserver.pid")"; }
# write_parts N: the N minimal clusters' manifests in four files, which
# apply_parts applies in parallel (four kubectl, as users' tools would)
write_parts() {
  rm -f "$IT_LOGS"/part.*
  for i in $(seq 1 "$1"); do { cluster_manifest $ns b$i; echo ---; } >>"$IT_LOGS/part.$(( i % 4 ))"; done
}
apply_parts() {
  local f p pids=()
  for f in "$IT_LOGS"/part.*; do kubectl apply -f "$f" >/dev/null & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p"; done
  rm -f "$IT_LOGS"/part.*
}
# last_applied_at: the epoch time of the operator's last object apply (its log)
last_applied_at() {
  grep -F '"msg":"applied"' "$IT_LOGS/bench.log" | tail -1 | python3 -c '
import sys, json, datetime
ts = json.loads(sys.stdin.read())["ts"]
print(datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp())'
}
# serving SECONDS PHASE: "webhook_p50 webhook_p99 healthz_p50 healthz_p99 count errors"
# (each webhook sample stays in build/bench/serving-PHASE.samples, to place the outliers)
serving() { SERVING_SAMPLES=$IT_LOGS/serving-$2.samples setsid -w "$ROOT/build/serving_latency" "$wport" "$pport" $ns "$1" 50; }
# wh_hist: the operator's own admission latency histogram, summed over its
# label sets: "answers within 2.5 ms, within 5 ms, all" (its /metrics)
wh_hist() {
  curl -s "http://127.0.0.1:$mport/metrics" | awk '
    /^multigres_operator_webhook_request_duration_seconds_bucket\{/ && /le="0.0025"/ {a += $2}
    /^multigres_operator_webhook_request_duration_seconds_bucket\{/ && /le="0.005"/ {b += $2}
    /^multigres_operator_webhook_request_duration_seconds_count\{/ {n += $2}
    END {printf "%d %d %d\n", a, b, n}'
}
# serving_timed SECONDS PHASE: serving, with the server's histogram read before
# and after into $IT_LOGS/serving-PHASE.server ("within 2.5 ms, 5 ms, all")
serving_timed() {
  local a0 b0 n0 a1 b1 n1
  read -r a0 b0 n0 < <(wh_hist)
  serving "$1" "$2" >"$IT_LOGS/serving-$2"
  read -r a1 b1 n1 < <(wh_hist)
  echo "$(( a1 - a0 )) $(( b1 - b0 )) $(( n1 - n0 ))" >"$IT_LOGS/serving-$2.server"
}
serving_figs() { # SIZE PHASE FILE
  local w50 w99 h50 h99 n e a b all
  read -r w50 w99 h50 h99 n e <"$3"
  fig "$1" webhook_p50_ms_$2 "$w50" ms; fig "$1" webhook_p99_ms_$2 "$w99" ms
  fig "$1" healthz_p50_ms_$2 "$h50" ms; fig "$1" healthz_p99_ms_$2 "$h99" ms
  # where the slow answers were slow: the client's count over 5 ms against
  # the operator's own (request read to answer queued)
  fig "$1" webhook_over_5ms_$2 "$(awk '$2 > 5 {c++} END {print c + 0}' "$3.samples")" count
  if [ -s "$3.server" ]; then
    read -r a b all <"$3.server"
    fig "$1" webhook_server_over_2_5ms_$2 "$(( all - a ))" count
    fig "$1" webhook_server_over_5ms_$2 "$(( all - b ))" count
  fi
  fig "$1" serving_requests_$2 "$n" count; fig "$1" serving_errors_$2 "$e" count
}

# audit FROM TO: the operator's requests received in [FROM, TO) (epoch
# seconds), from the audit log: "total get list watch create update patch delete
# last" (last: when the last request of the window was received, reviews
# included, -1 for none)
# (a watch counts when it is opened: the operator's watches end after their
# timeoutSeconds: 30 to 60 minutes from 3cda810 on, 4 to 5 before,
# and are opened again)
audit() {
  audit_lines '"userAgent":"multigres-op/' | python3 -c '
import json, sys, datetime
lo, hi = float(sys.argv[1]), float(sys.argv[2])
verbs = ["get", "list", "watch", "create", "update", "patch", "delete"]
n = dict.fromkeys(verbs, 0); total = 0; seen = set(); last = -1.0
for line in sys.stdin:
    try: e = json.loads(line)
    except ValueError: continue
    # a watch is logged when it starts (ResponseStarted) and again when it ends
    if e.get("auditID") in seen: continue
    seen.add(e.get("auditID"))
    t = datetime.datetime.strptime(e["requestReceivedTimestamp"][:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
    t = t.replace(tzinfo=datetime.timezone.utc).timestamp()
    if lo <= t < hi: last = max(last, t)
    # a review (selfsubjectreviews, ...) is a query with verb create, not a write
    if lo <= t < hi and not e.get("objectRef", {}).get("resource", "").endswith("reviews"):
        total += 1
        v = e.get("verb")
        if v in n: n[v] += 1
print(total, *[n[v] for v in verbs], "%.4f" % last)' "$1" "$2"
}
audit_figs() { # SIZE PREFIX FROM TO CLUSTERS
  local total get list watch create update patch delete
  read -r total get list watch create update patch delete _ < <(audit "$3" "$4")
  fig "$1" "${2}requests" "$total" count
  [ "$5" = 0 ] || fig "$1" "${2}requests_per_cluster" "$(python3 -c "print(round($total / $5, 1))")" count
  for v in get list watch create update patch delete; do fig "$1" "${2}$v" "${!v}" count; done
}

# ready_count: clusters in $ns whose Ready condition is True
ready_count() {
  local s
  s=$(kubectl get mgc -n $ns -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null) || true
  grep -c '^True$' <<<"$s" || true
}
# pvc_figs SIZE: how long binding the PVCs of $ns took, from the audit log:
# creation (by the StatefulSet controller) to the last status update (by the
# PV controller, or by bench/pvc_binder.py: pvc_binder 1), p50, p99 and max
# (whether provisioning is the bottleneck)
pvc_figs() {
  local p50 p99 max cnt
  read -r cnt p50 p99 max < <(audit_lines '"resource":"persistentvolumeclaims"' | python3 -c '
import json, sys, datetime
ns = sys.argv[1]; made, bound = {}, {}
def ts(e):
    t = datetime.datetime.strptime(e["requestReceivedTimestamp"][:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()
for line in sys.stdin:
    e = json.loads(line); o = e.get("objectRef", {})
    if e.get("stage") != "ResponseComplete" or o.get("namespace") != ns: continue
    code = e.get("responseStatus", {}).get("code", 0)
    if e["verb"] == "create" and code == 201: made[o.get("name")] = ts(e)
    elif e["verb"] in ("update", "patch") and o.get("subresource") == "status" and code == 200:
        bound[o.get("name")] = max(bound.get(o.get("name"), 0), ts(e))
d = sorted(bound[n] - made[n] for n in made if n in bound)
if not d: print(0, -1, -1, -1)
else: print(len(d), round(d[len(d) // 2], 2), round(d[min(len(d) - 1, int(len(d) * 0.99))], 2), round(d[-1], 2))' $ns)
  fig "$1" pvc_binder "$BINDER" flag
  fig "$1" pvcs_bound "$cnt" count
  fig "$1" pvc_bind_p50_seconds "$p50" s
  fig "$1" pvc_bind_p99_seconds "$p99" s
  fig "$1" pvc_bind_max_seconds "$max" s
}

# wait_ready CLUSTERS TIMEOUT: all of them Ready (kubectl wait watches them,
# which costs the API server less than polling a thousand statuses)
wait_ready() {
  kubectl wait -n $ns --for=condition=Ready mgc --all --timeout="$2s" >/dev/null 2>&1 && [ "$(ready_count)" -ge "$1" ] && return 0
  echo "bench: $(ready_count) of $1 clusters Ready after $2 s" >&2
  return 1
}
# quiet SECONDS: wait until the operator's request counter has not moved for
# SECONDS; prints the epoch time of its last move
quiet() {
  python3 - "http://127.0.0.1:$mport/metrics" "$1" <<'PY'
import sys, time, urllib.request
url, still = sys.argv[1], float(sys.argv[2])
def count():
    for l in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
        if l.startswith('multigres_operator_api_requests_total{kind="all"}'): return float(l.split()[1])
last, moved = count(), time.time()
while time.time() - moved < still:
    time.sleep(0.1)
    c = count()
    if c != last: last, moved = c, time.time()
print("%.3f" % moved)
PY
}
# first_reconcile_at: the time (epoch seconds) of the operator's log line
# "first reconcile (...) done N ms after start, C ms of CPU", C (-1 when the
# line has none), and the time of its line "full lists done ..." (the other
# clusters' turns wait for those), both waited for up to 120 s; -1 for a
# line that never came
first_reconcile_at() {
  python3 - "$IT_LOGS/bench.log" <<'PY'
import sys, time, json, datetime, re
def at(line):
    ts = json.loads(line)["ts"]
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()
deadline, first, cpu, listed = time.time() + 120, -1, -1, -1
while time.time() < deadline and (first < 0 or listed < 0):
    for line in open(sys.argv[1]):
        if '"msg":"first reconcile (' in line and ') done ' in line and first < 0: # not a turn that failed
            m = re.search(r", (\d+) ms of CPU", json.loads(line)["msg"])
            first, cpu = at(line), (m.group(1) if m else -1)
        if '"msg":"full lists done ' in line and listed < 0:
            listed = at(line)
    if first < 0 or listed < 0: time.sleep(0.1)
print("%.4f %s %.4f" % (first, cpu, listed))
PY
}

bench_size() { # N
  local n=$1 t0 t_in t1 t_last cpu0 cpu1 a0 a1 idle_from first idle_at w_from exec_at
  cp_up "$n"
  op_start "$n"
  wait_log bench '"msg":"webhook: serving certificate ' >/dev/null
  sleep 2
  write_parts "$n"
  cpu0=$(op_cpu) a0=$(apiserver_cpu) t0=$(now)
  # the serving path's figures while the N clusters converge
  serving_timed 20 busy &
  local sp=$!
  apply_parts
  t_in=$(now)
  wait_ready "$n" $(( n * 3 + 300 ))
  t1=$(now) cpu1=$(op_cpu) a1=$(apiserver_cpu)
  wait $sp
  t_last=$(last_applied_at)
  fig "$n" clusters "$n" count
  fig "$n" converge_seconds "$(elapsed "$t0" "$t1")" s
  fig "$n" applied_seconds "$(elapsed "$t0" "$t_last")" s
  fig "$n" input_seconds "$(elapsed "$t0" "$t_in")" s
  fig "$n" cpu_seconds "$(elapsed "$cpu0" "$cpu1" 2)" s
  fig "$n" apiserver_cpu_seconds "$(elapsed "$a0" "$a1" 1)" s
  pvc_figs "$n"
  audit_figs "$n" api_ "$t0" "$t1" "$n"
  idle_from=$(quiet 5)
  fig "$n" settle_seconds "$(elapsed "$t1" "$idle_from")" s
  sleep 60
  audit_figs "$n" idle_ "$idle_from" "$(python3 -c "print(float('$idle_from') + 60)")" 0
  serving_timed 15 idle
  serving_figs "$n" busy "$IT_LOGS/serving-busy"
  serving_figs "$n" idle "$IT_LOGS/serving-idle"
  read -r rss hwm < <(op_mem)
  fig "$n" rss_kib "$rss" KiB
  fig "$n" hwm_kib "$hwm" KiB
  # restart with the N clusters present (the converge's log stays in
  # build/bench/converge-<size>.log, the first restart's in restart-<size>.log)
  stop_operator bench
  cp "$IT_LOGS/bench.log" "$IT_LOGS/converge-$n.log"
  w_from=$(now)
  op_start "$n"
  exec_at=$(op_exec_at)
  read -r first first_cpu listed < <(first_reconcile_ms "$exec_at")
  quiet 5 >/dev/null
  fig "$n" restart_full_tls_handshakes "$(metric 'multigres_operator_tls_handshakes_total{resumed="false"}')" count
  # w_from is after the old operator stopped: the window's requests are the new one's
  read -r _ _ _ _ c u p d idle_at < <(audit "$w_from" "$(now)")
  fig "$n" restart_to_idle_seconds "$(elapsed "$exec_at" "$idle_at")" s
  fig "$n" restart_writes $(( c + u + p + d )) count
  read -r rss hwm < <(op_mem)
  fig "$n" restart_hwm_kib "$hwm" KiB
  cp "$IT_LOGS/bench.log" "$IT_LOGS/restart-$n.log" # the restart whose writes count (the next starts overwrite bench.log)
  start_samples "$n" "" "$first" "$first_cpu" "$listed" "$(exec_ms "$exec_at")"
  start_lists_figs "$n" "$op_launched"
  cp_down "$n"
}
# start_samples N PREFIX [MS CPU LISTED EXEC]: the start figures (PREFIX
# start_...) of RESTARTS restarts, the first of them the caller's when it
# passes its MS CPU LISTED EXEC: one is a noisy sample (47 to 73 ms at 10
# clusters on one host in one evening), so each figure is the median, with
# the least and the most for the first reconcile
start_samples() {
  local n=$1 pre=$2 samples=() cpus=() lists=() execs=() k ms cpu listed first lo hi exec_at
  [ $# -lt 6 ] || samples=("$3") cpus=("$4") lists=("$5") execs=("$6")
  for (( k = ${#samples[@]}; k < $(restarts "$n"); k++ )); do
    stop_operator bench
    op_start "$n"
    exec_at=$(op_exec_at)
    read -r ms cpu listed < <(first_reconcile_ms "$exec_at")
    samples+=("$ms") cpus+=("$cpu") lists+=("$listed") execs+=("$(exec_ms "$exec_at")")
    quiet 5 >/dev/null
  done
  read -r first lo hi < <(median_least_most "${samples[@]}")
  read -r cpu _ _ < <(median_least_most "${cpus[@]}")
  read -r listed _ _ < <(median_least_most "${lists[@]}")
  fig "$n" "${pre}start_to_first_reconcile_cpu_ms" "$cpu" ms
  fig "$n" "${pre}start_exec_ms" "$(median_least_most "${execs[@]}" | cut -d' ' -f1)" ms
  fig "$n" "${pre}start_to_full_lists_ms" "$listed" ms
  fig "$n" "${pre}start_to_first_reconcile_ms" "$first" ms
  fig "$n" "${pre}start_to_first_reconcile_ms_min" "$lo" ms
  fig "$n" "${pre}start_to_first_reconcile_ms_max" "$hi" ms
  fig "$n" "${pre}start_to_first_reconcile_samples" "${#samples[@]}" count
}
# start_lists_figs N LAUNCH: the floor under start_to_first_reconcile. The
# LISTs the operator launched at LAUNCH made since (the audit log's: a
# start lists every kind once, and a relist in the seconds until now would
# count too), replayed by bench/list_replay.py one after another on
# one connection, 5 rounds, with the operator idle:
#   start_lists            how many
#   start_lists_kib        their bodies (compact JSON, as the operator reads them)
#   start_lists_apiserver_cpu_ms  kube-apiserver's CPU to serve them (the
#                          median round): on C cores no first reconcile
#                          comes sooner than this / C
#   start_lists_wall_ms    that round's wall time
start_lists_figs() {
  local lists bytes cpu wall
  audit_lines '"userAgent":"multigres-op/' | python3 -c '
import json, sys, datetime
lo = float(sys.argv[1]); seen = set()
for line in sys.stdin:
    try: e = json.loads(line)
    except ValueError: continue
    if e.get("verb") != "list" or e.get("auditID") in seen: continue
    seen.add(e.get("auditID"))
    t = datetime.datetime.strptime(e["requestReceivedTimestamp"][:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
    if t.replace(tzinfo=datetime.timezone.utc).timestamp() >= lo: print(e["requestURI"])' "$2" >"$IT_LOGS/start-lists-$1"
  read -r lists bytes cpu wall < <("$ROOT/bench/list_replay.py" "$op_kubeconfig" "$(cat "$cp_dir/pids/kube-apiserver.pid")" 5 \
    <"$IT_LOGS/start-lists-$1")
  fig "$1" start_lists "$lists" count
  fig "$1" start_lists_kib "$(( bytes / 1024 ))" KiB
  fig "$1" start_lists_apiserver_cpu_ms "$cpu" ms
  fig "$1" start_lists_wall_ms "$wall" ms
}
# median_least_most VALUE...: "MEDIAN LEAST MOST" of the numbers
median_least_most() { printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)], v[1], v[NR]}'; }
# restarts N: how many restarts sample start_to_first_reconcile at N
# clusters (BENCH_RESTARTS, default 5; 1 beyond 100 clusters, where each
# waits over a minute for the operator to go idle)
restarts() { if [ -n "${BENCH_RESTARTS:-}" ]; then echo "$BENCH_RESTARTS"; elif [ "$1" -le 100 ]; then echo 5; else echo 1; fi; }
# exec_ms EXEC_AT: ms from the script's launch of the operator to its exec
# (the harness's own part, left out of the start figures)
exec_ms() { python3 -c 'import sys; print(round((float(sys.argv[2]) - float(sys.argv[1])) * 1000))' "$op_launched" "$1"; }
# first_reconcile_ms LAUNCH: "MS CPU LISTED": ms from LAUNCH (epoch seconds)
# to the operator's "first reconcile" log line, its CPU ms then, and ms to
# its "full lists done" line (-1: none within 120 s, or no CPU in the line).
# The times are the log lines' own, so the reader need not be there when
# they are written: it starts a second after LAUNCH, when the start it
# measures is over. A python3 start costs 0.3 s of CPU on the 2-core
# machine, and one begun at LAUNCH took a core from the operator and
# kube-apiserver while they started: at 10 clusters, 35 to 40 ms alone,
# 52 to 74 ms beside it (up to 26702f4; bench/results/ab/20261207-start-harness)
first_reconcile_ms() {
  sleep 1
  first_reconcile_at >"$IT_LOGS/first-reconcile"
  python3 -c 'import sys; t, c, l = (open(sys.argv[1]).read().split() + ["-1", "-1", "-1"])[:3]
ms = lambda x: round((float(x) - float(sys.argv[2])) * 1000) if float(x) > 0 else -1
print(ms(t), c, ms(l))' "$IT_LOGS/first-reconcile" "$1"
}

# controllers STOP|CONT: pauses or resumes the control plane's controllers
# (kube-controller-manager, kube-scheduler, kwok), so the API server serves
# the one client being measured
controllers() {
  local p
  for p in kube-controller-manager kube-scheduler kwok; do kill -"$1" "$(cat "$cp_dir/pids/$p.pid")"; done
}

# bench_own CLUSTERS: the operator's own part alone. On a 2-core machine
# the control plane's controllers are the API server's main load while N
# clusters converge (kube-controller-manager makes about 4 requests for each
# of the operator's: pods, ReplicaSets, Endpoints, Events), so
# applied_seconds measures the API server's CPU as much as the operator.
# Here the same N clusters go to a control plane whose controllers are
# paused (SIGSTOP: kube-controller-manager, kube-scheduler, kwok), so the
# API server serves the operator alone; nothing becomes Ready, and the run
# ends when every cluster has had its turn and no object was applied for
# 10 s:
#   own_applied_seconds    apply -> the operator's last object apply
#   own_objects_applied    the objects it applied (23 a minimal cluster)
#   own_cpu_seconds, own_hwm_kib, own_api_requests(_per_cluster)
#   own_apiserver_cpu_seconds  kube-apiserver's CPU over the same time
bench_own() {
  local n=$1 t0 t_last cpu0 cpu1 a0 a1 p
  BINDER=0 cp_up "$n"
  controllers STOP
  op_start "$n"
  wait_log bench '"msg":"webhook: serving certificate ' >/dev/null
  write_parts "$n"
  cpu0=$(op_cpu) a0=$(apiserver_cpu) t0=$(now)
  apply_parts
  python3 - "$IT_LOGS/bench.log" "$n" $(( n * 2 + 120 )) <<'PY' || { echo "bench: own part of $n: not every cluster had its turn" >&2; return 1; }
import json, sys, time
log, n, deadline = sys.argv[1], int(sys.argv[2]), time.time() + int(sys.argv[3])
count, moved = -1, time.time()
while time.time() < deadline:
    applied, names = 0, set()
    for line in open(log):
        if '"msg":"applied"' in line: applied += 1
        elif '"msg":"reconciled"' in line: names.add(json.loads(line)["name"])
    if applied != count: count, moved = applied, time.time()
    if len(names) >= n and time.time() - moved >= 10: sys.exit(0)
    time.sleep(0.5)
sys.exit(1)
PY
  cpu1=$(op_cpu) a1=$(apiserver_cpu)
  t_last=$(last_applied_at)
  fig "$n" own_applied_seconds "$(elapsed "$t0" "$t_last")" s
  fig "$n" own_objects_applied "$(grep -c -F '"msg":"applied"' "$IT_LOGS/bench.log")" count
  fig "$n" own_cpu_seconds "$(elapsed "$cpu0" "$cpu1" 2)" s
  fig "$n" own_apiserver_cpu_seconds "$(elapsed "$a0" "$a1" 1)" s
  audit_figs "$n" own_api_ "$t0" "$t_last" "$n"
  read -r _ hwm < <(op_mem)
  fig "$n" own_hwm_kib "$hwm" KiB
  cp "$IT_LOGS/bench.log" "$IT_LOGS/own-$n.log"
  [ "${BENCH_OWN_RESTARTS:-0}" != 1 ] || start_samples "$n" own_ # the start, on this quiet control plane
  controllers CONT
  cp_down "own-$n"
}

# the templated mix: MIX clusters whose cell takes CellTemplate bench-cell,
# and MIX/2 minimal ones; then one change of the template
bench_mix() {
  local n=$1 m=$(( $1 / 2 )) t0 t1 t2 t3 s
  cp_up $(( n + m ))
  op_start $(( n + m ))
  wait_log bench '"msg":"webhook: serving certificate ' >/dev/null
  template() { # CPU
    printf 'apiVersion: multigres.com/v1alpha1\nkind: CellTemplate\nmetadata: {name: bench-cell, namespace: %s}\n' $ns
    printf 'spec:\n  multigateway:\n    replicas: 1\n    resources: {requests: {cpu: %s, memory: 64Mi}}\n' "$1"
  }
  template 100m | kubectl apply -f - >/dev/null
  {
    for i in $(seq 1 "$n"); do cluster_manifest $ns t$i | sed 's/^      zone: us-east-1a$/&\n      cellTemplate: bench-cell/'; echo ---; done
    for i in $(seq 1 "$m"); do cluster_manifest $ns m$i; echo ---; done
  } | kubectl apply -f - >/dev/null
  t0=$(now)
  wait_ready $(( n + m )) $(( (n + m) * 3 + 300 ))
  t1=$(now)
  fig mix clusters $(( n + m )) count
  fig mix template_consumers "$n" count
  fig mix converge_seconds "$(elapsed "$t0" "$t1")" s
  audit_figs mix api_ "$t0" "$t1" $(( n + m ))
  quiet 5 >/dev/null
  t2=$(now)
  template 200m | kubectl apply -f - >/dev/null
  for _ in $(seq 600); do
    s=$(kubectl get deploy -n $ns -l app.kubernetes.io/component=multigateway \
      -o jsonpath='{range .items[*]}{.spec.template.spec.containers[0].resources.requests.cpu}{"\n"}{end}')
    [ "$(grep -c '^200m$' <<<"$s" || true)" -ge "$n" ] && break
    sleep 0.2
  done
  t3=$(now)
  [ "$(grep -c '^200m$' <<<"$s" || true)" -ge "$n" ] || { echo "bench: the template change reached $(grep -c '^200m$' <<<"$s" || true) of $n consumers" >&2; return 1; }
  fig mix template_change_seconds "$(elapsed "$t2" "$t3" 2)" s
  audit_figs mix template_change_ "$t2" "$t3" "$n"
  read -r rss hwm < <(op_mem)
  fig mix hwm_kib "$hwm" KiB
  cp_down mix
}

# bench_floor CLUSTERS: what the API server costs for the objects alone,
# with no operator. The N minimal clusters' 23 objects each, as `render`
# writes them, go to a control plane whose controllers are paused, applied
# server-side by 8 kubectl at once; then the API server's and etcd's CPU
# per object is the floor under own_apiserver_cpu_seconds (which also pays
# for status writes, the finalizer, Secrets, PVCs and Events): on a machine
# of C cores no client can have them applied in less than
# floor_min_seconds = (API server + etcd CPU) / C. BENCH_FLOOR=1 runs it.
#   floor_objects, floor_seconds (8 kubectl), floor_apiserver_cpu_seconds,
#   floor_etcd_cpu_seconds, floor_apiserver_ms_per_object, floor_min_seconds
bench_floor() {
  local n=$1 d=$IT_LOGS/floor a0 a1 e0 e1 t0 t1 objs ok i p
  BINDER=0 cp_up "$n"
  controllers STOP
  rm -rf "$d"; mkdir -p "$d"
  for ((i = 1; i <= n; i += 10)); do # render takes a few clusters at a time
    for p in $(seq "$i" $(( i + 9 < n ? i + 9 : n ))); do cluster_manifest $ns f$p; echo ---; done >"$d/in.yaml"
    "$OP_BIN" render -n $ns -f "$d/in.yaml" | grep '^{' >>"$d/objects.jsonl"
  done
  objs=$(wc -l <"$d/objects.jsonl")
  (cd "$d" && split -n l/8 -d objects.jsonl part. && for p in part.0?; do sed 's/$/\n---/' "$p" >"$p.yaml"; done)
  a0=$(apiserver_cpu) e0=$(pid_cpu "$(cat "$cp_dir/pids/etcd.pid")") t0=$(now)
  for p in "$d"/part.0?.yaml; do kubectl apply --server-side --field-manager=bench-floor -f "$p" >"$p.out" 2>&1 & done
  wait
  t1=$(now) a1=$(apiserver_cpu) e1=$(pid_cpu "$(cat "$cp_dir/pids/etcd.pid")")
  ok=$(cat "$d"/part.0?.yaml.out | grep -c 'serverside-applied$' || true)
  [ "$ok" = "$objs" ] || { echo "bench: floor: $ok of $objs objects applied (see $d)" >&2; return 1; }
  fig "$n" floor_objects "$objs" count
  fig "$n" floor_seconds "$(elapsed "$t0" "$t1")" s
  fig "$n" floor_apiserver_cpu_seconds "$(elapsed "$a0" "$a1" 1)" s
  fig "$n" floor_etcd_cpu_seconds "$(elapsed "$e0" "$e1" 1)" s
  fig "$n" floor_apiserver_ms_per_object "$(python3 -c "print(round(($a1 - $a0) * 1000 / $objs, 2))")" ms
  fig "$n" floor_min_seconds "$(python3 -c "print(round(($a1 - $a0 + $e1 - $e0) / $(nproc), 1))")" s
  controllers CONT
  cp_down "floor-$n"
}

mkdir -p "$ROOT/bench/results"
commit=$(git -C "$ROOT" rev-parse HEAD) # the binary's, even if HEAD moves during the run
if [ -n "$BENCH_OP_BIN" ]; then # the measured binary's own commit, from its version (0.1.0+<commit>)
  v=$("$OP_BIN" --version)
  commit=${v##*+}
fi
out="$ROOT/bench/results/$(date -u +%Y%m%d)-${commit:0:7}.json"
# a second run of one commit on one day (an A/B of a flag, say) keeps the
# first's file: its name carries the time too
[ ! -e "$out" ] || out="${out%.json}-$(date -u +%H%M%S).json"
# the JSON is rewritten after every size, so a size that fails keeps the others
save() {
  python3 - "$lines" "$out" "$commit" "$(nproc)" "$BENCH_OP_FLAGS" "$CP_APISERVER_ARGS" "$OP_AUTH" <<'PY'
import json, sys, time
runs = {}
for l in open(sys.argv[1]):
    p = l.split()
    if len(p) == 5 and p[0] == "bench":
        try: v = float(p[3])
        except ValueError: v = p[3]
        runs.setdefault(p[1], {})[p[2]] = {"value": v, "unit": p[4]}
# the CPU's model beside the count: on two hosts of 2 CPUs the same 100-cluster
# converge cost kube-apiserver 101.6 and 60.1 s of CPU
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
res = {"commit": sys.argv[3], "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
       "cpus": int(sys.argv[4]), "cpu_model": model, "runs": runs}
if sys.argv[5]: res["op_flags"] = sys.argv[5] # BENCH_OP_FLAGS: an A/B's side
res["cp_apiserver_args"] = sys.argv[6] # BENCH_CP_APISERVER_ARGS ("": a stock kube-apiserver)
res["op_auth"] = sys.argv[7] # BENCH_OP_AUTH: token (a ServiceAccount's) or cert (admin's client certificate)
json.dump(res, open(sys.argv[2], "w"), indent=1, sort_keys=True)
PY
}
fig all binary_bytes "$(stat -c %s "$OP_BIN")" bytes
rs=$(date +%s%N); "$OP_BIN" render -f "$ROOT/config/samples/minimal.yaml" >/dev/null; re=$(date +%s%N)
fig all render_ms $(( (re - rs) / 1000000 )) ms
for n in "${SIZES[@]}"; do
  [ "$FULL" = 0 ] || { bench_size "$n"; save; }
  [ "$OWN" = 0 ] || { bench_own "$n"; save; }
  [ "$FLOOR" = 0 ] || { bench_floor "$n"; save; }
done
[ "$MIX" = 0 ] || { bench_mix "$MIX"; save; }
echo "bench: results in ${out#$ROOT/}" >&2
"$ROOT/bench/plot" "$out" >&2
