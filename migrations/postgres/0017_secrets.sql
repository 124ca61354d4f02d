-- A KMS-backed key-encryption key: the data key KMS generated, as KMS wrapped it. The plaintext
-- data key is never stored; a node unwraps it with kms:Decrypt at start.
CREATE TABLE wrapped_keks (
    source TEXT PRIMARY KEY,
    kek_id TEXT NOT NULL UNIQUE,
    wrapped BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- Attributes a realm declares, with their classification: `pii_high` values are kept encrypted
-- column by column (user_pii), never in the users.attributes JSON.
CREATE TABLE realm_attributes (
    realm TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    classification TEXT NOT NULL CHECK (classification IN ('internal', 'pii_high')),
    PRIMARY KEY (realm, name)
);

-- A realm's PII key (32 random bytes), sealed under the KEK with the realm in its associated data.
CREATE TABLE realm_pii_keys (
    realm TEXT PRIMARY KEY REFERENCES realms (name) ON DELETE CASCADE,
    sealed BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- One pii_high value: AES-256-GCM under the realm's PII key, bound to realm, user id and attribute
-- name; `blind_index` is a keyed HMAC of the value for exact lookups.
CREATE TABLE user_pii (
    realm TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    blind_index TEXT NOT NULL,
    PRIMARY KEY (realm, user_id, name),
    FOREIGN KEY (realm, user_id) REFERENCES users (realm, id) ON DELETE CASCADE
);
CREATE INDEX user_pii_lookup ON user_pii (realm, name, blind_index);
