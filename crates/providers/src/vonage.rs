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

use crate::report::Report;
use async_trait::async_trait;
use otp_sms_core::message::{Encoding, MessageTemplates};
use otp_sms_core::{PortError, Sms, SmsSender};
use zeroize::Zeroizing;

/// The API's default address.
pub const VONAGE_API: &str = "https://rest.nexmo.com";

/// What a Vonage sender needs. `Debug` never shows the secret. Built with [`VonageOptions::new`]
/// and its `with_` methods.
#[derive(Clone)]
#[non_exhaustive]
pub struct VonageOptions {
    /// The API key.
    pub api_key: String,
    /// The API secret.
    pub api_secret: Zeroizing<String>,
    /// The sender: a number or an alphanumeric id.
    pub from: String,
    /// Where Vonage sends delivery receipts, if anywhere: the public address of
    /// `/sms/status/vonage`; each SMS adds its instance, registration and code number (see
    /// [`receipt_url`]).
    pub callback: Option<String>,
    /// The API's address: [`VONAGE_API`], or a stand-in on a loopback or private address.
    pub base_url: String,
    /// Bound of one request.
    pub timeout: Duration,
    /// The SMS's text.
    pub templates: Arc<MessageTemplates>,
}

impl VonageOptions {
    /// Sends as `from` with the account's API key and secret, to [`VONAGE_API`], with a
    /// 10-second bound per request and no delivery receipts.
    pub fn new(
        api_key: impl Into<String>,
        api_secret: impl Into<String>,
        from: impl Into<String>,
        templates: Arc<MessageTemplates>,
    ) -> Self {
        Self {
            api_key: api_key.into(),
            api_secret: Zeroizing::new(api_secret.into()),
            from: from.into(),
            callback: None,
            base_url: VONAGE_API.to_owned(),
            timeout: Duration::from_secs(5),
            templates,
        }
    }

    /// Asks Vonage for delivery receipts at `url` (see [`receipt_routes`]).
    pub fn with_callback(mut self, url: impl Into<String>) -> Self {
        self.callback = Some(url.into());
        self
    }

    /// Calls `base_url` instead of [`VONAGE_API`]: a stand-in on a loopback or private address.
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
    receipts: Option<reqwest::Url>,
    options: VonageOptions,
}

impl VonageSender {
    /// A sender for `options`; an unusable address or empty credentials are refused.
    pub fn new(options: VonageOptions) -> Result<Self, String> {
        if options.api_key.trim().is_empty() || options.api_secret.trim().is_empty() {
            return Err("[sms.vonage] api_key and the API secret must not be empty".into());
        }
        let (client, url) = crate::client::provider_client(
            "sms.vonage",
            &options.base_url,
            "/sms/json",
            options.timeout,
        )?;
        let receipts = match &options.callback {
            Some(callback) => Some(receipt_base(callback)?),
            None => None,
        };
        Ok(Self {
            client,
            url,
            receipts,
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
        let text = crate::text::render(&self.options.templates, sms);
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
        if let Some(base) = &self.receipts {
            form.push(("callback", receipt_url(base, sms)));
            form.push((
                "client-ref",
                client_ref(sms.instance.as_str(), sms.registration.as_str(), sms.number),
            ));
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

    /// One attempt (the notifier retries), bounded by the configured time-out.
    fn max_send_time(&self) -> Option<Duration> {
        Some(self.options.timeout)
    }
}

/// How the account signs its webhooks, as chosen in Vonage's dashboard: `md5hash` (Vonage's
/// default: MD5 of the parameters followed by the secret) or an HMAC keyed by the signature
/// secret (`md5`, `sha1`, `sha256`, `sha512`; Vonage recommends these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureMethod {
    /// MD5 of the parameters and the secret.
    Md5hash,
    /// HMAC-MD5.
    Md5,
    /// HMAC-SHA1.
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// The `sig` of a webhook with these parameters, as Vonage computes it: every parameter but
/// `sig`, sorted by name, written `&name=value` with `&` and `=` in values replaced by `_`,
/// then hashed by `method` (hexadecimal: lower case for `md5hash`, upper case for the HMACs, as
/// Vonage sends them; compare without regard to case).
pub fn signature(method: SignatureMethod, secret: &str, params: &[(String, String)]) -> String {
    use md5::Digest as _;
    let mut sorted: Vec<&(String, String)> = params.iter().filter(|(k, _)| k != "sig").collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut text = String::new();
    for (name, value) in sorted {
        text.push('&');
        text.push_str(name);
        text.push('=');
        text.push_str(&value.replace(['&', '='], "_"));
    }
    match method {
        SignatureMethod::Md5hash => {
            let mut md5 = md5::Md5::new();
            md5.update(text.as_bytes());
            md5.update(secret.as_bytes());
            hex::encode(md5.finalize())
        }
        SignatureMethod::Md5 => hmac_hex::<hmac::Hmac<md5::Md5>>(secret, &text),
        SignatureMethod::Sha1 => hmac_hex::<hmac::Hmac<sha1::Sha1>>(secret, &text),
        SignatureMethod::Sha256 => hmac_hex::<hmac::Hmac<sha2::Sha256>>(secret, &text),
        SignatureMethod::Sha512 => hmac_hex::<hmac::Hmac<sha2::Sha512>>(secret, &text),
    }
}

fn hmac_hex<M: hmac::Mac + hmac::digest::KeyInit>(secret: &str, text: &str) -> String {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(text.as_bytes());
    hex::encode_upper(mac.finalize().into_bytes())
}

/// The `client-ref` sent with an SMS and echoed, signed, in its receipts: a digest of the
/// instance, registration and code number, so that a signed receipt cannot be replayed
/// against another registration's path.
pub fn client_ref(instance: &str, registration: &str, number: u32) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(instance.as_bytes())
        .chain_update([0])
        .chain_update(registration.as_bytes())
        .chain_update([0])
        .chain_update(number.to_string().as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

/// The receipt URL of one SMS: the configured callback with the instance, registration and code
/// number as three more path segments (a query could clash with the receipt's own parameters
/// when Vonage sends it as a GET).
pub fn receipt_url(base: &reqwest::Url, sms: &Sms) -> String {
    let mut url = base.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .push(sms.instance.as_str())
            .push(sms.registration.as_str())
            .push(&sms.number.to_string());
    }
    url.into()
}

/// The configured callback as a base for [`receipt_url`]: an absolute `http(s)` URL that can
/// take more path segments.
pub fn receipt_base(callback: &str) -> Result<reqwest::Url, String> {
    match reqwest::Url::parse(callback) {
        Ok(url) if matches!(url.scheme(), "https" | "http") && !url.cannot_be_a_base() => Ok(url),
        _ => Err(format!(
            "[sms.vonage] callback `{callback}` is not an absolute http(s) URL"
        )),
    }
}

/// How far a receipt's `timestamp` may be from the server's clock before it is taken for a
/// replay.
pub const RECEIPT_MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// What the receipt endpoint needs.
#[derive(Clone)]
#[non_exhaustive]
pub struct ReceiptEndpoint {
    /// The API key receipts must name (`api-key`).
    pub api_key: String,
    /// The signature secret.
    pub secret: Arc<Zeroizing<String>>,
    /// How the account signs.
    pub method: SignatureMethod,
    /// How far a receipt's `timestamp` may be from now.
    pub max_age: chrono::Duration,
    /// Where reports are recorded.
    pub service: otp_sms_core::CommandService,
}

impl ReceiptEndpoint {
    /// Accepts receipts naming `api_key`, signed with `secret` by `method`, at most
    /// [`RECEIPT_MAX_AGE`] old, and records them with `service`.
    pub fn new(
        api_key: impl Into<String>,
        secret: impl Into<String>,
        method: SignatureMethod,
        service: otp_sms_core::CommandService,
    ) -> Self {
        Self {
            api_key: api_key.into(),
            secret: Arc::new(Zeroizing::new(secret.into())),
            method,
            max_age: RECEIPT_MAX_AGE,
            service,
        }
    }
}

/// Why a receipt was refused, in the log (never its parameters: they hold the number).
fn refuse(why: &str) -> axum::http::StatusCode {
    tracing::warn!(why, "a Vonage delivery receipt was refused");
    crate::report::count("vonage", "refused");
    axum::http::StatusCode::FORBIDDEN
}

/// The routes of [`receipt`], `GET` and `POST /sms/status/vonage/{instance}/{otp_sms_id}/{n}`
/// (the path [`receipt_url`] builds), for the server's router.
pub fn receipt_routes(endpoint: ReceiptEndpoint) -> axum::Router {
    axum::Router::new()
        .route(
            "/sms/status/vonage/{instance}/{otp_sms_id}/{n}",
            axum::routing::get(receipt).post(receipt),
        )
        .with_state(endpoint)
        // The signature travels inside the parameters, so the body is read, but no more than
        // a receipt can need.
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::report::MAX_REPORT_BYTES,
        ))
}

/// `GET` or `POST /sms/status/vonage/{instance}/{otp_sms_id}/{n}`: Vonage's delivery receipt,
/// as a query, a form or JSON (the account's webhook setting). It must carry a valid `sig`, a
/// `timestamp` within [`ReceiptEndpoint::max_age`] of now, the configured `api-key` and the
/// SMS's [`client_ref`]; anything else is refused (403) and changes nothing. `delivered`
/// records `code delivered`; `expired`, `failed` and `rejected` record `delivery failed` with
/// Vonage's `err-code`; other statuses (`accepted`, `buffered`, `unknown`) are acknowledged and
/// ignored.
pub async fn receipt(
    axum::extract::State(endpoint): axum::extract::State<ReceiptEndpoint>,
    axum::extract::Path((instance, registration, number)): axum::extract::Path<(
        String,
        String,
        String,
    )>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    let Some(params) = receipt_params(query.as_deref(), &headers, &body) else {
        return StatusCode::BAD_REQUEST;
    };
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let Some(given) = get("sig") else {
        return refuse("no signature");
    };
    let expected = signature(endpoint.method, &endpoint.secret, &params);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.to_ascii_lowercase().as_bytes(),
        given.to_ascii_lowercase().as_bytes(),
    )) {
        return refuse("bad signature");
    }
    let fresh = get("timestamp")
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .is_some_and(|t| (chrono::Utc::now() - t).abs() <= endpoint.max_age);
    if !fresh {
        return refuse("timestamp missing or too far from now");
    }
    if get("api-key") != Some(endpoint.api_key.as_str()) {
        return refuse("another account's API key");
    }
    let Ok(n) = number.parse::<u32>() else {
        return StatusCode::BAD_REQUEST;
    };
    if get("client-ref") != Some(client_ref(&instance, &registration, n).as_str()) {
        return refuse("client-ref does not match the path");
    }
    let (Ok(instance), Ok(registration)) = (
        instance.parse::<otp_sms_core::InstanceId>(),
        registration.parse::<otp_sms_core::RegistrationId>(),
    ) else {
        return StatusCode::BAD_REQUEST;
    };
    let report = match get("status") {
        Some("delivered") => Report::Delivered,
        Some(status @ ("expired" | "failed" | "rejected")) => Report::Failed {
            status,
            code: get("err-code"),
        },
        _ => Report::Interim,
    };
    crate::report::record_report(
        "vonage",
        &endpoint.service,
        &instance,
        &registration,
        n,
        report,
    )
    .await
}

/// A receipt's parameters: the query of a GET, or a POST's form or JSON body (numbers in JSON,
/// such as `timestamp`, as their text). `None` when the body cannot be read.
fn receipt_params(
    query: Option<&str>,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Option<Vec<(String, String)>> {
    if body.is_empty() {
        return serde_urlencoded::from_str(query.unwrap_or("")).ok();
    }
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return serde_urlencoded::from_bytes(body).ok();
    }
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    object
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k, s)),
            serde_json::Value::Number(n) => Some((k, n.to_string())),
            serde_json::Value::Bool(b) => Some((k, b.to_string())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A receipt as Vonage's reference shows one, with `&` and `=` in a value; the expected
    /// signatures were computed apart from this code (Python's `hashlib` and `hmac`).
    fn receipt() -> Vec<(String, String)> {
        [
            ("msisdn", "447700900000"),
            ("to", "AcmeInc"),
            ("network-code", "12345"),
            ("messageId", "0A0000001234567B"),
            ("price", "0.03330000"),
            ("status", "delivered"),
            ("scts", "2001011400"),
            ("err-code", "0"),
            ("api-key", "abcd1234"),
            ("message-timestamp", "2020-01-01 12:00:00"),
            ("timestamp", "1582650446"),
            ("nonce", "ec11dd3e-1e7f-4db5-9467-82b02cd223b9"),
            ("client-ref", "a&b=c"),
            ("sig", "left out of its own signature"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    const SECRET: &str = "Y6dI3wtDP8myVH5tnDoIaTxEvAJhgDVCczBa1mHniEqsdlnnebg";

    #[test]
    fn signs_as_vonage_does_with_each_method() {
        let cases = [
            (SignatureMethod::Md5hash, "417f5b71877f5ff16e92862a815ee4e5"),
            (SignatureMethod::Md5, "915D92FA52CAECB97E486B1B97D41134"),
            (
                SignatureMethod::Sha1,
                "197626EF558EE52548EFC96552FFBF6522650D65",
            ),
            (
                SignatureMethod::Sha256,
                "6B5A09BCA6FCAFF2593E08B859CFA6F945DB2225CAE12CDBE78E663BEA6A817B",
            ),
            (
                SignatureMethod::Sha512,
                "BE9845D569655AFD5B214ED8D29F2696797B1DC0E2A9B28704B9DC2601F25FE189E333524E785C6E3415E5581AC4178216B8E5E6E5F04353EBD7CDDD65E3C203",
            ),
        ];
        for (method, expected) in cases {
            assert_eq!(
                signature(method, SECRET, &receipt()),
                expected,
                "{method:?}"
            );
        }
    }

    #[test]
    fn a_changed_parameter_or_secret_changes_the_signature() {
        let good = signature(SignatureMethod::Sha256, SECRET, &receipt());
        let mut changed = receipt();
        changed[5].1 = "failed".into();
        assert_ne!(signature(SignatureMethod::Sha256, SECRET, &changed), good);
        assert_ne!(
            signature(SignatureMethod::Sha256, "another", &receipt()),
            good
        );
    }

    #[test]
    fn the_receipt_url_adds_three_escaped_segments() {
        let base = receipt_base("https://id.acme.example/sms/status/vonage/").unwrap();
        let now = chrono::Utc::now();
        let sms = Sms {
            instance: otp_sms_core::InstanceId::parse("instance", "acme corp/eu").unwrap(),
            registration: otp_sms_core::RegistrationId::parse("otp_sms_id", "r-1").unwrap(),
            number: 3,
            phone: otp_sms_core::Phone::parse("+41791234567").unwrap(),
            code: otp_sms_core::VerificationCode::from_input("24682468").unwrap(),
            expires_at: now,
            message_id: uuid::Uuid::now_v7(),
            deadline: now,
            locale: None,
            purpose: otp_sms_core::message::Purpose::Registration,
        };
        assert_eq!(
            receipt_url(&base, &sms),
            "https://id.acme.example/sms/status/vonage/acme%20corp%2Feu/r-1/3"
        );
        assert!(receipt_base("not a url").is_err());
        assert!(receipt_base("ftp://id.acme.example/x").is_err());
    }

    #[test]
    fn the_client_ref_binds_instance_registration_and_number() {
        let a = client_ref("acme", "r1", 1);
        assert_eq!(a.len(), 32);
        assert_ne!(a, client_ref("acme", "r1", 2));
        assert_ne!(a, client_ref("acme", "r2", 1));
        assert_ne!(a, client_ref("acme2", "r1", 1));
        // The separator keeps `ab` + `c` apart from `a` + `bc`.
        assert_ne!(client_ref("ab", "c", 1), client_ref("a", "bc", 1));
    }
}
