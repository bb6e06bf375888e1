-- Apply a projection's read-model changes and advance its checkpoint in one step, unless the
-- checkpoint already covers this position (a redelivery), which makes redelivery a no-op.
-- KEYS[1] = checkpoint key. ARGV: position, then ops: (op, key, nargs, args...)*
local function newer(a, b)
  if not b then return true end
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
local position = ARGV[1]
if not newer(position, redis.call('GET', KEYS[1])) then return 0 end
local i = 2
while i <= #ARGV do
  local op, key, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  redis.call(op, key, unpack(ARGV, i + 3, i + 2 + n))
  i = i + 3 + n
end
redis.call('SET', KEYS[1], position)
return 1
