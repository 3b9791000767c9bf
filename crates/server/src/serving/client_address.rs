//! Which client a request comes from: the connection's peer, or the client a trusted proxy
//! names, put on the request for the adapters and the edge.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::Request;

use crate::config;

/// How the server finds a request's client: its trusted proxies and the header they set.
#[derive(Clone)]
pub(crate) struct ClientResolver {
    pub(crate) proxies: otp_sms_core::TrustedProxies,
    pub(crate) header: config::ClientAddressHeader,
}

/// Puts the client's address on the request for the adapters: the connection's peer, or the
/// client a trusted proxy names. Every line of the configured header is read as one list (a
/// proxy that appends its own line, as HAProxy does, comes last); the other header is ignored,
/// so a client cannot put an address of its choosing where the proxy's would be read.
pub(crate) async fn resolve_client(
    State(resolver): State<ClientResolver>,
    mut req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let client = {
        let name = match resolver.header {
            config::ClientAddressHeader::XForwardedFor => "x-forwarded-for",
            config::ClientAddressHeader::Forwarded => "forwarded",
        };
        let lines: Vec<&str> = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("unparsable"))
            .collect();
        let list = (!lines.is_empty()).then(|| lines.join(","));
        match resolver.header {
            config::ClientAddressHeader::XForwardedFor => {
                resolver.proxies.client_address(peer, list.as_deref(), None)
            }
            config::ClientAddressHeader::Forwarded => {
                resolver.proxies.client_address(peer, None, list.as_deref())
            }
        }
    };
    if let Some(client) = client {
        req.extensions_mut()
            .insert(otp_sms_core::ClientAddress(client));
    }
    next.run(req).await
}
