-- The admin API's optimistic concurrency for users, as for clients: every change an admin makes
-- to a user (enabled, attributes) bumps the version, and a write naming the version it read
-- (`If-Match`) changes the row only while it is still that one.
ALTER TABLE users ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
