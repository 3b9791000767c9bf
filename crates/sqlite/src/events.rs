//! The event store on a database file: streams with optimistic concurrency, the global feed,
//! and the transactional outbox with leases.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use otp_sms_core::{
    Append, AppendOutcome, CommandId, EventPayload, EventStore, ExpectedVersion, InstanceId,
    NewEvent, OrganizationId, OutboxMessage, OutboxStats, PrincipalId, Recorded, RecordedEvent,
    RecordedMeta, StoreError, StreamId,
};
use sqlx::sqlite::{SqliteConnection, SqliteRow};
use sqlx::Row;
use uuid::Uuid;

use crate::database::Database;
use crate::error::{is_unique_violation, map_error};
use crate::time::{from_micros, micros, micros_after};
use crate::writer::{Isolation, Outcome};

/// The event store of `otp_sms_core` in a SQLite file ([`Database`]).
///
/// Appends go through the database's one writer and commit in groups; reads run on the
/// readers' pool, beside it (WAL: a reader never waits for the writer). Passes
/// `otp-sms-testkit`'s conformance suite.
///
/// ```no_run
/// # async fn run() -> Result<(), otp_sms_core::StoreError> {
/// use otp_sms_sqlite::{Database, SqliteStore};
/// let database = Database::open_url("sqlite:///var/lib/otp-sms/otp-sms.db").await?;
/// let store: SqliteStore<otp_sms_core::Event> = SqliteStore::new(database.clone());
/// # Ok(()) }
/// ```
pub struct SqliteStore<E> {
    database: Database,
    _events: PhantomData<fn() -> E>,
}

impl<E> Clone for SqliteStore<E> {
    fn clone(&self) -> Self {
        Self {
            database: self.database.clone(),
            _events: PhantomData,
        }
    }
}

impl<E> std::fmt::Debug for SqliteStore<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.database.options().path())
            .finish()
    }
}

impl<E> SqliteStore<E> {
    /// The event store on `database`.
    pub fn new(database: Database) -> Self {
        Self {
            database,
            _events: PhantomData,
        }
    }

    /// The database it writes to.
    pub fn database(&self) -> &Database {
        &self.database
    }
}

const COLUMNS: &str = "position, instance_id, aggregate_type, aggregate_id, sequence, \
                       event_type, revision, payload, creator, owner, created_at, command_id";

/// An event as the writer stores it (encoded before it reaches the writer).
struct EncodedEvent {
    event_type: String,
    revision: i64,
    payload: String,
    creator: String,
    owner: String,
}

fn stream_of(row: &SqliteRow) -> Result<StreamId, StoreError> {
    let instance: String = row.try_get("instance_id").map_err(map_error)?;
    Ok(StreamId::new(
        InstanceId::parse("instance_id", instance)
            .map_err(|e| StoreError::Internal(e.to_string()))?,
        row.try_get::<String, _>("aggregate_type")
            .map_err(map_error)?,
        row.try_get::<String, _>("aggregate_id")
            .map_err(map_error)?,
    ))
}

fn recorded<E: EventPayload>(row: &SqliteRow) -> Result<Arc<RecordedEvent<E>>, StoreError> {
    let decode = |e: otp_sms_core::Error| StoreError::Internal(e.to_string());
    let event_type: String = row.try_get("event_type").map_err(map_error)?;
    let revision: i64 = row.try_get("revision").map_err(map_error)?;
    let payload: String = row.try_get("payload").map_err(map_error)?;
    let payload: serde_json::Value = serde_json::from_str(&payload)
        .map_err(|e| StoreError::Internal(format!("a stored payload is not JSON: {e}")))?;
    let meta = RecordedMeta {
        sequence: row.try_get::<i64, _>("sequence").map_err(map_error)? as u64,
        position: row.try_get::<i64, _>("position").map_err(map_error)? as u64,
        created_at: from_micros(row.try_get("created_at").map_err(map_error)?),
    };
    let new = NewEvent {
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
        event: E::from_json(
            &event_type,
            u16::try_from(revision).unwrap_or(u16::MAX),
            payload,
        )?,
    };
    let command = row
        .try_get::<Option<String>, _>("command_id")
        .map_err(map_error)?
        .map(|c| Uuid::parse_str(&c).map(CommandId))
        .transpose()
        .map_err(|e| StoreError::Internal(format!("a stored command id: {e}")))?;
    Ok(Arc::new(RecordedEvent::new(
        stream_of(row)?,
        meta,
        new,
        command,
    )))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The version and the command check of `stream`: its version, and whether `command` wrote
/// to it.
async fn version_of(
    conn: &mut SqliteConnection,
    stream: &StreamId,
    command: Option<&str>,
) -> Result<(u64, bool), StoreError> {
    let (actual, done): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(max(sequence), 0), coalesce(max(command_id = ?4), 0) FROM events \
         WHERE instance_id = ?1 AND aggregate_type = ?2 AND aggregate_id = ?3",
    )
    .bind(stream.instance.as_str())
    .bind(&*stream.aggregate_type)
    .bind(&*stream.aggregate_id)
    .bind(command)
    .fetch_one(&mut *conn)
    .await
    .map_err(map_error)?;
    Ok((actual.max(0) as u64, done != 0))
}

fn expected_arg(expected: ExpectedVersion) -> i64 {
    match expected {
        ExpectedVersion::Any => -1,
        ExpectedVersion::NoStream => 0,
        ExpectedVersion::Exact(v) => to_i64(v),
    }
}

/// An append without outbox messages, in the writer, as one statement: the version and
/// command check in a `WITH`, the events inserted only if it passes.
async fn append_in_one(
    conn: &mut SqliteConnection,
    now: DateTime<Utc>,
    stream: StreamId,
    expected: ExpectedVersion,
    command: Option<CommandId>,
    rows: Vec<EncodedEvent>,
) -> Result<Outcome<Result<AppendOutcome, StoreError>>, StoreError> {
    let command_text = command.map(|c| c.0.to_string());
    let at = micros(now);
    let values: Vec<String> = (0..rows.len())
        .map(|i| {
            let p = 7 + i * 5;
            format!(
                "({}, ?{p}, ?{}, ?{}, ?{}, ?{})",
                i + 1,
                p + 1,
                p + 2,
                p + 3,
                p + 4
            )
        })
        .collect();
    let sql = format!(
        "WITH v(actual, done) AS ( \
           SELECT coalesce(max(sequence), 0), coalesce(max(command_id = ?4), 0) FROM events \
           WHERE instance_id = ?1 AND aggregate_type = ?2 AND aggregate_id = ?3), \
         e(off, event_type, revision, payload, creator, owner) AS (VALUES {}) \
         INSERT INTO events (instance_id, aggregate_type, aggregate_id, sequence, event_type, \
           revision, payload, creator, owner, created_at, command_id) \
         SELECT ?1, ?2, ?3, v.actual + e.off, e.event_type, e.revision, e.payload, e.creator, \
           e.owner, ?6, ?4 FROM v, e \
         WHERE (?5 < 0 OR v.actual = ?5) AND v.done = 0 ORDER BY e.off \
         RETURNING position, sequence",
        values.join(", ")
    );
    let mut insert = sqlx::query_as::<_, (i64, i64)>(&sql)
        .bind(stream.instance.as_str())
        .bind(&*stream.aggregate_type)
        .bind(&*stream.aggregate_id)
        .bind(command_text.as_deref())
        .bind(expected_arg(expected))
        .bind(at);
    for row in rows {
        insert = insert
            .bind(row.event_type)
            .bind(row.revision)
            .bind(row.payload)
            .bind(row.creator)
            .bind(row.owner);
    }
    let mut written = insert.fetch_all(&mut *conn).await.map_err(map_error)?;
    if written.is_empty() {
        // Refused: say against which version.
        let (actual, _) = version_of(conn, &stream, command_text.as_deref()).await?;
        return Ok(Outcome::Discard(Err(StoreError::Conflict {
            stream,
            expected,
            actual,
        })));
    }
    written.sort_unstable_by_key(|&(_, sequence)| sequence);
    let recorded: Vec<RecordedMeta> = written
        .into_iter()
        .map(|(position, sequence)| RecordedMeta {
            sequence: sequence as u64,
            position: position as u64,
            created_at: from_micros(at),
        })
        .collect();
    let version = recorded.last().map_or(0, |r| r.sequence);
    Ok(Outcome::Keep(Ok(AppendOutcome { version, recorded })))
}

/// An append with outbox messages (or without events), in the writer, in a savepoint of its
/// own: its events as [`append_in_one`] writes them (with none, the version check alone),
/// then its outbox messages; a refusal of either rolls back the whole.
async fn append_rows(
    conn: &mut SqliteConnection,
    now: DateTime<Utc>,
    stream: StreamId,
    expected: ExpectedVersion,
    command: Option<CommandId>,
    rows: Vec<EncodedEvent>,
    outbox: Vec<(Uuid, String)>,
) -> Result<Outcome<Result<AppendOutcome, StoreError>>, StoreError> {
    let appended = if rows.is_empty() {
        let command_text = command.map(|c| c.0.to_string());
        let (actual, done) = version_of(conn, &stream, command_text.as_deref()).await?;
        if !expected.admits(actual) || done {
            return Ok(Outcome::Discard(Err(StoreError::Conflict {
                stream,
                expected,
                actual,
            })));
        }
        AppendOutcome {
            version: actual,
            recorded: Vec::new(),
        }
    } else {
        match append_in_one(conn, now, stream.clone(), expected, command, rows).await? {
            Outcome::Keep(Ok(appended)) => appended,
            refused => return Ok(refused),
        }
    };
    let at = micros(now);
    for (id, payload) in outbox {
        let written = sqlx::query(
            "INSERT INTO outbox (id, instance_id, aggregate_type, aggregate_id, payload, \
             created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(id.to_string())
        .bind(stream.instance.as_str())
        .bind(&*stream.aggregate_type)
        .bind(&*stream.aggregate_id)
        .bind(payload)
        .bind(at)
        .execute(&mut *conn)
        .await;
        match written {
            Ok(_) => {}
            // A writer's bug, not a conflict to retry: the whole append is refused.
            Err(e) if is_unique_violation(&e) => {
                return Ok(Outcome::Discard(Err(StoreError::Internal(format!(
                    "outbox message {id} exists already"
                )))))
            }
            Err(e) => return Err(map_error(e)),
        }
    }
    Ok(Outcome::Keep(Ok(appended)))
}

#[async_trait]
impl<E: EventPayload> EventStore<E> for SqliteStore<E> {
    async fn read_stream(&self, stream: &StreamId) -> Result<Recorded<E>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events \
             WHERE instance_id = ?1 AND aggregate_type = ?2 AND aggregate_id = ?3 \
             ORDER BY sequence"
        ))
        .bind(stream.instance.as_str())
        .bind(&*stream.aggregate_type)
        .bind(&*stream.aggregate_id)
        .fetch_all(&self.database.inner.readers)
        .await
        .map_err(map_error)?;
        rows.iter().map(recorded).collect()
    }

    async fn append(&self, append: Append<E>) -> Result<AppendOutcome, StoreError> {
        let mut rows = Vec::with_capacity(append.events.len());
        for new in &append.events {
            rows.push(EncodedEvent {
                event_type: new.event.event_type().to_owned(),
                revision: i64::from(new.event.revision()),
                payload: new.event.to_json()?.to_string(),
                creator: new.creator.as_str().to_owned(),
                owner: new.owner.as_str().to_owned(),
            });
        }
        let outbox: Vec<(Uuid, String)> = append
            .outbox
            .iter()
            .map(|m| (m.id, m.payload.to_string()))
            .collect();
        let (stream, expected, command) = (append.stream, append.expected, append.command);
        let writer = &self.database.inner.writer;
        if outbox.is_empty() && !rows.is_empty() {
            // The common append (a verify, a check): its check and its events in one
            // statement, which SQLite runs all or nothing.
            return writer
                .write(
                    Isolation::Statement,
                    Box::new(move |conn, now| {
                        Box::pin(append_in_one(conn, now, stream, expected, command, rows))
                    }),
                )
                .await?;
        }
        writer
            .write(
                Isolation::Savepoint,
                Box::new(move |conn, now| {
                    Box::pin(append_rows(
                        conn, now, stream, expected, command, rows, outbox,
                    ))
                }),
            )
            .await?
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Recorded<E>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
        ))
        .bind(to_i64(after))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.database.inner.readers)
        .await
        .map_err(map_error)?;
        rows.iter().map(recorded).collect()
    }

    async fn fetch_outbox(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.database
            .inner
            .writer
            .write(
                Isolation::Statement,
                Box::new(move |conn, now| {
                    Box::pin(async move {
                        let at = micros(now);
                        // Instances take turns: each one's oldest, then each one's second, …
                        let rows = sqlx::query(
                            "UPDATE outbox SET leased_until = ?3, attempts = attempts + 1 \
                         WHERE id IN (SELECT id FROM ( \
                                 SELECT id, rowid AS seq, row_number() OVER \
                                   (PARTITION BY instance_id ORDER BY rowid) AS turn \
                                 FROM outbox \
                                 WHERE leased_until IS NULL OR leased_until <= ?1) \
                               ORDER BY turn, seq LIMIT ?2) \
                         RETURNING rowid AS seq, id, instance_id, aggregate_type, \
                                   aggregate_id, payload, created_at, attempts",
                        )
                        .bind(at)
                        .bind(limit)
                        .bind(micros_after(now, lease))
                        .fetch_all(&mut *conn)
                        .await
                        .map_err(map_error)?;
                        let mut out = Vec::with_capacity(rows.len());
                        for row in &rows {
                            let id: String = row.try_get("id").map_err(map_error)?;
                            let payload: String = row.try_get("payload").map_err(map_error)?;
                            let seq: i64 = row.try_get("seq").map_err(map_error)?;
                            out.push((
                                seq,
                                OutboxMessage::new(
                                    Uuid::parse_str(&id)
                                        .map_err(|e| StoreError::Internal(e.to_string()))?,
                                    stream_of(row)?,
                                    serde_json::from_str(&payload)
                                        .map_err(|e| StoreError::Internal(e.to_string()))?,
                                    from_micros(row.try_get("created_at").map_err(map_error)?),
                                    row.try_get::<i64, _>("attempts").map_err(map_error)? as u32,
                                ),
                            ));
                        }
                        // RETURNING has no order of its own, and may name no column of the
                        // choice: each instance's leased messages are its oldest, so their turn
                        // is their rank among its own.
                        out.sort_by_key(|(seq, _)| *seq);
                        let mut turns: std::collections::HashMap<InstanceId, i64> =
                            std::collections::HashMap::new();
                        let mut ranked: Vec<((i64, i64), OutboxMessage)> = out
                            .into_iter()
                            .map(|(seq, m)| {
                                let turn = turns.entry(m.stream.instance.clone()).or_insert(0);
                                *turn += 1;
                                ((*turn, seq), m)
                            })
                            .collect();
                        ranked.sort_by_key(|(order, _)| *order);
                        let out = ranked;
                        Ok(Outcome::Keep(out.into_iter().map(|(_, m)| m).collect()))
                    })
                }),
            )
            .await
            .map_err(settled_read)
    }

    async fn delete_outbox(&self, id: Uuid) -> Result<bool, StoreError> {
        self.database
            .changed(move |_| sqlx::query("DELETE FROM outbox WHERE id = ?1").bind(id.to_string()))
            .await
            .map(|changed| changed > 0)
            .map_err(settled_read)
    }

    async fn retry_outbox(&self, id: Uuid, after: Duration) -> Result<bool, StoreError> {
        self.database
            .changed(move |now| {
                sqlx::query("UPDATE outbox SET leased_until = ?2 WHERE id = ?1")
                    .bind(id.to_string())
                    .bind(micros_after(now, after))
            })
            .await
            .map(|changed| changed > 0)
            .map_err(settled_read)
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let (depth, oldest): (i64, Option<i64>) =
            sqlx::query_as("SELECT count(*), min(created_at) FROM outbox")
                .fetch_one(&self.database.inner.readers)
                .await
                .map_err(map_error)?;
        Ok(OutboxStats {
            depth: depth.max(0) as u64,
            oldest: oldest.map(from_micros),
        })
    }
}

/// The outbox's calls other than an append: an unknown outcome is UNAVAILABLE to them (the
/// notifier tries again; a lease or a deletion done twice is harmless).
fn settled_read(e: StoreError) -> StoreError {
    match e {
        StoreError::Unknown(m) => StoreError::Unavailable(m),
        other => other,
    }
}
