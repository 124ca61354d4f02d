-- Four-eyes: a realm may require a second admin's approval for dangerous changes
-- (`require_approval`), and mark its clients' secrets and existence as such (`protected`).
-- No row: neither, except for the admin realm, which requires approval.
CREATE TABLE realm_guards (
    realm TEXT PRIMARY KEY REFERENCES realms (name) ON DELETE CASCADE,
    require_approval BOOLEAN NOT NULL,
    protected BOOLEAN NOT NULL,
    updated_at INTEGER NOT NULL
);

-- A dangerous change one admin asked for and another must approve before `expires_at`. The
-- approval is one conditional UPDATE (pending, unexpired, decided by someone else), so of two
-- approvals at once exactly one wins and applies it.
CREATE TABLE change_requests (
    id TEXT PRIMARY KEY,
    realm TEXT,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'applying', 'applied', 'rejected', 'failed')),
    decided_by TEXT,
    decided_at INTEGER,
    outcome TEXT
);
CREATE INDEX change_requests_by_time ON change_requests (requested_at);
