-- Principal policies for resource servers: ALLOW/DENY over actions and resources with CEL
-- assertions, attached to one principal of the realm. `spec` is the policy as published (JSON);
-- the principal's kind and id are columns too, to list a principal's policies.
CREATE TABLE policies (
    realm          TEXT NOT NULL REFERENCES realms (name) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    principal_kind TEXT NOT NULL,
    principal      TEXT NOT NULL,
    effect         TEXT NOT NULL CHECK (effect IN ('ALLOW', 'DENY')),
    spec           TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    created_by     TEXT NOT NULL,
    PRIMARY KEY (realm, name)
);
CREATE INDEX policies_by_principal ON policies (realm, principal_kind, principal);

-- The version of a realm's policy bundle: raised in the transaction of every change to its
-- policies, so a resource server can refuse an older bundle than the one it holds.
CREATE TABLE policy_versions (
    realm   TEXT PRIMARY KEY REFERENCES realms (name) ON DELETE CASCADE,
    version BIGINT NOT NULL
);
