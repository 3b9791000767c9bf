//! SMS senders: a development sender that prints, and an HTTP webhook sender.

use std::time::Duration;

use async_trait::async_trait;
use otp_sms_core::{PortError, Sms, SmsSender};
use serde::Serialize;

/// Prints each SMS on standard output. Development only: the printed code is the "SMS".
#[derive(Debug, Default)]
pub struct PrintSender;

#[async_trait]
impl SmsSender for PrintSender {
    async fn send(&self, sms: &Sms) -> Result<(), PortError> {
        println!(
            "[dev sms] to {}: your verification code is {} (otp_sms_id {}, valid until {})",
            sms.phone.as_e164(),
            sms.code.expose(),
            sms.registration,
            sms.expires_at.to_rfc3339()
        );
        Ok(())
    }
}

/// The JSON body the webhook receives.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookBody<'a> {
    instance: &'a str,
    otp_sms_id: &'a str,
    phone: &'a str,
    code: &'a str,
    expires_at: String,
}

/// POSTs each SMS as JSON to a URL. A 2xx answer is a hand-over; a 5xx answer, a time-out or a
/// connection error is retried with doubling back-off; a 4xx answer is not retried. A send that
/// still fails leaves the code in the outbox for the next pass.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    url: String,
    retries: u32,
}

impl WebhookSender {
    /// A sender posting to `url`, each attempt bounded by `timeout`.
    pub fn new(url: String, timeout: Duration, retries: u32) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self {
            client,
            url,
            retries,
        })
    }
}

#[async_trait]
impl SmsSender for WebhookSender {
    async fn send(&self, sms: &Sms) -> Result<(), PortError> {
        let body = WebhookBody {
            instance: sms.instance.as_str(),
            otp_sms_id: sms.registration.as_str(),
            phone: sms.phone.as_e164(),
            code: sms.code.expose(),
            expires_at: sms.expires_at.to_rfc3339(),
        };
        let mut backoff = Duration::from_millis(100);
        let mut last_error = String::new();
        for attempt in 0..=self.retries {
            if attempt > 0 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            match self.client.post(&self.url).json(&body).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) if r.status().is_client_error() => {
                    tracing::warn!(status = %r.status(), registration = %sms.registration, "SMS webhook refused the message");
                    return Err(PortError::Internal(format!(
                        "SMS webhook answered {}",
                        r.status()
                    )));
                }
                Ok(r) => last_error = format!("SMS webhook answered {}", r.status()),
                // The error text never contains the body, so never the code.
                Err(e) => last_error = format!("SMS webhook unreachable: {}", e.without_url()),
            }
            tracing::warn!(attempt, registration = %sms.registration, error = %last_error, "SMS webhook attempt failed");
        }
        Err(PortError::Unavailable(last_error))
    }
}
