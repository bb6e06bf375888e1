-- Converge with the provider's inventory, listed at listed_at: a tracked VM missing from it has
-- vanished; a VM in it that the log does not know is discovered and discarded (so destroyed).
-- VMs that changed state after the listing are left for the next round.
-- ARGV: now, id_base, actor, corr, cause, listed_at, count, inventory names * count, candidates...
set_meta(tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5])
local listed_at = tonumber(ARGV[6])
local count = tonumber(ARGV[7])
local inventory = {}
for i = 1, count do inventory[ARGV[7 + i]] = true end
local vanished, discovered = 0, 0
for _, s in ipairs({'booting', 'ready', 'running', 'completed', 'destroying', 'discovered'}) do
  for _, vm in ipairs(redis.call('ZRANGEBYSCORE', kstate(s), '-inf', '(' .. listed_at)) do
    if not inventory[vm] then
      emit(vm, 'vm.vanished', '{"type":"vm.vanished","last_state":' .. cjson.encode(s) .. '}')
      vanished = vanished + 1
    end
  end
end
for i = 1, count do
  local vm = ARGV[7 + i]
  local gone = tonumber(redis.call('ZSCORE', K_GONE, vm))
  if state_of(vm) == '' and (gone == nil or gone < listed_at) then
    emit(vm, 'vm.discovered', '{"type":"vm.discovered"}')
    emit(vm, 'vm.discarded', '{"type":"vm.discarded","reason":"unknown to the pool"}')
    discovered = discovered + 1
  end
end
local refilled = refill(ARGV, 8 + count)
return {{vanished, discovered}, refilled[1], refilled[2]}
