-- Clients allowed to call the introspection endpoint (RFC 7662): resource servers, set with
-- `sigil client create ... --introspect`.
ALTER TABLE clients ADD COLUMN may_introspect BOOLEAN NOT NULL DEFAULT 0;
