//! Property tests: the aggregate against a reference model with invariants after every step,
//! event serialisation, and the equivalence of the two stores under the command service.
//!
//! 256 cases per property by default; `PROPTEST_CASES=10000 cargo test --release -p
//! otp-sms-tests --test properties` runs 10,000. Failures shrink to the shortest scenario and
//! are kept in `tests/proptest-regressions/properties.txt`, which is committed and replayed
//! first on every run.

use std::collections::HashMap;
use std::time::Duration;

use std::sync::Arc;

use otp_sms_core::{
    CodePolicy, CommandService, Event, EventPayload, ManualClock, Registration, Status,
};
use otp_sms_memory::MemoryStore;
use otp_sms_testkit::driver::{ServiceDriver, INSTANCE};
use otp_sms_testkit::scenario::{
    AddKind, AggregateSim, Aimed, FleetModel, Life, Model, Outcome, Step,
};
use otp_sms_testkit::strategies::{fleet, scenario};
use otp_sms_tests::pg;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};
use tokio::sync::Mutex;

fn policy() -> impl Strategy<Value = CodePolicy> {
    (7usize..=12, 1u32..=6, 1u32..=6).prop_map(|(len, checks, per_hour)| {
        CodePolicy::default()
            .with_length(len)
            .and_then(|p| p.with_max_failed_checks(checks))
            .and_then(|p| p.with_resend_limits(Duration::from_secs(60), per_hour))
            .expect("valid policy")
    })
}

/// Every invariant that must hold after any step of any scenario.
fn check_invariants(sim: &AggregateSim, step: Step, before: &Registration, outcome: &Outcome) {
    // The state rebuilt from all events equals the state applied step by step.
    assert_eq!(Registration::from_events(&sim.events), sim.state);
    // At most one `verified` event.
    let verified = sim
        .events
        .iter()
        .filter(|e| matches!(e, Event::Verified(_)))
        .count();
    assert!(verified <= 1, "{verified} verified events");
    // Nothing follows `removed`.
    if let Some(i) = sim
        .events
        .iter()
        .position(|e| matches!(e, Event::Removed(_)))
    {
        assert_eq!(i, sim.events.len() - 1, "events after removed");
    }
    // Failed checks never exceed the limit for one code.
    let mut failures: HashMap<u32, u32> = HashMap::new();
    for e in &sim.events {
        if let Event::CheckFailed(c) = e {
            *failures.entry(c.number).or_default() += 1;
        }
    }
    let max = sim.policy.max_failed_checks();
    assert!(failures.values().all(|n| *n <= max), "{failures:?} > {max}");
    // A sign-in challenge succeeds at most once, takes at most the policy's wrong codes, and
    // nothing checks it after it closed (succeeded, burnt or expired).
    let mut closed: HashMap<u32, &str> = HashMap::new();
    let mut wrong: HashMap<u32, u32> = HashMap::new();
    for e in &sim.events {
        let (number, closes) = match e {
            Event::ChallengeSucceeded(c) => (c.number, Some("succeeded")),
            Event::ChallengeBurnt(c) => (c.number, Some("burnt")),
            Event::ChallengeExpired(c) => (c.number, Some("expired")),
            Event::ChallengeCheckFailed(c) => match c.number {
                Some(n) => {
                    *wrong.entry(n).or_default() += 1;
                    (n, None)
                }
                None => continue,
            },
            _ => continue,
        };
        if let Some(how) = closed.get(&number) {
            panic!("challenge {number} checked after it {how}: {e:?}");
        }
        if let Some(how) = closes {
            closed.insert(number, how);
        }
    }
    assert!(wrong.values().all(|n| *n <= max), "{wrong:?} > {max}");
    // A verified registration never accepts another verify.
    if before.status == Status::Verified
        && matches!(
            step,
            Step::VerifyRight | Step::VerifyWrong | Step::VerifyOdd(_)
        )
    {
        assert!(outcome.events.is_empty() && outcome.error.is_some());
    }
}

/// No event (Debug or JSON) or error carries a plain code.
fn check_no_code_leaks(sim: &AggregateSim, error: Option<&otp_sms_core::Error>) {
    let mut texts: Vec<String> = sim
        .events
        .iter()
        .flat_map(|e| [format!("{e:?}"), e.to_json().unwrap().to_string()])
        .collect();
    texts.push(format!("{:?}", sim.state));
    if let Some(error) = error {
        texts.push(format!("{error:?}"));
        texts.push(error.to_string());
    }
    for code in &sim.codes {
        for text in &texts {
            assert!(!text.contains(code.as_str()), "code leaked into {text}");
        }
    }
}

proptest! {
    #![proptest_config(Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    })]

    /// The aggregate does exactly what the reference model says, step by step, and every
    /// invariant holds after every step.
    #[test]
    fn aggregate_matches_the_model(policy in policy(), steps in scenario(40)) {
        let mut sim = AggregateSim::new(policy);
        let mut model = Model::new(policy);
        for (i, step) in steps.iter().copied().enumerate() {
            let before = sim.state.clone();
            let expected = model.step(step, sim.now);
            let (actual, error) = sim.step(step);
            prop_assert_eq!(&actual, &expected, "step {} ({:?})", i, step);
            check_invariants(&sim, step, &before, &actual);
            check_no_code_leaks(&sim, error.as_ref());
        }
    }

    /// Every event survives a JSON round trip with its type name and revision.
    #[test]
    fn events_round_trip(policy in policy(), steps in scenario(30)) {
        let mut sim = AggregateSim::new(policy);
        for step in steps {
            sim.step(step);
        }
        for event in &sim.events {
            let json = event.to_json().unwrap();
            let back = Event::from_json(event.event_type(), event.revision(), json).unwrap();
            prop_assert_eq!(&back, event);
        }
    }
}

// ---- recorded fixtures: the compatibility contract for later revisions ----

/// The recorded files, each from a fixed scenario, with the status the events build. A file
/// is never rewritten once committed; a new event type gets a new file.
const FIXTURES: [Fixture; 2] = [
    Fixture {
        file: "events-v1.json",
        scenario: registration_events,
        status: Status::Removed,
    },
    Fixture {
        file: "sign-in-v1.json",
        scenario: sign_in_events,
        status: Status::Verified,
    },
];

/// A recorded file, the scenario that wrote it, and the status its events build.
struct Fixture {
    file: &'static str,
    scenario: fn() -> Vec<Event>,
    status: Status,
}

fn fixture_path(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(file)
}

fn events_of(steps: &[Step]) -> Vec<Event> {
    let mut sim = AggregateSim::new(CodePolicy::default());
    for &step in steps {
        sim.step(step);
    }
    sim.events
}

/// One event of each registration type.
fn registration_events() -> Vec<Event> {
    events_of(&[
        Step::Add(AddKind::Send),
        Step::RecordCodeSent { stale: false },
        Step::VerifyWrong,
        Step::Advance(61),
        Step::Resend(otp_sms_core::Delivery::Return),
        Step::VerifyRight,
        Step::Remove,
    ])
}

/// One event of each sign-in type.
fn sign_in_events() -> Vec<Event> {
    use otp_sms_core::Delivery;
    let on = |b| Step::Challenge {
        binding: b,
        delivery: Delivery::Send,
    };
    events_of(&[
        Step::Add(AddKind::Verified),
        on(0),
        Step::RecordCodeSent { stale: false },
        Step::CheckWrong { on: 0 },
        Step::Check { code_of: 0, on: 1 },
        Step::Check { code_of: 0, on: 0 },
        on(1),
        Step::CheckWrong { on: 1 },
        Step::CheckWrong { on: 1 },
        Step::CheckWrong { on: 1 },
        Step::CheckWrong { on: 1 },
        Step::CheckWrong { on: 1 },
        on(2),
        Step::Advance(301),
        Step::Check { code_of: 2, on: 2 },
    ])
}

/// Events written by revision 1 keep loading, and write back byte for byte the same. Set
/// `OTP_SMS_BLESS_FIXTURES=1` only when adding a fixture file; a committed file is never
/// rewritten (the test refuses to, and says so).
#[test]
fn recorded_events_keep_loading() {
    let mut types = Vec::new();
    for Fixture {
        file,
        scenario,
        status,
    } in FIXTURES
    {
        let path = fixture_path(file);
        if std::env::var_os("OTP_SMS_BLESS_FIXTURES").is_some() && !path.exists() {
            let records: Vec<_> = scenario()
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "type": e.event_type(),
                        "revision": e.revision(),
                        "payload": e.to_json().unwrap(),
                    })
                })
                .collect();
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(
                &path,
                serde_json::to_string_pretty(&records).unwrap() + "\n",
            )
            .unwrap();
        }
        let text = std::fs::read_to_string(&path).expect("fixtures are committed");
        let records: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
        let mut events = Vec::new();
        for record in &records {
            let event_type = record["type"].as_str().unwrap();
            let revision = record["revision"].as_u64().unwrap() as u16;
            let event = Event::from_json(event_type, revision, record["payload"].clone())
                .unwrap_or_else(|e| {
                    panic!("fixture {event_type} r{revision} no longer loads: {e}")
                });
            assert_eq!(event.to_json().unwrap(), record["payload"], "{event_type}");
            types.push(event_type.to_owned());
            events.push(event);
        }
        // And the state they build is the one they built when recorded.
        assert_eq!(Registration::from_events(&events).status, status, "{file}");
    }
    for t in Event::TYPES {
        assert!(types.iter().any(|s| s == t), "no fixture for {t}");
    }
}

// ---- store equivalence ----

/// One scenario through the command service (the published driver); returns each step's
/// outcome with what the notifier recorded after it, and the stream, normalised (event type,
/// sequence, payload without ids, hashes and times).
async fn run_on(
    driver: &mut ServiceDriver,
    steps: &[Step],
) -> (
    Vec<(Outcome, Vec<String>)>,
    Vec<(String, u64, serde_json::Value)>,
) {
    let mut outcomes = Vec::new();
    for &step in steps {
        let ran = driver.run_step(step).await;
        outcomes.push((ran.outcome, ran.notified));
    }
    let stream = match driver.registration(0, 0) {
        Some(r) => driver
            .store()
            .read_stream(&CommandService::stream_id(driver.instance(), r))
            .await
            .unwrap(),
        None => Vec::new(),
    };
    let normalised = stream
        .iter()
        .map(|e| {
            let mut payload = e.event.to_json().unwrap();
            if let Some(obj) = payload.as_object_mut() {
                for key in ["issuedAt", "expiresAt", "checkedAt"] {
                    if obj.contains_key(key) {
                        obj.insert(key.into(), "<time>".into());
                    }
                }
                if let Some(hash) = obj.get_mut("hash").and_then(|h| h.as_object_mut()) {
                    hash.insert("mac".into(), "<mac>".into());
                }
            }
            assert_eq!(e.stream.instance.as_str(), INSTANCE);
            (e.event.event_type().to_owned(), e.sequence, payload)
        })
        .collect();
    (outcomes, normalised)
}

/// The same random scenario through the command service on the in-memory store, on
/// PostgreSQL and on SQLite gives the same outcomes and the same stream.
#[test]
fn stores_are_equivalent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (memory, postgres, pg_store, sqlite, _sqlite_dir) = rt.block_on(async {
        let clock = Arc::new(ManualClock::new(start()));
        let memory = ServiceDriver::new(Arc::new(MemoryStore::with_clock(clock.clone())), clock, 1);
        let pg_store = Arc::new(pg::fresh_store::<Event>().await);
        let postgres = ServiceDriver::new(pg_store.clone(), Arc::new(ManualClock::new(start())), 1);
        let (database, dir) = otp_sms_sqlite::testing::fresh_database().await;
        let sqlite = ServiceDriver::new(
            Arc::new(otp_sms_sqlite::SqliteStore::<Event>::new(database)),
            Arc::new(ManualClock::new(start())),
            1,
        );
        (
            Mutex::new(memory),
            Mutex::new(postgres),
            pg_store,
            Mutex::new(sqlite),
            dir,
        )
    });
    let mut runner = TestRunner::new(Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        ..Config::default()
    });
    let result = runner.run(&scenario(15), |steps| {
        let (on_memory, on_postgres, on_sqlite) = rt.block_on(async {
            (
                run_on(&mut *memory.lock().await, &steps).await,
                run_on(&mut *postgres.lock().await, &steps).await,
                run_on(&mut *sqlite.lock().await, &steps).await,
            )
        });
        prop_assert_eq!(&on_memory.0, &on_postgres.0, "outcomes differ (PostgreSQL)");
        prop_assert_eq!(&on_memory.1, &on_postgres.1, "streams differ (PostgreSQL)");
        prop_assert_eq!(&on_memory.0, &on_sqlite.0, "outcomes differ (SQLite)");
        prop_assert_eq!(&on_memory.1, &on_sqlite.1, "streams differ (SQLite)");
        Ok(())
    });
    rt.block_on(pg::drop_store(&pg_store));
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Microseconds: what PostgreSQL keeps.
fn start() -> chrono::DateTime<chrono::Utc> {
    use chrono::DurationRound;
    chrono::Utc::now()
        .duration_trunc(chrono::Duration::microseconds(1))
        .unwrap()
}

proptest! {
    #![proptest_config(Config {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    })]

    /// Several users with several registrations each, their steps interleaved, through the
    /// command service: every step does what the fleet model says, and the notifier's pass
    /// after a send records what the model says of the code's report.
    #[test]
    fn interleaved_registrations_through_the_service_match_the_model(
        steps in fleet(3, 2, 40)
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let clock = Arc::new(ManualClock::new(start()));
            let mut driver = ServiceDriver::new(
                Arc::new(MemoryStore::with_clock(clock.clone())),
                clock,
                3,
            );
            let mut model = FleetModel::new(driver.code_policy());
            for (i, aimed) in steps.iter().copied().enumerate() {
                let expected = model.step(aimed, driver.now());
                let ran = driver.run(aimed).await;
                prop_assert_eq!(&ran.outcome, &expected, "step {} ({:?})", i, aimed);
                if !ran.notified.is_empty() {
                    let sent = Aimed { step: Step::RecordCodeSent { stale: false }, ..aimed };
                    prop_assert_eq!(model.step(sent, driver.now()).events, ran.notified);
                }
            }
            // The read model of the feed lists what the model says each user holds.
            for user in 0..3 {
                let listed: Vec<(String, bool)> = driver
                    .service()
                    .list_phones(&driver.caller(user), otp_sms_core::UserRequest {
                        user_id: format!("user-{user}"),
                        organization: None,
                    })
                    .await
                    .expect("list")
                    .into_iter()
                    .map(|p| (p.id.to_string(), p.is_verified))
                    .collect();
                let mut expected: Vec<(String, bool)> = model
                    .slots()
                    .filter(|((u, _), m)| *u == user && matches!(m.life(), Life::Unverified | Life::Verified))
                    .filter_map(|((u, r), m)| {
                        driver.registration(u, r).map(|id| (id.to_string(), m.life() == Life::Verified))
                    })
                    .collect();
                let mut listed_sorted = listed.clone();
                listed_sorted.sort();
                expected.sort();
                prop_assert_eq!(listed_sorted, expected, "user {}", user);
            }
            Ok(())
        })?;
    }
}
