-- Key lifecycle: per-realm rotation policy, a version for compare-and-set between nodes, the
-- latest expiry each key actually signed, and at most one active and one next key per realm.
ALTER TABLE realms ADD COLUMN rotation_period_secs BIGINT NOT NULL DEFAULT 2592000;
ALTER TABLE realms ADD COLUMN prepublish_secs BIGINT NOT NULL DEFAULT 86400;
ALTER TABLE realms ADD COLUMN key_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE signing_keys ADD COLUMN retired_at BIGINT;
ALTER TABLE signing_keys ADD COLUMN max_exp BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (realm) WHERE state = 'active';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (realm) WHERE state = 'next';
