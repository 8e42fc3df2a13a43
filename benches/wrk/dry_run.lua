-- benches/wrk/dry_run.lua: POST /v1/dry-run with realistic leads and a
-- situation (window closed), and the same bodies to the trivial baseline
-- (`examples/baseline.rs`), so that both servers read the same bytes.
-- Bodies are made once, 4,096 per thread, and sent in turn: at tens of
-- thousands of requests a second, making each one afresh would take CPU the
-- servers need on this two-core machine.
--
--   wrk -t2 -c64 -d10s --latency -s benches/wrk/dry_run.lua http://HOST:PORT/v1/dry-run -- API_KEY

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

function init(args)
  local state = common.init(args)
  state.extra = ',"window":"closed"'
  requests = {}
  for i = 1, 4096 do
    requests[i] = wrk.format(nil, nil, nil, common.lead(id, i, state))
  end
  n = 0
end

function request()
  n = n % #requests + 1
  return requests[n]
end
