-- A txn (ARGV[3], msgpack): compares on the state before it, then one branch in order.
local req = cmsgpack.unpack(ARGV[3])

local function holds(op, a, b, less)
  if op == '=' then return a == b
  elseif op == '!=' then return a ~= b
  elseif op == '<' then return less(a, b)
  else return less(b, a) end
end
local function number_less(a, b) return a < b end

local function compare(c)
  local kv = get(c.k)
  if c.t == 'v' then
    return kv ~= nil and holds(c.op, kv.v, c.x, bytes_less)
  end
  local field = kv and kv[c.t] or 0
  return holds(c.op, field, c.x, number_less)
end

-- The keys of a range, in key order.
local function keys_in(r)
  if r.key then
    local key = r.key
    if get(key) then return { key } end
    return {}
  end
  local lo = '[' .. r.lo
  if r.lo == '' then lo = '-' end
  local hi = '+'
  if r.hi then hi = '(' .. r.hi end
  return redis.call('ZRANGEBYLEX', K_IDX, lo, hi)
end

-- As coord-memory's store: count before the filters, then filter, sort, limit.
local function range(r, rev)
  local keys = keys_in(r)
  local count = #keys
  if r.co then return { kvs = {}, more = false, count = count, rev = rev } end
  local sel = {}
  for i, key in ipairs(keys) do
    local kv = get(key)
    if kv and not ((r.minc > 0 and kv.c < r.minc) or (r.maxc > 0 and kv.c > r.maxc)) then
      kv.i = i
      table.insert(sel, kv)
    end
  end
  -- table.sort is not stable; the key position breaks ties as a stable sort would.
  if #sel < 2 then
    -- Nothing to order.
  elseif r.sort == 'kd' then
    local n = #sel
    for i = 1, math.floor(n / 2) do sel[i], sel[n - i + 1] = sel[n - i + 1], sel[i] end
  elseif r.sort then
    local f = (r.sort:sub(1, 1) == 'c') and 'c' or 'm'
    local desc = r.sort:sub(2, 2) == 'd'
    table.sort(sel, function(a, b)
      if a[f] ~= b[f] then
        if desc then return a[f] > b[f] end
        return a[f] < b[f]
      end
      return a.i < b.i
    end)
  end
  local more = false
  if r.limit > 0 and #sel > r.limit then
    more = true
    local cut = {}
    for i = 1, r.limit do cut[i] = sel[i] end
    sel = cut
  end
  local out = {}
  for i, kv in ipairs(sel) do out[i] = enc(kv, r.ko) end
  return { kvs = out, more = more, count = count, rev = rev }
end

local succeeded = true
for _, c in ipairs(req.cmp) do
  if not compare(c) then succeeded = false; break end
end
local ops = succeeded and req.ok or req.els

for _, op in ipairs(ops) do
  if op.o == 'put' and op.l ~= 0 and not lease_exists(op.l) then
    return cmsgpack.pack({ err = 'lease', lease = op.l })
  end
end

local rev, n = next_rev(), 0
local responses = {}
for i, op in ipairs(ops) do
  if op.o == 'put' then
    local key = op.k
    local prev = get(key)
    local lease = op.l == 0 and '0' or int(op.l)
    if prev and prev.l ~= 0 and prev.l ~= op.l then
      redis.call('SREM', lkeys(prev.f[5]), key)
    end
    if op.l ~= 0 and not (prev and prev.l == op.l) then
      redis.call('SADD', lkeys(lease), key)
    end
    local ver = prev and prev.ver + 1 or 1
    local f = { op.v, prev and prev.f[2] or rev_s(rev), rev_s(rev), int(ver), lease }
    local kv = { k = key, v = op.v, c = prev and prev.c or rev, m = rev, ver = ver, l = op.l,
                 f = f }
    redis.call('HSET', kkey(key), 'v', f[1], 'c', f[2], 'm', f[3], 'ver', f[4], 'l', f[5])
    KVS[key] = kv
    -- A live key is in the index already.
    if not prev then redis.call('ZADD', K_IDX, '0', key) end
    log(rev, n, 'P', kv, prev)
    n = n + 1
    responses[i] = { p = (op.p and prev) and enc(prev) or false }
  elseif op.o == 'del' then
    local deleted, prevs = 0, {}
    for _, key in ipairs(keys_in(op.r)) do
      local prev = get(key)
      if prev then
        remove_key(prev, rev, n)
        n = n + 1
        deleted = deleted + 1
        if op.p then table.insert(prevs, enc(prev)) end
      end
    end
    responses[i] = { n = deleted, p = prevs }
  else
    -- A read after a write in the same txn reports the new revision, as etcd does.
    responses[i] = range(op.r, n > 0 and rev or CUR)
  end
end
if n > 0 then commit(rev) end
return cmsgpack.pack({ ok = succeeded, rev = CUR, resp = responses, reaped = REAPED })
