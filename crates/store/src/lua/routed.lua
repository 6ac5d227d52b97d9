-- Marks a contact as handed to the routing state and removes its entry
-- from the partition's routing stream. Called after the contact was put in
-- the routing state (which is idempotent), so an entry handled twice (the
-- first reader was only slow) changes nothing.
--
-- KEYS[1] routing stream  KEYS[2] the contact's hash
-- ARGV[1] stream entry id  ARGV[2] consumer group  ARGV[3] now, ms
-- Returns 1 when marked now, 0 when it was marked before or is unknown.
local moved = 0
if redis.call('HGET', KEYS[2], 'state') == 'new' then
  redis.call('HSET', KEYS[2], 'state', 'queued', 'queued_at', ARGV[3])
  moved = 1
end
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return moved
