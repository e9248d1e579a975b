#!/usr/bin/env bash
# An operator newer than its CRDs reconciles nothing until they are applied:
# with one CRD's multigres.com/schema-version older than the binary's, a
# cluster applied gets no children, the log says which CRD and what to do,
# /readyz is 503 with the same text and multigres_operator_crd_schema_outdated
# is 1, /healthz stays 200. Once the CRD carries the version again,
# the operator reconciles (the cluster gets its children), /readyz is 200 and
# the gauge 0, and it reads the CRDs no more: no GET of a CRD in the audit log
# after that. Meanwhile the unobserved cluster reads status.observedGeneration
# 0 (the CRDs' status default), so kstatus sees it InProgress.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-crd c=crd1 crd=shards.multigres.com
want=$(kubectl get crd $crd -o jsonpath='{.metadata.annotations.multigres\.com/schema-version}')
[ -n "$want" ] || fail "crds.yaml as applied carries no multigres.com/schema-version on $crd"
restore() { kubectl annotate crd $crd "multigres.com/schema-version=$want" --overwrite >/dev/null 2>&1 || true; }
trap 'stop_operator crd; restore' EXIT
kubectl annotate crd $crd multigres.com/schema-version=0 --overwrite >/dev/null
new_namespace $ns
start_operator crd --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns \
  --metrics-bind-address 127.0.0.1:0 --health-probe-bind-address 127.0.0.1:0
wait_log crd '"msg":"serving /metrics on 127.0.0.1:0 (port ' || fail "no metrics server"
mport=$(grep -o 'serving /metrics on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/crd.log" | grep -o '[0-9]*$')
pport=$(grep -o 'serving /healthz and /readyz on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/crd.log" | grep -o '[0-9]*$')
wait_log crd "not reconciling: CRD $crd has schema version 0 (multigres.com/schema-version), this operator needs $want: apply the crds.yaml of this release" ||
  fail "no log line naming the CRD: $(tail -5 "$IT_LOGS/crd.log")"
cluster_manifest $ns $c | kubectl apply -f - >/dev/null
# no operator has seen it: the CRD's status default makes it read as not yet
# observed, so kstatus (Flux's wait, Argo CD) says InProgress, not Current
og=$(kubectl get -n $ns mgc $c -o jsonpath='{.metadata.generation}/{.status.observedGeneration}')
[ "$og" = 1/0 ] || fail "an unobserved cluster reads generation/observedGeneration '$og', not 1/0"
readyz=$(curl -s -w ' %{http_code}' "http://127.0.0.1:$pport/readyz")
[[ $readyz == "not reconciling: CRD $crd has schema version 0"*" 503" ]] || fail "/readyz while outdated: $readyz"
metrics=$(curl -s "http://127.0.0.1:$mport/metrics")
grep -qx 'multigres_operator_crd_schema_outdated 1' <<<"$metrics" || fail "gauge not 1: $(grep crd_schema <<<"$metrics")"
sleep 8
[ -z "$(jget -n $ns cells,shards,toposervers -o name)" ] || fail "children created against outdated CRDs: $(jget -n $ns cells,shards,toposervers -o name)"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$pport/healthz")" = 200 ] || fail "/healthz not 200 while waiting"
note "outdated: $readyz"

restore
t_fixed=$(date +%s.%N)
wait_for 60 "$c Ready after the CRD is current" sh -c "[ \"\$(kubectl get -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]" ||
  fail "$c never Ready once the CRD was current: $(tail -5 "$IT_LOGS/crd.log")"
wait_log crd "the CRDs have schema version $want now; reconciling" || fail "no log line for the recovery"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$pport/readyz")" = 200 ] || fail "/readyz not 200 after"
metrics=$(curl -s "http://127.0.0.1:$mport/metrics")
grep -qx 'multigres_operator_crd_schema_outdated 0' <<<"$metrics" || fail "gauge not 0 after"
sleep 12 # past the recheck interval
gets=$(python3 - "$MGOP_AUDIT_LOG" "$t_fixed" <<'PY'
import json, sys, datetime
n = 0
for line in open(sys.argv[1]):
    try: e = json.loads(line)
    except ValueError: continue
    o = e.get("objectRef", {})
    if e.get("stage") != "ResponseComplete" or o.get("resource") != "customresourcedefinitions" or e.get("verb") != "get":
        continue
    if not e.get("userAgent", "").startswith("multigres-op/"): continue
    t = datetime.datetime.strptime(e["requestReceivedTimestamp"][:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp()
    if t > float(sys.argv[2]) + 11: n += 1
print(n)
PY
)
[ "$gets" = 0 ] || fail "$gets CRD GETs after the CRDs were found current"
operator_alive crd || fail "operator exited"
note "recovered: Ready, /readyz 200, no more CRD reads"
