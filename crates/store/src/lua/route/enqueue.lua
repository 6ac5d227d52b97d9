-- Puts a new contact in the routing state. Idempotent: a contact known
-- here already (queued before, or closed within the retention) is left
-- alone, so a routing-stream entry handled twice changes nothing.
--
-- KEYS[1] contact  KEYS[2] waiting (zset)  KEYS[3] events
-- ARGV[1] contact id  ARGV[2] queue  ARGV[3] channel  ARGV[4] priority
-- ARGV[5] waiting since (ms)  ARGV[6] now  ARGV[7] rule  ARGV[8] source
-- ARGV[9] customer key (sticky)  ARGV[10] sticky agent ('' for none)
-- ARGV[11] sticky deadline (ms)  ARGV[12] events maxlen
-- Returns 1 when queued now, 0 when known already.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'state', 'waiting', 'queue', ARGV[2],
  'channel', ARGV[3], 'priority', ARGV[4], 'since', ARGV[5], 'queued_at', ARGV[6],
  'rule', ARGV[7], 'source', ARGV[8], 'customer', ARGV[9],
  'sticky', ARGV[10], 'sticky_until', ARGV[11], 'excluded', '')
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
emit(KEYS[3], ARGV[12], {'type', 'enqueued', 'contact', ARGV[1]})
return 1
