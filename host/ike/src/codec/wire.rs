//! Wire encoding and decoding of IKE headers, payload chains and messages.

use super::registry::*;
use super::types::*;
use super::{DecodeError, EncodeError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Default upper bound on the number of payloads in one message (outer chain
/// and SK inner chain together); see [`DecodeLimits`].
pub const MAX_PAYLOADS: usize = 128;
/// Upper bound on proposals per SA payload (the proposal number is one byte).
pub const MAX_PROPOSALS: usize = 255;
/// Upper bound on attributes in one transform or one CP payload.
pub const MAX_ATTRIBUTES: usize = 128;

/// Limits applied to the decoding of one datagram (or one reassembled
/// message), all enforced by one [`Budget`] that every decoder charges.
///
/// Decoding allocates only what it keeps: copies of byte strings and the
/// in-memory size of every list element. Each is charged against
/// `memory_base + memory_per_byte * input length`, so a hostile input
/// cannot make the decoder allocate more than a small multiple of its own
/// size (RFC 7296 sets no such limits; these are wisp's). Exceeding a limit is
/// [`DecodeError::OverBudget`] (a drop before authentication, INVALID_SYNTAX
/// after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Longest input accepted, in bytes (a UDP datagram carries at most 64 KiB).
    pub max_len: usize,
    /// Most payloads per message, outer and SK inner chains together.
    pub max_payloads: usize,
    /// Decoded memory allowed per input byte.
    pub memory_per_byte: usize,
    /// Decoded memory allowed on top of `memory_per_byte * len`.
    pub memory_base: usize,
}

impl DecodeLimits {
    /// The defaults: 64 KiB, 128 payloads, 8 bytes of decoded memory per input
    /// byte plus 4 KiB. A real message needs far less (byte strings cost one
    /// byte per byte; a transform with a key length attribute, the densest
    /// common structure, about 5.3).
    pub const DEFAULT: DecodeLimits = DecodeLimits { max_len: 65_535, max_payloads: MAX_PAYLOADS, memory_per_byte: 8, memory_base: 4096 };
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The per-input decode budget: what is left of the [`DecodeLimits`] for the
/// input being decoded. The one place where the limits are enforced; shared by
/// the readers of nested structures and by the outer and inner chains of an
/// encrypted message.
#[derive(Debug)]
pub struct Budget {
    payloads: core::cell::Cell<usize>,
    memory: core::cell::Cell<usize>,
}

impl Budget {
    /// The budget for an input of `len` bytes, or an error if it is longer
    /// than `limits.max_len`.
    pub fn new(len: usize, limits: &DecodeLimits) -> Result<Budget, DecodeError> {
        if len > limits.max_len {
            return Err(DecodeError::OverBudget("input length"));
        }
        let memory = limits.memory_per_byte.saturating_mul(len).saturating_add(limits.memory_base);
        Ok(Budget { payloads: core::cell::Cell::new(limits.max_payloads), memory: core::cell::Cell::new(memory) })
    }

    /// Decoded memory still available, in bytes.
    pub fn memory_left(&self) -> usize {
        self.memory.get()
    }

    /// Payloads still allowed.
    pub fn payloads_left(&self) -> usize {
        self.payloads.get()
    }

    fn payload(&self) -> Result<(), DecodeError> {
        let left = self.payloads.get();
        if left == 0 {
            return Err(DecodeError::TooMany("payloads"));
        }
        self.payloads.set(left - 1);
        self.charge(core::mem::size_of::<Payload>())
    }

    fn charge(&self, bytes: usize) -> Result<(), DecodeError> {
        let left = self.memory.get();
        if bytes > left {
            return Err(DecodeError::OverBudget("decoded memory"));
        }
        self.memory.set(left - bytes);
        Ok(())
    }

    /// Charge one list element of type `T` (its in-memory size).
    fn item<T>(&self) -> Result<(), DecodeError> {
        self.charge(core::mem::size_of::<T>())
    }
}

struct Reader<'a, 'b> {
    buf: &'a [u8],
    pos: usize,
    budget: &'b Budget,
}

impl<'a, 'b> Reader<'a, 'b> {
    fn new(buf: &'a [u8], budget: &'b Budget) -> Self {
        Reader { buf, pos: 0, budget }
    }
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(what));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// A reader over the next `n` bytes, sharing this reader's budget.
    fn sub(&mut self, n: usize, what: &'static str) -> Result<Reader<'a, 'b>, DecodeError> {
        let s = self.take(n, what)?;
        Ok(Reader::new(s, self.budget))
    }
    /// Copy the next `n` bytes (charged to the budget).
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<Vec<u8>, DecodeError> {
        let s = self.take(n, what)?;
        self.budget.charge(n)?;
        Ok(s.to_vec())
    }
    /// Copy the rest (charged to the budget).
    fn rest_vec(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.remaining();
        self.bytes(n, "payload body")
    }
    /// An empty vector with room for `claimed` elements, but never for more
    /// than the remaining bytes can hold at `min_wire` bytes each, nor more
    /// than the budget has memory left for.
    fn vec_for<T>(&self, claimed: usize, min_wire: usize) -> Vec<T> {
        let by_budget = self.budget.memory_left() / core::mem::size_of::<T>().max(1);
        Vec::with_capacity(claimed.min(self.remaining() / min_wire.max(1)).min(by_budget))
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let s = self.take(2, what)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let s = self.take(4, what)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let s = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_be_bytes(a))
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn len16(n: usize, what: &'static str) -> Result<u16, EncodeError> {
    u16::try_from(n).map_err(|_| EncodeError::TooLong(what))
}

/// Reserve a 2-byte length at `at` and fill it once the structure is written.
fn patch_len16(out: &mut [u8], at: usize, len: usize, what: &'static str) -> Result<(), EncodeError> {
    let l = len16(len, what)?;
    out[at..at + 2].copy_from_slice(&l.to_be_bytes());
    Ok(())
}

/// Decoded IKE header plus the two fields derived from the chain.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HeaderInfo {
    /// The header.
    pub header: Header,
    /// Type of the first payload.
    pub next_payload: PayloadType,
    /// Total message length as stated in the header.
    pub length: u32,
}

impl Header {
    /// Parse only the 28-byte header (no length consistency check beyond
    /// `length >= 28`). Useful to route a datagram before full decoding.
    /// Fails with [`DecodeError::InvalidMajorVersion`] if the major version is
    /// greater than 2 (the engine answers INVALID_MAJOR_VERSION).
    pub fn decode(buf: &[u8]) -> Result<HeaderInfo, DecodeError> {
        let budget = Budget { payloads: core::cell::Cell::new(0), memory: core::cell::Cell::new(0) };
        let mut r = Reader::new(buf, &budget);
        let spi_i = r.u64("IKE header")?;
        let spi_r = r.u64("IKE header")?;
        let np = r.u8("IKE header")?;
        let ver = r.u8("IKE header")?;
        let exchange = ExchangeType(r.u8("IKE header")?);
        let flags = Flags(r.u8("IKE header")?);
        let message_id = r.u32("IKE header")?;
        let length = r.u32("IKE header")?;
        let major_version = ver >> 4;
        let minor_version = ver & 0x0f;
        if major_version != 2 {
            return Err(DecodeError::InvalidMajorVersion(major_version));
        }
        if (length as usize) < Header::LEN {
            return Err(DecodeError::BadLength("IKE header length"));
        }
        Ok(HeaderInfo {
            header: Header { spi_i, spi_r, major_version, minor_version, exchange, flags, message_id },
            next_payload: PayloadType(np),
            length,
        })
    }

    /// Append the 28-byte header with the given next payload and total length.
    pub fn encode_into(&self, next_payload: PayloadType, length: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.push(next_payload.0);
        out.push((self.major_version << 4) | (self.minor_version & 0x0f));
        out.push(self.exchange.0);
        out.push(self.flags.0);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&length.to_be_bytes());
    }
}

impl Message {
    /// Decode a complete IKE message (one UDP payload, without the non-ESP
    /// marker). The header's length must equal `buf.len()`.
    ///
    /// The payload chain is parsed; an SK/SKF payload is kept as ciphertext
    /// (see [`super::sk`] to decrypt it).
    pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
        let budget = Budget::new(buf.len(), &DecodeLimits::DEFAULT)?;
        Self::decode_with(buf, &budget)
    }

    /// [`Message::decode`] charging `budget` (which may be shared with a
    /// later decode of the SK inner chain of the same datagram).
    pub fn decode_with(buf: &[u8], budget: &Budget) -> Result<Message, DecodeError> {
        let info = Header::decode(buf)?;
        if info.length as usize != buf.len() {
            return Err(DecodeError::BadLength("IKE message length"));
        }
        let payloads = decode_chain_with(info.next_payload, &buf[Header::LEN..], budget)?;
        Ok(Message { header: info.header, payloads })
    }

    /// Encode the message. Fails if a field exceeds its wire size or the
    /// structure is inconsistent (e.g. an SK payload that is not last).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut body = Vec::with_capacity(256);
        let first = encode_chain(&self.payloads, &mut body)?;
        let total = Header::LEN + body.len();
        let total32 = u32::try_from(total).map_err(|_| EncodeError::TooLong("IKE message"))?;
        let mut out = Vec::with_capacity(total);
        self.header.encode_into(first, total32, &mut out);
        out.extend_from_slice(&body);
        Ok(out)
    }
}

/// Decode a payload chain starting with payload type `first`.
///
/// An SK or SKF payload ends the chain (its next-payload field names the first
/// inner payload) and must be the last bytes of `buf`.
pub fn decode_chain(first: PayloadType, buf: &[u8]) -> Result<Vec<Payload>, DecodeError> {
    let budget = Budget::new(buf.len(), &DecodeLimits::DEFAULT)?;
    decode_chain_with(first, buf, &budget)
}

/// [`decode_chain`] charging `budget`.
pub fn decode_chain_with(first: PayloadType, buf: &[u8], budget: &Budget) -> Result<Vec<Payload>, DecodeError> {
    let mut out = Vec::new();
    let mut next = first;
    let mut r = Reader::new(buf, budget);
    while next != PayloadType::NONE {
        budget.payload()?;
        let np = PayloadType(r.u8("generic payload header")?);
        let flags = r.u8("generic payload header")?;
        let len = r.u16("generic payload header")? as usize;
        if len < 4 {
            return Err(DecodeError::BadLength("payload length"));
        }
        let body = r.take(len - 4, "payload body")?;
        let critical = flags & 0x80 != 0;
        let this = next;
        let p = decode_payload_with(this, np, critical, body, budget)?;
        out.push(p);
        if this == PayloadType::SK || this == PayloadType::SKF {
            if r.remaining() != 0 {
                return Err(DecodeError::Malformed("data after encrypted payload"));
            }
            return Ok(out);
        }
        next = np;
    }
    if r.remaining() != 0 {
        return Err(DecodeError::Malformed("trailing data after last payload"));
    }
    Ok(out)
}

/// Encode a payload chain, appending to `out`; returns the type of the first
/// payload (for the preceding header's next-payload field).
pub fn encode_chain(payloads: &[Payload], out: &mut Vec<u8>) -> Result<PayloadType, EncodeError> {
    for (i, p) in payloads.iter().enumerate() {
        let last = i + 1 == payloads.len();
        let np = match p {
            Payload::Sk(sk) => {
                if !last {
                    return Err(EncodeError::Invalid("SK payload must be last"));
                }
                sk.next_payload
            }
            Payload::Skf(skf) => {
                if !last {
                    return Err(EncodeError::Invalid("SKF payload must be last"));
                }
                skf.next_payload
            }
            _ => {
                if last {
                    PayloadType::NONE
                } else {
                    payloads[i + 1].payload_type()
                }
            }
        };
        encode_payload(p, np, out)?;
    }
    Ok(payloads.first().map(|p| p.payload_type()).unwrap_or(PayloadType::NONE))
}

/// Encode one payload with its generic header.
pub fn encode_payload(p: &Payload, next: PayloadType, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    let critical = match p {
        Payload::Unknown { payload_type, critical, .. } => {
            if is_known_payload_type(*payload_type) || *payload_type == PayloadType::NONE {
                return Err(EncodeError::Invalid("Unknown payload with a known type code"));
            }
            *critical
        }
        _ => false,
    };
    out.push(next.0);
    out.push(if critical { 0x80 } else { 0 });
    out.extend_from_slice(&[0, 0]);
    encode_body(p, out)?;
    let len = out.len() - start;
    patch_len16(out, start + 2, len, "payload")
}

fn encode_body(p: &Payload, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match p {
        Payload::Sa(sa) => encode_sa(sa, out)?,
        Payload::Ke(ke) => {
            put_u16(out, ke.group);
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&ke.data);
        }
        Payload::IdI(id) | Payload::IdR(id) => {
            out.push(id.id_type.0);
            out.extend_from_slice(&[0, 0, 0]);
            out.extend_from_slice(&id.data);
        }
        Payload::Cert(c) | Payload::CertReq(c) => {
            out.push(c.encoding.0);
            out.extend_from_slice(&c.data);
        }
        Payload::Auth(a) => {
            out.push(a.method.0);
            out.extend_from_slice(&[0, 0, 0]);
            out.extend_from_slice(&a.data);
        }
        Payload::Nonce(d) | Payload::VendorId(d) | Payload::Eap(d) => out.extend_from_slice(d),
        Payload::Notify(n) => {
            out.push(n.protocol.0);
            out.push(u8::try_from(n.spi.len()).map_err(|_| EncodeError::TooLong("notify SPI"))?);
            put_u16(out, n.notify_type.0);
            out.extend_from_slice(&n.spi);
            out.extend_from_slice(&n.data);
        }
        Payload::Delete(d) => {
            out.push(d.protocol.0);
            out.push(d.spi_size);
            put_u16(out, len16(d.spis.len(), "delete SPI count")?);
            for s in &d.spis {
                if s.len() != d.spi_size as usize {
                    return Err(EncodeError::Invalid("delete SPI length differs from SPI size"));
                }
                out.extend_from_slice(s);
            }
        }
        Payload::TsI(ts) | Payload::TsR(ts) => encode_ts(ts, out)?,
        Payload::Sk(sk) => out.extend_from_slice(&sk.data),
        Payload::Skf(f) => {
            put_u16(out, f.fragment_number);
            put_u16(out, f.total_fragments);
            out.extend_from_slice(&f.data);
        }
        Payload::Cp(cp) => {
            out.push(cp.cfg_type.0);
            out.extend_from_slice(&[0, 0, 0]);
            for a in &cp.attributes {
                if a.attr_type.0 & 0x8000 != 0 {
                    return Err(EncodeError::Invalid("config attribute type exceeds 15 bits"));
                }
                put_u16(out, a.attr_type.0);
                put_u16(out, len16(a.value.len(), "config attribute")?);
                out.extend_from_slice(&a.value);
            }
        }
        Payload::Unknown { body, .. } => out.extend_from_slice(body),
    }
    Ok(())
}

fn encode_sa(sa: &SaPayload, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if sa.proposals.len() > MAX_PROPOSALS {
        return Err(EncodeError::TooLong("proposals"));
    }
    for (pi, p) in sa.proposals.iter().enumerate() {
        let start = out.len();
        out.push(if pi + 1 == sa.proposals.len() { 0 } else { 2 });
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        out.push(p.number);
        out.push(p.protocol.0);
        out.push(u8::try_from(p.spi.len()).map_err(|_| EncodeError::TooLong("proposal SPI"))?);
        out.push(u8::try_from(p.transforms.len()).map_err(|_| EncodeError::TooLong("transforms"))?);
        out.extend_from_slice(&p.spi);
        for (ti, t) in p.transforms.iter().enumerate() {
            let ts = out.len();
            out.push(if ti + 1 == p.transforms.len() { 0 } else { 3 });
            out.push(0);
            out.extend_from_slice(&[0, 0]);
            out.push(t.transform_type.0);
            out.push(0);
            put_u16(out, t.id);
            for a in &t.attributes {
                match a {
                    Attribute::Tv { attr_type, value } => {
                        if attr_type & 0x8000 != 0 {
                            return Err(EncodeError::Invalid("attribute type exceeds 15 bits"));
                        }
                        put_u16(out, attr_type | 0x8000);
                        put_u16(out, *value);
                    }
                    Attribute::Tlv { attr_type, value } => {
                        if attr_type & 0x8000 != 0 {
                            return Err(EncodeError::Invalid("attribute type exceeds 15 bits"));
                        }
                        put_u16(out, *attr_type);
                        put_u16(out, len16(value.len(), "attribute")?);
                        out.extend_from_slice(value);
                    }
                }
            }
            let tl = out.len() - ts;
            patch_len16(out, ts + 2, tl, "transform")?;
        }
        let pl = out.len() - start;
        patch_len16(out, start + 2, pl, "proposal")?;
    }
    Ok(())
}

fn encode_ts(ts: &TsPayload, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.push(u8::try_from(ts.selectors.len()).map_err(|_| EncodeError::TooLong("traffic selectors"))?);
    out.extend_from_slice(&[0, 0, 0]);
    for s in &ts.selectors {
        match s {
            TrafficSelector::Range(r) => match (r.start_addr, r.end_addr) {
                (IpAddr::V4(a), IpAddr::V4(b)) => {
                    out.push(TsType::IPV4_ADDR_RANGE.0);
                    out.push(r.ip_protocol);
                    put_u16(out, 16);
                    put_u16(out, r.start_port);
                    put_u16(out, r.end_port);
                    out.extend_from_slice(&a.octets());
                    out.extend_from_slice(&b.octets());
                }
                (IpAddr::V6(a), IpAddr::V6(b)) => {
                    out.push(TsType::IPV6_ADDR_RANGE.0);
                    out.push(r.ip_protocol);
                    put_u16(out, 40);
                    put_u16(out, r.start_port);
                    put_u16(out, r.end_port);
                    out.extend_from_slice(&a.octets());
                    out.extend_from_slice(&b.octets());
                }
                _ => return Err(EncodeError::Invalid("traffic selector mixes address families")),
            },
            TrafficSelector::Other { ts_type, ip_protocol, body } => {
                if *ts_type == TsType::IPV4_ADDR_RANGE || *ts_type == TsType::IPV6_ADDR_RANGE {
                    return Err(EncodeError::Invalid("Other traffic selector with a known type"));
                }
                out.push(ts_type.0);
                out.push(*ip_protocol);
                put_u16(out, len16(body.len() + 4, "traffic selector")?);
                out.extend_from_slice(body);
            }
        }
    }
    Ok(())
}

/// Decode the body of one payload of type `t`. `np` is the payload's own
/// next-payload field (needed for SK/SKF).
pub fn decode_payload(t: PayloadType, np: PayloadType, critical: bool, body: &[u8]) -> Result<Payload, DecodeError> {
    let budget = Budget::new(body.len(), &DecodeLimits::DEFAULT)?;
    decode_payload_with(t, np, critical, body, &budget)
}

/// [`decode_payload`] charging `budget`.
fn decode_payload_with(t: PayloadType, np: PayloadType, critical: bool, body: &[u8], budget: &Budget) -> Result<Payload, DecodeError> {
    let mut r = Reader::new(body, budget);
    let p = match t {
        PayloadType::SA => Payload::Sa(decode_sa(&mut r)?),
        PayloadType::KE => {
            let group = r.u16("KE payload")?;
            r.take(2, "KE payload")?;
            Payload::Ke(KePayload { group, data: r.rest_vec()? })
        }
        PayloadType::IDI | PayloadType::IDR => {
            let id_type = IdType(r.u8("ID payload")?);
            r.take(3, "ID payload")?;
            let id = IdPayload { id_type, data: r.rest_vec()? };
            if t == PayloadType::IDI {
                Payload::IdI(id)
            } else {
                Payload::IdR(id)
            }
        }
        PayloadType::CERT | PayloadType::CERTREQ => {
            let encoding = CertEncoding(r.u8("CERT payload")?);
            let c = CertPayload { encoding, data: r.rest_vec()? };
            if t == PayloadType::CERT {
                Payload::Cert(c)
            } else {
                Payload::CertReq(c)
            }
        }
        PayloadType::AUTH => {
            let method = AuthMethod(r.u8("AUTH payload")?);
            r.take(3, "AUTH payload")?;
            Payload::Auth(AuthPayload { method, data: r.rest_vec()? })
        }
        PayloadType::NONCE => Payload::Nonce(r.rest_vec()?),
        PayloadType::NOTIFY => {
            let protocol = ProtocolId(r.u8("Notify payload")?);
            let spi_size = r.u8("Notify payload")? as usize;
            let notify_type = NotifyType(r.u16("Notify payload")?);
            let spi = r.bytes(spi_size, "Notify SPI")?;
            Payload::Notify(NotifyPayload { protocol, spi, notify_type, data: r.rest_vec()? })
        }
        PayloadType::DELETE => {
            let protocol = ProtocolId(r.u8("Delete payload")?);
            let spi_size = r.u8("Delete payload")?;
            let n = r.u16("Delete payload")? as usize;
            let need = n.checked_mul(spi_size as usize).ok_or(DecodeError::BadLength("Delete SPIs"))?;
            if r.remaining() != need {
                return Err(DecodeError::BadLength("Delete SPIs"));
            }
            if spi_size == 0 && n != 0 {
                // RFC 7296 3.11: an IKE SA delete has SPI size 0 and no SPIs;
                // n SPIs of no bytes each would cost memory for nothing.
                return Err(DecodeError::Malformed("Delete SPIs of size zero"));
            }
            let mut spis = r.vec_for(n, spi_size as usize);
            for _ in 0..n {
                r.budget.item::<Vec<u8>>()?;
                spis.push(r.bytes(spi_size as usize, "Delete SPI")?);
            }
            Payload::Delete(DeletePayload { protocol, spi_size, spis })
        }
        PayloadType::VENDOR_ID => Payload::VendorId(r.rest_vec()?),
        PayloadType::TSI => Payload::TsI(decode_ts(&mut r)?),
        PayloadType::TSR => Payload::TsR(decode_ts(&mut r)?),
        PayloadType::SK => Payload::Sk(SkPayload { next_payload: np, data: r.rest_vec()? }),
        PayloadType::SKF => {
            let fragment_number = r.u16("SKF payload")?;
            let total_fragments = r.u16("SKF payload")?;
            if fragment_number == 0 || total_fragments == 0 || fragment_number > total_fragments {
                return Err(DecodeError::Malformed("SKF fragment numbering"));
            }
            Payload::Skf(SkfPayload { next_payload: np, fragment_number, total_fragments, data: r.rest_vec()? })
        }
        PayloadType::CP => {
            let cfg_type = CfgType(r.u8("CP payload")?);
            r.take(3, "CP payload")?;
            let mut attributes = Vec::new();
            while r.remaining() > 0 {
                if attributes.len() >= MAX_ATTRIBUTES {
                    return Err(DecodeError::TooMany("config attributes"));
                }
                r.budget.item::<ConfigAttribute>()?;
                let ty = r.u16("config attribute")? & 0x7fff;
                let len = r.u16("config attribute")? as usize;
                let value = r.bytes(len, "config attribute value")?;
                attributes.push(ConfigAttribute { attr_type: ConfigAttrType(ty), value });
            }
            Payload::Cp(CpPayload { cfg_type, attributes })
        }
        PayloadType::EAP => Payload::Eap(r.rest_vec()?),
        other => {
            if critical {
                return Err(DecodeError::UnsupportedCriticalPayload(other));
            }
            Payload::Unknown { payload_type: other, critical, body: r.rest_vec()? }
        }
    };
    Ok(p)
}

fn decode_sa(r: &mut Reader<'_, '_>) -> Result<SaPayload, DecodeError> {
    let mut proposals = Vec::new();
    loop {
        if proposals.len() >= MAX_PROPOSALS {
            return Err(DecodeError::TooMany("proposals"));
        }
        r.budget.item::<Proposal>()?;
        let more = r.u8("proposal")?;
        r.u8("proposal")?;
        let plen = r.u16("proposal")? as usize;
        if plen < 8 {
            return Err(DecodeError::BadLength("proposal length"));
        }
        let mut pr = r.sub(plen - 4, "proposal")?;
        let number = pr.u8("proposal")?;
        let protocol = ProtocolId(pr.u8("proposal")?);
        let spi_size = pr.u8("proposal")? as usize;
        let ntrans = pr.u8("proposal")? as usize;
        let spi = pr.bytes(spi_size, "proposal SPI")?;
        // a transform takes at least 8 bytes
        if ntrans > pr.remaining() / 8 {
            return Err(DecodeError::BadLength("transform count vs proposal length"));
        }
        let mut transforms = pr.vec_for(ntrans, 8);
        for i in 0..ntrans {
            pr.budget.item::<Transform>()?;
            let tmore = pr.u8("transform")?;
            pr.u8("transform")?;
            let tlen = pr.u16("transform")? as usize;
            if tlen < 8 {
                return Err(DecodeError::BadLength("transform length"));
            }
            let mut tr = pr.sub(tlen - 4, "transform")?;
            let last = i + 1 == ntrans;
            if (last && tmore != 0) || (!last && tmore != 3) {
                return Err(DecodeError::Malformed("transform last/more flag"));
            }
            let transform_type = TransformType(tr.u8("transform")?);
            tr.u8("transform")?;
            let id = tr.u16("transform")?;
            let mut attributes = tr.vec_for(MAX_ATTRIBUTES, 4);
            while tr.remaining() > 0 {
                if attributes.len() >= MAX_ATTRIBUTES {
                    return Err(DecodeError::TooMany("attributes"));
                }
                tr.budget.item::<Attribute>()?;
                let at = tr.u16("attribute")?;
                if at & 0x8000 != 0 {
                    let value = tr.u16("attribute")?;
                    attributes.push(Attribute::Tv { attr_type: at & 0x7fff, value });
                } else {
                    let len = tr.u16("attribute")? as usize;
                    let value = tr.bytes(len, "attribute value")?;
                    attributes.push(Attribute::Tlv { attr_type: at, value });
                }
            }
            transforms.push(Transform { transform_type, id, attributes });
        }
        if pr.remaining() != 0 {
            return Err(DecodeError::BadLength("proposal length vs transforms"));
        }
        proposals.push(Proposal { number, protocol, spi, transforms });
        match more {
            0 => break,
            2 => continue,
            _ => return Err(DecodeError::Malformed("proposal last/more flag")),
        }
    }
    if r.remaining() != 0 {
        return Err(DecodeError::Malformed("data after last proposal"));
    }
    Ok(SaPayload { proposals })
}

fn decode_ts(r: &mut Reader<'_, '_>) -> Result<TsPayload, DecodeError> {
    let n = r.u8("TS payload")? as usize;
    r.take(3, "TS payload")?;
    // a selector takes at least its 4-byte header (unknown types may have no body)
    if n > r.remaining() / 4 {
        return Err(DecodeError::BadLength("selector count vs TS payload length"));
    }
    let mut selectors = r.vec_for(n, 4);
    for _ in 0..n {
        r.budget.item::<TrafficSelector>()?;
        let ts_type = TsType(r.u8("traffic selector")?);
        let ip_protocol = r.u8("traffic selector")?;
        let len = r.u16("traffic selector")? as usize;
        if len < 4 {
            return Err(DecodeError::BadLength("traffic selector length"));
        }
        let mut sr = r.sub(len - 4, "traffic selector")?;
        let sel = match ts_type {
            TsType::IPV4_ADDR_RANGE | TsType::IPV6_ADDR_RANGE => {
                let alen = if ts_type == TsType::IPV4_ADDR_RANGE { 4 } else { 16 };
                if sr.remaining() != 4 + 2 * alen {
                    return Err(DecodeError::BadLength("traffic selector length"));
                }
                let start_port = sr.u16("traffic selector")?;
                let end_port = sr.u16("traffic selector")?;
                let a = sr.take(alen, "traffic selector")?;
                let b = sr.take(alen, "traffic selector")?;
                let (start_addr, end_addr) = if alen == 4 {
                    let mut x = [0u8; 4];
                    let mut y = [0u8; 4];
                    x.copy_from_slice(a);
                    y.copy_from_slice(b);
                    (IpAddr::V4(Ipv4Addr::from(x)), IpAddr::V4(Ipv4Addr::from(y)))
                } else {
                    let mut x = [0u8; 16];
                    let mut y = [0u8; 16];
                    x.copy_from_slice(a);
                    y.copy_from_slice(b);
                    (IpAddr::V6(Ipv6Addr::from(x)), IpAddr::V6(Ipv6Addr::from(y)))
                };
                TrafficSelector::Range(TsRange { ip_protocol, start_port, end_port, start_addr, end_addr })
            }
            _ => TrafficSelector::Other { ts_type, ip_protocol, body: sr.rest_vec()? },
        };
        selectors.push(sel);
    }
    if r.remaining() != 0 {
        return Err(DecodeError::Malformed("data after last traffic selector"));
    }
    Ok(TsPayload { selectors })
}
