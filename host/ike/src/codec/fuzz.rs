//! Fuzz target bodies, shared by the cargo-fuzz targets in `host/ike/fuzz/`
//! and by the stable test `tests/fuzz_bodies.rs` (so CI exercises them
//! without a nightly toolchain).
//!
//! Each function accepts arbitrary bytes and panics only on a real bug:
//! a decoder panic, or a violated round-trip invariant.

use super::sk::{decrypt_fragment, decrypt_message, encrypt_message, SkError};
use super::{decode_chain, Header, Message, PayloadType};
use crate::crypto::{EncrAlg, SkCipher};

/// Decode arbitrary bytes as an IKE message; if that succeeds, the message
/// must re-encode to bytes that decode to the same message.
pub fn decode(data: &[u8]) {
    let _ = Header::decode(data);
    if let Ok(m) = Message::decode(data) {
        let again = match m.encode() {
            Ok(b) => b,
            Err(e) => panic!("decoded message does not re-encode: {e}"),
        };
        match Message::decode(&again) {
            Ok(m2) => assert_eq!(m2, m, "encode/decode round trip changed the message"),
            Err(e) => panic!("re-encoded message does not decode: {e}"),
        }
    }
    // also parse the bytes as a bare payload chain with a few start types
    if let Some((&first, rest)) = data.split_first() {
        let _ = decode_chain(PayloadType(first), rest);
    }
}

fn over_budget(e: &super::DecodeError) -> bool {
    matches!(e, super::DecodeError::TooMany("payloads") | super::DecodeError::OverBudget(_))
}

fn fixed_cipher(selector: u8) -> SkCipher {
    let alg = match selector % 3 {
        0 => EncrAlg::AesGcm16_128,
        1 => EncrAlg::AesGcm16_256,
        _ => EncrAlg::ChaCha20Poly1305,
    };
    let km: Vec<u8> = (0..alg.keymat_len() as u8).collect();
    match SkCipher::new(alg, &km) {
        Ok(c) => c,
        Err(e) => panic!("fixed key material rejected: {e}"),
    }
}

/// Decrypt-then-decode:
///
/// 1. arbitrary bytes through [`decrypt_message`] / [`decrypt_fragment`] with
///    a fixed key (must fail cleanly);
/// 2. the bytes (after a selector byte and a next-payload byte) used as the
///    *plaintext* of a correctly authenticated SK payload, so the inner
///    decoder and padding handling see attacker-chosen data behind a valid
///    ICV; the result must equal decoding the same chain directly;
/// 3. any inner chain that decodes is re-encrypted and must decrypt to the
///    same payloads.
pub fn decrypt_decode(data: &[u8]) {
    let sel = data.first().copied().unwrap_or(0);
    let mut c = fixed_cipher(sel);
    let _ = decrypt_message(data, &c);
    let _ = decrypt_fragment(data, &c);

    if data.len() < 2 {
        return;
    }
    let np = PayloadType(data[1]);
    let plain = &data[2..];
    let sk_len = 4 + 8 + plain.len() + 16;
    if sk_len > u16::MAX as usize {
        return;
    }
    let h = Header::new(0x0102030405060708, 0x1112131415161718, super::ExchangeType::IKE_AUTH, super::Flags(0x08), 1);
    let mut msg = Vec::with_capacity(Header::LEN + sk_len);
    h.encode_into(PayloadType::SK, (Header::LEN + sk_len) as u32, &mut msg);
    msg.extend_from_slice(&[np.0, 0]);
    msg.extend_from_slice(&(sk_len as u16).to_be_bytes());
    let sealed = c.seal(&msg, plain);
    msg.extend_from_slice(&sealed);

    let direct = plain.split_last().and_then(|(&pad, rest)| {
        let pad = pad as usize;
        (pad <= rest.len()).then(|| decode_chain(np, &rest[..rest.len() - pad]))
    });
    match (decrypt_message(&msg, &c), direct) {
        (Ok(m), Some(Ok(p))) => {
            assert_eq!(m.header, h);
            assert_eq!(m.payloads, p, "SK inner payloads differ from direct decode");
            // re-encrypt the decoded payloads (nested SK cannot be re-encrypted)
            if let Ok(b) = encrypt_message(&h, &m.payloads, &mut c) {
                match decrypt_message(&b, &c) {
                    Ok(m2) => assert_eq!(m2.payloads, m.payloads),
                    Err(e) => panic!("re-encrypted message does not open: {e}"),
                }
            }
        }
        // The SK payload and its ciphertext count against the datagram's
        // budget, the direct decode has a budget of its own: where either
        // runs out, the two may differ.
        (Err(SkError::Decode(e)), Some(Err(e2))) if over_budget(&e) || over_budget(&e2) => {}
        (Err(SkError::Decode(e)), Some(Ok(_))) if over_budget(&e) => {}
        (Ok(_), Some(Err(e2))) if over_budget(&e2) => {}
        (Err(SkError::Decode(e)), Some(Err(e2))) => assert_eq!(e, e2),
        (Err(SkError::Crypto(_)), None) => {}
        (r, d) => panic!("decrypt/decode disagree: {r:?} vs {d:?}"),
    }
}
