//! Authentication in IKE_AUTH (RFC 7296 2.15): a pre-shared key, or a
//! signature made with the key of an X.509 certificate (RFC 7296 3.6–3.8;
//! RFC 7427 digital signatures, RFC 4754 ECDSA, RFC 8420 Ed25519, and the
//! legacy RSA method 1).
//!
//! Each side chooses its own method (swanctl `local.auth` / `remote.auth`):
//! we may prove ourselves with a certificate and the peer with a PSK.

use wisp_policy_api::{AuthInfo, AuthMethod};

use crate::codec::{self, AuthPayload, CertEncoding, CertPayload, IdPayload, NotifyType, Payload};
use crate::config::{ConnectionConfig, LocalAuth, RemoteAuth, SendCert};
use crate::crypto::sig;
use crate::pki::cert::SubjectAltName;

use super::convert::identity_from_wire;
use super::suite;

/// The most CERT payloads of one peer we look at (its certificate and
/// intermediates); a longer chain is refused before anything is parsed.
pub(crate) const MAX_PEER_CERTS: usize = 8;

/// What the peer said in IKE_SA_INIT (and the IKE_AUTH request) that
/// shapes how we prove ourselves: its SIGNATURE_HASH_ALGORITHMS (RFC 7427
/// 4) and whether it asked for a certificate (CERTREQ, RFC 7296 3.7).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PeerHints {
    pub hashes: Option<Vec<u16>>,
    pub certreq: bool,
}

impl PeerHints {
    /// Adds what `payloads` say to `hints` (created when there is something).
    pub fn note(hints: &mut Option<Box<PeerHints>>, payloads: &[Payload]) {
        for p in payloads {
            match p {
                Payload::Notify(n) if n.notify_type == NotifyType::SIGNATURE_HASH_ALGORITHMS => {
                    let mut list = sig::parse_hash_algorithms(&n.data);
                    list.truncate(32);
                    hints.get_or_insert_with(Default::default).hashes = Some(list);
                }
                Payload::CertReq(c) if c.encoding == CertEncoding::X509_SIGNATURE => {
                    hints.get_or_insert_with(Default::default).certreq = true;
                }
                _ => {}
            }
        }
    }
}

/// The inputs of one side's AUTH octets (RFC 7296 2.15): its IKE_SA_INIT
/// message, the other side's nonce, its SK_p and its ID payload.
pub(super) struct Signed<'a> {
    pub prf: u16,
    pub real_message: &'a [u8],
    pub peer_nonce: &'a [u8],
    pub sk_p: &'a [u8],
    pub id: &'a IdPayload,
}

impl Signed<'_> {
    fn octets(&self) -> Vec<u8> {
        suite::signed_octets(self.prf, self.real_message, self.peer_nonce, self.sk_p, &self.id.body_bytes())
    }
    fn psk(&self, psk: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
        suite::psk_auth(self.prf, psk, self.real_message, self.peer_nonce, self.sk_p, &self.id.body_bytes())
    }
}

/// Our proof of identity: CERT payloads (maybe none) and the AUTH payload.
pub(super) struct Proof {
    pub certs: Vec<Payload>,
    pub auth: Payload,
}

/// Whether the connection uses certificates on either side (then we send
/// SIGNATURE_HASH_ALGORITHMS in IKE_SA_INIT).
pub(super) fn uses_signatures(conn: &ConnectionConfig) -> bool {
    matches!(conn.local_auth, LocalAuth::Pubkey(_)) || matches!(conn.remote_auth, RemoteAuth::Pubkey(_))
}

/// CERTREQ naming the CAs we trust for the peer's certificate (none when
/// the peer authenticates with a PSK, or `send_certreq = no`).
pub(super) fn certreq(conns: &[&ConnectionConfig]) -> Option<Payload> {
    let mut data: Vec<u8> = Vec::new();
    for c in conns {
        if let (RemoteAuth::Pubkey(t), true) = (&c.remote_auth, c.send_certreq) {
            for h in t.store.certreq_data().chunks(20) {
                if !data.chunks(20).any(|d| d == h) {
                    data.extend_from_slice(h);
                }
            }
        }
    }
    (!data.is_empty()).then_some(Payload::CertReq(CertPayload { encoding: CertEncoding::X509_SIGNATURE, data }))
}

/// Our CERT and AUTH payloads for connection `conn`.
pub(super) fn prove(conn: &ConnectionConfig, hints: Option<&PeerHints>, s: &Signed) -> Result<Proof, String> {
    match &conn.local_auth {
        LocalAuth::Psk => Ok(Proof {
            certs: Vec::new(),
            auth: Payload::Auth(AuthPayload { method: codec::AuthMethod::SHARED_KEY_MIC, data: s.psk(conn.psk.as_bytes()).to_vec() }),
        }),
        LocalAuth::Pubkey(cred) => {
            let send = match conn.send_cert {
                SendCert::Always => true,
                SendCert::Never => false,
                SendCert::IfAsked => hints.is_some_and(|h| h.certreq),
            };
            let certs = if send {
                cred.certs.iter().map(|c| Payload::Cert(CertPayload { encoding: CertEncoding::X509_SIGNATURE, data: c.clone() })).collect()
            } else {
                Vec::new()
            };
            let prefs = sig::SignPrefs { peer_hashes: hints.and_then(|h| h.hashes.as_deref()), rsa_pss: cred.rsa_pss };
            let (method, data) = sig::sign_auth(&cred.key, &s.octets(), &prefs)
                .map_err(|e| format!("cannot sign our AUTH with the key of {}: {e}", cred.cert.subject))?;
            Ok(Proof { certs, auth: Payload::Auth(AuthPayload { method: codec::AuthMethod(method), data }) })
        }
    }
}

/// Does the peer's AUTH method (`None`: no AUTH payload, i.e. EAP) fit
/// what `conn` requires of it?
pub(super) fn method_fits(conn: &ConnectionConfig, method: Option<codec::AuthMethod>) -> bool {
    match (&conn.remote_auth, method) {
        (RemoteAuth::Psk, Some(m)) => m == codec::AuthMethod::SHARED_KEY_MIC,
        (RemoteAuth::Pubkey(_), Some(m)) => is_signature(m),
        (RemoteAuth::Eap(_), None) => true,
        _ => false,
    }
}

fn is_signature(m: codec::AuthMethod) -> bool {
    matches!(m.0, sig::AUTH_RSA | sig::AUTH_ECDSA_256 | sig::AUTH_ECDSA_384 | sig::AUTH_ECDSA_521 | sig::AUTH_DIGITAL_SIGNATURE)
}

/// What `remote.auth` of a connection asks for, in words.
pub(super) fn remote_auth_name(conn: &ConnectionConfig) -> &'static str {
    match &conn.remote_auth {
        RemoteAuth::Psk => "a pre-shared key",
        RemoteAuth::Pubkey(_) => "a certificate (remote.auth = pubkey)",
        RemoteAuth::Eap(e) => match e.method {
            crate::eap::Method::MsChapV2 => "EAP-MSCHAPv2 (remote.auth = eap-mschapv2)",
            crate::eap::Method::Tls => "EAP-TLS (remote.auth = eap-tls)",
        },
    }
}

/// Verifies the peer's AUTH (with its certificate chain when it signs) as
/// connection `conn` requires, at `unix_time`. The error names the check
/// that failed. With the AuthInfo comes the scheme that verified
/// ("pre-shared key", "ECDSA P-256 with SHA2-256 (RFC 7427)", ...).
pub(super) fn check_peer(
    conn: &ConnectionConfig,
    auth: &AuthPayload,
    certs: &[&CertPayload],
    s: &Signed,
    unix_time: u64,
) -> Result<(AuthInfo, String), String> {
    let peer = identity_from_wire(s.id);
    if !method_fits(conn, Some(auth.method)) {
        return Err(format!("peer {peer} authenticates with {}, connection {} expects {}", auth.method, conn.name, remote_auth_name(conn)));
    }
    match &conn.remote_auth {
        RemoteAuth::Psk => {
            if !suite::ct_eq(&s.psk(conn.psk.as_bytes()), &auth.data) {
                return Err(format!("AUTH of peer {peer} does not verify with the PSK of connection {} (wrong PSK?)", conn.name));
            }
            Ok((AuthInfo::psk(peer), "pre-shared key".into()))
        }
        RemoteAuth::Pubkey(trust) => {
            let x509: Vec<&CertPayload> = certs.iter().copied().filter(|c| c.encoding == CertEncoding::X509_SIGNATURE).collect();
            if x509.len() > MAX_PEER_CERTS {
                return Err(format!("peer {peer} sent {} certificates (at most {MAX_PEER_CERTS} are taken)", x509.len()));
            }
            let Some((ee, rest)) = x509.split_first() else {
                return Err(format!("peer {peer} sent no X.509 certificate (connection {} requires one)", conn.name));
            };
            let intermediates: Vec<Vec<u8>> = rest.iter().map(|c| c.data.clone()).collect();
            let cert =
                trust.store.verify(&ee.data, &intermediates, unix_time).map_err(|e| format!("certificate of peer {peer} refused: {e}"))?;
            if !cert.binds_identity(s.id.id_type.0, &s.id.data) {
                return Err(format!(
                    "peer identity {peer} is not in its certificate {} (neither its subject nor a subjectAltName)",
                    cert.subject
                ));
            }
            let v = sig::verify_auth(&cert.spki, auth.method.0, &auth.data, &s.octets())
                .map_err(|e| format!("AUTH of peer {peer} does not verify with the key of its certificate {}: {e}", cert.subject))?;
            let method = match v.method {
                sig::AUTH_RSA => AuthMethod::RsaSignature,
                sig::AUTH_ECDSA_256 | sig::AUTH_ECDSA_384 | sig::AUTH_ECDSA_521 => AuthMethod::EcdsaSignature,
                _ => AuthMethod::DigitalSignature,
            };
            let info = AuthInfo {
                peer_identity: peer,
                method,
                subject_alt_names: san_strings(&cert.sans),
                certificate_subject: Some(cert.subject),
                key_fingerprint: Some(cert.key_fingerprint.replace(':', "")),
                certificate_issuer: Some(cert.issuer),
                certificate_serial: Some(cert.serial),
                certificate_not_after: Some(cert.not_after),
                eap_identity: None,
                eap_method: None,
            };
            Ok((info, v.scheme))
        }
        RemoteAuth::Eap(_) => Err(format!("peer {peer} sent AUTH before EAP (connection {} expects EAP)", conn.name)),
    }
}

/// The AUTH payload keyed with an EAP method's MSK (RFC 7296 2.16), for
/// the octets `s` (ours, or the peer's to compare).
pub(super) fn msk_auth(s: &Signed, msk: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
    s.psk(msk)
}

/// The subjectAltNames as policy sees them (`auth-info.subject-alt-names`):
/// `dns:NAME`, `email:ADDR`, `ip:ADDR`, `uri:URI`, `dn:RFC4514`, in certificate
/// order. Other kinds, and a directoryName that does not print, are left out.
pub(super) fn san_strings(sans: &[SubjectAltName]) -> Vec<String> {
    sans.iter()
        .filter_map(|san| match san {
            SubjectAltName::Dns(n) => Some(format!("dns:{n}")),
            SubjectAltName::Email(e) => Some(format!("email:{e}")),
            SubjectAltName::Ip(a) => Some(format!("ip:{a}")),
            SubjectAltName::Uri(u) => Some(format!("uri:{u}")),
            SubjectAltName::Dn(der) => crate::pki::dn::to_rfc4514(der).ok().map(|dn| format!("dn:{dn}")),
            SubjectAltName::Other => None,
        })
        .collect()
}

/// Our ID payload: `local.id` in its wire form, except that a DN equal to
/// our certificate's subject goes as the certificate's own subject bytes
/// (so that a peer comparing bytes finds it in the certificate).
pub(super) fn local_id_wire(conn: &ConnectionConfig) -> IdPayload {
    let id = super::convert::identity_to_wire(&conn.local_id);
    if let LocalAuth::Pubkey(cred) = &conn.local_auth {
        if id.id_type == codec::IdType::DER_ASN1_DN && crate::pki::dn::equal(&id.data, &cred.cert.subject_der) {
            return IdPayload { id_type: id.id_type, data: cred.cert.subject_der.clone() };
        }
    }
    id
}
