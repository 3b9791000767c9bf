//! Idempotency keys: a client that retries a call under the key it sent the first time gets
//! the first call's answer, never a second registration or a second SMS.
//!
//! - [`IdempotencyKey`]: the client's key (HTTP `Idempotency-Key`, gRPC `idempotency-key`),
//!   scoped to the instance and principal that sent it ([`IdempotencyScope`]).
//! - [`IdempotencyStore`]: where the record of each key lives, shared by every process on one
//!   store: the in-process [`MemoryIdempotency`] is the default, `otp-sms-postgres` has one
//!   for many servers; both pass `otp-sms-testkit`'s idempotency conformance suite.
//!
//! A record holds what a retry needs to find the first call's outcome, not the outcome: the
//! command id the first call appended under, the registration it named, a fingerprint of the
//! request, and, when the answer carries a code, that code sealed with the key ring. The
//! outcome itself is in the event log: the command's events, or none.

mod memory;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ids::RegistrationId;
use crate::keys::SealedCode;
use crate::ports::PortError;
use crate::store::CommandId;

pub use crate::idempotency_key::{
    IdempotencyKey, IdempotencyScope, IDEMPOTENCY_KEY_PATTERN, MAX_IDEMPOTENCY_KEY_CHARS,
};
pub use memory::MemoryIdempotency;

/// What a key stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// SHA-256 of the call and its request fields (hex): a key sent again with another
    /// request is refused.
    pub fingerprint: String,
    /// The command id the call appends under.
    pub command: CommandId,
    /// The registration the call names (for an add, the one it creates).
    pub registration: RegistrationId,
    /// The code the answer carries (`return_code`), sealed with the key ring; `None` when
    /// the answer has no code.
    pub sealed_code: Option<SealedCode>,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free (or its record had lapsed): the record given is now the key's.
    New,
    /// The key stands for this record, recorded at `at` (the store's clock).
    Existing {
        /// The record.
        record: IdempotencyRecord,
        /// When it was recorded.
        at: DateTime<Utc>,
    },
}

/// Where idempotency records live. Every process serving one instance must share one store,
/// so that a retry that reaches another process finds the key; records lapse after the
/// `keep` each claim names, on the store's clock.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Records `record` under `scope` unless a record younger than `keep` is there, and says
    /// which. Of claims that race on one key, exactly one is [`Claim::New`] and the others
    /// see its record.
    async fn claim(
        &self,
        scope: &IdempotencyScope,
        record: &IdempotencyRecord,
        keep: Duration,
    ) -> Result<Claim, PortError>;
}

/// How long a key stands for its first call by default: 24 hours (the window Stripe keeps
/// keys for, and longer than any client's retries).
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
