//! Abuse resistance through the command service, on both stores (each with its budget store:
//! in process on the manual clock, or PostgreSQL's on the database's clock): who may skip
//! possession, which numbers may be registered, and every send budget at its boundary.
//! Windows slide on the manual clock, so the sliding cases run on the memory backend.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use otp_sms_core::{
    AbusePolicy, AddRequest, Caller, CommandService, Delivery, Error, Event, EventPayload,
    EventStore, Limit, PhoneVerification, RegistrationRequest, RpcCode, Scope,
};
use otp_sms_tests::fixture::{Backend, Fixture};

otp_sms_tests::on_both_backends!(
    only_user_write_may_vouch_for_a_number_or_see_its_code,
    an_instance_may_let_users_see_their_own_code,
    premium_rate_fixed_line_and_denied_regions_are_refused_at_add,
    the_destination_number_budget_binds_across_users,
    the_user_budget_binds_across_registrations,
    the_registration_cap_counts_live_registrations,
    the_range_budget_binds_sequential_numbers,
    the_address_budget_binds_one_client_and_an_ipv6_network,
    the_instance_and_region_budgets_bind,
    fifty_concurrent_adds_against_a_budget_of_five_send_exactly_five,
    two_services_on_one_store_share_every_budget,
    refusals_are_audited_without_the_whole_number,
    repeated_refusals_are_recorded_once_per_audit_window,
    a_hundred_wrong_codes_in_a_row_lock_every_registration_of_the_user,
    a_right_code_ends_the_run_of_wrong_ones,
    an_administrator_unlocks_and_the_user_cannot,
    test_numbers_send_nothing_take_no_budget_and_verify_with_their_fixed_code,
    a_silent_scope_answers_as_if_sent_and_sends_nothing,
    every_window_scope_binds_at_its_boundary_across_two_services_and_slides,
    a_range_whose_conversion_collapsed_takes_the_tighter_limits,
);

const NUMBER: &str = "+41791234567";

/// The defaults with a number budget of 5 per 10 minutes (and 10 a day) shared by all users,
/// for the specifications of how a budget counts (concurrency, processes, silence, audit) that
/// need one number to bind after a few users.
fn shared_number_budget() -> AbusePolicy {
    AbusePolicy {
        number: vec![
            Limit::new(5, Duration::from_secs(600)),
            Limit::new(10, Duration::from_secs(24 * 3600)),
        ],
        ..AbusePolicy::default()
    }
}

fn add_req(user: &str, phone: &str, verification: PhoneVerification) -> AddRequest {
    AddRequest {
        user_id: user.to_owned(),
        organization: None,
        phone: phone.to_owned(),
        verification,
    }
}

async fn add(
    service: &CommandService,
    caller: &Caller,
    user: &str,
    phone: &str,
    verification: PhoneVerification,
) -> Result<otp_sms_core::AddResponse, Error> {
    service
        .add(caller, add_req(user, phone, verification))
        .await
}

/// `u{i}` adds `phone` for themselves with `send_code`.
async fn send(f: &Fixture, i: usize, phone: &str) -> Result<otp_sms_core::AddResponse, Error> {
    let user = format!("u{i}");
    add(
        &f.service,
        &Fixture::caller(&user),
        &user,
        phone,
        PhoneVerification::SendCode,
    )
    .await
}

/// A Swiss mobile number of range `+4179123` + `range`, ending in `last`.
fn mobile(range: u32, last: u32) -> String {
    format!("+417912{range:02}{last:03}")
}

/// The registration `id` of `user`, as a request names it.
fn target(user: &str, id: impl Into<String>) -> RegistrationRequest {
    RegistrationRequest {
        user_id: user.to_owned(),
        organization: None,
        registration_id: id.into(),
    }
}

/// `admin` adds `phone` for `u0` with the code in the response.
async fn admin_returns(f: &Fixture, phone: &str) -> Result<otp_sms_core::AddResponse, Error> {
    add(
        &f.service,
        &Fixture::caller("admin"),
        "u0",
        phone,
        PhoneVerification::ReturnCode,
    )
    .await
}

fn refused_by(result: Result<impl std::fmt::Debug, Error>, scope: Scope) -> Option<Duration> {
    match result {
        Err(Error::SendRefused {
            scope: s,
            retry_after,
        }) => {
            assert_eq!(s, scope, "refused by the wrong scope");
            let e = Error::SendRefused {
                scope: s,
                retry_after,
            };
            assert_eq!(e.rpc_code(), RpcCode::ResourceExhausted);
            assert_eq!(e.http_status(), 429);
            assert!(e.to_string().contains(scope.name()), "{e}");
            retry_after
        }
        other => panic!("expected a refusal by {scope:?}, got {other:?}"),
    }
}

/// Events of registration streams (refusal records left out), and the refusal records.
async fn written(f: &Fixture) -> (Vec<Event>, Vec<otp_sms_core::SendRefused>) {
    let mut registrations = Vec::new();
    let mut refusals = Vec::new();
    for e in f.feed().await {
        match &e.event {
            Event::SendRefused(r) => refusals.push(r.clone()),
            other => registrations.push(other.clone()),
        }
    }
    (registrations, refusals)
}

async fn outbox_len(f: &Fixture) -> usize {
    let messages = f
        .store
        .fetch_outbox(10_000, Duration::from_millis(1))
        .await
        .expect("outbox");
    messages.len()
}

async fn only_user_write_may_vouch_for_a_number_or_see_its_code(backend: Backend) {
    let f = Fixture::with_abuse_policy(backend, AbusePolicy::default()).await;
    let me = Fixture::caller("user-1");
    let admin = Fixture::caller("admin");
    // Self: send_code yes, return_code and is_verified no, and nothing written for either.
    let sent = add(
        &f.service,
        &me,
        "user-1",
        NUMBER,
        PhoneVerification::SendCode,
    )
    .await
    .expect("a user may add a phone that gets a code");
    assert!(sent.verification_code.is_none());
    let before = f.feed().await.len();
    for verification in [
        PhoneVerification::ReturnCode,
        PhoneVerification::IsVerified(true),
    ] {
        let err = add(&f.service, &me, "user-1", NUMBER, verification)
            .await
            .unwrap_err();
        assert_eq!(err, Error::PermissionDenied, "{verification:?}");
    }
    assert_eq!(f.feed().await.len(), before, "a refused add writes nothing");
    // A resend to the caller is a code in the response too.
    let target = target("user-1", sent.registration_id.to_string());
    let err = f
        .service
        .resend_code(&me, target.clone(), Delivery::Return)
        .await
        .unwrap_err();
    assert_eq!(err, Error::PermissionDenied);
    // user.write: all three.
    let returned = add(
        &f.service,
        &admin,
        "user-1",
        NUMBER,
        PhoneVerification::ReturnCode,
    )
    .await
    .expect("user.write may ask for the code");
    assert!(returned.verification_code.is_some());
    add(
        &f.service,
        &admin,
        "user-1",
        NUMBER,
        PhoneVerification::IsVerified(true),
    )
    .await
    .expect("user.write may vouch for a number");
    f.clock.advance(chrono::Duration::seconds(61));
    let resent = f
        .service
        .resend_code(&admin, target, Delivery::Return)
        .await
        .expect("user.write may resend to itself");
    assert!(resent.verification_code.is_some());
    // Neither for a user of another organization.
    let stranger = Fixture::caller("stranger");
    let err = add(
        &f.service,
        &stranger,
        "user-1",
        NUMBER,
        PhoneVerification::SendCode,
    )
    .await
    .unwrap_err();
    assert_eq!(err, Error::PermissionDenied);
    f.finish().await;
}

async fn an_instance_may_let_users_see_their_own_code(backend: Backend) {
    let policy = AbusePolicy {
        allow_self_return_code: true,
        ..AbusePolicy::default()
    };
    let f = Fixture::with_abuse_policy(backend, policy).await;
    let me = Fixture::caller("user-1");
    let added = add(
        &f.service,
        &me,
        "user-1",
        NUMBER,
        PhoneVerification::ReturnCode,
    )
    .await
    .expect("allowed by the instance");
    assert!(added.verification_code.is_some());
    // Vouching still needs user.write.
    let err = add(
        &f.service,
        &me,
        "user-1",
        NUMBER,
        PhoneVerification::IsVerified(true),
    )
    .await
    .unwrap_err();
    assert_eq!(err, Error::PermissionDenied);
    f.finish().await;
}

async fn premium_rate_fixed_line_and_denied_regions_are_refused_at_add(backend: Backend) {
    let mut policy = AbusePolicy::default();
    policy.region_deny.insert("DE".into());
    let f = Fixture::with_abuse_policy(backend, policy).await;
    let admin = Fixture::caller("admin");
    for (number, says) in [
        ("+19005550123", "premium-rate"),
        ("+41446681800", "fixed-line"),
        ("+4915112345678", "region DE"),
    ] {
        // Whatever the verification: a vouched-for number would get login codes later.
        for verification in [
            PhoneVerification::SendCode,
            PhoneVerification::IsVerified(true),
        ] {
            match add(&f.service, &admin, "user-1", number, verification).await {
                Err(Error::InvalidArgument { field, reason }) => {
                    assert_eq!(field, "phone.number");
                    assert!(reason.contains(says), "{reason}");
                }
                other => panic!("{number}: {other:?}"),
            }
        }
    }
    let (registrations, refusals) = written(&f).await;
    assert!(registrations.is_empty(), "{registrations:?}");
    // Each number refused twice in one audit window: recorded once.
    assert_eq!(refusals.len(), 3);
    assert_eq!(refusals[0].scope, "number_type");
    assert_eq!(refusals[2].scope, "region");
    assert_eq!(outbox_len(&f).await, 0);
    f.finish().await;
}

/// Given the defaults, a destination number's budget is split: one user's own requests bind
/// at 5 per 10 minutes (its own scope, which no other user's requests spend), and all users'
/// together at 20 per hour, so other users can deny a number to its owner for an hour at most.
async fn the_destination_number_budget_binds_across_users(backend: Backend) {
    let policy = AbusePolicy {
        max_registrations_per_user: 100,
        ..AbusePolicy::default()
    };
    let f = Fixture::with_abuse_policy(backend, policy).await;
    for _ in 0..5 {
        send(&f, 0, NUMBER)
            .await
            .expect("within its own 5 per 10 minutes");
    }
    let retry = refused_by(send(&f, 0, NUMBER).await, Scope::NumberPerUser).expect("a retry time");
    assert!(retry <= Duration::from_secs(600), "{retry:?}");
    // Others are not held back by u0's requests: 15 more users reach the global cap of 20.
    for i in 1..16 {
        send(&f, i, NUMBER)
            .await
            .expect("another user's own budget");
    }
    let retry = refused_by(send(&f, 16, NUMBER).await, Scope::Number).expect("a retry time");
    assert!(
        retry > Duration::from_secs(600) && retry <= Duration::from_secs(3600),
        "the global cap's hour: {retry:?}"
    );
    assert_eq!(outbox_len(&f).await, 20, "the refused adds sent nothing");
    if backend == Backend::Memory {
        // An hour on, the number is free again, for its owner as for others.
        f.clock.advance(chrono::Duration::seconds(3601));
        send(&f, 16, NUMBER).await.expect("the hour has passed");
        send(&f, 0, NUMBER)
            .await
            .expect("and its owner's own window too");
    }
    f.finish().await;
}

async fn the_user_budget_binds_across_registrations(backend: Backend) {
    let f = Fixture::with_abuse_policy(backend, AbusePolicy::default()).await;
    // Two registrations of five codes each (an add and four resends, a minute apart).
    for r in 0..2 {
        let added = send(&f, 0, &mobile(r, 1)).await.expect("add");
        let target = target("u0", added.registration_id.to_string());
        for _ in 0..4 {
            f.clock.advance(chrono::Duration::seconds(61));
            f.service
                .resend_code(&Fixture::caller("u0"), target.clone(), Delivery::Send)
                .await
                .expect("resend");
        }
    }
    // The user has had 10 codes in 24 hours: an eleventh, on a third registration, is refused.
    refused_by(send(&f, 0, &mobile(2, 1)).await, Scope::User);
    assert_eq!(outbox_len(&f).await, 10);
    f.finish().await;
}

async fn the_registration_cap_counts_live_registrations(backend: Backend) {
    let f = Fixture::with_abuse_policy(backend, AbusePolicy::default()).await;
    let admin = Fixture::caller("admin");
    let mut ids = Vec::new();
    for r in 0..5 {
        let added = admin_returns(&f, &mobile(r, 1))
            .await
            .expect("within the cap");
        ids.push(added);
    }
    // return_code takes no send budget, but a registration is a registration.
    let retry = refused_by(
        admin_returns(&f, &mobile(9, 1)).await,
        Scope::UserRegistrations,
    )
    .expect("unverified registrations lapse");
    // A day after the oldest was added (the store's clock; the database's runs a moment
    // ahead of the fixture's).
    assert!(retry <= Duration::from_secs(24 * 3600 + 60), "{retry:?}");
    // Verify one (it counts for good), remove another (its slot is free).
    f.service
        .verify(
            &admin,
            otp_sms_core::VerifyRequest {
                user_id: "u0".into(),
                organization: None,
                registration_id: ids[0].registration_id.to_string(),
                code: ids[0]
                    .verification_code
                    .clone()
                    .unwrap()
                    .expose()
                    .to_owned(),
            },
        )
        .await
        .expect("verify");
    f.service
        .remove(&admin, target("u0", ids[1].registration_id.to_string()))
        .await
        .expect("remove");
    admin_returns(&f, &mobile(9, 1))
        .await
        .expect("a removed registration frees its slot");
    refused_by(
        admin_returns(&f, &mobile(8, 1)).await,
        Scope::UserRegistrations,
    );
    if backend == Backend::Memory {
        // A day later the unverified ones no longer count; the verified one still does.
        f.clock
            .advance(chrono::Duration::hours(24) + chrono::Duration::seconds(1));
        for r in 10..14 {
            admin_returns(&f, &mobile(r, 1))
                .await
                .expect("stale attempts never lock a user out");
        }
        let retry = refused_by(
            admin_returns(&f, &mobile(20, 1)).await,
            Scope::UserRegistrations,
        );
        assert!(retry.is_some());
    }
    f.finish().await;
}

async fn the_range_budget_binds_sequential_numbers(backend: Backend) {
    let f = Fixture::with_abuse_policy(backend, AbusePolicy::default()).await;
    for i in 0..20 {
        send(&f, i, &mobile(34, i as u32))
            .await
            .expect("within 20 per hour");
    }
    refused_by(send(&f, 20, &mobile(34, 20)).await, Scope::Range);
    // Another range is another budget.
    send(&f, 21, &mobile(35, 1)).await.expect("another range");
    if backend == Backend::Memory {
        f.clock.advance(chrono::Duration::hours(1));
        send(&f, 22, &mobile(34, 22))
            .await
            .expect("the window slid");
    }
    f.finish().await;
}

async fn a_range_whose_conversion_collapsed_takes_the_tighter_limits(backend: Backend) {
    use otp_sms_core::conversion::{Conversion, RangeSignal};
    let policy = AbusePolicy {
        range_collapse: Some(otp_sms_core::RangeCollapse {
            min_sent: 10,
            below_percent: 20,
            limits: vec![Limit::new(3, Duration::from_secs(3600))],
        }),
        ..AbusePolicy::default()
    };
    let mut f = Fixture::with_abuse_policy(backend, policy).await;
    let signal = RangeSignal::new();
    f.service = f.service.clone().with_range_signal(signal.clone());
    // Given ten codes sent to one range and none verified (the pumping signature) ...
    for i in 0..10 {
        send(&f, i, &mobile(34, i as u32))
            .await
            .expect("within 20 per hour");
    }
    let report = f
        .service
        .deliver_pending(f.sender.as_ref(), 100, Duration::from_secs(30))
        .await
        .expect("deliver");
    assert_eq!(report.sent, 10);
    // ... the range's own budget still has room while nothing is published ...
    send(&f, 10, &mobile(34, 10)).await.expect("11 of 20");
    let mut conversion = Conversion::new(Duration::from_secs(3600));
    conversion.catch_up(f.store.as_ref()).await.expect("feed");
    let feed = f.store.read_all(0, 10_000).await.expect("feed");
    let now = feed.iter().map(|e| e.created_at).max().expect("events");
    // ... and while its codes are younger than their lifetime (they may still be verified) ...
    signal.publish(&conversion, now);
    assert_eq!(signal.rate(&mobile(34, 0)[..9]).sent, 0, "not settled yet");
    send(&f, 11, &mobile(34, 11)).await.expect("12 of 20");
    // ... but once they have outlived it unanswered, the range takes 3 per hour: refused.
    signal.publish(&conversion, now + chrono::Duration::minutes(6));
    assert_eq!(signal.rate(&mobile(34, 0)[..9]).sent, 10);
    refused_by(send(&f, 12, &mobile(34, 12)).await, Scope::Range);
    // Another range, without figures, keeps its own budget.
    send(&f, 13, &mobile(35, 1)).await.expect("another range");
    f.finish().await;
}

async fn the_address_budget_binds_one_client_and_an_ipv6_network(backend: Backend) {
    let f = Fixture::with_abuse_policy(backend, AbusePolicy::default()).await;
    let from = |i: usize, address: &str| {
        Fixture::caller(&format!("u{i}")).with_address(Some(address.parse::<IpAddr>().unwrap()))
    };
    for i in 0..10 {
        // One network, ten hosts: one client address.
        let caller = from(i, &format!("2001:db8:1:2::{i:x}"));
        add(
            &f.service,
            &caller,
            &format!("u{i}"),
            &mobile(i as u32, 1),
            PhoneVerification::SendCode,
        )
        .await
        .expect("within 10 per hour");
    }
    let refused = add(
        &f.service,
        &from(10, "2001:db8:1:2:ffff::1"),
        "u10",
        &mobile(10, 1),
        PhoneVerification::SendCode,
    )
    .await;
    refused_by(refused, Scope::Address);
    add(
        &f.service,
        &from(11, "2001:db8:1:3::1"),
        "u11",
        &mobile(11, 1),
        PhoneVerification::SendCode,
    )
    .await
    .expect("another /64");
    f.finish().await;
}

async fn the_instance_and_region_budgets_bind(backend: Backend) {
    let policy = AbusePolicy {
        instance: vec![Limit::new(6, Duration::from_secs(3600))],
        region: vec![Limit::new(4, Duration::from_secs(3600))],
        ..AbusePolicy::default()
    };
    let f = Fixture::with_abuse_policy(backend, policy).await;
    for i in 0..4 {
        send(&f, i, &mobile(i as u32, 1))
            .await
            .expect("CH within its cap");
    }
    refused_by(send(&f, 4, &mobile(4, 1)).await, Scope::Region);
    send(&f, 5, "+4915112345678").await.expect("DE");
    send(&f, 6, "+4915112345679").await.expect("DE");
    // Six codes in the instance: the spend guard.
    refused_by(send(&f, 7, "+4915112345670").await, Scope::Instance);
    assert_eq!(outbox_len(&f).await, 6);
    f.finish().await;
}

async fn fifty_concurrent_adds_against_a_budget_of_five_send_exactly_five(backend: Backend) {
    let f = Arc::new(Fixture::with_abuse_policy(backend, shared_number_budget()).await);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let f = Arc::clone(&f);
            tokio::spawn(async move { send(&f, i, NUMBER).await })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => {
                refused_by(Err::<(), _>(e), Scope::Number);
            }
        }
    }
    assert_eq!(ok, 5);
    let report = f
        .service
        .deliver_pending(f.sender.as_ref(), 100, Duration::from_secs(30))
        .await
        .expect("deliver");
    assert_eq!(report.sent, 5);
    assert_eq!(f.sender.sent().len(), 5);
    let (registrations, refusals) = written(&f).await;
    let added = registrations
        .iter()
        .filter(|e| matches!(e, Event::Added(_)))
        .count();
    assert_eq!(added, 5, "refused adds write no registration");
    // 45 refusals of one number, each by another user: one record per user in the window.
    assert_eq!(refusals.len(), 45);
    Arc::into_inner(f).expect("tasks done").finish().await;
}

async fn two_services_on_one_store_share_every_budget(backend: Backend) {
    let f = Fixture::with_abuse_policy(backend, shared_number_budget()).await;
    // Another process: its own service on the same store and budget store (a fresh
    // PgBudgets on the same database for PostgreSQL).
    let other = match backend {
        Backend::Memory => f.other_process(),
        Backend::Postgres => {
            let pg = f.postgres().expect("a PostgreSQL fixture");
            let budgets =
                otp_sms_postgres::PgBudgets::new(pg.pool().clone(), pg.schema()).expect("schema");
            f.other_process().with_budget_store(Arc::new(budgets))
        }
    };
    for i in 0..5 {
        let service = if i % 2 == 0 { &f.service } else { &other };
        let user = format!("u{i}");
        add(
            service,
            &Fixture::caller(&user),
            &user,
            NUMBER,
            PhoneVerification::SendCode,
        )
        .await
        .expect("within the number budget");
    }
    for service in [&f.service, &other] {
        let refused = add(
            service,
            &Fixture::caller("u9"),
            "u9",
            NUMBER,
            PhoneVerification::SendCode,
        )
        .await;
        refused_by(refused, Scope::Number);
    }
    f.finish().await;
}

async fn refusals_are_audited_without_the_whole_number(backend: Backend) {
    let f = Fixture::with_abuse_policy(backend, shared_number_budget()).await;
    for i in 0..5 {
        send(&f, i, NUMBER).await.expect("add");
    }
    refused_by(send(&f, 5, NUMBER).await, Scope::Number);
    let feed = f.feed().await;
    let refusal = feed
        .iter()
        .find(|e| matches!(e.event, Event::SendRefused(_)))
        .expect("a refusal in the feed");
    assert_eq!(
        refusal.stream.aggregate_type,
        otp_sms_core::REFUSAL_AGGREGATE_TYPE
    );
    assert_eq!(refusal.event.event_type(), "user.otp_sms.send.refused");
    let Event::SendRefused(r) = &refusal.event else {
        unreachable!()
    };
    assert_eq!(r.scope, "destination_number");
    assert_eq!(r.subject, "CH +41791234xxx");
    assert_eq!(r.user.as_str(), "u5");
    assert!(r.registration.is_none());
    assert!(
        r.retry_after_secs.is_some_and(|s| (1..=600).contains(&s)),
        "{:?}",
        r.retry_after_secs
    );
    let json = refusal.event.to_json().unwrap().to_string();
    assert!(!json.contains(NUMBER), "{json}");
    f.finish().await;
}

/// Given a premium-rate number, when one user asks for it 20 times within ten minutes, then
/// the log holds one refusal record, not 20; and when it asks for a new premium-rate range each
/// time, at most 10 records of that user stand in the window. A caller that repeats refused
/// calls grows the log by a bounded amount. (On the in-process store, whose windows follow the
/// service's clock, ten minutes on the next refusal is recorded again.)
async fn repeated_refusals_are_recorded_once_per_audit_window(backend: Backend) {
    let in_process = matches!(backend, Backend::Memory);
    let f = Fixture::with_abuse_policy(backend, AbusePolicy::default()).await;
    let premium = "+19005550123";
    for _ in 0..20 {
        let refused = send(&f, 0, premium).await;
        assert!(
            matches!(refused, Err(Error::InvalidArgument { .. })),
            "{refused:?}"
        );
    }
    let (_, refusals) = written(&f).await;
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    for range in 0..30 {
        let refused = send(&f, 0, &format!("+1900{}0123", 230 + range)).await;
        assert!(
            matches!(refused, Err(Error::InvalidArgument { .. })),
            "{refused:?}"
        );
    }
    let (_, refusals) = written(&f).await;
    assert_eq!(
        refusals.len(),
        10,
        "at most 10 records of one user in a window"
    );
    if in_process {
        f.clock.advance(chrono::Duration::minutes(10));
        let _ = send(&f, 0, premium).await;
        let (_, refusals) = written(&f).await;
        assert_eq!(refusals.len(), 11, "the next window records again");
    }
    f.finish().await;
}

/// A store whose next append conflicts once, as if another process had written first.
struct ConflictOnce {
    inner: Arc<dyn EventStore<Event>>,
    armed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl EventStore<Event> for ConflictOnce {
    async fn read_stream(
        &self,
        stream: &otp_sms_core::StreamId,
    ) -> Result<otp_sms_core::Recorded<Event>, otp_sms_core::StoreError> {
        self.inner.read_stream(stream).await
    }
    async fn append(
        &self,
        append: otp_sms_core::Append<Event>,
    ) -> Result<otp_sms_core::AppendOutcome, otp_sms_core::StoreError> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(otp_sms_core::StoreError::Conflict {
                stream: append.stream,
                expected: append.expected,
                actual: 99,
            });
        }
        self.inner.append(append).await
    }
    async fn read_all(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<otp_sms_core::Recorded<Event>, otp_sms_core::StoreError> {
        self.inner.read_all(after, limit).await
    }
    async fn fetch_outbox(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<otp_sms_core::OutboxMessage>, otp_sms_core::StoreError> {
        self.inner.fetch_outbox(limit, lease).await
    }
    async fn delete_outbox(&self, id: uuid::Uuid) -> Result<bool, otp_sms_core::StoreError> {
        self.inner.delete_outbox(id).await
    }

    async fn retry_outbox(
        &self,
        id: uuid::Uuid,
        after: std::time::Duration,
    ) -> Result<bool, otp_sms_core::StoreError> {
        self.inner.retry_outbox(id, after).await
    }

    async fn outbox_stats(&self) -> Result<otp_sms_core::OutboxStats, otp_sms_core::StoreError> {
        self.inner.outbox_stats().await
    }
}

/// Given a resend whose append conflicts, when the service decides again and still sends the
/// same code, then its take names the same entry: the code goes out, and the budget counts it
/// once, not twice.
#[tokio::test]
async fn a_conflicting_append_counts_its_code_once() {
    let f = Fixture::new(Backend::Memory).await;
    let store = Arc::new(ConflictOnce {
        inner: f.store.clone(),
        armed: false.into(),
    });
    let policy = AbusePolicy {
        user: vec![Limit::new(2, Duration::from_secs(3600))],
        ..AbusePolicy::default()
    };
    let service = CommandService::new(
        store.clone(),
        f.users.clone(),
        Arc::new(otp_sms_testkit::doubles::StaticAuthorizer::new()),
        otp_sms_tests::fixture::keys(),
    )
    .with_clock(f.clock.clone())
    .with_abuse_policy(policy)
    .unwrap();
    let me = Fixture::caller("u0");
    let added = add(&service, &me, "u0", NUMBER, PhoneVerification::SendCode)
        .await
        .expect("add");
    f.clock.advance(chrono::Duration::seconds(61));
    store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let target = target("u0", added.registration_id.to_string());
    service
        .resend_code(&me, target, Delivery::Send)
        .await
        .expect("the retry after the conflict sends");
    assert!(
        !store.armed.load(std::sync::atomic::Ordering::SeqCst),
        "it conflicted"
    );
    assert_eq!(outbox_len(&f).await, 2);
    // Two codes taken from a user budget of 2: a third is refused.
    f.clock.advance(chrono::Duration::seconds(61));
    refused_by(
        add(
            &service,
            &me,
            "u0",
            &mobile(5, 5),
            PhoneVerification::SendCode,
        )
        .await,
        Scope::User,
    );
    f.finish().await;
}

/// `admin` adds `n` registrations for `u0` with the code in the response.
async fn registrations(f: &Fixture, n: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in 0..n {
        let added = add(
            &f.service,
            &Fixture::caller("admin"),
            "u0",
            &mobile(r as u32, 1),
            PhoneVerification::ReturnCode,
        )
        .await
        .expect("add");
        out.push((
            added.registration_id.to_string(),
            added.verification_code.unwrap().expose().to_owned(),
        ));
    }
    out
}

async fn verify_as(f: &Fixture, who: &str, id: &str, code: &str) -> Result<(), Error> {
    f.service
        .verify(
            &Fixture::caller(who),
            otp_sms_core::VerifyRequest {
                user_id: "u0".into(),
                organization: None,
                registration_id: id.to_owned(),
                code: code.to_owned(),
            },
        )
        .await
        .map(|_| ())
}

/// Five wrong codes on each of `regs` (each code burns after five).
async fn wrong_codes(f: &Fixture, regs: &[(String, String)]) {
    for (id, code) in regs {
        let wrong = otp_sms_testkit::scenario::wrong_code(code);
        for _ in 0..5 {
            assert_eq!(verify_as(f, "u0", id, &wrong).await, Err(Error::WrongCode));
        }
    }
}

const LOCKED: Error = Error::FailedPrecondition(otp_sms_core::Precondition::VerificationLocked);

async fn a_hundred_wrong_codes_in_a_row_lock_every_registration_of_the_user(backend: Backend) {
    let f = Fixture::with_abuse_policy(backend, AbusePolicy::unlimited()).await;
    let regs = registrations(&f, 21).await;
    // 95 wrong codes on 19 registrations: not yet.
    wrong_codes(&f, &regs[..19]).await;
    let (id, code) = &regs[19];
    let wrong = otp_sms_testkit::scenario::wrong_code(code);
    for _ in 0..4 {
        assert_eq!(verify_as(&f, "u0", id, &wrong).await, Err(Error::WrongCode));
    }
    // The 100th is still answered as wrong, and locks.
    assert_eq!(verify_as(&f, "u0", id, &wrong).await, Err(Error::WrongCode));
    // Now no code is checked, not even the right one, on any registration of the user.
    let (last, right) = &regs[20];
    assert_eq!(verify_as(&f, "u0", last, right).await, Err(LOCKED));
    assert_eq!(verify_as(&f, "admin", last, right).await, Err(LOCKED));
    // No new code or registration while locked.
    let err = add(
        &f.service,
        &Fixture::caller("admin"),
        "u0",
        &mobile(40, 1),
        PhoneVerification::ReturnCode,
    )
    .await
    .unwrap_err();
    assert_eq!(err, LOCKED);
    f.clock.advance(chrono::Duration::seconds(61));
    let err = f
        .service
        .resend_code(
            &Fixture::caller("admin"),
            target("u0", last.clone()),
            Delivery::Return,
        )
        .await
        .unwrap_err();
    assert_eq!(err, LOCKED);
    // Every live registration carries the lock in its own stream.
    let locks = f
        .feed()
        .await
        .iter()
        .filter(|e| matches!(e.event, Event::VerificationLocked(_)))
        .count();
    assert_eq!(locks, 21);
    // Another user is not affected.
    let other = add(
        &f.service,
        &Fixture::caller("u1"),
        "u1",
        &mobile(50, 1),
        PhoneVerification::SendCode,
    )
    .await;
    assert!(other.is_ok(), "{other:?}");
    if backend == Backend::Memory {
        // The lock ends by itself after its period (24 hours by default); the code expired
        // meanwhile, so the registration asks for a new one.
        f.clock.advance(chrono::Duration::hours(24));
        assert_eq!(
            verify_as(&f, "u0", last, right).await,
            Err(Error::FailedPrecondition(
                otp_sms_core::Precondition::CodeExpired
            ))
        );
        add(
            &f.service,
            &Fixture::caller("admin"),
            "u0",
            &mobile(41, 1),
            PhoneVerification::ReturnCode,
        )
        .await
        .expect("a new registration once the lock has ended");
    }
    f.finish().await;
}

async fn a_right_code_ends_the_run_of_wrong_ones(backend: Backend) {
    let f = Fixture::with_abuse_policy(backend, AbusePolicy::unlimited()).await;
    let regs = registrations(&f, 41).await;
    wrong_codes(&f, &regs[..19]).await;
    // 95 wrong, then a right code: the run ends.
    let (id, code) = &regs[40];
    verify_as(&f, "u0", id, code).await.expect("right code");
    // 100 more wrong codes lock again only at the 100th.
    wrong_codes(&f, &regs[19..38]).await;
    let (id, code) = &regs[38];
    let wrong = otp_sms_testkit::scenario::wrong_code(code);
    for _ in 0..4 {
        assert_eq!(verify_as(&f, "u0", id, &wrong).await, Err(Error::WrongCode));
    }
    let (id, code) = &regs[39];
    verify_as(&f, "u0", id, code)
        .await
        .expect("99 in a row: not locked");
    f.finish().await;
}

async fn an_administrator_unlocks_and_the_user_cannot(backend: Backend) {
    let policy = AbusePolicy {
        max_consecutive_failures: 5,
        ..AbusePolicy::unlimited()
    };
    let f = Fixture::with_abuse_policy(backend, policy).await;
    let regs = registrations(&f, 2).await;
    wrong_codes(&f, &regs[..1]).await;
    let (id, code) = &regs[1];
    assert_eq!(verify_as(&f, "u0", id, code).await, Err(LOCKED));
    let unlock = |who: &str| {
        let caller = Fixture::caller(who);
        let service = f.service.clone();
        async move {
            service
                .unlock_verification(
                    &caller,
                    otp_sms_core::UserRequest {
                        user_id: "u0".into(),
                        organization: None,
                    },
                )
                .await
        }
    };
    assert_eq!(unlock("u0").await, Err(Error::PermissionDenied));
    assert_eq!(verify_as(&f, "u0", id, code).await, Err(LOCKED));
    unlock("admin").await.expect("unlock");
    verify_as(&f, "u0", id, code).await.expect("unlocked");
    // Unlocking again changes nothing.
    let before = f.feed().await.len();
    unlock("admin").await.expect("unlock again");
    assert_eq!(f.feed().await.len(), before);
    f.finish().await;
}

async fn test_numbers_send_nothing_take_no_budget_and_verify_with_their_fixed_code(
    backend: Backend,
) {
    let policy = AbusePolicy {
        test_numbers: vec![
            otp_sms_core::TestNumber {
                number: NUMBER.into(),
                code: "24682468".into(),
            },
            otp_sms_core::TestNumber {
                number: "+19005550123".into(),
                code: "13571357".into(),
            },
        ],
        ..AbusePolicy::default()
    };
    let f = Fixture::with_abuse_policy(backend, policy).await;
    // Twenty users, one number: no budget binds a test number.
    let mut added = Vec::new();
    for i in 0..20 {
        added.push(
            send(&f, i, NUMBER)
                .await
                .expect("a test number takes no budget"),
        );
    }
    assert_eq!(outbox_len(&f).await, 0, "nothing to send");
    let (events, refusals) = written(&f).await;
    assert!(refusals.is_empty());
    let codes: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::CodeAdded(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(codes.len(), 20);
    assert!(codes.iter().all(|c| c.delivery == Delivery::Test));
    let json = serde_json::to_string(
        &f.feed()
            .await
            .iter()
            .map(|e| e.event.to_json().unwrap())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(json.contains(r#""delivery":"test""#), "{json}");
    assert!(
        !json.contains("24682468"),
        "the fixed code is kept only as a hash"
    );
    // The fixed code verifies; another does not.
    let first = added[0].registration_id.to_string();
    let verify = |user: &str, id: &str, code: &str| {
        let (service, caller) = (f.service.clone(), Fixture::caller(user));
        let request = otp_sms_core::VerifyRequest {
            user_id: user.to_owned(),
            organization: None,
            registration_id: id.to_owned(),
            code: code.to_owned(),
        };
        async move { service.verify(&caller, request).await }
    };
    assert_eq!(
        verify("u0", &first, "11111111").await,
        Err(Error::WrongCode)
    );
    verify("u0", &first, "24682468")
        .await
        .expect("the fixed code");
    // A listed number escapes the number-type rule; a resend to it returns its fixed code.
    let admin = Fixture::caller("admin");
    let premium = add(
        &f.service,
        &admin,
        "u1",
        "+19005550123",
        PhoneVerification::ReturnCode,
    )
    .await
    .expect("listed by the operator");
    assert_eq!(premium.verification_code.unwrap().expose(), "13571357");
    f.clock.advance(chrono::Duration::seconds(61));
    let resent = f
        .service
        .resend_code(
            &admin,
            target("u1", premium.registration_id.to_string()),
            Delivery::Return,
        )
        .await
        .expect("resend");
    assert_eq!(resent.verification_code.unwrap().expose(), "13571357");
    // Callers cannot ask for test delivery themselves.
    let err = f
        .service
        .resend_code(
            &admin,
            target("u1", premium.registration_id.to_string()),
            Delivery::Test,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                field: "delivery",
                ..
            }
        ),
        "{err:?}"
    );
    f.finish().await;
}

async fn a_silent_scope_answers_as_if_sent_and_sends_nothing(backend: Backend) {
    let policy = AbusePolicy {
        silent: [Scope::Number].into(),
        ..shared_number_budget()
    };
    let f = Fixture::with_abuse_policy(backend, policy).await;
    for i in 0..5 {
        send(&f, i, NUMBER).await.expect("within the budget");
    }
    let silent = send(&f, 5, NUMBER)
        .await
        .expect("answered as if the code were sent");
    assert!(silent.verification_code.is_none());
    assert_eq!(
        outbox_len(&f).await,
        5,
        "nothing sent for the silent refusal"
    );
    let (events, refusals) = written(&f).await;
    let adds = events
        .iter()
        .filter(|e| matches!(e, Event::Added(_)))
        .count();
    assert_eq!(adds, 5, "nothing written for it but its audit record");
    assert_eq!(refusals.len(), 1);
    assert!(refusals[0].silent);
    assert_eq!(refusals[0].scope, "destination_number");
    // A scope that is not silent still answers 429.
    let loud = AbusePolicy {
        silent: [Scope::Range].into(),
        ..shared_number_budget()
    };
    let g = Fixture::with_abuse_policy(backend, loud).await;
    for i in 0..5 {
        send(&g, i, NUMBER).await.expect("within the budget");
    }
    refused_by(send(&g, 5, NUMBER).await, Scope::Number);
    f.finish().await;
    g.finish().await;
}

/// Given a slot with no registration behind it (an add whose write failed after its take),
/// the cap counts it for a minute (it could be an add in flight), then releases it.
#[tokio::test]
async fn a_slot_without_a_registration_is_released_after_a_grace_period() {
    let f = Fixture::with_abuse_policy(Backend::Memory, AbusePolicy::default()).await;
    let instance = Fixture::caller("u0").instance;
    let user = otp_sms_core::UserId::parse("id", "u0").unwrap();
    let ghost = otp_sms_core::RegistrationId::parse("id", "ghost").unwrap();
    let slot = AbusePolicy::default().registration_slot(&instance, &user, &ghost);
    assert_eq!(
        f.service.budget_store().take(&slot.request).await.unwrap(),
        otp_sms_core::TakeOutcome::Taken
    );
    for r in 0..4 {
        admin_returns(&f, &mobile(r, 1))
            .await
            .expect("within the cap");
    }
    refused_by(
        admin_returns(&f, &mobile(5, 1)).await,
        Scope::UserRegistrations,
    );
    f.clock.advance(chrono::Duration::seconds(61));
    admin_returns(&f, &mobile(5, 1))
        .await
        .expect("the slot of the failed add was released");
    f.finish().await;
}

/// For each window scope in turn, only that scope limited (2 per hour): adds that share its
/// key, alternating between two services on one store (another process), admit 2 and refuse
/// the 3rd by that scope; an hour later (manual clock, memory backend) both earlier takes have
/// left the window: two more are admitted, and the next refused.
async fn every_window_scope_binds_at_its_boundary_across_two_services_and_slides(backend: Backend) {
    let two = vec![Limit::new(2, Duration::from_secs(3600))];
    // The send budgets: the window scopes.
    for scope in Scope::SILENCEABLE {
        let mut policy = AbusePolicy::unlimited();
        match scope {
            Scope::User => policy.user = two.clone(),
            Scope::Number => policy.number = two.clone(),
            Scope::NumberPerUser => policy.number_per_user = two.clone(),
            Scope::Range => policy.range = two.clone(),
            Scope::Region => policy.region = two.clone(),
            Scope::Address => policy.address = two.clone(),
            Scope::Organization => policy.organization = two.clone(),
            Scope::Instance => policy.instance = two.clone(),
            other => panic!("{other:?} is not a send budget"),
        }
        let f = Fixture::with_abuse_policy(backend, policy).await;
        let other = match f.postgres() {
            Some(pg) => f.other_process().with_budget_store(Arc::new(
                otp_sms_postgres::PgBudgets::new(pg.pool().clone(), pg.schema()).unwrap(),
            )),
            None => f.other_process(),
        };
        // The i-th add: the same key as the others for `scope`, a different one for the rest.
        let attempt = |i: usize| {
            let user = if matches!(scope, Scope::User | Scope::NumberPerUser) {
                "u0".to_owned()
            } else {
                format!("u{i}")
            };
            let number = match scope {
                Scope::Number | Scope::NumberPerUser => NUMBER.to_owned(),
                Scope::Range => mobile(7, i as u32),
                // Another range each time, one region.
                _ => mobile(10 + i as u32, 1),
            };
            let address = if scope == Scope::Address {
                "203.0.113.9".to_owned()
            } else {
                format!("198.51.100.{i}")
            };
            let caller = Fixture::caller(&user).with_address(address.parse().ok());
            let service = if i % 2 == 0 { &f.service } else { &other };
            let request = add_req(&user, &number, PhoneVerification::SendCode);
            let (service, caller) = (service.clone(), caller);
            async move { service.add(&caller, request).await }
        };
        attempt(0)
            .await
            .unwrap_or_else(|e| panic!("{scope:?} 1st: {e:?}"));
        attempt(1)
            .await
            .unwrap_or_else(|e| panic!("{scope:?} 2nd: {e:?}"));
        let retry = refused_by(attempt(2).await, scope);
        assert!(
            retry.is_some_and(|r| r <= Duration::from_secs(3600)),
            "{scope:?}: {retry:?}"
        );
        refused_by(attempt(3).await, scope);
        if backend == Backend::Memory {
            f.clock.advance(chrono::Duration::seconds(3601));
            for i in [4, 5] {
                attempt(i)
                    .await
                    .unwrap_or_else(|e| panic!("{scope:?} after the window: {e:?}"));
            }
            refused_by(attempt(6).await, scope);
        }
        f.finish().await;
    }
}
