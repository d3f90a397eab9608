//! Engine configuration: connections, children, proposals (strongSwan-style
//! strings), lifetimes, retransmission and cookie settings.
//!
//! Nothing here panics on bad input: parsing returns [`ConfigError`].

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use wisp_policy_api::{IdType, Identity, Proposal, Protocol, SaKind, TrafficSelector, Transform, TransformType};
use zeroize::Zeroizing;

/// Errors from building a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("proposal {proposal:?}: unknown algorithm {token:?}")]
    UnknownAlgorithm { proposal: String, token: String },
    #[error("proposal {proposal:?}: {what}")]
    BadProposal { proposal: String, what: String },
    #[error("traffic selector {0:?}: expected ADDR[/PREFIX] or ADDR-ADDR")]
    BadSelector(String),
    #[error("connection {conn:?}: {what}")]
    BadConnection { conn: String, what: String },
}

// IANA transform ids (RFC 7296 3.3.2, RFC 5282, RFC 7634, RFC 8031).
pub const ENCR_AES_CBC: u16 = 12;
pub const ENCR_AES_GCM_8: u16 = 18;
pub const ENCR_AES_GCM_12: u16 = 19;
pub const ENCR_AES_GCM_16: u16 = 20;
pub const ENCR_CHACHA20_POLY1305: u16 = 28;
pub const PRF_HMAC_SHA1: u16 = 2;
pub const PRF_HMAC_SHA2_256: u16 = 5;
pub const PRF_HMAC_SHA2_384: u16 = 6;
pub const PRF_HMAC_SHA2_512: u16 = 7;
pub const AUTH_HMAC_SHA1_96: u16 = 2;
pub const AUTH_HMAC_SHA2_256_128: u16 = 12;
pub const DH_MODP_1024: u16 = 2;
pub const DH_MODP_2048: u16 = 14;
pub const DH_ECP_256: u16 = 19;
pub const DH_ECP_384: u16 = 20;
pub const DH_ECP_521: u16 = 21;
pub const DH_CURVE25519: u16 = 31;
pub const ESN_NO: u16 = 0;
pub const ESN_YES: u16 = 1;

fn t(kind: TransformType, id: u16, key_length: Option<u16>) -> Transform {
    Transform { kind, id, key_length }
}

/// Parse one strongSwan-style proposal string, e.g. `aes256gcm16-prfsha256-x25519`
/// (IKE) or `aes128gcm16-x25519` / `chacha20poly1305-esn` (ESP). Several
/// algorithms of one type may be listed (`aes256gcm16-aes128gcm16-prfsha256-x25519-ecp256`).
///
/// For ESP a listed DH group means PFS in CREATE_CHILD_SA; the ESN transform
/// defaults to "no ESN" when neither `esn` nor `noesn` is given.
pub fn parse_proposal(s: &str, kind: SaKind) -> Result<Proposal, ConfigError> {
    let bad = |what: &str| ConfigError::BadProposal { proposal: s.to_string(), what: what.to_string() };
    let mut encr = Vec::new();
    let mut prf = Vec::new();
    let mut integ = Vec::new();
    let mut dh = Vec::new();
    let mut esn = Vec::new();
    for tok in s.trim().split('-') {
        let tok = tok.trim().to_ascii_lowercase();
        if tok.is_empty() {
            return Err(bad("empty algorithm name"));
        }
        let et = TransformType::Encryption;
        match tok.as_str() {
            "aes128gcm16" | "aes128gcm128" => encr.push(t(et, ENCR_AES_GCM_16, Some(128))),
            "aes192gcm16" | "aes192gcm128" => encr.push(t(et, ENCR_AES_GCM_16, Some(192))),
            "aes256gcm16" | "aes256gcm128" => encr.push(t(et, ENCR_AES_GCM_16, Some(256))),
            "aes128gcm12" | "aes128gcm96" => encr.push(t(et, ENCR_AES_GCM_12, Some(128))),
            "aes256gcm12" | "aes256gcm96" => encr.push(t(et, ENCR_AES_GCM_12, Some(256))),
            "aes128gcm8" | "aes128gcm64" => encr.push(t(et, ENCR_AES_GCM_8, Some(128))),
            "aes256gcm8" | "aes256gcm64" => encr.push(t(et, ENCR_AES_GCM_8, Some(256))),
            "chacha20poly1305" => encr.push(t(et, ENCR_CHACHA20_POLY1305, None)),
            "aes128" => encr.push(t(et, ENCR_AES_CBC, Some(128))),
            "aes256" => encr.push(t(et, ENCR_AES_CBC, Some(256))),
            "prfsha1" => prf.push(t(TransformType::Prf, PRF_HMAC_SHA1, None)),
            "prfsha256" => prf.push(t(TransformType::Prf, PRF_HMAC_SHA2_256, None)),
            "prfsha384" => prf.push(t(TransformType::Prf, PRF_HMAC_SHA2_384, None)),
            "prfsha512" => prf.push(t(TransformType::Prf, PRF_HMAC_SHA2_512, None)),
            "sha1" | "sha" => integ.push(t(TransformType::Integrity, AUTH_HMAC_SHA1_96, None)),
            "sha256" | "sha2_256" => integ.push(t(TransformType::Integrity, AUTH_HMAC_SHA2_256_128, None)),
            "x25519" | "curve25519" => dh.push(t(TransformType::KeyExchange, DH_CURVE25519, None)),
            "ecp256" => dh.push(t(TransformType::KeyExchange, DH_ECP_256, None)),
            "ecp384" => dh.push(t(TransformType::KeyExchange, DH_ECP_384, None)),
            "ecp521" => dh.push(t(TransformType::KeyExchange, DH_ECP_521, None)),
            "modp2048" => dh.push(t(TransformType::KeyExchange, DH_MODP_2048, None)),
            "modp1024" => dh.push(t(TransformType::KeyExchange, DH_MODP_1024, None)),
            "esn" => esn.push(t(TransformType::Esn, ESN_YES, None)),
            "noesn" => esn.push(t(TransformType::Esn, ESN_NO, None)),
            other => return Err(ConfigError::UnknownAlgorithm { proposal: s.to_string(), token: other.to_string() }),
        }
    }
    if encr.is_empty() {
        return Err(bad("no encryption algorithm"));
    }
    let aead_only = encr.iter().all(|e| is_aead(e.id));
    if !aead_only && integ.is_empty() {
        return Err(bad("a non-AEAD cipher needs an integrity algorithm"));
    }
    let mut transforms = encr;
    match kind {
        SaKind::Ike => {
            if prf.is_empty() {
                // strongSwan derives the PRF from the integrity algorithm; with AEAD
                // there is none, so demand it explicitly.
                return Err(bad("IKE proposal needs a PRF (e.g. prfsha256)"));
            }
            if dh.is_empty() {
                return Err(bad("IKE proposal needs a key exchange group (e.g. x25519)"));
            }
            if !esn.is_empty() {
                return Err(bad("ESN is not an IKE transform"));
            }
            transforms.extend(prf);
            transforms.extend(integ);
            transforms.extend(dh);
        }
        SaKind::Child => {
            if !prf.is_empty() {
                return Err(bad("PRF is not an ESP transform"));
            }
            transforms.extend(integ);
            transforms.extend(dh);
            if esn.is_empty() {
                esn.push(t(TransformType::Esn, ESN_NO, None));
            }
            transforms.extend(esn);
        }
    }
    let protocol = match kind {
        SaKind::Ike => Protocol::Ike,
        SaKind::Child => Protocol::Esp,
    };
    Ok(Proposal { number: 1, protocol, transforms })
}

/// True for the AEAD ciphers (no separate integrity transform).
pub fn is_aead(encr_id: u16) -> bool {
    matches!(encr_id, ENCR_AES_GCM_8 | ENCR_AES_GCM_12 | ENCR_AES_GCM_16 | ENCR_CHACHA20_POLY1305)
}

/// Human name of a transform, as used in diagnostics and in the WIT `name` field.
pub fn transform_name(tr: &Transform) -> String {
    let kl = |base: &str| match tr.key_length {
        Some(k) => format!("{base}_{k}"),
        None => base.to_string(),
    };
    match (tr.kind, tr.id) {
        (TransformType::Encryption, ENCR_AES_GCM_16) => kl("AES_GCM_16"),
        (TransformType::Encryption, ENCR_AES_GCM_12) => kl("AES_GCM_12"),
        (TransformType::Encryption, ENCR_AES_GCM_8) => kl("AES_GCM_8"),
        (TransformType::Encryption, ENCR_AES_CBC) => kl("AES_CBC"),
        (TransformType::Encryption, 3) => "3DES".into(),
        (TransformType::Encryption, ENCR_CHACHA20_POLY1305) => "CHACHA20_POLY1305".into(),
        (TransformType::Encryption, id) => format!("ENCR_{id}"),
        (TransformType::Prf, PRF_HMAC_SHA1) => "PRF_HMAC_SHA1".into(),
        (TransformType::Prf, PRF_HMAC_SHA2_256) => "PRF_HMAC_SHA2_256".into(),
        (TransformType::Prf, PRF_HMAC_SHA2_384) => "PRF_HMAC_SHA2_384".into(),
        (TransformType::Prf, PRF_HMAC_SHA2_512) => "PRF_HMAC_SHA2_512".into(),
        (TransformType::Prf, id) => format!("PRF_{id}"),
        (TransformType::Integrity, AUTH_HMAC_SHA1_96) => "HMAC_SHA1_96".into(),
        (TransformType::Integrity, AUTH_HMAC_SHA2_256_128) => "HMAC_SHA2_256_128".into(),
        (TransformType::Integrity, id) => format!("INTEG_{id}"),
        (TransformType::KeyExchange, DH_MODP_1024) => "MODP_1024".into(),
        (TransformType::KeyExchange, DH_MODP_2048) => "MODP_2048".into(),
        (TransformType::KeyExchange, DH_ECP_256) => "ECP_256".into(),
        (TransformType::KeyExchange, DH_ECP_384) => "ECP_384".into(),
        (TransformType::KeyExchange, DH_ECP_521) => "ECP_521".into(),
        (TransformType::KeyExchange, DH_CURVE25519) => "CURVE25519".into(),
        (TransformType::KeyExchange, id) => format!("KE_{id}"),
        (TransformType::Esn, ESN_NO) => "NO_ESN".into(),
        (TransformType::Esn, ESN_YES) => "ESN".into(),
        (TransformType::Esn, id) => format!("ESN_{id}"),
        (TransformType::Unknown(k), id) => format!("TYPE{k}_{id}"),
    }
}

/// "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE25519" for diagnostics.
pub fn proposal_summary(p: &Proposal) -> String {
    p.transforms.iter().map(transform_name).collect::<Vec<_>>().join("/")
}

/// A secret byte string (PSK): zeroized on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(Zeroizing::new(bytes.into()))
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

/// Child SA mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    #[default]
    Tunnel,
    Transport,
}

/// What to do with a child when the configuration is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAction {
    /// Wait for the peer or an explicit `initiate`.
    #[default]
    None,
    /// Initiate as soon as the engine starts (the caller calls [`crate::engine::Engine::start`]).
    Start,
    /// Initiate when traffic for the child's selectors appears: the caller
    /// watches for it (a trap in its data plane) and calls
    /// [`crate::engine::Engine::initiate_child`]. The engine itself treats it
    /// like `None`.
    Trap,
}

/// Soft (rekey) and hard (delete) limits of an SA. `None` = no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifetimes {
    pub soft_time: Option<Duration>,
    pub hard_time: Option<Duration>,
    /// Soft time is reduced by a random amount in `[0, jitter]` (seeded rng).
    pub jitter: Duration,
    /// Child SAs only: byte and packet limits, fed by the data-plane hooks.
    pub soft_bytes: Option<u64>,
    pub hard_bytes: Option<u64>,
    pub soft_packets: Option<u64>,
    pub hard_packets: Option<u64>,
}

impl Lifetimes {
    /// strongSwan's IKE defaults: rekey after 4 h (minus up to 10 % jitter), hard at 4.4 h.
    pub fn ike_default() -> Self {
        Lifetimes {
            soft_time: Some(Duration::from_secs(4 * 3600)),
            hard_time: Some(Duration::from_secs(4 * 3600 + 1440)),
            jitter: Duration::from_secs(1440),
            soft_bytes: None,
            hard_bytes: None,
            soft_packets: None,
            hard_packets: None,
        }
    }
    /// strongSwan's Child defaults: rekey after 1 h (minus up to 6 min), hard at 1.1 h.
    pub fn child_default() -> Self {
        Lifetimes {
            soft_time: Some(Duration::from_secs(3600)),
            hard_time: Some(Duration::from_secs(3960)),
            jitter: Duration::from_secs(360),
            soft_bytes: None,
            hard_bytes: None,
            soft_packets: None,
            hard_packets: None,
        }
    }
    /// No limits at all.
    pub fn unlimited() -> Self {
        Lifetimes {
            soft_time: None,
            hard_time: None,
            jitter: Duration::ZERO,
            soft_bytes: None,
            hard_bytes: None,
            soft_packets: None,
            hard_packets: None,
        }
    }
}

/// Retransmission of requests: timeout × backoff^(n-1), `tries` sends in total,
/// then the IKE SA is given up.
#[derive(Debug, Clone, PartialEq)]
pub struct Retransmit {
    pub timeout: Duration,
    pub backoff: f64,
    pub tries: u32,
}

impl Default for Retransmit {
    fn default() -> Self {
        // strongSwan: 4 s × 1.8^(n-1), 5 retransmits.
        Retransmit { timeout: Duration::from_secs(4), backoff: 1.8, tries: 6 }
    }
}

/// One Child SA template of a connection.
#[derive(Debug, Clone)]
pub struct ChildConfig {
    pub name: String,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub mode: Mode,
    /// ESP proposals (parsed). A KE transform in them means PFS for CREATE_CHILD_SA.
    pub esp_proposals: Vec<Proposal>,
    pub start_action: StartAction,
    pub lifetimes: Lifetimes,
}

impl ChildConfig {
    /// A tunnel-mode child with parsed proposals and default lifetimes.
    pub fn new(
        name: &str,
        local_ts: Vec<TrafficSelector>,
        remote_ts: Vec<TrafficSelector>,
        esp_proposals: &[&str],
    ) -> Result<Self, ConfigError> {
        let esp_proposals = esp_proposals.iter().map(|s| parse_proposal(s, SaKind::Child)).collect::<Result<Vec<_>, _>>()?;
        Ok(ChildConfig {
            name: name.to_string(),
            local_ts,
            remote_ts,
            mode: Mode::Tunnel,
            esp_proposals,
            start_action: StartAction::None,
            lifetimes: Lifetimes::child_default(),
        })
    }
}

/// One configured peer.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub name: String,
    /// Our address; `None` = any (responder side).
    pub local_addr: Option<IpAddr>,
    /// The peer's address; `None` = any (responder only; `initiate` needs it).
    pub remote_addr: Option<IpAddr>,
    /// IKE port we send to first (500; NAT-T moves to 4500).
    pub remote_port: u16,
    pub local_id: Identity,
    /// The peer identity we accept; `None` = any identity that proves the PSK.
    pub remote_id: Option<Identity>,
    pub psk: Secret,
    pub ike_proposals: Vec<Proposal>,
    pub children: Vec<ChildConfig>,
    pub ike_lifetimes: Lifetimes,
    /// Send an empty INFORMATIONAL after this much idle time (liveness / DPD).
    pub dpd_interval: Option<Duration>,
    pub retransmit: Retransmit,
    /// Pretend a NAT (like strongSwan `encap = yes`) so both sides move to 4500
    /// and ESP is UDP-encapsulated. Default: true (wisp's ESP is UDP-encapsulated).
    pub force_encap: bool,
    /// Announce IKEV2_FRAGMENTATION_SUPPORTED.
    pub fragmentation: bool,
    /// Send INITIAL_CONTACT in IKE_AUTH when we hold no IKE SA with this peer.
    pub initial_contact: bool,
    /// Caps on the SAs and selectors this connection may hold.
    pub caps: Caps,
}

/// Per-connection caps, enforced by the engine: a request beyond one is
/// refused with a notify (responder) or an [`crate::engine::EngineError`]
/// (our own initiation) that names the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Established IKE SAs of the connection (IKE SAs being replaced by a
    /// rekey do not count). Default 256.
    pub max_ike_sas: usize,
    /// Child SAs of the connection, over all its IKE SAs (SAs being replaced
    /// by a rekey do not count). Default 1024.
    pub max_child_sas: usize,
    /// Traffic selectors per side (TSi, TSr) of one Child SA, proposed or
    /// narrowed. Default 32.
    pub max_selectors: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps { max_ike_sas: 256, max_child_sas: 1024, max_selectors: 32 }
    }
}

impl ConnectionConfig {
    /// A connection with parsed IKE proposals and defaults for everything else.
    pub fn new(
        name: &str,
        local_id: Identity,
        remote_id: Option<Identity>,
        psk: &[u8],
        ike_proposals: &[&str],
    ) -> Result<Self, ConfigError> {
        let ike_proposals = ike_proposals.iter().map(|s| parse_proposal(s, SaKind::Ike)).collect::<Result<Vec<_>, _>>()?;
        if ike_proposals.is_empty() {
            return Err(ConfigError::BadConnection { conn: name.into(), what: "no IKE proposal".into() });
        }
        Ok(ConnectionConfig {
            name: name.to_string(),
            local_addr: None,
            remote_addr: None,
            remote_port: 500,
            local_id,
            remote_id,
            psk: Secret::new(psk.to_vec()),
            ike_proposals,
            children: Vec::new(),
            ike_lifetimes: Lifetimes::ike_default(),
            dpd_interval: None,
            retransmit: Retransmit::default(),
            // wisp's data plane is UDP-encapsulated ESP only (like kernel-libipsec).
            force_encap: true,
            fragmentation: true,
            initial_contact: true,
            caps: Caps::default(),
        })
    }

    /// The child template called `name`.
    pub fn child(&self, name: &str) -> Option<&ChildConfig> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Checks invariants the engine relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| ConfigError::BadConnection { conn: self.name.clone(), what: what.to_string() };
        if self.ike_proposals.is_empty() {
            return Err(bad("no IKE proposal"));
        }
        if self.psk.as_bytes().is_empty() {
            return Err(bad("empty PSK"));
        }
        for c in &self.children {
            if c.esp_proposals.is_empty() {
                return Err(bad(&format!("child {:?} has no ESP proposal", c.name)));
            }
            if c.local_ts.is_empty() || c.remote_ts.is_empty() {
                return Err(bad(&format!("child {:?} needs local and remote traffic selectors", c.name)));
            }
            if c.local_ts.len().max(c.remote_ts.len()) > self.caps.max_selectors {
                return Err(bad(&format!(
                    "child {:?} has more traffic selectors than max_selectors = {}",
                    c.name, self.caps.max_selectors
                )));
            }
        }
        if self.retransmit.tries == 0 {
            return Err(bad("retransmit tries must be at least 1"));
        }
        if self.caps.max_ike_sas == 0 || self.caps.max_child_sas == 0 || self.caps.max_selectors == 0 {
            return Err(bad("max_ike_sas, max_child_sas and max_selectors must be at least 1"));
        }
        Ok(())
    }
}

/// The whole engine configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub connections: Vec<ConnectionConfig>,
    /// Above this many half-open IKE SAs the responder demands a COOKIE.
    pub cookie_threshold: usize,
    /// Half-open IKE SAs (responder, no IKE_AUTH yet) are dropped after this long.
    pub half_open_timeout: Duration,
    /// An IKE SA replaced by a rekey is removed this long after the rekey
    /// even when the peer never deletes it (and our DELETE gets no answer).
    pub rekeyed_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            connections: Vec::new(),
            cookie_threshold: 30,
            half_open_timeout: Duration::from_secs(30),
            rekeyed_grace: Duration::from_secs(30),
        }
    }
}

impl Config {
    pub fn connection(&self, name: &str) -> Option<&ConnectionConfig> {
        self.connections.iter().find(|c| c.name == name)
    }
    pub fn validate(&self) -> Result<(), ConfigError> {
        for c in &self.connections {
            c.validate()?;
        }
        Ok(())
    }
}

/// An identity from its printable form: an IP address becomes ID_IPV4_ADDR /
/// ID_IPV6_ADDR, `user@host` ID_RFC822_ADDR, anything else ID_FQDN.
pub fn identity(s: &str) -> Identity {
    let kind = match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => IdType::Ipv4Addr,
        Ok(IpAddr::V6(_)) => IdType::Ipv6Addr,
        Err(_) if s.contains('@') => IdType::Rfc822Addr,
        Err(_) => IdType::Fqdn,
    };
    Identity { kind, value: s.to_string() }
}

/// A selector from `10.1.0.0/24`, `10.1.0.5`, `10.1.0.1-10.1.0.9` or `fd00::/64`
/// (any protocol, all ports).
pub fn selector(s: &str) -> Result<TrafficSelector, ConfigError> {
    let bad = || ConfigError::BadSelector(s.to_string());
    let s = s.trim();
    let (start, end) = if let Some((a, b)) = s.split_once('-') {
        let a: IpAddr = a.trim().parse().map_err(|_| bad())?;
        let b: IpAddr = b.trim().parse().map_err(|_| bad())?;
        if a.is_ipv4() != b.is_ipv4() || a > b {
            return Err(bad());
        }
        (a, b)
    } else if let Some((a, p)) = s.split_once('/') {
        let a: IpAddr = a.trim().parse().map_err(|_| bad())?;
        let p: u32 = p.trim().parse().map_err(|_| bad())?;
        match a {
            IpAddr::V4(v4) => {
                if p > 32 {
                    return Err(bad());
                }
                let mask: u32 = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                let n = u32::from(v4) & mask;
                (IpAddr::V4(n.into()), IpAddr::V4((n | !mask).into()))
            }
            IpAddr::V6(v6) => {
                if p > 128 {
                    return Err(bad());
                }
                let mask: u128 = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                let n = u128::from(v6) & mask;
                (IpAddr::V6(n.into()), IpAddr::V6((n | !mask).into()))
            }
        }
    } else {
        let a: IpAddr = s.parse().map_err(|_| bad())?;
        (a, a)
    };
    Ok(TrafficSelector { ip_protocol: 0, start_port: 0, end_port: 65535, start_address: start, end_address: end })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_strongswan_proposals() {
        let p = parse_proposal("aes256gcm16-prfsha256-x25519", SaKind::Ike).unwrap();
        assert_eq!(proposal_summary(&p), "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE25519");
        let p = parse_proposal("aes128gcm16-x25519", SaKind::Child).unwrap();
        assert_eq!(proposal_summary(&p), "AES_GCM_16_128/CURVE25519/NO_ESN");
        assert!(parse_proposal("aes256gcm16-x25519", SaKind::Ike).is_err(), "IKE needs a PRF");
        assert!(matches!(parse_proposal("aes256gcm16-blowfish", SaKind::Child), Err(ConfigError::UnknownAlgorithm { .. })));
    }

    #[test]
    fn selectors() {
        let s = selector("10.1.2.3/24").unwrap();
        assert_eq!(s.start_address, "10.1.2.0".parse::<IpAddr>().unwrap());
        assert_eq!(s.end_address, "10.1.2.255".parse::<IpAddr>().unwrap());
        assert!(selector("10.0.0.9-10.0.0.1").is_err());
        assert!(selector("10.0.0.0/33").is_err());
        let s = selector("fd00::/64").unwrap();
        assert_eq!(s.end_address, "fd00::ffff:ffff:ffff:ffff".parse::<IpAddr>().unwrap());
    }
}
