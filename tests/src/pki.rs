//! Test PKIs made with strongSwan's own `pki` tool (package strongswan-pki):
//! a root CA, intermediate CAs, end-entity certificates of every key type
//! wisp supports, CRLs. Keys are written 0600 (wisp refuses others).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::err;
use crate::util::Result;

pub const PKI: &str = "/usr/bin/pki";

/// Is the `pki` tool installed?
pub fn available() -> bool {
    Path::new(PKI).is_file()
}

/// A key type as `pki --gen` makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
    Rsa(u32),
}

impl KeyType {
    fn gen_args(self) -> Vec<String> {
        match self {
            KeyType::EcdsaP256 => vec!["--type".into(), "ecdsa".into(), "--size".into(), "256".into()],
            KeyType::EcdsaP384 => vec!["--type".into(), "ecdsa".into(), "--size".into(), "384".into()],
            KeyType::Ed25519 => vec!["--type".into(), "ed25519".into()],
            KeyType::Rsa(bits) => vec!["--type".into(), "rsa".into(), "--size".into(), bits.to_string()],
        }
    }
    /// `--digest` for a CA of this type (Ed25519 signs the message itself).
    fn digest(self) -> Vec<&'static str> {
        match self {
            KeyType::EcdsaP384 => vec!["--digest", "sha384"],
            KeyType::Ed25519 => vec![],
            _ => vec!["--digest", "sha256"],
        }
    }
    pub fn name(self) -> String {
        match self {
            KeyType::EcdsaP256 => "ECDSA P-256".into(),
            KeyType::EcdsaP384 => "ECDSA P-384".into(),
            KeyType::Ed25519 => "Ed25519".into(),
            KeyType::Rsa(b) => format!("RSA-{b}"),
        }
    }
}

fn run(args: &[&str]) -> Result<Vec<u8>> {
    let out = Command::new(PKI).args(args).output().map_err(|e| err!("{PKI}: {e}"))?;
    if !out.status.success() {
        return Err(err!("pki {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(out.stdout)
}

fn write(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mode = if private { 0o600 } else { 0o644 };
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(path)?;
    f.write_all(bytes)?;
    Ok(())
}

/// A private key file made by `pki --gen` (PEM).
pub fn gen_key(path: &Path, kt: KeyType) -> Result<()> {
    let mut args = vec!["--gen".to_string()];
    args.extend(kt.gen_args());
    args.extend(["--outform".into(), "pem".into()]);
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    write(path, &run(&a)?, true)
}

/// What to put in an issued certificate beside its subject.
#[derive(Debug, Clone, Default)]
pub struct IssueOpts {
    pub sans: Vec<String>,
    /// `pki` dates (`%d.%m.%y %T`), e.g. "01.01.20 00:00:00".
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    /// `--flag` values (serverAuth, clientAuth, ...).
    pub flags: Vec<String>,
    pub ca: bool,
    /// Sign with RSASSA-PSS (an RSA CA).
    pub pss: bool,
}

/// A CA: its key and certificate.
#[derive(Debug, Clone)]
pub struct Ca {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub kt: KeyType,
    pub dir: PathBuf,
}

/// An end entity: key and certificate files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub key: PathBuf,
    pub cert: PathBuf,
}

impl Ca {
    /// A self-signed root CA `name` in `dir` (`name-key.pem`, `name.pem`).
    pub fn root(dir: &Path, name: &str, kt: KeyType, dn: &str) -> Result<Ca> {
        let key = dir.join(format!("{name}-key.pem"));
        let cert = dir.join(format!("{name}.pem"));
        gen_key(&key, kt)?;
        let k = key.display().to_string();
        let mut args = vec!["--self", "--ca", "--lifetime", "3650", "--in", &k, "--type", "priv", "--dn", dn, "--outform", "pem"];
        args.extend(kt.digest());
        let pem = run(&args)?;
        write(&cert, &pem, false)?;
        Ok(Ca { key, cert, kt, dir: dir.to_path_buf() })
    }

    /// Issue a certificate for a new key of type `kt`.
    pub fn issue(&self, name: &str, kt: KeyType, dn: &str, opts: &IssueOpts) -> Result<Issued> {
        let key = self.dir.join(format!("{name}-key.pem"));
        gen_key(&key, kt)?;
        let cert = self.issue_for(name, &key, dn, opts)?;
        Ok(Issued { key, cert })
    }

    /// Issue a certificate for the existing private key `key`.
    pub fn issue_for(&self, name: &str, key: &Path, dn: &str, opts: &IssueOpts) -> Result<PathBuf> {
        let cert = self.dir.join(format!("{name}.pem"));
        let (k, ck, cc) = (key.display().to_string(), self.key.display().to_string(), self.cert.display().to_string());
        let mut args: Vec<String> =
            ["--issue", "--in", &k, "--type", "priv", "--cakey", &ck, "--cacert", &cc, "--dn", dn, "--outform", "pem"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        args.extend(self.kt.digest().into_iter().map(String::from));
        for s in &opts.sans {
            args.extend(["--san".into(), s.clone()]);
        }
        for f in &opts.flags {
            args.extend(["--flag".into(), f.clone()]);
        }
        if let Some(t) = &opts.not_before {
            args.extend(["--not-before".into(), t.clone()]);
        }
        if let Some(t) = &opts.not_after {
            args.extend(["--not-after".into(), t.clone()]);
        }
        if opts.not_before.is_none() && opts.not_after.is_none() {
            args.extend(["--lifetime".into(), "365".into()]);
        }
        if opts.ca {
            args.push("--ca".into());
        }
        if opts.pss {
            args.extend(["--rsa-padding".into(), "pss".into()]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        write(&cert, &run(&a)?, false)?;
        Ok(cert)
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, name: &str, kt: KeyType, dn: &str) -> Result<Ca> {
        let opts = IssueOpts { ca: true, ..Default::default() };
        let i = self.issue(name, kt, dn, &opts)?;
        Ok(Ca { key: i.key, cert: i.cert, kt, dir: self.dir.clone() })
    }

    /// A CRL of this CA revoking `certs`.
    pub fn crl(&self, name: &str, certs: &[&Path]) -> Result<PathBuf> {
        let out = self.dir.join(format!("{name}.crl"));
        let (ck, cc) = (self.key.display().to_string(), self.cert.display().to_string());
        let mut args: Vec<String> =
            ["--signcrl", "--cakey", &ck, "--cacert", &cc, "--lifetime", "30", "--outform", "pem"].iter().map(|s| s.to_string()).collect();
        args.extend(self.kt.digest().into_iter().map(String::from));
        for c in certs {
            args.extend(["--reason".into(), "key-compromise".into(), "--cert".into(), c.display().to_string()]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        write(&out, &run(&a)?, false)?;
        Ok(out)
    }
}
