//! # otp-sms-postgres
//!
//! A PostgreSQL [`EventStore`] built on `sqlx`, passing the same conformance suite as the
//! in-memory store.
//!
//! - Events are keyed by (instance, aggregate type, aggregate id, sequence): two writers of the
//!   same sequence collide on the primary key, on one server or many.
//! - An append (version check, events, outbox messages) is all or nothing.
//! - Group commit: appends that arrive while a write is in flight are written together by one
//!   call of a stored function, in one transaction with one commit flush; each is checked
//!   against its own expected version, so a conflict fails only its own command. Alone, an
//!   append is a single round trip. Stream reads that overlap are answered by one query.
//! - Appends and stream reads run on two threads of the store's own, each with one connection,
//!   so their answers are handled the moment they arrive rather than when a busy worker of the
//!   host's runtime gets to them; the feed, the outbox and migrations use the pool.
//! - The global feed never skips: positions are assigned under a transaction-scoped advisory
//!   lock held until commit, so they become visible in increasing order (`docs/event-store.md`
//!   explains why a plain sequence is not enough).
//! - The outbox hands each message to one consumer at a time (`FOR UPDATE SKIP LOCKED` plus a
//!   lease), and a deleted message is gone for good.
//! - [`PgBudgets`]: the send budgets (`otp_sms_core::BudgetStore`) in the same schema, shared by
//!   every server on the database and measured on its clock.
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

mod budgets;
mod checkpoints;
mod hosts;
mod idempotency;
mod migrations;
#[cfg(feature = "test-util")]
pub mod testing;

pub use budgets::{PgBudgets, BUDGET_BATCH_SIZE};
pub use checkpoints::PgCheckpoints;
pub use hosts::{DatabaseHosts, TargetSession};
pub use idempotency::PgIdempotency;

use std::collections::HashSet;
use std::marker::PhantomData;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use otp_sms_core::{
    Append, AppendOutcome, CommandId, EventPayload, EventStore, ExpectedVersion, InstanceId,
    NewEvent, OrganizationId, OutboxMessage, OutboxStats, PrincipalId, Recorded, RecordedEvent,
    RecordedMeta, StoreError, StreamId, Version,
};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub use migrations::{Component, MIGRATOR};

/// The advisory lock class of this library ("otp" in ASCII); the object id is the schema's hash.
const LOCK_CLASS: i32 = 0x006f_7470;

/// The most appends one group commit writes.
const MAX_BATCH: usize = 128;

/// Histogram (through the `metrics` facade): appends per group commit of the writer thread.
pub const APPEND_BATCH_SIZE: &str = "otp_sms_append_batch_size";

/// How long the writer waits at least for more appends when the previous batch showed
/// concurrent writers: a commit flush costs the same for one append as for many. Never when
/// alone.
const LINGER: Duration = Duration::from_micros(250);

/// The longest such wait. The wait is a quarter of the previous batch's write (its flush,
/// mostly), within these bounds: when a flush is slow, writers whose next append follows a
/// network round trip (a server's clients) still join the next commit instead of splitting
/// it in two.
const MAX_LINGER: Duration = Duration::from_millis(2);

/// A PostgreSQL event store in one schema.
///
/// Appends go through a writer thread with its own connection, started at the first append,
/// that writes whatever appends are waiting in one call (group commit); stream reads go
/// through a reader thread likewise. Dropping the store stops both.
pub struct PgStore<E> {
    shared: Arc<Shared>,
    writer: Mutex<Option<mpsc::Sender<Option<Job<E>>>>>,
    reader: Mutex<Option<mpsc::Sender<Option<ReadJob<E>>>>>,
    /// Whether the host watcher runs (several hosts only).
    watching: std::sync::atomic::AtomicBool,
    _events: PhantomData<fn() -> E>,
}

/// How long the store waits on PostgreSQL, and how much work may wait for it.
///
/// ```
/// use std::time::Duration;
/// let timeouts = otp_sms_postgres::Timeouts {
///     operation: Duration::from_secs(2),
///     ..Default::default()
/// };
/// # let _ = timeouts;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening a connection of the writer or the reader (default 5 s).
    pub connect: Duration,
    /// One call on the wire (a batch of appends, of stream reads, a readiness ping; default
    /// 5 s): past it the connection is dropped and replaced, reads answer UNAVAILABLE and
    /// appends an unknown outcome. A blackholed database costs a caller at most this (plus
    /// `connect` for the first call after).
    pub operation: Duration,
    /// `statement_timeout` of the worker connections (server side; default 5 s).
    pub statement: Duration,
    /// `lock_timeout` of the worker connections (server side; default 2 s).
    pub lock: Duration,
    /// Appends, and stream reads, that may wait for the writer (reader) at once (default
    /// 1,024): more are refused at once as UNAVAILABLE instead of queueing without end.
    pub queue: usize,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            operation: Duration::from_secs(5),
            statement: Duration::from_secs(5),
            lock: Duration::from_secs(2),
            queue: 1024,
        }
    }
}

/// One stream read waiting for the reader.
struct ReadJob<E> {
    stream: StreamId,
    reply: oneshot::Sender<Result<Recorded<E>, StoreError>>,
}

/// Most streams one read query fetches.
const MAX_READ_BATCH: usize = 128;

/// What the store and its writer task share.
struct Shared {
    pool: PgPool,
    schema: String,
    lock_key: i32,
    sql: Sql,
    timeouts: Timeouts,
    /// Several hosts: each new worker connection looks for the one to write to, and the pool
    /// follows it.
    hosts: Option<DatabaseHosts>,
}

/// One append waiting for the writer.
struct Job<E> {
    append: Append<E>,
    payloads: Vec<String>,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// Every statement, with the schema filled in once.
struct Sql {
    read_stream: String,
    read_streams: String,
    read_all: String,
    version: String,
    append_batch: String,
    append_one: String,
    fetch_outbox: String,
    delete_outbox: String,
    retry_outbox: String,
    outbox_stats: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        let columns = "instance_id, aggregate_type, aggregate_id, sequence, position, event_type, \
                       revision, payload, creator, owner, created_at, command_id";
        Self {
            read_stream: format!(
                "SELECT {columns} FROM {s}.events \
                 WHERE instance_id = $1 AND aggregate_type = $2 AND aggregate_id = $3 \
                 ORDER BY sequence"
            ),
            // One index range scan per stream (LATERAL), never a scan of the table.
            read_streams: format!(
                "SELECT e.* FROM unnest($1::text[], $2::text[], $3::text[]) \
                   WITH ORDINALITY AS r(i, t, a, n) \
                 CROSS JOIN LATERAL (SELECT {columns} FROM {s}.events \
                   WHERE instance_id = r.i AND aggregate_type = r.t AND aggregate_id = r.a \
                   ORDER BY sequence) AS e \
                 ORDER BY r.n, e.sequence"
            ),
            read_all: format!(
                "SELECT {columns} FROM {s}.events WHERE position > $1 ORDER BY position LIMIT $2"
            ),
            version: format!(
                "SELECT coalesce(max(sequence), 0) FROM {s}.events \
                 WHERE instance_id = $1 AND aggregate_type = $2 AND aggregate_id = $3"
            ),
            append_batch: format!(
                "SELECT kind, idx, seq, pos, at FROM {s}.append_batch(\
                 $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
            ),
            append_one: format!(
                "SELECT kind, idx, seq, pos, at FROM {s}.append_one(\
                 $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ),
            fetch_outbox: format!(
                "UPDATE {s}.outbox o \
                 SET leased_until = clock_timestamp() + make_interval(secs => $2), \
                     attempts = o.attempts + 1 \
                 FROM (SELECT id, turn FROM ( \
                         SELECT id, seq, row_number() OVER \
                           (PARTITION BY instance_id ORDER BY seq) AS turn \
                         FROM {s}.outbox \
                         WHERE leased_until IS NULL OR leased_until <= clock_timestamp()) r \
                       ORDER BY turn, seq LIMIT $1) c \
                 WHERE o.id = c.id \
                   AND (o.leased_until IS NULL OR o.leased_until <= clock_timestamp()) \
                 RETURNING o.id, o.seq, c.turn, o.instance_id, o.aggregate_type, \
                           o.aggregate_id, o.payload, o.created_at, o.attempts"
            ),
            delete_outbox: format!("DELETE FROM {s}.outbox WHERE id = $1"),
            outbox_stats: format!("SELECT count(*), min(created_at) FROM {s}.outbox"),
            retry_outbox: format!(
                "UPDATE {s}.outbox \
                 SET leased_until = clock_timestamp() + make_interval(secs => $2) \
                 WHERE id = $1"
            ),
        }
    }
}

pub(crate) fn is_valid_schema(schema: &str) -> bool {
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
    map_error_ref(&e)
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
    Ok(StreamId::new(
        InstanceId::parse("instance_id", row.try_get::<String, _>("instance_id")?)
            .map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
        row.try_get::<String, _>("aggregate_type")?,
        row.try_get::<String, _>("aggregate_id")?,
    ))
}

fn recorded<E: EventPayload>(row: PgRow) -> Result<Arc<RecordedEvent<E>>, StoreError> {
    let decode = |e: otp_sms_core::Error| StoreError::Internal(e.to_string());
    let event_type: String = row.try_get("event_type").map_err(map_error)?;
    let revision: i16 = row.try_get("revision").map_err(map_error)?;
    let payload: serde_json::Value = row.try_get("payload").map_err(map_error)?;
    let meta = RecordedMeta {
        sequence: row.try_get::<i64, _>("sequence").map_err(map_error)? as u64,
        position: row.try_get::<i64, _>("position").map_err(map_error)? as u64,
        created_at: row.try_get("created_at").map_err(map_error)?,
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
        event: E::from_json(&event_type, revision as u16, payload)?,
    };
    let command = row
        .try_get::<Option<Uuid>, _>("command_id")
        .map_err(map_error)?
        .map(CommandId);
    Ok(Arc::new(RecordedEvent::new(
        stream_of(&row).map_err(map_error)?,
        meta,
        new,
        command,
    )))
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
            shared: Arc::new(Shared {
                pool,
                schema: schema.to_owned(),
                lock_key: schema_lock_key(schema),
                sql: Sql::new(schema),
                timeouts: Timeouts::default(),
                hosts: None,
            }),
            writer: Mutex::new(None),
            reader: Mutex::new(None),
            watching: std::sync::atomic::AtomicBool::new(false),
            _events: PhantomData,
        })
    }

    /// The schema the tables live in.
    pub fn schema(&self) -> &str {
        &self.shared.schema
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.shared.pool
    }

    /// Creates the schema if needed and applies the event store's migrations to it (events,
    /// outbox, append functions): the budget and idempotency stores migrate their own
    /// ([`PgBudgets::migrate`], [`PgIdempotency::migrate`]). Safe to run on every start and
    /// from several servers at once (sqlx takes a lock while migrating).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.watch_hosts();
        migrations::migrate(
            &self.shared.pool,
            &self.shared.schema,
            Component::EventStore,
        )
        .await
    }

    /// The store with other [`Timeouts`]. Takes effect for connections opened after it: call
    /// it right after [`PgStore::new`].
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.timeouts = timeouts,
            None => tracing::warn!("with_timeouts on a store in use: ignored"),
        }
        self
    }

    /// The store following the host that takes writes among `hosts` (a URL with several
    /// hosts, [`DatabaseHosts`]): each new worker connection tries them in order, and the pool
    /// is pointed at the one found, so the store follows a promotion. Call it right after
    /// [`PgStore::new`], with a pool made for [`DatabaseHosts::connect`]'s answer.
    pub fn with_hosts(mut self, hosts: DatabaseHosts) -> Self {
        match Arc::get_mut(&mut self.shared) {
            Some(shared) => shared.hosts = Some(hosts),
            None => tracing::warn!("with_hosts on a store in use: ignored"),
        }
        self
    }

    /// The timeouts in force.
    pub fn timeouts(&self) -> Timeouts {
        self.shared.timeouts
    }

    /// Whether the database answers and takes writes (for readiness checks), within
    /// [`Timeouts::operation`]: a standby, or a session that is read-only, is not ready.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.watch_hosts();
        let ping = async {
            let mut conn = self.shared.pool.acquire().await.map_err(map_error)?;
            let read_only: bool = sqlx::query_scalar(
                "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool",
            )
            .fetch_one(&mut *conn)
            .await
            .map_err(map_error)?;
            if read_only {
                return Err(StoreError::Unavailable(
                    "the database takes no writes (a standby, or a read-only session)".into(),
                ));
            }
            Ok(())
        };
        tokio::time::timeout(self.shared.timeouts.operation, ping)
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("no answer to a ping".into())))
    }

    /// Makes the writer and reader threads panic (they are restarted by the next call).
    /// For tests of their supervision only.
    #[doc(hidden)]
    pub async fn panic_workers_for_tests(&self) {
        let writer = self.writer.lock().clone();
        if let Some(tx) = writer {
            let _ = tx.send(None).await;
        }
        let reader = self.reader.lock().clone();
        if let Some(tx) = reader {
            let _ = tx.send(None).await;
        }
    }
}

/// Runs `task` on a thread of its own with a single-threaded runtime: its network answers are
/// handled the moment they arrive, not when a busy worker of the host's runtime gets to them.
pub(crate) fn spawn_worker<F>(name: String, task: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(task),
            Err(e) => tracing::error!(error = %e, "cannot start a store worker"),
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a store worker thread");
    }
}

/// How often a store with several hosts checks that its pool still reaches the host to write
/// to.
const HOST_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Points the pool's new connections at `found`, the host that takes writes, if it moved.
fn point_pool_at(shared: &Shared, found: PgConnectOptions) {
    let current = shared.pool.connect_options();
    if found.get_host() != current.get_host() || found.get_port() != current.get_port() {
        tracing::warn!(
            host = found.get_host(),
            port = found.get_port(),
            "the database host to write to changed; the pool follows"
        );
        shared.pool.set_connect_options(found);
    }
}

/// Watches the host behind the store's pool, while the store lives: once a second it asks
/// whether that host still takes writes, and when not (it went down, or a standby was
/// promoted over it) it finds the one that does and points the pool there. The writer and
/// reader look again on their own whenever they reconnect.
async fn watch_hosts(shared: std::sync::Weak<Shared>) {
    loop {
        tokio::time::sleep(HOST_CHECK_EVERY).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let Some(hosts) = shared.hosts.as_ref().filter(|h| h.len() > 1) else {
            return;
        };
        let t = shared.timeouts;
        if hosts.pool_accepts(&shared.pool, t.operation).await {
            continue;
        }
        match hosts.connect(t.connect, |o| o).await {
            Ok((_, found)) => point_pool_at(&shared, found),
            Err(e) => tracing::warn!(error = %e, "no database host takes writes yet"),
        }
    }
}

impl<E> PgStore<E> {
    /// Starts the host watcher once, for a store with several hosts.
    fn watch_hosts(&self) {
        if self.shared.hosts.as_ref().is_some_and(|h| h.len() > 1)
            && !self
                .watching
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let weak = Arc::downgrade(&self.shared);
            spawn_worker(
                format!("otp-sms-pg-hosts-{}", self.shared.schema),
                watch_hosts(weak),
            );
        }
    }
}

impl<E: EventPayload> PgStore<E> {
    /// The writer's queue; a writer thread that stopped (it panicked) is replaced.
    fn writer(&self) -> mpsc::Sender<Option<Job<E>>> {
        self.watch_hosts();
        running(&self.writer, "append writer", || {
            let (tx, rx) = mpsc::channel(self.shared.timeouts.queue.max(1));
            let shared = Arc::clone(&self.shared);
            let name = format!("otp-sms-pg-writer-{}", shared.schema);
            spawn_worker(name, write_batches(shared, rx));
            tx
        })
    }

    /// The reader's queue; a reader thread that stopped is replaced.
    fn reader(&self) -> mpsc::Sender<Option<ReadJob<E>>> {
        running(&self.reader, "stream reader", || {
            let (tx, rx) = mpsc::channel(self.shared.timeouts.queue.max(1));
            let shared = Arc::clone(&self.shared);
            let name = format!("otp-sms-pg-reader-{}", shared.schema);
            spawn_worker(name, read_batches(shared, rx));
            tx
        })
    }
}

/// The queue of a worker that runs: the one in `slot`, or, when there is none or its thread
/// stopped (its receiver is gone), one `start` makes.
fn running<J>(
    slot: &Mutex<Option<mpsc::Sender<J>>>,
    what: &str,
    start: impl FnOnce() -> mpsc::Sender<J>,
) -> mpsc::Sender<J> {
    let mut slot = slot.lock();
    match &*slot {
        Some(tx) if !tx.is_closed() => tx.clone(),
        previous => {
            if previous.is_some() {
                tracing::error!("the {what} stopped; starting a new one");
            }
            let tx = start();
            *slot = Some(tx.clone());
            tx
        }
    }
}

/// The next job of a worker's queue; `None` when the queue is closed. A `None` job (sent only
/// by [`PgStore::panic_workers_for_tests`]) makes the worker panic.
async fn next_job<J>(rx: &mut mpsc::Receiver<Option<J>>) -> Option<J> {
    match rx.recv().await? {
        Some(job) => Some(job),
        None => panic!("worker asked to panic (a supervision test)"),
    }
}

/// A job already waiting, if any (see [`next_job`]).
fn waiting_job<J>(rx: &mut mpsc::Receiver<Option<J>>) -> Option<J> {
    match rx.try_recv().ok()? {
        Some(job) => Some(job),
        None => panic!("worker asked to panic (a supervision test)"),
    }
}

/// `call`, or a pool time-out (UNAVAILABLE) when it has not answered within `limit`: a
/// blackholed database holds no caller longer.
pub(crate) async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut))
}

/// Runs `call` within the operation timeout.
async fn bounded<T>(
    shared: &Shared,
    call: impl std::future::Future<Output = Result<T, sqlx::Error>>,
) -> Result<Result<T, sqlx::Error>, tokio::time::error::Elapsed> {
    tokio::time::timeout(shared.timeouts.operation, call).await
}

/// The reader: the stream reads waiting together go to the database in one query, on the
/// reader's own connection.
async fn read_batches<E: EventPayload>(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Option<ReadJob<E>>>,
) {
    let mut conn: Option<PgConnection> = None;
    while let Some(first) = next_job(&mut rx).await {
        let mut batch = vec![first];
        while batch.len() < MAX_READ_BATCH {
            match waiting_job(&mut rx) {
                Some(job) => batch.push(job),
                None => break,
            }
        }
        let connection = match conn.take() {
            Some(c) => Ok(c),
            None => connect(&shared).await,
        };
        let mut c = match connection {
            Ok(c) => c,
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
                continue;
            }
        };
        // The same stream may be asked for by several jobs: fetch it once.
        let mut unique: Vec<&StreamId> = Vec::with_capacity(batch.len());
        let mut slot_of: std::collections::HashMap<&StreamId, usize> =
            std::collections::HashMap::with_capacity(batch.len());
        for job in &batch {
            slot_of.entry(&job.stream).or_insert_with(|| {
                unique.push(&job.stream);
                unique.len() - 1
            });
        }
        let rows = if let [only] = unique.as_slice() {
            let query = sqlx::query(&shared.sql.read_stream)
                .bind(only.instance.as_str())
                .bind(only.aggregate_type.as_ref())
                .bind(only.aggregate_id.as_ref())
                .fetch_all(&mut c);
            bounded(&shared, query).await
        } else {
            let instances: Vec<&str> = unique.iter().map(|s| s.instance.as_str()).collect();
            let types: Vec<&str> = unique.iter().map(|s| s.aggregate_type.as_ref()).collect();
            let ids: Vec<&str> = unique.iter().map(|s| s.aggregate_id.as_ref()).collect();
            let query = sqlx::query(&shared.sql.read_streams)
                .bind(&instances)
                .bind(&types)
                .bind(&ids)
                .fetch_all(&mut c);
            bounded(&shared, query).await
        };
        let events: Result<Vec<Arc<RecordedEvent<E>>>, StoreError> = match rows {
            Ok(Ok(rows)) => {
                conn = Some(c);
                rows.into_iter().map(recorded).collect()
            }
            Ok(Err(e)) => {
                if matches!(e, sqlx::Error::Database(_)) {
                    conn = Some(c);
                }
                Err(map_error(e))
            }
            // The connection is dropped: the next batch opens a new one.
            Err(_) => Err(StoreError::Unavailable(format!(
                "no answer to a stream read within {:?}",
                shared.timeouts.operation
            ))),
        };
        match events {
            Ok(events) => {
                let mut streams: Vec<Recorded<E>> = vec![Vec::new(); unique.len()];
                for event in events {
                    if let Some(&i) = slot_of.get(&event.stream) {
                        streams[i].push(event);
                    }
                }
                let answers: Vec<_> = batch
                    .iter()
                    .map(|job| streams[slot_of[&job.stream]].clone())
                    .collect();
                drop(slot_of);
                drop(unique);
                for (job, found) in batch.into_iter().zip(answers) {
                    let _ = job.reply.send(Ok(found));
                }
            }
            Err(e) => {
                drop(slot_of);
                drop(unique);
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Connects the writer's own connection (appends never wait for the pool).
/// A worker's connection: the pool's options plus the server-side timeouts, opened within the
/// connect timeout.
async fn connect(shared: &Shared) -> Result<PgConnection, StoreError> {
    let t = shared.timeouts;
    let adjust = |options: PgConnectOptions| {
        options.options([
            (
                "statement_timeout",
                format!("{}ms", t.statement.as_millis()),
            ),
            ("lock_timeout", format!("{}ms", t.lock.as_millis())),
        ])
    };
    if let Some(hosts) = shared.hosts.as_ref().filter(|h| h.len() > 1) {
        let (conn, found) = hosts.connect(t.connect, adjust).await?;
        point_pool_at(shared, found);
        return Ok(conn);
    }
    let options = adjust((*shared.pool.connect_options()).clone());
    match tokio::time::timeout(t.connect, PgConnection::connect_with(&options)).await {
        Ok(connected) => connected.map_err(map_error),
        Err(_) => Err(StoreError::Unavailable(format!(
            "no connection to PostgreSQL within {:?}",
            t.connect
        ))),
    }
}

/// The writer: takes the waiting appends (up to [`MAX_BATCH`]) and writes them in one call,
/// until the store is dropped. A batch holds at most one append per stream and each outbox id
/// once, so its appends are independent; the others wait for the next batch, in the order
/// they came.
async fn write_batches<E: EventPayload>(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Option<Job<E>>>,
) {
    let mut conn: Option<PgConnection> = None;
    let mut waiting: std::collections::VecDeque<Job<E>> = std::collections::VecDeque::new();
    let mut last_batch = 0usize;
    let mut last_write = Duration::ZERO;
    loop {
        if waiting.is_empty() {
            match next_job(&mut rx).await {
                Some(job) => waiting.push_back(job),
                None => return,
            }
        }
        if last_batch > 1 && waiting.len() < last_batch {
            // Concurrent writers are about: give them a moment to join this commit.
            let deadline = tokio::time::Instant::now() + (last_write / 4).clamp(LINGER, MAX_LINGER);
            while waiting.len() < last_batch {
                match tokio::time::timeout_at(deadline, next_job(&mut rx)).await {
                    Ok(Some(job)) => waiting.push_back(job),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        while waiting.len() < MAX_BATCH {
            match waiting_job(&mut rx) {
                Some(job) => waiting.push_back(job),
                None => break,
            }
        }
        let mut batch = Vec::new();
        let mut deferred = std::collections::VecDeque::new();
        let mut streams = HashSet::new();
        let mut outbox_ids = HashSet::new();
        while let Some(job) = waiting.pop_front() {
            let independent = batch.len() < MAX_BATCH
                && !streams.contains(&job.append.stream)
                && job
                    .append
                    .outbox
                    .iter()
                    .all(|m| !outbox_ids.contains(&m.id));
            if independent {
                streams.insert(job.append.stream.clone());
                outbox_ids.extend(job.append.outbox.iter().map(|m| m.id));
                batch.push(job);
            } else {
                deferred.push_back(job);
            }
        }
        waiting = deferred;
        last_batch = batch.len();
        metrics::histogram!(APPEND_BATCH_SIZE).record(batch.len() as f64);
        let connection = match conn.take() {
            Some(c) => Ok(c),
            None => connect(&shared).await,
        };
        match connection {
            Ok(mut c) => {
                let started = std::time::Instant::now();
                if write_batch(&shared, &mut c, batch).await {
                    conn = Some(c);
                }
                last_write = started.elapsed();
            }
            Err(e) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Writes one batch and answers every job in it. Returns whether the connection is still
/// good.
async fn write_batch<E: EventPayload>(
    shared: &Shared,
    conn: &mut PgConnection,
    batch: Vec<Job<E>>,
) -> bool {
    let mut a = BatchArrays::default();
    for (i, job) in batch.iter().enumerate() {
        let s = &job.append.stream;
        let idx = i as i32 + 1;
        a.instance.push(s.instance.as_str());
        a.aggregate_type.push(&s.aggregate_type);
        a.aggregate_id.push(&s.aggregate_id);
        a.command.push(job.append.command.map(|c| c.0));
        a.expected.push(match job.append.expected {
            ExpectedVersion::Any => -1,
            ExpectedVersion::NoStream => 0,
            ExpectedVersion::Exact(v) => to_i64(v),
        });
        for (n, (new, payload)) in job.append.events.iter().zip(&job.payloads).enumerate() {
            a.e_append.push(idx);
            a.e_offset.push(n as i32 + 1);
            a.e_type.push(new.event.event_type());
            a.e_revision.push(new.event.revision() as i16);
            a.e_payload.push(payload);
            a.e_creator.push(new.creator.as_str());
            a.e_owner.push(new.owner.as_str());
        }
        for message in &job.append.outbox {
            a.o_append.push(idx);
            a.o_id.push(message.id);
            a.o_payload.push(message.payload.to_string());
        }
    }
    let rows = match &batch[..] {
        // One append without messages (every append when writers do not overlap): the
        // procedural function, cheaper than the set-based one's joins.
        [job] if job.append.outbox.is_empty() => {
            let s = &job.append.stream;
            let query = sqlx::query(&shared.sql.append_one)
                .bind(LOCK_CLASS)
                .bind(shared.lock_key)
                .bind(s.instance.as_str())
                .bind(&*s.aggregate_type)
                .bind(&*s.aggregate_id)
                .bind(a.expected[0])
                .bind(&a.e_type)
                .bind(&a.e_revision)
                .bind(&a.e_payload)
                .bind(&a.e_creator)
                .bind(&a.e_owner)
                .bind(job.append.command.map(|c| c.0))
                .fetch_all(&mut *conn);
            bounded(shared, query).await
        }
        _ => {
            let query = sqlx::query(&shared.sql.append_batch)
                .bind(LOCK_CLASS)
                .bind(shared.lock_key)
                .bind(&a.instance)
                .bind(&a.aggregate_type)
                .bind(&a.aggregate_id)
                .bind(&a.expected)
                .bind(&a.e_append)
                .bind(&a.e_offset)
                .bind(&a.e_type)
                .bind(&a.e_revision)
                .bind(&a.e_payload)
                .bind(&a.e_creator)
                .bind(&a.e_owner)
                .bind(&a.o_append)
                .bind(&a.o_id)
                .bind(&a.o_payload)
                .bind(&a.command)
                .fetch_all(&mut *conn);
            bounded(shared, query).await
        }
    };
    let rows = match rows {
        Ok(Ok(rows)) => rows,
        Err(_) => {
            // No answer in time: the call may have committed, or may still. The connection is
            // dropped (the server's statement_timeout ends a call still running).
            let reason = format!(
                "no answer to an append within {:?}",
                shared.timeouts.operation
            );
            for job in batch {
                let _ = job.reply.send(Err(StoreError::Unknown(reason.clone())));
            }
            return false;
        }
        Ok(Err(e)) => {
            // A database error: nothing of the batch was written. A unique violation means a
            // writer that does not take the lock got a sequence first: a conflict for the
            // service to retry. Any other failure (the connection) leaves the outcome unknown.
            let conflict = unique_violation_on(&e).as_deref() == Some("events_pkey");
            for job in batch {
                let answer = if conflict {
                    match current_version(shared, &job.append.stream).await {
                        Ok(actual) => Err(StoreError::Conflict {
                            stream: job.append.stream,
                            expected: job.append.expected,
                            actual,
                        }),
                        Err(e) => Err(e),
                    }
                } else if matches!(e, sqlx::Error::Database(_)) {
                    // The database answered with an error: the call's transaction is gone.
                    Err(map_error_ref(&e))
                } else {
                    // The connection failed with the call sent: it may have committed.
                    Err(StoreError::Unknown(e.to_string()))
                };
                let _ = job.reply.send(answer);
            }
            // A database error leaves the connection usable, unless it says the host stopped
            // taking writes or is going away (a failover: the next batch looks again).
            return matches!(&e, sqlx::Error::Database(db)
                if !matches!(db.code().as_deref(), Some("25006" | "57P01" | "57P02" | "57P03")));
        }
    };
    let mut answers: Vec<Option<Result<AppendOutcome, StoreError>>> =
        (0..batch.len()).map(|_| None).collect();
    let mut recorded: Vec<Vec<RecordedMeta>> = vec![Vec::new(); batch.len()];
    for row in rows {
        let Ok(BatchRow {
            kind,
            idx: i,
            seq,
            pos,
            at,
        }) = BatchRow::read(&row)
        else {
            continue;
        };
        let Some(job) = batch.get(i) else { continue };
        match kind.as_str() {
            "conflict" => {
                answers[i] = Some(Err(StoreError::Conflict {
                    stream: job.append.stream.clone(),
                    expected: job.append.expected,
                    actual: seq as u64,
                }))
            }
            "duplicate" => {
                answers[i] = Some(Err(StoreError::Internal(
                    "duplicate outbox message id".to_owned(),
                )))
            }
            "ok" => {
                answers[i] = Some(Ok(AppendOutcome {
                    version: seq as u64 + job.append.events.len() as u64,
                    recorded: Vec::new(),
                }))
            }
            "event" => {
                if let (Some(pos), Some(at)) = (pos, at) {
                    recorded[i].push(RecordedMeta {
                        sequence: seq as u64,
                        position: pos as u64,
                        created_at: at,
                    });
                }
            }
            _ => {}
        }
    }
    for ((job, answer), mut metas) in batch.into_iter().zip(answers).zip(recorded) {
        let answer = match answer {
            Some(Ok(mut outcome)) => {
                metas.sort_by_key(|m| m.sequence);
                outcome.recorded = metas;
                Ok(outcome)
            }
            Some(err) => err,
            None => Err(StoreError::Internal(
                "the append function gave no answer for an append".to_owned(),
            )),
        };
        let _ = job.reply.send(answer);
    }
    true
}

/// One result row of `append_batch` or `append_one`.
struct BatchRow {
    kind: String,
    /// The append's index in the batch, from 0.
    idx: usize,
    seq: i64,
    pos: Option<i64>,
    at: Option<DateTime<Utc>>,
}

impl BatchRow {
    fn read(row: &PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            kind: row.try_get("kind")?,
            idx: (row.try_get::<i32, _>("idx")? as usize).saturating_sub(1),
            seq: row.try_get("seq")?,
            pos: row.try_get("pos")?,
            at: row.try_get("at")?,
        })
    }
}

/// The arrays one `append_batch` call takes.
#[derive(Default)]
struct BatchArrays<'a> {
    instance: Vec<&'a str>,
    aggregate_type: Vec<&'a str>,
    aggregate_id: Vec<&'a str>,
    expected: Vec<i64>,
    command: Vec<Option<Uuid>>,
    e_append: Vec<i32>,
    e_offset: Vec<i32>,
    e_type: Vec<&'a str>,
    e_revision: Vec<i16>,
    e_payload: Vec<&'a str>,
    e_creator: Vec<&'a str>,
    e_owner: Vec<&'a str>,
    o_append: Vec<i32>,
    o_id: Vec<Uuid>,
    o_payload: Vec<String>,
}

fn map_error_ref(e: &sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some(code)
                if code.starts_with("08")
                    || matches!(code, "57P01" | "57P02" | "57P03" | "53300" | "25006") =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Internal(e.to_string()),
        },
        _ => StoreError::Internal(e.to_string()),
    }
}

async fn current_version(shared: &Shared, s: &StreamId) -> Result<Version, StoreError> {
    let v: i64 = sqlx::query_scalar(&shared.sql.version)
        .bind(s.instance.as_str())
        .bind(s.aggregate_type.as_ref())
        .bind(s.aggregate_id.as_ref())
        .fetch_one(&shared.pool)
        .await
        .map_err(map_error)?;
    Ok(v as u64)
}

/// A job the worker's queue did not take: a full queue sheds load at once; a closed one
/// (the worker stopped; the next call starts another) is unavailable too. Nothing was sent.
fn shed<T>(e: mpsc::error::TrySendError<T>) -> StoreError {
    match e {
        mpsc::error::TrySendError::Full(_) => {
            StoreError::Unavailable("the store is overloaded: its queue is full".into())
        }
        mpsc::error::TrySendError::Closed(_) => {
            StoreError::Unavailable("the store's worker stopped".into())
        }
    }
}

#[async_trait]
impl<E: EventPayload> EventStore<E> for PgStore<E> {
    async fn read_stream(&self, stream: &StreamId) -> Result<Recorded<E>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = ReadJob {
            stream: stream.clone(),
            reply,
        };
        self.reader().try_send(Some(job)).map_err(shed)?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the stream reader stopped".into()))?
    }

    async fn append(&self, append: Append<E>) -> Result<AppendOutcome, StoreError> {
        let payloads = append
            .events
            .iter()
            .map(|e| e.event.to_json().map(|v| v.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ids = HashSet::with_capacity(append.outbox.len());
        if !append.outbox.iter().all(|m| ids.insert(m.id)) {
            return Err(StoreError::Internal(
                "duplicate outbox message id".to_owned(),
            ));
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            append,
            payloads,
            reply,
        };
        self.writer().try_send(Some(job)).map_err(shed)?;
        // A writer that stops with the job taken may have sent it.
        answer
            .await
            .map_err(|_| StoreError::Unknown("the append writer stopped".into()))?
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Recorded<E>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = crate::within(
            self.shared.timeouts.operation,
            sqlx::query(&self.shared.sql.read_all)
                .bind(to_i64(after))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.shared.pool),
        )
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
        let rows = crate::within(
            self.shared.timeouts.operation,
            sqlx::query(&self.shared.sql.fetch_outbox)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .bind(lease.as_secs_f64())
                .fetch_all(&self.shared.pool),
        )
        .await
        .map_err(map_error)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let seq: i64 = row.try_get("seq").map_err(map_error)?;
            let turn: i64 = row.try_get("turn").map_err(map_error)?;
            out.push((
                (turn, seq),
                OutboxMessage::new(
                    row.try_get("id").map_err(map_error)?,
                    stream_of(&row).map_err(map_error)?,
                    row.try_get("payload").map_err(map_error)?,
                    row.try_get("created_at").map_err(map_error)?,
                    row.try_get::<i32, _>("attempts").map_err(map_error)? as u32,
                ),
            ));
        }
        // UPDATE … RETURNING has no order of its own: instances in turn, oldest first.
        out.sort_by_key(|(order, _)| *order);
        Ok(out.into_iter().map(|(_, m)| m).collect())
    }

    async fn delete_outbox(&self, id: Uuid) -> Result<bool, StoreError> {
        let done = crate::within(
            self.shared.timeouts.operation,
            sqlx::query(&self.shared.sql.delete_outbox)
                .bind(id)
                .execute(&self.shared.pool),
        )
        .await
        .map_err(map_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn retry_outbox(&self, id: Uuid, after: Duration) -> Result<bool, StoreError> {
        let done = crate::within(
            self.shared.timeouts.operation,
            sqlx::query(&self.shared.sql.retry_outbox)
                .bind(id)
                .bind(after.as_secs_f64())
                .execute(&self.shared.pool),
        )
        .await
        .map_err(map_error)?;
        Ok(done.rows_affected() > 0)
    }
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let (depth, oldest): (i64, Option<DateTime<Utc>>) = crate::within(
            self.shared.timeouts.operation,
            sqlx::query_as(&self.shared.sql.outbox_stats).fetch_one(&self.shared.pool),
        )
        .await
        .map_err(map_error)?;
        Ok(OutboxStats {
            depth: depth.max(0) as u64,
            oldest,
        })
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
