//! The crypto the engine needs, behind one small facade: PRF / prf+, IKE SA
//! key derivation (RFC 7296 2.13-2.14, 2.18), Child SA KEYMAT (2.17), PSK AUTH
//! (2.15), NAT-D hashes (2.23), DH (x25519, ECP-256/384) and the SK payload
//! (RFC 5282 AEAD: AES-GCM-16, ChaCha20-Poly1305).

use std::net::{IpAddr, SocketAddr};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

use crate::codec::{
    decode_chain, encode_chain, DecodeError, Flags, Header, Message, Payload, PayloadType, SkPayload,
};
use crate::config::{
    DH_CURVE25519, DH_ECP_256, DH_ECP_384, ENCR_AES_GCM_16, ENCR_CHACHA20_POLY1305, PRF_HMAC_SHA1,
    PRF_HMAC_SHA2_256, PRF_HMAC_SHA2_384, PRF_HMAC_SHA2_512,
};

use super::rng::Drbg;

pub type SecretBytes = Zeroizing<Vec<u8>>;

/// True if the engine implements this PRF.
pub fn prf_supported(id: u16) -> bool {
    matches!(id, PRF_HMAC_SHA1 | PRF_HMAC_SHA2_256 | PRF_HMAC_SHA2_384 | PRF_HMAC_SHA2_512)
}

/// True if the engine implements this key exchange method.
pub fn dh_supported(id: u16) -> bool {
    matches!(id, DH_CURVE25519 | DH_ECP_256 | DH_ECP_384)
}

/// True if the engine implements this AEAD for SK (IKE) / ESP (the data plane
/// implements the same set).
pub fn aead_supported(id: u16, key_bits: Option<u16>) -> bool {
    match id {
        ENCR_AES_GCM_16 => matches!(key_bits, Some(128) | Some(256)),
        ENCR_CHACHA20_POLY1305 => key_bits.is_none() || key_bits == Some(256),
        _ => false,
    }
}

fn prf_out_len(alg: u16) -> usize {
    match alg {
        PRF_HMAC_SHA1 => 20,
        PRF_HMAC_SHA2_384 => 48,
        PRF_HMAC_SHA2_512 => 64,
        _ => 32,
    }
}

macro_rules! hmac_with {
    ($h:ty, $key:expr, $parts:expr) => {{
        let mut m = <Hmac<$h> as Mac>::new_from_slice($key).expect("HMAC takes any key length");
        for p in $parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }};
}

/// prf(key, concat(parts)).
pub fn prf(alg: u16, key: &[u8], parts: &[&[u8]]) -> SecretBytes {
    Zeroizing::new(match alg {
        PRF_HMAC_SHA1 => hmac_with!(Sha1, key, parts),
        PRF_HMAC_SHA2_384 => hmac_with!(Sha384, key, parts),
        PRF_HMAC_SHA2_512 => hmac_with!(Sha512, key, parts),
        _ => hmac_with!(Sha256, key, parts),
    })
}

/// prf+ (RFC 7296 2.13).
pub fn prf_plus(alg: u16, key: &[u8], seed: &[u8], len: usize) -> SecretBytes {
    let mut out = Zeroizing::new(Vec::with_capacity(len + 64));
    let mut t: SecretBytes = Zeroizing::new(Vec::new());
    let mut i: u8 = 1;
    while out.len() < len {
        t = prf(alg, key, &[&t, seed, &[i]]);
        out.extend_from_slice(&t);
        i = i.wrapping_add(1);
    }
    out.truncate(len);
    out
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
    fn encr_keymat_len(&self) -> usize {
        // key + 4-byte salt (RFC 5282 / 7634).
        match self.encr {
            ENCR_CHACHA20_POLY1305 => 36,
            _ => self.key_bits as usize / 8 + 4,
        }
    }
}

/// SK_* keys of an IKE SA. Zeroized on drop; never printed.
pub struct IkeKeys {
    pub suite: IkeSuite,
    pub sk_d: SecretBytes,
    pub sk_ei: SecretBytes,
    pub sk_er: SecretBytes,
    pub sk_pi: SecretBytes,
    pub sk_pr: SecretBytes,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IkeKeys({:?}, <redacted>)", self.suite)
    }
}

/// SKEYSEED and SK_* from the DH secret (initial exchange: prf(Ni|Nr, g^ir);
/// IKE rekey: prf(SK_d old, g^ir | Ni | Nr), with the old SA's PRF).
pub fn derive_ike_keys(
    suite: IkeSuite,
    skeyseed: &[u8],
    ni: &[u8],
    nr: &[u8],
    spi_i: u64,
    spi_r: u64,
) -> IkeKeys {
    let ekl = suite.encr_keymat_len();
    let pl = prf_out_len(suite.prf);
    let mut seed = Vec::with_capacity(ni.len() + nr.len() + 16);
    seed.extend_from_slice(ni);
    seed.extend_from_slice(nr);
    seed.extend_from_slice(&spi_i.to_be_bytes());
    seed.extend_from_slice(&spi_r.to_be_bytes());
    // SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr; no SK_a* for AEAD.
    let km = prf_plus(suite.prf, skeyseed, &seed, pl + 2 * ekl + 2 * pl);
    let mut o = 0;
    let mut take = |n: usize| {
        let v = Zeroizing::new(km[o..o + n].to_vec());
        o += n;
        v
    };
    let sk_d = take(pl);
    let sk_ei = take(ekl);
    let sk_er = take(ekl);
    let sk_pi = take(pl);
    let sk_pr = take(pl);
    IkeKeys { suite, sk_d, sk_ei, sk_er, sk_pi, sk_pr }
}

/// SKEYSEED of the initial exchange.
pub fn skeyseed_initial(prf_alg: u16, ni: &[u8], nr: &[u8], g_ir: &[u8]) -> SecretBytes {
    let mut key = Zeroizing::new(Vec::with_capacity(ni.len() + nr.len()));
    key.extend_from_slice(ni);
    key.extend_from_slice(nr);
    prf(prf_alg, &key, &[g_ir])
}

/// SKEYSEED of an IKE SA rekey (RFC 7296 2.18).
pub fn skeyseed_rekey(old_prf: u16, old_sk_d: &[u8], g_ir: &[u8], ni: &[u8], nr: &[u8]) -> SecretBytes {
    prf(old_prf, old_sk_d, &[g_ir, ni, nr])
}

/// Child SA KEYMAT (RFC 7296 2.17): returns (initiator→responder, responder→initiator).
pub fn child_keymat(
    prf_alg: u16,
    sk_d: &[u8],
    g_ir: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
    each: usize,
) -> (SecretBytes, SecretBytes) {
    let mut seed = Zeroizing::new(Vec::new());
    if let Some(g) = g_ir {
        seed.extend_from_slice(g);
    }
    seed.extend_from_slice(ni);
    seed.extend_from_slice(nr);
    let km = prf_plus(prf_alg, sk_d, &seed, 2 * each);
    (Zeroizing::new(km[..each].to_vec()), Zeroizing::new(km[each..].to_vec()))
}

/// PSK AUTH data (RFC 7296 2.15):
/// prf(prf(PSK, "Key Pad for IKEv2"), RealMessage | Nonce | prf(SK_p, RestOfIDPayload)).
pub fn psk_auth(prf_alg: u16, psk: &[u8], real_message: &[u8], peer_nonce: &[u8], sk_p: &[u8], id_body: &[u8]) -> SecretBytes {
    let maced_id = prf(prf_alg, sk_p, &[id_body]);
    let k = prf(prf_alg, psk, &[b"Key Pad for IKEv2"]);
    prf(prf_alg, &k, &[real_message, peer_nonce, &maced_id])
}

/// Constant-time comparison.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut d = 0u8;
    for (x, y) in a.iter().zip(b) {
        d |= x ^ y;
    }
    d == 0
}

/// NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | port).
pub fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    let mut h = Sha1::new();
    h.update(spi_i.to_be_bytes());
    h.update(spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(addr.port().to_be_bytes());
    h.finalize().to_vec()
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

/// A DH private value.
pub enum DhSecret {
    X25519(x25519_dalek::StaticSecret),
    P256(p256::ecdh::EphemeralSecret),
    P384(p384::ecdh::EphemeralSecret),
}

/// Generate a key pair for `group`; returns the secret and the KE payload data.
pub fn dh_generate(group: u16, rng: &mut Drbg) -> Option<(DhSecret, Vec<u8>)> {
    match group {
        DH_CURVE25519 => {
            let s = x25519_dalek::StaticSecret::from(rng.bytes::<32>());
            let p = x25519_dalek::PublicKey::from(&s);
            Some((DhSecret::X25519(s), p.as_bytes().to_vec()))
        }
        DH_ECP_256 => {
            let s = p256::ecdh::EphemeralSecret::random(rng);
            let p = p256::EncodedPoint::from(s.public_key());
            // RFC 5903: x | y without the 0x04 prefix.
            Some((DhSecret::P256(s), p.as_bytes()[1..].to_vec()))
        }
        DH_ECP_384 => {
            let s = p384::ecdh::EphemeralSecret::random(rng);
            let p = p384::EncodedPoint::from(s.public_key());
            Some((DhSecret::P384(s), p.as_bytes()[1..].to_vec()))
        }
        _ => None,
    }
}

/// The shared secret g^ir, or None for an invalid peer public value.
pub fn dh_compute(secret: &DhSecret, peer: &[u8]) -> Option<SecretBytes> {
    match secret {
        DhSecret::X25519(s) => {
            let p: [u8; 32] = peer.try_into().ok()?;
            let shared = s.diffie_hellman(&x25519_dalek::PublicKey::from(p));
            if !shared.was_contributory() {
                return None;
            }
            Some(Zeroizing::new(shared.as_bytes().to_vec()))
        }
        DhSecret::P256(s) => {
            if peer.len() != 64 {
                return None;
            }
            let mut sec1 = Vec::with_capacity(65);
            sec1.push(4);
            sec1.extend_from_slice(peer);
            let pk = p256::PublicKey::from_sec1_bytes(&sec1).ok()?;
            let shared = s.diffie_hellman(&pk);
            Some(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
        }
        DhSecret::P384(s) => {
            if peer.len() != 96 {
                return None;
            }
            let mut sec1 = Vec::with_capacity(97);
            sec1.push(4);
            sec1.extend_from_slice(peer);
            let pk = p384::PublicKey::from_sec1_bytes(&sec1).ok()?;
            let shared = s.diffie_hellman(&pk);
            Some(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
        }
    }
}

/// Why an encrypted message could not be opened.
#[derive(Debug)]
pub enum OpenError {
    /// Structure or ICV failure: drop silently (RFC 7296 2.21.2).
    Integrity,
    /// Decrypted fine, but the inner payloads are malformed: answer with this notify.
    Inner(DecodeError),
}

const IV_LEN: usize = 8;
const ICV_LEN: usize = 16;

fn aead_seal(encr: u16, key: &[u8], iv: &[u8; 8], aad: &[u8], buf: &mut Vec<u8>) -> Option<()> {
    let (k, salt) = key.split_at(key.len() - 4);
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(salt);
    nonce[4..].copy_from_slice(iv);
    let tag = match encr {
        ENCR_CHACHA20_POLY1305 => {
            let c = chacha20poly1305::ChaCha20Poly1305::new_from_slice(k).ok()?;
            c.encrypt_in_place_detached((&nonce).into(), aad, buf).ok()?.to_vec()
        }
        _ if k.len() == 16 => {
            let c = aes_gcm::Aes128Gcm::new_from_slice(k).ok()?;
            c.encrypt_in_place_detached((&nonce).into(), aad, buf).ok()?.to_vec()
        }
        _ => {
            let c = aes_gcm::Aes256Gcm::new_from_slice(k).ok()?;
            c.encrypt_in_place_detached((&nonce).into(), aad, buf).ok()?.to_vec()
        }
    };
    buf.extend_from_slice(&tag);
    Some(())
}

fn aead_open(encr: u16, key: &[u8], iv: &[u8], aad: &[u8], buf: &mut Vec<u8>, tag: &[u8]) -> Option<()> {
    if key.len() < 5 {
        return None;
    }
    let (k, salt) = key.split_at(key.len() - 4);
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(salt);
    nonce[4..].copy_from_slice(iv);
    match encr {
        ENCR_CHACHA20_POLY1305 => {
            let c = chacha20poly1305::ChaCha20Poly1305::new_from_slice(k).ok()?;
            c.decrypt_in_place_detached((&nonce).into(), aad, buf, tag.into()).ok()
        }
        _ if k.len() == 16 => {
            let c = aes_gcm::Aes128Gcm::new_from_slice(k).ok()?;
            c.decrypt_in_place_detached((&nonce).into(), aad, buf, tag.into()).ok()
        }
        _ => {
            let c = aes_gcm::Aes256Gcm::new_from_slice(k).ok()?;
            c.decrypt_in_place_detached((&nonce).into(), aad, buf, tag.into()).ok()
        }
    }
}

/// Build an encrypted message: header | SK { payloads }.
/// `from_initiator` selects SK_ei (original initiator sending) or SK_er.
pub fn seal_message(header: &Header, payloads: &[Payload], keys: &IkeKeys, from_initiator: bool, rng: &mut Drbg) -> Option<Vec<u8>> {
    let mut inner = Vec::with_capacity(256);
    let first = encode_chain(payloads, &mut inner).ok()?;
    inner.push(0); // pad length 0 (AEAD needs no padding)
    let iv: [u8; 8] = rng.bytes();
    let sk_len = 4 + IV_LEN + inner.len() + ICV_LEN;
    let total = Header::LEN + sk_len;
    let mut out = Vec::with_capacity(total);
    header.encode_into(PayloadType::SK, u32::try_from(total).ok()?, &mut out);
    out.push(first.0);
    out.push(0);
    out.extend_from_slice(&u16::try_from(sk_len).ok()?.to_be_bytes());
    let aad = out.clone();
    out.extend_from_slice(&iv);
    let key = if from_initiator { &keys.sk_ei } else { &keys.sk_er };
    aead_seal(keys.suite.encr, key, &iv, &aad, &mut inner)?;
    out.extend_from_slice(&inner);
    Some(out)
}

/// Open an encrypted message (already decoded to find the SK payload).
pub fn open_message(bytes: &[u8], msg: &Message, keys: &IkeKeys) -> Result<Vec<Payload>, OpenError> {
    let sk: &SkPayload = match msg.payloads.last() {
        Some(Payload::Sk(sk)) => sk,
        _ => return Err(OpenError::Integrity),
    };
    if sk.data.len() < IV_LEN + ICV_LEN + 1 {
        return Err(OpenError::Integrity);
    }
    let sk_start = bytes.len() - sk.data.len() - 4;
    let aad = &bytes[..sk_start + 4];
    let iv = &sk.data[..IV_LEN];
    let (ct, tag) = sk.data[IV_LEN..].split_at(sk.data.len() - IV_LEN - ICV_LEN);
    let mut buf = ct.to_vec();
    let from_initiator = msg.header.flags.initiator();
    let key = if from_initiator { &keys.sk_ei } else { &keys.sk_er };
    aead_open(keys.suite.encr, key, iv, aad, &mut buf, tag).ok_or(OpenError::Integrity)?;
    let pad = *buf.last().ok_or(OpenError::Integrity)? as usize;
    if pad + 1 > buf.len() {
        return Err(OpenError::Integrity);
    }
    let plain = &buf[..buf.len() - 1 - pad];
    let r = decode_chain(sk.next_payload, plain).map_err(OpenError::Inner);
    zeroize::Zeroize::zeroize(&mut buf);
    r
}

/// Header flags helper.
pub fn flags(initiator: bool, response: bool) -> Flags {
    Flags::new(initiator, response)
}

/// The KE payload data of a DH secret.
pub fn dh_public(secret: &DhSecret) -> Vec<u8> {
    match secret {
        DhSecret::X25519(s) => x25519_dalek::PublicKey::from(s).as_bytes().to_vec(),
        DhSecret::P256(s) => p256::EncodedPoint::from(s.public_key()).as_bytes()[1..].to_vec(),
        DhSecret::P384(s) => p384::EncodedPoint::from(s.public_key()).as_bytes()[1..].to_vec(),
    }
}
