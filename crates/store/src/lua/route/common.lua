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

-- The fields of an event that carry an agent's whole changing state, so
-- that whoever reads events can apply them without reading the agent. The
-- agent's away reason is `away_reason`: an event's own `reason` (why a
-- contact was requeued) is another thing.
-- One read (every event with an agent pays it).
local function agent_state(agent_key, agent)
  local f = redis.call('HMGET', agent_key, 'presence', 'reason', 'online_until',
    'idle_since', 'last_offer_at', 'ver', 'wrap_until',
    'l:chat', 'l:email', 'l:social', 'l:voice')
  return {'agent', agent, 'presence', f[1] or 'offline', 'away_reason', f[2] or '',
    'online_until', f[3] or '0', 'idle_since', f[4] or '0',
    'last_offer_at', f[5] or '0', 'ver', f[6] or '0', 'wrap_until', f[7] or '0',
    'loads', num(f[8]) .. ',' .. num(f[9]) .. ',' .. num(f[10]) .. ',' .. num(f[11])}
end

-- Keys next to the events stream: `<prefix>:{r}:` .. name (same hash tag).
local function sibling(events_key, name)
  return string.sub(events_key, 1, #events_key - 6) .. name
end

local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- What the records keep of an event besides the contact's timeline: the
-- agent's changing state is in the events stream for the leader, not in
-- a contact's history.
local TIMELINE_SKIP = {contact = true, presence = true, reason = true, online_until = true,
  idle_since = true, last_offer_at = true, ver = true, wrap_until = true, loads = true,
  away_reason = true, n = true}

-- KPI facts (`<prefix>:{r}:kpi`, a stream kept ~26 h by its ids' time): one
-- per contact entering a queue, answered, abandoned, closed, rated,
-- reopened, transferred, and per change of an agent's (online, presence,
-- busy). `crates/records` folds them into rolling windows.
local KPI_KEEP_MS = 26 * 3600 * 1000

-- Trimmed by the server's clock (stream ids are its time), so that an
-- instance with a wrong clock cannot trim what others wrote.
-- One field, `e`: the fact as a JSON object of strings (one field is
-- cheaper to append, serve and parse than a dozen).
local function kpi_fact(events_key, fact)
  local body = {}
  for k, v in pairs(fact) do body[k] = tostring(v) end
  redis.call('XADD', sibling(events_key, 'kpi'), 'MINID', '~', server_ms() - KPI_KEEP_MS,
    '*', 'e', cjson.encode(body))
end

-- An agent's occupancy: online (a live session, not offline), presence,
-- and busy (holding a contact or in wrap-up), recorded when it changes.
-- `f` holds the agent's state as `agent_state` gives it (by name).
local function occupancy(events_key, f, now)
  local agent = f['agent']
  if not (agent and f['presence']) then return end
  local busy = '0'
  for l in string.gmatch(f['loads'] or '', '[^,]+') do
    if num(l) > 0 then busy = '1' end
  end
  if f['presence'] == 'wrap_up' then busy = '1' end
  local online = '0'
  if f['presence'] ~= 'offline' and num(f['online_until']) > now then online = '1' end
  local state = online .. f['presence'] .. busy
  local akey = sibling(events_key, 'agent:' .. agent)
  if redis.call('HGET', akey, 'kpi_state') ~= state then
    redis.call('HSET', akey, 'kpi_state', state)
    kpi_fact(events_key, {k = 'agent', at = now, ag = agent, o = online, p = f['presence'],
      b = busy})
  end
end

-- `agent_state`'s list as a table by name.
local function by_name(list)
  local t = {}
  for i = 1, #list, 2 do t[list[i]] = tostring(list[i + 1]) end
  return t
end

-- The records of one event (`crates/records`, docs/records.md): the
-- contact's timeline, KPI facts, and a copy for the webhooks when they are on.
local function record(events_key, f, now, n)
  local kind = f['type']
  local contact = f['contact']
  if contact then
    local entry = {at = now, n = n}
    for k, v in pairs(f) do
      if not TIMELINE_SKIP[k] or (k == 'reason' and kind == 'requeued') then entry[k] = v end
    end
    local tl = sibling(events_key, 'tl:' .. contact)
    redis.call('RPUSH', tl, cjson.encode(entry))
    local ckey = sibling(events_key, 'c:' .. contact)
    if kind == 'closed' or kind == 'abandoned' then
      -- The retention sweep's list: contacts by the time they ended.
      redis.call('ZADD', sibling(events_key, 'closed'), now, contact)
    end
    local fact = nil
    if kind == 'enqueued' or kind == 'requeued' or kind == 'accepted' or kind == 'assigned'
        or kind == 'abandoned' or kind == 'closed' or kind == 'rated' then
      local c = redis.call('HMGET', ckey, 'queue', 'channel', 'queued_at', 'answered_at',
        'kpi_answered', 'agent', 'last_agent', 'kpi_moved')
      local base = {k = kind, at = now, c = contact, q = c[1] or '', ch = c[2] or ''}
      -- In a queue it was transferred to after its answer: counted for
      -- that queue, not again for the total and the channel (records' kpi.rs).
      if c[8] == '1' and (kind == 'accepted' or kind == 'assigned' or kind == 'abandoned') then
        base['x'] = '1'
      end
      if kind == 'enqueued' then
        fact = base
        redis.call('HSET', ckey, 'kpi_answered', '0')
      elseif kind == 'requeued' then
        -- Sent on by an agent to another queue: counted against the queue
        -- it leaves, and as a new offer to the queue it enters. To another
        -- agent of the same queue it is neither (nor answered again).
        if f['reason'] == 'transfer' and (f['from_queue'] or '') ~= (c[1] or '') then
          kpi_fact(events_key, {k = 'transferred', at = now, c = contact,
            q = f['from_queue'] or '', ch = c[2] or '', ag = f['agent'] or ''})
          fact = base
          base['k'] = 'enqueued'
          if c[5] == '1' or c[8] == '1' then
            base['x'] = '1'
            redis.call('HSET', ckey, 'kpi_answered', '0', 'kpi_moved', '1')
          else
            redis.call('HSET', ckey, 'kpi_answered', '0')
          end
        elseif f['reason'] == 'unreachable' then
          -- Its channel could not reach the agent who took it (a call, no
          -- phone): nobody answered the customer. It enters its queue
          -- again, so that the real answer, or the caller hanging up, is
          -- counted; the assignment's answer stays counted too. In a queue
          -- it was transferred to, marked like its answer there will be.
          fact = base
          base['k'] = 'enqueued'
          if c[8] == '1' then base['x'] = '1' end
          redis.call('HSET', ckey, 'kpi_answered', '0')
        end
      elseif kind == 'accepted' or kind == 'assigned' then
        if c[5] ~= '1' then
          redis.call('HSET', ckey, 'kpi_answered', '1', 'last_agent', f['agent'] or '')
          base['k'] = 'answered'
          base['ag'] = f['agent'] or ''
          base['w'] = now - num(c[3])
          fact = base
        else
          redis.call('HSET', ckey, 'last_agent', f['agent'] or '')
        end
      elseif kind == 'abandoned' then
        -- Answered, then back in the queue (its agent's session ended) and
        -- left: it was answered, not abandoned as well.
        if f['was'] ~= 'new' and f['by'] ~= 'policy' and c[5] ~= '1' then
          base['w'] = now - num(c[3])
          fact = base
        end
      elseif kind == 'closed' then
        base['ag'] = f['agent'] or c[6] or ''
        base['h'] = now - num(c[4])
        base['d'] = f['disposition'] or ''
        fact = base
      elseif kind == 'rated' then
        base['ag'] = c[7] or ''
        base['s'] = f['score'] or '0'
        fact = base
      end
    end
    if fact then kpi_fact(events_key, fact) end
    if (kind == 'accepted' or kind == 'assigned' or kind == 'closed' or kind == 'abandoned')
        and redis.call('EXISTS', sibling(events_key, 'hooks:on')) == 1 then
      -- Bounded (about a million, ~150 MB): while no mover runs (the last
      -- instance with webhooks gone, `hooks:on` not yet lapsed) it would
      -- grow until Redis refused every write.
      redis.call('XADD', sibling(events_key, 'hooks'), 'MAXLEN', '~', 1000000, '*',
        'type', kind, 'contact', contact,
        'agent', f['agent'] or '', 'channel', f['channel'] or '',
        'disposition', f['disposition'] or '', 'by', f['by'] or '', 'at', now, 'n', n)
    end
  end
  -- A profile update (`agent`) changes no occupancy and has no caller's
  -- clock; an accept neither (the offer made the agent busy already).
  if kind ~= 'agent' and kind ~= 'accepted' then
    occupancy(events_key, f, now)
  end
end

-- The routing record fields an event carries (`rec`) when the contact may
-- be waiting again after it, so the leader need not read them back.
local RECORD_FIELDS = {'id', 'state', 'queue', 'channel', 'priority', 'since', 'queued_at',
  'rule', 'source', 'customer', 'sticky', 'sticky_until', 'sticky_from', 'excluded', 'excluded_at', 'agent',
  'offer_until', 'offered_at'}
local CARRIES_RECORD = {enqueued = true, requeued = true, declined = true, expired = true,
  revoked = true}

-- Appends a routing event and counts it by type in the stats hash
-- (`<prefix>:{r}:stats`, next to the events stream), then keeps its
-- records (`record`). `now` is the caller's clock (ms); without it, the
-- server's.
-- Every event carries `n`, its number in the stream (1, 2, 3, …), so a
-- reader sees a gap (events trimmed before it read them) and reloads.
-- The stream entry is one field, `e`: the event as a JSON object of
-- strings (crates/store/src/events.rs reads it).
local function emit(events_key, maxlen, fields, now)
  local stats = sibling(events_key, 'stats')
  redis.call('HINCRBY', stats, fields[2], 1)
  local n = redis.call('HINCRBY', stats, '_n', 1)
  fields[#fields + 1] = 'n'
  fields[#fields + 1] = n
  -- The event's own fields come first; should an agent's state after them
  -- repeat a name, the first counts.
  local f = {}
  for i = 1, #fields, 2 do
    if f[fields[i]] == nil then f[fields[i]] = tostring(fields[i + 1]) end
  end
  record(events_key, f, tonumber(now) or server_ms(), n)
  if f['contact'] and CARRIES_RECORD[f['type']] then
    local r = redis.call('HMGET', sibling(events_key, 'c:' .. f['contact']), unpack(RECORD_FIELDS))
    local rec = {}
    for i, name in ipairs(RECORD_FIELDS) do
      if r[i] then rec[name] = r[i] end
    end
    f['rec'] = rec
  end
  return redis.call('XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'e', cjson.encode(f))
end

local function extend(a, b)
  for _, v in ipairs(b) do a[#a + 1] = v end
  return a
end

-- Starts the agent's wrap-up until `untl` (ms; 0 for none) after a close:
-- from available, or again from wrap-up (a second close during the first
-- one's wrap-up gets its whole time too). Away and offline are kept.
local function wrap_up(agent_key, untl)
  if num(untl) <= 0 then return end
  local a = redis.call('HMGET', agent_key, 'presence', 'wrap_until')
  if a[1] == 'available' or (a[1] == 'wrap_up' and num(a[2]) < num(untl)) then
    redis.call('HSET', agent_key, 'presence', 'wrap_up', 'wrap_until', untl)
  end
end

local function release_load(agent_key, channel)
  local left = redis.call('HINCRBY', agent_key, 'l:' .. channel, -1)
  if left < 0 then redis.call('HSET', agent_key, 'l:' .. channel, 0) end
  redis.call('HINCRBY', agent_key, 'ver', 1)
end
