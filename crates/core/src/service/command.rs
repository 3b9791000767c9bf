//! The command loop: load (or take from the stream cache), decide on the rebuilt state, admit
//! (the abuse rules), commit with the expected version; on a conflict, again, a bounded number
//! of times. What committed events settle afterwards is the permit's (`guard.rs`); the
//! commands they call for are run by [`CommandService::execute`] after the loop, not in it.

use std::sync::Arc;

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
use crate::message::Purpose;
use crate::metrics::{self, AppendOutcome, Retry};
use crate::store::{
    Append, CommandId, ExpectedVersion, NewEvent, NewOutboxMessage, Recorded, RecordedEvent,
    RecordedMeta, StoreError, StreamId,
};

use super::attempt::{Attempt, FollowUp};
use super::delivery::CodeDelivery;
use super::guard::{needs_admission, Admission, Permit};
use super::span::traced;

impl CommandService {
    /// Runs `attempt` (see [`Self::run`]), then the commands its committed events call for,
    /// each after the one before has ended: a work list, never a nested loop.
    pub(super) async fn execute(&self, attempt: Attempt<'_>) -> Result<Details, Error> {
        let (result, mut follow_ups) = self.run(attempt).await;
        while let Some(next) = follow_ups.pop() {
            let (done, more) = self.run(next.attempt()).await;
            if let Err(e) = done {
                tracing::warn!(error = %e, registration = %next.registration, command = next.command.name(), "a follow-up command failed");
            }
            follow_ups.extend(more);
        }
        result
    }

    /// One command, in its span, reported once to the metrics however it ended: its answer,
    /// and the follow-ups its committed events call for.
    async fn run(&self, attempt: Attempt<'_>) -> (Result<Details, Error>, Vec<FollowUp>) {
        let mut ended = Ended::default();
        // The command's span: its store calls and budget takes are its children.
        let result = traced(self.run_loop(&attempt, &mut ended), || {
            tracing::info_span!(
                "otp_sms.command",
                command = attempt.command.name(),
                otp_sms_id = %attempt.registration,
                command_id = %attempt.id,
            )
        })
        .await;
        self.instruments
            .command_finished(attempt.command, &result, ended.issued);
        (result, ended.follow_ups)
    }

    /// Load, decide, admit, commit; on a version conflict or an unknown outcome, again, up to
    /// `max_attempts`.
    ///
    /// The append carries the attempt's id. A history that holds events of that id already
    /// means the command committed (an earlier attempt whose answer was lost, or an earlier
    /// call under the same idempotency key): the answer is built from those events and nothing
    /// is written again. An append whose outcome is unknown is followed by a read of the
    /// stream that settles it.
    async fn run_loop(&self, a: &Attempt<'_>, ended: &mut Ended) -> Result<Details, Error> {
        let stream = Self::stream_id(&a.caller.instance, a.registration);
        let mut tries = 0;
        // A cached history is trusted until it leads to a conflict or to a decision that
        // records nothing; from then on this command reads the store.
        let mut trust_cache = true;
        while tries < self.max_attempts {
            let (history, from_cache) = self.load(a, &stream, tries, trust_cache).await?;
            let now = self.clock.now();
            if let Some(at) = history.iter().position(|r| r.command == Some(a.id)) {
                if let Some(cache) = &self.cache {
                    cache.put(&stream, history.clone());
                }
                // Boxed: a replay is rare, and its future would weigh on every command's.
                return Box::pin(self.replayed(a, &history, at, now, ended)).await;
            }
            let decided = self.decide(a, &history, now)?;
            if decided.write.events.is_empty() {
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
                return match decided.error {
                    Some(error) => Err(error),
                    None => Ok(details(
                        a.registration,
                        &decided.organization,
                        &history,
                        &[],
                        now,
                    )),
                };
            }
            // The abuse rules' one point in the loop: a refusal fails the command with
            // nothing written but its audit record. Only a new registration or a new code
            // meets them; for those the budget store's round trip (and a refusal's audit)
            // is boxed, so that it does not weigh on every command's future.
            let admission = if needs_admission(&decided.write.events) {
                Box::pin(self.admit(
                    a.caller,
                    a.user,
                    a.registration,
                    decided.phone.as_ref(),
                    &decided.write.events,
                ))
                .await?
            } else {
                Admission::Go(Permit::for_events(&decided.write.events))
            };
            let permit = match admission {
                Admission::Go(permit) => permit,
                // The pumper is answered as a sender would be: nothing sent, nothing written.
                Admission::Silent => {
                    return Ok(details(
                        a.registration,
                        &decided.organization,
                        &history,
                        &[],
                        now,
                    ))
                }
            };
            let Decided {
                write,
                error,
                organization,
                ..
            } = decided;
            match self
                .commit(a, &stream, &history, write, &organization, tries)
                .await
            {
                Ok(recorded) => {
                    ended.issued = recorded.issued;
                    if permit.settles_something() {
                        // Boxed for the same reason: most commands settle nothing.
                        ended.follow_ups = Box::pin(permit.settle(self, a, &recorded.meta)).await;
                    }
                    return match error {
                        // A refusal that records events (a wrong code) still fails the call.
                        Some(error) => Err(error),
                        None => Ok(details(
                            a.registration,
                            &organization,
                            &history,
                            &recorded.meta,
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
                    tries += 1;
                    trust_cache = false;
                    self.instruments.retry(Retry::Conflict);
                }
                Err(StoreError::Unknown(reason)) => {
                    // The append may have committed. The next attempt reads the stream: its
                    // events under the id are the answer; without them, the command is
                    // decided again, and should the first append commit late, the second one
                    // conflicts (the version moved) and the read after it finds the first.
                    tracing::warn!(id = %a.id, %reason, "append outcome unknown; reading the stream");
                    if let Some(cache) = &self.cache {
                        cache.forget(&stream);
                    }
                    tries += 1;
                    trust_cache = false;
                    self.instruments.retry(Retry::UnknownOutcome);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Aborted)
    }

    /// The stream's history, and whether it came from the cache.
    async fn load(
        &self,
        a: &Attempt<'_>,
        stream: &StreamId,
        tries: u32,
        trust_cache: bool,
    ) -> Result<(Recorded<Event>, bool), Error> {
        // An add names its stream with an id the generator promises was never used, so the
        // first attempt skips the read: the append expects an empty stream, and should the
        // promise be broken the store refuses it and the retry reads.
        if tries == 0 && matches!(a.command, Command::Add { .. }) {
            return Ok((Recorded::new(), false));
        }
        if let Some(cache) = self.cache.as_ref().filter(|_| trust_cache) {
            let found = cache.get(stream);
            self.instruments.stream_cache(found.is_some());
            if let Some(cached) = found {
                return Ok((cached, true));
            }
        }
        let read = traced(self.store.read_stream(stream), || {
            tracing::info_span!("otp_sms.store.read_stream")
        });
        Ok((read.await?, false))
    }

    /// The aggregate rebuilt from `history` decides the command; the events it records, with
    /// the outbox messages they need. The rebuilt state ends here, before the append's
    /// `.await`: kept alive across it, it would sit in the loop's future, which is copied
    /// whole when moved.
    fn decide(
        &self,
        a: &Attempt<'_>,
        history: &[Arc<RecordedEvent<Event>>],
        now: DateTime<Utc>,
    ) -> Result<Decided, Error> {
        let mut state = Registration::from_events(history.iter().map(|r| &r.event));
        let number = match a.command {
            Command::Add { phone, .. } => Some(phone),
            _ => state.phone.as_ref(),
        };
        let test_code = number.and_then(|p| self.test_code(&a.caller.instance, p));
        let ctx = Context {
            registration: a.registration,
            user: &a.user.id,
            now,
            policy: &self.policy,
            keys: &self.keys,
            test_code: test_code.as_ref(),
        };
        let (events, error) = match state.decide(a.command, &ctx) {
            Decision::Accepted(events) => (events, None),
            Decision::Rejected { events, error } => (events, Some(error)),
        };
        for event in &events {
            state.apply_in_place(event);
        }
        let organization = state
            .organization
            .clone()
            .unwrap_or_else(|| a.user.organization.clone());
        let outbox = if events.is_empty() {
            Vec::new()
        } else {
            self.outbox_for(a.caller, a.registration, &state, &events, a.fresh)?
        };
        Ok(Decided {
            write: Write { events, outbox },
            error,
            organization,
            phone: state.phone,
        })
    }

    /// Appends `events` after `history` under the attempt's id, expecting the stream's
    /// version to be where `history` ends; on success, the stream cache learns the longer
    /// history. Times and counts the append.
    async fn commit(
        &self,
        a: &Attempt<'_>,
        stream: &StreamId,
        history: &[Arc<RecordedEvent<Event>>],
        write: Write,
        organization: &OrganizationId,
        tries: u32,
    ) -> Result<Committed, StoreError> {
        let Write { events, outbox } = write;
        // What the cache and the metrics need after the append, which consumes the events.
        let for_cache = self.cache.is_some().then(|| events.clone());
        let issued = metrics::issued(&events);
        let append = Append {
            stream: stream.clone(),
            expected: ExpectedVersion::Exact(history.last().map_or(0, |r| r.sequence)),
            events: events
                .into_iter()
                .map(|event| NewEvent {
                    event,
                    creator: a.caller.principal.clone(),
                    owner: organization.clone(),
                })
                .collect(),
            outbox,
            command: Some(a.id),
        };
        let started = std::time::Instant::now();
        let appended = traced(self.store.append(append), || {
            tracing::info_span!("otp_sms.store.append", attempt = tries)
        })
        .await;
        self.instruments.append(
            started.elapsed(),
            match &appended {
                Ok(_) => AppendOutcome::Ok,
                Err(StoreError::Conflict { .. }) => AppendOutcome::Conflict,
                Err(StoreError::Unknown(_)) => AppendOutcome::Unknown,
                Err(_) => AppendOutcome::Error,
            },
        );
        let outcome = appended?;
        if let (Some(cache), Some(events)) = (&self.cache, for_cache) {
            let written = Written {
                command: a.id,
                stream,
                creator: &a.caller.principal,
                owner: organization,
            };
            cache.put(stream, written.history(history, events, &outcome.recorded));
        }
        Ok(Committed {
            meta: outcome.recorded,
            issued,
        })
    }

    /// The answer of a command whose events are in `history` from index `at` on: the details
    /// of its append, or the error it recorded (a wrong code). Settles what the events settle
    /// (a counted wrong code, a freed slot), as the call that committed them would have.
    async fn replayed(
        &self,
        a: &Attempt<'_>,
        history: &[Arc<RecordedEvent<Event>>],
        at: usize,
        now: DateTime<Utc>,
        ended: &mut Ended,
    ) -> Result<Details, Error> {
        let (before, from) = history.split_at(at);
        let ours: Vec<&Arc<RecordedEvent<Event>>> = from
            .iter()
            .take_while(|r| r.command == Some(a.id))
            .collect();
        let recorded: Vec<RecordedMeta> = ours
            .iter()
            .map(|r| RecordedMeta {
                sequence: r.sequence,
                position: r.position,
                created_at: r.created_at,
            })
            .collect();
        ended.issued = metrics::issued(from.iter().map(|r| &r.event));
        ended.follow_ups = Permit::for_events(ours.iter().map(|r| &r.event))
            .settle(self, a, &recorded)
            .await;
        if let Some(error) = recorded_refusal(ours.iter().map(|r| &r.event)) {
            return Err(error);
        }
        let organization = ours[0].owner.clone();
        Ok(details(
            a.registration,
            &organization,
            before,
            &recorded,
            now,
        ))
    }

    /// A delivery message for every code that must go out by SMS: a registration's, or a
    /// sign-in challenge's.
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
            let (number, expires_at, purpose) = match event {
                Event::CodeAdded(c) if c.delivery == Delivery::Send => {
                    (c.number, c.expires_at, Purpose::Registration)
                }
                Event::ChallengeIssued(c) if c.delivery == Delivery::Send => {
                    (c.number, c.expires_at, Purpose::SignIn)
                }
                _ => continue,
            };
            let (Some(code), Some(phone), Some(user), Some(organization)) =
                (fresh, &state.phone, &state.user, &state.organization)
            else {
                return Err(Error::Internal("code to send without its material".into()));
            };
            let binding = CodeBinding {
                registration,
                number,
            };
            let sealed = self.keys.seal(binding, code, &mut rand::thread_rng());
            let body = CodeDelivery {
                instance: caller.instance.clone(),
                user: user.clone(),
                organization: organization.clone(),
                registration: registration.clone(),
                number,
                phone: phone.clone(),
                sealed,
                expires_at,
                purpose,
            };
            outbox.push(NewOutboxMessage {
                id: self.ids.message_id(),
                payload: serde_json::to_value(&body).map_err(|e| Error::Internal(e.to_string()))?,
            });
        }
        Ok(outbox)
    }
}

/// The error a command's recorded events stand for, when they record a refusal: a wrong
/// code (registration or sign-in), or a sign-in challenge found expired.
fn recorded_refusal<'e>(events: impl IntoIterator<Item = &'e Event>) -> Option<Error> {
    events.into_iter().find_map(|event| match event {
        Event::CheckFailed(_) | Event::ChallengeCheckFailed(_) => Some(Error::WrongCode),
        Event::ChallengeExpired(_) => Some(Error::FailedPrecondition(
            crate::error::Precondition::CodeExpired,
        )),
        _ => None,
    })
}

/// How a command ended, besides its answer: the code its events issued (for the metrics) and
/// the commands they call for.
#[derive(Default)]
struct Ended {
    issued: Option<Delivery>,
    follow_ups: Vec<FollowUp>,
}

/// What the aggregate decided: the events to record (with the error of a refusal that
/// records some: a wrong code), the registration's organization and phone after them, and the
/// outbox messages they need.
struct Decided {
    write: Write,
    error: Option<Error>,
    organization: OrganizationId,
    phone: Option<crate::phone::Phone>,
}

/// What a decision writes: its events, and the outbox messages that go with them.
struct Write {
    events: Vec<Event>,
    outbox: Vec<NewOutboxMessage>,
}

/// A committed append: where its events landed, and the code they issued.
struct Committed {
    meta: Vec<RecordedMeta>,
    issued: Option<Delivery>,
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
