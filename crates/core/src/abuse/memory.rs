//! The in-process budget store: exact sliding windows and held slots under one lock.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;

use super::budget::{BudgetStore, Rule, TakeOutcome, TakeRequest};
use crate::ports::{Clock, PortError, SystemClock};

/// One entry: when it was taken, and until when it counts (`None`: for good).
#[derive(Debug, Clone)]
struct Entry {
    member: String,
    at: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
}

/// A key's entries, oldest first.
#[derive(Debug, Default)]
struct Entries(VecDeque<Entry>);

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Entries {
    fn live(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Entry> {
        self.0
            .iter()
            .filter(move |e| e.until.map_or(true, |u| u > now))
    }

    /// Drops entries that no longer count.
    fn prune(&mut self, now: DateTime<Utc>) {
        self.0.retain(|e| e.until.map_or(true, |u| u > now));
    }

    /// `None` if `rule` admits one more entry now, else when it will (inner `None`: not by
    /// time alone).
    fn refusal(&self, rule: &Rule, now: DateTime<Utc>) -> Option<Option<Duration>> {
        match *rule {
            Rule::Window { max: 0, .. } => Some(None),
            Rule::Window { max, window } => {
                let since = now - chrono(window);
                // Entries are in time order: those inside the window are a suffix.
                let start = self.0.partition_point(|e| e.at <= since);
                let inside = self.0.len() - start;
                (inside >= max as usize).then(|| {
                    // One more is admitted once the oldest entry that must leave has left.
                    let leaving = &self.0[start + inside - max as usize];
                    (leaving.at + chrono(window) - now).to_std().ok()
                })
            }
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

/// A [`BudgetStore`] in this process's memory: the default of
/// [`crate::CommandService::new`]. Correct for one process; several processes serving one
/// instance need a shared store (`otp_sms_postgres::PgBudgets`). Windows follow `clock`.
pub struct MemoryBudgets {
    keys: Mutex<HashMap<String, Entries>>,
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
            keys: Mutex::new(HashMap::new()),
            clock,
        }
    }

    /// How many entries count under `key` now (for tests and debugging).
    pub fn count(&self, key: &str) -> usize {
        let now = self.clock.now();
        self.keys
            .lock()
            .get(key)
            .map_or(0, |entries| entries.live(now).count())
    }
}

impl std::fmt::Debug for MemoryBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBudgets")
            .field("keys", &self.keys.lock().len())
            .finish()
    }
}

#[async_trait]
impl BudgetStore for MemoryBudgets {
    async fn take(&self, request: &TakeRequest) -> Result<TakeOutcome, PortError> {
        let now = self.clock.now();
        let mut keys = self.keys.lock();
        for (i, take) in request.takes.iter().enumerate() {
            let Some(entries) = keys.get_mut(&take.key) else {
                continue;
            };
            entries.prune(now);
            let adds = take.rules.iter().any(Rule::adds);
            if adds && entries.0.iter().any(|e| e.member == take.member) {
                return Err(PortError::Internal(format!(
                    "budget entry `{}` taken twice",
                    take.member
                )));
            }
            for rule in &take.rules {
                if let Some(retry_after) = entries.refusal(rule, now) {
                    return Ok(TakeOutcome::Refused {
                        take: i,
                        retry_after,
                    });
                }
            }
        }
        for take in request
            .takes
            .iter()
            .filter(|t| t.rules.iter().any(Rule::adds))
        {
            let keep = take.rules.iter().map(Rule::keep).max().unwrap_or_default();
            let entries = keys.entry(take.key.clone()).or_default();
            let entry = Entry {
                member: take.member.clone(),
                at: now,
                until: Some(now + chrono(keep)),
            };
            // A clock set back keeps the order: the entry goes where its time puts it.
            let at = entries.0.partition_point(|e| e.at <= now);
            entries.0.insert(at, entry);
        }
        Ok(TakeOutcome::Taken)
    }

    async fn refund(&self, request: &TakeRequest) -> Result<(), PortError> {
        let mut keys = self.keys.lock();
        for take in &request.takes {
            if let Some(entries) = keys.get_mut(&take.key) {
                entries.0.retain(|e| e.member != take.member);
            }
        }
        Ok(())
    }

    async fn hold(
        &self,
        key: &str,
        member: &str,
        hold: Option<Duration>,
    ) -> Result<bool, PortError> {
        let now = self.clock.now();
        let mut keys = self.keys.lock();
        let entry = keys
            .get_mut(key)
            .and_then(|entries| entries.0.iter_mut().find(|e| e.member == member));
        Ok(match entry {
            Some(entry) => {
                entry.until = hold.map(|h| now + chrono(h));
                true
            }
            None => false,
        })
    }

    async fn release(&self, key: &str, member: &str) -> Result<bool, PortError> {
        let mut keys = self.keys.lock();
        let Some(entries) = keys.get_mut(key) else {
            return Ok(false);
        };
        let before = entries.0.len();
        entries.0.retain(|e| e.member != member);
        Ok(entries.0.len() < before)
    }

    async fn members(&self, key: &str) -> Result<Vec<String>, PortError> {
        let now = self.clock.now();
        Ok(self.keys.lock().get(key).map_or_else(Vec::new, |entries| {
            entries.live(now).map(|e| e.member.clone()).collect()
        }))
    }

    async fn clear(&self, key: &str) -> Result<u64, PortError> {
        let now = self.clock.now();
        Ok(self
            .keys
            .lock()
            .remove(key)
            .map_or(0, |entries| entries.live(now).count() as u64))
    }
}
