//! Hostile inputs, as property tests: arbitrary requests on every protocol the server speaks
//! (the JSON API, Connect, gRPC-web and gRPC, and the SMS providers' delivery reports) never
//! panic and never answer a server error; a refusal answers in the protocol's own error
//! format, with the status the contract gives its code; and a refused call writes nothing but
//! what a refusal records by design (a wrong code's failed check, the lock it may close, a
//! budget refusal's audit event, and nothing at all for an unsigned delivery report).
//!
//! The requests are built from pieces a caller controls: method, path segments (real user and
//! registration ids among random and percent-encoded ones), query, headers (idempotency keys
//! among them, a few reused across calls), and a body of random bytes, random JSON over the
//! contract's field names, or a well-formed message of the call's type with random content. The service's state carries over from case to case, so
//! later cases meet registrations that earlier ones added, verified or removed.
//!
//! 256 cases per protocol by default (`PROPTEST_CASES` sets more).

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode, Version};
use axum::Router;
use otp_sms_core::{
    AbusePolicy, AddRequest, Caller, CodeKey, CodeKeyRing, CommandService, Event, InstanceId,
    KeyId, PhoneVerification, PrincipalId,
};
use otp_sms_fuzz::answer::{call, connect_status, grpc_field, json_status, Answer};
use otp_sms_fuzz::fixture::{routes, TWILIO_TOKEN, TWILIO_URL, VONAGE_KEY, VONAGE_SECRET};
use otp_sms_fuzz::request::escape;
use otp_sms_memory::MemoryStore;
use otp_sms_providers::{twilio, vonage};
use otp_sms_testkit::doubles::{StaticAuthorizer, StaticTokens, StaticUsers};
use proptest::prelude::*;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use serde_json::Value;
use tokio::runtime::Runtime;

/// The event types a refused call may write: a wrong code's failed check and the lock it may
/// close, and a budget refusal's audit record.
const WRITTEN_BY_REFUSALS: [&str; 3] = [
    Event::CHECK_FAILED,
    Event::VERIFICATION_LOCKED,
    Event::SEND_REFUSED,
];

struct Fixture {
    runtime: Runtime,
    app: Router,
    store: Arc<MemoryStore<Event>>,
    /// A registration of alice's, added before the first case.
    registration: String,
    /// A registration of admin's whose first code was sent.
    sent: String,
    pool: DescriptorPool,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(MemoryStore::<Event>::new());
        let users = Arc::new(
            StaticUsers::new()
                .with_user("inst-1", "alice", "org-1")
                .with_user("inst-1", "admin", "org-1"),
        );
        let authz =
            Arc::new(StaticAuthorizer::new().grant("inst-1", "admin", "org-1", "user.write"));
        let keys = CodeKeyRing::new(CodeKey::new(KeyId::new("k"), &[7; 32]));
        let service = CommandService::new(store.clone(), users, authz, keys)
            .with_abuse_policy(AbusePolicy {
                allow_self_return_code: true,
                ..Default::default()
            })
            .unwrap();
        let tokens = Arc::new(
            StaticTokens::new()
                .with_token("alice-token", "inst-1", "alice")
                .with_token("admin-token", "inst-1", "admin"),
        );
        let registration = runtime.block_on(async {
            let caller = Caller::new(
                InstanceId::parse("instance", "inst-1").unwrap(),
                PrincipalId::parse("principal", "alice").unwrap(),
            );
            service
                .add(
                    &caller,
                    AddRequest {
                        user_id: "alice".into(),
                        organization: None,
                        phone: "+41791234567".into(),
                        verification: PhoneVerification::ReturnCode,
                    },
                )
                .await
                .unwrap()
                .registration_id
                .to_string()
        });
        // An admin's registration whose code was handed to a sender, so that a delivery
        // report can name a code that was sent.
        let sent = runtime.block_on(async {
            let caller = Caller::new(
                InstanceId::parse("instance", "inst-1").unwrap(),
                PrincipalId::parse("principal", "admin").unwrap(),
            );
            let added = service
                .add(
                    &caller,
                    AddRequest {
                        user_id: "admin".into(),
                        organization: None,
                        phone: "+41791234568".into(),
                        verification: PhoneVerification::SendCode,
                    },
                )
                .await
                .unwrap();
            let sender = otp_sms_testkit::doubles::RecordingSender::new();
            let passed = service
                .deliver_pending(&sender, 10, std::time::Duration::from_secs(30))
                .await
                .unwrap();
            assert_eq!(sender.sent().len(), 1, "{passed:?}");
            added.registration_id.to_string()
        });
        let app = routes(service, tokens);
        let pool = DescriptorPool::decode(otp_sms_grpc::FILE_DESCRIPTOR_SET).unwrap();
        Fixture {
            runtime,
            app,
            store,
            registration,
            sent,
            pool,
        }
    })
}

/// A path segment: a real id, a plain or odd one, or any text, escaped.
fn segment() -> impl Strategy<Value = String> {
    let real = fixture().registration.clone();
    let sent = fixture().sent.clone();
    prop_oneof![
        3 => Just("alice".to_owned()),
        1 => Just("admin".to_owned()),
        3 => Just(real),
        2 => Just(sent),
        1 => "[a-z0-9-]{0,12}",
        1 => Just("%zz".to_owned()),
        1 => Just("%00".to_owned()),
        1 => Just("x".repeat(201)),
        1 => any::<String>().prop_map(|s| escape(&s)),
    ]
}

/// A JSON value over the contract's field names (and others), nested a few levels.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            Just("+41791234567".to_owned()),
            Just("+19005550123".to_owned()),
            "[0-9]{6,8}",
            any::<String>(),
        ]
        .prop_map(Value::from),
    ];
    let key = prop_oneof![
        Just("phone"),
        Just("number"),
        Just("isVerified"),
        Just("is_verified"),
        Just("sendCode"),
        Just("returnCode"),
        Just("code"),
        Just("instance"),
        Just("organization"),
        Just("orgId"),
        Just("domain"),
        Just("id"),
        Just("otpSmsId"),
        Just("urlTemplate"),
        Just("@type"),
    ]
    .prop_map(str::to_owned)
    .boxed()
    .prop_union(any::<String>().boxed());
    leaf.prop_recursive(4, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body: nothing, random bytes, random JSON, or more than any call reads.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..200),
        json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        json().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        Just(vec![b'{'; 70 * 1024]),
    ]
}

/// A body of the call's own shape with values a caller chooses: a number (real, premium,
/// malformed), a delivery or two, a code; so that cases reach the calls themselves.
fn well_formed() -> impl Strategy<Value = Vec<u8>> {
    let number = prop_oneof![
        Just("+41791234567".to_owned()),
        "\\+4179[0-9]{7}",
        Just("+19005550123".to_owned()),
        Just("+41441234567".to_owned()),
        "[+0-9 ()-]{0,20}",
    ];
    let delivery = prop_oneof![
        Just(serde_json::json!({})),
        Just(serde_json::json!({"sendCode": {}})),
        Just(serde_json::json!({"returnCode": {}})),
        Just(serde_json::json!({"isVerified": true})),
        Just(serde_json::json!({"isVerified": false})),
        Just(serde_json::json!({"sendCode": {}, "returnCode": {}})),
    ];
    let code = prop_oneof!["[0-9]{6,8}", any::<String>()];
    prop_oneof![
        (number, delivery.clone()).prop_map(|(number, delivery)| {
            let mut body = delivery;
            body["number"] = Value::from(number);
            serde_json::to_vec(&body).unwrap()
        }),
        code.prop_map(|code| serde_json::to_vec(&serde_json::json!({ "code": code })).unwrap()),
        delivery.prop_map(|d| serde_json::to_vec(&d).unwrap()),
    ]
}

/// `Idempotency-Key` values: none, a few reused across calls (so that a key meets another
/// request, or its own again), any visible text, or text that is not.
fn idempotency_keys() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        3 => Just(Vec::new()),
        2 => prop::sample::select(vec!["k1", "k2", "\"k3\""]).prop_map(|k| vec![k.to_owned()]),
        1 => "[ -~]{0,300}".prop_map(|k| vec![k]),
        1 => any::<String>().prop_map(|k| vec![k]),
        1 => ("[a-z]{1,4}", "[a-z]{1,4}").prop_map(|(a, b)| vec![a, b]),
    ]
}

fn token() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(Some("alice-token".to_owned())),
        2 => Just(Some("admin-token".to_owned())),
        1 => Just(None),
        1 => "[ -~]{0,40}".prop_map(Some),
    ]
}

fn send(request: Request<Body>) -> Answer {
    // The properties run on threads of their own but share the fixture: one call at a time,
    // so that the events read after a call are its own.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let f = fixture();
    f.runtime.block_on(call(&f.app, &f.store, request))
}

/// A refusal wrote nothing but what refusals write by design.
fn refusal_wrote_only_its_record(answer: &Answer, what: &str) -> Result<(), TestCaseError> {
    for event in &answer.written {
        prop_assert!(
            WRITTEN_BY_REFUSALS.contains(&event.as_str()),
            "{what} was refused and wrote {event}"
        );
    }
    Ok(())
}

proptest! {
    /// The JSON API: any method, path, query, content type, token and body.
    #[test]
    fn the_json_api_answers_any_request_with_a_status_of_its_code(
        method in prop_oneof![
            4 => Just(None),
            1 => prop_oneof![Just("GET"), Just("POST"), Just("DELETE"), Just("PUT"), Just("PATCH")]
                .prop_map(Some),
        ],
        shape in 0usize..5,
        user in segment(),
        registration in segment(),
        query in prop_oneof![3 => Just(Vec::new()), 1 => prop::collection::vec(
            (prop_oneof![
                Just("instance.id".to_owned()),
                Just("instance.domain".to_owned()),
                Just("organization.id".to_owned()),
                Just("organization.domain".to_owned()),
                "[a-z.]{1,12}",
            ], any::<String>()),
            1..3,
        )],
        content_type in prop_oneof![
            Just("application/json"),
            Just("text/plain"),
            Just("application/x-www-form-urlencoded"),
            Just(""),
        ],
        token in token(),
        keys in idempotency_keys(),
        body in prop_oneof![1 => body(), 2 => well_formed()],
    ) {
        let base = format!("/resources/v3alpha/users/{user}/otp_sms");
        let path = match shape {
            0 => base,
            1 => format!("{base}/{registration}"),
            2 => format!("{base}/{registration}/_verify"),
            3 => format!("{base}/{registration}/_resend_code"),
            _ => format!("{base}/_unlock"),
        };
        let query: Vec<String> =
            query.iter().map(|(k, v)| format!("{k}={}", escape(v))).collect();
        let uri = if query.is_empty() { path } else { format!("{path}?{}", query.join("&")) };
        // The route's own method, mostly.
        let method = method.unwrap_or(if shape == 1 { "DELETE" } else { "POST" });
        let mut request = Request::builder().method(method).uri(&uri);
        if !content_type.is_empty() {
            request = request.header("content-type", content_type);
        }
        if let Some(token) = &token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for key in &keys {
            request = request.header("idempotency-key", key);
        }
        let Ok(request) = request.body(Body::from(body)) else {
            // Not a request a client could send (a header value the HTTP crate refuses).
            return Ok(());
        };
        let answer = send(request);
        let what = format!("{method} {uri}");
        prop_assert!(!answer.status.is_server_error(), "{what}: {}", answer.status);
        if answer.status.is_success() {
            return Ok(());
        }
        let status: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| TestCaseError::fail(format!("{what}: not a google.rpc.Status: {e}")))?;
        let code = status["code"].as_i64().unwrap_or_default();
        prop_assert!(status["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {status}");
        let expected = json_status(code)
            .ok_or_else(|| TestCaseError::fail(format!("{what}: code {code}: {status}")))?;
        prop_assert_eq!(answer.status.as_u16(), expected, "{}: {}", what, status);
        refusal_wrote_only_its_record(&answer, &what)?;
    }

    /// Connect: any of the services' methods (or another), content type, protocol headers and
    /// body, JSON or binary.
    #[test]
    fn connect_answers_any_request_with_its_error_json(
        method in method(),
        content_type in prop_oneof![
            Just("application/json"),
            Just("application/proto"),
            Just("application/connect+json"),
            Just("text/plain"),
        ],
        version in prop_oneof![Just(Some("1".to_owned())), Just(None), "[ -~]{0,4}".prop_map(Some)],
        timeout in prop_oneof![Just(None), "[0-9]{1,12}".prop_map(Some), "[ -~]{0,6}".prop_map(Some)],
        encoding in prop_oneof![Just(None), Just(Some("gzip")), Just(Some("identity")), Just(Some("br"))],
        token in token(),
        keys in idempotency_keys(),
        body in message_or_bytes(),
    ) {
        let (service, name, input) = method;
        let path = format!("/{service}/{name}");
        let body = match (&input, content_type) {
            (Some(message), "application/json") => body.json(message),
            (Some(message), "application/proto") => body.proto(message),
            _ => body.raw(),
        };
        let mut request = Request::builder()
            .method("POST")
            .uri(&path)
            .header("content-type", content_type);
        for (name, value) in [
            ("connect-protocol-version", version.as_deref()),
            ("connect-timeout-ms", timeout.as_deref()),
            ("content-encoding", encoding),
        ] {
            if let Some(value) = value {
                request = request.header(name, value);
            }
        }
        if let Some(token) = &token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for key in &keys {
            request = request.header("idempotency-key", key);
        }
        let Ok(request) = request.body(Body::from(body)) else { return Ok(()) };
        let answer = send(request);
        let what = format!("Connect {path} ({content_type})");
        // 501 is Connect's status for `unimplemented` (an unknown method); no other 5xx.
        prop_assert!(
            !answer.status.is_server_error() || answer.status == StatusCode::NOT_IMPLEMENTED,
            "{what}: {}", answer.status
        );
        if answer.status.is_success() {
            return Ok(());
        }
        // 415 for a content type Connect does not speak is the protocol's own, bodiless answer.
        if answer.status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            prop_assert!(answer.written.is_empty(), "{what}: wrote {:?}", answer.written);
            return Ok(());
        }
        let error: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| TestCaseError::fail(format!("{what}: not Connect's error JSON: {e}")))?;
        let code = error["code"].as_str().unwrap_or_default();
        let expected = connect_status(code)
            .ok_or_else(|| TestCaseError::fail(format!("{what}: code {code:?}: {error}")))?;
        prop_assert_eq!(answer.status.as_u16(), expected, "{}: {}", what, error);
        refusal_wrote_only_its_record(&answer, &what)?;
    }

    /// gRPC and gRPC-web: any method, framing, compression flag, deadline and message.
    #[test]
    fn grpc_answers_any_request_with_a_grpc_status(
        method in method(),
        web in any::<bool>(),
        framing in 0usize..4,
        timeout in prop_oneof![Just(None), "[0-9]{1,8}[HMSmun]".prop_map(Some), "[ -~]{0,6}".prop_map(Some)],
        token in token(),
        keys in idempotency_keys(),
        body in message_or_bytes(),
    ) {
        let (service, name, input) = method;
        let path = format!("/{service}/{name}");
        let message = match &input {
            Some(message) => body.proto(message),
            None => body.raw(),
        };
        let framed = match framing {
            // One well-framed, uncompressed message.
            0 | 1 => frame(0, &message, message.len()),
            // Said to be compressed (no encoding was agreed on, or the bytes are not gzip).
            2 => frame(1, &message, message.len()),
            // A length that does not match the bytes that follow.
            _ => frame(0, &message, message.len().wrapping_mul(7) + 3),
        };
        let content_type = if web { "application/grpc-web+proto" } else { "application/grpc" };
        // gRPC is HTTP/2 only (tonic-web answers gRPC over HTTP/1.1 with 400); gRPC-web is
        // what HTTP/1.1 clients speak.
        let version = if web { Version::HTTP_11 } else { Version::HTTP_2 };
        let mut request = Request::builder()
            .method("POST")
            .version(version)
            .uri(&path)
            .header("content-type", content_type)
            .header("te", "trailers");
        if let Some(timeout) = &timeout {
            request = request.header("grpc-timeout", timeout);
        }
        if framing == 2 && !web {
            request = request.header("grpc-encoding", "gzip");
        }
        if let Some(token) = &token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for key in &keys {
            request = request.header("idempotency-key", key);
        }
        let Ok(request) = request.body(Body::from(framed)) else { return Ok(()) };
        let answer = send(request);
        let what = format!("{content_type} {path}");
        prop_assert_eq!(answer.status, StatusCode::OK, "{}", what);
        let code = grpc_status(&answer)
            .ok_or_else(|| TestCaseError::fail(format!("{what}: no grpc-status")))?;
        // A well-framed message, whatever its bytes, is the caller's error when it is wrong,
        // never a server fault. A broken frame (a compressed flag with no encoding agreed on,
        // bytes that are not what the encoding says, a length the body does not hold) is
        // INTERNAL because the gRPC specification says so, and only then.
        let faults: &[i32] = if framing <= 1 { &[2, 13, 15] } else { &[2, 15] };
        prop_assert!(
            !faults.contains(&code),
            "{what} (framing {framing}): grpc-status {code} ({:?})",
            grpc_message(&answer)
        );
        if code != 0 {
            refusal_wrote_only_its_record(&answer, &what)?;
        }
    }
}

proptest! {
    /// The providers' delivery reports: any parameters, signed or not (signed with the right
    /// secret, and then mostly with the right account, time and reference), as a query, a form
    /// or JSON, on any path. Unsigned reports are refused and write nothing; a signed one
    /// writes at most the report's own event.
    #[test]
    fn delivery_reports_answer_any_request_and_write_only_signed_reports(
        vonage in any::<bool>(),
        signed in any::<bool>(),
        genuine in any::<bool>(),
        encoding in 0usize..4,
        path in (segment(), segment(), prop_oneof![Just("1".to_owned()), Just("2".to_owned()), "[0-9a-z]{0,11}"]),
        params in prop::collection::vec(
            (
                prop_oneof![
                    Just("MessageStatus"), Just("ErrorCode"), Just("status"), Just("err-code"),
                    Just("msisdn"), Just("nonce"), Just("api-key"), Just("timestamp"),
                    Just("client-ref"), Just("sig"),
                ].prop_map(str::to_owned).boxed().prop_union("[ -~]{0,8}".boxed()),
                prop_oneof![
                    Just("delivered"), Just("failed"), Just("undelivered"), Just("expired"),
                    Just("rejected"), Just("accepted"), Just(""), Just("30003"),
                ].prop_map(str::to_owned).boxed().prop_union(any::<String>().boxed()),
            ),
            0..8,
        ),
        garbage in prop::collection::vec(any::<u8>(), 0..64),
        status in prop::sample::select(vec!["delivered", "failed", "undelivered", "expired", "rejected", "accepted"]),
    ) {
        let (instance, registration, n) = path;
        let mut params = params;
        if genuine {
            // A report of the provider's own shape (any status).
            let (key, code) = if vonage { ("status", "err-code") } else { ("MessageStatus", "ErrorCode") };
            params.retain(|(k, _)| k != key && k != code);
            params.push((key.into(), status.into()));
            params.push((code.into(), "30003".into()));
        }
        let (uri, body, content_type, method) = if vonage {
            if signed && genuine {
                let number = n.parse::<u32>().unwrap_or(1);
                params.retain(|(k, _)| !matches!(k.as_str(), "api-key" | "timestamp" | "client-ref" | "sig"));
                params.push(("api-key".into(), VONAGE_KEY.into()));
                params.push(("timestamp".into(), chrono::Utc::now().timestamp().to_string()));
                params.push(("client-ref".into(), vonage::client_ref(&instance, &registration, number)));
            }
            if signed {
                params.retain(|(k, _)| k != "sig");
                let sig = vonage::signature(vonage::SignatureMethod::Sha256, VONAGE_SECRET, &params);
                params.push(("sig".into(), sig));
            }
            let form = serde_urlencoded::to_string(&params).unwrap();
            let path = format!("/sms/status/vonage/{instance}/{registration}/{n}");
            match encoding {
                0 => (format!("{path}?{form}"), Vec::new(), None, "GET"),
                1 => (path, form.into_bytes(), Some("application/x-www-form-urlencoded"), "POST"),
                2 => {
                    let object: serde_json::Map<String, Value> =
                        params.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
                    (path, serde_json::to_vec(&object).unwrap(), Some("application/json"), "POST")
                }
                _ => (path, garbage, Some("application/json"), "POST"),
            }
        } else {
            let query = serde_urlencoded::to_string([
                ("instance", if genuine { "inst-1" } else { &instance }),
                ("otp_sms_id", &registration),
                ("n", &n),
            ])
            .unwrap();
            let body = if encoding == 3 {
                garbage
            } else {
                serde_urlencoded::to_string(&params).unwrap().into_bytes()
            };
            (
                format!("/sms/status/twilio?{query}"),
                body,
                Some("application/x-www-form-urlencoded"),
                "POST",
            )
        };
        let mut request = Request::builder().method(method).uri(&uri);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if !vonage && signed {
            let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
            let query = uri.split_once('?').map_or("", |(_, q)| q);
            let url = format!("{TWILIO_URL}?{query}");
            request = request.header("x-twilio-signature", twilio::signature(TWILIO_TOKEN, &url, &form));
        }
        let Ok(request) = request.body(Body::from(body)) else { return Ok(()) };
        let answer = send(request);
        let what = format!("{method} {uri}");
        prop_assert!(!answer.status.is_server_error(), "{what}: {}", answer.status);
        if !signed {
            prop_assert!(answer.status.is_client_error(), "{what}: unsigned, {}", answer.status);
        }
        if !answer.status.is_success() {
            prop_assert!(answer.written.is_empty(), "{what}: refused, wrote {:?}", answer.written);
        }
        for event in &answer.written {
            prop_assert!(
                [Event::CODE_DELIVERED, Event::DELIVERY_FAILED].contains(&event.as_str()),
                "{what}: a report wrote {event}"
            );
        }
    }
}

/// A method of the three services (with its input type), or a name none has.
fn method() -> impl Strategy<Value = (String, String, Option<MessageDescriptor>)> {
    let pool = &fixture().pool;
    let mut known: Vec<(String, String, Option<MessageDescriptor>)> = Vec::new();
    for service in [
        otp_sms_grpc::SERVICE_NAME,
        otp_sms_grpc::EXTENSIONS_SERVICE_NAME,
        otp_sms_grpc::SIGN_IN_SERVICE_NAME,
    ] {
        let descriptor = pool.get_service_by_name(service).unwrap();
        for m in descriptor.methods() {
            known.push((service.to_owned(), m.name().to_owned(), Some(m.input())));
        }
    }
    prop_oneof![
        4 => prop::sample::select(known),
        1 => "[A-Za-z]{1,20}".prop_map(|name| (otp_sms_grpc::SERVICE_NAME.to_owned(), name, None)),
    ]
}

/// A body: random bytes, or random JSON that, where it fits the call's message, is sent as
/// that message (in the encoding the call uses).
#[derive(Debug, Clone)]
struct Candidate {
    bytes: Vec<u8>,
    json: Value,
}

impl Candidate {
    fn raw(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    fn message(&self, input: &MessageDescriptor) -> Option<DynamicMessage> {
        DynamicMessage::deserialize(input.clone(), self.json.clone()).ok()
    }

    fn json(&self, input: &MessageDescriptor) -> Vec<u8> {
        match self.message(input) {
            Some(message) => serde_json::to_vec(&message).unwrap(),
            None => serde_json::to_vec(&self.json).unwrap(),
        }
    }

    fn proto(&self, input: &MessageDescriptor) -> Vec<u8> {
        match self.message(input) {
            Some(message) => prost::Message::encode_to_vec(&message),
            None => self.bytes.clone(),
        }
    }
}

fn message_or_bytes() -> impl Strategy<Value = Candidate> {
    (body(), json()).prop_map(|(bytes, json)| Candidate { bytes, json })
}

/// A gRPC length-prefixed message: the compressed flag, a big-endian length, the bytes.
fn frame(flag: u8, message: &[u8], said: usize) -> Vec<u8> {
    let mut framed = vec![flag];
    framed.extend_from_slice(&u32::try_from(said).unwrap_or(u32::MAX).to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// The call's grpc-status: from the headers (trailers-only), the trailers (gRPC) or the
/// trailer frame at the end of the body (gRPC-web).
fn grpc_status(answer: &Answer) -> Option<i32> {
    grpc_field(answer, "grpc-status")?.parse().ok()
}

fn grpc_message(answer: &Answer) -> Option<String> {
    grpc_field(answer, "grpc-message")
}
