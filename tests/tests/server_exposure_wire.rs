//! What a stranger with no token can do to the real server binary, tried as the attacker of
//! issue 25 did (loopback, bounded): silent sockets, slow bodies, junk method names and a
//! spoofed forwarding header. Each repro must no longer reproduce, while a normal client is
//! served.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use otp_sms_tests::server::{closed_within, config, Options, Server, TEST_KEYS};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

fn server(extra: &str) -> Server {
    Server::start(
        BIN,
        &Options {
            config: config(extra),
            keys: Some(TEST_KEYS.into()),
            ..Options::default()
        },
    )
}

fn addr(s: &Server) -> SocketAddr {
    s.base_url.trim_start_matches("http://").parse().unwrap()
}

/// A connection to `target` from the loopback address `from` (any of 127.0.0.0/8).
async fn connect_from(from: [u8; 4], target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(target).await
}

async fn add(s: &Server, token: &str, number: &str) -> (u16, Value) {
    let res = reqwest::Client::new()
        .post(s.url("/resources/v3alpha/users/alice/otp_sms"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(format!(r#"{{"number": "{number}", "returnCode": {{}}}}"#))
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Given the production limits of the repro (100 connections, a 1 s header time-out here),
/// when 100 connections send nothing or only the first byte of a request, then every one is
/// closed within the header time-out (protocol detection is under it too) and a normal client
/// is served after; before the fix they were all still open after 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_closed_within_the_header_timeout() {
    let s = server(
        "[server]\nmax_connections = 100\nmax_connections_per_address = 1000\nheader_read_timeout_ms = 1000\n",
    );
    let target = addr(&s);
    let mut held = Vec::new();
    for i in 0..100 {
        let mut stream = TcpStream::connect(target).await.expect("connect");
        if i % 2 == 1 {
            stream.write_all(b"P").await.expect("one byte");
        }
        held.push(stream);
    }
    let started = Instant::now();
    for stream in &mut held {
        let closed = closed_within(
            stream,
            Duration::from_secs(4).saturating_sub(started.elapsed()),
        )
        .await;
        assert!(
            closed.is_some(),
            "a silent connection is still open after 4 s"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(s.healthz().await, 200, "a normal client is served");
}

/// Given at most 4 connections per address, when one host holds 4 silent connections, then
/// its fifth is closed on accept unanswered, while another host is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_connection() {
    let s = server("[server]\nmax_connections_per_address = 4\nheader_read_timeout_ms = 30000\n");
    let target = addr(&s);
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from([127, 0, 0, 1], target).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fifth = connect_from([127, 0, 0, 1], target).await.expect("connect");
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let closed = closed_within(&mut fifth, Duration::from_secs(2)).await;
    assert!(
        closed.is_some(),
        "the fifth connection of one host is closed"
    );
    let mut answer = Vec::new();
    let _ = fifth.read_to_end(&mut answer).await;
    assert!(answer.is_empty(), "and not answered");

    let mut other = connect_from([127, 0, 0, 3], target).await.expect("connect");
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    other.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "another host is served"
    );
    drop(held);
}

/// Starts a Connect add that announces 1,000 bytes and sends one: a slow body.
async fn slow_connect_add(target: SocketAddr, token: Option<&str>) -> TcpStream {
    let mut stream = TcpStream::connect(target).await.expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!(
                "POST /zitadel.resources.user.v3alpha.ZITADELUsers/AddOTPSMSAuthenticator HTTP/1.1\r\n\
                 Host: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .expect("headers");
    stream
}

/// The status of the HTTP/1.1 answer on `stream`, read within `limit` (0 if none came).
async fn status_within(stream: &mut TcpStream, limit: Duration) -> u16 {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + limit;
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&got)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Given the repro's 20 in-flight slots, when 24 Connect adds with no token announce a body
/// and send one byte, then each is answered UNAUTHENTICATED at once without its body being
/// waited for, and an authenticated add and `/healthz` are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_without_a_token_are_refused_before_the_body() {
    let s = server("[server]\nmax_in_flight = 20\nrequest_timeout_ms = 30000\n");
    let target = addr(&s);
    let mut strangers = Vec::new();
    for _ in 0..24 {
        strangers.push(slow_connect_add(target, None).await);
    }
    for stream in &mut strangers {
        assert_eq!(status_within(stream, Duration::from_secs(2)).await, 401);
    }
    assert_eq!(s.healthz().await, 200);
    let (status, body) = add(&s, "token-alice", "+41791234567").await;
    assert_eq!(status, 200, "{body}");
}

/// Given 20 in-flight slots, 4 per caller and a 1 s body time-out, when one token starts 24
/// slow Connect adds, then 4 are in progress and the other 20 are RESOURCE_EXHAUSTED (429) at
/// once; `/healthz` and another caller's add are served meanwhile; the 4 are answered
/// DEADLINE_EXCEEDED (504) about 1 s later, well before the 30 s request time-out, and their
/// connections closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tokens_slow_bodies_hold_only_its_own_share_and_only_for_the_body_timeout() {
    let s = server(
        "[server]\nmax_in_flight = 20\nmax_in_flight_per_caller = 4\nbody_timeout_ms = 1000\nrequest_timeout_ms = 30000\n",
    );
    let target = addr(&s);
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..24 {
        slow.push(slow_connect_add(target, Some("token-stranger")).await);
    }
    // Each read at once, well within the body time-out.
    let reads: Vec<_> = slow
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let status = status_within(&mut stream, Duration::from_millis(400)).await;
                (status, stream)
            })
        })
        .collect();
    let mut refused = 0;
    let mut held = Vec::new();
    for read in reads {
        match read.await.unwrap() {
            (429, _) => refused += 1,
            (0, stream) => held.push(stream),
            (other, _) => panic!("answered {other}"),
        }
    }
    assert_eq!((refused, held.len()), (20, 4));
    assert_eq!(
        s.healthz().await,
        200,
        "health is not behind the API's caps"
    );
    let (status, body) = add(&s, "token-alice", "+41791234567").await;
    assert_eq!(status, 200, "{body}");
    for stream in &mut held {
        assert_eq!(status_within(stream, Duration::from_secs(5)).await, 504);
        assert!(
            closed_within(stream, Duration::from_secs(2))
                .await
                .is_some(),
            "the slow body's connection is closed"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "answered after {:?}",
        started.elapsed()
    );
}

/// The samples `/metrics` shows (lines that are not comments).
async fn series(metrics_url: &str) -> usize {
    reqwest::get(metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count()
}

/// When 3,000 gRPC-web calls name methods the service does not have (each a new name, as in
/// the repro that grew `/metrics` from 90 series to 33,156), then the number of series is
/// unchanged after the first of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_method_names_add_no_metric_series() {
    let s = server("");
    let client = reqwest::Client::new();
    let junk = |i: usize| {
        let client = client.clone();
        let url = s.url(&format!(
            "/zitadel.resources.user.v3alpha.ZITADELUsers/M{i}_{}",
            "A".repeat(64)
        ));
        async move {
            client
                .post(url)
                .header("content-type", "application/grpc-web+proto")
                .body(vec![0u8, 0, 0, 0, 0])
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    for i in 0..5 {
        junk(i).await;
    }
    // A scrape is itself counted: the first one adds its own series.
    let metrics = s.url("/metrics");
    series(&metrics).await;
    let before = series(&metrics).await;
    for chunk in (5..3_005).collect::<Vec<_>>().chunks(50) {
        let answers = futures_join(chunk.iter().map(|&i| junk(i))).await;
        assert!(answers.iter().all(|&status| status == 200), "{answers:?}");
    }
    let after = series(&metrics).await;
    assert_eq!(before, after, "3,000 junk names grew the series");
}

async fn futures_join<F: std::future::Future<Output = u16> + Send + 'static>(
    calls: impl Iterator<Item = F>,
) -> Vec<u16> {
    let handles: Vec<_> = calls.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// By default `/metrics` is on a loopback listener of its own, not on the API's port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_on_their_own_listener_and_not_on_the_api_port() {
    let s = Server::start(
        BIN,
        &Options {
            config: config(""),
            keys: Some(TEST_KEYS.into()),
            metrics_listen: Some("127.0.0.1:0".into()),
            ..Options::default()
        },
    );
    let on_api = reqwest::get(s.url("/metrics")).await.unwrap();
    assert_eq!(on_api.status().as_u16(), 404);
    let output = s.output();
    let at = output
        .lines()
        .find_map(|l| l.split("metrics on ").nth(1))
        .expect("the metrics address is logged")
        .trim()
        .to_owned();
    let res = reqwest::get(&at).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.text().await.unwrap().contains("# TYPE"));
}

/// A server whose users `u0` … `u11` have tokens `token-u{i}`; the proxy at 127.0.0.2 is
/// trusted and names the client in `header`.
fn proxied_server(header: &str) -> Server {
    let mut c = String::from(
        "[[instances]]\nid = \"i\"\n\n[[organizations]]\ninstance = \"i\"\nid = \"org\"\n\n",
    );
    for i in 0..12 {
        c.push_str(&format!(
            "[[users]]\ninstance = \"i\"\nid = \"u{i}\"\norganization = \"org\"\n\n\
             [[tokens]]\ntoken = \"token-u{i}\"\ninstance = \"i\"\nuser = \"u{i}\"\n\n"
        ));
    }
    c.push_str(&format!(
        "[abuse]\nallow_self_return_code = true\n\n\
         [server]\ntrusted_proxies = [\"127.0.0.2/32\"]\nclient_address_header = \"{header}\"\n"
    ));
    Server::start(
        BIN,
        &Options {
            config: c,
            keys: Some(TEST_KEYS.into()),
            ..Options::default()
        },
    )
}

/// Adds (sending a code, which the address budget counts) through the proxy at 127.0.0.2 for
/// users u0…u10, each with the header lines `proxy_lines(i)`. Returns the answers.
async fn adds_through_the_proxy(
    s: &Server,
    proxy_lines: impl Fn(usize) -> Vec<(&'static str, String)>,
) -> Vec<(u16, Value)> {
    let client = reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let mut out = Vec::new();
    for i in 0..11 {
        let mut req = client
            .post(s.url(&format!("/resources/v3alpha/users/u{i}/otp_sms")))
            .bearer_auth(format!("token-u{i}"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"number": "+417912{i:02}001", "sendCode": {{}}}}"#
            ));
        for (name, value) in proxy_lines(i) {
            req = req.header(name, value);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        out.push((status, res.json().await.unwrap_or(Value::Null)));
    }
    out
}

fn assert_address_budget_binds(answers: &[(u16, Value)]) {
    for (status, body) in &answers[..10] {
        assert_eq!(*status, 200, "{body}");
    }
    let (status, body) = &answers[10];
    assert_eq!(*status, 429, "the eleventh from one real address: {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("client address"),
        "{body}"
    );
}

/// Behind a trusted proxy that appends the real client on a second `X-Forwarded-For` line
/// (HAProxy's `option forwardfor`), a client-chosen first line does not move the budgeted
/// address: the eleventh add from one real address is refused by its budget (10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_first_forwarded_for_line_does_not_move_the_address() {
    let s = proxied_server("x-forwarded-for");
    let answers = adds_through_the_proxy(&s, |i| {
        vec![
            ("x-forwarded-for", format!("203.0.113.{i}")),
            ("x-forwarded-for", "198.51.100.7".to_owned()),
        ]
    })
    .await;
    assert_address_budget_binds(&answers);
}

/// With a proxy that sends `Forwarded: for=…` (`client_address_header = "forwarded"`), the
/// client's own `X-Forwarded-For` is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_forwarded_a_clients_x_forwarded_for_is_ignored() {
    let s = proxied_server("forwarded");
    let answers = adds_through_the_proxy(&s, |i| {
        vec![
            ("x-forwarded-for", format!("203.0.113.{i}")),
            ("forwarded", format!("for=203.0.113.{i}")),
            ("forwarded", "for=198.51.100.7;proto=https".to_owned()),
        ]
    })
    .await;
    assert_address_budget_binds(&answers);
}

/// A request with no token and a malformed query (or path) is UNAUTHENTICATED on every JSON
/// operation: a stranger does not learn the validation rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_nothing_is_validated() {
    let s = server("");
    let client = reqwest::Client::new();
    for (method, path) in [
        ("POST", "/resources/v3alpha/users/alice/otp_sms?instance.id=&organization.org_id=a&organization.org_domain=b"),
        ("POST", "/resources/v3alpha/users/alice/otp_sms/x/_verify?instance.id="),
        ("DELETE", "/resources/v3alpha/users/alice/otp_sms/x?organization.org_id=a&organization.org_domain=b"),
        ("POST", "/resources/v3alpha/users/alice/otp_sms/x/_resend_code?instance.id="),
        ("POST", "/resources/v3alpha/users/alice/otp_sms/_unlock?instance.id="),
    ] {
        let res = client
            .request(method.parse().unwrap(), s.url(path))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 401, "{method} {path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], 16, "{method} {path}: {body}");
    }
}

/// Given an allowance of 3 idempotency keys per caller, when one token adds under 5 new keys,
/// then the last 2 are RESOURCE_EXHAUSTED (429, code 8) and store nothing, and a retry under
/// its first key still gets the first registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_cannot_store_idempotency_records_past_its_allowance() {
    let s = server("[service]\nidempotency_keys_per_caller = 3\n");
    let keyed_add = |key: &str, number: &str| {
        reqwest::Client::new()
            .post(s.url("/resources/v3alpha/users/alice/otp_sms"))
            .bearer_auth("token-alice")
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(format!(r#"{{"number": "{number}", "returnCode": {{}}}}"#))
            .send()
    };
    let mut first = None;
    for i in 0..5 {
        let res = keyed_add(&format!("key-{i}"), "+41791234567")
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        if i < 3 {
            assert_eq!(status, 200, "{body}");
            first.get_or_insert(body["otpSmsId"].clone());
        } else {
            assert_eq!(status, 429, "{body}");
            assert_eq!(body["code"], 8, "{body}");
        }
    }
    let res = keyed_add("key-0", "+41791234567").await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(Some(body["otpSmsId"].clone()), first, "replayed");
}
