"""The hosted pages in a real browser: headless Chromium driven by Playwright, with a CDP virtual
authenticator (CTAP2, internal transport, resident keys, user verification). Enrol a passkey via
the invite link, sign in with it from a test client's authorization request (keyboard only, on a
phone-sized screen), exchange the code, refresh, sign out everywhere, find the refresh token dead.
Screenshots of the enrolment and sign-in pages are written to $SIGIL_SCREENSHOT_DIR."""

import base64
import hashlib
import os
import secrets
import tempfile
import time
from urllib.parse import parse_qs, urlencode, urlparse

import jwt
import pytest
import requests

CHROMIUM = os.environ.get("SIGIL_CHROMIUM", "/usr/bin/chromium")
CALLBACK = "http://localhost:9/callback"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Chromium is not installed")


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        context = browser.new_context(viewport={"width": 390, "height": 844})
        page = context.new_page()
        cdp = context.new_cdp_session(page)
        cdp.send("WebAuthn.enable")
        auth = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
            "hasUserVerification": True, "isUserVerified": True, "automaticPresenceSimulation": True,
        }})
        # The test client's redirect target: answered in the browser, no server needed.
        page.route("http://localhost:9/**", lambda route: route.fulfill(status=200, body="client callback"))
        yield page, cdp, auth["authenticatorId"]
        browser.close()


def press_until_focused(page, name, limit=20):
    """Keyboard only: Tab to the button with this accessible name, then press Enter."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement && document.activeElement.textContent.trim()") == name:
            page.keyboard.press("Enter")
            return
    raise AssertionError(f"could not reach {name!r} with the keyboard")


def test_passkey_enrolment_and_sign_in_in_chromium(sigil, browser_page):
    page, cdp, authenticator = browser_page
    shots = os.environ.get("SIGIL_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="sigil-shots-")
    os.makedirs(shots, exist_ok=True)
    issuer = sigil.issuer("customers")
    assert issuer.startswith("http://localhost:"), "WebAuthn needs a localhost origin"
    sigil.cli_json("realm", "create", "customers", "--display-name", "Example Bank")
    sigil.cli("group", "create", "--realm", "customers", "--name", "retail", "--scope", "balances:read")
    sigil.cli_json("client", "create", "--realm", "customers", "--id", "mobile", "--scope", "balances:read",
                   "--audience", "ledger", "--redirect-uri", CALLBACK, "--public")
    sigil.cli_json("user", "create", "--realm", "customers", "--username", "carol", "--group", "retail")
    invite = sigil.cli("--public-url", sigil.base, "user", "invite", "--realm", "customers", "--username", "carol").strip()

    # Enrolment page: a passkey, created by the virtual authenticator.
    logs = []
    page.on("console", lambda m: logs.append(m.text))
    page.on("pageerror", lambda e: logs.append(str(e)))
    page.on("response", lambda r: logs.append(f"{r.status} {r.url}"))
    page.goto(invite)
    assert page.get_by_label("Choose a password").is_visible()  # labels are tied to their fields
    page.screenshot(path=os.path.join(shots, "enrol.png"), full_page=True)
    press_until_focused(page, "Add a passkey")
    try:
        page.get_by_role("status").get_by_text("Passkey added").wait_for(timeout=10000)
    except Exception:
        raise AssertionError("enrolment status: " + page.locator("#passkey-status").inner_text() + " | " + " ; ".join(logs))
    creds = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
    assert len(creds) == 1 and creds[0]["isResidentCredential"]

    # An authorization request from the test client; sign in with the passkey, no username typed.
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({"response_type": "code", "client_id": "mobile", "redirect_uri": CALLBACK,
                       "scope": "openid balances:read", "state": "xyz", "nonce": "n1",
                       "code_challenge": challenge, "code_challenge_method": "S256"})
    page.goto(f"{issuer}/oauth2/authorize?{query}")
    page.wait_for_url(f"{issuer}/login")
    page.screenshot(path=os.path.join(shots, "login.png"), full_page=True)
    press_until_focused(page, "Sign in with a passkey")
    page.wait_for_url("http://localhost:9/callback**")
    params = parse_qs(urlparse(page.url).query)
    assert params["state"] == ["xyz"] and params["iss"] == [issuer]

    meta = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    tokens = requests.post(meta["token_endpoint"], timeout=10, data={
        "grant_type": "authorization_code", "client_id": "mobile", "code": params["code"][0],
        "redirect_uri": CALLBACK, "code_verifier": verifier}).json()
    access = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert access["amr"] == ["hwk", "user"]
    assert access["groups"] == ["retail"]
    idt = jwt.decode(tokens["id_token"], jwt.PyJWKClient(meta["jwks_uri"]).get_signing_key_from_jwt(tokens["id_token"]).key,
                     algorithms=["ES256"], audience="mobile", issuer=issuer)
    assert idt["nonce"] == "n1" and idt["preferred_username"] == "carol"

    refreshed = requests.post(meta["token_endpoint"], timeout=10, data={
        "grant_type": "refresh_token", "client_id": "mobile", "refresh_token": tokens["refresh_token"]}).json()
    assert "access_token" in refreshed

    # "Confirm it's you" with the passkey, in the page's own script under its CSP.
    page.goto(f"{issuer}/account/reauth")
    page.get_by_role("button", name="Confirm with a passkey").click()
    page.wait_for_url(f"{issuer}/account")
    assert page.locator('#security-events li[data-kind="user.reauthenticated"]').count() == 1

    # Sign out everywhere from the account page; the refresh token is dead.
    page.goto(f"{issuer}/account")
    page.screenshot(path=os.path.join(shots, "account.png"), full_page=True)
    page.get_by_role("button", name="Sign out everywhere").click()
    page.get_by_text("Every session and app sign-in of yours has ended.").wait_for()
    dead = requests.post(meta["token_endpoint"], timeout=10, data={
        "grant_type": "refresh_token", "client_id": "mobile", "refresh_token": refreshed["refresh_token"]})
    assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"
    for name in ["enrol.png", "login.png", "account.png"]:
        assert os.path.getsize(os.path.join(shots, name)) > 1000
    print(f"screenshots in {shots}")


def test_password_totp_fallback_app_confirmation_and_reauth_in_chromium(sigil, browser_page):
    """The fallback in a real browser with the pages' CSP enforced: the sign-in form is answered by
    a redirect to the client's origin (form-action names exactly that origin); the public app's
    confirmation page on a silent re-authorization; "confirm it's you" on the account page."""
    import pyotp

    page, _cdp, _auth = browser_page
    shots = os.environ.get("SIGIL_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="sigil-shots-")
    os.makedirs(shots, exist_ok=True)
    issuer = sigil.issuer("customers")
    sigil.cli_json("realm", "create", "customers", "--display-name", "Example Bank")
    sigil.cli_json("client", "create", "--realm", "customers", "--id", "mobile", "--scope", "balances:read",
                   "--audience", "ledger", "--redirect-uri", CALLBACK, "--public")
    sigil.cli_json("user", "create", "--realm", "customers", "--username", "dave")
    invite = sigil.cli("--public-url", sigil.base, "user", "invite", "--realm", "customers", "--username", "dave").strip()
    violations = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)

    page.goto(invite)
    secret = page.locator("#totp-secret").inner_text().strip()
    totp = pyotp.TOTP(secret)
    page.get_by_label("Choose a password").fill("correct horse battery staple")
    page.get_by_label("Code shown by the app").fill(totp.now())
    page.get_by_role("button", name="Finish setting up").click()
    page.get_by_text("Save your recovery codes").wait_for()
    recovery_code = page.locator("ol.codes li").first.inner_text().strip()

    def authorize():
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        query = urlencode({"response_type": "code", "client_id": "mobile", "redirect_uri": CALLBACK,
                           "scope": "openid balances:read", "state": "st", "code_challenge": challenge,
                           "code_challenge_method": "S256"})
        page.goto(f"{issuer}/oauth2/authorize?{query}")
        return verifier

    def redeem(verifier):
        code = parse_qs(urlparse(page.url).query)["code"][0]
        res = requests.post(f"{issuer}/oauth2/token", timeout=10, data={
            "grant_type": "authorization_code", "client_id": "mobile", "code": code,
            "redirect_uri": CALLBACK, "code_verifier": verifier})
        assert res.status_code == 200, res.text
        return res.json()

    verifier = authorize()
    page.wait_for_url(f"{issuer}/login")
    assert page.get_by_text("to continue to mobile").is_visible()
    page.get_by_label("Username").fill("dave")
    page.get_by_label("Password").fill("correct horse battery staple")
    # The next step's code: the enrolment spent this step's.
    page.get_by_label("One-time code or recovery code").fill(totp.at(time.time() + 30))
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url("http://localhost:9/callback**", timeout=10000)
    tokens = redeem(verifier)
    assert jwt.decode(tokens["access_token"], options={"verify_signature": False})["amr"] == ["pwd", "otp"]

    # A second authorization with the live session: the public app is named and confirmed first.
    verifier = authorize()
    page.wait_for_url(f"{issuer}/consent")
    page.screenshot(path=os.path.join(shots, "consent.png"), full_page=True)
    page.get_by_role("button", name="Continue to mobile").click()
    page.wait_for_url("http://localhost:9/callback**", timeout=10000)
    redeem(verifier)

    # The account page lists the enrolment; the reauth page takes password + code in the session.
    page.goto(f"{issuer}/account")
    assert page.locator('#security-events li[data-kind="user.enrolled"]').count() == 1
    page.goto(f"{issuer}/account/reauth")
    page.screenshot(path=os.path.join(shots, "reauth.png"), full_page=True)
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_label("One-time code or recovery code").fill(recovery_code)
    page.get_by_role("button", name="Confirm", exact=True).click()
    page.wait_for_url(f"{issuer}/account")
    assert page.locator('#security-events li[data-kind="user.reauthenticated"]').count() == 1
    assert not violations, violations
