-- Record the pool's effective settings if they changed, trim any excess, then refill.
-- ARGV: now, id_base, actor, corr, cause, pool.configured body, candidate names...
-- Returns {changed (0/1), VMs discarded as excess}.
set_meta(tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5])
local want = cjson.decode(ARGV[6])
local have = redis.call('HMGET', K_CFG, 'size', 'template', 'clone_limit', 'ready_ttl', 'timeout', 'clone_target')
local changed = tostring(want.size) ~= have[1] or want.template ~= have[2]
  or tostring(want.clone_limit) ~= have[3] or tostring(want.ready_ttl) ~= have[4]
  or tostring(want.timeout) ~= have[5] or (want.clone_target or '') ~= have[6]
if changed then emit('', 'pool.configured', ARGV[6]) end
local trimmed = trim_excess('pool shrunk')
local refilled = refill(ARGV, 7)
if changed then return {{1, trimmed}, refilled[1], refilled[2]} end
return {{0, trimmed}, refilled[1], refilled[2]}
