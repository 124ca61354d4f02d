-- wrk script: RFC 7662 introspection of one access token (SIGIL_TOKEN) by a resource server
-- authenticated with HTTP Basic (SIGIL_BASIC).
wrk.method = "POST"
wrk.body = "token=" .. os.getenv("SIGIL_TOKEN")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("SIGIL_BASIC")
