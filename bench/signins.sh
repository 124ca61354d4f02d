#!/usr/bin/env bash
# Complete sign-ins over HTTP (authorize → sign-in page → passkey or password + TOTP → code →
# token) with many distinct users, against the release server on loopback with a fresh SQLite
# database; the load generator (examples/signin_bench.rs) runs on the same cores. Passwords are
# argon2id at the OWASP parameters (m = 19 MiB, t = 2, p = 1). Prints sign-ins/s, p50/p99 of a
# whole sign-in, and the server's idle and peak RSS beside each mode.
#   bench/signins.sh   (env: BENCH_SECONDS=10, SIGNIN_USERS (300 passkey, 1000 password: each
#                       user signs in about twice in 30 s with TOTP), SIGNIN_CONNS=32,
#                       SIGNIN_MODES="passkey password")
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sigil-target}"
SECONDS_RUN="${BENCH_SECONDS:-10}"

CONNS="${SIGNIN_CONNS:-32}"

cargo build --release --quiet --bin sigil --example signin_bench
BIN="$CARGO_TARGET_DIR/release/sigil"
LOAD="$CARGO_TARGET_DIR/release/examples/signin_bench"
WORK=$(mktemp -d)
PID=
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
rss() { awk -v k="$2" '$1==k":" {printf "%.1f MB", $2/1024}' "/proc/$1/status"; }

for MODE in ${SIGNIN_MODES:-passkey password}; do
  if [ "$MODE" = passkey ]; then USERS="${SIGNIN_USERS:-300}"; else USERS="${SIGNIN_USERS:-1000}"; fi
  DB="sqlite://$WORK/$MODE.db"
  sig() { "$BIN" --database-url "$DB" --kek-file "$WORK/kek" "$@"; }
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  base="http://localhost:$port"
  sig realm create customers --display-name "Bench Bank" >/dev/null
  sig client create --realm customers --id bench --scope openid --audience ledger \
    --redirect-uri http://localhost:9/callback --public >/dev/null
  # Users and their invite links (one process per user: the CLI is the admin path).
  : > "$WORK/invites"
  for i in $(seq 1 "$USERS"); do
    sig user create --realm customers --username "u$i" >/dev/null
    printf 'u%s\t%s\n' "$i" "$(sig --public-url "$base" user invite --realm customers --username "u$i")" >> "$WORK/invites"
  done
  SIGIL_LOG=warn "$BIN" --database-url "$DB" --kek-file "$WORK/kek" --public-url "$base" \
    serve --bind "127.0.0.1:$port" >/dev/null 2>&1 &
  PID=$!
  for _ in $(seq 1 50); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
  idle=$(rss $PID VmRSS)
  if [ -n "${SIGNIN_PERF:-}" ]; then perf record -F 499 -g -p $PID -o "$SIGNIN_PERF.$MODE" >/dev/null 2>&1 & PERF=$!; fi
  export SIGNIN_SERVER_PID=$PID
  result=$(/usr/bin/time -f "load generator CPU %U+%S s" "$LOAD" "$base/realms/customers" "$MODE" "$WORK/invites" "$SECONDS_RUN" "$CONNS" 2>&1 | grep -v "^enrolled")
  if [ -n "${SIGNIN_PERF:-}" ]; then kill -INT $PERF; wait $PERF 2>/dev/null || true; fi
  echo "$result"
  echo "  server RSS idle $idle, peak $(rss $PID VmHWM)"
  kill $PID; wait $PID 2>/dev/null || true; PID=
done
