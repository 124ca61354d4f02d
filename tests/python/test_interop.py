"""Independent peers against the real server: Authlib as the OAuth client (both secret methods),
PyJWT's PyJWKClient verifying tokens from the published JWKS, and the example ledger answering
200 / 401 / 403 through the validator crate."""

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.integrations.base_client.errors import OAuthError


def discovery(sigil, realm):
    res = requests.get(f"{sigil.issuer(realm)}/.well-known/openid-configuration", timeout=10)
    assert res.status_code == 200
    return res.json()


def fetch(meta, client, method, scope=None):
    session = OAuth2Session(
        client["client_id"], client["client_secret"],
        token_endpoint_auth_method=method, scope=scope,
    )
    return session.fetch_token(meta["token_endpoint"], grant_type="client_credentials")


@pytest.mark.parametrize("alg", ["ES256", "RS256", "EdDSA"])
@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_gets_a_token_that_pyjwt_verifies(sigil, alg, method):
    sigil.cli_json("realm", "create", "ledger", "--alg", alg)
    client = sigil.cli_json(
        "client", "create", "--realm", "ledger", "--id", "ach-processor",
        "--scope", "tx:post:ach balances:read", "--audience", "ledger",
    )
    meta = discovery(sigil, "ledger")
    assert method in meta["token_endpoint_auth_methods_supported"]
    token = fetch(meta, client, method, scope="tx:post:ach")
    assert token["token_type"].lower() == "bearer"
    assert token["scope"] == "tx:post:ach"

    access = token["access_token"]
    assert jwt.get_unverified_header(access)["typ"] == "at+jwt"
    key = jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(access)
    claims = jwt.decode(
        access, key.key, algorithms=[alg], audience="ledger", issuer=meta["issuer"],
        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]},
    )
    assert claims["sub"] == "ach-processor"
    assert claims["client_id"] == "ach-processor"
    assert claims["token_use"] == "access"
    assert claims["scope"] == "tx:post:ach"
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(access, key.key, algorithms=[alg], audience="payments")


def test_authlib_sees_standard_errors(sigil):
    sigil.cli_json("realm", "create", "ledger")
    client = sigil.cli_json(
        "client", "create", "--realm", "ledger", "--id", "svc",
        "--scope", "balances:read", "--audience", "ledger",
    )
    meta = discovery(sigil, "ledger")
    wrong = dict(client, client_secret="x" * 43)
    with pytest.raises(OAuthError) as e:
        fetch(meta, wrong, "client_secret_basic")
    assert e.value.error == "invalid_client"
    with pytest.raises(OAuthError) as e:
        fetch(meta, client, "client_secret_post", scope="tx:post:wire")
    assert e.value.error == "invalid_scope"
    assert "intact" in sigil.cli("audit", "verify")


def test_example_ledger_answers_200_401_403(sigil, ledger_for):
    sigil.cli_json("realm", "create", "ledger")
    reader = sigil.cli_json(
        "client", "create", "--realm", "ledger", "--id", "balance-reader",
        "--scope", "balances:read", "--audience", "ledger",
    )
    poster = sigil.cli_json(
        "client", "create", "--realm", "ledger", "--id", "ach-processor",
        "--scope", "tx:post:ach", "--audience", "ledger",
    )
    meta = discovery(sigil, "ledger")
    ledger = ledger_for(meta["issuer"])
    read_token = fetch(meta, reader, "client_secret_basic")["access_token"]
    post_token = fetch(meta, poster, "client_secret_post")["access_token"]

    res = requests.get(f"{ledger}/balances", headers={"Authorization": f"Bearer {read_token}"}, timeout=10)
    assert res.status_code == 200
    assert res.json()["client_id"] == "balance-reader"

    res = requests.post(f"{ledger}/transactions/ach", headers={"Authorization": f"Bearer {post_token}"}, timeout=10)
    assert res.status_code == 200
    assert res.json()["client_id"] == "ach-processor"

    res = requests.post(f"{ledger}/transactions/ach", headers={"Authorization": f"Bearer {read_token}"}, timeout=10)
    assert res.status_code == 403
    assert res.json()["error_code"] == "INSUFFICIENT_SCOPE"
    assert 'error="insufficient_scope"' in res.headers["WWW-Authenticate"]
    assert 'scope="tx:post:ach"' in res.headers["WWW-Authenticate"]

    # A high-value transfer wants a passkey sign-in of at most 5 minutes (RFC 9470): a service's
    # token (no sign-in at all) gets the step-up challenge naming what to ask /authorize for.
    res = requests.post(f"{ledger}/transfers/high-value", headers={"Authorization": f"Bearer {post_token}"}, timeout=10)
    assert res.status_code == 401
    assert res.json()["error"] == "insufficient_user_authentication"
    www = res.headers["WWW-Authenticate"]
    assert www.startswith('Bearer error="insufficient_user_authentication"'), www
    assert 'acr_values="urn:sigil:acr:passkey"' in www and 'max_age="300"' in www, www

    # No token: a bare challenge, no error code (RFC 6750 section 3.1).
    res = requests.get(f"{ledger}/balances", timeout=10)
    assert res.status_code == 401
    assert res.headers["WWW-Authenticate"] == 'Bearer realm="ledger"'

    for headers in [{"Authorization": "Bearer garbage"}, {"Authorization": f"Bearer {read_token}x"}]:
        res = requests.get(f"{ledger}/balances", headers=headers, timeout=10)
        assert res.status_code == 401
        assert res.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
