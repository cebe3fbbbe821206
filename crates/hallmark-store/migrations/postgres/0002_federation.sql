-- Schema version 2: federation, OIDC signing keys, entry options.

ALTER TABLE entries ADD COLUMN federates_with TEXT NOT NULL DEFAULT '[]';
ALTER TABLE entries ADD COLUMN oidc_claims TEXT NOT NULL DEFAULT '[]';

ALTER TABLE authorities DROP CONSTRAINT IF EXISTS authorities_kind_check;
ALTER TABLE authorities ADD CONSTRAINT authorities_kind_check CHECK (kind IN ('x509', 'jwt', 'oidc'));
