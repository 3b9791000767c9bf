//! `/metrics` in the Prometheus text format: the library's own metrics (`otp_sms_core::metrics`,
//! the PostgreSQL store's batch sizes) and, measured here, every HTTP request and gRPC call,
//! named after the OpenTelemetry semantic conventions (`http.server.request.duration`,
//! `rpc.server.call.duration`, in seconds; their `_count` series are the request counts).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::Histogram;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use otp_sms_core::conversion::Conversion;
use otp_sms_core::{CommandService, Event, EventStore};

use crate::serving::protocol::Protocol;

/// Histogram: HTTP requests by `http_request_method`, `http_route` (the route's template;
/// empty when no route matched) and `http_response_status_code`.
pub const HTTP_SERVER_REQUEST_DURATION: &str = "http_server_request_duration_seconds";
/// Histogram: gRPC and gRPC-web calls by `rpc_system`, `rpc_service`, `rpc_method` (both
/// `_OTHER` for a method this server does not serve) and `rpc_grpc_status_code`.
pub const RPC_SERVER_CALL_DURATION: &str = "rpc_server_call_duration_seconds";

/// Durations in seconds: OpenTelemetry's default boundaries for HTTP, with finer ones below
/// 5 ms, where this server's calls mostly fall.
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Group-commit batch sizes.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder, once (a second
/// server in the same process shares it), and keeps its histograms drained.
pub fn install() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), BATCH_BUCKETS)
                })
                .map_err(|e| e.to_string())?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| {
                format!("another metrics recorder is installed in this process: {e}")
            })?;
            Ok(handle)
        })
        .clone()
}

/// Drains histogram samples into their buckets every few seconds, until the process ends.
pub fn spawn_upkeep(handle: PrometheusHandle) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            handle.run_upkeep();
        }
    })
}

/// Counter: providers' delivery reports (counted by `otp-sms-providers`).
pub use otp_sms_providers::report::DELIVERY_REPORTS;

/// Gauge: codes sent in the last hour, by `region` (the conversion signal).
pub const CONVERSION_SENT: &str = "otp_sms_conversion_sent";
/// Gauge: codes sent in the last hour that were verified, by `region`.
pub const CONVERSION_VERIFIED: &str = "otp_sms_conversion_verified";
/// The conversion signal's window.
pub const CONVERSION_WINDOW: Duration = Duration::from_secs(3600);

/// What `/metrics` needs.
#[derive(Clone)]
pub struct Exposition {
    /// The recorder's handle.
    pub handle: PrometheusHandle,
    /// For the outbox gauges, read from the store at each scrape.
    pub service: CommandService,
    /// The event store, whose feed the conversion signal reads.
    pub store: Arc<dyn EventStore<Event>>,
    /// The conversion signal, caught up at each scrape.
    pub conversion: Arc<tokio::sync::Mutex<Conversion>>,
}

/// Keeps the conversion signal caught up with the event feed, a bounded step at a time (a
/// long history on a first start is read over several steps, never inside a scrape), and
/// publishes its figures per range to `signal` (the send budgets' `range_collapse`) after each
/// step, until the process ends.
pub fn spawn_conversion(
    store: Arc<dyn EventStore<Event>>,
    conversion: Arc<tokio::sync::Mutex<Conversion>>,
    signal: otp_sms_core::conversion::RangeSignal,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let step = {
                let mut conversion = conversion.lock().await;
                let step = conversion.catch_up_at_most(store.as_ref(), 10).await;
                signal.publish(&conversion, chrono::Utc::now());
                step
            };
            match step {
                // More to read: go on at once, letting scrapes take the lock in between.
                Ok(false) => tokio::task::yield_now().await,
                Ok(true) => tokio::time::sleep(Duration::from_secs(5)).await,
                Err(e) => {
                    tracing::warn!(error = %e, "conversion signal: the event feed is unreadable");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }
    })
}

impl Exposition {
    /// Sets the conversion gauges from the signal; a region that left the window goes to
    /// zero. At most one bounded step of the feed is read here, so the figures are fresh and
    /// a scrape never waits for a long history.
    async fn refresh_conversion(&self) {
        let mut conversion = self.conversion.lock().await;
        if let Err(e) = conversion.catch_up_at_most(self.store.as_ref(), 1).await {
            tracing::warn!(error = %e, "conversion signal not refreshed for /metrics");
        }
        static SHOWN: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
        let rates = conversion.by_region(chrono::Utc::now());
        let mut shown = SHOWN.lock().unwrap_or_else(|p| p.into_inner());
        for region in shown.iter() {
            if !rates.contains_key(region) {
                metrics::gauge!(CONVERSION_SENT, "region" => *region).set(0.0);
                metrics::gauge!(CONVERSION_VERIFIED, "region" => *region).set(0.0);
            }
        }
        for (region, rate) in &rates {
            metrics::gauge!(CONVERSION_SENT, "region" => *region).set(rate.sent as f64);
            metrics::gauge!(CONVERSION_VERIFIED, "region" => *region).set(rate.verified as f64);
            if !shown.contains(region) {
                shown.push(region);
            }
        }
    }
}

/// `GET /metrics`: the outbox gauges refreshed from the store, then everything in the text
/// format. A store that does not answer leaves the gauges at their last value (logged).
pub async fn render(State(exposition): State<Exposition>) -> Response {
    if let Err(e) = exposition.service.outbox_stats().await {
        tracing::warn!(error = %e, "outbox stats unavailable for /metrics");
    }
    exposition.refresh_conversion().await;
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        exposition.handle.render(),
    )
        .into_response()
}

/// The route a request matched, carried on its response to [`observe`] (which runs outside
/// the router, where the route is not known yet).
#[derive(Clone)]
struct Route(MatchedPath);

/// Inside the router: puts the matched route on the response.
pub async fn mark_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(Route(route));
    }
    response
}

/// The histograms [`observe`] records to, registered once per label set: a request records
/// to its handle under a read lock, with no allocation and no reference count touched, instead of building the metric's key (its
/// name and labels) for the recorder on every call. The label sets are bounded (the known
/// methods, the routes' templates, the status codes the server answers, the methods of its
/// services), so these tables are too.
#[derive(Default)]
struct Handles {
    /// By method and status, then by route template (`""` when no route matched).
    http: RwLock<HashMap<(&'static str, u16), ByRoute>>,
    /// By service, method and status code.
    rpc: RwLock<HashMap<(&'static str, &'static str, u8), Histogram>>,
}

impl Handles {
    fn get() -> &'static Handles {
        static HANDLES: OnceLock<Handles> = OnceLock::new();
        HANDLES.get_or_init(Handles::default)
    }

    /// Records `took` for a request; the handle is registered at the label set's first.
    fn record_http(&self, method: &'static str, route: &str, status: u16, took: f64) {
        if let Some(handle) = read(&self.http)
            .get(&(method, status))
            .and_then(|routes| routes.get(route))
        {
            return handle.record(took);
        }
        write(&self.http)
            .entry((method, status))
            .or_default()
            .entry(route.to_owned())
            .or_insert_with(|| {
                metrics::histogram!(
                    HTTP_SERVER_REQUEST_DURATION,
                    "http_request_method" => method,
                    "http_route" => route.to_owned(),
                    "http_response_status_code" => status.to_string()
                )
            })
            .record(took);
    }

    /// Records `took` for a call; the handle is registered at the label set's first.
    fn record_rpc(&self, service: &'static str, method: &'static str, code: u8, took: f64) {
        if let Some(handle) = read(&self.rpc).get(&(service, method, code)) {
            return handle.record(took);
        }
        write(&self.rpc)
            .entry((service, method, code))
            .or_insert_with(|| {
                metrics::histogram!(
                    RPC_SERVER_CALL_DURATION,
                    "rpc_system" => "grpc",
                    "rpc_service" => service,
                    "rpc_method" => method,
                    "rpc_grpc_status_code" => code.to_string()
                )
            })
            .record(took);
    }
}

/// HTTP histograms of one method and status, by route template.
type ByRoute = HashMap<String, Histogram>;

/// A poisoned table is still a valid table (a panic cannot leave a half-inserted handle).
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// The gRPC service and method a path names, as the metrics label them: a method this server
/// serves by name; any other path `_OTHER`, under its service when it names one of ours.
/// Labels come from the server's own list, so no caller can grow the label set.
fn rpc_labels(path: &str) -> ((&'static str, &'static str), &'static str) {
    let service = otp_sms_grpc::METHODS
        .iter()
        .map(|(service, _)| *service)
        .find(|service| {
            path.strip_prefix('/')
                .and_then(|p| p.strip_prefix(service))
                .is_some_and(|rest| rest.starts_with('/'))
        })
        .unwrap_or("_OTHER");
    (
        otp_sms_grpc::known_method(path).unwrap_or((service, "_OTHER")),
        service,
    )
}

/// Around everything the server answers (shed and late calls included): records the
/// request's duration as HTTP and, for gRPC, as an RPC.
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = known_method(request.method().as_str());
    // Read before the call, while the path is at hand: only static labels are kept.
    let rpc = (Protocol::of_request(&request) == Protocol::Grpc)
        .then(|| rpc_labels(request.uri().path()));
    let response = next.run(request).await;
    let took = started.elapsed().as_secs_f64();
    let route = response
        .extensions()
        .get::<Route>()
        .map_or("", |r| r.0.as_str());
    let status = response.status();
    let handles = Handles::get();
    handles.record_http(method, route, status.as_u16(), took);
    if let Some((known, service)) = rpc {
        // A trailers-only answer (every error of these unary calls) carries the status in
        // its headers; a message answer is OK unless its trailers say otherwise.
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u8>().ok())
            .unwrap_or(if status.is_success() { 0 } else { 2 });
        // An UNIMPLEMENTED answer names no method, even on a known path.
        let (service, rpc_method) = if code == 12 {
            (service, "_OTHER")
        } else {
            known
        };
        handles.record_rpc(service, rpc_method, code, took);
    }
    response
}

/// OpenTelemetry's rule for `http.request.method`: the known methods by name, any other as
/// `_OTHER`.
fn known_method(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "PATCH" => "PATCH",
        _ => "_OTHER",
    }
}
