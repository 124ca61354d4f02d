#!/usr/bin/env bash
# Grants without shared secrets, each figure beside its baseline from the same run (server and load
# generator share the machine's cores):
#   1. plain-HTTP ES256 grants vs the ceiling: the same binary's route that only signs a token of
#      the same shape (SIGIL_BENCH_CEILING=1; no client authentication, no audit), same wrk load;
#   2. grants over TLS with keep-alive vs plain HTTP (wrk both);
#   3. grants with a full TLS handshake each (ECDSA P-256 server certificate, resumption off,
#      examples/grant_load --new-connection);
#   4. mutual-TLS grants with keep-alive (tls_client_auth, certificate-bound tokens) vs TLS grants
#      with a client secret (grant_load both);
#   5. private_key_jwt grants (a fresh ES256 assertion per grant: signature check and the jti
#      replay store on the path) vs client-secret grants (grant_load both, plain HTTP).
#   bench/tls.sh            (BENCH_SECONDS=10 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sigil-target}"
S="${BENCH_SECONDS:-10}"
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --bin sigil --example grant_load
BIN="$CARGO_TARGET_DIR/release/sigil"
LOAD="$CARGO_TARGET_DIR/release/examples/grant_load"
W=$(mktemp -d)
PID=
trap 'kill $PID 2>/dev/null || true; rm -rf "$W"' EXIT
sig() { "$BIN" --database-url "sqlite://$W/sigil.db" --kek-file "$W/kek" "$@" 2>/dev/null; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
ratio() { python3 -c "print('%.3f' % ($1 / $2))"; }

# PKI: a CA, an ECDSA P-256 server certificate for localhost, a client certificate with a SPIFFE ID.
ossl() { openssl "$@" >/dev/null 2>&1; }
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/ca.key"
ossl req -x509 -new -key "$W/ca.key" -sha256 -days 2 -subj "/CN=bench CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" -out "$W/ca.pem"
leaf() { # name subject ext
  ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/$1.key"
  ossl req -new -key "$W/$1.key" -subj "$2" -out "$W/$1.csr"
  printf '%b' "$3" > "$W/$1.ext"
  ossl x509 -req -in "$W/$1.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial -days 2 \
    -extfile "$W/$1.ext" -out "$W/$1.pem"
}
leaf server "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
SPIFFE="spiffe://bank.example/ns/payments/sa/ach"
leaf client "/CN=ach" "subjectAltName=URI:$SPIFFE\nextendedKeyUsage=clientAuth\n"
# The private_key_jwt client's key and its JWKS (x, y from the SPKI's uncompressed point).
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/pk.key"
openssl pkey -in "$W/pk.key" -pubout -outform DER 2>/dev/null | python3 -c '
import sys, base64, json
p = sys.stdin.buffer.read()[-64:]
b = lambda x: base64.urlsafe_b64encode(x).rstrip(b"=").decode()
print(json.dumps({"keys": [{"kty": "EC", "crv": "P-256", "x": b(p[:32]), "y": b(p[32:]), "kid": "pk-1", "alg": "ES256", "use": "sig"}]}))' > "$W/jwks.json"

sig realm create r --alg ES256 >/dev/null
sig realm set-mtls r --ca-file "$W/ca.pem" >/dev/null
secret=$(sig client create --realm r --id bench --scope tx:post:ach --audience ledger | json '["client_secret"]')
sig client create --realm r --id ach --scope tx:post:ach --audience ledger \
  --auth tls_client_auth --tls-san-uri "$SPIFFE" >/dev/null
sig client create --realm r --id pk --scope tx:post:ach --audience ledger \
  --auth private_key_jwt --jwks-file "$W/jwks.json" >/dev/null

start() { # extra env...
  local port; port=$(freeport)
  env SIGIL_FAILURES_PER_MINUTE_PER_IP=0 SIGIL_LOG=warn "$@" \
    "$BIN" --database-url "sqlite://$W/sigil.db" --kek-file "$W/kek" serve --bind "127.0.0.1:$port" >"$W/serve.out" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do grep -q "^listening on" "$W/serve.out" 2>/dev/null && break; sleep 0.1; done
  BASE=$(awk '/^listening on/ {print $3}' "$W/serve.out")
  MTLS=$(awk '/^mutual TLS on/ {print $4}' "$W/serve.out")
  sleep 0.5
}
stop() { kill $PID; wait $PID 2>/dev/null || true; PID=; }
export SIGIL_BASIC; SIGIL_BASIC=$(printf 'bench:%s' "$secret" | base64 -w0)
wrk_rate() { wrk -t2 -c64 -d"${S}s" -s bench/token.lua "$1" | awk '/Requests\/sec/ {print $2}'; }
load() { "$LOAD" --seconds "$S" "$@" | awk '/grants_per_sec/ {print $2}'; }

echo "== ES256 client_credentials; server and load generator share the cores; ${S}s each"

start SIGIL_BENCH_CEILING=1
wrk -t2 -c64 -d2s -s bench/token.lua "$BASE/realms/r/oauth2/token" >/dev/null
grants=$(wrk_rate "$BASE/realms/r/oauth2/token")
ceiling=$(wrk_rate "$BASE/bench/ceiling/r")
plain_load=$(load --url "$BASE/realms/r/oauth2/token" --basic "bench:$secret")
pk=$(load --url "$BASE/realms/r/oauth2/token" --client-id pk --assertion-key "$W/pk.key" --kid pk-1 --aud "$BASE/realms/r")
stop
echo "1. plain HTTP grants (wrk -c64)        $grants /s"
echo "   ceiling: sign only, same route shape $ceiling /s"
echo "   grants / ceiling                     $(ratio "$grants" "$ceiling")   (target >= 0.70)"
echo "5. private_key_jwt grants (grant_load)  $pk /s"
echo "   client-secret grants (grant_load)    $plain_load /s"
echo "   private_key_jwt / secret             $(ratio "$pk" "$plain_load")"

start SIGIL_TLS_CERT_FILE="$W/server.pem" SIGIL_TLS_KEY_FILE="$W/server.key" SIGIL_MTLS_BIND=127.0.0.1:0
wrk -t2 -c64 -d2s -s bench/token.lua "$BASE/realms/r/oauth2/token" >/dev/null
tls=$(wrk_rate "$BASE/realms/r/oauth2/token")
handshake=$("$LOAD" --seconds "$S" --url "$BASE/realms/r/oauth2/token" --ca "$W/ca.pem" --basic "bench:$secret" \
  --new-connection --connections 32 | tee "$W/hs.out" | awk '/grants_per_sec/ {print $2}')
tls_load=$(load --url "$BASE/realms/r/oauth2/token" --ca "$W/ca.pem" --basic "bench:$secret")
mtls=$(load --url "$MTLS/realms/r/oauth2/token" --ca "$W/ca.pem" --cert "$W/client.pem" --key "$W/client.key" --client-id ach)
stop
echo "2. TLS grants, keep-alive (wrk -c64)    $tls /s"
echo "   vs plain HTTP above                  $(ratio "$tls" "$grants")   (target >= 0.80)"
echo "3. a full TLS handshake per grant       $handshake /s   (target >= 1500; failed: $(awk '/failed/ {print $2}' "$W/hs.out"))"
echo "4. mTLS grants, keep-alive (grant_load) $mtls /s"
echo "   TLS client-secret grants (grant_load) $tls_load /s"
echo "   mTLS / TLS secret                    $(ratio "$mtls" "$tls_load")"
