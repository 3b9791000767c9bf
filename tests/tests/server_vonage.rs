//! Vonage through the real server binary, against a loopback stand-in of its SMS API: the
//! form's fields, UCS-2 texts sent as `unicode`, a final status not retried, a throttled one
//! retried; signed delivery receipts recorded, unsigned, stale, foreign or misplaced ones
//! refused.
use otp_sms_providers::vonage::{signature, SignatureMethod};
use otp_sms_testkit::stand_ins::VonageStandIn;
use otp_sms_tests::pg;
use otp_sms_tests::server::{
    add_sending, configured_server, metric, refused_at_start, secret_file, settle, SecretFile,
    Server,
};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");
/// The account's signature secret (receipts signed with HMAC-SHA256).
const SIGNATURE_SECRET: &str = "a-vonage-signature-secret";

fn server(vonage: &VonageStandIn, text: &str) -> (Server, [SecretFile; 2]) {
    server_on(vonage, text, None)
}

/// As [`server`], on PostgreSQL in `schema` when given.
fn server_on(
    vonage: &VonageStandIn,
    text: &str,
    schema: Option<&str>,
) -> (Server, [SecretFile; 2]) {
    let api_secret = secret_file("vonage-secret");
    let signature = secret_file(SIGNATURE_SECRET);
    let extra = format!(
        r#"
[sms]
sender = "vonage"

[sms.vonage]
api_key = "abcd1234"
api_secret_file = "{}"
from = "Acme"
callback = "https://id.acme.example/sms/status/vonage"
signature_secret_file = "{}"
signature_method = "sha256"
base_url = "{}"

{text}

[notifier]
interval_ms = 50
backoff_ms = 300
max_backoff_ms = 300
max_attempts = 4
"#,
        api_secret.display(),
        signature.display(),
        vonage.base_url
    );
    let server = configured_server(BIN, &extra, schema);
    (server, [api_secret, signature])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_reaches_vonage_with_the_right_fields() {
    let vonage = VonageStandIn::start("abcd1234", "vonage-secret").await;
    let (s, _secrets) = server(&vonage, "[sms.text]\napp_name = \"Acme\"\n");
    add_sending(&s, "alice", "+41791234567").await;
    assert_eq!(settle(|| vonage.requests().len(), 1).await, 1);
    let form = &vonage.requests()[0];
    assert_eq!(form["to"], "41791234567");
    assert_eq!(form["from"], "Acme");
    assert_eq!(form["type"], "text");
    // The receipt URL names the SMS; client-ref binds a signed receipt to it.
    let callback = &form["callback"];
    assert!(
        callback.starts_with("https://id.acme.example/sms/status/vonage/"),
        "{callback}"
    );
    assert!(callback.ends_with("/1"), "{callback}");
    assert_eq!(form["client-ref"].len(), 32);
    let ttl: i64 = form["ttl"].parse().unwrap();
    assert!((250_000..=300_000).contains(&ttl), "{ttl}");
    assert!(
        form["text"].starts_with("Your Acme code is "),
        "{}",
        form["text"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ucs2_text_is_sent_as_unicode_a_final_status_once_and_a_throttled_one_again() {
    let vonage = VonageStandIn::start("abcd1234", "vonage-secret").await;
    let (s, _secrets) = server(
        &vonage,
        "[sms.text]\napp_name = \"Acme\"\ndefault_template = \"Twój kod: {code}\"\n",
    );
    // Number barred (7): final, one attempt.
    vonage.script(&["7"]);
    add_sending(&s, "alice", "+41791234567").await;
    assert_eq!(
        settle(|| vonage.requests().len(), 1).await,
        1,
        "a final status is not retried"
    );
    assert_eq!(vonage.requests()[0]["type"], "unicode");
    assert!(
        !s.output().contains("refused for"),
        "Vonage's text is not logged"
    );
    // Throttled (1) once, then accepted: two attempts.
    vonage.script(&["1"]);
    add_sending(&s, "alice", "+41791234568").await;
    assert_eq!(
        settle(|| vonage.requests().len(), 3).await,
        3,
        "one retry, then the hand-over"
    );
}

/// How a receipt reaches the server.
#[derive(Clone, Copy)]
enum Via {
    Get,
    Form,
    Json,
}

/// A receipt for the SMS that was sent with `sent` (the form the stand-in received), with
/// these changes to its parameters, signed with `secret` (or unsigned).
async fn receipt(
    s: &Server,
    sent: &std::collections::HashMap<String, String>,
    via: Via,
    changes: &[(&str, &str)],
    secret: Option<&str>,
) -> u16 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut params: Vec<(String, String)> = [
        ("msisdn", sent["to"].as_str()),
        ("to", "Acme"),
        ("network-code", "22801"),
        ("messageId", "0C000000217B7F02"),
        ("price", "0.03330000"),
        ("status", "delivered"),
        ("scts", "2011281200"),
        ("err-code", "0"),
        ("api-key", "abcd1234"),
        ("client-ref", sent["client-ref"].as_str()),
        ("message-timestamp", "2026-11-30 12:00:00"),
        ("timestamp", now.as_str()),
        ("nonce", "ec11dd3e-1e7f-4db5-9467-82b02cd223b9"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (key, value) in changes {
        match params.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = (*value).to_owned(),
            None => params.push(((*key).to_owned(), (*value).to_owned())),
        }
    }
    if let Some(secret) = secret {
        let sig = signature(SignatureMethod::Sha256, secret, &params);
        params.push(("sig".to_owned(), sig));
    }
    let path = sent["callback"]
        .strip_prefix("https://id.acme.example")
        .unwrap()
        .to_owned();
    let client = reqwest::Client::new();
    let request = match via {
        Via::Get => client.get(s.url(&path)).query(&params),
        Via::Form => client.post(s.url(&path)).form(&params),
        Via::Json => {
            let object: serde_json::Map<String, serde_json::Value> = params
                .into_iter()
                .map(|(k, v)| {
                    // Vonage sends the timestamp as a JSON number.
                    let v = match (k.as_str(), v.parse::<u64>()) {
                        ("timestamp", Ok(n)) => serde_json::json!(n),
                        _ => serde_json::json!(v),
                    };
                    (k, v)
                })
                .collect();
            client.post(s.url(&path)).json(&object)
        }
    };
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_receipts_become_events_and_unsigned_stale_or_misplaced_ones_change_nothing() {
    let vonage = VonageStandIn::start("abcd1234", "vonage-secret").await;
    let schema = pg::schema_name();
    let (s, _secrets) = server_on(&vonage, "", Some(&schema));
    add_sending(&s, "alice", "+41791234567").await;
    add_sending(&s, "alice", "+41791234568").await;
    settle(|| vonage.requests().len(), 2).await;
    let sent = vonage.requests();
    pg::wait_for_events(&schema, "user.otp_sms.code.sent", 2).await;
    let before = pg::events_in(&schema).await;
    let (first, second) = (&sent[0], &sent[1]);

    let hour_ago = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 3_600)
        .to_string();
    let refused = [
        ("unsigned", receipt(&s, first, Via::Form, &[], None).await),
        (
            "signed with another secret",
            receipt(&s, first, Via::Form, &[], Some("not-the-secret")).await,
        ),
        (
            "an hour old",
            receipt(
                &s,
                first,
                Via::Form,
                &[("timestamp", &hour_ago)],
                Some(SIGNATURE_SECRET),
            )
            .await,
        ),
        (
            "another account's key",
            receipt(
                &s,
                first,
                Via::Form,
                &[("api-key", "ffff0000")],
                Some(SIGNATURE_SECRET),
            )
            .await,
        ),
        (
            "the first SMS's receipt on the second's path",
            receipt(
                &s,
                second,
                Via::Form,
                &[("client-ref", &first["client-ref"])],
                Some(SIGNATURE_SECRET),
            )
            .await,
        ),
    ];
    for (case, status) in refused {
        assert_eq!(status, 403, "{case}");
    }
    assert_eq!(
        pg::events_in(&schema).await,
        before,
        "refused receipts change nothing"
    );

    // Signed: `accepted` is acknowledged and ignored (GET); delivered (a form) for the first,
    // failed with error 6 (JSON) for the second; a repeat adds nothing.
    let accepted = [("status", "accepted")];
    assert_eq!(
        receipt(&s, first, Via::Get, &accepted, Some(SIGNATURE_SECRET)).await,
        204
    );
    assert_eq!(
        receipt(&s, first, Via::Form, &[], Some(SIGNATURE_SECRET)).await,
        204
    );
    assert_eq!(
        receipt(&s, first, Via::Get, &[], Some(SIGNATURE_SECRET)).await,
        204
    );
    let failed = [("status", "failed"), ("err-code", "6")];
    assert_eq!(
        receipt(&s, second, Via::Json, &failed, Some(SIGNATURE_SECRET)).await,
        204
    );
    let after = pg::events_in(&schema).await;
    assert_eq!(
        after[before.len()..].to_vec(),
        vec![
            (
                "user.otp_sms.code.delivered".to_owned(),
                serde_json::json!({"number": 1})
            ),
            (
                "user.otp_sms.delivery.failed".to_owned(),
                serde_json::json!({"number": 1, "attempts": 1, "reason": "vonage: failed, error 6"})
            ),
        ]
    );
    // Every receipt is counted by its outcome on /metrics.
    let reports = |outcome| {
        let s = &s;
        async move {
            metric(
                s,
                "otp_sms_delivery_reports_total",
                &[("provider", "vonage"), ("outcome", outcome)],
            )
            .await
        }
    };
    assert_eq!(reports("refused").await, 5.0);
    assert_eq!(reports("failed").await, 1.0);
    assert!(reports("delivered").await >= 1.0);
    assert!(reports("ignored").await >= 1.0, "accepted");
    drop(s);
    pg::drop_schema(&schema).await;
}

#[test]
fn a_callback_without_a_signature_secret_stops_the_start() {
    let secret_file = secret_file("vonage-secret");
    let extra = format!(
        "[sms]\nsender = \"vonage\"\n[sms.vonage]\napi_key = \"abcd1234\"\napi_secret_file = \"{}\"\nfrom = \"Acme\"\ncallback = \"https://id.acme.example/sms/status/vonage\"\n",
        secret_file.display()
    );
    let output = refused_at_start(BIN, &extra);
    assert!(output.contains("signature_secret_file"), "{output}");
}

/// A receipt body over 64 KiB is refused (413) unparsed; before, up to 2 MB of an unsigned
/// body was parsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_body_over_64_kib_is_refused_unparsed() {
    let vonage = VonageStandIn::start("abcd1234", "vonage-secret").await;
    let (s, _secrets) = server(&vonage, "");
    let huge = reqwest::Client::new()
        .post(s.url("/sms/status/vonage/inst-1/x/1"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"status": "delivered", "pad": "{}"}}"#,
            "a".repeat(100 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status().as_u16(), 413);
}
