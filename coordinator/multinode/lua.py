"""The Lua scripts behind the MultiNode store: one atomic round trip per operation.

Why Lua: a send, a sync arrival or a failure changes several keys and then
publishes a wake-up; doing it in one script makes the state change and the
wake-up atomic (no waiter can read half of it) and costs one round trip.
Every script takes ``KEYS[1]`` = group info, ``KEYS[2]`` = group members, so
it can refuse unknown groups and non-members and can give keys created late
the group's TTL (see ``group.expire_group``).

Wake-up payloads on the group channel (hints only, never state):
``m <message-id>`` (a send), ``s <generation> <message-id>`` (a sync
generation completed), ``f <job-id>`` (a member failed).
"""
from __future__ import annotations

try:  # the builtin module: hashlib would load OpenSSL at every command start
    from _sha1 import sha1
except ImportError:  # pragma: no cover - CPython always has it
    from hashlib import sha1

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at every command start
    from typing import Any

# Keep keys created after expire_group() inside the group's lifetime.
_KEEP_TTL = """
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
"""


class Script:
    """A Lua script and its SHA1, run with EVALSHA (EVAL after a NOSCRIPT)."""

    def __init__(self, body: str) -> None:
        self.src = _KEEP_TTL + body
        self.sha = sha1(self.src.encode("utf-8")).hexdigest()

    def __call__(self, client: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except Exception as exc:  # RespError or redis-py's NoScriptError
            if "NOSCRIPT" not in str(exc) and type(exc).__name__ != "NoScriptError":
                raise
        return client.execute_command("EVAL", self.src, len(keys), *keys, *args)


# KEYS: info, members, msg, keyset, log, channel, sync (of the same id)
# ARGV: job id, message id, data JSON, log record JSON ('' = no record)
SEND = Script("""
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
""")

# KEYS: info, members, log   ARGV: job id, log record JSON
LOG = Script("""
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local role = redis.call('HGET', KEYS[2], ARGV[1]) or ''
redis.call('RPUSH', KEYS[3], with_role(ARGV[2], role))
keep(KEYS[3])
return 1
""")

# KEYS: info, members, failed, msg, log
# ARGV: mode ('any' | 'all' | 'role' | 'role-any'), role, job id, pass record JSON ('' = none)
# -> {status, timeout, members JSON, data}: -1 no group, -3 unknown role,
#    0 a member failed (data = failed hash), 1 pending, 2 done (data = message hash;
#    the pass record is appended in the same step)
WAIT_CHECK = Script("""
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
""")

# Where a sync stands for generation `gen`; shared by SYNC_ENTER and SYNC_CHECK.
# KEYS: 1 info, 2 members, 3 failed, 4 sync, 5 msg, 6 log
# -> as WAIT_CHECK, but only senders with data (a barrier of N members must
#    not ship N members' empty data to each of N members)
_SYNC_STATE = """
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
"""

# A member's k-th `lava-sync <id>` joins generation k of that id's barrier, so
# one id can be reused in a loop.  The token makes a retried call idempotent.
# KEYS: info, members, failed, sync, msg, log, keyset, channel
# ARGV: job id, message id, token, pass record JSON ('' = none)
# -> sync_state(...) with the generation last, or {-1} no group, {-2} not a member
SYNC_ENTER = Script(_SYNC_STATE + """
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
""")

# KEYS: info, members, failed, sync, msg, log   ARGV: generation, job id, pass record JSON
SYNC_CHECK = Script(_SYNC_STATE + """
return sync_state(tonumber(ARGV[1]), ARGV[2], ARGV[3])
""")

# KEYS: info, members, failed, channel   ARGV: job id, reason
FAIL = Script("""
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
keep(KEYS[3])
redis.call('PUBLISH', KEYS[4], 'f ' .. ARGV[1])
return 1
""")

# KEYS: info, members   ARGV: timeout, members JSON, created, job1, role1, ...
CREATE = Script("""
redis.call('DEL', KEYS[2])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], 'timeout', ARGV[1], 'members', ARGV[2],
           'size', (#ARGV - 3) / 2, 'created', ARGV[3])
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
return 1
""")

# KEYS: info, members, failed, log, keyset   ARGV: milliseconds, or 'del'
EXPIRE = Script("""
local all = redis.call('SMEMBERS', KEYS[5])
for i = 1, #KEYS do all[#all + 1] = KEYS[i] end
local n = 0
for _, k in ipairs(all) do
  if ARGV[1] == 'del' then n = n + redis.call('DEL', k)
  else n = n + redis.call('PEXPIRE', k, ARGV[1]) end
end
return n
""")
