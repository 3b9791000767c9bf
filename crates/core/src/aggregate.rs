//! The registration aggregate: a pure `apply` and a pure `decide`.
//!
//! Neither does I/O nor reads a clock or a random source: the current time, the policy, the
//! keys and any fresh code come in through [`Context`] and [`Command`], so the same inputs always
//! give the same output. That is what lets property tests drive it.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::code::{CodePolicy, VerificationCode, MAX_TRACKED_ISSUES};
use crate::error::{Error, Precondition};
use crate::event::{
    Added, CheckFailed, CodeAdded, CodeDelivered, CodeSent, Delivery, DeliveryFailed, Event,
    Removed, VerificationLocked, VerificationUnlocked, Verified,
};
use crate::ids::{OrganizationId, RegistrationId, UserId};
use crate::keys::{CodeBinding, CodeHash, CodeKeyRing};
use crate::phone::Phone;

/// Where a registration is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Status {
    /// No event yet.
    #[default]
    Absent,
    /// Added, waiting for the right code.
    Unverified,
    /// Verified: a usable second factor.
    Verified,
    /// Removed: final.
    Removed,
}

/// The code currently pending for a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCode {
    /// Its number within the registration.
    pub number: u32,
    /// Its keyed hash.
    pub hash: CodeHash,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// Wrong attempts so far.
    pub failed_checks: u32,
    /// How it reaches the user.
    pub delivery: Delivery,
    /// Whether the SMS was handed over.
    pub sent: bool,
    /// Whether the notifier gave up on it, or the provider reported it undelivered
    /// (`delivery failed`).
    pub undeliverable: bool,
    /// Whether the provider reported it delivered (`code delivered`).
    pub delivered: bool,
}

/// The state of one registration, rebuilt from its events.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registration {
    /// Where it is in its life.
    pub status: Status,
    /// The user it belongs to (set by `added`).
    pub user: Option<UserId>,
    /// The owning organization (set by `added`).
    pub organization: Option<OrganizationId>,
    /// The phone (set by `added`).
    pub phone: Option<Phone>,
    /// The pending code, if any (cleared by `verified` and `removed`).
    pub pending: Option<PendingCode>,
    /// How many codes were ever issued.
    pub codes_issued: u32,
    /// Issue times of the most recent codes, oldest first, at most [`MAX_TRACKED_ISSUES`].
    pub recent_issues: VecDeque<DateTime<Utc>>,
    /// Until when verification is locked (the user's wrong codes in a row reached the cap).
    pub locked_until: Option<DateTime<Utc>>,
}

/// What the caller asks of a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Register a phone for a user.
    Add {
        /// The user.
        user: UserId,
        /// The user's organization.
        organization: OrganizationId,
        /// The phone.
        phone: Phone,
        /// How the registration starts.
        verification: AddVerification,
    },
    /// Check a code the user submitted.
    Verify {
        /// The submitted code.
        code: VerificationCode,
    },
    /// Issue a new code; the old one becomes void.
    ResendCode {
        /// The fresh code (drawn by the caller, so that `decide` stays deterministic).
        code: VerificationCode,
        /// How it reaches the user.
        delivery: Delivery,
    },
    /// The notifier handed code `number` to the SMS provider.
    RecordCodeSent {
        /// Which code.
        number: u32,
    },
    /// The notifier gave up on handing code `number` over.
    RecordDeliveryFailed {
        /// Which code.
        number: u32,
        /// How many times it tried.
        attempts: u32,
        /// Why (no code, no number).
        reason: String,
    },
    /// The SMS provider reported on code `number` after the hand-over.
    RecordDeliveryReport {
        /// Which code.
        number: u32,
        /// Delivered (`None`), or not, and why (the provider's error code; no number).
        failure: Option<String>,
    },
    /// Remove the registration.
    Remove,
    /// Lock verification until `until`: the user's wrong codes in a row reached the cap.
    LockVerification {
        /// When the lock ends by itself.
        until: DateTime<Utc>,
    },
    /// Lift a verification lock.
    UnlockVerification,
}

impl Command {
    /// The command's name, for spans and logs (never its data).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Add { .. } => "add",
            Command::Verify { .. } => "verify",
            Command::ResendCode { .. } => "resend_code",
            Command::RecordCodeSent { .. } => "record_code_sent",
            Command::RecordDeliveryFailed { .. } => "record_delivery_failed",
            Command::RecordDeliveryReport { .. } => "record_delivery_report",
            Command::Remove => "remove",
            Command::LockVerification { .. } => "lock_verification",
            Command::UnlockVerification => "unlock_verification",
        }
    }
}

/// The three ways to add a registration (the `verification` oneof of `SetPhone`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddVerification {
    /// Send `code` by SMS (the default).
    SendCode(VerificationCode),
    /// Return `code` to the caller.
    ReturnCode(VerificationCode),
    /// The host vouches the phone is verified; no code.
    AlreadyVerified,
}

/// Everything besides state and command that a decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The registration the command is for.
    pub registration: &'a RegistrationId,
    /// The user named in the request; a registration of another user is not found.
    pub user: &'a UserId,
    /// The current time.
    pub now: DateTime<Utc>,
    /// Code length, lifetime and limits.
    pub policy: &'a CodePolicy,
    /// The keys that hash and check codes.
    pub keys: &'a CodeKeyRing,
    /// The fixed code of a test number, when the registration's number is one of the
    /// instance's: issued instead of the drawn code, with [`Delivery::Test`] (sent nowhere).
    pub test_code: Option<&'a VerificationCode>,
}

/// The outcome of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The command succeeds; record these events (possibly none: nothing to do).
    Accepted(Vec<Event>),
    /// The command fails with `error`; still record `events` (e.g. `check failed`).
    Rejected {
        /// Events to record in spite of the failure.
        events: Vec<Event>,
        /// The failure.
        error: Error,
    },
}

impl Decision {
    fn reject(error: Error) -> Self {
        Decision::Rejected {
            events: Vec::new(),
            error,
        }
    }

    /// The events to record, whatever the outcome.
    pub fn events(&self) -> &[Event] {
        match self {
            Decision::Accepted(events) | Decision::Rejected { events, .. } => events,
        }
    }

    /// The failure, if the command failed.
    pub fn error(&self) -> Option<&Error> {
        match self {
            Decision::Accepted(_) => None,
            Decision::Rejected { error, .. } => Some(error),
        }
    }
}

fn std_to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Registration {
    /// Rebuilds a registration from its events.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut state = Self::default();
        for event in events {
            state.apply_in_place(event);
        }
        state
    }

    /// Applies one event. Total: it never fails or panics, as recorded events are facts.
    pub fn apply(mut self, event: &Event) -> Self {
        self.apply_in_place(event);
        self
    }

    /// [`Registration::apply`] without moving the state: for folds over many events.
    pub fn apply_in_place(&mut self, event: &Event) {
        match event {
            Event::Added(Added {
                user,
                organization,
                phone,
            }) => {
                self.status = Status::Unverified;
                self.user = Some(user.clone());
                self.organization = Some(organization.clone());
                self.phone = Some(phone.clone());
            }
            Event::CodeAdded(e) => {
                self.codes_issued = self.codes_issued.max(e.number);
                self.pending = Some(PendingCode {
                    number: e.number,
                    hash: e.hash.clone(),
                    expires_at: e.expires_at,
                    failed_checks: 0,
                    delivery: e.delivery,
                    sent: false,
                    undeliverable: false,
                    delivered: false,
                });
                if self.recent_issues.len() == MAX_TRACKED_ISSUES {
                    self.recent_issues.pop_front();
                }
                self.recent_issues.push_back(e.issued_at);
            }
            Event::CodeSent(CodeSent { number }) => {
                if let Some(p) = self.pending.as_mut().filter(|p| p.number == *number) {
                    p.sent = true;
                }
            }
            Event::CodeDelivered(CodeDelivered { number }) => {
                if let Some(p) = self.pending.as_mut().filter(|p| p.number == *number) {
                    p.delivered = true;
                }
            }
            Event::DeliveryFailed(DeliveryFailed { number, .. }) => {
                if let Some(p) = self.pending.as_mut().filter(|p| p.number == *number) {
                    p.undeliverable = true;
                }
            }
            Event::CheckFailed(CheckFailed { number }) => {
                if let Some(p) = self.pending.as_mut().filter(|p| p.number == *number) {
                    p.failed_checks = p.failed_checks.saturating_add(1);
                }
            }
            Event::Verified(_) => {
                self.status = Status::Verified;
                self.pending = None;
            }
            Event::Removed(_) => {
                self.status = Status::Removed;
                self.pending = None;
            }
            // Refusals live in streams of their own.
            Event::SendRefused(_) => {}
            Event::VerificationLocked(VerificationLocked { until }) => {
                self.locked_until = Some(*until);
            }
            Event::VerificationUnlocked(_) => self.locked_until = None,
        }
    }

    /// Whether the registration exists for `user` and is not removed.
    fn is_live_for(&self, user: &UserId) -> bool {
        matches!(self.status, Status::Unverified | Status::Verified)
            && self.user.as_ref() == Some(user)
    }

    /// Decides what a command does to this registration.
    pub fn decide(&self, command: &Command, ctx: &Context<'_>) -> Decision {
        match command {
            Command::Add {
                user,
                organization,
                phone,
                verification,
            } => self.decide_add(user, organization, phone, verification, ctx),
            Command::Verify { code } => self.decide_verify(code, ctx),
            Command::ResendCode { code, delivery } => self.decide_resend(code, *delivery, ctx),
            Command::RecordCodeSent { number } => self.decide_code_sent(*number, ctx),
            Command::RecordDeliveryFailed {
                number,
                attempts,
                reason,
            } => self.decide_delivery_failed(*number, *attempts, reason, ctx),
            Command::RecordDeliveryReport { number, failure } => {
                self.decide_delivery_report(*number, failure.as_deref(), ctx)
            }
            Command::Remove => {
                if !self.is_live_for(ctx.user) {
                    return Decision::reject(Error::RegistrationNotFound);
                }
                Decision::Accepted(vec![Event::Removed(Removed {})])
            }
            // Only an unverified registration has codes to guess; a lock already ending at
            // or after `until` stands.
            Command::LockVerification { until } => {
                if !self.is_live_for(ctx.user) {
                    return Decision::reject(Error::RegistrationNotFound);
                }
                let stands = self
                    .locked_until
                    .is_some_and(|t| t >= *until && t > ctx.now);
                if self.status == Status::Verified || stands {
                    return Decision::Accepted(Vec::new());
                }
                Decision::Accepted(vec![Event::VerificationLocked(VerificationLocked {
                    until: *until,
                })])
            }
            Command::UnlockVerification => {
                if !self.is_live_for(ctx.user) {
                    return Decision::reject(Error::RegistrationNotFound);
                }
                if self.locked_until.is_none() {
                    return Decision::Accepted(Vec::new());
                }
                Decision::Accepted(vec![Event::VerificationUnlocked(VerificationUnlocked {})])
            }
        }
    }

    fn issue(&self, code: &VerificationCode, delivery: Delivery, ctx: &Context<'_>) -> Event {
        let (code, delivery) = match ctx.test_code {
            Some(fixed) => (fixed, Delivery::Test),
            None => (code, delivery),
        };
        let number = self.codes_issued + 1;
        let binding = CodeBinding {
            registration: ctx.registration,
            number,
        };
        Event::CodeAdded(CodeAdded {
            number,
            hash: ctx.keys.hash(binding, code),
            issued_at: ctx.now,
            expires_at: ctx.now + std_to_chrono(ctx.policy.lifetime()),
            delivery,
        })
    }

    fn decide_add(
        &self,
        user: &UserId,
        organization: &OrganizationId,
        phone: &Phone,
        verification: &AddVerification,
        ctx: &Context<'_>,
    ) -> Decision {
        if self.status != Status::Absent {
            // Registration ids are generated; a used one means a broken id generator.
            return Decision::reject(Error::Internal("registration id already in use".into()));
        }
        // Room for the second event up front: growing the Vec would move the first.
        let mut events = Vec::with_capacity(2);
        events.push(Event::Added(Added {
            user: user.clone(),
            organization: organization.clone(),
            phone: phone.clone(),
        }));
        match verification {
            AddVerification::SendCode(code) => events.push(self.issue(code, Delivery::Send, ctx)),
            AddVerification::ReturnCode(code) => {
                events.push(self.issue(code, Delivery::Return, ctx))
            }
            AddVerification::AlreadyVerified => {
                events.push(Event::Verified(Verified { code: None }))
            }
        }
        Decision::Accepted(events)
    }

    fn decide_verify(&self, code: &VerificationCode, ctx: &Context<'_>) -> Decision {
        if !self.is_live_for(ctx.user) {
            return Decision::reject(Error::RegistrationNotFound);
        }
        if self.status == Status::Verified {
            return Decision::reject(Error::FailedPrecondition(Precondition::AlreadyVerified));
        }
        if self.locked_until.is_some_and(|until| ctx.now < until) {
            return Decision::reject(Error::FailedPrecondition(Precondition::VerificationLocked));
        }
        let Some(pending) = &self.pending else {
            return Decision::reject(Error::FailedPrecondition(Precondition::NoActiveCode));
        };
        if pending.failed_checks >= ctx.policy.max_failed_checks() {
            return Decision::reject(Error::FailedPrecondition(Precondition::TooManyAttempts));
        }
        if ctx.now >= pending.expires_at {
            return Decision::reject(Error::FailedPrecondition(Precondition::CodeExpired));
        }
        let binding = CodeBinding {
            registration: ctx.registration,
            number: pending.number,
        };
        match ctx.keys.matches(binding, code, &pending.hash) {
            Ok(true) => Decision::Accepted(vec![Event::Verified(Verified {
                code: Some(pending.number),
            })]),
            Ok(false) => Decision::Rejected {
                events: vec![Event::CheckFailed(CheckFailed {
                    number: pending.number,
                })],
                error: Error::WrongCode,
            },
            Err(e) => Decision::reject(Error::Internal(e.to_string())),
        }
    }

    fn decide_resend(
        &self,
        code: &VerificationCode,
        delivery: Delivery,
        ctx: &Context<'_>,
    ) -> Decision {
        if !self.is_live_for(ctx.user) {
            return Decision::reject(Error::RegistrationNotFound);
        }
        if self.status == Status::Verified {
            return Decision::reject(Error::FailedPrecondition(Precondition::AlreadyVerified));
        }
        if let Some(retry_after) = self.resend_wait(ctx) {
            return Decision::reject(Error::RateLimited { retry_after });
        }
        Decision::Accepted(vec![self.issue(code, delivery, ctx)])
    }

    /// How long until the policy allows another code, or `None` if it allows one now.
    fn resend_wait(&self, ctx: &Context<'_>) -> Option<Duration> {
        let interval = std_to_chrono(ctx.policy.resend_interval());
        let hour = chrono::Duration::hours(1);
        let mut earliest = ctx.now;
        if let Some(last) = self.recent_issues.back() {
            earliest = earliest.max(*last + interval);
        }
        let max = ctx.policy.max_codes_per_hour() as usize;
        let in_window: Vec<_> = self
            .recent_issues
            .iter()
            .filter(|t| **t > ctx.now - hour)
            .collect();
        if in_window.len() >= max {
            // The window admits one more once the oldest code that must drop out is an hour old.
            let oldest_to_expire = in_window[in_window.len() - max];
            earliest = earliest.max(*oldest_to_expire + hour);
        }
        (earliest > ctx.now).then(|| (earliest - ctx.now).to_std().unwrap_or(Duration::ZERO))
    }

    fn decide_delivery_failed(
        &self,
        number: u32,
        attempts: u32,
        reason: &str,
        ctx: &Context<'_>,
    ) -> Decision {
        if !self.is_live_for(ctx.user) {
            return Decision::reject(Error::RegistrationNotFound);
        }
        if self.status == Status::Verified {
            return Decision::reject(Error::FailedPrecondition(Precondition::AlreadyVerified));
        }
        match &self.pending {
            // Recorded already (a report repeated after a crash): nothing more.
            Some(p) if p.number == number && p.undeliverable => Decision::Accepted(Vec::new()),
            Some(p) if p.number == number && !p.sent => {
                Decision::Accepted(vec![Event::DeliveryFailed(DeliveryFailed {
                    number,
                    attempts,
                    reason: reason.to_owned(),
                })])
            }
            _ => Decision::reject(Error::FailedPrecondition(Precondition::CodeSuperseded)),
        }
    }

    /// A provider's report after the hand-over: `code delivered`, or `delivery failed` (the
    /// code will not arrive; the user may ask for a new one). Reports come late and may repeat:
    /// a repeat, or a report on a verified registration, changes nothing; one on a code that is
    /// no longer pending is CODE_SUPERSEDED.
    fn decide_delivery_report(
        &self,
        number: u32,
        failure: Option<&str>,
        ctx: &Context<'_>,
    ) -> Decision {
        if !self.is_live_for(ctx.user) {
            return Decision::reject(Error::RegistrationNotFound);
        }
        if self.status == Status::Verified {
            return Decision::Accepted(Vec::new());
        }
        let Some(p) = self
            .pending
            .as_ref()
            .filter(|p| p.number == number && p.sent)
        else {
            return Decision::reject(Error::FailedPrecondition(Precondition::CodeSuperseded));
        };
        match failure {
            None if p.delivered => Decision::Accepted(Vec::new()),
            None => Decision::Accepted(vec![Event::CodeDelivered(CodeDelivered { number })]),
            Some(_) if p.undeliverable => Decision::Accepted(Vec::new()),
            Some(reason) => Decision::Accepted(vec![Event::DeliveryFailed(DeliveryFailed {
                number,
                attempts: 1,
                reason: reason.to_owned(),
            })]),
        }
    }

    fn decide_code_sent(&self, number: u32, ctx: &Context<'_>) -> Decision {
        if !self.is_live_for(ctx.user) {
            return Decision::reject(Error::RegistrationNotFound);
        }
        if self.status == Status::Verified {
            return Decision::reject(Error::FailedPrecondition(Precondition::AlreadyVerified));
        }
        match &self.pending {
            // At-least-once delivery may report twice; the second report changes nothing.
            Some(p) if p.number == number && p.sent => Decision::Accepted(Vec::new()),
            Some(p) if p.number == number => {
                Decision::Accepted(vec![Event::CodeSent(CodeSent { number })])
            }
            _ => Decision::reject(Error::FailedPrecondition(Precondition::CodeSuperseded)),
        }
    }
}
