//! What a host plugs in besides the event store: time, ids, users, permissions and SMS.
//!
//! Ports that may do I/O are async traits; the clock and the id generator are synchronous
//! because they sit on every command's hot path and no sane implementation waits on anything.

use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::caller::Caller;
use crate::code::VerificationCode;
use crate::error::Error;
use crate::ids::{InstanceId, OrganizationId, PrincipalId, RegistrationId, UserId};
use crate::phone::Phone;

/// The permission that lets a principal manage another user's authenticators.
pub const USER_WRITE: &str = "user.write";

/// The current time.
pub trait Clock: Send + Sync {
    /// Now, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to: for tests and simulations.
///
/// ```
/// use otp_sms_core::{Clock, ManualClock};
/// let clock = ManualClock::new("2026-01-01T00:00:00Z".parse().unwrap());
/// clock.advance(chrono::Duration::seconds(61));
/// assert_eq!(clock.now().to_rfc3339(), "2026-01-01T00:01:01+00:00");
/// ```
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Mutex::new(start))
    }
    /// Moves the clock forward (or back, with a negative duration).
    pub fn advance(&self, by: chrono::Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now += by;
    }
    /// Sets the clock.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Makes identifiers for new registrations and outbox messages.
pub trait IdGenerator: Send + Sync {
    /// A fresh, never used registration id.
    fn registration_id(&self) -> RegistrationId;
    /// A fresh outbox message id.
    fn message_id(&self) -> Uuid;
}

/// UUID v7 ids: unique without coordination, and time-ordered (by millisecond) so they index
/// well. The 74 random bits come from the thread's CSPRNG rather than a system call per id.
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidV7Ids;

impl UuidV7Ids {
    fn next() -> Uuid {
        let millis = Utc::now().timestamp_millis().max(0) as u64;
        let mut random = [0u8; 10];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut random);
        uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
    }
}

impl IdGenerator for UuidV7Ids {
    fn registration_id(&self) -> RegistrationId {
        let mut buf = Uuid::encode_buffer();
        let text = Self::next().hyphenated().encode_lower(&mut buf);
        RegistrationId::parse("otp_sms_id", &*text).expect("a UUID is 36 characters")
    }
    fn message_id(&self) -> Uuid {
        Self::next()
    }
}

/// A port failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// It could not be reached; the caller may retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

/// A library error met inside a port (an id that does not parse, a call that failed): a
/// transient one ([`Error::Unavailable`], [`Error::DeadlineExceeded`], [`Error::Aborted`]) stays
/// retryable, anything else is [`PortError::Internal`], so `?` works in a port's body.
///
/// ```
/// use otp_sms_core::{PortError, UserId};
/// fn user(raw: &str) -> Result<UserId, PortError> {
///     Ok(raw.parse::<UserId>()?)
/// }
/// assert!(matches!(user(""), Err(PortError::Internal(_))));
/// ```
impl From<Error> for PortError {
    fn from(e: Error) -> Self {
        match e {
            Error::Unavailable(m) => PortError::Unavailable(m),
            e @ (Error::DeadlineExceeded | Error::Aborted) => PortError::Unavailable(e.to_string()),
            e => PortError::Internal(e.to_string()),
        }
    }
}

impl From<PortError> for Error {
    fn from(e: PortError) -> Self {
        match e {
            PortError::Unavailable(m) => Error::Unavailable(m),
            PortError::Internal(m) => Error::Internal(m),
        }
    }
}

/// A user as the directory knows it. Built with [`UserRecord::new`]; fields may be added in
/// a minor release.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserRecord {
    /// The user's id.
    pub id: UserId,
    /// The organization the user belongs to.
    pub organization: OrganizationId,
}

impl UserRecord {
    /// User `id` of `organization`.
    pub fn new(id: UserId, organization: OrganizationId) -> Self {
        Self { id, organization }
    }
}

/// The host's users.
#[async_trait]
pub trait UserDirectory: Send + Sync {
    /// The user, if it exists in the instance.
    async fn find_user(
        &self,
        instance: &InstanceId,
        user: &UserId,
    ) -> Result<Option<UserRecord>, PortError>;

    /// The organization with this primary domain in the instance, if any. Only requests
    /// that name their organization by domain ask; the default knows no domain (such a request
    /// is answered NOT_FOUND).
    async fn organization_by_domain(
        &self,
        instance: &InstanceId,
        domain: &str,
    ) -> Result<Option<OrganizationId>, PortError> {
        let _ = (instance, domain);
        Ok(None)
    }

    /// The user's preferred language (a BCP 47 tag such as `de` or `pt-BR`), for the text of
    /// the SMS ([`Sms::locale`]). Asked once per SMS by the notifier; a failure only means the
    /// default language. The default knows none.
    async fn preferred_language(
        &self,
        instance: &InstanceId,
        user: &UserId,
    ) -> Result<Option<String>, PortError> {
        let _ = (instance, user);
        Ok(None)
    }
}

/// The host's permission model.
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// Whether `principal` holds `permission` in `organization` of `instance`.
    async fn has_permission(
        &self,
        instance: &InstanceId,
        principal: &PrincipalId,
        organization: &OrganizationId,
        permission: &str,
    ) -> Result<bool, PortError>;
}

/// One SMS to send.
#[derive(Clone)]
pub struct Sms {
    /// The tenant.
    pub instance: InstanceId,
    /// The registration the code is for.
    pub registration: RegistrationId,
    /// Which code of the registration it is (1, 2, …), for the provider's delivery report
    /// ([`crate::CommandService::record_delivery_report`]).
    pub number: u32,
    /// Where to send it.
    pub phone: Phone,
    /// The code, in clear: only the sender sees it.
    pub code: VerificationCode,
    /// When it stops being accepted (a sender may show it).
    pub expires_at: DateTime<Utc>,
    /// The outbox message's id: the same for every attempt to send this message, so a
    /// receiver can drop duplicates (the webhook sends it as its `Idempotency-Key`).
    pub message_id: Uuid,
    /// When the sender must have given up: the notifier's lease on the message outlives it,
    /// so no other notifier takes the message while this send may still go out.
    pub deadline: DateTime<Utc>,
    /// The user's preferred language, if the directory knows it
    /// ([`UserDirectory::preferred_language`]): the sender picks the text's template by it
    /// ([`crate::message::MessageTemplates::render`]).
    pub locale: Option<String>,
    /// What the code is for: a registration or a sign-in, each with its own text.
    pub purpose: crate::message::Purpose,
}

impl fmt::Debug for Sms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sms")
            .field("instance", &self.instance)
            .field("registration", &self.registration)
            .field("number", &self.number)
            .field("phone", &self.phone)
            .field("code", &self.code)
            .field("expires_at", &self.expires_at)
            .field("message_id", &self.message_id)
            .field("deadline", &self.deadline)
            .field("locale", &self.locale)
            .field("purpose", &self.purpose)
            .finish()
    }
}

/// Hands codes to an SMS provider.
#[async_trait]
pub trait SmsSender: Send + Sync {
    /// Sends one SMS, giving up by [`Sms::deadline`]. [`PortError::Unavailable`] means "try
    /// again later" (a time-out, throttling, a 5xx): the notifier retries with back-off.
    /// [`PortError::Internal`] means the provider refused the message for good (an invalid
    /// number, a 4xx): the notifier records `delivery failed` and drops it.
    async fn send(&self, sms: &Sms) -> Result<(), PortError>;

    /// The longest one [`send`](Self::send) may take when the provider is slow but answers:
    /// every attempt's time-out, retries and waits included. The notifier leases its messages
    /// for at least this long and starts a send only with this much of its lease left, so no
    /// send it starts is cut short by the notifier (which would leave the provider holding a
    /// message the notifier then sends again). `None` (the default): the sender states no
    /// bound, and its sends get what is left of the pass.
    fn max_send_time(&self) -> Option<std::time::Duration> {
        None
    }

    /// Whether the provider already holds `sms`, asked before the notifier hands over a
    /// message that an earlier attempt may have delivered without the answer coming back (a
    /// time-out, a crash). `Some(true)`: it does, and the notifier records the code as sent
    /// instead of paying for a second SMS; `Some(false)`: it does not. `None` (the default):
    /// the provider cannot be asked, and the message is sent again with the same
    /// [`Sms::message_id`], so a receiver that keeps ids drops the repeat. An error leaves the
    /// message for a later attempt: sending blindly is what this call exists to avoid.
    async fn was_sent(&self, sms: &Sms) -> Result<Option<bool>, PortError> {
        let _ = sms;
        Ok(None)
    }
}

/// Turns credentials into a caller: the host's token store.
#[async_trait]
pub trait Authenticator: Send + Sync {
    /// The caller a bearer token stands for (its instance and principal), or `None` when the
    /// token is unknown, expired or revoked.
    async fn authenticate(&self, bearer_token: &str) -> Result<Option<Caller>, PortError>;

    /// The instance with this domain, for requests that name their instance by domain. The
    /// default knows no domain (such a request is answered NOT_FOUND): right for a
    /// single-tenant host.
    async fn instance_by_domain(&self, domain: &str) -> Result<Option<InstanceId>, PortError> {
        let _ = domain;
        Ok(None)
    }
}
