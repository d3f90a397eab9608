//! Outbound and inbound ESP security associations.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use crate::cipher::{Aead, Cipher, KeyLengthError, Keymat};
use crate::counters::{Counters, DropReason};
use crate::replay::ReplayWindow;

/// SPI + sequence number.
pub const ESP_HEADER_LEN: usize = 8;
/// Explicit IV of the AEAD transforms (RFC 4106 §3.1, RFC 7634 §2).
pub const IV_LEN: usize = 8;
/// ICV (tag) length: the 16-octet variants only.
pub const ICV_LEN: usize = 16;
/// Where the inner packet starts in an ESP packet.
pub const PAYLOAD_OFFSET: usize = ESP_HEADER_LEN + IV_LEN;
/// Largest overhead [`OutboundSa::seal`] adds: header, IV, up to 3 padding
/// bytes, pad length, next header, ICV.
pub const ESP_OVERHEAD_MAX: usize = PAYLOAD_OFFSET + 3 + 2 + ICV_LEN;
/// Next header for an IPv4 inner packet (tunnel mode).
pub const NEXT_HEADER_IPV4: u8 = 4;
/// Next header for an IPv6 inner packet (tunnel mode).
pub const NEXT_HEADER_IPV6: u8 = 41;
/// "No next header": dummy packets (RFC 4303 §2.6), dropped on receipt.
pub const NEXT_HEADER_NONE: u8 = 59;

/// Which limit fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Packet count lifetime.
    Packets,
    /// Byte count lifetime.
    Bytes,
    /// Sequence-number space (32-bit without ESN, 64-bit with).
    Sequence,
}

/// A lifetime event for the control plane. Each is reported once per SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitEvent {
    /// Soft limit: time to rekey.
    Soft(LimitKind),
    /// Hard limit: the SA refuses further packets and should be deleted.
    Hard(LimitKind),
}

/// Lifetime limits of one SA. `u64::MAX` means "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Soft packet limit (rekey).
    pub soft_packets: u64,
    /// Hard packet limit (refuse).
    pub hard_packets: u64,
    /// Soft byte limit (inner bytes).
    pub soft_bytes: u64,
    /// Hard byte limit (inner bytes).
    pub hard_bytes: u64,
    /// How many sequence numbers before the end of the space the
    /// "rekey needed" signal fires (outbound only).
    pub seq_soft_margin: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { soft_packets: u64::MAX, hard_packets: u64::MAX, soft_bytes: u64::MAX, hard_bytes: u64::MAX, seq_soft_margin: 1 << 28 }
    }
}

/// Result of a successful seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    /// Length of the ESP packet written at the start of the buffer.
    pub len: usize,
    /// Sequence number used.
    pub seq: u64,
    /// A soft limit crossed by this packet (reported once).
    pub event: Option<LimitEvent>,
}

/// Why a seal was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The output buffer cannot hold the ESP packet.
    #[error("buffer too small: need {needed} bytes")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// A hard limit is reached; `first` is true the first time (signal the
    /// control plane then).
    #[error("SA expired: hard {kind:?} limit")]
    Expired {
        /// Which limit.
        kind: LimitKind,
        /// First refusal for this SA.
        first: bool,
    },
}

/// A successfully opened packet: the inner packet is `buf[range]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The inner packet inside the caller's buffer.
    pub range: Range<usize>,
    /// Next header (4 = IPv4, 41 = IPv6 in tunnel mode).
    pub next_header: u8,
    /// Full (ESN-inferred) sequence number.
    pub seq: u64,
    /// A soft limit crossed by this packet (reported once).
    pub event: Option<LimitEvent>,
}

/// Why [`InboundSa::open`] did not return a packet. Every variant is counted
/// in the SA's counters before it is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Too short, wrong SPI, bad padding.
    #[error("malformed ESP packet")]
    Malformed,
    /// Replayed or too old.
    #[error("replayed or too old (seq {0})")]
    Replay(u64),
    /// ICV check failed.
    #[error("ICV verification failed")]
    Auth,
    /// An authentic dummy packet (next header 59), dropped.
    #[error("dummy packet")]
    Dummy,
    /// A hard limit is reached; `first` as in [`SealError::Expired`].
    #[error("SA expired: hard {kind:?} limit")]
    Expired {
        /// Which limit.
        kind: LimitKind,
        /// First refusal for this SA.
        first: bool,
    },
}

impl OpenError {
    /// The drop reason counted for this error (`None` for dummies).
    pub fn drop_reason(&self) -> Option<DropReason> {
        match self {
            OpenError::Malformed => Some(DropReason::Malformed),
            OpenError::Replay(_) => Some(DropReason::Replay),
            OpenError::Auth => Some(DropReason::Auth),
            OpenError::Dummy => None,
            OpenError::Expired { .. } => Some(DropReason::Expired),
        }
    }
}

const SOFT_SIGNALLED: u8 = 1;
const HARD_SIGNALLED: u8 = 2;

#[inline]
fn aad(spi: u32, seq: u64, esn: bool, out: &mut [u8; 12]) -> usize {
    out[..4].copy_from_slice(&spi.to_be_bytes());
    if esn {
        out[4..8].copy_from_slice(&((seq >> 32) as u32).to_be_bytes());
        out[8..12].copy_from_slice(&(seq as u32).to_be_bytes());
        12
    } else {
        out[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        8
    }
}

fn first_signal(flags: &AtomicU8, bit: u8) -> bool {
    flags.fetch_or(bit, Ordering::Relaxed) & bit == 0
}

/// Outbound ESP SA: seals inner packets.
pub struct OutboundSa {
    spi: u32,
    alg: Aead,
    esn: bool,
    cipher: Cipher,
    /// Next sequence number to use (starts at 1).
    next_seq: AtomicU64,
    limits: Limits,
    flags: AtomicU8,
    counters: Counters,
}

impl std::fmt::Debug for OutboundSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundSa")
            .field("spi", &format_args!("{:08x}", self.spi))
            .field("alg", &self.alg)
            .field("esn", &self.esn)
            .field("next_seq", &self.next_seq.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl OutboundSa {
    /// A new outbound SA. `keymat` is `key || salt` for `alg`.
    pub fn new(spi: u32, alg: Aead, keymat: &Keymat, esn: bool, limits: Limits) -> Result<Self, KeyLengthError> {
        Ok(OutboundSa {
            spi,
            alg,
            esn,
            cipher: Cipher::new(alg, keymat)?,
            next_seq: AtomicU64::new(1),
            limits,
            flags: AtomicU8::new(0),
            counters: Counters::default(),
        })
    }

    /// Continue from sequence number `next` (tests, or state restored by the
    /// caller). Values of 0 are treated as 1.
    pub fn with_next_seq(self, next: u64) -> Self {
        self.next_seq.store(next.max(1), Ordering::Relaxed);
        self
    }

    /// The SPI (the peer's inbound SPI).
    pub fn spi(&self) -> u32 {
        self.spi
    }
    /// The transform.
    pub fn aead(&self) -> Aead {
        self.alg
    }
    /// Extended sequence numbers in use.
    pub fn esn(&self) -> bool {
        self.esn
    }
    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// The next sequence number that would be used.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.load(Ordering::Relaxed)
    }

    fn max_seq(&self) -> u64 {
        if self.esn {
            // The very last value is left unused so the counter itself can
            // never overflow.
            u64::MAX - 1
        } else {
            u32::MAX as u64
        }
    }

    /// Padding length so that `inner + pad + 2` is a multiple of 4.
    #[inline]
    pub fn pad_len(inner_len: usize) -> usize {
        (4 - (inner_len + 2) % 4) % 4
    }

    /// Total ESP packet length for an inner packet of `inner_len` bytes.
    #[inline]
    pub fn sealed_len(inner_len: usize) -> usize {
        PAYLOAD_OFFSET + inner_len + Self::pad_len(inner_len) + 2 + ICV_LEN
    }

    /// Copy `inner` into `out` and seal it there. See
    /// [`seal_in_place`](Self::seal_in_place).
    pub fn seal(&self, inner: &[u8], next_header: u8, out: &mut [u8]) -> Result<Sealed, SealError> {
        let needed = Self::sealed_len(inner.len());
        if out.len() < needed {
            return Err(SealError::BufferTooSmall { needed });
        }
        out[PAYLOAD_OFFSET..PAYLOAD_OFFSET + inner.len()].copy_from_slice(inner);
        self.seal_in_place(out, inner.len(), next_header)
    }

    fn check_hard(&self, inner_len: usize) -> Result<(), SealError> {
        let kind = if self.counters.packets() >= self.limits.hard_packets {
            LimitKind::Packets
        } else if self.counters.bytes().saturating_add(inner_len as u64) > self.limits.hard_bytes {
            LimitKind::Bytes
        } else {
            return Ok(());
        };
        Err(SealError::Expired { kind, first: first_signal(&self.flags, HARD_SIGNALLED) })
    }

    /// Seal the inner packet already at `buf[PAYLOAD_OFFSET..PAYLOAD_OFFSET +
    /// inner_len]` (`PAYLOAD_OFFSET` = 16: room for SPI, sequence number and
    /// IV), in place. Writes header, IV, padding, trailer and ICV; the ESP
    /// packet is `buf[..sealed.len]`.
    pub fn seal_in_place(&self, buf: &mut [u8], inner_len: usize, next_header: u8) -> Result<Sealed, SealError> {
        let needed = Self::sealed_len(inner_len);
        if buf.len() < needed {
            return Err(SealError::BufferTooSmall { needed });
        }
        self.check_hard(inner_len)?;
        let max = self.max_seq();
        let seq = match self.next_seq.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| if s > max { None } else { Some(s + 1) }) {
            Ok(s) => s,
            Err(_) => return Err(SealError::Expired { kind: LimitKind::Sequence, first: first_signal(&self.flags, HARD_SIGNALLED) }),
        };
        let pad = Self::pad_len(inner_len);
        let ct_end = PAYLOAD_OFFSET + inner_len + pad + 2;
        buf[..4].copy_from_slice(&self.spi.to_be_bytes());
        buf[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        let iv = seq.to_be_bytes();
        buf[8..16].copy_from_slice(&iv);
        let trailer = &mut buf[PAYLOAD_OFFSET + inner_len..ct_end];
        for (i, b) in trailer[..pad].iter_mut().enumerate() {
            *b = (i + 1) as u8;
        }
        trailer[pad] = pad as u8;
        trailer[pad + 1] = next_header;
        let mut a = [0u8; 12];
        let alen = aad(self.spi, seq, self.esn, &mut a);
        let tag = self.cipher.seal(&iv, &a[..alen], &mut buf[PAYLOAD_OFFSET..ct_end]);
        buf[ct_end..ct_end + ICV_LEN].copy_from_slice(&tag);
        self.counters.count_ok(inner_len);
        let event = self.soft_event(seq, max);
        Ok(Sealed { len: needed, seq, event })
    }

    fn soft_event(&self, seq: u64, max: u64) -> Option<LimitEvent> {
        let kind = if seq >= max.saturating_sub(self.limits.seq_soft_margin) {
            LimitKind::Sequence
        } else if self.counters.packets() >= self.limits.soft_packets {
            LimitKind::Packets
        } else if self.counters.bytes() >= self.limits.soft_bytes {
            LimitKind::Bytes
        } else {
            return None;
        };
        first_signal(&self.flags, SOFT_SIGNALLED).then_some(LimitEvent::Soft(kind))
    }
}

/// Inbound ESP SA: opens ESP packets.
pub struct InboundSa {
    spi: u32,
    alg: Aead,
    esn: bool,
    cipher: Cipher,
    window: Mutex<ReplayWindow>,
    limits: Limits,
    flags: AtomicU8,
    counters: Counters,
}

impl std::fmt::Debug for InboundSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundSa")
            .field("spi", &format_args!("{:08x}", self.spi))
            .field("alg", &self.alg)
            .field("esn", &self.esn)
            .finish_non_exhaustive()
    }
}

impl InboundSa {
    /// A new inbound SA. `keymat` is `key || salt` for `alg`.
    pub fn new(spi: u32, alg: Aead, keymat: &Keymat, esn: bool, limits: Limits) -> Result<Self, KeyLengthError> {
        Ok(InboundSa {
            spi,
            alg,
            esn,
            cipher: Cipher::new(alg, keymat)?,
            window: Mutex::new(ReplayWindow::new()),
            limits,
            flags: AtomicU8::new(0),
            counters: Counters::default(),
        })
    }

    /// The SPI (ours).
    pub fn spi(&self) -> u32 {
        self.spi
    }
    /// The transform.
    pub fn aead(&self) -> Aead {
        self.alg
    }
    /// Extended sequence numbers in use.
    pub fn esn(&self) -> bool {
        self.esn
    }
    /// Counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// Start with the window's right edge at `top` (state restored by the
    /// caller, or tests near the ESN boundary).
    pub fn with_replay_top(self, top: u64) -> Self {
        {
            let mut w = self.window();
            *w = ReplayWindow::new();
            w.update(top);
        }
        self
    }

    /// Highest sequence number accepted.
    pub fn highest_seq(&self) -> u64 {
        self.window().top()
    }

    fn window(&self) -> std::sync::MutexGuard<'_, ReplayWindow> {
        // Nothing panics while holding the lock; recover from poison anyway.
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, e: OpenError) -> OpenError {
        match e.drop_reason() {
            Some(r) => self.counters.count_drop(r),
            None => self.counters.count_dummy(),
        }
        e
    }

    /// Open the ESP packet in `pkt` (the whole UDP payload) in place.
    /// Order: length/SPI checks → replay check → ICV → window update →
    /// trailer. Never panics, whatever the input.
    pub fn open(&self, pkt: &mut [u8]) -> Result<Opened, OpenError> {
        if pkt.len() < crate::ESP_MIN_LEN {
            return Err(self.fail(OpenError::Malformed));
        }
        let spi = u32::from_be_bytes([pkt[0], pkt[1], pkt[2], pkt[3]]);
        if spi != self.spi {
            return Err(self.fail(OpenError::Malformed));
        }
        let seq_lo = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
        let seq = {
            let w = self.window();
            let seq = if self.esn { w.infer_esn(seq_lo) } else { seq_lo as u64 };
            if !w.check(seq) {
                drop(w);
                return Err(self.fail(OpenError::Replay(seq)));
            }
            seq
        };
        if self.counters.packets() >= self.limits.hard_packets || self.counters.bytes() >= self.limits.hard_bytes {
            let kind = if self.counters.packets() >= self.limits.hard_packets { LimitKind::Packets } else { LimitKind::Bytes };
            let first = first_signal(&self.flags, HARD_SIGNALLED);
            return Err(self.fail(OpenError::Expired { kind, first }));
        }
        let len = pkt.len();
        let ct_end = len - ICV_LEN;
        let mut tag = [0u8; ICV_LEN];
        tag.copy_from_slice(&pkt[ct_end..]);
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&pkt[ESP_HEADER_LEN..PAYLOAD_OFFSET]);
        let mut a = [0u8; 12];
        let alen = aad(spi, seq, self.esn, &mut a);
        if !self.cipher.open(&iv, &a[..alen], &mut pkt[PAYLOAD_OFFSET..ct_end], &tag) {
            return Err(self.fail(OpenError::Auth));
        }
        if !self.window().update(seq) {
            // Raced with a duplicate that was verified concurrently.
            return Err(self.fail(OpenError::Replay(seq)));
        }
        let ct = &pkt[PAYLOAD_OFFSET..ct_end];
        let next_header = ct[ct.len() - 1];
        let pad = ct[ct.len() - 2] as usize;
        if pad + 2 > ct.len() {
            return Err(self.fail(OpenError::Malformed));
        }
        let inner_len = ct.len() - 2 - pad;
        if !ct[inner_len..inner_len + pad].iter().enumerate().all(|(i, b)| *b == (i + 1) as u8) {
            return Err(self.fail(OpenError::Malformed));
        }
        if next_header == NEXT_HEADER_NONE {
            return Err(self.fail(OpenError::Dummy));
        }
        self.counters.count_ok(inner_len);
        let event = self.soft_event();
        Ok(Opened { range: PAYLOAD_OFFSET..PAYLOAD_OFFSET + inner_len, next_header, seq, event })
    }

    fn soft_event(&self) -> Option<LimitEvent> {
        let kind = if self.counters.packets() >= self.limits.soft_packets {
            LimitKind::Packets
        } else if self.counters.bytes() >= self.limits.soft_bytes {
            LimitKind::Bytes
        } else {
            return None;
        };
        first_signal(&self.flags, SOFT_SIGNALLED).then_some(LimitEvent::Soft(kind))
    }
}
