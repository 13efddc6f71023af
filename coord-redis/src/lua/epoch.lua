-- Run alone (without common.lua) when a client connects: adopts the namespace's epoch,
-- creating it from ARGV[1] with revision mode ARGV[2] when the namespace has none (an
-- empty namespace, or one written before epochs existed). Answers the epoch and the mode.
-- KEYS[1] is "{ns}:meta", declared so that a Redis Cluster routes the script to the
-- namespace's slot.
local K_META = KEYS[1]
if redis.call('HSETNX', K_META, 'epoch', ARGV[1]) == 1 then
  redis.call('HSET', K_META, 'revisions', ARGV[2])
end
local meta = redis.call('HMGET', K_META, 'epoch', 'revisions')
return cmsgpack.pack({ epoch = meta[1], revisions = meta[2] or '' })
