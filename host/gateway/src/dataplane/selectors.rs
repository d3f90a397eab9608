//! Traffic selector matching on inner IP packets, and selector → CIDR routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use wisp_policy_api::TrafficSelector;

/// The 5-tuple view of an inner packet used for SPD/selector checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Ports for TCP/UDP/SCTP/UDP-Lite first fragments; `None` otherwise.
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

fn ports_of(proto: u8, l4: &[u8]) -> (Option<u16>, Option<u16>) {
    match proto {
        6 | 17 | 132 | 136 if l4.len() >= 4 => (Some(u16::from_be_bytes([l4[0], l4[1]])), Some(u16::from_be_bytes([l4[2], l4[3]]))),
        _ => (None, None),
    }
}

/// Parse the IPv4/IPv6 header of an inner packet. `None` if it is not a
/// well-formed IP header.
pub fn parse(pkt: &[u8]) -> Option<Flow> {
    match pkt.first()? >> 4 {
        4 => {
            if pkt.len() < 20 {
                return None;
            }
            let ihl = (pkt[0] & 0x0f) as usize * 4;
            if ihl < 20 || pkt.len() < ihl {
                return None;
            }
            let proto = pkt[9];
            let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
            let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
            let frag_off = u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff;
            let (sport, dport) = if frag_off == 0 { ports_of(proto, &pkt[ihl..]) } else { (None, None) };
            Some(Flow { src: src.into(), dst: dst.into(), proto, sport, dport })
        }
        6 => {
            if pkt.len() < 40 {
                return None;
            }
            let proto = pkt[6];
            let mut s = [0u8; 16];
            s.copy_from_slice(&pkt[8..24]);
            let mut d = [0u8; 16];
            d.copy_from_slice(&pkt[24..40]);
            let (sport, dport) = ports_of(proto, &pkt[40..]);
            Some(Flow { src: Ipv6Addr::from(s).into(), dst: Ipv6Addr::from(d).into(), proto, sport, dport })
        }
        _ => None,
    }
}

fn addr_in(ts: &TrafficSelector, a: IpAddr) -> bool {
    a.is_ipv4() == ts.start_address.is_ipv4() && ts.start_address <= a && a <= ts.end_address
}

fn port_ok(ts: &TrafficSelector, p: Option<u16>) -> bool {
    if ts.start_port == 0 && ts.end_port == 0xffff {
        return true;
    }
    match p {
        Some(p) => ts.start_port <= p && p <= ts.end_port,
        // ICMP and friends only match "any port" selectors (or OPAQUE).
        None => ts.start_port == 0xffff && ts.end_port == 0,
    }
}

/// Does `(addr, port)` of `flow` fall in `ts`? `local` selects the side.
fn side_matches(ts: &TrafficSelector, flow: &Flow, use_src: bool) -> bool {
    (ts.ip_protocol == 0 || ts.ip_protocol == flow.proto)
        && addr_in(ts, if use_src { flow.src } else { flow.dst })
        && port_ok(ts, if use_src { flow.sport } else { flow.dport })
}

/// Outbound: src in a local selector and dst in a remote one.
pub fn matches_outbound(local: &[TrafficSelector], remote: &[TrafficSelector], f: &Flow) -> bool {
    local.iter().any(|t| side_matches(t, f, true)) && remote.iter().any(|t| side_matches(t, f, false))
}

/// Inbound (decrypted): src in a remote selector and dst in a local one.
pub fn matches_inbound(local: &[TrafficSelector], remote: &[TrafficSelector], f: &Flow) -> bool {
    remote.iter().any(|t| side_matches(t, f, true)) && local.iter().any(|t| side_matches(t, f, false))
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

/// The minimal list of CIDR prefixes covering an address range
/// (`start..=end`, same family). Empty if the range is inverted or mixed.
pub fn range_to_cidrs(start: IpAddr, end: IpAddr) -> Vec<(IpAddr, u8)> {
    let v4 = start.is_ipv4();
    if v4 != end.is_ipv4() || start > end {
        return Vec::new();
    }
    let bits: u32 = if v4 { 32 } else { 128 };
    let (mut s, e) = (to_u128(start), to_u128(end));
    let mut out = Vec::new();
    loop {
        // Largest block aligned at s that stays within e.
        let mut size = if s == 0 { bits } else { s.trailing_zeros().min(bits) };
        while size > 0 {
            let span = if size >= 128 { u128::MAX } else { (1u128 << size) - 1 };
            if s.checked_add(span).is_some_and(|last| last <= e) {
                break;
            }
            size -= 1;
        }
        let addr = if v4 { IpAddr::V4(Ipv4Addr::from(s as u32)) } else { IpAddr::V6(Ipv6Addr::from(s)) };
        out.push((addr, (bits - size) as u8));
        let span = if size >= 128 { u128::MAX } else { (1u128 << size) - 1 };
        match s.checked_add(span).and_then(|l| l.checked_add(1)) {
            Some(next) if next <= e && (!v4 || next <= u32::MAX as u128) => s = next,
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(a: &str, b: &str) -> TrafficSelector {
        TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 0xffff,
            start_address: a.parse().unwrap(),
            end_address: b.parse().unwrap(),
        }
    }

    #[test]
    fn cidrs() {
        let c = |a: &str, b: &str| {
            range_to_cidrs(a.parse().unwrap(), b.parse().unwrap()).into_iter().map(|(a, l)| format!("{a}/{l}")).collect::<Vec<_>>()
        };
        assert_eq!(c("10.0.0.0", "10.0.0.255"), ["10.0.0.0/24"]);
        assert_eq!(c("0.0.0.0", "255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(c("10.0.0.1", "10.0.0.1"), ["10.0.0.1/32"]);
        assert_eq!(c("10.0.0.1", "10.0.0.4"), ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/32"]);
        assert_eq!(c("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ["::/0"]);
        assert_eq!(c("fd99::", "fd99::ffff"), ["fd99::/112"]);
        assert!(c("10.0.0.2", "10.0.0.1").is_empty());
    }

    #[test]
    fn parse_and_match() {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 98, 1, 1]);
        p[16..20].copy_from_slice(&[10, 98, 2, 1]);
        p[20..22].copy_from_slice(&1234u16.to_be_bytes());
        p[22..24].copy_from_slice(&53u16.to_be_bytes());
        let f = parse(&p).unwrap();
        assert_eq!((f.proto, f.sport, f.dport), (17, Some(1234), Some(53)));
        let l = [ts("10.98.1.0", "10.98.1.255")];
        let r = [ts("10.98.2.0", "10.98.2.255")];
        assert!(matches_outbound(&l, &r, &f));
        assert!(!matches_inbound(&l, &r, &f));
        let mut port53 = r[0].clone();
        port53.start_port = 53;
        port53.end_port = 53;
        port53.ip_protocol = 17;
        assert!(matches_outbound(&l, &[port53.clone()], &f));
        port53.ip_protocol = 6;
        assert!(!matches_outbound(&l, &[port53], &f));
        assert!(parse(&[0x45, 0, 0]).is_none());
        assert!(parse(&[0x60; 39]).is_none());
        assert!(parse(&[]).is_none());
    }
}
