//! The event store port: streams with optimistic concurrency, a global feed, and a
//! transactional outbox written atomically with the events.
//!
//! The store is generic over the event type ([`EventPayload`]), so the conformance suite can
//! drive it with its own events (1 MiB payloads included) and a store keeps typed events in
//! memory without re-parsing them on every read.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Error;
use crate::ids::{InstanceId, OrganizationId, PrincipalId};

pub use crate::payload::{CodecError, EventPayload};

/// Where an event lives: instance, aggregate type and aggregate id. Streams of different
/// instances or aggregate types never mix, even when the aggregate ids are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    /// The tenant.
    pub instance: InstanceId,
    /// The aggregate type, e.g. [`crate::AGGREGATE_TYPE`] (static: no allocation per stream).
    pub aggregate_type: Cow<'static, str>,
    /// The aggregate's id within its type (shared: cloning it is a reference count).
    pub aggregate_id: Arc<str>,
}

impl StreamId {
    /// A stream id from its three parts.
    pub fn new(
        instance: InstanceId,
        aggregate_type: impl Into<Cow<'static, str>>,
        aggregate_id: impl Into<Arc<str>>,
    ) -> Self {
        Self {
            instance,
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
        }
    }
}

/// A stream's version is the sequence of its last event; 0 means the stream has no events.
pub type Version = u64;

/// What the writer believes the stream's version is (the vocabulary of KurrentDB and friends).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No check: append whatever the version.
    Any,
    /// The stream must have no events.
    NoStream,
    /// The stream's last sequence must be exactly this (`Exact(0)` equals `NoStream`).
    Exact(Version),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies this expectation.
    pub fn admits(self, actual: Version) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => actual == v,
        }
    }
}

/// The id of the command that made an append, recorded with each of its events (at most one
/// append per command and stream): a writer that lost the store's answer (a connection cut
/// after the commit was sent, [`StoreError::Unknown`]) reads the stream and finds out whether
/// its command committed, instead of writing it twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub Uuid);

impl CommandId {
    /// A fresh id: a random UUID (v4). It only has to differ from every other command's on
    /// the same stream; drawn on every call, it reads no clock and takes no shared lock, as a
    /// time-ordered (v7) id would.
    pub fn generate() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An event to append, with who caused it and which organization owns it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent<E> {
    /// The event.
    pub event: E,
    /// The acting principal.
    pub creator: PrincipalId,
    /// The owning organization.
    pub owner: OrganizationId,
}

/// Events as a store hands them out: shared, so that reading a stream copies no event.
pub type Recorded<E> = Vec<Arc<RecordedEvent<E>>>;

/// An event as stored: the event plus its place in the stream and in the global feed. A store
/// builds one with [`RecordedEvent::new`]; fields may be added in a minor release.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RecordedEvent<E> {
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its sequence in the stream: 1, 2, 3, … without gaps.
    pub sequence: Version,
    /// Its position in the global feed: strictly increasing in commit-visible order.
    pub position: u64,
    /// When the store recorded it (the store's clock).
    pub created_at: DateTime<Utc>,
    /// The acting principal.
    pub creator: PrincipalId,
    /// The owning organization.
    pub owner: OrganizationId,
    /// The command whose append wrote it, if the writer named one.
    pub command: Option<CommandId>,
    /// The event.
    pub event: E,
}

impl<E> RecordedEvent<E> {
    /// `new` as recorded in `stream` where `meta` says, by the append of `command`.
    pub fn new(
        stream: StreamId,
        meta: RecordedMeta,
        new: NewEvent<E>,
        command: Option<CommandId>,
    ) -> Self {
        Self {
            stream,
            sequence: meta.sequence,
            position: meta.position,
            created_at: meta.created_at,
            creator: new.creator,
            owner: new.owner,
            command,
            event: new.event,
        }
    }
}

/// A message for the transactional outbox, written only if its append commits.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutboxMessage {
    /// Unique id; the consumer deletes the message by it.
    pub id: Uuid,
    /// The message body, opaque to the store.
    pub payload: serde_json::Value,
}

/// A pending outbox message, leased to the consumer that fetched it. A store builds one with
/// [`OutboxMessage::new`]; fields may be added in a minor release.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct OutboxMessage {
    /// The message id.
    pub id: Uuid,
    /// The stream whose append wrote it.
    pub stream: StreamId,
    /// The message body.
    pub payload: serde_json::Value,
    /// When it was written.
    pub created_at: DateTime<Utc>,
    /// How many times it has been handed out, this time included.
    pub attempts: u32,
}

impl OutboxMessage {
    /// Message `id` of `stream`'s append, written at `created_at`, handed out for the
    /// `attempts`-th time.
    pub fn new(
        id: Uuid,
        stream: StreamId,
        payload: serde_json::Value,
        created_at: DateTime<Utc>,
        attempts: u32,
    ) -> Self {
        Self {
            id,
            stream,
            payload,
            created_at,
            attempts,
        }
    }
}

/// One atomic write: events to one stream and outbox messages, all or nothing. Built with
/// [`Append::new`] and its `with_` methods; fields may be added in a minor release.
///
/// ```
/// use otp_sms_core::{Append, CommandId, Event, ExpectedVersion, StreamId};
/// # fn demo(stream: StreamId) {
/// let append: Append<Event> = Append::new(stream, ExpectedVersion::NoStream, Vec::new())
///     .with_command(CommandId::generate());
/// # let _ = append; }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Append<E> {
    /// The stream to write to.
    pub stream: StreamId,
    /// The version check.
    pub expected: ExpectedVersion,
    /// The events, in order. May be empty: then the append only checks the version (and
    /// writes its outbox messages, if any).
    pub events: Vec<NewEvent<E>>,
    /// Outbox messages committed together with the events.
    pub outbox: Vec<NewOutboxMessage>,
    /// The command this append carries out, recorded with each event. A stream takes at
    /// most one append per command: a second one is refused as a [`StoreError::Conflict`]
    /// and writes nothing.
    pub command: Option<CommandId>,
}

impl<E> Append<E> {
    /// `events` to `stream` if its version is `expected`, with no outbox message and no
    /// command id.
    pub fn new(stream: StreamId, expected: ExpectedVersion, events: Vec<NewEvent<E>>) -> Self {
        Self {
            stream,
            expected,
            events,
            outbox: Vec::new(),
            command: None,
        }
    }

    /// With `outbox` committed together with the events.
    pub fn with_outbox(mut self, outbox: Vec<NewOutboxMessage>) -> Self {
        self.outbox = outbox;
        self
    }

    /// Carrying out command `id` (a stream takes at most one append per command).
    pub fn with_command(mut self, id: CommandId) -> Self {
        self.command = Some(id);
        self
    }
}

/// Where the appended events landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The stream's version after the append.
    pub version: Version,
    /// One entry per appended event, in order.
    pub recorded: Vec<RecordedMeta>,
}

/// Sequence, position and time of one appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedMeta {
    /// Sequence in the stream.
    pub sequence: Version,
    /// Position in the global feed.
    pub position: u64,
    /// The store's time of recording.
    pub created_at: DateTime<Utc>,
}

/// What a store can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The stream was not at the expected version; nothing was written.
    #[error("version conflict on {}/{}: expected {expected:?}, actual {actual}", .stream.aggregate_type, .stream.aggregate_id)]
    Conflict {
        /// The stream.
        stream: StreamId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was refused.
        actual: Version,
    },
    /// The store could not be reached (lost connection, pool timeout); nothing was written.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// An append's outcome is unknown: the connection was lost after the append was sent, so
    /// it may or may not have committed. The writer finds out by reading the stream for its
    /// [`CommandId`].
    #[error("event store outcome unknown: {0}")]
    Unknown(String),
    /// A stored event could not be decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Anything else.
    #[error("event store error: {0}")]
    Internal(String),
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            // Conflicts are retried by the command service; one that escapes is ABORTED.
            StoreError::Conflict { .. } => Error::Aborted,
            StoreError::Unavailable(m) | StoreError::Unknown(m) => Error::Unavailable(m),
            StoreError::Codec(c) => Error::Internal(c.to_string()),
            StoreError::Internal(m) => Error::Internal(m),
        }
    }
}

/// The event store a host plugs in. Every implementation must pass `otp-sms-testkit`'s
/// conformance suite.
#[async_trait]
pub trait EventStore<E: EventPayload>: Send + Sync {
    /// All events of one stream, in sequence order; empty if the stream does not exist.
    async fn read_stream(&self, stream: &StreamId) -> Result<Recorded<E>, StoreError>;

    /// Appends atomically, checking the expected version first. On a mismatch nothing is
    /// written and [`StoreError::Conflict`] carries the expected and actual versions.
    async fn append(&self, append: Append<E>) -> Result<AppendOutcome, StoreError>;

    /// Up to `limit` events of all streams with a position greater than `after`, in position
    /// order. Never skips an event: a reader that resumes from the last position it saw will
    /// see every event that commits later.
    async fn read_all(&self, after: u64, limit: usize) -> Result<Recorded<E>, StoreError>;

    /// Up to `limit` pending outbox messages, leased to this caller for `lease`: no other
    /// caller gets them until the lease runs out or they are deleted. Instances take turns
    /// (each instance's oldest, then each one's second oldest, …), so a burst of one instance
    /// cannot hold back another's codes; within an instance, oldest first.
    async fn fetch_outbox(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError>;

    /// Deletes an outbox message for good. Returns whether it existed.
    async fn delete_outbox(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Ends a message's lease and hides it for `after` (the store's clock): a notifier whose
    /// send failed tries again then. Returns whether the message exists.
    ///
    /// The default (for stores written before this method) changes nothing and answers that
    /// the message exists: the message comes back when its lease runs out, later than
    /// `after` asks but never lost. A store that can end a lease early should.
    async fn retry_outbox(&self, id: Uuid, after: Duration) -> Result<bool, StoreError> {
        let _ = (id, after);
        Ok(true)
    }

    /// How many outbox messages wait (leased or not), and when the oldest was written: for
    /// metrics and for telling a stuck notifier.
    ///
    /// The default says the store cannot tell (an error, never an empty outbox it does not
    /// know to be empty): the metrics then log that the figures are missing.
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        Err(StoreError::Internal(
            "this event store does not report its outbox".into(),
        ))
    }
}

/// The outbox at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Messages waiting.
    pub depth: u64,
    /// When the oldest of them was written; `None` when there is none.
    pub oldest: Option<DateTime<Utc>>,
}
