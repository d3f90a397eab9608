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
    Failed(FailureReason),
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

/// Why a negotiation failed: one variant per cause, rendered to text only at
/// the edge (`Display` gives the human sentence). Details that come from
/// elsewhere as text (a policy's own reason, a proposal summary, a check of
/// `authn`) are carried as data in named fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureReason {
    // --- The peer said no (an error notify in its answer).
    /// The peer answered IKE_SA_INIT with an error notify.
    PeerRefusedInit {
        notify: u16,
        offered: String,
    },
    /// The peer answered IKE_AUTH with an error notify.
    PeerRefusedAuth {
        notify: u16,
    },
    /// The peer answered a Child SA request with an error notify.
    PeerRefusedChild {
        child: String,
        notify: u16,
    },
    /// The peer answered our IKE SA rekey with an error notify.
    PeerRefusedIkeRekey {
        notify: u16,
    },
    /// An error notify in an INFORMATIONAL exchange or an answer.
    PeerReported {
        notify: u16,
    },
    /// The peer sent AUTHENTICATION_FAILED: it did not accept our AUTH.
    PeerRejectedOurAuth,
    /// The peer answered our IKE_AUTH with AUTHENTICATION_FAILED (`with_cert`:
    /// we authenticated with a certificate, else a PSK).
    PeerRefusedOurAuth {
        with_cert: bool,
    },
    /// The peer answered our IKE_SA_INIT with a COOKIE again and again.
    CookieLoop,
    /// The peer asked (INVALID_KE_PAYLOAD) for a group we did not offer.
    KeGroupNotOffered {
        group: u16,
        offered: String,
    },
    /// No answer after every retransmission.
    NoResponse {
        peer: SocketAddr,
        sends: u32,
        exchange: Exchange,
    },

    // --- Malformed messages.
    /// A message lacked or broke something we need.
    Malformed(Malformed),

    // --- Proposals and selectors.
    /// The peer's answer (`answer`, a summary) is not one of our proposals.
    AnswerRefused {
        esp: bool,
        answer: String,
        why: String,
    },
    /// The peer's IKE proposal answer does not fit our key exchange.
    AnswerKeMismatch {
        answer: String,
    },
    /// No usable ESP cipher: in the peer's answer (`answer`) or its offer.
    NoUsableEspCipher {
        answer: bool,
    },
    /// The peer's KE is for another group than the one selected.
    KeGroupMismatch {
        sent: Option<u16>,
        selected: u16,
    },
    /// The proposal selected (by the policy) lacks an algorithm we implement.
    SelectedUnusable,
    /// Generating our DH share failed.
    DhFailed,
    /// No proposal of the peer's is acceptable (`detail`: both sides' sets, or
    /// the policy's reason).
    NoProposalChosen {
        detail: String,
    },
    /// The traffic selectors do not fit (`detail` says how).
    TsUnacceptable {
        detail: String,
    },
    /// The peer narrowed outside what we proposed.
    TsOutside {
        ts_i: String,
        ts_r: String,
        our_i: String,
        our_r: String,
    },
    /// A selector cap (`config::Caps`), hit by the selectors of `by`.
    TsCap {
        by: SelectorSource,
        detail: String,
    },

    // --- Keys.
    KeyDerivation,
    NoKeys,

    // --- Authentication and authorization.
    /// The EAP method failed (wrong password, unknown user, a declined
    /// method, a malformed packet).
    EapFailed {
        method: String,
        why: String,
    },
    /// No connection has a `remote.id` accepting the peer's identity.
    NoMatchingConnection {
        peer: Identity,
        spi_i: u64,
    },
    /// The connection fits the identity but not the AUTH method.
    AuthMethodMismatch {
        peer: Identity,
        method: String,
        connection: String,
        expects: String,
    },
    /// The peer's identity is not the one configured.
    IdentityMismatch {
        peer: Identity,
        expected: String,
    },
    /// Checking the peer's AUTH or certificates failed (`authn` names the check).
    AuthenticationFailed {
        check: String,
    },
    /// Building our own AUTH failed.
    OwnAuth {
        why: String,
    },
    /// Summary for the SA going down after a failed check of the peer's AUTH.
    PeerAuthFailed,
    /// The policy does not authorize the peer (`why`: the policy's text).
    NotAuthorized {
        peer: Identity,
        why: String,
    },
    /// Re-authorization (rekey) refused; `why` says by whom.
    PolicyRefused {
        why: String,
    },
    /// The IKE rekey was refused by the policy.
    IkeRekeyRefused {
        why: String,
    },
    /// The policy did not decide in time; `dropped` names a dropped task.
    PolicyTimeout {
        policy: String,
        secs: u64,
        dropped: Option<String>,
    },
    /// A re-check after reload could not decide; the SA stays.
    RecheckUndecided {
        why: String,
    },

    // --- Local limits and configuration.
    /// No connection for the peer's address.
    NoConnection {
        peer: SocketAddr,
    },
    /// A peer asked for a virtual IP and none could be leased (the pool's
    /// reason: exhausted, no pool of the family).
    NoAddress {
        why: String,
    },
    /// The policy's `assign-address` refused the peer an address, or
    /// answered outside what the configuration allows (`why`: what it
    /// answered and why the host refused it, read after "policy NAME").
    AddressRefused {
        policy: String,
        why: String,
    },
    /// We asked for virtual IPs (`vips`) and the peer assigned none.
    NoVirtualIp {
        requested: Vec<std::net::IpAddr>,
    },
    /// A cap of the connection (`config::Caps`) is reached.
    Limit {
        what: String,
    },
    /// A request of ours could not be built (unknown child, policy, ...).
    NotStarted {
        why: String,
    },

    // --- Reauthentication and recovery.
    ReauthLeftChild {
        child: String,
    },
    ReauthNotStarted {
        why: String,
    },
    /// A managed child could not be started and is not retried.
    NotBroughtBack {
        child: String,
        why: String,
    },
    /// A managed child's `keyingtries` are used up; `why` is the last failure.
    GaveUp {
        child: String,
        attempt: u32,
        keyingtries: u32,
        why: Box<FailureReason>,
    },
    /// A managed initiation's IKE SA vanished without a word.
    IkeSaGone,
    /// A managed initiation hit a limit (retried).
    CannotInitiate {
        why: String,
    },
}

/// Whose traffic selectors hit a selector cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorSource {
    /// The peer's request.
    PeerProposal,
    /// The peer's answer to our request.
    PeerNarrowing,
    /// The policy's `narrow-selectors`.
    PolicyNarrowing,
}

/// What was wrong with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    InitResponseIncomplete,
    InitResponseNonceOrSpi,
    AuthResponseIncomplete,
    AuthRequestNoIdi,
    ChildRequestIncomplete,
    ChildAnswerIncomplete,
    ChildAnswerNoNonce,
    EspSpiSize,
    InvalidKe,
    KeMissing,
    KeValue,
    IkeRekeyAnswer,
    /// A request that did not decode (`error`: the codec's words).
    Request {
        exchange: Exchange,
        error: String,
    },
    /// A response that did not decode.
    Response {
        exchange: Exchange,
        error: String,
    },
    /// The SA goes down after a malformed IKE_AUTH request.
    AuthRequestDown {
        error: String,
    },
    /// The SA goes down after a malformed response.
    ResponseDown {
        exchange: Exchange,
    },
}

impl FailureReason {
    /// The notify the peer sent, where the reason is one.
    pub fn peer_notify(&self) -> Option<u16> {
        match self {
            FailureReason::PeerRefusedInit { notify, .. }
            | FailureReason::PeerRefusedAuth { notify }
            | FailureReason::PeerRefusedChild { notify, .. }
            | FailureReason::PeerRefusedIkeRekey { notify }
            | FailureReason::PeerReported { notify } => Some(*notify),
            FailureReason::PeerRejectedOurAuth | FailureReason::PeerRefusedOurAuth { .. } => Some(24),
            _ => None,
        }
    }

    /// True for failures of authentication or authorization (either side).
    pub fn is_authentication(&self) -> bool {
        matches!(
            self,
            FailureReason::PeerRejectedOurAuth
                | FailureReason::PeerRefusedOurAuth { .. }
                | FailureReason::EapFailed { .. }
                | FailureReason::NoMatchingConnection { .. }
                | FailureReason::AuthMethodMismatch { .. }
                | FailureReason::IdentityMismatch { .. }
                | FailureReason::AuthenticationFailed { .. }
                | FailureReason::OwnAuth { .. }
                | FailureReason::PeerAuthFailed
                | FailureReason::NotAuthorized { .. }
        )
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::InitResponseIncomplete => f.write_str("IKE_SA_INIT response lacks SA, KE or Nonce"),
            Malformed::InitResponseNonceOrSpi => f.write_str("IKE_SA_INIT response has a bad nonce or responder SPI"),
            Malformed::AuthResponseIncomplete => f.write_str("IKE_AUTH response lacks IDr or AUTH"),
            Malformed::AuthRequestNoIdi => f.write_str("IKE_AUTH request lacks IDi"),
            Malformed::ChildRequestIncomplete => f.write_str("Child SA request lacks SA, TSi or TSr"),
            Malformed::ChildAnswerNoNonce => f.write_str("CREATE_CHILD_SA answer lacks a nonce"),
            Malformed::ChildAnswerIncomplete => f.write_str("Child SA answer lacks SA, TSi or TSr"),
            Malformed::EspSpiSize => f.write_str("ESP SPI must be 4 bytes"),
            Malformed::InvalidKe => f.write_str("invalid KE value"),
            Malformed::KeMissing => f.write_str("KE missing or of another group"),
            Malformed::KeValue => f.write_str("peer's key exchange value is invalid"),
            Malformed::IkeRekeyAnswer => f.write_str("invalid answer to our IKE SA rekey"),
            Malformed::Request { exchange, error } => write!(f, "peer sent a malformed {exchange} request: {error}"),
            Malformed::Response { exchange, error } => write!(f, "malformed {exchange} response: {error}"),
            Malformed::AuthRequestDown { error } => write!(f, "malformed IKE_AUTH: {error}"),
            Malformed::ResponseDown { exchange } => write!(f, "malformed {exchange} response"),
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::engine::notify_name as n;
        use FailureReason::*;
        match self {
            PeerRefusedInit { notify, offered } => write!(f, "peer refused IKE_SA_INIT with {} (we offered {offered})", n(*notify)),
            PeerRefusedAuth { notify } => write!(f, "peer refused IKE_AUTH with {}", n(*notify)),
            PeerRefusedChild { child, notify } => write!(f, "peer refused Child SA {child} with {}", n(*notify)),
            PeerRefusedIkeRekey { notify } => write!(f, "peer refused the IKE SA rekey with {}", n(*notify)),
            PeerReported { notify } => write!(f, "peer reported {}", n(*notify)),
            PeerRejectedOurAuth => f.write_str("peer rejected our authentication (AUTHENTICATION_FAILED): wrong PSK or identity?"),
            PeerRefusedOurAuth { with_cert: false } => {
                f.write_str("peer refused our authentication (AUTHENTICATION_FAILED): wrong PSK or identity?")
            }
            PeerRefusedOurAuth { with_cert: true } => f.write_str(
                "peer refused our authentication (AUTHENTICATION_FAILED): does it trust our CA, and accept our identity and certificate?",
            ),
            CookieLoop => f.write_str("peer keeps demanding a COOKIE"),
            KeGroupNotOffered { group, offered } => {
                write!(f, "peer wants key exchange group {group}, which we did not offer (offered: {offered})")
            }
            NoResponse { peer, sends, exchange } => {
                write!(f, "no response from {peer} after {sends} transmissions of the {exchange} request")
            }
            FailureReason::Malformed(m) => m.fmt(f),
            AnswerRefused { esp, answer, why } => {
                write!(f, "peer's {}answer {answer} refused: {why}", if *esp { "ESP " } else { "" })
            }
            AnswerKeMismatch { answer } => write!(f, "peer's answer {answer} does not match our key exchange"),
            NoUsableEspCipher { answer: true } => f.write_str("peer chose no usable ESP cipher"),
            NoUsableEspCipher { answer: false } => f.write_str("no usable ESP cipher"),
            KeGroupMismatch { sent, selected } => write!(f, "peer sent KE for group {sent:?}, we selected {selected}"),
            SelectedUnusable => f.write_str("selected proposal lacks a usable algorithm"),
            DhFailed => f.write_str("DH failed"),
            NoProposalChosen { detail } | TsUnacceptable { detail } => f.write_str(detail),
            TsOutside { ts_i, ts_r, our_i, our_r } => write!(f, "peer narrowed to {ts_i} / {ts_r} outside our {our_i} / {our_r}"),
            TsCap { by: SelectorSource::PeerProposal, detail } => write!(f, "peer proposed {detail}"),
            TsCap { by: SelectorSource::PeerNarrowing, detail } => write!(f, "peer narrowed to {detail}"),
            TsCap { by: SelectorSource::PolicyNarrowing, detail } => write!(f, "policy narrowed to {detail}"),
            KeyDerivation => f.write_str("key derivation failed"),
            NoKeys => f.write_str("no keys"),
            EapFailed { method, why } => write!(f, "{method} failed: {why}"),
            NoMatchingConnection { peer, spi_i } => write!(f, "no connection accepts peer identity {peer} from {spi_i}"),
            AuthMethodMismatch { peer, method, connection, expects } => {
                write!(f, "peer {peer} authenticates with {method}, connection {connection} expects {expects}")
            }
            IdentityMismatch { peer, expected } => write!(f, "peer identified as {peer}, expected {expected}"),
            AuthenticationFailed { check } => f.write_str(check),
            OwnAuth { why } => f.write_str(why),
            PeerAuthFailed => f.write_str("peer authentication failed"),
            NotAuthorized { peer, why } => write!(f, "peer {peer} not authorized: {why}"),
            PolicyRefused { why } => f.write_str(why),
            IkeRekeyRefused { why } => write!(f, "IKE SA rekey refused: {why}"),
            PolicyTimeout { policy, secs, dropped: None } => write!(f, "policy {policy} did not decide within {secs} s"),
            PolicyTimeout { policy, secs, dropped: Some(task) } => {
                write!(f, "policy {policy} did not decide within {secs} s; {task} dropped")
            }
            RecheckUndecided { why } => write!(f, "re-check after reload undecided, SA kept: {why}"),
            NoConnection { peer } => write!(f, "no connection configured for peer {peer}"),
            NoAddress { why } => f.write_str(why),
            AddressRefused { policy, why } => write!(f, "policy {policy} {why}"),
            NoVirtualIp { requested } => {
                let r: Vec<String> = requested.iter().map(|a| a.to_string()).collect();
                write!(f, "peer assigned no virtual IP (requested {})", r.join(", "))
            }
            Limit { what } => f.write_str(what),
            NotStarted { why } => f.write_str(why),
            ReauthLeftChild { child } => write!(f, "reauthentication did not bring child {child} back; it goes with the old IKE SA"),
            ReauthNotStarted { why } => write!(f, "reauthentication not started: {why}"),
            NotBroughtBack { child, why } => write!(f, "child {child} not brought back: {why}"),
            GaveUp { child, attempt, keyingtries, why } => {
                write!(f, "child {child} not brought back: giving up after {attempt} of keyingtries = {keyingtries} ({why})")
            }
            IkeSaGone => f.write_str("its IKE SA is gone"),
            CannotInitiate { why } => write!(f, "cannot initiate now: {why}"),
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
    pub reason: FailureReason,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(v: &str) -> Identity {
        Identity { kind: wisp_policy_api::IdType::Fqdn, value: v.into() }
    }

    /// The sentences logs, `wisp status` and the interop matrix read.
    #[test]
    fn failure_reasons_keep_their_text() {
        let peer: SocketAddr = "192.0.2.1:500".parse().unwrap();
        let cases: Vec<(FailureReason, &str)> = vec![
            (
                FailureReason::PeerRefusedInit { notify: 14, offered: "X".into() },
                "peer refused IKE_SA_INIT with NO_PROPOSAL_CHOSEN (we offered X)",
            ),
            (FailureReason::PeerRefusedAuth { notify: 24 }, "peer refused IKE_AUTH with AUTHENTICATION_FAILED"),
            (FailureReason::PeerRefusedChild { child: "net".into(), notify: 38 }, "peer refused Child SA net with TS_UNACCEPTABLE"),
            (FailureReason::PeerReported { notify: 24 }, "peer reported AUTHENTICATION_FAILED"),
            (FailureReason::PeerRejectedOurAuth, "peer rejected our authentication (AUTHENTICATION_FAILED): wrong PSK or identity?"),
            (
                FailureReason::PeerRefusedOurAuth { with_cert: false },
                "peer refused our authentication (AUTHENTICATION_FAILED): wrong PSK or identity?",
            ),
            (FailureReason::CookieLoop, "peer keeps demanding a COOKIE"),
            (
                FailureReason::KeGroupNotOffered { group: 19, offered: "Y".into() },
                "peer wants key exchange group 19, which we did not offer (offered: Y)",
            ),
            (
                FailureReason::NoResponse { peer, sends: 6, exchange: Exchange::IkeSaInit },
                "no response from 192.0.2.1:500 after 6 transmissions of the IKE_SA_INIT request",
            ),
            (FailureReason::Malformed(Malformed::EspSpiSize), "ESP SPI must be 4 bytes"),
            (
                FailureReason::Malformed(Malformed::Request { exchange: Exchange::IkeAuth, error: "e".into() }),
                "peer sent a malformed IKE_AUTH request: e",
            ),
            (FailureReason::Malformed(Malformed::ResponseDown { exchange: Exchange::CreateChildSa }), "malformed CREATE_CHILD_SA response"),
            (FailureReason::AnswerRefused { esp: true, answer: "A".into(), why: "w".into() }, "peer's ESP answer A refused: w"),
            (FailureReason::AnswerRefused { esp: false, answer: "A".into(), why: "w".into() }, "peer's answer A refused: w"),
            (FailureReason::NoUsableEspCipher { answer: true }, "peer chose no usable ESP cipher"),
            (FailureReason::KeGroupMismatch { sent: Some(31), selected: 19 }, "peer sent KE for group Some(31), we selected 19"),
            (
                FailureReason::TsOutside { ts_i: "a".into(), ts_r: "b".into(), our_i: "c".into(), our_r: "d".into() },
                "peer narrowed to a / b outside our c / d",
            ),
            (FailureReason::TsCap { by: SelectorSource::PeerProposal, detail: "2 TSi".into() }, "peer proposed 2 TSi"),
            (FailureReason::TsCap { by: SelectorSource::PolicyNarrowing, detail: "2".into() }, "policy narrowed to 2"),
            (FailureReason::KeyDerivation, "key derivation failed"),
            (
                FailureReason::NoMatchingConnection { peer: id("erin.example"), spi_i: 7 },
                "no connection accepts peer identity erin.example from 7",
            ),
            (FailureReason::NotAuthorized { peer: id("m.example"), why: "denied".into() }, "peer m.example not authorized: denied"),
            (FailureReason::PolicyTimeout { policy: "p".into(), secs: 30, dropped: None }, "policy p did not decide within 30 s"),
            (FailureReason::RecheckUndecided { why: "trap".into() }, "re-check after reload undecided, SA kept: trap"),
            (FailureReason::NoConnection { peer }, "no connection configured for peer 192.0.2.1:500"),
            (
                FailureReason::AddressRefused { policy: "p 1.0".into(), why: "assigned 10.9.9.9, outside pools rw (10.3.0.0/24)".into() },
                "policy p 1.0 assigned 10.9.9.9, outside pools rw (10.3.0.0/24)",
            ),
            (
                FailureReason::GaveUp {
                    child: "net".into(),
                    attempt: 3,
                    keyingtries: 3,
                    why: Box::new(FailureReason::CannotInitiate { why: "max_ike_sas = 1".into() }),
                },
                "child net not brought back: giving up after 3 of keyingtries = 3 (cannot initiate now: max_ike_sas = 1)",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text, "{reason:?}");
        }
        assert_eq!(DownReason::Failed(FailureReason::PeerAuthFailed).to_string(), "failed: peer authentication failed");
    }

    #[test]
    fn failure_reasons_name_the_peers_notify() {
        assert_eq!(FailureReason::PeerRefusedAuth { notify: 24 }.peer_notify(), Some(24));
        assert_eq!(FailureReason::PeerRefusedOurAuth { with_cert: true }.peer_notify(), Some(24));
        assert_eq!(FailureReason::KeyDerivation.peer_notify(), None);
        assert!(FailureReason::IdentityMismatch { peer: id("a"), expected: "b".into() }.is_authentication());
        assert!(!FailureReason::CookieLoop.is_authentication());
    }
}
