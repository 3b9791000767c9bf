//! Resolving a request's caller with the host's [`Authenticator`]: above both the caller's
//! data ([`crate::caller`]) and the ports, so neither imports the other's way back.

use crate::caller::{bearer_token, Caller, ClientAddress, InstanceRef};
use crate::error::Error;
use crate::idempotency::IdempotencyKey;
use crate::ids::InstanceId;
use crate::ports::Authenticator;

/// Resolves a request's caller from its bearer token, the same way for every adapter:
/// UNAUTHENTICATED unless the token names a caller; NOT_FOUND if the request names an instance
/// that is not the caller's (a token of one tenant never acts in another).
pub async fn authenticate(
    auth: &dyn Authenticator,
    bearer_token: Option<&str>,
    instance: Option<InstanceRef>,
) -> Result<Caller, Error> {
    resolve_caller(auth, None, bearer_token, instance).await
}

/// Resolves a request's caller as every adapter (HTTP, gRPC) does: the caller the host's
/// middleware handed over (a [`Caller`] in the request's extensions), else the one the bearer
/// token stands for ([`Authenticator::authenticate`]; UNAUTHENTICATED without one). Either
/// way, a request that names an instance other than the caller's is NOT_FOUND.
///
/// Only server-side code can put a value into a request's extensions, so a caller handed over
/// is as trustworthy as the middleware that made it; no bearer token is then read.
///
/// ```
/// # async fn demo(auth: &dyn otp_sms_core::Authenticator) {
/// use otp_sms_core::{resolve_caller, Caller, PrincipalId};
/// let from_session = Caller::single_tenant("alice".parse::<PrincipalId>().unwrap());
/// let caller = resolve_caller(auth, Some(from_session.clone()), None, None).await;
/// assert_eq!(caller, Ok(from_session));
/// # }
/// ```
pub async fn resolve_caller(
    auth: &dyn Authenticator,
    handed_over: Option<Caller>,
    bearer_token: Option<&str>,
    instance: Option<InstanceRef>,
) -> Result<Caller, Error> {
    let caller = match handed_over {
        Some(caller) => caller,
        None => {
            let token = bearer_token
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .ok_or(Error::Unauthenticated)?;
            auth.authenticate(token)
                .await?
                .ok_or(Error::Unauthenticated)?
        }
    };
    let named = match instance {
        None => None,
        Some(InstanceRef::Id(id)) => Some(InstanceId::parse("instance.id", id)?),
        Some(InstanceRef::Domain(domain)) => Some(
            auth.instance_by_domain(&domain)
                .await?
                .ok_or(Error::InstanceNotFound)?,
        ),
    };
    if named.is_some_and(|instance| instance != caller.instance) {
        return Err(Error::InstanceNotFound);
    }
    Ok(caller)
}

/// What a request carries about its caller, on any wire (HTTP headers or gRPC metadata, and
/// the request's extensions): read by [`request_caller`], the one rule every adapter follows.
#[derive(Debug, Default)]
pub struct CallerEvidence<'a> {
    /// A caller a host's (or the server's) middleware authenticated and handed over in the
    /// request's extensions: it stands, and no token is read.
    pub handed_over: Option<Caller>,
    /// The client's address the middleware resolved, for the per-address budget.
    pub client: Option<ClientAddress>,
    /// The `Authorization` value, as sent.
    pub authorization: Option<&'a [u8]>,
    /// The `Idempotency-Key` values, as sent (more than one is refused).
    pub idempotency_keys: Vec<&'a [u8]>,
}

/// The caller of a request, as every adapter reads it: [`resolve_caller`] over the handed-over
/// caller or the bearer token (UNAUTHENTICATED without either; NOT_FOUND when `instance`
/// names another instance), completed by the client's address and the idempotency key
/// ([`IdempotencyKey::from_header_values`]; INVALID_ARGUMENT when malformed). The token is
/// checked before the key is read.
pub async fn request_caller(
    auth: &dyn Authenticator,
    evidence: CallerEvidence<'_>,
    instance: Option<InstanceRef>,
) -> Result<Caller, Error> {
    let token = evidence
        .authorization
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(bearer_token);
    let caller = resolve_caller(auth, evidence.handed_over, token, instance).await?;
    let key = IdempotencyKey::from_header_values(evidence.idempotency_keys)?;
    Ok(caller.completed_by(evidence.client.map(|ClientAddress(a)| a), key))
}
