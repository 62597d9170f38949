-- Move a not yet started job (or child) from its assigned device, gone offline, to another idle one.
-- KEYS[1] = the member's record, KEYS[2] = the old device, KEYS[3] = the new device, KEYS[4] = its alive mark
-- ARGV[1] = member job id, ARGV[2] = old device name, ARGV[3] = new device name, ARGV[4] = timestamp
-- -> 1 moved, 0 refused (nothing written).
if redis.call('HGET', KEYS[1], 'state') ~= 'waiting' then return 0 end
if redis.call('HGET', KEYS[1], 'assigned_device') ~= ARGV[2] then return 0 end
if redis.call('HGET', KEYS[3], 'state') ~= 'idle' then return 0 end
local reason = redis.call('HGET', KEYS[3], 'maintenance')
if reason and reason ~= '' then return 0 end
if redis.call('EXISTS', KEYS[4]) == 0 then return 0 end
if redis.call('HGET', KEYS[2], 'job_id') == ARGV[1] and redis.call('HGET', KEYS[2], 'state') == 'assigned' then
  redis.call('HSET', KEYS[2], 'state', 'idle', 'job_id', '', 'since', ARGV[4])
end
redis.call('HSET', KEYS[3], 'state', 'assigned', 'job_id', ARGV[1], 'since', ARGV[4])
redis.call('HSET', KEYS[1], 'assigned_device', ARGV[3], 'assigned_at', ARGV[4])
return 1
