//! Network helpers for end-to-end tests: a webhook receiver and a TCP proxy that can be cut.
//! Both listen on 127.0.0.1 only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The signing secret the test servers' webhook senders are configured with
/// ([`crate::server::webhook_sms`]).
pub const WEBHOOK_SECRET: &str = "whsec_dGVzdC1zZWNyZXQtb2YtdGhlLXdlYmhvb2stcmVjZWl2ZXI=";

/// Whether a call carries a valid Standard Webhooks signature for `secret`, computed here
/// independently of the server's signer: `webhook-signature` holds `v1,<base64 HMAC-SHA-256
/// of "{webhook-id}.{webhook-timestamp}.{body}">` (one of several, space-separated), and the
/// timestamp is within five minutes of now.
pub fn signed(headers: &axum::http::HeaderMap, body: &[u8], secret: &str) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(at) = timestamp.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - at).abs() > 300 {
        return false;
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("the test secret is base64");
    signatures.split(' ').any(|signature| {
        let Some(tag) = signature
            .strip_prefix("v1,")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        else {
            return false;
        };
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        mac.verify_slice(&tag).is_ok()
    })
}

/// An HTTP endpoint that records the JSON bodies POSTed to `/sms`, and can be told to fail.
/// It answers 401 to a call without a valid signature for [`WEBHOOK_SECRET`], as a receiver
/// should, and counts those.
pub struct WebhookReceiver {
    /// `http://127.0.0.1:PORT/sms`.
    pub url: String,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
    failing: Arc<AtomicBool>,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    unsigned: Arc<std::sync::atomic::AtomicU64>,
    task: JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts on a free port.
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let unsigned = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let app = {
            let received = Arc::clone(&received);
            let failing = Arc::clone(&failing);
            let delay_ms = Arc::clone(&delay_ms);
            let unsigned = Arc::clone(&unsigned);
            Router::new().route(
                "/sms",
                post(
                    move |headers: axum::http::HeaderMap, raw: axum::body::Bytes| {
                        let received = Arc::clone(&received);
                        let failing = Arc::clone(&failing);
                        let unsigned = Arc::clone(&unsigned);
                        let delay = delay_ms.load(Ordering::SeqCst);
                        async move {
                            if failing.load(Ordering::SeqCst) {
                                return StatusCode::SERVICE_UNAVAILABLE;
                            }
                            if !signed(&headers, &raw, WEBHOOK_SECRET) {
                                unsigned.fetch_add(1, Ordering::SeqCst);
                                return StatusCode::UNAUTHORIZED;
                            }
                            let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&raw)
                            else {
                                return StatusCode::BAD_REQUEST;
                            };
                            // The header, beside the body, for tests to compare.
                            let key = headers
                                .get("idempotency-key")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            if let (Some(key), Some(map)) = (key, body.as_object_mut()) {
                                map.insert("_idempotencyKey".into(), key.into());
                            }
                            // A provider takes a message when it arrives; a slow one answers
                            // late, and a sender that gives up waiting has still sent it.
                            received.lock().unwrap().push(body);
                            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                            StatusCode::OK
                        }
                    },
                ),
            )
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://{addr}/sms"),
            received,
            failing,
            delay_ms,
            unsigned,
            task,
        }
    }

    /// Calls refused for a missing or wrong signature.
    pub fn unsigned(&self) -> u64 {
        self.unsigned.load(Ordering::SeqCst)
    }

    /// Answer each request only after `delay` (a slow provider): the message counts as
    /// received when it arrives, whether or not the sender waits for the answer.
    pub fn set_delay(&self, delay: std::time::Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answer 503 to every request (or accept again).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The bodies accepted so far.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards TCP connections from a local port to `target` until cut.
pub struct TcpProxy {
    /// The local address to connect to.
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
    fault: Arc<AnswerFault>,
}

/// A one-shot fault: the first connection that sends bytes containing `needle` is closed
/// when the server's answer arrives, and the answer is dropped. And a blackhole: while `holed`,
/// bytes in either direction are dropped and new connections reach nothing.
#[derive(Default)]
struct AnswerFault {
    needle: Mutex<Option<Vec<u8>>>,
    fired: std::sync::atomic::AtomicUsize,
    holed: AtomicBool,
    /// Cut a doomed answer midway (forward half of its first bytes) rather than before it.
    midway: AtomicBool,
    /// Close every new connection at once.
    refusing: AtomicBool,
}

impl AnswerFault {
    /// Whether `chunk` is the armed request (disarms it).
    fn matches(&self, chunk: &[u8]) -> bool {
        let mut needle = self.needle.lock().unwrap();
        let hit = needle
            .as_deref()
            .is_some_and(|n| chunk.windows(n.len()).any(|w| w == n));
        if hit {
            *needle = None;
        }
        hit
    }
}

/// Copies both ways until either side closes; a connection that sent the armed request is
/// closed, its answer unforwarded, as soon as the answer starts to arrive.
async fn forward(inbound: TcpStream, outbound: TcpStream, fault: Arc<AnswerFault>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let doomed = AtomicBool::new(false);
    let (mut client_in, mut client_out) = inbound.into_split();
    let (mut server_in, mut server_out) = outbound.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_in.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if fault.holed.load(Ordering::SeqCst) {
                continue;
            }
            if fault.matches(&buf[..n]) {
                doomed.store(true, Ordering::SeqCst);
            }
            if server_out.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match server_in.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if fault.holed.load(Ordering::SeqCst) {
                continue;
            }
            if doomed.load(Ordering::SeqCst) {
                fault.fired.fetch_add(1, Ordering::SeqCst);
                if fault.midway.load(Ordering::SeqCst) {
                    let _ = client_out.write_all(&buf[..n.div_ceil(2)]).await;
                }
                return;
            }
            if client_out.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

impl TcpProxy {
    /// Starts forwarding to `target` (`host:port`).
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let fault: Arc<AnswerFault> = Arc::default();
        let accept = {
            let connections = Arc::clone(&connections);
            let fault = Arc::clone(&fault);
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let target = target.clone();
                    let fault = Arc::clone(&fault);
                    if fault.refusing.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if fault.holed.load(Ordering::SeqCst) {
                            // Accepted, and answered never.
                            let mut inbound = inbound;
                            let mut sink = [0u8; 4096];
                            use tokio::io::AsyncReadExt;
                            while matches!(inbound.read(&mut sink).await, Ok(n) if n > 0) {}
                            return;
                        }
                        if let Ok(outbound) = TcpStream::connect(&target).await {
                            forward(inbound, outbound, fault).await;
                        }
                    });
                    connections.lock().unwrap().push(task);
                }
            })
        };
        Self {
            addr,
            connections,
            accept,
            fault,
        }
    }

    /// Arms a one-shot fault: the next request that contains `needle` reaches the server,
    /// whose answer is then dropped with the connection (PostgreSQL has run the statement;
    /// the client learns nothing of it).
    pub fn cut_after_answer_to(&self, needle: &[u8]) {
        *self.fault.needle.lock().unwrap() = Some(needle.to_vec());
    }

    /// As [`Self::cut_after_answer_to`], but half of the answer's first bytes reach the
    /// client before the connection closes: a cut in the middle of a message.
    pub fn cut_midway_through_answer_to(&self, needle: &[u8]) {
        self.fault.midway.store(true, Ordering::SeqCst);
        self.cut_after_answer_to(needle);
    }

    /// While `refusing`, every new connection is closed as soon as it is accepted (a cut on
    /// connect).
    pub fn refuse_connections(&self, refusing: bool) {
        self.fault.refusing.store(refusing, Ordering::SeqCst);
    }

    /// Closes every open connection, and keeps accepting new ones.
    pub fn drop_connections(&self) {
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// From now on every byte is dropped, both ways, and new connections reach nothing: the
    /// database looks like a host that stopped answering (no reset, no error).
    pub fn blackhole(&self) {
        self.fault.holed.store(true, Ordering::SeqCst);
    }

    /// Ends the blackhole for connections opened from now on (those that lost bytes stay
    /// broken, as after a real outage).
    pub fn restore(&self) {
        self.fault.holed.store(false, Ordering::SeqCst);
    }

    /// How many answers the armed faults dropped.
    pub fn answers_dropped(&self) -> usize {
        self.fault.fired.load(Ordering::SeqCst)
    }

    /// Stops accepting and drops every open connection: the target becomes unreachable.
    pub fn cut(&self) {
        self.accept.abort();
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
    }
}
