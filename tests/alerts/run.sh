#!/usr/bin/env bash
# tests/alerts/run.sh - the alert rules of config/observability/prometheusrule.yaml
# through Prometheus's own promtool (built from Go modules by scripts/tools.sh):
# `promtool check rules`, then `promtool test rules tests/alerts/alerts_test.yaml`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${MGOP_CACHE:-$HOME/.cache/multigres-op}
"$ROOT/scripts/tools.sh"
promtool=$CACHE/tools/bin/promtool
[ -x "$promtool" ] || { echo "alerts: no promtool at $promtool (scripts/tools.sh builds it)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/mgop-alerts.XXXXXX")
trap 'rm -rf "$work"' EXIT
python3 "$ROOT/tests/alerts/extract_rules.py" "$ROOT/config/observability/prometheusrule.yaml" "$work/rules.yaml"
cp "$ROOT/tests/alerts/alerts_test.yaml" "$work/"
"$promtool" check rules "$work/rules.yaml"
n=$(grep -c '^  - interval:' "$work/alerts_test.yaml")
(cd "$work" && "$promtool" test rules alerts_test.yaml)
echo "alerts: $n alert tests passed under promtool (prometheus v0.316.0)"
