-- AWS workload identity: per-realm STS settings, principal bindings, single-use challenges.
CREATE TABLE aws_settings (
    realm              TEXT PRIMARY KEY REFERENCES realms(name) ON DELETE CASCADE,
    sts_endpoint       TEXT,
    partitions         TEXT NOT NULL,
    server_id          TEXT NOT NULL,
    require_challenge  BOOLEAN NOT NULL,
    updated_at         INTEGER NOT NULL
);

CREATE TABLE aws_bindings (
    realm             TEXT NOT NULL REFERENCES realms(name) ON DELETE CASCADE,
    id                TEXT NOT NULL,
    principal         TEXT,
    account           TEXT,
    effect            TEXT NOT NULL CHECK (effect IN ('allow', 'deny')),
    scopes            TEXT NOT NULL,
    audience          TEXT NOT NULL,
    access_token_ttl  INTEGER,
    created_at        INTEGER NOT NULL,
    PRIMARY KEY (realm, id)
);

CREATE TABLE aws_challenges (
    nonce_hash  TEXT PRIMARY KEY,
    realm       TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
