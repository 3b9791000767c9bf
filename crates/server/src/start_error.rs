//! Why the server could not start: each cause a message that names its fix.

use std::net::SocketAddr;

use crate::config;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A configuration problem.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// No usable code keys.
    #[error("code keys: {0}")]
    Keys(String),
    /// The store could not be opened or migrated.
    #[error("event store: {0}")]
    Store(#[from] otp_sms_core::StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// The TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// Development mode together with a production setting.
    #[error("--dev (OTP_SMS_DEV) is for a laptop and refuses a production setting: {0}; unset OTP_SMS_DEV or drop the setting")]
    Dev(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}
