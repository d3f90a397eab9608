//! The engine's view of the crypto suite: a thin adapter over
//! [`crate::crypto`] and [`crate::codec::sk`] with the algorithm ids the engine
//! negotiates, plus the COOKIE computation (RFC 7296 2.6).

use std::net::{IpAddr, SocketAddr};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::codec::{sk, DecodeError, Flags, Header, Message, Payload};
use crate::crypto::{self, DhGroup, DhKeyPair, EncrAlg, PrfAlg, SkCipher};

use super::rng::Drbg;

/// Key material owned by the engine (zeroized on drop).
pub type SecretBytes = Zeroizing<Vec<u8>>;

fn own(s: &crypto::SecretBytes) -> SecretBytes {
    Zeroizing::new(s.expose().to_vec())
}

/// True if the engine implements this PRF.
pub fn prf_supported(id: u16) -> bool {
    PrfAlg::from_id(id).is_some()
}

/// True if the engine implements this key exchange method.
pub fn dh_supported(id: u16) -> bool {
    DhGroup::from_id(id).is_some()
}

/// True if the engine implements this AEAD (for SK, and the data plane for ESP).
pub fn aead_supported(id: u16, key_bits: Option<u16>) -> bool {
    EncrAlg::from_transform(id, key_bits).is_some()
}

/// Negotiated IKE SA algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeSuite {
    pub encr: u16,
    pub key_bits: u16,
    pub prf: u16,
    pub dh: u16,
}

impl IkeSuite {
    fn encr_alg(&self) -> Option<EncrAlg> {
        let kl = if self.encr == crate::config::ENCR_CHACHA20_POLY1305 { None } else { Some(self.key_bits) };
        EncrAlg::from_transform(self.encr, kl)
    }
    fn prf_alg(&self) -> Option<PrfAlg> {
        PrfAlg::from_id(self.prf)
    }
}

/// Keys of an IKE SA and its two SK ciphers. Zeroized on drop; never printed.
pub struct IkeKeys {
    pub suite: IkeSuite,
    pub sk_d: SecretBytes,
    pub sk_pi: SecretBytes,
    pub sk_pr: SecretBytes,
    /// SK_ei (initiator → responder) and SK_er.
    ci: SkCipher,
    cr: SkCipher,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IkeKeys({:?}, <redacted>)", self.suite)
    }
}

/// SK_* from SKEYSEED (RFC 7296 2.14).
pub fn derive_ike_keys(suite: IkeSuite, skeyseed: &[u8], ni: &[u8], nr: &[u8], spi_i: u64, spi_r: u64) -> Option<IkeKeys> {
    let encr = suite.encr_alg()?;
    let prf = suite.prf_alg()?;
    let k = crypto::derive_ike_keys(prf, skeyseed, ni, nr, spi_i, spi_r, encr.keymat_len(), 0).ok()?;
    Some(IkeKeys {
        suite,
        sk_d: own(&k.sk_d),
        sk_pi: own(&k.sk_pi),
        sk_pr: own(&k.sk_pr),
        ci: SkCipher::from_secret(encr, &k.sk_ei).ok()?,
        cr: SkCipher::from_secret(encr, &k.sk_er).ok()?,
    })
}

fn prf_of(id: u16) -> PrfAlg {
    PrfAlg::from_id(id).unwrap_or(PrfAlg::HmacSha256)
}

/// SKEYSEED of the initial exchange: prf(Ni | Nr, g^ir).
pub fn skeyseed_initial(prf_alg: u16, ni: &[u8], nr: &[u8], g_ir: &[u8]) -> SecretBytes {
    own(&crypto::skeyseed(prf_of(prf_alg), ni, nr, g_ir))
}

/// SKEYSEED of an IKE SA rekey (RFC 7296 2.18), with the old SA's PRF and SK_d.
pub fn skeyseed_rekey(old_prf: u16, old_sk_d: &[u8], g_ir: &[u8], ni: &[u8], nr: &[u8]) -> SecretBytes {
    own(&crypto::skeyseed_rekey(prf_of(old_prf), old_sk_d, g_ir, ni, nr))
}

/// Child SA KEYMAT (RFC 7296 2.17): (initiator→responder, responder→initiator).
pub fn child_keymat(
    prf_alg: u16,
    sk_d: &[u8],
    g_ir: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    each: usize,
) -> Option<(SecretBytes, SecretBytes)> {
    let k = crypto::ChildKeys::derive(prf_of(prf_alg), sk_d, g_ir, ni, nr, each, 0).ok()?;
    Some((own(&k.encr_i), own(&k.encr_r)))
}

/// PSK AUTH data (RFC 7296 2.15).
pub fn psk_auth(prf_alg: u16, psk: &[u8], real_message: &[u8], peer_nonce: &[u8], sk_p: &[u8], id_body: &[u8]) -> SecretBytes {
    let alg = prf_of(prf_alg);
    let octets = crypto::signed_octets(alg, real_message, peer_nonce, sk_p, id_body);
    own(&crypto::psk_auth(alg, psk, &octets))
}

/// Constant-time comparison.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    crypto::auth::auth_eq(a, b)
}

/// NAT_DETECTION_*_IP data.
pub fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    crypto::nat_detection_hash(spi_i, spi_r, addr.ip(), addr.port()).to_vec()
}

/// A COOKIE value (RFC 7296 2.6): version byte | SHA-256(Ni | IPi | SPIi | secret).
pub fn cookie(secret: &[u8; 32], ni: &[u8], remote: IpAddr, spi_i: u64) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(ni);
    match remote {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(spi_i.to_be_bytes());
    h.update(secret);
    let mut v = vec![1u8];
    v.extend_from_slice(&h.finalize());
    v
}

/// A DH key pair.
pub type DhSecret = DhKeyPair;

/// Generate a key pair for `group`; returns it and the KE payload data.
pub fn dh_generate(group: u16, rng: &mut Drbg) -> Option<(DhSecret, Vec<u8>)> {
    let kp = DhKeyPair::generate(DhGroup::from_id(group)?, rng);
    let public = kp.public_value().to_vec();
    Some((kp, public))
}

/// The KE payload data of a key pair.
pub fn dh_public(kp: &DhSecret) -> Vec<u8> {
    kp.public_value().to_vec()
}

/// g^ir, or None for an invalid peer value.
pub fn dh_compute(kp: &DhSecret, peer: &[u8]) -> Option<SecretBytes> {
    kp.shared_secret(peer).ok().map(|s| own(&s))
}

/// Why an encrypted message could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Structure or ICV failure: drop silently (RFC 7296 2.21.2).
    Integrity,
    /// Authenticated, but the inner payloads are malformed: answer with this notify.
    Inner(DecodeError),
}

/// Build `header | SK{payloads}` with the sender's key.
pub fn seal_message(header: &Header, payloads: &[Payload], keys: &mut IkeKeys, from_initiator: bool) -> Option<Vec<u8>> {
    let c = if from_initiator { &mut keys.ci } else { &mut keys.cr };
    sk::encrypt_message(header, payloads, c).ok()
}

/// Build the SKF fragments (RFC 7383 2.5) of `header | SK{payloads}`, each
/// datagram at most `max_len` bytes, with the sender's key.
pub fn seal_fragments(
    header: &Header,
    payloads: &[Payload],
    keys: &mut IkeKeys,
    from_initiator: bool,
    max_len: usize,
) -> Option<Vec<Vec<u8>>> {
    let c = if from_initiator { &mut keys.ci } else { &mut keys.cr };
    sk::encrypt_fragments(header, payloads, c, max_len).ok()
}

/// Open a message (already decoded once, so a decode error here is in the
/// authenticated inner chain).
pub fn open_message(bytes: &[u8], msg: &Message, keys: &IkeKeys) -> Result<Vec<Payload>, OpenError> {
    let c = if msg.header.flags.initiator() { &keys.ci } else { &keys.cr };
    match sk::decrypt_message(bytes, c) {
        Ok(m) => Ok(m.payloads),
        Err(sk::SkError::Decode(e)) => Err(OpenError::Inner(e)),
        Err(_) => Err(OpenError::Integrity),
    }
}

/// Open one SKF fragment (RFC 7383) with the sender's key.
pub fn open_fragment(bytes: &[u8], msg: &Message, keys: &IkeKeys) -> Option<sk::Fragment> {
    let c = if msg.header.flags.initiator() { &keys.ci } else { &keys.cr };
    sk::decrypt_fragment(bytes, c).ok()
}

/// Header flags helper.
pub fn flags(initiator: bool, response: bool) -> Flags {
    Flags::new(initiator, response)
}

/// The octets a signature covers (RFC 7296 2.15).
pub fn signed_octets(prf_alg: u16, real_message: &[u8], peer_nonce: &[u8], sk_p: &[u8], id_body: &[u8]) -> Vec<u8> {
    crypto::signed_octets(prf_of(prf_alg), real_message, peer_nonce, sk_p, id_body)
}
