//! SMS providers for otp-sms, as a library a host can use without the server: each is an
//! [`SmsSender`](otp_sms_core::SmsSender) the notifier hands its messages to.
//!
//! - [`webhook::WebhookSender`]: posts each SMS as JSON to a URL of the host's, signed as
//!   Standard Webhooks specifies;
//! - [`twilio::TwilioSender`] (feature `twilio`) and [`vonage::VonageSender`] (feature
//!   `vonage`): the providers' own APIs, with their delivery-report endpoints as axum routers
//!   ([`twilio::status_routes`], [`vonage::receipt_routes`]) a host mounts where the provider
//!   can reach them;
//! - [`routing::RoutingSender`]: an ordered provider list per destination country, with a
//!   circuit breaker per provider, failing over on a temporary failure;
//! - [`print::PrintSender`]: prints each SMS, for development.
//!
//! Every sender renders its text with the host's [`MessageTemplates`](otp_sms_core::message::MessageTemplates)
//! and says how long one send may take ([`SmsSender::max_send_time`](otp_sms_core::SmsSender::max_send_time)),
//! so that the notifier leases a message for the whole send.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use otp_sms_core::message::MessageTemplates;
//! use otp_sms_providers::twilio::{TwilioFrom, TwilioOptions, TwilioSender};
//!
//! let templates = Arc::new(MessageTemplates::new("Acme"));
//! let options = TwilioOptions::new(
//!     "AC0123456789abcdef0123456789abcdef",
//!     "the account's auth token",
//!     TwilioFrom::Number("+15005550006".into()),
//!     templates,
//! )
//! .with_status_callback("https://id.example.com/sms/status/twilio")
//! .with_timeout(Duration::from_secs(3));
//! let sender = TwilioSender::new(options).unwrap();
//! // spawn_notifier(service, Arc::new(sender), NotifierSettings::default()) hands it the codes;
//! // twilio::status_routes(StatusEndpoint::new(token, url, service)) takes Twilio's reports.
//! # let _ = sender;
//! ```

mod client;
pub mod print;
#[cfg(any(feature = "twilio", feature = "vonage"))]
pub mod report;
pub mod routing;
mod text;
#[cfg(feature = "twilio")]
pub mod twilio;
#[cfg(feature = "vonage")]
pub mod vonage;
pub mod webhook;

pub use client::redacted_webhook_url;
pub use text::render;
