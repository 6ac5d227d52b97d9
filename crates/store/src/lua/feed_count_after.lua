-- Counts the entries of a stream after an id, up to a cap: the backlog of
-- a consumer group whose lag Redis cannot tell (Redis 6.2 has no `lag`;
-- 7.x gives none for a group created mid-stream until it has read the
-- last entry). Run as a script so that the entries never leave Redis.
--
-- KEYS[1] the stream  ARGV[1] the group's last delivered id  ARGV[2] cap
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
return #entries
