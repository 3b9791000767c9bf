//! Faults a test can arm on an event store: an append whose answer is lost after it committed
//! (a connection cut after PostgreSQL's commit), one lost before, and reads that fail.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use otp_sms_core::{
    Append, AppendOutcome, Event, EventStore, OutboxMessage, Recorded, StoreError, StreamId,
};
use uuid::Uuid;

/// What happens to one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendFault {
    /// The append commits, and its answer is lost: [`StoreError::Unknown`].
    CommitThenLoseAnswer,
    /// The append is lost before the store sees it, and so is its answer:
    /// [`StoreError::Unknown`] with nothing written.
    LoseBeforeCommit,
}

/// An event store that passes everything to `inner` except the faults armed on it.
pub struct FaultyStore {
    inner: Arc<dyn EventStore<Event>>,
    appends: Mutex<VecDeque<Option<AppendFault>>>,
    failing_reads: AtomicUsize,
    reads_after_fault: AtomicUsize,
    unknown: AtomicUsize,
}

impl FaultyStore {
    /// No fault armed yet.
    pub fn new(inner: Arc<dyn EventStore<Event>>) -> Self {
        Self {
            inner,
            appends: Mutex::new(VecDeque::new()),
            failing_reads: AtomicUsize::new(0),
            reads_after_fault: AtomicUsize::new(0),
            unknown: AtomicUsize::new(0),
        }
    }

    /// The next appends, in order: `None` passes one through.
    pub fn arm_appends(&self, faults: impl IntoIterator<Item = Option<AppendFault>>) {
        self.appends.lock().unwrap().extend(faults);
    }

    /// The next `n` stream reads fail as unavailable.
    pub fn fail_reads(&self, n: usize) {
        self.failing_reads.store(n, Ordering::SeqCst);
    }

    /// The `n` stream reads after the next faulty append fail as unavailable.
    pub fn fail_reads_after_fault(&self, n: usize) {
        self.reads_after_fault.store(n, Ordering::SeqCst);
    }

    fn lose_answer(&self) -> StoreError {
        self.unknown.fetch_add(1, Ordering::SeqCst);
        let reads = self.reads_after_fault.swap(0, Ordering::SeqCst);
        self.failing_reads.fetch_add(reads, Ordering::SeqCst);
        StoreError::Unknown("injected: the answer was lost".into())
    }

    /// How many appends were answered with an unknown outcome.
    pub fn unknown_outcomes(&self) -> usize {
        self.unknown.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl EventStore<Event> for FaultyStore {
    async fn read_stream(&self, stream: &StreamId) -> Result<Recorded<Event>, StoreError> {
        let failing = self
            .failing_reads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(StoreError::Unavailable("injected: read failed".into()));
        }
        self.inner.read_stream(stream).await
    }

    async fn append(&self, append: Append<Event>) -> Result<AppendOutcome, StoreError> {
        let fault = self.appends.lock().unwrap().pop_front().flatten();
        match fault {
            None => self.inner.append(append).await,
            Some(AppendFault::CommitThenLoseAnswer) => {
                self.inner.append(append).await?;
                Err(self.lose_answer())
            }
            Some(AppendFault::LoseBeforeCommit) => Err(self.lose_answer()),
        }
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Recorded<Event>, StoreError> {
        self.inner.read_all(after, limit).await
    }

    async fn fetch_outbox(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        self.inner.fetch_outbox(limit, lease).await
    }

    async fn delete_outbox(&self, id: Uuid) -> Result<bool, StoreError> {
        self.inner.delete_outbox(id).await
    }

    async fn retry_outbox(&self, id: Uuid, after: Duration) -> Result<bool, StoreError> {
        self.inner.retry_outbox(id, after).await
    }

    async fn outbox_stats(&self) -> Result<otp_sms_core::OutboxStats, otp_sms_core::StoreError> {
        self.inner.outbox_stats().await
    }
}

/// One `#[tokio::test]` per case and variant: each case is an `async fn(&Fixture,
/// &FaultyStore)` run on a fixture (lenient abuse policy) whose service's store is wrapped in
/// a [`FaultyStore`]. A variant is `module_name: Backend, stream cache capacity`.
///
/// ```text
/// on_stores_with_faults!(
///     [memory: Memory, 0; postgres: Postgres, 0],
///     [a_case, another_case],
/// );
/// ```
#[macro_export]
macro_rules! on_stores_with_faults {
    ([$($module:ident: $backend:ident, $cache:expr);* $(;)?], $cases:tt $(,)?) => {
        $( $crate::on_stores_with_faults!(@variant $module, $backend, $cache, $cases); )*
    };
    (@variant $module:ident, $backend:ident, $cache:expr, [$($name:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let mut faulty = None;
                    let f = $crate::fixture::Fixture::wrapping(
                        $crate::fixture::Backend::$backend,
                        $crate::fixture::flow_policy(),
                        |store| {
                            let wrapped = ::std::sync::Arc::new(
                                $crate::faults::FaultyStore::new(store),
                            );
                            faulty = Some(wrapped.clone());
                            wrapped
                        },
                    )
                    .await
                    .with_stream_cache($cache);
                    super::$name(&f, &faulty.expect("wrapped")).await;
                    f.finish().await;
                }
            )*
        }
    };
}
