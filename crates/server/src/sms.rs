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
    /// The outbox message: the same on every attempt (also the `Idempotency-Key` header).
    message_id: String,
    instance: &'a str,
    otp_sms_id: &'a str,
    phone: &'a str,
    code: &'a str,
    expires_at: String,
}

/// POSTs each SMS as JSON to a URL, with the outbox message id as `Idempotency-Key` (the
/// same on every attempt, so the receiver can drop a repeat). A 2xx answer is a hand-over; a
/// 5xx answer, a time-out or a connection error is retried with doubling back-off, never past
/// the send's deadline; a 4xx answer is final (the notifier records `delivery failed`). A
/// send that still fails is tried again by the notifier after its back-off.
#[derive(Debug, Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    url: String,
    retries: u32,
    timeout: Duration,
}

impl WebhookSender {
    /// A sender posting to `url`, each attempt bounded by `timeout`.
    pub fn new(url: String, timeout: Duration, retries: u32) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self {
            client,
            url,
            retries,
            timeout,
        })
    }
}

#[async_trait]
impl SmsSender for WebhookSender {
    async fn send(&self, sms: &Sms) -> Result<(), PortError> {
        let body = WebhookBody {
            message_id: sms.message_id.to_string(),
            instance: sms.instance.as_str(),
            otp_sms_id: sms.registration.as_str(),
            phone: sms.phone.as_e164(),
            code: sms.code.expose(),
            expires_at: sms.expires_at.to_rfc3339(),
        };
        let mut backoff = Duration::from_millis(100);
        let mut last_error = String::new();
        let key = format!("\"{}\"", sms.message_id);
        for attempt in 0..=self.retries {
            let left = (sms.deadline - chrono::Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO);
            if attempt > 0 {
                if left <= backoff {
                    break;
                }
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            let left = (sms.deadline - chrono::Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO);
            if left.is_zero() {
                last_error = "the send's deadline passed".to_owned();
                break;
            }
            let post = self
                .client
                .post(&self.url)
                .header("Idempotency-Key", &key)
                .json(&body)
                .timeout(left.min(self.timeout));
            match post.send().await {
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
