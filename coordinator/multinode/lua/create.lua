-- KEYS: info, members   ARGV: timeout, members JSON, created, job1, role1, ...
redis.call('DEL', KEYS[2])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'timeout', ARGV[1], 'members', ARGV[2],
           'size', (#ARGV - 3) / 2, 'created', ARGV[3])
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
return 1
