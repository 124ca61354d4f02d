"""`/metrics` read by Prometheus's own text parser (prometheus_client), before and after tokens,
refusals and sign-ins: the counters move by exactly what was done, and no label carries a
client, a user or a secret."""

import socket
import tempfile

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import Sigil
from test_signin import PASSWORD, customers, field, sign_in  # noqa: F401  (fixture reused)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def sigil():
    """The conftest fixture, with the metrics listener on."""
    with tempfile.TemporaryDirectory() as d:
        s = Sigil(d)
        s.metrics = f"http://127.0.0.1:{free_port()}/metrics"
        s.start(SIGIL_METRICS_BIND=s.metrics.split("/")[2])
        try:
            yield s
        finally:
            s.stop()


def scrape(s):
    r = requests.get(s.metrics, timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for fam in text_string_to_metric_families(r.text):
        for smp in fam.samples:
            samples[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    return samples, r.text


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def test_counters_move_with_tokens_refusals_and_sign_ins(sigil, customers):  # noqa: F811
    s = sigil
    svc = s.cli_json("client", "create", "--realm", "customers", "--id", "ach-processor",
                     "--scope", "tx:post:ach", "--audience", "ledger")
    before, _ = scrape(s)
    token_url = f"{s.issuer('customers')}/oauth2/token"
    for _ in range(3):
        r = requests.post(token_url, data={"grant_type": "client_credentials"},
                          auth=("ach-processor", svc["client_secret"]), timeout=10)
        assert r.status_code == 200
    r = requests.post(token_url, data={"grant_type": "client_credentials", "scope": "balances:write"},
                      auth=("ach-processor", svc["client_secret"]), timeout=10)
    assert r.json()["error"] == "invalid_scope"
    for _ in range(2):
        r = requests.post(token_url, data={"grant_type": "client_credentials"},
                          auth=("ach-processor", "not-the-secret-not-the-secret-xx"), timeout=10)
        assert r.status_code == 401
    requests.get(f"{s.issuer('customers')}/jwks", timeout=10)
    requests.get(f"{s.issuer('customers')}/.well-known/openid-configuration", timeout=10)

    # One good sign-in (password + TOTP), one with the wrong password.
    meta, client, totp = customers["meta"], customers["client"], customers["totp"]
    auth = (f"{meta['authorization_endpoint']}?response_type=code&client_id={client['client_id']}"
            "&redirect_uri=http%3A%2F%2Flocalhost%3A8765%2Fcallback&scope=openid&state=s"
            "&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256")
    assert "code=" in sign_in(meta, totp, requests.Session(), auth)
    browser = requests.Session()
    res = browser.get(auth, allow_redirects=False, timeout=10)
    form = browser.get(res.headers["Location"], timeout=10).text
    res = browser.post(res.headers["Location"], allow_redirects=False, timeout=10,
                       data={"csrf": field(form, "csrf"), "username": "bob",
                             "password": "wrong " + PASSWORD, "code": "000000"})
    assert res.status_code == 401

    after, text = scrape(s)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("sigil_token_grants_total", realm="customers", grant_type="client_credentials",
                 outcome="issued") == 3
    refused = {k: v - before.get(k, 0) for k, v in after.items()
               if k[0] == "sigil_refusals_total" and ("realm", "customers") in k[1]
               and ("kind", "token.refused") in k[1]}
    assert sum(refused.values()) == 3, refused
    assert moved("sigil_sign_ins_total", realm="customers", method="password_otp", outcome="succeeded") == 1
    assert moved("sigil_sign_ins_total", realm="customers", method="password_otp", outcome="failed") == 1
    ep = "/realms/{realm}/oauth2/token"
    assert moved("sigil_http_request_duration_seconds_count", endpoint=ep) == 6
    assert moved("sigil_http_request_duration_seconds_bucket", endpoint=ep, le="+Inf") == 6
    assert moved("sigil_http_request_duration_seconds_count", endpoint="/realms/{realm}/jwks") == 1
    assert moved("sigil_http_request_duration_seconds_count",
                 endpoint="/realms/{realm}/.well-known/openid-configuration") == 1
    assert value(after, "sigil_signing_key_age_seconds", realm="customers") >= 0
    assert 0 < value(after, "sigil_signing_key_next_rotation_seconds", realm="customers") <= 30 * 86400
    assert value(after, "sigil_audit_records_total") > value(before, "sigil_audit_records_total")
    assert value(after, "sigil_db_pool_max_connections") >= 1

    # Bounded labels: nothing names a client, a user, an address or a secret.
    for needle in ["ach-processor", "bob", "127.0.0.1", svc["client_secret"], "not-the-secret"]:
        assert needle not in text.replace(s.metrics, ""), needle
    # Requests for realms that do not exist add no label values.
    requests.get(f"{s.base}/realms/no-such-realm-{free_port()}/jwks", timeout=10)
    assert "no-such-realm" not in scrape(s)[1]
