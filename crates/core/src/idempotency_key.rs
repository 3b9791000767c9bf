//! The client's idempotency key, and the scope it is unique in.

use std::fmt;

use crate::error::Error;
use crate::ids::{InstanceId, PrincipalId};

/// The longest key accepted (the IETF draft's UUIDs need 36; clients that hash requests use
/// up to 64).
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// A key in its bare form, as an ECMA-262 pattern for schemas (the OpenAPI document states it
/// on the header): visible ASCII, not starting with `"` (that is the quoted form, a Structured
/// Field string, which [`IdempotencyKey::from_header`] also reads). With 1 to
/// [`MAX_IDEMPOTENCY_KEY_CHARS`] characters, every value it matches is a key.
pub const IDEMPOTENCY_KEY_PATTERN: &str = r"^[!#-~][!-~]*$";

/// A client's idempotency key: 1 to 255 visible ASCII characters.
///
/// ```
/// use otp_sms_core::IdempotencyKey;
/// // HTTP sends it as a Structured Field string (the IETF httpapi draft); a bare token is
/// // accepted too.
/// let quoted = IdempotencyKey::from_header("\"8e03978e-40d5-43e8-bc93-6894a57f9324\"").unwrap();
/// let bare = IdempotencyKey::from_header("8e03978e-40d5-43e8-bc93-6894a57f9324").unwrap();
/// assert_eq!(quoted, bare);
/// assert!(IdempotencyKey::parse("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The key as sent, checked: INVALID_ARGUMENT (field `Idempotency-Key`) when empty, too
    /// long or not visible ASCII.
    pub fn parse(value: &str) -> Result<Self, Error> {
        const FIELD: &str = "Idempotency-Key";
        if value.is_empty() {
            return Err(Error::invalid(FIELD, "must not be empty"));
        }
        if value.len() > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(Error::invalid(
                FIELD,
                format!("must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters"),
            ));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid(FIELD, "must be visible ASCII characters"));
        }
        Ok(Self(value.to_owned()))
    }

    /// The key of a request from the values of its `Idempotency-Key` header (or gRPC
    /// metadata) as they came: none is no key; more than one, or one that is not visible
    /// ASCII, is INVALID_ARGUMENT. What every adapter reads, so they read it alike.
    ///
    /// ```
    /// use otp_sms_core::IdempotencyKey;
    /// assert!(IdempotencyKey::from_header_values([]).unwrap().is_none());
    /// assert!(IdempotencyKey::from_header_values([&b"k-1"[..]]).unwrap().is_some());
    /// assert!(IdempotencyKey::from_header_values([&b"a"[..], &b"b"[..]]).is_err());
    /// ```
    pub fn from_header_values<'v>(
        values: impl IntoIterator<Item = &'v [u8]>,
    ) -> Result<Option<Self>, Error> {
        let mut values = values.into_iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(Error::invalid(
                "Idempotency-Key",
                "send one key per request",
            ));
        }
        let value = std::str::from_utf8(value)
            .ok()
            .filter(|v| v.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)))
            .ok_or_else(|| Error::invalid("Idempotency-Key", "must be visible ASCII characters"))?;
        Self::from_header(value).map(Some)
    }

    /// The key from an HTTP header or gRPC metadata value: a Structured Field string
    /// (`"…"`, with `\"` and `\\` escapes) or a bare token.
    pub fn from_header(value: &str) -> Result<Self, Error> {
        let value = value.trim_matches(' ');
        let Some(quoted) = value.strip_prefix('"') else {
            return Self::parse(value);
        };
        let Some(inner) = quoted.strip_suffix('"') else {
            return Err(Error::invalid(
                "Idempotency-Key",
                "a quoted key must end with \"",
            ));
        };
        let mut key = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped @ ('"' | '\\')) => key.push(escaped),
                    _ => {
                        return Err(Error::invalid(
                            "Idempotency-Key",
                            "a quoted key escapes only \" and \\",
                        ))
                    }
                },
                '"' => {
                    return Err(Error::invalid(
                        "Idempotency-Key",
                        "a quoted key must escape \"",
                    ))
                }
                c => key.push(c),
            }
        }
        Self::parse(&key)
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Client keys are opaque but may be guessable request hashes: not logged whole.
        let shown: String = self.0.chars().take(8).collect();
        write!(f, "IdempotencyKey({shown}…)")
    }
}

/// Where a key is unique: keys of different instances or principals never meet (a key is
/// the sender's own, as at Stripe, so no caller can replay another's answer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyScope {
    /// The tenant.
    pub instance: InstanceId,
    /// The authenticated principal that sent the key.
    pub principal: PrincipalId,
    /// The key.
    pub key: IdempotencyKey,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value the schema pattern matches is a key, read alike bare and from a header;
    /// every bare key the pattern refuses starts with `"` (the quoted form) — over every string
    /// of one and two ASCII characters.
    #[test]
    fn the_key_pattern_is_what_parse_accepts() {
        let pattern = regex_automata::dfa::regex::Regex::new(IDEMPOTENCY_KEY_PATTERN).unwrap();
        let ascii = (0u8..=127).map(char::from);
        let singles = ascii.clone().map(String::from);
        let pairs = ascii
            .clone()
            .flat_map(|a| ascii.clone().map(move |b| format!("{a}{b}")));
        for value in singles.chain(pairs) {
            let parsed = IdempotencyKey::parse(&value).is_ok();
            if pattern.is_match(&value) {
                assert!(parsed, "{value:?} matches and is refused");
                let from_header = IdempotencyKey::from_header(&value).map(|k| k.0);
                assert_eq!(from_header.ok().as_deref(), Some(value.as_str()));
            } else if parsed {
                assert!(
                    value.starts_with('"'),
                    "{value:?} is a key the pattern refuses"
                );
            }
        }
    }
}
