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
#[non_exhaustive]
pub enum ConfigError {
    #[error("proposal {proposal:?}: unknown algorithm {token:?}")]
    UnknownAlgorithm { proposal: String, token: String },
    #[error("proposal {proposal:?}: {what}")]
    BadProposal { proposal: String, what: String },
    #[error("traffic selector {0:?}: expected ADDR[/PREFIX] or ADDR-ADDR, optionally [PROTO/PORT]")]
    BadSelector(String),
    #[error("address {0:?}: expected %any, %any4, %any6, ADDR, ADDR/PREFIX or ADDR-ADDR")]
    BadAddress(String),
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
#[non_exhaustive]
pub enum Mode {
    #[default]
    Tunnel,
    Transport,
}

/// What to do with a child when the configuration is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
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
    /// What the engine does when the peer of this child is declared dead
    /// (DPD or retransmissions exhausted).
    pub dpd_action: DpdAction,
    /// What the engine does when the peer deletes this child (or its IKE SA).
    pub close_action: CloseAction,
    pub lifetimes: Lifetimes,
}

/// swanctl `dpd_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DpdAction {
    /// Remove the SAs, nothing more.
    #[default]
    Clear,
    /// Ask for a trap ([`crate::event::Event::TrapWanted`]): traffic brings it back.
    Trap,
    /// Initiate the child again at once (under a new IKE SA), retrying per
    /// the connection's `keyingtries`.
    Restart,
}

/// swanctl `close_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CloseAction {
    #[default]
    None,
    /// Ask for a trap.
    Trap,
    /// Initiate the child again at once, retrying per `keyingtries`.
    Start,
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
            dpd_action: DpdAction::Clear,
            close_action: CloseAction::None,
            lifetimes: Lifetimes::child_default(),
        })
    }
}

/// One configured peer.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    pub name: String,
    /// Our addresses (swanctl `local_addrs`); empty = any. The responder
    /// answers on any of them; the initiator sends from the first of the
    /// remote address's family (the unspecified address without one).
    pub local_addrs: Vec<IpAddr>,
    /// Peer addresses accepted (swanctl `remote_addrs`): hosts, CIDR blocks,
    /// ranges, `%any`; empty = any. `initiate` sends to the first single
    /// host; a connection with none can only respond.
    pub remote_addrs: Vec<AddrMatch>,
    /// IKE port we send to first (500; NAT-T moves to 4500).
    pub remote_port: u16,
    pub local_id: Identity,
    /// The peer identities we accept (swanctl `remote.id`): one identity,
    /// a pattern (`*.example.net`, `*@example.net`, `10.0.0.0/24`) or `%any`
    /// (any identity that proves the credentials; the policy authorizes it).
    pub remote_id: IdMatch,
    /// The pre-shared key, when either side authenticates with one.
    pub psk: Secret,
    /// How we authenticate (swanctl `local.auth`).
    pub local_auth: LocalAuth,
    /// How the peer must authenticate (swanctl `remote.auth`).
    pub remote_auth: RemoteAuth,
    /// When to send our certificate (swanctl `send_cert`).
    pub send_cert: SendCert,
    /// Send CERTREQ naming our CAs when the peer authenticates with a
    /// certificate (swanctl `send_certreq`).
    pub send_certreq: bool,
    pub ike_proposals: Vec<Proposal>,
    pub children: Vec<ChildConfig>,
    pub ike_lifetimes: Lifetimes,
    /// Send an empty INFORMATIONAL after this much idle time (liveness / DPD).
    pub dpd_interval: Option<Duration>,
    pub retransmit: Retransmit,
    /// Pretend a NAT (like strongSwan `encap = yes`) so both sides move to 4500
    /// and ESP is UDP-encapsulated. Default: true (wisp's ESP is UDP-encapsulated).
    pub force_encap: bool,
    /// IKE fragmentation (RFC 7383), swanctl's `fragmentation`.
    pub fragmentation: Fragmentation,
    /// IKE fragmentation (RFC 7383) on send: the largest IP datagram an
    /// encrypted IKE message may take (IP and UDP headers and the non-ESP
    /// marker included) before it goes as SKF fragments, when the peer
    /// negotiated fragmentation. 0: 576 for IPv4 (its minimum reassembly
    /// size), 1280 for IPv6 (its minimum MTU). Default 1280 for both, as
    /// strongSwan's `charon.fragment_size`: paths that carry less than
    /// 1280 bytes of IPv4 are rare, and 576 would split every certificate
    /// exchange into twice as many fragments.
    pub fragment_size: usize,
    /// Send INITIAL_CONTACT in IKE_AUTH when we hold no IKE SA with this peer.
    pub initial_contact: bool,
    /// Caps on the SAs and selectors this connection may hold.
    pub caps: Caps,
    /// Initiations the engine makes for a child it brings up by itself
    /// (`start`, and restarts after DPD, a peer's DELETE or expiry) before
    /// it gives up; 0 = keep trying. Between tries it waits 1 s, 2 s, 4 s,
    /// ... up to 60 s (swanctl `keyingtries`).
    pub keyingtries: u32,
    /// Reauthenticate each IKE SA this long after its authentication
    /// (swanctl `reauth_time`): a new IKE SA and its children are built
    /// before the old one is deleted (make-before-break). `None`: never.
    pub reauth_time: Option<Duration>,
    /// Responder: the address pools (by name, in order) that a peer's
    /// CFG_REQUEST is answered from (swanctl `pools`).
    pub pools: Vec<String>,
    /// Initiator: virtual IPs to ask for in IKE_AUTH (swanctl `vips`;
    /// `0.0.0.0` / `::` ask for any address of the family).
    pub vips: Vec<IpAddr>,
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
            local_addrs: Vec::new(),
            remote_addrs: Vec::new(),
            remote_port: 500,
            local_id,
            remote_id: remote_id.map_or(IdMatch::Any, IdMatch::Exact),
            psk: Secret::new(psk.to_vec()),
            local_auth: LocalAuth::Psk,
            remote_auth: RemoteAuth::Psk,
            send_cert: SendCert::IfAsked,
            send_certreq: true,
            ike_proposals,
            children: Vec::new(),
            ike_lifetimes: Lifetimes::ike_default(),
            dpd_interval: None,
            retransmit: Retransmit::default(),
            // wisp's data plane is UDP-encapsulated ESP only (like kernel-libipsec).
            force_encap: true,
            fragmentation: Fragmentation::Yes,
            fragment_size: 1280,
            initial_contact: true,
            caps: Caps::default(),
            keyingtries: 1,
            reauth_time: None,
            pools: Vec::new(),
            vips: Vec::new(),
        })
    }

    /// The address `initiate` sends to: the first remote address that is a
    /// single host.
    pub fn initiate_to(&self) -> Option<IpAddr> {
        self.remote_addrs.iter().find_map(AddrMatch::host)
    }

    /// The address we initiate from towards `remote`: the first local
    /// address of its family, else the unspecified address of that family.
    pub fn local_for(&self, remote: IpAddr) -> IpAddr {
        self.local_addrs.iter().copied().find(|a| a.is_ipv4() == remote.is_ipv4()).unwrap_or(match remote {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        })
    }

    /// How well a datagram from `remote` to `local` fits this connection's
    /// addresses: `None` when it does not; otherwise the number of remote
    /// addresses of the smallest matching entry (lower is a better fit:
    /// a host beats a block, a block beats `%any`). A wildcard `local`
    /// (socket bound to the unspecified address) fits every local address.
    pub fn addr_fit(&self, local: IpAddr, remote: IpAddr) -> Option<u128> {
        addr_fit(&self.local_addrs, &self.remote_addrs, local, remote)
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
        let psk_used = matches!(self.local_auth, LocalAuth::Psk) || matches!(self.remote_auth, RemoteAuth::Psk);
        if psk_used && self.psk.as_bytes().is_empty() {
            return Err(bad("empty PSK"));
        }
        if matches!(self.remote_auth, RemoteAuth::Eap(_)) && !matches!(self.local_auth, LocalAuth::Pubkey(_)) {
            // RFC 7296 2.16: the EAP server proves itself with a signature first.
            return Err(bad("remote.auth = eap-* needs local.auth = pubkey (a certificate of ours)"));
        }
        if matches!(&self.remote_auth, RemoteAuth::Eap(e) if e.method == crate::eap::Method::Tls && e.tls_trust.is_none()) {
            return Err(bad("remote.auth = eap-tls needs the CAs of the client certificates (remote.cacerts)"));
        }
        if self.fragment_size != 0 && !(MIN_FRAGMENT_SIZE..=65_535).contains(&self.fragment_size) {
            return Err(bad(&format!("fragment_size {} is neither 0 nor within {MIN_FRAGMENT_SIZE}..=65535", self.fragment_size)));
        }
        for c in &self.children {
            if c.esp_proposals.is_empty() {
                return Err(bad(&format!("child {:?} has no ESP proposal", c.name)));
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

/// See [`ConnectionConfig::addr_fit`] (shared with the gateway's dispatcher).
pub fn addr_fit(local_addrs: &[IpAddr], remote_addrs: &[AddrMatch], local: IpAddr, remote: IpAddr) -> Option<u128> {
    let local_ok = local_addrs.is_empty() || local.is_unspecified() || local_addrs.contains(&local);
    if !local_ok {
        return None;
    }
    if remote_addrs.is_empty() {
        return Some(u128::MAX);
    }
    remote_addrs.iter().filter(|m| m.contains(remote)).map(AddrMatch::size).min()
}

/// One entry of `remote_addrs`: `%any` (`%any4`, `%any6`: one family), a
/// host, a CIDR block or an inclusive range `a-b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrMatch {
    Any,
    AnyV4,
    AnyV6,
    /// Inclusive, both ends of one family (a host: both ends equal).
    Range(IpAddr, IpAddr),
}

impl AddrMatch {
    /// `%any`, `%any4`, `%any6`, `192.0.2.1`, `192.0.2.0/24`, `192.0.2.10-192.0.2.20`, `2001:db8::/32`.
    pub fn parse(s: &str) -> Result<AddrMatch, ConfigError> {
        let t = s.trim();
        match t {
            "%any" => return Ok(AddrMatch::Any),
            "%any4" => return Ok(AddrMatch::AnyV4),
            "%any6" => return Ok(AddrMatch::AnyV6),
            _ => {}
        }
        let r = address_range(t).ok_or_else(|| ConfigError::BadAddress(s.to_string()))?;
        Ok(AddrMatch::Range(r.0, r.1))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match *self {
            AddrMatch::Any => true,
            AddrMatch::AnyV4 => ip.is_ipv4(),
            AddrMatch::AnyV6 => ip.is_ipv6(),
            AddrMatch::Range(a, b) => a.is_ipv4() == ip.is_ipv4() && a <= ip && ip <= b,
        }
    }

    /// The address when this entry is a single host.
    pub fn host(&self) -> Option<IpAddr> {
        match *self {
            AddrMatch::Range(a, b) if a == b => Some(a),
            _ => None,
        }
    }

    /// Number of addresses matched (`%any`: the most).
    pub fn size(&self) -> u128 {
        match *self {
            AddrMatch::Any => u128::MAX,
            AddrMatch::AnyV4 | AddrMatch::AnyV6 => u128::MAX - 1,
            AddrMatch::Range(IpAddr::V4(a), IpAddr::V4(b)) => u128::from(u32::from(b) - u32::from(a)) + 1,
            AddrMatch::Range(IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(b) - u128::from(a)).saturating_add(1),
            AddrMatch::Range(..) => u128::MAX,
        }
    }
}

impl From<IpAddr> for AddrMatch {
    /// One host.
    fn from(a: IpAddr) -> AddrMatch {
        AddrMatch::Range(a, a)
    }
}

impl fmt::Display for AddrMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AddrMatch::Any => f.write_str("%any"),
            AddrMatch::AnyV4 => f.write_str("%any4"),
            AddrMatch::AnyV6 => f.write_str("%any6"),
            AddrMatch::Range(a, b) if a == b => write!(f, "{a}"),
            AddrMatch::Range(a, b) => f.write_str(&crate::native_policy::range_string(a, b)),
        }
    }
}

/// Which peer identities a connection accepts (swanctl `remote.id`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdMatch {
    /// `%any`: any identity (the policy authorizes the concrete one).
    Any,
    /// Exactly this identity (compared in its wire form).
    Exact(Identity),
    /// An FQDN or RFC 822 pattern with `*` wildcards (`*.example.net`,
    /// `*@example.net`); FQDNs compare without regard to ASCII case.
    Glob { kind: IdType, pattern: String },
    /// IP address identities inside an inclusive range (`10.0.0.0/24`, `a-b`).
    IpRange(IpAddr, IpAddr),
}

impl IdMatch {
    /// `%any`, a pattern with `*`, an address block or range, or one identity
    /// (see [`identity`]).
    pub fn parse(s: &str) -> IdMatch {
        let t = s.trim();
        if t == "%any" || t == "*" {
            return IdMatch::Any;
        }
        if t.contains('*') && !t.contains('=') {
            let kind = if t.contains('@') { IdType::Rfc822Addr } else { IdType::Fqdn };
            return IdMatch::Glob { kind, pattern: t.to_string() };
        }
        if t.contains('/') || (t.contains('-') && t.split_once('-').is_some_and(|(a, _)| a.trim().parse::<IpAddr>().is_ok())) {
            if let Some((a, b)) = address_range(t) {
                return IdMatch::IpRange(a, b);
            }
        }
        IdMatch::Exact(identity(t))
    }

    /// The identity to send as IDr when initiating (only an exact one).
    pub fn exact(&self) -> Option<&Identity> {
        match self {
            IdMatch::Exact(i) => Some(i),
            _ => None,
        }
    }

    /// How specific a match is (higher wins when several connections accept
    /// one peer): exact 3, an address block 2, a pattern 1, `%any` 0.
    pub fn rank(&self) -> u8 {
        match self {
            IdMatch::Exact(_) => 3,
            IdMatch::IpRange(..) => 2,
            IdMatch::Glob { .. } => 1,
            IdMatch::Any => 0,
        }
    }

    /// Whether the peer identity `id` (decoded from its ID payload, see
    /// `identity_from_wire`) is accepted. `Exact` is compared by the engine
    /// on the wire form; this compares values of the same type.
    pub fn matches(&self, id: &Identity) -> bool {
        match self {
            IdMatch::Any => true,
            IdMatch::Exact(e) => e.kind == id.kind && same_value(e.kind, &e.value, &id.value),
            IdMatch::Glob { kind, pattern } => {
                *kind == id.kind
                    && if *kind == IdType::Fqdn {
                        glob(pattern.to_ascii_lowercase().as_bytes(), id.value.to_ascii_lowercase().as_bytes())
                    } else {
                        glob(pattern.as_bytes(), id.value.as_bytes())
                    }
            }
            IdMatch::IpRange(a, b) => {
                matches!(id.kind, IdType::Ipv4Addr | IdType::Ipv6Addr)
                    && id.value.parse::<IpAddr>().is_ok_and(|ip| a.is_ipv4() == ip.is_ipv4() && *a <= ip && ip <= *b)
            }
        }
    }
}

impl fmt::Display for IdMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdMatch::Any => f.write_str("%any"),
            IdMatch::Exact(i) => f.write_str(&i.value),
            IdMatch::Glob { pattern, .. } => f.write_str(pattern),
            IdMatch::IpRange(a, b) => f.write_str(&crate::native_policy::range_string(*a, *b)),
        }
    }
}

fn same_value(kind: IdType, a: &str, b: &str) -> bool {
    match kind {
        IdType::Ipv4Addr | IdType::Ipv6Addr => match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
            (Ok(x), Ok(y)) => x == y,
            _ => a == b,
        },
        IdType::Fqdn => a.eq_ignore_ascii_case(b),
        _ => a == b,
    }
}

/// `*` matches any run of bytes (also none); everything else itself.
/// Iterative with one backtrack point: linear in practice, never recursive.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
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

/// IKE fragmentation (RFC 7383) of a connection, as swanctl's
/// `fragmentation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Fragmentation {
    /// Announce IKEV2_FRAGMENTATION_SUPPORTED, take fragments, and send
    /// messages larger than `fragment_size` as fragments when the peer
    /// announced it too.
    #[default]
    Yes,
    /// Announce and take fragments, but send every message whole.
    Accept,
    /// Do not announce (a peer must then not fragment).
    No,
}

impl Fragmentation {
    pub fn announced(self) -> bool {
        self != Fragmentation::No
    }
}

/// The smallest `fragment_size` accepted (a fragment must carry data
/// beside its ~100 bytes of headers).
pub const MIN_FRAGMENT_SIZE: usize = 256;

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
/// ID_IPV6_ADDR, text with `=` a distinguished name (ID_DER_ASN1_DN, in
/// swanctl's order `C=CH, O=Example, CN=gw`; held as its RFC 4514 string),
/// `user@host` ID_RFC822_ADDR, anything else ID_FQDN. A DN that does not
/// parse is kept as an FQDN; [`parse_identity`] reports it instead.
pub fn identity(s: &str) -> Identity {
    parse_identity(s).unwrap_or_else(|_| Identity { kind: IdType::Fqdn, value: s.to_string() })
}

/// [`identity`], with an error for a malformed distinguished name.
pub fn parse_identity(s: &str) -> Result<Identity, String> {
    if s.contains('=') {
        let der = crate::pki::dn::from_config(s).map_err(|e| format!("bad distinguished name {s:?}: {e}"))?;
        let value = crate::pki::dn::to_rfc4514(&der).map_err(|e| format!("bad distinguished name {s:?}: {e}"))?;
        return Ok(Identity { kind: IdType::DerAsn1Dn, value });
    }
    Ok(plain_identity(s))
}

fn plain_identity(s: &str) -> Identity {
    let kind = match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => IdType::Ipv4Addr,
        Ok(IpAddr::V6(_)) => IdType::Ipv6Addr,
        Err(_) if s.contains('@') => IdType::Rfc822Addr,
        Err(_) => IdType::Fqdn,
    };
    Identity { kind, value: s.to_string() }
}

/// A selector from `10.1.0.0/24`, `10.1.0.5`, `10.1.0.1-10.1.0.9` or `fd00::/64`,
/// optionally with a protocol and ports (`[tcp/80]`, `proto 6 port 80`): the
/// one selector syntax, [`wisp_policy_api::selector`].
pub fn selector(s: &str) -> Result<TrafficSelector, ConfigError> {
    wisp_policy_api::selector::parse(s).map_err(|_| ConfigError::BadSelector(s.to_string()))
}

pub use wisp_policy_api::selector::address_range;

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

/// How we prove our identity to the peer (swanctl `local.auth`).
#[derive(Debug, Clone, Default)]
pub enum LocalAuth {
    /// AUTH with the connection's pre-shared key (`psk`).
    #[default]
    Psk,
    /// A signature with our private key, our certificate in CERT payloads.
    Pubkey(std::sync::Arc<LocalCredential>),
}

/// Our certificate chain and its private key.
pub struct LocalCredential {
    pub key: crate::crypto::sig::PrivateKey,
    /// DER: our certificate first, then the intermediate CAs to send with it.
    pub certs: Vec<Vec<u8>>,
    /// Our certificate, parsed (subject, expiry for `status`).
    pub cert: crate::pki::cert::CertInfo,
    /// RSA keys: RSASSA-PSS rather than PKCS#1 v1.5 (swanctl `rsa/pss`).
    pub rsa_pss: bool,
}

impl LocalCredential {
    /// Pairs a private key with its certificate chain: the key must be the
    /// certificate's (an error says so, naming the certificate).
    pub fn new(key: crate::crypto::sig::PrivateKey, certs: Vec<Vec<u8>>, rsa_pss: bool) -> Result<Self, String> {
        let Some(first) = certs.first() else { return Err("no certificate".into()) };
        let cert = crate::pki::cert::CertInfo::parse(first).map_err(|e| e.to_string())?;
        if cert.spki != key.public_key_spki() {
            return Err(format!("the private key is not the key of certificate {}", cert.subject));
        }
        Ok(LocalCredential { key, certs, cert, rsa_pss })
    }
}

impl fmt::Debug for LocalCredential {
    // The certificates by their digest (so that a reload sees a changed
    // chain), the key by its public half only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use sha2::Digest;
        let certs: Vec<String> = self.certs.iter().map(|c| hex_short(&sha2::Sha256::digest(c))).collect();
        f.debug_struct("LocalCredential")
            .field("subject", &self.cert.subject)
            .field("certs", &certs)
            .field("key", &self.key.key_type())
            .field("rsa_pss", &self.rsa_pss)
            .finish()
    }
}

/// How the peer must prove its identity (swanctl `remote.auth`).
#[derive(Clone, Default)]
pub enum RemoteAuth {
    /// AUTH with the connection's pre-shared key.
    #[default]
    Psk,
    /// A signature with the key of a certificate that chains to one of
    /// these CAs (and is not revoked by their CRLs) and holds the peer's
    /// identity.
    Pubkey(std::sync::Arc<TrustConfig>),
    /// EAP (RFC 7296 2.16; swanctl `remote.auth = eap-mschapv2`): the
    /// peer sends no AUTH of its own until an EAP method succeeded; we
    /// prove ourselves first, with our certificate (`local.auth = pubkey`).
    /// The secrets are the engine's ([`crate::engine::Engine::set_eap_users`]).
    Eap(EapAuth),
}

/// How the peer authenticates by EAP.
#[derive(Debug, Clone)]
pub struct EapAuth {
    pub method: crate::eap::Method,
    /// swanctl `remote.eap_id`.
    pub eap_id: crate::eap::EapId,
    /// EAP-TLS: the CAs (and CRLs) client certificates must chain to
    /// (swanctl `remote.cacerts`).
    pub tls_trust: Option<std::sync::Arc<TrustConfig>>,
}

/// The configured trust of one connection.
pub struct TrustConfig {
    pub store: crate::pki::cert::TrustStore,
    /// Digests of the CA certificates and CRLs as loaded: a reload that
    /// changes any of them changes the connection.
    pub digests: Vec<String>,
    /// The CA certificates and CRLs (DER) as loaded, for EAP-TLS.
    pub ca_der: Vec<Vec<u8>>,
    pub crl_der: Vec<Vec<u8>>,
}

impl TrustConfig {
    pub fn new(ca_certs: Vec<Vec<u8>>, crls: Vec<Vec<u8>>) -> Result<Self, String> {
        use sha2::Digest;
        let digests = ca_certs.iter().chain(&crls).map(|c| hex_short(&sha2::Sha256::digest(c))).collect();
        let store = crate::pki::cert::TrustStore::new(ca_certs.clone(), crls.clone()).map_err(|e| e.to_string())?;
        Ok(TrustConfig { store, digests, ca_der: ca_certs, crl_der: crls })
    }
}

impl fmt::Debug for TrustConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TrustConfig").field(&self.digests).finish()
    }
}

impl fmt::Debug for RemoteAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteAuth::Psk => f.write_str("Psk"),
            RemoteAuth::Pubkey(t) => f.debug_tuple("Pubkey").field(t).finish(),
            RemoteAuth::Eap(e) => f.debug_tuple("Eap").field(e).finish(),
        }
    }
}

/// When we send our certificate (swanctl `send_cert`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendCert {
    /// When the peer sent a CERTREQ (any).
    #[default]
    IfAsked,
    Always,
    Never,
}

fn hex_short(d: &[u8]) -> String {
    d.iter().take(12).map(|b| format!("{b:02x}")).collect()
}
