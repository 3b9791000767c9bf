//! # otp-sms-core
//!
//! OTP SMS registration for identity servers, as an event-sourced aggregate: a user adds a
//! phone as a second factor, receives a one-time code by SMS, and verifies it. This crate is
//! the domain, free of I/O:
//!
//! - [`Registration`]: the aggregate, rebuilt from its [`Event`]s with a pure
//!   [`Registration::apply`], and deciding [`Command`]s with a pure [`Registration::decide`];
//! - the ports a host plugs in: [`EventStore`], [`UserDirectory`], [`Authorizer`],
//!   [`SmsSender`], [`Clock`], [`IdGenerator`] and the [`CodeKeyRing`];
//! - [`CommandService`], which runs the API calls against those ports (optionally with a
//!   [`StreamCache`] that spares a database read per command);
//! - [`Error`], whose [`Error::rpc_code`] is the one mapping to google.rpc codes and HTTP.
//!
//! Codes are kept only as keyed hashes (HMAC-SHA-256) in the event log; a code that must be
//! sent travels encrypted (AES-256-GCM) in a delivery outbox that is deleted after the SMS is
//! handed over.
//!
//! ## Deciding without I/O
//!
//! ```
//! use otp_sms_core::*;
//!
//! let keys = CodeKeyRing::new(CodeKey::new(KeyId::new("k1"), &[1u8; 32]));
//! let policy = CodePolicy::default();
//! let registration = RegistrationId::parse("otp_sms_id", "r1").unwrap();
//! let user = UserId::parse("id", "u1").unwrap();
//! let ctx = Context {
//!     registration: &registration,
//!     user: &user,
//!     now: "2026-01-01T00:00:00Z".parse().unwrap(),
//!     policy: &policy,
//!     keys: &keys,
//!     test_code: None,
//! };
//! let code = VerificationCode::from_input("12345678").unwrap();
//! let add = Command::Add {
//!     user: user.clone(),
//!     organization: OrganizationId::parse("org", "o1").unwrap(),
//!     phone: Phone::parse("+41791234567").unwrap(),
//!     verification: AddVerification::ReturnCode(code.clone()),
//! };
//! let state = Registration::default();
//! let events = state.decide(&add, &ctx).events().to_vec();
//! let state = Registration::from_events(&events);
//! assert_eq!(state.status, Status::Unverified);
//!
//! let verified = state.decide(&Command::Verify { code }, &ctx);
//! assert!(matches!(verified.events(), [Event::Verified(_)]));
//! ```

mod abuse;
mod aggregate;
mod api;
mod authentication;
mod binding;
mod caller;
mod checkpoint;
mod code;
pub mod conversion;
mod error;
mod event;
mod idempotency;
mod idempotency_key;
mod ids;
mod keys;
pub mod message;
pub mod metrics;
#[cfg(feature = "notifier")]
mod notifier;
mod payload;
mod phone;
mod phones;
mod ports;
mod scope;
mod service;
mod status;
mod store;
mod stream_cache;
mod subscription;

pub use abuse::{
    redact_phone, AbusePolicy, AbusePolicyError, BudgetStore, BudgetTake, Limit, Member,
    MemoryBudgets, NumberCheck, RangeCollapse, Rule, Scope, SendPlan, TakeOutcome, TakeRequest,
    TestNumber,
};
pub use aggregate::{
    AddVerification, Challenge, ChallengeState, Command, Context, Decision, Handover, PendingCode,
    Registration, Status, MAX_TRACKED_CHALLENGES,
};
pub use api::{
    AddRequest, AddResponse, ChallengeRequest, ChallengeResponse, CheckRequest, CheckResponse,
    Details, OrganizationRef, Owner, OwnerType, PhoneVerification, RegistrationRequest,
    ResendResponse, UserRequest, VerifyRequest,
};
pub use authentication::{authenticate, request_caller, resolve_caller, CallerEvidence};
pub use binding::{Binding, BindingDigest};
pub use caller::{bearer_token, Caller, ClientAddress, InstanceRef, TrustedProxies};
pub use checkpoint::{CheckpointStore, MemoryCheckpoints};
pub use code::{CodePolicy, PolicyError, VerificationCode, MAX_CODE_CHARS, MAX_TRACKED_ISSUES};
pub use error::{Error, Precondition, RpcCode};
pub use event::{
    Added, ChallengeBurnt, ChallengeCheckFailed, ChallengeExpired, ChallengeIssued, ChallengeSent,
    ChallengeSucceeded, CheckFailed, CodeAdded, CodeDelivered, CodeSent, Delivery, DeliveryFailed,
    Event, Removed, SendRefused, VerificationLocked, VerificationUnlocked, Verified,
    AGGREGATE_TYPE, REFUSAL_AGGREGATE_TYPE,
};
pub use idempotency::{
    Claim, IdempotencyKey, IdempotencyRecord, IdempotencyScope, IdempotencyStore,
    MemoryIdempotency, DEFAULT_IDEMPOTENCY_WINDOW, IDEMPOTENCY_KEY_PATTERN,
    MAX_IDEMPOTENCY_KEY_CHARS,
};
pub use ids::{
    InstanceId, OrganizationId, PrincipalId, RegistrationId, UserId, ID_PATTERN, MAX_ID_CHARS,
};
pub use keys::{CodeBinding, CodeHash, CodeKey, CodeKeyRing, KeyError, KeyId, SealedCode};
pub use phone::{mask_number, NumberType, Phone, MAX_PHONE_CHARS};
pub use phones::{PhoneList, PhoneSummary};
pub use ports::{
    Authenticator, Authorizer, Clock, IdGenerator, ManualClock, PortError, Sms, SmsSender,
    SystemClock, UserDirectory, UserRecord, UuidV7Ids, USER_WRITE,
};
pub use service::{
    CodeDelivery, CommandService, DeliveryPolicy, DeliveryReport,
    DEFAULT_IDEMPOTENCY_KEYS_PER_CALLER,
};
pub use status::{ErrorStatus, StatusDetail};
pub use store::{
    Append, AppendOutcome, CodecError, CommandId, EventPayload, EventStore, ExpectedVersion,
    NewEvent, NewOutboxMessage, OutboxMessage, OutboxStats, Recorded, RecordedEvent, RecordedMeta,
    StoreError, StreamId, Version,
};
pub use stream_cache::StreamCache;
pub use subscription::{Projection, Subscription};

#[cfg(feature = "notifier")]
pub use notifier::{spawn_notifier, Notifier, NotifierHeartbeat, NotifierSettings};

// The ports' signatures use these: a host implements the ports with the versions re-exported
// here and keeps no dependency of its own in step with ours.
pub use async_trait::async_trait;
pub use chrono::{self, DateTime, Utc};
pub use uuid::{self, Uuid};
