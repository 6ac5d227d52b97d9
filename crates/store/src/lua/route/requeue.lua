-- Puts a contact assigned to an agent back in the queue: the agent's
-- session ended and did not come back within the grace period, or a
-- supervisor or the agent transferred it. Only an assigned contact: an
-- offer is taken back by `answer.lua` (decline, expire, revoke).
--
-- KEYS[1] contact  KEYS[2] agent  KEYS[3] held by agent  KEYS[4] waiting
-- KEYS[5] offers  KEYS[6] events
-- ARGV[1] contact id  ARGV[2] agent id  ARGV[3] now  ARGV[4] new queue
-- ('' keeps it)  ARGV[5] reason  ARGV[6] events maxlen
-- ARGV[7] offer it to this agent first ('' for none)  ARGV[8] until (ms)
--         A transfer to an agent who declined or missed the contact before
--         lifts that: they are asked again.
-- ARGV[9] for a session that ended: the grace (ms) after its end before
--         its contacts go back ('' for a transfer). Checked here, not only
--         by the caller: a leader whose view is old (paused, deposed) must
--         not take contacts from an agent who came back meanwhile.
-- ARGV[10] with a new queue: what its priority adds to the contact's (the
--         new queue's less the old one's; the rule's part stays)
-- ARGV[11] '1' to leave the agent out of this contact from now on (the
--         channel cannot reach them: a call for an agent with no phone),
--         as a decline does; '' or absent (an older caller) keeps them in
-- Returns 'ok', 'not_held' or 'online' (the session is live again, or
-- its grace has not passed).
local c = redis.call('HMGET', KEYS[1], 'state', 'agent', 'channel', 'since', 'queue',
  'excluded')
if c[1] ~= 'assigned' or c[2] ~= ARGV[2] then
  return 'not_held'
end
if ARGV[9] ~= '' and
    num(redis.call('HGET', KEYS[2], 'online_until')) + num(ARGV[9]) > num(ARGV[3]) then
  return 'online'
end
redis.call('HSET', KEYS[1], 'state', 'waiting', 'agent', '', 'offer_until', '',
  'queued_at', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'queue', ARGV[4])
  if num(ARGV[10]) ~= 0 then redis.call('HINCRBY', KEYS[1], 'priority', ARGV[10]) end
end
redis.call('HSET', KEYS[1], 'sticky', ARGV[7], 'sticky_until', ARGV[8], 'sticky_from', '')
if ARGV[7] ~= '' and c[6] and c[6] ~= '' then
  local kept = {}
  for a in string.gmatch(c[6], '[^,]+') do
    if a ~= ARGV[7] then kept[#kept + 1] = a end
  end
  redis.call('HSET', KEYS[1], 'excluded', table.concat(kept, ','))
end
if ARGV[11] == '1' then
  local excluded = redis.call('HGET', KEYS[1], 'excluded') or ''
  if excluded == '' then excluded = ARGV[2] else excluded = excluded .. ',' .. ARGV[2] end
  redis.call('HSET', KEYS[1], 'excluded', excluded, 'excluded_at', ARGV[3])
end
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZADD', KEYS[4], c[4], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
release_load(KEYS[2], c[3])
-- Worked on until now: idle from now when it was the last (as a close;
-- "longest idle" otherwise ranked an agent who just transferred their
-- only contact as idle since before it).
if redis.call('SCARD', KEYS[3]) == 0 then
  redis.call('HSET', KEYS[2], 'idle_since', ARGV[3])
end
emit(KEYS[6], ARGV[6], extend({'type', 'requeued', 'contact', ARGV[1], 'channel', c[3],
  'reason', ARGV[5], 'from_queue', c[5] or ''}, agent_state(KEYS[2], ARGV[2])), ARGV[3])
return 'ok'
