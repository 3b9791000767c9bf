//! # otp-sms-server
//!
//! Runs the otp-sms API (HTTP/JSON, gRPC and gRPC-web on one port) with the SMS notifier, on PostgreSQL
//! (`--database-url`) or, by default, on the in-memory store. `otp-sms-server --help` lists
//! the flags; `docs/operations.md` explains them.
//!
//! The binary is `fn main() { otp_sms_server::cli_main() }`; hosts that want the same server
//! inside their own process call [`run`].

use std::future::Future;

pub mod config;
pub mod metrics;
pub mod telemetry;

mod args;
mod assembly;
mod cli;
mod keys;
mod serving;
mod start_error;

pub use args::{redacted_url, Args, LogFormat};
pub use cli::cli_main;
pub use keys::parse_keys;
pub use serving::{cors, edge, listener, protocol, tls};
pub use start_error::StartError;

use assembly::Assembly;
use config::Config;
use serving::Serving;

/// Reads the configuration `args` name ([`run`] does, and `cli_main` before logging starts):
/// `--config`, else (with `--dev`) the built-in development configuration.
pub fn load_config(args: &Args) -> Result<Config, StartError> {
    args.check_mode()?;
    match (&args.config, args.dev) {
        (Some(path), _) => Ok(Config::from_file(path)?),
        (None, true) => Ok(Config::development()),
        (None, false) => Err(StartError::Other(
            "no configuration: pass --config FILE (OTP_SMS_CONFIG), or --dev for the built-in development configuration".into(),
        )),
    }
}

/// Reads the configuration, builds everything from `args` and it, and serves until
/// `shutdown` completes.
pub async fn run(
    args: Args,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let config = load_config(&args)?;
    run_with(args, config, shutdown).await
}

/// [`run`] with the configuration already read.
pub async fn run_with(
    args: Args,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    args.check_mode()?;
    if args.dev && args.config.is_none() {
        tracing::warn!("DEVELOPMENT MODE: built-in configuration; tokens `dev-alice` and `dev-admin` are public");
    }
    // Trusted proxies, CORS and TLS files, checked before anything opens.
    let serving = Serving::prepare(&args, &config)?;
    // Directory, keys, store, budgets, idempotency, sender, service, notifier.
    let assembly = Assembly::build(&args, &config).await?;
    // Metrics, the router, the listeners: until `shutdown`.
    let served = serving.serve(&assembly, shutdown).await;
    assembly.stop().await;
    served?;
    tracing::info!("stopped");
    Ok(())
}
