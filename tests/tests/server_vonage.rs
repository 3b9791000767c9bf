//! Vonage through the real server binary, against a loopback stand-in of its SMS API: the
//! form's fields, UCS-2 texts sent as `unicode`, a final status not retried, a throttled one
//! retried.

use otp_sms_tests::providers::VonageStandIn;
use otp_sms_tests::server::{add_sending, config, settle, Options, Server, TEST_KEYS};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

fn server(vonage: &VonageStandIn, text: &str) -> (Server, std::path::PathBuf) {
    let secret_file = std::env::temp_dir().join(format!("otp-sms-vonage-{}", uuid::Uuid::now_v7()));
    std::fs::write(&secret_file, "vonage-secret\n").unwrap();
    let extra = format!(
        r#"
[sms]
sender = "vonage"

[sms.vonage]
api_key = "abcd1234"
api_secret_file = "{}"
from = "Acme"
callback = "https://id.acme.example/sms/receipt"
base_url = "{}"

{text}

[notifier]
interval_ms = 50
backoff_ms = 300
max_backoff_ms = 300
max_attempts = 4
"#,
        secret_file.display(),
        vonage.base_url
    );
    let server = Server::start(
        BIN,
        &Options {
            config: config(&extra),
            keys: Some(TEST_KEYS.into()),
            ..Options::default()
        },
    );
    (server, secret_file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_reaches_vonage_with_the_right_fields() {
    let vonage = VonageStandIn::start("abcd1234", "vonage-secret").await;
    let (s, secret) = server(&vonage, "[sms.text]\napp_name = \"Acme\"\n");
    add_sending(&s, "alice", "+41791234567").await;
    assert_eq!(settle(|| vonage.requests().len(), 1).await, 1);
    let form = &vonage.requests()[0];
    assert_eq!(form["to"], "41791234567");
    assert_eq!(form["from"], "Acme");
    assert_eq!(form["type"], "text");
    assert_eq!(form["callback"], "https://id.acme.example/sms/receipt");
    let ttl: i64 = form["ttl"].parse().unwrap();
    assert!((250_000..=300_000).contains(&ttl), "{ttl}");
    assert!(
        form["text"].starts_with("Your Acme code is "),
        "{}",
        form["text"]
    );
    let _ = std::fs::remove_file(secret);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ucs2_text_is_sent_as_unicode_a_final_status_once_and_a_throttled_one_again() {
    let vonage = VonageStandIn::start("abcd1234", "vonage-secret").await;
    let (s, secret) = server(
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
    let _ = std::fs::remove_file(secret);
}
