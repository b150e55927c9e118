-- Drops a topic's expired presence entries, then returns the others.
--
-- KEYS[1] presence hash (client -> entry)        KEYS[2] expiry zset (client -> unix s)
--
-- Returns HGETALL of the hash: client, entry, client, entry, ...
if redis.replicate_commands then redis.replicate_commands() end
local now = tonumber(redis.call('TIME')[1])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for i = 1, #expired, 1000 do
  redis.call('HDEL', KEYS[1], unpack(expired, i, math.min(i + 999, #expired)))
end
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
end
return redis.call('HGETALL', KEYS[1])
