-- reqwest-polite: one scope's shared pacing schedule (window-exact GCRA) and its closure.
-- Loaded by src/store/redis.rs, run with EVALSHA (reloaded after a SCRIPT FLUSH).
--
-- KEYS[1]  the scope's hash, with fields
--            tu, tn  the theoretical arrival time (TAT): microseconds since the epoch on the
--                    Redis clock, plus 0..999 nanoseconds (absent: the bucket is full);
--            cu      closed until, microseconds since the epoch (absent: never closed);
--            xe      when the key expires, as last set: milliseconds since the epoch.
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
-- Cheap on purpose: it runs once per request, and in Redis 7 every redis.call, tonumber of a
-- long number and string.format costs a large fraction of a microsecond (INFO commandstats on
-- a 2-core machine: 30 µs per call for the first version of this script). Three calls in the common case (TIME,
-- HMGET, HSET): the expiry is extended only when the state outgrows it, by a sixteenth of the
-- window more than needed, so a busy scope pays for PEXPIRE once per sixteenth of a window;
-- numbers go to HSET as numbers (Redis writes a Lua number in a form that reads back exactly,
-- and only this script reads them).
--
-- Needs Redis 5 or later (or Valkey): writing after TIME relies on effects replication, the
-- default since Redis 5.

local key = KEYS[1]
local op = ARGV[1]

local time = redis.call('TIME')
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local now_ms = math.floor(now_us / 1000)

-- the largest value handed back as an integer reply (2^62 ns: 146 years)
local CAP = 4611686018427387904
-- the longest TTL set (2^40 ms: 34 years)
local MAX_TTL_MS = 1099511627776

local state = redis.call('HMGET', key, 'tu', 'tn', 'cu', 'xe')
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
local expires = tonumber(state[4])

-- Write `fields` (an HSET), and keep the key while it still says something: until the TAT
-- (plus the slack) and the closure have passed, and at least `floor_ms` (the window). The
-- expiry only grows, and when it must, by a sixteenth of the window more than needed, so that
-- most writes need no PEXPIRE. HSET comes first: PEXPIRE cannot set a key's expiry before the
-- key exists, and the first write is the one Redis refuses when out of memory.
local function write(fields, rel_tat, slack, floor_ms)
  local ns = math.max(rel_tat + slack, closed, 0)
  local ms = math.min(math.max(math.ceil(ns / 1000000), floor_ms, 1), MAX_TTL_MS)
  if expires and now_ms + ms <= expires then
    if #fields > 0 then
      redis.call('HSET', key, unpack(fields))
    end
    return
  end
  ms = math.min(ms + math.ceil(floor_ms / 16), MAX_TTL_MS)
  fields[#fields + 1] = 'xe'
  fields[#fields + 1] = now_ms + ms
  redis.call('HSET', key, unpack(fields))
  redis.call('PEXPIRE', key, string.format('%.0f', ms))
end

if op == 'close' then
  local delay = tonumber(ARGV[2])
  local floor_ms = tonumber(ARGV[3])
  local until_us = now_us + math.ceil(delay / 1000)
  local fields = {}
  if (not state[3]) or until_us > tonumber(state[3]) then
    fields = {'cu', until_us}
    closed = math.max(closed, (until_us - now_us) * 1000)
  end
  write(fields, tat or 0, 0, floor_ms)
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
-- the new TAT as whole µs on the Redis clock, plus 0..999 ns
local us = math.floor(new_tat / 1000)
local fields = {'tu', now_us + us, 'tn', new_tat - us * 1000}
write(fields, new_tat, slack, floor_ms)
return {1, math.min(start, CAP), math.min(closed, CAP), now_us}
