-- A booting VM answered: a VM of the pool becomes ready; a VM of an open on-demand slice becomes
-- ready and is handed to its request in the same step (so no checkout can take it); a VM of a
-- closed slice is discarded. Then refill.
-- ARGV: now, id_base, actor, corr, cause, vm, vm.ready body, candidate names...
-- Returns {{1, outcome} or {0, the VM's state}, clones requested, names short}.
set_meta(tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5])
local vm = ARGV[6]
local cur = state_of(vm)
if cur ~= 'booting' then return {{0, cur}, {}, 0} end
local s = redis.call('HGET', K_OD, vm)
local outcome = 'ready'
if s and not redis.call('ZSCORE', K_ODQ, s) then
  emit(vm, 'vm.discarded', '{"type":"vm.discarded","reason":"on-demand request closed"}')
  outcome = 'discarded'
else
  emit(vm, 'vm.ready', ARGV[7])
  if s then
    local b = cjson.decode(redis.call('HGET', K_ODM, s))
    emit(vm, 'vm.checked-out', '{"type":"vm.checked-out","lifetime":' .. string.format('%d', b.lifetime or 0)
      .. ',"requested_as":' .. cjson.encode(b.requested_as) .. ',"token_user":' .. cjson.encode(b.token_user or '')
      .. ',"token_hash":' .. cjson.encode(b.token_hash or '') .. ',"request_id":' .. cjson.encode(b.request_id) .. '}')
    outcome = 'delivered'
  end
end
local refilled = refill(ARGV, 8)
return {{1, outcome}, refilled[1], refilled[2]}
