#!/usr/bin/env bash
# scripts/tools.sh - test tools built from Go modules, cached outside the
# repo like the control plane: metrics-lint (tests/metrics-lint), the
# Prometheus text-format checker the integration tests run /metrics through,
# promtool (the wrapper module tests/promtool: Prometheus's cmd/promtool
# as a `tool`), which unit-tests the alert rules (tests/alerts/run.sh), and
# otlp-receiver (tests/otlp-receiver: the OTLP/HTTP JSON receiver that
# t_tracing checks the operator's spans with, on the collector's decoder).
# Prints nothing when the cached builds are current.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${MGOP_CACHE:-$HOME/.cache/multigres-op}
export PATH="/usr/local/go/bin:$HOME/go/bin:$PATH"
src=$ROOT/tests/metrics-lint
key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
out=$CACHE/tools/metrics-lint-$key
if [ ! -x "$out/metrics-lint" ]; then
  command -v go >/dev/null || { echo "tools.sh: Go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }
  echo "tools.sh: building metrics-lint from Go modules" >&2
  mkdir -p "$out"
  (cd "$src" && GOFLAGS=-mod=mod go build -trimpath -o "$out/metrics-lint.tmp" .) && mv "$out/metrics-lint.tmp" "$out/metrics-lint"
fi
mkdir -p "$CACHE/tools/bin"
ln -sfn "$out/metrics-lint" "$CACHE/tools/bin/metrics-lint"

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

# otlp-receiver: small, its own module (pdata's JSON decoder)
osrc=$ROOT/tests/otlp-receiver
okey=$(cat "$osrc/go.mod" "$osrc/go.sum" "$osrc/main.go" | sha256sum | cut -c1-12)
oout=$CACHE/tools/otlp-receiver-$okey
if [ ! -x "$oout/otlp-receiver" ]; then
  command -v go >/dev/null || { echo "tools.sh: Go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }
  echo "tools.sh: building otlp-receiver from Go modules" >&2
  mkdir -p "$oout"
  (cd "$osrc" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$oout/otlp-receiver.tmp" .) && mv "$oout/otlp-receiver.tmp" "$oout/otlp-receiver"
fi
ln -sfn "$oout/otlp-receiver" "$CACHE/tools/bin/otlp-receiver"
