//! `proptest` strategies for steps and whole scenarios: of one registration ([`scenario`]),
//! or of several users with several registrations each ([`fleet`]).
//!
//! ```
//! use proptest::prelude::*;
//! use proptest::test_runner::TestRunner;
//! use otp_sms_core::CodePolicy;
//! use otp_sms_testkit::scenario::{AggregateSim, Model, Step};
//! use otp_sms_testkit::strategies::scenario;
//!
//! // A model-based property: the aggregate does what the reference model says.
//! TestRunner::default()
//!     .run(&scenario(20), |steps| {
//!         prop_assert!(matches!(steps[0], Step::Add(_)));
//!         let mut sim = AggregateSim::new(CodePolicy::default());
//!         let mut model = Model::new(CodePolicy::default());
//!         for step in steps {
//!             let expected = model.step(step, sim.now);
//!             prop_assert_eq!(sim.step(step).0, expected);
//!         }
//!         Ok(())
//!     })
//!     .unwrap();
//! ```

use otp_sms_core::Delivery;
use proptest::prelude::*;

use crate::scenario::{AddKind, Aimed, OddCode, Step, BINDINGS};

/// Any way to add.
pub fn add_kind() -> impl Strategy<Value = AddKind> {
    prop_oneof![
        Just(AddKind::Send),
        Just(AddKind::Return),
        Just(AddKind::Verified)
    ]
}

/// Any odd code: empty, 200 or 201 characters, ASCII or multi-byte.
pub fn odd_code() -> impl Strategy<Value = OddCode> {
    prop_oneof![
        Just(OddCode::Empty),
        Just(OddCode::Ascii200),
        Just(OddCode::Ascii201),
        Just(OddCode::Multibyte200),
        Just(OddCode::Multibyte201),
    ]
}

/// Either delivery.
pub fn delivery() -> impl Strategy<Value = Delivery> {
    prop_oneof![Just(Delivery::Send), Just(Delivery::Return)]
}

/// Clock moves that land on and straddle every limit: the resend interval (60 s), the code
/// life (300 s), the hourly window (3600 s).
pub fn advance() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(1u32),
        Just(30),
        Just(59),
        Just(60),
        Just(61),
        Just(240),
        Just(300),
        Just(301),
        Just(1800),
        Just(3601)
    ]
}

/// Any step after the add, weighted towards the interesting ones: the registration's own
/// codes, and sign-in once it is verified ([`sign_in_step`]).
pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => Just(Step::VerifyRight),
        6 => Just(Step::VerifyWrong),
        2 => odd_code().prop_map(Step::VerifyOdd),
        4 => delivery().prop_map(Step::Resend),
        2 => any::<bool>().prop_map(|stale| Step::RecordCodeSent { stale }),
        1 => Just(Step::Remove),
        5 => advance().prop_map(Step::Advance),
        10 => sign_in_step(),
    ]
}

/// A sign-in step under one of the scenarios' bindings: a challenge, the right code, a code of
/// another binding's challenge, a wrong code.
pub fn sign_in_step() -> impl Strategy<Value = Step> {
    let binding = || 0..BINDINGS;
    prop_oneof![
        4 => (binding(), delivery()).prop_map(|(binding, delivery)| Step::Challenge { binding, delivery }),
        3 => binding().prop_map(|b| Step::Check { code_of: b, on: b }),
        1 => (binding(), binding()).prop_map(|(code_of, on)| Step::Check { code_of, on }),
        2 => binding().prop_map(|on| Step::CheckWrong { on }),
    ]
}

/// An add followed by up to `max_steps` steps.
pub fn scenario(max_steps: usize) -> impl Strategy<Value = Vec<Step>> {
    (add_kind(), prop::collection::vec(step(), 0..=max_steps)).prop_map(|(kind, rest)| {
        let mut steps = Vec::with_capacity(rest.len() + 1);
        steps.push(Step::Add(kind));
        steps.extend(rest);
        steps
    })
}

/// Scenarios of `users` users with `registrations` registrations each: every slot is added
/// first (in an order and with kinds of the strategy's choosing), then up to `max_steps` steps
/// aimed at any slot, interleaved, with clock moves that all slots share.
///
/// ```
/// use proptest::strategy::{Strategy, ValueTree};
/// use proptest::test_runner::TestRunner;
/// use otp_sms_testkit::scenario::Step;
/// let steps = otp_sms_testkit::strategies::fleet(3, 2, 10)
///     .new_tree(&mut TestRunner::default())
///     .unwrap()
///     .current();
/// let adds = steps.iter().filter(|a| matches!(a.step, Step::Add(_))).count();
/// assert_eq!(adds, 6);
/// assert!(steps.iter().all(|a| a.user < 3 && a.registration < 2));
/// ```
pub fn fleet(
    users: usize,
    registrations: usize,
    max_steps: usize,
) -> impl Strategy<Value = Vec<Aimed>> {
    let users = users.max(1);
    let registrations = registrations.max(1);
    let slots: Vec<(usize, usize)> = (0..users)
        .flat_map(|u| (0..registrations).map(move |r| (u, r)))
        .collect();
    let adds = prop::collection::vec(add_kind(), slots.len()).prop_flat_map(move |kinds| {
        let slots = slots.clone();
        Just(
            slots
                .into_iter()
                .zip(kinds)
                .map(|((user, registration), kind)| Aimed {
                    user,
                    registration,
                    step: Step::Add(kind),
                })
                .collect::<Vec<_>>(),
        )
        .prop_shuffle()
    });
    let rest = prop::collection::vec(
        (0..users, 0..registrations, step()).prop_map(|(user, registration, step)| Aimed {
            user,
            registration,
            step,
        }),
        0..=max_steps,
    );
    (adds, rest).prop_map(|(mut adds, rest)| {
        adds.extend(rest);
        adds
    })
}
