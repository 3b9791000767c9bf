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
//!     .append(Append::new(stream.clone(), ExpectedVersion::NoStream, vec![]))
//!     .await
//!     .unwrap();
//! assert_eq!(outcome.version, 0);
//! assert!(store.read_stream(&stream).await.unwrap().is_empty());
//! # });
//! # }
//! ```
//!
//! Streams live in independently locked shards; the global feed is a lock-free log whose
//! readers stop at an append still in flight, so the feed cannot skip. No lock is held across
//! an `.await`.

mod key;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use foldhash::fast::RandomState;
use hashbrown::hash_table::{Entry as TableEntry, HashTable};
use otp_sms_core::{
    Append, AppendOutcome, Clock, EventPayload, EventStore, OutboxMessage, OutboxStats, Recorded,
    RecordedEvent, RecordedMeta, StoreError, StreamId, SystemClock,
};
use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use crate::key::StreamKey;

/// Streams are spread over this many independently locked shards, so that commands on
/// different registrations do not wait for each other.
const SHARDS: usize = 64;

/// One shard's streams. Each entry keeps its hash (one foldhash of the encoded key, with a
/// random seed per store: several times faster than SipHash on short keys, and stream ids are
/// generated, not chosen by callers), so look-ups compare keys only on a full hash match and
/// growing the table never hashes a key again.
type Shard<E> = HashTable<StreamEntry<E>>;

struct StreamEntry<E> {
    hash: u64,
    key: StreamKey,
    events: Vec<Arc<RecordedEvent<E>>>,
}

/// Where a stream lives: its encoded key, its hash and its shard.
struct Located<'s, E> {
    key: StreamKey,
    hash: u64,
    shard: &'s RwLock<Shard<E>>,
}

impl<E> Located<'_, E> {
    fn matches(&self) -> impl Fn(&StreamEntry<E>) -> bool + '_ {
        |entry| entry.hash == self.hash && entry.key == self.key
    }
}

/// An event store that lives in the process's memory.
///
/// Locks, taken in this order and never across an `.await`: the stream's shard, then the
/// outbox (only if the append has messages). An append holds its shard from the version check
/// to the last write, so it is atomic for every reader of the stream. The global feed is a
/// lock-free log: appends on different shards never wait for each other.
pub struct MemoryStore<E> {
    shards: Box<[RwLock<Shard<E>>]>,
    shard_hasher: RandomState,
    log: Log<E>,
    outbox: Mutex<Outbox>,
    clock: Arc<dyn Clock>,
}

/// log2 of the first segment's slot count.
const FIRST_SEGMENT_BITS: u32 = 10;
/// Segments double in size: 40 of them hold more events than memory does.
const SEGMENTS: usize = 40;

/// The global feed: an append-only array of slots, in segments that double in size, so it
/// grows without ever moving an event or taking a lock.
///
/// An append reserves its positions with one atomic add and fills its slots last to first. A
/// reader stops at the first empty slot: an append in flight holds back the positions after
/// it until it is complete, so a reader never skips an event and never sees part of an append.
struct Log<E> {
    reserved: AtomicU64,
    segments: [Segment<E>; SEGMENTS],
}

/// One position of the feed, filled once.
type Slot<E> = OnceLock<Arc<RecordedEvent<E>>>;
/// A run of slots, allocated when first reached.
type Segment<E> = OnceLock<Box<[Slot<E>]>>;

impl<E> Log<E> {
    fn new() -> Self {
        Self {
            reserved: AtomicU64::new(0),
            segments: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Reserves `count` consecutive indexes; returns the first.
    fn reserve(&self, count: u64) -> u64 {
        self.reserved.fetch_add(count, Ordering::SeqCst)
    }

    /// The slot of index `i`.
    fn slot(&self, i: u64) -> &Slot<E> {
        let j = i + (1 << FIRST_SEGMENT_BITS);
        let high = 63 - j.leading_zeros();
        let segment = (high - FIRST_SEGMENT_BITS) as usize;
        let offset = (j - (1u64 << high)) as usize;
        let slots = self.segments[segment]
            .get_or_init(|| (0..1usize << high).map(|_| OnceLock::new()).collect());
        &slots[offset]
    }

    /// Publishes an event at its reserved index.
    fn publish(&self, i: u64, event: Arc<RecordedEvent<E>>) {
        // Each index is reserved once, so the slot is empty.
        let _ = self.slot(i).set(event);
    }

    /// Up to `limit` events from index `from`, stopping at the first slot still being filled.
    fn read(&self, from: u64, limit: usize) -> Vec<Arc<RecordedEvent<E>>> {
        let end = self.reserved.load(Ordering::SeqCst);
        let mut out = Vec::new();
        let mut i = from;
        while i < end && out.len() < limit {
            match self.slot(i).get() {
                Some(event) => out.push(Arc::clone(event)),
                None => break,
            }
            i += 1;
        }
        out
    }

    fn len(&self) -> u64 {
        self.reserved.load(Ordering::SeqCst)
    }
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
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            shard_hasher: RandomState::default(),
            log: Log::new(),
            outbox: Mutex::new(Outbox::default()),
            clock,
        }
    }

    /// How many events the store holds.
    pub fn len(&self) -> usize {
        self.log.len() as usize
    }

    /// Whether the store holds no events.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many outbox messages are pending (leased or not).
    pub fn outbox_len(&self) -> usize {
        self.outbox.lock().messages.len()
    }

    fn locate(&self, stream: &StreamId) -> Located<'_, E> {
        let key = StreamKey::new(stream);
        let hash = self.shard_hasher.hash_one(key.as_bytes());
        // Bits the table does not use: it takes its bucket from the low bits and its tag
        // from the top seven.
        let shard = &self.shards[((hash >> 40) as usize) % SHARDS];
        Located { key, hash, shard }
    }
}

#[async_trait]
impl<E: EventPayload> EventStore<E> for MemoryStore<E> {
    async fn read_stream(&self, stream: &StreamId) -> Result<Recorded<E>, StoreError> {
        let at = self.locate(stream);
        let shard = at.shard.read();
        Ok(shard
            .find(at.hash, at.matches())
            .map(|entry| entry.events.clone())
            .unwrap_or_default())
    }

    async fn append(&self, append: Append<E>) -> Result<AppendOutcome, StoreError> {
        let now = self.clock.now();
        let at = self.locate(&append.stream);
        let mut shard = at.shard.write();
        let existing = shard.find(at.hash, at.matches());
        let actual = existing.map_or(0, |entry| entry.events.len() as u64);
        // A stream takes one append per command.
        let repeated = append.command.is_some()
            && existing
                .is_some_and(|entry| entry.events.iter().any(|e| e.command == append.command));
        if !append.expected.admits(actual) || repeated {
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
        let count = append.events.len() as u64;
        let mut recorded = Vec::with_capacity(append.events.len());
        if count > 0 {
            // A new stream is inserted with room for a typical life (added, code added,
            // code sent, verified, then a sign-in's challenge issued, sent and succeeded), so
            // later appends do not reallocate under the shard's lock.
            let capacity = append.events.len().max(8);
            let events = match shard.entry(at.hash, at.matches(), |entry| entry.hash) {
                TableEntry::Occupied(entry) => &mut entry.into_mut().events,
                TableEntry::Vacant(entry) => {
                    &mut entry
                        .insert(StreamEntry {
                            hash: at.hash,
                            key: at.key,
                            events: Vec::with_capacity(capacity),
                        })
                        .into_mut()
                        .events
                }
            };
            let first = self.log.reserve(count);
            for (i, new) in append.events.into_iter().enumerate() {
                let sequence = actual + 1 + i as u64;
                let position = first + 1 + i as u64;
                let meta = RecordedMeta {
                    sequence,
                    position,
                    created_at: now,
                };
                let event = Arc::new(RecordedEvent::new(
                    append.stream.clone(),
                    meta,
                    new,
                    append.command,
                ));
                recorded.push(meta);
                events.push(event);
            }
            // Last to first: the append's first slot is filled last, so a reader sees all of
            // it or none of it.
            let appended = &events[events.len() - count as usize..];
            for (i, event) in appended.iter().enumerate().rev() {
                self.log.publish(first + i as u64, Arc::clone(event));
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
                        message: OutboxMessage::new(
                            message.id,
                            append.stream.clone(),
                            message.payload,
                            now,
                            0,
                        ),
                        leased_until: None,
                    },
                );
            }
        }
        // An empty append created no stream entry: a new stream stays absent.
        Ok(AppendOutcome {
            version: actual + count,
            recorded,
        })
    }

    async fn read_all(&self, after: u64, limit: usize) -> Result<Recorded<E>, StoreError> {
        // Position p lives at index p - 1: events after `after` start at index `after`.
        Ok(self.log.read(after, limit))
    }

    async fn fetch_outbox(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let mut outbox = self.outbox.lock();
        // Each instance's free messages, oldest first, at most `limit` of each.
        let mut queues: Vec<(otp_sms_core::InstanceId, Vec<u64>)> = Vec::new();
        for (key, entry) in outbox.messages.iter() {
            if entry.leased_until.is_some_and(|t| t > now) {
                continue;
            }
            let instance = &entry.message.stream.instance;
            match queues.iter_mut().find(|(i, _)| i == instance) {
                Some((_, keys)) if keys.len() < limit => keys.push(*key),
                Some(_) => {}
                None => queues.push((instance.clone(), vec![*key])),
            }
        }
        // Instances take turns.
        let mut picked = Vec::new();
        let mut turn = 0;
        while picked.len() < limit && queues.iter().any(|(_, keys)| turn < keys.len()) {
            for (_, keys) in &queues {
                if picked.len() < limit {
                    if let Some(key) = keys.get(turn) {
                        picked.push(*key);
                    }
                }
            }
            turn += 1;
        }
        let mut out = Vec::with_capacity(picked.len());
        for key in picked {
            if let Some(entry) = outbox.messages.get_mut(&key) {
                entry.leased_until = Some(until);
                entry.message.attempts += 1;
                out.push(entry.message.clone());
            }
        }
        Ok(out)
    }

    async fn retry_outbox(&self, id: Uuid, after: Duration) -> Result<bool, StoreError> {
        let until =
            self.clock.now() + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
        let mut outbox = self.outbox.lock();
        let Some(key) = outbox.ids.get(&id).copied() else {
            return Ok(false);
        };
        Ok(match outbox.messages.get_mut(&key) {
            Some(entry) => {
                entry.leased_until = Some(until);
                true
            }
            None => false,
        })
    }

    async fn delete_outbox(&self, id: Uuid) -> Result<bool, StoreError> {
        let mut outbox = self.outbox.lock();
        Ok(match outbox.ids.remove(&id) {
            Some(key) => outbox.messages.remove(&key).is_some(),
            None => false,
        })
    }
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        let outbox = self.outbox.lock();
        // Keys are in write order: the first entry is the oldest.
        Ok(OutboxStats {
            depth: outbox.messages.len() as u64,
            oldest: outbox
                .messages
                .first_key_value()
                .map(|(_, entry)| entry.message.created_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_slots_cover_segment_boundaries() {
        let log: Log<()> = Log::new();
        // Index → (segment, offset) is a bijection across the first segments.
        let mut seen = HashSet::new();
        for i in 0..10_000u64 {
            let ptr = log.slot(i) as *const _ as usize;
            assert!(seen.insert(ptr), "index {i} shares a slot");
        }
    }

    #[test]
    fn a_reader_stops_at_an_append_in_flight() {
        let log: Log<u8> = Log::new();
        let event = |n| {
            Arc::new(RecordedEvent::new(
                StreamId::new(otp_sms_core::InstanceId::parse("i", "i").unwrap(), "t", "a"),
                RecordedMeta {
                    sequence: n,
                    position: n,
                    created_at: Utc::now(),
                },
                otp_sms_core::NewEvent {
                    creator: otp_sms_core::PrincipalId::parse("c", "c").unwrap(),
                    owner: otp_sms_core::OrganizationId::parse("o", "o").unwrap(),
                    event: 0u8,
                },
                None,
            ))
        };
        let a = log.reserve(2); // an append of two, in flight
        let b = log.reserve(1);
        log.publish(b, event(3));
        assert!(
            log.read(0, 10).is_empty(),
            "nothing before the gap is complete"
        );
        log.publish(a + 1, event(2));
        assert!(log.read(0, 10).is_empty(), "half an append is not visible");
        log.publish(a, event(1));
        assert_eq!(log.read(0, 10).len(), 3);
        assert_eq!(log.read(2, 10).len(), 1);
    }
}
