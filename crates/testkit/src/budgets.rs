//! The budget store conformance suite: what every [`BudgetStore`] must do, on its own clock.
//!
//! Cases use short real windows (about a second), so a store on the database's clock is tested
//! as it runs. The [`budget_conformance_tests!`](crate::budget_conformance_tests) macro turns
//! every case into a `#[test]`, each with a time-out that names the case.
//!
//! Decisions the suite pins (see `docs/security.md`):
//! - a take is all or none, and exact under concurrency;
//! - a window counts the takes of the last `window`, and admits again once the oldest that must
//!   leave has left; the refusal says when, within the window;
//! - held entries count until their hold ends or a release frees them; a refusal says when the
//!   soonest lapses;
//! - a member recorded under a key is admitted again without being counted twice (a retry);
//! - a busy key refuses exactly at its max;
//! - an `Absent` rule admits only while nothing counts under its key, and adds nothing;
//! - `members` lists what counts, oldest first; `clear` ends it all and says how much counted.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use otp_sms_core::{BudgetStore, BudgetTake, Rule, TakeOutcome, TakeRequest};

/// Makes fresh, empty budget stores: each call a store of its own (its own schema).
#[async_trait]
pub trait BudgetStoreFactory: Send + Sync {
    /// The store under test.
    type Store: BudgetStore + 'static;
    /// A fresh, empty store.
    async fn create(&self) -> Self::Store;
    /// Called after a case passed; drop the schema here.
    async fn dispose(&self, _store: Arc<Self::Store>) {}
    /// How long one case may take, creation and disposal included, before it fails as hung.
    fn case_timeout(&self) -> Duration {
        crate::runner::DEFAULT_CASE_TIMEOUT
    }
}

/// Generates one `#[test]` (see [`crate::runner::run_case`]) per budget conformance case for a [`BudgetStoreFactory`].
#[macro_export]
macro_rules! budget_conformance_tests {
    ($factory:expr) => {
        $crate::budget_conformance_tests!(@cases $factory;
            a_window_admits_its_max_then_refuses_then_slides,
            several_windows_on_one_key_all_apply,
            a_take_is_all_or_none,
            concurrent_takes_are_exact_at_the_boundary,
            a_repeated_take_counts_once,
            a_busy_key_refuses_exactly_at_its_max,
            held_entries_count_until_released_or_lapsed,
            keys_never_mix,
            release_of_a_missing_entry_says_so,
            an_absent_rule_admits_only_while_its_key_is_empty,
            members_and_clear_see_what_counts,
            a_rule_of_zero_admits_nothing,
            a_released_entry_stops_counting_in_its_window,
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let factory = $factory;
                let limit = $crate::budgets::BudgetStoreFactory::case_timeout(&factory);
                $crate::runner::run_case("budget", stringify!($case), limit, move || async move {
                    let store = ::std::sync::Arc::new($crate::budgets::BudgetStoreFactory::create(&factory).await);
                    $crate::budgets::$case(::std::sync::Arc::clone(&store)).await;
                    $crate::budgets::BudgetStoreFactory::dispose(&factory, store).await;
                });
            }
        )*
    };
}

fn window(max: u32, millis: u64) -> Rule {
    Rule::Window {
        max,
        window: Duration::from_millis(millis),
    }
}

fn held(max: u32, millis: u64) -> Rule {
    Rule::Held {
        max,
        hold: Duration::from_millis(millis),
    }
}

fn one(key: &str, member: &str, rules: Vec<Rule>) -> TakeRequest {
    TakeRequest {
        takes: vec![BudgetTake {
            key: key.to_owned(),
            member: member.to_owned(),
            rules,
        }],
    }
}

async fn names<S: BudgetStore + ?Sized>(store: &S, key: &str) -> Vec<String> {
    store
        .members(key)
        .await
        .expect("members")
        .into_iter()
        .map(|m| m.member)
        .collect()
}

async fn take<S: BudgetStore + ?Sized>(store: &S, request: &TakeRequest) -> TakeOutcome {
    store.take(request).await.expect("take")
}

fn refused_within(outcome: TakeOutcome, take: usize, at_most: Duration) {
    match outcome {
        TakeOutcome::Refused {
            take: t,
            retry_after: Some(after),
        } => {
            assert_eq!(t, take, "the refusing budget");
            assert!(
                after <= at_most,
                "retry after {after:?}, more than {at_most:?}"
            );
        }
        other => panic!("expected a refusal of budget {take} with a retry time, got {other:?}"),
    }
}

/// Given a window of 3 per 1.5 s, when 3 takes, then a 4th is refused (retry within the
/// window); once the window has slid past the first takes, takes are admitted again.
pub async fn a_window_admits_its_max_then_refuses_then_slides<S: BudgetStore>(store: Arc<S>) {
    let rule = window(3, 1500);
    for i in 0..3 {
        assert_eq!(
            take(&*store, &one("k", &format!("m{i}"), vec![rule])).await,
            TakeOutcome::Taken,
            "take {i}"
        );
    }
    let refused = take(&*store, &one("k", "m3", vec![rule])).await;
    refused_within(refused, 0, Duration::from_millis(1500));
    let TakeOutcome::Refused {
        retry_after: Some(after),
        ..
    } = refused
    else {
        unreachable!()
    };
    tokio::time::sleep(after + Duration::from_millis(150)).await;
    assert_eq!(
        take(&*store, &one("k", "m4", vec![rule])).await,
        TakeOutcome::Taken,
        "admitted once the window slid"
    );
}

/// Given 2 per 300 ms and 3 per 5 s on one key, the short window refuses the third take, and
/// once it has slid, the long one refuses the fourth.
pub async fn several_windows_on_one_key_all_apply<S: BudgetStore>(store: Arc<S>) {
    let rules = vec![window(2, 300), window(3, 5000)];
    for i in 0..2 {
        assert_eq!(
            take(&*store, &one("k", &format!("a{i}"), rules.clone())).await,
            TakeOutcome::Taken
        );
    }
    refused_within(
        take(&*store, &one("k", "a2", rules.clone())).await,
        0,
        Duration::from_millis(300),
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        take(&*store, &one("k", "a3", rules.clone())).await,
        TakeOutcome::Taken
    );
    refused_within(
        take(&*store, &one("k", "a4", rules)).await,
        0,
        Duration::from_millis(5000),
    );
}

/// Given a full budget B, when a take asks for A (room) and B, then it is refused by B and A
/// keeps all its room.
pub async fn a_take_is_all_or_none<S: BudgetStore>(store: Arc<S>) {
    assert_eq!(
        take(&*store, &one("b", "x", vec![window(1, 60_000)])).await,
        TakeOutcome::Taken
    );
    let both = |m: &str| TakeRequest {
        takes: vec![
            BudgetTake {
                key: "a".into(),
                member: m.into(),
                rules: vec![window(2, 60_000)],
            },
            BudgetTake {
                key: "b".into(),
                member: m.into(),
                rules: vec![window(1, 60_000)],
            },
        ],
    };
    for m in ["y1", "y2", "y3"] {
        refused_within(take(&*store, &both(m)).await, 1, Duration::from_secs(60));
    }
    for m in ["z1", "z2"] {
        assert_eq!(
            take(&*store, &one("a", m, vec![window(2, 60_000)])).await,
            TakeOutcome::Taken,
            "a kept its room"
        );
    }
    refused_within(
        take(&*store, &one("a", "z3", vec![window(2, 60_000)])).await,
        0,
        Duration::from_secs(60),
    );
}

/// Given a shared budget of 5, when 50 takes run at once, each first taking from a budget of
/// its own and then from the shared one, then exactly 5 are taken, the shared key lists
/// exactly their 5 members, and every refused take left nothing under its own key: a take
/// refused next to others (in one batch of a group-committing store) is still all or none.
pub async fn concurrent_takes_are_exact_at_the_boundary<S: BudgetStore + 'static>(store: Arc<S>) {
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let request = TakeRequest {
                    takes: vec![
                        BudgetTake {
                            key: format!("own-{i}"),
                            member: format!("t{i}"),
                            rules: vec![window(1, 60_000)],
                        },
                        BudgetTake {
                            key: "shared".into(),
                            member: format!("t{i}"),
                            rules: vec![window(5, 60_000)],
                        },
                    ],
                };
                (i, store.take(&request).await.expect("take"))
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        let (i, outcome) = task.await.expect("task");
        match outcome {
            TakeOutcome::Taken => winners.push(format!("t{i}")),
            TakeOutcome::Refused { take, .. } => assert_eq!(take, 1, "take {i}"),
        }
    }
    assert_eq!(winners.len(), 5);
    let mut shared = names(&*store, "shared").await;
    shared.sort();
    winners.sort();
    assert_eq!(shared, winners);
    for i in 0..50 {
        let own = names(&*store, &format!("own-{i}")).await;
        let won = winners.contains(&format!("t{i}"));
        assert_eq!(own.len(), usize::from(won), "own-{i}: {own:?}");
    }
}

/// Given a budget of 2 holding `m1` and `m2`, a take of `m1` again (a retry) is admitted and
/// counted once, together with a budget that has room; a new member is refused.
pub async fn a_repeated_take_counts_once<S: BudgetStore>(store: Arc<S>) {
    let rule = window(2, 60_000);
    for m in ["m1", "m2"] {
        assert_eq!(
            take(&*store, &one("k", m, vec![rule])).await,
            TakeOutcome::Taken
        );
    }
    let again = TakeRequest {
        takes: vec![
            BudgetTake {
                key: "k".into(),
                member: "m1".into(),
                rules: vec![rule],
            },
            BudgetTake {
                key: "other".into(),
                member: "m1".into(),
                rules: vec![window(1, 60_000)],
            },
        ],
    };
    assert_eq!(take(&*store, &again).await, TakeOutcome::Taken);
    // Counted once: the same take again changes nothing.
    assert_eq!(take(&*store, &again).await, TakeOutcome::Taken);
    refused_within(
        take(&*store, &one("k", "m3", vec![rule])).await,
        0,
        Duration::from_secs(60),
    );
    refused_within(
        take(&*store, &one("other", "m3", vec![window(1, 60_000)])).await,
        0,
        Duration::from_secs(60),
    );
}

/// A busy key (1,000 takes) refuses exactly at its max and reports when its oldest counted
/// take leaves the window; a smaller window on the same key looks only as far back as it
/// must.
pub async fn a_busy_key_refuses_exactly_at_its_max<S: BudgetStore>(store: Arc<S>) {
    let rules = vec![window(1000, 60_000), window(3, 500)];
    for i in 0..1000 {
        assert_eq!(
            take(
                &*store,
                &one("busy", &format!("m{i}"), vec![window(1000, 60_000)])
            )
            .await,
            TakeOutcome::Taken,
            "take {i}"
        );
    }
    refused_within(
        take(&*store, &one("busy", "over", rules.clone())).await,
        0,
        Duration::from_secs(60),
    );
    let fresh = vec![window(1000, 60_000), window(3, 500)];
    for i in 0..3 {
        assert_eq!(
            take(&*store, &one("quiet", &format!("q{i}"), fresh.clone())).await,
            TakeOutcome::Taken
        );
    }
    refused_within(
        take(&*store, &one("quiet", "q3", fresh.clone())).await,
        0,
        Duration::from_millis(500),
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        take(&*store, &one("quiet", "q4", fresh)).await,
        TakeOutcome::Taken
    );
}

/// Given at most 2 held entries, a third is refused until one is released or lapses, and the
/// refusal says when the soonest lapses.
pub async fn held_entries_count_until_released_or_lapsed<S: BudgetStore>(store: Arc<S>) {
    let rule = held(2, 800);
    // r1 is held far longer than the others.
    assert_eq!(
        take(&*store, &one("u", "r1", vec![held(2, 600_000)])).await,
        TakeOutcome::Taken
    );
    assert_eq!(
        take(&*store, &one("u", "r2", vec![rule])).await,
        TakeOutcome::Taken
    );
    refused_within(
        take(&*store, &one("u", "r3", vec![rule])).await,
        0,
        Duration::from_millis(800),
    );
    assert!(store.release("u", "r2").await.expect("release"));
    assert_eq!(
        take(&*store, &one("u", "r3", vec![rule])).await,
        TakeOutcome::Taken
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // r3 lapsed, r1 still counts; the refusal waits for the soonest to lapse (r4's).
    assert_eq!(
        take(&*store, &one("u", "r4", vec![rule])).await,
        TakeOutcome::Taken
    );
    refused_within(
        take(&*store, &one("u", "r5", vec![rule])).await,
        0,
        Duration::from_millis(800),
    );
}

/// Takes under one key never count under another, however alike their names.
pub async fn keys_never_mix<S: BudgetStore>(store: Arc<S>) {
    let rule = window(1, 60_000);
    for key in ["a", "a ", "A", "ab", "1:a|number|+41"] {
        assert_eq!(
            take(&*store, &one(key, "m", vec![rule])).await,
            TakeOutcome::Taken,
            "{key:?}"
        );
    }
}

/// A release of an entry that does not exist answers `false` and changes nothing.
pub async fn release_of_a_missing_entry_says_so<S: BudgetStore>(store: Arc<S>) {
    assert!(!store.release("k", "m").await.expect("release"));
    assert_eq!(
        take(&*store, &one("k", "m", vec![held(1, 60_000)])).await,
        TakeOutcome::Taken
    );
    assert!(!store.release("k", "other").await.expect("release"));
    assert!(store.release("k", "m").await.expect("release"));
    assert!(!store.release("k", "m").await.expect("release again"));
}

/// Given an empty key, an `Absent` take is admitted and adds nothing; once an entry counts
/// under the key, `Absent` refuses (with the entry's time left), together with anything it
/// was asked with; once the entry lapses, it admits again.
pub async fn an_absent_rule_admits_only_while_its_key_is_empty<S: BudgetStore>(store: Arc<S>) {
    let gated = |m: &str| TakeRequest {
        takes: vec![
            BudgetTake {
                key: "gate".into(),
                member: m.into(),
                rules: vec![Rule::Absent],
            },
            BudgetTake {
                key: "other".into(),
                member: m.into(),
                rules: vec![window(10, 60_000)],
            },
        ],
    };
    assert_eq!(take(&*store, &gated("a")).await, TakeOutcome::Taken);
    assert!(store.members("gate").await.expect("members").is_empty());
    assert_eq!(
        take(&*store, &one("gate", "lock", vec![held(5, 700)])).await,
        TakeOutcome::Taken
    );
    refused_within(
        take(&*store, &gated("b")).await,
        0,
        Duration::from_millis(700),
    );
    assert_eq!(names(&*store, "other").await, ["a"]);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(take(&*store, &gated("c")).await, TakeOutcome::Taken);
}

/// `members` lists the entries that count, oldest first (lapsed ones left out); `clear`
/// ends them all and counts those that counted.
pub async fn members_and_clear_see_what_counts<S: BudgetStore>(store: Arc<S>) {
    for (m, hold) in [("first", 60_000), ("short", 300), ("third", 60_000)] {
        assert_eq!(
            take(&*store, &one("k", m, vec![held(10, hold)])).await,
            TakeOutcome::Taken
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = store.members("k").await.expect("members");
    assert_eq!(
        all.iter().map(|m| m.member.as_str()).collect::<Vec<_>>(),
        ["first", "short", "third"]
    );
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at), "oldest first");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(names(&*store, "k").await, ["first", "third"]);
    assert_eq!(store.clear("k").await.expect("clear"), 2);
    assert!(store.members("k").await.expect("members").is_empty());
    assert_eq!(store.clear("k").await.expect("clear again"), 0);
    assert_eq!(
        take(&*store, &one("k", "first", vec![held(1, 60_000)])).await,
        TakeOutcome::Taken,
        "a cleared member may be taken again"
    );
}

/// Given a window or a hold of at most 0, when a first take on a key nobody used, then it is
/// refused, not by time alone, and nothing is recorded: an empty key is no exception.
pub async fn a_rule_of_zero_admits_nothing<S: BudgetStore>(store: Arc<S>) {
    for (key, rule) in [("w", window(0, 1000)), ("h", held(0, 1000))] {
        assert_eq!(
            take(&*store, &one(key, "m", vec![rule])).await,
            TakeOutcome::Refused {
                take: 0,
                retry_after: None
            },
            "{rule:?}"
        );
        assert!(names(&*store, key).await.is_empty(), "{rule:?}");
    }
}

/// Given a window of 3 per hour, full, when the second of its entries is released, then one
/// more take is admitted and the next refused: a released entry counts no more, wherever it
/// stood in the window.
pub async fn a_released_entry_stops_counting_in_its_window<S: BudgetStore>(store: Arc<S>) {
    let rule = window(3, 3_600_000);
    for member in ["m1", "m2", "m3"] {
        assert_eq!(
            take(&*store, &one("k", member, vec![rule])).await,
            TakeOutcome::Taken,
            "{member}"
        );
    }
    assert_ne!(
        take(&*store, &one("k", "m4", vec![rule])).await,
        TakeOutcome::Taken,
        "full"
    );
    assert!(store.release("k", "m2").await.expect("release"));
    assert_eq!(
        take(&*store, &one("k", "m4", vec![rule])).await,
        TakeOutcome::Taken,
        "the released place is free"
    );
    assert_ne!(
        take(&*store, &one("k", "m5", vec![rule])).await,
        TakeOutcome::Taken,
        "full again"
    );
    assert_eq!(names(&*store, "k").await, ["m1", "m3", "m4"]);
}
