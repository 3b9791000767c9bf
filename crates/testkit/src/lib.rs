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
//! - [`checkpoints`]: the suite every [`otp_sms_core::CheckpointStore`] passes, with a
//!   [`otp_sms_core::Subscription`] over it ([`checkpoint_conformance_tests!`]).
//! - [`doubles`]: in-memory user directory, authorizer and SMS sender for tests.
//! - [`scenario`]: steps of a registration's life (or of many: [`scenario::Aimed`]), a
//!   reference model of what each must do with its state readable, and a simulator that runs
//!   them through the real aggregate.
//! - [`driver`]: runs the same steps through the real command service on any event store,
//!   the notifier included.
//! - [`runner`]: how the conformance macros run a case, with its time-out.
//! - `stand_ins` (feature `stand-ins`): local stand-ins of Twilio's and Vonage's HTTP APIs, on
//!   loopback, to test senders against without calling a provider.
//! - `strategies` (feature `proptest`): strategies that generate steps and scenarios, of one
//!   registration or of several users with several registrations each.

pub mod budgets;
pub mod checkpoints;
pub mod conformance;
pub mod doubles;
pub mod driver;
pub mod idempotency;
pub mod runner;
pub mod scenario;
#[cfg(feature = "stand-ins")]
pub mod stand_ins;
#[cfg(feature = "proptest")]
pub mod strategies;

pub use conformance::{StoreFactory, TestEvent};

/// For the factories' `#[async_trait]`: a host implements them with this one and needs no
/// `async-trait` dependency of its own.
pub use otp_sms_core::async_trait;
