//! A checkpointed subscription to the event feed, for read models: the library's own and a
//! host's. It reads the feed in order from its checkpoint, hands each event to a
//! [`Projection`], and moves the checkpoint after each batch, so that after a restart it
//! resumes where it stood.
//!
//! Delivery is at least once across a crash: the events between the last saved checkpoint and
//! the crash are handed over again. Within a checkpoint each event is handed over once, in feed
//! order; a projection that keeps its state in the same database as the checkpoint, or that
//! records the positions it applied (every event carries its `position`), is exactly-once.

use std::sync::Arc;

use async_trait::async_trait;

use crate::checkpoint::CheckpointStore;
use crate::error::Error;
use crate::payload::EventPayload;
use crate::ports::PortError;
use crate::store::{EventStore, RecordedEvent};

/// What a subscription feeds: a read model built from events.
#[async_trait]
pub trait Projection<E>: Send {
    /// Applies one event of the feed. An error stops the subscription's pass before the
    /// checkpoint moves past the event, so the next pass hands it over again.
    async fn apply(&mut self, event: &RecordedEvent<E>) -> Result<(), PortError>;
}

/// A named reader of the store's feed that remembers how far it read.
///
/// ```
/// use std::sync::Arc;
/// use otp_sms_core::*;
///
/// /// A read model of a host's: how many phones were verified.
/// struct Verifications(u64);
///
/// #[async_trait]
/// impl Projection<Event> for Verifications {
///     async fn apply(&mut self, event: &RecordedEvent<Event>) -> Result<(), PortError> {
///         if matches!(event.event, Event::Verified(_)) {
///             self.0 += 1;
///         }
///         Ok(())
///     }
/// }
///
/// async fn refresh(
///     store: Arc<dyn EventStore<Event>>,
///     checkpoints: Arc<dyn CheckpointStore>,
///     model: &mut Verifications,
/// ) -> Result<u64, Error> {
///     Subscription::new("verifications", store, checkpoints)
///         .catch_up(model)
///         .await
/// }
/// ```
pub struct Subscription<E> {
    name: String,
    store: Arc<dyn EventStore<E>>,
    checkpoints: Arc<dyn CheckpointStore>,
    batch: usize,
}

impl<E: EventPayload> Subscription<E> {
    /// How many events a pass reads at a time, and between two checkpoints, by default.
    pub const DEFAULT_BATCH: usize = 500;

    /// The subscription `name` to `store`'s feed, its checkpoint in `checkpoints`.
    pub fn new(
        name: impl Into<String>,
        store: Arc<dyn EventStore<E>>,
        checkpoints: Arc<dyn CheckpointStore>,
    ) -> Self {
        Self {
            name: name.into(),
            store,
            checkpoints,
            batch: Self::DEFAULT_BATCH,
        }
    }

    /// The same subscription reading `batch` events at a time (at least 1): the checkpoint
    /// moves after each batch.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// The subscription's name: its checkpoint's key.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Hands `projection` every event after the checkpoint, in feed order, moving the
    /// checkpoint after each batch, until the feed has no more; returns how many events it
    /// handed over. A projection's error stops the pass at that event (the events before it
    /// in the batch are handed over again by the next pass, as the checkpoint did not move).
    pub async fn catch_up<P: Projection<E> + ?Sized>(
        &self,
        projection: &mut P,
    ) -> Result<u64, Error> {
        let mut handled = 0;
        let mut at = self.checkpoints.load(&self.name).await?;
        loop {
            let events = self.store.read_all(at, self.batch).await?;
            let Some(last) = events.last().map(|e| e.position) else {
                return Ok(handled);
            };
            for event in &events {
                projection.apply(event).await?;
            }
            self.checkpoints.save(&self.name, last).await?;
            handled += events.len() as u64;
            at = last;
            if events.len() < self.batch {
                return Ok(handled);
            }
        }
    }
}
