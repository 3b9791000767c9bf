//! The command line: every flag can also come from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::config;
use crate::StartError;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The command line; every flag can also come from the environment. `Debug` shows neither the
/// database URL's password nor the keys, and `--help` shows no value taken from the
/// environment (a database URL there carries its password).
#[derive(Clone, Parser)]
#[command(
    name = "otp-sms-server",
    version,
    about = "OTP SMS registration server (ZITADEL v3alpha API)"
)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(
        long,
        env = "OTP_SMS_LISTEN",
        hide_env_values = true,
        default_value = "127.0.0.1:8080"
    )]
    pub listen: SocketAddr,
    /// Where data lives: a PostgreSQL URL (`postgres://…`) or a SQLite file
    /// (`sqlite:///path/to/file.db`, created with its directory if missing); migrations run at
    /// start. Without it, data lives only in memory.
    #[arg(long, env = "OTP_SMS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Schema for the PostgreSQL tables.
    #[arg(
        long,
        env = "OTP_SMS_DATABASE_SCHEMA",
        hide_env_values = true,
        default_value = "otp_sms"
    )]
    pub schema: String,
    /// TOML configuration: instances, organizations, users, tokens, policy, SMS, notifier.
    #[arg(long, env = "OTP_SMS_CONFIG", hide_env_values = true)]
    pub config: Option<PathBuf>,
    /// File with the code keys, one `KEY_ID HEX64` per line; the first is current.
    #[arg(long, env = "OTP_SMS_KEY_FILE", hide_env_values = true)]
    pub key_file: Option<PathBuf>,
    /// The code keys inline, `KEY_ID:HEX64[,KEY_ID:HEX64…]`; the first is current.
    #[arg(long, env = "OTP_SMS_KEYS", hide_env_values = true)]
    pub keys: Option<String>,
    /// Development mode: a generated key if none is given, the built-in development
    /// configuration if no --config is given, and the printing SMS sender allowed.
    #[arg(long, env = "OTP_SMS_DEV", hide_env_values = true)]
    pub dev: bool,
    /// Log format.
    #[arg(
        long,
        env = "OTP_SMS_LOG_FORMAT",
        hide_env_values = true,
        value_enum,
        default_value = "human"
    )]
    pub log_format: LogFormat,
    /// TLS certificate chain (PEM, leaf first); with --tls-key the server speaks only TLS.
    /// Read again on SIGHUP and when the file changes.
    #[arg(
        long,
        env = "OTP_SMS_TLS_CERT",
        hide_env_values = true,
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(
        long,
        env = "OTP_SMS_TLS_KEY",
        hide_env_values = true,
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Where `/metrics` is served, over `[server] metrics_listen`: an address and port of its
    /// own, `api` (the API's port) or `off`.
    #[arg(long, env = "OTP_SMS_METRICS_LISTEN", hide_env_values = true)]
    pub metrics_listen: Option<config::MetricsListen>,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("listen", &self.listen)
            .field(
                "database_url",
                &self.database_url.as_deref().map(redacted_url),
            )
            .field("schema", &self.schema)
            .field("config", &self.config)
            .field("key_file", &self.key_file)
            .field("keys", &self.keys.as_ref().map(|_| "<redacted>"))
            .field("dev", &self.dev)
            .field("log_format", &self.log_format)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("metrics_listen", &self.metrics_listen)
            .finish()
    }
}

/// A database URL with its password (and any `password=` parameter) replaced, for logs.
pub fn redacted_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    format!("{}{user}:<redacted>{}", &base[..scheme + 3], &base[at..])
                }
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    match query {
        None => base,
        Some(query) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=<redacted>"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
    }
}

impl Args {
    /// Development mode is for a laptop: it refuses to listen beyond loopback and refuses
    /// anything that makes it a production server (a database, a configuration file), so a
    /// stray `OTP_SMS_DEV` cannot turn a production deployment into one with public tokens
    /// and a printing SMS sender.
    pub fn check_mode(&self) -> Result<(), StartError> {
        if !self.dev {
            return Ok(());
        }
        let refused = if !self.listen.ip().is_loopback() {
            Some(format!(
                "--listen {} is not a loopback address",
                self.listen
            ))
        } else if self.database_url.is_some() {
            Some("--database-url (OTP_SMS_DATABASE_URL) is set".to_owned())
        } else if self.config.is_some() {
            Some("--config (OTP_SMS_CONFIG) is set".to_owned())
        } else {
            None
        };
        match refused {
            Some(why) => Err(StartError::Dev(why)),
            None => Ok(()),
        }
    }
}
