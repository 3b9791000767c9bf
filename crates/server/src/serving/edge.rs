//! The API's edge: what every API call (JSON, Connect, gRPC-web, gRPC) passes before the
//! server spends anything on it.
//!
//! 1. **Authentication first.** The bearer token is checked before the body is read and
//!    before the path or query is validated: a request without a valid token is answered
//!    UNAUTHENTICATED (401) at once, so a stranger can neither hold a slot with a slow body
//!    nor learn the validation rules. The caller found is handed to the adapters in the
//!    request's extensions (the same hand-over a host's middleware uses), so the token is
//!    checked once.
//! 2. **One caller's share.** At most `max_in_flight_per_caller` calls of one principal are
//!    in progress at once; one more is RESOURCE_EXHAUSTED (429) without taking a slot of the
//!    server's in-flight cap, so one token cannot fill it.
//! 3. **The body's deadline.** The body must have arrived `body_timeout` after the headers;
//!    a body still trickling then is answered DEADLINE_EXCEEDED (504), its call dropped and,
//!    on HTTP/1, its connection closed.
//!
//! Health, readiness and metrics do not pass here (nor under the in-flight cap): an overloaded
//! or attacked API never makes a load balancer think the process is dead.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Version};
use axum::middleware::Next;
use axum::response::Response;
use otp_sms_core::{
    bearer_token, resolve_caller, Authenticator, Caller, Error, InstanceId, PrincipalId,
};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::protocol::Protocol;

/// What the edge needs; cheap to clone.
#[derive(Clone)]
pub struct Edge {
    auth: Arc<dyn Authenticator>,
    per_caller: PerCaller,
    body_timeout: Duration,
}

impl Edge {
    /// An edge authenticating with `auth`, allowing `max_per_caller` calls of one caller at
    /// once and `body_timeout` for a body.
    pub fn new(
        auth: Arc<dyn Authenticator>,
        max_per_caller: usize,
        body_timeout: Duration,
    ) -> Self {
        Self {
            auth,
            per_caller: PerCaller::new(max_per_caller.max(1)),
            body_timeout,
        }
    }
}

/// Whether `path` is one of the API's calls: the JSON resources and the methods the services
/// serve. Everything else (the OpenAPI document, reflection, delivery reports, unknown paths
/// and methods, which are answered without reading a body) has no caller to authenticate.
pub fn is_api_call(path: &str) -> bool {
    path.starts_with("/resources/v3alpha/") || otp_sms_grpc::known_method(path).is_some()
}

/// The edge as axum middleware, in front of the API's in-flight cap and time-out.
pub async fn gate(State(edge): State<Edge>, mut request: Request, next: Next) -> Response {
    if !is_api_call(request.uri().path()) {
        return next.run(request).await;
    }
    // A caller a host's middleware handed over stands; else the token's, resolved as every
    // adapter resolves it.
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let handed_over = request.extensions().get::<Caller>().cloned();
    let caller = match resolve_caller(edge.auth.as_ref(), handed_over, token, None).await {
        Ok(caller) => caller,
        Err(error) => return refusal(&request, &error),
    };
    let Some(_share) = edge
        .per_caller
        .take(caller.instance.clone(), caller.principal.clone())
    else {
        let error = Error::QuotaExceeded(format!(
            "more than {} calls of this caller in progress",
            edge.per_caller.max
        ));
        return refusal(&request, &error);
    };
    request.extensions_mut().insert(caller);

    // What a late body's answer needs, taken before the request moves on (no header copy).
    let protocol = Protocol::of_request(&request);
    let version = request.version();
    let (ended, arrived) = oneshot::channel();
    let request = request.map(|body| Body::new(WatchedBody::new(body, ended)));
    let body_deadline = async {
        // Arrived, or dropped unread (the call answered without it): no deadline any more.
        if tokio::time::timeout(edge.body_timeout, arrived)
            .await
            .is_ok()
        {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        response = next.run(request) => response,
        () = body_deadline => {
            tracing::info!(timeout = ?edge.body_timeout, "request body too slow: call dropped");
            let mut response = protocol.render(&Error::DeadlineExceeded);
            if version <= Version::HTTP_11 {
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    }
}

fn refusal(request: &Request, error: &Error) -> Response {
    Protocol::of_request(request).render(error)
}

/// Calls in progress per caller, capped.
#[derive(Clone)]
struct PerCaller {
    max: usize,
    open: Arc<Mutex<HashMap<(InstanceId, PrincipalId), usize>>>,
}

/// One call counted against its caller, released on drop.
struct CallerShare {
    per_caller: PerCaller,
    key: (InstanceId, PrincipalId),
}

impl PerCaller {
    fn new(max: usize) -> Self {
        Self {
            max,
            open: Arc::default(),
        }
    }

    fn take(&self, instance: InstanceId, principal: PrincipalId) -> Option<CallerShare> {
        let key = (instance, principal);
        let mut open = self.open.lock();
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(CallerShare {
            per_caller: self.clone(),
            key,
        })
    }
}

impl Drop for CallerShare {
    fn drop(&mut self) {
        let mut open = self.per_caller.open.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// A request body that says when it has been read to its end (or dropped).
struct WatchedBody {
    inner: Body,
    ended: Option<oneshot::Sender<()>>,
}

impl WatchedBody {
    fn new(inner: Body, ended: oneshot::Sender<()>) -> Self {
        let mut body = Self {
            inner,
            ended: Some(ended),
        };
        if body.inner.is_end_stream() {
            body.end();
        }
        body
    }

    fn end(&mut self) {
        if let Some(ended) = self.ended.take() {
            let _ = ended.send(());
        }
    }
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.end();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_calls_are_the_resources_and_the_services_methods() {
        for path in [
            "/resources/v3alpha/users/alice/otp_sms",
            "/zitadel.resources.user.v3alpha.ZITADELUsers/AddOTPSMSAuthenticator",
            "/otpsms.v1.OTPSMSExtensions/UnlockOTPSMSVerification",
        ] {
            assert!(is_api_call(path), "{path}");
        }
        for path in [
            "/healthz",
            "/openapi.json",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/zitadel.resources.user.v3alpha.ZITADELUsersX/AddOTPSMSAuthenticator",
            "/zitadel.resources.user.v3alpha.ZITADELUsers/Junk",
            "/twilio/status",
            "/",
        ] {
            assert!(!is_api_call(path), "{path}");
        }
    }

    #[test]
    fn a_caller_holds_at_most_its_share_and_gets_it_back() {
        let per_caller = PerCaller::new(2);
        let key = || {
            (
                InstanceId::parse("instance", "i").unwrap(),
                "alice".parse::<PrincipalId>().unwrap(),
            )
        };
        let (i, p) = key();
        let first = per_caller.take(i.clone(), p.clone()).expect("first");
        let _second = per_caller.take(i.clone(), p.clone()).expect("second");
        assert!(per_caller.take(i.clone(), p.clone()).is_none(), "a third");
        let other = "bob".parse::<PrincipalId>().unwrap();
        assert!(
            per_caller.take(i.clone(), other).is_some(),
            "another caller"
        );
        drop(first);
        assert!(per_caller.take(i, p).is_some(), "a share back");
    }
}
