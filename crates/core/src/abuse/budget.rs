//! The budget store port: sliding-window budgets and held slots, taken all or none.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ports::PortError;

/// How a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// At most `max` takes in any window of length `window` (an exact sliding window: the
    /// store keeps the time of every take until it leaves the longest window of its key).
    Window {
        /// Takes allowed in the window.
        max: u32,
        /// The window's length.
        window: Duration,
    },
    /// At most `max` entries held at once; a new entry is held for `hold`, unless
    /// [`BudgetStore::release`] ends it earlier.
    Held {
        /// Entries allowed at once.
        max: u32,
        /// How long a new entry counts.
        hold: Duration,
    },
    /// Admits only while no entry counts under the key, and adds none: a gate another take
    /// closes (the user's verification lock). A budget whose rules are all `Absent` takes
    /// nothing.
    Absent,
}

impl Rule {
    /// How long an entry taken under this rule must be kept.
    pub fn keep(&self) -> Duration {
        match *self {
            Rule::Window { window, .. } => window,
            Rule::Held { hold, .. } => hold,
            Rule::Absent => Duration::ZERO,
        }
    }

    /// Whether a take under this rule adds an entry.
    pub fn adds(&self) -> bool {
        !matches!(self, Rule::Absent)
    }
}

/// One budget to take from: a key (scope and subject, e.g. a destination number) and the
/// rules that bound it. A key is either window-counted or held, never both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetTake {
    /// The budget's key, unique per instance, scope and subject.
    pub key: String,
    /// The entry this take adds under the key: one send or one slot. A member already
    /// recorded under the key is admitted without being counted again, so a command that
    /// takes again after a conflict or an unknown outcome counts once.
    pub member: String,
    /// The rules, all of which must admit the take.
    pub rules: Vec<Rule>,
}

/// Budgets to take together, all or none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TakeRequest {
    /// The budgets, each key at most once.
    pub takes: Vec<BudgetTake>,
}

/// An entry that counts under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member, as taken.
    pub member: String,
    /// When it was taken (the store's clock).
    pub at: DateTime<Utc>,
}

/// What a take did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeOutcome {
    /// Every budget admitted the take and holds its entry now.
    Taken,
    /// Nothing was taken: the first budget (by index in [`TakeRequest::takes`]) that
    /// refused, and when it admits a take again (`None`: not by time alone, e.g. a window of
    /// no takes at all).
    Refused {
        /// Index of the refusing budget in the request.
        take: usize,
        /// When it admits a take again.
        retry_after: Option<Duration>,
    },
}

/// Where budget state lives. Every process serving one instance must share one store, so
/// budgets hold across processes; windows are measured on the store's clock (the database's,
/// for PostgreSQL), so a process whose clock is off cannot stretch them.
///
/// A take is all or none: it checks every rule of every budget and adds every entry, or
/// leaves nothing. No budget ever admits more than its rules allow, however many takes run
/// at once: `n` concurrent takes against a budget of `k` take exactly `min(n, k)` when
/// nothing else refuses them. Entries are never taken back: a take whose write then fails
/// stays counted (the budget errs toward sending less), and its retry, with the same
/// member, is not counted again.
#[async_trait]
pub trait BudgetStore: Send + Sync {
    /// Takes from every budget of `request`, or from none.
    async fn take(&self, request: &TakeRequest) -> Result<TakeOutcome, PortError>;

    /// Ends `member`'s entry under `key`. Returns whether it existed.
    async fn release(&self, key: &str, member: &str) -> Result<bool, PortError>;

    /// The entries that count under `key` now, oldest first: each member and when it was
    /// taken (the store's clock).
    async fn members(&self, key: &str) -> Result<Vec<Member>, PortError>;

    /// Ends every entry under `key`. Returns how many counted.
    async fn clear(&self, key: &str) -> Result<u64, PortError>;
}
