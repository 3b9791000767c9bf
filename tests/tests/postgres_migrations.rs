//! Each PostgreSQL component migrates its own tables: a host that keeps its events elsewhere
//! creates only the budget or idempotency tables it uses, and a schema an earlier release
//! migrated whole (one migrator for everything) is up to date for all three.

use std::time::Duration;

use otp_sms_core::{BudgetStore, BudgetTake, Event, Rule, TakeOutcome, TakeRequest};
use otp_sms_postgres::testing::{drop_schema, pool, schema_name};
use otp_sms_postgres::{PgBudgets, PgIdempotency, PgStore, MIGRATOR};

async fn tables(pool: &sqlx::PgPool, schema: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = $1 AND table_name <> '_sqlx_migrations' ORDER BY 1",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn one_take() -> TakeRequest {
    TakeRequest {
        takes: vec![BudgetTake {
            key: "k".into(),
            member: "m".into(),
            rules: vec![Rule::Window {
                max: 1,
                window: Duration::from_secs(60),
            }],
        }],
    }
}

#[tokio::test]
async fn each_component_creates_only_its_own_tables() {
    let pool = pool().await;
    let schema = schema_name();
    let budgets = PgBudgets::new(pool.clone(), &schema).unwrap();
    budgets.migrate().await.unwrap();
    assert_eq!(tables(&pool, &schema).await, ["budget_entries"]);
    assert_eq!(budgets.take(&one_take()).await.unwrap(), TakeOutcome::Taken);

    let records = PgIdempotency::new(pool.clone(), &schema).unwrap();
    records.migrate().await.unwrap();
    assert_eq!(
        tables(&pool, &schema).await,
        ["budget_entries", "idempotency_keys"]
    );

    let store = PgStore::<Event>::new(pool.clone(), &schema).unwrap();
    store.migrate().await.unwrap();
    assert_eq!(
        tables(&pool, &schema).await,
        ["budget_entries", "events", "idempotency_keys", "outbox"]
    );
    let checkpoints = otp_sms_postgres::PgCheckpoints::new(pool.clone(), &schema).unwrap();
    checkpoints.migrate().await.unwrap();
    assert_eq!(
        tables(&pool, &schema).await,
        [
            "budget_entries",
            "checkpoints",
            "events",
            "idempotency_keys",
            "outbox"
        ]
    );
    // Again, in any order: nothing to do.
    checkpoints.migrate().await.unwrap();
    records.migrate().await.unwrap();
    store.migrate().await.unwrap();
    budgets.migrate().await.unwrap();
    drop_schema(&schema).await;
}

#[tokio::test]
async fn a_schema_migrated_whole_by_an_earlier_release_is_up_to_date_for_each() {
    let pool = pool().await;
    let schema = schema_name();
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(&format!("SET search_path TO \"{schema}\""))
        .execute(&mut *conn)
        .await
        .unwrap();
    MIGRATOR.run_direct(&mut *conn).await.unwrap();
    sqlx::query("RESET search_path")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let applied: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{schema}\"._sqlx_migrations"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    PgStore::<Event>::new(pool.clone(), &schema)
        .unwrap()
        .migrate()
        .await
        .unwrap();
    PgBudgets::new(pool.clone(), &schema)
        .unwrap()
        .migrate()
        .await
        .unwrap();
    PgIdempotency::new(pool.clone(), &schema)
        .unwrap()
        .migrate()
        .await
        .unwrap();
    otp_sms_postgres::PgCheckpoints::new(pool.clone(), &schema)
        .unwrap()
        .migrate()
        .await
        .unwrap();
    let after: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{schema}\"._sqlx_migrations"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(after, applied, "nothing applied twice");
    assert_eq!(applied as usize, MIGRATOR.iter().count());
    drop_schema(&schema).await;
}
