-- Moves deferred deliveries that are due back into the outbox stream.
-- KEYS[1] outbox stream  KEYS[2] deferred (sorted set)
-- ARGV[1] now, ms  ARGV[2] at most this many
-- A member that is not `<attempt>|<message JSON>` (never written by
-- Switchboard) is removed, so that it cannot block the others.
-- Returns the number of such members removed.
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local unreadable = 0
for _, payload in ipairs(due) do
  local sep = string.find(payload, '|', 1, true)
  if sep then
    redis.call('XADD', KEYS[1], '*', 'attempt', string.sub(payload, 1, sep - 1),
      'msg', string.sub(payload, sep + 1))
  else
    unreadable = unreadable + 1
  end
  redis.call('ZREM', KEYS[2], payload)
end
return unreadable
