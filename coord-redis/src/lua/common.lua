-- Shared by every script (prepended on the Rust side). KEYS[1] is the namespace's revision
-- key, "{ns}:rev": declaring it routes the script to the master of the namespace's slot in a
-- Redis Cluster. The key prefix "{ns}" is KEYS[1] without ":rev"; every key below starts
-- with that hash tag, so they all live in the one slot. ARGV[1] is the epoch the client
-- adopted at connect, ARGV[2] the revision mode ('time' or 'sequential'). A script's own
-- arguments start at ARGV[3].
local P = string.sub(KEYS[1], 1, -5)
local K_META = P .. ':meta'        -- epoch (random, set once) and revision mode
local K_REV = P .. ':rev'          -- store revision; absent means 1 (an empty etcd)
local K_COMPACT = P .. ':compact'  -- compact revision; absent means 0
local K_TRIMMED = P .. ':trimmed'  -- revision of the newest entry compaction removed; absent: 0
local K_IDX = P .. ':idx'          -- every live key, score 0, for ZRANGEBYLEX
local K_LOG = P .. ':log'          -- one stream entry per changed key, id <rev>-<n>
local K_DEADLINES = P .. ':leases' -- lease id -> deadline (server ms)
local K_TTLS = P .. ':ttl'         -- lease id -> granted TTL (ms)

-- Checked before anything else: an epoch that is gone or another one means the data this
-- client worked on is lost (restart without persistence, FLUSHALL/FLUSHDB, failover to a
-- replica without it). Changing nothing then is what keeps a second holder from being told
-- it got a lock the first one still believes it holds.
local EPOCH = redis.call('HGET', K_META, 'epoch')
if EPOCH ~= ARGV[1] then
  return cmsgpack.pack({ err = 'epoch', epoch = EPOCH or '' })
end
local TIME_FLOORED = ARGV[2] == 'time'
local function kkey(k) return P .. ':k:' .. k end
local function lkeys(id) return P .. ':lk:' .. id end

-- Keys and values cross as raw bytes in msgpack strings, both ways. Lua compares strings
-- with strcoll, which follows the server's locale and stops at a zero byte, so ordered
-- compares of values use this byte order (memcmp's, as etcd's).
local function bytes_less(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function num(s) return tonumber(s) or 0 end

-- Server time: one clock for every client, so leases do not depend on theirs. NOW is in
-- ms (lease deadlines), NOW_US in µs (about 1.8e15, exact in a Lua double below 2^53).
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local NOW_US = tonumber(t[1]) * 1000000 + tonumber(t[2])

local CUR = num(redis.call('GET', K_REV))
if CUR == 0 then CUR = 1 end

-- The revision of the next write. Time-floored, it is never below the server's clock in
-- µs, so a namespace that lost writes (or all of its data) does not hand out a revision,
-- and with it a fencing token, that it handed out before.
local function next_rev()
  if TIME_FLOORED then return math.max(CUR + 1, NOW_US) end
  return CUR + 1
end

-- Every revision-bearing number is written with %d: tostring (and cjson) keep only 14
-- significant digits, and time-floored revisions have 16.
local function int(n) return string.format('%d', n) end
-- A script writes one revision, in the hash, the log and the revision key: formatted once.
local REV_N, REV_S
local function rev_s(rev)
  if rev ~= REV_N then REV_N, REV_S = rev, int(rev) end
  return REV_S
end

-- The keys this run has read or written (false: known absent). A txn reads a key for its
-- compare, again for the put or delete that follows, and a claim's queue read meets the
-- key it just wrote: one HMGET serves them all. Every write below keeps it current. A
-- record keeps its fields as stored (`f`: v, c, m, ver, l), which the log and the lease's
-- key set reuse instead of formatting the numbers again.
local KVS = {}
local function get(key)
  local kv = KVS[key]
  if kv ~= nil then return kv or nil end
  local f = redis.call('HMGET', kkey(key), 'v', 'c', 'm', 'ver', 'l')
  if not f[2] then
    KVS[key] = false
    return nil
  end
  kv = { k = key, v = f[1], c = num(f[2]), m = num(f[3]), ver = num(f[4]), l = num(f[5]), f = f }
  KVS[key] = kv
  return kv
end

local function enc(kv, keys_only)
  return { k = kv.k, v = keys_only and '' or kv.v, c = kv.c, m = kv.m, ver = kv.ver, l = kv.l }
end

-- One stream entry per changed key; the prev fields are there for prev_kv watches. A put
-- has the new state and, unless the key is new, the prev; a delete has only the prev.
local function log(rev, n, kind, kv, prev)
  local id = rev_s(rev) .. '-' .. int(n)
  local p = prev and prev.f
  if kind == 'D' then
    redis.call('XADD', K_LOG, id, 't', 'D', 'k', kv.k,
      'pv', p[1], 'pc', p[2], 'pm', p[3], 'pver', p[4], 'pl', p[5])
    return
  end
  local f = kv.f
  if prev then
    redis.call('XADD', K_LOG, id, 't', 'P', 'k', kv.k,
      'v', f[1], 'c', f[2], 'm', f[3], 'ver', f[4], 'l', f[5],
      'pv', p[1], 'pc', p[2], 'pm', p[3], 'pver', p[4], 'pl', p[5])
  else
    redis.call('XADD', K_LOG, id, 't', 'P', 'k', kv.k,
      'v', f[1], 'c', f[2], 'm', f[3], 'ver', f[4], 'l', f[5])
  end
end

local function remove_key(prev, rev, n)
  redis.call('DEL', kkey(prev.k))
  KVS[prev.k] = false
  redis.call('ZREM', K_IDX, prev.k)
  if prev.l ~= 0 then redis.call('SREM', lkeys(prev.f[5]), prev.k) end
  log(rev, n, 'D', { k = prev.k }, prev)
end

local function commit(rev)
  CUR = rev
  redis.call('SET', K_REV, rev_s(rev))
end

-- Removes a lease; its keys go in one new revision (none when it has no keys).
local function drop_lease(id)
  local sid = int(id)
  local members = redis.call('SMEMBERS', lkeys(sid))
  redis.call('DEL', lkeys(sid))
  redis.call('ZREM', K_DEADLINES, sid)
  redis.call('HDEL', K_TTLS, sid)
  table.sort(members)
  local rev, n = next_rev(), 0
  for _, key in ipairs(members) do
    local prev = get(key)
    if prev then remove_key(prev, rev, n); n = n + 1 end
  end
  if n > 0 then commit(rev) end
end

-- Expires at most REAP_BATCH (64) due leases, earliest first, so no script runs unbounded;
-- the background reaper repeats while a full batch was due.
local function reap()
  local due = redis.call('ZRANGEBYSCORE', K_DEADLINES, '-inf', NOW, 'LIMIT', '0', '64')
  for _, id in ipairs(due) do drop_lease(tonumber(id)) end
  return #due
end
local REAPED = reap()

local function lease_exists(id)
  return redis.call('HEXISTS', K_TTLS, int(id)) == 1
end
