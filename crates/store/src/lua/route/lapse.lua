-- An agent's session ended with nothing to take back (no heartbeat, or
-- its instance died): no script ran, so its occupancy is recorded here, or
-- the KPIs would count it online and idle until its next event.
--
-- KEYS[1] agent  KEYS[2] events
-- ARGV[1] agent id  ARGV[2] now (ms)
-- Returns 'ok'.
occupancy(KEYS[2], by_name(agent_state(KEYS[1], ARGV[1])), num(ARGV[2]))
return 'ok'
