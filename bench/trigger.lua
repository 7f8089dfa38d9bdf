-- wrk script for bench/trigger.sh: POST /v1/track, one "Checkout Started"
-- event of a seeded customer (userId S<seed>-<n>, each in turn) per request,
-- paced to RATE requests/s overall: request k goes out at start + k/RATE (each
-- connection waits for the next slot), an open loop as long as enough
-- connections are free. Every event
-- carries its own messageId and its send time to the millisecond as
-- `timestamp` (no sentAt, so Herald keeps it as the interaction's time): the
-- benchmark measures from it to the relay's 250.
--   wrk -s bench/trigger.lua URL -- AUTH USERS RATE SEED
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_usec; } herald_timeval;
int gettimeofday(herald_timeval *tv, void *tz);
]]
local tv = ffi.new("herald_timeval")
local auth, users, rate, seed
local start, slot = nil, 0
local counter = 0

function init(args)
  auth, users, rate, seed = args[1], tonumber(args[2]), tonumber(args[3]), args[4]
end

local function now()
  ffi.C.gettimeofday(tv, nil)
  local s = tonumber(tv.tv_sec)
  return os.date("!%Y-%m-%dT%H:%M:%S", s) .. string.format(".%03dZ", math.floor(tonumber(tv.tv_usec) / 1000))
end

local function now_ms()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000
end

function delay()
  local now = now_ms()
  if start == nil then start = now end
  slot = slot + 1
  local wait = start + slot * 1000 / rate - now
  if wait < 0 then return 0 end
  return math.floor(wait)
end

function request()
  local n = counter
  counter = counter + 1
  local body = string.format(
    '{"userId":"S%s-%d","event":"Checkout Started","messageId":"trig-%d","timestamp":"%s",' ..
    '"properties":{"total":%d.5,"currency":"EUR"}}',
    seed, n % users, n, now(), n % 300)
  return wrk.format("POST", "/v1/track", {
    ["Authorization"] = auth,
    ["Content-Type"] = "application/json",
  }, body)
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("status " .. status .. ": " .. body .. "\n")
  end
end
