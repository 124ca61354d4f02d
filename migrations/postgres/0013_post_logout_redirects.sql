-- RP-Initiated Logout 1.0: where a client may send users after signing out (exact URIs, a JSON
-- list of strings), set with `sigil client create ... --post-logout-redirect-uri URI`.
ALTER TABLE clients ADD COLUMN post_logout_redirect_uris TEXT NOT NULL DEFAULT '[]';
