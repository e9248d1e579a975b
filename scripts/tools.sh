#!/usr/bin/env bash
# scripts/tools.sh - test tools built from Go modules, cached outside the
# repo like the control plane: metrics-lint (tests/metrics-lint), the
# Prometheus text-format checker the integration tests run /metrics through,
# promtool (the wrapper module tests/promtool: Prometheus's cmd/promtool
# as a `tool`), which unit-tests the alert rules (tests/alerts/run.sh), and
# otlp-receiver (tests/otlp-receiver: the OTLP/HTTP JSON receiver that
# t_tracing checks the operator's spans with, on the collector's decoder),
# and cert-manager (tests/cert-manager: cert-manager's own controllers in a
# small main, with its CRDs beside it; t_internal_tls issues certificates).
# Prints nothing when the cached builds are current.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${MGOP_CACHE:-$HOME/.cache/multigres-op}
export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
# go_tool NAME: tests/NAME, a module whose main package is its root, built
# once per content of go.mod, go.sum and main.go into $CACHE/tools/NAME-KEY
# and linked from $CACHE/tools/bin/NAME
go_tool() {
  local name=$1 src=$ROOT/tests/$1 key out
  key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
  out=$CACHE/tools/$name-$key
  if [ ! -x "$out/$name" ]; then
    command -v go >/dev/null || { echo "tools.sh: Go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }
    echo "tools.sh: building $name from Go modules" >&2
    mkdir -p "$out"
    (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n 10 go build -trimpath -ldflags "-s -w" -o "$out/$name.tmp" .) && mv "$out/$name.tmp" "$out/$name"
  fi
  ln -sfn "$out/$name" "$CACHE/tools/bin/$name"
}
mkdir -p "$CACHE/tools/bin"
go_tool metrics-lint

# promtool: Prometheus's own, from the wrapper module's pinned go.mod/go.sum;
# remove_all_sd leaves out the service-discovery plugins rule tests do not
# use (cold: about 4 min and 7.5 CPU-min on 2 cores, instead of 16 CPU-min)
psrc=$ROOT/tests/promtool
pflags="-tags remove_all_sd -trimpath -ldflags -s_-w" # in the key: a change of flags rebuilds
pkey=$( (cat "$psrc/go.mod" "$psrc/go.sum"; echo "$pflags") | sha256sum | cut -c1-12)
pout=$CACHE/tools/promtool-$pkey
if [ ! -x "$pout/promtool" ]; then
  command -v go >/dev/null || { echo "tools.sh: Go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }
  echo "tools.sh: building promtool from Go modules (a few minutes, once)" >&2
  mkdir -p "$pout"
  (cd "$psrc" && CGO_ENABLED=0 GOFLAGS=-mod=mod nice -n 10 go build -p "${MGOP_BUILD_P:-2}" -tags remove_all_sd -trimpath -ldflags "-s -w" \
    -o "$pout/promtool.tmp" github.com/prometheus/prometheus/cmd/promtool) && mv "$pout/promtool.tmp" "$pout/promtool"
fi
ln -sfn "$pout/promtool" "$CACHE/tools/bin/promtool"

# otlp-receiver: t_tracing's OTLP/HTTP JSON receiver (pdata's decoder)
go_tool otlp-receiver

# cert-manager: its controllers (about 5 min cold), and its CRDs from the
# same module version, kept beside the binary
go_tool cert-manager
cm_bin=$(readlink "$CACHE/tools/bin/cert-manager")
if [ ! -s "$(dirname "$cm_bin")/crds/cert-manager.io_certificates.yaml" ]; then
  cm_dir=$(cd "$ROOT/tests/cert-manager" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager)
  mkdir -p "$(dirname "$cm_bin")/crds"
  cp "$cm_dir"/deploy/crds/*.yaml "$(dirname "$cm_bin")/crds/"
fi
ln -sfn "$(dirname "$cm_bin")/crds" "$CACHE/tools/bin/cert-manager-crds"
