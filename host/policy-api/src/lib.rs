//! The policy contract as seen from Rust.
//!
//! `wisp-ike` calls a [`Policy`] while negotiating; `wisp-policy` implements it by
//! calling a sandboxed WebAssembly component (the WIT world in `wit/policy.wit`),
//! and tests use native implementations. Both sides depend on this crate, so
//! neither depends on the other.
//!
//! The types mirror the WIT records one to one and are written from this
//! gateway's perspective ("local" = us, "remote" = the peer). No secret ever
//! appears in them.
#![forbid(unsafe_code)]

use std::net::IpAddr;

pub mod address;
pub mod selector;

pub use address::{AddressChoice, AddressFamily, AddressPick, AddressPool, AddressRequest, AddressWanted};

/// Which kind of SA a proposal list is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaKind {
    /// IKE SA (IKE_SA_INIT or IKE SA rekey).
    Ike,
    /// Child SA (IKE_AUTH or CREATE_CHILD_SA).
    Child,
}

/// IKEv2 security protocol id (RFC 7296 3.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Ike,
    Ah,
    Esp,
    Unknown(u8),
}

impl Protocol {
    pub fn from_raw(v: u8) -> Self {
        match v {
            1 => Protocol::Ike,
            2 => Protocol::Ah,
            3 => Protocol::Esp,
            o => Protocol::Unknown(o),
        }
    }
    pub fn raw(self) -> u8 {
        match self {
            Protocol::Ike => 1,
            Protocol::Ah => 2,
            Protocol::Esp => 3,
            Protocol::Unknown(o) => o,
        }
    }
}

/// IKEv2 transform type (RFC 7296 3.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransformType {
    Encryption,
    Prf,
    Integrity,
    KeyExchange,
    Esn,
    Unknown(u8),
}

impl TransformType {
    pub fn from_raw(v: u8) -> Self {
        match v {
            1 => TransformType::Encryption,
            2 => TransformType::Prf,
            3 => TransformType::Integrity,
            4 => TransformType::KeyExchange,
            5 => TransformType::Esn,
            o => TransformType::Unknown(o),
        }
    }
    pub fn raw(self) -> u8 {
        match self {
            TransformType::Encryption => 1,
            TransformType::Prf => 2,
            TransformType::Integrity => 3,
            TransformType::KeyExchange => 4,
            TransformType::Esn => 5,
            TransformType::Unknown(o) => o,
        }
    }
}

/// One transform as offered on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Transform {
    pub kind: TransformType,
    /// IANA id within the type.
    pub id: u16,
    /// Key Length attribute in bits, when present.
    pub key_length: Option<u16>,
}

/// One proposal (RFC 7296 3.3.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Proposal {
    /// Proposal number from the wire (1-based).
    pub number: u8,
    pub protocol: Protocol,
    pub transforms: Vec<Transform>,
}

/// IKEv2 ID type (RFC 7296 3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdType {
    Ipv4Addr,
    Fqdn,
    Rfc822Addr,
    Ipv6Addr,
    DerAsn1Dn,
    DerAsn1Gn,
    KeyId,
    Unknown(u8),
}

impl IdType {
    pub fn from_raw(v: u8) -> Self {
        match v {
            1 => IdType::Ipv4Addr,
            2 => IdType::Fqdn,
            3 => IdType::Rfc822Addr,
            5 => IdType::Ipv6Addr,
            9 => IdType::DerAsn1Dn,
            10 => IdType::DerAsn1Gn,
            11 => IdType::KeyId,
            o => IdType::Unknown(o),
        }
    }
    pub fn raw(self) -> u8 {
        match self {
            IdType::Ipv4Addr => 1,
            IdType::Fqdn => 2,
            IdType::Rfc822Addr => 3,
            IdType::Ipv6Addr => 5,
            IdType::DerAsn1Dn => 9,
            IdType::DerAsn1Gn => 10,
            IdType::KeyId => 11,
            IdType::Unknown(o) => o,
        }
    }
}

/// A peer identity in printable form (see the WIT `identity` record).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub kind: IdType,
    pub value: String,
}

impl PartialOrd for IdType {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for IdType {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.raw().cmp(&other.raw())
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.value)
    }
}

/// How the peer authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    Psk,
    RsaSignature,
    EcdsaSignature,
    DigitalSignature,
    /// EAP inside IKE_AUTH; [`AuthInfo::eap_method`] says which.
    Eap,
    Unknown(u8),
}

/// A traffic selector (RFC 7296 3.13.1). Both addresses are of one family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    /// 0 = any protocol.
    pub ip_protocol: u8,
    pub start_port: u16,
    pub end_port: u16,
    pub start_address: IpAddr,
    pub end_address: IpAddr,
}

impl TrafficSelector {
    /// True when `self` lies entirely inside `outer` (same family, protocol equal or
    /// outer is "any", port and address ranges contained).
    pub fn is_subset_of(&self, outer: &TrafficSelector) -> bool {
        let same_family = self.start_address.is_ipv4() == outer.start_address.is_ipv4()
            && self.end_address.is_ipv4() == outer.end_address.is_ipv4()
            && self.start_address.is_ipv4() == self.end_address.is_ipv4();
        same_family
            && (outer.ip_protocol == 0 || outer.ip_protocol == self.ip_protocol)
            && self.start_port <= self.end_port
            && outer.start_port <= self.start_port
            && self.end_port <= outer.end_port
            && self.start_address <= self.end_address
            && outer.start_address <= self.start_address
            && self.end_address <= outer.end_address
    }
}

/// Why the host asks for a decision (the WIT `decision-trigger`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DecisionTrigger {
    /// A new negotiation.
    #[default]
    Initial,
    /// A rekey of an established IKE SA or Child SA.
    Rekey,
    /// Re-evaluation of a live SA after a reload.
    Recheck,
}

/// The answer of `select_proposal`: which offered proposal, and optionally the
/// transform accepted for some (or all) of its transform types.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProposalChoice {
    /// Index into `offered`.
    pub index: usize,
    /// Indices into `offered[index].transforms`, at most one per transform
    /// type; the host chooses the types not named (inside the configured
    /// proposals). Empty: the host chooses every type.
    pub transforms: Vec<usize>,
}

impl ProposalChoice {
    /// Proposal `index`, every transform chosen by the host.
    pub fn index(index: usize) -> Self {
        ProposalChoice { index, transforms: Vec::new() }
    }
}

/// What the host knows about a negotiation when it asks for a decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerContext {
    pub connection: String,
    pub remote_address: IpAddr,
    pub remote_port: u16,
    pub local_address: IpAddr,
    pub local_port: u16,
    pub nat_detected: bool,
    pub local_is_initiator: bool,
    /// None before IKE_AUTH has authenticated the peer.
    pub peer_identity: Option<Identity>,
    /// Why the decision is asked for.
    pub trigger: DecisionTrigger,
}

/// Facts for authorization, after the AUTH payload was verified by the host.
/// The certificate fields are set only for certificate authentication (all
/// `None` / empty for a pre-shared key), the EAP fields only for EAP.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthInfo {
    pub peer_identity: Identity,
    pub method: AuthMethod,
    /// RFC 4514 subject of the peer's end-entity certificate.
    pub certificate_subject: Option<String>,
    /// Lowercase hex SHA-256 of the peer's SubjectPublicKeyInfo, no colons.
    pub key_fingerprint: Option<String>,
    /// RFC 4514 issuer of the peer's end-entity certificate.
    pub certificate_issuer: Option<String>,
    /// The certificate's subjectAltNames as `dns:NAME`, `email:ADDR`, `ip:ADDR`,
    /// `uri:URI`, `dn:RFC4514` (other kinds are omitted), in certificate order.
    pub subject_alt_names: Vec<String>,
    /// The certificate's serial number, lowercase hex, colon-separated.
    pub certificate_serial: Option<String>,
    /// The certificate's notAfter, Unix seconds.
    pub certificate_not_after: Option<u64>,
    /// The identity the peer gave inside EAP (its EAP-Identity response).
    pub eap_identity: Option<String>,
    /// The EAP method that authenticated the peer, lowercase: `mschapv2`,
    /// `tls`, `md5`, ...
    pub eap_method: Option<String>,
}

impl AuthInfo {
    /// A peer authenticated with a pre-shared key: no certificate facts.
    pub fn psk(peer_identity: Identity) -> Self {
        AuthInfo {
            peer_identity,
            method: AuthMethod::Psk,
            certificate_subject: None,
            key_fingerprint: None,
            certificate_issuer: None,
            subject_alt_names: Vec::new(),
            certificate_serial: None,
            certificate_not_after: None,
            eap_identity: None,
            eap_method: None,
        }
    }
}

/// Selectors to narrow, from this gateway's perspective.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SelectorRequest {
    pub remote_proposed: Vec<TrafficSelector>,
    pub local_proposed: Vec<TrafficSelector>,
    pub remote_configured: Vec<TrafficSelector>,
    pub local_configured: Vec<TrafficSelector>,
}

/// Narrowed selectors, from this gateway's perspective.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SelectorPair {
    pub remote: Vec<TrafficSelector>,
    pub local: Vec<TrafficSelector>,
}

/// Live SAs held by one identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SaCounts {
    pub ike_sas: u32,
    pub child_sas: u32,
}

/// A read-only view of live SAs, provided by the gateway to policies.
pub trait SaView: Send + Sync {
    fn sa_counts(&self, peer: &Identity) -> SaCounts;
}

/// An `SaView` that always reports zero SAs (tests, offline evaluation).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSas;

impl SaView for NoSas {
    fn sa_counts(&self, _peer: &Identity) -> SaCounts {
        SaCounts::default()
    }
}

/// The wall clock a policy sees (the WIT `now` import). The gateway uses
/// [`SystemClock`]; tests and `wisp plugin eval` pin the time with [`FixedClock`].
pub trait Clock: Send + Sync {
    fn now(&self) -> std::time::SystemTime;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> std::time::SystemTime {
        std::time::SystemTime::now()
    }
}

/// A clock stopped at one instant (fixtures, tests).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub std::time::SystemTime);

impl Clock for FixedClock {
    fn now(&self) -> std::time::SystemTime {
        self.0
    }
}

/// Why a decision did not come out as "yes".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The policy decided no, with its reason.
    #[error("refused by policy {decider}: {reason}")]
    Refused { decider: String, reason: String },
    /// The policy could not decide (plugin trap, deadline, memory cap, malformed
    /// answer). The negotiation fails closed.
    #[error("policy {decider} failed: {detail}")]
    Failed { decider: String, detail: String },
    /// Not decided yet: an asynchronous policy (`wisp_policy::AsyncPolicy`)
    /// queued the question for its workers. Never a refusal: the IKE engine
    /// parks the negotiation that asked and asks the same question again after
    /// `Engine::policy_ready`, when the answer is in.
    #[error("policy {decider}: decision pending")]
    Deferred { decider: String },
}

impl PolicyError {
    /// The human reason, without the decider prefix.
    pub fn reason(&self) -> &str {
        match self {
            PolicyError::Refused { reason, .. } => reason,
            PolicyError::Failed { detail, .. } => detail,
            PolicyError::Deferred { .. } => "decision pending",
        }
    }

    /// True for [`PolicyError::Deferred`]: ask again later.
    pub fn is_deferred(&self) -> bool {
        matches!(self, PolicyError::Deferred { .. })
    }
}

/// The decisions the IKE engine asks for: proposals (both roles),
/// authorization, selectors and virtual addresses. Implementations must be
/// cheap to call from any thread; a slow implementation only delays the
/// negotiation that asked.
///
/// Every method's answer is validated by the caller of the plugin (the
/// `wisp-policy` host) before it gets here: an index is in range, selectors are
/// inside what was proposed, an address inside the pools. The engine enforces
/// the configuration on every answer again, whoever gave it.
pub trait Policy: Send + Sync {
    /// "name version" of whoever decides, for logs and diagnostics.
    fn describe(&self) -> String;

    /// Responder: the chosen proposal of `offered` (and optionally transforms
    /// inside it). `configured` is the ceiling the host enforces (the
    /// connection's IKE proposals, or the Child SA's ESP proposals); the host
    /// checks the answer against it whatever the policy says.
    fn select_proposal(
        &self,
        ctx: &PeerContext,
        kind: SaKind,
        offered: &[Proposal],
        configured: &[Proposal],
    ) -> Result<ProposalChoice, PolicyError>;

    /// Initiator: which of `configured` to offer, in order (indices).
    fn order_proposals(&self, ctx: &PeerContext, kind: SaKind, configured: &[Proposal]) -> Result<Vec<usize>, PolicyError>;

    /// After AUTH verification: allow (Ok) or deny.
    fn authorize(&self, ctx: &PeerContext, auth: &AuthInfo) -> Result<(), PolicyError>;

    /// Narrow the proposed selectors.
    fn narrow_selectors(&self, ctx: &PeerContext, request: &SelectorRequest) -> Result<SelectorPair, PolicyError>;

    /// Responder, a peer asking for virtual IPs: where each family's address
    /// comes from. The default has no opinion (the host's default for every
    /// family), so a policy that does not care about addresses need not
    /// implement it; a policy that wraps another must forward it.
    fn assign_address(&self, ctx: &PeerContext, request: &AddressRequest) -> Result<AddressChoice, PolicyError> {
        let _ = (ctx, request);
        Ok(AddressChoice::default())
    }
}

/// One decision asked of a [`Policy`], as a value: a key for policies that
/// decide elsewhere and remember answers (the gateway's decision pool, test
/// policies on virtual time).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Question {
    Select { ctx: PeerContext, kind: SaKind, offered: Vec<Proposal>, configured: Vec<Proposal> },
    Order { ctx: PeerContext, kind: SaKind, configured: Vec<Proposal> },
    Authorize { ctx: PeerContext, auth: AuthInfo },
    Narrow { ctx: PeerContext, request: SelectorRequest },
    Assign { ctx: PeerContext, request: AddressRequest },
}

/// The answer to a [`Question`], of the matching kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Select(Result<ProposalChoice, PolicyError>),
    Order(Result<Vec<usize>, PolicyError>),
    Authorize(Result<(), PolicyError>),
    Narrow(Result<SelectorPair, PolicyError>),
    Assign(Result<AddressChoice, PolicyError>),
}

impl Question {
    /// The connection the question is about.
    pub fn connection(&self) -> &str {
        match self {
            Question::Select { ctx, .. }
            | Question::Order { ctx, .. }
            | Question::Authorize { ctx, .. }
            | Question::Narrow { ctx, .. }
            | Question::Assign { ctx, .. } => &ctx.connection,
        }
    }

    /// Ask `policy`.
    pub fn ask(&self, policy: &dyn Policy) -> Answer {
        match self {
            Question::Select { ctx, kind, offered, configured } => Answer::Select(policy.select_proposal(ctx, *kind, offered, configured)),
            Question::Order { ctx, kind, configured } => Answer::Order(policy.order_proposals(ctx, *kind, configured)),
            Question::Authorize { ctx, auth } => Answer::Authorize(policy.authorize(ctx, auth)),
            Question::Narrow { ctx, request } => Answer::Narrow(policy.narrow_selectors(ctx, request)),
            Question::Assign { ctx, request } => Answer::Assign(policy.assign_address(ctx, request)),
        }
    }
}

/// A [`Policy`] made of one function from [`Question`] to [`Answer`] (or an
/// error for every kind, e.g. [`PolicyError::Deferred`]).
pub trait AskPolicy: Send + Sync {
    /// What [`Policy::describe`] answers.
    fn decider(&self) -> String;
    fn answer(&self, q: Question) -> Result<Answer, PolicyError>;
}

fn mismatched(decider: String) -> PolicyError {
    PolicyError::Failed { decider, detail: "answer of another kind".into() }
}

impl<T: AskPolicy> Policy for T {
    fn describe(&self) -> String {
        self.decider()
    }
    fn select_proposal(
        &self,
        ctx: &PeerContext,
        kind: SaKind,
        offered: &[Proposal],
        configured: &[Proposal],
    ) -> Result<ProposalChoice, PolicyError> {
        let q = Question::Select { ctx: ctx.clone(), kind, offered: offered.to_vec(), configured: configured.to_vec() };
        match self.answer(q)? {
            Answer::Select(r) => r,
            _ => Err(mismatched(self.decider())),
        }
    }
    fn order_proposals(&self, ctx: &PeerContext, kind: SaKind, configured: &[Proposal]) -> Result<Vec<usize>, PolicyError> {
        match self.answer(Question::Order { ctx: ctx.clone(), kind, configured: configured.to_vec() })? {
            Answer::Order(r) => r,
            _ => Err(mismatched(self.decider())),
        }
    }
    fn authorize(&self, ctx: &PeerContext, auth: &AuthInfo) -> Result<(), PolicyError> {
        match self.answer(Question::Authorize { ctx: ctx.clone(), auth: auth.clone() })? {
            Answer::Authorize(r) => r,
            _ => Err(mismatched(self.decider())),
        }
    }
    fn narrow_selectors(&self, ctx: &PeerContext, request: &SelectorRequest) -> Result<SelectorPair, PolicyError> {
        match self.answer(Question::Narrow { ctx: ctx.clone(), request: request.clone() })? {
            Answer::Narrow(r) => r,
            _ => Err(mismatched(self.decider())),
        }
    }
    fn assign_address(&self, ctx: &PeerContext, request: &AddressRequest) -> Result<AddressChoice, PolicyError> {
        match self.answer(Question::Assign { ctx: ctx.clone(), request: request.clone() })? {
            Answer::Assign(r) => r,
            _ => Err(mismatched(self.decider())),
        }
    }
}

impl<P: Policy + ?Sized> Policy for std::sync::Arc<P> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn select_proposal(
        &self,
        ctx: &PeerContext,
        kind: SaKind,
        offered: &[Proposal],
        configured: &[Proposal],
    ) -> Result<ProposalChoice, PolicyError> {
        (**self).select_proposal(ctx, kind, offered, configured)
    }
    fn order_proposals(&self, ctx: &PeerContext, kind: SaKind, configured: &[Proposal]) -> Result<Vec<usize>, PolicyError> {
        (**self).order_proposals(ctx, kind, configured)
    }
    fn authorize(&self, ctx: &PeerContext, auth: &AuthInfo) -> Result<(), PolicyError> {
        (**self).authorize(ctx, auth)
    }
    fn narrow_selectors(&self, ctx: &PeerContext, request: &SelectorRequest) -> Result<SelectorPair, PolicyError> {
        (**self).narrow_selectors(ctx, request)
    }
    fn assign_address(&self, ctx: &PeerContext, request: &AddressRequest) -> Result<AddressChoice, PolicyError> {
        (**self).assign_address(ctx, request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(a: &str, b: &str, p: u8, sp: u16, ep: u16) -> TrafficSelector {
        TrafficSelector { ip_protocol: p, start_port: sp, end_port: ep, start_address: a.parse().unwrap(), end_address: b.parse().unwrap() }
    }

    #[test]
    fn subset_rules() {
        let outer = ts("10.0.0.0", "10.0.0.255", 0, 0, 65535);
        assert!(ts("10.0.0.1", "10.0.0.1", 6, 80, 80).is_subset_of(&outer));
        assert!(!ts("10.0.0.1", "10.0.1.0", 0, 0, 65535).is_subset_of(&outer));
        assert!(!ts("::1", "::1", 0, 0, 65535).is_subset_of(&outer));
        let tcp = ts("10.0.0.0", "10.0.0.255", 6, 0, 65535);
        assert!(!ts("10.0.0.1", "10.0.0.1", 0, 0, 65535).is_subset_of(&tcp));
        assert!(!ts("10.0.0.9", "10.0.0.1", 0, 0, 65535).is_subset_of(&outer), "inverted range");
    }

    #[test]
    fn psk_auth_info_has_no_certificate_facts() {
        let id = Identity { kind: IdType::Rfc822Addr, value: "alice@example.com".into() };
        let a = AuthInfo::psk(id.clone());
        assert_eq!((a.peer_identity, a.method), (id, AuthMethod::Psk));
        assert_eq!((a.certificate_subject, a.key_fingerprint, a.certificate_issuer), (None, None, None));
        assert!(a.subject_alt_names.is_empty());
        assert_eq!((a.certificate_serial, a.certificate_not_after), (None, None));
        assert_eq!((a.eap_identity, a.eap_method), (None, None));
    }
}
