#!/usr/bin/env bash
# The operator's own traces, exported as OTLP/HTTP JSON to a receiver that
# checks every request against the OTLP schema with the OpenTelemetry
# Collector's own decoder (tests/otlp-receiver; a rejected request fails
# the test):
#  - the API server calls the webhook for a new cluster: a Webhook.Validate
#    span (SERVER), and the reconciles of that generation are its children
#    in the same trace; an update starts the next trace the same way;
#  - a cluster carrying a fresh multigres.com/traceparent annotation (the
#    reference operator's) is reconciled in that trace; a stale one gets a
#    new trace with a link to it;
#  - log lines of a traced reconcile carry its trace_id and span_id;
#  - the collector's first answer is 503: the batch is retried, not lost;
#  - /metrics counts the exported spans and the failed request;
#  - SIGTERM with the collector gone still exits 0 within 2 s (the final
#    flush is bounded).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-tracing vwc=it-tracing-config c=traced
RECV=${MGOP_OTLP_RECEIVER:-${MGOP_CACHE:-$HOME/.cache/multigres-op}/tools/bin/otlp-receiver}
[ -x "$RECV" ] || fail "otlp-receiver not built ($RECV); run make tools"
spans=$IT_LOGS/tracing-spans.jsonl
rm -f "$spans" "$spans.rejects" "$IT_LOGS/otlp.port"
"$RECV" -listen 127.0.0.1:0 -out "$spans" -port-file "$IT_LOGS/otlp.port" -fail-first 1 2>"$IT_LOGS/otlp-receiver.log" &
recv_pid=$!
new_namespace $ns
opkc=$IT_LOGS/tracing-op.kubeconfig
operator_kubeconfig $ns it-tracing-op "$opkc"
cleanup() {
  kubectl delete validatingwebhookconfiguration $vwc --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete clusterrolebinding it-tracing-op --ignore-not-found >/dev/null 2>&1 || true
  stop_operator tracing
  kill "$recv_pid" 2>/dev/null || true
}
trap cleanup EXIT
wait_for 30 "the receiver's port" test -s "$IT_LOGS/otlp.port" || fail "otlp-receiver did not start: $(cat "$IT_LOGS/otlp-receiver.log")"
rport=$(cat "$IT_LOGS/otlp.port")
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:$rport/v1/traces OTEL_BSP_SCHEDULE_DELAY=300 \
  OTEL_SERVICE_NAME=it-tracing OTEL_RESOURCE_ATTRIBUTES=deployment.environment=it \
  start_operator tracing --kubeconfig "$opkc" --namespace $ns \
  --webhook-enable --webhook-bind-address 127.0.0.1:0 --webhook-service-namespace $ns \
  --webhook-configuration-name $vwc --webhook-extra-sans 127.0.0.1 --webhook-owner-deployment= \
  --webhook-cert-check-interval 3s --metrics-bind-address 127.0.0.1:0
wait_log tracing "tracing: spans go to http://127.0.0.1:$rport/v1/traces" || fail "tracing not on"
wait_log tracing '"msg":"serving the admission webhook on 127.0.0.1:0 (port ' || fail "no webhook server"
wport=$(grep -o 'admission webhook on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/tracing.log" | grep -o '[0-9]*$')
mport=$(grep -o 'serving /metrics on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/tracing.log" | grep -o '[0-9]*$')
# clusters labelled via=annotation skip the webhook: their trace comes from the annotation
local_webhooks $vwc "$wport" $ns \
  'vmultigrescluster|multigresclusters|"CREATE", "UPDATE"|{matchExpressions: [{key: via, operator: NotIn, values: [annotation]}]}' ||
  fail "webhook configuration rejected"
wait_for 30 "CA bundle patched" sh -c "[ -n \"\$(kubectl get validatingwebhookconfiguration $vwc -o jsonpath='{.webhooks[0].clientConfig.caBundle}')\" ]" ||
  fail "the operator did not patch the CA bundle"

# manifest NAME [LABEL] [TRACEPARENT TS]: the minimal cluster, optionally labelled and annotated
manifest() {
  printf 'apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata:\n  name: %s\n  namespace: %s\n' "$1" $ns
  [ -z "${2:-}" ] || printf '  labels: {via: %s}\n' "$2"
  [ -z "${3:-}" ] || printf '  annotations: {multigres.com/traceparent: "%s", multigres.com/traceparent-ts: "%s"}\n' "$3" "$4"
  printf 'spec:\n  cells: [{name: zone-a, zone: us-east-1a}]\n'
}
# the API server may call the webhook before the CA bundle reaches its cache: retry the create
wait_for 30 "create $c through the webhook" sh -c "$(declare -f manifest); ns=$ns; manifest $c | kubectl apply -f -" ||
  fail "cannot create $c"
wait_for 120 "$c Ready" sh -c "[ \"\$(kubectl get -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]" ||
  fail "$c not Ready: $(jget -n $ns mgc $c -o jsonpath='{.status.message}')"
uid=$(kubectl get -n $ns mgc $c -o jsonpath='{.metadata.uid}')
# an update that changes the spec: generation 2, a new admission, a new trace
kubectl patch -n $ns mgc $c --type=merge -p '{"spec":{"logLevels":{"multigateway":"debug"}}}' >/dev/null ||
  fail "cannot update $c"

# the annotation path: a fresh traceparent is continued, a stale one linked
now=$(date +%s)
fresh_t=4bf92f3577b34da6a3ce929d0e0e4736 fresh_s=00f067aa0ba902b7
stale_t=0af7651916cd43dd8448eb211c80319c stale_s=b7ad6b7169203331
manifest ann annotation "00-$fresh_t-$fresh_s-01" "$now" | kubectl apply -f - >/dev/null
manifest stale annotation "00-$stale_t-$stale_s-01" $((now - 3600)) | kubectl apply -f - >/dev/null

check() { # the spans file against what this test did; prints the reason when not yet
  python3 - "$spans" "$c" "$uid" "$fresh_t" "$fresh_s" "$stale_t" "$stale_s" <<'PY'
import json, sys
path, c, uid, ft, fs, st, ss = sys.argv[1:]
spans = [json.loads(l) for l in open(path)] if path else []
def bad(why):
    print(why); sys.exit(1)
for s in spans:
    if s["resource"].get("service.name") != "it-tracing" or s["resource"].get("deployment.environment") != "it":
        bad("resource attributes: %s" % s["resource"])
    if s["scope"] != "multigres-operator":
        bad("scope %s" % s["scope"])
hooks = {}
for s in spans:
    a = s["attributes"]
    if s["name"] == "Webhook.Validate" and a.get("k8s.resource.name") == c and a.get("admission.dry_run") is False:
        hooks.setdefault(a.get("admission.operation"), []).append(s)
if not hooks.get("CREATE"):
    bad("no Webhook.Validate span for CREATE of %s" % c)
create = hooks["CREATE"][-1]
if create["kind"] != 2 or create["attributes"].get("admission.allowed") is not True or create["parentSpanId"]:
    bad("CREATE admission span: %s" % create)
def reconciles(trace, parent, gen=None):
    return [s for s in spans if s["name"] == "MultigresCluster.Reconcile" and s["traceId"] == trace
            and s["parentSpanId"] == parent and (gen is None or s["attributes"].get("multigres.generation") == gen)]
r1 = reconciles(create["traceId"], create["spanId"], 1)
if not r1 or not any(s["attributes"].get("multigres.objects.applied", 0) > 0 for s in r1):
    bad("no reconcile of generation 1 that applied objects under the CREATE admission (trace %s)" % create["traceId"])
if any(s["kind"] != 1 or s["attributes"].get("k8s.resource.name") != c for s in r1):
    bad("reconcile span attributes: %s" % r1[0])
upd = [s for s in hooks.get("UPDATE", []) if reconciles(s["traceId"], s["spanId"], 2)]
if not upd:
    bad("no reconcile of generation 2 under an UPDATE admission")
if upd[0]["traceId"] == create["traceId"]:
    bad("the update continued the create's trace")
ann = [s for s in spans if s["name"] == "MultigresCluster.Reconcile" and s["attributes"].get("k8s.resource.name") == "ann"]
if not ann or any(s["traceId"] != ft or s["parentSpanId"] != fs for s in ann):
    bad("cluster ann not reconciled under its fresh traceparent: %s" % [(s["traceId"], s["parentSpanId"]) for s in ann])
stale = [s for s in spans if s["name"] == "MultigresCluster.Reconcile" and s["attributes"].get("k8s.resource.name") == "stale"]
if not stale or any(s["traceId"] == st or s["parentSpanId"] or s["links"] != [{"traceId": st, "spanId": ss}] for s in stale):
    bad("cluster stale: expected a new root trace linked to the stale traceparent: %s" %
        [(s["traceId"], s["parentSpanId"], s["links"]) for s in stale])
print(create["traceId"], r1[0]["spanId"], len(spans))
PY
}
[ "$(kubectl get -n $ns mgc $c -o jsonpath='{.metadata.generation}')" = 2 ] || fail "the update did not make generation 2"
wait_for 90 "spans of both admissions, their reconciles and the annotated clusters" sh -c "$(declare -f check); spans=$spans c=$c uid=$uid fresh_t=$fresh_t fresh_s=$fresh_s stale_t=$stale_t stale_s=$stale_s; check" ||
  fail "spans: $(check || true)"
set -- $(check)
trace=$1 n=$3
note "$n spans exported and accepted; CREATE admission -> generation-1 reconciles in trace $trace; UPDATE -> generation 2 in a new trace; fresh annotation continued, stale one linked"
[ ! -s "$spans.rejects" ] || fail "the receiver rejected requests: $(head -3 "$spans.rejects")"
# log lines of that trace name it
lines=$(grep -c "\"trace_id\":\"$trace\",\"span_id\":\"[0-9a-f]\{16\}\"" "$IT_LOGS/tracing.log" || true)
[ "$lines" -gt 0 ] || fail "no log line carries trace_id $trace"
note "$lines log lines carry that trace_id and a span_id"
# the receiver answered 503 once: the operator retried that batch
grep -q ' 503 ' "$IT_LOGS/otlp-receiver.log" || fail "the receiver never answered 503: $(head -3 "$IT_LOGS/otlp-receiver.log")"
metrics=$(curl -sf "http://127.0.0.1:$mport/metrics") || fail "no /metrics"
exported=$(printf '%s\n' "$metrics" | sed -n 's/^multigres_operator_trace_spans_total{outcome="exported"} //p')
errors=$(printf '%s\n' "$metrics" | sed -n 's/^multigres_operator_trace_export_requests_total{result="error"} //p')
lost=$(printf '%s\n' "$metrics" | grep -E '^multigres_operator_trace_spans_total\{outcome="(queue_full|export_failed|rejected)"\} [1-9]' || true)
[ "${exported:-0}" -ge "$n" ] && [ "${errors:-0}" -ge 1 ] && [ -z "$lost" ] ||
  fail "metrics: exported ${exported:-none} (receiver has $n), errors ${errors:-none}, lost: $lost"
note "/metrics: $exported spans exported, $errors failed request (the 503, retried), none lost"
operator_alive tracing || fail "operator exited"
kill "$recv_pid"; wait "$recv_pid" 2>/dev/null || true
kubectl annotate -n $ns mgc $c it-tracing/poke="$(date +%s)" >/dev/null # a span queued for a collector that is gone
sleep 0.5
pid=$(cat "$IT_LOGS/tracing.pid") t0=$(date +%s%N)
kill -TERM "$pid"
rc=0; wait "$pid" || rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
rm -f "$IT_LOGS/tracing.pid"
[ "$rc" = 0 ] && [ "$ms" -lt 2000 ] || fail "SIGTERM with the collector gone: exit $rc after $ms ms"
note "SIGTERM with the collector gone: exit 0 in $ms ms"
