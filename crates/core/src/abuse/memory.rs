//! The in-process budget store: exact sliding windows and held slots under one lock.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use foldhash::fast::RandomState;
use hashbrown::hash_table::{Entry as TableEntry, HashTable};
use parking_lot::Mutex;

use super::budget::{BudgetStore, Member, Rule, TakeOutcome, TakeRequest};
use crate::ports::{Clock, PortError, SystemClock};

/// One entry: when it was taken, and until when it counts (`None`: for good).
#[derive(Debug, Clone)]
struct Entry {
    member: Arc<str>,
    member_hash: u64,
    at: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
}

impl Entry {
    fn counts_at(&self, now: DateTime<Utc>) -> bool {
        self.until.map_or(true, |u| u > now)
    }
}

/// Keys with more entries than this index their members.
const INDEXED_FROM: usize = 8;

/// A key's entries, oldest first. Most keys of a sign-up (its user, number, address) only
/// ever hold one, kept in the key's slot: a new key allocates only its name (the budgets of
/// a sign-up take about 1.1 KB instead of 1.9 KB; docs/benchmarks.md).
#[derive(Debug, Default)]
enum Entries {
    /// None (a key whose entries were released or lapsed).
    #[default]
    Empty,
    /// One entry, inline.
    One(Entry),
    /// Several.
    Many(Box<Log>),
}

/// Several entries of a key, oldest first, and, once there are more than [`INDEXED_FROM`],
/// their members by hash (so that a take checks for a repeated member without scanning a busy
/// key, such as the instance's, whole).
#[derive(Debug, Default)]
struct Log {
    log: VecDeque<Entry>,
    members: HashTable<(u64, Arc<str>)>,
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Entries {
    /// The entries as (at most) two runs, oldest first.
    fn runs(&self) -> (&[Entry], &[Entry]) {
        match self {
            Entries::Empty => (&[], &[]),
            Entries::One(e) => (std::slice::from_ref(e), &[]),
            Entries::Many(many) => many.log.as_slices(),
        }
    }

    fn len(&self) -> usize {
        let (a, b) = self.runs();
        a.len() + b.len()
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        let (a, b) = self.runs();
        a.iter().chain(b)
    }

    /// The `i`-th entry, oldest first.
    fn get(&self, i: usize) -> Option<&Entry> {
        let (a, b) = self.runs();
        a.get(i).or_else(|| b.get(i.checked_sub(a.len())?))
    }

    /// How many of the oldest entries satisfy `pred` (which holds for a prefix).
    fn partition_point(&self, pred: impl Fn(&Entry) -> bool) -> usize {
        let (a, b) = self.runs();
        match a.partition_point(&pred) {
            n if n == a.len() => n + b.partition_point(pred),
            n => n,
        }
    }

    fn live(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Entry> {
        self.iter().filter(move |e| e.counts_at(now))
    }

    fn has(&self, hash: u64, member: &str) -> bool {
        match self {
            Entries::Many(many) if many.log.len() > INDEXED_FROM => many
                .members
                .find(hash, |(h, m)| *h == hash && &**m == member)
                .is_some(),
            _ => self.iter().any(|e| &*e.member == member),
        }
    }

    /// Drops the oldest entries while they no longer count. Entries are in time order and a
    /// window's entries lapse in that order, so a busy key sheds its old takes in amortised
    /// constant time; an entry held longer stops the sweep, which only costs memory (counting
    /// always skips lapsed entries).
    fn prune(&mut self, now: DateTime<Utc>) {
        match self {
            Entries::Empty => {}
            Entries::One(e) => {
                if !e.counts_at(now) {
                    *self = Entries::Empty;
                }
            }
            Entries::Many(many) => {
                while many.log.front().is_some_and(|e| !e.counts_at(now)) {
                    if let Some(gone) = many.log.pop_front() {
                        many.forget(gone.member_hash, &gone.member);
                    }
                }
                many.shrink_index();
            }
        }
    }

    fn remove(&mut self, hash: u64, member: &str) -> bool {
        if !self.has(hash, member) {
            return false;
        }
        match self {
            Entries::Empty => {}
            Entries::One(_) => *self = Entries::Empty,
            Entries::Many(many) => {
                many.forget(hash, member);
                many.log.retain(|e| &*e.member != member);
                many.shrink_index();
            }
        }
        true
    }

    /// Records `entry` (a second entry moves the key's entries into a [`Log`]).
    fn record(&mut self, entry: Entry) {
        match self {
            Entries::Empty => *self = Entries::One(entry),
            Entries::One(_) => {
                if let Entries::One(first) = std::mem::take(self) {
                    let mut log = Box::new(Log {
                        log: VecDeque::with_capacity(4),
                        members: HashTable::new(),
                    });
                    log.log.push_back(first);
                    log.record(entry);
                    *self = Entries::Many(log);
                }
            }
            Entries::Many(many) => many.record(entry),
        }
    }

    /// `None` if `rule` admits one more entry now, else when it will (inner `None`: not by
    /// time alone).
    fn refusal(&self, rule: &Rule, now: DateTime<Utc>) -> Option<Option<Duration>> {
        let len = self.len();
        match *rule {
            Rule::Window { max: 0, .. } => Some(None),
            // Fewer entries than the max cannot fill any window: no search.
            Rule::Window { max, .. } if len < max as usize => None,
            Rule::Window { max, window } => {
                let since = now - chrono(window);
                // Entries are in time order: those inside the window are a suffix.
                let start = self.partition_point(|e| e.at <= since);
                let inside = len - start;
                (inside >= max as usize).then(|| {
                    // One more is admitted once the oldest entry that must leave has left.
                    self.get(start + inside - max as usize)
                        .and_then(|leaving| (leaving.at + chrono(window) - now).to_std().ok())
                })
            }
            // Fewer entries than the cap cannot hold it full: no scan (a key with many
            // slots, under a large cap, would otherwise cost a pass over them per take).
            Rule::Held { max, .. } if len < max as usize => None,
            Rule::Held { max, .. } => self.refusal_when_held(max as usize, now),
            Rule::Absent => self.refusal_when_held(1, now),
        }
    }

    /// Refused while `max` entries count: until the first of them lapses, if any does.
    fn refusal_when_held(&self, max: usize, now: DateTime<Utc>) -> Option<Option<Duration>> {
        let held: Vec<&Entry> = self.live(now).collect();
        (held.len() >= max).then(|| {
            held.iter()
                .filter_map(|e| e.until)
                .min()
                .and_then(|until| (until - now).to_std().ok())
        })
    }
}

impl Log {
    /// Records `entry` where its time puts it: last, as time moves forward (a clock set back
    /// keeps the order).
    fn record(&mut self, entry: Entry) {
        // Only a log long enough to be indexed needs the member again.
        let indexed = (self.log.len() >= INDEXED_FROM)
            .then(|| (entry.member_hash, Arc::clone(&entry.member)));
        if self.log.back().map_or(true, |last| last.at <= entry.at) {
            self.log.push_back(entry);
        } else {
            let at = self.log.partition_point(|e| e.at <= entry.at);
            self.log.insert(at, entry);
        }
        if let Some((hash, member)) = indexed {
            self.index(hash, member);
        }
    }

    fn forget(&mut self, hash: u64, member: &str) {
        if let Ok(found) = self
            .members
            .find_entry(hash, |(h, m)| *h == hash && &**m == member)
        {
            found.remove();
        }
    }

    /// Drops the index once the log is small again (it is searched directly then).
    fn shrink_index(&mut self) {
        if self.log.len() <= INDEXED_FROM && !self.members.is_empty() {
            self.members = HashTable::new();
        }
    }

    /// Indexes a member once the log is long enough to need it.
    fn index(&mut self, hash: u64, member: Arc<str>) {
        if self.log.len() <= INDEXED_FROM {
            return;
        }
        if self.members.is_empty() {
            for e in &self.log {
                let (h, m) = (e.member_hash, Arc::clone(&e.member));
                self.members.insert_unique(h, (h, m), |(h, _)| *h);
            }
        } else {
            self.members
                .insert_unique(hash, (hash, member), |(h, _)| *h);
        }
    }
}

/// A key and its entries; the table keeps each key's hash, so a look-up under the lock
/// compares keys only on a full hash match and growing it never hashes a key again.
#[derive(Debug)]
struct Slot {
    hash: u64,
    key: Box<str>,
    entries: Entries,
}

/// What one budget of a take did.
enum Taken {
    /// A new entry was recorded.
    Recorded,
    /// Admitted, nothing to record (an `Absent` rule).
    Checked,
    /// The member was recorded already: counted once.
    Already,
    /// Refused, admitting again after this (`None`: not by time alone).
    Refused(Option<Duration>),
}

/// A take with everything computed before the lock is taken.
struct Prepared<'a> {
    hash: u64,
    key: &'a str,
    member: Arc<str>,
    member_hash: u64,
    rules: &'a [Rule],
    keep: Duration,
    adds: bool,
}

/// Keys are spread over this many independently locked shards.
const SHARDS: usize = 64;

type Shard = Mutex<HashTable<Slot>>;

/// A [`BudgetStore`] in this process's memory: the default of
/// [`crate::CommandService::new`]. Correct for one process; several processes serving one
/// instance need a shared store (`otp_sms_postgres::PgBudgets`). Windows follow `clock`.
///
/// Keys live in independently locked shards, and a take visits its budgets one at a time:
/// under the key's shard lock it checks every rule and records the entry, so no budget ever
/// admits more than its rules allow; when a later budget refuses, the entries recorded before
/// are removed again, so a refused take leaves nothing. Every send touches the instance's key,
/// so a lock over all of a take's keys would make sends queue behind each other; the price is
/// that a take being rolled back may, for that moment, make a concurrent take see a budget as
/// full: under a race the store errs toward refusing, never toward sending.
pub struct MemoryBudgets {
    shards: Box<[Shard]>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryBudgets {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

impl MemoryBudgets {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose windows follow `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(),
            hasher: RandomState::default(),
            clock,
        }
    }

    fn hash(&self, text: &str) -> u64 {
        self.hasher.hash_one(text)
    }

    /// The shard of a key's hash (bits the table does not use for its buckets and tags).
    fn shard(&self, hash: u64) -> &Shard {
        &self.shards[((hash >> 40) as usize) % SHARDS]
    }

    /// How many entries count under `key` now (for tests and debugging).
    pub fn count(&self, key: &str) -> usize {
        let now = self.clock.now();
        let hash = self.hash(key);
        self.shard(hash)
            .lock()
            .find(hash, |s| s.hash == hash && &*s.key == key)
            .map_or(0, |slot| slot.entries.live(now).count())
    }

    /// Runs `f` on the entries of `key`, if the key exists.
    fn with_key<T>(&self, key: &str, f: impl FnOnce(&mut Entries) -> T) -> Option<T> {
        let hash = self.hash(key);
        let mut keys = self.shard(hash).lock();
        keys.find_mut(hash, |s| s.hash == hash && &*s.key == key)
            .map(|slot| f(&mut slot.entries))
    }
}

impl std::fmt::Debug for MemoryBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: usize = self.shards.iter().map(|s| s.lock().len()).sum();
        f.debug_struct("MemoryBudgets")
            .field("keys", &keys)
            .finish()
    }
}

impl MemoryBudgets {
    /// Checks one budget and records its entry, under its shard's lock.
    fn take_one(
        keys: &mut HashTable<Slot>,
        p: &Prepared<'_>,
        fresh: Option<Box<str>>,
        now: DateTime<Utc>,
    ) -> Result<Taken, PortError> {
        if let Some(slot) = keys.find_mut(p.hash, |s| s.hash == p.hash && &*s.key == p.key) {
            let entries = &mut slot.entries;
            entries.prune(now);
            if p.adds && entries.has(p.member_hash, &p.member) {
                // A lapsed entry behind one held longer may still be listed: it is gone.
                let lapsed = entries
                    .iter()
                    .any(|e| e.member == p.member && !e.counts_at(now));
                if !lapsed {
                    // Counted already: a repeated take is admitted and adds nothing.
                    return Ok(Taken::Already);
                }
                entries.remove(p.member_hash, &p.member);
            }
            for rule in p.rules {
                if let Some(retry_after) = entries.refusal(rule, now) {
                    return Ok(Taken::Refused(retry_after));
                }
            }
        } else {
            // A key nobody used: only a rule that admits nothing refuses (a max of 0).
            let empty = Entries::default();
            for rule in p.rules {
                if let Some(retry_after) = empty.refusal(rule, now) {
                    return Ok(Taken::Refused(retry_after));
                }
            }
        }
        let Some(key) = fresh else {
            return Ok(Taken::Checked);
        };
        let slot = match keys.entry(
            p.hash,
            |s| s.hash == p.hash && *s.key == *key,
            |s: &Slot| s.hash,
        ) {
            TableEntry::Occupied(o) => o.into_mut(),
            TableEntry::Vacant(v) => v
                .insert(Slot {
                    hash: p.hash,
                    key,
                    entries: Entries::default(),
                })
                .into_mut(),
        };
        slot.entries.record(Entry {
            member: Arc::clone(&p.member),
            member_hash: p.member_hash,
            at: now,
            until: Some(now + chrono(p.keep)),
        });
        Ok(Taken::Recorded)
    }

    /// Removes the entries this take recorded before a refusal.
    fn roll_back(&self, recorded: &[&Prepared<'_>]) {
        for p in recorded {
            let mut keys = self.shard(p.hash).lock();
            if let Some(slot) = keys.find_mut(p.hash, |s| s.hash == p.hash && &*s.key == p.key) {
                slot.entries.remove(p.member_hash, &p.member);
            }
        }
    }
}

#[async_trait]
impl BudgetStore for MemoryBudgets {
    async fn take(&self, request: &TakeRequest) -> Result<TakeOutcome, PortError> {
        let now = self.clock.now();
        // The budgets of one send name the same member: one copy serves them all.
        let mut shared: Option<(Arc<str>, u64)> = None;
        let prepared: Vec<Prepared<'_>> = request
            .takes
            .iter()
            .map(|t| {
                let (member, member_hash) = match &shared {
                    Some((m, h)) if **m == *t.member => (Arc::clone(m), *h),
                    _ => {
                        let m: Arc<str> = Arc::from(t.member.as_str());
                        let h = self.hash(&t.member);
                        shared = Some((Arc::clone(&m), h));
                        (m, h)
                    }
                };
                Prepared {
                    hash: self.hash(&t.key),
                    key: &t.key,
                    member,
                    member_hash,
                    rules: &t.rules,
                    keep: t.rules.iter().map(Rule::keep).max().unwrap_or_default(),
                    adds: t.rules.iter().any(Rule::adds),
                }
            })
            .collect();
        let mut recorded: Vec<&Prepared<'_>> = Vec::with_capacity(prepared.len());
        for (i, p) in prepared.iter().enumerate() {
            // A new key's copy is made before the lock (most keys of a send are new: its
            // user, number, range, address).
            let fresh: Option<Box<str>> = p.adds.then(|| Box::from(p.key));
            let outcome = {
                let mut keys = self.shard(p.hash).lock();
                Self::take_one(&mut keys, p, fresh, now)
            };
            match outcome {
                Ok(Taken::Recorded) => recorded.push(p),
                Ok(Taken::Checked | Taken::Already) => {}
                Ok(Taken::Refused(retry_after)) => {
                    self.roll_back(&recorded);
                    return Ok(TakeOutcome::Refused {
                        take: i,
                        retry_after,
                    });
                }
                Err(e) => {
                    self.roll_back(&recorded);
                    return Err(e);
                }
            }
        }
        Ok(TakeOutcome::Taken)
    }

    async fn release(&self, key: &str, member: &str) -> Result<bool, PortError> {
        let member_hash = self.hash(member);
        Ok(self
            .with_key(key, |entries| entries.remove(member_hash, member))
            .unwrap_or(false))
    }

    async fn members(&self, key: &str) -> Result<Vec<Member>, PortError> {
        let now = self.clock.now();
        Ok(self
            .with_key(key, |entries| {
                entries
                    .live(now)
                    .map(|e| Member {
                        member: e.member.to_string(),
                        at: e.at,
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn clear(&self, key: &str) -> Result<u64, PortError> {
        let now = self.clock.now();
        let hash = self.hash(key);
        let mut keys = self.shard(hash).lock();
        Ok(
            match keys.find_entry(hash, |s| s.hash == hash && &*s.key == key) {
                Ok(found) => {
                    let (slot, _) = found.remove();
                    slot.entries.live(now).count() as u64
                }
                Err(_) => 0,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abuse::budget::BudgetTake;

    fn one(key: &str, member: &str, max: u32) -> TakeRequest {
        TakeRequest {
            takes: vec![BudgetTake {
                key: key.into(),
                member: member.into(),
                rules: vec![Rule::Window {
                    max,
                    window: Duration::from_secs(60),
                }],
            }],
        }
    }

    /// Around the size at which a key starts indexing its members, and after it shrinks
    /// below it again, a repeated member is still counted once.
    #[tokio::test]
    async fn repeated_members_count_once_whether_or_not_the_key_is_indexed() {
        let store = MemoryBudgets::new();
        for n in 1..=12 {
            let member = format!("m{n}");
            assert_eq!(
                store.take(&one("k", &member, 100)).await,
                Ok(TakeOutcome::Taken)
            );
            for earlier in 1..=n {
                // Admitted again (counted already), and not counted twice.
                let again = one("k", &format!("m{earlier}"), 100);
                assert_eq!(store.take(&again).await, Ok(TakeOutcome::Taken));
            }
            assert_eq!(store.count("k"), n, "after {n} members");
        }
        for n in (1..=12).rev() {
            assert!(store.release("k", &format!("m{n}")).await.unwrap());
            assert_eq!(store.count("k"), n - 1);
            if n > 1 {
                let again = one("k", "m1", 100);
                assert_eq!(store.take(&again).await, Ok(TakeOutcome::Taken));
                assert_eq!(store.count("k"), n - 1, "m1 is counted once");
            }
        }
    }

    /// A key's first entry is kept inline and its second moves both into a log: the move
    /// keeps time order (with the clock set back, the second entry is the older), the
    /// window counts both, and an inline entry lapses and is released like any other.
    #[tokio::test]
    async fn a_key_keeps_time_order_and_counts_across_its_first_and_second_entry() {
        use crate::ports::ManualClock;
        let clock = Arc::new(ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
        let store = MemoryBudgets::with_clock(clock.clone());
        assert_eq!(store.take(&one("k", "a", 2)).await, Ok(TakeOutcome::Taken));
        clock.advance(chrono::Duration::seconds(-30));
        assert_eq!(store.take(&one("k", "b", 2)).await, Ok(TakeOutcome::Taken));
        let members = store.members("k").await.unwrap();
        let names: Vec<&str> = members.iter().map(|m| m.member.as_str()).collect();
        assert_eq!(names, ["b", "a"], "oldest first");
        // Full; the older entry ("b", taken 30 s before "a") leaves the window first.
        assert_eq!(
            store.take(&one("k", "c", 2)).await,
            Ok(TakeOutcome::Refused {
                take: 0,
                retry_after: Some(Duration::from_secs(60)),
            })
        );
        clock.advance(chrono::Duration::seconds(61));
        assert_eq!(store.take(&one("k", "c", 2)).await, Ok(TakeOutcome::Taken));

        // An inline entry: lapses with its window, and is released.
        assert_eq!(store.take(&one("j", "a", 1)).await, Ok(TakeOutcome::Taken));
        assert!(matches!(
            store.take(&one("j", "b", 1)).await,
            Ok(TakeOutcome::Refused { .. })
        ));
        clock.advance(chrono::Duration::seconds(61));
        assert_eq!(store.count("j"), 0);
        assert_eq!(store.take(&one("j", "b", 1)).await, Ok(TakeOutcome::Taken));
        assert!(store.release("j", "b").await.unwrap());
        assert!(!store.release("j", "b").await.unwrap());
        assert_eq!(store.take(&one("j", "c", 1)).await, Ok(TakeOutcome::Taken));
    }
}
