//! For tests: a fresh database file per test, removed with its directory when the test's
//! value is dropped, and the conformance suites' factories for this crate's stores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use otp_sms_testkit::budgets::BudgetStoreFactory;
use otp_sms_testkit::checkpoints::CheckpointStoreFactory;
use otp_sms_testkit::idempotency::IdempotencyStoreFactory;
use otp_sms_testkit::{StoreFactory, TestEvent};

use crate::{
    Database, SqliteBudgets, SqliteCheckpoints, SqliteIdempotency, SqliteOptions, SqliteStore,
};

/// A directory of its own under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new, empty directory.
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!("otp-sms-sqlite-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database file `name` in it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A store on a fresh file that removes the file when dropped.
#[derive(Debug)]
pub struct InTempFile<T> {
    store: T,
    _dir: TempDir,
}

impl<T> std::ops::Deref for InTempFile<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.store
    }
}

/// A database on a fresh file in a directory of its own.
pub async fn fresh_database() -> (Database, TempDir) {
    let dir = TempDir::new();
    let database = Database::open(SqliteOptions::new(dir.file("otp-sms.db")))
        .await
        .expect("open a fresh SQLite file");
    (database, dir)
}

/// The store on its temporary file, for the conformance suite.
#[async_trait]
impl otp_sms_core::EventStore<TestEvent> for InTempFile<SqliteStore<TestEvent>> {
    async fn read_stream(
        &self,
        s: &otp_sms_core::StreamId,
    ) -> Result<otp_sms_core::Recorded<TestEvent>, otp_sms_core::StoreError> {
        self.store.read_stream(s).await
    }
    async fn append(
        &self,
        a: otp_sms_core::Append<TestEvent>,
    ) -> Result<otp_sms_core::AppendOutcome, otp_sms_core::StoreError> {
        self.store.append(a).await
    }
    async fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<otp_sms_core::Recorded<TestEvent>, otp_sms_core::StoreError> {
        self.store.read_all(after, limit).await
    }
    async fn fetch_outbox(
        &self,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<otp_sms_core::OutboxMessage>, otp_sms_core::StoreError> {
        self.store.fetch_outbox(limit, lease).await
    }
    async fn delete_outbox(&self, id: uuid::Uuid) -> Result<bool, otp_sms_core::StoreError> {
        self.store.delete_outbox(id).await
    }
    async fn retry_outbox(
        &self,
        id: uuid::Uuid,
        after: std::time::Duration,
    ) -> Result<bool, otp_sms_core::StoreError> {
        self.store.retry_outbox(id, after).await
    }
    async fn outbox_stats(&self) -> Result<otp_sms_core::OutboxStats, otp_sms_core::StoreError> {
        self.store.outbox_stats().await
    }
}

#[async_trait]
impl otp_sms_core::BudgetStore for InTempFile<SqliteBudgets> {
    async fn take(
        &self,
        r: &otp_sms_core::TakeRequest,
    ) -> Result<otp_sms_core::TakeOutcome, otp_sms_core::PortError> {
        self.store.take(r).await
    }
    async fn release(&self, key: &str, member: &str) -> Result<bool, otp_sms_core::PortError> {
        self.store.release(key, member).await
    }
    async fn members(
        &self,
        key: &str,
    ) -> Result<Vec<otp_sms_core::Member>, otp_sms_core::PortError> {
        self.store.members(key).await
    }
    async fn clear(&self, key: &str) -> Result<u64, otp_sms_core::PortError> {
        self.store.clear(key).await
    }
}

#[async_trait]
impl otp_sms_core::IdempotencyStore for InTempFile<SqliteIdempotency> {
    async fn claim(
        &self,
        scope: &otp_sms_core::IdempotencyScope,
        record: &otp_sms_core::IdempotencyRecord,
        keep: std::time::Duration,
    ) -> Result<otp_sms_core::Claim, otp_sms_core::PortError> {
        self.store.claim(scope, record, keep).await
    }
}

#[async_trait]
impl otp_sms_core::CheckpointStore for InTempFile<SqliteCheckpoints> {
    async fn load(&self, name: &str) -> Result<u64, otp_sms_core::PortError> {
        self.store.load(name).await
    }
    async fn save(&self, name: &str, position: u64) -> Result<(), otp_sms_core::PortError> {
        self.store.save(name, position).await
    }
}

async fn in_temp_file<T>(make: impl FnOnce(Database) -> T) -> InTempFile<T> {
    let (database, dir) = fresh_database().await;
    InTempFile {
        store: make(database),
        _dir: dir,
    }
}

/// Fresh event stores for the conformance suite, each on a file of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct SqliteStoreFactory;

#[async_trait]
impl StoreFactory for SqliteStoreFactory {
    type Store = InTempFile<SqliteStore<TestEvent>>;
    async fn create(&self) -> Self::Store {
        in_temp_file(SqliteStore::new).await
    }
}

/// Fresh budget stores for the budget conformance suite.
#[derive(Debug, Clone, Copy, Default)]
pub struct SqliteBudgetsFactory;

#[async_trait]
impl BudgetStoreFactory for SqliteBudgetsFactory {
    type Store = InTempFile<SqliteBudgets>;
    async fn create(&self) -> Self::Store {
        in_temp_file(SqliteBudgets::new).await
    }
}

/// Fresh idempotency stores for the idempotency conformance suite.
#[derive(Debug, Clone, Copy, Default)]
pub struct SqliteIdempotencyFactory;

#[async_trait]
impl IdempotencyStoreFactory for SqliteIdempotencyFactory {
    type Store = InTempFile<SqliteIdempotency>;
    async fn create(&self) -> Self::Store {
        in_temp_file(SqliteIdempotency::new).await
    }
}

/// Fresh checkpoint stores for the checkpoint conformance suite.
#[derive(Debug, Clone, Copy, Default)]
pub struct SqliteCheckpointsFactory;

#[async_trait]
impl CheckpointStoreFactory for SqliteCheckpointsFactory {
    type Store = InTempFile<SqliteCheckpoints>;
    async fn create(
        &self,
    ) -> (
        Self::Store,
        Arc<dyn otp_sms_core::EventStore<otp_sms_core::Event>>,
    ) {
        let (database, dir) = fresh_database().await;
        let events = Arc::new(SqliteStore::<otp_sms_core::Event>::new(database.clone()));
        (
            InTempFile {
                store: SqliteCheckpoints::new(database),
                _dir: dir,
            },
            events,
        )
    }
}
