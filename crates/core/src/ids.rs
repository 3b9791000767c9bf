//! Identifiers as newtypes, so that a user id can never be passed where an organization id is
//! expected.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The longest identifier a caller may send, in characters (the contract's bound).
pub const MAX_ID_CHARS: usize = 200;

/// What an identifier may hold, as an ECMA-262 pattern for schemas (the OpenAPI document
/// states it on every id): any character but a control character (Unicode category Cc,
/// U+0000–U+001F and U+007F–U+009F). With 1 to [`MAX_ID_CHARS`] characters, exactly what the
/// ids' `parse` accepts.
pub const ID_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

/// Checks the contract's bound for caller-supplied strings: 1..=200 characters (not bytes).
pub(crate) fn check_length(field: &'static str, value: &str, max: usize) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    // Count characters, not bytes: the contract's bounds are in characters. A string of at most
    // `max` bytes has at most `max` characters, which spares the count on the common path.
    if value.len() > max && value.chars().nth(max).is_some() {
        return Err(Error::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(())
}

/// Whether `value` holds a control character (Unicode category Cc). Ids are nearly always
/// ASCII, where a byte test answers without decoding characters.
pub(crate) fn has_control(value: &str) -> bool {
    // One pass over the bytes without an early exit, which the compiler vectorizes: a byte
    // from 0x20 to 0x7e is printable ASCII. Only a value with another byte is decoded.
    let printable_ascii = value
        .bytes()
        .fold(true, |all, b| all & (b.wrapping_sub(0x20) < 0x5f));
    !printable_ascii && value.chars().any(char::is_control)
}

macro_rules! id_newtype {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates a caller-supplied identifier (1..=200 characters) for the request
            /// field `field`.
            pub fn parse(field: &'static str, value: impl Into<String>) -> Result<Self, Error> {
                let value = value.into();
                check_length(field, &value, MAX_ID_CHARS)?;
                // Control characters (NUL above all) have no place in an id, and PostgreSQL
                // text cannot hold NUL: refusing them keeps every store equivalent.
                if has_control(&value) {
                    return Err(Error::invalid(field, "must not contain control characters"));
                }
                Ok(Self(Arc::from(value)))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The identifier as an owned string.
            pub fn into_string(self) -> String {
                self.0.to_string()
            }

            /// The shared string behind the identifier (cloning it is a reference count).
            pub fn as_shared(&self) -> &Arc<str> {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl $name {
            /// The request field an error names when [`FromStr`](std::str::FromStr) or
            /// `TryFrom` refuses a value.
            pub const FIELD: &'static str = $field;
        }

        /// Validates as [`Self::parse`] does, naming the field [`Self::FIELD`].
        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(value: &str) -> Result<Self, Error> {
                Self::parse(Self::FIELD, value)
            }
        }

        /// Validates as [`Self::parse`] does, naming the field [`Self::FIELD`].
        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(value: String) -> Result<Self, Error> {
                Self::parse(Self::FIELD, value)
            }
        }

        /// Validates as [`Self::parse`] does, naming the field [`Self::FIELD`].
        impl TryFrom<&str> for $name {
            type Error = Error;
            fn try_from(value: &str) -> Result<Self, Error> {
                Self::parse(Self::FIELD, value)
            }
        }
    };
}

id_newtype!(
    /// The tenant (ZITADEL instance) a request runs in. Events of different instances never mix.
    InstanceId,
    "instance.id"
);
id_newtype!(
    /// An organization; a user's authenticators are owned by the user's organization.
    OrganizationId,
    "organization.org_id"
);
id_newtype!(
    /// A user, as the host's user directory knows it.
    UserId,
    "id"
);
id_newtype!(
    /// An OTP SMS registration (`otp_sms_id`). Generated as a UUID v7 by [`crate::UuidV7Ids`],
    /// so ids sort by creation time and index well; callers may send any 1..=200 characters.
    RegistrationId,
    "otp_sms_id"
);
id_newtype!(
    /// Whoever acts: a user id, a service account, or `system` for the notifier.
    PrincipalId,
    "principal"
);

impl PrincipalId {
    /// The principal the library uses for its own background work (the SMS notifier).
    pub fn system() -> Self {
        Self(Arc::from("system"))
    }
}

impl InstanceId {
    /// The instance of a single-tenant host: `default`. A host with one tenant puts every
    /// [`Caller`](crate::Caller) in it (see [`Caller::single_tenant`](crate::Caller::single_tenant))
    /// and never implements the instance look-ups.
    ///
    /// ```
    /// use otp_sms_core::InstanceId;
    /// assert_eq!(InstanceId::single_tenant().as_str(), "default");
    /// ```
    pub fn single_tenant() -> Self {
        Self(Arc::from(SINGLE_TENANT))
    }
}

/// The id of [`InstanceId::single_tenant`].
const SINGLE_TENANT: &str = "default";

#[cfg(test)]
mod tests {
    /// The schema pattern refuses exactly the characters `parse` refuses: every character
    /// of the Basic Multilingual Plane and the first of every other plane.
    #[test]
    fn the_id_pattern_is_what_parse_accepts() {
        let pattern = regex_automata::dfa::regex::Regex::new(super::ID_PATTERN).unwrap();
        let planes = (0x1_0000..=0x10_0000).step_by(0x1_0000);
        for c in (0..=0xFFFF).chain(planes).filter_map(char::from_u32) {
            let text = format!("a{c}b");
            assert_eq!(
                pattern.is_match(&text),
                super::UserId::parse("id", text.as_str()).is_ok(),
                "U+{:04X}",
                c as u32
            );
        }
    }

    use super::*;

    #[test]
    fn ids_are_one_to_two_hundred_characters() {
        assert!(UserId::parse("id", "").is_err());
        assert!(UserId::parse("id", "u".repeat(200)).is_ok());
        assert_eq!(
            UserId::parse("id", "u".repeat(201)),
            Err(Error::invalid("id", "must be at most 200 characters"))
        );
        // 200 four-byte characters are 800 bytes but still 200 characters.
        assert!(UserId::parse("id", "🦀".repeat(200)).is_ok());
        assert!(UserId::parse("id", "🦀".repeat(201)).is_err());
        assert!(UserId::parse("id", "a\0b").is_err());
        assert!(UserId::parse("id", "a\nb").is_err());
    }

    #[test]
    fn ids_parse_from_strings_naming_their_field() {
        let user: UserId = "u1".parse().unwrap();
        assert_eq!(user.as_str(), "u1");
        assert_eq!(
            RegistrationId::try_from("r1".to_owned()).unwrap().as_str(),
            "r1"
        );
        assert_eq!(
            "".parse::<RegistrationId>(),
            Err(Error::invalid("otp_sms_id", "must not be empty"))
        );
        assert_eq!(
            OrganizationId::try_from("a\0"),
            Err(Error::invalid(
                "organization.org_id",
                "must not contain control characters"
            ))
        );
    }

    #[test]
    fn control_characters_are_refused_in_ascii_and_unicode_ids() {
        for bad in ["a\u{7f}", "\u{1f}", "ü\u{85}", "ü\0", "🦀\t"] {
            assert!(RegistrationId::parse("otp_sms_id", bad).is_err(), "{bad:?}");
        }
        for good in ["0195f3c2-7a1b-7c3d-8e4f-0123456789ab", "ü-ß", "user 1", "~"] {
            assert!(
                RegistrationId::parse("otp_sms_id", good).is_ok(),
                "{good:?}"
            );
        }
    }
}
