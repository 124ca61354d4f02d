-- wrk script: client_credentials grants with HTTP Basic (credentials from SIGIL_BASIC).
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=" .. (os.getenv("SIGIL_SCOPE") or "tx:post:ach")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. os.getenv("SIGIL_BASIC")
