//! What the library counts, through the [`metrics`] facade: nothing is recorded until the host
//! installs a recorder (the server installs a Prometheus exporter), so an embedding host picks
//! its own exporter or none, and the domain stays free of I/O.
//!
//! Each name below is a constant; the Prometheus exposition adds `_total` to counters' names
//! where it is missing and the `_bucket`/`_sum`/`_count` series to histograms. Labels are
//! small fixed sets (never a user, a number or an instance), so no series grows with traffic.
//!
//! The command loop reports each command once, when it ends; the
//! delivery pass once per pass; refusals where the guard records them; the store's appends
//! and the stream cache where the loop calls them.
//!
//! What every command reports goes through one set of handles per service: registered once,
//! with the recorder in force at the service's first command, and then incremented without a
//! look-up by name and labels. Install the recorder at start-up, before the service serves
//! (a recorder installed after a service's first command is not seen by that service). The
//! rare reports (refusals, delivery passes, the outbox gauges) are looked up when they happen.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram};

use crate::aggregate::Command;
use crate::error::{Error, Precondition};
use crate::event::{Delivery, Event};
use crate::scope::Scope;

/// Counter: codes issued, by `delivery` (`sms`, `return`, `test`).
pub const CODES_ISSUED: &str = "otp_sms_codes_issued_total";
/// Counter: verifications, by `outcome` (`verified`, `wrong_code`, `expired`, `burnt`,
/// `locked`).
pub const VERIFICATIONS: &str = "otp_sms_verifications_total";
/// Counter: sign-in checks, by `outcome` (`signed_in`, `wrong_code`, `expired`, `burnt`,
/// `locked`, `used`).
pub const SIGN_IN_CHECKS: &str = "otp_sms_sign_in_checks_total";
/// Counter: codes an abuse rule refused, by `scope` (the configuration's key) and `silent`.
pub const BUDGET_REFUSALS: &str = "otp_sms_budget_refusals_total";
/// Counter: SMS handed over to the sender.
pub const SMS_HANDED_OVER: &str = "otp_sms_sms_handed_over_total";
/// Counter: SMS given up on (`delivery failed` recorded).
pub const SMS_FAILED: &str = "otp_sms_sms_failed_total";
/// Counter: send attempts that failed and wait for another try.
pub const SMS_DEFERRED: &str = "otp_sms_sms_deferred_total";
/// Counter: outbox messages deleted unsent (the code expired, was replaced or was used).
pub const SMS_DROPPED: &str = "otp_sms_sms_dropped_total";
/// Gauge: outbox messages waiting (set by [`crate::CommandService::outbox_stats`]).
pub const OUTBOX_DEPTH: &str = "otp_sms_outbox_messages";
/// Gauge: age of the oldest outbox message, in seconds (0 when the outbox is empty).
pub const OUTBOX_OLDEST_AGE: &str = "otp_sms_outbox_oldest_age_seconds";
/// Histogram: how long the command loop waited for an append, by `outcome` (`ok`,
/// `conflict`, `unknown`, `error`).
pub const APPEND_DURATION: &str = "otp_sms_append_duration_seconds";
/// Counter: appends refused because the stream moved (optimistic concurrency).
pub const WRITE_CONFLICTS: &str = "otp_sms_write_conflicts_total";
/// Counter: commands run again, by `reason` (`conflict`, `unknown_outcome`).
pub const COMMAND_RETRIES: &str = "otp_sms_command_retries_total";
/// Counter: stream-cache look-ups, by `result` (`hit`, `miss`).
pub const STREAM_CACHE_LOOKUPS: &str = "otp_sms_stream_cache_lookups_total";

/// The verification outcome a verify's result stands for, if it is one of the five: its
/// index in [`VERIFICATION_OUTCOMES`].
fn verification_outcome(result: &Result<impl Sized, Error>) -> Option<usize> {
    match result {
        Ok(_) => Some(0),
        Err(Error::WrongCode) => Some(1),
        Err(Error::FailedPrecondition(Precondition::CodeExpired)) => Some(2),
        Err(Error::FailedPrecondition(Precondition::TooManyAttempts)) => Some(3),
        Err(Error::FailedPrecondition(Precondition::VerificationLocked)) => Some(4),
        Err(_) => None,
    }
}

fn delivery_index(delivery: Delivery) -> usize {
    match delivery {
        Delivery::Send => 0,
        Delivery::Return => 1,
        Delivery::Test => 2,
    }
}

fn delivery_label(delivery: Delivery) -> &'static str {
    match delivery {
        Delivery::Send => "sms",
        Delivery::Return => "return",
        Delivery::Test => "test",
    }
}

/// How a command's committed events issued a code, if they did.
pub(crate) fn issued<'e>(events: impl IntoIterator<Item = &'e Event>) -> Option<Delivery> {
    events.into_iter().find_map(|event| match event {
        Event::CodeAdded(code) => Some(code.delivery),
        Event::ChallengeIssued(challenge) => Some(challenge.delivery),
        _ => None,
    })
}

/// A code an abuse rule refused.
pub(crate) fn refused(scope: Scope, silent: bool) {
    metrics::counter!(
        BUDGET_REFUSALS,
        "scope" => scope.key(),
        "silent" => if silent { "true" } else { "false" }
    )
    .increment(1);
}

/// Append outcomes, in the order of [`AppendOutcome`].
const APPEND_OUTCOMES: [&str; 4] = ["ok", "conflict", "unknown", "error"];
/// The outcome a sign-in check's result stands for, if it is one of the six: its index in
/// [`SIGN_IN_OUTCOMES`].
fn sign_in_outcome(result: &Result<impl Sized, Error>) -> Option<usize> {
    match result {
        Err(Error::FailedPrecondition(Precondition::ChallengeUsed)) => Some(5),
        // The others as a verification's, by the same index.
        other => verification_outcome(other),
    }
}

/// Sign-in check outcomes, in the order of [`Handles::sign_in_checks`].
const SIGN_IN_OUTCOMES: [&str; 6] = [
    "signed_in",
    "wrong_code",
    "expired",
    "burnt",
    "locked",
    "used",
];
/// Verification outcomes, in the order of [`Handles::verifications`].
const VERIFICATION_OUTCOMES: [&str; 5] = ["verified", "wrong_code", "expired", "burnt", "locked"];
/// Code deliveries, in the order of [`Handles::codes_issued`].
const DELIVERIES: [Delivery; 3] = [Delivery::Send, Delivery::Return, Delivery::Test];

/// How an append the command loop waited for ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppendOutcome {
    Ok = 0,
    Conflict = 1,
    Unknown = 2,
    Error = 3,
}

/// Why a command runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    Conflict = 0,
    UnknownOutcome = 1,
}

/// Retry reasons, in the order of [`Retry`].
const RETRY_REASONS: [&str; 2] = ["conflict", "unknown_outcome"];

/// The handles of what every command reports, registered at a service's first command and
/// shared by its clones.
#[derive(Debug, Default)]
pub(crate) struct Instruments(OnceLock<Handles>);

/// Every series the command loop writes, one handle each (the label sets are fixed).
#[derive(Debug)]
struct Handles {
    verifications: [Counter; 5],
    sign_in_checks: [Counter; 6],
    codes_issued: [Counter; 3],
    append: [Histogram; 4],
    write_conflicts: Counter,
    retries: [Counter; 2],
    cache_hit: Counter,
    cache_miss: Counter,
}

impl Handles {
    fn register() -> Self {
        Self {
            verifications: VERIFICATION_OUTCOMES
                .map(|outcome| metrics::counter!(VERIFICATIONS, "outcome" => outcome)),
            sign_in_checks: SIGN_IN_OUTCOMES
                .map(|outcome| metrics::counter!(SIGN_IN_CHECKS, "outcome" => outcome)),
            codes_issued: DELIVERIES.map(
                |delivery| metrics::counter!(CODES_ISSUED, "delivery" => delivery_label(delivery)),
            ),
            append: APPEND_OUTCOMES
                .map(|outcome| metrics::histogram!(APPEND_DURATION, "outcome" => outcome)),
            write_conflicts: metrics::counter!(WRITE_CONFLICTS),
            retries: RETRY_REASONS
                .map(|reason| metrics::counter!(COMMAND_RETRIES, "reason" => reason)),
            cache_hit: metrics::counter!(STREAM_CACHE_LOOKUPS, "result" => "hit"),
            cache_miss: metrics::counter!(STREAM_CACHE_LOOKUPS, "result" => "miss"),
        }
    }
}

impl Instruments {
    fn handles(&self) -> &Handles {
        self.0.get_or_init(Handles::register)
    }

    /// The one report of a command, when the command loop ends it: `issued` is how its
    /// committed events issued a code, if they did.
    pub(crate) fn command_finished<T>(
        &self,
        command: &Command,
        result: &Result<T, Error>,
        issued: Option<Delivery>,
    ) {
        let handles = self.handles();
        match command {
            Command::Verify { .. } => {
                if let Some(outcome) = verification_outcome(result) {
                    handles.verifications[outcome].increment(1);
                }
            }
            Command::CheckChallenge { .. } => {
                if let Some(outcome) = sign_in_outcome(result) {
                    handles.sign_in_checks[outcome].increment(1);
                }
            }
            _ => {}
        }
        if let Some(delivery) = issued {
            handles.codes_issued[delivery_index(delivery)].increment(1);
        }
    }

    /// One append the command loop waited for.
    pub(crate) fn append(&self, took: Duration, outcome: AppendOutcome) {
        let handles = self.handles();
        handles.append[outcome as usize].record(took.as_secs_f64());
        if outcome == AppendOutcome::Conflict {
            handles.write_conflicts.increment(1);
        }
    }

    /// A command run again.
    pub(crate) fn retry(&self, reason: Retry) {
        self.handles().retries[reason as usize].increment(1);
    }

    /// A stream-cache look-up.
    pub(crate) fn stream_cache(&self, hit: bool) {
        let handles = self.handles();
        if hit {
            handles.cache_hit.increment(1);
        } else {
            handles.cache_miss.increment(1);
        }
    }
}

/// One pass of the notifier: SMS handed over, given up on, deferred and dropped. (Counts, not
/// the service's report type: the metrics sit below the service and import nothing of it.)
pub(crate) fn delivery_pass(sent: usize, undeliverable: usize, deferred: usize, dropped: usize) {
    let count = |n: usize| n as u64;
    metrics::counter!(SMS_HANDED_OVER).increment(count(sent));
    metrics::counter!(SMS_FAILED).increment(count(undeliverable));
    metrics::counter!(SMS_DEFERRED).increment(count(deferred));
    metrics::counter!(SMS_DROPPED).increment(count(dropped));
}

/// The outbox as the store reports it, at `age` for its oldest message.
pub(crate) fn outbox(depth: u64, oldest_age: Duration) {
    metrics::gauge!(OUTBOX_DEPTH).set(depth as f64);
    metrics::gauge!(OUTBOX_OLDEST_AGE).set(oldest_age.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};

    use metrics::{
        CounterFn, Gauge, GaugeFn, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString,
        Unit,
    };

    /// What a series received: `name{label=value,...}` and the increments or samples.
    type Log = Arc<Mutex<Vec<(String, f64)>>>;

    /// One registered series, writing to the log under its key.
    struct Series {
        key: String,
        log: Log,
    }

    impl CounterFn for Series {
        fn increment(&self, value: u64) {
            self.log
                .lock()
                .unwrap()
                .push((self.key.clone(), value as f64));
        }
        fn absolute(&self, _: u64) {}
    }

    impl HistogramFn for Series {
        fn record(&self, value: f64) {
            self.log.lock().unwrap().push((self.key.clone(), value));
        }
    }

    impl GaugeFn for Series {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, _: f64) {}
    }

    /// A recorder that logs every increment and sample with its series' name and labels.
    #[derive(Default)]
    struct Logging {
        log: Log,
        registered: Mutex<usize>,
    }

    impl Logging {
        fn series(&self, key: &Key) -> Arc<Series> {
            *self.registered.lock().unwrap() += 1;
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            Arc::new(Series {
                key: format!("{}{{{}}}", key.name(), labels.join(",")),
                log: Arc::clone(&self.log),
            })
        }
    }

    impl Recorder for Logging {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.series(key))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(self.series(key))
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.series(key))
        }
    }

    /// Given a recorder in force at the first report, every report lands on its own series
    /// (the handles' order matches the labels'), and the handles are registered once: later
    /// reports, even with the recorder gone, go to the same series.
    #[test]
    fn each_report_lands_on_its_own_series_registered_once() {
        let recorder = Logging::default();
        let instruments = Instruments::default();
        let verify = Command::Verify {
            code: crate::code::VerificationCode::from_input(String::from("123456")).unwrap(),
        };
        metrics::with_local_recorder(&recorder, || {
            instruments.command_finished(&verify, &Err::<(), _>(Error::WrongCode), None);
        });
        let registered = *recorder.registered.lock().unwrap();
        assert_eq!(registered, 5 + 6 + 3 + 4 + 1 + 2 + 2);
        // Outside the recorder's scope: the handles registered with it still record.
        instruments.command_finished(
            &verify,
            &Err::<(), _>(Error::FailedPrecondition(Precondition::VerificationLocked)),
            Some(Delivery::Test),
        );
        instruments.append(Duration::from_millis(2), AppendOutcome::Conflict);
        instruments.append(Duration::from_millis(1), AppendOutcome::Unknown);
        instruments.retry(Retry::UnknownOutcome);
        instruments.stream_cache(false);
        let check = Command::CheckChallenge {
            code: crate::code::VerificationCode::from_input(String::from("123456")).unwrap(),
            binding: crate::binding::Binding::parse("binding", "s")
                .unwrap()
                .digest(),
        };
        instruments.command_finished(
            &check,
            &Err::<(), _>(Error::FailedPrecondition(Precondition::ChallengeUsed)),
            None,
        );
        instruments.command_finished(&check, &Ok::<(), Error>(()), None);
        assert_eq!(*recorder.registered.lock().unwrap(), registered);
        let log = recorder.log.lock().unwrap().clone();
        assert_eq!(
            log,
            [
                (format!("{VERIFICATIONS}{{outcome=wrong_code}}"), 1.0),
                (format!("{VERIFICATIONS}{{outcome=locked}}"), 1.0),
                (format!("{CODES_ISSUED}{{delivery=test}}"), 1.0),
                (format!("{APPEND_DURATION}{{outcome=conflict}}"), 0.002),
                (format!("{WRITE_CONFLICTS}{{}}"), 1.0),
                (format!("{APPEND_DURATION}{{outcome=unknown}}"), 0.001),
                (format!("{COMMAND_RETRIES}{{reason=unknown_outcome}}"), 1.0),
                (format!("{STREAM_CACHE_LOOKUPS}{{result=miss}}"), 1.0),
                (format!("{SIGN_IN_CHECKS}{{outcome=used}}"), 1.0),
                (format!("{SIGN_IN_CHECKS}{{outcome=signed_in}}"), 1.0),
            ]
        );
    }

    #[test]
    fn every_delivery_counts_under_its_own_label() {
        for delivery in DELIVERIES {
            assert_eq!(DELIVERIES[delivery_index(delivery)], delivery);
        }
        let labels = DELIVERIES.map(delivery_label);
        assert_eq!(labels, ["sms", "return", "test"]);
    }

    #[test]
    fn the_five_verification_outcomes_and_nothing_else() {
        let of =
            |e: Error| verification_outcome(&Err::<(), _>(e)).map(|i| VERIFICATION_OUTCOMES[i]);
        assert_eq!(
            verification_outcome(&Ok::<(), Error>(())).map(|i| VERIFICATION_OUTCOMES[i]),
            Some("verified")
        );
        assert_eq!(of(Error::WrongCode), Some("wrong_code"));
        assert_eq!(
            of(Error::FailedPrecondition(Precondition::CodeExpired)),
            Some("expired")
        );
        assert_eq!(
            of(Error::FailedPrecondition(Precondition::TooManyAttempts)),
            Some("burnt")
        );
        assert_eq!(
            of(Error::FailedPrecondition(Precondition::VerificationLocked)),
            Some("locked")
        );
        assert_eq!(of(Error::RegistrationNotFound), None);
        assert_eq!(
            of(Error::FailedPrecondition(Precondition::AlreadyVerified)),
            None
        );
    }
}
