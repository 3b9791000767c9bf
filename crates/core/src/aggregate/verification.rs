//! How a registration decides on its own codes: add, verify, resend, and what the notifier and
//! the provider report of their delivery.

use std::time::Duration;

use super::{std_to_chrono, AddVerification, Context, Decision, Registration, Status};
use crate::code::VerificationCode;
use crate::error::{Error, Precondition};
use crate::event::{
    Added, ChallengeSent, CheckFailed, CodeAdded, CodeSent, Delivery, Event, Verified,
};
use crate::ids::{OrganizationId, UserId};
use crate::keys::CodeBinding;
use crate::phone::Phone;

impl Registration {
    /// A new registration code: `code added`.
    fn issue(&self, code: &VerificationCode, delivery: Delivery, ctx: &Context<'_>) -> Event {
        let fresh = self.fresh(code, delivery, ctx);
        Event::CodeAdded(CodeAdded {
            number: fresh.number,
            hash: fresh.hash,
            issued_at: fresh.issued_at,
            expires_at: fresh.expires_at,
            delivery: fresh.delivery,
        })
    }

    pub(super) fn decide_add(
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

    pub(super) fn decide_verify(&self, code: &VerificationCode, ctx: &Context<'_>) -> Decision {
        if !self.is_live_for(ctx.user) {
            return Decision::reject(Error::RegistrationNotFound);
        }
        if self.status == Status::Verified {
            return Decision::reject(Error::FailedPrecondition(Precondition::AlreadyVerified));
        }
        if self.is_locked(ctx.now) {
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

    pub(super) fn decide_resend(
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

    pub(super) fn decide_delivery_failed(
        &self,
        number: u32,
        attempts: u32,
        reason: &str,
        ctx: &Context<'_>,
    ) -> Decision {
        if !self.is_live_for(ctx.user) {
            return Decision::reject(Error::RegistrationNotFound);
        }
        if let Some(challenge) = self.challenge(number) {
            return challenge.handover.gave_up(number, attempts, reason);
        }
        if self.status == Status::Verified {
            return Decision::reject(Error::FailedPrecondition(Precondition::AlreadyVerified));
        }
        match &self.pending {
            Some(p) if p.number == number => p.handover.gave_up(number, attempts, reason),
            _ => Decision::reject(Error::FailedPrecondition(Precondition::CodeSuperseded)),
        }
    }

    /// A provider's report after the hand-over: `code delivered`, or `delivery failed` (the
    /// code will not arrive; the user may ask for a new one). Reports come late and may repeat:
    /// a repeat, or a report on a verified registration's code, changes nothing; one on a code
    /// that is no longer pending is CODE_SUPERSEDED. A sign-in challenge's code is reported
    /// on as long as the registration keeps the challenge, whatever became of it.
    pub(super) fn decide_delivery_report(
        &self,
        number: u32,
        failure: Option<&str>,
        ctx: &Context<'_>,
    ) -> Decision {
        if !self.is_live_for(ctx.user) {
            return Decision::reject(Error::RegistrationNotFound);
        }
        if let Some(challenge) = self.challenge(number) {
            return challenge.handover.reported(number, failure);
        }
        if self.status == Status::Verified {
            return Decision::Accepted(Vec::new());
        }
        match &self.pending {
            Some(p) if p.number == number => p.handover.reported(number, failure),
            _ => Decision::reject(Error::FailedPrecondition(Precondition::CodeSuperseded)),
        }
    }

    /// The notifier handed code `number` over: `code sent`, or `challenge sent` for a sign-in
    /// challenge's code. At-least-once delivery may report twice; the second report changes
    /// nothing.
    pub(super) fn decide_code_sent(&self, number: u32, ctx: &Context<'_>) -> Decision {
        if !self.is_live_for(ctx.user) {
            return Decision::reject(Error::RegistrationNotFound);
        }
        if let Some(challenge) = self.challenge(number) {
            if challenge.handover.sent {
                return Decision::Accepted(Vec::new());
            }
            return Decision::Accepted(vec![Event::ChallengeSent(ChallengeSent { number })]);
        }
        if self.status == Status::Verified {
            return Decision::reject(Error::FailedPrecondition(Precondition::AlreadyVerified));
        }
        match &self.pending {
            Some(p) if p.number == number && p.handover.sent => Decision::Accepted(Vec::new()),
            Some(p) if p.number == number => {
                Decision::Accepted(vec![Event::CodeSent(CodeSent { number })])
            }
            _ => Decision::reject(Error::FailedPrecondition(Precondition::CodeSuperseded)),
        }
    }
}
