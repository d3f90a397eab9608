//! What the engine tells its caller: SA lifecycle events and failures.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use wisp_policy_api::{Identity, TrafficSelector};
use zeroize::Zeroizing;

use crate::config::{Lifetimes, Mode};

/// Engine-local handle of an IKE SA (stable across its lifetime, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IkeSaId(pub u64);

impl fmt::Display for IkeSaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ike#{}", self.0)
    }
}

/// Which end caused a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// We refused / detected the problem.
    Local,
    /// The peer told us (error notify) or misbehaved.
    Remote,
}

/// IKEv2 exchange types (RFC 7296 3.1), plus "none" for timer-driven failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exchange {
    IkeSaInit,
    IkeAuth,
    CreateChildSa,
    Informational,
}

impl Exchange {
    pub fn from_raw(v: u8) -> Option<Self> {
        match v {
            34 => Some(Exchange::IkeSaInit),
            35 => Some(Exchange::IkeAuth),
            36 => Some(Exchange::CreateChildSa),
            37 => Some(Exchange::Informational),
            _ => None,
        }
    }
    pub fn raw(self) -> u8 {
        match self {
            Exchange::IkeSaInit => 34,
            Exchange::IkeAuth => 35,
            Exchange::CreateChildSa => 36,
            Exchange::Informational => 37,
        }
    }
}

impl fmt::Display for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Exchange::IkeSaInit => "IKE_SA_INIT",
            Exchange::IkeAuth => "IKE_AUTH",
            Exchange::CreateChildSa => "CREATE_CHILD_SA",
            Exchange::Informational => "INFORMATIONAL",
        })
    }
}

/// ESP encryption algorithm of a Child SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EspCipher {
    /// AES-GCM with a 16-byte ICV; key length in bits (128/192/256).
    AesGcm16 {
        key_bits: u16,
    },
    ChaCha20Poly1305,
}

impl EspCipher {
    /// Key material length including the 4-byte salt (RFC 4106 / RFC 7634).
    pub fn keymat_len(self) -> usize {
        match self {
            EspCipher::AesGcm16 { key_bits } => key_bits as usize / 8 + 4,
            EspCipher::ChaCha20Poly1305 => 32 + 4,
        }
    }
}

impl fmt::Display for EspCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EspCipher::AesGcm16 { key_bits } => write!(f, "AES_GCM_16_{key_bits}"),
            EspCipher::ChaCha20Poly1305 => f.write_str("CHACHA20_POLY1305"),
        }
    }
}

/// Negotiated Child SA algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildAlgorithms {
    pub cipher: EspCipher,
    pub esn: bool,
    /// DH group used for PFS when this SA was created by CREATE_CHILD_SA with KE.
    pub pfs_group: Option<u16>,
}

/// ESP key material: encryption key followed by the 4-byte salt/nonce
/// (the layout RFC 4106 / 7634 take KEYMAT in). Zeroized on drop; `Debug` redacts.
#[derive(Clone, PartialEq, Eq)]
pub struct EspKey(pub Zeroizing<Vec<u8>>);

impl fmt::Debug for EspKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EspKey(<{} bytes redacted>)", self.0.len())
    }
}

impl EspKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// NAT situation of an IKE SA (RFC 7296 2.23).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatState {
    /// Our address/port is translated (NAT_DETECTION_SOURCE_IP mismatch at the peer).
    pub local_behind_nat: bool,
    /// The peer's address/port is translated.
    pub remote_behind_nat: bool,
    /// ESP must be UDP-encapsulated (port 4500): a NAT was detected or faked.
    pub udp_encap: bool,
}

/// A Child SA ready to be installed in the data plane.
#[derive(Debug, Clone)]
pub struct ChildSaInfo {
    pub ike: IkeSaId,
    /// Connection and child template names.
    pub connection: String,
    pub name: String,
    /// Our inbound SPI (the peer sends ESP with it) and the peer's (we send with it).
    pub spi_in: u32,
    pub spi_out: u32,
    /// IP protocol: 50 = ESP.
    pub protocol: u8,
    pub mode: Mode,
    pub algorithms: ChildAlgorithms,
    /// Key for packets we receive (peer → us) and send (us → peer).
    pub key_in: EspKey,
    pub key_out: EspKey,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub lifetimes: Lifetimes,
    pub nat: NatState,
    /// Outer addresses for ESP (ports are 4500 when UDP-encapsulated).
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// True when we initiated the exchange that created this SA.
    pub initiator: bool,
}

/// Why an SA went away.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DownReason {
    /// We deleted it (API call or hard lifetime).
    LocalDelete,
    /// The peer sent DELETE.
    RemoteDelete,
    /// Replaced by a rekeyed SA.
    Rekeyed,
    /// Hard lifetime reached.
    Expired,
    /// No answer after all retransmissions (peer dead).
    Timeout,
    /// Negotiation failed (see the preceding `Failure` event).
    Failed(String),
    /// The peer sent INITIAL_CONTACT for a new IKE SA, so this old one is dead.
    Replaced,
    /// The policy, re-checked after a reload, no longer allows it (why).
    Revoked(String),
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::LocalDelete => f.write_str("deleted locally"),
            DownReason::RemoteDelete => f.write_str("deleted by peer"),
            DownReason::Rekeyed => f.write_str("rekeyed"),
            DownReason::Expired => f.write_str("hard lifetime expired"),
            DownReason::Timeout => f.write_str("peer not responding"),
            DownReason::Failed(r) => write!(f, "failed: {r}"),
            DownReason::Replaced => f.write_str("replaced (INITIAL_CONTACT)"),
            DownReason::Revoked(r) => write!(f, "revoked after reload: {r}"),
        }
    }
}

/// A negotiation failure, with enough context for `explain`-style diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub ike: Option<IkeSaId>,
    pub connection: Option<String>,
    pub side: Side,
    pub exchange: Exchange,
    pub reason: String,
    /// The notify type sent (local failure) or received (remote failure).
    pub notify: Option<u16>,
    pub remote: SocketAddr,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = match self.side {
            Side::Local => "local",
            Side::Remote => "remote",
        };
        write!(f, "{} failed ({side} side, peer {}): {}", self.exchange, self.remote, self.reason)?;
        if let Some(n) = self.notify {
            write!(f, " [{}]", crate::engine::notify_name(n))?;
        }
        Ok(())
    }
}

/// Summary of an established IKE SA.
#[derive(Debug, Clone)]
pub struct IkeSaInfo {
    pub ike: IkeSaId,
    pub connection: String,
    pub spi_i: u64,
    pub spi_r: u64,
    pub initiator: bool,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub local_id: Identity,
    pub remote_id: Identity,
    /// e.g. "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE25519".
    pub algorithms: String,
    pub nat: NatState,
    /// How the peer authenticated.
    pub peer_auth: Option<PeerAuth>,
    /// Virtual IPs (RFC 7296 3.15).
    pub vips: VirtualIps,
}

/// The virtual IPs of an IKE SA: ours (a CFG_REPLY the peer sent us) or
/// the peer's (leased by us from a pool), and the DNS servers that came
/// (or went) with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtualIps {
    pub local: Vec<std::net::IpAddr>,
    pub remote: Vec<std::net::IpAddr>,
    pub dns: Vec<std::net::IpAddr>,
}

/// How a peer authenticated, for status and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAuth {
    /// "pre-shared key", or the signature scheme verified, e.g.
    /// "ECDSA P-256 with SHA2-256 (RFC 7427)".
    pub method: String,
    /// The peer's certificate: subject and issuer (RFC 4514), not after
    /// (Unix seconds).
    pub cert_subject: Option<String>,
    pub cert_issuer: Option<String>,
    pub cert_not_after: Option<u64>,
}

/// Events, taken with [`crate::engine::Engine::poll_event`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    IkeSaUp(IkeSaInfo),
    IkeSaDown {
        ike: IkeSaId,
        connection: String,
        reason: DownReason,
    },
    /// The IKE SA `old` was rekeyed into `new` (its Child SAs moved to `new`).
    IkeSaRekeyed {
        old: IkeSaId,
        new: IkeSaInfo,
    },
    ChildSaUp(ChildSaInfo),
    /// Install `new` and send with it; the old SA (`old_spi_in`/`old_spi_out`) keeps
    /// receiving until its `ChildSaDown` follows.
    ChildSaRekeyed {
        old_spi_in: u32,
        old_spi_out: u32,
        new: ChildSaInfo,
    },
    ChildSaDown {
        ike: IkeSaId,
        /// The connection and child config names.
        connection: String,
        name: String,
        spi_in: u32,
        spi_out: u32,
        reason: DownReason,
    },
    /// The peer's outer address changed (its NAT mapping moved: an
    /// authenticated request, or ESP reported through `Engine::peer_moved`,
    /// came from `remote`). Its Child SAs `(spi_in, spi_out)` must send there.
    PeerMoved {
        ike: IkeSaId,
        remote: SocketAddr,
        children: Vec<(u32, u32)>,
    },
    Failure(Failure),
    /// Recovery wants a trap for child `child` of `connection` (its
    /// `dpd_action` or `close_action` is `trap`): the caller installs one in
    /// its data plane, unless one is there, and calls
    /// [`crate::engine::Engine::initiate_child`] when traffic hits it.
    TrapWanted {
        connection: String,
        child: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Where an IKE SA is (typed; [`IkeSaState::name`] for people).
#[non_exhaustive]
pub enum IkeSaState {
    /// Initiator: IKE_SA_INIT request sent.
    InitSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH (half-open).
    InitResponded,
    /// Initiator: IKE_AUTH request sent.
    AuthSent,
    Established,
    /// Replaced by a rekeyed IKE SA; waiting for the DELETE to finish.
    Rekeyed,
    /// DELETE for the IKE SA sent.
    Deleting,
}

impl IkeSaState {
    pub fn is_established(self) -> bool {
        self == IkeSaState::Established
    }

    pub fn name(self) -> &'static str {
        match self {
            IkeSaState::InitSent => "CONNECTING (IKE_SA_INIT sent)",
            IkeSaState::InitResponded => "CONNECTING (half-open)",
            IkeSaState::AuthSent => "CONNECTING (IKE_AUTH sent)",
            IkeSaState::Established => "ESTABLISHED",
            IkeSaState::Rekeyed => "REKEYED",
            IkeSaState::Deleting => "DELETING",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Where a Child SA is.
#[non_exhaustive]
pub enum ChildSaState {
    Installed,
    /// Our rekey is outstanding.
    Rekeying,
    /// Replaced by a new SA; the old one waits for its DELETE.
    Rekeyed,
    /// Our DELETE is outstanding.
    Deleting,
}

impl ChildSaState {
    /// `INSTALLED`, `REKEYING`, `REKEYED`, `DELETING`.
    pub fn name(self) -> &'static str {
        match self {
            ChildSaState::Installed => "INSTALLED",
            ChildSaState::Rekeying => "REKEYING",
            ChildSaState::Rekeyed => "REKEYED",
            ChildSaState::Deleting => "DELETING",
        }
    }
}

impl fmt::Display for ChildSaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for IkeSaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Status of a Child SA, for `wisp status`.
#[derive(Debug, Clone)]
pub struct ChildSaStatus {
    pub name: String,
    pub spi_in: u32,
    pub spi_out: u32,
    pub mode: Mode,
    pub algorithms: ChildAlgorithms,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub state: ChildSaState,
    pub established_for: Duration,
    /// When the soft lifetime triggers a rekey / the hard lifetime a delete.
    pub rekey_in: Option<Duration>,
    pub expire_in: Option<Duration>,
    pub bytes: u64,
    pub packets: u64,
}

/// Status of an IKE SA, for `wisp status`.
#[derive(Debug, Clone)]
pub struct IkeSaStatus {
    pub ike: IkeSaId,
    pub connection: String,
    pub state: IkeSaState,
    pub initiator: bool,
    pub spi_i: u64,
    pub spi_r: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub local_id: Identity,
    pub remote_id: Option<Identity>,
    pub algorithms: String,
    pub nat: NatState,
    pub established_for: Duration,
    pub rekey_in: Option<Duration>,
    pub expire_in: Option<Duration>,
    pub children: Vec<ChildSaStatus>,
    pub peer_auth: Option<PeerAuth>,
    pub vips: VirtualIps,
}
