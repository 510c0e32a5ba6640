--[[
  Deletes a committed batch's chunks from its journal, parking unknown codes' hits first if
  asked. Runs only if the journal still holds the first chunk: parking and deleting happen
  together or not at all, so a retry after a crash can never park twice. The journal leaves
  the index in the same step as its last field goes.

  A Redis out of memory refuses the parking (HINCRBY may grow memory; the script has written
  nothing yet): then what was parked is taken back and the journal is kept, so that the next
  run parks all of it. A field that would overflow is a code's own problem: its hits are not
  parked (the ledger has them) and the rest goes on.

  KEYS[1] the journal
  KEYS[2] the unknown-codes hash (code → hits) when there are codes to park; else the
          journal again, so that a user that never parks need not be allowed the hash
  KEYS[3] the journal index (one Redis), or the journal again (a cluster's slot, no index)
  ARGV[1] the batch id
  ARGV[2] the number n of chunk fields; ARGV[3 … n+2] the fields
  ARGV[n+3 …] code, hits pairs to park
  Returns {1, {code, why, …} not parked} when it deleted; {0, {}} when the chunks were
  already gone; {2, {why}} when it parked nothing and kept the journal.
]]
local n = tonumber(ARGV[2])
local indexed = KEYS[3] ~= KEYS[1]
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 0 then
  if indexed and redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
  return {0, {}}
end
local failed, parked = {}, {}
for i = n + 3, #ARGV, 2 do
  local r = redis.pcall('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'OOM', 1, true) then
      for j = 1, #parked do
        redis.call('HINCRBY', KEYS[2], ARGV[parked[j]], -tonumber(ARGV[parked[j] + 1]))
      end
      return {2, {r.err}}
    end
    failed[#failed + 1] = ARGV[i]; failed[#failed + 1] = r.err
  else
    parked[#parked + 1] = i
  end
end
redis.call('HDEL', KEYS[1], 'open', unpack(ARGV, 3, n + 2))
-- All that may be left is what the journal was for: then the journal goes.
local rest = redis.call('HGETALL', KEYS[1])
if #rest == 2 and rest[1] == 'for' then redis.call('DEL', KEYS[1]) end
if indexed and redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
return {1, failed}
