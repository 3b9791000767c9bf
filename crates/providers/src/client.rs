//! The HTTP client every provider calls through, and the rule for the URLs it may call.

use std::net::IpAddr;

/// The HTTP client and request URL of a provider's API: `path` on `base_url` (https, or plain
/// http to a loopback or private address, for a stand-in), no redirects, `timeout` per request.
#[cfg(any(feature = "twilio", feature = "vonage"))]
pub(crate) fn provider_client(
    table: &str,
    base_url: &str,
    path: &str,
    timeout: std::time::Duration,
) -> Result<(reqwest::Client, reqwest::Url), String> {
    let base = reqwest::Url::parse(base_url)
        .map_err(|e| format!("[{table}] base_url is not a URL: {e}"))?;
    check_webhook_url(&base, true).map_err(|e| format!("[{table}] base_url: {e}"))?;
    let url = base
        .join(path)
        .map_err(|e| format!("[{table}] base_url: {e}"))?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("[{table}] HTTP client: {e}"))?;
    Ok((client, url))
}

/// https anywhere; plain http, when allowed, only to a loopback or private address. The error
/// says why a URL is refused.
pub(crate) fn check_webhook_url(url: &reqwest::Url, allow_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http => {
            // Plain HTTP only where no one on the way can read the codes: this machine or a
            // private network, named by address (a name could resolve anywhere).
            let private = match url.host() {
                Some(url::Host::Ipv4(ip)) => {
                    ip.is_loopback() || ip.is_private() || ip.is_link_local()
                }
                Some(url::Host::Ipv6(ip)) => {
                    ip.is_loopback() || is_unique_local(IpAddr::V6(ip))
                }
                Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            if private {
                Ok(())
            } else {
                Err("plain http is allowed only to a loopback or private address".into())
            }
        }
        "http" => Err(
            "the webhook must be https (set [sms] allow_http = true for a loopback or private address)"
                .into(),
        ),
        other => Err(format!("scheme `{other}` is not http or https")),
    }
}

fn is_unique_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00)
}

/// A webhook URL as logs and `Debug` show it: scheme, host and port only (user info, path and
/// query may each carry a credential); text that is no URL shows as `<redacted>`.
///
/// ```
/// use otp_sms_providers::redacted_webhook_url;
/// assert_eq!(
///     redacted_webhook_url("https://u:p@sms.example.com:8443/hooks/T0K3N?key=k"),
///     "https://sms.example.com:8443/…"
/// );
/// assert_eq!(redacted_webhook_url("not a url"), "<redacted>");
/// ```
pub fn redacted_webhook_url(text: &str) -> String {
    match reqwest::Url::parse(text) {
        Ok(url) => redacted(&url),
        Err(_) => "<redacted>".to_owned(),
    }
}

pub(crate) fn redacted(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}/…", url.scheme()),
        None => format!("{}://{host}/…", url.scheme()),
    }
}
