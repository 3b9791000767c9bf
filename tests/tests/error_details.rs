//! One error, three wires, the same details: the JSON API's `google.rpc.Status`, Connect's
//! error JSON and gRPC's `grpc-status-details-bin` list the same detail types in the same order
//! (the error's id, then `BadRequest` for an invalid argument, `RetryInfo` when time helps),
//! because all three render `otp_sms_core::ErrorStatus`.

use std::time::Duration;

use axum::response::IntoResponse;
use base64::Engine as _;
use otp_sms_core::{Error, Scope};
use prost::Message;

/// An answer's JSON body.
async fn body_of(response: axum::response::Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The detail types of the JSON API's answer.
async fn json_types(error: &Error) -> (Vec<String>, serde_json::Value) {
    let body = body_of(otp_sms_http::ApiError(error.clone()).into_response()).await;
    let types = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["@type"]
                .as_str()
                .unwrap()
                .trim_start_matches("type.googleapis.com/")
                .to_owned()
        })
        .collect();
    (types, body)
}

/// The detail types of Connect's answer.
async fn connect_types(error: &Error) -> (Vec<String>, serde_json::Value) {
    let body = body_of(otp_sms_grpc::connect_error_response(error)).await;
    let types = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["type"].as_str().unwrap().to_owned())
        .collect();
    (types, body)
}

/// The detail types of gRPC's status, with the details themselves.
fn grpc_details(error: &Error) -> Vec<prost_types::Any> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
        #[prost(message, repeated, tag = "3")]
        details: Vec<prost_types::Any>,
    }
    let status = otp_sms_grpc::status(error);
    RpcStatus::decode(status.details()).unwrap().details
}

fn names(details: &[prost_types::Any]) -> Vec<String> {
    details
        .iter()
        .map(|a| {
            a.type_url
                .trim_start_matches("type.googleapis.com/")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn an_invalid_argument_names_its_field_on_every_wire() {
    let error = Error::invalid("code", "must be 6 to 8 digits");
    let expected = ["zitadel.v1.ErrorDetail", "google.rpc.BadRequest"];
    let (json, body) = json_types(&error).await;
    assert_eq!(json, expected, "{body}");
    assert_eq!(body["details"][1]["fieldViolations"][0]["field"], "code");
    let (connect, body) = connect_types(&error).await;
    assert_eq!(connect, expected, "{body}");
    let grpc = grpc_details(&error);
    assert_eq!(names(&grpc), expected);
    let bad = tonic_types::pb::BadRequest::decode(grpc[1].value.as_slice()).unwrap();
    assert_eq!(bad.field_violations[0].field, "code");
    assert_eq!(bad.field_violations[0].description, "must be 6 to 8 digits");
    // Connect's detail is the same message, base64 without padding.
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(body["details"][1]["value"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, grpc[1].value);
}

#[tokio::test]
async fn a_refusal_says_when_to_come_back_on_every_wire_and_an_internal_error_hides_its_cause() {
    let refused = Error::SendRefused {
        scope: Scope::User,
        retry_after: Some(Duration::from_secs(90)),
    };
    let expected = ["zitadel.v1.ErrorDetail", "google.rpc.RetryInfo"];
    assert_eq!(json_types(&refused).await.0, expected);
    assert_eq!(connect_types(&refused).await.0, expected);
    assert_eq!(names(&grpc_details(&refused)), expected);

    let internal = Error::Internal("the password is hunter2".into());
    let (json, body) = json_types(&internal).await;
    assert_eq!(json, ["zitadel.v1.ErrorDetail"]);
    let (connect, connect_body) = connect_types(&internal).await;
    assert_eq!(connect, ["zitadel.v1.ErrorDetail"]);
    assert_eq!(names(&grpc_details(&internal)), ["zitadel.v1.ErrorDetail"]);
    for text in [body.to_string(), connect_body.to_string()] {
        assert!(!text.contains("hunter2"), "{text}");
    }
    assert!(!otp_sms_grpc::status(&internal)
        .message()
        .contains("hunter2"));
}
