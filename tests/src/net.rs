//! Network helpers for end-to-end tests: a webhook receiver and a TCP proxy that can be cut.
//! Both listen on 127.0.0.1 only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// An HTTP endpoint that records the JSON bodies POSTed to `/sms`, and can be told to fail.
pub struct WebhookReceiver {
    /// `http://127.0.0.1:PORT/sms`.
    pub url: String,
    received: Arc<Mutex<Vec<serde_json::Value>>>,
    failing: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts on a free port.
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(false));
        let app = {
            let received = Arc::clone(&received);
            let failing = Arc::clone(&failing);
            Router::new().route(
                "/sms",
                post(move |Json(body): Json<serde_json::Value>| {
                    let received = Arc::clone(&received);
                    let failing = Arc::clone(&failing);
                    async move {
                        if failing.load(Ordering::SeqCst) {
                            return StatusCode::SERVICE_UNAVAILABLE;
                        }
                        received.lock().unwrap().push(body);
                        StatusCode::OK
                    }
                }),
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
            task,
        }
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
}

impl TcpProxy {
    /// Starts forwarding to `target` (`host:port`).
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let connections = Arc::clone(&connections);
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let target = target.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
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
        }
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
