//! IKEv2 cryptography (sans-IO, deterministic given the caller's RNG).
//!
//! * [`mod@prf`]: PRF HMAC-SHA1/SHA2-256/384/512 and prf+ (RFC 7296 2.13).
//! * [`kdf`]: SKEYSEED, SK_d/ai/ar/ei/er/pi/pr (2.14), IKE rekey SKEYSEED
//!   (2.18), Child SA KEYMAT with and without PFS (2.17).
//! * [`dh`]: key exchange groups 31 (x25519), 19 and 20 (ECP-256/384).
//! * [`aead`]: the SK payload ciphers AES-GCM-16 (RFC 5282) and
//!   ChaCha20-Poly1305 (RFC 7634).
//! * [`auth`]: PSK AUTH (2.15), signed octets, NAT detection hashes (2.23).
//! * [`sig`]: public-key AUTH: RFC 7427 Digital Signature (method 14) and the
//!   legacy RSA / ECDSA methods 1, 9, 10 (RFC 7296 3.8, RFC 4754).
//!
//! All key material lives in [`SecretBytes`] (or types wrapping it), which is
//! zeroized on drop and whose `Debug` never prints the value. Randomness is
//! supplied by the caller (`rand_core::CryptoRngCore`), except in [`sig`],
//! whose ECDSA nonces, RSA-PSS salts and RSA blinding come from the OS CSPRNG.

pub mod aead;
pub mod auth;
pub mod dh;
pub mod kdf;
pub mod prf;
mod secret;
pub mod sig;

pub use aead::{EncrAlg, SkCipher};
pub use auth::{nat_detection_hash, psk_auth, signed_octets};
pub use dh::{DhGroup, DhKeyPair};
pub use kdf::{child_keymat, derive_ike_keys, skeyseed, skeyseed_rekey, ChildKeys, IkeKeys};
pub use prf::{prf, prf_plus, PrfAlg};
pub use secret::SecretBytes;

/// Cryptographic failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Integrity check of an SK/SKF payload failed (or it was too short).
    #[error("integrity check failed")]
    Integrity,
    /// The peer's key exchange value is invalid (wrong length, not on the
    /// curve, or yields a low-order / all-zero shared secret).
    #[error("invalid key exchange value: {0}")]
    InvalidPublicValue(&'static str),
    /// The algorithm or group is not supported.
    #[error("unsupported algorithm: {0}")]
    Unsupported(&'static str),
    /// A key has the wrong length.
    #[error("bad key length for {0}")]
    KeyLength(&'static str),
    /// prf+ asked for more than 255 blocks.
    #[error("prf+ output too long")]
    PrfPlusTooLong,
    /// Decrypted padding is inconsistent.
    #[error("bad padding")]
    Padding,
}
