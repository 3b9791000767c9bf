//! The in-process idempotency store.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use foldhash::fast::RandomState;
use parking_lot::Mutex;

use super::{Claim, IdempotencyRecord, IdempotencyScope, IdempotencyStore};
use crate::ports::{Clock, PortError, SystemClock};

struct Entry {
    record: IdempotencyRecord,
    at: DateTime<Utc>,
    until: DateTime<Utc>,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<IdempotencyScope, Entry, RandomState>,
    /// The size at which the shard next drops its lapsed records (doubles, so sweeping costs
    /// amortised constant time per claim).
    sweep_at: usize,
}

const SHARDS: usize = 16;
const FIRST_SWEEP: usize = 64;

/// An [`IdempotencyStore`] in this process's memory: the default of
/// [`crate::CommandService::new`]. Right for one process; several processes serving one
/// instance need a shared store (`otp_sms_postgres::PgIdempotency`). Records lapse on `clock`.
pub struct MemoryIdempotency {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
}

impl Default for MemoryIdempotency {
    fn default() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }
}

impl std::fmt::Debug for MemoryIdempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: usize = self.shards.iter().map(|s| s.lock().entries.len()).sum();
        f.debug_struct("MemoryIdempotency")
            .field("keys", &keys)
            .finish()
    }
}

impl MemoryIdempotency {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose records lapse on `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::default(),
            clock,
        }
    }

    /// How many records are kept, lapsed ones not yet dropped included (for tests).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().entries.len()).sum()
    }

    /// Whether no record is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn claim(
        &self,
        scope: &IdempotencyScope,
        record: &IdempotencyRecord,
        keep: Duration,
    ) -> Result<Claim, PortError> {
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let shard = &self.shards[(self.hasher.hash_one(scope) as usize) % SHARDS];
        let mut shard = shard.lock();
        if shard.entries.len() >= shard.sweep_at.max(FIRST_SWEEP) {
            shard.entries.retain(|_, e| e.until > now);
            shard.sweep_at = (shard.entries.len() * 2).max(FIRST_SWEEP);
        }
        if let Some(existing) = shard.entries.get(scope).filter(|e| e.until > now) {
            return Ok(Claim::Existing {
                record: existing.record.clone(),
                at: existing.at,
            });
        }
        shard.entries.insert(
            scope.clone(),
            Entry {
                record: record.clone(),
                at: now,
                until,
            },
        );
        Ok(Claim::New)
    }
}
