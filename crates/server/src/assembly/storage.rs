//! Where the server keeps its state: PostgreSQL or a SQLite file (the events, and the budgets
//! and idempotency records every server on the database shares) or, without a database URL,
//! memory.

use std::sync::Arc;

use otp_sms_core::{BudgetStore, Event, EventStore, IdempotencyStore};
use otp_sms_memory::MemoryStore;
use otp_sms_postgres::{DatabaseHosts, PgBudgets, PgIdempotency, PgStore};
use otp_sms_sqlite::{Database, SqliteBudgets, SqliteIdempotency, SqliteStore};

use crate::config::Config;
use crate::{Args, StartError};

/// How the server reaches its store, for the readiness check.
#[derive(Clone)]
pub(crate) enum StoreCheck {
    /// Memory: always ready.
    Memory,
    /// PostgreSQL: ready while it takes writes.
    Postgres(Arc<PgStore<Event>>),
    /// A SQLite file: ready while it can be read.
    Sqlite(Database),
}

/// The opened store and what goes with it.
pub(crate) struct Storage {
    /// The event store.
    pub(crate) store: Arc<dyn EventStore<Event>>,
    /// How readiness checks it.
    pub(crate) check: StoreCheck,
    /// The stream cache's size (0: none; memory needs none).
    pub(crate) stream_cache: usize,
    /// The budget and idempotency stores shared through the database (none: the service's
    /// in-process defaults).
    pub(crate) shared: Option<(Arc<dyn BudgetStore>, Arc<dyn IdempotencyStore>)>,
}

impl Storage {
    /// PostgreSQL when `args` has a `postgres://` database URL (migrated, each component its
    /// own tables), a SQLite file for a `sqlite:` one, else memory.
    pub(crate) async fn open(args: &Args, config: &Config) -> Result<Self, StartError> {
        let Some(url) = &args.database_url else {
            tracing::warn!("NO DATABASE: data lives only in memory and is lost when the server stops (pass --database-url for PostgreSQL)");
            return Ok(Self {
                store: Arc::new(MemoryStore::<Event>::new()),
                check: StoreCheck::Memory,
                stream_cache: 0,
                shared: None,
            });
        };
        if url.starts_with("sqlite:") {
            return Self::open_sqlite(url, config).await;
        }
        let timeouts = config.database.timeouts().map_err(StartError::Other)?;
        // One host, or several (`host1:5432,host2:5432`, target_session_attrs): the pool
        // starts on the one that takes writes, and the store follows a promotion.
        let hosts = DatabaseHosts::parse(url)?;
        let (first, found) = hosts.connect(timeouts.connect, |o| o).await?;
        drop(first);
        let pool = otp_sms_postgres::pool_options()
            .acquire_timeout(timeouts.connect)
            .connect_with(found)
            .await
            .map_err(otp_sms_postgres::map_error)?;
        let store = Arc::new(
            PgStore::<Event>::new(pool, &args.schema)?
                .with_timeouts(timeouts)
                .with_hosts(hosts),
        );
        store.migrate().await?;
        tracing::info!(
            schema = %args.schema,
            stream_cache = config.service.stream_cache,
            "using PostgreSQL; migrations applied"
        );
        // Budgets and idempotency records shared by every server on this database, on its
        // clock.
        let budgets = PgBudgets::new(store.pool().clone(), &args.schema)?.with_timeouts(timeouts);
        budgets.migrate().await?;
        let records =
            PgIdempotency::new(store.pool().clone(), &args.schema)?.with_timeouts(timeouts);
        records.migrate().await?;
        Ok(Self {
            store: store.clone(),
            check: StoreCheck::Postgres(store),
            stream_cache: config.service.stream_cache,
            shared: Some((Arc::new(budgets), Arc::new(records))),
        })
    }

    /// The SQLite file of `url`, created (mode 0600, with its directory) if missing and
    /// migrated; the events, budgets and idempotency records all in it, shared by every server
    /// process on the file.
    async fn open_sqlite(url: &str, config: &Config) -> Result<Self, StartError> {
        let database = Database::open_url(url).await?;
        tracing::info!(
            path = %database.options().path().display(),
            stream_cache = config.service.stream_cache,
            "using SQLite; migrations applied"
        );
        Ok(Self {
            store: Arc::new(SqliteStore::<Event>::new(database.clone())),
            check: StoreCheck::Sqlite(database.clone()),
            stream_cache: config.service.stream_cache,
            shared: Some((
                Arc::new(SqliteBudgets::new(database.clone())),
                Arc::new(SqliteIdempotency::new(database)),
            )),
        })
    }
}
