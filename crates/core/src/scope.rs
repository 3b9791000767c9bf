//! Which abuse rule refused a code: a leaf, so that the error type (which carries it) needs
//! nothing of the abuse policy.

use std::fmt;

/// Which rule refused a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Scope {
    /// The registration's own cooldown and hourly limit (in the aggregate).
    Registration,
    /// Codes sent to one user.
    User,
    /// Registrations one user holds.
    UserRegistrations,
    /// Codes sent to one destination number, across all users of the instance: the larger
    /// cap over [`Scope::NumberPerUser`].
    Number,
    /// Codes one user has sent to one destination number: others' requests do not spend it,
    /// so no other user can deny a number to its owner beyond the global cap's short window.
    NumberPerUser,
    /// Codes sent to one number range (E.164 without its last three digits).
    Range,
    /// The number's region: not allowed, or its hourly cap reached.
    Region,
    /// The number's type (premium rate, fixed line, …).
    NumberType,
    /// Codes requested from one client address (IPv6 by /64).
    Address,
    /// Codes sent for the users of one organization: its share of the instance, so one
    /// organization cannot exhaust another's.
    Organization,
    /// Codes sent by the whole instance: the spend guard.
    Instance,
    /// The user's verification lock (wrong codes in a row reached the cap).
    VerificationLock,
    /// Sign-in challenges issued to one user, however they are delivered.
    SignIn,
}

impl Scope {
    /// Every scope, for configuration and documentation.
    pub const ALL: [Scope; 13] = [
        Scope::Registration,
        Scope::User,
        Scope::UserRegistrations,
        Scope::Number,
        Scope::NumberPerUser,
        Scope::Range,
        Scope::Region,
        Scope::NumberType,
        Scope::Address,
        Scope::Organization,
        Scope::Instance,
        Scope::VerificationLock,
        Scope::SignIn,
    ];

    /// The scopes that may refuse silently: the send budgets. A refused number (type, region),
    /// the registration cap and the verification lock always answer.
    pub const SILENCEABLE: [Scope; 8] = [
        Scope::User,
        Scope::Number,
        Scope::NumberPerUser,
        Scope::Range,
        Scope::Region,
        Scope::Address,
        Scope::Organization,
        Scope::Instance,
    ];

    /// The scope's name in messages, events and configuration, e.g. `destination number`.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Registration => "registration",
            Scope::User => "user",
            Scope::UserRegistrations => "user registrations",
            Scope::Number => "destination number",
            Scope::NumberPerUser => "destination number for this user",
            Scope::Range => "number range",
            Scope::Region => "region",
            Scope::NumberType => "number type",
            Scope::Address => "client address",
            Scope::Organization => "organization",
            Scope::Instance => "instance",
            Scope::VerificationLock => "verification lock",
            Scope::SignIn => "sign-in",
        }
    }

    /// The scope's name as a configuration key, e.g. `destination_number`.
    pub fn key(self) -> &'static str {
        match self {
            Scope::Registration => "registration",
            Scope::User => "user",
            Scope::UserRegistrations => "user_registrations",
            Scope::Number => "destination_number",
            Scope::NumberPerUser => "destination_number_per_user",
            Scope::Range => "number_range",
            Scope::Region => "region",
            Scope::NumberType => "number_type",
            Scope::Address => "client_address",
            Scope::Organization => "organization",
            Scope::Instance => "instance",
            Scope::VerificationLock => "verification_lock",
            Scope::SignIn => "sign_in",
        }
    }

    /// The scope named by a configuration key.
    pub fn from_key(key: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.key() == key)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
