//! IKE SA and Child SA state kept by the engine.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use wisp_policy_api::{Identity, TrafficSelector};

use crate::codec;
use crate::config::{Lifetimes, Mode};
use crate::event::{ChildAlgorithms, Exchange, IkeSaId, NatState};

use super::suite::{DhSecret, IkeKeys, IkeSuite};

pub(crate) use crate::event::IkeSaState as IkeState;

/// A Child SA negotiation we started (IKE_AUTH or CREATE_CHILD_SA).
pub(crate) struct ChildNego {
    pub child: String,
    pub spi_in: u32,
    pub proposals: Vec<codec::Proposal>,
    pub ni: Vec<u8>,
    pub dh: Option<DhSecret>,
    pub group: u16,
    pub ts_i: Vec<TrafficSelector>,
    pub ts_r: Vec<TrafficSelector>,
    pub mode: Mode,
    /// Rekey of this Child SA (our inbound SPI), if any.
    pub rekey_of: Option<u32>,
    pub ke_retries: u32,
}

/// An IKE SA rekey we started.
pub(crate) struct IkeRekeyNego {
    pub new_spi: u64,
    pub proposals: Vec<codec::Proposal>,
    pub ni: Vec<u8>,
    pub dh: DhSecret,
    pub group: u16,
    pub ke_retries: u32,
}

pub(crate) enum Pending {
    Init,
    Auth,
    CreateChild(ChildNego),
    RekeyIke(IkeRekeyNego),
    DeleteChildren(Vec<u32>),
    DeleteIke,
    /// Liveness check, or a notify-only informational.
    Informational,
}

impl Pending {
    pub fn exchange(&self) -> Exchange {
        match self {
            Pending::Init => Exchange::IkeSaInit,
            Pending::Auth => Exchange::IkeAuth,
            Pending::CreateChild(_) | Pending::RekeyIke(_) => Exchange::CreateChildSa,
            _ => Exchange::Informational,
        }
    }
}

/// One message as sent: a single datagram, or its SKF fragments in order.
pub(crate) type Datagrams = Vec<Vec<u8>>;

/// Our outstanding request (window size 1).
pub(crate) struct Outstanding {
    pub msg_id: u32,
    /// The request's datagrams: the message, or its SKF fragments (all
    /// sent again on each retransmission, RFC 7383 2.6).
    pub bytes: Datagrams,
    pub sends: u32,
    pub next_at: Duration,
    pub pending: Pending,
}

/// Work waiting for the request window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Task {
    CreateChild(String),
    RekeyChild(u32),
    RekeyIke,
    DeleteChild(u32),
    DeleteIke,
    Dpd,
    /// DELETE for Child SAs (our inbound SPIs) already removed locally
    /// (revoked on reload): only the peer is left to tell.
    DeleteRemoved(Vec<u32>),
}

pub(crate) use crate::event::ChildSaState as ChildState;

/// Nonces and new SA of one rekey exchange, for collision resolution (RFC 7296 2.8.1).
#[derive(Clone)]
pub(crate) struct RekeyRecord {
    pub min_nonce: Vec<u8>,
}

pub(crate) struct Child {
    pub name: String,
    pub spi_in: u32,
    pub spi_out: u32,
    pub mode: Mode,
    pub algs: ChildAlgorithms,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub lifetimes: Lifetimes,
    pub created: Duration,
    pub soft_at: Option<Duration>,
    pub hard_at: Option<Duration>,
    pub bytes: u64,
    pub packets: u64,
    pub soft_traffic_fired: bool,
    pub state: ChildState,
    pub initiator: bool,
    /// A rekey of this SA that the peer initiated and we answered.
    pub rekey_theirs: Option<RekeyRecord>,
    /// Its hard lifetime ran out (our DELETE then reports `Expired`).
    pub expired: bool,
}

/// IKE SA rekey collision bookkeeping: the new SA the peer created by rekeying
/// this one, with the lowest nonce of that exchange.
#[derive(Clone)]
pub(crate) struct IkeRekeyRecord {
    pub min_nonce: Vec<u8>,
    pub new_sa: IkeSaId,
}

pub(crate) struct IkeSa {
    pub id: IkeSaId,
    pub conn: usize,
    /// Responder before IKE_AUTH: connections that match the addresses.
    pub candidates: Vec<usize>,
    pub initiator: bool,
    pub spi_i: u64,
    pub spi_r: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Moved to port 4500 (non-ESP marker on every IKE message).
    pub natt: bool,
    pub state: IkeState,
    pub created: Duration,
    pub established_at: Option<Duration>,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    pub dh: Option<DhSecret>,
    pub group: u16,
    pub offered: Vec<codec::Proposal>,
    pub cookie: Option<Vec<u8>>,
    pub init_retries: u32,
    pub init_req: Vec<u8>,
    pub init_resp: Vec<u8>,
    pub suite: Option<IkeSuite>,
    pub keys: Option<IkeKeys>,
    pub nat: NatState,
    /// IKE fragmentation (RFC 7383) negotiated: both sides announced
    /// IKEV2_FRAGMENTATION_SUPPORTED in IKE_SA_INIT (kept across rekeys).
    pub fragmentation: bool,
    pub remote_id: Option<Identity>,
    /// What the peer authenticated with (set with `remote_id` once AUTH
    /// verified; kept across IKE SA rekeys, which authorize it again).
    pub auth: Option<Box<wisp_policy_api::AuthInfo>>,
    pub next_msg_id: u32,
    /// Boxed, as the other large parts used only for a while: the SA stays small.
    pub outstanding: Option<Box<Outstanding>>,
    pub tasks: VecDeque<Task>,
    pub peer_next_id: u32,
    pub last_resp: Option<(u32, Datagrams)>,
    pub children: Vec<Child>,
    pub soft_at: Option<Duration>,
    pub hard_at: Option<Duration>,
    pub last_recv: Duration,
    /// The Child SA negotiated inside IKE_AUTH (initiator).
    pub first_child: Option<Box<ChildNego>>,
    /// Its template, until IKE_SA_INIT is prepared (see `prepare_init`).
    pub first_child_name: Option<String>,
    pub up_reported: bool,
    pub rekey_theirs: Option<IkeRekeyRecord>,
    /// Set when this SA was created by a rekey: the SA it replaces.
    pub replaces: Option<IkeSaId>,
    /// Fragments (RFC 7383) of the message being received.
    pub reasm: Option<Box<(u32, crate::codec::sk::Reassembler)>>,
    /// Why our DELETE of this IKE SA was sent.
    pub delete_reason: Option<Box<crate::event::DownReason>>,
    /// When this SA entered [`IkeState::Rekeyed`] (it expires a grace period later).
    pub rekeyed_at: Option<Duration>,
    /// When to reauthenticate (kept across IKE SA rekeys: it counts from
    /// the authentication).
    pub reauth_at: Option<Duration>,
    /// On a reauthentication's new SA: the SA it replaces.
    pub reauth_of: Option<IkeSaId>,
    /// On the SA being reauthenticated: the new SA under way.
    pub reauth_by: Option<IkeSaId>,
    /// The peer's SIGNATURE_HASH_ALGORITHMS and CERTREQ (until IKE_AUTH).
    pub hints: Option<Box<super::authn::PeerHints>>,
    /// The scheme the peer's AUTH verified with, beside `auth` (kept
    /// across IKE SA rekeys).
    pub auth_scheme: Option<Box<str>>,
    /// Virtual IPs: ours (received) or the peer's (leased by us); see `vip.rs`.
    pub vip: Option<Box<super::vip::Vips>>,
    /// Responder: an EAP authentication under way (see `eap.rs`).
    pub eap: Option<Box<super::eap::EapState>>,
    /// The EAP identity the peer authenticated as (kept across rekeys).
    pub eap_identity: Option<Box<str>>,
}

impl IkeSa {
    pub fn virtual_ips(&self) -> crate::event::VirtualIps {
        match self.vip.as_deref() {
            Some(v) if v.mine => crate::event::VirtualIps { local: v.addrs.clone(), remote: Vec::new(), dns: v.dns.clone() },
            Some(v) => crate::event::VirtualIps { local: Vec::new(), remote: v.addrs.clone(), dns: v.dns.clone() },
            None => crate::event::VirtualIps::default(),
        }
    }

    pub fn local_spi(&self) -> u64 {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }

    /// After IKE_AUTH: the nonces, both IKE_SA_INIT messages, our offer
    /// and the cookie served the handshake only (rekeys bring their own
    /// nonces; a retransmitted IKE_AUTH is answered from `last_resp`).
    /// Freeing them is about 1 KiB per SA.
    pub fn drop_handshake(&mut self) {
        if self.state != IkeState::Established {
            return;
        }
        self.ni = Vec::new();
        self.nr = Vec::new();
        self.init_req = Vec::new();
        self.init_resp = Vec::new();
        self.offered = Vec::new();
        self.cookie = None;
        self.candidates = Vec::new();
        self.first_child_name = None;
        self.hints = None;
        self.eap = None;
    }

    /// How the peer authenticated, for events and status.
    pub fn peer_auth(&self) -> Option<crate::event::PeerAuth> {
        let auth = self.auth.as_deref()?;
        Some(crate::event::PeerAuth {
            method: self.auth_scheme.as_deref().unwrap_or_default().to_string(),
            cert_subject: auth.certificate_subject.clone(),
            cert_issuer: auth.certificate_issuer.clone(),
            cert_not_after: auth.certificate_not_after,
        })
    }

    pub fn child_idx(&self, spi_in: u32) -> Option<usize> {
        self.children.iter().position(|c| c.spi_in == spi_in)
    }

    pub fn child_by_out(&self, spi_out: u32) -> Option<usize> {
        self.children.iter().position(|c| c.spi_out == spi_out)
    }

    pub fn algorithms(&self) -> String {
        match &self.suite {
            Some(s) => {
                let enc = match s.encr {
                    crate::config::ENCR_CHACHA20_POLY1305 => "CHACHA20_POLY1305".to_string(),
                    _ => format!("AES_GCM_16_{}", s.key_bits),
                };
                let prf = crate::config::transform_name(&wisp_policy_api::Transform {
                    kind: wisp_policy_api::TransformType::Prf,
                    id: s.prf,
                    key_length: None,
                });
                let dh = crate::config::transform_name(&wisp_policy_api::Transform {
                    kind: wisp_policy_api::TransformType::KeyExchange,
                    id: s.dh,
                    key_length: None,
                });
                format!("{enc}/{prf}/{dh}")
            }
            None => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    /// The per-SA memory budget (issue 11: ≤ 10 KiB per IKE SA + Child SA
    /// in the gateway) leans on these: an SA in the table, and each child.
    /// Large parts used only for a while are boxed.
    #[test]
    fn sa_records_stay_small() {
        assert!(std::mem::size_of::<super::IkeSa>() <= 1024, "IkeSa is {} bytes", std::mem::size_of::<super::IkeSa>());
        assert!(std::mem::size_of::<super::Child>() <= 320, "Child is {} bytes", std::mem::size_of::<super::Child>());
    }
}
