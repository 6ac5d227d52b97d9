-- The customer went away (a caller hung up, a visitor left) or the channel
-- ended the contact. A waiting or offered contact is *abandoned*: taken out
-- of the queue (and the offer withdrawn), never offered again. An assigned
-- one is closed with the given disposition, as if its agent had closed it
-- (the agent enters wrap-up when one is set, and the customer is
-- remembered for sticky routing, as `close.lua` does).
--
-- KEYS[1] contact  KEYS[2] waiting  KEYS[3] offers  KEYS[4] events
-- KEYS[5] agent (of the record as read by the caller; '' key unused when none)
-- KEYS[6] held by that agent
-- ARGV[1] contact id  ARGV[2] the agent the caller read ('' for none)
-- ARGV[3] now  ARGV[4] disposition  ARGV[5] wrap-up until (ms; 0 for none)
-- ARGV[6] how long the ended record is kept (s): the retention
-- and a day, so that the retention sweep finds it  ARGV[7] events maxlen
-- ARGV[8] 'waiting' to end it only while it waits ('' for any state): the
--         after-hours ends, decided before an offer may have been made;
--         'assigned' only while it is assigned to ARGV[2] (the leader's
--         end of a call whose hangup was lost)
-- ARGV[9] sticky memory (s; 0 or '' for none): how long an assigned
--         contact's customer is remembered for its agent
-- KEYS[7] the routing lease  ARGV[10] the routing leader's lease token
--         ('' for none): an end the leader decided (after hours) is
--         refused once another instance leads, since this one's view of
--         the contact may be old (paused, it missed a transfer)
-- ARGV[11] with 'waiting': the queue it must still wait in ('' for any):
--          the hand-off's after-hours end, decided on the queue the
--          contact was placed in, must not end one that was transferred
--          meanwhile to another queue (the hand-off handled again)
-- Returns 'abandoned', 'closed', 'already_closed', 'not_waiting',
-- 'not_assigned', 'fenced' or 'changed' (the record's agent is not
-- ARGV[2]: read it again and retry).
if ARGV[10] and ARGV[10] ~= '' and redis.call('GET', KEYS[7]) ~= ARGV[10] then
  return 'fenced'
end
local c = redis.call('HMGET', KEYS[1], 'state', 'agent', 'channel', 'customer', 'queue')
if not c[1] then
  -- Not handed to routing yet (the caller hung up within moments): a
  -- closed record now makes the hand-off's enqueue a no-op later, so the
  -- contact is never offered.
  redis.call('HSET', KEYS[1], 'id', ARGV[1], 'state', 'closed', 'closed_at', ARGV[3],
    'disposition', ARGV[4], 'agent', '', 'excluded', '')
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  -- In the records' index too, so that the retention sweep deletes its
  -- conversation like any other's (the hand-off will not index it).
  redis.call('ZADD', sibling(KEYS[4], 'contacts'), ARGV[3], ARGV[1])
  emit(KEYS[4], ARGV[7], {'type', 'abandoned', 'contact', ARGV[1], 'disposition', ARGV[4],
    'was', 'new'}, ARGV[3])
  return 'abandoned'
end
if c[1] == 'closed' then
  return 'already_closed'
end
if ARGV[8] == 'waiting' and (c[1] ~= 'waiting'
    or (ARGV[11] and ARGV[11] ~= '' and c[5] ~= ARGV[11])) then
  return 'not_waiting'
end
if ARGV[8] == 'assigned' and c[1] ~= 'assigned' then
  return 'not_assigned'
end
local agent = c[2] or ''
if agent ~= ARGV[2] then
  return 'changed'
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local was = c[1]
redis.call('HSET', KEYS[1], 'state', 'closed', 'closed_at', ARGV[3], 'disposition', ARGV[4],
  'agent', '', 'offer_until', '')
redis.call('EXPIRE', KEYS[1], ARGV[6])
local fields
if agent ~= '' then
  redis.call('SREM', KEYS[6], ARGV[1])
  release_load(KEYS[5], c[3])
  if redis.call('SCARD', KEYS[6]) == 0 then
    redis.call('HSET', KEYS[5], 'idle_since', ARGV[3])
  end
  if was == 'assigned' then
    wrap_up(KEYS[5], ARGV[5])
    if num(ARGV[9]) > 0 and c[4] and c[4] ~= '' then
      redis.call('SET', sibling(KEYS[4], 'sticky:' .. c[4]), agent, 'EX', ARGV[9])
    end
  end
end
local kind = (was == 'assigned') and 'closed' or 'abandoned'
fields = {'type', kind, 'contact', ARGV[1], 'channel', c[3], 'disposition', ARGV[4],
  'was', was}
if ARGV[8] == 'waiting' then
  -- Ended by the business's rules (out of hours), not by the customer:
  -- not an abandon in the KPIs.
  fields = extend(fields, {'by', 'policy'})
end
if agent ~= '' then
  fields = extend(fields, agent_state(KEYS[5], agent))
end
emit(KEYS[4], ARGV[7], fields, ARGV[3])
return kind
