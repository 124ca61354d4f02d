#!/usr/bin/env bash
# Soak under anonymous floods: does a legitimate client still get its tokens, promptly, while
# anonymous traffic saturates the machine, and does the audit log stay bounded?
#
# Starts the real server on a fresh SQLite database on a random loopback port (under the
# open-file limit systemd gives services by default), creates a realm, a confidential
# client_credentials client and a public sign-in client, then:
#   1. quiet: a legitimate client gets client_credentials tokens one after the other for
#      SOAK_QUIET_SECS (default 10) with nothing else running: its p99;
#   2. flood: for SOAK_SECS (default 60) the same client keeps going while, at the same time,
#      SOAK_SILENT (default 500) silent TCP connections (every fifth an HTTP/2 preface) are held
#      open and reopened when closed, and wrk floods (one process per kind, SOAK_WRK_CONNS
#      connections each) send GET /authorize with an unknown and with a valid client_id (no
#      cookie follow-up), bad grants (unsupported grant_type, malformed Basic header, wrong
#      secret) and bad-CSRF sign-in posts (without and with a sign-in flow cookie).
# Prints the legitimate requests and errors, quiet and flood p99 and their ratio, audit rows
# before/after and the flood's rows per second, the result of `sigil audit verify`, and exits 1
# when a goal is missed:
#   errors == 0; flood p99 <= SOAK_MAX_RATIO (5) x quiet p99; audit rows the floods caused
#   <= SOAK_MAX_FLOOD_ROWS_PER_SEC (1) per second; audit chain intact; no "Too many open files".
#
# The legitimate client connects from 127.0.0.2 and the floods from 127.0.0.1 (two hosts, as far
# as per-address limits go); every connection goes to 127.0.0.1 only, and every loop stops by
# itself. Takes SIGIL_BIN, or builds the release binary into $CARGO_TARGET_DIR.
#   bench/soak.sh
#   SOAK_SECS=20 SIGIL_BIN=target/debug/sigil bench/soak.sh
#   SOAK_KINDS="bad_grant" SOAK_SILENT=0 bench/soak.sh     (one flood kind alone)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sigil-target}"
SOAK_SECS="${SOAK_SECS:-60}"
QUIET_SECS="${SOAK_QUIET_SECS:-10}"
SILENT="${SOAK_SILENT:-500}"
WRK_CONNS="${SOAK_WRK_CONNS:-8}"
NOFILE="${SOAK_NOFILE:-1024}"
MAX_RATIO="${SOAK_MAX_RATIO:-5}"
MAX_FLOOD_ROWS="${SOAK_MAX_FLOOD_ROWS_PER_SEC:-1}"
KINDS="${SOAK_KINDS-authz_unknown authz_valid bad_grant bad_csrf}"

command -v wrk >/dev/null || { echo "soak: wrk is needed (apt-get install wrk)" >&2; exit 2; }
if [ -z "${SIGIL_BIN:-}" ]; then
  cargo build --release --quiet --bin sigil
  SIGIL_BIN="$CARGO_TARGET_DIR/release/sigil"
fi
[ -x "$SIGIL_BIN" ] || { echo "soak: no executable at $SIGIL_BIN" >&2; exit 2; }

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

DB="$WORK/sigil.db"
sig() { SIGIL_LOG=warn "$SIGIL_BIN" --database-url "sqlite://$DB" --kek-file "$WORK/kek" "$@"; }
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

REALM=soak
REDIRECT="https://app.bank.example/callback"
sig realm create "$REALM" >/dev/null
SECRET=$(sig client create --realm "$REALM" --id ledger-job --scope "tx:post:ach" --audience ledger \
  | json_field client_secret)
sig client create --realm "$REALM" --id web-app --scope "openid profile" --audience web-app \
  --redirect-uri "$REDIRECT" --public >/dev/null

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# `ulimit -n` as systemd's default LimitNOFILE; the connection cap follows from it.
( ulimit -n "$NOFILE" && exec "$SIGIL_BIN" --database-url "sqlite://$DB" --kek-file "$WORK/kek" \
    serve --bind "127.0.0.1:$PORT" ) >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER=$!
PIDS+=("$SERVER")
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do curl -sf "$BASE/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$BASE/healthz" >/dev/null || { echo "soak: server did not start" >&2; cat "$WORK/server.err" >&2; exit 2; }

# A sign-in flow cookie for the bad-CSRF posts that carry one.
REDIRECT_ENC=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$REDIRECT")
AUTHZ="$BASE/realms/$REALM/oauth2/authorize?response_type=code&client_id=web-app&redirect_uri=$REDIRECT_ENC&scope=openid&state=s&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
FLOW_COOKIE=$(curl -s -o /dev/null -D - "$AUTHZ" | awk 'tolower($1)=="set-cookie:" {sub(/;.*/, "", $2); print $2; exit}')
[ -n "$FLOW_COOKIE" ] || { echo "soak: /authorize with the valid client set no flow cookie" >&2; exit 2; }

# Warm-up, then the quiet baseline.
python3 bench/soak.py legit "$PORT" "$REALM" ledger-job "$SECRET" 2 >/dev/null
QUIET=$(python3 bench/soak.py legit "$PORT" "$REALM" ledger-job "$SECRET" "$QUIET_SECS")

AUDIT_BEFORE=$(python3 bench/soak.py audit "$DB")
export SOAK_REALM="$REALM" SOAK_UI_CLIENT=web-app SOAK_REDIRECT_ENC="$REDIRECT_ENC" \
  SOAK_FLOW_COOKIE="$FLOW_COOKIE" \
  SOAK_BASIC_WRONG="Basic $(printf 'ledger-job:%s' 'wrong-secret-wrong-secret-wrong-secret-xxx' | base64 -w0)"
python3 bench/soak.py silent "$PORT" "$SILENT" "$SOAK_SECS" >"$WORK/silent.json" &
PIDS+=("$!")
for kind in $KINDS; do
  SOAK_KIND=$kind wrk -t1 -c"$WRK_CONNS" -d"${SOAK_SECS}s" -s bench/soak_flood.lua "$BASE/" \
    >"$WORK/wrk-$kind.out" 2>&1 &
  PIDS+=("$!")
done
sleep 1
FLOOD=$(python3 bench/soak.py legit "$PORT" "$REALM" ledger-job "$SECRET" "$((SOAK_SECS - 2))")
wait "${PIDS[@]:1}" 2>/dev/null || true
sleep 1 # the audit writer's last batch
AUDIT_AFTER=$(python3 bench/soak.py audit "$DB")
VERIFY=$(sig audit verify 2>&1 || true)
EMFILE=$(grep -c "Too many open files" "$WORK/server.err" || true)
RSS_PEAK=$(awk '$1=="VmHWM:" {printf "%.0f MB", $2/1024}' "/proc/$SERVER/status")

python3 - "$QUIET" "$FLOOD" "$AUDIT_BEFORE" "$AUDIT_AFTER" "$(cat "$WORK/silent.json")" \
  "$VERIFY" "$EMFILE" "$SOAK_SECS" "$MAX_RATIO" "$MAX_FLOOD_ROWS" "$NOFILE" "$RSS_PEAK" \
  "$(cat "$WORK"/wrk-*.out | grep '^flood ' || true)" <<'EOF'
import json, sys
(quiet, flood, before, after, silent, verify, emfile, secs, max_ratio, max_rows, nofile, rss,
 floods) = sys.argv[1:]
quiet, flood, before, after, silent = map(json.loads, (quiet, flood, before, after, silent))
secs, max_ratio, max_rows, emfile = float(secs), float(max_ratio), float(max_rows), int(emfile)
ratio = flood["p99_ms"] / quiet["p99_ms"] if quiet["p99_ms"] and flood["p99_ms"] else float("inf")
delta = after["total"] - before["total"]
# Every legitimate token is one audit row (token.issued); the rest came from the floods.
flood_rows = delta - flood["ok"]
rows_per_sec = flood_rows / secs
kinds = {k: after["by_kind"].get(k, 0) - before["by_kind"].get(k, 0) for k in after["by_kind"]}
kinds = {k: v for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]) if v}
print(f"== soak: {secs:.0f} s of floods, server nofile={nofile}, SQLite")
print(f"legit quiet      {quiet['ok']:7d} tokens  {quiet['per_sec']:8.1f}/s  p50 {quiet['p50_ms']} ms  p99 {quiet['p99_ms']} ms  errors {quiet['errors']}")
print(f"legit flood      {flood['ok']:7d} tokens  {flood['per_sec']:8.1f}/s  p50 {flood['p50_ms']} ms  p99 {flood['p99_ms']} ms  max {flood['max_ms']} ms  errors {flood['errors']}")
for s in flood["error_samples"]:
    print(f"  error: {s}")
print(f"p99 ratio        {ratio:.2f}  (goal <= {max_ratio:g})")
print(floods.strip())
print(f"silent conns     opened {silent['opened']}, closed by the server {silent['closed_by_server']}, longest open {silent['longest_open_s']} s, connect failures {silent['connect_failures']}")
print(f"audit rows       before {before['total']}, after {after['total']} (+{delta}: {flood['ok']} legit tokens, {flood_rows} from the floods = {rows_per_sec:.1f}/s; goal <= {max_rows:g}/s)")
print(f"  by kind        {json.dumps(kinds)}")
print(f"flows table      before {before['flows']}, after {after['flows']}")
print(f"audit verify     {verify.strip()}")
print(f"server           'Too many open files' lines: {emfile}; peak RSS {rss}")
missed = []
if quiet["errors"] or flood["errors"]:
    missed.append(f"legitimate errors: {quiet['errors'] + flood['errors']}")
if ratio > max_ratio:
    missed.append(f"p99 ratio {ratio:.2f} > {max_ratio:g}")
if rows_per_sec > max_rows:
    missed.append(f"flood audit rows {rows_per_sec:.1f}/s > {max_rows:g}/s")
if "intact" not in verify:
    missed.append("audit chain not intact")
if emfile:
    missed.append("server ran out of file descriptors")
print("RESULT           " + ("PASS" if not missed else "FAIL: " + "; ".join(missed)))
sys.exit(1 if missed else 0)
EOF
