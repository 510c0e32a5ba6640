--[[
  Claims a chunk of counters into a batch's journal, atomically: a count is always in its
  live key or in a journal, never nowhere. Preceded by collect.lua.

  KEYS[1]  the journal (a hash: one field per chunk, and `open` while chunks may join it)
  KEYS[2]  on one Redis, the journal index (a set of batch ids); on a Redis Cluster, the
           slot's fence (a run token)
  KEYS[3…] the counters
  ARGV[1]  length of the pattern's prefix (the code is the key past it)
  ARGV[2]  the chunk's field
  ARGV[3]  '1' when this chunk creates the journal
  ARGV[4]  the batch id
  ARGV[5]  on a Redis Cluster, this run's token; '' on one Redis
  ARGV[6]  what the batch is for (pattern, table, columns, database), recorded in the
           journal's `for` field so that only a run for the same target recovers it; ''
           records nothing
  Returns {packed, bad} as collect() makes them.
]]
local journal = KEYS[1]
local fenced = ARGV[5] ~= ''
if fenced then
  -- A run whose token is below the fence (a newer run has started) claims nothing.
  local fence = redis.call('GET', KEYS[2])
  if fence and tonumber(fence) > tonumber(ARGV[5]) then
    return redis.error_reply('FENCED a newer run (token ' .. fence .. ') has started since this one (token ' .. ARGV[5] .. ')')
  end
end
if ARGV[3] ~= '1' and redis.call('HEXISTS', journal, 'open') == 0 then
  return redis.error_reply('SEALED journal ' .. journal .. ' was sealed or removed by another run')
end
local packed, bad, n = collect(3, tonumber(ARGV[1]), true)
if n > 0 then
  if ARGV[3] == '1' then
    redis.call('HSET', journal, 'open', '1', ARGV[2], packed)
    if ARGV[6] ~= '' then redis.call('HSET', journal, 'for', ARGV[6]) end
    if not fenced then redis.call('SADD', KEYS[2], ARGV[4]) end
  else
    redis.call('HSET', journal, ARGV[2], packed)
  end
end
return {packed, bad}
