-- Applies a provider's status for a reply that came before the reply was
-- settled (kept by update.lua), now that the settle recorded the reply's
-- provider id. Atomic; both keys share the conversation's hash tag.
--
-- KEYS[1] the kept status (`<reply ref>:early`, "<rank>|<JSON>")
-- KEYS[2] the conversation's reply statuses (by message id)
-- ARGV[1] the reply's message id
-- Returns 1 when the status was applied, 0 otherwise (none kept, or an
-- equal or later one recorded already).
local early = redis.call('GET', KEYS[1])
if not early then
  return 0
end
redis.call('DEL', KEYS[1])
local rank = tonumber(string.match(early, '^(%d+)|')) or 0
local current = redis.call('HGET', KEYS[2], ARGV[1])
local have = current and tonumber(string.match(current, '^(%d+)|')) or 0
if rank <= have then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], early)
return 1
