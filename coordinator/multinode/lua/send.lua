-- KEYS: info, members, msg, keyset, log, channel, sync (of the same id)
-- ARGV: job id, message id, data JSON, log record JSON ('' = no record)
-- -> 1 stored, -1 no group, -2 not a member
local role = redis.call('HGET', KEYS[2], ARGV[1])
if not role then
  if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
  return -2
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[4], KEYS[3])
if ARGV[3] ~= '{}' then  -- tells a sync of this id that there is data to hand out
  redis.call('HSET', KEYS[7], 'data', 1)
  redis.call('SADD', KEYS[4], KEYS[7])
  keep(KEYS[7])
end
if ARGV[4] ~= '' then redis.call('RPUSH', KEYS[5], with_role(ARGV[4], role)) end
keep(KEYS[3], KEYS[4], KEYS[5])
redis.call('PUBLISH', KEYS[6], 'm ' .. ARGV[2])
return 1
