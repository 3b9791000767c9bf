//! The Vonage SMS API as an SMS sender: a form-encoded `POST /sms/json` with the API key and
//! secret, the sender (`from`), the number without its `+`, the SMS's text (`type=unicode`
//! when it needs UCS-2), the code's remaining life as `ttl`, and a delivery receipt callback
//! if configured.
//!
//! Vonage answers `200` whatever happened and says it in each message's `status`, as its
//! reference lists them: `0` is a hand-over. `1` (throttled), `5` (internal error) and an HTTP
//! 5xx, a time-out or a connection error are temporary; so are `4` (invalid credentials), `8`
//! (account barred) and `9` (out of credit), logged as errors: the account, not the message, is
//! at fault. Any other status (`3` invalid parameters, `6` invalid message, `7` number barred,
//! `15` invalid sender, `29` destination not allowed, …) is final, with the status in the
//! `delivery failed` reason and never Vonage's error text (it may quote the number).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use otp_sms_core::message::{Encoding, MessageTemplates};
use otp_sms_core::{PortError, Sms, SmsSender};
use zeroize::Zeroizing;

/// The API's default address.
pub const VONAGE_API: &str = "https://rest.nexmo.com";

/// What a Vonage sender needs. `Debug` never shows the secret.
#[derive(Clone)]
pub struct VonageOptions {
    /// The API key.
    pub api_key: String,
    /// The API secret.
    pub api_secret: Zeroizing<String>,
    /// The sender: a number or an alphanumeric id.
    pub from: String,
    /// Where Vonage posts delivery receipts, if anywhere.
    pub callback: Option<String>,
    /// The API's address: [`VONAGE_API`], or a stand-in on a loopback or private address.
    pub base_url: String,
    /// Bound of one request.
    pub timeout: Duration,
    /// The SMS's text.
    pub templates: Arc<MessageTemplates>,
}

impl fmt::Debug for VonageOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VonageOptions")
            .field("api_key", &self.api_key)
            .field("api_secret", &"<redacted>")
            .field("from", &self.from)
            .field("callback", &self.callback)
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Sends each SMS through Vonage (see the module's documentation).
#[derive(Debug, Clone)]
pub struct VonageSender {
    client: reqwest::Client,
    url: reqwest::Url,
    options: VonageOptions,
}

impl VonageSender {
    /// A sender for `options`; an unusable address or empty credentials are refused.
    pub fn new(options: VonageOptions) -> Result<Self, String> {
        if options.api_key.trim().is_empty() || options.api_secret.trim().is_empty() {
            return Err("[sms.vonage] api_key and the API secret must not be empty".into());
        }
        let (client, url) = crate::sms::provider_client(
            "sms.vonage",
            &options.base_url,
            "/sms/json",
            options.timeout,
        )?;
        Ok(Self {
            client,
            url,
            options,
        })
    }
}

/// The answer's body: one entry per SMS part.
#[derive(serde::Deserialize)]
struct VonageAnswer {
    messages: Vec<VonageMessage>,
}

#[derive(serde::Deserialize)]
struct VonageMessage {
    status: String,
}

#[async_trait]
impl SmsSender for VonageSender {
    async fn send(&self, sms: &Sms) -> Result<(), PortError> {
        let text = crate::sms::render(&self.options.templates, sms);
        let now = chrono::Utc::now();
        let left = (sms.deadline - now).to_std().unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return Err(PortError::Unavailable("the send's deadline passed".into()));
        }
        // Vonage's `ttl` is in milliseconds, 20,000 at the least.
        let ttl = (sms.expires_at - now).num_milliseconds().max(20_000);
        let mut form: Vec<(&str, String)> = vec![
            ("api_key", self.options.api_key.clone()),
            ("api_secret", self.options.api_secret.to_string()),
            ("from", self.options.from.clone()),
            ("to", sms.phone.as_e164().trim_start_matches('+').to_owned()),
            ("text", text.body),
            ("ttl", ttl.to_string()),
            (
                "type",
                match text.encoding {
                    Encoding::Gsm7 => "text",
                    Encoding::Ucs2 => "unicode",
                }
                .to_owned(),
            ),
        ];
        if let Some(callback) = &self.options.callback {
            form.push(("callback", callback.clone()));
        }
        let response = self
            .client
            .post(self.url.clone())
            .form(&form)
            .timeout(left.min(self.options.timeout))
            .send()
            .await
            .map_err(|e| {
                PortError::Unavailable(format!("Vonage unreachable: {}", e.without_url()))
            })?;
        let http = response.status();
        if !http.is_success() {
            let reason = format!("Vonage answered HTTP {}", http.as_u16());
            return if http.is_server_error() || http == reqwest::StatusCode::TOO_MANY_REQUESTS {
                Err(PortError::Unavailable(reason))
            } else {
                Err(PortError::Internal(reason))
            };
        }
        let answer: VonageAnswer = response
            .json()
            .await
            .map_err(|e| PortError::Unavailable(format!("Vonage answer unreadable: {e}")))?;
        // The first part that failed decides; all "0" is a hand-over.
        let Some(status) = answer
            .messages
            .iter()
            .map(|m| m.status.as_str())
            .find(|s| *s != "0")
        else {
            return if answer.messages.is_empty() {
                Err(PortError::Unavailable("Vonage answered no message".into()))
            } else {
                Ok(())
            };
        };
        let reason = format!("Vonage status {status}");
        match status {
            "1" | "5" => {
                tracing::warn!(%reason, registration = %sms.registration, "Vonage send failed; it will be retried");
                Err(PortError::Unavailable(reason))
            }
            "4" | "8" | "9" => {
                tracing::error!(%reason, "Vonage refused the account (credentials, suspension or credit); messages wait until it is fixed");
                Err(PortError::Unavailable(reason))
            }
            _ => {
                tracing::warn!(%reason, registration = %sms.registration, "Vonage refused the message");
                Err(PortError::Internal(reason))
            }
        }
    }
}
