-- Shared by every routing script (prepended by the store). All routing
-- state lives under one hash tag, `<prefix>:{r}`, so each script is atomic
-- on a single Redis and on a cluster alike.
--
-- Agent hash fields: presence (offline|available|away|wrap_up), reason,
-- wrap_until, online_until (ms; the agent's session is live until then),
-- cap (JSON [chat,email,social,voice]), cap_total, l:chat l:email l:social
-- l:voice (held contacts), missed, idle_since, last_offer_at, ver.
local CHANNELS = {'chat', 'email', 'social', 'voice'}

local function num(v)
  return tonumber(v) or 0
end

local function loads(agent_key)
  local l = redis.call('HMGET', agent_key, 'l:chat', 'l:email', 'l:social', 'l:voice')
  return {num(l[1]), num(l[2]), num(l[3]), num(l[4])}
end

-- The fields of an event that carry an agent's whole changing state, so
-- that whoever reads events can apply them without reading the agent.
local function agent_state(agent_key, agent)
  local f = redis.call('HMGET', agent_key, 'presence', 'reason', 'online_until',
    'idle_since', 'last_offer_at', 'ver', 'wrap_until')
  local l = loads(agent_key)
  return {'agent', agent, 'presence', f[1] or 'offline', 'reason', f[2] or '',
    'online_until', f[3] or '0', 'idle_since', f[4] or '0',
    'last_offer_at', f[5] or '0', 'ver', f[6] or '0', 'wrap_until', f[7] or '0',
    'loads', l[1] .. ',' .. l[2] .. ',' .. l[3] .. ',' .. l[4]}
end

-- Appends a routing event and counts it by type in the stats hash
-- (`<prefix>:{r}:stats`, next to the events stream).
-- Every event carries `n`, its number in the stream (1, 2, 3, …), so a
-- reader sees a gap (events trimmed before it read them) and reloads.
local function emit(events_key, maxlen, fields)
  local stats = string.gsub(events_key, 'events$', 'stats')
  redis.call('HINCRBY', stats, fields[2], 1)
  local n = redis.call('HINCRBY', stats, '_n', 1)
  fields[#fields + 1] = 'n'
  fields[#fields + 1] = n
  return redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', unpack(fields))
end

local function extend(a, b)
  for _, v in ipairs(b) do a[#a + 1] = v end
  return a
end

local function release_load(agent_key, channel)
  local left = redis.call('HINCRBY', agent_key, 'l:' .. channel, -1)
  if left < 0 then redis.call('HSET', agent_key, 'l:' .. channel, 0) end
  redis.call('HINCRBY', agent_key, 'ver', 1)
end
