//! A request as the wire targets read it from the fuzzer's bytes: the text of an HTTP/1.1
//! request, so that seeds can be written and read by hand and the fuzzer's mutations land on
//! the parts that matter (method, path and query, header lines, body).
//!
//! ```text
//! POST /resources/v3alpha/users/alice/otp_sms/reg-1/_verify?instance.id=inst-1
//! authorization: Bearer alice-token
//! content-type: application/json
//!
//! {"code":"12345678"}
//! ```
//!
//! The fixture's ids are the same in every run (`reg-1`, `reg-2`, …), so a seed names an
//! existing registration as it is, in text or in a binary message. A request line ending in ` HTTP/2` is sent as HTTP/2 (gRPC needs it). Lines may end in
//! `\r\n` or `\n`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

/// A request read from the fuzzer's bytes, before it is built.
#[derive(Debug, Clone)]
pub struct RequestText {
    /// The method.
    pub method: Method,
    /// The path and query.
    pub uri: Uri,
    /// HTTP/2 or HTTP/1.1.
    pub version: Version,
    /// The header lines, in order (a name may repeat).
    pub headers: HeaderMap,
    /// Everything after the blank line.
    pub body: Vec<u8>,
}

impl RequestText {
    /// Reads `data`; `None` when it is no request an HTTP client could send (no request
    /// line, a header the HTTP crate refuses).
    pub fn parse(data: &[u8]) -> Option<Self> {
        let (head, body) = match find(data, b"\n\n").or_else(|| find(data, b"\r\n\r\n")) {
            Some(at) => {
                let skip = if data[at] == b'\r' { 4 } else { 2 };
                (&data[..at], data[at + skip..].to_vec())
            }
            None => (data, Vec::new()),
        };
        let head = std::str::from_utf8(head).ok()?;
        let mut lines = head.lines();
        let mut request_line = lines.next()?.split(' ');
        let method = Method::from_bytes(request_line.next()?.as_bytes()).ok()?;
        let uri: Uri = request_line.next()?.parse().ok()?;
        let version = match request_line.next() {
            Some("HTTP/2") => Version::HTTP_2,
            _ => Version::HTTP_11,
        };
        let mut headers = HeaderMap::new();
        for line in lines {
            let (name, value) = line.split_once(':')?;
            headers.append(
                HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                HeaderValue::from_str(value.trim()).ok()?,
            );
        }
        Some(Self {
            method,
            uri,
            version,
            headers,
            body,
        })
    }

    /// The header's first value as text, if it has one.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The request to send.
    pub fn build(&self) -> Request<Body> {
        let mut request = Request::new(Body::from(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }

    /// What the request is, for a failure's message.
    pub fn describe(&self) -> String {
        format!(
            "{} {} ({:?}, content-type {:?}, {} body bytes)",
            self.method,
            self.uri,
            self.version,
            self.header("content-type"),
            self.body.len()
        )
    }
}

/// `text` with every byte outside RFC 3986's unreserved set percent-encoded, so that any text
/// can stand in a path segment or a query value.
pub fn escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_request() {
        let text = b"POST /users/alice/otp_sms/r1/_verify?x=1\r\nAuthorization: Bearer t\nidempotency-key: s2\n\n{\"code\":\"1\"}\n\nmore";
        let request = RequestText::parse(text).unwrap();
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.uri, "/users/alice/otp_sms/r1/_verify?x=1");
        assert_eq!(request.version, Version::HTTP_11);
        assert_eq!(request.header("authorization"), Some("Bearer t"));
        assert_eq!(request.header("idempotency-key"), Some("s2"));
        assert_eq!(request.body, b"{\"code\":\"1\"}\n\nmore");
    }

    #[test]
    fn refuses_what_no_client_sends() {
        assert!(RequestText::parse(b"").is_none());
        assert!(RequestText::parse(b"POST").is_none());
        assert!(RequestText::parse(b"POST /x\nno colon\n\n").is_none());
        assert!(RequestText::parse(b"P(ST /x\n\n").is_none());
        let h2 = RequestText::parse(b"POST /x HTTP/2\n\n").unwrap();
        assert_eq!(h2.version, Version::HTTP_2);
    }
}
