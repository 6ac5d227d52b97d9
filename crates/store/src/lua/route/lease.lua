-- The routing lease: one instance at a time makes offers. Acquiring bumps
-- the epoch, and the token ("<epoch>:<instance>") is the fence every offer
-- script checks, so an instance that was paused past its lease cannot act
-- on a stale view when it wakes up.
--
-- KEYS[1] leader  KEYS[2] epoch
-- ARGV[1] 'acquire' | 'renew' | 'release'  ARGV[2] instance or token
-- ARGV[3] lease (ms)
-- acquire returns the new token or false; renew/release return 1 or 0.
if ARGV[1] == 'acquire' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return false end
  local epoch = redis.call('INCR', KEYS[2])
  local token = epoch .. ':' .. ARGV[2]
  redis.call('SET', KEYS[1], token, 'PX', ARGV[3])
  return token
elseif ARGV[1] == 'renew' then
  if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
else
  if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
  redis.call('DEL', KEYS[1])
  return 1
end
