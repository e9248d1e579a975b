#!/usr/bin/env python3
"""bench/serving_latency.py WEBHOOK_PORT PROBE_PORT NAMESPACE SECONDS RATE

Latency of the serving path, as the API server and the kubelet see it:
AdmissionReview POSTs to https://127.0.0.1:WEBHOOK_PORT/validate over one
keep-alive TLS connection (the API server keeps its connections), RATE per
second, each a MultigresCluster that the webhook resolves in full; and a
GET /healthz on the probe port after each. Prints
  webhook_p50_ms webhook_p99_ms healthz_p50_ms healthz_p99_ms count errors
on one line. Every answer is checked: a review must come back allowed with
its uid echoed, /healthz must say ok; anything else counts as an error.
"""
import ctypes
import http.client
import json
import platform
import ssl
import struct
import sys
import time


def short_slice():
    """Ask Linux's EEVDF scheduler for a 0.1 ms slice, as the operator's
    serving thread does (sched_attr.sched_runtime; no privilege needed): the
    figures are then the operator's latency, not this generator's own wait
    for the CPU after each answer arrives. Older kernels: no effect."""
    nr = {"x86_64": 314, "aarch64": 274}.get(platform.machine())
    if nr is None:
        return False
    attr = struct.pack("=IIQiIQQQ", 48, 0, 0, 0, 0, 100000, 0, 0)
    buf = ctypes.create_string_buffer(attr, len(attr))
    return ctypes.CDLL(None, use_errno=True).syscall(nr, 0, buf, 0) == 0


def review(uid, ns):
    return json.dumps({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "operation": "CREATE", "namespace": ns,
            "kind": {"group": "multigres.com", "version": "v1alpha1", "kind": "MultigresCluster"},
            "userInfo": {"username": "bench"},
            "object": {"metadata": {"name": "load"},
                       "spec": {"cells": [{"name": "zone-a", "zone": "us-east-1a"}]}},
        },
    })


def pct(xs, q):
    if not xs:
        return -1.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    wport, pport, ns, seconds, rate = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
    if not short_slice():
        print("serving_latency: no short scheduler slice for the generator", file=sys.stderr)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the bench measures latency; t_webhook checks the certificates
    hook = http.client.HTTPSConnection("127.0.0.1", wport, context=ctx, timeout=5)
    probe = http.client.HTTPConnection("127.0.0.1", pport, timeout=5)
    wl, hl, errors, i = [], [], 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        due = time.monotonic() + 1.0 / rate
        uid = "bench-%d" % i
        i += 1
        try:
            t0 = time.perf_counter()
            hook.request("POST", "/validate", body=review(uid, ns), headers={"Content-Type": "application/json"})
            r = hook.getresponse()
            body = r.read()
            t1 = time.perf_counter()
            resp = json.loads(body)["response"]
            if r.status != 200 or resp["uid"] != uid or not resp["allowed"]:
                errors += 1
            else:
                wl.append((t1 - t0) * 1000)
        except Exception as e:  # a refused or broken connection: count it, reconnect
            errors += 1
            print("webhook error: %r" % (e,), file=sys.stderr)
            hook.close()
        try:
            t0 = time.perf_counter()
            probe.request("GET", "/healthz")
            r = probe.getresponse()
            body = r.read()
            t1 = time.perf_counter()
            if r.status != 200 or body.strip() != b"ok":
                errors += 1
            else:
                hl.append((t1 - t0) * 1000)
        except Exception as e:
            errors += 1
            print("healthz error: %r" % (e,), file=sys.stderr)
            probe.close()
        left = due - time.monotonic()
        if left > 0:
            time.sleep(left)
    print("%.2f %.2f %.2f %.2f %d %d" % (pct(wl, 0.5), pct(wl, 0.99), pct(hl, 0.5), pct(hl, 0.99), len(wl), errors))


if __name__ == "__main__":
    main()
