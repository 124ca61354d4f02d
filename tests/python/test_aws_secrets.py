"""Secrets from AWS, against moto as Secrets Manager and KMS: the database URL from a secret
(re-fetched when PostgreSQL refuses a rotated password, while the node serves load), and the KEK
as a KMS data key held wrapped in the database, or as a key in Secrets Manager."""

import base64
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import boto3
import jwt
import pytest
import requests

from conftest import SIGIL, _wait_for_listening, free_port, start_moto

ADMIN_DB = os.environ.get("TEST_DATABASE_URL")
needs_pg = pytest.mark.skipif(not ADMIN_DB, reason="TEST_DATABASE_URL (PostgreSQL) not set")


@pytest.fixture(scope="module")
def aws():
    proc, url = start_moto()
    kw = dict(endpoint_url=url, region_name="eu-west-2", aws_access_key_id="test", aws_secret_access_key="test")
    env = {
        # What a node on AWS gets from its role; here moto answers every call.
        "AWS_ENDPOINT_URL": url, "AWS_REGION": "eu-west-2",
        "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    yield {"url": url, "sm": boto3.client("secretsmanager", **kw), "kms": boto3.client("kms", **kw), "env": env}
    proc.terminate()
    proc.wait(timeout=10)


def psql(url, sql):
    return subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql],
                          capture_output=True, text=True, check=True, timeout=60).stdout


@pytest.fixture
def pg_role():
    """A database of its own, owned by a role of its own whose password the test rotates."""
    name = "sigil_" + uuid.uuid4().hex[:10]
    password = "pw1-" + uuid.uuid4().hex
    psql(ADMIN_DB, f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    psql(ADMIN_DB, f"CREATE DATABASE {name} OWNER {name}")
    host_port = ADMIN_DB.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    role = {"name": name, "password": password, "host": host, "port": int(port)}
    yield role
    psql(ADMIN_DB, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    psql(ADMIN_DB, f"DROP ROLE IF EXISTS {name}")


def db_secret(role, password):
    return json.dumps({"host": role["host"], "port": role["port"], "database": role["name"],
                       "username": role["name"], "password": password})


def role_url(role, password):
    return f"postgres://{role['name']}:{password}@{role['host']}:{role['port']}/{role['name']}"


class Node:
    """The sigil binary run from `workdir` with a config file and AWS's environment."""

    def __init__(self, workdir, aws, config, log="warn"):
        self.workdir, self.aws, self.log = workdir, aws, log
        self.config = os.path.join(workdir, "sigil.toml")
        self.text = config
        self.write()
        self.proc = None

    def write(self):
        # Written again before each use: nodes sharing a working directory share the file.
        with open(self.config, "w") as f:
            f.write(self.text)

    def env(self):
        return {**os.environ, **self.aws["env"], "SIGIL_LOG": self.log}

    def run(self, *args, check=True):
        self.write()
        return subprocess.run([SIGIL, "--config", self.config, *args], cwd=self.workdir, env=self.env(),
                              capture_output=True, text=True, check=check, timeout=60)

    def cli_json(self, *args):
        return json.loads(self.run(*args).stdout)

    def start(self):
        # The log goes to a file outside the working directory: a chatty log never blocks the
        # node, and the working directory keeps only what the node itself writes there.
        self.write()
        self.logfile = tempfile.NamedTemporaryFile(prefix="sigil-log-", suffix=".txt")
        self.proc = subprocess.Popen([SIGIL, "--config", self.config, "serve", "--bind", "127.0.0.1:0"],
                                     cwd=self.workdir, env=self.env(), stdout=subprocess.PIPE,
                                     stderr=self.logfile, text=True)
        self.base = _wait_for_listening(self.proc, "sigil")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        with open(self.logfile.name, encoding="utf-8", errors="replace") as f:
            return f.read()


def token(base, client, scope="balances:read"):
    return requests.post(f"{base}/realms/ledger/oauth2/token",
                         data={"grant_type": "client_credentials", "scope": scope},
                         auth=(client["client_id"], client["client_secret"]), timeout=10)


def verified(base, access):
    meta = requests.get(f"{base}/realms/ledger/.well-known/openid-configuration", timeout=5).json()
    jwks = requests.get(meta["jwks_uri"], timeout=5).json()
    kid = jwt.get_unverified_header(access)["kid"]
    key = jwt.PyJWK([k for k in jwks["keys"] if k["kid"] == kid][0])
    return jwt.decode(access, key.key, algorithms=["ES256"], audience="ledger",
                      issuer=f"{base}/realms/ledger")


def make_ledger(node):
    node.run("realm", "create", "ledger")
    return node.cli_json("client", "create", "--realm", "ledger", "--id", "ach-processor",
                         "--scope", "balances:read", "--audience", "ledger")


@needs_pg
def test_a_node_on_secrets_manager_and_kms_alone(aws, pg_role):
    secret = aws["sm"].create_secret(Name=f"sigil/db/{pg_role['name']}",
                                      SecretString=db_secret(pg_role, pg_role["password"]))["ARN"]
    key = aws["kms"].create_key(Description="sigil kek")["KeyMetadata"]["KeyId"]
    with tempfile.TemporaryDirectory() as d:
        # Trace level: every log line a node can write is searched for the secrets below.
        node = Node(d, aws, f'database_url_secret = "{secret}"\nkek_source = "aws-kms:{key}"\n', log="trace")
        client = make_ledger(node)
        node.start()
        try:
            res = token(node.base, client)
            assert res.status_code == 200, res.text
            claims = verified(node.base, res.json()["access_token"])
            assert claims["sub"] == "ach-processor"
        finally:
            log = node.stop()
        # No KEK file anywhere: the working directory holds only the config file.
        assert sorted(os.listdir(d)) == ["sigil.toml"]
        url = role_url(pg_role, pg_role["password"])
        rows = psql(url, "SELECT source, kek_id, encode(wrapped, 'hex') FROM wrapped_keks").strip().splitlines()
        assert len(rows) == 1, rows
        source, kek_id, wrapped = rows[0].split("|")
        assert source == f"aws-kms:{key}"
        # The wrapped data key opens only through KMS, with Sigil's encryption context.
        blob = bytes.fromhex(wrapped)
        plain = aws["kms"].decrypt(CiphertextBlob=blob, EncryptionContext={"purpose": "sigil-kek"})["Plaintext"]
        assert len(plain) == 32
        with pytest.raises(Exception):
            aws["kms"].decrypt(CiphertextBlob=blob, EncryptionContext={"purpose": "other"})
        # Every sealed key is under it, and the plain data key is nowhere in the database.
        assert psql(url, "SELECT DISTINCT kek_id FROM signing_keys").split() == [kek_id]
        dump = subprocess.run(["pg_dump", "--data-only", url], capture_output=True, check=True, timeout=60).stdout
        for form in (plain, base64.b64encode(plain), plain.hex().encode()):
            assert form not in dump
        # Nor in the node's log, nor the database password.
        for needle in (pg_role["password"], base64.b64encode(plain).decode(), plain.hex()):
            assert needle not in log
        assert len(log) > 1000, "the log at trace level is not empty"


@needs_pg
def test_without_kms_the_node_refuses_to_start_and_makes_no_new_kek(aws, pg_role):
    """No route to KMS, an IAM role without kms:Decrypt, a key that does not exist: each time the
    node exits naming the key, and the database still holds the one data key it had."""
    proc, url = start_moto()
    try:
        kw = dict(endpoint_url=url, region_name="eu-west-2", aws_access_key_id="seed", aws_secret_access_key="seed")
        sm, kms, iam = (boto3.client(s, **kw) for s in ("secretsmanager", "kms", "iam"))
        secret = sm.create_secret(Name="sigil/db", SecretString=db_secret(pg_role, pg_role["password"]))["ARN"]
        key = kms.create_key()["KeyMetadata"]["KeyId"]
        creds = {}
        for name, actions in (("full", ["secretsmanager:GetSecretValue", "kms:Decrypt", "kms:GenerateDataKey"]),
                              ("no-kms", ["secretsmanager:GetSecretValue"])):
            iam.create_user(UserName=name)
            iam.put_user_policy(UserName=name, PolicyName="sigil", PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}))
            k = iam.create_access_key(UserName=name)["AccessKey"]
            creds[name] = {"AWS_ACCESS_KEY_ID": k["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": k["SecretAccessKey"]}
        # From here on moto checks every signature and every IAM permission.
        requests.post(f"{url}/moto-api/reset-auth", data="0", timeout=5).raise_for_status()
        env = {"AWS_ENDPOINT_URL": url, "AWS_REGION": "eu-west-2", "AWS_EC2_METADATA_DISABLED": "true"}
        with tempfile.TemporaryDirectory() as d:
            config = f'database_url_secret = "{secret}"\nkek_source = "aws-kms:{key}"\n'
            node = Node(d, {"env": {**env, **creds["full"]}}, config)
            make_ledger(node)
            db = role_url(pg_role, pg_role["password"])
            assert psql(db, "SELECT count(*) FROM wrapped_keks").strip() == "1"
            kek_ids = psql(db, "SELECT DISTINCT kek_id FROM signing_keys").split()

            denied = Node(d, {"env": {**env, **creds["no-kms"]}}, config)
            out = denied.run("serve", "--bind", "127.0.0.1:0", check=False)
            assert out.returncode != 0
            assert f"KMS: key {key}" in out.stderr and "HTTP 403" in out.stderr, out.stderr

            closed = free_port()
            unreachable = Node(d, {"env": {**env, **creds["full"], "AWS_ENDPOINT_URL_KMS": f"http://127.0.0.1:{closed}"}}, config)
            out = unreachable.run("serve", "--bind", "127.0.0.1:0", check=False)
            assert out.returncode != 0 and f"KMS: key {key}" in out.stderr, out.stderr

            missing = str(uuid.uuid4())
            other = Node(d, {"env": {**env, **creds["full"]}}, config.replace(key, missing))
            out = other.run("serve", "--bind", "127.0.0.1:0", check=False)
            assert out.returncode != 0 and missing in out.stderr, out.stderr
            assert "sigil kek rotate --to" in out.stderr, out.stderr

            # Nothing new was made: the one data key, every key still sealed under it.
            assert psql(db, "SELECT count(*) FROM wrapped_keks").strip() == "1"
            assert psql(db, "SELECT DISTINCT kek_id FROM signing_keys").split() == kek_ids
            assert sorted(os.listdir(d)) == ["sigil.toml"]

            # A secret that does not exist: refused by name.
            nosecret = Node(d, {"env": {**env, **creds["full"]}}, 'database_url_secret = "sigil/nope"\n')
            out = nosecret.run("serve", "--bind", "127.0.0.1:0", check=False)
            assert out.returncode != 0 and "sigil/nope" in out.stderr, out.stderr

            # And with the right role it starts.
            ok = Node(d, {"env": {**env, **creds["full"]}}, config).start()
            ok.stop()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@needs_pg
def test_a_rotated_database_password_is_fetched_again_while_the_node_serves(aws, pg_role):
    name = f"sigil/db/{pg_role['name']}"
    aws["sm"].create_secret(Name=name, SecretString=db_secret(pg_role, pg_role["password"]))
    key = aws["kms"].create_key()["KeyMetadata"]["KeyId"]
    with tempfile.TemporaryDirectory() as d:
        node = Node(d, aws, f'database_url_secret = "{name}"\nkek_source = "aws-kms:{key}"\n', log="warn")
        client = make_ledger(node)
        node.start()
        pid = node.proc.pid
        results = []  # (time, status)
        stop = threading.Event()

        def load():
            s = requests.Session()
            while not stop.is_set():
                try:
                    r = s.post(f"{node.base}/realms/ledger/oauth2/token",
                               data={"grant_type": "client_credentials", "scope": "balances:read"},
                               auth=(client["client_id"], client["client_secret"]), timeout=10)
                    results.append((time.monotonic(), r.status_code))
                except requests.RequestException:
                    results.append((time.monotonic(), 0))

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(2)
            # A rotation as Secrets Manager's rotation function does it: the new password goes
            # in as AWSPENDING, then into the database; only later does it become AWSCURRENT.
            new_password = "pw2-" + uuid.uuid4().hex
            version = str(uuid.uuid4())
            aws["sm"].put_secret_value(SecretId=name, ClientRequestToken=version,
                                       SecretString=db_secret(pg_role, new_password), VersionStages=["AWSPENDING"])
            psql(ADMIN_DB, f"ALTER ROLE {pg_role['name']} PASSWORD '{new_password}'")
            # Every connection the node holds is cut: it must open new ones, with the new password.
            rotated_at = time.monotonic()
            psql(ADMIN_DB, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{pg_role['name']}'")
            time.sleep(4)
            current = aws["sm"].describe_secret(SecretId=name)["VersionIdsToStages"]
            old = [v for v, stages in current.items() if "AWSCURRENT" in stages][0]
            aws["sm"].update_secret_version_stage(SecretId=name, VersionStage="AWSCURRENT",
                                                  MoveToVersionId=version, RemoveFromVersionId=old)
            aws["sm"].update_secret_version_stage(SecretId=name, VersionStage="AWSPENDING", RemoveFromVersionId=version)
            # And once more, straight to AWSCURRENT this time.
            third = "pw3-" + uuid.uuid4().hex
            aws["sm"].put_secret_value(SecretId=name, SecretString=db_secret(pg_role, third))
            psql(ADMIN_DB, f"ALTER ROLE {pg_role['name']} PASSWORD '{third}'")
            second_at = time.monotonic()
            psql(ADMIN_DB, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{pg_role['name']}'")
            time.sleep(4)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert node.proc.poll() is None and node.proc.pid == pid, "the node never restarts"
        log = node.stop()
        failures = [t for t, status in results if status != 200]
        print(f"{len(results)} requests, {len(failures)} failed")
        assert len(results) > 100
        for start in (rotated_at, second_at):
            window = [round(t - start, 2) for t in failures if start <= t < start + 4]
            print("failures after rotation at", window)
            # Failures last no longer than one re-fetch (a few hundred ms against moto).
            assert not window or max(window) < 2.0, window
            after = [status for t, status in results if start + 2.0 <= t < start + 4]
            assert after and all(s == 200 for s in after)
        for password in (pg_role["password"], new_password, third):
            assert password not in log
        assert "now using the secret's new value" in log


def test_kek_rotate_moves_between_file_kms_and_secrets_manager(aws):
    key = aws["kms"].create_key()["KeyMetadata"]["KeyId"]
    sm_name = f"sigil/kek/{uuid.uuid4().hex[:8]}"
    aws["sm"].create_secret(Name=sm_name, SecretString=base64.b64encode(os.urandom(32)).decode())
    with tempfile.TemporaryDirectory() as d, tempfile.TemporaryDirectory() as work:
        db = f'database_url = "sqlite://{d}/sigil.db"\n'
        node = Node(work, aws, db + f'kek_file = "{d}/kek"\n')
        client = make_ledger(node)

        def serves(config):
            n = Node(work, aws, db + config).start()
            try:
                res = token(n.base, client)
                assert res.status_code == 200, res.text
                assert verified(n.base, res.json()["access_token"])["sub"] == "ach-processor"
            finally:
                n.stop()

        def kek_ids():
            with sqlite3.connect(f"{d}/sigil.db") as c:
                return sorted({r[0] for r in c.execute("SELECT kek_id FROM signing_keys")})

        assert kek_ids()[0].startswith("file:")
        # A KMS key with no data key yet cannot be the KEK of a database sealed under a file.
        out = Node(work, aws, db + f'kek_source = "aws-kms:{key}"\n').run("serve", "--bind", "127.0.0.1:0", check=False)
        assert out.returncode != 0 and f"sigil kek rotate --to aws-kms:{key}" in out.stderr, out.stderr

        out = node.run("kek", "rotate", "--to", f"aws-kms:{key}").stdout
        assert f'kek_source = "aws-kms:{key}"' in out, out
        assert kek_ids()[0].startswith("kms:")
        os.remove(f"{d}/kek")
        serves(f'kek_source = "aws-kms:{key}"\n')

        node = Node(work, aws, db + f'kek_source = "aws-kms:{key}"\n')
        node.run("kek", "rotate", "--to", f"aws-secretsmanager:{sm_name}")
        assert kek_ids()[0].startswith("sm:")
        serves(f'kek_source = "aws-secretsmanager:{sm_name}"\n')

        fresh = f"{d}/kek2"
        with open(os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        node = Node(work, aws, db + f'kek_source = "aws-secretsmanager:{sm_name}"\n')
        node.run("kek", "rotate", "--new-kek", fresh)
        assert kek_ids()[0].startswith("file:")
        serves(f'kek_file = "{fresh}"\n')
        assert "intact" in Node(work, aws, db + f'kek_file = "{fresh}"\n').run("audit", "verify").stdout
        # The database never held a key in the clear: only KMS's wrapped data key.
        with sqlite3.connect(f"{d}/sigil.db") as c:
            assert [r[0] for r in c.execute("SELECT source FROM wrapped_keks")] == [f"aws-kms:{key}"]
