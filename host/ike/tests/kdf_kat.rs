//! Known-answer test of the IKEv2 key derivation against the NIST CAVP
//! "kdf135 ikev2" vector in tests/data (copied from shared/vectors).

use std::collections::BTreeMap;
use wisp_ike::crypto::{child_keymat, derive_ike_keys, prf, prf_plus, skeyseed, skeyseed_rekey, ChildKeys, PrfAlg};

/// One test case: field name → bytes. The file holds `name = hex` lines and
/// `#` comments; a PRF can be named by a `# PRF = HMAC-SHAx` comment or a
/// `[SHA-x]` section header (CAVP style). Cases are separated by repeated keys.
struct Case {
    prf: PrfAlg,
    f: BTreeMap<String, Vec<u8>>,
}

fn parse_prf(s: &str) -> Option<PrfAlg> {
    let s = s.to_ascii_uppercase().replace(['-', '_', ' '], "");
    if s.contains("SHA512") || s.contains("SHA2512") {
        Some(PrfAlg::HmacSha512)
    } else if s.contains("SHA384") || s.contains("SHA2384") {
        Some(PrfAlg::HmacSha384)
    } else if s.contains("SHA256") || s.contains("SHA2256") {
        Some(PrfAlg::HmacSha256)
    } else if s.contains("SHA1") || s.contains("SHA-1") {
        Some(PrfAlg::HmacSha1)
    } else {
        None
    }
}

fn load() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/ikev2-kdf-nist-cavp.txt");
    let text = std::fs::read_to_string(path).expect("vector file tests/data/ikev2-kdf-nist-cavp.txt");
    let mut cases = Vec::new();
    let mut prf = PrfAlg::HmacSha1;
    let mut cur = Case { prf, f: BTreeMap::new() };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            if let Some(rest) = c.trim().strip_prefix("PRF =") {
                if let Some(p) = parse_prf(rest) {
                    prf = p;
                    cur.prf = p;
                }
            }
            continue;
        }
        if line.starts_with('[') {
            if let Some(p) = parse_prf(line) {
                prf = p;
            }
            continue;
        }
        let Some((k, v)) = line.split_once('=') else { continue };
        let k = k.trim().to_string();
        let v = v.trim();
        let Ok(bytes) = hex::decode(v) else { continue };
        if cur.f.contains_key(&k) {
            cases.push(std::mem::replace(&mut cur, Case { prf, f: BTreeMap::new() }));
        }
        cur.prf = prf;
        cur.f.insert(k, bytes);
    }
    if !cur.f.is_empty() {
        cases.push(cur);
    }
    cases
}

fn spi(b: &[u8]) -> u64 {
    u64::from_be_bytes(b.try_into().expect("8-byte SPI"))
}

#[test]
fn nist_cavp_ikev2_kdf() {
    let cases = load();
    assert!(!cases.is_empty(), "no test cases parsed");
    let mut checked = 0;
    for (i, c) in cases.iter().enumerate() {
        let g = |k: &str| c.f.get(k).unwrap_or_else(|| panic!("case {i}: missing {k}")).as_slice();
        let (ni, nr, gir, gir_new) = (g("Ni"), g("Nr"), g("g^ir"), g("g^ir (new)"));
        let (spii, spir) = (g("SPIi"), g("SPIr"));

        let ss = skeyseed(c.prf, ni, nr, gir);
        assert_eq!(ss.expose(), g("SKEYSEED"), "case {i}: SKEYSEED");

        let dkm_exp = g("DKM");
        let dkm = prf_plus(c.prf, ss.expose(), &[ni, nr, spii, spir], dkm_exp.len()).unwrap();
        assert_eq!(dkm.expose(), dkm_exp, "case {i}: DKM");

        // The same bytes split into SK_* by derive_ike_keys (prefix check):
        // SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr.
        let p = c.prf.output_len();
        let keys = derive_ike_keys(c.prf, ss.expose(), ni, nr, spi(spii), spi(spir), 16, 20).unwrap();
        let mut concat = Vec::new();
        for k in [&keys.sk_d, &keys.sk_ai, &keys.sk_ar, &keys.sk_ei, &keys.sk_er, &keys.sk_pi, &keys.sk_pr] {
            concat.extend_from_slice(k.expose());
        }
        assert_eq!(concat.len(), 3 * p + 2 * 16 + 2 * 20);
        let n = concat.len().min(dkm_exp.len());
        assert_eq!(&concat[..n], &dkm_exp[..n], "case {i}: SK_* split");
        let sk_d = &dkm_exp[..p];
        assert_eq!(keys.sk_d.expose(), sk_d);

        let child_exp = g("DKM(Child SA)");
        let child = child_keymat(c.prf, sk_d, None, ni, nr, child_exp.len()).unwrap();
        assert_eq!(child.expose(), child_exp, "case {i}: Child DKM");

        let child_dh_exp = g("DKM(Child SA D-H)");
        let child_dh = child_keymat(c.prf, sk_d, Some(gir_new), ni, nr, child_dh_exp.len()).unwrap();
        assert_eq!(child_dh.expose(), child_dh_exp, "case {i}: Child DKM with DH");

        // ChildKeys splits the same KEYMAT: encr_i | integ_i | encr_r | integ_r.
        let ck = ChildKeys::derive(c.prf, sk_d, Some(gir_new), ni, nr, 36, 0).unwrap();
        assert_eq!(ck.encr_i.expose(), &child_dh_exp[..36]);
        assert_eq!(ck.encr_r.expose(), &child_dh_exp[36..72]);

        let rekey = skeyseed_rekey(c.prf, sk_d, gir_new, ni, nr);
        assert_eq!(rekey.expose(), g("SKEYSEED(Rekey)"), "case {i}: rekey SKEYSEED");
        checked += 1;
    }
    println!("checked {checked} NIST CAVP IKEv2 KDF case(s)");
}

/// A wrong input must change the result (the KAT is not vacuous).
#[test]
fn kat_detects_changes() {
    let cases = load();
    let c = &cases[0];
    let mut ni = c.f["Ni"].clone();
    ni[0] ^= 1;
    let ss = skeyseed(c.prf, &ni, &c.f["Nr"], &c.f["g^ir"]);
    assert_ne!(ss.expose(), c.f["SKEYSEED"].as_slice());
}

/// PRF known answers for the SHA-2 HMAC variants: RFC 4231 test case 2
/// (key "Jefe", data "what do ya want for nothing?"), and RFC 2202 for SHA-1.
#[test]
fn prf_hmac_known_answers() {
    let key = b"Jefe";
    let data: &[u8] = b"what do ya want for nothing?";
    let cases = [
        (PrfAlg::HmacSha1, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
        (PrfAlg::HmacSha256, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        (
            PrfAlg::HmacSha384,
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
        ),
        (
            PrfAlg::HmacSha512,
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
        ),
    ];
    for (alg, exp) in cases {
        // split input into two parts to exercise the multi-part interface
        let out = prf(alg, key, &[&data[..5], &data[5..]]);
        assert_eq!(hex::encode(out.expose()), exp, "{alg:?}");
        assert_eq!(out.len(), alg.output_len());
    }
}

/// prf+ structure (RFC 7296 2.13) checked against its definition for SHA-2.
#[test]
fn prf_plus_definition_sha2() {
    for alg in [PrfAlg::HmacSha256, PrfAlg::HmacSha384, PrfAlg::HmacSha512] {
        let key = [0x0bu8; 40];
        let seed = b"seed bytes";
        let h = alg.output_len();
        let out = prf_plus(alg, &key, &[seed], 3 * h + 5).unwrap();
        let t1 = prf(alg, &key, &[seed, &[1]]);
        let t2 = prf(alg, &key, &[t1.expose(), seed, &[2]]);
        let t3 = prf(alg, &key, &[t2.expose(), seed, &[3]]);
        let t4 = prf(alg, &key, &[t3.expose(), seed, &[4]]);
        let mut exp = Vec::new();
        for t in [&t1, &t2, &t3, &t4] {
            exp.extend_from_slice(t.expose());
        }
        exp.truncate(3 * h + 5);
        assert_eq!(out.expose(), &exp[..]);
        assert!(prf_plus(alg, &key, &[seed], 255 * h).is_ok());
        assert!(prf_plus(alg, &key, &[seed], 255 * h + 1).is_err());
    }
}
