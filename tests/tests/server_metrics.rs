//! End-to-end: `/metrics` of the real server binary, read by a Prometheus text-format parser,
//! while a flow runs: each domain counter moves by what the flow did, and HTTP and gRPC calls
//! are counted under the OpenTelemetry names.

use std::time::Duration;

use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::zitadel_users_client::ZitadelUsersClient;
use otp_sms_tests::net::WebhookReceiver;
use otp_sms_tests::server::{config, webhook_sms, Options, Server, TEST_KEYS};
use prom_text_format_parser::{Scrape, Type, ValueType};
use serde_json::{json, Value as Json};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

/// Scrapes `/metrics` and parses it; the response must be the Prometheus text format.
async fn scrape(s: &Server) -> Scrape {
    let res = reqwest::get(s.url("/metrics")).await.unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = res.text().await.unwrap();
    Scrape::parse(&text).expect("the text format parses")
}

/// The sum over `metric`'s samples of kind `of` whose labels include all of `labels` (0 when
/// none).
fn sum(scrape: &Scrape, metric: &str, of: ValueType, labels: &[(&str, &str)]) -> f64 {
    scrape
        .metrics
        .iter()
        .filter(|m| m.name == metric)
        .flat_map(|m| m.samples.iter())
        .filter(|s| s.value.value_type == of)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|l| l.key == *k && l.value == *v))
        })
        .map(|s| s.value.value.as_f64())
        .sum()
}

/// A counter's or gauge's value.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    sum(scrape, metric, ValueType::Sample, labels)
}

/// How many observations a histogram holds (its `_count`).
fn count(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let kind = scrape
        .metrics
        .iter()
        .find(|m| m.name == metric)
        .map(|m| m.kind);
    assert!(
        matches!(kind, None | Some(Type::Histogram)),
        "{metric} is a histogram"
    );
    sum(scrape, metric, ValueType::Count, labels)
}

async fn post(s: &Server, path: &str, token: &str, body: Json) -> (u16, Json) {
    let res = reqwest::Client::new()
        .post(s.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Json::Null))
}

const ADD: &str = "/resources/v3alpha/users/alice/otp_sms";

/// Adds a registration for alice with its code in the answer: its verify path and the code.
async fn add_returning_code(s: &Server) -> (String, String) {
    let (st, added) = post(
        s,
        ADD,
        "token-alice",
        json!({"number": "+41791234567", "returnCode": {}}),
    )
    .await;
    assert_eq!(st, 200, "{added}");
    (
        format!("{ADD}/{}/_verify", added["otpSmsId"].as_str().unwrap()),
        added["verificationCode"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_counters_move_as_a_flow_runs() {
    let receiver = WebhookReceiver::start().await;
    receiver.set_failing(true);
    let s = Server::start(
        BIN,
        &Options {
            config: config(&format!(
                "{}[notifier]\ninterval_ms = 20\nbackoff_ms = 50\n",
                webhook_sms(&receiver.url, "retries = 0")
            ))
            .replace(
                "[abuse]\n",
                "[abuse]\ndestination_number = [{ max = 1, window_secs = 600 }]\n",
            ),
            keys: Some(TEST_KEYS.into()),
            ..Options::default()
        },
    );
    let before = scrape(&s).await;
    let moved = |after: &Scrape, metric: &str, labels: &[(&str, &str)]| {
        value(after, metric, labels) - value(&before, metric, labels)
    };
    let counted = |after: &Scrape, metric: &str, labels: &[(&str, &str)]| {
        count(after, metric, labels) - count(&before, metric, labels)
    };

    // A code in the response, one wrong code, then the right one.
    let (verify, code) = add_returning_code(&s).await;
    let (st, _) = post(&s, &verify, "token-alice", json!("00000000")).await;
    assert_eq!(st, 400);
    let (st, _) = post(&s, &verify, "token-alice", json!(code)).await;
    assert_eq!(st, 200);
    let (st, _) = post(&s, &verify, "token-alice", json!("00000000")).await;
    assert_eq!(st, 400, "verified already: not one of the five outcomes");

    // A code by SMS, while the provider fails; then one more to the same number, refused by
    // its budget of one.
    let (st, _) = post(
        &s,
        ADD,
        "token-alice",
        json!({"number": "+41791112233", "sendCode": {}}),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = post(
        &s,
        ADD,
        "token-alice",
        json!({"number": "+41791112233", "sendCode": {}}),
    )
    .await;
    assert_eq!(st, 429);

    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = scrape(&s).await;
    assert_eq!(
        moved(
            &during,
            "otp_sms_codes_issued_total",
            &[("delivery", "return")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            &during,
            "otp_sms_codes_issued_total",
            &[("delivery", "sms")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            &during,
            "otp_sms_verifications_total",
            &[("outcome", "wrong_code")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            &during,
            "otp_sms_verifications_total",
            &[("outcome", "verified")]
        ),
        1.0
    );
    assert_eq!(value(&during, "otp_sms_verifications_total", &[]), 2.0);
    assert_eq!(
        moved(
            &during,
            "otp_sms_budget_refusals_total",
            &[("scope", "destination_number"), ("silent", "false")]
        ),
        1.0
    );
    assert_eq!(
        value(&during, "otp_sms_outbox_messages", &[]),
        1.0,
        "the SMS waits"
    );
    assert!(value(&during, "otp_sms_outbox_oldest_age_seconds", &[]) > 0.0);
    assert!(moved(&during, "otp_sms_sms_deferred_total", &[]) >= 1.0);
    assert_eq!(moved(&during, "otp_sms_sms_handed_over_total", &[]), 0.0);
    assert!(
        counted(
            &during,
            "otp_sms_append_duration_seconds",
            &[("outcome", "ok")]
        ) >= 4.0
    );
    // Every call is counted under its route's template, never its ids.
    assert_eq!(
        counted(
            &during,
            "http_server_request_duration_seconds",
            &[
                ("http_request_method", "POST"),
                ("http_route", "/resources/v3alpha/users/{id}/otp_sms"),
                ("http_response_status_code", "200"),
            ]
        ),
        2.0
    );
    assert_eq!(
        counted(
            &during,
            "http_server_request_duration_seconds",
            &[(
                "http_route",
                "/resources/v3alpha/users/{id}/otp_sms/{otpSmsId}/_verify"
            )]
        ),
        3.0
    );

    // The provider recovers: the SMS is handed over and the outbox empties.
    receiver.set_failing(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.received().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let after = scrape(&s).await;
    assert_eq!(moved(&after, "otp_sms_sms_handed_over_total", &[]), 1.0);
    assert_eq!(value(&after, "otp_sms_outbox_messages", &[]), 0.0);
    assert_eq!(value(&after, "otp_sms_outbox_oldest_age_seconds", &[]), 0.0);

    // The conversion signal: one code sent to a Swiss number, not verified yet (the code in
    // the response does not count: it was never sent)…
    let region = [("region", "CH")];
    assert_eq!(value(&after, "otp_sms_conversion_sent", &region), 1.0);
    assert_eq!(value(&after, "otp_sms_conversion_verified", &region), 0.0);
    // …then verified with the code the SMS carried.
    let sms = receiver.received()[0].clone();
    let verify_sent = format!(
        "{ADD}/{}/_verify",
        sms["otpSmsId"].as_str().expect("the registration")
    );
    let (st, _) = post(&s, &verify_sent, "token-alice", sms["code"].clone()).await;
    assert_eq!(st, 200);
    let converted = scrape(&s).await;
    assert_eq!(value(&converted, "otp_sms_conversion_sent", &region), 1.0);
    assert_eq!(
        value(&converted, "otp_sms_conversion_verified", &region),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_counted_by_service_method_and_status() {
    let s = otp_sms_tests::server::memory_server(BIN);
    let mut c = ZitadelUsersClient::connect(s.base_url.clone())
        .await
        .unwrap();
    let add = || otp_sms_tests::grpc::add_returning_code("alice", "+41791234567");
    let mut authed = tonic::Request::new(add());
    authed
        .metadata_mut()
        .insert("authorization", "Bearer token-alice".parse().unwrap());
    c.add_otpsms_authenticator(authed).await.expect("add");
    let refused = c.add_otpsms_authenticator(tonic::Request::new(add())).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::Unauthenticated);
    // A method the service does not have: counted, but not by its name.
    let unknown = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
        .post(s.url("/zitadel.resources.user.v3alpha.ZITADELUsers/NoSuchMethodXyz"))
        .header("content-type", "application/grpc")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.headers()["grpc-status"], "12");

    let scraped = scrape(&s).await;
    let calls = |method: &str, code: &str| {
        count(
            &scraped,
            "rpc_server_call_duration_seconds",
            &[
                ("rpc_system", "grpc"),
                ("rpc_service", "zitadel.resources.user.v3alpha.ZITADELUsers"),
                ("rpc_method", method),
                ("rpc_grpc_status_code", code),
            ],
        )
    };
    assert_eq!(calls("AddOTPSMSAuthenticator", "0"), 1.0);
    assert_eq!(calls("AddOTPSMSAuthenticator", "16"), 1.0);
    assert_eq!(calls("_OTHER", "12"), 1.0);
    let text = reqwest::get(s.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("NoSuchMethodXyz"),
        "no label from a caller's path"
    );
    assert!(
        text.contains("http_server_request_duration_seconds_bucket"),
        "durations are histograms with buckets"
    );
}

/// On PostgreSQL, the store's own figures: group-commit batch sizes of appends and budget
/// takes, and stream-cache hits (a verify after its add reads the cached history).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_reports_batches_and_cache_hits() {
    let s = Server::start(
        BIN,
        &Options {
            config: config(""),
            keys: Some(TEST_KEYS.into()),
            database: Some((
                otp_sms_tests::pg::database_url().to_owned(),
                otp_sms_tests::pg::schema_name(),
            )),
            ..Options::default()
        },
    );
    let (verify, code) = add_returning_code(&s).await;
    let (st, _) = post(&s, &verify, "token-alice", json!(code)).await;
    assert_eq!(st, 200);
    let scraped = scrape(&s).await;
    assert!(count(&scraped, "otp_sms_append_batch_size", &[]) >= 2.0);
    assert!(count(&scraped, "otp_sms_budget_batch_size", &[]) >= 1.0);
    assert!(
        value(
            &scraped,
            "otp_sms_stream_cache_lookups_total",
            &[("result", "hit")]
        ) >= 1.0
    );
    assert_eq!(
        value(
            &scraped,
            "otp_sms_verifications_total",
            &[("outcome", "verified")]
        ),
        1.0
    );
}
