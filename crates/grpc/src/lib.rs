//! # otp-sms-grpc
//!
//! The OTP SMS calls of `zitadel.resources.user.v3alpha.ZITADELUsers` on gRPC and gRPC-web,
//! wire compatible with the public API definition: same package, service, method and message
//! names, same field numbers and types. The `.proto` files (in `proto/`) declare only what
//! these calls need and are compiled in Rust (`protox`), so building needs no `protoc`.
//!
//! - [`router`] gives an `axum::Router` that serves the service (gRPC over HTTP/2, gRPC-web
//!   over HTTP/1.1 via `tonic-web`) and gRPC server reflection, to merge with the JSON router on
//!   one port. Other methods of `ZITADELUsers` answer UNIMPLEMENTED.
//! - Errors are `tonic::Status` with the codes of [`otp_sms_core::Error::rpc_code`], the same
//!   mapping the HTTP adapter uses. The caller is the [`otp_sms_core::Caller`] a host's
//!   middleware put in the request's extensions, or else the one `authorization: Bearer`
//!   metadata names ([`otp_sms_core::resolve_caller`]).
//! - [`proto`] holds the generated messages, server and client; [`FILE_DESCRIPTOR_SET`] the
//!   compiled definitions.
//!
//! ```
//! use otp_sms_grpc::proto::zitadel::resources::user::v3alpha::VerifyOtpsmsRegistrationRequest;
//! use prost::Message;
//! let request = VerifyOtpsmsRegistrationRequest { code: "12345678".into(), ..Default::default() };
//! // Field 5, length-delimited: tag byte 5 << 3 | 2 = 0x2a.
//! assert_eq!(request.encode_to_vec()[0], 0x2a);
//! // Debug is redacted: requests can be logged without leaking codes.
//! assert!(!format!("{request:?}").contains("12345678"));
//! ```

use std::fmt;
use std::sync::Arc;

use otp_sms_core::{
    request_caller, AddRequest, Authenticator, Caller, CallerEvidence, ChallengeRequest,
    CheckRequest, ClientAddress, CommandService, Details, Error, ErrorStatus, InstanceRef,
    OrganizationRef, OwnerType, PhoneVerification, RegistrationRequest, StatusDetail, UserRequest,
    VerifyRequest,
};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

/// The generated protobuf messages, gRPC server and client.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    /// `otpsms.*`: this project's extensions.
    pub mod otpsms {
        /// `otpsms.v1`
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/otpsms.v1.rs"));
        }
    }
    /// `zitadel.*`
    pub mod zitadel {
        /// `zitadel.v1`: the error detail of every error.
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/zitadel.v1.rs"));
        }
        /// `zitadel.object.*`
        pub mod object {
            /// `zitadel.object.v3alpha`
            pub mod v3alpha {
                include!(concat!(env!("OUT_DIR"), "/zitadel.object.v3alpha.rs"));
            }
        }
        /// `zitadel.resources.*`
        pub mod resources {
            /// `zitadel.resources.object.*`
            pub mod object {
                /// `zitadel.resources.object.v3alpha`
                pub mod v3alpha {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/zitadel.resources.object.v3alpha.rs"
                    ));
                }
            }
            /// `zitadel.resources.user.*`
            pub mod user {
                /// `zitadel.resources.user.v3alpha`
                pub mod v3alpha {
                    include!(concat!(
                        env!("OUT_DIR"),
                        "/zitadel.resources.user.v3alpha.rs"
                    ));
                }
            }
        }
    }
}

use ext::otpsms_extensions_server::{OtpsmsExtensions, OtpsmsExtensionsServer};
use ext::otpsms_sign_in_server::{OtpsmsSignIn, OtpsmsSignInServer};
use proto::otpsms::v1 as ext;
use proto::zitadel::object::v3alpha as object;
use proto::zitadel::resources::object::v3alpha as resources_object;
use proto::zitadel::resources::user::v3alpha as user;
use user::zitadel_users_server::{ZitadelUsers, ZitadelUsersServer};

pub mod codec;
mod connect;

pub use connect::{
    code_name as connect_code_name, error_response as connect_error_response,
    http_status as connect_http_status, is_connect,
};

/// The compiled `.proto` files (an encoded `google.protobuf.FileDescriptorSet`).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// The gRPC service name, `zitadel.resources.user.v3alpha.ZITADELUsers`.
pub const SERVICE_NAME: &str = user::zitadel_users_server::SERVICE_NAME;

impl fmt::Debug for user::VerifyOtpsmsRegistrationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyOtpsmsRegistrationRequest")
            .field("instance", &self.instance)
            .field("organization", &self.organization)
            .field("id", &self.id)
            .field("otp_sms_id", &self.otp_sms_id)
            .field("code", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for user::SetPhone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetPhone")
            .field("number", &otp_sms_core::mask_number(&self.number))
            .field("verification", &self.verification)
            .finish()
    }
}

impl fmt::Debug for user::set_phone::Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SendCode(_) => f.write_str("SendCode"),
            Self::ReturnCode(_) => f.write_str("ReturnCode"),
            Self::IsVerified(v) => f.debug_tuple("IsVerified").field(v).finish(),
        }
    }
}

impl fmt::Debug for user::AddOtpsmsAuthenticatorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddOtpsmsAuthenticatorResponse")
            .field("details", &self.details)
            .field("otp_sms_id", &self.otp_sms_id)
            .field(
                "verification_code",
                &self.verification_code.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The one mapping from the library's errors to gRPC: [`ErrorStatus`], with its details as
/// `google.protobuf.Any` in `grpc-status-details-bin` (which Connect's answers carry too).
pub fn status(error: &Error) -> Status {
    let status = ErrorStatus::of(error);
    let code = tonic::Code::from_i32(status.code.as_i32());
    let details = status.details.iter().map(detail).collect();
    let rpc_status = RpcStatus {
        code: code as i32,
        message: status.message.clone(),
        details,
    };
    Status::with_details(
        code,
        status.message,
        prost::Message::encode_to_vec(&rpc_status).into(),
    )
}

/// One detail as `google.protobuf.Any`.
fn detail(detail: &StatusDetail) -> prost_types::Any {
    let name = detail.type_name();
    match detail {
        StatusDetail::ErrorId { id, message } => any(
            name,
            &proto::zitadel::v1::ErrorDetail {
                id: (*id).to_owned(),
                message: message.clone(),
            },
        ),
        StatusDetail::BadRequest { field, description } => any(
            name,
            &tonic_types::pb::BadRequest {
                field_violations: vec![tonic_types::pb::bad_request::FieldViolation {
                    field: (*field).to_owned(),
                    description: description.clone(),
                    ..Default::default()
                }],
            },
        ),
        StatusDetail::RetryInfo(after) => any(
            name,
            &tonic_types::pb::RetryInfo {
                retry_delay: Some(prost_types::Duration {
                    seconds: after.as_secs() as i64,
                    nanos: after.subsec_nanos() as i32,
                }),
            },
        ),
        // A detail this adapter does not know yet: its type alone.
        _ => prost_types::Any {
            type_url: format!("type.googleapis.com/{name}"),
            value: Vec::new(),
        },
    }
}

/// `google.protobuf.Any` of a message named `name`.
fn any(name: &str, message: &impl prost::Message) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/{name}"),
        value: message.encode_to_vec(),
    }
}

/// `google.rpc.Status`, as `grpc-status-details-bin` carries it.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RpcStatus {
    /// The code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// The message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// The details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<prost_types::Any>,
}

fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn details(d: &Details) -> resources_object::Details {
    resources_object::Details {
        id: d.id.to_string(),
        created: Some(timestamp(d.created)),
        changed: Some(timestamp(d.changed)),
        owner: Some(object::Owner {
            r#type: match d.owner.owner_type {
                OwnerType::Unspecified => object::OwnerType::Unspecified,
                OwnerType::System => object::OwnerType::System,
                OwnerType::Instance => object::OwnerType::Instance,
                OwnerType::Org => object::OwnerType::Org,
            } as i32,
            id: d.owner.id.clone(),
        }),
    }
}

/// The request's `instance`: absent, or one of its two fields. An `instance {}` that sets
/// neither is INVALID_ARGUMENT, as upstream's `validate.required` oneof makes it.
fn instance_ref(instance: Option<object::Instance>) -> Result<Option<InstanceRef>, Error> {
    let Some(instance) = instance else {
        return Ok(None);
    };
    match instance.property {
        Some(object::instance::Property::Id(id)) => Ok(Some(InstanceRef::Id(id))),
        Some(object::instance::Property::Domain(domain)) => Ok(Some(InstanceRef::Domain(domain))),
        None => Err(Error::invalid(
            "instance",
            "set instance.id or instance.domain, or leave instance out",
        )),
    }
}

/// The request's `organization`, as [`instance_ref`]: an empty one is INVALID_ARGUMENT.
fn organization_ref(org: Option<object::Organization>) -> Result<Option<OrganizationRef>, Status> {
    let Some(org) = org else {
        return Ok(None);
    };
    match org.property {
        Some(object::organization::Property::OrgId(id)) => Ok(Some(OrganizationRef::Id(id))),
        Some(object::organization::Property::OrgDomain(domain)) => {
            Ok(Some(OrganizationRef::Domain(domain)))
        }
        None => Err(status(&Error::invalid(
            "organization",
            "set organization.org_id or organization.org_domain, or leave organization out",
        ))),
    }
}

/// `ZITADELUsers` on top of the command service.
#[derive(Clone)]
pub struct UsersService {
    service: CommandService,
    auth: Arc<dyn Authenticator>,
}

impl UsersService {
    /// The service, with the host's authenticator for bearer tokens.
    pub fn new(service: CommandService, auth: Arc<dyn Authenticator>) -> Self {
        Self { service, auth }
    }

    async fn caller<T>(
        &self,
        request: &Request<T>,
        instance: Option<object::Instance>,
    ) -> Result<Caller, Status> {
        let instance = instance_ref(instance).map_err(|e| status(&e))?;
        // A caller the host's middleware authenticated and put in the request's extensions
        // (tonic passes the HTTP request's extensions on) stands in for the token.
        let headers: &axum::http::HeaderMap = request.metadata().as_ref();
        let evidence = CallerEvidence {
            handed_over: request.extensions().get::<Caller>().cloned(),
            client: request.extensions().get::<ClientAddress>().copied(),
            authorization: headers.get("authorization").map(|v| v.as_bytes()),
            idempotency_keys: headers
                .get_all("idempotency-key")
                .iter()
                .map(|v| v.as_bytes())
                .collect(),
        };
        request_caller(self.auth.as_ref(), evidence, instance)
            .await
            .map_err(|e| status(&e))
    }
}

#[tonic::async_trait]
impl ZitadelUsers for UsersService {
    async fn add_otpsms_authenticator(
        &self,
        request: Request<user::AddOtpsmsAuthenticatorRequest>,
    ) -> Result<Response<user::AddOtpsmsAuthenticatorResponse>, Status> {
        let caller = self
            .caller(&request, request.get_ref().instance.clone())
            .await?;
        let req = request.into_inner();
        let phone = req.phone.unwrap_or_default();
        let verification = match phone.verification {
            None | Some(user::set_phone::Verification::SendCode(_)) => PhoneVerification::SendCode,
            Some(user::set_phone::Verification::ReturnCode(_)) => PhoneVerification::ReturnCode,
            Some(user::set_phone::Verification::IsVerified(v)) => PhoneVerification::IsVerified(v),
        };
        let added = self
            .service
            .add(
                &caller,
                AddRequest {
                    user_id: req.id,
                    organization: organization_ref(req.organization)?,
                    phone: phone.number,
                    verification,
                },
            )
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(user::AddOtpsmsAuthenticatorResponse {
            details: Some(details(&added.details)),
            otp_sms_id: added.registration_id.into_string(),
            verification_code: added.verification_code.map(|c| c.expose().to_owned()),
        }))
    }

    async fn verify_otpsms_registration(
        &self,
        request: Request<user::VerifyOtpsmsRegistrationRequest>,
    ) -> Result<Response<user::VerifyOtpsmsRegistrationResponse>, Status> {
        let caller = self
            .caller(&request, request.get_ref().instance.clone())
            .await?;
        let req = request.into_inner();
        let verified = self
            .service
            .verify(
                &caller,
                VerifyRequest {
                    user_id: req.id,
                    organization: organization_ref(req.organization)?,
                    registration_id: req.otp_sms_id,
                    code: req.code,
                },
            )
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(user::VerifyOtpsmsRegistrationResponse {
            details: Some(details(&verified)),
        }))
    }

    async fn remove_otpsms_authenticator(
        &self,
        request: Request<user::RemoveOtpsmsAuthenticatorRequest>,
    ) -> Result<Response<user::RemoveOtpsmsAuthenticatorResponse>, Status> {
        let caller = self
            .caller(&request, request.get_ref().instance.clone())
            .await?;
        let req = request.into_inner();
        let removed = self
            .service
            .remove(
                &caller,
                RegistrationRequest {
                    user_id: req.id,
                    organization: organization_ref(req.organization)?,
                    registration_id: req.otp_sms_id,
                },
            )
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(user::RemoveOtpsmsAuthenticatorResponse {
            details: Some(details(&removed)),
        }))
    }
}

/// `otpsms.v1.OTPSMSExtensions`: the calls this project adds beside the contract.
#[tonic::async_trait]
impl OtpsmsExtensions for UsersService {
    async fn unlock_otpsms_verification(
        &self,
        request: Request<ext::UnlockOtpsmsVerificationRequest>,
    ) -> Result<Response<ext::UnlockOtpsmsVerificationResponse>, Status> {
        let caller = self
            .caller(&request, request.get_ref().instance.clone())
            .await?;
        let req = request.into_inner();
        self.service
            .unlock_verification(
                &caller,
                UserRequest {
                    user_id: req.id,
                    organization: organization_ref(req.organization)?,
                },
            )
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(ext::UnlockOtpsmsVerificationResponse {}))
    }

    async fn list_otpsms_authenticators(
        &self,
        request: Request<ext::ListOtpsmsAuthenticatorsRequest>,
    ) -> Result<Response<ext::ListOtpsmsAuthenticatorsResponse>, Status> {
        let caller = self
            .caller(&request, request.get_ref().instance.clone())
            .await?;
        let req = request.into_inner();
        let phones = self
            .service
            .list_phones(
                &caller,
                UserRequest {
                    user_id: req.id,
                    organization: organization_ref(req.organization)?,
                },
            )
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(ext::ListOtpsmsAuthenticatorsResponse {
            otp_sms: phones
                .into_iter()
                .map(|p| ext::Otpsms {
                    otp_sms_id: p.id.to_string(),
                    phone: p.phone,
                    is_verified: p.is_verified,
                    created: Some(timestamp(p.created)),
                    verified_at: p.verified_at.map(timestamp),
                    last_sign_in: p.last_sign_in.map(timestamp),
                })
                .collect(),
        }))
    }
}

/// `otpsms.v1.OTPSMSSignIn`: sign-in with a registered phone (`CommandService::challenge` and
/// `check`).
#[tonic::async_trait]
impl OtpsmsSignIn for UsersService {
    async fn request_otpsms_challenge(
        &self,
        request: Request<ext::RequestOtpsmsChallengeRequest>,
    ) -> Result<Response<ext::RequestOtpsmsChallengeResponse>, Status> {
        let caller = self
            .caller(&request, request.get_ref().instance.clone())
            .await?;
        let req = request.into_inner();
        let mut challenge = ChallengeRequest::new(req.id, req.binding);
        challenge.organization = organization_ref(req.organization)?;
        challenge.registration_id = req.otp_sms_id;
        challenge.return_code = req.otp_sms.is_some_and(|o| o.return_code);
        let challenged = self
            .service
            .challenge(&caller, challenge)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(ext::RequestOtpsmsChallengeResponse {
            details: Some(details(&challenged.details)),
            otp_sms_id: challenged.registration_id.to_string(),
            challenges: Some(ext::Challenges {
                otp_sms: challenged.code.map(|c| c.expose().to_owned()),
            }),
        }))
    }

    async fn check_otpsms_challenge(
        &self,
        request: Request<ext::CheckOtpsmsChallengeRequest>,
    ) -> Result<Response<ext::CheckOtpsmsChallengeResponse>, Status> {
        let caller = self
            .caller(&request, request.get_ref().instance.clone())
            .await?;
        let req = request.into_inner();
        let code = req.otp_sms.map(|o| o.code).unwrap_or_default();
        let mut check = CheckRequest::new(req.id, req.binding, code);
        check.organization = organization_ref(req.organization)?;
        check.registration_id = req.otp_sms_id;
        let checked = self
            .service
            .check(&caller, check)
            .await
            .map_err(|e| status(&e))?;
        Ok(Response::new(ext::CheckOtpsmsChallengeResponse {
            details: Some(details(&checked.details)),
            otp_sms_id: checked.registration_id.to_string(),
        }))
    }
}

impl fmt::Debug for ext::Challenges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Challenges")
            .field("otp_sms", &self.otp_sms.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Debug for ext::Otpsms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Otpsms")
            .field("otp_sms_id", &self.otp_sms_id)
            .field("phone", &otp_sms_core::mask_number(&self.phone))
            .field("is_verified", &self.is_verified)
            .field("created", &self.created)
            .field("verified_at", &self.verified_at)
            .field("last_sign_in", &self.last_sign_in)
            .finish()
    }
}

impl fmt::Debug for ext::CheckOtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckOtp")
            .field("code", &"<redacted>")
            .finish()
    }
}

/// `Debug` for the sign-in requests: every field but the binding, which may be a host's
/// secret session id (the code is redacted by its own message's `Debug`).
macro_rules! sign_in_request_debug {
    ($($message:ident),+) => {$(
        impl fmt::Debug for ext::$message {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($message))
                    .field("instance", &self.instance)
                    .field("organization", &self.organization)
                    .field("id", &self.id)
                    .field("otp_sms_id", &self.otp_sms_id)
                    .field("binding", &"<redacted>")
                    .field("otp_sms", &self.otp_sms)
                    .finish()
            }
        }
    )+};
}

sign_in_request_debug!(RequestOtpsmsChallengeRequest, CheckOtpsmsChallengeRequest);

/// The extension service's name, `otpsms.v1.OTPSMSExtensions`.
pub const EXTENSIONS_SERVICE_NAME: &str = ext::otpsms_extensions_server::SERVICE_NAME;

/// The sign-in service's name, `otpsms.v1.OTPSMSSignIn`.
pub const SIGN_IN_SERVICE_NAME: &str = ext::otpsms_sign_in_server::SERVICE_NAME;

/// The largest request message the services decode (64 KiB, as the JSON API's body); a
/// larger one is answered OUT_OF_RANGE (tonic's code for it) and never reaches a call.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// An `axum::Router` serving `ZITADELUsers` (gRPC and gRPC-web) and gRPC reflection, with no
/// fallback of its own, to merge with other routers on one port. HTTP/2 must be enabled on the
/// listener for gRPC (axum's `http2` feature); gRPC-web also works over HTTP/1.1. Request
/// messages over [`MAX_MESSAGE_BYTES`] are refused.
pub fn router(service: CommandService, auth: Arc<dyn Authenticator>) -> axum::Router {
    let users_service = UsersService::new(service, auth);
    let connect_service = users_service.clone();
    // The same bound as the JSON API's body: the calls' messages are small.
    // gzip-compressed requests are read (answers go uncompressed: they are a few bytes).
    let extensions = OtpsmsExtensionsServer::new(users_service.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let sign_in = OtpsmsSignInServer::new(users_service.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let users = ZitadelUsersServer::new(users_service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    // Both reflection versions: grpcurl and older tools still ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("the compiled descriptor set is valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the compiled descriptor set is valid");
    axum::Router::new()
        .route_service(
            &format!("/{}/{{*rest}}", SERVICE_NAME),
            one_handler(
                tower::ServiceBuilder::new()
                    .layer(tonic_web::GrpcWebLayer::new())
                    .service(users),
                connect_service.clone(),
                SERVICE_NAME,
            ),
        )
        .route_service(
            &format!("/{}/{{*rest}}", EXTENSIONS_SERVICE_NAME),
            one_handler(
                tower::ServiceBuilder::new()
                    .layer(tonic_web::GrpcWebLayer::new())
                    .service(extensions),
                connect_service.clone(),
                EXTENSIONS_SERVICE_NAME,
            ),
        )
        .route_service(
            &format!("/{}/{{*rest}}", SIGN_IN_SERVICE_NAME),
            one_handler(
                tower::ServiceBuilder::new()
                    .layer(tonic_web::GrpcWebLayer::new())
                    .service(sign_in),
                connect_service,
                SIGN_IN_SERVICE_NAME,
            ),
        )
        .route_service(
            &format!("/{}/{{*rest}}", name_of(&reflection_v1)),
            reflection_v1,
        )
        .route_service(
            &format!("/{}/{{*rest}}", name_of(&reflection_v1alpha)),
            reflection_v1alpha,
        )
}

/// One handler for a service's three protocols, as connectRPC servers have it: gRPC and
/// gRPC-web (by content type) to tonic, everything else to the Connect protocol.
fn one_handler<S, B>(
    grpc: S,
    users: UsersService,
    service: &'static str,
) -> impl tower::Service<
    axum::extract::Request,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
       + Send
       + Sync
       + 'static
where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::http::Response<B>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send,
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    tower::service_fn(move |mut request: axum::extract::Request| {
        let grpc = grpc.clone();
        let users = users.clone();
        async move {
            if is_grpc(request.headers()) {
                text_answers_text(request.headers_mut());
                let response = tower::ServiceExt::oneshot(grpc, request).await?;
                return Ok(response.map(axum::body::Body::new));
            }
            let method = request
                .uri()
                .path()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            Ok(connect::serve(&users, service, &method, request).await)
        }
    })
}

/// A gRPC-web-text request that asks for no gRPC-web format (no `Accept`, or `*/*` as fetch
/// sends) is answered in text too: the answer's format is the request's unless the client
/// asks for another; tonic-web would answer binary to a client that reads base64.
fn text_answers_text(headers: &mut axum::http::HeaderMap) {
    use axum::http::header::{ACCEPT, CONTENT_TYPE};
    let text = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc-web-text"));
    let asks_a_format = headers
        .get_all(ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("application/grpc-web")));
    if text && !asks_a_format {
        headers.insert(
            ACCEPT,
            axum::http::HeaderValue::from_static("application/grpc-web-text"),
        );
    }
}

fn name_of<S: NamedService>(_: &S) -> &'static str {
    S::NAME
}

/// The methods this server serves, by service: `(service, method)`.
pub const METHODS: &[(&str, &str)] = &[
    (SERVICE_NAME, "AddOTPSMSAuthenticator"),
    (SERVICE_NAME, "VerifyOTPSMSRegistration"),
    (SERVICE_NAME, "RemoveOTPSMSAuthenticator"),
    (EXTENSIONS_SERVICE_NAME, "UnlockOTPSMSVerification"),
    (EXTENSIONS_SERVICE_NAME, "ListOTPSMSAuthenticators"),
    (SIGN_IN_SERVICE_NAME, "RequestOTPSMSChallenge"),
    (SIGN_IN_SERVICE_NAME, "CheckOTPSMSChallenge"),
];

/// The service and method a call's path names, if this server serves that method: for labels
/// and logs that must not take a caller's text (`/Service/<anything>`) as a value.
///
/// ```
/// assert_eq!(
///     otp_sms_grpc::known_method("/otpsms.v1.OTPSMSExtensions/UnlockOTPSMSVerification"),
///     Some(("otpsms.v1.OTPSMSExtensions", "UnlockOTPSMSVerification"))
/// );
/// assert_eq!(otp_sms_grpc::known_method("/otpsms.v1.OTPSMSExtensions/Made_Up"), None);
/// ```
pub fn known_method(path: &str) -> Option<(&'static str, &'static str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    METHODS
        .iter()
        .find(|(s, m)| *s == service && *m == method)
        .copied()
}

/// Whether a request is gRPC or gRPC-web, by its content type: for fallbacks that must answer
/// in the caller's protocol.
pub fn is_grpc(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// The gRPC answer (a trailers-only response) for `error`, for a layer in front of the
/// service that refuses a call itself (a shed or late call).
pub fn error_response(error: &Error) -> axum::response::Response {
    let (parts, ()) = status(error).into_http::<()>().into_parts();
    axum::response::Response::from_parts(parts, axum::body::Body::empty())
}

/// The gRPC answer for a method this server does not serve: UNIMPLEMENTED.
pub fn unimplemented_response() -> axum::response::Response {
    let (parts, ()) = Status::unimplemented("method not implemented")
        .into_http::<()>()
        .into_parts();
    axum::response::Response::from_parts(parts, axum::body::Body::empty())
}
