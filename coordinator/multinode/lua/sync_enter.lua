-- A member's k-th `lava-sync <id>` joins generation k of that id's barrier, so
-- one id can be reused in a loop.  The token makes a retried call idempotent.
-- KEYS: info, members, failed, sync, msg, log, keyset, channel
-- ARGV: job id, message id, token, pass record JSON ('' = none)
-- -> sync_state(...) with the generation last, or {-1} no group, {-2} not a member
local role = redis.call('HGET', KEYS[2], ARGV[1])
if not role then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
  return {-2}
end
local mkey, tkey = 'm:' .. ARGV[1], 't:' .. ARGV[1]
local gen
if redis.call('HGET', KEYS[4], tkey) == ARGV[3] then
  gen = tonumber(redis.call('HGET', KEYS[4], mkey))
else
  gen = redis.call('HINCRBY', KEYS[4], mkey, 1)
  redis.call('HSET', KEYS[4], tkey, ARGV[3])
  local n = redis.call('HINCRBY', KEYS[4], 'g:' .. gen, 1)
  if n >= redis.call('HLEN', KEYS[2]) then
    redis.call('HDEL', KEYS[4], 'g:' .. gen)
    if gen > tonumber(redis.call('HGET', KEYS[4], 'done') or '0') then
      redis.call('HSET', KEYS[4], 'done', gen)
    end
    redis.call('PUBLISH', KEYS[8], 's ' .. gen .. ' ' .. ARGV[2])
  end
  if redis.call('HSETNX', KEYS[5], ARGV[1], '{}') == 1 then
    redis.call('PUBLISH', KEYS[8], 'm ' .. ARGV[2])
  end
  redis.call('SADD', KEYS[7], KEYS[4], KEYS[5])
  keep(KEYS[4], KEYS[5], KEYS[7])
end
return sync_state(gen, ARGV[1], ARGV[4])
