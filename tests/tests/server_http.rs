//! End-to-end: the real server binary on a free port, driven over HTTP.

use std::time::Duration;

use otp_sms_tests::net::{TcpProxy, WebhookReceiver};
use otp_sms_tests::pg;
use otp_sms_tests::server::{
    config, handed_over, load_instance, webhook_sms, Options, Server, TEST_KEYS,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

fn memory_server() -> Server {
    otp_sms_tests::server::memory_server(BIN)
}

/// Another server process on the database's `schema` (as a second replica, or a restart).
fn pg_server_on(extra_config: &str, schema: &str) -> Server {
    Server::start(
        BIN,
        &Options {
            config: config(extra_config),
            keys: Some(TEST_KEYS.into()),
            database: Some((pg::database_url().to_owned(), schema.to_owned())),
            ..Options::default()
        },
    )
}

/// A server on PostgreSQL in a fresh schema; returns it and the schema.
fn pg_server(extra_config: &str, database_url: Option<String>) -> (Server, String) {
    let schema = pg::schema_name();
    let url = database_url.unwrap_or_else(|| pg::database_url().to_owned());
    let server = Server::start(
        BIN,
        &Options {
            config: config(extra_config),
            keys: Some(TEST_KEYS.into()),
            database: Some((url, schema.clone())),
            ..Options::default()
        },
    );
    (server, schema)
}

async fn request(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    request_with(&reqwest::Client::new(), method, url, token, body).await
}

/// A client is tied to the runtime of the test that made it: never share one across tests.
async fn request_with(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut req = client.request(method, url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post(url: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    request(reqwest::Method::POST, url, token, Some(body)).await
}

fn add_url(s: &Server, user: &str) -> String {
    s.url(&format!("/resources/v3alpha/users/{user}/otp_sms"))
}

fn verify_url(s: &Server, user: &str, id: &str) -> String {
    s.url(&format!(
        "/resources/v3alpha/users/{user}/otp_sms/{id}/_verify"
    ))
}

async fn add_returning(s: &Server) -> (String, String) {
    let (status, body) = post(
        &add_url(s, "alice"),
        Some("token-alice"),
        r#"{"number": "+41791234567", "returnCode": {}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    (
        body["otpSmsId"].as_str().unwrap().to_owned(),
        body["verificationCode"].as_str().unwrap().to_owned(),
    )
}

fn assert_rpc(status: u16, body: &Value, http: u16, code: i64) {
    assert_eq!(status, http, "{body}");
    assert_eq!(body["code"], json!(code), "{body}");
    assert!(
        body["message"].is_string() && body["details"].is_array(),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_add_with_return_code_then_verify() {
    let s = memory_server();
    let (id, code) = add_returning(&s).await;
    assert_eq!(code.len(), 8);
    let (status, body) = post(
        &verify_url(&s, "alice", &id),
        Some("token-alice"),
        &format!("\"{code}\""),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<_> = body["details"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    assert_eq!(keys, vec!["changed", "created", "id", "owner"]);
    assert_eq!(body["details"]["id"], json!(id));
    assert_eq!(
        body["details"]["owner"],
        json!({"type": "OWNER_TYPE_ORG", "id": "org-1"})
    );
    let created =
        chrono::DateTime::parse_from_rfc3339(body["details"]["created"].as_str().unwrap()).unwrap();
    let changed =
        chrono::DateTime::parse_from_rfc3339(body["details"]["changed"].as_str().unwrap()).unwrap();
    assert!(changed >= created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_error_row_of_the_table_over_http() {
    let s = memory_server();
    let (id, code) = add_returning(&s).await;
    let verify = verify_url(&s, "alice", &id);

    // 3 INVALID_ARGUMENT / 400: an empty code, a malformed body, a wrong code.
    let (st, b) = post(&verify, Some("token-alice"), r#""""#).await;
    assert_rpc(st, &b, 400, 3);
    let (st, b) = post(&verify, Some("token-alice"), "{").await;
    assert_rpc(st, &b, 400, 3);
    // 16 UNAUTHENTICATED / 401: no token, an unknown token.
    let (st, b) = post(&verify, None, &format!("\"{code}\"")).await;
    assert_rpc(st, &b, 401, 16);
    let (st, b) = post(&verify, Some("nope-nope"), &format!("\"{code}\"")).await;
    assert_rpc(st, &b, 401, 16);
    // 7 PERMISSION_DENIED / 403: another organization's user without user.write.
    let (st, b) = post(&verify, Some("token-stranger"), &format!("\"{code}\"")).await;
    assert_rpc(st, &b, 403, 7);
    // 5 NOT_FOUND / 404: an unknown user, an unknown registration, an unknown route.
    let (st, b) = post(
        &verify_url(&s, "carol", &id),
        Some("token-admin"),
        &format!("\"{code}\""),
    )
    .await;
    assert_rpc(st, &b, 404, 5);
    let (st, b) = post(
        &verify_url(&s, "alice", "nope"),
        Some("token-alice"),
        &format!("\"{code}\""),
    )
    .await;
    assert_rpc(st, &b, 404, 5);
    let (st, b) = request(reqwest::Method::GET, &s.url("/nope"), None, None).await;
    assert_rpc(st, &b, 404, 5);
    // 8 RESOURCE_EXHAUSTED / 429: a new code within 60 s.
    let resend = s.url(&format!(
        "/resources/v3alpha/users/alice/otp_sms/{id}/_resend_code"
    ));
    let (st, b) = post(&resend, Some("token-alice"), r#"{"returnCode": {}}"#).await;
    assert_rpc(st, &b, 429, 8);
    // The admin may verify for alice; then 9 FAILED_PRECONDITION / 400: already verified.
    let (st, b) = post(&verify, Some("token-admin"), &format!("\"{code}\"")).await;
    assert_eq!(st, 200, "{b}");
    let (st, b) = post(&verify, Some("token-alice"), &format!("\"{code}\"")).await;
    assert_rpc(st, &b, 400, 9);
    // Remove, then NOT_FOUND.
    let remove = s.url(&format!("/resources/v3alpha/users/alice/otp_sms/{id}"));
    let (st, b) = request(reqwest::Method::DELETE, &remove, Some("token-alice"), None).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["details"]["id"], json!(id));
    let (st, b) = request(reqwest::Method::DELETE, &remove, Some("token-alice"), None).await;
    assert_rpc(st, &b, 404, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_when_conflicts_outlast_the_attempts() {
    // One attempt per command and a high burn limit: concurrent wrong codes must collide (40
    // calls of one caller at once: over the default share per caller).
    let (s, schema) = pg_server(
        "[service]\nmax_attempts = 1\n[policy]\nmax_failed_checks = 100\n[server]\nmax_in_flight_per_caller = 64\n",
        None,
    );
    let (id, code) = add_returning(&s).await;
    let wrong: String = code
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let url = verify_url(&s, "alice", &id);
    // One client, and every call released at once, so that the calls overlap.
    let client = reqwest::Client::new();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(40));
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let (url, client, start) = (url.clone(), client.clone(), start.clone());
            let body = format!("\"{wrong}\"");
            tokio::spawn(async move {
                start.wait().await;
                request_with(
                    &client,
                    reqwest::Method::POST,
                    &url,
                    Some("token-alice"),
                    Some(&body),
                )
                .await
            })
        })
        .collect();
    let mut aborted = 0;
    for call in calls {
        let (st, b) = call.await.unwrap();
        match st {
            409 => {
                assert_rpc(st, &b, 409, 10);
                aborted += 1;
            }
            400 => assert_rpc(st, &b, 400, 3),
            other => panic!("unexpected {other}: {b}"),
        }
    }
    assert!(aborted > 0, "no call collided");
    let failed = pg::events_in(&schema)
        .await
        .iter()
        .filter(|(t, _)| t == "user.otp_sms.check.failed")
        .count();
    assert_eq!(failed, 40 - aborted, "every refused call wrote nothing");
    drop(s);
    pg::drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_when_the_database_goes_away() {
    let proxy = TcpProxy::start(pg::host_port(pg::database_url())).await;
    let via_proxy = pg::with_host_port(pg::database_url(), &proxy.addr.to_string());
    let (s, schema) = pg_server("", Some(via_proxy));
    let (id, code) = add_returning(&s).await;
    let (st, b) = request(reqwest::Method::GET, &s.url("/readyz"), None, None).await;
    assert_eq!(st, 200, "{b}");
    proxy.cut();
    let (st, b) = post(
        &verify_url(&s, "alice", &id),
        Some("token-alice"),
        &format!("\"{code}\""),
    )
    .await;
    assert_rpc(st, &b, 503, 14);
    assert!(
        !b.to_string().contains("127.0.0.1"),
        "no internals leak: {b}"
    );
    let (st, b) = request(reqwest::Method::GET, &s.url("/readyz"), None, None).await;
    assert_eq!(st, 503, "{b}");
    drop(s);
    pg::drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_when_the_code_key_was_dropped_from_the_ring() {
    let (mut s, schema) = pg_server("", None);
    let (id, code) = add_returning(&s).await;
    s.kill();
    // Restart with a different key only: the stored hash names key k1, which is gone.
    let s2 = Server::start(
        BIN,
        &Options {
            config: config(""),
            keys: Some(
                "k2:1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100".into(),
            ),
            database: Some((pg::database_url().to_owned(), schema.clone())),
            ..Options::default()
        },
    );
    let (st, b) = post(
        &verify_url(&s2, "alice", &id),
        Some("token-alice"),
        &format!("\"{code}\""),
    )
    .await;
    assert_rpc(st, &b, 500, 13);
    assert_eq!(
        b["message"],
        json!("internal error"),
        "details stay in the logs"
    );
    drop(s2);
    pg::drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_changes_nothing() {
    let (s, schema) = pg_server("", None);
    let (id, code) = add_returning(&s).await;
    let before = pg::events_in(&schema).await;
    let verify = verify_url(&s, "alice", &id);
    let long = "u".repeat(201);
    let crab201 = "🦀".repeat(201);
    let big = format!("\"{}\"", "1".repeat(70_000));
    let cases: Vec<(String, String)> = vec![
        (verify.clone(), "{".into()),
        (verify.clone(), "[1,2".into()),
        (verify.clone(), big),
        (verify.clone(), format!("\"{}\"", "9".repeat(201))),
        (verify.clone(), format!("\"{crab201}\"")),
        (verify.clone(), "\"\"".into()),
        (verify.clone(), "null".into()),
        (verify_url(&s, &long, &id), format!("\"{code}\"")),
        (verify_url(&s, "alice", &long), format!("\"{code}\"")),
        (
            verify_url(&s, "alice%27%3B%20DROP%20TABLE%20events%3B--", &id),
            format!("\"{code}\""),
        ),
        (
            verify_url(&s, "alice", "%27%20OR%20%271%27%3D%271"),
            format!("\"{code}\""),
        ),
        (
            add_url(&s, "alice"),
            r#"{"number": "+41 79 123 45 67 89 01 23"}"#.into(),
        ),
        (
            add_url(&s, "alice"),
            r#"{"number": "'; DROP TABLE events; --"}"#.into(),
        ),
        (
            add_url(&s, "alice"),
            r#"{"number": "+41791234567", "returnCode": {}, "isVerified": true}"#.into(),
        ),
        (add_url(&s, &long), r#"{"number": "+41791234567"}"#.into()),
    ];
    for (url, body) in &cases {
        let (st, b) = post(url, Some("token-alice"), body).await;
        assert!(matches!(st, 400 | 404), "{url} {body:.40}: {st} {b}");
    }
    // Any content type is read as JSON (as ZITADEL's gateway does): a malformed body sent as
    // text changes nothing either.
    let res = reqwest::Client::new()
        .post(&verify)
        .bearer_auth("token-alice")
        .header("content-type", "text/plain")
        .body(format!("\"{code}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);
    assert_eq!(
        pg::events_in(&schema).await,
        before,
        "the store holds exactly what it held"
    );
    // A 200-character multi-byte code is in bounds: a wrong code, recorded as such.
    let (st, b) = post(
        &verify,
        Some("token-alice"),
        &format!("\"{}\"", "é".repeat(200)),
    )
    .await;
    assert_rpc(st, &b, 400, 3);
    assert_eq!(pg::events_in(&schema).await.len(), before.len() + 1);
    let (st, _) = post(&verify, Some("token-alice"), &format!("\"{code}\"")).await;
    assert_eq!(st, 200);
    drop(s);
    pg::drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifier_delivers_each_code_once_across_a_crash() {
    let receiver = WebhookReceiver::start().await;
    receiver.set_failing(true);
    let sms = format!(
        "{}[notifier]\ninterval_ms = 50\nlease_secs = 1\n",
        webhook_sms(&receiver.url, "timeout_ms = 1000\nretries = 0")
    );
    let (mut first, schema) = pg_server(&sms, None);
    let (st, b) = post(
        &add_url(&first, "alice"),
        Some("token-alice"),
        r#"{"number": "+41791234567"}"#,
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert!(b.get("verificationCode").is_none());
    let id = b["otpSmsId"].as_str().unwrap().to_owned();
    // The provider is down: the code stays in the outbox, the registration unsent.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(receiver.received().is_empty());
    first.kill();
    receiver.set_failing(false);
    let second = pg_server_on(&sms, &schema);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while receiver.received().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await; // a lease and more: no second send
    let received = receiver.received();
    assert_eq!(
        received.len(),
        1,
        "delivered once: {received:?}\n{}",
        second.output()
    );
    assert_eq!(received[0]["otpSmsId"], json!(id));
    assert_eq!(received[0]["phone"], json!("+41791234567"));
    let code = received[0]["code"].as_str().unwrap().to_owned();
    let events = pg::events_in(&schema).await;
    let sent = events
        .iter()
        .filter(|(t, _)| t == "user.otp_sms.code.sent")
        .count();
    assert_eq!(sent, 1, "code sent recorded once");
    for (_, payload) in &events {
        assert!(
            !payload.to_string().contains(&code),
            "no code at rest: {payload}"
        );
    }
    let pool = pg::pool().await;
    let outbox: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".outbox"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(outbox, 0, "the encrypted copy is gone after delivery");
    pool.close().await;
    let (st, b) = post(
        &verify_url(&second, "alice", &id),
        Some("token-alice"),
        &format!("\"{code}\""),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    drop(second);
    pg::drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_openapi_and_graceful_shutdown() {
    let mut s = memory_server();
    let (st, b) = request(reqwest::Method::GET, &s.url("/healthz"), None, None).await;
    assert_eq!((st, b), (200, json!({"status": "ok"})));
    let (st, _) = request(reqwest::Method::GET, &s.url("/readyz"), None, None).await;
    assert_eq!(st, 200);
    let (st, doc) = request(reqwest::Method::GET, &s.url("/openapi.json"), None, None).await;
    assert_eq!(st, 200);
    assert!(doc["paths"]["/resources/v3alpha/users/{id}/otp_sms/{otpSmsId}/_verify"].is_object());
    let res = reqwest::Client::new()
        .get(s.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers().contains_key("x-request-id"),
        "a request id per call"
    );
    assert!(
        s.output().contains("data lives only in memory"),
        "the loud memory warning"
    );
    assert_eq!(
        s.terminate(Duration::from_secs(10)),
        Some(true),
        "exits cleanly on SIGTERM"
    );
}

#[test]
fn refuses_to_start_without_a_key_or_configuration() {
    let (ok, stderr) = otp_sms_tests::server::run_to_exit(BIN, &["--listen", "127.0.0.1:0"], &[]);
    assert!(!ok);
    assert!(
        stderr.contains("--config") && stderr.contains("--dev"),
        "{stderr}"
    );
}

/// Two server processes on one PostgreSQL share idempotency keys: a retry that reaches the
/// other process gets the first answer, and one registration is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_holds_across_two_servers_on_one_database() {
    let (a, schema) = pg_server("", None);
    let b = pg_server_on("", &schema);
    let client = reqwest::Client::new();
    let add = |s: &Server| {
        client
            .post(add_url(s, "alice"))
            .bearer_auth("token-alice")
            .header("content-type", "application/json")
            .header("Idempotency-Key", "\"two-servers-1\"")
            .body(r#"{"number": "+41791234567", "returnCode": {}}"#)
            .send()
    };
    let first: Value = add(&a).await.expect("add").json().await.unwrap();
    let again: Value = add(&b).await.expect("retry").json().await.unwrap();
    assert!(first["otpSmsId"].is_string(), "{first}");
    assert_eq!(again["otpSmsId"], first["otpSmsId"], "{again}");
    assert_eq!(again["verificationCode"], first["verificationCode"]);
    let added = pg::events_in(&schema)
        .await
        .into_iter()
        .filter(|(t, _)| t == "user.otp_sms.added")
        .count();
    assert_eq!(added, 1);
    drop((a, b));
    pg::drop_schema(&schema).await;
}

/// A provider that takes 4 s to answer each SMS, behind a notifier whose lease is 2 s (the
/// repro of issue 25: the notifier cut each send short at what was left of its pass, and sent
/// the message again): each of 100 codes is handed over exactly once, because the notifier
/// leases for the sender's whole time-out and starts a send only with all of it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_is_handed_each_message_exactly_once() {
    let receiver = WebhookReceiver::start().await;
    receiver.set_delay(Duration::from_secs(4));
    let extra = format!(
        "{}[notifier]\ninterval_ms = 50\nbatch = 100\nlease_secs = 2\nconcurrency = 50\n{}",
        webhook_sms(&receiver.url, "timeout_ms = 6000\nretries = 0"),
        load_instance(
            "{ client_address = [{ max = 1000, window_secs = 3600 }] }",
            100
        )
    );
    let (s, _schema) = pg_server(&extra, None);
    for i in 0..100 {
        let (st, body) = post(
            &add_url(&s, &format!("u{i}")),
            Some(&format!("token-u{i}")),
            &format!(r#"{{"number": "+4179{i:03}0567"}}"#),
        )
        .await;
        assert_eq!(st, 200, "{body}");
    }
    // Two leases and a slow answer more: nothing is sent again.
    let (received, distinct) = handed_over(
        &receiver,
        100,
        Duration::from_secs(60),
        Duration::from_secs(6),
    )
    .await;
    assert_eq!(
        (received.len(), distinct),
        (100, 100),
        "each message once\n{}",
        s.output()
    );
}

/// Two server processes on one PostgreSQL, each running a notifier, and a slow webhook
/// (300 ms an SMS): every one of 40 codes added through either server reaches the webhook
/// exactly once, with its outbox message id as `Idempotency-Key`, and `code sent` is recorded
/// once each. No leader: the leases share the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_with_notifiers_deliver_every_code_once() {
    let receiver = WebhookReceiver::start().await;
    receiver.set_delay(Duration::from_millis(300));
    let extra = format!(
        "{}[notifier]\ninterval_ms = 50\nbatch = 10\nlease_secs = 3\nconcurrency = 4\n{}",
        webhook_sms(&receiver.url, "timeout_ms = 2000\nretries = 0"),
        load_instance(
            "{ client_address = [{ max = 1000, window_secs = 3600 }] }",
            40
        )
    );
    let (a, schema) = pg_server(&extra, None);
    let b = pg_server_on(&extra, &schema);
    let servers = [&a, &b];
    let mut added = Vec::new();
    for i in 0..40 {
        let s = servers[i % 2];
        let (st, body) = post(
            &add_url(s, &format!("u{i}")),
            Some(&format!("token-u{i}")),
            &format!(r#"{{"number": "+4179{i:03}0567"}}"#),
        )
        .await;
        assert_eq!(st, 200, "{body}");
        added.push(body["otpSmsId"].as_str().unwrap().to_owned());
    }
    // A lease and more: nothing is sent twice.
    let (received, distinct) = handed_over(
        &receiver,
        40,
        Duration::from_secs(40),
        Duration::from_millis(3500),
    )
    .await;
    assert_eq!(
        (received.len(), distinct),
        (40, 40),
        "each code once\n{}\n{}",
        a.output(),
        b.output()
    );
    for r in &received {
        assert_eq!(
            r["_idempotencyKey"].as_str().unwrap(),
            format!("\"{}\"", r["messageId"].as_str().unwrap())
        );
    }
    let mut registrations: Vec<&str> = received
        .iter()
        .map(|r| r["otpSmsId"].as_str().unwrap())
        .collect();
    registrations.sort();
    added.sort();
    assert_eq!(
        registrations,
        added.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let sent = pg::events_in(&schema)
        .await
        .iter()
        .filter(|(t, _)| t == "user.otp_sms.code.sent")
        .count();
    assert_eq!(sent, 40);
    drop((a, b));
    pg::drop_schema(&schema).await;
}

/// The server binary killed (SIGKILL) under load and started again on the same database: 8
/// HTTP clients run add → verify under `Idempotency-Key`, retrying connection errors and 503
/// against whichever server runs. Every acknowledged write is there once, and no
/// registration beyond them: a retry of a request the dead process had committed gets the
/// first answer from the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_loses_and_doubles_nothing_under_load() {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    let extra = load_instance("{ max_registrations_per_user = 100000 }", 8);
    let (mut first, schema) = pg_server(&extra, None);
    let base = Arc::new(Mutex::new(first.base_url.clone()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // (acknowledged adds, acknowledged verifies, retried answers, other errors, successes)
    type Tally = (Vec<String>, Vec<String>, usize, Vec<String>, Vec<Instant>);
    let tally: Arc<Mutex<Tally>> = Arc::default();
    /// POSTs until a 200 (retrying connection errors and 503 for up to 20 s).
    async fn until_ok(
        client: &reqwest::Client,
        base: &Mutex<String>,
        tally: &Mutex<Tally>,
        path: &str,
        token: &str,
        key: &str,
        body: &str,
    ) -> Option<Value> {
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            let url = format!("{}{path}", base.lock().unwrap());
            let sent = client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "application/json")
                .header("Idempotency-Key", key)
                .body(body.to_owned())
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {
                    tally.lock().unwrap().4.push(Instant::now());
                    return r.json().await.ok();
                }
                Ok(r) if r.status().as_u16() == 503 => tally.lock().unwrap().2 += 1,
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    tally.lock().unwrap().3.push(format!("{status}: {text}"));
                    return None;
                }
                Err(_) => tally.lock().unwrap().2 += 1,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tally.lock().unwrap().3.push("no answer within 20 s".into());
        None
    }
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (base, stop, tally) = (base.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let token = format!("token-u{c}");
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let add = until_ok(
                        &client,
                        &base,
                        &tally,
                        &format!("/resources/v3alpha/users/u{c}/otp_sms"),
                        &token,
                        &format!("c{c}-add-{n}"),
                        r#"{"number": "+41791234567", "returnCode": {}}"#,
                    )
                    .await;
                    let Some(add) = add else { continue };
                    let id = add["otpSmsId"].as_str().unwrap().to_owned();
                    let code = add["verificationCode"].as_str().unwrap().to_owned();
                    tally.lock().unwrap().0.push(id.clone());
                    let verified = until_ok(
                        &client,
                        &base,
                        &tally,
                        &format!("/resources/v3alpha/users/u{c}/otp_sms/{id}/_verify"),
                        &token,
                        &format!("c{c}-verify-{n}"),
                        &format!("\"{code}\""),
                    )
                    .await;
                    if verified.is_some() {
                        tally.lock().unwrap().1.push(id);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = tally.lock().unwrap().0.len();
    assert!(before > 0, "the load runs before the kill");
    first.kill();
    let second = pg_server_on(&extra, &schema);
    let back = Instant::now();
    *base.lock().unwrap() = second.base_url.clone();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.await.expect("client");
    }
    let (added, verified, retried, other, successes) = std::mem::take(&mut *tally.lock().unwrap());
    assert!(other.is_empty(), "only retryable failures: {other:?}");
    let recovered = successes
        .iter()
        .filter(|t| **t > back)
        .min()
        .map(|t| t.duration_since(back))
        .expect("calls succeed on the new server");
    assert!(recovered < Duration::from_secs(5), "{recovered:?}");
    let events = pg::events_in(&schema).await;
    let pool = pg::pool().await;
    let ids: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT aggregate_id, event_type FROM \"{schema}\".events \
         WHERE aggregate_type = 'user.otp_sms'"
    ))
    .fetch_all(&pool)
    .await
    .expect("events");
    pool.close().await;
    let count = |id: &str, t: &str| ids.iter().filter(|(a, e)| a == id && e == t).count();
    for id in &added {
        assert_eq!(count(id, "user.otp_sms.added"), 1, "{id} added once");
    }
    for id in &verified {
        assert_eq!(count(id, "user.otp_sms.verified"), 1, "{id} verified once");
    }
    let registrations = events
        .iter()
        .filter(|(t, _)| t == "user.otp_sms.added")
        .count();
    assert_eq!(
        registrations,
        added.len(),
        "no registration beyond the acknowledged"
    );
    eprintln!(
        "server kill: {} adds and {} verifies acknowledged ({before} before the kill), \
         {retried} answers retried, first success {recovered:?} after the new server \
         listened, 0 lost, 0 duplicated",
        added.len(),
        verified.len()
    );
    drop(second);
    pg::drop_schema(&schema).await;
}

/// Given a server on PostgreSQL with a shutdown deadline of 2 s, a client holding a request
/// half sent, and four clients adding as fast as they can, when the server gets SIGTERM, then
/// it exits within the deadline (and a margin), and every add it acknowledged is in the
/// database: a server started after it verifies each one with its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_exits_in_time_and_loses_no_acknowledged_add() {
    use std::sync::{Arc, Mutex};
    let extra = format!(
        "[server]\nshutdown_timeout_secs = 2\nheader_read_timeout_ms = 60000\n{}",
        load_instance("{ max_registrations_per_user = 100000 }", 4)
    );
    let (mut first, schema) = pg_server(&extra, None);
    let mut held = tokio::net::TcpStream::connect(first.base_url.trim_start_matches("http://"))
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut held,
        b"POST /resources/v3alpha/users/u0/otp_sms HTTP/1.1\r\n",
    )
    .await
    .unwrap();
    let acknowledged: Arc<Mutex<Vec<(usize, String, String)>>> = Arc::default();
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (base, acknowledged) = (first.base_url.clone(), acknowledged.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                loop {
                    let sent = client
                        .post(format!("{base}/resources/v3alpha/users/u{c}/otp_sms"))
                        .bearer_auth(format!("token-u{c}"))
                        .json(&json!({"number": "+41791234567", "returnCode": {}}))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let Ok(res) = sent else { return };
                    if !res.status().is_success() {
                        return;
                    }
                    let Ok(added) = res.json::<Value>().await else {
                        return;
                    };
                    acknowledged.lock().unwrap().push((
                        c,
                        added["otpSmsId"].as_str().unwrap().to_owned(),
                        added["verificationCode"].as_str().unwrap().to_owned(),
                    ));
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let started = std::time::Instant::now();
    let exited = first.terminate(Duration::from_secs(10));
    let took = started.elapsed();
    for client in clients {
        let _ = client.await;
    }
    assert_eq!(exited, Some(true), "exits cleanly");
    assert!(took < Duration::from_secs(4), "exited after {took:?}");
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 10,
        "the load ran: {}",
        acknowledged.len()
    );

    let second = pg_server_on(&extra, &schema);
    let client = reqwest::Client::new();
    for (c, id, code) in &acknowledged {
        let res = client
            .post(second.url(&format!(
                "/resources/v3alpha/users/u{c}/otp_sms/{id}/_verify"
            )))
            .bearer_auth(format!("token-u{c}"))
            .json(code)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            200,
            "acknowledged add {id} is in the database"
        );
    }
    drop(held);
}
