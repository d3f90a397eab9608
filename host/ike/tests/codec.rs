//! Codec tests: property tests (decode never panics; encode ∘ decode is the
//! identity for arbitrary valid messages; SK and SKF round trips incl.
//! out-of-order reassembly) and targeted cases (critical bit, malformed
//! input, unknown registry values).

use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use wisp_ike::codec::sk::{decrypt_fragment, decrypt_message, encrypt_fragments, encrypt_message, Reassembler, SkError};
use wisp_ike::codec::*;
use wisp_ike::crypto::{CryptoError, EncrAlg, SkCipher};

// ---------- strategies ----------

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn header() -> impl Strategy<Value = Header> {
    (any::<u64>(), any::<u64>(), 0u8..16, any::<u8>(), any::<u8>(), any::<u32>()).prop_map(
        |(spi_i, spi_r, minor_version, ex, flags, message_id)| Header {
            spi_i,
            spi_r,
            major_version: 2,
            minor_version,
            exchange: ExchangeType(ex),
            flags: Flags(flags),
            message_id,
        },
    )
}

fn attribute() -> impl Strategy<Value = Attribute> {
    prop_oneof![
        (0u16..0x8000, any::<u16>()).prop_map(|(attr_type, value)| Attribute::Tv { attr_type, value }),
        (0u16..0x8000, bytes(12)).prop_map(|(attr_type, value)| Attribute::Tlv { attr_type, value }),
    ]
}

fn transform() -> impl Strategy<Value = Transform> {
    (any::<u8>(), any::<u16>(), proptest::collection::vec(attribute(), 0..3)).prop_map(|(t, id, attributes)| Transform {
        transform_type: TransformType(t),
        id,
        attributes,
    })
}

fn proposal() -> impl Strategy<Value = Proposal> {
    (any::<u8>(), any::<u8>(), bytes(9), proptest::collection::vec(transform(), 0..6)).prop_map(|(number, p, spi, transforms)| Proposal {
        number,
        protocol: ProtocolId(p),
        spi,
        transforms,
    })
}

fn ts() -> impl Strategy<Value = TrafficSelector> {
    prop_oneof![
        (any::<u8>(), any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>()).prop_map(|(p, a, b, x, y)| {
            TrafficSelector::Range(TsRange {
                ip_protocol: p,
                start_port: a,
                end_port: b,
                start_addr: IpAddr::V4(Ipv4Addr::from(x)),
                end_addr: IpAddr::V4(Ipv4Addr::from(y)),
            })
        }),
        (any::<u8>(), any::<u16>(), any::<u16>(), any::<u128>(), any::<u128>()).prop_map(|(p, a, b, x, y)| {
            TrafficSelector::Range(TsRange {
                ip_protocol: p,
                start_port: a,
                end_port: b,
                start_addr: IpAddr::V6(Ipv6Addr::from(x)),
                end_addr: IpAddr::V6(Ipv6Addr::from(y)),
            })
        }),
        (any::<u8>().prop_filter("unknown TS type", |t| *t != 7 && *t != 8), any::<u8>(), bytes(20))
            .prop_map(|(t, ip_protocol, body)| TrafficSelector::Other { ts_type: TsType(t), ip_protocol, body }),
    ]
}

fn delete() -> impl Strategy<Value = DeletePayload> {
    // SPI size 0 only without SPIs (RFC 7296 3.11; the decoder refuses the rest)
    (any::<u8>(), 0u8..9, 0usize..5).prop_map(|(p, size, n)| (p, size, if size == 0 { 0 } else { n })).prop_flat_map(|(p, size, n)| {
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), size as usize), n).prop_map(move |spis| DeletePayload {
            protocol: ProtocolId(p),
            spi_size: size,
            spis,
        })
    })
}

/// Any payload that may appear before the end of a chain (no SK/SKF).
fn plain_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        proptest::collection::vec(proposal(), 1..4).prop_map(|proposals| Payload::Sa(SaPayload { proposals })),
        (any::<u16>(), bytes(100)).prop_map(|(group, data)| Payload::Ke(KePayload { group, data })),
        (any::<u8>(), bytes(40)).prop_map(|(t, data)| Payload::IdI(IdPayload { id_type: IdType(t), data })),
        (any::<u8>(), bytes(40)).prop_map(|(t, data)| Payload::IdR(IdPayload { id_type: IdType(t), data })),
        (any::<u8>(), bytes(60)).prop_map(|(e, data)| Payload::Cert(CertPayload { encoding: CertEncoding(e), data })),
        (any::<u8>(), bytes(60)).prop_map(|(e, data)| Payload::CertReq(CertPayload { encoding: CertEncoding(e), data })),
        (any::<u8>(), bytes(64)).prop_map(|(m, data)| Payload::Auth(AuthPayload { method: AuthMethod(m), data })),
        bytes(64).prop_map(Payload::Nonce),
        (any::<u8>(), bytes(9), any::<u16>(), bytes(40)).prop_map(|(p, spi, t, data)| Payload::Notify(NotifyPayload {
            protocol: ProtocolId(p),
            spi,
            notify_type: NotifyType(t),
            data
        })),
        delete().prop_map(Payload::Delete),
        bytes(40).prop_map(Payload::VendorId),
        proptest::collection::vec(ts(), 0..4).prop_map(|selectors| Payload::TsI(TsPayload { selectors })),
        proptest::collection::vec(ts(), 0..4).prop_map(|selectors| Payload::TsR(TsPayload { selectors })),
        (any::<u8>(), proptest::collection::vec((0u16..0x8000, bytes(20)), 0..4)).prop_map(|(t, attrs)| {
            Payload::Cp(CpPayload {
                cfg_type: CfgType(t),
                attributes: attrs.into_iter().map(|(a, value)| ConfigAttribute { attr_type: ConfigAttrType(a), value }).collect(),
            })
        }),
        bytes(40).prop_map(Payload::Eap),
        ((1u8..=255).prop_filter("unknown type", |t| !is_known_payload_type(PayloadType(*t))), bytes(30))
            .prop_map(|(t, body)| Payload::Unknown { payload_type: PayloadType(t), critical: false, body }),
    ]
}

fn last_encrypted() -> impl Strategy<Value = Option<Payload>> {
    prop_oneof![
        Just(None),
        (any::<u8>(), bytes(80)).prop_map(|(np, data)| Some(Payload::Sk(SkPayload { next_payload: PayloadType(np), data }))),
        (any::<u8>(), 1u16..20, bytes(80)).prop_flat_map(|(np, total, data)| {
            (1..=total).prop_map(move |n| {
                Some(Payload::Skf(SkfPayload {
                    next_payload: PayloadType(np),
                    fragment_number: n,
                    total_fragments: total,
                    data: data.clone(),
                }))
            })
        }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (header(), proptest::collection::vec(plain_payload(), 0..8), last_encrypted()).prop_map(|(header, mut p, e)| {
        p.extend(e);
        Message { header, payloads: p }
    })
}

fn alg() -> impl Strategy<Value = EncrAlg> {
    prop_oneof![Just(EncrAlg::AesGcm16_128), Just(EncrAlg::AesGcm16_256), Just(EncrAlg::ChaCha20Poly1305)]
}

fn cipher(alg: EncrAlg, seed: u8) -> SkCipher {
    let km: Vec<u8> = (0..alg.keymat_len()).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
    SkCipher::new(alg, &km).unwrap()
}

// ---------- properties ----------

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(b in bytes(600)) {
        let _ = Message::decode(&b);
        let _ = Header::decode(&b);
        let _ = decode_chain(PayloadType::SA, &b);
        let _ = decode_chain(PayloadType::TSI, &b);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_chain_with_valid_header(t in any::<u8>(), body in bytes(400), h in header()) {
        let mut buf = Vec::new();
        h.encode_into(PayloadType(t), (Header::LEN + body.len()) as u32, &mut buf);
        buf.extend_from_slice(&body);
        let _ = Message::decode(&buf);
    }

    #[test]
    fn decode_never_panics_on_mutated_valid_messages(m in message(), muts in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8), cut in any::<usize>()) {
        let mut b = m.encode().unwrap();
        for (i, x) in muts {
            let n = b.len();
            b[i % n] ^= x;
        }
        let _ = Message::decode(&b);
        let c = cut % (b.len() + 1);
        let _ = Message::decode(&b[..c]);
    }

    #[test]
    fn encode_decode_identity(m in message()) {
        let b = m.encode().unwrap();
        let d = Message::decode(&b).unwrap();
        prop_assert_eq!(&d, &m);
        // and re-encoding is byte-identical
        prop_assert_eq!(d.encode().unwrap(), b);
    }

    #[test]
    fn sk_round_trip(h in header(), inner in proptest::collection::vec(plain_payload(), 0..8), a in alg()) {
        let mut tx = cipher(a, 1);
        let rx = cipher(a, 1);
        let b = encrypt_message(&h, &inner, &mut tx).unwrap();
        let m = decrypt_message(&b, &rx).unwrap();
        prop_assert_eq!(m.header, h);
        prop_assert_eq!(m.payloads, inner);
        // wrong key → integrity failure
        prop_assert!(matches!(decrypt_message(&b, &cipher(a, 2)), Err(SkError::Crypto(CryptoError::Integrity))));
    }

    #[test]
    fn fragment_round_trip_out_of_order(
        h in header(),
        inner in proptest::collection::vec(plain_payload(), 1..8),
        a in alg(),
        mtu in 80usize..400,
        order_seed in any::<u64>(),
        dup in any::<bool>(),
    ) {
        let mut tx = cipher(a, 3);
        let rx = cipher(a, 3);
        let frags = encrypt_fragments(&h, &inner, &mut tx, mtu).unwrap();
        for f in &frags {
            prop_assert!(f.len() <= mtu, "fragment {} > mtu {}", f.len(), mtu);
        }
        // deterministic shuffle
        let mut idx: Vec<usize> = (0..frags.len()).collect();
        let mut s = order_seed | 1;
        for i in (1..idx.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            idx.swap(i, (s % (i as u64 + 1)) as usize);
        }
        if dup && idx.len() > 1 { idx.insert(1, idx[0]); }
        let mut r = Reassembler::new();
        let mut done = None;
        for (k, &i) in idx.iter().enumerate() {
            let f = decrypt_fragment(&frags[i], &rx).unwrap();
            prop_assert_eq!(f.total as usize, frags.len());
            match r.add(f).unwrap() {
                Some(m) => { prop_assert_eq!(k, idx.len() - 1); done = Some(m); }
                None => prop_assert!(k < idx.len() - 1),
            }
        }
        let m = done.unwrap();
        prop_assert_eq!(m.header, h);
        prop_assert_eq!(m.payloads, inner);
    }
}

// ---------- targeted cases ----------

fn sample() -> Message {
    Message {
        header: Header::new(0x1122334455667788, 0, ExchangeType::IKE_SA_INIT, Flags::new(true, false), 0),
        payloads: vec![
            Payload::Sa(SaPayload {
                proposals: vec![Proposal {
                    number: 1,
                    protocol: ProtocolId::IKE,
                    spi: vec![],
                    transforms: vec![
                        Transform::with_key_length(TransformType::ENCR, registry::encr::AES_GCM_16, 256),
                        Transform::new(TransformType::PRF, registry::prf::HMAC_SHA2_256),
                        Transform::new(TransformType::DH, registry::dh::CURVE25519),
                    ],
                }],
            }),
            Payload::Ke(KePayload { group: 31, data: vec![9; 32] }),
            Payload::Nonce(vec![1; 32]),
            Payload::Notify(NotifyPayload::new(NotifyType::NAT_DETECTION_SOURCE_IP, vec![2; 20])),
            Payload::Notify(NotifyPayload::new(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED, vec![])),
        ],
    }
}

#[test]
fn known_wire_layout() {
    let b = sample().encode().unwrap();
    // header
    assert_eq!(&b[..8], &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    assert_eq!(&b[8..16], &[0; 8]);
    assert_eq!(b[16], 33, "next payload SA");
    assert_eq!(b[17], 0x20, "version 2.0");
    assert_eq!(b[18], 34, "IKE_SA_INIT");
    assert_eq!(b[19], 0x08, "I flag");
    assert_eq!(u32::from_be_bytes(b[24..28].try_into().unwrap()) as usize, b.len());
    // SA payload generic header: next = KE
    assert_eq!(b[28], 34);
    let sa_len = u16::from_be_bytes([b[30], b[31]]) as usize;
    // proposal: last, len, num 1, IKE, spi size 0, 3 transforms
    assert_eq!(b[32], 0);
    assert_eq!(&b[36..40], &[1, 1, 0, 3]);
    // first transform: more(3), len 12, ENCR, id 20, KEY_LENGTH TV 256
    assert_eq!(&b[40..52], &[3, 0, 0, 12, 1, 0, 0, 20, 0x80, 14, 1, 0]);
    assert_eq!(sa_len, 4 + 8 + 12 + 8 + 8);
    let m = Message::decode(&b).unwrap();
    assert_eq!(m, sample());
    assert!(m.notify(NotifyType::IKEV2_FRAGMENTATION_SUPPORTED).is_some());
    assert!(m.notify(NotifyType::COOKIE).is_none());
}

#[test]
fn unknown_critical_payload_is_typed_error() {
    let mut b = sample().encode().unwrap();
    // append an unknown payload type 200 after the last notify, critical set
    let last_np = find_last_payload_header(&b);
    b[last_np] = 200;
    b.extend_from_slice(&[0, 0x80, 0, 6, 0xaa, 0xbb]);
    let n = b.len() as u32;
    b[24..28].copy_from_slice(&n.to_be_bytes());
    let e = Message::decode(&b).unwrap_err();
    assert_eq!(e, DecodeError::UnsupportedCriticalPayload(PayloadType(200)));
    assert_eq!(e.notify_type(), NotifyType::UNSUPPORTED_CRITICAL_PAYLOAD);
    assert_eq!(e.notify_data(), vec![200]);
    // without the critical bit: kept and re-encoded unchanged
    let pos = b.len() - 5;
    b[pos] = 0;
    let m = Message::decode(&b).unwrap();
    assert_eq!(m.payloads.last(), Some(&Payload::Unknown { payload_type: PayloadType(200), critical: false, body: vec![0xaa, 0xbb] }));
    assert_eq!(m.encode().unwrap(), b);
}

/// Offset of the next-payload byte of the last payload in a plain message.
fn find_last_payload_header(b: &[u8]) -> usize {
    let mut pos = 28;
    loop {
        let len = u16::from_be_bytes([b[pos + 2], b[pos + 3]]) as usize;
        if b[pos] == 0 {
            return pos;
        }
        pos += len;
    }
}

#[test]
fn critical_bit_on_known_payload_is_accepted() {
    let mut b = sample().encode().unwrap();
    b[29] |= 0x80; // SA payload with critical bit
    assert_eq!(Message::decode(&b).unwrap(), sample());
}

#[test]
fn unknown_critical_inside_sk_is_reported_after_decryption() {
    let h = Header::new(1, 2, ExchangeType::INFORMATIONAL, Flags::new(true, false), 5);
    let mut tx = cipher(EncrAlg::AesGcm16_128, 9);
    let rx = cipher(EncrAlg::AesGcm16_128, 9);
    // build the inner chain by hand: one unknown payload (type 99) with critical bit
    let inner = vec![Payload::Unknown { payload_type: PayloadType(99), critical: true, body: vec![1, 2] }];
    let b = encrypt_message(&h, &inner, &mut tx).unwrap();
    assert_eq!(decrypt_message(&b, &rx), Err(SkError::Decode(DecodeError::UnsupportedCriticalPayload(PayloadType(99)))));
}

#[test]
fn malformed_inputs_are_typed_errors() {
    let good = sample().encode().unwrap();
    // too short for a header
    assert!(matches!(Message::decode(&good[..27]), Err(DecodeError::Truncated(_))));
    // header length disagrees with datagram
    assert!(matches!(Message::decode(&good[..good.len() - 1]), Err(DecodeError::BadLength(_))));
    let mut longer = good.clone();
    longer.push(0);
    assert!(matches!(Message::decode(&longer), Err(DecodeError::BadLength(_))));
    // major version 3
    let mut v3 = good.clone();
    v3[17] = 0x30;
    assert_eq!(Message::decode(&v3), Err(DecodeError::InvalidMajorVersion(3)));
    assert_eq!(DecodeError::InvalidMajorVersion(3).notify_type(), NotifyType::INVALID_MAJOR_VERSION);
    // payload length < 4
    let mut short = good.clone();
    short[30] = 0;
    short[31] = 3;
    assert!(matches!(Message::decode(&short), Err(DecodeError::BadLength(_))));
    // payload length beyond the message
    let mut over = good.clone();
    over[30] = 0xff;
    assert!(Message::decode(&over).is_err());
    // bad proposal "more" flag
    let mut pm = good.clone();
    pm[32] = 7;
    assert!(matches!(Message::decode(&pm), Err(DecodeError::Malformed(_))));
    // transform count larger than present
    let mut tc = good.clone();
    tc[39] = 9;
    assert!(Message::decode(&tc).is_err());
    // next payload says "none" but bytes remain
    let mut tr = good.clone();
    tr[16] = 0;
    assert!(matches!(Message::decode(&tr), Err(DecodeError::Malformed(_))));
    // SK must be last when encoding
    let m = Message {
        header: sample().header,
        payloads: vec![Payload::Sk(SkPayload { next_payload: PayloadType::NONE, data: vec![] }), Payload::Nonce(vec![])],
    };
    assert!(m.encode().is_err());
    // delete count inconsistent with body
    let d = Message {
        header: sample().header,
        payloads: vec![Payload::Delete(DeletePayload { protocol: ProtocolId::ESP, spi_size: 4, spis: vec![vec![1, 2, 3, 4]] })],
    };
    let mut db = d.encode().unwrap();
    let l = db.len();
    db[l - 5] = 2; // count 2, only one SPI
    assert!(matches!(Message::decode(&db), Err(DecodeError::BadLength(_))));
    // mixed-family traffic selector cannot be encoded
    let t = Message {
        header: sample().header,
        payloads: vec![Payload::TsI(TsPayload {
            selectors: vec![TrafficSelector::Range(TsRange {
                ip_protocol: 0,
                start_port: 0,
                end_port: 65535,
                start_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                end_addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            })],
        })],
    };
    assert!(t.encode().is_err());
    // a too-long payload is an encode error, not a truncation
    let big = Message { header: sample().header, payloads: vec![Payload::Nonce(vec![0; 70000])] };
    assert_eq!(big.encode(), Err(EncodeError::TooLong("payload")));
}

#[test]
fn deep_payload_chain_is_bounded() {
    // 1000 empty vendor ID payloads chained
    let mut body = Vec::new();
    for i in 0..1000 {
        body.extend_from_slice(&[if i == 999 { 0 } else { 43 }, 0, 0, 4]);
    }
    let mut b = Vec::new();
    sample().header.encode_into(PayloadType::VENDOR_ID, (28 + body.len()) as u32, &mut b);
    b.extend_from_slice(&body);
    assert_eq!(Message::decode(&b), Err(DecodeError::TooMany("payloads")));
}

#[test]
fn unknown_registry_values_are_preserved() {
    let m = Message {
        header: Header::new(5, 6, ExchangeType(99), Flags(0xff), 7),
        payloads: vec![
            Payload::Notify(NotifyPayload::new(NotifyType(40000), vec![1])),
            Payload::Sa(SaPayload {
                proposals: vec![Proposal {
                    number: 9,
                    protocol: ProtocolId(77),
                    spi: vec![1, 2, 3],
                    transforms: vec![Transform { transform_type: TransformType(250), id: 1234, attributes: vec![] }],
                }],
            }),
            Payload::IdI(IdPayload { id_type: IdType(200), data: b"x".to_vec() }),
        ],
    };
    let b = m.encode().unwrap();
    let d = Message::decode(&b).unwrap();
    assert_eq!(d, m);
    assert_eq!(format!("{:?}", NotifyType(40000)), "NotifyType(40000)");
    assert_eq!(format!("{:?}", NotifyType::COOKIE), "COOKIE");
    assert!(NotifyType::AUTHENTICATION_FAILED.is_error());
    assert!(!NotifyType::INITIAL_CONTACT.is_error());
}

#[test]
fn sk_tamper_and_padding() {
    let h = Header::new(1, 2, ExchangeType::IKE_AUTH, Flags::new(true, false), 1);
    let inner = vec![Payload::IdI(IdPayload { id_type: IdType::FQDN, data: b"a.example".to_vec() })];
    for a in [EncrAlg::AesGcm16_128, EncrAlg::AesGcm16_256, EncrAlg::ChaCha20Poly1305] {
        let mut tx = cipher(a, 4);
        let rx = cipher(a, 4);
        let b = encrypt_message(&h, &inner, &mut tx).unwrap();
        for i in [0usize, 17, 19, 20, 27, 28, 30, 33, b.len() - 1] {
            let mut t = b.clone();
            t[i] ^= 0x01;
            assert!(decrypt_message(&t, &rx).is_err(), "{a:?} tamper at {i}");
        }
        // header fields are authenticated (message ID)
        let mut t = b.clone();
        t[23] ^= 1;
        assert_eq!(decrypt_message(&t, &rx), Err(SkError::Crypto(CryptoError::Integrity)));
        // a plain message is not an SK message
        assert_eq!(decrypt_message(&sample().encode().unwrap(), &rx), Err(SkError::NotEncrypted));
        // padding: a peer may send padding; build a message with 3 pad bytes
        let mut plain = Vec::new();
        let first = encode_chain(&inner, &mut plain).unwrap();
        plain.extend_from_slice(&[0xee, 0xee, 0xee, 3]);
        let sk_len = 4 + 8 + plain.len() + 16;
        let mut m = Vec::new();
        h.encode_into(PayloadType::SK, (28 + sk_len) as u32, &mut m);
        m.extend_from_slice(&[first.0, 0]);
        m.extend_from_slice(&(sk_len as u16).to_be_bytes());
        let mut tx2 = cipher(a, 4);
        tx2.set_next_iv(1000);
        let sealed = tx2.seal(&m, &plain);
        m.extend_from_slice(&sealed);
        assert_eq!(decrypt_message(&m, &rx).unwrap().payloads, inner);
        // pad length larger than the plaintext is rejected
        let mut m3 = Vec::new();
        h.encode_into(PayloadType::SK, 28 + 29, &mut m3);
        m3.extend_from_slice(&[first.0, 0, 0, 29]);
        let sealed = tx2.seal(&m3, &[5]);
        m3.extend_from_slice(&sealed);
        assert_eq!(decrypt_message(&m3, &rx), Err(SkError::Crypto(CryptoError::Padding)));
    }
}

#[test]
fn reassembler_rules() {
    let h = Header::new(1, 2, ExchangeType::IKE_AUTH, Flags::new(true, false), 1);
    let inner: Vec<Payload> = (0..10).map(|i| Payload::VendorId(vec![i; 50])).collect();
    let mut tx = cipher(EncrAlg::AesGcm16_256, 5);
    let rx = cipher(EncrAlg::AesGcm16_256, 5);
    let small = encrypt_fragments(&h, &inner, &mut tx, 150).unwrap();
    let large = encrypt_fragments(&h, &inner, &mut tx, 300).unwrap();
    assert!(small.len() > large.len() && large.len() > 1);
    // start with the large-MTU set, then a retransmission with smaller MTU
    // (more fragments) restarts; a stale fragment with fewer total is refused.
    let mut r = Reassembler::new();
    assert_eq!(r.add(decrypt_fragment(&large[0], &rx).unwrap()).unwrap(), None);
    assert_eq!(r.add(decrypt_fragment(&small[1], &rx).unwrap()).unwrap(), None);
    assert_eq!(r.received(), 1);
    assert!(matches!(r.add(decrypt_fragment(&large[1], &rx).unwrap()), Err(SkError::Fragment(_))));
    let mut out = None;
    for f in small.iter().rev() {
        if let Some(m) = r.add(decrypt_fragment(f, &rx).unwrap()).unwrap() {
            out = Some(m);
        }
    }
    assert_eq!(out.unwrap().payloads, inner);
    // fragment of another message
    let h2 = Header { message_id: 2, ..h };
    let other = encrypt_fragments(&h2, &inner, &mut tx, 150).unwrap();
    let mut r = Reassembler::new();
    r.add(decrypt_fragment(&small[0], &rx).unwrap()).unwrap();
    assert!(matches!(r.add(decrypt_fragment(&other[1], &rx).unwrap()), Err(SkError::Fragment(_))));
    // tampered fragment fails authentication
    let mut t = small[2].clone();
    let n = t.len();
    t[n - 20] ^= 1;
    assert_eq!(decrypt_fragment(&t, &rx).unwrap_err(), SkError::Crypto(CryptoError::Integrity));
    // bad MTU
    assert!(encrypt_fragments(&h, &inner, &mut tx, 40).is_err());
}
