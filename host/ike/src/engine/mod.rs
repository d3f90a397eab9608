//! The sans-IO IKEv2 engine (RFC 7296).
//!
//! # API (contract for the gateway and the interop tests)
//!
//! The engine owns no socket, no clock, no thread. The caller passes the current
//! time as a [`Duration`] since any fixed epoch (e.g. `Instant::now() - start`),
//! feeds received IKE datagrams in, and takes datagrams, timer deadlines and
//! events out. Randomness comes from a ChaCha20 generator seeded with the
//! 32 bytes given to [`Engine::new`] and reseeded for every new IKE SA, from
//! [`Engine::set_entropy`]'s source when given one (the gateway: the OS RNG;
//! fixed seeds without a source make tests reproducible). A daemon running
//! several engines shares [`Engine::set_admission`] (half-open caps, see
//! [`crate::admission`]) and [`Engine::set_spi_pool`] (our SPIs unique
//! daemon-wide) between them.
//!
//! ```text
//! let mut e = Engine::new(config, Arc::new(policy), seed)?;   // Config: crate::config
//! e.start(now);                          // initiates children with StartAction::Start
//! let ike = e.initiate(now, "conn")?;    // new IKE SA + its first Child SA
//! e.initiate_child(now, "conn", "net2")?; // extra Child SA (CREATE_CHILD_SA)
//! e.handle_datagram(now, local, remote, &bytes); // IKE bytes WITHOUT the non-ESP marker
//! e.handle_timeout(now);                 // when poll_timeout()'s deadline is reached
//! while let Some(t) = e.poll_transmit() { /* send t.bytes from t.local to t.remote;
//!                                            prepend 4 zero bytes if t.non_esp_marker */ }
//! while let Some(ev) = e.poll_event() { /* Event::ChildSaUp{..} → install keys, ... */ }
//! let deadline = e.poll_timeout();       // Option<Duration>: call handle_timeout then
//! e.rekey_child(now, ike, spi_in)?; e.rekey_ike(now, ike)?;
//! e.delete_child(now, ike, spi_in)?; e.delete_ike(now, ike)?; e.check_liveness(now, ike)?;
//! e.child_traffic(now, spi, bytes, packets); // data plane counters → byte/packet lifetimes
//! let s = e.status(now);                 // Vec<IkeSaStatus> with children, SPIs, algorithms
//! ```
//!
//! * Addresses: `local`/`remote` in [`Transmit`] and `handle_datagram` are the
//!   UDP endpoints as the gateway sees them. IKE starts on port 500; after NAT
//!   detection (or `force_encap`, or a peer that fakes NAT like strongSwan's
//!   kernel-libipsec) the engine moves to 4500 on both ends and sets
//!   `Transmit::non_esp_marker`. The gateway listens on both ports.
//! * Events: [`Event::IkeSaUp`] / [`Event::IkeSaDown`] (only after `IkeSaUp`),
//!   [`Event::ChildSaUp`] (keys, SPIs, selectors, mode, lifetimes, NAT state,
//!   outer addresses), [`Event::ChildSaRekeyed`] (install the new SA, send with
//!   it; the old one gets its own `ChildSaDown` when deleted),
//!   [`Event::ChildSaDown`], [`Event::IkeSaRekeyed`] (Child SAs moved to the new
//!   IKE SA; the old one's `IkeSaDown` has reason `Rekeyed` and does not affect
//!   Child SAs), [`Event::Failure`] (side, exchange, reason, notify).
//! * Keys in events are zeroized on drop and redacted in `Debug`.
//! * Policy: the [`wisp_policy_api::Policy`] given to `new` decides proposals,
//!   authorization and traffic selectors; [`crate::native_policy::ConfigPolicy`]
//!   accepts what the config allows.

mod authn;
mod convert;
mod rng;
mod sa;
mod shared;
pub(crate) mod suite;

mod child;
mod deferral;
mod eap;
mod info;
mod init;
mod reauth;
mod recovery;
mod revoke;
mod tally;
mod timers;
mod vip;

pub use deferral::{MAX_PARKED, PARK_TTL};
pub use revoke::Recheck;
pub use shared::SPI_LOG_MAX;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use wisp_policy_api::{DecisionTrigger, PeerContext, Policy, PolicyError, SaKind};

use crate::codec::{self, ExchangeType, Header, NotifyPayload, NotifyType, Payload};
use crate::config::{Config, ConfigError, Lifetimes};
use crate::event::*;

use rng::Drbg;
pub use rng::EntropySource;
use sa::*;
use shared::{EspSpis, IkeSpis, SharedState};

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The IKE message (without the non-ESP marker).
    pub bytes: Vec<u8>,
    /// Port 4500: prepend the 4-byte zero non-ESP marker (RFC 3948).
    pub non_esp_marker: bool,
}

/// Errors of the API calls (never of network input, which is handled silently
/// or reported as [`Event::Failure`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("unknown connection {0:?}")]
    UnknownConnection(String),
    #[error("connection {0:?} has no child {1:?}")]
    UnknownChild(String, String),
    #[error("connection {0:?} has no remote address to initiate to")]
    NoRemoteAddress(String),
    #[error("no IKE SA {0}")]
    UnknownIkeSa(IkeSaId),
    #[error("no Child SA with inbound SPI {0:08x}")]
    UnknownChildSa(u32),
    #[error("IKE SA {0} is not established")]
    NotEstablished(IkeSaId),
    #[error("policy refused: {0}")]
    Policy(String),
    /// A per-connection cap ([`crate::config::Caps`]) is reached.
    #[error("{0}")]
    Limit(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Name of a notify type for diagnostics.
pub fn notify_name(n: u16) -> String {
    match NotifyType(n).name() {
        Some(s) => s.to_string(),
        None => format!("NOTIFY_{n}"),
    }
}

const NONCE_LEN: usize = 32;
const MAX_INIT_RETRIES: u32 = 3;
const ZOMBIE_LINGER: Duration = Duration::from_secs(10);
const NATT_PORT: u16 = 4500;

/// See [`Engine::take_spi_changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpiChanges {
    /// Every IKE SPI of ours (SPI, whether we initiated its SA).
    All(Vec<(u64, bool)>),
    /// What changed since the last call, oldest first.
    Changed(Vec<SpiChange>),
}

/// One of our IKE SPIs came or went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpiChange {
    Added { spi: u64, we_initiated: bool },
    Removed(u64),
}

/// The IKEv2 engine. See the module documentation.
pub struct Engine {
    config: Config,
    policy: deferral::Asker,
    rng: Drbg,
    /// Boxed: an `IkeSa` is about 1 KiB, and a B-tree's half-full nodes of
    /// inline values would hold twice that per SA.
    sas: BTreeMap<IkeSaId, Box<IkeSa>>,
    /// Our IKE SPIs (the only ones datagrams are routed by).
    by_spi: IkeSpis,
    half_open_index: HashMap<(u64, SocketAddr), IkeSaId>,
    spis_in: EspSpis,
    next_id: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    cookie_secret: [u8; 32],
    /// Zombies: SAs that only answer retransmits until the deadline.
    zombies: HashMap<IkeSaId, Duration>,
    /// Daemon-wide admission, SPI pool and entropy (see `shared.rs`).
    shared: SharedState,
    /// Children the engine brings back by itself (see `recovery.rs`).
    recovery: recovery::Recovery,
    /// Some reauthentication is under way (`reauth.rs` looks only then).
    reauth_active: bool,
    /// Work waiting for deferred policy decisions (see `deferral.rs`).
    deferrals: deferral::Deferrals,
    /// The SAs' next deadlines (see `timers.rs`).
    timers: timers::Timers,
    /// IKE and Child SAs held per connection (see `tally.rs`).
    tally: tally::Tally,
    /// Wall-clock time (Unix seconds) for certificate validity, set by the
    /// caller ([`Engine::set_unix_time`]); the engine reads no clock.
    unix_time: u64,
    /// Virtual IP pools, daemon-wide ([`Engine::set_pools`]).
    pools: Arc<crate::pool::Pools>,
    /// EAP user secrets, daemon-wide ([`Engine::set_eap_users`]).
    eap_users: Arc<crate::eap::EapUsers>,
}

impl Engine {
    /// A new engine. `seed` seeds every random value the engine uses.
    pub fn new(config: Config, policy: Arc<dyn Policy>, seed: [u8; 32]) -> Result<Self, EngineError> {
        config.validate()?;
        let mut rng = Drbg::new(seed);
        let cookie_secret = rng.bytes();
        Ok(Engine {
            config,
            policy: deferral::Asker::new(policy),
            rng,
            sas: BTreeMap::new(),
            by_spi: IkeSpis::default(),
            half_open_index: HashMap::new(),
            spis_in: EspSpis::default(),
            next_id: 1,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            cookie_secret,
            zombies: HashMap::new(),
            shared: SharedState::default(),
            recovery: recovery::Recovery::default(),
            reauth_active: false,
            deferrals: deferral::Deferrals::default(),
            timers: timers::Timers::default(),
            tally: tally::Tally::default(),
            unix_time: 0,
            pools: Arc::new(crate::pool::Pools::default()),
            eap_users: Arc::new(crate::eap::EapUsers::default()),
        })
    }

    /// The wall-clock time (Unix seconds) certificates are checked against.
    /// The caller sets it (before it hands the engine datagrams, and as
    /// the clock moves); the engine reads no clock of its own.
    pub fn set_unix_time(&mut self, unix_seconds: u64) {
        self.unix_time = unix_seconds;
    }

    /// The daemon's virtual IP pools (shared by every engine, so leases are
    /// unique across connections). Connections name theirs in `pools`.
    pub fn set_pools(&mut self, pools: Arc<crate::pool::Pools>) {
        self.pools = pools;
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Initiate every connection that has children with `StartAction::Start`.
    pub fn start(&mut self, now: Duration) {
        let starts: Vec<(String, Vec<String>)> = self
            .config
            .connections
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.children.iter().filter(|ch| ch.start_action == crate::config::StartAction::Start).map(|ch| ch.name.clone()).collect(),
                )
            })
            .filter(|(_, v): &(String, Vec<String>)| !v.is_empty())
            .collect();
        self.tick(now);
        for (conn, children) in starts {
            for ch in children {
                self.managed_initiate(now, &conn, &ch, 1);
            }
        }
    }

    /// Replace the settings of connection `conn.name` (validated first). Live
    /// SAs stay: their rekeys, DPD and new children follow the new settings
    /// at once; credentials are checked again only by a reauthentication
    /// ([`Engine::reauth_ike`]), which the caller starts when they changed.
    pub fn update_connection(&mut self, conn: crate::config::ConnectionConfig) -> Result<(), EngineError> {
        conn.validate()?;
        let i = self.conn_index(&conn.name)?;
        self.config.connections[i] = conn;
        let ids: Vec<IkeSaId> = self.sas.keys().copied().collect();
        for id in ids {
            self.retime(id);
        }
        Ok(())
    }

    /// Start a new IKE SA for `conn`, negotiating its first child in IKE_AUTH.
    pub fn initiate(&mut self, now: Duration, conn: &str) -> Result<IkeSaId, EngineError> {
        let ci = self.conn_index(conn)?;
        let first = self.config.connections[ci].children.first().map(|c| c.name.clone());
        self.initiate_ike(now, ci, first)
    }

    /// Bring up child `child` of `conn`: inside an existing IKE SA of the
    /// connection (CREATE_CHILD_SA), or with a new IKE SA.
    pub fn initiate_child(&mut self, now: Duration, conn: &str, child: &str) -> Result<IkeSaId, EngineError> {
        self.tick(now);
        let ci = self.conn_index(conn)?;
        if self.config.connections[ci].child(child).is_none() {
            return Err(EngineError::UnknownChild(conn.into(), child.into()));
        }
        let existing = self
            .sas
            .values()
            .find(|s| {
                s.conn == ci
                    && s.candidates.is_empty()
                    && matches!(s.state, IkeState::Established | IkeState::InitSent | IkeState::AuthSent)
            })
            .map(|s| s.id);
        if let Some(id) = existing {
            let mut sa = self.take(id)?;
            sa.tasks.push_back(Task::CreateChild(child.to_string()));
            self.kick(now, &mut sa);
            self.put(sa);
            return Ok(id);
        }
        self.initiate_ike(now, ci, Some(child.to_string()))
    }

    /// Rekey the Child SA with inbound SPI `spi_in`.
    pub fn rekey_child(&mut self, now: Duration, ike: IkeSaId, spi_in: u32) -> Result<(), EngineError> {
        self.queue_task(now, ike, Task::RekeyChild(spi_in), Some(spi_in))
    }

    /// Rekey the IKE SA.
    pub fn rekey_ike(&mut self, now: Duration, ike: IkeSaId) -> Result<(), EngineError> {
        self.queue_task(now, ike, Task::RekeyIke, None)
    }

    /// The data plane received an authenticated, non-replayed ESP packet for
    /// a Child SA of `ike` from `remote`, which is not the SA's peer address.
    /// Following it is what RFC 7296 2.23 asks of a host that is not behind
    /// a NAT when its peer is: the IKE SA and its Child SAs move to `remote`
    /// ([`Event::PeerMoved`]). Refused (`Ok(false)`, nothing changes) when
    /// no NAT was detected in front of the peer or when we are behind one.
    pub fn peer_moved(&mut self, ike: IkeSaId, remote: SocketAddr) -> Result<bool, EngineError> {
        let mut sa = self.take(ike)?;
        let allowed = sa.state == IkeState::Established && sa.nat.remote_behind_nat && !sa.nat.local_behind_nat;
        let moved = allowed && sa.remote != remote;
        if moved {
            sa.remote = remote;
            self.events.push_back(peer_moved_event(&sa));
        }
        self.put(sa);
        Ok(moved)
    }

    /// Delete the Child SA with inbound SPI `spi_in` (INFORMATIONAL DELETE).
    pub fn delete_child(&mut self, now: Duration, ike: IkeSaId, spi_in: u32) -> Result<(), EngineError> {
        self.queue_task(now, ike, Task::DeleteChild(spi_in), Some(spi_in))
    }

    /// Delete the IKE SA and all its Child SAs.
    pub fn delete_ike(&mut self, now: Duration, ike: IkeSaId) -> Result<(), EngineError> {
        let mut sa = self.take(ike)?;
        if sa.keys.is_none() || sa.state == IkeState::InitResponded {
            // Nothing to tell the peer yet.
            sa.state = IkeState::Deleting;
            self.teardown(sa, DownReason::LocalDelete);
            return Ok(());
        }
        sa.tasks.retain(|t| *t == Task::DeleteIke);
        if sa.tasks.is_empty() {
            sa.tasks.push_front(Task::DeleteIke);
        }
        // An outstanding request would block the window for its retransmissions;
        // a DELETE supersedes it.
        if let Some(o) = &sa.outstanding {
            if !matches!(o.pending, Pending::DeleteIke) {
                sa.outstanding = None;
            }
        }
        self.kick(now, &mut sa);
        self.put(sa);
        Ok(())
    }

    /// Send an empty INFORMATIONAL (liveness check) now.
    pub fn check_liveness(&mut self, now: Duration, ike: IkeSaId) -> Result<(), EngineError> {
        self.queue_task(now, ike, Task::Dpd, None)
    }

    /// Data-plane counters for a Child SA (inbound or outbound SPI): adds to its
    /// byte/packet totals and triggers soft (rekey) / hard (delete) limits.
    pub fn child_traffic(&mut self, now: Duration, spi: u32, bytes: u64, packets: u64) {
        // Our inbound SPI first: it is unique, the peer's choice is not.
        let by_in = self.sas.values().find(|s| s.children.iter().any(|c| c.spi_in == spi)).map(|s| (s.id, true));
        let found = by_in.or_else(|| self.sas.values().find(|s| s.children.iter().any(|c| c.spi_out == spi)).map(|s| (s.id, false)));
        let Some((id, inbound)) = found else { return };
        let Ok(mut sa) = self.take(id) else { return };
        if let Some(i) = sa.children.iter().position(|c| if inbound { c.spi_in == spi } else { c.spi_out == spi }) {
            let c = &mut sa.children[i];
            c.bytes = c.bytes.saturating_add(bytes);
            c.packets = c.packets.saturating_add(packets);
            let lt = &c.lifetimes;
            let hard = lt.hard_bytes.is_some_and(|l| c.bytes >= l) || lt.hard_packets.is_some_and(|l| c.packets >= l);
            let soft = lt.soft_bytes.is_some_and(|l| c.bytes >= l) || lt.soft_packets.is_some_and(|l| c.packets >= l);
            let spi_in = c.spi_in;
            if hard && c.state != ChildState::Deleting {
                c.hard_at = Some(now);
            } else if soft && !c.soft_traffic_fired && c.state == ChildState::Installed {
                c.soft_traffic_fired = true;
                sa.tasks.push_back(Task::RekeyChild(spi_in));
            }
        }
        self.kick(now, &mut sa);
        self.run_timers(now, &mut sa);
        self.put(sa);
    }

    /// Next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        let ev = self.events.pop_front()?;
        let ev = self.reauth_translate(ev);
        self.observe(&ev);
        self.reauth_progress();
        Some(ev)
    }

    /// When [`Engine::handle_timeout`] must be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        let mut best: Option<Duration> = None;
        let mut consider = |t: Option<Duration>| {
            if let Some(t) = t {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        consider(self.timers.first());
        if !self.sas.is_empty() {
            consider(Some(self.timers.next_sweep));
        }
        for z in self.zombies.values() {
            consider(Some(*z));
        }
        consider(self.recovery_deadline());
        consider(self.deferral_deadline());
        // The index may be early (an SA's deadline moved out), never late.
        #[cfg(debug_assertions)]
        if let Some(truth) = self.sas.values().filter_map(|sa| self.sa_deadline(sa)).min() {
            debug_assert!(best.is_some_and(|b| b <= truth), "timer index late: {best:?} > {truth:?}");
        }
        // The per-connection counts mirror the table exactly.
        #[cfg(debug_assertions)]
        {
            let mut truth = tally::Tally::default();
            truth.rebuild(self.sas.values().map(|s| (&**s, self.zombies.contains_key(&s.id))));
            for ci in 0..self.config.connections.len() {
                debug_assert_eq!(
                    (self.tally.ike(ci), self.tally.children(ci)),
                    (truth.ike(ci), truth.children(ci)),
                    "tally of connection {ci}"
                );
            }
        }
        best
    }

    /// Run due timers: retransmissions, give-ups, lifetimes, DPD, half-open expiry.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.tick(now);
        let zombies: Vec<IkeSaId> = self.zombies.iter().filter(|(_, t)| **t <= now).map(|(i, _)| *i).collect();
        for id in zombies {
            self.zombies.remove(&id);
            self.tally.drop_share(id);
            if let Some(sa) = self.sas.remove(&id) {
                self.forget(&sa);
            }
        }
        let ids: Vec<IkeSaId> = if now >= self.timers.next_sweep {
            self.timers.next_sweep = now + timers::SWEEP;
            self.tally.rebuild(self.sas.values().map(|s| (&**s, self.zombies.contains_key(&s.id))));
            self.sas.keys().copied().collect()
        } else {
            self.timers.due(now)
        };
        let mut ran = Vec::new();
        for id in ids {
            if self.zombies.contains_key(&id) {
                continue;
            }
            let Some(due) = self.sas.get(&id).and_then(|sa| self.sa_deadline(sa)) else {
                self.timers.set(id, None);
                continue;
            };
            if due > now {
                self.timers.set(id, Some(due));
                continue;
            }
            let Ok(mut sa) = self.take(id) else { continue };
            if self.run_timers(now, &mut sa) {
                self.put(sa);
                ran.push(id);
            }
        }
        self.recovery_timeout(now);
        // A due reauthentication makes its SA due: it is among those that ran.
        self.reauth_timeout(now, &ran);
        self.expire_deferred(now);
    }

    /// True when no request of ours is outstanding or queued on any IKE SA
    /// (e.g. to know that DELETEs went out before shutting down).
    pub fn is_idle(&self) -> bool {
        self.sas.values().all(|s| s.outstanding.is_none() && (s.tasks.is_empty() || s.state != IkeState::Established))
    }

    /// Number of half-open (responder, IKE_AUTH pending) IKE SAs.
    pub fn half_open_count(&self) -> usize {
        self.sas.values().filter(|s| s.state == IkeState::InitResponded).count()
    }

    /// Changes whenever one of our IKE SPIs comes or goes (a caller routing
    /// datagrams by [`Engine::local_spis`] refreshes its table then).
    pub fn spi_generation(&self) -> u64 {
        self.by_spi.generation
    }

    /// Our IKE SPI of every IKE SA (zombies included: they still answer),
    /// and whether we initiated it (then it is the SPIi, else the SPIr).
    pub fn local_spis(&self) -> Vec<(u64, bool)> {
        self.sas.values().map(|s| (s.local_spi(), s.initiator)).filter(|(s, _)| *s != 0).collect()
    }

    /// How our IKE SPIs changed since the last call, for a caller that
    /// routes datagrams by them: the first call (and one after more than
    /// [`SPI_LOG_MAX`] changes piled up) returns the whole set as
    /// [`Engine::local_spis`] does, later calls what came and went, in
    /// order. O(changes), where `local_spis` is O(SAs).
    pub fn take_spi_changes(&mut self) -> SpiChanges {
        let Some(log) = self.by_spi.log.replace(Vec::new()) else {
            return SpiChanges::All(self.local_spis());
        };
        let changes = log
            .into_iter()
            .filter_map(|(spi, id)| match id {
                // An SA that has gone again by now has its removal later in the log.
                Some(id) => self.sas.get(&id).map(|s| SpiChange::Added { spi, we_initiated: s.initiator }),
                None => Some(SpiChange::Removed(spi)),
            })
            .collect();
        SpiChanges::Changed(changes)
    }

    /// Number of IKE SAs held (lingering ones included), in O(1).
    pub fn ike_sa_count(&self) -> usize {
        self.sas.len()
    }

    /// Handles of all live IKE SAs.
    pub fn ike_sas(&self) -> Vec<IkeSaId> {
        self.sas.keys().filter(|k| !self.zombies.contains_key(k)).copied().collect()
    }

    /// Whether any live IKE SA is established (no snapshot built).
    pub fn any_established(&self) -> bool {
        self.sas.values().any(|s| s.state == IkeState::Established && !self.zombies.contains_key(&s.id))
    }

    /// Whether an established IKE SA carries an installed Child SA of
    /// template `child` (no snapshot built).
    pub fn child_installed(&self, child: &str) -> bool {
        self.sas.values().any(|s| {
            s.state == IkeState::Established
                && !self.zombies.contains_key(&s.id)
                && s.children.iter().any(|c| c.name == child && c.state == ChildState::Installed)
        })
    }

    /// The authenticated peer of each live IKE SA with its number of Child
    /// SAs, without building a snapshot (for live-SA counts).
    pub fn peers(&self) -> impl Iterator<Item = (&wisp_policy_api::Identity, usize)> + '_ {
        self.sas
            .values()
            .filter(|s| !self.zombies.contains_key(&s.id))
            .filter_map(|s| s.remote_id.as_ref().map(|id| (id, s.children.len())))
    }

    /// Snapshot of all IKE SAs and their Child SAs: O(SAs) with an
    /// allocation or two per SA; for `status` requests, not per event.
    pub fn status(&self, now: Duration) -> Vec<IkeSaStatus> {
        self.sas
            .values()
            .filter(|s| !self.zombies.contains_key(&s.id))
            .map(|s| {
                let conn = &self.config.connections[s.conn];
                IkeSaStatus {
                    ike: s.id,
                    connection: conn.name.clone(),
                    state: s.state,
                    initiator: s.initiator,
                    spi_i: s.spi_i,
                    spi_r: s.spi_r,
                    local: s.local,
                    remote: s.remote,
                    local_id: conn.local_id.clone(),
                    remote_id: s.remote_id.clone(),
                    algorithms: s.algorithms(),
                    nat: s.nat,
                    established_for: s.established_at.map(|t| now.saturating_sub(t)).unwrap_or_default(),
                    rekey_in: s.soft_at.map(|t| t.saturating_sub(now)),
                    expire_in: s.hard_at.map(|t| t.saturating_sub(now)),
                    peer_auth: s.peer_auth(),
                    vips: s.virtual_ips(),
                    children: s
                        .children
                        .iter()
                        .map(|c| ChildSaStatus {
                            name: c.name.clone(),
                            spi_in: c.spi_in,
                            spi_out: c.spi_out,
                            mode: c.mode,
                            algorithms: c.algs,
                            local_ts: c.local_ts.clone(),
                            remote_ts: c.remote_ts.clone(),
                            state: c.state,
                            established_for: now.saturating_sub(c.created),
                            rekey_in: c.soft_at.map(|t| t.saturating_sub(now)),
                            expire_in: c.hard_at.map(|t| t.saturating_sub(now)),
                            bytes: c.bytes,
                            packets: c.packets,
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// Process one received IKE datagram (without non-ESP marker).
    pub fn handle_datagram(&mut self, now: Duration, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) {
        self.tick(now);
        let info = match Header::decode(bytes) {
            Ok(i) => i,
            Err(_) => return,
        };
        let h = info.header;
        if h.exchange == ExchangeType::IKE_SA_INIT && !h.flags.response() && h.spi_r == 0 {
            if h.flags.initiator() {
                self.init_request(now, local, remote, bytes, &h);
            }
            return;
        }
        let our_spi = if h.flags.initiator() { h.spi_r } else { h.spi_i };
        let Some(&id) = self.by_spi.get(&our_spi) else { return };
        let Ok(sa) = self.take(id) else { return };
        // The I flag names the original initiator: it must be the peer's role.
        let peer_is_orig_initiator = h.flags.initiator();
        let consistent = peer_is_orig_initiator != sa.initiator
            && (if sa.initiator { sa.spi_r == 0 || h.spi_r == sa.spi_r } else { h.spi_i == sa.spi_i });
        if !consistent {
            self.put(sa);
            return;
        }
        if self.zombies.contains_key(&id) {
            // Only answer retransmissions.
            if !h.flags.response() {
                if let Some((mid, resp)) = &sa.last_resp {
                    if *mid == h.message_id && first_fragment_or_whole(bytes) {
                        self.resend(&sa, resp.clone());
                    }
                }
            }
            self.put(sa);
            return;
        }
        if h.flags.response() {
            self.handle_response(now, local, remote, bytes, sa, &h);
        } else {
            self.handle_request(now, local, remote, bytes, sa, &h);
        }
        self.settle_half_open(id);
    }

    // ----- internals -------------------------------------------------------

    fn conn_index(&self, conn: &str) -> Result<usize, EngineError> {
        self.config.connections.iter().position(|c| c.name == conn).ok_or_else(|| EngineError::UnknownConnection(conn.into()))
    }

    fn queue_task(&mut self, now: Duration, ike: IkeSaId, task: Task, spi_in: Option<u32>) -> Result<(), EngineError> {
        let mut sa = self.take(ike)?;
        if sa.state != IkeState::Established {
            let st = sa.state;
            self.put(sa);
            return Err(if st == IkeState::InitSent || st == IkeState::AuthSent {
                EngineError::NotEstablished(ike)
            } else {
                EngineError::UnknownIkeSa(ike)
            });
        }
        if let Some(spi) = spi_in {
            if sa.child_idx(spi).is_none() {
                self.put(sa);
                return Err(EngineError::UnknownChildSa(spi));
            }
        }
        if !sa.tasks.contains(&task) {
            sa.tasks.push_back(task);
        }
        self.kick(now, &mut sa);
        self.put(sa);
        Ok(())
    }

    fn take(&mut self, id: IkeSaId) -> Result<IkeSa, EngineError> {
        self.timers.set(id, None);
        self.tally.drop_share(id);
        self.sas.remove(&id).map(|b| *b).ok_or(EngineError::UnknownIkeSa(id))
    }

    fn put(&mut self, sa: IkeSa) {
        let due = self.sa_deadline(&sa);
        self.timers.set(sa.id, due);
        self.tally.set(&sa, self.zombies.contains_key(&sa.id));
        self.sas.insert(sa.id, Box::new(sa));
    }

    fn new_id(&mut self) -> IkeSaId {
        let id = IkeSaId(self.next_id);
        self.next_id += 1;
        id
    }

    /// A new IKE SPI of ours, i.e. a new IKE SA: the generator is reseeded
    /// first (fresh entropy per IKE SA), and the SPI is unique daemon-wide
    /// when the engine shares an SPI pool.
    fn alloc_ike_spi(&mut self) -> u64 {
        self.reseed();
        loop {
            let s = self.rng.u64();
            if s != 0 && self.by_spi.is_free(s) {
                return s;
            }
        }
    }

    fn alloc_esp_spi(&mut self) -> u32 {
        loop {
            let s = self.rng.u32();
            if s >= 0x100 && self.spis_in.insert(s) {
                return s;
            }
        }
    }

    fn nonce(&mut self) -> Vec<u8> {
        self.rng.vec(NONCE_LEN)
    }

    fn jittered(&mut self, now: Duration, lt: &Lifetimes) -> (Option<Duration>, Option<Duration>) {
        let soft = lt.soft_time.map(|s| {
            let j = self.rng.below_ms(lt.jitter.as_millis().min(u64::MAX as u128) as u64);
            now + s.saturating_sub(Duration::from_millis(j))
        });
        (soft, lt.hard_time.map(|h| now + h))
    }

    fn ctx(&self, sa: &IkeSa, conn: usize, local_is_initiator: bool) -> PeerContext {
        PeerContext {
            connection: self.config.connections[conn].name.clone(),
            remote_address: sa.remote.ip(),
            remote_port: sa.remote.port(),
            local_address: sa.local.ip(),
            local_port: sa.local.port(),
            nat_detected: sa.nat.local_behind_nat || sa.nat.remote_behind_nat,
            local_is_initiator,
            peer_identity: sa.remote_id.clone(),
            trigger: DecisionTrigger::Initial,
        }
    }

    /// Proposal order from the policy, validated.
    fn ordered(&self, ctx: &PeerContext, kind: SaKind, configured: &[wisp_policy_api::Proposal]) -> Result<Vec<usize>, String> {
        let order = self.policy.order_proposals(ctx, kind, configured).map_err(|e| policy_reason(&e))?;
        let mut seen = HashSet::new();
        let order: Vec<usize> = order.into_iter().filter(|i| *i < configured.len() && seen.insert(*i)).collect();
        if order.is_empty() {
            return Err(format!("policy {} offers no proposal", self.policy.describe()));
        }
        Ok(order.into_iter().take(255).collect())
    }

    fn transmit_for(&self, sa: &IkeSa, bytes: Vec<u8>) -> Transmit {
        Transmit { local: sa.local, remote: sa.remote, bytes, non_esp_marker: sa.natt }
    }

    /// Queue every datagram of a message.
    fn resend(&mut self, sa: &IkeSa, datagrams: Datagrams) {
        for bytes in datagrams {
            let t = self.transmit_for(sa, bytes);
            self.transmits.push_back(t);
        }
    }

    /// The largest encrypted IKE message (without the non-ESP marker) that
    /// goes in one datagram to `sa`'s peer; `None` when fragmentation was
    /// not negotiated (then everything goes whole).
    fn fragment_limit(&self, sa: &IkeSa) -> Option<usize> {
        let conn = &self.config.connections[sa.conn];
        if !sa.fragmentation || conn.fragmentation != crate::config::Fragmentation::Yes {
            return None;
        }
        let v4 = sa.remote.is_ipv4();
        let size = match conn.fragment_size {
            0 if v4 => 576,
            0 => 1280,
            n => n,
        };
        let headers = if v4 { 20 } else { 40 } + 8 + if sa.natt { 4 } else { 0 };
        Some(size.saturating_sub(headers))
    }

    /// Encrypt a message for `sa`'s peer: one datagram, or SKF fragments
    /// (RFC 7383 2.5) when it would not fit in `fragment_size`.
    fn seal(&self, sa: &mut IkeSa, h: &Header, payloads: &[Payload]) -> Option<Datagrams> {
        let limit = self.fragment_limit(sa);
        let initiator = sa.initiator;
        let keys = sa.keys.as_mut()?;
        let whole = suite::seal_message(h, payloads, keys, initiator)?;
        match limit {
            Some(max) if whole.len() > max => suite::seal_fragments(h, payloads, keys, initiator, max),
            _ => Some(vec![whole]),
        }
    }

    fn header(&self, sa: &IkeSa, exchange: ExchangeType, response: bool, msg_id: u32) -> Header {
        Header::new(sa.spi_i, sa.spi_r, exchange, suite::flags(sa.initiator, response), msg_id)
    }

    /// Encrypt and send a request; it becomes the outstanding one.
    fn send_request(&mut self, now: Duration, sa: &mut IkeSa, exchange: ExchangeType, payloads: Vec<Payload>, pending: Pending) {
        let msg_id = sa.next_msg_id;
        let h = self.header(sa, exchange, false, msg_id);
        let Some(bytes) = self.seal(sa, &h, &payloads) else { return };
        sa.next_msg_id = sa.next_msg_id.wrapping_add(1);
        let timeout = self.config.connections[sa.conn].retransmit.timeout;
        sa.outstanding = Some(Box::new(Outstanding { msg_id, bytes: bytes.clone(), sends: 1, next_at: now + timeout, pending }));
        self.resend(sa, bytes);
    }

    /// Encrypt and send a response to request `msg_id`, caching it for retransmits.
    fn send_response(&mut self, sa: &mut IkeSa, exchange: ExchangeType, msg_id: u32, payloads: Vec<Payload>) {
        let h = self.header(sa, exchange, true, msg_id);
        let Some(bytes) = self.seal(sa, &h, &payloads) else { return };
        sa.last_resp = Some((msg_id, bytes.clone()));
        self.resend(sa, bytes);
    }

    /// Child `c`, removed from `sa`, goes down: forget its inbound SPI and
    /// report it.
    fn child_gone(&mut self, sa: &IkeSa, c: Child, reason: DownReason) {
        self.spis_in.remove(&c.spi_in);
        self.events.push_back(Event::ChildSaDown {
            ike: sa.id,
            connection: self.config.connections[sa.conn].name.clone(),
            name: c.name,
            spi_in: c.spi_in,
            spi_out: c.spi_out,
            reason,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn failure(
        &mut self,
        sa: Option<&IkeSa>,
        remote: SocketAddr,
        conn: Option<usize>,
        side: Side,
        exchange: Exchange,
        reason: FailureReason,
        notify: Option<NotifyType>,
    ) {
        self.events.push_back(Event::Failure(Failure {
            ike: sa.map(|s| s.id),
            connection: conn.or(sa.map(|s| s.conn)).map(|c| self.config.connections[c].name.clone()),
            side,
            exchange,
            reason,
            notify: notify.map(|n| n.0),
            remote,
        }));
    }

    /// Remove an SA: Child SA downs, IKE SA down (if it was reported up).
    fn teardown(&mut self, mut sa: IkeSa, reason: DownReason) {
        let children = std::mem::take(&mut sa.children);
        for c in children {
            if sa.up_reported {
                self.child_gone(&sa, c, reason.clone());
            } else {
                self.spis_in.remove(&c.spi_in);
            }
        }
        if sa.up_reported {
            self.events.push_back(Event::IkeSaDown { ike: sa.id, connection: self.config.connections[sa.conn].name.clone(), reason });
            sa.up_reported = false;
        }
        self.release_vips(&mut sa);
        self.forget(&sa);
    }

    /// Tear an SA down but keep a skeleton answering retransmissions of the
    /// last request for a while (the peer may not have our final response).
    fn linger(&mut self, now: Duration, sa: IkeSa, reason: DownReason) {
        let mut z = self.skeleton(sa.id, sa.spi_i, sa.spi_r);
        z.initiator = sa.initiator;
        z.local = sa.local;
        z.remote = sa.remote;
        z.natt = sa.natt;
        z.conn = sa.conn;
        z.last_resp = sa.last_resp.clone();
        z.peer_next_id = sa.peer_next_id;
        let id = sa.id;
        let local_spi = sa.local_spi();
        self.teardown(sa, reason);
        if z.last_resp.is_some() {
            self.by_spi.insert(local_spi, id);
            // Not indexed: a zombie has no deadline of its own.
            self.zombies.insert(id, now + ZOMBIE_LINGER);
            self.sas.insert(id, Box::new(z));
        }
    }

    fn forget(&mut self, sa: &IkeSa) {
        self.forget_half_open(sa.id);
        if self.by_spi.get(&sa.local_spi()) == Some(&sa.id) {
            self.by_spi.remove(&sa.local_spi());
        }
        if !sa.initiator {
            let key = (sa.spi_i, sa.remote);
            if self.half_open_index.get(&key) == Some(&sa.id) {
                self.half_open_index.remove(&key);
            }
        }
        for c in &sa.children {
            self.spis_in.remove(&c.spi_in);
        }
        if let Some(n) = &sa.first_child {
            self.spis_in.remove(&n.spi_in);
        }
        self.zombies.remove(&sa.id);
    }

    fn kick(&mut self, now: Duration, sa: &mut IkeSa) {
        if sa.state == IkeState::Rekeyed && sa.rekeyed_at.is_none() {
            sa.rekeyed_at = Some(now);
        }
        while sa.outstanding.is_none() {
            let ok_state = sa.state == IkeState::Established
                || (sa.state == IkeState::Rekeyed
                    && matches!(sa.tasks.front(), Some(Task::DeleteIke) | Some(Task::DeleteChild(_)) | Some(Task::DeleteRemoved(_))));
            if !ok_state {
                return;
            }
            let Some(task) = sa.tasks.pop_front() else { return };
            if !self.start_task(now, sa, task) {
                return;
            }
        }
    }

    fn sa_deadline(&self, sa: &IkeSa) -> Option<Duration> {
        let mut best: Option<Duration> = None;
        let mut consider = |t: Option<Duration>| {
            if let Some(t) = t {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        if self.zombies.contains_key(&sa.id) {
            return None;
        }
        consider(sa.outstanding.as_ref().map(|o| o.next_at));
        match sa.state {
            IkeState::InitResponded => consider(Some(sa.created + self.config.half_open_timeout)),
            IkeState::Established => {
                consider(sa.soft_at);
                consider(sa.hard_at);
                if sa.reauth_by.is_none() {
                    consider(sa.reauth_at);
                }
                if sa.outstanding.is_none() {
                    if let Some(d) = self.config.connections[sa.conn].dpd_interval {
                        consider(Some(sa.last_recv + d));
                    }
                }
                for c in &sa.children {
                    consider(c.soft_at);
                    consider(c.hard_at);
                }
            }
            IkeState::Rekeyed => consider(sa.rekeyed_at.map(|t| t + self.config.rekeyed_grace)),
            _ => {}
        }
        best
    }

    /// Returns false if the SA is gone.
    fn run_timers(&mut self, now: Duration, sa: &mut IkeSa) -> bool {
        if let Some(o) = &mut sa.outstanding {
            if o.next_at <= now {
                let rt = self.config.connections[sa.conn].retransmit.clone();
                if o.sends >= rt.tries {
                    let exchange = o.pending.exchange();
                    let sends = o.sends;
                    let was_delete = matches!(o.pending, Pending::DeleteIke);
                    sa.outstanding = None;
                    let taken = std::mem::replace(sa, self.skeleton(sa.id, 0, 0));
                    if !was_delete {
                        self.failure(
                            Some(&taken),
                            taken.remote,
                            None,
                            Side::Remote,
                            exchange,
                            FailureReason::NoResponse { peer: taken.remote, sends, exchange },
                            None,
                        );
                    }
                    let reason = match (taken.delete_reason.as_deref(), was_delete) {
                        (Some(r @ (DownReason::Revoked(_) | DownReason::Expired | DownReason::Rekeyed)), true) => r.clone(),
                        (_, true) => DownReason::LocalDelete,
                        (_, false) => DownReason::Timeout,
                    };
                    self.teardown(taken, reason);
                    return false;
                }
                let wait = rt.timeout.mul_f64(rt.backoff.powi(o.sends as i32));
                o.sends += 1;
                o.next_at = now + wait;
                let bytes = o.bytes.clone();
                self.resend(sa, bytes);
            }
        }
        match sa.state {
            IkeState::InitResponded if sa.created + self.config.half_open_timeout <= now => {
                let taken = std::mem::replace(sa, self.skeleton(sa.id, 0, 0));
                self.teardown(taken, DownReason::Timeout);
                return false;
            }
            IkeState::Rekeyed if self.rekeyed_expired(now, sa) => {
                let taken = std::mem::replace(sa, self.skeleton(sa.id, 0, 0));
                self.teardown(taken, DownReason::Rekeyed);
                return false;
            }
            IkeState::Established => {
                if sa.hard_at.is_some_and(|t| t <= now) {
                    sa.hard_at = None;
                    sa.soft_at = None;
                    sa.tasks.clear();
                    sa.outstanding = None;
                    sa.delete_reason = Some(Box::new(DownReason::Expired));
                    sa.tasks.push_back(Task::DeleteIke);
                } else if sa.soft_at.is_some_and(|t| t <= now) {
                    sa.soft_at = None;
                    if !sa.tasks.contains(&Task::RekeyIke) {
                        sa.tasks.push_back(Task::RekeyIke);
                    }
                }
                for i in 0..sa.children.len() {
                    let c = &mut sa.children[i];
                    if c.hard_at.is_some_and(|t| t <= now) {
                        c.hard_at = None;
                        c.soft_at = None;
                        c.expired = true;
                        let t = Task::DeleteChild(c.spi_in);
                        if !sa.tasks.contains(&t) {
                            sa.tasks.push_front(t);
                        }
                    } else if c.soft_at.is_some_and(|t| t <= now) {
                        c.soft_at = None;
                        let t = Task::RekeyChild(c.spi_in);
                        if c.state == ChildState::Installed && !sa.tasks.contains(&t) {
                            sa.tasks.push_back(t);
                        }
                    }
                }
                if sa.outstanding.is_none() && sa.tasks.is_empty() {
                    if let Some(d) = self.config.connections[sa.conn].dpd_interval {
                        if sa.last_recv + d <= now {
                            sa.tasks.push_back(Task::Dpd);
                        }
                    }
                }
            }
            _ => {}
        }
        self.kick(now, sa);
        true
    }

    /// An empty SA used as a placeholder / zombie.
    fn skeleton(&self, id: IkeSaId, spi_i: u64, spi_r: u64) -> IkeSa {
        let any: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 0));
        IkeSa {
            id,
            conn: 0,
            candidates: Vec::new(),
            initiator: false,
            spi_i,
            spi_r,
            local: any,
            remote: any,
            natt: false,
            state: IkeState::Deleting,
            created: Duration::ZERO,
            established_at: None,
            ni: Vec::new(),
            nr: Vec::new(),
            dh: None,
            group: 0,
            offered: Vec::new(),
            cookie: None,
            init_retries: 0,
            init_req: Vec::new(),
            init_resp: Vec::new(),
            suite: None,
            keys: None,
            nat: NatState::default(),
            fragmentation: false,
            remote_id: None,
            auth: None,
            next_msg_id: 0,
            outstanding: None,
            tasks: VecDeque::new(),
            peer_next_id: 0,
            last_resp: None,
            children: Vec::new(),
            soft_at: None,
            hard_at: None,
            last_recv: Duration::ZERO,
            first_child: None,
            first_child_name: None,
            up_reported: false,
            rekey_theirs: None,
            replaces: None,
            reasm: None,
            delete_reason: None,
            rekeyed_at: None,
            reauth_at: None,
            reauth_of: None,
            reauth_by: None,
            hints: None,
            auth_scheme: None,
            vip: None,
            eap: None,
            eap_identity: None,
        }
    }

    /// Decode an SK (or last SKF fragment) message of `sa` and open it.
    /// `None`: nothing to act on (no keys yet, undecodable, or fragments
    /// still missing); otherwise the payloads or why they could not be opened.
    fn open_protected(&mut self, sa: &mut IkeSa, bytes: &[u8]) -> Option<Result<Vec<Payload>, suite::OpenError>> {
        sa.keys.as_ref()?;
        let msg = codec::Message::decode(bytes).ok()?;
        if matches!(msg.payloads.last(), Some(Payload::Skf(_))) {
            return self.reassemble(sa, bytes, &msg).map(Ok);
        }
        Some(suite::open_message(bytes, &msg, sa.keys.as_ref()?))
    }

    fn handle_request(&mut self, now: Duration, local: SocketAddr, remote: SocketAddr, bytes: &[u8], mut sa: IkeSa, h: &Header) {
        // Retransmitted request: resend the cached response.
        if let Some((mid, resp)) = &sa.last_resp {
            if *mid == h.message_id && h.message_id.wrapping_add(1) == sa.peer_next_id {
                // A fragmented request's retransmission is answered once,
                // on its fragment 1 (RFC 7383 2.6.1).
                if first_fragment_or_whole(bytes) {
                    self.resend(&sa, resp.clone());
                }
                self.put(sa);
                return;
            }
        }
        if h.message_id != sa.peer_next_id || sa.keys.is_none() {
            self.put(sa);
            return;
        }
        let Some(opened) = self.open_protected(&mut sa, bytes) else {
            self.put(sa);
            return;
        };
        let payloads = match opened {
            Ok(p) => p,
            Err(suite::OpenError::Integrity) => {
                self.put(sa);
                return;
            }
            Err(suite::OpenError::Inner(e)) => {
                // Authenticated but malformed: answer with the notify (RFC 7296 2.21).
                sa.peer_next_id = sa.peer_next_id.wrapping_add(1);
                let n = NotifyPayload {
                    protocol: codec::ProtocolId::NONE,
                    spi: Vec::new(),
                    notify_type: e.notify_type(),
                    data: e.notify_data(),
                };
                self.send_response(&mut sa, h.exchange, h.message_id, vec![Payload::Notify(n)]);
                let ex = Exchange::from_raw(h.exchange.0).unwrap_or(Exchange::Informational);
                self.failure(
                    Some(&sa),
                    remote,
                    None,
                    Side::Remote,
                    ex,
                    FailureReason::Malformed(Malformed::Request { exchange: ex, error: e.to_string() }),
                    Some(e.notify_type()),
                );
                if h.exchange == ExchangeType::IKE_AUTH {
                    self.linger(now, sa, DownReason::Failed(FailureReason::Malformed(Malformed::AuthRequestDown { error: e.to_string() })));
                } else {
                    self.put(sa);
                }
                return;
            }
        };
        self.dispatch_request(now, local, remote, sa, h, payloads);
    }

    /// Act on an opened request (also a parked one, again).
    fn dispatch_request(
        &mut self,
        now: Duration,
        local: SocketAddr,
        remote: SocketAddr,
        mut sa: IkeSa,
        h: &Header,
        payloads: Vec<Payload>,
    ) {
        self.policy.take_deferred();
        sa.peer_next_id = sa.peer_next_id.wrapping_add(1);
        sa.last_recv = now;
        if sa.natt || sa.nat.remote_behind_nat || remote.port() == NATT_PORT || local.port() == NATT_PORT {
            // Follow the peer's NAT mapping; a request on 4500 means it floated.
            if local.port() == NATT_PORT {
                sa.natt = true;
            }
            let moved = sa.remote != remote && sa.state == IkeState::Established;
            sa.remote = remote;
            sa.local = local;
            if moved {
                self.events.push_back(peer_moved_event(&sa));
            }
        }
        match h.exchange {
            ExchangeType::IKE_AUTH if sa.state == IkeState::InitResponded => self.responder_auth(now, sa, h, payloads),
            ExchangeType::INFORMATIONAL if sa.state == IkeState::InitResponded && sa.eap.is_some() => {
                self.eap_aborted(now, sa, h, payloads)
            }
            ExchangeType::CREATE_CHILD_SA => self.responder_create_child(now, sa, h, payloads),
            ExchangeType::INFORMATIONAL => self.responder_informational(now, sa, h, payloads),
            _ => {
                // Unexpected exchange in this state.
                self.send_response(
                    &mut sa,
                    h.exchange,
                    h.message_id,
                    vec![Payload::Notify(NotifyPayload::new(NotifyType::INVALID_SYNTAX, Vec::new()))],
                );
                self.put(sa);
            }
        }
    }

    fn handle_response(&mut self, now: Duration, local: SocketAddr, remote: SocketAddr, bytes: &[u8], mut sa: IkeSa, h: &Header) {
        let Some(out) = &sa.outstanding else {
            self.put(sa);
            return;
        };
        if out.msg_id != h.message_id {
            self.put(sa);
            return;
        }
        let _ = local;
        if h.exchange == ExchangeType::IKE_SA_INIT {
            if !matches!(out.pending, Pending::Init) {
                self.put(sa);
                return;
            }
            let msg = match codec::Message::decode(bytes) {
                Ok(m) => m,
                Err(_) => {
                    self.put(sa);
                    return;
                }
            };
            self.initiator_init_response(now, sa, h, msg, bytes, remote);
            return;
        }
        let Some(opened) = self.open_protected(&mut sa, bytes) else {
            self.put(sa);
            return;
        };
        let payloads = match opened {
            Ok(p) => p,
            Err(suite::OpenError::Integrity) => {
                self.put(sa);
                return;
            }
            Err(suite::OpenError::Inner(e)) => {
                let out = sa.outstanding.take().expect("checked above");
                let ex = out.pending.exchange();
                let reason = FailureReason::Malformed(Malformed::Response { exchange: ex, error: e.to_string() });
                self.failure(Some(&sa), remote, None, Side::Remote, ex, reason, Some(e.notify_type()));
                let reason = DownReason::Failed(FailureReason::Malformed(Malformed::ResponseDown { exchange: ex }));
                self.teardown(sa, reason);
                return;
            }
        };
        sa.last_recv = now;
        self.dispatch_response(now, sa, remote, payloads);
    }

    /// Act on an opened response to our outstanding request (also a parked
    /// one, again).
    fn dispatch_response(&mut self, now: Duration, mut sa: IkeSa, remote: SocketAddr, payloads: Vec<Payload>) {
        self.policy.take_deferred();
        let Some(out) = sa.outstanding.take() else {
            self.put(sa);
            return;
        };
        match out.pending {
            Pending::Init => self.put(sa),
            Pending::Auth => self.initiator_auth_response(now, sa, *out, payloads, remote),
            Pending::CreateChild(nego) => self.initiator_child_response(now, sa, nego, payloads),
            Pending::RekeyIke(nego) => self.initiator_ike_rekey_response(now, sa, nego, payloads),
            Pending::DeleteChildren(spis) => {
                for spi in spis {
                    if let Some(i) = sa.child_idx(spi) {
                        let c = sa.children.remove(i);
                        let reason = match (c.state, c.expired) {
                            (ChildState::Rekeyed, _) => DownReason::Rekeyed,
                            (_, true) => DownReason::Expired,
                            _ => DownReason::LocalDelete,
                        };
                        self.child_gone(&sa, c, reason);
                    }
                }
                self.kick(now, &mut sa);
                self.put(sa);
            }
            Pending::DeleteIke => {
                let reason = if sa.state == IkeState::Rekeyed {
                    DownReason::Rekeyed
                } else {
                    sa.delete_reason.as_deref().cloned().unwrap_or(DownReason::LocalDelete)
                };
                self.teardown(sa, reason);
            }
            Pending::Informational => {
                self.note_error_notifies(&sa, &payloads, remote);
                self.kick(now, &mut sa);
                self.put(sa);
            }
        }
    }

    /// Add an SKF fragment; returns the inner payloads once all fragments are in.
    fn reassemble(&mut self, sa: &mut IkeSa, bytes: &[u8], msg: &codec::Message) -> Option<Vec<Payload>> {
        let frag = suite::open_fragment(bytes, msg, sa.keys.as_ref()?)?;
        let mid = msg.header.message_id;
        if sa.reasm.as_ref().is_none_or(|b| b.0 != mid) {
            sa.reasm = Some(Box::new((mid, codec::sk::Reassembler::new())));
        }
        let (_, r) = &mut **sa.reasm.as_mut()?;
        match r.add(frag) {
            Ok(Some(m)) => {
                sa.reasm = None;
                Some(m.payloads)
            }
            Ok(None) => None,
            Err(_) => {
                sa.reasm = None;
                None
            }
        }
    }

    fn note_error_notifies(&mut self, sa: &IkeSa, payloads: &[Payload], remote: SocketAddr) {
        for p in payloads {
            if let Payload::Notify(n) = p {
                if n.notify_type.is_error() {
                    self.failure(
                        Some(sa),
                        remote,
                        None,
                        Side::Remote,
                        Exchange::Informational,
                        FailureReason::PeerReported { notify: n.notify_type.0 },
                        Some(n.notify_type),
                    );
                }
            }
        }
    }
}

/// The reason text of a policy error, with the decider.
pub(crate) fn policy_reason(e: &PolicyError) -> String {
    match e {
        PolicyError::Refused { decider, reason } => format!("{reason} (policy {decider})"),
        PolicyError::Failed { decider, detail } => format!("policy {decider} failed: {detail}"),
        PolicyError::Deferred { decider } => format!("policy {decider}: decision pending"),
    }
}

pub(crate) fn notify(t: NotifyType, data: Vec<u8>) -> Payload {
    Payload::Notify(NotifyPayload::new(t, data))
}

pub(crate) fn find_notify(payloads: &[Payload], t: NotifyType) -> Option<&NotifyPayload> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.notify_type == t => Some(n),
        _ => None,
    })
}

pub(crate) fn first_error(payloads: &[Payload]) -> Option<&NotifyPayload> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.notify_type.is_error() => Some(n),
        _ => None,
    })
}

/// [`Event::PeerMoved`] for `sa` at its (new) remote address.
fn peer_moved_event(sa: &IkeSa) -> Event {
    Event::PeerMoved { ike: sa.id, remote: sa.remote, children: sa.children.iter().map(|c| (c.spi_in, c.spi_out)).collect() }
}

/// Whether a retransmitted request should be answered again: a whole
/// message, or fragment 1 of a fragmented one (RFC 7383 2.6.1: the other
/// fragments of a retransmission must not each trigger the response).
fn first_fragment_or_whole(bytes: &[u8]) -> bool {
    match codec::Message::decode(bytes) {
        Ok(m) => !matches!(m.payloads.last(), Some(Payload::Skf(f)) if f.fragment_number != 1),
        Err(_) => false,
    }
}
