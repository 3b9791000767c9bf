//! The router: health and readiness outside the API's caps; the API (JSON, Connect, gRPC-web
//! and gRPC, the providers' delivery reports) behind the edge, the in-flight cap and the
//! request time-out; request ids, traces, the client's address, metrics and CORS around all.

use std::time::Duration;

use axum::http::{HeaderName, Request};
use axum::routing::get;
use axum::Router;
use otp_sms_providers::{twilio, vonage};
use tower_http::cors::CorsLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use super::client_address::{resolve_client, ClientResolver};
use super::edge;
use super::health::{healthz, readyz, Readiness};
use super::protocol::{self, Protocol};
use crate::assembly::Assembly;
use crate::config::Config;
use crate::{metrics, telemetry, StartError};

/// The routes, before the layers.
pub(super) struct Routes {
    /// `/metrics`.
    pub(super) metrics: Router,
    /// The providers' delivery-report endpoints, for those configured to send reports.
    reports: Router,
}

impl Routes {
    /// The metrics route and the delivery-report routes the configuration asks for.
    pub(super) fn new(
        assembly: &Assembly,
        config: &Config,
        exposition: metrics::Exposition,
    ) -> Result<Self, StartError> {
        let service = &assembly.service;
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
        Ok(Self {
            metrics: Router::new()
                .route("/metrics", get(metrics::render))
                .with_state(exposition),
            reports: Router::new()
                .merge(twilio_status.unwrap_or_default())
                .merge(vonage_receipts.unwrap_or_default()),
        })
    }

    /// The whole application, layered.
    pub(super) fn app(
        self,
        assembly: &Assembly,
        config: &Config,
        metrics_on_api: bool,
        trusted: otp_sms_core::TrustedProxies,
        cors: Option<CorsLayer>,
    ) -> Router {
        let server = &config.server;
        let request_id = HeaderName::from_static("x-request-id");
        // Health and readiness (and metrics, where they share the API's port) answer outside
        // the API's caps: an attacked API never makes the process look dead to its load
        // balancer.
        let readiness = Readiness {
            store: assembly.store_check.clone(),
            notifier: assembly
                .notifier
                .as_ref()
                .map(otp_sms_core::Notifier::heartbeat),
        };
        let mut ops = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(readiness);
        if metrics_on_api {
            ops = ops.merge(self.metrics);
        }
        // The API: gRPC and gRPC-web routes, the delivery reports, and everything else to the
        // JSON router, except gRPC requests for unknown services, which get a gRPC
        // UNIMPLEMENTED.
        // The API, one router: the JSON resources and their document, the delivery reports,
        // gRPC, gRPC-web and Connect; an unknown route is answered in the caller's protocol.
        let service = assembly.service.clone();
        let directory = assembly.directory.clone();
        let api_routes = otp_sms_http::router(service.clone(), directory.clone())
            .route(
                "/openapi.json",
                otp_sms_http::openapi_route(otp_sms_http::openapi()),
            )
            .merge(self.reports)
            .merge(otp_sms_grpc::router(service, directory.clone()))
            .fallback(unknown_call)
            .method_not_allowed_fallback(otp_sms_http::unknown_method)
            .layer(axum::middleware::from_fn(metrics::mark_route));
        // Authentication and the caller's share before the server's in-flight cap, which
        // sheds calls beyond it at once; a call past its time is cut.
        let edge = edge::Edge::new(
            directory,
            server.max_in_flight_per_caller,
            Duration::from_millis(server.body_timeout_ms.max(1)),
        );
        let api = tower::ServiceBuilder::new()
            .layer(axum::middleware::from_fn_with_state(edge, edge::gate))
            .layer(axum::error_handling::HandleErrorLayer::new(refused_call))
            .load_shed()
            .concurrency_limit(server.max_in_flight.max(1))
            .timeout(Duration::from_millis(server.request_timeout_ms.max(1)))
            .service(api_routes);
        let app = ops
            .fallback_service(api)
            .layer(PropagateRequestIdLayer::new(request_id.clone()))
            .layer(TraceLayer::new_for_http().make_span_with(request_span))
            .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
            .layer(axum::middleware::from_fn_with_state(
                ClientResolver {
                    proxies: trusted,
                    header: server.client_address_header,
                },
                resolve_client,
            ))
            .layer(axum::middleware::from_fn(metrics::mark_route))
            .layer(axum::middleware::from_fn(metrics::observe))
            .layer(axum::middleware::from_fn(protocol::classify));
        // Outside the rest: a preflight is answered here, and every answer to an allowed page
        // carries the CORS headers, errors included.
        match cors {
            Some(cors) => app.layer(cors),
            None => app,
        }
    }
}

/// A request's span: its method (OpenTelemetry's HTTP span name without a route: a path would
/// carry ids), path and request id, joined to the caller's trace if it sent one.
fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let span = tracing::info_span!(
        "request",
        otel.name = %req.method(),
        method = %req.method(),
        path = %req.uri().path(),
        request_id = %id,
        trace_id = tracing::field::Empty,
    );
    telemetry::adopt_trace_context(&span, req.headers());
    span
}

/// The answer to a route no one serves: gRPC's UNIMPLEMENTED to a gRPC call, else the JSON
/// API's NOT_FOUND.
async fn unknown_call(request: Request<axum::body::Body>) -> axum::response::Response {
    match Protocol::of_request(&request) {
        Protocol::Grpc => otp_sms_grpc::unimplemented_response(),
        Protocol::Connect | Protocol::Json => axum::response::IntoResponse::into_response(
            otp_sms_http::unknown_route(request.uri().clone()).await,
        ),
    }
}

/// The answer to a call the server refused itself: shed (UNAVAILABLE) or late
/// (DEADLINE_EXCEEDED), in the call's protocol.
async fn refused_call(
    protocol: Option<axum::Extension<Protocol>>,
    error: tower::BoxError,
) -> axum::response::Response {
    let error = if error.is::<tower::timeout::error::Elapsed>() {
        otp_sms_core::Error::DeadlineExceeded
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        otp_sms_core::Error::Unavailable("overloaded: too many calls in progress".into())
    } else {
        otp_sms_core::Error::Internal(error.to_string())
    };
    protocol.map_or(Protocol::Json, |p| p.0).render(&error)
}
