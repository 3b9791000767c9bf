//! Send budgets in PostgreSQL: one [`BudgetStore`] shared by every server on the database.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use otp_sms_core::{BudgetStore, Member, PortError, Rule, StoreError, TakeOutcome, TakeRequest};
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::{is_valid_schema, map_error, Timeouts};

/// The send budgets of `otp_sms_core`, in the `budget_entries` table of a store's schema.
///
/// Takes are group-committed, as appends are: the takes waiting together go to the database in
/// one call of `take_budget_batch` (migration 0006) on a thread and connection of the store's
/// own. The call locks each key of the batch (in key order, so concurrent batches cannot
/// deadlock), then runs each take in turn: it checks every rule and inserts every entry, or
/// inserts nothing, seeing the entries of the takes before it. A window is checked with one
/// index probe (the row `max` places back in the key's sequence), so the instance's key,
/// which every send touches, costs what a user's does. Windows are measured on the
/// database's clock. The tables are created by [`PgBudgets::migrate`].
///
/// Takes commit without waiting for the WAL flush (`take_budget_batch` sets
/// `synchronous_commit = off` for its transaction): a crash of the database may forget the
/// last moments of takes (the budgets then err toward sending a few more), and a send never
/// waits for a second flush.
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
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    pool: PgPool,
    schema: String,
    take: String,
    release: String,
    members: String,
    clear: String,
    /// The taker thread's queue, started at the first take.
    taker: OnceLock<mpsc::UnboundedSender<TakeJob>>,
    timeouts: Timeouts,
}

/// A take waiting for the taker thread.
#[derive(Debug)]
struct TakeJob {
    request: TakeRequest,
    reply: oneshot::Sender<Result<TakeOutcome, PortError>>,
}

/// At most this many takes go into one call.
const MAX_BATCH: usize = 64;

fn port(e: sqlx::Error) -> PortError {
    match map_error(e) {
        StoreError::Unavailable(m) => PortError::Unavailable(m),
        other => PortError::Internal(other.to_string()),
    }
}

impl PgBudgets {
    /// Budgets in `schema` (migrated by [`PgBudgets::migrate`]), on
    /// `pool` (the store's: releases and look-ups, which are rare) and the taker thread's own
    /// connection, opened with the pool's current options (so it follows the store to a new
    /// primary after a failover).
    pub fn new(pool: PgPool, schema: &str) -> Result<Self, StoreError> {
        if !is_valid_schema(schema) {
            return Err(StoreError::Internal(format!(
                "invalid schema name `{schema}`: use lowercase letters, digits and _"
            )));
        }
        let s = format!("\"{schema}\"");
        Ok(Self {
            shared: Arc::new(Shared {
                pool,
                schema: schema.to_owned(),
                take: format!(
                    "SELECT take, refused, retry_secs FROM {s}.take_budget_batch(\
                     $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                ),
                // Renumbers the key's newer entries too (migration 0011), so that a window
                // stops counting the released one.
                release: format!("SELECT {s}.release_budget($1, $2)"),
                members: format!(
                    "SELECT member, at FROM {s}.budget_entries \
                     WHERE key = $1 AND (until IS NULL OR until > clock_timestamp()) ORDER BY seq"
                ),
                clear: format!(
                    "WITH gone AS (DELETE FROM {s}.budget_entries WHERE key = $1 \
                     RETURNING until) SELECT count(*) FROM gone \
                     WHERE until IS NULL OR until > clock_timestamp()"
                ),
                taker: OnceLock::new(),
                timeouts: Timeouts::default(),
            }),
        })
    }

    /// Creates the schema if needed and applies this store's migrations to it (the budget table and its functions),
    /// whoever keeps the events. Safe on every start and from several servers at once.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        crate::migrations::migrate(
            &self.shared.pool,
            &self.shared.schema,
            crate::Component::Budgets,
        )
        .await
    }

    /// Budgets with other [`Timeouts`] (`connect` and `operation` bound the taker's waits).
    /// Call it right after [`PgBudgets::new`].
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.timeouts = timeouts,
            None => tracing::warn!("with_timeouts on budgets in use: ignored"),
        }
        self
    }

    fn taker(&self) -> &mpsc::UnboundedSender<TakeJob> {
        self.shared.taker.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            // The thread holds the statement and the connection options, not the store, so
            // dropping the last `PgBudgets` closes the queue and ends the thread.
            let statement = self.shared.take.clone();
            let pool = self.shared.pool.clone();
            crate::spawn_worker(
                "otp-sms-pg-budgets".to_owned(),
                take_batches(statement, pool, self.shared.timeouts, rx),
            );
            tx
        })
    }
}

/// The budget arrays of one call of `take_budget_batch` (migration 0006).
#[derive(Default)]
struct BatchArrays<'a> {
    q_first: Vec<i32>,
    q_last: Vec<i32>,
    keys: Vec<&'a str>,
    members: Vec<&'a str>,
    k_kind: Vec<i16>,
    k_keep: Vec<f64>,
    k_deep: Vec<i32>,
    k_rfirst: Vec<i32>,
    k_rlast: Vec<i32>,
    r_kind: Vec<i16>,
    r_max: Vec<i32>,
    r_secs: Vec<f64>,
}

impl<'a> BatchArrays<'a> {
    fn push(&mut self, request: &'a TakeRequest) {
        // The function's arrays are 1-based.
        self.q_first.push(self.keys.len() as i32 + 1);
        for t in &request.takes {
            let windowed = t.rules.iter().all(|r| matches!(r, Rule::Window { .. }));
            let adds = t.rules.iter().any(Rule::adds);
            self.keys.push(&t.key);
            self.members.push(&t.member);
            self.k_kind.push(match (windowed, adds) {
                (true, _) => 0,
                (false, true) => 1,
                (false, false) => 2,
            });
            self.k_keep.push(
                t.rules
                    .iter()
                    .map(Rule::keep)
                    .max()
                    .unwrap_or_default()
                    .as_secs_f64(),
            );
            self.k_rfirst.push(self.r_kind.len() as i32 + 1);
            let mut deepest = 0i32;
            for rule in &t.rules {
                let (k, m) = match *rule {
                    Rule::Window { max, .. } => (0i16, max),
                    Rule::Held { max, .. } => (1i16, max),
                    Rule::Absent => (2i16, 0),
                };
                let m = i32::try_from(m).unwrap_or(i32::MAX);
                deepest = deepest.max(m);
                self.r_kind.push(k);
                self.r_max.push(m);
                self.r_secs.push(rule.keep().as_secs_f64());
            }
            self.k_rlast.push(self.r_kind.len() as i32);
            self.k_deep.push(deepest);
        }
        self.q_last.push(self.keys.len() as i32);
    }
}

/// Histogram (through the `metrics` facade): budget takes per call of `take_budget_batch`.
pub const BUDGET_BATCH_SIZE: &str = "otp_sms_budget_batch_size";

/// The taker: the takes waiting together (up to [`MAX_BATCH`]) go to the database in one call
/// and one transaction, on the thread's own connection, so that the instance's key, which
/// every send takes from, is locked once per batch instead of once per send.
async fn take_batches(
    statement: String,
    pool: PgPool,
    timeouts: Timeouts,
    mut rx: mpsc::UnboundedReceiver<TakeJob>,
) {
    let mut conn: Option<PgConnection> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!(BUDGET_BATCH_SIZE).record(batch.len() as f64);
        let mut c = match conn.take() {
            Some(c) => c,
            None => {
                // The pool's options now: the store points them at a new primary.
                let options = (*pool.connect_options()).clone();
                let connect = PgConnection::connect_with(&options);
                match tokio::time::timeout(timeouts.connect, connect).await {
                    Ok(Ok(c)) => c,
                    failed => {
                        let e = match failed {
                            Ok(Err(e)) => port(e),
                            _ => PortError::Unavailable(format!(
                                "no connection to PostgreSQL within {:?}",
                                timeouts.connect
                            )),
                        };
                        for job in batch {
                            let _ = job.reply.send(Err(e.clone()));
                        }
                        continue;
                    }
                }
            }
        };
        let taken =
            tokio::time::timeout(timeouts.operation, take_batch(&statement, &mut c, &batch))
                .await
                .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
        match taken {
            Ok(outcomes) => {
                conn = Some(c);
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = job.reply.send(outcome);
                }
            }
            Err(e) => {
                // The connection may be broken: the next batch opens a new one.
                let e = port(e);
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One call for `batch`: the outcome of each take, in order.
async fn take_batch(
    statement: &str,
    conn: &mut PgConnection,
    batch: &[TakeJob],
) -> Result<Vec<Result<TakeOutcome, PortError>>, sqlx::Error> {
    let mut a = BatchArrays::default();
    for job in batch {
        a.push(&job.request);
    }
    let rows: Vec<(i32, i32, Option<f64>)> = sqlx::query_as(statement)
        .bind(&a.q_first)
        .bind(&a.q_last)
        .bind(&a.keys)
        .bind(&a.members)
        .bind(&a.k_kind)
        .bind(&a.k_keep)
        .bind(&a.k_deep)
        .bind(&a.k_rfirst)
        .bind(&a.k_rlast)
        .bind(&a.r_kind)
        .bind(&a.r_max)
        .bind(&a.r_secs)
        .fetch_all(&mut *conn)
        .await?;
    let mut outcomes: Vec<Result<TakeOutcome, PortError>> = (0..batch.len())
        .map(|_| {
            Err(PortError::Internal(
                "take_budget_batch answered no row for a take".to_owned(),
            ))
        })
        .collect();
    for (take, refused, retry) in rows {
        let Some(slot) = usize::try_from(take).ok().and_then(|t| outcomes.get_mut(t)) else {
            continue;
        };
        *slot = match refused {
            -1 => Ok(TakeOutcome::Taken),
            i => usize::try_from(i)
                .map(|take| TakeOutcome::Refused {
                    take,
                    retry_after: retry.map(|s| Duration::from_secs_f64(s.max(0.0))),
                })
                .map_err(|_| PortError::Internal(format!("take_budget_batch answered {i}"))),
        };
    }
    Ok(outcomes)
}

#[async_trait]
impl BudgetStore for PgBudgets {
    async fn take(&self, request: &TakeRequest) -> Result<TakeOutcome, PortError> {
        if request.takes.is_empty() {
            return Ok(TakeOutcome::Taken);
        }
        let (reply, answer) = oneshot::channel();
        let job = TakeJob {
            request: request.clone(),
            reply,
        };
        if self.taker().send(job).is_err() {
            return Err(PortError::Unavailable(
                "the budget taker thread has stopped".to_owned(),
            ));
        }
        answer.await.unwrap_or_else(|_| {
            Err(PortError::Unavailable(
                "the budget taker thread stopped during a take".to_owned(),
            ))
        })
    }

    async fn release(&self, key: &str, member: &str) -> Result<bool, PortError> {
        let released: bool = crate::within(
            self.shared.timeouts.operation,
            sqlx::query_scalar(&self.shared.release)
                .bind(key)
                .bind(member)
                .fetch_one(&self.shared.pool),
        )
        .await
        .map_err(port)?;
        Ok(released)
    }

    async fn members(&self, key: &str) -> Result<Vec<Member>, PortError> {
        let rows: Vec<(String, chrono::DateTime<chrono::Utc>)> = crate::within(
            self.shared.timeouts.operation,
            sqlx::query_as(&self.shared.members)
                .bind(key)
                .fetch_all(&self.shared.pool),
        )
        .await
        .map_err(port)?;
        Ok(rows
            .into_iter()
            .map(|(member, at)| Member { member, at })
            .collect())
    }

    async fn clear(&self, key: &str) -> Result<u64, PortError> {
        let counted: i64 = crate::within(
            self.shared.timeouts.operation,
            sqlx::query_scalar(&self.shared.clear)
                .bind(key)
                .fetch_one(&self.shared.pool),
        )
        .await
        .map_err(port)?;
        Ok(counted.max(0) as u64)
    }
}
