//! Encrypted (SK, RFC 7296 3.14) and fragmented (SKF, RFC 7383) messages.
//!
//! * [`encrypt_message`] / [`decrypt_message`]: a header plus one SK payload
//!   carrying the inner payload chain.
//! * [`encrypt_fragments`] / [`decrypt_fragment`] + [`Reassembler`]: the same
//!   split over several SKF messages, each encrypted separately.
//!
//! The plaintext inside SK is `payloads | padding | pad length`; wisp sends no
//! padding (AEAD ciphers need no alignment) and accepts any valid padding.

use super::wire::{decode_chain_with, encode_chain, Budget, DecodeLimits};
use super::{DecodeError, EncodeError, Header, Message, Payload, PayloadType, SkfPayload};
use crate::crypto::aead::{SkCipher, ICV_LEN, IV_LEN};
use crate::crypto::CryptoError;
use zeroize::Zeroizing;

/// Error opening an encrypted message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkError {
    /// The outer message or the decrypted inner chain is malformed (the inner
    /// chain may also report an unsupported critical payload).
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// Integrity check failed or padding is invalid: drop the message silently.
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// The message does not end with the expected SK / SKF payload.
    #[error("message is not encrypted as expected")]
    NotEncrypted,
    /// A fragment was inconsistent with the ones already received.
    #[error("fragment: {0}")]
    Fragment(&'static str),
}

/// Fixed bytes around an SK plaintext: generic header, IV, ICV, pad length.
const SK_OVERHEAD: usize = 4 + IV_LEN + ICV_LEN + 1;
/// Fixed bytes around an SKF plaintext: SK overhead + fragment number/total.
const SKF_OVERHEAD: usize = SK_OVERHEAD + 4;

fn total_len(n: usize) -> Result<u32, EncodeError> {
    if n > u16::MAX as usize + Header::LEN {
        return Err(EncodeError::TooLong("encrypted message"));
    }
    u32::try_from(n).map_err(|_| EncodeError::TooLong("encrypted message"))
}

/// Encode `inner` into a complete message `header | SK{inner}`, encrypted
/// with `cipher` (the sender's SK_e). Uses the cipher's IV counter.
pub fn encrypt_message(header: &Header, inner: &[Payload], cipher: &mut SkCipher) -> Result<Vec<u8>, EncodeError> {
    let mut plain = Zeroizing::new(Vec::with_capacity(512));
    let first = encode_chain(inner, &mut plain)?;
    if matches!(inner.last(), Some(Payload::Sk(_)) | Some(Payload::Skf(_))) {
        return Err(EncodeError::Invalid("nested encrypted payload"));
    }
    plain.push(0); // pad length
    let sk_len = 4 + IV_LEN + plain.len() + ICV_LEN;
    if sk_len > u16::MAX as usize {
        return Err(EncodeError::TooLong("SK payload"));
    }
    let total = total_len(Header::LEN + sk_len)?;
    let mut out = Vec::with_capacity(total as usize);
    header.encode_into(PayloadType::SK, total, &mut out);
    out.push(first.0);
    out.push(0);
    out.extend_from_slice(&(sk_len as u16).to_be_bytes());
    let sealed = cipher.seal(&out, &plain);
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn strip_padding(mut plain: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let pad = *plain.last().ok_or(CryptoError::Padding)? as usize;
    if pad + 1 > plain.len() {
        return Err(CryptoError::Padding);
    }
    let keep = plain.len() - pad - 1;
    plain.truncate(keep);
    Ok(plain)
}

/// Open a message whose last payload is SK with `cipher` (the peer's SK_e).
///
/// Returns the header and the payloads: any unencrypted payloads preceding
/// SK, followed by the decrypted inner payloads. An authentication failure is
/// [`SkError::Crypto`] (RFC 7296: discard silently).
pub fn decrypt_message(buf: &[u8], cipher: &SkCipher) -> Result<Message, SkError> {
    // one budget for the outer and the inner chain of this datagram
    let budget = Budget::new(buf.len(), &DecodeLimits::DEFAULT)?;
    let outer = Message::decode_with(buf, &budget)?;
    let mut payloads = outer.payloads;
    let sk = match payloads.pop() {
        Some(Payload::Sk(sk)) => sk,
        _ => return Err(SkError::NotEncrypted),
    };
    let aad_len = buf.len() - sk.data.len();
    let plain = cipher.open(&buf[..aad_len], &sk.data)?;
    let plain = strip_padding(plain)?;
    let inner = decode_chain_with(sk.next_payload, &plain, &budget)?;
    payloads.extend(inner);
    Ok(Message { header: outer.header, payloads })
}

/// Split `inner` into SKF fragments (RFC 7383 2.5) so that every datagram
/// is at most `max_message_len` bytes (the IKE message, without IP/UDP
/// headers or the non-ESP marker). Each fragment is encrypted separately.
///
/// Returns the fragment datagrams in order (fragment 1 first).
pub fn encrypt_fragments(
    header: &Header,
    inner: &[Payload],
    cipher: &mut SkCipher,
    max_message_len: usize,
) -> Result<Vec<Vec<u8>>, EncodeError> {
    let mut plain = Zeroizing::new(Vec::with_capacity(1024));
    let first = encode_chain(inner, &mut plain)?;
    if max_message_len <= Header::LEN + SKF_OVERHEAD {
        return Err(EncodeError::Invalid("fragment size too small"));
    }
    let chunk = (max_message_len - Header::LEN - SKF_OVERHEAD).min(u16::MAX as usize - SKF_OVERHEAD);
    let n = plain.len().div_ceil(chunk).max(1);
    let total = u16::try_from(n).map_err(|_| EncodeError::TooLong("fragment count"))?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let part = &plain[(i * chunk).min(plain.len())..((i + 1) * chunk).min(plain.len())];
        let mut p = Zeroizing::new(Vec::with_capacity(part.len() + 1));
        p.extend_from_slice(part);
        p.push(0);
        let skf_len = 8 + IV_LEN + p.len() + ICV_LEN;
        let tl = total_len(Header::LEN + skf_len)?;
        let mut m = Vec::with_capacity(tl as usize);
        header.encode_into(PayloadType::SKF, tl, &mut m);
        m.push(if i == 0 { first.0 } else { 0 });
        m.push(0);
        m.extend_from_slice(&(skf_len as u16).to_be_bytes());
        m.extend_from_slice(&((i + 1) as u16).to_be_bytes());
        m.extend_from_slice(&total.to_be_bytes());
        let sealed = cipher.seal(&m, &p);
        m.extend_from_slice(&sealed);
        out.push(m);
    }
    Ok(out)
}

/// One decrypted fragment.
#[derive(Clone, PartialEq, Eq)]
pub struct Fragment {
    /// The fragment's IKE header (same message ID for all fragments).
    pub header: Header,
    /// Fragment number (1-based).
    pub number: u16,
    /// Total fragments.
    pub total: u16,
    /// First inner payload type (fragment 1 only; NONE otherwise).
    pub next_payload: PayloadType,
    /// Decrypted fragment data, padding removed (zeroized on drop).
    pub data: Zeroizing<Vec<u8>>,
}

impl core::fmt::Debug for Fragment {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Fragment")
            .field("header", &self.header)
            .field("number", &self.number)
            .field("total", &self.total)
            .field("next_payload", &self.next_payload)
            .field("len", &self.data.len())
            .finish()
    }
}

/// Authenticate and decrypt one SKF message (RFC 7383 2.6).
pub fn decrypt_fragment(buf: &[u8], cipher: &SkCipher) -> Result<Fragment, SkError> {
    let mut outer = Message::decode(buf)?;
    if outer.payloads.len() != 1 {
        return Err(SkError::NotEncrypted);
    }
    let skf: SkfPayload = match outer.payloads.pop() {
        Some(Payload::Skf(f)) => f,
        _ => return Err(SkError::NotEncrypted),
    };
    let aad_len = buf.len() - skf.data.len();
    let plain = cipher.open(&buf[..aad_len], &skf.data)?;
    let data = strip_padding(plain)?;
    Ok(Fragment { header: outer.header, number: skf.fragment_number, total: skf.total_fragments, next_payload: skf.next_payload, data })
}

/// Reassembly of one fragmented message (one message ID, RFC 7383 2.6).
///
/// Feed authenticated fragments with [`Reassembler::add`]; once all are
/// present it returns the decoded message. Duplicates are ignored; a fragment
/// announcing more fragments than the current set restarts reassembly, one
/// announcing fewer is discarded (RFC 7383 2.6.1).
#[derive(Default)]
pub struct Reassembler {
    header: Option<Header>,
    total: u16,
    first_np: Option<PayloadType>,
    parts: Vec<Option<Zeroizing<Vec<u8>>>>,
    received: usize,
    bytes: usize,
}

impl core::fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reassembler").field("total", &self.total).field("received", &self.received).finish()
    }
}

impl Reassembler {
    /// Maximum number of fragments accepted for one message (RFC 7383 sets no
    /// limit; the total is capped by [`Self::MAX_BYTES`] anyway).
    pub const MAX_FRAGMENTS: u16 = 256;
    /// Maximum reassembled size in bytes (that of the largest unfragmented
    /// message, [`DecodeLimits::DEFAULT`]`.max_len`). The engine keeps one
    /// reassembly per IKE SA and drops it when a limit is hit.
    pub const MAX_BYTES: usize = 65_535;

    /// Empty reassembly state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of distinct fragments held.
    pub fn received(&self) -> usize {
        self.received
    }

    /// Add a decrypted fragment; `Ok(Some(msg))` when the message is complete.
    pub fn add(&mut self, frag: Fragment) -> Result<Option<Message>, SkError> {
        if frag.total == 0 || frag.number == 0 || frag.number > frag.total {
            return Err(SkError::Fragment("bad numbering"));
        }
        if frag.total > Self::MAX_FRAGMENTS {
            return Err(SkError::Fragment("too many fragments"));
        }
        if let Some(h) = &self.header {
            if h.message_id != frag.header.message_id
                || h.exchange != frag.header.exchange
                || h.spi_i != frag.header.spi_i
                || h.spi_r != frag.header.spi_r
            {
                return Err(SkError::Fragment("fragment of another message"));
            }
            if frag.total < self.total {
                return Err(SkError::Fragment("stale fragment (fewer total fragments)"));
            }
        }
        if self.header.is_none() || frag.total > self.total {
            *self = Reassembler {
                header: Some(frag.header),
                total: frag.total,
                first_np: None,
                parts: (0..frag.total).map(|_| None).collect(),
                received: 0,
                bytes: 0,
            };
        }
        let idx = (frag.number - 1) as usize;
        if self.parts[idx].is_some() {
            return Ok(None);
        }
        if frag.number == 1 {
            self.first_np = Some(frag.next_payload);
        }
        self.bytes += frag.data.len();
        if self.bytes > Self::MAX_BYTES {
            return Err(SkError::Fragment("reassembled message too large"));
        }
        self.parts[idx] = Some(frag.data);
        self.received += 1;
        if self.received < self.total as usize {
            return Ok(None);
        }
        let mut all = Zeroizing::new(Vec::with_capacity(self.bytes));
        for p in self.parts.iter().flatten() {
            all.extend_from_slice(p);
        }
        let first = self.first_np.unwrap_or(PayloadType::NONE);
        let budget = Budget::new(all.len(), &DecodeLimits { max_len: Self::MAX_BYTES, ..DecodeLimits::DEFAULT })?;
        let payloads = decode_chain_with(first, &all, &budget)?;
        let header = self.header.unwrap_or(frag.header);
        Ok(Some(Message { header, payloads }))
    }
}
