//! # otp-sms-memory
//!
//! An in-memory [`EventStore`]: the version check, the global feed and the transactional
//! outbox, safe for many concurrent tasks. It is the default store for tests, development and
//! single-process hosts that accept losing data on restart; it passes the same conformance
//! suite (`otp-sms-testkit`) as the PostgreSQL store.
//!
//! ```
//! use otp_sms_core::{Append, EventStore, ExpectedVersion, InstanceId, StreamId};
//! use otp_sms_memory::MemoryStore;
//!
//! # tokio_test();
//! # fn tokio_test() {
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::<otp_sms_core::Event>::new();
//! let stream = StreamId::new(InstanceId::parse("instance", "i1").unwrap(), "user.otp_sms", "r1");
//! let outcome = store
//!     .append(Append { stream: stream.clone(), expected: ExpectedVersion::NoStream, events: vec![], outbox: vec![] })
//!     .await
//!     .unwrap();
//! assert_eq!(outcome.version, 0);
//! assert!(store.read_stream(&stream).await.unwrap().is_empty());
//! # });
//! # }
//! ```
//!
//! Streams live in independently locked shards; positions are assigned under the log's lock
//! in the same step that publishes the events, so the feed cannot skip. No lock is held across
//! an `.await`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use foldhash::fast::RandomState;
use otp_sms_core::{
    Append, AppendOutcome, Clock, EventPayload, EventStore, OutboxMessage, Recorded, RecordedEvent,
    RecordedMeta, StoreError, StreamId, SystemClock,
};
use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

/// Streams are spread over this many independently locked shards, so that commands on
/// different registrations do not wait for each other.
const SHARDS: usize = 64;

/// foldhash with a random seed per map: several times faster than SipHash on short keys, and
/// stream ids are generated, not chosen by callers.
type Shard<E> = HashMap<StreamId, Vec<Arc<RecordedEvent<E>>>, RandomState>;

/// An event store that lives in the process's memory.
///
/// Locks, always taken in this order and never across an `.await`: the stream's shard, then
/// the outbox (only if the append has messages), then the global log. An append holds its
/// shard from the version check to the last write, so it is atomic for every reader; the log
/// lock assigns positions and publishes events in one step, so the feed never skips.
pub struct MemoryStore<E> {
    shards: Box<[RwLock<Shard<E>>]>,
    shard_hasher: RandomState,
    log: RwLock<Vec<Arc<RecordedEvent<E>>>>,
    outbox: Mutex<Outbox>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct Outbox {
    messages: BTreeMap<u64, OutboxEntry>,
    ids: HashMap<Uuid, u64>,
    next: u64,
}

struct OutboxEntry {
    message: OutboxMessage,
    leased_until: Option<DateTime<Utc>>,
}

impl<E> Default for MemoryStore<E> {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

impl<E> MemoryStore<E> {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose `created_at` times and outbox leases follow `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(RandomState::default())))
                .collect(),
            shard_hasher: RandomState::default(),
            log: RwLock::new(Vec::new()),
            outbox: Mutex::new(Outbox::default()),
            clock,
        }
    }

    /// How many events the store holds.
    pub fn len(&self) -> usize {
        self.log.read().len()
    }

    /// Whether the store holds no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many outbox messages are pending (leased or not).
    pub fn outbox_len(&self) -> usize {
        self.outbox.lock().messages.len()
    }

    fn shard(&self, stream: &StreamId) -> &RwLock<Shard<E>> {
        let hash = self.shard_hasher.hash_one(stream);
        &self.shards[(hash as usize) % SHARDS]
    }
}

#[async_trait]
impl<E: EventPayload> EventStore<E> for MemoryStore<E> {
    async fn read_stream(&self, stream: &StreamId) -> Result<Recorded<E>, StoreError> {
        Ok(self
            .shard(stream)
            .read()
            .get(stream)
            .cloned()
            .unwrap_or_default())
    }

    async fn append(&self, append: Append<E>) -> Result<AppendOutcome, StoreError> {
        let now = self.clock.now();
        let mut shard = self.shard(&append.stream).write();
        let actual = shard
            .get(&append.stream)
            .map_or(0, |events| events.len() as u64);
        if !append.expected.admits(actual) {
            return Err(StoreError::Conflict {
                stream: append.stream,
                expected: append.expected,
                actual,
            });
        }
        // Validate everything before the first write, so a refused append writes nothing.
        let mut outbox = (!append.outbox.is_empty()).then(|| self.outbox.lock());
        if let Some(outbox) = &outbox {
            let mut ids = HashSet::with_capacity(append.outbox.len());
            for message in &append.outbox {
                if outbox.ids.contains_key(&message.id) || !ids.insert(message.id) {
                    return Err(StoreError::Internal(format!(
                        "duplicate outbox message id {}",
                        message.id
                    )));
                }
            }
        }
        let mut recorded = Vec::with_capacity(append.events.len());
        let mut events = Vec::with_capacity(append.events.len());
        if !append.events.is_empty() {
            let mut log = self.log.write();
            for (i, new) in append.events.into_iter().enumerate() {
                let sequence = actual + 1 + i as u64;
                let position = log.len() as u64 + 1;
                let event = Arc::new(RecordedEvent {
                    stream: append.stream.clone(),
                    sequence,
                    position,
                    created_at: now,
                    creator: new.creator,
                    owner: new.owner,
                    event: new.event,
                });
                recorded.push(RecordedMeta {
                    sequence,
                    position,
                    created_at: now,
                });
                log.push(Arc::clone(&event));
                events.push(event);
            }
        }
        if let Some(outbox) = outbox.as_mut() {
            for message in append.outbox {
                let key = outbox.next;
                outbox.next += 1;
                outbox.ids.insert(message.id, key);
                outbox.messages.insert(
                    key,
                    OutboxEntry {
                        message: OutboxMessage {
                            id: message.id,
                            stream: append.stream.clone(),
                            payload: message.payload,
                            created_at: now,
                            attempts: 0,
                        },
                        leased_until: None,
                    },
                );
            }
        }
        let version = actual + events.len() as u64;
        // An empty append to a new stream must not create it.
        if !events.is_empty() {
            shard.entry(append.stream).or_default().extend(events);
        }
        Ok(AppendOutcome { version, recorded })
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Recorded<E>, StoreError> {
        let log = self.log.read();
        let start = usize::try_from(after).unwrap_or(usize::MAX).min(log.len());
        Ok(log[start..].iter().take(limit).cloned().collect())
    }

    async fn fetch_outbox(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let mut outbox = self.outbox.lock();
        let mut out = Vec::new();
        for entry in outbox.messages.values_mut() {
            if out.len() >= limit {
                break;
            }
            if entry.leased_until.is_some_and(|t| t > now) {
                continue;
            }
            entry.leased_until = Some(until);
            entry.message.attempts += 1;
            out.push(entry.message.clone());
        }
        Ok(out)
    }

    async fn delete_outbox(&self, id: Uuid) -> Result<bool, StoreError> {
        let mut outbox = self.outbox.lock();
        Ok(match outbox.ids.remove(&id) {
            Some(key) => outbox.messages.remove(&key).is_some(),
            None => false,
        })
    }
}
