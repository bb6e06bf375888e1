-- Fail every pending request whose TTL ran out at or before now (at most limit), and forget the
-- released ones whose retention ran out; the status is re-checked by apply(). ARGV: now, id_base, actor, corr, cause, limit. Returns the requests failed.
set_meta(tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5])
local failed = {}
for _, rid in ipairs(redis.call('ZRANGEBYSCORE', K_RDUE, '-inf', META.now, 'LIMIT', 0, tonumber(ARGV[6]))) do
  local data = '{"type":"ondemand.failed","request_id":' .. cjson.encode(rid) .. ',"reason":"ttl"}'
  if emit('', 'ondemand.failed', data) then failed[#failed + 1] = rid else redis.call('ZREM', K_RDUE, rid) end
end
-- and forget settled requests whose retention ran out (not returned: nothing to do for them)
for _, rid in ipairs(redis.call('ZRANGEBYSCORE', K_RFORGET, '-inf', META.now, 'LIMIT', 0, tonumber(ARGV[6]))) do
  local data = '{"type":"ondemand.forgotten","request_id":' .. cjson.encode(rid) .. '}'
  if not emit('', 'ondemand.forgotten', data) then redis.call('ZREM', K_RFORGET, rid) end
end
return failed
