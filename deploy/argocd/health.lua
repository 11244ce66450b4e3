-- Argo CD health assessment for keyfleet's kinds (AwsKey, AwsReplicaKey, AwsKms,
-- AwsKeyPolicyTemplate), following the kstatus conventions keyfleet's status uses:
--   being deleted                            -> Progressing (keyfleet applies the deletionPolicy)
--   status not written for this generation   -> Progressing
--   Stalled=True                             -> Degraded (needs a change to the spec, Secret or AWS)
--   Reconciling=True                         -> Progressing
--   Ready=True                               -> Healthy (KeyDisabled included: disabled on purpose)
--   Ready=False, a reason that clears itself -> Progressing (KeyNotReady, PrimaryNotReady,
--                                               RotationPending, ImportQueued)
--   Ready=False, any other reason            -> Degraded
--   no Ready condition yet, Ready=Unknown    -> Progressing
-- Argo CD runs it with gopher-lua (Lua 5.1); tests/argocd_health.rs runs it with lua5.4 against
-- every reason docs/troubleshooting.md documents. deploy/argocd/argocd-cm.yaml registers it.
local hs = { status = "Progressing", message = "Waiting for keyfleet to report status" }

local waiting = {
  KeyNotReady = true, PrimaryNotReady = true, RotationPending = true, ImportQueued = true
}

local function describe(c)
  local text = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Being deleted: keyfleet applies the deletionPolicy, then removes its finalizer"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.metadata ~= nil and obj.metadata.generation ~= nil
    and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.message = "keyfleet has not seen the latest spec yet"
  return hs
end

local ready, stalled, reconciling = nil, nil, nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    ready = c
  elseif c.type == "Stalled" then
    stalled = c
  elseif c.type == "Reconciling" then
    reconciling = c
  end
end

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
elseif reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling)
elseif ready == nil then
  hs.message = "Waiting for keyfleet to report Ready"
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
elseif ready.status == "False" and not waiting[ready.reason or ""] then
  hs.status = "Degraded"
  hs.message = describe(ready)
else
  hs.status = "Progressing"
  hs.message = describe(ready)
end
return hs
