//! Which peers the relay may talk to.
//!
//! A TURN server relays to any address a client names, from inside the
//! network it runs in: without a filter it is an open door to the host's
//! loopback services and the private network around it. So peers in
//! loopback, private (RFC 1918, CGNAT 100.64/10, IPv6 ULA), link-local,
//! multicast, unspecified, broadcast and other reserved ranges are refused,
//! as are the server's own addresses, except the ports of its own live relay
//! sockets (two peers that both relay through this server reach each other
//! that way). `--turn-allow-peer CIDR` opens a range, over every other rule.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// An address range, `ADDR/BITS` (or a bare address: one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Whether `ip` is inside the range (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not ADDRESS/BITS (e.g. 10.8.0.0/16)"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?,
            None => max,
        };
        Ok(Cidr { addr, bits })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

/// Why a peer is refused (also the `reason` label of the refusal metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRefusal {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918, 100.64.0.0/10 (CGNAT), fc00::/7 (ULA), fec0::/10.
    Private,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 0.0.0.0/8, ::, 255.255.255.255, 240.0.0.0/4 and other reserved or
    /// documentation ranges no peer lives in.
    Reserved,
    /// One of this server's own addresses, not on a live relay port.
    OwnAddress,
}

impl PeerRefusal {
    /// Every refusal, in label order.
    pub const ALL: [PeerRefusal; 6] = [
        PeerRefusal::Loopback,
        PeerRefusal::Private,
        PeerRefusal::LinkLocal,
        PeerRefusal::Multicast,
        PeerRefusal::Reserved,
        PeerRefusal::OwnAddress,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRefusal::Loopback => "peer_loopback",
            PeerRefusal::Private => "peer_private",
            PeerRefusal::LinkLocal => "peer_link_local",
            PeerRefusal::Multicast => "peer_multicast",
            PeerRefusal::Reserved => "peer_reserved",
            PeerRefusal::OwnAddress => "peer_own_address",
        }
    }
}

/// The class of an address that is no place for a relayed peer, if any.
pub fn special_range(ip: IpAddr) -> Option<PeerRefusal> {
    match ip.to_canonical() {
        IpAddr::V4(ip) => special_v4(ip),
        IpAddr::V6(ip) => special_v6(ip),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<PeerRefusal> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some(PeerRefusal::Loopback)
    } else if ip.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        Some(PeerRefusal::Private)
    } else if ip.is_link_local() {
        Some(PeerRefusal::LinkLocal)
    } else if ip.is_multicast() {
        Some(PeerRefusal::Multicast)
    } else if o[0] == 0
        || o[0] >= 240
        || ip.is_documentation()
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
    {
        // 0/8, 240/4 with broadcast, TEST-NETs, 192.0.0/24, 198.18/15.
        Some(PeerRefusal::Reserved)
    } else {
        None
    }
}

fn special_v6(ip: Ipv6Addr) -> Option<PeerRefusal> {
    let s = ip.segments();
    if ip.is_loopback() {
        Some(PeerRefusal::Loopback)
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        Some(PeerRefusal::Private)
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some(PeerRefusal::LinkLocal)
    } else if ip.is_multicast() {
        Some(PeerRefusal::Multicast)
    } else if ip.is_unspecified()
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x0064 && s[1] == 0xff9b)
        || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0)
        || s[0] == 0
    {
        // ::, documentation, NAT64 (it would reach IPv4 ranges unchecked),
        // discard-only, and IPv4-compatible/other ::/16.
        Some(PeerRefusal::Reserved)
    } else {
        None
    }
}

/// Ports of this server's live relay sockets: one bit per port.
pub struct LivePorts {
    bits: Vec<AtomicU64>,
}

impl Default for LivePorts {
    fn default() -> Self {
        LivePorts {
            bits: (0..1024).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LivePorts {
    /// Marks `port` live (a relay socket is bound on it).
    pub fn insert(&self, port: u16) {
        self.bits[usize::from(port / 64)].fetch_or(1 << (port % 64), Ordering::Relaxed);
    }

    /// Marks `port` free.
    pub fn remove(&self, port: u16) {
        self.bits[usize::from(port / 64)].fetch_and(!(1 << (port % 64)), Ordering::Relaxed);
    }

    /// Whether a relay socket is bound on `port`.
    pub fn contains(&self, port: u16) -> bool {
        self.bits[usize::from(port / 64)].load(Ordering::Relaxed) & (1 << (port % 64)) != 0
    }
}

/// The peer policy of one relay.
pub struct PeerFilter {
    allow: Vec<Cidr>,
    own: RwLock<Vec<IpAddr>>,
    live: LivePorts,
}

impl PeerFilter {
    /// A filter opening `allow`, with `own` as the server's addresses.
    pub fn new(allow: Vec<Cidr>, own: impl IntoIterator<Item = IpAddr>) -> Self {
        let mut list = Vec::new();
        for ip in own {
            let ip = ip.to_canonical();
            if !ip.is_unspecified() && !list.contains(&ip) {
                list.push(ip);
            }
        }
        PeerFilter {
            allow,
            own: RwLock::new(list),
            live: LivePorts::default(),
        }
    }

    /// Adds an address of this server (an advertised relay address found at
    /// allocation time).
    pub fn add_own(&self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if ip.is_unspecified() {
            return;
        }
        let known = self.own.read().map(|l| l.contains(&ip)).unwrap_or(true);
        if !known {
            if let Ok(mut list) = self.own.write() {
                if !list.contains(&ip) {
                    list.push(ip);
                }
            }
        }
    }

    /// The live relay ports (the relay marks its sockets here).
    pub fn live_ports(&self) -> &LivePorts {
        &self.live
    }

    /// Whether the client may relay to `peer`.
    pub fn check(&self, peer: SocketAddr) -> Result<(), PeerRefusal> {
        let ip = peer.ip().to_canonical();
        if self.allow.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        let own = self.own.read().map(|l| l.contains(&ip)).unwrap_or(true);
        if own {
            return if self.live.contains(peer.port()) {
                Ok(())
            } else {
                Err(PeerRefusal::OwnAddress)
            };
        }
        match special_range(ip) {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_ranges_are_refused_by_default() {
        let f = PeerFilter::new(Vec::new(), []);
        for (addr, why) in [
            ("127.0.0.1:9090", PeerRefusal::Loopback),
            ("127.9.9.9:1", PeerRefusal::Loopback),
            ("[::1]:22", PeerRefusal::Loopback),
            ("[::ffff:127.0.0.1]:6379", PeerRefusal::Loopback),
            ("10.0.0.1:5000", PeerRefusal::Private),
            ("172.16.3.4:1", PeerRefusal::Private),
            ("172.31.255.255:1", PeerRefusal::Private),
            ("192.168.1.1:80", PeerRefusal::Private),
            ("100.64.0.1:1", PeerRefusal::Private),
            ("100.127.255.254:1", PeerRefusal::Private),
            ("[fd12:3456::1]:1", PeerRefusal::Private),
            ("169.254.169.254:80", PeerRefusal::LinkLocal),
            ("[fe80::1]:1", PeerRefusal::LinkLocal),
            ("224.0.0.251:5353", PeerRefusal::Multicast),
            ("[ff02::1]:1", PeerRefusal::Multicast),
            ("0.0.0.0:80", PeerRefusal::Reserved),
            ("0.1.2.3:80", PeerRefusal::Reserved),
            ("255.255.255.255:9", PeerRefusal::Reserved),
            ("240.0.0.1:9", PeerRefusal::Reserved),
            ("[::]:80", PeerRefusal::Reserved),
            ("[64:ff9b::a00:1]:80", PeerRefusal::Reserved),
            ("192.0.2.1:1", PeerRefusal::Reserved),
        ] {
            assert_eq!(f.check(peer(addr)), Err(why), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let f = PeerFilter::new(Vec::new(), []);
        for addr in [
            "8.8.8.8:53",
            "100.63.255.255:1",
            "100.128.0.0:1",
            "172.15.0.1:1",
            "172.32.0.1:1",
            "11.0.0.1:1",
            "[2a00:1450::1]:443",
        ] {
            assert_eq!(f.check(peer(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn the_allow_list_opens_a_range_over_every_rule() {
        let f = PeerFilter::new(
            vec!["127.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            ["203.0.113.5".parse().unwrap()],
        );
        assert_eq!(f.check(peer("127.0.0.1:3480")), Ok(()));
        assert_eq!(f.check(peer("[::ffff:127.0.0.2]:3480")), Ok(()));
        assert_eq!(f.check(peer("[fd00::1]:1")), Ok(()));
        assert_eq!(f.check(peer("10.0.0.1:1")), Err(PeerRefusal::Private));
    }

    #[test]
    fn own_addresses_are_refused_but_for_live_relay_ports() {
        let f = PeerFilter::new(Vec::new(), ["198.51.100.7".parse().unwrap()]);
        assert_eq!(
            f.check(peer("198.51.100.7:9090")),
            Err(PeerRefusal::OwnAddress)
        );
        f.live_ports().insert(50_000);
        assert_eq!(f.check(peer("198.51.100.7:50000")), Ok(()));
        assert_eq!(
            f.check(peer("198.51.100.7:50001")),
            Err(PeerRefusal::OwnAddress)
        );
        f.live_ports().remove(50_000);
        assert_eq!(
            f.check(peer("198.51.100.7:50000")),
            Err(PeerRefusal::OwnAddress)
        );
        f.add_own("203.0.113.9".parse().unwrap());
        assert_eq!(f.check(peer("203.0.113.9:1")), Err(PeerRefusal::OwnAddress));
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.8.0.0/16".parse().unwrap();
        assert!(c.contains("10.8.255.1".parse().unwrap()));
        assert!(!c.contains("10.9.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let host: Cidr = "192.0.2.1".parse().unwrap();
        assert_eq!(host.to_string(), "192.0.2.1/32");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("ten/8".parse::<Cidr>().is_err());
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
    }
}
