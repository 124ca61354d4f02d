"""Services without shared secrets, driven by independent clients: certificates made here with the
openssl command line, curl and Python requests presenting them over Sigil's mutual-TLS listener,
Authlib's private_key_jwt, DPoP proofs built with PyJWT, and the example ledger serving HTTPS
with client certificates and enforcing bound tokens."""

import base64
import hashlib
import json
import os
import subprocess
import tempfile
import time
import uuid

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from conftest import LEDGER, SIGIL, _wait_for_listening

SPIFFE = "spiffe://bank.example/ns/payments/sa/ach"


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d):
    """A CA, a server certificate for localhost, two client certificates (the ACH processor's
    SPIFFE ID and another workload's) and a certificate from a second, untrusted CA."""
    def ec_key(name):
        openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name, cwd=d)

    def ca(name, cn):
        ec_key(f"{name}.key")
        openssl("req", "-x509", "-new", "-key", f"{name}.key", "-sha256", "-days", "30",
                "-subj", f"/CN={cn}", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", f"{name}.pem", cwd=d)

    def leaf(name, ca_name, subj, ext):
        ec_key(f"{name}.key")
        openssl("req", "-new", "-key", f"{name}.key", "-subj", subj, "-out", f"{name}.csr", cwd=d)
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca_name}.pem", "-CAkey", f"{ca_name}.key",
                "-CAcreateserial", "-sha256", "-days", "30", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=d)

    ca("ca", "Sigil interop CA")
    ca("rogue", "Rogue CA")
    leaf("server", "ca", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    leaf("ach", "ca", "/CN=ach", f"subjectAltName=URI:{SPIFFE}\nextendedKeyUsage=clientAuth\n")
    leaf("other", "ca", "/CN=other", "subjectAltName=URI:spiffe://bank.example/ns/payments/sa/other\nextendedKeyUsage=clientAuth\n")
    leaf("rogue-ach", "rogue", "/CN=ach", f"subjectAltName=URI:{SPIFFE}\nextendedKeyUsage=clientAuth\n")
    return lambda name: os.path.join(d, name)


def thumbprint(cert_pem_path):
    with open(cert_pem_path, "rb") as f:
        pem = f.read()
    from cryptography import x509
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()


def claims_of(token):
    return jwt.decode(token, options={"verify_signature": False})


class TlsSigil:
    def __init__(self, d, pki):
        self.d = d
        self.pki = pki
        self.db = f"sqlite://{d}/sigil.db"
        self.kek = f"{d}/kek"

    def cli(self, *args):
        out = subprocess.run([SIGIL, "--database-url", self.db, "--kek-file", self.kek, *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip().startswith(("{", "[")) else out.stdout

    def start(self):
        env = {**os.environ, "SIGIL_LOG": "warn",
               "SIGIL_TLS_CERT_FILE": self.pki("server.pem"), "SIGIL_TLS_KEY_FILE": self.pki("server.key"),
               "SIGIL_MTLS_BIND": "127.0.0.1:0"}
        self.proc = subprocess.Popen(
            [SIGIL, "--database-url", self.db, "--kek-file", self.kek, "serve", "--bind", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        first = self.proc.stdout.readline().strip()
        assert first.startswith("mutual TLS on "), first
        self.mtls = first.split(" ", 3)[3]
        self.base = _wait_for_listening(self.proc, "sigil")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def tls_sigil(monkeypatch):
    # This machine exports REQUESTS_CA_BUNDLE, which would override verify= below.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    with tempfile.TemporaryDirectory() as d:
        pki = make_pki(d)
        s = TlsSigil(d, pki)
        s.cli("realm", "create", "payments", "--alg", "ES256")
        s.cli("realm", "set-mtls", "payments", "--ca-file", pki("ca.pem"))
        s.cli("client", "create", "--realm", "payments", "--id", "ach", "--scope", "tx:post:ach balances:read",
              "--audience", "ledger", "--auth", "tls_client_auth", "--tls-san-uri", SPIFFE)
        s.start()
        try:
            yield s
        finally:
            s.stop()


def test_curl_and_requests_with_a_client_certificate_get_bound_tokens(tls_sigil):
    s, pki = tls_sigil, tls_sigil.pki
    token_url = f"{s.mtls}/realms/payments/oauth2/token"
    # Discovery over HTTPS with HTTP/2 (ALPN) names the mutual-TLS alias.
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", pki("ca.pem"), "-o", "/dev/null", "-w", "%{http_version}",
         f"{s.base}/realms/payments/.well-known/openid-configuration"],
        capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout == "2"
    meta = requests.get(f"{s.base}/realms/payments/.well-known/openid-configuration",
                        verify=pki("ca.pem"), timeout=10).json()
    assert meta["mtls_endpoint_aliases"]["token_endpoint"] == token_url
    assert "tls_client_auth" in meta["token_endpoint_auth_methods_supported"]

    out = subprocess.run(
        ["curl", "-sS", "--cacert", pki("ca.pem"), "--cert", pki("ach.pem"), "--key", pki("ach.key"),
         "-d", "grant_type=client_credentials", "-d", "client_id=ach", token_url],
        capture_output=True, text=True, timeout=30, check=True)
    body = json.loads(out.stdout)
    assert body["token_type"] == "Bearer", body
    assert claims_of(body["access_token"])["cnf"]["x5t#S256"] == thumbprint(pki("ach.pem"))

    res = requests.post(token_url, data={"grant_type": "client_credentials", "client_id": "ach"},
                        cert=(pki("ach.pem"), pki("ach.key")), verify=pki("ca.pem"), timeout=10)
    assert res.status_code == 200, res.text
    assert claims_of(res.json()["access_token"])["cnf"]["x5t#S256"] == thumbprint(pki("ach.pem"))

    # Another workload's certificate from the same CA, a rogue CA's certificate with the right
    # SPIFFE ID, and no certificate: invalid_client.
    for cert in [(pki("other.pem"), pki("other.key")), (pki("rogue-ach.pem"), pki("rogue-ach.key")), None]:
        res = requests.post(token_url, data={"grant_type": "client_credentials", "client_id": "ach"},
                            cert=cert, verify=pki("ca.pem"), timeout=10)
        assert res.status_code == 401 and res.json()["error"] == "invalid_client", (cert, res.text)


def test_the_ledger_over_https_accepts_the_token_only_with_the_same_certificate(tls_sigil):
    s, pki = tls_sigil, tls_sigil.pki
    token_url = f"{s.mtls}/realms/payments/oauth2/token"
    res = requests.post(token_url, data={"grant_type": "client_credentials", "client_id": "ach", "scope": "balances:read"},
                        cert=(pki("ach.pem"), pki("ach.key")), verify=pki("ca.pem"), timeout=10)
    token = res.json()["access_token"]
    # The ledger trusts the test CA for the issuer's HTTPS (SSL_CERT_FILE) and for client
    # certificates (--client-ca).
    p = subprocess.Popen(
        [LEDGER, "--issuer", f"{s.base}/realms/payments", "--audience", "ledger", "--bind", "127.0.0.1:0",
         "--tls-cert", pki("server.pem"), "--tls-key", pki("server.key"), "--client-ca", pki("ca.pem")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SSL_CERT_FILE": pki("ca.pem")})
    try:
        ledger = _wait_for_listening(p, "ledger")
        assert ledger.startswith("https://")
        url = f"{ledger}/balances"
        auth = {"Authorization": f"Bearer {token}"}
        ok = requests.get(url, headers=auth, cert=(pki("ach.pem"), pki("ach.key")), verify=pki("ca.pem"), timeout=10)
        assert ok.status_code == 200, ok.text
        for cert in [(pki("other.pem"), pki("other.key")), None]:
            res = requests.get(url, headers=auth, cert=cert, verify=pki("ca.pem"), timeout=10)
            assert res.status_code == 401, (cert, res.text)
            assert res.json()["error"] == "invalid_token"
    finally:
        p.terminate()
        p.wait(timeout=10)


@pytest.fixture
def sigil_with_keys(sigil):
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "pk-1", "alg": "ES256", "use": "sig"})
    path = os.path.join(os.path.dirname(sigil.kek), "jwks.json")
    with open(path, "w") as f:
        json.dump({"keys": [jwk]}, f)
    sigil.cli_json("realm", "create", "payments", "--alg", "ES256")
    sigil.cli_json("client", "create", "--realm", "payments", "--id", "reporting", "--scope", "balances:read",
                   "--audience", "ledger", "--auth", "private_key_jwt", "--jwks-file", path)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return sigil, pem


def test_authlib_private_key_jwt_gets_a_token_and_a_replay_is_refused(sigil_with_keys):
    sigil, pem = sigil_with_keys
    token_url = f"{sigil.issuer('payments')}/oauth2/token"
    # Authlib reads a PEM as an RSA key (an EC key is handed over as a key object, with
    # alg="ES256"), and its assertions live an hour by default: Sigil takes at most five minutes,
    # so `exp` is set. Authlib writes its jti into the claims dict it is given, so each token
    # request gets a fresh PrivateKeyJWT (a reused one would replay its first jti).
    def fetch():
        auth = PrivateKeyJWT(token_url, alg="ES256", claims={"exp": int(time.time()) + 120})
        session = OAuth2Session("reporting", ECKey.import_key(pem), token_endpoint_auth_method=auth)
        return session.fetch_token(token_url, grant_type="client_credentials")
    for _ in range(2):
        assert claims_of(fetch()["access_token"])["sub"] == "reporting"

    # The same assertion twice (built with PyJWT, aud = the issuer): the second is refused.
    now = int(time.time())
    assertion = jwt.encode({"iss": "reporting", "sub": "reporting", "aud": sigil.issuer("payments"),
                            "iat": now, "exp": now + 60, "jti": str(uuid.uuid4())},
                           pem, algorithm="ES256", headers={"kid": "pk-1"})
    form = {"grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion}
    assert requests.post(token_url, data=form, timeout=10).status_code == 200
    res = requests.post(token_url, data=form, timeout=10)
    assert res.status_code == 401 and res.json()["error"] == "invalid_client"


def dpop_proof(key, htm, htu, access_token=None, jti=None, nonce=None):
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    claims = {"jti": jti or str(uuid.uuid4()), "htm": htm, "htu": htu, "iat": int(time.time())}
    if nonce:
        claims["nonce"] = nonce
    if access_token:
        claims["ath"] = base64.urlsafe_b64encode(hashlib.sha256(access_token.encode()).digest()).rstrip(b"=").decode()
    return jwt.encode(claims, key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": jwk})


def test_pyjwt_dpop_proofs_get_bound_tokens_the_ledger_accepts_and_refuses_replayed_or_re_aimed(sigil, ledger_for):
    sigil.cli_json("realm", "create", "payments", "--alg", "ES256")
    client = sigil.cli_json("client", "create", "--realm", "payments", "--id", "app", "--scope", "balances:read",
                            "--audience", "ledger")
    token_url = f"{sigil.issuer('payments')}/oauth2/token"
    key = ec.generate_private_key(ec.SECP256R1())
    res = requests.post(token_url, data={"grant_type": "client_credentials"},
                        auth=("app", client["client_secret"]),
                        headers={"DPoP": dpop_proof(key, "POST", token_url)}, timeout=10)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["token_type"] == "DPoP"
    token = body["access_token"]
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    jkt = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
    assert claims_of(token)["cnf"]["jkt"] == jkt

    ledger = ledger_for(sigil.issuer("payments"))
    url = f"{ledger}/balances"
    proof = dpop_proof(key, "GET", url, token)
    ok = requests.get(url, headers={"Authorization": f"DPoP {token}", "DPoP": proof}, timeout=10)
    assert ok.status_code == 200, ok.text
    refusals = {
        "replayed": {"Authorization": f"DPoP {token}", "DPoP": proof},
        "re-aimed at another URL": {"Authorization": f"DPoP {token}",
                                    "DPoP": dpop_proof(key, "GET", f"{ledger}/transactions/ach", token)},
        "for another method": {"Authorization": f"DPoP {token}", "DPoP": dpop_proof(key, "POST", url, token)},
        "another key": {"Authorization": f"DPoP {token}",
                        "DPoP": dpop_proof(ec.generate_private_key(ec.SECP256R1()), "GET", url, token)},
        "as a bearer token": {"Authorization": f"Bearer {token}"},
    }
    for what, headers in refusals.items():
        res = requests.get(url, headers=headers, timeout=10)
        assert res.status_code == 401, (what, res.text)
        assert "DPoP" in res.headers.get("WWW-Authenticate", ""), what

    # A proof replayed at the token endpoint is refused too.
    proof = dpop_proof(key, "POST", token_url)
    first = requests.post(token_url, data={"grant_type": "client_credentials"},
                          auth=("app", client["client_secret"]), headers={"DPoP": proof}, timeout=10)
    again = requests.post(token_url, data={"grant_type": "client_credentials"},
                          auth=("app", client["client_secret"]), headers={"DPoP": proof}, timeout=10)
    assert first.status_code == 200 and again.status_code == 400
    assert again.json()["error"] == "invalid_dpop_proof"


def test_dpop_server_nonces_a_client_retries_once_with_the_nonce_it_is_given(sigil, ledger_for):
    # SIGIL_DPOP_NONCE_SECS: proofs must carry a server nonce (RFC 9449 §8). A client does what
    # the RFC describes: send, read use_dpop_nonce and DPoP-Nonce, retry once with a new proof.
    sigil.stop()
    sigil.start(SIGIL_DPOP_NONCE_SECS="60")
    sigil.cli_json("realm", "create", "payments", "--alg", "ES256")
    client = sigil.cli_json("client", "create", "--realm", "payments", "--id", "app", "--scope", "balances:read",
                            "--audience", "ledger")
    token_url = f"{sigil.issuer('payments')}/oauth2/token"
    key = ec.generate_private_key(ec.SECP256R1())

    def grant(nonce=None):
        return requests.post(token_url, data={"grant_type": "client_credentials"},
                             auth=("app", client["client_secret"]),
                             headers={"DPoP": dpop_proof(key, "POST", token_url, nonce=nonce)}, timeout=10)
    first = grant()
    assert first.status_code == 400 and first.json()["error"] == "use_dpop_nonce", first.text
    nonce = first.headers["DPoP-Nonce"]
    assert nonce and nonce not in first.text
    for bad in ["", nonce[:-2], nonce[::-1]]:
        res = grant(bad)
        assert res.status_code == 400 and res.json()["error"] == "use_dpop_nonce", (bad, res.text)
    res = grant(nonce)
    assert res.status_code == 200, res.text
    assert res.json()["token_type"] == "DPoP" and res.headers.get("DPoP-Nonce")
    token = res.json()["access_token"]

    # The ledger (the bundled validator) checks the bound token; it asks no nonce of its own.
    ledger = ledger_for(sigil.issuer("payments"))
    url = f"{ledger}/balances"
    ok = requests.get(url, headers={"Authorization": f"DPoP {token}",
                                    "DPoP": dpop_proof(key, "GET", url, token)}, timeout=10)
    assert ok.status_code == 200, ok.text

