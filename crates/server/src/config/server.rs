//! `[server]` and `[tracing]`: the listener, its limits, where metrics are served, and where
//! traces go.

use serde::Deserialize;

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
