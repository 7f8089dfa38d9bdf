-- wrk script for bench/ingest.sh: POST /v1/batch, each request BATCH track
-- events of seeded customers (userId S<seed>-<index>), every event with its
-- own messageId. With MODULO > 0 the counter wraps, so a run resends batches
-- an earlier run sent (the replay: it must add no row).
--   wrk -s bench/ingest.lua URL -- AUTH USERS BATCH MODULO SEED
local auth, users, batch, modulo, seed
local counter = 0
local thread_no = 0
local threads = 0

function setup(thread)
  thread:set("thread_no", threads)
  threads = threads + 1
end

function init(args)
  auth, users, batch, modulo, seed = args[1], tonumber(args[2]), tonumber(args[3]),
    tonumber(args[4]), args[5]
end

function request()
  local n = counter
  if modulo > 0 then n = n % modulo end
  counter = counter + 1
  local now = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local items = {}
  for i = 1, batch do
    local id = n * batch + i
    items[i] = string.format(
      '{"type":"track","userId":"S%s-%d","event":"Viewed Product","messageId":"t%d-%d",' ..
      '"timestamp":"%s","properties":{"product":"sku-%d","price":%d.5,"currency":"EUR"}}',
      seed, id % users, thread_no, id, now, id % 97, id % 300)
  end
  local body = '{"batch":[' .. table.concat(items, ",") .. '],"sentAt":"' .. now .. '"}'
  return wrk.format("POST", "/v1/batch", {
    ["Authorization"] = auth,
    ["Content-Type"] = "application/json",
  }, body)
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("status " .. status .. ": " .. body .. "\n")
  end
end
