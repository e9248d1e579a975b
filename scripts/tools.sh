#!/usr/bin/env bash
# scripts/tools.sh - test tools built from Go modules, cached outside the
# repo like the control plane: metrics-lint (tests/metrics-lint), the
# Prometheus text-format checker the integration tests run /metrics through.
# Prints nothing when the cached build is current.
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
