-- Creates or updates an agent's profile (from configuration or the API).
-- Presence and load are left as they are; a new agent starts offline.
--
-- KEYS[1] agent  KEYS[2] agents (set)  KEYS[3] events
-- ARGV[1] agent id  ARGV[2] display name  ARGV[3] skills JSON
-- ARGV[4] capacity JSON [chat,email,social,voice]  ARGV[5] total (0: sum)
-- ARGV[6] token SHA-256 hex  ARGV[7] events maxlen  ARGV[8] origin
-- KEYS[4] token index key of the new digest; ARGV[9] token index prefix
-- Returns 1 when created, 0 when updated, 'token_taken' when another agent
-- has the same token.
local owner = redis.call('GET', KEYS[4])
if owner and owner ~= ARGV[1] then
  return 'token_taken'
end
local new = redis.call('EXISTS', KEYS[1]) == 0
local old_digest = redis.call('HGET', KEYS[1], 'token')
if old_digest and old_digest ~= ARGV[6] then
  redis.call('DEL', ARGV[9] .. old_digest)
end
redis.call('SET', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'name', ARGV[2], 'skills', ARGV[3],
  'cap', ARGV[4], 'cap_total', ARGV[5], 'token', ARGV[6], 'origin', ARGV[8])
if new then
  redis.call('HSET', KEYS[1], 'presence', 'offline', 'reason', '', 'online_until', 0,
    'l:chat', 0, 'l:email', 0, 'l:social', 0, 'l:voice', 0, 'missed', 0,
    'idle_since', 0, 'last_offer_at', 0, 'ver', 0)
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'ver', 1)
emit(KEYS[3], ARGV[7], extend({'type', 'agent'}, agent_state(KEYS[1], ARGV[1])))
if new then return 1 end
return 0
