-- Schema version 2: federation, OIDC signing keys, entry options.

ALTER TABLE entries ADD COLUMN federates_with TEXT NOT NULL DEFAULT '[]';
ALTER TABLE entries ADD COLUMN oidc_claims TEXT NOT NULL DEFAULT '[]';

ALTER TABLE authorities DROP CONSTRAINT IF EXISTS authorities_kind_check;
ALTER TABLE authorities ADD CONSTRAINT authorities_kind_check CHECK (kind IN ('x509', 'jwt', 'oidc'));

-- Federation relationships with foreign trust domains and the bundle last
-- fetched from each. `bundle` is the foreign SPIFFE bundle (JWKS JSON),
-- empty until bootstrapped or fetched.
CREATE TABLE federations (
    trust_domain        TEXT COLLATE "C" PRIMARY KEY,
    bundle_endpoint_url TEXT NOT NULL,
    profile             TEXT NOT NULL CHECK (profile IN ('https_web', 'https_spiffe')),
    endpoint_spiffe_id  TEXT NOT NULL,
    web_ca_pem          BYTEA NOT NULL,
    bundle              BYTEA NOT NULL,
    bundle_sequence     BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    last_refresh        BIGINT NOT NULL,
    next_refresh        BIGINT NOT NULL,
    last_error          TEXT NOT NULL
);
