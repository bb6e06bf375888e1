-- Finish a decision-state rebuild atomically: fold into the rebuilt keys (KEYS[1] = their root) the
-- entries appended since the replay's last position, then move them over the live keys in one step,
-- so live decisions never see half-rebuilt state and none made during the rebuild is lost.
-- ARGV: the live root, the last position replayed ("0-0" if none). Returns entries folded here.
local live, stream = ARGV[1], ARGV[1] .. ':events'
local folded = 0
for _, entry in ipairs(redis.call('XRANGE', stream, '(' .. ARGV[2], '+')) do
  local f = {}
  for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
  apply(f['vm'], f['type'], tonumber(f['at']), f['data'])
  folded = folded + 1
end
-- a pool's keys, and the control slot's request keys (each slot has only its own kind)
local suffixes = {':state', ':due', ':carry', ':gone', ':cfg', ':od', ':odq', ':odm', ':odn',
  ':od:status', ':od:due', ':od:work', ':od:req', ':od:forget'}
for _, s in ipairs(STATES) do suffixes[#suffixes + 1] = ':s:' .. s end
for _, suffix in ipairs(suffixes) do
  if redis.call('EXISTS', B .. suffix) == 1 then
    redis.call('RENAME', B .. suffix, live .. suffix)
  else
    redis.call('DEL', live .. suffix)
  end
end
return folded
