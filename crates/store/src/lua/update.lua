-- A change to a message that exists already: a customer's edit, or a
-- provider's status for one of our replies. Atomic; all keys share the
-- partition's hash tag. Never creates a contact.
--
-- KEYS[1] the update's own dedupe key (ignored unless ARGV[1] == '1')
-- KEYS[2] the reference of the message concerned: for an edit, the
--         inbound message's dedupe key ("contact|conv|msg|seq"); for an
--         auto reply or a status, the reply's key ("conv|msg")
-- KEYS[3] where the update's mark was kept before (`dedupe:<source>:
--         update:<id>`): only read, until it expires
-- KEYS[4] set while replies to the customer may be on their way (the
--         outbox writes it at enqueue and hand-out): a status is kept as
--         early only then
-- ARGV[1] '1' when the update has an id   ARGV[2] dedupe window, seconds
-- ARGV[3] 'edit', 'auto' or 'status'      ARGV[4] now, ms
-- ARGV[5] the partition's key prefix ("sb:{p3}")
-- edit, auto: ARGV[6] the entry's own message id   ARGV[7] the log entry's JSON
-- status: ARGV[6] the status's rank (sent 1 < delivered 2 < read 3 < failed 4)
--         ARGV[7] the status JSON
--         ARGV[8] '1': a status for a reply not known yet, while KEYS[4]
--         exists, is kept (the highest only) at KEYS[2]..':early' for
--         ARGV[9] seconds, and the outbox applies it when it settles the
--         reply (its receipt outran the record of the provider's answer);
--         '' or absent, or no reply on its way: 'unknown'
-- Returns "applied|conv|msg|seq", "applied|conv|msg", "stale|conv|msg",
-- "duplicate", "early" or "unknown".
if ARGV[1] == '1' and redis.call('EXISTS', KEYS[1], KEYS[3]) > 0 then
  return 'duplicate'
end
local ref = redis.call('GET', KEYS[2])
if not ref then
  if ARGV[3] == 'status' and ARGV[8] == '1' and redis.call('EXISTS', KEYS[4]) == 1 then
    local early = KEYS[2] .. ':early'
    local kept = redis.call('GET', early)
    local rank = kept and tonumber(string.match(kept, '^(%d+)|')) or 0
    if rank < tonumber(ARGV[6]) then
      redis.call('SET', early, ARGV[6] .. '|' .. ARGV[7], 'EX', ARGV[9])
    end
    return 'early'
  end
  return 'unknown'
end
local tag = ARGV[5]
-- The conversation was deleted (the retention sweep): writing to its log
-- or status would bring back keys no sweep knows of any more.
local function gone(conv)
  return redis.call('EXISTS', tag .. ':conv:' .. conv) == 0
end
local result
if ARGV[3] == 'edit' then
  local conv, msg = string.match(ref, '^[^|]*|([^|]*)|([^|]*)|')
  if not conv or gone(conv) then
    return 'unknown'
  end
  local seq = redis.call('XADD', tag .. ':conv:' .. conv .. ':log', '*',
    'id', ARGV[6], 'dir', 'edit', 'at', ARGV[4], 'msg', ARGV[7])
  result = 'applied|' .. conv .. '|' .. msg .. '|' .. seq
elseif ARGV[3] == 'auto' then
  local conv, msg = string.match(ref, '^([^|]*)|([^|]*)$')
  if not conv or gone(conv) then
    return 'unknown'
  end
  local seq = redis.call('XADD', tag .. ':conv:' .. conv .. ':log', '*',
    'id', ARGV[6], 'dir', 'auto', 'at', ARGV[4], 'msg', ARGV[7])
  result = 'applied|' .. conv .. '|' .. msg .. '|' .. seq
else
  local conv, msg = string.match(ref, '^([^|]*)|([^|]*)$')
  if not conv or gone(conv) then
    return 'unknown'
  end
  local key = tag .. ':conv:' .. conv .. ':status'
  local current = redis.call('HGET', key, msg)
  local rank = current and tonumber(string.match(current, '^(%d+)|')) or 0
  if rank >= tonumber(ARGV[6]) then
    result = 'stale|' .. conv .. '|' .. msg
  else
    redis.call('HSET', key, msg, ARGV[6] .. '|' .. ARGV[7])
    result = 'applied|' .. conv .. '|' .. msg
  end
end
if ARGV[1] == '1' then
  redis.call('SET', KEYS[1], '1', 'EX', ARGV[2])
end
return result
