//! The checkpoint store conformance suite: what every [`CheckpointStore`] must do, and a
//! [`Subscription`] over it.
//!
//! The [`checkpoint_conformance_tests!`](crate::checkpoint_conformance_tests) macro turns
//! every case into a `#[test]`, each with a time-out that names the case.
//!
//! Decisions the suite pins (see `docs/event-store.md`, subscriptions):
//! - a subscription that never saved stands at 0;
//! - a save moves its subscription's checkpoint forward only; names never mix;
//! - of saves that race, the furthest stands;
//! - a subscription over the store resumes after its checkpoint: a second pass, or a pass of a
//!   new subscription of the same name (a restart), hands over only what came after.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use otp_sms_core::{
    Append, CheckpointStore, Event, EventStore, ExpectedVersion, InstanceId, NewEvent,
    OrganizationId, PortError, PrincipalId, Projection, RecordedEvent, Removed, StreamId,
    Subscription,
};

/// Makes fresh, empty checkpoint stores, each with an event store of its own to subscribe to.
#[async_trait]
pub trait CheckpointStoreFactory: Send + Sync {
    /// The store under test.
    type Store: CheckpointStore + 'static;
    /// A fresh, empty checkpoint store, and a fresh event store beside it.
    async fn create(&self) -> (Self::Store, Arc<dyn EventStore<Event>>);
    /// Called after a case passed; drop the schema here.
    async fn dispose(&self, _store: Arc<Self::Store>) {}
    /// How long one case may take, creation and disposal included, before it fails as hung.
    fn case_timeout(&self) -> Duration {
        crate::runner::DEFAULT_CASE_TIMEOUT
    }
}

/// Generates one `#[test]` (see [`crate::runner::run_case`]) per checkpoint conformance case
/// for a [`CheckpointStoreFactory`].
#[macro_export]
macro_rules! checkpoint_conformance_tests {
    ($factory:expr) => {
        $crate::checkpoint_conformance_tests!(@cases $factory;
            a_subscription_that_never_saved_stands_at_zero,
            a_checkpoint_moves_forward_only_and_names_never_mix,
            of_racing_saves_the_furthest_stands,
            a_subscription_resumes_after_its_checkpoint,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let factory = $factory;
                let limit = $crate::checkpoints::CheckpointStoreFactory::case_timeout(&factory);
                $crate::runner::run_case("checkpoints", stringify!($case), limit, move || async move {
                    let (store, events) = $crate::checkpoints::CheckpointStoreFactory::create(&factory).await;
                    let store = ::std::sync::Arc::new(store);
                    $crate::checkpoints::$case(::std::sync::Arc::clone(&store), events).await;
                    $crate::checkpoints::CheckpointStoreFactory::dispose(&factory, store).await;
                });
            }
        )*
    };
}

/// A subscription that never saved stands at 0.
pub async fn a_subscription_that_never_saved_stands_at_zero<S: CheckpointStore>(
    store: Arc<S>,
    _: Arc<dyn EventStore<Event>>,
) {
    assert_eq!(store.load("never").await.expect("load"), 0);
}

/// A save moves its checkpoint forward; one behind it changes nothing; names never mix.
pub async fn a_checkpoint_moves_forward_only_and_names_never_mix<S: CheckpointStore>(
    store: Arc<S>,
    _: Arc<dyn EventStore<Event>>,
) {
    store.save("a", 10).await.expect("save");
    assert_eq!(store.load("a").await.expect("load"), 10);
    store.save("a", 3).await.expect("save behind");
    assert_eq!(store.load("a").await.expect("load"), 10, "moved back");
    store.save("a", 11).await.expect("save");
    assert_eq!(store.load("a").await.expect("load"), 11);
    assert_eq!(store.load("b").await.expect("load"), 0, "names mix");
    store.save("b", 2).await.expect("save");
    assert_eq!(store.load("a").await.expect("load"), 11);
    assert_eq!(store.load("b").await.expect("load"), 2);
    // Names are compared exactly.
    assert_eq!(store.load("A").await.expect("load"), 0);
}

/// Of saves that race on one name, the furthest stands.
pub async fn of_racing_saves_the_furthest_stands<S: CheckpointStore + 'static>(
    store: Arc<S>,
    _: Arc<dyn EventStore<Event>>,
) {
    let saves: Vec<_> = (1..=32u64)
        .map(|position| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.save("raced", position * 7 % 33).await })
        })
        .collect();
    for save in saves {
        save.await.expect("joined").expect("save");
    }
    assert_eq!(store.load("raced").await.expect("load"), 32);
}

/// Counts what a subscription hands over, and checks its order.
#[derive(Default)]
struct Seen(Vec<u64>);

#[async_trait]
impl Projection<Event> for Seen {
    async fn apply(&mut self, event: &RecordedEvent<Event>) -> Result<(), PortError> {
        if let Some(last) = self.0.last() {
            assert!(event.position > *last, "out of feed order");
        }
        self.0.push(event.position);
        Ok(())
    }
}

async fn append_removals(events: &Arc<dyn EventStore<Event>>, streams: std::ops::Range<u32>) {
    for i in streams {
        let stream = StreamId::new(
            InstanceId::parse("instance", "conformance").expect("valid"),
            "user.otp_sms",
            format!("subscribed-{i}"),
        );
        let event = NewEvent {
            event: Event::Removed(Removed {}),
            creator: PrincipalId::parse("principal", "p").expect("valid"),
            owner: OrganizationId::parse("organization", "o").expect("valid"),
        };
        events
            .append(Append::new(stream, ExpectedVersion::NoStream, vec![event]))
            .await
            .expect("append");
    }
}

/// A subscription hands over the feed in order, in batches, moving its checkpoint; a second
/// pass, or a new subscription of the same name after a restart, hands over only what came
/// after the checkpoint; another name starts from the beginning.
pub async fn a_subscription_resumes_after_its_checkpoint<S: CheckpointStore + 'static>(
    store: Arc<S>,
    events: Arc<dyn EventStore<Event>>,
) {
    let checkpoints: Arc<dyn CheckpointStore> = store.clone();
    append_removals(&events, 0..7).await;
    let subscription =
        Subscription::new("phones", Arc::clone(&events), Arc::clone(&checkpoints)).with_batch(3);
    let mut first = Seen::default();
    assert_eq!(subscription.catch_up(&mut first).await.expect("pass"), 7);
    assert_eq!(first.0.len(), 7);
    let last = *first.0.last().expect("seen");
    assert_eq!(store.load("phones").await.expect("load"), last);
    assert_eq!(subscription.catch_up(&mut first).await.expect("pass"), 0);

    append_removals(&events, 7..9).await;
    // A restart: a new subscription of the same name, a new read model.
    let restarted = Subscription::new("phones", Arc::clone(&events), Arc::clone(&checkpoints));
    let mut after = Seen::default();
    assert_eq!(restarted.catch_up(&mut after).await.expect("pass"), 2);
    assert!(
        after.0.iter().all(|p| *p > last),
        "{:?} after {last}",
        after.0
    );

    let other = Subscription::new("other", events, checkpoints);
    let mut all = Seen::default();
    assert_eq!(other.catch_up(&mut all).await.expect("pass"), 9);
}
