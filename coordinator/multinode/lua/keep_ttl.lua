-- Shared by every script: KEYS[1] = group info, KEYS[2] = group members.
-- keep(...): keys created after expire_group() stay inside the group's lifetime.
-- log_pass(log, job, record): append a pass record with the member's role.
local function keep(...)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    for _, k in ipairs({...}) do redis.call('PEXPIRE', k, ttl) end
  end
end
local function with_role(record, role)
  return string.sub(record, 1, -2) .. ',"role":' .. cjson.encode(role) .. '}'
end
local function log_pass(log, job, record)
  if record ~= '' then
    redis.call('RPUSH', log, with_role(record, redis.call('HGET', KEYS[2], job) or ''))
    keep(log)
  end
end
