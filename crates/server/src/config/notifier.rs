//! `[notifier]`: how the delivery outbox is drained.

use serde::Deserialize;

/// `[notifier]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifierConfig {
    /// Pause between two passes over the outbox.
    pub interval_ms: u64,
    /// Messages per pass.
    pub batch: usize,
    /// How long a fetched message stays with this notifier before another may take it. Each
    /// send must end a quarter of it before it runs out.
    pub lease_secs: u64,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// Attempts before a message is given up as `delivery failed`.
    pub max_attempts: u32,
    /// The wait after the first failed attempt, doubling with each, in milliseconds.
    pub backoff_ms: u64,
    /// The longest wait between attempts, in milliseconds.
    pub max_backoff_ms: u64,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        let policy = otp_sms_core::DeliveryPolicy::default();
        Self {
            interval_ms: 500,
            batch: 100,
            lease_secs: 60,
            concurrency: policy.concurrency,
            max_attempts: policy.max_attempts,
            backoff_ms: policy.backoff.as_millis() as u64,
            max_backoff_ms: policy.max_backoff.as_millis() as u64,
        }
    }
}

impl NotifierConfig {
    /// The notifier's pace: interval, batch and lease.
    pub fn settings(&self) -> otp_sms_core::NotifierSettings {
        otp_sms_core::NotifierSettings {
            interval: std::time::Duration::from_millis(self.interval_ms),
            batch: self.batch,
            lease: std::time::Duration::from_secs(self.lease_secs),
        }
    }

    /// The service's delivery policy.
    pub fn delivery_policy(&self) -> otp_sms_core::DeliveryPolicy {
        otp_sms_core::DeliveryPolicy {
            concurrency: self.concurrency.max(1),
            max_attempts: self.max_attempts.max(1),
            backoff: std::time::Duration::from_millis(self.backoff_ms),
            max_backoff: std::time::Duration::from_millis(self.max_backoff_ms.max(self.backoff_ms)),
        }
    }
}
