#!/usr/bin/env bash
# Templates and the defaults chain, live:
#  - status.consumers and the in-use finalizer follow who resolves a template;
#  - changing a ShardTemplate's replicas rolls exactly the pools that use it;
#  - deleting the "default" template a cluster relies on makes the cluster
#    Stalled (deletion held, children untouched), and the deletion completes
#    once no cluster uses it;
#  - a missing template stalls the cluster naming the field; creating it
#    un-stalls the cluster.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
S=$ROOT/config/samples ns=it-tmpl
new_namespace $ns
start_operator tmpl --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
trap 'stop_operator tmpl' EXIT
kubectl apply -n $ns -f $S/templates -f $S/default-templates -f $S/templated-cluster.yaml -f $S/minimal.yaml \
  -f $S/no-templates.yaml >/dev/null

consumers() { jget -n $ns "$1" "$2" -o jsonpath='{.status.consumers}'; }
wait_for 90 "ShardTemplate standard-shard consumed by standard-ha-cluster" \
  sh -c "kubectl get -n $ns shardtemplate standard-shard -o jsonpath='{.status.consumers}' | grep -qx '\[\"standard-ha-cluster\"\]'" ||
  fail "consumers of standard-shard: $(consumers shardtemplate standard-shard)"
wait_for 30 "ShardTemplate default consumed by minimal only" \
  sh -c "kubectl get -n $ns shardtemplate default -o jsonpath='{.status.consumers}' | grep -qx '\[\"minimal\"\]'" ||
  fail "consumers of ShardTemplate default: $(consumers shardtemplate default)"
# the cluster's status names what it resolved; its spec stays as applied
rt=$(jget -n $ns mgc standard-ha-cluster -o jsonpath='{.status.resolvedTemplates.coreTemplates} {.status.resolvedTemplates.cellTemplates} {.status.resolvedTemplates.shardTemplates}')
[ "$rt" = '["standard-core"] ["standard-cell"] ["standard-shard"]' ] || fail "status.resolvedTemplates: $rt"
for t in shardtemplate/standard-shard shardtemplate/default celltemplate/standard-cell coretemplate/standard-core; do
  [ "$(jget -n $ns $t -o jsonpath='{.metadata.finalizers}')" = '["multigres.com/template-in-use"]' ] ||
    fail "$t in use but has no in-use finalizer"
done

# every pool StatefulSet exists before we look at generations
for c in standard-ha-cluster minimal inline; do
  wait_for 90 "pool StatefulSets of $c" sh -c "kubectl get -n $ns sts -l multigres.com/cluster=$c,app.kubernetes.io/component=shard-pool -o name | grep -q ." ||
    fail "no pool StatefulSet for $c"
done
sleep 3 # let the first rollout settle
gens() { kubectl get -n $ns sts -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.generation} {.metadata.labels.multigres\.com/cluster} {.spec.replicas}{"\n"}{end}' | sort; }
before=$(gens)

# 1. change the ShardTemplate: only standard-ha-cluster's pools roll
kubectl patch -n $ns shardtemplate standard-shard --type=merge -p '{"spec":{"pools":{"main-app":{"replicasPerCell":2}}}}' >/dev/null
wait_for 60 "standard-ha-cluster pools at 2 replicas" sh -c \
  "! kubectl get -n $ns sts -l multigres.com/cluster=standard-ha-cluster,app.kubernetes.io/component=shard-pool -o jsonpath='{range .items[*]}{.spec.replicas}{\"\\n\"}{end}' | grep -vx 2" ||
  fail "pools of standard-ha-cluster did not scale to 2"
sleep 3
after=$(gens)
changed=$(join <(echo "$before") <(echo "$after") | awk '$2 != $5 {print $1, $3}')
pools=$(kubectl get -n $ns sts -l multigres.com/cluster=standard-ha-cluster,app.kubernetes.io/component=shard-pool -o name | wc -l)
[ "$(echo "$changed" | grep -c .)" = "$pools" ] || fail "expected exactly the $pools pools to roll, changed: $changed"
others=$(grep -v " standard-ha-cluster$" <<<"$changed" || true)
[ -z "$others" ] || fail "a StatefulSet of another cluster changed: $changed"
for sts in $(echo "$changed" | awk '{print $1}'); do
  [ "$(jget -n $ns sts $sts -o jsonpath='{.metadata.labels.app\.kubernetes\.io/component}')" = shard-pool ] || fail "$sts is not a pool"
done
note "template change rolled exactly $pools pools of standard-ha-cluster"

# 2. delete the default ShardTemplate that minimal relies on
before=$(gens)
kubectl delete -n $ns shardtemplate default --wait=false >/dev/null
wait_for 30 "minimal Stalled on the deleted template" sh -c \
  "kubectl get -n $ns mgc minimal -o jsonpath='{.status.conditions[?(@.type==\"Stalled\")].reason}' | grep -qx TemplateDeleting" ||
  fail "minimal is not Stalled: $(jget -n $ns mgc minimal -o jsonpath='{.status.conditions}')"
msg=$(jget -n $ns mgc minimal -o jsonpath='{.status.conditions[?(@.type=="Stalled")].message}')
grep -q 'ShardTemplate "default"' <<<"$msg" || fail "Stalled message does not name the template: $msg"
[ -n "$(jget -n $ns shardtemplate default -o jsonpath='{.metadata.deletionTimestamp}')" ] || fail "the template in use vanished"
[ "$(jget -n $ns mgc minimal -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = False ] || fail "minimal still Ready"
sleep 3
[ "$(gens)" = "$before" ] || { diff <(echo "$before") <(gens) >&2 || true; fail "a StatefulSet changed while stalled"; }
operator_alive tmpl || fail "operator exited"
# the deletion completes once nobody uses it
kubectl delete -n $ns mgc minimal --wait=false >/dev/null
wait_for 30 "ShardTemplate default gone" sh -c "! kubectl get -n $ns shardtemplate default" ||
  fail "ShardTemplate default still held: $(jget -n $ns shardtemplate default -o jsonpath='{.metadata.finalizers} {.status}')"

# 3. a missing template: Stalled naming the field, until it exists
sed -e 's/^  name: minimal$/  name: ghost/' $S/minimal.yaml | sed -e 's/^spec:$/spec:\n  templateDefaults:\n    shardTemplate: later/' |
  kubectl apply -n $ns -f - >/dev/null
wait_for 30 "ghost Stalled TemplateNotFound" sh -c \
  "kubectl get -n $ns mgc ghost -o jsonpath='{.status.conditions[?(@.type==\"Stalled\")].reason}' | grep -qx TemplateNotFound" ||
  fail "ghost not Stalled: $(jget -n $ns mgc ghost -o jsonpath='{.status.conditions}')"
msg=$(jget -n $ns mgc ghost -o jsonpath='{.status.conditions[?(@.type=="Stalled")].message}')
grep -q 'spec.templateDefaults.shardTemplate' <<<"$msg" || fail "message does not name the field: $msg"
sed -e 's/^  name: standard-shard$/  name: later/' $S/templates/shard.yaml | kubectl apply -n $ns -f - >/dev/null
wait_for 30 "ghost no longer Stalled" sh -c \
  "kubectl get -n $ns mgc ghost -o jsonpath='{.status.conditions[?(@.type==\"Stalled\")].status}' | grep -qx False" ||
  fail "ghost still Stalled after its template appeared"
operator_alive tmpl || fail "operator exited"
kubectl delete namespace $ns --wait=false >/dev/null
