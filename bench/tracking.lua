-- wrk script for bench/tracking.sh: GET the open pixels listed in a file (one
-- path per line), rotating through them, with a desktop mail client's UA.
--   wrk -s bench/tracking.lua http://127.0.0.1:8089 -- tokens.txt
local paths = {}
local i = 0

function init(args)
  for line in io.lines(args[1]) do
    paths[#paths + 1] = line
  end
  -- threads start at different points of the list
  i = math.random(#paths)
end

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], {
    ["User-Agent"] = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Thunderbird/128.0",
  })
end
