#!/usr/bin/env bash
# The revocation feed with 100,000 live entries (SQLite, release): the time to serve all of them
# to a validator starting from nothing (every page, signed), and an incremental poll from the end.
# The validator side (verification with 100,000 entries held vs none) is in
# `cargo bench -p sigil-validator --bench verify`.
#   bench/feed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sigil-target}"
cargo build --release --quiet --bin sigil
command -v sqlite3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sqlite3 >/dev/null; }
BIN="$CARGO_TARGET_DIR/release/sigil"
W=$(mktemp -d)
PID=
trap 'kill $PID 2>/dev/null || true; rm -rf "$W"' EXIT
sig() { "$BIN" --database-url "sqlite://$W/sigil.db" --kek-file "$W/kek" "$@" 2>/dev/null; }
sig realm create r >/dev/null
export RS_SECRET
RS_SECRET=$(sig client create --realm r --id ledger-rs --scope balances:read --audience ledger --introspect \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
sqlite3 "$W/sigil.db" "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000)
  INSERT INTO revocations (realm, kind, value, not_before, created_at, expires_at)
  SELECT 'r', CASE i % 3 WHEN 0 THEN 'jti' WHEN 1 THEN 'sid' ELSE 'client' END, 'entry-' || i,
         strftime('%s', 'now') - 60, strftime('%s', 'now') - 60, strftime('%s', 'now') + 3600 FROM c;"
SIGIL_LOG=warn "$BIN" --database-url "sqlite://$W/sigil.db" --kek-file "$W/kek" serve --bind 127.0.0.1:0 >"$W/serve.out" 2>&1 &
PID=$!
for _ in $(seq 1 100); do grep -q "^listening on" "$W/serve.out" 2>/dev/null && break; sleep 0.1; done
export FEED
FEED="$(awk '/^listening on/ {print $3}' "$W/serve.out")/realms/r/revocations"
export SERVER_PID=$PID
python3 - <<'PY'
import base64, json, os, statistics, time, urllib.request

feed, secret = os.environ["FEED"], os.environ["RS_SECRET"]
auth = "Basic " + base64.b64encode(f"ledger-rs:{secret}".encode()).decode()

fetching = [0.0]

def page(after):
    req = urllib.request.Request(f"{feed}?after={after}", headers={"Authorization": auth})
    s = time.perf_counter()
    with urllib.request.urlopen(req, timeout=30) as res:
        body = res.read()
    fetching[0] += time.perf_counter() - s
    payload = body.split(b".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4))), len(body)

def full():
    after, n, pages, size = 0, 0, 0, 0
    fetching[0] = 0.0
    while True:
        p, b = page(after)
        n, pages, size = n + len(p["entries"]), pages + 1, size + b
        if not (p["more"] and p["next"] > after):
            return fetching[0], n, pages, size, p["next"]
        after = p["next"]

def rss_kib():
    with open(f"/proc/{os.environ['SERVER_PID']}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

rss_before = rss_kib()
page(0)
runs = [full() for _ in range(5)]
rss_after = rss_kib()
took = statistics.median(r[0] for r in runs)
_, n, pages, size, last = runs[0]
inc = statistics.median(timeit for timeit in [(lambda s: (page(last), time.perf_counter() - s)[1])(time.perf_counter()) for _ in range(20)])
print("== revocation feed, 100,000 live entries, SQLite, release, median of 5")
print(f"all entries from nothing      {took * 1000:.0f} ms  ({n} entries, {pages} signed pages, {size / 1e6:.1f} MB; request to last byte, decoding not counted)")
print(f"per page (20,000 entries)     {took * 1000 / pages:.0f} ms")
print(f"incremental poll (nothing new) {inc * 1000:.1f} ms   (median of 20)")
print(f"server RSS                    {rss_before / 1024:.0f} MiB before the first page, {rss_after / 1024:.0f} MiB after (the realm's snapshot held)")
PY
