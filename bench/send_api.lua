-- wrk script for bench/trigger.sh's second phase: POST /v1/send, one receipt
-- to a seeded customer (by userId S<seed>-<n>, each in turn) per request,
-- paced to RATE requests/s (bench/pace.lua). Each call has its own
-- Idempotency-Key and carries its send time in epoch milliseconds as data.t:
-- the benchmark measures from it to the relay's 250.
--   wrk -s bench/send_api.lua URL -- AUTH USERS RATE SEED
local pace = dofile("bench/pace.lua")
local auth, users, seed
local counter = 0

function init(args)
  auth, users, seed = args[1], tonumber(args[2]), args[4]
  delay = pace.pacer(tonumber(args[3]))
end

function request()
  local n = counter
  counter = counter + 1
  local ms = math.floor(pace.now_ms())
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
