//! The Connect protocol's unary calls (connectrpc.com/docs/protocol), served over the same
//! [`UsersService`] as gRPC, on the same paths, behind the same authentication and error
//! mapping: `POST /<package.Service>/<Method>` with `application/json` (the proto3 JSON
//! mapping) or `application/proto`.
//!
//! What it does, as the protocol says:
//! - `Connect-Protocol-Version`, when sent, must be `1`; `Connect-Timeout-Ms` (1 to 10 digits)
//!   bounds the call, which past it answers `deadline_exceeded`;
//! - a request body is identity- or gzip-encoded (another `Content-Encoding` is
//!   `unimplemented`) and at most [`crate::MAX_MESSAGE_BYTES`], once decompressed
//!   (`resource_exhausted` beyond; a body that is not gzip is `invalid_argument`);
//! - JSON bodies ignore fields this definition does not know (a client built from a newer
//!   revision keeps working); a body that does not decode is `invalid_argument`;
//! - an error is a JSON body `{"code", "message", "details"}` with the HTTP status of the
//!   protocol's table; details carry the gRPC status's details (`google.rpc.RetryInfo` for
//!   RESOURCE_EXHAUSTED), base64 without padding;
//! - the methods are not marked side-effect free, so `GET` is 405 with `Allow: POST`; a content
//!   type other than the two is 415.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

use crate::ext::otpsms_extensions_server::OtpsmsExtensions;
use crate::ext::otpsms_sign_in_server::OtpsmsSignIn;
use crate::user::zitadel_users_server::ZitadelUsers;
use crate::{
    RpcStatus, UsersService, EXTENSIONS_SERVICE_NAME, FILE_DESCRIPTOR_SET, MAX_MESSAGE_BYTES,
};

/// The two codecs of the Connect protocol's unary calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Codec {
    Json,
    Proto,
}

impl Codec {
    fn of(headers: &HeaderMap) -> Option<Self> {
        let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let essence = content_type.split(';').next()?.trim();
        if essence.eq_ignore_ascii_case("application/json") {
            Some(Codec::Json)
        } else if essence.eq_ignore_ascii_case("application/proto") {
            Some(Codec::Proto)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Codec::Json => "application/json",
            Codec::Proto => "application/proto",
        }
    }
}

/// The compiled definitions, for the JSON mapping.
fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("the compiled descriptor set is valid")
    })
}

fn descriptor(name: &str) -> MessageDescriptor {
    pool()
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} is in the compiled definitions"))
}

/// A Connect error: a code and a message, with the gRPC status's details.
struct ConnectError(Status);

impl ConnectError {
    fn new(code: Code, message: impl Into<String>) -> Self {
        Self(Status::new(code, message))
    }
}

/// The protocol's name of a code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status the protocol gives a code.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a status code"),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        let status = self.0;
        let details: Vec<serde_json::Value> = RpcStatus::decode(status.details())
            .map(|s| s.details)
            .unwrap_or_default()
            .into_iter()
            .map(|any| {
                let kind = any
                    .type_url
                    .rsplit_once('/')
                    .map_or(any.type_url.as_str(), |(_, name)| name);
                serde_json::json!({
                    "type": kind,
                    "value": base64::engine::general_purpose::STANDARD_NO_PAD.encode(&any.value),
                })
            })
            .collect();
        let mut body = serde_json::json!({ "code": code_name(status.code()) });
        if !status.message().is_empty() {
            body["message"] = status.message().into();
        }
        if !details.is_empty() {
            body["details"] = details.into();
        }
        let mut response = (http_status(status.code()), axum::Json(body)).into_response();
        if let Some(retry) = retry_after(&status) {
            response.headers_mut().insert(header::RETRY_AFTER, retry);
        }
        response
    }
}

/// `Retry-After` for a RESOURCE_EXHAUSTED that says when to come back, as the JSON API sends.
fn retry_after(status: &Status) -> Option<HeaderValue> {
    let details = <Status as tonic_types::StatusExt>::get_error_details(status);
    let after = details.retry_info()?.retry_delay?;
    HeaderValue::from_str(&after.as_secs().max(1).to_string()).ok()
}

/// A gzip body's message, read to at most [`MAX_MESSAGE_BYTES`] (`None` past it: a small body
/// may unpack to gigabytes, so the bound holds while reading).
fn gunzip(compressed: &[u8]) -> Result<Option<Bytes>, ConnectError> {
    use std::io::Read as _;
    let mut message = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .take(MAX_MESSAGE_BYTES as u64 + 1)
        .read_to_end(&mut message)
        .map_err(|_| ConnectError::new(Code::InvalidArgument, "the body is not valid gzip"))?;
    Ok((message.len() <= MAX_MESSAGE_BYTES).then(|| Bytes::from(message)))
}

/// Whether a request is a Connect unary call of this server's services: a `POST` to
/// `/<package.Service>/<Method>` of `ZITADELUsers`, `OTPSMSExtensions` or `OTPSMSSignIn` that
/// is not gRPC.
pub fn is_connect(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    let Some(service) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .map(|(service, _)| service)
    else {
        return false;
    };
    method == Method::POST
        && !crate::is_grpc(headers)
        && (service == crate::user::zitadel_users_server::SERVICE_NAME
            || service == EXTENSIONS_SERVICE_NAME
            || service == crate::SIGN_IN_SERVICE_NAME)
}

/// The Connect answer for `error` (the protocol's error JSON and HTTP status), for a layer in
/// front of the service that refuses a call itself (a shed or late call).
pub fn error_response(error: &otp_sms_core::Error) -> Response {
    ConnectError(crate::status(error)).into_response()
}

/// Serves one Connect unary call of `ZITADELUsers`, `OTPSMSExtensions` or `OTPSMSSignIn`:
/// `service` and `method` from the path, the request as it came.
pub(crate) async fn serve(
    users: &UsersService,
    service: &str,
    method: &str,
    request: axum::extract::Request,
) -> Response {
    match call(users, service, method, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn call(
    users: &UsersService,
    service: &str,
    method: &str,
    request: axum::extract::Request,
) -> Result<Response, ConnectError> {
    if request.method() != Method::POST {
        let mut response = (
            StatusCode::METHOD_NOT_ALLOWED,
            "the Connect protocol's unary calls of this service are POST only",
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return Ok(response);
    }
    // A method this server does not serve is answered before its body is read: nothing a
    // caller sends to an unknown name costs more than its headers.
    if !crate::METHODS.contains(&(service, method)) {
        return Err(ConnectError::new(
            Code::Unimplemented,
            format!("{service}/{method} is not implemented"),
        ));
    }
    let (parts, body) = request.into_parts();
    let Some(codec) = Codec::of(&parts.headers) else {
        return Ok((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "use application/json or application/proto (Connect), or application/grpc",
        )
            .into_response());
    };
    let versions = parts.headers.get_all("connect-protocol-version");
    if versions.iter().any(|version| version.as_bytes() != b"1") {
        return Err(ConnectError::new(
            Code::InvalidArgument,
            "connect-protocol-version must be 1",
        ));
    }
    let timeout = timeout(&parts.headers)?;
    let gzip = match parts.headers.get(header::CONTENT_ENCODING) {
        None => false,
        Some(e) if e.as_bytes().eq_ignore_ascii_case(b"identity") => false,
        Some(e) if e.as_bytes().eq_ignore_ascii_case(b"gzip") => true,
        Some(_) => {
            // The protocol asks for the encodings the server takes, so that a client can
            // send again in one of them.
            let mut refused = ConnectError::new(
                Code::Unimplemented,
                "content encodings supported: identity, gzip",
            )
            .into_response();
            refused.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("gzip, identity"),
            );
            return Ok(refused);
        }
    };
    let too_large = || {
        ConnectError::new(
            Code::ResourceExhausted,
            format!("the request message must be at most {MAX_MESSAGE_BYTES} bytes"),
        )
    };
    let bytes = axum::body::to_bytes(body, MAX_MESSAGE_BYTES)
        .await
        .map_err(|_| too_large())?;
    let bytes = if gzip {
        gunzip(&bytes)?.ok_or_else(too_large)?
    } else {
        bytes
    };
    let metadata = MetadataMap::from_headers(parts.headers);
    let extensions = parts.extensions;
    let context = Context {
        codec,
        bytes,
        metadata,
        extensions,
        timeout,
    };
    use crate::ext;
    use crate::user;
    match (service, method) {
        (crate::SERVICE_NAME, "AddOTPSMSAuthenticator") => {
            context
                .unary::<user::AddOtpsmsAuthenticatorRequest, _, _, _>(
                    "zitadel.resources.user.v3alpha.AddOTPSMSAuthenticatorRequest",
                    "zitadel.resources.user.v3alpha.AddOTPSMSAuthenticatorResponse",
                    |r| users.add_otpsms_authenticator(r),
                )
                .await
        }
        (crate::SERVICE_NAME, "VerifyOTPSMSRegistration") => {
            context
                .unary::<user::VerifyOtpsmsRegistrationRequest, _, _, _>(
                    "zitadel.resources.user.v3alpha.VerifyOTPSMSRegistrationRequest",
                    "zitadel.resources.user.v3alpha.VerifyOTPSMSRegistrationResponse",
                    |r| users.verify_otpsms_registration(r),
                )
                .await
        }
        (crate::SERVICE_NAME, "RemoveOTPSMSAuthenticator") => {
            context
                .unary::<user::RemoveOtpsmsAuthenticatorRequest, _, _, _>(
                    "zitadel.resources.user.v3alpha.RemoveOTPSMSAuthenticatorRequest",
                    "zitadel.resources.user.v3alpha.RemoveOTPSMSAuthenticatorResponse",
                    |r| users.remove_otpsms_authenticator(r),
                )
                .await
        }
        (EXTENSIONS_SERVICE_NAME, "UnlockOTPSMSVerification") => {
            context
                .unary::<ext::UnlockOtpsmsVerificationRequest, _, _, _>(
                    "otpsms.v1.UnlockOTPSMSVerificationRequest",
                    "otpsms.v1.UnlockOTPSMSVerificationResponse",
                    |r| users.unlock_otpsms_verification(r),
                )
                .await
        }
        (EXTENSIONS_SERVICE_NAME, "ListOTPSMSAuthenticators") => {
            context
                .unary::<ext::ListOtpsmsAuthenticatorsRequest, _, _, _>(
                    "otpsms.v1.ListOTPSMSAuthenticatorsRequest",
                    "otpsms.v1.ListOTPSMSAuthenticatorsResponse",
                    |r| users.list_otpsms_authenticators(r),
                )
                .await
        }
        (crate::SIGN_IN_SERVICE_NAME, "RequestOTPSMSChallenge") => {
            context
                .unary::<ext::RequestOtpsmsChallengeRequest, _, _, _>(
                    "otpsms.v1.RequestOTPSMSChallengeRequest",
                    "otpsms.v1.RequestOTPSMSChallengeResponse",
                    |r| users.request_otpsms_challenge(r),
                )
                .await
        }
        (crate::SIGN_IN_SERVICE_NAME, "CheckOTPSMSChallenge") => {
            context
                .unary::<ext::CheckOtpsmsChallengeRequest, _, _, _>(
                    "otpsms.v1.CheckOTPSMSChallengeRequest",
                    "otpsms.v1.CheckOTPSMSChallengeResponse",
                    |r| users.check_otpsms_challenge(r),
                )
                .await
        }
        _ => Err(ConnectError::new(
            Code::Unimplemented,
            format!("{service}/{method} is not implemented"),
        )),
    }
}

/// `Connect-Timeout-Ms`: an integer of at most 10 digits (0: the deadline has passed).
fn timeout(headers: &HeaderMap) -> Result<Option<Duration>, ConnectError> {
    let Some(value) = headers.get("connect-timeout-ms") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ConnectError::new(
            Code::InvalidArgument,
            "connect-timeout-ms must be a positive integer of at most 10 digits",
        ));
    }
    Ok(Some(Duration::from_millis(
        text.parse().unwrap_or(u64::MAX),
    )))
}

/// A decoded request's surroundings.
struct Context {
    codec: Codec,
    bytes: Bytes,
    metadata: MetadataMap,
    extensions: tonic::Extensions,
    timeout: Option<Duration>,
}

impl Context {
    /// Decodes the request as `Req` (named `input` in the definitions), calls `handler`, and
    /// encodes its answer (`output`) in the request's codec.
    async fn unary<Req, Res, F, Fut>(
        self,
        input: &str,
        output: &str,
        handler: F,
    ) -> Result<Response, ConnectError>
    where
        Req: Message + Default,
        Res: Message,
        F: FnOnce(tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
    {
        let message: Req = match self.codec {
            Codec::Proto => Req::decode(self.bytes).map_err(|e| {
                ConnectError::new(Code::InvalidArgument, format!("malformed message: {e}"))
            })?,
            Codec::Json => from_json(input, &self.bytes)?,
        };
        let request = tonic::Request::from_parts(self.metadata, self.extensions, message);
        if self.timeout.is_some_and(|limit| limit.is_zero()) {
            // A deadline that has passed already: the call must not run (a timer of zero
            // would still poll it once, and a quick call would finish).
            return Err(ConnectError::new(
                Code::DeadlineExceeded,
                "the call's time ran out",
            ));
        }
        let answer = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, handler(request))
                .await
                .map_err(|_| {
                    ConnectError::new(Code::DeadlineExceeded, "the call's time ran out")
                })?,
            None => handler(request).await,
        }
        .map_err(ConnectError)?;
        let (metadata, message, _) = answer.into_parts();
        let body = match self.codec {
            Codec::Proto => message.encode_to_vec(),
            Codec::Json => to_json(output, &message)?,
        };
        let mut response = Response::new(Body::from(body));
        *response.headers_mut() = metadata.into_headers();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.codec.content_type()),
        );
        Ok(response)
    }
}

/// A message from the proto3 JSON mapping: unknown fields are ignored, as a client of a newer
/// revision of the definitions may send them.
fn from_json<Req: Message + Default>(name: &str, bytes: &[u8]) -> Result<Req, ConnectError> {
    let invalid =
        |e: String| ConnectError::new(Code::InvalidArgument, format!("malformed JSON: {e}"));
    // An empty body is the empty message, as in the binary codec.
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let dynamic =
        DynamicMessage::deserialize_with_options(descriptor(name), &mut deserializer, &options)
            .map_err(|e| invalid(e.to_string()))?;
    deserializer.end().map_err(|e| invalid(e.to_string()))?;
    Req::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| invalid(e.to_string()))
}

/// A message in the proto3 JSON mapping (lowerCamelCase names, default values omitted).
fn to_json<Res: Message>(name: &str, message: &Res) -> Result<Vec<u8>, ConnectError> {
    let dynamic = DynamicMessage::decode(descriptor(name), message.encode_to_vec().as_slice())
        .map_err(|e| ConnectError::new(Code::Internal, e.to_string()))?;
    serde_json::to_vec(&dynamic).map_err(|e| ConnectError::new(Code::Internal, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_protocols_name_and_status() {
        let table = [
            (Code::Cancelled, "canceled", 499),
            (Code::Unknown, "unknown", 500),
            (Code::InvalidArgument, "invalid_argument", 400),
            (Code::DeadlineExceeded, "deadline_exceeded", 504),
            (Code::NotFound, "not_found", 404),
            (Code::AlreadyExists, "already_exists", 409),
            (Code::PermissionDenied, "permission_denied", 403),
            (Code::ResourceExhausted, "resource_exhausted", 429),
            (Code::FailedPrecondition, "failed_precondition", 400),
            (Code::Aborted, "aborted", 409),
            (Code::OutOfRange, "out_of_range", 400),
            (Code::Unimplemented, "unimplemented", 501),
            (Code::Internal, "internal", 500),
            (Code::Unavailable, "unavailable", 503),
            (Code::DataLoss, "data_loss", 500),
            (Code::Unauthenticated, "unauthenticated", 401),
        ];
        for (code, name, status) in table {
            assert_eq!(
                (code_name(code), http_status(code).as_u16()),
                (name, status)
            );
        }
    }

    #[test]
    fn timeouts_are_one_to_ten_digits() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("connect-timeout-ms", v.parse().unwrap());
            timeout(&h).map_err(|_| ())
        };
        assert_eq!(with("1500"), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(with("0"), Ok(Some(Duration::ZERO)));
        assert_eq!(
            with("9999999999"),
            Ok(Some(Duration::from_millis(9_999_999_999)))
        );
        for bad in ["", "-1", "1.5", "12345678901", "1e3"] {
            assert!(with(bad).is_err(), "{bad:?}");
        }
        assert_eq!(timeout(&HeaderMap::new()).map_err(|_| ()), Ok(None));
    }

    #[test]
    fn json_ignores_unknown_fields_and_refuses_bad_types() {
        let name = "zitadel.resources.user.v3alpha.VerifyOTPSMSRegistrationRequest";
        let request: crate::user::VerifyOtpsmsRegistrationRequest = from_json(
            name,
            br#"{"id":"u1","otpSmsId":"r1","code":"123","newerField":7}"#,
        )
        .map_err(|_| ())
        .unwrap();
        assert_eq!(
            (request.id.as_str(), request.otp_sms_id.as_str()),
            ("u1", "r1")
        );
        assert!(
            from_json::<crate::user::VerifyOtpsmsRegistrationRequest>(name, br#"{"id":5}"#)
                .is_err()
        );
        assert!(from_json::<crate::user::VerifyOtpsmsRegistrationRequest>(name, b"{} x").is_err());
    }
}
