//! A user's phones listed through the command service, on both stores: from the read model of
//! the feed, with the number masked for callers without `user.write`, and what each phone
//! went through (verified when, last used to sign in when).

use otp_sms_core::{
    Caller, ChallengeRequest, CheckRequest, Error, PhoneVerification, RegistrationRequest,
    UserRequest,
};
use otp_sms_tests::fixture::{Backend, Fixture};

otp_sms_tests::on_both_backends!(
    the_list_shows_each_live_phone_with_its_history,
    only_the_user_or_user_write_may_list_and_only_user_write_sees_the_numbers,
    a_removed_phone_leaves_the_list_and_another_users_never_joins_it,
);

fn user_1() -> UserRequest {
    UserRequest {
        user_id: "user-1".into(),
        organization: None,
    }
}

async fn list(f: &Fixture, caller: &Caller) -> Result<Vec<otp_sms_core::PhoneSummary>, Error> {
    f.service.list_phones(caller, user_1()).await
}

async fn the_list_shows_each_live_phone_with_its_history(backend: Backend) {
    let f = Fixture::new(backend).await;
    let admin = Fixture::caller("admin");
    assert!(list(&f, &admin).await.unwrap().is_empty());
    let unverified = f.add("user-1", PhoneVerification::ReturnCode).await;
    f.clock.advance(chrono::Duration::seconds(5));
    let verified = f.add("user-1", PhoneVerification::IsVerified(true)).await;
    let challenged = f
        .service
        .challenge(
            &admin,
            ChallengeRequest::new("user-1", "session-1")
                .for_registration(verified.registration_id.as_str())
                .returning_code(),
        )
        .await
        .unwrap();
    f.clock.advance(chrono::Duration::seconds(7));
    f.service
        .check(
            &admin,
            CheckRequest::new(
                "user-1",
                "session-1",
                challenged.code.unwrap().expose().to_owned(),
            ),
        )
        .await
        .unwrap();
    let phones = list(&f, &admin).await.unwrap();
    assert_eq!(phones.len(), 2);
    let (first, second) = (&phones[0], &phones[1]);
    assert_eq!(first.id, unverified.registration_id, "oldest first");
    assert!(!first.is_verified);
    assert_eq!((first.verified_at, first.last_sign_in), (None, None));
    assert_eq!(first.phone, "+41791234567");
    assert_eq!(first.created, unverified.details.created);
    assert_eq!(second.id, verified.registration_id);
    assert!(second.is_verified);
    assert!(second.verified_at.is_some());
    assert_eq!(
        second.last_sign_in,
        Some(otp_sms_core::Clock::now(&*f.clock)),
        "the success's time"
    );
    f.finish().await;
}

async fn only_the_user_or_user_write_may_list_and_only_user_write_sees_the_numbers(
    backend: Backend,
) {
    let f = Fixture::new(backend).await;
    f.add("user-1", PhoneVerification::ReturnCode).await;
    let own = list(&f, &Fixture::caller("user-1")).await.unwrap();
    assert_eq!(own[0].phone, "+41*******67", "the user sees it masked");
    let full = list(&f, &Fixture::caller("admin")).await.unwrap();
    assert_eq!(full[0].phone, "+41791234567");
    assert_eq!(
        list(&f, &Fixture::caller("user-2")).await.unwrap_err(),
        Error::PermissionDenied
    );
    let unknown = f
        .service
        .list_phones(
            &Fixture::caller("admin"),
            UserRequest {
                user_id: "nobody".into(),
                organization: None,
            },
        )
        .await;
    assert_eq!(unknown.unwrap_err(), Error::UserNotFound);
    f.finish().await;
}

async fn a_removed_phone_leaves_the_list_and_another_users_never_joins_it(backend: Backend) {
    let f = Fixture::new(backend).await;
    let admin = Fixture::caller("admin");
    let kept = f.add("user-1", PhoneVerification::ReturnCode).await;
    let removed = f.add("user-1", PhoneVerification::ReturnCode).await;
    f.add("user-2", PhoneVerification::ReturnCode).await;
    assert_eq!(list(&f, &admin).await.unwrap().len(), 2);
    f.service
        .remove(
            &admin,
            RegistrationRequest {
                user_id: "user-1".into(),
                organization: None,
                registration_id: removed.registration_id.to_string(),
            },
        )
        .await
        .unwrap();
    let phones = list(&f, &admin).await.unwrap();
    assert_eq!(phones.len(), 1);
    assert_eq!(phones[0].id, kept.registration_id);
    f.finish().await;
}
