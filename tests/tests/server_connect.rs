//! The Connect protocol end to end, against the real server binary: the whole flow in JSON and
//! in binary, the protocol's error body and HTTP statuses, its headers, and what it refuses.
//! Requests are built as the protocol's specification states them (unary POST to
//! `/<package.Service>/<Method>`), so the test does not lean on our own client code.

use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::{
    set_phone, AddOtpsmsAuthenticatorRequest, AddOtpsmsAuthenticatorResponse,
    RemoveOtpsmsAuthenticatorRequest, ReturnPhoneVerificationCode, SetPhone,
    VerifyOtpsmsRegistrationRequest, VerifyOtpsmsRegistrationResponse,
};
use otp_sms_tests::server::Server;
use prost::Message;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");
const SERVICE: &str = "zitadel.resources.user.v3alpha.ZITADELUsers";

fn server() -> Server {
    otp_sms_tests::server::memory_server(BIN)
}

/// One Connect unary call: its HTTP status, `Content-Type` and body.
async fn call(
    s: &Server,
    method: &str,
    content_type: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    let mut request = reqwest::Client::new()
        .post(s.url(&format!("/{SERVICE}/{method}")))
        .header("content-type", content_type)
        .body(body);
    if !headers
        .iter()
        .any(|(name, _)| *name == "connect-protocol-version")
    {
        request = request.header("connect-protocol-version", "1");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the call");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        status,
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}

const ALICE: (&str, &str) = ("authorization", "Bearer token-alice");

/// A protocol case: why, method, content type, body, headers, the HTTP status, and the Connect
/// code when the answer is an error body.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Vec<u8>,
    Vec<(&'a str, &'a str)>,
    u16,
    Option<&'a str>,
);

/// A JSON call as alice.
async fn json_call(s: &Server, method: &str, body: Value) -> (u16, Value) {
    let (status, content_type, bytes) = call(
        s,
        method,
        "application/json",
        body.to_string().into_bytes(),
        &[ALICE],
    )
    .await;
    assert_eq!(content_type, "application/json");
    (status, serde_json::from_slice(&bytes).expect("a JSON body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_in_json() {
    let s = server();
    let (status, added) = json_call(
        &s,
        "AddOTPSMSAuthenticator",
        json!({"id": "alice", "phone": {"number": "+41791234567", "returnCode": {}}}),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    let id = added["otpSmsId"].as_str().expect("otpSmsId").to_owned();
    let code = added["verificationCode"]
        .as_str()
        .expect("the code")
        .to_owned();
    assert_eq!(added["details"]["owner"]["type"], "OWNER_TYPE_ORG");
    let verify = |code: String| json!({"id": "alice", "otpSmsId": id, "code": code});
    let wrong: String = code
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();

    // Wrong code: invalid_argument, 400.
    let (status, error) = json_call(&s, "VerifyOTPSMSRegistration", verify(wrong)).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("invalid_argument")),
        "{error}"
    );
    assert!(!error.to_string().contains(&code), "no code in errors");
    // Right code: OK, with the details.
    let (status, verified) = json_call(&s, "VerifyOTPSMSRegistration", verify(code.clone())).await;
    assert_eq!(status, 200, "{verified}");
    assert!(verified["details"]["changed"].is_string());
    // Again: failed_precondition, 400.
    let (status, error) = json_call(&s, "VerifyOTPSMSRegistration", verify(code.clone())).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (400, Some("failed_precondition"))
    );
    // Remove: OK.
    let (status, removed) = json_call(
        &s,
        "RemoveOTPSMSAuthenticator",
        json!({"id": "alice", "otpSmsId": id}),
    )
    .await;
    assert_eq!(status, 200, "{removed}");
    // Verify after remove: not_found, 404.
    let (status, error) = json_call(&s, "VerifyOTPSMSRegistration", verify(code)).await;
    assert_eq!((status, error["code"].as_str()), (404, Some("not_found")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_flow_in_binary() {
    let s = server();
    let proto = |method: &'static str, body: Vec<u8>| {
        let s = &s;
        async move { call(s, method, "application/proto", body, &[ALICE]).await }
    };
    let error_code = |bytes: &[u8]| -> String {
        let body: Value = serde_json::from_slice(bytes).expect("errors are JSON");
        body["code"].as_str().unwrap().to_owned()
    };
    let (status, content_type, bytes) = proto(
        "AddOTPSMSAuthenticator",
        AddOtpsmsAuthenticatorRequest {
            id: "alice".into(),
            phone: Some(SetPhone {
                number: "+41791234567".into(),
                verification: Some(set_phone::Verification::ReturnCode(
                    ReturnPhoneVerificationCode {},
                )),
            }),
            ..Default::default()
        }
        .encode_to_vec(),
    )
    .await;
    assert_eq!((status, content_type.as_str()), (200, "application/proto"));
    let added = AddOtpsmsAuthenticatorResponse::decode(bytes.as_slice()).unwrap();
    let code = added.verification_code.clone().unwrap();
    let verify = |code: &str| {
        VerifyOtpsmsRegistrationRequest {
            id: "alice".into(),
            otp_sms_id: added.otp_sms_id.clone(),
            code: code.into(),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let wrong: String = code
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();

    let (status, content_type, bytes) = proto("VerifyOTPSMSRegistration", verify(&wrong)).await;
    assert_eq!((status, content_type.as_str()), (400, "application/json"));
    assert_eq!(error_code(&bytes), "invalid_argument");
    let (status, _, bytes) = proto("VerifyOTPSMSRegistration", verify(&code)).await;
    assert_eq!(status, 200);
    let verified = VerifyOtpsmsRegistrationResponse::decode(bytes.as_slice()).unwrap();
    assert!(verified.details.is_some());
    let (status, _, bytes) = proto("VerifyOTPSMSRegistration", verify(&code)).await;
    assert_eq!(
        (status, error_code(&bytes).as_str()),
        (400, "failed_precondition")
    );
    let remove = RemoveOtpsmsAuthenticatorRequest {
        id: "alice".into(),
        otp_sms_id: added.otp_sms_id.clone(),
        ..Default::default()
    };
    let (status, _, _) = proto("RemoveOTPSMSAuthenticator", remove.encode_to_vec()).await;
    assert_eq!(status, 200);
    let (status, _, bytes) = proto("VerifyOTPSMSRegistration", verify(&code)).await;
    assert_eq!((status, error_code(&bytes).as_str()), (404, "not_found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocols_headers_and_refusals() {
    let s = server();
    let add = json!({"id": "alice", "phone": {"number": "+41791234567", "returnCode": {}}})
        .to_string()
        .into_bytes();
    let newer = json!({"id": "alice", "phone": {"number": "+41791234568", "returnCode": {}}, "futureField": {"x": 1}})
        .to_string()
        .into_bytes();
    let gzip = |bytes: &[u8]| {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    };
    let compressed = gzip(
        &json!({"id": "alice", "phone": {"number": "+41791234569", "returnCode": {}}})
            .to_string()
            .into_bytes(),
    );
    // A few hundred bytes that unpack to 1 MiB: past the 64 KiB limit once decompressed.
    let mut padded = b"{\"id\": \"alice\", \"pad\": \"".to_vec();
    padded.extend(std::iter::repeat_n(b' ', 1 << 20));
    padded.extend_from_slice(b"\"}");
    let bomb = gzip(&padded);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let cases: Vec<Case> = vec![
        (
            "no credentials",
            "AddOTPSMSAuthenticator",
            "application/json",
            add.clone(),
            vec![],
            401,
            Some("unauthenticated"),
        ),
        (
            "a protocol version other than 1",
            "AddOTPSMSAuthenticator",
            "application/json",
            add.clone(),
            vec![ALICE, ("connect-protocol-version", "2")],
            400,
            Some("invalid_argument"),
        ),
        (
            "a malformed timeout",
            "AddOTPSMSAuthenticator",
            "application/json",
            add.clone(),
            vec![ALICE, ("connect-timeout-ms", "soon")],
            400,
            Some("invalid_argument"),
        ),
        (
            "a timeout of zero: the deadline has passed, nothing runs",
            "AddOTPSMSAuthenticator",
            "application/json",
            add.clone(),
            vec![ALICE, ("connect-timeout-ms", "0")],
            504,
            Some("deadline_exceeded"),
        ),
        (
            "a generous timeout and a charset",
            "AddOTPSMSAuthenticator",
            "application/json; charset=utf-8",
            add.clone(),
            vec![ALICE, ("connect-timeout-ms", "5000")],
            200,
            None,
        ),
        (
            "a field of a newer revision, ignored",
            "AddOTPSMSAuthenticator",
            "application/json",
            newer,
            vec![ALICE],
            200,
            None,
        ),
        (
            "a body that is not the message",
            "AddOTPSMSAuthenticator",
            "application/json",
            b"{\"id\": 5}".to_vec(),
            vec![ALICE],
            400,
            Some("invalid_argument"),
        ),
        (
            "bytes that are not the message",
            "AddOTPSMSAuthenticator",
            "application/proto",
            vec![0xff, 0xff],
            vec![ALICE],
            400,
            Some("invalid_argument"),
        ),
        (
            "a gzip body",
            "AddOTPSMSAuthenticator",
            "application/json",
            compressed,
            vec![ALICE, ("content-encoding", "gzip")],
            200,
            None,
        ),
        (
            "a gzip body that unpacks past the limit",
            "AddOTPSMSAuthenticator",
            "application/json",
            bomb,
            vec![ALICE, ("content-encoding", "gzip")],
            429,
            Some("resource_exhausted"),
        ),
        (
            "a body said to be gzip that is not",
            "AddOTPSMSAuthenticator",
            "application/json",
            add.clone(),
            vec![ALICE, ("content-encoding", "gzip")],
            400,
            Some("invalid_argument"),
        ),
        (
            "an encoding the server does not read",
            "AddOTPSMSAuthenticator",
            "application/json",
            add.clone(),
            vec![ALICE, ("content-encoding", "br")],
            501,
            Some("unimplemented"),
        ),
        (
            "another method of the service",
            "CreateUser",
            "application/json",
            b"{}".to_vec(),
            vec![ALICE],
            501,
            Some("unimplemented"),
        ),
        (
            "neither Connect's nor gRPC's content type",
            "AddOTPSMSAuthenticator",
            "text/plain",
            add.clone(),
            vec![ALICE],
            415,
            None,
        ),
    ];
    for (why, method, content_type, body, headers, status, code) in cases {
        let (got, _, bytes) = call(&s, method, content_type, body, &headers).await;
        assert_eq!(got, status, "{why}");
        if let Some(code) = code {
            let error: Value = serde_json::from_slice(&bytes).expect("a JSON error");
            assert_eq!(error["code"].as_str(), Some(code), "{why}");
        }
    }
    // GET: the methods have side effects, so POST only (told to an authenticated caller: a
    // stranger learns nothing but UNAUTHENTICATED).
    let response = reqwest::Client::new()
        .get(s.url(&format!("/{SERVICE}/AddOTPSMSAuthenticator")))
        .header("authorization", "Bearer token-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    // The extension service speaks Connect too: alice may not unlock (user.write only).
    let response = reqwest::Client::new()
        .post(s.url("/otpsms.v1.OTPSMSExtensions/UnlockOTPSMSVerification"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer token-alice")
        .body(json!({"id": "alice"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "permission_denied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_with_a_wait_carries_retry_info() {
    let s = server();
    // Sends to one user's numbers until a send budget refuses (the test configuration keeps
    // the defaults: a handful per user).
    let mut refusal = None;
    for i in 0..30 {
        let body = json!({"id": "alice", "phone": {"number": format!("+417912345{i:02}"), "sendCode": {}}});
        let (status, _, bytes) = call(
            &s,
            "AddOTPSMSAuthenticator",
            "application/json",
            body.to_string().into_bytes(),
            &[ALICE],
        )
        .await;
        if status != 200 {
            refusal = Some((status, bytes));
            break;
        }
    }
    let (status, bytes) = refusal.expect("a send budget refuses within 30 sends");
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status, error["code"].as_str()),
        (429, Some("resource_exhausted")),
        "{error}"
    );
    // As ZITADEL's errors: the error's stable id first, then RetryInfo.
    assert_eq!(
        error["details"][0]["type"], "zitadel.v1.ErrorDetail",
        "{error}"
    );
    let detail = &error["details"][1];
    assert_eq!(detail["type"], "google.rpc.RetryInfo", "{error}");
    // The value is the RetryInfo message, base64 without padding.
    let value = detail["value"].as_str().unwrap();
    assert!(!value.ends_with('='));
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(value)
        .unwrap();
    let info = tonic_types::pb::RetryInfo::decode(raw.as_slice()).unwrap();
    let delay = info.retry_delay.expect("a delay");
    assert!(delay.seconds > 0, "{delay:?}");
}

/// Sign-in over Connect in JSON, at `otpsms.v1.OTPSMSSignIn`, with the session API's field
/// names: the challenge's code in `challenges.otpSms`, the check's in `otpSms.code`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_in_json() {
    let s = server();
    let (status, added) = json_call(
        &s,
        "AddOTPSMSAuthenticator",
        json!({"id": "alice", "phone": {"number": "+41791234567", "returnCode": {}}}),
    )
    .await;
    assert_eq!(status, 200, "{added}");
    let id = added["otpSmsId"].as_str().unwrap().to_owned();
    let code = added["verificationCode"].as_str().unwrap().to_owned();
    let (status, body) = json_call(
        &s,
        "VerifyOTPSMSRegistration",
        json!({"id": "alice", "otpSmsId": id, "code": code}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let sign_in = |method: &'static str, body: Value| {
        let s = &s;
        async move {
            let response = reqwest::Client::new()
                .post(s.url(&format!("/otpsms.v1.OTPSMSSignIn/{method}")))
                .header("content-type", "application/json")
                .header("connect-protocol-version", "1")
                .header(ALICE.0, ALICE.1)
                .body(body.to_string())
                .send()
                .await
                .expect("the call");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("JSON"))
        }
    };
    let (status, challenged) = sign_in(
        "RequestOTPSMSChallenge",
        json!({"id": "alice", "binding": "session-1", "otpSms": {"returnCode": true}}),
    )
    .await;
    assert_eq!(status, 200, "{challenged}");
    assert_eq!(challenged["otpSmsId"], json!(id));
    let code = challenged["challenges"]["otpSms"]
        .as_str()
        .unwrap()
        .to_owned();
    let check = json!({"id": "alice", "binding": "session-1", "otpSms": {"code": code}});
    let (status, checked) = sign_in("CheckOTPSMSChallenge", check.clone()).await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["otpSmsId"], json!(id));
    let (status, replay) = sign_in("CheckOTPSMSChallenge", check).await;
    assert_eq!(status, 400, "{replay}");
    assert_eq!(replay["code"], json!("failed_precondition"));
}

/// A body in an encoding the server does not take is `unimplemented` (HTTP 501), and the
/// answer's `Accept-Encoding` names those it does, as the Connect protocol asks, so that a
/// client can send again in one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_encoding_is_refused_naming_the_accepted_ones() {
    let s = server();
    let response = reqwest::Client::new()
        .post(s.url(&format!("/{SERVICE}/AddOTPSMSAuthenticator")))
        .header("content-type", "application/json")
        .header("content-encoding", "br")
        .header("connect-protocol-version", "1")
        .header(ALICE.0, ALICE.1)
        .body("not brotli")
        .send()
        .await
        .expect("the call");
    assert_eq!(response.status().as_u16(), 501);
    let accepted = response
        .headers()
        .get("accept-encoding")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        accepted.contains("gzip") && accepted.contains("identity"),
        "{accepted:?}"
    );
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["code"], "unimplemented");
}
