-- reqwest-polite: what the processes sharing a prefix know about each other.
-- Loaded by src/store/redis/health.rs, run with EVALSHA (reloaded after a SCRIPT FLUSH).
--
-- KEYS[1]  a sorted set of live processes: member = process id, score = when its heartbeat
--          expires (ms since the epoch, Redis clock)
-- KEYS[2]  the fleet secret: 32 random bytes, created once, never expiring
-- ARGV[1]  "beat" or "secret".
--
-- beat     ARGV[2] process id, ARGV[3] TTL (ms), ARGV[4] the secret this process already
--          holds ("" if none): put back if the key was lost (a restarted Redis without
--          persistence), so processes that already hashed with it keep their quotas
--   -> the number of live processes, this one included
-- secret   ARGV[2] 32 fresh random bytes, used if no secret exists yet
--   -> the fleet's secret

local op = ARGV[1]

if op == 'beat' then
  local time = redis.call('TIME')
  local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local ttl = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], string.format('%.0f', now_ms + ttl), ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.0f', now_ms))
  -- the set outlives its last member's heartbeat by one TTL, then goes
  redis.call('PEXPIRE', KEYS[1], string.format('%.0f', 2 * ttl))
  if ARGV[4] ~= '' then
    redis.call('SET', KEYS[2], ARGV[4], 'NX')
  end
  return redis.call('ZCARD', KEYS[1])
end

if op == 'secret' then
  local secret = redis.call('GET', KEYS[2])
  if not secret then
    redis.call('SET', KEYS[2], ARGV[2])
    secret = ARGV[2]
  end
  return secret
end

return redis.error_reply('ERR reqwest-polite fleet.lua: unknown operation')
