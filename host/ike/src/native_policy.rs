//! [`ConfigPolicy`]: the native policy that accepts what the configuration
//! allows. Tests and the benchmark use it; the gateway uses the wasm plugin.

use std::net::IpAddr;

use wisp_policy_api::{
    AuthInfo, PeerContext, Policy, PolicyError, Proposal, ProposalChoice, SaKind, SelectorPair, SelectorRequest, TrafficSelector,
    TransformType,
};

use crate::config::{proposal_summary, Config};

/// Accepts, in the order of the configured proposals, the first offered
/// proposal that has a reduction inside one of them (RFC 7296 3.3: one
/// transform of each offered type, alternatives it does not want ignored), any
/// authenticated peer, and narrows selectors to their intersection with the
/// configured ones. The host still enforces the configured proposals on its
/// answer.
#[derive(Debug, Clone, Default)]
pub struct ConfigPolicy {
    /// When set, `authorize` denies these identities (tests of the deny path).
    pub deny_identities: Vec<String>,
}

impl ConfigPolicy {
    /// The proposals to accept come with every `select_proposal` call (the
    /// connection's, or the Child SA's), so the config is not kept.
    pub fn new(_config: &Config) -> Self {
        ConfigPolicy { deny_identities: Vec::new() }
    }
}

/// True when `offer` can be reduced inside `allowed` (RFC 7296 3.3): every
/// transform type the offer carries has a transform `allowed` lists (NONE for
/// integrity and key exchange, and "no ESN", also when `allowed` lacks the
/// type), and every type `allowed` lists is offered (so a configured key
/// exchange, PFS, is required), except the key exchange of a Child SA
/// negotiated in IKE_AUTH, which the host passes without KE transforms.
pub fn proposal_matches(offer: &Proposal, allowed: &Proposal, kind: SaKind) -> bool {
    if offer.protocol != allowed.protocol {
        return false;
    }
    let types = [TransformType::Encryption, TransformType::Prf, TransformType::Integrity, TransformType::KeyExchange, TransformType::Esn];
    if offer.transforms.iter().any(|t| !types.contains(&t.kind)) {
        return false;
    }
    let no_ke_offered = !offer.transforms.iter().any(|t| t.kind == TransformType::KeyExchange);
    for ty in types {
        let allowed_t: Vec<_> = allowed.transforms.iter().filter(|t| t.kind == ty).collect();
        let offered_t: Vec<_> = offer.transforms.iter().filter(|t| t.kind == ty).collect();
        if offered_t.is_empty() {
            let optional = (ty == TransformType::KeyExchange && kind == SaKind::Child && no_ke_offered)
                || (ty == TransformType::Esn && allowed_t.iter().any(|t| t.id == 0));
            if !allowed_t.is_empty() && !optional {
                return false;
            }
            continue;
        }
        let none_ok = allowed_t.is_empty() && ty != TransformType::Encryption && ty != TransformType::Prf;
        if !offered_t.iter().any(|o| allowed_t.iter().any(|a| a.id == o.id && a.key_length == o.key_length) || (none_ok && o.id == 0)) {
            return false;
        }
    }
    true
}

impl Policy for ConfigPolicy {
    fn describe(&self) -> String {
        "native config-policy".into()
    }

    fn select_proposal(
        &self,
        _ctx: &PeerContext,
        kind: SaKind,
        offered: &[Proposal],
        configured: &[Proposal],
    ) -> Result<ProposalChoice, PolicyError> {
        // Our preference order first (like strongSwan's responder default).
        for a in configured {
            if let Some(i) = offered.iter().position(|o| proposal_matches(o, a, kind)) {
                return Ok(ProposalChoice::index(i));
            }
        }
        Err(PolicyError::Refused {
            decider: self.describe(),
            reason: format!(
                "peer offered {}; we accept {}",
                offered.iter().map(proposal_summary).collect::<Vec<_>>().join(", "),
                if configured.is_empty() {
                    "nothing for this connection".to_string()
                } else {
                    configured.iter().map(proposal_summary).collect::<Vec<_>>().join(", ")
                }
            ),
        })
    }

    fn order_proposals(&self, _ctx: &PeerContext, _kind: SaKind, configured: &[Proposal]) -> Result<Vec<usize>, PolicyError> {
        Ok((0..configured.len()).collect())
    }

    fn authorize(&self, _ctx: &PeerContext, auth: &AuthInfo) -> Result<(), PolicyError> {
        if self.deny_identities.contains(&auth.peer_identity.value) {
            return Err(PolicyError::Refused {
                decider: self.describe(),
                reason: format!("identity {} is denied", auth.peer_identity.value),
            });
        }
        Ok(())
    }

    fn narrow_selectors(&self, _ctx: &PeerContext, req: &SelectorRequest) -> Result<SelectorPair, PolicyError> {
        let remote = intersect_all(&req.remote_proposed, &req.remote_configured);
        let local = intersect_all(&req.local_proposed, &req.local_configured);
        if remote.is_empty() || local.is_empty() {
            return Err(PolicyError::Refused {
                decider: self.describe(),
                reason: format!(
                    "proposed remote {} / local {} do not overlap configured remote {} / local {}",
                    ts_list(&req.remote_proposed),
                    ts_list(&req.local_proposed),
                    ts_list(&req.remote_configured),
                    ts_list(&req.local_configured)
                ),
            });
        }
        Ok(SelectorPair { remote, local })
    }
}

/// Printable selector list for diagnostics.
pub fn ts_list(v: &[TrafficSelector]) -> String {
    if v.is_empty() {
        return "(none)".into();
    }
    v.iter().map(ts_string).collect::<Vec<_>>().join(",")
}

/// `10.0.0.0/24[proto/ports]` (a range that is no prefix as
/// `10.0.0.1-10.0.0.9`) for diagnostics.
pub fn ts_string(t: &TrafficSelector) -> String {
    let mut s = range_string(t.start_address, t.end_address);
    if t.ip_protocol != 0 || t.start_port != 0 || t.end_port != 65535 {
        s.push_str(&format!("[{}/{}-{}]", t.ip_protocol, t.start_port, t.end_port));
    }
    s
}

/// `start..=end` as one address, `ADDR/PREFIX` or `ADDR-ADDR`.
pub fn range_string(start: IpAddr, end: IpAddr) -> String {
    if start == end {
        start.to_string()
    } else if let Some(len) = prefix_len(start, end) {
        format!("{start}/{len}")
    } else {
        format!("{start}-{end}")
    }
}

/// The prefix length when `start..=end` is exactly one CIDR block.
fn prefix_len(start: IpAddr, end: IpAddr) -> Option<u32> {
    let (a, b, bits) = match (start, end) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return None,
    };
    let host = a ^ b;
    // The differing low bits must all be 0 in start and 1 in end.
    if host.count_ones() != 128 - host.leading_zeros() || a & host != 0 {
        return None;
    }
    Some(bits - (128 - host.leading_zeros()))
}

/// Intersection of two selectors, if not empty.
pub fn intersect(a: &TrafficSelector, b: &TrafficSelector) -> Option<TrafficSelector> {
    if a.start_address.is_ipv4() != b.start_address.is_ipv4() {
        return None;
    }
    let proto = match (a.ip_protocol, b.ip_protocol) {
        (0, p) | (p, 0) => p,
        (p, q) if p == q => p,
        _ => return None,
    };
    let sp = a.start_port.max(b.start_port);
    let ep = a.end_port.min(b.end_port);
    if sp > ep {
        return None;
    }
    let sa: IpAddr = a.start_address.max(b.start_address);
    let ea: IpAddr = a.end_address.min(b.end_address);
    if sa > ea {
        return None;
    }
    Some(TrafficSelector { ip_protocol: proto, start_port: sp, end_port: ep, start_address: sa, end_address: ea })
}

/// All non-empty pairwise intersections, without duplicates.
pub fn intersect_all(proposed: &[TrafficSelector], configured: &[TrafficSelector]) -> Vec<TrafficSelector> {
    let mut out: Vec<TrafficSelector> = Vec::new();
    for p in proposed {
        for c in configured {
            if let Some(x) = intersect(p, c) {
                if !out.contains(&x) {
                    out.push(x);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_proposal, selector};

    #[test]
    fn intersection_narrows() {
        let a = selector("10.0.0.0/16").unwrap();
        let b = selector("10.0.5.0/24").unwrap();
        assert_eq!(intersect(&a, &b), Some(b.clone()));
        assert_eq!(intersect(&b, &selector("10.1.0.0/24").unwrap()), None);
        assert_eq!(intersect(&b, &selector("fd00::/64").unwrap()), None);
    }

    #[test]
    fn selectors_print_as_prefixes_where_they_are_one() {
        let ts = |a: &str, b: &str| TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: 65535,
            start_address: a.parse().unwrap(),
            end_address: b.parse().unwrap(),
        };
        assert_eq!(ts_string(&ts("10.1.0.0", "10.1.0.63")), "10.1.0.0/26");
        assert_eq!(ts_string(&ts("0.0.0.0", "255.255.255.255")), "0.0.0.0/0");
        assert_eq!(ts_string(&ts("10.0.0.1", "10.0.0.9")), "10.0.0.1-10.0.0.9");
        assert_eq!(ts_string(&ts("10.0.0.64", "10.0.0.191")), "10.0.0.64-10.0.0.191");
        assert_eq!(ts_string(&ts("10.0.0.1", "10.0.0.1")), "10.0.0.1");
        assert_eq!(ts_string(&ts("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")), "::/0");
        assert_eq!(ts_string(&ts("fd00::", "fd00::ffff:ffff:ffff:ffff")), "fd00::/64");
        let mut web = ts("10.0.0.0", "10.0.0.255");
        (web.ip_protocol, web.start_port, web.end_port) = (6, 443, 443);
        assert_eq!(ts_string(&web), "10.0.0.0/24[6/443-443]");
    }

    #[test]
    fn matching() {
        let want = parse_proposal("aes256gcm16-prfsha256-x25519", SaKind::Ike).unwrap();
        let multi = parse_proposal("aes128gcm16-aes256gcm16-prfsha256-ecp256-x25519", SaKind::Ike).unwrap();
        assert!(proposal_matches(&multi, &want, SaKind::Ike));
        let other = parse_proposal("aes128gcm16-prfsha256-x25519", SaKind::Ike).unwrap();
        assert!(!proposal_matches(&other, &want, SaKind::Ike));
        let esp_pfs = parse_proposal("aes256gcm16-x25519", SaKind::Child).unwrap();
        let esp = parse_proposal("aes256gcm16", SaKind::Child).unwrap();
        assert!(proposal_matches(&esp, &esp_pfs, SaKind::Child), "no KE in IKE_AUTH is fine");
        assert!(!proposal_matches(&esp_pfs, &esp, SaKind::Child), "we don't want PFS but the peer requires it");
        // An alternative we do not want (or implement) next to one we do is ignored.
        let with_ccm = parse_proposal("aes256gcm16-aes128gcm8-prfsha1-prfsha256-x25519-modp2048", SaKind::Ike).unwrap();
        assert!(proposal_matches(&with_ccm, &want, SaKind::Ike));
    }
}
