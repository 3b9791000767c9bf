//! The wire targets: one request, read from the fuzzer's bytes as text ([`RequestText`]),
//! sent to every route the server mounts, its answer judged by its protocol's rules
//! ([`crate::answer`]). Each target prepares what its protocol wraps the message in, so that
//! the fuzzer's mutations reach the decoder behind it rather than dying at the wrapper.

use std::io::Write as _;

use axum::http::{HeaderValue, Version};
use base64::Engine as _;
use flate2::write::GzEncoder;
use flate2::Compression;
use otp_sms_providers::{twilio, vonage};

use crate::answer;
use crate::fixture::{with_fixture, TWILIO_TOKEN, TWILIO_URL, VONAGE_SECRET};
use crate::request::RequestText;

/// Reads `data` as a request, lets `prepare` wrap it, sends it and judges the answer.
fn run(data: &[u8], prepare: Prepare) {
    with_fixture(|fixture| {
        let Some(mut request) = RequestText::parse(data) else {
            return;
        };
        prepare(&mut request);
        answer::check(fixture, &request);
    })
}

/// What a wire target does to a request before it is sent.
pub type Prepare = fn(&mut RequestText);

/// The wire targets by name, with what each does to a request before it is sent.
pub const WIRE: &[(&str, Prepare)] = &[
    ("json_api", |_| {}),
    ("connect", prepare_connect),
    ("grpc_web", prepare_grpc_web),
    ("grpc", prepare_grpc),
    ("reports", prepare_report),
];

/// The JSON API: any method, path, query (`instance.id`, `organization.domain`, …), header
/// (Authorization, X-Forwarded-For, Forwarded, Idempotency-Key) and body, as sent.
pub fn json_api(data: &[u8]) {
    run(data, |_| {})
}

/// Connect's unary calls: with `content-encoding: gzip` the body is compressed here (unless
/// it already is gzip), so that the fuzzer works on the message, not on the compression.
pub fn connect(data: &[u8]) {
    run(data, prepare_connect)
}

fn prepare_connect(request: &mut RequestText) {
    let gzip = request.header("content-encoding") == Some("gzip");
    if gzip && !request.body.starts_with(&[0x1f, 0x8b]) {
        request.body = gzip_bytes(&request.body);
    }
}

/// gRPC-web: the body's frames as sent, or base64 of them for `application/grpc-web-text`.
pub fn grpc_web(data: &[u8]) {
    run(data, prepare_grpc_web)
}

fn prepare_grpc_web(request: &mut RequestText) {
    let text = request
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/grpc-web-text"));
    if text {
        request.body = base64::engine::general_purpose::STANDARD
            .encode(&request.body)
            .into_bytes();
    }
}

/// gRPC: over HTTP/2, `te: trailers` and `application/grpc` unless the request says
/// otherwise; with `grpc-encoding: gzip` a frame flagged compressed is compressed here.
pub fn grpc(data: &[u8]) {
    run(data, prepare_grpc)
}

fn prepare_grpc(request: &mut RequestText) {
    request.version = Version::HTTP_2;
    let headers = &mut request.headers;
    if !headers.contains_key("te") {
        headers.insert("te", HeaderValue::from_static("trailers"));
    }
    if !headers.contains_key("content-type") {
        headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    }
    let gzip = request.header("grpc-encoding") == Some("gzip");
    let body = &request.body;
    if gzip && body.len() >= 5 && body[0] == 1 && !body[5..].starts_with(&[0x1f, 0x8b]) {
        let compressed = gzip_bytes(&body[5..]);
        let mut framed = vec![1];
        framed.extend_from_slice(&(compressed.len() as u32).to_be_bytes());
        framed.extend_from_slice(&compressed);
        request.body = framed;
    }
}

/// The providers' delivery reports: with `x-fuzz-sign: twilio` or `x-fuzz-sign: vonage` the
/// request is signed here as the provider signs it (Twilio: a header over the URL and the
/// form, and an issue time `iat=now` in the URL made the time of the call; Vonage: a `sig` parameter in the query of a GET or the form of a POST, and a
/// `timestamp` of `now` made the time of the call), so that the fuzzer reaches what lies
/// behind the signature check.
pub fn reports(data: &[u8]) {
    run(data, prepare_report)
}

fn prepare_report(request: &mut RequestText) {
    match request.header("x-fuzz-sign") {
        Some("twilio") => {
            // The URL's issue time, `iat=now`, made the time of the call.
            if let Some(query) = request.uri.query().filter(|q| q.contains("iat=now")) {
                let now = chrono::Utc::now().timestamp();
                let query = query.replace("iat=now", &format!("iat={now}"));
                if let Ok(uri) = format!("{}?{query}", request.uri.path()).parse() {
                    request.uri = uri;
                }
            }
            let form: Vec<(String, String)> =
                serde_urlencoded::from_bytes(&request.body).unwrap_or_default();
            let url = match request.uri.query() {
                Some(query) => format!("{TWILIO_URL}?{query}"),
                None => TWILIO_URL.to_owned(),
            };
            let signature = twilio::signature(TWILIO_TOKEN, &url, &form);
            if let Ok(value) = HeaderValue::from_str(&signature) {
                request.headers.insert("x-twilio-signature", value);
            }
        }
        Some("vonage") => {
            let sign = |params: &str| {
                let mut params: Vec<(String, String)> =
                    serde_urlencoded::from_str(params).unwrap_or_default();
                params.retain(|(k, _)| k != "sig");
                for (key, value) in &mut params {
                    if key == "timestamp" && value == "now" {
                        *value = chrono::Utc::now().timestamp().to_string();
                    }
                }
                let sig =
                    vonage::signature(vonage::SignatureMethod::Sha256, VONAGE_SECRET, &params);
                params.push(("sig".into(), sig));
                serde_urlencoded::to_string(&params).unwrap_or_default()
            };
            if request.method == axum::http::Method::GET {
                let query = sign(request.uri.query().unwrap_or_default());
                if let Ok(uri) = format!("{}?{query}", request.uri.path()).parse() {
                    request.uri = uri;
                }
            } else {
                let form = sign(std::str::from_utf8(&request.body).unwrap_or_default());
                request.body = form.into_bytes();
            }
        }
        _ => {}
    }
}

fn gzip_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::send;
    use crate::replay::committed_inputs;

    /// The seeds reach the calls themselves, not only their refusals: each wire target has
    /// seeds that succeed (a 2xx, or grpc-status 0), and the JSON API's verify, challenge and
    /// check seeds succeed, each on a fresh fixture.
    #[test]
    fn seeds_reach_the_calls() {
        for (name, prepare) in WIRE {
            let mut succeeded = Vec::new();
            for path in committed_inputs(name) {
                let data = std::fs::read(&path).unwrap();
                let mut request = RequestText::parse(&data).expect("a seed is a request");
                prepare(&mut request);
                let answer = crate::fixture::with_new_fixture(|f| send(f, &request));
                let grpc_ok = answer.headers.get("grpc-status").map(|v| v.as_bytes()) == Some(b"0")
                    || answer
                        .trailers
                        .as_ref()
                        .and_then(|t| t.get("grpc-status"))
                        .is_some_and(|v| v.as_bytes() == b"0")
                    || answer.body.windows(13).any(|w| w == b"grpc-status:0");
                let http_ok = answer.status.is_success()
                    && !answer.headers.contains_key("grpc-status")
                    && !request
                        .header("content-type")
                        .unwrap_or_default()
                        .starts_with("application/grpc");
                if grpc_ok || http_ok {
                    succeeded.push(path.file_name().unwrap().to_string_lossy().into_owned());
                }
            }
            assert!(!succeeded.is_empty(), "no seed of {name} succeeds");
            let expected: &[&str] = match *name {
                "json_api" => &["verify", "challenge", "check", "add_return", "remove"],
                "reports" => &["twilio_delivered", "vonage_get", "vonage_post"],
                _ => &[],
            };
            {
                for call in expected {
                    assert!(succeeded.iter().any(|s| s == call), "{call}: {succeeded:?}");
                }
            }
        }
    }
}
