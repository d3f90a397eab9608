//! Virtual addresses: what the `assign-address` decision is asked and may
//! answer, and the one check of an answer against the connection's pools.
//!
//! A peer asks for an address per family in its CFG_REQUEST; the policy may
//! pick, per family, one of the connection's pools or a specific address in
//! them ([`AddressChoice`]). [`AddressRequest::check`] holds an answer to the
//! configuration (the plugin host validates with it, and the IKE engine
//! enforces it for every policy); whether a specific address is free is the
//! pools' business (`wisp_ike::pool::Pools::acquire_exact`). The pool range
//! syntax (`10.3.0.0/24`, `10.3.0.10-10.3.0.200`) is parsed here, once, for
//! the gateway's configuration, the engine's pools and the fixtures.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::AuthInfo;

/// An IP address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressFamily {
    Ipv4,
    Ipv6,
}

impl AddressFamily {
    pub fn of(a: IpAddr) -> AddressFamily {
        if a.is_ipv6() {
            AddressFamily::Ipv6
        } else {
            AddressFamily::Ipv4
        }
    }

    pub fn is_ipv6(self) -> bool {
        self == AddressFamily::Ipv6
    }
}

impl fmt::Display for AddressFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_ipv6() { "IPv6" } else { "IPv4" })
    }
}

/// One address a peer asked for (at most one per family).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressWanted {
    pub family: AddressFamily,
    /// The specific address it asked for; `None`: any.
    pub address: Option<IpAddr>,
}

/// One of the connection's pools, as a policy sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressPool {
    pub name: String,
    pub family: AddressFamily,
    /// The addresses as configured (`10.3.0.0/24`, `10.3.0.10-10.3.0.200`).
    pub range: String,
    /// First and last address handed out.
    pub first: IpAddr,
    pub last: IpAddr,
    /// Addresses in the pool, saturating at `u64::MAX`.
    pub size: u64,
}

impl AddressPool {
    /// A pool `name` of the addresses `range` ([`pool_bounds`]).
    pub fn parse(name: &str, range: &str) -> Result<AddressPool, String> {
        let (first, last) = pool_bounds(range)?;
        let size = u64::try_from(value(last) - value(first)).map_or(u64::MAX, |n| n.saturating_add(1));
        Ok(AddressPool { name: name.to_string(), family: AddressFamily::of(first), range: range.trim().to_string(), first, last, size })
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        AddressFamily::of(a) == self.family && (value(self.first)..=value(self.last)).contains(&value(a))
    }
}

impl fmt::Display for AddressPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.range)
    }
}

/// What `assign-address` is asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressRequest {
    /// The authenticated peer (identity, certificate and EAP facts).
    pub auth: AuthInfo,
    /// What the peer asked for, one entry per family.
    pub requested: Vec<AddressWanted>,
    /// The connection's pools, in its order: the ceiling.
    pub pools: Vec<AddressPool>,
}

/// Where one family's address comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddressPick {
    /// From this pool; the host picks the address in it.
    Pool(String),
    /// Exactly this address.
    Address(IpAddr),
}

impl AddressPick {
    /// `pool NAME` or `address ADDR` (or a bare address), the form fixtures
    /// and [`fmt::Display`] use.
    pub fn parse(s: &str) -> Result<AddressPick, String> {
        let s = s.trim();
        if let Some(name) = s.strip_prefix("pool ") {
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("'{s}': a pool name is one word"));
            }
            return Ok(AddressPick::Pool(name.to_string()));
        }
        let a = s.strip_prefix("address ").unwrap_or(s).trim();
        a.parse().map(AddressPick::Address).map_err(|_| format!("'{s}': expected `pool NAME` or `address ADDR`"))
    }
}

impl fmt::Display for AddressPick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressPick::Pool(p) => write!(f, "pool {p}"),
            AddressPick::Address(a) => write!(f, "address {a}"),
        }
    }
}

/// The answer of `assign-address`: at most one pick per family asked for;
/// a family without one gets the host's default. Empty: no opinion.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AddressChoice {
    pub picks: Vec<AddressPick>,
}

/// Why an [`AddressChoice`] is outside what the configuration allows. The
/// text reads after "policy NAME ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChoiceError {
    /// A pool that is not one of the connection's.
    UnknownPool { pool: String, pools: String },
    /// A pick (pool or address) of a family the peer did not ask for.
    NotRequested { pick: AddressPick, family: AddressFamily },
    /// An address outside every pool of the connection.
    OutsidePools { addr: IpAddr, pools: String },
    /// Two picks for one family.
    TwoPicks { family: AddressFamily, first: AddressPick, second: AddressPick },
}

impl fmt::Display for ChoiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChoiceError::UnknownPool { pool, pools } => write!(f, "picked pool {pool}, not one of the connection's pools ({pools})"),
            ChoiceError::NotRequested { pick: AddressPick::Pool(p), family } => {
                write!(f, "picked pool {p} ({family}), but the peer asked for no {family} address")
            }
            ChoiceError::NotRequested { pick: AddressPick::Address(a), family } => {
                write!(f, "assigned {a}, but the peer asked for no {family} address")
            }
            ChoiceError::OutsidePools { addr, pools } => write!(f, "assigned {addr}, outside pools {pools}"),
            ChoiceError::TwoPicks { family, first, second } => write!(f, "picked two {family} addresses ({first}, {second})"),
        }
    }
}

impl std::error::Error for ChoiceError {}

fn list(pools: &[&AddressPool]) -> String {
    if pools.is_empty() {
        return "none".to_string();
    }
    pools.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
}

impl AddressRequest {
    /// The pool called `name`.
    pub fn pool(&self, name: &str) -> Option<&AddressPool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// Holds `choice` to the request: every named pool is one of `pools`,
    /// every address inside one of them, each pick of a family the peer
    /// asked for, at most one per family. Returns the picks with their
    /// families. (Whether an address is free is not checked here.)
    pub fn check(&self, choice: &AddressChoice) -> Result<Vec<(AddressFamily, AddressPick)>, ChoiceError> {
        let mut out: Vec<(AddressFamily, AddressPick)> = Vec::new();
        for pick in &choice.picks {
            let family = match pick {
                AddressPick::Pool(name) => match self.pool(name) {
                    Some(p) => p.family,
                    None => {
                        let pools = list(&self.pools.iter().collect::<Vec<_>>());
                        return Err(ChoiceError::UnknownPool { pool: name.clone(), pools });
                    }
                },
                AddressPick::Address(a) => AddressFamily::of(*a),
            };
            if !self.requested.iter().any(|w| w.family == family) {
                return Err(ChoiceError::NotRequested { pick: pick.clone(), family });
            }
            if let AddressPick::Address(a) = pick {
                if !self.pools.iter().any(|p| p.contains(*a)) {
                    let same: Vec<&AddressPool> = self.pools.iter().filter(|p| p.family == family).collect();
                    let pools = if same.is_empty() { list(&self.pools.iter().collect::<Vec<_>>()) } else { list(&same) };
                    return Err(ChoiceError::OutsidePools { addr: *a, pools });
                }
            }
            if let Some((_, first)) = out.iter().find(|(f, _)| *f == family) {
                return Err(ChoiceError::TwoPicks { family, first: first.clone(), second: pick.clone() });
            }
            out.push((family, pick.clone()));
        }
        Ok(out)
    }
}

fn value(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_value(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

/// The first and last address of a pool written as swanctl takes it: a CIDR
/// block (`10.3.0.0/24`; its network address, and for IPv4 its broadcast
/// address, are not handed out unless the block is a /31, /32, /127 or
/// /128) or a range `10.3.0.10-10.3.0.20`.
pub fn pool_bounds(s: &str) -> Result<(IpAddr, IpAddr), String> {
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let a: IpAddr = a.trim().parse().map_err(|_| format!("{a:?} is not an IP address"))?;
        let b: IpAddr = b.trim().parse().map_err(|_| format!("{b:?} is not an IP address"))?;
        if a.is_ipv4() != b.is_ipv4() {
            return Err(format!("range {s} mixes IPv4 and IPv6"));
        }
        if value(a) > value(b) {
            return Err(format!("range {s} ends before it starts"));
        }
        return Ok((a, b));
    }
    let (net, len) = s.split_once('/').ok_or_else(|| format!("{s:?} is neither a CIDR block (10.3.0.0/24) nor a range (a-b)"))?;
    let net: IpAddr = net.trim().parse().map_err(|_| format!("{net:?} is not an IP address"))?;
    let bits: u32 = if net.is_ipv4() { 32 } else { 128 };
    let len: u32 = len.trim().parse().ok().filter(|l| *l <= bits).ok_or_else(|| format!("bad prefix length in {s:?}"))?;
    let host_bits = bits - len;
    let mask: u128 = if host_bits == 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
    let base = value(net) & !mask;
    let top = base | mask;
    if value(net) != base {
        return Err(format!("{s} has host bits set (the block is {}/{len})", from_value(base, net.is_ipv6())));
    }
    // Leave out the network address (and IPv4's broadcast) of real blocks.
    let (lo, hi) = match (net.is_ipv4(), host_bits) {
        (_, 0 | 1) => (base, top),
        (true, _) => (base + 1, top - 1),
        (false, _) => (base + 1, top),
    };
    Ok((from_value(lo, net.is_ipv6()), from_value(hi, net.is_ipv6())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IdType, Identity};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn request(requested: &[(AddressFamily, Option<&str>)]) -> AddressRequest {
        AddressRequest {
            auth: AuthInfo::psk(Identity { kind: IdType::Rfc822Addr, value: "alice@example.org".into() }),
            requested: requested.iter().map(|(family, a)| AddressWanted { family: *family, address: a.map(ip) }).collect(),
            pools: vec![
                AddressPool::parse("rw", "10.3.0.0/24").unwrap(),
                AddressPool::parse("staff", "10.4.0.10-10.4.0.20").unwrap(),
                AddressPool::parse("rw6", "fd00:3::/120").unwrap(),
            ],
        }
    }

    fn choice(picks: &[&str]) -> AddressChoice {
        AddressChoice { picks: picks.iter().map(|p| AddressPick::parse(p).unwrap()).collect() }
    }

    #[test]
    fn pools_as_policies_see_them() {
        let p = AddressPool::parse("rw", " 10.3.0.0/24 ").unwrap();
        assert_eq!((p.first, p.last, p.size, p.family), (ip("10.3.0.1"), ip("10.3.0.254"), 254, AddressFamily::Ipv4));
        assert_eq!(p.to_string(), "rw (10.3.0.0/24)");
        assert!(p.contains(ip("10.3.0.254")) && !p.contains(ip("10.3.0.255")) && !p.contains(ip("::1")));
        assert_eq!(AddressPool::parse("big", "fd00::/48").unwrap().size, u64::MAX, "saturates");
        assert_eq!(AddressPool::parse("v6", "fd00::/64").unwrap().size, u64::MAX, "2^64 - 1 exactly");
        assert_eq!(AddressPool::parse("one", "10.3.0.9/32").unwrap().size, 1);
        for bad in ["10.3.0.1/24", "10.3.0.9-10.3.0.1", "10.3.0.1-fd00::1", "10.3.0.0/33", "nonsense", "10.3.0.0"] {
            assert!(pool_bounds(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn picks_parse_and_print() {
        assert_eq!(AddressPick::parse("pool staff").unwrap(), AddressPick::Pool("staff".into()));
        assert_eq!(AddressPick::parse("address 10.3.0.7").unwrap(), AddressPick::Address(ip("10.3.0.7")));
        assert_eq!(AddressPick::parse("fd00:3::7").unwrap().to_string(), "address fd00:3::7");
        assert!(AddressPick::parse("pool two words").is_err());
        assert!(AddressPick::parse("somewhere").is_err());
    }

    #[test]
    fn choices_inside_the_configuration_pass() {
        let r = request(&[(AddressFamily::Ipv4, None), (AddressFamily::Ipv6, Some("fd00:3::9"))]);
        assert_eq!(r.check(&AddressChoice::default()).unwrap(), vec![]);
        let ok = r.check(&choice(&["pool staff", "address fd00:3::7"])).unwrap();
        assert_eq!(ok.iter().map(|(f, _)| *f).collect::<Vec<_>>(), vec![AddressFamily::Ipv4, AddressFamily::Ipv6]);
        assert!(r.check(&choice(&["address 10.4.0.20"])).is_ok());
    }

    #[test]
    fn choices_outside_the_configuration_are_named() {
        let r = request(&[(AddressFamily::Ipv4, None)]);
        let why = |picks: &[&str]| r.check(&choice(picks)).unwrap_err().to_string();
        assert_eq!(why(&["address 10.9.9.9"]), "assigned 10.9.9.9, outside pools rw (10.3.0.0/24), staff (10.4.0.10-10.4.0.20)");
        assert_eq!(why(&["address 10.3.0.255"]), "assigned 10.3.0.255, outside pools rw (10.3.0.0/24), staff (10.4.0.10-10.4.0.20)");
        assert_eq!(
            why(&["pool nope"]),
            "picked pool nope, not one of the connection's pools (rw (10.3.0.0/24), staff (10.4.0.10-10.4.0.20), rw6 (fd00:3::/120))"
        );
        assert_eq!(why(&["pool rw6"]), "picked pool rw6 (IPv6), but the peer asked for no IPv6 address");
        assert_eq!(why(&["address fd00:3::7"]), "assigned fd00:3::7, but the peer asked for no IPv6 address");
        assert_eq!(why(&["pool rw", "address 10.4.0.11"]), "picked two IPv4 addresses (pool rw, address 10.4.0.11)");
        let many = AddressChoice { picks: vec![AddressPick::Pool("rw".into()); 100_000] };
        assert!(matches!(r.check(&many), Err(ChoiceError::TwoPicks { .. })));
    }
}
