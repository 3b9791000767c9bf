//! Where the command loop meets the abuse rules: once per attempt, between the decision and
//! the append. The aggregate stays pure; this module does the budget store's I/O.
//!
//! - [`CommandService::admit`]: a new registration's number must be allowed and its user
//!   under the registration cap; a code to send takes every send budget. All or none: a
//!   refusal takes nothing, records an audit event, and fails the command with nothing else
//!   written.
//! - A conflicting append is decided again: if it still sends the same code, its take names
//!   the same member and is not counted twice.
//! - [`Permit::settle`]: after a committed append, a removed registration frees its slot and
//!   a wrong code counts toward the user's cap; at the cap, every live registration of the
//!   user is locked (a `verification locked` event in each, so a verify reads nothing but its
//!   stream). A right code changes no budget: the run of wrong codes it ends, and the stale
//!   registrations the cap stops counting, are worked out from the user's streams only when a
//!   limit would otherwise bind.

use crate::abuse::{redact_phone, AbusePolicy, Member, Scope, TakeOutcome};
use crate::aggregate::{Command, Registration, Status};
use crate::caller::Caller;
use crate::error::{Error, Precondition};
use crate::event::{Delivery, Event, SendRefused, REFUSAL_AGGREGATE_TYPE};
use crate::ids::{PrincipalId, RegistrationId};
use crate::phone::Phone;
use crate::ports::UserRecord;
use crate::store::{Append, ExpectedVersion, NewEvent, Recorded, RecordedMeta, StreamId};

use super::attempt::{Attempt, FollowUp};
use super::span::traced;
use super::CommandService;

/// How long a registration slot without a registration behind it is taken for an add still in
/// flight before the cap releases it (its write failed).
const ABSENT_GRACE_SECS: i64 = 60;

/// What an audit record says of a refusal.
struct Refusal {
    registration: Option<RegistrationId>,
    scope: Scope,
    subject: String,
    silent: bool,
    retry_after: Option<std::time::Duration>,
}

/// Whether the attempt goes on to its append.
#[derive(Debug)]
pub(super) enum Admission {
    /// Append, then settle the permit.
    Go(Permit),
    /// A silent scope refused: answer as if the code were sent, and write nothing more.
    Silent,
}

/// What an admitted attempt's events settle once committed.
#[derive(Debug, Default)]
pub(super) struct Permit {
    settles: Option<Settle>,
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Removed,
    WrongCode,
}

impl CommandService {
    /// Checks and takes what `events` need before they are appended; see the module docs.
    /// Called only for events that [`needs_admission`] (the loop admits the others itself).
    pub(super) async fn admit(
        &self,
        caller: &Caller,
        user: &UserRecord,
        registration: &RegistrationId,
        phone: Option<&Phone>,
        events: &[Event],
    ) -> Result<Admission, Error> {
        let policy = self.abuse_policy(&caller.instance);
        let permit = Permit::for_events(events);
        debug_assert!(needs_admission(events));
        // No new code, and no new registration, while the user's verification is locked.
        let mut plan = AbusePolicy::lock_gate(&caller.instance, &user.id, registration.as_str());
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
                        let refusal = Refusal {
                            registration: None,
                            scope: refused.scope,
                            subject: redact_phone(&added.phone),
                            silent: false,
                            retry_after: None,
                        };
                        self.audit(caller, user, refusal).await;
                        return Err(Error::invalid("phone.number", refused.reason));
                    }
                    plan.extend(policy.registration_slot(&caller.instance, &user.id, registration));
                }
                Event::CodeAdded(code) if code.delivery == Delivery::Send => {
                    plan.extend(self.send_budgets(
                        caller,
                        user,
                        registration,
                        phone,
                        code.number,
                    )?);
                }
                Event::ChallengeIssued(challenge) => {
                    let member = format!("{registration}#{}", challenge.number);
                    plan.extend(policy.sign_in_budget(&caller.instance, &user.id, &member));
                    if challenge.delivery == Delivery::Send {
                        plan.extend(self.send_budgets(
                            caller,
                            user,
                            registration,
                            phone,
                            challenge.number,
                        )?);
                    }
                }
                _ => {}
            }
        }
        if plan.is_empty() {
            return Ok(Admission::Go(permit));
        }
        let mut outcome = traced(self.budgets.take(&plan.request), || {
            tracing::info_span!("otp_sms.budgets.take", budgets = plan.scopes.len())
        })
        .await?;
        let mut slot_retry = None;
        if let TakeOutcome::Refused { take, .. } = outcome {
            if plan.scopes.get(take) == Some(&Scope::UserRegistrations) {
                // The cap counts only live registrations: release the stale ones, then try
                // once more.
                let (released, retry) = self.release_stale_slots(caller, user).await?;
                slot_retry = retry;
                if released > 0 {
                    outcome = self.budgets.take(&plan.request).await?;
                }
            }
        }
        match outcome {
            TakeOutcome::Taken => Ok(Admission::Go(permit)),
            TakeOutcome::Refused { take, retry_after } => {
                let scope = plan.scopes.get(take).copied().unwrap_or(Scope::Instance);
                let retry_after = match scope {
                    Scope::UserRegistrations => slot_retry,
                    _ => retry_after,
                };
                let subject = policy.subject(
                    scope,
                    &caller.instance,
                    &user.id,
                    &user.organization,
                    phone,
                    caller.address,
                );
                // A refused resend names its registration; a refused add has none yet.
                let existing = (!events.iter().any(|e| matches!(e, Event::Added(_))))
                    .then(|| registration.clone());
                // Silence only hides a send budget from a code that would be sent.
                let sends = events.iter().any(|e| match e {
                    Event::CodeAdded(c) => c.delivery == Delivery::Send,
                    Event::ChallengeIssued(c) => c.delivery == Delivery::Send,
                    _ => false,
                });
                let silent = sends && policy.silent.contains(&scope);
                let refusal = Refusal {
                    registration: existing,
                    scope,
                    subject,
                    silent,
                    retry_after,
                };
                self.audit(caller, user, refusal).await;
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

    /// The send budgets of code `number` of `registration`, sent by SMS to `phone`.
    fn send_budgets(
        &self,
        caller: &Caller,
        user: &UserRecord,
        registration: &RegistrationId,
        phone: Option<&Phone>,
        number: u32,
    ) -> Result<crate::abuse::SendPlan, Error> {
        let Some(phone) = phone else {
            return Err(Error::Internal("a code to send without a phone".into()));
        };
        let policy = self.abuse_policy(&caller.instance);
        let member = format!("{registration}#{number}");
        let range = if policy.range_collapse.is_some() {
            self.range_signal.rate(phone.range())
        } else {
            crate::conversion::Rate::default()
        };
        Ok(policy.send_budgets(
            &caller.instance,
            &user.id,
            &user.organization,
            phone,
            caller.address,
            range,
            &member,
        ))
    }

    /// Records a refusal in the event log, at most once per scope, subject, user and
    /// [`AUDIT_WINDOW`]: the stream is named by those, so a later refusal of the same window
    /// finds it written and adds nothing. Refusals repeated by one caller thus grow the log by
    /// a bounded amount (every refusal is still counted in the metrics and logged). The refusal
    /// stands even if the record fails (the store is down): it is logged instead.
    async fn audit(&self, caller: &Caller, user: &UserRecord, refusal: Refusal) {
        let Refusal {
            registration,
            scope,
            subject,
            silent,
            retry_after,
        } = refusal;
        tracing::info!(scope = scope.key(), subject = %subject, silent, "code refused by an abuse rule");
        crate::metrics::refused(scope, silent);
        let window = self
            .clock
            .now()
            .timestamp()
            .div_euclid(AUDIT_WINDOW.as_secs() as i64);
        let id = audit_stream_id(scope, &subject, &user.id, window);
        // However the subjects vary (a new number range each call), one user's refusals are
        // recorded at most AUDIT_RECORDS_PER_WINDOW times a window.
        let allowance = crate::abuse::TakeRequest {
            takes: vec![crate::abuse::BudgetTake {
                key: format!("audit|{}|{}", caller.instance.as_str(), user.id.as_str()),
                member: id.clone(),
                rules: vec![crate::abuse::Rule::Window {
                    max: AUDIT_RECORDS_PER_WINDOW,
                    window: AUDIT_WINDOW,
                }],
            }],
        };
        match self.budgets.take(&allowance).await {
            Ok(crate::abuse::TakeOutcome::Taken) => {}
            Ok(crate::abuse::TakeOutcome::Refused { .. }) => return,
            Err(e) => {
                tracing::warn!(error = %e, scope = scope.key(), "could not record a refusal");
                return;
            }
        }
        let event = Event::SendRefused(SendRefused {
            scope: scope.key().to_owned(),
            subject,
            user: user.id.clone(),
            registration,
            silent,
            retry_after_secs: retry_after.map(|d| d.as_secs().max(1)),
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
            command: None,
        };
        match self.store.append(append).await {
            Ok(_) => {}
            // Recorded already in this window.
            Err(crate::store::StoreError::Conflict { .. }) => {}
            Err(e) => tracing::warn!(error = %e, scope = scope.key(), "could not record a refusal"),
        }
    }
}

/// How long one audit record of a refusal stands for its repeats: a refusal of the same scope,
/// subject and user within the same 10-minute window (aligned to the epoch) is not recorded
/// again. At most 144 records a day for one scope, subject and user.
pub const AUDIT_WINDOW: std::time::Duration = std::time::Duration::from_secs(600);

/// The most refusal records of one user in one [`AUDIT_WINDOW`], whatever their scopes and
/// subjects: at most 1,440 a day for one user.
pub const AUDIT_RECORDS_PER_WINDOW: u32 = 10;

/// The refusal stream of a scope, subject, user and window: a digest, so that the id says
/// nothing of the subject and has a fixed length.
fn audit_stream_id(scope: Scope, subject: &str, user: &crate::ids::UserId, window: i64) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for part in [scope.key(), subject, user.as_str(), &window.to_string()] {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    digest
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `events` meet the abuse rules: only a new registration or a new code (a
/// registration's or a sign-in challenge's) does (the lock gate, the number's rules, the slot,
/// the send and sign-in budgets). Without them,
/// [`CommandService::admit`] admits with nothing to take.
pub(super) fn needs_admission(events: &[Event]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            Event::Added(_) | Event::CodeAdded(_) | Event::ChallengeIssued(_)
        )
    })
}

impl Permit {
    /// Whether [`Permit::settle`] has anything to do.
    pub(super) fn settles_something(&self) -> bool {
        self.settles.is_some()
    }

    /// What `events`, once committed, settle.
    pub(super) fn for_events<'e>(events: impl IntoIterator<Item = &'e Event>) -> Self {
        Permit {
            settles: events.into_iter().find_map(|e| match e {
                Event::Removed(_) => Some(Settle::Removed),
                Event::CheckFailed(_) | Event::ChallengeCheckFailed(_) => Some(Settle::WrongCode),
                _ => None,
            }),
        }
    }

    /// After a committed append (`recorded`: where its events landed): a removed registration
    /// frees its slot; a wrong code counts toward the user's cap. A failure is logged: the
    /// slot then lingers until the cap releases it, and the wrong code goes uncounted.
    ///
    /// Returns the commands the settling calls for (the user's registrations to lock when a
    /// wrong code reaches the cap); the caller runs them after this command has ended.
    pub(super) async fn settle(
        self,
        service: &CommandService,
        attempt: &Attempt<'_>,
        recorded: &[RecordedMeta],
    ) -> Vec<FollowUp> {
        let Some(settle) = self.settles else {
            return Vec::new();
        };
        let (caller, user) = (attempt.caller, attempt.user);
        let key = AbusePolicy::slot_key(&caller.instance, &user.id);
        let member = attempt.registration.as_str();
        let done = match settle {
            Settle::Removed => service
                .budgets
                .release(&key, member)
                .await
                .map(|_| Vec::new()),
            Settle::WrongCode => match recorded.last() {
                Some(check) => {
                    service
                        .count_wrong_code(caller, user, attempt.registration, check.position)
                        .await
                }
                None => Ok(Vec::new()),
            },
        };
        done.unwrap_or_else(|e| {
            tracing::warn!(error = %e, ?settle, "could not settle a command's abuse state");
            Vec::new()
        })
    }
}

impl CommandService {
    /// Counts a committed wrong code (its `check failed` event at feed `position`); at the
    /// user's cap, locks verification of every live registration of the user, unless a right
    /// code since the earlier ones ended their run. The locks are returned as follow-up
    /// commands, one per live registration of the user.
    async fn count_wrong_code(
        &self,
        caller: &Caller,
        user: &UserRecord,
        registration: &RegistrationId,
        position: u64,
    ) -> Result<Vec<FollowUp>, crate::ports::PortError> {
        let policy = self.abuse_policy(&caller.instance);
        // Named by its feed position, so a later right code's position tells which came
        // before it.
        let member = format!("{registration}#{position}");
        let failure = policy.failure(&caller.instance, &user.id, &member);
        if self.budgets.take(&failure).await? == TakeOutcome::Taken {
            return Ok(Vec::new());
        }
        if self.end_runs_before_success(caller, user).await? > 0
            && self.budgets.take(&failure).await? == TakeOutcome::Taken
        {
            return Ok(Vec::new());
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
        let mut locks = Vec::new();
        for slot in self.budgets.members(&slots).await? {
            let Ok(id) = RegistrationId::parse("otp_sms_id", slot.member) else {
                continue;
            };
            locks.push(FollowUp {
                caller: system.clone(),
                user: user.clone(),
                registration: id,
                command: Command::LockVerification { until },
            });
        }
        Ok(locks)
    }

    /// The user's registrations (slot members) as their streams say they are now.
    pub(super) async fn user_registrations(
        &self,
        caller: &Caller,
        user: &UserRecord,
    ) -> Result<Vec<(Member, Recorded<Event>)>, crate::ports::PortError> {
        let slots = AbusePolicy::slot_key(&caller.instance, &user.id);
        let mut out = Vec::new();
        for slot in self.budgets.members(&slots).await? {
            let Ok(parsed) = RegistrationId::parse("otp_sms_id", slot.member.clone()) else {
                continue;
            };
            let history = self
                .store
                .read_stream(&Self::stream_id(&caller.instance, &parsed))
                .await
                .map_err(|e| crate::ports::PortError::Unavailable(e.to_string()))?;
            out.push((slot, history));
        }
        Ok(out)
    }

    /// Releases the slots of the user's registrations that no longer count: removed ones, and
    /// unverified ones older than the policy's `unverified_counts_for`. Returns how many were
    /// released, and when the next unverified one will stop counting (`None`: every one left
    /// is verified).
    async fn release_stale_slots(
        &self,
        caller: &Caller,
        user: &UserRecord,
    ) -> Result<(usize, Option<std::time::Duration>), crate::ports::PortError> {
        let policy = self.abuse_policy(&caller.instance);
        let counts_for = chrono::Duration::from_std(policy.unverified_counts_for)
            .unwrap_or(chrono::Duration::MAX);
        let now = self.clock.now();
        let slots = AbusePolicy::slot_key(&caller.instance, &user.id);
        let (mut released, mut next) = (0, None);
        for (slot, history) in self.user_registrations(caller, user).await? {
            let state = Registration::from_events(history.iter().map(|r| &r.event));
            let stale_at = history.first().map(|r| r.created_at + counts_for);
            let stale = match state.status {
                Status::Removed => true,
                // No registration behind the slot: an add whose write failed, or one still
                // in flight; only the former lasts past a grace period.
                Status::Absent => slot.at + chrono::Duration::seconds(ABSENT_GRACE_SECS) <= now,
                Status::Verified => false,
                Status::Unverified => stale_at.is_some_and(|t| t <= now),
            };
            if stale {
                if self.budgets.release(&slots, &slot.member).await? {
                    released += 1;
                }
            } else if state.status != Status::Verified {
                // An add still in flight will most likely be an unverified registration,
                // stale a period after its slot was taken.
                let stale_at = stale_at.or(Some(slot.at + counts_for));
                let wait = stale_at.and_then(|t| (t - now).to_std().ok());
                next = match (next, wait) {
                    (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                    (a, b) => a.or(b),
                };
            }
        }
        Ok((released, next))
    }

    /// Ends the runs of wrong codes that a right code followed: releases the user's failure
    /// entries recorded before the latest right code (`verified`, or `challenge succeeded`)
    /// of any of the user's registrations.
    /// Returns how many were released.
    async fn end_runs_before_success(
        &self,
        caller: &Caller,
        user: &UserRecord,
    ) -> Result<usize, crate::ports::PortError> {
        let last_success = self
            .user_registrations(caller, user)
            .await?
            .iter()
            .flat_map(|(_, history)| history.iter())
            .filter(|r| matches!(r.event, Event::Verified(_) | Event::ChallengeSucceeded(_)))
            .map(|r| r.position)
            .max();
        let Some(last_success) = last_success else {
            return Ok(0);
        };
        let failures = AbusePolicy::failures_key(&caller.instance, &user.id);
        let mut released = 0;
        for failure in self.budgets.members(&failures).await? {
            let before = failure
                .member
                .rsplit_once('#')
                .and_then(|(_, p)| p.parse::<u64>().ok())
                .is_some_and(|p| p < last_success);
            if before && self.budgets.release(&failures, &failure.member).await? {
                released += 1;
            }
        }
        Ok(released)
    }
}
