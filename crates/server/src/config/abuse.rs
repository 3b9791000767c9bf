//! `[abuse]` (and an instance's own `abuse` table): the abuse policies, layered instance over
//! global over the library's defaults.

use std::time::Duration;

use otp_sms_core::{AbusePolicy, InstanceId, NumberType};
use serde::Deserialize;

use super::{id, Config, ConfigError};

/// A limit in the configuration: `{ max = 5, window_secs = 600 }`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Codes allowed in the window.
    pub max: u32,
    /// The window, in seconds.
    pub window_secs: u64,
}

/// `[abuse.range_collapse]`: once `min_sent` codes went to a range in the conversion signal's
/// hour and fewer than `below_percent` in a hundred were verified, the range takes `limits`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeCollapseConfig {
    /// Codes sent to the range in the hour before its conversion is judged.
    pub min_sent: u64,
    /// Verified per hundred sent below which the range has collapsed.
    pub below_percent: u8,
    /// The range's limits meanwhile.
    pub limits: Vec<LimitConfig>,
}

/// `[abuse]`, and `abuse` of `[[instances]]`: each key set here replaces the library's
/// default (`otp_sms_core::AbusePolicy::default`, see docs/security.md); an instance's table
/// is laid over `[abuse]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbuseConfig {
    /// Whether users may ask for their own code in the response (`return_code`).
    pub allow_self_return_code: Option<bool>,
    /// Registrations a user may hold that are not removed.
    pub max_registrations_per_user: Option<u32>,
    /// Seconds an unverified registration counts toward that cap.
    pub unverified_counts_for_secs: Option<u64>,
    /// Codes sent to one user.
    pub user: Option<Vec<LimitConfig>>,
    /// Codes sent to one destination number, across users (a short global cap).
    pub destination_number: Option<Vec<LimitConfig>>,
    /// Codes one user sends to one destination number.
    pub destination_number_per_user: Option<Vec<LimitConfig>>,
    /// Codes sent to one number range (E.164 without its last 3 digits).
    pub number_range: Option<Vec<LimitConfig>>,
    /// Tighter range limits while a range's conversion has collapsed (off when unset).
    pub range_collapse: Option<RangeCollapseConfig>,
    /// Regions (ISO 3166-1 alpha-2) whose numbers may receive codes; unset: all.
    pub region_allow: Option<Vec<String>>,
    /// Regions whose numbers may not receive codes.
    pub region_deny: Option<Vec<String>>,
    /// Codes sent to one region.
    pub region: Option<Vec<LimitConfig>>,
    /// Number types refused at add, by name (`premium-rate`, `shared-cost`, `toll-free`,
    /// `uan`, `pager`, `voicemail`, `voip`, `personal-number`, …).
    pub refused_types: Option<Vec<String>>,
    /// Whether fixed-line numbers may be registered.
    pub allow_fixed_line: Option<bool>,
    /// Codes requested from one client address.
    pub client_address: Option<Vec<LimitConfig>>,
    /// IPv6 prefix length that makes one client address.
    pub ipv6_prefix: Option<u8>,
    /// Codes sent for the users of one organization (its share of the instance).
    pub organization: Option<Vec<LimitConfig>>,
    /// Codes sent by the whole instance.
    pub instance: Option<Vec<LimitConfig>>,
    /// Wrong codes in a row, across a user's codes and registrations, that lock the user's
    /// verification (1..=100).
    pub max_consecutive_failures: Option<u32>,
    /// Seconds such a lock lasts unless lifted.
    pub failure_lockout_secs: Option<u64>,
    /// Test numbers: `[{ number = "+15005550006", code = "123456" }]` (at most 20).
    pub test_numbers: Option<Vec<TestNumberConfig>>,
    /// Scopes that refuse silently, by configuration key (`destination_number`, …).
    pub silent: Option<Vec<String>>,
    /// Sign-in challenges per user, however delivered (default: 5 per 10 minutes).
    pub sign_in: Option<Vec<LimitConfig>>,
}

/// A test number in the configuration.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestNumberConfig {
    /// The number, in E.164.
    pub number: String,
    /// Its fixed code.
    pub code: String,
}

impl std::fmt::Debug for TestNumberConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNumberConfig")
            .field("number", &otp_sms_core::mask_number(&self.number))
            .field("code", &"<redacted>")
            .finish()
    }
}

/// The library's limits for these.
fn to_limits(list: &[LimitConfig]) -> Vec<otp_sms_core::Limit> {
    list.iter()
        .map(|l| otp_sms_core::Limit::new(l.max, Duration::from_secs(l.window_secs)))
        .collect()
}

/// `base` replaced by `config`'s limits when it sets any.
fn limits(config: &Option<Vec<LimitConfig>>, base: &mut Vec<otp_sms_core::Limit>) {
    if let Some(list) = config {
        *base = to_limits(list);
    }
}

impl AbuseConfig {
    /// `base` with every key set here replaced, validated.
    pub fn apply(&self, mut p: AbusePolicy) -> Result<AbusePolicy, ConfigError> {
        if let Some(v) = self.allow_self_return_code {
            p.allow_self_return_code = v;
        }
        if let Some(v) = self.max_registrations_per_user {
            p.max_registrations_per_user = v;
        }
        if let Some(v) = self.unverified_counts_for_secs {
            p.unverified_counts_for = Duration::from_secs(v);
        }
        limits(&self.user, &mut p.user);
        limits(&self.destination_number, &mut p.number);
        limits(&self.destination_number_per_user, &mut p.number_per_user);
        limits(&self.number_range, &mut p.range);
        if let Some(c) = &self.range_collapse {
            p.range_collapse = Some(otp_sms_core::RangeCollapse {
                min_sent: c.min_sent,
                below_percent: c.below_percent,
                limits: to_limits(&c.limits),
            });
        }
        limits(&self.region, &mut p.region);
        limits(&self.client_address, &mut p.address);
        limits(&self.organization, &mut p.organization);
        limits(&self.instance, &mut p.instance);
        limits(&self.sign_in, &mut p.sign_in);
        if let Some(v) = &self.region_allow {
            p.region_allow = Some(v.iter().cloned().collect());
        }
        if let Some(v) = &self.region_deny {
            p.region_deny = v.iter().cloned().collect();
        }
        if let Some(names) = &self.refused_types {
            p.refused_types = names
                .iter()
                .map(|name| {
                    NUMBER_TYPES
                        .into_iter()
                        .find(|t| t.name() == name)
                        .ok_or_else(|| {
                            ConfigError::Invalid(format!("[abuse] unknown number type `{name}`"))
                        })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = self.allow_fixed_line {
            p.allow_fixed_line = v;
        }
        if let Some(v) = self.ipv6_prefix {
            p.ipv6_prefix = v;
        }
        if let Some(v) = self.max_consecutive_failures {
            p.max_consecutive_failures = v;
        }
        if let Some(v) = self.failure_lockout_secs {
            p.failure_lockout = Duration::from_secs(v);
        }
        if let Some(list) = &self.test_numbers {
            p.test_numbers = list
                .iter()
                .map(|t| otp_sms_core::TestNumber {
                    number: t.number.clone(),
                    code: t.code.clone(),
                })
                .collect();
        }
        if let Some(keys) = &self.silent {
            p.silent = keys
                .iter()
                .map(|k| {
                    otp_sms_core::Scope::from_key(k).ok_or_else(|| {
                        ConfigError::Invalid(format!("[abuse] silent: unknown scope `{k}`"))
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        p.validate()
            .map_err(|e| ConfigError::Invalid(format!("[abuse]: {e}")))?;
        Ok(p)
    }
}

const NUMBER_TYPES: [NumberType; 12] = [
    NumberType::FixedLine,
    NumberType::Mobile,
    NumberType::FixedLineOrMobile,
    NumberType::TollFree,
    NumberType::PremiumRate,
    NumberType::SharedCost,
    NumberType::Voip,
    NumberType::PersonalNumber,
    NumberType::Pager,
    NumberType::Uan,
    NumberType::Voicemail,
    NumberType::Unknown,
];

impl Config {
    /// The abuse policy of every instance without its own, and those with their own.
    pub fn abuse_policies(
        &self,
    ) -> Result<(AbusePolicy, Vec<(InstanceId, AbusePolicy)>), ConfigError> {
        let default = self.abuse.apply(AbusePolicy::default())?;
        let mut own = Vec::new();
        for instance in &self.instances {
            if let Some(abuse) = &instance.abuse {
                let id = id(InstanceId::parse, "instances.id", &instance.id)?;
                own.push((id, abuse.apply(default.clone())?));
            }
        }
        Ok((default, own))
    }
}
