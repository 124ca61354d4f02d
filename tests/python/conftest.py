"""Fixtures: the real `sigil` binary on a random loopback port with a fresh SQLite database,
administered through its own CLI, and the example ledger built from the validator crate."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

SIGIL = os.environ.get("SIGIL_BIN", "target/debug/sigil")
LEDGER = os.environ.get("LEDGER_BIN", "target/debug/examples/ledger")


def _wait_for_listening(proc, what):
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited: {proc.stderr.read()}")
            continue
        if line.startswith("listening on "):
            return line.split(" ", 2)[2].strip()
    raise RuntimeError(f"{what} did not start")


class Sigil:
    def __init__(self, workdir):
        self.workdir = workdir
        self.db = f"sqlite://{workdir}/sigil.db"
        self.kek = f"{workdir}/kek"
        self.proc = None
        self.base = None

    def cli(self, *args):
        out = subprocess.run(
            [SIGIL, "--database-url", self.db, "--kek-file", self.kek, *args],
            capture_output=True, text=True, check=True, timeout=60,
        )
        return out.stdout

    def cli_json(self, *args):
        return json.loads(self.cli(*args))

    def start(self, **env):
        self.proc = subprocess.Popen(
            [SIGIL, "--database-url", self.db, "--kek-file", self.kek, "serve", "--bind", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # Anonymous refusals are tallied into the audit log once a second here (60 s by default).
            env={**os.environ, "SIGIL_LOG": "warn", "SIGIL_REFUSAL_TALLY_SECS": "1", **env},
        )
        self.base = _wait_for_listening(self.proc, "sigil")

    def issuer(self, realm):
        return f"{self.base}/realms/{realm}"

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def sigil():
    with tempfile.TemporaryDirectory() as d:
        s = Sigil(d)
        s.start()
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture
def ledger_for():
    procs = []

    def start(issuer, audience="ledger", extra=()):
        p = subprocess.Popen(
            [LEDGER, "--issuer", issuer, "--audience", audience, "--bind", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        procs.append(p)
        url = _wait_for_listening(p, "ledger")
        # Its log (warnings when a feed or bundle stops answering) is drained, so a full pipe
        # never blocks it.
        threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
        return url

    yield start
    for p in procs:
        p.terminate()
        p.wait(timeout=10)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_moto():
    """moto's server on a free loopback port, answering: (process, URL)."""
    import requests
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            requests.get(f"{url}/moto-api/", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    return proc, url
