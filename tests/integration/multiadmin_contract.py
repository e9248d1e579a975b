#!/usr/bin/env python3
"""A contract double of multiadmin's REST API (Multigres proto/multiadminservice.proto,
google.api.http annotations), for contract tests only: the shapes follow the
proto3 JSON mapping (lowerCamel names, zero values omitted, 64-bit integers as
strings, enums by name, Timestamps as RFC 3339).

  GET  /api/v1/backups?database=&table_group=&shard=&limit=  GetBackups
  POST /api/v1/backups          {database, tableGroup, shard, type, forcePrimary}  Backup -> {jobId}
  POST /api/v1/backups/expire   ExpireBackups -> {}
  GET  /api/v1/jobs/{job_id}    GetBackupJobStatus
  POST /api/v1/shards/{database}/{table_group}/{shard}/switch-primary
                                {reason, catchupTimeout}  SwitchPrimary
                                -> {oldLeaderId, newLeaderId} (ID{component, cell, name})

What GetBackups answers is chosen by the file STATE (one word, re-read per
request): none, failed, completed2h, noreplica, error. What SwitchPrimary
answers is chosen by the file STATE.switch: "ok" (after running the shell
command in STATE.hook, if any, as multiorch would move the primary) or
"refuse" (FailedPrecondition, grpc-gateway's HTTP 400). Every request is
appended to LOG as a JSON line {method, path, query, body, t}.
usage: multiadmin_contract.py PORT STATE_FILE LOG_FILE
"""
import json, subprocess, sys, time, urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT, STATE, LOG = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jobs = {}


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".250Z"


START = time.time()  # backups were taken relative to the double's start: a listing does not move between GETs


def backups(state, q):
    base = {"database": q.get("database", [""])[0], "tableGroup": q.get("table_group", [""])[0],
            "shard": q.get("shard", [""])[0], "multipoolerServiceId": "p-1", "poolerType": "REPLICA"}
    now = START
    if state == "none":
        return 200, {}  # an empty repeated field is omitted
    if state == "failed":
        return 200, {"backups": [dict(base, backupId="20261202-010000F", type="full", status="BACKUP_STATUS_FAILED",
                                      backupTime=rfc3339(now - 600))]}
    if state == "completed2h":
        return 200, {"backups": [
            dict(base, backupId="20261201-000000F", type="full", status="BACKUP_STATUS_COMPLETE",
                 backupTime=rfc3339(now - 26 * 3600), backupSizeBytes="1048576"),
            dict(base, backupId="c2h", type="full", status="BACKUP_STATUS_COMPLETE",
                 backupTime=rfc3339(now - 7200), backupSizeBytes="2097152")]}
    if state == "noreplica":  # grpc-gateway's error body for codes.NotFound
        return 404, {"code": 5, "message": "failed to find replica pooler: no serving replica for %s/%s/%s"
                     % (base["database"], base["tableGroup"], base["shard"]), "details": []}
    return 500, {"code": 13, "message": "internal error"}


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, obj):
        b = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)

    def record(self, body):
        u = urllib.parse.urlsplit(self.path)
        with open(LOG, "a") as f:
            f.write(json.dumps({"method": self.command, "path": u.path, "query": u.query, "body": body,
                                "t": time.time()}) + "\n")
        return u

    def do_GET(self):
        u = self.record(None)
        if u.path == "/api/v1/backups":
            with open(STATE) as f:
                state = f.read().strip()
            code, obj = backups(state, urllib.parse.parse_qs(u.query))
            return self.reply(code, obj)
        if u.path.startswith("/api/v1/jobs/"):
            j = jobs.get(u.path.rsplit("/", 1)[1])
            if not j:
                return self.reply(404, {"code": 5, "message": "job not found"})
            return self.reply(200, j)
        self.reply(404, {"code": 5, "message": "no route"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self.record(raw.decode(errors="replace"))
            return self.reply(400, {"code": 3, "message": "invalid JSON"})
        u = self.record(body)
        if u.path == "/api/v1/backups":
            jid = "job-%d" % (len(jobs) + 1)
            jobs[jid] = {"jobId": jid, "jobType": "JOB_TYPE_BACKUP", "status": "JOB_STATUS_COMPLETED",
                         "database": body.get("database", ""), "tableGroup": body.get("tableGroup", ""),
                         "shard": body.get("shard", ""), "backupType": body.get("type", "")}
            return self.reply(200, {"jobId": jid})
        if u.path == "/api/v1/backups/expire":
            return self.reply(200, {})
        parts = u.path.split("/")
        if len(parts) == 8 and parts[:4] == ["", "api", "v1", "shards"] and parts[7] == "switch-primary":
            return self.switch_primary(parts[4], parts[5], parts[6], body)
        self.reply(404, {"code": 5, "message": "no route"})

    def switch_primary(self, db, tg, shard, body):
        try:
            with open(STATE + ".switch") as f:
                mode = f.read().strip()
        except OSError:
            mode = "ok"
        if mode != "ok":
            return self.reply(400, {"code": 9, "message": "no standby poolers available for promotion", "details": []})
        try:
            with open(STATE + ".hook") as f:
                hook = f.read().strip()
        except OSError:
            hook = ""
        if hook:
            subprocess.run(hook, shell=True, check=False)
        old = {"component": "MULTIPOOLER", "cell": "", "name": body.get("reason", "").rsplit(" ", 1)[-1]}
        return self.reply(200, {"oldLeaderId": old, "newLeaderId": {"component": "MULTIPOOLER", "cell": "", "name": "new"}})


HTTPServer(("127.0.0.1", PORT), H).serve_forever()
