//! The server binary against slow and greedy clients: headers that trickle in are cut at the
//! header-read timeout, connections beyond the cap are closed on accept, and a shutdown ends
//! within its deadline even with connections open.

use std::time::{Duration, Instant};

use otp_sms_tests::server::{closed_within, config, Options, Server, TEST_KEYS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_otp-sms-server-under-test");

fn server(limits: &str) -> Server {
    Server::start(
        BIN,
        &Options {
            config: config(&format!("[server]\n{limits}\n")),
            keys: Some(TEST_KEYS.into()),
            ..Options::default()
        },
    )
}

fn addr(s: &Server) -> String {
    s.base_url.trim_start_matches("http://").to_owned()
}

/// Given a header-read timeout of 1 s, when 20 clients each send a request line and then a
/// header line every 300 ms (slowloris), then the server closes every one of them within 3 s,
/// and still answers a normal request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_trickle_in_are_cut_at_the_timeout() {
    let s = server("header_read_timeout_ms = 1000");
    let target = addr(&s);
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(&target).await.expect("connect");
                stream
                    .write_all(
                        b"POST /resources/v3alpha/users/alice/otp_sms HTTP/1.1\r\nHost: x\r\n",
                    )
                    .await
                    .expect("request line");
                let (mut read, mut write) = stream.into_split();
                let trickle = tokio::spawn(async move {
                    for _ in 0..30 {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        if write.write_all(b"X-Slow: 1\r\n").await.is_err() {
                            return;
                        }
                    }
                });
                let started = Instant::now();
                let mut buf = [0u8; 1024];
                let closed = loop {
                    match tokio::time::timeout(Duration::from_secs(6), read.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break Some(started.elapsed()),
                        Ok(Ok(_)) => continue,
                        Err(_) => break None,
                    }
                };
                trickle.abort();
                closed
            })
        })
        .collect();
    for client in clients {
        let closed = client.await.expect("client");
        let took = closed.expect("a trickling connection stayed open for 6 s");
        assert!(took < Duration::from_secs(3), "closed after {took:?}");
    }
    assert_eq!(s.healthz().await, 200);
}

/// Given a cap of 4 connections, when 4 are open, then a fifth is closed at once without an
/// answer; once one of the 4 closes, new connections are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_on_accept() {
    let s = server("max_connections = 4\nheader_read_timeout_ms = 30000");
    let target = addr(&s);
    let mut open = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(&target).await.expect("connect");
        // A request in progress holds its connection.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        open.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut fifth = TcpStream::connect(&target)
        .await
        .expect("the kernel accepts");
    let _ = fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), fifth.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the fifth connection was neither answered nor closed"
    );
    assert!(
        answer.is_empty(),
        "beyond the cap, no answer: {}",
        String::from_utf8_lossy(&answer)
    );
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.healthz().await, 200, "served again below the cap");
    drop(open);
}

/// Given a shutdown deadline of 1 s and a client holding a request half sent, when the server
/// gets SIGTERM, then it exits within 3 s instead of waiting for the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_ends_within_its_deadline_with_connections_open() {
    let mut s = server("shutdown_timeout_secs = 1\nheader_read_timeout_ms = 60000");
    let mut stream = TcpStream::connect(addr(&s)).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let exited = s.terminate(Duration::from_secs(10));
    let took = started.elapsed();
    assert!(exited.is_some(), "still running after 10 s");
    assert!(took < Duration::from_secs(3), "exited after {took:?}");
    assert!(
        closed_within(&mut stream, Duration::from_secs(2))
            .await
            .is_some(),
        "the held connection is closed"
    );
}

/// Starts an add whose 100-byte body arrives a byte every 200 ms: a call in progress.
async fn slow_add(target: &str) -> TcpStream {
    let mut stream = TcpStream::connect(target).await.expect("connect");
    stream
        .write_all(
            b"POST /resources/v3alpha/users/alice/otp_sms HTTP/1.1\r\nHost: x\r\n\
              Authorization: Bearer token-alice\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{",
        )
        .await
        .expect("headers");
    stream
}

/// Reads one HTTP/1.1 answer's status line and body (it carries `Content-Length`).
async fn answer(stream: &mut TcpStream, trickle: bool) -> (u16, serde_json::Value) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if trickle {
            let _ = stream.write_all(b" ").await;
        }
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    });
                    if length.is_some_and(|n| body.len() >= n) {
                        break;
                    }
                }
            }
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "no answer within 10 s");
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// Given a request time-out of 1 s, when an add's body takes longer to arrive, then the call
/// is answered DEADLINE_EXCEEDED (HTTP 504, code 4) after about 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_its_time_is_answered_deadline_exceeded() {
    let s = server("request_timeout_ms = 1000\nheader_read_timeout_ms = 30000");
    let mut stream = slow_add(&addr(&s)).await;
    let started = Instant::now();
    let (status, body) = answer(&mut stream, true).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], 4, "{body}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
}

/// Given at most 2 calls in progress, when 2 slow adds are in progress, then a third call is
/// answered UNAVAILABLE (HTTP 503, code 14) at once; once they end, calls are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_in_flight_cap_are_shed_at_once() {
    let s = server("max_in_flight = 2\nrequest_timeout_ms = 30000\nheader_read_timeout_ms = 30000");
    let target = addr(&s);
    let slow = [slow_add(&target).await, slow_add(&target).await];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let res = reqwest::Client::new()
        .post(s.url("/resources/v3alpha/users/alice/otp_sms"))
        .bearer_auth("token-alice")
        .header("content-type", "application/json")
        .body(r#"{"number": "+41791234567", "returnCode": {}}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 503);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["code"], 14, "{body}");
    assert!(started.elapsed() < Duration::from_secs(1), "shed late");
    drop(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.healthz().await, 200, "served again under the cap");
}

/// A gRPC call shed at the in-flight cap is a gRPC status, UNAVAILABLE, not an HTTP error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_beyond_the_cap_is_a_grpc_unavailable() {
    use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::zitadel_users_client::ZitadelUsersClient;
    let s = server("max_in_flight = 1\nrequest_timeout_ms = 30000\nheader_read_timeout_ms = 30000");
    let slow = slow_add(&addr(&s)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut client = ZitadelUsersClient::connect(s.base_url.clone())
        .await
        .expect("connect");
    let mut request = tonic::Request::new(otp_sms_tests::grpc::add_returning_code(
        "alice",
        "+41791234567",
    ));
    request
        .metadata_mut()
        .insert("authorization", "Bearer token-alice".parse().unwrap());
    let status = client.add_otpsms_authenticator(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    drop(slow);
}

/// A Connect call shed at the in-flight cap gets Connect's error (`{"code": "unavailable"}`,
/// HTTP 503), which a Connect client reads as UNAVAILABLE; a late one gets `deadline_exceeded`
/// (HTTP 504).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_call_refused_by_the_server_gets_connects_error() {
    let connect_add = |s: &Server| {
        reqwest::Client::new()
            .post(s.url("/zitadel.resources.user.v3alpha.ZITADELUsers/AddOTPSMSAuthenticator"))
            .bearer_auth("token-alice")
            .header("content-type", "application/json")
            .header("connect-protocol-version", "1")
            .body(r#"{"id": "alice", "phone": {"number": "+41791234567", "returnCode": {}}}"#)
            .send()
    };
    let s = server("max_in_flight = 1\nrequest_timeout_ms = 30000\nheader_read_timeout_ms = 30000");
    let slow = slow_add(&addr(&s)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = connect_add(&s).await.expect("request");
    assert_eq!(res.status().as_u16(), 503);
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["code"], "unavailable", "{body}");
    drop(slow);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = connect_add(&s).await.expect("request");
    assert_eq!(res.status().as_u16(), 200, "served again under the cap");

    // A Connect add whose body trickles in past the request time-out.
    let s = server("request_timeout_ms = 1000\nheader_read_timeout_ms = 30000");
    let mut stream = TcpStream::connect(addr(&s)).await.expect("connect");
    stream
        .write_all(
            b"POST /zitadel.resources.user.v3alpha.ZITADELUsers/AddOTPSMSAuthenticator HTTP/1.1\r\n\
              Host: x\r\nAuthorization: Bearer token-alice\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{",
        )
        .await
        .expect("headers");
    let (status, body) = answer(&mut stream, true).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["code"], "deadline_exceeded", "{body}");
}

/// Given a header-read timeout of 1 s, when a client's keep-alive connection has been answered
/// and then sits idle, then the server closes it within 3 s: the header timer runs while it
/// waits for the next request, so it is also the HTTP/1 idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_at_the_header_timeout() {
    let s = server("header_read_timeout_ms = 1000");
    let mut stream = TcpStream::connect(addr(&s)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"}") {
        let read = stream.read(&mut buf).await.unwrap();
        assert!(read > 0, "answered before it closes");
        answer.extend_from_slice(&buf[..read]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "kept alive after an answer"
    );
    let closed = closed_within(&mut stream, Duration::from_secs(3)).await;
    assert!(
        closed.is_some_and(|t| t >= Duration::from_millis(900)),
        "closed after about 1 s idle: {closed:?}"
    );
}
