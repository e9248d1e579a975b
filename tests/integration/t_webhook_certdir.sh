#!/usr/bin/env bash
# The webhook with external certificates (--webhook-use-internal-certs=false,
# what install-certmanager.yaml does): the operator serves tls.crt/tls.key
# from --webhook-cert-dir, makes no Secrets and patches no bundle, and picks
# up a renewed certificate when the files change (as cert-manager renews the
# mounted Secret), with admission working before and after.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-certdir vwc=it-certdir-config
dir=$(mktemp -d "${TMPDIR:-/tmp}/mgop-certdir.XXXXXX")
new_namespace $ns
issue() { # SERIAL: a serving certificate for 127.0.0.1 from our test CA, swapped in atomically
  openssl ecparam -name prime256v1 -genkey -noout -out "$dir/new.key" 2>/dev/null
  openssl req -new -key "$dir/new.key" -subj "/CN=127.0.0.1" -out "$dir/new.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$dir/ext"
  openssl x509 -req -in "$dir/new.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -set_serial "$1" -days 1 \
    -extfile "$dir/ext" -out "$dir/new.crt" 2>/dev/null
  mv "$dir/new.key" "$dir/tls.key"
  mv "$dir/new.crt" "$dir/tls.crt"
}
openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key" 2>/dev/null
openssl req -x509 -new -key "$dir/ca.key" -subj "/CN=it-certdir-ca" -days 1 -out "$dir/ca.crt" 2>/dev/null
issue 0x1001
start_operator certdir --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns --webhook-enable --webhook-bind-address 127.0.0.1:0 \
  --webhook-use-internal-certs=false --webhook-cert-dir "$dir" --webhook-cert-check-interval 2s --webhook-service-namespace $ns
cleanup() { kubectl delete validatingwebhookconfiguration $vwc --ignore-not-found >/dev/null 2>&1 || true; stop_operator certdir; rm -rf "$dir"; }
trap cleanup EXIT
wait_log certdir '"msg":"serving the admission webhook on 127.0.0.1:0 (port ' || fail "no webhook server"
port=$(grep -o 'admission webhook on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/certdir.log" | grep -o '[0-9]*$')
wait_log certdir '"msg":"webhook: serving certificate 1001' || fail "the certificate from the directory is not served"
cat <<Y | kubectl apply -f - >/dev/null
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: $vwc}
webhooks:
- name: vmultigrescluster.multigres.com
  clientConfig: {url: "https://127.0.0.1:$port/validate", caBundle: "$(base64 -w0 "$dir/ca.crt")"}
  rules: [{apiGroups: [multigres.com], apiVersions: [v1alpha1], operations: ["CREATE", "UPDATE"], resources: [multigresclusters], scope: Namespaced}]
  namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: $ns}}
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 5
Y
expect_refused() {
  local out
  if out=$(printf 'apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: %s, namespace: %s}\nspec:\n  globalTopoServer: {templateRef: nope}\n  cells: [{name: a, zone: us-east-1a}]\n' "$1" $ns | kubectl apply -f - 2>&1); then
    fail "an invalid cluster was accepted"
  fi
  grep -q 'spec.globalTopoServer.templateRef names CoreTemplate "nope"' <<<"$out" || fail "not refused by the webhook: $out"
}
sleep 2
expect_refused bad1
served() { openssl s_client -connect 127.0.0.1:$port -servername 127.0.0.1 </dev/null 2>/dev/null | openssl x509 -noout -serial; }
[ "$(served)" = "serial=1001" ] || fail "served $(served), not serial 1001"

# renewal: new files; new connections get them, admission keeps working
sleep 1 # a new mtime second
issue 0x1002
wait_log certdir '"msg":"webhook: serving certificate 1002 (rotated)"' 15 || fail "the renewed files were not picked up"
[ "$(served)" = "serial=1002" ] || fail "served $(served) after renewal, not serial 1002"
expect_refused bad2
# nothing made or patched: cert-manager owns both
! kubectl get -n $ns secret multigres-operator-webhook-ca >/dev/null 2>&1 || fail "the operator made its own CA"
[ "$(count_log certdir 'CA bundle of')" = 0 ] || fail "the operator patched a bundle"
operator_alive certdir || fail "operator exited"
