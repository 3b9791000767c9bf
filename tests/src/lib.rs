//! Shared set-up for the end-to-end tests: a PostgreSQL database for tests, with one schema per
//! test, and a command service fixture over either store.
//!
//! PostgreSQL is found this way, and a test never skips silently:
//! 1. `DATABASE_URL`, when set, names the server (CI sets it);
//! 2. otherwise a server listening on 127.0.0.1:5432 is used (`postgres@…/postgres`);
//! 3. otherwise a throwaway cluster is started from the local server binaries (`initdb`,
//!    `pg_ctl`) in a temporary directory, and reused by later test processes;
//! 4. otherwise the test fails with a message that says how to fix it.

/// Runs each named case — an `async fn(Backend)` of the calling file — as two tests, in modules
/// `memory` and `postgres`, one on each store.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod memory { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name($crate::fixture::Backend::Memory).await }
        )* }
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() { super::$name($crate::fixture::Backend::Postgres).await }
        )* }
    };
}

pub mod faults;
pub mod fixture;
pub mod grpc;
pub mod net;
pub mod pg;
pub mod python;

pub mod replication;
pub mod server;
pub mod web;

/// The README's code blocks compile (`cargo test --doc -p otp-sms-tests`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
