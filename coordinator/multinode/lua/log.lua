-- KEYS: info, members, log   ARGV: job id, log record JSON
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local role = redis.call('HGET', KEYS[2], ARGV[1]) or ''
redis.call('RPUSH', KEYS[3], with_role(ARGV[2], role))
keep(KEYS[3])
return 1
