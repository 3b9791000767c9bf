//! The frameworks' own ceilings, served together by `axum::serve` (HTTP/1.1 and HTTP/2), with
//! nothing else: no authentication, no store, no middleware.
//!
//! - `POST /baseline`: a bare axum handler that parses a 20-byte JSON body and answers 150
//!   bytes of JSON.
//! - `ZITADELUsers/VerifyOTPSMSRegistration`: a bare tonic handler (tonic's own codec, no
//!   gRPC-web layer) that decodes the request and answers the same details, so the gRPC
//!   server's figure has a ceiling of its own protocol (HTTP/2 framing and HPACK on both
//!   sides) beside the HTTP/1.1 one. Its other methods answer UNIMPLEMENTED.

use axum::routing::post;
use axum::Json;
use otp_sms_grpc::proto::zitadel::object::v3alpha as object;
use otp_sms_grpc::proto::zitadel::resources::object::v3alpha as resources_object;
use otp_sms_grpc::proto::zitadel::resources::user::v3alpha as user;
use tonic::{Request, Response, Status};
use user::zitadel_users_server::{ZitadelUsers, ZitadelUsersServer};

/// The baseline's answer: 150 bytes, shaped like the API's details.
pub const ANSWER: &str = r#"{"details":{"id":"01939a4e-7f5c-7b3d-9c1a-2f6e8d4b5a69","changed":"2026-11-30T12:00:00.000Z","owner":{"type":"OWNER_TYPE_ORG","id":"bench-org-0000"}}}"#;

async fn baseline(Json(body): Json<serde_json::Value>) -> impl axum::response::IntoResponse {
    // The body is read as the API reads its own: parsed, and one field looked at.
    let ok = body.get("code").and_then(|c| c.as_str()).is_some();
    (
        if ok {
            axum::http::StatusCode::OK
        } else {
            axum::http::StatusCode::BAD_REQUEST
        },
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        ANSWER,
    )
}

/// The baseline's time, as the API's details carry two.
const AT: prost_types::Timestamp = prost_types::Timestamp {
    seconds: 1_796_040_000,
    nanos: 0,
};

/// The bare gRPC service: verify answers fixed details, the rest is UNIMPLEMENTED.
struct BareUsers;

#[tonic::async_trait]
impl ZitadelUsers for BareUsers {
    async fn add_otpsms_authenticator(
        &self,
        _: Request<user::AddOtpsmsAuthenticatorRequest>,
    ) -> Result<Response<user::AddOtpsmsAuthenticatorResponse>, Status> {
        Err(Status::unimplemented("the baseline verifies only"))
    }

    async fn verify_otpsms_registration(
        &self,
        request: Request<user::VerifyOtpsmsRegistrationRequest>,
    ) -> Result<Response<user::VerifyOtpsmsRegistrationResponse>, Status> {
        // The request is read as the API reads its own: decoded, and one field looked at.
        if request.get_ref().code.is_empty() {
            return Err(Status::invalid_argument("code"));
        }
        Ok(Response::new(user::VerifyOtpsmsRegistrationResponse {
            details: Some(resources_object::Details {
                id: "01939a4e-7f5c-7b3d-9c1a-2f6e8d4b5a69".into(),
                created: Some(AT),
                changed: Some(AT),
                owner: Some(object::Owner {
                    r#type: object::OwnerType::Org as i32,
                    id: "bench-org-0000".into(),
                }),
            }),
        }))
    }

    async fn remove_otpsms_authenticator(
        &self,
        _: Request<user::RemoveOtpsmsAuthenticatorRequest>,
    ) -> Result<Response<user::RemoveOtpsmsAuthenticatorResponse>, Status> {
        Err(Status::unimplemented("the baseline verifies only"))
    }
}

/// Serves `POST /baseline` and the bare gRPC service on `listen` until the process ends.
pub async fn serve(listen: std::net::SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("baseline listening on http://{local}");
    let grpc = tonic::service::Routes::new(ZitadelUsersServer::new(BareUsers)).into_axum_router();
    let app = axum::Router::new()
        .route("/baseline", post(baseline))
        .merge(grpc);
    axum::serve(listener, app).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_answer_is_150_bytes_and_the_request_20() {
        assert_eq!(super::ANSWER.len(), 150);
        assert_eq!(crate::remote::BASELINE_BODY.len(), 20);
    }
}
