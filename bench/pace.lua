-- Shared by bench/trigger.lua and bench/send_api.lua: the wall clock to the
-- millisecond (LuaJIT's ffi, gettimeofday), and pacing to RATE requests/s
-- overall: request k goes out at start + k/RATE (each connection waits for
-- the next slot), an open loop as long as enough connections are free.
--   local pace = dofile("bench/pace.lua")
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_usec; } herald_timeval;
int gettimeofday(herald_timeval *tv, void *tz);
]]
local tv = ffi.new("herald_timeval")
local M = {}

-- Milliseconds since the epoch, with a fraction.
function M.now_ms()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000
end

-- The time as RFC 3339 with milliseconds, UTC.
function M.iso_now()
  ffi.C.gettimeofday(tv, nil)
  return os.date("!%Y-%m-%dT%H:%M:%S", tonumber(tv.tv_sec)) ..
    string.format(".%03dZ", math.floor(tonumber(tv.tv_usec) / 1000))
end

-- A wrk `delay` function pacing requests to `rate` per second.
function M.pacer(rate)
  local start, slot = nil, 0
  return function()
    local now = M.now_ms()
    if start == nil then start = now end
    slot = slot + 1
    local wait = start + slot * 1000 / rate - now
    if wait < 0 then return 0 end
    return math.floor(wait)
  end
end

return M
