--[[
  Raises a Redis Cluster slot's fence to a run's token, unless it is already higher: from
  then on, a claim from a run with a lower token fails (claim.lua).

  KEYS[1] the slot's fence
  ARGV[1] the token
  Returns the fence after: the token, or a higher one (a newer run's).
]]
local f = tonumber(redis.call('GET', KEYS[1]) or '0')
local t = tonumber(ARGV[1])
if f < t then
  redis.call('SET', KEYS[1], ARGV[1])
  return t
end
return f
