--[[
  Deletes a committed batch's chunks from its journal, parking unknown codes' hits first if
  asked. Runs only if the journal still holds the first chunk: parking and deleting happen
  together or not at all, so a retry after a crash can never park twice. The journal leaves
  the index in the same step as its last field goes.

  KEYS[1] the journal
  KEYS[2] the unknown-codes hash (code → hits)
  KEYS[3] the journal index (one Redis), or the journal again (a cluster's slot, no index)
  ARGV[1] the batch id
  ARGV[2] the number n of chunk fields; ARGV[3 … n+2] the fields
  ARGV[n+3 …] code, hits pairs to park
  Returns {1 if it deleted, 0 if the chunks were already gone; the codes that could not be
  parked}.
]]
local n = tonumber(ARGV[2])
local indexed = KEYS[3] ~= KEYS[1]
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 0 then
  if indexed and redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
  return {0, {}}
end
local failed = {}
for i = n + 3, #ARGV, 2 do
  local r = redis.pcall('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  if type(r) == 'table' then failed[#failed + 1] = ARGV[i] end
end
redis.call('HDEL', KEYS[1], 'open', unpack(ARGV, 3, n + 2))
-- All that may be left is what the journal was for: then the journal goes.
local rest = redis.call('HGETALL', KEYS[1])
if #rest == 2 and rest[1] == 'for' then redis.call('DEL', KEYS[1]) end
if indexed and redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
return {1, failed}
