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
//! All state sits behind one lock that is never held across an `.await`, so an append is
//! atomic and global positions are assigned in commit order: the feed cannot skip.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use otp_sms_core::{
    Append, AppendOutcome, Clock, EventPayload, EventStore, OutboxMessage, RecordedEvent,
    RecordedMeta, StoreError, StreamId, SystemClock,
};
use uuid::Uuid;

/// An event store that lives in the process's memory.
pub struct MemoryStore<E> {
    inner: RwLock<Inner<E>>,
    clock: Arc<dyn Clock>,
}

struct Inner<E> {
    streams: HashMap<StreamId, Vec<Arc<RecordedEvent<E>>>>,
    log: Vec<Arc<RecordedEvent<E>>>,
    outbox: BTreeMap<u64, OutboxEntry>,
    outbox_ids: HashMap<Uuid, u64>,
    next_outbox: u64,
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
            inner: RwLock::new(Inner {
                streams: HashMap::new(),
                log: Vec::new(),
                outbox: BTreeMap::new(),
                outbox_ids: HashMap::new(),
                next_outbox: 0,
            }),
            clock,
        }
    }

    /// How many events the store holds.
    pub fn len(&self) -> usize {
        self.read().log.len()
    }

    /// Whether the store holds no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many outbox messages are pending (leased or not).
    pub fn outbox_len(&self) -> usize {
        self.read().outbox.len()
    }

    // A panic can only poison the lock between complete mutations (every mutation is
    // validated before it starts), so the data behind a poisoned lock is still consistent.
    fn read(&self) -> RwLockReadGuard<'_, Inner<E>> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner<E>> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl<E: EventPayload> EventStore<E> for MemoryStore<E> {
    async fn read_stream(&self, stream: &StreamId) -> Result<Vec<RecordedEvent<E>>, StoreError> {
        Ok(self
            .read()
            .streams
            .get(stream)
            .map(|events| events.iter().map(|e| (**e).clone()).collect())
            .unwrap_or_default())
    }

    async fn append(&self, append: Append<E>) -> Result<AppendOutcome, StoreError> {
        let now = self.clock.now();
        let mut inner = self.write();
        let actual = inner
            .streams
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
        let mut ids = HashSet::with_capacity(append.outbox.len());
        for message in &append.outbox {
            if inner.outbox_ids.contains_key(&message.id) || !ids.insert(message.id) {
                return Err(StoreError::Internal(format!(
                    "duplicate outbox message id {}",
                    message.id
                )));
            }
        }
        let inner = &mut *inner;
        let mut recorded = Vec::with_capacity(append.events.len());
        let mut sequence = actual;
        let stream_events = inner.streams.entry(append.stream.clone()).or_default();
        for new in append.events {
            sequence += 1;
            let position = inner.log.len() as u64 + 1;
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
            stream_events.push(Arc::clone(&event));
            inner.log.push(event);
        }
        if stream_events.is_empty() {
            // An empty append to a new stream must not create it.
            inner.streams.remove(&append.stream);
        }
        for message in append.outbox {
            let key = inner.next_outbox;
            inner.next_outbox += 1;
            inner.outbox_ids.insert(message.id, key);
            inner.outbox.insert(
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
        Ok(AppendOutcome {
            version: sequence,
            recorded,
        })
    }

    async fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent<E>>, StoreError> {
        let inner = self.read();
        let start = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(inner.log.len());
        Ok(inner.log[start..]
            .iter()
            .take(limit)
            .map(|e| (**e).clone())
            .collect())
    }

    async fn fetch_outbox(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let mut inner = self.write();
        let mut out = Vec::new();
        for entry in inner.outbox.values_mut() {
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
        let mut inner = self.write();
        Ok(match inner.outbox_ids.remove(&id) {
            Some(key) => inner.outbox.remove(&key).is_some(),
            None => false,
        })
    }
}
