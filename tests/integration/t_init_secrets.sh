#!/usr/bin/env bash
# postgresInitSecretsRef on the real API server: the operator reads the
# user's Secret each turn and says what is wrong with it (missing, no key,
# a document pgctld would refuse), naming the Secret and the fix, and
# retries; once it is right, the pool pods mount its key into pgctld only,
# named by POSTGRES_INIT_SECRETS_FILE.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=it-init c=init
new_namespace $ns
trap 'stop_operator init' EXIT
start_operator init --kubeconfig "$MGOP_KUBECONFIG" --namespace $ns
messages() { jget -n $ns mgc $c -o jsonpath='{range .status.conditions[*]}{.message}{"\n"}{end}'; }
has_message() { local m; m=$(messages); [[ $m == *"$1"* ]]; }
secret() { # JSON: the Secret day0, key boot.json
  kubectl -n $ns create secret generic day0 --from-literal=boot.json="$1" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
}
kubectl apply -f - >/dev/null <<EOF
apiVersion: multigres.com/v1alpha1
kind: MultigresCluster
metadata: {name: $c, namespace: $ns}
spec:
  postgresInitSecretsRef: {name: day0, key: boot.json}
  cells: [{name: zone-a, zone: us-east-1a}]
EOF
wait_for 60 "a message for the missing Secret" has_message "spec.postgresInitSecretsRef names Secret day0, which does not exist in namespace $ns" ||
  fail "missing Secret not reported: $(messages)"
note "missing: $(messages | grep -F postgresInitSecretsRef | head -1 | sed 's/^.*retrying: //')"
secret '{"roles": {"postgres": "x"}}'
wait_for 60 "a message for the superuser among the roles" has_message "Secret day0: roles.postgres is the superuser" ||
  fail "the superuser among the roles not reported: $(messages)"
secret '{"database_settings": {"postgres": {"wrok_mem": "8MB"}}}'
wait_for 60 "a message for the misspelt parameter" has_message "did you mean work_mem?" ||
  fail "a bad parameter not reported: $(messages)"
note "a bad document: $(messages | grep -F 'did you mean' | head -1 | sed 's/^.*retrying: //')"
secret '{"roles": {"app": "s3cret"}, "database_settings": {"postgres": {"work_mem": "8MB"}}}'
pool() { jget -n $ns sts -l "multigres.com/cluster=$c,app.kubernetes.io/component=shard-pool" -o json; }
mounted() {
  python3 - "$(pool)" <<'PY'
import json, sys
pod = json.loads(sys.argv[1])["items"][0]["spec"]["template"]["spec"]
vol = [v for v in pod["volumes"] if v["name"] == "postgres-init-secrets"][0]["secret"]
assert vol["secretName"] == "day0" and vol["items"] == [{"key": "boot.json", "path": "init-secrets.json"}], vol
for c in pod.get("initContainers", []) + pod["containers"]:
    has_mount = any(m["name"] == "postgres-init-secrets" for m in c.get("volumeMounts", []))
    has_env = any(e["name"] == "POSTGRES_INIT_SECRETS_FILE" for e in c.get("env", []))
    want = c["name"] == "postgres"
    assert has_mount == want and has_env == want, c["name"]
PY
}
wait_for 90 "the pool mounting the Secret into pgctld" mounted || fail "not mounted as expected: $(messages)"
note "fixed: the pool mounts day0/boot.json into pgctld only"
operator_alive init || fail "operator exited"
