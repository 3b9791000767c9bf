//! Sign-in with a verified registration: a challenge (a code sent to, or returned for, the
//! phone, bound to the host's binding), and a check of the code the user typed under the same
//! binding. Both run through the command loop like every registration call: the abuse rules,
//! the idempotency keys, the outbox and the user's lock apply unchanged.

use super::attempt::Attempt;
use super::idempotency::Fingerprint;
use super::{parse_org_ref, CommandService, Need};
use crate::aggregate::{Command, Registration, Status};
use crate::api::{ChallengeRequest, ChallengeResponse, CheckRequest, CheckResponse};
use crate::binding::{Binding, BindingDigest};
use crate::caller::Caller;
use crate::code::VerificationCode;
use crate::error::{Error, Precondition};
use crate::event::{Delivery, Event};
use crate::ids::{RegistrationId, UserId};
use crate::ports::UserRecord;

impl CommandService {
    /// Issues a sign-in challenge for one of the user's verified registrations (the one named,
    /// or the most recently verified), bound to the request's `binding`: a fresh code, sent by
    /// SMS through the outbox, or returned (`return_code`, which needs `user.write` as on a
    /// registration). A new challenge under the same binding replaces the one before.
    ///
    /// Checks in this order: ids and binding (INVALID_ARGUMENT), the user (NOT_FOUND), the
    /// caller's right (PERMISSION_DENIED), the registration (NOT_FOUND; none verified:
    /// FAILED_PRECONDITION `NO_VERIFIED_REGISTRATION`), its state (FAILED_PRECONDITION:
    /// `NOT_VERIFIED`, `VERIFICATION_LOCKED`), the budgets (RESOURCE_EXHAUSTED, audited; or
    /// silent, as for a registration code).
    pub async fn challenge(
        &self,
        caller: &Caller,
        req: ChallengeRequest,
    ) -> Result<ChallengeResponse, Error> {
        let user_id = UserId::parse("id", req.user_id)?;
        let named = parse_registration(req.registration_id)?;
        let binding = Binding::parse("binding", req.binding)?;
        let organization = parse_org_ref(req.organization)?;
        let need = if req.return_code {
            Need::CodeInResponse
        } else {
            Need::Manage
        };
        let mut fingerprint = Fingerprint::of(caller, "challenge");
        fingerprint
            .field(user_id.as_str())
            .organization(organization.as_ref())
            .field(named.as_ref().map_or("-", RegistrationId::as_str))
            .field(binding.value())
            .field(if req.return_code { "return" } else { "send" });
        let user = self.authorize(caller, &user_id, organization, need).await?;
        let registration = match named {
            Some(id) => id,
            None => self.sign_in_registration(caller, &user, None).await?,
        };
        // A test number's code is its fixed one (the aggregate issues it as such).
        let drawn = match self.test_code_of(&caller.instance, &registration).await? {
            Some(fixed) => fixed,
            None => self.fresh_code(),
        };
        let returned = req.return_code.then(|| drawn.clone());
        let run = self
            .run_for(caller, fingerprint, registration, returned)
            .await?;
        // A replay answers the code it answered first.
        let code: VerificationCode = run.code.clone().unwrap_or(drawn);
        let command = Command::IssueChallenge {
            code: code.clone(),
            delivery: if req.return_code {
                Delivery::Return
            } else {
                Delivery::Send
            },
            binding: binding.digest(),
        };
        let attempt = Attempt::under(run.command, caller, &user, &run.registration, &command)
            .with_code(Some(&code));
        let details = self.execute(attempt).await?;
        Ok(ChallengeResponse {
            details,
            registration_id: run.registration,
            code: run.code,
        })
    }

    /// Checks the code the user typed at sign-in, under the challenge's `binding`: the right
    /// code, in time, succeeds once (`challenge succeeded`, the factor's time in
    /// `details.changed`) and ends the user's run of wrong codes. A wrong code, or one under a
    /// binding without a challenge, is recorded and counts toward the user's lock, shared with
    /// registration codes.
    ///
    /// Checks in this order: code, ids and binding (INVALID_ARGUMENT), the user (NOT_FOUND),
    /// the caller's right (PERMISSION_DENIED), the registration (NOT_FOUND; none verified:
    /// FAILED_PRECONDITION `NO_VERIFIED_REGISTRATION`), its state and the challenge's
    /// (FAILED_PRECONDITION: `NOT_VERIFIED`, `VERIFICATION_LOCKED`, `CHALLENGE_USED`,
    /// `TOO_MANY_ATTEMPTS`, `CODE_EXPIRED`), the code (INVALID_ARGUMENT, recorded).
    pub async fn check(&self, caller: &Caller, req: CheckRequest) -> Result<CheckResponse, Error> {
        let code = VerificationCode::from_input(req.code)?;
        let user_id = UserId::parse("id", req.user_id)?;
        let named = parse_registration(req.registration_id)?;
        let binding = Binding::parse("binding", req.binding)?;
        let organization = parse_org_ref(req.organization)?;
        let mut fingerprint = Fingerprint::of(caller, "check");
        fingerprint
            .field(user_id.as_str())
            .organization(organization.as_ref())
            .field(named.as_ref().map_or("-", RegistrationId::as_str))
            .field(binding.value())
            .field(code.expose());
        let user = self
            .authorize(caller, &user_id, organization, Need::Manage)
            .await?;
        let digest = binding.digest();
        let registration = match named {
            Some(id) => id,
            None => {
                self.sign_in_registration(caller, &user, Some(&digest))
                    .await?
            }
        };
        let run = self
            .run_for(caller, fingerprint, registration, None)
            .await?;
        let command = Command::CheckChallenge {
            code,
            binding: digest,
        };
        let details = self
            .execute(Attempt::under(
                run.command,
                caller,
                &user,
                &run.registration,
                &command,
            ))
            .await?;
        Ok(CheckResponse {
            details,
            registration_id: run.registration,
        })
    }

    /// The user's verified registration a sign-in call means when it names none: the one
    /// that issued the latest challenge under `binding`, if any does; else the most recently
    /// verified. The user's registrations are their slots in the budget store (a handful: the
    /// registration cap), each read from its stream.
    async fn sign_in_registration(
        &self,
        caller: &Caller,
        user: &UserRecord,
        binding: Option<&BindingDigest>,
    ) -> Result<RegistrationId, Error> {
        let mut challenged: Option<(u64, RegistrationId)> = None;
        let mut verified: Option<(u64, RegistrationId)> = None;
        for (slot, history) in self.user_registrations(caller, user).await? {
            let state = Registration::from_events(history.iter().map(|r| &r.event));
            if state.status != Status::Verified || state.user.as_ref() != Some(&user.id) {
                continue;
            }
            let Ok(id) = RegistrationId::parse("otp_sms_id", slot.member) else {
                continue;
            };
            // Feed positions order events across streams.
            let last = |pick: &dyn Fn(&Event) -> bool| {
                history
                    .iter()
                    .filter(|r| pick(&r.event))
                    .map(|r| r.position)
                    .max()
            };
            if let Some(binding) = binding {
                let issued =
                    last(&|e| matches!(e, Event::ChallengeIssued(c) if c.binding == *binding));
                if let Some(at) =
                    issued.filter(|at| challenged.as_ref().map_or(true, |(p, _)| at > p))
                {
                    challenged = Some((at, id.clone()));
                }
            }
            let at = last(&|e| matches!(e, Event::Verified(_))).unwrap_or(0);
            if verified.as_ref().map_or(true, |(p, _)| at >= *p) {
                verified = Some((at, id));
            }
        }
        challenged
            .or(verified)
            .map(|(_, id)| id)
            .ok_or(Error::FailedPrecondition(
                Precondition::NoVerifiedRegistration,
            ))
    }
}

/// The optional `otp_sms_id` of a sign-in call.
fn parse_registration(id: Option<String>) -> Result<Option<RegistrationId>, Error> {
    id.map(|id| RegistrationId::parse("otp_sms_id", id))
        .transpose()
}
