//! Known answers for the AUTH payload data (RFC 7296 2.15, RFC 7427 3,
//! RFC 8420): fixed inputs, answers computed outside wisp — the MAC of the
//! ID with Python's hmac module, the Ed25519 signature with
//! `openssl pkeyutl -sign -rawin` over those octets with
//! tests/data/keys/ed25519-pkcs8.pem (Ed25519 is deterministic, so the whole
//! AUTH data is a known answer), the PSK AUTH with Python's hmac.

use wisp_ike::crypto::sig::{self, PrivateKey, SignPrefs};
use wisp_ike::crypto::{psk_auth, signed_octets, PrfAlg};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// RealMessage = 00..3f, peer nonce = a0..bf, SK_p = 32 × 0x11, ID = ID_FQDN "a.example".
fn inputs() -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let real: Vec<u8> = (0u8..64).collect();
    let nonce: Vec<u8> = (0xa0u8..0xc0).collect();
    let skp = vec![0x11u8; 32];
    let mut id = vec![2, 0, 0, 0];
    id.extend_from_slice(b"a.example");
    (real, nonce, skp, id)
}

const MACED_ID: &str = "97558c0c0085c97b2dac206f4e1c0e47434bc2212d7e3aa34743b2001286d3f4";
const ED25519_SIG: &str =
    "b33d0f8a566c83f5a01641de4f6acd48852aad196fa8ce1d87369a41497696c5c592d4fa82d712022f8e01ee1d953216cd8d4cbc3d548962d8021ab0d2397e06";
const PSK_AUTH: &str = "2ec8f6a90e07c2824e02dd8fa603933b95d882f16c636f0caa086d6778852dfa";

#[test]
fn signed_octets_are_message_nonce_and_maced_id() {
    let (real, nonce, skp, id) = inputs();
    let o = signed_octets(PrfAlg::HmacSha256, &real, &nonce, &skp, &id);
    let mut want = real.clone();
    want.extend_from_slice(&nonce);
    want.extend_from_slice(&unhex(MACED_ID));
    assert_eq!(o, want);
}

#[test]
fn ed25519_auth_data_is_the_known_answer() {
    let (real, nonce, skp, id) = inputs();
    let octets = signed_octets(PrfAlg::HmacSha256, &real, &nonce, &skp, &id);
    let key = PrivateKey::from_pem_or_der(include_bytes!("data/keys/ed25519-pkcs8.pem")).unwrap();
    // The peer announced Identity (RFC 8420): method 14, `len | AlgorithmIdentifier | signature`.
    let (method, data) = sig::sign_auth(&key, &octets, &SignPrefs { peer_hashes: Some(&[sig::HASH_IDENTITY]), rsa_pss: false }).unwrap();
    assert_eq!(method, sig::AUTH_DIGITAL_SIGNATURE);
    let mut want = vec![7u8, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70];
    want.extend_from_slice(&unhex(ED25519_SIG));
    assert_eq!(data, want);
    // And it verifies with the key's SPKI; one flipped octet does not.
    sig::verify_auth(key.public_key_spki(), method, &data, &octets).unwrap();
    let mut bad = octets.clone();
    bad[70] ^= 1;
    assert!(sig::verify_auth(key.public_key_spki(), method, &data, &bad).is_err());
}

#[test]
fn psk_auth_is_the_known_answer() {
    let (real, nonce, skp, id) = inputs();
    let octets = signed_octets(PrfAlg::HmacSha256, &real, &nonce, &skp, &id);
    assert_eq!(psk_auth(PrfAlg::HmacSha256, b"kat-pre-shared-key", &octets).expose(), unhex(PSK_AUTH).as_slice());
}
