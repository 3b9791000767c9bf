//! Idempotency keys through the command service, on both stores: a retry under the key of a
//! call gets that call's answer, whatever became of the first attempt, and nothing is written
//! twice.

use std::sync::Arc;
use std::time::Duration;

use otp_sms_core::{
    AddRequest, Caller, Delivery, Error, Event, IdempotencyKey, PhoneVerification, RecordedEvent,
    RegistrationRequest, VerifyRequest,
};
use otp_sms_tests::faults::{AppendFault, FaultyStore};
use otp_sms_tests::fixture::{Backend, Fixture};

fn keyed(principal: &str, key: &str) -> Caller {
    Fixture::caller(principal).with_idempotency_key(Some(IdempotencyKey::parse(key).unwrap()))
}

fn add_req(phone: &str, verification: PhoneVerification) -> AddRequest {
    AddRequest {
        user_id: "user-1".into(),
        organization: None,
        phone: phone.into(),
        verification,
    }
}

fn verify_req(registration: &str, code: &str) -> VerifyRequest {
    VerifyRequest {
        user_id: "user-1".into(),
        organization: None,
        registration_id: registration.into(),
        code: code.into(),
    }
}

fn count(feed: &[Arc<RecordedEvent<Event>>], pick: fn(&Event) -> bool) -> usize {
    feed.iter().filter(|r| pick(&r.event)).count()
}

/// Messages in the outbox (leases them: call once per test).
async fn outbox_len(f: &Fixture) -> usize {
    f.store
        .fetch_outbox(1000, Duration::from_millis(1))
        .await
        .expect("outbox")
        .len()
}

otp_sms_tests::on_stores_with_faults!(
    [memory: Memory, 0; postgres: Postgres, 0],
    [
        a_retry_after_an_unknown_outcome_gets_the_first_registration,
        a_retry_after_a_lost_attempt_writes_it_once,
        a_replayed_return_code_add_answers_the_same_code,
        a_key_sent_with_another_request_is_invalid_and_writes_nothing,
        keys_are_the_callers_own,
        concurrent_calls_under_one_key_write_once,
        a_replayed_wrong_code_is_still_wrong_and_counted_once,
        a_replayed_remove_answers_its_details,
        a_replayed_resend_answers_the_same_code,
        calls_without_a_key_are_independent,
        a_caller_past_its_key_allowance_is_refused_and_nothing_is_stored,
    ],
);

/// Given an add with `send_code` that committed but answered 503 (its answer lost, the stream
/// unreadable), when the client retries under the same key, then it gets the registration
/// that committed, and one SMS is queued, not two.
async fn a_retry_after_an_unknown_outcome_gets_the_first_registration(
    f: &Fixture,
    faulty: &FaultyStore,
) {
    let caller = keyed("user-1", "add-1");
    faulty.arm_appends([Some(AppendFault::CommitThenLoseAnswer)]);
    faulty.fail_reads_after_fault(100);
    let first = f
        .service
        .add(
            &caller,
            add_req("+41791234567", PhoneVerification::SendCode),
        )
        .await
        .unwrap_err();
    assert!(matches!(first, Error::Unavailable(_)), "{first:?}");
    faulty.fail_reads(0);
    let retry = f
        .service
        .add(
            &caller,
            add_req("+41791234567", PhoneVerification::SendCode),
        )
        .await
        .expect("the retry gets the first answer");
    let feed = f.feed().await;
    assert_eq!(count(&feed, |e| matches!(e, Event::Added(_))), 1);
    assert_eq!(
        &*feed[0].stream.aggregate_id,
        retry.registration_id.as_str()
    );
    assert_eq!(retry.details.created, feed[0].created_at);
    assert!(retry.verification_code.is_none());
    // And once more, later: the same answer.
    let again = f
        .service
        .add(
            &caller,
            add_req("+41791234567", PhoneVerification::SendCode),
        )
        .await
        .expect("replay");
    assert_eq!(again.registration_id, retry.registration_id);
    assert_eq!(again.details, retry.details);
    assert_eq!(outbox_len(f).await, 1, "one SMS, not two");
}

/// Given an add lost before it reached the store (answered 503), when retried under its
/// key, then it is written once, under the registration id the key recorded.
async fn a_retry_after_a_lost_attempt_writes_it_once(f: &Fixture, faulty: &FaultyStore) {
    let caller = keyed("user-1", "add-lost");
    // Every attempt of the first call is lost.
    faulty.arm_appends([Some(AppendFault::LoseBeforeCommit); 10]);
    let first = f
        .service
        .add(
            &caller,
            add_req("+41791234567", PhoneVerification::SendCode),
        )
        .await;
    assert!(first.is_err(), "{first:?}");
    assert!(f.feed().await.is_empty(), "nothing written");
    let retry = f
        .service
        .add(
            &caller,
            add_req("+41791234567", PhoneVerification::SendCode),
        )
        .await
        .expect("written now");
    let feed = f.feed().await;
    assert_eq!(count(&feed, |e| matches!(e, Event::Added(_))), 1);
    assert_eq!(
        &*feed[0].stream.aggregate_id,
        retry.registration_id.as_str()
    );
    assert_eq!(outbox_len(f).await, 1);
}

/// A replayed `return_code` add answers the code it answered first, and that code verifies.
async fn a_replayed_return_code_add_answers_the_same_code(f: &Fixture, _faulty: &FaultyStore) {
    let caller = keyed("user-1", "add-return");
    let req = || add_req("+41791234567", PhoneVerification::ReturnCode);
    let first = f.service.add(&caller, req()).await.expect("add");
    let replay = f.service.add(&caller, req()).await.expect("replay");
    assert_eq!(replay.registration_id, first.registration_id);
    assert_eq!(replay.details, first.details);
    let code = first.verification_code.expect("code");
    assert_eq!(
        replay.verification_code.as_ref().map(|c| c.expose()),
        Some(code.expose())
    );
    assert_eq!(
        count(&f.feed().await, |e| matches!(e, Event::CodeAdded(_))),
        1
    );
    f.service
        .verify(
            &Fixture::caller("user-1"),
            verify_req(first.registration_id.as_str(), code.expose()),
        )
        .await
        .expect("the code verifies");
}

/// A key sent again with another request is INVALID_ARGUMENT and writes nothing; a number
/// written another way is the same request.
async fn a_key_sent_with_another_request_is_invalid_and_writes_nothing(
    f: &Fixture,
    _faulty: &FaultyStore,
) {
    let caller = keyed("user-1", "add-2");
    let first = f
        .service
        .add(
            &caller,
            add_req("+41791234567", PhoneVerification::ReturnCode),
        )
        .await
        .expect("add");
    let before = f.feed().await.len();
    for other in [
        add_req("+41791234568", PhoneVerification::ReturnCode),
        add_req("+41791234567", PhoneVerification::SendCode),
    ] {
        let err = f.service.add(&caller, other).await.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { field, .. } if *field == "Idempotency-Key"),
            "{err:?}"
        );
        assert_eq!(err.http_status(), 400);
    }
    assert_eq!(f.feed().await.len(), before, "nothing written");
    // Another call under the same key is another request too.
    let err = f
        .service
        .verify(
            &caller,
            verify_req(first.registration_id.as_str(), "12345678"),
        )
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument { field, .. } if *field == "Idempotency-Key"));
    let same = f
        .service
        .add(
            &caller,
            add_req("+41 79 123 45 67", PhoneVerification::ReturnCode),
        )
        .await
        .expect("the same number, written with spaces");
    assert_eq!(same.registration_id, first.registration_id);
}

/// The same key sent by another principal is another key.
async fn keys_are_the_callers_own(f: &Fixture, _faulty: &FaultyStore) {
    let mine = f
        .service
        .add(
            &keyed("user-1", "shared-key"),
            add_req("+41791234567", PhoneVerification::ReturnCode),
        )
        .await
        .expect("add");
    let req = AddRequest {
        user_id: "user-1".into(),
        organization: None,
        phone: "+41791234567".into(),
        verification: PhoneVerification::ReturnCode,
    };
    let admins = f
        .service
        .add(&keyed("admin", "shared-key"), req)
        .await
        .expect("add by another principal");
    assert_ne!(admins.registration_id, mine.registration_id);
    assert_eq!(count(&f.feed().await, |e| matches!(e, Event::Added(_))), 2);
}

/// Given an allowance of 3 keys per caller, when user-1 adds under a 4th new key, then the
/// call is RESOURCE_EXHAUSTED and writes nothing; a retry under a key it holds still gets its
/// first answer, and another caller's keys are not counted against it.
async fn a_caller_past_its_key_allowance_is_refused_and_nothing_is_stored(
    f: &Fixture,
    _faulty: &FaultyStore,
) {
    let service = f.service.clone().with_idempotency_keys_per_caller(3);
    let mut held = Vec::new();
    for i in 0..3 {
        let added = service
            .add(
                &keyed("user-1", &format!("k{i}")),
                add_req(&format!("+4179123456{i}"), PhoneVerification::ReturnCode),
            )
            .await
            .expect("within the allowance");
        held.push(added);
    }
    let written = f.feed().await.len();
    let refused = service
        .add(
            &keyed("user-1", "k3"),
            add_req("+41791234563", PhoneVerification::ReturnCode),
        )
        .await;
    assert!(
        matches!(refused, Err(Error::QuotaExceeded(_))),
        "{refused:?}"
    );
    assert_eq!(refused.unwrap_err().rpc_code().as_i32(), 8);
    assert_eq!(f.feed().await.len(), written, "nothing written");

    let replayed = service
        .add(
            &keyed("user-1", "k0"),
            add_req("+41791234560", PhoneVerification::ReturnCode),
        )
        .await
        .expect("a key held replays");
    assert_eq!(replayed.registration_id, held[0].registration_id);
    assert_eq!(replayed.verification_code, held[0].verification_code);

    let req = AddRequest {
        user_id: "user-1".into(),
        organization: None,
        phone: "+41791234563".into(),
        verification: PhoneVerification::ReturnCode,
    };
    service
        .add(&keyed("admin", "k3"), req)
        .await
        .expect("another caller's allowance is its own");
}

/// Given 10 calls under one key at once, then one registration is written and every call
/// answers it.
async fn concurrent_calls_under_one_key_write_once(f: &Fixture, _faulty: &FaultyStore) {
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let service = f.service.clone();
            tokio::spawn(async move {
                service
                    .add(
                        &keyed("user-1", "raced"),
                        add_req("+41791234567", PhoneVerification::SendCode),
                    )
                    .await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        ids.push(call.await.expect("task").expect("add").registration_id);
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(count(&f.feed().await, |e| matches!(e, Event::Added(_))), 1);
    assert_eq!(outbox_len(f).await, 1);
}

/// A wrong code replayed under its key is answered as wrong again and recorded once.
async fn a_replayed_wrong_code_is_still_wrong_and_counted_once(f: &Fixture, _faulty: &FaultyStore) {
    let added = f.add("user-1", PhoneVerification::ReturnCode).await;
    let code = added.verification_code.expect("code");
    let wrong = otp_sms_testkit::scenario::wrong_code(code.expose());
    let caller = keyed("user-1", "verify-1");
    let req = || verify_req(added.registration_id.as_str(), &wrong);
    for _ in 0..3 {
        let err = f.service.verify(&caller, req()).await.unwrap_err();
        assert_eq!(err, Error::WrongCode);
    }
    assert_eq!(
        count(&f.feed().await, |e| matches!(e, Event::CheckFailed(_))),
        1
    );
}

/// A remove replayed under its key answers its details again instead of NOT_FOUND.
async fn a_replayed_remove_answers_its_details(f: &Fixture, _faulty: &FaultyStore) {
    let added = f.add("user-1", PhoneVerification::ReturnCode).await;
    let caller = keyed("user-1", "remove-1");
    let req = || RegistrationRequest {
        user_id: "user-1".into(),
        organization: None,
        registration_id: added.registration_id.as_str().into(),
    };
    let first = f.service.remove(&caller, req()).await.expect("removed");
    let replay = f.service.remove(&caller, req()).await.expect("replayed");
    assert_eq!(replay, first);
    let unkeyed = f.service.remove(&Fixture::caller("user-1"), req()).await;
    assert_eq!(unkeyed, Err(Error::RegistrationNotFound));
    assert_eq!(
        count(&f.feed().await, |e| matches!(e, Event::Removed(_))),
        1
    );
}

/// A resend with `return_code` replayed under its key answers the same code and issues no
/// second one.
async fn a_replayed_resend_answers_the_same_code(f: &Fixture, _faulty: &FaultyStore) {
    let added = f.add("user-1", PhoneVerification::ReturnCode).await;
    f.clock.advance(chrono::Duration::seconds(61));
    let caller = keyed("user-1", "resend-1");
    let req = || RegistrationRequest {
        user_id: "user-1".into(),
        organization: None,
        registration_id: added.registration_id.as_str().into(),
    };
    let first = f
        .service
        .resend_code(&caller, req(), Delivery::Return)
        .await
        .expect("resent");
    let replay = f
        .service
        .resend_code(&caller, req(), Delivery::Return)
        .await
        .expect("replayed, within the cooldown");
    assert_eq!(
        replay.verification_code.as_ref().map(|c| c.expose()),
        first.verification_code.as_ref().map(|c| c.expose())
    );
    assert_eq!(replay.details, first.details);
    assert_eq!(
        count(&f.feed().await, |e| matches!(e, Event::CodeAdded(_))),
        2
    );
}

/// Without a key, two calls are two commands.
async fn calls_without_a_key_are_independent(f: &Fixture, _faulty: &FaultyStore) {
    let a = f.add("user-1", PhoneVerification::ReturnCode).await;
    let b = f.add("user-1", PhoneVerification::ReturnCode).await;
    assert_ne!(a.registration_id, b.registration_id);
}

/// After the window (24 hours by default), a key is new again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_new_again_after_its_window() {
    let f = Fixture::new(Backend::Memory).await;
    let caller = keyed("user-1", "old-key");
    let req = || add_req("+41791234567", PhoneVerification::ReturnCode);
    let first = f.service.add(&caller, req()).await.expect("add");
    f.clock.advance(chrono::Duration::hours(23));
    let within = f.service.add(&caller, req()).await.expect("replay");
    assert_eq!(within.registration_id, first.registration_id);
    f.clock.advance(chrono::Duration::hours(2));
    let after = f.service.add(&caller, req()).await.expect("a new add");
    assert_ne!(after.registration_id, first.registration_id);
}
