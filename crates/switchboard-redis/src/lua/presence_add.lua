-- Adds (or refreshes) presence entries of one topic.
--
-- KEYS[1] presence hash (client -> entry)        KEYS[2] expiry zset (client -> unix s)
-- ARGV[1] TTL (s), then pairs: ARGV[2i] client, ARGV[2i+1] entry
--
-- Returns how many entries were written.
if redis.replicate_commands then redis.replicate_commands() end
local ttl = tonumber(ARGV[1])
local expire_at = tonumber(redis.call('TIME')[1]) + ttl
local n = 0
for i = 2, #ARGV - 1, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], expire_at, ARGV[i])
  n = n + 1
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return n
