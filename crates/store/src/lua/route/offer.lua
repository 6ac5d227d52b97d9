-- Offers a waiting contact to an agent, if and only if this instance still
-- holds the routing lease (fencing) and the agent can take it: available,
-- connected, below capacity on the channel and in all, not on a call
-- (unless the channel may interrupt). Everything is checked here, in one
-- atomic step, so neither a stale leader nor a stale in-memory view can
-- assign a contact twice or overrun a capacity.
--
-- KEYS[1] leader  KEYS[2] contact  KEYS[3] agent  KEYS[4] held by agent (set)
-- KEYS[5] waiting (zset)  KEYS[6] offers (zset)  KEYS[7] events
-- KEYS[8] decisions of the contact (list)
-- ARGV[1] lease token  ARGV[2] contact id  ARGV[3] agent id  ARGV[4] now
-- ARGV[5] offer deadline (ms)  ARGV[6] '1' to assign without asking
-- ARGV[7] channels that may interrupt a call, comma-separated
-- ARGV[8] explanation JSON  ARGV[9] events maxlen  ARGV[10] step
-- ARGV[11] how long a decline or miss excludes the agent, ms, counted
--          from the contact's latest exclusion (`excluded_at`); '' or 0:
--          for as long as it waits. Exclusions without `excluded_at`
--          (written before it existed, or by an older instance) never lapse.
--          Once lapsed, they are forgotten here, so that the next decline
--          does not bring them back.
-- Returns 'ok' or the reason it was refused.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 'fenced'
end
local c = redis.call('HMGET', KEYS[2], 'state', 'channel', 'excluded', 'first_offered_at',
  'excluded_at')
if c[1] ~= 'waiting' then
  return 'not_waiting'
end
local channel = c[2]
local excluded = c[3] or ''
local lasts, excluded_at = num(ARGV[11]), num(c[5])
if excluded ~= '' and lasts > 0 and excluded_at > 0 and excluded_at + lasts <= num(ARGV[4]) then
  excluded = ''
  redis.call('HSET', KEYS[2], 'excluded', '', 'excluded_at', '')
end
if string.find(',' .. excluded .. ',', ',' .. ARGV[3] .. ',', 1, true) then
  return 'declined_before'
end
-- One read of the agent: an agent's hash always has its capacity (agent.lua).
local a = redis.call('HMGET', KEYS[3], 'presence', 'online_until', 'cap', 'cap_total',
  'l:chat', 'l:email', 'l:social', 'l:voice', 'ver')
if not a[3] then
  return 'unknown_agent'
end
if a[1] ~= 'available' then
  return 'not_available'
end
if num(a[2]) < num(ARGV[4]) then
  return 'disconnected'
end
local cap = cjson.decode(a[3] or '[0,0,0,0]')
local l = {num(a[5]), num(a[6]), num(a[7]), num(a[8])}
local total = l[1] + l[2] + l[3] + l[4]
local cap_total = num(a[4])
if cap_total == 0 then cap_total = cap[1] + cap[2] + cap[3] + cap[4] end
for i, name in ipairs(CHANNELS) do
  if name == channel then
    if l[i] >= (cap[i] or 0) then return 'at_capacity' end
  end
end
if total >= cap_total then
  return 'at_capacity'
end
if channel ~= 'voice' and l[4] > 0 then
  local ok = false
  for name in string.gmatch(ARGV[7], '[^,]+') do
    if name == channel then ok = true end
  end
  if not ok then return 'on_call' end
end

local auto = ARGV[6] == '1'
local state = 'offered'
if auto then state = 'assigned' end
local set = {'state', state, 'agent', ARGV[3], 'offered_at', ARGV[4],
  'offer_until', ARGV[5], 'step', ARGV[10]}
if not c[4] then extend(set, {'first_offered_at', ARGV[4]}) end
if auto then extend(set, {'answered_at', ARGV[4]}) end
redis.call('HSET', KEYS[2], unpack(set))
-- The agent's load on the channel, last offer and version, in one write
-- from the values read above (this script is atomic).
local load = 0
for i, name in ipairs(CHANNELS) do
  if name == channel then load = l[i] end
end
redis.call('HSET', KEYS[3], 'l:' .. channel, load + 1, 'last_offer_at', ARGV[4],
  'ver', num(a[9]) + 1)
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
if not auto then
  redis.call('ZADD', KEYS[6], ARGV[5], ARGV[2])
end
redis.call('RPUSH', KEYS[8], ARGV[8])
redis.call('LTRIM', KEYS[8], -50, -1)
local kind = 'offered'
if auto then kind = 'assigned' end
emit(KEYS[7], ARGV[9], extend({'type', kind, 'contact', ARGV[2], 'channel', channel,
  'until', ARGV[5]}, agent_state(KEYS[3], ARGV[3])), ARGV[4])
return 'ok'
