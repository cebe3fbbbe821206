-- Schema version 4: attributed flows, the identity graph, ownership
-- evidence and flows held back for evidence.
--
-- Endpoint descriptions and owners are long JSON texts repeated by many
-- rows, so each is kept once in a dictionary (keyed by the SHA-256 of its
-- text) and referenced by id. A dictionary row records the latest time a
-- row of each kind referenced it, so pruning by the same bounds removes a
-- dictionary row exactly when nothing refers to it any more.
--
-- IP addresses are BLOBs: a family byte (4 or 6) and the address bytes, so
-- a CIDR is one range of the column and families never interleave.
-- AUTOINCREMENT keeps ids increasing even after every row was pruned:
-- `flows list --follow` and the evidence tail continue after an id.

CREATE TABLE flow_endpoints (
    id            INTEGER PRIMARY KEY,
    hash          BLOB NOT NULL UNIQUE,
    endpoint      TEXT NOT NULL,
    -- Latest start of a flow referring to it (as an end or a graph key).
    flow_used_ms  BIGINT,
    -- Latest graph minute referring to it.
    graph_used_ms BIGINT
);

CREATE TABLE flow_owners (
    id      INTEGER PRIMARY KEY,
    hash    BLOB NOT NULL UNIQUE,
    owner   TEXT NOT NULL,
    -- Latest evidence time referring to it.
    used_ms BIGINT NOT NULL
);

CREATE TABLE flows (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    start_ms         BIGINT NOT NULL,
    end_ms           BIGINT NOT NULL,
    protocol         BIGINT NOT NULL CHECK (protocol BETWEEN 0 AND 255),
    src_ip           BLOB NOT NULL,
    src_port         BIGINT NOT NULL CHECK (src_port BETWEEN 0 AND 65535),
    dst_ip           BLOB NOT NULL,
    dst_port         BIGINT NOT NULL CHECK (dst_port BETWEEN 0 AND 65535),
    initiator        TEXT NOT NULL CHECK (initiator IN ('source', 'destination', 'unknown')),
    bytes_sent       BIGINT NOT NULL,
    packets_sent     BIGINT NOT NULL,
    bytes_received   BIGINT NOT NULL,
    packets_received BIGINT NOT NULL,
    outcome          TEXT CHECK (outcome IN ('established', 'refused', 'reset', 'timed-out')),
    -- `agent:NODE`, `exporter:ADDR` or `file:NAME`.
    reporter         TEXT NOT NULL,
    -- The reporter's local side as JSON; NULL when it did not know it.
    local_side       TEXT,
    status           TEXT NOT NULL CHECK (status IN ('attributed', 'unattributed', 'external')),
    attributed_ms    BIGINT NOT NULL,
    src_endpoint     BIGINT NOT NULL,
    dst_endpoint     BIGINT NOT NULL,
    -- The ends' graph keys, so the identity graph can be recomputed from
    -- this table by a plain aggregate.
    src_key          BIGINT NOT NULL,
    dst_key          BIGINT NOT NULL,
    CHECK (end_ms >= start_ms)
);
CREATE INDEX flows_start ON flows (start_ms, id);

-- Per minute, per (source key, destination key, destination port,
-- protocol): what was seen.
CREATE TABLE flow_graph (
    minute_ms BIGINT NOT NULL,
    src_key   BIGINT NOT NULL,
    dst_key   BIGINT NOT NULL,
    dst_port  BIGINT NOT NULL,
    protocol  BIGINT NOT NULL,
    flows     BIGINT NOT NULL,
    bytes     BIGINT NOT NULL,
    first_ms  BIGINT NOT NULL,
    last_ms   BIGINT NOT NULL,
    refused   BIGINT NOT NULL,
    reset     BIGINT NOT NULL,
    PRIMARY KEY (minute_ms, src_key, dst_key, dst_port, protocol)
) WITHOUT ROWID;

-- Ownership evidence, as every server wrote it; the others tail it by id.
CREATE TABLE flow_evidence (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    ip       BLOB NOT NULL,
    -- NULL: the whole IP.
    port     BIGINT CHECK (port BETWEEN 0 AND 65535),
    owner_id BIGINT NOT NULL,
    at_ms    BIGINT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('started', 'heartbeat', 'stopped', 'local-flow'))
);
CREATE INDEX flow_evidence_ip ON flow_evidence (ip, at_ms);
CREATE INDEX flow_evidence_at ON flow_evidence (at_ms);

-- Flows held back until the evidence about their ends is complete, owned
-- by the server holding them in memory.
CREATE TABLE flow_pending (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    server_id   TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    -- The flow as JSON (hallmark_flows::Flow's serde form).
    flow        TEXT NOT NULL
);
CREATE INDEX flow_pending_server ON flow_pending (server_id, id);

-- When each server last wrote flows: pending rows of a server silent for
-- longer than the hold-back are adopted by another.
CREATE TABLE flow_servers (
    server_id TEXT PRIMARY KEY NOT NULL,
    seen_ms   BIGINT NOT NULL
);
