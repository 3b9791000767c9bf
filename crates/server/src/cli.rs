//! The binary's entry: parse the command line, read the configuration, set up logging, run
//! until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::{telemetry, Args};

/// Parses the command line, sets up logging (and trace export, if configured) and runs until
/// SIGTERM or Ctrl-C.
pub fn cli_main() -> ExitCode {
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The file is read once, here: its `[tracing]` table sets up the subscriber before
    // anything else logs, and the same configuration then runs the server.
    let config = match crate::load_config(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("otp-sms-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry =
        match runtime.block_on(async { telemetry::init(args.log_format, &config.tracing) }) {
            Ok(telemetry) => telemetry,
            Err(e) => {
                eprintln!("otp-sms-server: {e}");
                return ExitCode::FAILURE;
            }
        };
    if matches.value_source("keys") == Some(clap::parser::ValueSource::CommandLine) {
        tracing::warn!("--keys on the command line shows the keys in the process list to every user of this machine; use --key-file or OTP_SMS_KEYS");
    }
    let outcome = runtime.block_on(crate::run_with(args, config, shutdown_signal()));
    runtime.block_on(async { telemetry.shutdown() });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("otp-sms-server: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
