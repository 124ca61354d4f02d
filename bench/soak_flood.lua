-- wrk script for bench/soak.sh: one kind of anonymous flood per wrk process, chosen by
-- SOAK_KIND; variants of a kind are sent in turn. Counts answers by status and prints them.
--   authz_unknown  GET /authorize with an unknown client_id
--   authz_valid    GET /authorize with a valid public client (no cookie follow-up)
--   bad_grant      POST /token: unsupported grant_type / malformed Basic header / wrong secret
--   bad_csrf       POST /login with a wrong CSRF token, without and with a sign-in flow cookie
local kind = os.getenv("SOAK_KIND")
local realm = os.getenv("SOAK_REALM")
local issuer = "/realms/" .. realm
local form = { ["Content-Type"] = "application/x-www-form-urlencoded" }

local function basic(s)
  return { ["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = s }
end

local variants = {}
if kind == "authz_unknown" then
  variants = {
    { "GET", issuer .. "/oauth2/authorize?response_type=code&client_id=no-such-client"
      .. "&redirect_uri=https%3A%2F%2Fevil.example%2Fcb&scope=openid&state=s"
      .. "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
      {}, nil },
  }
elseif kind == "authz_valid" then
  variants = {
    { "GET", issuer .. "/oauth2/authorize?response_type=code&client_id=" .. os.getenv("SOAK_UI_CLIENT")
      .. "&redirect_uri=" .. os.getenv("SOAK_REDIRECT_ENC") .. "&scope=openid&state=s"
      .. "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256",
      {}, nil },
  }
elseif kind == "bad_grant" then
  local token = issuer .. "/oauth2/token"
  variants = {
    { "POST", token, basic(os.getenv("SOAK_BASIC_WRONG")), "grant_type=urn:example:unsupported" },
    { "POST", token, basic("Basic %%%not-base64%%%"), "grant_type=client_credentials" },
    { "POST", token, basic(os.getenv("SOAK_BASIC_WRONG")), "grant_type=client_credentials" },
  }
elseif kind == "bad_csrf" then
  local cookie = { ["Content-Type"] = "application/x-www-form-urlencoded",
                   ["Cookie"] = os.getenv("SOAK_FLOW_COOKIE") }
  variants = {
    { "POST", issuer .. "/login", form, "csrf=forged&username=alice&password=guess&code=000000" },
    { "POST", issuer .. "/login", cookie, "csrf=forged&username=alice&password=guess&code=000000" },
  }
else
  error("unknown SOAK_KIND " .. tostring(kind))
end

local i = 0
request = function()
  i = i % #variants + 1
  local v = variants[i]
  return wrk.format(v[1], v[2], v[3], v[4])
end

statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end

done = function(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(total) do
    table.insert(parts, status .. "=" .. n)
  end
  table.sort(parts)
  io.write(string.format("flood %-14s %8d requests %8.0f/s  errors(socket) %d  statuses %s\n",
    kind, summary.requests, summary.requests / (summary.duration / 1e6),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(parts, " ")))
end
