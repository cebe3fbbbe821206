//! Queries that read the same on SQLite and PostgreSQL, written once and
//! expanded in each back end for its own connection and pool types (sqlx
//! statements are typed by database, and both dialects accept `$n`
//! placeholders, `ON CONFLICT` upserts and these expressions).

/// The inventory write helpers of one report (upserts, snapshot pages and
/// completion, per-agent status), over the back end's connection type.
macro_rules! inventory_writes {
    ($conn:ty) => {
        /// The inventory rows one report may touch belong to this pair.
        struct InventoryKey<'a> {
            context_name: &'a str,
            agent_id: &'a str,
        }

        /// How an upsert stops a workload.
        #[derive(Debug, Clone, Copy)]
        enum Stop {
            /// Stopped at this time unless it was stopped already (then the earlier
            /// time stays): the record says stopped, but not when it was seen to.
            Keep(i64),
            /// Stopped at exactly this time: the agent saw it stop then.
            Exact(i64),
        }

        /// When a record in state stopped stopped: the runtime's finish time when
        /// it is known and not after `reference_ms`, else `reference_ms`. An exited
        /// container listed long after it exited thus ages out of the retention
        /// window instead of being listed as freshly stopped by every snapshot.
        fn stop_time(w: &Workload, reference_ms: i64) -> i64 {
            if w.finished_at_ms > 0 && w.finished_at_ms <= reference_ms {
                w.finished_at_ms
            } else {
                reference_ms
            }
        }

        async fn upsert_workload(
            conn: &mut $conn,
            key: &InventoryKey<'_>,
            w: &Workload,
            json: &str,
            now_ms: i64,
            snapshot: Option<i64>,
            stop: Option<Stop>,
        ) -> Result<()> {
            let (stopped_at, exact) = match stop {
                None => (None, false),
                Some(Stop::Keep(at)) => (Some(at), false),
                Some(Stop::Exact(at)) => (Some(at), true),
            };
            sqlx::query(
                "INSERT INTO workloads (context_name, agent_id, container_id, record, state, namespace, \
                 first_seen_ms, last_seen_ms, stopped_at_ms, snapshot_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9) \
                 ON CONFLICT (context_name, agent_id, container_id) DO UPDATE SET \
                 record = excluded.record, state = excluded.state, namespace = excluded.namespace, \
                 last_seen_ms = excluded.last_seen_ms, \
                 stopped_at_ms = CASE WHEN excluded.stopped_at_ms IS NULL OR $10 THEN excluded.stopped_at_ms \
                                      ELSE COALESCE(workloads.stopped_at_ms, excluded.stopped_at_ms) END, \
                 snapshot_id = COALESCE(excluded.snapshot_id, workloads.snapshot_id)",
            )
            .bind(key.context_name)
            .bind(key.agent_id)
            .bind(&w.container_id)
            .bind(json)
            .bind(state_column(w, stopped_at.is_some()))
            .bind(namespace_column(w))
            .bind(now_ms)
            .bind(stopped_at)
            .bind(snapshot)
            .bind(exact)
            .execute(conn)
            .await?;
            Ok(())
        }

        /// Notes that a page of `snapshot` arrived; a page of another snapshot
        /// abandons the one in progress.
        async fn record_page(
            conn: &mut $conn,
            key: &InventoryKey<'_>,
            snapshot: i64,
            page: u32,
            now_ms: i64,
        ) -> Result<()> {
            sqlx::query(
                "DELETE FROM inventory_snapshot_pages WHERE context_name = $1 AND agent_id = $2 AND snapshot_id <> $3",
            )
            .bind(key.context_name)
            .bind(key.agent_id)
            .bind(snapshot)
            .execute(&mut *conn)
            .await?;
            // A page sent twice (a retry after a lost answer) keeps its first
            // arrival time.
            sqlx::query(
                "INSERT INTO inventory_snapshot_pages (context_name, agent_id, snapshot_id, page, received_ms) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (context_name, agent_id, snapshot_id, page) DO NOTHING",
            )
            .bind(key.context_name)
            .bind(key.agent_id)
            .bind(snapshot)
            .bind(i64::from(page))
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        /// Handles the last page (`last`) of `snapshot`: see [`Store::apply_inventory`].
        async fn complete_snapshot(
            conn: &mut $conn,
            key: &InventoryKey<'_>,
            snapshot: i64,
            last: u32,
            now_ms: i64,
        ) -> Result<SnapshotOutcome> {
            let (received, started): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), MIN(received_ms) FROM inventory_snapshot_pages \
                 WHERE context_name = $1 AND agent_id = $2 AND snapshot_id = $3 AND page <= $4",
            )
            .bind(key.context_name)
            .bind(key.agent_id)
            .bind(snapshot)
            .bind(i64::from(last))
            .fetch_one(&mut *conn)
            .await
            .map_err(|e| decode_error("inventory_snapshot_pages", e))?;
            // The snapshot is over either way: a later page of it cannot complete
            // it again.
            sqlx::query("DELETE FROM inventory_snapshot_pages WHERE context_name = $1 AND agent_id = $2")
                .bind(key.context_name)
                .bind(key.agent_id)
                .execute(&mut *conn)
                .await?;
            // Pages are numbered from 0 and stored once each, so a count short of
            // `last + 1` means some page never arrived.
            let expected = i64::from(last) + 1;
            if received < expected {
                return Ok(SnapshotOutcome::Incomplete {
                    missing_pages: u64::try_from(expected - received).unwrap_or(0),
                });
            }
            // Workloads an event touched after the snapshot began may have started
            // after the agent listed its containers; the next snapshot settles them.
            let marked = sqlx::query(
                "UPDATE workloads SET stopped_at_ms = $1, state = 'stopped' \
                 WHERE context_name = $2 AND agent_id = $3 AND stopped_at_ms IS NULL \
                 AND (snapshot_id IS NULL OR snapshot_id <> $4) AND last_seen_ms < $5",
            )
            .bind(now_ms)
            .bind(key.context_name)
            .bind(key.agent_id)
            .bind(snapshot)
            .bind(started.unwrap_or(now_ms))
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(SnapshotOutcome::Completed {
                marked_stopped: marked,
            })
        }

        async fn set_agent_inventory(
            conn: &mut $conn,
            r: &InventoryReport,
            now_ms: i64,
        ) -> Result<()> {
            // Without a status the stored one stays; an agent that never sent one
            // has an empty runtime name, which readers take as "not reported".
            let keep_runtime = r.runtime.is_none();
            let runtime = r.runtime.clone().unwrap_or_default();
            sqlx::query(
                "INSERT INTO agent_inventory (agent_id, context_name, runtime, endpoint, version, degraded, reason, \
                 dropped_events, reported_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (agent_id) DO UPDATE SET context_name = excluded.context_name, \
                 runtime = CASE WHEN $10 THEN agent_inventory.runtime ELSE excluded.runtime END, \
                 endpoint = CASE WHEN $10 THEN agent_inventory.endpoint ELSE excluded.endpoint END, \
                 version = CASE WHEN $10 THEN agent_inventory.version ELSE excluded.version END, \
                 degraded = CASE WHEN $10 THEN agent_inventory.degraded ELSE excluded.degraded END, \
                 reason = CASE WHEN $10 THEN agent_inventory.reason ELSE excluded.reason END, \
                 dropped_events = excluded.dropped_events, reported_at_ms = excluded.reported_at_ms",
            )
            .bind(r.agent_id.as_str())
            .bind(&r.context_name)
            .bind(&runtime.runtime)
            .bind(&runtime.endpoint)
            .bind(&runtime.version)
            .bind(runtime.degraded)
            .bind(&runtime.reason)
            .bind(counter_column(r.dropped_events))
            .bind(now_ms)
            .bind(keep_runtime)
            .execute(conn)
            .await?;
            Ok(())
        }

        /// A report's records encoded for storage, before any transaction is
        /// opened so that locks are held for writing only.
        struct EncodedReport {
            /// The snapshot page's records, in order.
            pages: Vec<String>,
            /// The events' records, in order.
            events: Vec<String>,
        }

        fn encode_report(r: &InventoryReport) -> Result<EncodedReport> {
            Ok(EncodedReport {
                pages: r
                    .snapshot
                    .iter()
                    .flat_map(|p| &p.workloads)
                    .map(workload_json)
                    .collect::<Result<Vec<_>>>()?,
                events: r
                    .events
                    .iter()
                    .map(|e| workload_json(&e.workload))
                    .collect::<Result<Vec<_>>>()?,
            })
        }

        /// Applies one report inside the caller's transaction (see
        /// `Store::apply_inventory` for the order and the rules).
        async fn write_report(
            conn: &mut $conn,
            r: &InventoryReport,
            encoded: &EncodedReport,
            now_ms: i64,
        ) -> Result<InventoryApplied> {
            let key = InventoryKey {
                context_name: &r.context_name,
                agent_id: r.agent_id.as_str(),
            };
            let mut applied = InventoryApplied {
                upserted: 0,
                events: 0,
                snapshot: SnapshotOutcome::None,
            };
            if let Some(page) = &r.snapshot {
                let snapshot = snapshot_column(page.snapshot_id);
                record_page(&mut *conn, &key, snapshot, page.page, now_ms).await?;
                for (w, json) in page.workloads.iter().zip(&encoded.pages) {
                    let stop =
                        (w.state == WorkloadState::Stopped).then(|| Stop::Keep(stop_time(w, now_ms)));
                    upsert_workload(&mut *conn, &key, w, json, now_ms, Some(snapshot), stop).await?;
                    applied.upserted += 1;
                }
                applied.snapshot = if page.last_page {
                    complete_snapshot(&mut *conn, &key, snapshot, page.page, now_ms).await?
                } else {
                    SnapshotOutcome::Page
                };
            }
            for (e, json) in r.events.iter().zip(&encoded.events) {
                let stop = match e.kind {
                    WorkloadEventKind::Stopped => Some(Stop::Exact(e.at_ms)),
                    _ if e.workload.state == WorkloadState::Stopped => {
                        Some(Stop::Keep(stop_time(&e.workload, e.at_ms)))
                    }
                    _ => None,
                };
                upsert_workload(&mut *conn, &key, &e.workload, json, now_ms, None, stop).await?;
                sqlx::query(
                    "INSERT INTO workload_events (context_name, agent_id, container_id, kind, at_ms, received_ms, record) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(key.context_name)
                .bind(key.agent_id)
                .bind(&e.workload.container_id)
                .bind(e.kind.as_str())
                .bind(e.at_ms)
                .bind(now_ms)
                .bind(json)
                .execute(&mut *conn)
                .await?;
                applied.upserted += 1;
                applied.events += 1;
            }
            set_agent_inventory(&mut *conn, r, now_ms).await?;
            Ok(applied)
        }
    };
}

/// The federation relationship queries, as a module `federation_sql` of
/// functions over the back end's pool type.
macro_rules! federation_queries {
    ($pool:ty) => {
        mod federation_sql {
            use super::*;

            pub(crate) async fn put_federation(pool: &$pool, f: &FederationRecord) -> Result<()> {
                sqlx::query(PUT_FEDERATION)
                    .bind(f.trust_domain.name())
                    .bind(&f.bundle_endpoint_url)
                    .bind(f.profile.as_str())
                    .bind(&f.endpoint_spiffe_id)
                    .bind(&f.web_ca_pem)
                    .bind(&f.bundle)
                    .bind(u64_column("bundle_sequence", f.bundle_sequence)?)
                    .bind(f.created_at)
                    .bind(f.last_refresh)
                    .bind(f.next_refresh)
                    .bind(&f.last_error)
                    .execute(pool)
                    .await?;
                Ok(())
            }

            pub(crate) async fn get_federation(
                pool: &$pool,
                td: &TrustDomain,
            ) -> Result<Option<FederationRecord>> {
                let sql =
                    format!("SELECT {FEDERATION_COLUMNS} FROM federations WHERE trust_domain = $1");
                let row: Option<FederationRow> = sqlx::query_as(&sql)
                    .bind(td.name())
                    .fetch_optional(pool)
                    .await
                    .map_err(|e| decode_error("federations", e))?;
                row.map(FederationRow::into_record).transpose()
            }

            pub(crate) async fn list_federations(pool: &$pool) -> Result<Vec<FederationRecord>> {
                let sql =
                    format!("SELECT {FEDERATION_COLUMNS} FROM federations ORDER BY trust_domain");
                let rows: Vec<FederationRow> = sqlx::query_as(&sql)
                    .fetch_all(pool)
                    .await
                    .map_err(|e| decode_error("federations", e))?;
                rows.into_iter().map(FederationRow::into_record).collect()
            }

            pub(crate) async fn delete_federation(pool: &$pool, td: &TrustDomain) -> Result<bool> {
                let done = sqlx::query("DELETE FROM federations WHERE trust_domain = $1")
                    .bind(td.name())
                    .execute(pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            pub(crate) async fn record_federation_refresh(
                pool: &$pool,
                td: &TrustDomain,
                outcome: &FederationRefresh,
            ) -> Result<bool> {
                let done = match outcome {
                    FederationRefresh::Fetched {
                        bundle,
                        sequence,
                        at,
                        next_refresh,
                    } => {
                        sqlx::query(SET_FETCHED)
                            .bind(bundle)
                            .bind(u64_column("bundle_sequence", *sequence)?)
                            .bind(*at)
                            .bind(*next_refresh)
                            .bind(td.name())
                            .execute(pool)
                            .await?
                    }
                    FederationRefresh::Failed {
                        error,
                        next_refresh,
                    } => {
                        sqlx::query(SET_FAILED)
                            .bind(error)
                            .bind(*next_refresh)
                            .bind(td.name())
                            .execute(pool)
                            .await?
                    }
                };
                Ok(done.rows_affected() > 0)
            }
        }
    };
}

/// The workload listing, as a module `workload_sql` over the back end's
/// pool and database types (the SQL narrows by plain columns; the filter's
/// own `matches` decides).
macro_rules! workload_queries {
    ($pool:ty, $db:ty) => {
        mod workload_sql {
            use super::*;

            pub(crate) async fn list_workloads(
                pool: &$pool,
                filter: &WorkloadFilter,
                now_ms: i64,
                retention: Duration,
            ) -> Result<Vec<StoredWorkload>> {
                let mut q = QueryBuilder::<$db>::new(format!(
                    "SELECT {WORKLOAD_COLUMNS} FROM workloads WHERE (stopped_at_ms IS NULL OR stopped_at_ms >= "
                ));
                q.push_bind(visible_since_ms(now_ms, retention)).push(")");
                // SQL narrows by the plain columns; `filter.matches` below is the
                // definition and also checks images and labels.
                if let Some(c) = &filter.context_name {
                    q.push(" AND context_name = ").push_bind(c.as_str());
                }
                if let Some(a) = &filter.agent_id {
                    q.push(" AND agent_id = ").push_bind(a.as_str());
                }
                if let Some(ns) = &filter.namespace {
                    q.push(" AND namespace = ").push_bind(ns.as_str());
                }
                match filter.state {
                    Some(StateFilter::Current) => {
                        q.push(" AND stopped_at_ms IS NULL");
                    }
                    Some(StateFilter::Is(state)) => {
                        q.push(" AND state = ").push_bind(state.as_str());
                    }
                    None => {}
                }
                q.push(" ORDER BY context_name, agent_id, container_id");
                let rows: Vec<WorkloadRow> = q
                    .build_query_as()
                    .fetch_all(pool)
                    .await
                    .map_err(|e| decode_error("workloads", e))?;
                let mut out = Vec::new();
                for row in rows {
                    let w = row.into_workload()?;
                    if filter.matches(&w) {
                        out.push(w);
                    }
                }
                Ok(out)
            }
        }
    };
}

pub(crate) use {federation_queries, inventory_writes, workload_queries};
