-- Run alone (without common.lua) when a client connects: adopts the namespace's epoch,
-- creating it from ARGV[2] with revision mode ARGV[3] when the namespace has none (an
-- empty namespace, or one written before epochs existed). Answers the epoch and the mode.
local K_META = ARGV[1] .. ':meta'
if redis.call('HSETNX', K_META, 'epoch', ARGV[2]) == 1 then
  redis.call('HSET', K_META, 'revisions', ARGV[3])
end
local meta = redis.call('HMGET', K_META, 'epoch', 'revisions')
return cmsgpack.pack({ epoch = meta[1], revisions = meta[2] or '' })
