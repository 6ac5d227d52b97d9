-- Names an agent's reply by its client's id, in the conversation's hash:
-- field `reply:<client id>` = "<message id>|<agent>|<sha1 of the text>".
--
-- KEYS[1] the conversation (hash)
-- ARGV[1] the field  ARGV[2] a new message id  ARGV[3] the agent
-- ARGV[4] the reply's text  ARGV[5] '1': only look, never name
-- Returns {status, message id}: 'new' (named now, with ARGV[2]), 'retry'
-- (the same agent and text named it before: its message id), 'conflict'
-- (another agent or text has the name), 'none' (ARGV[5] and no name).
local hash = redis.sha1hex(ARGV[4])
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then
  if ARGV[5] == '1' then return {'none', ''} end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|' .. hash)
  return {'new', ARGV[2]}
end
local id, agent, h = string.match(v, '^([^|]*)|([^|]*)|(.*)$')
if not id or agent ~= ARGV[3] or h ~= hash then
  return {'conflict', id or ''}
end
return {'retry', id}
