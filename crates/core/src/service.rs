//! The command service: validate, look the user up, authorize, load the stream, rebuild,
//! decide, append with the expected version, and retry a bounded number of times on conflict.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{AddVerification, Command, Context, Decision, Registration, Status};
use crate::code::{CodePolicy, VerificationCode};
use crate::error::Error;
use crate::event::{Delivery, Event, AGGREGATE_TYPE};
use crate::ids::{InstanceId, OrganizationId, PrincipalId, RegistrationId, UserId};
use crate::keys::{CodeBinding, CodeKeyRing, SealedCode};
use crate::phone::Phone;
use crate::ports::{
    Authenticator, Authorizer, Clock, IdGenerator, Sms, SmsSender, SystemClock, UserDirectory,
    UserRecord, UuidV7Ids, USER_WRITE,
};
use crate::store::{
    Append, EventStore, ExpectedVersion, NewEvent, NewOutboxMessage, Recorded, RecordedEvent,
    RecordedMeta, StoreError, StreamId,
};
use crate::stream_cache::StreamCache;

/// Who calls, and in which instance. The host resolves both from the request (the instance
/// from its `instance` field or host name, the principal from the credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant.
    pub instance: InstanceId,
    /// The authenticated principal.
    pub principal: PrincipalId,
}

/// The request's optional `instance`: which instance the caller expects to act in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceRef {
    /// `instance.id`.
    Id(String),
    /// `instance.domain`.
    Domain(String),
}

/// Resolves a request's caller, the same way for every adapter: UNAUTHENTICATED unless the
/// bearer token names a caller; NOT_FOUND if the request names an instance that is not the
/// caller's (a token of one tenant never acts in another).
pub async fn authenticate(
    auth: &dyn Authenticator,
    bearer_token: Option<&str>,
    instance: Option<InstanceRef>,
) -> Result<Caller, Error> {
    let token = bearer_token
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(Error::Unauthenticated)?;
    let caller = auth
        .authenticate(token)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let named = match instance {
        None => None,
        Some(InstanceRef::Id(id)) => Some(InstanceId::parse("instance.id", id)?),
        Some(InstanceRef::Domain(domain)) => Some(
            auth.instance_by_domain(&domain)
                .await?
                .ok_or(Error::InstanceNotFound)?,
        ),
    };
    if named.is_some_and(|instance| instance != caller.instance) {
        return Err(Error::InstanceNotFound);
    }
    Ok(caller)
}

/// The bearer token of an `Authorization` header value (`Bearer <token>`, scheme in any case).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The request's optional `organization`: where the caller expects the user to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrganizationRef {
    /// `organization.org_id`.
    Id(String),
    /// `organization.org_domain`.
    Domain(String),
}

/// The `verification` oneof of `SetPhone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PhoneVerification {
    /// `send_code`, also the default when nothing is set.
    #[default]
    SendCode,
    /// `return_code`.
    ReturnCode,
    /// `is_verified`, which must be `true` when set.
    IsVerified(bool),
}

/// `AddOTPSMSAuthenticator`, with fields as the caller sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddRequest {
    /// `id`: the user.
    pub user_id: String,
    /// `organization`.
    pub organization: Option<OrganizationRef>,
    /// `phone.number`.
    pub phone: String,
    /// `phone.verification`.
    pub verification: PhoneVerification,
}

/// `VerifyOTPSMSRegistration`, with fields as the caller sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    /// `id`: the user.
    pub user_id: String,
    /// `organization`.
    pub organization: Option<OrganizationRef>,
    /// `otp_sms_id`.
    pub registration_id: String,
    /// `code`. Never logged: `Debug` of this request would show it, so do not log requests.
    pub code: String,
}

/// `RemoveOTPSMSAuthenticator` (and the target of a resend), as the caller sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRequest {
    /// `id`: the user.
    pub user_id: String,
    /// `organization`.
    pub organization: Option<OrganizationRef>,
    /// `otp_sms_id`.
    pub registration_id: String,
}

/// `zitadel.object.v3alpha.OwnerType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OwnerType {
    /// `OWNER_TYPE_UNSPECIFIED` = 0.
    Unspecified = 0,
    /// `OWNER_TYPE_SYSTEM` = 1.
    System = 1,
    /// `OWNER_TYPE_INSTANCE` = 2.
    Instance = 2,
    /// `OWNER_TYPE_ORG` = 3.
    Org = 3,
}

/// `zitadel.object.v3alpha.Owner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `type`.
    pub owner_type: OwnerType,
    /// `id`.
    pub id: String,
}

/// `zitadel.resources.object.v3alpha.Details`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Details {
    /// `id`: the registration id.
    pub id: RegistrationId,
    /// `created`: time of the registration's first event.
    pub created: DateTime<Utc>,
    /// `changed`: time of the last event applied.
    pub changed: DateTime<Utc>,
    /// `owner`: the user's organization.
    pub owner: Owner,
}

/// The result of an add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResponse {
    /// `details`.
    pub details: Details,
    /// `otp_sms_id`.
    pub registration_id: RegistrationId,
    /// `verification_code`: present only with `return_code`.
    pub verification_code: Option<VerificationCode>,
}

/// The result of a resend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResendResponse {
    /// `details`.
    pub details: Details,
    /// The new code, when it was asked for with [`Delivery::Return`].
    pub verification_code: Option<VerificationCode>,
}

/// What the notifier did in one pass over the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeliveryReport {
    /// Codes handed to the SMS sender and recorded as sent.
    pub sent: usize,
    /// Messages deleted unsent: code expired, replaced, already sent, registration verified
    /// or removed, or the message unreadable.
    pub dropped: usize,
    /// Messages left for a later attempt because the sender or the store failed.
    pub failed: usize,
}

/// The body of a delivery outbox message. The code is encrypted; the message is deleted once
/// the SMS is handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CodeDelivery {
    /// The tenant.
    pub instance: InstanceId,
    /// The user.
    pub user: UserId,
    /// The user's organization.
    pub organization: OrganizationId,
    /// The registration.
    pub registration: RegistrationId,
    /// Which code.
    pub number: u32,
    /// Where to send it.
    pub phone: Phone,
    /// The code, encrypted and bound to registration and number.
    pub sealed: SealedCode,
    /// After this the code is dropped, not sent late.
    pub expires_at: DateTime<Utc>,
}

/// Runs the three API calls (and resend, delivery) against the ports.
///
/// ```
/// # use std::sync::Arc;
/// # use otp_sms_core::*;
/// # fn build(store: Arc<dyn EventStore<Event>>, users: Arc<dyn UserDirectory>, authz: Arc<dyn Authorizer>) {
/// let keys = CodeKeyRing::new(CodeKey::new(KeyId::new("k1"), &[42u8; 32]));
/// let service = CommandService::new(store, users, authz, keys)
///     .with_policy(CodePolicy::default().with_length(7).unwrap());
/// # }
/// ```
#[derive(Clone)]
pub struct CommandService {
    store: Arc<dyn EventStore<Event>>,
    users: Arc<dyn UserDirectory>,
    authorizer: Arc<dyn Authorizer>,
    keys: Arc<CodeKeyRing>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdGenerator>,
    policy: CodePolicy,
    max_attempts: u32,
    cache: Option<Arc<StreamCache>>,
}

impl CommandService {
    /// Default attempts per command before a write conflict becomes ABORTED.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;

    /// A service with the system clock, UUID v7 ids and the default [`CodePolicy`].
    pub fn new(
        store: Arc<dyn EventStore<Event>>,
        users: Arc<dyn UserDirectory>,
        authorizer: Arc<dyn Authorizer>,
        keys: CodeKeyRing,
    ) -> Self {
        Self {
            store,
            users,
            authorizer,
            keys: Arc::new(keys),
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidV7Ids),
            policy: CodePolicy::default(),
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            cache: None,
        }
    }

    /// Uses another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses another id generator.
    pub fn with_ids(mut self, ids: Arc<dyn IdGenerator>) -> Self {
        self.ids = ids;
        self
    }

    /// Uses another code policy.
    pub fn with_policy(mut self, policy: CodePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Attempts per command (at least 1) before a write conflict becomes ABORTED.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Keeps the confirmed histories of up to `capacity` recently read or written streams, so
    /// that a command on one of them skips the store's read (`0`: no cache, the default).
    ///
    /// Worth it where a read is a round trip (PostgreSQL: a verify after its add, on the same
    /// process, makes one round trip instead of two); with the in-memory store a read costs
    /// what the cache's look-up does. Safe when other processes write the same store: see
    /// [`StreamCache`] for why no answer is ever given from a stale history.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use otp_sms_core::*;
    /// # fn build(store: Arc<dyn EventStore<Event>>, users: Arc<dyn UserDirectory>, authz: Arc<dyn Authorizer>, keys: CodeKeyRing) {
    /// let service = CommandService::new(store, users, authz, keys)
    ///     .with_stream_cache(StreamCache::DEFAULT_CAPACITY);
    /// # }
    /// ```
    pub fn with_stream_cache(mut self, capacity: usize) -> Self {
        self.cache = (capacity > 0).then(|| Arc::new(StreamCache::new(capacity)));
        self
    }

    /// The stream cache, if the service keeps one.
    pub fn stream_cache(&self) -> Option<&StreamCache> {
        self.cache.as_deref()
    }

    /// The policy in force.
    pub fn policy(&self) -> &CodePolicy {
        &self.policy
    }

    /// The stream of a registration.
    pub fn stream_id(instance: &InstanceId, registration: &RegistrationId) -> StreamId {
        StreamId::new(
            instance.clone(),
            AGGREGATE_TYPE,
            registration.as_shared().clone(),
        )
    }

    /// `AddOTPSMSAuthenticator`: registers a phone and, unless it is added as verified,
    /// issues the first code (by SMS through the outbox, or in the response).
    pub async fn add(&self, caller: &Caller, req: AddRequest) -> Result<AddResponse, Error> {
        let user_id = UserId::parse("id", req.user_id)?;
        let phone = Phone::parse(&req.phone)?;
        if req.verification == PhoneVerification::IsVerified(false) {
            return Err(Error::invalid(
                "phone.is_verified",
                "must be true when set; omit it to send a code",
            ));
        }
        let organization = parse_org_ref(req.organization)?;
        let user = self.authorize(caller, &user_id, organization).await?;
        let fresh = (!matches!(req.verification, PhoneVerification::IsVerified(_)))
            .then(|| self.fresh_code());
        let verification = match (req.verification, fresh.clone()) {
            (PhoneVerification::ReturnCode, Some(code)) => AddVerification::ReturnCode(code),
            (PhoneVerification::SendCode, Some(code)) => AddVerification::SendCode(code),
            _ => AddVerification::AlreadyVerified,
        };
        let registration = self.ids.registration_id();
        let command = Command::Add {
            user: user.id.clone(),
            organization: user.organization.clone(),
            phone,
            verification,
        };
        let details = self
            .execute(caller, &user, &registration, &command, fresh.as_ref())
            .await?;
        let verification_code = (req.verification == PhoneVerification::ReturnCode)
            .then_some(fresh)
            .flatten();
        Ok(AddResponse {
            details,
            registration_id: registration,
            verification_code,
        })
    }

    /// `VerifyOTPSMSRegistration`: checks the code; a wrong one is recorded and refused.
    ///
    /// Checks in this order: code bounds (INVALID_ARGUMENT), ids (INVALID_ARGUMENT), the user
    /// (NOT_FOUND), the caller's right (PERMISSION_DENIED), the registration (NOT_FOUND), its
    /// state (FAILED_PRECONDITION), the code (INVALID_ARGUMENT, recorded as `check failed`).
    pub async fn verify(&self, caller: &Caller, req: VerifyRequest) -> Result<Details, Error> {
        let code = VerificationCode::from_input(req.code)?;
        let user_id = UserId::parse("id", req.user_id)?;
        let registration = RegistrationId::parse("otp_sms_id", req.registration_id)?;
        let organization = parse_org_ref(req.organization)?;
        let user = self.authorize(caller, &user_id, organization).await?;
        let command = Command::Verify { code };
        self.execute(caller, &user, &registration, &command, None)
            .await
    }

    /// `RemoveOTPSMSAuthenticator`.
    pub async fn remove(
        &self,
        caller: &Caller,
        req: RegistrationRequest,
    ) -> Result<Details, Error> {
        let (user, registration) = self.target(caller, req).await?;
        self.execute(caller, &user, &registration, &Command::Remove, None)
            .await
    }

    /// Issues a new code (the old one becomes void), within the policy's rate limits
    /// (RESOURCE_EXHAUSTED beyond them).
    pub async fn resend_code(
        &self,
        caller: &Caller,
        req: RegistrationRequest,
        delivery: Delivery,
    ) -> Result<ResendResponse, Error> {
        let (user, registration) = self.target(caller, req).await?;
        let code = self.fresh_code();
        let command = Command::ResendCode {
            code: code.clone(),
            delivery,
        };
        let details = self
            .execute(caller, &user, &registration, &command, Some(&code))
            .await?;
        Ok(ResendResponse {
            details,
            verification_code: (delivery == Delivery::Return).then_some(code),
        })
    }

    /// Records that code `number` was handed to the SMS provider. Idempotent: a second report
    /// of the same code records nothing.
    pub async fn record_code_sent(
        &self,
        instance: &InstanceId,
        user: &UserRecord,
        registration: &RegistrationId,
        number: u32,
    ) -> Result<Details, Error> {
        let caller = Caller {
            instance: instance.clone(),
            principal: PrincipalId::system(),
        };
        let command = Command::RecordCodeSent { number };
        self.execute(&caller, user, registration, &command, None)
            .await
    }

    /// One pass of the SMS notifier over the delivery outbox: sends each pending code that is
    /// still the registration's current, unsent, unexpired code; records `code sent`; deletes
    /// the message. A code that can no longer be used is deleted unsent. A failed send leaves
    /// the message for another pass once its lease runs out (at least once delivery).
    pub async fn deliver_pending(
        &self,
        sender: &dyn SmsSender,
        limit: usize,
        lease: Duration,
    ) -> Result<DeliveryReport, Error> {
        let mut report = DeliveryReport::default();
        for message in self.store.fetch_outbox(limit, lease).await? {
            let delivery: CodeDelivery = match serde_json::from_value(message.payload) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(message_id = %message.id, error = %e, "unreadable outbox message dropped");
                    self.store.delete_outbox(message.id).await?;
                    report.dropped += 1;
                    continue;
                }
            };
            match self.deliver_one(sender, &delivery).await {
                Ok(true) => report.sent += 1,
                Ok(false) => report.dropped += 1,
                Err(e) => {
                    tracing::warn!(message_id = %message.id, registration = %delivery.registration, error = %e, "SMS delivery failed; will retry");
                    report.failed += 1;
                    continue;
                }
            }
            self.store.delete_outbox(message.id).await?;
        }
        Ok(report)
    }

    /// Sends one delivery if it is still due. `Ok(false)`: not due, drop it.
    async fn deliver_one(&self, sender: &dyn SmsSender, d: &CodeDelivery) -> Result<bool, Error> {
        let stream = Self::stream_id(&d.instance, &d.registration);
        let history = self.store.read_stream(&stream).await?;
        let state = Registration::from_events(history.iter().map(|r| &r.event));
        let due = state.status == Status::Unverified
            && state.user.as_ref() == Some(&d.user)
            && state
                .pending
                .as_ref()
                .is_some_and(|p| p.number == d.number && !p.sent)
            && self.clock.now() < d.expires_at;
        if !due {
            return Ok(false);
        }
        let binding = CodeBinding {
            registration: &d.registration,
            number: d.number,
        };
        let code = self
            .keys
            .open(binding, &d.sealed)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let sms = Sms {
            instance: d.instance.clone(),
            registration: d.registration.clone(),
            phone: d.phone.clone(),
            code,
            expires_at: d.expires_at,
        };
        sender.send(&sms).await?;
        let user = UserRecord {
            id: d.user.clone(),
            organization: d.organization.clone(),
        };
        match self
            .record_code_sent(&d.instance, &user, &d.registration, d.number)
            .await
        {
            // Verified or replaced meanwhile: the SMS went out, nothing left to record.
            Ok(_) | Err(Error::FailedPrecondition(_)) | Err(Error::RegistrationNotFound) => {
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    fn fresh_code(&self) -> VerificationCode {
        VerificationCode::generate(self.policy.length(), &mut rand::thread_rng())
    }

    async fn target(
        &self,
        caller: &Caller,
        req: RegistrationRequest,
    ) -> Result<(UserRecord, RegistrationId), Error> {
        let user_id = UserId::parse("id", req.user_id)?;
        let registration = RegistrationId::parse("otp_sms_id", req.registration_id)?;
        let organization = parse_org_ref(req.organization)?;
        let user = self.authorize(caller, &user_id, organization).await?;
        Ok((user, registration))
    }

    /// NOT_FOUND unless the user exists (in the expected organization, if named);
    /// PERMISSION_DENIED unless the caller is the user or holds `user.write` in its organization.
    async fn authorize(
        &self,
        caller: &Caller,
        user_id: &UserId,
        expected: Option<OrganizationRef>,
    ) -> Result<UserRecord, Error> {
        let user = self
            .users
            .find_user(&caller.instance, user_id)
            .await?
            .ok_or(Error::UserNotFound)?;
        let expected_org = match expected {
            None => None,
            Some(OrganizationRef::Id(id)) => {
                Some(OrganizationId::parse("organization.org_id", id)?)
            }
            Some(OrganizationRef::Domain(domain)) => Some(
                self.users
                    .organization_by_domain(&caller.instance, &domain)
                    .await?
                    .ok_or(Error::UserNotFound)?,
            ),
        };
        if expected_org.is_some_and(|org| org != user.organization) {
            return Err(Error::UserNotFound);
        }
        if caller.principal.as_str() != user.id.as_str()
            && !self
                .authorizer
                .has_permission(
                    &caller.instance,
                    &caller.principal,
                    &user.organization,
                    USER_WRITE,
                )
                .await?
        {
            return Err(Error::PermissionDenied);
        }
        Ok(user)
    }

    /// Load, rebuild, decide, append; on a version conflict, again, up to `max_attempts`.
    async fn execute(
        &self,
        caller: &Caller,
        user: &UserRecord,
        registration: &RegistrationId,
        command: &Command,
        fresh: Option<&VerificationCode>,
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
            } else if let Some(cached) = self
                .cache
                .as_ref()
                .filter(|_| trust_cache)
                .and_then(|cache| cache.get(&stream))
            {
                (cached, true)
            } else {
                (self.store.read_stream(&stream).await?, false)
            };
            let now = self.clock.now();
            // The rebuilt state ends with this block, before the append's `.await`: kept
            // alive across it, it would sit in this future, which is copied whole when moved.
            let (events, error, organization, outbox) = {
                let mut state = Registration::from_events(history.iter().map(|r| &r.event));
                let ctx = Context {
                    registration,
                    user: &user.id,
                    now,
                    policy: &self.policy,
                    keys: &self.keys,
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
                (events, error, organization, outbox)
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
            // What the cache needs after the append, which consumes the events.
            let for_cache = self.cache.is_some().then(|| events.clone());
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
            };
            match self.store.append(append).await {
                Ok(outcome) => {
                    if let (Some(cache), Some(events)) = (&self.cache, for_cache) {
                        let written = Written {
                            stream: &stream,
                            creator: &caller.principal,
                            owner: &organization,
                        };
                        cache.put(
                            &stream,
                            written.history(&history, events, &outcome.recorded),
                        );
                    }
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
                    if let (true, Some(cache)) = (from_cache, &self.cache) {
                        // The store contradicts the cached history: the retry's read
                        // replaces it, even should it be shorter.
                        cache.forget(&stream);
                    }
                    attempt += 1;
                    trust_cache = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Aborted)
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

fn parse_org_ref(org: Option<OrganizationRef>) -> Result<Option<OrganizationRef>, Error> {
    match org {
        Some(OrganizationRef::Id(id)) => {
            OrganizationId::parse("organization.org_id", id.clone())?;
            Ok(Some(OrganizationRef::Id(id)))
        }
        Some(OrganizationRef::Domain(domain)) => {
            crate::ids::check_length("organization.org_domain", &domain, crate::MAX_ID_CHARS)?;
            Ok(Some(OrganizationRef::Domain(domain)))
        }
        None => Ok(None),
    }
}
