//! Errors on the wire: every failure, the adapter's own included, as a `google.rpc.Status`
//! body with the HTTP status of the contract's table.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use otp_sms_core::{Error, ErrorStatus, RpcCode, StatusDetail};
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
        let status = ErrorStatus::of(&self.0);
        let http =
            StatusCode::from_u16(status.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let details = status.details.iter().map(detail).collect();
        let mut response = (
            http,
            Json(StatusJson {
                code: status.code.as_i32(),
                message: status.message.clone(),
                details,
            }),
        )
            .into_response();
        if let Some(secs) = status.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if status.code == RpcCode::Unauthenticated {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// One detail in the JSON mapping of `google.protobuf.Any`: `@type` and the message's fields.
fn detail(detail: &StatusDetail) -> serde_json::Value {
    let kind = format!("type.googleapis.com/{}", detail.type_name());
    match detail {
        StatusDetail::ErrorId { id, message } => {
            json!({"@type": kind, "id": id, "message": message})
        }
        StatusDetail::BadRequest { field, description } => json!({
            "@type": kind,
            "fieldViolations": [{"field": field, "description": description}],
        }),
        StatusDetail::RetryInfo(after) => json!({
            "@type": kind,
            "retryDelay": format!("{}s", after.as_secs().max(1)),
        }),
        // A detail this adapter does not know yet: its type alone.
        _ => json!({"@type": kind}),
    }
}
