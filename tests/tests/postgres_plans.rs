//! The PostgreSQL store's hot statements read by index however large the log grows: a cached
//! generic plan that scanned the events table once made every append batch read the whole
//! log (migration 0010). Checked from PostgreSQL's own counters.

use std::sync::Arc;
use std::time::Duration;

use otp_sms_core::{Append, EventStore, ExpectedVersion, NewEvent, OrganizationId, PrincipalId};
use otp_sms_testkit::TestEvent;
use otp_sms_tests::pg;

/// (sequential scans, index scans) of the schema's `events` table.
async fn scans(pool: &sqlx::PgPool, schema: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT coalesce(seq_scan, 0), coalesce(idx_scan, 0) FROM pg_stat_user_tables \
         WHERE schemaname = $1 AND relname = 'events'",
    )
    .bind(schema)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn append(n: usize) -> Append<TestEvent> {
    Append {
        stream: otp_sms_core::StreamId::new(
            otp_sms_core::InstanceId::parse("instance", "inst-1").unwrap(),
            "test.aggregate",
            format!("plan-{n}"),
        ),
        expected: ExpectedVersion::NoStream,
        events: vec![NewEvent {
            event: TestEvent {
                kind: "test.happened".into(),
                body: serde_json::json!({ "n": n }),
            },
            creator: PrincipalId::parse("creator", "tester").unwrap(),
            owner: OrganizationId::parse("owner", "org-1").unwrap(),
        }],
        outbox: Vec::new(),
        command: Some(otp_sms_core::CommandId::generate()),
    }
}

/// Given a log of 5,000 events, when 400 appends come from 40 writers at once (so the writer
/// sends batches, and its connection caches their plan), then no statement scanned the events
/// table sequentially.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_appends_never_scan_the_log() {
    let store = Arc::new(pg::fresh_store::<TestEvent>().await);
    let schema = store.schema().to_owned();
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".events (instance_id, aggregate_type, aggregate_id, sequence, \
         event_type, revision, payload, creator, owner) \
         SELECT 'inst-1', 'test.aggregate', 'filler-' || g, 1, 'test.happened', 1, '{{}}', 'c', 'o' \
           FROM generate_series(1, 5000) AS g"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    // Counters reach the statistics views when a backend reports them (within a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = scans(store.pool(), &schema).await;
    let writers: Vec<_> = (0..40)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for k in 0..10 {
                    store.append(append(w * 10 + k)).await.expect("append");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    // A backend reports its counters at a transaction's end once a second has passed since
    // its last report: one more append, a second later, makes the writer report the batches.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    store.append(append(10_000)).await.expect("append");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = scans(store.pool(), &schema).await;
    assert_eq!(
        after.0 - before.0,
        0,
        "sequential scans of events: {before:?} -> {after:?}"
    );
    assert!(
        after.1 > before.1,
        "the appends read by index: {before:?} -> {after:?}"
    );
    pg::drop_store(&store).await;
}
