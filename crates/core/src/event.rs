//! The events of an OTP SMS registration, its sign-in challenges included: stable names,
//! revisions and JSON payloads.
//!
//! No event holds a code in clear or in a recoverable form: `code added` and `challenge
//! issued` keep only the keyed hash, and a challenge's binding only as a digest. The encrypted copy for the SMS travels in the outbox, which is deleted after delivery.

use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::binding::BindingDigest;
use crate::ids::{OrganizationId, RegistrationId, UserId};
use crate::keys::CodeHash;
use crate::payload::{CodecError, EventPayload};
use crate::phone::Phone;

/// The aggregate type of every registration stream.
pub const AGGREGATE_TYPE: &str = "user.otp_sms";

/// The aggregate type of the streams that record refusals (one stream per refusal, so that
/// an attack's refusals never contend on one stream).
pub const REFUSAL_AGGREGATE_TYPE: &str = "user.otp_sms.refusal";

/// How a code reaches the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// By SMS, through the delivery outbox and the notifier.
    Send,
    /// In the API response, for hosts that deliver it themselves.
    Return,
    /// Nowhere: the number is one of the instance's test numbers, whose code is fixed.
    Test,
}

/// A phone was registered as a second factor for a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Added {
    /// The user the registration belongs to.
    pub user: UserId,
    /// The user's organization, which owns the registration.
    pub organization: OrganizationId,
    /// The phone, in E.164.
    pub phone: Phone,
}

/// A new code was issued; any earlier code is void.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeAdded {
    /// The code's number within the registration: 1, 2, …
    pub number: u32,
    /// The keyed hash of the code; the code itself is not kept.
    pub hash: CodeHash,
    /// When the code was issued (the command service's clock).
    pub issued_at: DateTime<Utc>,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// How it reaches the user.
    pub delivery: Delivery,
}

/// The code was handed to the SMS provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeSent {
    /// Which code.
    pub number: u32,
}

/// The notifier gave up on handing code `number` to the SMS provider: the provider refused it
/// for good, or every attempt failed. No `code sent` follows for it; a resend issues a new
/// code. Holds no code and no number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryFailed {
    /// Which code.
    pub number: u32,
    /// How many times the notifier tried.
    pub attempts: u32,
    /// Why, as the sender reported it (no code, no number), e.g. `SMS webhook answered 400`.
    pub reason: String,
}

/// The SMS provider reported code `number` delivered to the phone (a delivery report, after
/// `code sent`). Informational: verification never waits for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeDelivered {
    /// Which code.
    pub number: u32,
}

/// A wrong code was submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckFailed {
    /// The code that was tried against.
    pub number: u32,
}

/// The registration is verified: the phone is a usable second factor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    /// The code that proved possession, or `None` when added as already verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<u32>,
}

/// The registration was removed; nothing follows this event.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Removed {}

/// Too many wrong codes in a row across the user's registrations: verification of this
/// registration is refused until `until`, an unlock, or (never, while locked) a right code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationLocked {
    /// When the lock ends by itself.
    pub until: DateTime<Utc>,
}

/// A caller with `user.write` lifted the user's verification lock.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VerificationUnlocked {}

/// An abuse rule refused a code or a number: the audit record, for projections and alerts.
/// Holds no code and never a whole number: a number shows its region and range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendRefused {
    /// The scope's configuration key, e.g. `destination_number`.
    pub scope: String,
    /// The budget's subject in redacted form (`CH +41791234xxx`, `203.0.113.0/24`, a user id).
    pub subject: String,
    /// The user the code was for.
    pub user: UserId,
    /// The registration, when it exists (a resend); `None` for a refused add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<RegistrationId>,
    /// Whether the caller was answered as if the code were sent.
    pub silent: bool,
    /// Seconds until the budget admits a code again, when time alone will.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

/// A sign-in challenge was issued for a verified registration: a fresh code, bound to the
/// host's binding (its session or transaction id). A challenge issued later under the same
/// binding replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeIssued {
    /// The code's number within the registration, from the one count that registration
    /// codes use too: `code sent`, `code delivered` and `delivery failed` name it.
    pub number: u32,
    /// The digest of the host's binding.
    pub binding: BindingDigest,
    /// The keyed hash of the code; the code itself is not kept.
    pub hash: CodeHash,
    /// When it was issued (the command service's clock).
    pub issued_at: DateTime<Utc>,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// How it reaches the user.
    pub delivery: Delivery,
}

/// The challenge's code was handed to the SMS provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeSent {
    /// Which challenge.
    pub number: u32,
}

/// A check with the right code, in time and under the challenge's binding: the user proved
/// they hold the phone. The challenge is consumed; a host stamps its session from this event
/// (the factor `sms`, checked at `checked_at`, by the registration of the stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeSucceeded {
    /// Which challenge.
    pub number: u32,
    /// The binding it was checked under.
    pub binding: BindingDigest,
    /// When (the command service's clock).
    pub checked_at: DateTime<Utc>,
}

/// A sign-in check failed on its code: a wrong code for the binding's challenge, or a code
/// under a binding that has no challenge of this registration (`number` is then `None`). It
/// counts toward the user's consecutive-failure lock like a registration's `check failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeCheckFailed {
    /// The challenge tried against, if the binding had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    /// The binding the check came under.
    pub binding: BindingDigest,
}

/// The challenge took as many wrong codes as the policy allows and is void; it follows the
/// `challenge check failed` that burnt it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeBurnt {
    /// Which challenge.
    pub number: u32,
}

/// A check came after the challenge's lifetime: the challenge is void (recorded by that
/// check; an expired challenge nobody checks records nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChallengeExpired {
    /// Which challenge.
    pub number: u32,
}

/// Every event of a registration.
///
/// Non-exhaustive: a host's projection keeps a `_` arm, so that a later event type (a new
/// capability) does not break it; it ignores what it does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// See [`Added`].
    Added(Added),
    /// See [`CodeAdded`].
    CodeAdded(CodeAdded),
    /// See [`CodeSent`].
    CodeSent(CodeSent),
    /// See [`CheckFailed`].
    CheckFailed(CheckFailed),
    /// See [`Verified`].
    Verified(Verified),
    /// See [`Removed`].
    Removed(Removed),
    /// See [`SendRefused`]; recorded in a refusal stream, never in a registration's.
    SendRefused(SendRefused),
    /// See [`VerificationLocked`].
    VerificationLocked(VerificationLocked),
    /// See [`VerificationUnlocked`].
    VerificationUnlocked(VerificationUnlocked),
    /// See [`DeliveryFailed`].
    DeliveryFailed(DeliveryFailed),
    /// See [`CodeDelivered`].
    CodeDelivered(CodeDelivered),
    /// See [`ChallengeIssued`].
    ChallengeIssued(ChallengeIssued),
    /// See [`ChallengeSent`].
    ChallengeSent(ChallengeSent),
    /// See [`ChallengeSucceeded`].
    ChallengeSucceeded(ChallengeSucceeded),
    /// See [`ChallengeCheckFailed`].
    ChallengeCheckFailed(ChallengeCheckFailed),
    /// See [`ChallengeBurnt`].
    ChallengeBurnt(ChallengeBurnt),
    /// See [`ChallengeExpired`].
    ChallengeExpired(ChallengeExpired),
}

impl Event {
    /// The stable type name of [`Added`]: `user.otp_sms.added`.
    pub const ADDED: &'static str = "user.otp_sms.added";
    /// The stable type name of [`CodeAdded`]: `user.otp_sms.code.added`.
    pub const CODE_ADDED: &'static str = "user.otp_sms.code.added";
    /// The stable type name of [`CodeSent`]: `user.otp_sms.code.sent`.
    pub const CODE_SENT: &'static str = "user.otp_sms.code.sent";
    /// The stable type name of [`CheckFailed`]: `user.otp_sms.check.failed`.
    pub const CHECK_FAILED: &'static str = "user.otp_sms.check.failed";
    /// The stable type name of [`Verified`]: `user.otp_sms.verified`.
    pub const VERIFIED: &'static str = "user.otp_sms.verified";
    /// The stable type name of [`Removed`]: `user.otp_sms.removed`.
    pub const REMOVED: &'static str = "user.otp_sms.removed";
    /// The stable type name of [`SendRefused`]: `user.otp_sms.send.refused`.
    pub const SEND_REFUSED: &'static str = "user.otp_sms.send.refused";
    /// The stable type name of [`VerificationLocked`]: `user.otp_sms.verification.locked`.
    pub const VERIFICATION_LOCKED: &'static str = "user.otp_sms.verification.locked";
    /// The stable type name of [`VerificationUnlocked`]: `user.otp_sms.verification.unlocked`.
    pub const VERIFICATION_UNLOCKED: &'static str = "user.otp_sms.verification.unlocked";
    /// The stable type name of [`DeliveryFailed`]: `user.otp_sms.delivery.failed`.
    pub const DELIVERY_FAILED: &'static str = "user.otp_sms.delivery.failed";
    /// The stable type name of [`CodeDelivered`]: `user.otp_sms.code.delivered`.
    pub const CODE_DELIVERED: &'static str = "user.otp_sms.code.delivered";
    /// The stable type name of [`ChallengeIssued`]: `user.otp_sms.challenge.issued`.
    pub const CHALLENGE_ISSUED: &'static str = "user.otp_sms.challenge.issued";
    /// The stable type name of [`ChallengeSent`]: `user.otp_sms.challenge.sent`.
    pub const CHALLENGE_SENT: &'static str = "user.otp_sms.challenge.sent";
    /// The stable type name of [`ChallengeSucceeded`]: `user.otp_sms.challenge.succeeded`.
    pub const CHALLENGE_SUCCEEDED: &'static str = "user.otp_sms.challenge.succeeded";
    /// The stable type name of [`ChallengeCheckFailed`]: `user.otp_sms.challenge.check.failed`.
    pub const CHALLENGE_CHECK_FAILED: &'static str = "user.otp_sms.challenge.check.failed";
    /// The stable type name of [`ChallengeBurnt`]: `user.otp_sms.challenge.burnt`.
    pub const CHALLENGE_BURNT: &'static str = "user.otp_sms.challenge.burnt";
    /// The stable type name of [`ChallengeExpired`]: `user.otp_sms.challenge.expired`.
    pub const CHALLENGE_EXPIRED: &'static str = "user.otp_sms.challenge.expired";

    /// Every stable type name, in the order of the enum.
    pub const TYPES: [&'static str; 17] = [
        Self::ADDED,
        Self::CODE_ADDED,
        Self::CODE_SENT,
        Self::CHECK_FAILED,
        Self::VERIFIED,
        Self::REMOVED,
        Self::SEND_REFUSED,
        Self::VERIFICATION_LOCKED,
        Self::VERIFICATION_UNLOCKED,
        Self::DELIVERY_FAILED,
        Self::CODE_DELIVERED,
        Self::CHALLENGE_ISSUED,
        Self::CHALLENGE_SENT,
        Self::CHALLENGE_SUCCEEDED,
        Self::CHALLENGE_CHECK_FAILED,
        Self::CHALLENGE_BURNT,
        Self::CHALLENGE_EXPIRED,
    ];

    fn index(&self) -> usize {
        match self {
            Event::Added(_) => 0,
            Event::CodeAdded(_) => 1,
            Event::CodeSent(_) => 2,
            Event::CheckFailed(_) => 3,
            Event::Verified(_) => 4,
            Event::Removed(_) => 5,
            Event::SendRefused(_) => 6,
            Event::VerificationLocked(_) => 7,
            Event::VerificationUnlocked(_) => 8,
            Event::DeliveryFailed(_) => 9,
            Event::CodeDelivered(_) => 10,
            Event::ChallengeIssued(_) => 11,
            Event::ChallengeSent(_) => 12,
            Event::ChallengeSucceeded(_) => 13,
            Event::ChallengeCheckFailed(_) => 14,
            Event::ChallengeBurnt(_) => 15,
            Event::ChallengeExpired(_) => 16,
        }
    }
}

fn encode<T: Serialize>(v: &T) -> Result<serde_json::Value, CodecError> {
    serde_json::to_value(v).map_err(|e| CodecError(e.to_string()))
}

fn decode<T: DeserializeOwned>(
    event_type: &str,
    payload: serde_json::Value,
) -> Result<T, CodecError> {
    serde_json::from_value(payload).map_err(|e| CodecError(format!("{event_type}: {e}")))
}

impl EventPayload for Event {
    fn event_type(&self) -> &str {
        Self::TYPES[self.index()]
    }

    fn revision(&self) -> u16 {
        // Every type is at its first revision. A later revision adds a branch to `from_json`
        // that upcasts revision 1 payloads, never a change to how revision 1 is read.
        1
    }

    fn to_json(&self) -> Result<serde_json::Value, CodecError> {
        match self {
            Event::Added(e) => encode(e),
            Event::CodeAdded(e) => encode(e),
            Event::CodeSent(e) => encode(e),
            Event::CheckFailed(e) => encode(e),
            Event::Verified(e) => encode(e),
            Event::Removed(e) => encode(e),
            Event::SendRefused(e) => encode(e),
            Event::VerificationLocked(e) => encode(e),
            Event::VerificationUnlocked(e) => encode(e),
            Event::DeliveryFailed(e) => encode(e),
            Event::CodeDelivered(e) => encode(e),
            Event::ChallengeIssued(e) => encode(e),
            Event::ChallengeSent(e) => encode(e),
            Event::ChallengeSucceeded(e) => encode(e),
            Event::ChallengeCheckFailed(e) => encode(e),
            Event::ChallengeBurnt(e) => encode(e),
            Event::ChallengeExpired(e) => encode(e),
        }
    }

    fn from_json(
        event_type: &str,
        revision: u16,
        payload: serde_json::Value,
    ) -> Result<Self, CodecError> {
        if revision != 1 {
            return Err(CodecError(format!(
                "{event_type}: unknown revision {revision}"
            )));
        }
        Ok(match event_type {
            "user.otp_sms.added" => Event::Added(decode(event_type, payload)?),
            "user.otp_sms.code.added" => Event::CodeAdded(decode(event_type, payload)?),
            "user.otp_sms.code.sent" => Event::CodeSent(decode(event_type, payload)?),
            "user.otp_sms.check.failed" => Event::CheckFailed(decode(event_type, payload)?),
            "user.otp_sms.verified" => Event::Verified(decode(event_type, payload)?),
            "user.otp_sms.removed" => Event::Removed(decode(event_type, payload)?),
            "user.otp_sms.send.refused" => Event::SendRefused(decode(event_type, payload)?),
            "user.otp_sms.verification.locked" => {
                Event::VerificationLocked(decode(event_type, payload)?)
            }
            "user.otp_sms.verification.unlocked" => {
                Event::VerificationUnlocked(decode(event_type, payload)?)
            }
            "user.otp_sms.delivery.failed" => Event::DeliveryFailed(decode(event_type, payload)?),
            "user.otp_sms.code.delivered" => Event::CodeDelivered(decode(event_type, payload)?),
            "user.otp_sms.challenge.issued" => Event::ChallengeIssued(decode(event_type, payload)?),
            "user.otp_sms.challenge.sent" => Event::ChallengeSent(decode(event_type, payload)?),
            "user.otp_sms.challenge.succeeded" => {
                Event::ChallengeSucceeded(decode(event_type, payload)?)
            }
            "user.otp_sms.challenge.check.failed" => {
                Event::ChallengeCheckFailed(decode(event_type, payload)?)
            }
            "user.otp_sms.challenge.burnt" => Event::ChallengeBurnt(decode(event_type, payload)?),
            "user.otp_sms.challenge.expired" => {
                Event::ChallengeExpired(decode(event_type, payload)?)
            }
            other => return Err(CodecError(format!("unknown event type `{other}`"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_types_and_revisions_are_codec_errors() {
        assert!(Event::from_json("user.otp_sms.removed", 1, serde_json::json!({})).is_ok());
        assert!(Event::from_json("user.otp_sms.removed", 2, serde_json::json!({})).is_err());
        assert!(Event::from_json("user.otp_sms.nope", 1, serde_json::json!({})).is_err());
        assert!(Event::from_json("user.otp_sms.code.sent", 1, serde_json::json!({})).is_err());
    }

    #[test]
    fn type_names_are_stable() {
        let e = Event::Verified(Verified { code: Some(1) });
        assert_eq!(e.event_type(), "user.otp_sms.verified");
        assert_eq!(e.revision(), 1);
        assert_eq!(e.to_json().unwrap(), serde_json::json!({"code": 1}));
    }
}
