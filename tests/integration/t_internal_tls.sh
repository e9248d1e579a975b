#!/usr/bin/env bash
# internalTLS, certCommonName and issuerName, with cert-manager's own
# controllers (tests/cert-manager, built from its Go module) issuing for real:
#  - without cert-manager the operator makes no Certificate requests at all
#    (its watch is off), and a cluster asking for TLS says what is missing;
#  - once the CRDs are served, the operator watches Certificates and applies
#    one per component plus the public one; the cluster is not Ready while
#    one is not issued, and its message names it;
#  - with a CA ClusterIssuer, cert-manager issues them: every Secret's
#    certificate chains to the CA, with the component's identity (and, for
#    multigateway, multipooler's) as its DNS names; the public one names the
#    common name and is for servers only; the pods mount them with the flags;
#  - internalTLS turned off: its Certificates are pruned, the flags go.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
TOOLS=${MGOP_CACHE:-$HOME/.cache/multigres-op}/tools/bin
CM=${MGOP_CERT_MANAGER:-$TOOLS/cert-manager}
CRDS=$(readlink -f "$TOOLS/cert-manager-crds" || true)
[ -x "$CM" ] && [ -d "$CRDS" ] || fail "cert-manager not built ($CM); run make tools"
ns=it-tls c=tls
cm_pid=
cleanup() {
  stop_operator tls
  [ -n "$cm_pid" ] && { kill "$cm_pid" 2>/dev/null; wait "$cm_pid" 2>/dev/null; } || true
  kubectl delete clusterissuer it-selfsigned it-ca --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete -f "$CRDS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT
kubectl delete -f "$CRDS" --ignore-not-found >/dev/null 2>&1 || true # a clean start: cert-manager absent
new_namespace $ns
start_operator tls --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
wait_log tls '"watch Certificate: the API server does not serve it' 30 || fail "the Certificate watch did not turn itself off"
kubectl apply -f - >/dev/null <<EOF
apiVersion: multigres.com/v1alpha1
kind: MultigresCluster
metadata: {name: $c, namespace: $ns}
spec:
  internalTLS: {enabled: true}
  certCommonName: db.tls.example.com
  issuerName: it-ca
  cells: [{name: zone-a, zone: us-east-1a}]
EOF
messages() { jget -n $ns mgc $c -o jsonpath='{range .status.conditions[*]}{.message}{"\n"}{end}'; }
has_message() { local m; m=$(messages); [[ $m == *"$1"* ]]; }
wait_for 60 "a message that cert-manager is missing" has_message "spec.internalTLS.enabled needs cert-manager" ||
  fail "no message for the missing cert-manager: $(messages)"
note "cert-manager absent: the Certificate watch is off; the cluster says: $(messages | grep -F cert-manager | head -1)"

kubectl apply --server-side -f "$CRDS" >/dev/null
kubectl wait --for=condition=Established crd/certificates.cert-manager.io --timeout=60s >/dev/null
certs() { jget -n $ns certificates.cert-manager.io -l "multigres.com/cluster=$c" -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'; }
ncerts() { [ "$(certs | grep -c .)" -eq "$1" ]; }
wait_for 90 "five Certificates once cert-manager's CRDs are served" ncerts 5 || fail "Certificates: $(certs | tr '\n' ' '); $(messages)"
wait_log tls "cert-manager.io/v1 is served now: watching Certificates" 5 || fail "no log line for the watch starting"
wait_for 60 "the cluster naming an unissued Certificate" has_message "not issued yet by ClusterIssuer it-ca" ||
  fail "no message for unissued Certificates: $(messages)"
note "CRDs served: $(certs | tr '\n' ' '); not Ready: $(messages | grep -F 'not issued' | head -1 | sed 's/.*; Certificate/Certificate/')"

# cert-manager, and a CA: a self-signed ClusterIssuer signs the CA, the CA signs the rest
kubectl create namespace cert-manager >/dev/null 2>&1 || true
"$CM" --kubeconfig "$KUBECONFIG" --cluster-resource-namespace cert-manager >"$IT_LOGS/cert-manager.log" 2>&1 &
cm_pid=$!
kubectl apply -f - >/dev/null <<EOF
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: it-selfsigned}
spec: {selfSigned: {}}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: it-ca, namespace: cert-manager}
spec:
  isCA: true
  commonName: it-ca
  secretName: it-ca
  privateKey: {algorithm: ECDSA, size: 256}
  issuerRef: {name: it-selfsigned, kind: ClusterIssuer, group: cert-manager.io}
---
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: it-ca}
spec: {ca: {secretName: it-ca}}
EOF
issued() {
  local s
  s=$(jget -n $ns certificates.cert-manager.io -l "multigres.com/cluster=$c" -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')
  [ "$(grep -c '^True$' <<<"$s")" -eq 5 ]
}
wait_for 180 "cert-manager issuing all five" issued || {
  note "cert-manager log: $(tail -5 "$IT_LOGS/cert-manager.log")"
  fail "not issued: $(jget -n $ns certificates.cert-manager.io -o wide)"
}
tmp=$(mktemp -d)
jget -n cert-manager secret it-ca -o jsonpath='{.data.tls\.crt}' | base64 -d >"$tmp/ca.pem"
check_secret() { # SECRET DNS-NAME... : chains to the CA, names each
  local s=$1 text; shift
  jget -n $ns secret "$s" -o jsonpath='{.data.tls\.crt}' | base64 -d >"$tmp/$s.pem"
  openssl verify -CAfile "$tmp/ca.pem" "$tmp/$s.pem" >/dev/null 2>&1 || fail "$s does not chain to the CA"
  text=$(openssl x509 -in "$tmp/$s.pem" -noout -text)
  for d in "$@"; do [[ $text == *"DNS:$d"* ]] || fail "$s lacks DNS name $d: $(grep -A1 'Alternative Name' <<<"$text")"; done
  printf '%s' "$text"
}
for comp in multiadmin multiorch multipooler; do
  text=$(check_secret "$comp.$c.$ns.multigres.internal" "$comp.$c.$ns.multigres.internal")
  [[ $text == *"TLS Web Server Authentication, TLS Web Client Authentication"* ]] || fail "$comp: not for server and client"
done
check_secret "multigateway.$c.$ns.multigres.internal" "multigateway.$c.$ns.multigres.internal" \
  "multipooler.$c.$ns.multigres.internal" >/dev/null
text=$(check_secret "$c-pg-tls" db.tls.example.com tls.example.com)
[[ $text == *"TLS Web Server Authentication"* && $text != *"Client Authentication"* ]] || fail "the public certificate's usages"
note "issued by cert-manager: every Secret chains to the CA with the component's identity; public: db.tls.example.com, tls.example.com"

dep() { jget -n $ns deploy -l "multigres.com/cluster=$c,app.kubernetes.io/component=$1" -o json; }
sts_pool() { jget -n $ns sts -l "multigres.com/cluster=$c,app.kubernetes.io/component=shard-pool" -o json; }
wiring() { # JSON CONTAINER SECRET DIR [FLAG...]: the Secret mounted at DIR, the flags on CONTAINER
  python3 - "$@" <<'PY'
import json, sys
doc = json.loads(sys.argv[1]); ctr, secret, d, flags = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
pod = doc["items"][0]["spec"]["template"]["spec"]
vol = [v["name"] for v in pod.get("volumes", []) if v.get("secret", {}).get("secretName") == secret]
c = [c for c in pod["containers"] if c["name"] == ctr][0]
assert vol, "no volume of Secret " + secret
assert any(m["name"] == vol[0] and m["mountPath"] == d and m.get("readOnly") for m in c.get("volumeMounts", [])), "not mounted at " + d
missing = [f for f in flags if f not in c.get("args", [])]
assert not missing, "flags missing: %s" % missing
PY
}
ident() { echo "$1.$c.$ns.multigres.internal"; }
wiring "$(dep multiadmin)" multiadmin "$(ident multiadmin)" /etc/multiadmin/tls --grpc-cert=/etc/multiadmin/tls/tls.crt \
  "--multipooler-grpc-server-name=$(ident multipooler)" || fail "multiadmin's TLS wiring"
wiring "$(dep multigateway)" multigateway "$(ident multigateway)" /etc/multigateway/tls-internal \
  --grpc-key=/etc/multigateway/tls-internal/tls.key --multipooler-grpc-require-tls || fail "multigateway's internal TLS"
wiring "$(dep multigateway)" multigateway "$c-pg-tls" /etc/multigateway/tls --pg-tls-cert-file=/etc/multigateway/tls/tls.crt \
  --pg-tls-key-file=/etc/multigateway/tls/tls.key || fail "multigateway's public TLS"
wiring "$(dep multiorch)" multiorch "$(ident multiorch)" /etc/multigres/tls --grpc-ca=/etc/multigres/tls/ca.crt \
  --multipooler-grpc-ca=/etc/multigres/tls/ca.crt || fail "multiorch's TLS wiring"
wiring "$(sts_pool)" multipooler "$(ident multipooler)" /etc/multigres/tls --grpc-server-ca=/etc/multigres/tls/ca.crt ||
  fail "multipooler's TLS wiring"
note "mounted with the flags: multiadmin, multigateway (internal and public), multiorch, multipooler"
ready() { [ "$(jget -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
wait_for 120 "the cluster Ready once issued" ready || fail "not Ready: $(messages)"
note "Ready once every Certificate is issued"

# a renewal (as cmctl renew asks for one: the Issuing condition) rolls the pods that mount it
tls_rev() { jget -n $ns deploy -l "multigres.com/cluster=$c,app.kubernetes.io/component=$1" \
  -o jsonpath='{.items[0].spec.template.metadata.annotations.multigres\.com/tls-revision}'; }
cert_rev() { jget -n $ns certificates.cert-manager.io "$(ident "$1")" -o jsonpath='{.status.revision}'; }
# The pods carry the issuance count of the certificate they mount: i1 after
# the first. cert-manager may issue more than once before it settles (seen:
# multiorch's at revision 2 when its CA issuer became ready while the first
# request was in flight), so the count is read from the Certificate.
orch0=$(cert_rev multiorch) admin0=$(cert_rev multiadmin)
[[ $orch0 =~ ^[1-9][0-9]*$ && $admin0 =~ ^[1-9][0-9]*$ ]] || fail "Certificates without a revision after issuance: multiorch '$orch0', multiadmin '$admin0'"
at_rev() { [ "$(tls_rev "$1")" = "i$2" ]; }
wait_for 60 "multiorch's pods at revision $orch0" at_rev multiorch "$orch0" ||
  fail "multiorch's tls-revision after issuance: $(tls_rev multiorch), its Certificate's revision $orch0"
wait_for 60 "multiadmin's pods at revision $admin0" at_rev multiadmin "$admin0" ||
  fail "multiadmin's tls-revision after issuance: $(tls_rev multiadmin), its Certificate's revision $admin0"
kubectl patch -n $ns certificates.cert-manager.io "$(ident multiorch)" --subresource=status --type=merge \
  -p '{"status":{"conditions":[{"type":"Issuing","status":"True","reason":"ManuallyTriggered","message":"t_internal_tls"}]}}' >/dev/null
wait_for 120 "multiorch's pods rolled to the renewed certificate" at_rev multiorch $((orch0 + 1)) ||
  fail "after the renewal multiorch's tls-revision is $(tls_rev multiorch), not i$((orch0 + 1)); Certificate: $(cert_rev multiorch)"
at_rev multiadmin "$admin0" || fail "multiadmin rolled for multiorch's certificate: $(tls_rev multiadmin), its Certificate's revision $admin0"
note "renewed multiorch's certificate: its pods roll (tls-revision i$orch0 -> i$((orch0 + 1))), the others do not"

kubectl patch -n $ns mgc $c --type merge -p '{"spec":{"internalTLS":{"enabled":false}}}' >/dev/null
wait_for 60 "the internal Certificates pruned" ncerts 1 || fail "Certificates left: $(certs | tr '\n' ' ')"
[ "$(certs)" = "$c-pg-tls" ] || fail "the wrong Certificate is left: $(certs)"
no_grpc_tls() { local d; d=$(dep multiorch); [[ -n $d && $d != *--grpc-cert* ]]; }
wait_for 60 "multiorch without TLS flags" no_grpc_tls || fail "multiorch keeps --grpc-cert"
note "internalTLS off: four Certificates pruned, the flags gone; the public one stays"
operator_alive tls || fail "operator exited"
rm -rf "$tmp"
