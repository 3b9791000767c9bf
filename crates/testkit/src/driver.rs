//! Runs scenario steps through the real [`CommandService`] on any event store, so a property
//! test can hold a store, or a host's projection fed by it, against the reference model.
//!
//! The driver owns everything around the service: a [`ManualClock`] it moves on
//! [`Step::Advance`], users `user-0` … `user-{n-1}` of organization `org-1` in instance
//! `inst-1` (and `admin`, holding `user.write`, who adds already-verified phones), a
//! [`RecordingSender`] for SMS, and the lenient abuse policy of scenario tests: no send
//! budgets, no registration cap, users may ask for their own code in the response. The code
//! policy is [`CodePolicy::default`] unless [`ServiceDriver::with_code_policy`] says otherwise.
//!
//! ## The notifier's place
//!
//! A step that sends a code (`Add(Send)`, `Resend(Send)`) is followed at once by one notifier
//! pass ([`CommandService::deliver_pending`]), as a running server would do moments later: the
//! SMS reaches the [`RecordingSender`] (which is how the driver learns the code for a later
//! `VerifyRight`) and the pass records `code sent`. [`DriverOutcome::outcome`] holds only what
//! the step itself recorded, which is what [`Model::step`](crate::scenario::Model::step)
//! predicts; [`DriverOutcome::notified`] holds what the pass recorded, which is what the
//! model predicts for `RecordCodeSent { stale: false }` right after the step.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use otp_sms_core::ManualClock;
//! use otp_sms_testkit::driver::ServiceDriver;
//! use otp_sms_testkit::scenario::{AddKind, Aimed, FleetModel, Step};
//!
//! let clock = Arc::new(ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap()));
//! let store = Arc::new(otp_sms_memory::MemoryStore::with_clock(clock.clone()));
//! let mut driver = ServiceDriver::new(store, clock, 2);
//! let mut model = FleetModel::new(driver.code_policy());
//! for step in [Step::Add(AddKind::Send), Step::VerifyWrong, Step::VerifyRight] {
//!     let aimed = Aimed { user: 1, registration: 0, step };
//!     let expected = model.step(aimed, driver.now());
//!     let ran = driver.run(aimed).await;
//!     assert_eq!(ran.outcome, expected);
//!     if !ran.notified.is_empty() {
//!         // The notifier's pass: what the model predicts for the code's report.
//!         let sent = Aimed { step: Step::RecordCodeSent { stale: false }, ..aimed };
//!         assert_eq!(model.step(sent, driver.now()).events, ran.notified);
//!     }
//! }
//! # });
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use otp_sms_core::{
    AbusePolicy, AddRequest, Caller, ChallengeRequest, CheckRequest, Clock, CodeKey, CodeKeyRing,
    CodePolicy, CommandService, Delivery, Error, Event, EventPayload, EventStore, InstanceId,
    KeyId, ManualClock, OrganizationId, PhoneVerification, PrincipalId, Registration,
    RegistrationId, RegistrationRequest, UserRecord, VerifyRequest, USER_WRITE,
};

use crate::doubles::{RecordingSender, StaticAuthorizer, StaticUsers};
use crate::scenario::{binding_name, wrong_code, AddKind, Aimed, ErrorKind, Outcome, Step};

/// The instance every driver's users live in.
pub const INSTANCE: &str = "inst-1";
/// The organization of every driver's users.
pub const ORGANIZATION: &str = "org-1";
/// The principal holding `user.write`, who adds already-verified phones.
pub const ADMIN: &str = "admin";

/// What one step did.
#[derive(Debug)]
pub struct DriverOutcome {
    /// The event types the step recorded and its error, as the model states them.
    pub outcome: Outcome,
    /// The event types the notifier pass after a send recorded (`code sent`), if it ran.
    pub notified: Vec<String>,
    /// The step's error itself.
    pub error: Option<Error>,
}

/// One registration slot the driver has added.
#[derive(Debug, Clone)]
struct Slot {
    registration: RegistrationId,
    /// The code a `VerifyRight` sends: the last one the response or an SMS carried.
    code: String,
    /// The sign-in code of each binding: the last one a challenge's response or SMS carried.
    challenge_codes: HashMap<u8, String>,
}

impl Slot {
    fn challenge_code(&self, b: u8) -> String {
        self.challenge_codes
            .get(&b)
            .cloned()
            .unwrap_or_else(|| "12345678".to_owned())
    }
}

/// Runs [`Aimed`] steps (or single-registration [`Step`]s) through a [`CommandService`].
pub struct ServiceDriver {
    service: CommandService,
    store: Arc<dyn EventStore<Event>>,
    clock: Arc<ManualClock>,
    sender: Arc<RecordingSender>,
    policy: CodePolicy,
    instance: InstanceId,
    users: Vec<UserRecord>,
    slots: HashMap<(usize, usize), Slot>,
}

impl ServiceDriver {
    /// A driver over `store` with `users` users (at least one), on `clock`. Give a store
    /// that keeps time by the same clock (`MemoryStore::with_clock`), or one on the database's
    /// clock; the service's own times come from `clock`.
    pub fn new(store: Arc<dyn EventStore<Event>>, clock: Arc<ManualClock>, users: usize) -> Self {
        let instance: InstanceId = INSTANCE.parse().expect("a valid instance");
        let organization: OrganizationId = ORGANIZATION.parse().expect("a valid organization");
        let records: Vec<UserRecord> = (0..users.max(1))
            .map(|i| {
                UserRecord::new(
                    format!("user-{i}").parse().expect("a valid user id"),
                    organization.clone(),
                )
            })
            .collect();
        let directory = records
            .iter()
            .fold(StaticUsers::new(), |d, u| {
                d.with_user(INSTANCE, u.id.as_str(), ORGANIZATION)
            })
            .with_user(INSTANCE, ADMIN, ORGANIZATION);
        let authorizer = StaticAuthorizer::new().grant(INSTANCE, ADMIN, ORGANIZATION, USER_WRITE);
        let policy = CodePolicy::default();
        let service = Self::build_service(
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::new(directory),
            Arc::new(authorizer),
            policy,
        );
        Self {
            service,
            store,
            clock,
            sender: Arc::new(RecordingSender::new()),
            policy,
            instance,
            users: records,
            slots: HashMap::new(),
        }
    }

    fn build_service(
        store: Arc<dyn EventStore<Event>>,
        clock: Arc<ManualClock>,
        users: Arc<StaticUsers>,
        authorizer: Arc<StaticAuthorizer>,
        policy: CodePolicy,
    ) -> CommandService {
        let keys = CodeKeyRing::new(CodeKey::new(KeyId::new("driver"), &[0x5a; 32]));
        let mut abuse = AbusePolicy::unlimited();
        abuse.allow_self_return_code = true;
        CommandService::new(store, users, authorizer, keys)
            .with_clock(clock)
            .with_policy(policy)
            .with_abuse_policy(abuse)
            .expect("the unlimited policy is valid")
    }

    /// The same driver with `policy` for codes (length, life, attempts, resend limits).
    /// Call it before the first step.
    pub fn with_code_policy(mut self, policy: CodePolicy) -> Self {
        self.policy = policy;
        self.service = self.service.with_policy(policy);
        self
    }

    /// The code policy in force: give it to the model.
    pub fn code_policy(&self) -> CodePolicy {
        self.policy
    }

    /// The service the steps run through.
    pub fn service(&self) -> &CommandService {
        &self.service
    }

    /// The store the service writes to.
    pub fn store(&self) -> &Arc<dyn EventStore<Event>> {
        &self.store
    }

    /// Where SMS went.
    pub fn sender(&self) -> &RecordingSender {
        &self.sender
    }

    /// The driver's clock, now.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The instance of every step.
    pub fn instance(&self) -> &InstanceId {
        &self.instance
    }

    /// The registration a slot names, once added.
    pub fn registration(&self, user: usize, registration: usize) -> Option<&RegistrationId> {
        self.slots
            .get(&(user, registration))
            .map(|s| &s.registration)
    }

    /// The caller of user `user` (acting for themselves).
    pub fn caller(&self, user: usize) -> Caller {
        Caller::new(
            self.instance.clone(),
            PrincipalId::parse("principal", self.user(user).id.as_str()).expect("valid"),
        )
    }

    fn user(&self, user: usize) -> &UserRecord {
        &self.users[user % self.users.len()]
    }

    async fn stream_len(&self, slot: Option<&Slot>) -> usize {
        match slot {
            Some(s) => self
                .store
                .read_stream(&CommandService::stream_id(&self.instance, &s.registration))
                .await
                .map_or(0, |events| events.len()),
            None => 0,
        }
    }

    async fn stream_types(&self, slot: Option<&Slot>, from: usize) -> Vec<String> {
        let Some(s) = slot else {
            return Vec::new();
        };
        let stream = CommandService::stream_id(&self.instance, &s.registration);
        let events = self
            .store
            .read_stream(&stream)
            .await
            .expect("the driver reads the stream");
        events
            .get(from..)
            .unwrap_or_default()
            .iter()
            .map(|e| e.event.event_type().to_owned())
            .collect()
    }

    /// Runs one single-registration step (user 0, registration 0).
    pub async fn run_step(&mut self, step: Step) -> DriverOutcome {
        self.run(Aimed {
            user: 0,
            registration: 0,
            step,
        })
        .await
    }

    /// Runs one step: the command, then (after a successful send) one notifier pass.
    pub async fn run(&mut self, aimed: Aimed) -> DriverOutcome {
        let key = (aimed.user, aimed.registration);
        let before = self.stream_len(self.slots.get(&key)).await;
        let result = self.command(aimed).await;
        let slot = self.slots.get(&key).cloned();
        // An add starts a new stream: count from its start.
        let from = if matches!(aimed.step, Step::Add(_)) {
            0
        } else {
            before
        };
        let events = self.stream_types(slot.as_ref(), from).await;
        let sends = matches!(
            aimed.step,
            Step::Add(AddKind::Send)
                | Step::Resend(Delivery::Send)
                | Step::Challenge {
                    delivery: Delivery::Send,
                    ..
                }
        );
        let mut notified = Vec::new();
        if sends && result.is_ok() {
            let after = from + events.len();
            self.service
                .deliver_pending(&*self.sender, 100, Duration::from_secs(60))
                .await
                .expect("the notifier pass");
            let slot = slot.expect("a send has a registration");
            let sms = self
                .sender
                .sent()
                .into_iter()
                .rev()
                .find(|s| s.registration == slot.registration)
                .expect("the SMS went out");
            if let Some(s) = self.slots.get_mut(&key) {
                let code = sms.code.expose().to_owned();
                match aimed.step {
                    Step::Challenge { binding, .. } => {
                        s.challenge_codes.insert(binding, code);
                    }
                    _ => s.code = code,
                }
            }
            notified = self.stream_types(Some(&slot), after).await;
        }
        let error = result.err();
        DriverOutcome {
            outcome: Outcome {
                events,
                error: error.as_ref().map(ErrorKind::from),
            },
            notified,
            error,
        }
    }

    fn target(&self, key: (usize, usize)) -> RegistrationRequest {
        RegistrationRequest {
            user_id: self.user(key.0).id.to_string(),
            organization: None,
            registration_id: self
                .slots
                .get(&key)
                .map_or_else(|| "none".to_owned(), |s| s.registration.to_string()),
        }
    }

    async fn command(&mut self, aimed: Aimed) -> Result<(), Error> {
        let key = (aimed.user, aimed.registration);
        let caller = self.caller(aimed.user);
        match aimed.step {
            Step::Advance(secs) => {
                self.clock
                    .advance(chrono::Duration::seconds(i64::from(secs)));
                Ok(())
            }
            Step::Add(kind) => {
                let (verification, adder) = match kind {
                    AddKind::Send => (PhoneVerification::SendCode, caller),
                    AddKind::Return => (PhoneVerification::ReturnCode, caller),
                    // Only holders of user.write may vouch for a number.
                    AddKind::Verified => (
                        PhoneVerification::IsVerified(true),
                        Caller::new(
                            self.instance.clone(),
                            PrincipalId::parse("principal", ADMIN).expect("valid"),
                        ),
                    ),
                };
                let added = self
                    .service
                    .add(
                        &adder,
                        AddRequest {
                            user_id: self.user(aimed.user).id.to_string(),
                            organization: None,
                            // A number of its own per slot: +41 79 uuu rrrr.
                            phone: format!(
                                "+4179{:03}{:04}",
                                aimed.user % 1000,
                                aimed.registration % 10_000
                            ),
                            verification,
                        },
                    )
                    .await?;
                let code = added
                    .verification_code
                    .map_or_else(|| "12345678".to_owned(), |c| c.expose().to_owned());
                self.slots.insert(
                    key,
                    Slot {
                        registration: added.registration_id,
                        code,
                        challenge_codes: HashMap::new(),
                    },
                );
                Ok(())
            }
            Step::VerifyRight | Step::VerifyWrong | Step::VerifyOdd(_) => {
                let pending = self
                    .slots
                    .get(&key)
                    .map_or_else(|| "12345678".to_owned(), |s| s.code.clone());
                let code = match aimed.step {
                    Step::VerifyRight => pending,
                    Step::VerifyWrong => wrong_code(&pending),
                    Step::VerifyOdd(odd) => odd.text(),
                    _ => unreachable!("matched above"),
                };
                let target = self.target(key);
                self.service
                    .verify(
                        &caller,
                        VerifyRequest {
                            user_id: target.user_id,
                            organization: None,
                            registration_id: target.registration_id,
                            code,
                        },
                    )
                    .await
                    .map(drop)
            }
            Step::Resend(delivery) => {
                let resent = self
                    .service
                    .resend_code(&caller, self.target(key), delivery)
                    .await?;
                if let (Some(code), Some(slot)) =
                    (resent.verification_code, self.slots.get_mut(&key))
                {
                    slot.code = code.expose().to_owned();
                }
                Ok(())
            }
            Step::RecordCodeSent { stale } => {
                let Some(slot) = self.slots.get(&key).cloned() else {
                    return Err(Error::RegistrationNotFound);
                };
                let stream = CommandService::stream_id(&self.instance, &slot.registration);
                let history = self.store.read_stream(&stream).await?;
                let state = Registration::from_events(history.iter().map(|e| &e.event));
                let number = if stale {
                    state.codes_issued.saturating_sub(1)
                } else {
                    state.codes_issued
                };
                let user = self.user(aimed.user).clone();
                self.service
                    .record_code_sent(&self.instance, &user, &slot.registration, number)
                    .await
                    .map(drop)
            }
            Step::Remove => self
                .service
                .remove(&caller, self.target(key))
                .await
                .map(drop),
            Step::Challenge { binding, delivery } => {
                let target = self.target(key);
                let mut request = ChallengeRequest::new(target.user_id, binding_name(binding))
                    .for_registration(target.registration_id);
                if delivery == Delivery::Return {
                    request = request.returning_code();
                }
                let challenged = self.service.challenge(&caller, request).await?;
                if let (Some(code), Some(slot)) = (challenged.code, self.slots.get_mut(&key)) {
                    slot.challenge_codes
                        .insert(binding, code.expose().to_owned());
                }
                Ok(())
            }
            Step::Check { .. } | Step::CheckWrong { .. } => {
                let (code, on) = match (aimed.step, self.slots.get(&key)) {
                    (Step::Check { code_of, on }, Some(slot)) => (slot.challenge_code(code_of), on),
                    (Step::CheckWrong { on }, Some(slot)) => {
                        (wrong_code(&slot.challenge_code(on)), on)
                    }
                    (Step::Check { on, .. } | Step::CheckWrong { on }, None) => {
                        ("12345678".to_owned(), on)
                    }
                    _ => unreachable!("matched above"),
                };
                let target = self.target(key);
                let request = CheckRequest::new(target.user_id, binding_name(on), code)
                    .for_registration(target.registration_id);
                self.service.check(&caller, request).await.map(drop)
            }
        }
    }
}
