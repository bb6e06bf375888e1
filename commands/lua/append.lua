-- Append events whose precondition is the VM's current state; all or none. Then refill.
-- ARGV: now, id_base, actor, corr, cause, count, (vm, type, body) * count, candidate names...
-- Returns {{1, entry ids...}, clones requested} or {{0, index of the refused event, the VM's state}, {}}.
set_meta(tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5])
local count = tonumber(ARGV[6])
local shadow = {}
for i = 1, count do
  local vm, etype = ARGV[4 + 3 * i], ARGV[5 + 3 * i]
  local rule = RULES[etype]
  if rule ~= nil then
    local cur = shadow[vm] or state_of(vm)
    if not rule.from[cur] then return {{0, i, cur}, {}, 0} end
    if rule.to ~= '=' then shadow[vm] = rule.to end
    if TERMINAL[rule.to] then shadow[vm] = '' end
  end
end
local ids = {1}
local reverted = false
for i = 1, count do
  ids[#ids + 1] = emit(ARGV[4 + 3 * i], ARGV[5 + 3 * i], ARGV[6 + 3 * i])
  reverted = reverted or ARGV[5 + 3 * i] == 'vm.checkout-reverted'
end
-- a reverted checkout brings a VM back to ready after its replacement was already requested
if reverted then trim_excess('pool over size after a reverted checkout') end
local refilled = refill(ARGV, 7 + 3 * count)
return {ids, refilled[1], refilled[2]}
