--[[
  Seals a journal for recovery: removes its `open` field, so that a run that lost its lock
  can add no chunk to it any more (its next claim fails with SEALED instead of being deleted
  unapplied), and returns what it holds. A journal that records another target in its `for`
  field is another flusher's: it is left as it is. (HGETALL, not HGET: the least-privilege
  ACL in the README allows the one, not the other.)

  KEYS[1] the journal
  KEYS[2] the journal index (one Redis), or the journal again (a cluster's slot, no index)
  ARGV[1] the batch id
  ARGV[2] the target of the run that seals (its `for`)
  Returns {'other', its target} for another flusher's journal; else {'ours', its fields and
  values, flat}. A journal without chunks is deleted, and leaves the index.
]]
local all = redis.call('HGETALL', KEYS[1])
local chunks = 0
for i = 1, #all, 2 do
  if all[i] == 'for' then
    if all[i + 1] ~= ARGV[2] then return {'other', all[i + 1]} end
  elseif all[i] ~= 'open' then
    chunks = chunks + 1
  end
end
if chunks == 0 then
  redis.call('DEL', KEYS[1])
  if KEYS[2] ~= KEYS[1] then redis.call('SREM', KEYS[2], ARGV[1]) end
else
  redis.call('HDEL', KEYS[1], 'open')
end
return {'ours', all}
