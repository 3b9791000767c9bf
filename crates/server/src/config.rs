//! The configuration file: instances, organizations, users, personal access tokens, the code
//! policy, the SMS sender and the notifier.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use otp_sms_core::{
    AbusePolicy, Authenticator, Authorizer, Caller, CodePolicy, InstanceId, NumberType,
    OrganizationId, PortError, PrincipalId, UserDirectory, UserId, UserRecord,
};
use serde::Deserialize;
use sha2_digest::token_digest;

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

/// `[tracing]`: spans exported over OTLP/gRPC; off unless `otlp_endpoint` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector, e.g. `http://otel-collector:4317`. Unset: no export.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of traces that start here to sample (0.0..=1.0); a caller's decision stands.
    pub sample_ratio: f64,
    /// Pause between two exports, in milliseconds.
    pub export_interval_ms: u64,
    /// Bound of one export, in milliseconds.
    pub export_timeout_ms: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "otp-sms".into(),
            sample_ratio: 1.0,
            export_interval_ms: 5_000,
            export_timeout_ms: 10_000,
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Proxies (CIDR blocks) whose `X-Forwarded-For` / `Forwarded` name the client; empty:
    /// the connection's peer is always the client, and those headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// Time a client has to send a request's headers, in milliseconds (slow clients are cut).
    pub header_read_timeout_ms: u64,
    /// Connections open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Connections open at once from one peer address (a trusted proxy's are not capped);
    /// more are closed as soon as they are accepted.
    pub max_connections_per_address: usize,
    /// HTTP/2 keep-alive ping interval, in seconds.
    pub http2_keep_alive_secs: u64,
    /// How long a shutdown (SIGTERM) waits for open connections, in seconds.
    pub shutdown_timeout_secs: u64,
    /// How long one call may take, in milliseconds: past it the call is answered
    /// DEADLINE_EXCEEDED (HTTP 504).
    pub request_timeout_ms: u64,
    /// API calls in progress at once; one more is answered UNAVAILABLE (HTTP 503) at once.
    /// Health, readiness and metrics are not counted.
    pub max_in_flight: usize,
    /// API calls of one caller (one principal of one instance) in progress at once; one more
    /// is answered RESOURCE_EXHAUSTED (HTTP 429), so one token cannot fill `max_in_flight`.
    pub max_in_flight_per_caller: usize,
    /// How long an API call's body may take to arrive, in milliseconds, from the end of its
    /// headers; a body still arriving then is answered DEADLINE_EXCEEDED (HTTP 504) and its
    /// connection closed. Keep it well under `request_timeout_ms`.
    pub body_timeout_ms: u64,
    /// Which header a trusted proxy names the client in: `x-forwarded-for` or `forwarded`
    /// (RFC 7239). The other is ignored, so a client cannot add its own.
    pub client_address_header: ClientAddressHeader,
    /// Where `/metrics` is served: an address of its own (`127.0.0.1:9464`, loopback by
    /// default), `"api"` for the API's port, or `"off"`.
    pub metrics_listen: MetricsListen,
    /// With TLS: how often the certificate files are checked for a change, in seconds
    /// (SIGHUP reloads at once).
    pub tls_check_secs: u64,
    /// Web pages (origins, `https://console.example.com`) whose scripts may call the API from
    /// a browser (CORS). None by default; `--dev` allows `http://localhost:*`.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            header_read_timeout_ms: 10_000,
            max_connections: 10_000,
            max_connections_per_address: 64,
            http2_keep_alive_secs: 20,
            shutdown_timeout_secs: 30,
            request_timeout_ms: 30_000,
            max_in_flight: 1_024,
            max_in_flight_per_caller: 32,
            body_timeout_ms: 10_000,
            client_address_header: ClientAddressHeader::XForwardedFor,
            metrics_listen: MetricsListen::default(),
            tls_check_secs: 10,
            cors_allowed_origins: Vec::new(),
        }
    }
}

impl ServerConfig {
    /// The listener's limits.
    pub fn limits(&self) -> crate::listener::Limits {
        crate::listener::Limits {
            header_read_timeout: std::time::Duration::from_millis(
                self.header_read_timeout_ms.max(1),
            ),
            max_connections: self.max_connections.max(1),
            max_connections_per_address: self.max_connections_per_address.max(1),
            http2_keep_alive: std::time::Duration::from_secs(self.http2_keep_alive_secs.max(1)),
            shutdown_timeout: std::time::Duration::from_secs(self.shutdown_timeout_secs),
        }
    }
}

/// `[server] client_address_header`: the header a trusted proxy sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAddressHeader {
    /// `X-Forwarded-For` (nginx, HAProxy's `option forwardfor`, most load balancers).
    XForwardedFor,
    /// `Forwarded: for=…` (RFC 7239).
    Forwarded,
}

/// `[server] metrics_listen`: where `/metrics` is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListen {
    /// On a listener of its own.
    At(std::net::SocketAddr),
    /// On the API's port, beside the calls.
    Api,
    /// Not served.
    Off,
}

impl Default for MetricsListen {
    /// Loopback, port 9464 (the port OpenTelemetry's Prometheus exporter uses).
    fn default() -> Self {
        Self::At(std::net::SocketAddr::from(([127, 0, 0, 1], 9464)))
    }
}

impl std::str::FromStr for MetricsListen {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "api" => Ok(Self::Api),
            "off" => Ok(Self::Off),
            address => address.parse().map(Self::At).map_err(|_| {
                format!(
                    "`{address}` is not an address and port (`127.0.0.1:9464`), \"api\" or \"off\""
                )
            }),
        }
    }
}

impl<'de> Deserialize<'de> for MetricsListen {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

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

/// `[service]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Attempts per command before a write conflict answers ABORTED (409).
    pub max_attempts: u32,
    /// Streams whose confirmed history the service keeps, with PostgreSQL, so that a command
    /// on a recently used registration skips its read (0: none). Unused with the in-memory
    /// store, whose reads cost what a cache look-up does.
    pub stream_cache: usize,
    /// How long an idempotency key stands for its first call, in seconds (default 86,400:
    /// 24 hours); a retry under the key within it gets the first answer.
    pub idempotency_window_secs: u64,
    /// Idempotency keys one caller may hold within that window; one more new key is
    /// RESOURCE_EXHAUSTED (HTTP 429) and nothing is stored. 0: no cap.
    pub idempotency_keys_per_caller: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            max_attempts: otp_sms_core::CommandService::DEFAULT_MAX_ATTEMPTS,
            stream_cache: otp_sms_core::StreamCache::DEFAULT_CAPACITY,
            idempotency_window_secs: otp_sms_core::DEFAULT_IDEMPOTENCY_WINDOW.as_secs(),
            idempotency_keys_per_caller: otp_sms_core::DEFAULT_IDEMPOTENCY_KEYS_PER_CALLER,
        }
    }
}

/// `[database]`: bounded waits on PostgreSQL (`otp_sms_postgres::Timeouts`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Opening a connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// One call on the wire, in milliseconds: past it the call answers UNAVAILABLE.
    pub operation_timeout_ms: u64,
    /// `statement_timeout` of the store's worker connections, in milliseconds.
    pub statement_timeout_ms: u64,
    /// `lock_timeout` of the store's worker connections, in milliseconds.
    pub lock_timeout_ms: u64,
    /// Appends (and reads) that may wait at once; more are refused as UNAVAILABLE.
    pub queue: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        let t = otp_sms_postgres::Timeouts::default();
        Self {
            connect_timeout_ms: t.connect.as_millis() as u64,
            operation_timeout_ms: t.operation.as_millis() as u64,
            statement_timeout_ms: t.statement.as_millis() as u64,
            lock_timeout_ms: t.lock.as_millis() as u64,
            queue: t.queue,
        }
    }
}

impl DatabaseConfig {
    /// The store's timeouts; every figure must be positive.
    pub fn timeouts(&self) -> Result<otp_sms_postgres::Timeouts, String> {
        let ms = |name: &str, v: u64| {
            if v == 0 {
                Err(format!("[database] {name} must be at least 1"))
            } else {
                Ok(std::time::Duration::from_millis(v))
            }
        };
        if self.queue == 0 {
            return Err("[database] queue must be at least 1".into());
        }
        Ok(otp_sms_postgres::Timeouts {
            connect: ms("connect_timeout_ms", self.connect_timeout_ms)?,
            operation: ms("operation_timeout_ms", self.operation_timeout_ms)?,
            statement: ms("statement_timeout_ms", self.statement_timeout_ms)?,
            lock: ms("lock_timeout_ms", self.lock_timeout_ms)?,
            queue: self.queue,
        })
    }
}

/// `[[instances]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// The instance id.
    pub id: String,
    /// Domains that name it (`instance.domain`).
    #[serde(default)]
    pub domains: Vec<String>,
    /// This instance's abuse rules, laid over `[abuse]`.
    #[serde(default)]
    pub abuse: Option<AbuseConfig>,
}

/// `[[organizations]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrganizationConfig {
    /// The instance it belongs to.
    pub instance: String,
    /// The organization id.
    pub id: String,
    /// Its primary domain (`organization.org_domain`), if any.
    #[serde(default)]
    pub domain: Option<String>,
}

/// `[[users]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The instance.
    pub instance: String,
    /// The user id.
    pub id: String,
    /// The user's organization.
    pub organization: String,
    /// The user's preferred language (a BCP 47 tag such as `de`), for the text of the SMS.
    #[serde(default)]
    pub language: Option<String>,
}

/// `[[tokens]]`: a personal access token of a user. `Debug` hides the token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret token, as sent in `Authorization: Bearer`.
    pub token: String,
    /// The instance.
    pub instance: String,
    /// The user the token acts as.
    pub user: String,
    /// Permissions the token holds in the user's organization, e.g. `user.write`.
    #[serde(default)]
    pub permissions: Vec<String>,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("token", &"<redacted>")
            .field("instance", &self.instance)
            .field("user", &self.user)
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Digits per code (7..=12).
    pub code_length: usize,
    /// Seconds a code is valid (1..=600).
    pub code_lifetime_secs: u64,
    /// Wrong attempts that burn a code (1..=100).
    pub max_failed_checks: u32,
    /// Least seconds between two codes of one registration.
    pub resend_interval_secs: u64,
    /// Most codes per registration per hour (1..=32).
    pub max_codes_per_hour: u32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let p = CodePolicy::default();
        Self {
            code_length: p.length(),
            code_lifetime_secs: p.lifetime().as_secs(),
            max_failed_checks: p.max_failed_checks(),
            resend_interval_secs: p.resend_interval().as_secs(),
            max_codes_per_hour: p.max_codes_per_hour(),
        }
    }
}

impl PolicyConfig {
    /// The validated policy.
    pub fn policy(&self) -> Result<CodePolicy, ConfigError> {
        CodePolicy::new(
            self.code_length,
            Duration::from_secs(self.code_lifetime_secs),
            self.max_failed_checks,
            Duration::from_secs(self.resend_interval_secs),
            self.max_codes_per_hour,
        )
        .map_err(|e| ConfigError::Invalid(format!("[policy]: {e}")))
    }
}

/// Which SMS sender to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderKind {
    /// Print the SMS on standard output: development mode only.
    Log,
    /// POST each SMS as JSON to `webhook_url`.
    Webhook,
    /// Send through Twilio Programmable Messaging (`[sms.twilio]`).
    Twilio,
    /// Send through the Vonage SMS API (`[sms.vonage]`).
    Vonage,
    /// Route by the number's region over several providers, failing over (`[sms.routes]`).
    Routes,
}

impl SenderKind {
    /// The name the configuration gives it (`twilio`, `vonage`, …).
    pub fn name(self) -> &'static str {
        match self {
            SenderKind::Log => "log",
            SenderKind::Webhook => "webhook",
            SenderKind::Twilio => "twilio",
            SenderKind::Vonage => "vonage",
            SenderKind::Routes => "routes",
        }
    }
}

impl AsRef<str> for SenderKind {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

/// `[sms]`. `Debug` hides the webhook secret and the URL's credentials and query.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// `log` or `webhook`. Unset: `log` in development mode; otherwise no notifier runs and
    /// codes to send wait in the outbox.
    pub sender: Option<SenderKind>,
    /// Where the webhook sender posts: https, or plain http to a loopback or private address
    /// with `allow_http`.
    pub webhook_url: Option<String>,
    /// The Standard Webhooks signing secret, `whsec_<base64>`; required for the webhook.
    pub webhook_secret: Option<String>,
    /// Plain http to a loopback or private address is allowed (a sidecar, a test).
    pub allow_http: bool,
    /// Time-out of one webhook request.
    pub timeout_ms: u64,
    /// Extra attempts after a failed webhook request, with doubling back-off.
    pub retries: u32,
    /// The text of the SMS.
    pub text: TextConfig,
    /// Twilio, for `sender = "twilio"`.
    pub twilio: Option<TwilioConfig>,
    /// Vonage, for `sender = "vonage"`.
    pub vonage: Option<VonageConfig>,
    /// Routing and failover, for `sender = "routes"`.
    pub routes: Option<RoutesConfig>,
}

/// `[sms.routes]`: providers in order per region, and their circuit breakers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesConfig {
    /// Providers for regions not listed, in order (`["twilio", "vonage"]`).
    pub default: Vec<SenderKind>,
    /// Providers by region (ISO 3166 country of the number): `{ CH = ["vonage", "twilio"] }`.
    #[serde(default)]
    pub regions: std::collections::BTreeMap<String, Vec<SenderKind>>,
    /// Temporary failures in a row that open a provider's breaker.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open breaker skips its provider before one probe, in seconds.
    #[serde(default = "default_open_secs")]
    pub open_secs: u64,
}

fn default_failure_threshold() -> u32 {
    3
}

fn default_open_secs() -> u64 {
    30
}

/// Reads a file that holds a secret, refusing it (as ssh refuses a private key) when users
/// other than its owner may read or write it: a secret readable by everyone on the machine is
/// no longer a secret, and saying so at start is cheaper than finding out after a leak. The
/// error names the file and the fix.
pub fn read_private_file(path: &std::path::Path) -> Result<zeroize::Zeroizing<String>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} holds a secret but is open to other users (mode {:04o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ));
        }
    }
    let mut text = zeroize::Zeroizing::new(String::new());
    std::io::Read::read_to_string(&mut &file, &mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text)
}

/// A provider's secret, from exactly one of a file and an environment variable.
fn read_secret(
    table: &str,
    what: &str,
    file: Option<&std::path::Path>,
    env: Option<&str>,
) -> Result<zeroize::Zeroizing<String>, String> {
    let text = match (file, env) {
        (Some(path), None) => read_private_file(path)
            .map_err(|e| format!("[{table}] {what}_file {e}"))?
            .to_string(),
        (None, Some(name)) => {
            std::env::var(name).map_err(|_| format!("[{table}] {what}_env: ${name} is not set"))?
        }
        _ => {
            return Err(format!(
                "[{table}] set exactly one of {what}_file and {what}_env"
            ))
        }
    };
    Ok(zeroize::Zeroizing::new(text.trim().to_owned()))
}

/// `[sms.vonage]`. The secret comes from a file or an environment variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VonageConfig {
    /// The API key.
    pub api_key: String,
    /// A file holding the API secret.
    pub api_secret_file: Option<std::path::PathBuf>,
    /// An environment variable holding it.
    pub api_secret_env: Option<String>,
    /// The sender: a number or an alphanumeric id.
    pub from: String,
    /// Where Vonage sends delivery receipts: the public address of `/sms/status/vonage`.
    /// Receipts must be signed: set the signature secret too.
    pub callback: Option<String>,
    /// A file holding the account's signature secret (for signed delivery receipts).
    pub signature_secret_file: Option<std::path::PathBuf>,
    /// An environment variable holding it.
    pub signature_secret_env: Option<String>,
    /// How the account signs webhooks, as set in Vonage's dashboard (`md5hash`, Vonage's
    /// default, or `md5`, `sha1`, `sha256`, `sha512` for an HMAC).
    #[serde(default = "default_vonage_signature_method")]
    pub signature_method: otp_sms_providers::vonage::SignatureMethod,
    /// The API's address (a stand-in on a loopback or private address in tests).
    #[serde(default = "default_vonage_api")]
    pub base_url: String,
    /// Bound of one request, in milliseconds.
    #[serde(default = "default_twilio_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_vonage_api() -> String {
    otp_sms_providers::vonage::VONAGE_API.to_owned()
}

fn default_vonage_signature_method() -> otp_sms_providers::vonage::SignatureMethod {
    otp_sms_providers::vonage::SignatureMethod::Md5hash
}

impl VonageConfig {
    /// The delivery receipt endpoint, when `callback` is set. Unsigned receipts are never
    /// taken, so a callback without a signature secret stops the start.
    pub fn receipt_endpoint(
        &self,
        service: otp_sms_core::CommandService,
    ) -> Result<Option<otp_sms_providers::vonage::ReceiptEndpoint>, String> {
        let Some(callback) = &self.callback else {
            return Ok(None);
        };
        otp_sms_providers::vonage::receipt_base(callback)?;
        if self.signature_secret_file.is_none() && self.signature_secret_env.is_none() {
            return Err("[sms.vonage] callback needs signed delivery receipts: set signature_secret_file or signature_secret_env (and signature_method) as in the account's settings".into());
        }
        let secret = read_secret(
            "sms.vonage",
            "signature_secret",
            self.signature_secret_file.as_deref(),
            self.signature_secret_env.as_deref(),
        )?;
        if secret.is_empty() {
            return Err("[sms.vonage] the signature secret is empty".into());
        }
        if self.signature_method == otp_sms_providers::vonage::SignatureMethod::Md5hash {
            tracing::warn!("[sms.vonage] receipts are checked with md5hash, Vonage's default; an HMAC (signature_method = \"sha256\" or \"sha512\", set in Vonage's dashboard too) is stronger");
        }
        Ok(Some(otp_sms_providers::vonage::ReceiptEndpoint::new(
            self.api_key.clone(),
            secret.as_str(),
            self.signature_method,
            service,
        )))
    }

    /// The sender's options, with the secret read from its file or variable.
    pub fn options(
        &self,
        templates: std::sync::Arc<otp_sms_core::message::MessageTemplates>,
    ) -> Result<otp_sms_providers::vonage::VonageOptions, String> {
        let api_secret = read_secret(
            "sms.vonage",
            "api_secret",
            self.api_secret_file.as_deref(),
            self.api_secret_env.as_deref(),
        )?;
        let mut options = otp_sms_providers::vonage::VonageOptions::new(
            self.api_key.clone(),
            api_secret.as_str(),
            self.from.clone(),
            templates,
        )
        .with_base_url(self.base_url.clone())
        .with_timeout(std::time::Duration::from_millis(self.timeout_ms.max(1)));
        if let Some(callback) = &self.callback {
            options = options.with_callback(callback.clone());
        }
        Ok(options)
    }
}

/// `[sms.twilio]`. The secret comes from a file or an environment variable, never from this
/// file or the command line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// The account, `AC…`.
    pub account_sid: String,
    /// An API key (`SK…`) to authenticate with instead of the account's auth token.
    pub api_key_sid: Option<String>,
    /// A file holding the auth token (or the API key's secret).
    pub auth_token_file: Option<std::path::PathBuf>,
    /// An environment variable holding it.
    pub auth_token_env: Option<String>,
    /// The sending number (E.164) or alphanumeric sender id.
    pub from: Option<String>,
    /// A Messaging Service (`MG…`) instead of `from`.
    pub messaging_service_sid: Option<String>,
    /// Where Twilio reports each message's status.
    pub status_callback: Option<String>,
    /// A file holding the account's auth token, to check the status callbacks' signatures
    /// when the sender authenticates with an API key (Twilio signs callbacks with the auth
    /// token, never with an API key's secret). Without an API key, the auth token above.
    pub status_auth_token_file: Option<std::path::PathBuf>,
    /// An environment variable holding it.
    pub status_auth_token_env: Option<String>,
    /// The API's address (a stand-in on a loopback or private address in tests).
    #[serde(default = "default_twilio_api")]
    pub base_url: String,
    /// Bound of one request, in milliseconds.
    #[serde(default = "default_twilio_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_twilio_api() -> String {
    otp_sms_providers::twilio::TWILIO_API.to_owned()
}

fn default_twilio_timeout_ms() -> u64 {
    5_000
}

impl TwilioConfig {
    /// The status callback endpoint, when `status_callback` is set. Twilio signs reports with
    /// the account's auth token: `status_auth_token_*` when the sender uses an API key, else
    /// the auth token the sender uses.
    pub fn status_endpoint(
        &self,
        service: otp_sms_core::CommandService,
    ) -> Result<Option<otp_sms_providers::twilio::StatusEndpoint>, String> {
        let Some(public_url) = &self.status_callback else {
            return Ok(None);
        };
        let own_source =
            self.status_auth_token_file.is_some() || self.status_auth_token_env.is_some();
        let auth_token = if own_source {
            read_secret(
                "sms.twilio",
                "status_auth_token",
                self.status_auth_token_file.as_deref(),
                self.status_auth_token_env.as_deref(),
            )?
        } else if self.api_key_sid.is_some() {
            return Err("[sms.twilio] status_callback with an API key: Twilio signs status callbacks with the account's auth token; set status_auth_token_file or status_auth_token_env".into());
        } else {
            read_secret(
                "sms.twilio",
                "auth_token",
                self.auth_token_file.as_deref(),
                self.auth_token_env.as_deref(),
            )?
        };
        if auth_token.is_empty() {
            return Err("[sms.twilio] the auth token that checks status callbacks is empty".into());
        }
        Ok(Some(otp_sms_providers::twilio::StatusEndpoint::new(
            auth_token.as_str(),
            public_url.clone(),
            service,
        )))
    }

    /// The sender's options, with the secret read from its file or variable.
    pub fn options(
        &self,
        templates: std::sync::Arc<otp_sms_core::message::MessageTemplates>,
    ) -> Result<otp_sms_providers::twilio::TwilioOptions, String> {
        let secret = read_secret(
            "sms.twilio",
            "auth_token",
            self.auth_token_file.as_deref(),
            self.auth_token_env.as_deref(),
        )?;
        let from = match (&self.from, &self.messaging_service_sid) {
            (Some(number), None) => otp_sms_providers::twilio::TwilioFrom::Number(number.clone()),
            (None, Some(sid)) => {
                otp_sms_providers::twilio::TwilioFrom::MessagingService(sid.clone())
            }
            _ => {
                return Err("[sms.twilio] set exactly one of from and messaging_service_sid".into())
            }
        };
        let mut options = otp_sms_providers::twilio::TwilioOptions::new(
            self.account_sid.clone(),
            secret.as_str(),
            from,
            templates,
        )
        .with_base_url(self.base_url.clone())
        .with_timeout(std::time::Duration::from_millis(self.timeout_ms.max(1)));
        if let Some(key_sid) = &self.api_key_sid {
            options = options.with_api_key(key_sid.clone(), secret.as_str());
        }
        if let Some(url) = &self.status_callback {
            options = options.with_status_callback(url.clone());
        }
        Ok(options)
    }
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            sender: None,
            webhook_url: None,
            webhook_secret: None,
            allow_http: false,
            timeout_ms: 5_000,
            retries: 2,
            text: TextConfig::default(),
            twilio: None,
            vonage: None,
            routes: None,
        }
    }
}

/// `[sms.text]`: the SMS's text (`otp_sms_core::message`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextConfig {
    /// The application's name, for `{app}`.
    pub app_name: String,
    /// The template for users of no configured language; `{code}` required, `{minutes}` and
    /// `{app}` optional.
    pub default_template: Option<String>,
    /// Templates by language tag (`de = "Ihr {app}-Code: {code}"`).
    pub templates: std::collections::BTreeMap<String, String>,
    /// The site's host for the WebOTP line `@host #code` that ends every text, so that
    /// browsers and phones autofill the code only there.
    pub webotp_domain: Option<String>,
    /// Android's SMS Retriever app hash (11 characters), on a line before the WebOTP line.
    pub android_app_hash: Option<String>,
    /// SMS one text may take, checked at start-up with a code of the configured length.
    pub max_segments: usize,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            app_name: "otp-sms".into(),
            default_template: None,
            templates: Default::default(),
            webotp_domain: None,
            android_app_hash: None,
            max_segments: 1,
        }
    }
}

impl TextConfig {
    /// The templates, checked: each must contain `{code}` and fit in `max_segments` SMS with a
    /// code of `code_length` digits valid for `lifetime`.
    pub fn templates(
        &self,
        code_length: usize,
        lifetime: std::time::Duration,
    ) -> Result<otp_sms_core::message::MessageTemplates, String> {
        let fail = |e: otp_sms_core::message::TemplateError| format!("[sms.text] {e}");
        let mut t = otp_sms_core::message::MessageTemplates::new(self.app_name.clone());
        if let Some(template) = &self.default_template {
            t = t.with_default_template(template).map_err(fail)?;
        }
        for (locale, template) in &self.templates {
            t = t.with_template(locale, template).map_err(fail)?;
        }
        if let Some(domain) = &self.webotp_domain {
            t = t.with_webotp_domain(domain);
        }
        if let Some(hash) = &self.android_app_hash {
            t = t.with_android_app_hash(hash).map_err(fail)?;
        }
        let minutes = lifetime.as_secs().div_ceil(60).max(1);
        t.check(code_length, minutes, self.max_segments.max(1))
            .map_err(fail)?;
        Ok(t)
    }
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self
            .webhook_url
            .as_deref()
            .map(otp_sms_providers::redacted_webhook_url);
        f.debug_struct("SmsConfig")
            .field("sender", &self.sender)
            .field("webhook_url", &url)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .field("timeout_ms", &self.timeout_ms)
            .field("retries", &self.retries)
            .field("text", &self.text)
            .field("twilio", &self.twilio)
            .field("vonage", &self.vonage)
            .field("routes", &self.routes)
            .finish()
    }
}

/// `[notifier]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifierConfig {
    /// Pause between two passes over the outbox.
    pub interval_ms: u64,
    /// Messages per pass.
    pub batch: usize,
    /// How long a fetched message stays with this notifier before another may take it. Each
    /// send must end a quarter of it before it runs out.
    pub lease_secs: u64,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// Attempts before a message is given up as `delivery failed`.
    pub max_attempts: u32,
    /// The wait after the first failed attempt, doubling with each, in milliseconds.
    pub backoff_ms: u64,
    /// The longest wait between attempts, in milliseconds.
    pub max_backoff_ms: u64,
}

impl Default for NotifierConfig {
    fn default() -> Self {
        let policy = otp_sms_core::DeliveryPolicy::default();
        Self {
            interval_ms: 500,
            batch: 100,
            lease_secs: 60,
            concurrency: policy.concurrency,
            max_attempts: policy.max_attempts,
            backoff_ms: policy.backoff.as_millis() as u64,
            max_backoff_ms: policy.max_backoff.as_millis() as u64,
        }
    }
}

impl NotifierConfig {
    /// The notifier's pace: interval, batch and lease.
    pub fn settings(&self) -> otp_sms_core::NotifierSettings {
        otp_sms_core::NotifierSettings {
            interval: std::time::Duration::from_millis(self.interval_ms),
            batch: self.batch,
            lease: std::time::Duration::from_secs(self.lease_secs),
        }
    }

    /// The service's delivery policy.
    pub fn delivery_policy(&self) -> otp_sms_core::DeliveryPolicy {
        otp_sms_core::DeliveryPolicy {
            concurrency: self.concurrency.max(1),
            max_attempts: self.max_attempts.max(1),
            backoff: std::time::Duration::from_millis(self.backoff_ms),
            max_backoff: std::time::Duration::from_millis(self.max_backoff_ms.max(self.backoff_ms)),
        }
    }
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
        Self::from_toml(include_str!("../dev.toml"))
            .expect("the built-in development config parses")
    }
}

/// Users, organizations, tokens and permissions from the configuration: the server's
/// [`UserDirectory`], [`Authorizer`] and [`Authenticator`]. `Debug` shows how many tokens
/// there are, not their digests (a digest lets anyone test guesses offline).
#[derive(Default)]
pub struct Directory {
    users: HashMap<(InstanceId, UserId), OrganizationId>,
    languages: HashMap<(InstanceId, UserId), String>,
    org_domains: HashMap<(InstanceId, String), OrganizationId>,
    instance_domains: HashMap<String, InstanceId>,
    /// Tokens by SHA-256 digest, so a lookup's timing says nothing about the token.
    tokens: HashMap<[u8; 32], Caller>,
    grants: HashSet<(InstanceId, PrincipalId, OrganizationId, String)>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("users", &self.users)
            .field("org_domains", &self.org_domains)
            .field("instance_domains", &self.instance_domains)
            .field("tokens", &self.tokens.len())
            .field("grants", &self.grants)
            .finish()
    }
}

fn id<T>(
    parse: fn(&'static str, String) -> Result<T, otp_sms_core::Error>,
    what: &'static str,
    value: &str,
) -> Result<T, ConfigError> {
    parse(what, value.to_owned()).map_err(|e| ConfigError::Invalid(e.to_string()))
}

impl Directory {
    /// Builds the directory, checking that every reference is defined.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let mut d = Directory::default();
        let mut instances = HashSet::new();
        for i in &config.instances {
            let instance = id(InstanceId::parse, "instances.id", &i.id)?;
            for domain in &i.domains {
                d.instance_domains
                    .insert(domain.to_ascii_lowercase(), instance.clone());
            }
            instances.insert(instance);
        }
        let known_instance = |name: &str| -> Result<InstanceId, ConfigError> {
            let instance = id(InstanceId::parse, "instance", name)?;
            if instances.contains(&instance) {
                Ok(instance)
            } else {
                Err(ConfigError::Invalid(format!(
                    "instance `{name}` is not defined"
                )))
            }
        };
        let mut orgs = HashSet::new();
        for o in &config.organizations {
            let instance = known_instance(&o.instance)?;
            let org = id(OrganizationId::parse, "organizations.id", &o.id)?;
            if let Some(domain) = &o.domain {
                d.org_domains
                    .insert((instance.clone(), domain.to_ascii_lowercase()), org.clone());
            }
            orgs.insert((instance, org));
        }
        for u in &config.users {
            let instance = known_instance(&u.instance)?;
            let org = id(OrganizationId::parse, "users.organization", &u.organization)?;
            if !orgs.contains(&(instance.clone(), org.clone())) {
                return Err(ConfigError::Invalid(format!(
                    "user `{}`: organization `{}` is not defined",
                    u.id, u.organization
                )));
            }
            let user = id(UserId::parse, "users.id", &u.id)?;
            if let Some(language) = &u.language {
                d.languages
                    .insert((instance.clone(), user.clone()), language.clone());
            }
            d.users.insert((instance, user), org);
        }
        for t in &config.tokens {
            if t.token.len() < 8 {
                return Err(ConfigError::Invalid(format!(
                    "token of user `{}` is shorter than 8 characters",
                    t.user
                )));
            }
            let instance = known_instance(&t.instance)?;
            let user = id(UserId::parse, "tokens.user", &t.user)?;
            let Some(org) = d.users.get(&(instance.clone(), user.clone())).cloned() else {
                return Err(ConfigError::Invalid(format!(
                    "token: user `{}` is not defined in instance `{}`",
                    t.user, t.instance
                )));
            };
            let principal = id(PrincipalId::parse, "tokens.user", &t.user)?;
            for permission in &t.permissions {
                d.grants.insert((
                    instance.clone(),
                    principal.clone(),
                    org.clone(),
                    permission.clone(),
                ));
            }
            if d.tokens
                .insert(token_digest(&t.token), Caller::new(instance, principal))
                .is_some()
            {
                return Err(ConfigError::Invalid("a token is listed twice".into()));
            }
        }
        Ok(d)
    }
}

#[async_trait]
impl UserDirectory for Directory {
    async fn find_user(
        &self,
        instance: &InstanceId,
        user: &UserId,
    ) -> Result<Option<UserRecord>, PortError> {
        Ok(self
            .users
            .get(&(instance.clone(), user.clone()))
            .map(|org| UserRecord {
                id: user.clone(),
                organization: org.clone(),
            }))
    }

    async fn organization_by_domain(
        &self,
        instance: &InstanceId,
        domain: &str,
    ) -> Result<Option<OrganizationId>, PortError> {
        Ok(self
            .org_domains
            .get(&(instance.clone(), domain.to_ascii_lowercase()))
            .cloned())
    }

    async fn preferred_language(
        &self,
        instance: &InstanceId,
        user: &UserId,
    ) -> Result<Option<String>, PortError> {
        Ok(self
            .languages
            .get(&(instance.clone(), user.clone()))
            .cloned())
    }
}

#[async_trait]
impl Authorizer for Directory {
    async fn has_permission(
        &self,
        instance: &InstanceId,
        principal: &PrincipalId,
        organization: &OrganizationId,
        permission: &str,
    ) -> Result<bool, PortError> {
        Ok(self.grants.contains(&(
            instance.clone(),
            principal.clone(),
            organization.clone(),
            permission.to_owned(),
        )))
    }
}

#[async_trait]
impl Authenticator for Directory {
    async fn authenticate(&self, bearer_token: &str) -> Result<Option<Caller>, PortError> {
        Ok(self.tokens.get(&token_digest(bearer_token)).cloned())
    }

    async fn instance_by_domain(&self, domain: &str) -> Result<Option<InstanceId>, PortError> {
        Ok(self
            .instance_domains
            .get(&domain.to_ascii_lowercase())
            .cloned())
    }
}

mod sha2_digest {
    use sha2::{Digest, Sha256};

    pub fn token_digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_config_is_valid() {
        let config = Config::development();
        Directory::new(&config).unwrap();
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
        assert!(Directory::new(&Config::from_toml(bad_user).unwrap()).is_err());
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
        assert!(!default.allow_self_return_code);
        assert_eq!(default.user, AbusePolicy::default().user);
        let (id, b) = &own[0];
        assert_eq!(id.as_str(), "b");
        assert!(b.allow_self_return_code);
        assert_eq!(b.number, default.number);
        assert_eq!(b.refused_types.len(), 1);
        for bad in [
            "[abuse]\ninstance = [{ max = 0, window_secs = 60 }]\n",
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
