-- Sets an agent's presence and/or session deadline.
--
-- KEYS[1] agent  KEYS[2] events  KEYS[3] the agent's sessions (hash: holder
--         → until, ms)
-- ARGV[1] agent id  ARGV[2] presence ('' keeps it)  ARGV[3] reason
-- ARGV[4] online until (ms; '' keeps it)  ARGV[5] events maxlen
-- ARGV[6] '1' to emit only when something changed
-- ARGV[7] only if the presence is now this ('' for any; 'wrap_up': and its
--         wrap_until has passed)
-- ARGV[8] now (ms): a session is live while online_until is later
-- ARGV[9] the holder whose session ARGV[4] is ('' sets online_until as
--         given): an instance's websockets, or 'http' for heartbeats. Its
--         deadline is kept in KEYS[3] (one at or before now ends it), and
--         online_until becomes the latest live one of all holders, so one
--         instance's last socket closing does not end a session that
--         another instance's socket keeps.
-- Returns 'ok', 'unknown_agent' (none, or retired) or 'unchanged' (ARGV[7]
-- did not hold).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'unknown_agent'
end
-- Retired (removed from the configuration): its open sockets close at
-- their next token check; until then they neither bring it back online
-- nor make it available (it got offers for up to that check).
if redis.call('HGET', KEYS[1], 'origin') == 'retired' then
  return 'unknown_agent'
end
if ARGV[7] ~= '' and redis.call('HGET', KEYS[1], 'presence') ~= ARGV[7] then
  return 'unchanged'
end
-- Ending a wrap-up (the leader's sweep): only once it is over. A leader
-- whose view is old (paused, behind the events) must not cut short a
-- wrap-up the agent began since.
if ARGV[7] == 'wrap_up' and num(redis.call('HGET', KEYS[1], 'wrap_until')) > num(ARGV[8]) then
  return 'unchanged'
end
local before = redis.call('HMGET', KEYS[1], 'presence', 'reason', 'online_until')
local now = num(ARGV[8])
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'presence', ARGV[2], 'reason', ARGV[3])
  if ARGV[2] ~= 'wrap_up' then redis.call('HSET', KEYS[1], 'wrap_until', 0) end
  if ARGV[2] == 'available' then redis.call('HSET', KEYS[1], 'missed', 0) end
end
if ARGV[4] ~= '' and ARGV[9] ~= '' then
  local untl = num(ARGV[4])
  if untl > now then
    redis.call('HSET', KEYS[3], ARGV[9], ARGV[4])
  else
    redis.call('HDEL', KEYS[3], ARGV[9])
  end
  local latest = 0
  local all = redis.call('HGETALL', KEYS[3])
  for i = 1, #all, 2 do
    local u = num(all[i + 1])
    if u <= now then
      redis.call('HDEL', KEYS[3], all[i])
    elseif u > latest then
      latest = u
    end
  end
  if latest > 0 then
    redis.call('PEXPIREAT', KEYS[3], latest)
    redis.call('HSET', KEYS[1], 'online_until', latest)
  else
    redis.call('HSET', KEYS[1], 'online_until', ARGV[4])
  end
elseif ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'online_until', ARGV[4])
end
local after = redis.call('HMGET', KEYS[1], 'presence', 'reason')
-- A heartbeat only matters to others when the session comes or goes.
local was_online = num(before[3]) > now
local is_online = num(redis.call('HGET', KEYS[1], 'online_until')) > now
local changed = before[1] ~= after[1] or before[2] ~= after[2] or was_online ~= is_online
if changed or ARGV[6] ~= '1' then
  redis.call('HINCRBY', KEYS[1], 'ver', 1)
  emit(KEYS[2], ARGV[5], extend({'type', 'presence'}, agent_state(KEYS[1], ARGV[1])), ARGV[8])
end
return 'ok'
