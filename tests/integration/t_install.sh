#!/usr/bin/env bash
# install.yaml and the k3s manifest are a valid set of objects for the real
# API server: every object passes a server-side apply dry run (admission,
# schema, CEL), after the namespace exists as the first apply creates it.
# (The cert-manager and observability variants need those projects' CRDs.)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
ns=multigres-operator
# a namespace left terminating by an earlier test must be gone first
kubectl wait --for=delete namespace/$ns --timeout=120s >/dev/null 2>&1 || true
# the Namespace first, for real (its Pod Security labels included)
python3 - "$ROOT/install.yaml" <<'PY' | kubectl apply --server-side --field-manager=it-install -f - >/dev/null || fail "the Namespace was refused"
import re, sys
print(next(d for d in re.split(r"^---$", open(sys.argv[1]).read(), flags=re.M) if re.search(r"^kind: Namespace$", d, re.M)))
PY
[ "$(kubectl get namespace $ns -o jsonpath='{.metadata.labels.pod-security\.kubernetes\.io/enforce}')" = restricted ] ||
  fail "the namespace does not enforce the restricted Pod Security Standard"
for f in install.yaml k3s/multigres-operator.yaml; do
  want=$(grep -c '^kind: ' "$ROOT/$f")
  out=$(kubectl apply --server-side --dry-run=server --field-manager=it-install -f "$ROOT/$f" 2>&1) ||
    fail "$f: the dry run was refused: $(tail -5 <<<"$out")"
  got=$(grep -c 'serverside-applied (server dry run)' <<<"$out" || true)
  [ "$got" = "$want" ] || fail "$f: $got of $want objects applied in the dry run: $out"
  note "$f: $got objects valid (server-side dry run)"
done
kubectl delete namespace $ns --wait=false >/dev/null 2>&1 || true
