//! The command loop: load (or take from the stream cache), rebuild, decide, append with the
//! expected version; on a conflict, again, a bounded number of times.

use std::sync::Arc;

use tracing::Instrument as _;

use chrono::{DateTime, Utc};

use super::CommandService;
use crate::aggregate::{Command, Context, Decision, Registration};
use crate::api::{Details, Owner, OwnerType};
use crate::caller::Caller;
use crate::code::VerificationCode;
use crate::error::Error;
use crate::event::{Delivery, Event};
use crate::ids::{OrganizationId, PrincipalId, RegistrationId};
use crate::keys::CodeBinding;
use crate::metrics;
use crate::ports::UserRecord;
use crate::store::{
    Append, CommandId, ExpectedVersion, NewEvent, NewOutboxMessage, Recorded, RecordedEvent,
    RecordedMeta, StoreError, StreamId,
};

use super::delivery::CodeDelivery;
use super::guard::{Admission, Permit};

impl CommandService {
    /// [`Self::execute_as`] under a fresh command id.
    pub(super) async fn execute(
        &self,
        caller: &Caller,
        user: &UserRecord,
        registration: &RegistrationId,
        command: &Command,
        fresh: Option<&VerificationCode>,
    ) -> Result<Details, Error> {
        let id = CommandId::generate();
        self.execute_as(id, caller, user, registration, command, fresh)
            .await
    }

    /// Load, rebuild, decide, append; on a version conflict, again, up to `max_attempts`.
    ///
    /// The append carries `id`. A history that holds events of `id` already means the command
    /// committed (an earlier attempt whose answer was lost, or an earlier call under the same
    /// idempotency key): the answer is built from those events and nothing is written again.
    /// An append whose outcome is unknown is followed by a read of the stream that settles it.
    pub(super) async fn execute_as(
        &self,
        id: CommandId,
        caller: &Caller,
        user: &UserRecord,
        registration: &RegistrationId,
        command: &Command,
        fresh: Option<&VerificationCode>,
    ) -> Result<Details, Error> {
        let mut issued = None;
        // The command's span: its store calls and budget takes are its children.
        let span = tracing::info_span!(
            "otp_sms.command",
            command = command.name(),
            otp_sms_id = %registration,
            command_id = %id,
        );
        let result = self
            .run_command(id, caller, user, registration, command, fresh, &mut issued)
            .instrument(span)
            .await;
        // The command's one report to the metrics, however it ended.
        metrics::command_finished(command, &result, issued);
        result
    }

    /// The loop of [`Self::execute_as`]; sets `issued` when committed events issued a code.
    #[allow(clippy::too_many_arguments)]
    async fn run_command(
        &self,
        id: CommandId,
        caller: &Caller,
        user: &UserRecord,
        registration: &RegistrationId,
        command: &Command,
        fresh: Option<&VerificationCode>,
        issued: &mut Option<Delivery>,
    ) -> Result<Details, Error> {
        let stream = Self::stream_id(&caller.instance, registration);
        let mut attempt = 0;
        // A cached history is trusted until it leads to a conflict or to a decision that
        // records nothing; from then on this command reads the store.
        let mut trust_cache = true;
        while attempt < self.max_attempts {
            // An add names its stream with an id the generator promises was never used, so
            // the first attempt skips the read: the append expects an empty stream, and
            // should the promise be broken the store refuses it and the retry reads.
            let (history, from_cache) = if attempt == 0 && matches!(command, Command::Add { .. }) {
                (Recorded::new(), false)
            } else if let Some(cached) =
                self.cache
                    .as_ref()
                    .filter(|_| trust_cache)
                    .and_then(|cache| {
                        let found = cache.get(&stream);
                        metrics::stream_cache(found.is_some());
                        found
                    })
            {
                (cached, true)
            } else {
                let read = self
                    .store
                    .read_stream(&stream)
                    .instrument(tracing::info_span!("otp_sms.store.read_stream"));
                (read.await?, false)
            };
            let now = self.clock.now();
            if let Some(at) = history.iter().position(|r| r.command == Some(id)) {
                if let Some(cache) = &self.cache {
                    cache.put(&stream, history.clone());
                }
                *issued = metrics::issued(history.iter().skip(at).map(|r| &r.event));
                return self
                    .committed(caller, user, registration, &history, at, now)
                    .await;
            }
            // The rebuilt state ends with this block, before the append's `.await`: kept
            // alive across it, it would sit in this future, which is copied whole when moved.
            let (events, error, organization, outbox, phone) = {
                let mut state = Registration::from_events(history.iter().map(|r| &r.event));
                let number = match command {
                    Command::Add { phone, .. } => Some(phone),
                    _ => state.phone.as_ref(),
                };
                let test_code = number.and_then(|p| self.test_code(&caller.instance, p));
                let ctx = Context {
                    registration,
                    user: &user.id,
                    now,
                    policy: &self.policy,
                    keys: &self.keys,
                    test_code: test_code.as_ref(),
                };
                let (events, error) = match state.decide(command, &ctx) {
                    Decision::Accepted(events) => (events, None),
                    Decision::Rejected { events, error } => (events, Some(error)),
                };
                for event in &events {
                    state.apply_in_place(event);
                }
                let organization = state
                    .organization
                    .clone()
                    .unwrap_or_else(|| user.organization.clone());
                let outbox = if events.is_empty() {
                    Vec::new()
                } else {
                    self.outbox_for(caller, registration, &state, &events, fresh)?
                };
                (events, error, organization, outbox, state.phone)
            };
            if events.is_empty() {
                if from_cache {
                    // Nothing to append means no version check to catch a stale history:
                    // the store confirms it before the service answers.
                    trust_cache = false;
                    continue;
                }
                // Nothing to record: a refusal, or a command already done (a repeated
                // report). The history just read is confirmed; kept for the next command.
                // (After an append, the cache gets the longer history instead.)
                if let Some(cache) = &self.cache {
                    cache.put(&stream, history.clone());
                }
                return match error {
                    Some(error) => Err(error),
                    None => Ok(details(registration, &organization, &history, &[], now)),
                };
            }
            // The abuse rules' one point in the loop: a refusal fails the command with
            // nothing written but its audit record.
            let permit = match self
                .admit(caller, user, registration, phone.as_ref(), &events)
                .await?
            {
                Admission::Go(permit) => permit,
                // The pumper is answered as a sender would be: nothing sent, nothing written.
                Admission::Silent => {
                    return Ok(details(registration, &organization, &history, &[], now))
                }
            };
            // What the cache and the metrics need after the append, which consumes the events.
            let for_cache = self.cache.is_some().then(|| events.clone());
            let issuing = metrics::issued(&events);
            let append = Append {
                stream: stream.clone(),
                expected: ExpectedVersion::Exact(history.last().map_or(0, |r| r.sequence)),
                events: events
                    .into_iter()
                    .map(|event| NewEvent {
                        event,
                        creator: caller.principal.clone(),
                        owner: organization.clone(),
                    })
                    .collect(),
                outbox,
                command: Some(id),
            };
            let started = std::time::Instant::now();
            let appended = self
                .store
                .append(append)
                .instrument(tracing::info_span!("otp_sms.store.append", attempt))
                .await;
            metrics::append(
                started.elapsed(),
                match &appended {
                    Ok(_) => "ok",
                    Err(StoreError::Conflict { .. }) => "conflict",
                    Err(StoreError::Unknown(_)) => "unknown",
                    Err(_) => "error",
                },
            );
            match appended {
                Ok(outcome) => {
                    *issued = issuing;
                    if let (Some(cache), Some(events)) = (&self.cache, for_cache) {
                        let written = Written {
                            command: id,
                            stream: &stream,
                            creator: &caller.principal,
                            owner: &organization,
                        };
                        cache.put(
                            &stream,
                            written.history(&history, events, &outcome.recorded),
                        );
                    }
                    // After the cache knows the append: settling may lock this very
                    // registration, through the same loop.
                    permit
                        .settle(self, caller, user, registration, &outcome.recorded)
                        .await;
                    return match error {
                        // A refusal that records events (a wrong code) still fails the call.
                        Some(error) => Err(error),
                        None => Ok(details(
                            registration,
                            &organization,
                            &history,
                            &outcome.recorded,
                            now,
                        )),
                    };
                }
                Err(StoreError::Conflict { .. }) => {
                    // Nothing was written. The budgets stay taken: the next attempt, if it
                    // still sends this code, takes with the same member and counts once.
                    if let (true, Some(cache)) = (from_cache, &self.cache) {
                        // The store contradicts the cached history: the retry's read
                        // replaces it, even should it be shorter.
                        cache.forget(&stream);
                    }
                    attempt += 1;
                    trust_cache = false;
                    metrics::retry("conflict");
                }
                Err(StoreError::Unknown(reason)) => {
                    // The append may have committed. The next attempt reads the stream: its
                    // events under `id` are the answer; without them, the command is decided
                    // again, and should the first append commit late, the second one
                    // conflicts (the version moved) and the read after it finds the first.
                    tracing::warn!(%id, %reason, "append outcome unknown; reading the stream");
                    if let Some(cache) = &self.cache {
                        cache.forget(&stream);
                    }
                    attempt += 1;
                    trust_cache = false;
                    metrics::retry("unknown_outcome");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Aborted)
    }

    /// The answer of a command whose events are in `history` from index `at` on: the details
    /// of its append, or the error it recorded (a wrong code). Settles what the events settle
    /// (a counted wrong code, a freed slot), as the call that committed them would have.
    async fn committed(
        &self,
        caller: &Caller,
        user: &UserRecord,
        registration: &RegistrationId,
        history: &[Arc<RecordedEvent<Event>>],
        at: usize,
        now: DateTime<Utc>,
    ) -> Result<Details, Error> {
        let (before, from) = history.split_at(at);
        let command = from[0].command;
        let ours: Vec<&Arc<RecordedEvent<Event>>> =
            from.iter().take_while(|r| r.command == command).collect();
        let recorded: Vec<RecordedMeta> = ours
            .iter()
            .map(|r| RecordedMeta {
                sequence: r.sequence,
                position: r.position,
                created_at: r.created_at,
            })
            .collect();
        let events: Vec<&Event> = ours.iter().map(|r| &r.event).collect();
        Permit::for_events(events.iter().copied())
            .settle(self, caller, user, registration, &recorded)
            .await;
        if events.iter().any(|e| matches!(e, Event::CheckFailed(_))) {
            return Err(Error::WrongCode);
        }
        let organization = ours[0].owner.clone();
        Ok(details(registration, &organization, before, &recorded, now))
    }

    /// A delivery message for every code that must go out by SMS.
    fn outbox_for(
        &self,
        caller: &Caller,
        registration: &RegistrationId,
        state: &Registration,
        events: &[Event],
        fresh: Option<&VerificationCode>,
    ) -> Result<Vec<NewOutboxMessage>, Error> {
        let mut outbox = Vec::new();
        for event in events {
            let Event::CodeAdded(added) = event else {
                continue;
            };
            if added.delivery != Delivery::Send {
                continue;
            }
            let (Some(code), Some(phone), Some(user), Some(organization)) =
                (fresh, &state.phone, &state.user, &state.organization)
            else {
                return Err(Error::Internal("code to send without its material".into()));
            };
            let binding = CodeBinding {
                registration,
                number: added.number,
            };
            let sealed = self.keys.seal(binding, code, &mut rand::thread_rng());
            let body = CodeDelivery {
                instance: caller.instance.clone(),
                user: user.clone(),
                organization: organization.clone(),
                registration: registration.clone(),
                number: added.number,
                phone: phone.clone(),
                sealed,
                expires_at: added.expires_at,
            };
            outbox.push(NewOutboxMessage {
                id: self.ids.message_id(),
                payload: serde_json::to_value(&body).map_err(|e| Error::Internal(e.to_string()))?,
            });
        }
        Ok(outbox)
    }
}

/// What an accepted append wrote, for the stream cache: the events as the store recorded them.
struct Written<'a> {
    command: CommandId,
    stream: &'a StreamId,
    creator: &'a PrincipalId,
    owner: &'a OrganizationId,
}

impl Written<'_> {
    /// `before` followed by `events`, placed where the store's `recorded` says.
    fn history(
        &self,
        before: &[Arc<RecordedEvent<Event>>],
        events: Vec<Event>,
        recorded: &[RecordedMeta],
    ) -> Recorded<Event> {
        let appended = events.into_iter().zip(recorded).map(|(event, meta)| {
            Arc::new(RecordedEvent {
                stream: self.stream.clone(),
                sequence: meta.sequence,
                position: meta.position,
                created_at: meta.created_at,
                creator: self.creator.clone(),
                owner: self.owner.clone(),
                command: Some(self.command),
                event,
            })
        });
        before.iter().cloned().chain(appended).collect()
    }
}

/// `created` is the registration's first event, `changed` its last: recorded before the call
/// (`history`) or by it (`appended`).
fn details(
    registration: &RegistrationId,
    organization: &OrganizationId,
    history: &[Arc<RecordedEvent<Event>>],
    appended: &[RecordedMeta],
    now: DateTime<Utc>,
) -> Details {
    let created = history
        .first()
        .map(|r| r.created_at)
        .or(appended.first().map(|m| m.created_at))
        .unwrap_or(now);
    let changed = appended
        .last()
        .map(|m| m.created_at)
        .or(history.last().map(|r| r.created_at))
        .unwrap_or(now);
    Details {
        id: registration.clone(),
        created,
        changed,
        owner: Owner {
            owner_type: OwnerType::Org,
            id: organization.as_str().to_owned(),
        },
    }
}
