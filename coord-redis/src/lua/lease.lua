-- Lease calls: ARGV[3] is the call, ARGV[4] the lease id, ARGV[5] the TTL in ms (grant).
local call, sid = ARGV[3], ARGV[4]
local id = tonumber(sid)

if call == 'reap' then
  return cmsgpack.pack({ reaped = REAPED })
end
if call == 'grant' then
  -- The id is the client's random pick; a clash with a live lease is reported, not reused.
  if lease_exists(id) then return cmsgpack.pack({ err = 'exists' }) end
  local ttl = tonumber(ARGV[5])
  redis.call('HSET', K_TTLS, sid, ARGV[5])
  redis.call('ZADD', K_DEADLINES, NOW + ttl, sid)
  return cmsgpack.pack({ ttl = ttl })
end
if not lease_exists(id) then return cmsgpack.pack({ err = 'lease' }) end
local ttl = num(redis.call('HGET', K_TTLS, sid))
if call == 'keepalive' then
  redis.call('ZADD', K_DEADLINES, NOW + ttl, sid)
  return cmsgpack.pack({ ttl = ttl })
elseif call == 'revoke' then
  drop_lease(id)
  return cmsgpack.pack({ rev = CUR })
else
  local deadline = num(redis.call('ZSCORE', K_DEADLINES, sid))
  return cmsgpack.pack({ ttl = ttl, left = math.max(0, deadline - NOW) })
end
