//! Key exchange: group 31 (Curve25519, RFC 8031) and groups 19/20
//! (ECP-256/384, RFC 5903 encoding: x | y, shared secret = x).

use super::{CryptoError, SecretBytes};
use crate::codec::registry::dh as ids;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rand_core::CryptoRngCore;

/// A supported key exchange group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// Group 31, Curve25519 (RFC 8031).
    Curve25519,
    /// Group 19, 256-bit random ECP (RFC 5903).
    Ecp256,
    /// Group 20, 384-bit random ECP (RFC 5903).
    Ecp384,
}

impl DhGroup {
    /// From a transform ID / KE payload group number.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            ids::CURVE25519 => Some(DhGroup::Curve25519),
            ids::ECP_256 => Some(DhGroup::Ecp256),
            ids::ECP_384 => Some(DhGroup::Ecp384),
            _ => None,
        }
    }
    /// Transform ID / group number.
    pub fn id(self) -> u16 {
        match self {
            DhGroup::Curve25519 => ids::CURVE25519,
            DhGroup::Ecp256 => ids::ECP_256,
            DhGroup::Ecp384 => ids::ECP_384,
        }
    }
    /// Length of the KE payload's public value.
    pub fn public_len(self) -> usize {
        match self {
            DhGroup::Curve25519 => 32,
            DhGroup::Ecp256 => 64,
            DhGroup::Ecp384 => 96,
        }
    }
    /// Length of the shared secret g^ir.
    pub fn shared_len(self) -> usize {
        match self {
            DhGroup::Curve25519 => 32,
            DhGroup::Ecp256 => 32,
            DhGroup::Ecp384 => 48,
        }
    }
}

enum Private {
    X25519(x25519_dalek::StaticSecret),
    P256(p256::NonZeroScalar),
    P384(p384::NonZeroScalar),
}

/// An ephemeral key pair for one key exchange. The private part is zeroized
/// on drop (by the curve crates) and never printed.
pub struct DhKeyPair {
    group: DhGroup,
    private: Private,
    public: Vec<u8>,
}

impl core::fmt::Debug for DhKeyPair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DhKeyPair").field("group", &self.group).field("private", &"<redacted>").finish()
    }
}

impl Drop for DhKeyPair {
    fn drop(&mut self) {
        // x25519 StaticSecret zeroizes itself ("zeroize" feature); the ECP
        // scalars are zeroized here (to one, keeping the non-zero invariant).
        use zeroize::Zeroize;
        match &mut self.private {
            Private::X25519(_) => {}
            Private::P256(s) => s.zeroize(),
            Private::P384(s) => s.zeroize(),
        }
    }
}

impl DhKeyPair {
    /// Generate a fresh key pair from the caller's RNG.
    pub fn generate(group: DhGroup, rng: &mut impl CryptoRngCore) -> Self {
        let private = match group {
            DhGroup::Curve25519 => Private::X25519(x25519_dalek::StaticSecret::random_from_rng(&mut *rng)),
            DhGroup::Ecp256 => Private::P256(p256::NonZeroScalar::random(&mut *rng)),
            DhGroup::Ecp384 => Private::P384(p384::NonZeroScalar::random(&mut *rng)),
        };
        Self::from_private(group, private)
    }

    /// A key pair from a fixed private value (known-answer tests): 32 bytes
    /// for Curve25519 (clamped by X25519), a big-endian scalar in [1, n-1]
    /// for the ECP groups.
    pub fn from_private_bytes(group: DhGroup, bytes: &[u8]) -> Result<Self, CryptoError> {
        let private = match group {
            DhGroup::Curve25519 => {
                let a: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::KeyLength("x25519 private key"))?;
                Private::X25519(x25519_dalek::StaticSecret::from(a))
            }
            DhGroup::Ecp256 => {
                let sk = p256::SecretKey::from_slice(bytes).map_err(|_| CryptoError::KeyLength("ECP-256 scalar"))?;
                Private::P256(sk.to_nonzero_scalar())
            }
            DhGroup::Ecp384 => {
                let sk = p384::SecretKey::from_slice(bytes).map_err(|_| CryptoError::KeyLength("ECP-384 scalar"))?;
                Private::P384(sk.to_nonzero_scalar())
            }
        };
        Ok(Self::from_private(group, private))
    }

    fn from_private(group: DhGroup, private: Private) -> Self {
        let public = match &private {
            Private::X25519(s) => x25519_dalek::PublicKey::from(s).as_bytes().to_vec(),
            Private::P256(s) => {
                let pk = p256::PublicKey::from_secret_scalar(s);
                pk.to_encoded_point(false).as_bytes()[1..].to_vec()
            }
            Private::P384(s) => {
                let pk = p384::PublicKey::from_secret_scalar(s);
                pk.to_encoded_point(false).as_bytes()[1..].to_vec()
            }
        };
        DhKeyPair { group, private, public }
    }

    /// The group.
    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// The public value for the KE payload.
    pub fn public_value(&self) -> &[u8] {
        &self.public
    }

    /// Compute g^ir from the peer's KE data. Rejects wrong lengths, points
    /// not on the curve / the identity (ECP) and low-order points giving an
    /// all-zero secret (x25519, RFC 8031 2.3).
    pub fn shared_secret(&self, peer: &[u8]) -> Result<SecretBytes, CryptoError> {
        if peer.len() != self.group.public_len() {
            return Err(CryptoError::InvalidPublicValue("wrong length"));
        }
        match &self.private {
            Private::X25519(s) => {
                let mut a = [0u8; 32];
                a.copy_from_slice(peer);
                let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(a));
                if !shared.was_contributory() {
                    return Err(CryptoError::InvalidPublicValue("low-order x25519 point"));
                }
                Ok(SecretBytes::from_slice(shared.as_bytes()))
            }
            Private::P256(s) => {
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(4);
                sec1.extend_from_slice(peer);
                let pk = p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| CryptoError::InvalidPublicValue("not a point on ECP-256"))?;
                let shared = p256::ecdh::diffie_hellman(s, pk.as_affine());
                Ok(SecretBytes::from_slice(shared.raw_secret_bytes()))
            }
            Private::P384(s) => {
                let mut sec1 = Vec::with_capacity(97);
                sec1.push(4);
                sec1.extend_from_slice(peer);
                let pk = p384::PublicKey::from_sec1_bytes(&sec1).map_err(|_| CryptoError::InvalidPublicValue("not a point on ECP-384"))?;
                let shared = p384::ecdh::diffie_hellman(s, pk.as_affine());
                Ok(SecretBytes::from_slice(shared.raw_secret_bytes()))
            }
        }
    }
}
