-- Take a due deadline out of the timer set, only if it still falls due when it was read.
-- KEYS[1] = the timer set   ARGV[1] = member "<kind>:<job id>"   ARGV[2] = the score read
-- Returns 1 when taken (the caller fires it), 0 when it was moved (extended) or removed since.
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
