#!/usr/bin/env bash
# In-cluster mode, as the Deployment in install.yaml runs the operator: the
# generated install.yaml's Namespace, ServiceAccount and RBAC are applied; the
# static binary runs chroot'ed in a root holding only the image's files
# (scripts/image.sh --assemble, from the Dockerfile) plus a kubelet-style
# service-account volume, as uid 65532, with only KUBERNETES_SERVICE_HOST/PORT
# in its environment and the Deployment's args. It must:
#   - verify the API server as KUBERNETES_SERVICE_HOST (an IP: the
#     certificate's iPAddress SAN) against the mounted CA;
#   - bring config/samples/minimal.yaml to Ready, with the namespace default
#     templates of config/samples/default-templates/ (so it also marks them
#     in use: finalizer and status.consumers);
#   - pick up a rotated token: a new token is swapped in the way the kubelet
#     does (a ..data symlink swap), the old one is revoked (it is bound to a
#     Secret that is then deleted), and a deleted child is still recreated,
#     with the API server's audit log showing the new token in use;
#   - never get a 403: every request it makes is granted (audit log and its
#     own log);
#   - hold the leader-election Lease (the Deployment passes --leader-elect);
#   - prune: delete what the spec drops (a local topology server, a multiorch
#     cell, a table group);
#   - use every permission the ClusterRole and the leader-election Role grant
#     (least privilege), except the finalizers rule, which only the
#     OwnerReferencesPermissionEnforcement admission plugin asks for, and
#     delete on cells (cells are append-only in the CRD);
#   - stay under the Deployment's memory limit (VmHWM).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-incluster c=ic opns=multigres-operator sa=multigres-operator
user="system:serviceaccount:$opns:$sa"
STATIC_BIN=$ROOT/build/static/multigres-op
cpdir=${MGOP_CP_DIR:-/tmp/multigres-op-cp}
name=incluster-${cpdir##*/} # one log per control plane: runs may overlap
log=$IT_LOGS/$name.log

# the shipped binary, current with the sources (a no-op when it is)
make -s -C "$ROOT" static >&2 || fail "cannot build the static binary (make static)"

root=$(mktemp -d "${TMPDIR:-/tmp}/mgop-incluster.XXXXXX")
op_pid=
cleanup() {
  # clusters and templates go while the operator runs: it drops the templates'
  # in-use finalizer once no cluster uses them (stripped below if it is gone)
  if kubectl get namespace $ns >/dev/null 2>&1; then
    kubectl delete mgc --all -n $ns --wait=true --timeout=60s >/dev/null 2>&1 || true
    kubectl delete coretemplates,celltemplates,shardtemplates --all -n $ns --wait=true --timeout=30s >/dev/null 2>&1 || true
    for t in $(kubectl get coretemplates,celltemplates,shardtemplates -n $ns -o name 2>/dev/null); do
      kubectl patch -n $ns "$t" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
    done
  fi
  if [ -n "$op_pid" ]; then
    kill -TERM "$op_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$op_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$op_pid" 2>/dev/null || true
    wait "$op_pid" 2>/dev/null || true
  fi
  rm -rf "$root"
  kubectl delete namespace $ns --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kubectl delete clusterrolebinding multigres-operator --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete clusterrole multigres-operator --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete validatingwebhookconfiguration multigres-operator-validating-webhook-configuration --ignore-not-found >/dev/null 2>&1 || true
  kubectl delete namespace $opns --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT
# audit_403: the operator's refused requests since t0, from the audit log
audit_403() {
  python3 - "$MGOP_AUDIT_LOG" "$user" "${t0:-0}" <<'PY'
import datetime, json, sys
seen = set()
for line in open(sys.argv[1]):
    try: e = json.loads(line)
    except ValueError: continue
    if e.get("user", {}).get("username") != sys.argv[2] or e.get("responseStatus", {}).get("code") != 403: continue
    t = datetime.datetime.strptime(e["requestReceivedTimestamp"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
    if t >= float(sys.argv[3]): seen.add(f"{e.get('verb')} {e.get('requestURI')}")
for x in sorted(seen)[:10]: print("refused (403):", x)
PY
}
# fail_op MESSAGE: fail, naming any request the operator was refused
fail_op() {
  local refused
  refused=$(audit_403 2>/dev/null || true)
  if [ -n "$refused" ] || grep -qE 'HTTP 403|403 Forbidden|[Ff]orbidden' "$log"; then
    { echo "$refused"; grep -E 'HTTP 403|403 Forbidden|[Ff]orbidden' "$log" | tail -3 || true; } >&2
    fail "$1 (the operator was refused: 403)"
  fi
  tail -15 "$log" >&2 || true
  fail "$1"
}

t0=$(date +%s) # the audit log is the control plane's: only what follows counts
# ---- the install's identity and permissions, from the generated install.yaml
kubectl delete namespace $opns --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1 || true
python3 - "$ROOT/install.yaml" >"$IT_LOGS/$name-rbac.yaml" <<'PY' || fail "install.yaml lacks an object the test needs"
import re, sys
docs = re.split(r"^---$", open(sys.argv[1]).read(), flags=re.M)
want = ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service",
        "ValidatingWebhookConfiguration"]
out = [d.strip("\n") for d in docs if re.search(r"^kind: (%s)$" % "|".join(want), d, re.M)]
kinds = sorted(set(re.search(r"^kind: (\S+)$", d, re.M).group(1) for d in out))
assert kinds == sorted(want), kinds
print("\n---\n".join(out))
PY
kubectl apply --server-side --field-manager=it-incluster -f "$IT_LOGS/$name-rbac.yaml" >/dev/null || fail "install.yaml's RBAC was rejected"
# the Deployment's args, exactly
mapfile -t args < <(python3 - "$ROOT/install.yaml" <<'PY'
import re, sys
for d in re.split(r"^---$", open(sys.argv[1]).read(), flags=re.M):
    if re.search(r"^kind: Deployment$", d, re.M):
        lines = d.splitlines()
        at = next(i for i, l in enumerate(lines) if re.match(r"^\s*(- )?args:\s*$", l))
        for l in lines[at + 1:]:
            m = re.match(r"^\s+- (\S.*)$", l)
            if not m: break
            print(m.group(1))
PY
)
[ ${#args[@]} -gt 0 ] || fail "no args found in install.yaml's Deployment"
# plus one: the control plane's etcd pods are simulated (kwok), so no
# topology server answers; registration is t_topology's to test
args+=(--topology-registration=false)
limit_mi=$(sed -n '/^kind: Deployment$/,/^---$/p' "$ROOT/install.yaml" | sed -n '/limits:/,/requests:/s/^ *memory: \([0-9]*\)Mi$/\1/p')
[ -n "$limit_mi" ] || fail "no memory limit (NNMi) found in install.yaml's Deployment"
[ "$(sed -n '/^kind: Deployment$/,/^---$/p' "$ROOT/install.yaml" | grep -c 'runAsUser: 65532$')" -ge 1 ] ||
  fail "install.yaml's Deployment does not run as uid 65532, the uid this test (and the image) uses"
note "Deployment args: ${args[*]}"

# ---- tokens: A is bound to a Secret, so deleting the Secret revokes it
kubectl -n $opns create secret generic it-token-anchor >/dev/null
tok_a=$(kubectl create token $sa -n $opns --duration=10m --bound-object-kind=Secret --bound-object-name=it-token-anchor) ||
  fail "kubectl create token failed"
jti() { python3 -c 'import base64,json,sys; p=sys.argv[1].split(".")[1]; print(json.loads(base64.urlsafe_b64decode(p+"="*(-len(p)%4)))["jti"])' "$1"; }
jti_a=$(jti "$tok_a")

# ---- the root: the image's files plus the service-account volume, laid out
# the way the kubelet's atomic writer does it (files behind a ..data symlink)
"$ROOT/scripts/image.sh" --assemble "$root" || fail "scripts/image.sh --assemble failed"
cmp -s "$root/multigres-op" "$STATIC_BIN" || fail "the assembled root does not hold build/static/multigres-op"
sadir=$root/var/run/secrets/kubernetes.io/serviceaccount
mkdir -p "$sadir"
chmod -R 755 "$root/var"
write_sa_volume() { # TOKEN STAMP: a new ..STAMP dir, then an atomic ..data swap
  local d="$sadir/..$2"
  mkdir "$d"
  printf '%s' "$1" >"$d/token"
  cp "$MGOP_CA_FILE" "$d/ca.crt"
  printf '%s' "$opns" >"$d/namespace"
  chmod 755 "$d"; chmod 644 "$d/token" "$d/ca.crt" "$d/namespace"
  ln -sfn "..$2" "$sadir/..data_tmp"
  mv -T "$sadir/..data_tmp" "$sadir/..data"
  for f in token ca.crt namespace; do [ -L "$sadir/$f" ] || ln -s "..data/$f" "$sadir/$f"; done
}
write_sa_volume "$tok_a" 1
old_dir=$sadir/..1

# ---- run it as the image would: chroot, uid 65532, only the service env
chroot_cmd=$(command -v chroot) || fail "chroot not found"
if [ "$(id -u)" = 0 ]; then
  run=("$chroot_cmd" --userspec=65532:65532 "$root" /multigres-op)
elif command -v unshare >/dev/null 2>&1 && unshare -r true 2>/dev/null; then
  run=("$(command -v unshare)" -r "$chroot_cmd" "$root" /multigres-op) # as static-check.sh does
else
  fail "chroot needs root (or unprivileged user namespaces for unshare -r)"
fi
: >"$log"
(cd / && exec env -i KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT="$MGOP_APISERVER_PORT" \
  "${run[@]}" "${args[@]}") 2>"$log" &
op_pid=$!
started=$(date +%s)
wait_log $name "(in-cluster)" 20 || fail_op "the operator did not start in in-cluster mode"
sleep 2
kill -0 "$op_pid" 2>/dev/null || fail_op "the operator exited"

# ---- the sample converges
new_namespace $ns
kubectl apply -n $ns -f "$ROOT/config/samples/default-templates/" >/dev/null || fail "default templates rejected"
cluster_manifest $ns $c | kubectl apply -f - >/dev/null
for ((i = 0; ; i++)); do # kubectl wait, but a 403 or an exit fails at once
  kubectl wait -n $ns --for=condition=Ready mgc/$c --timeout=5s >/dev/null 2>&1 && break
  { grep -qE 'HTTP 403|403 Forbidden|[Ff]orbidden' "$log" || [ -n "$(audit_403)" ]; } &&
    fail_op "MultigresCluster not Ready in-cluster"
  kill -0 "$op_pid" 2>/dev/null || fail_op "the operator exited"
  [ $i -lt 36 ] || fail_op "MultigresCluster never Ready in-cluster (180s)"
done
note "minimal sample Ready in-cluster after $(( $(date +%s) - started ))s"
for k in coretemplate celltemplate shardtemplate; do # the operator marked them in use
  wait_for 30 "$k default lists $c as a consumer" sh -c \
    "kubectl get -n $ns $k default -o jsonpath='{.status.consumers}{.metadata.finalizers}' | grep -q '$c.*template-in-use'" ||
    fail_op "$k default is not marked in use"
done

if [[ " ${args[*]} " == *" --leader-elect "* ]]; then
  holder=$(jget -n $opns lease multigres-operator.multigres.com -o jsonpath='{.spec.holderIdentity}')
  [ -n "$holder" ] || fail_op "no leader-election Lease held in $opns"
  note "leader: $holder"
fi

# ---- token rotation: swap in B, revoke A, then a change must still be reconciled
tok_b=$(kubectl create token $sa -n $opns --duration=10m) || fail "kubectl create token failed"
jti_b=$(jti "$tok_b")
write_sa_volume "$tok_b" 2
rm -rf "$old_dir"
kubectl -n $opns delete secret it-token-anchor >/dev/null
as_token() { kubectl --kubeconfig=/dev/null --server="$MGOP_APISERVER_URL" --certificate-authority="$MGOP_CA_FILE" --token="$1" "${@:2}"; }
for _ in $(seq 60); do # the API server caches token reviews for a few seconds
  as_token "$tok_a" auth whoami >/dev/null 2>&1 || break
  sleep 1
done
as_token "$tok_a" auth whoami >/dev/null 2>&1 && fail "the old token is still accepted after its Secret was deleted"
as_token "$tok_b" auth whoami >/dev/null 2>&1 || fail "the new token is not accepted"
swap=$(date +%s)
kubectl delete -n $ns svc $c-multiadmin --wait=true >/dev/null
for ((i = 0; ; i++)); do
  kubectl get -n $ns svc $c-multiadmin >/dev/null 2>&1 && break
  kill -0 "$op_pid" 2>/dev/null || fail_op "the operator exited after the token rotation"
  [ $i -lt 180 ] || fail_op "a deleted Service was not recreated after the token rotation (90s)"
  sleep 0.5
done
note "token swapped and the old one revoked; a deleted Service was recreated $(( $(date +%s) - swap ))s later"

# ---- prune: a local topology server, a multiorch cell and a table group
# leave the spec; the operator deletes their objects (every delete grant)
pr_manifest() { # ZONE_B_EXTRA EXTRA_TABLEGROUP
  cat <<EOF
apiVersion: multigres.com/v1alpha1
kind: MultigresCluster
metadata: {name: $c, namespace: $ns}
spec:
  cells:
  - {name: zone-a, zone: us-east-1a}
  - name: zone-b
    zone: us-east-1b
    spec:
      multigateway: {replicas: 1}
$1
  databases:
  - name: postgres
    default: true
    tablegroups:
    - {name: default, default: true, shards: [{name: "0-inf"}]}
$2
EOF
}
pr_ready() { # GENERATION: Ready for it, or fail at once on a 403 or an exit
  local i
  for ((i = 0; ; i++)); do
    [ "$(jget -n $ns mgc $c -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}/{.status.observedGeneration}')" = "True/$1" ] && return 0
    { grep -qE 'HTTP 403|403 Forbidden|[Ff]orbidden' "$log" || [ -n "$(audit_403)" ]; } && fail_op "$2"
    kill -0 "$op_pid" 2>/dev/null || fail_op "the operator exited"
    [ $i -lt 180 ] || fail_op "$2 (180s)"
    sleep 1
  done
}
gen=$(jget -n $ns mgc $c -o jsonpath='{.metadata.generation}')
pr_manifest "      localTopoServer: {etcd: {replicas: 1}}" '    - name: extra
      shards:
      - name: "0-inf"
        spec:
          multiorch: {cells: [zone-a, zone-b]}
          pools:
            xp: {type: readWrite, cells: [zone-a], replicasPerCell: 1}' | kubectl apply -f - >/dev/null ||
  fail "the grown cluster was rejected"
pr_ready $((gen + 1)) "the grown cluster never Ready"
[ -n "$(jget -n $ns tablegroups -l multigres.com/cluster=$c -o name | grep extra)" ] || fail_op "no TableGroup extra"
pr_manifest "" "" | kubectl apply -f - >/dev/null || fail "the shrunk cluster was rejected"
pr_ready $((gen + 2)) "the shrunk cluster never Ready"
for ((i = 0; ; i++)); do
  left=$(jget -n $ns tablegroups,shards,toposervers -l multigres.com/cluster=$c -o name | grep -E 'extra|zone-b' || true)
  [ -z "$left" ] && break
  [ $i -lt 60 ] || fail_op "not pruned in 30s: $left"
  sleep 0.5
done
note "a local topology server, a multiorch cell and a table group were pruned in-cluster"

# ---- the audit log: no 403, the new token in use, every grant used
kubectl get clusterrole multigres-operator -o json >"$IT_LOGS/$name-clusterrole.json"
kubectl get role -n $opns multigres-operator-leader-election -o json >"$IT_LOGS/$name-role.json"
kubectl get role -n $opns multigres-operator-webhook -o json >"$IT_LOGS/$name-webhook-role.json"
python3 - "$MGOP_AUDIT_LOG" "$user" "$jti_a" "$jti_b" "$swap" "$t0" "$IT_LOGS/$name-clusterrole.json" "$IT_LOGS/$name-role.json" "$IT_LOGS/$name-webhook-role.json" <<'PY' || fail "audit log check failed"
import datetime, json, sys
path, user, jti_a, jti_b, swap, t0 = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), float(sys.argv[6])
roles = sys.argv[7:]
used, forbidden, after_b, after_a_ok = set(), [], 0, 0
for line in open(path):
    try: e = json.loads(line)
    except ValueError: continue
    # a watch is audited at ResponseStarted; it completes only when it ends
    if e.get("stage") not in ("ResponseComplete", "ResponseStarted") or e.get("user", {}).get("username") != user: continue
    t = datetime.datetime.strptime(e["requestReceivedTimestamp"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
    if t < t0: continue
    o, code, verb = e.get("objectRef", {}), e.get("responseStatus", {}).get("code", 0), e.get("verb")
    res = o.get("resource", "") + ("/" + o["subresource"] if o.get("subresource") else "")
    if code == 403 or e.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid":
        forbidden.append(f"{verb} {e.get('requestURI')}")
    if code < 400 or code in (404, 409, 422):  # authorized and served
        used.add((o.get("apiGroup", ""), res, verb))
        if verb == "patch" and code == 201:
            used.add((o.get("apiGroup", ""), res, "create"))  # server-side apply created it
    cred = ",".join(e.get("user", {}).get("extra", {}).get("authentication.kubernetes.io/credential-id", []))
    if t >= swap and jti_b in cred and code < 400: after_b += 1
    if t >= swap and jti_a in cred and code < 400: after_a_ok += 1
if forbidden:
    sys.exit("the operator was refused (403) for: " + "; ".join(sorted(set(forbidden))[:20]))
if after_b == 0:
    sys.exit("no request with the new token after the swap: the rotated token was not re-read")
if after_a_ok:
    sys.exit(f"{after_a_ok} requests succeeded with the revoked token after the swap")
granted = set()
for role in roles:
    for r in json.load(open(role))["rules"]:
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    assert "*" not in (g, res, v), f"wildcard in {role}"
                    granted.add((g, res, v))
exempt = {x for x in granted if x[1].endswith("/finalizers") and x[2] == "update"}
# Cells are append-only in the CRD: a Cell leaves the tree only if its name
# changes with an operator upgrade, which this test cannot provoke.
exempt.add(("multigres.com", "cells", "delete"))
# volume expansion runs only when a storage.size grows (tests/integration/t_storage.sh)
exempt |= {("", "persistentvolumeclaims", "list"), ("", "persistentvolumeclaims", "patch"),
           ("storage.k8s.io", "storageclasses", "get")}
# deletion-policy Orphan only: the finalizer and the Secrets' metadata (tests/integration/t_orphan.sh)
exempt |= {("multigres.com", "multigresclusters", "patch"), ("", "secrets", "patch")}
# pool pods are deleted only to roll a changed pod template (tests/integration/t_rolling.sh)
exempt.add(("", "pods", "delete"))
# ... and drained first (annotations patched, the pod read by name)
exempt.add(("", "pods", "patch"))
exempt.add(("", "pods", "get"))
# a shard's postgresConfigRef ConfigMap is read by name (tests/integration/t_pg_config_ref.sh)
exempt.add(("", "configmaps", "get"))
# cert-manager Certificates: internalTLS and certCommonName only, with cert-manager (tests/integration/t_internal_tls.sh)
exempt |= {("cert-manager.io", "certificates", v) for v in ("list", "watch", "create", "patch", "delete")}
unused = sorted(granted - used - exempt)
if unused:
    sys.exit("granted but never used (least privilege): " + ", ".join(f"{v} {g or 'core'}/{r}" for g, r, v in unused))
print(f"audit: 0 forbidden; {after_b} requests with the new token after the swap; "
      f"all {len(granted - exempt)} granted (group, resource, verb) used", file=sys.stderr)
PY
# memory, as the kubelet would account it (the process's peak RSS)
read -r rss hwm < <(awk '/^VmRSS:/ {r = $2} /^VmHWM:/ {h = $2} END {print r, h}' "/proc/$op_pid/status")
note "in-cluster memory: VmRSS ${rss} kB, VmHWM ${hwm} kB (Deployment limit ${limit_mi}Mi)"
[ "$hwm" -lt $((limit_mi * 1024)) ] || fail "peak RSS ${hwm} kB reaches the Deployment's ${limit_mi}Mi memory limit"
# and the operator's own log agrees
if grep -E 'HTTP 403|403 Forbidden|[Ff]orbidden' "$log" >&2; then fail "the operator's log shows a 403"; fi
grep -q '"level":"error"' "$log" && { grep '"level":"error"' "$log" | tail -5 >&2; fail "the operator logged errors"; }
kill -0 "$op_pid" 2>/dev/null || fail "the operator exited"
