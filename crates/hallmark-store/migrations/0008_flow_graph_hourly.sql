-- Schema version 8: the identity graph rolled up by the hour.
--
-- A row of flow_graph_hourly is the sum of the flow_graph rows of its key
-- in the hour starting at hour_ms (a multiple of 3 600 000): their counters
-- added, the earliest first_ms, the latest last_ms, and minute_ms the
-- earliest of their minutes. Writers add to both tables in one
-- transaction, and a graph query over whole hours reads this table, one
-- row per key and hour instead of up to 60.

CREATE TABLE flow_graph_hourly (
    hour_ms     BIGINT NOT NULL,
    src_key     BIGINT NOT NULL,
    dst_key     BIGINT NOT NULL,
    dst_port    BIGINT NOT NULL,
    protocol    BIGINT NOT NULL,
    minute_ms   BIGINT NOT NULL,
    flows       BIGINT NOT NULL,
    bytes       BIGINT NOT NULL,
    first_ms    BIGINT NOT NULL,
    last_ms     BIGINT NOT NULL,
    refused     BIGINT NOT NULL,
    reset       BIGINT NOT NULL,
    allowed     BIGINT NOT NULL,
    denied      BIGINT NOT NULL,
    would_deny  BIGINT NOT NULL,
    no_decision BIGINT NOT NULL,
    PRIMARY KEY (hour_ms, src_key, dst_key, dst_port, protocol)
) WITHOUT ROWID;

-- The hour of a minute rounds down, before 1970 too.
INSERT INTO flow_graph_hourly (hour_ms, src_key, dst_key, dst_port, protocol, minute_ms,
    flows, bytes, first_ms, last_ms, refused, reset, allowed, denied, would_deny, no_decision)
SELECT minute_ms - ((minute_ms % 3600000) + 3600000) % 3600000 AS hour_ms,
    src_key, dst_key, dst_port, protocol, MIN(minute_ms),
    SUM(flows), SUM(bytes), MIN(first_ms), MAX(last_ms), SUM(refused), SUM(reset),
    SUM(allowed), SUM(denied), SUM(would_deny), SUM(no_decision)
FROM flow_graph
GROUP BY hour_ms, src_key, dst_key, dst_port, protocol;
