//! What an error says to a caller, whatever the wire: one model that the JSON, Connect and
//! gRPC renderers each write in their own encoding, so the three never drift apart.
//!
//! Every status carries, first, the error's stable id (`zitadel.v1.ErrorDetail`, as ZITADEL's
//! errors carry theirs); an invalid argument names its field (`google.rpc.BadRequest`); an
//! error that time will cure says when (`google.rpc.RetryInfo`, and `Retry-After` where the
//! wire has headers). INTERNAL and UNAVAILABLE say nothing of their cause, which is logged
//! when the status is made.

use std::time::Duration;

use crate::error::{Error, RpcCode};

/// One detail of a status, in the order a status lists them. More kinds may come: a renderer
/// writes one it does not know by its type name alone.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusDetail {
    /// `zitadel.v1.ErrorDetail`: the error's stable [`Error::id`] and the message.
    ErrorId {
        /// The stable id, e.g. `OTPSMS-WRONG_CODE`.
        id: &'static str,
        /// The caller-safe message.
        message: String,
    },
    /// `google.rpc.BadRequest` with one field violation.
    BadRequest {
        /// The request field, as the API names it.
        field: &'static str,
        /// What is wrong with it.
        description: String,
    },
    /// `google.rpc.RetryInfo`: when to try again.
    RetryInfo(Duration),
}

impl StatusDetail {
    /// The detail's message type, as `type.googleapis.com/<name>` names it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::ErrorId { .. } => "zitadel.v1.ErrorDetail",
            Self::BadRequest { .. } => "google.rpc.BadRequest",
            Self::RetryInfo(_) => "google.rpc.RetryInfo",
        }
    }
}

/// An error as a caller sees it: code, message and details.
///
/// ```
/// use otp_sms_core::{Error, ErrorStatus, RpcCode, StatusDetail};
/// let status = ErrorStatus::of(&Error::invalid("code", "must be digits"));
/// assert_eq!(status.code, RpcCode::InvalidArgument);
/// assert_eq!(status.http_status(), 400);
/// assert!(matches!(status.details[0], StatusDetail::ErrorId { id: "OTPSMS-INVALID_ARGUMENT", .. }));
/// assert!(matches!(status.details[1], StatusDetail::BadRequest { field: "code", .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorStatus {
    /// The google.rpc code.
    pub code: RpcCode,
    /// The caller-safe message ([`Error::public_message`]).
    pub message: String,
    /// The details, the error's id first.
    pub details: Vec<StatusDetail>,
}

impl ErrorStatus {
    /// The status of `error`. The hidden cause of an INTERNAL or UNAVAILABLE error is logged
    /// here (an error, a warning): it is for the operator, never for the caller.
    pub fn of(error: &Error) -> Self {
        match error {
            Error::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            Error::Unavailable(detail) => tracing::warn!(error = %detail, "dependency unavailable"),
            _ => {}
        }
        let message = error.public_message();
        let mut details = vec![StatusDetail::ErrorId {
            id: error.id(),
            message: message.clone(),
        }];
        if let Error::InvalidArgument { field, reason } = error {
            details.push(StatusDetail::BadRequest {
                field,
                description: reason.clone(),
            });
        }
        if let Some(after) = error.retry_after() {
            details.push(StatusDetail::RetryInfo(after));
        }
        Self {
            code: error.rpc_code(),
            message,
            details,
        }
    }

    /// The HTTP status of the JSON API's and Connect's answers.
    pub fn http_status(&self) -> u16 {
        self.code.http_status()
    }

    /// When to try again, if the error says.
    pub fn retry_after(&self) -> Option<Duration> {
        self.details.iter().find_map(|d| match d {
            StatusDetail::RetryInfo(after) => Some(*after),
            _ => None,
        })
    }

    /// The `Retry-After` header's value: whole seconds, at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after().map(|d| d.as_secs().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scope;

    #[test]
    fn every_status_names_its_error_first_and_hides_internal_causes() {
        let status = ErrorStatus::of(&Error::Internal("db password wrong".into()));
        assert_eq!(status.code, RpcCode::Internal);
        assert_eq!(status.message, "internal error");
        assert_eq!(
            status.details,
            [StatusDetail::ErrorId {
                id: "OTPSMS-INTERNAL",
                message: "internal error".into()
            }]
        );
    }

    #[test]
    fn a_refused_send_says_when_to_come_back() {
        let status = ErrorStatus::of(&Error::SendRefused {
            scope: Scope::User,
            retry_after: Some(Duration::from_millis(1500)),
        });
        assert_eq!(status.code, RpcCode::ResourceExhausted);
        assert_eq!(status.details.len(), 2);
        assert_eq!(status.retry_after(), Some(Duration::from_millis(1500)));
        assert_eq!(status.retry_after_secs(), Some(1));
        assert_eq!(status.details[1].type_name(), "google.rpc.RetryInfo");
    }
}
