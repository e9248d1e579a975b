#!/usr/bin/env bash
# Image update policy (issue #12 part 2): the operator's default image set
# comes from MULTIGRES_IMAGE_<COMPONENT>; a changed set rolls an `immediate`
# cluster at once and holds a `lazy` one on the set it runs (recorded in the
# multigres.com/applied-images annotation) with ImageRolloutPending=True,
# until spec.imageUpdatePolicy.acknowledgedRevision names the new revision.
# A wrong acknowledgement changes nothing (RevisionMismatch, a Warning Event).
# Checked on the gateway Deployments' images and on status.images.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-images
new_namespace $ns
trap 'stop_operator images' EXIT
run_with_gateway() { # IMAGE: the operator with that default multigateway image
  stop_operator images
  MULTIGRES_IMAGE_MULTIGATEWAY=$1 start_operator images --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
  wait_log images '"msg":"default images: revision ' || fail "no log line for the default image set"
}
gateway_image() { # CLUSTER
  jget -n $ns deploy -l "multigres.com/cluster=$1,app.kubernetes.io/component=multigateway" \
    -o jsonpath='{.items[*].spec.template.spec.containers[0].image}'
}
images() { jget -n $ns mgc "$1" -o jsonpath="{.status.images.$2}"; }
pending() { jget -n $ns mgc "$1" -o jsonpath='{.status.conditions[?(@.type=="ImageRolloutPending")].status}/{.status.conditions[?(@.type=="ImageRolloutPending")].reason}'; }
cluster() { # NAME STRATEGY [ACK]
  printf 'apiVersion: multigres.com/v1alpha1\nkind: MultigresCluster\nmetadata: {name: %s, namespace: %s}\nspec:\n  imageUpdatePolicy: {strategy: %s%s}\n  cells: [{name: zone-a, zone: us-east-1a}]\n' \
    "$1" $ns "$2" "${3:+, acknowledgedRevision: \"$3\"}" | kubectl apply -f - >/dev/null
}

run_with_gateway example.com/gw:a
cluster slow lazy
cluster fast immediate
for c in slow fast; do
  wait_for 60 "$c's gateway runs gw:a" sh -c "[ \"\$(kubectl get -n $ns deploy -l multigres.com/cluster=$c,app.kubernetes.io/component=multigateway -o jsonpath='{.items[*].spec.template.spec.containers[0].image}')\" = example.com/gw:a ]" ||
    fail "$c's gateway image: '$(gateway_image $c)'"
done
wait_for 30 "status.images on slow" sh -c "[ -n \"\$(kubectl get -n $ns mgc slow -o jsonpath='{.status.images.appliedRevision}')\" ]" || fail "no status.images"
rev_a=$(images slow appliedRevision)
[ "$(images slow availableRevision)" = "$rev_a" ] && [ "$(images slow updateStrategy)" = lazy ] && [ "$(images slow source)" = defaults ] ||
  fail "status.images of slow: $(jget -n $ns mgc slow -o jsonpath='{.status.images}')"
[ "$(pending slow)" = False/ImagesUpToDate ] || fail "ImageRolloutPending on slow before any change: $(pending slow)"
rec=$(jget -n $ns mgc slow -o jsonpath='{.metadata.annotations.multigres\.com/applied-images}')
grep -qF '"multigateway":"example.com/gw:a"' <<<"$rec" || fail "the applied-images record: $rec"
note "gw:a: both clusters on revision $rev_a, recorded in the annotation"

# a new default set: the immediate cluster rolls, the lazy one waits
run_with_gateway example.com/gw:b
wait_for 60 "fast's gateway runs gw:b" sh -c "[ \"\$(kubectl get -n $ns deploy -l multigres.com/cluster=fast,app.kubernetes.io/component=multigateway -o jsonpath='{.items[*].spec.template.spec.containers[0].image}')\" = example.com/gw:b ]" ||
  fail "the immediate cluster did not adopt gw:b: '$(gateway_image fast)'"
wait_for 30 "slow says the rollout waits" sh -c "[ \"\$(kubectl get -n $ns mgc slow -o jsonpath='{.status.conditions[?(@.type==\"ImageRolloutPending\")].reason}')\" = AwaitingAcknowledgement ]" ||
  fail "ImageRolloutPending on slow: $(pending slow)"
rev_b=$(images slow availableRevision)
[ -n "$rev_b" ] && [ "$rev_b" != "$rev_a" ] && [ "$(images slow appliedRevision)" = "$rev_a" ] ||
  fail "revisions on slow: applied $(images slow appliedRevision), available $rev_b (was $rev_a)"
[ "$(images slow available.multigateway)" = example.com/gw:b ] || fail "status.images.available: $(images slow available)"
[ "$(gateway_image slow)" = example.com/gw:a ] || fail "the lazy cluster rolled without an acknowledgement: $(gateway_image slow)"
msg=$(jget -n $ns mgc slow -o jsonpath='{.status.conditions[?(@.type=="ImageRolloutPending")].message}')
grep -qF "acknowledgedRevision is set to \"$rev_b\"" <<<"$msg" || fail "the condition does not say what to set: $msg"
note "gw:b: fast rolled; slow holds $rev_a: $msg"

# a wrong acknowledgement: nothing moves, a Warning says why
cluster slow lazy 0123456789ab
wait_for 30 "RevisionMismatch" sh -c "[ \"\$(kubectl get -n $ns mgc slow -o jsonpath='{.status.conditions[?(@.type==\"ImageRolloutPending\")].reason}')\" = RevisionMismatch ]" ||
  fail "a wrong acknowledgement: $(pending slow)"
wait_for 20 "an ImagesRevisionMismatch Event" sh -c "kubectl get events -n $ns --field-selector reason=ImagesRevisionMismatch -o name | grep -q ." ||
  fail "no Warning Event for the wrong acknowledgement"
sleep 2
[ "$(gateway_image slow)" = example.com/gw:a ] || fail "a wrong acknowledgement rolled the cluster: $(gateway_image slow)"

# the right one: adopted, recorded, said
cluster slow lazy "$rev_b"
wait_for 60 "slow's gateway runs gw:b" sh -c "[ \"\$(kubectl get -n $ns deploy -l multigres.com/cluster=slow,app.kubernetes.io/component=multigateway -o jsonpath='{.items[*].spec.template.spec.containers[0].image}')\" = example.com/gw:b ]" ||
  fail "the acknowledged set was not adopted: $(gateway_image slow)"
wait_for 30 "slow up to date" sh -c "[ \"\$(kubectl get -n $ns mgc slow -o jsonpath='{.status.images.appliedRevision}')\" = $rev_b ]" ||
  fail "appliedRevision after the acknowledgement: $(images slow appliedRevision)"
wait_for 10 "ImageRolloutPending False" sh -c "[ \"\$(kubectl get -n $ns mgc slow -o jsonpath='{.status.conditions[?(@.type==\"ImageRolloutPending\")].status}')\" = False ]" ||
  fail "ImageRolloutPending after adoption: $(pending slow)"
rec=$(jget -n $ns mgc slow -o jsonpath='{.metadata.annotations.multigres\.com/applied-images}')
grep -qF '"multigateway":"example.com/gw:b"' <<<"$rec" || fail "the record after adoption: $rec"
ev=$(jget -n $ns events --field-selector reason=ImagesUpdated,involvedObject.name=slow -o jsonpath='{.items[*].message}')
grep -qF "switching to default image set $rev_b (was $rev_a): multigateway: example.com/gw:a -> example.com/gw:b" <<<"$ev" ||
  fail "no ImagesUpdated Event naming the change: $ev"
[ -z "$(images slow available)" ] || fail "status.images.available stayed after adoption: $(images slow available)"
# the spec was never written: only the user's fields are in it
[ -z "$(jget -n $ns mgc slow -o jsonpath='{.spec.images}')" ] || fail "images were written into the spec"
note "acknowledged $rev_b: adopted, recorded, Event: $ev"
operator_alive images || fail "operator exited"
