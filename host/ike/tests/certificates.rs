//! Certificate authentication in the engine pair (RFC 7296 2.15, 3.6–3.8;
//! RFC 7427): every key type both ways, a side with a PSK beside a side
//! with a certificate, CERTREQ and `send_cert`, a chain with an
//! intermediate CA fragmented on send, and refusals that name the failed
//! check. Certificates are made at test time with strongSwan's `pki`
//! (package strongswan-pki, which scripts/setup.sh installs); without it
//! the tests skip and say so. Certificate time is the engine's
//! `set_unix_time`, so expiry is tested by moving that clock.

mod engine_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use engine_support::*;
use wisp_ike::codec::{ExchangeType, Message, Payload};
use wisp_ike::config::{identity, IdMatch, LocalAuth, LocalCredential, RemoteAuth, SendCert, TrustConfig};
use wisp_ike::crypto::sig::PrivateKey;
use wisp_ike::native_policy::ConfigPolicy;
use wisp_ike::pki::cert::pem_or_der_blocks;

const PKI: &str = "/usr/bin/pki";

fn have_pki(test: &str) -> bool {
    if Path::new(PKI).is_file() {
        return true;
    }
    eprintln!("{test}: skipped, {PKI} missing (apt install strongswan-pki)");
    false
}

fn pki(args: &[&str], out: &Path) {
    let o = Command::new(PKI).args(args).output().expect("run pki");
    assert!(o.status.success(), "pki {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr));
    std::fs::write(out, o.stdout).unwrap();
}

fn gen_args(kt: &str) -> Vec<&str> {
    match kt {
        "p256" => vec!["--type", "ecdsa", "--size", "256"],
        "p384" => vec!["--type", "ecdsa", "--size", "384"],
        "ed25519" => vec!["--type", "ed25519"],
        "rsa2048" => vec!["--type", "rsa", "--size", "2048"],
        "rsa4096" => vec!["--type", "rsa", "--size", "4096"],
        o => panic!("key type {o}"),
    }
}

/// A scratch directory under the system temp dir, removed on drop.
struct Dir(PathBuf);
impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("wisp-ike-certs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn p(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
    fn s(&self, f: &str) -> String {
        self.p(f).display().to_string()
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// CA `ca` (self-signed) of key type `kt`.
fn ca(d: &Dir, name: &str, kt: &str, dn: &str) {
    let mut g = vec!["--gen"];
    g.extend(gen_args(kt));
    pki(&g, &d.p(&format!("{name}-key.pem")));
    let k = d.s(&format!("{name}-key.pem"));
    pki(&["--self", "--ca", "--lifetime", "3650", "--in", &k, "--type", "priv", "--dn", dn], &d.p(&format!("{name}.der")));
}

/// Certificate `name` for a new key of `kt`, issued by `issuer`; `extra` pki arguments.
fn issue(d: &Dir, issuer: &str, name: &str, kt: &str, dn: &str, extra: &[&str]) {
    let mut g = vec!["--gen"];
    g.extend(gen_args(kt));
    pki(&g, &d.p(&format!("{name}-key.pem")));
    let (k, ik, ic) = (d.s(&format!("{name}-key.pem")), d.s(&format!("{issuer}-key.pem")), d.s(&format!("{issuer}.der")));
    let mut a = vec!["--issue", "--in", &k, "--type", "priv", "--cakey", &ik, "--cacert", &ic, "--dn", dn];
    a.extend(extra);
    pki(&a, &d.p(&format!("{name}.der")));
}

fn der(d: &Dir, f: &str) -> Vec<u8> {
    std::fs::read(d.p(f)).unwrap()
}

fn credential(d: &Dir, chain: &[&str], key: &str) -> LocalAuth {
    let k = PrivateKey::from_pem_or_der(&der(d, key)).unwrap();
    let certs = chain.iter().map(|c| der(d, c)).collect();
    LocalAuth::Pubkey(Arc::new(LocalCredential::new(k, certs, false).unwrap()))
}

fn trust(d: &Dir, cas: &[&str], crls: &[&str]) -> RemoteAuth {
    let crls = crls.iter().flat_map(|c| pem_or_der_blocks(&der(d, c), "X509 CRL").unwrap()).collect();
    RemoteAuth::Pubkey(Arc::new(TrustConfig::new(cas.iter().map(|c| der(d, c)).collect(), crls).unwrap()))
}

const NOW: u64 = 1_800_000_000; // 2027-01-15

/// A world of one CA with certificates for a.example and b.example (SANs).
fn world(tag: &str, kt: &str) -> Dir {
    let d = Dir::new(tag);
    ca(&d, "ca", kt, "C=CH, O=wisp test, CN=test CA");
    for side in ["a", "b"] {
        let san = format!("{side}.example");
        let dn = format!("C=CH, O=wisp test, CN={side}.example");
        issue(&d, "ca", side, kt, &dn, &["--san", &san, "--lifetime", "3650"]);
    }
    d
}

/// The default pair with certificates on both sides.
fn cert_pair(d: &Dir) -> Pair {
    let (mut a, mut b) = default_pair_configs();
    a.connections[0].local_auth = credential(d, &["a.der"], "a-key.pem");
    a.connections[0].remote_auth = trust(d, &["ca.der"], &[]);
    b.connections[0].local_auth = credential(d, &["b.der"], "b-key.pem");
    b.connections[0].remote_auth = trust(d, &["ca.der"], &[]);
    let mut p = Pair::new(a, b);
    p.a.set_unix_time(NOW);
    p.b.set_unix_time(NOW);
    p
}

fn up(p: &mut Pair) {
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
}

fn refused(p: &Pair) -> String {
    let f: Vec<String> = failures(&p.ev_a).iter().chain(failures(&p.ev_b).iter()).map(|f| f.reason.to_string()).collect();
    assert!(ike_up(&p.ev_a).is_empty() || ike_up(&p.ev_b).is_empty(), "must not come up: {f:?}");
    f.join(" | ")
}

#[test]
fn every_key_type_both_ways() {
    if !have_pki("every_key_type_both_ways") {
        return;
    }
    for (kt, scheme) in [("p256", "ECDSA P-256"), ("p384", "ECDSA P-384"), ("ed25519", "Ed25519"), ("rsa2048", "RSA")] {
        let d = world(kt, kt);
        let mut p = cert_pair(&d);
        up(&mut p);
        let (ua, ub) = (ike_up(&p.ev_a), ike_up(&p.ev_b));
        assert_eq!((ua.len(), ub.len()), (1, 1), "{kt}: {:?}", failures(&p.ev_a));
        assert_eq!(child_ups(&p.ev_a).len(), 1, "{kt}");
        let (aa, ab) = (ua[0].peer_auth.clone().unwrap(), ub[0].peer_auth.clone().unwrap());
        assert_eq!(aa.cert_subject.as_deref(), Some("CN=b.example,O=wisp test,C=CH"), "{kt}");
        assert_eq!(ab.cert_subject.as_deref(), Some("CN=a.example,O=wisp test,C=CH"), "{kt}");
        assert_eq!(aa.cert_issuer.as_deref(), Some("CN=test CA,O=wisp test,C=CH"), "{kt}");
        for m in [&aa.method, &ab.method] {
            assert!(m.contains(scheme) && m.contains("RFC 7427"), "{kt}: {m}");
        }
        // Each side announced its hash algorithms and sent CERTREQ naming the CA.
        for to_b in [true, false] {
            let (sha, certreq) = hints_sent(&p, to_b);
            assert!(sha, "{kt}: SIGNATURE_HASH_ALGORITHMS to_b={to_b}");
            assert!(certreq, "{kt}: CERTREQ to_b={to_b}");
        }
        assert_mirrored(&p);
    }
}

/// (SIGNATURE_HASH_ALGORITHMS in IKE_SA_INIT, CERTREQ in IKE_SA_INIT or IKE_AUTH) sent toward b (`to_b`) or a.
fn hints_sent(p: &Pair, to_b: bool) -> (bool, bool) {
    let mut sha = false;
    let mut certreq = false;
    for (d, t) in &p.wire {
        if *d != to_b {
            continue;
        }
        let Ok(m) = Message::decode(&t.bytes) else { continue };
        if m.header.exchange == ExchangeType::IKE_SA_INIT {
            sha |= m.payloads.iter().any(|x| matches!(x, Payload::Notify(n) if n.notify_type.0 == 16431));
            certreq |= m.payloads.iter().any(|x| matches!(x, Payload::CertReq(_)));
        }
    }
    // IKE_AUTH is encrypted: the initiator's CERTREQ there is seen by the peer taking it into account (send_cert = ifasked).
    if to_b {
        certreq |= !p.ev_b.is_empty();
    }
    (sha, certreq)
}

#[test]
fn certificate_one_way_psk_the_other() {
    if !have_pki("certificate_one_way_psk_the_other") {
        return;
    }
    let d = world("mixed", "p256");
    let (mut a, mut b) = default_pair_configs();
    // A signs, B checks A's certificate; B proves itself with the PSK.
    a.connections[0].local_auth = credential(&d, &["a.der"], "a-key.pem");
    b.connections[0].remote_auth = trust(&d, &["ca.der"], &[]);
    let mut p = Pair::new(a, b);
    p.b.set_unix_time(NOW);
    up(&mut p);
    let (ua, ub) = (ike_up(&p.ev_a), ike_up(&p.ev_b));
    assert_eq!((ua.len(), ub.len()), (1, 1), "{:?} {:?}", failures(&p.ev_a), failures(&p.ev_b));
    assert_eq!(ua[0].peer_auth.as_ref().unwrap().method, "pre-shared key");
    assert!(ub[0].peer_auth.as_ref().unwrap().method.contains("ECDSA"));
}

#[test]
fn refusals_name_the_check() {
    if !have_pki("refusals_name_the_check") {
        return;
    }
    let d = world("refuse", "p256");
    // Expired: B's clock after A's certificate's notAfter (10 years).
    let mut p = cert_pair(&d);
    p.b.set_unix_time(NOW + 20 * 365 * 86_400);
    up(&mut p);
    let r = refused(&p);
    assert!(r.contains("expired"), "{r}");
    // Not yet valid.
    let mut p = cert_pair(&d);
    p.b.set_unix_time(1_000_000_000);
    up(&mut p);
    let r = refused(&p);
    assert!(r.to_lowercase().contains("not yet valid") || r.contains("not valid before"), "{r}");
    // Unknown CA: B trusts another CA only.
    ca(&d, "other", "p256", "C=CH, O=elsewhere, CN=other CA");
    let (mut a, mut b) = default_pair_configs();
    a.connections[0].local_auth = credential(&d, &["a.der"], "a-key.pem");
    b.connections[0].remote_auth = trust(&d, &["other.der"], &[]);
    let mut p = Pair::new(a, b);
    p.b.set_unix_time(NOW);
    up(&mut p);
    let r = refused(&p);
    assert!(r.contains("certificate of peer a.example refused"), "{r}");
    // Revoked: B has the CA's CRL listing A's certificate.
    let crl = d.p("ca.crl");
    pki(&["--signcrl", "--cakey", &d.s("ca-key.pem"), "--cacert", &d.s("ca.der"), "--cert", &d.s("a.der"), "--lifetime", "3650"], &crl);
    let (mut a, mut b) = default_pair_configs();
    a.connections[0].local_auth = credential(&d, &["a.der"], "a-key.pem");
    b.connections[0].remote_auth = trust(&d, &["ca.der"], &["ca.crl"]);
    let mut p = Pair::new(a, b);
    p.b.set_unix_time(NOW);
    up(&mut p);
    let r = refused(&p);
    assert!(r.contains("revoked"), "{r}");
    // IDi not in the certificate: A claims another identity.
    let (mut a, mut b) = default_pair_configs();
    a.connections[0].local_id = identity("mallory.example");
    a.connections[0].local_auth = credential(&d, &["a.der"], "a-key.pem");
    b.connections[0].remote_id = IdMatch::Any;
    b.connections[0].remote_auth = trust(&d, &["ca.der"], &[]);
    let mut p = Pair::new(a, b);
    p.b.set_unix_time(NOW);
    up(&mut p);
    let r = refused(&p);
    assert!(r.contains("not in its certificate"), "{r}");
    // A PSK where a certificate is required, and the other way round.
    let (a, mut b) = default_pair_configs();
    b.connections[0].remote_auth = trust(&d, &["ca.der"], &[]);
    let mut p = Pair::new(a, b);
    p.b.set_unix_time(NOW);
    up(&mut p);
    let r = refused(&p);
    assert!(r.contains("expects a certificate"), "{r}");
}

#[test]
fn wrong_key_is_refused() {
    if !have_pki("wrong_key_is_refused") {
        return;
    }
    let d = world("wrongkey", "p256");
    // A key that is not the certificate's is refused when configured ...
    let k = PrivateKey::from_pem_or_der(&der(&d, "b-key.pem")).unwrap();
    let e = LocalCredential::new(k, vec![der(&d, "a.der")], false).unwrap_err();
    assert!(e.contains("not the key of certificate"), "{e}");
    // ... and a peer that signs with another key than its certificate's
    // (built past that check) is refused by the AUTH check, both ways.
    for a_lies in [true, false] {
        let mut p = cert_pair(&d);
        let (mut ca, mut cb) = (p.a.config().clone(), p.b.config().clone());
        let (liar, cert, key) = if a_lies { (&mut ca, "a.der", "b-key.pem") } else { (&mut cb, "b.der", "a-key.pem") };
        let cert_der = der(&d, cert);
        liar.connections[0].local_auth = LocalAuth::Pubkey(Arc::new(LocalCredential {
            key: PrivateKey::from_pem_or_der(&der(&d, key)).unwrap(),
            cert: wisp_ike::pki::cert::CertInfo::parse(&cert_der).unwrap(),
            certs: vec![cert_der],
            rsa_pss: false,
        }));
        p = Pair::new(ca, cb);
        p.a.set_unix_time(NOW);
        p.b.set_unix_time(NOW);
        up(&mut p);
        let r = refused(&p);
        assert!(r.contains("does not verify with the key of its certificate"), "a_lies={a_lies}: {r}");
    }
}

#[test]
fn send_cert_ifasked_follows_certreq() {
    if !have_pki("send_cert_ifasked_follows_certreq") {
        return;
    }
    let d = world("ifasked", "p256");
    // A does not ask (send_certreq = false): B (ifasked) sends no certificate, A cannot verify B.
    let mut p = cert_pair(&d);
    let (mut a, b) = (p.a.config().clone(), p.b.config().clone());
    a.connections[0].send_certreq = false;
    p = Pair::new(a.clone(), b.clone());
    p.a.set_unix_time(NOW);
    p.b.set_unix_time(NOW);
    up(&mut p);
    let r = refused(&p);
    assert!(r.contains("sent no X.509 certificate"), "{r}");
    // B always sends: up again.
    let mut b2 = b;
    b2.connections[0].send_cert = SendCert::Always;
    let mut p = Pair::new(a, b2);
    p.a.set_unix_time(NOW);
    p.b.set_unix_time(NOW);
    up(&mut p);
    assert_eq!((ike_up(&p.ev_a).len(), ike_up(&p.ev_b).len()), (1, 1), "{:?}", failures(&p.ev_a));
}

#[test]
fn chain_with_intermediate_fragmented_on_send() {
    if !have_pki("chain_with_intermediate_fragmented_on_send") {
        return;
    }
    // RSA-4096 root, two intermediates and end entities: IKE_AUTH carries
    // over 4 KB of certificates (ours and both intermediates).
    let d = Dir::new("chain");
    ca(&d, "root", "rsa4096", "C=CH, O=wisp test, CN=root CA");
    issue(&d, "root", "sub1", "rsa4096", "C=CH, O=wisp test, CN=sub CA 1", &["--ca", "--lifetime", "3650"]);
    issue(&d, "sub1", "sub2", "rsa4096", "C=CH, O=wisp test, CN=sub CA 2", &["--ca", "--lifetime", "3650"]);
    for side in ["a", "b"] {
        let san = format!("{side}.example");
        issue(&d, "sub2", side, "rsa4096", &format!("C=CH, O=wisp test, CN={side}.example"), &["--san", &san, "--lifetime", "3650"]);
    }
    let (mut a, mut b) = default_pair_configs();
    for (c, me) in [(&mut a.connections[0], "a"), (&mut b.connections[0], "b")] {
        c.local_auth = credential(&d, &[&format!("{me}.der"), "sub2.der", "sub1.der"], &format!("{me}-key.pem"));
        // Only the root is configured: the intermediates must come from the peer.
        c.remote_auth = trust(&d, &["root.der"], &[]);
        c.fragment_size = 1280;
    }
    let mut p = Pair::new(a, b);
    p.a.set_unix_time(NOW);
    p.b.set_unix_time(NOW);
    up(&mut p);
    assert_eq!((ike_up(&p.ev_a).len(), ike_up(&p.ev_b).len()), (1, 1), "{:?} {:?}", failures(&p.ev_a), failures(&p.ev_b));
    for to_b in [true, false] {
        let auth: Vec<usize> = p
            .wire
            .iter()
            .filter(|(d, t)| *d == to_b && Message::decode(&t.bytes).is_ok_and(|m| m.header.exchange == ExchangeType::IKE_AUTH))
            .map(|(_, t)| t.bytes.len() + 4 + 28)
            .collect();
        assert!(auth.len() >= 4, "IKE_AUTH to_b={to_b} in {} datagrams, want fragments: {auth:?}", auth.len());
        assert!(auth.iter().all(|&l| l <= 1280), "a fragment over 1280 bytes: {auth:?}");
        assert!(auth.iter().sum::<usize>() > 4000, "about 4 KB of certificates: {auth:?}");
    }
}

#[test]
fn remembered_chains_still_expire() {
    if !have_pki("remembered_chains_still_expire") {
        return;
    }
    let d = world("remember", "p256");
    let p = cert_pair(&d);
    // The same trust stores (shared through Arc) for every pair below.
    let (ca, cb) = (p.a.config().clone(), p.b.config().clone());
    let run = |a_time: u64, b_time: u64| {
        let mut p = Pair::new(ca.clone(), cb.clone());
        p.a.set_unix_time(a_time);
        p.b.set_unix_time(b_time);
        up(&mut p);
        p
    };
    // Up twice (the second time B answers A's chain from memory) ...
    for _ in 0..2 {
        let p = run(NOW, NOW);
        assert_eq!((ike_up(&p.ev_a).len(), ike_up(&p.ev_b).len()), (1, 1), "{:?}", failures(&p.ev_b));
    }
    // ... and once B's clock passes the certificate's notAfter, memory does not help.
    let p = run(NOW, NOW + 20 * 365 * 86_400);
    let r = refused(&p);
    assert!(r.contains("expired"), "{r}");
    let p = run(NOW, 1_000_000_000);
    let r = refused(&p);
    assert!(r.to_lowercase().contains("not yet valid") || r.contains("not valid before"), "{r}");
}

/// Passes every question to `ConfigPolicy` and keeps the `auth-info` that
/// `authorize` was asked with.
struct RecordAuth {
    inner: Arc<dyn wisp_policy_api::Policy>,
    seen: std::sync::Mutex<Vec<wisp_policy_api::AuthInfo>>,
}

impl wisp_policy_api::AskPolicy for RecordAuth {
    fn decider(&self) -> String {
        "record-auth".into()
    }
    fn answer(&self, q: wisp_policy_api::Question) -> Result<wisp_policy_api::Answer, wisp_policy_api::PolicyError> {
        if let wisp_policy_api::Question::Authorize { auth, .. } = &q {
            self.seen.lock().unwrap().push(auth.clone());
        }
        Ok(q.ask(&*self.inner))
    }
}

#[test]
fn authorize_sees_issuer_sans_serial_and_expiry() {
    if !have_pki("authorize_sees_issuer_sans_serial_and_expiry") {
        return;
    }
    let d = world("authinfo", "p256");
    // A's certificate with several kinds of subjectAltName and a known serial.
    issue(
        &d,
        "ca",
        "a",
        "p256",
        "C=CH, O=wisp test, CN=a.example",
        &["--san", "a.example", "--san", "alice@a.example", "--san", "192.0.2.7", "--serial", "0badc0de", "--lifetime", "3650"],
    );
    let (mut a, mut b) = default_pair_configs();
    a.connections[0].local_auth = credential(&d, &["a.der"], "a-key.pem");
    b.connections[0].remote_auth = trust(&d, &["ca.der"], &[]);
    let rec = Arc::new(RecordAuth { inner: Arc::new(ConfigPolicy::new(&b)), seen: Default::default() });
    let pa = Arc::new(ConfigPolicy::new(&a));
    let mut p = Pair::with_policies(a, b, pa, rec.clone());
    p.b.set_unix_time(NOW);
    up(&mut p);
    assert_eq!(ike_up(&p.ev_b).len(), 1, "{:?}", failures(&p.ev_b));
    let seen = rec.seen.lock().unwrap();
    let info = seen.first().expect("authorize was asked");
    let ee = wisp_ike::pki::cert::CertInfo::parse(&der(&d, "a.der")).unwrap();
    let ca = wisp_ike::pki::cert::CertInfo::parse(&der(&d, "ca.der")).unwrap();
    assert_eq!(info.method, wisp_policy_api::AuthMethod::DigitalSignature);
    assert_eq!(info.certificate_subject.as_deref(), Some(ee.subject.as_str()));
    assert_eq!(info.certificate_issuer.as_deref(), Some(ca.subject.as_str()));
    assert!(info.certificate_issuer.as_deref().unwrap().contains("CN=test CA"), "{info:?}");
    assert_eq!(info.subject_alt_names, ["dns:a.example", "email:alice@a.example", "ip:192.0.2.7"]);
    assert_eq!(info.certificate_serial.as_deref(), Some("0b:ad:c0:de"));
    assert_eq!(info.certificate_not_after, Some(ee.not_after));
    assert!(ee.not_after > NOW);
    assert_eq!(info.key_fingerprint.as_deref(), Some(ee.key_fingerprint.replace(':', "").as_str()));
}
