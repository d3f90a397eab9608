//! Every payload type at its decode limits (issue 10, item 1): the most the
//! bytes can hold is accepted, one more is rejected, and a count claiming
//! more than the bytes hold is rejected before anything is allocated.

use wisp_ike::codec::sk::{decrypt_fragment, encrypt_fragments, encrypt_message, Reassembler, SkError};
use wisp_ike::codec::*;
use wisp_ike::crypto::{EncrAlg, SkCipher};

/// A message with the given raw payloads `(type, flags, body)`, chained in order.
fn raw_message(payloads: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (i, (_, b)) in payloads.iter().enumerate() {
        let np = payloads.get(i + 1).map_or(0, |p| p.0);
        body.push(np);
        body.push(0);
        body.extend_from_slice(&((b.len() + 4) as u16).to_be_bytes());
        body.extend_from_slice(b);
    }
    let first = payloads.first().map_or(PayloadType::NONE, |p| PayloadType(p.0));
    let mut out = Vec::new();
    let h = Header::new(0x0102030405060708, 0, ExchangeType::IKE_SA_INIT, Flags::new(true, false), 0);
    h.encode_into(first, (Header::LEN + body.len()) as u32, &mut out);
    out.extend_from_slice(&body);
    out
}

fn one(t: PayloadType, body: Vec<u8>) -> Result<Message, DecodeError> {
    Message::decode(&raw_message(&[(t.0, body)]))
}

fn delete_body(spi_size: u8, count: u16, spi_bytes: usize) -> Vec<u8> {
    let mut b = vec![3, spi_size];
    b.extend_from_slice(&count.to_be_bytes());
    b.extend((0..spi_bytes).map(|i| i as u8));
    b
}

#[test]
fn delete_zero_size_spis_only_with_count_zero() {
    let m = one(PayloadType::DELETE, vec![1, 0, 0, 0]).unwrap();
    assert!(matches!(&m.payloads[0], Payload::Delete(d) if d.spis.is_empty() && d.spi_size == 0));
    assert_eq!(one(PayloadType::DELETE, vec![1, 0, 0, 1]), Err(DecodeError::Malformed("Delete SPIs of size zero")));
    assert_eq!(one(PayloadType::DELETE, vec![1, 0, 0xff, 0xff]), Err(DecodeError::Malformed("Delete SPIs of size zero")));
}

#[test]
fn delete_at_its_limits() {
    // the largest payload: 65535 - 4 (generic header) - 4 (Delete header) = 65527 bytes of SPIs,
    // but the message must fit 64 KiB too: 16,368 four-byte SPIs
    let max = (DecodeLimits::DEFAULT.max_len - Header::LEN - 8) / 4;
    let m = one(PayloadType::DELETE, delete_body(4, max as u16, max * 4)).unwrap();
    assert!(matches!(&m.payloads[0], Payload::Delete(d) if d.spis.len() == max));
    // one more SPI: the message exceeds the 64 KiB input limit
    assert_eq!(one(PayloadType::DELETE, delete_body(4, max as u16 + 1, (max + 1) * 4)), Err(DecodeError::OverBudget("input length")));
    // a count claiming one more SPI than present
    assert_eq!(one(PayloadType::DELETE, delete_body(4, 11, 40)), Err(DecodeError::BadLength("Delete SPIs")));
    assert_eq!(one(PayloadType::DELETE, delete_body(4, 0xffff, 4)), Err(DecodeError::BadLength("Delete SPIs")));
}

#[test]
fn delete_of_one_byte_spis_is_bounded_by_the_memory_budget() {
    // each 1-byte SPI costs a Vec header in memory: the budget caps how many
    let accepted = |n: usize| one(PayloadType::DELETE, delete_body(1, n as u16, n)).is_ok();
    let mut lo = 1; // accepted
    let mut hi = 60_000; // rejected
    assert!(accepted(lo) && !accepted(hi));
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if accepted(mid) {
            lo = mid
        } else {
            hi = mid
        }
    }
    assert!(lo >= 150, "a Delete of {lo} one-byte SPIs should fit the budget");
    assert_eq!(one(PayloadType::DELETE, delete_body(1, hi as u16, hi)), Err(DecodeError::OverBudget("decoded memory")));
}

fn ts_body(claimed: u8, present: usize) -> Vec<u8> {
    let mut b = vec![claimed, 0, 0, 0];
    for i in 0..present {
        b.extend_from_slice(&[7, 6, 0, 16, 0, 0, 0xff, 0xff, 10, 0, 0, i as u8, 10, 0, 0, 255]);
    }
    b
}

#[test]
fn ts_at_its_limits() {
    let m = one(PayloadType::TSI, ts_body(255, 255)).unwrap();
    assert!(matches!(&m.payloads[0], Payload::TsI(t) if t.selectors.len() == 255));
    // one selector more than the count (which cannot exceed 255)
    assert_eq!(one(PayloadType::TSI, ts_body(255, 256)), Err(DecodeError::Malformed("data after last traffic selector")));
    // a count claiming more selectors than the bytes can hold (4 bytes at least each)
    assert_eq!(one(PayloadType::TSR, ts_body(255, 1)), Err(DecodeError::BadLength("selector count vs TS payload length")));
    assert_eq!(one(PayloadType::TSR, ts_body(9, 2)), Err(DecodeError::BadLength("selector count vs TS payload length")));
}

/// An SA payload of `nprop` proposals, each with `ntrans` transforms
/// (`claimed` in the count field), each with `nattr` TV attributes.
fn sa_body(nprop: usize, ntrans: usize, claimed: u8, nattr: usize) -> Vec<u8> {
    let mut b = Vec::new();
    for p in 0..nprop {
        let mut tr = Vec::new();
        for t in 0..ntrans {
            let tlen = 8 + 4 * nattr;
            tr.extend_from_slice(&[if t + 1 == ntrans { 0 } else { 3 }, 0]);
            tr.extend_from_slice(&(tlen as u16).to_be_bytes());
            tr.extend_from_slice(&[1, 0, 0, 20]);
            for _ in 0..nattr {
                tr.extend_from_slice(&[0x80, 14, 1, 0]);
            }
        }
        b.extend_from_slice(&[if p + 1 == nprop { 0 } else { 2 }, 0]);
        b.extend_from_slice(&((8 + tr.len()) as u16).to_be_bytes());
        b.extend_from_slice(&[(p + 1) as u8, 1, 0, claimed]);
        b.extend_from_slice(&tr);
    }
    b
}

#[test]
fn sa_proposals_at_their_limit() {
    let m = one(PayloadType::SA, sa_body(MAX_PROPOSALS, 0, 0, 0)).unwrap();
    assert!(matches!(&m.payloads[0], Payload::Sa(s) if s.proposals.len() == MAX_PROPOSALS));
    assert_eq!(one(PayloadType::SA, sa_body(MAX_PROPOSALS + 1, 0, 0, 0)), Err(DecodeError::TooMany("proposals")));
}

#[test]
fn sa_transforms_at_their_limit() {
    let m = one(PayloadType::SA, sa_body(1, 255, 255, 0)).unwrap();
    assert!(matches!(&m.payloads[0], Payload::Sa(s) if s.proposals[0].transforms.len() == 255));
    // more transforms than the (one-byte) count
    assert!(one(PayloadType::SA, sa_body(1, 256, 255, 0)).is_err());
    // a count claiming more transforms than the proposal's bytes can hold
    assert_eq!(one(PayloadType::SA, sa_body(1, 3, 255, 0)), Err(DecodeError::BadLength("transform count vs proposal length")));
    assert_eq!(one(PayloadType::SA, sa_body(1, 3, 4, 0)), Err(DecodeError::BadLength("transform count vs proposal length")));
}

#[test]
fn sa_attributes_at_their_limit() {
    let m = one(PayloadType::SA, sa_body(1, 1, 1, MAX_ATTRIBUTES)).unwrap();
    assert!(matches!(&m.payloads[0], Payload::Sa(s) if s.proposals[0].transforms[0].attributes.len() == MAX_ATTRIBUTES));
    assert_eq!(one(PayloadType::SA, sa_body(1, 1, 1, MAX_ATTRIBUTES + 1)), Err(DecodeError::TooMany("attributes")));
    // a TLV attribute whose length claims more than the transform holds
    let mut b = sa_body(1, 1, 1, 0);
    b[2..4].copy_from_slice(&20u16.to_be_bytes());
    b[10..12].copy_from_slice(&12u16.to_be_bytes());
    b.extend_from_slice(&[0, 7, 0xff, 0xff]);
    assert_eq!(one(PayloadType::SA, b), Err(DecodeError::Truncated("attribute value")));
}

fn cp_body(n: usize) -> Vec<u8> {
    let mut b = vec![1, 0, 0, 0];
    for _ in 0..n {
        b.extend_from_slice(&[0, 1, 0, 0]);
    }
    b
}

#[test]
fn cp_attributes_at_their_limit() {
    let m = one(PayloadType::CP, cp_body(MAX_ATTRIBUTES)).unwrap();
    assert!(matches!(&m.payloads[0], Payload::Cp(c) if c.attributes.len() == MAX_ATTRIBUTES));
    assert_eq!(one(PayloadType::CP, cp_body(MAX_ATTRIBUTES + 1)), Err(DecodeError::TooMany("config attributes")));
    let mut b = cp_body(1);
    b.extend_from_slice(&[0, 1, 0xff, 0xff, 1]);
    assert_eq!(one(PayloadType::CP, b), Err(DecodeError::Truncated("config attribute value")));
}

#[test]
fn notify_spi_at_its_limit() {
    let mut b = vec![3, 255, 0x40, 0x01];
    b.extend(std::iter::repeat_n(9, 255));
    let m = one(PayloadType::NOTIFY, b.clone()).unwrap();
    assert!(matches!(&m.payloads[0], Payload::Notify(n) if n.spi.len() == 255 && n.data.is_empty()));
    b.pop();
    assert_eq!(one(PayloadType::NOTIFY, b), Err(DecodeError::Truncated("Notify SPI")));
}

/// Byte-string payloads: the largest body a 64 KiB message can carry is
/// accepted, one byte more exceeds the input limit, and a payload length
/// beyond the bytes present is rejected.
#[test]
fn byte_string_payloads_at_their_limits() {
    let max_body = DecodeLimits::DEFAULT.max_len - Header::LEN - 4;
    for t in [
        PayloadType::KE,
        PayloadType::IDI,
        PayloadType::IDR,
        PayloadType::CERT,
        PayloadType::CERTREQ,
        PayloadType::AUTH,
        PayloadType::NONCE,
        PayloadType::VENDOR_ID,
        PayloadType::EAP,
        PayloadType(200),
    ] {
        let m = one(t, vec![0; max_body]).unwrap_or_else(|e| panic!("{t:?}: {e}"));
        assert_eq!(m.payloads.len(), 1);
        assert_eq!(one(t, vec![0; max_body + 1]), Err(DecodeError::OverBudget("input length")), "{t:?}");
        let mut b = raw_message(&[(t.0, vec![0; 16])]);
        b[Header::LEN + 2..Header::LEN + 4].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(Message::decode(&b), Err(DecodeError::Truncated("payload body")), "{t:?}");
    }
}

#[test]
fn payload_count_at_its_limit() {
    let vids = |n: usize| raw_message(&vec![(PayloadType::VENDOR_ID.0, Vec::new()); n]);
    assert_eq!(Message::decode(&vids(MAX_PAYLOADS)).unwrap().payloads.len(), MAX_PAYLOADS);
    assert_eq!(Message::decode(&vids(MAX_PAYLOADS + 1)), Err(DecodeError::TooMany("payloads")));
}

fn cipher() -> SkCipher {
    SkCipher::new(EncrAlg::AesGcm16_128, &[7u8; 20]).unwrap()
}

#[test]
fn sk_outer_and_inner_chains_share_one_payload_budget() {
    let h = Header::new(1, 2, ExchangeType::INFORMATIONAL, Flags::new(true, false), 1);
    let inner = |n: usize| vec![Payload::VendorId(Vec::new()); n];
    // the SK payload itself counts: MAX_PAYLOADS - 1 inner payloads fit
    let ok = encrypt_message(&h, &inner(MAX_PAYLOADS - 1), &mut cipher()).unwrap();
    assert_eq!(sk::decrypt_message(&ok, &cipher()).unwrap().payloads.len(), MAX_PAYLOADS - 1);
    let over = encrypt_message(&h, &inner(MAX_PAYLOADS), &mut cipher()).unwrap();
    assert_eq!(sk::decrypt_message(&over, &cipher()), Err(SkError::Decode(DecodeError::TooMany("payloads"))));
}

#[test]
fn skf_numbering_limits() {
    let skf = |num: u16, total: u16| {
        let mut b = num.to_be_bytes().to_vec();
        b.extend_from_slice(&total.to_be_bytes());
        b.extend_from_slice(&[0; 24]);
        one(PayloadType::SKF, b)
    };
    assert!(skf(1, 1).is_ok());
    assert!(skf(0xffff, 0xffff).is_ok()); // the codec keeps it; the reassembler caps the count
    assert_eq!(skf(2, 1), Err(DecodeError::Malformed("SKF fragment numbering")));
    assert_eq!(skf(0, 1), Err(DecodeError::Malformed("SKF fragment numbering")));
}

#[test]
fn fragments_at_their_limits() {
    let h = Header::new(1, 2, ExchangeType::IKE_AUTH, Flags::new(true, false), 1);
    let frag = |number: u16, total: u16, len: usize| {
        let data = zeroize::Zeroizing::new(vec![0u8; len]);
        sk::Fragment { header: h, number, total, next_payload: PayloadType::NONE, data }
    };
    // MAX_FRAGMENTS fragments are reassembled (an empty chain: NONE, no bytes)
    let mut r = Reassembler::new();
    for i in 1..Reassembler::MAX_FRAGMENTS {
        assert_eq!(r.add(frag(i, Reassembler::MAX_FRAGMENTS, 0)).unwrap(), None);
    }
    assert!(r.add(frag(Reassembler::MAX_FRAGMENTS, Reassembler::MAX_FRAGMENTS, 0)).unwrap().is_some());
    // one more announced fragment is refused
    let mut r = Reassembler::new();
    assert_eq!(r.add(frag(1, Reassembler::MAX_FRAGMENTS + 1, 0)), Err(SkError::Fragment("too many fragments")));
    // the total reassembled size is capped
    let mut r = Reassembler::new();
    let per = Reassembler::MAX_BYTES / 3;
    assert_eq!(per * 3, Reassembler::MAX_BYTES);
    for i in 1..=3 {
        assert_eq!(r.add(frag(i, 8, per)).unwrap(), None);
    }
    assert_eq!(r.add(frag(4, 8, 1)), Err(SkError::Fragment("reassembled message too large")));
    // real fragments of a message near the size cap still reassemble
    let inner = vec![Payload::Cert(CertPayload { encoding: CertEncoding::X509_SIGNATURE, data: vec![5; 60_000] })];
    let frags = encrypt_fragments(&h, &inner, &mut cipher(), 1280).unwrap();
    let mut r = Reassembler::new();
    let mut done = None;
    for f in &frags {
        done = r.add(decrypt_fragment(f, &cipher()).unwrap()).unwrap();
    }
    assert_eq!(done.unwrap().payloads, inner);
}
