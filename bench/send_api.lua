-- wrk script for bench/trigger.sh's second phase: POST /v1/send, one receipt
-- to a seeded customer (by userId S<seed>-<n>, each in turn) per request,
-- paced to RATE requests/s overall: request k goes out at start + k/RATE (each
-- connection waits for the next slot), an open loop as long as enough
-- connections are free. Each call has
-- its own Idempotency-Key and carries its send time in epoch milliseconds as
-- data.t: the benchmark measures from it to the relay's 250.
--   wrk -s bench/send_api.lua URL -- AUTH USERS RATE SEED
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
  ffi.C.gettimeofday(tv, nil)
  local ms = tonumber(tv.tv_sec) * 1000 + math.floor(tonumber(tv.tv_usec) / 1000)
  local body = string.format(
    '{"campaign":"receipt","to":"S%s-%d","data":{"order":"A-%d","total":%d.5,"t":%d}}',
    seed, n % users, n, n % 300, ms)
  return wrk.format("POST", "/v1/send", {
    ["Authorization"] = auth,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("bench-%d-%d", ms, n),
  }, body)
end

function response(status, headers, body)
  if status ~= 202 then
    io.stderr:write("status " .. status .. ": " .. body .. "\n")
  end
end
