//! Policy decisions that are not in yet.
//!
//! A policy may answer [`PolicyError::Deferred`] (the gateway's
//! `wisp_policy::AsyncPolicy` does while its workers ask the plugin). The
//! engine never waits for it: the negotiation that asked is *parked* exactly as
//! it was before the question, and everything else goes on. When the caller
//! learns that answers are in, it calls [`Engine::policy_ready`]; the engine
//! then runs the parked work again, and the policy answers the same questions
//! from what it has learnt.
//!
//! What is parked, and how it is put back:
//! - an IKE_SA_INIT request: its datagram (no SA exists yet);
//! - a decrypted request of an IKE SA (IKE_AUTH, CREATE_CHILD_SA): its
//!   payloads; the SA's expected message ID is left unchanged, so a
//!   retransmission of the request is parked in its place, not answered
//!   (an IKE_AUTH that waits for `assign-address` or a Child SA decision
//!   gives back any address it leased, and leases it again on the re-run);
//! - a decrypted response (IKE_AUTH as initiator): its payloads, with our
//!   request left outstanding (and retransmitted as usual);
//! - a request of ours (a task such as a rekey, or an initiation) that needs
//!   the proposal order: the task stays first in the SA's queue; a new IKE SA
//!   waits in `InitSent` with nothing sent.
//!
//! Bounded: at most [`MAX_PARKED`] messages per engine (more are dropped and
//! counted; the peer retransmits), each for at most [`PARK_TTL`], after which
//! waiting work fails with a reason naming the policy.

use std::cell::Cell;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use wisp_policy_api::{
    AddressChoice, AddressRequest, AuthInfo, PeerContext, Policy, PolicyError, Proposal, ProposalChoice, SaKind, SelectorPair,
    SelectorRequest,
};

use crate::codec::{Header, Payload};
use crate::event::{DownReason, Exchange, FailureReason, IkeSaId, Side};

use super::sa::{IkeSa, IkeState, Outstanding};
use super::Engine;

/// Parked messages per engine.
pub const MAX_PARKED: usize = 256;
/// How long work waits for a decision before it fails.
pub const PARK_TTL: Duration = Duration::from_secs(30);

/// The engine's policy, remembering whether a call was deferred since the
/// last [`Asker::take_deferred`].
pub(super) struct Asker {
    inner: Arc<dyn Policy>,
    deferred: Cell<bool>,
}

impl Asker {
    pub(super) fn new(inner: Arc<dyn Policy>) -> Asker {
        Asker { inner, deferred: Cell::new(false) }
    }

    fn note<T>(&self, r: Result<T, PolicyError>) -> Result<T, PolicyError> {
        if matches!(&r, Err(e) if e.is_deferred()) {
            self.deferred.set(true);
        }
        r
    }

    /// Whether a call since the last `take_deferred` was deferred.
    pub(super) fn deferred(&self) -> bool {
        self.deferred.get()
    }

    /// Whether a call since the last look was deferred (and forget it).
    pub(super) fn take_deferred(&self) -> bool {
        self.deferred.replace(false)
    }

    pub(super) fn describe(&self) -> String {
        self.inner.describe()
    }
    pub(super) fn select_proposal(
        &self,
        ctx: &PeerContext,
        kind: SaKind,
        offered: &[Proposal],
        configured: &[Proposal],
    ) -> Result<ProposalChoice, PolicyError> {
        self.note(self.inner.select_proposal(ctx, kind, offered, configured))
    }
    pub(super) fn order_proposals(&self, ctx: &PeerContext, kind: SaKind, configured: &[Proposal]) -> Result<Vec<usize>, PolicyError> {
        self.note(self.inner.order_proposals(ctx, kind, configured))
    }
    pub(super) fn authorize(&self, ctx: &PeerContext, auth: &AuthInfo) -> Result<(), PolicyError> {
        self.note(self.inner.authorize(ctx, auth))
    }
    pub(super) fn narrow_selectors(&self, ctx: &PeerContext, request: &SelectorRequest) -> Result<SelectorPair, PolicyError> {
        self.note(self.inner.narrow_selectors(ctx, request))
    }
    pub(super) fn assign_address(&self, ctx: &PeerContext, request: &AddressRequest) -> Result<AddressChoice, PolicyError> {
        self.note(self.inner.assign_address(ctx, request))
    }
}

pub(super) enum Parked {
    Init { local: SocketAddr, remote: SocketAddr, spi_i: u64, bytes: Vec<u8> },
    Request { ike: IkeSaId, header: Header, payloads: Vec<Payload> },
    Response { ike: IkeSaId, msg_id: u32, payloads: Vec<Payload> },
}

impl Parked {
    fn same_as(&self, other: &Parked) -> bool {
        match (self, other) {
            (Parked::Init { remote: a, spi_i: x, .. }, Parked::Init { remote: b, spi_i: y, .. }) => a == b && x == y,
            (Parked::Request { ike: a, .. }, Parked::Request { ike: b, .. }) => a == b,
            (Parked::Response { ike: a, .. }, Parked::Response { ike: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// Work waiting for decisions.
#[derive(Default)]
pub(super) struct Deferrals {
    parked: VecDeque<(Duration, Parked)>,
    /// IKE SAs whose first queued task waits, since when.
    tasks: BTreeMap<IkeSaId, Duration>,
    /// New IKE SAs (ours) waiting to send IKE_SA_INIT, since when.
    inits: BTreeMap<IkeSaId, Duration>,
    /// A re-check after reload has questions out.
    recheck: bool,
    /// Parked messages dropped because [`MAX_PARKED`] were waiting.
    pub dropped: u64,
}

impl Engine {
    /// Answers the policy deferred are in: run again what waited for them.
    /// Calling it when nothing waits costs nothing.
    pub fn policy_ready(&mut self, now: Duration) {
        self.tick(now);
        self.policy.take_deferred();
        self.expire_deferred(now);
        let parked = std::mem::take(&mut self.deferrals.parked);
        for (_, p) in parked {
            match p {
                Parked::Init { local, remote, bytes, .. } => {
                    if let Ok(info) = Header::decode(&bytes) {
                        self.init_request(now, local, remote, &bytes, &info.header);
                    }
                }
                Parked::Request { ike, header, payloads } => {
                    let Ok(sa) = self.take(ike) else { continue };
                    if sa.peer_next_id != header.message_id || self.zombies.contains_key(&ike) {
                        self.put(sa);
                        continue;
                    }
                    let (local, remote) = (sa.local, sa.remote);
                    self.dispatch_request(now, local, remote, sa, &header, payloads);
                    self.settle_half_open(ike);
                }
                Parked::Response { ike, msg_id, payloads } => {
                    let Ok(sa) = self.take(ike) else { continue };
                    if sa.outstanding.as_ref().map(|o| o.msg_id) != Some(msg_id) || self.zombies.contains_key(&ike) {
                        self.put(sa);
                        continue;
                    }
                    let remote = sa.remote;
                    self.dispatch_response(now, sa, remote, payloads);
                }
            }
        }
        for id in std::mem::take(&mut self.deferrals.tasks).into_keys() {
            let Ok(mut sa) = self.take(id) else { continue };
            self.kick(now, &mut sa);
            self.put(sa);
        }
        for (id, since) in std::mem::take(&mut self.deferrals.inits) {
            let Ok(mut sa) = self.take(id) else { continue };
            match self.prepare_init(now, &mut sa) {
                Ok(true) => self.put(sa),
                Ok(false) => {
                    self.deferrals.inits.insert(id, since);
                    self.put(sa);
                }
                Err(e) => self.fail_waiting_init(sa, FailureReason::NotStarted { why: e.to_string() }),
            }
        }
        if std::mem::take(&mut self.deferrals.recheck) {
            let _ = self.recheck(now);
        }
    }

    /// Negotiations parked or requests held back, waiting for the policy.
    pub fn decisions_waiting(&self) -> usize {
        self.deferrals.parked.len() + self.deferrals.tasks.len() + self.deferrals.inits.len() + usize::from(self.deferrals.recheck)
    }

    /// IKE_SA_INIT requests parked (they count as half-open for cookies).
    pub(super) fn parked_inits(&self) -> usize {
        if self.deferrals.parked.is_empty() {
            return 0;
        }
        self.deferrals.parked.iter().filter(|(_, p)| matches!(p, Parked::Init { .. })).count()
    }

    /// Parked messages dropped so far because too many were waiting.
    pub fn parked_dropped(&self) -> u64 {
        self.deferrals.dropped
    }

    pub(super) fn deferral_deadline(&self) -> Option<Duration> {
        let p = self.deferrals.parked.front().map(|(at, _)| *at);
        let t = self.deferrals.tasks.values().min().copied();
        let i = self.deferrals.inits.values().min().copied();
        [p, t, i].into_iter().flatten().min().map(|at| at + PARK_TTL)
    }

    /// Give up on work that waited longer than [`PARK_TTL`].
    pub(super) fn expire_deferred(&mut self, now: Duration) {
        let late = |at: Duration| at + PARK_TTL <= now;
        while self.deferrals.parked.front().is_some_and(|(at, _)| late(*at)) {
            self.deferrals.parked.pop_front();
        }
        let tasks: Vec<IkeSaId> = self.deferrals.tasks.iter().filter(|(_, at)| late(**at)).map(|(id, _)| *id).collect();
        for id in tasks {
            self.deferrals.tasks.remove(&id);
            let Ok(mut sa) = self.take(id) else { continue };
            let task = sa.tasks.pop_front();
            let remote = sa.remote;
            let reason = FailureReason::PolicyTimeout {
                policy: self.policy.describe(),
                secs: PARK_TTL.as_secs(),
                dropped: Some(format!("{task:?}")),
            };
            self.failure(Some(&sa), remote, None, Side::Local, Exchange::CreateChildSa, reason, None);
            self.kick(now, &mut sa);
            self.put(sa);
        }
        let inits: Vec<IkeSaId> = self.deferrals.inits.iter().filter(|(_, at)| late(**at)).map(|(id, _)| *id).collect();
        for id in inits {
            self.deferrals.inits.remove(&id);
            let Ok(sa) = self.take(id) else { continue };
            let reason = FailureReason::PolicyTimeout { policy: self.policy.describe(), secs: PARK_TTL.as_secs(), dropped: None };
            self.fail_waiting_init(sa, reason);
        }
    }

    fn fail_waiting_init(&mut self, sa: IkeSa, reason: FailureReason) {
        let remote = sa.remote;
        self.failure(Some(&sa), remote, None, Side::Local, Exchange::IkeSaInit, reason.clone(), None);
        self.teardown(sa, DownReason::Failed(reason));
    }

    /// Park `p`; a retransmission of what is already parked takes its place
    /// (and keeps its age).
    fn park(&mut self, now: Duration, p: Parked) {
        if let Some(slot) = self.deferrals.parked.iter_mut().find(|(_, q)| q.same_as(&p)) {
            slot.1 = p;
            return;
        }
        if self.deferrals.parked.len() >= MAX_PARKED {
            self.deferrals.dropped += 1;
            return;
        }
        self.deferrals.parked.push_back((now, p));
    }

    /// Park an IKE_SA_INIT request (nothing was created for it).
    pub(super) fn park_init(&mut self, now: Duration, local: SocketAddr, remote: SocketAddr, bytes: &[u8], spi_i: u64) {
        self.park(now, Parked::Init { local, remote, spi_i, bytes: bytes.to_vec() });
    }

    /// Park a request of `sa`, which must be as it was before the request
    /// was dispatched (but for its expected message ID, restored here).
    pub(super) fn park_request(&mut self, now: Duration, mut sa: IkeSa, header: &Header, payloads: Vec<Payload>) {
        sa.peer_next_id = header.message_id;
        let ike = sa.id;
        self.put(sa);
        self.park(now, Parked::Request { ike, header: *header, payloads });
    }

    /// Park a response to our request `out`, which stays outstanding.
    pub(super) fn park_response(&mut self, now: Duration, mut sa: IkeSa, out: Outstanding, payloads: Vec<Payload>) {
        let (ike, msg_id) = (sa.id, out.msg_id);
        sa.outstanding = Some(Box::new(out));
        self.put(sa);
        self.park(now, Parked::Response { ike, msg_id, payloads });
    }

    /// The first task of `sa` waits for a decision.
    pub(super) fn task_waits(&mut self, now: Duration, sa: &IkeSa) {
        self.deferrals.tasks.entry(sa.id).or_insert(now);
    }

    /// `sa` (ours, `InitSent`) waits for a decision before its IKE_SA_INIT.
    pub(super) fn init_waits(&mut self, now: Duration, sa: &IkeSa) {
        debug_assert_eq!(sa.state, IkeState::InitSent);
        self.deferrals.inits.insert(sa.id, now);
    }

    /// A re-check after reload asks again once answers are in.
    pub(super) fn recheck_waits(&mut self) {
        self.deferrals.recheck = true;
    }
}
