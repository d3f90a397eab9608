//! Public-key AUTH (RFC 7296 2.15 / 3.8, RFC 4754, RFC 7427, RFC 8420).
//!
//! Signs the RFC 7296 2.15 signed octets ([`super::signed_octets`]) with our
//! private key and verifies the peer's AUTH data with the public key of its
//! certificate (a DER SubjectPublicKeyInfo).
//!
//! * AUTH method 14, Digital Signature (RFC 7427 3): the AUTH data is a 1-byte
//!   length, an ASN.1 AlgorithmIdentifier and the signature. We sign
//!   ecdsa-with-SHA256 on P-256, ecdsa-with-SHA384 on P-384 (DER signatures),
//!   Ed25519 (RFC 8420, hash "Identity"), sha256/384/512WithRSAEncryption and
//!   RSASSA-PSS with SHA2-256/384/512 (salt length = hash length, MGF1 with the
//!   same hash). The AlgorithmIdentifiers are sent exactly as RFC 7427
//!   Appendix A lists them ([`ALGID_ECDSA_SHA256`] etc.); received ones are
//!   parsed as DER, so RSASSA-PSS parameters with explicit or default fields
//!   are understood.
//! * Legacy methods, used when the peer sent no SIGNATURE_HASH_ALGORITHMS
//!   notify (RFC 7427 4) or announced no hash we can use with our key:
//!   1 RSA PKCS#1 v1.5 with SHA-1 (RFC 7296 3.8), 9 / 10 ECDSA with SHA-256 on
//!   P-256 / SHA-384 on P-384, signature `r || s` of fixed length (RFC 4754).
//!   Ed25519 has no legacy method.
//!
//! Verification accepts, under method 14: ecdsa-with-SHA256 and -SHA384 on
//! P-256 and P-384 keys, sha256/384/512WithRSAEncryption, RSASSA-PSS whose
//! MGF1 hash equals the hash and whose salt length is the hash length (the
//! only form `ring` verifies), and Ed25519; under methods 1, 9 and 10 their
//! legacy schemes. ECDSA with SHA-512, P-521 (method 11), SHA-1 under
//! RFC 7427 and RSA peer keys outside 2048..=8192 bits are refused with a
//! clear [`SigError`].
//!
//! # Libraries and randomness
//!
//! Signing and verification use `ring`, except the signing of legacy method 1
//! (PKCS#1 v1.5 with SHA-1, which `ring` cannot sign): it uses the RustCrypto
//! `rsa` crate, with blinding. That crate is subject to RUSTSEC-2023-0071
//! ("Marvin": non-constant-time modular arithmetic that may leak key bits
//! through timing); blinding mitigates it and it is used only when a peer
//! lacks RFC 7427 (or announced no hash we can use) and our key is RSA.
//!
//! Unlike the rest of this crate, which takes all randomness from the caller,
//! this module draws from the operating system's CSPRNG: ECDSA nonces and
//! RSA-PSS salts come from `ring::rand::SystemRandom`, the `rsa` crate's
//! blinding from `rand_core::OsRng`. Signatures are therefore not
//! reproducible from the engine's seed (the protocol does not need them to be).
//!
//! # Key material
//!
//! [`PrivateKey`] keeps the decoded key bytes (PKCS#8 / PKCS#1 DER) in
//! zeroized buffers, and the `rsa` crate zeroizes its key on drop; `ring`'s
//! own key representations are not zeroized by `ring`. `Debug` prints the key
//! type only.

use std::fmt;

use der::asn1::{AnyRef, ObjectIdentifier, OctetStringRef};
use der::{Decode, Encode, Tag, Tagged};
use ring::rand::SystemRandom;
use ring::signature::{self as rsig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, UnparsedPublicKey};
use spki::{AlgorithmIdentifierOwned, AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use zeroize::Zeroizing;

/// Hash algorithm numbers of RFC 7427 (IANA "IKEv2 Hash Algorithms").
pub const HASH_SHA1: u16 = 1;
/// SHA2-256 (RFC 7427).
pub const HASH_SHA2_256: u16 = 2;
/// SHA2-384 (RFC 7427).
pub const HASH_SHA2_384: u16 = 3;
/// SHA2-512 (RFC 7427).
pub const HASH_SHA2_512: u16 = 4;
/// Identity (RFC 8420): the signature scheme hashes itself (Ed25519).
pub const HASH_IDENTITY: u16 = 5;

/// AUTH method 1, RSA Digital Signature: PKCS#1 v1.5 with SHA-1 (RFC 7296 3.8).
pub const AUTH_RSA: u8 = 1;
/// AUTH method 9: ECDSA with SHA-256 on P-256, `r || s` (RFC 4754).
pub const AUTH_ECDSA_256: u8 = 9;
/// AUTH method 10: ECDSA with SHA-384 on P-384, `r || s` (RFC 4754).
pub const AUTH_ECDSA_384: u8 = 10;
/// AUTH method 11: ECDSA with SHA-512 on P-521 (RFC 4754; not supported here).
pub const AUTH_ECDSA_521: u8 = 11;
/// AUTH method 14: Digital Signature (RFC 7427).
pub const AUTH_DIGITAL_SIGNATURE: u8 = 14;

/// What we announce in our SIGNATURE_HASH_ALGORITHMS notify (RFC 7427 4).
pub const OUR_HASHES: &[u16] = &[HASH_SHA2_256, HASH_SHA2_384, HASH_SHA2_512, HASH_IDENTITY];

// AlgorithmIdentifiers as RFC 7427 Appendix A (and RFC 8420 for Ed25519) lists them.

/// sha256WithRSAEncryption, NULL parameters (RFC 7427 A.1.2).
pub const ALGID_SHA256_RSA: &[u8] = &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00];
/// sha384WithRSAEncryption, NULL parameters (RFC 7427 A.1.3).
pub const ALGID_SHA384_RSA: &[u8] = &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00];
/// sha512WithRSAEncryption, NULL parameters (RFC 7427 A.1.4).
pub const ALGID_SHA512_RSA: &[u8] = &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00];
/// ecdsa-with-SHA256, parameters absent (RFC 7427 A.3.1).
pub const ALGID_ECDSA_SHA256: &[u8] = &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
/// ecdsa-with-SHA384, parameters absent (RFC 7427 A.3.2).
pub const ALGID_ECDSA_SHA384: &[u8] = &[0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
/// id-Ed25519, parameters absent (RFC 8420 2 / RFC 8410).
pub const ALGID_ED25519: &[u8] = &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
/// RSASSA-PSS with SHA-256, MGF1 with SHA-256, salt length 32 (RFC 7427 A.4.3).
pub const ALGID_RSA_PSS_SHA256: &[u8] = &[
    0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30, 0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60,
    0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d,
    0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01,
    0x20,
];
/// RSASSA-PSS with SHA-384, MGF1 with SHA-384, salt length 48 (the A.4.3 form with SHA-384).
pub const ALGID_RSA_PSS_SHA384: &[u8] = &[
    0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30, 0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60,
    0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d,
    0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01,
    0x30,
];
/// RSASSA-PSS with SHA-512, MGF1 with SHA-512, salt length 64 (the A.4.3 form with SHA-512).
pub const ALGID_RSA_PSS_SHA512: &[u8] = &[
    0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30, 0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60,
    0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d,
    0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01,
    0x40,
];

mod oid {
    use der::asn1::ObjectIdentifier as Oid;
    pub const EC_PUBLIC_KEY: Oid = Oid::new_unwrap("1.2.840.10045.2.1");
    pub const P256: Oid = Oid::new_unwrap("1.2.840.10045.3.1.7");
    pub const P384: Oid = Oid::new_unwrap("1.3.132.0.34");
    pub const P521: Oid = Oid::new_unwrap("1.3.132.0.35");
    pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
    pub const ED25519: Oid = Oid::new_unwrap("1.3.101.112");
    pub const ED448: Oid = Oid::new_unwrap("1.3.101.113");
    pub const SHA1_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.5");
    pub const SHA256_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
    pub const SHA384_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
    pub const SHA512_RSA: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
    pub const RSASSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");
    pub const MGF1: Oid = Oid::new_unwrap("1.2.840.113549.1.1.8");
    pub const ECDSA_SHA1: Oid = Oid::new_unwrap("1.2.840.10045.4.1");
    pub const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
    pub const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
    pub const ECDSA_SHA512: Oid = Oid::new_unwrap("1.2.840.10045.4.3.4");
    pub const SHA1: Oid = Oid::new_unwrap("1.3.14.3.2.26");
    pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
    pub const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
    pub const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
}

/// Public-key signature failure. The messages are meant for an operator.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// The private key is encrypted.
    #[error("the private key is encrypted ({0}); encrypted keys are not supported: store it decrypted (e.g. `openssl pkey -in key.pem -out key-plain.pem`) with restrictive file permissions")]
    EncryptedKey(&'static str),
    /// Malformed PEM armour or base64.
    #[error("malformed PEM private key: {0}")]
    Pem(String),
    /// Neither PKCS#8, SEC1 nor PKCS#1, or a PEM block of another kind.
    #[error("unsupported private key format: {0}")]
    KeyFormat(String),
    /// A private key of an algorithm we do not support.
    #[error("unsupported private key algorithm {0}")]
    KeyAlgorithm(String),
    /// An EC key on a curve other than P-256 / P-384.
    #[error("unsupported elliptic curve {0}: only P-256 and P-384 are supported")]
    Curve(String),
    /// An RSA key outside 2048..=4096 bits.
    #[error("RSA key of {0} bits: only 2048 to 4096 bits are supported")]
    RsaKeySize(u32),
    /// The key structure is well-formed but the key is invalid (e.g. the
    /// public key does not match the private key).
    #[error("invalid private key: {0}")]
    InvalidKey(String),
    /// The peer did not send SIGNATURE_HASH_ALGORITHMS and the key type has no
    /// legacy AUTH method.
    #[error("{0} keys have no legacy AUTH method: the peer must support RFC 7427 (SIGNATURE_HASH_ALGORITHMS notify)")]
    NoLegacyMethod(&'static str),
    /// No hash the peer announced can be used with our key, and there is no
    /// legacy method to fall back to.
    #[error("none of the hash algorithms the peer announced ({peer:?}) can be used with our {key} key")]
    NoCommonHash {
        /// Our key type, for humans.
        key: String,
        /// The peer's SIGNATURE_HASH_ALGORITHMS.
        peer: Vec<u16>,
    },
    /// Signing failed in the library.
    #[error("signing failed: {0}")]
    Sign(&'static str),
    /// The peer's SubjectPublicKeyInfo is malformed.
    #[error("malformed peer public key (SubjectPublicKeyInfo): {0}")]
    PeerKey(String),
    /// The peer's key is of an unsupported algorithm, curve or size.
    #[error("unsupported peer public key: {0}")]
    UnsupportedPeerKey(String),
    /// An AUTH method that is not a signature method we implement.
    #[error("unsupported AUTH method {0}")]
    UnsupportedMethod(u8),
    /// The RFC 7427 length prefix is missing, zero or longer than the data.
    #[error("malformed RFC 7427 AUTH data: {0}")]
    LengthPrefix(String),
    /// The RFC 7427 AlgorithmIdentifier is not valid DER.
    #[error("malformed RFC 7427 AlgorithmIdentifier: {0}")]
    AlgorithmIdentifier(String),
    /// The RFC 7427 AlgorithmIdentifier names an algorithm we do not accept.
    #[error("unsupported signature algorithm {0}")]
    UnsupportedAlgorithm(String),
    /// RSASSA-PSS parameters we cannot verify.
    #[error("unsupported RSASSA-PSS parameters: {0}")]
    PssParams(String),
    /// The peer's key type does not fit the AUTH method / algorithm.
    #[error("key type does not fit the AUTH method: {0}")]
    KeyMismatch(String),
    /// The signature is wrong (or of the wrong length).
    #[error("signature does not verify ({0})")]
    BadSignature(String),
}

/// The type of a private key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on NIST P-256 (secp256r1).
    EcdsaP256,
    /// ECDSA on NIST P-384 (secp384r1).
    EcdsaP384,
    /// Ed25519 (RFC 8032).
    Ed25519,
    /// RSA with a modulus of `bits` bits.
    Rsa {
        /// Modulus size.
        bits: u32,
    },
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyType::EcdsaP256 => f.write_str("ECDSA P-256"),
            KeyType::EcdsaP384 => f.write_str("ECDSA P-384"),
            KeyType::Ed25519 => f.write_str("Ed25519"),
            KeyType::Rsa { bits } => write!(f, "RSA {bits}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

enum Inner {
    Ec {
        curve: Curve,
        /// Fixed-length `r || s` signing (legacy methods 9 / 10).
        fixed: Box<EcdsaKeyPair>,
        /// DER signing (RFC 7427).
        asn1: Box<EcdsaKeyPair>,
    },
    Ed25519(Ed25519KeyPair),
    Rsa {
        bits: u32,
        ring: RsaKeyPair,
        /// Only for legacy method 1 (PKCS#1 v1.5 with SHA-1).
        legacy: Box<rsa::pkcs1v15::SigningKey<sha1::Sha1>>,
    },
}

/// Our private key, loaded from PEM or DER.
pub struct PrivateKey {
    inner: Inner,
    spki: Vec<u8>,
    rng: SystemRandom,
    /// The key as it was read, for TLS (EAP-TLS gives it to rustls).
    source: Option<KeySource>,
}

/// A private key's DER encoding, as read.
pub struct KeySource {
    pub format: KeyFormat,
    pub der: zeroize::Zeroizing<Vec<u8>>,
}

/// The encoding of [`KeySource::der`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    Pkcs8,
    Sec1,
    Pkcs1,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("type", &self.key_type()).finish_non_exhaustive()
    }
}

const PEM_KEY_LABELS: &[&str] = &["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"];

/// `EncryptedPrivateKeyInfo` (RFC 5958 3), only to recognise it.
#[derive(der::Sequence)]
struct EncryptedPrivateKeyInfo<'a> {
    algorithm: AlgorithmIdentifierRef<'a>,
    data: OctetStringRef<'a>,
}

impl PrivateKey {
    /// PEM ("PRIVATE KEY" PKCS#8, "EC PRIVATE KEY" SEC1, "RSA PRIVATE KEY"
    /// PKCS#1) or the same in DER.
    ///
    /// Refuses encrypted keys ("ENCRYPTED PRIVATE KEY", `Proc-Type:
    /// 4,ENCRYPTED`), RSA outside 2048..=4096 bits, curves other than P-256 /
    /// P-384, and anything else, with a [`SigError`] saying which.
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<Self, SigError> {
        let trimmed = bytes.trim_ascii_start();
        if trimmed.starts_with(b"-----BEGIN ") {
            let text = std::str::from_utf8(trimmed).map_err(|_| SigError::Pem("not ASCII text".into()))?;
            let (label, der) = pem_key_block(text)?;
            let (key, format) = match label.as_str() {
                "PRIVATE KEY" => (Self::from_pkcs8(&der)?, KeyFormat::Pkcs8),
                "EC PRIVATE KEY" => (Self::from_sec1(&der, None)?, KeyFormat::Sec1),
                "RSA PRIVATE KEY" => (Self::from_pkcs1(&der)?, KeyFormat::Pkcs1),
                _ => unreachable!("pem_key_block returns our labels only"),
            };
            Ok(key.with_source(format, &der))
        } else {
            Self::from_der(bytes)
        }
    }

    fn with_source(mut self, format: KeyFormat, der: &[u8]) -> Self {
        self.source = Some(KeySource { format, der: zeroize::Zeroizing::new(der.to_vec()) });
        self
    }

    /// The DER the key was read from.
    pub fn source(&self) -> Option<&KeySource> {
        self.source.as_ref()
    }

    fn from_der(der: &[u8]) -> Result<Self, SigError> {
        if pkcs8::PrivateKeyInfo::from_der(der).is_ok() {
            return Ok(Self::from_pkcs8(der)?.with_source(KeyFormat::Pkcs8, der));
        }
        if sec1::EcPrivateKey::from_der(der).is_ok() {
            return Ok(Self::from_sec1(der, None)?.with_source(KeyFormat::Sec1, der));
        }
        if pkcs1::RsaPrivateKey::from_der(der).is_ok() {
            return Ok(Self::from_pkcs1(der)?.with_source(KeyFormat::Pkcs1, der));
        }
        if EncryptedPrivateKeyInfo::from_der(der).is_ok() {
            return Err(SigError::EncryptedKey("DER EncryptedPrivateKeyInfo"));
        }
        Err(SigError::KeyFormat("neither PEM nor a DER PKCS#8, SEC1 (EC) or PKCS#1 (RSA) private key".into()))
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, SigError> {
        let info = pkcs8::PrivateKeyInfo::from_der(der).map_err(|e| SigError::KeyFormat(format!("PKCS#8: {e}")))?;
        let alg = info.algorithm.oid;
        if alg == oid::EC_PUBLIC_KEY {
            let curve =
                info.algorithm.parameters_oid().map_err(|e| SigError::KeyFormat(format!("PKCS#8 EC key without a named curve: {e}")))?;
            Self::from_sec1(info.private_key, Some(curve))
        } else if alg == oid::RSA_ENCRYPTION {
            Self::from_pkcs1(info.private_key)
        } else if alg == oid::ED25519 {
            let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| SigError::InvalidKey(format!("Ed25519: {e}")))?;
            let spki = spki_der(oid::ED25519, None, kp.public_key().as_ref());
            Ok(PrivateKey { inner: Inner::Ed25519(kp), spki, rng: SystemRandom::new(), source: None })
        } else {
            Err(SigError::KeyAlgorithm(oid_name(&alg)))
        }
    }

    /// SEC1 ECPrivateKey; `curve` from the PKCS#8 AlgorithmIdentifier if any.
    fn from_sec1(der: &[u8], curve: Option<ObjectIdentifier>) -> Result<Self, SigError> {
        let ec = sec1::EcPrivateKey::from_der(der).map_err(|e| SigError::KeyFormat(format!("SEC1 EC private key: {e}")))?;
        let inner_curve = ec.parameters.and_then(|p| p.named_curve());
        let curve_oid = match (curve, inner_curve) {
            (Some(a), Some(b)) if a != b => {
                return Err(SigError::InvalidKey(format!("curve {} in PKCS#8 but {} in the EC key", oid_name(&a), oid_name(&b))))
            }
            (Some(a), _) => a,
            (None, Some(b)) => b,
            (None, None) => return Err(SigError::KeyFormat("EC private key without a named curve".into())),
        };
        let (c, len) = if curve_oid == oid::P256 {
            (Curve::P256, 32)
        } else if curve_oid == oid::P384 {
            (Curve::P384, 48)
        } else {
            return Err(SigError::Curve(oid_name(&curve_oid)));
        };
        // Normalise: scalar of exactly the field length, public key present
        // (ring requires it), curve in the PKCS#8 AlgorithmIdentifier only.
        if ec.private_key.len() > len {
            return Err(SigError::InvalidKey(format!("EC private scalar of {} bytes", ec.private_key.len())));
        }
        let mut scalar = Zeroizing::new(vec![0u8; len]);
        scalar[len - ec.private_key.len()..].copy_from_slice(ec.private_key);
        let public: Vec<u8> = match ec.public_key {
            Some(p) => p.to_vec(),
            None => ec_public_from_scalar(c, &scalar)?,
        };
        let inner = sec1::EcPrivateKey { private_key: &scalar, parameters: None, public_key: Some(&public) };
        let inner_der = Zeroizing::new(inner.to_der().map_err(|e| SigError::InvalidKey(e.to_string()))?);
        let p8 = pkcs8::PrivateKeyInfo {
            algorithm: AlgorithmIdentifierRef { oid: oid::EC_PUBLIC_KEY, parameters: Some(AnyRef::from(&curve_oid)) },
            private_key: &inner_der,
            public_key: None,
        };
        let p8_der = Zeroizing::new(p8.to_der().map_err(|e| SigError::InvalidKey(e.to_string()))?);
        let rng = SystemRandom::new();
        let (fixed_alg, asn1_alg) = match c {
            Curve::P256 => (&rsig::ECDSA_P256_SHA256_FIXED_SIGNING, &rsig::ECDSA_P256_SHA256_ASN1_SIGNING),
            Curve::P384 => (&rsig::ECDSA_P384_SHA384_FIXED_SIGNING, &rsig::ECDSA_P384_SHA384_ASN1_SIGNING),
        };
        let bad = |e: ring::error::KeyRejected| SigError::InvalidKey(format!("EC key: {e}"));
        let fixed = EcdsaKeyPair::from_pkcs8(fixed_alg, &p8_der, &rng).map_err(bad)?;
        let asn1 = EcdsaKeyPair::from_pkcs8(asn1_alg, &p8_der, &rng).map_err(bad)?;
        let spki = spki_der(oid::EC_PUBLIC_KEY, Some(curve_oid), fixed.public_key().as_ref());
        Ok(PrivateKey { inner: Inner::Ec { curve: c, fixed: Box::new(fixed), asn1: Box::new(asn1) }, spki, rng, source: None })
    }

    fn from_pkcs1(der: &[u8]) -> Result<Self, SigError> {
        let k = pkcs1::RsaPrivateKey::from_der(der).map_err(|e| SigError::KeyFormat(format!("PKCS#1 RSA private key: {e}")))?;
        let bits = uint_bits(k.modulus.as_bytes());
        if !(2048..=4096).contains(&bits) {
            return Err(SigError::RsaKeySize(bits));
        }
        let ring = RsaKeyPair::from_der(der).map_err(|e| SigError::InvalidKey(format!("RSA key: {e}")))?;
        use rsa::pkcs1::DecodeRsaPrivateKey;
        let legacy = rsa::RsaPrivateKey::from_pkcs1_der(der).map_err(|e| SigError::InvalidKey(format!("RSA key: {e}")))?;
        let spki = spki_der(oid::RSA_ENCRYPTION, None, ring.public().as_ref());
        Ok(PrivateKey {
            inner: Inner::Rsa { bits, ring, legacy: Box::new(rsa::pkcs1v15::SigningKey::new(legacy)) },
            spki,
            rng: SystemRandom::new(),
            source: None,
        })
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        match &self.inner {
            Inner::Ec { curve: Curve::P256, .. } => KeyType::EcdsaP256,
            Inner::Ec { curve: Curve::P384, .. } => KeyType::EcdsaP384,
            Inner::Ed25519(_) => KeyType::Ed25519,
            Inner::Rsa { bits, .. } => KeyType::Rsa { bits: *bits },
        }
    }

    /// DER SubjectPublicKeyInfo of the public key (to check it equals the
    /// configured certificate's key).
    pub fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }
}

/// Finds the first private key block in PEM text (skipping e.g. "EC
/// PARAMETERS"), refusing encrypted keys.
fn pem_key_block(text: &str) -> Result<(String, Zeroizing<Vec<u8>>), SigError> {
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(SigError::EncryptedKey("PEM \"ENCRYPTED PRIVATE KEY\""));
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(SigError::EncryptedKey("PEM with \"Proc-Type: 4,ENCRYPTED\""));
    }
    let mut seen = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("-----BEGIN ") {
        let after = &rest[i + "-----BEGIN ".len()..];
        let Some(j) = after.find("-----") else { break };
        let label = &after[..j];
        let end = format!("-----END {label}-----");
        let Some(k) = rest[i..].find(&end) else { return Err(SigError::Pem(format!("no \"{end}\" line"))) };
        let block = &rest[i..i + k + end.len()];
        if PEM_KEY_LABELS.contains(&label) {
            let (l, der) = der::pem::decode_vec(block.as_bytes()).map_err(|e| SigError::Pem(e.to_string()))?;
            return Ok((l.to_string(), Zeroizing::new(der)));
        }
        seen.push(label.to_string());
        rest = &rest[i + k + end.len()..];
    }
    Err(SigError::KeyFormat(format!(
        "no \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\" PEM block (found: {})",
        if seen.is_empty() { "none".to_string() } else { seen.join(", ") }
    )))
}

fn ec_public_from_scalar(c: Curve, scalar: &[u8]) -> Result<Vec<u8>, SigError> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let bad = |_| SigError::InvalidKey("EC private scalar out of range".into());
    Ok(match c {
        Curve::P256 => p256::SecretKey::from_slice(scalar).map_err(bad)?.public_key().to_encoded_point(false).as_bytes().to_vec(),
        Curve::P384 => p384::SecretKey::from_slice(scalar).map_err(bad)?.public_key().to_encoded_point(false).as_bytes().to_vec(),
    })
}

fn spki_der(alg: ObjectIdentifier, curve: Option<ObjectIdentifier>, public: &[u8]) -> Vec<u8> {
    let parameters = match curve {
        Some(c) => Some(der::Any::from(&c)),
        None if alg == oid::RSA_ENCRYPTION => Some(der::Any::null()),
        None => None,
    };
    let info = spki::SubjectPublicKeyInfoOwned {
        algorithm: AlgorithmIdentifierOwned { oid: alg, parameters },
        subject_public_key: der::asn1::BitString::from_bytes(public).expect("a byte string is a valid BIT STRING"),
    };
    info.to_der().expect("SubjectPublicKeyInfo encodes")
}

/// Bits of a big-endian unsigned integer.
fn uint_bits(b: &[u8]) -> u32 {
    let b = match b.iter().position(|&x| x != 0) {
        Some(i) => &b[i..],
        None => return 0,
    };
    (b.len() as u32 - 1) * 8 + (8 - b[0].leading_zeros())
}

fn oid_name(o: &ObjectIdentifier) -> String {
    let name = match *o {
        x if x == oid::EC_PUBLIC_KEY => "id-ecPublicKey",
        x if x == oid::P256 => "P-256",
        x if x == oid::P384 => "P-384",
        x if x == oid::P521 => "P-521",
        x if x == oid::RSA_ENCRYPTION => "rsaEncryption",
        x if x == oid::ED25519 => "Ed25519",
        x if x == oid::ED448 => "Ed448",
        x if x == oid::SHA1_RSA => "sha1WithRSAEncryption",
        x if x == oid::SHA256_RSA => "sha256WithRSAEncryption",
        x if x == oid::SHA384_RSA => "sha384WithRSAEncryption",
        x if x == oid::SHA512_RSA => "sha512WithRSAEncryption",
        x if x == oid::RSASSA_PSS => "RSASSA-PSS",
        x if x == oid::MGF1 => "MGF1",
        x if x == oid::ECDSA_SHA1 => "ecdsa-with-SHA1",
        x if x == oid::ECDSA_SHA256 => "ecdsa-with-SHA256",
        x if x == oid::ECDSA_SHA384 => "ecdsa-with-SHA384",
        x if x == oid::ECDSA_SHA512 => "ecdsa-with-SHA512",
        x if x == oid::SHA1 => "SHA-1",
        x if x == oid::SHA256 => "SHA-256",
        x if x == oid::SHA384 => "SHA-384",
        x if x == oid::SHA512 => "SHA-512",
        _ => return format!("OID {o}"),
    };
    format!("{name} ({o})")
}

// ---------------------------------------------------------------------------
// SIGNATURE_HASH_ALGORITHMS (RFC 7427 4)

/// Notify data: the hash numbers of [`OUR_HASHES`] as 16-bit big-endian values.
pub fn hash_algorithms_notify_data() -> Vec<u8> {
    OUR_HASHES.iter().flat_map(|h| h.to_be_bytes()).collect()
}

/// Parses a peer's SIGNATURE_HASH_ALGORITHMS data: the valid prefix of
/// 16-bit big-endian values (a trailing odd byte is ignored; empty → empty);
/// unknown numbers are kept.
pub fn parse_hash_algorithms(data: &[u8]) -> Vec<u16> {
    data.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect()
}

// ---------------------------------------------------------------------------
// Signing

/// Preferences for [`sign_auth`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SignPrefs<'a> {
    /// The peer's SIGNATURE_HASH_ALGORITHMS (None: the peer did not send the
    /// notify → the legacy method of the key type: RSA → 1, P-256 → 9, P-384
    /// → 10; Ed25519 has no legacy method → error).
    pub peer_hashes: Option<&'a [u16]>,
    /// Use RSASSA-PSS instead of PKCS#1 v1.5 for RSA keys under method 14
    /// (strongSwan's `rsa/pss`).
    pub rsa_pss: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "SHA2-256",
            Hash::Sha384 => "SHA2-384",
            Hash::Sha512 => "SHA2-512",
        }
    }
    fn number(self) -> u16 {
        match self {
            Hash::Sha256 => HASH_SHA2_256,
            Hash::Sha384 => HASH_SHA2_384,
            Hash::Sha512 => HASH_SHA2_512,
        }
    }
    fn len(self) -> u32 {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }
}

/// The legacy AUTH method of a key type, if it has one.
pub fn legacy_method(kt: KeyType) -> Option<u8> {
    match kt {
        KeyType::Rsa { .. } => Some(AUTH_RSA),
        KeyType::EcdsaP256 => Some(AUTH_ECDSA_256),
        KeyType::EcdsaP384 => Some(AUTH_ECDSA_384),
        KeyType::Ed25519 => None,
    }
}

/// Signs `octets` (RFC 7296 2.15 signed octets). Returns (AUTH method, AUTH
/// data).
///
/// With `peer_hashes` given, method 14 (RFC 7427) with a hash the peer
/// announced: P-256 → SHA2-256, P-384 → SHA2-384 (`ring` signs ECDSA only with
/// the hash matching the curve, so a P-256 key whose peer announced only
/// SHA2-384 falls back to method 9), Ed25519 → Identity, RSA → SHA2-256, else
/// SHA2-384, else SHA2-512 (PKCS#1 v1.5, or RSASSA-PSS with `rsa_pss`). If the
/// peer announced none that we can use with this key, the legacy method when
/// one exists, else [`SigError::NoCommonHash`].
pub fn sign_auth(key: &PrivateKey, octets: &[u8], prefs: &SignPrefs) -> Result<(u8, Vec<u8>), SigError> {
    let Some(peer) = prefs.peer_hashes else {
        return sign_legacy(key, octets);
    };
    let has = |h: u16| peer.contains(&h);
    let rfc7427 = |algid: &[u8], sig: &[u8]| {
        let mut v = Vec::with_capacity(1 + algid.len() + sig.len());
        v.push(algid.len() as u8);
        v.extend_from_slice(algid);
        v.extend_from_slice(sig);
        (AUTH_DIGITAL_SIGNATURE, v)
    };
    match &key.inner {
        Inner::Ec { curve, asn1, .. } => {
            let (h, algid) = match curve {
                Curve::P256 => (HASH_SHA2_256, ALGID_ECDSA_SHA256),
                Curve::P384 => (HASH_SHA2_384, ALGID_ECDSA_SHA384),
            };
            if !has(h) {
                return sign_legacy(key, octets);
            }
            let sig = asn1.sign(&key.rng, octets).map_err(|_| SigError::Sign("ECDSA"))?;
            Ok(rfc7427(algid, sig.as_ref()))
        }
        Inner::Ed25519(kp) => {
            if !has(HASH_IDENTITY) {
                return Err(SigError::NoCommonHash { key: KeyType::Ed25519.to_string(), peer: peer.to_vec() });
            }
            Ok(rfc7427(ALGID_ED25519, kp.sign(octets).as_ref()))
        }
        Inner::Rsa { ring, .. } => {
            let Some(h) = [Hash::Sha256, Hash::Sha384, Hash::Sha512].into_iter().find(|h| has(h.number())) else {
                return sign_legacy(key, octets);
            };
            let (enc, algid): (&'static dyn rsig::RsaEncoding, &[u8]) = match (prefs.rsa_pss, h) {
                (false, Hash::Sha256) => (&rsig::RSA_PKCS1_SHA256, ALGID_SHA256_RSA),
                (false, Hash::Sha384) => (&rsig::RSA_PKCS1_SHA384, ALGID_SHA384_RSA),
                (false, Hash::Sha512) => (&rsig::RSA_PKCS1_SHA512, ALGID_SHA512_RSA),
                (true, Hash::Sha256) => (&rsig::RSA_PSS_SHA256, ALGID_RSA_PSS_SHA256),
                (true, Hash::Sha384) => (&rsig::RSA_PSS_SHA384, ALGID_RSA_PSS_SHA384),
                (true, Hash::Sha512) => (&rsig::RSA_PSS_SHA512, ALGID_RSA_PSS_SHA512),
            };
            let mut sig = vec![0u8; ring.public().modulus_len()];
            ring.sign(enc, &key.rng, octets, &mut sig).map_err(|_| SigError::Sign("RSA"))?;
            Ok(rfc7427(algid, &sig))
        }
    }
}

fn sign_legacy(key: &PrivateKey, octets: &[u8]) -> Result<(u8, Vec<u8>), SigError> {
    match &key.inner {
        Inner::Ec { curve, fixed, .. } => {
            let sig = fixed.sign(&key.rng, octets).map_err(|_| SigError::Sign("ECDSA"))?;
            let m = if *curve == Curve::P256 { AUTH_ECDSA_256 } else { AUTH_ECDSA_384 };
            Ok((m, sig.as_ref().to_vec()))
        }
        Inner::Ed25519(_) => Err(SigError::NoLegacyMethod("Ed25519")),
        Inner::Rsa { legacy, .. } => {
            use rsa::signature::{RandomizedSigner, SignatureEncoding};
            // Blinded (the rng), see the module docs on RUSTSEC-2023-0071.
            let sig = legacy.try_sign_with_rng(&mut rand_core::OsRng, octets).map_err(|_| SigError::Sign("RSA PKCS#1 v1.5 SHA-1"))?;
            Ok((AUTH_RSA, sig.to_vec()))
        }
    }
}

// ---------------------------------------------------------------------------
// Verification

/// What verified, for diagnostics and for the policy plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The AUTH method.
    pub method: u8,
    /// e.g. "ECDSA P-256 with SHA2-256 (RFC 7427)", "RSA-PSS 3072 with
    /// SHA2-384 (RFC 7427)", "RSA PKCS#1 v1.5 2048 with SHA1 (legacy method 1)".
    pub scheme: String,
}

enum PeerKey<'a> {
    Ec(Curve, &'a [u8]),
    Ed25519(&'a [u8]),
    Rsa(u32, &'a [u8]),
}

impl PeerKey<'_> {
    fn describe(&self) -> String {
        match self {
            PeerKey::Ec(Curve::P256, _) => "an ECDSA P-256 key".into(),
            PeerKey::Ec(Curve::P384, _) => "an ECDSA P-384 key".into(),
            PeerKey::Ed25519(_) => "an Ed25519 key".into(),
            PeerKey::Rsa(bits, _) => format!("an RSA {bits} key"),
        }
    }
}

fn parse_peer_key(spki_der: &[u8]) -> Result<PeerKey<'_>, SigError> {
    let info = SubjectPublicKeyInfoRef::from_der(spki_der).map_err(|e| SigError::PeerKey(e.to_string()))?;
    let key = info.subject_public_key.as_bytes().ok_or_else(|| SigError::PeerKey("BIT STRING with unused bits".into()))?;
    let alg = info.algorithm.oid;
    if alg == oid::EC_PUBLIC_KEY {
        let curve =
            info.algorithm.parameters_oid().map_err(|e| SigError::UnsupportedPeerKey(format!("EC key without a named curve: {e}")))?;
        if curve == oid::P256 {
            Ok(PeerKey::Ec(Curve::P256, key))
        } else if curve == oid::P384 {
            Ok(PeerKey::Ec(Curve::P384, key))
        } else {
            Err(SigError::UnsupportedPeerKey(format!("EC curve {}", oid_name(&curve))))
        }
    } else if alg == oid::ED25519 {
        Ok(PeerKey::Ed25519(key))
    } else if alg == oid::RSA_ENCRYPTION {
        let pk = pkcs1::RsaPublicKey::from_der(key).map_err(|e| SigError::PeerKey(format!("RSA public key: {e}")))?;
        let bits = uint_bits(pk.modulus.as_bytes());
        if !(2048..=8192).contains(&bits) {
            return Err(SigError::UnsupportedPeerKey(format!("RSA key of {bits} bits (2048 to 8192 are accepted)")));
        }
        Ok(PeerKey::Rsa(bits, key))
    } else {
        Err(SigError::UnsupportedPeerKey(format!("key algorithm {}", oid_name(&alg))))
    }
}

/// Verifies AUTH `data` of `method` over `octets` with the peer's public key
/// (DER SubjectPublicKeyInfo, from its certificate).
pub fn verify_auth(spki_der: &[u8], method: u8, data: &[u8], octets: &[u8]) -> Result<Verified, SigError> {
    let key = parse_peer_key(spki_der)?;
    let mismatch =
        |what: &str| SigError::KeyMismatch(format!("{what} needs {}, the peer's certificate has {}", what_key(what), key.describe()));
    let (alg, pk, scheme): (&'static dyn rsig::VerificationAlgorithm, &[u8], String) = match method {
        AUTH_RSA => match key {
            PeerKey::Rsa(bits, pk) => {
                (&rsig::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, pk, format!("RSA PKCS#1 v1.5 {bits} with SHA1 (legacy method 1)"))
            }
            _ => return Err(mismatch("AUTH method 1 (RSA)")),
        },
        AUTH_ECDSA_256 => match key {
            PeerKey::Ec(Curve::P256, pk) => (&rsig::ECDSA_P256_SHA256_FIXED, pk, "ECDSA P-256 with SHA2-256 (legacy method 9)".into()),
            _ => return Err(mismatch("AUTH method 9 (ECDSA P-256)")),
        },
        AUTH_ECDSA_384 => match key {
            PeerKey::Ec(Curve::P384, pk) => (&rsig::ECDSA_P384_SHA384_FIXED, pk, "ECDSA P-384 with SHA2-384 (legacy method 10)".into()),
            _ => return Err(mismatch("AUTH method 10 (ECDSA P-384)")),
        },
        AUTH_ECDSA_521 => return Err(SigError::UnsupportedAlgorithm("ECDSA P-521 with SHA2-512 (AUTH method 11)".into())),
        AUTH_DIGITAL_SIGNATURE => {
            let (algid, sig) = split_rfc7427(data)?;
            let (alg, pk, scheme) = rfc7427_algorithm(algid, &key)?;
            return verify_with(alg, pk, octets, sig, AUTH_DIGITAL_SIGNATURE, scheme);
        }
        m => return Err(SigError::UnsupportedMethod(m)),
    };
    verify_with(alg, pk, octets, data, method, scheme)
}

fn what_key(what: &str) -> &'static str {
    if what.contains("RSA") {
        "an RSA key"
    } else if what.contains("P-256") {
        "an ECDSA P-256 key"
    } else if what.contains("P-384") {
        "an ECDSA P-384 key"
    } else if what.contains("Ed25519") {
        "an Ed25519 key"
    } else {
        "an ECDSA P-256 or P-384 key"
    }
}

fn verify_with(
    alg: &'static dyn rsig::VerificationAlgorithm,
    pk: &[u8],
    octets: &[u8],
    sig: &[u8],
    method: u8,
    scheme: String,
) -> Result<Verified, SigError> {
    UnparsedPublicKey::new(alg, pk).verify(octets, sig).map_err(|_| SigError::BadSignature(scheme.clone()))?;
    Ok(Verified { method, scheme })
}

/// Splits RFC 7427 AUTH data into (AlgorithmIdentifier, signature).
fn split_rfc7427(data: &[u8]) -> Result<(&[u8], &[u8]), SigError> {
    let Some((&n, rest)) = data.split_first() else {
        return Err(SigError::LengthPrefix("empty AUTH data".into()));
    };
    let n = n as usize;
    if n == 0 {
        return Err(SigError::LengthPrefix("AlgorithmIdentifier length 0".into()));
    }
    if n > rest.len() {
        return Err(SigError::LengthPrefix(format!("AlgorithmIdentifier length {n} but only {} bytes follow", rest.len())));
    }
    let (algid, sig) = rest.split_at(n);
    if sig.is_empty() {
        return Err(SigError::LengthPrefix("no signature after the AlgorithmIdentifier".into()));
    }
    Ok((algid, sig))
}

/// RSASSA-PSS-params (RFC 4055 3.1 / RFC 8017 A.2.3); absent fields take the
/// defaults SHA-1, MGF1 with SHA-1, salt length 20, trailer field 1.
#[derive(der::Sequence)]
struct PssParams {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    hash: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    mask_gen: Option<AlgorithmIdentifierOwned>,
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    salt_length: Option<u32>,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT", optional = "true")]
    trailer_field: Option<u32>,
}

/// Parameters of a hash or PKCS#1 v1.5 AlgorithmIdentifier: absent or NULL.
fn absent_or_null(p: &Option<AnyRef<'_>>) -> bool {
    match p {
        None => true,
        Some(a) => a.tag() == Tag::Null && a.value().is_empty(),
    }
}

fn hash_of(a: &AlgorithmIdentifierOwned, what: &str) -> Result<Option<Hash>, SigError> {
    let ok = match &a.parameters {
        None => true,
        Some(p) => p.tag() == Tag::Null && p.value().is_empty(),
    };
    if !ok {
        return Err(SigError::PssParams(format!("{what} {} with parameters", oid_name(&a.oid))));
    }
    Ok(match a.oid {
        o if o == oid::SHA256 => Some(Hash::Sha256),
        o if o == oid::SHA384 => Some(Hash::Sha384),
        o if o == oid::SHA512 => Some(Hash::Sha512),
        _ => None,
    })
}

fn rsassa_pss(params: &Option<AnyRef<'_>>) -> Result<Hash, SigError> {
    let Some(p) = params else {
        return Err(SigError::PssParams("absent parameters mean SHA-1, MGF1 with SHA-1, salt length 20: SHA-1 is not accepted".into()));
    };
    let p: PssParams = p.decode_as().map_err(|e| SigError::AlgorithmIdentifier(format!("RSASSA-PSS-params: {e}")))?;
    let hash = match &p.hash {
        None => return Err(SigError::PssParams("hash SHA-1 (default) is not accepted".into())),
        Some(a) => hash_of(a, "hash")?.ok_or_else(|| SigError::PssParams(format!("hash {} is not supported", oid_name(&a.oid))))?,
    };
    let mgf_hash = match &p.mask_gen {
        None => return Err(SigError::PssParams("mask generation MGF1 with SHA-1 (default) is not supported".into())),
        Some(m) => {
            if m.oid != oid::MGF1 {
                return Err(SigError::PssParams(format!("mask generation function {} is not MGF1", oid_name(&m.oid))));
            }
            let inner = m
                .parameters
                .as_ref()
                .ok_or_else(|| SigError::PssParams("MGF1 without a hash".into()))?
                .decode_as::<AlgorithmIdentifierOwned>()
                .map_err(|e| SigError::AlgorithmIdentifier(format!("MGF1 hash: {e}")))?;
            hash_of(&inner, "MGF1 hash")?
                .ok_or_else(|| SigError::PssParams(format!("MGF1 hash {} is not supported", oid_name(&inner.oid))))?
        }
    };
    if mgf_hash != hash {
        return Err(SigError::PssParams(format!(
            "MGF1 with {} but hash {}: only MGF1 with the same hash is supported",
            mgf_hash.name(),
            hash.name()
        )));
    }
    let salt = p.salt_length.unwrap_or(20);
    if salt != hash.len() {
        return Err(SigError::PssParams(format!(
            "salt length {salt} with {}: only a salt of the hash length ({}) is supported",
            hash.name(),
            hash.len()
        )));
    }
    if let Some(t) = p.trailer_field {
        if t != 1 {
            return Err(SigError::PssParams(format!("trailer field {t} (only 1 is defined)")));
        }
    }
    Ok(hash)
}

type Algo<'k> = (&'static dyn rsig::VerificationAlgorithm, &'k [u8], String);

/// Maps an RFC 7427 AlgorithmIdentifier and the peer's key to a ring
/// verification algorithm.
fn rfc7427_algorithm<'k>(algid: &[u8], key: &PeerKey<'k>) -> Result<Algo<'k>, SigError> {
    let a = AlgorithmIdentifierRef::from_der(algid).map_err(|e| SigError::AlgorithmIdentifier(e.to_string()))?;
    let name = oid_name(&a.oid);
    let mismatch = || SigError::KeyMismatch(format!("{name} does not fit {}", key.describe()));
    let o = a.oid;
    if o == oid::ECDSA_SHA256 || o == oid::ECDSA_SHA384 {
        if !absent_or_null(&a.parameters) {
            return Err(SigError::AlgorithmIdentifier(format!("{name} with parameters")));
        }
        let sha384 = o == oid::ECDSA_SHA384;
        let h = if sha384 { Hash::Sha384 } else { Hash::Sha256 };
        let PeerKey::Ec(curve, pk) = *key else { return Err(mismatch()) };
        let (alg, cn): (&'static dyn rsig::VerificationAlgorithm, _) = match (curve, sha384) {
            (Curve::P256, false) => (&rsig::ECDSA_P256_SHA256_ASN1, "P-256"),
            (Curve::P256, true) => (&rsig::ECDSA_P256_SHA384_ASN1, "P-256"),
            (Curve::P384, false) => (&rsig::ECDSA_P384_SHA256_ASN1, "P-384"),
            (Curve::P384, true) => (&rsig::ECDSA_P384_SHA384_ASN1, "P-384"),
        };
        return Ok((alg, pk, format!("ECDSA {cn} with {} (RFC 7427)", h.name())));
    }
    if o == oid::SHA256_RSA || o == oid::SHA384_RSA || o == oid::SHA512_RSA {
        if !absent_or_null(&a.parameters) {
            return Err(SigError::AlgorithmIdentifier(format!("{name} with parameters other than NULL")));
        }
        let PeerKey::Rsa(bits, pk) = *key else { return Err(mismatch()) };
        let (alg, h): (&'static dyn rsig::VerificationAlgorithm, _) = match o {
            x if x == oid::SHA256_RSA => (&rsig::RSA_PKCS1_2048_8192_SHA256, Hash::Sha256),
            x if x == oid::SHA384_RSA => (&rsig::RSA_PKCS1_2048_8192_SHA384, Hash::Sha384),
            _ => (&rsig::RSA_PKCS1_2048_8192_SHA512, Hash::Sha512),
        };
        return Ok((alg, pk, format!("RSA PKCS#1 v1.5 {bits} with {} (RFC 7427)", h.name())));
    }
    if o == oid::RSASSA_PSS {
        let PeerKey::Rsa(bits, pk) = *key else { return Err(mismatch()) };
        let h = rsassa_pss(&a.parameters)?;
        let alg: &'static dyn rsig::VerificationAlgorithm = match h {
            Hash::Sha256 => &rsig::RSA_PSS_2048_8192_SHA256,
            Hash::Sha384 => &rsig::RSA_PSS_2048_8192_SHA384,
            Hash::Sha512 => &rsig::RSA_PSS_2048_8192_SHA512,
        };
        return Ok((alg, pk, format!("RSA-PSS {bits} with {} (RFC 7427)", h.name())));
    }
    if o == oid::ED25519 {
        if a.parameters.is_some() {
            return Err(SigError::AlgorithmIdentifier(format!("{name} with parameters (RFC 8410: absent)")));
        }
        let PeerKey::Ed25519(pk) = *key else { return Err(mismatch()) };
        return Ok((&rsig::ED25519, pk, "Ed25519 (RFC 7427)".into()));
    }
    let why = match o {
        x if x == oid::ECDSA_SHA512 => "ECDSA with SHA-512 is not supported",
        x if x == oid::SHA1_RSA || x == oid::ECDSA_SHA1 => "SHA-1 is not accepted under RFC 7427 (we do not announce it)",
        _ => "unknown or unsupported",
    };
    Err(SigError::UnsupportedAlgorithm(format!("{name}: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    const OCTETS: &[u8] = b"RealMessage1 | Nr | prf(SK_pi, IDi')";

    macro_rules! data {
        ($p:literal) => {
            include_bytes!(concat!("../../tests/data/", $p)).as_slice()
        };
    }

    fn ec(alg: &'static rsig::EcdsaSigningAlgorithm) -> PrivateKey {
        let p8 = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new()).unwrap();
        PrivateKey::from_pem_or_der(p8.as_ref()).unwrap()
    }
    fn p256() -> PrivateKey {
        ec(&rsig::ECDSA_P256_SHA256_ASN1_SIGNING)
    }
    fn p384() -> PrivateKey {
        ec(&rsig::ECDSA_P384_SHA384_ASN1_SIGNING)
    }
    fn ed25519() -> PrivateKey {
        let p8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        PrivateKey::from_pem_or_der(p8.as_ref()).unwrap()
    }
    fn rsa2048() -> PrivateKey {
        PrivateKey::from_pem_or_der(data!("keys/rsa2048.pem")).unwrap()
    }
    fn rsa3072() -> PrivateKey {
        PrivateKey::from_pem_or_der(data!("keys/rsa3072.pem")).unwrap()
    }
    fn prefs(h: &[u16]) -> SignPrefs<'_> {
        SignPrefs { peer_hashes: Some(h), rsa_pss: false }
    }
    fn rfc7427(algid: &[u8], sig: &[u8]) -> Vec<u8> {
        let mut v = vec![algid.len() as u8];
        v.extend_from_slice(algid);
        v.extend_from_slice(sig);
        v
    }
    fn algid_of(data: &[u8]) -> &[u8] {
        &data[1..1 + data[0] as usize]
    }

    #[test]
    fn algorithm_identifiers_known_answers() {
        // RFC 7427 Appendix A (and RFC 8420 2 for Ed25519), as hex.
        let kat: &[(&[u8], &str)] = &[
            (ALGID_SHA256_RSA, "300d06092a864886f70d01010b0500"),
            (ALGID_SHA384_RSA, "300d06092a864886f70d01010c0500"),
            (ALGID_SHA512_RSA, "300d06092a864886f70d01010d0500"),
            (ALGID_ECDSA_SHA256, "300a06082a8648ce3d040302"),
            (ALGID_ECDSA_SHA384, "300a06082a8648ce3d040303"),
            (ALGID_ED25519, "300506032b6570"),
            (
                ALGID_RSA_PSS_SHA256,
                "304106092a864886f70d01010a3034a00f300d06096086480165030402010500\
                 a11c301a06092a864886f70d010108300d06096086480165030402010500a203020120",
            ),
        ];
        for (c, h) in kat {
            assert_eq!(hex::encode(c), *h);
        }
        // The SHA-384 / SHA-512 PSS blobs are the A.4.3 form with the other hash.
        let swap = |h: u8, salt: u8| {
            let mut v = ALGID_RSA_PSS_SHA256.to_vec();
            v[29] = h;
            v[59] = h;
            *v.last_mut().unwrap() = salt;
            v
        };
        assert_eq!(ALGID_RSA_PSS_SHA384, swap(2, 48).as_slice());
        assert_eq!(ALGID_RSA_PSS_SHA512, swap(3, 64).as_slice());
    }

    #[test]
    fn algorithm_identifiers_match_der_encoder() {
        // Cross-check the constants against the der/spki encoder.
        let null = || Some(der::Any::null());
        let plain = |o: ObjectIdentifier, p: Option<der::Any>| AlgorithmIdentifierOwned { oid: o, parameters: p }.to_der().unwrap();
        assert_eq!(plain(oid::SHA256_RSA, null()), ALGID_SHA256_RSA);
        assert_eq!(plain(oid::SHA384_RSA, null()), ALGID_SHA384_RSA);
        assert_eq!(plain(oid::SHA512_RSA, null()), ALGID_SHA512_RSA);
        assert_eq!(plain(oid::ECDSA_SHA256, None), ALGID_ECDSA_SHA256);
        assert_eq!(plain(oid::ECDSA_SHA384, None), ALGID_ECDSA_SHA384);
        assert_eq!(plain(oid::ED25519, None), ALGID_ED25519);
        for (h, salt, blob) in
            [(oid::SHA256, 32, ALGID_RSA_PSS_SHA256), (oid::SHA384, 48, ALGID_RSA_PSS_SHA384), (oid::SHA512, 64, ALGID_RSA_PSS_SHA512)]
        {
            let hash = AlgorithmIdentifierOwned { oid: h, parameters: null() };
            let mgf = AlgorithmIdentifierOwned { oid: oid::MGF1, parameters: Some(der::Any::encode_from(&hash).unwrap()) };
            let params = PssParams { hash: Some(hash), mask_gen: Some(mgf), salt_length: Some(salt), trailer_field: None };
            assert_eq!(plain(oid::RSASSA_PSS, Some(der::Any::encode_from(&params).unwrap())), blob);
        }
    }

    #[test]
    fn notify_data_and_parse() {
        assert_eq!(OUR_HASHES, &[2, 3, 4, 5]);
        assert_eq!(hash_algorithms_notify_data(), vec![0, 2, 0, 3, 0, 4, 0, 5]);
        assert_eq!(parse_hash_algorithms(&hash_algorithms_notify_data()), OUR_HASHES);
        assert_eq!(parse_hash_algorithms(&[]), Vec::<u16>::new());
        assert_eq!(parse_hash_algorithms(&[0]), Vec::<u16>::new());
        assert_eq!(parse_hash_algorithms(&[0, 2, 0]), vec![2]);
        assert_eq!(parse_hash_algorithms(&[0, 2, 0x12, 0x34, 0]), vec![2, 0x1234]);
    }

    #[test]
    fn round_trip_every_key_and_method() {
        let all = OUR_HASHES;
        let cases: Vec<(&str, PrivateKey, SignPrefs, u8, &str)> = vec![
            ("p256 14", p256(), prefs(all), 14, "ECDSA P-256 with SHA2-256 (RFC 7427)"),
            ("p256 9", p256(), SignPrefs::default(), 9, "ECDSA P-256 with SHA2-256 (legacy method 9)"),
            ("p384 14", p384(), prefs(all), 14, "ECDSA P-384 with SHA2-384 (RFC 7427)"),
            ("p384 10", p384(), SignPrefs::default(), 10, "ECDSA P-384 with SHA2-384 (legacy method 10)"),
            ("ed25519 14", ed25519(), prefs(all), 14, "Ed25519 (RFC 7427)"),
            ("rsa2048 14 sha256", rsa2048(), prefs(all), 14, "RSA PKCS#1 v1.5 2048 with SHA2-256 (RFC 7427)"),
            ("rsa2048 14 sha384", rsa2048(), prefs(&[3]), 14, "RSA PKCS#1 v1.5 2048 with SHA2-384 (RFC 7427)"),
            ("rsa2048 14 sha512", rsa2048(), prefs(&[4, 5]), 14, "RSA PKCS#1 v1.5 2048 with SHA2-512 (RFC 7427)"),
            ("rsa2048 pss", rsa2048(), SignPrefs { peer_hashes: Some(all), rsa_pss: true }, 14, "RSA-PSS 2048 with SHA2-256 (RFC 7427)"),
            ("rsa2048 1", rsa2048(), SignPrefs::default(), 1, "RSA PKCS#1 v1.5 2048 with SHA1 (legacy method 1)"),
            ("rsa3072 14", rsa3072(), prefs(all), 14, "RSA PKCS#1 v1.5 3072 with SHA2-256 (RFC 7427)"),
            (
                "rsa3072 pss 384",
                rsa3072(),
                SignPrefs { peer_hashes: Some(&[3]), rsa_pss: true },
                14,
                "RSA-PSS 3072 with SHA2-384 (RFC 7427)",
            ),
            (
                "rsa3072 pss 512",
                rsa3072(),
                SignPrefs { peer_hashes: Some(&[4]), rsa_pss: true },
                14,
                "RSA-PSS 3072 with SHA2-512 (RFC 7427)",
            ),
            ("rsa3072 sha512", rsa3072(), prefs(&[4]), 14, "RSA PKCS#1 v1.5 3072 with SHA2-512 (RFC 7427)"),
            ("rsa3072 1", rsa3072(), SignPrefs::default(), 1, "RSA PKCS#1 v1.5 3072 with SHA1 (legacy method 1)"),
        ];
        for (name, key, p, method, scheme) in cases {
            let (m, data) = sign_auth(&key, OCTETS, &p).unwrap();
            assert_eq!(m, method, "{name}");
            let v = verify_auth(key.public_key_spki(), m, &data, OCTETS).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(v, Verified { method, scheme: scheme.into() }, "{name}");
            // Tampered octets.
            let mut o = OCTETS.to_vec();
            o[3] ^= 1;
            assert!(matches!(verify_auth(key.public_key_spki(), m, &data, &o), Err(SigError::BadSignature(_))), "{name}");
            // Tampered signature (last byte is inside the signature for every scheme).
            let mut d = data.clone();
            *d.last_mut().unwrap() ^= 0x40;
            assert!(matches!(verify_auth(key.public_key_spki(), m, &d, OCTETS), Err(SigError::BadSignature(_))), "{name}");
            // Fixed-length legacy ECDSA signatures.
            match method {
                9 => assert_eq!(data.len(), 64),
                10 => assert_eq!(data.len(), 96),
                _ => {}
            }
        }
    }

    #[test]
    fn method_14_uses_the_rfc_algorithm_identifiers() {
        let (_, d) = sign_auth(&p256(), OCTETS, &prefs(OUR_HASHES)).unwrap();
        assert_eq!(algid_of(&d), ALGID_ECDSA_SHA256);
        let (_, d) = sign_auth(&p384(), OCTETS, &prefs(OUR_HASHES)).unwrap();
        assert_eq!(algid_of(&d), ALGID_ECDSA_SHA384);
        let (_, d) = sign_auth(&ed25519(), OCTETS, &prefs(OUR_HASHES)).unwrap();
        assert_eq!(algid_of(&d), ALGID_ED25519);
        assert_eq!(d.len(), 1 + 7 + 64);
        let k = rsa2048();
        let (_, d) = sign_auth(&k, OCTETS, &prefs(&[2])).unwrap();
        assert_eq!((algid_of(&d), d.len()), (ALGID_SHA256_RSA, 1 + 15 + 256));
        let (_, d) = sign_auth(&k, OCTETS, &prefs(&[3])).unwrap();
        assert_eq!(algid_of(&d), ALGID_SHA384_RSA);
        let (_, d) = sign_auth(&k, OCTETS, &prefs(&[4])).unwrap();
        assert_eq!(algid_of(&d), ALGID_SHA512_RSA);
        for (h, blob) in [(2, ALGID_RSA_PSS_SHA256), (3, ALGID_RSA_PSS_SHA384), (4, ALGID_RSA_PSS_SHA512)] {
            let (_, d) = sign_auth(&k, OCTETS, &SignPrefs { peer_hashes: Some(&[h]), rsa_pss: true }).unwrap();
            assert_eq!(algid_of(&d), blob);
        }
    }

    #[test]
    fn hash_choice() {
        // P-256 and only SHA2-384 announced: ring cannot sign P-256 with
        // SHA-384, so the legacy method 9.
        let k = p256();
        let (m, d) = sign_auth(&k, OCTETS, &prefs(&[3])).unwrap();
        assert_eq!((m, d.len()), (AUTH_ECDSA_256, 64));
        verify_auth(k.public_key_spki(), m, &d, OCTETS).unwrap();
        // P-384 with only SHA2-256 → legacy 10.
        let (m, _) = sign_auth(&p384(), OCTETS, &prefs(&[2, 5])).unwrap();
        assert_eq!(m, AUTH_ECDSA_384);
        // Empty list (notify with no data) → legacy.
        assert_eq!(sign_auth(&p256(), OCTETS, &prefs(&[])).unwrap().0, AUTH_ECDSA_256);
        // RSA prefers SHA2-256 whatever the order; unknown numbers ignored.
        let (m, d) = sign_auth(&rsa2048(), OCTETS, &prefs(&[99, 4, 3, 2])).unwrap();
        assert_eq!((m, algid_of(&d)), (14, ALGID_SHA256_RSA));
        // RSA with only SHA-1 / Identity announced → legacy 1.
        assert_eq!(sign_auth(&rsa2048(), OCTETS, &prefs(&[1, 5])).unwrap().0, AUTH_RSA);
        // Ed25519: needs Identity.
        let e = ed25519();
        assert_eq!(sign_auth(&e, OCTETS, &prefs(&[2, 3, 4])), Err(SigError::NoCommonHash { key: "Ed25519".into(), peer: vec![2, 3, 4] }));
        assert_eq!(sign_auth(&e, OCTETS, &SignPrefs::default()), Err(SigError::NoLegacyMethod("Ed25519")));
        assert_eq!(sign_auth(&e, OCTETS, &prefs(&[5])).unwrap().0, 14);
    }

    #[test]
    fn wrong_key() {
        for (a, b, p) in
            [(p256(), p256(), prefs(OUR_HASHES)), (ed25519(), ed25519(), prefs(OUR_HASHES)), (rsa2048(), rsa3072(), SignPrefs::default())]
        {
            let (m, d) = sign_auth(&a, OCTETS, &p).unwrap();
            assert!(matches!(verify_auth(b.public_key_spki(), m, &d, OCTETS), Err(SigError::BadSignature(_))));
        }
    }

    #[test]
    fn method_key_mismatch() {
        let ec = p256();
        let (_, d) = sign_auth(&ec, OCTETS, &SignPrefs::default()).unwrap();
        let e = verify_auth(ec.public_key_spki(), AUTH_RSA, &d, OCTETS).unwrap_err();
        assert!(matches!(&e, SigError::KeyMismatch(s) if s.contains("method 1") && s.contains("P-256")), "{e}");
        let k384 = p384();
        let (_, d) = sign_auth(&k384, OCTETS, &SignPrefs::default()).unwrap();
        let e = verify_auth(k384.public_key_spki(), AUTH_ECDSA_256, &d, OCTETS).unwrap_err();
        assert!(matches!(&e, SigError::KeyMismatch(s) if s.contains("P-384")), "{e}");
        // Method 14: an ECDSA AlgorithmIdentifier with an RSA key, Ed25519 with ECDSA key.
        let rsa = rsa2048();
        let (_, d) = sign_auth(&ec, OCTETS, &prefs(OUR_HASHES)).unwrap();
        assert!(matches!(verify_auth(rsa.public_key_spki(), 14, &d, OCTETS), Err(SigError::KeyMismatch(_))));
        let (_, d) = sign_auth(&ed25519(), OCTETS, &prefs(OUR_HASHES)).unwrap();
        assert!(matches!(verify_auth(ec.public_key_spki(), 14, &d, OCTETS), Err(SigError::KeyMismatch(_))));
        assert_eq!(verify_auth(ec.public_key_spki(), 2, &d, OCTETS), Err(SigError::UnsupportedMethod(2)));
        assert!(matches!(verify_auth(ec.public_key_spki(), 11, &d, OCTETS), Err(SigError::UnsupportedAlgorithm(_))));
    }

    #[test]
    fn length_prefix() {
        let k = p256();
        let (_, d) = sign_auth(&k, OCTETS, &prefs(OUR_HASHES)).unwrap();
        let spki = k.public_key_spki();
        for bad in [&[][..], &[0u8, 1, 2][..], &d[..5], &d[..13]] {
            assert!(matches!(verify_auth(spki, 14, bad, OCTETS), Err(SigError::LengthPrefix(_))), "{bad:02x?}");
        }
        // A length that cuts the AlgorithmIdentifier short.
        let mut t = d.clone();
        t[0] -= 1;
        assert!(matches!(verify_auth(spki, 14, &t, OCTETS), Err(SigError::AlgorithmIdentifier(_))));
    }

    #[test]
    fn unknown_and_unsupported_algorithms() {
        let k = p256();
        let (_, d) = sign_auth(&k, OCTETS, &prefs(OUR_HASHES)).unwrap();
        let sig = &d[1 + ALGID_ECDSA_SHA256.len()..];
        // 1.2.3.4
        let unknown = [0x30, 0x05, 0x06, 0x03, 0x2a, 0x03, 0x04];
        let e = verify_auth(k.public_key_spki(), 14, &rfc7427(&unknown, sig), OCTETS).unwrap_err();
        assert!(matches!(&e, SigError::UnsupportedAlgorithm(s) if s.contains("1.2.3.4")), "{e}");
        assert!(e.to_string().contains("1.2.3.4"));
        // ecdsa-with-SHA512
        let sha512 = [0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];
        let e = verify_auth(k.public_key_spki(), 14, &rfc7427(&sha512, sig), OCTETS).unwrap_err();
        assert!(matches!(&e, SigError::UnsupportedAlgorithm(s) if s.contains("SHA-512")), "{e}");
        // Not DER.
        let e = verify_auth(k.public_key_spki(), 14, &rfc7427(&[0x30, 0x07, 0x06], sig), OCTETS).unwrap_err();
        assert!(matches!(e, SigError::AlgorithmIdentifier(_)));
        // Garbage SPKI.
        assert!(matches!(verify_auth(&[0x30, 0x00], 14, &d, OCTETS), Err(SigError::PeerKey(_))));
    }

    #[test]
    fn pss_params() {
        let k = rsa2048();
        let (_, d) = sign_auth(&k, OCTETS, &SignPrefs { peer_hashes: Some(&[2]), rsa_pss: true }).unwrap();
        let sig = &d[1 + ALGID_RSA_PSS_SHA256.len()..];
        let spki = k.public_key_spki();
        let alg = |hash: Option<ObjectIdentifier>,
                   mgf: Option<ObjectIdentifier>,
                   salt: Option<u32>,
                   trailer: Option<u32>,
                   hash_null: bool| {
            let h = |o| AlgorithmIdentifierOwned { oid: o, parameters: hash_null.then(der::Any::null) };
            let params = PssParams {
                hash: hash.map(h),
                mask_gen: mgf.map(|o| AlgorithmIdentifierOwned { oid: oid::MGF1, parameters: Some(der::Any::encode_from(&h(o)).unwrap()) }),
                salt_length: salt,
                trailer_field: trailer,
            };
            AlgorithmIdentifierOwned { oid: oid::RSASSA_PSS, parameters: Some(der::Any::encode_from(&params).unwrap()) }.to_der().unwrap()
        };
        let s256 = Some(oid::SHA256);
        // Explicit default trailer field and absent NULLs are understood.
        let v = verify_auth(spki, 14, &rfc7427(&alg(s256, s256, Some(32), Some(1), false), sig), OCTETS).unwrap();
        assert_eq!(v.scheme, "RSA-PSS 2048 with SHA2-256 (RFC 7427)");
        // Salt 20 with SHA-256: refused by parameters, before verifying.
        let e = verify_auth(spki, 14, &rfc7427(&alg(s256, s256, Some(20), None, true), sig), OCTETS).unwrap_err();
        assert!(matches!(&e, SigError::PssParams(s) if s.contains("salt length 20")), "{e}");
        // Absent salt = 20.
        assert!(matches!(verify_auth(spki, 14, &rfc7427(&alg(s256, s256, None, None, true), sig), OCTETS), Err(SigError::PssParams(_))));
        // MGF1 hash differs.
        let e = verify_auth(spki, 14, &rfc7427(&alg(s256, Some(oid::SHA384), Some(32), None, true), sig), OCTETS).unwrap_err();
        assert!(matches!(&e, SigError::PssParams(s) if s.contains("MGF1")), "{e}");
        // Defaults (SHA-1): absent parameters, empty SEQUENCE.
        let no_params = AlgorithmIdentifierOwned { oid: oid::RSASSA_PSS, parameters: None }.to_der().unwrap();
        assert!(matches!(verify_auth(spki, 14, &rfc7427(&no_params, sig), OCTETS), Err(SigError::PssParams(_))));
        assert!(matches!(verify_auth(spki, 14, &rfc7427(&alg(None, None, None, None, true), sig), OCTETS), Err(SigError::PssParams(_))));
        // Trailer field 2.
        assert!(matches!(
            verify_auth(spki, 14, &rfc7427(&alg(s256, s256, Some(32), Some(2), true), sig), OCTETS),
            Err(SigError::PssParams(_))
        ));
        // The RFC form verifies.
        verify_auth(spki, 14, &rfc7427(&alg(s256, s256, Some(32), None, true), sig), OCTETS).unwrap();
    }

    #[test]
    fn openssl_signatures_verify() {
        // Fixed signatures made by OpenSSL (tests/data/sig/README).
        let octets = data!("sig/octets.bin");
        type Case<'a> = (&'a [u8], &'a [u8], &'a [u8], &'a str);
        let cases: &[Case] = &[
            (data!("sig/ecdsa256.spki.der"), ALGID_ECDSA_SHA384, data!("sig/ecdsa256-sha384.sig"), "ECDSA P-256 with SHA2-384 (RFC 7427)"),
            (data!("sig/ecdsa384.spki.der"), ALGID_ECDSA_SHA256, data!("sig/ecdsa384-sha256.sig"), "ECDSA P-384 with SHA2-256 (RFC 7427)"),
            (data!("sig/ed25519.spki.der"), ALGID_ED25519, data!("sig/ed25519.sig"), "Ed25519 (RFC 7427)"),
            (
                data!("sig/rsa3072.spki.der"),
                ALGID_RSA_PSS_SHA384,
                data!("sig/rsa3072-pss-sha384.sig"),
                "RSA-PSS 3072 with SHA2-384 (RFC 7427)",
            ),
            (
                data!("sig/rsa2048.spki.der"),
                ALGID_SHA512_RSA,
                data!("sig/rsa2048-sha512.sig"),
                "RSA PKCS#1 v1.5 2048 with SHA2-512 (RFC 7427)",
            ),
        ];
        for (spki, algid, sig, scheme) in cases {
            let v = verify_auth(spki, 14, &rfc7427(algid, sig), octets).unwrap_or_else(|e| panic!("{scheme}: {e}"));
            assert_eq!(v.scheme, *scheme);
            assert!(verify_auth(spki, 14, &rfc7427(algid, sig), OCTETS).is_err());
        }
        let v = verify_auth(data!("sig/rsa2048.spki.der"), AUTH_RSA, data!("sig/rsa2048-sha1.sig"), octets).unwrap();
        assert_eq!(v.scheme, "RSA PKCS#1 v1.5 2048 with SHA1 (legacy method 1)");
        // PSS with salt 20 and SHA-256: ring cannot verify it, a clear error.
        let salt20 = {
            let mut a = ALGID_RSA_PSS_SHA256.to_vec();
            *a.last_mut().unwrap() = 20;
            a
        };
        let e = verify_auth(data!("sig/rsa2048.spki.der"), 14, &rfc7427(&salt20, data!("sig/rsa2048-pss-sha256-salt20.sig")), octets);
        assert!(matches!(e, Err(SigError::PssParams(_))));
        // Our signature of the same octets verifies too, and the legacy SHA-1
        // RSA signature is deterministic: the rsa crate's equals OpenSSL's.
        let k = rsa2048();
        assert_eq!(sign_auth(&k, octets, &SignPrefs::default()).unwrap(), (AUTH_RSA, data!("sig/rsa2048-sha1.sig").to_vec()));
        let (_, d) = sign_auth(&k, octets, &prefs(&[4])).unwrap();
        assert_eq!(&d[16..], data!("sig/rsa2048-sha512.sig"));
    }

    #[test]
    fn key_files_and_spki() {
        // strongSwan pki's SEC1 and PKCS#8 files, OpenSSL's SPKI of the same key.
        let cases: &[(&[u8], KeyType, &[u8])] = &[
            (data!("keys/ecdsa256-sec1.pem"), KeyType::EcdsaP256, data!("sig/ecdsa256.spki.der")),
            (data!("keys/ecdsa256-pkcs8.pem"), KeyType::EcdsaP256, data!("sig/ecdsa256.spki.der")),
            (data!("keys/ecdsa256-sec1.der"), KeyType::EcdsaP256, data!("sig/ecdsa256.spki.der")),
            (data!("keys/ecdsa384-sec1.pem"), KeyType::EcdsaP384, data!("sig/ecdsa384.spki.der")),
            (data!("keys/ed25519-pkcs8.pem"), KeyType::Ed25519, data!("sig/ed25519.spki.der")),
            (data!("keys/rsa2048.pem"), KeyType::Rsa { bits: 2048 }, data!("sig/rsa2048.spki.der")),
            (data!("keys/rsa2048-pkcs8.pem"), KeyType::Rsa { bits: 2048 }, data!("sig/rsa2048.spki.der")),
            (data!("keys/rsa3072.pem"), KeyType::Rsa { bits: 3072 }, data!("sig/rsa3072.spki.der")),
        ];
        for (file, kt, spki) in cases {
            let k = PrivateKey::from_pem_or_der(file).unwrap_or_else(|e| panic!("{kt:?}: {e}"));
            assert_eq!(k.key_type(), *kt);
            assert_eq!(k.public_key_spki(), *spki, "{kt:?}");
        }
        // DER of PKCS#8 (ring-generated) and PKCS#1.
        let pem = std::str::from_utf8(data!("keys/rsa2048.pem")).unwrap();
        let (_, der) = der::pem::decode_vec(pem.as_bytes()).unwrap();
        assert_eq!(PrivateKey::from_pem_or_der(&der).unwrap().public_key_spki(), data!("sig/rsa2048.spki.der"));
        // An "EC PARAMETERS" block before the key is skipped.
        let mut two = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n".to_vec();
        two.extend_from_slice(data!("keys/ecdsa256-sec1.pem"));
        assert_eq!(PrivateKey::from_pem_or_der(&two).unwrap().key_type(), KeyType::EcdsaP256);
        // SEC1 without the optional public key: computed.
        let ec = sec1::EcPrivateKey::from_der(data!("keys/ecdsa256-sec1.der")).unwrap();
        let bare = sec1::EcPrivateKey { public_key: None, ..ec }.to_der().unwrap();
        assert_eq!(PrivateKey::from_pem_or_der(&bare).unwrap().public_key_spki(), data!("sig/ecdsa256.spki.der"));
    }

    #[test]
    fn refused_keys() {
        let e = PrivateKey::from_pem_or_der(data!("keys/ecdsa256-encrypted.pem")).unwrap_err();
        assert!(matches!(e, SigError::EncryptedKey(_)));
        assert!(e.to_string().contains("encrypted"), "{e}");
        let e = PrivateKey::from_pem_or_der(data!("keys/ecdsa256-sec1-encrypted.pem")).unwrap_err();
        assert!(matches!(e, SigError::EncryptedKey(s) if s.contains("Proc-Type")));
        // The same encrypted key as DER.
        let (_, der) = der::pem::decode_vec(data!("keys/ecdsa256-encrypted.pem")).unwrap();
        assert!(matches!(PrivateKey::from_pem_or_der(&der), Err(SigError::EncryptedKey(_))));
        let e = PrivateKey::from_pem_or_der(data!("keys/rsa1024.pem")).unwrap_err();
        assert_eq!(e, SigError::RsaKeySize(1024));
        assert!(e.to_string().contains("1024 bits"));
        let e = PrivateKey::from_pem_or_der(data!("keys/ecdsa521-sec1.pem")).unwrap_err();
        assert!(matches!(&e, SigError::Curve(s) if s.contains("P-521")), "{e}");
        let e = PrivateKey::from_pem_or_der(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap_err();
        assert!(matches!(&e, SigError::KeyFormat(s) if s.contains("CERTIFICATE")), "{e}");
        assert!(matches!(PrivateKey::from_pem_or_der(b"\x30\x03\x02\x01\x00"), Err(SigError::KeyFormat(_))));
        assert!(matches!(
            PrivateKey::from_pem_or_der(b"-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n"),
            Err(SigError::Pem(_))
        ));
    }

    #[test]
    fn debug_hides_key_material() {
        let k = rsa2048();
        let s = format!("{k:?}");
        assert_eq!(s, "PrivateKey { type: Rsa { bits: 2048 }, .. }");
    }

    #[test]
    fn peer_key_limits() {
        // An RSA 1024 SPKI is refused clearly; a P-521 SPKI too.
        let (_, p8) = der::pem::decode_vec(data!("keys/rsa1024.pem")).unwrap();
        let info = pkcs8::PrivateKeyInfo::from_der(&p8).unwrap();
        let k = pkcs1::RsaPrivateKey::from_der(info.private_key).unwrap();
        let public = pkcs1::RsaPublicKey { modulus: k.modulus, public_exponent: k.public_exponent }.to_der().unwrap();
        let e = verify_auth(&spki_der(oid::RSA_ENCRYPTION, None, &public), AUTH_RSA, &[0; 128], OCTETS).unwrap_err();
        assert!(matches!(&e, SigError::UnsupportedPeerKey(s) if s.contains("1024 bits")), "{e}");
        let p521_spki = {
            let (_, der) = der::pem::decode_vec(data!("keys/ecdsa521-sec1.pem")).unwrap();
            let ec = sec1::EcPrivateKey::from_der(&der).unwrap();
            let public = ec.public_key.unwrap().to_vec();
            spki_der(oid::EC_PUBLIC_KEY, Some(oid::P521), &public)
        };
        let e = verify_auth(&p521_spki, 14, &rfc7427(ALGID_ECDSA_SHA256, &[1]), OCTETS).unwrap_err();
        assert!(matches!(&e, SigError::UnsupportedPeerKey(s) if s.contains("P-521")), "{e}");
    }
}
