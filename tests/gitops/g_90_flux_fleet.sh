#!/usr/bin/env bash
# Flux: examples/fleet's Flux chain for one site (flux/edge-b/multigres.yaml)
# applied as shipped, with three test-only changes: the URLs point at the
# local git server, the operator Kustomization is left out (the e2e runs the
# operator out of cluster; edge-b's overlay then depends on the CRDs), and
# the site lands in namespace fleet-flux (targetNamespace) with its
# GitRepository renamed edge-fleet, so it does not collide with g_50's
# GitRepository or with g_80's edge-a on this control plane.
#  - multigres-crds builds ./config/crd of the operator's repository (at tag
#    v0.1.0) and is Ready;
#  - multigres-edge-b waits for it, then is Ready exactly when the cluster
#    is, with edge-b's overlay (one cell).
set -euo pipefail
source "$MGOP_CP_DIR/env"; source "$(dirname "$0")/../integration/lib.sh"; source "$(dirname "$0")/lib.sh"
ns=fleet-flux
fleet_repos
new_namespace $ns
m=$GITOPS_DIR/flux-edge-b.yaml
cp "$ROOT/examples/fleet/flux/edge-b/multigres.yaml" "$m"
fleet_urls "$m"
python3 - "$m" "$ns" <<'PY'
import sys, yaml
path, ns = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
assert kinds == ["GitRepository/fleet", "GitRepository/multigres-op", "Kustomization/multigres-crds",
                 "Kustomization/multigres-edge-b", "Kustomization/multigres-operator"], kinds
out = []
for d in docs:
    n = d["metadata"]["name"]
    if n == "multigres-operator":
        continue
    if n == "fleet":
        d["metadata"]["name"] = "edge-fleet"
    if n == "multigres-edge-b":
        d["spec"]["dependsOn"] = [{"name": "multigres-crds"}]
        d["spec"]["targetNamespace"] = ns
        d["spec"]["sourceRef"]["name"] = "edge-fleet"
        d["spec"]["prune"] = False    # its Namespace object is shared with g_80's site
        d["spec"]["timeout"] = "4m"
    out.append(d)
yaml.safe_dump_all(out, open(path, "w"), sort_keys=False)
PY
t0=$(date +%s)
kubectl apply -f "$m" >/dev/null || fail "examples/fleet/flux/edge-b/multigres.yaml was rejected"
wait_for 120 "multigres-crds Ready" sh -c "kubectl -n flux-system get kustomization multigres-crds -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True" ||
  fail "multigres-crds not Ready: $(ks_cond multigres-crds message)"
applied=$(kubectl -n flux-system get kustomization multigres-crds -o jsonpath='{.status.inventory.entries[*].id}' | tr ' ' '\n' | grep -c '_apiextensions.k8s.io_CustomResourceDefinition$' || true)
[ "$applied" = 8 ] || fail "multigres-crds applied $applied CRDs, not 8"
violations=0
for ((i = 0; i < 480; i++)); do   # up to 240 s
  k=$(ks_ready multigres-edge-b)
  if [ "$k" = True ]; then clusters_ready $ns || violations=$((violations + 1)); break; fi
  sleep 0.5
done
[ "$k" = True ] || fail "multigres-edge-b never Ready: $(ks_cond multigres-edge-b message)"
[ "$violations" = 0 ] || fail "multigres-edge-b was Ready before its cluster"
took=$(elapsed_since "$t0")
cells=$(kubectl -n $ns get mgc edge -o jsonpath='{range .spec.cells[*]}{.name},{end}')
[ "$cells" = "us-east-1a," ] || fail "the site does not run edge-b's overlay: cells $cells"
crds_ready=$(ks_first_ready multigres-crds) || fail "multigres-crds never succeeded"
python3 - "$ns" "$crds_ready" <<'PY' || fail "dependsOn order not kept"
import json, subprocess, sys
crds = sys.argv[2]
def get(*a): return json.loads(subprocess.check_output(["kubectl", *a, "-o", "json"]))
t = get("-n", sys.argv[1], "get", "shardtemplate", "edge-shard")["metadata"]["creationTimestamp"]
assert crds <= t, f"ShardTemplate created {t}, before multigres-crds was Ready {crds}"
PY
echo "flux/edge-b as shipped (URLs, no operator wave): multigres-crds built ./config/crd (8 CRDs), multigres-edge-b Ready with its cluster in ${took}s, never before; edge-b's overlay (one cell)"
