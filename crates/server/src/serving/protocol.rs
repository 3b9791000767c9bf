//! Which protocol a request speaks, decided once, before routing, and put in the request's
//! extensions: the edge, the fallback, the refusals and the metrics all read it from there and
//! answer (or count) the call in kind.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use otp_sms_core::Error;

/// The protocol of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC or gRPC-web (`application/grpc…`).
    Grpc,
    /// A Connect unary call of this server's services.
    Connect,
    /// Anything else: the JSON API, health, metrics, delivery reports.
    Json,
}

impl Protocol {
    /// The protocol of a request with these method, URI and headers.
    pub fn of(method: &Method, uri: &Uri, headers: &HeaderMap) -> Self {
        if otp_sms_grpc::is_grpc(headers) {
            Self::Grpc
        } else if otp_sms_grpc::is_connect(method, uri.path(), headers) {
            Self::Connect
        } else {
            Self::Json
        }
    }

    /// The protocol [`classify`] put on `request`, or (for a request that did not pass it)
    /// worked out now.
    pub fn of_request<B>(request: &axum::http::Request<B>) -> Self {
        request
            .extensions()
            .get::<Self>()
            .copied()
            .unwrap_or_else(|| Self::of(request.method(), request.uri(), request.headers()))
    }

    /// `error` in this protocol: a gRPC status (trailers-only), Connect's error JSON, or the
    /// JSON API's `google.rpc.Status`; all three from the one [`otp_sms_core::ErrorStatus`].
    pub fn render(self, error: &Error) -> Response {
        match self {
            Self::Grpc => otp_sms_grpc::error_response(error),
            Self::Connect => otp_sms_grpc::connect_error_response(error),
            Self::Json => otp_sms_http::ApiError(error.clone()).into_response(),
        }
    }
}

/// Middleware: classifies the request, once, before anything routes it.
pub async fn classify(mut request: Request, next: Next) -> Response {
    let protocol = Protocol::of(request.method(), request.uri(), request.headers());
    request.extensions_mut().insert(protocol);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", content_type.parse().unwrap());
        headers
    }

    #[test]
    fn each_wire_is_told_apart_by_its_content_type_and_path() {
        let users = "/zitadel.resources.user.v3alpha.ZITADELUsers/AddOTPSMSAuthenticator"
            .parse::<Uri>()
            .unwrap();
        let json = "/resources/v3alpha/users/u/otp_sms".parse::<Uri>().unwrap();
        for (method, uri, content_type, expected) in [
            (Method::POST, &users, "application/grpc", Protocol::Grpc),
            (
                Method::POST,
                &users,
                "application/grpc-web+proto",
                Protocol::Grpc,
            ),
            (Method::POST, &users, "application/json", Protocol::Connect),
            (Method::POST, &users, "application/proto", Protocol::Connect),
            (Method::GET, &users, "application/json", Protocol::Json),
            (Method::POST, &json, "application/json", Protocol::Json),
            (Method::POST, &json, "application/grpc", Protocol::Grpc),
        ] {
            assert_eq!(
                Protocol::of(&method, uri, &headers(content_type)),
                expected,
                "{method} {uri} {content_type}"
            );
        }
    }

    #[test]
    fn a_classified_request_is_not_classified_again() {
        let mut request = axum::http::Request::post("/resources/v3alpha/users/u/otp_sms")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        request.extensions_mut().insert(Protocol::Json);
        assert_eq!(Protocol::of_request(&request), Protocol::Json);
    }
}
