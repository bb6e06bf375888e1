-- Apply a projection's read-model changes for a batch of entries and advance its checkpoint to the
-- batch's last position, in one step. A batch wholly at or before the checkpoint (a redelivery) is
-- a no-op (0); a batch that overlaps it (some entries already applied) is refused (-1), because its
-- changes were computed from all its entries; the caller reads again from the checkpoint.
-- Only the holder of the (projection, stream) lease may write (-2 otherwise): a runner whose lease
-- lapsed, or was taken by a rebuild, cannot write into a read model it no longer owns.
-- The projection's consumer group (if there is one) is moved to the checkpoint too: nothing reads
-- through it, it only shows the projection's position to XINFO (lag) and to the archiver.
-- KEYS[1] = checkpoint, KEYS[2] = lease, KEYS[3] = stream, KEYS[4..] = every read-model key written
-- (all in the stream's slot, as Redis Cluster requires).
-- ARGV: holder, group, first position, last position, then ops: (op, key index, nargs, args...)*
local function newer(a, b)
  if not b then return true end
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -2 end
local checkpoint = redis.call('GET', KEYS[1])
if not newer(ARGV[4], checkpoint) then return 0 end
if not newer(ARGV[3], checkpoint) then return -1 end
local i = 5
while i <= #ARGV do
  local op, key, n = ARGV[i], KEYS[tonumber(ARGV[i + 1])], tonumber(ARGV[i + 2])
  redis.call(op, key, unpack(ARGV, i + 3, i + 2 + n))
  i = i + 3 + n
end
redis.call('SET', KEYS[1], ARGV[4])
redis.pcall('XGROUP', 'SETID', KEYS[3], ARGV[2], ARGV[4])  -- no group (a rebuild before any runner): fine
return 1
