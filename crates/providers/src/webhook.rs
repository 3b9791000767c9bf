//! The webhook sender: each SMS posted as JSON to a URL of the host's, signed as Standard
//! Webhooks (<https://www.standardwebhooks.com/>) specifies.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use otp_sms_core::message::MessageTemplates;
use otp_sms_core::{PortError, Sms, SmsSender};
use serde::Serialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::client::{check_webhook_url, redacted, redacted_webhook_url};
use crate::text::render;

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
    /// The text to send as it is (`[sms.text]`), in the user's language.
    text: &'a str,
    /// The user's language, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    locale: Option<&'a str>,
}

/// The secret a webhook's calls are signed with: Standard Webhooks' `whsec_` followed by the
/// base64 of 24 to 64 random bytes. `Debug` never shows it, and it is wiped on drop.
///
/// ```
/// use otp_sms_providers::webhook::WebhookSecret;
/// let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
/// assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
/// assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
/// ```
#[derive(Clone)]
pub struct WebhookSecret(Zeroizing<Vec<u8>>);

impl WebhookSecret {
    /// Reads `whsec_<base64>`; the error never contains the text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .trim()
            .strip_prefix("whsec_")
            .ok_or("a webhook secret starts with `whsec_`")?;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| "a webhook secret is `whsec_` and base64")?,
        );
        if !(24..=64).contains(&bytes.len()) {
            return Err("a webhook secret holds 24 to 64 bytes (32 recommended: `whsec_` and `openssl rand -base64 32`)".into());
        }
        Ok(Self(bytes))
    }

    /// `v1,<base64 HMAC-SHA-256 of "{id}.{timestamp}.{body}">`, the `webhook-signature` value.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag)
        )
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// POSTs each SMS as JSON to a URL, signed as Standard Webhooks specifies (`webhook-id`: the
/// outbox message id, the same on every attempt; `webhook-timestamp`; `webhook-signature`),
/// with the message id also as `Idempotency-Key`, so the receiver can drop a repeat. The URL
/// must be https unless plain http to a loopback or private address is allowed; redirects are
/// never followed (a 3xx is a refusal). A 2xx answer is a hand-over; a 5xx answer, a time-out
/// or a connection error is retried with doubling back-off, never past the send's deadline; a
/// 3xx or 4xx answer is final (the notifier records `delivery failed`). A send that still
/// fails is tried again by the notifier after its back-off. `Debug` shows neither the secret
/// nor the URL's credentials.
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: WebhookSecret,
    retries: u32,
    timeout: Duration,
    templates: Arc<MessageTemplates>,
}

impl fmt::Debug for WebhookSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSender")
            .field("url", &redacted(&self.url))
            .field("secret", &self.secret)
            .field("retries", &self.retries)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What a webhook sender needs. `Debug` shows the URL without its credentials or query, and
/// never the secret. Built with [`WebhookOptions::new`] and its `with_` methods.
#[derive(Clone)]
#[non_exhaustive]
pub struct WebhookOptions {
    /// Where to post.
    pub url: String,
    /// The signing secret.
    pub secret: WebhookSecret,
    /// Plain http to a loopback or private address is allowed.
    pub allow_http: bool,
    /// Bound of one attempt.
    pub timeout: Duration,
    /// Extra attempts after a failed one.
    pub retries: u32,
    /// The text of the SMS, sent along with the code.
    pub templates: Arc<MessageTemplates>,
}

impl WebhookOptions {
    /// Posts to `url` (https), signed with `secret`, each attempt bounded by 5 seconds, with 2
    /// more attempts after a failed one.
    pub fn new(
        url: impl Into<String>,
        secret: WebhookSecret,
        templates: Arc<MessageTemplates>,
    ) -> Self {
        Self {
            url: url.into(),
            secret,
            allow_http: false,
            timeout: Duration::from_secs(5),
            retries: 2,
            templates,
        }
    }

    /// Allows plain http to a loopback or private address.
    pub fn with_plain_http_to_private_addresses(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Bounds each attempt by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Makes `retries` more attempts after a failed one.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
}

impl std::fmt::Debug for WebhookOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookOptions")
            .field("url", &redacted_webhook_url(&self.url))
            .field("secret", &"<redacted>")
            .field("allow_http", &self.allow_http)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

impl WebhookSender {
    /// A sender for `options`; an unusable URL is refused with a reason that shows no
    /// credential.
    pub fn new(options: WebhookOptions) -> Result<Self, String> {
        let url = reqwest::Url::parse(&options.url)
            .map_err(|e| format!("[sms] webhook_url is not a URL: {e}"))?;
        check_webhook_url(&url, options.allow_http)
            .map_err(|e| format!("[sms] webhook_url {}: {e}", redacted(&url)))?;
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        Ok(Self {
            client,
            url,
            secret: options.secret,
            retries: options.retries,
            timeout: options.timeout,
            templates: options.templates,
        })
    }
}

#[async_trait]
impl SmsSender for WebhookSender {
    async fn send(&self, sms: &Sms) -> Result<(), PortError> {
        let text = render(&self.templates, sms);
        let body = WebhookBody {
            message_id: sms.message_id.to_string(),
            instance: sms.instance.as_str(),
            otp_sms_id: sms.registration.as_str(),
            phone: sms.phone.as_e164(),
            code: sms.code.expose(),
            expires_at: sms.expires_at.to_rfc3339(),
            text: &text.body,
            locale: sms.locale.as_deref(),
        };
        let body = serde_json::to_vec(&body).map_err(|e| PortError::Internal(e.to_string()))?;
        let id = sms.message_id.to_string();
        let mut backoff = Duration::from_millis(100);
        let mut last_error = String::new();
        let key = format!("\"{id}\"");
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
            // Signed per attempt: the timestamp is when this attempt was sent.
            let timestamp = chrono::Utc::now().timestamp();
            let post = self
                .client
                .post(self.url.clone())
                .header("Idempotency-Key", &key)
                .header("webhook-id", &id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", self.secret.sign(&id, timestamp, &body))
                .header("content-type", "application/json")
                .body(body.clone())
                .timeout(left.min(self.timeout));
            match post.send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) if r.status().is_client_error() || r.status().is_redirection() => {
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

    /// Every attempt's time-out and the waits between them (100 ms, doubling).
    fn max_send_time(&self) -> Option<Duration> {
        let waits = Duration::from_millis(100) * ((1u32 << self.retries.min(16)) - 1);
        Some(self.timeout * (self.retries + 1) + waits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_standard_webhooks_example_does() {
        // The example of the Standard Webhooks specification.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            secret.sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_bad_secret_is_refused_without_showing_it() {
        for bad in [
            "",
            "whsec_",
            "whsec_!!!!",
            "whsec_c2hvcnQ=",
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ] {
            let error = WebhookSecret::parse(bad).unwrap_err();
            assert!(bad.len() < 8 || !error.contains(&bad[6..]), "{error}");
        }
    }

    fn options(url: &str, allow_http: bool) -> WebhookOptions {
        WebhookOptions {
            url: url.into(),
            secret: WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            allow_http,
            timeout: Duration::from_secs(1),
            retries: 0,
            templates: Arc::new(MessageTemplates::new("test")),
        }
    }

    #[test]
    fn debug_shows_neither_the_urls_credentials_nor_its_query_nor_the_secret() {
        let shown = format!(
            "{:?}",
            options(
                "https://gw:gw-pa55@sms.example.com/send?api_key=query-k3y",
                false
            )
        );
        for secret in ["gw-pa55", "query-k3y", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("sms.example.com"), "{shown}");
    }

    #[test]
    fn plain_http_only_to_a_loopback_or_private_address_when_allowed() {
        assert!(WebhookSender::new(options("https://sms.example.com/send", false)).is_ok());
        for url in [
            "http://127.0.0.1:9/sms",
            "http://10.1.2.3/sms",
            "http://[::1]:9/sms",
        ] {
            assert!(WebhookSender::new(options(url, false)).is_err(), "{url}");
            assert!(WebhookSender::new(options(url, true)).is_ok(), "{url}");
        }
        for url in [
            "http://sms.example.com/send",
            "http://8.8.8.8/send",
            "ftp://10.1.2.3/x",
            "not a url",
        ] {
            assert!(WebhookSender::new(options(url, true)).is_err(), "{url}");
        }
    }

    /// A receiver that redirects: the sender follows no redirect and takes the 3xx as a final
    /// refusal (a redirect could send the code anywhere).
    #[tokio::test]
    async fn a_redirect_is_a_refusal_and_is_not_followed() {
        use axum::routing::post;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let followed = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .route(
                "/sms",
                post(|| async {
                    (
                        axum::http::StatusCode::TEMPORARY_REDIRECT,
                        [("location", "/elsewhere")],
                    )
                }),
            )
            .route("/elsewhere", {
                let followed = Arc::clone(&followed);
                post(move || async move {
                    followed.fetch_add(1, Ordering::SeqCst);
                    "taken"
                })
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/sms", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sender = WebhookSender::new(options(&url, true)).unwrap();
        let now = chrono::Utc::now();
        let sms = Sms {
            instance: otp_sms_core::InstanceId::parse("instance", "i").unwrap(),
            registration: otp_sms_core::RegistrationId::parse("otp_sms_id", "r").unwrap(),
            number: 1,
            phone: otp_sms_core::Phone::parse("+41791234567").unwrap(),
            code: otp_sms_core::VerificationCode::from_input("24682468").unwrap(),
            expires_at: now + chrono::Duration::minutes(5),
            message_id: uuid::Uuid::now_v7(),
            deadline: now + chrono::Duration::seconds(5),
            locale: None,
            purpose: otp_sms_core::message::Purpose::Registration,
        };
        let outcome = sender.send(&sms).await;
        assert!(
            matches!(outcome, Err(PortError::Internal(_))),
            "{outcome:?}"
        );
        assert_eq!(followed.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn debug_shows_neither_the_secret_nor_the_credentials_of_the_url() {
        let sender = WebhookSender::new(options(
            "https://user:hunter2-password@sms.example.com/send?api_key=k3y-in-query",
            false,
        ))
        .unwrap();
        let shown = format!("{sender:?}");
        for secret in ["hunter2-password", "k3y-in-query", "MfKQ9r8G", "user:"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("sms.example.com"), "{shown}");
    }
}
