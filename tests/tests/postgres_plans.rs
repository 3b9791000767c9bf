//! The PostgreSQL store's hot statements read by index however large the log grows: a cached
//! generic plan that scanned the events table once made every append batch read the whole
//! log (migration 0010). Checked from PostgreSQL's own counters.

use std::sync::Arc;
use std::time::Duration;

use otp_sms_core::{Append, EventStore, ExpectedVersion, NewEvent, OrganizationId, PrincipalId};
use otp_sms_testkit::TestEvent;
use otp_sms_tests::pg;

/// (sequential scans, index scans) of the schema's `table`.
async fn scans(pool: &sqlx::PgPool, schema: &str, table: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT coalesce(seq_scan, 0), coalesce(idx_scan, 0) FROM pg_stat_user_tables \
         WHERE schemaname = $1 AND relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn append(n: usize) -> Append<TestEvent> {
    Append::new(
        otp_sms_core::StreamId::new(
            otp_sms_core::InstanceId::parse("instance", "inst-1").unwrap(),
            "test.aggregate",
            format!("plan-{n}"),
        ),
        ExpectedVersion::NoStream,
        vec![NewEvent {
            event: TestEvent {
                kind: "test.happened".into(),
                body: serde_json::json!({ "n": n }),
            },
            creator: PrincipalId::parse("creator", "tester").unwrap(),
            owner: OrganizationId::parse("owner", "org-1").unwrap(),
        }],
    )
    .with_outbox(vec![otp_sms_core::NewOutboxMessage {
        id: uuid::Uuid::now_v7(),
        payload: serde_json::json!({ "n": n }),
    }])
    .with_command(otp_sms_core::CommandId::generate())
}

/// Given a log of 5,000 events and a backlog of 5,000 outbox messages, when 1,000 appends,
/// each with a message, come from 40 writers at once (so the writer sends batches, and its
/// connection caches their plan), then the log and the outbox are read by index: at most the
/// first few executions, planned with their values, may scan.
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
    sqlx::query(&format!(
        "INSERT INTO \"{schema}\".outbox (id, instance_id, aggregate_type, aggregate_id, payload) \
         SELECT gen_random_uuid(), 'inst-1', 'test.aggregate', 'filler-' || g, '{{}}' \
           FROM generate_series(1, 5000) AS g"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    // Counters reach the statistics views when a backend reports them (within a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = [
        scans(store.pool(), &schema, "events").await,
        scans(store.pool(), &schema, "outbox").await,
    ];
    let writers: Vec<_> = (0..40)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for k in 0..25 {
                    store.append(append(w * 25 + k)).await.expect("append");
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
    store.append(append(100_000)).await.expect("append");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let after = [
        scans(store.pool(), &schema, "events").await,
        scans(store.pool(), &schema, "outbox").await,
    ];
    for (table, (before, after)) in ["events", "outbox"].iter().zip(before.iter().zip(&after)) {
        // The first executions of a statement in a session are planned with their values
        // and may scan; a cached plan that scans would do so on every batch (25 or more).
        assert!(
            after.0 - before.0 <= 5,
            "sequential scans of {table}: {before:?} -> {after:?}"
        );
        assert!(
            after.1 > before.1,
            "{table} read by index: {before:?} -> {after:?}"
        );
    }
    pg::drop_store(&store).await;
}
