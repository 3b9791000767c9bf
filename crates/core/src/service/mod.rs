//! The command service: validate, look the user up, authorize, then run the command loop
//! ([`command`]: load, rebuild, decide, append, retry on conflict); the notifier's pass over the
//! delivery outbox is [`delivery`].

mod attempt;
mod command;
mod delivery;
mod guard;
mod idempotency;
mod phones;
mod sign_in;
mod span;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::abuse::{AbusePolicy, AbusePolicyError, BudgetStore, MemoryBudgets};
use crate::aggregate::{AddVerification, Command};
use crate::api::{
    AddRequest, AddResponse, Details, OrganizationRef, PhoneVerification, RegistrationRequest,
    ResendResponse, UserRequest, VerifyRequest,
};
use crate::caller::Caller;
use crate::code::{CodePolicy, VerificationCode};
use crate::error::Error;
use crate::event::{Delivery, Event, AGGREGATE_TYPE};
use crate::idempotency::{IdempotencyStore, MemoryIdempotency, DEFAULT_IDEMPOTENCY_WINDOW};
use crate::ids::{InstanceId, OrganizationId, PrincipalId, RegistrationId, UserId};
use crate::keys::CodeKeyRing;
use crate::phone::Phone;
use crate::ports::{
    Authorizer, Clock, IdGenerator, SystemClock, UserDirectory, UserRecord, UuidV7Ids, USER_WRITE,
};
use crate::store::{EventStore, StreamId};
use crate::stream_cache::StreamCache;

use attempt::Attempt;
use idempotency::Fingerprint;

pub use delivery::{CodeDelivery, DeliveryPolicy, DeliveryReport};
pub use idempotency::DEFAULT_IDEMPOTENCY_KEYS_PER_CALLER;

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
    abuse: Arc<AbusePolicy>,
    instance_abuse: Arc<HashMap<InstanceId, Arc<AbusePolicy>>>,
    budgets: Arc<dyn BudgetStore>,
    /// Whether `budgets` is the default in-process store, which follows the service's clock.
    default_budgets: bool,
    idempotency: Arc<dyn IdempotencyStore>,
    /// Whether `idempotency` is the default in-process store, which follows the service's
    /// clock.
    default_idempotency: bool,
    idempotency_window: Duration,
    idempotency_keys_per_caller: u32,
    delivery: DeliveryPolicy,
    range_signal: crate::conversion::RangeSignal,
    /// What every command reports, registered at the first one.
    instruments: Arc<crate::metrics::Instruments>,
    /// The users' phones, for [`CommandService::list_phones`].
    phones: Arc<phones::PhoneIndex>,
}

/// What a call needs of its caller besides naming an existing user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// The user, or a holder of `user.write` in the user's organization.
    Manage,
    /// `user.write` in the user's organization, whoever the caller is (`is_verified`).
    UserWrite,
    /// A code in the response: `user.write`, or the user where the instance allows it.
    CodeInResponse,
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
            phones: Arc::new(phones::PhoneIndex::new(Arc::clone(&store))),
            store,
            users,
            authorizer,
            keys: Arc::new(keys),
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidV7Ids),
            policy: CodePolicy::default(),
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            cache: None,
            abuse: Arc::new(AbusePolicy::default()),
            instance_abuse: Arc::new(HashMap::new()),
            budgets: Arc::new(MemoryBudgets::new()),
            default_budgets: true,
            idempotency: Arc::new(MemoryIdempotency::new()),
            default_idempotency: true,
            idempotency_window: DEFAULT_IDEMPOTENCY_WINDOW,
            idempotency_keys_per_caller: idempotency::DEFAULT_IDEMPOTENCY_KEYS_PER_CALLER,
            delivery: DeliveryPolicy::default(),
            range_signal: crate::conversion::RangeSignal::new(),
            instruments: Arc::default(),
        }
    }

    /// How the notifier sends ([`CommandService::deliver_pending`]): concurrency, back-off,
    /// attempts (default [`DeliveryPolicy::default`]).
    pub fn with_delivery_policy(mut self, policy: DeliveryPolicy) -> Self {
        self.delivery = policy;
        self
    }

    /// Uses another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        if self.default_budgets {
            self.budgets = Arc::new(MemoryBudgets::with_clock(clock.clone()));
        }
        if self.default_idempotency {
            self.idempotency = Arc::new(MemoryIdempotency::with_clock(clock.clone()));
        }
        self.clock = clock;
        self
    }

    /// The abuse policy of every instance without one of its own (default:
    /// [`AbusePolicy::default`]). Refused if a figure cannot work.
    pub fn with_abuse_policy(mut self, policy: AbusePolicy) -> Result<Self, AbusePolicyError> {
        policy.validate()?;
        self.abuse = Arc::new(policy);
        Ok(self)
    }

    /// The abuse policy of one instance.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use otp_sms_core::*;
    /// # fn build(service: CommandService) -> Result<CommandService, AbusePolicyError> {
    /// let mut lenient = AbusePolicy::default();
    /// lenient.allow_self_return_code = true;
    /// let service = service
    ///     .with_instance_abuse_policy(InstanceId::parse("instance", "dev").unwrap(), lenient)?;
    /// # Ok(service) }
    /// ```
    pub fn with_instance_abuse_policy(
        mut self,
        instance: InstanceId,
        policy: AbusePolicy,
    ) -> Result<Self, AbusePolicyError> {
        policy.validate()?;
        Arc::make_mut(&mut self.instance_abuse).insert(instance, Arc::new(policy));
        Ok(self)
    }

    /// Where the send budgets read each number range's conversion, for the instances whose
    /// policy sets [`AbusePolicy::range_collapse`] (default: a signal nobody publishes to, so
    /// no range ever counts as collapsed). The host keeps it published from a
    /// [`crate::conversion::Conversion`] of the store's feed.
    pub fn with_range_signal(mut self, signal: crate::conversion::RangeSignal) -> Self {
        self.range_signal = signal;
        self
    }

    /// Where send budgets live (default: [`MemoryBudgets`] on the service's clock, right for
    /// one process). Every process serving an instance must share one store:
    /// `otp_sms_postgres::PgBudgets` with PostgreSQL.
    pub fn with_budget_store(mut self, budgets: Arc<dyn BudgetStore>) -> Self {
        self.budgets = budgets;
        self.default_budgets = false;
        self
    }

    /// Where idempotency records live (default: [`MemoryIdempotency`] on the service's clock,
    /// right for one process). Every process serving an instance must share one store, so
    /// that a retry reaching another process finds its key: `otp_sms_postgres::PgIdempotency`
    /// with PostgreSQL.
    pub fn with_idempotency_store(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.idempotency = store;
        self.default_idempotency = false;
        self
    }

    /// How long a key stands for its first call (default
    /// [`DEFAULT_IDEMPOTENCY_WINDOW`], 24 hours). After it, the key is new again.
    pub fn with_idempotency_window(mut self, window: Duration) -> Self {
        self.idempotency_window = window;
        self
    }

    /// How many idempotency keys one caller (instance and principal) may hold within the
    /// idempotency window (default [`DEFAULT_IDEMPOTENCY_KEYS_PER_CALLER`]); a call with one
    /// more new key is RESOURCE_EXHAUSTED ([`Error::QuotaExceeded`]) and stores nothing. 0: no
    /// cap. The count lives in the budget store, shared by every process on it.
    pub fn with_idempotency_keys_per_caller(mut self, max: u32) -> Self {
        self.idempotency_keys_per_caller = max;
        self
    }

    /// The abuse policy in force for `instance`.
    pub fn abuse_policy(&self, instance: &InstanceId) -> &AbusePolicy {
        self.instance_abuse.get(instance).unwrap_or(&self.abuse)
    }

    /// The budget store.
    pub fn budget_store(&self) -> &Arc<dyn BudgetStore> {
        &self.budgets
    }

    /// The fixed code of the registration's number when it is a test number (reads the
    /// stream only when the instance has test numbers).
    async fn test_code_of(
        &self,
        instance: &InstanceId,
        registration: &RegistrationId,
    ) -> Result<Option<VerificationCode>, Error> {
        if self.abuse_policy(instance).test_numbers.is_empty() {
            return Ok(None);
        }
        let history = self
            .store
            .read_stream(&Self::stream_id(instance, registration))
            .await?;
        let state = crate::aggregate::Registration::from_events(history.iter().map(|r| &r.event));
        Ok(state
            .phone
            .and_then(|phone| self.test_code(instance, &phone)))
    }

    /// The fixed code of `phone` when it is one of `instance`'s test numbers.
    fn test_code(&self, instance: &InstanceId, phone: &Phone) -> Option<VerificationCode> {
        let policy = self.abuse_policy(instance);
        if policy.test_numbers.is_empty() {
            return None;
        }
        // Validated digits: within the bounds of any code.
        policy
            .test_code(phone.as_e164())
            .and_then(|code| VerificationCode::from_input(code).ok())
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
        // Possession: only an administrator may vouch for a number or see its code.
        let need = match req.verification {
            PhoneVerification::SendCode => Need::Manage,
            PhoneVerification::ReturnCode => Need::CodeInResponse,
            PhoneVerification::IsVerified(_) => Need::UserWrite,
        };
        let mut fingerprint = Fingerprint::of(caller, "add");
        fingerprint
            .field(user_id.as_str())
            .organization(organization.as_ref())
            .field(phone.as_e164())
            .field(match req.verification {
                PhoneVerification::SendCode => "send_code",
                PhoneVerification::ReturnCode => "return_code",
                PhoneVerification::IsVerified(_) => "is_verified",
            });
        let user = self.authorize(caller, &user_id, organization, need).await?;
        // A test number's code is its fixed one (the aggregate issues it as such).
        let fresh = (!matches!(req.verification, PhoneVerification::IsVerified(_))).then(|| {
            self.test_code(&caller.instance, &phone)
                .unwrap_or_else(|| self.fresh_code())
        });
        let returned = (req.verification == PhoneVerification::ReturnCode)
            .then(|| fresh.clone())
            .flatten();
        let run = self
            .run_for(caller, fingerprint, self.ids.registration_id(), returned)
            .await?;
        // A replay answers the code it answered first; a code to send is drawn anew (the
        // first one, if it committed, is what the replay finds).
        let fresh = run.code.clone().or(fresh);
        let verification = match (req.verification, fresh.clone()) {
            (PhoneVerification::ReturnCode, Some(code)) => AddVerification::ReturnCode(code),
            (PhoneVerification::SendCode, Some(code)) => AddVerification::SendCode(code),
            _ => AddVerification::AlreadyVerified,
        };
        let command = Command::Add {
            user: user.id.clone(),
            organization: user.organization.clone(),
            phone,
            verification,
        };
        let attempt = Attempt::under(run.command, caller, &user, &run.registration, &command)
            .with_code(fresh.as_ref());
        let details = self.execute(attempt).await?;
        Ok(AddResponse {
            details,
            registration_id: run.registration,
            verification_code: run.code,
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
        let mut fingerprint = Fingerprint::of(caller, "verify");
        fingerprint
            .field(user_id.as_str())
            .organization(organization.as_ref())
            .field(registration.as_str())
            .field(code.expose());
        let user = self
            .authorize(caller, &user_id, organization, Need::Manage)
            .await?;
        let run = self
            .run_for(caller, fingerprint, registration, None)
            .await?;
        let command = Command::Verify { code };
        self.execute(Attempt::under(
            run.command,
            caller,
            &user,
            &run.registration,
            &command,
        ))
        .await
    }

    /// `RemoveOTPSMSAuthenticator`.
    pub async fn remove(
        &self,
        caller: &Caller,
        req: RegistrationRequest,
    ) -> Result<Details, Error> {
        let fingerprint = Self::target_fingerprint(caller, "remove", &req);
        let (user, registration) = self.target(caller, req, Need::Manage).await?;
        let run = self
            .run_for(caller, fingerprint, registration, None)
            .await?;
        let remove = Command::Remove;
        self.execute(Attempt::under(
            run.command,
            caller,
            &user,
            &run.registration,
            &remove,
        ))
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
        let need = match delivery {
            Delivery::Send | Delivery::Test => Need::Manage,
            Delivery::Return => Need::CodeInResponse,
        };
        if delivery == Delivery::Test {
            return Err(Error::invalid(
                "delivery",
                "test delivery is chosen by the instance's test numbers, not by callers",
            ));
        }
        let mut fingerprint = Self::target_fingerprint(caller, "resend_code", &req);
        fingerprint.field(match delivery {
            Delivery::Send | Delivery::Test => "send",
            Delivery::Return => "return",
        });
        let (user, registration) = self.target(caller, req, need).await?;
        let drawn = self.fresh_code();
        let returned = (delivery == Delivery::Return).then(|| drawn.clone());
        let run = self
            .run_for(caller, fingerprint, registration, returned)
            .await?;
        let registration = run.registration;
        let code = run.code.unwrap_or(drawn);
        let command = Command::ResendCode {
            code: code.clone(),
            delivery,
        };
        let attempt = Attempt::under(run.command, caller, &user, &registration, &command)
            .with_code(Some(&code));
        let details = self.execute(attempt).await?;
        let verification_code = match delivery {
            // A test number was issued its fixed code, not the drawn one.
            Delivery::Return => Some(
                self.test_code_of(&caller.instance, &registration)
                    .await?
                    .unwrap_or(code),
            ),
            _ => None,
        };
        Ok(ResendResponse {
            details,
            verification_code,
        })
    }

    /// Lifts the user's verification lock (an extension of the contract; NIST SP 800-63B's
    /// cap on wrong codes in a row): ends the run of wrong codes and the lock, and records
    /// `verification unlocked` on every live registration of the user that was locked.
    /// Needs `user.write` in the user's organization, whoever the caller is.
    ///
    /// Checks: ids (INVALID_ARGUMENT), the user (NOT_FOUND), `user.write` (PERMISSION_DENIED);
    /// an unreachable budget store is UNAVAILABLE. Unlocking a user who is not locked changes
    /// nothing and succeeds.
    pub async fn unlock_verification(
        &self,
        caller: &Caller,
        req: UserRequest,
    ) -> Result<(), Error> {
        let user_id = UserId::parse("id", req.user_id)?;
        let organization = parse_org_ref(req.organization)?;
        let user = self
            .authorize(caller, &user_id, organization, Need::UserWrite)
            .await?;
        let instance = &caller.instance;
        self.budgets
            .clear(&AbusePolicy::failures_key(instance, &user.id))
            .await?;
        self.budgets
            .clear(&AbusePolicy::lock_key(instance, &user.id))
            .await?;
        for id in self
            .budgets
            .members(&AbusePolicy::slot_key(instance, &user.id))
            .await?
        {
            let Ok(id) = RegistrationId::parse("otp_sms_id", id.member) else {
                continue;
            };
            match self
                .execute(Attempt::new(
                    caller,
                    &user,
                    &id,
                    &Command::UnlockVerification,
                ))
                .await
            {
                // Removed meanwhile: nothing to unlock.
                Ok(_) | Err(Error::RegistrationNotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
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
            address: None,
            idempotency_key: None,
        };
        let command = Command::RecordCodeSent { number };
        self.execute(Attempt::new(&caller, user, registration, &command))
            .await
    }

    /// Records an SMS provider's report on code `number` of `registration` in `instance`,
    /// after the hand-over: delivered (`failure` `None`: `code delivered`), or not (`delivery
    /// failed` with the reason: the provider's status and error code, never a number). The
    /// registration's own user and organization are used; a repeated report changes nothing.
    pub async fn record_delivery_report(
        &self,
        instance: &InstanceId,
        registration: &RegistrationId,
        number: u32,
        failure: Option<String>,
    ) -> Result<Details, Error> {
        let stream = Self::stream_id(instance, registration);
        let history = self.store.read_stream(&stream).await?;
        let state = crate::aggregate::Registration::from_events(history.iter().map(|r| &r.event));
        let (Some(id), Some(organization)) = (state.user, state.organization) else {
            return Err(Error::RegistrationNotFound);
        };
        let user = UserRecord { id, organization };
        let caller = Caller::new(instance.clone(), PrincipalId::system());
        let command = Command::RecordDeliveryReport { number, failure };
        self.execute(Attempt::new(&caller, &user, registration, &command))
            .await
    }

    fn fresh_code(&self) -> VerificationCode {
        VerificationCode::generate(self.policy.length(), &mut rand::thread_rng())
    }

    /// The fingerprint of a call on one registration.
    fn target_fingerprint(caller: &Caller, call: &str, req: &RegistrationRequest) -> Fingerprint {
        let mut fingerprint = Fingerprint::of(caller, call);
        fingerprint
            .field(&req.user_id)
            .organization(req.organization.as_ref())
            .field(&req.registration_id);
        fingerprint
    }

    async fn target(
        &self,
        caller: &Caller,
        req: RegistrationRequest,
        need: Need,
    ) -> Result<(UserRecord, RegistrationId), Error> {
        let user_id = UserId::parse("id", req.user_id)?;
        let registration = RegistrationId::parse("otp_sms_id", req.registration_id)?;
        let organization = parse_org_ref(req.organization)?;
        let user = self.authorize(caller, &user_id, organization, need).await?;
        Ok((user, registration))
    }

    /// NOT_FOUND unless the user exists (in the expected organization, if named); then
    /// PERMISSION_DENIED unless the caller meets `need` ([`Need`]): the user or a holder of
    /// `user.write` in the user's organization; for `is_verified` only the latter; for a code
    /// in the response the latter, or the user where the instance allows it.
    async fn authorize(
        &self,
        caller: &Caller,
        user_id: &UserId,
        expected: Option<OrganizationRef>,
        need: Need,
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
        let is_self = caller.principal.as_str() == user.id.as_str();
        let self_suffices = match need {
            Need::Manage => is_self,
            Need::UserWrite => false,
            Need::CodeInResponse => {
                is_self && self.abuse_policy(&caller.instance).allow_self_return_code
            }
        };
        if !self_suffices
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
}

fn parse_org_ref(org: Option<OrganizationRef>) -> Result<Option<OrganizationRef>, Error> {
    match org {
        Some(OrganizationRef::Id(id)) => {
            OrganizationId::parse("organization.org_id", id.clone())?;
            Ok(Some(OrganizationRef::Id(id)))
        }
        Some(OrganizationRef::Domain(domain)) => {
            crate::ids::check_length("organization.org_domain", &domain, crate::ids::MAX_ID_CHARS)?;
            Ok(Some(OrganizationRef::Domain(domain)))
        }
        None => Ok(None),
    }
}
