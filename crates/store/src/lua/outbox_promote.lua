-- Moves deferred deliveries that are due back into the outbox stream.
-- KEYS[1] outbox stream  KEYS[2] deferred (sorted set)
-- ARGV[1] now, ms  ARGV[2] at most this many
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, payload in ipairs(due) do
  local sep = string.find(payload, '|', 1, true)
  redis.call('XADD', KEYS[1], '*', 'attempt', string.sub(payload, 1, sep - 1),
    'msg', string.sub(payload, sep + 1))
  redis.call('ZREM', KEYS[2], payload)
end
return #due
