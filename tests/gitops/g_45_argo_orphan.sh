#!/usr/bin/env bash
# Argo CD: orphan on prune, reclaim on re-apply (seed 000).
#  - `multigres.com/deletion-policy: Orphan` is added to the minimal cluster
#    in Git; Argo CD syncs it and the operator puts its finalizer on it;
#  - the cluster's file is removed from Git: Argo CD prunes the cluster with
#    its default foreground propagation, so the garbage collector goes for
#    the children at once; the operator's webhook holds them until the data
#    is detached (the audit log shows the collector's DELETEs refused). The
#    StatefulSets, PVCs and password Secret stay, unowned
#    and labelled orphaned-from=<uid>; their pods are the same pods; the
#    Application is Synced/Healthy without them (they are not Argo CD's);
#  - the file is restored: the new cluster adopts them (same uids, owned
#    again, no pod restarted) and the Application is Synced/Healthy.
# Needs g_10's Application.
set -euo pipefail
source "$MGOP_CP_DIR/env"; source "$(dirname "$0")/../integration/lib.sh"; source "$(dirname "$0")/lib.sh"
ns=gitops-argo app=samples c=minimal
w=$GITOPS_DIR/work/samples/samples
[ -f "$w/minimal.yaml" ] || fail "no minimal.yaml in the samples repository (g_10_argo_sync makes it)"

set_orphan_annotation "$w/minimal.yaml" $c
git_commit samples "minimal: deletion-policy Orphan" >/dev/null
app_refresh $app
orphan_armed $ns $c
wait_app $app Synced/Healthy 180 || fail "not Synced/Healthy with the annotation"
cp "$w/minimal.yaml" "$GITOPS_DIR/minimal-orphan.yaml"

# prune: foreground by default in Argo CD
git -C "$w" rm -q minimal.yaml
git_commit samples "drop the minimal cluster" >/dev/null
t0=$(date +%s)
app_refresh $app
wait_for 180 "the cluster pruned" sh -c "! kubectl -n $ns get mgc $c" || fail "Argo CD did not prune $c: $(kubectl -n $ns get mgc $c -o jsonpath='{.metadata}')"
pruned=$(elapsed_since "$t0")
n=$(orphan_pruned $ns $c)
# the foreground prune really raced the collector: it tried to delete the
# children and the webhook refused it (403) until the data was detached
held=$(python3 - "$MGOP_AUDIT_LOG" "$t0" "$ns" <<'PY'
import datetime, json, sys
path, since, ns = sys.argv[1], float(sys.argv[2]), sys.argv[3]
n = 0
for line in open(path):
    try: e = json.loads(line)
    except ValueError: continue
    o = e.get("objectRef", {})
    if (e.get("stage") == "ResponseComplete" and e.get("verb") == "delete" and o.get("namespace") == ns
            and o.get("resource") in ("cells", "tablegroups", "shards", "toposervers")
            and e["user"]["username"] == "system:kube-controller-manager"
            and e.get("responseStatus", {}).get("code") == 403):
        t = datetime.datetime.strptime(e["requestReceivedTimestamp"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
        n += t >= since - 1
print(n)
PY
)
[ "$held" -ge 1 ] || fail "the garbage collector never tried to delete a child during the foreground prune (no 403 in the audit log): the webhook path was not exercised"
wait_app $app Synced/Healthy 180 || fail "not Synced/Healthy after the prune"
kept=$(app_get $app '{range .status.resources[*]}{.kind}/{.name}{"\n"}{end}' | grep -c "^StatefulSet/\|^PersistentVolumeClaim/" || true)
[ "$kept" = 0 ] || fail "the Application tracks $kept of the orphans"

# reclaim
cp "$GITOPS_DIR/minimal-orphan.yaml" "$w/minimal.yaml"
git_commit samples "the minimal cluster again" >/dev/null
t0=$(date +%s)
app_refresh $app
wait_for 180 "re-created" kubectl -n $ns get mgc $c || fail "Argo CD did not re-create $c"
adopted() { [ -z "$(kubectl get -n $ns sts,pvc,secret -l multigres.com/cluster=$c,multigres.com/orphaned-from -o name)" ]; }
wait_for 180 "the orphans adopted" adopted || fail "still orphaned: $(kubectl get -n $ns sts,pvc,secret -l multigres.com/orphaned-from -o name); $(kubectl -n $ns get mgc $c -o jsonpath='{.status.conditions}')"
wait_app $app Synced/Healthy 240 || fail "not Synced/Healthy after the reclaim"
reclaimed=$(elapsed_since "$t0")
check_adopted $ns $c "$ORPH_BEFORE" "$ORPH_PODS"
echo "pruned (foreground) in ${pruned}s, the collector's deletions of children refused $held times until the data was detached: $n objects ($ORPH_NSTS StatefulSets) orphaned with the same $(grep -c = <<<"$ORPH_PODS") pods; re-applied: adopted and Synced/Healthy in ${reclaimed}s, no pod restarted"
