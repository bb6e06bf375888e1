-- Append one request event to the control stream if the request's status allows it (KEYS[1] is
-- the control slot's root). ARGV: now, id_base, actor, corr, cause, request id, type, body.
-- Returns {1, status before} or {0, status before}.
set_meta(tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5])
local before = od_request_status(ARGV[6])
if emit('', ARGV[7], ARGV[8]) then return {1, before} end
return {0, before}
