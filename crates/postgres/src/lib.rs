//! # otp-sms-postgres
//!
//! A PostgreSQL [`EventStore`] built on `sqlx`, passing the same conformance suite as the
//! in-memory store.
//!
//! - Events are keyed by (instance, aggregate type, aggregate id, sequence): two writers of the
//!   same sequence collide on the primary key, on one server or many.
//! - An append (version check, events, outbox messages) is one transaction: all or nothing.
//! - The global feed never skips: positions are assigned under a transaction-scoped advisory
//!   lock held until commit, so they become visible in increasing order (`docs/event-store.md`
//!   explains why a plain sequence is not enough).
//! - The outbox hands each message to one consumer at a time (`FOR UPDATE SKIP LOCKED` plus a
//!   lease), and a deleted message is gone for good.
//! - Queries are built at run time, so building needs no database; migrations are embedded and
//!   run only by an explicit [`PgStore::migrate`] call, into a schema of the host's choosing.
//!
//! ```no_run
//! # async fn run() -> Result<(), otp_sms_core::StoreError> {
//! use otp_sms_postgres::PgStore;
//! let pool = otp_sms_postgres::pool_options().connect_lazy("postgres://postgres@127.0.0.1/app").unwrap();
//! let store = PgStore::<otp_sms_core::Event>::new(pool, "otp_sms")?;
//! store.migrate().await?;
//! # Ok(()) }
//! ```

use std::marker::PhantomData;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use otp_sms_core::{
    Append, AppendOutcome, EventPayload, EventStore, InstanceId, OrganizationId, OutboxMessage,
    PrincipalId, RecordedEvent, RecordedMeta, StoreError, StreamId, Version,
};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use uuid::Uuid;

/// The embedded migrations (`crates/postgres/migrations`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The advisory lock class of this library ("otp" in ASCII); the object id is the schema's hash.
const LOCK_CLASS: i32 = 0x006f_7470;

/// A PostgreSQL event store in one schema.
pub struct PgStore<E> {
    pool: PgPool,
    schema: String,
    lock_key: i32,
    sql: Sql,
    _events: PhantomData<fn() -> E>,
}

/// Every statement, with the schema filled in once.
struct Sql {
    read_stream: String,
    read_all: String,
    version: String,
    insert_events: String,
    insert_outbox: String,
    fetch_outbox: String,
    delete_outbox: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        let columns = "instance_id, aggregate_type, aggregate_id, sequence, position, event_type, \
                       revision, payload, creator, owner, created_at";
        Self {
            read_stream: format!(
                "SELECT {columns} FROM {s}.events \
                 WHERE instance_id = $1 AND aggregate_type = $2 AND aggregate_id = $3 \
                 ORDER BY sequence"
            ),
            read_all: format!(
                "SELECT {columns} FROM {s}.events WHERE position > $1 ORDER BY position LIMIT $2"
            ),
            version: format!(
                "SELECT coalesce(max(sequence), 0) FROM {s}.events \
                 WHERE instance_id = $1 AND aggregate_type = $2 AND aggregate_id = $3"
            ),
            insert_events: format!(
                "INSERT INTO {s}.events (instance_id, aggregate_type, aggregate_id, sequence, \
                 event_type, revision, payload, creator, owner) \
                 SELECT $1, $2, $3, $4 + u.ord, u.t, u.r, u.p::jsonb, u.c, u.o \
                 FROM unnest($5::text[], $6::int2[], $7::text[], $8::text[], $9::text[]) \
                 WITH ORDINALITY AS u(t, r, p, c, o, ord) ORDER BY u.ord \
                 RETURNING sequence, position, created_at"
            ),
            insert_outbox: format!(
                "INSERT INTO {s}.outbox (id, instance_id, aggregate_type, aggregate_id, payload) \
                 SELECT u.id, $1, $2, $3, u.p::jsonb \
                 FROM unnest($4::uuid[], $5::text[]) WITH ORDINALITY AS u(id, p, ord) \
                 ORDER BY u.ord"
            ),
            fetch_outbox: format!(
                "UPDATE {s}.outbox o \
                 SET leased_until = clock_timestamp() + make_interval(secs => $2), \
                     attempts = o.attempts + 1 \
                 FROM (SELECT id FROM {s}.outbox \
                       WHERE leased_until IS NULL OR leased_until <= clock_timestamp() \
                       ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED) c \
                 WHERE o.id = c.id \
                 RETURNING o.id, o.seq, o.instance_id, o.aggregate_type, o.aggregate_id, \
                           o.payload, o.created_at, o.attempts"
            ),
            delete_outbox: format!("DELETE FROM {s}.outbox WHERE id = $1"),
        }
    }
}

fn is_valid_schema(schema: &str) -> bool {
    let mut chars = schema.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= 63
}

/// FNV-1a, folded to 32 bits: a stable lock id per schema.
fn schema_lock_key(schema: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in schema.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as i32
}

/// Maps a sqlx error: lost connections and pool time-outs are UNAVAILABLE, the rest INTERNAL.
pub fn map_error(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // Class 08: connection exception; 57P0x: shutdown; 53300: too many connections.
            Some(code)
                if code.starts_with("08")
                    || matches!(code, "57P01" | "57P02" | "57P03" | "53300") =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Internal(e.to_string()),
        },
        _ => StoreError::Internal(e.to_string()),
    }
}

fn unique_violation_on(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            Some(db.constraint().unwrap_or_default().to_owned())
        }
        _ => None,
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn stream_of(row: &PgRow) -> Result<StreamId, sqlx::Error> {
    Ok(StreamId {
        instance: InstanceId::parse("instance_id", row.try_get::<String, _>("instance_id")?)
            .map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
    })
}

fn recorded<E: EventPayload>(row: PgRow) -> Result<RecordedEvent<E>, StoreError> {
    let decode = |e: otp_sms_core::Error| StoreError::Internal(e.to_string());
    let event_type: String = row.try_get("event_type").map_err(map_error)?;
    let revision: i16 = row.try_get("revision").map_err(map_error)?;
    let payload: serde_json::Value = row.try_get("payload").map_err(map_error)?;
    Ok(RecordedEvent {
        stream: stream_of(&row).map_err(map_error)?,
        sequence: row.try_get::<i64, _>("sequence").map_err(map_error)? as u64,
        position: row.try_get::<i64, _>("position").map_err(map_error)? as u64,
        created_at: row.try_get("created_at").map_err(map_error)?,
        creator: PrincipalId::parse(
            "creator",
            row.try_get::<String, _>("creator").map_err(map_error)?,
        )
        .map_err(decode)?,
        owner: OrganizationId::parse(
            "owner",
            row.try_get::<String, _>("owner").map_err(map_error)?,
        )
        .map_err(decode)?,
        event: E::from_json(&event_type, revision as u16, payload)?,
    })
}

/// Pool settings that suit the store: see `docs/operations.md` for what each means.
pub fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(16)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Some(Duration::from_secs(300)))
}

impl<E> PgStore<E> {
    /// A store in `schema` (lowercase letters, digits and `_`, at most 63 characters).
    /// Does not touch the database: call [`PgStore::migrate`] to create or update the tables.
    pub fn new(pool: PgPool, schema: &str) -> Result<Self, StoreError> {
        if !is_valid_schema(schema) {
            return Err(StoreError::Internal(format!(
                "invalid schema name `{schema}`: use lowercase letters, digits and _"
            )));
        }
        Ok(Self {
            pool,
            schema: schema.to_owned(),
            lock_key: schema_lock_key(schema),
            sql: Sql::new(schema),
            _events: PhantomData,
        })
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the schema if needed and applies the embedded migrations to it. Safe to run on
    /// every start and from several servers at once (sqlx takes a lock while migrating).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(map_error)?;
        let schema = format!("\"{}\"", self.schema);
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&mut *conn)
            .await
            .map_err(map_error)?;
        sqlx::query(&format!("SET search_path TO {schema}"))
            .execute(&mut *conn)
            .await
            .map_err(map_error)?;
        let result = MIGRATOR.run_direct(&mut *conn).await;
        // The connection goes back to the pool: leave no session state behind.
        sqlx::query("RESET search_path")
            .execute(&mut *conn)
            .await
            .map_err(map_error)?;
        result.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => map_error(e),
            other => StoreError::Internal(other.to_string()),
        })
    }

    /// Whether the database answers (for readiness checks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(map_error)?;
        conn.ping().await.map_err(map_error)
    }

    async fn try_append(
        &self,
        append: &Append<E>,
        payloads: Vec<String>,
    ) -> Result<Result<AppendOutcome, Version>, sqlx::Error>
    where
        E: EventPayload,
    {
        let s = &append.stream;
        let mut tx = self.pool.begin().await?;
        // Held until commit: appends assign positions and become visible one after another,
        // so a reader of the feed never sees position n+1 while n may still commit.
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(self.lock_key)
            .execute(&mut *tx)
            .await?;
        let actual: i64 = sqlx::query_scalar(&self.sql.version)
            .bind(s.instance.as_str())
            .bind(&s.aggregate_type)
            .bind(&s.aggregate_id)
            .fetch_one(&mut *tx)
            .await?;
        let actual = actual as u64;
        if !append.expected.admits(actual) {
            tx.rollback().await?;
            return Ok(Err(actual));
        }
        let mut recorded = Vec::with_capacity(append.events.len());
        if !append.events.is_empty() {
            let types: Vec<&str> = append.events.iter().map(|e| e.event.event_type()).collect();
            let revisions: Vec<i16> = append
                .events
                .iter()
                .map(|e| e.event.revision() as i16)
                .collect();
            let creators: Vec<&str> = append.events.iter().map(|e| e.creator.as_str()).collect();
            let owners: Vec<&str> = append.events.iter().map(|e| e.owner.as_str()).collect();
            let rows = sqlx::query(&self.sql.insert_events)
                .bind(s.instance.as_str())
                .bind(&s.aggregate_type)
                .bind(&s.aggregate_id)
                .bind(to_i64(actual))
                .bind(&types)
                .bind(&revisions)
                .bind(&payloads)
                .bind(&creators)
                .bind(&owners)
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                recorded.push(RecordedMeta {
                    sequence: row.try_get::<i64, _>("sequence")? as u64,
                    position: row.try_get::<i64, _>("position")? as u64,
                    created_at: row.try_get::<DateTime<Utc>, _>("created_at")?,
                });
            }
            recorded.sort_by_key(|m| m.sequence);
        }
        if !append.outbox.is_empty() {
            let ids: Vec<Uuid> = append.outbox.iter().map(|m| m.id).collect();
            let bodies: Vec<String> = append
                .outbox
                .iter()
                .map(|m| m.payload.to_string())
                .collect();
            sqlx::query(&self.sql.insert_outbox)
                .bind(s.instance.as_str())
                .bind(&s.aggregate_type)
                .bind(&s.aggregate_id)
                .bind(&ids)
                .bind(&bodies)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Ok(AppendOutcome {
            version: actual + recorded.len() as u64,
            recorded,
        }))
    }

    async fn current_version(&self, s: &StreamId) -> Result<Version, StoreError> {
        let v: i64 = sqlx::query_scalar(&self.sql.version)
            .bind(s.instance.as_str())
            .bind(&s.aggregate_type)
            .bind(&s.aggregate_id)
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(v as u64)
    }
}

#[async_trait]
impl<E: EventPayload> EventStore<E> for PgStore<E> {
    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent<E>>, StoreError> {
        let rows = sqlx::query(&self.sql.read_stream)
            .bind(stream.instance.as_str())
            .bind(&stream.aggregate_type)
            .bind(&stream.aggregate_id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.into_iter().map(recorded).collect()
    }

    async fn append(&self, append: Append<E>) -> Result<AppendOutcome, StoreError> {
        let payloads = append
            .events
            .iter()
            .map(|e| e.event.to_json().map(|v| v.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let conflict = |actual| StoreError::Conflict {
            stream: append.stream.clone(),
            expected: append.expected,
            actual,
        };
        match self.try_append(&append, payloads).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(actual)) => Err(conflict(actual)),
            Err(e) => match unique_violation_on(&e).as_deref() {
                // Another writer got the same sequence first (only possible when a writer
                // bypasses the lock, e.g. another schema version): a conflict, not a crash.
                Some("events_pkey") => Err(conflict(self.current_version(&append.stream).await?)),
                Some("outbox_pkey") => Err(StoreError::Internal(
                    "duplicate outbox message id".to_owned(),
                )),
                _ => Err(map_error(e)),
            },
        }
    }

    async fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent<E>>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&self.sql.read_all)
            .bind(to_i64(after))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.into_iter().map(recorded).collect()
    }

    async fn fetch_outbox(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&self.sql.fetch_outbox)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(lease.as_secs_f64())
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get("seq").map_err(map_error)?;
            out.push((
                seq,
                OutboxMessage {
                    id: row.try_get("id").map_err(map_error)?,
                    stream: stream_of(&row).map_err(map_error)?,
                    payload: row.try_get("payload").map_err(map_error)?,
                    created_at: row.try_get("created_at").map_err(map_error)?,
                    attempts: row.try_get::<i32, _>("attempts").map_err(map_error)? as u32,
                },
            ));
        }
        // UPDATE … RETURNING has no order of its own.
        out.sort_by_key(|(seq, _)| *seq);
        Ok(out.into_iter().map(|(_, m)| m).collect())
    }

    async fn delete_outbox(&self, id: Uuid) -> Result<bool, StoreError> {
        let done = sqlx::query(&self.sql.delete_outbox)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        assert!(is_valid_schema("otp_sms"));
        assert!(is_valid_schema("_x1"));
        assert!(!is_valid_schema(""));
        assert!(!is_valid_schema("1abc"));
        assert!(!is_valid_schema("Otp"));
        assert!(!is_valid_schema("a\"; drop"));
        assert!(!is_valid_schema(&"a".repeat(64)));
    }

    #[test]
    fn lock_keys_differ_per_schema() {
        assert_ne!(schema_lock_key("a"), schema_lock_key("b"));
        assert_eq!(schema_lock_key("otp_sms"), schema_lock_key("otp_sms"));
    }
}
