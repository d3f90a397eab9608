//! X.509 certificates of IKE peers (RFC 7296 3.6, 3.7; RFC 4945; RFC 5280).
//!
//! * [`CertInfo::parse`]: what policy, `status` and logs need of a
//!   certificate (subject, issuer, serial, validity, SANs, key fingerprint);
//! * [`CertInfo::binds_identity`]: is an IKE identity (RFC 7296 3.5) the
//!   certificate's;
//! * [`TrustStore`]: the configured CAs and CRLs, CERTREQ data (RFC 7296
//!   3.7) and chain validation with rustls-webpki ([`TrustStore::verify`]).
//!
//! Sans-IO: certificates and CRLs come in as DER (see [`pem_or_der_blocks`]),
//! the time of validation is a parameter.

use super::dn;
use der::{Decode, Encode};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use std::net::IpAddr;
use std::time::Duration;
use webpki::{
    CertRevocationList, ExpirationPolicy, OwnedCertRevocationList, RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName as SanExt, SubjectKeyIdentifier};
use x509_cert::Certificate;

/// RFC 7296 3.5 ID types.
pub const ID_IPV4_ADDR: u8 = 1;
pub const ID_FQDN: u8 = 2;
pub const ID_RFC822_ADDR: u8 = 3;
pub const ID_IPV6_ADDR: u8 = 5;
pub const ID_DER_ASN1_DN: u8 = 9;
pub const ID_KEY_ID: u8 = 11;

/// Extended key usages accepted on an IKE peer's certificate (RFC 4945
/// 5.1.3.12, RFC 4809): serverAuth, clientAuth, anyExtendedKeyUsage,
/// id-kp-ipsecIKE, iKEIntermediate.
pub const ACCEPTED_EKUS: &[&str] = &["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2", "2.5.29.37.0", "1.3.6.1.5.5.7.3.17", "1.3.6.1.5.5.8.2.2"];

/// A subjectAltName entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubjectAltName {
    Dns(String),
    Email(String),
    Ip(IpAddr),
    Uri(String),
    /// directoryName, as DER Name.
    Dn(Vec<u8>),
    Other,
}

/// A parsed (not necessarily verified) certificate: what policy, status and
/// logging need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub der: Vec<u8>,
    /// RFC 4514 ([`dn::to_rfc4514`]).
    pub subject: String,
    pub subject_der: Vec<u8>,
    /// RFC 4514.
    pub issuer: String,
    pub issuer_der: Vec<u8>,
    /// Lowercase hex, colon-separated, leading zero bytes dropped, like strongSwan (`01:ab:…`).
    pub serial: String,
    /// The serial number's INTEGER content octets as in the certificate.
    pub serial_der: Vec<u8>,
    /// Unix seconds.
    pub not_before: u64,
    pub not_after: u64,
    pub sans: Vec<SubjectAltName>,
    /// DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    /// SHA-256 of `spki`, lowercase hex with colons.
    pub key_fingerprint: String,
    /// basicConstraints cA.
    pub is_ca: bool,
    /// subjectKeyIdentifier extension.
    pub subject_key_id: Option<Vec<u8>>,
    /// keyUsage digitalSignature, `None` without the extension.
    pub digital_signature: Option<bool>,
    /// extendedKeyUsage OIDs (dotted), `None` without the extension.
    pub ext_key_usage: Option<Vec<String>>,
    /// The subjectPublicKey BIT STRING contents.
    pub public_key: Vec<u8>,
}

/// Why a certificate, CRL or chain was refused. Each names the check and the
/// certificate (subject, RFC 4514).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("certificate \"{subject}\": issuer \"{issuer}\" is not a configured CA")]
    UnknownCa { subject: String, issuer: String },
    #[error("certificate \"{subject}\" expired (not after {not_after})")]
    Expired { subject: String, not_after: u64 },
    #[error("certificate \"{subject}\" not yet valid (not before {not_before})")]
    NotYetValid { subject: String, not_before: u64 },
    #[error("certificate \"{subject}\" (serial {serial}) is revoked")]
    Revoked { subject: String, serial: String },
    #[error("certificate \"{subject}\" (or an intermediate of its chain): bad signature")]
    BadSignature { subject: String },
    #[error("certificate \"{subject}\": key usage: {detail}")]
    KeyUsage { subject: String, detail: String },
    #[error("certificate \"{subject}\": extended key usage has none of serverAuth, clientAuth, anyExtendedKeyUsage, ipsecIKE, iKEIntermediate ({present})")]
    ExtKeyUsage { subject: String, present: String },
    #[error("certificate \"{subject}\": signature algorithm unsupported or not matching the issuer's key")]
    UnsupportedAlgorithm { subject: String },
    #[error("CA certificate #{index} (\"{subject}\") is not a CA (basicConstraints cA missing)")]
    NotCa { index: usize, subject: String },
    #[error("CA certificate #{index}: {reason}")]
    BadCa { index: usize, reason: String },
    #[error("CRL #{index}: {reason}")]
    BadCrl { index: usize, reason: String },
    #[error("malformed certificate: {0}")]
    Malformed(String),
    #[error("{0}")]
    Other(String),
}

fn hex_colon(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")
}

/// SHA-1 of a DER SubjectPublicKeyInfo (the CERTREQ / CERT "hash and URL" hash).
pub fn spki_sha1(spki_der: &[u8]) -> [u8; 20] {
    Sha1::digest(spki_der).into()
}

impl CertInfo {
    /// Parses a DER certificate (no verification).
    pub fn parse(der: &[u8]) -> Result<CertInfo, CertError> {
        let cert = Certificate::from_der(der).map_err(|e| CertError::Malformed(e.to_string()))?;
        let tbs = &cert.tbs_certificate;
        let enc = |e: der::Error| CertError::Malformed(e.to_string());
        let subject_der = tbs.subject.to_der().map_err(enc)?;
        let issuer_der = tbs.issuer.to_der().map_err(enc)?;
        let spki = tbs.subject_public_key_info.to_der().map_err(enc)?;
        let serial_der = tbs.serial_number.as_bytes().to_vec();
        let mut s: &[u8] = &serial_der;
        while s.len() > 1 && s[0] == 0 {
            s = &s[1..];
        }
        let mut info = CertInfo {
            der: der.to_vec(),
            subject: dn::name_to_rfc4514(&tbs.subject),
            subject_der,
            issuer: dn::name_to_rfc4514(&tbs.issuer),
            issuer_der,
            serial: hex_colon(s),
            serial_der: serial_der.clone(),
            not_before: tbs.validity.not_before.to_unix_duration().as_secs(),
            not_after: tbs.validity.not_after.to_unix_duration().as_secs(),
            sans: Vec::new(),
            key_fingerprint: hex_colon(&Sha256::digest(&spki)),
            spki,
            is_ca: false,
            subject_key_id: None,
            digital_signature: None,
            ext_key_usage: None,
            public_key: tbs.subject_public_key_info.subject_public_key.raw_bytes().to_vec(),
        };
        let bad = |what: &str, e: der::Error| CertError::Malformed(format!("{what} extension: {e}"));
        for ext in tbs.extensions.iter().flatten() {
            let v = ext.extn_value.as_bytes();
            match ext.extn_id.to_string().as_str() {
                "2.5.29.17" => {
                    let sans = SanExt::from_der(v).map_err(|e| bad("subjectAltName", e))?;
                    for gn in sans.0 {
                        info.sans.push(match gn {
                            GeneralName::DnsName(s) => SubjectAltName::Dns(s.to_string()),
                            GeneralName::Rfc822Name(s) => SubjectAltName::Email(s.to_string()),
                            GeneralName::UniformResourceIdentifier(s) => SubjectAltName::Uri(s.to_string()),
                            GeneralName::IpAddress(o) => match o.as_bytes().len() {
                                4 => SubjectAltName::Ip(IpAddr::from(<[u8; 4]>::try_from(o.as_bytes()).unwrap_or_default())),
                                16 => SubjectAltName::Ip(IpAddr::from(<[u8; 16]>::try_from(o.as_bytes()).unwrap_or_default())),
                                _ => SubjectAltName::Other,
                            },
                            GeneralName::DirectoryName(n) => SubjectAltName::Dn(n.to_der().map_err(enc)?),
                            _ => SubjectAltName::Other,
                        });
                    }
                }
                "2.5.29.19" => info.is_ca = BasicConstraints::from_der(v).map_err(|e| bad("basicConstraints", e))?.ca,
                "2.5.29.15" => {
                    let ku = KeyUsage::from_der(v).map_err(|e| bad("keyUsage", e))?;
                    info.digital_signature = Some(ku.0.contains(KeyUsages::DigitalSignature));
                }
                "2.5.29.37" => {
                    let eku = ExtendedKeyUsage::from_der(v).map_err(|e| bad("extendedKeyUsage", e))?;
                    info.ext_key_usage = Some(eku.0.iter().map(|o| o.to_string()).collect());
                }
                "2.5.29.14" => {
                    let ski = SubjectKeyIdentifier::from_der(v).map_err(|e| bad("subjectKeyIdentifier", e))?;
                    info.subject_key_id = Some(ski.0.as_bytes().to_vec());
                }
                _ => {}
            }
        }
        Ok(info)
    }

    /// SHA-1 of the SubjectPublicKeyInfo (CERTREQ hash of this certificate as a CA).
    pub fn spki_sha1(&self) -> [u8; 20] {
        spki_sha1(&self.spki)
    }

    /// Is the IKE identity (RFC 7296 3.5 ID type and data as on the wire)
    /// bound to this certificate? As charon's x509 plugin (`has_subject`):
    ///
    /// * ID_DER_ASN1_DN (9): the subject ([`dn::equal`]) or a SAN directoryName;
    /// * ID_FQDN (2): a SAN dNSName, ASCII case ignored;
    /// * ID_RFC822_ADDR (3): a SAN rfc822Name, ASCII case ignored;
    /// * ID_IPV4_ADDR (1) / ID_IPV6_ADDR (5): a SAN iPAddress;
    /// * ID_KEY_ID (11): the subjectKeyIdentifier, the SHA-1 of the
    ///   subjectPublicKey bits or the SHA-1 of the SubjectPublicKeyInfo.
    ///
    /// The subject's CN is never used for an FQDN or email identity: charon
    /// does not either (its `has_subject` matches the subject DN only against
    /// DN identities, everything else against subjectAltNames). Wildcard
    /// identities are not supported here.
    pub fn binds_identity(&self, id_type: u8, id_data: &[u8]) -> bool {
        match id_type {
            ID_DER_ASN1_DN => {
                dn::equal(&self.subject_der, id_data)
                    || self.sans.iter().any(|s| matches!(s, SubjectAltName::Dn(d) if dn::equal(d, id_data)))
            }
            ID_FQDN => self.sans.iter().any(|s| matches!(s, SubjectAltName::Dns(d) if d.as_bytes().eq_ignore_ascii_case(id_data))),
            ID_RFC822_ADDR => self.sans.iter().any(|s| matches!(s, SubjectAltName::Email(d) if d.as_bytes().eq_ignore_ascii_case(id_data))),
            ID_IPV4_ADDR | ID_IPV6_ADDR => {
                let ip = match (id_type, id_data.len()) {
                    (ID_IPV4_ADDR, 4) => IpAddr::from(<[u8; 4]>::try_from(id_data).unwrap_or_default()),
                    (ID_IPV6_ADDR, 16) => IpAddr::from(<[u8; 16]>::try_from(id_data).unwrap_or_default()),
                    _ => return false,
                };
                self.sans.iter().any(|s| matches!(s, SubjectAltName::Ip(a) if *a == ip))
            }
            ID_KEY_ID => {
                !id_data.is_empty()
                    && (self.subject_key_id.as_deref() == Some(id_data)
                        || Sha1::digest(&self.public_key).as_slice() == id_data
                        || Sha1::digest(&self.spki).as_slice() == id_data)
            }
            _ => false,
        }
    }
}

/// A configured CRL: webpki's form and what error messages need.
struct Crl {
    /// Held as webpki takes it, so that a check borrows it (a CRL of
    /// thousands of entries is not copied per handshake).
    webpki: CertRevocationList<'static>,
    issuer_der: Vec<u8>,
    issuer: String,
    revoked: Vec<Vec<u8>>,
    next_update: Option<u64>,
}

/// Configured trust: CA certificates (trust anchors; intermediate CAs the
/// operator configured are anchors too, a path may end at them) and CRLs.
pub struct TrustStore {
    cas: Vec<CertInfo>,
    anchors: Vec<TrustAnchor<'static>>,
    crls: Vec<Crl>,
    /// Chains verified before (see [`TrustStore::verify`]).
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], Verified>>,
}

/// A chain that verified, and the time window in which every certificate
/// of it (and every intermediate sent along) is valid: inside it the same
/// chain verifies again with the same result, as the CAs and CRLs of a
/// store do not change (a reload makes a new store).
struct Verified {
    info: CertInfo,
    from: u64,
    until: u64,
}

/// The most chains remembered per store; when full it starts again.
const MAX_VERIFIED: usize = 1024;

/// Signature algorithms accepted in chains.
static ALGS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

/// EKU policy of [`ACCEPTED_EKUS`] (absent is fine).
struct IkeEku;

impl webpki::ExtendedKeyUsageValidator for IkeEku {
    #[allow(deprecated)] // RequiredEkuNotFoundContext wants a single required KeyUsage
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let mut empty = true;
        for id in iter {
            empty = false;
            let dotted = id?.to_decoded_oid().iter().map(|c| c.to_string()).collect::<Vec<_>>().join(".");
            if ACCEPTED_EKUS.contains(&dotted.as_str()) {
                return Ok(());
            }
        }
        if empty {
            Ok(())
        } else {
            Err(webpki::Error::RequiredEkuNotFound)
        }
    }
}

impl TrustStore {
    /// `ca_certs` and `crls` as DER. A CA must parse and have basicConstraints
    /// cA (errors name its index). A CRL must parse; CRLs of issuers that are
    /// not configured CAs are kept (they apply to intermediates the peers send).
    pub fn new(ca_certs: Vec<Vec<u8>>, crls: Vec<Vec<u8>>) -> Result<TrustStore, CertError> {
        let mut cas = Vec::new();
        let mut anchors = Vec::new();
        for (index, der) in ca_certs.into_iter().enumerate() {
            let info = CertInfo::parse(&der).map_err(|e| CertError::BadCa { index, reason: e.to_string() })?;
            if !info.is_ca {
                return Err(CertError::NotCa { index, subject: info.subject });
            }
            let cd = CertificateDer::from(der.as_slice());
            let anchor =
                webpki::anchor_from_trusted_cert(&cd).map_err(|e| CertError::BadCa { index, reason: format!("{e:?}") })?.to_owned();
            anchors.push(anchor);
            cas.push(info);
        }
        let mut list = Vec::new();
        for (index, der) in crls.into_iter().enumerate() {
            let webpki = OwnedCertRevocationList::from_der(&der).map_err(|e| CertError::BadCrl { index, reason: format!("{e:?}") })?;
            let parsed = x509_cert::crl::CertificateList::from_der(&der).map_err(|e| CertError::BadCrl { index, reason: e.to_string() })?;
            let tbs = &parsed.tbs_cert_list;
            let issuer_der = tbs.issuer.to_der().map_err(|e| CertError::BadCrl { index, reason: e.to_string() })?;
            list.push(Crl {
                webpki: CertRevocationList::Owned(webpki),
                issuer: dn::name_to_rfc4514(&tbs.issuer),
                issuer_der,
                revoked: tbs.revoked_certificates.iter().flatten().map(|r| r.serial_number.as_bytes().to_vec()).collect(),
                next_update: tbs.next_update.map(|t| t.to_unix_duration().as_secs()),
            });
        }
        Ok(TrustStore { cas, anchors, crls: list, verified: Default::default() })
    }

    /// The configured CAs.
    pub fn cas(&self) -> &[CertInfo] {
        &self.cas
    }

    /// Issuers (RFC 4514) of configured CRLs whose nextUpdate is before
    /// `unix_time`: they are still used (as strongSwan does); the caller
    /// should warn.
    pub fn expired_crls(&self, unix_time: u64) -> Vec<String> {
        self.crls.iter().filter(|c| c.next_update.is_some_and(|n| n < unix_time)).map(|c| c.issuer.clone()).collect()
    }

    /// CERTREQ data (RFC 7296 3.7): the concatenated SHA-1 hashes of each CA's
    /// SubjectPublicKeyInfo DER.
    pub fn certreq_data(&self) -> Vec<u8> {
        self.cas.iter().flat_map(|c| c.spki_sha1()).collect()
    }

    /// Does a received CERTREQ's data (20-byte hashes) name the CA whose
    /// SubjectPublicKeyInfo hashes to `our_cert_issuer_spki_sha1`?
    pub fn certreq_names_us(data: &[u8], our_cert_issuer_spki_sha1: &[u8; 20]) -> bool {
        data.chunks_exact(20).any(|c| c == our_cert_issuer_spki_sha1)
    }

    /// Which of `issuers_spki_sha1` (e.g. the CA of each of our chains) a
    /// received CERTREQ names, by index.
    pub fn certreq_matches(data: &[u8], issuers_spki_sha1: &[[u8; 20]]) -> Vec<usize> {
        (0..issuers_spki_sha1.len()).filter(|&i| Self::certreq_names_us(data, &issuers_spki_sha1[i])).collect()
    }

    /// Validates `end_entity` (DER) with `intermediates` (DER, the peer's
    /// other CERT payloads) at `unix_time`: a path to a configured CA,
    /// validity of every certificate (the CA's too), basic constraints,
    /// signatures; keyUsage must have digitalSignature when present; the
    /// extendedKeyUsage, when present, one of [`ACCEPTED_EKUS`] (on
    /// intermediates too, as webpki checks it along the path); CRLs checked
    /// for every certificate of the path whose issuer has a configured CRL
    /// (otherwise the status is unknown and accepted). An expired CRL is
    /// still used (as strongSwan does; see [`TrustStore::expired_crls`]).
    ///
    /// A chain that verified is remembered (up to [`MAX_VERIFIED`] chains,
    /// keyed by the SHA-256 of the certificates sent) with the window in
    /// which all its certificates are valid; inside that window the same
    /// chain is answered from memory, without parsing or signature checks
    /// (as strongSwan's certificate cache does for issuer signatures).
    pub fn verify(&self, end_entity: &[u8], intermediates: &[Vec<u8>], unix_time: u64) -> Result<CertInfo, CertError> {
        let key = {
            let mut h = Sha256::new();
            for c in std::iter::once(end_entity).chain(intermediates.iter().map(Vec::as_slice)) {
                h.update((c.len() as u64).to_be_bytes());
                h.update(c);
            }
            <[u8; 32]>::from(h.finalize())
        };
        if let Some(v) = self.cache().get(&key) {
            if (v.from..=v.until).contains(&unix_time) {
                return Ok(v.info.clone());
            }
        }
        let (info, from, until) = self.verify_uncached(end_entity, intermediates, unix_time)?;
        let mut c = self.cache();
        if c.len() >= MAX_VERIFIED {
            c.clear();
        }
        c.insert(key, Verified { info: info.clone(), from, until });
        Ok(info)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<[u8; 32], Verified>> {
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`TrustStore::verify`] without memory; also the validity window of
    /// the chain (every certificate sent and the anchor).
    fn verify_uncached(&self, end_entity: &[u8], intermediates: &[Vec<u8>], unix_time: u64) -> Result<(CertInfo, u64, u64), CertError> {
        let ee = CertInfo::parse(end_entity)?;
        let inter: Vec<CertInfo> = intermediates.iter().filter_map(|d| CertInfo::parse(d).ok()).collect();
        if unix_time > ee.not_after {
            return Err(CertError::Expired { subject: ee.subject, not_after: ee.not_after });
        }
        if unix_time < ee.not_before {
            return Err(CertError::NotYetValid { subject: ee.subject, not_before: ee.not_before });
        }
        let ee_der = CertificateDer::from(end_entity);
        let cert = webpki::EndEntityCert::try_from(&ee_der).map_err(|e| CertError::Malformed(format!("\"{}\": {e:?}", ee.subject)))?;
        let inter_der: Vec<CertificateDer<'_>> = intermediates.iter().map(|d| CertificateDer::from(d.as_slice())).collect();
        let crl_refs: Vec<&CertRevocationList<'_>> = self.crls.iter().map(|c| &c.webpki).collect();
        let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
            b.with_depth(RevocationCheckDepth::Chain)
                .with_status_policy(UnknownStatusPolicy::Allow)
                .with_expiration_policy(ExpirationPolicy::Ignore)
                .build()
        });
        let time = UnixTime::since_unix_epoch(Duration::from_secs(unix_time));
        let path = cert
            .verify_for_usage(ALGS, &self.anchors, &inter_der, time, IkeEku, revocation, None)
            .map_err(|e| self.map_error(e, &ee, &inter))?;
        let anchor_spki = path.anchor().subject_public_key_info.as_ref();
        let mut from = inter.iter().map(|c| c.not_before).fold(ee.not_before, u64::max);
        let mut until = inter.iter().map(|c| c.not_after).fold(ee.not_after, u64::min);
        if let Some(i) = self.anchors.iter().position(|a| a.subject_public_key_info.as_ref() == anchor_spki) {
            let ca = &self.cas[i];
            from = from.max(ca.not_before);
            until = until.min(ca.not_after);
            if unix_time > ca.not_after {
                return Err(CertError::Expired { subject: ca.subject.clone(), not_after: ca.not_after });
            }
            if unix_time < ca.not_before {
                return Err(CertError::NotYetValid { subject: ca.subject.clone(), not_before: ca.not_before });
            }
        }
        if ee.digital_signature == Some(false) {
            return Err(CertError::KeyUsage { subject: ee.subject, detail: "keyUsage without digitalSignature".to_string() });
        }
        Ok((ee, from, until))
    }

    /// The chain the peer sent, following issuer names from the end entity.
    fn chain<'a>(ee: &'a CertInfo, inter: &'a [CertInfo]) -> Vec<&'a CertInfo> {
        let mut chain = vec![ee];
        while chain.len() <= inter.len() {
            let last = chain[chain.len() - 1];
            match inter.iter().find(|c| dn::equal(&c.subject_der, &last.issuer_der) && !chain.iter().any(|x| std::ptr::eq(*x, *c))) {
                Some(next) => chain.push(next),
                None => break,
            }
        }
        chain
    }

    #[allow(deprecated)] // match the old unit variants too
    fn map_error(&self, e: webpki::Error, ee: &CertInfo, inter: &[CertInfo]) -> CertError {
        use webpki::Error as W;
        let chain = Self::chain(ee, inter);
        let subject = ee.subject.clone();
        let all = || chain.iter().copied().chain(self.cas.iter());
        match e {
            W::UnknownIssuer => {
                let top = chain[chain.len() - 1];
                CertError::UnknownCa { subject: top.subject.clone(), issuer: top.issuer.clone() }
            }
            W::CertExpired { not_after, .. } => {
                let n = not_after.as_secs();
                let who = all().find(|c| c.not_after == n).map(|c| c.subject.clone()).unwrap_or(subject);
                CertError::Expired { subject: who, not_after: n }
            }
            W::CertNotValidYet { not_before, .. } => {
                let n = not_before.as_secs();
                let who = all().find(|c| c.not_before == n).map(|c| c.subject.clone()).unwrap_or(subject);
                CertError::NotYetValid { subject: who, not_before: n }
            }
            W::CertRevoked => {
                let who = chain
                    .iter()
                    .find(|c| self.crls.iter().any(|crl| dn::equal(&crl.issuer_der, &c.issuer_der) && crl.revoked.contains(&c.serial_der)));
                let c = who.copied().unwrap_or(ee);
                CertError::Revoked { subject: c.subject.clone(), serial: c.serial.clone() }
            }
            W::InvalidSignatureForPublicKey => CertError::BadSignature { subject },
            W::RequiredEkuNotFound | W::RequiredEkuNotFoundContext(_) => {
                let c = chain
                    .iter()
                    .find(|c| c.ext_key_usage.as_ref().is_some_and(|l| !l.iter().any(|o| ACCEPTED_EKUS.contains(&o.as_str()))))
                    .copied()
                    .unwrap_or(ee);
                CertError::ExtKeyUsage { subject: c.subject.clone(), present: c.ext_key_usage.clone().unwrap_or_default().join(", ") }
            }
            W::EmptyEkuExtension => CertError::ExtKeyUsage { subject, present: String::new() },
            W::CaUsedAsEndEntity => CertError::KeyUsage { subject, detail: "a CA certificate used as end entity".to_string() },
            W::EndEntityUsedAsCa => {
                CertError::KeyUsage { subject, detail: "an end-entity certificate used as CA in the chain".to_string() }
            }
            W::PathLenConstraintViolated => CertError::KeyUsage { subject, detail: "path length constraint violated".to_string() },
            W::UnsupportedSignatureAlgorithm
            | W::UnsupportedSignatureAlgorithmContext(_)
            | W::UnsupportedSignatureAlgorithmForPublicKey
            | W::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
            | W::SignatureAlgorithmMismatch => CertError::UnsupportedAlgorithm { subject },
            W::BadDer | W::BadDerTime | W::TrailingData(_) | W::MalformedExtensions | W::ExtensionValueInvalid => {
                CertError::Malformed(format!("\"{subject}\" or its chain: {e:?}"))
            }
            other => CertError::Other(format!("certificate \"{subject}\": {other:?}")),
        }
    }
}

/// All `-----BEGIN {label}-----` blocks of a PEM text (e.g. "CERTIFICATE",
/// "X509 CRL"), or, when `bytes` is not PEM, the single DER blob.
pub fn pem_or_der_blocks(bytes: &[u8], label: &str) -> Result<Vec<Vec<u8>>, CertError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let text = match std::str::from_utf8(bytes) {
        Ok(t) if t.contains("-----BEGIN ") => t,
        _ => {
            if bytes.first() != Some(&0x30) {
                return Err(CertError::Malformed(format!("neither PEM nor DER ({label})")));
            }
            return Ok(vec![bytes.to_vec()]);
        }
    };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(b) = rest.find(&begin) {
        let after = &rest[b..];
        let e = after.find(&end).ok_or_else(|| CertError::Malformed(format!("PEM {label} block without END line")))?;
        let block = &after[..e + end.len()];
        let (_, der) = pem_rfc7468::decode_vec(block.as_bytes()).map_err(|e| CertError::Malformed(format!("PEM {label}: {e}")))?;
        out.push(der);
        rest = &after[e + end.len()..];
    }
    if out.is_empty() {
        return Err(CertError::Malformed(format!("no PEM {label} block")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        date_time_ymd, BasicConstraints as Bc, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa,
        KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber, SignatureAlgorithm,
    };

    /// 2030-01-01T00:00:00Z and friends (the certificates below are valid 2025..2035).
    const T_VALID: u64 = 1_893_456_000;
    const T_2024: u64 = 1_704_067_200;
    const T_2036: u64 = 2_082_758_400;

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn params(cn: &str, ca: bool, serial: u64) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CountryName, "CH");
        p.distinguished_name.push(DnType::OrganizationName, "wisp");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_before = date_time_ymd(2025, 1, 1);
        p.not_after = date_time_ymd(2035, 1, 1);
        p.serial_number = Some(SerialNumber::from(serial));
        if ca {
            p.is_ca = IsCa::Ca(Bc::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        }
        p
    }

    fn root(alg: &'static SignatureAlgorithm, cn: &str) -> Ca {
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = params(cn, true, 1).self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn issue(p: CertificateParams, alg: &'static SignatureAlgorithm, by: &Ca) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate_for(alg).unwrap();
        let cert = p.signed_by(&key, &by.cert, &by.key).unwrap();
        (cert.der().to_vec(), key)
    }

    fn ee_params(cn: &str, serial: u64) -> CertificateParams {
        let mut p = params(cn, false, serial);
        p.subject_alt_names = vec![
            SanType::DnsName(cn.try_into().unwrap()),
            SanType::Rfc822Name("Peer@Example.org".try_into().unwrap()),
            SanType::IpAddress("192.0.2.7".parse().unwrap()),
            SanType::IpAddress("2001:db8::7".parse().unwrap()),
        ];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p
    }

    fn store(cas: &[&Ca], crls: Vec<Vec<u8>>) -> TrustStore {
        TrustStore::new(cas.iter().map(|c| c.cert.der().to_vec()).collect(), crls).unwrap()
    }

    #[test]
    fn chains_per_algorithm() {
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
            let ca = root(alg, "Root");
            let (ee, _) = issue(ee_params("moon.example.org", 10), alg, &ca);
            let ts = store(&[&ca], vec![]);
            let info = ts.verify(&ee, &[], T_VALID).unwrap();
            assert_eq!(info.subject, "CN=moon.example.org,O=wisp,C=CH");
            assert_eq!(info.issuer, "CN=Root,O=wisp,C=CH");
            assert_eq!(info.serial, "0a");
            assert!(!info.is_ca);
            assert!(ts.cas()[0].is_ca);
            assert_eq!(info.not_before, 1_735_689_600);
            assert_eq!(info.not_after, 2_051_222_400);
            // Unknown CA.
            let other = root(alg, "Other");
            let e = store(&[&other], vec![]).verify(&ee, &[], T_VALID).unwrap_err();
            assert_eq!(e, CertError::UnknownCa { subject: "CN=moon.example.org,O=wisp,C=CH".into(), issuer: "CN=Root,O=wisp,C=CH".into() });
            // Expired, not yet valid.
            assert!(matches!(ts.verify(&ee, &[], T_2036), Err(CertError::Expired { not_after: 2_051_222_400, .. })));
            assert!(matches!(ts.verify(&ee, &[], T_2024), Err(CertError::NotYetValid { not_before: 1_735_689_600, .. })));
        }
    }

    #[test]
    fn intermediate_from_peer() {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca = root(alg, "Root");
        let ikey = KeyPair::generate_for(alg).unwrap();
        let mut ip = params("Intermediate", true, 2);
        ip.not_after = date_time_ymd(2032, 1, 1);
        let icert = ip.signed_by(&ikey, &ca.cert, &ca.key).unwrap();
        let inter = Ca { cert: icert, key: ikey };
        let (ee, _) = issue(ee_params("sun.example.org", 20), alg, &inter);
        let ts = store(&[&ca], vec![]);
        let i_der = inter.cert.der().to_vec();
        assert_eq!(ts.verify(&ee, std::slice::from_ref(&i_der), T_VALID).unwrap().subject, "CN=sun.example.org,O=wisp,C=CH");
        // Without the intermediate: the chain ends at it.
        assert!(
            matches!(ts.verify(&ee, &[], T_VALID), Err(CertError::UnknownCa { issuer, .. }) if issuer == "CN=Intermediate,O=wisp,C=CH")
        );
        // The intermediate expired (2032) while the EE is still valid.
        let t_2033 = 1_988_150_400;
        let e = ts.verify(&ee, std::slice::from_ref(&i_der), t_2033).unwrap_err();
        assert!(matches!(&e, CertError::Expired { subject, .. } if subject == "CN=Intermediate,O=wisp,C=CH"), "{e:?}");
        // A CA configured as an intermediate anchor works without the root.
        assert!(store(&[&inter], vec![]).verify(&ee, &[], T_VALID).is_ok());
    }

    #[test]
    fn expired_ca() {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let key = KeyPair::generate_for(alg).unwrap();
        let mut p = params("Short Root", true, 1);
        p.not_after = date_time_ymd(2032, 1, 1);
        let ca = Ca { cert: p.self_signed(&key).unwrap(), key };
        let (ee, _) = issue(ee_params("moon.example.org", 10), alg, &ca);
        let ts = store(&[&ca], vec![]);
        assert!(ts.verify(&ee, &[], T_VALID).is_ok());
        // webpki does not look at the anchor's validity; verify does.
        let e = ts.verify(&ee, &[], 1_988_150_400).unwrap_err();
        assert_eq!(e, CertError::Expired { subject: "CN=Short Root,O=wisp,C=CH".into(), not_after: 1_956_528_000 });
        assert!(e.to_string().contains("Short Root"));
    }

    fn crl(ca: &Ca, serials: &[u64]) -> Vec<u8> {
        CertificateRevocationListParams {
            this_update: date_time_ymd(2025, 6, 1),
            next_update: date_time_ymd(2026, 6, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&s| RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: date_time_ymd(2025, 6, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca.cert, &ca.key)
        .unwrap()
        .der()
        .to_vec()
    }

    #[test]
    fn revocation() {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca = root(alg, "Root");
        let (ee, _) = issue(ee_params("moon.example.org", 0x1234), alg, &ca);
        let ts = store(&[&ca], vec![crl(&ca, &[0x1234])]);
        // The CRL expired in 2026: still used.
        assert_eq!(ts.expired_crls(T_VALID), vec!["CN=Root,O=wisp,C=CH".to_string()]);
        assert_eq!(
            ts.verify(&ee, &[], T_VALID).unwrap_err(),
            CertError::Revoked { subject: "CN=moon.example.org,O=wisp,C=CH".into(), serial: "12:34".into() }
        );
        let ts = store(&[&ca], vec![crl(&ca, &[0x99])]);
        assert!(ts.verify(&ee, &[], T_VALID).is_ok());
        // A CRL of an issuer that is not configured: kept, harmless.
        let other = root(alg, "Other");
        assert!(store(&[&ca], vec![crl(&other, &[0x1234])]).verify(&ee, &[], T_VALID).is_ok());
        assert!(matches!(TrustStore::new(vec![], vec![b"\x30\x00".to_vec()]), Err(CertError::BadCrl { index: 0, .. })));
    }

    #[test]
    fn bad_signature_eku_key_usage() {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca = root(alg, "Root");
        // Same name, other key.
        let impostor = root(alg, "Root");
        let (ee, _) = issue(ee_params("moon.example.org", 5), alg, &impostor);
        let ts = store(&[&ca], vec![]);
        assert_eq!(
            ts.verify(&ee, &[], T_VALID).unwrap_err(),
            CertError::BadSignature { subject: "CN=moon.example.org,O=wisp,C=CH".into() }
        );

        let mut p = ee_params("code.example.org", 6);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        let (ee, _) = issue(p, alg, &ca);
        let e = ts.verify(&ee, &[], T_VALID).unwrap_err();
        assert!(
            matches!(&e, CertError::ExtKeyUsage { subject, present } if subject.starts_with("CN=code") && present == "1.3.6.1.5.5.7.3.3"),
            "{e:?}"
        );

        for (ekus, ok) in [
            (vec![ExtendedKeyUsagePurpose::ServerAuth], true),
            (vec![ExtendedKeyUsagePurpose::CodeSigning, ExtendedKeyUsagePurpose::ClientAuth], true),
            (vec![ExtendedKeyUsagePurpose::Any], true),
            (vec![ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 17])], true),
            (vec![ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 5, 5, 8, 2, 2])], true),
            (vec![ExtendedKeyUsagePurpose::EmailProtection], false),
        ] {
            let mut p = ee_params("eku.example.org", 7);
            p.extended_key_usages = ekus.clone();
            let (ee, _) = issue(p, alg, &ca);
            assert_eq!(ts.verify(&ee, &[], T_VALID).is_ok(), ok, "{ekus:?}");
        }

        let mut p = ee_params("ku.example.org", 8);
        p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
        let (ee, _) = issue(p, alg, &ca);
        assert!(matches!(ts.verify(&ee, &[], T_VALID), Err(CertError::KeyUsage { .. })));
        let mut p = ee_params("noku.example.org", 9);
        p.key_usages = vec![];
        let (ee, _) = issue(p, alg, &ca);
        assert!(ts.verify(&ee, &[], T_VALID).is_ok());

        // A non-CA as trust anchor is refused by index.
        assert!(matches!(TrustStore::new(vec![ee.clone()], vec![]), Err(CertError::NotCa { index: 0, .. })));
        assert!(matches!(TrustStore::new(vec![ca.cert.der().to_vec(), b"junk".to_vec()], vec![]), Err(CertError::BadCa { index: 1, .. })));
    }

    #[test]
    fn identities() {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca = root(alg, "Root");
        let (ee, key) = issue(ee_params("moon.example.org", 11), alg, &ca);
        let info = CertInfo::parse(&ee).unwrap();
        assert_eq!(info.sans.len(), 4);
        // rcgen writes UTF8String values; the configured DN is PrintableString and another case.
        let dn_cfg = dn::from_config("C=ch, O=WISP, CN=Moon.Example.org").unwrap();
        assert!(info.binds_identity(ID_DER_ASN1_DN, &dn_cfg));
        assert!(!info.binds_identity(ID_DER_ASN1_DN, &dn::from_config("C=CH, O=wisp, CN=sun.example.org").unwrap()));
        assert!(info.binds_identity(ID_FQDN, b"MOON.example.org"));
        assert!(!info.binds_identity(ID_FQDN, b"sun.example.org"));
        assert!(!info.binds_identity(ID_FQDN, b"moon.example.org."));
        assert!(info.binds_identity(ID_RFC822_ADDR, b"peer@example.ORG"));
        assert!(!info.binds_identity(ID_RFC822_ADDR, b"other@example.org"));
        assert!(info.binds_identity(ID_IPV4_ADDR, &[192, 0, 2, 7]));
        assert!(!info.binds_identity(ID_IPV4_ADDR, &[192, 0, 2, 8]));
        let v6: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
        assert!(info.binds_identity(ID_IPV6_ADDR, &v6.octets()));
        assert!(!info.binds_identity(ID_IPV4_ADDR, &v6.octets()));
        // Key ID: SHA-1 of the public key bits (rcgen's SKI method is SHA-256 truncated: check both).
        let pk_sha1 = Sha1::digest(key.public_key_raw());
        assert!(info.binds_identity(ID_KEY_ID, &pk_sha1));
        if let Some(ski) = &info.subject_key_id {
            assert!(info.binds_identity(ID_KEY_ID, ski));
        }
        assert!(!info.binds_identity(ID_KEY_ID, &[0u8; 20]));
        assert!(!info.binds_identity(ID_KEY_ID, b""));
        // No SAN match from the CN, other types never.
        assert!(!info.binds_identity(4, b"moon.example.org"));
        assert!(!info.binds_identity(ID_FQDN, b""));
        // Fingerprint.
        assert_eq!(info.key_fingerprint, hex_colon(&Sha256::digest(&info.spki)));
        assert_eq!(info.key_fingerprint.len(), 32 * 3 - 1);
    }

    #[test]
    fn certreq() {
        let a = root(&rcgen::PKCS_ECDSA_P256_SHA256, "A");
        let b = root(&rcgen::PKCS_ED25519, "B");
        let ts = store(&[&a, &b], vec![]);
        let mut expect = Vec::new();
        for c in [&a, &b] {
            let cert = Certificate::from_der(c.cert.der()).unwrap();
            let spki = cert.tbs_certificate.subject_public_key_info.to_der().unwrap();
            assert_eq!(spki, c.key.public_key_der());
            expect.extend_from_slice(&Sha1::digest(&spki));
        }
        assert_eq!(ts.certreq_data(), expect);
        assert_eq!(ts.certreq_data().len(), 40);
        let hb = ts.cas()[1].spki_sha1();
        assert!(TrustStore::certreq_names_us(&ts.certreq_data(), &hb));
        assert!(!TrustStore::certreq_names_us(&ts.certreq_data()[..20], &hb));
        assert!(!TrustStore::certreq_names_us(&ts.certreq_data()[1..], &hb));
        assert_eq!(TrustStore::certreq_matches(&expect[20..], &[ts.cas()[0].spki_sha1(), hb]), vec![1]);
    }

    #[test]
    fn pem_blocks() {
        let a = root(&rcgen::PKCS_ECDSA_P256_SHA256, "A");
        let b = root(&rcgen::PKCS_ECDSA_P256_SHA256, "B");
        let text = format!("junk\n{}\n{}", a.cert.pem(), b.cert.pem());
        let blocks = pem_or_der_blocks(text.as_bytes(), "CERTIFICATE").unwrap();
        assert_eq!(blocks, vec![a.cert.der().to_vec(), b.cert.der().to_vec()]);
        assert_eq!(pem_or_der_blocks(a.cert.der(), "CERTIFICATE").unwrap(), vec![a.cert.der().to_vec()]);
        assert!(pem_or_der_blocks(text.as_bytes(), "X509 CRL").is_err());
        assert!(pem_or_der_blocks(b"hello", "CERTIFICATE").is_err());
    }

    #[test]
    fn strongswan_pki() {
        use std::process::Command;
        if !std::path::Path::new("/usr/bin/pki").exists() {
            eprintln!("skipped: strongSwan's pki is not installed");
            return;
        }
        let dir = std::env::temp_dir().join(format!("wisp-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = |n: &str| dir.join(n).to_str().unwrap().to_string();
        let run = |args: &[&str], out: &str| {
            let o = Command::new("pki").args(args).output().unwrap();
            assert!(o.status.success(), "pki {args:?}: {}", String::from_utf8_lossy(&o.stderr));
            std::fs::write(dir.join(out), &o.stdout).unwrap();
        };
        run(&["--gen", "--type", "ecdsa", "--size", "256", "--outform", "der"], "ca.key");
        run(
            &[
                "--self",
                "--ca",
                "--in",
                &p("ca.key"),
                "--type",
                "ecdsa",
                "--dn",
                "C=CH, O=strongSwan, CN=strongSwan Root CA",
                "--outform",
                "der",
            ],
            "ca.der",
        );
        run(&["--gen", "--type", "ecdsa", "--size", "256", "--outform", "der"], "moon.key");
        run(&["--pub", "--in", &p("moon.key"), "--type", "ecdsa", "--outform", "der"], "moon.pub");
        run(
            &[
                "--issue",
                "--cacert",
                &p("ca.der"),
                "--cakey",
                &p("ca.key"),
                "--in",
                &p("moon.pub"),
                "--type",
                "pub",
                "--dn",
                "C=CH, O=strongSwan, CN=moon.strongswan.org",
                "--san",
                "moon.strongswan.org",
                "--serial",
                "0155",
                "--outform",
                "der",
            ],
            "moon.der",
        );
        run(
            &[
                "--signcrl",
                "--cacert",
                &p("ca.der"),
                "--cakey",
                &p("ca.key"),
                "--reason",
                "key-compromise",
                "--serial",
                "0155",
                "--outform",
                "der",
            ],
            "crl.der",
        );
        let read = |n: &str| std::fs::read(dir.join(n)).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let ts = TrustStore::new(vec![read("ca.der")], vec![]).unwrap();
        let info = ts.verify(&read("moon.der"), &[], now + 60).unwrap();
        assert_eq!(info.subject, "CN=moon.strongswan.org,O=strongSwan,C=CH");
        assert_eq!(info.serial, "01:55");
        assert!(info.binds_identity(ID_FQDN, b"moon.strongswan.org"));
        assert!(info.binds_identity(ID_DER_ASN1_DN, &dn::from_config("C=CH, O=strongSwan, CN=moon.strongswan.org").unwrap()));
        assert_eq!(info.subject_der, dn::from_config("C=CH, O=strongSwan, CN=moon.strongswan.org").unwrap());
        let ts = TrustStore::new(vec![read("ca.der")], vec![read("crl.der")]).unwrap();
        assert!(matches!(ts.verify(&read("moon.der"), &[], now + 60), Err(CertError::Revoked { serial, .. }) if serial == "01:55"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// DER TLV with a definite length.
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        let n = body.len();
        if n < 0x80 {
            v.push(n as u8);
        } else if n < 0x100 {
            v.extend_from_slice(&[0x81, n as u8]);
        } else {
            v.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
        }
        v.extend_from_slice(body);
        v
    }

    /// An RSA key from strongSwan's pki (PKCS#1 DER) as an rcgen key (PKCS#8).
    fn pki_rsa_key(alg: &'static SignatureAlgorithm) -> KeyPair {
        let o = std::process::Command::new("pki").args(["--gen", "--type", "rsa", "--size", "3072", "--outform", "der"]).output().unwrap();
        assert!(o.status.success());
        let mut body = vec![0x02, 0x01, 0x00];
        body.extend_from_slice(&[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00]);
        body.extend_from_slice(&tlv(0x04, &o.stdout));
        let pkcs8 = tlv(0x30, &body);
        KeyPair::from_pkcs8_der_and_sign_algo(&rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8), alg).unwrap()
    }

    #[test]
    fn rsa_chain() {
        if !std::path::Path::new("/usr/bin/pki").exists() {
            eprintln!("skipped: RSA keys come from strongSwan's pki, not installed");
            return;
        }
        let ca_key = pki_rsa_key(&rcgen::PKCS_RSA_SHA256);
        let ca = Ca { cert: params("RSA Root", true, 1).self_signed(&ca_key).unwrap(), key: ca_key };
        let ee_key = pki_rsa_key(&rcgen::PKCS_RSA_SHA384);
        let ee = ee_params("rsa.example.org", 2).signed_by(&ee_key, &ca.cert, &ca.key).unwrap().der().to_vec();
        let ts = store(&[&ca], vec![]);
        assert_eq!(ts.verify(&ee, &[], T_VALID).unwrap().subject, "CN=rsa.example.org,O=wisp,C=CH");
        assert!(matches!(ts.verify(&ee, &[], T_2036), Err(CertError::Expired { .. })));
        // Same name, an ECDSA key: the RSA signature does not fit it.
        let other = root(&rcgen::PKCS_ECDSA_P256_SHA256, "RSA Root");
        let e = store(&[&other], vec![]).verify(&ee, &[], T_VALID).unwrap_err();
        assert_eq!(e, CertError::UnsupportedAlgorithm { subject: "CN=rsa.example.org,O=wisp,C=CH".into() });
    }

    #[test]
    fn hostile_input_never_panics() {
        use rand_chacha::rand_core::{RngCore, SeedableRng};
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca = root(alg, "Root");
        let (ee, _) = issue(ee_params("moon.example.org", 3), alg, &ca);
        let ts = store(&[&ca], vec![crl(&ca, &[4])]);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut errors = 0;
        for i in 0..10_000 {
            let blob = match i % 3 {
                0 => {
                    let mut b = vec![0u8; (rng.next_u32() % 600) as usize];
                    rng.fill_bytes(&mut b);
                    if !b.is_empty() {
                        b[0] = 0x30;
                    }
                    b
                }
                1 => ee[..rng.next_u32() as usize % ee.len()].to_vec(),
                _ => {
                    let mut b = ee.clone();
                    for _ in 0..1 + rng.next_u32() % 4 {
                        let n = rng.next_u32() as usize % b.len();
                        b[n] ^= 1 << (rng.next_u32() % 8);
                    }
                    b
                }
            };
            let parsed = CertInfo::parse(&blob);
            let verified = ts.verify(&blob, std::slice::from_ref(&blob), T_VALID);
            if i % 3 != 2 {
                assert!(verified.is_err());
            }
            if parsed.is_err() {
                errors += 1;
            }
            let _ = TrustStore::new(vec![blob.clone()], vec![blob.clone()]);
            let _ = pem_or_der_blocks(&blob, "CERTIFICATE");
        }
        assert!(errors > 6000, "{errors}");
    }
}
