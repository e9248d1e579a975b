#!/usr/bin/env bash
# The embedded validating webhook, called by the real API server over TLS:
#  - the operator makes its CA and serving certificate (two Secrets) and
#    patches the CA bundle into the ValidatingWebhookConfiguration;
#  - an invalid cluster is refused with the reconciler's message, naming the
#    field; a valid one is accepted;
#  - edits to children by anyone but the operator are refused, and so is
#    deleting a template that has consumers;
#  - forced rotations (short validity flags) of the serving certificate and
#    of the CA keep admission working, with the CA bundle updated.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
S=$ROOT/config/samples ns=it-webhook vwc=it-webhook-config
new_namespace $ns
# the operator gets its own identity (a ServiceAccount token), as in a Pod:
# the webhook configurations exclude it with matchConditions (its own writes
# need no check), and kubectl (admin) is someone else
opkc=$IT_LOGS/webhook-op.kubeconfig
operator_kubeconfig $ns it-webhook-op "$opkc"
start_operator webhook --kubeconfig "$opkc" --namespace $ns \
  --webhook-enable --webhook-bind-address 127.0.0.1:0 --webhook-service-namespace $ns \
  --webhook-configuration-name $vwc --webhook-extra-sans 127.0.0.1 --webhook-owner-deployment= \
  --webhook-cert-validity 45s --webhook-ca-validity 90s --webhook-cert-check-interval 3s
cleanup() {
  kubectl delete validatingwebhookconfiguration $vwc --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete clusterrolebinding it-webhook-op --ignore-not-found >/dev/null 2>&1 || true
  stop_operator webhook
}
trap cleanup EXIT
wait_log webhook '"msg":"serving the admission webhook on 127.0.0.1:0 (port ' || fail "no webhook server"
wait_log webhook "children are writable only by system:serviceaccount:$ns:op" || fail "the operator does not know who it is"
port=$(grep -o 'admission webhook on 127.0.0.1:0 (port [0-9]*' "$IT_LOGS/webhook.log" | grep -o '[0-9]*$')

local_webhooks $vwc "$port" $ns 'vmultigrescluster|multigresclusters|"CREATE", "UPDATE"' \
  'vtemplates|coretemplates, celltemplates, shardtemplates|"DELETE"' \
  'vchildren|cells, tablegroups, shards, toposervers|"CREATE", "UPDATE"' || fail "webhook configuration rejected"
wait_for 30 "CA bundle patched into all 3 webhooks" sh -c \
  "[ \$(kubectl get validatingwebhookconfiguration $vwc -o jsonpath='{range .webhooks[*]}{.clientConfig.caBundle}{\"\\n\"}{end}' | grep -c .) = 3 ]" ||
  fail "the operator did not patch the CA bundle"
[ "$(jget -n $ns secret multigres-operator-webhook-cert -o jsonpath='{.type}')" = kubernetes.io/tls ] || fail "no serving Secret"
jget -n $ns secret multigres-operator-webhook-ca >/dev/null || fail "no CA Secret"

serial() { jget -n $ns secret "$1" -o jsonpath="{.data.${2//./\\.}}" | base64 -d | openssl x509 -noout -serial; }
invalid() { # NAME: a cluster naming a CellTemplate that does not exist
  printf 'apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: %s, namespace: %s}\nspec:\n  templateDefaults: {cellTemplate: nope}\n  cells: [{name: a, zone: us-east-1a}]\n' "$1" $ns
}
expect_refused() { # NAME
  local out
  if out=$(invalid "$1" | kubectl apply -f - 2>&1); then fail "an invalid cluster was accepted"; fi
  grep -q 'denied the request' <<<"$out" || fail "not refused by the webhook: $out"
  grep -q 'spec.templateDefaults.cellTemplate names CellTemplate "nope"' <<<"$out" || fail "message does not name the field: $out"
}
expect_refused bad1
kubectl apply -n $ns -f $S/default-templates/cell.yaml >/dev/null
kubectl apply -n $ns -f $S/minimal.yaml >/dev/null || fail "a valid cluster was refused"

# children are read-only except to the operator
wait_for 60 "a Cell exists" sh -c "kubectl get -n $ns cells -o name | grep -q ." || fail "no Cell"
cells=$(kubectl get -n $ns cells -o name); cell=${cells%%$'\n'*}
if out=$(kubectl label -n $ns "$cell" edited=by-hand 2>&1); then fail "a user edited a Cell"; fi
grep -q 'read-only' <<<"$out" || fail "child edit refused without the reason: $out"
kubectl wait -n $ns --for=condition=Ready mgc/minimal --timeout=180s >/dev/null ||
  fail "the operator's own writes were refused? conditions: $(jget -n $ns mgc minimal -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}; {end}')"

# a template with consumers cannot be deleted
wait_for 30 "CellTemplate default has consumers" sh -c \
  "kubectl get -n $ns celltemplate default -o jsonpath='{.status.consumers}' | grep -q minimal" || fail "no consumers"
if out=$(kubectl delete -n $ns celltemplate default 2>&1); then fail "a template in use was deleted"; fi
grep -q 'in use by MultigresCluster minimal' <<<"$out" || fail "template deletion refused without the reason: $out"

# rotations: the serving certificate (every ~30 s) and the CA (after ~60 s)
ca0=$(serial multigres-operator-webhook-ca ca.crt) crt0=$(serial multigres-operator-webhook-cert tls.crt)
wait_for 60 "the serving certificate rotates" sh -c "[ \"\$(kubectl get -n $ns secret multigres-operator-webhook-cert -o jsonpath='{.data.tls\.crt}' | base64 -d | openssl x509 -noout -serial)\" != '$crt0' ]" ||
  fail "the serving certificate never rotated"
wait_log webhook '(rotated)' 10 || fail "the new certificate was not served"
expect_refused bad2
wait_for 90 "the CA rotates" sh -c "[ \"\$(kubectl get -n $ns secret multigres-operator-webhook-ca -o jsonpath='{.data.ca\.crt}' | base64 -d | openssl x509 -noout -serial)\" != '$ca0' ]" ||
  fail "the CA never rotated"
ca1=$(serial multigres-operator-webhook-ca ca.crt)
bundle_has() { kubectl get validatingwebhookconfiguration $vwc -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | base64 -d |
  awk '/BEGIN/{c++} {print > "/tmp/mgop-bundle-" c ".pem"}' && local serials; serials=$(for f in /tmp/mgop-bundle-*.pem; do openssl x509 -noout -serial -in "$f"; done); grep -qx "$1" <<<"$serials"; }
wait_for 20 "the new CA in the bundle" bundle_has "$ca1" || fail "the CA bundle was not updated"
rm -f /tmp/mgop-bundle-*.pem
sleep 4 # the serving certificate is re-signed by the new CA on the same check
expect_refused bad3
# no churn: one CA at start and one rotation; the serving certificate renewed
# on schedule (at two thirds of its 45 s), then again with the new CA
[ "$(count_log webhook '"msg":"webhook: new CA in Secret')" = 2 ] || fail "the CA was made $(count_log webhook 'new CA in Secret') times, not 2"
[ "$(count_log webhook '(rotated)')" = 2 ] || fail "the serving certificate rotated $(count_log webhook '(rotated)') times, not 2"
note "rotated: serving certificate and CA; admission kept working"
operator_alive webhook || fail "operator exited"
