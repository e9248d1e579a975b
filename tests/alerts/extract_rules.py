#!/usr/bin/env python3
"""The rule groups of a PrometheusRule (config/observability/prometheusrule.yaml)
as a plain Prometheus rules file, which `promtool test rules` reads."""
import sys
import yaml

doc = yaml.safe_load(open(sys.argv[1]))
assert doc["kind"] == "PrometheusRule", "not a PrometheusRule: %s" % doc.get("kind")
yaml.safe_dump({"groups": doc["spec"]["groups"]}, open(sys.argv[2], "w"), sort_keys=False)
