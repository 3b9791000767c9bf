//! Send budgets in PostgreSQL: one [`BudgetStore`] shared by every server on the database.

use std::time::Duration;

use async_trait::async_trait;
use otp_sms_core::{BudgetStore, Member, PortError, Rule, StoreError, TakeOutcome, TakeRequest};
use sqlx::postgres::PgPool;

use crate::{is_valid_schema, map_error};

/// The send budgets of `otp_sms_core`, in the `budget_entries` table of a store's schema.
///
/// Every take is one call of the `take_budgets` function (migration 0005): it locks each key
/// it touches (in key order, so concurrent takes cannot deadlock), checks every rule and
/// inserts every entry, or inserts nothing, in one transaction. A window is checked with one
/// index probe (the row `max` places back in the key's sequence), so the instance's key,
/// which every send touches, costs what a user's does. Windows are measured on the
/// database's clock. The tables are created by [`crate::PgStore::migrate`].
///
/// Budget writes commit without waiting for the WAL flush (`synchronous_commit = off`, on a
/// pool of their own): a crash of the database may forget the last moments of takes (the
/// budgets then err toward sending a few more), and a send never waits for a second flush.
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
    /// Budgets in `schema` (the event store's; migrated by [`crate::PgStore::migrate`]), on
    /// a pool of their own to the database of `pool` (as many connections at most, opened
    /// when first needed).
    pub fn new(pool: PgPool, schema: &str) -> Result<Self, StoreError> {
        if !is_valid_schema(schema) {
            return Err(StoreError::Internal(format!(
                "invalid schema name `{schema}`: use lowercase letters, digits and _"
            )));
        }
        let options = (*pool.connect_options())
            .clone()
            .options([("synchronous_commit", "off")]);
        let pool = crate::pool_options()
            .max_connections(pool.options().get_max_connections())
            .connect_lazy_with(options);
        let s = format!("\"{schema}\"");
        Ok(Self {
            pool,
            take: format!(
                "SELECT refused, retry_secs FROM {s}.take_budgets($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            release: format!("DELETE FROM {s}.budget_entries WHERE key = $1 AND member = $2"),
            members: format!(
                "SELECT member, at FROM {s}.budget_entries \
                 WHERE key = $1 AND (until IS NULL OR until > clock_timestamp()) ORDER BY seq"
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
        let (mut k_kind, mut k_keep, mut k_deep) = (Vec::new(), Vec::new(), Vec::new());
        let (mut take, mut kind, mut max, mut secs) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, t) in request.takes.iter().enumerate() {
            let windowed = t.rules.iter().all(|r| matches!(r, Rule::Window { .. }));
            let adds = t.rules.iter().any(Rule::adds);
            k_kind.push(match (windowed, adds) {
                (true, _) => 0i16,
                (false, true) => 1,
                (false, false) => 2,
            });
            k_keep.push(
                t.rules
                    .iter()
                    .map(Rule::keep)
                    .max()
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
            let mut deepest = 0i32;
            for rule in &t.rules {
                let (k, m) = match *rule {
                    Rule::Window { max, .. } => (0i16, max),
                    Rule::Held { max, .. } => (1i16, max),
                    Rule::Absent => (2i16, 0),
                };
                let m = i32::try_from(m).unwrap_or(i32::MAX);
                deepest = deepest.max(m);
                take.push(i as i32 + 1);
                kind.push(k);
                max.push(m);
                secs.push(rule.keep().as_secs_f64());
            }
            k_deep.push(deepest);
        }
        let (refused, retry): (i32, Option<f64>) = sqlx::query_as(&self.take)
            .bind(&keys)
            .bind(&members)
            .bind(&k_kind)
            .bind(&k_keep)
            .bind(&k_deep)
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

    async fn release(&self, key: &str, member: &str) -> Result<bool, PortError> {
        let done = sqlx::query(&self.release)
            .bind(key)
            .bind(member)
            .execute(&self.pool)
            .await
            .map_err(port)?;
        Ok(done.rows_affected() > 0)
    }

    async fn members(&self, key: &str) -> Result<Vec<Member>, PortError> {
        let rows: Vec<(String, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(&self.members)
            .bind(key)
            .fetch_all(&self.pool)
            .await
            .map_err(port)?;
        Ok(rows
            .into_iter()
            .map(|(member, at)| Member { member, at })
            .collect())
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
