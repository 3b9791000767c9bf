//! Serving what [`crate::assembly`] built: the router ([`app`]), its listeners (the API's, with
//! TLS if configured, and the metrics' own), until shutdown. What can be wrong here (trusted
//! proxies, CORS origins, TLS files) is checked by [`Serving::prepare`] before anything opens.

mod app;
mod client_address;
pub mod cors;
pub mod edge;
mod health;
pub mod listener;
pub mod protocol;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use tower_http::cors::CorsLayer;

use crate::assembly::Assembly;
use crate::config::{Config, MetricsListen};
use crate::{metrics, Args, StartError};

/// What serving needs besides the assembly, checked.
pub(crate) struct Serving {
    config: Config,
    listen: std::net::SocketAddr,
    metrics_at: MetricsListen,
    trusted: otp_sms_core::TrustedProxies,
    cors: Option<CorsLayer>,
    tls: Option<Arc<tls::ReloadingCert>>,
}

impl Serving {
    /// Checks the trusted proxies, the CORS origins and the TLS files.
    pub(crate) fn prepare(args: &Args, config: &Config) -> Result<Self, StartError> {
        let trusted = otp_sms_core::TrustedProxies::parse(&config.server.trusted_proxies)
            .map_err(|e| StartError::Other(format!("[server] {e}")))?;
        let cors = cors::layer(&config.server.cors_allowed_origins, args.dev)
            .map_err(StartError::Other)?;
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(
                tls::ReloadingCert::load(tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                })
                .map_err(StartError::Tls)?,
            ),
            (None, None) => None,
            _ => {
                return Err(StartError::Tls(
                    "--tls-cert and --tls-key go together".into(),
                ))
            }
        };
        Ok(Self {
            config: config.clone(),
            listen: args.listen,
            metrics_at: args.metrics_listen.unwrap_or(config.server.metrics_listen),
            trusted,
            cors,
            tls,
        })
    }

    /// Serves `assembly` until `shutdown` completes: the metrics recorder and the conversion
    /// signal started, the router built, the API's listener (and the metrics' own) bound,
    /// connections drained at the end.
    pub(crate) async fn serve(
        self,
        assembly: &Assembly,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let server = &self.config.server;
        let handle = metrics::install().map_err(StartError::Other)?;
        let upkeep = metrics::spawn_upkeep(handle.clone());
        let conversion = Arc::new(tokio::sync::Mutex::new(
            otp_sms_core::conversion::Conversion::new(metrics::CONVERSION_WINDOW),
        ));
        let conversion_task = metrics::spawn_conversion(
            Arc::clone(&assembly.store),
            Arc::clone(&conversion),
            assembly.range_signal.clone(),
        );
        let exposition = metrics::Exposition {
            handle,
            service: assembly.service.clone(),
            store: Arc::clone(&assembly.store),
            conversion,
        };
        let routes = app::Routes::new(assembly, &self.config, exposition)?;
        let metrics_routes = routes.metrics.clone();
        let app = routes.app(
            assembly,
            &self.config,
            self.metrics_at == MetricsListen::Api,
            self.trusted.clone(),
            self.cors,
        );

        let tls = match &self.tls {
            Some(cert) => Some(cert.server_config().map_err(StartError::Tls)?),
            None => None,
        };
        let tls_watch = self
            .tls
            .map(|cert| cert.watch(Duration::from_secs(server.tls_check_secs.max(1))));
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .map_err(|e| StartError::Listen(self.listen, e))?;
        let local = listener
            .local_addr()
            .map_err(|e| StartError::Listen(self.listen, e))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        // `/metrics` on a listener of its own: plain HTTP, the same connection limits, no TLS
        // (keep it on loopback or a private network).
        let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_server = match self.metrics_at {
            MetricsListen::At(at) => {
                let listener = tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|e| StartError::Listen(at, e))?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| StartError::Listen(at, e))?;
                tracing::info!("metrics on http://{bound}/metrics");
                let app = metrics_routes.layer(axum::middleware::from_fn(metrics::observe));
                Some(tokio::spawn(listener::serve(
                    listener,
                    app,
                    server.limits(),
                    self.trusted.clone(),
                    None,
                    async {
                        let _ = metrics_stopped.await;
                    },
                )))
            }
            MetricsListen::Api | MetricsListen::Off => None,
        };
        tracing::info!("listening on {scheme}://{local}");
        listener::serve(listener, app, server.limits(), self.trusted, tls, shutdown).await;
        let _ = metrics_stop.send(());
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        if let Some(watch) = tls_watch {
            watch.abort();
        }
        upkeep.abort();
        conversion_task.abort();
        Ok(())
    }
}
