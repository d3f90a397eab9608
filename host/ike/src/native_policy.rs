//! [`ConfigPolicy`]: the native policy that accepts what the configuration
//! allows. Tests and the benchmark use it; the gateway uses the wasm plugin.

use std::collections::HashMap;
use std::net::IpAddr;

use wisp_policy_api::{
    AuthInfo, PeerContext, Policy, PolicyError, Proposal, SaKind, SelectorPair, SelectorRequest, TrafficSelector,
    TransformType,
};

use crate::config::{proposal_summary, Config};

/// Accepts the first offered proposal that the connection's configuration allows
/// (every transform type of the offer has a transform the config lists), any
/// authenticated peer, and narrows selectors to their intersection with the
/// configured ones.
#[derive(Debug, Clone, Default)]
pub struct ConfigPolicy {
    ike: HashMap<String, Vec<Proposal>>,
    child: HashMap<String, Vec<Proposal>>,
    /// When set, `authorize` denies these identities (tests of the deny path).
    pub deny_identities: Vec<String>,
}

impl ConfigPolicy {
    pub fn new(config: &Config) -> Self {
        let mut ike = HashMap::new();
        let mut child = HashMap::new();
        for c in &config.connections {
            ike.insert(c.name.clone(), c.ike_proposals.clone());
            let all: Vec<Proposal> = c.children.iter().flat_map(|ch| ch.esp_proposals.iter().cloned()).collect();
            child.insert(c.name.clone(), all);
        }
        ConfigPolicy { ike, child, deny_identities: Vec::new() }
    }

    fn configured(&self, conn: &str, kind: SaKind) -> &[Proposal] {
        let m = match kind {
            SaKind::Ike => &self.ike,
            SaKind::Child => &self.child,
        };
        m.get(conn).map(|v| v.as_slice()).unwrap_or(&[])
    }
}

/// True when `offer` can be reduced to a proposal `allowed` permits: for every
/// transform type in `allowed`, the offer carries one of the allowed transforms.
/// A KE type in `allowed` but missing in the offer is accepted for Child SAs
/// (no PFS in IKE_AUTH), and ESN defaults apply.
pub fn proposal_matches(offer: &Proposal, allowed: &Proposal, kind: SaKind) -> bool {
    if offer.protocol != allowed.protocol {
        return false;
    }
    let types = [
        TransformType::Encryption,
        TransformType::Prf,
        TransformType::Integrity,
        TransformType::KeyExchange,
        TransformType::Esn,
    ];
    for ty in types {
        let allowed_t: Vec<_> = allowed.transforms.iter().filter(|t| t.kind == ty).collect();
        let offered_t: Vec<_> = offer.transforms.iter().filter(|t| t.kind == ty).collect();
        if allowed_t.is_empty() {
            // We don't want this type; the offer must not require it (NONE is fine).
            if offered_t.iter().any(|t| !(ty == TransformType::KeyExchange && t.id == 0)) && ty != TransformType::Esn {
                return false;
            }
            continue;
        }
        if offered_t.is_empty() {
            if ty == TransformType::KeyExchange && kind == SaKind::Child {
                continue;
            }
            if ty == TransformType::Esn {
                continue;
            }
            return false;
        }
        if !offered_t.iter().any(|o| allowed_t.iter().any(|a| a.id == o.id && a.key_length == o.key_length)) {
            return false;
        }
    }
    true
}

impl Policy for ConfigPolicy {
    fn describe(&self) -> String {
        "native config-policy".into()
    }

    fn select_proposal(&self, ctx: &PeerContext, kind: SaKind, offered: &[Proposal]) -> Result<usize, PolicyError> {
        let allowed = self.configured(&ctx.connection, kind);
        // Our preference order first (like strongSwan's responder default).
        for a in allowed {
            if let Some(i) = offered.iter().position(|o| proposal_matches(o, a, kind)) {
                return Ok(i);
            }
        }
        Err(PolicyError::Refused {
            decider: self.describe(),
            reason: format!(
                "peer offered {}; we accept {}",
                offered.iter().map(proposal_summary).collect::<Vec<_>>().join(", "),
                if allowed.is_empty() {
                    "nothing for this connection".to_string()
                } else {
                    allowed.iter().map(proposal_summary).collect::<Vec<_>>().join(", ")
                }
            ),
        })
    }

    fn order_proposals(&self, _ctx: &PeerContext, _kind: SaKind, configured: &[Proposal]) -> Result<Vec<usize>, PolicyError> {
        Ok((0..configured.len()).collect())
    }

    fn authorize(&self, _ctx: &PeerContext, auth: &AuthInfo) -> Result<(), PolicyError> {
        if self.deny_identities.iter().any(|d| *d == auth.peer_identity.value) {
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

/// `10.0.0.0-10.0.0.255[proto/ports]` for diagnostics.
pub fn ts_string(t: &TrafficSelector) -> String {
    let mut s = if t.start_address == t.end_address {
        t.start_address.to_string()
    } else {
        format!("{}-{}", t.start_address, t.end_address)
    };
    if t.ip_protocol != 0 || t.start_port != 0 || t.end_port != 65535 {
        s.push_str(&format!("[{}/{}-{}]", t.ip_protocol, t.start_port, t.end_port));
    }
    s
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
    }
}
