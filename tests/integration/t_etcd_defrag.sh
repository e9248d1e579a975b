#!/usr/bin/env bash
# etcd.maintenance.defragmentationEnabled: the look the operator takes at a
# managed etcd (mgop_defrag_pass), run by `multigres-op etcd-defrag` against
# a real three-member etcd this test starts (the control plane's etcd pods
# are simulated, and the operator runs outside the cluster, so it cannot
# reach a managed etcd's members here; the operator's timer and its Events
# are the same code around this pass):
#   - nothing to do on a fresh cluster;
#   - after 20 MB written, deleted and compacted: exactly one member is
#     defragmented (its backend shrinks), the others are left as they were;
#   - a member down: the look is deferred naming that member, and no member
#     is defragmented.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
etcd_bins=("${MGOP_CACHE:-$HOME/.cache/multigres-op}"/controlplane/*/bin/etcd) # no pipe into head under pipefail
etcd_bin=${etcd_bins[0]}
[ -x "$etcd_bin" ] || fail "no etcd binary in ${MGOP_CACHE:-$HOME/.cache/multigres-op}/controlplane"
dir=$IT_LOGS/etcd-defrag
rm -rf "$dir"; mkdir -p "$dir"
read -r c1 c2 c3 q1 q2 q3 < <(free_ports 6)
cports=("$c1" "$c2" "$c3") pports=("$q1" "$q2" "$q3")
initial="m1=http://127.0.0.1:$q1,m2=http://127.0.0.1:$q2,m3=http://127.0.0.1:$q3"
for i in 0 1 2; do
  "$etcd_bin" --name "m$((i + 1))" --data-dir "$dir/m$((i + 1)).data" \
    --listen-client-urls "http://127.0.0.1:${cports[$i]}" --advertise-client-urls "http://127.0.0.1:${cports[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${pports[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}" \
    --initial-cluster "$initial" >"$dir/m$((i + 1)).log" 2>&1 &
  echo $! >"$dir/m$((i + 1)).pid"
done
stop_member() { local pid; pid=$(cat "$dir/$1.pid" 2>/dev/null) || return 0; kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -f "$dir/$1.pid"; }
cleanup() { stop_member m1; stop_member m2; stop_member m3; }
trap cleanup EXIT

# sizes: "name dbSize" of every member, read from each member itself
sizes() {
  python3 - "$@" <<'EOF'
import json, sys, urllib.request
for i, port in enumerate(sys.argv[1:], 1):
    r = urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:%s/v3/maintenance/status" % port, b"{}"), timeout=5)
    print("m%d %s" % (i, json.loads(r.read())["dbSize"]))
EOF
}
E=http://127.0.0.1:$c1
# until all three have started: a member that has joined but not yet
# published its client URL makes the look defer (exit 0), not fail
for _ in $(seq 1 60); do
  out=$("$ROOT/multigres-op" etcd-defrag --endpoints "$E" --dry-run 2>&1) && [[ "$out" != *"has not started"* ]] && break
  sleep 0.5
done
echo "$out" >"$dir/dry-run.txt"
[[ "$out" == *"nothing to defragment: no member has half of its backend"* ]] || fail "fresh cluster: $out"
n=$(grep -c '^member m[123] http://127.0.0.1:[0-9]*: $' "$dir/dry-run.txt") || true
[ "$n" = 3 ] || fail "dry run lists $n answering members, not 3: $out"

# 100 values of 200 KB, deleted and compacted: the pages are free, the files are not smaller
python3 - "$E" <<'EOF'
import base64, json, sys, urllib.request
ep = sys.argv[1]
def post(path, body):
    r = urllib.request.urlopen(urllib.request.Request(ep + path, json.dumps(body).encode()), timeout=30)
    return json.loads(r.read())
val = base64.b64encode(b"x" * 200000).decode()
for i in range(100):
    post("/v3/kv/put", {"key": base64.b64encode(b"/fill/%d" % i).decode(), "value": val})
rev = post("/v3/kv/deleterange", {"key": base64.b64encode(b"/fill/").decode(),
                                  "range_end": base64.b64encode(b"/fill0").decode()})["header"]["revision"]
post("/v3/kv/compaction", {"revision": rev, "physical": True})
EOF
# compaction frees the pages on each member in its own time (the others
# apply it after the one asked, and bbolt counts freed pages as free only
# after a later write commits; etcd commits its backend only when something
# was written, so on a quiet cluster that later write may never come: CI's
# run of 4f34c4b waited 20 s with every member at 20 MB in use). Each look
# writes one small key first, then waits until some member's in-use figure
# shows the compaction, or the look rightly finds nothing to do yet
inuse() {
  python3 - "$@" <<'EOF2'
import base64, json, sys, urllib.request
put = {"key": base64.b64encode(b"/nudge").decode(), "value": base64.b64encode(b"x").decode()}
urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:%s/v3/kv/put" % sys.argv[1], json.dumps(put).encode()), timeout=5).read()
for i, port in enumerate(sys.argv[1:], 1):
    r = urllib.request.urlopen(urllib.request.Request("http://127.0.0.1:%s/v3/maintenance/status" % port, b"{}"), timeout=5)
    st = json.loads(r.read())
    print("m%d %s %s" % (i, st["dbSize"], st.get("dbSizeInUse", st["dbSize"])))
EOF2
}
freed=
for _ in $(seq 1 40); do
  inuse "$c1" "$c2" "$c3" >"$dir/inuse.txt"
  if awk '$3 * 2 <= $2 && $2 - $3 >= 8 * 1048576 { ok = 1 } END { exit !ok }' "$dir/inuse.txt"; then freed=1; break; fi
  sleep 0.5
done
[ -n "$freed" ] || fail "compaction reflected on no member in 20 s (name dbSize dbSizeInUse): $(cat "$dir/inuse.txt")"
sizes "$c1" "$c2" "$c3" >"$dir/before.txt"
while read -r m sz; do [ "$sz" -gt $((15 << 20)) ] || fail "$m's backend is $sz bytes after the fill"; done <"$dir/before.txt"

out=$("$ROOT/multigres-op" etcd-defrag --endpoints "$E") || fail "etcd-defrag: $out"
echo "$out" >"$dir/pass1.txt"
[[ "$out" =~ ^defragmented:\ member\ (m[123])\  ]] || fail "first look: $out"
picked=${BASH_REMATCH[1]}
sizes "$c1" "$c2" "$c3" >"$dir/after.txt"
shrunk=0
while read -r m sz; do
  was=$(awk -v m="$m" '$1 == m {print $2}' "$dir/before.txt")
  if [ "$sz" -lt $((1 << 20)) ]; then
    shrunk=$((shrunk + 1))
    [ "$m" = "$picked" ] || fail "$m shrank ($was -> $sz) but the look named $picked"
  else
    [ "$sz" -ge "$was" ] || fail "$m shrank ($was -> $sz) without being named"
  fi
done <"$dir/after.txt"
[ "$shrunk" = 1 ] || fail "$shrunk members shrank in one look, not 1: $(cat "$dir/after.txt")"

# a member down: deferred, naming it, and nothing defragmented
down=m3; [ "$picked" = m3 ] && down=m2
stop_member "$down"
alive=(); for i in 1 2 3; do [ "m$i" = "$down" ] || alive+=("${cports[$((i - 1))]}"); done
sizes "${alive[@]}" >"$dir/before-down.txt"
eps=http://127.0.0.1:${alive[0]},http://127.0.0.1:${alive[1]}
out=$("$ROOT/multigres-op" etcd-defrag --endpoints "$eps") || fail "etcd-defrag with $down down: $out"
echo "$out" >"$dir/pass-down.txt"
[[ "$out" == "deferred: member $down did not answer: "* ]] || fail "with $down down: $out"
sizes "${alive[@]}" >"$dir/after-down.txt"
cmp -s "$dir/before-down.txt" "$dir/after-down.txt" || fail "a member changed size while the look was deferred: $(cat "$dir/after-down.txt")"

# bad use is refused with the usage
if out=$("$ROOT/multigres-op" etcd-defrag 2>&1); then fail "no --endpoints accepted: $out"; fi
[[ "$out" == *"--endpoints is required"* ]] || fail "no --endpoints: $out"
echo "etcd defragmentation: one member a look ($picked), deferred with $down down" >&2
