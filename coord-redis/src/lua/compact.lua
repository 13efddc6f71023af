-- Compaction to ARGV[3]: watches can no longer start below it.
local target = tonumber(ARGV[3])
local compacted = num(redis.call('GET', K_COMPACT))
if target <= compacted then return cmsgpack.pack({ err = 'compacted', at = compacted }) end
if target > CUR then return cmsgpack.pack({ err = 'future', rev = CUR }) end
redis.call('SET', K_COMPACT, int(target))
-- The newest entry the trim removes: a watch reader that has not read that far has a gap.
-- (Revisions may be sparse, so the compact revision alone cannot tell.)
local newest = redis.call('XREVRANGE', K_LOG, '(' .. int(target) .. '-0', '-', 'COUNT', 1)
if newest[1] then
  local rev = tonumber(string.match(newest[1][1], '^(%d+)-'))
  if rev > num(redis.call('GET', K_TRIMMED)) then redis.call('SET', K_TRIMMED, int(rev)) end
end
redis.call('XTRIM', K_LOG, 'MINID', int(target) .. '-0')
return cmsgpack.pack({ at = target })
