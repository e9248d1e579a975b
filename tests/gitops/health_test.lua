-- Unit test of config/argocd/health.lua under Lua 5.1 (Argo CD runs its
-- health checks with gopher-lua, a Lua 5.1). Usage: lua5.1 health_test.lua HEALTH_LUA
-- Ends with "N passed, N failed".
local path = arg[1] or "config/argocd/health.lua"
local chunk = assert(loadfile(path))
local passed, failed = 0, 0

local function cond(t, s, gen, reason, msg)
  return { type = t, status = s, observedGeneration = gen, reason = reason or t, message = msg or "" }
end
-- kstatus conditions as the operator writes them for a cluster or child
local function five(ready, stalled, gen, reason, msg)
  local conv = (not ready) and (not stalled)
  local function b(x) return x and "True" or "False" end
  return { cond("Available", b(ready), gen, reason, msg), cond("Progressing", b(conv), gen, reason, msg),
           cond("Ready", b(ready), gen, reason, msg), cond("Reconciling", b(conv), gen, reason, msg),
           cond("Stalled", b(stalled), gen, reason, msg) }
end

local function check(name, o, want, wantmsg)
  obj = o
  local ok, hs = pcall(chunk)
  if not ok then
    failed = failed + 1; print("FAIL " .. name .. ": error " .. tostring(hs)); return
  end
  if hs.status ~= want or (wantmsg ~= nil and not string.find(hs.message or "", wantmsg, 1, true)) then
    failed = failed + 1
    print(string.format("FAIL %s: got %s %q, want %s %q", name, tostring(hs.status), tostring(hs.message), want, tostring(wantmsg)))
  else
    passed = passed + 1
  end
end

check("no status", { metadata = { generation = 1 } }, "Progressing", "waiting for the operator")
check("status without conditions", { metadata = { generation = 1 }, status = {} }, "Progressing")
check("ready", { metadata = { generation = 2 }, status = { observedGeneration = 2, conditions = five(true, false, 2, "Ready", "all 7 children ready") } },
  "Healthy", "all 7 children ready")
check("reconciling", { metadata = { generation = 2 }, status = { observedGeneration = 2, conditions = five(false, false, 2, "Converging", "2/3 pods ready") } },
  "Progressing", "2/3 pods ready")
check("stalled", { metadata = { generation = 3 }, status = { observedGeneration = 3,
  conditions = five(false, true, 3, "TemplateNotFound", 'names ShardTemplate "nope", which does not exist') } },
  "Degraded", 'ShardTemplate "nope"')
check("ready but generation not observed", { metadata = { generation = 4 }, status = { observedGeneration = 3, conditions = five(true, false, 3) } },
  "Progressing", "generation 4")
check("stalled but generation not observed", { metadata = { generation = 4 }, status = { observedGeneration = 3, conditions = five(false, true, 3) } },
  "Progressing", "generation 4")
check("stale condition, status observed", { metadata = { generation = 4 }, status = { observedGeneration = 4, conditions = five(true, false, 3) } },
  "Progressing")
check("template ready only", { metadata = { generation = 1 }, status = { observedGeneration = 1,
  conditions = { cond("Ready", "True", 1, "InUse", "used by 1 cluster") } } }, "Healthy", "used by 1 cluster")
check("template unused", { metadata = { generation = 1 }, status = { observedGeneration = 1,
  conditions = { cond("Ready", "True", 1, "Unused", "no cluster uses this template") } } }, "Healthy")
check("empty message falls back to reason", { metadata = { generation = 1 }, status = { observedGeneration = 1,
  conditions = { cond("Ready", "True", 1, "InUse", "") } } }, "Healthy", "InUse")
check("no generation in metadata", { metadata = {}, status = { conditions = five(true, false, 1) } }, "Healthy")
check("no metadata", { status = { conditions = five(false, true, 1, "Bad", "broken") } }, "Degraded", "broken")
check("ready false, not reconciling", { metadata = { generation = 1 }, status = { observedGeneration = 1,
  conditions = { cond("Ready", "False", 1, "Waiting", "waiting for etcd") } } }, "Progressing", "waiting for etcd")

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
