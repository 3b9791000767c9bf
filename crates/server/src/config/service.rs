//! `[service]`, `[database]` and `[policy]`: the command service, how long it waits on
//! PostgreSQL, and the code policy.

use std::time::Duration;

use otp_sms_core::CodePolicy;
use serde::Deserialize;

use super::ConfigError;

/// `[service]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Attempts per command before a write conflict answers ABORTED (409).
    pub max_attempts: u32,
    /// Streams whose confirmed history the service keeps, with PostgreSQL, so that a command
    /// on a recently used registration skips its read (0: none). Unused with the in-memory
    /// store, whose reads cost what a cache look-up does.
    pub stream_cache: usize,
    /// How long an idempotency key stands for its first call, in seconds (default 86,400:
    /// 24 hours); a retry under the key within it gets the first answer.
    pub idempotency_window_secs: u64,
    /// Idempotency keys one caller may hold within that window; one more new key is
    /// RESOURCE_EXHAUSTED (HTTP 429) and nothing is stored. 0: no cap.
    pub idempotency_keys_per_caller: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            max_attempts: otp_sms_core::CommandService::DEFAULT_MAX_ATTEMPTS,
            stream_cache: otp_sms_core::StreamCache::DEFAULT_CAPACITY,
            idempotency_window_secs: otp_sms_core::DEFAULT_IDEMPOTENCY_WINDOW.as_secs(),
            idempotency_keys_per_caller: otp_sms_core::DEFAULT_IDEMPOTENCY_KEYS_PER_CALLER,
        }
    }
}

/// `[database]`: bounded waits on PostgreSQL (`otp_sms_postgres::Timeouts`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Opening a connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// One call on the wire, in milliseconds: past it the call answers UNAVAILABLE.
    pub operation_timeout_ms: u64,
    /// `statement_timeout` of the store's worker connections, in milliseconds.
    pub statement_timeout_ms: u64,
    /// `lock_timeout` of the store's worker connections, in milliseconds.
    pub lock_timeout_ms: u64,
    /// Appends (and reads) that may wait at once; more are refused as UNAVAILABLE.
    pub queue: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        let t = otp_sms_postgres::Timeouts::default();
        Self {
            connect_timeout_ms: t.connect.as_millis() as u64,
            operation_timeout_ms: t.operation.as_millis() as u64,
            statement_timeout_ms: t.statement.as_millis() as u64,
            lock_timeout_ms: t.lock.as_millis() as u64,
            queue: t.queue,
        }
    }
}

impl DatabaseConfig {
    /// The store's timeouts; every figure must be positive.
    pub fn timeouts(&self) -> Result<otp_sms_postgres::Timeouts, String> {
        let ms = |name: &str, v: u64| {
            if v == 0 {
                Err(format!("[database] {name} must be at least 1"))
            } else {
                Ok(std::time::Duration::from_millis(v))
            }
        };
        if self.queue == 0 {
            return Err("[database] queue must be at least 1".into());
        }
        Ok(otp_sms_postgres::Timeouts {
            connect: ms("connect_timeout_ms", self.connect_timeout_ms)?,
            operation: ms("operation_timeout_ms", self.operation_timeout_ms)?,
            statement: ms("statement_timeout_ms", self.statement_timeout_ms)?,
            lock: ms("lock_timeout_ms", self.lock_timeout_ms)?,
            queue: self.queue,
        })
    }
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Digits per code (7..=12).
    pub code_length: usize,
    /// Seconds a code is valid (1..=600).
    pub code_lifetime_secs: u64,
    /// Wrong attempts that burn a code (1..=100).
    pub max_failed_checks: u32,
    /// Least seconds between two codes of one registration.
    pub resend_interval_secs: u64,
    /// Most codes per registration per hour (1..=32).
    pub max_codes_per_hour: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let p = CodePolicy::default();
        Self {
            code_length: p.length(),
            code_lifetime_secs: p.lifetime().as_secs(),
            max_failed_checks: p.max_failed_checks(),
            resend_interval_secs: p.resend_interval().as_secs(),
            max_codes_per_hour: p.max_codes_per_hour(),
        }
    }
}

impl PolicyConfig {
    /// The validated policy.
    pub fn policy(&self) -> Result<CodePolicy, ConfigError> {
        CodePolicy::new(
            self.code_length,
            Duration::from_secs(self.code_lifetime_secs),
            self.max_failed_checks,
            Duration::from_secs(self.resend_interval_secs),
            self.max_codes_per_hour,
        )
        .map_err(|e| ConfigError::Invalid(format!("[policy]: {e}")))
    }
}
