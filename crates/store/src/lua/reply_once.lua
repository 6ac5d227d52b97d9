-- Logs an agent's reply that its client named (`client_id`) once, however
-- often the client retries it: the first attempt's entry id is kept in the
-- conversation's hash and returned to the retries. With the webhook event
-- feed on, the reply's message.created event is written in the same step
-- (as feed_append.lua does). All keys share the partition's hash tag.
--
-- KEYS[1] the conversation log  KEYS[2] the partition's feed
-- KEYS[3] the conversation (hash)
-- ARGV[1] message id  ARGV[2] at (ms)  ARGV[3] message JSON
-- ARGV[4] contact id  ARGV[5] conversation id  ARGV[6] '1': write the event
-- Returns the entry's id in the log.
local field = 'logged:' .. ARGV[1]
local seen = redis.call('HGET', KEYS[3], field)
if seen then
  return seen
end
local seq = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'dir', 'out', 'at', ARGV[2],
  'msg', ARGV[3])
if ARGV[6] == '1' then
  redis.call('XADD', KEYS[2], '*', 'type', 'message.created',
    'id', ARGV[4] .. ':message:' .. seq, 'contact', ARGV[4], 'conversation', ARGV[5],
    'seq', seq, 'dir', 'out', 'at', ARGV[2])
end
redis.call('HSET', KEYS[3], field, seq)
return seq
