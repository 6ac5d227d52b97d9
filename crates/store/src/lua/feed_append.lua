-- Appends an entry to a conversation log and, in the same step, its
-- message.created event to the partition's webhook feed (an agent's or an
-- automatic reply). Both keys share the partition's hash tag.
--
-- KEYS[1] the conversation log  KEYS[2] the partition's feed
-- ARGV[1] message id  ARGV[2] dir  ARGV[3] at (ms)  ARGV[4] message JSON
-- ARGV[5] contact id  ARGV[6] conversation id
-- Returns the entry's id in the log.
local seq = redis.call('XADD', KEYS[1], '*', 'id', ARGV[1], 'dir', ARGV[2], 'at', ARGV[3],
  'msg', ARGV[4])
redis.call('XADD', KEYS[2], '*', 'type', 'message.created',
  'id', ARGV[5] .. ':message:' .. seq, 'contact', ARGV[5], 'conversation', ARGV[6],
  'seq', seq, 'dir', ARGV[2], 'at', ARGV[3])
return seq
