//! Conversions between the wire types (`crate::codec`) and the policy types
//! (`wisp_policy_api`), plus proposal filtering and reduction.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
            .map(|t| api::Transform {
                kind: api::TransformType::from_raw(t.transform_type.0),
                id: t.id,
                key_length: t.key_length(),
            })
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

/// Can the engine implement at least one reduction of this proposal?
pub fn implementable(p: &codec::Proposal, kind: api::SaKind) -> bool {
    let want_proto = match kind {
        api::SaKind::Ike => ProtocolId::IKE,
        api::SaKind::Child => ProtocolId::ESP,
    };
    if p.protocol != want_proto {
        return false;
    }
    let has = |ty: TransformType| p.transforms_of(ty).any(|t| transform_supported(t, kind));
    let present = |ty: TransformType| p.transforms_of(ty).next().is_some();
    if !has(TransformType::ENCR) {
        return false;
    }
    // AEAD only: an INTEG transform other than NONE means the peer wants a non-AEAD
    // combination of this proposal; fine as long as NONE is also offered.
    if present(TransformType::INTEG) && !has(TransformType::INTEG) {
        return false;
    }
    match kind {
        api::SaKind::Ike => has(TransformType::PRF) && has(TransformType::DH),
        api::SaKind::Child => (!present(TransformType::DH) || has(TransformType::DH)) && (!present(TransformType::ESN) || has(TransformType::ESN)),
    }
}

/// Reduce a chosen proposal to one transform per type. `prefer` lists the
/// configured proposals (their transforms win ties); `ke_group` is the group
/// of a received KE payload to prefer.
pub fn reduce(p: &codec::Proposal, kind: api::SaKind, prefer: &[api::Proposal], ke_group: Option<u16>) -> codec::Proposal {
    let mut out = codec::Proposal { number: p.number, protocol: p.protocol, spi: Vec::new(), transforms: Vec::new() };
    for ty in [TransformType::ENCR, TransformType::PRF, TransformType::INTEG, TransformType::DH, TransformType::ESN] {
        let cands: Vec<&codec::Transform> = p.transforms_of(ty).filter(|t| transform_supported(t, kind)).collect();
        if cands.is_empty() {
            continue;
        }
        let configured = |t: &codec::Transform| {
            prefer.iter().any(|pp| {
                pp.transforms.iter().any(|c| c.kind.raw() == ty.0 && c.id == t.id && c.key_length == t.key_length())
            })
        };
        let pick = if ty == TransformType::DH {
            ke_group
                .and_then(|g| cands.iter().find(|t| t.id == g && configured(t)).copied())
                .or_else(|| {
                    // Our configured order of groups.
                    prefer
                        .iter()
                        .flat_map(|pp| pp.transforms.iter().filter(|c| c.kind == api::TransformType::KeyExchange))
                        .find_map(|c| cands.iter().find(|t| t.id == c.id).copied())
                })
                .unwrap_or(cands[0])
        } else {
            cands.iter().find(|t| configured(t)).copied().unwrap_or(cands[0])
        };
        out.transforms.push(pick.clone());
    }
    out
}

/// One transform of a type from a reduced proposal.
pub fn pick(p: &codec::Proposal, ty: TransformType) -> Option<&codec::Transform> {
    p.transforms_of(ty).next()
}

/// Is `chosen` (single transform per type) acceptable as an answer to `offered`?
pub fn answer_within(chosen: &codec::Proposal, offered: &[codec::Proposal]) -> bool {
    offered.iter().any(|o| {
        o.number == chosen.number
            && o.protocol == chosen.protocol
            && chosen.transforms.iter().all(|t| {
                o.transforms.iter().any(|x| x.transform_type == t.transform_type && x.id == t.id && x.key_length() == t.key_length())
            })
    })
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
        api::IdType::KeyId | api::IdType::DerAsn1Dn | api::IdType::DerAsn1Gn | api::IdType::Unknown(_) => {
            hex_decode(&id.value).unwrap_or_else(|| id.value.as_bytes().to_vec())
        }
        _ => id.value.as_bytes().to_vec(),
    };
    IdPayload { id_type: IdType(id.kind.raw()), data }
}

pub fn identity_from_wire(p: &IdPayload) -> api::Identity {
    let kind = api::IdType::from_raw(p.id_type.0);
    let value = match kind {
        api::IdType::Ipv4Addr if p.data.len() == 4 => {
            Ipv4Addr::new(p.data[0], p.data[1], p.data[2], p.data[3]).to_string()
        }
        api::IdType::Ipv6Addr if p.data.len() == 16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&p.data);
            Ipv6Addr::from(b).to_string()
        }
        api::IdType::Fqdn | api::IdType::Rfc822Addr if p.data.iter().all(|c| c.is_ascii_graphic()) => {
            String::from_utf8_lossy(&p.data).into_owned()
        }
        _ => p.data.iter().map(|b| format!("{b:02x}")).collect(),
    };
    api::Identity { kind, value }
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.len() % 2 != 0 || s.is_empty() {
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
            codec::TrafficSelector::Range(r) if r.start_addr.is_ipv4() == r.end_addr.is_ipv4() => {
                Some(api::TrafficSelector {
                    ip_protocol: r.ip_protocol,
                    start_port: r.start_port,
                    end_port: r.end_port,
                    start_address: r.start_addr,
                    end_address: r.end_addr,
                })
            }
            _ => None,
        })
        .collect()
}

/// Unspecified address of the same family.
pub fn unspecified_like(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}
