//! End-to-end on a SQLite file: the real server binary killed (SIGKILL) under load and started
//! again on the file; two server processes sharing one file; files the server refuses at
//! start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use otp_sms_core::{Event, EventPayload, EventStore};
use otp_sms_sqlite::testing::TempDir;
use otp_sms_sqlite::{Database, SqliteOptions, SqliteStore};
use otp_sms_tests::net::WebhookReceiver;
use otp_sms_tests::server::{
    config, handed_over, load_instance, run_to_exit, webhook_sms, Options, Server, TEST_KEYS,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

/// Limits that never bind in these tests, but the one under test.
const OPEN: &str = "max_registrations_per_user = 100000, \
    user = [{ max = 100000, window_secs = 3600 }], \
    number_range = [{ max = 100000, window_secs = 3600 }], \
    client_address = [{ max = 100000, window_secs = 3600 }], \
    organization = [{ max = 100000, window_secs = 3600 }], \
    instance = [{ max = 100000, window_secs = 3600 }]";

fn sqlite_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.file("otp-sms.db").display())
}

fn sqlite_server(extra: &str, url: &str) -> Server {
    Server::start(
        BIN,
        &Options {
            config: config(extra),
            keys: Some(TEST_KEYS.into()),
            database: Some((url.to_owned(), "otp_sms".to_owned())),
            ..Options::default()
        },
    )
}

/// Every event in the file, read as a host would (the file is shared; WAL lets us read
/// beside a running server).
async fn events_in(dir: &TempDir) -> Vec<(String, String)> {
    let database = Database::open(SqliteOptions::new(dir.file("otp-sms.db")))
        .await
        .expect("open the server's file");
    let store = SqliteStore::<Event>::new(database);
    store
        .read_all(0, usize::MAX)
        .await
        .expect("read the feed")
        .iter()
        .map(|e| {
            (
                e.stream.aggregate_id.to_string(),
                e.event.event_type().to_owned(),
            )
        })
        .collect()
}

/// The server killed with SIGKILL in the middle of 1,000 acknowledged adds (each sending its
/// code by SMS) and started again on the same file: 8 clients retry connection errors and 503
/// under `Idempotency-Key`. Every acknowledged add is in the file once and no other; every
/// registration's code reaches the provider as one message (a message handed over as the
/// process died may be handed over again under its id, which the provider's idempotency key
/// absorbs; counted and printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_server_on_sqlite_loses_no_acknowledged_add_and_sends_no_code_twice() {
    const ADDS: usize = 1_000;
    let dir = TempDir::new();
    let url = sqlite_url(&dir);
    let receiver = WebhookReceiver::start().await;
    let extra = format!(
        "{}[notifier]\ninterval_ms = 50\nbatch = 50\nlease_secs = 2\nconcurrency = 8\n{}",
        webhook_sms(&receiver.url, "timeout_ms = 1500\nretries = 0"),
        load_instance(&format!("{{ {OPEN} }}"), 8)
    );
    let mut first = sqlite_server(&extra, &url);
    let base = Arc::new(Mutex::new(first.base_url.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    // (acknowledged registrations, calls retried, other failures)
    type Tally = (Vec<String>, usize, Vec<String>);
    let tally: Arc<Mutex<Tally>> = Arc::default();
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let (base, stop, tally) = (base.clone(), stop.clone(), tally.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let until = Instant::now() + Duration::from_secs(20);
                    loop {
                        if Instant::now() > until {
                            tally.lock().unwrap().2.push("no answer in 20 s".into());
                            return;
                        }
                        let url = format!(
                            "{}/resources/v3alpha/users/u{c}/otp_sms",
                            base.lock().unwrap()
                        );
                        let sent = client
                            .post(url)
                            .bearer_auth(format!("token-u{c}"))
                            .header("Idempotency-Key", format!("c{c}-add-{n}"))
                            .json(&serde_json::json!({"number": format!("+41790{c}{n:05}")}))
                            .timeout(Duration::from_secs(5))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status().is_success() => {
                                let body: Value = r.json().await.expect("json");
                                let id = body["otpSmsId"].as_str().unwrap().to_owned();
                                tally.lock().unwrap().0.push(id);
                                break;
                            }
                            Ok(r) if r.status().as_u16() != 503 => {
                                let status = r.status();
                                let text = r.text().await.unwrap_or_default();
                                tally.lock().unwrap().2.push(format!("{status}: {text}"));
                                return;
                            }
                            _ => tally.lock().unwrap().1 += 1,
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect();
    let acknowledged = || tally.lock().unwrap().0.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged() < ADDS * 3 / 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = acknowledged();
    first.kill();
    let second = sqlite_server(&extra, &url);
    *base.lock().unwrap() = second.base_url.clone();
    while acknowledged() < ADDS && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client");
    }
    let (added, retried, other) = std::mem::take(&mut *tally.lock().unwrap());
    assert!(other.is_empty(), "only retryable failures: {other:?}");
    assert!(added.len() >= ADDS, "{} acknowledged in 60 s", added.len());
    let (received, distinct) = handed_over(
        &receiver,
        added.len(),
        Duration::from_secs(60),
        Duration::from_millis(2500),
    )
    .await;
    let events = events_in(&dir).await;
    let count = |id: &str, t: &str| events.iter().filter(|(a, e)| a == id && e == t).count();
    for id in &added {
        assert_eq!(count(id, "user.otp_sms.added"), 1, "{id} added once");
        assert_eq!(count(id, "user.otp_sms.code.added"), 1, "{id}: one code");
    }
    let registrations = events
        .iter()
        .filter(|(_, t)| t == "user.otp_sms.added")
        .count();
    assert_eq!(
        registrations,
        added.len(),
        "no registration beyond the acknowledged"
    );
    // One message per registration, each registration's code once.
    let mut messages: HashMap<&str, Vec<&str>> = HashMap::new();
    for r in &received {
        messages
            .entry(r["otpSmsId"].as_str().unwrap())
            .or_default()
            .push(r["messageId"].as_str().unwrap());
    }
    assert_eq!(
        distinct,
        added.len(),
        "every code handed over\n{}",
        second.output()
    );
    for id in &added {
        let mut ids = messages.get(id.as_str()).cloned().unwrap_or_default();
        ids.dedup();
        assert_eq!(ids.len(), 1, "{id}: one message");
    }
    let again = received.len() - distinct;
    assert!(
        again <= 8,
        "{again} handed over again: at most those in flight at the kill"
    );
    eprintln!(
        "sqlite kill: {} adds acknowledged ({before} before the kill), {retried} calls retried, \
         0 lost, 0 duplicated; {distinct} codes handed over, {again} again under their id",
        added.len()
    );
}

/// Two server processes on one file, each with its notifier: 50 users add the same number at
/// once, 25 through each server. The number's budget (5 an hour) admits exactly 5 in all,
/// the rest are RESOURCE_EXHAUSTED, and each of the 5 codes reaches the provider once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_file_share_budgets_and_the_outbox_exactly() {
    let dir = TempDir::new();
    let url = sqlite_url(&dir);
    let receiver = WebhookReceiver::start().await;
    let extra = format!(
        "{}[notifier]\ninterval_ms = 50\nbatch = 10\nlease_secs = 3\nconcurrency = 4\n{}",
        webhook_sms(&receiver.url, "timeout_ms = 2000\nretries = 0"),
        load_instance(
            &format!("{{ {OPEN}, destination_number = [{{ max = 5, window_secs = 3600 }}] }}"),
            50
        )
    );
    let a = sqlite_server(&extra, &url);
    let b = sqlite_server(&extra, &url);
    let client = reqwest::Client::new();
    let calls: Vec<_> = (0..50)
        .map(|i| {
            let base = if i % 2 == 0 { &a.base_url } else { &b.base_url };
            tokio::spawn(
                client
                    .post(format!("{base}/resources/v3alpha/users/u{i}/otp_sms"))
                    .bearer_auth(format!("token-u{i}"))
                    .json(&serde_json::json!({"number": "+41791234567"}))
                    .send(),
            )
        })
        .collect();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for call in calls {
        let answer = call.await.expect("the call's task").expect("an answer");
        *statuses.entry(answer.status().as_u16()).or_default() += 1;
    }
    assert_eq!(statuses.get(&200), Some(&5), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&45), "{statuses:?}");
    let (received, distinct) = handed_over(
        &receiver,
        5,
        Duration::from_secs(20),
        Duration::from_millis(3500),
    )
    .await;
    assert_eq!(
        (received.len(), distinct),
        (5, 5),
        "each code once\n{}\n{}",
        a.output(),
        b.output()
    );
    let sent = events_in(&dir)
        .await
        .iter()
        .filter(|(_, t)| t == "user.otp_sms.code.sent")
        .count();
    assert_eq!(sent, 5);
}

/// A database URL naming a file that is not SQLite stops the start with a message naming the
/// file; the file is left as it was.
#[test]
fn a_file_that_is_not_sqlite_stops_the_start() {
    let dir = TempDir::new();
    let path = dir.file("otp-sms.db");
    std::fs::write(&path, "not a database ".repeat(100)).unwrap();
    let config_path = dir.file("config.toml");
    std::fs::write(&config_path, config("")).unwrap();
    let (ok, output) = run_to_exit(
        BIN,
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            config_path.to_str().unwrap(),
            "--keys",
            TEST_KEYS,
            "--database-url",
            &sqlite_url(&dir),
        ],
        &[],
    );
    assert!(!ok, "refused");
    assert!(
        output.contains("is not a SQLite database") && output.contains("otp-sms.db"),
        "{output}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "not a database ".repeat(100)
    );
}
