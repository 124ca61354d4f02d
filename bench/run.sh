#!/usr/bin/env bash
# Load benchmark: builds release, starts the real server on loopback with a fresh SQLite database,
# drives client_credentials grants with wrk (64 connections), and in the same run measures the raw
# in-process signing rate of the same key. Prints grants/s, p50/p99, raw signs/s, their ratio, idle
# and peak RSS; then the validator's verify rate against raw ring verification, and the latency of
# a wrong secret next to an unknown client; then the idle RSS after 100 failed password sign-ins
# (each checks an argon2 hash with a 19 MiB block).
# Then bench/stores.sh: SQLite and PostgreSQL side by side over a concurrency sweep, 1 to 3 nodes on
# one PostgreSQL, and the audit chain's head row (BENCH_STORES=0 skips it).
#   bench/run.sh [ES256|RS256|EdDSA ...]   (default: ES256 RS256)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sigil-target}"
DURATION="${BENCH_SECONDS:-10}"
ALGS=("$@"); [ ${#ALGS[@]} -gt 0 ] || ALGS=(ES256 RS256)

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin sigil
BIN="$CARGO_TARGET_DIR/release/sigil"
WORK=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
PID=

rss() { awk -v k="$2" '$1==k":" {print $2/1024 " MB"}' "/proc/$1/status"; }
sig() { "$BIN" --database-url "sqlite://$WORK/sigil.db" --kek-file "$WORK/kek" "$@"; }

for ALG in "${ALGS[@]}"; do
  realm=$(echo "bench-$ALG" | tr 'A-Z' 'a-z')
  sig realm create "$realm" --alg "$ALG" >/dev/null
  secret=$(sig client create --realm "$realm" --id bench --scope "tx:post:ach" --audience ledger \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  SIGIL_FAILURES_PER_MINUTE_PER_IP=0 SIGIL_LOG=warn "$BIN" --database-url "sqlite://$WORK/sigil.db" --kek-file "$WORK/kek" \
    serve --bind "127.0.0.1:$port" >/dev/null 2>&1 &
  PID=$!
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  sleep 1
  idle=$(rss $PID VmRSS)
  url="http://127.0.0.1:$port/realms/$realm/oauth2/token"
  export SIGIL_BASIC=$(printf 'bench:%s' "$secret" | base64 -w0)
  wrk -t2 -c64 -d2s -s bench/token.lua "$url" >/dev/null   # warm-up
  out=$(wrk -t2 -c64 -d"${DURATION}s" --latency -s bench/token.lua "$url")
  grants=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
  peak=$(rss $PID VmHWM)

  # Same-run baselines: raw signing on both cores with the server idle.
  raw=$(sig bench-sign --realm "$realm" --seconds 3 --threads 2 | awk '{print $2}')

  # Wrong secret vs unknown client: same answer, compare latency.
  export SIGIL_BASIC=$(printf 'bench:%s' "wrong-secret-wrong-secret-wrong-secret-xxx" | base64 -w0)
  wrong=$(wrk -t1 -c8 -d3s --latency -s bench/token.lua "$url" | awk '$1=="50%" {print $2}')
  export SIGIL_BASIC=$(printf 'nobody:%s' "wrong-secret-wrong-secret-wrong-secret-xxx" | base64 -w0)
  unknown=$(wrk -t1 -c8 -d3s --latency -s bench/token.lua "$url" | awk '$1=="50%" {print $2}')
  kill $PID; wait $PID 2>/dev/null || true; PID=

  echo "== $ALG client_credentials, wrk -t2 -c64 -d${DURATION}s (server and wrk share 2 cores)"
  echo "grants_per_sec      $grants   (non-2xx: ${non2xx:-0})"
  echo "latency_p50         $p50"
  echo "latency_p99         $p99"
  echo "raw_signs_per_sec   $raw   (2 threads, in-process, same key)"
  python3 -c "print('grants_vs_raw_sign  %.3f' % ($grants / $raw))"
  echo "rss_idle            $idle"
  echo "rss_peak            $peak"
  echo "p50_wrong_secret    $wrong"
  echo "p50_unknown_client  $unknown"
done

# Failed password sign-ins, the browser's way: authorize (a sigil_flow cookie, 303 to /login),
# the sign-in page (its CSRF token), the form posted with an unknown user (the same argon2 work as
# a wrong password). The per-address throttle (30 failures a minute) would skip argon2, so each
# block of 25 comes from another loopback source address (all of 127/8 is local on Linux).
signin_rss() {
  local realm=bench-login port issuer jar html csrf code i src bad=0
  sig realm create "$realm" >/dev/null
  sig client create --realm "$realm" --id app --public --scope balances:read --audience ledger \
    --redirect-uri https://app.example/cb >/dev/null
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  SIGIL_LOG=warn "$BIN" --database-url "sqlite://$WORK/sigil.db" --kek-file "$WORK/kek" \
    serve --bind "127.0.0.1:$port" >/dev/null 2>&1 &
  PID=$!
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  sleep 1
  local before; before=$(rss $PID VmRSS)
  issuer="http://127.0.0.1:$port/realms/$realm"
  jar="$WORK/cookies"
  for i in $(seq 1 "${SIGNINS:-100}"); do
    src="127.0.0.$((2 + i / 25))"
    rm -f "$jar"
    curl -s --interface "$src" -c "$jar" -b "$jar" -o /dev/null \
      "$issuer/oauth2/authorize?response_type=code&client_id=app&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&scope=openid&state=s&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
    html=$(curl -s --interface "$src" -c "$jar" -b "$jar" "$issuer/login")
    csrf=$(printf '%s' "$html" | sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' | head -1)
    code=$(curl -s --interface "$src" -c "$jar" -b "$jar" -o /dev/null -w '%{http_code}' \
      --data-urlencode "csrf=$csrf" --data-urlencode "username=nobody-$i" \
      --data-urlencode "password=not the password" --data-urlencode "code=123456" "$issuer/login")
    [ "$code" = 401 ] || bad=$((bad + 1))
  done
  sleep 2
  echo "== password sign-in memory: ${SIGNINS:-100} failed sign-ins (argon2id m=19 MiB), one at a time"
  echo "rss_idle_before     $before"
  echo "rss_idle_after      $(rss $PID VmRSS)   (goal <= 20 MB; not 401: $bad)"
  echo "rss_peak            $(rss $PID VmHWM)"
  kill $PID; wait $PID 2>/dev/null || true; PID=
}
signin_rss

echo "== validator: Validator::validate vs raw ring verify (same key, same token, one core)"
cargo bench -q -p sigil-validator --bench verify 2>/dev/null | grep -E '_per_sec|ratio'

if [ "${BENCH_STORES:-1}" != 0 ]; then
  bash bench/stores.sh
fi
