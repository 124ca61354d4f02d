"""Principal policies end to end: written with `sigil policy`, published as a signed bundle,
enforced by the example ledger (the validator crate) for a service, a user signed in with
password + TOTP (pyotp), and AWS roles from the STS exchange (moto)."""

import json
import re
import time

import boto3
import jwt
import pyotp
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.common.security import generate_token
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import start_moto

ACCOUNT = "123456789012"  # moto's default account
SERVER_ID = "sigil-policy-test"
REDIRECT = "http://localhost:8765/callback"
PASSWORD = "correct horse battery staple"
DOC = "financial.ledger.document"


def field(html, name):
    return re.search(rf'name="{name}" value="([^"]*)"', html).group(1)


@pytest.fixture(scope="module")
def moto():
    proc, url = start_moto()
    kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="seed", aws_secret_access_key="seed")
    iam = boto3.client("iam", **kw)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]}
    roles = {}
    sts = boto3.client("sts", **kw)
    for role in ["ledger-writer", "temp-batch"]:
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
        c = sts.assume_role(RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}", RoleSessionName="job-1")["Credentials"]
        roles[role] = Credentials(c["AccessKeyId"], c["SecretAccessKey"], c["SessionToken"])
    yield {"url": url, "host": url.split("//", 1)[1], "roles": roles}
    proc.terminate()
    proc.wait(timeout=10)


def aws_token(meta, moto, role):
    body = "Action=GetCallerIdentity&Version=2011-06-15"
    headers = {"Host": moto["host"], "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
               "X-Sigil-Server-ID": SERVER_ID}
    req = AWSRequest(method="POST", url=moto["url"] + "/", data=body, headers=headers)
    SigV4Auth(moto["roles"][role], "sts", "us-east-1").add_auth(req)
    payload = {"method": "POST", "url": moto["url"] + "/", "headers": dict(req.headers.items()), "body": body}
    res = requests.post(meta["aws_sts_exchange_endpoint"], json=payload, timeout=15)
    assert res.status_code == 200, res.text
    return res.json()["access_token"]


def user_token(sigil, meta, client, username):
    """Enrols `username` with password + TOTP, signs in (code + PKCE) and returns the access token."""
    invite = sigil.cli("--public-url", sigil.base, "user", "invite", "--realm", "ledger", "--username", username).strip()
    browser = requests.Session()
    page = browser.get(invite, timeout=10).text
    totp = pyotp.TOTP(re.search(r'data-secret="([A-Z2-7]+)"', page).group(1))
    res = browser.post(f"{sigil.issuer('ledger')}/enrol", timeout=10,
                       data={"csrf": field(page, "csrf"), "password": PASSWORD, "code": totp.now()})
    assert res.status_code == 200, res.text
    rp = OAuth2Session(client["client_id"], client["client_secret"], scope="openid balances:read",
                       redirect_uri=REDIRECT, code_challenge_method="S256")
    verifier = generate_token(48)
    url, _ = rp.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier)
    session = requests.Session()
    res = session.get(url, allow_redirects=False, timeout=10)
    form = session.get(res.headers["Location"], timeout=10).text
    res = session.post(res.headers["Location"], allow_redirects=False, timeout=10,
                       data={"csrf": field(form, "csrf"), "username": username, "password": PASSWORD,
                             "code": totp.at(time.time() + 30)})
    assert res.status_code == 303, res.text
    return rp.fetch_token(meta["token_endpoint"], authorization_response=res.headers["Location"],
                          code_verifier=verifier)["access_token"]


def policy(sigil, name, who, effect, actions, resources, asserts=()):
    args = ["policy", "create", "--realm", "ledger", "--name", name, *who, "--effect", effect]
    for a in actions:
        args += ["--action", a]
    for r in resources:
        args += ["--resource", r]
    for a in asserts:
        args += ["--assert", a]
    return sigil.cli_json(*args)


@pytest.fixture
def world(sigil, moto, ledger_for, tmp_path):
    sigil.cli_json("realm", "create", "ledger")
    sigil.cli_json("realm", "create", "branch")
    sigil.cli_json("client", "create", "--realm", "branch", "--id", "branch-teller", "--scope", "a", "--audience", "ledger")
    svc = sigil.cli_json("client", "create", "--realm", "ledger", "--id", "ach-processor",
                         "--scope", "tx:post:ach", "--audience", "ledger")
    rs = sigil.cli_json("client", "create", "--realm", "ledger", "--id", "ledger-rs",
                        "--scope", "balances:read", "--audience", "ledger", "--introspect")
    web = sigil.cli_json("client", "create", "--realm", "ledger", "--id", "web-banking",
                         "--scope", "balances:read", "--audience", "ledger", "--redirect-uri", REDIRECT)
    sigil.cli("group", "create", "--realm", "ledger", "--name", "compliance_officer", "--scope", "balances:read")
    carol = sigil.cli_json("user", "create", "--realm", "ledger", "--username", "carol", "--group", "compliance_officer")
    dave = sigil.cli_json("user", "create", "--realm", "ledger", "--username", "dave")
    sigil.cli("aws", "configure", "--realm", "ledger", "--sts-endpoint", moto["url"] + "/", "--server-id", SERVER_ID)
    sigil.cli_json("aws", "bind", "--realm", "ledger", "--principal", f"arn:aws:iam::{ACCOUNT}:role/*",
                   "--scope", "balances:read", "--audience", "ledger")

    client = ["--client", "ach-processor"]
    officers = ["--group", "compliance_officer"]
    policy(sigil, "ach-insert-small", client, "ALLOW", ["db:Insert"], [f"{DOC}.*"], ["context.document.amount <= 10000"])
    policy(sigil, "ach-select", client, "ALLOW", ["db:Select"], ["financial.ledger.*"])
    policy(sigil, "ach-never-delete", client, "DENY", ["db:Delete"], ["*"])
    policy(sigil, "ach-memo", client, "ALLOW", ["db:Update"], [f"{DOC}.memo"], ["context.document.memo_limit > 3"])
    policy(sigil, "compliance-select", officers, "ALLOW", ["db:Select"], ["*"])
    policy(sigil, "compliance-status", officers, "ALLOW", ["db:Update"], [f"{DOC}.status"])
    policy(sigil, "dave-reads-own", ["--user", dave["id"]], "ALLOW", ["db:Selec?"], [f"{DOC}.transaction"],
           ["context.auth.claims.sub == context.document.owner"])
    policy(sigil, "aws-roles", ["--aws-principal", f"arn:aws:iam::{ACCOUNT}:role/*"], "ALLOW", ["db:*"], ["financial.ledger.*"])
    policy(sigil, "temp-batch-never", ["--aws-principal", f"arn:aws:iam::{ACCOUNT}:role/temp-batch"], "DENY", ["*"], ["*"])

    secret = tmp_path / "rs-secret"
    secret.write_text(rs["client_secret"])
    meta = requests.get(f"{sigil.issuer('ledger')}/.well-known/openid-configuration", timeout=10).json()
    ledger = ledger_for(meta["issuer"], extra=(
        "--policy-client-id", "ledger-rs", "--policy-secret-file", str(secret), "--policy-interval-ms", "200",
        "--explain-denials",
    ))
    service = OAuth2Session(svc["client_id"], svc["client_secret"]).fetch_token(
        meta["token_endpoint"], grant_type="client_credentials")["access_token"]
    quiet = ledger_for(meta["issuer"], extra=(
        "--policy-client-id", "ledger-rs", "--policy-secret-file", str(secret), "--policy-interval-ms", "200",
    ))
    return {"meta": meta, "ledger": ledger, "quiet": quiet, "service": service, "rs": rs, "svc": svc,
            "web": web, "carol": carol, "dave": dave}


def call(world, token, method, path, body=None):
    res = requests.request(method, world["ledger"] + path, json=body, timeout=10,
                           headers={"Authorization": f"Bearer {token}"})
    return res.status_code, res.json() if res.content else None


def denied(out, policy=None):
    status, body = out
    assert status == 403, out
    assert body["error_code"] == "POLICY_DENIED" and body["error"] == "access_denied"
    assert body.get("policy") == policy, body
    return body


def test_the_ledger_enforces_policies_for_a_service_a_user_and_aws_roles(sigil, world, moto):
    w, svc = world, world["service"]
    # The service: inserts up to 10 000 only, reads, never deletes.
    status, body = call(w, svc, "POST", "/documents", {"amount": 10000, "owner": w["dave"]["id"], "status": "pending"})
    assert (status, body["policy"]) == (201, "ach-insert-small")
    doc = body["id"]
    body = denied(call(w, svc, "POST", "/documents", {"amount": 10001}))
    assert body["error_description"] == "no policy allows this"
    assert call(w, svc, "GET", f"/documents/{doc}")[1]["policy"] == "ach-select"
    assert call(w, svc, "GET", "/documents")[0] == 200  # the require_policy layer
    denied(call(w, svc, "DELETE", f"/documents/{doc}"), "ach-never-delete")
    # An assertion that cannot be evaluated (no memo_limit in the document) denies.
    body = denied(call(w, svc, "PATCH", f"/documents/{doc}/memo", {"value": "x"}), "ach-memo")
    assert "could not be evaluated" in body["error_description"]
    # A document deeper than assertions may read is denied before any assertion runs.
    deep = {"amount": 1}
    for _ in range(40):
        deep = {"n": deep}
    deep["amount"] = 1
    body = denied(call(w, svc, "POST", "/documents", deep))
    assert "too large" in body["error_description"]

    # A compliance officer (a user in the group): selects anything, updates only the status.
    carol = user_token(sigil, w["meta"], w["web"], "carol")
    claims = jwt.decode(carol, options={"verify_signature": False})
    assert claims["groups"] == ["compliance_officer"] and claims["sub"] == w["carol"]["id"]
    assert call(w, carol, "GET", f"/documents/{doc}")[1]["policy"] == "compliance-select"
    status, body = call(w, carol, "PATCH", f"/documents/{doc}/status", {"value": "flagged"})
    assert (status, body["policy"], body["document"]["status"]) == (200, "compliance-status", "flagged")
    denied(call(w, carol, "PATCH", f"/documents/{doc}/amount", {"value": 1}))
    denied(call(w, carol, "POST", "/documents", {"amount": 1}))
    denied(call(w, carol, "DELETE", f"/documents/{doc}"))

    # A user policy by sub, with `?` in its action and an assertion over claims and document.
    dave = user_token(sigil, w["meta"], w["web"], "dave")
    assert call(w, dave, "GET", f"/documents/{doc}")[1]["policy"] == "dave-reads-own"
    status, body = call(w, svc, "POST", "/documents", {"amount": 5, "owner": "someone-else"})
    denied(call(w, dave, "GET", f"/documents/{body['id']}"))
    denied(call(w, dave, "GET", "/documents"))

    # AWS roles: the wildcard ALLOW lets ledger-writer write; the DENY for temp-batch wins.
    writer = aws_token(w["meta"], moto, "ledger-writer")
    assert jwt.decode(writer, options={"verify_signature": False})["sub"] == f"arn:aws:iam::{ACCOUNT}:role/ledger-writer"
    status, body = call(w, writer, "POST", "/documents", {"amount": 99999})
    assert (status, body["policy"]) == (201, "aws-roles")
    assert call(w, writer, "DELETE", f"/documents/{body['id']}")[0] == 200
    batch = aws_token(w["meta"], moto, "temp-batch")
    denied(call(w, batch, "POST", "/documents", {"amount": 1}), "temp-batch-never")
    denied(call(w, batch, "GET", f"/documents/{doc}"), "temp-batch-never")
    # Bad tokens stay 401, not 403.
    assert call(w, "garbage", "GET", f"/documents/{doc}")[0] == 401


def test_without_explanations_every_denial_is_alike_and_missing_records_are_not_told_apart(sigil, world):
    w = world
    quiet = {**w, "ledger": w["quiet"]}
    dave = user_token(sigil, w["meta"], w["web"], "dave")
    svc = w["service"]
    status, body = call(quiet, svc, "POST", "/documents", {"amount": 5, "owner": "someone-else"})
    assert status == 201 and body["policy"] == "ach-insert-small"
    theirs = body["id"]
    answers = [
        call(quiet, dave, "GET", f"/documents/{theirs}"),   # exists, not dave's: assertion false
        call(quiet, dave, "GET", "/documents/999999"),      # missing: the assertion cannot evaluate
        call(quiet, svc, "DELETE", f"/documents/{theirs}"),  # a DENY
        call(quiet, svc, "POST", "/documents", {"amount": 10**6}),
        call(quiet, svc, "PATCH", f"/documents/{theirs}/memo", {"value": "x"}),  # erroring assertion
    ]
    assert all(a == (403, {"error": "access_denied", "error_code": "POLICY_DENIED",
                           "error_description": "denied by policy"}) for a in answers), answers
    # The service may read every document: a missing one is a 404 for it.
    assert call(quiet, svc, "GET", "/documents/999999")[0] == 404


def test_a_change_reaches_the_ledger_within_its_poll_interval(sigil, world):
    w, svc = world, world["service"]
    status, body = call(w, svc, "POST", "/documents", {"amount": 1})
    doc = body["id"]
    denied(call(w, svc, "DELETE", f"/documents/{doc}"), "ach-never-delete")
    sigil.cli("policy", "delete", "--realm", "ledger", "--name", "ach-never-delete")
    policy(sigil, "ach-cleanup", ["--client", "ach-processor"], "ALLOW", ["db:Delete"], [f"{DOC}.transaction"],
           ["context.document.amount < 10"])
    started = time.monotonic()
    while (out := call(w, svc, "DELETE", f"/documents/{doc}"))[0] != 200:
        assert time.monotonic() - started < 3, out
        time.sleep(0.05)
    assert out[1]["policy"] == "ach-cleanup"
    print(f"ledger applied the new bundle after {1000 * (time.monotonic() - started):.0f} ms")


def test_deeply_nested_assertions_crash_neither_sigil_nor_the_ledger(sigil, world):
    w = world
    deep = "(" * 16 + "context.document.amount < 5" + ")" * 16
    policy(sigil, "deep", ["--client", "ach-processor"], "ALLOW", ["db:Insert"], [f"{DOC}.deep"], [deep])
    # The ledger compiles the new bundle on its next poll (every 200 ms here) and goes on.
    time.sleep(1)
    assert call(w, w["service"], "POST", "/documents", {"amount": 1})[0] == 201
    assert requests.get(f"{sigil.base}/healthz", timeout=10).status_code == 200


def test_the_bundle_is_signed_addressed_and_served_only_to_resource_servers(sigil, world):
    w = world
    url = w["meta"]["policy_bundle_endpoint"]
    assert url == f"{sigil.issuer('ledger')}/policies"
    assert requests.get(url, timeout=10).status_code == 401
    res = requests.get(url, auth=(w["svc"]["client_id"], w["svc"]["client_secret"]), timeout=10)
    assert res.status_code == 403 and res.json()["error"] == "unauthorized_client"
    assert requests.get(url, auth=("ledger-rs", "x" * 43), timeout=10).status_code == 401
    auth = ("ledger-rs", w["rs"]["client_secret"])
    res = requests.get(url, auth=auth, timeout=10)
    assert res.status_code == 200 and res.headers["Content-Type"] == "application/policies+jwt"
    etag = res.headers["ETag"]
    header = jwt.get_unverified_header(res.text)
    assert header["typ"] == "policies+jwt"
    key = jwt.PyJWKClient(w["meta"]["jwks_uri"]).get_signing_key_from_jwt(res.text)
    bundle = jwt.decode(res.text, key.key, algorithms=["ES256"], options={"verify_aud": False})
    assert bundle["iss"] == w["meta"]["issuer"] and bundle["aud"] == "ledger-rs"
    assert bundle["version"] == 9 and bundle["groups_claim"] == "groups"
    names = {p["name"] for p in bundle["policies"]}
    assert "ach-insert-small" in names and len(names) == 9
    # Unchanged: 304 without a body; changed: a new version and a new ETag.
    res = requests.get(url, auth=auth, headers={"If-None-Match": etag}, timeout=10)
    assert res.status_code == 304 and res.content == b""
    sigil.cli("policy", "delete", "--realm", "ledger", "--name", "ach-memo")
    res = requests.get(url, auth=auth, headers={"If-None-Match": etag}, timeout=10)
    assert res.status_code == 200 and res.headers["ETag"] != etag
    assert jwt.decode(res.text, key.key, algorithms=["ES256"], options={"verify_aud": False})["version"] == 10


def test_policies_are_checked_when_written_and_audited(sigil, world):
    def refused(*args):
        try:
            sigil.cli("policy", "create", "--realm", "ledger", "--name", "bad", "--effect", "ALLOW", *args)
        except Exception as e:  # CalledProcessError
            return e.stderr
        raise AssertionError(f"accepted: {args}")

    base = ["--action", "db:Insert", "--resource", "x"]
    # Another realm's client, an unknown user or group: not this realm's principals.
    assert "no client" in refused("--client", "branch-teller", *base)
    assert "no user" in refused("--user", "nobody", *base)
    assert "no group" in refused("--group", "auditors", *base)
    # Assertions that would run long or read other things are refused when written.
    for bad in [
        "context.document.items.exists(i, context.document.items.exists(j, i == j))",
        "context.document.items.map(x, x + x).size() > 0",
        "context.request.ip == '10.0.0.1'",
        "request.amount < 5",
        "context.document.s.matches(context.document.pattern)",
        "(" * 40 + "true" + ")" * 40,
        "context.document.amount <=",
    ]:
        assert "assertions" in refused("--client", "ach-processor", *base, "--assert", bad), bad
    assert "actions" in refused("--client", "ach-processor", "--action", "db Insert", "--resource", "x")
    assert "effect" in refused("--client", "ach-processor", "--effect", "MAYBE", *base)
    assert sigil.cli_json("policy", "list", "--realm", "ledger")["version"] == 9

    sigil.cli("policy", "delete", "--realm", "ledger", "--name", "ach-memo")
    events = [json.loads(line) for line in sigil.cli("audit", "export").splitlines() if line.strip()]
    kinds = [e["kind"] for e in events if e["kind"].startswith("policy.")]
    assert kinds.count("policy.created") == 9 and kinds.count("policy.deleted") == 1
    assert "intact" in sigil.cli("audit", "verify")
