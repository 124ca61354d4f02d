-- How a client authenticates and whether its tokens are bound (JSON, see clients::auth):
-- tls_client_auth with its registered subject, self_signed_tls_client_auth with certificate
-- thumbprints, private_key_jwt with a JWKS or its URI, token binding, DPoP required.
-- NULL: a client secret, sent with Basic or in the body (what every client had before).
ALTER TABLE clients ADD COLUMN auth_config TEXT;

-- The CAs a realm's tls_client_auth clients may chain to (PEM, one or more certificates).
CREATE TABLE realm_mtls (
    realm      TEXT PRIMARY KEY REFERENCES realms (name) ON DELETE CASCADE,
    ca_pem     TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
