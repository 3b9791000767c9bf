//! Routing and failover between SMS providers through the real server binary, against loopback
//! stand-ins of Twilio and Vonage: a message moves to the second provider when the first is
//! down, the first's breaker opens and skips it, a probe after the open period brings it back
//! once it recovered, and a region's own route is followed.

use std::time::Duration;

use otp_sms_testkit::stand_ins::{TwilioAnswer, TwilioStandIn, VonageStandIn};
use otp_sms_tests::server::{add_sending, configured_server, secret_file, settle, Server};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");
const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";

/// A send-code add; the user changes after three, within the registrations a user may hold.
async fn add(s: &Server, number: &str) {
    static ADDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let first = ADDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 3;
    add_sending(s, if first { "alice" } else { "admin" }, number).await;
}

/// Waits until Twilio and Vonage together have seen `n` requests; what each saw.
async fn both(twilio: &TwilioStandIn, vonage: &VonageStandIn, n: usize) -> (usize, usize) {
    settle(|| twilio.requests().len() + vonage.requests().len(), n).await;
    (twilio.requests().len(), vonage.requests().len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_fails_over_while_the_first_provider_is_down_and_returns_after_it_recovers() {
    let twilio = TwilioStandIn::start(ACCOUNT, "twilio-token").await;
    let vonage = VonageStandIn::start("abcd1234", "vonage-secret").await;
    let (twilio_secret, vonage_secret) =
        (secret_file("twilio-token"), secret_file("vonage-secret"));
    let extra = format!(
        r#"
[sms]
sender = "routes"

[sms.routes]
default = ["twilio", "vonage"]
regions = {{ DE = ["vonage"] }}
failure_threshold = 2
open_secs = 2

[sms.twilio]
account_sid = "{ACCOUNT}"
auth_token_file = "{twilio_secret}"
from = "+15005550006"
base_url = "{twilio_url}"

[sms.vonage]
api_key = "abcd1234"
api_secret_file = "{vonage_secret}"
from = "Acme"
base_url = "{vonage_url}"

[notifier]
interval_ms = 50
"#,
        twilio_secret = twilio_secret.display(),
        vonage_secret = vonage_secret.display(),
        twilio_url = twilio.base_url,
        vonage_url = vonage.base_url,
    );
    let s = configured_server(BIN, &extra, None);
    // Twilio is down (503).
    twilio.script(&[TwilioAnswer::Error(503, 20500); 10]);
    add(&s, "+41791234501").await;
    assert_eq!(
        both(&twilio, &vonage, 2).await,
        (1, 1),
        "tried Twilio, then Vonage"
    );
    add(&s, "+41791234502").await;
    assert_eq!(
        both(&twilio, &vonage, 4).await,
        (2, 2),
        "the second failure opens the breaker"
    );
    add(&s, "+41791234503").await;
    assert_eq!(
        both(&twilio, &vonage, 5).await,
        (2, 3),
        "an open breaker skips Twilio"
    );
    // Each message went to exactly one provider that took it: one per number at Vonage.
    let at_vonage: Vec<String> = vonage.requests().iter().map(|f| f["to"].clone()).collect();
    assert_eq!(at_vonage, ["41791234501", "41791234502", "41791234503"]);

    // Twilio recovers; after the open period one probe finds it up, and it takes traffic back.
    twilio.script(&[]);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    add(&s, "+41791234504").await;
    assert_eq!(
        both(&twilio, &vonage, 6).await,
        (3, 3),
        "the probe went to Twilio"
    );
    add(&s, "+41791234505").await;
    assert_eq!(both(&twilio, &vonage, 7).await, (4, 3), "closed again");

    // A German number follows its region's route: Vonage only.
    add(&s, "+4915112345678").await;
    assert_eq!(both(&twilio, &vonage, 8).await, (4, 4));
    assert_eq!(vonage.requests()[3]["to"], "4915112345678");
}

#[test]
fn routes_over_a_sender_that_is_not_a_provider_stop_the_start() {
    let output = otp_sms_tests::server::refused_at_start(
        BIN,
        "[sms]\nsender = \"routes\"\n[sms.routes]\ndefault = [\"log\"]\n",
    );
    assert!(output.contains("`log` is not a provider"), "{output}");
}
