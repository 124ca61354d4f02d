"""Four-eyes approval through the real binary: in a realm that requires approval a dangerous change
is only a request; its requester cannot approve it; a second admin's approval applies it exactly
once, even with many approvals at once (SQLite and PostgreSQL); an expired or rejected request
cannot be approved; lowering the guard is itself a request."""

import base64
import json
import os
import re
import sqlite3
import subprocess
import tempfile
import threading
import time

import pyotp
import pytest
import requests

from conftest import SIGIL
from test_aws_secrets import needs_pg, pg_role, role_url  # noqa: F401 (fixture)


def run(db, kek, operator, *args):
    return subprocess.run([SIGIL, "--database-url", db, "--kek-file", kek, "--operator", operator, *args],
                          capture_output=True, text=True, timeout=120)


def ok(out):
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip().startswith(("{", "[")) else out.stdout


def token(sigil, client_id, secret):
    return requests.post(f"{sigil.issuer('staff')}/oauth2/token", auth=(client_id, secret), timeout=10,
                         data={"grant_type": "client_credentials"})


def approve_at_once(db, kek, change_id, approvers):
    outs = [None] * len(approvers)

    def go(i, who):
        outs[i] = run(db, kek, who, "change", "approve", change_id)

    threads = [threading.Thread(target=go, args=(i, who)) for i, who in enumerate(approvers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outs


def test_four_eyes_on_the_cli(sigil):
    db, kek = sigil.db, sigil.kek
    alice = lambda *a: run(db, kek, "alice", *a)  # noqa: E731
    bob = lambda *a: run(db, kek, "bob", *a)  # noqa: E731
    ok(alice("realm", "create", "staff"))
    svc = ok(alice("client", "create", "--realm", "staff", "--id", "svc", "--scope", "a", "--audience", "ledger"))
    ok(alice("user", "create", "--realm", "staff", "--username", "dave"))
    # Raising the guard takes effect at once.
    assert ok(alice("realm", "set-approval", "staff", "--require-approval", "true", "--protected", "true")) == {
        "realm": "staff", "require_approval": True, "protected": True}

    # A key revocation is only a request: the key is still there.
    kid = ok(alice("key", "list", "--realm", "staff", "--json"))[0]["kid"]
    # --kid=K: a kid may begin with "-", which would otherwise read as an option.
    out = alice("key", "revoke", "--realm", "staff", f"--kid={kid}")
    req = ok(out)["change_request"]
    assert req["state"] == "pending" and req["requested_by"] == "cli:alice"
    assert "second admin" in out.stderr
    assert [k["kid"] for k in ok(alice("key", "list", "--realm", "staff", "--json"))] == [kid]
    # Its requester cannot approve it.
    out = alice("change", "approve", req["id"])
    assert out.returncode != 0 and "another admin must" in out.stderr
    # Another admin can, once.
    done = ok(bob("change", "approve", req["id"]))
    assert done["change"]["state"] == "applied" and done["change"]["decided_by"] == "cli:bob"
    assert kid not in [k["kid"] for k in ok(alice("key", "list", "--realm", "staff", "--json"))]
    out = run(db, kek, "carol", "change", "approve", req["id"])
    assert out.returncode != 0 and "already decided" in out.stderr

    # A secret rotation in a protected realm: eight approvals at once apply it exactly once.
    req = ok(alice("client", "rotate-secret", "--realm", "staff", "--id", "svc"))["change_request"]
    assert token(sigil, "svc", svc["client_secret"]).status_code == 200
    outs = approve_at_once(db, kek, req["id"], ["bob", "carol", "erin", "frank"] * 2)
    winners = [json.loads(o.stdout) for o in outs if o.returncode == 0]
    assert len(winners) == 1, [o.stderr for o in outs]
    assert all("already decided" in o.stderr for o in outs if o.returncode != 0)
    new_secret = winners[0]["outcome"]["client_secret"]
    # A CLI change reaches a running node within its cache_ttl_secs (5 s).
    deadline = time.time() + 8
    while token(sigil, "svc", svc["client_secret"]).status_code != 401:
        assert time.time() < deadline, "the old secret still works"
        time.sleep(0.2)
    assert token(sigil, "svc", new_secret).status_code == 200
    # The stored request never holds the secret.
    shown = ok(alice("change", "show", req["id"]))
    assert new_secret not in json.dumps(shown)

    # An expired request cannot be approved and changes nothing.
    req = ok(alice("client", "delete", "--realm", "staff", "--id", "svc"))["change_request"]
    with sqlite3.connect(db.removeprefix("sqlite://")) as c:
        c.execute("UPDATE change_requests SET expires_at = 1 WHERE id = ?", (req["id"],))
    assert ok(alice("change", "show", req["id"]))["state"] == "expired"
    out = bob("change", "approve", req["id"])
    assert out.returncode != 0 and "expired" in out.stderr
    assert token(sigil, "svc", new_secret).status_code == 200

    # Another admin cannot replace the client's credentials alone either (set-auth).
    out = alice("client", "set-auth", "--realm", "staff", "--id", "svc", "--auth", "client_secret")
    assert out.returncode != 0 and "protected" in out.stderr
    # Without --operator, four-eyes changes are refused (no anonymous requests or approvals).
    out = subprocess.run([SIGIL, "--database-url", db, "--kek-file", kek, "client", "delete", "--realm", "staff",
                          "--id", "svc"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--operator" in out.stderr
    # Operator names do not differ by case.
    req_case = ok(alice("client", "delete", "--realm", "staff", "--id", "svc"))["change_request"]
    out = run(db, kek, "ALICE", "change", "approve", req_case["id"])
    assert out.returncode != 0 and "another admin must" in out.stderr
    ok(alice("change", "reject", req_case["id"]))

    # A user with sign-in factors is not enrolled again through an invite (that would replace
    # them without a second admin): dave enrols once, then a second invite is refused.
    invite = sigil.cli("--public-url", sigil.base, "user", "invite", "--realm", "staff", "--username", "dave").strip()
    browser = requests.Session()
    page = browser.get(invite, timeout=10).text
    secret = re.search(r'data-secret="([A-Z2-7]+)"', page).group(1)
    res = browser.post(f"{sigil.issuer('staff')}/enrol", timeout=10, data={
        "csrf": re.search(r'name="csrf" value="([^"]*)"', page).group(1),
        "password": "correct horse battery staple", "code": pyotp.TOTP(secret).now()})
    assert res.status_code == 200
    out = alice("--public-url", sigil.base, "user", "invite", "--realm", "staff", "--username", "dave")
    assert out.returncode != 0 and "remove-second-factors" in out.stderr

    # Three invites out for one new user, used at the same moment: exactly one enrols.
    ok(alice("user", "create", "--realm", "staff", "--username", "erin"))
    pages = []
    for _ in range(3):
        link = sigil.cli("--public-url", sigil.base, "user", "invite", "--realm", "staff", "--username", "erin").strip()
        session = requests.Session()
        page = session.get(link, timeout=10).text
        pages.append((session, page))
    barrier = threading.Barrier(3)
    answers = [None] * 3

    def enrol(i):
        session, page = pages[i]
        secret = re.search(r'data-secret="([A-Z2-7]+)"', page).group(1)
        data = {"csrf": re.search(r'name="csrf" value="([^"]*)"', page).group(1),
                "password": f"correct horse battery staple {i}", "code": pyotp.TOTP(secret).now()}
        barrier.wait()
        answers[i] = session.post(f"{sigil.issuer('staff')}/enrol", data=data, timeout=30)

    threads = [threading.Thread(target=enrol, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    enrolled = [a for a in answers if a.status_code == 200 and "recovery codes" in a.text.lower()]
    assert len(enrolled) == 1, [a.status_code for a in answers]

    # A protected realm's client CAs are credentials too: not replaced by one admin.
    out = alice("realm", "set-mtls", "staff", "--clear")
    assert out.returncode != 0 and "protected" in out.stderr

    # A rejected request cannot be approved.
    req = ok(alice("user", "remove-second-factors", "--realm", "staff", "--username", "dave"))["change_request"]
    assert ok(bob("change", "reject", req["id"]))["state"] == "rejected"
    out = run(db, kek, "carol", "change", "approve", req["id"])
    assert out.returncode != 0 and "already decided" in out.stderr

    # A KEK rotation while a realm requires approval: a request too.
    new_kek = os.path.join(os.path.dirname(kek), "kek2")
    with open(os.open(new_kek, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
    req = ok(alice("kek", "rotate", "--new-kek", new_kek))["change_request"]
    assert req["change"] == {"kind": "kek_rotate", "to": f"file:{new_kek}"}

    # Lowering the guard is itself a request; raised again it is immediate.
    req2 = ok(alice("realm", "set-approval", "staff", "--require-approval", "false"))["change_request"]
    assert ok(bob("change", "approve", req2["id"]))["change"]["state"] == "applied"
    out = ok(alice("client", "rotate-secret", "--realm", "staff", "--id", "svc"))
    assert "change_request" in out, "still protected"

    # Every step is in the audit log, and the chain is intact.
    audit = sigil.cli("audit", "export")
    for kind in ("change.requested", "change.approved", "change.applied", "change.rejected"):
        assert kind in audit, kind
    assert new_secret not in audit
    assert "intact" in sigil.cli("audit", "verify")
    listed = ok(alice("change", "list"))
    assert {c["state"] for c in listed} >= {"applied", "expired", "rejected", "pending"}


@needs_pg
def test_concurrent_approvals_apply_once_on_postgresql(pg_role):
    db = role_url(pg_role, pg_role["password"])
    with tempfile.TemporaryDirectory() as d:
        kek = f"{d}/kek"
        ok(run(db, kek, "alice", "realm", "create", "staff"))
        ok(run(db, kek, "alice", "client", "create", "--realm", "staff", "--id", "svc", "--scope", "a",
               "--audience", "ledger"))
        ok(run(db, kek, "alice", "realm", "set-approval", "staff", "--protected", "true"))
        for _ in range(3):
            req = ok(run(db, kek, "alice", "client", "rotate-secret", "--realm", "staff", "--id", "svc"))
            outs = approve_at_once(db, kek, req["change_request"]["id"], ["bob", "carol", "erin", "alice"] * 2)
            assert sum(o.returncode == 0 for o in outs) == 1, [o.stderr for o in outs]
        audit = subprocess.run([SIGIL, "--database-url", db, "--kek-file", kek, "audit", "export"],
                               capture_output=True, text=True, check=True).stdout
        rotated = [json.loads(line) for line in audit.splitlines() if '"client.secret_rotated"' in line]
        assert len(rotated) == 3
