--[[
  Raises a Redis Cluster slot's fence to a run's token, unless it is already higher: from
  then on, a claim from a run with a lower token fails (claim.lua).

  KEYS[1] the slot's fence
  ARGV[1] the token
]]
local f = redis.call('GET', KEYS[1])
if not f or tonumber(f) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
