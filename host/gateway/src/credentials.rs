//! Certificates, private keys and CRLs of a connection (swanctl's
//! `local.certs`, `local.key`, `remote.cacerts`, `remote.crls`), read when
//! the configuration is loaded and on every reload.
//!
//! Each setting takes a file or a list of files; `remote.cacerts` and
//! `remote.crls` also take directories (every regular file in them, in name
//! order). PEM (any number of blocks) or DER. Files are capped in size and
//! directories in entries, so a wrong path cannot make the daemon read a
//! disk. A private key file must not be accessible by group or others.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wisp_ike::config::{LocalCredential, TrustConfig};
use wisp_ike::crypto::sig::PrivateKey;
use wisp_ike::pki::cert::pem_or_der_blocks;
use zeroize::Zeroizing;

/// The largest certificate, key or CRL file read.
pub const MAX_FILE: u64 = 1 << 20;
/// The most files taken from one directory.
pub const MAX_DIR_ENTRIES: usize = 256;
/// The most certificates in `local.certs` (ours and its chain).
pub const MAX_CHAIN: usize = 8;

/// An error about one setting: (field suffix, message).
pub type Error = (&'static str, String);

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_relative() {
        base.join(p)
    } else {
        p
    }
}

fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > MAX_FILE {
        return Err(format!("{} is {} bytes, more than the {MAX_FILE} read", path.display(), meta.len()));
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The files a setting names: files as given, directories expanded.
fn files(base: &Path, entries: &[String], dirs: bool) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for e in entries {
        let p = resolve(base, e);
        if dirs && p.is_dir() {
            let mut list: Vec<PathBuf> = std::fs::read_dir(&p)
                .map_err(|e| format!("cannot read directory {}: {e}", p.display()))?
                .filter_map(|d| d.ok().map(|d| d.path()))
                .filter(|f| f.is_file())
                .take(MAX_DIR_ENTRIES + 1)
                .collect();
            if list.len() > MAX_DIR_ENTRIES {
                return Err(format!("directory {} has more than {MAX_DIR_ENTRIES} files", p.display()));
            }
            list.sort();
            out.extend(list);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// DER blocks of `label` ("CERTIFICATE", "X509 CRL") from the files; an
/// error names the file.
fn blocks(paths: &[PathBuf], label: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for p in paths {
        let bytes = read_capped(p)?;
        let b = pem_or_der_blocks(&bytes, label).map_err(|e| format!("{}: {e}", p.display()))?;
        if b.is_empty() {
            return Err(format!("{} holds no {label}", p.display()));
        }
        out.extend(b);
    }
    Ok(out)
}

/// Our certificate chain (`certs`, ours first) and private key (`key`).
pub fn load_local(base: &Path, certs: &[String], key: Option<&str>, rsa_pss: bool) -> Result<Arc<LocalCredential>, Error> {
    if certs.is_empty() {
        return Err(("certs", "local.auth = pubkey needs our certificate (local.certs)".into()));
    }
    let paths = files(base, certs, false).map_err(|m| ("certs", m))?;
    let chain = blocks(&paths, "CERTIFICATE").map_err(|m| ("certs", m))?;
    if let Err(e) = wisp_ike::pki::cert::CertInfo::parse(&chain[0]) {
        return Err(("certs", format!("{}: {e}", paths[0].display())));
    }
    if chain.len() > MAX_CHAIN {
        return Err(("certs", format!("{} certificates; at most {MAX_CHAIN} (ours and its intermediate CAs)", chain.len())));
    }
    let Some(key) = key else {
        return Err(("key", "local.auth = pubkey needs our private key (local.key)".into()));
    };
    let kp = resolve(base, key);
    crate::config::check_private_file(&kp, "a private key").map_err(|m| ("key", m))?;
    let bytes = Zeroizing::new(read_capped(&kp).map_err(|m| ("key", m))?);
    let pk = PrivateKey::from_pem_or_der(&bytes).map_err(|e| ("key", format!("{}: {e}", kp.display())))?;
    LocalCredential::new(pk, chain, rsa_pss).map(Arc::new).map_err(|m| ("key", format!("{}: {m}", kp.display())))
}

/// The CAs (`cacerts`) and CRLs (`crls`) the peer's certificate is checked against.
pub fn load_trust(base: &Path, cacerts: &[String], crls: &[String]) -> Result<Arc<TrustConfig>, Error> {
    if cacerts.is_empty() {
        return Err(("cacerts", "remote.auth = pubkey needs the CA certificates to trust (remote.cacerts)".into()));
    }
    let ca_paths = files(base, cacerts, true).map_err(|m| ("cacerts", m))?;
    let cas = blocks(&ca_paths, "CERTIFICATE").map_err(|m| ("cacerts", m))?;
    let crl_paths = files(base, crls, true).map_err(|m| ("crls", m))?;
    let crl_der = blocks(&crl_paths, "X509 CRL").map_err(|m| ("crls", m))?;
    TrustConfig::new(cas, crl_der).map(Arc::new).map_err(|m| ("cacerts", m))
}
