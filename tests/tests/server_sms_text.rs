//! The SMS's text end to end, against the real server binary: the template of the user's
//! language (from the directory), the minutes left, and the WebOTP line last, as the webhook
//! receives them; and a template that cannot fit one SMS refused at start-up.

use std::time::Duration;

use otp_sms_tests::net::WebhookReceiver;
use otp_sms_tests::server::{add_sending, configured_server, refused_at_start, webhook_sms, HANS};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

const TEXT: &str = r#"
[sms.text]
app_name = "Acme"
webotp_domain = "id.acme.example"
templates = { de = "Ihr {app}-Code: {code}. Gültig {minutes} Min." }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_text_is_in_the_users_language_and_ends_with_the_webotp_line() {
    let receiver = WebhookReceiver::start().await;
    let extra = format!(
        "{HANS}{}{TEXT}[notifier]\ninterval_ms = 50\n",
        webhook_sms(&receiver.url, "")
    );
    let s = configured_server(BIN, &extra, None);
    add_sending(&s, "hans", "+41791234567").await;
    add_sending(&s, "alice", "+41791234568").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.received().len() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "no SMS arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = receiver.received();
    let to = |number: &str| {
        received
            .iter()
            .find(|b| b["phone"] == number)
            .unwrap_or_else(|| panic!("no SMS to {number}"))
            .clone()
    };
    // Hans prefers de-CH: the German template (by its language), 5 minutes left.
    let hans = to("+41791234567");
    let code = hans["code"].as_str().unwrap();
    assert_eq!(hans["locale"], "de-CH");
    assert_eq!(
        hans["text"],
        format!("Ihr Acme-Code: {code}. Gültig 5 Min.\n\n@id.acme.example #{code}")
    );
    // Alice has no language: the default template.
    let alice = to("+41791234568");
    let code = alice["code"].as_str().unwrap();
    assert!(alice.get("locale").is_none(), "{alice}");
    assert_eq!(
        alice["text"],
        format!("Your Acme code is {code}. It expires in 5 minutes.\n\n@id.acme.example #{code}")
    );
}

#[test]
fn a_template_longer_than_one_sms_or_without_the_code_stops_the_start() {
    for text in [
        format!("[sms.text]\ndefault_template = \"{{code}} {}\"\n", "x".repeat(170)),
        "[sms.text]\ntemplates = { pl = \"Kod {code} jest ważny przez {minutes} minut, zachowaj go dla siebie i nie udostępniaj nikomu.\" }\n".to_owned(),
        "[sms.text]\ndefault_template = \"no code at all\"\n".to_owned(),
    ] {
        let output = refused_at_start(BIN, &text);
        assert!(output.contains("[sms.text]"), "{output}");
    }
}
