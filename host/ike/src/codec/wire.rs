//! Wire encoding and decoding of IKE headers, payload chains and messages.

use super::registry::*;
use super::types::*;
use super::{DecodeError, EncodeError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Upper bound on the number of payloads in one chain (defence against
/// pathological inputs; a valid IKE message has far fewer).
pub const MAX_PAYLOADS: usize = 256;
/// Upper bound on proposals per SA payload (the proposal number is one byte).
pub const MAX_PROPOSALS: usize = 255;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
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
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
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
        let mut r = Reader::new(buf);
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
        let info = Header::decode(buf)?;
        if info.length as usize != buf.len() {
            return Err(DecodeError::BadLength("IKE message length"));
        }
        let payloads = decode_chain(info.next_payload, &buf[Header::LEN..])?;
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
    let mut out = Vec::new();
    let mut next = first;
    let mut r = Reader::new(buf);
    while next != PayloadType::NONE {
        if out.len() >= MAX_PAYLOADS {
            return Err(DecodeError::TooMany("payloads"));
        }
        let np = PayloadType(r.u8("generic payload header")?);
        let flags = r.u8("generic payload header")?;
        let len = r.u16("generic payload header")? as usize;
        if len < 4 {
            return Err(DecodeError::BadLength("payload length"));
        }
        let body = r.take(len - 4, "payload body")?;
        let critical = flags & 0x80 != 0;
        let this = next;
        let p = decode_payload(this, np, critical, body)?;
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
    let mut r = Reader::new(body);
    let p = match t {
        PayloadType::SA => Payload::Sa(decode_sa(body)?),
        PayloadType::KE => {
            let group = r.u16("KE payload")?;
            r.take(2, "KE payload")?;
            Payload::Ke(KePayload { group, data: r.rest().to_vec() })
        }
        PayloadType::IDI | PayloadType::IDR => {
            let id_type = IdType(r.u8("ID payload")?);
            r.take(3, "ID payload")?;
            let id = IdPayload { id_type, data: r.rest().to_vec() };
            if t == PayloadType::IDI {
                Payload::IdI(id)
            } else {
                Payload::IdR(id)
            }
        }
        PayloadType::CERT | PayloadType::CERTREQ => {
            let encoding = CertEncoding(r.u8("CERT payload")?);
            let c = CertPayload { encoding, data: r.rest().to_vec() };
            if t == PayloadType::CERT {
                Payload::Cert(c)
            } else {
                Payload::CertReq(c)
            }
        }
        PayloadType::AUTH => {
            let method = AuthMethod(r.u8("AUTH payload")?);
            r.take(3, "AUTH payload")?;
            Payload::Auth(AuthPayload { method, data: r.rest().to_vec() })
        }
        PayloadType::NONCE => Payload::Nonce(body.to_vec()),
        PayloadType::NOTIFY => {
            let protocol = ProtocolId(r.u8("Notify payload")?);
            let spi_size = r.u8("Notify payload")? as usize;
            let notify_type = NotifyType(r.u16("Notify payload")?);
            let spi = r.take(spi_size, "Notify SPI")?.to_vec();
            Payload::Notify(NotifyPayload { protocol, spi, notify_type, data: r.rest().to_vec() })
        }
        PayloadType::DELETE => {
            let protocol = ProtocolId(r.u8("Delete payload")?);
            let spi_size = r.u8("Delete payload")?;
            let n = r.u16("Delete payload")? as usize;
            let need = n.checked_mul(spi_size as usize).ok_or(DecodeError::BadLength("Delete SPIs"))?;
            if r.remaining() != need {
                return Err(DecodeError::BadLength("Delete SPIs"));
            }
            let mut spis = Vec::with_capacity(n.min(1024));
            if spi_size == 0 {
                // n SPIs of size zero: representable only as n empty vectors.
                spis.resize(n, Vec::new());
            } else {
                for _ in 0..n {
                    spis.push(r.take(spi_size as usize, "Delete SPI")?.to_vec());
                }
            }
            Payload::Delete(DeletePayload { protocol, spi_size, spis })
        }
        PayloadType::VENDOR_ID => Payload::VendorId(body.to_vec()),
        PayloadType::TSI => Payload::TsI(decode_ts(body)?),
        PayloadType::TSR => Payload::TsR(decode_ts(body)?),
        PayloadType::SK => Payload::Sk(SkPayload { next_payload: np, data: body.to_vec() }),
        PayloadType::SKF => {
            let fragment_number = r.u16("SKF payload")?;
            let total_fragments = r.u16("SKF payload")?;
            if fragment_number == 0 || total_fragments == 0 || fragment_number > total_fragments {
                return Err(DecodeError::Malformed("SKF fragment numbering"));
            }
            Payload::Skf(SkfPayload { next_payload: np, fragment_number, total_fragments, data: r.rest().to_vec() })
        }
        PayloadType::CP => {
            let cfg_type = CfgType(r.u8("CP payload")?);
            r.take(3, "CP payload")?;
            let mut attributes = Vec::new();
            while r.remaining() > 0 {
                if attributes.len() >= MAX_PAYLOADS {
                    return Err(DecodeError::TooMany("config attributes"));
                }
                let ty = r.u16("config attribute")? & 0x7fff;
                let len = r.u16("config attribute")? as usize;
                let value = r.take(len, "config attribute value")?.to_vec();
                attributes.push(ConfigAttribute { attr_type: ConfigAttrType(ty), value });
            }
            Payload::Cp(CpPayload { cfg_type, attributes })
        }
        PayloadType::EAP => Payload::Eap(body.to_vec()),
        other => {
            if critical {
                return Err(DecodeError::UnsupportedCriticalPayload(other));
            }
            Payload::Unknown { payload_type: other, critical, body: body.to_vec() }
        }
    };
    Ok(p)
}

fn decode_sa(body: &[u8]) -> Result<SaPayload, DecodeError> {
    let mut r = Reader::new(body);
    let mut proposals = Vec::new();
    loop {
        if proposals.len() >= MAX_PROPOSALS {
            return Err(DecodeError::TooMany("proposals"));
        }
        let more = r.u8("proposal")?;
        r.u8("proposal")?;
        let plen = r.u16("proposal")? as usize;
        if plen < 8 {
            return Err(DecodeError::BadLength("proposal length"));
        }
        let pbody = r.take(plen - 4, "proposal")?;
        let mut pr = Reader::new(pbody);
        let number = pr.u8("proposal")?;
        let protocol = ProtocolId(pr.u8("proposal")?);
        let spi_size = pr.u8("proposal")? as usize;
        let ntrans = pr.u8("proposal")? as usize;
        let spi = pr.take(spi_size, "proposal SPI")?.to_vec();
        let mut transforms = Vec::with_capacity(ntrans);
        for i in 0..ntrans {
            let tmore = pr.u8("transform")?;
            pr.u8("transform")?;
            let tlen = pr.u16("transform")? as usize;
            if tlen < 8 {
                return Err(DecodeError::BadLength("transform length"));
            }
            let tbody = pr.take(tlen - 4, "transform")?;
            let last = i + 1 == ntrans;
            if (last && tmore != 0) || (!last && tmore != 3) {
                return Err(DecodeError::Malformed("transform last/more flag"));
            }
            let mut tr = Reader::new(tbody);
            let transform_type = TransformType(tr.u8("transform")?);
            tr.u8("transform")?;
            let id = tr.u16("transform")?;
            let mut attributes = Vec::new();
            while tr.remaining() > 0 {
                if attributes.len() >= MAX_PAYLOADS {
                    return Err(DecodeError::TooMany("attributes"));
                }
                let at = tr.u16("attribute")?;
                if at & 0x8000 != 0 {
                    let value = tr.u16("attribute")?;
                    attributes.push(Attribute::Tv { attr_type: at & 0x7fff, value });
                } else {
                    let len = tr.u16("attribute")? as usize;
                    let value = tr.take(len, "attribute value")?.to_vec();
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

fn decode_ts(body: &[u8]) -> Result<TsPayload, DecodeError> {
    let mut r = Reader::new(body);
    let n = r.u8("TS payload")? as usize;
    r.take(3, "TS payload")?;
    let mut selectors = Vec::with_capacity(n);
    for _ in 0..n {
        let ts_type = TsType(r.u8("traffic selector")?);
        let ip_protocol = r.u8("traffic selector")?;
        let len = r.u16("traffic selector")? as usize;
        if len < 4 {
            return Err(DecodeError::BadLength("traffic selector length"));
        }
        let sbody = r.take(len - 4, "traffic selector")?;
        let mut sr = Reader::new(sbody);
        let sel = match ts_type {
            TsType::IPV4_ADDR_RANGE | TsType::IPV6_ADDR_RANGE => {
                let alen = if ts_type == TsType::IPV4_ADDR_RANGE { 4 } else { 16 };
                if sbody.len() != 4 + 2 * alen {
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
            _ => TrafficSelector::Other { ts_type, ip_protocol, body: sbody.to_vec() },
        };
        selectors.push(sel);
    }
    if r.remaining() != 0 {
        return Err(DecodeError::Malformed("data after last traffic selector"));
    }
    Ok(TsPayload { selectors })
}
