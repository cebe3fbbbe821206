-- Hallmark datastore schema for PostgreSQL, version 1: everything the SQLite
-- schema holds after its migrations 0001 and 0002, in PostgreSQL's types.
--
-- Text columns are COLLATE "C" so ORDER BY compares bytes, as the Store
-- trait promises, whatever the database's default locale. JSON is kept as
-- TEXT (not JSONB) so a record reads back byte for byte as it was written
-- and both back ends share one row codec. Unix seconds, milliseconds and
-- counters are BIGINT.

-- Datastore-wide counters. `entry_revision` is bumped by an UPDATE in the
-- same transaction as every entry creation or deletion; the row lock that
-- UPDATE takes orders concurrent writers, so the revision never goes
-- backwards even with several servers on one database.
CREATE TABLE meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO meta (key, value) VALUES ('entry_revision', 0);

CREATE TABLE entries (
    id            TEXT COLLATE "C" PRIMARY KEY,
    spiffe_id     TEXT COLLATE "C" NOT NULL,
    parent_id     TEXT COLLATE "C" NOT NULL,
    -- JSON array of selector strings, sorted and deduplicated.
    selectors     TEXT NOT NULL,
    -- The same selectors joined by a newline: the identity of the set, for
    -- the uniqueness index below.
    selectors_key TEXT COLLATE "C" NOT NULL,
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
    entry_id TEXT COLLATE "C" NOT NULL REFERENCES entries (id) ON DELETE CASCADE,
    selector TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (entry_id, selector)
);
CREATE INDEX entry_selectors_selector ON entry_selectors (selector);

-- Only the SHA-256 of a token is stored; `used_at` is NULL until consumed.
CREATE TABLE join_tokens (
    token_hash TEXT COLLATE "C" PRIMARY KEY,
    agent_id   TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE TABLE agents (
    spiffe_id   TEXT COLLATE "C" PRIMARY KEY,
    serial      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    attested_at BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL,
    banned      BOOLEAN NOT NULL
);

CREATE TABLE authorities (
    id         TEXT COLLATE "C" PRIMARY KEY,
    kind       TEXT COLLATE "C" NOT NULL CHECK (kind IN ('x509', 'jwt')),
    state      TEXT NOT NULL,
    alg        TEXT NOT NULL,
    key_pkcs8  BYTEA NOT NULL,
    cert_der   BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    not_after  BIGINT NOT NULL
);
CREATE INDEX authorities_kind ON authorities (kind, created_at);

-- The certificates above an authority's own, nearest first (position 0).
CREATE TABLE authority_chain (
    authority_id TEXT COLLATE "C" NOT NULL REFERENCES authorities (id) ON DELETE CASCADE,
    position     BIGINT NOT NULL,
    cert_der     BYTEA NOT NULL,
    PRIMARY KEY (authority_id, position)
);

-- The workload inventory. Times are unix milliseconds: lifecycle events and
-- flow attribution need sub-second order. Records are stored whole as JSON
-- text (the serde form of hallmark_core::Workload), with the columns
-- listings filter on copied next to them.

-- The current (or recently stopped) workload per (context, agent, container).
CREATE TABLE workloads (
    context_name  TEXT COLLATE "C" NOT NULL,
    agent_id      TEXT COLLATE "C" NOT NULL,
    container_id  TEXT COLLATE "C" NOT NULL,
    record        TEXT NOT NULL,
    -- 'stopped' exactly when stopped_at_ms is set, else the record's state.
    state         TEXT COLLATE "C" NOT NULL,
    -- The pod's namespace; empty for workloads without a pod.
    namespace     TEXT COLLATE "C" NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    -- NULL while current.
    stopped_at_ms BIGINT,
    -- The latest snapshot that listed the workload (the agent's u64 id
    -- stored as the i64 with the same bits; only compared for equality).
    snapshot_id   BIGINT,
    PRIMARY KEY (context_name, agent_id, container_id)
);
-- Prefix lookups by container ID; completing a snapshot works per agent.
CREATE INDEX workloads_container ON workloads (container_id);
CREATE INDEX workloads_agent ON workloads (agent_id, context_name);
-- The pruner deletes by stop time.
CREATE INDEX workloads_stopped ON workloads (stopped_at_ms);

-- Pages of the snapshot each (context, agent) is sending, so that its last
-- page marks the unlisted workloads stopped only when no page is missing.
CREATE TABLE inventory_snapshot_pages (
    context_name TEXT COLLATE "C" NOT NULL,
    agent_id     TEXT COLLATE "C" NOT NULL,
    snapshot_id  BIGINT NOT NULL,
    page         BIGINT NOT NULL,
    received_ms  BIGINT NOT NULL,
    PRIMARY KEY (context_name, agent_id, snapshot_id, page)
);

-- Lifecycle events as agents reported them ("who had this IP when"). The
-- identity orders events of one report, which one transaction inserts in
-- order.
CREATE TABLE workload_events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    context_name TEXT COLLATE "C" NOT NULL,
    agent_id     TEXT COLLATE "C" NOT NULL,
    container_id TEXT COLLATE "C" NOT NULL,
    kind         TEXT COLLATE "C" NOT NULL CHECK (kind IN ('started', 'updated', 'stopped')),
    -- Agent time of the change.
    at_ms        BIGINT NOT NULL,
    -- Server time the report arrived; retention counts from it.
    received_ms  BIGINT NOT NULL,
    record       TEXT NOT NULL
);
CREATE INDEX workload_events_container ON workload_events (container_id, at_ms);
CREATE INDEX workload_events_received ON workload_events (received_ms);

-- Each agent's latest report: its context and container runtime.
CREATE TABLE agent_inventory (
    agent_id       TEXT COLLATE "C" PRIMARY KEY,
    context_name   TEXT COLLATE "C" NOT NULL,
    runtime        TEXT NOT NULL,
    endpoint       TEXT NOT NULL,
    version        TEXT NOT NULL,
    degraded       BOOLEAN NOT NULL,
    reason         TEXT NOT NULL,
    dropped_events BIGINT NOT NULL,
    reported_at_ms BIGINT NOT NULL
);
