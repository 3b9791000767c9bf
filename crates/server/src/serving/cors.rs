//! Cross-origin calls from browsers (CORS), for gRPC-web and Connect clients in a web page on
//! another origin, as ZITADEL's console and login call its API.
//!
//! No origin is allowed unless configured (`[server] cors_allowed_origins`); `--dev` allows
//! pages served from the loopback over plain HTTP on any port (`http://localhost:*`,
//! `http://127.0.0.1:*`, `http://[::1]:*`). An allowed origin may send the headers the three
//! protocols use and read the gRPC status headers and `Retry-After`; a preflight is cached
//! for two hours. No credentials (cookies) are allowed: callers authenticate with a bearer
//! token in `Authorization`.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// The request headers the protocols and the API use, and those upstream's CORS interceptor
/// allows that ZITADEL's browser clients send (`grpc-timeout`, a call's deadline;
/// `x-zitadel-orgid`, which this API does not read: the organization is the request's own
/// field; `x-requested-with`), so that their preflights pass here as there.
pub const ALLOWED_HEADERS: [&str; 10] = [
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "connect-protocol-version",
    "connect-timeout-ms",
    "idempotency-key",
    "grpc-timeout",
    "x-zitadel-orgid",
    "x-requested-with",
];

/// The response headers a page may read: gRPC's status in headers (gRPC-web puts trailers in
/// the body, but a trailers-only answer sends them as headers) and the wait of a 429.
pub const EXPOSED_HEADERS: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "retry-after",
];

/// The CORS layer for `origins` (each `scheme://host[:port]`, exactly as a browser sends it in
/// `Origin`), and the loopback pages in development; `None` when nothing is allowed, so that
/// no CORS header is ever sent.
///
/// ```
/// use otp_sms_server::cors::layer;
/// assert!(layer(&[], false).unwrap().is_none());
/// assert!(layer(&["https://console.example.com".into()], false).unwrap().is_some());
/// assert!(layer(&["*".into()], false).is_err());
/// assert!(layer(&["https://console.example.com/app".into()], false).is_err());
/// ```
pub fn layer(origins: &[String], dev: bool) -> Result<Option<CorsLayer>, String> {
    let allowed = origins
        .iter()
        .map(|origin| check_origin(origin))
        .collect::<Result<Vec<HeaderValue>, String>>()?;
    if allowed.is_empty() && !dev {
        return Ok(None);
    }
    let allow = AllowOrigin::predicate(move |origin: &HeaderValue, _| {
        allowed.contains(origin) || (dev && is_loopback_page(origin))
    });
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
            .max_age(Duration::from_secs(2 * 60 * 60)),
    ))
}

/// An origin as browsers serialise it: a scheme, a host and maybe a port; no path, no
/// wildcard (an API that takes bearer tokens names the pages it trusts).
fn check_origin(origin: &str) -> Result<HeaderValue, String> {
    let refuse = |why: &str| Err(format!("[server] cors_allowed_origins: {origin:?} {why}"));
    let Some((scheme, rest)) = origin.split_once("://") else {
        return refuse("is not scheme://host[:port]");
    };
    if !matches!(scheme, "http" | "https") {
        return refuse("must be http or https");
    }
    if rest.is_empty() || rest.contains(['/', '*', '?', '#', ' ']) || origin.contains('*') {
        return refuse("must be scheme://host[:port], with no path and no wildcard");
    }
    HeaderValue::from_str(origin).or_else(|_| refuse("is not a valid header value"))
}

/// `http://localhost`, `http://127.0.0.1` or `http://[::1]`, on any port.
fn is_loopback_page(origin: &HeaderValue) -> bool {
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some(host) = origin.strip_prefix("http://") else {
        return false;
    };
    let host = match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_allows_loopback_pages_only() {
        for page in [
            "http://localhost:5173",
            "http://localhost",
            "http://127.0.0.1:8080",
            "http://[::1]:3000",
        ] {
            assert!(is_loopback_page(&HeaderValue::from_static(page)), "{page}");
        }
        for page in [
            "https://localhost:5173",
            "http://localhost.evil.example",
            "http://evil.example:80",
            "http://127.0.0.2:80",
            "null",
        ] {
            assert!(!is_loopback_page(&HeaderValue::from_static(page)), "{page}");
        }
    }

    #[test]
    fn configured_origins_are_exact() {
        assert!(check_origin("https://console.example.com:8443").is_ok());
        for bad in [
            "console.example.com",
            "ftp://x",
            "https://*.example.com",
            "https://x/",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }
}
