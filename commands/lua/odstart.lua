-- Request clones for the open on-demand slices, oldest slice first, keeping at most `limit`
-- on-demand clones of this pool in flight; a failed slice starts nothing.
-- ARGV: now, id_base, actor, corr, cause, limit, candidate names...
-- Returns {clones requested, the VMs, how many more were wanted than names were given}.
set_meta(tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5])
local free = tonumber(ARGV[6]) - (od_in_flight())
local template = cjson.encode(redis.call('HGET', K_CFG, 'template') or '')
local made, short, i = {}, 0, 7
for _, s in ipairs(redis.call('ZRANGE', K_ODQ, 0, -1)) do
  if free <= 0 then break end
  local want = tonumber(redis.call('HGET', K_ODN, 'w:' .. s)) or 0
  if want > 0 then
    local b = cjson.decode(redis.call('HGET', K_ODM, s))
    local data = '{"type":"vm.clone-requested","template":' .. template .. ',"reason":"ondemand","request_id":'
      .. cjson.encode(b.request_id) .. ',"pool_alias":' .. cjson.encode(b.requested_as) .. '}'
    while want > 0 and free > 0 do
      while i <= #ARGV and (state_of(ARGV[i]) ~= '' or redis.call('ZSCORE', K_GONE, ARGV[i])) do i = i + 1 end
      if i > #ARGV then
        short = short + math.min(want, free)
        free = free - math.min(want, free)
        break
      end
      emit(ARGV[i], 'vm.clone-requested', data)
      made[#made + 1] = ARGV[i]
      i = i + 1
      want = want - 1
      free = free - 1
    end
  end
end
return {#made, made, short}
