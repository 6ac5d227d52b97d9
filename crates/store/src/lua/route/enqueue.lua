-- Puts a new contact in the routing state. Idempotent: a contact known
-- here already (queued before, or closed within the retention) is left
-- alone, so a routing-stream entry handled twice changes nothing.
--
-- KEYS[1] contact  KEYS[2] waiting (zset)  KEYS[3] events
-- ARGV[1] contact id  ARGV[2] queue  ARGV[3] channel  ARGV[4] priority
-- ARGV[5] waiting since (ms)  ARGV[6] now  ARGV[7] rule  ARGV[8] source
-- ARGV[9] customer key (sticky)  ARGV[10] sticky agent ('' for none)
-- ARGV[11] sticky deadline (ms)  ARGV[12] events maxlen
-- ARGV[13] the person's key across channels (CustomerIdentity::person_key)
-- ARGV[14] when no sticky agent is given: the sticky deadline (ms) to use
--          if the customer's last agent is remembered (`sticky:<customer>`,
--          written at close); '' not to look
-- The records' retention sweep (crates/records) removes contacts that
-- ended long enough ago from the `contacts` index with their data.
-- Returns 1 when queued now, 0 when known already.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local sticky, sticky_until, sticky_from = ARGV[10], ARGV[11], ''
if sticky == '' and ARGV[14] and ARGV[14] ~= '' then
  local remembered = redis.call('GET', sibling(KEYS[3], 'sticky:' .. ARGV[9]))
  if remembered then
    -- `memory`: the router waits for this agent only if the contact's
    -- queue would offer it to them (a transfer's target is not checked).
    sticky, sticky_until, sticky_from = remembered, ARGV[14], 'memory'
  end
end
-- The contact's hash is the mark that it is queued (above): written after
-- everything else it stands for, since Redis does not undo a script's
-- writes when a later command fails, and a retry would find the mark and
-- leave, say, the contact out of the waiting set for ever. The writes
-- before it are idempotent.
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
-- The records: every contact by the time it was queued (the export's
-- index), and the person's contacts across channels. A contact of the same
-- person closed within the first-contact-resolution window was not
-- resolved at first contact: a `reopened` fact says so.
local settings = redis.call('HMGET', sibling(KEYS[3], 'settings'), 'fcr_ms', 'retention_s')
local fcr_ms = tonumber(settings[1]) or (3 * 86400000)
local retention_s = tonumber(settings[2]) or (30 * 86400)
local now = num(ARGV[6])
local index = sibling(KEYS[3], 'contacts')
redis.call('ZADD', index, now, ARGV[1])
local person_key = ''
if ARGV[13] and ARGV[13] ~= '' then
  person_key = ARGV[13]
  local person = sibling(KEYS[3], 'person:' .. ARGV[13])
  local before = redis.call('ZREVRANGE', person, 0, 0)
  redis.call('ZADD', person, now, ARGV[1])
  -- A member leaves when the retention sweep deletes its contact (the
  -- retention runs from a contact's end, however long it was open), and the
  -- index goes with its last member. Trimming by queue time dropped a
  -- contact open longer than the retention from its person's history. As a
  -- backstop for members whose contacts an earlier version swept without
  -- taking them out, those queued more than ten retentions ago go; and the
  -- expiry an earlier version set is cleared.
  redis.call('ZREMRANGEBYSCORE', person, '-inf', now - retention_s * 10000)
  redis.call('PERSIST', person)
  if before[1] then
    local p = redis.call('HMGET', sibling(KEYS[3], 'c:' .. before[1]), 'state', 'closed_at',
      'queue', 'channel', 'last_agent', 'answered_at')
    if p[1] == 'closed' and p[6] and now - num(p[2]) <= fcr_ms then
      kpi_fact(KEYS[3], {k = 'reopened', at = now, c = before[1], q = p[3] or '',
        ch = p[4] or '', ag = p[5] or '', by = ARGV[1]})
    end
  end
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'state', 'waiting', 'queue', ARGV[2],
  'channel', ARGV[3], 'priority', ARGV[4], 'since', ARGV[5], 'queued_at', ARGV[6],
  'rule', ARGV[7], 'source', ARGV[8], 'customer', ARGV[9],
  'sticky', sticky, 'sticky_until', sticky_until, 'sticky_from', sticky_from, 'excluded', '')
if person_key ~= '' then
  redis.call('HSET', KEYS[1], 'person', person_key)
end
emit(KEYS[3], ARGV[12], {'type', 'enqueued', 'contact', ARGV[1]}, ARGV[6])
return 1
