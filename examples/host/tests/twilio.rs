//! The host sends its codes through Twilio with the library crates alone (core, a store,
//! providers; no server crate): against the Twilio stand-in, the admin adds Alice's phone, the
//! notifier hands the code to "Twilio", and Alice verifies it with the code the SMS carried.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use otp_sms_core::{spawn_notifier, Event, EventStore, NotifierSettings};
use otp_sms_example_host::{app, sender, service, CountingStore, Directory, TwilioSettings};
use otp_sms_testkit::stand_ins::TwilioStandIn;
use serde_json::{json, Value};
use tower::ServiceExt;

const ACCOUNT: &str = "AC00000000000000000000000000000001";
const TOKEN: &str = "the-auth-token";

async fn call(app: &axum::Router, uri: &str, session: &str, body: Value) -> (StatusCode, Value) {
    let request = Request::post(uri)
        .header("cookie", format!("session={session}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

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
        "/otp/resources/v3alpha/users/alice/otp_sms",
        "root-session",
        json!({"number": "+41791234567", "sendCode": {}}),
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
    let (status, _) = call(&app, &verify, "alice-session", json!({"code": wrong})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, verified) = call(&app, &verify, "alice-session", json!({"code": code})).await;
    assert_eq!(status, StatusCode::OK, "{verified}");
    notifier.shutdown().await;
}
