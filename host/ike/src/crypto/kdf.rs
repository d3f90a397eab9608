//! IKE SA and Child SA key derivation (RFC 7296 2.14, 2.17, 2.18).

use super::prf::{prf, prf_plus, PrfAlg};
use super::{CryptoError, SecretBytes};

/// `SKEYSEED = prf(Ni | Nr, g^ir)` (RFC 7296 2.14).
pub fn skeyseed(alg: PrfAlg, ni: &[u8], nr: &[u8], shared_secret: &[u8]) -> SecretBytes {
    let mut key = zeroize::Zeroizing::new(Vec::with_capacity(ni.len() + nr.len()));
    key.extend_from_slice(ni);
    key.extend_from_slice(nr);
    prf(alg, &key, &[shared_secret])
}

/// SKEYSEED of a new IKE SA created by rekeying (RFC 7296 2.18):
/// `SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)`.
///
/// `alg` is the PRF of the *old* IKE SA (RFC 7296 2.18: "the PRF of the
/// existing IKE SA"); the new SA's keys are then derived with
/// [`derive_ike_keys`] using the new SA's PRF.
pub fn skeyseed_rekey(alg: PrfAlg, old_sk_d: &[u8], shared_secret: &[u8], ni: &[u8], nr: &[u8]) -> SecretBytes {
    prf(alg, old_sk_d, &[shared_secret, ni, nr])
}

/// The seven IKE SA keys (RFC 7296 2.14). Zeroized on drop; `Debug` is redacted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeKeys {
    /// Key for deriving Child SA keys and rekeyed IKE SAs.
    pub sk_d: SecretBytes,
    /// Integrity key, initiator → responder (empty for AEAD).
    pub sk_ai: SecretBytes,
    /// Integrity key, responder → initiator (empty for AEAD).
    pub sk_ar: SecretBytes,
    /// Encryption key material (key | salt), initiator → responder.
    pub sk_ei: SecretBytes,
    /// Encryption key material (key | salt), responder → initiator.
    pub sk_er: SecretBytes,
    /// Key for the initiator's AUTH payload.
    pub sk_pi: SecretBytes,
    /// Key for the responder's AUTH payload.
    pub sk_pr: SecretBytes,
}

/// `{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} =
/// prf+(SKEYSEED, Ni | Nr | SPIi | SPIr)` (RFC 7296 2.14).
///
/// `encr_keymat_len` includes any salt (see [`super::EncrAlg::keymat_len`]);
/// `integ_key_len` is 0 for AEAD ciphers.
// The arguments are RFC 7296 2.14's inputs, one each.
#[allow(clippy::too_many_arguments)]
pub fn derive_ike_keys(
    alg: PrfAlg,
    skeyseed: &[u8],
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
    encr_keymat_len: usize,
    integ_key_len: usize,
) -> Result<IkeKeys, CryptoError> {
    let p = alg.output_len();
    let total = 3 * p + 2 * integ_key_len + 2 * encr_keymat_len;
    let spi_i = spi_i.to_be_bytes();
    let spi_r = spi_r.to_be_bytes();
    let km = prf_plus(alg, skeyseed, &[ni, nr, &spi_i, &spi_r], total)?;
    let mut off = 0;
    let mut next = |n: usize| {
        let s = SecretBytes::from_slice(&km.expose()[off..off + n]);
        off += n;
        s
    };
    Ok(IkeKeys {
        sk_d: next(p),
        sk_ai: next(integ_key_len),
        sk_ar: next(integ_key_len),
        sk_ei: next(encr_keymat_len),
        sk_er: next(encr_keymat_len),
        sk_pi: next(p),
        sk_pr: next(p),
    })
}

/// Child SA key material (RFC 7296 2.17):
/// `KEYMAT = prf+(SK_d, Ni | Nr)`, or with PFS
/// `KEYMAT = prf+(SK_d, g^ir (new) | Ni | Nr)`.
///
/// Ni and Nr are the nonces of the exchange that created the Child SA (the
/// IKE_SA_INIT nonces for the first Child SA). Keys are taken in the order:
/// initiator→responder encryption, integrity, then responder→initiator.
pub fn child_keymat(
    alg: PrfAlg,
    sk_d: &[u8],
    pfs_shared_secret: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    len: usize,
) -> Result<SecretBytes, CryptoError> {
    match pfs_shared_secret {
        Some(g) => prf_plus(alg, sk_d, &[g, ni, nr], len),
        None => prf_plus(alg, sk_d, &[ni, nr], len),
    }
}

/// Child SA keys split from KEYMAT (RFC 7296 2.17): one encryption key (with
/// salt for AEAD) and one integrity key per direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildKeys {
    /// Encryption key material, initiator → responder.
    pub encr_i: SecretBytes,
    /// Integrity key, initiator → responder (empty for AEAD).
    pub integ_i: SecretBytes,
    /// Encryption key material, responder → initiator.
    pub encr_r: SecretBytes,
    /// Integrity key, responder → initiator (empty for AEAD).
    pub integ_r: SecretBytes,
}

impl ChildKeys {
    /// Derive Child SA keys: [`child_keymat`] then split.
    pub fn derive(
        alg: PrfAlg,
        sk_d: &[u8],
        pfs_shared_secret: Option<&[u8]>,
        ni: &[u8],
        nr: &[u8],
        encr_keymat_len: usize,
        integ_key_len: usize,
    ) -> Result<Self, CryptoError> {
        let total = 2 * (encr_keymat_len + integ_key_len);
        let km = child_keymat(alg, sk_d, pfs_shared_secret, ni, nr, total)?;
        let k = km.expose();
        let (a, rest) = k.split_at(encr_keymat_len);
        let (b, rest) = rest.split_at(integ_key_len);
        let (c, d) = rest.split_at(encr_keymat_len);
        Ok(ChildKeys {
            encr_i: SecretBytes::from_slice(a),
            integ_i: SecretBytes::from_slice(b),
            encr_r: SecretBytes::from_slice(c),
            integ_r: SecretBytes::from_slice(d),
        })
    }
}
