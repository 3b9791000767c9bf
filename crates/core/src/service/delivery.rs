//! The notifier's pass over the delivery outbox: send each code that is still due, record
//! `code sent`, delete the message.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use futures_util::stream::{self, StreamExt};
use uuid::Uuid;

use super::attempt::Attempt;
use super::span::traced;
use super::CommandService;
use crate::aggregate::{Command, Registration};
use crate::caller::Caller;
use crate::error::Error;
use crate::ids::{InstanceId, OrganizationId, PrincipalId, RegistrationId, UserId};
use crate::keys::{CodeBinding, SealedCode};
use crate::message::Purpose;
use crate::phone::Phone;
use crate::ports::{PortError, Sms, SmsSender, UserRecord};
use crate::store::{OutboxMessage, OutboxStats};

/// What the notifier did in one pass over the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryReport {
    /// Codes handed to the SMS sender.
    pub sent: usize,
    /// Messages deleted unsent: code expired, replaced, already sent, registration verified
    /// or removed, or the message unreadable.
    pub dropped: usize,
    /// Messages whose send failed and that wait for their next attempt (back-off).
    pub deferred: usize,
    /// Messages given up on: `delivery failed` recorded, the message deleted.
    pub undeliverable: usize,
    /// Messages left to their lease: the store failed, or the pass ran out of time before
    /// their turn.
    pub failed: usize,
}

/// How the notifier sends: how many at once, how it backs off, and when it gives up.
///
/// ```
/// use std::time::Duration;
/// let policy = otp_sms_core::DeliveryPolicy {
///     max_attempts: 3,
///     ..Default::default()
/// };
/// assert_eq!(policy.backoff_for(1), Duration::from_secs(1));
/// assert_eq!(policy.backoff_for(3), Duration::from_secs(4));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Sends in flight at once within one pass (default 8).
    pub concurrency: usize,
    /// Attempts before a message is given up as `delivery failed` (default 5).
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles with each attempt (default 1 s).
    pub backoff: Duration,
    /// The longest wait between attempts (default 60 s).
    pub max_backoff: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl DeliveryPolicy {
    /// The wait after failed attempt `attempt` (1 for the first).
    pub fn backoff_for(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

/// What became of one message.
enum Outcome {
    Sent,
    Dropped,
    Deferred,
    Undeliverable,
    Failed,
}

/// Why one delivery did not happen.
enum Failure {
    /// The sender failed: retryable (`Unavailable`) or final (`Internal`).
    Send(PortError),
    /// The store or the key ring failed: the message waits for its lease.
    Other(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Other(e)
    }
}

/// The body of a delivery outbox message. The code is encrypted; the message is deleted once
/// the SMS is handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeDelivery {
    /// The tenant.
    pub instance: InstanceId,
    /// The user.
    pub user: UserId,
    /// The user's organization.
    pub organization: OrganizationId,
    /// The registration.
    pub registration: RegistrationId,
    /// Which code.
    pub number: u32,
    /// Where to send it.
    pub phone: Phone,
    /// The code, encrypted and bound to registration and number.
    pub sealed: SealedCode,
    /// After this the code is dropped, not sent late.
    pub expires_at: DateTime<Utc>,
    /// What the code is for (messages written before sign-in existed: a registration).
    #[serde(default)]
    pub purpose: Purpose,
}

/// How long before its lease ends a pass stops sending: a quarter of the lease, at least half
/// a second, at most half the lease.
fn send_margin(lease: Duration) -> Duration {
    (lease / 4).max(Duration::from_millis(500)).min(lease / 2)
}

impl CommandService {
    /// One pass of the SMS notifier over the delivery outbox, up to `limit` messages leased
    /// for `lease`, sent [`DeliveryPolicy::concurrency`] at a time. Each pending code that is
    /// still the registration's current, unsent, unexpired code is handed to `sender` with a
    /// deadline the lease outlives; then `code sent` is recorded and the message deleted. A
    /// code that can no longer be used is deleted unsent. A send that failed retryably is
    /// tried again after a back-off that doubles; at [`DeliveryPolicy::max_attempts`], or at
    /// once when the provider refused it for good, `delivery failed` is recorded and the
    /// message deleted. One message's failure touches no other. When the sender states
    /// [`SmsSender::max_send_time`], the lease is at least that long plus a margin, and a
    /// send starts only with that much of the pass left: no send is cut short by the pass.
    ///
    /// Guarantees: while leases hold, one hand-over per message; across crashes of a notifier
    /// (between the hand-over and the delete) at least once, with the same
    /// [`Sms::message_id`] so a receiver can drop the repeat.
    pub async fn deliver_pending(
        &self,
        sender: &dyn SmsSender,
        limit: usize,
        lease: Duration,
    ) -> Result<DeliveryReport, Error> {
        let fetched_at = self.clock.now();
        let concurrency = self.delivery.concurrency.max(1);
        // A sender that states how long a send may take gets it whole: the lease is long
        // enough for one, the pass fetches no more than it can start with that much left, and
        // a message whose turn comes later waits for the next pass. No send the notifier
        // starts is cut short by it, so a slow provider is never handed a message twice.
        let budget = sender.max_send_time().filter(|b| !b.is_zero());
        let (lease, limit) = match budget {
            Some(budget) => {
                // Long enough that the pass can start a whole send for at least a second
                // after fetching (the sending window is the lease less its margin).
                let lease =
                    lease.max((budget + Duration::from_secs(1)) * 4 / 3 + Duration::from_secs(1));
                let starts = (lease - send_margin(lease)).as_nanos() / budget.as_nanos();
                let most = concurrency
                    .saturating_mul(usize::try_from(starts).unwrap_or(usize::MAX).max(1));
                (lease, limit.min(most))
            }
            None => (lease, limit),
        };
        let deadline = fetched_at
            + chrono::Duration::from_std(lease - send_margin(lease))
                .unwrap_or(chrono::Duration::zero());
        let start_by = deadline
            - budget
                .and_then(|b| chrono::Duration::from_std(b).ok())
                .unwrap_or(chrono::Duration::zero());
        let messages = self.store.fetch_outbox(limit, lease).await?;
        if messages.is_empty() {
            return Ok(DeliveryReport::default());
        }
        // A pass with work is a trace of its own: each send is a child of it.
        let count = messages.len();
        let sends = stream::iter(messages)
            .map(|message| self.deliver_message(sender, message, start_by, deadline))
            .buffer_unordered(concurrency)
            .collect();
        let outcomes: Vec<Outcome> = traced(sends, || {
            tracing::info_span!("otp_sms.notifier.pass", messages = count)
        })
        .await;
        let mut report = DeliveryReport::default();
        for outcome in outcomes {
            match outcome {
                Outcome::Sent => report.sent += 1,
                Outcome::Dropped => report.dropped += 1,
                Outcome::Deferred => report.deferred += 1,
                Outcome::Undeliverable => report.undeliverable += 1,
                Outcome::Failed => report.failed += 1,
            }
        }
        crate::metrics::delivery_pass(
            report.sent,
            report.undeliverable,
            report.deferred,
            report.dropped,
        );
        let lease_end =
            fetched_at + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        if self.clock.now() > lease_end {
            tracing::warn!(
                "a notifier pass outlived its lease: another notifier may have taken its messages"
            );
        }
        Ok(report)
    }

    /// The outbox's depth and the age of its oldest message, as the store reports them; also
    /// sets the outbox gauges of [`crate::metrics`]. A host calls it when it exports metrics
    /// (the server: on each scrape of `/metrics`) or checks readiness.
    pub async fn outbox_stats(&self) -> Result<(OutboxStats, Duration), Error> {
        let stats = self.store.outbox_stats().await?;
        let age = stats
            .oldest
            .and_then(|at| (self.clock.now() - at).to_std().ok())
            .unwrap_or_default();
        crate::metrics::outbox(stats.depth, age);
        Ok((stats, age))
    }

    /// Delivers, drops, defers or gives up on one message; never fails the pass.
    async fn deliver_message(
        &self,
        sender: &dyn SmsSender,
        message: OutboxMessage,
        start_by: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> Outcome {
        let id = message.id;
        let delivery: CodeDelivery = match serde_json::from_value(message.payload) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(message_id = %id, error = %e, "unreadable outbox message dropped");
                return self.delete(id, Outcome::Dropped).await;
            }
        };
        if self.clock.now() > start_by || self.clock.now() >= deadline {
            // Its turn came too late in the pass for a whole send: its lease brings it back.
            return Outcome::Failed;
        }
        match self
            .deliver_one(sender, &delivery, id, message.attempts, deadline)
            .await
        {
            Ok(true) => self.delete(id, Outcome::Sent).await,
            Ok(false) => self.delete(id, Outcome::Dropped).await,
            Err(Failure::Send(PortError::Unavailable(reason)))
                if message.attempts < self.delivery.max_attempts =>
            {
                let wait = self.delivery.backoff_for(message.attempts);
                tracing::warn!(message_id = %id, registration = %delivery.registration, attempt = message.attempts, error = %reason, retry_in = ?wait, "SMS send failed; will retry");
                match self.store.retry_outbox(id, wait).await {
                    Ok(_) => Outcome::Deferred,
                    Err(e) => {
                        tracing::warn!(message_id = %id, error = %e, "could not defer a message; its lease brings it back");
                        Outcome::Failed
                    }
                }
            }
            Err(Failure::Send(e)) => {
                let reason = match e {
                    PortError::Unavailable(m) => m,
                    PortError::Internal(m) => m,
                };
                tracing::warn!(message_id = %id, registration = %delivery.registration, attempts = message.attempts, error = %reason, "SMS undeliverable; giving up");
                let user = UserRecord {
                    id: delivery.user.clone(),
                    organization: delivery.organization.clone(),
                };
                let caller = Caller::new(delivery.instance.clone(), PrincipalId::system());
                let command = Command::RecordDeliveryFailed {
                    number: delivery.number,
                    attempts: message.attempts,
                    reason,
                };
                match self
                    .execute(Attempt::new(
                        &caller,
                        &user,
                        &delivery.registration,
                        &command,
                    ))
                    .await
                {
                    Ok(_) | Err(Error::FailedPrecondition(_) | Error::RegistrationNotFound) => {
                        self.delete(id, Outcome::Undeliverable).await
                    }
                    Err(e) => {
                        tracing::warn!(message_id = %id, error = %e, "could not record a failed delivery; its lease brings it back");
                        Outcome::Failed
                    }
                }
            }
            Err(Failure::Other(e)) => {
                tracing::warn!(message_id = %id, registration = %delivery.registration, error = %e, "SMS delivery failed; its lease brings it back");
                Outcome::Failed
            }
        }
    }

    /// Deletes a message that is done with; `done` unless the store fails (then the message
    /// comes back after its lease and is dropped as sent, or sent again: at least once).
    async fn delete(&self, id: Uuid, done: Outcome) -> Outcome {
        match self.store.delete_outbox(id).await {
            Ok(_) => done,
            Err(e) => {
                tracing::warn!(message_id = %id, error = %e, "could not delete an outbox message");
                match done {
                    Outcome::Sent => Outcome::Sent,
                    _ => Outcome::Failed,
                }
            }
        }
    }

    /// Sends one delivery if it is still due. `Ok(false)`: not due, drop it. A message handed
    /// out before (`attempts` over 1) may have reached the provider without its answer coming
    /// back: the provider is asked first, where it can be ([`SmsSender::was_sent`]).
    async fn deliver_one(
        &self,
        sender: &dyn SmsSender,
        d: &CodeDelivery,
        message_id: Uuid,
        attempts: u32,
        deadline: DateTime<Utc>,
    ) -> Result<bool, Failure> {
        let stream = Self::stream_id(&d.instance, &d.registration);
        let history = self.store.read_stream(&stream).await.map_err(Error::from)?;
        let state = Registration::from_events(history.iter().map(|r| &r.event));
        let due = state.user.as_ref() == Some(&d.user)
            && state.awaits_sms(d.number)
            && self.clock.now() < d.expires_at;
        if !due {
            return Ok(false);
        }
        let binding = CodeBinding {
            registration: &d.registration,
            number: d.number,
        };
        let code = self
            .keys
            .open(binding, &d.sealed)
            .map_err(|e| Error::Internal(e.to_string()))?;
        // The text's language: a directory that cannot answer costs only the default text.
        let locale = match self.users.preferred_language(&d.instance, &d.user).await {
            Ok(locale) => locale,
            Err(e) => {
                tracing::warn!(error = %e, "the user's language is unknown; the default text goes out");
                None
            }
        };
        let sms = Sms {
            instance: d.instance.clone(),
            registration: d.registration.clone(),
            number: d.number,
            phone: d.phone.clone(),
            code,
            expires_at: d.expires_at,
            message_id,
            deadline: deadline.min(d.expires_at),
            locale,
            purpose: d.purpose,
        };
        let held = if attempts > 1 {
            sender.was_sent(&sms).await.map_err(Failure::Send)?
        } else {
            None
        };
        if held == Some(true) {
            tracing::info!(message_id = %sms.message_id, registration = %sms.registration, "an earlier attempt reached the provider: not sent again");
        } else {
            traced(sender.send(&sms), || {
                tracing::info_span!(
                    "otp_sms.sms.send",
                    message_id = %sms.message_id,
                    otp_sms_id = %sms.registration,
                )
            })
            .await
            .map_err(Failure::Send)?;
        }
        let user = UserRecord {
            id: d.user.clone(),
            organization: d.organization.clone(),
        };
        match self
            .record_code_sent(&d.instance, &user, &d.registration, d.number)
            .await
        {
            // Verified or replaced meanwhile: the SMS went out, nothing left to record.
            Ok(_) | Err(Error::FailedPrecondition(_)) | Err(Error::RegistrationNotFound) => {}
            // The SMS went out: the message is deleted all the same, so it is not sent again.
            Err(e) => {
                tracing::warn!(registration = %d.registration, error = %e, "SMS sent, but `code sent` could not be recorded");
            }
        }
        Ok(true)
    }
}
