//! The configuration file, as its tables are laid out: each file of this folder is one part of
//! it and what turns that part into the values the server runs with.
//!
//! - [`server`]: `[server]` and `[tracing]`: the listener, its limits, metrics and traces;
//! - [`service`]: `[service]`, `[database]` and `[policy]`: the command service and its store;
//! - [`abuse`]: `[abuse]` and each instance's own: the abuse policies;
//! - [`sms`]: `[sms]` and its providers' tables: the senders' options;
//! - [`notifier`]: `[notifier]`: the outbox drain;
//! - [`directory`]: `[[instances]]`, `[[organizations]]`, `[[users]]`, `[[tokens]]`: the
//!   static user directory;
//! - [`secrets`]: how a secret is read from its file or variable.
//!
//! The file is read once, at start ([`Config::from_file`]).

use std::path::Path;

use serde::Deserialize;

pub mod abuse;
pub mod directory;
pub mod notifier;
pub mod secrets;
pub mod server;
pub mod service;
pub mod sms;

pub use abuse::{AbuseConfig, LimitConfig, RangeCollapseConfig, TestNumberConfig};
pub use directory::{InstanceConfig, OrganizationConfig, TokenConfig, UserConfig};
pub use notifier::NotifierConfig;
pub use secrets::read_private_file;
pub use server::{ClientAddressHeader, MetricsListen, ServerConfig, TracingConfig};
pub use service::{DatabaseConfig, PolicyConfig, ServiceConfig};
pub use sms::{RoutesConfig, SenderKind, SmsConfig, TextConfig, TwilioConfig, VonageConfig};

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid configuration: {0}")]
    Parse(String),
    /// A value is out of bounds or refers to something undefined.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Tenants.
    #[serde(default)]
    pub instances: Vec<InstanceConfig>,
    /// Organizations.
    #[serde(default)]
    pub organizations: Vec<OrganizationConfig>,
    /// Users.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Personal access tokens.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// The code policy.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// How codes are sent.
    #[serde(default)]
    pub sms: SmsConfig,
    /// The delivery outbox drain.
    #[serde(default)]
    pub notifier: NotifierConfig,
    /// The command service.
    #[serde(default)]
    pub service: ServiceConfig,
    /// The abuse rules of every instance without its own `abuse` table.
    #[serde(default)]
    pub abuse: AbuseConfig,
    /// The listener's network settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// How long the server waits on PostgreSQL.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Trace export.
    #[serde(default)]
    pub tracing: TracingConfig,
}

impl Config {
    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses TOML.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// The configuration `--dev` uses when no file is given: instance `default` (domain
    /// `localhost`), organization `acme`, users `alice` and `admin`; token `dev-alice` acts as
    /// alice, `dev-admin` as admin with `user.write` in acme.
    pub fn development() -> Self {
        Self::from_toml(include_str!("../../dev.toml"))
            .expect("the built-in development config parses")
    }
}

/// `value` parsed as an id by `parse` (the field named `what`), or why not.
pub(crate) fn id<T>(
    parse: fn(&'static str, String) -> Result<T, otp_sms_core::Error>,
    what: &'static str,
    value: &str,
) -> Result<T, ConfigError> {
    parse(what, value.to_owned()).map_err(|e| ConfigError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use otp_sms_core::AbusePolicy;

    use super::*;

    #[test]
    fn the_development_config_is_valid() {
        let config = Config::development();
        config.directory().unwrap();
        config.policy.policy().unwrap();
    }

    #[test]
    fn undefined_references_and_unsafe_policies_are_refused() {
        let bad_user = r#"
            [[instances]]
            id = "i"
            [[users]]
            instance = "i"
            id = "u"
            organization = "missing"
        "#;
        assert!(Config::from_toml(bad_user).unwrap().directory().is_err());
        let bad_policy = "[policy]\ncode_length = 6\n";
        assert!(Config::from_toml(bad_policy)
            .unwrap()
            .policy
            .policy()
            .is_err());
        assert!(Config::from_toml("[nope]\n").is_err());
    }

    #[test]
    fn abuse_rules_layer_instance_over_global_over_the_library_default() {
        let config = Config::from_toml(
            r#"
            [abuse]
            destination_number = [{ max = 3, window_secs = 600 }]
            region_deny = ["XK"]
            sign_in = [{ max = 2, window_secs = 300 }]
            [[instances]]
            id = "a"
            [[instances]]
            id = "b"
            abuse = { allow_self_return_code = true, refused_types = ["premium-rate"] }
            "#,
        )
        .unwrap();
        let (default, own) = config.abuse_policies().unwrap();
        assert_eq!(
            default.number,
            [otp_sms_core::Limit::new(3, Duration::from_secs(600))]
        );
        assert!(default.region_deny.contains("XK"));
        assert_eq!(
            default.sign_in,
            [otp_sms_core::Limit::new(2, Duration::from_secs(300))]
        );
        assert!(!default.allow_self_return_code);
        assert_eq!(default.user, AbusePolicy::default().user);
        let (id, b) = &own[0];
        assert_eq!(id.as_str(), "b");
        assert!(b.allow_self_return_code);
        assert_eq!(b.number, default.number);
        assert_eq!(b.refused_types.len(), 1);
        for bad in [
            "[abuse]\ninstance = [{ max = 0, window_secs = 60 }]\n",
            "[abuse]\nsign_in = [{ max = 5, window_secs = 0 }]\n",
            "[abuse]\nrefused_types = [\"expensive\"]\n",
            "[abuse]\nregion_deny = [\"Swiss\"]\n",
            "[abuse]\nmax_consecutive_failures = 101\n",
            "[abuse]\nsilent = [\"everything\"]\n",
            "[abuse]\nsilent = [\"user_registrations\"]\n",
            "[abuse]\ntest_numbers = [{ number = \"+41 79 123 45 67\", code = \"123456\" }]\n",
            "[abuse.range_collapse]\nmin_sent = 20\nbelow_percent = 101\nlimits = [{ max = 3, window_secs = 3600 }]\n",
            "[abuse.range_collapse]\nmin_sent = 0\nbelow_percent = 10\nlimits = [{ max = 3, window_secs = 3600 }]\n",
            "[abuse.range_collapse]\nmin_sent = 20\nbelow_percent = 10\nlimits = []\n",
        ] {
            assert!(
                Config::from_toml(bad).unwrap().abuse_policies().is_err(),
                "{bad}"
            );
        }
        let (collapsing, _) = Config::from_toml(
            "[abuse.range_collapse]\nmin_sent = 20\nbelow_percent = 10\nlimits = [{ max = 3, window_secs = 3600 }]\n",
        )
        .unwrap()
        .abuse_policies()
        .unwrap();
        assert_eq!(
            collapsing.range_collapse,
            Some(otp_sms_core::RangeCollapse {
                min_sent: 20,
                below_percent: 10,
                limits: vec![otp_sms_core::Limit::new(3, Duration::from_secs(3600))],
            })
        );
        assert_eq!(default.range_collapse, None, "off unless configured");
        let listed = Config::from_toml(
            "[abuse]\nsilent = [\"destination_number\"]\ntest_numbers = [{ number = \"+41791234567\", code = \"24682468\" }]\n",
        )
        .unwrap();
        assert!(
            !format!("{listed:?}").contains("24682468"),
            "Debug shows no test code"
        );
        let (p, _) = listed.abuse_policies().unwrap();
        assert_eq!(p.test_code("+41791234567"), Some("24682468"));
        assert!(p.silent.contains(&otp_sms_core::Scope::Number));
        // The development configuration lets alice see her own code.
        assert!(
            Config::development()
                .abuse_policies()
                .unwrap()
                .0
                .allow_self_return_code
        );
    }

    #[test]
    fn the_stream_cache_defaults_to_the_library_default_and_can_be_switched_off() {
        let default = Config::from_toml("").unwrap();
        assert_eq!(
            default.service.stream_cache,
            otp_sms_core::StreamCache::DEFAULT_CAPACITY
        );
        let off = Config::from_toml("[service]\nstream_cache = 0\n").unwrap();
        assert_eq!(off.service.stream_cache, 0);
        assert!(Config::from_toml("[service]\nstream_cache = -1\n").is_err());
    }

    #[test]
    fn routes_name_providers_by_their_sender_names() {
        let config = Config::from_toml(
            "[sms.routes]\ndefault = [\"twilio\", \"vonage\"]\nregions = { CH = [\"vonage\"] }\n",
        )
        .unwrap();
        let routes = config.sms.routes.unwrap();
        assert_eq!(routes.default, [SenderKind::Twilio, SenderKind::Vonage]);
        assert_eq!(routes.regions["CH"], [SenderKind::Vonage]);
        assert_eq!(routes.default[1].name(), "vonage");
        // A provider this server does not know stops the start at reading the file.
        let unknown = Config::from_toml("[sms.routes]\ndefault = [\"plivo\"]\n").unwrap_err();
        assert!(unknown.to_string().contains("plivo"), "{unknown}");
    }
}
