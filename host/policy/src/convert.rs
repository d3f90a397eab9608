//! Conversions between `wisp_policy_api` types and the generated WIT types.
//!
//! Host → plugin conversions are total. Plugin → host conversions are total too
//! (every WIT value has a Rust meaning); whether the meaning is acceptable is the
//! job of [`crate::validate`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use wisp_policy_api as api;

use crate::bindings::wit;

pub fn ip_to_wit(a: IpAddr) -> wit::IpAddress {
    match a {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            wit::IpAddress::Ipv4((o[0], o[1], o[2], o[3]))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            wit::IpAddress::Ipv6((s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]))
        }
    }
}

pub fn ip_from_wit(a: &wit::IpAddress) -> IpAddr {
    match *a {
        wit::IpAddress::Ipv4((a, b, c, d)) => IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        wit::IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
    }
}

pub fn sa_kind_to_wit(k: api::SaKind) -> wit::SaKind {
    match k {
        api::SaKind::Ike => wit::SaKind::Ike,
        api::SaKind::Child => wit::SaKind::Child,
    }
}

fn protocol_to_wit(p: api::Protocol) -> wit::Protocol {
    match p {
        api::Protocol::Ike => wit::Protocol::Ike,
        api::Protocol::Ah => wit::Protocol::Ah,
        api::Protocol::Esp => wit::Protocol::Esp,
        api::Protocol::Unknown(_) => wit::Protocol::Unknown,
    }
}

fn transform_type_to_wit(t: api::TransformType) -> wit::TransformType {
    match t {
        api::TransformType::Encryption => wit::TransformType::Encryption,
        api::TransformType::Prf => wit::TransformType::Prf,
        api::TransformType::Integrity => wit::TransformType::Integrity,
        api::TransformType::KeyExchange => wit::TransformType::KeyExchange,
        api::TransformType::Esn => wit::TransformType::Esn,
        api::TransformType::Unknown(_) => wit::TransformType::Unknown,
    }
}

/// The host's printable name for a transform (IANA registry names without the
/// type prefix where the registry has none), e.g. "AES_GCM_16", "CURVE25519".
pub fn transform_name(kind: api::TransformType, id: u16) -> String {
    use api::TransformType as T;
    let known = match (kind, id) {
        (T::Encryption, 2) => Some("DES"),
        (T::Encryption, 3) => Some("3DES"),
        (T::Encryption, 11) => Some("NULL"),
        (T::Encryption, 12) => Some("AES_CBC"),
        (T::Encryption, 13) => Some("AES_CTR"),
        (T::Encryption, 14) => Some("AES_CCM_8"),
        (T::Encryption, 15) => Some("AES_CCM_12"),
        (T::Encryption, 16) => Some("AES_CCM_16"),
        (T::Encryption, 18) => Some("AES_GCM_8"),
        (T::Encryption, 19) => Some("AES_GCM_12"),
        (T::Encryption, 20) => Some("AES_GCM_16"),
        (T::Encryption, 28) => Some("CHACHA20_POLY1305"),
        (T::Prf, 1) => Some("PRF_HMAC_MD5"),
        (T::Prf, 2) => Some("PRF_HMAC_SHA1"),
        (T::Prf, 4) => Some("PRF_AES128_XCBC"),
        (T::Prf, 5) => Some("PRF_HMAC_SHA2_256"),
        (T::Prf, 6) => Some("PRF_HMAC_SHA2_384"),
        (T::Prf, 7) => Some("PRF_HMAC_SHA2_512"),
        (T::Prf, 8) => Some("PRF_AES128_CMAC"),
        (T::Integrity, 0) => Some("NONE"),
        (T::Integrity, 1) => Some("AUTH_HMAC_MD5_96"),
        (T::Integrity, 2) => Some("AUTH_HMAC_SHA1_96"),
        (T::Integrity, 12) => Some("AUTH_HMAC_SHA2_256_128"),
        (T::Integrity, 13) => Some("AUTH_HMAC_SHA2_384_192"),
        (T::Integrity, 14) => Some("AUTH_HMAC_SHA2_512_256"),
        (T::KeyExchange, 0) => Some("NONE"),
        (T::KeyExchange, 1) => Some("MODP_768"),
        (T::KeyExchange, 2) => Some("MODP_1024"),
        (T::KeyExchange, 5) => Some("MODP_1536"),
        (T::KeyExchange, 14) => Some("MODP_2048"),
        (T::KeyExchange, 15) => Some("MODP_3072"),
        (T::KeyExchange, 16) => Some("MODP_4096"),
        (T::KeyExchange, 19) => Some("ECP_256"),
        (T::KeyExchange, 20) => Some("ECP_384"),
        (T::KeyExchange, 21) => Some("ECP_521"),
        (T::KeyExchange, 31) => Some("CURVE25519"),
        (T::KeyExchange, 32) => Some("CURVE448"),
        (T::Esn, 0) => Some("NO_ESN"),
        (T::Esn, 1) => Some("ESN"),
        _ => None,
    };
    match known {
        Some(n) => n.to_string(),
        None => match kind {
            T::Encryption => format!("ENCR_{id}"),
            T::Prf => format!("PRF_{id}"),
            T::Integrity => format!("INTEG_{id}"),
            T::KeyExchange => format!("KE_{id}"),
            T::Esn => format!("ESN_{id}"),
            T::Unknown(t) => format!("TRANSFORM{t}_{id}"),
        },
    }
}

pub fn proposal_to_wit(p: &api::Proposal) -> wit::Proposal {
    wit::Proposal {
        number: p.number,
        protocol: protocol_to_wit(p.protocol),
        raw_protocol: p.protocol.raw(),
        transforms: p
            .transforms
            .iter()
            .map(|t| wit::Transform {
                kind: transform_type_to_wit(t.kind),
                raw_type: t.kind.raw(),
                id: t.id,
                key_length: t.key_length,
                name: transform_name(t.kind, t.id),
            })
            .collect(),
    }
}

fn id_type_to_wit(t: api::IdType) -> wit::IdType {
    match t {
        api::IdType::Ipv4Addr => wit::IdType::Ipv4Addr,
        api::IdType::Fqdn => wit::IdType::Fqdn,
        api::IdType::Rfc822Addr => wit::IdType::Rfc822Addr,
        api::IdType::Ipv6Addr => wit::IdType::Ipv6Addr,
        api::IdType::DerAsn1Dn => wit::IdType::DerAsn1Dn,
        api::IdType::DerAsn1Gn => wit::IdType::DerAsn1Gn,
        api::IdType::KeyId => wit::IdType::KeyId,
        api::IdType::Unknown(_) => wit::IdType::Unknown,
    }
}

pub fn identity_to_wit(i: &api::Identity) -> wit::Identity {
    wit::Identity { kind: id_type_to_wit(i.kind), value: i.value.clone() }
}

/// Plugin → host, for the `sa-counts` import. The unknown id type maps to
/// `Unknown(0)`: the gateway's view can still match by value.
pub fn identity_from_wit(i: &wit::Identity) -> api::Identity {
    let kind = match i.kind {
        wit::IdType::Ipv4Addr => api::IdType::Ipv4Addr,
        wit::IdType::Fqdn => api::IdType::Fqdn,
        wit::IdType::Rfc822Addr => api::IdType::Rfc822Addr,
        wit::IdType::Ipv6Addr => api::IdType::Ipv6Addr,
        wit::IdType::DerAsn1Dn => api::IdType::DerAsn1Dn,
        wit::IdType::DerAsn1Gn => api::IdType::DerAsn1Gn,
        wit::IdType::KeyId => api::IdType::KeyId,
        wit::IdType::Unknown => api::IdType::Unknown(0),
    };
    api::Identity { kind, value: i.value.clone() }
}

pub fn ctx_to_wit(c: &api::PeerContext) -> wit::PeerContext {
    wit::PeerContext {
        connection: c.connection.clone(),
        remote_address: ip_to_wit(c.remote_address),
        remote_port: c.remote_port,
        local_address: ip_to_wit(c.local_address),
        local_port: c.local_port,
        nat_detected: c.nat_detected,
        local_is_initiator: c.local_is_initiator,
        peer_identity: c.peer_identity.as_ref().map(identity_to_wit),
        trigger: trigger_to_wit(c.trigger),
    }
}

pub fn trigger_to_wit(t: api::DecisionTrigger) -> wit::DecisionTrigger {
    match t {
        api::DecisionTrigger::Initial => wit::DecisionTrigger::Initial,
        api::DecisionTrigger::Rekey => wit::DecisionTrigger::Rekey,
        api::DecisionTrigger::Recheck => wit::DecisionTrigger::Recheck,
    }
}

pub fn auth_to_wit(a: &api::AuthInfo) -> wit::AuthInfo {
    wit::AuthInfo {
        peer_identity: identity_to_wit(&a.peer_identity),
        method: match a.method {
            api::AuthMethod::Psk => wit::AuthMethod::Psk,
            api::AuthMethod::RsaSignature => wit::AuthMethod::RsaSignature,
            api::AuthMethod::EcdsaSignature => wit::AuthMethod::EcdsaSignature,
            api::AuthMethod::DigitalSignature => wit::AuthMethod::DigitalSignature,
            api::AuthMethod::Eap => wit::AuthMethod::Eap,
            api::AuthMethod::Unknown(_) => wit::AuthMethod::Unknown,
        },
        certificate_subject: a.certificate_subject.clone(),
        key_fingerprint: a.key_fingerprint.clone(),
        certificate_issuer: a.certificate_issuer.clone(),
        subject_alt_names: a.subject_alt_names.clone(),
        certificate_serial: a.certificate_serial.clone(),
        certificate_not_after: a.certificate_not_after,
        eap_identity: a.eap_identity.clone(),
        eap_method: a.eap_method.clone(),
    }
}

pub fn ts_to_wit(t: &api::TrafficSelector) -> wit::TrafficSelector {
    wit::TrafficSelector {
        ip_protocol: t.ip_protocol,
        start_port: t.start_port,
        end_port: t.end_port,
        start_address: ip_to_wit(t.start_address),
        end_address: ip_to_wit(t.end_address),
    }
}

pub fn ts_from_wit(t: &wit::TrafficSelector) -> api::TrafficSelector {
    api::TrafficSelector {
        ip_protocol: t.ip_protocol,
        start_port: t.start_port,
        end_port: t.end_port,
        start_address: ip_from_wit(&t.start_address),
        end_address: ip_from_wit(&t.end_address),
    }
}

pub fn selector_request_to_wit(r: &api::SelectorRequest) -> wit::SelectorRequest {
    let conv = |v: &[api::TrafficSelector]| v.iter().map(ts_to_wit).collect::<Vec<_>>();
    wit::SelectorRequest {
        remote_proposed: conv(&r.remote_proposed),
        local_proposed: conv(&r.local_proposed),
        remote_configured: conv(&r.remote_configured),
        local_configured: conv(&r.local_configured),
    }
}

fn family_to_wit(f: api::AddressFamily) -> wit::AddressFamily {
    match f {
        api::AddressFamily::Ipv4 => wit::AddressFamily::Ipv4,
        api::AddressFamily::Ipv6 => wit::AddressFamily::Ipv6,
    }
}

pub fn address_request_to_wit(r: &api::AddressRequest) -> wit::AddressRequest {
    wit::AddressRequest {
        auth: auth_to_wit(&r.auth),
        requested: r
            .requested
            .iter()
            .map(|w| wit::AddressWanted { family: family_to_wit(w.family), address: w.address.map(ip_to_wit) })
            .collect(),
        pools: r
            .pools
            .iter()
            .map(|p| wit::AddressPool {
                name: p.name.clone(),
                family: family_to_wit(p.family),
                range: p.range.clone(),
                first: ip_to_wit(p.first),
                last: ip_to_wit(p.last),
                size: p.size,
            })
            .collect(),
    }
}

pub fn address_pick_from_wit(p: &wit::AddressPick) -> api::AddressPick {
    match p {
        wit::AddressPick::Pool(name) => api::AddressPick::Pool(name.clone()),
        wit::AddressPick::Address(a) => api::AddressPick::Address(ip_from_wit(a)),
    }
}

/// Settings from the gateway config, passed to `configure`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingValue {
    Text(String),
    Integer(i64),
    Boolean(bool),
    TextList(Vec<String>),
}

/// One `[plugin.settings]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: SettingValue,
}

impl Setting {
    pub fn new(key: impl Into<String>, value: SettingValue) -> Self {
        Setting { key: key.into(), value }
    }
}

pub fn settings_to_wit(s: &[Setting]) -> Vec<wit::Setting> {
    s.iter()
        .map(|s| wit::Setting {
            key: s.key.clone(),
            value: match &s.value {
                SettingValue::Text(t) => wit::SettingValue::Text(t.clone()),
                SettingValue::Integer(i) => wit::SettingValue::Integer(*i),
                SettingValue::Boolean(b) => wit::SettingValue::Boolean(*b),
                SettingValue::TextList(l) => wit::SettingValue::TextList(l.clone()),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_roundtrip() {
        for a in ["10.1.2.3", "::1", "fd99::1:2", "255.255.255.255"] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(ip_from_wit(&ip_to_wit(ip)), ip);
        }
    }

    #[test]
    fn names() {
        assert_eq!(transform_name(api::TransformType::Encryption, 20), "AES_GCM_16");
        assert_eq!(transform_name(api::TransformType::KeyExchange, 31), "CURVE25519");
        assert_eq!(transform_name(api::TransformType::Encryption, 42), "ENCR_42");
        assert_eq!(transform_name(api::TransformType::Unknown(9), 1), "TRANSFORM9_1");
    }
}
