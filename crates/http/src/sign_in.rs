//! Sign-in on HTTP/JSON: a challenge for a verified registration and the check of its code,
//! under the host's binding, beside the registration's routes. The bodies follow ZITADEL's
//! session API (`otpSms.returnCode`, `challenges.otpSms`, `otpSms.code`); the rules are the
//! command service's (`CommandService::challenge` and `check`).

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use otp_sms_core::{ChallengeRequest, CheckRequest};

use crate::error::invalid;
use crate::wire::{
    ChallengeBody, ChallengeResponseJson, ChallengesJson, CheckBody, CheckResponseJson,
    DetailsJson, StatusJson,
};
use crate::{json_body, path_error, Api, ApiError, Call, ContextParams, IdempotencyParams};

/// Request a sign-in challenge (extension: ZITADEL's session API `RequestChallenges.otp_sms`).
///
/// A fresh code for one of the user's verified OTP SMS registrations (`otpSmsId`, or the most
/// recently verified), sent by SMS or, with `otpSms.returnCode` (needs `user.write`), returned
/// in `challenges.otpSms`. It is bound to `binding`, the host's session or transaction id: only
/// a check under the same binding can complete it. A new challenge under the same binding
/// replaces it. Takes the user's `sign_in` budget (and the send budgets when sent).
#[utoipa::path(
    post,
    path = "/resources/v3alpha/users/{id}/otp_sms/_challenge",
    operation_id = "OTPSMSSignIn_RequestOTPSMSChallenge",
    params(
        ("id" = String, Path, description = "The user (1..=200 characters)."),
        ContextParams,
        IdempotencyParams,
    ),
    request_body(content = ChallengeBody, content_type = "application/json"),
    responses(
        (status = 200, description = "A challenge was issued", body = ChallengeResponseJson),
        (status = 400, description = "INVALID_ARGUMENT or FAILED_PRECONDITION (no verified registration, not verified, locked)", body = StatusJson),
        (status = 401, description = "UNAUTHENTICATED", body = StatusJson),
        (status = 403, description = "PERMISSION_DENIED", body = StatusJson),
        (status = 404, description = "NOT_FOUND", body = StatusJson),
        (status = 429, description = "RESOURCE_EXHAUSTED (the sign-in or a send budget)", body = StatusJson),
        (status = "default", description = "An unexpected error", body = StatusJson),
    )
)]
pub(crate) async fn challenge(
    State(api): State<Api>,
    Call { caller, query }: Call,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Json<ChallengeResponseJson>, ApiError> {
    let Path(user_id) = path.map_err(path_error)?;
    let bytes = json_body(body).await?;
    // The serde message is not echoed: it could quote the binding.
    let body: ChallengeBody = serde_json::from_slice(&bytes)
        .map_err(|_| invalid("body", "malformed RequestOTPSMSChallengeRequest JSON"))?;
    let mut request = ChallengeRequest::new(user_id, body.binding);
    request.organization = query.organization();
    request.registration_id = body.otp_sms_id;
    request.return_code = body.otp_sms.is_some_and(|o| o.return_code);
    let challenged = api.service.challenge(&caller, request).await?;
    Ok(Json(ChallengeResponseJson {
        details: DetailsJson::from(&challenged.details),
        otp_sms_id: challenged.registration_id.to_string(),
        challenges: ChallengesJson {
            otp_sms: challenged.code.map(|c| c.expose().to_owned()),
        },
    }))
}

/// Check a sign-in code (extension: ZITADEL's session API `Checks.otp_sms`).
///
/// The code the user typed, under the binding the challenge was issued under. The right code,
/// in time, succeeds once: the answer's `details.changed` is the factor's time and `otpSmsId`
/// its registration. A wrong code (or one under a binding without a challenge) is
/// INVALID_ARGUMENT and counts toward the user's lock; a completed, burnt or expired challenge
/// is FAILED_PRECONDITION.
#[utoipa::path(
    post,
    path = "/resources/v3alpha/users/{id}/otp_sms/_check",
    operation_id = "OTPSMSSignIn_CheckOTPSMSChallenge",
    params(
        ("id" = String, Path, description = "The user (1..=200 characters)."),
        ContextParams,
        IdempotencyParams,
    ),
    request_body(content = CheckBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The user holds the phone", body = CheckResponseJson),
        (status = 400, description = "INVALID_ARGUMENT (wrong code, bounds) or FAILED_PRECONDITION (used, burnt, expired, locked)", body = StatusJson),
        (status = 401, description = "UNAUTHENTICATED", body = StatusJson),
        (status = 403, description = "PERMISSION_DENIED", body = StatusJson),
        (status = 404, description = "NOT_FOUND", body = StatusJson),
        (status = "default", description = "An unexpected error", body = StatusJson),
    )
)]
pub(crate) async fn check(
    State(api): State<Api>,
    Call { caller, query }: Call,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Json<CheckResponseJson>, ApiError> {
    let Path(user_id) = path.map_err(path_error)?;
    let bytes = json_body(body).await?;
    // The serde message is not echoed: it could quote the code.
    let body: CheckBody = serde_json::from_slice(&bytes)
        .map_err(|_| invalid("body", "malformed CheckOTPSMSChallengeRequest JSON"))?;
    let mut request = CheckRequest::new(user_id, body.binding, body.otp_sms.code);
    request.organization = query.organization();
    request.registration_id = body.otp_sms_id;
    let checked = api.service.check(&caller, request).await?;
    Ok(Json(CheckResponseJson {
        details: DetailsJson::from(&checked.details),
        otp_sms_id: checked.registration_id.to_string(),
    }))
}
