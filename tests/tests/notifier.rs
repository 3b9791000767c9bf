//! The notifier's pass over the outbox, on both stores: back-off and giving up, refusals,
//! failures that touch only their own message, concurrent sends within the lease; and the
//! notifier task a host spawns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use otp_sms_core::{
    AddRequest, Clock, DeliveryPolicy, Event, PhoneVerification, PortError, Sms, SmsSender,
};
use otp_sms_tests::fixture::{Backend, Fixture};

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        on_both_stores!(@store memory, Memory, $($name),*);
        on_both_stores!(@store postgres, Postgres, $($name),*);
    };
    (@store $module:ident, $backend:ident, $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let f = otp_sms_tests::fixture::Fixture::new(super::Backend::$backend).await;
                    super::$name(&f).await;
                    f.finish().await;
                }
            )*
        }
    };
}

on_both_stores!(
    a_refused_send_records_delivery_failed_and_is_not_retried,
    failed_sends_back_off_and_are_given_up_after_max_attempts,
    a_failing_number_holds_back_no_other,
    sends_run_concurrently_and_end_before_the_lease,
    the_spawned_notifier_sends_and_its_shutdown_lets_the_pass_end,
);

fn quick() -> DeliveryPolicy {
    DeliveryPolicy {
        concurrency: 8,
        max_attempts: 3,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(200),
    }
}

async fn add_sending(f: &Fixture, user: &str, phone: &str) -> String {
    f.service
        .add(
            &Fixture::caller(user),
            AddRequest {
                user_id: user.into(),
                organization: None,
                phone: phone.into(),
                verification: PhoneVerification::SendCode,
            },
        )
        .await
        .expect("add")
        .registration_id
        .into_string()
}

fn failures(feed: &[Arc<otp_sms_core::RecordedEvent<Event>>]) -> Vec<otp_sms_core::DeliveryFailed> {
    feed.iter()
        .filter_map(|r| match &r.event {
            Event::DeliveryFailed(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Given a provider that refuses the number for good, then the first attempt records
/// `delivery failed` (with the provider's reason, no code), deletes the message, and no
/// `code sent` follows.
async fn a_refused_send_records_delivery_failed_and_is_not_retried(f: &Fixture) {
    let service = f.service.clone().with_delivery_policy(quick());
    add_sending(f, "user-1", "+41791234567").await;
    f.sender.set_refusing(true);
    let lease = Duration::from_secs(2);
    let report = service
        .deliver_pending(&*f.sender, 10, lease)
        .await
        .unwrap();
    assert_eq!((report.sent, report.undeliverable), (0, 1), "{report:?}");
    let failed = failures(&f.feed().await);
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].number, failed[0].attempts), (1, 1));
    assert!(failed[0].reason.contains("refused"), "{}", failed[0].reason);
    f.let_lease_run_out(lease).await;
    let report = service
        .deliver_pending(&*f.sender, 10, lease)
        .await
        .unwrap();
    assert_eq!(report, Default::default(), "the message is gone");
    assert_eq!(f.sender.attempts(), 1);
    assert!(!f
        .feed()
        .await
        .iter()
        .any(|r| matches!(r.event, Event::CodeSent(_))));
}

/// Given a provider that is down, then each pass defers the message by a doubling back-off,
/// and the third attempt (the policy's max) records `delivery failed` and drops it.
async fn failed_sends_back_off_and_are_given_up_after_max_attempts(f: &Fixture) {
    let service = f.service.clone().with_delivery_policy(quick());
    add_sending(f, "user-1", "+41791234567").await;
    f.sender.set_failing(true);
    let lease = Duration::from_secs(2);
    let report = service
        .deliver_pending(&*f.sender, 10, lease)
        .await
        .unwrap();
    assert_eq!(report.deferred, 1, "{report:?}");
    // Hidden for 100 ms, then back.
    let report = service
        .deliver_pending(&*f.sender, 10, lease)
        .await
        .unwrap();
    assert_eq!(report, Default::default(), "hidden during its back-off");
    f.let_lease_run_out(Duration::from_millis(100)).await;
    let report = service
        .deliver_pending(&*f.sender, 10, lease)
        .await
        .unwrap();
    assert_eq!(report.deferred, 1, "second attempt: {report:?}");
    f.let_lease_run_out(Duration::from_millis(200)).await;
    let report = service
        .deliver_pending(&*f.sender, 10, lease)
        .await
        .unwrap();
    assert_eq!(
        report.undeliverable, 1,
        "third attempt gives up: {report:?}"
    );
    assert_eq!(f.sender.attempts(), 3);
    let failed = failures(&f.feed().await);
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempts, 3);
    f.let_lease_run_out(lease).await;
    let report = service
        .deliver_pending(&*f.sender, 10, lease)
        .await
        .unwrap();
    assert_eq!(report, Default::default(), "the message is gone");
}

/// Given one number the provider cannot reach and two it can, then the two are sent in the
/// same pass and only the one is deferred.
async fn a_failing_number_holds_back_no_other(f: &Fixture) {
    let service = f.service.clone().with_delivery_policy(quick());
    add_sending(f, "user-1", "+41791234567").await;
    add_sending(f, "user-2", "+41791234568").await;
    add_sending(f, "u1", "+41791234569").await;
    f.sender.fail_for("+41791234567");
    let report = service
        .deliver_pending(&*f.sender, 10, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!((report.sent, report.deferred), (2, 1), "{report:?}");
    let sent: Vec<String> = f
        .sender
        .sent()
        .iter()
        .map(|s| s.phone.as_e164().to_owned())
        .collect();
    assert!(!sent.contains(&"+41791234567".to_owned()));
}

/// A sender that takes its time, and notes the deadline each send was given.
struct SlowSender {
    delay: Duration,
    deadlines: std::sync::Mutex<Vec<chrono::DateTime<chrono::Utc>>>,
}

#[async_trait]
impl SmsSender for SlowSender {
    async fn send(&self, sms: &Sms) -> Result<(), PortError> {
        self.deadlines.lock().unwrap().push(sms.deadline);
        tokio::time::sleep(self.delay).await;
        Ok(())
    }
}

/// Given 8 codes and a sender that takes 300 ms each, then one pass sends all 8 in about
/// 300 ms (not 2.4 s), each with a deadline at least a quarter of the lease before it ends.
async fn sends_run_concurrently_and_end_before_the_lease(f: &Fixture) {
    let service = f.service.clone().with_delivery_policy(quick());
    for i in 0..8 {
        add_sending(f, &format!("u{i}"), &format!("+4179123450{i}")).await;
    }
    let sender = SlowSender {
        delay: Duration::from_millis(300),
        deadlines: Default::default(),
    };
    let lease = Duration::from_secs(8);
    let before = f.clock.now();
    let started = Instant::now();
    let report = service.deliver_pending(&sender, 10, lease).await.unwrap();
    let took = started.elapsed();
    assert_eq!(report.sent, 8, "{report:?}");
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let latest = before + chrono::Duration::seconds(6);
    for deadline in sender.deadlines.lock().unwrap().iter() {
        assert!(*deadline <= latest, "{deadline} after {latest}");
    }
}

/// Given the notifier a host spawns and a sender that takes 400 ms, then a code added is sent
/// without anyone calling a pass, and a shutdown asked for mid-send returns only after that
/// send is recorded as `code sent`: nothing is cut half-way, and no pass follows.
async fn the_spawned_notifier_sends_and_its_shutdown_lets_the_pass_end(f: &Fixture) {
    let sender = Arc::new(SlowSender {
        delay: Duration::from_millis(400),
        deadlines: Default::default(),
    });
    let notifier = otp_sms_core::spawn_notifier(
        f.service.clone(),
        sender.clone(),
        otp_sms_core::NotifierSettings {
            interval: Duration::from_millis(20),
            ..Default::default()
        },
    );
    let registration = add_sending(f, "u1", "+41791234501").await;
    let started = Instant::now();
    while sender.deadlines.lock().unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "nothing sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!notifier.heartbeat().stuck(Instant::now()));
    notifier.shutdown().await;
    let sent = f
        .store
        .read_all(0, 1_000)
        .await
        .unwrap()
        .iter()
        .filter(|r| {
            matches!(&r.event, Event::CodeSent(_)) && *r.stream.aggregate_id == *registration
        })
        .count();
    assert_eq!(
        sent, 1,
        "the pass in progress ended before the shutdown returned"
    );
    // Stopped: a code added now stays unsent.
    add_sending(f, "u2", "+41791234502").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sender.deadlines.lock().unwrap().len(), 1);
}
