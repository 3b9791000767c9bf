//! Caller authentication: who calls, in which instance, resolved the same way by every adapter.

use crate::error::Error;
use crate::ids::{InstanceId, PrincipalId};
use crate::ports::Authenticator;

/// Who calls, and in which instance. The host resolves both from the request (the instance
/// from its `instance` field or host name, the principal from the credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant.
    pub instance: InstanceId,
    /// The authenticated principal.
    pub principal: PrincipalId,
}

/// The request's optional `instance`: which instance the caller expects to act in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceRef {
    /// `instance.id`.
    Id(String),
    /// `instance.domain`.
    Domain(String),
}

/// Resolves a request's caller, the same way for every adapter: UNAUTHENTICATED unless the
/// bearer token names a caller; NOT_FOUND if the request names an instance that is not the
/// caller's (a token of one tenant never acts in another).
pub async fn authenticate(
    auth: &dyn Authenticator,
    bearer_token: Option<&str>,
    instance: Option<InstanceRef>,
) -> Result<Caller, Error> {
    let token = bearer_token
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(Error::Unauthenticated)?;
    let caller = auth
        .authenticate(token)
        .await?
        .ok_or(Error::Unauthenticated)?;
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

/// The bearer token of an `Authorization` header value (`Bearer <token>`, scheme in any case).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}
