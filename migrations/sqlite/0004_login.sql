-- Interactive sign-in: realm login settings, UI clients, users and groups, credentials,
-- sessions, pending authorization requests, codes and refresh tokens.
ALTER TABLE realms ADD COLUMN login_settings TEXT NOT NULL DEFAULT '{}';
ALTER TABLE clients ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '';
ALTER TABLE clients ADD COLUMN public_client BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE groups (
    realm   TEXT NOT NULL REFERENCES realms(name) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    scopes  TEXT NOT NULL,
    PRIMARY KEY (realm, name)
);

CREATE TABLE users (
    realm           TEXT NOT NULL REFERENCES realms(name) ON DELETE CASCADE,
    id              TEXT NOT NULL,
    username        TEXT NOT NULL,
    enabled         BOOLEAN NOT NULL,
    attributes      TEXT NOT NULL,
    password_hash   TEXT,
    totp_sealed     BLOB,
    totp_last_step  INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (realm, id),
    UNIQUE (realm, username)
);

CREATE TABLE user_groups (
    realm    TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    grp      TEXT NOT NULL,
    PRIMARY KEY (realm, user_id, grp),
    FOREIGN KEY (realm, user_id) REFERENCES users(realm, id) ON DELETE CASCADE,
    FOREIGN KEY (realm, grp) REFERENCES groups(realm, name) ON DELETE CASCADE
);

CREATE TABLE recovery_codes (
    realm      TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    code_hash  TEXT NOT NULL,
    used_at    INTEGER,
    PRIMARY KEY (realm, user_id, code_hash),
    FOREIGN KEY (realm, user_id) REFERENCES users(realm, id) ON DELETE CASCADE
);

CREATE TABLE passkeys (
    realm          TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    credential_id  TEXT NOT NULL,
    name           TEXT NOT NULL,
    passkey        TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    last_used_at   INTEGER,
    PRIMARY KEY (realm, credential_id),
    FOREIGN KEY (realm, user_id) REFERENCES users(realm, id) ON DELETE CASCADE
);

CREATE TABLE invites (
    token_hash  TEXT PRIMARY KEY,
    realm       TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    FOREIGN KEY (realm, user_id) REFERENCES users(realm, id) ON DELETE CASCADE
);

-- Short-lived server-side state: pending authorization requests and WebAuthn ceremonies.
CREATE TABLE flows (
    id_hash     TEXT PRIMARY KEY,
    realm       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    data        TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);

CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    realm       TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    sid         TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    auth_time   INTEGER NOT NULL,
    amr         TEXT NOT NULL,
    acr         TEXT NOT NULL,
    FOREIGN KEY (realm, user_id) REFERENCES users(realm, id) ON DELETE CASCADE
);
CREATE INDEX sessions_by_user ON sessions (realm, user_id);

CREATE TABLE auth_codes (
    code_hash   TEXT PRIMARY KEY,
    realm       TEXT NOT NULL,
    data        TEXT NOT NULL,
    family      TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER
);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    realm       TEXT NOT NULL,
    family      TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    data        TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX refresh_by_family ON refresh_tokens (family);
CREATE INDEX refresh_by_user ON refresh_tokens (realm, user_id);
