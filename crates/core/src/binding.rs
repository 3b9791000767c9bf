//! What a sign-in challenge is bound to: an opaque value the host supplies (its session or
//! transaction id), kept in the event log only as a digest.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::ids::{check_length, has_control, MAX_ID_CHARS};

/// A host's binding for a sign-in challenge, as the caller sent it: 1..=200 characters, no
/// control characters. A code issued under one binding never completes a check under another.
///
/// The value is the host's (a session id, say) and may be one it keeps secret: it never
/// reaches the event log, an error or a log line; [`Binding::digest`] does.
///
/// ```
/// use otp_sms_core::Binding;
/// let session = Binding::parse("binding", "session-7f3a").unwrap();
/// assert_eq!(session.digest(), Binding::parse("binding", "session-7f3a").unwrap().digest());
/// assert_ne!(session.digest(), Binding::parse("binding", "session-7f3b").unwrap().digest());
/// assert!(Binding::parse("binding", "").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Binding(String);

impl Binding {
    /// Validates a caller-supplied binding for the request field `field`.
    pub fn parse(field: &'static str, value: impl Into<String>) -> Result<Self, Error> {
        let value = value.into();
        check_length(field, &value, MAX_ID_CHARS)?;
        if has_control(&value) {
            return Err(Error::invalid(field, "must not contain control characters"));
        }
        Ok(Self(value))
    }

    /// The value as the caller sent it (for the idempotency fingerprint, which hashes it).
    pub(crate) fn value(&self) -> &str {
        &self.0
    }

    /// The digest kept in events: SHA-256 over a domain tag and the value, so that the log
    /// tells bindings apart without holding them.
    pub fn digest(&self) -> BindingDigest {
        let mut hash = Sha256::new();
        hash.update(b"otp-sms sign-in binding v1\0");
        hash.update(self.0.as_bytes());
        BindingDigest(hash.finalize().into())
    }
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Binding(<redacted>)")
    }
}

/// The digest of a [`Binding`], as events record it: 64 lowercase hexadecimal digits in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BindingDigest([u8; 32]);

impl BindingDigest {
    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Debug for BindingDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first bytes tell digests apart in a log; the digest is no secret, but short is
        // enough.
        write!(f, "BindingDigest({}…)", &self.hex()[..12])
    }
}

impl Serialize for BindingDigest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for BindingDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_hex(&text).ok_or_else(|| {
            serde::de::Error::custom("a binding digest is 64 lowercase hexadecimal digits")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_round_trips_through_json_and_a_malformed_one_is_refused() {
        let digest = Binding::parse("binding", "s-1").unwrap().digest();
        let json = serde_json::to_value(digest).unwrap();
        assert_eq!(json.as_str().unwrap().len(), 64);
        assert_eq!(
            serde_json::from_value::<BindingDigest>(json).unwrap(),
            digest
        );
        for bad in ["", "ab", &"A".repeat(64), &"g".repeat(64), &"0".repeat(65)] {
            assert!(serde_json::from_value::<BindingDigest>(serde_json::json!(bad)).is_err());
        }
    }

    #[test]
    fn bindings_are_bounded_and_never_shown() {
        assert!(Binding::parse("binding", "x".repeat(200)).is_ok());
        assert!(Binding::parse("binding", "x".repeat(201)).is_err());
        assert!(Binding::parse("binding", "a\0b").is_err());
        let secret = Binding::parse("binding", "session-secret").unwrap();
        assert!(!format!("{secret:?}").contains("session-secret"));
    }
}
