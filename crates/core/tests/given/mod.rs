//! What the aggregate's specifications share: fixed ids, keys and times, and the
//! given-when-then scaffold (the events so far, then one command at one time).
#![allow(dead_code)] // Each specification uses its own part.

use chrono::{DateTime, Utc};
use otp_sms_core::*;

pub const T0: &str = "2026-01-01T12:00:00Z";

pub fn t(seconds: i64) -> DateTime<Utc> {
    T0.parse::<DateTime<Utc>>().unwrap() + chrono::Duration::seconds(seconds)
}

pub fn keys() -> CodeKeyRing {
    CodeKeyRing::new(CodeKey::new(KeyId::new("k1"), &[9; 32]))
}

pub fn reg() -> RegistrationId {
    RegistrationId::parse("otp_sms_id", "reg-1").unwrap()
}

pub fn user() -> UserId {
    UserId::parse("id", "user-1").unwrap()
}

pub fn org() -> OrganizationId {
    OrganizationId::parse("organization", "org-1").unwrap()
}

pub fn code(s: &str) -> VerificationCode {
    VerificationCode::from_input(s).unwrap()
}

pub const RIGHT: &str = "12345678";
pub const WRONG: &str = "87654321";

/// A scenario: the events so far, then one command at one time.
pub struct Given {
    pub events: Vec<Event>,
    pub policy: CodePolicy,
    pub user: UserId,
    pub test_code: Option<VerificationCode>,
}

pub fn given(events: Vec<Event>) -> Given {
    Given {
        events,
        policy: CodePolicy::default(),
        user: user(),
        test_code: None,
    }
}

impl Given {
    pub fn with_policy(mut self, policy: CodePolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn for_user(mut self, user: &str) -> Self {
        self.user = UserId::parse("id", user).unwrap();
        self
    }

    /// The registration's number is a test number whose fixed code is `code`.
    pub fn on_test_number(mut self, fixed: &str) -> Self {
        self.test_code = Some(code(fixed));
        self
    }

    pub fn when(&self, command: Command, at: DateTime<Utc>) -> Decision {
        let keys = keys();
        let registration = reg();
        let ctx = Context {
            registration: &registration,
            user: &self.user,
            now: at,
            policy: &self.policy,
            keys: &keys,
            test_code: self.test_code.as_ref(),
        };
        Registration::from_events(&self.events).decide(&command, &ctx)
    }
}

/// The events `add` records, with the code given, at time `at`.
pub fn added_events(delivery: Delivery, at: DateTime<Utc>) -> Vec<Event> {
    let cmd = Command::Add {
        user: user(),
        organization: org(),
        phone: Phone::parse("+41791234567").unwrap(),
        verification: match delivery {
            // A test number's delivery comes from the context, not the command.
            Delivery::Send | Delivery::Test => AddVerification::SendCode(code(RIGHT)),
            Delivery::Return => AddVerification::ReturnCode(code(RIGHT)),
        },
    };
    given(vec![]).when(cmd, at).events().to_vec()
}

pub fn added() -> Vec<Event> {
    added_events(Delivery::Return, t(0))
}

pub fn with(mut events: Vec<Event>, more: impl IntoIterator<Item = Event>) -> Vec<Event> {
    events.extend(more);
    events
}

pub fn verify(c: &str) -> Command {
    Command::Verify { code: code(c) }
}

pub fn resend(c: &str) -> Command {
    Command::ResendCode {
        code: code(c),
        delivery: Delivery::Send,
    }
}

pub fn rejected(error: Error) -> Decision {
    Decision::Rejected {
        events: vec![],
        error,
    }
}

pub fn precondition(p: Precondition) -> Decision {
    rejected(Error::FailedPrecondition(p))
}

pub fn code_hash_of(events: &[Event]) -> CodeHash {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::CodeAdded(c) => Some(c.hash.clone()),
            _ => None,
        })
        .unwrap()
}
