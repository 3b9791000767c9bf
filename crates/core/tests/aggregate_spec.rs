//! The registration aggregate as a specification: given these events, when this command at
//! this time, then these events or this error.

mod given;

use std::time::Duration;

use given::*;
use otp_sms_core::*;

// ---- add ----

#[test]
fn add_with_send_code_records_added_and_a_code_to_send() {
    let events = added_events(Delivery::Send, t(0));
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0],
        Event::Added(Added {
            user: user(),
            organization: org(),
            phone: Phone::parse("+41791234567").unwrap()
        })
    );
    let Event::CodeAdded(c) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(c.number, 1);
    assert_eq!(c.delivery, Delivery::Send);
    assert_eq!(c.issued_at, t(0));
    assert_eq!(c.expires_at, t(300), "default life is 5 minutes");
    assert_eq!(c.hash.key_id, KeyId::new("k1"));
}

#[test]
fn add_with_return_code_records_a_code_to_return() {
    let events = added_events(Delivery::Return, t(0));
    assert!(matches!(&events[1], Event::CodeAdded(c) if c.delivery == Delivery::Return));
}

#[test]
fn add_as_verified_records_added_and_verified_without_a_code() {
    let cmd = Command::Add {
        user: user(),
        organization: org(),
        phone: Phone::parse("+41791234567").unwrap(),
        verification: AddVerification::AlreadyVerified,
    };
    let decision = given(vec![]).when(cmd, t(0));
    assert!(matches!(
        decision.events(),
        [Event::Added(_), Event::Verified(Verified { code: None })]
    ));
}

#[test]
fn add_on_an_existing_registration_is_refused() {
    let cmd = Command::Add {
        user: user(),
        organization: org(),
        phone: Phone::parse("+41791234567").unwrap(),
        verification: AddVerification::AlreadyVerified,
    };
    let decision = given(added()).when(cmd, t(1));
    assert_eq!(decision.error().unwrap().rpc_code(), RpcCode::Internal);
    assert!(decision.events().is_empty());
}

// ---- verify ----

#[test]
fn verify_with_the_right_code_records_verified() {
    assert_eq!(
        given(added()).when(verify(RIGHT), t(10)),
        Decision::Accepted(vec![Event::Verified(Verified { code: Some(1) })])
    );
}

#[test]
fn verify_with_a_wrong_code_records_check_failed_and_is_invalid_argument() {
    let decision = given(added()).when(verify(WRONG), t(10));
    assert_eq!(
        decision,
        Decision::Rejected {
            events: vec![Event::CheckFailed(CheckFailed { number: 1 })],
            error: Error::WrongCode
        }
    );
    assert_eq!(
        decision.error().unwrap().rpc_code(),
        RpcCode::InvalidArgument
    );
}

#[test]
fn verify_of_an_absent_registration_is_not_found() {
    assert_eq!(
        given(vec![]).when(verify(RIGHT), t(0)),
        rejected(Error::RegistrationNotFound)
    );
}

#[test]
fn verify_of_another_users_registration_is_not_found() {
    assert_eq!(
        given(added()).for_user("user-2").when(verify(RIGHT), t(1)),
        rejected(Error::RegistrationNotFound)
    );
}

#[test]
fn verify_of_a_removed_registration_is_not_found() {
    let events = with(added(), [Event::Removed(Removed {})]);
    assert_eq!(
        given(events).when(verify(RIGHT), t(1)),
        rejected(Error::RegistrationNotFound)
    );
}

#[test]
fn verify_of_a_verified_registration_is_failed_precondition() {
    let events = with(added(), [Event::Verified(Verified { code: Some(1) })]);
    assert_eq!(
        given(events).when(verify(RIGHT), t(1)),
        precondition(Precondition::AlreadyVerified)
    );
}

#[test]
fn verify_after_expiry_is_failed_precondition() {
    assert_eq!(
        given(added()).when(verify(RIGHT), t(300)),
        precondition(Precondition::CodeExpired)
    );
    assert!(matches!(
        given(added()).when(verify(RIGHT), t(299)),
        Decision::Accepted(_)
    ));
}

#[test]
fn the_fifth_wrong_code_burns_it_and_then_even_the_right_code_is_refused() {
    let mut events = added();
    for n in 1..=5 {
        let decision = given(events.clone()).when(verify(WRONG), t(n));
        assert_eq!(decision.error(), Some(&Error::WrongCode), "attempt {n}");
        events.extend(decision.events().iter().cloned());
    }
    assert_eq!(
        given(events.clone()).when(verify(RIGHT), t(6)),
        precondition(Precondition::TooManyAttempts)
    );
    assert_eq!(
        given(events).when(verify(WRONG), t(6)),
        precondition(Precondition::TooManyAttempts)
    );
}

#[test]
fn the_attempt_limit_is_configurable() {
    let policy = CodePolicy::default().with_max_failed_checks(1).unwrap();
    let events = with(added(), [Event::CheckFailed(CheckFailed { number: 1 })]);
    assert_eq!(
        given(events).with_policy(policy).when(verify(RIGHT), t(1)),
        precondition(Precondition::TooManyAttempts)
    );
}

#[test]
fn a_registration_added_as_verified_has_no_code_to_verify() {
    let events = vec![
        Event::Added(Added {
            user: user(),
            organization: org(),
            phone: Phone::parse("+41791234567").unwrap(),
        }),
        Event::Verified(Verified { code: None }),
    ];
    assert_eq!(
        given(events).when(verify(RIGHT), t(1)),
        precondition(Precondition::AlreadyVerified)
    );
    let only_added = vec![Event::Added(Added {
        user: user(),
        organization: org(),
        phone: Phone::parse("+41791234567").unwrap(),
    })];
    assert_eq!(
        given(only_added).when(verify(RIGHT), t(1)),
        precondition(Precondition::NoActiveCode)
    );
}

#[test]
fn a_code_hash_checked_under_a_key_no_longer_in_the_ring_is_internal() {
    let mut events = added();
    if let Some(Event::CodeAdded(c)) = events.get_mut(1) {
        c.hash.key_id = KeyId::new("retired");
    }
    assert_eq!(
        given(events)
            .when(verify(RIGHT), t(1))
            .error()
            .unwrap()
            .rpc_code(),
        RpcCode::Internal
    );
}

// ---- resend ----

#[test]
fn resend_after_the_interval_issues_code_two_and_voids_code_one() {
    let decision = given(added()).when(resend("11112222"), t(60));
    let [Event::CodeAdded(c)] = decision.events() else {
        panic!("{decision:?}")
    };
    assert_eq!(c.number, 2);
    assert_eq!(c.expires_at, t(360));
    let events = with(added(), decision.events().iter().cloned());
    assert_ne!(code_hash_of(&events), code_hash_of(&added()));
    assert_eq!(
        given(events.clone()).when(verify(RIGHT), t(61)).error(),
        Some(&Error::WrongCode),
        "the old code is void"
    );
    assert!(matches!(
        given(events).when(verify("11112222"), t(61)),
        Decision::Accepted(_)
    ));
}

#[test]
fn resend_resets_the_attempt_count() {
    let mut events = added();
    events.extend((0..5).map(|_| Event::CheckFailed(CheckFailed { number: 1 })));
    let decision = given(events.clone()).when(resend("11112222"), t(60));
    events.extend(decision.events().iter().cloned());
    assert!(matches!(
        given(events).when(verify("11112222"), t(61)),
        Decision::Accepted(_)
    ));
}

#[test]
fn resend_within_sixty_seconds_is_resource_exhausted_with_the_wait() {
    assert_eq!(
        given(added()).when(resend("11112222"), t(45)),
        rejected(Error::RateLimited {
            retry_after: Duration::from_secs(15)
        })
    );
}

#[test]
fn a_sixth_code_within_an_hour_is_resource_exhausted() {
    let mut events = added();
    for n in 1..=4 {
        let d = given(events.clone()).when(resend("11112222"), t(n * 60));
        assert!(matches!(d, Decision::Accepted(_)), "code {}: {d:?}", n + 1);
        events.extend(d.events().iter().cloned());
    }
    // Five codes issued at 0, 60, 120, 180, 240; the window frees at 3600.
    let d = given(events.clone()).when(resend("11112222"), t(1800));
    assert_eq!(
        d,
        rejected(Error::RateLimited {
            retry_after: Duration::from_secs(1800)
        })
    );
    assert_eq!(d.error().unwrap().rpc_code(), RpcCode::ResourceExhausted);
    assert!(matches!(
        given(events).when(resend("11112222"), t(3600)),
        Decision::Accepted(_)
    ));
}

#[test]
fn resend_of_a_verified_registration_is_failed_precondition() {
    let events = with(added(), [Event::Verified(Verified { code: Some(1) })]);
    assert_eq!(
        given(events).when(resend("11112222"), t(100)),
        precondition(Precondition::AlreadyVerified)
    );
}

#[test]
fn resend_of_a_removed_registration_is_not_found() {
    let events = with(added(), [Event::Removed(Removed {})]);
    assert_eq!(
        given(events).when(resend("11112222"), t(100)),
        rejected(Error::RegistrationNotFound)
    );
}

// ---- record code sent ----

#[test]
fn record_code_sent_records_once_and_is_idempotent() {
    let events = added_events(Delivery::Send, t(0));
    let d = given(events.clone()).when(Command::RecordCodeSent { number: 1 }, t(1));
    assert_eq!(
        d,
        Decision::Accepted(vec![Event::CodeSent(CodeSent { number: 1 })])
    );
    let events = with(events, d.events().iter().cloned());
    assert_eq!(
        given(events).when(Command::RecordCodeSent { number: 1 }, t(2)),
        Decision::Accepted(vec![])
    );
}

#[test]
fn record_code_sent_for_a_replaced_code_is_failed_precondition() {
    let events = added_events(Delivery::Send, t(0));
    let d = given(events.clone()).when(resend("11112222"), t(60));
    let events = with(events, d.events().iter().cloned());
    assert_eq!(
        given(events).when(Command::RecordCodeSent { number: 1 }, t(61)),
        precondition(Precondition::CodeSuperseded)
    );
}

// ---- remove ----

#[test]
fn remove_records_removed_and_nothing_follows() {
    let d = given(added()).when(Command::Remove, t(5));
    assert_eq!(d, Decision::Accepted(vec![Event::Removed(Removed {})]));
    let events = with(added(), d.events().iter().cloned());
    for cmd in [
        verify(RIGHT),
        resend("11112222"),
        Command::RecordCodeSent { number: 1 },
        Command::Remove,
    ] {
        assert_eq!(
            given(events.clone()).when(cmd, t(100)),
            rejected(Error::RegistrationNotFound)
        );
    }
}

#[test]
fn remove_of_a_verified_registration_is_allowed() {
    let events = with(added(), [Event::Verified(Verified { code: Some(1) })]);
    assert!(matches!(
        given(events).when(Command::Remove, t(5)),
        Decision::Accepted(_)
    ));
}

#[test]
fn remove_of_an_absent_registration_is_not_found() {
    assert_eq!(
        given(vec![]).when(Command::Remove, t(0)),
        rejected(Error::RegistrationNotFound)
    );
}

// ---- secrets ----

#[test]
fn no_debug_output_or_json_payload_carries_the_code() {
    let events = with(
        added_events(Delivery::Send, t(0)),
        [Event::CheckFailed(CheckFailed { number: 1 })],
    );
    let state = Registration::from_events(&events);
    let outputs = [
        format!("{events:?}"),
        format!("{state:?}"),
        format!("{:?}", verify(RIGHT)),
        format!("{:?}", resend(RIGHT)),
        format!("{:?}", given(events.clone()).when(verify(WRONG), t(1))),
        format!("{:?}", Error::WrongCode),
        Error::WrongCode.to_string(),
        events
            .iter()
            .map(|e| e.to_json().unwrap().to_string())
            .collect::<String>(),
    ];
    for out in outputs {
        assert!(!out.contains(RIGHT), "code leaked: {out}");
        assert!(!out.contains(WRONG), "code leaked: {out}");
    }
}

#[test]
fn a_stored_hash_gives_nothing_without_the_key() {
    // With the wrong key, even the right code does not match: recovering a code from a stored
    // event needs the HMAC key and then a brute force of the code space.
    let events = added();
    let hash = code_hash_of(&events);
    let other = CodeKeyRing::new(CodeKey::new(KeyId::new("k1"), &[8; 32]));
    let registration = reg();
    let binding = CodeBinding {
        registration: &registration,
        number: 1,
    };
    assert!(!other.matches(binding, &code(RIGHT), &hash).unwrap());
    assert!(keys().matches(binding, &code(RIGHT), &hash).unwrap());
    // And the event payload carries no field from which the code can be read back.
    let json = events[1].to_json().unwrap();
    let fields: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        fields,
        vec!["delivery", "expiresAt", "hash", "issuedAt", "number"]
    );
}

// ---- apply ----

#[test]
fn apply_tracks_the_state_machine() {
    let mut state = Registration::default();
    assert_eq!(state.status, Status::Absent);
    for e in &added() {
        state = state.apply(e);
    }
    assert_eq!(state.status, Status::Unverified);
    assert_eq!(state.pending.as_ref().unwrap().number, 1);
    state = state.apply(&Event::CheckFailed(CheckFailed { number: 1 }));
    assert_eq!(state.pending.as_ref().unwrap().failed_checks, 1);
    // A failed check of a stale code does not count against the current one.
    state = state.apply(&Event::CheckFailed(CheckFailed { number: 7 }));
    assert_eq!(state.pending.as_ref().unwrap().failed_checks, 1);
    state = state.apply(&Event::Verified(Verified { code: Some(1) }));
    assert_eq!(state.status, Status::Verified);
    assert!(state.pending.is_none());
    state = state.apply(&Event::Removed(Removed {}));
    assert_eq!(state.status, Status::Removed);
}

fn locked_until(at: DateTime<Utc>) -> Event {
    Event::VerificationLocked(VerificationLocked { until: at })
}

#[test]
fn a_lock_is_recorded_on_an_unverified_registration() {
    assert_eq!(
        given(added()).when(Command::LockVerification { until: t(3600) }, t(10)),
        Decision::Accepted(vec![locked_until(t(3600))])
    );
}

#[test]
fn a_locked_registration_checks_no_code_not_even_the_right_one() {
    let locked = with(added(), [locked_until(t(3600))]);
    for c in [RIGHT, WRONG] {
        assert_eq!(
            given(locked.clone()).when(verify(c), t(20)),
            precondition(Precondition::VerificationLocked),
            "{c}"
        );
    }
}

#[test]
fn a_lock_ends_by_itself_at_its_time() {
    let locked = with(
        added_events(Delivery::Return, t(3590)),
        [locked_until(t(3600))],
    );
    assert!(matches!(
        given(locked).when(verify(RIGHT), t(3600)).events(),
        [Event::Verified(_)]
    ));
}

#[test]
fn an_unlock_lifts_the_lock_and_a_second_unlock_records_nothing() {
    let locked = with(added(), [locked_until(t(3600))]);
    assert_eq!(
        given(locked.clone()).when(Command::UnlockVerification, t(20)),
        Decision::Accepted(vec![Event::VerificationUnlocked(VerificationUnlocked {})])
    );
    let unlocked = with(
        locked,
        [Event::VerificationUnlocked(VerificationUnlocked {})],
    );
    assert!(matches!(
        given(unlocked.clone()).when(verify(RIGHT), t(30)).events(),
        [Event::Verified(_)]
    ));
    assert_eq!(
        given(unlocked).when(Command::UnlockVerification, t(30)),
        Decision::Accepted(vec![])
    );
}

#[test]
fn a_lock_reaches_a_verified_registration_whose_sign_in_codes_can_be_guessed_too() {
    let verified = with(added(), [Event::Verified(Verified { code: Some(1) })]);
    assert_eq!(
        given(verified).when(Command::LockVerification { until: t(3600) }, t(20)),
        Decision::Accepted(vec![locked_until(t(3600))])
    );
}

#[test]
fn a_lock_records_nothing_over_a_longer_lock() {
    let locked = with(added(), [locked_until(t(7200))]);
    assert_eq!(
        given(locked.clone()).when(Command::LockVerification { until: t(3600) }, t(20)),
        Decision::Accepted(vec![])
    );
    // A later lock extends it.
    assert_eq!(
        given(locked).when(Command::LockVerification { until: t(9000) }, t(20)),
        Decision::Accepted(vec![locked_until(t(9000))])
    );
}

#[test]
fn a_lock_or_unlock_of_another_users_or_a_removed_registration_is_not_found() {
    let removed = with(added(), [Event::Removed(Removed {})]);
    for command in [
        Command::LockVerification { until: t(3600) },
        Command::UnlockVerification,
    ] {
        assert_eq!(
            given(removed.clone()).when(command.clone(), t(20)),
            rejected(Error::RegistrationNotFound)
        );
        assert_eq!(
            given(added()).for_user("user-2").when(command, t(20)),
            rejected(Error::RegistrationNotFound)
        );
    }
}

#[test]
fn a_test_number_is_issued_its_fixed_code_and_sent_nowhere() {
    let keys = keys();
    let registration = reg();
    let fixed = code("24682468");
    let ctx = Context {
        registration: &registration,
        user: &user(),
        now: t(0),
        policy: &CodePolicy::default(),
        keys: &keys,
        test_code: Some(&fixed),
    };
    let add = Command::Add {
        user: user(),
        organization: org(),
        phone: Phone::parse("+41791234567").unwrap(),
        verification: AddVerification::SendCode(code(RIGHT)),
    };
    let events = Registration::default().decide(&add, &ctx).events().to_vec();
    let Event::CodeAdded(added) = &events[1] else {
        panic!("{events:?}")
    };
    assert_eq!(added.delivery, Delivery::Test);
    // The fixed code verifies; the drawn one does not.
    let state = Registration::from_events(&events);
    assert!(matches!(
        state.decide(&verify("24682468"), &ctx).events(),
        [Event::Verified(_)]
    ));
    assert!(state.decide(&verify(RIGHT), &ctx).error().is_some());
}

// ---- delivery reports (after the hand-over) ----

fn report(number: u32, failure: Option<&str>) -> Command {
    Command::RecordDeliveryReport {
        number,
        failure: failure.map(str::to_owned),
    }
}

#[test]
fn a_delivered_report_records_code_delivered_once() {
    let sent = with(
        added_events(Delivery::Send, t(0)),
        [Event::CodeSent(CodeSent { number: 1 })],
    );
    assert_eq!(
        given(sent.clone()).when(report(1, None), t(5)),
        Decision::Accepted(vec![Event::CodeDelivered(CodeDelivered { number: 1 })])
    );
    // Reported again: nothing more.
    let delivered = with(sent, [Event::CodeDelivered(CodeDelivered { number: 1 })]);
    assert_eq!(
        given(delivered).when(report(1, None), t(6)),
        Decision::Accepted(vec![])
    );
}

#[test]
fn an_undelivered_report_records_delivery_failed_once_and_the_right_code_still_verifies() {
    let sent = with(
        added_events(Delivery::Send, t(0)),
        [Event::CodeSent(CodeSent { number: 1 })],
    );
    let failed = Event::DeliveryFailed(DeliveryFailed {
        number: 1,
        attempts: 1,
        reason: "twilio: undelivered, error 30008".into(),
    });
    assert_eq!(
        given(sent.clone()).when(report(1, Some("twilio: undelivered, error 30008")), t(5)),
        Decision::Accepted(vec![failed.clone()])
    );
    let after = with(sent, [failed]);
    assert_eq!(
        given(after.clone()).when(report(1, Some("again")), t(6)),
        Decision::Accepted(vec![])
    );
    // A report is information: a code that did arrive after all still verifies.
    assert!(matches!(
        given(after).when(verify(RIGHT), t(7)),
        Decision::Accepted(events) if matches!(events.as_slice(), [Event::Verified(_)])
    ));
}

#[test]
fn a_report_before_the_hand_over_on_another_code_or_after_verification() {
    // Not handed over yet, or about another code: superseded.
    let unsent = added_events(Delivery::Send, t(0));
    assert_eq!(
        given(unsent.clone()).when(report(1, None), t(5)),
        precondition(Precondition::CodeSuperseded)
    );
    let sent = with(unsent, [Event::CodeSent(CodeSent { number: 1 })]);
    assert_eq!(
        given(sent.clone()).when(report(2, None), t(5)),
        precondition(Precondition::CodeSuperseded)
    );
    // Verified meanwhile: a late report changes nothing and is no error.
    let verified = given(sent.clone())
        .when(verify(RIGHT), t(6))
        .events()
        .to_vec();
    assert_eq!(
        given(with(sent, verified)).when(report(1, None), t(7)),
        Decision::Accepted(vec![])
    );
    // No registration: not found.
    assert_eq!(
        given(vec![]).when(report(1, None), t(0)),
        rejected(Error::RegistrationNotFound)
    );
}
