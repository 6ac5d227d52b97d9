-- Marks contacts as handed to the routing state and removes their entries
-- from the partition's routing stream. Called after the contacts were put
-- in the routing state (which is idempotent), so an entry handled twice
-- (the first reader was only slow) changes nothing. One call per partition
-- for a whole batch of entries.
--
-- KEYS[1] routing stream  KEYS[2..n+1] the contacts' hashes
-- ARGV[1] consumer group  ARGV[2] now, ms  ARGV[3..n+2] the stream entry
-- ids, in the order of the contacts
-- Returns how many contacts were marked now (the others were marked before
-- or are unknown).
local moved = 0
local ids = {}
for i = 2, #KEYS do
  if redis.call('HGET', KEYS[i], 'state') == 'new' then
    redis.call('HSET', KEYS[i], 'state', 'queued', 'queued_at', ARGV[2])
    moved = moved + 1
  end
  ids[#ids + 1] = ARGV[i + 1]
end
if #ids > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
  redis.call('XDEL', KEYS[1], unpack(ids))
end
return moved
