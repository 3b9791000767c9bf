//! Where the command loop meets the abuse rules: once per attempt, between the decision and
//! the append. The aggregate stays pure; this module does the budget store's I/O.
//!
//! - [`CommandService::admit`]: a new registration's number must be allowed and its user
//!   under the registration cap; a code to send takes every send budget. All or none: a
//!   refusal takes nothing, records an audit event, and fails the command with nothing else
//!   written.
//! - [`Permit::refund`]: the append was refused (a version conflict), so nothing was sent;
//!   the budgets are given back before the loop decides again.
//! - [`Permit::settle`]: after a committed append, a verified registration holds its slot
//!   for good and ends the user's run of wrong codes, a removed one frees its slot, and a wrong
//!   code counts toward the user's cap; at the cap, every live registration of the user is
//!   locked (a `verification locked` event in each, so a verify reads nothing but its stream).

use crate::abuse::{AbusePolicy, Scope, SendPlan, TakeOutcome};
use crate::aggregate::Command;
use crate::caller::Caller;
use crate::error::{Error, Precondition};
use crate::event::{Delivery, Event, SendRefused, REFUSAL_AGGREGATE_TYPE};
use crate::ids::PrincipalId;
use crate::ids::RegistrationId;
use crate::phone::Phone;
use crate::ports::UserRecord;
use crate::store::{Append, ExpectedVersion, NewEvent, StreamId};

use super::CommandService;

/// Whether the attempt goes on to its append.
#[derive(Debug)]
pub(super) enum Admission {
    /// Append, then settle or refund the permit.
    Go(Permit),
    /// A silent scope refused: answer as if the code were sent, and write nothing more.
    Silent,
}

/// What an admitted attempt took, and what its events settle once committed.
#[derive(Debug, Default)]
pub(super) struct Permit {
    taken: Option<SendPlan>,
    settles: Option<Settle>,
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Verified,
    Removed,
    WrongCode,
}

impl CommandService {
    /// Checks and takes what `events` need before they are appended; see the module docs.
    pub(super) async fn admit(
        &self,
        caller: &Caller,
        user: &UserRecord,
        registration: &RegistrationId,
        phone: Option<&Phone>,
        events: &[Event],
    ) -> Result<Admission, Error> {
        let policy = self.abuse_policy(&caller.instance);
        let mut permit = Permit {
            taken: None,
            settles: events.iter().find_map(|e| match e {
                Event::Verified(_) => Some(Settle::Verified),
                Event::Removed(_) => Some(Settle::Removed),
                Event::CheckFailed(_) => Some(Settle::WrongCode),
                _ => None,
            }),
        };
        let mut plan = SendPlan::default();
        if events
            .iter()
            .any(|e| matches!(e, Event::Added(_) | Event::CodeAdded(_)))
        {
            // No new code, and no new registration, while the user's verification is locked.
            plan = AbusePolicy::lock_gate(&caller.instance, &user.id, registration.as_str());
        }
        for event in events {
            match event {
                Event::Added(added) => {
                    // The operator listed its test numbers: no rule of type or region.
                    let listed = policy.test_code(added.phone.as_e164()).is_some();
                    let checked = if listed {
                        Ok(())
                    } else {
                        policy.check_number(&added.phone)
                    };
                    if let Err(refused) = checked {
                        let subject = redacted(&added.phone);
                        self.audit(caller, user, None, refused.scope, subject, false)
                            .await;
                        return Err(Error::invalid("phone.number", refused.reason));
                    }
                    let slot = policy.registration_slot(&caller.instance, &user.id, registration);
                    plan.request.takes.extend(slot.request.takes);
                    plan.subjects.extend(slot.subjects);
                }
                Event::CodeAdded(code) if code.delivery == Delivery::Send => {
                    let Some(phone) = phone else {
                        return Err(Error::Internal("a code to send without a phone".into()));
                    };
                    let member = format!("{registration}#{}", code.number);
                    let sends = policy.send_budgets(
                        &caller.instance,
                        &user.id,
                        phone,
                        caller.address,
                        &member,
                    );
                    plan.request.takes.extend(sends.request.takes);
                    plan.subjects.extend(sends.subjects);
                }
                _ => {}
            }
        }
        if plan.is_empty() {
            return Ok(Admission::Go(permit));
        }
        match self.budgets.take(&plan.request).await? {
            TakeOutcome::Taken => {
                permit.taken = Some(plan);
                Ok(Admission::Go(permit))
            }
            TakeOutcome::Refused { take, retry_after } => {
                let (scope, subject) = plan.subjects.swap_remove(take);
                // A refused resend names its registration; a refused add has none yet.
                let existing = (!events.iter().any(|e| matches!(e, Event::Added(_))))
                    .then(|| registration.clone());
                // Silence only hides a send budget from a code that would be sent.
                let sends = events
                    .iter()
                    .any(|e| matches!(e, Event::CodeAdded(c) if c.delivery == Delivery::Send));
                let silent = sends && policy.silent.contains(&scope);
                self.audit(caller, user, existing, scope, subject, silent)
                    .await;
                if silent {
                    return Ok(Admission::Silent);
                }
                if scope == Scope::VerificationLock {
                    return Err(Error::FailedPrecondition(Precondition::VerificationLocked));
                }
                Err(Error::SendRefused { scope, retry_after })
            }
        }
    }

    /// Records a refusal in a stream of its own. The refusal stands even if the record fails
    /// (the store is down): it is logged instead.
    async fn audit(
        &self,
        caller: &Caller,
        user: &UserRecord,
        registration: Option<RegistrationId>,
        scope: Scope,
        subject: String,
        silent: bool,
    ) {
        tracing::info!(scope = scope.key(), subject = %subject, silent, "code refused by an abuse rule");
        let id = self.ids.message_id().to_string();
        let event = Event::SendRefused(SendRefused {
            scope: scope.key().to_owned(),
            subject,
            user: user.id.clone(),
            registration,
            silent,
            retry_after_secs: None,
        });
        let append = Append {
            stream: StreamId::new(caller.instance.clone(), REFUSAL_AGGREGATE_TYPE, id),
            expected: ExpectedVersion::NoStream,
            events: vec![NewEvent {
                event,
                creator: caller.principal.clone(),
                owner: user.organization.clone(),
            }],
            outbox: Vec::new(),
        };
        if let Err(e) = self.store.append(append).await {
            tracing::warn!(error = %e, scope = scope.key(), "could not record a refusal");
        }
    }
}

fn redacted(phone: &Phone) -> String {
    crate::abuse::redact_phone(phone)
}

impl Permit {
    /// Gives the budgets back: the append was refused, nothing was written or sent.
    pub(super) async fn refund(self, service: &CommandService) {
        if let Some(plan) = self.taken {
            if let Err(e) = service.budgets.refund(&plan.request).await {
                // Kept taken: the budget errs on the side of sending less.
                tracing::warn!(error = %e, "could not refund send budgets");
            }
        }
    }

    /// After a committed append: a verified registration holds its slot for good, a removed
    /// one frees it. A failure is logged: the slot then lapses or lingers until its hold
    /// ends, which errs on the side of the user.
    pub(super) async fn settle(
        self,
        service: &CommandService,
        caller: &Caller,
        user: &UserRecord,
        registration: &RegistrationId,
    ) {
        let Some(settle) = self.settles else { return };
        let key = AbusePolicy::slot_key(&caller.instance, &user.id);
        let member = registration.as_str();
        let done = match settle {
            Settle::Verified => {
                // A right code ends the run of wrong ones.
                let failures = AbusePolicy::failures_key(&caller.instance, &user.id);
                match service.budgets.clear(&failures).await {
                    Ok(_) => service.budgets.hold(&key, member, None).await.map(|_| ()),
                    Err(e) => Err(e),
                }
            }
            Settle::Removed => service.budgets.release(&key, member).await.map(|_| ()),
            Settle::WrongCode => service.count_wrong_code(caller, user, registration).await,
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, ?settle, "could not settle a command's abuse state");
        }
    }
}

impl CommandService {
    /// Counts a committed wrong code; at the user's cap, locks verification of every live
    /// registration of the user.
    async fn count_wrong_code(
        &self,
        caller: &Caller,
        user: &UserRecord,
        registration: &RegistrationId,
    ) -> Result<(), crate::ports::PortError> {
        let policy = self.abuse_policy(&caller.instance);
        let member = format!("{registration}#{}", self.ids.message_id());
        let failure = policy.failure(&caller.instance, &user.id, &member);
        if self.budgets.take(&failure).await? == TakeOutcome::Taken {
            return Ok(());
        }
        let until = self.clock.now()
            + chrono::Duration::from_std(policy.failure_lockout).unwrap_or(chrono::Duration::MAX);
        let lock = policy.lock(
            &caller.instance,
            &user.id,
            &self.ids.message_id().to_string(),
        );
        self.budgets.take(&lock).await?;
        tracing::warn!(user = %user.id, "wrong codes in a row reached the cap: verification locked");
        let slots = AbusePolicy::slot_key(&caller.instance, &user.id);
        let system = Caller::new(caller.instance.clone(), PrincipalId::system());
        for id in self.budgets.members(&slots).await? {
            let Ok(id) = RegistrationId::parse("otp_sms_id", id) else {
                continue;
            };
            let command = Command::LockVerification { until };
            // Boxed: this runs inside the command loop that recorded the wrong code.
            let locked = Box::pin(self.execute(&system, user, &id, &command, None)).await;
            if let Err(e) = locked {
                tracing::warn!(error = %e, registration = %id, "could not lock a registration");
            }
        }
        Ok(())
    }
}
