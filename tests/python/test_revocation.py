"""Revocation (RFC 7009) and introspection (RFC 7662) with Authlib as the client: its
`revoke_token` and `introspect_token`, with both secret methods, against the real server."""

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session


def discovery(sigil, realm):
    return requests.get(f"{sigil.issuer(realm)}/.well-known/openid-configuration", timeout=10).json()


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_revokes_and_a_resource_server_introspects(sigil, method):
    sigil.cli_json("realm", "create", "ledger")
    svc = sigil.cli_json(
        "client", "create", "--realm", "ledger", "--id", "ach-processor",
        "--scope", "tx:post:ach", "--audience", "ledger",
    )
    rs = sigil.cli_json(
        "client", "create", "--realm", "ledger", "--id", "ledger-rs",
        "--scope", "balances:read", "--audience", "ledger", "--introspect",
    )
    other = sigil.cli_json(
        "client", "create", "--realm", "ledger", "--id", "other",
        "--scope", "tx:post:ach", "--audience", "ledger",
    )
    meta = discovery(sigil, "ledger")
    assert method in meta["revocation_endpoint_auth_methods_supported"]
    assert method in meta["introspection_endpoint_auth_methods_supported"]

    def session(c):
        return OAuth2Session(c["client_id"], c["client_secret"], token_endpoint_auth_method=method)

    access = session(svc).fetch_token(meta["token_endpoint"], grant_type="client_credentials")["access_token"]
    ledger = session(rs)

    res = ledger.introspect_token(meta["introspection_endpoint"], token=access)
    assert res.status_code == 200
    assert res.headers["Cache-Control"] == "no-store"
    body = res.json()
    assert body["active"] is True
    assert body["client_id"] == "ach-processor"
    assert body["scope"] == "tx:post:ach"
    assert body["token_type"] == "Bearer"

    # A client not registered for introspection is refused.
    res = session(svc).introspect_token(meta["introspection_endpoint"], token=access)
    assert res.status_code == 403 and res.json()["error"] == "unauthorized_client"

    # Another client's revocation: 200, no effect.
    res = session(other).revoke_token(meta["revocation_endpoint"], token=access, token_type_hint="access_token")
    assert res.status_code == 200
    assert ledger.introspect_token(meta["introspection_endpoint"], token=access).json()["active"] is True

    res = session(svc).revoke_token(meta["revocation_endpoint"], token=access, token_type_hint="access_token")
    assert res.status_code == 200
    assert ledger.introspect_token(meta["introspection_endpoint"], token=access).json() == {"active": False}
    # Revoking again, or revoking nonsense, is still 200.
    assert session(svc).revoke_token(meta["revocation_endpoint"], token=access).status_code == 200
    assert session(svc).revoke_token(meta["revocation_endpoint"], token="nonsense").status_code == 200

    # Wrong credentials: 401 invalid_client at both endpoints.
    wrong = dict(svc, client_secret="x" * 43)
    res = session(wrong).revoke_token(meta["revocation_endpoint"], token=access)
    assert res.status_code == 401 and res.json()["error"] == "invalid_client"
    wrong_rs = dict(rs, client_secret="x" * 43)
    res = session(wrong_rs).introspect_token(meta["introspection_endpoint"], token=access)
    assert res.status_code == 401 and res.json()["error"] == "invalid_client"

    assert "intact" in sigil.cli("audit", "verify")


def test_the_example_ledger_refuses_a_revoked_token_within_its_poll_interval(sigil, ledger_for, tmp_path):
    import time

    sigil.cli_json("realm", "create", "ledger")
    svc = sigil.cli_json(
        "client", "create", "--realm", "ledger", "--id", "ach-processor",
        "--scope", "tx:post:ach", "--audience", "ledger",
    )
    rs = sigil.cli_json(
        "client", "create", "--realm", "ledger", "--id", "ledger-rs",
        "--scope", "balances:read", "--audience", "ledger", "--introspect",
    )
    secret_file = tmp_path / "rs-secret"
    secret_file.write_text(rs["client_secret"])
    meta = discovery(sigil, "ledger")
    ledger = ledger_for(meta["issuer"], extra=(
        "--revocation-client-id", "ledger-rs", "--revocation-secret-file", str(secret_file),
        "--revocation-interval-ms", "500",
    ))
    session = OAuth2Session(svc["client_id"], svc["client_secret"])
    token = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials")["access_token"]
    other = session.fetch_token(meta["token_endpoint"], grant_type="client_credentials")["access_token"]

    def post(t):
        return requests.post(f"{ledger}/transactions/ach", headers={"Authorization": f"Bearer {t}"}, timeout=10)

    assert post(token).status_code == 200
    assert session.revoke_token(meta["revocation_endpoint"], token=token).status_code == 200
    started = time.monotonic()
    while post(token).status_code == 200:
        assert time.monotonic() - started < 1.5, "still accepted after the interval + 1 s"
        time.sleep(0.05)
    res = post(token)
    assert res.status_code == 401
    assert 'error="invalid_token"' in res.headers["WWW-Authenticate"]
    print(f"ledger refused the revoked token after {1000 * (time.monotonic() - started):.0f} ms")
    assert post(other).status_code == 200

    # The client disabled: every token it had.
    sigil.cli("client", "disable", "--realm", "ledger", "--id", "ach-processor")
    started = time.monotonic()
    while post(other).status_code == 200:
        assert time.monotonic() - started < 1.5
        time.sleep(0.05)
