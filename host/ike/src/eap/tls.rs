//! EAP-TLS (RFC 5216 for TLS 1.2, RFC 9190 for TLS 1.3) as the EAP server:
//! the peer proves itself with a client certificate in a TLS handshake
//! carried in EAP packets, and both sides derive the MSK from the TLS
//! exporter. rustls does the TLS; this module frames it.
//!
//! Framing (RFC 5216 3): each EAP-TLS packet is Flags (L = length
//! included, M = more fragments, S = start), the total length when L is
//! set, then TLS data. A flight larger than [`FRAGMENT`] goes in fragments,
//! each acknowledged by an empty packet of the other side.
//!
//! The end: TLS 1.2 after our Finished, TLS 1.3 after the one-octet
//! protected success indication (RFC 9190 2.1.1); the peer acknowledges
//! with an empty Response and gets EAP-Success.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ServerConfig, ServerConnection};
use zeroize::Zeroizing;

use crate::config::{LocalCredential, TrustConfig};
use crate::crypto::sig::KeyFormat;

/// EAP type of EAP-TLS.
pub const TYPE: u8 = 13;

const FLAG_L: u8 = 0x80;
const FLAG_M: u8 = 0x40;
const FLAG_S: u8 = 0x20;
/// TLS data per EAP packet we send (strongSwan's default too).
pub const FRAGMENT: usize = 1024;
/// The most TLS data one side may send in one flight (a chain of a few
/// RSA-4096 certificates is ~8 KiB).
pub const MAX_FLIGHT: usize = 64 * 1024;

/// rustls reads the time from here: the engine's, when the session began.
#[derive(Debug)]
struct FixedTime(u64);

impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(std::time::Duration::from_secs(self.0)))
    }
}

/// The TLS server's configuration for one authentication: our
/// certificate and key, the CAs (and CRLs) client certificates must
/// chain to, and the time to check them at.
pub fn server_config(ours: &LocalCredential, trust: &TrustConfig, unix_time: u64) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in &trust.ca_der {
        roots.add(CertificateDer::from(ca.clone())).map_err(|e| format!("CA certificate for EAP-TLS: {e}"))?;
    }
    let crls: Vec<CertificateRevocationListDer<'static>> =
        trust.crl_der.iter().map(|c| CertificateRevocationListDer::from(c.clone())).collect();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .build()
        .map_err(|e| format!("EAP-TLS client verifier: {e}"))?;
    let src = ours.key.source().ok_or("our private key was not read from a file")?;
    let der = src.der.to_vec();
    let key: PrivateKeyDer<'static> = match src.format {
        KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(der.into()),
        KeyFormat::Sec1 => PrivateKeyDer::Sec1(der.into()),
        KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(der.into()),
    };
    let chain: Vec<CertificateDer<'static>> = ours.certs.iter().map(|c| CertificateDer::from(c.clone())).collect();
    let mut cfg = ServerConfig::builder_with_details(provider, Arc::new(FixedTime(unix_time)))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("EAP-TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("EAP-TLS: our certificate and key: {e}"))?;
    // One handshake per authentication: no resumption state kept.
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(cfg))
}

/// What the server did with a Response.
pub enum Step {
    /// The type data of the next Request.
    Request(Vec<u8>),
    /// The handshake completed and the peer acknowledged: the MSK and the
    /// peer's certificate chain (end entity first, verified by rustls).
    Done {
        msk: Zeroizing<Vec<u8>>,
        peer_certs: Vec<Vec<u8>>,
    },
    Failed(String),
}

/// The server side of one EAP-TLS authentication.
pub struct Server {
    tls: ServerConnection,
    /// TLS data still to send, and how much of it went.
    out: Vec<u8>,
    sent: usize,
    /// A fragmented flight of the peer's, being gathered.
    incoming: Vec<u8>,
    /// The handshake is over (and, with TLS 1.3, the success indication
    /// is queued): the next empty Response ends the method.
    finished: bool,
}

impl Server {
    /// The server, and the type data of the first Request (EAP-TLS Start).
    pub fn start(config: Arc<ServerConfig>) -> Result<(Server, Vec<u8>), String> {
        let tls = ServerConnection::new(config).map_err(|e| format!("EAP-TLS: {e}"))?;
        Ok((Server { tls, out: Vec::new(), sent: 0, incoming: Vec::new(), finished: false }, vec![FLAG_S]))
    }

    /// The next fragment of `out` as Request type data.
    fn next_fragment(&mut self) -> Vec<u8> {
        let left = self.out.len() - self.sent;
        let n = left.min(FRAGMENT);
        let first = self.sent == 0;
        let more = n < left;
        let mut v = Vec::with_capacity(5 + n);
        v.push(if first { FLAG_L } else { 0 } | if more { FLAG_M } else { 0 });
        if first {
            v.extend_from_slice(&(self.out.len() as u32).to_be_bytes());
        }
        v.extend_from_slice(&self.out[self.sent..self.sent + n]);
        self.sent += n;
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
        v
    }

    /// The peer's Response type data.
    pub fn respond(&mut self, data: &[u8]) -> Step {
        let Some(&flags) = data.first() else { return Step::Failed("empty EAP-TLS packet".into()) };
        let mut body = &data[1..];
        if flags & FLAG_L != 0 {
            if body.len() < 4 {
                return Step::Failed("EAP-TLS length flag without a length".into());
            }
            let total = u32::from_be_bytes([body[0], body[1], body[2], body[3]]) as usize;
            if total > MAX_FLIGHT {
                return Step::Failed(format!("the peer announces a TLS flight of {total} octets (at most {MAX_FLIGHT})"));
            }
            body = &body[4..];
        }
        // An acknowledgement of our fragment, or the end.
        if body.is_empty() && flags & FLAG_M == 0 && self.incoming.is_empty() {
            if !self.out.is_empty() {
                return Step::Request(self.next_fragment());
            }
            if self.finished {
                return self.done();
            }
            return Step::Failed("the peer sent an empty EAP-TLS packet with nothing to acknowledge".into());
        }
        if !self.out.is_empty() {
            return Step::Failed("the peer sent TLS data while our flight was unfinished".into());
        }
        if self.incoming.len() + body.len() > MAX_FLIGHT {
            return Step::Failed(format!("the peer's TLS flight exceeds {MAX_FLIGHT} octets"));
        }
        self.incoming.extend_from_slice(body);
        if flags & FLAG_M != 0 {
            // More to come: acknowledge.
            return Step::Request(vec![0]);
        }
        let flight = std::mem::take(&mut self.incoming);
        let mut rd: &[u8] = &flight;
        while !rd.is_empty() {
            match self.tls.read_tls(&mut rd) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Step::Failed(format!("EAP-TLS: {e}")),
            }
            if let Err(e) = self.tls.process_new_packets() {
                // The alert for the peer is not sent: EAP-Failure follows.
                return Step::Failed(format!("TLS handshake failed: {e}"));
            }
        }
        if !self.tls.is_handshaking() && !self.finished {
            if self.tls.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
                // RFC 9190 2.1.1: the protected success indication.
                use std::io::Write as _;
                if self.tls.writer().write_all(&[0]).is_err() {
                    return Step::Failed("EAP-TLS: cannot queue the success indication".into());
                }
            }
            self.finished = true;
        }
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut self.out).is_err() || self.out.len() > MAX_FLIGHT {
                return Step::Failed("EAP-TLS: our flight does not fit".into());
            }
        }
        if self.out.is_empty() {
            return Step::Failed("EAP-TLS: the peer's data led to nothing to send".into());
        }
        Step::Request(self.next_fragment())
    }

    fn done(&mut self) -> Step {
        let (label, context): (&[u8], Option<&[u8]>) = match self.tls.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => (b"EXPORTER_EAP_TLS_Key_Material", Some(&[TYPE])),
            // RFC 5216 2.3: PRF(master secret, "client EAP encryption", randoms).
            _ => (b"client EAP encryption", None),
        };
        let mut km = Zeroizing::new([0u8; 128]);
        if let Err(e) = self.tls.export_keying_material(&mut km[..], label, context) {
            return Step::Failed(format!("EAP-TLS key export: {e}"));
        }
        let Some(certs) = self.tls.peer_certificates() else {
            return Step::Failed("the peer sent no client certificate".into());
        };
        let peer_certs = certs.iter().map(|c| c.as_ref().to_vec()).collect();
        Step::Done { msk: Zeroizing::new(km[..64].to_vec()), peer_certs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection};

    struct Pki {
        ours: LocalCredential,
        trust: TrustConfig,
        ca: CertificateDer<'static>,
        client: (CertificateDer<'static>, Vec<u8>),
    }

    fn pki(client_san: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "test CA");
        let ca = p.self_signed(&ca_key).unwrap();
        let issue = |san: &str| {
            let k = KeyPair::generate().unwrap();
            let c = CertificateParams::new(vec![san.to_string()]).unwrap().signed_by(&k, &ca, &ca_key).unwrap();
            (c.der().clone(), k.serialize_der())
        };
        let (srv, srv_key) = issue("wisp.test");
        let key = crate::crypto::sig::PrivateKey::from_pem_or_der(&srv_key).unwrap();
        let ours = LocalCredential::new(key, vec![srv.to_vec()], false).unwrap();
        let trust = TrustConfig::new(vec![ca.der().to_vec()], Vec::new()).unwrap();
        Pki { ours, trust, ca: ca.der().clone(), client: issue(client_san) }
    }

    fn now() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
    }

    /// Plays an EAP-TLS peer with rustls as the client, fragmenting its own
    /// flights at `frag`; returns the server's outcome and the client.
    fn run(p: &Pki, version: &'static rustls::SupportedProtocolVersion, frag: usize) -> (Step, ClientConnection, usize) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(p.ca.clone()).unwrap();
        let ccfg = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![p.client.0.clone()], PrivateKeyDer::Pkcs8(p.client.1.clone().into()))
            .unwrap();
        let mut client = ClientConnection::new(Arc::new(ccfg), ServerName::try_from("wisp.test").unwrap()).unwrap();
        let (mut server, mut req) = Server::start(server_config(&p.ours, &p.trust, now()).unwrap()).unwrap();
        assert_eq!(req, vec![FLAG_S]);
        let (mut inbox, mut out, mut sent, mut rounds) = (Vec::new(), Vec::new(), 0usize, 0);
        loop {
            rounds += 1;
            assert!(rounds < 100, "no end");
            let flags = req[0];
            let body = if flags & FLAG_L != 0 { &req[5..] } else { &req[1..] };
            inbox.extend_from_slice(body);
            let resp = if flags & FLAG_M != 0 {
                vec![0]
            } else {
                if !inbox.is_empty() {
                    client.read_tls(&mut &inbox[..]).unwrap();
                    client.process_new_packets().unwrap();
                    inbox.clear();
                }
                if sent == 0 {
                    while client.wants_write() {
                        client.write_tls(&mut out).unwrap();
                    }
                }
                if sent < out.len() {
                    let n = (out.len() - sent).min(frag);
                    let mut r = vec![if sent == 0 { FLAG_L } else { 0 } | if sent + n < out.len() { FLAG_M } else { 0 }];
                    if sent == 0 {
                        r.extend_from_slice(&(out.len() as u32).to_be_bytes());
                    }
                    r.extend_from_slice(&out[sent..sent + n]);
                    sent += n;
                    if sent == out.len() {
                        out.clear();
                        sent = 0;
                    }
                    r
                } else {
                    vec![0]
                }
            };
            match server.respond(&resp) {
                Step::Request(r) => req = r,
                done => return (done, client, rounds),
            }
        }
    }

    #[test]
    fn tls12_and_tls13_give_both_sides_the_same_msk() {
        let p = pki("charon.test");
        for (v, label, ctx) in [
            (&rustls::version::TLS12, &b"client EAP encryption"[..], None),
            (&rustls::version::TLS13, &b"EXPORTER_EAP_TLS_Key_Material"[..], Some(&[TYPE][..])),
        ] {
            for frag in [300, 4000] {
                let (step, mut client, rounds) = run(&p, v, frag);
                let Step::Done { msk, peer_certs } = step else { panic!("{v:?}: not done") };
                let mut want = [0u8; 128];
                client.export_keying_material(&mut want[..], label, ctx).unwrap();
                assert_eq!(&msk[..], &want[..64], "{v:?}");
                assert_eq!(peer_certs.first().map(Vec::as_slice), Some(p.client.0.as_ref()));
                if v.version == rustls::ProtocolVersion::TLSv1_3 {
                    // RFC 9190 2.1.1: the protected success indication.
                    let mut ind = [9u8; 2];
                    use std::io::Read as _;
                    assert_eq!(client.reader().read(&mut ind).unwrap(), 1);
                    assert_eq!(ind[0], 0);
                }
                assert!(rounds <= 20, "{rounds} round trips");
            }
        }
    }

    #[test]
    fn a_client_certificate_of_another_ca_fails() {
        let p = pki("charon.test");
        // Another CA of the same name: the signature does not verify.
        let other = pki("charon.test");
        let mixed = Pki { client: other.client, ..p };
        for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let Step::Failed(why) = run(&mixed, v, 1000).0 else { panic!("{v:?}: accepted a certificate of another CA") };
            assert!(why.contains("TLS handshake failed: invalid peer certificate"), "{why}");
        }
    }

    #[test]
    fn hostile_framing_fails_cleanly() {
        let p = pki("charon.test");
        let fresh = || Server::start(server_config(&p.ours, &p.trust, now()).unwrap()).unwrap().0;
        // An announced flight beyond the cap.
        let mut s = fresh();
        assert!(matches!(s.respond(&[FLAG_L | FLAG_M, 0xff, 0xff, 0xff, 0xff, 1]), Step::Failed(_)));
        // Fragments that never end are capped.
        let mut s = fresh();
        let chunk = vec![0x16u8; 1000];
        let mut failed = false;
        for _ in 0..100 {
            let mut pkt = vec![FLAG_M];
            pkt.extend_from_slice(&chunk);
            if let Step::Failed(_) = s.respond(&pkt) {
                failed = true;
                break;
            }
        }
        assert!(failed, "an endless flight is refused");
        // Garbage instead of a ClientHello, an empty packet, a bare ack.
        let mut s = fresh();
        assert!(matches!(s.respond(&[0, 1, 2, 3, 4, 5, 6]), Step::Failed(_)));
        let mut s = fresh();
        assert!(matches!(s.respond(&[]), Step::Failed(_)));
        let mut s = fresh();
        assert!(matches!(s.respond(&[0]), Step::Failed(_)));
    }
}
