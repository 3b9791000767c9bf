//! End-to-end: the real server binary exports its spans over OTLP/gRPC to a receiver in the
//! test; a caller's W3C trace context (an HTTP header, or gRPC metadata) is the parent of the
//! request's span, which is the parent of the command's span, which is the parent of its
//! store calls and budget takes; and the log lines inside a request carry its trace id.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::{
    zitadel_users_client::ZitadelUsersClient, VerifyOtpsmsRegistrationRequest,
};
use otp_sms_tests::server::{config, Options, Server, TEST_KEYS};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

/// An OTLP/gRPC trace receiver that keeps every span it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    /// Starts on a free loopback port; returns it with its endpoint URL.
    async fn start() -> (Self, String) {
        let receiver = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        (receiver, url)
    }

    /// The spans of `trace` (hex), once one named `name` is among them (within 10 s).
    async fn trace_with(&self, trace: &str, name: &str) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let spans: Vec<Span> = self
                .spans
                .lock()
                .unwrap()
                .iter()
                .filter(|s| hex(&s.trace_id) == trace)
                .cloned()
                .collect();
            if spans.iter().any(|s| s.name == name) || tokio::time::Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The one span of `spans` named `name`.
fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "one `{name}` in {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
}

const HTTP_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const HTTP_PARENT: &str = "b7ad6b7169203331";
const GRPC_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const GRPC_PARENT: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_trace_holds_the_request_the_command_and_its_store_calls() {
    let (receiver, endpoint) = Receiver::start().await;
    let s = Server::start(
        BIN,
        &Options {
            config: config(&format!(
                "[tracing]\notlp_endpoint = \"{endpoint}\"\nexport_interval_ms = 100\nservice_name = \"otp-sms-under-test\"\n"
            ))
            .replace(
                "[abuse]\n",
                "[abuse]\ndestination_number = [{ max = 1, window_secs = 600 }]\n",
            ),
            keys: Some(TEST_KEYS.into()),
            ..Options::default()
        },
    );
    let client = reqwest::Client::new();
    let added: serde_json::Value = client
        .post(s.url("/resources/v3alpha/users/alice/otp_sms"))
        .bearer_auth("token-alice")
        .header("traceparent", format!("00-{HTTP_TRACE}-{HTTP_PARENT}-01"))
        .json(&serde_json::json!({"number": "+41791234567", "returnCode": {}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // Over HTTP: caller → request → command → its store append and budget take.
    let spans = receiver.trace_with(HTTP_TRACE, "otp_sms.command").await;
    let request = named(&spans, "POST");
    assert_eq!(
        hex(&request.parent_span_id),
        HTTP_PARENT,
        "the caller's span is the parent"
    );
    let command = named(&spans, "otp_sms.command");
    assert_eq!(command.parent_span_id, request.span_id);
    assert_eq!(attribute(command, "command").as_deref(), Some("add"));
    for child in ["otp_sms.store.append", "otp_sms.budgets.take"] {
        assert_eq!(
            named(&spans, child).parent_span_id,
            command.span_id,
            "{child}"
        );
    }
    assert!(
        spans.iter().all(|s| attribute(s, "phone").is_none()),
        "no number in a span"
    );

    // Over gRPC, the context comes as metadata.
    let mut grpc = ZitadelUsersClient::connect(s.base_url.clone())
        .await
        .unwrap();
    let mut verify = tonic::Request::new(VerifyOtpsmsRegistrationRequest {
        id: "alice".into(),
        otp_sms_id: added["otpSmsId"].as_str().unwrap().into(),
        code: added["verificationCode"].as_str().unwrap().into(),
        ..Default::default()
    });
    verify
        .metadata_mut()
        .insert("authorization", "Bearer token-alice".parse().unwrap());
    verify.metadata_mut().insert(
        "traceparent",
        format!("00-{GRPC_TRACE}-{GRPC_PARENT}-01").parse().unwrap(),
    );
    grpc.verify_otpsms_registration(verify)
        .await
        .expect("verify");
    let spans = receiver.trace_with(GRPC_TRACE, "otp_sms.command").await;
    let request = named(&spans, "POST");
    assert_eq!(hex(&request.parent_span_id), GRPC_PARENT);
    let command = named(&spans, "otp_sms.command");
    assert_eq!(command.parent_span_id, request.span_id);
    assert_eq!(attribute(command, "command").as_deref(), Some("verify"));
    assert_eq!(
        named(&spans, "otp_sms.store.append").parent_span_id,
        command.span_id
    );

    // A log line inside a request carries its trace id: a refused add logs the refusal.
    assert_a_refusal_logs_its_trace_id(&s, "5bf92f3577b34da6a3ce929d0e0e4737").await;
}

/// Two adds to one number under `trace` (the second refused by a budget of one): the
/// refusal's log line carries the trace id.
async fn assert_a_refusal_logs_its_trace_id(s: &Server, trace: &str) {
    let client = reqwest::Client::new();
    for _ in 0..2 {
        client
            .post(s.url("/resources/v3alpha/users/alice/otp_sms"))
            .bearer_auth("token-alice")
            .header("traceparent", format!("00-{trace}-{GRPC_PARENT}-01"))
            .json(&serde_json::json!({"number": "+41791112233", "sendCode": {}}))
            .send()
            .await
            .unwrap();
    }
    // The log reaches the test through a reader thread: wait for the line, a little.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let refusal = loop {
        let output = s.output();
        if let Some(line) = output
            .lines()
            .find(|l| l.contains("refused by an abuse rule"))
        {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a refusal is logged:\n{output}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(refusal.contains(&format!("trace_id={trace}")), "{refusal}");
}

/// With export off (the default), a caller's trace id still reaches the log lines of its
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_export_the_log_lines_still_carry_the_callers_trace_id() {
    let s = Server::start(
        BIN,
        &Options {
            config: config("").replace(
                "[abuse]\n",
                "[abuse]\ndestination_number = [{ max = 1, window_secs = 600 }]\n",
            ),
            keys: Some(TEST_KEYS.into()),
            ..Options::default()
        },
    );
    assert_a_refusal_logs_its_trace_id(&s, "6cf92f3577b34da6a3ce929d0e0e4738").await;
}
