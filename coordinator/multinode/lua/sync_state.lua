-- Where a sync stands for generation `gen`; shared by sync_enter.lua and sync_check.lua.
-- KEYS: 1 info, 2 members, 3 failed, 4 sync, 5 msg, 6 log
-- -> as wait_check.lua, but only senders with data (a barrier of N members must
--    not ship N members' empty data to each of N members)
local function sync_state(gen, job, record)
  local timeout = redis.call('HGET', KEYS[1], 'timeout')
  if not timeout then return {-1} end
  local failed = redis.call('HGETALL', KEYS[3])
  if #failed > 0 then return {0, timeout, redis.call('HGET', KEYS[1], 'members'), failed, gen} end
  if tonumber(redis.call('HGET', KEYS[4], 'done') or '0') < gen then return {1, timeout, false, {}, gen} end
  log_pass(KEYS[6], job, record)
  if redis.call('HEXISTS', KEYS[4], 'data') == 0 then return {2, timeout, false, {}, gen} end
  local data, all = {}, redis.call('HGETALL', KEYS[5])
  for i = 1, #all, 2 do
    if all[i + 1] ~= '{}' then data[#data + 1] = all[i]; data[#data + 1] = all[i + 1] end
  end
  if #data == 0 then return {2, timeout, false, data, gen} end
  return {2, timeout, redis.call('HGET', KEYS[1], 'members'), data, gen}
end
