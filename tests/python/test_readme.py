"""The README's quick start, principal-policy and sign-in blocks, run as written against a fresh server, so the
README cannot drift from what the binary does. Two substitutions only: the test's own binary for
`cargo run -q --release --`, and the server's random loopback address for `localhost:8080`."""

import os
import re
import subprocess
import tempfile

import requests

from conftest import SIGIL, _wait_for_listening

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")
SIGIL_FN = 'sigil() { cargo run -q --release -- "$@"; }'


def sh_blocks(heading):
    """The ```sh blocks of the README section under `heading`."""
    text = open(README, encoding="utf-8").read()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end > 0 else None]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def run(script, cwd, base):
    script = script.replace(SIGIL_FN, 'sigil() { "$SIGIL_BIN" "$@"; }').replace("http://localhost:8080", base)
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, capture_output=True,
                         text=True, timeout=120,
                         env={**os.environ, "SIGIL_BIN": os.path.abspath(SIGIL), "SIGIL_PUBLIC_URL": base})
    assert out.returncode == 0, f"{script}\n--- stdout\n{out.stdout}\n--- stderr\n{out.stderr}"
    return out.stdout


def test_the_readme_blocks_run_as_written():
    quick = sh_blocks("## Quick start")
    assert quick[0].strip() == "cargo run --release -- serve", quick[0]
    assert SIGIL_FN in quick[1]
    signin = sh_blocks("## Customer and staff sign-in")
    assert len(signin) == 2, signin
    # The try-it block up to the URL it prints (the rest needs a person in a browser).
    try_it = signin[1].split("# after signing in")[0]
    with tempfile.TemporaryDirectory() as d:
        server = subprocess.Popen([os.path.abspath(SIGIL), "serve", "--bind", "127.0.0.1:0"], cwd=d,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "SIGIL_LOG": "warn"})
        try:
            base = _wait_for_listening(server, "sigil")
            out = run(quick[1], d, base)
            assert '"access_token":"eyJ' in out and '"token_type":"Bearer"' in out, out
            assert "audit chain intact" in out, out
            assert os.path.exists(os.path.join(d, "data", "sigil.db"))

            # The principal-policy block, after the quick start's, in the same directory.
            policies = sh_blocks("## Principal policies")[0]
            assert SIGIL_FN in policies
            out = run(policies, d, base)
            assert '"version": 7' in out and "deleted policy scratch" in out, out
            jws = out.strip().splitlines()[-1]
            assert jws.startswith("eyJ") and jws.count(".") == 2, out
            assert open(os.path.join(d, "ledger-rs.secret")).read().strip()

            out = run(SIGIL_FN + "\n" + signin[0] + "\n" + try_it, d, base)
            invite = next(line for line in out.splitlines() if "/enrol/" in line)
            assert requests.get(invite.strip(), timeout=10).status_code == 200
            authorize = out.strip().splitlines()[-1]
            assert authorize.startswith(f"{base}/realms/customers/oauth2/authorize?"), out
            browser = requests.Session()
            page = browser.get(authorize, timeout=10, headers={"Accept-Language": "en"})
            assert page.url == f"{base}/realms/customers/login", page.url
            assert page.status_code == 200 and 'name="csrf"' in page.text
            # The sign-in page opened on its own says where to start.
            alone = requests.get(f"{base}/realms/customers/login", timeout=10, headers={"Accept-Language": "en"})
            assert alone.status_code == 400 and "Start from your app" in alone.text
        finally:
            server.terminate()
            server.wait(timeout=10)
