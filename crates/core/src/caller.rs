//! Caller authentication: who calls, in which instance, resolved the same way by every adapter.

use std::net::IpAddr;

use crate::error::Error;
use crate::idempotency_key::IdempotencyKey;
use crate::ids::{InstanceId, PrincipalId};

/// Who calls, and in which instance. The host resolves both from the request (the instance
/// from its `instance` field or host name, the principal from the credentials).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant.
    pub instance: InstanceId,
    /// The authenticated principal.
    pub principal: PrincipalId,
    /// The network address the call came from, when the adapter knows it: the connection's
    /// peer, or the client a trusted proxy names (see [`TrustedProxies::client_address`]). The send
    /// budget per client address counts it.
    pub address: Option<IpAddr>,
    /// The client's idempotency key for this call, if it sent one (HTTP `Idempotency-Key`,
    /// gRPC `idempotency-key`): a retry under the same key gets the first call's answer.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl Caller {
    /// A caller with no known address and no idempotency key.
    pub fn new(instance: InstanceId, principal: PrincipalId) -> Self {
        Self {
            instance,
            principal,
            address: None,
            idempotency_key: None,
        }
    }

    /// A caller of a single-tenant host: `principal` in [`InstanceId::single_tenant`].
    ///
    /// ```
    /// use otp_sms_core::{Caller, PrincipalId};
    /// let caller = Caller::single_tenant("alice".parse::<PrincipalId>().unwrap());
    /// assert_eq!(caller.instance.as_str(), "default");
    /// ```
    pub fn single_tenant(principal: PrincipalId) -> Self {
        Self::new(InstanceId::single_tenant(), principal)
    }

    /// The caller an adapter passes on, completed by what the request carried: the address a
    /// handed-over caller brought wins over the connection's `address` (the host's middleware
    /// knew better), and the request's idempotency `key` wins over one the caller brought (the
    /// key belongs to the call).
    ///
    /// ```
    /// use otp_sms_core::{Caller, PrincipalId};
    /// let host = Caller::single_tenant("alice".parse::<PrincipalId>().unwrap())
    ///     .with_address("10.0.0.1".parse().ok());
    /// let passed_on = host.completed_by("192.0.2.1".parse().ok(), None);
    /// assert_eq!(passed_on.address, "10.0.0.1".parse().ok());
    /// ```
    pub fn completed_by(self, address: Option<IpAddr>, key: Option<IdempotencyKey>) -> Self {
        let address = self.address.or(address);
        let key = key.or_else(|| self.idempotency_key.clone());
        self.with_address(address).with_idempotency_key(key)
    }

    /// The same caller, calling from `address`.
    pub fn with_address(mut self, address: Option<IpAddr>) -> Self {
        self.address = address;
        self
    }

    /// The same caller, sending `key` with its call.
    pub fn with_idempotency_key(mut self, key: Option<IdempotencyKey>) -> Self {
        self.idempotency_key = key;
        self
    }
}

/// The request's optional `instance`: which instance the caller expects to act in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceRef {
    /// `instance.id`.
    Id(String),
    /// `instance.domain`.
    Domain(String),
}

/// The bearer token of an `Authorization` header value (`Bearer <token>`, scheme in any case).
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The client's network address, as a request extension: the server's middleware (or a host's)
/// puts it there, and every adapter copies it into [`Caller::address`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub IpAddr);

/// The proxies whose word on the client's address is trusted (`X-Forwarded-For`,
/// `Forwarded`), as CIDR blocks.
///
/// ```
/// use otp_sms_core::TrustedProxies;
/// let proxies = TrustedProxies::parse(&["10.0.0.0/8", "::1/128"]).unwrap();
/// let peer = "10.1.2.3".parse().ok();
/// // The rightmost address that is not a trusted proxy is the client.
/// let client = proxies.client_address(peer, Some("198.51.100.7, 10.9.9.9"), None);
/// assert_eq!(client, "198.51.100.7".parse().ok());
/// // An untrusted peer's headers are ignored.
/// let direct = proxies.client_address("203.0.113.5".parse().ok(), Some("198.51.100.7"), None);
/// assert_eq!(direct, "203.0.113.5".parse().ok());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// No trusted proxy: the peer is always the client.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses CIDR blocks (`10.0.0.0/8`) or single addresses.
    pub fn parse<S: AsRef<str>>(blocks: &[S]) -> Result<Self, Error> {
        blocks
            .iter()
            .map(|block| {
                let block = block.as_ref().trim();
                let invalid =
                    || Error::invalid("trusted_proxies", format!("`{block}` is not a CIDR block"));
                let (addr, len) = match block.split_once('/') {
                    Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| invalid())?)),
                    None => (block, None),
                };
                let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let len = len.unwrap_or(max);
                if len > max {
                    return Err(invalid());
                }
                Ok((addr, len))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `address` is a trusted proxy.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|&(net, len)| match (net, address) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                prefix_eq(u32::from(n).into(), u32::from(a).into(), len, 32)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(u128::from(n), u128::from(a), len, 128),
            _ => false,
        })
    }

    /// The client's address: the peer, unless the peer is a trusted proxy; then the rightmost
    /// address of `X-Forwarded-For` (or, without it, of `Forwarded`'s `for=`) that is not a
    /// trusted proxy. Unparsable entries end the walk: what lies left of them is unreliable.
    pub fn client_address(
        &self,
        peer: Option<IpAddr>,
        x_forwarded_for: Option<&str>,
        forwarded: Option<&str>,
    ) -> Option<IpAddr> {
        let peer = peer.map(|a: IpAddr| a.to_canonical())?;
        if !self.contains(peer) {
            return Some(peer);
        }
        let hops: Vec<&str> = match (x_forwarded_for, forwarded) {
            (Some(xff), _) => xff.split(',').collect(),
            (None, Some(fwd)) => fwd
                .split(',')
                .filter_map(|element| {
                    element.split(';').find_map(|pair| {
                        let (k, v) = pair.split_once('=')?;
                        k.trim().eq_ignore_ascii_case("for").then_some(v)
                    })
                })
                .collect(),
            (None, None) => return Some(peer),
        };
        let mut client = peer;
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(address) => {
                    client = address;
                    if !self.contains(address) {
                        break;
                    }
                }
                None => break,
            }
        }
        Some(client)
    }
}

fn prefix_eq(a: u128, b: u128, len: u8, bits: u32) -> bool {
    let len = u32::from(len);
    if len == 0 {
        return true;
    }
    let shift = bits - len;
    (a >> shift) == (b >> shift)
}

/// One hop of `X-Forwarded-For` or `Forwarded` (`"[2001:db8::1]:443"`, `1.2.3.4:80`, …).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest
            .split(']')
            .next()?
            .parse()
            .ok()
            .map(|a: IpAddr| a.to_canonical());
    }
    // `address:port` is IPv4 only (an IPv6 address with a port is bracketed, RFC 7239), and
    // the port is digits: `::b:e…` with junk after the last colon is no address at all.
    let (host, port) = hop.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    /// Found by the `headers` fuzz target: an IPv6 address followed by junk after a colon was
    /// read as address and port, so that `::B:e` plus junk named `::b`. Only IPv4 takes an
    /// unbracketed port, and a port is digits.
    #[test]
    fn a_hop_with_junk_after_a_colon_is_no_address() {
        assert_eq!(parse_hop("::B:e\0\0   B"), None);
        assert_eq!(parse_hop("2001:db8::1:x"), None);
        assert_eq!(parse_hop("198.51.100.7:"), None);
        assert_eq!(parse_hop("198.51.100.7:8080"), ip("198.51.100.7"));
        assert_eq!(parse_hop("[2001:db8::1]:443"), ip("2001:db8::1"));
        assert_eq!(parse_hop("2001:db8::1"), ip("2001:db8::1"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8", "2001:db8:ffff::/48"]).unwrap();
        // Client, then a spoofed entry it wrote itself, then two of our proxies.
        let xff = "1.1.1.1, 198.51.100.9, 10.0.0.2";
        assert_eq!(
            proxies.client_address(ip("10.0.0.1"), Some(xff), None),
            ip("198.51.100.9")
        );
        // Forwarded, with quoted IPv6 and ports.
        let fwd = r#"for=192.0.2.60;proto=http, for="[2001:db8:cafe::17]:4711", for=10.1.1.1"#;
        assert_eq!(
            proxies.client_address(ip("2001:db8:ffff::1"), None, Some(fwd)),
            ip("2001:db8:cafe::17")
        );
        // Every hop trusted: the leftmost.
        assert_eq!(
            proxies.client_address(ip("10.0.0.1"), Some("10.2.2.2"), None),
            ip("10.2.2.2")
        );
        // A hop that is not an address ends the walk at the last good one.
        assert_eq!(
            proxies.client_address(ip("10.0.0.1"), Some("1.2.3.4, unknown"), None),
            ip("10.0.0.1")
        );
        // No header from a trusted proxy: the proxy itself.
        assert_eq!(
            proxies.client_address(ip("10.0.0.1"), None, None),
            ip("10.0.0.1")
        );
        // IPv4-mapped peers are IPv4.
        assert_eq!(
            TrustedProxies::none().client_address(ip("::ffff:203.0.113.9"), Some("1.1.1.1"), None),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn blocks_are_checked() {
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::parse(&["nope"]).is_err());
        let p = TrustedProxies::parse(&["192.0.2.0/24", "::1"]).unwrap();
        assert!(p.contains("192.0.2.200".parse().unwrap()));
        assert!(!p.contains("192.0.3.1".parse().unwrap()));
        assert!(p.contains("::1".parse().unwrap()));
        assert!(TrustedProxies::parse(&["0.0.0.0/0"])
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }
}
