//! The SQLite file as an operator meets it: created with its directory and owner-only, in
//! WAL mode; a file that is not SQLite or was written by a newer version refused at open and
//! left as it was; a backup taken while writes go on, and restored.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use otp_sms_core::{
    Append, EventStore, ExpectedVersion, InstanceId, NewEvent, OrganizationId, PrincipalId,
    StoreError, StreamId,
};
use otp_sms_sqlite::testing::TempDir;
use otp_sms_sqlite::{Database, SqliteOptions, SqliteStore};
use otp_sms_testkit::TestEvent;
use sqlx::Connection;

fn event(n: usize) -> NewEvent<TestEvent> {
    NewEvent {
        event: TestEvent {
            kind: "test.appended".into(),
            body: serde_json::json!({ "n": n }),
        },
        creator: PrincipalId::parse("creator", "tester").unwrap(),
        owner: OrganizationId::parse("owner", "org").unwrap(),
    }
}

fn stream(n: usize) -> StreamId {
    StreamId::new(
        InstanceId::parse("instance", "inst").unwrap(),
        "test",
        format!("s{n}"),
    )
}

async fn raw(path: &std::path::Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect_with(&sqlx::sqlite::SqliteConnectOptions::new().filename(path))
        .await
        .expect("a plain connection")
}

#[tokio::test]
async fn a_new_file_is_created_with_its_directory_owner_only_and_in_wal_mode() {
    let dir = TempDir::new();
    let path = dir.path().join("a/b/otp-sms.db");
    let database = Database::open_url(&format!("sqlite://{}", path.display()))
        .await
        .expect("open");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the file is its owner's alone");
    }
    let mut conn = raw(&path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    database.ping().await.expect("readable");
}

#[tokio::test]
async fn urls_without_a_file_are_refused() {
    for url in [
        "postgres://x/y",
        "sqlite::memory:",
        "sqlite://",
        "sqlite://a.db?mode=ro",
    ] {
        let refused = SqliteOptions::from_url(url).expect_err(url);
        assert!(
            matches!(refused, StoreError::Internal(_)),
            "{url}: {refused}"
        );
    }
    assert_eq!(
        SqliteOptions::from_url("sqlite:///srv/otp.db")
            .unwrap()
            .path(),
        std::path::Path::new("/srv/otp.db")
    );
}

#[tokio::test]
async fn a_file_that_is_not_sqlite_is_refused_and_left_as_it_was() {
    let dir = TempDir::new();
    let path = dir.file("notes.db");
    let text = b"these are not the pages of a database, but a long enough text file".repeat(64);
    std::fs::write(&path, &text).unwrap();
    let refused = Database::open(SqliteOptions::new(&path))
        .await
        .expect_err("not SQLite");
    let message = refused.to_string();
    assert!(
        message.contains("is not a SQLite database") && message.contains("notes.db"),
        "{message}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), text, "the file is untouched");
}

#[tokio::test]
async fn a_file_written_by_a_newer_version_is_refused_and_left_as_it_was() {
    let dir = TempDir::new();
    let path = dir.file("otp-sms.db");
    drop(
        Database::open(SqliteOptions::new(&path))
            .await
            .expect("open"),
    );
    let mut conn = raw(&path).await;
    // What a newer binary would have applied.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let refused = Database::open(SqliteOptions::new(&path))
        .await
        .expect_err("newer schema");
    assert!(refused.to_string().contains("newer otp-sms"), "{refused}");
    let mut conn = raw(&path).await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(applied, 2, "nothing was applied or removed");
}

/// Given writers appending without pause, when a backup is taken, then the copy holds every
/// append acknowledged before the backup started, each stream whole (no half-written batch);
/// opened as a store of its own (the restore), it takes further appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_writing_holds_every_acknowledged_write_and_can_be_restored() {
    let dir = TempDir::new();
    let database = Database::open(SqliteOptions::new(dir.file("live.db")))
        .await
        .unwrap();
    let store = Arc::new(SqliteStore::<TestEvent>::new(database.clone()));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (store, acknowledged, stop) = (store.clone(), acknowledged.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let s = stream(w * 1_000_000 + n);
                    store
                        .append(Append::new(
                            s,
                            ExpectedVersion::NoStream,
                            vec![event(n), event(n + 1)],
                        ))
                        .await
                        .expect("append");
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                    n += 1;
                }
            })
        })
        .collect();
    while acknowledged.load(Ordering::SeqCst) < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let before = acknowledged.load(Ordering::SeqCst);
    let copy = dir.file("backup.db");
    database.backup_to(&copy).await.expect("backup");
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        database.backup_to(&copy).await.is_err(),
        "a backup never overwrites a file"
    );
    let restored = Database::open(SqliteOptions::new(&copy)).await.unwrap();
    let restored = SqliteStore::<TestEvent>::new(restored);
    let feed = restored.read_all(0, usize::MAX).await.unwrap();
    let appends = feed.len() / 2;
    assert_eq!(feed.len() % 2, 0, "each append whole");
    assert!(
        appends >= before,
        "{appends} appends in the copy, {before} acknowledged before"
    );
    for pair in feed.chunks(2) {
        assert_eq!(pair[0].stream, pair[1].stream);
        assert_eq!((pair[0].sequence, pair[1].sequence), (1, 2));
    }
    restored
        .append(Append::new(
            stream(999),
            ExpectedVersion::NoStream,
            vec![event(0)],
        ))
        .await
        .expect("the restored file takes writes");
}

/// Given a file capped at 256 KiB (as a full disk), when appends of 4 KiB events go on past
/// the cap, then the append that does not fit fails as UNAVAILABLE (or as an outcome unknown,
/// which the command service settles by reading its stream), nothing of it is written, every
/// acknowledged append is there whole, and the store keeps answering reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_file_refuses_the_write_that_does_not_fit_and_keeps_the_rest() {
    let dir = TempDir::new();
    let database =
        Database::open(SqliteOptions::new(dir.file("small.db")).with_max_size(256 * 1024))
            .await
            .unwrap();
    let store = SqliteStore::<TestEvent>::new(database);
    let big = |n: usize| NewEvent {
        event: TestEvent {
            kind: "test.big".into(),
            body: serde_json::json!({ "n": n, "pad": "x".repeat(4096) }),
        },
        ..event(n)
    };
    let mut acknowledged = 0;
    let refused = loop {
        match store
            .append(Append::new(
                stream(acknowledged),
                ExpectedVersion::NoStream,
                vec![big(0), big(1)],
            ))
            .await
        {
            Ok(_) => acknowledged += 1,
            Err(e) => break e,
        }
        assert!(acknowledged < 1_000, "the cap never bound");
    };
    assert!(
        matches!(refused, StoreError::Unavailable(_) | StoreError::Unknown(_)),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("full"), "{refused}");
    let feed = store.read_all(0, usize::MAX).await.expect("reads go on");
    assert_eq!(
        feed.len(),
        acknowledged * 2,
        "every acknowledged append, and nothing else"
    );
    assert!(acknowledged > 0);
    let last = store.read_stream(&stream(acknowledged)).await.unwrap();
    assert!(last.is_empty(), "nothing of the refused append");
}
