-- Open a slice of an on-demand request in this pool, unless it is open already (the manager
-- repeats this until the request is settled). ARGV: now, id_base, actor, corr, cause, body.
-- Returns {1 if opened now else 0, {}, 0}.
set_meta(tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5])
if emit('', 'pool.ondemand-requested', ARGV[6]) then return {1, {}, 0} end
return {0, {}, 0}
