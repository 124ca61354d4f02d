"""Back-Channel Logout 1.0 with an independent relying party: a Python HTTP server that verifies
each logout token with PyJWT against Sigil's JWKS (signature, `iss`, `aud`, `typ: logout+jwt`,
`events`, no `nonce`) and refuses a `jti` it has seen. The user signs in with Authlib and signs
out through the end-session endpoint (the URL built with Authlib's URL helper); the relying party
is down, the Sigil node that recorded the logout is killed, and the next node on the same
database delivers it once."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
import pyotp
import pytest
import requests
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.integrations.requests_client import OAuth2Session
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import SIGIL, _wait_for_listening
from test_signin import PASSWORD, REDIRECT, field, sign_in

SIGNED_OUT = "http://localhost:8765/signed-out"
EVENT = "http://schemas.openid.net/event/backchannel-logout"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    """One `sigil serve` process on a fixed port, so a restarted node keeps the issuer."""

    def __init__(self, workdir, port):
        self.db = f"sqlite://{workdir}/sigil.db"
        self.file = f"{workdir}/sigil.db"
        self.kek = f"{workdir}/kek"
        self.base = f"http://127.0.0.1:{port}"
        self.port = port
        self.proc = None

    def cli(self, *args):
        return subprocess.run(
            [SIGIL, "--database-url", self.db, "--kek-file", self.kek, "--public-url", self.base, *args],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout

    def start(self):
        self.proc = subprocess.Popen(
            [SIGIL, "--database-url", self.db, "--kek-file", self.kek, "--public-url", self.base,
             "serve", "--bind", f"127.0.0.1:{self.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "SIGIL_LOG": "warn", "SIGIL_LOGOUT_POLL_MS": "200"},
        )
        _wait_for_listening(self.proc, "sigil")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def query(self, sql):
        with sqlite3.connect(self.file, timeout=10) as c:
            return c.execute(sql).fetchall()


class RelyingParty:
    """The app's back-channel logout endpoint, as an app would write it with PyJWT."""

    def __init__(self, port, issuer, client_id, jwks_uri):
        self.accepted, self.refused, self.seen = [], [], set()
        rp = self
        keys = jwt.PyJWKClient(jwks_uri, cache_keys=False)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
                token = parse_qs(body).get("logout_token", [""])[0]
                try:
                    assert self.headers["Content-Type"] == "application/x-www-form-urlencoded"
                    assert jwt.get_unverified_header(token)["typ"] == "logout+jwt"
                    claims = jwt.decode(
                        token, keys.get_signing_key_from_jwt(token).key, algorithms=["ES256"],
                        audience=client_id, issuer=issuer,
                        options={"require": ["iss", "aud", "iat", "exp", "jti", "events", "sid"]},
                    )
                    assert EVENT in claims["events"] and claims["events"][EVENT] == {}
                    assert "nonce" not in claims
                    assert claims["jti"] not in rp.seen, "replayed"
                    rp.seen.add(claims["jti"])
                except Exception as e:  # any failed check is a 400, as the spec asks
                    rp.refused.append((token, repr(e)))
                    self.send_response(400)
                    self.send_header("Cache-Control", "no-store")
                    self.end_headers()
                    return
                rp.accepted.append((token, claims))
                self.send_response(200)
                self.send_header("Cache-Control", "no-store")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def wait_until(check, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_logout_reaches_the_app_once_even_when_the_node_dies_before_sending_it():
    with tempfile.TemporaryDirectory() as d:
        port, rp_port = free_port(), free_port()
        a = Node(d, port)
        a.start()
        b = None
        rp = None
        try:
            a.cli("realm", "create", "customers")
            a.cli("group", "create", "--realm", "customers", "--name", "retail", "--scope", "balances:read")
            client = json.loads(a.cli(
                "client", "create", "--realm", "customers", "--id", "web-banking",
                "--scope", "balances:read", "--audience", "ledger", "--redirect-uri", REDIRECT,
                "--post-logout-redirect-uri", SIGNED_OUT,
                "--backchannel-logout-uri", f"http://127.0.0.1:{rp_port}/backchannel-logout",
            ))
            assert client["backchannel_logout_uri"].endswith("/backchannel-logout")
            a.cli("user", "create", "--realm", "customers", "--username", "bob", "--group", "retail")
            invite = a.cli("user", "invite", "--realm", "customers", "--username", "bob").strip()
            browser = requests.Session()
            page = browser.get(invite, timeout=10).text
            totp = pyotp.TOTP(__import__("re").search(r'data-secret="([A-Z2-7]+)"', page).group(1))
            res = browser.post(f"{a.base}/realms/customers/enrol", timeout=10,
                               data={"csrf": field(page, "csrf"), "password": PASSWORD, "code": totp.now()})
            assert res.status_code == 200
            meta = requests.get(f"{a.base}/realms/customers/.well-known/openid-configuration", timeout=10).json()
            assert meta["backchannel_logout_supported"] is True
            assert meta["backchannel_logout_session_supported"] is True

            app = OAuth2Session(client["client_id"], client["client_secret"], scope="openid balances:read",
                                redirect_uri=REDIRECT, code_challenge_method="S256")
            verifier = generate_token(48)
            url, _ = app.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier,
                                                  nonce=generate_token(16))
            callback = sign_in(meta, totp, browser, url)
            token = app.fetch_token(meta["token_endpoint"], authorization_response=callback,
                                    code_verifier=verifier)
            id_claims = jwt.decode(token["id_token"], options={"verify_signature": False})

            # RP-initiated logout, the URL built with Authlib's helper: a post-logout URI off by
            # one character is refused with a page and no redirect; the registered one ends it.
            state = generate_token(12)
            off = add_params_to_uri(meta["end_session_endpoint"], [
                ("id_token_hint", token["id_token"]), ("post_logout_redirect_uri", SIGNED_OUT + "x"),
                ("state", state)])
            res = browser.get(off, allow_redirects=False, timeout=10)
            assert res.status_code == 400 and "Location" not in res.headers
            assert a.query("SELECT COUNT(*) FROM sessions") == [(1,)]
            good = add_params_to_uri(meta["end_session_endpoint"], [
                ("id_token_hint", token["id_token"]), ("post_logout_redirect_uri", SIGNED_OUT),
                ("state", state)])
            res = browser.get(good, allow_redirects=False, timeout=10)
            assert res.status_code == 303
            assert res.headers["Location"] == f"{SIGNED_OUT}?state={state}"

            # The app is down: node A tries, fails, schedules a retry; then A dies. (Waiting for the
            # recorded failure, not the claim: a node killed between claiming and settling holds the
            # row for its 60 s lease, longer than this test waits.)
            wait_until(lambda: a.query("SELECT COUNT(*) FROM audit_log WHERE kind = 'logout.backchannel_failed'")
                       >= [(1,)], 10, "a first failed attempt")
            a.kill()
            assert a.query("SELECT COUNT(*) FROM logout_outbox") == [(1,)], "the logout survives the node"

            rp = RelyingParty(rp_port, meta["issuer"], "web-banking", f"{a.base}/realms/customers/jwks")
            b = Node(d, port)
            b.start()
            try:
                wait_until(lambda: rp.accepted, 20, "the logout token at the app")
            except AssertionError:
                raise AssertionError((
                    a.query("SELECT id, attempts, next_attempt_at, lease_owner, lease_until FROM logout_outbox"),
                    a.query("SELECT ts, kind, detail FROM audit_log WHERE kind LIKE 'logout.%'"),
                    int(time.time()), rp.refused, b.proc.poll()))
            time.sleep(1.5)
            assert rp.refused == []
            assert len(rp.accepted) == 1, "delivered once"
            logout_token, claims = rp.accepted[0]
            assert claims["sid"] == id_claims["sid"]
            assert claims["sub"] == id_claims["sub"]
            assert claims["aud"] == "web-banking"
            assert a.query("SELECT COUNT(*) FROM logout_outbox") == [(0,)]
            kinds = [k for (k,) in a.query(
                "SELECT kind FROM audit_log WHERE kind LIKE 'logout.backchannel_%' ORDER BY ts, seq")]
            assert kinds[-1] == "logout.backchannel_delivered" and "logout.backchannel_failed" in kinds
            assert kinds.count("logout.backchannel_delivered") == 1

            # The session's tokens are dead for the app as well.
            res = requests.post(meta["token_endpoint"], auth=(client["client_id"], client["client_secret"]),
                                data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]},
                                timeout=10)
            assert res.status_code == 400 and res.json()["error"] == "invalid_grant"

            # The app refuses the same token again (its jti), and a token signed by anyone else.
            endpoint = f"http://127.0.0.1:{rp_port}/backchannel-logout"
            assert requests.post(endpoint, data={"logout_token": logout_token}, timeout=10).status_code == 400
            forged = jwt.encode({**claims, "jti": generate_token(16)}, ec.generate_private_key(ec.SECP256R1()),
                                algorithm="ES256",
                                headers={"typ": "logout+jwt", "kid": jwt.get_unverified_header(logout_token)["kid"]})
            assert requests.post(endpoint, data={"logout_token": forged}, timeout=10).status_code == 400
            assert len(rp.accepted) == 1 and len(rp.refused) == 2
        finally:
            for n in (a, b):
                if n:
                    n.stop()
            if rp:
                rp.close()
