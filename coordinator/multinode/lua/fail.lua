-- KEYS: info, members, failed, channel   ARGV: job id, reason
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
keep(KEYS[3])
redis.call('PUBLISH', KEYS[4], 'f ' .. ARGV[1])
return 1
