--[[
  Seals a journal for recovery: removes its `open` field, so that a run that lost its lock
  can add no chunk to it any more (its next claim fails with SEALED instead of being deleted
  unapplied), and returns what it holds.

  KEYS[1] the journal
  KEYS[2] the journal index (one Redis), or the journal again (a cluster's slot, no index)
  ARGV[1] the batch id
  Returns the remaining fields and values, flat; an empty journal leaves the index.
]]
redis.call('HDEL', KEYS[1], 'open')
local all = redis.call('HGETALL', KEYS[1])
if #all == 0 and KEYS[2] ~= KEYS[1] then redis.call('SREM', KEYS[2], ARGV[1]) end
return all
