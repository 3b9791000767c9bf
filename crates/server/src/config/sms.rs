//! `[sms]` and its providers' tables (`[sms.twilio]`, `[sms.vonage]`, `[sms.routes]`,
//! `[sms.text]`): which sender sends, and each provider's options.

use serde::Deserialize;

use super::secrets::read_secret;

/// Which SMS sender to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderKind {
    /// Print the SMS on standard output: development mode only.
    Log,
    /// POST each SMS as JSON to `webhook_url`.
    Webhook,
    /// Send through Twilio Programmable Messaging (`[sms.twilio]`).
    Twilio,
    /// Send through the Vonage SMS API (`[sms.vonage]`).
    Vonage,
    /// Route by the number's region over several providers, failing over (`[sms.routes]`).
    Routes,
}

impl SenderKind {
    /// The name the configuration gives it (`twilio`, `vonage`, …).
    pub fn name(self) -> &'static str {
        match self {
            SenderKind::Log => "log",
            SenderKind::Webhook => "webhook",
            SenderKind::Twilio => "twilio",
            SenderKind::Vonage => "vonage",
            SenderKind::Routes => "routes",
        }
    }
}

impl AsRef<str> for SenderKind {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

/// `[sms]`. `Debug` hides the webhook secret and the URL's credentials and query.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// `log` or `webhook`. Unset: `log` in development mode; otherwise no notifier runs and
    /// codes to send wait in the outbox.
    pub sender: Option<SenderKind>,
    /// Where the webhook sender posts: https, or plain http to a loopback or private address
    /// with `allow_http`.
    pub webhook_url: Option<String>,
    /// The Standard Webhooks signing secret, `whsec_<base64>`; required for the webhook.
    pub webhook_secret: Option<String>,
    /// Plain http to a loopback or private address is allowed (a sidecar, a test).
    pub allow_http: bool,
    /// Time-out of one webhook request.
    pub timeout_ms: u64,
    /// Extra attempts after a failed webhook request, with doubling back-off.
    pub retries: u32,
    /// The text of the SMS.
    pub text: TextConfig,
    /// Twilio, for `sender = "twilio"`.
    pub twilio: Option<TwilioConfig>,
    /// Vonage, for `sender = "vonage"`.
    pub vonage: Option<VonageConfig>,
    /// Routing and failover, for `sender = "routes"`.
    pub routes: Option<RoutesConfig>,
}

/// `[sms.routes]`: providers in order per region, and their circuit breakers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesConfig {
    /// Providers for regions not listed, in order (`["twilio", "vonage"]`).
    pub default: Vec<SenderKind>,
    /// Providers by region (ISO 3166 country of the number): `{ CH = ["vonage", "twilio"] }`.
    #[serde(default)]
    pub regions: std::collections::BTreeMap<String, Vec<SenderKind>>,
    /// Temporary failures in a row that open a provider's breaker.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open breaker skips its provider before one probe, in seconds.
    #[serde(default = "default_open_secs")]
    pub open_secs: u64,
}

fn default_failure_threshold() -> u32 {
    3
}

fn default_open_secs() -> u64 {
    30
}

/// `[sms.vonage]`. The secret comes from a file or an environment variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VonageConfig {
    /// The API key.
    pub api_key: String,
    /// A file holding the API secret.
    pub api_secret_file: Option<std::path::PathBuf>,
    /// An environment variable holding it.
    pub api_secret_env: Option<String>,
    /// The sender: a number or an alphanumeric id.
    pub from: String,
    /// Where Vonage sends delivery receipts: the public address of `/sms/status/vonage`.
    /// Receipts must be signed: set the signature secret too.
    pub callback: Option<String>,
    /// A file holding the account's signature secret (for signed delivery receipts).
    pub signature_secret_file: Option<std::path::PathBuf>,
    /// An environment variable holding it.
    pub signature_secret_env: Option<String>,
    /// How the account signs webhooks, as set in Vonage's dashboard (`md5hash`, Vonage's
    /// default, or `md5`, `sha1`, `sha256`, `sha512` for an HMAC).
    #[serde(default = "default_vonage_signature_method")]
    pub signature_method: otp_sms_providers::vonage::SignatureMethod,
    /// The API's address (a stand-in on a loopback or private address in tests).
    #[serde(default = "default_vonage_api")]
    pub base_url: String,
    /// Bound of one request, in milliseconds.
    #[serde(default = "default_twilio_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_vonage_api() -> String {
    otp_sms_providers::vonage::VONAGE_API.to_owned()
}

fn default_vonage_signature_method() -> otp_sms_providers::vonage::SignatureMethod {
    otp_sms_providers::vonage::SignatureMethod::Md5hash
}

impl VonageConfig {
    /// The delivery receipt endpoint, when `callback` is set. Unsigned receipts are never
    /// taken, so a callback without a signature secret stops the start.
    pub fn receipt_endpoint(
        &self,
        service: otp_sms_core::CommandService,
    ) -> Result<Option<otp_sms_providers::vonage::ReceiptEndpoint>, String> {
        let Some(callback) = &self.callback else {
            return Ok(None);
        };
        otp_sms_providers::vonage::receipt_base(callback)?;
        if self.signature_secret_file.is_none() && self.signature_secret_env.is_none() {
            return Err("[sms.vonage] callback needs signed delivery receipts: set signature_secret_file or signature_secret_env (and signature_method) as in the account's settings".into());
        }
        let secret = read_secret(
            "sms.vonage",
            "signature_secret",
            self.signature_secret_file.as_deref(),
            self.signature_secret_env.as_deref(),
        )?;
        if secret.is_empty() {
            return Err("[sms.vonage] the signature secret is empty".into());
        }
        if self.signature_method == otp_sms_providers::vonage::SignatureMethod::Md5hash {
            tracing::warn!("[sms.vonage] receipts are checked with md5hash, Vonage's default; an HMAC (signature_method = \"sha256\" or \"sha512\", set in Vonage's dashboard too) is stronger");
        }
        Ok(Some(otp_sms_providers::vonage::ReceiptEndpoint::new(
            self.api_key.clone(),
            secret.as_str(),
            self.signature_method,
            service,
        )))
    }

    /// The sender's options, with the secret read from its file or variable.
    pub fn options(
        &self,
        templates: std::sync::Arc<otp_sms_core::message::MessageTemplates>,
    ) -> Result<otp_sms_providers::vonage::VonageOptions, String> {
        let api_secret = read_secret(
            "sms.vonage",
            "api_secret",
            self.api_secret_file.as_deref(),
            self.api_secret_env.as_deref(),
        )?;
        let mut options = otp_sms_providers::vonage::VonageOptions::new(
            self.api_key.clone(),
            api_secret.as_str(),
            self.from.clone(),
            templates,
        )
        .with_base_url(self.base_url.clone())
        .with_timeout(std::time::Duration::from_millis(self.timeout_ms.max(1)));
        if let Some(callback) = &self.callback {
            options = options.with_callback(callback.clone());
        }
        Ok(options)
    }
}

/// `[sms.twilio]`. The secret comes from a file or an environment variable, never from this
/// file or the command line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioConfig {
    /// The account, `AC…`.
    pub account_sid: String,
    /// An API key (`SK…`) to authenticate with instead of the account's auth token.
    pub api_key_sid: Option<String>,
    /// A file holding the auth token (or the API key's secret).
    pub auth_token_file: Option<std::path::PathBuf>,
    /// An environment variable holding it.
    pub auth_token_env: Option<String>,
    /// The sending number (E.164) or alphanumeric sender id.
    pub from: Option<String>,
    /// A Messaging Service (`MG…`) instead of `from`.
    pub messaging_service_sid: Option<String>,
    /// Where Twilio reports each message's status.
    pub status_callback: Option<String>,
    /// A file holding the account's auth token, to check the status callbacks' signatures
    /// when the sender authenticates with an API key (Twilio signs callbacks with the auth
    /// token, never with an API key's secret). Without an API key, the auth token above.
    pub status_auth_token_file: Option<std::path::PathBuf>,
    /// An environment variable holding it.
    pub status_auth_token_env: Option<String>,
    /// The API's address (a stand-in on a loopback or private address in tests).
    #[serde(default = "default_twilio_api")]
    pub base_url: String,
    /// Bound of one request, in milliseconds.
    #[serde(default = "default_twilio_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_twilio_api() -> String {
    otp_sms_providers::twilio::TWILIO_API.to_owned()
}

fn default_twilio_timeout_ms() -> u64 {
    5_000
}

impl TwilioConfig {
    /// The status callback endpoint, when `status_callback` is set. Twilio signs reports with
    /// the account's auth token: `status_auth_token_*` when the sender uses an API key, else
    /// the auth token the sender uses.
    pub fn status_endpoint(
        &self,
        service: otp_sms_core::CommandService,
    ) -> Result<Option<otp_sms_providers::twilio::StatusEndpoint>, String> {
        let Some(public_url) = &self.status_callback else {
            return Ok(None);
        };
        let own_source =
            self.status_auth_token_file.is_some() || self.status_auth_token_env.is_some();
        let auth_token = if own_source {
            read_secret(
                "sms.twilio",
                "status_auth_token",
                self.status_auth_token_file.as_deref(),
                self.status_auth_token_env.as_deref(),
            )?
        } else if self.api_key_sid.is_some() {
            return Err("[sms.twilio] status_callback with an API key: Twilio signs status callbacks with the account's auth token; set status_auth_token_file or status_auth_token_env".into());
        } else {
            read_secret(
                "sms.twilio",
                "auth_token",
                self.auth_token_file.as_deref(),
                self.auth_token_env.as_deref(),
            )?
        };
        if auth_token.is_empty() {
            return Err("[sms.twilio] the auth token that checks status callbacks is empty".into());
        }
        Ok(Some(otp_sms_providers::twilio::StatusEndpoint::new(
            auth_token.as_str(),
            public_url.clone(),
            service,
        )))
    }

    /// The sender's options, with the secret read from its file or variable.
    pub fn options(
        &self,
        templates: std::sync::Arc<otp_sms_core::message::MessageTemplates>,
    ) -> Result<otp_sms_providers::twilio::TwilioOptions, String> {
        let secret = read_secret(
            "sms.twilio",
            "auth_token",
            self.auth_token_file.as_deref(),
            self.auth_token_env.as_deref(),
        )?;
        let from = match (&self.from, &self.messaging_service_sid) {
            (Some(number), None) => otp_sms_providers::twilio::TwilioFrom::Number(number.clone()),
            (None, Some(sid)) => {
                otp_sms_providers::twilio::TwilioFrom::MessagingService(sid.clone())
            }
            _ => {
                return Err("[sms.twilio] set exactly one of from and messaging_service_sid".into())
            }
        };
        let mut options = otp_sms_providers::twilio::TwilioOptions::new(
            self.account_sid.clone(),
            secret.as_str(),
            from,
            templates,
        )
        .with_base_url(self.base_url.clone())
        .with_timeout(std::time::Duration::from_millis(self.timeout_ms.max(1)));
        if let Some(key_sid) = &self.api_key_sid {
            options = options.with_api_key(key_sid.clone(), secret.as_str());
        }
        if let Some(url) = &self.status_callback {
            options = options.with_status_callback(url.clone());
        }
        Ok(options)
    }
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            sender: None,
            webhook_url: None,
            webhook_secret: None,
            allow_http: false,
            timeout_ms: 5_000,
            retries: 2,
            text: TextConfig::default(),
            twilio: None,
            vonage: None,
            routes: None,
        }
    }
}

/// `[sms.text]`: the SMS's text (`otp_sms_core::message`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextConfig {
    /// The application's name, for `{app}`.
    pub app_name: String,
    /// The template for users of no configured language; `{code}` required, `{minutes}` and
    /// `{app}` optional.
    pub default_template: Option<String>,
    /// Templates by language tag (`de = "Ihr {app}-Code: {code}"`).
    pub templates: std::collections::BTreeMap<String, String>,
    /// The sign-in template for users of no configured language (default: "Your {app}
    /// sign-in code is {code}. …").
    pub default_sign_in_template: Option<String>,
    /// Sign-in templates by language tag; a language without one gets the default sign-in
    /// template, never a registration text.
    pub sign_in_templates: std::collections::BTreeMap<String, String>,
    /// The site's host for the WebOTP line `@host #code` that ends every text, so that
    /// browsers and phones autofill the code only there.
    pub webotp_domain: Option<String>,
    /// Android's SMS Retriever app hash (11 characters), on a line before the WebOTP line.
    pub android_app_hash: Option<String>,
    /// SMS one text may take, checked at start-up with a code of the configured length.
    pub max_segments: usize,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            app_name: "otp-sms".into(),
            default_template: None,
            templates: Default::default(),
            default_sign_in_template: None,
            sign_in_templates: Default::default(),
            webotp_domain: None,
            android_app_hash: None,
            max_segments: 1,
        }
    }
}

impl TextConfig {
    /// The templates, checked: each must contain `{code}` and fit in `max_segments` SMS with a
    /// code of `code_length` digits valid for `lifetime`.
    pub fn templates(
        &self,
        code_length: usize,
        lifetime: std::time::Duration,
    ) -> Result<otp_sms_core::message::MessageTemplates, String> {
        let fail = |e: otp_sms_core::message::TemplateError| format!("[sms.text] {e}");
        let mut t = otp_sms_core::message::MessageTemplates::new(self.app_name.clone());
        if let Some(template) = &self.default_template {
            t = t.with_default_template(template).map_err(fail)?;
        }
        for (locale, template) in &self.templates {
            t = t.with_template(locale, template).map_err(fail)?;
        }
        if let Some(template) = &self.default_sign_in_template {
            t = t.with_default_sign_in_template(template).map_err(fail)?;
        }
        for (locale, template) in &self.sign_in_templates {
            t = t.with_sign_in_template(locale, template).map_err(fail)?;
        }
        if let Some(domain) = &self.webotp_domain {
            t = t.try_with_webotp_domain(domain).map_err(fail)?;
        }
        if let Some(hash) = &self.android_app_hash {
            t = t.with_android_app_hash(hash).map_err(fail)?;
        }
        let minutes = lifetime.as_secs().div_ceil(60).max(1);
        t.check(code_length, minutes, self.max_segments.max(1))
            .map_err(fail)?;
        Ok(t)
    }
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = self
            .webhook_url
            .as_deref()
            .map(otp_sms_providers::redacted_webhook_url);
        f.debug_struct("SmsConfig")
            .field("sender", &self.sender)
            .field("webhook_url", &url)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("allow_http", &self.allow_http)
            .field("timeout_ms", &self.timeout_ms)
            .field("retries", &self.retries)
            .field("text", &self.text)
            .field("twilio", &self.twilio)
            .field("vonage", &self.vonage)
            .field("routes", &self.routes)
            .finish()
    }
}
