-- Schema version 7: what identity policy said about each stored flow, and
-- the identity graph's counts of it.
--
-- A flow is decided once, when stored, by the policy in force then; the
-- revision is kept beside the verdict. Flows stored before verdicts
-- existed keep NULL (no verdict known) and count in no graph counter.

ALTER TABLE flows ADD COLUMN verdict TEXT
    CHECK (verdict IN ('allowed', 'denied', 'would-deny', 'no-decision'));
-- The deciding rule and its mode; NULL when the default (or nothing) decided.
ALTER TABLE flows ADD COLUMN verdict_rule TEXT;
ALTER TABLE flows ADD COLUMN verdict_mode TEXT CHECK (verdict_mode IN ('enforce', 'watch'));
ALTER TABLE flows ADD COLUMN policy_revision BIGINT;

ALTER TABLE flow_graph ADD COLUMN allowed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE flow_graph ADD COLUMN denied BIGINT NOT NULL DEFAULT 0;
ALTER TABLE flow_graph ADD COLUMN would_deny BIGINT NOT NULL DEFAULT 0;
ALTER TABLE flow_graph ADD COLUMN no_decision BIGINT NOT NULL DEFAULT 0;
