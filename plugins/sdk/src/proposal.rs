//! Proposal inspection.

use crate::{Proposal, Transform, TransformType};

/// IANA IKEv2 transform ids (RFC 7296 3.3.2 and the IANA registry).
pub mod ids {
    // Transform type 1: encryption.
    pub const ENCR_3DES: u16 = 3;
    pub const ENCR_NULL: u16 = 11;
    pub const ENCR_AES_CBC: u16 = 12;
    pub const ENCR_AES_CTR: u16 = 13;
    pub const ENCR_AES_CCM_8: u16 = 14;
    pub const ENCR_AES_CCM_12: u16 = 15;
    pub const ENCR_AES_CCM_16: u16 = 16;
    pub const ENCR_AES_GCM_8: u16 = 18;
    pub const ENCR_AES_GCM_12: u16 = 19;
    pub const ENCR_AES_GCM_16: u16 = 20;
    pub const ENCR_NULL_AUTH_AES_GMAC: u16 = 21;
    pub const ENCR_CHACHA20_POLY1305: u16 = 28;
    // Transform type 2: PRF.
    pub const PRF_HMAC_MD5: u16 = 1;
    pub const PRF_HMAC_SHA1: u16 = 2;
    pub const PRF_AES128_XCBC: u16 = 4;
    pub const PRF_HMAC_SHA2_256: u16 = 5;
    pub const PRF_HMAC_SHA2_384: u16 = 6;
    pub const PRF_HMAC_SHA2_512: u16 = 7;
    // Transform type 3: integrity.
    pub const AUTH_NONE: u16 = 0;
    pub const AUTH_HMAC_SHA1_96: u16 = 2;
    pub const AUTH_HMAC_SHA2_256_128: u16 = 12;
    // Transform type 4: key exchange.
    pub const KE_NONE: u16 = 0;
    pub const MODP_1024: u16 = 2;
    pub const MODP_2048: u16 = 14;
    pub const ECP_256: u16 = 19;
    pub const ECP_384: u16 = 20;
    pub const ECP_521: u16 = 21;
    pub const CURVE25519: u16 = 31;
    pub const CURVE448: u16 = 32;
    // Transform type 5: ESN.
    pub const NO_ESN: u16 = 0;
    pub const ESN: u16 = 1;

    /// Combined-mode (AEAD) encryption ids.
    pub const AEAD: &[u16] = &[
        ENCR_AES_CCM_8,
        ENCR_AES_CCM_12,
        ENCR_AES_CCM_16,
        ENCR_AES_GCM_8,
        ENCR_AES_GCM_12,
        ENCR_AES_GCM_16,
        ENCR_CHACHA20_POLY1305,
        25, // ENCR_CAMELLIA_CCM_8
        26, // ENCR_CAMELLIA_CCM_12
        27, // ENCR_CAMELLIA_CCM_16
    ];
}

/// Printable name of a transform: the host's name, with the key length
/// appended (`AES_GCM_16-256`).
pub fn transform_label(t: &Transform) -> String {
    let name = if t.name.is_empty() { format!("TYPE{}_{}", t.raw_type, t.id) } else { t.name.clone() };
    match t.key_length {
        Some(bits) => format!("{name}-{bits}"),
        None => name,
    }
}

/// Inspection helpers on a [`Proposal`].
pub trait ProposalExt {
    /// The transforms of one type (alternatives the peer accepts).
    fn of_type(&self, kind: TransformType) -> Vec<&Transform>;
    /// Encryption transforms.
    fn encryption(&self) -> Vec<&Transform> {
        self.of_type(TransformType::Encryption)
    }
    /// PRF transforms.
    fn prfs(&self) -> Vec<&Transform> {
        self.of_type(TransformType::Prf)
    }
    /// Integrity transforms other than NONE.
    fn integrity(&self) -> Vec<&Transform>;
    /// Key-exchange (DH group) ids other than NONE.
    fn dh_groups(&self) -> Vec<u16>;
    /// True when there is at least one encryption transform, every encryption
    /// transform is a combined-mode (AEAD) cipher, and no integrity algorithm
    /// other than NONE is offered.
    fn is_aead(&self) -> bool {
        let enc = self.encryption();
        !enc.is_empty() && enc.iter().all(|t| ids::AEAD.contains(&t.id)) && self.integrity().is_empty()
    }
    /// The smallest key length (bits) among the encryption transforms that carry
    /// the attribute; `None` when none does.
    fn min_key_length(&self) -> Option<u16> {
        self.encryption().iter().filter_map(|t| t.key_length).min()
    }
    /// Any transform of a type this crate does not know?
    fn has_unknown_transform(&self) -> bool;
    /// "AES_CBC-128/HMAC_SHA1_96/MODP_1024": every transform, in wire order.
    fn summary(&self) -> String;
}

impl ProposalExt for Proposal {
    fn of_type(&self, kind: TransformType) -> Vec<&Transform> {
        self.transforms.iter().filter(|t| t.kind == kind).collect()
    }
    fn integrity(&self) -> Vec<&Transform> {
        self.transforms
            .iter()
            .filter(|t| t.kind == TransformType::Integrity && t.id != ids::AUTH_NONE)
            .collect()
    }
    fn dh_groups(&self) -> Vec<u16> {
        self.transforms
            .iter()
            .filter(|t| t.kind == TransformType::KeyExchange && t.id != ids::KE_NONE)
            .map(|t| t.id)
            .collect()
    }
    fn has_unknown_transform(&self) -> bool {
        self.transforms.iter().any(|t| t.kind == TransformType::Unknown)
    }
    fn summary(&self) -> String {
        let parts: Vec<String> = self.transforms.iter().map(transform_label).collect();
        if parts.is_empty() {
            "(no transforms)".to_string()
        } else {
            parts.join("/")
        }
    }
}

fn same(a: &Transform, b: &Transform) -> bool {
    a.kind == b.kind && a.raw_type == b.raw_type && a.id == b.id && a.key_length == b.key_length
}

/// RFC 7296 3.3: a proposal is an OR within each transform type. Picks, inside
/// ONE of the `configured` proposals (tried in order), one transform of every
/// type `offered` carries that `accept` takes, preferring the configured order;
/// alternatives `accept` refuses or the configured proposal lacks are ignored.
/// A type the configured proposal does not list is answered only by a NONE
/// transform (integrity, key exchange) or "no ESN". Returns the indices into
/// `offered.transforms` (for [`crate::ProposalChoice::transforms`]), or `None` when
/// no configured proposal leaves every offered type an acceptable transform.
pub fn choose_within(
    offered: &Proposal,
    configured: &[Proposal],
    accept: impl Fn(&Transform) -> bool,
) -> Option<Vec<u32>> {
    let mut kinds: Vec<(TransformType, u8)> = Vec::new();
    for t in &offered.transforms {
        if !kinds.contains(&(t.kind, t.raw_type)) {
            kinds.push((t.kind, t.raw_type));
        }
    }
    'conf: for c in configured {
        if c.protocol != offered.protocol || c.raw_protocol != offered.raw_protocol {
            continue;
        }
        let mut out = Vec::with_capacity(kinds.len());
        for &(kind, raw) in &kinds {
            let conf: Vec<&Transform> = c.transforms.iter().filter(|t| t.kind == kind && t.raw_type == raw).collect();
            let pick = conf
                .iter()
                .find_map(|ct| offered.transforms.iter().position(|t| same(t, ct) && accept(t)))
                .or_else(|| {
                    let none_ok = conf.is_empty()
                        && matches!(kind, TransformType::Integrity | TransformType::KeyExchange | TransformType::Esn);
                    if !none_ok {
                        return None;
                    }
                    offered.transforms.iter().position(|t| t.kind == kind && t.id == 0 && accept(t))
                });
            match pick {
                Some(i) => out.push(i as u32),
                None => continue 'conf,
            }
        }
        return Some(out);
    }
    None
}
