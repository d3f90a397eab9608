//! Public-key AUTH signs/s and verifies/s (crypto::sig, ring) on one core,
//! with RustCrypto's `p256` ECDSA alongside for comparison.
//!
//! Each line signs / verifies 100 bytes of signed octets (about the size of a
//! small IKE_SA_INIT message plus nonce and MAC'd ID) for ~0.5 s (or at least
//! a few operations).
//!
//! `cargo bench -p wisp-ike --bench sig`

use std::time::{Duration, Instant};

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING};
use wisp_ike::crypto::sig::{sign_auth, verify_auth, PrivateKey, SignPrefs, OUR_HASHES};

const BUDGET: Duration = Duration::from_millis(500);

fn rate(mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < BUDGET || n < 5 {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn line(name: &str, sign: f64, verify: f64) {
    println!("{name:<34} {sign:>10.0} {verify:>12.0}");
}

fn ours(name: &str, key: &PrivateKey, prefs: &SignPrefs, octets: &[u8]) {
    let (m, data) = sign_auth(key, octets, prefs).unwrap();
    let spki = key.public_key_spki().to_vec();
    verify_auth(&spki, m, &data, octets).unwrap();
    let s = rate(|| {
        std::hint::black_box(sign_auth(key, octets, prefs).unwrap());
    });
    let v = rate(|| {
        std::hint::black_box(verify_auth(&spki, m, &data, octets).unwrap());
    });
    line(name, s, v);
}

fn main() {
    let rng = SystemRandom::new();
    let octets = [0x5au8; 100];
    let all = SignPrefs { peer_hashes: Some(OUR_HASHES), rsa_pss: false };
    let pss = SignPrefs { peer_hashes: Some(OUR_HASHES), rsa_pss: true };
    let legacy = SignPrefs::default();
    let p256 = PrivateKey::from_pem_or_der(EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap().as_ref()).unwrap();
    let p384 = PrivateKey::from_pem_or_der(EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &rng).unwrap().as_ref()).unwrap();
    let ed = PrivateKey::from_pem_or_der(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
    let rsa2048 = PrivateKey::from_pem_or_der(include_bytes!("../tests/data/keys/rsa2048.pem")).unwrap();
    let rsa3072 = PrivateKey::from_pem_or_der(include_bytes!("../tests/data/keys/rsa3072.pem")).unwrap();

    println!("{:<34} {:>10} {:>12}", "scheme (AUTH method)", "signs/s", "verifies/s");
    ours("ring ECDSA P-256 SHA-256 (14)", &p256, &all, &octets);
    ours("ring ECDSA P-256 SHA-256 (9)", &p256, &legacy, &octets);
    ours("ring ECDSA P-384 SHA-384 (14)", &p384, &all, &octets);
    ours("ring Ed25519 (14)", &ed, &all, &octets);
    ours("ring RSA-2048 PKCS#1 SHA-256 (14)", &rsa2048, &all, &octets);
    ours("ring RSA-2048 PSS SHA-256 (14)", &rsa2048, &pss, &octets);
    ours("RSA-2048 SHA-1 (1, sign: rsa crate)", &rsa2048, &legacy, &octets);
    ours("ring RSA-3072 PKCS#1 SHA-256 (14)", &rsa3072, &all, &octets);
    ours("ring RSA-3072 PSS SHA-256 (14)", &rsa3072, &pss, &octets);

    // RustCrypto p256 for comparison (DER signatures, as under method 14).
    {
        use p256::ecdsa::signature::{Signer, Verifier};
        use p256::ecdsa::{DerSignature, SigningKey, VerifyingKey};
        let sk = SigningKey::random(&mut rand_core::OsRng);
        let vk = VerifyingKey::from(&sk);
        let sig: DerSignature = sk.sign(&octets);
        vk.verify(&octets, &sig).unwrap();
        let s = rate(|| {
            let sig: DerSignature = sk.sign(std::hint::black_box(&octets));
            std::hint::black_box(sig);
        });
        let v = rate(|| vk.verify(std::hint::black_box(&octets), &sig).unwrap());
        line("RustCrypto p256 ECDSA SHA-256", s, v);
    }
}
