#!/usr/bin/env bash
# postgresConfigRef (deprecated in favour of postgresConfig, honoured as the
# reference operator does) on the real API server:
#  - the ConfigMap's key is mounted into the pool pods and included first in
#    the shard's postgresql.conf, postgresConfig's lines after it;
#  - its content is read and hashed onto the pods: an edited ConfigMap rolls
#    them at the cluster's next turn (here: an annotation);
#  - a line setting what the data plane owns stalls the cluster, naming the
#    ConfigMap, key and line; a missing ConfigMap is reported and retried.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-pgref c=pgref
new_namespace $ns
trap 'stop_operator pgref' EXIT
start_operator pgref --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
conf() { # CONTENT: the ConfigMap "legacy", key custom.conf
  kubectl -n $ns create configmap legacy --from-literal=custom.conf="$1" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
}
cluster() { # NAME CONFIGMAP
  { printf 'apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: %s, namespace: %s}\nspec:\n' "$1" $ns
    printf '  cells: [{name: zone-a, zone: us-east-1a}]\n'
    databases_yaml
    printf '      - name: 0-inf\n        spec:\n          postgresConfigRef: {name: %s, key: custom.conf}\n' "$2"
    printf '          postgresConfig: {work_mem: 8MB}\n'
  } | kubectl apply -f - >/dev/null
}
pool() { jget -n $ns sts -l "multigres.com/cluster=$c,app.kubernetes.io/component=shard-pool" -o jsonpath="$1"; }
hash() { pool '{.items[0].spec.template.metadata.annotations.multigres\.com/postgres-config-hash}'; }
messages() { jget -n $ns mgc "$1" -o jsonpath='{range .status.conditions[*]}{.message}{"\n"}{end}'; }
conf "shared_buffers = '128MB'
# a comment
log_min_duration_statement = 250"
cluster $c legacy
wait_for 90 "the pool StatefulSet with the ConfigMap mounted" sh -c "[ -n \"\$(kubectl get -n $ns sts -l multigres.com/cluster=$c,app.kubernetes.io/component=shard-pool -o jsonpath='{.items[0].spec.template.spec.volumes[?(@.name==\"postgres-config-ref\")].configMap.name}')\" ]" ||
  fail "no postgres-config-ref volume: $(messages $c)"
[ "$(pool '{.items[0].spec.template.spec.volumes[?(@.name=="postgres-config-ref")].configMap.items[0].key}')" = custom.conf ] ||
  fail "volume items"
conf_cm=$(jget -n $ns cm -l "multigres.com/cluster=$c,app.kubernetes.io/component=postgres-config" -o jsonpath='{.items[0].data.postgresql\.conf}')
[ "$conf_cm" = "include '/etc/postgres-config-ref/custom.conf'
work_mem = '8MB'" ] || fail "postgresql.conf: $conf_cm"
h1=$(hash)
[ -n "$h1" ] || fail "no config hash on the pods"
note "mounted and included first (then postgresConfig); hash $h1"
conf "shared_buffers = '256MB'"
kubectl annotate -n $ns mgc $c it/poke=1 --overwrite >/dev/null
wait_for 60 "a new hash after the ConfigMap changed" sh -c "[ \"\$(kubectl get -n $ns sts -l multigres.com/cluster=$c,app.kubernetes.io/component=shard-pool -o jsonpath='{.items[0].spec.template.metadata.annotations.multigres\.com/postgres-config-hash}')\" != $h1 ]" ||
  fail "the edited ConfigMap did not change the pods' hash"
note "edited ConfigMap: hash $(hash) (the pods roll)"
conf "port = 5433"
kubectl annotate -n $ns mgc $c it/poke=2 --overwrite >/dev/null
want="postgresConfigRef: ConfigMap legacy, key custom.conf, line 1: port is set by the data plane"
has_message() { # CLUSTER TEXT: a condition's message contains TEXT (captured, then matched)
  local m
  m=$(messages "$1")
  [[ $m == *"$2"* ]]
}
wait_for 60 "Stalled naming the line" has_message $c "$want" ||
  fail "no stall naming the line: $(messages $c)"
note "a data-plane setting in the ConfigMap: stalled, naming ConfigMap, key and line"
cluster pgref-missing nope
wait_for 60 "a message for the missing ConfigMap" has_message pgref-missing "ConfigMap nope not found in namespace $ns" ||
  fail "missing ConfigMap not reported: $(messages pgref-missing)"
note "a missing ConfigMap: reported (and retried)"
operator_alive pgref || fail "operator exited"
