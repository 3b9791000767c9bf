//! The conformance runner against broken stores: a store that hangs or spins fails its case
//! within the factory's time-out, with a message that names the case, instead of stalling the
//! suite.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use otp_sms_core::{
    Append, AppendOutcome, EventStore, OutboxMessage, OutboxStats, Recorded, StoreError, StreamId,
};
use otp_sms_memory::MemoryStore;
use otp_sms_testkit::{async_trait, StoreFactory, TestEvent};

/// How a [`Broken`] store misbehaves in `fetch_outbox`.
#[derive(Clone, Copy)]
enum Fault {
    /// Never answers.
    Hangs,
    /// Ignores the lease: every message is handed out again at once, so consumers that drain
    /// the outbox loop forever without ever waiting.
    IgnoresLeases,
}

/// The in-memory store with one fault in its outbox.
struct Broken {
    inner: MemoryStore<TestEvent>,
    fault: Fault,
}

#[async_trait]
impl EventStore<TestEvent> for Broken {
    async fn read_stream(&self, stream: &StreamId) -> Result<Recorded<TestEvent>, StoreError> {
        self.inner.read_stream(stream).await
    }
    async fn append(&self, append: Append<TestEvent>) -> Result<AppendOutcome, StoreError> {
        self.inner.append(append).await
    }
    async fn read_all(&self, after: u64, limit: usize) -> Result<Recorded<TestEvent>, StoreError> {
        self.inner.read_all(after, limit).await
    }
    async fn fetch_outbox(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        match self.fault {
            Fault::Hangs => std::future::pending().await,
            // Once the test has its answer, the outbox looks empty so the left-behind case ends.
            Fault::IgnoresLeases if RELEASED.load(Ordering::Relaxed) => Ok(Vec::new()),
            Fault::IgnoresLeases => {
                let _ = lease;
                self.inner.fetch_outbox(limit, Duration::ZERO).await
            }
        }
    }
    async fn delete_outbox(&self, id: uuid::Uuid) -> Result<bool, StoreError> {
        self.inner.delete_outbox(id).await
    }
    async fn retry_outbox(&self, id: uuid::Uuid, after: Duration) -> Result<bool, StoreError> {
        self.inner.retry_outbox(id, after).await
    }
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.inner.outbox_stats().await
    }
}

struct BrokenFactory(Fault);

/// Set when the spinning case has failed: its store then lets it end.
static RELEASED: AtomicBool = AtomicBool::new(false);

const LIMIT: Duration = Duration::from_secs(2);

#[async_trait]
impl StoreFactory for BrokenFactory {
    type Store = Broken;
    async fn create(&self) -> Broken {
        Broken {
            inner: MemoryStore::new(),
            fault: self.0,
        }
    }
    fn case_timeout(&self) -> Duration {
        LIMIT
    }
}

/// Runs one case as the macro does and returns its panic message and how long it took.
fn run(
    fault: Fault,
    name: &'static str,
    case: fn(Arc<Broken>) -> CaseFuture,
) -> (String, Duration) {
    let started = Instant::now();
    let result = std::panic::catch_unwind(|| {
        let factory = BrokenFactory(fault);
        let limit = factory.case_timeout();
        otp_sms_testkit::runner::run_case("store", name, limit, move || async move {
            let store = Arc::new(factory.create().await);
            case(store).await;
        });
    });
    let message = match result {
        Ok(()) => panic!("the broken store passed `{name}`"),
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    (message, started.elapsed())
}

type CaseFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

#[test]
fn a_store_that_never_answers_fails_the_case_within_its_time_out() {
    let (message, took) = run(Fault::Hangs, "outbox_one_consumer_at_a_time", |store| {
        Box::pin(otp_sms_testkit::conformance::outbox_one_consumer_at_a_time(
            store,
        ))
    });
    assert!(
        message.contains("store conformance case `outbox_one_consumer_at_a_time` did not finish"),
        "{message}"
    );
    assert!(
        took >= LIMIT && took < LIMIT + Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
fn a_store_that_ignores_leases_fails_the_race_case_instead_of_spinning_forever() {
    let (message, took) = run(
        Fault::IgnoresLeases,
        "outbox_concurrent_consumers_never_share",
        |store| {
            Box::pin(otp_sms_testkit::conformance::outbox_concurrent_consumers_never_share(store))
        },
    );
    assert!(
        message.contains("`outbox_concurrent_consumers_never_share` did not finish within 2s"),
        "{message}"
    );
    assert!(
        took >= LIMIT && took < LIMIT + Duration::from_secs(2),
        "{took:?}"
    );
    RELEASED.store(true, Ordering::Relaxed);
}
