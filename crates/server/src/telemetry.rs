//! Logs and traces: the `tracing` subscriber the binary installs, with spans exported over
//! OTLP/gRPC when `[tracing] otlp_endpoint` is set (off by default), and W3C trace context
//! taken from each request (the `traceparent` header, which gRPC calls carry as metadata).
//!
//! Each request's span carries the caller's trace id (or a new one), and every log line
//! inside it shows it as `trace_id`, so a log line leads to its trace.

use std::time::Duration;

use axum::http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::TracingConfig;
use crate::LogFormat;

/// What [`init`] set up; [`Telemetry::shutdown`] flushes the spans not yet exported.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered (bounded by the exporter's time-out) and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            if let Err(e) = provider.shutdown() {
                eprintln!("otp-sms-server: trace export did not shut down cleanly: {e}");
            }
        }
    }
}

/// Installs the process's subscriber: log lines in `format` (level from `RUST_LOG`, default
/// `info`), and, with an OTLP endpoint, spans exported in batches from the Tokio runtime
/// (call it inside one). A second call in one process leaves the first subscriber in place.
pub fn init(format: LogFormat, config: &TracingConfig) -> Result<Telemetry, String> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = match format {
        // Colours only for a terminal: a collector reading a pipe gets plain text.
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let provider = match &config.otlp_endpoint {
        None => None,
        Some(endpoint) => Some(provider(endpoint, config)?),
    };
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("otp-sms"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .try_init();
    Ok(Telemetry { provider })
}

fn provider(endpoint: &str, config: &TracingConfig) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_millis(config.export_timeout_ms.max(1)))
        .build()
        .map_err(|e| format!("[tracing] otlp_endpoint {endpoint}: {e}"))?;
    // Exports run on the Tokio runtime: tonic needs its reactor, which the SDK's own batch
    // thread does not have.
    let batch =
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(config.export_interval_ms.max(1)))
                .build(),
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    // A caller's sampling decision stands; a trace that starts here is sampled at the ratio.
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
        config.sample_ratio.clamp(0.0, 1.0),
    )));
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(sampler)
        .with_resource(resource)
        .build())
}

/// Reads W3C trace context from HTTP headers (gRPC metadata is HTTP/2 headers).
struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` (a request's) a child of the caller's trace, if the headers carry one, and
/// records the trace id in its `trace_id` field for the log lines inside it. Without an
/// exporter, the caller's trace id is still logged.
pub fn adopt_trace_context(span: &tracing::Span, headers: &HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let caller = parent.span().span_context().clone();
    let _ = span.set_parent(parent);
    let own = span.context().span().span_context().trace_id();
    let trace_id = if own != opentelemetry::trace::TraceId::INVALID {
        own
    } else {
        caller.trace_id()
    };
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}
