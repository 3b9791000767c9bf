//! What a stored event is to a store: a stable type name, a revision, and a JSON encoding. A
//! leaf: the events (`event.rs`) implement it and the store port (`store.rs`) is generic over
//! it, so neither needs the other.

use std::fmt;

/// An event type the store can persist: a stable name, a revision, and a JSON encoding.
pub trait EventPayload: Clone + fmt::Debug + Send + Sync + 'static {
    /// The stable type name, e.g. `user.otp_sms.verified`; never changes once released.
    fn event_type(&self) -> &str;
    /// The revision of the payload's schema for this type, starting at 1.
    fn revision(&self) -> u16;
    /// The payload as JSON (what a database store writes).
    fn to_json(&self) -> Result<serde_json::Value, CodecError>;
    /// Rebuilds an event from what a store read back.
    fn from_json(
        event_type: &str,
        revision: u16,
        payload: serde_json::Value,
    ) -> Result<Self, CodecError>;
}

/// An event could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event codec: {0}")]
pub struct CodecError(pub String);
