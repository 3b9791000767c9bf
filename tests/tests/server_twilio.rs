//! Twilio through the real server binary, against a loopback stand-in of its Messages API:
//! the form POST with the right fields and authentication, a final error not retried, a
//! throttled answer retried with back-off, and bad credentials kept for retry.

use std::time::Duration;

use otp_sms_testkit::stand_ins::{TwilioAnswer, TwilioStandIn};
use otp_sms_tests::pg;
use otp_sms_tests::server::{
    add_sending, configured_server, refused_at_start, secret_file, settle, SecretFile, Server,
};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "a-twilio-auth-token";
/// The status callback's public URL (as a proxy in front of the server would serve it).
const PUBLIC_CALLBACK: &str = "https://id.acme.example/sms/status/twilio";

/// A server sending through `twilio`, its token read from a file; `secret` is what the file
/// holds.
fn server(twilio: &TwilioStandIn, secret: &str) -> (Server, SecretFile) {
    server_on(twilio, secret, None)
}

/// As [`server`], on PostgreSQL in `schema` when given.
fn server_on(twilio: &TwilioStandIn, secret: &str, schema: Option<&str>) -> (Server, SecretFile) {
    let token_file = secret_file(secret);
    let auth = format!("auth_token_file = \"{}\"", token_file.display());
    (server_with(twilio, &auth, schema), token_file)
}

/// A server sending through `twilio` with these authentication lines in `[sms.twilio]`.
fn server_with(twilio: &TwilioStandIn, auth: &str, schema: Option<&str>) -> Server {
    let extra = format!(
        r#"
[sms]
sender = "twilio"

[sms.twilio]
account_sid = "{ACCOUNT}"
{auth}
from = "+15005550006"
status_callback = "{PUBLIC_CALLBACK}"
base_url = "{}"

[sms.text]
app_name = "Acme"
webotp_domain = "id.acme.example"

[notifier]
interval_ms = 50
backoff_ms = 300
max_backoff_ms = 300
max_attempts = 4
"#,
        twilio.base_url
    );
    configured_server(BIN, &extra, schema)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_reaches_twilio_as_a_form_post_with_the_right_fields() {
    let twilio = TwilioStandIn::start(ACCOUNT, TOKEN).await;
    let (s, _token_file) = server(&twilio, TOKEN);
    add_sending(&s, "alice", "+41791234567").await;
    assert_eq!(
        settle(|| twilio.requests().len(), 1).await,
        1,
        "one hand-over, no repeat"
    );
    let request = &twilio.requests()[0];
    assert_eq!(request.account, ACCOUNT);
    let form = &request.form;
    assert_eq!(form["To"], "+41791234567");
    assert_eq!(form["From"], "+15005550006");
    let callback = &form["StatusCallback"];
    assert!(
        callback.starts_with(&format!("{PUBLIC_CALLBACK}?instance=inst-1&otp_sms_id=")),
        "{callback}"
    );
    let (head, issued) = callback.split_once("&iat=").expect("an issue time");
    assert!(head.ends_with("&n=1"), "{callback}");
    let issued: i64 = issued.parse().expect("Unix seconds");
    assert!(
        (chrono::Utc::now().timestamp() - issued).abs() < 60,
        "{callback}"
    );
    let validity: i64 = form["ValidityPeriod"].parse().unwrap();
    assert!((250..=300).contains(&validity), "{validity}");
    let body = &form["Body"];
    let code = body.rsplit('#').next().unwrap();
    assert_eq!(code.len(), 8, "{body}");
    assert_eq!(
        body,
        &format!("Your Acme code is {code}. It expires in 5 minutes.\n\n@id.acme.example #{code}")
    );
    assert!(!s.output().contains(code), "the code is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_error_is_not_retried_and_a_throttled_one_is() {
    let twilio = TwilioStandIn::start(ACCOUNT, TOKEN).await;
    let (s, _token_file) = server(&twilio, TOKEN);
    // An invalid number (400, error 21211): one attempt, then `delivery failed`.
    twilio.script(&[TwilioAnswer::Error(400, 21211)]);
    add_sending(&s, "alice", "+41791234567").await;
    assert_eq!(
        settle(|| twilio.requests().len(), 1).await,
        1,
        "a final error is not retried"
    );
    // Twilio's message quoted the number; the server's log does not repeat it.
    assert!(
        s.output().contains("Twilio answered 400, error 21211"),
        "{}",
        s.output()
    );
    assert!(!s.output().contains("quoted back"));

    // Throttled twice (429, error 20429), then queued: three attempts, backing off.
    twilio.script(&[
        TwilioAnswer::Error(429, 20429),
        TwilioAnswer::Error(429, 20429),
    ]);
    add_sending(&s, "alice", "+41791234568").await;
    assert_eq!(
        settle(|| twilio.requests().len(), 4).await,
        4,
        "two retries, then the hand-over"
    );
    let requests = twilio.requests();
    let tries: Vec<_> = requests[1..].iter().map(|r| r.at).collect();
    for pair in tries.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(250), "back-off of {gap:?}");
    }
    assert!(requests[1..].iter().all(|r| r.form["To"] == "+41791234568"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_keep_the_message_for_a_retry() {
    let twilio = TwilioStandIn::start(ACCOUNT, TOKEN).await;
    let (s, _token_file) = server(&twilio, "a-wrong-token");
    add_sending(&s, "alice", "+41791234567").await;
    // 401 every time: tried again (the message is not at fault) up to the attempts allowed;
    // a retry first asks Twilio's message list, with the same credentials.
    let n = settle(|| twilio.requests().len() + twilio.list_reads(), 2).await;
    assert!(n >= 2, "{n}");
    assert!(
        s.output().contains("Twilio refused the credentials"),
        "{}",
        s.output()
    );
}

#[test]
fn a_twilio_configuration_without_a_secret_source_stops_the_start() {
    let extra = format!(
        "[sms]\nsender = \"twilio\"\n[sms.twilio]\naccount_sid = \"{ACCOUNT}\"\nfrom = \"+15005550006\"\n"
    );
    let output = refused_at_start(BIN, &extra);
    assert!(
        output.contains("auth_token_file and auth_token_env"),
        "{output}"
    );
}

/// Posts a status report for `callback` (the URL the SMS was sent with) as Twilio would, signed
/// with `token`, or with the signature given.
async fn report(
    s: &Server,
    callback: &str,
    status: &str,
    error: Option<&str>,
    signed_with: Option<&str>,
) -> u16 {
    let mut params = vec![
        ("AccountSid".to_owned(), ACCOUNT.to_owned()),
        (
            "MessageSid".to_owned(),
            "SM00000000000000000000000000000001".to_owned(),
        ),
        ("MessageStatus".to_owned(), status.to_owned()),
        ("To".to_owned(), "+41791234567".to_owned()),
    ];
    if let Some(code) = error {
        params.push(("ErrorCode".to_owned(), code.to_owned()));
    }
    let query = callback.split_once('?').unwrap().1;
    let mut request = reqwest::Client::new()
        .post(s.url(&format!("/sms/status/twilio?{query}")))
        .form(&params);
    if let Some(token) = signed_with {
        request = request.header(
            "x-twilio-signature",
            otp_sms_providers::twilio::signature(token, callback, &params),
        );
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_status_reports_become_events_and_unsigned_ones_change_nothing() {
    let twilio = TwilioStandIn::start(ACCOUNT, TOKEN).await;
    let schema = pg::schema_name();
    let (s, _token_file) = server_on(&twilio, TOKEN, Some(&schema));
    add_sending(&s, "alice", "+41791234567").await;
    add_sending(&s, "alice", "+41791234568").await;
    settle(|| twilio.requests().len(), 2).await;
    let callbacks: Vec<String> = twilio
        .requests()
        .iter()
        .map(|r| r.form["StatusCallback"].clone())
        .collect();
    pg::wait_for_events(&schema, "user.otp_sms.code.sent", 2).await;
    let before = pg::events_in(&schema).await;

    // Unsigned, or signed with another token: refused, nothing recorded.
    assert_eq!(
        report(&s, &callbacks[0], "delivered", None, None).await,
        403
    );
    assert_eq!(
        report(&s, &callbacks[0], "delivered", None, Some("not-the-token")).await,
        403
    );
    assert_eq!(pg::events_in(&schema).await, before);

    // The callback URL carries its issue time, under Twilio's signature: a well-signed report
    // for a URL issued two days ago, or for one without an issue time, is a replay: refused.
    assert!(callbacks[0].contains("&iat="), "{}", callbacks[0]);
    let (without_iat, _) = callbacks[0].split_once("&iat=").unwrap();
    let two_days_ago = chrono::Utc::now().timestamp() - 2 * 24 * 3600;
    let stale = format!("{without_iat}&iat={two_days_ago}");
    for url in [&stale, &without_iat.to_owned()] {
        assert_eq!(
            report(&s, url, "delivered", None, Some(TOKEN)).await,
            403,
            "{url}"
        );
    }
    assert_eq!(pg::events_in(&schema).await, before);

    // Signed: delivered for the first, undelivered (30008) for the second; `sent` ignored.
    assert_eq!(
        report(&s, &callbacks[0], "sent", None, Some(TOKEN)).await,
        204
    );
    assert_eq!(
        report(&s, &callbacks[0], "delivered", None, Some(TOKEN)).await,
        204
    );
    assert_eq!(
        report(&s, &callbacks[0], "delivered", None, Some(TOKEN)).await,
        204
    );
    assert_eq!(
        report(&s, &callbacks[1], "undelivered", Some("30008"), Some(TOKEN)).await,
        204
    );
    let after = pg::events_in(&schema).await;
    let new: Vec<_> = after[before.len()..].to_vec();
    assert_eq!(
        new,
        vec![
            (
                "user.otp_sms.code.delivered".to_owned(),
                serde_json::json!({"number": 1})
            ),
            (
                "user.otp_sms.delivery.failed".to_owned(),
                serde_json::json!({"number": 1, "attempts": 1, "reason": "twilio: undelivered, error 30008"})
            ),
        ],
        "a repeated report adds nothing"
    );
    drop(s);
    pg::drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_api_key_the_status_callbacks_are_checked_with_the_accounts_auth_token() {
    const KEY: &str = "SK0123456789abcdef0123456789abcdef";
    const KEY_SECRET: &str = "an-api-key-secret";
    let twilio = TwilioStandIn::start(KEY, KEY_SECRET).await;
    let (key_file, token_file) = (secret_file(KEY_SECRET), secret_file(TOKEN));
    let auth = format!(
        "api_key_sid = \"{KEY}\"\nauth_token_file = \"{}\"\nstatus_auth_token_file = \"{}\"",
        key_file.display(),
        token_file.display()
    );
    let s = server_with(&twilio, &auth, None);
    add_sending(&s, "alice", "+41791234567").await;
    assert_eq!(settle(|| twilio.requests().len(), 1).await, 1);
    let request = &twilio.requests()[0];
    assert_eq!(
        request.account, ACCOUNT,
        "the key authenticates for the account"
    );
    let callback = request.form["StatusCallback"].clone();
    // The key's secret does not sign callbacks; the account's auth token does.
    assert_eq!(
        report(&s, &callback, "delivered", None, Some(KEY_SECRET)).await,
        403
    );
    assert_eq!(
        report(&s, &callback, "delivered", None, Some(TOKEN)).await,
        204
    );

    // An API key and a status callback without the account's token: no start.
    let output = refused_at_start(
        BIN,
        &format!(
            "[sms]\nsender = \"twilio\"\n[sms.twilio]\naccount_sid = \"{ACCOUNT}\"\napi_key_sid = \"{KEY}\"\nauth_token_file = \"{}\"\nfrom = \"+15005550006\"\nstatus_callback = \"{PUBLIC_CALLBACK}\"\n",
            key_file.display()
        ),
    );
    assert!(output.contains("status_auth_token_file"), "{output}");
}

/// An unsigned report is refused before its body is read (a body announced at 1 MB of which a
/// few bytes come is answered 403 at once, not waited for), and a signed-looking one over
/// 64 KiB is refused unparsed (413).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_bodies_are_bounded_and_unsigned_ones_are_not_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let twilio = TwilioStandIn::start(ACCOUNT, TOKEN).await;
    let (s, _token_file) = server(&twilio, TOKEN);
    let target = s.base_url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&target).await.unwrap();
    stream
        .write_all(
            b"POST /sms/status/twilio?instance=inst-1 HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000\r\n\r\nMessageStatus=",
        )
        .await
        .unwrap();
    let mut answer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut answer))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    assert!(
        answer[..read].starts_with(b"HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&answer[..read])
    );

    let huge = reqwest::Client::new()
        .post(s.url("/sms/status/twilio?instance=inst-1"))
        .header("x-twilio-signature", "c2lnbmVk")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "MessageStatus=delivered&Pad={}",
            "a".repeat(100 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status().as_u16(), 413);
}

/// Given a Twilio API that takes the message at once but answers after 3 s, and a sender that
/// waits 1 s: the first attempt's outcome is unknown. The next attempt asks Twilio's message
/// list first, finds the message there and records the code as sent: one SMS, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_answer_was_lost_is_looked_up_not_sent_again() {
    let twilio = TwilioStandIn::start(ACCOUNT, TOKEN).await;
    twilio.script(&[TwilioAnswer::QueuedAfter(Duration::from_secs(3))]);
    let schema = pg::schema_name();
    let token_file = secret_file(TOKEN);
    let auth = format!(
        "auth_token_file = \"{}\"\ntimeout_ms = 1000",
        token_file.display()
    );
    let s = server_with(&twilio, &auth, Some(&schema));
    add_sending(&s, "alice", "+41791234567").await;
    pg::wait_for_events(&schema, "user.otp_sms.code.sent", 1).await;
    // Past another back-off and a pass or two: still one message handed over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let posts = twilio
        .requests()
        .iter()
        .filter(|r| r.form.contains_key("Body"))
        .count();
    assert_eq!(posts, 1, "one SMS\n{}", s.output());
    assert!(twilio.list_reads() >= 1, "the retry asked first");
    let sent = pg::events_in(&schema)
        .await
        .into_iter()
        .filter(|(kind, _)| kind == "user.otp_sms.code.sent")
        .count();
    assert_eq!(sent, 1);
    drop(s);
    pg::drop_schema(&schema).await;
}
