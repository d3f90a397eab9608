//! SK payload AEAD ciphers: AES-GCM with 16-byte ICV (RFC 5282) and
//! ChaCha20-Poly1305 (RFC 7634).
//!
//! Keying material for both is key | 4-byte salt; the nonce is
//! salt | 8-byte explicit IV; the ICV is 16 bytes. The SK payload data is
//! `IV | ciphertext | ICV`, and the AAD is the IKE header through the end of
//! the SK (or SKF) payload header.

use super::{CryptoError, SecretBytes};
use crate::codec::registry::encr as ids;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use chacha20poly1305::ChaCha20Poly1305;
use zeroize::Zeroizing;

/// Length of the explicit IV.
pub const IV_LEN: usize = 8;
/// Length of the ICV (tag).
pub const ICV_LEN: usize = 16;
/// Salt length.
pub const SALT_LEN: usize = 4;

/// A supported SK payload encryption algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncrAlg {
    /// ENCR_AES_GCM_16 with a 128-bit key.
    AesGcm16_128,
    /// ENCR_AES_GCM_16 with a 256-bit key.
    AesGcm16_256,
    /// ENCR_CHACHA20_POLY1305 (256-bit key, no key length attribute).
    ChaCha20Poly1305,
}

impl EncrAlg {
    /// From an ENCR transform ID and its KEY_LENGTH attribute (bits).
    pub fn from_transform(id: u16, key_length: Option<u16>) -> Option<Self> {
        match (id, key_length) {
            (ids::AES_GCM_16, Some(128)) => Some(EncrAlg::AesGcm16_128),
            (ids::AES_GCM_16, Some(256)) => Some(EncrAlg::AesGcm16_256),
            (ids::CHACHA20_POLY1305, None) => Some(EncrAlg::ChaCha20Poly1305),
            _ => None,
        }
    }
    /// The ENCR transform ID.
    pub fn id(self) -> u16 {
        match self {
            EncrAlg::AesGcm16_128 | EncrAlg::AesGcm16_256 => ids::AES_GCM_16,
            EncrAlg::ChaCha20Poly1305 => ids::CHACHA20_POLY1305,
        }
    }
    /// The KEY_LENGTH attribute to send, if any.
    pub fn key_length_attr(self) -> Option<u16> {
        match self {
            EncrAlg::AesGcm16_128 => Some(128),
            EncrAlg::AesGcm16_256 => Some(256),
            EncrAlg::ChaCha20Poly1305 => None,
        }
    }
    /// Cipher key length in bytes (without salt).
    pub fn key_len(self) -> usize {
        match self {
            EncrAlg::AesGcm16_128 => 16,
            EncrAlg::AesGcm16_256 | EncrAlg::ChaCha20Poly1305 => 32,
        }
    }
    /// Keying material length: key + 4-byte salt (length of SK_e*, and of
    /// each direction's ESP encryption key material).
    pub fn keymat_len(self) -> usize {
        self.key_len() + SALT_LEN
    }
    /// Bytes an SK payload adds around the plaintext (IV + ICV).
    pub fn overhead(self) -> usize {
        IV_LEN + ICV_LEN
    }
}

enum Inner {
    Gcm128(Box<Aes128Gcm>),
    Gcm256(Box<Aes256Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
}

/// One direction's SK payload cipher (e.g. SK_ei for the initiator's sending
/// side and the responder's receiving side).
///
/// Sealing uses a per-key 64-bit counter as explicit IV (unique per key, as
/// RFC 5282 / 7634 require), so the same `SkCipher` must be used for every
/// message sent under a key. `Debug` is redacted; key schedules are zeroized
/// on drop by the cipher crates, the salt here.
pub struct SkCipher {
    alg: EncrAlg,
    inner: Inner,
    salt: Zeroizing<[u8; SALT_LEN]>,
    next_iv: u64,
}

impl core::fmt::Debug for SkCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SkCipher").field("alg", &self.alg).field("key", &"<redacted>").finish()
    }
}

impl SkCipher {
    /// Build from keying material (`key | salt`, [`EncrAlg::keymat_len`] bytes).
    pub fn new(alg: EncrAlg, keymat: &[u8]) -> Result<Self, CryptoError> {
        if keymat.len() != alg.keymat_len() {
            return Err(CryptoError::KeyLength("SK cipher"));
        }
        let (key, salt_s) = keymat.split_at(alg.key_len());
        let inner = match alg {
            EncrAlg::AesGcm16_128 => {
                Inner::Gcm128(Box::new(Aes128Gcm::new_from_slice(key).map_err(|_| CryptoError::KeyLength("AES-128"))?))
            }
            EncrAlg::AesGcm16_256 => {
                Inner::Gcm256(Box::new(Aes256Gcm::new_from_slice(key).map_err(|_| CryptoError::KeyLength("AES-256"))?))
            }
            EncrAlg::ChaCha20Poly1305 => {
                Inner::ChaCha(Box::new(ChaCha20Poly1305::new_from_slice(key).map_err(|_| CryptoError::KeyLength("ChaCha20"))?))
            }
        };
        let mut salt = Zeroizing::new([0u8; SALT_LEN]);
        salt.copy_from_slice(salt_s);
        Ok(SkCipher { alg, inner, salt, next_iv: 0 })
    }

    /// Build from [`SecretBytes`] keying material.
    pub fn from_secret(alg: EncrAlg, keymat: &SecretBytes) -> Result<Self, CryptoError> {
        Self::new(alg, keymat.expose())
    }

    /// The algorithm.
    pub fn alg(&self) -> EncrAlg {
        self.alg
    }

    /// Start the explicit-IV counter at `v` (e.g. for tests).
    pub fn set_next_iv(&mut self, v: u64) {
        self.next_iv = v;
    }

    fn nonce(&self, iv: &[u8; IV_LEN]) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.salt[..]);
        n[4..].copy_from_slice(iv);
        n
    }

    /// Encrypt with the next counter IV: returns `IV | ciphertext | ICV`.
    pub fn seal(&mut self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let iv = self.next_iv.to_be_bytes();
        self.next_iv = self.next_iv.wrapping_add(1);
        self.seal_with_iv(iv, aad, plaintext)
    }

    /// Encrypt with an explicit IV (must never repeat under one key).
    pub fn seal_with_iv(&self, iv: [u8; IV_LEN], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(IV_LEN + plaintext.len() + ICV_LEN);
        out.extend_from_slice(&iv);
        out.extend_from_slice(plaintext);
        let nonce = self.nonce(&iv);
        let nonce = aes_gcm::Nonce::from(nonce);
        let nonce = &nonce;
        let body = &mut out[IV_LEN..];
        // Encryption only fails for inputs beyond the AEAD's length limit
        // (~64 GiB), impossible for an IKE message (< 64 KiB by construction).
        let tag = match &self.inner {
            Inner::Gcm128(c) => c.encrypt_inout_detached(nonce, aad, body.into()),
            Inner::Gcm256(c) => c.encrypt_inout_detached(nonce, aad, body.into()),
            Inner::ChaCha(c) => c.encrypt_inout_detached(nonce, aad, body.into()),
        };
        match tag {
            Ok(t) => out.extend_from_slice(&t),
            Err(_) => out.extend_from_slice(&[0u8; ICV_LEN]),
        }
        out
    }

    /// Decrypt `IV | ciphertext | ICV`, returning the plaintext (zeroized on drop).
    pub fn open(&self, aad: &[u8], data: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if data.len() < IV_LEN + ICV_LEN {
            return Err(CryptoError::Integrity);
        }
        let (iv, rest) = data.split_at(IV_LEN);
        let (ct, tag) = rest.split_at(rest.len() - ICV_LEN);
        let mut ivb = [0u8; IV_LEN];
        ivb.copy_from_slice(iv);
        let nonce = self.nonce(&ivb);
        let nonce = aes_gcm::Nonce::from(nonce);
        let nonce = &nonce;
        let tag = aes_gcm::Tag::try_from(tag).map_err(|_| CryptoError::Integrity)?;
        let tag = &tag;
        let mut buf = Zeroizing::new(ct.to_vec());
        let r = match &self.inner {
            Inner::Gcm128(c) => c.decrypt_inout_detached(nonce, aad, buf.as_mut_slice().into(), tag),
            Inner::Gcm256(c) => c.decrypt_inout_detached(nonce, aad, buf.as_mut_slice().into(), tag),
            Inner::ChaCha(c) => c.decrypt_inout_detached(nonce, aad, buf.as_mut_slice().into(), tag),
        };
        r.map_err(|_| CryptoError::Integrity)?;
        Ok(buf)
    }
}
