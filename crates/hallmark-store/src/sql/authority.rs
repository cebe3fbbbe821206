//! [`AuthorityStore`] on SQL: an authority row and its certificate chain,
//! written and read together.

use std::collections::HashMap;

use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{values_list, Backend, SqlStore, SqlValue};
use crate::codec::{decode_error, AuthorityRow, ChainRow, AUTHORITY_COLUMNS};
use crate::{AuthorityKind, AuthorityRecord, AuthorityStore, Result};

#[async_trait::async_trait]
impl<DB> AuthorityStore for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB> + ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
    String: SqlValue<DB>,
    Vec<u8>: SqlValue<DB>,
{
    async fn put_authority(&self, a: &AuthorityRecord) -> Result<()> {
        let mut tx = self.pool.begin_with(DB::BEGIN_WRITE).await?;
        // The upsert locks the authority row, so concurrent puts of one
        // authority replace its chain one after the other, never mixed.
        sqlx::query(
            "INSERT INTO authorities (id, kind, state, alg, key_pkcs8, cert_der, created_at, not_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, state = excluded.state, alg = excluded.alg, \
             key_pkcs8 = excluded.key_pkcs8, cert_der = excluded.cert_der, created_at = excluded.created_at, \
             not_after = excluded.not_after",
        )
        .bind(a.id.as_str())
        .bind(a.kind.as_str())
        .bind(a.state.as_str())
        .bind(a.alg.as_str())
        .bind(&a.key_pkcs8)
        .bind(&a.cert_der)
        .bind(a.created_at)
        .bind(a.not_after)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM authority_chain WHERE authority_id = $1")
            .bind(a.id.as_str())
            .execute(&mut *tx)
            .await?;
        if !a.chain_der.is_empty() {
            let sql = format!(
                "INSERT INTO authority_chain (authority_id, position, cert_der) {}",
                values_list(1, a.chain_der.len(), 3)
            );
            let mut insert = sqlx::query(&sql);
            for (position, cert) in (0_i64..).zip(&a.chain_der) {
                insert = insert.bind(a.id.as_str()).bind(position).bind(cert);
            }
            insert.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_authorities(&self, kind: AuthorityKind) -> Result<Vec<AuthorityRecord>> {
        // One snapshot for both queries, so the chains match the authority
        // rows even if another server puts one meanwhile.
        let mut tx = self.pool.begin_with(DB::BEGIN_CONSISTENT_READ).await?;
        let sql = format!(
            "SELECT {AUTHORITY_COLUMNS} FROM authorities WHERE kind = $1 ORDER BY created_at, id"
        );
        let rows: Vec<AuthorityRow> = sqlx::query_as(&sql)
            .bind(kind.as_str())
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| decode_error("authorities", e))?;
        let links: Vec<ChainRow> = sqlx::query_as(
            "SELECT c.authority_id AS authority_id, c.position AS position, c.cert_der AS cert_der \
             FROM authority_chain c JOIN authorities a ON a.id = c.authority_id \
             WHERE a.kind = $1 ORDER BY c.authority_id, c.position",
        )
        .bind(kind.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| decode_error("authority_chain", e))?;
        tx.commit().await?;

        let mut chains: HashMap<String, Vec<ChainRow>> = HashMap::new();
        for link in links {
            chains
                .entry(link.authority_id.clone())
                .or_default()
                .push(link);
        }
        rows.into_iter()
            .map(|row| {
                let chain = chains.remove(&row.id).unwrap_or_default();
                row.into_authority(chain)
            })
            .collect()
    }
}
