-- Drain the pool (every pending and ready VM is discarded), record the reset, then refill.
-- ARGV: now, id_base, actor, corr, cause, candidate names...
set_meta(tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5])
local n = discard_all({'cloning', 'booting', 'ready'}, 'drained')
emit('', 'pool.reset', '{"type":"pool.reset"}')
local refilled = refill(ARGV, 6)
return {n, refilled[1], refilled[2]}
