-- Names an agent's reply by its client's id, in the conversation's hash:
-- field `reply:<client id>` = "<message id>|<agent>|<sha1 of the text>".
--
-- KEYS[1] the conversation (hash)
-- KEYS[2] (automatic answers only) the customer's count of automatic
--   answers this hour, in the same partition
-- ARGV[1] the field  ARGV[2] a new message id  ARGV[3] the agent
-- ARGV[4] the reply's text  ARGV[5] '1': only look, never name
-- ARGV[6] (with KEYS[2]) the most a customer gets an hour (0: no limit)
-- Returns {status, message id}: 'new' (named now, with ARGV[2]), 'retry'
-- (the same agent and text named it before: its message id), 'conflict'
-- (another agent or text has the name), 'none' (ARGV[5], or the customer
-- has had the limit, and no name).
--
-- The limit is checked and counted here, with the name, so that answers
-- claimed at once for one customer (several contacts routed together)
-- cannot all pass it: a count read before and written after the send let
-- a few too many through. An answer claimed is finished by its retry, so
-- one counted and never sent needs a crash and no retry.
local hash = redis.sha1hex(ARGV[4])
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then
  if ARGV[5] == '1' then return {'none', ''} end
  local limit = KEYS[2] and tonumber(ARGV[6]) or 0
  if limit > 0 then
    if (tonumber(redis.call('GET', KEYS[2])) or 0) >= limit then
      return {'none', ''}
    end
  end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|' .. hash)
  if limit > 0 then
    redis.call('SET', KEYS[2], 0, 'EX', 3600, 'NX')
    redis.call('INCR', KEYS[2])
  end
  return {'new', ARGV[2]}
end
local id, agent, h = string.match(v, '^([^|]*)|([^|]*)|(.*)$')
if not id or agent ~= ARGV[3] or h ~= hash then
  return {'conflict', id or ''}
end
return {'retry', id}
