-- Moves a contact from its partition's routing stream to the waiting queue.
-- Idempotent: a reclaimed entry that was already moved changes nothing.
--
-- KEYS[1] routing stream  KEYS[2] waiting queue (sorted set)
-- KEYS[3] the contact's hash
-- ARGV[1] stream entry id  ARGV[2] consumer group  ARGV[3] contact id
-- ARGV[4] score (enqueue time, ms)  ARGV[5] now, ms
-- Returns 1 when queued now, 0 when it was queued before or is unknown.
local queued = 0
if redis.call('EXISTS', KEYS[3]) == 1 and redis.call('HGET', KEYS[3], 'state') == 'new' then
  redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[3])
  redis.call('HSET', KEYS[3], 'state', 'queued', 'queued_at', ARGV[5])
  queued = 1
end
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return queued
