//! Conversions between the wire types (`crate::codec`) and the policy types
//! (`wisp_policy_api`), plus proposal filtering and reduction.

use std::net::{Ipv4Addr, Ipv6Addr};

use wisp_policy_api as api;

use crate::codec::{self, IdPayload, IdType, ProtocolId, TransformType, TsRange};
use crate::config::proposal_summary;

use super::suite::{aead_supported, dh_supported, prf_supported};

pub fn to_wire_proposal(p: &api::Proposal, number: u8, spi: Vec<u8>, with_ke: bool) -> codec::Proposal {
    codec::Proposal {
        number,
        protocol: ProtocolId(p.protocol.raw()),
        spi,
        transforms: p
            .transforms
            .iter()
            .filter(|t| with_ke || t.kind != api::TransformType::KeyExchange)
            .map(|t| match t.key_length {
                Some(k) => codec::Transform::with_key_length(TransformType(t.kind.raw()), t.id, k),
                None => codec::Transform::new(TransformType(t.kind.raw()), t.id),
            })
            .collect(),
    }
}

pub fn to_api_proposal(p: &codec::Proposal) -> api::Proposal {
    api::Proposal {
        number: p.number,
        protocol: api::Protocol::from_raw(p.protocol.0),
        transforms: p
            .transforms
            .iter()
            .map(|t| api::Transform { kind: api::TransformType::from_raw(t.transform_type.0), id: t.id, key_length: t.key_length() })
            .collect(),
    }
}

/// Human summary of wire proposals for diagnostics.
pub fn summary(ps: &[codec::Proposal]) -> String {
    if ps.is_empty() {
        return "nothing".into();
    }
    ps.iter().map(|p| proposal_summary(&to_api_proposal(p))).collect::<Vec<_>>().join(", ")
}

fn transform_supported(t: &codec::Transform, kind: api::SaKind) -> bool {
    match t.transform_type {
        TransformType::ENCR => aead_supported(t.id, t.key_length()),
        TransformType::PRF => kind == api::SaKind::Ike && prf_supported(t.id),
        TransformType::INTEG => t.id == 0,
        TransformType::DH => t.id == 0 || dh_supported(t.id),
        TransformType::ESN => kind == api::SaKind::Child && (t.id == 0 || t.id == 1),
        _ => false,
    }
}

/// The transform types a proposal may carry, in answer order.
const TYPES: [TransformType; 5] = [TransformType::ENCR, TransformType::PRF, TransformType::INTEG, TransformType::DH, TransformType::ESN];

fn type_name(ty: TransformType) -> &'static str {
    match ty {
        TransformType::ENCR => "encryption",
        TransformType::PRF => "PRF",
        TransformType::INTEG => "integrity",
        TransformType::DH => "key exchange",
        TransformType::ESN => "ESN",
        _ => "unknown",
    }
}

fn same(t: &codec::Transform, c: &api::Transform) -> bool {
    c.kind.raw() == t.transform_type.0 && c.id == t.id && c.key_length == t.key_length()
}

/// RFC 7296 3.3: a proposal is an OR within each transform type. Reduce
/// `offered` to one transform of every type it carries, inside ONE of
/// `ceiling` (the configured proposals, in our order of preference), ignoring
/// alternatives we do not implement or did not configure.
///
/// - `named`: indices into `offered.transforms` the policy chose (at most one
///   per type); a named transform must itself be acceptable.
/// - `ke_group`: the group of the peer's KE payload, preferred when acceptable.
/// - `ignore_ke`: IKE_AUTH's Child SA, which has no key exchange of its own
///   (the caller already removed the KE transforms of the offer); the ceiling's
///   KE transforms are ignored too. Everywhere else a configured key exchange
///   (PFS) must be in the answer.
///
/// A type of the ceiling's proposal that the offer lacks fails that proposal
/// (e.g. PFS configured, no KE offered); a type the offer carries but the
/// ceiling's proposal lacks is acceptable only as NONE (integrity, KE) or, for
/// ESN, as "no ESN".
pub fn negotiate(
    offered: &codec::Proposal,
    kind: api::SaKind,
    ceiling: &[api::Proposal],
    named: &[usize],
    ke_group: Option<u16>,
    ignore_ke: bool,
) -> Result<codec::Proposal, String> {
    let want_proto = match kind {
        api::SaKind::Ike => ProtocolId::IKE,
        api::SaKind::Child => ProtocolId::ESP,
    };
    if offered.protocol != want_proto {
        return Err(format!("protocol {} instead of {}", offered.protocol.0, want_proto.0));
    }
    if let Some(t) = offered.transforms.iter().find(|t| !TYPES.contains(&t.transform_type)) {
        return Err(format!("transform type {} we cannot answer", t.transform_type.0));
    }
    let mut chosen: Vec<&codec::Transform> = Vec::with_capacity(named.len());
    for &i in named {
        let Some(t) = offered.transforms.get(i) else {
            return Err(format!("policy named transform #{i} of a proposal of {}", offered.transforms.len()));
        };
        if chosen.iter().any(|c| c.transform_type == t.transform_type) {
            return Err(format!("policy named two {} transforms", type_name(t.transform_type)));
        }
        chosen.push(t);
    }
    if ceiling.is_empty() {
        return Err("no proposal configured".into());
    }
    let mut why = Vec::new();
    'conf: for (ci, c) in ceiling.iter().enumerate() {
        if c.protocol.raw() != offered.protocol.0 {
            why.push(format!("configured #{}: other protocol", ci + 1));
            continue;
        }
        let mut out = codec::Proposal { number: offered.number, protocol: offered.protocol, spi: Vec::new(), transforms: Vec::new() };
        for ty in TYPES {
            let conf: Vec<&api::Transform> =
                c.transforms.iter().filter(|t| t.kind.raw() == ty.0 && !(ignore_ke && ty == TransformType::DH)).collect();
            let offer: Vec<&codec::Transform> = offered.transforms_of(ty).collect();
            if offer.is_empty() {
                let optional = ty == TransformType::ESN && conf.iter().any(|t| t.id == 0);
                if !conf.is_empty() && !optional {
                    why.push(format!("configured #{}: peer offers no {} transform", ci + 1, type_name(ty)));
                    continue 'conf;
                }
                continue;
            }
            let none_ok = matches!(ty, TransformType::INTEG | TransformType::DH | TransformType::ESN) && conf.is_empty();
            let acceptable =
                |t: &codec::Transform| transform_supported(t, kind) && (conf.iter().any(|c| same(t, c)) || (none_ok && t.id == 0));
            let named_ty = chosen.iter().find(|t| t.transform_type == ty);
            let pick = match named_ty {
                Some(t) => acceptable(t).then_some(*t),
                None => {
                    let by_ke = (ty == TransformType::DH)
                        .then(|| ke_group.and_then(|g| offer.iter().copied().find(|t| t.id == g && acceptable(t))))
                        .flatten();
                    by_ke
                        .or_else(|| conf.iter().find_map(|c| offer.iter().copied().find(|t| same(t, c) && acceptable(t))))
                        .or_else(|| offer.iter().copied().find(|t| acceptable(t)))
                }
            };
            let Some(pick) = pick else {
                let what = match named_ty {
                    Some(t) => format!("the policy's {} {}", type_name(ty), transform_label(t)),
                    None => format!("no acceptable {} transform", type_name(ty)),
                };
                why.push(format!("configured #{}: {what}", ci + 1));
                continue 'conf;
            };
            out.transforms.push(pick.clone());
        }
        return Ok(out);
    }
    Err(why.join("; "))
}

fn transform_label(t: &codec::Transform) -> String {
    let api_t = api::Transform { kind: api::TransformType::from_raw(t.transform_type.0), id: t.id, key_length: t.key_length() };
    crate::config::transform_name(&api_t)
}

/// One transform of a type from a reduced proposal.
pub fn pick(p: &codec::Proposal, ty: TransformType) -> Option<&codec::Transform> {
    p.transforms_of(ty).next()
}

/// Initiator: is the peer's `answer` a proper answer to what we `offered`? It
/// must name a proposal we sent, carry exactly one transform of each type that
/// proposal carries (so an answer without the KE transform to a PFS offer is
/// refused), and nothing else.
pub fn check_answer(answer: &codec::Proposal, offered: &[codec::Proposal]) -> Result<(), String> {
    let Some(o) = offered.iter().find(|o| o.number == answer.number && o.protocol == answer.protocol) else {
        return Err(format!("peer chose proposal #{} which we did not offer", answer.number));
    };
    if let Some(t) = answer
        .transforms
        .iter()
        .find(|t| !o.transforms.iter().any(|x| x.transform_type == t.transform_type && x.id == t.id && x.key_length() == t.key_length()))
    {
        return Err(format!("peer chose {} which we did not offer in proposal #{}", transform_label(t), o.number));
    }
    for ty in TYPES {
        let offered_ty = o.transforms_of(ty).next().is_some();
        let n = answer.transforms_of(ty).count();
        if offered_ty && n != 1 {
            return Err(format!("peer answered {n} {} transforms to proposal #{} (one expected)", type_name(ty), o.number));
        }
    }
    Ok(())
}

pub fn esp_cipher(p: &codec::Proposal) -> Option<crate::event::EspCipher> {
    let t = pick(p, TransformType::ENCR)?;
    match t.id {
        crate::config::ENCR_AES_GCM_16 => Some(crate::event::EspCipher::AesGcm16 { key_bits: t.key_length()? }),
        crate::config::ENCR_CHACHA20_POLY1305 => Some(crate::event::EspCipher::ChaCha20Poly1305),
        _ => None,
    }
}

pub fn identity_to_wire(id: &api::Identity) -> IdPayload {
    let data = match id.kind {
        api::IdType::Ipv4Addr => match id.value.parse::<Ipv4Addr>() {
            Ok(a) => a.octets().to_vec(),
            Err(_) => id.value.as_bytes().to_vec(),
        },
        api::IdType::Ipv6Addr => match id.value.parse::<Ipv6Addr>() {
            Ok(a) => a.octets().to_vec(),
            Err(_) => id.value.as_bytes().to_vec(),
        },
        // A DN is held as its RFC 4514 string (what plugins and status
        // show); a value that is not one is taken as hex DER.
        api::IdType::DerAsn1Dn => {
            crate::pki::dn::from_rfc4514(&id.value).ok().or_else(|| hex_decode(&id.value)).unwrap_or_else(|| id.value.as_bytes().to_vec())
        }
        api::IdType::KeyId | api::IdType::DerAsn1Gn | api::IdType::Unknown(_) => {
            hex_decode(&id.value).unwrap_or_else(|| id.value.as_bytes().to_vec())
        }
        _ => id.value.as_bytes().to_vec(),
    };
    IdPayload { id_type: IdType(id.kind.raw()), data }
}

/// Whether `remote.id` accepts the identity in an ID payload: an exact
/// identity compares wire forms (DNs RDN by RDN, see [`same_identity`]), a
/// pattern the decoded identity.
pub fn id_accepts(m: &crate::config::IdMatch, wire: &IdPayload) -> bool {
    match m {
        crate::config::IdMatch::Exact(e) => same_identity(e, wire),
        other => other.matches(&identity_from_wire(wire)),
    }
}

/// Is the ID payload `wire` the identity `id`? Wire forms compared; DNs
/// with [`crate::pki::dn::equal`] (the string types of the values and the
/// case of PrintableStrings do not matter, as in strongSwan).
pub fn same_identity(id: &api::Identity, wire: &IdPayload) -> bool {
    let ours = identity_to_wire(id);
    if ours.id_type != wire.id_type {
        return false;
    }
    if wire.id_type == IdType::DER_ASN1_DN {
        return ours.data == wire.data || crate::pki::dn::equal(&ours.data, &wire.data);
    }
    ours.data == wire.data
}

pub fn identity_from_wire(p: &IdPayload) -> api::Identity {
    let kind = api::IdType::from_raw(p.id_type.0);
    let value = match kind {
        api::IdType::Ipv4Addr if p.data.len() == 4 => Ipv4Addr::new(p.data[0], p.data[1], p.data[2], p.data[3]).to_string(),
        api::IdType::Ipv6Addr if p.data.len() == 16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&p.data);
            Ipv6Addr::from(b).to_string()
        }
        api::IdType::Fqdn | api::IdType::Rfc822Addr if p.data.iter().all(|c| c.is_ascii_graphic()) => {
            String::from_utf8_lossy(&p.data).into_owned()
        }
        api::IdType::DerAsn1Dn if p.data.len() <= crate::pki::dn::MAX_DN_DER => match crate::pki::dn::to_rfc4514(&p.data) {
            Ok(s) => s,
            Err(_) => hex(&p.data),
        },
        _ => p.data.iter().map(|b| format!("{b:02x}")).collect(),
    };
    api::Identity { kind, value }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) || s.is_empty() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

pub fn ts_to_wire(ts: &[api::TrafficSelector]) -> codec::TsPayload {
    codec::TsPayload {
        selectors: ts
            .iter()
            .map(|t| {
                codec::TrafficSelector::Range(TsRange {
                    ip_protocol: t.ip_protocol,
                    start_port: t.start_port,
                    end_port: t.end_port,
                    start_addr: t.start_address,
                    end_addr: t.end_address,
                })
            })
            .collect(),
    }
}

pub fn ts_from_wire(p: &codec::TsPayload) -> Vec<api::TrafficSelector> {
    p.selectors
        .iter()
        .filter_map(|s| match s {
            codec::TrafficSelector::Range(r) if r.start_addr.is_ipv4() == r.end_addr.is_ipv4() => Some(api::TrafficSelector {
                ip_protocol: r.ip_protocol,
                start_port: r.start_port,
                end_port: r.end_port,
                start_address: r.start_addr,
                end_address: r.end_addr,
            }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_proposal;

    fn wire(s: &str, kind: api::SaKind, number: u8) -> codec::Proposal {
        to_wire_proposal(&parse_proposal(s, kind).unwrap(), number, vec![0, 0, 0, 1], true)
    }

    #[test]
    fn initiator_refuses_answer_without_dh_when_pfs_configured() {
        let child = api::SaKind::Child;
        let offered = vec![wire("aes256gcm16-x25519", child, 1)];
        let mut answer = offered[0].clone();
        assert!(check_answer(&answer, &offered).is_ok());
        answer.transforms.retain(|t| t.transform_type != TransformType::DH);
        let e = check_answer(&answer, &offered).unwrap_err();
        assert!(e.contains("key exchange"), "{e}");
        // ESN dropped: refused the same way.
        let mut answer = offered[0].clone();
        answer.transforms.retain(|t| t.transform_type != TransformType::ESN);
        assert!(check_answer(&answer, &offered).is_err());
        // Two groups, or a group we did not offer.
        let two = wire("aes256gcm16-x25519-ecp256", child, 1);
        assert!(check_answer(&two, std::slice::from_ref(&two)).is_err(), "two transforms of one type");
        let other = wire("aes256gcm16-ecp256", child, 1);
        assert!(check_answer(&other, &offered).is_err());
        // A proposal number we did not send.
        assert!(check_answer(&wire("aes256gcm16-x25519", child, 2), &offered).is_err());
    }

    #[test]
    fn negotiation_picks_one_per_type_inside_one_configured_proposal() {
        let ike = api::SaKind::Ike;
        let ceiling = vec![
            parse_proposal("aes256gcm16-prfsha384-ecp384", ike).unwrap(),
            parse_proposal("aes128gcm16-prfsha256-x25519", ike).unwrap(),
        ];
        // Mixing AES-256 from the first with SHA-256/x25519 of the second is not allowed.
        let mixed = wire("aes256gcm16-prfsha256-x25519", ike, 1);
        assert!(negotiate(&mixed, ike, &ceiling, &[], Some(31), false).is_err());
        // Alternatives across both: the first configured proposal that fits wins.
        let wide = wire("aes128gcm16-aes256gcm16-aes128gcm12-prfsha1-prfsha256-prfsha384-x25519-ecp384-modp2048", ike, 1);
        let r = negotiate(&wide, ike, &ceiling, &[], Some(31), false).unwrap();
        let ids: Vec<(u8, u16)> = r.transforms.iter().map(|t| (t.transform_type.0, t.id)).collect();
        assert_eq!(ids, vec![(1, 20), (2, 6), (4, 20)]);
        assert_eq!(r.transforms[0].key_length(), Some(256));
        // Naming x25519 moves the choice to the second configured proposal.
        let x = wide.transforms.iter().position(|t| t.transform_type == TransformType::DH && t.id == 31).unwrap();
        let r = negotiate(&wide, ike, &ceiling, &[x], None, false).unwrap();
        assert_eq!(r.transforms.iter().map(|t| t.id).collect::<Vec<_>>(), vec![20, 5, 31]);
        assert_eq!(r.transforms[0].key_length(), Some(128));
        // Naming MODP-2048 (offered, not configured or implemented) fails.
        let m = wide.transforms.iter().position(|t| t.id == 14 && t.transform_type == TransformType::DH).unwrap();
        assert!(negotiate(&wide, ike, &ceiling, &[m], None, false).is_err());
        // An unknown transform type cannot be answered.
        let mut odd = mixed.clone();
        odd.transforms.push(codec::Transform::new(TransformType(9), 1));
        assert!(negotiate(&odd, ike, &ceiling[1..], &[], None, false).is_err());
    }

    #[test]
    fn child_pfs_and_esn_follow_the_ceiling() {
        let child = api::SaKind::Child;
        let pfs = vec![parse_proposal("aes256gcm16-x25519", child).unwrap()];
        let no_ke = wire("aes256gcm16", child, 1);
        assert!(negotiate(&no_ke, child, &pfs, &[], None, false).is_err(), "PFS configured, no KE offered");
        assert!(negotiate(&no_ke, child, &pfs, &[], None, true).is_ok(), "IKE_AUTH has no KE");
        let no_pfs = vec![parse_proposal("aes256gcm16", child).unwrap()];
        let ke = wire("aes256gcm16-x25519", child, 1);
        assert!(negotiate(&ke, child, &no_pfs, &[], Some(31), false).is_err(), "KE offered, none configured, no NONE");
        let esn_only = wire("aes256gcm16-esn", child, 1);
        assert!(negotiate(&esn_only, child, &no_pfs, &[], None, false).is_err(), "ESN configured off");
        let either = wire("aes256gcm16-esn-noesn", child, 1);
        let r = negotiate(&either, child, &no_pfs, &[], None, false).unwrap();
        assert_eq!(pick(&r, TransformType::ESN).map(|t| t.id), Some(0));
    }
}
