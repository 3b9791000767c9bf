//! # otp-sms-sqlite
//!
//! The stores of `otp_sms_core` in one SQLite file, so that one binary serves production
//! without a database server: the [`EventStore`](otp_sms_core::EventStore) ([`SqliteStore`]),
//! the send budgets ([`SqliteBudgets`]), the idempotency records ([`SqliteIdempotency`]) and
//! the subscription checkpoints ([`SqliteCheckpoints`]), each passing the same conformance
//! suite as the in-memory and PostgreSQL stores.
//!
//! - **One file, WAL.** Readers never wait for the writer; the file is created (mode 0600)
//!   with its directory when missing; its schema is migrated on open (`sqlx::migrate!`), and a
//!   file written by a newer version is refused with a message saying so.
//! - **One writer, group commit.** SQLite takes one writer at a time: every write of the
//!   process (appends, budget takes, claims, outbox leases) goes through one connection, and
//!   the writes that wait together commit in one transaction, each in a savepoint of its own
//!   (one that fails rolls back alone). Nobody is answered before the commit.
//! - **Durability**: [`Durability::Full`] by default (an acknowledged write survives a process
//!   kill and a power cut); [`Durability::Normal`] survives a process kill only.
//! - **Several processes on one file** (on one host; never a network file system): each batch
//!   holds the file's write lock from its first check to its commit, so versions, budgets,
//!   claims and outbox leases stay exact across processes.
//!
//! ```no_run
//! # async fn run() -> Result<(), otp_sms_core::StoreError> {
//! use otp_sms_sqlite::{Database, SqliteBudgets, SqliteStore};
//! let database = Database::open_url("sqlite:///var/lib/otp-sms/otp-sms.db").await?;
//! let store = SqliteStore::<otp_sms_core::Event>::new(database.clone());
//! let budgets = SqliteBudgets::new(database);
//! # let _ = (store, budgets); Ok(()) }
//! ```

mod budgets;
mod checkpoints;
mod database;
mod error;
mod events;
mod idempotency;
mod options;
#[cfg(feature = "test-util")]
pub mod testing;
mod time;
mod writer;

pub use budgets::SqliteBudgets;
pub use checkpoints::SqliteCheckpoints;
pub use database::{Database, MIGRATOR};
pub use error::map_error;
pub use events::SqliteStore;
pub use idempotency::SqliteIdempotency;
pub use options::{Durability, SqliteOptions};
