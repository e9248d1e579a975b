#!/usr/bin/env bash
# spec.observability on a live cluster: the API server accepts the OTEL_*
# environment and the sampling ConfigMap volume on every data-plane workload
# (gateway, multiorch, pool), and the cluster converges; with
# otlpEndpoint: disabled they are all gone again.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-otel c=otel
new_namespace $ns
trap 'stop_operator otel' EXIT
start_operator otel --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
kubectl -n $ns create configmap sampler --from-literal=sampling-config.yaml='default: 0.1' >/dev/null
cluster() { # ENDPOINT
  printf 'apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: %s, namespace: %s}\nspec:\n  cells: [{name: zone-a, zone: us-east-1a}]\n  observability: {otlpEndpoint: "%s", tracesSampler: multigres_custom, samplingConfigRef: {name: sampler}}\n' \
    $c $ns "$1" | kubectl apply -f - >/dev/null
}
envs() { # KIND COMPONENT: the OTEL variable names of its first container
  jget -n $ns "$1" -l "multigres.com/cluster=$c,app.kubernetes.io/component=$2" -o jsonpath='{.items[0].spec.template.spec.containers[0].env[*].name}' |
    tr ' ' '\n' | grep '^OTEL_' | tr '\n' ' ' || true
}
cluster http://otel-collector:4318
wait_for 90 "$c Ready" sh -c "[ \"\$(kubectl get -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]" ||
  fail "not Ready: $(jget -n $ns mgc $c -o jsonpath='{.status.message}')"
for w in "deploy multigateway" "deploy multiorch" "sts shard-pool"; do
  set -- $w
  got=$(envs "$1" "$2")
  [ "$got" = "OTEL_EXPORTER_OTLP_ENDPOINT OTEL_TRACES_SAMPLER OTEL_TRACES_SAMPLER_CONFIG OTEL_RESOURCE_ATTRIBUTES " ] ||
    fail "$2: OTEL variables '$got'"
  vol=$(jget -n $ns "$1" -l "multigres.com/cluster=$c,app.kubernetes.io/component=$2" -o jsonpath='{.items[0].spec.template.spec.volumes[?(@.name=="otel-sampling-config")].configMap.name}')
  [ "$vol" = sampler ] || fail "$2: sampling volume '$vol'"
done
note "enabled: gateway, multiorch and pool pods carry OTEL_* and the sampler ConfigMap; Ready"
cluster disabled
wait_for 60 "OTEL gone from the gateway" sh -c "! kubectl get -n $ns deploy -l multigres.com/cluster=$c,app.kubernetes.io/component=multigateway -o jsonpath='{.items[0].spec.template.spec.containers[0].env[*].name}' | grep -q OTEL_" ||
  fail "gateway still has: $(envs deploy multigateway)"
[ -z "$(envs sts shard-pool)" ] || fail "pool still has: $(envs sts shard-pool)"
note "disabled: no OTEL_* left"
operator_alive otel || fail "operator exited"
