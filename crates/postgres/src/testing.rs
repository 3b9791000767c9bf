//! A PostgreSQL database for tests (feature `test-util`): one fresh, migrated schema per test,
//! dropped afterwards, and the factories that run the testkit's conformance suites on this
//! crate's stores. A host's own tests use them as the project's do:
//!
//! ```no_run
//! # async fn demo() {
//! use otp_sms_core::Event;
//! let store = otp_sms_postgres::testing::fresh_store::<Event>().await;
//! // … run the test against `store` …
//! otp_sms_postgres::testing::drop_store(&store).await;
//! # }
//! ```
//!
//! The server is found this way, and a test never skips silently:
//! 1. `DATABASE_URL`, when set, names it (the database must exist);
//! 2. otherwise a server listening on 127.0.0.1:5432 (`postgres@…/postgres`);
//! 3. otherwise a throwaway cluster started from the local server binaries (`initdb`,
//!    `pg_ctl`) under the temp directory, reused by later test processes;
//! 4. otherwise the test fails with [`HOW_TO_FIX`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use otp_sms_core::{
    BudgetStore, Claim, Event, EventPayload, IdempotencyRecord, IdempotencyScope, IdempotencyStore,
    Member, PortError, TakeOutcome, TakeRequest,
};
use otp_sms_testkit::budgets::BudgetStoreFactory;
use otp_sms_testkit::idempotency::IdempotencyStoreFactory;
use otp_sms_testkit::{StoreFactory, TestEvent};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::{PgBudgets, PgIdempotency, PgStore};

/// What a test prints when it cannot reach PostgreSQL: the ways to fix it.
pub const HOW_TO_FIX: &str = "PostgreSQL tests need a server. Fix one of:\n\
  - start PostgreSQL and set DATABASE_URL, e.g. \
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test (the database must exist);\n\
  - or install the PostgreSQL server binaries (initdb and pg_ctl on PATH or in \
    /usr/lib/postgresql/*/bin) and run the tests as a non-root user, so that a throwaway \
    cluster can be started;\n\
  - or run `bash .ci/run`, which starts the local server and creates the database.";

/// The URL of the test server: `DATABASE_URL`, or a throwaway cluster. Panics with the fix when
/// neither is available.
pub fn database_url() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ if local_server_listens() => LOCAL_URL.to_owned(),
        _ => throwaway_cluster().unwrap_or_else(|why| {
            panic!(
                "DATABASE_URL is not set, nothing listens on 127.0.0.1:5432, and no throwaway \
                 cluster could start ({why}).\n{HOW_TO_FIX}"
            )
        }),
    })
}

/// The conventional local server, tried when `DATABASE_URL` is not set.
const LOCAL_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn local_server_listens() -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 5432));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// A PostgreSQL server binary (`initdb`, `pg_ctl`, `pg_basebackup`, …): on `PATH`, or where
/// Debian and Ubuntu install it (`/usr/lib/postgresql/*/bin`).
pub fn find_bin(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    let packaged = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name));
    on_path.chain(packaged).find(|p| p.is_file())
}

/// The user id this process runs as (`initdb` refuses root).
pub fn uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Starts (or reuses) a cluster under the temp directory. Serialised across test processes by
/// creating a lock directory.
fn throwaway_cluster() -> Result<String, String> {
    if uid() == 0 {
        return Err("initdb refuses to run as root".into());
    }
    let initdb = find_bin("initdb").ok_or("initdb not found")?;
    let pg_ctl = find_bin("pg_ctl").ok_or("pg_ctl not found")?;
    let root = std::env::temp_dir().join(format!("otp-sms-test-pg-{}", uid()));
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let lock = root.join("lock");
    let started = std::time::Instant::now();
    while std::fs::create_dir(&lock).is_err() {
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!("{} stayed locked; remove it", lock.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = start_cluster(&root, &initdb, &pg_ctl);
    let _ = std::fs::remove_dir(&lock);
    result
}

fn start_cluster(root: &Path, initdb: &Path, pg_ctl: &Path) -> Result<String, String> {
    let data = root.join("data");
    let port_file = root.join("port");
    let running = Command::new(pg_ctl)
        .arg("status")
        .arg("-D")
        .arg(&data)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !running {
        if !data.join("PG_VERSION").exists() {
            let out = Command::new(initdb)
                .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "-D"])
                .arg(&data)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!("initdb: {}", String::from_utf8_lossy(&out.stderr)));
            }
        }
        let port = free_port()?;
        let out = Command::new(pg_ctl)
            .arg("start")
            .arg("-w")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(root.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {port} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200",
                root.display()
            ))
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl start: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::fs::write(&port_file, port.to_string()).map_err(|e| e.to_string())?;
        eprintln!(
            "started a throwaway PostgreSQL in {} on port {port}; stop it with `pg_ctl -D {} stop`",
            data.display(),
            data.display()
        );
    }
    let port = std::fs::read_to_string(&port_file).map_err(|e| e.to_string())?;
    Ok(format!(
        "postgres://postgres@127.0.0.1:{}/postgres",
        port.trim()
    ))
}

/// A small pool to the test server, failing with the fix when it cannot connect.
pub async fn pool() -> PgPool {
    let url = database_url();
    PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(20))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL at {url}: {e}\n{HOW_TO_FIX}"))
}

const SCHEMA_PREFIX: &str = "otp_sms_test_";

/// A fresh schema name whose UUID v7 part records when it was made.
pub fn schema_name() -> String {
    format!("{SCHEMA_PREFIX}{}", uuid::Uuid::now_v7().simple())
}

/// Drops schemas of earlier test runs that died before cleaning up (older than an hour).
async fn sweep_stale(pool: &PgPool) {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, 'otp_sms_test_')",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for name in names {
        let made_ms = name
            .strip_prefix(SCHEMA_PREFIX)
            .and_then(|hex| hex.get(..12))
            .and_then(|ms| u64::from_str_radix(ms, 16).ok());
        if made_ms.is_some_and(|ms| ms + 3_600_000 < now_ms) {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .execute(pool)
                .await;
        }
    }
}

/// A store in a schema of its own, migrated whole: the events' tables, and the budget,
/// idempotency and checkpoint stores' (which tests build on the same schema).
pub async fn fresh_store<E: EventPayload>() -> PgStore<E> {
    let pool = pool().await;
    sweep_stale(&pool).await;
    let store = PgStore::new(pool, &schema_name()).expect("valid schema name");
    migrate_whole(&store).await;
    store
}

/// Migrates `store`'s schema whole: the events' tables, and the budget, idempotency and
/// checkpoint stores' (which tests build on the same schema).
pub async fn migrate_whole<E: EventPayload>(store: &PgStore<E>) {
    store.migrate().await.expect("migrations apply");
    let (pool, schema) = (store.pool().clone(), store.schema().to_owned());
    PgBudgets::new(pool.clone(), &schema)
        .expect("valid schema name")
        .migrate()
        .await
        .expect("budget migrations apply");
    PgIdempotency::new(pool.clone(), &schema)
        .expect("valid schema name")
        .migrate()
        .await
        .expect("idempotency migrations apply");
    crate::PgCheckpoints::new(pool, &schema)
        .expect("valid schema name")
        .migrate()
        .await
        .expect("checkpoint migrations apply");
}

/// Drops the store's schema and closes its pool.
pub async fn drop_store<E>(store: &PgStore<E>) {
    sqlx::query(&format!(
        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        store.schema()
    ))
    .execute(store.pool())
    .await
    .expect("drop test schema");
    store.pool().close().await;
}

/// Drops a schema by name (for schemas a spawned server created).
pub async fn drop_schema(name: &str) {
    let pool = pool().await;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
        .execute(&pool)
        .await
        .expect("drop schema");
    pool.close().await;
}

/// A store of shared state (budgets, idempotency records) in a test schema, with the event
/// store whose migration made its table, so disposing of it drops the schema.
pub struct InSchema<T> {
    /// The store under test.
    pub inner: T,
    /// The event store that owns the schema.
    pub store: PgStore<Event>,
}

#[async_trait]
impl BudgetStore for InSchema<PgBudgets> {
    async fn take(&self, request: &TakeRequest) -> Result<TakeOutcome, PortError> {
        self.inner.take(request).await
    }
    async fn release(&self, key: &str, member: &str) -> Result<bool, PortError> {
        self.inner.release(key, member).await
    }
    async fn members(&self, key: &str) -> Result<Vec<Member>, PortError> {
        self.inner.members(key).await
    }
    async fn clear(&self, key: &str) -> Result<u64, PortError> {
        self.inner.clear(key).await
    }
}

#[async_trait]
impl IdempotencyStore for InSchema<PgIdempotency> {
    async fn claim(
        &self,
        scope: &IdempotencyScope,
        record: &IdempotencyRecord,
        keep: Duration,
    ) -> Result<Claim, PortError> {
        self.inner.claim(scope, record, keep).await
    }
}

/// The event store conformance suite's factory: each case in a fresh schema. A test file
/// holds one line: `otp_sms_testkit::store_conformance_tests!(otp_sms_postgres::testing::PgStoreFactory);`
#[derive(Debug, Clone, Copy, Default)]
pub struct PgStoreFactory;

#[async_trait]
impl StoreFactory for PgStoreFactory {
    type Store = PgStore<TestEvent>;
    async fn create(&self) -> Self::Store {
        fresh_store().await
    }
    async fn dispose(&self, store: Arc<Self::Store>) {
        drop_store(&store).await;
    }
}

/// The budget store conformance suite's factory: [`PgBudgets`] in a fresh schema.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgBudgetsFactory;

#[async_trait]
impl BudgetStoreFactory for PgBudgetsFactory {
    type Store = InSchema<PgBudgets>;
    async fn create(&self) -> Self::Store {
        let store = fresh_store::<Event>().await;
        let inner = PgBudgets::new(store.pool().clone(), store.schema()).expect("schema");
        InSchema { inner, store }
    }
    async fn dispose(&self, budgets: Arc<Self::Store>) {
        drop_store(&budgets.store).await;
    }
}

/// The idempotency store conformance suite's factory: [`PgIdempotency`] in a fresh schema.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgIdempotencyFactory;

/// Fresh PostgreSQL checkpoint stores for the checkpoint conformance suite, each in a schema of
/// its own beside its event store.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgCheckpointsFactory;

#[async_trait]
impl otp_sms_testkit::checkpoints::CheckpointStoreFactory for PgCheckpointsFactory {
    type Store = InSchema<crate::PgCheckpoints>;
    async fn create(&self) -> (Self::Store, Arc<dyn otp_sms_core::EventStore<Event>>) {
        let store = fresh_store::<Event>().await;
        let inner =
            crate::PgCheckpoints::new(store.pool().clone(), store.schema()).expect("schema");
        // Another handle on the same schema: the one in `InSchema` drops it at the end.
        let events: Arc<dyn otp_sms_core::EventStore<Event>> =
            Arc::new(PgStore::<Event>::new(store.pool().clone(), store.schema()).expect("schema"));
        (InSchema { inner, store }, events)
    }
    async fn dispose(&self, checkpoints: Arc<Self::Store>) {
        drop_store(&checkpoints.store).await;
    }
}

#[async_trait]
impl otp_sms_core::CheckpointStore for InSchema<crate::PgCheckpoints> {
    async fn load(&self, name: &str) -> Result<u64, PortError> {
        self.inner.load(name).await
    }
    async fn save(&self, name: &str, position: u64) -> Result<(), PortError> {
        self.inner.save(name, position).await
    }
}

#[async_trait]
impl IdempotencyStoreFactory for PgIdempotencyFactory {
    type Store = InSchema<PgIdempotency>;
    async fn create(&self) -> Self::Store {
        let store = fresh_store::<Event>().await;
        let inner = PgIdempotency::new(store.pool().clone(), store.schema()).expect("schema");
        InSchema { inner, store }
    }
    async fn dispose(&self, records: Arc<Self::Store>) {
        drop_store(&records.store).await;
    }
}
