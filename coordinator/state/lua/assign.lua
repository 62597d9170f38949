-- Assign devices to a waiting job in one step: all of them or none.
-- KEYS[1] = the waiting set, KEYS[2] = the job's record, then three keys per device:
--   the device's record, its alive mark, the record of the job (or child) it serves
-- ARGV[1] = job id, ARGV[2] = timestamp
-- -> {1, ''} assigned; {0, why} refused, nothing written.
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {0, 'the job no longer waits'} end
if redis.call('HGET', KEYS[2], 'state') ~= 'waiting' then return {0, 'the job no longer waits'} end
for i = 3, #KEYS, 3 do
  local name = redis.call('HGET', KEYS[i], 'name') or KEYS[i]
  local state = redis.call('HGET', KEYS[i], 'state')
  if state ~= 'idle' then return {0, 'device ' .. name .. ' is ' .. tostring(state)} end
  local reason = redis.call('HGET', KEYS[i], 'maintenance')
  if reason and reason ~= '' then return {0, 'device ' .. name .. ' is in maintenance'} end
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then return {0, 'device ' .. name .. ' is offline'} end
  if redis.call('HGET', KEYS[i + 2], 'state') ~= 'waiting' then return {0, 'a child no longer waits'} end
end
for i = 3, #KEYS, 3 do
  local name = redis.call('HGET', KEYS[i], 'name')
  local member = redis.call('HGET', KEYS[i + 2], 'job_id')
  redis.call('HSET', KEYS[i], 'state', 'assigned', 'job_id', member, 'since', ARGV[2])
  redis.call('HSET', KEYS[i + 2], 'assigned_device', name, 'assigned_at', ARGV[2])
end
redis.call('ZREM', KEYS[1], ARGV[1])
return {1, ''}
