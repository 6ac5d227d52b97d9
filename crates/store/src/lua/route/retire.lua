-- Retires an agent the configuration created and no longer names: its
-- token no longer signs in (open sockets close at their next check), it is
-- offline and gets no work (what it held returns to the queue after the
-- grace period, as when a session ends). The profile stays: records name
-- it. An agent created or changed through the API is not touched.
--
-- KEYS[1] agent  KEYS[2] events
-- ARGV[1] agent id  ARGV[2] token index prefix  ARGV[3] events maxlen
-- ARGV[4] now (ms)
-- Returns 'ok', or 'kept' (not an agent of the configuration).
if redis.call('HGET', KEYS[1], 'origin') ~= 'config' then
  return 'kept'
end
local digest = redis.call('HGET', KEYS[1], 'token')
if digest and digest ~= '' then
  redis.call('DEL', ARGV[2] .. digest)
end
-- The session ends now (not "never": the leader gives back what an agent
-- held once its session has ended, online_until > 0 and past, plus the
-- grace period); an agent that never had one keeps 0.
local online_until = num(redis.call('HGET', KEYS[1], 'online_until'))
if online_until > num(ARGV[4]) then online_until = num(ARGV[4]) end
redis.call('HSET', KEYS[1], 'token', '', 'origin', 'retired', 'presence', 'offline',
  'reason', 'removed from the configuration', 'online_until', online_until)
redis.call('HINCRBY', KEYS[1], 'ver', 1)
local state = agent_state(KEYS[1], ARGV[1])
emit(KEYS[2], ARGV[3], extend({'type', 'agent'}, state))
-- Offline from now on: its occupancy says so (an `agent` event records none).
occupancy(KEYS[2], by_name(state), num(ARGV[4]))
return 'ok'
