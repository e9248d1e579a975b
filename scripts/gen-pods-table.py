#!/usr/bin/env python3
"""scripts/gen-pods-table.py generate|check DOC < render-output

The "Every container at a glance" table of docs/components.md, made from what
the operator really renders for config/samples/minimal.yaml (the Makefile
pipes `./multigres-op render -f config/samples/minimal.yaml` in): component,
container, image and where it comes from, args, ports, probes and user. The
table sits between the "pods-table" markers of DOC; generate rewrites it,
check fails when the committed table differs (make check-generated), so the
docs cannot drift from the builders.
"""
import json
import re
import sys

# where each container's image comes from (docs/operations.md, Component images)
SOURCE = {
    "etcd": "`globalTopoServer.etcd.image` (built-in default)",
    "multiadmin": "`spec.images.multiadmin` > `MULTIGRES_IMAGE_MULTIADMIN` > built-in",
    "multiadmin-web": "`spec.images.multiadminWeb` > `MULTIGRES_IMAGE_MULTIADMIN_WEB` > built-in",
    "multigateway": "`spec.images.multigateway` > `MULTIGRES_IMAGE_MULTIGATEWAY` > built-in",
    "multiorch": "`spec.images.multiorch` > `MULTIGRES_IMAGE_MULTIORCH` > built-in",
    "multipooler": "`spec.images.multipooler` > `MULTIGRES_IMAGE_MULTIPOOLER` > built-in",
    "postgres": "`spec.images.postgres` > `MULTIGRES_IMAGE_POSTGRES` > built-in",
    "postgres-exporter": "`MULTIGRES_IMAGE_POSTGRES_EXPORTER` > built-in",
}


def cell(s):
    return s.replace("|", "\\|")


def probes(c):
    out = []
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        p = c.get(kind)
        if not p:
            continue
        g = p.get("httpGet")
        out.append("%s `%s`:%s" % (kind[:-5], g["path"], g["port"]) if g else kind[:-5])
    return "; ".join(out) or "none"


def table(render):
    rows, seen = [], set()
    for line in render.splitlines():
        if not line.startswith("{"):
            continue
        o = json.loads(line)
        if o["kind"] not in ("Deployment", "StatefulSet"):
            continue
        comp = o["metadata"]["labels"].get("app.kubernetes.io/component", "?")
        ps = o["spec"]["template"]["spec"]
        ctrs = [(c, True) for c in ps.get("initContainers", [])] + [(c, False) for c in ps["containers"]]
        for c, sidecar in ctrs:
            if (comp, c["name"]) in seen:
                continue
            seen.add((comp, c["name"]))
            args = " ".join(c.get("args", [])) or "(image default)"
            if c.get("command"):
                args = " ".join(c["command"]) + " " + args
            ports = ", ".join("%s %d" % (p["name"], p["containerPort"]) for p in c.get("ports", [])) or "none"
            sc = c.get("securityContext") or {}
            user = "%s:%s" % (sc["runAsUser"], sc.get("runAsGroup", "-")) if "runAsUser" in sc else "image default"
            rows.append("| %s `%s` | `%s`%s | `%s`<br>%s | `%s` | %s | %s | %s |" % (
                o["kind"], comp, c["name"], " (native sidecar)" if sidecar else "", cell(c["image"]),
                SOURCE.get(c["name"], "?"), cell(args), ports, probes(c), user))
    head = ("| Workload | Container | Image and its source | Args (sample `minimal`) | Ports | Probes | User:group |\n"
            "| --- | --- | --- | --- | --- | --- | --- |\n")
    return head + "\n".join(rows) + "\n"


def main():
    mode, doc = sys.argv[1], sys.argv[2]
    text = open(doc).read()
    new = "<!-- pods-table begin: scripts/gen-pods-table.py from `render -f config/samples/minimal.yaml` -->\n" + \
        table(sys.stdin.read()) + "<!-- pods-table end -->"
    got, n = re.subn(r"<!-- pods-table begin.*?<!-- pods-table end -->", lambda m: new, text, flags=re.S)
    if n != 1:
        sys.exit("gen-pods-table: the pods-table markers are not in %s exactly once" % doc)
    if mode == "generate":
        open(doc, "w").write(got)
    elif got != text:
        sys.exit("%s: the pods table drifted from what the operator renders: run make generate" % doc)


main()
