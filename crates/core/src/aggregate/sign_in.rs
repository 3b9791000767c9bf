//! How a verified registration decides on sign-in: a challenge issued under the host's binding,
//! and a check of its code under the same binding.
//!
//! A challenge's code is drawn, hashed and delivered as a registration code is, from the same
//! count of numbers. A check succeeds once; a wrong code, or a code under a binding that has
//! no challenge, is recorded (it counts toward the user's lock); the policy's wrong codes
//! burn the challenge, and a check after its lifetime records it expired.

use super::{ChallengeState, Context, Decision, Registration, Status};
use crate::binding::BindingDigest;
use crate::code::VerificationCode;
use crate::error::{Error, Precondition};
use crate::event::{
    ChallengeBurnt, ChallengeCheckFailed, ChallengeExpired, ChallengeIssued, ChallengeSucceeded,
    Delivery, Event,
};
use crate::keys::CodeBinding;

impl Registration {
    /// NOT_FOUND unless the registration is the user's and live; FAILED_PRECONDITION unless it
    /// is verified and its codes are not locked.
    fn usable_for_sign_in(&self, ctx: &Context<'_>) -> Result<(), Error> {
        if !self.is_live_for(ctx.user) {
            return Err(Error::RegistrationNotFound);
        }
        if self.status != Status::Verified {
            return Err(Error::FailedPrecondition(Precondition::NotVerified));
        }
        if self.is_locked(ctx.now) {
            return Err(Error::FailedPrecondition(Precondition::VerificationLocked));
        }
        Ok(())
    }

    pub(super) fn decide_challenge(
        &self,
        code: &VerificationCode,
        delivery: Delivery,
        binding: &BindingDigest,
        ctx: &Context<'_>,
    ) -> Decision {
        if let Err(error) = self.usable_for_sign_in(ctx) {
            return Decision::reject(error);
        }
        let fresh = self.fresh(code, delivery, ctx);
        Decision::Accepted(vec![Event::ChallengeIssued(ChallengeIssued {
            number: fresh.number,
            binding: *binding,
            hash: fresh.hash,
            issued_at: fresh.issued_at,
            expires_at: fresh.expires_at,
            delivery: fresh.delivery,
        })])
    }

    pub(super) fn decide_check(
        &self,
        code: &VerificationCode,
        binding: &BindingDigest,
        ctx: &Context<'_>,
    ) -> Decision {
        if let Err(error) = self.usable_for_sign_in(ctx) {
            return Decision::reject(error);
        }
        let Some(challenge) = self.challenge_for(binding) else {
            // A code under a binding this registration issued nothing for (another session's
            // code, or a guess): wrong, and counted like any wrong code.
            return Decision::Rejected {
                events: vec![Event::ChallengeCheckFailed(ChallengeCheckFailed {
                    number: None,
                    binding: *binding,
                })],
                error: Error::WrongCode,
            };
        };
        let closed = match challenge.state {
            ChallengeState::Open => None,
            ChallengeState::Succeeded => Some(Precondition::ChallengeUsed),
            ChallengeState::Burnt => Some(Precondition::TooManyAttempts),
            ChallengeState::Expired => Some(Precondition::CodeExpired),
        };
        if let Some(reason) = closed {
            return Decision::reject(Error::FailedPrecondition(reason));
        }
        let number = challenge.number;
        // A policy lowered since the challenge was issued: its wrong codes already burn it.
        if challenge.failed_checks >= ctx.policy.max_failed_checks() {
            return Decision::reject(Error::FailedPrecondition(Precondition::TooManyAttempts));
        }
        if ctx.now >= challenge.expires_at {
            return Decision::Rejected {
                events: vec![Event::ChallengeExpired(ChallengeExpired { number })],
                error: Error::FailedPrecondition(Precondition::CodeExpired),
            };
        }
        let code_binding = CodeBinding {
            registration: ctx.registration,
            number,
        };
        match ctx.keys.matches(code_binding, code, &challenge.hash) {
            Ok(true) => Decision::Accepted(vec![Event::ChallengeSucceeded(ChallengeSucceeded {
                number,
                binding: *binding,
                checked_at: ctx.now,
            })]),
            Ok(false) => {
                let mut events = vec![Event::ChallengeCheckFailed(ChallengeCheckFailed {
                    number: Some(number),
                    binding: *binding,
                })];
                if challenge.failed_checks + 1 >= ctx.policy.max_failed_checks() {
                    events.push(Event::ChallengeBurnt(ChallengeBurnt { number }));
                }
                Decision::Rejected {
                    events,
                    error: Error::WrongCode,
                }
            }
            Err(e) => Decision::reject(Error::Internal(e.to_string())),
        }
    }
}
