"""The admin API from outside: its OpenAPI document checked by an independent validator
(openapi-spec-validator), then Schemathesis's property-based tests against the live API with an
admin token from Sigil itself, looking for any 5xx, any response that breaks the document, and
any request the document forbids that the API accepts."""

import json
import os
import subprocess
import sys
import tempfile

import pytest
import requests
from openapi_spec_validator import validate

from conftest import Sigil

HERE = os.path.dirname(os.path.abspath(__file__))
ST = os.path.join(os.path.dirname(sys.executable), "st")


@pytest.fixture
def admin_sigil():
    with tempfile.TemporaryDirectory() as d:
        s = Sigil(d)
        boot = s.cli_json("admin", "bootstrap")
        s.cli("realm", "create", "customers")
        s.cli("realm", "create", "staff")
        s.start(SIGIL_ADMIN_REALM="admin")
        try:
            yield s, boot
        finally:
            s.stop()


def admin_token(s, client_id, secret, scope=None):
    data = {"grant_type": "client_credentials"}
    if scope:
        data["scope"] = scope
    r = requests.post(f"{s.issuer('admin')}/oauth2/token", data=data, auth=(client_id, secret), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def test_the_openapi_document_is_valid_openapi_3_1(admin_sigil):
    s, _ = admin_sigil
    r = requests.get(f"{s.base}/admin/openapi.json", timeout=10)
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    # The CLI prints the same document.
    assert json.loads(s.cli("admin", "openapi")) == doc


def test_schemathesis_finds_no_5xx_and_no_response_outside_the_document(admin_sigil):
    s, boot = admin_sigil
    token = admin_token(s, boot["client_id"], boot["client_secret"])
    out = subprocess.run(
        [ST, "run", f"{s.base}/admin/openapi.json",
         "-H", f"Authorization: Bearer {token}",
         "--checks", "all", "--exclude-checks", "positive_data_acceptance",
         "--max-examples", os.environ.get("SCHEMATHESIS_EXAMPLES", "40"),
         "--seed", os.environ.get("SCHEMATHESIS_SEED", "20261202"),
         "--request-timeout", "10"],
        cwd=HERE, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    assert " passed" in out.stdout
    # Whatever it created, changed or refused, the audit chain is intact.
    verify = requests.post(f"{s.base}/admin/audit/verify", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    if verify.status_code == 200:  # Schemathesis may have disabled the admin client meanwhile
        assert verify.json()["status"] == "intact"
    else:
        assert verify.status_code == 401
        assert s.cli("audit", "verify").startswith("audit chain intact")


def test_a_realm_admin_token_cannot_reach_another_realm(admin_sigil):
    s, boot = admin_sigil
    root = admin_token(s, boot["client_id"], boot["client_secret"])
    h = {"Authorization": f"Bearer {root}"}
    made = requests.post(f"{s.base}/admin/realms/admin/clients", headers=h, timeout=10, json={
        "client_id": "ops-customers", "scope": "sigil:admin:customers", "audience": "sigil-admin"})
    assert made.status_code == 201, made.text
    ops = admin_token(s, "ops-customers", made.json()["client_secret"])
    h = {"Authorization": f"Bearer {ops}"}
    ok = requests.post(f"{s.base}/admin/realms/customers/groups", headers=h, timeout=10,
                       json={"name": "retail", "scopes": "balances:read"})
    assert ok.status_code == 201, ok.text
    no = requests.post(f"{s.base}/admin/realms/staff/groups", headers=h, timeout=10,
                       json={"name": "retail", "scopes": "balances:read"})
    assert no.status_code == 403
    assert no.headers["content-type"] == "application/problem+json"
    assert no.json()["error_code"] == "INSUFFICIENT_SCOPE"
