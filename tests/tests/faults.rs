//! Appends whose outcome is unknown (the answer lost after, or before, the commit): the service
//! finds out from the stream what its command wrote and answers that, writing nothing twice.
//! Every case runs on both stores, with and without the stream cache.

use std::sync::Arc;
use std::time::Duration;

use otp_sms_core::{AddRequest, Error, Event, PhoneVerification, RecordedEvent, VerifyRequest};
use otp_sms_tests::faults::{AppendFault, FaultyStore};
use otp_sms_tests::fixture::{flow_policy, Backend, Fixture};

fn verify_req(registration: &str, code: &str) -> VerifyRequest {
    VerifyRequest {
        user_id: "user-1".into(),
        organization: None,
        registration_id: registration.into(),
        code: code.into(),
    }
}

fn add_req(verification: PhoneVerification) -> AddRequest {
    AddRequest {
        user_id: "user-1".into(),
        organization: None,
        phone: "+41791234567".into(),
        verification,
    }
}

fn count(feed: &[Arc<RecordedEvent<Event>>], pick: fn(&Event) -> bool) -> usize {
    feed.iter().filter(|r| pick(&r.event)).count()
}

otp_sms_tests::on_stores_with_faults!(
    [memory: Memory, 0; postgres: Postgres, 0; memory_cached: Memory, otp_sms_core::StreamCache::DEFAULT_CAPACITY; postgres_cached: Postgres, otp_sms_core::StreamCache::DEFAULT_CAPACITY],
    [
        an_add_whose_answer_is_lost_after_commit_answers_what_committed,
        an_add_lost_before_commit_is_written_once_by_the_next_attempt,
        a_verify_whose_answer_is_lost_answers_verified_once,
        a_wrong_code_whose_answer_is_lost_is_still_a_wrong_code_counted_once,
        an_unknown_outcome_that_cannot_be_read_is_unavailable,
    ],
);

/// Given an add with `send_code` whose append commits and whose answer is lost, then the call
/// answers the registration that committed: one registration, one outbox message, and the
/// details of its events.
async fn an_add_whose_answer_is_lost_after_commit_answers_what_committed(
    f: &Fixture,
    faulty: &FaultyStore,
) {
    faulty.arm_appends([Some(AppendFault::CommitThenLoseAnswer)]);
    let added = f
        .service
        .add(
            &Fixture::caller("user-1"),
            add_req(PhoneVerification::SendCode),
        )
        .await
        .expect("the add committed: its answer");
    assert_eq!(faulty.unknown_outcomes(), 1);
    written_once(f, &added).await;
}

/// `added` (with `send_code`) is the one registration in the store, with one code and one
/// outbox message, and its details are its events'.
async fn written_once(f: &Fixture, added: &otp_sms_core::AddResponse) {
    let feed = f.feed().await;
    assert_eq!(count(&feed, |e| matches!(e, Event::Added(_))), 1);
    assert_eq!(count(&feed, |e| matches!(e, Event::CodeAdded(_))), 1);
    let first = &feed[0];
    assert_eq!(&*first.stream.aggregate_id, added.registration_id.as_str());
    assert_eq!(added.details.created, first.created_at);
    let outbox = f
        .store
        .fetch_outbox(100, Duration::from_secs(60))
        .await
        .expect("outbox");
    assert_eq!(outbox.len(), 1, "one SMS to send, not two");
}

/// Given an add whose append is lost before it reaches the store, then the next attempt
/// writes it, once.
async fn an_add_lost_before_commit_is_written_once_by_the_next_attempt(
    f: &Fixture,
    faulty: &FaultyStore,
) {
    faulty.arm_appends([Some(AppendFault::LoseBeforeCommit)]);
    let added = f
        .service
        .add(
            &Fixture::caller("user-1"),
            add_req(PhoneVerification::ReturnCode),
        )
        .await
        .expect("written by the second attempt");
    let feed = f.feed().await;
    assert_eq!(count(&feed, |e| matches!(e, Event::Added(_))), 1);
    assert_eq!(
        &*feed[0].stream.aggregate_id,
        added.registration_id.as_str()
    );
    let code = added.verification_code.expect("code");
    f.service
        .verify(
            &Fixture::caller("user-1"),
            verify_req(added.registration_id.as_str(), code.expose()),
        )
        .await
        .expect("the answered code is the committed one");
}

/// Given a verify with the right code whose answer is lost after commit, then it answers
/// verified, one `verified` event is written, and a second verify finds it verified.
async fn a_verify_whose_answer_is_lost_answers_verified_once(f: &Fixture, faulty: &FaultyStore) {
    let caller = Fixture::caller("user-1");
    let added = f
        .service
        .add(&caller, add_req(PhoneVerification::ReturnCode))
        .await
        .expect("add");
    let id = added.registration_id.as_str().to_owned();
    let code = added.verification_code.expect("code").expose().to_owned();
    faulty.arm_appends([Some(AppendFault::CommitThenLoseAnswer)]);
    let details = f
        .service
        .verify(&caller, verify_req(&id, &code))
        .await
        .expect("verified");
    let feed = f.feed().await;
    assert_eq!(count(&feed, |e| matches!(e, Event::Verified(_))), 1);
    assert_eq!(details.changed, feed.last().expect("events").created_at);
    let again = f.service.verify(&caller, verify_req(&id, &code)).await;
    assert!(
        matches!(again, Err(Error::FailedPrecondition(_))),
        "{again:?}"
    );
}

/// Given a verify with a wrong code whose answer is lost after commit, then it still answers
/// the wrong code, and the attempt is recorded once.
async fn a_wrong_code_whose_answer_is_lost_is_still_a_wrong_code_counted_once(
    f: &Fixture,
    faulty: &FaultyStore,
) {
    let caller = Fixture::caller("user-1");
    let added = f
        .service
        .add(&caller, add_req(PhoneVerification::ReturnCode))
        .await
        .expect("add");
    let id = added.registration_id.as_str().to_owned();
    let code = added.verification_code.expect("code").expose().to_owned();
    faulty.arm_appends([Some(AppendFault::CommitThenLoseAnswer)]);
    let wrong = otp_sms_testkit::scenario::wrong_code(&code);
    let err = f
        .service
        .verify(&caller, verify_req(&id, &wrong))
        .await
        .unwrap_err();
    assert_eq!(err, Error::WrongCode);
    let feed = f.feed().await;
    assert_eq!(count(&feed, |e| matches!(e, Event::CheckFailed(_))), 1);
}

/// Given an append whose answer is lost and a stream that cannot be read after it, then the
/// call answers UNAVAILABLE (the client may retry under its idempotency key), never INTERNAL
/// and never a second write.
async fn an_unknown_outcome_that_cannot_be_read_is_unavailable(f: &Fixture, faulty: &FaultyStore) {
    let caller = Fixture::caller("user-1");
    let added = f
        .service
        .add(&caller, add_req(PhoneVerification::ReturnCode))
        .await
        .expect("add");
    let id = added.registration_id.as_str().to_owned();
    let code = added.verification_code.expect("code").expose().to_owned();
    faulty.arm_appends([Some(AppendFault::CommitThenLoseAnswer)]);
    faulty.fail_reads_after_fault(1_000);
    let err = f
        .service
        .verify(&caller, verify_req(&id, &code))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert_eq!(err.http_status(), 503);
    faulty.fail_reads(0);
    let feed = f.feed().await;
    assert_eq!(count(&feed, |e| matches!(e, Event::Verified(_))), 1);
}

/// Through a proxy that drops PostgreSQL's answer to an append (the call ran and committed;
/// the connection is gone before the answer arrives): the store reports the outcome unknown,
/// and the service answers what committed, with one registration and one outbox message.
/// The writer opens a new connection for the verify after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_answer_lost_after_commit_through_a_proxy() {
    use otp_sms_tests::net::TcpProxy;
    use otp_sms_tests::pg;
    let proxy = TcpProxy::start(pg::host_port(pg::database_url())).await;
    let url = pg::with_host_port(pg::database_url(), &proxy.addr.to_string());
    let pool = otp_sms_postgres::pool_options()
        .max_connections(4)
        .connect(&url)
        .await
        .expect("connect through the proxy");
    let store = otp_sms_postgres::PgStore::<Event>::new(pool, &pg::schema_name()).expect("schema");
    otp_sms_postgres::testing::migrate_whole(&store).await;
    let f = Fixture::on_postgres(store, flow_policy());
    let caller = Fixture::caller("user-1");
    // A code in the response: no outbox message, the single-append function (prepared on the
    // writer's first connection).
    let returned = f
        .service
        .add(&caller, add_req(PhoneVerification::ReturnCode))
        .await
        .expect("add");
    // Adds with `send_code` write an outbox message: the batch function.
    proxy.cut_after_answer_to(b"append_batch(");
    let added = f
        .service
        .add(&caller, add_req(PhoneVerification::SendCode))
        .await
        .expect("the add committed: its answer");
    assert_eq!(proxy.answers_dropped(), 1, "the fault fired");
    let feed = f.feed().await;
    let adds: Vec<_> = feed
        .iter()
        .filter(|r| matches!(r.event, Event::Added(_)))
        .collect();
    assert_eq!(adds.len(), 2, "two adds, each written once");
    assert_eq!(
        &*adds[1].stream.aggregate_id,
        added.registration_id.as_str()
    );
    let outbox = f
        .store
        .fetch_outbox(100, Duration::from_secs(60))
        .await
        .expect("outbox");
    assert_eq!(outbox.len(), 1, "one SMS, not two");
    // A verify on the writer's new connection, whose answer is lost too.
    let code = returned
        .verification_code
        .expect("code")
        .expose()
        .to_owned();
    proxy.cut_after_answer_to(b"append_one(");
    f.service
        .verify(
            &caller,
            verify_req(returned.registration_id.as_str(), &code),
        )
        .await
        .expect("verified");
    assert_eq!(proxy.answers_dropped(), 2, "the fault fired");
    let feed = f.feed().await;
    assert_eq!(count(&feed, |e| matches!(e, Event::Verified(_))), 1);
    f.finish().await;
}

/// A proxy in front of the test database.
async fn proxy_to_postgres() -> otp_sms_tests::net::TcpProxy {
    otp_sms_tests::net::TcpProxy::start(otp_sms_tests::pg::host_port(
        otp_sms_tests::pg::database_url(),
    ))
    .await
}

/// Calls `call` every 100 ms until it succeeds; fails if that takes 5 s or more.
async fn within_5s_of<T, E: std::fmt::Debug, Fut>(mut call: impl FnMut() -> Fut)
where
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let since = std::time::Instant::now();
    loop {
        match call().await {
            Ok(_) => return,
            Err(e) => assert!(
                since.elapsed() < Duration::from_secs(5),
                "not recovered 5 s after the database came back: {e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A store on PostgreSQL through `proxy`, with 1-second waits.
async fn store_through(proxy: &otp_sms_tests::net::TcpProxy) -> otp_sms_postgres::PgStore<Event> {
    use otp_sms_tests::pg;
    let url = pg::with_host_port(pg::database_url(), &proxy.addr.to_string());
    let pool = otp_sms_postgres::pool_options()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(1))
        .connect(&url)
        .await
        .expect("connect through the proxy");
    let timeouts = otp_sms_postgres::Timeouts {
        connect: Duration::from_secs(1),
        operation: Duration::from_secs(1),
        ..Default::default()
    };
    let store = otp_sms_postgres::PgStore::<Event>::new(pool, &pg::schema_name())
        .expect("schema")
        .with_timeouts(timeouts);
    otp_sms_postgres::testing::migrate_whole(&store).await;
    store
}

/// Given PostgreSQL blackholed (no answer, no reset), then calls answer UNAVAILABLE within
/// the configured waits, never hang, and readiness fails; once it answers again, calls
/// succeed within 5 s without a restart (the worker connections are replaced).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_blackholed_answers_unavailable_in_time_and_recovers() {
    // A hang is a failure, not a stuck test run.
    tokio::time::timeout(Duration::from_secs(60), blackholed())
        .await
        .expect("the blackhole case hung");
}

async fn blackholed() {
    use std::time::Instant;
    let proxy = proxy_to_postgres().await;
    let store = std::sync::Arc::new(store_through(&proxy).await);
    let f = Fixture::on_postgres_shared(store.clone(), flow_policy());
    let caller = Fixture::caller("user-1");
    let added = f
        .service
        .add(&caller, add_req(PhoneVerification::ReturnCode))
        .await
        .expect("add");
    let code = added.verification_code.expect("code").expose().to_owned();
    proxy.blackhole();
    let started = Instant::now();
    let verify = f
        .service
        .verify(&caller, verify_req(added.registration_id.as_str(), &code))
        .await;
    assert!(matches!(verify, Err(Error::Unavailable(_))), "{verify:?}");
    let add = f
        .service
        .add(&caller, add_req(PhoneVerification::ReturnCode))
        .await;
    assert!(matches!(add, Err(Error::Unavailable(_))), "{add:?}");
    assert!(store.ping().await.is_err(), "not ready");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "three calls with 1 s waits took {waited:?}"
    );
    proxy.restore();
    let id = added.registration_id.as_str();
    within_5s_of(|| f.service.verify(&caller, verify_req(id, &code))).await;
    store.ping().await.expect("ready again");
    f.finish().await;
}

/// Given a store whose queue holds 4 appends and a blackholed database, when 40 appends come
/// at once, then those beyond the queue are refused at once (UNAVAILABLE, load shed), and
/// every one is answered within the waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_sheds_load_at_once() {
    tokio::time::timeout(Duration::from_secs(60), full_queue())
        .await
        .expect("the full-queue case hung");
}

async fn full_queue() {
    use otp_sms_core::{Append, EventStore, ExpectedVersion, NewEvent, StoreError, StreamId};
    use std::time::Instant;
    let proxy = proxy_to_postgres().await;
    let store = store_through(&proxy).await;
    let timeouts = otp_sms_postgres::Timeouts {
        queue: 4,
        ..store.timeouts()
    };
    let store = std::sync::Arc::new(store.with_timeouts(timeouts));
    proxy.blackhole();
    let instance = otp_sms_core::InstanceId::parse("instance", "i1").unwrap();
    let started = Instant::now();
    let appends: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            let stream = StreamId::new(instance.clone(), "test", format!("s{i}"));
            tokio::spawn(async move {
                let append = Append::new(
                    stream,
                    ExpectedVersion::NoStream,
                    vec![NewEvent {
                        event: Event::Removed(otp_sms_core::Removed {}),
                        creator: otp_sms_core::PrincipalId::parse("p", "p").unwrap(),
                        owner: otp_sms_core::OrganizationId::parse("o", "o").unwrap(),
                    }],
                );
                let at = Instant::now();
                let result = store.append(append).await;
                (result, at.elapsed())
            })
        })
        .collect();
    let mut shed = 0;
    for append in appends {
        let (result, took) = append.await.expect("task");
        match result {
            Err(StoreError::Unavailable(m)) if m.contains("overloaded") => {
                shed += 1;
                assert!(took < Duration::from_millis(500), "shed late: {took:?}");
            }
            Err(StoreError::Unavailable(_) | StoreError::Unknown(_)) => {}
            other => panic!("a blackholed append answered {other:?}"),
        }
    }
    assert!(shed >= 30, "only {shed} of 40 shed with a queue of 4");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    proxy.restore();
    let schema = store.schema().to_owned();
    drop(store);
    otp_sms_tests::pg::drop_schema(&schema).await;
}

/// Given the writer and reader threads crashed, then the next calls start new ones and
/// succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashed_store_threads_are_restarted() {
    let f = Fixture::new(Backend::Postgres).await;
    let caller = Fixture::caller("user-1");
    let added = f
        .service
        .add(&caller, add_req(PhoneVerification::ReturnCode))
        .await
        .expect("add");
    let pg = f.postgres().expect("postgres").clone();
    pg.panic_workers_for_tests().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let code = added.verification_code.expect("code").expose().to_owned();
    f.service
        .verify(&caller, verify_req(added.registration_id.as_str(), &code))
        .await
        .expect("verified through new threads");
    f.service
        .add(&caller, add_req(PhoneVerification::ReturnCode))
        .await
        .expect("add through new threads");
    f.finish().await;
}

/// Through a proxy that cuts PostgreSQL's answer to a committed append in the middle of a
/// message: the same as a lost answer, the committed result is what the call answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_answer_cut_midway_after_commit() {
    let proxy = proxy_to_postgres().await;
    let store = store_through(&proxy).await;
    let f = Fixture::on_postgres(store, flow_policy());
    let caller = Fixture::caller("user-1");
    proxy.cut_midway_through_answer_to(b"append_batch(");
    let added = f
        .service
        .add(&caller, add_req(PhoneVerification::SendCode))
        .await
        .expect("the add committed: its answer");
    assert_eq!(proxy.answers_dropped(), 1, "the fault fired");
    written_once(&f, &added).await;
    f.finish().await;
}

/// Given every connection to PostgreSQL cut as it opens, then calls answer UNAVAILABLE
/// promptly; once connections are let through, calls succeed within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connections_cut_on_connect_then_allowed() {
    tokio::time::timeout(Duration::from_secs(60), cut_on_connect())
        .await
        .expect("the cut-on-connect case hung");
}

async fn cut_on_connect() {
    use std::time::Instant;
    let proxy = proxy_to_postgres().await;
    let store = store_through(&proxy).await;
    let f = Fixture::on_postgres(store, flow_policy());
    let caller = Fixture::caller("user-1");
    f.service
        .add(&caller, add_req(PhoneVerification::ReturnCode))
        .await
        .expect("add");
    proxy.refuse_connections(true);
    proxy.drop_connections();
    let started = Instant::now();
    let refused = f
        .service
        .add(&caller, add_req(PhoneVerification::ReturnCode))
        .await;
    assert!(matches!(refused, Err(Error::Unavailable(_))), "{refused:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    proxy.refuse_connections(false);
    within_5s_of(|| {
        f.service
            .add(&caller, add_req(PhoneVerification::ReturnCode))
    })
    .await;
    assert_eq!(count(&f.feed().await, |e| matches!(e, Event::Added(_))), 2);
    f.finish().await;
}

/// Given a store whose sessions take no writes (as on a standby, or a database set read-only),
/// when readiness is checked, then it is not ready, and it names why; a writable one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_takes_no_writes_is_not_ready() {
    let writable = otp_sms_tests::pg::fresh_store::<Event>().await;
    writable.ping().await.expect("a writable database is ready");
    let options: sqlx::postgres::PgConnectOptions = otp_sms_tests::pg::database_url()
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .options([("default_transaction_read_only", "on")]);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap();
    let read_only = otp_sms_postgres::PgStore::<Event>::new(pool, writable.schema()).unwrap();
    let refused = read_only.ping().await;
    assert!(
        matches!(&refused, Err(otp_sms_core::StoreError::Unavailable(why)) if why.contains("no writes")),
        "{refused:?}"
    );
    otp_sms_tests::pg::drop_store(&writable).await;
}
