-- KEYS: info, members, failed, msg, log
-- ARGV: mode ('any' | 'all' | 'role' | 'role-any'), role, job id, pass record JSON ('' = none)
-- -> {status, timeout, members JSON, data}: -1 no group, -3 unknown role,
--    0 a member failed (data = failed hash), 1 pending, 2 done (data = message hash;
--    the pass record is appended in the same step)
local timeout = redis.call('HGET', KEYS[1], 'timeout')
if not timeout then return {-1} end
local failed = redis.call('HGETALL', KEYS[3])
if #failed > 0 then return {0, timeout, redis.call('HGET', KEYS[1], 'members'), failed} end
local ok = true
if ARGV[1] == 'any' then
  ok = redis.call('EXISTS', KEYS[4]) == 1
elseif ARGV[1] == 'all' then
  ok = redis.call('HLEN', KEYS[4]) >= redis.call('HLEN', KEYS[2])
else  -- 'role': every member of the role; 'role-any': any member of it
  local found, any_sent = false, false
  local m = redis.call('HGETALL', KEYS[2])
  for i = 1, #m, 2 do
    if m[i + 1] == ARGV[2] then
      found = true
      if redis.call('HEXISTS', KEYS[4], m[i]) == 1 then any_sent = true
      elseif ARGV[1] == 'role' then ok = false end
    end
  end
  if not found then return {-3, timeout} end
  if ARGV[1] == 'role-any' then ok = any_sent end
end
if not ok then return {1, timeout} end
log_pass(KEYS[5], ARGV[3], ARGV[4])
return {2, timeout, redis.call('HGET', KEYS[1], 'members'), redis.call('HGETALL', KEYS[4])}
