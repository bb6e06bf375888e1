-- Fire every deadline due at or before now (at most limit), re-checking its state; then refill.
-- ARGV: now, id_base, actor, corr, cause, limit, candidate names...
set_meta(tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5])
local due = redis.call('ZRANGEBYSCORE', K_DUE, '-inf', META.now, 'LIMIT', 0, tonumber(ARGV[6]))
local fired = 0
for _, member in ipairs(due) do
  local sep = string.find(member, ':', 1, true)
  local d = DEADLINE_BY_KIND[string.sub(member, 1, sep - 1)]
  local vm = string.sub(member, sep + 1)
  if d and d.states[state_of(vm)] then
    local data = d.fires
    if d.carry then
      local c = redis.call('HGET', K_CARRY, member)
      if c then data = string.sub(data, 1, -2) .. ',"' .. d.carry .. '":' .. c .. '}' end
    end
    -- apply() disarms the deadline as part of the fired event, so replay does exactly the same
    if emit(vm, d.fires_type, data) then fired = fired + 1 end
  else
    -- cannot happen while apply() keeps 'due' in step with the states; never fire twice regardless
    redis.call('ZREM', K_DUE, member)
    redis.call('HDEL', K_CARRY, member)
  end
end
local refilled = refill(ARGV, 7)
return {fired, refilled[1], refilled[2]}
