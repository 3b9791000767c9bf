//! Property: the in-process budget store, PostgreSQL's and SQLite's answer every sequence of
//! takes, releases and clears alike, so a host that moves from one to another keeps its limits.
//! Windows and holds are an hour long, so the two clocks (the process's and the database's)
//! never decide an outcome; what is compared is each take's outcome (taken, or which budget
//! refused and whether a time is given), each release's and clear's answer, and the members
//! every key holds at the end.

use std::sync::Arc;
use std::time::Duration;

use otp_sms_core::{BudgetStore, BudgetTake, MemoryBudgets, Rule, TakeOutcome, TakeRequest};
use otp_sms_postgres::testing::PgBudgetsFactory;
use otp_sms_sqlite::testing::SqliteBudgetsFactory;
use otp_sms_testkit::budgets::BudgetStoreFactory;
use proptest::prelude::*;

const HOUR: Duration = Duration::from_secs(3600);

/// The keys of a case, each with the rules every take under it names: two window keys, a
/// held key, and a gate that other takes fill with held entries (as a user's verification
/// lock is).
#[derive(Debug, Clone)]
struct Keys {
    window_a: Vec<Rule>,
    window_b: Vec<Rule>,
    held: Rule,
}

const KEYS: [&str; 4] = ["window-a", "window-b", "held", "gate"];

fn windows() -> impl Strategy<Value = Vec<Rule>> {
    prop::collection::vec(
        (0u32..4).prop_map(|max| Rule::Window { max, window: HOUR }),
        1..3,
    )
}

fn keys() -> impl Strategy<Value = Keys> {
    (windows(), windows(), 0u32..3).prop_map(|(window_a, window_b, max)| Keys {
        window_a,
        window_b,
        held: Rule::Held { max, hold: HOUR },
    })
}

#[derive(Debug, Clone)]
enum Step {
    /// A take of these budgets (key index, and whether the gate is closed by it or checked).
    Take {
        budgets: Vec<u8>,
        member: u8,
    },
    Release {
        key: u8,
        member: u8,
    },
    Clear {
        key: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (prop::sample::subsequence(vec![0u8, 1, 2, 3, 4], 1..4), 0u8..4)
            .prop_map(|(budgets, member)| Step::Take { budgets, member }),
        2 => (0u8..4, 0u8..4).prop_map(|(key, member)| Step::Release { key, member }),
        1 => (0u8..4).prop_map(|key| Step::Clear { key }),
    ]
}

/// The budget of index `i`: 0 and 1 the windows, 2 the held key, 3 a check of the gate
/// (`Absent`), 4 an entry held under the gate (closing it).
fn budget(keys: &Keys, i: u8, member: &str) -> BudgetTake {
    let (key, rules) = match i {
        0 => (KEYS[0], keys.window_a.clone()),
        1 => (KEYS[1], keys.window_b.clone()),
        2 => (KEYS[2], vec![keys.held]),
        3 => (KEYS[3], vec![Rule::Absent]),
        _ => (
            KEYS[3],
            vec![Rule::Held {
                max: u32::MAX,
                hold: HOUR,
            }],
        ),
    };
    BudgetTake {
        key: key.to_owned(),
        member: member.to_owned(),
        rules,
    }
}

/// What a store answered, with the retry time reduced to whether there is one.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Taken,
    Refused { take: usize, timed: bool },
    Released(bool),
    Cleared(u64),
}

async fn answer(store: &dyn BudgetStore, keys: &Keys, step: &Step) -> Answer {
    match step {
        Step::Take { budgets, member } => {
            let member = format!("m{member}");
            // Checking the gate and closing it in one take would contradict itself: keep one.
            let budgets: Vec<u8> = budgets
                .iter()
                .copied()
                .filter(|b| *b != 4 || !budgets.contains(&3))
                .collect();
            let request = TakeRequest {
                takes: budgets.iter().map(|b| budget(keys, *b, &member)).collect(),
            };
            match store.take(&request).await.expect("take") {
                TakeOutcome::Taken => Answer::Taken,
                TakeOutcome::Refused { take, retry_after } => Answer::Refused {
                    take,
                    timed: retry_after.is_some(),
                },
            }
        }
        Step::Release { key, member } => Answer::Released(
            store
                .release(KEYS[*key as usize], &format!("m{member}"))
                .await
                .expect("release"),
        ),
        Step::Clear { key } => {
            Answer::Cleared(store.clear(KEYS[*key as usize]).await.expect("clear"))
        }
    }
}

async fn members(store: &dyn BudgetStore) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for key in KEYS {
        let mut names: Vec<String> = store
            .members(key)
            .await
            .expect("members")
            .into_iter()
            .map(|m| m.member)
            .collect();
        names.sort();
        all.push(names);
    }
    all
}

async fn run(keys: Keys, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let memory = MemoryBudgets::new();
    let factory = PgBudgetsFactory;
    let postgres = Arc::new(factory.create().await);
    let sqlite = SqliteBudgetsFactory.create().await;
    for (i, step) in steps.iter().enumerate() {
        let in_memory = answer(&memory, &keys, step).await;
        let in_postgres = answer(&*postgres, &keys, step).await;
        let in_sqlite = answer(&sqlite, &keys, step).await;
        prop_assert_eq!(
            &in_memory,
            &in_postgres,
            "step {}: {:?} (PostgreSQL)",
            i,
            step
        );
        prop_assert_eq!(&in_memory, &in_sqlite, "step {}: {:?} (SQLite)", i, step);
    }
    prop_assert_eq!(members(&memory).await, members(&*postgres).await);
    prop_assert_eq!(members(&memory).await, members(&sqlite).await);
    factory.dispose(postgres).await;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48)
    ))]

    #[test]
    fn memory_postgres_and_sqlite_budgets_answer_alike(keys in keys(), steps in prop::collection::vec(step(), 1..40)) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run(keys, steps))?;
    }
}
