"""pii_high attributes, through the real binary: encrypted column by column (nothing of the value
in the SQLite file, a PostgreSQL dump, the audit log or the node's log at trace level), found
through the blind index, and in tokens only where the realm maps them to a claim."""

import json
import os
import subprocess
import tempfile
import threading

import jwt
import pyotp
import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from conftest import SIGIL, Sigil, _wait_for_listening
from test_aws_secrets import ADMIN_DB, needs_pg, pg_role, psql, role_url  # noqa: F401 (fixture)
from test_signin import PASSWORD, REDIRECT, field, sign_in

TAX_ALICE = "TAXALICE-555-12-3456"
TAX_BOB = "TAXBOB-999-88-7777"
NATIONAL_BOB = "NATBOB-QX-4410"


@pytest.fixture
def traced():
    """A node whose log, at trace level, goes to a file (searched afterwards)."""
    with tempfile.TemporaryDirectory() as d:
        s = Sigil(d)
        log = open(os.path.join(d, "node.log"), "w")
        s.proc = subprocess.Popen(
            [SIGIL, "--database-url", s.db, "--kek-file", s.kek, "serve", "--bind", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=log, text=True,
            env={**os.environ, "SIGIL_LOG": "trace", "SIGIL_CACHE_TTL_SECS": "0"},
        )
        s.base = _wait_for_listening(s.proc, "sigil")
        s.logpath = log.name
        try:
            yield s
        finally:
            s.stop()
            log.close()


def test_pii_high_values_are_encrypted_indexed_and_only_in_mapped_claims(traced):
    sigil = traced
    sigil.cli_json("realm", "create", "customers")
    sigil.cli("realm", "set-login", "customers", "--attr-claim", "party_id=custom:party_id",
              "--attr-claim", "tax_id=custom:tax_id")
    sigil.cli("group", "create", "--realm", "customers", "--name", "retail", "--scope", "balances:read")
    client = sigil.cli_json("client", "create", "--realm", "customers", "--id", "web-banking",
                            "--scope", "balances:read", "--audience", "ledger", "--redirect-uri", REDIRECT)
    # Alice's tax id is written before the realm declares it: declaring it encrypts it at once.
    sigil.cli_json("user", "create", "--realm", "customers", "--username", "alice",
                   "--attr", "party_id=P-1", "--attr", f"tax_id={TAX_ALICE}")
    declared = sigil.cli_json("realm", "set-attributes", "customers", "--attr", "party_id:internal",
                              "--attr", "tax_id:pii_high", "--attr", "national_id:pii_high",
                              "--attr", "jurisdiction:internal")
    assert declared["attributes"] == {"jurisdiction": "internal", "national_id": "pii_high",
                                      "party_id": "internal", "tax_id": "pii_high"}
    assert declared["encrypted_now"] == 1
    bob = sigil.cli_json("user", "create", "--realm", "customers", "--username", "bob", "--group", "retail",
                         "--attr", "party_id=P-7", "--attr", f"tax_id={TAX_BOB}",
                         "--attr", f"national_id={NATIONAL_BOB}", "--attr", "jurisdiction=GB")
    # Views never show the value.
    assert bob["attributes"] == {"jurisdiction": "GB", "national_id": "[pii_high]",
                                 "party_id": "P-7", "tax_id": "[pii_high]"}

    # Found through the blind index, exactly.
    found = sigil.cli_json("user", "find", "--realm", "customers", "--attr", f"tax_id={TAX_BOB}")
    assert [u["username"] for u in found] == ["bob"]
    found = sigil.cli_json("user", "find", "--realm", "customers", "--attr", f"tax_id={TAX_ALICE}")
    assert [u["username"] for u in found] == ["alice"]
    assert sigil.cli_json("user", "find", "--realm", "customers", "--attr", f"tax_id={TAX_BOB}x") == []
    assert sigil.cli_json("user", "find", "--realm", "customers", "--attr", f"national_id={TAX_BOB}") == []
    # Only pii_high attributes are indexed.
    out = subprocess.run([SIGIL, "--database-url", sigil.db, "--kek-file", sigil.kek, "user", "find",
                          "--realm", "customers", "--attr", "party_id=P-7"], capture_output=True, text=True)
    assert out.returncode != 0 and "pii_high" in out.stderr
    # A pii_high attribute holding values cannot be declared internal again.
    out = subprocess.run([SIGIL, "--database-url", sigil.db, "--kek-file", sigil.kek, "realm", "set-attributes",
                          "customers", "--attr", "tax_id:internal"], capture_output=True, text=True)
    assert out.returncode != 0 and "stays pii_high" in out.stderr and TAX_BOB not in out.stderr

    # Bob signs in: his mapped tax id is in the access token, his unmapped national id nowhere.
    invite = sigil.cli("--public-url", sigil.base, "user", "invite", "--realm", "customers", "--username", "bob").strip()
    browser = requests.Session()
    page = browser.get(invite, timeout=10).text
    totp = pyotp.TOTP(__import__("re").search(r'data-secret="([A-Z2-7]+)"', page).group(1))
    res = browser.post(f"{sigil.issuer('customers')}/enrol", timeout=10,
                       data={"csrf": field(page, "csrf"), "password": PASSWORD, "code": totp.now()})
    assert res.status_code == 200
    meta = requests.get(f"{sigil.issuer('customers')}/.well-known/openid-configuration", timeout=10).json()
    rp = OAuth2Session(client["client_id"], client["client_secret"], scope="openid balances:read",
                       redirect_uri=REDIRECT, code_challenge_method="S256",
                       token_endpoint_auth_method="client_secret_basic")
    verifier = generate_token(48)
    url, _ = rp.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)
    callback = sign_in(meta, totp, requests.Session(), url)
    token = rp.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=verifier)
    keys = jwt.PyJWKClient(meta["jwks_uri"])

    def claims(access):
        return jwt.decode(access, keys.get_signing_key_from_jwt(access).key, algorithms=["ES256"],
                          audience="ledger", issuer=meta["issuer"])

    access = claims(token["access_token"])
    assert access["custom:tax_id"] == TAX_BOB
    assert access["custom:party_id"] == "P-7"
    assert NATIONAL_BOB not in json.dumps(access) and NATIONAL_BOB not in token["id_token"]
    userinfo = rp.get(meta["userinfo_endpoint"]).json()
    assert NATIONAL_BOB not in json.dumps(userinfo)
    # The refresh path carries the same.
    refreshed = rp.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
    assert claims(refreshed["access_token"])["custom:tax_id"] == TAX_BOB
    # A change of the value: the next token carries the new one, the old is found no more.
    sigil.cli_json("user", "set-attr", "--realm", "customers", "--username", "bob", "--attr", "tax_id=TAXBOB-NEW-1")
    refreshed = rp.refresh_token(meta["token_endpoint"], refresh_token=refreshed["refresh_token"])
    assert claims(refreshed["access_token"])["custom:tax_id"] == "TAXBOB-NEW-1"
    assert sigil.cli_json("user", "find", "--realm", "customers", "--attr", f"tax_id={TAX_BOB}") == []

    # Nowhere at rest, in the audit log or in the log: no byte of the values.
    audit = sigil.cli("audit", "export")
    sigil.stop()
    with open(sigil.logpath) as f:
        log = f.read()
    assert len(log) > 10_000, "the trace log is not empty"
    stored = b""
    for suffix in ("", "-wal", "-shm"):
        path = sigil.db.removeprefix("sqlite://") + suffix
        if os.path.exists(path):
            stored += open(path, "rb").read()
    assert b"P-7" in stored, "the search would find a plain value"
    for value in (TAX_ALICE, TAX_BOB, NATIONAL_BOB, "TAXBOB-NEW-1"):
        assert value.encode() not in stored, value
        assert value not in audit, value
        assert value not in log, value
    assert "attributes_declared" in audit and "tax_id" in audit
    assert "intact" in sigil.cli("audit", "verify")


@needs_pg
def test_pii_high_on_postgresql_dump_index_and_racing_writers(pg_role):
    """On PostgreSQL: a `pg_dump` holds no value; and writers of the attribute racing its
    declaration as pii_high never leave a plain value behind."""
    url = role_url(pg_role, pg_role["password"])
    with tempfile.TemporaryDirectory() as d:
        def cli(*args, check=True):
            return subprocess.run([SIGIL, "--database-url", url, "--kek-file", f"{d}/kek", *args],
                                  capture_output=True, text=True, check=check, timeout=120)

        cli("realm", "create", "customers")
        for i in range(12):
            cli("user", "create", "--realm", "customers", "--username", f"u{i}", "--attr", f"tax_id=TAXPG-{i}-START")
        # Twelve writers set tax ids while the attribute is declared pii_high.
        errors = []

        def write(i):
            out = cli("user", "set-attr", "--realm", "customers", "--username", f"u{i}",
                      "--attr", f"tax_id=TAXPG-{i}-RACE", check=False)
            if out.returncode != 0:
                errors.append(out.stderr)

        threads = [threading.Thread(target=write, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        declared = json.loads(cli("realm", "set-attributes", "customers", "--attr", "tax_id:pii_high").stdout)
        for t in threads:
            t.join()
        # A writer may be told to try again (it read the declarations before they changed),
        # never succeed with a plain value.
        assert all("try again" in e for e in errors), errors
        assert declared["encrypted_now"] >= 1
        plain = psql(url, "SELECT count(*) FROM users WHERE attributes LIKE '%TAXPG%'").strip()
        assert plain == "0"
        assert psql(url, "SELECT count(*) FROM user_pii").strip() == "12"
        dump = subprocess.run(["pg_dump", "--data-only", url], capture_output=True, check=True, timeout=60).stdout
        assert b"TAXPG" not in dump
        found = json.loads(cli("user", "find", "--realm", "customers", "--attr", "tax_id=TAXPG-3-START").stdout
                           or "[]")
        racing = json.loads(cli("user", "find", "--realm", "customers", "--attr", "tax_id=TAXPG-3-RACE").stdout)
        assert [u["username"] for u in found + racing] == ["u3"]
        # `sigil migrate` finds nothing left to encrypt.
        assert "pii_high values encrypted: 0" in cli("migrate").stdout
