#!/usr/bin/env bash
# Flux: a Kustomization (wait: true, timeout 3m) over a cluster that names a
# ShardTemplate that does not exist fails fast, well before its timeout,
# because the operator reports Stalled (kstatus: Failed). Flux v1.9's Ready
# condition names the object and its kstatus ("failed early due to stalled
# resources: [MultigresCluster/NS/NAME status: 'Failed']"), not the object's
# message (fluxcd/pkg/ssa WaitForSet drops it); the operator's Stalled message
# is on that object, and the test checks it is there and says what to fix.
# Uses g_50's GitRepository.
set -euo pipefail
source "$MGOP_CP_DIR/env"; source "$(dirname "$0")/../integration/lib.sh"; source "$(dirname "$0")/lib.sh"
ns=gitops-flux-broken c=broken
w=$GITOPS_DIR/work/fleet
kubectl -n flux-system get gitrepository fleet >/dev/null 2>&1 || fail "no GitRepository fleet (g_50_flux_wait makes it)"
mkdir -p "$w/broken"
cat >"$w/broken/cluster.yaml" <<EOF2
apiVersion: multigres.com/v1alpha1
kind: MultigresCluster
metadata: {name: $c}
spec:
  cells: [{name: zone-a, zone: us-east-1a}]
  templateDefaults: {shardTemplate: no-such-shard-template}
EOF2
git_commit fleet "a cluster naming a missing template" >/dev/null
new_namespace $ns
kubectl -n flux-system annotate gitrepository fleet reconcile.fluxcd.io/requestedAt="$(date +%s)" --overwrite >/dev/null
t0=$(date +%s)
kubectl apply -f - >/dev/null <<EOF2
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: mgop-broken, namespace: flux-system}
spec:
  interval: 1m
  timeout: 3m
  path: ./broken
  prune: true
  wait: true
  targetNamespace: $ns
  sourceRef: {kind: GitRepository, name: fleet}
EOF2
wait_for 170 "mgop-broken fails" sh -c "kubectl -n flux-system get kustomization mgop-broken -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx False" ||
  fail "mgop-broken did not fail before its 3m timeout: $(ks_cond mgop-broken reason) $(ks_cond mgop-broken message)"
took=$(elapsed_since "$t0")
op=$(kubectl -n $ns get mgc $c -o jsonpath='{.status.conditions[?(@.type=="Stalled")].message}')
[[ $op == *no-such-shard-template* ]] || fail "the operator's Stalled message does not name the template: $op"
msg=$(ks_cond mgop-broken message)
reason=$(ks_cond mgop-broken reason)
note "mgop-broken: $reason: $msg"
[ "$reason" = HealthCheckFailed ] || fail "reason is $reason, not HealthCheckFailed"
[[ $msg == *"failed early due to stalled resources"*"MultigresCluster/$ns/$c status: 'Failed'"* ]] ||
  fail "Flux does not name the stalled cluster: $msg"
kubectl -n flux-system delete kustomization mgop-broken --wait=true --timeout=60s >/dev/null || fail "mgop-broken was not deleted"
echo "failed fast in ${took}s (timeout 3m): $reason naming MultigresCluster/$ns/$c 'Failed'; the cluster's Stalled message: ${op:0:70}..."
