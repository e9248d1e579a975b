#!/usr/bin/env python3
"""bench/pvc_binder.py - a PVC binder for benchmarks only (not a provisioner).

The test control plane provisions volumes with kube-controller-manager's
hostpath provisioner, whose one claim worker binds a few PVCs a second: at
1,000 clusters (7,000 PVCs) it, not the operator, decides when pods start.
For `make bench` (BENCH_BINDER=1, the default) the default StorageClass is
`bench-prebound`, whose provisioner no controller claims, and this binder
does the binding the way the PV controller would, with several requests in
flight: for each PVC of that class with no volume it creates a PV pre-bound
to it (claimRef with the PVC's uid; Retain, a hostPath no kwok pod mounts),
marks the PV Bound, points the PVC at it (spec.volumeName and the
bind-completed annotations) and marks the PVC Bound. The PV controller finds
both sides consistent and leaves them be. Nothing here is used by the tests
or the operator.

Usage: pvc_binder.py CLASS   (environment: MGOP_APISERVER_URL, MGOP_CA_FILE,
MGOP_ADMIN_CERT_FILE, MGOP_ADMIN_KEY_FILE from the control plane's env file)
Prints "bound N" lines to stderr now and then; runs until killed.
"""
import http.client
import json
import os
import queue
import ssl
import sys
import threading
import time
import urllib.parse

WORKERS = 8  # requests in flight: the binder should never be the bottleneck


def connect():
    url = urllib.parse.urlparse(os.environ["MGOP_APISERVER_URL"])
    ctx = ssl.create_default_context(cafile=os.environ["MGOP_CA_FILE"])
    ctx.load_cert_chain(os.environ["MGOP_ADMIN_CERT_FILE"], os.environ["MGOP_ADMIN_KEY_FILE"])
    return http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=60)


class Client:
    """One keep-alive connection; reconnects after any error."""

    def __init__(self):
        self.c = None

    def call(self, method, path, body=None, ctype="application/json"):
        for attempt in range(5):
            try:
                if self.c is None:
                    self.c = connect()
                data = json.dumps(body).encode() if body is not None else None
                self.c.request(method, path, body=data,
                               headers={"Content-Type": ctype, "Accept": "application/json",
                                        "User-Agent": "bench-pvc-binder"})
                r = self.c.getresponse()
                out = r.read()
                if r.status == 429 or r.status >= 500:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                return r.status, out
            except (OSError, http.client.HTTPException):
                self.c = None
                time.sleep(0.2 * (attempt + 1))
        return 0, b""


MERGE = "application/merge-patch+json"


def bind(cl, pvc, klass):
    md, spec = pvc["metadata"], pvc["spec"]
    ns, name, uid = md["namespace"], md["name"], md["uid"]
    size = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
    modes = spec.get("accessModes") or ["ReadWriteOnce"]
    pv = "bench-pv-" + uid
    st, out = cl.call("POST", "/api/v1/persistentvolumes", {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv, "labels": {"app.kubernetes.io/managed-by": "bench-pvc-binder"}},
        "spec": {"capacity": {"storage": size}, "accessModes": modes, "storageClassName": klass,
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": "/tmp/bench-pv/" + uid},
                 "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
                              "name": name, "uid": uid}}})
    if st not in (201, 409):
        return "PV %s: HTTP %d %s" % (pv, st, out[:200])
    st, out = cl.call("PATCH", "/api/v1/persistentvolumes/%s/status" % pv, {"status": {"phase": "Bound"}}, MERGE)
    if st != 200:
        return "PV %s status: HTTP %d %s" % (pv, st, out[:200])
    path = "/api/v1/namespaces/%s/persistentvolumeclaims/%s" % (ns, name)
    st, out = cl.call("PATCH", path, {
        "metadata": {"uid": uid, "annotations": {"pv.kubernetes.io/bind-completed": "yes",
                                                 "pv.kubernetes.io/bound-by-controller": "yes"}},
        "spec": {"volumeName": pv}}, MERGE)
    if st == 404:
        return None  # deleted meanwhile
    if st != 200:
        return "PVC %s/%s: HTTP %d %s" % (ns, name, st, out[:200])
    st, out = cl.call("PATCH", path + "/status", {
        "status": {"phase": "Bound", "accessModes": modes, "capacity": {"storage": size}}}, MERGE)
    if st not in (200, 404):
        return "PVC %s/%s status: HTTP %d %s" % (ns, name, st, out[:200])
    return None


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: pvc_binder.py STORAGECLASS")
    klass = sys.argv[1]
    work, done = queue.Queue(), set()
    counts = {"bound": 0, "failed": 0}
    lock = threading.Lock()

    def worker():
        cl = Client()
        while True:
            pvc, tries = work.get()
            err = bind(cl, pvc, klass)
            with lock:
                if not err:
                    counts["bound"] += 1
                    continue
                counts["failed"] += 1
                print("pvc_binder: " + err, file=sys.stderr, flush=True)
            if tries < 5:  # every step is idempotent: try the whole bind again
                threading.Timer(tries + 1.0, work.put, [(pvc, tries + 1)]).start()
            else:
                with lock:
                    done.discard(pvc["metadata"]["uid"])  # its next event offers it again

    for _ in range(WORKERS):
        threading.Thread(target=worker, daemon=True).start()

    def offer(pvc):
        if pvc.get("spec", {}).get("storageClassName") != klass or pvc["spec"].get("volumeName"):
            return
        uid = pvc["metadata"]["uid"]
        with lock:
            if uid in done:
                return
            done.add(uid)
        work.put((pvc, 0))

    def report():
        last = -1
        while True:
            time.sleep(10)
            with lock:
                b, f = counts["bound"], counts["failed"]
            if b != last:
                print("pvc_binder: bound %d (%d attempts failed)" % (b, f), file=sys.stderr, flush=True)
                last = b

    threading.Thread(target=report, daemon=True).start()
    cl = Client()
    while True:  # list, then watch from there; a 410 or a broken stream lists again
        st, out = cl.call("GET", "/api/v1/persistentvolumeclaims")
        if st != 200:
            time.sleep(1)
            continue
        lst = json.loads(out)
        for pvc in lst.get("items", []):
            offer(pvc)
        rv = lst["metadata"]["resourceVersion"]
        try:
            w = connect()
            w.request("GET", "/api/v1/persistentvolumeclaims?watch=1&allowWatchBookmarks=true&resourceVersion=" + rv,
                      headers={"Accept": "application/json", "User-Agent": "bench-pvc-binder"})
            r = w.getresponse()
            while True:
                line = r.readline()
                if not line:
                    break
                ev = json.loads(line)
                if ev.get("type") == "ERROR":
                    break
                if ev.get("type") in ("ADDED", "MODIFIED"):
                    offer(ev["object"])
            w.close()
        except (OSError, http.client.HTTPException, ValueError):
            time.sleep(1)


if __name__ == "__main__":
    main()
