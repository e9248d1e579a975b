#!/usr/bin/env python3
"""render_vs_live.py RENDER_OUTPUT NAMESPACE: every object `multigres-op render`
printed exists live in NAMESPACE and holds every rendered field with the same
value (uids of owners and the spec-hash annotation aside: both cover the owner
uid, which render leaves zero). Exits 1 with the first difference."""
import json, subprocess, sys


def subset(want, have, path):
    if isinstance(want, dict):
        if not isinstance(have, dict):
            raise AssertionError(f"{path}: render has an object, live {have!r}")
        for k, v in want.items():
            if path.endswith("ownerReferences[]") and k == "uid":
                continue
            if k == "multigres.com/spec-hash":
                continue
            if k not in have:
                raise AssertionError(f"{path}.{k} missing live")
            subset(v, have[k], f"{path}.{k}")
    elif isinstance(want, list):
        if not isinstance(have, list) or len(want) != len(have):
            raise AssertionError(f"{path}: list length render {len(want)} != live {len(have) if isinstance(have, list) else have!r}")
        for a, b in zip(want, have):
            subset(a, b, path + "[]")
    elif want != have:
        raise AssertionError(f"{path}: render {want!r} != live {have!r}")


def main():
    docs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
    if not docs:
        print("render printed nothing", file=sys.stderr)
        return 1
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        got = subprocess.run(["kubectl", "get", "-n", sys.argv[2], kind, name, "-o", "json"],
                             capture_output=True, text=True)
        if got.returncode:
            print(f"{kind}/{name}: not found live", file=sys.stderr)
            return 1
        try:
            subset(d, json.loads(got.stdout), f"{kind}/{name}")
        except AssertionError as e:
            print(e, file=sys.stderr)
            return 1
    print(f"render matches live for {len(docs)} objects", file=sys.stderr)
    return 0


sys.exit(main())
