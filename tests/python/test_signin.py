"""An independent relying party: Authlib runs authorization code + PKCE against Sigil's hosted
sign-in, pyotp produces the TOTP codes, PyJWT verifies the ID token."""

import re
import time
from urllib.parse import parse_qs, urlparse

import jwt
import pyotp
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.common.security import generate_token

REDIRECT = "http://localhost:8765/callback"
PASSWORD = "correct horse battery staple"


def field(html, name):
    return re.search(rf'name="{name}" value="([^"]*)"', html).group(1)


@pytest.fixture
def customers(sigil):
    sigil.cli_json("realm", "create", "customers")
    sigil.cli("realm", "set-login", "customers", "--groups-claim", "cognito:groups",
              "--attr-claim", "party_id=custom:party_id")
    sigil.cli("group", "create", "--realm", "customers", "--name", "retail", "--scope", "balances:read")
    client = sigil.cli_json("client", "create", "--realm", "customers", "--id", "web-banking",
                            "--scope", "balances:read", "--audience", "ledger", "--redirect-uri", REDIRECT)
    sigil.cli_json("user", "create", "--realm", "customers", "--username", "bob",
                   "--attr", "party_id=P-7", "--group", "retail")
    invite = sigil.cli("--public-url", sigil.base, "user", "invite", "--realm", "customers", "--username", "bob").strip()
    browser = requests.Session()
    page = browser.get(invite, timeout=10).text
    secret = re.search(r'data-secret="([A-Z2-7]+)"', page).group(1)
    totp = pyotp.TOTP(secret)  # pyotp refuses secrets under 112 bits; Sigil's are 160
    res = browser.post(f"{sigil.issuer('customers')}/enrol", timeout=10,
                       data={"csrf": field(page, "csrf"), "password": PASSWORD, "code": totp.now()})
    assert res.status_code == 200 and "recovery codes" in res.text.lower()
    meta = requests.get(f"{sigil.issuer('customers')}/.well-known/openid-configuration", timeout=10).json()
    return {"meta": meta, "client": client, "totp": totp}


def sign_in(meta, totp, session, url):
    """What a person does in the browser: follow to the form, type, submit."""
    res = session.get(url, allow_redirects=False, timeout=10)
    assert res.status_code == 303
    form = session.get(res.headers["Location"], timeout=10).text
    # One step ahead: the enrolment already used this step's code, and codes work once.
    code = totp.at(time.time() + 30)
    res = session.post(res.headers["Location"], allow_redirects=False, timeout=10,
                       data={"csrf": field(form, "csrf"), "username": "bob", "password": PASSWORD, "code": code})
    assert res.status_code == 303, res.text
    return res.headers["Location"]


def test_authlib_code_flow_with_pkce_and_pyotp(customers):
    meta, client, totp = customers["meta"], customers["client"], customers["totp"]
    assert "S256" in meta["code_challenge_methods_supported"]
    rp = OAuth2Session(client["client_id"], client["client_secret"], scope="openid balances:read",
                       redirect_uri=REDIRECT, code_challenge_method="S256",
                       token_endpoint_auth_method="client_secret_basic")
    verifier = generate_token(48)
    nonce = generate_token(16)
    url, state = rp.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)
    callback = sign_in(meta, totp, requests.Session(), url)
    assert callback.startswith(REDIRECT)
    assert parse_qs(urlparse(callback).query)["state"] == [state]
    token = rp.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=verifier)
    assert set(token) >= {"access_token", "id_token", "refresh_token", "expires_in"}

    keys = jwt.PyJWKClient(meta["jwks_uri"])
    idt = jwt.decode(token["id_token"], keys.get_signing_key_from_jwt(token["id_token"]).key,
                     algorithms=["ES256"], audience="web-banking", issuer=meta["issuer"])
    assert idt["nonce"] == nonce
    assert idt["amr"] == ["pwd", "otp"]
    assert idt["preferred_username"] == "bob"
    access = jwt.decode(token["access_token"], keys.get_signing_key_from_jwt(token["access_token"]).key,
                        algorithms=["ES256"], audience="ledger", issuer=meta["issuer"])
    assert access["cognito:groups"] == ["retail"]
    assert access["custom:party_id"] == "P-7"
    assert access["scope"] == "openid balances:read"

    userinfo = rp.get(meta["userinfo_endpoint"]).json()
    assert userinfo["preferred_username"] == "bob"

    refreshed = rp.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
    assert refreshed["refresh_token"] != token["refresh_token"]
    # The old refresh token is spent: reusing it fails and revokes the new one too.
    with pytest.raises(Exception):
        rp.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
    res = requests.post(meta["token_endpoint"], auth=(client["client_id"], client["client_secret"]), timeout=10,
                        data={"grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"]})
    assert res.json()["error"] == "invalid_grant"


def test_pkce_plain_and_a_changed_redirect_are_refused(customers):
    meta, client = customers["meta"], customers["client"]
    rp = OAuth2Session(client["client_id"], client["client_secret"], scope="openid", redirect_uri=REDIRECT,
                       code_challenge_method="plain")
    url, _ = rp.create_authorization_url(meta["authorization_endpoint"], code_verifier=generate_token(48))
    res = requests.get(url, allow_redirects=False, timeout=10)
    assert res.status_code == 303
    assert parse_qs(urlparse(res.headers["Location"]).query)["error"] == ["invalid_request"]
    rp = OAuth2Session(client["client_id"], client["client_secret"], scope="openid",
                       redirect_uri=REDIRECT + "x", code_challenge_method="S256")
    url, _ = rp.create_authorization_url(meta["authorization_endpoint"], code_verifier=generate_token(48))
    res = requests.get(url, allow_redirects=False, timeout=10)
    assert res.status_code == 400 and "Location" not in res.headers
