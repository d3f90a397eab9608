//! Traffic-selector arithmetic: intersection, containment, narrowing.

use crate::cidr::{ip_from_wit, ip_key};
use crate::{refuse, Refusal, SelectorPair, SelectorRequest, TrafficSelector};

/// Intersection of two selectors: same address family, protocol equal or one of
/// them "any" (0), overlapping port and address ranges. `None` when empty.
pub fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    let (a_s, a_e) = (ip_key(&a.start_address), ip_key(&a.end_address));
    let (b_s, b_e) = (ip_key(&b.start_address), ip_key(&b.end_address));
    if a_s.0 != a_e.0 || b_s.0 != b_e.0 || a_s.0 != b_s.0 {
        return None;
    }
    let ip_protocol = match (a.ip_protocol, b.ip_protocol) {
        (0, p) | (p, 0) => p,
        (p, q) if p == q => p,
        _ => return None,
    };
    let start_port = a.start_port.max(b.start_port);
    let end_port = a.end_port.min(b.end_port);
    if start_port > end_port {
        return None;
    }
    let (start_address, start_key) =
        if a_s.1 >= b_s.1 { (a.start_address, a_s.1) } else { (b.start_address, b_s.1) };
    let (end_address, end_key) = if a_e.1 <= b_e.1 { (a.end_address, a_e.1) } else { (b.end_address, b_e.1) };
    if start_key > end_key {
        return None;
    }
    Some(TrafficSelector { ip_protocol, start_port, end_port, start_address, end_address })
}

/// Is `inner` entirely inside `outer`?
pub fn is_subset(inner: &TrafficSelector, outer: &TrafficSelector) -> bool {
    intersect(inner, outer).as_ref() == Some(inner)
        && (outer.ip_protocol == 0 || outer.ip_protocol == inner.ip_protocol)
}

/// Every non-empty intersection of a proposed selector with an allowed one,
/// in proposed-major order, without duplicates.
pub fn intersect_lists(proposed: &[TrafficSelector], allowed: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for p in proposed {
        for a in allowed {
            if let Some(i) = intersect(p, a) {
                if !out.contains(&i) {
                    out.push(i);
                }
            }
        }
    }
    out
}

/// Printable selector: `10.1.0.0/24`, `10.1.0.5-10.1.0.9`, with
/// `proto 6 port 443` / `ports 1000-2000` appended when not "any".
pub fn format_selector(t: &TrafficSelector) -> String {
    let (s, e) = (ip_key(&t.start_address), ip_key(&t.end_address));
    let bits = if s.0 { 32 } else { 128 };
    let span = e.1.wrapping_sub(s.1);
    let mut out = String::new();
    // A CIDR block: span+1 is a power of two and start is aligned to it.
    let is_block = s.0 == e.0 && e.1 >= s.1 && span.wrapping_add(1) & span == 0 && s.1 & span == 0;
    if is_block {
        let host_bits = if span == u128::MAX { 128 } else { 128 - (span.wrapping_add(1)).leading_zeros() - 1 };
        out.push_str(&format!("{}/{}", ip_from_wit(&t.start_address), bits - host_bits.min(bits)));
    } else {
        out.push_str(&format!("{}-{}", ip_from_wit(&t.start_address), ip_from_wit(&t.end_address)));
    }
    if t.ip_protocol != 0 {
        out.push_str(&format!(" proto {}", t.ip_protocol));
    }
    if !(t.start_port == 0 && t.end_port == 65535) {
        if t.start_port == t.end_port {
            out.push_str(&format!(" port {}", t.start_port));
        } else {
            out.push_str(&format!(" ports {}-{}", t.start_port, t.end_port));
        }
    }
    out
}

/// Printable list of selectors: `[10.1.0.0/24, fd99::/64]`.
pub fn format_list(l: &[TrafficSelector]) -> String {
    let v: Vec<String> = l.iter().map(format_selector).collect();
    format!("[{}]", v.join(", "))
}

/// Narrow one side: proposed ∩ allowed, or a refusal naming `side`.
pub fn narrow_side(
    side: &str,
    proposed: &[TrafficSelector],
    allowed: &[TrafficSelector],
    allowed_label: &str,
) -> Result<Vec<TrafficSelector>, Refusal> {
    let v = intersect_lists(proposed, allowed);
    if v.is_empty() {
        Err(refuse(format!(
            "{side} selectors do not overlap the {allowed_label} ranges (proposed {}, {allowed_label} {})",
            format_list(proposed),
            format_list(allowed)
        )))
    } else {
        Ok(v)
    }
}

/// The usual narrowing: each side becomes the intersection of what was proposed
/// and what the connection has configured; an empty side refuses
/// (TS_UNACCEPTABLE) with a reason naming both lists.
pub fn narrow_to_configured(req: &SelectorRequest) -> Result<SelectorPair, Refusal> {
    let remote = narrow_side("remote", &req.remote_proposed, &req.remote_configured, "configured")?;
    let local = narrow_side("local", &req.local_proposed, &req.local_configured, "configured")?;
    Ok(SelectorPair { remote, local })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cidr;

    fn c(s: &str) -> TrafficSelector {
        Cidr::parse(s).unwrap().selector()
    }

    #[test]
    fn intersections() {
        let i = intersect(&c("10.0.0.0/8"), &c("10.1.0.0/16")).unwrap();
        assert_eq!(i, c("10.1.0.0/16"));
        assert!(intersect(&c("10.0.0.0/16"), &c("10.1.0.0/16")).is_none());
        assert!(intersect(&c("10.0.0.0/8"), &c("fd00::/8")).is_none());
        let mut tcp = c("10.1.0.0/24");
        tcp.ip_protocol = 6;
        tcp.start_port = 443;
        tcp.end_port = 443;
        let i = intersect(&c("10.0.0.0/8"), &tcp).unwrap();
        assert_eq!(i, tcp);
        let mut udp = tcp;
        udp.ip_protocol = 17;
        assert!(intersect(&udp, &tcp).is_none());
        assert!(is_subset(&c("10.1.2.0/24"), &c("10.1.0.0/16")));
        assert!(!is_subset(&c("10.0.0.0/8"), &c("10.1.0.0/16")));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_selector(&c("10.1.0.0/24")), "10.1.0.0/24");
        assert_eq!(format_selector(&c("0.0.0.0/0")), "0.0.0.0/0");
        assert_eq!(format_selector(&c("::/0")), "::/0");
        assert_eq!(format_selector(&c("fd99::1")), "fd99::1/128");
        let mut t = c("10.1.0.0/24");
        t.end_address = crate::ip_to_wit("10.1.0.9".parse().unwrap());
        t.start_address = crate::ip_to_wit("10.1.0.5".parse().unwrap());
        t.ip_protocol = 6;
        t.start_port = 80;
        t.end_port = 80;
        assert_eq!(format_selector(&t), "10.1.0.5-10.1.0.9 proto 6 port 80");
    }
}
