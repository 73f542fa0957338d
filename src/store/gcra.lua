-- reqwest-polite: one scope's shared pacing schedule (window-exact GCRA) and its closure.
-- Loaded by src/store/redis/script.rs, run with EVALSHA (reloaded after a SCRIPT FLUSH).
--
-- KEYS[1]  the scope's hash, with fields
--            tu, tn  the theoretical arrival time (TAT): microseconds since the epoch on the
--                    Redis clock, plus 0..999 nanoseconds (absent: the bucket is full);
--            cu      closed until, microseconds since the epoch (absent: never closed);
--            xe      when the key expires, as last set: milliseconds since the epoch.
--
-- reserve  ARGV[1] advance: ns the reservation moves the schedule (cost x interval; 0: unpaced)
--          ARGV[2] lead: how far ahead of the schedule a start may be (ns: the larger of the
--                  tolerance and one interval)
--          ARGV[3] slack: how late after its slot a start may still keep it (ns)
--          ARGV[4] max wait (ns, at most 2^62)
--          ARGV[5] TTL floor (ms, at least 1): the limit's window
--   {1, delay, closed, now}: reserved; start `delay` ns after the Redis clock read `now` (µs)
--   {0, delay, closed, now}: refused, the wait would pass max wait; nothing was reserved, and
--                            `delay` is the earliest start
--   `closed`: ns until the scope's closure ends (0: open)
-- close    ARGV[1] "close", ARGV[2] how long to close it (ns from now), ARGV[3] TTL floor (ms)
--   {closed, now}: ns until the scope reopens; a closure is never shortened
--
-- Every instant comes from Redis's own TIME, never from a client, so clients whose clocks
-- disagree still share one schedule. Absolute times are kept in µs (exact in a Lua double
-- for centuries) and all arithmetic is in ns relative to now, so no large value is ever added
-- to another and nothing loses precision.
--
-- Cheap on purpose: it runs once per request, and in Redis 7 each redis.call costs 2-4 µs,
-- each tonumber, table, closure or math.* call a fraction of one (INFO commandstats on a
-- 2-core machine). The common case makes three calls (TIME, HMGET, HSET of the two TAT
-- fields), four tonumbers and no table but the reply: the client sends the schedule's
-- arithmetic done (advance, lead), fields are read by Lua's own string coercion, the expiry
-- is extended only when the state outgrows it (by a sixteenth of the window more than
-- needed, so a busy scope pays for PEXPIRE once per sixteenth of a window), and numbers go to
-- HSET as numbers (Redis writes a Lua number in a form that reads back exactly, and only this
-- script reads them).
--
-- Needs Redis 5 or later (or Valkey): writing after TIME relies on effects replication, the
-- default since Redis 5.

local key = KEYS[1]
local time = redis.call('TIME')
local now_us = time[1] * 1000000 + time[2]
local state = redis.call('HMGET', key, 'tu', 'tn', 'cu', 'xe')

-- the largest value handed back as an integer reply (2^62 ns: 146 years)
local CAP = 4611686018427387904
-- the longest TTL set (2^40 ms: 34 years)
local MAX_TTL_MS = 1099511627776

-- ns until the closure ends (0: open)
local closed = 0
if state[3] then
  closed = (state[3] - now_us) * 1000
  if closed < 0 then
    closed = 0
  end
end

-- Keep the key for `keep_ns` from now and at least `floor_ms` (the window), as HSET of
-- `a`..`d` (field, value pairs; `c` and `d` may be nil) writes it. Returns nothing; only the
-- rare paths (a closure, an expiry to extend) come here. HSET comes first: PEXPIRE cannot set
-- a key's expiry before the key exists, and the first write is the one Redis refuses when out
-- of memory.
local function write_extending(keep_ns, floor_ms, a, b, c, d)
  local ms = math.min(math.max(math.ceil(keep_ns / 1000000), floor_ms, 1), MAX_TTL_MS)
  ms = math.min(ms + math.ceil(floor_ms / 16), MAX_TTL_MS)
  local xe = math.floor(now_us / 1000) + ms
  if c then
    redis.call('HSET', key, a, b, c, d, 'xe', xe)
  else
    redis.call('HSET', key, a, b, 'xe', xe)
  end
  redis.call('PEXPIRE', key, string.format('%.0f', ms))
end

local advance = ARGV[1]

if advance == 'close' then
  local until_us = now_us + math.ceil(ARGV[2] / 1000)
  local floor_ms = tonumber(ARGV[3])
  local longer = (not state[3]) or until_us > tonumber(state[3])
  if longer then
    closed = (until_us - now_us) * 1000
  end
  local keep = closed
  if state[1] then
    keep = math.max(keep, (state[1] - now_us) * 1000 + state[2])
  end
  local xe = tonumber(state[4])
  if xe and now_us / 1000 + math.max(keep / 1000000, floor_ms) <= xe then
    if longer then
      redis.call('HSET', key, 'cu', until_us)
    end
  elseif longer then
    write_extending(keep, floor_ms, 'cu', until_us)
  else
    write_extending(keep, floor_ms, 'cu', state[3])
  end
  return {math.min(closed, CAP), now_us}
end

advance = tonumber(advance)
local max_wait = tonumber(ARGV[4])

if advance <= 0 then
  -- unpaced: only the closure holds it back
  if closed > max_wait then
    return {0, math.min(closed, CAP), math.min(closed, CAP), now_us}
  end
  return {1, closed, closed, now_us}
end

-- the schedule, in ns after now: the TAT (negative: in the past), or the reopening of a
-- closed scope (0: open) for a full bucket
local t0 = closed
if state[1] then
  t0 = (state[1] - now_us) * 1000 + state[2]
end
-- the earliest start that keeps the reservation within the tolerance (as src/pacing/gcra.rs),
-- and never before the scope reopens
local start = t0 + advance - tonumber(ARGV[2])
if start < closed then
  start = closed
end
if start > max_wait then
  return {0, math.min(start, CAP), math.min(closed, CAP), now_us}
end

-- Reserve: a start less than `slack` after its virtual slot keeps it; later than that, the
-- schedule restarts from the start.
local slack = tonumber(ARGV[3])
local new_tat = start + advance
if start - t0 < slack then
  new_tat = t0 + advance
end
-- the new TAT as whole µs on the Redis clock, plus 0..999 ns
local us = math.floor(new_tat / 1000)
local tu, tn = now_us + us, new_tat - us * 1000

-- keep the key until the TAT (plus the slack) and the closure have passed, and at least the
-- window
local keep = new_tat + slack
if closed > keep then
  keep = closed
end
local floor_ms = tonumber(ARGV[5])
local keep_ms = keep / 1000000
if keep_ms < floor_ms then
  keep_ms = floor_ms
end
local xe = state[4]
if xe and now_us / 1000 + keep_ms <= tonumber(xe) then
  redis.call('HSET', key, 'tu', tu, 'tn', tn)
else
  write_extending(keep, floor_ms, 'tu', tu, 'tn', tn)
end
-- start <= max_wait <= 2^62, and closed <= start: no cap needed
return {1, start, closed, now_us}
