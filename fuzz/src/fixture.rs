//! The service the wire targets call: the memory store, two users of one instance (alice, and
//! admin with `user.write`), and three registrations with ids a seed can name: alice's
//! `reg-1`, verified, and `reg-3`, not yet (both test numbers, whose code is always
//! [`TEST_CODE`], so that seeds reach verify's and check's success), and admin's `reg-2`,
//! whose code was sent (later adds are `reg-4`, `reg-5`, …); a sign-in challenge on `reg-1`
//! under the binding `session-1`; and
//! every router the server mounts for the API (JSON, Connect, gRPC-web and gRPC) and the
//! providers' delivery reports, on one Tokio runtime.
//!
//! A fuzzer runs millions of calls: the fixture is built anew every [`RUNS_PER_FIXTURE`] calls,
//! so that the store (and the abuse budgets, which would soon refuse every add) stay small.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use otp_sms_core::{
    AbusePolicy, AddRequest, Caller, ChallengeRequest, CodeKey, CodeKeyRing, CommandService, Event,
    IdGenerator, InstanceId, KeyId, PhoneVerification, PrincipalId, RegistrationId, TestNumber,
    Uuid, VerifyRequest,
};
use otp_sms_memory::MemoryStore;
use otp_sms_providers::{twilio, vonage};
use otp_sms_testkit::doubles::{RecordingSender, StaticAuthorizer, StaticTokens, StaticUsers};
use tokio::runtime::Runtime;

/// Twilio's auth token, which signs its status callbacks.
pub const TWILIO_TOKEN: &str = "twilio-auth-token";
/// The public URL Twilio signs a status callback for.
pub const TWILIO_URL: &str = "https://otp.example.com/sms/status/twilio";
/// Vonage's API key, named in each signed receipt.
pub const VONAGE_KEY: &str = "abcd1234";
/// The secret Vonage signs its receipts with (SHA-256 HMAC).
pub const VONAGE_SECRET: &str = "vonage-signature-secret";
/// The code of the fixture's test numbers (`+41790000001`, `+41790000002`).
pub const TEST_CODE: &str = "246810";
/// Calls served before the fixture is built anew.
pub const RUNS_PER_FIXTURE: u32 = 4096;

/// The service and its routes.
pub struct Fixture {
    /// Every route the server mounts for the API and the delivery reports.
    pub app: Router,
    /// The service behind the routes.
    pub service: CommandService,
    /// The store behind the service, to see what a call wrote.
    pub store: Arc<MemoryStore<Event>>,
}

/// Ids in order, the same in every fixture: `reg-1`, `reg-2`, …
#[derive(Debug, Default)]
struct SequentialIds {
    registrations: AtomicU64,
    messages: AtomicU64,
}

impl IdGenerator for SequentialIds {
    fn registration_id(&self) -> RegistrationId {
        let n = self.registrations.fetch_add(1, Ordering::Relaxed) + 1;
        RegistrationId::parse("otp_sms_id", format!("reg-{n}")).expect("a short id")
    }
    fn message_id(&self) -> Uuid {
        Uuid::from_u128(u128::from(self.messages.fetch_add(1, Ordering::Relaxed)) + 1)
    }
}

/// The runtime every target's calls run on: current-thread, as libFuzzer runs one input at
/// a time.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime starts")
    })
}

/// Runs `call` with the fixture, one call at a time (the replay tests run on several
/// threads), building a new fixture when the current one has served its share.
pub fn with_fixture<T>(call: impl FnOnce(&Fixture) -> T) -> T {
    static CURRENT: Mutex<Option<(Fixture, u32)>> = Mutex::new(None);
    let mut current = CURRENT.lock().unwrap_or_else(|p| p.into_inner());
    if current
        .as_ref()
        .map_or(true, |(_, runs)| *runs >= RUNS_PER_FIXTURE)
    {
        *current = Some((build(), 0));
    }
    let (fixture, runs) = current.as_mut().expect("built above");
    *runs += 1;
    call(fixture)
}

/// Runs `call` with a fixture of its own, as built: for tests that need its first state.
pub fn with_new_fixture<T>(call: impl FnOnce(&Fixture) -> T) -> T {
    call(&build())
}

/// Every route the server mounts for the API (JSON with its document and fallbacks,
/// Connect, gRPC-web and gRPC) and the providers' delivery reports (Twilio's and Vonage's,
/// signed with this module's secrets), on `service`.
pub fn routes(service: CommandService, tokens: Arc<StaticTokens>) -> Router {
    otp_sms_http::standalone_router(service.clone(), tokens.clone())
        .merge(otp_sms_grpc::router(service.clone(), tokens))
        .merge(twilio::status_routes(twilio::StatusEndpoint::new(
            TWILIO_TOKEN,
            TWILIO_URL,
            service.clone(),
        )))
        .merge(vonage::receipt_routes(vonage::ReceiptEndpoint::new(
            VONAGE_KEY,
            VONAGE_SECRET,
            vonage::SignatureMethod::Sha256,
            service,
        )))
}

fn caller(principal: &str) -> Caller {
    Caller::new(
        InstanceId::parse("instance", "inst-1").expect("a valid id"),
        PrincipalId::parse("principal", principal).expect("a valid id"),
    )
}

fn build() -> Fixture {
    let store = Arc::new(MemoryStore::<Event>::new());
    let users = Arc::new(
        StaticUsers::new()
            .with_user("inst-1", "alice", "org-1")
            .with_user("inst-1", "admin", "org-1"),
    );
    let authz = Arc::new(StaticAuthorizer::new().grant("inst-1", "admin", "org-1", "user.write"));
    let keys = CodeKeyRing::new(CodeKey::new(KeyId::new("k"), &[7; 32]));
    let service = CommandService::new(store.clone(), users, authz, keys)
        .with_abuse_policy(AbusePolicy {
            allow_self_return_code: true,
            test_numbers: ["+41790000001", "+41790000002"]
                .map(|number| TestNumber {
                    number: number.into(),
                    code: TEST_CODE.into(),
                })
                .into(),
            ..Default::default()
        })
        .expect("the default policy with return codes is valid")
        .with_ids(Arc::new(SequentialIds::default()));
    let tokens = Arc::new(
        StaticTokens::new()
            .with_token("alice-token", "inst-1", "alice")
            .with_token("admin-token", "inst-1", "admin"),
    );
    let add = |principal: &str, phone: &str, verification| {
        let request = AddRequest {
            user_id: principal.into(),
            organization: None,
            phone: phone.into(),
            verification,
        };
        let service = service.clone();
        let caller = caller(principal);
        async move {
            service
                .add(&caller, request)
                .await
                .expect("the fixture's add")
        }
    };
    runtime().block_on(async {
        let verified = add("alice", "+41790000001", PhoneVerification::ReturnCode).await;
        add("admin", "+41791234568", PhoneVerification::SendCode).await;
        add("alice", "+41790000002", PhoneVerification::ReturnCode).await;
        let verify = VerifyRequest {
            user_id: "alice".into(),
            organization: None,
            registration_id: verified.registration_id.to_string(),
            code: TEST_CODE.into(),
        };
        service
            .verify(&caller("alice"), verify)
            .await
            .expect("the fixture's verify");
        let challenge = ChallengeRequest::new("alice", "session-1")
            .for_registration(verified.registration_id.to_string())
            .returning_code();
        service
            .challenge(&caller("alice"), challenge)
            .await
            .expect("the fixture's challenge");
        let sender = RecordingSender::new();
        service
            .deliver_pending(&sender, 10, Duration::from_secs(30))
            .await
            .expect("the fixture's delivery");
    });
    let app = routes(service.clone(), tokens);
    Fixture {
        app,
        service,
        store,
    }
}
