//! The host sends its codes through Twilio with the library crates alone (core, a store,
//! providers; no server crate): against the Twilio stand-in, the admin adds Alice's phone, the
//! notifier hands the code to "Twilio", and Alice verifies it with the code the SMS carried.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::call;
use otp_sms_core::{spawn_notifier, Event, EventStore, NotifierSettings};
use otp_sms_example_host::{app, sender, service, CountingStore, Directory, TwilioSettings};
use otp_sms_testkit::stand_ins::TwilioStandIn;
use serde_json::json;

const ACCOUNT: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "the-auth-token";

#[tokio::test]
async fn a_code_sent_through_twilio_verifies_the_phone() {
    let twilio = TwilioStandIn::start(ACCOUNT, TOKEN).await;
    let sender = sender(Some(TwilioSettings {
        account_sid: ACCOUNT.into(),
        auth_token: TOKEN.into(),
        from: "+15005550006".into(),
        base_url: Some(twilio.base_url.clone()),
    }))
    .unwrap();
    let store: Arc<dyn EventStore<Event>> =
        Arc::new(CountingStore::new(otp_sms_memory::MemoryStore::new()));
    let directory = Arc::new(Directory::demo());
    let service = service(store.clone(), directory.clone());
    let settings = NotifierSettings {
        interval: Duration::from_millis(20),
        ..NotifierSettings::default()
    };
    let notifier = spawn_notifier(service.clone(), sender, settings);
    let app = app(service, store, directory);

    let (status, added) = call(
        &app,
        "POST",
        "/otp/resources/v3alpha/users/alice/otp_sms",
        Some("root-session"),
        Some(json!({"number": "+41791234567", "sendCode": {}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{added}");
    let id = added["otpSmsId"].as_str().unwrap().to_owned();

    // The notifier hands the code to Twilio: one authenticated form to the account's
    // Messages.json, to Alice's number, from the host's.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let request = loop {
        if let Some(r) = twilio.requests().into_iter().next() {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no SMS reached Twilio"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(request.account, ACCOUNT);
    assert_eq!(request.form["To"], "+41791234567");
    assert_eq!(request.form["From"], "+15005550006");
    let body = &request.form["Body"];
    assert!(body.contains("Acme"), "{body}");
    // The code: the text's first run of six or more digits.
    let code = body
        .split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() >= 6)
        .unwrap_or_else(|| panic!("no code in {body}"))
        .to_owned();

    // A wrong code is refused; the code the SMS carried verifies the phone.
    let verify = format!("/otp/resources/v3alpha/users/alice/otp_sms/{id}/_verify");
    let wrong: String = code
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let (status, _) = call(
        &app,
        "POST",
        &verify,
        Some("alice-session"),
        Some(json!({"code": wrong})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, verified) = call(
        &app,
        "POST",
        &verify,
        Some("alice-session"),
        Some(json!({"code": code})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{verified}");
    notifier.shutdown().await;
}
