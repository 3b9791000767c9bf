//! End-to-end over gRPC and gRPC-web, against the real server binary, with a client generated
//! from the project's own `.proto`; and the JSON answers parsed by a strict proto3 JSON parser
//! of the same definitions.

use otp_sms_grpc::proto::zitadel::object::v3alpha::{
    instance, organization, Instance, Organization, OwnerType,
};
use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::{
    set_phone, zitadel_users_client::ZitadelUsersClient, AddOtpsmsAuthenticatorRequest,
    AddOtpsmsAuthenticatorResponse, RemoveOtpsmsAuthenticatorRequest, ReturnPhoneVerificationCode,
    SetPhone, VerifyOtpsmsRegistrationRequest,
};
use otp_sms_tests::server::Server;
use prost::Message;
use tonic::transport::Channel;
use tonic::{Code, Request};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

fn server() -> Server {
    otp_sms_tests::server::memory_server(BIN)
}

async fn client(s: &Server) -> ZitadelUsersClient<Channel> {
    ZitadelUsersClient::connect(s.base_url.clone())
        .await
        .expect("connect over HTTP/2")
}

fn authed<T>(message: T, token: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

fn add_request(user: &str) -> AddOtpsmsAuthenticatorRequest {
    AddOtpsmsAuthenticatorRequest {
        id: user.into(),
        phone: Some(SetPhone {
            number: "+41791234567".into(),
            verification: Some(set_phone::Verification::ReturnCode(
                ReturnPhoneVerificationCode {},
            )),
        }),
        ..Default::default()
    }
}

fn verify_request(user: &str, id: &str, code: &str) -> VerifyOtpsmsRegistrationRequest {
    VerifyOtpsmsRegistrationRequest {
        id: user.into(),
        otp_sms_id: id.into(),
        code: code.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_then_verify_over_grpc() {
    let s = server();
    let mut c = client(&s).await;
    let added = c
        .add_otpsms_authenticator(authed(
            AddOtpsmsAuthenticatorRequest {
                instance: Some(Instance {
                    property: Some(instance::Property::Domain("inst-1.test".into())),
                }),
                organization: Some(Organization {
                    property: Some(organization::Property::OrgId("org-1".into())),
                }),
                ..add_request("alice")
            },
            Some("token-alice"),
        ))
        .await
        .expect("add")
        .into_inner();
    let code = added
        .verification_code
        .clone()
        .expect("return_code returns the code");
    let details = added.details.clone().unwrap();
    assert_eq!(details.id, added.otp_sms_id);
    let owner = details.owner.unwrap();
    assert_eq!(owner.r#type, OwnerType::Org as i32);
    assert_eq!(owner.id, "org-1");

    let verified = c
        .verify_otpsms_registration(authed(
            verify_request("alice", &added.otp_sms_id, &code),
            Some("token-alice"),
        ))
        .await
        .expect("verify")
        .into_inner()
        .details
        .unwrap();
    assert_eq!(verified.id, added.otp_sms_id);
    let (created, changed) = (verified.created.unwrap(), verified.changed.unwrap());
    assert!((changed.seconds, changed.nanos) >= (created.seconds, created.nanos));

    let removed = c
        .remove_otpsms_authenticator(authed(
            RemoveOtpsmsAuthenticatorRequest {
                id: "alice".into(),
                otp_sms_id: added.otp_sms_id.clone(),
                ..Default::default()
            },
            Some("token-alice"),
        ))
        .await
        .expect("remove");
    assert_eq!(removed.into_inner().details.unwrap().id, added.otp_sms_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_case_over_grpc() {
    let s = server();
    let mut c = client(&s).await;
    let added = c
        .add_otpsms_authenticator(authed(add_request("alice"), Some("token-alice")))
        .await
        .unwrap()
        .into_inner();
    let id = added.otp_sms_id.clone();
    let code = added.verification_code.clone().unwrap();
    let wrong: String = code
        .chars()
        .map(|ch| if ch == '0' { '1' } else { '0' })
        .collect();

    let cases: Vec<(VerifyOtpsmsRegistrationRequest, Option<&str>, Code)> = vec![
        (
            verify_request("alice", &id, &code),
            None,
            Code::Unauthenticated,
        ),
        (
            verify_request("alice", &id, &code),
            Some("not-a-token"),
            Code::Unauthenticated,
        ),
        (
            verify_request("alice", &id, ""),
            Some("token-alice"),
            Code::InvalidArgument,
        ),
        (
            verify_request("alice", &id, &"1".repeat(201)),
            Some("token-alice"),
            Code::InvalidArgument,
        ),
        (
            verify_request("carol", &id, &code),
            Some("token-admin"),
            Code::NotFound,
        ),
        (
            verify_request("alice", "unknown", &code),
            Some("token-alice"),
            Code::NotFound,
        ),
        (
            VerifyOtpsmsRegistrationRequest {
                instance: Some(Instance {
                    property: Some(instance::Property::Id("inst-2".into())),
                }),
                ..verify_request("alice", &id, &code)
            },
            Some("token-alice"),
            Code::NotFound,
        ),
        (
            verify_request("alice", &id, &code),
            Some("token-stranger"),
            Code::PermissionDenied,
        ),
        (
            verify_request("alice", &id, &wrong),
            Some("token-alice"),
            Code::InvalidArgument,
        ),
    ];
    for (request, token, expected) in cases {
        let err = c
            .verify_otpsms_registration(authed(request.clone(), token))
            .await
            .expect_err("refused");
        assert_eq!(err.code(), expected, "{request:?}: {err:?}");
        assert!(!err.message().contains(&code) && !err.message().contains(&wrong));
    }
    c.verify_otpsms_registration(authed(
        verify_request("alice", &id, &code),
        Some("token-alice"),
    ))
    .await
    .expect("the right code");
    let again = c
        .verify_otpsms_registration(authed(
            verify_request("alice", &id, &code),
            Some("token-alice"),
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let bad_phone = c
        .add_otpsms_authenticator(authed(
            AddOtpsmsAuthenticatorRequest {
                phone: None,
                ..add_request("alice")
            },
            Some("token-alice"),
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_phone.code(), Code::InvalidArgument);
}

/// Calls a method by path with an empty request: for methods the client does not know.
async fn call_raw(s: &Server, path: &'static str) -> tonic::Status {
    let channel = Channel::from_shared(s.base_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    grpc.unary(
        Request::new(()),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .expect_err("unimplemented")
}

/// A client that compresses its messages with gzip (as connect-go's and grpc-go's can, and as
/// ZITADEL's server accepts) is served; a message that unpacks past the 64 KiB limit is refused
/// before it is decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_compressed_requests_are_read_within_the_size_limit() {
    use tonic::codec::CompressionEncoding;
    let s = server();
    let mut gzip = client(&s).await.send_compressed(CompressionEncoding::Gzip);
    let added = gzip
        .add_otpsms_authenticator(authed(add_request("alice"), Some("token-alice")))
        .await
        .expect("a gzip request is served")
        .into_inner();
    assert!(added.verification_code.is_some());
    // 1 MiB of one character compresses to about a kilobyte.
    let mut huge = add_request("alice");
    huge.id = "a".repeat(1 << 20);
    let refused = gzip
        .add_otpsms_authenticator(authed(huge, Some("token-alice")))
        .await
        .unwrap_err();
    // tonic bounds the decompression itself: nothing past the limit is unpacked.
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("65536"), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_and_services_are_unimplemented() {
    let s = server();
    for path in [
        "/zitadel.resources.user.v3alpha.ZITADELUsers/CreateUser",
        "/zitadel.other.v1.Service/Method",
    ] {
        assert_eq!(
            call_raw(&s, path).await.code(),
            Code::Unimplemented,
            "{path}"
        );
    }
}

/// One gRPC-web frame: flag, big-endian length, message.
fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a gRPC-web response body into its message and its trailers.
fn unframe(body: &[u8]) -> (Option<Vec<u8>>, String) {
    let (mut message, mut trailers, mut rest) = (None, String::new(), body);
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        let payload = &rest[5..5 + len];
        if rest[0] & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(payload));
        } else {
            message = Some(payload.to_vec());
        }
        rest = &rest[5 + len..];
    }
    (message, trailers)
}

/// A gRPC-web-text call (base64 frames) that does not ask for a format (`Accept: */*`, as
/// reqwest and fetch send) is answered in text, as the request was: a browser client that
/// reads base64 gets base64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_web_text_call_without_accept_is_answered_in_text() {
    use base64::Engine;
    let s = server();
    let b64 = base64::engine::general_purpose::STANDARD;
    let res = reqwest::Client::new()
        .post(s.url("/zitadel.resources.user.v3alpha.ZITADELUsers/AddOTPSMSAuthenticator"))
        .header("content-type", "application/grpc-web-text")
        .header("x-grpc-web", "1")
        .bearer_auth("token-alice")
        .body(b64.encode(frame(0, &add_request("alice").encode_to_vec())))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("application/grpc-web-text"),
        "{content_type}"
    );
    let text = res.text().await.unwrap();
    // Each frame is base64 of its own, padded: decode four characters (one quantum) at a time.
    let text: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut body = Vec::new();
    for quantum in text.chunks(4) {
        body.extend(b64.decode(quantum).expect("base64"));
    }
    let (message, trailers) = unframe(&body);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let added = AddOtpsmsAuthenticatorResponse::decode(message.unwrap().as_slice()).unwrap();
    assert!(added.verification_code.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_then_verify_over_grpc_web_on_http1() {
    let s = server();
    let http = reqwest::Client::builder().http1_only().build().unwrap();
    let call = |method: &'static str, body: Vec<u8>, token: Option<&'static str>| {
        let mut req = http
            .post(s.url(&format!(
                "/zitadel.resources.user.v3alpha.ZITADELUsers/{method}"
            )))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .body(frame(0, &body));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    let res = call(
        "AddOTPSMSAuthenticator",
        add_request("alice").encode_to_vec(),
        Some("token-alice"),
    )
    .await
    .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_11);
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/grpc-web"));
    let (message, trailers) = unframe(&res.bytes().await.unwrap());
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let added = AddOtpsmsAuthenticatorResponse::decode(message.unwrap().as_slice()).unwrap();
    let code = added.verification_code.clone().unwrap();

    let res = call(
        "VerifyOTPSMSRegistration",
        verify_request("alice", &added.otp_sms_id, &code).encode_to_vec(),
        Some("token-alice"),
    )
    .await
    .unwrap();
    let (message, trailers) = unframe(&res.bytes().await.unwrap());
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    assert!(message.is_some());

    // An error over gRPC-web: the status comes in the headers of a trailers-only answer, or in
    // the trailer frame.
    let res = call(
        "VerifyOTPSMSRegistration",
        verify_request("alice", &added.otp_sms_id, &code).encode_to_vec(),
        None,
    )
    .await
    .unwrap();
    let header_status = res
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned());
    let (_, trailers) = unframe(&res.bytes().await.unwrap());
    assert!(
        header_status.as_deref() == Some("16") || trailers.contains("grpc-status:16"),
        "{header_status:?} {trailers}"
    );
}

/// The JSON answers of the HTTP API parse with a strict proto3 JSON parser (unknown fields
/// refused) of the same definitions the gRPC clients use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answers_parse_strictly_as_the_public_messages() {
    let pool = prost_reflect::DescriptorPool::decode(otp_sms_grpc::FILE_DESCRIPTOR_SET).unwrap();
    let strict = prost_reflect::DeserializeOptions::new().deny_unknown_fields(true);
    let parse = |message: &str, json: &str| {
        let desc = pool
            .get_message_by_name(&format!("zitadel.resources.user.v3alpha.{message}"))
            .unwrap();
        let mut de = serde_json::Deserializer::from_str(json);
        prost_reflect::DynamicMessage::deserialize_with_options(desc, &mut de, &strict)
            .unwrap_or_else(|e| panic!("{message} does not parse strictly: {e}\n{json}"))
    };
    // The checker refuses what the definition lacks.
    let desc = pool
        .get_message_by_name("zitadel.resources.user.v3alpha.VerifyOTPSMSRegistrationResponse")
        .unwrap();
    let mut de = serde_json::Deserializer::from_str(r#"{"details": {"id": "x", "extra": 1}}"#);
    assert!(
        prost_reflect::DynamicMessage::deserialize_with_options(desc, &mut de, &strict).is_err()
    );

    let s = server();
    let http = reqwest::Client::new();
    let add = http
        .post(s.url("/resources/v3alpha/users/alice/otp_sms"))
        .bearer_auth("token-alice")
        .header("content-type", "application/json")
        .body(r#"{"number": "+41791234567", "returnCode": {}}"#)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let added = parse("AddOTPSMSAuthenticatorResponse", &add);
    let id = added
        .get_field_by_name("otp_sms_id")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let code = added
        .get_field_by_name("verification_code")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned();
    let verify = http
        .post(s.url(&format!(
            "/resources/v3alpha/users/alice/otp_sms/{id}/_verify"
        )))
        .bearer_auth("token-alice")
        .header("content-type", "application/json")
        .body(format!("\"{code}\""))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let verified = parse("VerifyOTPSMSRegistrationResponse", &verify);
    let details = verified.get_field_by_name("details").unwrap();
    let owner = details
        .as_message()
        .unwrap()
        .get_field_by_name("owner")
        .unwrap();
    assert_eq!(
        owner
            .as_message()
            .unwrap()
            .get_field_by_name("type")
            .unwrap()
            .as_enum_number(),
        Some(OwnerType::Org as i32)
    );
    let remove = http
        .delete(s.url(&format!("/resources/v3alpha/users/alice/otp_sms/{id}")))
        .bearer_auth("token-alice")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    parse("RemoveOTPSMSAuthenticatorResponse", &remove);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let s = server();
    let channel = Channel::from_shared(s.base_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"zitadel.resources.user.v3alpha.ZITADELUsers".to_owned()),
        "{names:?}"
    );
    // The project's extensions, in a service of their own.
    assert!(
        names.contains(&"otpsms.v1.OTPSMSExtensions".to_owned()),
        "{names:?}"
    );
}

/// `idempotency-key` metadata: the same key and request answer the first registration; a
/// malformed key is INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_in_metadata_replays_the_first_answer() {
    let s = server();
    let mut c = client(&s).await;
    let keyed = |key: &str| {
        let mut request = authed(add_request("alice"), Some("token-alice"));
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
        request
    };
    let first = c
        .add_otpsms_authenticator(keyed("\"k-1\""))
        .await
        .expect("add")
        .into_inner();
    let again = c
        .add_otpsms_authenticator(keyed("k-1"))
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(again.otp_sms_id, first.otp_sms_id);
    assert_eq!(again.verification_code, first.verification_code);
    let other = c
        .add_otpsms_authenticator(keyed("k-2"))
        .await
        .expect("another key")
        .into_inner();
    assert_ne!(other.otp_sms_id, first.otp_sms_id);
    let err = c.add_otpsms_authenticator(keyed("\"\"")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("Idempotency-Key"),
        "{}",
        err.message()
    );
}

/// A request message over 64 KiB is refused before it reaches the call (OUT_OF_RANGE, tonic's
/// code), as the JSON API refuses a body over 64 KiB; one just under is decoded and refused by
/// the call's own bounds (INVALID_ARGUMENT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_64_kib_are_refused() {
    let s = server();
    let mut c = client(&s).await;
    let with_number = |number: String| AddOtpsmsAuthenticatorRequest {
        id: "alice".into(),
        phone: Some(SetPhone {
            number,
            verification: None,
        }),
        ..Default::default()
    };
    let over = c
        .add_otpsms_authenticator(authed(with_number("1".repeat(70_000)), Some("token-alice")))
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::OutOfRange, "{over:?}");
    let under = c
        .add_otpsms_authenticator(authed(with_number("1".repeat(60_000)), Some("token-alice")))
        .await
        .unwrap_err();
    assert_eq!(under.code(), Code::InvalidArgument, "{under:?}");
}

/// Sign-in over gRPC with the generated client of `otpsms.v1.OTPSMSSignIn`: challenge (the
/// code returned), check, a replay refused; a wrong binding's code INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_over_grpc() {
    use otp_sms_grpc::proto::otpsms::v1::{
        otpsms_sign_in_client::OtpsmsSignInClient, request_challenges, CheckOtp,
        CheckOtpsmsChallengeRequest, RequestOtpsmsChallengeRequest,
    };
    let s = server();
    let registration = verified_alice(&s).await;
    let mut sign_in = OtpsmsSignInClient::connect(s.base_url.clone())
        .await
        .expect("connect");
    let challenged = sign_in
        .request_otpsms_challenge(authed(
            RequestOtpsmsChallengeRequest {
                id: "alice".into(),
                binding: "session-1".into(),
                otp_sms: Some(request_challenges::Otpsms { return_code: true }),
                ..Default::default()
            },
            Some("token-alice"),
        ))
        .await
        .expect("challenge")
        .into_inner();
    assert_eq!(challenged.otp_sms_id, registration);
    let code = challenged.challenges.unwrap().otp_sms.expect("returned");
    let check = |binding: &str| CheckOtpsmsChallengeRequest {
        id: "alice".into(),
        binding: binding.into(),
        otp_sms: Some(CheckOtp { code: code.clone() }),
        ..Default::default()
    };
    let wrong = sign_in
        .check_otpsms_challenge(authed(check("session-2"), Some("token-alice")))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument, "{wrong:?}");
    let checked = sign_in
        .check_otpsms_challenge(authed(check("session-1"), Some("token-alice")))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(checked.otp_sms_id, registration);
    assert!(checked.details.unwrap().changed.is_some());
    let replay = sign_in
        .check_otpsms_challenge(authed(check("session-1"), Some("token-alice")))
        .await
        .unwrap_err();
    assert_eq!(replay.code(), Code::FailedPrecondition, "{replay:?}");
    let unauthenticated = sign_in
        .check_otpsms_challenge(authed(check("session-1"), None))
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
}

/// Alice's phone, added with the code returned and verified over gRPC: its `otp_sms_id`.
async fn verified_alice(s: &Server) -> String {
    let mut users = client(s).await;
    let added = users
        .add_otpsms_authenticator(authed(add_request("alice"), Some("token-alice")))
        .await
        .expect("add")
        .into_inner();
    let code = added.verification_code.clone().expect("returned");
    users
        .verify_otpsms_registration(authed(
            verify_request("alice", &added.otp_sms_id, &code),
            Some("token-alice"),
        ))
        .await
        .expect("verify");
    added.otp_sms_id
}

/// Sign-in over gRPC-web on HTTP/1.1: the challenge and its check, framed as browsers send them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_over_grpc_web_on_http1() {
    use otp_sms_grpc::proto::otpsms::v1::{
        request_challenges, CheckOtp, CheckOtpsmsChallengeRequest, CheckOtpsmsChallengeResponse,
        RequestOtpsmsChallengeRequest, RequestOtpsmsChallengeResponse,
    };
    let s = server();
    let registration = verified_alice(&s).await;
    let http = reqwest::Client::builder().http1_only().build().unwrap();
    let call = |method: &'static str, body: Vec<u8>| {
        http.post(s.url(&format!("/otpsms.v1.OTPSMSSignIn/{method}")))
            .header("content-type", "application/grpc-web+proto")
            .header("x-grpc-web", "1")
            .bearer_auth("token-alice")
            .body(frame(0, &body))
            .send()
    };
    let challenge = RequestOtpsmsChallengeRequest {
        id: "alice".into(),
        binding: "session-1".into(),
        otp_sms: Some(request_challenges::Otpsms { return_code: true }),
        ..Default::default()
    };
    let res = call("RequestOTPSMSChallenge", challenge.encode_to_vec())
        .await
        .unwrap();
    let (message, trailers) = unframe(&res.bytes().await.unwrap());
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let challenged = RequestOtpsmsChallengeResponse::decode(message.unwrap().as_slice()).unwrap();
    let code = challenged.challenges.unwrap().otp_sms.unwrap();
    let check = CheckOtpsmsChallengeRequest {
        id: "alice".into(),
        binding: "session-1".into(),
        otp_sms: Some(CheckOtp { code }),
        ..Default::default()
    };
    let res = call("CheckOTPSMSChallenge", check.encode_to_vec())
        .await
        .unwrap();
    let (message, trailers) = unframe(&res.bytes().await.unwrap());
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let checked = CheckOtpsmsChallengeResponse::decode(message.unwrap().as_slice()).unwrap();
    assert_eq!(checked.otp_sms_id, registration);
}

/// The user's phones over gRPC (`otpsms.v1.OTPSMSExtensions/ListOTPSMSAuthenticators`),
/// masked for the user, in full for a holder of `user.write`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_are_listed_over_grpc() {
    use otp_sms_grpc::proto::otpsms::v1::{
        otpsms_extensions_client::OtpsmsExtensionsClient, ListOtpsmsAuthenticatorsRequest,
    };
    let s = server();
    let registration = verified_alice(&s).await;
    let mut extensions = OtpsmsExtensionsClient::connect(s.base_url.clone())
        .await
        .expect("connect");
    let list = |token: &'static str| {
        authed(
            ListOtpsmsAuthenticatorsRequest {
                id: "alice".into(),
                ..Default::default()
            },
            Some(token),
        )
    };
    let own = extensions
        .list_otpsms_authenticators(list("token-alice"))
        .await
        .expect("list")
        .into_inner()
        .otp_sms;
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].otp_sms_id, registration);
    assert!(own[0].is_verified && own[0].verified_at.is_some());
    assert_eq!(own[0].phone, "+41*******67");
    let full = extensions
        .list_otpsms_authenticators(list("token-admin"))
        .await
        .expect("list")
        .into_inner()
        .otp_sms;
    assert_eq!(full[0].phone, "+41791234567");
    let denied = extensions
        .list_otpsms_authenticators(list("token-stranger"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}
