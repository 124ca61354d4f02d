-- Core schema: realms, their signing keys, clients, and the append-only audit log.
CREATE TABLE realms (
    name              TEXT PRIMARY KEY,
    alg               TEXT NOT NULL,
    display_name      TEXT,
    access_token_ttl  BIGINT NOT NULL,
    created_at        BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    realm           TEXT NOT NULL REFERENCES realms(name) ON DELETE CASCADE,
    kid             TEXT NOT NULL,
    alg             TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('next', 'active', 'retired')),
    public_jwk      TEXT NOT NULL,
    private_sealed  BYTEA NOT NULL,
    kek_id          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    activated_at    BIGINT,
    PRIMARY KEY (realm, kid)
);

CREATE TABLE clients (
    realm             TEXT NOT NULL REFERENCES realms(name) ON DELETE CASCADE,
    client_id         TEXT NOT NULL,
    enabled           BOOLEAN NOT NULL,
    secret_salt       BYTEA NOT NULL,
    secret_verifier   BYTEA NOT NULL,
    allowed_scopes    TEXT NOT NULL,
    default_scopes    TEXT NOT NULL,
    audience          TEXT NOT NULL,
    grant_types       TEXT NOT NULL,
    access_token_ttl  BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (realm, client_id)
);

CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    ts         BIGINT NOT NULL,
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
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;

CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
