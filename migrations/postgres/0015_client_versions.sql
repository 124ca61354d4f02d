-- The admin API's optimistic concurrency: every change to a client bumps its version, and a write
-- that names the version it read (`If-Match`) changes the row only while it is still that one.
ALTER TABLE clients ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
