//! The one text syntax of traffic selectors, read by the gateway's config,
//! the engine's config and the policy fixtures, and printed back by them.
//!
//! An address part (`10.1.0.0/24`, `10.1.0.7`, `10.1.0.1-10.1.0.9`,
//! `fd99::/64`) followed by either swanctl's suffix (`[tcp]`, `[tcp/80]`,
//! `[udp/500-4500]`, `[any/%any]`) or the fixtures' words (`proto 6`,
//! `port 53`, `ports 80-443`). Protocols are names (`tcp`, `udp`, `icmp`,
//! `ipv6-icmp`/`icmp6`, `sctp`, `any`) or numbers in either form.

use std::net::IpAddr;

use crate::TrafficSelector;

/// `ADDR`, `ADDR/PREFIX` or `ADDR-ADDR` as an inclusive range of one family
/// (start ≤ end). The address syntax of selectors, `remote_addrs` and identities.
pub fn address_range(s: &str) -> Option<(IpAddr, IpAddr)> {
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let a: IpAddr = a.trim().parse().ok()?;
        let b: IpAddr = b.trim().parse().ok()?;
        if a.is_ipv4() != b.is_ipv4() || a > b {
            return None;
        }
        return Some((a, b));
    }
    if let Some((a, p)) = s.split_once('/') {
        let a: IpAddr = a.trim().parse().ok()?;
        let p: u32 = p.trim().parse().ok()?;
        return match a {
            IpAddr::V4(v4) => {
                if p > 32 {
                    return None;
                }
                let mask: u32 = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                let n = u32::from(v4) & mask;
                Some((IpAddr::V4(n.into()), IpAddr::V4((n | !mask).into())))
            }
            IpAddr::V6(v6) => {
                if p > 128 {
                    return None;
                }
                let mask: u128 = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                let n = u128::from(v6) & mask;
                Some((IpAddr::V6(n.into()), IpAddr::V6((n | !mask).into())))
            }
        };
    }
    let a: IpAddr = s.parse().ok()?;
    Some((a, a))
}

/// An IP protocol by name or number.
pub fn parse_protocol(p: &str) -> Option<u8> {
    Some(match p.trim().to_ascii_lowercase().as_str() {
        "" | "any" | "%any" => 0,
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "ipv6-icmp" | "icmp6" => 58,
        "sctp" => 132,
        n => n.parse().ok()?,
    })
}

fn protocol_name(p: u8) -> String {
    match p {
        0 => "any".into(),
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "ipv6-icmp".into(),
        n => n.to_string(),
    }
}

fn parse_ports(port: &str, s: &str) -> Result<(u16, u16), String> {
    let port = port.trim();
    if port.is_empty() || port == "%any" || port == "any" {
        return Ok((0, u16::MAX));
    }
    let (a, b) = port.split_once('-').unwrap_or((port, port));
    let sp = a.trim().parse().map_err(|_| format!("invalid port `{a}` in selector `{s}`"))?;
    let ep = b.trim().parse().map_err(|_| format!("invalid port `{b}` in selector `{s}`"))?;
    if sp > ep {
        return Err(format!("invalid port range `{port}` in selector `{s}`"));
    }
    Ok((sp, ep))
}

/// Parse a selector in either form (see the module comment).
pub fn parse(s: &str) -> Result<TrafficSelector, String> {
    let s = s.trim();
    let (net, bracket, words) = match s.find('[') {
        Some(i) => {
            let rest = &s[i + 1..];
            let close = rest.strip_suffix(']').ok_or_else(|| format!("missing `]` in selector `{s}`"))?;
            (s[..i].trim(), Some(close), "")
        }
        None => match s.split_once(char::is_whitespace) {
            Some((n, w)) => (n, None, w),
            None => (s, None, ""),
        },
    };
    if net.is_empty() {
        return Err("empty selector".into());
    }
    let (start_address, end_address) = address_range(net).ok_or_else(|| {
        if net.contains('-') {
            format!("invalid address range `{net}` in selector `{s}`")
        } else if net.contains('/') {
            format!("invalid address or prefix length `{net}` in selector `{s}`")
        } else {
            format!("invalid selector `{s}` (expected CIDR, address or range)")
        }
    })?;
    let mut ts = TrafficSelector { ip_protocol: 0, start_port: 0, end_port: u16::MAX, start_address, end_address };
    if let Some(extra) = bracket {
        let (p, port) = match extra.split_once('/') {
            Some((p, port)) => (p, Some(port)),
            None => (extra, None),
        };
        ts.ip_protocol = parse_protocol(p).ok_or_else(|| format!("invalid protocol `{}` in selector `{s}`", p.trim()))?;
        if let Some(port) = port {
            (ts.start_port, ts.end_port) = parse_ports(port, s)?;
        }
    }
    let mut words = words.split_whitespace();
    while let Some(w) = words.next() {
        let v = words.next().ok_or_else(|| format!("selector `{s}`: `{w}` needs a value"))?;
        match w {
            "proto" => ts.ip_protocol = parse_protocol(v).ok_or_else(|| format!("invalid protocol `{v}` in selector `{s}`"))?,
            "port" => {
                let p = v.parse().map_err(|_| format!("invalid port `{v}` in selector `{s}`"))?;
                (ts.start_port, ts.end_port) = (p, p);
            }
            "ports" => {
                if !v.contains('-') {
                    return Err(format!("selector `{s}`: ports A-B"));
                }
                (ts.start_port, ts.end_port) = parse_ports(v, s)?;
            }
            o => return Err(format!("selector `{s}`: unknown word `{o}` (proto, port, ports)")),
        }
    }
    Ok(ts)
}

/// How [`format`] prints a selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// swanctl: `10.1.0.0/24[tcp/80]`, a host as its bare address.
    Swanctl,
    /// Fixture words: `10.1.0.0/24 proto 6 port 80`, a host as `/32` or `/128`.
    Words,
}

/// Print a selector so that [`parse`] reads it back (CIDR when the range is one).
pub fn format(ts: &TrafficSelector, style: Style) -> String {
    let key = |a: IpAddr| match a {
        IpAddr::V4(v) => (32u32, u128::from(u32::from(v))),
        IpAddr::V6(v) => (128u32, u128::from(v)),
    };
    let (bits, x) = key(ts.start_address);
    let (bits_end, y) = key(ts.end_address);
    let span = x ^ y;
    let is_prefix = bits == bits_end && x <= y && span.wrapping_add(1) & span == 0 && x & span == 0 && y & span == span;
    let mut out = if style == Style::Swanctl && ts.start_address == ts.end_address {
        ts.start_address.to_string()
    } else if is_prefix {
        let host = 128 - span.leading_zeros();
        format!("{}/{}", ts.start_address, bits - host)
    } else {
        format!("{}-{}", ts.start_address, ts.end_address)
    };
    let all_ports = ts.start_port == 0 && ts.end_port == u16::MAX;
    match style {
        Style::Swanctl => {
            if ts.ip_protocol == 0 && all_ports {
                return out;
            }
            let proto = protocol_name(ts.ip_protocol);
            if all_ports {
                out.push_str(&format!("[{proto}]"));
            } else if ts.start_port == ts.end_port {
                out.push_str(&format!("[{proto}/{}]", ts.start_port));
            } else {
                out.push_str(&format!("[{proto}/{}-{}]", ts.start_port, ts.end_port));
            }
        }
        Style::Words => {
            if ts.ip_protocol != 0 {
                out.push_str(&format!(" proto {}", ts.ip_protocol));
            }
            if !all_ports {
                if ts.start_port == ts.end_port {
                    out.push_str(&format!(" port {}", ts.start_port));
                } else {
                    out.push_str(&format!(" ports {}-{}", ts.start_port, ts.end_port));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(s: &str, style: Style) -> String {
        format(&parse(s).unwrap(), style)
    }

    #[test]
    fn both_syntaxes_read_the_same_selector() {
        assert_eq!(parse("10.1.2.3/24[tcp/80-443]").unwrap(), parse("10.1.2.3/24 proto tcp ports 80-443").unwrap());
        assert_eq!(parse("10.1.2.0/24[6/80]").unwrap(), parse("10.1.2.0/24 proto 6 port 80").unwrap());
        assert_eq!(round("10.1.2.3/24 proto 6 ports 80-443", Style::Swanctl), "10.1.2.0/24[tcp/80-443]");
        assert_eq!(round("10.1.2.3/24[tcp/80-443]", Style::Words), "10.1.2.0/24 proto 6 ports 80-443");
        assert_eq!(round("fd99::/64[udp/500-4500]", Style::Swanctl), "fd99::/64[udp/500-4500]");
        assert_eq!(round("10.0.0.1-10.0.0.9", Style::Swanctl), "10.0.0.1-10.0.0.9");
        assert_eq!(round("0.0.0.0/0", Style::Swanctl), "0.0.0.0/0");
        assert_eq!(round("::/0", Style::Words), "::/0");
        assert_eq!(round("10.0.0.5", Style::Swanctl), "10.0.0.5");
        assert_eq!(round("10.0.0.5", Style::Words), "10.0.0.5/32");
        assert_eq!(round("fd99::1", Style::Words), "fd99::1/128");
        assert_eq!(round("10.0.0.0/24[any/%any]", Style::Swanctl), "10.0.0.0/24");
        assert_eq!(round("10.0.0.0/24[tcp]", Style::Swanctl), "10.0.0.0/24[tcp]");
    }

    #[test]
    fn refusals_name_the_fault() {
        for (s, what) in [
            ("10.0.0.9-10.0.0.1", "invalid address range"),
            ("10.0.0.1-fd99::1", "invalid address range"),
            ("10.0.0.0/33", "prefix length"),
            ("nonsense", "expected CIDR, address or range"),
            ("10.0.0.0/24[tcp/90-80]", "invalid port range"),
            ("10.0.0.0/24[tcp/80", "missing `]`"),
            ("10.0.0.0/24[bogus]", "invalid protocol `bogus`"),
            ("10.0.0.0/24 proto", "needs a value"),
            ("10.0.0.0/24 ports 80", "ports A-B"),
            ("10.0.0.0/24 color red", "unknown word"),
            ("", "empty selector"),
        ] {
            let e = parse(s).unwrap_err();
            assert!(e.contains(what), "{s}: {e}");
        }
    }
}
