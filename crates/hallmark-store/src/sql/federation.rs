//! [`FederationStore`] on SQL.

use hallmark_core::TrustDomain;
use sqlx::{ColumnIndex, Encode, Executor, IntoArguments, Type};

use super::{Backend, RowsAffected, SqlStore, SqlValue};
use crate::codec::{decode_error, u64_column};
use crate::federation::{
    FederationRow, FEDERATION_COLUMNS, PUT_FEDERATION, SET_FAILED, SET_FETCHED,
};
use crate::{FederationRecord, FederationRefresh, FederationStore, Result};

#[async_trait::async_trait]
impl<DB> FederationStore for SqlStore<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'s> &'s str: Encode<'s, DB> + Type<DB> + ColumnIndex<DB::Row>,
    i64: SqlValue<DB>,
    String: SqlValue<DB>,
    Vec<u8>: SqlValue<DB>,
{
    async fn put_federation(&self, f: &FederationRecord) -> Result<()> {
        sqlx::query(PUT_FEDERATION)
            .bind(f.trust_domain.name())
            .bind(f.bundle_endpoint_url.as_str())
            .bind(f.profile.as_str())
            .bind(f.endpoint_spiffe_id.as_str())
            .bind(&f.web_ca_pem)
            .bind(&f.bundle)
            .bind(u64_column("bundle_sequence", f.bundle_sequence)?)
            .bind(f.created_at)
            .bind(f.last_refresh)
            .bind(f.next_refresh)
            .bind(f.last_error.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_federation(&self, td: &TrustDomain) -> Result<Option<FederationRecord>> {
        let sql = format!("SELECT {FEDERATION_COLUMNS} FROM federations WHERE trust_domain = $1");
        let row: Option<FederationRow> = sqlx::query_as(&sql)
            .bind(td.name())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| decode_error("federations", e))?;
        row.map(FederationRow::into_record).transpose()
    }

    async fn list_federations(&self) -> Result<Vec<FederationRecord>> {
        let sql = format!("SELECT {FEDERATION_COLUMNS} FROM federations ORDER BY trust_domain");
        let rows: Vec<FederationRow> = sqlx::query_as(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| decode_error("federations", e))?;
        rows.into_iter().map(FederationRow::into_record).collect()
    }

    async fn delete_federation(&self, td: &TrustDomain) -> Result<bool> {
        let done = sqlx::query("DELETE FROM federations WHERE trust_domain = $1")
            .bind(td.name())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn record_federation_refresh(
        &self,
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
                    .execute(&self.pool)
                    .await?
            }
            FederationRefresh::Failed {
                error,
                next_refresh,
            } => {
                sqlx::query(SET_FAILED)
                    .bind(error.as_str())
                    .bind(*next_refresh)
                    .bind(td.name())
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(done.rows_affected() > 0)
    }
}
