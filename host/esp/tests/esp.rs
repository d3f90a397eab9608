//! ESP seal/open behaviour: layout, known answers, tampering, replay,
//! truncation, ESN rollover, limits, dummies.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::Aes128Gcm;
use proptest::prelude::*;
use wisp_esp::*;

const ALGS: [Aead; 3] = [Aead::AesGcm128, Aead::AesGcm256, Aead::ChaCha20Poly1305];

fn keymat(alg: Aead, seed: u8) -> Keymat {
    let v: Vec<u8> = (0..alg.keymat_len()).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
    Keymat::new(&v)
}

fn pair(alg: Aead, esn: bool, limits: Limits) -> (OutboundSa, InboundSa) {
    let km = keymat(alg, 1);
    (OutboundSa::new(0xc0ffee01, alg, &km, esn, limits).unwrap(), InboundSa::new(0xc0ffee01, alg, &km, esn, limits).unwrap())
}

fn seal_vec(out: &OutboundSa, inner: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; OutboundSa::sealed_len(inner.len())];
    let s = out.seal(inner, NEXT_HEADER_IPV4, &mut b).unwrap();
    b.truncate(s.len);
    b
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn roundtrip_all_sizes_and_transforms() {
    for alg in ALGS {
        for esn in [false, true] {
            let (out, inb) = pair(alg, esn, Limits::default());
            for len in (0..=80).chain([576, 1400, 1500, 9000]) {
                let inner: Vec<u8> = (0..len).map(|i| (i * 13) as u8).collect();
                let mut pkt = seal_vec(&out, &inner);
                assert_eq!(pkt.len(), OutboundSa::sealed_len(len));
                // Ciphertext (payload + padding + trailer) ends on 4 bytes.
                assert_eq!((pkt.len() - PAYLOAD_OFFSET - ICV_LEN) % 4, 0);
                assert_eq!(classify(&pkt), Classified::Esp(0xc0ffee01));
                let o = inb.open(&mut pkt).unwrap();
                assert_eq!(&pkt[o.range.clone()], &inner[..], "{alg:?} esn={esn} len={len}");
                assert_eq!(o.next_header, NEXT_HEADER_IPV4);
            }
            let c = inb.counters().snapshot();
            assert_eq!(c.packets, 85);
            assert_eq!(c.total_drops(), 0);
            assert_eq!(out.counters().snapshot().packets, 85);
            assert_eq!(out.counters().snapshot().bytes, inb.counters().snapshot().bytes);
        }
    }
}

/// The packet layout is exactly RFC 4303 + RFC 4106: SPI, seq, IV = seq,
/// ciphertext of payload || 1,2,.. padding || pad len || next header, ICV;
/// nonce = salt || IV; AAD = SPI || seq (|| seq_hi before seq_lo with ESN).
/// Rebuilt here with the bare AEAD crate.
#[test]
fn layout_matches_independent_construction() {
    let km = hex("000102030405060708090a0b0c0d0e0f cafebabe");
    for esn in [false, true] {
        let start = if esn { (7u64 << 32) | 0xffff_fffe } else { 0x1234 };
        let out = OutboundSa::new(0xdeadbeef, Aead::AesGcm128, &Keymat::new(&km), esn, Limits::default()).unwrap().with_next_seq(start);
        let inner = b"hello, tunnel!!".to_vec(); // 15 bytes -> 3 bytes padding
        let mut pkt = vec![0u8; 100];
        let s = out.seal(&inner, NEXT_HEADER_IPV6, &mut pkt).unwrap();
        assert_eq!(s.seq, start);
        pkt.truncate(s.len);

        let mut expect = Vec::new();
        expect.extend_from_slice(&0xdeadbeefu32.to_be_bytes());
        expect.extend_from_slice(&(start as u32).to_be_bytes());
        expect.extend_from_slice(&start.to_be_bytes());
        let mut ct = inner.clone();
        ct.extend_from_slice(&[1, 2, 3, 3, 41]);
        let mut nonce = hex("cafebabe");
        nonce.extend_from_slice(&start.to_be_bytes());
        let mut aad = 0xdeadbeefu32.to_be_bytes().to_vec();
        if esn {
            aad.extend_from_slice(&((start >> 32) as u32).to_be_bytes());
        }
        aad.extend_from_slice(&(start as u32).to_be_bytes());
        let c = Aes128Gcm::new_from_slice(&km[..16]).unwrap();
        let nonce = aes_gcm::Nonce::try_from(nonce.as_slice()).unwrap();
        let tag = c.encrypt_inout_detached(&nonce, &aad, ct.as_mut_slice().into()).unwrap();
        expect.extend_from_slice(&ct);
        expect.extend_from_slice(&tag);
        assert_eq!(pkt, expect, "esn={esn}");
    }
}

/// RFC 8439 §2.8.2 AEAD vector read as an ESP packet: its 12-byte AAD is
/// SPI 50515253 || seq_hi c0c1c2c3 || seq_lo c4c5c6c7 (the ESN form of
/// RFC 7634 §2.1), its nonce is salt 07000000 || IV 4041424344454647.
/// `open` must verify the ICV (so: not an auth failure) and decrypt the
/// RFC plaintext in place; the plaintext is not an ESP payload (its last
/// bytes "t." give pad length 0x74), so the trailer check reports Malformed.
#[test]
fn rfc8439_vector_through_esp_open() {
    let key = hex("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let mut km = key.clone();
    km.extend_from_slice(&hex("07000000"));
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let ct = hex("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6
         3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36
         92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc
         3ff4def08e4b7a9de576d26586cec64b6116");
    let tag = hex("1ae10b594f09e26a7e902ecbd0600691");
    let build = || {
        let mut p = hex("50515253 c4c5c6c7 4041424344454647");
        p.extend_from_slice(&ct);
        p.extend_from_slice(&tag);
        p
    };
    let inb = InboundSa::new(0x50515253, Aead::ChaCha20Poly1305, &Keymat::new(&km), true, Limits::default())
        .unwrap()
        .with_replay_top(0xc0c1c2c3_c4c5c600);
    let mut p = build();
    assert_eq!(inb.open(&mut p), Err(OpenError::Malformed));
    assert_eq!(&p[PAYLOAD_OFFSET..PAYLOAD_OFFSET + plaintext.len()], &plaintext[..]);
    let c = inb.counters().snapshot();
    assert_eq!((c.drop_malformed, c.drop_auth), (1, 0));
    // The same bytes with the wrong high sequence half fail the ICV.
    let inb2 = InboundSa::new(0x50515253, Aead::ChaCha20Poly1305, &Keymat::new(&km), true, Limits::default())
        .unwrap()
        .with_replay_top(0xc0c1c2c4_00000010);
    let mut p = build();
    assert_eq!(inb2.open(&mut p), Err(OpenError::Auth));
    // And without ESN (8-byte AAD) too.
    let inb3 = InboundSa::new(0x50515253, Aead::ChaCha20Poly1305, &Keymat::new(&km), false, Limits::default()).unwrap();
    let mut p = build();
    assert_eq!(inb3.open(&mut p), Err(OpenError::Auth));
}

#[test]
fn every_single_byte_tamper_is_rejected() {
    for alg in ALGS {
        let (out, inb) = pair(alg, true, Limits::default());
        let pkt = seal_vec(&out, &[7u8; 61]);
        for i in 0..pkt.len() {
            for bit in [0x01u8, 0x80] {
                let mut p = pkt.clone();
                p[i] ^= bit;
                let e = inb.open(&mut p).unwrap_err();
                let expected = if i < 4 {
                    OpenError::Malformed
                } else if i == 7 && bit == 1 {
                    OpenError::Replay(0) // sequence number 1 -> 0, never valid
                } else {
                    OpenError::Auth
                };
                assert_eq!(e, expected, "{alg:?} byte {i}");
            }
        }
        let c = inb.counters().snapshot();
        assert_eq!(c.drop_malformed, 8);
        assert_eq!(c.drop_auth, 2 * (pkt.len() as u64 - 4) - 1);
        assert_eq!(c.drop_replay, 1);
        assert_eq!(c.packets, 0);
        // The untouched packet still opens: failures left the window alone.
        let mut p = pkt.clone();
        assert!(inb.open(&mut p).is_ok());
    }
}

#[test]
fn wrong_key_fails_auth() {
    let (out, _) = pair(Aead::AesGcm256, false, Limits::default());
    let inb = InboundSa::new(0xc0ffee01, Aead::AesGcm256, &keymat(Aead::AesGcm256, 2), false, Limits::default()).unwrap();
    let mut p = seal_vec(&out, b"x");
    assert_eq!(inb.open(&mut p), Err(OpenError::Auth));
}

#[test]
fn replay_and_window() {
    replay_and_window_esn(false);
    replay_and_window_esn(true);
}

fn replay_and_window_esn(esn: bool) {
    let (out, inb) = pair(Aead::AesGcm128, esn, Limits::default());
    let pkts: Vec<Vec<u8>> = (0..3000).map(|i| seal_vec(&out, &[i as u8; 20])).collect();
    // Deliver 2999 first, then everything else in reverse.
    let mut p = pkts[2999].clone();
    assert!(inb.open(&mut p).is_ok());
    let mut p = pkts[2999].clone();
    assert_eq!(inb.open(&mut p), Err(OpenError::Replay(3000)));
    let mut accepted = 1u64;
    for i in (0..2999).rev() {
        let mut p = pkts[i].clone();
        let seq = i as u64 + 1;
        let r = inb.open(&mut p);
        if 3000 - seq < REPLAY_WINDOW {
            assert!(r.is_ok(), "seq {seq} inside the window");
            accepted += 1;
        } else if esn {
            // RFC 4303 A2: left of the window with ESN is read as the next
            // 2^32 block, and then fails the ICV.
            assert_eq!(r, Err(OpenError::Auth), "seq {seq} left of the window");
        } else {
            assert_eq!(r, Err(OpenError::Replay(seq)), "seq {seq} left of the window");
        }
    }
    const { assert!(REPLAY_WINDOW >= 1024) };
    assert_eq!(accepted, REPLAY_WINDOW);
    let c = inb.counters().snapshot();
    assert_eq!(c.packets, accepted);
    let left = 3000 - accepted;
    if esn {
        assert_eq!((c.drop_replay, c.drop_auth), (1, left));
    } else {
        assert_eq!((c.drop_replay, c.drop_auth), (1 + left, 0));
    }
    // Replays of accepted ones are still refused.
    let mut p = pkts[2500].clone();
    assert!(matches!(inb.open(&mut p), Err(OpenError::Replay(2501))));
}

#[test]
fn truncated_packets_never_open() {
    for alg in ALGS {
        let (out, inb) = pair(alg, false, Limits::default());
        let pkt = seal_vec(&out, &[1u8; 100]);
        for n in 0..pkt.len() {
            let mut p = pkt[..n].to_vec();
            let e = inb.open(&mut p).unwrap_err();
            assert!(matches!(e, OpenError::Malformed | OpenError::Auth), "{n}: {e:?}");
        }
        assert_eq!(inb.counters().snapshot().total_drops(), pkt.len() as u64);
    }
}

#[test]
fn dummy_packets_dropped_and_counted() {
    let (out, inb) = pair(Aead::ChaCha20Poly1305, false, Limits::default());
    let mut b = vec![0u8; 64];
    let s = out.seal(&[0u8; 10], NEXT_HEADER_NONE, &mut b).unwrap();
    assert_eq!(inb.open(&mut b[..s.len]), Err(OpenError::Dummy));
    let c = inb.counters().snapshot();
    assert_eq!((c.dummy, c.packets, c.total_drops()), (1, 0, 0));
    // A dummy still consumes its sequence number.
    assert_eq!(inb.highest_seq(), 1);
}

#[test]
fn bad_padding_is_malformed() {
    // Seal a payload whose trailer we then forge via a manual construction
    // with the bare crate: padding bytes must be 1, 2, 3...
    let km = hex("000102030405060708090a0b0c0d0e0f 01020304");
    let c = Aes128Gcm::new_from_slice(&km[..16]).unwrap();
    let mut p = hex("00000042 00000001 0000000000000001");
    let mut ct = vec![0x45u8; 10];
    ct.extend_from_slice(&[1, 9, 2, 4]); // padding 1, 9 instead of 1, 2
    let nonce = hex("01020304 0000000000000001");
    let nonce = aes_gcm::Nonce::try_from(nonce.as_slice()).unwrap();
    let tag = c.encrypt_inout_detached(&nonce, &hex("00000042 00000001"), ct.as_mut_slice().into()).unwrap();
    p.extend_from_slice(&ct);
    p.extend_from_slice(&tag);
    let inb = InboundSa::new(0x42, Aead::AesGcm128, &Keymat::new(&km), false, Limits::default()).unwrap();
    assert_eq!(inb.open(&mut p), Err(OpenError::Malformed));
}

#[test]
fn esn_rollover() {
    for alg in ALGS {
        let start = (1u64 << 32) - 5;
        let (out, inb) = pair(alg, true, Limits::default());
        let out = out.with_next_seq(start);
        let mut pkts = Vec::new();
        for i in 0..10u64 {
            let p = seal_vec(&out, &[i as u8; 33]);
            // Only the low 32 bits are on the wire.
            assert_eq!(&p[4..8], &((start + i) as u32).to_be_bytes());
            pkts.push(p);
        }
        // Deliver across the boundary, with one late packet from before it.
        for i in [0usize, 1, 2, 5, 6, 3, 7, 9, 4, 8] {
            let mut p = pkts[i].clone();
            let o = inb.open(&mut p).unwrap_or_else(|e| panic!("{alg:?} pkt {i}: {e:?}"));
            assert_eq!(o.seq, start + i as u64);
        }
        assert_eq!(inb.highest_seq(), start + 9);
        let mut p = pkts[6].clone();
        assert!(matches!(inb.open(&mut p), Err(OpenError::Replay(_))));
        // A receiver without ESN cannot open the high-block packets.
        let (_, no_esn) = pair(alg, false, Limits::default());
        let mut p = pkts[7].clone();
        assert_eq!(no_esn.open(&mut p), Err(OpenError::Auth));
    }
}

#[test]
fn sequence_exhaustion_without_esn_never_wraps() {
    let limits = Limits { seq_soft_margin: 4, ..Limits::default() };
    let (out, _) = pair(Aead::AesGcm128, false, limits);
    let out = out.with_next_seq(u32::MAX as u64 - 6);
    let mut b = vec![0u8; 128];
    let mut events = Vec::new();
    for _ in 0..7 {
        let s = out.seal(b"abc", 4, &mut b).unwrap();
        events.extend(s.event);
    }
    assert_eq!(events, vec![LimitEvent::Soft(LimitKind::Sequence)]);
    assert_eq!(out.next_seq(), u32::MAX as u64 + 1);
    assert_eq!(out.seal(b"abc", 4, &mut b), Err(SealError::Expired { kind: LimitKind::Sequence, first: true }));
    assert_eq!(out.seal(b"abc", 4, &mut b), Err(SealError::Expired { kind: LimitKind::Sequence, first: false }));
    assert_eq!(out.next_seq(), u32::MAX as u64 + 1, "never wraps");
    assert_eq!(out.counters().snapshot().packets, 7);
}

#[test]
fn sequence_exhaustion_with_esn() {
    let (out, _) = pair(Aead::ChaCha20Poly1305, true, Limits::default());
    let out = out.with_next_seq(u64::MAX - 3);
    let mut b = vec![0u8; 128];
    let first = out.seal(b"abc", 4, &mut b).unwrap();
    assert_eq!(first.event, Some(LimitEvent::Soft(LimitKind::Sequence)));
    out.seal(b"abc", 4, &mut b).unwrap();
    out.seal(b"abc", 4, &mut b).unwrap();
    assert!(matches!(out.seal(b"abc", 4, &mut b), Err(SealError::Expired { kind: LimitKind::Sequence, .. })));
}

#[test]
fn packet_and_byte_limits() {
    let limits = Limits { soft_packets: 3, hard_packets: 5, ..Limits::default() };
    let (out, inb) = pair(Aead::AesGcm128, false, limits);
    let mut events = Vec::new();
    let mut pkts = Vec::new();
    let mut b = vec![0u8; 128];
    for _ in 0..5 {
        let s = out.seal(b"abcd", 4, &mut b).unwrap();
        events.extend(s.event);
        pkts.push(b[..s.len].to_vec());
    }
    assert_eq!(events, vec![LimitEvent::Soft(LimitKind::Packets)]);
    assert_eq!(out.seal(b"abcd", 4, &mut b), Err(SealError::Expired { kind: LimitKind::Packets, first: true }));
    let mut ev_in = Vec::new();
    for p in &pkts {
        ev_in.extend(inb.open(&mut p.clone()).unwrap().event);
    }
    assert_eq!(ev_in, vec![LimitEvent::Soft(LimitKind::Packets)]);
    let extra =
        OutboundSa::new(0xc0ffee01, Aead::AesGcm128, &keymat(Aead::AesGcm128, 1), false, Limits::default()).unwrap().with_next_seq(100);
    let mut p = seal_vec(&extra, b"abcd");
    assert_eq!(inb.open(&mut p), Err(OpenError::Expired { kind: LimitKind::Packets, first: true }));
    assert_eq!(inb.counters().snapshot().drop_expired, 1);

    let limits = Limits { soft_bytes: 100, hard_bytes: 150, ..Limits::default() };
    let (out, _) = pair(Aead::AesGcm128, false, limits);
    let mut b = vec![0u8; 256];
    assert_eq!(out.seal(&[0; 60], 4, &mut b).unwrap().event, None);
    assert_eq!(out.seal(&[0; 60], 4, &mut b).unwrap().event, Some(LimitEvent::Soft(LimitKind::Bytes)));
    assert!(matches!(out.seal(&[0; 60], 4, &mut b), Err(SealError::Expired { kind: LimitKind::Bytes, .. })));
    assert!(out.seal(&[0; 30], 4, &mut b).is_ok(), "exactly up to the hard byte limit");
}

#[test]
fn buffer_too_small_and_key_length() {
    let (out, _) = pair(Aead::AesGcm128, false, Limits::default());
    let mut b = vec![0u8; 20];
    assert!(matches!(out.seal(&[0; 10], 4, &mut b), Err(SealError::BufferTooSmall { .. })));
    let e = OutboundSa::new(1, Aead::AesGcm256, &Keymat::new(&[0; 20]), false, Limits::default()).unwrap_err();
    assert_eq!((e.expected, e.got), (36, 20));
}

#[test]
fn keys_are_not_debug_printed() {
    let km = Keymat::new(&[0xAB; 20]);
    let s = format!("{km:?}");
    assert!(!s.contains("171") && !s.to_lowercase().contains("ab, ab"), "{s}");
    let (out, inb) = pair(Aead::AesGcm128, false, Limits::default());
    let d = format!("{out:?} {inb:?}");
    assert!(d.contains("c0ffee01"));
}

#[test]
fn fuzz_body_on_random_inputs() {
    // Deterministic xorshift inputs; the cargo-fuzz target runs the same body.
    let mut x = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let len = (next() % 300) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        fuzz_open(&data);
    }
    // Unmutated inputs (selector byte only) must round-trip.
    for sel in 0..=255u8 {
        fuzz_open(&[sel]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn open_never_panics_on_arbitrary_bytes(mut data in proptest::collection::vec(any::<u8>(), 0..200),
                                            esn in any::<bool>(), top in any::<u64>()) {
        let km = keymat(Aead::AesGcm128, 3);
        let inb = InboundSa::new(0xc0ffee01, Aead::AesGcm128, &km, esn, Limits::default()).unwrap()
            .with_replay_top(top);
        if data.len() >= 4 { data[..4].copy_from_slice(&0xc0ffee01u32.to_be_bytes()); }
        prop_assert!(inb.open(&mut data).is_err());
        let _ = classify(&data);
    }

    #[test]
    fn open_never_panics_on_mutated_packets(len in 0usize..300, flips in proptest::collection::vec((any::<u16>(), 1u8..), 1..4),
                                            cut in any::<u16>(), alg in 0usize..3) {
        let (out, inb) = pair(ALGS[alg], true, Limits::default());
        let mut p = seal_vec(&out, &vec![9u8; len]);
        for (pos, x) in flips { let n = p.len(); p[pos as usize % n] ^= x; }
        let n = cut as usize % (p.len() + 1);
        p.truncate(n);
        prop_assert!(inb.open(&mut p).is_err());
    }
}
