-- wrk script for bench/ingest.sh: GET /v1/customers/{email}, rotating through
-- the emails listed in a file (one per line).
--   wrk -s bench/ingest_get.lua URL -- AUTH FILE
local auth
local paths = {}
local i = 0

function init(args)
  auth = args[1]
  for line in io.lines(args[2]) do
    paths[#paths + 1] = "/v1/customers/" .. line
  end
  i = math.random(#paths)
end

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], { ["Authorization"] = auth })
end
