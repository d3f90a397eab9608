//! Pseudorandom functions and prf+ (RFC 7296 2.13).

use super::{CryptoError, SecretBytes};
use crate::codec::registry::prf as ids;
use hmac::{Hmac, Mac};
use zeroize::Zeroizing;

/// A negotiated PRF.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrfAlg {
    /// PRF_HMAC_SHA1 (2).
    HmacSha1,
    /// PRF_HMAC_SHA2_256 (5).
    HmacSha256,
    /// PRF_HMAC_SHA2_384 (6).
    HmacSha384,
    /// PRF_HMAC_SHA2_512 (7).
    HmacSha512,
}

impl PrfAlg {
    /// From a PRF transform ID.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            ids::HMAC_SHA1 => Some(PrfAlg::HmacSha1),
            ids::HMAC_SHA2_256 => Some(PrfAlg::HmacSha256),
            ids::HMAC_SHA2_384 => Some(PrfAlg::HmacSha384),
            ids::HMAC_SHA2_512 => Some(PrfAlg::HmacSha512),
            _ => None,
        }
    }
    /// The PRF transform ID.
    pub fn id(self) -> u16 {
        match self {
            PrfAlg::HmacSha1 => ids::HMAC_SHA1,
            PrfAlg::HmacSha256 => ids::HMAC_SHA2_256,
            PrfAlg::HmacSha384 => ids::HMAC_SHA2_384,
            PrfAlg::HmacSha512 => ids::HMAC_SHA2_512,
        }
    }
    /// Output length in bytes (also the key length of SK_d, SK_pi, SK_pr).
    pub fn output_len(self) -> usize {
        match self {
            PrfAlg::HmacSha1 => 20,
            PrfAlg::HmacSha256 => 32,
            PrfAlg::HmacSha384 => 48,
            PrfAlg::HmacSha512 => 64,
        }
    }
}

fn mac<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let mut m = <M as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// `prf(key, parts[0] | parts[1] | ...)`.
pub fn prf(alg: PrfAlg, key: &[u8], parts: &[&[u8]]) -> SecretBytes {
    SecretBytes::new(match alg {
        PrfAlg::HmacSha1 => mac::<Hmac<sha1::Sha1>>(key, parts),
        PrfAlg::HmacSha256 => mac::<Hmac<sha2::Sha256>>(key, parts),
        PrfAlg::HmacSha384 => mac::<Hmac<sha2::Sha384>>(key, parts),
        PrfAlg::HmacSha512 => mac::<Hmac<sha2::Sha512>>(key, parts),
    })
}

/// `prf+(key, seed)` truncated to `len` bytes (RFC 7296 2.13):
/// T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n).
pub fn prf_plus(alg: PrfAlg, key: &[u8], seed: &[&[u8]], len: usize) -> Result<SecretBytes, CryptoError> {
    let h = alg.output_len();
    if len > 255 * h {
        return Err(CryptoError::PrfPlusTooLong);
    }
    let mut out = Zeroizing::new(Vec::with_capacity(len + h));
    let mut prev = SecretBytes::default();
    let mut n: u8 = 1;
    while out.len() < len {
        let counter = [n];
        let mut parts: Vec<&[u8]> = Vec::with_capacity(seed.len() + 2);
        parts.push(prev.expose());
        parts.extend_from_slice(seed);
        parts.push(&counter);
        prev = prf(alg, key, &parts);
        out.extend_from_slice(prev.expose());
        n = n.wrapping_add(1);
    }
    out.truncate(len);
    Ok(SecretBytes::from_slice(&out))
}
