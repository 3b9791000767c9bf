//! Scenarios of one registration (its own codes, and sign-in challenges once verified), a
//! reference model of what each step must do, and a simulator that runs steps through the
//! real aggregate.
//!
//! The model is written independently of `otp_sms_core::Registration`, from the rules as
//! `docs/architecture.md` states them, so that a model-based test compares two
//! implementations. With the `proptest` feature, `crate::strategies` generates scenarios.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use otp_sms_core::{
    AddVerification, Binding, BindingDigest, CodeKey, CodeKeyRing, CodePolicy, Command, Context,
    Decision, Delivery, Error, Event, EventPayload, KeyId, OrganizationId, Phone, Precondition,
    Registration, RegistrationId, UserId, VerificationCode,
};

/// How many bindings (sessions) scenarios sign in under: `session-0` …
pub const BINDINGS: u8 = 3;

/// The binding (a host's session id) of index `b`.
pub fn binding_name(b: u8) -> String {
    format!("session-{b}")
}

/// The digest of binding `b`.
pub fn binding_digest(b: u8) -> BindingDigest {
    Binding::parse("binding", binding_name(b))
        .expect("a valid binding")
        .digest()
}

/// How the first code of a registration reaches the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddKind {
    /// `send_code`.
    Send,
    /// `return_code`.
    Return,
    /// `is_verified`.
    Verified,
}

/// A submitted code of a special shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OddCode {
    /// `""`: out of bounds.
    Empty,
    /// 200 ASCII digits: in bounds, wrong.
    Ascii200,
    /// 201 ASCII digits: out of bounds.
    Ascii201,
    /// 200 two-byte characters: in bounds (characters, not bytes), wrong.
    Multibyte200,
    /// 201 two-byte characters: out of bounds.
    Multibyte201,
}

impl OddCode {
    /// The code text.
    pub fn text(self) -> String {
        match self {
            OddCode::Empty => String::new(),
            OddCode::Ascii200 => "7".repeat(200),
            OddCode::Ascii201 => "7".repeat(201),
            OddCode::Multibyte200 => "é".repeat(200),
            OddCode::Multibyte201 => "é".repeat(201),
        }
    }

    /// Whether the code is within the contract's bounds (1..=200 characters).
    pub fn in_bounds(self) -> bool {
        matches!(self, OddCode::Ascii200 | OddCode::Multibyte200)
    }
}

/// One step of a scenario.
///
/// Non-exhaustive: a host that matches steps keeps a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Step {
    /// Add the registration (scenarios start with it).
    Add(AddKind),
    /// Verify with the pending code.
    VerifyRight,
    /// Verify with a different code of the same length.
    VerifyWrong,
    /// Verify with an odd code.
    VerifyOdd(OddCode),
    /// Ask for a new code.
    Resend(Delivery),
    /// Report code delivery: of the pending code, or of the one before it (`stale`).
    RecordCodeSent {
        /// Report the previous code's number instead of the pending one's.
        stale: bool,
    },
    /// Remove the registration.
    Remove,
    /// Let this many seconds pass.
    Advance(u32),
    /// Issue a sign-in challenge under binding `binding` (below [`BINDINGS`]).
    Challenge {
        /// Which binding.
        binding: u8,
        /// How its code reaches the user.
        delivery: Delivery,
    },
    /// Check, under binding `on`, the code of the latest challenge issued under `code_of`:
    /// the right code when both are the same binding.
    Check {
        /// Whose code.
        code_of: u8,
        /// Under which binding.
        on: u8,
    },
    /// Check a wrong code under binding `on`.
    CheckWrong {
        /// Under which binding.
        on: u8,
    },
}

/// What a step's outcome looks like, with errors reduced to what the contract fixes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// INVALID_ARGUMENT on a field.
    InvalidArgument(&'static str),
    /// INVALID_ARGUMENT: wrong code.
    WrongCode,
    /// NOT_FOUND (registration).
    RegistrationNotFound,
    /// FAILED_PRECONDITION, with the reason.
    FailedPrecondition(Precondition),
    /// RESOURCE_EXHAUSTED, with the wait.
    RateLimited(Duration),
    /// Anything else, by its rpc code name.
    Other(&'static str),
}

impl From<&Error> for ErrorKind {
    fn from(e: &Error) -> Self {
        match e {
            Error::InvalidArgument { field, .. } => ErrorKind::InvalidArgument(field),
            Error::WrongCode => ErrorKind::WrongCode,
            Error::RegistrationNotFound => ErrorKind::RegistrationNotFound,
            Error::FailedPrecondition(p) => ErrorKind::FailedPrecondition(*p),
            Error::RateLimited { retry_after } => ErrorKind::RateLimited(*retry_after),
            other => ErrorKind::Other(other.rpc_code().name()),
        }
    }
}

/// The outcome of one step: the event types recorded and the error, if any.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Type names of the events recorded, in order.
    pub events: Vec<String>,
    /// The error the step answered with.
    pub error: Option<ErrorKind>,
}

impl Outcome {
    fn ok(events: &[&str]) -> Self {
        Self {
            events: events.iter().map(|s| (*s).to_owned()).collect(),
            error: None,
        }
    }
    fn err(error: ErrorKind) -> Self {
        Self {
            events: Vec::new(),
            error: Some(error),
        }
    }
}

const ADDED: &str = Event::ADDED;
const CODE_ADDED: &str = Event::CODE_ADDED;
const CODE_SENT: &str = Event::CODE_SENT;
const CHECK_FAILED: &str = Event::CHECK_FAILED;
const VERIFIED: &str = Event::VERIFIED;
const REMOVED: &str = Event::REMOVED;
const CHALLENGE_ISSUED: &str = Event::CHALLENGE_ISSUED;
const CHALLENGE_SENT: &str = Event::CHALLENGE_SENT;
const CHALLENGE_SUCCEEDED: &str = Event::CHALLENGE_SUCCEEDED;
const CHALLENGE_CHECK_FAILED: &str = Event::CHALLENGE_CHECK_FAILED;
const CHALLENGE_BURNT: &str = Event::CHALLENGE_BURNT;
const CHALLENGE_EXPIRED: &str = Event::CHALLENGE_EXPIRED;

/// Where a registration is in its life, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Life {
    /// Not added yet.
    Absent,
    /// Added, waiting for the right code.
    Unverified,
    /// Verified.
    Verified,
    /// Removed.
    Removed,
}

/// The pending code, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCode {
    /// Which code of the registration it is (1 for the first).
    pub number: u32,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// Wrong codes tried against it.
    pub failures: u32,
    /// Whether its SMS was recorded as sent.
    pub sent: bool,
}

/// Where a sign-in challenge is, as the model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChallengeLife {
    /// Waiting for its code.
    Open,
    /// Completed.
    Succeeded,
    /// Took too many wrong codes.
    Burnt,
    /// Checked too late.
    Expired,
}

/// A sign-in challenge, as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChallenge {
    /// Its code's number within the registration (one count with the registration's codes).
    pub number: u32,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// Wrong codes tried against it.
    pub failures: u32,
    /// Whether its SMS was recorded as sent.
    pub sent: bool,
    /// Open, or how it closed.
    pub life: ChallengeLife,
}

/// The reference model: the rules of one registration, stated as plainly as possible. Its
/// state is readable, so a host's property test can derive what its own projection must show.
///
/// Scenarios use fewer bindings ([`BINDINGS`]) than a registration keeps challenges, so the
/// model never drops one.
#[derive(Debug, Clone)]
pub struct Model {
    policy: CodePolicy,
    life: Life,
    code: Option<ModelCode>,
    issued: Vec<DateTime<Utc>>,
    numbers: u32,
    challenges: BTreeMap<u8, ModelChallenge>,
    signed_in: Option<DateTime<Utc>>,
}

impl Model {
    /// A registration that does not exist yet.
    pub fn new(policy: CodePolicy) -> Self {
        Self {
            policy,
            life: Life::Absent,
            code: None,
            issued: Vec::new(),
            numbers: 0,
            challenges: BTreeMap::new(),
            signed_in: None,
        }
    }

    /// The policy the model applies.
    pub fn policy(&self) -> &CodePolicy {
        &self.policy
    }

    /// Where the registration is in its life.
    pub fn life(&self) -> Life {
        self.life
    }

    /// The pending code, if one may still be checked or sent.
    pub fn code(&self) -> Option<&ModelCode> {
        self.code.as_ref()
    }

    /// When each registration code was issued, oldest first.
    pub fn issued(&self) -> &[DateTime<Utc>] {
        &self.issued
    }

    /// The sign-in challenge of binding `b`, open or closed.
    pub fn challenge(&self, b: u8) -> Option<&ModelChallenge> {
        self.challenges.get(&b)
    }

    /// When a sign-in last succeeded.
    pub fn signed_in(&self) -> Option<DateTime<Utc>> {
        self.signed_in
    }

    fn issue(&mut self, now: DateTime<Utc>) {
        self.issued.push(now);
        self.numbers += 1;
        self.code = Some(ModelCode {
            number: self.numbers,
            expires_at: now + chrono::Duration::from_std(self.policy.lifetime()).unwrap(),
            failures: 0,
            sent: false,
        });
    }

    fn next_code_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut at = now;
        if let Some(last) = self.issued.last() {
            at = at.max(*last + chrono::Duration::from_std(self.policy.resend_interval()).unwrap());
        }
        let hour = chrono::Duration::hours(1);
        let recent: Vec<_> = self.issued.iter().filter(|t| **t > now - hour).collect();
        let max = self.policy.max_codes_per_hour() as usize;
        if recent.len() >= max {
            at = at.max(*recent[recent.len() - max] + hour);
        }
        at
    }

    /// What `step` must do at `now`; the model moves on accordingly.
    pub fn step(&mut self, step: Step, now: DateTime<Utc>) -> Outcome {
        use Life::*;
        let live = matches!(self.life, Unverified | Verified);
        match step {
            Step::Advance(_) => Outcome::default(),
            Step::Add(kind) => {
                if self.life != Absent {
                    return Outcome::err(ErrorKind::Other("INTERNAL"));
                }
                match kind {
                    AddKind::Verified => {
                        self.life = Verified;
                        Outcome::ok(&[ADDED, VERIFIED])
                    }
                    AddKind::Send | AddKind::Return => {
                        self.life = Unverified;
                        self.issue(now);
                        Outcome::ok(&[ADDED, CODE_ADDED])
                    }
                }
            }
            Step::VerifyOdd(odd) if !odd.in_bounds() => {
                Outcome::err(ErrorKind::InvalidArgument("code"))
            }
            Step::VerifyRight | Step::VerifyWrong | Step::VerifyOdd(_) => {
                if !live {
                    return Outcome::err(ErrorKind::RegistrationNotFound);
                }
                if self.life == Verified {
                    return Outcome::err(ErrorKind::FailedPrecondition(
                        Precondition::AlreadyVerified,
                    ));
                }
                let max = self.policy.max_failed_checks();
                let Some(code) = self.code.as_mut() else {
                    return Outcome::err(ErrorKind::FailedPrecondition(Precondition::NoActiveCode));
                };
                if code.failures >= max {
                    return Outcome::err(ErrorKind::FailedPrecondition(
                        Precondition::TooManyAttempts,
                    ));
                }
                if now >= code.expires_at {
                    return Outcome::err(ErrorKind::FailedPrecondition(Precondition::CodeExpired));
                }
                if step == Step::VerifyRight {
                    self.life = Verified;
                    self.code = None;
                    Outcome::ok(&[VERIFIED])
                } else {
                    code.failures += 1;
                    Outcome {
                        events: vec![CHECK_FAILED.to_owned()],
                        error: Some(ErrorKind::WrongCode),
                    }
                }
            }
            Step::Resend(_) => {
                if !live {
                    return Outcome::err(ErrorKind::RegistrationNotFound);
                }
                if self.life == Verified {
                    return Outcome::err(ErrorKind::FailedPrecondition(
                        Precondition::AlreadyVerified,
                    ));
                }
                let at = self.next_code_at(now);
                if at > now {
                    return Outcome::err(ErrorKind::RateLimited((at - now).to_std().unwrap()));
                }
                self.issue(now);
                Outcome::ok(&[CODE_ADDED])
            }
            Step::RecordCodeSent { stale } => {
                if !live {
                    return Outcome::err(ErrorKind::RegistrationNotFound);
                }
                let reported = self.reported_number(stale);
                if let Some(challenge) = self.challenges.values_mut().find(|c| c.number == reported)
                {
                    if challenge.sent {
                        return Outcome::ok(&[]);
                    }
                    challenge.sent = true;
                    return Outcome::ok(&[CHALLENGE_SENT]);
                }
                if self.life == Verified {
                    return Outcome::err(ErrorKind::FailedPrecondition(
                        Precondition::AlreadyVerified,
                    ));
                }
                let reported = self.reported_number(stale);
                match self.code.as_mut() {
                    Some(code) if code.number == reported && code.sent => Outcome::ok(&[]),
                    Some(code) if code.number == reported => {
                        code.sent = true;
                        Outcome::ok(&[CODE_SENT])
                    }
                    _ => Outcome::err(ErrorKind::FailedPrecondition(Precondition::CodeSuperseded)),
                }
            }
            Step::Remove => {
                if !live {
                    return Outcome::err(ErrorKind::RegistrationNotFound);
                }
                self.life = Removed;
                self.code = None;
                self.challenges.clear();
                Outcome::ok(&[REMOVED])
            }
            Step::Challenge { binding, .. } => {
                if !live {
                    return Outcome::err(ErrorKind::RegistrationNotFound);
                }
                if self.life != Verified {
                    return Outcome::err(ErrorKind::FailedPrecondition(Precondition::NotVerified));
                }
                self.numbers += 1;
                self.challenges.insert(
                    binding,
                    ModelChallenge {
                        number: self.numbers,
                        expires_at: now
                            + chrono::Duration::from_std(self.policy.lifetime()).unwrap(),
                        failures: 0,
                        sent: false,
                        life: ChallengeLife::Open,
                    },
                );
                Outcome::ok(&[CHALLENGE_ISSUED])
            }
            Step::Check { on, .. } | Step::CheckWrong { on } => {
                if !live {
                    return Outcome::err(ErrorKind::RegistrationNotFound);
                }
                if self.life != Verified {
                    return Outcome::err(ErrorKind::FailedPrecondition(Precondition::NotVerified));
                }
                let max = self.policy.max_failed_checks();
                let Some(challenge) = self.challenges.get_mut(&on) else {
                    return Outcome {
                        events: vec![CHALLENGE_CHECK_FAILED.to_owned()],
                        error: Some(ErrorKind::WrongCode),
                    };
                };
                let closed = match challenge.life {
                    ChallengeLife::Open if challenge.failures >= max => {
                        Some(Precondition::TooManyAttempts)
                    }
                    ChallengeLife::Open => None,
                    ChallengeLife::Succeeded => Some(Precondition::ChallengeUsed),
                    ChallengeLife::Burnt => Some(Precondition::TooManyAttempts),
                    ChallengeLife::Expired => Some(Precondition::CodeExpired),
                };
                if let Some(reason) = closed {
                    return Outcome::err(ErrorKind::FailedPrecondition(reason));
                }
                if now >= challenge.expires_at {
                    challenge.life = ChallengeLife::Expired;
                    return Outcome {
                        events: vec![CHALLENGE_EXPIRED.to_owned()],
                        error: Some(ErrorKind::FailedPrecondition(Precondition::CodeExpired)),
                    };
                }
                if step == (Step::Check { code_of: on, on }) {
                    challenge.life = ChallengeLife::Succeeded;
                    self.signed_in = Some(now);
                    return Outcome::ok(&[CHALLENGE_SUCCEEDED]);
                }
                challenge.failures += 1;
                let mut events = vec![CHALLENGE_CHECK_FAILED.to_owned()];
                if challenge.failures >= max {
                    challenge.life = ChallengeLife::Burnt;
                    events.push(CHALLENGE_BURNT.to_owned());
                }
                Outcome {
                    events,
                    error: Some(ErrorKind::WrongCode),
                }
            }
        }
    }

    /// The number a `RecordCodeSent` step reports: the latest code's (a registration code's
    /// or a challenge's: one count), or the one before it.
    pub fn reported_number(&self, stale: bool) -> u32 {
        let current = self.numbers;
        if stale {
            current.saturating_sub(1)
        } else {
            current
        }
    }
}

/// A step aimed at one registration of one user, for scenarios of several users with several
/// registrations each. Users and registrations are indexes: user `u` is the `u`-th user a
/// driver knows, registration `r` that user's `r`-th registration slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aimed {
    /// Which user.
    pub user: usize,
    /// Which of the user's registrations.
    pub registration: usize,
    /// What to do. [`Step::Advance`] moves the one clock all registrations share.
    pub step: Step,
}

/// The reference model of many registrations: one [`Model`] per (user, registration) slot,
/// each following its own rules (no rule of this model spans registrations; the abuse rules
/// that do, budgets and the user lock, are off in the scenarios these models describe).
#[derive(Debug, Clone)]
pub struct FleetModel {
    policy: CodePolicy,
    slots: std::collections::BTreeMap<(usize, usize), Model>,
}

impl FleetModel {
    /// No registration yet.
    pub fn new(policy: CodePolicy) -> Self {
        Self {
            policy,
            slots: Default::default(),
        }
    }

    /// What `aimed` must do at `now`; the slot's model moves on accordingly.
    pub fn step(&mut self, aimed: Aimed, now: DateTime<Utc>) -> Outcome {
        let policy = self.policy;
        self.slots
            .entry((aimed.user, aimed.registration))
            .or_insert_with(|| Model::new(policy))
            .step(aimed.step, now)
    }

    /// The model of one slot, if a step was ever aimed at it.
    pub fn slot(&self, user: usize, registration: usize) -> Option<&Model> {
        self.slots.get(&(user, registration))
    }

    /// Every slot's model, by (user, registration).
    pub fn slots(&self) -> impl Iterator<Item = ((usize, usize), &Model)> {
        self.slots.iter().map(|(k, m)| (*k, m))
    }
}

/// A code that differs from `code` in every position (same length).
pub fn wrong_code(code: &str) -> String {
    code.chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect()
}

/// Runs steps through the real aggregate, as the command service would (input bounds first,
/// then `decide`, then `apply`), keeping every event and every code it issued.
pub struct AggregateSim {
    /// The policy in force.
    pub policy: CodePolicy,
    /// The current time.
    pub now: DateTime<Utc>,
    /// Every event recorded so far.
    pub events: Vec<Event>,
    /// The state applied step by step.
    pub state: Registration,
    /// Every code issued, in order (registration codes and sign-in codes).
    pub codes: Vec<String>,
    /// The latest sign-in code issued under each binding.
    pub challenge_codes: BTreeMap<u8, String>,
    /// The latest registration code.
    pending: Option<String>,
    keys: CodeKeyRing,
    registration: RegistrationId,
    user: UserId,
    counter: u64,
}

impl AggregateSim {
    /// A simulator at a whole second (so no timestamp carries digits a code could match).
    pub fn new(policy: CodePolicy) -> Self {
        Self {
            policy,
            now: "2026-01-01T00:00:00Z".parse().expect("valid time"),
            events: Vec::new(),
            state: Registration::default(),
            codes: Vec::new(),
            challenge_codes: BTreeMap::new(),
            pending: None,
            keys: CodeKeyRing::new(CodeKey::new(KeyId::new("sim"), &[3; 32])),
            registration: RegistrationId::parse("otp_sms_id", "sim-registration").expect("id"),
            user: UserId::parse("id", "sim-user").expect("id"),
            counter: 0,
        }
    }

    /// The same simulator for `registration` of `user` (by default `sim-registration` of
    /// `sim-user`), e.g. to feed a host's projection events of several simulated registrations.
    pub fn with_ids(mut self, registration: RegistrationId, user: UserId) -> Self {
        self.registration = registration;
        self.user = user;
        self
    }

    /// The registration the simulator runs.
    pub fn registration(&self) -> &RegistrationId {
        &self.registration
    }

    /// The user the registration belongs to.
    pub fn user(&self) -> &UserId {
        &self.user
    }

    /// A fresh code; deterministic (splitmix64) so failures replay.
    fn fresh_code(&mut self) -> VerificationCode {
        self.counter += 1;
        let mut z = self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let digits = format!(
            "{:0width$}",
            z % 10u64.pow(self.policy.length() as u32),
            width = self.policy.length()
        );
        VerificationCode::from_input(digits).expect("digits")
    }

    fn pending_code(&self) -> String {
        self.pending
            .clone()
            .unwrap_or_else(|| "12345678".to_owned())
    }

    /// The latest sign-in code of binding `b`, or a code no challenge has.
    fn challenge_code(&self, b: u8) -> String {
        self.challenge_codes
            .get(&b)
            .cloned()
            .unwrap_or_else(|| "12345678".to_owned())
    }

    /// Runs one step; returns its outcome and, when it failed, the error itself.
    pub fn step(&mut self, step: Step) -> (Outcome, Option<Error>) {
        let command = match step {
            Step::Advance(secs) => {
                self.now += chrono::Duration::seconds(i64::from(secs));
                return (Outcome::default(), None);
            }
            Step::Add(kind) => {
                let verification = match kind {
                    AddKind::Verified => AddVerification::AlreadyVerified,
                    AddKind::Send => AddVerification::SendCode(self.fresh_code()),
                    AddKind::Return => AddVerification::ReturnCode(self.fresh_code()),
                };
                Command::Add {
                    user: self.user.clone(),
                    organization: OrganizationId::parse("organization", "sim-org").expect("id"),
                    phone: Phone::parse("+41791234567").expect("phone"),
                    verification,
                }
            }
            Step::VerifyRight | Step::VerifyWrong | Step::VerifyOdd(_) => {
                let text = match step {
                    Step::VerifyRight => self.pending_code(),
                    Step::VerifyWrong => wrong_code(&self.pending_code()),
                    Step::VerifyOdd(odd) => odd.text(),
                    _ => unreachable!("matched above"),
                };
                match VerificationCode::from_input(text) {
                    Ok(code) => Command::Verify { code },
                    Err(e) => return (Outcome::err(ErrorKind::from(&e)), Some(e)),
                }
            }
            Step::Resend(delivery) => Command::ResendCode {
                code: self.fresh_code(),
                delivery,
            },
            Step::RecordCodeSent { stale } => {
                let current = self.state.codes_issued;
                Command::RecordCodeSent {
                    number: if stale {
                        current.saturating_sub(1)
                    } else {
                        current
                    },
                }
            }
            Step::Remove => Command::Remove,
            Step::Challenge { binding, delivery } => Command::IssueChallenge {
                code: self.fresh_code(),
                delivery,
                binding: binding_digest(binding),
            },
            Step::Check { code_of, on } => Command::CheckChallenge {
                code: VerificationCode::from_input(self.challenge_code(code_of)).expect("digits"),
                binding: binding_digest(on),
            },
            Step::CheckWrong { on } => Command::CheckChallenge {
                code: VerificationCode::from_input(wrong_code(&self.challenge_code(on)))
                    .expect("digits"),
                binding: binding_digest(on),
            },
        };
        let ctx = Context {
            registration: &self.registration,
            user: &self.user,
            now: self.now,
            policy: &self.policy,
            keys: &self.keys,
            test_code: None,
        };
        let decision = self.state.decide(&command, &ctx);
        let (events, error) = match decision {
            Decision::Accepted(events) => (events, None),
            Decision::Rejected { events, error } => (events, Some(error)),
        };
        for event in &events {
            self.state = std::mem::take(&mut self.state).apply(event);
            match (event, &command) {
                (
                    Event::CodeAdded(_),
                    Command::Add {
                        verification:
                            AddVerification::SendCode(code) | AddVerification::ReturnCode(code),
                        ..
                    }
                    | Command::ResendCode { code, .. },
                ) => {
                    self.codes.push(code.expose().to_owned());
                    self.pending = Some(code.expose().to_owned());
                }
                (Event::ChallengeIssued(_), Command::IssueChallenge { code, .. }) => {
                    self.codes.push(code.expose().to_owned());
                    if let Step::Challenge { binding, .. } = step {
                        self.challenge_codes
                            .insert(binding, code.expose().to_owned());
                    }
                }
                _ => {}
            }
        }
        self.events.extend(events.iter().cloned());
        let outcome = Outcome {
            events: events.iter().map(|e| e.event_type().to_owned()).collect(),
            error: error.as_ref().map(ErrorKind::from),
        };
        (outcome, error)
    }
}
