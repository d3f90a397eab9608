//! wisp-esp: ESP (RFC 4303) in UDP encapsulation (RFC 3948), sans-IO.
//!
//! No I/O, no clock, no threads: the caller hands in buffers and gets back
//! ranges, errors and limit events.
//!
//! * [`classify`] demultiplexes a UDP/4500 payload: NAT keepalive (`0xFF`),
//!   IKE (non-ESP marker, four zero bytes) or ESP (non-zero SPI).
//! * [`OutboundSa::seal`] / [`OutboundSa::seal_in_place`] build an ESP packet
//!   (header, IV = 64-bit sequence number, padding, pad length, next header,
//!   ICV) into a caller buffer; no allocation per packet.
//! * [`InboundSa::open`] checks the anti-replay window (before the ICV),
//!   verifies and decrypts in place, updates the window (after the ICV) and
//!   returns the inner packet's range in the buffer plus its next header.
//! * AEADs: AES-GCM-16 with 128/256-bit keys (RFC 4106) and
//!   ChaCha20-Poly1305 (RFC 7634); the keying material is `key || salt(4)`.
//! * 64-bit sequence numbers with ESN (high 32 bits in the AAD, RFC 4106 §5 /
//!   RFC 7634 §2.1, inferred on receipt per RFC 4303 Appendix A2).
//! * Anti-replay window of [`REPLAY_WINDOW`] packets (RFC 6479 ring of u64
//!   words).
//! * Lifetimes by packets and bytes (soft → [`LimitEvent::Soft`], hard →
//!   refusal) and sequence-number exhaustion (soft → rekey signal, hard →
//!   refusal to seal; the counter never wraps).
//!
//! Both SA types take `&self` (atomics for sequence and counters, an
//! uncontended mutex around the replay bitmap), so a dataplane can share them
//! behind an `Arc` between its packet loops.
#![forbid(unsafe_code)]

mod cipher;
mod counters;
mod replay;
mod sa;

pub use cipher::KeyLengthError;
pub use cipher::{Aead, Keymat};
pub use counters::{CounterSnapshot, Counters, DropReason};
pub use replay::{ReplayWindow, REPLAY_WINDOW};
pub use sa::{
    InboundSa, LimitEvent, LimitKind, Limits, OpenError, Opened, OutboundSa, SealError, Sealed, ESP_HEADER_LEN, ESP_OVERHEAD_MAX, ICV_LEN,
    IV_LEN, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6, NEXT_HEADER_NONE, PAYLOAD_OFFSET,
};

/// The UDP port for IKE and UDP-encapsulated ESP (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;

/// What a UDP/4500 payload is (RFC 3948 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classified {
    /// NAT keepalive: a single `0xFF` byte. Dropped by the receiver.
    Keepalive,
    /// IKE message after the 4-byte non-ESP marker; the value is the offset
    /// where the IKE message starts (always 4).
    Ike,
    /// ESP packet with this (non-zero) SPI.
    Esp(u32),
    /// Anything else (too short for ESP, zero-length, ...).
    Malformed,
}

/// Length of the non-ESP marker in front of IKE messages on port 4500.
pub const NON_ESP_MARKER_LEN: usize = 4;

/// Minimum length of an ESP packet we could ever open: header, IV, the two
/// trailer bytes and the ICV.
pub const ESP_MIN_LEN: usize = ESP_HEADER_LEN + IV_LEN + 2 + ICV_LEN;

/// Demultiplex a UDP payload received on port 4500.
pub fn classify(payload: &[u8]) -> Classified {
    match payload {
        [0xFF] => Classified::Keepalive,
        [0, 0, 0, 0, rest @ ..] => {
            // An IKE header is at least 28 bytes; anything shorter is junk.
            if rest.len() >= 28 {
                Classified::Ike
            } else {
                Classified::Malformed
            }
        }
        [a, b, c, d, ..] if payload.len() >= ESP_HEADER_LEN => Classified::Esp(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Classified::Malformed,
    }
}

/// Write the non-ESP marker followed by `ike` into `out`; returns the length.
/// Returns `None` if `out` is too small.
pub fn frame_ike(ike: &[u8], out: &mut [u8]) -> Option<usize> {
    let len = NON_ESP_MARKER_LEN + ike.len();
    let dst = out.get_mut(..len)?;
    dst[..NON_ESP_MARKER_LEN].fill(0);
    dst[NON_ESP_MARKER_LEN..].copy_from_slice(ike);
    Some(len)
}

/// The NAT keepalive payload (RFC 3948 §2.3).
pub const NAT_KEEPALIVE: [u8; 1] = [0xFF];

/// Body of the `open` fuzz target (also run on random inputs by a stable
/// test): decodes a transform choice from the input, seals a valid packet,
/// mutates it with the rest of the input and opens it, plus opens the raw
/// input. Must never panic.
#[doc(hidden)]
pub fn fuzz_open(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else { return };
    let alg = match sel % 3 {
        0 => Aead::AesGcm128,
        1 => Aead::AesGcm256,
        _ => Aead::ChaCha20Poly1305,
    };
    let esn = sel & 0x4 != 0;
    let km = Keymat::new(&[0x42u8; 36][..alg.keymat_len()]);
    let spi = 0x0102_0304;
    let (Ok(out), Ok(inb)) =
        (OutboundSa::new(spi, alg, &km, esn, Limits::default()), InboundSa::new(spi, alg, &km, esn, Limits::default()))
    else {
        return;
    };
    // Raw input as a packet.
    let mut raw = rest.to_vec();
    let _ = classify(&raw);
    let _ = inb.open(&mut raw);
    // A valid packet, then mutated: bytes of `rest` pairs (position, xor).
    let inner_len = (sel as usize * 7) % 200;
    let inner: Vec<u8> = (0..inner_len).map(|i| i as u8).collect();
    let mut buf = vec![0u8; OutboundSa::sealed_len(inner_len)];
    let Ok(s) = out.seal(&inner, NEXT_HEADER_IPV4, &mut buf) else { return };
    buf.truncate(s.len);
    let mut mutated = false;
    for pair in rest.chunks(2) {
        if let [pos, x] = pair {
            if buf.is_empty() {
                continue;
            }
            let p = *pos as usize % buf.len();
            buf[p] ^= *x;
            mutated |= *x != 0;
        } else if let [cut] = pair {
            let n = *cut as usize % (buf.len() + 1);
            buf.truncate(n);
            mutated |= n < s.len;
        }
    }
    let r = inb.open(&mut buf);
    if !mutated {
        // Unmodified packet must open to the original inner packet.
        match r {
            Ok(o) => assert_eq!(&buf[o.range], &inner[..], "roundtrip mismatch"),
            Err(e) => panic!("valid packet rejected: {e:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_cases() {
        assert_eq!(classify(&[0xFF]), Classified::Keepalive);
        assert_eq!(classify(&[]), Classified::Malformed);
        assert_eq!(classify(&[0, 0, 0, 0]), Classified::Malformed);
        let mut ike = vec![0u8; 4 + 28];
        ike[4] = 0x11;
        assert_eq!(classify(&ike), Classified::Ike);
        assert_eq!(classify(&[0, 0, 1, 0, 0, 0, 0, 1]), Classified::Esp(256));
        assert_eq!(classify(&[0, 0, 1, 0, 0, 0, 0]), Classified::Malformed);
        assert_eq!(classify(&[0xFF, 0xFF]), Classified::Malformed);
    }

    #[test]
    fn frame_ike_adds_marker() {
        let mut out = [9u8; 40];
        let n = frame_ike(&[1, 2, 3], &mut out).unwrap();
        assert_eq!(&out[..n], &[0, 0, 0, 0, 1, 2, 3]);
        assert!(frame_ike(&[0; 40], &mut out).is_none());
    }
}
