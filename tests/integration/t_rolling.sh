#!/usr/bin/env bash
# Rolling pool pods and targeted scale-down. CONTRACT TEST for the
# switch-over: multiadmin is the double tests/integration/multiadmin_contract.py
# (SwitchPrimary's REST shape from Multigres proto/multiadminservice.proto);
# the roles come from a real etcd this test runs as the global topology, with
# pooler records written the way multipooler registers itself.
#   1. a pool's resources change on a live cluster (a pool in two cells, 2 pods
#      each): every pool pod is replaced, one at a time across both cells
#      (replayed from a pod watch: never two pods down at once), the PRIMARY
#      (ordinal 1 of the second cell's StatefulSet) last, switch-primary asked
#      before its deletion (the deletion order from the API server's audit
#      log); RollingUpdate True while rolling, False/UpToDate after; Ready.
#   2. multiadmin absent: the primary is replaced last anyway, and a Warning
#      Event SwitchPrimaryFailed says why.
#   3. scale-down 2 -> 1 with the primary on the highest ordinal: multiadmin
#      refuses, the StatefulSet keeps 2 (RollingUpdate ScaleDownHeld, Warning
#      ScaleDownHeld); when it accepts (and the primary moves), the scale-down
#      happens, after the switch-primary call, and the old primary's ordinal
#      is what goes only once it is no longer the primary.
#   4. a roll reverted while a replica drains (--drain-grace 60s): that pod,
#      whose pooler record is gone, is replaced at once (DrainCancelled), no
#      other pod is touched, and no drain annotation is left.
#   Every pod the operator removes is drained first: its annotations go
#   requested -> draining -> ready-for-deletion (replayed from the pod watch)
#   and its pooler record leaves the topology before it is deleted.
#   Throughout, the Shard's status.podRoles and primaryCell follow the pooler
#   records (read every --pooler-role-interval, 2s here): every registered
#   pod with its role, the primary's cell, and no pod scaled away.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-rolling c=roll
T="$ROOT/tests/integration/topo_etcd.py"
etcd_bins=("${MGOP_CACHE:-$HOME/.cache/multigres-op}"/controlplane/*/bin/etcd)
etcd_bin=${etcd_bins[0]}
[ -x "$etcd_bin" ] || fail "no etcd binary in ${MGOP_CACHE:-$HOME/.cache/multigres-op}/controlplane"
dir=$IT_LOGS/rolling
rm -rf "$dir"; mkdir -p "$dir"
read -r ep epeer mport < <(free_ports 3)
U=http://127.0.0.1:$ep root=/it/rolling
state=$dir/ma.state reqs=$dir/ma.requests
echo none >"$state"; echo ok >"$state.switch"; : >"$state.hook"; : >"$reqs"

"$etcd_bin" --name roll --data-dir "$dir/etcd.data" \
  --listen-client-urls "$U" --advertise-client-urls "$U" \
  --listen-peer-urls "http://127.0.0.1:$epeer" --initial-advertise-peer-urls "http://127.0.0.1:$epeer" \
  --initial-cluster "roll=http://127.0.0.1:$epeer" >"$dir/etcd.log" 2>&1 &
etcd_pid=$!
ma_pid=
start_ma() {
  python3 "$(dirname "$0")/multiadmin_contract.py" "$mport" "$state" "$reqs" 2>>"$dir/ma.log" &
  ma_pid=$!
  wait_for 10 "the multiadmin double listens" python3 -c "import socket; socket.create_connection(('127.0.0.1', $mport), 1)" ||
    fail "multiadmin double did not start"
}
stop_ma() { [ -n "$ma_pid" ] && { kill "$ma_pid" 2>/dev/null || true; wait "$ma_pid" 2>/dev/null || true; }; ma_pid=; }
watch_pid=
cleanup() {
  stop_operator rolling; stop_ma
  [ -n "$watch_pid" ] && { kill "$watch_pid" 2>/dev/null || true; wait "$watch_pid" 2>/dev/null || true; }
  kill "$etcd_pid" 2>/dev/null || true; wait "$etcd_pid" 2>/dev/null || true
}
trap cleanup EXIT
wait_for 30 "etcd answers" python3 "$T" "$U" keys /x || fail "etcd did not start: $(tail -5 "$dir/etcd.log")"
start_ma

new_namespace $ns
start_operator rolling --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns --topology-registration=true \
  --multiadmin-address "127.0.0.1:$mport" --metrics-bind-address 127.0.0.1:0 --pooler-role-interval 2s
wait_log rolling '"msg":"serving /metrics on 127.0.0.1:0 (port ' || fail "no metrics server"
metrics_port=$(grep -o 'serving /metrics on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/rolling.log" | grep -o '[0-9]*$')

# cluster CPU REPLICAS: a pool in zone-a and zone-b
cluster() {
  cat <<YAML
apiVersion: multigres.com/v1alpha1
kind: MultigresCluster
metadata: {name: $c, namespace: $ns}
spec:
  globalTopoServer:
    external: {endpoints: ["$U"], rootPath: $root}
  cells:
  - {name: zone-a, zone: us-east-1a}
  - {name: zone-b, zone: us-east-1a}
$(databases_yaml)
      - name: "0-inf"
        spec:
          pools:
            main:
              type: readWrite
              cells: [zone-a, zone-b]
              replicasPerCell: $2
              postgres:
                resources:
                  requests: {cpu: $1, memory: 256Mi}
                  limits: {memory: 512Mi}
YAML
}
gen() { jget -n $ns mgc $c -o jsonpath='{.metadata.generation}'; }
ready_at() { [ "$(jget -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}/{.status.observedGeneration}')" = "True/$1" ]; }
shard=
find_shard() { shard=$(jget -n $ns shard -l multigres.com/cluster=$c -o jsonpath='{.items[0].metadata.name}'); [ -n "$shard" ]; }
rcond() { jget -n $ns shard "$shard" -o jsonpath="{.status.conditions[?(@.type==\"RollingUpdate\")].$1}"; }
sel="multigres.com/cluster=$c,app.kubernetes.io/component=shard-pool"
sts_of() { jget -n $ns sts -l "$sel,multigres.com/cell=$1" -o jsonpath='{.items[0].metadata.name}'; }
pods_cpu() { jget -n $ns pods -l "$sel" -o jsonpath='{range .items[*]}{.metadata.name}={.spec.initContainers[?(@.name=="postgres")].resources.requests.cpu}{"\n"}{end}' | sort; }
gauge() {
  local m; m=$(curl -s "http://127.0.0.1:$metrics_port/metrics")
  grep "^multigres_operator_rolling_update_in_progress{shard=\"$shard\",namespace=\"$ns\"}" <<<"$m" | awk '{print $2}'
}
# the Shard's podRoles as "pod=ROLE ..." (sorted) and primaryCell
roles() {
  jget -n $ns shard "$shard" -o jsonpath='{.status.podRoles}' |
    python3 -c 'import json, sys; d = json.loads(sys.stdin.read() or "{}"); print(" ".join("%s=%s" % kv for kv in sorted(d.items())))'
}
roles_are() { [ "$(roles)" = "$1" ] && [ "$(jget -n $ns shard "$shard" -o jsonpath='{.status.primaryCell}')" = "$2" ]; }
sorted_words() { tr ' ' '\n' <<<"$*" | LC_ALL=C sort | tr '\n' ' ' | sed 's/ $//'; }
events() { jget -n $ns events.events.k8s.io --field-selector regarding.name="$shard" -o jsonpath='{range .items[*]}{.type} {.reason}: {.note}{"\n"}{end}'; }
register() { # PRIMARY_POD: every pool pod registered, that one PRIMARY
  local cell s i
  for cell in zone-a zone-b; do
    s=$(sts_of $cell)
    for i in 0 1; do
      python3 "$T" "$U" put-pooler $root $cell "$s-$i" "$([ "$s-$i" = "$1" ] && echo PRIMARY || echo REPLICA)"
    done
  done
}
# the operator's deletions of pool pods since SINCE, in order: "TIME operator POD" (the audit log)
deletions() {
  python3 - "$MGOP_AUDIT_LOG" "$1" "$ns" <<'PY'
import json, sys, datetime
path, since, ns = sys.argv[1], float(sys.argv[2]), sys.argv[3]
for line in open(path):
    try: e = json.loads(line)
    except ValueError: continue
    o = e.get("objectRef", {})
    if e.get("stage") != "ResponseComplete" or e.get("verb") != "delete" or o.get("resource") != "pods" or o.get("namespace") != ns:
        continue
    if e.get("responseStatus", {}).get("code", 0) >= 300: continue
    t = datetime.datetime.strptime(e["requestReceivedTimestamp"][:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp()
    if t >= since:
        if e.get("userAgent", "").startswith("multigres-op/"):
            print("%.6f operator %s" % (t, o.get("name")))
PY
}
# when POD was first deleted since SINCE, by anyone (the StatefulSet controller on a scale-down)
kubectl_deletions() {
  python3 - "$MGOP_AUDIT_LOG" "$1" "$ns" "$2" <<'PY'
import json, sys, datetime
path, since, ns, pod = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
for line in open(path):
    try: e = json.loads(line)
    except ValueError: continue
    o = e.get("objectRef", {})
    if e.get("stage") != "ResponseComplete" or e.get("verb") != "delete" or o.get("resource") != "pods" or o.get("namespace") != ns or o.get("name") != pod:
        continue
    t = datetime.datetime.strptime(e["requestReceivedTimestamp"][:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp()
    if t >= since:
        print("%.6f" % t); break
PY
}
switch_times() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["path"].endswith("/switch-primary"): print("%.6f %s" % (r["t"], r["path"]))' "$reqs"; }
# watch WATCHFILE: the most pool pods down (absent, terminating or not Ready) at once
max_down() {
  python3 - "$1" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
dec, i, up, names, worst = json.JSONDecoder(), 0, {}, set(), 0
while True:
    while i < len(text) and text[i].isspace(): i += 1
    if i >= len(text): break
    ev, i = dec.raw_decode(text, i)
    o = ev["object"]; n = o["metadata"]["name"]
    ok = ev["type"] != "DELETED" and not o["metadata"].get("deletionTimestamp") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in o.get("status", {}).get("conditions", []))
    if ev["type"] in ("ADDED",) and not names.issuperset([n]) and ok: names.add(n)
    up[n] = ok
    worst = max(worst, sum(1 for k in names if not up.get(k)))
print(worst)
PY
}
# drain_seq WATCHFILE: per pod, the drain.multigres.com/state values it showed
# (in order, repeats dropped) until it was deleted: "POD s1,s2,...". A pod
# that was never Ready and never annotated is left out: under load the test
# control plane sometimes deletes a just-created replacement (not the
# operator: the audit log shows one operator deletion per pod), and the
# StatefulSet makes it again.
drain_seq() {
  python3 - "$1" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
dec, i, seq, done, ready = json.JSONDecoder(), 0, {}, set(), set()
while True:
    while i < len(text) and text[i].isspace(): i += 1
    if i >= len(text): break
    ev, i = dec.raw_decode(text, i)
    o = ev["object"]; n = o["metadata"]["name"]; uid = o["metadata"]["uid"]
    if uid in done: continue
    if any(c["type"] == "Ready" and c["status"] == "True" for c in o.get("status", {}).get("conditions", [])): ready.add(uid)
    st = (o["metadata"].get("annotations") or {}).get("drain.multigres.com/state")
    if st and (not seq.get(uid) or seq[uid][-1] != st): seq.setdefault(uid, []).append(st)
    if ev["type"] == "DELETED" or o["metadata"].get("deletionTimestamp"):
        done.add(uid)
        if uid in ready or seq.get(uid):
            print(n, ",".join(seq.get(uid, [])) or "-")
PY
}
start_watch() {
  kubectl get pods -n $ns -l "$sel" --watch --output-watch-events -o json >"$1" 2>/dev/null &
  watch_pid=$!
  sleep 2
}
stop_watch() { kill "$watch_pid" 2>/dev/null || true; wait "$watch_pid" 2>/dev/null || true; watch_pid=; }

# ---- 1. a resource change rolls every pool pod, the primary last
cluster 100m 2 | kubectl apply -f - >/dev/null
wait_for 180 "$c Ready" ready_at 1 || fail "$c never Ready: $(jget -n $ns mgc $c -o jsonpath='{.status.conditions}')"
wait_for 30 "the Shard" find_shard || fail "no Shard"
[ "$(rcond status)/$(rcond reason)" = False/UpToDate ] || fail "RollingUpdate before any change: $(rcond status)/$(rcond reason): $(rcond message)"
[ "$(gauge)" = 0 ] || fail "rolling gauge while idle: '$(gauge)'"
sa=$(sts_of zone-a) sb=$(sts_of zone-b)
primary=$sb-1
[ -z "$(roles)" ] || fail "podRoles before any pooler registered: $(roles)"
register "$primary"
want=$(sorted_words "$sa-0=REPLICA" "$sa-1=REPLICA" "$sb-0=REPLICA" "$sb-1=PRIMARY")
wait_for 30 "podRoles from the pooler records" roles_are "$want" zone-b ||
  fail "podRoles/primaryCell: '$(roles)' / '$(jget -n $ns shard "$shard" -o jsonpath='{.status.primaryCell}')', want '$want' / zone-b"
note "podRoles: $(roles); primaryCell zone-b"
start_watch "$dir/watch1.json"
t1=$(date +%s.%N)
cluster 120m 2 | kubectl apply -f - >/dev/null
wait_for 60 "RollingUpdate True" sh -c "[ \"\$(kubectl get -n $ns shard $shard -o jsonpath='{.status.conditions[?(@.type==\"RollingUpdate\")].status}')\" = True ]" ||
  fail "RollingUpdate never True: $(rcond reason): $(rcond message)"
note "rolling: $(rcond message)"
wait_for 240 "$c Ready at generation 2" ready_at 2 || fail "not Ready after the change: $(rcond message); $(jget -n $ns mgc $c -o jsonpath='{.status.message}')"
wait_for 30 "RollingUpdate False" sh -c "[ \"\$(kubectl get -n $ns shard $shard -o jsonpath='{.status.conditions[?(@.type==\"RollingUpdate\")].reason}')\" = UpToDate ]" ||
  fail "RollingUpdate after the roll: $(rcond reason): $(rcond message)"
[ "$(rcond message)" = "4/4 pods updated" ] || fail "RollingUpdate message: $(rcond message)"
sleep 1; stop_watch
cpus=$(pods_cpu)
[ "$cpus" = "$sa-0=120m
$sa-1=120m
$sb-0=120m
$sb-1=120m" ] || fail "pods not all replaced: $cpus"
dels=$(deletions "$t1")
note "deletions: $(awk '{print $2":"$3}' <<<"$dels" | tr '\n' ' ')"
[ "$(awk '$2=="operator"{print $3}' <<<"$dels" | sort | tr '\n' ' ')" = "$sa-0 $sa-1 $sb-0 $sb-1 " ] || fail "each pod deleted once by the operator: $dels"
[ "$(awk '{print $3}' <<<"$dels" | tail -1)" = "$primary" ] || fail "the primary $primary was not replaced last: $dels"
[ "$(awk 'NR == 1 {print $3}' <<<"$dels")" != "$sa-0" ] || fail "ordinal 0 of the first StatefulSet went first although roles are known: $dels"
sw=$(switch_times)
[ "$(wc -l <<<"$sw")" = 1 ] && [ -n "$sw" ] || fail "want one switch-primary call, got: $sw"
[[ $sw == *"/api/v1/shards/postgres/default/0-inf/switch-primary" ]] || fail "switch-primary path: $sw"
body=$(python3 -c 'import json,sys
print([json.loads(l)["body"] for l in open(sys.argv[1]) if json.loads(l)["path"].endswith("/switch-primary")][-1])' "$reqs")
[[ $body == *"'reason': 'multigres-operator: replacing pod $primary'"* && $body == *"'catchupTimeout': '1.5s'"* ]] || fail "switch-primary body: $body"
tp=$(awk 'END {print $1}' <<<"$dels") tprev=$(awk '{prev = last; last = $1} END {print prev}' <<<"$dels") ts=${sw%% *}
python3 -c "import sys; a,b,c=map(float,sys.argv[1:]); sys.exit(0 if a < b < c else 1)" "$tprev" "$ts" "$tp" ||
  fail "switch-primary ($ts) not between the last replica's deletion ($tprev) and the primary's ($tp)"
down=$(max_down "$dir/watch1.json")
[ "$down" = 1 ] || fail "pool pods down at once: $down (want 1)"
evs=$(events)
grep -q "^Normal PrimarySwitched: multiadmin switched the primary away from pod $primary" <<<"$evs" || fail "no PrimarySwitched Event: $evs"
[ "$(grep -c '^Normal RollingUpdate: replacing pod' <<<"$evs")" = 4 ] || fail "want 4 RollingUpdate Events: $evs"
# each pod drained before it went: requested, draining, ready-for-deletion; its pooler record gone
seq=$(drain_seq "$dir/watch1.json" | sort)
[ "$seq" = "$sa-0 requested,draining,ready-for-deletion
$sa-1 requested,draining,ready-for-deletion
$sb-0 requested,draining,ready-for-deletion
$sb-1 requested,draining,ready-for-deletion" ] || fail "drain annotations before the deletions: $seq"
[ "$(grep -c '^Normal DrainRequested: drain of pod .* requested (replacing it' <<<"$evs")" = 4 ] || fail "want 4 DrainRequested Events: $evs"
grep -q "^Normal DrainRequested: drain of pod $primary requested (replacing it; it is the primary)" <<<"$evs" ||
  fail "the primary's DrainRequested Event does not say so: $evs"
left=$(python3 "$T" "$U" keys "$root/poolers/")
[ -z "$left" ] || fail "pooler records of drained pods left in the topology: $left"
[ "$(gauge)" = 0 ] || fail "rolling gauge after the roll: '$(gauge)'"
note "roll: 4 pods replaced one at a time (at most $down down), primary $primary last, switch-primary before it"

# ---- 2. multiadmin absent: the primary is replaced anyway, a Warning says so
register "$primary" # the new pods register, as their multipoolers do at start
wait_for 30 "podRoles from the new pods' records" roles_are "$want" zone-b || fail "podRoles after re-registering: $(roles)"
stop_ma
start_watch "$dir/watch2.json"
t2=$(date +%s.%N)
cluster 130m 2 | kubectl apply -f - >/dev/null
wait_for 240 "$c Ready at generation 3" ready_at 3 || fail "not Ready after the second change: $(rcond message)"
sleep 1; stop_watch
dels=$(deletions "$t2")
[ "$(awk '$2=="operator"' <<<"$dels" | wc -l)" = 4 ] || fail "want 4 deletions: $dels"
[ "$(awk '{print $3}' <<<"$dels" | tail -1)" = "$primary" ] || fail "the primary was not replaced last without multiadmin: $dels"
[ "$(max_down "$dir/watch2.json")" = 1 ] || fail "more than one pod down at once without multiadmin"
evs=$(events)
grep -q "^Warning SwitchPrimaryFailed: switch-primary for postgres/default/0-inf failed (multiadmin did not answer: .*); replacing primary pod $primary anyway" <<<"$evs" ||
  fail "no SwitchPrimaryFailed Warning: $evs"
note "multiadmin absent: $(awk '/^Warning SwitchPrimaryFailed/ {print; exit}' <<<"$evs")"

# ---- 3. scale-down with the primary on the highest ordinal
start_ma
primary=$sa-1
register "$primary"
echo refuse >"$state.switch"
t3=$(date +%s.%N)
cluster 130m 1 | kubectl apply -f - >/dev/null
wait_for 60 "ScaleDownHeld" sh -c "[ \"\$(kubectl get -n $ns shard $shard -o jsonpath='{.status.conditions[?(@.type==\"RollingUpdate\")].reason}')\" = ScaleDownHeld ]" ||
  fail "the scale-down was not held: $(rcond reason): $(rcond message)"
wait_for 60 "$sb scaled to 1" sh -c "[ \"\$(kubectl get -n $ns sts $sb -o jsonpath='{.spec.replicas}')\" = 1 ]" || fail "$sb (no primary) not scaled"
[ "$(jget -n $ns sts "$sa" -o jsonpath='{.spec.replicas}')" = 2 ] || fail "$sa scaled although its highest ordinal is the primary"
[[ $(rcond message) == *"scale-down of StatefulSet $sa from 2 to 1 held: pod $primary is the primary and multiadmin answered HTTP 400: no standby poolers available for promotion"* ]] ||
  fail "ScaleDownHeld message: $(rcond message)"
[ "$(gauge)" = 1 ] || fail "rolling gauge while the scale-down is held: '$(gauge)'"
grep -q "^Warning ScaleDownHeld: scale-down of StatefulSet $sa" <<<"$(events)" || fail "no ScaleDownHeld Warning: $(events)"
jget -n $ns pod "$primary" >/dev/null || fail "the primary pod went"
note "held: $(rcond message)"
# multiadmin accepts now; as multiorch would, the switch-over moves the primary to ordinal 0
echo "python3 '$T' '$U' put-pooler $root zone-a $sa-1 REPLICA && python3 '$T' '$U' put-pooler $root zone-a $sa-0 PRIMARY" >"$state.hook"
echo ok >"$state.switch"
wait_for 90 "$sa scaled to 1" sh -c "[ \"\$(kubectl get -n $ns sts $sa -o jsonpath='{.spec.replicas}')\" = 1 ]" || fail "$sa never scaled: $(rcond message)"
wait_for 120 "$c Ready at generation 4" ready_at 4 || fail "not Ready after the scale-down: $(rcond message)"
wait_for 30 "$sa-1 gone" sh -c "! kubectl get -n $ns pod $sa-1 >/dev/null 2>&1" || fail "$sa-1 stayed"
jget -n $ns pod "$sa-0" >/dev/null || fail "$sa-0 (the primary now) went"
sw=$(switch_times | awk -v t="$t3" '$1 >= t')
last_sw=$(tail -1 <<<"$sw" | awk '{print $1}')
gone=$(kubectl_deletions "$t3" "$sa-1")
[ -n "$gone" ] || fail "no deletion of $sa-1 in the audit log"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < float(sys.argv[2]) else 1)" "$last_sw" "$gone" ||
  fail "$sa-1 deleted ($gone) before the accepted switch-primary ($last_sw)"
grep -q "^Normal PrimarySwitched: multiadmin switched the primary away from pod $sa-1 before StatefulSet $sa scales from 2 to 1 replicas" <<<"$(events)" ||
  fail "no PrimarySwitched Event for the scale-down: $(events)"
[ "$(rcond reason)" = UpToDate ] || fail "RollingUpdate after the scale-down: $(rcond reason): $(rcond message)"
[ "$(grep -c '^Warning ScaleDownHeld' <<<"$(events)")" = 1 ] || fail "want one ScaleDownHeld Event per hold, not one per retry: $(events)"
evs=$(events)
for p in "$sb-1" "$sa-1"; do
  grep -q "^Normal DrainRequested: drain of pod $p requested (scaling down, removing it" <<<"$evs" || fail "no DrainRequested Event for $p: $evs"
done
note "scale-down: held while refused; after the switch-over $sa-1 went and $sa-0 stayed"
want=$(sorted_words "$sa-0=PRIMARY" "$sb-0=REPLICA")
wait_for 30 "podRoles after the switch-over and the scale-down" roles_are "$want" zone-a ||
  fail "podRoles/primaryCell: '$(roles)' / '$(jget -n $ns shard "$shard" -o jsonpath='{.status.primaryCell}')', want '$want' / zone-a (no pod scaled away)"
note "podRoles after the scale-down: $(roles); primaryCell zone-a"
operator_alive rolling || fail "operator exited"

# ---- 4. a roll reverted mid-drain: the pod being drained is replaced at once
# (its pooler record is gone and nothing else would bring it back), not left
# draining. A 60 s drain grace leaves the revert all the time it needs.
stop_operator rolling
start_operator rolling --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns --topology-registration=true \
  --multiadmin-address "127.0.0.1:$mport" --metrics-bind-address 127.0.0.1:0 --pooler-role-interval 2s --drain-grace 60s
wait_log rolling '"msg":"serving /metrics on 127.0.0.1:0 (port ' || fail "no metrics server after the restart"
drain_state() { jget -n $ns pod "$1" -o jsonpath='{.metadata.annotations.drain\.multigres\.com/state}'; }
t4=$(date +%s.%N)
cluster 140m 1 | kubectl apply -f - >/dev/null
wait_for 60 "$sb-0 draining" sh -c "[ \"\$(kubectl get -n $ns pod $sb-0 -o jsonpath='{.metadata.annotations.drain\\.multigres\\.com/state}')\" = draining ]" ||
  fail "the replica $sb-0 was not drained first: $(drain_state "$sb-0") / $(rcond message)"
[ -z "$(python3 "$T" "$U" keys "$root/poolers/" | grep -- "-$sb-0/" || true)" ] || fail "$sb-0's pooler record stayed while it drains"
trev=$(date +%s.%N)
cluster 130m 1 | kubectl apply -f - >/dev/null
wait_for 60 "$c Ready at generation 6" ready_at 6 || fail "not Ready after the revert: $(rcond message)"
wait_for 30 "DrainCancelled" sh -c "kubectl get -n $ns events.events.k8s.io --field-selector regarding.name=$shard -o jsonpath='{range .items[*]}{.reason}: {.note}{\"\\n\"}{end}' | grep -q '^DrainCancelled: the rolling update was reverted after pod $sb-0 had left the topology: it is replaced'" ||
  fail "no DrainCancelled Event for $sb-0: $(events)"
dels=$(deletions "$t4")
[ "$(awk '$2=="operator"{print $3}' <<<"$dels" | tr '\n' ' ')" = "$sb-0 " ] || fail "want exactly $sb-0 deleted: $dels"
tdel=$(awk '$3=="'"$sb-0"'"{print $1}' <<<"$dels")
python3 -c "import sys; a, b = map(float, sys.argv[1:]); sys.exit(0 if a < b < a + 50 else 1)" "$trev" "$tdel" ||
  fail "$sb-0 deleted at $tdel: not after the revert ($trev) and well before the 60 s grace ran out"
[ "$(pods_cpu)" = "$sa-0=130m
$sb-0=130m" ] || fail "pods after the revert: $(pods_cpu)"
wait_for 30 "$sb-0 back" sh -c "kubectl get -n $ns pod $sb-0 >/dev/null 2>&1"
for p in "$sa-0" "$sb-0"; do [ -z "$(drain_state "$p")" ] || fail "$p still has drain state $(drain_state "$p")"; done
[ "$(rcond reason)" = UpToDate ] || fail "RollingUpdate after the revert: $(rcond reason): $(rcond message)"
note "revert mid-drain: $sb-0 replaced $(python3 -c "import sys; print('%.1f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$trev" "$tdel")s after the revert (grace 60 s), $sa-0 untouched, no drain left"
operator_alive rolling || fail "operator exited after the revert"
