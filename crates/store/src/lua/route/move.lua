-- An overflow step moved a waiting contact to another queue (in the routing
-- leader's engine): the record says so too, so that every view (the
-- contact's routing, queue positions, supervisors' queues) and a later
-- requeue find it where the engine has it. Only while it still waits in
-- the queue it left: an offer, a close or a transfer in between wins.
--
-- KEYS[1] contact
-- ARGV[1] the queue it left  ARGV[2] the queue it moved to
-- ARGV[3] when it moved (ms: its time in the new queue counts from there)
-- ARGV[4] what the new queue's priority adds to the contact's
-- Returns 'ok' or 'moved_on'.
local c = redis.call('HMGET', KEYS[1], 'state', 'queue')
if c[1] ~= 'waiting' or c[2] ~= ARGV[1] then
  return 'moved_on'
end
redis.call('HSET', KEYS[1], 'queue', ARGV[2], 'queued_at', ARGV[3])
if num(ARGV[4]) ~= 0 then redis.call('HINCRBY', KEYS[1], 'priority', ARGV[4]) end
return 'ok'
