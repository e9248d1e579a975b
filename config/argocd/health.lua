-- Argo CD health of a multigres.com object, from the kstatus conditions the
-- operator writes (multigres-op.c section 7). The same check serves every
-- kind: clusters and their children carry Ready/Reconciling/Stalled (with
-- Available/Progressing beside them); templates carry Ready only.
--   a newer spec than the operator has seen  -> Progressing
--   Stalled=True (needs a human)             -> Degraded, with its message
--   Ready=True                               -> Healthy
--   otherwise (Reconciling, no status yet)   -> Progressing
-- config/argocd/argocd-cm.yaml embeds this file once per kind
-- (config/argocd/gen-argocd-cm.sh); tests/gitops/health_test.lua tests it.
local hs = { status = "Progressing", message = "waiting for the operator to report status" }
local meta = obj.metadata or {}
local st = obj.status
if st == nil or st.conditions == nil then
  return hs
end
local gen = meta.generation
if gen ~= nil and st.observedGeneration ~= nil and st.observedGeneration < gen then
  hs.message = "the operator has not yet seen generation " .. gen
  return hs
end
local byType = {}
for _, c in ipairs(st.conditions) do
  if c.type ~= nil then byType[c.type] = c end
end
local function current(c)
  return c ~= nil and (gen == nil or c.observedGeneration == nil or c.observedGeneration >= gen)
end
local function says(c)
  local m = c.message
  if m == nil or m == "" then m = c.reason or "" end
  return m
end
local stalled, ready, reconciling = byType["Stalled"], byType["Ready"], byType["Reconciling"]
if current(stalled) and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = says(stalled)
  return hs
end
if current(ready) and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = says(ready)
  return hs
end
if current(reconciling) and reconciling.status == "True" then
  hs.message = says(reconciling)
elseif current(ready) then
  hs.message = says(ready)
else
  hs.message = "the operator has not yet reported on generation " .. tostring(gen)
end
return hs
