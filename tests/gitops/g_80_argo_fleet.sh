#!/usr/bin/env bash
# Argo CD: a two-site fleet (seed 004), examples/fleet as shipped.
#  - a second test control plane beside the first; one Argo CD (on the
#    first) manages both through cluster Secrets edge-a (the first control
#    plane, by its URL) and edge-b (the second); each runs its own operator;
#  - the root Application (argocd/root.yaml) syncs argocd/apps/: per site,
#    the CRDs (wave -2) then the site's overlay (wave 0), every Application
#    Synced/Healthy; the operator Applications (wave -1) are left out, as
#    the test runs each operator out of cluster;
#  - the order holds on the second site, which starts empty: CRDs, then
#    the ShardTemplate, then the MultigresCluster (creation times);
#  - each site gets its own overlay (two cells and 2Gi on edge-a, one cell
#    and 1Gi on edge-b);
#  - a change committed to edge-a's overlay reaches edge-a only; promoted by
#    a second commit to edge-b's overlay, it reaches exactly edge-b.
set -euo pipefail
source "$MGOP_CP_DIR/env"; source "$(dirname "$0")/../integration/lib.sh"; source "$(dirname "$0")/lib.sh"
CP="$ROOT/tests/controlplane/cp.sh"
A_DIR=$MGOP_CP_DIR B_DIR=$MGOP_CP_DIR-b
A_KC=$MGOP_KUBECONFIG A_URL=$MGOP_APISERVER_URL
ka() { kubectl --kubeconfig "$A_KC" "$@"; }
kb() { kubectl --kubeconfig "$B_DIR/kubeconfig" "$@"; }
cleanup() {
  stop_operator fleet-b
  MGOP_CP_DIR=$B_DIR "$CP" down >&2 || true
}
trap cleanup EXIT

# ---- the second site
MGOP_CP_DIR=$B_DIR "$CP" up >&2 || fail "the second control plane did not come up"
B_URL=$(sed -n 's/^export MGOP_APISERVER_URL="\(.*\)"$/\1/p' "$B_DIR/env")
[ -n "$B_URL" ] || fail "no MGOP_APISERVER_URL in $B_DIR/env"
# the operator watches from the start; the CRDs arrive with the first wave
start_operator fleet-b --kubeconfig "$B_DIR/kubeconfig"

# ---- Git: the operator's repository (its CRDs at tag v0.1.0) and the fleet's
fleet_repos
fl=$FLEET_WORK

# ---- Argo CD: both sites as cluster Secrets, the Application health check
cluster_secret() { # NAME URL KUBECONFIG
  python3 - "$1" "$2" "$3" <<'PY' | ka apply -f - >/dev/null
import json, sys, yaml
name, url, kc = sys.argv[1:]
k = yaml.safe_load(open(kc))
cfg = {"tlsClientConfig": {"caData": k["clusters"][0]["cluster"]["certificate-authority-data"],
                           "certData": k["users"][0]["user"]["client-certificate-data"],
                           "keyData": k["users"][0]["user"]["client-key-data"]}}
print(json.dumps({"apiVersion": "v1", "kind": "Secret",
                  "metadata": {"name": name, "namespace": "argocd",
                               "labels": {"argocd.argoproj.io/secret-type": "cluster"}},
                  "stringData": {"name": name, "server": url, "config": json.dumps(cfg)}}))
PY
}
cluster_secret edge-a "$A_URL" "$A_KC" || fail "cluster Secret edge-a rejected"
cluster_secret edge-b "$B_URL" "$B_DIR/kubeconfig" || fail "cluster Secret edge-b rejected"
ka -n argocd patch configmap argocd-cm --type merge --patch-file "$ROOT/examples/fleet/argocd/argocd-cm-app-health.yaml" >/dev/null ||
  fail "argocd-cm would not take the Application health check"
t0=$(date +%s)
ka apply -f "$fl/argocd/root.yaml" >/dev/null || fail "the root Application was rejected"
for a in fleet edge-a-crds edge-b-crds edge-a-multigres edge-b-multigres; do
  wait_app $a Synced/Healthy 480 || fail "$a is not Synced/Healthy"
done
converge=$(elapsed_since "$t0")
ka -n multigres wait --for=condition=Ready mgc/edge --timeout=60s >/dev/null || fail "edge-a's cluster is not Ready"
kb -n multigres wait --for=condition=Ready mgc/edge --timeout=60s >/dev/null || fail "edge-b's cluster is not Ready"

# ---- the waves, on the site that started empty
python3 - "$B_DIR/kubeconfig" <<'PY' || fail "edge-b was not synced in wave order"
import json, subprocess, sys
kc = sys.argv[1]
def get(*a): return json.loads(subprocess.check_output(["kubectl", "--kubeconfig", kc, *a, "-o", "json"]))
crd = get("get", "crd", "multigresclusters.multigres.com")["metadata"]["creationTimestamp"]
tpl = get("-n", "multigres", "get", "shardtemplate", "edge-shard")["metadata"]["creationTimestamp"]
cl = get("-n", "multigres", "get", "multigrescluster", "edge")["metadata"]["creationTimestamp"]
assert crd <= tpl <= cl, f"CRD {crd}, ShardTemplate {tpl}, MultigresCluster {cl}"
PY

# ---- each site its own overlay
site() { # KUBECTL-FUNCTION: "cells size replicas template-generation cluster-generation"
  echo "$("$1" -n multigres get mgc edge -o jsonpath='{range .spec.cells[*]}{.name},{end}') $("$1" -n multigres get shardtemplate edge-shard -o jsonpath='{.spec.pools.main.storage.size} {.spec.pools.main.replicasPerCell} {.metadata.generation}') $("$1" -n multigres get mgc edge -o jsonpath='{.metadata.generation}')"
}
a0=$(site ka) b0=$(site kb)
[[ $a0 == "us-east-1a,us-east-1b, 2Gi 1 "* ]] || fail "edge-a does not run its overlay: $a0"
[[ $b0 == "us-east-1a, 1Gi 1 "* ]] || fail "edge-b does not run its overlay: $b0"
pool_replicas() { "$1" -n multigres get sts -l multigres.com/cluster=edge,app.kubernetes.io/component=shard-pool -o jsonpath='{range .items[*]}{.spec.replicas}{"\n"}{end}' | sort | tr '\n' ' '; }
[ "$(pool_replicas ka)" = "1 1 " ] && [ "$(pool_replicas kb)" = "1 " ] ||
  fail "pool StatefulSets: edge-a '$(pool_replicas ka)', edge-b '$(pool_replicas kb)'"

# ---- a change on edge-a, then promoted to edge-b
bump() { # OVERLAY: replicasPerCell 1 -> 2 in the overlay's patch
  python3 - "$fl/$1/kustomization.yaml" <<'PY'
import re, sys
p = sys.argv[1]; s = open(p).read()
s2 = re.sub(r"(path: /spec/pools/main/replicasPerCell\n\s+value: )1\b", r"\g<1>2", s)
assert s2 != s, "no replicasPerCell: 1 patch in " + p
open(p, "w").write(s2)
PY
}
converged() { # KUBECTL-FUNCTION REPLICAS: the pools at REPLICAS and the cluster Ready
  [ "$(pool_replicas "$1")" = "$2" ] && "$1" -n multigres wait --for=condition=Ready mgc/edge --timeout=1s >/dev/null 2>&1
}
# change SITE K-SITE WANT OTHER K-OTHER WHAT: commit the bump to SITE's overlay;
# SITE's pools reach WANT replicas and it is Synced/Healthy, OTHER is
# untouched (the same template and cluster generations, the same spec).
# Prints the seconds it took.
change() {
  local site=$1 k=$2 want=$3 other=$4 ko=$5 what=$6 before t
  before=$(site "$ko")
  bump "$site"
  git_commit edge-fleet "$site: two replicas per cell" >/dev/null
  t=$(date +%s)
  app_refresh "$site-multigres"; app_refresh "$other-multigres"
  wait_for 240 "$site at two replicas" converged "$k" "$want" || fail "$what did not reach $site: $(pool_replicas "$k")"
  wait_app "$site-multigres" Synced/Healthy 180 || fail "$site-multigres not Synced/Healthy after $what"
  elapsed_since "$t"
  wait_app "$other-multigres" Synced/Healthy 60 || fail "$other-multigres not Synced/Healthy after $what"
  [ "$(site "$ko")" = "$before" ] || fail "$what reached $other: $(site "$ko") (was $before)"
}
ta=$(change edge-a ka "2 2 " edge-b kb "edge-a's change")
[ "$(pool_replicas kb)" = "1 " ] || fail "edge-b's pool changed with edge-a's change: $(pool_replicas kb)"
tb=$(change edge-b kb "2 " edge-a ka "the promotion")
b1=$(site kb)
[[ $b1 == "us-east-1a, 1Gi 2 "* ]] || fail "edge-b after the promotion: $b1"
operator_alive fleet-b || fail "edge-b's operator exited"
echo "two sites, one Argo CD: 5 Applications Synced/Healthy in ${converge}s (edge-b in wave order: CRDs, template, cluster); edge-a's change reached edge-a only in ${ta}s; promoted, it reached exactly edge-b in ${tb}s"
