//! Send budgets in PostgreSQL: one [`BudgetStore`] shared by every server on the database.

use std::time::Duration;

use async_trait::async_trait;
use otp_sms_core::{BudgetStore, PortError, Rule, StoreError, TakeOutcome, TakeRequest};
use sqlx::postgres::PgPool;

use crate::{is_valid_schema, map_error};

/// The send budgets of `otp_sms_core`, in the `budget_entries` table of a store's schema.
///
/// Every take is one call of the `take_budgets` function (migration 0005): it locks each key
/// it touches (in key order, so concurrent takes cannot deadlock), checks every rule and
/// inserts every entry, or inserts nothing, in one transaction. Windows are measured on the
/// database's clock. The tables are created by [`crate::PgStore::migrate`].
///
/// ```no_run
/// # async fn run(pool: sqlx::PgPool) -> Result<(), otp_sms_core::StoreError> {
/// use std::sync::Arc;
/// let budgets = otp_sms_postgres::PgBudgets::new(pool, "otp_sms")?;
/// // service.with_budget_store(Arc::new(budgets))
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PgBudgets {
    pool: PgPool,
    take: String,
    refund: String,
    hold: String,
    release: String,
    members: String,
    clear: String,
}

fn port(e: sqlx::Error) -> PortError {
    match map_error(e) {
        StoreError::Unavailable(m) => PortError::Unavailable(m),
        other => PortError::Internal(other.to_string()),
    }
}

impl PgBudgets {
    /// Budgets in `schema` (the event store's; migrated by [`crate::PgStore::migrate`]).
    pub fn new(pool: PgPool, schema: &str) -> Result<Self, StoreError> {
        if !is_valid_schema(schema) {
            return Err(StoreError::Internal(format!(
                "invalid schema name `{schema}`: use lowercase letters, digits and _"
            )));
        }
        let s = format!("\"{schema}\"");
        Ok(Self {
            pool,
            take: format!(
                "SELECT refused, retry_secs FROM {s}.take_budgets($1, $2, $3, $4, $5, $6)"
            ),
            refund: format!(
                "DELETE FROM {s}.budget_entries e USING unnest($1::text[], $2::text[]) AS t(k, m) \
                 WHERE e.key = t.k AND e.member = t.m"
            ),
            hold: format!(
                "UPDATE {s}.budget_entries SET until = CASE WHEN $3::float8 IS NULL THEN NULL \
                 ELSE clock_timestamp() + make_interval(secs => $3::float8) END \
                 WHERE key = $1 AND member = $2"
            ),
            release: format!("DELETE FROM {s}.budget_entries WHERE key = $1 AND member = $2"),
            members: format!(
                "SELECT member FROM {s}.budget_entries \
                 WHERE key = $1 AND (until IS NULL OR until > clock_timestamp()) ORDER BY at, member"
            ),
            clear: format!(
                "WITH gone AS (DELETE FROM {s}.budget_entries WHERE key = $1 \
                 RETURNING until) SELECT count(*) FROM gone \
                 WHERE until IS NULL OR until > clock_timestamp()"
            ),
        })
    }
}

#[async_trait]
impl BudgetStore for PgBudgets {
    async fn take(&self, request: &TakeRequest) -> Result<TakeOutcome, PortError> {
        if request.takes.is_empty() {
            return Ok(TakeOutcome::Taken);
        }
        let keys: Vec<&str> = request.takes.iter().map(|t| t.key.as_str()).collect();
        let members: Vec<&str> = request.takes.iter().map(|t| t.member.as_str()).collect();
        let (mut take, mut kind, mut max, mut secs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, t) in request.takes.iter().enumerate() {
            for rule in &t.rules {
                let (k, m) = match *rule {
                    Rule::Window { max, .. } => (0i16, max),
                    Rule::Held { max, .. } => (1i16, max),
                    Rule::Absent => (2i16, 0),
                };
                take.push(i as i32 + 1);
                kind.push(k);
                max.push(i32::try_from(m).unwrap_or(i32::MAX));
                secs.push(rule.keep().as_secs_f64());
            }
        }
        let (refused, retry): (i32, Option<f64>) = sqlx::query_as(&self.take)
            .bind(&keys)
            .bind(&members)
            .bind(&take)
            .bind(&kind)
            .bind(&max)
            .bind(&secs)
            .fetch_one(&self.pool)
            .await
            .map_err(port)?;
        match refused {
            -1 => Ok(TakeOutcome::Taken),
            -2 => Err(PortError::Internal(
                "a budget entry was taken twice".to_owned(),
            )),
            i => Ok(TakeOutcome::Refused {
                take: usize::try_from(i)
                    .map_err(|_| PortError::Internal(format!("take_budgets answered {i}")))?,
                retry_after: retry.map(|s| Duration::from_secs_f64(s.max(0.0))),
            }),
        }
    }

    async fn refund(&self, request: &TakeRequest) -> Result<(), PortError> {
        let keys: Vec<&str> = request.takes.iter().map(|t| t.key.as_str()).collect();
        let members: Vec<&str> = request.takes.iter().map(|t| t.member.as_str()).collect();
        sqlx::query(&self.refund)
            .bind(&keys)
            .bind(&members)
            .execute(&self.pool)
            .await
            .map_err(port)?;
        Ok(())
    }

    async fn hold(
        &self,
        key: &str,
        member: &str,
        hold: Option<Duration>,
    ) -> Result<bool, PortError> {
        let done = sqlx::query(&self.hold)
            .bind(key)
            .bind(member)
            .bind(hold.map(|h| h.as_secs_f64()))
            .execute(&self.pool)
            .await
            .map_err(port)?;
        Ok(done.rows_affected() > 0)
    }

    async fn release(&self, key: &str, member: &str) -> Result<bool, PortError> {
        let done = sqlx::query(&self.release)
            .bind(key)
            .bind(member)
            .execute(&self.pool)
            .await
            .map_err(port)?;
        Ok(done.rows_affected() > 0)
    }

    async fn members(&self, key: &str) -> Result<Vec<String>, PortError> {
        sqlx::query_scalar(&self.members)
            .bind(key)
            .fetch_all(&self.pool)
            .await
            .map_err(port)
    }

    async fn clear(&self, key: &str) -> Result<u64, PortError> {
        let counted: i64 = sqlx::query_scalar(&self.clear)
            .bind(key)
            .fetch_one(&self.pool)
            .await
            .map_err(port)?;
        Ok(counted.max(0) as u64)
    }
}
