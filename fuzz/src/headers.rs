//! The headers every adapter reads from a stranger before anything else: `Authorization`
//! (the bearer token), `X-Forwarded-For` and `Forwarded` (the client's address behind trusted
//! proxies) and `Idempotency-Key`.
//!
//! Input: newline-separated fields: the Authorization value, the peer's address, the
//! X-Forwarded-For value, the Forwarded value, then any number of Idempotency-Key values.

use std::net::IpAddr;

use otp_sms_core::{bearer_token, IdempotencyKey, TrustedProxies};

fn text(field: Option<&[u8]>) -> Option<&str> {
    field.and_then(|f| std::str::from_utf8(f).ok())
}

/// The target.
pub fn check(data: &[u8]) {
    let mut fields = data.split(|&b| b == b'\n');
    if let Some(authorization) = text(fields.next()) {
        authorization_is_read_back(authorization);
    }
    let peer = text(fields.next()).and_then(|p| p.trim().parse::<IpAddr>().ok());
    let (xff, forwarded) = (text(fields.next()), text(fields.next()));
    client_address_is_the_peer_or_a_hop(peer, xff, forwarded);
    let keys: Vec<&[u8]> = fields.collect();
    idempotency_key_is_read_back(&keys);
}

/// A token read from a header is what a client that sends it as `Bearer <token>` sends.
fn authorization_is_read_back(authorization: &str) {
    if let Some(token) = bearer_token(authorization) {
        assert!(
            authorization.contains(token),
            "{authorization:?} gave {token:?}"
        );
        assert_eq!(token, token.trim(), "{authorization:?}: untrimmed token");
        let again = format!("Bearer {token}");
        assert_eq!(bearer_token(&again), Some(token), "{again:?}");
    }
}

/// Behind trusted proxies the client is the peer or an address the headers name; a peer that
/// is not trusted is the client whatever the headers say.
fn client_address_is_the_peer_or_a_hop(
    peer: Option<IpAddr>,
    xff: Option<&str>,
    forwarded: Option<&str>,
) {
    let trusted = TrustedProxies::parse(&["10.0.0.0/8", "127.0.0.1", "::1", "fd00::/8"])
        .expect("valid blocks");
    let client = trusted.client_address(peer, xff, forwarded);
    let Some(peer) = peer else {
        assert_eq!(client, None, "no peer, yet a client");
        return;
    };
    let client = client.expect("a peer gives a client");
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        assert_eq!(client, peer, "an untrusted peer's headers were believed");
        return;
    }
    if client != peer {
        let named = [xff, forwarded]
            .into_iter()
            .flatten()
            .any(|header| header.contains(&client.to_string()) || ipv6_named(header, client));
        assert!(
            named,
            "{client} is neither the peer nor in {xff:?} / {forwarded:?}"
        );
    }
}

/// An IPv6 address may be written in many ways; compare parsed candidates.
fn ipv6_named(header: &str, client: IpAddr) -> bool {
    header
        .split(|c: char| !(c.is_ascii_hexdigit() || c == ':' || c == '.'))
        .filter_map(|word| word.parse::<IpAddr>().ok())
        .any(|a| a.to_canonical() == client)
}

/// A key accepted from a header is visible ASCII within its bound, and sent again as a
/// Structured Field string it reads as the same key.
fn idempotency_key_is_read_back(values: &[&[u8]]) {
    let Ok(Some(key)) = IdempotencyKey::from_header_values(values.iter().copied()) else {
        return;
    };
    let text = key.as_str();
    assert!(
        !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic()),
        "{text:?} from {values:?}"
    );
    let quoted = format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
    assert_eq!(
        IdempotencyKey::from_header(&quoted)
            .ok()
            .map(|k| k.as_str().to_owned()),
        Some(text.to_owned()),
        "{quoted:?}"
    );
}
