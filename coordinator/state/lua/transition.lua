-- A job's state transition, atomic: a cancel and a worker starting the job can never both win.
-- KEYS[1] = record, KEYS[2] = events
-- ARGV[1] = new state, ARGV[2] = allowed from (comma list: the lifecycle table's entry, maybe
-- narrowed by the caller; '' = any), ARGV[3] = timestamp, ARGV[4..] = extra field/value pairs
-- -> {1, previous state} done, {0, current state ('' = no job)} refused.
-- The event's ``ts`` is Redis's own clock (seconds.microseconds), so latencies between jobs share one clock.
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return {0, ''} end
if cur == 'complete' or cur == 'cancelled' then return {0, cur} end
if ARGV[2] ~= '' then
  local ok = false
  for s in string.gmatch(ARGV[2], '[^,]+') do if s == cur then ok = true end end
  if not ok then return {0, cur} end
end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated_at', ARGV[3])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
local t = redis.call('TIME')
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '20000', '*', 'type', 'state', 'state', ARGV[1], 'from', cur,
           'ts', t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
return {1, cur}
