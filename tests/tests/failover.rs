//! A failover of PostgreSQL under load: a primary with a synchronous streaming standby (both
//! throwaway clusters on this machine), 8 clients running add → verify flows under
//! idempotency keys with retries, the primary crashed and the standby promoted. The store,
//! given both hosts with `target_session_attrs=read-write`, follows the promotion.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otp_sms_core::{AddRequest, Error, Event, IdempotencyKey, PhoneVerification, VerifyRequest};
use otp_sms_postgres::{DatabaseHosts, PgStore, Timeouts};
use otp_sms_tests::fixture::{flow_policy, Fixture};
use otp_sms_tests::replication::Cluster;

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Registrations whose add was answered (possibly after retries).
    added: Vec<String>,
    /// Registrations whose verify was answered.
    verified: Vec<String>,
    /// Calls answered UNAVAILABLE (then retried).
    unavailable: usize,
    /// Any other error: there must be none.
    other: Vec<String>,
    /// When each call was answered successfully.
    successes: Vec<Instant>,
}

/// Runs `call` until it succeeds, retrying UNAVAILABLE (the client's retry under the same
/// idempotency key), for at most 20 s.
async fn retried<T, F, Fut>(tally: &Mutex<Tally>, mut call: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        match call().await {
            Ok(v) => {
                tally.lock().unwrap().successes.push(Instant::now());
                return Some(v);
            }
            Err(Error::Unavailable(_)) => {
                tally.lock().unwrap().unavailable += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                tally.lock().unwrap().other.push(format!("{e:?}"));
                return None;
            }
        }
    }
    tally
        .lock()
        .unwrap()
        .other
        .push("no answer within 20 s".into());
    None
}

/// The clients' load: 8 tasks running add → verify under idempotency keys until `stop`.
fn start_clients(
    f: &Arc<Fixture>,
    tally: &Arc<Mutex<Tally>>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..8)
        .map(|c| {
            let (f, tally, stop) = (f.clone(), tally.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let user = format!("u{c}");
                    let key = IdempotencyKey::parse(&format!("c{c}-add-{n}")).unwrap();
                    let caller = Fixture::caller(&user).with_idempotency_key(Some(key));
                    let req = || AddRequest {
                        user_id: user.clone(),
                        organization: None,
                        phone: "+41791234567".into(),
                        verification: PhoneVerification::ReturnCode,
                    };
                    let Some(added) = retried(&tally, || f.service.add(&caller, req())).await
                    else {
                        continue;
                    };
                    let id = added.registration_id.as_str().to_owned();
                    tally.lock().unwrap().added.push(id.clone());
                    let code = added.verification_code.expect("code").expose().to_owned();
                    let key = IdempotencyKey::parse(&format!("c{c}-verify-{n}")).unwrap();
                    let caller = Fixture::caller(&user).with_idempotency_key(Some(key));
                    let verify = || VerifyRequest {
                        user_id: user.clone(),
                        organization: None,
                        registration_id: id.clone(),
                        code: code.clone(),
                    };
                    if retried(&tally, || f.service.verify(&caller, verify()))
                        .await
                        .is_some()
                    {
                        tally.lock().unwrap().verified.push(id);
                    }
                }
            })
        })
        .collect()
}

/// Checks the outcome against the database at `url` and reports it: only UNAVAILABLE during
/// the fault, service back within 5 s of `back`, every acknowledged write there once, and no
/// registration beyond them.
async fn check(what: &str, tally: Tally, url: &str, back: Instant, before: usize) {
    assert!(
        tally.other.is_empty(),
        "only UNAVAILABLE during the fault: {:?}",
        tally.other
    );
    let recovered = tally
        .successes
        .iter()
        .filter(|t| **t > back)
        .min()
        .map(|t| t.duration_since(back))
        .expect("calls succeed after the database is back");
    assert!(
        recovered < Duration::from_secs(5),
        "recovered after {recovered:?}"
    );
    let db = sqlx::PgPool::connect(url).await.expect("database");
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT aggregate_id, event_type FROM otp_sms.events \
         WHERE aggregate_type = 'user.otp_sms'",
    )
    .fetch_all(&db)
    .await
    .expect("events");
    db.close().await;
    let count = |id: &str, t: &str| rows.iter().filter(|(a, e)| a == id && e == t).count();
    for id in &tally.added {
        assert_eq!(count(id, "user.otp_sms.added"), 1, "{id} added once");
    }
    for id in &tally.verified {
        assert_eq!(count(id, "user.otp_sms.verified"), 1, "{id} verified once");
    }
    let registrations = rows
        .iter()
        .filter(|(_, e)| e == "user.otp_sms.added")
        .count();
    // Every client's add ended acknowledged (the loop retries until it does), so the log
    // holds exactly the acknowledged registrations: a retry after an unknown outcome that
    // wrote a second one would show here.
    assert_eq!(
        registrations,
        tally.added.len(),
        "registrations against acknowledged adds"
    );
    eprintln!(
        "{what}: {} adds and {} verifies acknowledged ({} before the fault), {} answers \
         UNAVAILABLE then retried, first success {:?} after the database was back, 0 lost, \
         0 duplicated",
        tally.added.len(),
        tally.verified.len(),
        before,
        tally.unavailable,
        recovered
    );
}

/// A store on `url` (one host or several) with short waits, migrated, under a fixture.
async fn fixture_on(url: &str) -> Arc<Fixture> {
    let hosts = DatabaseHosts::parse(url).expect("hosts");
    let timeouts = Timeouts {
        connect: Duration::from_secs(1),
        operation: Duration::from_secs(2),
        ..Default::default()
    };
    let (_, found) = hosts
        .connect(timeouts.connect, |o| o)
        .await
        .expect("a host");
    let pool = otp_sms_postgres::pool_options()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(1))
        .connect_with(found)
        .await
        .expect("pool");
    let store = PgStore::<Event>::new(pool, "otp_sms")
        .expect("schema")
        .with_timeouts(timeouts)
        .with_hosts(hosts);
    otp_sms_postgres::testing::migrate_whole(&store).await;
    Arc::new(Fixture::on_postgres_shared(Arc::new(store), flow_policy()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_follows_a_promotion_and_loses_no_acknowledged_write() {
    let mut primary = Cluster::primary();
    let standby = Cluster::standby_of(&primary);
    primary.require_synchronous_standby();
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let f = fixture_on(&url).await;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = start_clients(&f, &tally, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = tally.lock().unwrap().added.len();
    assert!(before > 0, "the load runs before the failover");
    primary.crash();
    tokio::time::sleep(Duration::from_millis(500)).await;
    standby.promote();
    let promoted = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.await.expect("client");
    }
    let tally = Arc::try_unwrap(tally).ok().unwrap().into_inner().unwrap();
    check("failover", tally, &standby.url(), promoted, before).await;
    drop(f);
    drop((primary, standby));
}

/// PostgreSQL restarted at once (crash recovery) under the same load: the store reconnects on
/// its own, and nothing acknowledged is lost or written twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_store_rides_out_a_database_restart_under_load() {
    let mut db = Cluster::primary();
    let f = fixture_on(&db.url()).await;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients = start_clients(&f, &tally, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = tally.lock().unwrap().added.len();
    assert!(before > 0, "the load runs before the restart");
    db.restart_immediately();
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        client.await.expect("client");
    }
    let tally = Arc::try_unwrap(tally).ok().unwrap().into_inner().unwrap();
    check("restart", tally, &db.url(), back, before).await;
    drop(f);
    drop(db);
}
