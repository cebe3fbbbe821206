-- Schema version 3: federation, OIDC signing keys, entry options.

-- Foreign trust domains an entry's workloads receive bundles of, and extra
-- OIDC claims; both JSON arrays of strings, sorted.
ALTER TABLE entries ADD COLUMN federates_with TEXT NOT NULL DEFAULT '[]';
ALTER TABLE entries ADD COLUMN oidc_claims TEXT NOT NULL DEFAULT '[]';

-- SQLite cannot change a CHECK constraint in place: the authorities table
-- (and the chain that references it) are rebuilt with 'oidc' allowed.
CREATE TABLE authorities_v3 (
    id         TEXT PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('x509', 'jwt', 'oidc')),
    state      TEXT NOT NULL,
    alg        TEXT NOT NULL,
    key_pkcs8  BLOB NOT NULL,
    cert_der   BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    not_after  BIGINT NOT NULL
);
INSERT INTO authorities_v3 SELECT id, kind, state, alg, key_pkcs8, cert_der, created_at, not_after FROM authorities;
CREATE TABLE authority_chain_v3 (
    authority_id TEXT NOT NULL REFERENCES authorities_v3 (id) ON DELETE CASCADE,
    position     BIGINT NOT NULL,
    cert_der     BLOB NOT NULL,
    PRIMARY KEY (authority_id, position)
);
INSERT INTO authority_chain_v3 SELECT authority_id, position, cert_der FROM authority_chain;
DROP TABLE authority_chain;
DROP TABLE authorities;
ALTER TABLE authorities_v3 RENAME TO authorities;
ALTER TABLE authority_chain_v3 RENAME TO authority_chain;
CREATE INDEX authorities_kind ON authorities (kind, created_at);

-- Federation relationships with foreign trust domains and the bundle last
-- fetched from each. `bundle` is the foreign SPIFFE bundle (JWKS JSON),
-- empty until bootstrapped or fetched.
CREATE TABLE federations (
    trust_domain        TEXT PRIMARY KEY NOT NULL,
    bundle_endpoint_url TEXT NOT NULL,
    profile             TEXT NOT NULL CHECK (profile IN ('https_web', 'https_spiffe')),
    endpoint_spiffe_id  TEXT NOT NULL,
    web_ca_pem          BLOB NOT NULL,
    bundle              BLOB NOT NULL,
    bundle_sequence     BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    last_refresh        BIGINT NOT NULL,
    next_refresh        BIGINT NOT NULL,
    last_error          TEXT NOT NULL
);
