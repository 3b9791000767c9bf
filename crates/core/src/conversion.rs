//! The conversion signal: codes sent against codes verified, per number range and per region,
//! over a sliding window, read from the event feed. A range whose conversion collapses (many
//! codes go out, almost none come back) is the classic SMS-pumping signature: the numbers
//! belong to the pumper, who collects per-SMS revenue and never verifies.
//!
//! [`Conversion`] is a projection: it reads the store's global feed, so every server that runs
//! one sees the same figures (from the events every server writes), and it keeps only what its
//! window needs.
//!
//! ```no_run
//! # async fn demo(store: &dyn otp_sms_core::EventStore<otp_sms_core::Event>) {
//! use std::time::Duration;
//! use otp_sms_core::conversion::Conversion;
//! let mut conversion = Conversion::new(Duration::from_secs(3600));
//! conversion.catch_up(store).await.unwrap();
//! for (range, rate) in conversion.by_range(chrono::Utc::now()) {
//!     if rate.sent >= 20 && rate.ratio() < 0.1 {
//!         println!("{range}: {} of {} codes verified", rate.verified, rate.sent);
//!     }
//! }
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::event::Event;
use crate::store::{EventStore, RecordedEvent, StoreError};

pub use crate::abuse::Rate;

/// Where a registration's number belongs.
#[derive(Debug, Clone)]
struct Origin {
    range: String,
    region: Option<&'static str>,
    /// Whether a code of this registration was sent (only those verifications count).
    sent: bool,
}

/// The conversion projection (see the module's documentation).
#[derive(Debug)]
pub struct Conversion {
    window: Duration,
    /// The feed position read up to.
    position: u64,
    /// Registrations by `instance/id`, for the events that do not carry the number.
    origins: HashMap<String, (DateTime<Utc>, Origin)>,
    /// (when, range, region) of each code sent, oldest first.
    sent: VecDeque<(DateTime<Utc>, String, Option<&'static str>)>,
    /// The same for each verification of a sent code.
    verified: VecDeque<(DateTime<Utc>, String, Option<&'static str>)>,
    /// How many registrations `origins` may hold before the next sweep of the ones that left
    /// the window. Doubled past what a sweep keeps, so sweeps cost O(1) per event however
    /// many registrations stay in the window (a threshold tied to the codes sent alone made
    /// every event sweep the whole map when codes were returned, not sent).
    sweep_at: usize,
    /// Sweeps done (tests read it).
    sweeps: u64,
}

impl Conversion {
    /// A projection over a sliding `window`, read from the start of the feed.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            position: 0,
            origins: HashMap::new(),
            sent: VecDeque::new(),
            verified: VecDeque::new(),
            sweep_at: Self::FIRST_SWEEP,
            sweeps: 0,
        }
    }

    /// Registrations kept before the first sweep.
    const FIRST_SWEEP: usize = 4096;

    /// Reads the feed from where it stopped to its end.
    pub async fn catch_up(&mut self, store: &dyn EventStore<Event>) -> Result<(), StoreError> {
        while !self.catch_up_at_most(store, usize::MAX).await? {}
        Ok(())
    }

    /// Reads at most `pages` pages of 1,000 events; whether the feed's end was reached. A
    /// long history is read a bounded step at a time, so a caller holding the projection (a
    /// metrics scrape) never waits for all of it.
    pub async fn catch_up_at_most(
        &mut self,
        store: &dyn EventStore<Event>,
        pages: usize,
    ) -> Result<bool, StoreError> {
        for _ in 0..pages {
            let page = store.read_all(self.position, 1_000).await?;
            let Some(last) = page.last() else {
                return Ok(true);
            };
            self.position = last.position;
            for recorded in &page {
                self.apply(recorded);
            }
        }
        Ok(false)
    }

    /// Takes one recorded event into account, at the time the store recorded it.
    pub fn apply(&mut self, recorded: &RecordedEvent<Event>) {
        let key = format!(
            "{}/{}",
            recorded.stream.instance, recorded.stream.aggregate_id
        );
        let at = recorded.created_at;
        match &recorded.event {
            Event::Added(added) => {
                let origin = Origin {
                    range: added.phone.range().to_owned(),
                    region: added.phone.region(),
                    sent: false,
                };
                self.origins.insert(key, (at, origin));
            }
            Event::CodeSent(_) => {
                if let Some((seen, origin)) = self.origins.get_mut(&key) {
                    origin.sent = true;
                    *seen = at;
                    self.sent
                        .push_back((at, origin.range.clone(), origin.region));
                }
            }
            Event::Verified(_) => {
                if let Some((_, origin)) = self.origins.get(&key).filter(|(_, o)| o.sent) {
                    self.verified
                        .push_back((at, origin.range.clone(), origin.region));
                }
            }
            Event::Removed(_) => {
                self.origins.remove(&key);
            }
            _ => {}
        }
        self.forget_before(at);
    }

    /// Drops what fell out of the window before `now`.
    fn forget_before(&mut self, now: DateTime<Utc>) {
        let Ok(window) = chrono::Duration::from_std(self.window) else {
            return;
        };
        let start = now - window;
        while self.sent.front().is_some_and(|(t, _, _)| *t <= start) {
            self.sent.pop_front();
        }
        while self.verified.front().is_some_and(|(t, _, _)| *t <= start) {
            self.verified.pop_front();
        }
        // A registration last active before the window can no longer add to it, except by a
        // late verification, which then does not count: forgetting it bounds the memory (to
        // twice what the window holds, and at least 4 × the codes sent in it).
        if self.origins.len() > self.sweep_at {
            self.origins.retain(|_, (seen, _)| *seen > start);
            self.sweeps += 1;
            self.sweep_at = (2 * self.origins.len())
                .max(4 * (self.sent.len() + 1024))
                .max(Self::FIRST_SWEEP);
        }
    }

    /// Codes sent in the window before `now` (but no later than `settle` before it) and codes
    /// verified in the window, by `key`.
    fn tally<K: Ord>(
        &self,
        now: DateTime<Utc>,
        settle: Duration,
        key: impl Fn(&str, Option<&'static str>) -> Option<K>,
    ) -> BTreeMap<K, Rate> {
        let start = chrono::Duration::from_std(self.window)
            .map(|w| now - w)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let settled = chrono::Duration::from_std(settle)
            .map(|s| now - s)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut rates: BTreeMap<K, Rate> = BTreeMap::new();
        for (t, range, region) in &self.sent {
            if *t > start && *t <= settled {
                if let Some(k) = key(range, *region) {
                    rates.entry(k).or_default().sent += 1;
                }
            }
        }
        for (t, range, region) in &self.verified {
            if *t > start {
                if let Some(k) = key(range, *region) {
                    rates.entry(k).or_default().verified += 1;
                }
            }
        }
        rates
    }

    /// Codes sent and verified per number range (E.164 without its last three digits) in the
    /// window before `now`.
    pub fn by_range(&self, now: DateTime<Utc>) -> BTreeMap<String, Rate> {
        self.tally(now, Duration::ZERO, |range, _| Some(range.to_owned()))
    }

    /// As [`Conversion::by_range`], counting only codes sent at least `settle` before `now`:
    /// a code younger than its lifetime may still be verified, so counting it would make a
    /// burst of honest sign-ups look unanswered. Verifications count as they come, so the
    /// figure errs toward a healthy range.
    pub fn by_range_settled(&self, now: DateTime<Utc>, settle: Duration) -> BTreeMap<String, Rate> {
        self.tally(now, settle, |range, _| Some(range.to_owned()))
    }

    /// The same per region (ISO 3166 country; non-geographic numbers are left out).
    pub fn by_region(&self, now: DateTime<Utc>) -> BTreeMap<&'static str, Rate> {
        self.tally(now, Duration::ZERO, |_, region| region)
    }
}

/// The figures per number range that the command service's send budgets read
/// ([`crate::AbusePolicy::range_collapse`]): a snapshot a host publishes from its
/// [`Conversion`] (the server does so each time its projection catches up), cheap to clone and
/// to read from every command. Empty until the first publication: no range has collapsed.
///
/// ```
/// use std::time::Duration;
/// use otp_sms_core::conversion::{Conversion, RangeSignal};
/// let signal = RangeSignal::new();
/// let conversion = Conversion::new(Duration::from_secs(3600));
/// signal.publish(&conversion, chrono::Utc::now());
/// assert_eq!(signal.rate("+41791234").sent, 0);
/// // CommandService::new(..).with_range_signal(signal.clone())
/// ```
#[derive(Debug, Clone)]
pub struct RangeSignal {
    rates: Arc<RwLock<Arc<HashMap<String, Rate>>>>,
    settle: Duration,
}

impl Default for RangeSignal {
    fn default() -> Self {
        Self {
            rates: Arc::default(),
            settle: Self::DEFAULT_SETTLE,
        }
    }
}

impl RangeSignal {
    /// How old a code must be before it counts as unanswered by default: the default code
    /// lifetime ([`crate::CodePolicy`]), 5 minutes.
    pub const DEFAULT_SETTLE: Duration = Duration::from_secs(5 * 60);

    /// A signal with no figures yet, counting codes once they are [`Self::DEFAULT_SETTLE`] old.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts codes sent only once they are `settle` old (the codes' lifetime: until then a
    /// code may still be verified).
    pub fn settling(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// Replaces the figures with `conversion`'s per range in the window before `now`, codes
    /// younger than the settling time left out ([`Conversion::by_range_settled`]).
    pub fn publish(&self, conversion: &Conversion, now: DateTime<Utc>) {
        let rates: HashMap<String, Rate> = conversion
            .by_range_settled(now, self.settle)
            .into_iter()
            .collect();
        *self.rates.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rates);
    }

    /// The figures of `range` (E.164 without its last three digits): zero when none were
    /// published.
    pub fn rate(&self, range: &str) -> Rate {
        self.rates
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(range)
            .copied()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Added, CodeSent, Verified};
    use crate::store::StreamId;
    use crate::{InstanceId, OrganizationId, Phone, PrincipalId, UserId};

    fn recorded(position: u64, id: &str, at: DateTime<Utc>, event: Event) -> RecordedEvent<Event> {
        RecordedEvent {
            stream: StreamId::new(
                "inst".parse::<InstanceId>().unwrap(),
                crate::AGGREGATE_TYPE,
                id,
            ),
            sequence: 1,
            position,
            created_at: at,
            creator: "p".parse::<PrincipalId>().unwrap(),
            owner: "o".parse::<OrganizationId>().unwrap(),
            command: None,
            event,
        }
    }

    /// A feed of `n` events answering only `read_all`, counting its calls.
    struct Feed {
        events: Vec<RecordedEvent<Event>>,
        reads: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl EventStore<Event> for Feed {
        async fn read_stream(&self, _: &StreamId) -> Result<crate::Recorded<Event>, StoreError> {
            Err(StoreError::Internal("not in this test".into()))
        }
        async fn append(
            &self,
            _: crate::Append<Event>,
        ) -> Result<crate::AppendOutcome, StoreError> {
            Err(StoreError::Internal("not in this test".into()))
        }
        async fn read_all(
            &self,
            after: u64,
            limit: usize,
        ) -> Result<crate::Recorded<Event>, StoreError> {
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(self
                .events
                .iter()
                .filter(|e| e.position > after)
                .take(limit)
                .map(|e| std::sync::Arc::new(e.clone()))
                .collect())
        }
        async fn fetch_outbox(
            &self,
            _: usize,
            _: Duration,
        ) -> Result<Vec<crate::OutboxMessage>, StoreError> {
            Ok(Vec::new())
        }
        async fn delete_outbox(&self, _: uuid::Uuid) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn retry_outbox(&self, _: uuid::Uuid, _: Duration) -> Result<bool, StoreError> {
            Ok(false)
        }
        async fn outbox_stats(&self) -> Result<crate::OutboxStats, StoreError> {
            Ok(Default::default())
        }
    }

    /// A long history is read a bounded step at a time: 2,500 events take three pages, and a
    /// step of one page reads one.
    #[tokio::test]
    async fn the_feed_is_read_a_bounded_step_at_a_time() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let events = (1..=2_500)
            .map(|i| {
                recorded(
                    i,
                    &format!("r{i}"),
                    t0,
                    Event::CodeSent(CodeSent { number: 1 }),
                )
            })
            .collect();
        let feed = Feed {
            events,
            reads: Default::default(),
        };
        let mut conversion = Conversion::new(Duration::from_secs(3600));
        assert_eq!(conversion.catch_up_at_most(&feed, 1).await, Ok(false));
        assert_eq!(conversion.position, 1_000);
        assert_eq!(conversion.catch_up_at_most(&feed, 5).await, Ok(true));
        assert_eq!(conversion.position, 2_500);
        // One page for the first step, three more (the last one empty) for the rest.
        assert_eq!(feed.reads.load(std::sync::atomic::Ordering::Relaxed), 1 + 3);
        assert_eq!(conversion.catch_up(&feed).await, Ok(()));
    }

    /// Given 20,000 registrations added within the window with their codes returned (none
    /// sent), the registrations are swept a handful of times, not once per event; an hour
    /// later, the next sweep drops every one of them.
    #[test]
    fn registrations_in_the_window_are_swept_a_bounded_number_of_times() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut conversion = Conversion::new(Duration::from_secs(3600));
        let added = Event::Added(Added {
            user: "u".parse::<UserId>().unwrap(),
            organization: "o".parse::<OrganizationId>().unwrap(),
            phone: Phone::parse("+41791234567").unwrap(),
        });
        for i in 1..=20_000 {
            conversion.apply(&recorded(i, &format!("r{i}"), t0, added.clone()));
        }
        assert_eq!(conversion.origins.len(), 20_000);
        // At 4,097, 8,195 and 16,391 registrations: each sweep doubles the next threshold.
        assert_eq!(conversion.sweeps, 3);
        let later = t0 + chrono::Duration::seconds(3601);
        let mut i = 20_000;
        while conversion.sweeps == 3 {
            i += 1;
            conversion.apply(&recorded(i, &format!("r{i}"), later, added.clone()));
        }
        // The sweep that came kept only the registrations of the last hour.
        assert_eq!(conversion.origins.len() as u64, i - 20_000);
    }

    /// Given a pumped range (20 codes to sequential numbers, one verified) and an honest one
    /// (10 codes, 9 verified), the pumped range's conversion collapses; an hour later both have
    /// left the window.
    #[test]
    fn a_pumped_range_shows_a_collapsed_conversion() {
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut conversion = Conversion::new(Duration::from_secs(3600));
        let mut position = 0;
        let mut add = |c: &mut Conversion, id: &str, number: &str, verify: bool, at: i64| {
            let at = t0 + chrono::Duration::seconds(at);
            let mut push = |event| {
                position += 1;
                c.apply(&recorded(position, id, at, event));
            };
            push(Event::Added(Added {
                user: "u".parse::<UserId>().unwrap(),
                organization: "o".parse::<OrganizationId>().unwrap(),
                phone: Phone::parse(number).unwrap(),
            }));
            push(Event::CodeSent(CodeSent { number: 1 }));
            if verify {
                push(Event::Verified(Verified { code: Some(1) }));
            }
        };
        for i in 0..20 {
            add(
                &mut conversion,
                &format!("p{i}"),
                &format!("+4179123{:04}", 4000 + i),
                i == 0,
                i,
            );
        }
        for i in 0..10 {
            add(
                &mut conversion,
                &format!("h{i}"),
                &format!("+49151123{:05}", 10_000 + i * 1000),
                i < 9,
                30 + i,
            );
        }
        let now = t0 + chrono::Duration::seconds(60);
        let ranges = conversion.by_range(now);
        // Twenty sequential numbers of one range, one verification.
        assert_eq!(
            ranges["+41791234"],
            Rate {
                sent: 20,
                verified: 1
            }
        );
        assert_eq!(
            ranges["+4915112310"],
            Rate {
                sent: 1,
                verified: 1
            }
        );
        let regions = conversion.by_region(now);
        assert_eq!(
            regions["CH"],
            Rate {
                sent: 20,
                verified: 1
            }
        );
        assert_eq!(
            regions["DE"],
            Rate {
                sent: 10,
                verified: 9
            }
        );
        assert!(regions["CH"].ratio() < 0.1 && regions["DE"].ratio() > 0.8);
        // Settled: at 60 s, codes sent at 0..=10 s are 50 s old or more; the others are not
        // counted yet, while the one verification counts as it came.
        let settled = conversion.by_range_settled(now, Duration::from_secs(50));
        assert_eq!(
            settled["+41791234"],
            Rate {
                sent: 11,
                verified: 1
            }
        );
        let signal = RangeSignal::new().settling(Duration::from_secs(50));
        signal.publish(&conversion, now);
        assert_eq!(signal.rate("+41791234").sent, 11);
        assert_eq!(signal.rate("+41000000"), Rate::default(), "no figures");
        // By default a code counts once it is five minutes old.
        let by_default = RangeSignal::new();
        by_default.publish(&conversion, now);
        assert_eq!(by_default.rate("+41791234").sent, 0);
        by_default.publish(&conversion, t0 + chrono::Duration::seconds(320));
        assert_eq!(by_default.rate("+41791234").sent, 20);
        // Out of the window an hour later.
        let later = t0 + chrono::Duration::seconds(3700);
        assert!(conversion.by_region(later).is_empty());
    }
}
