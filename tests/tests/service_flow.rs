//! The command service's whole flow, run against both stores: add, verify, resend, remove,
//! the SMS notifier, every error case, and the 50-task concurrency tests.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use otp_sms_core::{
    AddRequest, Append, AppendOutcome, Caller, CodeKey, CodeKeyRing, CommandService, Delivery,
    Error, Event, EventPayload, EventStore, KeyId, OrganizationRef, OutboxMessage, OwnerType,
    PhoneVerification, Precondition, Recorded, RegistrationRequest, RpcCode, Status, StoreError,
    StreamId, VerifyRequest,
};
use otp_sms_postgres::PgStore;
use otp_sms_testkit::doubles::{StaticAuthorizer, StaticUsers};
use otp_sms_tests::fixture::{Backend, Fixture};

fn verify_req(user: &str, registration: &str, code: &str) -> VerifyRequest {
    VerifyRequest {
        user_id: user.to_owned(),
        organization: None,
        registration_id: registration.to_owned(),
        code: code.to_owned(),
    }
}

fn target(user: &str, registration: &str) -> RegistrationRequest {
    RegistrationRequest {
        user_id: user.to_owned(),
        organization: None,
        registration_id: registration.to_owned(),
    }
}

/// A different code of the same length.
fn wrong(code: &str) -> String {
    otp_sms_testkit::scenario::wrong_code(code)
}

async fn returned_code(f: &Fixture) -> (String, String) {
    let added = f.add("user-1", PhoneVerification::ReturnCode).await;
    let code = added
        .verification_code
        .expect("return_code returns the code")
        .expose()
        .to_owned();
    (added.registration_id.into_string(), code)
}

/// Every case runs on both stores, each once with and once without the service's stream
/// cache: the cache must not change a single answer.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        on_both_stores!(@store memory, Memory, 0, $($name),*);
        on_both_stores!(@store postgres, Postgres, 0, $($name),*);
        on_both_stores!(@store memory_cached, Memory, StreamCache::DEFAULT_CAPACITY, $($name),*);
        on_both_stores!(@store postgres_cached, Postgres, StreamCache::DEFAULT_CAPACITY, $($name),*);
    };
    (@store $module:ident, $backend:ident, $cache:expr, $($name:ident),*) => {
        mod $module {
            #[allow(unused_imports)]
            use otp_sms_core::StreamCache;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let f = otp_sms_tests::fixture::Fixture::new(super::Backend::$backend)
                        .await
                        .with_stream_cache($cache);
                    super::$name(&f).await;
                    f.finish().await;
                }
            )*
        }
    };
}

on_both_stores!(
    add_with_return_code_then_verify_returns_the_details,
    add_as_verified_needs_no_code,
    add_refuses_bad_input_and_writes_nothing,
    verify_checks_in_the_documented_order,
    verify_accepts_the_organization_by_id_or_domain,
    an_administrator_with_user_write_may_verify_for_a_user,
    wrong_codes_are_recorded_and_burn_the_code_after_five,
    an_expired_code_is_refused,
    a_verified_registration_refuses_another_verify,
    bad_input_changes_nothing,
    resend_is_rate_limited_and_voids_the_old_code,
    remove_then_nothing_is_found,
    the_notifier_sends_once_and_records_code_sent,
    the_notifier_retries_a_failed_send_and_drops_expired_codes,
    no_recoverable_code_remains_at_rest_after_delivery,
    fifty_tasks_with_the_right_code_verify_exactly_once,
    fifty_tasks_with_wrong_codes_record_exactly_the_limit,
    an_unreachable_user_directory_is_unavailable,
    an_add_under_a_used_registration_id_is_refused_and_writes_nothing,
    another_process_writing_the_stream_changes_no_answer,
);

async fn add_with_return_code_then_verify_returns_the_details(f: &Fixture) {
    // Another registration first, so that feed positions and stream sequences differ.
    f.add("user-2", PhoneVerification::IsVerified(true)).await;
    let added = f.add("user-1", PhoneVerification::ReturnCode).await;
    let registration = added.registration_id.as_str().to_owned();
    let code = added.verification_code.clone().unwrap();
    assert_eq!(code.expose().len(), 8);
    assert_eq!(added.details.id, added.registration_id);
    assert_eq!(added.details.owner.owner_type, OwnerType::Org);
    assert_eq!(added.details.owner.id, "org-1");

    let details = f
        .service
        .verify(
            &Fixture::caller("user-1"),
            verify_req("user-1", &registration, code.expose()),
        )
        .await
        .expect("verify");
    let stream = f
        .store
        .read_stream(&CommandService::stream_id(
            &Fixture::caller("user-1").instance,
            &added.registration_id,
        ))
        .await
        .unwrap();
    let types: Vec<_> = stream.iter().map(|e| e.event.event_type()).collect();
    assert_eq!(
        types,
        vec![
            "user.otp_sms.added",
            "user.otp_sms.code.added",
            "user.otp_sms.verified"
        ]
    );
    if let Some(cache) = f.service.stream_cache() {
        // What the service wrote down for itself is what the store recorded, field by field.
        let id =
            CommandService::stream_id(&Fixture::caller("user-1").instance, &added.registration_id);
        assert_eq!(cache.get(&id).as_ref(), Some(&stream));
    }
    assert_eq!(details.id.as_str(), registration);
    assert_eq!(
        details.created, stream[0].created_at,
        "created = first event"
    );
    assert_eq!(
        details.changed, stream[2].created_at,
        "changed = verified event"
    );
    assert_eq!(details.owner.owner_type, OwnerType::Org);
    assert_eq!(details.owner.id, "org-1");
    assert!(stream.iter().all(|e| e.owner.as_str() == "org-1"));
    assert!(stream.iter().all(|e| e.creator.as_str() == "user-1"));
    // Nothing to send: the code was returned.
    assert!(f
        .store
        .fetch_outbox(10, Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());
}

async fn add_as_verified_needs_no_code(f: &Fixture) {
    let added = f.add("user-1", PhoneVerification::IsVerified(true)).await;
    assert!(added.verification_code.is_none());
    let err = f
        .service
        .verify(
            &Fixture::caller("user-1"),
            verify_req("user-1", added.registration_id.as_str(), "12345678"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::FailedPrecondition(Precondition::AlreadyVerified)
    );
}

async fn add_refuses_bad_input_and_writes_nothing(f: &Fixture) {
    let caller = Fixture::caller("user-1");
    let cases = [
        ("", "+41791234567", PhoneVerification::SendCode, "id"),
        ("user-1", "", PhoneVerification::SendCode, "phone.number"),
        (
            "user-1",
            "+4179123456789012345678",
            PhoneVerification::SendCode,
            "phone.number",
        ),
        (
            "user-1",
            "not a phone",
            PhoneVerification::SendCode,
            "phone.number",
        ),
        (
            "user-1",
            "+41791234567",
            PhoneVerification::IsVerified(false),
            "phone.is_verified",
        ),
    ];
    for (user, phone, verification, field) in cases {
        let err = f
            .service
            .add(
                &caller,
                AddRequest {
                    user_id: user.to_owned(),
                    organization: None,
                    phone: phone.to_owned(),
                    verification,
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument { field: f, .. } if *f == field),
            "{user:?} {phone:?}: {err:?}"
        );
        assert_eq!(err.http_status(), 400);
    }
    let unknown = f
        .service
        .add(
            &Fixture::caller("nobody"),
            AddRequest {
                user_id: "nobody".into(),
                organization: None,
                phone: "+41791234567".into(),
                verification: PhoneVerification::SendCode,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(unknown, Error::UserNotFound);
    let denied = f
        .service
        .add(
            &Fixture::caller("stranger"),
            AddRequest {
                user_id: "user-1".into(),
                organization: None,
                phone: "+41791234567".into(),
                verification: PhoneVerification::SendCode,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(denied, Error::PermissionDenied);
    assert!(f.feed().await.is_empty());
}

async fn verify_checks_in_the_documented_order(f: &Fixture) {
    let (registration, code) = returned_code(f).await;
    let user = Fixture::caller("user-1");
    let stranger = Fixture::caller("stranger");
    let cases: Vec<(Caller, VerifyRequest, RpcCode)> = vec![
        // 1. The code's bounds come first, even for an unknown user or a stranger.
        (
            stranger.clone(),
            verify_req("nobody", "nope", ""),
            RpcCode::InvalidArgument,
        ),
        (
            stranger.clone(),
            verify_req("nobody", "nope", &"1".repeat(201)),
            RpcCode::InvalidArgument,
        ),
        // 2. Then the user.
        (
            stranger.clone(),
            verify_req("nobody", &registration, &code),
            RpcCode::NotFound,
        ),
        (
            stranger.clone(),
            VerifyRequest {
                organization: Some(OrganizationRef::Id("org-2".into())),
                ..verify_req("user-1", &registration, &code)
            },
            RpcCode::NotFound,
        ),
        (
            stranger.clone(),
            VerifyRequest {
                organization: Some(OrganizationRef::Domain("unknown.example.com".into())),
                ..verify_req("user-1", &registration, &code)
            },
            RpcCode::NotFound,
        ),
        // 3. Then the caller's right.
        (
            stranger.clone(),
            verify_req("user-1", "nope", &code),
            RpcCode::PermissionDenied,
        ),
        // 4. Then the registration: unknown, or another user's.
        (
            user.clone(),
            verify_req("user-1", "nope", &code),
            RpcCode::NotFound,
        ),
        (
            Fixture::caller("user-2"),
            verify_req("user-2", &registration, &code),
            RpcCode::NotFound,
        ),
    ];
    for (caller, req, expected) in cases {
        let err = f.service.verify(&caller, req.clone()).await.unwrap_err();
        assert_eq!(err.rpc_code(), expected, "{:?} -> {err:?}", req.user_id);
    }
    // None of that wrote anything beyond the add.
    assert_eq!(f.feed().await.len(), 2);
    // A 200-character multi-byte code passes the bounds and is just wrong.
    let err = f
        .service
        .verify(&user, verify_req("user-1", &registration, &"é".repeat(200)))
        .await
        .unwrap_err();
    assert_eq!(err, Error::WrongCode);
    f.service
        .verify(&user, verify_req("user-1", &registration, &code))
        .await
        .expect("the right code still works");
}

async fn verify_accepts_the_organization_by_id_or_domain(f: &Fixture) {
    let (registration, code) = returned_code(f).await;
    let by_domain = VerifyRequest {
        organization: Some(OrganizationRef::Domain("org-1.example.com".into())),
        ..verify_req("user-1", &registration, &wrong(&code))
    };
    assert_eq!(
        f.service
            .verify(&Fixture::caller("user-1"), by_domain)
            .await
            .unwrap_err(),
        Error::WrongCode
    );
    let by_id = VerifyRequest {
        organization: Some(OrganizationRef::Id("org-1".into())),
        ..verify_req("user-1", &registration, &code)
    };
    f.service
        .verify(&Fixture::caller("user-1"), by_id)
        .await
        .expect("verify with the expected organization");
}

async fn an_administrator_with_user_write_may_verify_for_a_user(f: &Fixture) {
    let (registration, code) = returned_code(f).await;
    let details = f
        .service
        .verify(
            &Fixture::caller("admin"),
            verify_req("user-1", &registration, &code),
        )
        .await
        .expect("admin verifies");
    assert_eq!(details.owner.id, "org-1");
    let feed = f.feed().await;
    assert_eq!(feed.last().unwrap().creator.as_str(), "admin");
}

async fn wrong_codes_are_recorded_and_burn_the_code_after_five(f: &Fixture) {
    let (registration, code) = returned_code(f).await;
    let caller = Fixture::caller("user-1");
    for attempt in 1..=5 {
        let err = f
            .service
            .verify(&caller, verify_req("user-1", &registration, &wrong(&code)))
            .await
            .unwrap_err();
        assert_eq!(err, Error::WrongCode, "attempt {attempt}");
        assert_eq!(err.http_status(), 400);
    }
    let err = f
        .service
        .verify(&caller, verify_req("user-1", &registration, &code))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::FailedPrecondition(Precondition::TooManyAttempts)
    );
    let failed = f
        .feed()
        .await
        .iter()
        .filter(|e| matches!(e.event, Event::CheckFailed(_)))
        .count();
    assert_eq!(failed, 5);
    // Only a new code helps.
    f.clock.advance(chrono::Duration::seconds(60));
    let resent = f
        .service
        .resend_code(&caller, target("user-1", &registration), Delivery::Return)
        .await
        .expect("resend");
    let new_code = resent.verification_code.unwrap();
    f.service
        .verify(
            &caller,
            verify_req("user-1", &registration, new_code.expose()),
        )
        .await
        .expect("the new code works");
}

async fn an_expired_code_is_refused(f: &Fixture) {
    let (registration, code) = returned_code(f).await;
    f.clock.advance(chrono::Duration::minutes(5));
    let err = f
        .service
        .verify(
            &Fixture::caller("user-1"),
            verify_req("user-1", &registration, &code),
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::FailedPrecondition(Precondition::CodeExpired));
    assert_eq!(err.rpc_code(), RpcCode::FailedPrecondition);
    assert_eq!(
        f.feed().await.len(),
        2,
        "an expired attempt records nothing"
    );
}

async fn a_verified_registration_refuses_another_verify(f: &Fixture) {
    let (registration, code) = returned_code(f).await;
    let caller = Fixture::caller("user-1");
    f.service
        .verify(&caller, verify_req("user-1", &registration, &code))
        .await
        .unwrap();
    for c in [code.clone(), wrong(&code)] {
        let err = f
            .service
            .verify(&caller, verify_req("user-1", &registration, &c))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            Error::FailedPrecondition(Precondition::AlreadyVerified)
        );
    }
    assert_eq!(f.feed().await.len(), 3);
}

/// Given a service whose cache (when it has one) holds a registration's history, when another
/// process sharing the store writes that registration, then the service still answers as
/// the store's history says and appends nothing on a stale basis.
async fn another_process_writing_the_stream_changes_no_answer(f: &Fixture) {
    let (registration, code) = returned_code(f).await;
    let caller = Fixture::caller("user-1");
    let other = f.other_process();
    other
        .verify(&caller, verify_req("user-1", &registration, &code))
        .await
        .expect("the other process verifies");
    // Stale: the cache says unverified. The verify it decides is refused by the version check,
    // and the retry reads the store.
    assert_eq!(
        f.service
            .verify(&caller, verify_req("user-1", &registration, &code))
            .await
            .unwrap_err(),
        Error::FailedPrecondition(Precondition::AlreadyVerified)
    );
    assert_eq!(f.feed().await.len(), 3, "one verified event, not two");
    other
        .remove(&caller, target("user-1", &registration))
        .await
        .expect("the other process removes");
    // Stale: the cache says verified, which refuses a verify without recording anything, so
    // without a version check. The answer must still be the store's.
    for (c, what) in [(code.clone(), "right code"), (wrong(&code), "wrong code")] {
        assert_eq!(
            f.service
                .verify(&caller, verify_req("user-1", &registration, &c))
                .await
                .unwrap_err(),
            Error::RegistrationNotFound,
            "{what}"
        );
    }
    assert_eq!(
        f.service
            .remove(&caller, target("user-1", &registration))
            .await
            .unwrap_err(),
        Error::RegistrationNotFound
    );
    assert_eq!(f.feed().await.len(), 4, "nothing after the removal");
}

async fn bad_input_changes_nothing(f: &Fixture) {
    let (registration, code) = returned_code(f).await;
    let before = f.feed().await;
    let caller = Fixture::caller("user-1");
    let long_id = "u".repeat(201);
    let nasty = [
        verify_req("user-1", &registration, ""),
        verify_req("user-1", &registration, &"9".repeat(201)),
        verify_req("user-1", &registration, &"🦀".repeat(201)),
        verify_req(&long_id, &registration, &code),
        verify_req("user-1", &"r".repeat(201), &code),
        verify_req("user-1", "", &code),
        verify_req("user-1\0", &registration, &code),
        verify_req("user-1'; DROP TABLE events; --", &registration, &code),
        verify_req("user-1", "' OR '1'='1", &code),
    ];
    for req in nasty {
        let err = f.service.verify(&caller, req).await.unwrap_err();
        assert!(
            matches!(err.rpc_code(), RpcCode::InvalidArgument | RpcCode::NotFound),
            "{err:?}"
        );
    }
    assert_eq!(
        f.feed().await,
        before,
        "the store holds exactly what it held"
    );
    f.service
        .verify(&caller, verify_req("user-1", &registration, &code))
        .await
        .expect("and the registration still works");
}

async fn resend_is_rate_limited_and_voids_the_old_code(f: &Fixture) {
    let (registration, old) = returned_code(f).await;
    let caller = Fixture::caller("user-1");
    f.clock.advance(chrono::Duration::seconds(30));
    let err = f
        .service
        .resend_code(&caller, target("user-1", &registration), Delivery::Return)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::RateLimited {
            retry_after: Duration::from_secs(30)
        }
    );
    assert_eq!(err.http_status(), 429);
    f.clock.advance(chrono::Duration::seconds(30));
    let resent = f
        .service
        .resend_code(&caller, target("user-1", &registration), Delivery::Return)
        .await
        .expect("resend after 60 s");
    let new = resent.verification_code.unwrap();
    let err = f
        .service
        .verify(&caller, verify_req("user-1", &registration, &old))
        .await;
    // The old code is void (a wrong code now), unless both codes happen to be equal.
    if old != new.expose() {
        assert_eq!(err.unwrap_err(), Error::WrongCode);
    }
    f.service
        .verify(&caller, verify_req("user-1", &registration, new.expose()))
        .await
        .expect("the new code works");
}

async fn remove_then_nothing_is_found(f: &Fixture) {
    let (registration, code) = returned_code(f).await;
    let caller = Fixture::caller("user-1");
    let denied = f
        .service
        .remove(
            &Fixture::caller("stranger"),
            target("user-1", &registration),
        )
        .await
        .unwrap_err();
    assert_eq!(denied, Error::PermissionDenied);
    let details = f
        .service
        .remove(&caller, target("user-1", &registration))
        .await
        .expect("remove");
    assert_eq!(details.id.as_str(), registration);
    assert_eq!(details.changed, f.feed().await.last().unwrap().created_at);
    for err in [
        f.service
            .verify(&caller, verify_req("user-1", &registration, &code))
            .await
            .unwrap_err(),
        f.service
            .remove(&caller, target("user-1", &registration))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err, Error::RegistrationNotFound);
        assert_eq!(err.http_status(), 404);
    }
}

async fn the_notifier_sends_once_and_records_code_sent(f: &Fixture) {
    let added = f.add("user-1", PhoneVerification::SendCode).await;
    assert!(
        added.verification_code.is_none(),
        "send_code returns no code"
    );
    let lease = Duration::from_secs(30);
    let report = f
        .service
        .deliver_pending(&*f.sender, 10, lease)
        .await
        .unwrap();
    assert_eq!((report.sent, report.dropped, report.failed), (1, 0, 0));
    let sent = f.sender.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].phone.as_e164(), "+41791234567");
    assert_eq!(sent[0].registration, added.registration_id);
    // Nothing left to deliver, and `code sent` is recorded once.
    let again = f
        .service
        .deliver_pending(&*f.sender, 10, lease)
        .await
        .unwrap();
    assert_eq!((again.sent, again.dropped, again.failed), (0, 0, 0));
    assert_eq!(f.sender.sent().len(), 1);
    let code_sent = f
        .feed()
        .await
        .iter()
        .filter(|e| matches!(e.event, Event::CodeSent(_)))
        .count();
    assert_eq!(code_sent, 1);
    f.service
        .verify(
            &Fixture::caller("user-1"),
            verify_req(
                "user-1",
                added.registration_id.as_str(),
                sent[0].code.expose(),
            ),
        )
        .await
        .expect("the SMS code verifies");
}

async fn the_notifier_retries_a_failed_send_and_drops_expired_codes(f: &Fixture) {
    let first = f.add("user-1", PhoneVerification::SendCode).await;
    let lease = Duration::from_millis(300);
    f.sender.set_failing(true);
    let report = f
        .service
        .deliver_pending(&*f.sender, 10, lease)
        .await
        .unwrap();
    assert_eq!((report.sent, report.deferred), (0, 1));
    // Still pending, registration still unsent; hidden for its back-off (1 s).
    f.sender.set_failing(false);
    let report = f
        .service
        .deliver_pending(&*f.sender, 10, lease)
        .await
        .unwrap();
    assert_eq!(report, Default::default(), "not before its back-off");
    f.let_lease_run_out(Duration::from_secs(1)).await;
    let report = f
        .service
        .deliver_pending(&*f.sender, 10, lease)
        .await
        .unwrap();
    assert_eq!(report.sent, 1, "retried after the back-off");
    assert_eq!(f.sender.sent()[0].registration, first.registration_id);

    // A code that expires before it could be sent is dropped, not sent late.
    f.add("user-2", PhoneVerification::SendCode).await;
    f.clock.advance(chrono::Duration::minutes(6));
    let report = f
        .service
        .deliver_pending(&*f.sender, 10, lease)
        .await
        .unwrap();
    assert_eq!((report.sent, report.dropped), (0, 1));
    assert_eq!(f.sender.sent().len(), 1);
    assert!(f.store.fetch_outbox(10, lease).await.unwrap().is_empty());
}

async fn no_recoverable_code_remains_at_rest_after_delivery(f: &Fixture) {
    let added = f.add("user-1", PhoneVerification::SendCode).await;
    // Before delivery, the only copy is encrypted in the outbox.
    let pending = f
        .store
        .fetch_outbox(10, Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    f.let_lease_run_out(Duration::from_millis(1)).await;
    f.service
        .deliver_pending(&*f.sender, 10, Duration::from_secs(30))
        .await
        .unwrap();
    let sent = f.sender.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].registration, added.registration_id);
    let code = sent[0].code.expose().to_owned();
    assert!(!pending[0].payload.to_string().contains(&code));
    for e in f.feed().await {
        let json = e.event.to_json().unwrap().to_string();
        assert!(!json.contains(&code), "{json}");
        assert!(!format!("{e:?}").contains(&code));
    }
    assert!(f
        .store
        .fetch_outbox(10, Duration::from_secs(1))
        .await
        .unwrap()
        .is_empty());
    let state = otp_sms_core::Registration::from_events(
        &f.feed()
            .await
            .into_iter()
            .map(|e| e.event.clone())
            .collect::<Vec<_>>(),
    );
    assert_eq!(state.status, Status::Unverified);
}

async fn fifty_tasks_with_the_right_code_verify_exactly_once(f: &Fixture) {
    let (registration, code) = returned_code(f).await;
    let service = Arc::new(f.service.clone());
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let service = Arc::clone(&service);
            let req = verify_req("user-1", &registration, &code);
            tokio::spawn(async move { service.verify(&Fixture::caller("user-1"), req).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(e, Error::FailedPrecondition(Precondition::AlreadyVerified)),
        }
    }
    assert_eq!(ok, 1);
    let verified = f
        .feed()
        .await
        .iter()
        .filter(|e| matches!(e.event, Event::Verified(_)))
        .count();
    assert_eq!(verified, 1);
}

async fn fifty_tasks_with_wrong_codes_record_exactly_the_limit(f: &Fixture) {
    let (registration, code) = returned_code(f).await;
    let service = Arc::new(f.service.clone());
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let service = Arc::clone(&service);
            let req = verify_req("user-1", &registration, &wrong(&code));
            tokio::spawn(async move { service.verify(&Fixture::caller("user-1"), req).await })
        })
        .collect();
    let mut wrong_answers = 0;
    for t in tasks {
        match t.await.unwrap().unwrap_err() {
            Error::WrongCode => wrong_answers += 1,
            e => assert_eq!(e, Error::FailedPrecondition(Precondition::TooManyAttempts)),
        }
    }
    let limit = f.service.policy().max_failed_checks() as usize;
    assert_eq!(wrong_answers, limit);
    let failed = f
        .feed()
        .await
        .iter()
        .filter(|e| matches!(e.event, Event::CheckFailed(_)))
        .count();
    assert_eq!(failed, limit);
    let later = f
        .service
        .verify(
            &Fixture::caller("user-1"),
            verify_req("user-1", &registration, &code),
        )
        .await
        .unwrap_err();
    assert_eq!(
        later,
        Error::FailedPrecondition(Precondition::TooManyAttempts)
    );
}

async fn an_unreachable_user_directory_is_unavailable(f: &Fixture) {
    let (registration, code) = returned_code(f).await;
    f.users.set_unavailable(true);
    let err = f
        .service
        .verify(
            &Fixture::caller("user-1"),
            verify_req("user-1", &registration, &code),
        )
        .await
        .unwrap_err();
    f.users.set_unavailable(false);
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert_eq!(err.http_status(), 503);
}

/// An id generator that breaks its promise and hands out one id forever.
struct OneId(otp_sms_core::RegistrationId);

impl otp_sms_core::IdGenerator for OneId {
    fn registration_id(&self) -> otp_sms_core::RegistrationId {
        self.0.clone()
    }
    fn message_id(&self) -> uuid::Uuid {
        uuid::Uuid::now_v7()
    }
}

/// Given a registration, when an add is issued under its id (a broken id generator), then the
/// add is refused as INTERNAL and the store holds exactly what it held: the add skips its read
/// on the first attempt, so this is the store's version check at work.
async fn an_add_under_a_used_registration_id_is_refused_and_writes_nothing(f: &Fixture) {
    let first = f.add("user-1", PhoneVerification::ReturnCode).await;
    let before = f.feed().await;
    let service = CommandService::new(
        f.store.clone(),
        f.users.clone(),
        Arc::new(StaticAuthorizer::new()),
        otp_sms_tests::fixture::keys(),
    )
    .with_clock(f.clock.clone())
    .with_ids(Arc::new(OneId(first.registration_id.clone())))
    .with_abuse_policy(otp_sms_tests::fixture::flow_policy())
    .unwrap();
    let err = service
        .add(
            &Fixture::caller("user-1"),
            AddRequest {
                user_id: "user-1".into(),
                organization: None,
                phone: "+41791234567".into(),
                verification: PhoneVerification::ReturnCode,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "{err:?}");
    assert_eq!(err.rpc_code(), RpcCode::Internal);
    let after = f.feed().await;
    assert_eq!(before.len(), after.len());
    assert!(before.iter().zip(&after).all(|(b, a)| b == a));
}

/// A PostgreSQL server that cannot be reached makes every call UNAVAILABLE, not a panic.
#[tokio::test]
async fn an_unreachable_database_is_unavailable() {
    let pool = otp_sms_postgres::pool_options()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .unwrap();
    let store = Arc::new(PgStore::<Event>::new(pool, "otp_sms").unwrap());
    let users = Arc::new(StaticUsers::new().with_user("inst-1", "user-1", "org-1"));
    let keys = CodeKeyRing::new(CodeKey::new(KeyId::new("k"), &[1; 32]));
    let service = CommandService::new(store, users, Arc::new(StaticAuthorizer::new()), keys)
        .with_abuse_policy(otp_sms_tests::fixture::flow_policy())
        .unwrap();
    let err = service
        .verify(
            &Fixture::caller("user-1"),
            verify_req("user-1", "some-registration", "12345678"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert_eq!(err.rpc_code(), RpcCode::Unavailable);
}

/// Registration ids are unique across many adds.
#[tokio::test]
async fn registration_ids_are_unique() {
    let f = Fixture::new(Backend::Memory).await;
    let mut ids = HashSet::new();
    for _ in 0..200 {
        let added = f.add("user-1", PhoneVerification::IsVerified(true)).await;
        assert!(ids.insert(added.registration_id));
    }
}

/// A memory store that counts the stream reads it serves.
struct CountingReads {
    inner: otp_sms_memory::MemoryStore<Event>,
    reads: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl EventStore<Event> for CountingReads {
    async fn read_stream(&self, stream: &StreamId) -> Result<Recorded<Event>, StoreError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.read_stream(stream).await
    }
    async fn append(&self, append: Append<Event>) -> Result<AppendOutcome, StoreError> {
        self.inner.append(append).await
    }
    async fn read_all(&self, after: u64, limit: usize) -> Result<Recorded<Event>, StoreError> {
        self.inner.read_all(after, limit).await
    }
    async fn fetch_outbox(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        self.inner.fetch_outbox(limit, lease).await
    }
    async fn delete_outbox(&self, id: uuid::Uuid) -> Result<bool, StoreError> {
        self.inner.delete_outbox(id).await
    }

    async fn retry_outbox(
        &self,
        id: uuid::Uuid,
        after: std::time::Duration,
    ) -> Result<bool, StoreError> {
        self.inner.retry_outbox(id, after).await
    }

    async fn outbox_stats(&self) -> Result<otp_sms_core::OutboxStats, otp_sms_core::StoreError> {
        self.inner.outbox_stats().await
    }
}

/// A service over a [`CountingReads`] store, with a stream cache of `cache` streams and the
/// users `u0`, `u1`, … `u{users - 1}`.
fn counting_service(cache: usize, users: usize) -> (CommandService, Arc<CountingReads>) {
    let store = Arc::new(CountingReads {
        inner: otp_sms_memory::MemoryStore::new(),
        reads: Default::default(),
    });
    let directory = (0..users).fold(StaticUsers::new(), |d, i| {
        d.with_user("inst-1", &format!("u{i}"), "org-1")
    });
    let service = CommandService::new(
        store.clone(),
        Arc::new(directory),
        // u0 may vouch for its own number (is_verified needs user.write, self included).
        Arc::new(StaticAuthorizer::new().grant("inst-1", "u0", "org-1", "user.write")),
        CodeKeyRing::new(CodeKey::new(KeyId::new("k"), &[1; 32])),
    )
    .with_stream_cache(cache)
    .with_abuse_policy(otp_sms_tests::fixture::flow_policy())
    .unwrap();
    (service, store)
}

async fn add_returning(service: &CommandService, user: &str) -> otp_sms_core::AddResponse {
    service
        .add(
            &Fixture::caller(user),
            AddRequest {
                user_id: user.to_owned(),
                organization: None,
                phone: "+41791234567".into(),
                verification: PhoneVerification::ReturnCode,
            },
        )
        .await
        .expect("add")
}

/// Adds `users` registrations (one per user id `u0`, `u1`, …) and verifies them in the same
/// order; returns how many stream reads the verifies made.
async fn reads_to_verify(cache: usize, users: usize) -> usize {
    let (service, store) = counting_service(cache, users);
    let mut added = Vec::new();
    for i in 0..users {
        let user = format!("u{i}");
        let response = add_returning(&service, &user).await;
        added.push((user, response));
    }
    let before = store.reads.load(std::sync::atomic::Ordering::SeqCst);
    for (user, response) in added {
        service
            .verify(
                &Fixture::caller(&user),
                verify_req(
                    &user,
                    response.registration_id.as_str(),
                    response.verification_code.unwrap().expose(),
                ),
            )
            .await
            .expect("verify");
    }
    store.reads.load(std::sync::atomic::Ordering::SeqCst) - before
}

/// Given a cached history that the store contradicts with a shorter one (a store restored
/// from a backup under a running process), when a command conflicts on it, then the history
/// read for the retry replaces it, and the next command needs no read.
#[tokio::test]
async fn a_cached_history_the_store_contradicts_is_replaced() {
    let (service, store) = counting_service(1024, 1);
    let added = add_returning(&service, "u0").await;
    let stream = CommandService::stream_id(&Fixture::caller("u0").instance, &added.registration_id);
    let cache = service.stream_cache().expect("a cache");
    // Five events where the store has two: a code added, sent, and two failed checks more.
    let mut longer = cache.get(&stream).expect("cached by the add");
    let last = longer.last().unwrap().clone();
    for sequence in 3..=5 {
        let mut invented = (*last).clone();
        invented.sequence = sequence;
        invented.event = Event::CheckFailed(otp_sms_core::CheckFailed { number: 1 });
        longer.push(Arc::new(invented));
    }
    cache.put(&stream, longer);
    let reads = || store.reads.load(std::sync::atomic::Ordering::SeqCst);
    let before = reads();
    service
        .verify(
            &Fixture::caller("u0"),
            verify_req(
                "u0",
                added.registration_id.as_str(),
                added.verification_code.unwrap().expose(),
            ),
        )
        .await
        .expect("the store's history has a pending code");
    assert_eq!(reads() - before, 1, "the conflict's retry read the store");
    assert_eq!(cache.get(&stream).map(|h| h.len()), Some(3));
    service
        .remove(
            &Fixture::caller("u0"),
            target("u0", added.registration_id.as_str()),
        )
        .await
        .expect("remove");
    assert_eq!(
        reads() - before,
        1,
        "the remove decided on the replaced history"
    );
}

/// Given a stream cache, a verify after its add on the same service reads nothing from the
/// store; without one, or once the stream was evicted, it reads.
#[tokio::test]
async fn the_stream_cache_spares_the_read_of_a_recently_written_stream() {
    assert_eq!(
        reads_to_verify(0, 8).await,
        8,
        "no cache: one read per verify"
    );
    assert_eq!(reads_to_verify(1024, 8).await, 0, "cached: no read");
    // 16 streams held (one per shard), 200 written: most verifies find theirs evicted.
    let evicted = reads_to_verify(16, 200).await;
    assert!(evicted >= 200 - 16, "{evicted} reads");
}

/// Given a stream the cache does not hold, when a command reads it and is refused without
/// recording anything, then the history it read is kept: the next command needs no read.
#[tokio::test]
async fn a_refusal_keeps_the_history_it_read() {
    let (service, store) = counting_service(1024, 1);
    let added = service
        .add(
            &Fixture::caller("u0"),
            AddRequest {
                user_id: "u0".into(),
                organization: None,
                phone: "+41791234567".into(),
                verification: PhoneVerification::IsVerified(true),
            },
        )
        .await
        .expect("add");
    let id = added.registration_id.as_str();
    let stream = CommandService::stream_id(&Fixture::caller("u0").instance, &added.registration_id);
    service.stream_cache().expect("a cache").forget(&stream);
    let reads = || store.reads.load(std::sync::atomic::Ordering::SeqCst);
    let before = reads();
    assert_eq!(
        service
            .verify(&Fixture::caller("u0"), verify_req("u0", id, "12345678"))
            .await
            .unwrap_err(),
        Error::FailedPrecondition(Precondition::AlreadyVerified)
    );
    assert_eq!(reads() - before, 1);
    service
        .remove(&Fixture::caller("u0"), target("u0", id))
        .await
        .expect("remove");
    assert_eq!(
        reads() - before,
        1,
        "the remove decided on the kept history"
    );
}

/// A process with a tracing subscriber (global or, as here, scoped) sees every command as a
/// span, and its store calls as spans too; spans are skipped only where no subscriber was ever
/// set (decision 86). The parentage is the server's test (`server_traces.rs`).
#[test]
fn once_a_subscriber_is_set_a_command_and_its_store_calls_are_spans() {
    let names = Arc::new(std::sync::Mutex::new(Vec::new()));
    tracing::subscriber::with_default(SpanNames(names.clone()), || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async {
                let f = Fixture::new(Backend::Memory).await;
                let (registration, code) = returned_code(&f).await;
                f.service
                    .verify(
                        &Fixture::caller("user-1"),
                        verify_req("user-1", &registration, &code),
                    )
                    .await
                    .expect("the right code verifies");
            })
    });
    let names = names.lock().expect("names");
    for span in [
        "otp_sms.command",
        "otp_sms.store.read_stream",
        "otp_sms.store.append",
    ] {
        assert!(names.contains(&span), "no {span} span in {names:?}");
    }
}

/// A subscriber that keeps the name of every span opened.
struct SpanNames(Arc<std::sync::Mutex<Vec<&'static str>>>);

impl tracing::Subscriber for SpanNames {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut names = self.0.lock().expect("names");
        names.push(span.metadata().name());
        tracing::span::Id::from_u64(names.len() as u64)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, _: &tracing::Event<'_>) {}

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
