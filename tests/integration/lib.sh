# tests/integration/lib.sh - helpers for integration tests. Sourced by run.sh
# and by each t_*.sh; expects the control plane env ($MGOP_CP_DIR/env).
# A test is a bash script that exits 0 on success; `fail` explains why not.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OP_BIN=${OP_BIN:-$ROOT/multigres-op}
IT_LOGS=${IT_LOGS:-$ROOT/build/it-logs}
mkdir -p "$IT_LOGS"

fail() {
  echo "  FAIL: $*" >&2
  local f pid rc
  for f in "$IT_LOGS"/*.pid; do # an operator of this test that died says so, with how
    [ -e "$f" ] && { [ ! -e "$IT_LOGS/.start" ] || [ "$f" -nt "$IT_LOGS/.start" ]; } || continue # this test's
    pid=$(cat "$f")
    kill -0 "$pid" 2>/dev/null && continue
    rc=0; wait "$pid" 2>/dev/null || rc=$?
    echo "  operator $(basename "$f" .pid) (pid $pid) is not running: exit status $rc$([ "$rc" -gt 128 ] && echo " (signal $((rc - 128)))")" >&2
  done
  exit 1
}
note() { echo "  $*" >&2; }

# start_operator NAME [flags...]: run the operator in the background,
# its JSON log lines in $IT_LOGS/NAME.log. The control plane's etcd pods are
# simulated (kwok), so topology registration is off unless the test turns it
# on (--topology-registration=true, against an etcd it runs itself).
# OP_OWN_SESSION=1: the operator in a session of its own (setsid), so the
# kernel's autogroup schedules it apart from the test's own clients, as a
# pod's cgroup is on a node (the bench's serving figures).
# OP_EXEC_STAMP=FILE: the process that becomes the operator writes the time
# (epoch seconds, bash's $EPOCHREALTIME) to FILE just before it execs it:
# the bench's start figures begin there, not at the script's fork and
# setsid's exec, which are the harness's (6 ms each on a slow VM).
start_operator() {
  local name=$1 stamp=(); shift
  : >"$IT_LOGS/$name.log"
  [ -z "${OP_EXEC_STAMP:-}" ] || stamp=(bash -c 'echo "$EPOCHREALTIME" >"$0"; exec "$@"' "$OP_EXEC_STAMP")
  ${OP_OWN_SESSION:+setsid} "${stamp[@]}" "$OP_BIN" --zap-devel=false --webhook-enable=false --topology-registration=false "$@" \
    2>"$IT_LOGS/$name.log" &
  echo $! >"$IT_LOGS/$name.pid"
}

stop_operator() {
  local name=$1 pid
  pid=$(cat "$IT_LOGS/$name.pid" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$IT_LOGS/$name.pid"
}

operator_alive() { kill -0 "$(cat "$IT_LOGS/$1.pid")" 2>/dev/null; }

# wait_log NAME FIXED-STRING [SECONDS]: wait until the log has the string.
wait_log() {
  local name=$1 needle=$2 secs=${3:-30} i
  for ((i = 0; i < secs * 10; i++)); do
    grep -qF -- "$needle" "$IT_LOGS/$name.log" && return 0
    sleep 0.1
  done
  note "log $name.log never showed: $needle"
  note "--- last lines of $name.log:"
  tail -20 "$IT_LOGS/$name.log" >&2
  return 1
}

# count_log NAME FIXED-STRING: how many lines have the string.
count_log() { grep -cF -- "$2" "$IT_LOGS/$1.log" || true; }

# The watch event line the operator logs, fields in a fixed order.
event_needle() { # TYPE NAMESPACE NAME
  printf '"kind":"MultigresCluster","type":"%s","namespace":"%s","name":"%s"' "$1" "$2" "$3"
}

# operator_kubeconfig NS BINDING FILE [DURATION]: a ServiceAccount "op" in NS
# bound to cluster-admin (ClusterRoleBinding BINDING) and a kubeconfig for it
# in FILE with a token valid for DURATION (1h; the bench's runs are longer),
# so the operator has its own identity, as in a Pod, and kubectl (admin) is
# someone else: the webhook configurations exclude the operator by name.
operator_kubeconfig() {
  local ns=$1 binding=$2 kc=$3 duration=${4:-1h}
  kubectl -n "$ns" create serviceaccount op >/dev/null
  kubectl create clusterrolebinding "$binding" --clusterrole=cluster-admin --serviceaccount="$ns:op" >/dev/null 2>&1 || true
  kubectl config view --raw --minify >"$kc.src"
  KUBECONFIG=$kc.src kubectl config set-credentials op --token="$(kubectl create token op -n "$ns" --duration="$duration")" >/dev/null
  KUBECONFIG=$kc.src kubectl config set-context --current --user=op >/dev/null
  mv "$kc.src" "$kc"
}

# local_webhooks VWC PORT NS HOOK...: applies ValidatingWebhookConfiguration
# VWC whose webhooks call the operator running here (https://127.0.0.1:PORT)
# for namespace NS, the operator's own ServiceAccount "op" excluded (see
# operator_kubeconfig). Each HOOK is "NAME|RESOURCES|OPERATIONS[|OBJECT_SELECTOR]",
# e.g. 'vmultigrescluster|multigresclusters|"CREATE", "UPDATE"'.
local_webhooks() {
  local vwc=$1 port=$2 ns=$3 h name res ops sel
  shift 3
  {
    printf 'apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: %s}\nwebhooks:\n' "$vwc"
    for h in "$@"; do
      IFS='|' read -r name res ops sel <<<"$h"
      cat <<Y
- name: $name.multigres.com
  clientConfig: {url: "https://127.0.0.1:$port/validate"}
  rules: [{apiGroups: [multigres.com], apiVersions: [v1alpha1], operations: [$ops], resources: [$res], scope: Namespaced}]
  namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: $ns}}
${sel:+  objectSelector: $sel
}  matchConditions:
  - name: not-the-operator
    expression: "request.userInfo.username != 'system:serviceaccount:$ns:op'"
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 5
Y
    done
  } | kubectl apply -f - >/dev/null
}

# new_namespace NAME: a fresh namespace for one test.
# A rerun on a reused control plane may find the last run's objects still
# holding finalizers whose operator is gone (a template-in-use): cleared here.
new_namespace() {
  local r o
  if kubectl get namespace "$1" >/dev/null 2>&1; then
    kubectl delete namespace "$1" --wait=false >/dev/null 2>&1 || true
    for r in $(kubectl api-resources --api-group=multigres.com -o name); do
      for o in $(jget -n "$1" "$r" -o name); do
        kubectl patch -n "$1" "$o" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
      done
    done
    kubectl wait --for=delete "namespace/$1" --timeout=120s >/dev/null 2>&1 || true
  fi
  kubectl create namespace "$1" >/dev/null
}

# apply_cluster NS NAME: the minimal sample under another name.
apply_cluster() {
  sed -e "s/^  name: minimal$/  name: $2/" "$ROOT/config/samples/minimal.yaml" |
    kubectl apply -n "$1" -f - >/dev/null
}

# cluster_manifest NS NAME: the minimal sample as NAME in NS, to stdout.
# The samples' one database and table group, under a cluster's `spec:`, up
# to its `shards:` key: a test's heredoc follows it with its own shard.
databases_yaml() {
  cat <<'EOF'
  databases:
  - name: postgres
    default: true
    tablegroups:
    - name: default
      default: true
      shards:
EOF
}

cluster_manifest() {
  sed -e "s/^  name: minimal$/  name: $2\n  namespace: $1/" "$ROOT/config/samples/minimal.yaml"
}

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND until it succeeds.
wait_for() {
  local secs=$1 what=$2 i; shift 2
  for ((i = 0; i < secs * 2; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  note "timed out after ${secs}s waiting for: $what"
  return 1
}

jget() { kubectl get "$@" 2>/dev/null; } # quiet kubectl get

# audit_lines STRING: the audit log's lines with STRING, those of the files
# the API server rotated away at 100 MB (audit-<time>.log) first
audit_lines() {
  cat $(ls "${MGOP_AUDIT_LOG%/*}"/audit-*.log 2>/dev/null | sort) "$MGOP_AUDIT_LOG" | grep -F -- "$1"
}

# writes_by_operator SINCE_EPOCH: write requests the operator made since then,
# counted in the API server's audit log (its user agent is multigres-op/...).
writes_by_operator() {
  python3 - "$MGOP_AUDIT_LOG" "$1" <<'PY'
import json, sys, datetime
path, since = sys.argv[1], float(sys.argv[2])
n = 0
for line in open(path):
    try: e = json.loads(line)
    except ValueError: continue
    if e.get("stage") != "ResponseComplete": continue
    if not e.get("userAgent", "").startswith("multigres-op/"): continue
    if e.get("verb") not in ("create", "update", "patch", "delete", "deletecollection"): continue
    t = datetime.datetime.strptime(e["requestReceivedTimestamp"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()
    if t >= since:
        n += 1
        print("write:", e.get("verb"), e.get("requestURI"), file=sys.stderr)
print(n)
PY
}

# free_ports N: N distinct ports free on 127.0.0.1 now, from the control
# plane's picker, below the kernel's ephemeral range. A port bound to 0 comes
# from that range, which every outgoing connection also draws from, so another
# process's connect could take it before the server binds it (seen: etcd's
# peer port, "bind: address already in use").
free_ports() { "$ROOT/tests/controlplane/cp.sh" ports "$1"; }
