//! A command service over either store, with test doubles for users, permissions and SMS.

use std::sync::Arc;

use chrono::{DurationRound, Utc};
use otp_sms_core::{
    AbusePolicy, AddRequest, AddResponse, Caller, CodeKey, CodeKeyRing, CommandService, Event,
    EventStore, InstanceId, KeyId, ManualClock, PhoneVerification, PrincipalId, Recorded,
};
use otp_sms_memory::MemoryStore;
use otp_sms_postgres::{PgBudgets, PgIdempotency, PgStore};
use otp_sms_testkit::doubles::{RecordingSender, StaticAuthorizer, StaticUsers};

use crate::pg;

/// Which event store a fixture runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `otp-sms-memory`.
    Memory,
    /// `otp-sms-postgres`, in a fresh schema.
    Postgres,
}

/// The instance every fixture user lives in.
pub const INSTANCE: &str = "inst-1";

/// A service and everything around it.
///
/// Users of instance `inst-1`: `user-1` and `user-2` of `org-1`, `admin` of `org-1` holding
/// `user.write` there, and `stranger` of `org-2` holding nothing. `org-1` has the domain
/// `org-1.example.com`.
pub struct Fixture {
    /// The service under test.
    pub service: CommandService,
    /// The store behind it.
    pub store: Arc<dyn EventStore<Event>>,
    /// The service's clock.
    pub clock: Arc<ManualClock>,
    /// The user directory (can be made unavailable).
    pub users: Arc<StaticUsers>,
    /// Where SMS go.
    pub sender: Arc<RecordingSender>,
    pg: Option<Arc<PgStore<Event>>>,
}

/// The key ring of every fixture.
pub fn keys() -> CodeKeyRing {
    CodeKeyRing::new(CodeKey::new(KeyId::new("test-key"), &[0x5a; 32]))
}

/// The abuse policy of the flow suite, which tests a registration's life, not the abuse rules
/// (`tests/abuse.rs` does, on the default policy): no send budgets or registration cap, and
/// the instance setting that lets users ask for their code in the response.
pub fn flow_policy() -> AbusePolicy {
    let mut policy = AbusePolicy::unlimited();
    policy.allow_self_return_code = true;
    policy
}

impl Fixture {
    /// A fixture on `backend`, with the flow suite's lenient abuse policy
    /// ([`flow_policy`]) for its instance.
    pub async fn new(backend: Backend) -> Self {
        Self::with_abuse_policy(backend, flow_policy()).await
    }

    /// A fixture on `backend` whose instance has the abuse policy `policy`, with the budget
    /// store of the backend: in process on the fixture's clock, or PostgreSQL's in the
    /// fixture's schema (on the database's clock). Users `u0` … `u99` of `org-1` exist too.
    pub async fn with_abuse_policy(backend: Backend, policy: AbusePolicy) -> Self {
        Self::wrapping(backend, policy, |store| store).await
    }

    /// As [`Fixture::with_abuse_policy`], the service's store being `wrap` of the backend's
    /// (a [`crate::faults::FaultyStore`], say); [`Fixture::store`] is the unwrapped one.
    pub async fn wrapping(
        backend: Backend,
        policy: AbusePolicy,
        wrap: impl FnOnce(Arc<dyn EventStore<Event>>) -> Arc<dyn EventStore<Event>>,
    ) -> Self {
        // Microseconds: what PostgreSQL keeps.
        let start = Utc::now()
            .duration_trunc(chrono::Duration::microseconds(1))
            .expect("truncate");
        let clock = Arc::new(ManualClock::new(start));
        let pg = match backend {
            Backend::Memory => None,
            Backend::Postgres => Some(Arc::new(pg::fresh_store::<Event>().await)),
        };
        Self::build(pg, policy, wrap, clock)
    }

    /// A fixture on a PostgreSQL store of the caller's (one reached through a proxy, say),
    /// migrated already, with `policy` for its instance.
    pub fn on_postgres(store: PgStore<Event>, policy: AbusePolicy) -> Self {
        Self::on_postgres_shared(Arc::new(store), policy)
    }

    /// As [`Fixture::on_postgres`], the test keeping a handle on the store.
    pub fn on_postgres_shared(store: Arc<PgStore<Event>>, policy: AbusePolicy) -> Self {
        let start = Utc::now()
            .duration_trunc(chrono::Duration::microseconds(1))
            .expect("truncate");
        let clock = Arc::new(ManualClock::new(start));
        Self::build(Some(store), policy, |store| store, clock)
    }

    fn build(
        pg: Option<Arc<PgStore<Event>>>,
        policy: AbusePolicy,
        wrap: impl FnOnce(Arc<dyn EventStore<Event>>) -> Arc<dyn EventStore<Event>>,
        clock: Arc<ManualClock>,
    ) -> Self {
        let store: Arc<dyn EventStore<Event>> = match &pg {
            None => Arc::new(MemoryStore::with_clock(clock.clone())),
            Some(pg) => pg.clone(),
        };
        let many = (0..100).fold(StaticUsers::new(), |d, i| {
            d.with_user(INSTANCE, &format!("u{i}"), "org-1")
        });
        let users = Arc::new(
            many.with_user(INSTANCE, "user-1", "org-1")
                .with_user(INSTANCE, "user-2", "org-1")
                .with_user(INSTANCE, "admin", "org-1")
                .with_user(INSTANCE, "stranger", "org-2")
                .with_domain(INSTANCE, "org-1.example.com", "org-1"),
        );
        let authorizer =
            Arc::new(StaticAuthorizer::new().grant(INSTANCE, "admin", "org-1", "user.write"));
        let mut service =
            CommandService::new(wrap(store.clone()), users.clone(), authorizer, keys())
                .with_clock(clock.clone())
                .with_instance_abuse_policy(
                    InstanceId::parse("instance", INSTANCE).expect("valid"),
                    policy,
                )
                .expect("a valid policy");
        if let Some(pg) = &pg {
            let budgets = PgBudgets::new(pg.pool().clone(), pg.schema()).expect("schema");
            let records = PgIdempotency::new(pg.pool().clone(), pg.schema()).expect("schema");
            service = service
                .with_budget_store(Arc::new(budgets))
                .with_idempotency_store(Arc::new(records));
        }
        Self {
            service,
            store,
            clock,
            users,
            sender: Arc::new(RecordingSender::new()),
            pg,
        }
    }

    /// The same fixture, its service keeping a [`otp_sms_core::StreamCache`] of `capacity`
    /// streams.
    pub fn with_stream_cache(mut self, capacity: usize) -> Self {
        self.service = self.service.with_stream_cache(capacity);
        self
    }

    /// Another service on the same store, clock and doubles, without a stream cache: another
    /// process sharing the database.
    pub fn other_process(&self) -> CommandService {
        self.service.clone().with_stream_cache(0)
    }

    /// The PostgreSQL store, on that backend.
    pub fn postgres(&self) -> Option<&Arc<PgStore<Event>>> {
        self.pg.as_ref()
    }

    /// Drops the PostgreSQL schema, if any.
    pub async fn finish(self) {
        if let Some(pg) = self.pg {
            pg::drop_store(&pg).await;
        }
    }

    /// A caller in the fixture's instance.
    pub fn caller(principal: &str) -> Caller {
        Caller::new(
            InstanceId::parse("instance", INSTANCE).expect("valid"),
            PrincipalId::parse("principal", principal).expect("valid"),
        )
    }

    /// `+41791234567` is added for `user`: by the user, or, as `is_verified`, by `admin`
    /// (only holders of `user.write` may vouch for a number).
    pub async fn add(&self, user: &str, verification: PhoneVerification) -> AddResponse {
        let caller = match verification {
            PhoneVerification::IsVerified(_) => Self::caller("admin"),
            _ => Self::caller(user),
        };
        self.service
            .add(
                &caller,
                AddRequest {
                    user_id: user.to_owned(),
                    organization: None,
                    phone: "+41791234567".to_owned(),
                    verification,
                },
            )
            .await
            .expect("add")
    }

    /// Waits out an outbox lease on both clocks: the database's and the fixture's.
    pub async fn let_lease_run_out(&self, lease: std::time::Duration) {
        let margin = std::time::Duration::from_millis(200);
        tokio::time::sleep(lease + margin).await;
        self.clock
            .advance(chrono::Duration::from_std(lease + margin).expect("small duration"));
    }

    /// Every event in the store, in feed order.
    pub async fn feed(&self) -> Recorded<Event> {
        self.store.read_all(0, usize::MAX).await.expect("read_all")
    }
}
