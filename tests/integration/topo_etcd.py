#!/usr/bin/env python3
"""Reads and writes Multigres topology records in an etcd, through etcd's own
JSON gateway, and decodes them with a protobuf reader of its own (field
numbers from Multigres's proto/clustermetadata.proto), independent of the
operator's C code.

  topo_etcd.py URL get KEY            JSON of the decoded record, or "absent"
  topo_etcd.py URL keys PREFIX        the keys under PREFIX, one a line
  topo_etcd.py URL put-hex KEY HEX    write raw bytes
  topo_etcd.py URL add-backup-field KEY FIELD VARINT
                                      append a varint field to the Database's
                                      backup_location (as Multigres would)
  topo_etcd.py URL put-pooler ROOT CELL NAME TYPE
                                      register a pooler as multipooler does:
                                      ROOT/poolers/multipooler-CELL-NAME/Pooler,
                                      a MultiPooler{id{component=1 MULTIPOOLER,
                                      cell=2, name=3}, type=6 (PRIMARY=1,
                                      REPLICA=2), hostname=8}
Environment: TOPO_CA, TOPO_CERT, TOPO_KEY for https.
"""
import base64, json, os, ssl, sys, urllib.request

def call(url, path, body):
    ctx = None
    if url.startswith("https"):
        ctx = ssl.create_default_context(cafile=os.environ["TOPO_CA"])
        ctx.load_cert_chain(os.environ["TOPO_CERT"], os.environ["TOPO_KEY"])
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
        return json.loads(r.read())

def b64(s):
    return base64.b64encode(s if isinstance(s, bytes) else s.encode()).decode()

def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]; i += 1
        v |= (c & 0x7f) << shift; shift += 7
        if not c & 0x80:
            return v, i

def fields(b):
    """[(field, wire, value)]: value an int (varint) or bytes (length-delimited)."""
    out, i = [], 0
    while i < len(b):
        key, i = varint(b, i)
        f, w = key >> 3, key & 7
        if w == 0:
            v, i = varint(b, i)
        elif w == 2:
            n, i = varint(b, i)
            v = b[i:i + n]; i += n
            assert len(v) == n, "truncated"
        else:
            raise ValueError("wire type %d" % w)
        out.append((f, w, v))
    return out

def enc_varint(v):
    out = bytearray()
    while True:
        out.append((v & 0x7f) | (0x80 if v > 0x7f else 0)); v >>= 7
        if not v:
            return bytes(out)

def strs(fs, n):
    return [v.decode() for f, w, v in fs if f == n and w == 2]

def one(fs, n, default=None):
    vals = [v for f, w, v in fs if f == n]
    return vals[-1] if vals else default

def decode(key, raw):
    fs = fields(raw)
    if key.endswith("/Cell"):
        return {"name": one(fs, 1, b"").decode(), "server_addresses": strs(fs, 2), "root": one(fs, 3, b"").decode(),
                "other": sorted({f for f, _, _ in fs if f > 3})}
    if key.endswith("/Database"):
        bl = fields(one(fs, 2, b""))
        fs_ = fields(one(bl, 1, b"")) if one(bl, 1) is not None else None
        s3 = fields(one(bl, 2, b"")) if one(bl, 2) is not None else None
        pol = fields(one(fs, 4, b""))
        return {"name": one(fs, 1, b"").decode(),
                "backup": {"filesystem_path": one(fs_, 1, b"").decode() if fs_ is not None else None,
                           "s3_bucket": one(s3, 1, b"").decode() if s3 is not None else None,
                           "require_initial_repo_encryption": one(bl, 3, 0),
                           "authoritative_generation": one(bl, 4)},
                "cells": strs(fs, 3),
                "policy": {"name": one(pol, 1, b"").decode(), "quorum_type": one(pol, 3, 0),
                           "required_count": one(pol, 4, 0)},
                "other": sorted({f for f, _, _ in fs if f > 4})}
    return {"hex": raw.hex()}

def get(url, key):
    r = call(url, "/v3/kv/range", {"key": b64(key)})
    kvs = r.get("kvs", [])
    return base64.b64decode(kvs[0].get("value", "")) if kvs else None

def main():
    url, cmd = sys.argv[1], sys.argv[2]
    if cmd == "get":
        raw = get(url, sys.argv[3])
        print("absent" if raw is None else json.dumps(decode(sys.argv[3], raw), sort_keys=True))
    elif cmd == "keys":
        p = sys.argv[3].encode()
        end = p[:-1] + bytes([p[-1] + 1])
        r = call(url, "/v3/kv/range", {"key": b64(p), "range_end": b64(end), "keys_only": True})
        for kv in r.get("kvs", []):
            print(base64.b64decode(kv["key"]).decode())
    elif cmd == "put-hex":
        call(url, "/v3/kv/put", {"key": b64(sys.argv[3]), "value": b64(bytes.fromhex(sys.argv[4]))})
    elif cmd == "add-backup-field":
        key, field, value = sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        raw = get(url, key)
        out = bytearray()
        for f, w, v in fields(raw):
            if f == 2 and w == 2:
                v = v + enc_varint(field << 3) + enc_varint(value)
            out += enc_varint(f << 3 | w) + (enc_varint(v) if w == 0 else enc_varint(len(v)) + v)
        call(url, "/v3/kv/put", {"key": b64(key), "value": b64(bytes(out))})
    elif cmd == "put-pooler":
        root, cell, name, typ = sys.argv[3].rstrip("/"), sys.argv[4], sys.argv[5], sys.argv[6]
        def ld(f, b):
            b = b if isinstance(b, bytes) else b.encode()
            return enc_varint(f << 3 | 2) + enc_varint(len(b)) + b
        ident = enc_varint(1 << 3) + enc_varint(1) + ld(2, cell) + ld(3, name)
        msg = ld(1, ident) + enc_varint(6 << 3) + enc_varint({"PRIMARY": 1, "REPLICA": 2}[typ]) + ld(8, name + ".local")
        call(url, "/v3/kv/put", {"key": b64("%s/poolers/multipooler-%s-%s/Pooler" % (root, cell, name)), "value": b64(msg)})
    else:
        sys.exit("unknown command " + cmd)

main()
