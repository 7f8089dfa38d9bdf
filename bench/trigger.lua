-- wrk script for bench/trigger.sh: POST /v1/track, one "Checkout Started"
-- event of a seeded customer (userId S<seed>-<n>, each in turn) per request,
-- paced to RATE requests/s (bench/pace.lua). Every event carries its own
-- messageId and its send time to the millisecond as `timestamp` (no sentAt,
-- so Herald keeps it as the interaction's time): the benchmark measures from
-- it to the relay's 250.
--   wrk -s bench/trigger.lua URL -- AUTH USERS RATE SEED
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
  local body = string.format(
    '{"userId":"S%s-%d","event":"Checkout Started","messageId":"trig-%d","timestamp":"%s",' ..
    '"properties":{"total":%d.5,"currency":"EUR"}}',
    seed, n % users, n, pace.iso_now(), n % 300)
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
