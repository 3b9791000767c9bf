//! The event store conformance suite.
//!
//! Every case is a public async function taking a fresh, empty store. The
//! [`store_conformance_tests!`](crate::store_conformance_tests) macro turns all of them into
//! `#[test]`s, each on a runtime of its own with a time-out that names it, for a [`StoreFactory`], so a store author writes:
//!
//! ```
//! // tests/conformance.rs of a store crate, with otp-sms-testkit as its only dev-dependency.
//! use otp_sms_testkit::{StoreFactory, TestEvent};
//!
//! struct MyFactory;
//!
//! #[otp_sms_testkit::async_trait]
//! impl StoreFactory for MyFactory {
//!     // Your store here; the in-memory one stands in for it.
//!     type Store = otp_sms_memory::MemoryStore<TestEvent>;
//!     async fn create(&self) -> Self::Store {
//!         otp_sms_memory::MemoryStore::new()
//!     }
//! }
//!
//! otp_sms_testkit::store_conformance_tests!(MyFactory);
//! # fn main() {}
//! ```
//!
//! Decisions the suite pins (see `docs/event-store.md`):
//! - an append with no events only checks the version: it creates no stream, returns the
//!   current version, and still conflicts on a wrong expectation;
//! - `Exact(0)` means the same as `NoStream`;
//! - a duplicate outbox id makes the whole append fail with nothing written, as
//!   [`StoreError::Internal`] (a bug of the writer, not a conflict to retry);
//! - a refused append is [`StoreError::Conflict`] when the version did not match, whatever else
//!   was wrong with it.
//!
//! The errors each case expects: a wrong expected version is [`StoreError::Conflict`] naming
//! the stream, the expectation and the actual version; a duplicate outbox message id is
//! [`StoreError::Internal`]; every other case expects success. A store that hangs fails the
//! case after [`StoreFactory::case_timeout`] with the case's name.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use otp_sms_core::{
    Append, CodecError, CommandId, EventPayload, EventStore, ExpectedVersion, InstanceId, NewEvent,
    NewOutboxMessage, OrganizationId, PrincipalId, Recorded, StoreError, StreamId,
};
use serde_json::json;
use uuid::Uuid;

/// The event type the suite writes: any type name and any JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct TestEvent {
    /// The type name.
    pub kind: String,
    /// The payload.
    pub body: serde_json::Value,
}

impl EventPayload for TestEvent {
    fn event_type(&self) -> &str {
        &self.kind
    }
    fn revision(&self) -> u16 {
        1
    }
    fn to_json(&self) -> Result<serde_json::Value, CodecError> {
        Ok(self.body.clone())
    }
    fn from_json(
        event_type: &str,
        _revision: u16,
        payload: serde_json::Value,
    ) -> Result<Self, CodecError> {
        Ok(Self {
            kind: event_type.to_owned(),
            body: payload,
        })
    }
}

/// Makes fresh, empty stores for the suite: each call a store of its own, isolated from every
/// other (its own schema or database), so cases run in parallel.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    /// The store under test.
    type Store: EventStore<TestEvent> + 'static;
    /// A fresh, empty store.
    async fn create(&self) -> Self::Store;
    /// Called after a case passed; drop the schema or database here.
    async fn dispose(&self, _store: Arc<Self::Store>) {}
    /// How long one case may take, creation and disposal included, before it fails as hung.
    fn case_timeout(&self) -> Duration {
        crate::runner::DEFAULT_CASE_TIMEOUT
    }
}

/// Generates one `#[test]` per conformance case for a [`StoreFactory`] expression (evaluated
/// once per case; it must be `'static`). Each case runs on a runtime of its own and fails,
/// naming itself, after [`StoreFactory::case_timeout`] (see [`crate::runner::run_case`]). The
/// host needs no dependency beyond this crate for the generated tests.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@cases $factory;
            read_your_writes,
            stream_order_and_sequences,
            feed_order_and_paging,
            expected_version_no_stream,
            expected_version_exact,
            expected_version_any,
            failed_append_writes_nothing,
            streams_never_mix,
            concurrent_appends_have_one_winner,
            a_conflict_fails_only_its_own_append,
            concurrent_reads_agree,
            feed_never_skips_under_concurrent_writers,
            one_mebibyte_payload,
            unicode_and_long_ids,
            empty_append_checks_version_only,
            outbox_only_if_committed,
            outbox_one_consumer_at_a_time,
            outbox_concurrent_consumers_never_share,
            outbox_deleted_never_returns,
            a_command_is_recorded_once_per_stream,
            outbox_retry_hides_a_message_until_its_delay,
            outbox_instances_take_turns,
            outbox_stats_count_waiting_and_leased_messages,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let factory = $factory;
                let limit = $crate::StoreFactory::case_timeout(&factory);
                $crate::runner::run_case("store", stringify!($case), limit, move || async move {
                    let store = ::std::sync::Arc::new($crate::StoreFactory::create(&factory).await);
                    $crate::conformance::$case(::std::sync::Arc::clone(&store)).await;
                    $crate::StoreFactory::dispose(&factory, store).await;
                });
            }
        )*
    };
}

fn instance(id: &str) -> InstanceId {
    InstanceId::parse("instance", id).expect("valid test instance")
}

fn stream(id: &str) -> StreamId {
    StreamId::new(instance("inst-1"), "test.aggregate", id)
}

fn event(kind: &str, n: usize) -> NewEvent<TestEvent> {
    NewEvent {
        event: TestEvent {
            kind: kind.to_owned(),
            body: json!({ "n": n }),
        },
        creator: PrincipalId::parse("creator", "tester").expect("valid"),
        owner: OrganizationId::parse("owner", "org-1").expect("valid"),
    }
}

fn events(n: usize) -> Vec<NewEvent<TestEvent>> {
    (1..=n).map(|i| event("test.happened", i)).collect()
}

fn append_of(
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent<TestEvent>>,
) -> Append<TestEvent> {
    Append::new(stream.clone(), expected, events)
}

fn message(n: usize) -> NewOutboxMessage {
    NewOutboxMessage {
        id: Uuid::now_v7(),
        payload: json!({ "message": n }),
    }
}

fn assert_conflict(
    result: Result<otp_sms_core::AppendOutcome, StoreError>,
    stream: &StreamId,
    expected: ExpectedVersion,
    actual: u64,
) {
    match result {
        Err(StoreError::Conflict {
            stream: s,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(&s, stream, "conflict names the stream");
            assert_eq!(e, expected, "conflict carries the expected version");
            assert_eq!(a, actual, "conflict carries the actual version");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

async fn all_events<S: EventStore<TestEvent>>(store: &S) -> Recorded<TestEvent> {
    store.read_all(0, usize::MAX).await.expect("read_all")
}

/// An appended event is read back at once, whole, with its metadata.
pub async fn read_your_writes<S: EventStore<TestEvent>>(store: Arc<S>) {
    let s = stream("ryw");
    let outcome = store
        .append(append_of(&s, ExpectedVersion::NoStream, events(1)))
        .await
        .expect("append");
    assert_eq!(outcome.version, 1);
    assert_eq!(outcome.recorded.len(), 1);
    let read = store.read_stream(&s).await.expect("read");
    assert_eq!(read.len(), 1);
    let e = &read[0];
    assert_eq!(e.stream, s);
    assert_eq!(e.sequence, 1);
    assert_eq!(e.position, outcome.recorded[0].position);
    assert_eq!(e.created_at, outcome.recorded[0].created_at);
    assert_eq!(e.creator.as_str(), "tester");
    assert_eq!(e.owner.as_str(), "org-1");
    assert_eq!(e.event.kind, "test.happened");
    assert_eq!(e.event.body, json!({"n": 1}));
    assert!(store
        .read_stream(&stream("other"))
        .await
        .unwrap()
        .is_empty());
}

/// Sequences are 1, 2, 3, … without gaps, across appends, in the order written.
pub async fn stream_order_and_sequences<S: EventStore<TestEvent>>(store: Arc<S>) {
    let s = stream("order");
    store
        .append(append_of(&s, ExpectedVersion::NoStream, events(3)))
        .await
        .unwrap();
    let outcome = store
        .append(append_of(&s, ExpectedVersion::Exact(3), events(2)))
        .await
        .unwrap();
    assert_eq!(outcome.version, 5);
    assert_eq!(
        outcome
            .recorded
            .iter()
            .map(|m| m.sequence)
            .collect::<Vec<_>>(),
        vec![4, 5]
    );
    let read = store.read_stream(&s).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    let ns: Vec<_> = read.iter().map(|e| e.event.body["n"].clone()).collect();
    assert_eq!(ns, vec![json!(1), json!(2), json!(3), json!(1), json!(2)]);
    assert!(read.windows(2).all(|w| w[0].position < w[1].position));
    assert!(read.windows(2).all(|w| w[0].created_at <= w[1].created_at));
}

/// The feed holds every stream's events in position order; `after` and `limit` page it.
pub async fn feed_order_and_paging<S: EventStore<TestEvent>>(store: Arc<S>) {
    for i in 0..5 {
        let s = stream(&format!("feed-{i}"));
        store
            .append(append_of(&s, ExpectedVersion::NoStream, events(2)))
            .await
            .unwrap();
    }
    let all = all_events(&*store).await;
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    // Events of one append are adjacent and in order.
    for pair in all.chunks(2) {
        assert_eq!(pair[0].stream, pair[1].stream);
        assert_eq!((pair[0].sequence, pair[1].sequence), (1, 2));
    }
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = last.position;
        paged.extend(page);
    }
    assert_eq!(paged, all);
    assert!(store
        .read_all(all.last().unwrap().position, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store.read_all(0, 0).await.unwrap().is_empty());
}

/// `NoStream` admits only a stream without events and reports the actual version otherwise.
pub async fn expected_version_no_stream<S: EventStore<TestEvent>>(store: Arc<S>) {
    let s = stream("no-stream");
    store
        .append(append_of(&s, ExpectedVersion::NoStream, events(2)))
        .await
        .unwrap();
    let again = store
        .append(append_of(&s, ExpectedVersion::NoStream, events(1)))
        .await;
    assert_conflict(again, &s, ExpectedVersion::NoStream, 2);
    let zero = store
        .append(append_of(&s, ExpectedVersion::Exact(0), events(1)))
        .await;
    assert_conflict(zero, &s, ExpectedVersion::Exact(0), 2);
    let fresh = stream("exact-zero");
    store
        .append(append_of(&fresh, ExpectedVersion::Exact(0), events(1)))
        .await
        .expect("Exact(0) on a new stream is NoStream");
}

/// `Exact(n)` admits only version n: stale and ahead expectations conflict, with details,
/// including versions of more than one digit.
pub async fn expected_version_exact<S: EventStore<TestEvent>>(store: Arc<S>) {
    let s = stream("exact");
    store
        .append(append_of(&s, ExpectedVersion::NoStream, events(12)))
        .await
        .unwrap();
    let stale = store
        .append(append_of(&s, ExpectedVersion::Exact(11), events(1)))
        .await;
    assert_conflict(stale, &s, ExpectedVersion::Exact(11), 12);
    let ahead = store
        .append(append_of(&s, ExpectedVersion::Exact(13), events(1)))
        .await;
    assert_conflict(ahead, &s, ExpectedVersion::Exact(13), 12);
    let missing = stream("exact-missing");
    let on_missing = store
        .append(append_of(&missing, ExpectedVersion::Exact(1), events(1)))
        .await;
    assert_conflict(on_missing, &missing, ExpectedVersion::Exact(1), 0);
    let ok = store
        .append(append_of(&s, ExpectedVersion::Exact(12), events(1)))
        .await
        .unwrap();
    assert_eq!(ok.version, 13);
    assert_eq!(store.read_stream(&s).await.unwrap().len(), 13);
}

/// `Any` appends whatever the version, to new and existing streams.
pub async fn expected_version_any<S: EventStore<TestEvent>>(store: Arc<S>) {
    let s = stream("any");
    let first = store
        .append(append_of(&s, ExpectedVersion::Any, events(2)))
        .await
        .unwrap();
    assert_eq!(first.version, 2);
    let second = store
        .append(append_of(&s, ExpectedVersion::Any, events(1)))
        .await
        .unwrap();
    assert_eq!(second.version, 3);
    assert_eq!(second.recorded[0].sequence, 3);
}

/// A refused append of several events and outbox messages writes none of them.
pub async fn failed_append_writes_nothing<S: EventStore<TestEvent>>(store: Arc<S>) {
    let s = stream("atomic");
    store
        .append(append_of(&s, ExpectedVersion::NoStream, events(1)))
        .await
        .unwrap();
    let before = all_events(&*store).await;
    let mut refused = append_of(&s, ExpectedVersion::Exact(0), events(5));
    refused.outbox = vec![message(1), message(2)];
    assert!(store.append(refused).await.is_err());
    // A duplicate outbox id fails the whole append too, events included.
    let dup = message(3);
    let mut duplicate = append_of(&s, ExpectedVersion::Exact(1), events(3));
    duplicate.outbox = vec![dup.clone(), dup];
    assert!(matches!(
        store.append(duplicate).await,
        Err(StoreError::Internal(_))
    ));
    assert_eq!(all_events(&*store).await, before);
    assert_eq!(store.read_stream(&s).await.unwrap().len(), 1);
    assert!(store
        .fetch_outbox(10, Duration::from_secs(30))
        .await
        .unwrap()
        .is_empty());
    // The stream still takes the next append at version 1.
    store
        .append(append_of(&s, ExpectedVersion::Exact(1), events(1)))
        .await
        .unwrap();
}

/// Equal aggregate ids in different instances or aggregate types are different streams.
pub async fn streams_never_mix<S: EventStore<TestEvent>>(store: Arc<S>) {
    let a = StreamId::new(instance("inst-a"), "type.one", "same-id");
    let b = StreamId::new(instance("inst-b"), "type.one", "same-id");
    let c = StreamId::new(instance("inst-a"), "type.two", "same-id");
    for (i, s) in [&a, &b, &c].into_iter().enumerate() {
        store
            .append(append_of(s, ExpectedVersion::NoStream, events(i + 1)))
            .await
            .expect("each is a new stream");
    }
    for (i, s) in [&a, &b, &c].into_iter().enumerate() {
        let read = store.read_stream(s).await.unwrap();
        assert_eq!(read.len(), i + 1);
        assert!(read.iter().all(|e| &e.stream == s));
    }
}

/// Many writers with the same expectation: exactly one wins, the others conflict.
pub async fn concurrent_appends_have_one_winner<S: EventStore<TestEvent> + 'static>(store: Arc<S>) {
    let s = stream("race");
    store
        .append(append_of(&s, ExpectedVersion::NoStream, events(1)))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&store);
            let s = s.clone();
            tokio::spawn(async move {
                store
                    .append(append_of(&s, ExpectedVersion::Exact(1), events(2)))
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(outcome) => {
                wins += 1;
                assert_eq!(outcome.version, 3);
            }
            Err(StoreError::Conflict { actual, .. }) => assert_eq!(actual, 3),
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.read_stream(&s).await.unwrap().len(), 3);
}

/// Reads in flight together (a store may answer them with one query) each get exactly their
/// own stream, also when many ask for the same one.
pub async fn concurrent_reads_agree<S: EventStore<TestEvent> + 'static>(store: Arc<S>) {
    let hot = stream("hot");
    store
        .append(append_of(&hot, ExpectedVersion::NoStream, events(3)))
        .await
        .unwrap();
    for i in 0..5 {
        let s = stream(&format!("cold-{i}"));
        store
            .append(append_of(&s, ExpectedVersion::NoStream, events(i + 1)))
            .await
            .unwrap();
    }
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let (s, expected) = match i % 4 {
                    0 | 1 => (stream("hot"), 3),
                    2 => (stream(&format!("cold-{}", i % 5)), i % 5 + 1),
                    _ => (stream("missing"), 0),
                };
                let read = store.read_stream(&s).await.expect("read");
                (s, expected, read)
            })
        })
        .collect();
    for task in tasks {
        let (s, expected, read) = task.await.expect("task");
        assert_eq!(read.len(), expected, "{s:?}");
        assert!(read.iter().all(|e| e.stream == s));
        assert!(read
            .iter()
            .enumerate()
            .all(|(i, e)| e.sequence == i as u64 + 1));
    }
}

/// Appends in flight together (a store may write them in one transaction) succeed or fail
/// each on its own: stale expectations conflict, the others are written.
pub async fn a_conflict_fails_only_its_own_append<S: EventStore<TestEvent> + 'static>(
    store: Arc<S>,
) {
    let busy = stream("busy");
    store
        .append(append_of(&busy, ExpectedVersion::NoStream, events(2)))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            let busy = busy.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    let s = stream(&format!("fresh-{i}"));
                    let mut a = append_of(&s, ExpectedVersion::NoStream, events(2));
                    a.outbox = vec![message(i)];
                    (true, store.append(a).await)
                } else {
                    let mut a = append_of(&busy, ExpectedVersion::Exact(1), events(1));
                    a.outbox = vec![message(i)];
                    (false, store.append(a).await)
                }
            })
        })
        .collect();
    for task in tasks {
        match task.await.expect("task") {
            (true, result) => assert_eq!(result.expect("fresh stream").version, 2),
            (false, result) => assert!(matches!(
                result,
                Err(StoreError::Conflict { actual: 2, .. })
            )),
        }
    }
    assert_eq!(all_events(&*store).await.len(), 2 + 10 * 2);
    assert_eq!(store.read_stream(&busy).await.unwrap().len(), 2);
    let outbox = store
        .fetch_outbox(100, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(outbox.len(), 10, "only the written appends' messages");
}

/// A reader that pages through the feed while writers append sees every event exactly once,
/// in increasing position order, even though writers commit out of order.
pub async fn feed_never_skips_under_concurrent_writers<S: EventStore<TestEvent> + 'static>(
    store: Arc<S>,
) {
    const WRITERS: usize = 8;
    const APPENDS: usize = 40;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for a in 0..APPENDS {
                    let s = stream(&format!("feed-writer-{w}-{a}"));
                    store
                        .append(append_of(&s, ExpectedVersion::NoStream, events(2)))
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = Arc::clone(&store);
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = 0;
            loop {
                // Read `done` before the page: an empty page after the writers finished means
                // the feed is drained.
                let finished = done.load(Ordering::SeqCst);
                let page = store.read_all(after, 7).await.expect("read_all");
                match page.last() {
                    Some(last) => after = last.position,
                    None if finished => break seen,
                    None => tokio::task::yield_now().await,
                }
                seen.extend(
                    page.iter()
                        .map(|e| (e.position, e.stream.clone(), e.sequence)),
                );
            }
        })
    };
    for w in writers {
        w.await.expect("writer");
    }
    done.store(true, Ordering::SeqCst);
    let seen = reader.await.expect("reader");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "positions increase"
    );
    let all: Vec<_> = all_events(&*store)
        .await
        .iter()
        .map(|e| (e.position, e.stream.clone(), e.sequence))
        .collect();
    assert_eq!(all.len(), WRITERS * APPENDS * 2);
    assert_eq!(seen, all, "the paging reader saw exactly the feed");
}

/// A 1 MiB payload is stored and read back intact.
pub async fn one_mebibyte_payload<S: EventStore<TestEvent>>(store: Arc<S>) {
    let s = stream("big");
    let blob: String = (0..1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut e = event("test.big", 0);
    e.event.body = json!({ "blob": blob });
    store
        .append(append_of(&s, ExpectedVersion::NoStream, vec![e.clone()]))
        .await
        .unwrap();
    let read = store.read_stream(&s).await.unwrap();
    assert_eq!(read[0].event, e.event);
    assert_eq!(all_events(&*store).await[0].event, e.event);
}

/// Ids of 200 characters, multi-byte characters and SQL-like text round-trip unchanged.
pub async fn unicode_and_long_ids<S: EventStore<TestEvent>>(store: Arc<S>) {
    let ids = [
        "x".repeat(200),
        "🦀".repeat(200),
        "Zürich-東京-Ελλάδα".to_owned(),
        "'; DROP TABLE events; --".to_owned(),
        "with \"quotes\" and \\backslashes\\".to_owned(),
    ];
    for id in &ids {
        let s = StreamId::new(
            InstanceId::parse("instance", id.clone()).unwrap(),
            "type.ünïcode",
            id.clone(),
        );
        let mut e = event("test.ünïcode.🦀", 1);
        e.creator = PrincipalId::parse("creator", id.clone()).unwrap();
        e.owner = OrganizationId::parse("owner", id.clone()).unwrap();
        e.event.body = json!({ "text": id, "lines": "one\ntwo\tthree" });
        store
            .append(append_of(&s, ExpectedVersion::NoStream, vec![e.clone()]))
            .await
            .unwrap();
        let read = store.read_stream(&s).await.unwrap();
        assert_eq!(read.len(), 1, "{id}");
        assert_eq!(read[0].stream, s);
        assert_eq!(read[0].event, e.event);
        assert_eq!(read[0].creator, e.creator);
        assert_eq!(read[0].owner, e.owner);
    }
}

/// An append without events only checks the version: it writes nothing, creates no stream,
/// returns the current version and conflicts on a wrong expectation.
pub async fn empty_append_checks_version_only<S: EventStore<TestEvent>>(store: Arc<S>) {
    let s = stream("empty");
    let outcome = store
        .append(append_of(&s, ExpectedVersion::NoStream, vec![]))
        .await
        .unwrap();
    assert_eq!(outcome.version, 0);
    assert!(outcome.recorded.is_empty());
    // No stream was created: NoStream still holds.
    store
        .append(append_of(&s, ExpectedVersion::NoStream, events(2)))
        .await
        .unwrap();
    let ok = store
        .append(append_of(&s, ExpectedVersion::Exact(2), vec![]))
        .await
        .unwrap();
    assert_eq!(ok.version, 2);
    let bad = store
        .append(append_of(&s, ExpectedVersion::Exact(1), vec![]))
        .await;
    assert_conflict(bad, &s, ExpectedVersion::Exact(1), 2);
    assert_eq!(all_events(&*store).await.len(), 2);
}

/// Outbox messages become visible exactly when their append commits.
pub async fn outbox_only_if_committed<S: EventStore<TestEvent>>(store: Arc<S>) {
    let s = stream("outbox-commit");
    let committed = message(1);
    let mut ok = append_of(&s, ExpectedVersion::NoStream, events(1));
    ok.outbox = vec![committed.clone()];
    store.append(ok).await.unwrap();
    let mut refused = append_of(&s, ExpectedVersion::NoStream, events(1));
    refused.outbox = vec![message(2)];
    assert!(store.append(refused).await.is_err());
    let fetched = store
        .fetch_outbox(10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(fetched.len(), 1);
    assert_eq!(fetched[0].id, committed.id);
    assert_eq!(fetched[0].payload, committed.payload);
    assert_eq!(fetched[0].stream, s);
    assert_eq!(fetched[0].attempts, 1);
}

/// A fetched message is leased: nobody else gets it until the lease runs out; then it comes
/// back with its attempt counted.
pub async fn outbox_one_consumer_at_a_time<S: EventStore<TestEvent>>(store: Arc<S>) {
    let s = stream("outbox-lease");
    let mut a = append_of(&s, ExpectedVersion::NoStream, events(1));
    a.outbox = vec![message(1), message(2), message(3)];
    store.append(a).await.unwrap();
    let lease = Duration::from_millis(400);
    let first = store.fetch_outbox(2, lease).await.unwrap();
    assert_eq!(first.len(), 2, "oldest first, up to the limit");
    let second = store.fetch_outbox(10, lease).await.unwrap();
    assert_eq!(second.len(), 1, "leased messages are not handed out again");
    assert!(first.iter().all(|m| m.id != second[0].id));
    assert!(store.fetch_outbox(10, lease).await.unwrap().is_empty());
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let again = store.fetch_outbox(10, lease).await.unwrap();
    assert_eq!(again.len(), 3, "expired leases hand messages out again");
    assert!(again.iter().all(|m| m.attempts == 2));
}

/// Consumers fetching at the same time never get the same message.
pub async fn outbox_concurrent_consumers_never_share<S: EventStore<TestEvent> + 'static>(
    store: Arc<S>,
) {
    let s = stream("outbox-race");
    let mut a = append_of(&s, ExpectedVersion::NoStream, events(1));
    a.outbox = (0..60).map(message).collect();
    store.append(a).await.unwrap();
    let consumers: Vec<_> = (0..6)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let batch = store
                        .fetch_outbox(4, Duration::from_secs(60))
                        .await
                        .expect("fetch");
                    if batch.is_empty() {
                        break got;
                    }
                    got.extend(batch.into_iter().map(|m| m.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in consumers {
        all.extend(c.await.expect("consumer"));
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 60, "every message handed out");
    assert_eq!(unique.len(), 60, "none handed out twice");
}

/// A deleted message is gone for good, even after its lease would have run out.
pub async fn outbox_deleted_never_returns<S: EventStore<TestEvent>>(store: Arc<S>) {
    let s = stream("outbox-delete");
    let mut a = append_of(&s, ExpectedVersion::NoStream, events(1));
    a.outbox = vec![message(1), message(2)];
    store.append(a).await.unwrap();
    let lease = Duration::from_millis(200);
    let fetched = store.fetch_outbox(10, lease).await.unwrap();
    let ids: BTreeSet<_> = fetched.iter().map(|m| m.id).collect();
    assert_eq!(ids.len(), 2);
    let gone = fetched[0].id;
    assert!(store.delete_outbox(gone).await.unwrap());
    assert!(!store.delete_outbox(gone).await.unwrap(), "second delete");
    assert!(!store.delete_outbox(Uuid::now_v7()).await.unwrap());
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let again = store.fetch_outbox(10, lease).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].id, gone);
}

/// Given an append under command `c`, its events (in the stream and in the feed) name `c`;
/// when `c` is appended again to that stream, even with `Any` and even by 10 writers at once,
/// then it is a conflict and nothing is written; `c` on another stream is accepted, and an
/// append without a command records none.
pub async fn a_command_is_recorded_once_per_stream<S: EventStore<TestEvent> + 'static>(
    store: Arc<S>,
) {
    let c = CommandId::generate();
    let s = stream("command");
    let mut first = append_of(&s, ExpectedVersion::NoStream, events(2));
    first.command = Some(c);
    store.append(first).await.unwrap();
    store
        .append(append_of(&s, ExpectedVersion::Exact(2), events(1)))
        .await
        .unwrap();
    let read = store.read_stream(&s).await.unwrap();
    let commands: Vec<Option<CommandId>> = read.iter().map(|r| r.command).collect();
    assert_eq!(commands, vec![Some(c), Some(c), None]);
    let feed = all_events(&*store).await;
    assert_eq!(
        feed.iter().filter(|r| r.command == Some(c)).count(),
        2,
        "the feed names the command too"
    );
    let mut again = append_of(&s, ExpectedVersion::Any, events(1));
    again.command = Some(c);
    assert_conflict(store.append(again).await, &s, ExpectedVersion::Any, 3);
    assert_eq!(store.read_stream(&s).await.unwrap().len(), 3);

    let other = stream("command-other");
    let mut elsewhere = append_of(&other, ExpectedVersion::NoStream, events(1));
    elsewhere.command = Some(c);
    store
        .append(elsewhere)
        .await
        .expect("a command id is unique per stream only");

    let raced = stream("command-raced");
    let d = CommandId::generate();
    let writers: Vec<_> = (0..10)
        .map(|_| {
            let store = Arc::clone(&store);
            let raced = raced.clone();
            tokio::spawn(async move {
                let mut append = append_of(&raced, ExpectedVersion::Any, events(1));
                append.command = Some(d);
                store.append(append).await
            })
        })
        .collect();
    let mut accepted = 0;
    for writer in writers {
        match writer.await.expect("writer") {
            Ok(_) => accepted += 1,
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(store.read_stream(&raced).await.unwrap().len(), 1);
}

/// Given a leased message, when a consumer retries it after 400 ms, then no fetch sees it
/// before, one does after (its attempts counted on), and an unknown id says so.
pub async fn outbox_retry_hides_a_message_until_its_delay<S: EventStore<TestEvent>>(store: Arc<S>) {
    let s = stream("outbox-retry");
    let mut a = append_of(&s, ExpectedVersion::NoStream, events(1));
    let m = message(1);
    let id = m.id;
    a.outbox = vec![m];
    store.append(a).await.unwrap();
    let lease = Duration::from_secs(60);
    assert_eq!(store.fetch_outbox(10, lease).await.unwrap().len(), 1);
    let delay = Duration::from_millis(400);
    assert!(store.retry_outbox(id, delay).await.unwrap());
    assert!(store.fetch_outbox(10, lease).await.unwrap().is_empty());
    tokio::time::sleep(delay + Duration::from_millis(200)).await;
    let again = store.fetch_outbox(10, lease).await.unwrap();
    assert_eq!(again.len(), 1, "back after its delay, not after the lease");
    assert_eq!(again[0].attempts, 2);
    assert!(!store.retry_outbox(Uuid::now_v7(), delay).await.unwrap());
    assert!(store.delete_outbox(id).await.unwrap());
    assert!(!store.retry_outbox(id, delay).await.unwrap());
}

/// Given 6 messages of one instance written before 2 of another, when a consumer fetches 4,
/// then the instances take turns: the first's oldest, the second's oldest, and so on.
pub async fn outbox_instances_take_turns<S: EventStore<TestEvent>>(store: Arc<S>) {
    let busy = StreamId::new(instance("inst-busy"), "test.aggregate", "turns");
    let quiet = StreamId::new(instance("inst-quiet"), "test.aggregate", "turns");
    let mut a = append_of(&busy, ExpectedVersion::NoStream, events(1));
    a.outbox = (1..=6).map(message).collect();
    let busy_ids: Vec<Uuid> = a.outbox.iter().map(|m| m.id).collect();
    store.append(a).await.unwrap();
    let mut b = append_of(&quiet, ExpectedVersion::NoStream, events(1));
    b.outbox = (7..=8).map(message).collect();
    let quiet_ids: Vec<Uuid> = b.outbox.iter().map(|m| m.id).collect();
    store.append(b).await.unwrap();
    let lease = Duration::from_secs(60);
    let got: Vec<Uuid> = store
        .fetch_outbox(4, lease)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(
        got,
        vec![busy_ids[0], quiet_ids[0], busy_ids[1], quiet_ids[1]],
        "instances in turn, each oldest first"
    );
    let rest: Vec<Uuid> = store
        .fetch_outbox(10, lease)
        .await
        .unwrap()
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(rest, busy_ids[2..].to_vec());
}

/// Given an empty outbox, then two messages written one after the other, when one is leased
/// and the older deleted, then the stats count every message not deleted, leased or not, and
/// name the oldest one's time.
pub async fn outbox_stats_count_waiting_and_leased_messages<S: EventStore<TestEvent>>(
    store: Arc<S>,
) {
    let empty = store.outbox_stats().await.unwrap();
    assert_eq!((empty.depth, empty.oldest), (0, None));
    for (n, name) in ["stats-1", "stats-2"].into_iter().enumerate() {
        let mut a = append_of(&stream(name), ExpectedVersion::NoStream, events(1));
        a.outbox = vec![message(n)];
        store.append(a).await.unwrap();
    }
    let leased = store
        .fetch_outbox(1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(leased.len(), 1);
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!(stats.depth, 2, "a leased message still waits");
    assert_eq!(stats.oldest, Some(leased[0].created_at));
    let rest = store
        .fetch_outbox(1, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(store.delete_outbox(leased[0].id).await.unwrap());
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!(stats.depth, 1);
    assert_eq!(stats.oldest, Some(rest[0].created_at));
}
