//! The AEAD transforms usable with ESP (RFC 4106, RFC 7634).

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use chacha20poly1305::ChaCha20Poly1305;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// ESP AEAD transform. All use a 16-byte ICV and an 8-byte explicit IV, and
/// take `key || salt` keying material with a 4-byte salt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Aead {
    /// ENCR_AES_GCM_16 with a 128-bit key (IKEv2 transform id 20, 128 bits).
    AesGcm128,
    /// ENCR_AES_GCM_16 with a 256-bit key (IKEv2 transform id 20, 256 bits).
    AesGcm256,
    /// ENCR_CHACHA20_POLY1305 (IKEv2 transform id 28).
    ChaCha20Poly1305,
}

impl Aead {
    /// Cipher key length in bytes (without the salt).
    pub const fn key_len(self) -> usize {
        match self {
            Aead::AesGcm128 => 16,
            Aead::AesGcm256 | Aead::ChaCha20Poly1305 => 32,
        }
    }

    /// Keying material length taken from the IKE KEYMAT: key plus 4-byte salt.
    pub const fn keymat_len(self) -> usize {
        self.key_len() + 4
    }

    /// Short display name.
    pub const fn name(self) -> &'static str {
        match self {
            Aead::AesGcm128 => "aes128gcm16",
            Aead::AesGcm256 => "aes256gcm16",
            Aead::ChaCha20Poly1305 => "chacha20poly1305",
        }
    }
}

/// Keying material for one direction of a Child SA: `key || salt`.
/// Zeroized on drop; `Debug` never shows the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Keymat(Vec<u8>);

impl Keymat {
    /// Wrap keying material (`key || 4-byte salt`).
    pub fn new(bytes: &[u8]) -> Self {
        Keymat(bytes.to_vec())
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Keymat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keymat(<{} bytes redacted>)", self.0.len())
    }
}

impl From<Vec<u8>> for Keymat {
    fn from(v: Vec<u8>) -> Self {
        Keymat(v)
    }
}

/// Error: the keying material has the wrong length for the transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{alg:?} needs {expected} bytes of keying material (key + 4-byte salt), got {got}")]
pub struct KeyLengthError {
    /// The transform.
    pub alg: Aead,
    /// What it needs.
    pub expected: usize,
    /// What was given.
    pub got: usize,
}

pub(crate) enum CipherImpl {
    Aes128(Box<Aes128Gcm>),
    Aes256(Box<Aes256Gcm>),
    ChaCha(Box<ChaCha20Poly1305>),
}

/// A keyed AEAD plus its salt. The expanded keys are zeroized on drop by the
/// cipher crates (`zeroize` features), the salt here.
pub(crate) struct Cipher {
    imp: CipherImpl,
    salt: [u8; 4],
}

impl Drop for Cipher {
    fn drop(&mut self) {
        self.salt.zeroize();
    }
}

impl Cipher {
    pub(crate) fn new(alg: Aead, keymat: &Keymat) -> Result<Self, KeyLengthError> {
        let km = keymat.bytes();
        if km.len() != alg.keymat_len() {
            return Err(KeyLengthError { alg, expected: alg.keymat_len(), got: km.len() });
        }
        let (key, salt) = km.split_at(alg.key_len());
        let bad = |_| KeyLengthError { alg, expected: alg.keymat_len(), got: km.len() };
        let imp = match alg {
            Aead::AesGcm128 => CipherImpl::Aes128(Box::new(Aes128Gcm::new_from_slice(key).map_err(bad)?)),
            Aead::AesGcm256 => CipherImpl::Aes256(Box::new(Aes256Gcm::new_from_slice(key).map_err(bad)?)),
            Aead::ChaCha20Poly1305 => CipherImpl::ChaCha(Box::new(ChaCha20Poly1305::new_from_slice(key).map_err(bad)?)),
        };
        let mut s = [0u8; 4];
        s.copy_from_slice(salt);
        Ok(Cipher { imp, salt: s })
    }

    #[inline]
    fn nonce(&self, iv: &[u8; 8]) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.salt);
        n[4..].copy_from_slice(iv);
        n
    }

    /// Encrypt `buf` in place; returns the 16-byte tag.
    #[inline]
    pub(crate) fn seal(&self, iv: &[u8; 8], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        let n = aes_gcm::Nonce::from(self.nonce(iv));
        let n = &n;
        // encrypt_inout_detached only fails for plaintexts over the AEAD's
        // limit (2^36 bytes), which an ESP packet can never reach.
        let tag = match &self.imp {
            CipherImpl::Aes128(c) => c.encrypt_inout_detached(n, aad, buf.into()),
            CipherImpl::Aes256(c) => c.encrypt_inout_detached(n, aad, buf.into()),
            CipherImpl::ChaCha(c) => c.encrypt_inout_detached(n, aad, buf.into()),
        };
        match tag {
            Ok(t) => t.into(),
            // Unreachable for ESP sizes; an all-zero tag would simply fail
            // verification at the peer rather than panic here.
            Err(_) => [0u8; 16],
        }
    }

    /// Verify and decrypt `buf` in place. `false` on authentication failure
    /// (the buffer content is then unspecified).
    #[inline]
    pub(crate) fn open(&self, iv: &[u8; 8], aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> bool {
        let n = aes_gcm::Nonce::from(self.nonce(iv));
        let n = &n;
        let t = aes_gcm::Tag::from(*tag);
        let t = &t;
        match &self.imp {
            CipherImpl::Aes128(c) => c.decrypt_inout_detached(n, aad, buf.into(), t).is_ok(),
            CipherImpl::Aes256(c) => c.decrypt_inout_detached(n, aad, buf.into(), t).is_ok(),
            CipherImpl::ChaCha(c) => c.decrypt_inout_detached(n, aad, buf.into(), t).is_ok(),
        }
    }
}
