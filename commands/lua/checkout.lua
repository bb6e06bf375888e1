-- Hand out n ready VMs (oldest first) or none; then refill.
-- ARGV: now, id_base, actor, corr, cause, n, checked-out body, candidate names...
set_meta(tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5])
local n = tonumber(ARGV[6])
local picked = redis.call('ZRANGE', kstate('ready'), 0, n - 1)
if #picked == n then
  for _, vm in ipairs(picked) do emit(vm, 'vm.checked-out', ARGV[7]) end
else
  picked = {}
end
local refilled = refill(ARGV, 8)
return {picked, refilled[1], refilled[2]}
