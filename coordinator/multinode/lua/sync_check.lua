-- KEYS: info, members, failed, sync, msg, log   ARGV: generation, job id, pass record JSON
return sync_state(tonumber(ARGV[1]), ARGV[2], ARGV[3])
