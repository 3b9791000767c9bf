//! The listener: hyper's connection builder with the timers axum's `serve` leaves off, a cap
//! on open connections, and a graceful shutdown with a deadline.
//!
//! - A client must send a request's headers within `header_read_timeout` of starting them
//!   (hyper's HTTP/1 header-read timer): a connection that trickles a header line every few
//!   seconds (slowloris) is closed, not held.
//! - HTTP/2 connections are pinged every `http2_keep_alive` and closed when a ping goes
//!   unanswered for as long.
//! - At most `max_connections` are open at once; a connection beyond is closed as soon as it
//!   is accepted (shed, logged), so a flood cannot take the process's file descriptors.
//! - On shutdown the listener stops accepting, in-flight requests finish and idle connections
//!   close; whatever is still open `shutdown_timeout` later is dropped.
//! - With TLS, the handshake must end within `header_read_timeout` too, and ALPN picks HTTP/2
//!   or HTTP/1.1 (the automatic builder reads the connection's preface either way).

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
        let app = app.clone();
        let service = tower::service_fn(move |req: Request<Incoming>| {
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo(remote));
            tower::ServiceExt::oneshot(app.clone(), req)
        });
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let tls = tls.clone().map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            let outcome = match tls {
                None => serve_io(&builder, stream, service, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => serve_io(&builder, stream, service, watcher).await,
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(e) = outcome {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
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

/// Serves one connection, plain or TLS, under the graceful shutdown's watch.
async fn serve_io<I, S>(
    builder: &Builder<TokioExecutor>,
    io: I,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
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
