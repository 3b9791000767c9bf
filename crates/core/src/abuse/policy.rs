//! The abuse policy: every rule and figure, with its default.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use crate::phone::NumberType;
pub use crate::scope::Scope;

/// At most `max` codes in any window of `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// Codes allowed in the window (at least 1).
    pub max: u32,
    /// The window's length (more than zero, at most 31 days).
    pub window: Duration,
}

impl Limit {
    /// `max` codes per `window`.
    pub const fn new(max: u32, window: Duration) -> Self {
        Self { max, window }
    }

    const fn per_hours(max: u32, hours: u64) -> Self {
        Self::new(max, Duration::from_secs(hours * 3600))
    }
}

/// The option that tightens a number range's budget while its conversion has collapsed: once
/// at least `min_sent` codes went to the range in the conversion signal's window and fewer
/// than `below_percent` of every hundred were verified, the range's codes take
/// [`RangeCollapse::limits`] instead of [`AbusePolicy::range`] (see
/// [`crate::conversion::RangeSignal`] for where the figures come from).
///
/// ```
/// use std::time::Duration;
/// use otp_sms_core::{AbusePolicy, Limit, RangeCollapse};
/// let policy = AbusePolicy {
///     range_collapse: Some(RangeCollapse {
///         min_sent: 20,
///         below_percent: 10,
///         limits: vec![Limit::new(3, Duration::from_secs(3600))],
///     }),
///     ..AbusePolicy::default()
/// };
/// policy.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeCollapse {
    /// Codes sent to the range in the window before its conversion is judged (at least 1):
    /// a few unanswered codes are ordinary.
    pub min_sent: u64,
    /// Verified per hundred sent below which the range has collapsed (1..=100).
    pub below_percent: u8,
    /// The range's limits while it has collapsed; they count the same codes as
    /// [`AbusePolicy::range`], so a range past them is refused at once.
    pub limits: Vec<Limit>,
}

impl RangeCollapse {
    /// Whether a range with these figures has collapsed.
    ///
    /// ```
    /// use otp_sms_core::conversion::Rate;
    /// let rule = otp_sms_core::RangeCollapse { min_sent: 20, below_percent: 10, limits: vec![] };
    /// assert!(rule.collapsed(Rate { sent: 40, verified: 3 }));
    /// assert!(!rule.collapsed(Rate { sent: 40, verified: 4 }));
    /// assert!(!rule.collapsed(Rate { sent: 19, verified: 0 }));
    /// ```
    pub fn collapsed(&self, rate: Rate) -> bool {
        rate.sent >= self.min_sent.max(1)
            && u128::from(rate.verified) * 100
                < u128::from(rate.sent) * u128::from(self.below_percent)
    }
}

/// A number that receives no SMS and whose code is fixed: for app-store review and hosts'
/// end-to-end tests. Its codes take no send budget and are recorded with the delivery
/// `test`; the fixed code is stored, like every code, only as a keyed hash.
#[derive(Clone, PartialEq, Eq)]
pub struct TestNumber {
    /// The number, in E.164.
    pub number: String,
    /// The code that verifies it: 6 to 12 digits.
    pub code: String,
}

impl fmt::Debug for TestNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestNumber")
            .field("number", &crate::phone::mask_number(&self.number))
            .field("code", &"<redacted>")
            .finish()
    }
}

/// Every abuse rule of an instance. `Default` is the policy of `docs/security.md`; every
/// figure may be changed, per instance ([`crate::CommandService::with_instance_abuse_policy`]).
///
/// ```
/// use std::time::Duration;
/// use otp_sms_core::{AbusePolicy, Limit};
/// let mut policy = AbusePolicy::default();
/// policy.number = vec![Limit::new(3, Duration::from_secs(600))];
/// policy.region_deny.insert("XK".into());
/// policy.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbusePolicy {
    /// Whether a self caller (the user, without `user.write`) may ask for `return_code`.
    /// Off: the code would prove nothing about the number. Callers with `user.write` always may.
    pub allow_self_return_code: bool,
    /// Registrations a user may hold that are not removed (verified ones, and unverified ones
    /// younger than [`AbusePolicy::unverified_counts_for`]).
    pub max_registrations_per_user: u32,
    /// How long an unverified registration counts toward the cap.
    pub unverified_counts_for: Duration,
    /// Codes sent to one user.
    pub user: Vec<Limit>,
    /// Codes sent to one destination number, across all users: a cap over
    /// [`AbusePolicy::number_per_user`], short enough that other users cannot deny a number
    /// to its owner for long.
    pub number: Vec<Limit>,
    /// Codes one user sends to one destination number.
    pub number_per_user: Vec<Limit>,
    /// Codes sent to one number range.
    pub range: Vec<Limit>,
    /// Tighter range limits while the range's conversion has collapsed; `None` (the default):
    /// off.
    pub range_collapse: Option<RangeCollapse>,
    /// Regions whose numbers may receive codes (ISO 3166-1 alpha-2); `None`: every region.
    pub region_allow: Option<BTreeSet<String>>,
    /// Regions whose numbers may not receive codes; wins over the allow list.
    pub region_deny: BTreeSet<String>,
    /// Codes sent to numbers of one region (empty: no cap).
    pub region: Vec<Limit>,
    /// Number types refused at add.
    pub refused_types: BTreeSet<NumberType>,
    /// Whether fixed-line numbers may be registered (types that may be mobile always may).
    pub allow_fixed_line: bool,
    /// Codes requested from one client address.
    pub address: Vec<Limit>,
    /// The IPv6 prefix length that makes one client address (64: a subscriber's network).
    pub ipv6_prefix: u8,
    /// Codes sent for the users of one organization: its share of the instance.
    pub organization: Vec<Limit>,
    /// Codes sent by the whole instance.
    pub instance: Vec<Limit>,
    /// Wrong codes in a row, across all of a user's codes and registrations, that lock the
    /// user's verification (NIST SP 800-63B: at most 100).
    pub max_consecutive_failures: u32,
    /// How long such a lock lasts unless a holder of `user.write` lifts it; also how long a
    /// wrong code counts toward the cap.
    pub failure_lockout: Duration,
    /// Test numbers (at most [`AbusePolicy::MAX_TEST_NUMBERS`]).
    pub test_numbers: Vec<TestNumber>,
    /// Scopes that refuse silently: the call answers as if the code were sent, and nothing
    /// is sent, so a pumper cannot see where the wall is.
    pub silent: BTreeSet<Scope>,
    /// Sign-in challenges per user, whatever their delivery ([`Scope::SignIn`]); a challenge
    /// sent by SMS takes the send budgets too. Default: 5 per 10 minutes.
    pub sign_in: Vec<Limit>,
}

impl Default for AbusePolicy {
    fn default() -> Self {
        Self {
            allow_self_return_code: false,
            max_registrations_per_user: 5,
            unverified_counts_for: Duration::from_secs(24 * 3600),
            user: vec![Limit::per_hours(10, 24)],
            number: vec![Limit::per_hours(20, 1)],
            number_per_user: vec![
                Limit::new(5, Duration::from_secs(600)),
                Limit::per_hours(10, 24),
            ],
            range: vec![Limit::per_hours(20, 1)],
            range_collapse: None,
            region_allow: None,
            region_deny: BTreeSet::new(),
            region: Vec::new(),
            refused_types: [
                NumberType::PremiumRate,
                NumberType::SharedCost,
                NumberType::TollFree,
                NumberType::Uan,
                NumberType::Pager,
                NumberType::Voicemail,
            ]
            .into_iter()
            .collect(),
            allow_fixed_line: false,
            address: vec![Limit::per_hours(10, 1)],
            ipv6_prefix: 64,
            organization: vec![Limit::per_hours(250, 1), Limit::per_hours(2_500, 24)],
            instance: vec![Limit::per_hours(1_000, 1), Limit::per_hours(10_000, 24)],
            max_consecutive_failures: 100,
            failure_lockout: Duration::from_secs(24 * 3600),
            test_numbers: Vec::new(),
            silent: BTreeSet::new(),
            sign_in: vec![Limit::new(5, Duration::from_secs(600))],
        }
    }
}

/// A policy setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("abuse policy: {0}")]
pub struct AbusePolicyError(pub String);

impl AbusePolicy {
    /// The most test numbers an instance may list.
    pub const MAX_TEST_NUMBERS: usize = 20;
    /// The longest window a limit may have.
    pub const MAX_WINDOW: Duration = Duration::from_secs(31 * 24 * 3600);

    /// A policy with no budgets and no registration cap: every code is sent. For hosts that
    /// defend elsewhere, and for tests of other things. Possession rules and refused number
    /// types stay.
    pub fn unlimited() -> Self {
        Self {
            max_registrations_per_user: u32::MAX,
            user: Vec::new(),
            number: Vec::new(),
            number_per_user: Vec::new(),
            range: Vec::new(),
            range_collapse: None,
            address: Vec::new(),
            organization: Vec::new(),
            instance: Vec::new(),
            sign_in: Vec::new(),
            ..Self::default()
        }
    }

    /// Checks every figure: limits of at least 1 in windows of more than zero and at most 31
    /// days, a failure cap of 1..=100, an IPv6 prefix of 1..=128, region codes of two letters,
    /// at most 20 test numbers written in E.164 with codes of 6 to 12 digits, and silent
    /// scopes among those that refuse a code to send.
    pub fn validate(&self) -> Result<(), AbusePolicyError> {
        let no_limits = Vec::new();
        let collapsed = self
            .range_collapse
            .as_ref()
            .map_or(&no_limits, |c| &c.limits);
        let limits = [
            ("user", &self.user),
            ("destination_number", &self.number),
            ("destination_number_per_user", &self.number_per_user),
            ("number_range", &self.range),
            ("range_collapse.limits", collapsed),
            ("region", &self.region),
            ("client_address", &self.address),
            ("organization", &self.organization),
            ("instance", &self.instance),
            ("sign_in", &self.sign_in),
        ];
        for (name, limits) in limits {
            for limit in limits {
                if limit.max == 0 {
                    return Err(AbusePolicyError(format!(
                        "{name}: a limit allows at least 1 code (deny a region instead)"
                    )));
                }
                if limit.window.is_zero() || limit.window > Self::MAX_WINDOW {
                    return Err(AbusePolicyError(format!(
                        "{name}: a window is more than 0 and at most 31 days, got {:?}",
                        limit.window
                    )));
                }
            }
        }
        if let Some(collapse) = &self.range_collapse {
            if collapse.min_sent == 0 || !(1..=100).contains(&collapse.below_percent) {
                return Err(AbusePolicyError(format!(
                    "range_collapse: min_sent is at least 1 and below_percent 1..=100, got {} and {}",
                    collapse.min_sent, collapse.below_percent
                )));
            }
            if collapse.limits.is_empty() {
                return Err(AbusePolicyError(
                    "range_collapse: limits must name at least one limit".into(),
                ));
            }
        }
        if self.max_registrations_per_user == 0 {
            return Err(AbusePolicyError(
                "max_registrations_per_user must be at least 1".into(),
            ));
        }
        if self.unverified_counts_for.is_zero() || self.unverified_counts_for > Self::MAX_WINDOW {
            return Err(AbusePolicyError(
                "unverified_counts_for is more than 0 and at most 31 days".into(),
            ));
        }
        if !(1..=100).contains(&self.max_consecutive_failures) {
            return Err(AbusePolicyError(format!(
                "max_consecutive_failures must be 1..=100 (NIST SP 800-63B), got {}",
                self.max_consecutive_failures
            )));
        }
        if self.failure_lockout.is_zero() || self.failure_lockout > Self::MAX_WINDOW {
            return Err(AbusePolicyError(
                "failure_lockout is more than 0 and at most 31 days".into(),
            ));
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            return Err(AbusePolicyError(format!(
                "ipv6_prefix must be 1..=128, got {}",
                self.ipv6_prefix
            )));
        }
        let regions = self
            .region_allow
            .iter()
            .flatten()
            .chain(self.region_deny.iter());
        for region in regions {
            if region.len() != 2 || !region.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(AbusePolicyError(format!(
                    "region `{region}` is not an ISO 3166-1 alpha-2 code (two capital letters)"
                )));
            }
        }
        if self.test_numbers.len() > Self::MAX_TEST_NUMBERS {
            return Err(AbusePolicyError(format!(
                "at most {} test numbers, got {}",
                Self::MAX_TEST_NUMBERS,
                self.test_numbers.len()
            )));
        }
        for test in &self.test_numbers {
            let phone = crate::phone::Phone::parse(&test.number).map_err(|_| {
                AbusePolicyError(format!("test number `{}` is not valid", test.number))
            })?;
            if phone.as_e164() != test.number {
                return Err(AbusePolicyError(format!(
                    "test number `{}` must be written in E.164 ({})",
                    test.number,
                    phone.as_e164()
                )));
            }
            if !(6..=12).contains(&test.code.len())
                || !test.code.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(AbusePolicyError(format!(
                    "the code of test number `{}` must be 6 to 12 digits",
                    test.number
                )));
            }
        }
        for scope in &self.silent {
            if !Scope::SILENCEABLE.contains(scope) {
                return Err(AbusePolicyError(format!(
                    "the {scope} scope cannot refuse silently (only send budgets can)"
                )));
            }
        }
        Ok(())
    }

    /// The fixed code of `e164`, if it is one of the test numbers.
    pub fn test_code(&self, e164: &str) -> Option<&str> {
        self.test_numbers
            .iter()
            .find(|t| t.number == e164)
            .map(|t| t.code.as_str())
    }
}

/// A number range's conversion: codes sent and codes verified in the window (what
/// [`crate::conversion::RangeSignal`] reads from the feed; [`RangeCollapse`] judges it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rate {
    /// Codes handed to the SMS provider (`code sent`).
    pub sent: u64,
    /// Registrations verified with a code that was sent (`verified` after `code sent`).
    pub verified: u64,
}

impl Rate {
    /// Verified per sent, 1 when nothing was sent.
    pub fn ratio(&self) -> f64 {
        if self.sent == 0 {
            1.0
        } else {
            self.verified as f64 / self.sent as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_test_number_masks_the_number_and_hides_the_code() {
        let number = TestNumber {
            number: "+41791234567".into(),
            code: "24682468".into(),
        };
        let shown = format!("{number:?}");
        assert!(!shown.contains("+41791234567"), "{shown}");
        assert!(!shown.contains("24682468"), "{shown}");
        assert!(shown.contains("+41") && shown.contains("67"), "{shown}");
    }

    #[test]
    fn the_default_policy_is_valid_and_as_documented() {
        let p = AbusePolicy::default();
        p.validate().unwrap();
        assert!(!p.allow_self_return_code);
        assert_eq!(p.max_registrations_per_user, 5);
        assert_eq!(p.number, vec![Limit::new(20, Duration::from_secs(3600))]);
        assert_eq!(p.number_per_user.len(), 2);
        assert_eq!(
            p.organization[0],
            Limit::new(250, Duration::from_secs(3600))
        );
        assert_eq!(p.instance[0], Limit::new(1000, Duration::from_secs(3600)));
        assert!(p.refused_types.contains(&NumberType::PremiumRate));
        assert!(!p.refused_types.contains(&NumberType::FixedLineOrMobile));
        AbusePolicy::unlimited().validate().unwrap();
    }

    #[test]
    fn nonsense_figures_are_refused() {
        let mut p = AbusePolicy::default();
        p.number[0].max = 0;
        assert!(p.validate().is_err());
        let mut p = AbusePolicy::default();
        p.instance[0].window = Duration::ZERO;
        assert!(p.validate().is_err());
        let mut p = AbusePolicy::default();
        p.region_deny.insert("che".into());
        assert!(p.validate().is_err());
        let mut p = AbusePolicy {
            max_consecutive_failures: 101,
            ..AbusePolicy::default()
        };
        assert!(p.validate().is_err());
        p.max_consecutive_failures = 0;
        assert!(p.validate().is_err());
        let mut p = AbusePolicy {
            test_numbers: vec![TestNumber {
                number: "+41 79 123 45 67".into(),
                code: "123456".into(),
            }],
            ..AbusePolicy::default()
        };
        assert!(p.validate().is_err());
        p.test_numbers[0].number = "+41791234567".into();
        p.validate().unwrap();
        p.test_numbers[0].code = "12".into();
        assert!(p.validate().is_err());
        assert!(!format!("{:?}", p.test_numbers[0]).contains("12\""));
        let mut p = AbusePolicy::default();
        p.silent.insert(Scope::UserRegistrations);
        assert!(p.validate().is_err());
        p.silent = [Scope::Number].into();
        p.validate().unwrap();
    }

    #[test]
    fn scopes_round_trip_through_their_keys() {
        for scope in Scope::ALL {
            assert_eq!(Scope::from_key(scope.key()), Some(scope));
        }
        assert_eq!(Scope::from_key("nope"), None);
    }
}
