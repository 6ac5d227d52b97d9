-- An agent closes a contact assigned to them, with a disposition. Their
-- load is released and, when a wrap-up time is set, they enter wrap-up.
-- The customer is remembered for sticky routing.
--
-- KEYS[1] contact  KEYS[2] agent  KEYS[3] held by agent  KEYS[4] events
-- ARGV[1] contact id  ARGV[2] agent id  ARGV[3] now  ARGV[4] disposition
-- ARGV[5] wrap-up until (ms; 0 for none)  ARGV[6] how long the ended record is kept (s): the retention
-- and a day, so that the retention sweep finds it
-- ARGV[7] sticky memory (s; 0 for none)  ARGV[8] events maxlen
-- The customer's sticky key (`sticky:<customer>`, next to the events) is
-- derived here from the contact's record: no read before the call.
local c = redis.call('HMGET', KEYS[1], 'state', 'agent', 'channel', 'customer')
if c[1] ~= 'assigned' or c[2] ~= ARGV[2] then
  return 'not_assigned'
end
redis.call('HSET', KEYS[1], 'state', 'closed', 'closed_at', ARGV[3], 'disposition', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('SREM', KEYS[3], ARGV[1])
release_load(KEYS[2], c[3])
if num(ARGV[7]) > 0 and c[4] and c[4] ~= '' then
  redis.call('SET', sibling(KEYS[4], 'sticky:' .. c[4]), ARGV[2], 'EX', ARGV[7])
end
if redis.call('SCARD', KEYS[3]) == 0 then
  redis.call('HSET', KEYS[2], 'idle_since', ARGV[3])
end
wrap_up(KEYS[2], ARGV[5])
emit(KEYS[4], ARGV[8], extend({'type', 'closed', 'contact', ARGV[1], 'channel', c[3],
  'disposition', ARGV[4]}, agent_state(KEYS[2], ARGV[2])), ARGV[3])
return 'ok'
