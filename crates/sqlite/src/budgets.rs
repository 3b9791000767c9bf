//! Send budgets in the database file: one [`BudgetStore`] shared by every process on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use otp_sms_core::{
    BudgetStore, BudgetTake, Member, PortError, Rule, StoreError, TakeOutcome, TakeRequest,
};
use sqlx::sqlite::SqliteConnection;

use crate::database::Database;
use crate::error::{map_error, port};
use crate::time::{from_micros, micros, until};
use crate::writer::{Flush, Isolation, Outcome};

/// The send budgets of `otp_sms_core` in a SQLite file ([`Database`]).
///
/// A take runs in the database's one writer, inside the write lock of the file: it checks
/// every rule of every budget and inserts every entry, or inserts nothing, and no take of this
/// or another process on the file runs between its check and its write, so budgets are exact
/// across processes. A window is checked with one probe: a key's entries are numbered without
/// gaps, and the entry `max` places back from the newest decides. Windows are measured on the
/// clock of the process that takes (processes sharing a file share a host). Passes
/// `otp-sms-testkit`'s budget conformance suite.
#[derive(Debug, Clone)]
pub struct SqliteBudgets {
    database: Database,
    /// Takes so far (every 16th sweeps lapsed entries).
    takes: Arc<AtomicU64>,
}

impl SqliteBudgets {
    /// The budgets in `database`.
    pub fn new(database: Database) -> Self {
        Self {
            database,
            takes: Arc::default(),
        }
    }
}

fn micros_of(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

async fn last_seq(conn: &mut SqliteConnection, key: &str) -> Result<i64, StoreError> {
    sqlx::query_scalar("SELECT coalesce(max(seq), 0) FROM budget_entries WHERE key = ?1")
        .bind(key)
        .fetch_one(&mut *conn)
        .await
        .map_err(map_error)
}

/// Ends `member`'s entry under `key` and moves the newer entries down by one, so that the
/// key's numbers stay without gaps (two passes through negative numbers keep them unique).
async fn remove(conn: &mut SqliteConnection, key: &str, member: &str) -> Result<bool, StoreError> {
    let gone: Option<i64> = sqlx::query_scalar(
        "DELETE FROM budget_entries WHERE key = ?1 AND member = ?2 RETURNING seq",
    )
    .bind(key)
    .bind(member)
    .fetch_optional(&mut *conn)
    .await
    .map_err(map_error)?;
    let Some(gone) = gone else {
        return Ok(false);
    };
    for sql in [
        "UPDATE budget_entries SET seq = -(seq - 1) WHERE key = ?1 AND seq > ?2",
        "UPDATE budget_entries SET seq = -seq WHERE key = ?1 AND seq < 0",
    ] {
        sqlx::query(sql)
            .bind(key)
            .bind(gone)
            .execute(&mut *conn)
            .await
            .map_err(map_error)?;
    }
    Ok(true)
}

/// `None` if a held `rule` (or a gate) admits one more entry under `take.key` (whose newest
/// entry is numbered `last`), else when it will (inner `None`: not by time alone).
async fn held_refusal(
    conn: &mut SqliteConnection,
    take: &BudgetTake,
    rule: &Rule,
    last: i64,
    now: DateTime<Utc>,
) -> Result<Option<Option<std::time::Duration>>, StoreError> {
    let cap = max_of(rule);
    // A key whose newest number is below the cap cannot hold it full: no count (a user with
    // many registrations under a large cap).
    if last < i64::from(cap) {
        return Ok(None);
    }
    let (held, soonest): (i64, Option<i64>) = sqlx::query_as(
        "SELECT count(*), min(until) FROM budget_entries WHERE key = ?1 AND until > ?2",
    )
    .bind(&take.key)
    .bind(micros(now))
    .fetch_one(&mut *conn)
    .await
    .map_err(map_error)?;
    Ok((held >= i64::from(cap)).then(|| soonest.and_then(|s| until(now, s))))
}

fn max_of(rule: &Rule) -> u32 {
    match *rule {
        Rule::Window { max, .. } | Rule::Held { max, .. } => max,
        Rule::Absent => 1,
    }
}

/// A take, in the writer: every budget checked, then every entry written in one statement, or
/// none. What it may change before a refusal (lapsed entries removed) may stay: the store
/// means the same with or without them, so a take needs no savepoint.
async fn take(
    conn: &mut SqliteConnection,
    now: DateTime<Utc>,
    request: TakeRequest,
    sweep: bool,
) -> Result<Outcome<TakeOutcome>, StoreError> {
    let now_us = micros(now);
    let takes = &request.takes;
    if takes.is_empty() {
        return Ok(Outcome::Keep(TakeOutcome::Taken));
    }
    // Every budget's member entry, if any, and its key's newest number: one statement.
    let keys: Vec<String> = (0..takes.len())
        .map(|i| format!("({i}, ?{}, ?{})", 2 * i + 1, 2 * i + 2))
        .collect();
    let sql = format!(
        "WITH k(i, key, member) AS (VALUES {}) \
         SELECT k.i, (SELECT b.until FROM budget_entries b \
                       WHERE b.key = k.key AND b.member = k.member), \
                     (SELECT coalesce(max(b.seq), 0) FROM budget_entries b WHERE b.key = k.key) \
         FROM k ORDER BY k.i",
        keys.join(", ")
    );
    let mut query = sqlx::query_as::<_, (i64, Option<i64>, i64)>(&sql);
    for budget in takes {
        query = query.bind(&budget.key).bind(&budget.member);
    }
    let found = query.fetch_all(&mut *conn).await.map_err(map_error)?;
    // Per budget: `None` when its member counts already (a repeated take: admitted, adds
    // nothing), else its key's newest number.
    let mut lasts: Vec<Option<i64>> = Vec::with_capacity(takes.len());
    for (budget, (_, counted, last)) in takes.iter().zip(found) {
        let adds = budget.rules.iter().any(Rule::adds);
        lasts.push(match counted {
            Some(until) if adds && until > now_us => None,
            // A lapsed entry of the same member makes way (the key's newer entries move down:
            // its number again).
            Some(_) if adds => {
                remove(conn, &budget.key, &budget.member).await?;
                Some(last_seq(conn, &budget.key).await?)
            }
            _ => Some(last),
        });
    }
    // Every window's probe (the entry `max` places back from the newest): one statement.
    let mut probes: Vec<(usize, usize, i64)> = Vec::new();
    for (i, budget) in takes.iter().enumerate() {
        let Some(last) = lasts[i] else { continue };
        for (r, rule) in budget.rules.iter().enumerate() {
            if let Rule::Window { max, .. } = *rule {
                if max > 0 && last >= i64::from(max) {
                    probes.push((i, r, last - i64::from(max) + 1));
                }
            }
        }
    }
    let mut probed: std::collections::HashMap<(usize, usize), i64> =
        std::collections::HashMap::new();
    if !probes.is_empty() {
        let rows: Vec<String> = (0..probes.len())
            .map(|p| format!("({p}, ?{}, ?{})", 2 * p + 1, 2 * p + 2))
            .collect();
        let sql = format!(
            "WITH p(n, key, seq) AS (VALUES {}) \
             SELECT p.n, (SELECT b.at FROM budget_entries b WHERE b.key = p.key AND b.seq = p.seq) \
             FROM p",
            rows.join(", ")
        );
        let mut query = sqlx::query_as::<_, (i64, Option<i64>)>(&sql);
        for &(i, _, seq) in &probes {
            query = query.bind(&takes[i].key).bind(seq);
        }
        for (n, at) in query.fetch_all(&mut *conn).await.map_err(map_error)? {
            if let (Some(&(i, r, _)), Some(at)) = (probes.get(n as usize), at) {
                probed.insert((i, r), at);
            }
        }
    }
    let mut entries: Vec<(usize, i64, i64)> = Vec::with_capacity(takes.len());
    for (i, budget) in takes.iter().enumerate() {
        let Some(last) = lasts[i] else { continue };
        for (r, rule) in budget.rules.iter().enumerate() {
            let refused = match *rule {
                Rule::Window { max: 0, .. } => Some(None),
                Rule::Window { window, .. } => {
                    let window = micros_of(window);
                    probed
                        .get(&(i, r))
                        .filter(|&&at| at > now_us.saturating_sub(window))
                        .map(|&at| until(now, at.saturating_add(window)))
                }
                Rule::Held { .. } | Rule::Absent => {
                    held_refusal(conn, budget, rule, last, now).await?
                }
            };
            if let Some(retry_after) = refused {
                return Ok(Outcome::Discard(TakeOutcome::Refused {
                    take: i,
                    retry_after,
                }));
            }
        }
        if budget.rules.iter().any(Rule::adds) {
            let keep = budget
                .rules
                .iter()
                .map(Rule::keep)
                .max()
                .unwrap_or_default();
            entries.push((i, last + 1, now_us.saturating_add(micros_of(keep))));
        }
    }
    if !entries.is_empty() {
        // Every entry of the take in one statement: all or none.
        let rows = vec!["(?, ?, ?, ?, ?)"; entries.len()].join(", ");
        let sql = format!("INSERT INTO budget_entries (key, seq, member, at, until) VALUES {rows}");
        let mut insert = sqlx::query(&sql);
        for &(i, seq, until) in &entries {
            let budget = &takes[i];
            insert = insert
                .bind(&budget.key)
                .bind(seq)
                .bind(&budget.member)
                .bind(now_us)
                .bind(until);
        }
        insert.execute(&mut *conn).await.map_err(map_error)?;
    }
    for &(i, seq, _) in &entries {
        let budget = &takes[i];
        // A windowed key's entries deeper than its deepest window can never be probed again.
        let windows: Vec<u32> = budget
            .rules
            .iter()
            .filter_map(|r| match r {
                Rule::Window { max, .. } => Some(*max),
                _ => None,
            })
            .collect();
        if seq % 16 == 0 && windows.len() == budget.rules.len() {
            let deepest = windows.into_iter().max().unwrap_or(0);
            sqlx::query("DELETE FROM budget_entries WHERE key = ?1 AND seq <= ?2")
                .bind(&budget.key)
                .bind(seq - i64::from(deepest))
                .execute(&mut *conn)
                .await
                .map_err(map_error)?;
        }
    }
    // Lapsed entries of keys no take visits again: 64 at every 16th take of the process, so
    // a take pays for the sweep once in 16. A windowed key's lapse in the order of their
    // numbers, so the newest stay numbered without gaps.
    if sweep {
        sqlx::query(
            "DELETE FROM budget_entries WHERE (key, seq) IN \
             (SELECT key, seq FROM budget_entries WHERE until <= ?1 ORDER BY until LIMIT 64)",
        )
        .bind(now_us)
        .execute(&mut *conn)
        .await
        .map_err(map_error)?;
    }
    Ok(Outcome::Keep(TakeOutcome::Taken))
}

#[async_trait]
impl BudgetStore for SqliteBudgets {
    async fn take(&self, request: &TakeRequest) -> Result<TakeOutcome, PortError> {
        let request = request.clone();
        let sweep = self.takes.fetch_add(1, Ordering::Relaxed) % 16 == 15;
        self.database
            .inner
            .writer
            .write_flushed(
                Isolation::Statement,
                // As PostgreSQL's takes: a power cut may forget the last moments of takes
                // (the budgets then err toward sending a few more); a send never waits for a
                // second flush.
                Flush::Lazy,
                Box::new(move |conn, now| Box::pin(take(conn, now, request, sweep))),
            )
            .await
            .map_err(port)
    }

    async fn release(&self, key: &str, member: &str) -> Result<bool, PortError> {
        let (key, member) = (key.to_owned(), member.to_owned());
        self.database
            .inner
            .writer
            // A deletion and two renumberings: all or none.
            .write(
                Isolation::Savepoint,
                Box::new(move |conn, _| {
                    Box::pin(async move { Ok(Outcome::Keep(remove(conn, &key, &member).await?)) })
                }),
            )
            .await
            .map_err(port)
    }

    async fn members(&self, key: &str) -> Result<Vec<Member>, PortError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT member, at FROM budget_entries WHERE key = ?1 AND until > ?2 ORDER BY seq",
        )
        .bind(key)
        .bind(micros(Utc::now()))
        .fetch_all(&self.database.inner.readers)
        .await
        .map_err(|e| port(map_error(e)))?;
        Ok(rows
            .into_iter()
            .map(|(member, at)| Member {
                member,
                at: from_micros(at),
            })
            .collect())
    }

    async fn clear(&self, key: &str) -> Result<u64, PortError> {
        let key = key.to_owned();
        self.database
            .inner
            .writer
            .write(
                Isolation::Statement,
                Box::new(move |conn, now| {
                    Box::pin(async move {
                        let counted: i64 = sqlx::query_scalar(
                            "SELECT count(*) FROM budget_entries WHERE key = ?1 AND until > ?2",
                        )
                        .bind(&key)
                        .bind(micros(now))
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(map_error)?;
                        sqlx::query("DELETE FROM budget_entries WHERE key = ?1")
                            .bind(&key)
                            .execute(&mut *conn)
                            .await
                            .map_err(map_error)?;
                        Ok(Outcome::Keep(counted.max(0) as u64))
                    })
                }),
            )
            .await
            .map_err(port)
    }
}
