-- Durable intake of one inbound message. Atomic: either all of it is stored
-- or none of it. All keys share the partition's hash tag.
--
-- KEYS[1] dedupe key (ignored unless ARGV[1] == '1')
-- KEYS[2] open-conversation key of (source, customer): "conversation|contact"
-- KEYS[3] the partition's routing stream
-- KEYS[4] the mark's key before the customer was part of it (read only,
--         until the last such mark expires; ignored unless ARGV[20] == '1')
-- ARGV[1] '1' when the event has a provider message id
-- ARGV[2] dedupe window, seconds
-- ARGV[3] new contact id      ARGV[4] new conversation id
-- ARGV[5] message id          ARGV[6] now, ms since epoch
-- ARGV[7] message JSON        ARGV[8] key prefix of the partition ("sb:{p3}")
-- ARGV[9] channel  ARGV[10] source  ARGV[11] address  ARGV[12] customer
-- ARGV[13] customer name  ARGV[14] subject  ARGV[15] language
-- ARGV[16] attributes JSON  ARGV[17] the beginning of the text (routing rules)
-- ARGV[18] '1' to write the webhook events into the partition's feed
--          (`<tag>:feed`, docs/webhooks.md): contact.created for a new
--          contact, then message.created; a duplicate writes nothing.
-- ARGV[19] '1' for a new contact whatever is open (a phone call): the open
--          conversation is not looked up, and the new one becomes the open
--          one.
-- ARGV[20] '1' while marks of the older form may exist (a store laid out
--          before 2026-11-27, within a dedupe window of the upgrade)
-- Returns "outcome|contact|conversation|message|seq".
if ARGV[1] == '1' then
  local seen = redis.call('GET', KEYS[1])
  -- Only a message's mark ("contact|conv|msg|seq"): an update's mark of
  -- before 2026-11-26 (`1`, under `dedupe:<source>:update:<id>`) is not a
  -- message whose id happens to read `update:<id>`.
  if seen and string.find(seen, '|', 1, true) then
    return 'duplicate|' .. seen
  end
  -- A mark of the old form counts only if its contact is this customer's:
  -- another customer's message with the same id is a message of its own.
  seen = ARGV[20] == '1' and redis.call('GET', KEYS[4])
  if seen then
    local first = string.match(seen, '^([^|]+)|')
    if first and redis.call('HGET', ARGV[8] .. ':contact:' .. first, 'customer') == ARGV[12] then
      return 'duplicate|' .. seen
    end
  end
end

local tag = ARGV[8]
local outcome = 'appended'
local conv, contact
if ARGV[19] ~= '1' then
  -- The open key holds "conversation|contact"; an earlier version wrote
  -- the conversation alone.
  local open = redis.call('GET', KEYS[2])
  if open then
    conv, contact = string.match(open, '^([^|]+)|([^|]+)$')
    if not conv then
      conv = open
      contact = redis.call('HGET', tag .. ':conv:' .. conv, 'contact')
    end
  end
end
if contact then
  -- Every conversation has last_inbound_at from its start: a new field
  -- means its hash is gone (the open key outlived it), so the message
  -- opens a new contact instead of joining a conversation nobody has.
  local conv_key = tag .. ':conv:' .. conv
  if redis.call('HSET', conv_key, 'last_inbound_at', ARGV[6]) == 1 then
    redis.call('DEL', conv_key)
    contact = nil
  end
end
if not contact then
  outcome = 'created'
  conv = ARGV[4]
  contact = ARGV[3]
  redis.call('HSET', tag .. ':conv:' .. conv,
    'id', conv, 'contact', contact, 'state', 'open',
    'channel', ARGV[9], 'source', ARGV[10], 'address', ARGV[11],
    'customer', ARGV[12], 'created_at', ARGV[6],
    'last_inbound_at', ARGV[6])
  redis.call('HSET', tag .. ':contact:' .. contact,
    'id', contact, 'conversation', conv, 'state', 'new',
    'channel', ARGV[9], 'source', ARGV[10], 'address', ARGV[11],
    'customer', ARGV[12], 'customer_name', ARGV[13], 'subject', ARGV[14],
    'language', ARGV[15], 'attributes', ARGV[16], 'preview', ARGV[17],
    'created_at', ARGV[6])
end

local seq = redis.call('XADD', tag .. ':conv:' .. conv .. ':log', '*',
  'id', ARGV[5], 'dir', 'in', 'at', ARGV[6], 'msg', ARGV[7])

if ARGV[18] == '1' then
  local feed = tag .. ':feed'
  if outcome == 'created' then
    redis.call('XADD', feed, '*', 'type', 'contact.created', 'id', contact .. ':created',
      'contact', contact, 'conversation', conv, 'at', ARGV[6])
  end
  redis.call('XADD', feed, '*', 'type', 'message.created',
    'id', contact .. ':message:' .. seq, 'contact', contact, 'conversation', conv,
    'seq', seq, 'dir', 'in', 'at', ARGV[6])
end

-- What marks the message as stored comes last: Redis does not undo a
-- script's writes when a later command fails, and a retry that found the
-- open key (or the dedupe mark) of a contact whose routing entry or first
-- message was never written would join it (or call it a duplicate), and
-- the contact would never be routed. An attempt cut short leaves an
-- orphan hash at worst. SET cannot fail on the key's type.
if outcome == 'created' then
  redis.call('XADD', KEYS[3], '*', 'contact', contact, 'at', ARGV[6])
  redis.call('SET', KEYS[2], conv .. '|' .. contact)
end
local ids = contact .. '|' .. conv .. '|' .. ARGV[5] .. '|' .. seq
if ARGV[1] == '1' then
  redis.call('SET', KEYS[1], ids, 'EX', ARGV[2])
end
return outcome .. '|' .. ids
