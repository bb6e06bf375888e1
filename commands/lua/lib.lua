-- Shared decision library. RULES, TERMINAL, DEADLINES and LIVE_STATES are rendered from
-- events/lifecycle.py and prepended by commands/_scripts.py, so the tables have one definition.
-- KEYS[1] is the pool's key root "<prefix>:{<pool>}"; every key below shares its hash tag.
local B = KEYS[1]
local K_STATE = B .. ':state'
local K_DUE = B .. ':due'
local K_CARRY = B .. ':carry'
local K_GONE = B .. ':gone'
local K_CFG = B .. ':cfg'
local K_STREAM = B .. ':events'
local function kstate(s) return B .. ':s:' .. s end

local DEADLINE_BY_KIND = {}
for _, d in ipairs(DEADLINES) do DEADLINE_BY_KIND[d.kind] = d end

local function cfg_num(name) return tonumber(redis.call('HGET', K_CFG, name)) or 0 end
local function state_of(vm)
  local s = redis.call('HGET', K_STATE, vm)
  if s then return s end
  return ''
end
local function num(body, field)
  local v = body[field]
  if type(v) == 'number' then return v end
  return 0
end

-- Envelope metadata of this script call: ids are "<base>-<n>" so one call needs one fresh id.
local META = {now = 0, id_base = '', seq = 0, actor = '', corr = '', cause = ''}
local function set_meta(now, id_base, actor, corr, cause)
  META.now = now; META.id_base = id_base; META.actor = actor; META.corr = corr; META.cause = cause
end

-- The one interpreter of the state machine. Returns true, or false and the current state.
local function apply(vm, etype, now, data)
  if etype == 'pool.configured' then
    local b = cjson.decode(data)
    redis.call('HSET', K_CFG, 'size', b.size, 'template', b.template, 'clone_limit', b.clone_limit,
      'ready_ttl', b.ready_ttl, 'timeout', b.timeout, 'clone_target', b.clone_target or '')
    -- the YAML as last applied (source "config", the default, is omitted from the body), so a
    -- restart can tell which YAML fields changed and keep the API's overrides of the others
    if (b.source or 'config') == 'config' then redis.call('HSET', K_CFG, 'yaml', data) end
    return true
  end
  if string.sub(etype, 1, 9) == 'ondemand.' then return od_ctl_apply(etype, now, data) end
  if string.sub(etype, 1, 14) == 'pool.ondemand-' then return od_pool_apply(etype, now, data) end
  local rule = RULES[etype]
  if rule == nil then return true end
  local cur = state_of(vm)
  if not rule.from[cur] then return false, cur end
  local to = rule.to
  if to == '=' then to = cur end
  local body = nil
  local function b()
    if body == nil then body = cjson.decode(data) end
    return body
  end
  if to ~= cur then
    if cur ~= '' then redis.call('ZREM', kstate(cur), vm) end
    if TERMINAL[to] then
      redis.call('HDEL', K_STATE, vm)
      redis.call('ZREMRANGEBYSCORE', K_GONE, '-inf', '(' .. (now - GONE_KEPT_MS))
      redis.call('ZADD', K_GONE, now, vm)
    else
      redis.call('HSET', K_STATE, vm, to)
      redis.call('ZADD', kstate(to), now, vm)
    end
    for _, d in ipairs(DEADLINES) do
      local was, is = d.states[cur], d.states[to]
      if was and not is then
        redis.call('ZREM', K_DUE, d.kind .. ':' .. vm)
        if d.carry then redis.call('HDEL', K_CARRY, d.kind .. ':' .. vm) end
      elseif is and not was then
        local n = 0
        if d.setting then n = cfg_num(d.setting) elseif d.field then n = num(b(), d.field) end
        if n > 0 then redis.call('ZADD', K_DUE, now + math.floor(n * d.unit), d.kind .. ':' .. vm) end
      end
    end
  end
  for _, d in ipairs(DEADLINES) do
    if d.fires_type == etype then  -- the event a deadline fires disarms it
      redis.call('ZREM', K_DUE, d.kind .. ':' .. vm)
      if d.carry then redis.call('HDEL', K_CARRY, d.kind .. ':' .. vm) end
    end
  end
  for _, d in ipairs(DEADLINES) do
    local f = d.rearm[etype]
    if f and d.states[to] then
      local n = num(b(), f)
      local member = d.kind .. ':' .. vm
      if n > 0 then
        local anchor = now
        if d.anchor == 'entry' then anchor = tonumber(redis.call('ZSCORE', kstate(to), vm)) or now end
        redis.call('ZADD', K_DUE, anchor + math.floor(n * d.unit), member)
        if d.carry then redis.call('HSET', K_CARRY, member, num(b(), d.carry) + 1) end
      else
        redis.call('ZREM', K_DUE, member)
      end
    end
  end
  if etype == 'vm.clone-requested' or redis.call('HEXISTS', K_OD, vm) == 1 then
    od_vm_apply(vm, etype, cur, to, TERMINAL[to] or false, b())
  end
  return true
end

-- Apply, then append to the log if the transition was allowed. Returns the entry id or false.
local function emit(vm, etype, data)
  local ok = apply(vm, etype, META.now, data)
  if not ok then return false end
  META.seq = META.seq + 1
  local id = redis.call('XADD', K_STREAM, '*', 'type', etype, 'v', SCHEMA_VERSION,
    'id', META.id_base .. '-' .. META.seq, 'at', META.now, 'vm', vm, 'actor', META.actor,
    'corr', META.corr, 'cause', META.cause, 'data', data)
  if not META.rung then  -- TEMPORARY bell stand-in: once per call, for the log's followers
    META.rung = true
    redis.call('PUBLISH', string.match(B, '^([^:]*):{') .. ':bell', K_STREAM)
  end
  return id
end

-- The pool's own VMs (not those of on-demand requests) that are pending or ready.
-- od_cloning, od_booting: od_in_flight(), when the caller has it already.
local function pending_and_ready(od_cloning, od_booting)
  if od_cloning == nil then od_cloning, od_booting = od_in_flight() end
  return redis.call('ZCARD', kstate('cloning')) + redis.call('ZCARD', kstate('booting'))
    + redis.call('ZCARD', kstate('ready')) - od_cloning - od_booting
end

-- Keep the pool at size: request clones for the shortfall, never more clones in flight than
-- clone_limit. names[first..] are fresh candidate names reserved by the caller. Returns the VMs
-- requested and how many more clones were wanted than names were given (the caller reserves
-- more names and refills again).
local function refill(names, first)
  local od_cloning, od_booting = od_in_flight()  -- O(pending VMs): once per refill
  local need = cfg_num('size') - pending_and_ready(od_cloning, od_booting)
  local slots = cfg_num('clone_limit') - redis.call('ZCARD', kstate('cloning')) + od_cloning
  if slots < need then need = slots end
  if need <= 0 then return {{}, 0} end
  local data = '{"type":"vm.clone-requested","template":'
    .. cjson.encode(redis.call('HGET', K_CFG, 'template') or '') .. '}'
  local made = {}
  local i = first
  while need > 0 and i <= #names do
    local vm = names[i]
    i = i + 1
    if state_of(vm) == '' and redis.call('ZSCORE', K_GONE, vm) == false then
      emit(vm, 'vm.clone-requested', data)
      made[#made + 1] = vm
      need = need - 1
    end
  end
  return {made, need}
end

local function discard_all(states, reason)
  local data = '{"type":"vm.discarded","reason":' .. cjson.encode(reason) .. '}'
  local n = 0
  for _, s in ipairs(states) do
    for _, vm in ipairs(redis.call('ZRANGE', kstate(s), 0, -1)) do
      if not is_od(vm) and emit(vm, 'vm.discarded', data) then n = n + 1 end
    end
  end
  return n
end

-- Discard VMs beyond the pool's size, cheapest first: clones not yet made, then booting VMs, then
-- ready ones, newest first in each. Returns how many were discarded.
local function trim_excess(reason)
  local excess = pending_and_ready() - cfg_num('size')
  local data = '{"type":"vm.discarded","reason":' .. cjson.encode(reason) .. '}'
  local n = 0
  for _, s in ipairs({'cloning', 'booting', 'ready'}) do
    if excess <= 0 then break end
    for _, vm in ipairs(redis.call('ZREVRANGE', kstate(s), 0, -1)) do
      if excess <= 0 then break end
      if not is_od(vm) and emit(vm, 'vm.discarded', data) then
        n = n + 1
        excess = excess - 1
      end
    end
  end
  return n
end
