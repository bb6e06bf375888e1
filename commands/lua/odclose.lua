-- Close a request's slices in this pool; unless the request was fulfilled, discard its VMs that
-- are still cloning, booting or running (so they are destroyed). Appends nothing when there is
-- nothing to close. ARGV: now, id_base, actor, corr, cause, request id, reason.
-- Returns {VMs discarded (-1 if nothing was appended), {}, 0}.
set_meta(tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5])
local rid, reason = ARGV[6], ARGV[7]
local open = false
for _, s in ipairs(redis.call('ZRANGE', K_ODQ, 0, -1)) do
  if od_rid(s) == rid then open = true end
end
local doomed = {}
if reason ~= 'fulfilled' then
  local all = redis.call('HGETALL', K_OD)
  for i = 1, #all, 2 do
    local st = state_of(all[i])
    if od_rid(all[i + 1]) == rid and (OD_PENDING[st] or st == 'ready' or st == 'running') then
      doomed[#doomed + 1] = all[i]
    end
  end
  table.sort(doomed)
end
if not open and #doomed == 0 then return {-1, {}, 0} end
emit('', 'pool.ondemand-closed', '{"type":"pool.ondemand-closed","request_id":' .. cjson.encode(rid)
  .. ',"reason":' .. cjson.encode(reason) .. '}')
local data = '{"type":"vm.discarded","reason":' .. cjson.encode('on-demand request ' .. reason) .. '}'
for _, vm in ipairs(doomed) do emit(vm, 'vm.discarded', data) end
return {#doomed, {}, 0}
