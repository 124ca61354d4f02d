-- Facts about the deployment that every tool reading this database must judge alike. Today one:
-- `admin_realm`, the admin realm the last `sigil serve` (or `sigil admin bootstrap`) ran with, so
-- a CLI run without that setting still holds the admin realm's changes for a second admin.
CREATE TABLE server_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
