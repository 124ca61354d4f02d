#!/usr/bin/env bash
# The store benchmark: SQLite and PostgreSQL side by side in one run, then several nodes on one
# PostgreSQL, then the audit chain's head row on its own.
#
#   bench/stores.sh [sweep] [scale] [chain]     (default: all three)
#
# sweep  one node per store, ES256 client_credentials, wrk -t2 at 16, 32, 64, 128 and 256
#        connections: grants/s, p50, p99, and PostgreSQL's share of SQLite's rate.
# scale  1, 2 and 3 nodes on one PostgreSQL database, each with one runtime thread and driven by
#        its own wrk -t1 with the same connections per node (8, then 32: PER_NODE_CONNS), so each
#        node's load and batches stay the same as nodes are added; once with every node on the
#        audit chain 'main', once with a chain per node (audit_chain = node-1, node-2, ...), and
#        as a control once with each node on a database of its own (nothing shared but the server
#        and the cores):
#        aggregate grants/s, the worst node's p99, audit commit latency and head-row wait (from
#        each node's /metrics, deltas over the run), and CPU time per grant (the nodes plus every
#        PostgreSQL process; wrk excluded). Everything shares this machine's cores.
# chain  `sigil bench-chain`: 1 to 16 concurrent appenders (one per simulated node) on one chain,
#        batches of 32 and 128 records: records/s, batch time, head-row wait and its share.
#
# PostgreSQL is found and started the way scripts/test does it (the local cluster, apt when absent
# and root), or taken from BENCH_DATABASE_URL (a server URL; the bench creates its own database).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sigil-target}"
SECS="${BENCH_SECONDS:-6}"
SECTIONS=("$@"); [ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(sweep scale chain)
CONNS=(${BENCH_CONNS:-16 32 64 128 256})

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
command -v wrk >/dev/null || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

# --- PostgreSQL, as scripts/test finds it ---------------------------------------------------------
if [ -z "${BENCH_DATABASE_URL:-}" ]; then
  if ! command -v pg_lsclusters >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  read -r PGVER PGCLUSTER PGPORT _ < <(pg_lsclusters -h | head -n 1)
  pg_lsclusters -h | head -n 1 | grep -q online || as_root pg_ctlcluster "$PGVER" "$PGCLUSTER" start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$PGPORT" && break; sleep 1; done
  as_root runuser -u postgres -- psql -q -p "$PGPORT" -c "ALTER USER postgres PASSWORD 'postgres'" >/dev/null
  BENCH_DATABASE_URL="postgres://postgres:postgres@127.0.0.1:$PGPORT/postgres"
fi
PG_SERVER="${BENCH_DATABASE_URL%/*}"

cargo build --release --quiet --bin sigil
BIN="$CARGO_TARGET_DIR/release/sigil"
WORK=$(mktemp -d)
PIDS=()
DBS=()
cleanup() {
  stop "${PIDS[@]}"
  for d in "${DBS[@]}"; do psql -q "$BENCH_DATABASE_URL" -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

stop() { local p; for p in "$@"; do kill "$p" 2>/dev/null || true; while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; done; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
new_pg_db() {
  local name="sigil_bench_$$_$1"
  psql -q "$BENCH_DATABASE_URL" -c "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null
  psql -q "$BENCH_DATABASE_URL" -c "CREATE DATABASE $name" >/dev/null
  DBS+=("$name")
  echo "$PG_SERVER/$name"
}
sig() { "$BIN" --database-url "$1" --kek-file "$WORK/kek" "${@:2}"; }
# Creates an ES256 realm and a client on database $1; prints the client's Basic credentials.
setup_realm() {
  sig "$1" realm create bench --alg ES256 >/dev/null
  local secret
  secret=$(sig "$1" client create --realm bench --id bench --scope "tx:post:ach" --audience ledger \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
  printf 'bench:%s' "$secret" | base64 -w0
}
# Starts a node on database $1 at port $2 with metrics at port $3; echoes its pid.
start_node() {
  SIGIL_FAILURES_PER_MINUTE_PER_IP=0 SIGIL_LOG=warn SIGIL_METRICS_BIND="127.0.0.1:$3" \
    SIGIL_DATABASE_POOL_SIZE="${BENCH_POOL:-16}" \
    "$BIN" --database-url "$1" --kek-file "$WORK/kek" serve --bind "127.0.0.1:$2" >>"$WORK/nodes.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && break; sleep 0.1; done
  echo "$pid"
}
# wrk against node port $1 with $2 connections for $3 seconds: "grants p50 p99 non2xx".
drive() {
  local out
  out=$(wrk -t"${4:-2}" -c"$2" -d"${3}s" --latency -s bench/token.lua "http://127.0.0.1:$1/realms/bench/oauth2/token")
  echo "$(echo "$out" | awk '/Requests\/sec/ {print $2}') \
$(echo "$out" | awk '$1=="50%" {print $2}') \
$(echo "$out" | awk '$1=="99%" {print $2}') \
$(echo "$out" | awk '/Non-2xx/ {print $5}' | grep . || echo 0)"
}
# One sample of a node's metric (port $1, name $2).
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1==n {print $2}'; }
# CPU seconds (user+system) of the given pids, and of every process of user postgres.
cpu_of() {
  local hz; hz=$(getconf CLK_TCK)
  for p in "$@"; do cat "/proc/$p/stat" 2>/dev/null; done \
    | awk -v hz="$hz" '{ sub(/^.*\) /, ""); t += $12 + $13 + $14 + $15 } END { printf "%.3f\n", t / hz }'
}
pg_pids() { pgrep -u postgres 2>/dev/null | tr '\n' ' '; }
to_ms() { python3 -c "
import sys
v=sys.argv[1]
print(float(v[:-2]) if v.endswith('ms') else float(v[:-2])/1000 if v.endswith('us') else float(v[:-1])*1000)" "$1"; }

sweep() {
  local sqlite_url="sqlite://$WORK/sweep.db" pg_url
  pg_url=$(new_pg_db sweep)
  declare -A rate p50 p99
  local store url basic port pid c r
  for store in sqlite postgres; do
    if [ "$store" = sqlite ]; then url="$sqlite_url"; else url="$pg_url"; fi
    basic=$(setup_realm "$url")
    port=$(free_port)
    pid=$(start_node "$url" "$port" "$(free_port)"); PIDS+=("$pid")
    export SIGIL_BASIC="$basic"
    drive "$port" 32 2 >/dev/null   # warm-up
    for c in "${CONNS[@]}"; do
      read -r rate[$store,$c] p50[$store,$c] p99[$store,$c] _ < <(drive "$port" "$c" "$SECS")
    done
    stop "$pid"
  done
  echo "== store sweep: one node, ES256 client_credentials, wrk -t2 -d${SECS}s (node, database and wrk share $(nproc) cores; both stores fsync every commit)"
  printf '%-6s | %-28s | %-28s | %s\n' conns "SQLite grants/s  p50  p99" "PostgreSQL grants/s  p50  p99" "PG/SQLite"
  for c in "${CONNS[@]}"; do
    printf '%-6s | %9s %8s %8s | %9s %8s %8s | %.2f\n' "$c" \
      "${rate[sqlite,$c]}" "${p50[sqlite,$c]}" "${p99[sqlite,$c]}" \
      "${rate[postgres,$c]}" "${p50[postgres,$c]}" "${p99[postgres,$c]}" \
      "$(python3 -c "print(${rate[postgres,$c]} / ${rate[sqlite,$c]})")"
  done
}

scale() {
  local per mode
  for per in ${PER_NODE_CONNS:-8 32}; do
    for mode in ${SCALE_MODES:-shared per-node separate-databases}; do scale_at "$per" "$mode"; done
  done
}

scale_at() {
  local per=$1 mode=$2
  case "$mode" in
    shared) echo "== scale-out, one audit chain: N nodes on one PostgreSQL database, each node one runtime thread and its own wrk -t1 -c$per, ${SECS}s" ;;
    per-node) echo "== scale-out, an audit chain per node: N nodes on one PostgreSQL database, each node one runtime thread and its own wrk -t1 -c$per, ${SECS}s" ;;
    *) echo "== control, nothing shared: N nodes each on a database of its own (same server), each node one runtime thread and its own wrk -t1 -c$per, ${SECS}s" ;;
  esac
  printf '%-5s | %-10s | %-9s | %-11s | %-9s | %-12s | %s\n' nodes "grants/s" "worst p99" "audit batch" "commit ms" "head wait ms" "CPU µs/grant: nodes + PostgreSQL = total"
  local n i url basic
  for n in 1 2 3; do
    url=$(new_pg_db "scale${per}_${mode/-/_}_$n")
    basic=$(setup_realm "$url")
    export SIGIL_BASIC="$basic"
    local ports=() mports=() pids=() basics=() urls=()
    for i in $(seq 1 "$n"); do
      if [ "$mode" = separate-databases ] && [ "$i" -gt 1 ]; then
        urls+=("$(new_pg_db "scale${per}_sep_${n}_$i")"); basics+=("$(setup_realm "${urls[-1]}")")
      else
        urls+=("$url"); basics+=("$basic")
      fi
      ports+=("$(free_port)"); mports+=("$(free_port)")
      local chain=main; [ "$mode" = per-node ] && chain="node-$i"
      pids+=("$(SIGIL_AUDIT_CHAIN=$chain TOKIO_WORKER_THREADS=1 start_node "${urls[-1]}" "${ports[-1]}" "${mports[-1]}")"); PIDS+=("${pids[-1]}")
    done
    for i in $(seq 0 $((n - 1))); do SIGIL_BASIC="${basics[$i]}" drive "${ports[$i]}" 16 2 1 >/dev/null & done; wait_jobs
    local m0=() cpu0 cpu1
    for i in $(seq 0 $((n - 1))); do
      m0+=("$(metric "${mports[$i]}" sigil_audit_commit_seconds_sum) $(metric "${mports[$i]}" sigil_audit_batches_total) $(metric "${mports[$i]}" sigil_audit_head_wait_seconds_sum) $(metric "${mports[$i]}" sigil_audit_head_wait_seconds_count) $(metric "${mports[$i]}" sigil_audit_records_total)")
    done
    cpu0=$(cpu_of "${pids[@]}"); pcpu0=$(cpu_of $(pg_pids))
    for i in $(seq 0 $((n - 1))); do SIGIL_BASIC="${basics[$i]}" drive "${ports[$i]}" "$per" "$SECS" 1 >"$WORK/scale.$i" & done; wait_jobs
    cpu1=$(cpu_of "${pids[@]}"); pcpu1=$(cpu_of $(pg_pids))
    local total=0 worst=0 commit=0 batches=0 wait=0 waits=0 records=0
    for i in $(seq 0 $((n - 1))); do
      read -r r _ q _ <"$WORK/scale.$i"
      total=$(python3 -c "print($total + $r)")
      q=$(to_ms "$q"); worst=$(python3 -c "print(max($worst, $q))")
      read -r cs0 b0 ws0 wc0 rc0 <<<"${m0[$i]}"
      cs1=$(metric "${mports[$i]}" sigil_audit_commit_seconds_sum); b1=$(metric "${mports[$i]}" sigil_audit_batches_total)
      ws1=$(metric "${mports[$i]}" sigil_audit_head_wait_seconds_sum); wc1=$(metric "${mports[$i]}" sigil_audit_head_wait_seconds_count)
      rc1=$(metric "${mports[$i]}" sigil_audit_records_total)
      commit=$(python3 -c "print($commit + $cs1 - $cs0)"); batches=$((batches + b1 - b0))
      wait=$(python3 -c "print($wait + $ws1 - $ws0)"); waits=$((waits + wc1 - wc0)); records=$((records + rc1 - rc0))
    done
    local grants; grants=$(python3 -c "print(max($total * $SECS, 1))")
    printf '%-5s | %10.0f | %7.1fms | %6.1f rows | %9.2f | %12.2f | %.1f + %.1f = %.1f\n' "$n" "$total" "$worst" \
      "$(python3 -c "print($records / max($batches, 1))")" \
      "$(python3 -c "print(1000 * $commit / max($batches, 1))")" \
      "$(python3 -c "print(1000 * $wait / max($waits, 1))")" \
      "$(python3 -c "print(1e6 * ($cpu1 - $cpu0) / $grants)")" \
      "$(python3 -c "print(1e6 * ($pcpu1 - $pcpu0) / $grants)")" \
      "$(python3 -c "print(1e6 * ($cpu1 - $cpu0 + $pcpu1 - $pcpu0) / $grants)")"
    stop "${pids[@]}"
    # Every node's records on one chain, intact.
    for u in $(printf '%s\n' "${urls[@]}" | sort -u); do
      "$BIN" --database-url "$u" --kek-file "$WORK/kek" audit verify | sed 's/, head .*//; s/^/      /'
    done
  done
}
wait_jobs() { local j; for j in $(jobs -p); do wait "$j" 2>/dev/null || true; done; }

chain() {
  echo "== audit chain head row: W concurrent appenders (one per simulated node) on one PostgreSQL chain, ${SECS}s each"
  local w b url
  for b in 32 128; do
    for w in 1 2 4 8 16; do
      url=$(new_pg_db "chain${b}_$w")
      SIGIL_DATABASE_POOL_SIZE=$((w + 2)) "$BIN" --database-url "$url" --kek-file "$WORK/kek" \
        bench-chain --writers "$w" --batch "$b" --seconds "$SECS"
    done
  done
}

for s in "${SECTIONS[@]}"; do "$s"; done
