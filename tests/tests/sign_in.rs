//! Sign-in with a registered phone through the command service, on both stores (each with its
//! budget and idempotency stores): a challenge bound to the host's binding, a check under the
//! same binding, and everything registration codes already obey (budgets, audit, the user's
//! lock, test numbers, return_code's right, idempotency keys, the outbox).

use std::sync::Arc;
use std::time::Duration;

use otp_sms_core::message::Purpose;
use otp_sms_core::{
    AbusePolicy, Caller, ChallengeRequest, CheckRequest, Error, Event, IdempotencyKey, Limit,
    PhoneVerification, Precondition, RegistrationId, RegistrationRequest, Scope, VerifyRequest,
};
use otp_sms_tests::fixture::{flow_policy, Backend, Fixture};

otp_sms_tests::on_both_backends!(
    register_verify_challenge_and_check_sign_in_once,
    a_challenge_sent_by_sms_goes_out_with_the_sign_in_text_and_is_recorded_sent,
    a_code_under_another_binding_fails_and_counts_as_wrong,
    fifty_concurrent_right_checks_give_exactly_one_success,
    a_removed_registration_takes_its_challenge_with_it,
    the_failure_lock_is_shared_with_registration_and_a_success_ends_the_run,
    without_a_name_the_latest_verified_registration_is_challenged_and_checked,
    a_user_without_a_verified_registration_cannot_be_challenged,
    a_code_in_the_response_needs_user_write,
    the_sign_in_budget_stops_a_loop_of_challenges_and_the_refusal_is_audited,
    a_test_number_is_challenged_with_its_fixed_code_and_sent_nowhere,
    an_idempotency_key_replays_a_challenge_and_a_check,
);

/// `user-1`'s phone, added with the code in the response and verified with it.
async fn verified(f: &Fixture) -> RegistrationId {
    let added = f.add("user-1", PhoneVerification::ReturnCode).await;
    let code = added
        .verification_code
        .expect("returned")
        .expose()
        .to_owned();
    f.service
        .verify(
            &Fixture::caller("user-1"),
            VerifyRequest {
                user_id: "user-1".into(),
                organization: None,
                registration_id: added.registration_id.to_string(),
                code,
            },
        )
        .await
        .expect("verified");
    added.registration_id
}

/// A challenge with the code in the response, by `admin`, for `registration` under `binding`.
async fn returned(f: &Fixture, registration: &RegistrationId, binding: &str) -> String {
    let challenged = f
        .service
        .challenge(
            &Fixture::caller("admin"),
            ChallengeRequest::new("user-1", binding)
                .for_registration(registration.as_str())
                .returning_code(),
        )
        .await
        .expect("challenged");
    assert_eq!(&challenged.registration_id, registration);
    challenged.code.expect("returned").expose().to_owned()
}

async fn check(
    f: &Fixture,
    caller: &Caller,
    binding: &str,
    code: &str,
) -> Result<otp_sms_core::CheckResponse, Error> {
    f.service
        .check(caller, CheckRequest::new("user-1", binding, code))
        .await
}

/// The flow suite's policy, with the user's lock at `failures` wrong codes in a row.
async fn locking_at(backend: Backend, failures: u32) -> Fixture {
    let policy = AbusePolicy {
        max_consecutive_failures: failures,
        ..flow_policy()
    };
    Fixture::with_abuse_policy(backend, policy).await
}

/// A second phone of `user-1` (by `admin`, who may add it as verified or see its code).
async fn second_phone(f: &Fixture, verification: PhoneVerification) -> otp_sms_core::AddResponse {
    f.service
        .add(
            &host(),
            otp_sms_core::AddRequest {
                user_id: "user-1".into(),
                organization: None,
                phone: "+41791234568".into(),
                verification,
            },
        )
        .await
        .expect("added")
}

fn host() -> Caller {
    Fixture::caller("admin")
}

/// A check by the host that must fail: its error.
async fn refused(f: &Fixture, binding: &str, code: &str) -> Error {
    check(f, &host(), binding, code)
        .await
        .expect_err("the check is refused")
}

/// How many `challenge succeeded` events the store holds.
async fn successes(f: &Fixture) -> usize {
    f.feed()
        .await
        .iter()
        .filter(|e| matches!(e.event, Event::ChallengeSucceeded(_)))
        .count()
}

async fn register_verify_challenge_and_check_sign_in_once(backend: Backend) {
    let f = Fixture::new(backend).await;
    let registration = verified(&f).await;
    let code = returned(&f, &registration, "session-1").await;
    f.clock.advance(chrono::Duration::seconds(20));
    let signed_in = check(&f, &host(), "session-1", &code)
        .await
        .expect("the right code signs in");
    assert_eq!(signed_in.registration_id, registration);
    // The event a host stamps its session from: which registration, when.
    let feed = f.feed().await;
    let success = feed
        .iter()
        .find(|e| matches!(e.event, Event::ChallengeSucceeded(_)))
        .expect("recorded");
    let Event::ChallengeSucceeded(ref event) = success.event else {
        unreachable!()
    };
    assert_eq!(event.checked_at, otp_sms_core::Clock::now(&*f.clock));
    assert_eq!(&*success.stream.aggregate_id, registration.as_str());
    assert_eq!(signed_in.details.changed, success.created_at);
    // The same code again: a replay.
    assert_eq!(
        refused(&f, "session-1", &code).await,
        Error::FailedPrecondition(Precondition::ChallengeUsed)
    );
    assert_eq!(successes(&f).await, 1);
    f.finish().await;
}

async fn a_challenge_sent_by_sms_goes_out_with_the_sign_in_text_and_is_recorded_sent(
    backend: Backend,
) {
    let f = Fixture::new(backend).await;
    let registration = verified(&f).await;
    let challenged = f
        .service
        .challenge(
            &Fixture::caller("user-1"),
            ChallengeRequest::new("user-1", "session-1"),
        )
        .await
        .expect("challenged");
    assert_eq!(challenged.registration_id, registration);
    assert!(challenged.code.is_none(), "sent, not returned");
    f.service
        .deliver_pending(&*f.sender, 10, Duration::from_secs(30))
        .await
        .expect("a notifier pass");
    let sent = f.sender.sent();
    let sms = sent.last().expect("the challenge's SMS");
    assert_eq!(sms.purpose, Purpose::SignIn);
    assert_eq!(sms.registration, registration);
    assert_eq!(sms.number, 2, "the registration's code was 1");
    let recorded = f
        .feed()
        .await
        .iter()
        .any(|e| matches!(e.event, Event::ChallengeSent(ref s) if s.number == 2));
    assert!(recorded, "challenge sent recorded");
    // The SMS's code signs in.
    check(&f, &host(), "session-1", sms.code.expose())
        .await
        .expect("the sent code signs in");
    // A second pass sends nothing more.
    f.service
        .deliver_pending(&*f.sender, 10, Duration::from_secs(30))
        .await
        .expect("a notifier pass");
    assert_eq!(f.sender.sent().len(), sent.len());
    f.finish().await;
}

async fn a_code_under_another_binding_fails_and_counts_as_wrong(backend: Backend) {
    let f = locking_at(backend, 3).await;
    let registration = verified(&f).await;
    let code = returned(&f, &registration, "session-1").await;
    // Under a binding without a challenge, and under one with its own.
    assert_eq!(refused(&f, "session-2", &code).await, Error::WrongCode);
    let other = returned(&f, &registration, "session-3").await;
    assert_ne!(other, code);
    assert_eq!(refused(&f, "session-3", &code).await, Error::WrongCode);
    // Both counted: the third wrong code in a row locks the user.
    assert_eq!(refused(&f, "session-3", "00000000").await, Error::WrongCode);
    assert_eq!(
        refused(&f, "session-1", &code).await,
        Error::FailedPrecondition(Precondition::VerificationLocked)
    );
    assert_eq!(successes(&f).await, 0);
    f.finish().await;
}

async fn fifty_concurrent_right_checks_give_exactly_one_success(backend: Backend) {
    let f = Arc::new(Fixture::new(backend).await);
    let registration = verified(&f).await;
    let code = returned(&f, &registration, "session-1").await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let f = Arc::clone(&f);
        let code = code.clone();
        tasks.push(tokio::spawn(async move {
            // Half through a second process sharing the store.
            let service = if i % 2 == 0 {
                f.service.clone()
            } else {
                f.other_process()
            };
            service
                .check(&host(), CheckRequest::new("user-1", "session-1", code))
                .await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("joined") {
            Ok(_) => ok += 1,
            Err(Error::FailedPrecondition(Precondition::ChallengeUsed)) | Err(Error::Aborted) => {}
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(successes(&f).await, 1);
    Arc::into_inner(f).expect("the last handle").finish().await;
}

async fn a_removed_registration_takes_its_challenge_with_it(backend: Backend) {
    let f = Fixture::new(backend).await;
    let registration = verified(&f).await;
    let code = returned(&f, &registration, "session-1").await;
    f.service
        .remove(
            &Fixture::caller("user-1"),
            RegistrationRequest {
                user_id: "user-1".into(),
                organization: None,
                registration_id: registration.to_string(),
            },
        )
        .await
        .expect("removed");
    assert_eq!(
        refused(&f, "session-1", &code).await,
        Error::FailedPrecondition(Precondition::NoVerifiedRegistration),
        "no registration of the user holds the challenge any more"
    );
    let named = f
        .service
        .check(
            &host(),
            CheckRequest::new("user-1", "session-1", &code).for_registration(registration.as_str()),
        )
        .await;
    assert_eq!(named.unwrap_err(), Error::RegistrationNotFound);
    let again = f
        .service
        .challenge(
            &host(),
            ChallengeRequest::new("user-1", "session-1").for_registration(registration.as_str()),
        )
        .await;
    assert_eq!(again.unwrap_err(), Error::RegistrationNotFound);
    f.finish().await;
}

async fn the_failure_lock_is_shared_with_registration_and_a_success_ends_the_run(backend: Backend) {
    let f = locking_at(backend, 6).await;
    let registration = verified(&f).await;
    // Three wrong registration codes on a second phone of the user.
    let second = second_phone(&f, PhoneVerification::ReturnCode).await;
    for _ in 0..3 {
        let wrong = f
            .service
            .verify(
                &Fixture::caller("user-1"),
                VerifyRequest {
                    user_id: "user-1".into(),
                    organization: None,
                    registration_id: second.registration_id.to_string(),
                    code: "00000000".into(),
                },
            )
            .await;
        assert_eq!(wrong.unwrap_err(), Error::WrongCode);
    }
    // Two wrong sign-in codes, then a right one: the run of five ends.
    let code = returned(&f, &registration, "session-1").await;
    for _ in 0..2 {
        assert_eq!(refused(&f, "session-1", "00000000").await, Error::WrongCode);
    }
    check(&f, &host(), "session-1", &code)
        .await
        .expect("right code");
    // Six wrong codes in a row from here lock; five do not.
    let code = returned(&f, &registration, "session-2").await;
    for _ in 0..5 {
        assert_eq!(
            refused(&f, "session-2", "00000000").await,
            Error::WrongCode,
            "the challenge burns at five; the sixth meets a burnt challenge"
        );
    }
    let fresh = returned(&f, &registration, "session-3").await;
    assert_eq!(refused(&f, "session-3", "00000000").await, Error::WrongCode);
    // Locked: not even the right code, and no new challenge.
    assert_eq!(
        refused(&f, "session-3", &fresh).await,
        Error::FailedPrecondition(Precondition::VerificationLocked)
    );
    let refused = f
        .service
        .challenge(
            &host(),
            ChallengeRequest::new("user-1", "session-4").returning_code(),
        )
        .await;
    assert_eq!(
        refused.unwrap_err(),
        Error::FailedPrecondition(Precondition::VerificationLocked)
    );
    assert_ne!(code, fresh);
    f.finish().await;
}

async fn without_a_name_the_latest_verified_registration_is_challenged_and_checked(
    backend: Backend,
) {
    let f = Fixture::new(backend).await;
    let first = verified(&f).await;
    f.clock.advance(chrono::Duration::seconds(5));
    let second = second_phone(&f, PhoneVerification::IsVerified(true))
        .await
        .registration_id;
    let challenged = f
        .service
        .challenge(
            &host(),
            ChallengeRequest::new("user-1", "session-1").returning_code(),
        )
        .await
        .expect("challenged");
    assert_eq!(challenged.registration_id, second, "the latest verified");
    // A challenge on the first, named, under another binding; each check finds its own.
    let code = returned(&f, &first, "session-2").await;
    let checked = check(&f, &host(), "session-2", &code)
        .await
        .expect("signed in");
    assert_eq!(checked.registration_id, first);
    let code = challenged.code.expect("returned");
    let checked = check(&f, &host(), "session-1", code.expose())
        .await
        .expect("signed in");
    assert_eq!(checked.registration_id, second);
    f.finish().await;
}

async fn a_user_without_a_verified_registration_cannot_be_challenged(backend: Backend) {
    let f = Fixture::new(backend).await;
    let challenge = |user: &str| ChallengeRequest::new(user, "session-1");
    assert_eq!(
        f.service
            .challenge(&host(), challenge("user-2"))
            .await
            .unwrap_err(),
        Error::FailedPrecondition(Precondition::NoVerifiedRegistration)
    );
    let unverified = f.add("user-1", PhoneVerification::ReturnCode).await;
    assert_eq!(
        f.service
            .challenge(&host(), challenge("user-1"))
            .await
            .unwrap_err(),
        Error::FailedPrecondition(Precondition::NoVerifiedRegistration)
    );
    assert_eq!(
        f.service
            .challenge(
                &host(),
                challenge("user-1").for_registration(unverified.registration_id.as_str())
            )
            .await
            .unwrap_err(),
        Error::FailedPrecondition(Precondition::NotVerified)
    );
    // Bad input changes nothing: a typed error naming its field.
    let bad = f
        .service
        .challenge(&host(), ChallengeRequest::new("user-1", ""))
        .await
        .unwrap_err();
    assert!(
        matches!(
            bad,
            Error::InvalidArgument {
                field: "binding",
                ..
            }
        ),
        "{bad:?}"
    );
    let bad = f
        .service
        .check(&host(), CheckRequest::new("user-1", "session-1", ""))
        .await
        .unwrap_err();
    assert!(
        matches!(bad, Error::InvalidArgument { field: "code", .. }),
        "{bad:?}"
    );
    f.finish().await;
}

async fn a_code_in_the_response_needs_user_write(backend: Backend) {
    // An instance that does not let users see their own codes.
    let f = Fixture::with_abuse_policy(backend, AbusePolicy::unlimited()).await;
    let registration = f
        .add("user-1", PhoneVerification::IsVerified(true))
        .await
        .registration_id;
    let by_self = f
        .service
        .challenge(
            &Fixture::caller("user-1"),
            ChallengeRequest::new("user-1", "session-1").returning_code(),
        )
        .await;
    assert_eq!(by_self.unwrap_err(), Error::PermissionDenied);
    let by_stranger = f
        .service
        .challenge(
            &Fixture::caller("user-2"),
            ChallengeRequest::new("user-1", "session-1"),
        )
        .await;
    assert_eq!(by_stranger.unwrap_err(), Error::PermissionDenied);
    returned(&f, &registration, "session-1").await;
    f.finish().await;
}

async fn the_sign_in_budget_stops_a_loop_of_challenges_and_the_refusal_is_audited(
    backend: Backend,
) {
    let policy = AbusePolicy {
        sign_in: vec![Limit::new(3, Duration::from_secs(600))],
        ..flow_policy()
    };
    let f = Fixture::with_abuse_policy(backend, policy).await;
    verified(&f).await;
    for i in 0..3 {
        f.service
            .challenge(
                &Fixture::caller("user-1"),
                ChallengeRequest::new("user-1", format!("session-{i}")),
            )
            .await
            .expect("within the budget");
    }
    let refused = f
        .service
        .challenge(
            &Fixture::caller("user-1"),
            ChallengeRequest::new("user-1", "session-9"),
        )
        .await
        .unwrap_err();
    let Error::SendRefused { scope, retry_after } = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(scope, Scope::SignIn);
    assert!(retry_after.is_some_and(|d| d <= Duration::from_secs(600)));
    let audited = f.feed().await.iter().any(
        |e| matches!(e.event, Event::SendRefused(ref r) if r.scope == "sign_in" && r.user.as_str() == "user-1"),
    );
    assert!(audited, "the refusal is recorded");
    // Returned codes count too: the budget bounds codes to guess at, not only SMS.
    let returned = f
        .service
        .challenge(
            &host(),
            ChallengeRequest::new("user-1", "session-9").returning_code(),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        returned,
        Error::SendRefused {
            scope: Scope::SignIn,
            ..
        }
    ));
    f.finish().await;
}

async fn a_test_number_is_challenged_with_its_fixed_code_and_sent_nowhere(backend: Backend) {
    let policy = AbusePolicy {
        test_numbers: vec![otp_sms_core::TestNumber {
            number: "+41791234567".into(),
            code: "24682468".into(),
        }],
        ..flow_policy()
    };
    let f = Fixture::with_abuse_policy(backend, policy).await;
    f.add("user-1", PhoneVerification::IsVerified(true)).await;
    f.service
        .challenge(
            &Fixture::caller("user-1"),
            ChallengeRequest::new("user-1", "session-1"),
        )
        .await
        .expect("challenged");
    f.service
        .deliver_pending(&*f.sender, 10, Duration::from_secs(30))
        .await
        .expect("a notifier pass");
    assert!(f.sender.sent().is_empty(), "a test number is sent nothing");
    check(&f, &host(), "session-1", "24682468")
        .await
        .expect("the fixed code signs in");
    f.finish().await;
}

async fn an_idempotency_key_replays_a_challenge_and_a_check(backend: Backend) {
    let f = Fixture::new(backend).await;
    verified(&f).await;
    let keyed = |key: &str| host().with_idempotency_key(Some(IdempotencyKey::parse(key).unwrap()));
    let request = || ChallengeRequest::new("user-1", "session-1").returning_code();
    let first = f
        .service
        .challenge(&keyed("k-1"), request())
        .await
        .expect("challenged");
    let again = f
        .service
        .challenge(&keyed("k-1"), request())
        .await
        .expect("replayed");
    assert_eq!(first.code, again.code, "the first call's answer");
    let issued = f
        .feed()
        .await
        .iter()
        .filter(|e| matches!(e.event, Event::ChallengeIssued(_)))
        .count();
    assert_eq!(issued, 1);
    let code = first.code.expect("returned").expose().to_owned();
    let check = || CheckRequest::new("user-1", "session-1", code.clone());
    f.service
        .check(&keyed("k-2"), check())
        .await
        .expect("signed in");
    f.service
        .check(&keyed("k-2"), check())
        .await
        .expect("the retry gets the first answer, not a replay refusal");
    assert_eq!(successes(&f).await, 1);
    // The key names one request: another code under it is refused.
    let other = f
        .service
        .check(
            &keyed("k-2"),
            CheckRequest::new("user-1", "session-1", "11111111"),
        )
        .await;
    assert!(
        matches!(
            other,
            Err(Error::InvalidArgument {
                field: "Idempotency-Key",
                ..
            })
        ),
        "{other:?}"
    );
    assert_eq!(successes(&f).await, 1, "nothing more was recorded");
    f.finish().await;
}
