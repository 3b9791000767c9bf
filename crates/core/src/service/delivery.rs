//! The notifier's pass over the delivery outbox: send each code that is still due, record
//! `code sent`, delete the message.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::CommandService;
use crate::aggregate::{Registration, Status};
use crate::error::Error;
use crate::ids::{InstanceId, OrganizationId, RegistrationId, UserId};
use crate::keys::{CodeBinding, SealedCode};
use crate::phone::Phone;
use crate::ports::{Sms, SmsSender, UserRecord};

/// What the notifier did in one pass over the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryReport {
    /// Codes handed to the SMS sender and recorded as sent.
    pub sent: usize,
    /// Messages deleted unsent: code expired, replaced, already sent, registration verified
    /// or removed, or the message unreadable.
    pub dropped: usize,
    /// Messages left for a later attempt because the sender or the store failed.
    pub failed: usize,
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
}

impl CommandService {
    /// One pass of the SMS notifier over the delivery outbox: sends each pending code that is
    /// still the registration's current, unsent, unexpired code; records `code sent`; deletes
    /// the message. A code that can no longer be used is deleted unsent. A failed send leaves
    /// the message for another pass once its lease runs out (at least once delivery).
    pub async fn deliver_pending(
        &self,
        sender: &dyn SmsSender,
        limit: usize,
        lease: Duration,
    ) -> Result<DeliveryReport, Error> {
        let mut report = DeliveryReport::default();
        for message in self.store.fetch_outbox(limit, lease).await? {
            let delivery: CodeDelivery = match serde_json::from_value(message.payload) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(message_id = %message.id, error = %e, "unreadable outbox message dropped");
                    self.store.delete_outbox(message.id).await?;
                    report.dropped += 1;
                    continue;
                }
            };
            match self.deliver_one(sender, &delivery).await {
                Ok(true) => report.sent += 1,
                Ok(false) => report.dropped += 1,
                Err(e) => {
                    tracing::warn!(message_id = %message.id, registration = %delivery.registration, error = %e, "SMS delivery failed; will retry");
                    report.failed += 1;
                    continue;
                }
            }
            self.store.delete_outbox(message.id).await?;
        }
        Ok(report)
    }

    /// Sends one delivery if it is still due. `Ok(false)`: not due, drop it.
    async fn deliver_one(&self, sender: &dyn SmsSender, d: &CodeDelivery) -> Result<bool, Error> {
        let stream = Self::stream_id(&d.instance, &d.registration);
        let history = self.store.read_stream(&stream).await?;
        let state = Registration::from_events(history.iter().map(|r| &r.event));
        let due = state.status == Status::Unverified
            && state.user.as_ref() == Some(&d.user)
            && state
                .pending
                .as_ref()
                .is_some_and(|p| p.number == d.number && !p.sent)
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
        let sms = Sms {
            instance: d.instance.clone(),
            registration: d.registration.clone(),
            phone: d.phone.clone(),
            code,
            expires_at: d.expires_at,
        };
        sender.send(&sms).await?;
        let user = UserRecord {
            id: d.user.clone(),
            organization: d.organization.clone(),
        };
        match self
            .record_code_sent(&d.instance, &user, &d.registration, d.number)
            .await
        {
            // Verified or replaced meanwhile: the SMS went out, nothing left to record.
            Ok(_) | Err(Error::FailedPrecondition(_)) | Err(Error::RegistrationNotFound) => {
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }
}
