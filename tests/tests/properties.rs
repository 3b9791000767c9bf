//! Property tests: the aggregate against a reference model with invariants after every step,
//! event serialisation, and the equivalence of the two stores under the command service.
//!
//! 256 cases per property by default; `PROPTEST_CASES=10000 cargo test --release -p
//! otp-sms-tests --test properties` runs 10,000. Failures shrink to the shortest scenario and
//! are kept in `tests/proptest-regressions/properties.txt`, which is committed and replayed
//! first on every run.

use std::collections::HashMap;
use std::time::Duration;

use otp_sms_core::{
    AddRequest, CodePolicy, CommandService, Event, EventPayload, PhoneVerification, Registration,
    RegistrationRequest, Status, UserRecord, VerifyRequest,
};
use otp_sms_testkit::scenario::{
    wrong_code, AddKind, AggregateSim, ErrorKind, Model, Outcome, Step,
};
use otp_sms_testkit::strategies::scenario;
use otp_sms_tests::fixture::{Backend, Fixture, INSTANCE};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};

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

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/events-v1.json");

/// One event of each type, from a fixed scenario.
fn fixture_events() -> Vec<Event> {
    let mut sim = AggregateSim::new(CodePolicy::default());
    for step in [
        Step::Add(AddKind::Send),
        Step::RecordCodeSent { stale: false },
        Step::VerifyWrong,
        Step::Advance(61),
        Step::Resend(otp_sms_core::Delivery::Return),
        Step::VerifyRight,
        Step::Remove,
    ] {
        sim.step(step);
    }
    sim.events
}

/// Events written by revision 1 keep loading, and write back byte for byte the same. Set
/// `OTP_SMS_BLESS_FIXTURES=1` only when adding fixtures; never to paper over a change.
#[test]
fn recorded_events_keep_loading() {
    if std::env::var_os("OTP_SMS_BLESS_FIXTURES").is_some() {
        let records: Vec<_> = fixture_events()
            .iter()
            .map(|e| {
                serde_json::json!({
                    "type": e.event_type(),
                    "revision": e.revision(),
                    "payload": e.to_json().unwrap(),
                })
            })
            .collect();
        std::fs::create_dir_all(std::path::Path::new(FIXTURES).parent().unwrap()).unwrap();
        std::fs::write(
            FIXTURES,
            serde_json::to_string_pretty(&records).unwrap() + "\n",
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(FIXTURES).expect("fixtures are committed");
    let records: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut types = Vec::new();
    for record in &records {
        let event_type = record["type"].as_str().unwrap();
        let revision = record["revision"].as_u64().unwrap() as u16;
        let event = Event::from_json(event_type, revision, record["payload"].clone())
            .unwrap_or_else(|e| panic!("fixture {event_type} r{revision} no longer loads: {e}"));
        assert_eq!(event.to_json().unwrap(), record["payload"], "{event_type}");
        types.push(event_type);
    }
    for t in Event::TYPES {
        assert!(types.contains(&t), "no fixture for {t}");
    }
    // And the state they build is the one they built when recorded.
    let events: Vec<Event> = records
        .iter()
        .map(|r| {
            Event::from_json(
                r["type"].as_str().unwrap(),
                r["revision"].as_u64().unwrap() as u16,
                r["payload"].clone(),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(Registration::from_events(&events).status, Status::Removed);
}

// ---- store equivalence ----

/// One scenario through the command service; returns each step's outcome and the stream,
/// normalised (event type, sequence, payload without ids, hashes and times).
async fn run_on(
    f: &Fixture,
    steps: &[Step],
) -> (Vec<Outcome>, Vec<(String, u64, serde_json::Value)>) {
    let caller = Fixture::caller("user-1");
    let user = UserRecord {
        id: otp_sms_core::UserId::parse("id", "user-1").unwrap(),
        organization: otp_sms_core::OrganizationId::parse("org", "org-1").unwrap(),
    };
    let mut registration: Option<otp_sms_core::RegistrationId> = None;
    let mut code = String::from("12345678");
    let mut outcomes = Vec::new();
    let stream_of =
        |r: &otp_sms_core::RegistrationId| CommandService::stream_id(&caller.instance, r);
    for &step in steps {
        let before = match &registration {
            Some(r) => f.store.read_stream(&stream_of(r)).await.unwrap().len(),
            None => 0,
        };
        let target = |r: &Option<otp_sms_core::RegistrationId>| RegistrationRequest {
            user_id: "user-1".into(),
            organization: None,
            registration_id: r.as_ref().map_or("none".into(), |r| r.to_string()),
        };
        let result: Result<(), otp_sms_core::Error> = match step {
            Step::Advance(s) => {
                f.clock.advance(chrono::Duration::seconds(i64::from(s)));
                Ok(())
            }
            Step::Add(kind) => {
                let verification = match kind {
                    AddKind::Send => PhoneVerification::SendCode,
                    AddKind::Return => PhoneVerification::ReturnCode,
                    AddKind::Verified => PhoneVerification::IsVerified(true),
                };
                // Only holders of user.write may vouch for a number.
                let adder = match kind {
                    AddKind::Verified => Fixture::caller("admin"),
                    _ => caller.clone(),
                };
                let added = f
                    .service
                    .add(
                        &adder,
                        AddRequest {
                            user_id: "user-1".into(),
                            organization: None,
                            phone: "+41791234567".into(),
                            verification,
                        },
                    )
                    .await
                    .unwrap();
                if let Some(c) = &added.verification_code {
                    code = c.expose().to_owned();
                }
                registration = Some(added.registration_id);
                Ok(())
            }
            Step::VerifyRight | Step::VerifyWrong | Step::VerifyOdd(_) => {
                let text = match step {
                    Step::VerifyRight => code.clone(),
                    Step::VerifyWrong => wrong_code(&code),
                    Step::VerifyOdd(odd) => odd.text(),
                    _ => unreachable!(),
                };
                let t = target(&registration);
                f.service
                    .verify(
                        &caller,
                        VerifyRequest {
                            user_id: t.user_id,
                            organization: None,
                            registration_id: t.registration_id,
                            code: text,
                        },
                    )
                    .await
                    .map(drop)
            }
            Step::Resend(delivery) => f
                .service
                .resend_code(&caller, target(&registration), delivery)
                .await
                .map(|r| {
                    if let Some(c) = r.verification_code {
                        code = c.expose().to_owned();
                    }
                }),
            Step::RecordCodeSent { stale } => {
                let r = registration.clone().unwrap();
                let history = f.store.read_stream(&stream_of(&r)).await.unwrap();
                let state = Registration::from_events(history.iter().map(|e| &e.event));
                let number = if stale {
                    state.codes_issued.saturating_sub(1)
                } else {
                    state.codes_issued
                };
                f.service
                    .record_code_sent(&caller.instance, &user, &r, number)
                    .await
                    .map(drop)
            }
            Step::Remove => f
                .service
                .remove(&caller, target(&registration))
                .await
                .map(drop),
        };
        // A code to send goes out at once, so the step after knows it.
        if matches!(
            step,
            Step::Add(AddKind::Send) | Step::Resend(otp_sms_core::Delivery::Send)
        ) && result.is_ok()
        {
            f.service
                .deliver_pending(&*f.sender, 100, Duration::from_secs(60))
                .await
                .unwrap();
            let r = registration.clone().unwrap();
            code = f
                .sender
                .sent()
                .iter()
                .rev()
                .find(|s| s.registration == r)
                .expect("the SMS went out")
                .code
                .expose()
                .to_owned();
        }
        let after = match &registration {
            Some(r) => f.store.read_stream(&stream_of(r)).await.unwrap(),
            None => Vec::new(),
        };
        outcomes.push(Outcome {
            events: after[before..]
                .iter()
                .map(|e| e.event.event_type().to_owned())
                .collect(),
            error: result.err().as_ref().map(ErrorKind::from),
        });
    }
    let stream = match &registration {
        Some(r) => f.store.read_stream(&stream_of(r)).await.unwrap(),
        None => Vec::new(),
    };
    let normalised = stream
        .into_iter()
        .map(|e| {
            let mut payload = e.event.to_json().unwrap();
            if let Some(obj) = payload.as_object_mut() {
                for key in ["issuedAt", "expiresAt"] {
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

/// The same random scenario through the command service on the in-memory store and on
/// PostgreSQL gives the same outcomes and the same stream.
#[test]
fn stores_are_equivalent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (memory, postgres) = rt.block_on(async {
        (
            Fixture::new(Backend::Memory).await,
            Fixture::new(Backend::Postgres).await,
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
        let (on_memory, on_postgres) = rt.block_on(async {
            (
                run_on(&memory, &steps).await,
                run_on(&postgres, &steps).await,
            )
        });
        prop_assert_eq!(&on_memory.0, &on_postgres.0, "outcomes differ");
        prop_assert_eq!(&on_memory.1, &on_postgres.1, "streams differ");
        Ok(())
    });
    rt.block_on(async {
        memory.finish().await;
        postgres.finish().await;
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
