//! Addresses and CIDR prefixes.

use crate::{IpAddress, TrafficSelector};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// WIT address → std address.
pub fn ip_from_wit(a: &IpAddress) -> IpAddr {
    match *a {
        IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
    }
}

/// std address → WIT address.
pub fn ip_to_wit(a: IpAddr) -> IpAddress {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            IpAddress::Ipv4((o[0], o[1], o[2], o[3]))
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            IpAddress::Ipv6((s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]))
        }
    }
}

/// (is IPv4, value) — addresses of one family compare by value.
pub(crate) fn ip_key(a: &IpAddress) -> (bool, u128) {
    match ip_from_wit(a) {
        IpAddr::V4(v) => (true, u32::from(v) as u128),
        IpAddr::V6(v) => (false, u128::from(v)),
    }
}

/// A CIDR prefix such as `10.99.0.0/16` or `fd99::/64`. A bare address is a
/// host prefix (/32 or /128). Host bits below the prefix are ignored
/// (`10.1.2.3/16` is `10.1.0.0/16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parse `ADDR/LEN` or `ADDR` (surrounding whitespace ignored).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a.trim(), Some(p.trim())),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("'{s}' is not a CIDR prefix (bad address '{a}')"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("'{s}' is not a CIDR prefix (bad length '{p}', max {max})")),
            },
        };
        let c = Cidr { addr, prefix };
        Ok(Cidr { addr: c.first(), prefix })
    }

    fn mask(&self) -> u128 {
        let bits = if self.addr.is_ipv4() { 32 } else { 128 };
        let host_bits = bits - self.prefix as u32;
        let all = if bits == 32 { u32::MAX as u128 } else { u128::MAX };
        if host_bits >= 128 { 0 } else { all & !((1u128 << host_bits).wrapping_sub(1)) & all }
    }

    fn value(a: IpAddr) -> u128 {
        match a {
            IpAddr::V4(v) => u32::from(v) as u128,
            IpAddr::V6(v) => u128::from(v),
        }
    }

    fn make(&self, v: u128) -> IpAddr {
        if self.addr.is_ipv4() {
            IpAddr::V4(Ipv4Addr::from(v as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(v))
        }
    }

    /// Prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The network (lowest) address.
    pub fn first(&self) -> IpAddr {
        self.make(Self::value(self.addr) & self.mask())
    }

    /// The highest address.
    pub fn last(&self) -> IpAddr {
        let all = if self.addr.is_ipv4() { u32::MAX as u128 } else { u128::MAX };
        self.make((Self::value(self.addr) & self.mask()) | (!self.mask() & all))
    }

    /// Does the prefix contain `a` (same family only)?
    pub fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.addr.is_ipv4() && (Self::value(a) & self.mask()) == Self::value(self.first())
    }

    /// Does the prefix contain the WIT address `a`?
    pub fn contains_wit(&self, a: &IpAddress) -> bool {
        self.contains(ip_from_wit(a))
    }

    /// The prefix as a selector: any protocol, all ports.
    pub fn selector(&self) -> TrafficSelector {
        TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start_address: ip_to_wit(self.first()),
            end_address: ip_to_wit(self.last()),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.first(), self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Cidr::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contain() {
        let c = Cidr::parse("10.99.3.4/16").unwrap();
        assert_eq!(c.to_string(), "10.99.0.0/16");
        assert_eq!(c.last(), "10.99.255.255".parse::<IpAddr>().unwrap());
        assert!(c.contains("10.99.200.1".parse().unwrap()));
        assert!(!c.contains("10.98.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let h = Cidr::parse("192.0.2.1").unwrap();
        assert_eq!(h.prefix(), 32);
        let z = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(z.contains("203.0.113.9".parse().unwrap()));
        let v6 = Cidr::parse("fd99::/64").unwrap();
        assert!(v6.contains("fd99::5".parse().unwrap()));
        assert_eq!(v6.last(), "fd99::ffff:ffff:ffff:ffff".parse::<IpAddr>().unwrap());
        assert!(Cidr::parse("::/0").unwrap().contains("2001:db8::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten/8").is_err());
    }
}
