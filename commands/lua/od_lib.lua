-- On-demand bookkeeping, the live twin of events/od_fold.py. Loaded before lib.lua, whose apply()
-- calls it. In a pool's slot (KEYS[1] = "<prefix>:{<pool>}"): slices of requests and the VMs
-- cloned for them; in the control slot (KEYS[1] = "<prefix>:{ctl}"): the requests' status.
local OB = KEYS[1]
local K_OD = OB .. ':od'      -- VM -> slice "<request id>:<requested name>", until the VM is gone
local K_ODQ = OB .. ':odq'    -- open slice -> ms opened (clones start oldest first)
local K_ODM = OB .. ':odm'    -- open slice -> its pool.ondemand-requested body
local K_ODN = OB .. ':odn'    -- w:/r:/d:/f: .. slice -> to start / retries / delivered / failure
local K_RST = OB .. ':od:status'  -- control slot: request id -> status
local K_RDUE = OB .. ':od:due'    -- control slot: request id -> ms its TTL runs out (pending only)
local K_RWORK = OB .. ':od:work'  -- control slot: request id -> ms accepted, while the manager has work
local K_RREQ = OB .. ':od:req'    -- control slot: request id -> its ondemand.accepted body
local K_RFORGET = OB .. ':od:forget'  -- control slot: request id -> ms a released request is forgotten
local OD_SETTLED = {fulfilled = true, failed = true, cancelled = true}
local OD_PENDING = {cloning = true, booting = true}
local CTL_FROM = {
  ['ondemand.accepted'] = {from = {[''] = true}, to = 'pending'},
  ['ondemand.fulfilled'] = {from = {pending = true}, to = 'fulfilled'},
  ['ondemand.failed'] = {from = {pending = true}, to = 'failed'},
  ['ondemand.cancelled'] = {from = {pending = true, fulfilled = true, failed = true}, to = 'cancelled'},
}

local function od_rid(slice) return string.sub(slice, 1, string.find(slice, ':', 1, true) - 1) end

local function od_request_status(rid) return redis.call('HGET', K_RST, rid) or '' end

-- A control-stream request event; returns true, or false and the request's status.
local function od_ctl_apply(etype, now, data)
  local b = cjson.decode(data)
  local rid = b.request_id
  local cur = od_request_status(rid)
  if etype == 'ondemand.released' then
    if cur ~= b.status or not redis.call('ZSCORE', K_RWORK, rid) then return false, cur end
    redis.call('ZREM', K_RWORK, rid)
    if (b.keep_ms or 0) > 0 then redis.call('ZADD', K_RFORGET, now + b.keep_ms, rid) end
    return true
  end
  if etype == 'ondemand.forgotten' then
    if not OD_SETTLED[cur] or redis.call('ZSCORE', K_RWORK, rid) then return false, cur end
    redis.call('HDEL', K_RST, rid)
    redis.call('HDEL', K_RREQ, rid)
    redis.call('ZREM', K_RFORGET, rid)
    return true
  end
  local rule = CTL_FROM[etype]
  if rule == nil or not rule.from[cur] then return false, cur end
  redis.call('HSET', K_RST, rid, rule.to)
  if etype == 'ondemand.accepted' then
    redis.call('HSET', K_RREQ, rid, data)
    redis.call('ZADD', K_RWORK, now, rid)
    if (b.ttl_ms or 0) > 0 then redis.call('ZADD', K_RDUE, now + b.ttl_ms, rid) end
  else
    redis.call('ZREM', K_RDUE, rid)
    redis.call('ZREM', K_RFORGET, rid)  -- a settled request changed again: kept until released again
    if etype == 'ondemand.cancelled' then redis.call('ZADD', K_RWORK, 'NX', now, rid) end
  end
  return true
end

-- pool.ondemand-requested opens a slice (refused if open); pool.ondemand-closed forgets the request's.
local function od_pool_apply(etype, now, data)
  local b = cjson.decode(data)
  if etype == 'pool.ondemand-requested' then
    local s = b.request_id .. ':' .. b.requested_as
    if redis.call('ZSCORE', K_ODQ, s) then return false, 'open' end
    redis.call('ZADD', K_ODQ, now, s)
    redis.call('HSET', K_ODM, s, data)
    redis.call('HINCRBY', K_ODN, 'w:' .. s, b.count)
    return true
  end
  for _, s in ipairs(redis.call('ZRANGE', K_ODQ, 0, -1)) do
    if od_rid(s) == b.request_id then
      redis.call('ZREM', K_ODQ, s)
      redis.call('HDEL', K_ODM, s)
      redis.call('HDEL', K_ODN, 'w:' .. s, 'r:' .. s, 'd:' .. s, 'f:' .. s)
    end
  end
  return true
end

-- The on-demand side of an allowed VM transition (see events/od_fold.apply_vm_event).
local function od_vm_apply(vm, etype, cur, to, terminal, body)
  if etype == 'vm.clone-requested' then
    local rid = body.request_id or ''
    if rid ~= '' then
      local s = rid .. ':' .. (body.pool_alias or '')
      redis.call('HSET', K_OD, vm, s)
      if redis.call('ZSCORE', K_ODQ, s) then redis.call('HINCRBY', K_ODN, 'w:' .. s, -1) end
    end
    return
  end
  local s = redis.call('HGET', K_OD, vm)
  if not s then return end
  if terminal then redis.call('HDEL', K_OD, vm) end
  if not redis.call('ZSCORE', K_ODQ, s) then return end
  if etype == 'vm.checked-out' then
    redis.call('HINCRBY', K_ODN, 'd:' .. s, 1)
    return
  end
  if not OD_PENDING[cur] or OD_PENDING[to] or to == 'ready' then return end
  if redis.call('HEXISTS', K_ODN, 'f:' .. s) == 1 then return end
  local failure
  if etype == 'vm.clone-failed' and body.permanent == true then
    failure = 'Configuration error: ' .. (body.error or '')
  else
    local allowed = cjson.decode(redis.call('HGET', K_ODM, s)).max_retries or 0
    if (tonumber(redis.call('HGET', K_ODN, 'r:' .. s)) or 0) < allowed then
      redis.call('HINCRBY', K_ODN, 'r:' .. s, 1)
      redis.call('HINCRBY', K_ODN, 'w:' .. s, 1)
      return
    end
    failure = 'Max retry attempts exceeded'
  end
  redis.call('HSET', K_ODN, 'f:' .. s, failure)
  redis.call('HSET', K_ODN, 'w:' .. s, 0)
end

-- On-demand VMs of this pool in cloning and in booting (they count against ondemand_clone_limit,
-- never against the pool's size or clone_limit).
-- O(VMs pending), not O(on-demand VMs): delivered VMs stay in K_OD until they are gone.
local function od_in_flight()
  local counts = {cloning = 0, booting = 0}
  if redis.call('HLEN', K_OD) == 0 then return 0, 0 end
  for st in pairs(counts) do
    for _, vm in ipairs(redis.call('ZRANGE', OB .. ':s:' .. st, 0, -1)) do
      if redis.call('HEXISTS', K_OD, vm) == 1 then counts[st] = counts[st] + 1 end
    end
  end
  return counts.cloning, counts.booting
end

local function is_od(vm) return redis.call('HEXISTS', K_OD, vm) == 1 end
