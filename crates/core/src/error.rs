//! The one error type of the library and its single mapping to google.rpc codes and HTTP.

use std::time::Duration;

/// A `google.rpc.Code`, as the contract names them.
///
/// Every [`Error`] maps to exactly one code through [`Error::rpc_code`], and every code to one
/// HTTP status through [`RpcCode::http_status`]; adapters (HTTP, gRPC) use these two functions
/// and nothing else, so they cannot disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum RpcCode {
    /// 3: a field out of bounds, a malformed body, a wrong code.
    InvalidArgument = 3,
    /// 4: the call took longer than the server allows.
    DeadlineExceeded = 4,
    /// 5: the user or the registration does not exist.
    NotFound = 5,
    /// 7: the caller may not manage this user.
    PermissionDenied = 7,
    /// 8: a rate limit was hit.
    ResourceExhausted = 8,
    /// 9: the registration is not in a state that allows the call.
    FailedPrecondition = 9,
    /// 10: a write conflict that retries could not resolve.
    Aborted = 10,
    /// 13: anything unexpected.
    Internal = 13,
    /// 14: the event store (or another port) cannot be reached.
    Unavailable = 14,
    /// 16: no or unknown credentials.
    Unauthenticated = 16,
}

impl RpcCode {
    /// The numeric value on the wire (`google.rpc.Status.code`).
    pub fn as_i32(self) -> i32 {
        self as i32
    }

    /// The canonical name, e.g. `INVALID_ARGUMENT`.
    pub fn name(self) -> &'static str {
        match self {
            RpcCode::InvalidArgument => "INVALID_ARGUMENT",
            RpcCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            RpcCode::NotFound => "NOT_FOUND",
            RpcCode::PermissionDenied => "PERMISSION_DENIED",
            RpcCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            RpcCode::FailedPrecondition => "FAILED_PRECONDITION",
            RpcCode::Aborted => "ABORTED",
            RpcCode::Internal => "INTERNAL",
            RpcCode::Unavailable => "UNAVAILABLE",
            RpcCode::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The HTTP status the contract's table gives for this code.
    pub fn http_status(self) -> u16 {
        match self {
            RpcCode::InvalidArgument | RpcCode::FailedPrecondition => 400,
            RpcCode::Unauthenticated => 401,
            RpcCode::PermissionDenied => 403,
            RpcCode::NotFound => 404,
            RpcCode::Aborted => 409,
            RpcCode::ResourceExhausted => 429,
            RpcCode::Internal => 500,
            RpcCode::Unavailable => 503,
            RpcCode::DeadlineExceeded => 504,
        }
    }
}

/// Why a registration refuses a call although the request itself is well formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Precondition {
    /// The registration is verified already; a verify or a new code makes no sense.
    AlreadyVerified,
    /// No code is pending (the registration was added as verified, or was never given one).
    NoActiveCode,
    /// The pending code has expired; request a new one.
    CodeExpired,
    /// The pending code took too many wrong attempts and is void; request a new one.
    TooManyAttempts,
    /// The code named by a delivery report is not the pending one any more.
    CodeSuperseded,
    /// The user's wrong codes in a row, across all codes and registrations, reached the cap
    /// (NIST SP 800-63B: at most 100): no code is checked until the lock ends or a holder of
    /// `user.write` lifts it.
    VerificationLocked,
    /// The registration is not verified yet: it cannot serve a sign-in.
    NotVerified,
    /// The user has no verified OTP SMS registration to send a sign-in code to.
    NoVerifiedRegistration,
    /// The sign-in challenge was completed already; a code is good for one sign-in.
    ChallengeUsed,
}

impl Precondition {
    fn message(self) -> &'static str {
        match self {
            Precondition::AlreadyVerified => "the OTP SMS registration is already verified",
            Precondition::NoActiveCode => "no verification code is pending; request a new code",
            Precondition::CodeExpired => "the verification code has expired; request a new code",
            Precondition::TooManyAttempts => {
                "too many wrong attempts for this verification code; request a new code"
            }
            Precondition::CodeSuperseded => "the verification code was replaced by a newer one",
            Precondition::VerificationLocked => {
                "too many wrong codes in a row: verification is locked for this user; \
                 an administrator can unlock it"
            }
            Precondition::NotVerified => {
                "the OTP SMS registration is not verified; it cannot be used to sign in"
            }
            Precondition::NoVerifiedRegistration => {
                "the user has no verified OTP SMS registration to sign in with"
            }
            Precondition::ChallengeUsed => {
                "the sign-in code was used already; request a new challenge"
            }
        }
    }
}

/// Every way a call can fail.
///
/// Messages help the caller and leak nothing: never a code, key material, or an identifier the
/// caller did not send. [`Error::rpc_code`] is the one mapping to the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request field is missing, out of bounds or malformed. `field` is the proto field name.
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument {
        /// The request field, as named in the API definition (`code`, `phone.number`, …).
        field: &'static str,
        /// What is wrong with it, without echoing secrets.
        reason: String,
    },
    /// The code does not match the pending one; the failed check was recorded.
    #[error("invalid argument `code`: the verification code is not correct")]
    WrongCode,
    /// The user does not exist in the instance (or not in the organization the caller expects).
    #[error("user not found")]
    UserNotFound,
    /// The request names no call this server serves (an unknown route or method).
    #[error("not found: {0}")]
    UnknownCall(String),
    /// The instance named by the request does not exist (or is not the caller's).
    #[error("instance not found")]
    InstanceNotFound,
    /// The registration does not exist for this user, or was removed.
    #[error("OTP SMS registration not found")]
    RegistrationNotFound,
    /// The caller is neither the user nor holds `user.write` in the user's organization.
    #[error("permission denied: the caller may not manage this user's authenticators")]
    PermissionDenied,
    /// The registration is not in a state that allows the call.
    #[error("failed precondition: {}", .0.message())]
    FailedPrecondition(Precondition),
    /// Too many codes were requested; `retry_after` says when the next one is allowed.
    #[error("resource exhausted: too many verification codes requested; retry in {}s", .retry_after.as_secs().max(1))]
    RateLimited {
        /// The earliest moment, from now, at which a new code will be issued.
        retry_after: Duration,
    },
    /// A send budget refused the code (SMS pumping defence); nothing was sent and no code
    /// was issued. The message names the scope, never whose budget it is.
    #[error("resource exhausted: the {scope} budget for verification codes is used up{}", retry_text(.retry_after))]
    SendRefused {
        /// The budget that refused.
        scope: crate::scope::Scope,
        /// When it admits a code again; `None` when time alone will not (e.g. the user holds
        /// as many registrations as allowed).
        retry_after: Option<Duration>,
    },
    /// The caller holds more of a server resource than it may (calls in progress at once,
    /// say); the text names the limit, never another caller. Nothing was done.
    #[error("resource exhausted: {0}")]
    QuotaExceeded(String),
    /// Concurrent writers kept changing the registration; retries could not resolve it.
    #[error("aborted: the registration was changed concurrently; retry the call")]
    Aborted,
    /// No or unknown credentials.
    #[error("unauthenticated")]
    Unauthenticated,
    /// A port (event store, user directory, …) could not be reached, or the server is
    /// overloaded and sheds the call.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The call took longer than the server allows (its request time-out).
    #[error("deadline exceeded: the call took longer than the server allows")]
    DeadlineExceeded,
    /// Anything else. The text is for logs; adapters may replace it with a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

fn retry_text(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!("; retry in {}s", d.as_secs().max(1)),
        None => String::new(),
    }
}

impl Error {
    /// When the caller may try again, for `google.rpc.RetryInfo` and `Retry-After`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after } => Some(*retry_after),
            Error::SendRefused { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A stable identifier of the error's kind, for `zitadel.v1.ErrorDetail.id` in every
    /// error's details (as ZITADEL's API carries its own ids there): clients may switch on it,
    /// and it never changes once published.
    ///
    /// ```
    /// use otp_sms_core::{Error, Precondition};
    /// assert_eq!(Error::WrongCode.id(), "OTPSMS-WRONG_CODE");
    /// assert_eq!(
    ///     Error::FailedPrecondition(Precondition::CodeExpired).id(),
    ///     "OTPSMS-CODE_EXPIRED"
    /// );
    /// ```
    pub fn id(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "OTPSMS-INVALID_ARGUMENT",
            Error::WrongCode => "OTPSMS-WRONG_CODE",
            Error::UserNotFound => "OTPSMS-USER_NOT_FOUND",
            Error::UnknownCall(_) => "OTPSMS-UNKNOWN_CALL",
            Error::InstanceNotFound => "OTPSMS-INSTANCE_NOT_FOUND",
            Error::RegistrationNotFound => "OTPSMS-REGISTRATION_NOT_FOUND",
            Error::PermissionDenied => "OTPSMS-PERMISSION_DENIED",
            Error::FailedPrecondition(p) => match p {
                Precondition::AlreadyVerified => "OTPSMS-ALREADY_VERIFIED",
                Precondition::NoActiveCode => "OTPSMS-NO_ACTIVE_CODE",
                Precondition::CodeExpired => "OTPSMS-CODE_EXPIRED",
                Precondition::TooManyAttempts => "OTPSMS-TOO_MANY_ATTEMPTS",
                Precondition::CodeSuperseded => "OTPSMS-CODE_SUPERSEDED",
                Precondition::VerificationLocked => "OTPSMS-VERIFICATION_LOCKED",
                Precondition::NotVerified => "OTPSMS-NOT_VERIFIED",
                Precondition::NoVerifiedRegistration => "OTPSMS-NO_VERIFIED_REGISTRATION",
                Precondition::ChallengeUsed => "OTPSMS-CHALLENGE_USED",
            },
            Error::RateLimited { .. } => "OTPSMS-RATE_LIMITED",
            Error::SendRefused { .. } => "OTPSMS-SEND_REFUSED",
            Error::QuotaExceeded(_) => "OTPSMS-QUOTA_EXCEEDED",
            Error::Aborted => "OTPSMS-ABORTED",
            Error::Unauthenticated => "OTPSMS-UNAUTHENTICATED",
            Error::Unavailable(_) => "OTPSMS-UNAVAILABLE",
            Error::DeadlineExceeded => "OTPSMS-DEADLINE_EXCEEDED",
            Error::Internal(_) => "OTPSMS-INTERNAL",
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// The google.rpc code of this error: the single mapping every adapter uses.
    pub fn rpc_code(&self) -> RpcCode {
        match self {
            Error::InvalidArgument { .. } | Error::WrongCode => RpcCode::InvalidArgument,
            Error::UserNotFound
            | Error::InstanceNotFound
            | Error::RegistrationNotFound
            | Error::UnknownCall(_) => RpcCode::NotFound,
            Error::PermissionDenied => RpcCode::PermissionDenied,
            Error::FailedPrecondition(_) => RpcCode::FailedPrecondition,
            Error::RateLimited { .. } | Error::SendRefused { .. } | Error::QuotaExceeded(_) => {
                RpcCode::ResourceExhausted
            }
            Error::Aborted => RpcCode::Aborted,
            Error::Unauthenticated => RpcCode::Unauthenticated,
            Error::Unavailable(_) => RpcCode::Unavailable,
            Error::DeadlineExceeded => RpcCode::DeadlineExceeded,
            Error::Internal(_) => RpcCode::Internal,
        }
    }

    /// The message to send to callers: the `Display` text, except for INTERNAL and UNAVAILABLE,
    /// whose causes are for the logs only.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error".to_owned(),
            Error::Unavailable(_) => "service unavailable; retry later".to_owned(),
            other => other.to_string(),
        }
    }

    /// The HTTP status of this error (`self.rpc_code().http_status()`).
    pub fn http_status(&self) -> u16 {
        self.rpc_code().http_status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_the_contract_table() {
        let table = [
            (Error::invalid("code", "empty"), 3, 400),
            (Error::WrongCode, 3, 400),
            (Error::UserNotFound, 5, 404),
            (Error::InstanceNotFound, 5, 404),
            (Error::UnknownCall("GET /x".into()), 5, 404),
            (Error::RegistrationNotFound, 5, 404),
            (Error::PermissionDenied, 7, 403),
            (
                Error::FailedPrecondition(Precondition::AlreadyVerified),
                9,
                400,
            ),
            (
                Error::RateLimited {
                    retry_after: Duration::from_secs(3),
                },
                8,
                429,
            ),
            (
                Error::SendRefused {
                    scope: crate::scope::Scope::Number,
                    retry_after: None,
                },
                8,
                429,
            ),
            (Error::QuotaExceeded("calls in progress".into()), 8, 429),
            (Error::Aborted, 10, 409),
            (Error::Unauthenticated, 16, 401),
            (Error::Unavailable("store".into()), 14, 503),
            (Error::DeadlineExceeded, 4, 504),
            (Error::Internal("boom".into()), 13, 500),
        ];
        for (error, code, status) in table {
            assert_eq!(error.rpc_code().as_i32(), code, "{error:?}");
            assert_eq!(error.http_status(), status, "{error:?}");
        }
    }
}
