-- Schema version 5: what an agent's capture adds to a flow, and the key
-- that folds its repeated reports of one connection into one row.
--
-- An agent reports a long-lived connection several times (interim records,
-- then the final one) and, when both ends run agents, once from each end.
-- `conn_key` (the first 16 bytes of the SHA-256 of protocol, source and
-- destination) finds the stored row of the same connection; it is NULL for
-- flows that are not merged (flow logs, exporters, protocols without
-- connections), which the partial index leaves out.

ALTER TABLE flows ADD COLUMN retransmits BIGINT NOT NULL DEFAULT 0;
-- Smoothed RTT in microseconds; NULL when unknown.
ALTER TABLE flows ADD COLUMN rtt_us BIGINT;
ALTER TABLE flows ADD COLUMN conn_key BLOB;
CREATE INDEX flows_conn ON flows (conn_key, start_ms) WHERE conn_key IS NOT NULL;
