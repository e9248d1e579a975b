#!/usr/bin/env bash
# Argo CD: an Application over config/samples (every sample, the templates and
# the default templates, recursed) with automated sync, server-side apply and
# no ignoreDifferences reaches Synced/Healthy, then stays Synced/Healthy with
# no new sync for MGOP_GITOPS_SOAK seconds while Argo CD keeps comparing.
set -euo pipefail
source "$MGOP_CP_DIR/env"; source "$(dirname "$0")/../integration/lib.sh"; source "$(dirname "$0")/lib.sh"
ns=gitops-argo app=samples
git_repo samples
mkdir -p "$GITOPS_DIR/work/samples/samples"
cp -r "$ROOT"/config/samples/. "$GITOPS_DIR/work/samples/samples/"
rev=$(git_commit samples "config/samples as shipped")
served=$(git ls-remote "$GIT_URL/samples.git" refs/heads/main) || fail "the git server does not answer"
[ "${served%%[[:space:]]*}" = "$rev" ] || fail "the git server serves '$served', not $rev"
new_namespace $ns
# what the samples expect to exist already: backup-s3.yaml's IRSA table group
# runs as ServiceAccount analytics-backup-irsa (StorageClass nfs-client for
# backup-filesystem.yaml is made by run.sh)
kubectl -n $ns create serviceaccount analytics-backup-irsa >/dev/null
t0=$(date +%s)
kubectl apply -f - >/dev/null <<EOF2
apiVersion: argoproj.io/v1alpha1
kind: Application
metadata: {name: $app, namespace: argocd}
spec:
  project: default
  source:
    repoURL: $GIT_URL/samples.git
    targetRevision: main
    path: samples
    directory: {recurse: true}
  destination: {server: https://kubernetes.default.svc, namespace: $ns}
  syncPolicy:
    automated: {prune: true}
    syncOptions: [ServerSideApply=true]
EOF2
wait_app $app Synced/Healthy 420 || fail "not Synced/Healthy"
converge=$(elapsed_since "$t0")
n=$(app_get $app '{range .status.resources[*]}{.kind}{"\n"}{end}' | grep -c .)
[ "$n" -ge 10 ] || fail "only $n resources in the application"
ign=$(app_get $app '{.spec.ignoreDifferences}')
[ -z "$ign" ] || fail "the application has ignoreDifferences: $ign"
clusters_ready $ns || fail "Argo CD says Healthy but not every MultigresCluster is Ready"

# soak: every comparison finds no diff, and nothing is synced again
hist=$(app_get $app '{.status.history[*].id}')
seen=() end=$(( $(date +%s) + MGOP_GITOPS_SOAK ))
while [ "$(date +%s)" -lt "$end" ]; do
  s=$(app_state $app)
  [ "$s" = Synced/Healthy ] || fail "drifted to $s during the soak: $(app_get $app '{range .status.resources[?(@.status!="Synced")]}{.kind}/{.name} {end}')"
  r=$(app_get $app '{.status.reconciledAt}')
  [[ " ${seen[*]} " == *" $r "* ]] || seen+=("$r")
  sleep 3
done
[ "$(app_get $app '{.status.history[*].id}')" = "$hist" ] || fail "Argo CD synced again during the soak (history $hist -> $(app_get $app '{.status.history[*].id}'))"
[ "${#seen[@]}" -ge 2 ] || fail "Argo CD compared only ${#seen[@]} time(s) during the soak; the soak proved nothing"
echo "Synced/Healthy in ${converge}s ($n resources, no ignoreDifferences); no diff and no re-sync for ${MGOP_GITOPS_SOAK}s over ${#seen[@]} comparisons"
