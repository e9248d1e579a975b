#!/usr/bin/env bash
# Flux: three Kustomizations over one GitRepository, chained by dependsOn:
# mgop-crds (crds.yaml) -> mgop-templates (config/samples templates and
# default templates) -> mgop-clusters (two samples, wait: true).
#  - ordering: while mgop-crds is suspended the other two wait
#    (DependencyNotReady) and create nothing; resumed, each becomes Ready no
#    earlier than the one it depends on, and creates its objects after that;
#  - wait: mgop-clusters is never Ready while a cluster is not, and becomes
#    Ready once they all are;
#  - no flapping for MGOP_GITOPS_SOAK seconds: the Kustomizations reconcile
#    again and again and never go Ready=False (Unknown while a reconcile runs
#    is Flux's own marker, and so is a dependent's short DependencyNotReady
#    when its check meets that Unknown), with no Warning Event, and the
#    clusters stay Ready and are not written (same resourceVersion).
set -euo pipefail
source "$MGOP_CP_DIR/env"; source "$(dirname "$0")/../integration/lib.sh"; source "$(dirname "$0")/lib.sh"
ns=gitops-flux
git_repo fleet
w=$GITOPS_DIR/work/fleet
mkdir -p "$w/crds" "$w/templates" "$w/clusters"
cp "$ROOT/crds.yaml" "$w/crds/"
cp "$ROOT"/config/samples/templates/*.yaml "$w/templates/"
for f in "$ROOT"/config/samples/default-templates/*.yaml; do cp "$f" "$w/templates/default-$(basename "$f")"; done
cp "$ROOT/config/samples/minimal.yaml" "$ROOT/config/samples/templated-cluster.yaml" "$w/clusters/"
git_commit fleet "CRDs, templates, clusters" >/dev/null
new_namespace $ns
ks() { # ks NAME PATH DEPENDS_ON [extra spec lines]
  cat <<EOF2
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: $1, namespace: flux-system}
spec:
  interval: 20s
  retryInterval: 10s
  timeout: 5m
  path: $2
  prune: true
  wait: true
  sourceRef: {kind: GitRepository, name: fleet}
$( [ -n "$3" ] && echo "  dependsOn: [{name: $3}]" )
${4:-}
EOF2
}
{
  cat <<EOF2
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: fleet, namespace: flux-system}
spec: {interval: 10s, url: $GIT_URL/fleet.git, ref: {branch: main}}
EOF2
  ks mgop-crds ./crds "" "  suspend: true"
  ks mgop-templates ./templates mgop-crds "  targetNamespace: $ns"
  ks mgop-clusters ./clusters mgop-templates "  targetNamespace: $ns"
} >"$GITOPS_DIR/flux-fleet.yaml"
kubectl apply -f "$GITOPS_DIR/flux-fleet.yaml" >/dev/null || fail "the Flux objects were rejected"
wait_for 60 "GitRepository ready" sh -c "kubectl -n flux-system get gitrepository fleet -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True" ||
  fail "the GitRepository never became Ready: $(kubectl -n flux-system get gitrepository fleet -o jsonpath='{.status.conditions}')"
wait_for 60 "templates wait for crds" sh -c "kubectl -n flux-system get kustomization mgop-templates -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].reason}' | grep -qx DependencyNotReady" ||
  fail "mgop-templates does not wait for the suspended mgop-crds: $(ks_cond mgop-templates reason) $(ks_cond mgop-templates message)"
wait_for 60 "clusters wait for templates" sh -c "kubectl -n flux-system get kustomization mgop-clusters -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].reason}' | grep -qx DependencyNotReady" ||
  fail "mgop-clusters does not wait for mgop-templates: $(ks_cond mgop-clusters reason)"
[ -z "$(kubectl -n $ns get shardtemplates,multigresclusters -o name)" ] || fail "objects were applied before their dependencies were Ready"

t0=$(date +%s)
kubectl -n flux-system patch kustomization mgop-crds --type merge -p '{"spec":{"suspend":false}}' >/dev/null
violations=0 cl_ready_at="" ks_ready_at=""
for ((i = 0; i < 720; i++)); do   # up to 360 s
  k=$(ks_ready mgop-clusters)     # read the Kustomization first, then the clusters
  if clusters_ready $ns; then [ -n "$cl_ready_at" ] || cl_ready_at=$(date +%s.%N); c=1; else c=0; fi
  if [ "$k" = True ]; then
    [ "$c" = 1 ] || { violations=$((violations + 1)); note "mgop-clusters Ready while a cluster is not"; }
    ks_ready_at=$(date +%s.%N); break
  fi
  sleep 0.5
done
[ -n "$ks_ready_at" ] || fail "mgop-clusters never became Ready: $(ks_cond mgop-clusters message)"
[ "$violations" = 0 ] || fail "mgop-clusters was Ready before the clusters were"
converge=$(elapsed_since "$t0")
lag=$(python3 -c "print(f'{$ks_ready_at - $cl_ready_at:.1f}')")

# ordering by the API server's clock: each Kustomization's first success
# (its first ReconciliationSucceeded Event; the Ready condition's
# lastTransitionTime moves on every later reconcile) and creation times
firsts=$(ks_first_ready mgop-crds) && firsts+=" $(ks_first_ready mgop-templates)" &&
  firsts+=" $(ks_first_ready mgop-clusters)" || fail "a Kustomization never succeeded"
python3 - "$ns" $firsts <<'PY' || fail "dependsOn order not kept"
import json, subprocess, sys
ns, crds, tpl, cl = sys.argv[1:]
def get(*a): return json.loads(subprocess.check_output(["kubectl", *a, "-o", "json"]))
assert crds <= tpl <= cl, f"Ready at crds {crds}, templates {tpl}, clusters {cl}"
for o in get("-n", ns, "get", "shardtemplates,coretemplates,celltemplates")["items"]:
    assert o["metadata"]["creationTimestamp"] >= crds, f"{o['metadata']['name']} created before mgop-crds was Ready"
for o in get("-n", ns, "get", "multigresclusters")["items"]:
    assert o["metadata"]["creationTimestamp"] >= tpl, f"{o['metadata']['name']} created before mgop-templates was Ready"
print(f"Ready at crds {crds} <= templates {tpl} <= clusters {cl}", file=sys.stderr)
PY

# soak: nothing flaps, nothing is rewritten. kustomize-controller marks its
# Ready condition Unknown ("Reconciliation in progress") at the start of
# every reconcile, which is its own heartbeat, not a flap. A dependent's
# dependsOn check reads its dependency afresh and takes that Unknown for "not
# ready": when the two reconciles meet, the dependent is False with
# DependencyNotReady and retries after --requeue-dependency (30 s). The soak
# allows Unknown, and that False only on mgop-templates or mgop-clusters,
# only with that reason and for at most 60 s (counted); any other False
# fails. It wants each Kustomization back at Ready=True at the end, no
# failure Event, the clusters Ready throughout and not written.
snap() {
  kubectl -n $ns get multigresclusters -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.resourceVersion} {.metadata.generation}{"\n"}{end}'
}
failures() { # Warning Events on the three Kustomizations since epoch second $1
  kubectl -n flux-system get events -o json | python3 -c '
import json, sys, datetime
since = float(sys.argv[1])
for e in json.load(sys.stdin)["items"]:
    if e["involvedObject"]["name"] not in ("mgop-crds", "mgop-templates", "mgop-clusters") or e["type"] != "Warning":
        continue
    ts = (e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp") or "")[:19]
    if not ts: continue
    t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
    if t >= since: print(e["involvedObject"]["name"], e["reason"], e["message"][:200])' "$1"
}
before=$(snap)
soak0=$(date +%s)
runs0=$(count_log gitops-kustomize-controller '"name":"mgop-clusters"')
end=$(( soak0 + MGOP_GITOPS_SOAK ))
declare -A dnr_since=()
dep_episodes=0
while [ "$(date +%s)" -lt "$end" ]; do
  for k in mgop-crds mgop-templates mgop-clusters; do
    if [ "$(ks_ready $k)" != False ]; then unset "dnr_since[$k]"; continue; fi
    reason=$(ks_cond $k reason)
    [ "$k" != mgop-crds ] && [ "$reason" = DependencyNotReady ] ||
      fail "$k went Ready=False during the soak: $reason: $(ks_cond $k message)"
    [ -n "${dnr_since[$k]:-}" ] || { dnr_since[$k]=$(date +%s); dep_episodes=$((dep_episodes + 1)); }
    [ $(( $(date +%s) - ${dnr_since[$k]} )) -le 60 ] ||
      fail "$k stayed DependencyNotReady for more than 60 s during the soak: $(ks_cond $k message)"
  done
  clusters_ready $ns || fail "a cluster left Ready during the soak"
  sleep 3
done
for k in mgop-crds mgop-templates mgop-clusters; do
  wait_for 60 "$k Ready again" sh -c "kubectl -n flux-system get kustomization $k -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True" ||
    fail "$k not Ready at the end of the soak: $(ks_cond $k message)"
done
after=$(snap)
[ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after") >&2 || true; fail "a cluster was written during the soak"; }
bad=$(failures "$soak0")
[ -z "$bad" ] || fail "Warning Events during the soak: $bad"
runs=$(( $(count_log gitops-kustomize-controller '"name":"mgop-clusters"') - runs0 ))
[ "$runs" -ge 2 ] || fail "kustomize-controller logged only $runs lines on mgop-clusters during the soak; the soak proved nothing"
echo "dependsOn crds -> templates -> clusters kept; mgop-clusters Ready ${lag}s after the last cluster, ${converge}s after resume, never before; no flap or rewrite for ${MGOP_GITOPS_SOAK}s ($runs controller log lines; $dep_episodes DependencyNotReady retries while a dependency reconciled)"
