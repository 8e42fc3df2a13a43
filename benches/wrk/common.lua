-- benches/wrk/common.lua: what the wrk scripts of benches/wrk.sh share.
-- Loaded with dofile by leads.lua and dry_run.lua (wrk has no module path of
-- its own). It makes realistic leads for the bundled `events` playbook, and
-- defines wrk's `setup`, `response` and `done` to count every answer that is
-- not a 2xx: wrk's own summary counts only statuses from 400 up, and never
-- says what the server answered.

local M = {}

local first_names = {
  "Aisha", "Riya", "Kabir", "Meera", "Arjun", "Sana", "Vikram", "Ananya",
  "Rohan", "Priya", "Farah", "Dev", "Ishaan", "Neha", "Zoya", "Aditya",
}
local last_names = {
  "Khan", "Sharma", "Mehta", "Nair", "Iyer", "Kapoor", "Reddy", "Das",
  "Menon", "Gupta", "Bose", "Rao", "Singh", "Joshi", "Pillai", "Verma",
}
-- Goa and Mumbai take the `goa_options` rule, the others `qualified_enquiry`.
local cities = { "Goa", "Mumbai", "Pune", "Delhi", "Jaipur", "Udaipur", "Bengaluru", "Goa" }
local event_types = { "wedding", "birthday", "corporate", "other" }
local packages = { "silver", "gold", "platinum" }
local channels = { "instagram", "web_form", "lead_ad", "instagram" }
local evidence = {
  instagram = "Ticked 'Message me on WhatsApp' in the Instagram lead form",
  web_form = "Checked 'Send me updates on WhatsApp' on the enquiry form",
  lead_ad = "Answered yes to 'Can we WhatsApp you?' in the lead ad",
}
local campaigns = { "wedding-season", "diwali-offsites", "birthday-bash", "always-on" }

-- Dates relative to today, so `event_date within next 365 days` holds as it
-- would for real enquiries; computed once, not per request.
local function dates(now)
  local out = {}
  for i = 1, 12 do
    out[i] = os.date("!%Y-%m-%d", now + (20 + i * 25) * 86400)
  end
  return out
end

-- The intents in the proportions an events brand sees: mostly enquiries.
local intents = {
  "event_enquiry", "event_enquiry", "event_enquiry", "event_enquiry",
  "event_enquiry", "event_enquiry", "pricing", "pricing",
  "venue_visit", "event_enquiry", "complaint", "event_enquiry",
  "event_enquiry", "pricing", "event_enquiry", "event_enquiry",
}

local function line(intent, city, guests, event_type, package)
  if intent == "pricing" then
    return string.format("How much is the %s package for about %d guests in %s?", package, guests, city)
  elseif intent == "venue_visit" then
    return string.format("Can we come and see the %s venue this weekend?", city)
  elseif intent == "complaint" then
    return "I filled the form twice last week and nobody called back."
  end
  return string.format("Hi! Planning a %s in %s, around %d guests. Budget about \226\130\185%d lakh.",
    event_type, city, guests, 3 + guests % 20)
end

-- Lead `n` of wrk thread `t` (1-based): a distinct Indian mobile number
-- (98, the thread, seven digits of the counter; valid for the demo
-- account's region IN), typed the ways forms deliver them.
function M.lead(t, n, state)
  local first = first_names[n % #first_names + 1]
  local last = last_names[(math.floor(n / #first_names) + t) % #last_names + 1]
  local digits = string.format("98%d%07d", t, n % 10000000)
  local phone
  if n % 3 == 0 then
    phone = "+91 " .. digits:sub(1, 5) .. " " .. digits:sub(6)
  elseif n % 3 == 1 then
    phone = "+91" .. digits
  else
    phone = "0" .. digits -- national form, read with the account's region
  end
  local intent = intents[n % #intents + 1]
  local city = cities[math.floor(n / 3) % #cities + 1]
  local channel = channels[math.floor(n / 5) % #channels + 1]
  local guests = 30 + (n * 37) % 300 -- one in ten is 300 or more: `big_event`
  local event_type = event_types[math.floor(n / 7) % #event_types + 1]
  local package = packages[math.floor(n / 11) % #packages + 1]
  local consent = n % 8 ~= 0 -- one lead in eight did not opt in
  local fields = string.format('{"city":"%s","event_date":"%s","guests":%d,"event_type":"%s"',
    city, state.dates[n % #state.dates + 1], guests, event_type)
  if intent == "pricing" then
    fields = fields .. string.format(',"package":"%s"', package)
  end
  if n % 10 == 0 then
    fields = fields .. string.format(',"budget_inr":%d', 500000 + (n % 40) * 100000)
  end
  fields = fields .. "}"
  local email = ""
  if channel ~= "instagram" then
    email = string.format('"email":"%s.%s.%d.%d@example.com",', first:lower(), last:lower(), t, n)
  end
  local consent_json
  if consent then
    consent_json = string.format('{"whatsapp":true,"evidence":"%s"}', evidence[channel])
  else
    consent_json = '{"whatsapp":false}'
  end
  return string.format(
    '{"name":"%s %s","phone":"%s",%s"channel":"%s","intent":"%s","playbook":"events",' ..
    '"consent":%s,"fields":%s,"tags":["%s"],' ..
    '"transcript":[{"channel":"%s","from":"lead","text":"%s","at":"%s"}]%s}',
    first, last, phone, email, channel, intent, consent_json, fields,
    campaigns[n % #campaigns + 1], channel, line(intent, city, guests, event_type, package),
    state.stamp, state.extra or "")
end

function M.state(now)
  return { dates = dates(now), stamp = os.date("!%Y-%m-%dT%H:%M:%SZ", now - 120) }
end

-- What both scripts' `init` does first: POST with the API key (the first
-- argument after `--`) as JSON, and this thread's error counters at zero.
-- Returns the lead-making state for today.
function M.init(args)
  assert(args[1], "give the API key after --")
  wrk.method = "POST"
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  wrk.headers["Content-Type"] = "application/json"
  non2xx = 0
  first_error = ""
  return M.state(os.time())
end

-- The wrk callbacks, set here for both scripts. `threads` is kept by `setup`
-- in the main Lua state, the same one `done` runs in, so `done` can read each
-- thread's counters.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

-- Counts answers outside 2xx, and keeps the first one to show why.
function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_error == "" then
      first_error = status .. " " .. body:sub(1, 300)
    end
  end
end

-- One machine-readable line for benches/wrk.sh, after wrk's own report.
function done(summary, latency, requests)
  local bad, first = 0, ""
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non2xx")
    local e = thread:get("first_error")
    if first == "" and e ~= "" then
      first = e
    end
  end
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT requests=%d seconds=%.2f rps=%.0f ok_rps=%.0f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f non2xx=%d socket_errors=%d\n",
    summary.requests, seconds, summary.requests / seconds, (summary.requests - bad) / seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, bad, e.connect + e.read + e.write + e.timeout))
  if first ~= "" then
    io.write("FIRST_ERROR " .. first .. "\n")
  end
end

return M
