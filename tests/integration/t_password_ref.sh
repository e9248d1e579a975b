#!/usr/bin/env bash
# spec.postgresPasswordSecretRef: a cluster naming a Secret that does not
# exist is not Ready and says which Secret and key to create (its pool
# StatefulSet is not made, so no pod waits mounting nothing); once the
# Secret exists with the key, the pools mount exactly that Secret and key as
# the password file, the operator makes no password Secret of its own, and
# it never changes the user's Secret.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-pwref c=pwref
new_namespace $ns
trap 'stop_operator pwref' EXIT
start_operator pwref --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
printf 'apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: %s, namespace: %s}\nspec:\n  cells: [{name: zone-a, zone: us-east-1a}]\n  postgresPasswordSecretRef: {name: team-pg, key: superuser}\n' \
  $c $ns | kubectl apply -f - >/dev/null
msg() { jget -n $ns mgc $c -o jsonpath='{.status.message}'; }
wait_for 60 "the cluster names the missing Secret" sh -c "kubectl get -n $ns mgc $c -o jsonpath='{.status.message}' | grep -qF 'spec.postgresPasswordSecretRef names Secret team-pg, which does not exist in namespace $ns: create it with the superuser password under the key superuser'" ||
  fail "status.message: $(msg)"
[ -z "$(jget -n $ns sts -l "multigres.com/cluster=$c,app.kubernetes.io/component=shard-pool" -o name)" ] || fail "pool StatefulSets made without the Secret"
note "missing: $(msg)"
kubectl -n $ns create secret generic team-pg --from-literal=other=x >/dev/null
wait_for 60 "the cluster names the missing key" sh -c "kubectl get -n $ns mgc $c -o jsonpath='{.status.message}' | grep -qF 'Secret team-pg has no key superuser'" ||
  fail "status.message with the key missing: $(msg)"
kubectl -n $ns patch secret team-pg --type=merge -p '{"stringData":{"superuser":"s3cret"}}' >/dev/null
rv=$(jget -n $ns secret team-pg -o jsonpath='{.metadata.resourceVersion}')
wait_for 90 "pool StatefulSet mounting team-pg" sh -c "kubectl get -n $ns sts -l multigres.com/cluster=$c,app.kubernetes.io/component=shard-pool -o jsonpath='{.items[*].spec.template.spec.volumes[?(@.name==\"postgres-password\")].secret.secretName}' | grep -qx team-pg" ||
  fail "the pools do not mount team-pg: $(msg)"
item=$(jget -n $ns sts -l "multigres.com/cluster=$c,app.kubernetes.io/component=shard-pool" -o jsonpath='{.items[0].spec.template.spec.volumes[?(@.name=="postgres-password")].secret.items[0].key}')
[ "$item" = superuser ] || fail "mounted key: $item"
wait_for 60 "$c Ready" sh -c "[ \"\$(kubectl get -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}')\" = True ]" ||
  fail "not Ready with the Secret: $(msg)"
[ -z "$(jget -n $ns secrets -o name | grep -- '-postgres-password$' || true)" ] || fail "the operator made its own password Secret: $(jget -n $ns secrets -o name)"
[ "$(jget -n $ns secret team-pg -o jsonpath='{.metadata.resourceVersion}')" = "$rv" ] || fail "the user's Secret was changed"
note "with team-pg/superuser: mounted as the password file, Ready, no Secret of the operator's, the user's untouched"
operator_alive pwref || fail "operator exited"
