-- Hallmark datastore schema, version 2: the workload inventory.
--
-- Times here are unix milliseconds (BIGINT), unlike the seconds of version 1:
-- lifecycle events and flow attribution need sub-second order. Records are
-- stored whole as JSON text (the serde form of hallmark_core::Workload), with
-- the columns listings filter on copied next to them. Nothing below is
-- SQLite-only except the rowid primary key of workload_events, which the
-- PostgreSQL schema writes as BIGINT GENERATED ALWAYS AS IDENTITY.

-- The current (or recently stopped) workload per (context, agent, container).
CREATE TABLE workloads (
    context_name  TEXT NOT NULL,
    agent_id      TEXT NOT NULL,
    container_id  TEXT NOT NULL,
    record        TEXT NOT NULL,
    -- 'stopped' exactly when stopped_at_ms is set, else the record's state.
    state         TEXT NOT NULL,
    -- The pod's namespace; empty for workloads without a pod.
    namespace     TEXT NOT NULL,
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
    context_name TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    snapshot_id  BIGINT NOT NULL,
    page         BIGINT NOT NULL,
    received_ms  BIGINT NOT NULL,
    PRIMARY KEY (context_name, agent_id, snapshot_id, page)
);

-- Lifecycle events as agents reported them ("who had this IP when").
CREATE TABLE workload_events (
    id           INTEGER PRIMARY KEY,
    context_name TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    container_id TEXT NOT NULL,
    kind         TEXT NOT NULL CHECK (kind IN ('started', 'updated', 'stopped')),
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
    agent_id       TEXT PRIMARY KEY NOT NULL,
    context_name   TEXT NOT NULL,
    runtime        TEXT NOT NULL,
    endpoint       TEXT NOT NULL,
    version        TEXT NOT NULL,
    degraded       BOOLEAN NOT NULL,
    reason         TEXT NOT NULL,
    dropped_events BIGINT NOT NULL,
    reported_at_ms BIGINT NOT NULL
);
