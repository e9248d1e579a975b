#!/usr/bin/env bash
# The postgres-exporter sidecar's custom queries, as the operator renders them
# into <Shard>-exporter-queries, against a real PostgreSQL: a primary and a
# streaming standby made with pg_basebackup (Debian's server; Multigres runs
# 17, the queries use nothing newer than 10). Each query must run on both
# roles, return exactly the columns its metrics list names (as
# postgres_exporter maps them), a number in every GAUGE/COUNTER column, and
# say which role it ran on (is_standby); the standby must appear in the
# primary's per-standby rows. Every series the data-plane dashboard reads must
# be one these queries produce (or the exporter's own pg_up). The exporter
# itself is not on the module proxy, so this checks the file's contract with
# it, not the exporter.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pgbin/initdb" ] || fail "no PostgreSQL server (Debian's postgresql-15; .ci/run installs it)"
id postgres >/dev/null 2>&1 || fail "no postgres user (Debian's postgresql package makes it)"
python3 -c 'import yaml' 2>/dev/null || fail "python3 has no yaml module (Debian's python3-yaml)"
dir=$(mktemp -d /tmp/mgop-pgq.XXXXXX)
chown postgres "$dir"
as_pg() { runuser -u postgres -- "$@"; }
# two free ports, side by side (the standby's is the primary's + 1)
base=$(python3 -c 'import socket
for p in range(41000, 49000, 2):
    try:
        a, b = socket.socket(), socket.socket(); a.bind(("127.0.0.1", p)); b.bind(("127.0.0.1", p + 1)); a.close(); b.close(); print(p); break
    except OSError: pass')
start_pg() { as_pg "$pgbin/pg_ctl" -D "$dir/$1" -l "$dir/$1.log" -w start >/dev/null || fail "$1 did not start: $(tail -5 "$dir/$1.log")"; }
stop_pg() { [ "${KEEP:-}" ] && return; for d in primary standby; do [ -d "$dir/$d" ] && as_pg "$pgbin/pg_ctl" -D "$dir/$d" -m immediate stop >/dev/null 2>&1 || true; done; rm -rf "$dir"; }
trap stop_pg EXIT

"$OP_BIN" render -f config/samples/minimal.yaml > "$dir/render.json"
python3 - "$dir/render.json" "$dir/queries.yml" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"): continue
    o = json.loads(line)
    if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-exporter-queries"):
        open(sys.argv[2], "w").write(o["data"]["queries.yml"]); sys.exit(0)
sys.exit("no exporter-queries ConfigMap in render's output")
EOF

as_pg "$pgbin/initdb" -D "$dir/primary" -U postgres -A trust >/dev/null
cat >> "$dir/primary/postgresql.conf" <<EOF
port = $base
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
wal_level = replica
EOF
echo "host replication postgres 127.0.0.1/32 trust" >> "$dir/primary/pg_hba.conf"
start_pg primary
as_pg "$pgbin/pg_basebackup" -h 127.0.0.1 -p $base -U postgres -D "$dir/standby" -R -X stream >/dev/null
sed -i "s/^port = $base/port = $((base + 1))/" "$dir/standby/postgresql.conf"
echo "primary_conninfo = 'host=127.0.0.1 port=$base user=postgres application_name=standby1'" >> "$dir/standby/postgresql.auto.conf"
start_pg standby
wait_for 30 "the standby streaming" sh -c "[ \"\$(runuser -u postgres -- psql -h $dir -p $base -U postgres -Atc \"SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'\")\" = 1 ]" ||
  fail "the standby never streamed: $(tail -5 "$dir/standby.log")"
as_pg psql -h "$dir" -p $base -U postgres -qc "CREATE TABLE t AS SELECT generate_series(1, 1000) AS x" >/dev/null

out=$(python3 - "$dir/queries.yml" "$dir" $base <<'EOF'
import subprocess, sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
sock, base = sys.argv[2], int(sys.argv[3])
errors, lines = [], []
for role, port in (("primary", base), ("standby", base + 1)):
    for prefix, q in doc.items():
        want = [list(m)[0] for m in q["metrics"]]
        usage = {list(m)[0]: list(m.values())[0]["usage"] for m in q["metrics"]}
        for col, u in usage.items():
            if u not in ("LABEL", "GAUGE", "COUNTER"): errors.append(f"{prefix}.{col}: usage {u}")
            if not list(m for m in q["metrics"] if col in m)[0][col].get("description"): errors.append(f"{prefix}.{col}: no description")
        r = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-h", sock, "-p", str(port), "-U", "postgres",
                            "-X", "-A", "-F", "\t", "-P", "footer=off", "-v", "ON_ERROR_STOP=1", "-c", q["query"]],
                           capture_output=True, text=True)
        if r.returncode:
            errors.append(f"{role} {prefix}: {r.stderr.strip()}"); continue
        rows = r.stdout.rstrip("\n").split("\n")
        cols = rows[0].split("\t")
        if cols != want: errors.append(f"{role} {prefix}: columns {cols}, metrics name {want}")
        for row in rows[1:]:
            vals = dict(zip(cols, row.split("\t")))
            for c, v in vals.items():
                if usage.get(c) in ("GAUGE", "COUNTER"):
                    try: float(v)
                    except ValueError: errors.append(f"{role} {prefix}.{c}: {v!r} is not a number")
            lines.append(f"{role} {prefix} {vals}")
        if prefix == "multigres_replication":
            got = rows[1].split("\t")[0] if len(rows) > 1 else "?"
            if got != ("1" if role == "standby" else "0"): errors.append(f"{role}: is_standby {got}")
        if prefix == "multigres_replication_standby":
            n = len(rows) - 1
            if role == "primary" and (n != 1 or "standby1" not in rows[1]): errors.append(f"primary sees standbys {rows[1:]}")
            if role == "standby" and n != 0: errors.append(f"standby reports standbys {rows[1:]}")
import json, re
produced = {"pg_up"} | {f"{p}_{list(m)[0]}" for p, q in doc.items() for m in q["metrics"]
                        if list(m.values())[0]["usage"] != "LABEL"}
dash = json.load(open("config/observability/dashboards/data-plane.json"))
used = {n for p in dash["panels"] for t in p["targets"] for n in re.findall(r"\b(?:multigres|pg)_[a-z_]+\b", t["expr"])}
used |= {n for v in dash["templating"]["list"] for n in re.findall(r"\b(?:multigres|pg)_[a-z_]+\b", v.get("definition", ""))}
if not used: errors.append("the dashboard reads no series")
for n in sorted(used - produced): errors.append(f"dashboards/data-plane.json reads {n}, which no query produces")
lines.append(f"dashboard series {len(used)}")
print("\n".join(lines))
if errors: print("ERRORS\n" + "\n".join(errors)); sys.exit(1)
EOF
) || fail "exporter queries: ${out#*ERRORS}"
note "$(grep -c . <<<"$out") result rows over $(grep -c '^[a-z_]*:$' "$dir/queries.yml") queries on a primary and a standby; e.g. $(grep 'primary multigres_replication_standby' <<<"$out")"

