-- Compaction to ARGV[1]: watches can no longer start below it.
local target = tonumber(ARGV[1])
local compacted = num(redis.call('GET', K_COMPACT))
if target <= compacted then return cjson.encode({ err = 'compacted', at = compacted }) end
if target > CUR then return cjson.encode({ err = 'future', rev = CUR }) end
redis.call('SET', K_COMPACT, string.format('%d', target))
redis.call('XTRIM', K_LOG, 'MINID', string.format('%d-0', target))
return cjson.encode({ at = target })
