-- Takes a delivery out of the outbox stream and schedules it again, if it
-- is still pending: an instance that stalled past the visibility timeout
-- may defer a delivery another instance has taken over and settled since;
-- scheduling it again would send the reply twice.
-- KEYS[1] outbox stream  KEYS[2] deferred (sorted set)
-- ARGV[1] entry id  ARGV[2] group  ARGV[3] due, ms  ARGV[4] payload
-- ARGV[5] the consumer deferring it ('' for any): once another consumer
--         took it over, this holder's defer would send it a second time.
-- Returns 1 when deferred, 0 when the delivery was no longer pending with
-- this consumer.
local p = redis.call('XPENDING', KEYS[1], ARGV[2], ARGV[1], ARGV[1], 1)
if #p == 0 then
  return 0
end
if ARGV[5] ~= '' and p[1][2] ~= ARGV[5] then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
