//! Sign-in with a verified registration as a specification: given these events, when a
//! challenge or a check under a binding at this time, then these events or this error.

mod given;

use given::*;
use otp_sms_core::*;

const SIGN_IN: &str = "24681357";
const OTHER: &str = "13572468";

fn session(name: &str) -> BindingDigest {
    Binding::parse("binding", name).unwrap().digest()
}

/// Added with code 1 (returned), verified with it.
fn verified() -> Vec<Event> {
    with(added(), [Event::Verified(Verified { code: Some(1) })])
}

fn challenge(on: &str, c: &str) -> Command {
    Command::IssueChallenge {
        code: code(c),
        delivery: Delivery::Send,
        binding: session(on),
    }
}

fn check(on: &str, c: &str) -> Command {
    Command::CheckChallenge {
        code: code(c),
        binding: session(on),
    }
}

/// `events`, then a challenge with code `c` under `on` issued at `at`.
fn challenged(events: Vec<Event>, on: &str, c: &str, at: i64) -> Vec<Event> {
    let issued = given(events.clone()).when(challenge(on, c), t(at));
    with(events, issued.events().to_vec())
}

fn failed(number: Option<u32>, on: &str) -> Event {
    Event::ChallengeCheckFailed(ChallengeCheckFailed {
        number,
        binding: session(on),
    })
}

fn wrong_code(events: Vec<Event>) -> Decision {
    Decision::Rejected {
        events,
        error: Error::WrongCode,
    }
}

// ---- challenge ----

#[test]
fn a_challenge_on_a_verified_registration_issues_a_bound_code_from_the_registrations_count() {
    let decision = given(verified()).when(challenge("s1", SIGN_IN), t(100));
    let [Event::ChallengeIssued(issued)] = decision.events() else {
        panic!("{decision:?}")
    };
    assert_eq!(issued.number, 2, "code 1 was the registration's");
    assert_eq!(issued.binding, session("s1"));
    assert_eq!(issued.issued_at, t(100));
    assert_eq!(issued.expires_at, t(400), "5 minutes by default");
    assert_eq!(issued.delivery, Delivery::Send);
    let binding = CodeBinding {
        registration: &reg(),
        number: 2,
    };
    assert_eq!(
        keys().matches(binding, &code(SIGN_IN), &issued.hash),
        Ok(true)
    );
}

#[test]
fn a_challenge_to_a_test_number_carries_its_fixed_code_and_is_sent_nowhere() {
    let decision = given(verified())
        .on_test_number(OTHER)
        .when(challenge("s1", SIGN_IN), t(100));
    let [Event::ChallengeIssued(issued)] = decision.events() else {
        panic!("{decision:?}")
    };
    assert_eq!(issued.delivery, Delivery::Test);
    let binding = CodeBinding {
        registration: &reg(),
        number: 2,
    };
    assert_eq!(
        keys().matches(binding, &code(OTHER), &issued.hash),
        Ok(true)
    );
}

#[test]
fn a_challenge_needs_a_verified_live_registration_of_the_user_whose_codes_are_not_locked() {
    assert_eq!(
        given(added()).when(challenge("s1", SIGN_IN), t(10)),
        precondition(Precondition::NotVerified)
    );
    let removed = with(verified(), [Event::Removed(Removed {})]);
    for events in [vec![], removed] {
        assert_eq!(
            given(events).when(challenge("s1", SIGN_IN), t(10)),
            rejected(Error::RegistrationNotFound)
        );
    }
    assert_eq!(
        given(verified())
            .for_user("someone-else")
            .when(challenge("s1", SIGN_IN), t(10)),
        rejected(Error::RegistrationNotFound)
    );
    let locked = with(
        verified(),
        [Event::VerificationLocked(VerificationLocked {
            until: t(600),
        })],
    );
    assert_eq!(
        given(locked.clone()).when(challenge("s1", SIGN_IN), t(10)),
        precondition(Precondition::VerificationLocked)
    );
    // The lock ends by itself.
    assert!(given(locked)
        .when(challenge("s1", SIGN_IN), t(600))
        .error()
        .is_none());
}

// ---- check ----

#[test]
fn the_right_code_under_the_challenges_binding_succeeds_once_and_records_when() {
    let events = challenged(verified(), "s1", SIGN_IN, 100);
    let success = Event::ChallengeSucceeded(ChallengeSucceeded {
        number: 2,
        binding: session("s1"),
        checked_at: t(130),
    });
    assert_eq!(
        given(events.clone()).when(check("s1", SIGN_IN), t(130)),
        Decision::Accepted(vec![success.clone()])
    );
    let after = with(events, [success]);
    assert_eq!(Registration::from_events(&after).last_sign_in, Some(t(130)));
    // A replay of the same right code.
    assert_eq!(
        given(after).when(check("s1", SIGN_IN), t(131)),
        precondition(Precondition::ChallengeUsed)
    );
}

#[test]
fn a_wrong_code_is_recorded_and_the_policys_last_wrong_code_burns_the_challenge() {
    let mut events = challenged(verified(), "s1", SIGN_IN, 100);
    for i in 1..=4 {
        let decision = given(events.clone()).when(check("s1", OTHER), t(100 + i));
        assert_eq!(decision, wrong_code(vec![failed(Some(2), "s1")]), "try {i}");
        events.extend(decision.events().to_vec());
    }
    let fifth = given(events.clone()).when(check("s1", OTHER), t(110));
    assert_eq!(
        fifth,
        wrong_code(vec![
            failed(Some(2), "s1"),
            Event::ChallengeBurnt(ChallengeBurnt { number: 2 })
        ])
    );
    events.extend(fifth.events().to_vec());
    // Burnt: even the right code is refused now, and nothing more is recorded.
    assert_eq!(
        given(events).when(check("s1", SIGN_IN), t(111)),
        precondition(Precondition::TooManyAttempts)
    );
}

#[test]
fn a_code_never_completes_another_binding_and_counts_as_wrong_there() {
    let events = challenged(verified(), "s1", SIGN_IN, 100);
    // s2 has no challenge: the code of s1 under it is wrong, and recorded.
    assert_eq!(
        given(events.clone()).when(check("s2", SIGN_IN), t(110)),
        wrong_code(vec![failed(None, "s2")])
    );
    // s2 has a challenge of its own: s1's code is wrong for it.
    let both = challenged(events, "s2", OTHER, 105);
    assert_eq!(
        given(both.clone()).when(check("s2", SIGN_IN), t(110)),
        wrong_code(vec![failed(Some(3), "s2")])
    );
    // Each binding's own code completes it.
    assert!(given(both.clone())
        .when(check("s1", SIGN_IN), t(110))
        .error()
        .is_none());
    assert!(given(both)
        .when(check("s2", OTHER), t(110))
        .error()
        .is_none());
}

#[test]
fn a_check_after_the_lifetime_records_the_challenge_expired() {
    let events = challenged(verified(), "s1", SIGN_IN, 100);
    let late = given(events.clone()).when(check("s1", SIGN_IN), t(400));
    assert_eq!(
        late,
        Decision::Rejected {
            events: vec![Event::ChallengeExpired(ChallengeExpired { number: 2 })],
            error: Error::FailedPrecondition(Precondition::CodeExpired),
        }
    );
    let after = with(events, late.events().to_vec());
    assert_eq!(
        given(after).when(check("s1", SIGN_IN), t(401)),
        precondition(Precondition::CodeExpired)
    );
}

#[test]
fn a_new_challenge_under_the_same_binding_voids_the_one_before() {
    let first = challenged(verified(), "s1", SIGN_IN, 100);
    let second = challenged(first, "s1", OTHER, 110);
    assert_eq!(
        given(second.clone()).when(check("s1", SIGN_IN), t(120)),
        wrong_code(vec![failed(Some(3), "s1")])
    );
    assert!(given(second)
        .when(check("s1", OTHER), t(120))
        .error()
        .is_none());
}

#[test]
fn a_removed_registration_takes_its_open_challenges_with_it() {
    let open = challenged(verified(), "s1", SIGN_IN, 100);
    let removed = with(open, [Event::Removed(Removed {})]);
    assert!(Registration::from_events(&removed).challenges.is_empty());
    assert_eq!(
        given(removed).when(check("s1", SIGN_IN), t(110)),
        rejected(Error::RegistrationNotFound)
    );
}

#[test]
fn a_locked_registration_checks_no_sign_in_code_until_the_lock_ends() {
    let open = challenged(verified(), "s1", SIGN_IN, 100);
    let locked = with(
        open,
        [Event::VerificationLocked(VerificationLocked {
            until: t(200),
        })],
    );
    assert_eq!(
        given(locked.clone()).when(check("s1", SIGN_IN), t(110)),
        precondition(Precondition::VerificationLocked)
    );
    let unlocked = with(
        locked,
        [Event::VerificationUnlocked(VerificationUnlocked {})],
    );
    assert!(given(unlocked)
        .when(check("s1", SIGN_IN), t(120))
        .error()
        .is_none());
}

#[test]
fn a_registration_keeps_the_most_recent_challenges_only() {
    let mut events = verified();
    for i in 0..=MAX_TRACKED_CHALLENGES {
        events = challenged(events, &format!("s{i}"), SIGN_IN, 100 + i as i64);
    }
    let state = Registration::from_events(&events);
    assert_eq!(state.challenges.len(), MAX_TRACKED_CHALLENGES);
    // The oldest fell out: its binding has no challenge now.
    assert_eq!(
        given(events.clone()).when(check("s0", SIGN_IN), t(120)),
        wrong_code(vec![failed(None, "s0")])
    );
    assert!(given(events)
        .when(check("s1", SIGN_IN), t(120))
        .error()
        .is_none());
}

// ---- the challenge's SMS ----

#[test]
fn the_notifier_and_the_provider_report_on_a_challenges_code_by_its_number() {
    let open = challenged(verified(), "s1", SIGN_IN, 100);
    assert!(Registration::from_events(&open).awaits_sms(2));
    assert!(!Registration::from_events(&open).awaits_sms(1));
    let sent = Event::ChallengeSent(ChallengeSent { number: 2 });
    assert_eq!(
        given(open.clone()).when(Command::RecordCodeSent { number: 2 }, t(101)),
        Decision::Accepted(vec![sent.clone()])
    );
    let after = with(open, [sent]);
    assert!(!Registration::from_events(&after).awaits_sms(2));
    // A repeated hand-over report changes nothing; the provider's report follows.
    assert_eq!(
        given(after.clone()).when(Command::RecordCodeSent { number: 2 }, t(102)),
        Decision::Accepted(vec![])
    );
    assert_eq!(
        given(after.clone()).when(
            Command::RecordDeliveryReport {
                number: 2,
                failure: None
            },
            t(103)
        ),
        Decision::Accepted(vec![Event::CodeDelivered(CodeDelivered { number: 2 })])
    );
    // The registration's own code is long verified: a report on it still changes nothing.
    assert_eq!(
        given(after).when(Command::RecordCodeSent { number: 1 }, t(103)),
        precondition(Precondition::AlreadyVerified)
    );
}

#[test]
fn a_challenges_code_the_notifier_gave_up_on_is_no_longer_due() {
    let open = challenged(verified(), "s1", SIGN_IN, 100);
    let decision = given(open.clone()).when(
        Command::RecordDeliveryFailed {
            number: 2,
            attempts: 3,
            reason: "SMS webhook answered 400".into(),
        },
        t(101),
    );
    assert!(matches!(decision.events(), [Event::DeliveryFailed(_)]));
    let after = with(open, decision.events().to_vec());
    assert!(!Registration::from_events(&after).awaits_sms(2));
}

#[test]
fn sign_in_events_round_trip_with_their_stable_names() {
    let mut events = challenged(verified(), "s1", SIGN_IN, 100);
    events.push(failed(Some(2), "s1"));
    events.push(failed(None, "s9"));
    events.push(Event::ChallengeSucceeded(ChallengeSucceeded {
        number: 2,
        binding: session("s1"),
        checked_at: t(120),
    }));
    events.push(Event::ChallengeBurnt(ChallengeBurnt { number: 3 }));
    events.push(Event::ChallengeExpired(ChallengeExpired { number: 4 }));
    events.push(Event::ChallengeSent(ChallengeSent { number: 2 }));
    for event in &events[verified().len()..] {
        assert!(event.event_type().starts_with("user.otp_sms.challenge."));
        let json = event.to_json().unwrap();
        assert!(
            !json.to_string().contains("s1"),
            "the binding, in clear: {json}"
        );
        let back = Event::from_json(event.event_type(), event.revision(), json).unwrap();
        assert_eq!(&back, event);
    }
}
