//! Twilio Programmable Messaging as an SMS sender: a form-encoded
//! `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` with HTTP basic authentication (the
//! account's auth token, or an API key and its secret), from a number or a Messaging Service,
//! with the SMS's text, a validity period of the code's remaining life and, if configured, a
//! status callback.
//!
//! Answers, as Twilio documents them: `201 Created` is a hand-over. `429` (error 20429,
//! throttled), a 5xx, a time-out or a connection error is temporary: the notifier tries again
//! after its back-off. `401`/`403` (bad credentials) are temporary too, and logged as errors:
//! the message is not at fault, and an operator who fixes the credentials saves it. Any other
//! 4xx is final, with Twilio's error code in the `delivery failed` reason (21211 invalid
//! number, 21408 region not enabled, 21610 unsubscribed, 21614 not a mobile number, …): the
//! notifier does not retry it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::report::Report;
use async_trait::async_trait;
use otp_sms_core::message::MessageTemplates;
use otp_sms_core::{PortError, Sms, SmsSender};
use zeroize::Zeroizing;

/// The API's default address.
pub const TWILIO_API: &str = "https://api.twilio.com";

/// Who the messages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TwilioFrom {
    /// A Twilio number (E.164) or alphanumeric sender id: `From`.
    Number(String),
    /// A Messaging Service (`MG…`), which picks the number: `MessagingServiceSid`.
    MessagingService(String),
}

/// What a Twilio sender needs. `Debug` never shows the secret. Built with [`TwilioOptions::new`]
/// and its `with_` methods.
#[derive(Clone)]
#[non_exhaustive]
pub struct TwilioOptions {
    /// The account (`AC…`), in the path of every request.
    pub account_sid: String,
    /// The user of basic authentication: the account SID, or an API key SID (`SK…`).
    pub username: String,
    /// Its password: the auth token, or the API key's secret.
    pub secret: Zeroizing<String>,
    /// The sender.
    pub from: TwilioFrom,
    /// Where Twilio reports each message's status, if anywhere.
    pub status_callback: Option<String>,
    /// The API's address: [`TWILIO_API`], or a stand-in on a loopback or private address
    /// (plain http allowed there only) for tests.
    pub base_url: String,
    /// Bound of one request.
    pub timeout: Duration,
    /// The SMS's text.
    pub templates: Arc<MessageTemplates>,
}

impl TwilioOptions {
    /// Sends as `from` through account `account_sid`, authenticated by the account's auth
    /// token, to [`TWILIO_API`], with a 5-second bound per request and no status callback.
    pub fn new(
        account_sid: impl Into<String>,
        auth_token: impl Into<String>,
        from: TwilioFrom,
        templates: Arc<MessageTemplates>,
    ) -> Self {
        let account_sid = account_sid.into();
        Self {
            username: account_sid.clone(),
            account_sid,
            secret: Zeroizing::new(auth_token.into()),
            from,
            status_callback: None,
            base_url: TWILIO_API.to_owned(),
            timeout: Duration::from_secs(5),
            templates,
        }
    }

    /// Authenticates with an API key (`SK…`) and its secret instead of the auth token.
    pub fn with_api_key(mut self, key_sid: impl Into<String>, secret: impl Into<String>) -> Self {
        self.username = key_sid.into();
        self.secret = Zeroizing::new(secret.into());
        self
    }

    /// Asks Twilio to report each message's status to `url` (see [`status_routes`]).
    pub fn with_status_callback(mut self, url: impl Into<String>) -> Self {
        self.status_callback = Some(url.into());
        self
    }

    /// Calls `base_url` instead of [`TWILIO_API`]: a stand-in on a loopback or private address.
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into();
        self
    }

    /// Bounds each request by `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl fmt::Debug for TwilioOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioOptions")
            .field("account_sid", &self.account_sid)
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .field("from", &self.from)
            .field("status_callback", &self.status_callback)
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Sends each SMS through Twilio (see the module's documentation).
#[derive(Debug, Clone)]
pub struct TwilioSender {
    client: reqwest::Client,
    url: reqwest::Url,
    options: TwilioOptions,
}

impl TwilioSender {
    /// A sender for `options`; an unusable account SID or address is refused.
    pub fn new(options: TwilioOptions) -> Result<Self, String> {
        let sid_ok = options.account_sid.len() == 34
            && options.account_sid.starts_with("AC")
            && options.account_sid[2..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit());
        if !sid_ok {
            return Err("[sms.twilio] account_sid must be AC followed by 32 hex digits".into());
        }
        if options.secret.is_empty() {
            return Err("[sms.twilio] the auth token (or API key secret) is empty".into());
        }
        let (client, url) = crate::client::provider_client(
            "sms.twilio",
            &options.base_url,
            &format!("/2010-04-01/Accounts/{}/Messages.json", options.account_sid),
            options.timeout,
        )?;
        Ok(Self {
            client,
            url,
            options,
        })
    }

    /// Sends `request` with the account's credentials within `timeout`. The error text never
    /// contains the request, so never the code.
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<reqwest::Response, PortError> {
        request
            .basic_auth(&self.options.username, Some(&*self.options.secret))
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| PortError::Unavailable(format!("Twilio unreachable: {}", e.without_url())))
    }
}

/// How long after an SMS was handed to Twilio its status reports are taken: Twilio reports
/// within the message's validity period (4 hours by default, 10 hours at most); an older
/// report, however well signed, is a replay and is refused.
pub const REPORT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// The status callback URL of one SMS: the configured URL with the instance, registration,
/// code number and issue time (`iat`, Unix seconds) in its query. Twilio's signature covers
/// the URL, so the issue time cannot be changed, and a report replayed after
/// [`REPORT_MAX_AGE`] is refused.
pub fn status_callback_url(base: &str, sms: &Sms) -> String {
    let query = serde_urlencoded::to_string([
        ("instance", sms.instance.as_str()),
        ("otp_sms_id", sms.registration.as_str()),
        ("n", &sms.number.to_string()),
        ("iat", &chrono::Utc::now().timestamp().to_string()),
    ])
    .unwrap_or_default();
    with_query(base, &query)
}

/// `base` with `query` added to whatever query it has.
fn with_query(base: &str, query: &str) -> String {
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}{query}")
}

/// The `X-Twilio-Signature` of a request to `url` (as Twilio called it, query included) with
/// form `params`: base64 of HMAC-SHA1, keyed by the auth token, over the URL followed by each
/// parameter's name and value, sorted by name.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// What the status endpoint needs: the token Twilio signs with, the public URL it calls, and
/// the service to record reports with.
#[derive(Clone)]
#[non_exhaustive]
pub struct StatusEndpoint {
    /// The account's auth token.
    pub auth_token: Arc<Zeroizing<String>>,
    /// The configured `status_callback`, as Twilio calls it (before the per-SMS query).
    pub public_url: String,
    /// Where reports are recorded.
    pub service: otp_sms_core::CommandService,
}

impl StatusEndpoint {
    /// Checks reports against `auth_token` and the `public_url` Twilio calls, and records them
    /// with `service`.
    pub fn new(
        auth_token: impl Into<String>,
        public_url: impl Into<String>,
        service: otp_sms_core::CommandService,
    ) -> Self {
        Self {
            auth_token: Arc::new(Zeroizing::new(auth_token.into())),
            public_url: public_url.into(),
            service,
        }
    }
}

/// The route of [`status_callback`], `POST /sms/status/twilio`, for the server's router.
pub fn status_routes(endpoint: StatusEndpoint) -> axum::Router {
    axum::Router::new()
        .route("/sms/status/twilio", axum::routing::post(status_callback))
        .with_state(endpoint)
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::report::MAX_REPORT_BYTES,
        ))
}

/// `POST /sms/status/twilio`: Twilio's status callback. A request without a valid
/// `X-Twilio-Signature` is refused (403) and changes nothing; `delivered` records `code
/// delivered`, `undelivered` and `failed` record `delivery failed` with Twilio's error code;
/// other statuses (`queued`, `sent`, …) are acknowledged and ignored. A request without the
/// signature header is refused before its body is read; a body over
/// [`MAX_REPORT_BYTES`](crate::report::MAX_REPORT_BYTES) is refused (413) unparsed.
pub async fn status_callback(
    axum::extract::State(endpoint): axum::extract::State<StatusEndpoint>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    if !headers.contains_key("x-twilio-signature") {
        tracing::warn!("a Twilio status callback without a signature was refused");
        crate::report::count("twilio", "refused");
        return StatusCode::FORBIDDEN;
    }
    let Ok(body) = axum::body::to_bytes(body, crate::report::MAX_REPORT_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE;
    };
    let params: Vec<(String, String)> = match serde_urlencoded::from_bytes(&body) {
        Ok(params) => params,
        Err(_) => return StatusCode::BAD_REQUEST,
    };
    let url = match &query {
        Some(q) => with_query(&endpoint.public_url, q),
        None => endpoint.public_url.clone(),
    };
    let expected = signature(&endpoint.auth_token, &url, &params);
    let given = headers
        .get("x-twilio-signature")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), given)) {
        tracing::warn!("a Twilio status callback without a valid signature was refused");
        crate::report::count("twilio", "refused");
        return StatusCode::FORBIDDEN;
    }
    let query: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let get = |list: &[(String, String)], key: &str| {
        list.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    // The issue time the URL was signed with: a report older than REPORT_MAX_AGE (or from
    // the future, beyond a clock's drift) is a replay.
    let now = chrono::Utc::now().timestamp();
    let fresh = get(&query, "iat")
        .and_then(|t| t.parse::<i64>().ok())
        .is_some_and(|at| at <= now + 300 && now - at <= REPORT_MAX_AGE.as_secs() as i64);
    if !fresh {
        tracing::warn!("a Twilio status callback without a recent issue time was refused");
        crate::report::count("twilio", "refused");
        return StatusCode::FORBIDDEN;
    }
    let (Some(instance), Some(registration), Some(number)) = (
        get(&query, "instance").and_then(|i| i.parse::<otp_sms_core::InstanceId>().ok()),
        get(&query, "otp_sms_id").and_then(|r| r.parse::<otp_sms_core::RegistrationId>().ok()),
        get(&query, "n").and_then(|n| n.parse::<u32>().ok()),
    ) else {
        return StatusCode::BAD_REQUEST;
    };
    let (status, code) = (get(&params, "MessageStatus"), get(&params, "ErrorCode"));
    let report = match status.as_deref() {
        Some("delivered") => Report::Delivered,
        Some(status @ ("undelivered" | "failed")) => Report::Failed {
            status,
            code: code.as_deref(),
        },
        _ => Report::Interim,
    };
    crate::report::record_report(
        "twilio",
        &endpoint.service,
        &instance,
        &registration,
        number,
        report,
    )
    .await
}

/// A page of Twilio's message list: only the bodies are read.
#[derive(serde::Deserialize)]
struct TwilioMessageList {
    #[serde(default)]
    messages: Vec<TwilioListedMessage>,
}

#[derive(serde::Deserialize)]
struct TwilioListedMessage {
    body: Option<String>,
}

/// Twilio's error body (its `message` is not read: it may quote the number).
#[derive(serde::Deserialize)]
struct TwilioError {
    code: Option<u32>,
}

#[async_trait]
impl SmsSender for TwilioSender {
    async fn send(&self, sms: &Sms) -> Result<(), PortError> {
        let text = crate::text::render(&self.options.templates, sms);
        let now = chrono::Utc::now();
        let left = (sms.deadline - now).to_std().unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return Err(PortError::Unavailable("the send's deadline passed".into()));
        }
        // Twilio drops the message unsent once the code is dead: 1 to 14,400 seconds.
        let validity = (sms.expires_at - now).num_seconds().clamp(1, 14_400);
        let mut form: Vec<(&str, String)> = vec![
            ("To", sms.phone.as_e164().to_owned()),
            ("Body", text.body),
            ("ValidityPeriod", validity.to_string()),
        ];
        match &self.options.from {
            TwilioFrom::Number(number) => form.push(("From", number.clone())),
            TwilioFrom::MessagingService(sid) => form.push(("MessagingServiceSid", sid.clone())),
        }
        if let Some(callback) = &self.options.status_callback {
            // Which code the report is about travels in the URL, which Twilio signs.
            form.push(("StatusCallback", status_callback_url(callback, sms)));
        }
        let response = self
            .call(
                self.client.post(self.url.clone()).form(&form),
                left.min(self.options.timeout),
            )
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // Twilio's message often quotes the number: only the status and its error code are
        // kept (they end up in `delivery failed`, which holds no number).
        let code = response
            .json::<TwilioError>()
            .await
            .ok()
            .and_then(|e| e.code);
        let reason = format!(
            "Twilio answered {}{}",
            status.as_u16(),
            code.map(|c| format!(", error {c}")).unwrap_or_default()
        );
        let temporary = status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || code == Some(20429);
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            tracing::error!(%reason, "Twilio refused the credentials; messages wait until they are fixed");
            return Err(PortError::Unavailable(reason));
        }
        if temporary {
            tracing::warn!(%reason, registration = %sms.registration, "Twilio send failed; it will be retried");
            Err(PortError::Unavailable(reason))
        } else {
            tracing::warn!(%reason, registration = %sms.registration, "Twilio refused the message");
            Err(PortError::Internal(reason))
        }
    }

    /// One attempt (the notifier retries), and on a retry the look-up before it, each bounded
    /// by the configured time-out.
    fn max_send_time(&self) -> Option<Duration> {
        Some(self.options.timeout * 2)
    }

    /// Twilio lists the messages sent to a number, newest first: a message whose body is this
    /// SMS's text (it holds the code, so no other message has it) was taken by an earlier
    /// attempt. The newest 20 cover a code's lifetime under the number budgets. An account
    /// that redacts message bodies shows none: the answer is then "not held", and the message
    /// is sent again, as without the look-up.
    async fn was_sent(&self, sms: &Sms) -> Result<Option<bool>, PortError> {
        let text = crate::text::render(&self.options.templates, sms);
        let response = self
            .call(
                self.client
                    .get(self.url.clone())
                    .query(&[("To", sms.phone.as_e164()), ("PageSize", "20")]),
                self.options.timeout,
            )
            .await?;
        let status = response.status();
        if !status.is_success() {
            return Err(PortError::Unavailable(format!(
                "Twilio's message list answered {status}"
            )));
        }
        let list: TwilioMessageList = response.json().await.map_err(|e| {
            PortError::Unavailable(format!(
                "Twilio's message list unreadable: {}",
                e.without_url()
            ))
        })?;
        Ok(Some(
            list.messages
                .iter()
                .any(|m| m.body.as_deref() == Some(text.body.as_str())),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_twilios_documented_example() {
        // The example of Twilio's webhook security guide.
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(
            signature(
                "12345",
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                &params
            ),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
    }
}
