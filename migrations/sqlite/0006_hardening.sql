-- Hardening: indexes for periodic housekeeping (no table scan under the write lock), sessions by
-- sid (refresh, userinfo and code redemption check the session), the account page's security
-- events, redirect URIs stored as a JSON list, and remembered consents of native apps.
CREATE INDEX flows_by_expiry ON flows (expires_at);
CREATE INDEX codes_by_expiry ON auth_codes (expires_at);
CREATE INDEX refresh_by_expiry ON refresh_tokens (expires_at);
CREATE INDEX invites_by_expiry ON invites (expires_at);
CREATE INDEX sessions_by_sid ON sessions (realm, sid);
CREATE INDEX audit_by_subject ON audit_log (realm, subject, seq);

-- One value per list entry; a legacy value that held several space-joined URIs becomes one
-- entry that no longer validates (and so matches nothing) instead of several.
UPDATE clients SET redirect_uris = CASE WHEN redirect_uris = '' THEN '[]' ELSE json_array(redirect_uris) END;

CREATE TABLE consents (
    realm       TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    scope       TEXT NOT NULL,
    granted_at  INTEGER NOT NULL,
    PRIMARY KEY (realm, user_id, client_id),
    FOREIGN KEY (realm, user_id) REFERENCES users(realm, id) ON DELETE CASCADE
);
