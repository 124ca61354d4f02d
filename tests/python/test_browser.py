"""The hosted pages in a real browser: headless Chromium driven by Playwright, the pages' CSP
enforced as Chromium enforces it, a CDP virtual authenticator (CTAP2, internal transport, resident
keys, user verification). Each journey runs in English and in German (the browser's
Accept-Language), keyboard only where a person would type, from an authorization request of a
client whose redirect URI is on another origin, and lands there with `code`, `state` and `iss`.

Every page is photographed at 390x844 and 1280x800 into $SIGIL_SCREENSHOT_DIR/<lang>/ and checked
with axe-core (from the npm registry; scripts/test installs it): no serious or critical violation.
The authenticator app's QR code is decoded with zbarimg and must carry the same otpauth:// URI."""

import base64
import hashlib
import http.server
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from urllib.parse import parse_qs, unquote, urlencode, urlparse

import jwt
import pytest
import requests

CHROMIUM = os.environ.get("SIGIL_CHROMIUM", "/usr/bin/chromium")
AXE_JS = os.environ.get("SIGIL_AXE_JS", os.path.expanduser("~/.cache/sigil-axe/node_modules/axe-core/axe.min.js"))


class _ClientApp(http.server.BaseHTTPRequestHandler):
    """The test client's own origin: a real listener on another port, answering its redirect URI
    and home page (Playwright's routing does not see requests that follow a redirect)."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = b"<!doctype html><title>client</title><p>client callback</p>"
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


_CLIENT = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ClientApp)
threading.Thread(target=_CLIENT.serve_forever, daemon=True).start()
CLIENT_ORIGIN = f"http://localhost:{_CLIENT.server_address[1]}"
CALLBACK = f"{CLIENT_ORIGIN}/callback"
APP_HOME = f"{CLIENT_ORIGIN}/home"
SIGNED_OUT = f"{CLIENT_ORIGIN}/signed-out"
PASSWORD = "correct horse battery staple"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Chromium is not installed")

# What a customer must never see on a page: raw Unix times, method codes.
RAW_TIME = re.compile(r"\b1[6-9]\d{8}\b")
METHOD_CODES = re.compile(r"\b(hwk|pwd|otp|amr)\b")

TEXT = {
    "en": {"add_passkey": "Add a passkey", "passkey_signin": "Sign in with a passkey", "done": "You're all set",
           "username": "Username", "password": "Password", "code": "One-time code or recovery code",
           "sign_in": "Sign in", "choose_password": "Choose a password", "app_code": "Code shown by the app",
           "finish": "Finish setting up", "recovery": "Save your recovery codes", "continue": "Continue",
           "sign_out_here": "Sign out of this browser", "signed_out": "You're signed out",
           "logout_confirm": "Sign out",
           "method_passkey": "with a passkey", "last_used": "Last used", "method_password": "with a password and authenticator code",
           "replace": "Replace your authenticator app", "setup": "Set up an authenticator app",
           "code_mismatch": "did not match", "generic": "is not right", "disabled": "is disabled",
           "invite_used": "already used or is not valid", "timed_out": "Sign-in timed out", "not_started": "Start from your app", "throttled": "Wait",
           "cancel": "Cancel and return to Mobile Banking", "ack": "I have saved these codes somewhere safe"},
    "de": {"add_passkey": "Passkey hinzufügen", "passkey_signin": "Mit einem Passkey anmelden", "done": "Alles eingerichtet",
           "username": "Benutzername", "password": "Passwort", "code": "Einmalcode oder Wiederherstellungscode",
           "sign_in": "Anmelden", "choose_password": "Passwort wählen", "app_code": "Von der App angezeigter Code",
           "finish": "Einrichtung abschließen", "recovery": "Speichern Sie Ihre Wiederherstellungscodes", "continue": "Weiter",
           "sign_out_here": "In diesem Browser abmelden", "signed_out": "Sie sind abgemeldet",
           "logout_confirm": "Abmelden",
           "method_passkey": "mit einem Passkey", "last_used": "Zuletzt verwendet", "method_password": "mit Passwort und Authenticator-Code",
           "replace": "Authenticator-App ersetzen", "setup": "Authenticator-App einrichten",
           "code_mismatch": "stimmt nicht", "generic": "stimmen nicht", "disabled": "ist deaktiviert",
           "invite_used": "bereits verwendet oder ist ungültig", "timed_out": "Zeit für die Anmeldung abgelaufen", "not_started": "Beginnen Sie in Ihrer App", "throttled": "Warten Sie",
           "cancel": "Abbrechen und zurück zu Mobile Banking", "ack": "Ich habe diese Codes sicher gespeichert"},
}
ZONES = {"en": "America/New_York", "de": "Europe/Berlin"}
# What the pages write for those zones, winter or summer (the browser's zone, from the page's cookie).
ZONE_NAMES = {"en": ("EST", "EDT"), "de": ("CET", "CEST")}


class Browser:
    """One Chromium context in a language and time zone, with a virtual authenticator, CSP
    violations collected, screenshots and axe checks of every page."""

    def __init__(self, playwright, lang, shots):
        self.lang, self.t = lang, TEXT[lang]
        self.shots = os.path.join(shots, lang)
        os.makedirs(self.shots, exist_ok=True)
        self.browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        self.context = self.browser.new_context(viewport={"width": 390, "height": 844},
                                                locale={"en": "en-US", "de": "de-DE"}[lang],
                                                timezone_id=ZONES[lang], accept_downloads=True)
        self.context.grant_permissions(["clipboard-read", "clipboard-write"])
        self.page = self.context.new_page()
        self.cdp = self.context.new_cdp_session(self.page)
        self.cdp.send("WebAuthn.enable")
        self.authenticator = self.cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
            "hasUserVerification": True, "isUserVerified": True, "automaticPresenceSimulation": True,
        }})["authenticatorId"]
        self.problems = []
        self.page.on("console", lambda m: self.problems.append(m.text) if "Content Security Policy" in m.text else None)
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))
        self.shot_names = []
        # A browser without passkey autofill, while sessionStorage says so (the button path).
        self.page.add_init_script("""if (sessionStorage.getItem('sigil-no-autofill') && window.PublicKeyCredential) {
            PublicKeyCredential.isConditionalMediationAvailable = async () => false; }""")

    def close(self):
        self.browser.close()

    def shoot(self, name):
        """Both sizes, and axe-core: no serious or critical violation; no raw time, no method code."""
        page = self.page
        page.wait_for_load_state("load")
        body = page.locator("main").inner_text()
        assert not RAW_TIME.search(body), f"{name}: a raw timestamp on the page: {body!r}"
        assert not METHOD_CODES.search(body), f"{name}: a method code on the page: {body!r}"
        assert page.evaluate("document.documentElement.lang") == self.lang, name
        for w, h in [(390, 844), (1280, 800)]:
            page.set_viewport_size({"width": w, "height": h})
            page.screenshot(path=os.path.join(self.shots, f"{name}-{w}.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        with open(AXE_JS) as f:
            page.evaluate(f.read())
        result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
        bad = [(v["id"], v["impact"], [n["html"][:80] for n in v["nodes"][:3]])
               for v in result["violations"] if v["impact"] in ("serious", "critical")]
        assert not bad, f"{self.lang}/{name}: axe: {bad}"
        self.shot_names.append(name)

    def tab_to(self, name, key="Enter", limit=40):
        """Keyboard only: Tab until the element with this accessible text has focus, then press."""
        page = self.page
        for _ in range(limit):
            focused = page.evaluate("""() => { const e = document.activeElement; if (!e) return '';
                const l = e.labels && e.labels[0]; return (l ? l.textContent : e.textContent || e.value || '').trim(); }""")
            if focused == name or (focused.startswith(name) and len(name) > 12):
                if key:
                    page.keyboard.press(key)
                return
            page.keyboard.press("Tab")
        raise AssertionError(f"could not reach {name!r} with the keyboard")

    def type_into(self, label, text):
        self.tab_to(label, key=None)
        self.page.keyboard.type(text)


@pytest.fixture
def browsers():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(AXE_JS):
        pytest.fail(f"axe-core not found at {AXE_JS}: scripts/test installs it from the npm registry")
    shots = os.environ.get("SIGIL_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="sigil-shots-")
    opened = []
    with sync_playwright() as p:
        def open_browser(lang):
            b = Browser(p, lang, shots)
            opened.append(b)
            return b
        yield open_browser
        for b in opened:
            b.close()


def set_up_realm(sigil):
    sigil.cli_json("realm", "create", "customers", "--display-name", "Example Bank")
    sigil.cli("group", "create", "--realm", "customers", "--name", "retail", "--scope", "balances:read")
    sigil.cli_json("client", "create", "--realm", "customers", "--id", "mobile", "--scope", "balances:read",
                   "--audience", "ledger", "--redirect-uri", CALLBACK, "--public",
                   "--name", "Mobile Banking", "--client-uri", APP_HOME,
                   "--post-logout-redirect-uri", SIGNED_OUT)


def invite(sigil, username):
    sigil.cli_json("user", "create", "--realm", "customers", "--username", username, "--group", "retail")
    return sigil.cli("--public-url", sigil.base, "user", "invite", "--realm", "customers", "--username", username,
                     "--client", "mobile").strip()


def authorize(b, issuer, state="xyz"):
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({"response_type": "code", "client_id": "mobile", "redirect_uri": CALLBACK,
                       "scope": "openid balances:read", "state": state, "nonce": "n1",
                       "code_challenge": challenge, "code_challenge_method": "S256"})
    b.page.goto(f"{issuer}/oauth2/authorize?{query}")
    return verifier


def landed(b, issuer, state="xyz"):
    b.page.wait_for_url(f"{CALLBACK}**", timeout=15000)
    params = parse_qs(urlparse(b.page.url).query)
    assert params["state"] == [state] and params["iss"] == [issuer] and params["code"], params
    return params["code"][0]


def redeem(issuer, code, verifier):
    res = requests.post(f"{issuer}/oauth2/token", timeout=10, data={
        "grant_type": "authorization_code", "client_id": "mobile", "code": code,
        "redirect_uri": CALLBACK, "code_verifier": verifier})
    assert res.status_code == 200, res.text
    return res.json()


@pytest.mark.parametrize("lang", ["en", "de"])
def test_passkey_journey_keyboard_only(sigil, browsers, lang):
    b = browsers(lang)
    t, page = b.t, b.page
    issuer = sigil.issuer("customers")
    assert issuer.startswith("http://localhost:"), "WebAuthn needs a localhost origin"
    set_up_realm(sigil)
    link = invite(sigil, "carol")

    # Enrolment: the passkey button has focus; a name for it; Enter creates the passkey and the
    # page moves on to the "done" step (no password form left behind).
    page.goto(link)
    b.shoot("enrol")
    assert page.evaluate("document.activeElement.id") == "passkey-register"
    page.keyboard.press("Shift+Tab")  # back to the name field, then type, Tab, Enter
    assert page.evaluate("document.activeElement.id") == "passkey-name"
    page.keyboard.type("Work laptop")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{issuer}/enrol/done**")
    assert t["done"] in page.locator("h1").inner_text()
    assert page.locator("#continue-to-app").get_attribute("href") == APP_HOME  # the invite's app
    b.shoot("enrol-done")
    creds = b.cdp.send("WebAuthn.getCredentials", {"authenticatorId": b.authenticator})["credentials"]
    assert len(creds) == 1 and creds[0]["isResidentCredential"]

    # The same invite again: used, and said so.
    page.goto(link)
    assert t["invite_used"] in page.locator("#message").inner_text()
    b.shoot("error-invite-used")

    # Sign-in in a browser without autofill: focus starts on the passkey button; Enter signs in;
    # back at the client's origin.
    page.evaluate("sessionStorage.setItem('sigil-no-autofill', '1')")
    verifier = authorize(b, issuer)
    page.wait_for_url(f"{issuer}/login")
    assert page.evaluate("document.activeElement.id") == "passkey-signin"
    assert page.locator("#username").get_attribute("autocomplete") == "username webauthn"
    b.shoot("sign-in")
    page.keyboard.press("Enter")
    tokens = redeem(issuer, landed(b, issuer), verifier)
    access = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert access["amr"] == ["hwk", "user"] and access["groups"] == ["retail"]

    # The account page (opened from the app): the passkey by its name, times in words, the method
    # in words, and the way back to the app's registered home page.
    page.goto(f"{issuer}/account?client_id=mobile")
    assert page.locator("#back-to-app").get_attribute("href") == APP_HOME
    main = page.locator("main").inner_text()
    assert "Work laptop" in main and t["method_passkey"] in main and t["last_used"] in main, main
    assert any(z in main.split() for z in ZONE_NAMES[lang]), f"times not in the browser's zone: {main!r}"
    b.shoot("account")

    # Sign out of this browser, by keyboard; the refresh token of this session is dead too.
    page.goto(f"{issuer}/account?client_id=mobile")
    b.tab_to(t["sign_out_here"])
    page.wait_for_selector("#message")
    assert t["signed_out"] in page.locator("h1").inner_text()
    b.shoot("signed-out")
    assert page.locator("#back-to-app").get_attribute("href") == APP_HOME
    dead = requests.post(f"{issuer}/oauth2/token", timeout=10, data={
        "grant_type": "refresh_token", "client_id": "mobile", "refresh_token": tokens["refresh_token"]})
    assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"
    # And the path that does not go through the browser: userinfo refuses the session's token.
    info = requests.get(f"{issuer}/oauth2/userinfo", timeout=10,
                        headers={"authorization": f"Bearer {tokens['access_token']}"})
    assert info.status_code == 401, info.text

    # Passkey autofill: in Chromium (which supports conditional mediation) a new sign-in completes
    # through the username field's passkey offer, without a click on the button: the virtual
    # authenticator answers the conditional request as a user picking the passkey would.
    page.evaluate("sessionStorage.removeItem('sigil-no-autofill')")  # on the signed-out page
    verifier = authorize(b, issuer, state="auto")
    code = landed(b, issuer, state="auto")
    tokens = redeem(issuer, code, verifier)

    # RP-initiated logout without an ID token hint: the confirmation page, answered by keyboard;
    # the page's CSP lets its form go back to the app, which gets its state back.
    page.goto(f"{issuer}/oauth2/logout?" + urlencode(
        {"client_id": "mobile", "post_logout_redirect_uri": SIGNED_OUT, "state": "bye"}))
    page.wait_for_selector("#logout-confirm")
    b.shoot("logout")
    b.tab_to(t["logout_confirm"])
    page.wait_for_url(f"{SIGNED_OUT}**")
    assert parse_qs(urlparse(page.url).query)["state"] == ["bye"]
    dead = requests.post(f"{issuer}/oauth2/token", timeout=10, data={
        "grant_type": "refresh_token", "client_id": "mobile", "refresh_token": tokens["refresh_token"]})
    assert dead.status_code == 400, dead.text
    # With the hint of this session: no question, straight back to the app.
    verifier = authorize(b, issuer, state="auto2")
    tokens = redeem(issuer, landed(b, issuer, state="auto2"), verifier)
    page.goto(f"{issuer}/oauth2/logout?" + urlencode(
        {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": SIGNED_OUT, "state": "bye2"}))
    page.wait_for_url(f"{SIGNED_OUT}**")
    assert parse_qs(urlparse(page.url).query)["state"] == ["bye2"]
    # A URI off by one character: refused on a page, no redirect.
    page.goto(f"{issuer}/oauth2/logout?" + urlencode(
        {"client_id": "mobile", "post_logout_redirect_uri": SIGNED_OUT + "x"}))
    assert page.url.startswith(issuer)
    assert page.locator("#message").get_attribute("data-key") == "logout_bad_request"
    verifier = authorize(b, issuer, state="auto3")
    redeem(issuer, landed(b, issuer, state="auto3"), verifier)

    # A sign-in the user cancels goes back to the app with access_denied, state and iss.
    page.goto(f"{issuer}/account")
    page.locator("#sign-out-everywhere").click()
    page.wait_for_selector("#message")
    page.evaluate("sessionStorage.setItem('sigil-no-autofill', '1')")
    authorize(b, issuer, state="c1")
    page.wait_for_url(f"{issuer}/login")
    b.tab_to(t["cancel"])
    page.wait_for_url(f"{CALLBACK}**")
    params = parse_qs(urlparse(page.url).query)
    assert params["error"] == ["access_denied"] and params["state"] == ["c1"] and params["iss"] == [issuer]

    # Errors a person can act on: the sign-in page with no sign-in begun (the cancel above ended
    # it), a sign-in that timed out (its cookie outlived the request), a malformed one.
    page.goto(f"{issuer}/login")
    assert t["not_started"] in page.locator("h1").inner_text()
    b.shoot("error-sign-in-not-started")
    b.context.add_cookies([{"name": "sigil_flow", "value": "stale-or-forged", "url": f"{issuer}/"}])
    page.goto(f"{issuer}/login")
    assert t["timed_out"] in page.locator("h1").inner_text()
    b.shoot("error-sign-in-timed-out")
    page.goto(f"{issuer}/oauth2/authorize?client_id=nobody")
    b.shoot("error-bad-request")

    # A passkey prompt that ends without a passkey (the browser has none for this site, as when the
    # user cancels): the page says so, in words, and the button works again.
    authorize(b, issuer, state="c2")
    page.wait_for_url(f"{issuer}/login")
    b.cdp.send("WebAuthn.clearCredentials", {"authenticatorId": b.authenticator})
    page.locator("#passkey-signin").focus()
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('passkey-status').className === 'error'", timeout=30000)
    assert not page.locator("#passkey-signin").is_disabled()
    b.shoot("error-passkey-cancelled")

    # Throttled: the address's sign-in starts are used up; the page says how long to wait.
    flow_csrf = page.locator("#passkey-signin").get_attribute("data-csrf")
    cookies = {c["name"]: c["value"] for c in b.context.cookies()}
    for _ in range(40):
        requests.post(f"{issuer}/login/passkey/options", json={"csrf": flow_csrf}, cookies=cookies, timeout=10)
    limited = requests.get(f"{issuer}/oauth2/authorize?client_id=mobile", timeout=10)
    assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
    authorize(b, issuer, state="t")
    assert t["throttled"] in page.locator("#message").inner_text()
    b.shoot("error-throttled")
    assert not b.problems, b.problems


@pytest.mark.parametrize("lang", ["en", "de"])
def test_password_and_authenticator_journey_keyboard_only(sigil, browsers, lang):
    import pyotp

    b = browsers(lang)
    t, page = b.t, b.page
    issuer = sigil.issuer("customers")
    set_up_realm(sigil)
    link = invite(sigil, "dave")

    # Enrolment with password + authenticator app: the QR code decodes to the page's otpauth URI.
    page.goto(link)
    uri = page.locator("#otpauth-link").get_attribute("href")
    secret = page.locator("#totp-secret").get_attribute("data-secret")
    assert parse_qs(urlparse(uri).query)["secret"] == [secret]
    assert page.locator("#totp-secret").inner_text().replace(" ", "") == secret
    qr_png = os.path.join(b.shots, "qr.png")
    page.locator("#totp-qr").screenshot(path=qr_png)
    zbar = shutil.which("zbarimg")
    assert zbar, "zbarimg (zbar-tools) is needed to decode the QR code"
    decoded = subprocess.run([zbar, "--raw", "-q", qr_png], capture_output=True, text=True, timeout=30).stdout.strip()
    assert decoded == uri, (decoded, uri)
    totp = pyotp.parse_uri(decoded)

    # A wrong code first: the same page again (same secret) with what went wrong.
    b.type_into(t["choose_password"], PASSWORD)
    b.type_into(t["app_code"], "000000" if totp.now() != "000000" else "111111")
    page.keyboard.press("Enter")
    page.wait_for_selector("#form-error")
    assert t["code_mismatch"] in page.locator("#form-error").inner_text()
    assert page.locator("#totp-secret").get_attribute("data-secret") == secret
    b.shoot("enrol-error")
    assert page.evaluate("document.activeElement.id") == "password"  # focus goes to the error's field
    page.keyboard.type(PASSWORD)
    b.type_into(t["app_code"], totp.now())
    page.keyboard.press("Enter")
    page.wait_for_selector("#recovery-codes")
    assert t["recovery"] in page.locator("h1").inner_text()
    b.shoot("recovery-codes")
    codes = [c.strip() for c in page.locator("#recovery-codes li").all_inner_texts()]
    assert len(codes) == 10

    # Copy and download; continuing needs the acknowledgement (keyboard: Space, then Enter).
    page.locator("#copy-codes").click()
    page.wait_for_function("() => document.getElementById('copy-status').textContent.length > 0")
    assert page.evaluate("navigator.clipboard.readText()").split() == codes
    with page.expect_download() as dl:
        page.locator("#download-codes").click()
    text = open(dl.value.path()).read()
    assert all(c in text for c in codes) and dl.value.suggested_filename.endswith(".txt")
    page.locator("#recovery-continue").click()
    assert "/enrol/done" not in page.url, "continued without the acknowledgement"
    b.tab_to(t["ack"], key="Space")
    b.tab_to(t["continue"])
    page.wait_for_url(f"{issuer}/enrol/done**")
    assert page.locator("#continue-to-app").get_attribute("href") == APP_HOME
    b.shoot("enrol-done-password")

    # Sign-in through the fallback, keyboard only, with the CSP enforced: the form is answered by
    # a redirect to the client's origin, which form-action allows for exactly that origin.
    verifier = authorize(b, issuer)
    page.wait_for_url(f"{issuer}/login")
    # A wrong code: one generic message, the username kept.
    b.type_into(t["username"], "dave")
    b.type_into(t["password"], PASSWORD)
    b.type_into(t["code"], "000000" if totp.now() != "000000" else "111111")
    page.keyboard.press("Enter")
    page.wait_for_selector("#form-error")
    assert t["generic"] in page.locator("#form-error").inner_text()
    b.shoot("sign-in-error")
    assert page.evaluate("document.activeElement.id") == "username"
    b.type_into(t["password"], PASSWORD)
    b.type_into(t["code"], totp.at(time.time() + 30))
    page.keyboard.press("Enter")
    tokens = redeem(issuer, landed(b, issuer), verifier)
    assert jwt.decode(tokens["access_token"], options={"verify_signature": False})["amr"] == ["pwd", "otp"]

    # A second authorization with the live session: the public app is named and confirmed first
    # (focus on "Continue"), then the code goes to the client's origin.
    verifier = authorize(b, issuer, state="again")
    page.wait_for_url(f"{issuer}/consent")
    b.shoot("consent")
    assert page.evaluate("document.activeElement.id") == "consent-allow"
    page.keyboard.press("Enter")
    redeem(issuer, landed(b, issuer, state="again"), verifier)

    # "Confirm it's you" with password and a recovery code, keyboard only.
    page.goto(f"{issuer}/account/reauth")
    b.shoot("reauth")
    b.type_into(t["password"], PASSWORD)
    b.type_into(t["code"], codes[1])
    page.keyboard.press("Enter")
    page.wait_for_url(f"{issuer}/account")

    # The account page says "replace" (an app is set up) and the method in words.
    page.goto(f"{issuer}/account")
    main = page.locator("main").inner_text()
    assert t["replace"] in main and t["method_password"] in main, main
    page.locator("#totp-button").click()
    page.wait_for_selector("#totp-qr")
    b.shoot("totp-replace")

    # A disabled account: told so only once the password and code were right.
    sigil.cli("user", "disable", "--realm", "customers", "--username", "dave")
    authorize(b, issuer, state="d")
    page.wait_for_url(f"{issuer}/login")
    page.locator("#username").fill("dave")
    page.locator("#password").fill(PASSWORD)
    page.locator("#code").fill(codes[0])
    page.locator("#code").press("Enter")
    page.wait_for_selector("#form-error")
    assert t["disabled"] in page.locator("#form-error").inner_text()
    b.shoot("error-disabled")
    assert not b.problems, b.problems


def test_every_page_was_photographed_in_both_languages():
    """Runs last in this file: the journeys above photographed every page in both languages."""
    shots = os.environ.get("SIGIL_SCREENSHOT_DIR")
    if not shots:
        pytest.skip("SIGIL_SCREENSHOT_DIR not set (scripts/test sets it)")
    for lang in ["en", "de"]:
        names = {f[:-9] for f in os.listdir(os.path.join(shots, lang)) if f.endswith("-1280.png")}
        for page in ["enrol", "enrol-done", "sign-in", "account", "signed-out", "enrol-error", "recovery-codes",
                     "enrol-done-password", "sign-in-error", "totp-replace", "error-invite-used",
                     "error-sign-in-timed-out", "error-bad-request", "error-passkey-cancelled",
                     "error-throttled", "error-disabled", "consent", "reauth", "logout"]:
            assert page in names, f"{lang}: no screenshot of {page}"
