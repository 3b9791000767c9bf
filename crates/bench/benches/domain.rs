//! Micro-benchmarks of the domain: deciding and applying, drawing a code, checking a code, and
//! one verify through the command service on the in-memory store.
//!
//! `cargo bench -p otp-sms-bench --bench domain`

use std::sync::Arc;

use criterion::{black_box, criterion_main, BatchSize, Criterion};
use otp_sms_core::{
    AddRequest, AddVerification, Caller, CodeBinding, CodeKey, CodeKeyRing, CodePolicy, Command,
    CommandService, Context, Event, InstanceId, KeyId, OrganizationId, Phone, PhoneVerification,
    PrincipalId, Registration, RegistrationId, UserId, VerificationCode, VerifyRequest,
};
use otp_sms_directory::StaticDirectory;
use otp_sms_memory::MemoryStore;

fn keys() -> CodeKeyRing {
    CodeKeyRing::new(CodeKey::new(KeyId::new("bench"), &[7; 32]))
}

fn domain(c: &mut Criterion) {
    let keys = keys();
    let policy = CodePolicy::default();
    let registration =
        RegistrationId::parse("otp_sms_id", "0192a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").unwrap();
    let user = UserId::parse("id", "user-1").unwrap();
    let now = chrono::Utc::now();
    let ctx = Context {
        registration: &registration,
        user: &user,
        now,
        policy: &policy,
        keys: &keys,
        test_code: None,
    };
    let code = VerificationCode::from_input("12345678").unwrap();
    let add = Command::Add {
        user: user.clone(),
        organization: OrganizationId::parse("org", "org-1").unwrap(),
        phone: Phone::parse("+41791234567").unwrap(),
        verification: AddVerification::ReturnCode(code.clone()),
    };
    let events: Vec<Event> = Registration::default().decide(&add, &ctx).events().to_vec();
    let state = Registration::from_events(&events);
    let verify = Command::Verify { code: code.clone() };

    c.bench_function("apply: rebuild from added + code added", |b| {
        b.iter(|| Registration::from_events(black_box(&events)))
    });
    c.bench_function("decide: verify with the right code", |b| {
        b.iter(|| black_box(&state).decide(black_box(&verify), &ctx))
    });
    c.bench_function("decide: add with return_code", |b| {
        b.iter(|| Registration::default().decide(black_box(&add), &ctx))
    });
    c.bench_function("code: generate 8 digits", |b| {
        let mut rng = rand::thread_rng();
        b.iter(|| VerificationCode::generate(8, &mut rng))
    });
    let binding = CodeBinding {
        registration: &registration,
        number: 1,
    };
    let hash = keys.hash(binding, &code);
    c.bench_function(
        "code: keyed hash check (HMAC-SHA-256, constant time)",
        |b| b.iter(|| keys.matches(binding, black_box(&code), &hash).unwrap()),
    );
    c.bench_function(
        "phone: parse plain +digits (own split, DFA validity)",
        |b| b.iter(|| Phone::parse(black_box("+41791234567")).unwrap()),
    );
    c.bench_function(
        "phone: parse formatted (phonenumber parse, DFA validity)",
        |b| b.iter(|| Phone::parse(black_box("+41 79 123 45 67")).unwrap()),
    );
}

fn service(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    // One user, acting for itself (no grants), in the library's static directory.
    let directory = Arc::new(StaticDirectory::new().with_user(
        InstanceId::parse("instance", "bench").unwrap(),
        UserId::parse("id", "user-1").unwrap(),
        OrganizationId::parse("org", "org-1").unwrap(),
    ));
    let service = CommandService::new(
        Arc::new(MemoryStore::<Event>::new()),
        directory.clone(),
        directory,
        keys(),
    );
    let caller = Caller::new(
        InstanceId::parse("instance", "bench").unwrap(),
        PrincipalId::parse("principal", "user-1").unwrap(),
    );
    let add = || AddRequest {
        user_id: "user-1".into(),
        organization: None,
        phone: "+41791234567".into(),
        verification: PhoneVerification::ReturnCode,
    };
    c.bench_function("service: add with return_code (memory store)", |b| {
        b.iter(|| rt.block_on(service.add(&caller, add())).unwrap())
    });
    c.bench_function("service: verify with the right code (memory store)", |b| {
        b.iter_batched(
            || {
                let added = rt.block_on(service.add(&caller, add())).unwrap();
                VerifyRequest {
                    user_id: "user-1".into(),
                    organization: None,
                    registration_id: added.registration_id.to_string(),
                    code: added.verification_code.unwrap().expose().to_owned(),
                }
            },
            |request| rt.block_on(service.verify(&caller, request)).unwrap(),
            BatchSize::SmallInput,
        )
    });
}

// criterion's macro generates an undocumented function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::domain, super::service);
}
criterion_main!(group::benches);
