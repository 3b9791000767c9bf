//! Stored data read back: event rows as the stores decode them (type, revision, JSON payload,
//! [`EventPayload::from_json`]) and folded into a registration, and outbox messages as the
//! notifier reads them. A corrupted row is a typed error, never a panic.
//!
//! Events input: one row per line, `type revision payload`, e.g.
//! `user.otp_sms.added 1 {"user":"alice","organization":"org-1","phone":"+41791234567"}`.
//! Outbox input: the message's JSON payload.

use std::time::Duration;

use otp_sms_core::{
    Append, Event, EventPayload, EventStore, ExpectedVersion, InstanceId, NewOutboxMessage,
    Registration, StreamId, Uuid,
};
use otp_sms_testkit::doubles::RecordingSender;

use crate::fixture::{runtime, with_fixture};

/// The events target: each row decodes or is refused with a codec error; a decoded event
/// encodes to what decodes to it again; and the decoded rows fold into a registration.
pub fn events(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut decoded = Vec::new();
    for row in text.lines() {
        let mut parts = row.splitn(3, ' ');
        let (Some(event_type), Some(revision), Some(payload)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        // As the stores read a row: the revision column, saturated to the type's width.
        let revision = revision
            .parse::<i64>()
            .map_or(0, |r| u16::try_from(r).unwrap_or(u16::MAX));
        let Ok(json) = serde_json::from_str::<serde_json::Value>(payload) else {
            continue;
        };
        let Ok(event) = Event::from_json(event_type, revision, json) else {
            continue;
        };
        assert_eq!(event.event_type(), event_type, "{row}");
        let encoded = event.to_json().expect("a decoded event encodes");
        let again = Event::from_json(event.event_type(), event.revision(), encoded.clone())
            .unwrap_or_else(|e| panic!("{row}: its encoding {encoded} does not decode: {e}"));
        assert_eq!(again, event, "{row}: encoded as {encoded}");
        decoded.push(event);
    }
    // Recorded events are facts: the fold takes any sequence of them without a panic.
    std::hint::black_box(Registration::from_events(&decoded));
}

/// The outbox target: a message with any payload, delivered by one notifier pass, is sent,
/// dropped or left for later, and the pass never fails or panics.
pub fn outbox(data: &[u8]) {
    let Ok(payload) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    with_fixture(|fixture| {
        runtime().block_on(async {
            let instance = InstanceId::parse("instance", "inst-1").expect("a valid id");
            let stream = StreamId::new(instance, "fuzz", Uuid::new_v4().to_string());
            let message = NewOutboxMessage {
                id: Uuid::new_v4(),
                payload,
            };
            let append =
                Append::new(stream, ExpectedVersion::Any, Vec::new()).with_outbox(vec![message]);
            fixture
                .store
                .append(append)
                .await
                .expect("the memory store appends");
            let sender = RecordingSender::new();
            let report = fixture
                .service
                .deliver_pending(&sender, 10, Duration::from_secs(30))
                .await
                .expect("a delivery pass");
            assert!(sender.sent().len() <= 1, "{report:?}");
            assert_eq!(report.failed, 0, "{report:?}");
        })
    })
}
