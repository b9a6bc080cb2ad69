//! Who a client is: its address (from `X-Forwarded-For` only behind a proxy
//! the operator names), and the key its limits are counted under (an IPv4
//! address, or an IPv6 /64: one subscriber's prefix).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Which connections may say who the client is, in `X-Forwarded-For`.
/// The default trusts no one: the client is the TCP peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyTrust {
    /// The client is the `hops`-th address from the right of
    /// `X-Forwarded-For` (what the outermost trusted proxy saw); 0 ignores
    /// the header unless `proxies` is set.
    pub hops: usize,
    /// Only connections from these networks are proxies; empty: with
    /// `hops` > 0, every connection is (as behind Heroku's router, whose
    /// addresses are not published).
    pub proxies: Vec<IpNet>,
}

impl ProxyTrust {
    /// Whether connections from `peer` come through a trusted proxy, so
    /// that their client is only known from each request's headers.
    pub fn is_proxy(&self, peer: IpAddr) -> bool {
        if self.proxies.is_empty() {
            self.hops > 0
        } else {
            let peer = peer.to_canonical();
            self.proxies.iter().any(|net| net.contains(&peer))
        }
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.is_proxy(peer) {
            return peer;
        }
        // Every X-Forwarded-For line, in order: each proxy appends the
        // address it saw.
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        let found = if self.hops > 0 {
            // Fewer entries than hops: the first one is still what a
            // trusted proxy saw.
            entries
                .len()
                .checked_sub(1)
                .map(|last| last.saturating_sub(self.hops - 1))
                .and_then(|i| parse_entry(entries[i]))
        } else {
            // From the right, past the trusted proxies themselves.
            let mut client = None;
            for entry in entries.iter().rev() {
                match parse_entry(entry) {
                    Some(ip) if self.is_proxy(ip) => client = Some(ip),
                    other => {
                        client = other;
                        break;
                    }
                }
            }
            client
        };
        found.unwrap_or(peer)
    }
}

/// An `X-Forwarded-For` entry: an address, with a port or in brackets as
/// some proxies write it.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = entry.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
    inner
        .parse::<Ipv6Addr>()
        .ok()
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

/// What the per-client limits are counted under: an IPv4 address, or the
/// /64 an IPv6 address belongs to (one subscriber's network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An IPv4 client (an IPv4-mapped IPv6 address included).
    V4(Ipv4Addr),
    /// An IPv6 client's /64 prefix.
    V6([u8; 8]),
}

impl ClientKey {
    /// The key of a client at `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(v4),
            IpAddr::V6(v6) => {
                let mut prefix = [0u8; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                ClientKey::V6(prefix)
            }
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(v4) => v4.fmt(f),
            ClientKey::V6(p) => {
                let mut octets = [0u8; 16];
                octets[..8].copy_from_slice(p);
                write!(f, "{}/64", Ipv6Addr::from(octets))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_header_is_ignored_unless_a_proxy_is_trusted() {
        let none = ProxyTrust::default();
        let peer = ip("198.51.100.7");
        assert_eq!(none.client(peer, &xff(&["203.0.113.1"])), peer);
        assert!(!none.is_proxy(peer));
    }

    #[test]
    fn hops_count_from_the_right() {
        let heroku = ProxyTrust {
            hops: 1,
            proxies: vec![],
        };
        let router = ip("10.1.2.3");
        // A client may write its own X-Forwarded-For; the router appends
        // the address it saw, which is the one believed.
        let h = xff(&["6.6.6.6, 203.0.113.9"]);
        assert_eq!(heroku.client(router, &h), ip("203.0.113.9"));
        let two = ProxyTrust {
            hops: 2,
            proxies: vec![],
        };
        let h = xff(&["6.6.6.6", "203.0.113.9, 10.0.0.5"]);
        assert_eq!(two.client(router, &h), ip("203.0.113.9"));
        // Short chains and no header.
        assert_eq!(
            two.client(router, &xff(&["203.0.113.9"])),
            ip("203.0.113.9")
        );
        assert_eq!(heroku.client(router, &HeaderMap::new()), router);
        // Ports, brackets and mapped addresses.
        assert_eq!(
            heroku.client(router, &xff(&["203.0.113.9:4711"])),
            ip("203.0.113.9")
        );
        assert_eq!(
            heroku.client(router, &xff(&["[2001:db8::1]"])),
            ip("2001:db8::1")
        );
        assert_eq!(
            heroku.client(router, &xff(&["::ffff:203.0.113.9"])),
            ip("203.0.113.9")
        );
        assert_eq!(heroku.client(router, &xff(&["garbage"])), router);
    }

    #[test]
    fn trusted_networks_are_skipped_and_others_are_not_proxies() {
        let trust = ProxyTrust {
            hops: 0,
            proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        };
        let proxy = ip("10.0.0.1");
        let h = xff(&["6.6.6.6, 203.0.113.9, 10.9.9.9"]);
        assert_eq!(trust.client(proxy, &h), ip("203.0.113.9"));
        assert_eq!(trust.client(ip("::1"), &h), ip("203.0.113.9"));
        // Not from a trusted network: the header is the client's own words.
        let direct = ip("198.51.100.7");
        assert!(!trust.is_proxy(direct));
        assert_eq!(trust.client(direct, &h), direct);
        // Nothing but proxies: the leftmost.
        assert_eq!(trust.client(proxy, &xff(&["10.0.0.2"])), ip("10.0.0.2"));
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64() {
        let a = ClientKey::of(ip("2001:db8:1:2:aaaa::1"));
        let b = ClientKey::of(ip("2001:db8:1:2:bbbb::2"));
        let c = ClientKey::of(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            ClientKey::of(ip("::ffff:192.0.2.1")),
            ClientKey::of(ip("192.0.2.1"))
        );
        assert_eq!(ClientKey::of(ip("192.0.2.1")).to_string(), "192.0.2.1");
    }
}
