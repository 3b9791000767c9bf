//! The router on the in-memory store: bodies, query parameters, authentication and the
//! google.rpc.Status answers, the router's own errors included; and the embeddable router
//! mounted in a host's router.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use otp_sms_core::{CodeKey, CodeKeyRing, CommandService, Event, KeyId};
use otp_sms_memory::MemoryStore;
use otp_sms_testkit::doubles::{StaticAuthorizer, StaticTokens, StaticUsers};
use serde_json::{json, Value};
use tower::ServiceExt;

fn app() -> Router {
    let (service, tokens) = service();
    otp_sms_http::standalone_router(service, tokens)
}

/// The command service the tests call, and the tokens they hold.
fn service() -> (CommandService, Arc<StaticTokens>) {
    let users = Arc::new(
        StaticUsers::new()
            .with_user("inst-1", "alice", "org-1")
            .with_user("inst-1", "bob", "org-1")
            .with_user("inst-1", "admin", "org-1")
            .with_domain("inst-1", "org-1.example.com", "org-1"),
    );
    let authz = Arc::new(StaticAuthorizer::new().grant("inst-1", "admin", "org-1", "user.write"));
    let keys = CodeKeyRing::new(CodeKey::new(KeyId::new("k"), &[7; 32]));
    // These tests are about the HTTP mapping; they let alice ask for her own code in the
    // response (an instance setting, off by default).
    let policy = otp_sms_core::AbusePolicy {
        allow_self_return_code: true,
        ..Default::default()
    };
    let service = CommandService::new(Arc::new(MemoryStore::<Event>::new()), users, authz, keys)
        .with_abuse_policy(policy)
        .unwrap();
    let tokens = Arc::new(
        StaticTokens::new()
            .with_token("alice-token", "inst-1", "alice")
            .with_token("admin-token", "inst-1", "admin")
            .with_token("other-instance", "inst-2", "alice")
            .with_instance_domain("inst-1.example.com", "inst-1"),
    );
    (service, tokens)
}

async fn call(app: &Router, method: &str, uri: &str, body: Option<&str>) -> (StatusCode, Value) {
    call_with(
        app,
        method,
        uri,
        body,
        "application/json",
        Some("alice-token"),
    )
    .await
}

async fn call_with(
    app: &Router,
    method: &str,
    uri: &str,
    body: Option<&str>,
    content_type: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        req = req.header("content-type", content_type);
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

const ADD: &str = "/resources/v3alpha/users/alice/otp_sms";

async fn add_returning(app: &Router) -> (String, String) {
    let (status, body) = call(
        app,
        "POST",
        ADD,
        Some(r#"{"number":"+41791234567","returnCode":{}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["otpSmsId"].as_str().unwrap().to_owned(),
        body["verificationCode"].as_str().unwrap().to_owned(),
    )
}

fn verify_uri(id: &str) -> String {
    format!("/resources/v3alpha/users/alice/otp_sms/{id}/_verify")
}

fn assert_status(body: &Value, code: i64) {
    assert_eq!(body["code"], json!(code), "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(body["details"].is_array(), "{body}");
    let keys: Vec<_> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["code", "details", "message"]);
    // The error's stable id comes first, as in ZITADEL's errors.
    let detail = &body["details"][0];
    assert_eq!(
        detail["@type"], "type.googleapis.com/zitadel.v1.ErrorDetail",
        "{body}"
    );
    assert!(
        detail["id"].as_str().unwrap().starts_with("OTPSMS-"),
        "{body}"
    );
    assert_eq!(detail["message"], body["message"], "{body}");
}

#[tokio::test]
async fn add_then_verify_with_the_contracts_bodies() {
    let app = app();
    let (id, code) = add_returning(&app).await;
    let (status, body) = call(&app, "POST", &verify_uri(&id), Some(&format!("\"{code}\""))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let details = &body["details"];
    assert_eq!(body.as_object().unwrap().len(), 1);
    assert_eq!(details["id"], json!(id));
    assert_eq!(
        details["owner"],
        json!({"type": "OWNER_TYPE_ORG", "id": "org-1"})
    );
    for t in ["created", "changed"] {
        let text = details[t].as_str().unwrap();
        assert!(text.ends_with('Z'), "{text}");
        chrono::DateTime::parse_from_rfc3339(text).unwrap();
    }
}

#[tokio::test]
async fn the_code_object_form_and_both_spellings_are_accepted() {
    let app = app();
    let (status, body) = call(
        &app,
        "POST",
        ADD,
        Some(r#"{"number":"+41791234567","return_code":{}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["otpSmsId"].as_str().unwrap();
    let code = body["verificationCode"].as_str().unwrap();
    let (status, _) = call(
        &app,
        "POST",
        &format!(
            "{}?organization.orgId=org-1&instance.id=inst-1",
            verify_uri(id)
        ),
        Some(&json!({"code": code}).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Only a holder of user.write may vouch for a number, the user included.
    let is_verified = r#"{"number":"+41791234567","is_verified":true}"#;
    let (status, body) = call(&app, "POST", ADD, Some(is_verified)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], 7);
    let (status, body) = call_with(
        &app,
        "POST",
        ADD,
        Some(is_verified),
        "application/json",
        Some("admin-token"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("verificationCode").is_none(), "{body}");
}

#[tokio::test]
async fn send_code_is_the_default_and_returns_no_code() {
    let app = app();
    let (status, body) = call(&app, "POST", ADD, Some(r#"{"number":"+41791234567"}"#)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("verificationCode").is_none());
}

/// Method, URI, body, content type, token, expected HTTP status, expected google.rpc code.
type Case<'a> = (
    &'a str,
    String,
    Option<&'a str>,
    &'a str,
    Option<&'a str>,
    StatusCode,
    i64,
);

#[tokio::test]
async fn router_errors_are_google_rpc_status() {
    let app = app();
    let cases: Vec<Case> = vec![
        (
            "POST",
            ADD.into(),
            Some("{not json"),
            "application/json",
            Some("alice-token"),
            StatusCode::BAD_REQUEST,
            3,
        ),
        (
            "POST",
            ADD.into(),
            Some(r#"{"number":"+41791234567","sendCode":{},"returnCode":{}}"#),
            "application/json",
            Some("alice-token"),
            StatusCode::BAD_REQUEST,
            3,
        ),
        (
            "POST",
            ADD.into(),
            Some(r#"{"number":"+41791234567","isVerified":false}"#),
            "application/json",
            Some("alice-token"),
            StatusCode::BAD_REQUEST,
            3,
        ),
        (
            "POST",
            ADD.into(),
            Some(r#"{"number":"+41791234567"}"#),
            "application/json",
            None,
            StatusCode::UNAUTHORIZED,
            16,
        ),
        (
            "POST",
            ADD.into(),
            Some(r#"{"number":"+41791234567"}"#),
            "application/json",
            Some("wrong"),
            StatusCode::UNAUTHORIZED,
            16,
        ),
        (
            "POST",
            "/resources/v3alpha/users/carol/otp_sms".into(),
            Some(r#"{"number":"+41791234567"}"#),
            "application/json",
            Some("alice-token"),
            StatusCode::NOT_FOUND,
            5,
        ),
        (
            "POST",
            "/resources/v3alpha/users/bob/otp_sms".into(),
            Some(r#"{"number":"+41791234567"}"#),
            "application/json",
            Some("alice-token"),
            StatusCode::FORBIDDEN,
            7,
        ),
        (
            "POST",
            format!("{ADD}?instance.id=inst-2"),
            Some(r#"{"number":"+41791234567"}"#),
            "application/json",
            Some("alice-token"),
            StatusCode::NOT_FOUND,
            5,
        ),
        (
            "POST",
            format!("{ADD}?instance.domain=unknown.example.com"),
            Some(r#"{"number":"+41791234567"}"#),
            "application/json",
            Some("alice-token"),
            StatusCode::NOT_FOUND,
            5,
        ),
        (
            "POST",
            format!("{ADD}?instance.id=inst-1&instance.domain=inst-1.example.com"),
            Some(r#"{"number":"+41791234567"}"#),
            "application/json",
            Some("alice-token"),
            StatusCode::BAD_REQUEST,
            3,
        ),
        (
            "POST",
            format!("{ADD}?organization.org_id=org-2"),
            Some(r#"{"number":"+41791234567"}"#),
            "application/json",
            Some("alice-token"),
            StatusCode::NOT_FOUND,
            5,
        ),
        (
            "GET",
            "/nowhere".into(),
            None,
            "application/json",
            Some("alice-token"),
            StatusCode::NOT_FOUND,
            5,
        ),
        (
            "POST",
            verify_uri("x"),
            Some("12345678"),
            "application/json",
            Some("alice-token"),
            StatusCode::BAD_REQUEST,
            3,
        ),
        (
            "POST",
            verify_uri("x"),
            Some("null"),
            "application/json",
            Some("alice-token"),
            StatusCode::BAD_REQUEST,
            3,
        ),
        (
            "POST",
            verify_uri("x"),
            Some(r#""""#),
            "application/json",
            Some("alice-token"),
            StatusCode::BAD_REQUEST,
            3,
        ),
        (
            "POST",
            verify_uri("x"),
            Some(r#""12345678""#),
            "application/json",
            Some("alice-token"),
            StatusCode::NOT_FOUND,
            5,
        ),
    ];
    for (method, uri, body, content_type, token, status, code) in cases {
        let (got, value) = call_with(&app, method, &uri, body, content_type, token).await;
        assert_eq!(got, status, "{method} {uri} {body:?}: {value}");
        assert_status(&value, code);
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let app = app();
    let big = format!("\"{}\"", "1".repeat(otp_sms_http::MAX_BODY_BYTES));
    let (status, body) = call(&app, "POST", &verify_uri("x"), Some(&big)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_status(&body, 3);
    assert_eq!(
        body["details"][1]["fieldViolations"][0]["field"],
        json!("body")
    );
}

#[tokio::test]
async fn errors_never_echo_the_code() {
    let app = app();
    let (id, code) = add_returning(&app).await;
    let wrong: String = code
        .chars()
        .map(|c| if c == '1' { '2' } else { '1' })
        .collect();
    for body in [
        format!("\"{wrong}\""),
        wrong.clone(),
        format!(r#"{{"code": {wrong}}}"#),
    ] {
        let (_, value) = call(&app, "POST", &verify_uri(&id), Some(&body)).await;
        assert!(!value.to_string().contains(&wrong), "{value}");
        assert!(!value.to_string().contains(&code), "{value}");
    }
}

#[tokio::test]
async fn resend_is_rate_limited_with_retry_after() {
    let app = app();
    let (id, _) = add_returning(&app).await;
    let uri = format!("/resources/v3alpha/users/alice/otp_sms/{id}/_resend_code");
    let req = Request::builder()
        .method("POST")
        .uri(&uri)
        .header("authorization", "Bearer alice-token")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"returnCode":{}}"#))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_status(&body, 8);
    assert_eq!(
        body["details"][1]["@type"],
        json!("type.googleapis.com/google.rpc.RetryInfo")
    );
}

#[tokio::test]
async fn the_openapi_document_lists_the_served_calls() {
    let app = app();
    let (status, doc) = call(&app, "GET", "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(
        doc["paths"]["/resources/v3alpha/users/{id}/otp_sms"]["post"]["operationId"],
        json!("ZITADELUsers_AddOTPSMSAuthenticator")
    );
    assert_eq!(
        doc["paths"]["/resources/v3alpha/users/{id}/otp_sms/{otpSmsId}/_verify"]["post"]
            ["operationId"],
        json!("ZITADELUsers_VerifyOTPSMSRegistration")
    );
    assert_eq!(
        doc["paths"]["/resources/v3alpha/users/{id}/otp_sms/{otpSmsId}"]["delete"]["operationId"],
        json!("ZITADELUsers_RemoveOTPSMSAuthenticator")
    );
    for (path, operation) in [
        (
            "/resources/v3alpha/users/{id}/otp_sms/_challenge",
            "OTPSMSSignIn_RequestOTPSMSChallenge",
        ),
        (
            "/resources/v3alpha/users/{id}/otp_sms/_check",
            "OTPSMSSignIn_CheckOTPSMSChallenge",
        ),
    ] {
        assert_eq!(doc["paths"][path]["post"]["operationId"], json!(operation));
    }
    // Every documented path is served: a call to each answers from its handler (401 without
    // a token), never the fallback's 404.
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let uri = path.replace("{id}", "alice").replace("{otpSmsId}", "x");
            let (status, _) = call_with(
                &app,
                &method.to_uppercase(),
                &uri,
                Some("{}"),
                "application/json",
                None,
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        }
    }
    assert_eq!(doc, serde_json::to_value(otp_sms_http::openapi()).unwrap());
}

/// `sendCode` and `returnCode` name the messages they are (the proto's
/// `SendPhoneVerificationCode` and `ReturnPhoneVerificationCode`), in the add body and in
/// the resend body; neither is the unlock call's answer.
#[test]
fn the_code_delivery_options_name_their_own_schemas() {
    let doc = serde_json::to_value(otp_sms_http::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    for body in ["v3alphaSetPhone", "v1ResendOTPSMSCodeRequest"] {
        let properties = &schemas[body]["properties"];
        for (field, schema) in [
            ("sendCode", "v3alphaSendPhoneVerificationCode"),
            ("returnCode", "v3alphaReturnPhoneVerificationCode"),
        ] {
            let text = properties[field].to_string();
            assert!(
                text.contains(&format!("#/components/schemas/{schema}")),
                "{body}.{field}: {text}"
            );
            assert!(!text.contains("Unlock"), "{body}.{field}: {text}");
        }
    }
    for schema in [
        "v3alphaSendPhoneVerificationCode",
        "v3alphaReturnPhoneVerificationCode",
    ] {
        assert_eq!(schemas[schema]["type"], "object", "{schema}");
    }
}

#[tokio::test]
async fn the_openapi_document_lists_the_query_parameters() {
    let doc = serde_json::to_value(otp_sms_http::openapi()).unwrap();
    let params = &doc["paths"]["/resources/v3alpha/users/{id}/otp_sms/{otpSmsId}/_verify"]["post"]
        ["parameters"];
    let names: Vec<_> = params
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["in"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (name, place) in [
        ("id", "path"),
        ("otpSmsId", "path"),
        ("instance.id", "query"),
        ("instance.domain", "query"),
        ("organization.orgId", "query"),
        ("organization.orgDomain", "query"),
    ] {
        assert!(
            names.contains(&(name.to_owned(), place.to_owned())),
            "{name} in {place}: {names:?}"
        );
    }
}

async fn add_with_keys(app: &Router, keys: &[&str]) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method("POST")
        .uri("/resources/v3alpha/users/alice/otp_sms")
        .header("authorization", "Bearer alice-token")
        .header("content-type", "application/json");
    for key in keys {
        req = req.header("Idempotency-Key", *key);
    }
    let body = r#"{"number":"+41791234567","returnCode":{}}"#;
    let res = app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// `Idempotency-Key`: a retry under the key answers the first registration and code; keys
/// that are empty, not visible ASCII, or sent twice are INVALID_ARGUMENT (400, code 3).
#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer() {
    let app = app();
    let (status, first) = add_with_keys(&app, &["\"8e03978e-40d5-43e8\""]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, again) = add_with_keys(&app, &["8e03978e-40d5-43e8"]).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["otpSmsId"], first["otpSmsId"]);
    assert_eq!(again["verificationCode"], first["verificationCode"]);
    let (_, unkeyed) = add_with_keys(&app, &[]).await;
    assert_ne!(unkeyed["otpSmsId"], first["otpSmsId"]);
    for bad in [&["\"\""][..], &["a b"], &["k1", "k2"], &["\"unterminated"]] {
        let (status, body) = add_with_keys(&app, bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad:?}: {body}");
        assert_eq!(body["code"], 3, "{bad:?}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or("")
                .contains("Idempotency-Key"),
            "{bad:?}: {body}"
        );
    }
}

// ---- embedding: the router in a host's router ----

/// A host's router with its own fallback, method-not-allowed answer and `/openapi.json`.
fn host_routes() -> Router {
    Router::new()
        .route(
            "/openapi.json",
            axum::routing::get(|| async { axum::Json(json!({"host": "document"})) }),
        )
        .fallback(|| async { (StatusCode::IM_A_TEAPOT, "the host's own 404") })
}

#[tokio::test]
async fn merging_into_a_router_with_a_fallback_and_a_document_keeps_the_hosts() {
    let (service, tokens) = service();
    // Given a host router with a fallback and /openapi.json, merging does not panic.
    let app = host_routes().merge(otp_sms_http::router(service, tokens));
    // The host's fallback and document stay the host's.
    let (status, _) = call(&app, "GET", "/no/such/page", None).await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    let (status, doc) = call(&app, "GET", "/openapi.json", None).await;
    assert_eq!((status, doc), (StatusCode::OK, json!({"host": "document"})));
    // And the calls work.
    let (id, code) = add_returning(&app).await;
    let (status, _) = call(
        &app,
        "POST",
        &format!("{ADD}/{id}/_verify"),
        Some(&json!(code).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn nested_under_a_prefix_the_document_lists_prefixed_paths() {
    let (service, tokens) = service();
    let app = host_routes()
        .nest("/auth/otp", otp_sms_http::router(service, tokens))
        .route(
            "/auth/otp/openapi.json",
            otp_sms_http::openapi_route(otp_sms_http::openapi_nested("auth/otp/")),
        );
    let (status, doc) = call(&app, "GET", "/auth/otp/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert_eq!(paths.len(), otp_sms_http::openapi().paths.paths.len());
    for path in &paths {
        assert!(
            path.starts_with("/auth/otp/resources/v3alpha/users/"),
            "{path}"
        );
    }
    // Every documented path is served under the prefix: the add answers, unprefixed it is the
    // host's 404.
    let (status, _) = call(
        &app,
        "POST",
        "/auth/otp/resources/v3alpha/users/alice/otp_sms",
        Some(r#"{"number":"+41791234567","returnCode":{}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&app, "POST", ADD, Some("{}")).await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    // A root prefix is the plain document.
    assert_eq!(
        serde_json::to_value(otp_sms_http::openapi_nested("/")).unwrap(),
        serde_json::to_value(otp_sms_http::openapi()).unwrap()
    );
}

#[tokio::test]
async fn a_caller_handed_over_by_middleware_needs_no_bearer_token() {
    let (service, tokens) = service();
    // The host's middleware authenticated the request its own way (a session header here)
    // and hands the caller over in the request's extensions.
    async fn session(
        mut req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let principal = req
            .headers()
            .get("x-session-user")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if let Some(principal) = principal {
            let caller =
                otp_sms_core::Caller::new("inst-1".parse().unwrap(), principal.parse().unwrap());
            req.extensions_mut().insert(caller);
        }
        next.run(req).await
    }
    let app = otp_sms_http::router(service, tokens).layer(axum::middleware::from_fn(session));
    let add = |session: Option<&str>, query: &str| {
        let mut req = Request::builder()
            .method("POST")
            .uri(format!("{ADD}{query}"))
            .header("content-type", "application/json");
        if let Some(user) = session {
            req = req.header("x-session-user", user);
        }
        req.body(Body::from(r#"{"number":"+41791234567","returnCode":{}}"#))
            .unwrap()
    };
    // With the session and no Authorization header: alice adds her own phone.
    let res = app.clone().oneshot(add(Some("alice"), "")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The handed-over caller is checked like any other: bob may not act for alice.
    let res = app.clone().oneshot(add(Some("bob"), "")).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // A request naming another instance than the caller's is NOT_FOUND.
    let res = app
        .clone()
        .oneshot(add(Some("alice"), "?instance.id=inst-2"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // Without the session and without a token: UNAUTHENTICATED.
    let res = app.clone().oneshot(add(None, "")).await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

// ---- ZITADEL's gateway, to the letter ----

#[tokio::test]
async fn any_or_no_content_type_is_json_and_unknown_fields_are_ignored() {
    let app = app();
    for content_type in ["text/plain", "*/*", "application/x-www-form-urlencoded"] {
        let (status, body) = call_with(
            &app,
            "POST",
            ADD,
            Some(r#"{"number":"+41791234567","returnCode":{}}"#),
            content_type,
            Some("alice-token"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{content_type}: {body}");
    }
    // No Content-Type at all.
    let req = Request::builder()
        .method("POST")
        .uri(ADD)
        .header("authorization", "Bearer alice-token")
        .body(Body::from(r#"{"number":"+41791234567","returnCode":{}}"#))
        .unwrap();
    assert_eq!(
        app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );
    // A field of a newer revision is ignored.
    let (status, body) = call(
        &app,
        "POST",
        ADD,
        Some(r#"{"number":"+41791234567","returnCode":{},"fromTheFuture":{"x":1}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Malformed JSON is still INVALID_ARGUMENT, whatever the content type.
    let (status, body) = call_with(
        &app,
        "POST",
        ADD,
        Some("{"),
        "text/plain",
        Some("alice-token"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_status(&body, 3);
}

#[tokio::test]
async fn a_known_path_with_a_wrong_method_is_405_unimplemented() {
    let (status, body) = call(&app(), "PUT", ADD, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    // As protojson writes a google.rpc.Status: no empty details.
    assert_eq!(body, json!({"code": 12, "message": "Method Not Allowed"}));
}

const CHALLENGE: &str = "/resources/v3alpha/users/alice/otp_sms/_challenge";
const CHECK: &str = "/resources/v3alpha/users/alice/otp_sms/_check";

/// Alice's phone, added with the code returned and verified: the registration id.
async fn verified(app: &Router) -> String {
    let (id, code) = add_returning(app).await;
    let (status, body) = call(app, "POST", &verify_uri(&id), Some(&format!("\"{code}\""))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    id
}

#[tokio::test]
async fn sign_in_over_json_challenges_and_checks_once_with_the_session_apis_bodies() {
    let app = app();
    let id = verified(&app).await;
    let (status, body) = call(
        &app,
        "POST",
        CHALLENGE,
        Some(r#"{"binding":"session-1","otpSms":{"returnCode":true}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["otpSmsId"], json!(id), "the most recently verified");
    assert_eq!(body["details"]["id"], json!(id));
    let code = body["challenges"]["otpSms"].as_str().unwrap().to_owned();
    let check = format!(r#"{{"binding":"session-1","otpSms":{{"code":"{code}"}}}}"#);
    // Under another binding the code is wrong.
    let elsewhere = check.replace("session-1", "session-2");
    let (status, body) = call(&app, "POST", CHECK, Some(&elsewhere)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_status(&body, 3);
    assert_eq!(body["details"][0]["id"], json!("OTPSMS-WRONG_CODE"));
    let (status, body) = call(&app, "POST", CHECK, Some(&check)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["otpSmsId"], json!(id));
    chrono::DateTime::parse_from_rfc3339(body["details"]["changed"].as_str().unwrap()).unwrap();
    // A replay of the right code.
    let (status, body) = call(&app, "POST", CHECK, Some(&check)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_status(&body, 9);
    assert_eq!(body["details"][0]["id"], json!("OTPSMS-CHALLENGE_USED"));
    // Sent by SMS (no `otpSms`): no code in the answer, named registration, snake_case too.
    let (status, body) = call(
        &app,
        "POST",
        CHALLENGE,
        Some(&format!(r#"{{"binding":"session-3","otp_sms_id":"{id}"}}"#)),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["challenges"], json!({}));
}

#[tokio::test]
async fn sign_in_bodies_are_checked_before_anything_is_written() {
    let app = app();
    let (status, body) = call(&app, "POST", CHALLENGE, Some(r#"{"binding":""}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_status(&body, 3);
    assert_eq!(
        body["details"][1]["fieldViolations"][0]["field"],
        json!("binding")
    );
    let (status, body) = call(
        &app,
        "POST",
        CHALLENGE,
        Some(r#"{"binding":"secret-session","#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(!body.to_string().contains("secret-session"), "{body}");
    let (status, body) = call(&app, "POST", CHECK, Some(r#"{"binding":"s"}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["details"][1]["fieldViolations"][0]["field"],
        json!("code")
    );
    // No verified registration: nothing to challenge.
    let (status, body) = call(&app, "POST", CHALLENGE, Some(r#"{"binding":"s"}"#)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_status(&body, 9);
    assert_eq!(
        body["details"][0]["id"],
        json!("OTPSMS-NO_VERIFIED_REGISTRATION")
    );
}

#[tokio::test]
async fn the_users_phones_are_listed_masked_for_the_user_and_in_full_for_user_write() {
    let app = app();
    let id = verified(&app).await;
    let (status, own) = call(&app, "GET", ADD, None).await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(own["otpSms"][0]["otpSmsId"], json!(id));
    assert_eq!(own["otpSms"][0]["phone"], json!("+41*******67"));
    assert_eq!(own["otpSms"][0]["isVerified"], json!(true));
    assert!(own["otpSms"][0]["verifiedAt"].is_string(), "{own}");
    assert!(own["otpSms"][0].get("lastSignIn").is_none(), "{own}");
    let (status, full) = call_with(
        &app,
        "GET",
        ADD,
        None,
        "application/json",
        Some("admin-token"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{full}");
    assert_eq!(full["otpSms"][0]["phone"], json!("+41791234567"));
    let (status, body) = call(&app, "GET", "/resources/v3alpha/users/bob/otp_sms", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}
