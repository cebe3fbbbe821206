-- Schema version 6 (PostgreSQL): the identity policy, one row per applied revision.
--
-- A revision is never changed or deleted: `hallmark policy history` lists
-- them and a rollback applies an old one's text again as a new revision.
-- Revisions are numbered 1, 2, 3... without gaps; writers take the entry
-- revision counter's row first, which orders them.
CREATE TABLE policy_revisions (
    revision         BIGINT PRIMARY KEY,
    -- The YAML document exactly as applied.
    document         TEXT NOT NULL,
    applied_at_ms    BIGINT NOT NULL,
    -- Who or what applied it (`cli:policy.yaml`, `rollback to 3`).
    source           TEXT NOT NULL,
    rolled_back_from BIGINT,
    -- SHA-256 of `document`, lowercase hex.
    digest           TEXT NOT NULL,
    group_count      BIGINT NOT NULL,
    rule_count       BIGINT NOT NULL,
    default_action   TEXT NOT NULL CHECK (default_action IN ('allow', 'deny'))
);
