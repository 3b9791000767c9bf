//! The idempotency store conformance suite: what every [`IdempotencyStore`] must do.
//!
//! The [`idempotency_conformance_tests!`](crate::idempotency_conformance_tests) macro turns
//! every case into a `#[test]`, each with a time-out that names the case.
//!
//! Decisions the suite pins (see `docs/api.md`, idempotency keys):
//! - the first claim of a key records its record; later claims see that record, whatever they
//!   bring, with when it was recorded;
//! - keys are unique per instance and principal: the same key elsewhere is another key;
//! - a record lapses after the `keep` of its claim, and the key is then new again;
//! - of claims that race on one key, exactly one records, and all see the same record;
//! - a record keeps every field as given, a sealed code included.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use otp_sms_core::{
    Claim, CodeBinding, CodeKey, CodeKeyRing, CommandId, IdempotencyKey, IdempotencyRecord,
    IdempotencyScope, IdempotencyStore, InstanceId, KeyId, PrincipalId, RegistrationId,
    VerificationCode,
};

/// Makes fresh, empty idempotency stores: each call a store of its own (its own schema).
#[async_trait]
pub trait IdempotencyStoreFactory: Send + Sync {
    /// The store under test.
    type Store: IdempotencyStore + 'static;
    /// A fresh, empty store.
    async fn create(&self) -> Self::Store;
    /// Called after a case passed; drop the schema here.
    async fn dispose(&self, _store: Arc<Self::Store>) {}
    /// How long one case may take, creation and disposal included, before it fails as hung.
    fn case_timeout(&self) -> Duration {
        crate::runner::DEFAULT_CASE_TIMEOUT
    }
}

/// Generates one `#[test]` (see [`crate::runner::run_case`]) per idempotency conformance case for an
/// [`IdempotencyStoreFactory`].
#[macro_export]
macro_rules! idempotency_conformance_tests {
    ($factory:expr) => {
        $crate::idempotency_conformance_tests!(@cases $factory;
            the_first_claim_records_and_later_ones_see_it,
            scopes_never_mix,
            a_record_lapses_after_its_keep,
            racing_claims_record_exactly_once,
            a_record_keeps_every_field,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let factory = $factory;
                let limit = $crate::idempotency::IdempotencyStoreFactory::case_timeout(&factory);
                $crate::runner::run_case("idempotency", stringify!($case), limit, move || async move {
                    let store = ::std::sync::Arc::new($crate::idempotency::IdempotencyStoreFactory::create(&factory).await);
                    $crate::idempotency::$case(::std::sync::Arc::clone(&store)).await;
                    $crate::idempotency::IdempotencyStoreFactory::dispose(&factory, store).await;
                });
            }
        )*
    };
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

fn scope(instance: &str, principal: &str, key: &str) -> IdempotencyScope {
    IdempotencyScope {
        instance: InstanceId::parse("instance", instance).expect("valid"),
        principal: PrincipalId::parse("principal", principal).expect("valid"),
        key: IdempotencyKey::parse(key).expect("valid"),
    }
}

fn record(registration: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        fingerprint: format!("fingerprint-of-{registration}"),
        command: CommandId::generate(),
        registration: RegistrationId::parse("otp_sms_id", registration).expect("valid"),
        sealed_code: None,
    }
}

async fn claim<S: IdempotencyStore + ?Sized>(
    store: &S,
    scope: &IdempotencyScope,
    record: &IdempotencyRecord,
    keep: Duration,
) -> Claim {
    store.claim(scope, record, keep).await.expect("claim")
}

fn existing(claim: Claim) -> IdempotencyRecord {
    match claim {
        Claim::Existing { record, .. } => record,
        Claim::New => panic!("expected the key's record, got a new claim"),
    }
}

/// Given a claimed key, when claimed again with another record, then the first record stands.
pub async fn the_first_claim_records_and_later_ones_see_it<S: IdempotencyStore>(store: Arc<S>) {
    let key = scope("i1", "p1", "key-1");
    let first = record("r1");
    assert_eq!(claim(&*store, &key, &first, DAY).await, Claim::New);
    let before = chrono::Utc::now();
    for _ in 0..3 {
        let again = claim(&*store, &key, &record("r2"), DAY).await;
        let Claim::Existing { record, at } = again else {
            panic!("the key is taken: {again:?}");
        };
        assert_eq!(record, first);
        // Recorded by the first claim, not now (a second of slack for a database's clock).
        assert!(
            at <= before + chrono::Duration::seconds(1),
            "{at} vs {before}"
        );
    }
}

/// The same key of another principal, or of another instance, is another key.
pub async fn scopes_never_mix<S: IdempotencyStore>(store: Arc<S>) {
    let a = record("ra");
    assert_eq!(
        claim(&*store, &scope("i1", "p1", "k"), &a, DAY).await,
        Claim::New
    );
    let b = record("rb");
    assert_eq!(
        claim(&*store, &scope("i1", "p2", "k"), &b, DAY).await,
        Claim::New
    );
    let c = record("rc");
    assert_eq!(
        claim(&*store, &scope("i2", "p1", "k"), &c, DAY).await,
        Claim::New
    );
    // Parts that would run together if joined naively.
    let d = record("rd");
    assert_eq!(
        claim(&*store, &scope("i1p", "1", "k"), &d, DAY).await,
        Claim::New
    );
    assert_eq!(
        existing(claim(&*store, &scope("i1", "p1", "k"), &d, DAY).await),
        a
    );
    assert_eq!(
        existing(claim(&*store, &scope("i1", "p2", "k"), &d, DAY).await),
        b
    );
    assert_eq!(
        existing(claim(&*store, &scope("i2", "p1", "k"), &d, DAY).await),
        c
    );
}

/// Given a record kept for 300 ms, when the time has passed, then the key is new again.
pub async fn a_record_lapses_after_its_keep<S: IdempotencyStore>(store: Arc<S>) {
    let key = scope("i1", "p1", "short");
    let keep = Duration::from_millis(300);
    assert_eq!(claim(&*store, &key, &record("r1"), keep).await, Claim::New);
    assert!(matches!(
        claim(&*store, &key, &record("r2"), keep).await,
        Claim::Existing { .. }
    ));
    tokio::time::sleep(keep + Duration::from_millis(200)).await;
    let third = record("r3");
    assert_eq!(claim(&*store, &key, &third, keep).await, Claim::New);
    assert_eq!(
        existing(claim(&*store, &key, &record("r4"), keep).await),
        third
    );
}

/// Given 20 claims of one key at once, then exactly one records and all see its record.
pub async fn racing_claims_record_exactly_once<S: IdempotencyStore + 'static>(store: Arc<S>) {
    let key = scope("i1", "p1", "raced");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            let key = key.clone();
            tokio::spawn(async move {
                let mine = record(&format!("r{i}"));
                let outcome = store.claim(&key, &mine, DAY).await.expect("claim");
                (mine, outcome)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut seen = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            (mine, Claim::New) => winners.push(mine),
            (_, Claim::Existing { record, .. }) => seen.push(record),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one claim records");
    assert!(
        seen.iter().all(|r| *r == winners[0]),
        "all see the winner's record"
    );
}

/// A record with a sealed code comes back whole, and the code opens.
pub async fn a_record_keeps_every_field<S: IdempotencyStore>(store: Arc<S>) {
    let keys = CodeKeyRing::new(CodeKey::new(KeyId::new("k1"), &[7; 32]));
    let registration = RegistrationId::parse("otp_sms_id", "r-sealed").expect("valid");
    let code = VerificationCode::from_input("12345678").expect("valid");
    let binding = CodeBinding {
        registration: &registration,
        number: 0,
    };
    let sealed = keys.seal(binding, &code, &mut rand::thread_rng());
    let first = IdempotencyRecord {
        fingerprint: "f".repeat(64),
        command: CommandId::generate(),
        registration: registration.clone(),
        sealed_code: Some(sealed),
    };
    let key = scope("i1", "p1", &"k".repeat(255));
    assert_eq!(claim(&*store, &key, &first, DAY).await, Claim::New);
    let back = existing(claim(&*store, &key, &record("other"), DAY).await);
    assert_eq!(back, first);
    let binding = CodeBinding {
        registration: &registration,
        number: 0,
    };
    let opened = keys
        .open(binding, back.sealed_code.as_ref().expect("sealed"))
        .expect("opens");
    assert_eq!(opened.expose(), "12345678");
}
