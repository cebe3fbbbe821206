-- Hallmark datastore schema, version 1.
--
-- Types are chosen so the same statements read well on PostgreSQL (whose
-- back end keeps its own migrations): BIGINT for unix seconds and counters,
-- BOOLEAN for flags, BLOB for DER/PKCS#8 (BYTEA there).

-- Datastore-wide counters. `entry_revision` is bumped in the same transaction
-- as every entry creation or deletion; agents compare it to skip work when
-- nothing changed, so it must never go backwards.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('entry_revision', 0);

CREATE TABLE entries (
    id            TEXT PRIMARY KEY NOT NULL,
    spiffe_id     TEXT NOT NULL,
    parent_id     TEXT NOT NULL,
    -- JSON array of selector strings, sorted and deduplicated.
    selectors     TEXT NOT NULL,
    -- The same selectors joined by a newline: the identity of the set, for
    -- the uniqueness index below.
    selectors_key TEXT NOT NULL,
    x509_ttl_secs BIGINT NOT NULL,
    jwt_ttl_secs  BIGINT NOT NULL,
    -- JSON array of DNS names.
    dns_names     TEXT NOT NULL,
    hint          TEXT NOT NULL,
    admin         BOOLEAN NOT NULL,
    created_at    BIGINT NOT NULL,
    revision      BIGINT NOT NULL
);
-- Two entries granting the same ID to the same selectors under the same
-- parent would be indistinguishable to an agent.
CREATE UNIQUE INDEX entries_identity ON entries (spiffe_id, parent_id, selectors_key);
-- Agents fetch their entries by parent.
CREATE INDEX entries_parent ON entries (parent_id);

-- One row per selector of an entry, for filtering entries by selector.
CREATE TABLE entry_selectors (
    entry_id TEXT NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    selector TEXT NOT NULL,
    PRIMARY KEY (entry_id, selector)
);
CREATE INDEX entry_selectors_selector ON entry_selectors (selector);

-- Only the SHA-256 of a token is stored; `used_at` is NULL until consumed.
CREATE TABLE join_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    agent_id   TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE TABLE agents (
    spiffe_id   TEXT PRIMARY KEY NOT NULL,
    serial      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    attested_at BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    banned      BOOLEAN NOT NULL
);

CREATE TABLE authorities (
    id         TEXT PRIMARY KEY NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('x509', 'jwt')),
    state      TEXT NOT NULL,
    alg        TEXT NOT NULL,
    key_pkcs8  BLOB NOT NULL,
    cert_der   BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    not_after  BIGINT NOT NULL
);
CREATE INDEX authorities_kind ON authorities (kind, created_at);

-- The certificates above an authority's own, nearest first (position 0).
CREATE TABLE authority_chain (
    authority_id TEXT NOT NULL REFERENCES authorities (id) ON DELETE CASCADE,
    position     BIGINT NOT NULL,
    cert_der     BLOB NOT NULL,
    PRIMARY KEY (authority_id, position)
);
