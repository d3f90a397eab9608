//! AUTH payload computation (RFC 7296 2.15) and NAT detection (2.23).

use super::prf::{prf, PrfAlg};
use super::SecretBytes;
use sha1::{Digest, Sha1};
use std::net::IpAddr;

/// The key pad string of RFC 7296 2.15.
pub const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// The octets a side signs / MACs (RFC 7296 2.15):
///
/// `<SignedOctets> = <RealMessage> | <NonceData of the peer> | prf(SK_p, <RestOfIDPayload>)`
///
/// * initiator: RealMessage1 (its IKE_SA_INIT request), Nr, `sk_p` = SK_pi, IDi body;
/// * responder: RealMessage2 (its IKE_SA_INIT response), Ni, `sk_p` = SK_pr, IDr body.
///
/// `id_body` is the ID payload without its generic header (ID type, 3
/// reserved bytes, data), e.g. [`crate::codec::IdPayload::body_bytes`].
pub fn signed_octets(alg: PrfAlg, real_message: &[u8], peer_nonce: &[u8], sk_p: &[u8], id_body: &[u8]) -> Vec<u8> {
    let maced_id = prf(alg, sk_p, &[id_body]);
    let mut v = Vec::with_capacity(real_message.len() + peer_nonce.len() + maced_id.len());
    v.extend_from_slice(real_message);
    v.extend_from_slice(peer_nonce);
    v.extend_from_slice(maced_id.expose());
    v
}

/// Shared-key AUTH data (RFC 7296 2.15):
/// `AUTH = prf( prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)`.
pub fn psk_auth(alg: PrfAlg, psk: &[u8], signed_octets: &[u8]) -> SecretBytes {
    let k = prf(alg, psk, &[KEY_PAD]);
    prf(alg, k.expose(), &[signed_octets])
}

/// Constant-time comparison of AUTH values.
pub fn auth_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle_eq::ct_eq;
    ct_eq(a, b)
}

mod subtle_eq {
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let mut d = 0u8;
        for (x, y) in a.iter().zip(b) {
            d |= x ^ y;
        }
        core::hint::black_box(d) == 0
    }
}

/// NAT_DETECTION_*_IP notification data (RFC 7296 2.23):
/// `SHA1(SPIi | SPIr | IP address | port)`.
pub fn nat_detection_hash(spi_i: u64, spi_r: u64, ip: IpAddr, port: u16) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(spi_i.to_be_bytes());
    h.update(spi_r.to_be_bytes());
    match ip {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
    h.update(port.to_be_bytes());
    h.finalize().into()
}
