--[[
  The read-only twin of claim.lua, for `--dry-run` and `status`. Preceded by collect.lua.

  KEYS[1…] the counters
  ARGV[1]  length of the pattern's prefix
  Returns {packed, bad} as collect() makes them; changes nothing.
]]
local packed, bad = collect(1, tonumber(ARGV[1]), false)
return {packed, bad}
