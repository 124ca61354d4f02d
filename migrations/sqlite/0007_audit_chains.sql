-- One audit chain per node (or group of nodes): rows keyed by (chain, seq), one head row per chain
-- (see the PostgreSQL migration of the same name). SQLite cannot change a primary key in place:
-- the log is copied into a new table (its append-only triggers and indexes recreated).
CREATE TABLE audit_log_chains (
    chain      TEXT NOT NULL DEFAULT 'main',
    seq        INTEGER NOT NULL,
    ts         INTEGER NOT NULL,
    realm      TEXT,
    kind       TEXT NOT NULL,
    actor      TEXT NOT NULL,
    subject    TEXT,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
);
INSERT INTO audit_log_chains (chain, seq, ts, realm, kind, actor, subject, detail, prev_hash, hash)
    SELECT 'main', seq, ts, realm, kind, actor, subject, detail, prev_hash, hash FROM audit_log;
DROP TABLE audit_log;
ALTER TABLE audit_log_chains RENAME TO audit_log;
CREATE INDEX audit_by_seq ON audit_log (seq);
CREATE INDEX audit_by_subject ON audit_log (realm, subject, seq);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TABLE audit_heads (
    chain TEXT PRIMARY KEY,
    seq   INTEGER NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_heads (chain, seq, hash) SELECT 'main', seq, hash FROM audit_head;
DROP TABLE audit_head;
