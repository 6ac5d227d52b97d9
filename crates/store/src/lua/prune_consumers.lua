-- Deletes a consumer group's dead consumers: those with nothing pending that
-- have not read for at least ARGV[2] ms. Every instance names its consumer
-- `<host>-<pid>`, so each restart leaves one behind in every group it read.
-- A consumer with pending entries is never deleted (XGROUP DELCONSUMER would
-- drop them); XAUTOCLAIM moves those to a live consumer first. A consumer
-- deleted while idle is made again by its next read, so a live reader that
-- idled that long loses nothing. Atomic: nothing can become pending between
-- the look and the delete.
--
-- KEYS[1] the stream
-- ARGV[1] the group  ARGV[2] minimum idle, ms  ARGV[3] the caller's own
-- consumer, never deleted
-- Returns how many consumers were deleted (0 when the stream or the group
-- does not exist).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then
  return 0
end
local min_idle = tonumber(ARGV[2])
local deleted = 0
for _, c in ipairs(consumers) do
  local name, pending, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then
      name = c[i + 1]
    elseif c[i] == 'pending' then
      pending = c[i + 1]
    elseif c[i] == 'idle' then
      idle = c[i + 1]
    end
  end
  if name and name ~= ARGV[3] and pending == 0 and idle and idle >= min_idle then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    deleted = deleted + 1
  end
end
return deleted
