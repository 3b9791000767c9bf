//! Property: over any sequence of adds, resends, deliveries and clock steps, from several
//! users at several addresses to numbers of two ranges, the codes issued for sending (and so
//! the SMS handed to the sender) never exceed any budget in any window, and no call fails
//! with anything but the refusals the rules name.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use otp_sms_core::{
    AbusePolicy, AddRequest, Delivery, Error, Limit, PhoneVerification, RegistrationRequest,
};
use otp_sms_tests::fixture::{Backend, Fixture};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    Add { user: u8, number: u8, address: u8 },
    Resend { registration: u8, address: u8 },
    Advance(u32),
    Deliver,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..4, 0u8..6, 0u8..3).prop_map(|(user, number, address)| Step::Add { user, number, address }),
        3 => (0u8..16, 0u8..3).prop_map(|(registration, address)| Step::Resend { registration, address }),
        2 => prop::sample::select(vec![1u32, 30, 61, 600, 3599, 3600, 86_400]).prop_map(Step::Advance),
        1 => Just(Step::Deliver),
    ]
}

fn policy() -> AbusePolicy {
    let m = |max, secs| Limit::new(max, Duration::from_secs(secs));
    AbusePolicy {
        max_registrations_per_user: 3,
        user: vec![m(3, 3600)],
        number: vec![m(2, 600), m(4, 3600)],
        range: vec![m(5, 3600)],
        address: vec![m(4, 3600)],
        instance: vec![m(8, 3600)],
        ..AbusePolicy::default()
    }
}

/// Numbers 0..3 share one range, 3..6 another.
fn number(n: u8) -> String {
    format!("+4179123{}{:03}", 4 + n / 3, n % 3)
}

/// One code issued for sending: when, to whom, where, from where.
#[derive(Debug, Clone)]
struct Sent {
    at: DateTime<Utc>,
    user: u8,
    number: u8,
    address: u8,
}

fn never_exceeds(sent: &[Sent], key: impl Fn(&Sent) -> String, limits: &[Limit], scope: &str) {
    for limit in limits {
        let window = chrono::Duration::from_std(limit.window).unwrap();
        for end in sent {
            let inside = sent
                .iter()
                .filter(|s| key(s) == key(end) && s.at <= end.at && s.at > end.at - window)
                .count();
            assert!(
                inside <= limit.max as usize,
                "{scope}: {inside} codes in a window of {:?} ending {} (limit {})",
                limit.window,
                end.at,
                limit.max
            );
        }
    }
}

async fn run(steps: Vec<Step>) {
    let p = policy();
    let f = Fixture::with_abuse_policy(Backend::Memory, p.clone()).await;
    let mut registrations: Vec<(u8, u8, String)> = Vec::new();
    let mut sent: Vec<Sent> = Vec::new();
    let address = |a: u8| Some(format!("198.51.100.{a}").parse::<IpAddr>().unwrap());
    for step in steps {
        match step {
            Step::Add {
                user,
                number: n,
                address: a,
            } => {
                let name = format!("u{user}");
                let caller = Fixture::caller(&name).with_address(address(a));
                let result = f
                    .service
                    .add(
                        &caller,
                        AddRequest {
                            user_id: name,
                            organization: None,
                            phone: number(n),
                            verification: PhoneVerification::SendCode,
                        },
                    )
                    .await;
                match result {
                    Ok(added) => {
                        registrations.push((user, n, added.registration_id.to_string()));
                        sent.push(Sent {
                            at: otp_sms_core::Clock::now(f.clock.as_ref()),
                            user,
                            number: n,
                            address: a,
                        });
                    }
                    Err(Error::SendRefused { .. }) => {}
                    Err(e) => panic!("add: {e:?}"),
                }
            }
            Step::Resend {
                registration,
                address: a,
            } => {
                let Some((user, n, id)) = registrations
                    .get(usize::from(registration) % registrations.len().max(1))
                    .cloned()
                else {
                    continue;
                };
                let name = format!("u{user}");
                let caller = Fixture::caller(&name).with_address(address(a));
                let result = f
                    .service
                    .resend_code(
                        &caller,
                        RegistrationRequest {
                            user_id: name,
                            organization: None,
                            registration_id: id,
                        },
                        Delivery::Send,
                    )
                    .await;
                match result {
                    Ok(_) => sent.push(Sent {
                        at: otp_sms_core::Clock::now(f.clock.as_ref()),
                        user,
                        number: n,
                        address: a,
                    }),
                    Err(Error::SendRefused { .. } | Error::RateLimited { .. }) => {}
                    Err(e) => panic!("resend: {e:?}"),
                }
            }
            Step::Advance(secs) => f.clock.advance(chrono::Duration::seconds(secs.into())),
            Step::Deliver => {
                f.service
                    .deliver_pending(f.sender.as_ref(), 1000, Duration::from_secs(30))
                    .await
                    .expect("deliver");
            }
        }
    }
    f.service
        .deliver_pending(f.sender.as_ref(), 1000, Duration::from_secs(30))
        .await
        .expect("deliver");
    assert!(
        f.sender.sent().len() <= sent.len(),
        "more SMS than codes issued"
    );
    never_exceeds(&sent, |s| s.user.to_string(), &p.user, "user");
    never_exceeds(&sent, |s| s.number.to_string(), &p.number, "number");
    never_exceeds(&sent, |s| (s.number / 3).to_string(), &p.range, "range");
    never_exceeds(&sent, |s| s.address.to_string(), &p.address, "address");
    never_exceeds(&sent, |_| String::new(), &p.instance, "instance");
    f.finish().await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(128)
    ))]

    #[test]
    fn sends_never_exceed_any_budget_in_any_window(steps in prop::collection::vec(step(), 1..60)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(steps));
    }
}
