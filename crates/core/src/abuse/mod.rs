//! Abuse resistance: who may skip possession, which numbers may receive codes, and the send
//! budgets that stop SMS pumping.
//!
//! - [`AbusePolicy`]: every rule and figure, per instance, with the defaults of
//!   `docs/security.md`.
//! - [`plan`]: the pure part: which budgets a code to send takes, and whether a number may be
//!   registered at all.
//! - [`BudgetStore`]: where budget state lives, shared by every process on one store; the
//!   in-process [`MemoryBudgets`] is the default, `otp-sms-postgres` has one for many servers.
//!   Both pass `otp-sms-testkit`'s budget conformance suite.

mod budget;
mod memory;
mod plan;
mod policy;

pub use budget::{BudgetStore, BudgetTake, Member, Rule, TakeOutcome, TakeRequest};
pub use memory::MemoryBudgets;
pub use plan::{redact_phone, NumberCheck, SendPlan};
pub use policy::{AbusePolicy, AbusePolicyError, Limit, RangeCollapse, Rate, Scope, TestNumber};
