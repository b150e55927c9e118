-- Reads a topic's position and part of its history.
--
-- KEYS[1] meta hash (e: epoch, s: top offset, h: history TTL in ms)   KEYS[2] history stream
-- ARGV[1] epoch to use when the topic has none   ARGV[2] meta TTL (s; longer if h is)
-- ARGV[3] first entry ID to read (`<offset>-0`), or '' for the newest entries
-- ARGV[4] at most this many entries (0: only the position)
--
-- Returns {top offset, epoch, now (ms, the server's clock), entries, history TTL (ms, ''
-- when no publication set one)}; entries as XRANGE gives them (oldest first) or as
-- XREVRANGE does (newest first) when ARGV[3] is ''.
if redis.replicate_commands then redis.replicate_commands() end
local meta, stream = KEYS[1], KEYS[2]

local state = redis.call('HMGET', meta, 'e', 's', 'h')
local epoch, top, ttl = state[1], state[2], state[3]
if not epoch then
  -- A topic without a stream gets its epoch now, so that the position a client is given
  -- here stays valid when the first publication comes.
  epoch = ARGV[1]
  redis.call('HSET', meta, 'e', epoch)
end
-- The position outlives the history (as the publish script keeps it).
local keep = tonumber(ARGV[2])
if ttl then keep = math.max(keep, math.ceil(tonumber(ttl) / 1000)) end
redis.call('EXPIRE', meta, string.format('%d', keep))
if not top then top = '0' end
if not ttl then ttl = '' end

local entries = {}
if tonumber(ARGV[4]) > 0 then
  if ARGV[3] == '' then
    entries = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', ARGV[4])
  else
    entries = redis.call('XRANGE', stream, ARGV[3], '+', 'COUNT', ARGV[4])
  end
end

local now = redis.call('TIME')
local ms = string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
return {top, epoch, ms, entries, ttl}
