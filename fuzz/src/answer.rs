//! A call to the fixture's routes and what makes its answer right, per protocol: never a
//! server fault (5xx, or gRPC's UNKNOWN and DATA_LOSS), a refusal in the protocol's own error
//! format with the HTTP status its code maps to (docs/api.md), and a refusal that writes
//! nothing but what refusals record by design.

use std::future::poll_fn;
use std::pin::Pin;

use axum::body::{Body, HttpBody};
use axum::http::Request;
use axum::http::{HeaderMap, Method, StatusCode, Version};
use axum::Router;
use base64::Engine as _;
use otp_sms_core::{Event, EventPayload, EventStore};
use otp_sms_memory::MemoryStore;
use serde_json::Value;
use tower::ServiceExt;

use crate::fixture::{runtime, Fixture};
use crate::request::RequestText;

/// What a refused call may write: a wrong code's failed checks, the lock they may close and
/// the sign-in challenge they burn, a challenge found expired, and a budget refusal's audit
/// record.
const WRITTEN_BY_REFUSALS: [&str; 6] = [
    Event::CHECK_FAILED,
    Event::VERIFICATION_LOCKED,
    Event::SEND_REFUSED,
    Event::CHALLENGE_CHECK_FAILED,
    Event::CHALLENGE_BURNT,
    Event::CHALLENGE_EXPIRED,
];

/// An answer, read whole, and the types of the events the call wrote.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body's bytes.
    pub body: Vec<u8>,
    /// The trailers, if the body ended with some.
    pub trailers: Option<HeaderMap>,
    /// The event types the call appended, in order.
    pub written: Vec<String>,
}

/// Sends `request` to the fixture's routes and reads the answer.
pub fn send(fixture: &Fixture, request: &RequestText) -> Answer {
    runtime().block_on(call(&fixture.app, &fixture.store, request.build()))
}

/// Sends `request` to `app` and reads the answer whole, with the events it appended to
/// `store` (calls one at a time: what the store gained is this call's).
pub async fn call(app: &Router, store: &MemoryStore<Event>, request: Request<Body>) -> Answer {
    let what = format!("{} {}", request.method(), request.uri());
    let before = store.len() as u64;
    let response = match app.clone().oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let (parts, mut body) = response.into_parts();
    let (mut bytes, mut trailers) = (Vec::new(), None);
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.unwrap_or_else(|e| panic!("{what}: the response body failed: {e}"));
        match frame.into_data() {
            Ok(data) => bytes.extend_from_slice(&data),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    let written = store
        .read_all(before, usize::MAX)
        .await
        .expect("the memory store reads")
        .iter()
        .map(|e| e.event.event_type().to_owned())
        .collect();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: bytes,
        trailers,
        written,
    }
}

/// Which protocol a request speaks, as the routes tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// The JSON API under `/resources/`.
    Json,
    /// Connect's unary calls.
    Connect,
    /// gRPC or gRPC-web to one of the services' methods.
    Grpc,
    /// A provider's delivery report under `/sms/status/`.
    Report,
    /// Anything else: only "no server fault" holds.
    Other,
}

impl Protocol {
    /// The protocol of `request`: by its path and content type, as the routes tell them
    /// apart; a call the library routers would hand to another protocol's fallback (an
    /// unknown method, a content type no protocol speaks) is `Other`, because the server's
    /// own protocol layer, not these routers, renders those.
    pub fn of(request: &RequestText) -> Self {
        const GRPC_TYPES: [&str; 6] = [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc-web",
            "application/grpc-web+proto",
            "application/grpc-web-text",
            "application/grpc-web-text+proto",
        ];
        let path = request.uri.path();
        let known = otp_sms_grpc::known_method(path).is_some();
        let content_type = request.header("content-type").unwrap_or_default();
        if path.starts_with("/sms/status/") {
            Protocol::Report
        } else if otp_sms_grpc::is_grpc(&request.headers) {
            let web = content_type.starts_with("application/grpc-web");
            // gRPC is HTTP/2 only: over HTTP/1.1 tonic-web refuses it (400), gRPC-web is what
            // HTTP/1.1 clients speak.
            let framed = web || request.version == Version::HTTP_2;
            let post = request.method == Method::POST;
            if known && framed && post && GRPC_TYPES.contains(&content_type) {
                Protocol::Grpc
            } else {
                Protocol::Other
            }
        } else if otp_sms_grpc::is_connect(&request.method, path, &request.headers) {
            if known {
                Protocol::Connect
            } else {
                Protocol::Other
            }
        } else if path.starts_with("/resources/") && request.method != Method::HEAD {
            // A HEAD answer has no body to judge.
            Protocol::Json
        } else {
            Protocol::Other
        }
    }
}

/// Sends `request` and panics, naming it, if the answer breaks its protocol's rules.
pub fn check(fixture: &Fixture, request: &RequestText) {
    let answer = send(fixture, request);
    if let Err(broken) = judge(request, &answer) {
        panic!(
            "{}: {broken}\nanswer: {} {:?} {}\nwrote: {:?}",
            request.describe(),
            answer.status,
            answer.headers,
            String::from_utf8_lossy(&answer.body),
            answer.written
        );
    }
}

/// Whether `answer` is right for `request`.
pub fn judge(request: &RequestText, answer: &Answer) -> Result<(), String> {
    match Protocol::of(request) {
        Protocol::Json => json_api(answer),
        Protocol::Connect => connect(answer),
        Protocol::Grpc => grpc(request, answer),
        Protocol::Report => report(answer),
        Protocol::Other => match answer.status.is_server_error() {
            true if answer.status != StatusCode::NOT_IMPLEMENTED => {
                Err(format!("a server fault: {}", answer.status))
            }
            _ => Ok(()),
        },
    }
}

/// The HTTP status of a JSON API refusal with google.rpc code `code` (docs/api.md, written
/// here apart from the server's own table): `None` for a code no refusal may carry.
pub fn json_status(code: i64) -> Option<u16> {
    Some(match code {
        3 | 9 | 11 => 400,
        16 => 401,
        7 => 403,
        5 => 404,
        10 => 409,
        8 => 429,
        // An unknown method on a known path, as grpc-gateway answers it.
        12 => 405,
        _ => return None,
    })
}

/// The HTTP status of a Connect error with code `code` (the Connect protocol's table):
/// `None` for a code no refusal may carry.
pub fn connect_status(code: &str) -> Option<u16> {
    Some(match code {
        "invalid_argument" | "failed_precondition" | "out_of_range" => 400,
        "unauthenticated" => 401,
        "permission_denied" => 403,
        "not_found" => 404,
        "aborted" | "already_exists" => 409,
        "resource_exhausted" => 429,
        "unimplemented" => 501,
        "deadline_exceeded" => 504,
        _ => return None,
    })
}

fn refusal_wrote_only_its_record(answer: &Answer) -> Result<(), String> {
    match answer
        .written
        .iter()
        .find(|e| !WRITTEN_BY_REFUSALS.contains(&e.as_str()))
    {
        Some(event) => Err(format!("refused, and wrote {event}")),
        None => Ok(()),
    }
}

fn json_api(answer: &Answer) -> Result<(), String> {
    if answer.status.is_server_error() {
        return Err(format!("a server fault: {}", answer.status));
    }
    if answer.status.is_success() {
        return Ok(());
    }
    let status: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("a refusal that is no google.rpc.Status: {e}"))?;
    if !status["message"].as_str().is_some_and(|m| !m.is_empty()) {
        return Err("a refusal without a message".into());
    }
    let code = status["code"].as_i64();
    let expected = code
        .and_then(json_status)
        .ok_or_else(|| format!("a refusal with code {code:?}"))?;
    if answer.status.as_u16() != expected {
        return Err(format!(
            "code {} answered {}",
            status["code"], answer.status
        ));
    }
    refusal_wrote_only_its_record(answer)
}

fn connect(answer: &Answer) -> Result<(), String> {
    // 501 and 504 are Connect's statuses for `unimplemented` and `deadline_exceeded` (the
    // caller's own Connect-Timeout-Ms); no other 5xx.
    let allowed = [StatusCode::NOT_IMPLEMENTED, StatusCode::GATEWAY_TIMEOUT];
    if answer.status.is_server_error() && !allowed.contains(&answer.status) {
        return Err(format!("a server fault: {}", answer.status));
    }
    if answer.status.is_success() {
        return Ok(());
    }
    // 415 for a content type Connect does not speak is the protocol's own, bodiless answer.
    if answer.status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return match answer.written.is_empty() {
            true => Ok(()),
            false => Err(format!("415, and wrote {:?}", answer.written)),
        };
    }
    let error: Value = serde_json::from_slice(&answer.body)
        .map_err(|e| format!("a refusal that is not Connect's error JSON: {e}"))?;
    let code = error["code"].as_str().unwrap_or_default();
    let expected = connect_status(code).ok_or_else(|| format!("a refusal with code {code:?}"))?;
    if answer.status.as_u16() != expected {
        return Err(format!("code {} answered {}", error["code"], answer.status));
    }
    refusal_wrote_only_its_record(answer)
}

fn grpc(request: &RequestText, answer: &Answer) -> Result<(), String> {
    if answer.status != StatusCode::OK {
        return Err(format!("gRPC answers 200, not {}", answer.status));
    }
    let code: i32 = grpc_field(answer, "grpc-status")
        .and_then(|s| s.parse().ok())
        .ok_or("no grpc-status")?;
    // The message's bytes, whatever they are, are the caller's error when wrong: never a
    // server fault. A broken frame (a compressed flag with no encoding agreed on, a length the
    // body does not hold) is INTERNAL because the gRPC specification says so, and only then.
    let faults: &[i32] = if well_framed(request) {
        &[2, 13, 15]
    } else {
        &[2, 15]
    };
    if faults.contains(&code) {
        return Err(format!(
            "grpc-status {code} ({:?})",
            grpc_field(answer, "grpc-message")
        ));
    }
    if code != 0 {
        refusal_wrote_only_its_record(answer)?;
    }
    Ok(())
}

/// One uncompressed gRPC frame holding the rest of the body (base64 of it, for
/// `grpc-web-text`).
fn well_framed(request: &RequestText) -> bool {
    let text = request
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/grpc-web-text"));
    let decoded;
    let body = if text {
        match base64::engine::general_purpose::STANDARD.decode(&request.body) {
            Ok(bytes) => {
                decoded = bytes;
                &decoded
            }
            Err(_) => return false,
        }
    } else {
        &request.body
    };
    body.len() >= 5
        && body[0] == 0
        && u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize == body.len() - 5
}

fn report(answer: &Answer) -> Result<(), String> {
    if answer.status.is_server_error() {
        return Err(format!("a server fault: {}", answer.status));
    }
    if !answer.status.is_success() && !answer.written.is_empty() {
        return Err(format!("refused, and wrote {:?}", answer.written));
    }
    match answer
        .written
        .iter()
        .find(|e| ![Event::CODE_DELIVERED, Event::DELIVERY_FAILED].contains(&e.as_str()))
    {
        Some(event) => Err(format!("a delivery report wrote {event}")),
        None => Ok(()),
    }
}

/// A gRPC status field (`grpc-status`, `grpc-message`) of an answer: from its headers
/// (trailers-only), its trailers (gRPC) or the trailer frame that ends its body (gRPC-web,
/// binary or text).
pub fn grpc_field(answer: &Answer, name: &str) -> Option<String> {
    let from = |headers: &HeaderMap| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    from(&answer.headers)
        .or_else(|| answer.trailers.as_ref().and_then(from))
        .or_else(|| web_trailer(answer, name))
}

/// A field of the trailer frame (flag 0x80) of a gRPC-web body, binary or base64 text.
fn web_trailer(answer: &Answer, name: &str) -> Option<String> {
    let text = answer
        .headers
        .get("content-type")
        .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc-web-text"));
    let decoded;
    let mut rest: &[u8] = if text {
        // Each frame is base64 of its own, padded: four characters decode to up to three
        // bytes on their own, whichever frame they belong to.
        decoded = answer
            .body
            .chunks(4)
            .filter_map(|group| base64::engine::general_purpose::STANDARD.decode(group).ok())
            .flatten()
            .collect::<Vec<u8>>();
        &decoded
    } else {
        &answer.body
    };
    while rest.len() >= 5 {
        let len = u32::from_be_bytes(rest[1..5].try_into().ok()?) as usize;
        let payload = rest.get(5..5 + len)?;
        if rest[0] & 0x80 != 0 {
            return std::str::from_utf8(payload).ok()?.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            });
        }
        rest = &rest[5 + len..];
    }
    None
}
