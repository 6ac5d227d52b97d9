-- The right to deliver one outbox, held by one instance at a time so that
-- its replies leave in order. Taken when free, renewed by its holder,
-- released by its holder only.
-- KEYS[1] the holder key
-- ARGV[1] 'hold' or 'release'  ARGV[2] holder  ARGV[3] lease, ms
local current = redis.call('GET', KEYS[1])
if ARGV[1] == 'release' then
  if current == ARGV[2] then
    redis.call('DEL', KEYS[1])
  end
  return 0
end
if current == false or current == ARGV[2] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
