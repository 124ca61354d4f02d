-- Back-Channel Logout 1.0. A client may register where it wants to be told that a session ended
-- (`sigil client create ... --backchannel-logout-uri URI`). Which clients got tokens in a session
-- is recorded when a code is redeemed (`session_clients`); when the session ends, one row per
-- (session, client) goes into the outbox in the same transaction, and every node's delivery task
-- claims due rows with a lease, POSTs a signed logout token and deletes the row when the client
-- answered 2xx (retried with back-off, abandoned after a bounded number of attempts).
ALTER TABLE clients ADD COLUMN backchannel_logout_uri TEXT;

CREATE TABLE session_clients (
    realm       TEXT NOT NULL,
    sid         TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (realm, sid, client_id)
);

CREATE TABLE logout_outbox (
    id              BIGSERIAL PRIMARY KEY,
    realm           TEXT NOT NULL,
    client_id       TEXT NOT NULL,
    uri             TEXT NOT NULL,
    sid             TEXT NOT NULL,
    sub             TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    lease_owner     TEXT NOT NULL DEFAULT '',
    lease_until     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX logout_outbox_due ON logout_outbox (next_attempt_at);
