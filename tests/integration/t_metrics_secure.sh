#!/usr/bin/env bash
# --metrics-secure: /metrics over HTTPS on its own thread, each scraper's
# bearer token checked with the real API server (TokenReview, then
# SubjectAccessReview for get on /metrics):
#  - no token and a forged token: 401; a ServiceAccount without the
#    metrics-reader ClusterRole: 403 naming the role; one bound to it
#    (config/rbac/metrics_reader_role.yaml): 200 and valid exposition;
#  - a second scrape within the cache time makes no new review (audit log);
#  - the probes stay plain HTTP; plain HTTP on the metrics port is refused;
#  - --metrics-cert-path serves the given certificate (curl verifies it).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-msec
LINT=${MGOP_METRICS_LINT:-${MGOP_CACHE:-$HOME/.cache/multigres-op}/tools/bin/metrics-lint}
[ -x "$LINT" ] || fail "metrics-lint not built ($LINT); run make tools"
new_namespace $ns
opkc=$IT_LOGS/msec-op.kubeconfig
operator_kubeconfig $ns it-msec-op "$opkc"
kubectl apply -f "$ROOT/config/rbac/metrics_reader_role.yaml" >/dev/null
kubectl -n $ns create serviceaccount scraper >/dev/null
kubectl -n $ns create serviceaccount nobody >/dev/null
kubectl create clusterrolebinding it-msec-scraper --clusterrole=multigres-operator-metrics-reader --serviceaccount=$ns:scraper >/dev/null
cleanup() {
  kubectl delete clusterrolebinding it-msec-op it-msec-scraper --ignore-not-found >/dev/null 2>&1 || true
  stop_operator msec
}
trap cleanup EXIT
certs=$IT_LOGS/msec-certs
rm -rf "$certs"; mkdir -p "$certs"

run() { # extra flags...: start the operator and read its ports
  start_operator msec --kubeconfig "$opkc" --namespace $ns --metrics-secure \
    --metrics-bind-address 127.0.0.1:0 --health-probe-bind-address 127.0.0.1:0 "$@"
  wait_log msec 'over HTTPS, for bearer tokens allowed to get /metrics' || fail "no secure metrics server"
  mport=$(grep -o 'serving /metrics on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/msec.log" | grep -o '[0-9]*$')
  pport=$(grep -o 'serving /healthz and /readyz on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/msec.log" | grep -o '[0-9]*$')
}
code() { # TOKEN [CURL FLAGS]: the status of GET /metrics
  local t=$1; shift
  curl -s -o "$IT_LOGS/msec-body" -w '%{http_code}' ${t:+-H "Authorization: Bearer $t"} "$@" "https://127.0.0.1:$mport/metrics" || true
}
run
scraper=$(kubectl create token scraper -n $ns --duration=1h)
nobody=$(kubectl create token nobody -n $ns --duration=1h)
[ "$(code "" -k)" = 401 ] || fail "no token: $(code "" -k) $(cat "$IT_LOGS/msec-body")"
[ "$(code "forged.token.value" -k)" = 401 ] || fail "forged token: $(cat "$IT_LOGS/msec-body")"
[ "$(code "$nobody" -k)" = 403 ] || fail "nobody: $(cat "$IT_LOGS/msec-body")"
grep -q "system:serviceaccount:$ns:nobody may not get /metrics (grant it the ClusterRole multigres-operator-metrics-reader)" "$IT_LOGS/msec-body" ||
  fail "403 message: $(cat "$IT_LOGS/msec-body")"
note "401 without a token and with a forged one; 403 for $ns:nobody, naming the ClusterRole to grant"
t0=$(date +%s.%N)
[ "$(code "$scraper" -k)" = 200 ] || fail "scraper: $(cat "$IT_LOGS/msec-body")"
"$LINT" <"$IT_LOGS/msec-body" >"$IT_LOGS/msec-lint" 2>&1 || fail "metrics-lint: $(head -5 "$IT_LOGS/msec-lint")"
grep -q '^multigres_operator_api_requests_total{kind="all"} ' "$IT_LOGS/msec-body" || fail "not the operator's metrics"
for _ in 1 2 3; do [ "$(code "$scraper" -k)" = 200 ] || fail "scraper, again"; done
sleep 2 # the audit log is written in batches
reviews=$(python3 - "$MGOP_AUDIT_LOG" "$t0" <<'PY'
import json, sys, datetime
n = 0
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e.get("stage") != "ResponseComplete" or e.get("verb") != "create": continue
    t = datetime.datetime.fromisoformat(e["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()
    if t >= float(sys.argv[2]) and e.get("objectRef", {}).get("resource") == "tokenreviews" and "multigres-op" in e.get("userAgent", ""):
        n += 1
print(n)
PY
)
[ "$reviews" = 1 ] || fail "4 scrapes with one token made $reviews TokenReviews (want 1: the verdict is cached)"
note "scraper: 200, valid exposition; 4 scrapes, 1 TokenReview (cached)"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$pport/healthz")" = 200 ] || fail "probes not plain HTTP"
if curl -s -o /dev/null -m 5 "http://127.0.0.1:$mport/metrics"; then fail "plain HTTP answered on the secure port"; fi
note "probes plain HTTP; plain HTTP refused on the metrics port"
stop_operator msec

# a certificate of our own, verified by curl
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=metrics.test \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$certs/tls.key" -out "$certs/tls.crt" >/dev/null 2>&1 || fail "openssl"
run --metrics-cert-path "$certs"
[ "$(code "$scraper" --cacert "$certs/tls.crt")" = 200 ] || fail "with --metrics-cert-path: $(code "$scraper" --cacert "$certs/tls.crt") $(cat "$IT_LOGS/msec-body")"
note "--metrics-cert-path: the given certificate, verified by curl"
operator_alive msec || fail "operator exited"
