//! Sign-in end to end against the real server binary over HTTP/JSON: register, verify,
//! challenge, check; the challenge's SMS reaches the webhook stand-in with the sign-in text of
//! the user's language and the WebOTP line; the sign-in budget stops a loop of challenges
//! (the send budgets, shared with registration codes, are `tests/sign_in.rs`'s and
//! `tests/abuse.rs`'s).

use std::time::Duration;

use otp_sms_tests::net::WebhookReceiver;
use otp_sms_tests::server::{configured_server, webhook_sms, Server, HANS};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

const TEXT: &str = r#"
[sms.text]
app_name = "Acme"
webotp_domain = "id.acme.example"
templates = { de = "Ihr {app}-Code: {code}." }
sign_in_templates = { de = "Ihr {app}-Anmeldecode: {code}." }
"#;

async fn post(s: &Server, path: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let response = reqwest::Client::new()
        .post(s.url(&format!("/resources/v3alpha/users/hans/otp_sms{path}")))
        .bearer_auth("token-hans")
        .json(&body)
        .send()
        .await
        .expect("the call");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, response.json().await.expect("JSON"), headers)
}

/// Waits for the `n`-th SMS the webhook receives; returns it.
async fn nth_sms(receiver: &WebhookReceiver, n: usize) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.received().len() < n {
        assert!(tokio::time::Instant::now() < deadline, "no SMS arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.received()[n - 1].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_verify_challenge_and_check_over_http_with_the_sign_in_text() {
    let receiver = WebhookReceiver::start().await;
    let extra = format!(
        "{HANS}{}{TEXT}[notifier]\ninterval_ms = 50\n",
        webhook_sms(&receiver.url, "")
    );
    let s = configured_server(BIN, &extra, None);

    // Register and verify, the registration's code by SMS.
    let (status, added, _) = post(&s, "", json!({"number": "+41791234567"})).await;
    assert_eq!(status, 200, "{added}");
    let id = added["otpSmsId"].as_str().unwrap().to_owned();
    let sms = nth_sms(&receiver, 1).await;
    let code = sms["code"].as_str().unwrap();
    assert_eq!(
        sms["text"],
        format!("Ihr Acme-Code: {code}.\n\n@id.acme.example #{code}")
    );
    let (status, body, _) = post(&s, &format!("/{id}/_verify"), json!(code)).await;
    assert_eq!(status, 200, "{body}");

    // Sign in: the challenge's SMS has the sign-in text of the user's language.
    let (status, challenged, _) = post(&s, "/_challenge", json!({"binding": "session-1"})).await;
    assert_eq!(status, 200, "{challenged}");
    assert_eq!(challenged["otpSmsId"], json!(id));
    assert_eq!(challenged["challenges"], json!({}), "sent, not returned");
    let sms = nth_sms(&receiver, 2).await;
    let code = sms["code"].as_str().unwrap().to_owned();
    assert_eq!(
        sms["text"],
        format!("Ihr Acme-Anmeldecode: {code}.\n\n@id.acme.example #{code}")
    );
    let check = json!({"binding": "session-1", "otpSms": {"code": code}});
    let (status, checked, _) = post(&s, "/_check", check.clone()).await;
    assert_eq!(status, 200, "{checked}");
    assert_eq!(checked["otpSmsId"], json!(id));
    let (status, replay, _) = post(&s, "/_check", check).await;
    assert_eq!(status, 400, "{replay}");
    assert_eq!(replay["code"], json!(9));

    // A loop of challenges, the codes returned (so that no send budget binds first): the
    // sign-in budget (5 per 10 minutes, whatever the delivery) stops the sixth.
    let returned =
        |i: u32| json!({"binding": format!("session-{i}"), "otpSms": {"returnCode": true}});
    for i in 2..=5 {
        let (status, body, _) = post(&s, "/_challenge", returned(i)).await;
        assert_eq!(status, 200, "challenge {i}: {body}");
    }
    let (status, refused, headers) = post(&s, "/_challenge", returned(6)).await;
    assert_eq!(status, 429, "{refused}");
    assert_eq!(refused["code"], json!(8));
    assert!(
        refused["message"].as_str().unwrap().contains("sign-in"),
        "{refused}"
    );
    assert!(headers.contains_key("retry-after"), "{headers:?}");
}
