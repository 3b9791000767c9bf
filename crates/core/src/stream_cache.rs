//! Recently confirmed stream histories, kept by the command service so that a command on a
//! stream it read or wrote lately skips the store's read (one database round trip of a verify's
//! two with PostgreSQL).
//!
//! A cached history may be stale: another process sharing the store may have appended since.
//! The service never answers from it unconfirmed. A decision that records events is appended
//! with the cached version as the expected one, which the store refuses if the stream moved on;
//! the service then reads the store and decides again. A decision that records nothing (a
//! refusal, a repeated report) is confirmed by reading the store and deciding again before the
//! service answers. See docs/decisions.md (33).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

use crate::event::Event;
use crate::store::{Recorded, StreamId, Version};

/// Streams are spread over this many independently locked shards.
const SHARDS: usize = 16;

/// A bounded map from stream to its last confirmed history, evicting the oldest stream first.
///
/// "Confirmed" means the store returned that history or accepted the append that ended it. An
/// entry is only ever replaced by a longer history of the same stream (a store's streams only
/// grow), so a slow task cannot put back an older history over a newer one.
///
/// ```
/// use otp_sms_core::StreamCache;
/// let cache = StreamCache::new(10_000);
/// assert_eq!(cache.len(), 0);
/// assert!(cache.capacity() >= 10_000);
/// ```
pub struct StreamCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
}

#[derive(Default)]
struct Shard {
    histories: HashMap<StreamId, Recorded<Event>>,
    /// Every key of `histories` exactly once, oldest insertion first.
    order: VecDeque<StreamId>,
}

impl StreamCache {
    /// The server's default: 65,536 streams, a few minutes of sign-ups at a high rate (a
    /// registration of two or three events takes about a kilobyte here).
    pub const DEFAULT_CAPACITY: usize = 65_536;

    /// A cache of at least `capacity` streams (rounded up to a multiple of its shard count);
    /// `0` holds nothing.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            per_shard: capacity.div_ceil(SHARDS),
        }
    }

    /// How many streams it holds at most.
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// How many streams it holds.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| lock(s).histories.values().filter(|h| !h.is_empty()).count())
            .sum()
    }

    /// Whether it holds no stream.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last confirmed history of `stream`, if it is held.
    pub fn get(&self, stream: &StreamId) -> Option<Recorded<Event>> {
        lock(self.shard(stream))
            .histories
            .get(stream)
            .filter(|history| !history.is_empty())
            .cloned()
    }

    /// Drops what is held of `stream`, so that the next history put is taken whatever its
    /// length: for a history the store contradicted (a conflict on an append that expected
    /// it). Without this, a store that lost events (restored from a backup under a running
    /// process) would cost every later command on the stream a conflict.
    pub fn forget(&self, stream: &StreamId) {
        if let Some(held) = lock(self.shard(stream)).histories.get_mut(stream) {
            // Kept as an empty history, so that the key keeps its one place in the eviction
            // order; `get` treats it as absent.
            held.clear();
        }
    }

    /// Records `history` as the confirmed history of `stream`, unless a history at least as
    /// long is held already. Evicts the oldest streams beyond the capacity.
    pub fn put(&self, stream: &StreamId, history: Recorded<Event>) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = lock(self.shard(stream));
        match shard.histories.get_mut(stream) {
            Some(held) => {
                if version(&history) > version(held) {
                    *held = history;
                }
            }
            None => {
                shard.histories.insert(stream.clone(), history);
                shard.order.push_back(stream.clone());
                while shard.order.len() > self.per_shard {
                    if let Some(oldest) = shard.order.pop_front() {
                        shard.histories.remove(&oldest);
                    }
                }
            }
        }
    }

    fn shard(&self, stream: &StreamId) -> &Mutex<Shard> {
        &self.shards[(self.hasher.hash_one(stream) as usize) % SHARDS]
    }
}

impl std::fmt::Debug for StreamCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCache")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

fn version(history: &Recorded<Event>) -> Version {
    history.last().map_or(0, |r| r.sequence)
}

/// A panic elsewhere while a shard was locked leaves its map consistent (every mutation above
/// completes or does not start), so the poison is ignored rather than spread.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;

    use super::*;
    use crate::event::{Removed, Verified};
    use crate::ids::{InstanceId, OrganizationId, PrincipalId};
    use crate::store::RecordedEvent;

    fn stream(id: &str) -> StreamId {
        StreamId::new(
            InstanceId::parse("instance", "i1").unwrap(),
            crate::event::AGGREGATE_TYPE,
            id,
        )
    }

    /// A history of `len` events of `stream`.
    fn history(stream: &StreamId, len: u64) -> Recorded<Event> {
        (1..=len)
            .map(|sequence| {
                Arc::new(RecordedEvent {
                    stream: stream.clone(),
                    sequence,
                    position: sequence,
                    created_at: Utc::now(),
                    creator: PrincipalId::parse("p", "u1").unwrap(),
                    owner: OrganizationId::parse("o", "o1").unwrap(),
                    command: None,
                    event: if sequence == 1 {
                        Event::Verified(Verified { code: None })
                    } else {
                        Event::Removed(Removed {})
                    },
                })
            })
            .collect()
    }

    #[test]
    fn given_a_put_history_when_got_then_it_is_returned_and_other_streams_are_absent() {
        let cache = StreamCache::new(16);
        let a = stream("a");
        cache.put(&a, history(&a, 2));
        assert_eq!(cache.get(&a).map(|h| h.len()), Some(2));
        assert!(cache.get(&stream("b")).is_none());
        // Same id in another instance: another stream.
        let other = StreamId::new(
            InstanceId::parse("instance", "i2").unwrap(),
            "user.otp_sms",
            "a",
        );
        assert!(cache.get(&other).is_none());
    }

    #[test]
    fn given_a_longer_history_held_when_a_shorter_one_is_put_then_the_longer_one_stays() {
        let cache = StreamCache::new(16);
        let a = stream("a");
        cache.put(&a, history(&a, 3));
        cache.put(&a, history(&a, 2));
        assert_eq!(cache.get(&a).map(|h| h.len()), Some(3));
        cache.put(&a, history(&a, 3));
        assert_eq!(cache.get(&a).map(|h| h.len()), Some(3));
        cache.put(&a, history(&a, 4));
        assert_eq!(cache.get(&a).map(|h| h.len()), Some(4));
        assert_eq!(cache.len(), 1, "a replaced history is not a second entry");
    }

    #[test]
    fn given_a_full_cache_when_streams_are_added_then_the_oldest_go_first_and_the_bound_holds() {
        let cache = StreamCache::new(SHARDS * 2);
        let streams: Vec<StreamId> = (0..1000).map(|i| stream(&format!("s{i}"))).collect();
        for s in &streams {
            cache.put(s, history(s, 1));
            assert!(cache.len() <= cache.capacity());
        }
        assert_eq!(cache.capacity(), SHARDS * 2);
        // The newest stream is held; the very first is long gone.
        assert!(cache.get(&streams[999]).is_some());
        assert!(cache.get(&streams[0]).is_none());
        // Every shard keeps its newest: the held streams are among the most recent ones.
        let held: Vec<usize> = (0..1000)
            .filter(|&i| cache.get(&streams[i]).is_some())
            .collect();
        assert!(held.len() <= SHARDS * 2);
        assert!(held.iter().all(|&i| i >= 1000 - 400), "{held:?}");
    }

    #[test]
    fn given_a_forgotten_stream_when_a_shorter_history_is_put_then_it_is_taken() {
        let cache = StreamCache::new(16);
        let a = stream("a");
        cache.put(&a, history(&a, 3));
        cache.forget(&a);
        assert!(cache.get(&a).is_none());
        cache.put(&a, history(&a, 2));
        assert_eq!(cache.get(&a).map(|h| h.len()), Some(2));
        cache.forget(&stream("never held"));
        assert!(cache.get(&stream("never held")).is_none());
    }

    #[test]
    fn given_a_zero_capacity_when_a_history_is_put_then_nothing_is_held() {
        let cache = StreamCache::new(0);
        let a = stream("a");
        cache.put(&a, history(&a, 1));
        assert!(cache.get(&a).is_none());
        assert!(cache.is_empty());
    }
}
