-- reqwest-polite: one scope's shared pacing schedule (window-exact GCRA) and its closure.
-- Loaded by src/store/redis.rs, run with EVALSHA (reloaded after a SCRIPT FLUSH).
--
-- KEYS[1]  the scope's hash, with fields
--            tu, tn  the theoretical arrival time (TAT): microseconds since the epoch on the
--                    Redis clock, plus 0..999 nanoseconds (absent: the bucket is full);
--            cu      closed until, microseconds since the epoch (absent: never closed).
-- ARGV[1]  "reserve" or "close".
--
-- reserve  ARGV[2] interval (ns per unit), ARGV[3] tolerance (ns), ARGV[4] slack (ns),
--          ARGV[5] cost (units), ARGV[6] max wait (ns), ARGV[7] TTL floor (ms)
--   {1, delay, closed, now}: reserved; start `delay` ns after the Redis clock read `now` (µs)
--   {0, delay, closed, now}: refused, the wait would pass max wait; nothing was reserved, and
--                            `delay` is the earliest start
--   `closed`: ns until the scope's closure ends (0: open)
-- close    ARGV[2] how long to close it (ns from now), ARGV[3] TTL floor (ms)
--   {closed, now}: ns until the scope reopens; a closure is never shortened
--
-- Every instant comes from Redis's own TIME, never from a client, so clients whose clocks
-- disagree still share one schedule. Absolute times are kept in µs (exact in a Lua double
-- for centuries) and all arithmetic is in ns relative to now, so no large value is ever added
-- to another and nothing loses precision.
--
-- Needs Redis 5 or later (or Valkey): writing after TIME relies on effects replication, the
-- default since Redis 5.

local key = KEYS[1]
local op = ARGV[1]

local time = redis.call('TIME')
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- the largest value handed back as an integer reply (2^62 ns: 146 years)
local CAP = 4611686018427387904
-- the longest TTL set (2^40 ms: 34 years)
local MAX_TTL_MS = 1099511627776

local state = redis.call('HMGET', key, 'tu', 'tn', 'cu')
-- the TAT in ns after now (negative: in the past), or nil for a full bucket
local tat = nil
if state[1] then
  tat = (tonumber(state[1]) - now_us) * 1000 + (tonumber(state[2]) or 0)
end
-- ns until the closure ends (0: open)
local closed = 0
if state[3] then
  closed = math.max(0, (tonumber(state[3]) - now_us) * 1000)
end

-- integers as Redis reads them back (tostring would use %.14g and round)
local function int(x)
  return string.format('%.0f', x)
end

local function save_tat(rel)
  local us = math.floor(rel / 1000)
  redis.call('HSET', key, 'tu', int(now_us + us), 'tn', int(rel - us * 1000))
end

-- Keep the key while it still says something: until the TAT (plus the slack) and the
-- closure have passed, and at least `floor_ms` (the window). Computed from the whole state at
-- every write, so a caller with a shorter window may shorten the TTL but never below what the
-- state still needs.
local function keep(rel_tat, slack, floor_ms)
  local ns = math.max(rel_tat + slack, closed, 0)
  local ms = math.min(math.max(math.ceil(ns / 1000000), floor_ms, 1), MAX_TTL_MS)
  redis.call('PEXPIRE', key, int(ms))
end

if op == 'close' then
  local delay = tonumber(ARGV[2])
  local floor_ms = tonumber(ARGV[3])
  local until_us = now_us + math.ceil(delay / 1000)
  if (not state[3]) or until_us > tonumber(state[3]) then
    redis.call('HSET', key, 'cu', int(until_us))
    closed = math.max(closed, (until_us - now_us) * 1000)
  end
  keep(tat or 0, 0, floor_ms)
  return {math.min(closed, CAP), now_us}
end

if op ~= 'reserve' then
  return redis.error_reply('ERR reqwest-polite gcra.lua: unknown operation')
end

local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local slack = tonumber(ARGV[4])
local cost = tonumber(ARGV[5])
local max_wait = tonumber(ARGV[6])
local floor_ms = tonumber(ARGV[7])

-- a closed scope: the request arrives when it reopens
local arrive = closed

if interval <= 0 then
  -- unpaced: only the closure holds it back
  if arrive > max_wait then
    return {0, math.min(arrive, CAP), math.min(closed, CAP), now_us}
  end
  return {1, math.min(arrive, CAP), math.min(closed, CAP), now_us}
end

local t0 = tat or arrive
-- the earliest start that keeps `cost` units within the tolerance (as src/pacing/gcra.rs)
local due = t0 + cost * interval - math.max(tolerance, interval)
local start = math.max(due, arrive)
if start > max_wait then
  return {0, math.min(start, CAP), math.min(closed, CAP), now_us}
end

-- Reserve: a start less than `slack` after its virtual slot keeps it; later than that, the
-- schedule restarts from the start.
local base = start
if start - t0 < slack then
  base = t0
end
local new_tat = base + cost * interval
save_tat(new_tat)
keep(new_tat, slack, floor_ms)
return {1, math.min(start, CAP), math.min(closed, CAP), now_us}
