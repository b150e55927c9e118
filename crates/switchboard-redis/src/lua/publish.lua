-- Numbers one publication, keeps it in the topic's history and sends it to every node,
-- atomically (so every node sees the topic's publications in offset order).
--
-- KEYS[1] meta hash (e: epoch, s: top offset, h: history TTL in ms)   KEYS[2] history stream
-- ARGV[1] epoch to use when the topic has none   ARGV[2] meta TTL (s)
-- ARGV[3] history size (0: no history)          ARGV[4] history TTL (ms, 0: no history)
--   (the topic's own bounds: they may differ per topic; reads filter by the TTL kept in h)
-- ARGV[5] the topic's channel                    ARGV[6] kind (decimal)   ARGV[7] data
--
-- Returns {top offset, epoch}.
if redis.replicate_commands then redis.replicate_commands() end
local meta, stream = KEYS[1], KEYS[2]

local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', meta, 'e', epoch)
end
local top = redis.call('HINCRBY', meta, 's', 1)
redis.call('HSET', meta, 'h', ARGV[4])
redis.call('EXPIRE', meta, ARGV[2])

local offset = string.format('%d', top)
local now = redis.call('TIME')
local ms = string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
if tonumber(ARGV[3]) > 0 and tonumber(ARGV[4]) > 0 then
  -- A new stream (or a meta hash that was lost while its stream was not): start afresh.
  if top == 1 then redis.call('DEL', stream) end
  redis.call('XADD', stream, 'MAXLEN', ARGV[3], offset .. '-0', 'k', ARGV[6], 't', ms, 'd', ARGV[7])
  redis.call('PEXPIRE', stream, ARGV[4])
else
  redis.call('DEL', stream)
end

redis.call('PUBLISH', ARGV[5], 'p2:' .. offset .. ':' .. epoch .. ':' .. ARGV[6] .. ':' .. ms .. ':' .. ARGV[7])
return {top, epoch}
