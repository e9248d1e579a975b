#!/usr/bin/env python3
"""bench/list_replay.py KUBECONFIG APISERVER_PID ROUNDS < URIS

The floor under start_to_first_reconcile: the LIST requests an operator
start made (their request URIs on stdin, one a line, as the API server's
audit log has them), replayed one after another on one keep-alive TLS
connection, with KUBECONFIG's credentials and a user agent of its own
(kube-apiserver pretty-prints for curl's, which doubles the bytes; not
"multigres-op/...", which the bench counts as the operator's requests).
Each round reads /proc for kube-apiserver's CPU around it. Prints
"LISTS BYTES CPU_MS WALL_MS": the lists, the bytes of their bodies, and the
median round's kube-apiserver CPU (ms, its threads' schedstat; in
20261206-3967316.json and before, /proc/PID/stat's 10 ms ticks) and wall
time (ms). A first reconcile cannot come before the API server has served
these: on C cores, not before CPU_MS / C however fast the client is.
"""
import base64, http.client, json, os, ssl, subprocess, sys, tempfile, time


def kubeconfig(path):
    out = subprocess.run(["kubectl", "config", "view", "--raw", "--minify", "-o", "json", "--kubeconfig", path],
                         check=True, capture_output=True, text=True).stdout
    cfg = json.loads(out)
    return cfg["clusters"][0]["cluster"], cfg["users"][0]["user"]


def client(path):
    cluster, user = kubeconfig(path)
    ctx = ssl.create_default_context()
    tmp = tempfile.mkdtemp(prefix="list-replay.")
    def data_file(name, b64):
        p = os.path.join(tmp, name)
        with open(p, "wb") as f:
            f.write(base64.b64decode(b64))
        return p
    if "certificate-authority-data" in cluster:
        ctx.load_verify_locations(cafile=data_file("ca.crt", cluster["certificate-authority-data"]))
    elif "certificate-authority" in cluster:
        ctx.load_verify_locations(cafile=cluster["certificate-authority"])
    headers = {"User-Agent": "multigres-op-bench-list-replay/1", "Accept": "application/json"}
    if user.get("token"):
        headers["Authorization"] = "Bearer " + user["token"]
    elif "client-certificate-data" in user:
        ctx.load_cert_chain(data_file("tls.crt", user["client-certificate-data"]),
                            data_file("tls.key", user["client-key-data"]))
    host = cluster["server"].split("://", 1)[1].rstrip("/")
    return http.client.HTTPSConnection(host, context=ctx, timeout=60), headers


def cpu_ms(pid):
    """The process's CPU time, its threads' schedstat summed: nanoseconds,
    where /proc/PID/stat counts 10 ms ticks (the lists at 10 clusters take
    two of them)."""
    total = 0
    for task in os.listdir("/proc/%s/task" % pid):
        try:
            with open("/proc/%s/task/%s/schedstat" % (pid, task)) as f:
                total += int(f.read().split()[0])
        except OSError:  # the thread ended meanwhile
            pass
    return total / 1e6


def main():
    path, pid, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    uris = [u.strip() for u in sys.stdin if u.strip()]
    if not uris:
        sys.exit("list_replay: no LIST requests on stdin")
    conn, headers = client(path)
    conn.request("GET", "/version", headers=headers)  # the handshake outside the rounds
    conn.getresponse().read()
    samples = []
    for _ in range(rounds):
        size, c0, t0 = 0, cpu_ms(pid), time.monotonic()
        for u in uris:
            conn.request("GET", u, headers=headers)
            r = conn.getresponse()
            body = r.read()
            if r.status not in (200, 404):  # 404: an optional kind not served, as the operator saw it
                sys.exit("list_replay: GET %s: HTTP %d" % (u, r.status))
            size += len(body)
        samples.append((cpu_ms(pid) - c0, (time.monotonic() - t0) * 1000.0, size))
    samples.sort()
    c, w, size = samples[len(samples) // 2]
    print(len(uris), size, round(c), round(w))


if __name__ == "__main__":
    main()
