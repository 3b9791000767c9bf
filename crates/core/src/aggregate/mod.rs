//! The registration aggregate: a pure `apply` and a pure `decide`.
//!
//! Neither does I/O nor reads a clock or a random source: the current time, the policy, the
//! keys and any fresh code come in through [`Context`] and [`Command`], so the same inputs always
//! give the same output. That is what lets property tests drive it.
//!
//! This file holds the state, how events change it, and which decision a command meets; the
//! decisions are in `verification.rs` (the registration's own codes) and `sign_in.rs` (the
//! sign-in challenges of a verified registration).

mod sign_in;
mod verification;

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::binding::BindingDigest;
use crate::code::{CodePolicy, VerificationCode, MAX_TRACKED_ISSUES};
use crate::error::{Error, Precondition};
use crate::event::{
    Added, ChallengeBurnt, ChallengeCheckFailed, ChallengeExpired, ChallengeIssued, ChallengeSent,
    ChallengeSucceeded, CheckFailed, CodeDelivered, CodeSent, Delivery, DeliveryFailed, Event,
    Removed, VerificationLocked, VerificationUnlocked,
};
use crate::ids::{OrganizationId, RegistrationId, UserId};
use crate::keys::{CodeBinding, CodeHash, CodeKeyRing};
use crate::phone::Phone;

/// How many sign-in challenges a registration keeps, one per binding: the most recent ones.
/// An older challenge falls out (a check under its binding then meets no challenge).
pub const MAX_TRACKED_CHALLENGES: usize = 8;

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
    /// What happened to the SMS.
    pub handover: Handover,
}

/// Where a sign-in challenge is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeState {
    /// Waiting for its code.
    Open,
    /// Checked with the right code: consumed.
    Succeeded,
    /// Took too many wrong codes: void.
    Burnt,
    /// Checked after its lifetime: void.
    Expired,
}

/// A sign-in challenge of a registration, open or closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Its code's number within the registration.
    pub number: u32,
    /// The digest of the binding it was issued under.
    pub binding: BindingDigest,
    /// Its code's keyed hash.
    pub hash: CodeHash,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// Wrong codes tried against it so far.
    pub failed_checks: u32,
    /// How its code reaches the user.
    pub delivery: Delivery,
    /// What happened to the SMS.
    pub handover: Handover,
    /// Open, or how it closed.
    pub state: ChallengeState,
}

/// What is known of a code's SMS: handed over, given up on, reported delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Handover {
    /// Handed to the SMS provider (`code sent`, `challenge sent`).
    pub sent: bool,
    /// The notifier gave up on it, or the provider reported it undelivered.
    pub undeliverable: bool,
    /// The provider reported it delivered.
    pub delivered: bool,
}

/// The state of one registration, rebuilt from its events.
///
/// Non-exhaustive: built by [`Registration::from_events`] or `Default`, so that a new field is
/// not a breaking change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
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
    /// Until when verification is locked (the user's wrong codes in a row reached the cap):
    /// of the registration's codes and of its sign-in challenges.
    pub locked_until: Option<DateTime<Utc>>,
    /// The sign-in challenges, one per binding, oldest first, at most
    /// [`MAX_TRACKED_CHALLENGES`].
    pub challenges: Vec<Challenge>,
    /// When a sign-in challenge last succeeded.
    pub last_sign_in: Option<DateTime<Utc>>,
}

/// What the caller asks of a registration.
///
/// Non-exhaustive: a host that matches commands keeps a `_` arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
    /// Issue a sign-in challenge under `binding`: the registration must be verified. A
    /// challenge open under the same binding is replaced.
    IssueChallenge {
        /// The fresh code (drawn by the caller, so that `decide` stays deterministic).
        code: VerificationCode,
        /// How it reaches the user.
        delivery: Delivery,
        /// The digest of the host's binding.
        binding: BindingDigest,
    },
    /// Check a code the user submitted at sign-in, under `binding`.
    CheckChallenge {
        /// The submitted code.
        code: VerificationCode,
        /// The digest of the host's binding.
        binding: BindingDigest,
    },
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
            Command::IssueChallenge { .. } => "issue_challenge",
            Command::CheckChallenge { .. } => "check_challenge",
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
                    handover: Handover::default(),
                });
                if self.recent_issues.len() == MAX_TRACKED_ISSUES {
                    self.recent_issues.pop_front();
                }
                self.recent_issues.push_back(e.issued_at);
            }
            Event::CodeSent(CodeSent { number })
            | Event::ChallengeSent(ChallengeSent { number }) => {
                if let Some(h) = self.handover_mut(*number) {
                    h.sent = true;
                }
            }
            Event::CodeDelivered(CodeDelivered { number }) => {
                if let Some(h) = self.handover_mut(*number) {
                    h.delivered = true;
                }
            }
            Event::DeliveryFailed(DeliveryFailed { number, .. }) => {
                if let Some(h) = self.handover_mut(*number) {
                    h.undeliverable = true;
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
                self.challenges.clear();
            }
            // Refusals live in streams of their own.
            Event::SendRefused(_) => {}
            Event::VerificationLocked(VerificationLocked { until }) => {
                self.locked_until = Some(*until);
            }
            Event::VerificationUnlocked(_) => self.locked_until = None,
            Event::ChallengeIssued(e) => self.apply_challenge_issued(e),
            Event::ChallengeSucceeded(ChallengeSucceeded {
                number, checked_at, ..
            }) => {
                if let Some(c) = self.challenge_mut(*number) {
                    c.state = ChallengeState::Succeeded;
                }
                self.last_sign_in = Some(*checked_at);
            }
            Event::ChallengeCheckFailed(ChallengeCheckFailed { number, .. }) => {
                if let Some(c) = number.and_then(|n| self.challenge_mut(n)) {
                    c.failed_checks = c.failed_checks.saturating_add(1);
                }
            }
            Event::ChallengeBurnt(ChallengeBurnt { number }) => {
                if let Some(c) = self.challenge_mut(*number) {
                    c.state = ChallengeState::Burnt;
                }
            }
            Event::ChallengeExpired(ChallengeExpired { number }) => {
                if let Some(c) = self.challenge_mut(*number) {
                    c.state = ChallengeState::Expired;
                }
            }
        }
    }

    /// A new challenge replaces the one of its binding; past the tracked number, the oldest
    /// falls out.
    fn apply_challenge_issued(&mut self, e: &ChallengeIssued) {
        self.codes_issued = self.codes_issued.max(e.number);
        self.challenges.retain(|c| c.binding != e.binding);
        if self.challenges.len() == MAX_TRACKED_CHALLENGES {
            self.challenges.remove(0);
        }
        self.challenges.push(Challenge {
            number: e.number,
            binding: e.binding,
            hash: e.hash.clone(),
            expires_at: e.expires_at,
            failed_checks: 0,
            delivery: e.delivery,
            handover: Handover::default(),
            state: ChallengeState::Open,
        });
    }

    /// The challenge of code `number`, if the registration still keeps it.
    pub fn challenge(&self, number: u32) -> Option<&Challenge> {
        self.challenges.iter().find(|c| c.number == number)
    }

    /// The challenge issued under `binding`, if the registration still keeps it.
    pub fn challenge_for(&self, binding: &BindingDigest) -> Option<&Challenge> {
        self.challenges.iter().find(|c| c.binding == *binding)
    }

    fn challenge_mut(&mut self, number: u32) -> Option<&mut Challenge> {
        self.challenges.iter_mut().find(|c| c.number == number)
    }

    /// What is known of the SMS of code `number`: the pending registration code's or a
    /// challenge's (they share one count).
    fn handover_mut(&mut self, number: u32) -> Option<&mut Handover> {
        if self.pending.as_ref().is_some_and(|p| p.number == number) {
            return self.pending.as_mut().map(|p| &mut p.handover);
        }
        self.challenge_mut(number).map(|c| &mut c.handover)
    }

    /// Whether the SMS of code `number` is still worth sending: the pending code of an
    /// unverified registration, or an open challenge of a verified one, neither handed over
    /// nor given up on. (Its expiry is the sender's to check, against its own clock.)
    pub fn awaits_sms(&self, number: u32) -> bool {
        let unsent = |h: &Handover| !h.sent && !h.undeliverable;
        match self.status {
            Status::Unverified => self
                .pending
                .as_ref()
                .is_some_and(|p| p.number == number && unsent(&p.handover)),
            Status::Verified => self
                .challenge(number)
                .is_some_and(|c| c.state == ChallengeState::Open && unsent(&c.handover)),
            Status::Absent | Status::Removed => false,
        }
    }

    /// Whether verification of codes (registration and sign-in) is locked at `now`.
    fn is_locked(&self, now: DateTime<Utc>) -> bool {
        self.locked_until.is_some_and(|until| now < until)
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
            // Both an unverified registration (its code) and a verified one (its sign-in
            // challenges) have codes to guess; a lock already ending at or after `until`
            // stands.
            Command::LockVerification { until } => {
                if !self.is_live_for(ctx.user) {
                    return Decision::reject(Error::RegistrationNotFound);
                }
                let stands = self
                    .locked_until
                    .is_some_and(|t| t >= *until && t > ctx.now);
                if stands {
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
            Command::IssueChallenge {
                code,
                delivery,
                binding,
            } => self.decide_challenge(code, *delivery, binding, ctx),
            Command::CheckChallenge { code, binding } => self.decide_check(code, binding, ctx),
        }
    }

    /// A fresh code's number, hash and times, as `code added` and `challenge issued` record
    /// them. A test number's fixed code replaces the drawn one, sent nowhere.
    fn fresh(&self, code: &VerificationCode, delivery: Delivery, ctx: &Context<'_>) -> Fresh {
        let (code, delivery) = match ctx.test_code {
            Some(fixed) => (fixed, Delivery::Test),
            None => (code, delivery),
        };
        let number = self.codes_issued + 1;
        let binding = CodeBinding {
            registration: ctx.registration,
            number,
        };
        Fresh {
            number,
            hash: ctx.keys.hash(binding, code),
            issued_at: ctx.now,
            expires_at: ctx.now + std_to_chrono(ctx.policy.lifetime()),
            delivery,
        }
    }
}

/// A fresh code, as events record it.
struct Fresh {
    number: u32,
    hash: CodeHash,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    delivery: Delivery,
}

impl Handover {
    /// The notifier gave up on a code (`number`): recorded once, and only before a hand-over.
    fn gave_up(self, number: u32, attempts: u32, reason: &str) -> Decision {
        if self.undeliverable {
            // Recorded already (a report repeated after a crash): nothing more.
            return Decision::Accepted(Vec::new());
        }
        if self.sent {
            return Decision::reject(Error::FailedPrecondition(Precondition::CodeSuperseded));
        }
        Decision::Accepted(vec![Event::DeliveryFailed(DeliveryFailed {
            number,
            attempts,
            reason: reason.to_owned(),
        })])
    }

    /// A provider's report on a handed-over code: a repeat changes nothing.
    fn reported(self, number: u32, failure: Option<&str>) -> Decision {
        if !self.sent {
            return Decision::reject(Error::FailedPrecondition(Precondition::CodeSuperseded));
        }
        match failure {
            None if self.delivered => Decision::Accepted(Vec::new()),
            None => Decision::Accepted(vec![Event::CodeDelivered(CodeDelivered { number })]),
            Some(_) if self.undeliverable => Decision::Accepted(Vec::new()),
            Some(reason) => Decision::Accepted(vec![Event::DeliveryFailed(DeliveryFailed {
                number,
                attempts: 1,
                reason: reason.to_owned(),
            })]),
        }
    }
}
