//! # otp-sms-testkit
//!
//! What a host or a store author needs to test against otp-sms:
//!
//! - [`conformance`]: one suite of async tests that every [`otp_sms_core::EventStore`] must
//!   pass. The in-memory and PostgreSQL stores run it; a third-party store runs it the same way
//!   with [`store_conformance_tests!`].
//! - [`budgets`]: the suite every [`otp_sms_core::BudgetStore`] passes
//!   ([`budget_conformance_tests!`]).
//! - [`idempotency`]: the suite every [`otp_sms_core::IdempotencyStore`] passes
//!   ([`idempotency_conformance_tests!`]).
//! - [`doubles`]: in-memory user directory, authorizer and SMS sender for tests.
//! - [`scenario`]: steps of one registration's life, a reference model of what each must do,
//!   and a simulator that runs them through the real aggregate.
//! - `strategies` (feature `proptest`): strategies that generate steps and scenarios.

pub mod budgets;
pub mod conformance;
pub mod doubles;
pub mod idempotency;
pub mod runner;
pub mod scenario;
#[cfg(feature = "proptest")]
pub mod strategies;

pub use conformance::{StoreFactory, TestEvent};

/// For the factories' `#[async_trait]`: a host implements them with this one and needs no
/// `async-trait` dependency of its own.
pub use otp_sms_core::async_trait;
