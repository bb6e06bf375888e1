-- Apply a projection's read-model changes for a batch of entries and advance its checkpoint to the
-- batch's last position, in one step. A batch wholly at or before the checkpoint (a redelivery) is
-- a no-op (0); a batch that overlaps it (some entries already applied) is refused (-1), because its
-- changes were computed from all its entries; the caller rewinds delivery to the checkpoint.
-- Only the holder of the (projection, stream) lease may write (-2 otherwise): a runner whose lease
-- lapsed, or was taken by a rebuild, cannot write into a read model it no longer owns.
-- KEYS[1] = checkpoint key, KEYS[2] = lease key.
-- ARGV: holder, first position, last position, then ops: (op, key, nargs, args...)*
local function newer(a, b)
  if not b then return true end
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -2 end
local checkpoint = redis.call('GET', KEYS[1])
if not newer(ARGV[3], checkpoint) then return 0 end
if not newer(ARGV[2], checkpoint) then return -1 end
local position = ARGV[3]
local i = 4
while i <= #ARGV do
  local op, key, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  redis.call(op, key, unpack(ARGV, i + 3, i + 2 + n))
  i = i + 3 + n
end
redis.call('SET', KEYS[1], position)
return 1
