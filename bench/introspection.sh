#!/usr/bin/env bash
# Introspection (RFC 7662) throughput: a resource server introspecting a live service token, and a
# revoked one, with wrk -c64 on the same 2 cores as the server; beside the same run's grants.
#   bench/introspection.sh            (BENCH_SECONDS=10 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sigil-target}"
S="${BENCH_SECONDS:-10}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin sigil
BIN="$CARGO_TARGET_DIR/release/sigil"
W=$(mktemp -d)
PID=
trap 'kill $PID 2>/dev/null || true; rm -rf "$W"' EXIT
sig() { "$BIN" --database-url "sqlite://$W/sigil.db" --kek-file "$W/kek" "$@" 2>/dev/null; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

sig realm create r --alg ES256 >/dev/null
svc=$(sig client create --realm r --id svc --scope tx:post:ach --audience ledger | json '["client_secret"]')
rs=$(sig client create --realm r --id ledger-rs --scope tx:post:ach --audience ledger --introspect | json '["client_secret"]')
port=$(freeport)
SIGIL_FAILURES_PER_MINUTE_PER_IP=0 SIGIL_LOG=warn "$BIN" --database-url "sqlite://$W/sigil.db" --kek-file "$W/kek" \
  serve --bind "127.0.0.1:$port" >"$W/serve.out" 2>&1 &
PID=$!
for _ in $(seq 1 100); do grep -q "^listening on" "$W/serve.out" 2>/dev/null && break; sleep 0.1; done
BASE="http://127.0.0.1:$port/realms/r/oauth2"
token() { curl -s -u "svc:$svc" -d grant_type=client_credentials "$BASE/token" | json '["access_token"]'; }
live=$(token)
revoked=$(token)
curl -s -o /dev/null -u "svc:$svc" -d "token=$revoked" "$BASE/revoke"
rate() { wrk -t2 -c64 -d"${S}s" -s "$1" "$2" | awk '/Requests\/sec/ {print $2}'; }
export SIGIL_BASIC
SIGIL_BASIC=$(printf 'ledger-rs:%s' "$rs" | base64 -w0)
export SIGIL_TOKEN="$live"
check=$(curl -s -u "ledger-rs:$rs" -d "token=$live" "$BASE/introspect" | json '["active"]')
[ "$check" = "True" ] || { echo "introspection of the live token is not active: $check"; exit 1; }
wrk -t2 -c64 -d2s -s bench/introspect.lua "$BASE/introspect" >/dev/null
active=$(rate bench/introspect.lua "$BASE/introspect")
SIGIL_TOKEN="$revoked"
inactive=$(rate bench/introspect.lua "$BASE/introspect")
SIGIL_BASIC=$(printf 'svc:%s' "$svc" | base64 -w0)
grants=$(rate bench/token.lua "$BASE/token")
echo "== introspection, wrk -t2 -c64, ${S}s each, server and wrk on the same cores (SQLite, ES256)"
echo "introspection of a live token      $active /s   (target >= 10000)"
echo "introspection of a revoked token   $inactive /s"
echo "client_credentials grants (same run) $grants /s"
