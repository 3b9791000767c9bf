//! Hostile bytes on the wire, against the real server binary on loopback: HTTP/1.1 requests
//! built from what a client controls below the API (the request line, framing headers,
//! `Content-Length` and `Transfer-Encoding` that disagree, a chunked body that is not, headers
//! too long or too many, the proxy headers the server reads from a trusted peer, trace
//! context, CORS preflights, Connect and gRPC-web content types). Whatever arrives, the server
//! answers with a well-formed status line that is not a server fault, or closes the
//! connection; it keeps serving a normal client after every case; and it never panics.
//!
//! 128 cases by default (`PROPTEST_CASES` sets more); each is a connection of its own. Each
//! test owns its server, which is killed when the test ends (a server kept in a static was
//! never dropped, and outlived the test run).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use otp_sms_tests::server::{configured_server, Server};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

fn server() -> Server {
    configured_server(
        BIN,
        "[server]\n\
         trusted_proxies = [\"127.0.0.1/32\"]\n\
         cors_allowed_origins = [\"https://app.example.com\"]\n\
         header_read_timeout_ms = 2000\n",
        None,
    )
}

fn address(server: &Server) -> String {
    server
        .base_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

/// Sends `bytes` on a new connection and reads what comes back until the server closes or
/// stops sending (at most a few seconds).
fn exchange(server: &Server, bytes: &[u8], half_close: bool) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(address(server)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(4))).ok();
    // The server may answer and close before reading everything: a failed write is fine.
    let _ = stream.write_all(bytes);
    if half_close {
        // Nothing more is coming: a request the bytes left unfinished ends here, instead of
        // waiting for the server's timers.
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                break
            }
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    Ok(answer)
}

/// The status code of an HTTP/1 answer; `None` when the server closed without one.
fn status(answer: &[u8]) -> Result<Option<String>, String> {
    if answer.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(answer);
    let line = text.lines().next().unwrap_or_default().to_owned();
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next()) {
        (Some(version), Some(code))
            if version.starts_with("HTTP/1.") && code.len() == 3 && code.parse::<u16>().is_ok() =>
        {
            Ok(Some(code.to_owned()))
        }
        _ => Err(format!("not an HTTP status line: {line:?}")),
    }
}

/// A normal client still gets its answer.
fn still_serves(server: &Server) -> Result<(), String> {
    let request = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    match status(&exchange(server, request.as_bytes(), false)?)? {
        Some(code) if code == "200" => Ok(()),
        other => Err(format!("/healthz answered {other:?}")),
    }
}

fn request_line() -> impl Strategy<Value = String> {
    let method = prop_oneof![
        8 => prop::sample::select(vec!["GET", "POST", "DELETE", "OPTIONS", "PUT", "HEAD"])
            .prop_map(str::to_owned),
        1 => "[A-Z]{1,10}",
        1 => "[ -~]{0,12}",
    ];
    let target = prop_oneof![
        2 => prop::sample::select(vec![
            "/resources/v3alpha/users/alice/otp_sms",
            "/resources/v3alpha/users/alice/otp_sms/x/_verify",
            "/zitadel.resources.user.v3alpha.ZITADELUsers/AddOTPSMSAuthenticator",
            "/otpsms.v1.OTPSMSExtensions/UnlockOTPSMSVerification",
            "/sms/status/twilio",
            "/sms/status/vonage/inst-1/x/1",
            "/metrics",
            "/readyz",
            "*",
            "http://evil.example/healthz",
        ])
        .prop_map(str::to_owned),
        1 => "/[ -~]{0,60}",
        1 => "/[a-z%0-9]{0,4000}",
    ];
    let version = prop_oneof![
        12 => Just("HTTP/1.1"),
        1 => Just("HTTP/1.0"),
        1 => Just("HTTP/2.0"),
        1 => Just("HTTP/9.9"),
        1 => Just(""),
    ];
    (method, target, version).prop_map(|(m, t, v)| format!("{m} {t} {v}"))
}

fn header() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("Host: inst-1.test".to_owned()),
        prop::sample::select(vec![
            "Content-Type: application/json",
            "Content-Type: application/proto",
            "Content-Type: application/grpc-web+proto",
            "Content-Type: application/grpc",
            "Connect-Protocol-Version: 1",
            "Authorization: Bearer token-alice",
            "Authorization: Bearer token-admin",
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: identity",
            "Content-Encoding: gzip",
            "Expect: 100-continue",
            "Connection: upgrade",
            "Upgrade: h2c",
            "Origin: https://app.example.com",
            "Origin: https://evil.example",
            "Access-Control-Request-Method: POST",
            "Access-Control-Request-Headers: authorization, x-evil",
        ])
        .prop_map(str::to_owned),
        "[0-9-]{0,12}".prop_map(|n| format!("Content-Length: {n}")),
        "[0-9a-fA-F:., ]{0,60}".prop_map(|v| format!("X-Forwarded-For: {v}")),
        "[ -~]{0,80}".prop_map(|v| format!("Forwarded: {v}")),
        "[0-9a-f-]{0,60}".prop_map(|v| format!("traceparent: {v}")),
        "[ -~]{0,80}".prop_map(|v| format!("Idempotency-Key: {v}")),
        "[ -~]{0,30}".prop_map(|v| format!("Connect-Timeout-Ms: {v}")),
        "[ -~]{0,30}".prop_map(|v| format!("grpc-timeout: {v}")),
        // A header far over any sane size.
        Just(format!("X-Long: {}", "a".repeat(70_000))),
    ];
    // Now and then a line that is not a header at all.
    prop_oneof![20 => line, 1 => "[ -~]{0,40}"]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(br#"{"number":"+41791234567","returnCode":{}}"#.to_vec()),
        Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        Just(b"zz\r\nnot a chunk\r\n".to_vec()),
        Just(b"ffffffffffffffff\r\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..512),
    ]
}

/// Whatever a client sends below the API: a well-formed status that is not a server fault, or
/// a close; a normal client served after every case; and no panic in the server's log.
#[test]
fn the_server_answers_hostile_bytes_without_fault_and_keeps_serving() {
    let server = server();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(128);
    // The source file, as `proptest!` gives it: the cases saved beside it run first.
    let mut runner = TestRunner::new(Config {
        cases,
        source_file: Some(file!()),
        ..Config::default()
    });
    let strategy = (
        request_line(),
        prop::collection::vec(header(), 0..8),
        prop_oneof![4 => Just(0usize), 1 => 90usize..200],
        body(),
    );
    let outcome = runner.run(&strategy, |(line, headers, many, body)| {
        let mut request = format!("{line}\r\n");
        for h in &headers {
            request.push_str(h);
            request.push_str("\r\n");
        }
        for i in 0..many {
            request.push_str(&format!("X-Many-{i}: {i}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(&body);
        let answer = exchange(&server, &bytes, true)
            .and_then(|a| status(&a))
            .map_err(TestCaseError::fail)?;
        if let Some(code) = &answer {
            prop_assert!(
                !code.starts_with('5'),
                "{line:?} with {:?}: {code}",
                headers
                    .iter()
                    .map(|h| h.chars().take(60).collect::<String>())
                    .collect::<Vec<_>>()
            );
        }
        still_serves(&server).map_err(TestCaseError::fail)?;
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    let output = server.output();
    assert!(!output.contains("panicked"), "{output}");
}

/// Bytes that are not HTTP/1 at all: a TLS hello on the plain port is refused (the server
/// answers 400 or closes), HTTP/2 with prior knowledge is answered in HTTP/2 (its SETTINGS
/// frame first); and after them, nothing panicked.
#[test]
fn other_protocols_are_answered_in_kind_and_nothing_panicked() {
    let server = server();
    let tls = exchange(
        &server,
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        true,
    )
    .unwrap();
    let code = status(&tls).unwrap();
    assert!(matches!(code.as_deref(), None | Some("400")), "{code:?}");
    let h2 = exchange(&server, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true).unwrap();
    // A frame header: 3 bytes of length, then the type (4: SETTINGS).
    assert_eq!(h2.get(3), Some(&4), "{h2:?}");
    let smuggled =
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    let code = status(&exchange(&server, smuggled, true).unwrap()).unwrap();
    assert!(
        !code.as_deref().is_some_and(|c| c.starts_with('5')),
        "{code:?}"
    );
    still_serves(&server).unwrap();
    let output = server.output();
    assert!(!output.contains("panicked"), "{output}");
}
