//! The listener: hyper's connection builder with the timers axum's `serve` leaves off, a cap
//! on open connections, and a graceful shutdown with a deadline.
//!
//! - A connection must bring its first request's headers within `header_read_timeout` of
//!   being accepted (of its TLS handshake's end, with TLS): the automatic builder's protocol
//!   detection reads before hyper's header timer starts, so a socket that sends nothing, or
//!   one byte, is closed here rather than held. Later requests' headers are under hyper's
//!   HTTP/1 header-read timer: a connection that trickles a header line every few seconds
//!   (slowloris) is closed, not held.
//! - HTTP/2 connections are pinged every `http2_keep_alive` and closed when a ping goes
//!   unanswered for as long.
//! - At most `max_connections` are open at once, and at most `max_connections_per_address`
//!   from one peer address (a trusted proxy's connections are not capped per address: they
//!   carry many clients); a connection beyond either is closed as soon as it is accepted
//!   (shed, logged), so a flood cannot take the process's file descriptors, and one host
//!   cannot take all of them.
//! - On shutdown the listener stops accepting, in-flight requests finish and idle connections
//!   close; whatever is still open `shutdown_timeout` later is dropped.
//! - With TLS, the handshake must end within `header_read_timeout` too, and ALPN picks HTTP/2
//!   or HTTP/1.1 (the automatic builder reads the connection's preface either way).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What the listener allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send a request's headers.
    pub header_read_timeout: Duration,
    /// Connections open at once; more are closed on accept.
    pub max_connections: usize,
    /// Connections open at once from one peer address (trusted proxies excepted).
    pub max_connections_per_address: usize,
    /// HTTP/2 keep-alive ping interval (and how long a ping may go unanswered).
    pub http2_keep_alive: Duration,
    /// How long a shutdown waits for open connections.
    pub shutdown_timeout: Duration,
}

/// Serves `app` on `listener` (over TLS with `tls`) until `shutdown` completes, then shuts
/// down gracefully within [`Limits::shutdown_timeout`]. Each request carries
/// `ConnectInfo<SocketAddr>` of its peer. `app` is cloned per call; clones share its state (a
/// concurrency limit's semaphore, say).
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    limits: Limits,
    proxies: otp_sms_core::TrustedProxies,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<
            Request<axum::body::Body>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keep_alive)
        .keep_alive_timeout(limits.http2_keep_alive);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let per_address = PerAddress::new(limits.max_connections_per_address.max(1), proxies);
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%remote, max = limits.max_connections, "connection refused: too many open connections");
            drop(stream);
            continue;
        };
        let Some(held) = per_address.take(remote.ip()) else {
            tracing::warn!(%remote, max = limits.max_connections_per_address, "connection refused: too many open connections from this address");
            drop(stream);
            continue;
        };
        let app = app.clone();
        let started = Arc::new(AtomicBool::new(false));
        let first_request = Arc::clone(&started);
        let service = tower::service_fn(move |req: Request<Incoming>| {
            first_request.store(true, Ordering::Relaxed);
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo(remote));
            tower::ServiceExt::oneshot(app.clone(), req)
        });
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let tls = tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let first_within = limits.header_read_timeout;
        tokio::spawn(async move {
            let outcome = match tls {
                None => {
                    let connection = serve_io(&builder, stream, service, watcher);
                    first_request_within(first_within, &started, connection).await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            let connection = serve_io(&builder, stream, service, watcher);
                            first_request_within(first_within, &started, connection).await
                        }
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(e) = outcome {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
            drop(held);
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.shutdown_timeout) => {
            tracing::warn!(timeout = ?limits.shutdown_timeout, "connections still open at the shutdown deadline: dropping them");
        }
    }
}

type ConnectionOutcome = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Runs `connection` to its end, unless no request has begun `within` of its start: then it is
/// dropped (closed). The automatic builder reads the first bytes to tell HTTP/1 from HTTP/2
/// before hyper's header timer runs, so without this a silent socket is held for ever.
async fn first_request_within(
    within: Duration,
    started: &AtomicBool,
    connection: impl Future<Output = ConnectionOutcome>,
) -> ConnectionOutcome {
    tokio::pin!(connection);
    match tokio::time::timeout(within, &mut connection).await {
        Ok(outcome) => outcome,
        Err(_) if started.load(Ordering::Relaxed) => connection.await,
        Err(_) => Err("no request within the header read time-out".into()),
    }
}

/// Open connections per peer address, capped; trusted proxies are not counted.
#[derive(Clone)]
struct PerAddress {
    max: usize,
    proxies: Arc<otp_sms_core::TrustedProxies>,
    open: Arc<parking_lot::Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection counted against its address, released on drop.
struct AddressHeld {
    counts: Option<(PerAddress, IpAddr)>,
}

impl PerAddress {
    fn new(max: usize, proxies: otp_sms_core::TrustedProxies) -> Self {
        Self {
            max,
            proxies: Arc::new(proxies),
            open: Arc::default(),
        }
    }

    /// Counts a connection from `address`, or `None` when the address has `max` open.
    fn take(&self, address: IpAddr) -> Option<AddressHeld> {
        if self.proxies.contains(address) {
            return Some(AddressHeld { counts: None });
        }
        // An IPv4 peer seen through an IPv6 socket counts as its IPv4 address.
        let address = address.to_canonical();
        let mut open = self.open.lock();
        let count = open.entry(address).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressHeld {
            counts: Some((self.clone(), address)),
        })
    }
}

impl Drop for AddressHeld {
    fn drop(&mut self) {
        if let Some((per_address, address)) = self.counts.take() {
            let mut open = per_address.open.lock();
            if let Some(count) = open.get_mut(&address) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&address);
                }
            }
        }
    }
}

/// Serves one connection, plain or TLS, under the graceful shutdown's watch.
async fn serve_io<I, S>(
    builder: &Builder<TokioExecutor>,
    io: I,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
) -> ConnectionOutcome
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            Request<Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection =
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    watcher.watch(connection.into_owned()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_address_holds_at_most_its_cap_and_gets_slots_back_as_connections_close() {
        let proxies = otp_sms_core::TrustedProxies::parse(&["127.0.0.2/32"]).unwrap();
        let per_address = PerAddress::new(2, proxies);
        let first = per_address.take(ip("192.0.2.1")).expect("first");
        let _second = per_address
            .take(ip("::ffff:192.0.2.1"))
            .expect("second, same host");
        assert!(per_address.take(ip("192.0.2.1")).is_none(), "a third");
        assert!(per_address.take(ip("192.0.2.2")).is_some(), "another host");
        drop(first);
        assert!(per_address.take(ip("192.0.2.1")).is_some(), "a slot back");
        let proxy: Vec<_> = (0..10)
            .map(|_| per_address.take(ip("127.0.0.2")).expect("a trusted proxy"))
            .collect();
        assert_eq!(proxy.len(), 10);
        drop(proxy);
        assert!(
            !per_address.open.lock().contains_key(&ip("127.0.0.2")),
            "a proxy is not counted"
        );
    }

    #[tokio::test]
    async fn a_connection_without_a_request_is_dropped_at_the_deadline() {
        let started = AtomicBool::new(false);
        let outcome = first_request_within(
            Duration::from_millis(20),
            &started,
            std::future::pending::<ConnectionOutcome>(),
        )
        .await;
        assert!(outcome.is_err(), "closed");

        started.store(true, Ordering::Relaxed);
        let outcome = first_request_within(Duration::from_millis(20), &started, async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            Ok(())
        })
        .await;
        assert!(outcome.is_ok(), "a connection that began a request runs on");
    }
}
