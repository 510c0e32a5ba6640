--[[
  Shared by claim.lua and inspect.lua (prepended to each), so that `--dry-run` and `run`
  judge keys alike.

  valid(v): v is a base-10 integer within 64 bits.
  collect(first, plen, take): reads KEYS[first..] with one MGET; returns the valid ones
    packed as `<byte length of code>:<code><value>\n` each (src/model/packed.rs reads it), the bad
    ones as a flat list {key, reason, …}, and how many were packed. With `take`, deletes the
    valid keys. Invalid and wrong-type keys are never touched.
]]
local function valid(v)
  if not string.find(v, '^-?%d+$') then return false end
  if #v < 19 then return true end -- 18 digits cannot overflow: the common case stops here
  local neg = string.sub(v, 1, 1) == '-'
  local d = string.gsub(string.gsub(v, '^-', ''), '^0+', '')
  if #d < 19 then return true end
  if #d > 19 then return false end
  if neg then return d <= '9223372036854775808' end
  return d <= '9223372036854775807'
end

local function collect(first, plen, take)
  local out, bad, del = {}, {}, {}
  if #KEYS < first then return '', bad, 0 end
  -- One MGET and one DEL per chunk, not a GET and a DEL per key: each call from Lua costs
  -- a full command dispatch, and this is most of what a claim costs Redis.
  local vals = redis.call('MGET', unpack(KEYS, first))
  local seen = {}
  for j = 1, #vals do
    local k, v = KEYS[first + j - 1], vals[j]
    -- SCAN may return a key twice (while Redis rehashes), and MGET would then read its count
    -- twice: each key is judged once per chunk.
    if not seen[k] then
      seen[k] = true
      if not v then
        -- MGET answers nil for a hash, list, set… as for a missing key
        if redis.call('EXISTS', k) == 1 then
          bad[#bad + 1] = k; bad[#bad + 1] = 'wrong_type'
        end
      elseif valid(v) then
        del[#del + 1] = k
        local code = string.sub(k, plen + 1)
        out[#out + 1] = #code .. ':' .. code .. v .. '\n'
      else
        bad[#bad + 1] = k; bad[#bad + 1] = 'not_integer'
      end
    end
  end
  if take and #del > 0 then redis.call('DEL', unpack(del)) end
  return table.concat(out), bad, #out
end
