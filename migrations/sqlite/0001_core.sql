-- Core schema: realms, their signing keys, clients, and the append-only audit log.
CREATE TABLE realms (
    name              TEXT PRIMARY KEY,
    alg               TEXT NOT NULL,
    display_name      TEXT,
    access_token_ttl  INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    realm           TEXT NOT NULL REFERENCES realms(name) ON DELETE CASCADE,
    kid             TEXT NOT NULL,
    alg             TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('next', 'active', 'retired')),
    public_jwk      TEXT NOT NULL,
    private_sealed  BLOB NOT NULL,
    kek_id          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    activated_at    INTEGER,
    PRIMARY KEY (realm, kid)
);

CREATE TABLE clients (
    realm             TEXT NOT NULL REFERENCES realms(name) ON DELETE CASCADE,
    client_id         TEXT NOT NULL,
    enabled           BOOLEAN NOT NULL,
    secret_salt       BLOB NOT NULL,
    secret_verifier   BLOB NOT NULL,
    allowed_scopes    TEXT NOT NULL,
    default_scopes    TEXT NOT NULL,
    audience          TEXT NOT NULL,
    grant_types       TEXT NOT NULL,
    access_token_ttl  INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (realm, client_id)
);

CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    ts         INTEGER NOT NULL,
    realm      TEXT,
    kind       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    subject    TEXT,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);

-- The chain head: appenders lock this row first, so appends from any node serialise.
CREATE TABLE audit_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
