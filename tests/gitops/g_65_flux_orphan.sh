#!/usr/bin/env bash
# Flux: orphan on prune, reclaim on re-apply (seed 000), through
# kustomize-controller's prune (background propagation).
#  - deletion-policy Orphan is added to the minimal cluster in Git; the
#    operator puts its finalizer on it;
#  - the file is removed from Git: mgop-clusters prunes the cluster; its
#    StatefulSets, PVCs and password Secret stay, unowned and labelled
#    orphaned-from=<uid>, with the same pods; mgop-clusters is Ready;
#  - the file is restored: adopted (same uids, owned again, no pod
#    restarted), and mgop-clusters (wait: true) Ready once the cluster is.
# Needs g_50's GitRepository and Kustomizations.
set -euo pipefail
source "$MGOP_CP_DIR/env"; source "$(dirname "$0")/../integration/lib.sh"; source "$(dirname "$0")/lib.sh"
ns=gitops-flux c=minimal
w=$GITOPS_DIR/work/fleet/clusters
[ -f "$w/minimal.yaml" ] || fail "no clusters/minimal.yaml in the fleet repository (g_50_flux_wait makes it)"
kick() { # fetch now and apply now, rather than at the next interval
  local t; t=$(date +%s.%N)
  kubectl -n flux-system annotate gitrepository fleet reconcile.fluxcd.io/requestedAt="$t" --overwrite >/dev/null
  kubectl -n flux-system annotate kustomization mgop-clusters reconcile.fluxcd.io/requestedAt="$t" --overwrite >/dev/null
}
applied() { # applied REV: mgop-clusters applied Git revision REV and is Ready
  [[ $(kubectl -n flux-system get kustomization mgop-clusters -o jsonpath='{.status.lastAppliedRevision}') == *"$1"* ]] &&
    [ "$(ks_ready mgop-clusters)" = True ]
}

set_orphan_annotation "$w/minimal.yaml" $c
rev=$(git_commit fleet "minimal: deletion-policy Orphan")
kick
orphan_armed $ns $c
wait_for 180 "mgop-clusters at $rev" applied "$rev" || fail "mgop-clusters did not apply $rev: $(ks_cond mgop-clusters message)"
cp "$w/minimal.yaml" "$GITOPS_DIR/flux-minimal-orphan.yaml"

git -C "$w" rm -q minimal.yaml
rev=$(git_commit fleet "drop the minimal cluster")
t0=$(date +%s)
kick
wait_for 180 "the cluster pruned" sh -c "! kubectl -n $ns get mgc $c" || fail "Flux did not prune $c"
pruned=$(elapsed_since "$t0")
n=$(orphan_pruned $ns $c)
wait_for 180 "mgop-clusters at $rev" applied "$rev" || fail "mgop-clusters not Ready after the prune: $(ks_cond mgop-clusters message)"

cp "$GITOPS_DIR/flux-minimal-orphan.yaml" "$w/minimal.yaml"
rev=$(git_commit fleet "the minimal cluster again")
t0=$(date +%s)
kick
wait_for 180 "re-created" kubectl -n $ns get mgc $c || fail "Flux did not re-create $c"
adopted() { [ -z "$(kubectl get -n $ns sts,pvc,secret -l multigres.com/cluster=$c,multigres.com/orphaned-from -o name)" ]; }
wait_for 180 "the orphans adopted" adopted || fail "still orphaned: $(kubectl get -n $ns sts,pvc,secret -l multigres.com/orphaned-from -o name); $(kubectl -n $ns get mgc $c -o jsonpath='{.status.conditions}')"
wait_for 240 "mgop-clusters Ready at $rev" applied "$rev" || fail "mgop-clusters not Ready after the reclaim: $(ks_cond mgop-clusters message)"
clusters_ready $ns || fail "mgop-clusters Ready while a cluster is not"
reclaimed=$(elapsed_since "$t0")
check_adopted $ns $c "$ORPH_BEFORE" "$ORPH_PODS"
echo "pruned (background) in ${pruned}s: $n objects ($ORPH_NSTS StatefulSets) orphaned with the same $(grep -c = <<<"$ORPH_PODS") pods; re-applied: adopted and Ready in ${reclaimed}s, no pod restarted"
