//! The pure part of the abuse rules: which numbers may be registered, and which budgets a code
//! to send takes from. No I/O: the command loop hands the plan to a [`super::BudgetStore`].

use std::net::IpAddr;

use super::budget::{BudgetTake, Rule, TakeRequest};
use super::policy::{AbusePolicy, Limit, Scope};
use crate::ids::{InstanceId, OrganizationId, RegistrationId, UserId};
use crate::phone::{NumberType, Phone};

/// Why a number may not be registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberCheck {
    /// [`Scope::Region`] or [`Scope::NumberType`].
    pub scope: Scope,
    /// What to tell the caller (names the region or type, never the number).
    pub reason: String,
}

/// The budgets one code (or one new registration) takes, and the scope of each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendPlan {
    /// What the budget store takes, all or none.
    pub request: TakeRequest,
    /// For each take, by index: its scope ([`AbusePolicy::subject`] shows its key redacted).
    pub scopes: Vec<Scope>,
}

impl SendPlan {
    fn push(&mut self, scope: Scope, key: String, member: &str, rules: Vec<Rule>) {
        if rules.is_empty() {
            return;
        }
        self.request.takes.push(BudgetTake {
            key,
            member: member.to_owned(),
            rules,
        });
        self.scopes.push(scope);
    }

    /// Adds `other`'s takes after this plan's.
    pub fn extend(&mut self, other: SendPlan) {
        self.request.takes.extend(other.request.takes);
        self.scopes.extend(other.scopes);
    }

    /// Whether there is nothing to take.
    pub fn is_empty(&self) -> bool {
        self.request.takes.is_empty()
    }
}

fn windows(limits: &[Limit]) -> Vec<Rule> {
    limits
        .iter()
        .map(|l| Rule::Window {
            max: l.max,
            window: l.window,
        })
        .collect()
}

/// The budget key of `subject` in `scope` of `instance`. The instance id is length-prefixed,
/// so no id can make two instances' keys meet.
pub(crate) fn key(instance: &InstanceId, scope: Scope, subject: &str) -> String {
    let instance = instance.as_str();
    format!("{}:{instance}|{}|{subject}", instance.len(), scope.key())
}

/// A number as audit events show it: its region and range, never its last three digits.
///
/// ```
/// let phone = otp_sms_core::Phone::parse("+41791234567").unwrap();
/// assert_eq!(otp_sms_core::redact_phone(&phone), "CH +41791234xxx");
/// ```
pub fn redact_phone(phone: &Phone) -> String {
    let hidden = phone.as_e164().len() - phone.range().len();
    format!(
        "{} {}{}",
        phone.region().unwrap_or("001"),
        phone.range(),
        "x".repeat(hidden)
    )
}

/// The client address that budgets count: IPv4 as is (an IPv4-mapped IPv6 address as its
/// IPv4 address), IPv6 cut to the policy's prefix.
pub(crate) fn address_subject(address: IpAddr, ipv6_prefix: u8) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let bits = u128::from(v6);
                let prefix = u32::from(ipv6_prefix.min(128));
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                format!("{}/{prefix}", std::net::Ipv6Addr::from(bits & mask))
            }
        },
    }
}

/// An address as audit events show it: IPv4 by /24, IPv6 by /48.
fn redact_address(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => redact_address(IpAddr::V4(v4)),
            None => address_subject(address, 48),
        },
    }
}

impl AbusePolicy {
    /// Whether `phone` may be registered: its region allowed and not denied, its type not
    /// refused (fixed lines only where allowed).
    pub fn check_number(&self, phone: &Phone) -> Result<(), NumberCheck> {
        let number_type = phone.number_type();
        let refused_type = self.refused_types.contains(&number_type)
            || (number_type == NumberType::FixedLine && !self.allow_fixed_line);
        if refused_type {
            return Err(NumberCheck {
                scope: Scope::NumberType,
                reason: format!(
                    "{} numbers cannot receive verification codes",
                    number_type.name()
                ),
            });
        }
        let region = phone.region().unwrap_or("001");
        let allowed = self
            .region_allow
            .as_ref()
            .map_or(true, |allow| allow.contains(region))
            && !self.region_deny.contains(region);
        if !allowed {
            return Err(NumberCheck {
                scope: Scope::Region,
                reason: format!("numbers of region {region} cannot receive verification codes"),
            });
        }
        Ok(())
    }

    /// What an audit record shows of the budget of `scope`: a number by its region and range,
    /// an address by its network, a user or an instance by its id.
    pub fn subject(
        &self,
        scope: Scope,
        instance: &InstanceId,
        user: &UserId,
        organization: &OrganizationId,
        phone: Option<&Phone>,
        address: Option<IpAddr>,
    ) -> String {
        match scope {
            Scope::Number | Scope::NumberPerUser | Scope::Range | Scope::NumberType => {
                phone.map(redact_phone).unwrap_or_default()
            }
            Scope::Organization => organization.as_str().to_owned(),
            Scope::Region => phone.and_then(Phone::region).unwrap_or("001").to_owned(),
            Scope::Address => address.map(redact_address).unwrap_or_default(),
            Scope::Instance => instance.as_str().to_owned(),
            Scope::Registration
            | Scope::User
            | Scope::UserRegistrations
            | Scope::VerificationLock
            | Scope::SignIn => user.as_str().to_owned(),
        }
    }

    /// The slot a new registration holds in its user's registration cap until removed.
    /// Member: the registration id.
    ///
    /// The slot is held even without a cap: the user's verification lock reaches every live
    /// registration through it.
    pub fn registration_slot(
        &self,
        instance: &InstanceId,
        user: &UserId,
        registration: &RegistrationId,
    ) -> SendPlan {
        let mut plan = SendPlan::default();
        plan.push(
            Scope::UserRegistrations,
            Self::slot_key(instance, user),
            registration.as_str(),
            vec![Rule::Held {
                max: self.max_registrations_per_user,
                hold: Self::SLOT_HOLD,
            }],
        );
        plan
    }

    /// How long a registration's slot is held: for good, in effect. A verified registration
    /// counts until removed; a stale unverified one is released when the cap would otherwise
    /// refuse (`unverified_counts_for`), so a verify changes no budget.
    pub const SLOT_HOLD: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

    /// The gate a new code passes only while the user's verification is not locked.
    pub fn lock_gate(instance: &InstanceId, user: &UserId, member: &str) -> SendPlan {
        let mut plan = SendPlan::default();
        plan.push(
            Scope::VerificationLock,
            Self::lock_key(instance, user),
            member,
            vec![Rule::Absent],
        );
        plan
    }

    /// The key of a user's verification lock.
    pub fn lock_key(instance: &InstanceId, user: &UserId) -> String {
        key(instance, Scope::VerificationLock, user.as_str())
    }

    /// The key of a user's wrong codes in a row.
    pub fn failures_key(instance: &InstanceId, user: &UserId) -> String {
        format!(
            "{}:{}|failures|{}",
            instance.as_str().len(),
            instance.as_str(),
            user.as_str()
        )
    }

    /// One more wrong code of the user: admitted while fewer than the cap are counted, refused
    /// at the cap (the moment to lock).
    pub fn failure(&self, instance: &InstanceId, user: &UserId, member: &str) -> TakeRequest {
        TakeRequest {
            takes: vec![BudgetTake {
                key: Self::failures_key(instance, user),
                member: member.to_owned(),
                rules: vec![Rule::Window {
                    max: self.max_consecutive_failures.saturating_sub(1),
                    window: self.failure_lockout,
                }],
            }],
        }
    }

    /// The entry that marks the user's verification as locked, for the lockout period.
    pub fn lock(&self, instance: &InstanceId, user: &UserId, member: &str) -> TakeRequest {
        TakeRequest {
            takes: vec![BudgetTake {
                key: Self::lock_key(instance, user),
                member: member.to_owned(),
                rules: vec![Rule::Held {
                    max: u32::MAX,
                    hold: self.failure_lockout,
                }],
            }],
        }
    }

    /// The budget one sign-in challenge takes of its user, whatever its delivery: a bound on
    /// the codes an attacker who knows a user's password can have issued to guess at (each
    /// takes a few wrong codes before it burns). `member` names the challenge's code.
    pub fn sign_in_budget(&self, instance: &InstanceId, user: &UserId, member: &str) -> SendPlan {
        let mut plan = SendPlan::default();
        plan.push(
            Scope::SignIn,
            key(instance, Scope::SignIn, user.as_str()),
            member,
            windows(&self.sign_in),
        );
        plan
    }

    /// The key of a user's registration slots.
    pub fn slot_key(instance: &InstanceId, user: &UserId) -> String {
        key(instance, Scope::UserRegistrations, user.as_str())
    }

    /// The budgets one code sent by SMS takes: user, destination number for this user,
    /// destination number, range, region, client address (when known), the user's
    /// organization and instance. `member` names the code (unique per code).
    /// `range` is the conversion signal's figure for the number's range: when
    /// [`AbusePolicy::range_collapse`] says it has collapsed, the range takes the collapse's
    /// tighter limits.
    #[allow(clippy::too_many_arguments)]
    pub fn send_budgets(
        &self,
        instance: &InstanceId,
        user: &UserId,
        organization: &OrganizationId,
        phone: &Phone,
        address: Option<IpAddr>,
        range: super::policy::Rate,
        member: &str,
    ) -> SendPlan {
        let mut plan = SendPlan::default();
        plan.push(
            Scope::User,
            key(instance, Scope::User, user.as_str()),
            member,
            windows(&self.user),
        );
        // The user's own budget for the number first: a user past it is told so, and a
        // refusal by the global cap then means that others spent it.
        plan.push(
            Scope::NumberPerUser,
            key(
                instance,
                Scope::NumberPerUser,
                &format!("{}|{}", phone.as_e164(), user.as_str()),
            ),
            member,
            windows(&self.number_per_user),
        );
        plan.push(
            Scope::Number,
            key(instance, Scope::Number, phone.as_e164()),
            member,
            windows(&self.number),
        );
        let range_limits = match &self.range_collapse {
            Some(collapse) if collapse.collapsed(range) => &collapse.limits,
            _ => &self.range,
        };
        plan.push(
            Scope::Range,
            key(instance, Scope::Range, phone.range()),
            member,
            windows(range_limits),
        );
        if !self.region.is_empty() {
            plan.push(
                Scope::Region,
                key(instance, Scope::Region, phone.region().unwrap_or("001")),
                member,
                windows(&self.region),
            );
        }
        if let (Some(address), false) = (address, self.address.is_empty()) {
            plan.push(
                Scope::Address,
                key(
                    instance,
                    Scope::Address,
                    &address_subject(address, self.ipv6_prefix),
                ),
                member,
                windows(&self.address),
            );
        }
        plan.push(
            Scope::Organization,
            key(instance, Scope::Organization, organization.as_str()),
            member,
            windows(&self.organization),
        );
        plan.push(
            Scope::Instance,
            key(instance, Scope::Instance, ""),
            member,
            windows(&self.instance),
        );
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abuse::Rate;

    fn phone(n: &str) -> Phone {
        Phone::parse(n).unwrap()
    }

    #[test]
    fn premium_rate_and_fixed_lines_are_refused_by_default_and_mobiles_pass() {
        let p = AbusePolicy::default();
        let refused = p.check_number(&phone("+19005550123")).unwrap_err();
        assert_eq!(refused.scope, Scope::NumberType);
        assert!(
            refused.reason.contains("premium-rate"),
            "{}",
            refused.reason
        );
        // A Swiss landline.
        let fixed = p.check_number(&phone("+41446681800")).unwrap_err();
        assert!(fixed.reason.contains("fixed-line"), "{}", fixed.reason);
        p.check_number(&phone("+41791234567")).unwrap();
        // US numbers may be mobile: fixed line or mobile passes.
        p.check_number(&phone("+16502530000")).unwrap();
        let lenient = AbusePolicy {
            allow_fixed_line: true,
            ..AbusePolicy::default()
        };
        lenient.check_number(&phone("+41446681800")).unwrap();
    }

    #[test]
    fn regions_are_allowed_and_denied_by_list() {
        let mut p = AbusePolicy::default();
        p.region_deny.insert("CH".into());
        let refused = p.check_number(&phone("+41791234567")).unwrap_err();
        assert_eq!(refused.scope, Scope::Region);
        assert!(refused.reason.contains("CH"));
        let p = AbusePolicy {
            region_allow: Some(["DE".to_owned()].into()),
            ..AbusePolicy::default()
        };
        assert!(p.check_number(&phone("+41791234567")).is_err());
        p.check_number(&phone("+4915112345678")).unwrap();
    }

    #[test]
    fn a_send_takes_every_configured_budget_and_keys_never_meet_across_instances() {
        let p = AbusePolicy::default();
        let i1 = InstanceId::parse("i", "a|b").unwrap();
        let user = UserId::parse("u", "u1").unwrap();
        let org = OrganizationId::parse("o", "org-1").unwrap();
        let plan = p.send_budgets(
            &i1,
            &user,
            &org,
            &phone("+41791234567"),
            Some("2001:db8::1".parse().unwrap()),
            Rate::default(),
            "r#1",
        );
        let scopes = plan.scopes.clone();
        // The region has no cap by default, so it takes nothing.
        assert_eq!(
            scopes,
            [
                Scope::User,
                Scope::NumberPerUser,
                Scope::Number,
                Scope::Range,
                Scope::Address,
                Scope::Organization,
                Scope::Instance
            ]
        );
        let number = phone("+41791234567");
        let address = "2001:db8::1".parse().ok();
        let shown = |scope| p.subject(scope, &i1, &user, &org, Some(&number), address);
        assert_eq!(shown(Scope::Number), "CH +41791234xxx");
        assert_eq!(shown(Scope::NumberPerUser), "CH +41791234xxx");
        assert_eq!(shown(Scope::Organization), "org-1");
        assert_eq!(shown(Scope::Address), "2001:db8::/48");
        assert_eq!(shown(Scope::Instance), "a|b");
        assert!(plan.request.takes[4].key.ends_with("|2001:db8::/64"));
        assert!(plan.request.takes[1].key.ends_with("|+41791234567|u1"));
        let i2 = InstanceId::parse("i", "a").unwrap();
        let other = p.send_budgets(
            &i2,
            &user,
            &org,
            &phone("+41791234567"),
            None,
            Rate::default(),
            "r#1",
        );
        assert!(plan.request.takes.iter().all(|t| other
            .request
            .takes
            .iter()
            .all(|o| o.key != t.key)));
    }

    #[test]
    fn ipv6_addresses_count_by_prefix_and_mapped_ipv4_as_ipv4() {
        let a = address_subject("2001:db8:1:2:3:4:5:6".parse().unwrap(), 64);
        let b = address_subject("2001:db8:1:2:ffff::1".parse().unwrap(), 64);
        assert_eq!(a, b);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(
            address_subject("::ffff:192.0.2.7".parse().unwrap(), 64),
            "192.0.2.7"
        );
    }

    #[test]
    fn a_collapsed_range_takes_the_tighter_limits_and_a_healthy_one_its_own() {
        let hour = std::time::Duration::from_secs(3600);
        let p = AbusePolicy {
            range_collapse: Some(crate::abuse::RangeCollapse {
                min_sent: 20,
                below_percent: 10,
                limits: vec![Limit::new(2, hour)],
            }),
            ..AbusePolicy::default()
        };
        let i = InstanceId::parse("i", "a").unwrap();
        let user = UserId::parse("u", "u1").unwrap();
        let org = OrganizationId::parse("o", "org-1").unwrap();
        let number = phone("+41791234567");
        let range_rules = |rate: Rate| {
            let plan = p.send_budgets(&i, &user, &org, &number, None, rate, "r#1");
            let at = plan.scopes.iter().position(|s| *s == Scope::Range).unwrap();
            plan.request.takes[at].rules.clone()
        };
        let own = vec![Rule::Window {
            max: 20,
            window: hour,
        }];
        let tight = vec![Rule::Window {
            max: 2,
            window: hour,
        }];
        assert_eq!(range_rules(Rate::default()), own, "no figures: its own");
        assert_eq!(
            range_rules(Rate {
                sent: 19,
                verified: 0
            }),
            own,
            "too few sent"
        );
        assert_eq!(
            range_rules(Rate {
                sent: 50,
                verified: 5
            }),
            own,
            "10 %: healthy"
        );
        assert_eq!(
            range_rules(Rate {
                sent: 50,
                verified: 4
            }),
            tight,
            "8 %: collapsed"
        );
        // Off by default: a collapsed figure changes nothing.
        let plain = AbusePolicy::default().send_budgets(
            &i,
            &user,
            &org,
            &number,
            None,
            Rate {
                sent: 50,
                verified: 0,
            },
            "r#1",
        );
        assert_eq!(plain.request.takes[2].rules, own);
    }
}
