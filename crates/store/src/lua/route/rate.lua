-- The customer rated a contact (CSAT, 1 to 5). Kept once per contact: the
-- first rating counts, a repeat changes nothing.
--
-- KEYS[1] contact  KEYS[2] events
-- ARGV[1] contact id  ARGV[2] score  ARGV[3] now  ARGV[4] events maxlen
-- Returns 'ok', 'unknown_contact' or 'already_rated'.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 'unknown_contact'
end
if redis.call('HSETNX', KEYS[1], 'rating', ARGV[2]) == 0 then
  return 'already_rated'
end
redis.call('HSET', KEYS[1], 'rated_at', ARGV[3])
emit(KEYS[2], ARGV[4], {'type', 'rated', 'contact', ARGV[1], 'score', ARGV[2]}, ARGV[3])
return 'ok'
