//! # otp-sms-server
//!
//! Runs the otp-sms API (HTTP/JSON, gRPC and gRPC-web on one port) with the SMS notifier, on PostgreSQL
//! (`--database-url`) or, by default, on the in-memory store. `otp-sms-server --help` lists
//! the flags; `docs/operations.md` explains them.
//!
//! The binary is `fn main() { otp_sms_server::cli_main() }`; hosts that want the same server
//! inside their own process call [`run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderName, Request, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use otp_sms_core::{
    BudgetStore, CodeKey, CodeKeyRing, CommandService, Event, EventStore, IdempotencyStore, KeyId,
    SmsSender,
};
use otp_sms_memory::MemoryStore;
use otp_sms_postgres::{DatabaseHosts, PgBudgets, PgIdempotency, PgStore};
use otp_sms_providers::{routing, twilio, vonage, webhook};
use serde_json::json;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use zeroize::Zeroizing;

pub mod config;
pub mod cors;
pub mod edge;
pub mod listener;
pub mod metrics;
pub mod telemetry;
pub mod tls;

use config::{Config, SenderKind};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The command line; every flag can also come from the environment. `Debug` shows neither the
/// database URL's password nor the keys, and `--help` shows no value taken from the
/// environment (a database URL there carries its password).
#[derive(Clone, Parser)]
#[command(
    name = "otp-sms-server",
    version,
    about = "OTP SMS registration server (ZITADEL v3alpha API)"
)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(
        long,
        env = "OTP_SMS_LISTEN",
        hide_env_values = true,
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// PostgreSQL URL; migrations run at start. Without it, data lives only in memory.
    #[arg(long, env = "OTP_SMS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Schema for the PostgreSQL tables.
    #[arg(
        long,
        env = "OTP_SMS_DATABASE_SCHEMA",
        hide_env_values = true,
        default_value = "otp_sms"
    )]
    pub schema: String,
    /// TOML configuration: instances, organizations, users, tokens, policy, SMS, notifier.
    #[arg(long, env = "OTP_SMS_CONFIG", hide_env_values = true)]
    pub config: Option<PathBuf>,
    /// File with the code keys, one `KEY_ID HEX64` per line; the first is current.
    #[arg(long, env = "OTP_SMS_KEY_FILE", hide_env_values = true)]
    pub key_file: Option<PathBuf>,
    /// The code keys inline, `KEY_ID:HEX64[,KEY_ID:HEX64…]`; the first is current.
    #[arg(long, env = "OTP_SMS_KEYS", hide_env_values = true)]
    pub keys: Option<String>,
    /// Development mode: a generated key if none is given, the built-in development
    /// configuration if no --config is given, and the printing SMS sender allowed.
    #[arg(long, env = "OTP_SMS_DEV", hide_env_values = true)]
    pub dev: bool,
    /// Log format.
    #[arg(
        long,
        env = "OTP_SMS_LOG_FORMAT",
        hide_env_values = true,
        value_enum,
        default_value = "human"
    )]
    pub log_format: LogFormat,
    /// TLS certificate chain (PEM, leaf first); with --tls-key the server speaks only TLS.
    /// Read again on SIGHUP and when the file changes.
    #[arg(
        long,
        env = "OTP_SMS_TLS_CERT",
        hide_env_values = true,
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(
        long,
        env = "OTP_SMS_TLS_KEY",
        hide_env_values = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Where `/metrics` is served, over `[server] metrics_listen`: an address and port of its
    /// own, `api` (the API's port) or `off`.
    #[arg(long, env = "OTP_SMS_METRICS_LISTEN", hide_env_values = true)]
    pub metrics_listen: Option<config::MetricsListen>,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("listen", &self.listen)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redacted_url),
            )
            .field("schema", &self.schema)
            .field("config", &self.config)
            .field("key_file", &self.key_file)
            .field("keys", &self.keys.as_ref().map(|_| "<redacted>"))
            .field("dev", &self.dev)
            .field("log_format", &self.log_format)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("metrics_listen", &self.metrics_listen)
            .finish()
    }
}

/// A database URL with its password (and any `password=` parameter) replaced, for logs.
pub fn redacted_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    format!("{}{user}:<redacted>{}", &base[..scheme + 3], &base[at..])
                }
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    match query {
        None => base,
        Some(query) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=<redacted>"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
    }
}

impl Args {
    /// Development mode is for a laptop: it refuses to listen beyond loopback and refuses
    /// anything that makes it a production server (a database, a configuration file), so a
    /// stray `OTP_SMS_DEV` cannot turn a production deployment into one with public tokens
    /// and a printing SMS sender.
    pub fn check_mode(&self) -> Result<(), StartError> {
        if !self.dev {
            return Ok(());
        }
        let refused = if !self.listen.ip().is_loopback() {
            Some(format!(
                "--listen {} is not a loopback address",
                self.listen
            ))
        } else if self.database_url.is_some() {
            Some("--database-url (OTP_SMS_DATABASE_URL) is set".to_owned())
        } else if self.config.is_some() {
            Some("--config (OTP_SMS_CONFIG) is set".to_owned())
        } else {
            None
        };
        match refused {
            Some(why) => Err(StartError::Dev(why)),
            None => Ok(()),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration problem.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// No usable code keys.
    #[error("code keys: {0}")]
    Keys(String),
    /// The store could not be opened or migrated.
    #[error("event store: {0}")]
    Store(#[from] otp_sms_core::StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// The TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// Development mode together with a production setting.
    #[error("--dev (OTP_SMS_DEV) is for a laptop and refuses a production setting: {0}; unset OTP_SMS_DEV or drop the setting")]
    Dev(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Parses the command line, sets up logging (and trace export, if configured) and runs until
/// SIGTERM or Ctrl-C.
pub fn cli_main() -> ExitCode {
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The `[tracing]` table is read before the rest of the configuration, so that the
    // subscriber exists when `run` starts; `run` reads (and checks) the file again.
    let tracing_config = match &args.config {
        Some(path) if !args.dev => match Config::from_file(path) {
            Ok(config) => config.tracing,
            Err(e) => {
                eprintln!("otp-sms-server: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => config::TracingConfig::default(),
    };
    let telemetry =
        match runtime.block_on(async { telemetry::init(args.log_format, &tracing_config) }) {
            Ok(telemetry) => telemetry,
            Err(e) => {
                eprintln!("otp-sms-server: {e}");
                return ExitCode::FAILURE;
            }
        };
    if matches.value_source("keys") == Some(clap::parser::ValueSource::CommandLine) {
        tracing::warn!("--keys on the command line shows the keys in the process list to every user of this machine; use --key-file or OTP_SMS_KEYS");
    }
    let outcome = runtime.block_on(run(args, shutdown_signal()));
    runtime.block_on(async { telemetry.shutdown() });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("otp-sms-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Parses keys from `KEY_ID HEX64` lines or `KEY_ID:HEX64` items; the first is current.
pub fn parse_keys(text: &str) -> Result<CodeKeyRing, StartError> {
    let mut ring: Option<CodeKeyRing> = None;
    for item in text
        .split(['\n', ','])
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (id, hex_key) = item
            .split_once([' ', ':', '\t'])
            .ok_or_else(|| StartError::Keys("expected `KEY_ID HEX64`".into()))?;
        let bytes = Zeroizing::new(
            hex::decode(hex_key.trim())
                .map_err(|_| StartError::Keys(format!("key `{id}` is not hex")))?,
        );
        let master: Zeroizing<[u8; 32]> =
            Zeroizing::new(bytes.as_slice().try_into().map_err(|_| {
                StartError::Keys(format!("key `{id}` must be 32 bytes (64 hex digits)"))
            })?);
        let key = CodeKey::new(KeyId::new(id.trim()), &master);
        ring = Some(match ring {
            None => CodeKeyRing::new(key),
            Some(r) => r.with_previous(key),
        });
    }
    ring.ok_or_else(|| StartError::Keys("no key given".into()))
}

fn load_keys(args: &Args) -> Result<CodeKeyRing, StartError> {
    if let Some(path) = &args.key_file {
        let text = config::read_private_file(path)
            .map_err(|e| StartError::Keys(format!("--key-file {e}")))?;
        return parse_keys(&text);
    }
    if let Some(keys) = &args.keys {
        return parse_keys(keys);
    }
    if args.dev {
        tracing::warn!("DEVELOPMENT MODE: using a generated code key; codes of this run cannot be checked after a restart");
        let mut master = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut master[..]);
        return Ok(CodeKeyRing::new(CodeKey::new(KeyId::new("dev"), &master)));
    }
    Err(StartError::Keys(
        "no code key: pass --key-file or --keys (OTP_SMS_KEY_FILE / OTP_SMS_KEYS), or --dev for a generated development key".into(),
    ))
}

/// The event store, its readiness check, the stream cache's size and the shared budgets (none:
/// the service's in-process default).
type StoreParts = (
    Arc<dyn EventStore<Event>>,
    StoreCheck,
    usize,
    Option<(Arc<dyn BudgetStore>, Arc<dyn IdempotencyStore>)>,
);

/// How the server reaches its store, for the readiness check.
#[derive(Clone)]
enum StoreCheck {
    Memory,
    Postgres(Arc<PgStore<Event>>),
}

/// What `/readyz` checks: that the store takes writes and that the notifier, if one runs,
/// makes progress.
#[derive(Clone)]
struct Readiness {
    store: StoreCheck,
    notifier: Option<Arc<otp_sms_core::NotifierHeartbeat>>,
}

impl Readiness {
    async fn check(&self) -> Result<(), &'static str> {
        if let StoreCheck::Postgres(store) = &self.store {
            if let Err(e) = store.ping().await {
                tracing::warn!(error = %e, "readiness: the event store takes no writes");
                return Err("event store unavailable");
            }
        }
        if self
            .notifier
            .as_ref()
            .is_some_and(|beat| beat.stuck(std::time::Instant::now()))
        {
            tracing::warn!("readiness: the SMS notifier has made no progress");
            return Err("SMS notifier stuck");
        }
        Ok(())
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(readiness): State<Readiness>) -> (StatusCode, Json<serde_json::Value>) {
    match readiness.check().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"code": 14, "message": why, "details": []})),
        ),
    }
}

/// Builds everything from `args` and serves until `shutdown` completes.
pub async fn run(
    args: Args,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    args.check_mode()?;
    let config = match (&args.config, args.dev) {
        (Some(path), _) => Config::from_file(path)?,
        (None, true) => {
            tracing::warn!("DEVELOPMENT MODE: built-in configuration; tokens `dev-alice` and `dev-admin` are public");
            Config::development()
        }
        (None, false) => {
            return Err(StartError::Other(
                "no configuration: pass --config FILE (OTP_SMS_CONFIG), or --dev for the built-in development configuration".into(),
            ))
        }
    };
    let directory = Arc::new(config.directory()?);
    let policy = config.policy.policy()?;
    let keys = load_keys(&args)?;
    // Before the listener opens, so that no request waits for it.
    otp_sms_core::Phone::load_metadata();

    let trusted = otp_sms_core::TrustedProxies::parse(&config.server.trusted_proxies)
        .map_err(|e| StartError::Other(format!("[server] {e}")))?;
    let cors =
        cors::layer(&config.server.cors_allowed_origins, args.dev).map_err(StartError::Other)?;
    let (store, store_check, stream_cache, shared): StoreParts = match &args.database_url {
        Some(url) => {
            let timeouts = config.database.timeouts().map_err(StartError::Other)?;
            // One host, or several (`host1:5432,host2:5432`, target_session_attrs): the
            // pool starts on the one that takes writes, and the store follows a promotion.
            let hosts = DatabaseHosts::parse(url)?;
            let (first, found) = hosts.connect(timeouts.connect, |o| o).await?;
            drop(first);
            let pool = otp_sms_postgres::pool_options()
                .acquire_timeout(timeouts.connect)
                .connect_with(found)
                .await
                .map_err(otp_sms_postgres::map_error)?;
            let store = Arc::new(
                PgStore::<Event>::new(pool, &args.schema)?
                    .with_timeouts(timeouts)
                    .with_hosts(hosts),
            );
            store.migrate().await?;
            tracing::info!(
                schema = %args.schema,
                stream_cache = config.service.stream_cache,
                "using PostgreSQL; migrations applied"
            );
            // Budgets and idempotency records shared by every server on this database, on
            // its clock.
            let budgets =
                PgBudgets::new(store.pool().clone(), &args.schema)?.with_timeouts(timeouts);
            let records =
                PgIdempotency::new(store.pool().clone(), &args.schema)?.with_timeouts(timeouts);
            (
                store.clone(),
                StoreCheck::Postgres(store),
                config.service.stream_cache,
                Some((Arc::new(budgets), Arc::new(records))),
            )
        }
        None => {
            tracing::warn!("NO DATABASE: data lives only in memory and is lost when the server stops (pass --database-url for PostgreSQL)");
            (
                Arc::new(MemoryStore::<Event>::new()),
                StoreCheck::Memory,
                0,
                None,
            )
        }
    };

    // The SMS's text, checked now so that a template too long for one SMS stops the start.
    let templates = Arc::new(
        config
            .sms
            .text
            .templates(policy.length(), policy.lifetime())
            .map_err(StartError::Other)?,
    );
    let sender: Option<Arc<dyn SmsSender>> = match config.sms.sender {
        None if args.dev => Some(Arc::new(otp_sms_providers::print::PrintSender::new(templates.clone()))),
        None => {
            tracing::warn!("no SMS sender configured ([sms] sender): codes to send wait in the outbox until one is");
            None
        }
        Some(SenderKind::Log) if args.dev => {
            Some(Arc::new(otp_sms_providers::print::PrintSender::new(templates.clone())))
        }
        Some(SenderKind::Log) => {
            return Err(StartError::Other(
                "the `log` SMS sender prints codes and is for --dev only; configure [sms] sender = \"webhook\", \"twilio\", \"vonage\" or \"routes\"".into(),
            ))
        }
        Some(SenderKind::Routes) => {
            let routes = config.sms.routes.as_ref().ok_or_else(|| {
                StartError::Other("[sms] sender = \"routes\" needs [sms.routes]".into())
            })?;
            // Each provider the routes name, once.
            let mut kinds: Vec<SenderKind> = routes.default.clone();
            kinds.extend(routes.regions.values().flatten());
            kinds.sort();
            kinds.dedup();
            let providers = kinds
                .into_iter()
                .map(|kind| {
                    Ok(routing::Provider::new(
                        kind.name(),
                        provider(&config.sms, kind, &templates)?,
                        routing::CircuitBreaker::new(
                            routes.failure_threshold,
                            Duration::from_secs(routes.open_secs),
                        ),
                    ))
                })
                .collect::<Result<Vec<_>, StartError>>()?;
            Some(Arc::new(
                routing::RoutingSender::new(providers, &routes.regions, &routes.default)
                    .map_err(StartError::Other)?,
            ))
        }
        Some(kind) => Some(provider(&config.sms, kind, &templates)?),
    };

    let (abuse, instance_abuse) = config.abuse_policies()?;
    let feed = Arc::clone(&store);
    // The conversion signal's figures per range, for `[abuse.range_collapse]`: a code counts
    // as unanswered once it has outlived its lifetime.
    let range_signal = otp_sms_core::conversion::RangeSignal::new().settling(policy.lifetime());
    let mut service = CommandService::new(store, directory.clone(), directory.clone(), keys)
        .with_range_signal(range_signal.clone())
        .with_policy(policy)
        .with_max_attempts(config.service.max_attempts)
        .with_delivery_policy(config.notifier.delivery_policy())
        .with_stream_cache(stream_cache)
        .with_abuse_policy(abuse)
        .map_err(|e| StartError::Other(e.to_string()))?;
    if let Some((budgets, records)) = shared {
        service = service
            .with_budget_store(budgets)
            .with_idempotency_store(records);
    }
    if config.service.idempotency_window_secs == 0 {
        return Err(StartError::Other(
            "[service] idempotency_window_secs must be at least 1".into(),
        ));
    }
    service = service
        .with_idempotency_window(Duration::from_secs(config.service.idempotency_window_secs))
        .with_idempotency_keys_per_caller(config.service.idempotency_keys_per_caller);
    for (instance, policy) in instance_abuse {
        service = service
            .with_instance_abuse_policy(instance, policy)
            .map_err(|e| StartError::Other(e.to_string()))?;
    }

    let notifier = sender.map(|sender| {
        otp_sms_core::spawn_notifier(service.clone(), sender, config.notifier.settings())
    });
    let heartbeat = notifier.as_ref().map(otp_sms_core::Notifier::heartbeat);
    let readiness = Readiness {
        store: store_check,
        notifier: heartbeat,
    };

    let metrics_handle = metrics::install().map_err(StartError::Other)?;
    let upkeep = metrics::spawn_upkeep(metrics_handle.clone());
    let conversion = Arc::new(tokio::sync::Mutex::new(
        otp_sms_core::conversion::Conversion::new(metrics::CONVERSION_WINDOW),
    ));
    let conversion_task =
        metrics::spawn_conversion(Arc::clone(&feed), Arc::clone(&conversion), range_signal);
    let exposition = metrics::Exposition {
        handle: metrics_handle,
        service: service.clone(),
        store: feed,
        conversion,
    };

    // The providers' delivery reports, for those configured to send them.
    let twilio_status = config
        .sms
        .twilio
        .as_ref()
        .map(|t| t.status_endpoint(service.clone()))
        .transpose()
        .map_err(StartError::Other)?
        .flatten()
        .map(twilio::status_routes);
    let vonage_receipts = config
        .sms
        .vonage
        .as_ref()
        .map(|v| v.receipt_endpoint(service.clone()))
        .transpose()
        .map_err(StartError::Other)?
        .flatten()
        .map(vonage::receipt_routes);
    let request_id = HeaderName::from_static("x-request-id");
    let metrics_at = args.metrics_listen.unwrap_or(config.server.metrics_listen);
    let metrics_routes = Router::new()
        .route("/metrics", get(metrics::render))
        .with_state(exposition);
    // Health and readiness (and metrics, where they share the API's port) answer outside the
    // API's caps: an attacked API never makes the process look dead to its load balancer.
    let mut ops = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(readiness);
    if metrics_at == config::MetricsListen::Api {
        ops = ops.merge(metrics_routes.clone());
    }
    // The API: gRPC and gRPC-web routes, the delivery reports, and everything else to the
    // JSON router, except gRPC requests for unknown services, which get a gRPC UNIMPLEMENTED.
    let json = otp_sms_http::standalone_router(service.clone(), directory.clone())
        .layer(axum::middleware::from_fn(metrics::mark_route));
    let api_routes = Router::new()
        .merge(twilio_status.unwrap_or_default())
        .merge(vonage_receipts.unwrap_or_default())
        .merge(otp_sms_grpc::router(service, directory.clone()))
        .fallback_service(tower::service_fn(move |req: Request<axum::body::Body>| {
            let json = json.clone();
            async move {
                if otp_sms_grpc::is_grpc(req.headers()) {
                    Ok(otp_sms_grpc::unimplemented_response())
                } else {
                    tower::ServiceExt::oneshot(json, req).await
                }
            }
        }))
        .layer(axum::middleware::from_fn(metrics::mark_route));
    // Authentication and the caller's share before the server's in-flight cap, which sheds
    // calls beyond it at once; a call past its time is cut.
    let edge = edge::Edge::new(
        directory,
        config.server.max_in_flight_per_caller,
        Duration::from_millis(config.server.body_timeout_ms.max(1)),
    );
    let api = tower::ServiceBuilder::new()
        .layer(axum::middleware::from_fn_with_state(edge, edge::gate))
        .layer(axum::error_handling::HandleErrorLayer::new(refused_call))
        .load_shed()
        .concurrency_limit(config.server.max_in_flight.max(1))
        .timeout(Duration::from_millis(
            config.server.request_timeout_ms.max(1),
        ))
        .service(api_routes);
    let app = ops
        .fallback_service(api)
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                let span = tracing::info_span!(
                    "request",
                    // OpenTelemetry's HTTP span name without a route: the method alone (a
                    // path would carry ids).
                    otel.name = %req.method(),
                    method = %req.method(),
                    path = %req.uri().path(),
                    request_id = %id,
                    trace_id = tracing::field::Empty,
                );
                telemetry::adopt_trace_context(&span, req.headers());
                span
            }),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(axum::middleware::from_fn_with_state(
            ClientResolver {
                proxies: trusted.clone(),
                header: config.server.client_address_header,
            },
            resolve_client,
        ))
        .layer(axum::middleware::from_fn(metrics::mark_route))
        .layer(axum::middleware::from_fn(metrics::observe));
    // Outside the rest: a preflight is answered here, and every answer to an allowed page
    // carries the CORS headers, errors included.
    let app = match cors {
        Some(cors) => app.layer(cors),
        None => app,
    };

    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let cert = tls::ReloadingCert::load(tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
            .map_err(StartError::Tls)?;
            let server_config = cert.server_config().map_err(StartError::Tls)?;
            let watch = cert.watch(Duration::from_secs(config.server.tls_check_secs.max(1)));
            Some((server_config, watch))
        }
        (None, None) => None,
        _ => {
            return Err(StartError::Tls(
                "--tls-cert and --tls-key go together".into(),
            ))
        }
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| StartError::Listen(args.listen, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| StartError::Listen(args.listen, e))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // `/metrics` on a listener of its own: plain HTTP, the same connection limits, no TLS
    // (keep it on loopback or a private network).
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = match metrics_at {
        config::MetricsListen::At(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|e| StartError::Listen(at, e))?;
            let bound = listener
                .local_addr()
                .map_err(|e| StartError::Listen(at, e))?;
            tracing::info!("metrics on http://{bound}/metrics");
            let app = metrics_routes.layer(axum::middleware::from_fn(metrics::observe));
            Some(tokio::spawn(listener::serve(
                listener,
                app,
                config.server.limits(),
                trusted.clone(),
                None,
                async {
                    let _ = metrics_stopped.await;
                },
            )))
        }
        config::MetricsListen::Api | config::MetricsListen::Off => None,
    };
    tracing::info!("listening on {scheme}://{local}");
    let (tls, tls_watch) = tls.unzip();
    listener::serve(
        listener,
        app,
        config.server.limits(),
        trusted,
        tls,
        shutdown,
    )
    .await;
    let _ = metrics_stop.send(());
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    if let Some(watch) = tls_watch {
        watch.abort();
    }
    upkeep.abort();
    conversion_task.abort();
    if let Some(notifier) = notifier {
        notifier.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The sender of one provider, from its table of `[sms]`.
fn provider(
    sms_config: &config::SmsConfig,
    kind: SenderKind,
    templates: &Arc<otp_sms_core::message::MessageTemplates>,
) -> Result<Arc<dyn SmsSender>, StartError> {
    let needs = |table: &str| StartError::Other(format!("[sms] this sender needs [{table}]"));
    Ok(match kind {
        SenderKind::Twilio => {
            let options = sms_config
                .twilio
                .as_ref()
                .ok_or_else(|| needs("sms.twilio"))?
                .options(templates.clone())
                .map_err(StartError::Other)?;
            Arc::new(twilio::TwilioSender::new(options).map_err(StartError::Other)?)
        }
        SenderKind::Vonage => {
            let options = sms_config
                .vonage
                .as_ref()
                .ok_or_else(|| needs("sms.vonage"))?
                .options(templates.clone())
                .map_err(StartError::Other)?;
            Arc::new(vonage::VonageSender::new(options).map_err(StartError::Other)?)
        }
        SenderKind::Webhook => {
            let url = sms_config.webhook_url.clone().ok_or_else(|| {
                StartError::Other("[sms] the webhook sender needs webhook_url".into())
            })?;
            let secret = sms_config.webhook_secret.as_deref().ok_or_else(|| {
                StartError::Other("[sms] the webhook sender needs webhook_secret (`whsec_` and the base64 of 32 random bytes: `echo whsec_$(openssl rand -base64 32)`)".into())
            })?;
            let secret = webhook::WebhookSecret::parse(secret)
                .map_err(|e| StartError::Other(format!("[sms] webhook_secret: {e}")))?;
            Arc::new(
                webhook::WebhookSender::new(
                    webhook::WebhookOptions::new(url, secret, templates.clone())
                        .with_plain_http_to_private_addresses(sms_config.allow_http)
                        .with_timeout(Duration::from_millis(sms_config.timeout_ms))
                        .with_retries(sms_config.retries),
                )
                .map_err(StartError::Other)?,
            )
        }
        SenderKind::Log | SenderKind::Routes => {
            return Err(StartError::Other(format!(
                "[sms.routes] `{}` is not a provider (twilio, vonage, webhook)",
                kind.name()
            )))
        }
    })
}

/// How the server finds a request's client: its trusted proxies and the header they set.
#[derive(Clone)]
struct ClientResolver {
    proxies: otp_sms_core::TrustedProxies,
    header: config::ClientAddressHeader,
}

/// Puts the client's address on the request for the adapters: the connection's peer, or the
/// client a trusted proxy names. Every line of the configured header is read as one list (a
/// proxy that appends its own line, as HAProxy does, comes last); the other header is ignored,
/// so a client cannot put an address of its choosing where the proxy's would be read.
async fn resolve_client(
    State(resolver): State<ClientResolver>,
    mut req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let client = {
        let name = match resolver.header {
            config::ClientAddressHeader::XForwardedFor => "x-forwarded-for",
            config::ClientAddressHeader::Forwarded => "forwarded",
        };
        let lines: Vec<&str> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("unparsable"))
            .collect();
        let list = (!lines.is_empty()).then(|| lines.join(","));
        match resolver.header {
            config::ClientAddressHeader::XForwardedFor => {
                resolver.proxies.client_address(peer, list.as_deref(), None)
            }
            config::ClientAddressHeader::Forwarded => {
                resolver.proxies.client_address(peer, None, list.as_deref())
            }
        }
    };
    if let Some(client) = client {
        req.extensions_mut()
            .insert(otp_sms_core::ClientAddress(client));
    }
    next.run(req).await
}

/// The answer to a call the server refused itself: shed (UNAVAILABLE) or late
/// (DEADLINE_EXCEEDED), in the call's protocol: gRPC (and gRPC-web), Connect, or JSON.
async fn refused_call(
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    error: tower::BoxError,
) -> axum::response::Response {
    let error = if error.is::<tower::timeout::error::Elapsed>() {
        otp_sms_core::Error::DeadlineExceeded
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        otp_sms_core::Error::Unavailable("overloaded: too many calls in progress".into())
    } else {
        otp_sms_core::Error::Internal(error.to_string())
    };
    edge::render(&method, &uri, &headers, &error)
}
