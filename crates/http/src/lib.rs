//! # otp-sms-http
//!
//! The v3alpha OTP SMS calls on HTTP/JSON, as an `axum` router a host can mount:
//!
//! | call | route |
//! |---|---|
//! | `AddOTPSMSAuthenticator` | `POST /resources/v3alpha/users/{id}/otp_sms` (body: a `SetPhone` object) |
//! | `VerifyOTPSMSRegistration` | `POST /resources/v3alpha/users/{id}/otp_sms/{otpSmsId}/_verify` (body: the code as a JSON string) |
//! | `RemoveOTPSMSAuthenticator` | `DELETE /resources/v3alpha/users/{id}/otp_sms/{otpSmsId}` |
//! | (extension) resend a code | `POST /resources/v3alpha/users/{id}/otp_sms/{otpSmsId}/_resend_code` |
//! | (extension) lift the user's verification lock | `POST /resources/v3alpha/users/{id}/otp_sms/_unlock` |
//!
//! `instance.id` / `instance.domain` and `organization.org_id` / `organization.org_domain`
//! (or `organization.orgId` / `organization.orgDomain`) travel as query parameters. The caller
//! is the [`Caller`] the host's middleware put in the request's extensions, or else the one the
//! host's [`Authenticator`] finds for `Authorization: Bearer <token>`; users and permissions
//! come from the ports inside the [`CommandService`]. Every error of a call, the router's own
//! rejections included (malformed JSON, a wrong content type, a body over [`MAX_BODY_BYTES`]),
//! is a `google.rpc.Status` body with the HTTP status of the contract's table.
//!
//! [`router`] is made to be embedded: it has no fallback and no `/openapi.json`, so it merges
//! into a host's router that has its own, or nests under a prefix; [`openapi_nested`] is the
//! document for that prefix and [`openapi_route`] serves it where the host likes.
//! [`standalone_router`] adds the document at `/openapi.json` and `google.rpc.Status` answers
//! for unknown routes and methods, as `otp-sms-server` serves it.
//!
//! ```
//! # use std::sync::Arc;
//! # fn mount(service: otp_sms_core::CommandService, auth: Arc<dyn otp_sms_core::Authenticator>) {
//! // Nested under a prefix, next to the host's own routes and fallback.
//! let app: axum::Router = axum::Router::new()
//!     .route("/", axum::routing::get(|| async { "the host's home" }))
//!     .nest("/otp", otp_sms_http::router(service, auth))
//!     .route(
//!         "/otp/openapi.json",
//!         otp_sms_http::openapi_route(otp_sms_http::openapi_nested("/otp")),
//!     )
//!     .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "the host's 404") });
//! # }
//! ```

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, Method, Uri};
use axum::response::IntoResponse;
use axum::{Json, Router};
use otp_sms_core::{
    request_caller, resolve_caller, AddRequest, Authenticator, Caller, CallerEvidence,
    ClientAddress, CommandService, Delivery, Error, InstanceRef, OrganizationRef,
    PhoneVerification, RegistrationRequest, UserRequest, VerifyRequest,
};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod document;
mod error;
mod sign_in;
pub mod wire;

pub use document::{EXCLUSIVE_PARAMETERS, REFUSALS_BEYOND_THE_SCHEMA};
use error::invalid;
pub use error::ApiError;
use wire::{
    AddResponseJson, CodeObject, DetailsJson, DetailsResponseJson, RemoveResponseJson, ResendCode,
    ResendResponseJson, SetPhone, StatusJson,
};

/// The largest request body accepted: the biggest valid body is well under 1 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What the handlers share.
#[derive(Clone)]
struct Api {
    service: CommandService,
    auth: Arc<dyn Authenticator>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        // As reflection serves them (the proto's protoc-gen-openapiv2 options).
        title = "User Service",
        version = "3.0-alpha",
        description = "Add a phone as a second factor, verify it with a one-time code, remove it; sign in with it (a challenge, then a check). \
                       Errors are google.rpc.Status bodies."
    ),
    components(schemas(StatusJson, DetailsJson, wire::OwnerJson, wire::Empty)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

fn documented_routes() -> OpenApiRouter<Api> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(add))
        .routes(routes!(verify))
        .routes(routes!(remove))
        .routes(routes!(resend_code))
        .routes(routes!(unlock_verification))
        .routes(routes!(list_phones))
        .routes(routes!(sign_in::challenge))
        .routes(routes!(sign_in::check))
}

/// The OpenAPI document of the calls, generated from the handlers' annotations, which also
/// register the routes: the document cannot list a route the router does not serve. Its paths
/// are as [`router`] serves them at the root; see [`openapi_nested`] for a router nested under
/// a prefix.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = documented_routes().split_for_parts().1;
    document::state_facts(&mut document);
    document
}

/// The OpenAPI document of [`router`] nested under `prefix` (`Router::nest(prefix, …)`): every
/// path starts with the prefix. A prefix without a leading `/` gets one; a trailing `/` is
/// dropped; `""` and `"/"` mean the root.
///
/// ```
/// let doc = otp_sms_http::openapi_nested("/auth/otp");
/// assert!(doc
///     .paths
///     .paths
///     .contains_key("/auth/otp/resources/v3alpha/users/{id}/otp_sms"));
/// ```
pub fn openapi_nested(prefix: &str) -> utoipa::openapi::OpenApi {
    let prefix = prefix.trim_end_matches('/');
    let prefix = match prefix {
        "" => String::new(),
        p if p.starts_with('/') => p.to_owned(),
        p => format!("/{p}"),
    };
    let mut document = openapi();
    document.paths.paths = std::mem::take(&mut document.paths.paths)
        .into_iter()
        .map(|(path, item)| (format!("{prefix}{path}"), item))
        .collect();
    document
}

/// A `GET` route that serves `document` as JSON, for the host to place where it likes:
///
/// ```
/// # use std::sync::Arc;
/// # fn mount(service: otp_sms_core::CommandService, auth: Arc<dyn otp_sms_core::Authenticator>) {
/// let app: axum::Router = axum::Router::new()
///     .nest("/otp", otp_sms_http::router(service, auth))
///     .route(
///         "/otp/openapi.json",
///         otp_sms_http::openapi_route(otp_sms_http::openapi_nested("/otp")),
///     );
/// # }
/// ```
pub fn openapi_route<S>(document: utoipa::openapi::OpenApi) -> axum::routing::MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    // Serialised once: the document never changes while the process runs.
    let body = Bytes::from(serde_json::to_vec(&document).expect("an OpenAPI document serialises"));
    axum::routing::get(move || {
        let body = body.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], body) }
    })
}

/// The calls' routes, for a host to mount with `merge` or `nest`: no fallback and no
/// `/openapi.json`, so the host's own 404s, method-not-allowed answers and documents stay the
/// host's (see [`openapi_nested`] and [`openapi_route`] for the document). Errors of the calls,
/// the router's own rejections included (malformed JSON, a wrong content type, a body over
/// [`MAX_BODY_BYTES`]), are `google.rpc.Status` bodies.
///
/// The caller is the one the host's middleware put in the request's extensions, if any, else
/// the one `auth` finds for the `Authorization: Bearer` token ([`otp_sms_core::resolve_caller`]).
pub fn router(service: CommandService, auth: Arc<dyn Authenticator>) -> Router {
    let (routes, _) = documented_routes().split_for_parts();
    routes.with_state(Api { service, auth })
}

/// The router of a server that serves nothing else: [`router`], `GET /openapi.json`, and
/// `google.rpc.Status` answers ([`unknown_route`], [`unknown_method`]) for unknown routes and
/// methods. This is what `otp-sms-server` serves.
pub fn standalone_router(service: CommandService, auth: Arc<dyn Authenticator>) -> Router {
    router(service, auth)
        .route("/openapi.json", openapi_route(openapi()))
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_method)
}

/// A fallback answering NOT_FOUND (code 5, HTTP 404) as a `google.rpc.Status`, for a server
/// whose unknown routes should answer in the API's error format.
pub async fn unknown_route(uri: Uri) -> ApiError {
    ApiError(Error::UnknownCall(format!("no route for {}", uri.path())))
}

/// A method-not-allowed fallback answering as ZITADEL's gateway does: HTTP 405 with a
/// `google.rpc.Status` of code 12 UNIMPLEMENTED.
pub async fn unknown_method(method: Method, uri: Uri) -> axum::response::Response {
    tracing::debug!(%method, path = uri.path(), "method not allowed");
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        Json(StatusJson {
            code: 12,
            message: "Method Not Allowed".into(),
            details: Vec::new(),
        }),
    )
        .into_response()
}

/// The query parameters every call takes, for the OpenAPI document (parsing is
/// [`parse_query`], which also accepts the lowerCamelCase spellings).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct ContextParams {
    /// Expect the caller's instance to have this id.
    #[param(rename = "instance.id")]
    instance_id: Option<String>,
    /// Expect the caller's instance to have this domain.
    #[param(rename = "instance.domain")]
    instance_domain: Option<String>,
    /// Expect the user in this organization.
    #[param(rename = "organization.orgId")]
    org_id: Option<String>,
    /// Expect the user in the organization with this domain.
    #[param(rename = "organization.orgDomain")]
    org_domain: Option<String>,
}

/// The header a client sends to make a call safe to retry (docs/api.md, idempotency keys).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct IdempotencyParams {
    /// A key of the client's (1 to 255 visible ASCII characters; a Structured Field string
    /// such as `"8e03978e-40d5-43e8-bc93-6894a57f9324"`, or bare). A retry under the same
    /// key within 24 hours gets the first call's answer; the key sent with another request
    /// is INVALID_ARGUMENT.
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}

/// The request's query parameters that the contract defines.
#[derive(Debug, Default)]
struct Query {
    instance_id: Option<String>,
    instance_domain: Option<String>,
    org_id: Option<String>,
    org_domain: Option<String>,
}

fn parse_query(raw: Option<&str>) -> Result<Query, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|_| invalid("query", "malformed query string"))?;
    let mut q = Query::default();
    for (key, value) in pairs {
        let (slot, field) = match key.as_str() {
            "instance.id" => (&mut q.instance_id, "instance.id"),
            "instance.domain" => (&mut q.instance_domain, "instance.domain"),
            "organization.org_id" | "organization.orgId" => (&mut q.org_id, "organization.org_id"),
            "organization.org_domain" | "organization.orgDomain" => {
                (&mut q.org_domain, "organization.org_domain")
            }
            // Unknown parameters are ignored, as by grpc-gateway.
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(invalid(field, "given more than once"));
        }
    }
    if q.instance_id.is_some() && q.instance_domain.is_some() {
        return Err(invalid(
            "instance",
            "set either instance.id or instance.domain, not both",
        ));
    }
    if q.org_id.is_some() && q.org_domain.is_some() {
        return Err(invalid(
            "organization",
            "set either organization.org_id or organization.org_domain, not both",
        ));
    }
    Ok(q)
}

impl Query {
    fn organization(&self) -> Option<OrganizationRef> {
        match (&self.org_id, &self.org_domain) {
            (Some(id), _) => Some(OrganizationRef::Id(id.clone())),
            (_, Some(domain)) => Some(OrganizationRef::Domain(domain.clone())),
            _ => None,
        }
    }
}

/// Who calls and what the query says, read once for every handler: the caller by the one
/// rule every adapter shares ([`otp_sms_core::request_caller`]: a caller the host's or the
/// server's middleware handed over, else the bearer token; the client's address; the
/// idempotency key), then the query, then the query's instance checked against the caller's.
/// The caller is authenticated before the query (and, as the handlers take it first, before
/// the path or the body) is read, so a request without a valid token learns nothing about
/// their rules.
struct Call {
    caller: Caller,
    query: Query,
}

impl FromRequestParts<Api> for Call {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, ApiError> {
        let evidence = CallerEvidence {
            handed_over: parts.extensions.get::<Caller>().cloned(),
            client: parts.extensions.get::<ClientAddress>().copied(),
            authorization: parts
                .headers
                .get(header::AUTHORIZATION)
                .map(|v| v.as_bytes()),
            idempotency_keys: parts
                .headers
                .get_all(IDEMPOTENCY_KEY)
                .iter()
                .map(|v| v.as_bytes())
                .collect(),
        };
        let authenticated = request_caller(api.auth.as_ref(), evidence, None).await?;
        let query = parse_query(parts.uri.query())?;
        let instance = match (&query.instance_id, &query.instance_domain) {
            (Some(id), _) => Some(InstanceRef::Id(id.clone())),
            (_, Some(domain)) => Some(InstanceRef::Domain(domain.clone())),
            _ => None,
        };
        // The instance the request names must be the caller's.
        let caller = resolve_caller(api.auth.as_ref(), Some(authenticated), None, instance).await?;
        Ok(Self { caller, query })
    }
}

/// The idempotency key's header (case-insensitive on the wire).
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The body, read as JSON whatever its content type says (ZITADEL's gateway registers its JSON
/// reader for `application/json`, `*/*` and `*`, so any or no `Content-Type` is JSON there
/// too), up to [`MAX_BODY_BYTES`].
async fn json_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| {
            invalid(
                "body",
                format!("the request body must be at most {MAX_BODY_BYTES} bytes"),
            )
        })
}

fn path_error(rejection: PathRejection) -> ApiError {
    invalid("id", format!("malformed path: {}", rejection.body_text()))
}

/// Add a OTP SMS authenticator
///
/// Add a phone as an OTP SMS second factor. Without an option, the code is sent by SMS; with `returnCode` it comes back in the
/// response; with `isVerified: true` the phone is verified at once.
#[utoipa::path(
    post,
    path = "/resources/v3alpha/users/{id}/otp_sms",
    operation_id = "ZITADELUsers_AddOTPSMSAuthenticator",
    params(
        ("id" = String, Path, description = "The user (1..=200 characters)."),
        ContextParams,
        IdempotencyParams,
    ),
    request_body(content = SetPhone, content_type = "application/json"),
    responses(
        (status = 200, description = "OTP SMS authenticator successfully added", body = AddResponseJson),
        (status = 400, description = "INVALID_ARGUMENT", body = StatusJson),
        (status = 401, description = "UNAUTHENTICATED", body = StatusJson),
        (status = 403, description = "Returned when the user does not have permission to access the resource.", body = StatusJson),
        (status = 404, description = "Returned when the resource does not exist.", body = StatusJson),
        (status = 429, description = "RESOURCE_EXHAUSTED (a send budget)", body = StatusJson),
        (status = "default", description = "An unexpected error response.", body = StatusJson),
    )
)]
async fn add(
    State(api): State<Api>,
    Call { caller, query }: Call,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Json<AddResponseJson>, ApiError> {
    let Path(user_id) = path.map_err(path_error)?;
    let bytes = json_body(body).await?;
    let phone: SetPhone = serde_json::from_slice(&bytes)
        .map_err(|e| invalid("phone", format!("malformed SetPhone JSON: {e}")))?;
    let verification = match (&phone.send_code, &phone.return_code, phone.is_verified) {
        (_, None, None) => PhoneVerification::SendCode,
        (None, Some(_), None) => PhoneVerification::ReturnCode,
        (None, None, Some(v)) => PhoneVerification::IsVerified(v),
        _ => {
            return Err(invalid(
                "phone.verification",
                "set at most one of sendCode, returnCode, isVerified",
            ))
        }
    };
    let added = api
        .service
        .add(
            &caller,
            AddRequest {
                user_id,
                organization: query.organization(),
                phone: phone.number,
                verification,
            },
        )
        .await?;
    Ok(Json(AddResponseJson {
        details: DetailsJson::from(&added.details),
        otp_sms_id: added.registration_id.into_string(),
        verification_code: added.verification_code.map(|c| c.expose().to_owned()),
    }))
}

/// Verify OTP SMS registration
///
/// Verify the OTP SMS registration with the code. The body is the code as a JSON string, e.g. `"12345678"` (`{"code": "12345678"}` is
/// accepted too).
#[utoipa::path(
    post,
    path = "/resources/v3alpha/users/{id}/otp_sms/{otpSmsId}/_verify",
    operation_id = "ZITADELUsers_VerifyOTPSMSRegistration",
    params(
        ("id" = String, Path, description = "The user (1..=200 characters)."),
        ("otpSmsId" = String, Path, description = "The registration, as returned by the add (1..=200 characters)."),
        ContextParams,
        IdempotencyParams,
    ),
    request_body(
        content = String,
        content_type = "application/json",
        description = "The verification code: non-empty and at most 200 characters.",
        example = json!("12345678")
    ),
    responses(
        (status = 200, description = "OTP SMS authenticator successfully verified", body = DetailsResponseJson),
        (status = 400, description = "INVALID_ARGUMENT (wrong code, bounds) or FAILED_PRECONDITION (verified, expired, too many attempts)", body = StatusJson),
        (status = 401, description = "UNAUTHENTICATED", body = StatusJson),
        (status = 403, description = "Returned when the user does not have permission to access the resource.", body = StatusJson),
        (status = 404, description = "Returned when the resource does not exist.", body = StatusJson),
        (status = "default", description = "An unexpected error response.", body = StatusJson),
    )
)]
async fn verify(
    State(api): State<Api>,
    Call { caller, query }: Call,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Json<DetailsResponseJson>, ApiError> {
    let Path((user_id, registration_id)) = path.map_err(path_error)?;
    let bytes = json_body(body).await?;
    // The serde message is not echoed: it could quote the code.
    let code = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::String(code)) => code,
        Ok(value @ serde_json::Value::Object(_)) => serde_json::from_value::<CodeObject>(value)
            .map(|o| o.code)
            .map_err(|_| invalid("code", "the body must be the code as a JSON string"))?,
        _ => {
            return Err(invalid(
                "code",
                "the body must be the code as a JSON string",
            ))
        }
    };
    let details = api
        .service
        .verify(
            &caller,
            VerifyRequest {
                user_id,
                organization: query.organization(),
                registration_id,
                code,
            },
        )
        .await?;
    Ok(Json(DetailsResponseJson {
        details: DetailsJson::from(&details),
    }))
}

/// Remove a OTP SMS authenticator
///
/// Remove the OTP SMS registration, so that it no longer serves as a second factor.
#[utoipa::path(
    delete,
    path = "/resources/v3alpha/users/{id}/otp_sms/{otpSmsId}",
    operation_id = "ZITADELUsers_RemoveOTPSMSAuthenticator",
    params(
        ("id" = String, Path, description = "The user (1..=200 characters)."),
        ("otpSmsId" = String, Path, description = "The registration (1..=200 characters)."),
        ContextParams,
        IdempotencyParams,
    ),
    responses(
        (status = 200, description = "OTP SMS authenticator successfully removed", body = RemoveResponseJson),
        (status = 401, description = "UNAUTHENTICATED", body = StatusJson),
        (status = 403, description = "Returned when the user does not have permission to access the resource.", body = StatusJson),
        (status = 404, description = "Returned when the resource does not exist.", body = StatusJson),
        (status = "default", description = "An unexpected error response.", body = StatusJson),
    )
)]
async fn remove(
    State(api): State<Api>,
    Call { caller, query }: Call,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<RemoveResponseJson>, ApiError> {
    let Path((user_id, registration_id)) = path.map_err(path_error)?;
    let details = api
        .service
        .remove(
            &caller,
            RegistrationRequest {
                user_id,
                organization: query.organization(),
                registration_id,
            },
        )
        .await?;
    Ok(Json(RemoveResponseJson {
        details: DetailsJson::from(&details),
    }))
}

/// Issue a new code (extension: not in the v3alpha contract).
///
/// The old code becomes void. At most one code per 60 seconds and 5 per hour per registration;
/// beyond that RESOURCE_EXHAUSTED (429) with `Retry-After`.
#[utoipa::path(
    post,
    path = "/resources/v3alpha/users/{id}/otp_sms/{otpSmsId}/_resend_code",
    operation_id = "OTPSMSExtensions_ResendOTPSMSCode",
    params(
        ("id" = String, Path, description = "The user (1..=200 characters)."),
        ("otpSmsId" = String, Path, description = "The registration (1..=200 characters)."),
        ContextParams,
        IdempotencyParams,
    ),
    request_body(content = ResendCode, content_type = "application/json"),
    responses(
        (status = 200, description = "A new code was issued", body = ResendResponseJson),
        (status = 400, description = "INVALID_ARGUMENT or FAILED_PRECONDITION", body = StatusJson),
        (status = 401, description = "UNAUTHENTICATED", body = StatusJson),
        (status = 403, description = "PERMISSION_DENIED", body = StatusJson),
        (status = 404, description = "NOT_FOUND", body = StatusJson),
        (status = 429, description = "RESOURCE_EXHAUSTED", body = StatusJson),
        (status = "default", description = "An unexpected error", body = StatusJson),
    )
)]
async fn resend_code(
    State(api): State<Api>,
    Call { caller, query }: Call,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Body,
) -> Result<Json<ResendResponseJson>, ApiError> {
    let Path((user_id, registration_id)) = path.map_err(path_error)?;
    let bytes = json_body(body).await?;
    let options: ResendCode = serde_json::from_slice(&bytes)
        .map_err(|e| invalid("body", format!("malformed ResendCode JSON: {e}")))?;
    let delivery = match (&options.send_code, &options.return_code) {
        (_, None) => Delivery::Send,
        (None, Some(_)) => Delivery::Return,
        _ => {
            return Err(invalid(
                "verification",
                "set at most one of sendCode, returnCode",
            ))
        }
    };
    let resent = api
        .service
        .resend_code(
            &caller,
            RegistrationRequest {
                user_id,
                organization: query.organization(),
                registration_id,
            },
            delivery,
        )
        .await?;
    Ok(Json(ResendResponseJson {
        details: DetailsJson::from(&resent.details),
        verification_code: resent.verification_code.map(|c| c.expose().to_owned()),
    }))
}

/// Lift the user's verification lock (extension: not in the v3alpha contract).
///
/// After too many wrong codes in a row (100 by default, NIST SP 800-63B) across the user's
/// codes and registrations, verification answers FAILED_PRECONDITION until the lock's period
/// ends or a caller with `user.write` calls this. Needs `user.write` whoever the caller is;
/// answers `{}` whether or not the user was locked. No body.
#[utoipa::path(
    post,
    path = "/resources/v3alpha/users/{id}/otp_sms/_unlock",
    operation_id = "OTPSMSExtensions_UnlockOTPSMSVerification",
    params(
        ("id" = String, Path, description = "The user (1..=200 characters)."),
        ContextParams,
    ),
    responses(
        (status = 200, description = "Unlocked (or was not locked)", body = wire::Empty),
        (status = 400, description = "INVALID_ARGUMENT", body = StatusJson),
        (status = 401, description = "UNAUTHENTICATED", body = StatusJson),
        (status = 403, description = "PERMISSION_DENIED", body = StatusJson),
        (status = 404, description = "NOT_FOUND", body = StatusJson),
        (status = 503, description = "UNAVAILABLE", body = StatusJson),
        (status = "default", description = "An unexpected error", body = StatusJson),
    )
)]
async fn unlock_verification(
    State(api): State<Api>,
    Call { caller, query }: Call,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<wire::Empty>, ApiError> {
    let Path(user_id) = path.map_err(path_error)?;
    api.service
        .unlock_verification(
            &caller,
            UserRequest {
                user_id,
                organization: query.organization(),
            },
        )
        .await?;
    Ok(Json(wire::Empty {}))
}

/// List the user's OTP SMS authenticators (extension: not in the v3alpha contract).
///
/// The user's live registrations, oldest first: `otpSmsId`, `phone`, `isVerified` (upstream's
/// `OTPSMS`), and `created`, `verifiedAt`, `lastSignIn`. The number is masked but for its
/// country code and last two digits unless the caller holds `user.write`.
#[utoipa::path(
    get,
    path = "/resources/v3alpha/users/{id}/otp_sms",
    operation_id = "OTPSMSExtensions_ListOTPSMSAuthenticators",
    params(
        ("id" = String, Path, description = "The user (1..=200 characters)."),
        ContextParams,
    ),
    responses(
        (status = 200, description = "The user's registrations", body = wire::ListResponseJson),
        (status = 400, description = "INVALID_ARGUMENT", body = StatusJson),
        (status = 401, description = "UNAUTHENTICATED", body = StatusJson),
        (status = 403, description = "PERMISSION_DENIED", body = StatusJson),
        (status = 404, description = "NOT_FOUND", body = StatusJson),
        (status = "default", description = "An unexpected error", body = StatusJson),
    )
)]
async fn list_phones(
    State(api): State<Api>,
    Call { caller, query }: Call,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<wire::ListResponseJson>, ApiError> {
    let Path(user_id) = path.map_err(path_error)?;
    let phones = api
        .service
        .list_phones(
            &caller,
            UserRequest {
                user_id,
                organization: query.organization(),
            },
        )
        .await?;
    Ok(Json(wire::ListResponseJson {
        otp_sms: phones.into_iter().map(wire::OtpSmsJson::from).collect(),
    }))
}
