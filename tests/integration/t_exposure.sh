#!/usr/bin/env bash
# spec.externalGateway / externalAdminWeb: while enabled, the global Service
# carries the externalIPs and the annotations, and status.gateway (adminWeb)
# names the first IP; disabled again, server-side apply removes all three.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-exposure c=exposed
new_namespace $ns
trap 'stop_operator exposure' EXIT
start_operator exposure --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
cluster() { # ENABLED
  printf 'apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: %s, namespace: %s}\nspec:\n  cells: [{name: zone-a, zone: us-east-1a}]\n  externalGateway: {enabled: %s, externalIPs: [203.0.113.7, "2001:db8::7"], annotations: {lb.example.com/pool: edge}}\n' \
    $c $ns "$1" | kubectl apply -f - >/dev/null
}
svc() { jget -n $ns svc $c-multigateway -o jsonpath="$1"; }
cluster true
wait_for 60 "externalIPs on the gateway Service" sh -c "[ \"\$(kubectl get -n $ns svc $c-multigateway -o jsonpath='{.spec.externalIPs}')\" = '[\"203.0.113.7\",\"2001:db8::7\"]' ]" ||
  fail "externalIPs: '$(svc '{.spec.externalIPs}')'"
[ "$(svc '{.metadata.annotations.lb\.example\.com/pool}')" = edge ] || fail "annotation: $(svc '{.metadata.annotations}')"
[ "$(svc '{.spec.type}')" = ClusterIP ] || fail "type: $(svc '{.spec.type}')"
wait_for 30 "status.gateway" sh -c "[ \"\$(kubectl get -n $ns mgc $c -o jsonpath='{.status.gateway.externalEndpoint}')\" = 203.0.113.7 ]" ||
  fail "status.gateway: $(jget -n $ns mgc $c -o jsonpath='{.status.gateway}')"
[ -z "$(jget -n $ns svc $c-multiadmin-web -o jsonpath='{.spec.externalIPs}')" ] || fail "multiadmin-web exposed without externalAdminWeb"
note "enabled: $(svc '{.spec.externalIPs}') on $c-multigateway, status.gateway $(jget -n $ns mgc $c -o jsonpath='{.status.gateway.externalEndpoint}')"
cluster false
wait_for 60 "externalIPs removed" sh -c "[ -z \"\$(kubectl get -n $ns svc $c-multigateway -o jsonpath='{.spec.externalIPs}')\" ]" ||
  fail "externalIPs stayed: $(svc '{.spec.externalIPs}')"
[ -z "$(svc '{.metadata.annotations.lb\.example\.com/pool}')" ] || fail "the annotation stayed: $(svc '{.metadata.annotations}')"
wait_for 30 "status.gateway removed" sh -c "[ -z \"\$(kubectl get -n $ns mgc $c -o jsonpath='{.status.gateway}')\" ]" ||
  fail "status.gateway stayed: $(jget -n $ns mgc $c -o jsonpath='{.status.gateway}')"
note "disabled: externalIPs, annotation and status.gateway removed"
operator_alive exposure || fail "operator exited"
