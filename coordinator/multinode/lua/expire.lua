-- KEYS: info, members, failed, log, keyset   ARGV: milliseconds, or 'del'
local all = redis.call('SMEMBERS', KEYS[5])
for i = 1, #KEYS do all[#all + 1] = KEYS[i] end
local n = 0
for _, k in ipairs(all) do
  if ARGV[1] == 'del' then n = n + redis.call('DEL', k)
  else n = n + redis.call('PEXPIRE', k, ARGV[1]) end
end
return n
