//! Crypto suite tests: RFC test vectors (RFC 7748 x25519, RFC 5903 ECP,
//! GCM spec, RFC 8439 ChaCha20-Poly1305), AEAD round trips and tampering,
//! PSK AUTH and NAT-D structure.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha1::{Digest, Sha1};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use wisp_ike::crypto::aead::{ICV_LEN, IV_LEN};
use wisp_ike::crypto::*;

fn h(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    hex::decode(s).unwrap()
}

#[test]
fn x25519_rfc7748_section6_1() {
    let a =
        DhKeyPair::from_private_bytes(DhGroup::Curve25519, &h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")).unwrap();
    let b =
        DhKeyPair::from_private_bytes(DhGroup::Curve25519, &h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")).unwrap();
    assert_eq!(a.public_value(), &h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")[..]);
    assert_eq!(b.public_value(), &h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")[..]);
    let k = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(a.shared_secret(b.public_value()).unwrap().expose(), &k[..]);
    assert_eq!(b.shared_secret(a.public_value()).unwrap().expose(), &k[..]);
}

#[test]
fn x25519_rejects_low_order_and_bad_length() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let a = DhKeyPair::generate(DhGroup::Curve25519, &mut rng);
    assert!(matches!(a.shared_secret(&[0u8; 32]), Err(CryptoError::InvalidPublicValue(_))));
    // u = 1 is a low-order point too (order 4 on the twist / curve).
    let mut one = [0u8; 32];
    one[0] = 1;
    assert!(a.shared_secret(&one).is_err());
    assert!(a.shared_secret(&[9u8; 31]).is_err());
    assert!(a.shared_secret(&[9u8; 33]).is_err());
}

const P256_I: &str = "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433";
const P256_GI: &str = "DAD0B65394221CF9B051E1FECA5787D098DFE637FC90B9EF945D0C3772581180
                       5271A0461CDB8252D61F1C456FA3E59AB1F45B33ACCF5F58389E0577B8990BB3";
const P256_R: &str = "C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53";
const P256_GR: &str = "D12DFB5289C8D4F81208B70270398C342296970A0BCCB74C736FC7554494BF63
                       56FBF3CA366CC23E8157854C13C58D6AAC23F046ADA30F8353E74F33039872AB";
const P256_GIR: &str = "D6840F6B42F6EDAFD13116E0E12565202FEF8E9ECE7DCE03812464D04B9442DE";

#[test]
fn ecp256_rfc5903_section8_1() {
    let i = DhKeyPair::from_private_bytes(DhGroup::Ecp256, &h(P256_I)).unwrap();
    let r = DhKeyPair::from_private_bytes(DhGroup::Ecp256, &h(P256_R)).unwrap();
    assert_eq!(i.public_value(), &h(P256_GI)[..]);
    assert_eq!(r.public_value(), &h(P256_GR)[..]);
    assert_eq!(i.shared_secret(&h(P256_GR)).unwrap().expose(), &h(P256_GIR)[..]);
    assert_eq!(r.shared_secret(&h(P256_GI)).unwrap().expose(), &h(P256_GIR)[..]);
}

#[test]
fn ecp384_rfc5903_section8_2() {
    let i = DhKeyPair::from_private_bytes(
        DhGroup::Ecp384,
        &h("099F3C7034D4A2C699884D73A375A67F7624EF7C6B3C0F160647B67414DCE655
            E35B538041E649EE3FAEF896783AB194"),
    )
    .unwrap();
    let gr = h("E558DBEF53EECDE3D3FCCFC1AEA08A89A987475D12FD950D83CFA41732BC509D
                0D1AC43A0336DEF96FDA41D0774A3571
                DCFBEC7AACF3196472169E838430367F66EEBE3C6E70C416DD5F0C68759DD1FF
                F83FA40142209DFF5EAAD96DB9E6386C");
    let gir = h("11187331C279962D93D604243FD592CB9D0A926F422E47187521287E7156C5C4
                 D603135569B9E9D09CF5D4A270F59746");
    assert_eq!(i.public_value().len(), 96);
    assert_eq!(i.shared_secret(&gr).unwrap().expose(), &gir[..]);
}

#[test]
fn ecp_rejects_invalid_points() {
    let i = DhKeyPair::from_private_bytes(DhGroup::Ecp256, &h(P256_I)).unwrap();
    let mut bad = h(P256_GR);
    bad[63] ^= 1; // y off by one bit: not on the curve
    assert!(matches!(i.shared_secret(&bad), Err(CryptoError::InvalidPublicValue(_))));
    assert!(i.shared_secret(&[0u8; 64]).is_err()); // (0,0) is not a point
    assert!(i.shared_secret(&h(P256_GR)[..63]).is_err());
    // an ECP-256 value given to an ECP-384 key
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let k384 = DhKeyPair::generate(DhGroup::Ecp384, &mut rng);
    assert!(k384.shared_secret(&h(P256_GR)).is_err());
    // scalar zero / out of range is refused
    assert!(DhKeyPair::from_private_bytes(DhGroup::Ecp256, &[0u8; 32]).is_err());
    assert!(DhKeyPair::from_private_bytes(DhGroup::Ecp256, &[0xffu8; 32]).is_err());
}

#[test]
fn generated_pairs_agree_all_groups_and_are_seed_deterministic() {
    for g in [DhGroup::Curve25519, DhGroup::Ecp256, DhGroup::Ecp384] {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let a = DhKeyPair::generate(g, &mut rng);
        let b = DhKeyPair::generate(g, &mut rng);
        assert_eq!(a.public_value().len(), g.public_len());
        let s1 = a.shared_secret(b.public_value()).unwrap();
        let s2 = b.shared_secret(a.public_value()).unwrap();
        assert_eq!(s1, s2);
        assert_eq!(s1.len(), g.shared_len());
        assert_ne!(a.public_value(), b.public_value());
        let mut rng2 = ChaCha20Rng::seed_from_u64(7);
        let a2 = DhKeyPair::generate(g, &mut rng2);
        assert_eq!(a.public_value(), a2.public_value(), "same seed, same key");
        assert_eq!(DhGroup::from_id(g.id()), Some(g));
        let dbg = format!("{a:?}");
        assert!(dbg.contains("redacted"));
    }
    assert_eq!(DhGroup::from_id(14), None);
}

/// GCM specification (McGrew/Viega) test case 4: AES-128, 60-byte plaintext,
/// 20-byte AAD, 96-bit IV = salt | explicit IV.
#[test]
fn aes_gcm_known_answer() {
    let mut keymat = h("feffe9928665731c6d6a8f9467308308");
    keymat.extend_from_slice(&h("cafebabe"));
    let c = SkCipher::new(EncrAlg::AesGcm16_128, &keymat).unwrap();
    let iv: [u8; 8] = h("facedbaddecaf888").try_into().unwrap();
    let aad = h("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let pt = h("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
                1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39");
    let out = c.seal_with_iv(iv, &aad, &pt);
    let exp_ct = h("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e
                    21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091");
    let exp_tag = h("5bc94fbc3221a5db94fae95ae7121a47");
    assert_eq!(&out[..8], &iv[..]);
    assert_eq!(&out[8..8 + pt.len()], &exp_ct[..]);
    assert_eq!(&out[8 + pt.len()..], &exp_tag[..]);
    assert_eq!(&c.open(&aad, &out).unwrap()[..], &pt[..]);
}

/// RFC 8439 2.8.2 AEAD_CHACHA20_POLY1305 test vector (nonce = 07000000 | 4041424344454647).
#[test]
fn chacha20poly1305_rfc8439_known_answer() {
    let mut keymat = h("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    keymat.extend_from_slice(&h("07000000"));
    let c = SkCipher::new(EncrAlg::ChaCha20Poly1305, &keymat).unwrap();
    let iv: [u8; 8] = h("4041424344454647").try_into().unwrap();
    let aad = h("50515253c0c1c2c3c4c5c6c7");
    let pt = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let out = c.seal_with_iv(iv, &aad, pt);
    assert_eq!(&out[8..24], &h("d31a8d34648e60db7b86afbc53ef7ec2")[..]);
    assert_eq!(&out[out.len() - 16..], &h("1ae10b594f09e26a7e902ecbd0600691")[..]);
    assert_eq!(&c.open(&aad, &out).unwrap()[..], &pt[..]);
}

#[test]
fn aead_round_trip_and_tamper_all_algorithms() {
    for alg in [EncrAlg::AesGcm16_128, EncrAlg::AesGcm16_256, EncrAlg::ChaCha20Poly1305] {
        let keymat: Vec<u8> = (0..alg.keymat_len() as u8).collect();
        let mut c = SkCipher::new(alg, &keymat).unwrap();
        let aad = b"ike header and sk header";
        let pt = b"inner payloads".to_vec();
        let s1 = c.seal(aad, &pt);
        let s2 = c.seal(aad, &pt);
        assert_eq!(s1.len(), IV_LEN + pt.len() + ICV_LEN);
        assert_ne!(s1[..IV_LEN], s2[..IV_LEN], "IV must advance");
        assert_ne!(s1, s2);
        assert_eq!(&c.open(aad, &s1).unwrap()[..], &pt[..]);
        assert_eq!(&c.open(aad, &s2).unwrap()[..], &pt[..]);
        // every single-bit flip anywhere is detected
        for i in 0..s1.len() {
            let mut t = s1.clone();
            t[i] ^= 0x40;
            assert_eq!(c.open(aad, &t), Err(CryptoError::Integrity), "{alg:?} flip at {i}");
        }
        assert_eq!(c.open(b"other aad", &s1), Err(CryptoError::Integrity));
        assert_eq!(c.open(aad, &s1[..s1.len() - 1]), Err(CryptoError::Integrity));
        assert_eq!(c.open(aad, &s1[..IV_LEN + ICV_LEN - 1]), Err(CryptoError::Integrity));
        let mut other_key = keymat.clone();
        other_key[0] ^= 1;
        let c2 = SkCipher::new(alg, &other_key).unwrap();
        assert_eq!(c2.open(aad, &s1), Err(CryptoError::Integrity));
        // the salt is part of the nonce
        let mut other_salt = keymat.clone();
        *other_salt.last_mut().unwrap() ^= 1;
        let c3 = SkCipher::new(alg, &other_salt).unwrap();
        assert_eq!(c3.open(aad, &s1), Err(CryptoError::Integrity));
        assert!(SkCipher::new(alg, &keymat[1..]).is_err());
        assert!(!format!("{c:?}").contains("01020304"));
        assert_eq!(EncrAlg::from_transform(alg.id(), alg.key_length_attr()), Some(alg));
    }
    assert_eq!(EncrAlg::from_transform(20, Some(192)), None);
    assert_eq!(EncrAlg::from_transform(12, Some(128)), None);
}

#[test]
fn psk_auth_follows_rfc7296_2_15() {
    use hmac::{Hmac, Mac};
    type H256 = Hmac<sha2::Sha256>;
    let psk = b"a shared secret";
    let msg1 = b"IKE_SA_INIT request bytes";
    let nr = [0x55u8; 32];
    let sk_pi = [0x11u8; 32];
    let id_body = [2u8, 0, 0, 0, b'a', b'.', b'b'];
    let octets = signed_octets(PrfAlg::HmacSha256, msg1, &nr, &sk_pi, &id_body);

    // independent computation with the hmac crate
    let mut m = H256::new_from_slice(&sk_pi).unwrap();
    m.update(&id_body);
    let maced = m.finalize().into_bytes();
    let mut exp_oct = msg1.to_vec();
    exp_oct.extend_from_slice(&nr);
    exp_oct.extend_from_slice(&maced);
    assert_eq!(octets, exp_oct);

    let mut m = H256::new_from_slice(psk).unwrap();
    m.update(b"Key Pad for IKEv2");
    let k = m.finalize().into_bytes();
    let mut m = H256::new_from_slice(&k).unwrap();
    m.update(&octets);
    let exp_auth = m.finalize().into_bytes();
    let auth = psk_auth(PrfAlg::HmacSha256, psk, &octets);
    assert_eq!(auth.expose(), &exp_auth[..]);
    assert!(auth::auth_eq(auth.expose(), &exp_auth));

    let wrong = psk_auth(PrfAlg::HmacSha256, b"another secret", &octets);
    assert_ne!(wrong, auth);
    assert!(!auth::auth_eq(wrong.expose(), auth.expose()));
    assert!(!auth::auth_eq(&auth.expose()[1..], auth.expose()));
}

#[test]
fn nat_detection_hash_layout() {
    let (spi_i, spi_r) = (0x0102030405060708u64, 0x1112131415161718u64);
    let ip4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let mut exp = Sha1::new();
    exp.update(h("0102030405060708 1112131415161718 c0000201 01f4"));
    let exp: [u8; 20] = exp.finalize().into();
    assert_eq!(nat_detection_hash(spi_i, spi_r, ip4, 500), exp);
    assert_ne!(nat_detection_hash(spi_i, spi_r, ip4, 4500), exp);
    assert_ne!(nat_detection_hash(spi_i, 0, ip4, 500), exp);
    let ip6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let mut e6 = Sha1::new();
    e6.update(spi_i.to_be_bytes());
    e6.update(spi_r.to_be_bytes());
    e6.update(Ipv6Addr::LOCALHOST.octets());
    e6.update(500u16.to_be_bytes());
    let e6: [u8; 20] = e6.finalize().into();
    assert_eq!(nat_detection_hash(spi_i, spi_r, ip6, 500), e6);
}

#[test]
fn secrets_are_redacted_in_debug() {
    let s = SecretBytes::from_slice(&[0xab; 16]);
    let d = format!("{s:?}");
    assert!(!d.contains("ab") && !d.contains("171"), "{d}");
    let keys = derive_ike_keys(PrfAlg::HmacSha256, &[0xcd; 32], b"ni", b"nr", 1, 2, 36, 0).unwrap();
    let d = format!("{keys:?}");
    assert!(!d.contains("cd, ") && d.contains("redacted"), "{d}");
    assert_eq!(keys.sk_ei.len(), 36);
    assert!(keys.sk_ai.is_empty());
    assert_ne!(keys.sk_ei, keys.sk_er);
    assert_ne!(keys.sk_pi, keys.sk_pr);
}

#[test]
fn child_keys_with_and_without_pfs_differ() {
    let sk_d = [3u8; 32];
    let a = ChildKeys::derive(PrfAlg::HmacSha256, &sk_d, None, b"ni", b"nr", 36, 0).unwrap();
    let b = ChildKeys::derive(PrfAlg::HmacSha256, &sk_d, Some(b"gir"), b"ni", b"nr", 36, 0).unwrap();
    assert_ne!(a.encr_i, b.encr_i);
    assert_ne!(a.encr_i, a.encr_r);
    let km = child_keymat(PrfAlg::HmacSha256, &sk_d, None, b"ni", b"nr", 72).unwrap();
    assert_eq!(a.encr_i.expose(), &km.expose()[..36]);
    assert_eq!(a.encr_r.expose(), &km.expose()[36..]);
}
