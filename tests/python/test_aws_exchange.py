"""The AWS exchange against a real STS peer: moto on loopback with SigV4 enforcement switched on,
requests signed by botocore (and by `sigil token aws`, which signs with aws-sigv4 in Rust)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import boto3
import jwt
import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import SIGIL, LEDGER, _wait_for_listening, free_port, start_moto  # noqa: F401

BODY = "Action=GetCallerIdentity&Version=2011-06-15"
SERVER_ID = "sigil-ledger-test"
ACCOUNT = "123456789012"  # moto's default account


@pytest.fixture(scope="module")
def moto():
    proc, url = start_moto()
    port = int(url.rsplit(':', 1)[1])
    kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="seed", aws_secret_access_key="seed")
    iam = boto3.client("iam", **kw)
    admin_policy = iam.create_policy(
        PolicyName="all",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    )["Policy"]["Arn"]
    users = {}
    for name in ["ach-worker", "stranger"]:
        iam.create_user(UserName=name)
        iam.attach_user_policy(UserName=name, PolicyArn=admin_policy)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        users[name] = Credentials(key["AccessKeyId"], key["SecretAccessKey"])
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]}
    for role in ["ledger-writer", "temp-batch"]:
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
        iam.attach_role_policy(RoleName=role, PolicyArn=admin_policy)
    sts = boto3.client(
        "sts", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id=users["ach-worker"].access_key, aws_secret_access_key=users["ach-worker"].secret_key,
    )
    roles = {}
    for role in ["ledger-writer", "temp-batch"]:
        c = sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}", RoleSessionName="job-1")["Credentials"]
        roles[role] = Credentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    # From now on moto verifies every SigV4 signature.
    requests.post(f"{url}/moto-api/reset-auth", data="0", timeout=5).raise_for_status()
    yield {"url": url, "host": f"127.0.0.1:{port}", "users": users, "roles": roles}
    proc.terminate()
    proc.wait(timeout=10)


def signed(moto, creds, *, server_id=SERVER_ID, sign_server_id=True, challenge=None, url=None, host=None, body=BODY):
    url = url or moto["url"] + "/"
    headers = {"Host": host or moto["host"], "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    if sign_server_id:
        headers["X-Sigil-Server-ID"] = server_id
    if challenge:
        headers["X-Sigil-Challenge"] = challenge
    req = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(creds, "sts", "us-east-1").add_auth(req)
    out = dict(req.headers.items())
    if not sign_server_id:
        out["X-Sigil-Server-ID"] = server_id  # added after signing
    return {"method": "POST", "url": url, "headers": out, "body": body}


@pytest.fixture
def realm(sigil, moto):
    sigil.cli_json("realm", "create", "ledger")
    sigil.cli("aws", "configure", "--realm", "ledger", "--sts-endpoint", moto["url"] + "/", "--server-id", SERVER_ID)
    sigil.cli_json("aws", "bind", "--realm", "ledger", "--principal", f"arn:aws:iam::{ACCOUNT}:user/ach-worker",
                   "--scope", "tx:post:ach balances:read", "--audience", "ledger")
    sigil.cli_json("aws", "bind", "--realm", "ledger", "--principal", "arn:aws:iam::*:role/*",
                   "--scope", "balances:read", "--audience", "ledger")
    sigil.cli_json("aws", "bind", "--realm", "ledger", "--principal", "arn:aws:iam::*:role/temp-*", "--deny")
    meta = requests.get(f"{sigil.issuer('ledger')}/.well-known/openid-configuration", timeout=10).json()
    return meta


def exchange(meta, payload, **params):
    return requests.post(meta["aws_sts_exchange_endpoint"], json=payload, params=params, timeout=15)


def verify(meta, token):
    key = jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["ES256"], audience="ledger", issuer=meta["issuer"])


def test_discovery_lists_the_exchange(realm):
    assert realm["aws_sts_exchange_endpoint"].endswith("/aws/token")
    assert realm["aws_sts_server_id"] == SERVER_ID
    assert "urn:ietf:params:oauth:grant-type:token-exchange" in realm["grant_types_supported"]


def test_user_gets_a_token_with_its_arn(realm, moto):
    res = exchange(realm, signed(moto, moto["users"]["ach-worker"]), scope="tx:post:ach")
    assert res.status_code == 200, res.text
    assert res.headers["Cache-Control"] == "no-store"
    claims = verify(realm, res.json()["access_token"])
    assert claims["sub"] == f"arn:aws:iam::{ACCOUNT}:user/ach-worker"
    assert claims["scope"] == "tx:post:ach"
    assert claims["aws_account"] == ACCOUNT
    assert claims["aws_user_id"]


def test_assumed_role_is_canonicalised_to_its_role(realm, moto):
    res = exchange(realm, signed(moto, moto["roles"]["ledger-writer"]))
    assert res.status_code == 200, res.text
    claims = verify(realm, res.json()["access_token"])
    assert claims["sub"] == f"arn:aws:iam::{ACCOUNT}:role/ledger-writer"
    assert claims["aws_arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/ledger-writer/")
    assert claims["scope"] == "balances:read"


def test_token_exchange_grant_at_the_token_endpoint(realm, moto):
    payload = signed(moto, moto["users"]["ach-worker"])
    res = requests.post(realm["token_endpoint"], data={
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token_type": realm["aws_sts_subject_token_type"],
        "subject_token": json.dumps(payload),
        "scope": "balances:read",
    }, timeout=15)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert verify(realm, body["access_token"])["sub"].endswith(":user/ach-worker")


def reasons(sigil):
    """The refusal reasons in the audit log (read while the server runs: SQLite WAL). Refusals of
    requests whose identity STS has not confirmed are tallied: wait for the next flush."""
    import sqlite3
    import time
    time.sleep(1.5)
    db = sqlite3.connect(sigil.db.removeprefix("sqlite://"))
    try:
        rows = db.execute("select detail from audit_log where kind = 'token.refused' order by seq").fetchall()
    finally:
        db.close()
    out = []
    for (detail,) in rows:
        d = json.loads(detail)
        out += [d["reason"]] * d.get("count", 1)
    return sorted(out)


def expect_error(res, status, error):
    assert res.status_code == status, res.text
    assert res.json()["error"] == error, res.text


def test_wrong_secret_is_refused_by_sts(sigil, realm, moto):
    good = moto["users"]["ach-worker"]
    expect_error(exchange(realm, signed(moto, Credentials(good.access_key, "x" * 40))), 401, "invalid_client")
    assert reasons(sigil) == ["sts_refused"], "STS itself rejected the signature"


def test_tampering_is_caught(sigil, realm, moto):
    payload = signed(moto, moto["users"]["ach-worker"])
    payload["body"] = "Action=GetCallerIdentity&Version=2011-06-15&x=1"
    expect_error(exchange(realm, payload), 400, "invalid_request")
    # A signed header changed after signing: STS itself refuses.
    payload = signed(moto, moto["users"]["ach-worker"])
    payload["headers"]["Content-Type"] = "application/x-www-form-urlencoded"
    expect_error(exchange(realm, payload), 401, "invalid_client")
    assert reasons(sigil) == sorted(["bad_body", "sts_refused"])


def test_unsigned_or_wrong_server_id_is_refused(sigil, realm, moto):
    expect_error(exchange(realm, signed(moto, moto["users"]["ach-worker"], sign_server_id=False)), 401, "invalid_client")
    expect_error(exchange(realm, signed(moto, moto["users"]["ach-worker"], server_id="another-sigil")), 401, "invalid_client")
    assert reasons(sigil) == sorted(["server_id_unsigned", "wrong_server_id"])


def test_stale_date_is_refused_before_sts(sigil, realm, moto):
    payload = signed(moto, moto["users"]["ach-worker"])
    payload["headers"]["X-Amz-Date"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() - 600))
    res = exchange(realm, payload)
    expect_error(res, 401, "invalid_client")
    assert "date" in res.json()["error_description"]
    assert reasons(sigil) == sorted(["stale_date"])


def test_disallowed_host_is_refused_before_any_network_call(sigil, realm, moto):
    hits = []
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(5)
    trap.settimeout(0.2)
    port = trap.getsockname()[1]

    def accept():
        try:
            hits.append(trap.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    for url, host in [(f"http://127.0.0.1:{port}/", f"127.0.0.1:{port}"), ("https://evil.example/", "evil.example"),
                      ("https://sts.amazonaws.com.evil.example/", "sts.amazonaws.com.evil.example")]:
        expect_error(exchange(realm, signed(moto, moto["users"]["ach-worker"], url=url, host=host)), 400, "invalid_request")
    t.join()
    trap.close()
    assert hits == [], "Sigil connected to a host it should have refused"
    # A URL with a query string, or for another path, is refused too.
    expect_error(exchange(realm, signed(moto, moto["users"]["ach-worker"], url=moto["url"] + "/?Action=x")), 400, "invalid_request")
    assert reasons(sigil) == sorted(["sts_host_not_allowed"] * 3 + ["bad_sts_url"])


def test_duplicate_headers_in_any_case_are_refused(sigil, realm, moto):
    payload = signed(moto, moto["users"]["ach-worker"])
    payload["headers"]["host"] = payload["headers"]["Host"]
    expect_error(exchange(realm, payload), 400, "invalid_request")
    payload = signed(moto, moto["users"]["ach-worker"])
    payload["headers"]["X-Amz-Date"] = [payload["headers"]["X-Amz-Date"]] * 2
    expect_error(exchange(realm, payload), 400, "invalid_request")
    payload = signed(moto, moto["users"]["ach-worker"])
    payload["headers"]["X-Forwarded-Host"] = "evil.example"
    expect_error(exchange(realm, payload), 400, "invalid_request")
    assert reasons(sigil) == sorted(["duplicate_header", "duplicate_header", "header_not_allowed"])


def test_deny_beats_allow_and_no_binding_is_refused(sigil, realm, moto):
    expect_error(exchange(realm, signed(moto, moto["roles"]["temp-batch"])), 401, "invalid_client")
    expect_error(exchange(realm, signed(moto, moto["users"]["stranger"])), 401, "invalid_client")
    expect_error(exchange(realm, signed(moto, moto["users"]["ach-worker"]), scope="tx:post:wire"), 400, "invalid_scope")
    assert reasons(sigil) == sorted(["denied_by_binding", "no_binding", "invalid_scope"])


def test_replayed_challenge_is_refused(sigil, realm, moto):
    sigil.cli("aws", "configure", "--realm", "ledger", "--sts-endpoint", moto["url"] + "/", "--server-id", SERVER_ID,
              "--require-challenge")
    expect_error(exchange(realm, signed(moto, moto["users"]["ach-worker"])), 401, "invalid_client")
    challenge = requests.post(realm["aws_sts_challenge_endpoint"], timeout=5).json()["challenge"]
    payload = signed(moto, moto["users"]["ach-worker"], challenge=challenge)
    assert exchange(realm, payload).status_code == 200
    expect_error(exchange(realm, payload), 401, "invalid_client")
    assert reasons(sigil) == sorted(["missing_challenge", "challenge_replayed"])


def test_refusals_are_audited_without_secrets(sigil, realm, moto):
    creds = moto["roles"]["ledger-writer"]
    payload = signed(moto, creds, sign_server_id=False)
    exchange(realm, payload)
    ok = signed(moto, creds)
    assert exchange(realm, ok).status_code == 200
    import sqlite3
    import time
    time.sleep(1.5)  # the tallied refusal is flushed once a second here
    db = sqlite3.connect(sigil.db.removeprefix("sqlite://"))
    rows = db.execute("select kind, actor, subject, detail from audit_log").fetchall()
    db.close()
    text = json.dumps(rows)
    assert "server_id_unsigned" in text
    assert creds.secret_key not in text and creds.token not in text
    for p in (payload, ok):
        assert p["headers"]["Authorization"].split("Signature=")[1] not in text
    assert f"arn:aws:iam::{ACCOUNT}:role/ledger-writer" in text, "the issued token is audited with its ARN"


def test_cli_helper_signs_with_aws_sigv4_and_the_ledger_accepts(sigil, realm, moto, ledger_for):
    creds = moto["users"]["ach-worker"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": creds.access_key, "AWS_SECRET_ACCESS_KEY": creds.secret_key, "SIGIL_LOG": "warn"}
    env.pop("AWS_SESSION_TOKEN", None)
    out = subprocess.run(
        [SIGIL, "token", "aws", "--issuer", realm["issuer"], "--sts-url", moto["url"] + "/", "--scope", "tx:post:ach"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert verify(realm, token)["sub"].endswith(":user/ach-worker")
    # A session token (assumed role) goes through the Rust signer too.
    role = moto["roles"]["ledger-writer"]
    env.update(AWS_ACCESS_KEY_ID=role.access_key, AWS_SECRET_ACCESS_KEY=role.secret_key, AWS_SESSION_TOKEN=role.token)
    out = subprocess.run(
        [SIGIL, "token", "aws", "--issuer", realm["issuer"], "--sts-url", moto["url"] + "/"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert verify(realm, out.stdout.strip())["sub"].endswith(":role/ledger-writer")
    ledger = ledger_for(realm["issuer"])
    res = requests.post(f"{ledger}/transactions/ach", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert res.status_code == 200
    assert res.json()["client_id"] == f"arn:aws:iam::{ACCOUNT}:user/ach-worker"
