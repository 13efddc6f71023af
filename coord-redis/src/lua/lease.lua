-- Lease calls: ARGV[1] is the call, ARGV[2] the lease id, ARGV[3] the TTL in ms (grant).
local call, sid = ARGV[1], ARGV[2]
local id = tonumber(sid)

if call == 'reap' then
  return cjson.encode({ reaped = REAPED })
end
if call == 'grant' then
  -- The id is the client's random pick; a clash with a live lease is reported, not reused.
  if lease_exists(id) then return cjson.encode({ err = 'exists' }) end
  local ttl = tonumber(ARGV[3])
  redis.call('HSET', K_TTLS, sid, ARGV[3])
  redis.call('ZADD', K_DEADLINES, NOW + ttl, sid)
  return cjson.encode({ ttl = ttl })
end
if not lease_exists(id) then return cjson.encode({ err = 'lease' }) end
local ttl = num(redis.call('HGET', K_TTLS, sid))
if call == 'keepalive' then
  redis.call('ZADD', K_DEADLINES, NOW + ttl, sid)
  return cjson.encode({ ttl = ttl })
elseif call == 'revoke' then
  drop_lease(id)
  return cjson.encode({ rev = CUR })
else
  local deadline = num(redis.call('ZSCORE', K_DEADLINES, sid))
  return cjson.encode({ ttl = ttl, left = math.max(0, deadline - NOW) })
end
