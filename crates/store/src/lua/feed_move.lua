-- Copies one routing event (from `<prefix>:{r}:hooks`) into the event feed
-- of its contact's partition, once: the mark `hookseen:<event id>` says it was
-- copied, so a second copy (a mover that died before deleting the routing
-- entry, or an agent's reply that moved it first) does nothing.
-- All keys share the partition's hash tag.
--
-- KEYS[1] the mark  KEYS[2] the partition's feed  KEYS[3] the contact hash
-- ARGV[1] type  ARGV[2] event id  ARGV[3] contact id  ARGV[4] at (ms)
-- ARGV[5] agent  ARGV[6] channel  ARGV[7] disposition  ARGV[8] outcome
-- ARGV[9] how long the mark is kept (s)
-- Returns 1 when copied by this call, 0 when copied before.
--
-- The mark is set after the copy: a script that fails half-way is not
-- rolled back, and a mark without its copy would skip the event for good.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local conv = redis.call('HGET', KEYS[3], 'conversation') or ''
redis.call('XADD', KEYS[2], '*', 'type', ARGV[1], 'id', ARGV[2], 'contact', ARGV[3],
  'conversation', conv, 'at', ARGV[4], 'agent', ARGV[5], 'channel', ARGV[6],
  'disposition', ARGV[7], 'outcome', ARGV[8])
redis.call('SET', KEYS[1], '1', 'EX', ARGV[9])
return 1
