-- An agent's answer to an offer, or its expiry.
--   accept: offered to this agent -> assigned.
--   decline / expire / revoke: offered to this agent -> waiting again, the
--   agent excluded from it, their load released. `expire` only once the
--   deadline passed (`miss`: at once, the channel saw it missed), and it
--   counts a missed offer: N in a row sets the agent away. `revoke` (the
--   agent's session ended, or they went away or offline) neither counts
--   nor excludes: the agent may get it again once back. It is refused
--   ('online') while the agent is online and available or in wrap-up: a
--   leader whose view is old must not take an offer from an agent who came
--   back meanwhile. `pass` (the channel cannot reach the agent, e.g. a
--   call for an agent with no phone) is a decline that leaves the agent's
--   run of missed offers as it is: not their answer, so neither a miss nor
--   a sign they are there.
--
--   An accept of a contact of another channel than voice while the agent
--   is on a call (a call offered and answered while this offer was
--   pending), unless that channel may interrupt a call, is taken back as a
--   revoke and answered 'on_call': the agent gets no new work during a
--   call (offer.lua's rule, kept at the accept too). A call still ringing
--   does not count: both offers are in front of the agent, who may take
--   the chat first.
--
-- KEYS[1] contact  KEYS[2] agent  KEYS[3] held by agent  KEYS[4] waiting
-- KEYS[5] offers  KEYS[6] events
-- ARGV[1] action  ARGV[2] contact id  ARGV[3] agent id  ARGV[4] now
-- ARGV[5] missed offers before away (0: never)  ARGV[6] events maxlen
-- ARGV[7] channels that may interrupt a call, comma-separated (may be
--         absent: none)
-- Returns 'ok', or why not: 'not_offered' (not offered to this agent now),
-- 'not_due', 'online', 'on_call' (taken back).
local c = redis.call('HMGET', KEYS[1], 'state', 'agent', 'channel', 'offer_until',
  'since', 'excluded')
if c[1] ~= 'offered' or c[2] ~= ARGV[3] then
  return 'not_offered'
end
local action = ARGV[1]
local answer = 'ok'
if action == 'accept' and c[3] ~= 'voice'
    and num(redis.call('HGET', KEYS[2], 'l:voice')) > 0 then
  local may = false
  for name in string.gmatch(ARGV[7] or '', '[^,]+') do
    if name == c[3] then may = true end
  end
  if not may then
    -- A call answered (assigned), not one ringing: the agent holds at
    -- most their capacity, so this reads a handful of contacts, and only
    -- while a call is offered or held.
    local on_call = false
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
      local h = redis.call('HMGET', sibling(KEYS[6], 'c:' .. id), 'channel', 'state')
      if h[1] == 'voice' and h[2] == 'assigned' then on_call = true end
    end
    if on_call then
      action = 'revoke'
      answer = 'on_call'
    end
  end
end
if action == 'accept' then
  redis.call('HSET', KEYS[1], 'state', 'assigned', 'answered_at', ARGV[4])
  redis.call('ZREM', KEYS[5], ARGV[2])
  redis.call('HSET', KEYS[2], 'missed', 0)
  emit(KEYS[6], ARGV[6], extend({'type', 'accepted', 'contact', ARGV[2],
    'channel', c[3]}, agent_state(KEYS[2], ARGV[3])), ARGV[4])
  return 'ok'
end
if action == 'revoke' and answer == 'ok' then
  local a = redis.call('HMGET', KEYS[2], 'online_until', 'presence')
  if num(a[1]) > num(ARGV[4]) and a[2] ~= 'away' and a[2] ~= 'offline' then
    return 'online'
  end
end
if action == 'miss' then
  -- Missed on the channel itself (a phone that rang out): an expiry that
  -- does not wait for the deadline.
  action = 'expire'
elseif action == 'expire' and num(c[4]) > num(ARGV[4]) then
  return 'not_due'
end
local keep_missed = action == 'pass'
if keep_missed then action = 'decline' end
local excluded = c[6] or ''
if action ~= 'revoke' then
  if excluded == '' then excluded = ARGV[3] else excluded = excluded .. ',' .. ARGV[3] end
end
redis.call('HSET', KEYS[1], 'state', 'waiting', 'agent', '', 'offer_until', '',
  'excluded', excluded)
if action ~= 'revoke' then
  -- Exclusions lapse together, counted from the latest (offer.lua).
  redis.call('HSET', KEYS[1], 'excluded_at', ARGV[4])
end
redis.call('ZREM', KEYS[5], ARGV[2])
redis.call('ZADD', KEYS[4], c[5], ARGV[2])
redis.call('SREM', KEYS[3], ARGV[2])
release_load(KEYS[2], c[3])
if action == 'expire' then
  local missed = redis.call('HINCRBY', KEYS[2], 'missed', 1)
  local limit = num(ARGV[5])
  if limit > 0 and missed >= limit and redis.call('HGET', KEYS[2], 'presence') == 'available' then
    redis.call('HSET', KEYS[2], 'presence', 'away', 'reason', 'missed_offers', 'missed', 0)
  end
elseif (action == 'decline' and not keep_missed) or answer == 'on_call' then
  -- An answer (a decline, or an accept taken back for the call): the
  -- agent is there, their run of missed offers ends.
  redis.call('HSET', KEYS[2], 'missed', 0)
end
emit(KEYS[6], ARGV[6], extend({'type', action .. 'd', 'contact', ARGV[2],
  'channel', c[3]}, agent_state(KEYS[2], ARGV[3])), ARGV[4])
return answer
