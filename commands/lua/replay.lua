-- Rebuild decision state: apply logged entries without appending them.
-- ARGV: count, (vm, type, at, body) * count. Returns how many entries the state machine refused.
local refused = 0
for i = 1, tonumber(ARGV[1]) do
  local j = 4 * (i - 1) + 2
  if not apply(ARGV[j], ARGV[j + 1], tonumber(ARGV[j + 2]), ARGV[j + 3]) then refused = refused + 1 end
end
return refused
