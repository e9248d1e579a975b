#!/usr/bin/env bash
# scripts/gen-install.sh generate|check VERSION
#
# Renders the install manifests from their kustomize sources under config/
# (kubectl kustomize --load-restrictor=LoadRestrictionsNone: crds.yaml lives at
# the repository root) and prepends each one's header comment:
#
#   install.yaml                config/install-header.yaml             + config/default
#   install-certmanager.yaml    config/certmanager/header.yaml         + config/certmanager
#   install-observability.yaml  config/observability/header.yaml       + config/observability
#   k3s/multigres-operator.yaml config/k3s/header.yaml                 + config/k3s
#
# generate writes them; check renders them to a temp dir and fails when a
# committed file differs (make check-generated). Both also check that
#   - the operator image is multigres-op:VERSION (the Makefile's BASE_VERSION,
#     what `multigres-op --version` prints before the +gitrev);
#   - config/operator (no CRDs) deploys that image too, config/crd has every CRD;
#   - examples/fleet's overlays build and render (./multigres-op render);
#   - every object fits the 256 KiB annotation limit when applied client-side
#     (kubectl's last-applied-configuration holds the object's JSON; k3s'
#     deploy controller stores a gzipped copy in objectset.rio.cattle.io/applied).
#
# kubectl: $KUBECTL, else the control plane's pinned kubectl
# (tests/controlplane/cp.sh bin-dir; its kustomize version fixes the output
# format), else kubectl on PATH (a warning: another kustomize may format
# differently), else `cp.sh build` builds the pinned one.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
version=${2:-}
case $mode in generate | check) ;; *) echo "usage: $0 generate|check VERSION" >&2; exit 2 ;; esac
[ -n "$version" ] || { echo "usage: $0 generate|check VERSION" >&2; exit 2; }

kubectl=${KUBECTL:-}
if [ -z "$kubectl" ]; then
  pinned="$(tests/controlplane/cp.sh bin-dir)/kubectl"
  if [ -x "$pinned" ]; then
    kubectl=$pinned
  elif command -v kubectl >/dev/null 2>&1; then
    kubectl=$(command -v kubectl)
    echo "gen-install: warning: using $kubectl, not the pinned $pinned; the output format may differ" >&2
  else
    echo "gen-install: building the pinned kubectl (tests/controlplane/cp.sh build)" >&2
    tests/controlplane/cp.sh build >&2
    kubectl=$pinned
  fi
fi

targets=(
  "install.yaml config/install-header.yaml config/default"
  "install-certmanager.yaml config/certmanager/header.yaml config/certmanager"
  "install-observability.yaml config/observability/header.yaml config/observability"
  "k3s/multigres-operator.yaml config/k3s/header.yaml config/k3s"
)

images_in() { grep -E '^[[:space:]]+image: ' | sed -E 's/^[[:space:]]+image: //' | sort -u; } # stdin: manifests

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gen-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
drift=0
for t in "${targets[@]}"; do
  read -r out header dir <<<"$t"
  mkdir -p "$tmp/$(dirname "$out")"
  { cat "$header"; "$kubectl" kustomize --load-restrictor=LoadRestrictionsNone "$dir"; } >"$tmp/$out.new" ||
    { echo "gen-install: kubectl kustomize $dir failed" >&2; exit 1; }
  mv "$tmp/$out.new" "$tmp/$out"
  images=$(images_in <"$tmp/$out")
  [ "$images" = "multigres-op:$version" ] || {
    echo "gen-install: $out deploys '$images', expected multigres-op:$version (set newTag in config/default/kustomization.yaml)" >&2
    exit 1
  }
  if [ "$mode" = generate ]; then
    cp "$tmp/$out" "$out"
  elif ! cmp -s "$tmp/$out" "$out"; then
    echo "gen-install: $out drifted from its sources ($header, $dir, crds.yaml): run make generate" >&2
    diff -u "$out" "$tmp/$out" 2>/dev/null | sed -n 1,20p >&2 || true
    drift=1
  fi
done
[ "$drift" = 0 ] || exit 1

# config/operator (the operator without its CRDs, for GitOps layouts that
# apply the CRDs in an earlier wave: examples/fleet) deploys the same image,
# and config/crd (the CRDs alone, for Flux) holds all of crds.yaml.
images=$("$kubectl" kustomize config/operator | images_in)
[ "$images" = "multigres-op:$version" ] || {
  echo "gen-install: config/operator deploys '$images', expected multigres-op:$version (set newTag in config/operator/kustomization.yaml)" >&2
  exit 1
}
# examples/fleet: each site's overlay builds, and what it builds renders
# (./multigres-op render: the spec is valid, every template it names is there).
if [ -x ./multigres-op ]; then
  for site in examples/fleet/edge-a examples/fleet/edge-b; do
    "$kubectl" kustomize "$site" >"$tmp/site.yaml" || { echo "gen-install: kubectl kustomize $site failed" >&2; exit 1; }
    ./multigres-op render -f "$tmp/site.yaml" >"$tmp/site.out" 2>&1 ||
      { echo "gen-install: $site does not render:" >&2; sed -n 1,5p "$tmp/site.out" >&2; exit 1; }
  done
fi
crds=$("$kubectl" kustomize --load-restrictor=LoadRestrictionsNone config/crd | grep -c '^kind: CustomResourceDefinition$' || true)
[ "$crds" = "$(grep -c '^kind: CustomResourceDefinition$' crds.yaml)" ] || {
  echo "gen-install: config/crd renders $crds CRDs, crds.yaml has $(grep -c '^kind: CustomResourceDefinition$' crds.yaml)" >&2
  exit 1
}

# Client-side apply limits. The CRDs are the only large objects: their exact
# JSON comes from the generator itself; every other object is a few KiB of
# YAML, checked by its text size.
python3 - "$tmp/k3s/multigres-operator.yaml" <<'PY'
import base64, gzip, importlib.util, json, sys
LIMIT = 256 * 1024          # total size of metadata.annotations
MARGIN = 16 * 1024          # room for the key and other annotations
spec = importlib.util.spec_from_file_location("gen_crds", "config/crd/gen-crds.py")
g = importlib.util.module_from_spec(spec)
spec.loader.exec_module(g)
def prune(v, in_list=False):  # what k3s (wrangler apply) keeps: strings cut to 64 bytes
    if isinstance(v, dict):
        return {k: (prune(x) if isinstance(x, (dict, list)) else
                    x if (in_list and k in ("apiVersion", "containerPort", "devicePath", "ip", "kind",
                                            "mountPath", "name", "port", "topologyKey", "type"))
                    else x[:64] if isinstance(x, str) else x)
                for k, x in v.items()}
    if isinstance(v, list):
        return [prune(x, True) if isinstance(x, dict) else prune(x) if isinstance(x, list) else x for x in v]
    return v
worst = None
for d in (g.crd(*k) for k in g.KINDS):
    name = d["metadata"]["name"]
    full = len(json.dumps(d, separators=(",", ":")))
    k3s = len(base64.b64encode(gzip.compress(json.dumps(prune(d), separators=(",", ":")).encode())).rstrip(b"="))
    if full > LIMIT - MARGIN:
        sys.exit(f"gen-install: CRD {name} is {full} bytes as JSON: too large for kubectl's client-side "
                 f"last-applied-configuration annotation ({LIMIT} bytes); install with --server-side only")
    if worst is None or full > worst[1]:
        worst = (name, full, k3s)
docs = open(sys.argv[1]).read().split("\n---\n")
for doc in docs:
    if "kind: CustomResourceDefinition" in doc:
        continue
    if len(doc) > 32 * 1024:
        sys.exit(f"gen-install: an object of {len(doc)} bytes of YAML in the k3s manifest: check its annotation size")
print(f"gen-install: largest object {worst[0]}: {worst[1]} bytes as JSON (kubectl last-applied), "
      f"{worst[2]} bytes as k3s' gzipped annotation; limit {LIMIT}", file=sys.stderr)
PY
if [ "$mode" = generate ]; then
  echo "gen-install: wrote install.yaml, install-certmanager.yaml, install-observability.yaml, k3s/multigres-operator.yaml" >&2
else
  echo "gen-install: install.yaml, install-certmanager.yaml, install-observability.yaml and k3s/multigres-operator.yaml match config/"
fi
