-- benches/wrk/leads.lua: durable intake, POST /v1/leads, every request a new
-- lead (its own phone number and email), so that each one is a real insert
-- and decision rather than an update of a lead seen before.
--
--   wrk -t2 -c64 -d60s --latency -s benches/wrk/leads.lua http://HOST:PORT/v1/leads -- API_KEY [FIRST]
--
-- FIRST (default 0) is where each thread's counter starts: a second run into
-- the same database gives a larger one, so that its leads are new people too.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

function init(args)
  state = common.init(args)
  n = tonumber(args[2] or "0")
end

function request()
  n = n + 1
  return wrk.format(nil, nil, nil, common.lead(id, n, state))
end
