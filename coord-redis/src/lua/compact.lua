-- Compaction to ARGV[4]: watches can no longer start below it.
local target = tonumber(ARGV[4])
local compacted = num(redis.call('GET', K_COMPACT))
if target <= compacted then return cmsgpack.pack({ err = 'compacted', at = compacted }) end
if target > CUR then return cmsgpack.pack({ err = 'future', rev = CUR }) end
redis.call('SET', K_COMPACT, int(target))
redis.call('XTRIM', K_LOG, 'MINID', int(target) .. '-0')
return cmsgpack.pack({ at = target })
