-- What stopped being valid, for resource servers that validate tokens themselves (the revocation
-- feed, /realms/{realm}/revocations): revoked access tokens (`jti`), ended sessions (`sid`) and
-- disabled clients (`client`, tokens issued before `not_before`). Each row is kept until no token it
-- can affect is unexpired (`expires_at`), then purged.
CREATE TABLE revocations (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    realm       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    not_before  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX revocations_by_realm ON revocations (realm, seq);
CREATE INDEX revocations_by_expiry ON revocations (expires_at);
