-- Takes a delivery out of the outbox stream and schedules it again.
-- KEYS[1] outbox stream  KEYS[2] deferred (sorted set)
-- ARGV[1] entry id  ARGV[2] group  ARGV[3] due, ms  ARGV[4] payload
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
