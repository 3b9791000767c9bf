//! Errors on the wire: every failure, the adapter's own included, as a `google.rpc.Status`
//! body with the HTTP status of the contract's table.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use otp_sms_core::{Error, RpcCode};
use serde_json::json;

use crate::wire::StatusJson;

/// An error on its way out.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

/// Shorthand for an INVALID_ARGUMENT about `field`.
pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> ApiError {
    ApiError(Error::invalid(field, reason))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.rpc_code();
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (message, details) = match &self.0 {
            Error::InvalidArgument { field, reason } => (
                self.0.to_string(),
                vec![json!({
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": field, "description": reason}],
                })],
            ),
            Error::RateLimited { .. } | Error::SendRefused { .. } => (
                self.0.to_string(),
                self.0
                    .retry_after()
                    .map(|after| {
                        json!({
                            "@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": format!("{}s", after.as_secs().max(1)),
                        })
                    })
                    .into_iter()
                    .collect(),
            ),
            // The causes of these are for the logs, not for callers.
            Error::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                (self.0.public_message(), Vec::new())
            }
            Error::Unavailable(detail) => {
                tracing::warn!(error = %detail, "dependency unavailable");
                (self.0.public_message(), Vec::new())
            }
            other => (other.public_message(), Vec::new()),
        };
        // The error's stable id first, as ZITADEL's errors carry theirs.
        let mut all = vec![json!({
            "@type": "type.googleapis.com/zitadel.v1.ErrorDetail",
            "id": self.0.id(),
            "message": message,
        })];
        all.extend(details);
        let body = StatusJson {
            code: code.as_i32(),
            message,
            details: all,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(retry_after) = self.0.retry_after() {
            if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if code == RpcCode::Unauthenticated {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
