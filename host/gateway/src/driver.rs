//! Engine drivers: one `wisp_ike::Engine` per configured connection, each on its
//! own OS thread.
//!
//! Policy decisions never run on a driver thread: the engine asks through a
//! `wisp_policy::DecisionPool` handle ([`Env::decisions`]), which answers a
//! new question `Deferred` at once and decides it on a pool worker. The engine
//! parks only the negotiation that asked; when the answer is in, the pool's
//! waker sets the driver's `ready` flag (and wakes it with
//! [`Cmd::PolicyReady`]), and the driver calls `Engine::policy_ready`. So a
//! plugin that takes 100 ms per decision delays the negotiations waiting on
//! it, never another SA's DPD, rekey or retransmission, of this connection or
//! another; the ESP packet loops (dataplane tasks) never wait for any of them:
//! a driver only touches the dataplane to install/replace/remove SAs and to
//! read counters.
//!
//! A driver thread waits on its command channel with a timeout equal to the
//! engine's next deadline (at most one second, which is also the period at
//! which Child SA counters are fed back for byte/packet lifetimes), then flushes
//! the engine's transmits and events.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use wisp_ike::config as ikecfg;
use wisp_ike::engine::{notify_name, Engine, SpiChange, SpiChanges};
use wisp_ike::event::{ChildSaInfo, ChildSaState, DownReason, Event, IkeSaId};
use wisp_policy_api::{Policy, Protocol, SaCounts};

use crate::config::{self, Config, Connection, StartAction};
use crate::dp::{ChildCounters, Dataplane};
use crate::policy::SaRegistry;
use crate::queue::{DriverRx, DriverTx};
use crate::status::{ChildSaStatus, ConnectionStatus, IkeSaStatus};

pub type Reply = oneshot::Sender<Result<String, String>>;

pub enum Cmd {
    Datagram {
        local: SocketAddr,
        remote: SocketAddr,
        bytes: Vec<u8>,
    },
    Up {
        child: Option<String>,
        reply: Reply,
    },
    Down {
        reply: Reply,
    },
    Rekey {
        ike: bool,
        child: Option<String>,
        reply: Reply,
    },
    /// List the connection's IKE SAs and Child SAs (for `wisp status`).
    Status {
        reply: oneshot::Sender<Vec<IkeSaStatus>>,
    },
    /// New connection config (applied when the connection holds no SA).
    Reconfigure {
        conn: Box<ikecfg::ConnectionConfig>,
        status: Box<ConnectionStatus>,
    },
    /// The dataplane hit a lifetime limit on the Child SA with inbound SPI `spi_in`.
    Limit {
        spi_in: u32,
        event: wisp_esp::LimitEvent,
    },
    /// Authenticated ESP for the Child SA `spi_in` came from `from`, not from its peer.
    PeerSeen {
        spi_in: u32,
        from: SocketAddr,
    },
    /// Traffic hit the dataplane trap `id` (a child with `start_action = trap`).
    Acquire {
        id: u64,
    },
    /// Another policy version took charge (`why` names it): re-check the
    /// live SAs and take down what it refuses (`[plugin] on_change = "recheck"`).
    Recheck {
        why: String,
    },
    /// Policy answers this driver's engine waits for are in (see
    /// [`Env::decisions`]); coalesced by the driver's `ready` flag.
    PolicyReady,
    /// Delete every SA (DELETE to the peer), remove them from the dataplane, exit.
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Handle to one driver thread.
pub struct DriverHandle {
    /// Bounded: see [`crate::queue`].
    pub tx: DriverTx,
    pub status: Arc<Mutex<ConnectionStatus>>,
    pub thread: Option<std::thread::JoinHandle<()>>,
    /// What the engine's policy waker sends through (it holds only a weak
    /// reference: a dropped handle ends the driver as before).
    _wake: Arc<DriverTx>,
}

/// Everything a driver shares with the rest of the gateway.
#[derive(Clone)]
pub struct Env {
    pub epoch: Instant,
    pub policy: Arc<dyn Policy>,
    pub registry: Arc<SaRegistry>,
    pub dataplane: Arc<dyn Dataplane>,
    /// IKE sockets on port 500, by local address (unspecified = wildcard).
    pub ike_sockets: Arc<Vec<UdpSocket>>,
    /// IKE SPI → connection, so datagrams reach the right driver even when
    /// several connections share a peer address (or the peer's NAT-T source
    /// address differs from the one it used on port 500).
    pub spis: Arc<SpiTable>,
    /// Daemon-wide IKE_SA_INIT admission (cookies, half-open caps): the
    /// dispatcher consults it, every engine counts its half-open SAs in it.
    pub admission: Arc<Mutex<wisp_ike::admission::Admission>>,
    /// Our IKE and ESP SPIs, unique across all engines.
    pub spi_pool: Arc<wisp_ike::spi_pool::SpiPool>,
    /// Daemon-wide budget and counters of the drivers' queues.
    pub queues: Arc<crate::queue::Global>,
    /// Policy decisions on worker threads: the engines never wait for a
    /// plugin (`wisp_policy::DecisionPool`). `None`: `policy` is called
    /// inline (tests of the driver itself).
    pub decisions: Option<Arc<wisp_policy::DecisionPool>>,
    /// Which driver each dataplane notice goes to.
    pub notices: Arc<NoticeRoutes>,
    /// Virtual IP pools: leases unique across every connection.
    pub pools: Arc<wisp_ike::pool::Pools>,
    /// EAP user secrets (`[secrets] eap_file`), replaced in place on reload.
    pub eap_users: Arc<wisp_ike::eap::EapUsers>,
    /// `[daemon] dns_hook`, told of the DNS servers that come with our virtual IPs.
    pub dns_hook: Arc<crate::dns_hook::DnsHook>,
    /// Virtual IPs assigned to us on the TUN device, with the number of
    /// IKE SAs holding each (a reauthentication's new SA holds it beside the old).
    pub tun_vips: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// Who holds what the dataplane reports about: the driver (connection)
/// of each installed Child SA by inbound SPI, and of each trap, so a
/// dataplane notice goes to its owner alone instead of to every driver.
#[derive(Default)]
pub struct NoticeRoutes {
    children: std::sync::RwLock<HashMap<u32, Arc<str>>>,
    traps: std::sync::RwLock<HashMap<u64, Arc<str>>>,
    /// Notices for an SPI or trap nobody holds (gone meanwhile): dropped.
    unrouted: std::sync::atomic::AtomicU64,
}

impl NoticeRoutes {
    fn set<K: std::hash::Hash + Eq>(m: &std::sync::RwLock<HashMap<K, Arc<str>>>, k: K, owner: Option<&Arc<str>>) {
        let mut m = m.write().unwrap_or_else(|p| p.into_inner());
        match owner {
            Some(o) => {
                m.insert(k, o.clone());
            }
            None => {
                m.remove(&k);
            }
        }
    }

    pub fn child(&self, spi_in: u32, owner: Option<&Arc<str>>) {
        Self::set(&self.children, spi_in, owner);
    }

    pub fn trap(&self, id: u64, owner: Option<&Arc<str>>) {
        Self::set(&self.traps, id, owner);
    }

    /// The driver a notice belongs to; `None` (counted) when nobody holds it.
    pub fn owner(&self, n: &crate::dp::Notice) -> Option<Arc<str>> {
        let found = match n {
            crate::dp::Notice::Limit { spi_in, .. } | crate::dp::Notice::PeerSeen { spi_in, .. } => {
                self.children.read().unwrap_or_else(|p| p.into_inner()).get(spi_in).cloned()
            }
            crate::dp::Notice::Acquire { id } => self.traps.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned(),
        };
        if found.is_none() {
            self.unrouted.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    pub fn unrouted(&self) -> u64 {
        self.unrouted.load(Ordering::Relaxed)
    }
}

/// Our IKE SPI of every live IKE SA, by connection. Only our own SPIs are
/// keys (unique daemon-wide through the SPI pool): a peer choosing the SPI
/// of another connection's SA cannot redirect or replace its routing.
#[derive(Default)]
pub struct SpiTable {
    map: std::sync::RwLock<HashMap<u64, (Arc<str>, bool)>>,
}

impl SpiTable {
    /// The connection owning a datagram, by the SPIs in its IKE header.
    pub fn lookup(&self, ike: &[u8]) -> Option<Arc<str>> {
        if ike.len() < 20 {
            return None;
        }
        let spi_i = u64::from_be_bytes(ike[0..8].try_into().ok()?);
        let spi_r = u64::from_be_bytes(ike[8..16].try_into().ok()?);
        // The I flag says who the sender is: from the original initiator the
        // responder SPI is ours, from the original responder the initiator SPI.
        let from_initiator = ike[19] & wisp_ike::codec::Flags::INITIATOR != 0;
        let ours = if from_initiator { spi_r } else { spi_i };
        if ours == 0 {
            return None;
        }
        let m = self.map.read().unwrap_or_else(|p| p.into_inner());
        // Our SPI must also sit on our side of the header: an SA we
        // initiated is addressed by SPIi, one we answered by SPIr.
        m.get(&ours).filter(|(_, we_initiated)| *we_initiated != from_initiator).map(|(c, _)| c.clone())
    }

    /// The IKE SAs of `conn`: our SPI and whether we initiated the SA.
    fn replace(&self, conn: &Arc<str>, spis: &[(u64, bool)]) {
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, (c, _)| c != conn);
        for &(s, we_initiated) in spis.iter().filter(|(s, _)| *s != 0) {
            m.insert(s, (conn.clone(), we_initiated));
        }
    }

    /// Apply what the engine of `conn` reports ([`Engine::take_spi_changes`]).
    fn apply(&self, conn: &Arc<str>, changes: SpiChanges) {
        let changes = match changes {
            SpiChanges::All(all) => return self.replace(conn, &all),
            SpiChanges::Changed(c) if c.is_empty() => return,
            SpiChanges::Changed(c) => c,
        };
        let mut m = self.map.write().unwrap_or_else(|p| p.into_inner());
        for c in changes {
            match c {
                SpiChange::Added { spi, we_initiated } if spi != 0 => {
                    m.insert(spi, (conn.clone(), we_initiated));
                }
                SpiChange::Added { .. } => {}
                SpiChange::Removed(spi) => {
                    if m.get(&spi).is_some_and(|(c, _)| c == conn) {
                        m.remove(&spi);
                    }
                }
            }
        }
    }
}

impl Env {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Translate one gateway connection into the engine's connection config.
pub fn engine_conn(cfg: &Config, name: &str, c: &Connection) -> Result<ikecfg::ConnectionConfig, String> {
    let empty = config::Psk::new(Vec::new());
    let psk = c.auth.secret().unwrap_or(&empty);
    let local_id = c.local_identity();
    // No `remote.id`: the peer must identify as the remote address when
    // that is one host; `%any` only for connections that match many peers.
    let remote_id = c.remote_id().as_deref().map_or(ikecfg::IdMatch::Any, ikecfg::IdMatch::parse);
    let ike_props: Vec<&str> = c.proposals.iter().map(|p| p.text.as_str()).collect();
    let mut ec =
        ikecfg::ConnectionConfig::new(name, local_id, None, psk.expose(), &ike_props).map_err(|e| format!("connection {name}: {e}"))?;
    ec.remote_id = remote_id;
    if let Some(cred) = &c.local.credential {
        let left = cred.cert.not_after as i64 - unix_now() as i64;
        if left < crate::status::CERT_WARN_SECS {
            tracing::warn!(
                conn = %name, subject = %cred.cert.subject,
                "our certificate {} (local.certs)",
                if left < 0 { format!("expired {} days ago", -left / 86_400) } else { format!("expires in {} days", left / 86_400) }
            );
        }
        ec.local_auth = ikecfg::LocalAuth::Pubkey(cred.clone());
    }
    if let Some(t) = &c.remote.trust {
        // An expired CRL is still used (as strongSwan does), but said.
        for issuer in t.store.expired_crls(unix_now()) {
            tracing::warn!(conn = %name, issuer = %issuer, "the CRL of this issuer is past its nextUpdate (remote.crls): still used; fetch a new one");
        }
        ec.remote_auth = ikecfg::RemoteAuth::Pubkey(t.clone());
    }
    if let Some(method) = c.remote.auth_kind(false).eap_method() {
        let eap_id = match c.remote.eap_id.as_deref() {
            None => wisp_ike::eap::EapId::Ike,
            Some("%any") => wisp_ike::eap::EapId::Any,
            Some(id) => wisp_ike::eap::EapId::Exact(id.to_string()),
        };
        let tls_trust = c.remote.trust.clone();
        ec.remote_auth = ikecfg::RemoteAuth::Eap(ikecfg::EapAuth { method, eap_id, tls_trust });
    }
    ec.send_cert = match c.send_cert {
        config::SendCert::Ifasked => ikecfg::SendCert::IfAsked,
        config::SendCert::Always => ikecfg::SendCert::Always,
        config::SendCert::Never => ikecfg::SendCert::Never,
    };
    ec.send_certreq = c.send_certreq.unwrap_or(true);
    // Keep the numbering of our own parse (same transforms).
    ec.ike_proposals = c.proposals.iter().enumerate().map(|(i, p)| p.to_proposal(i as u8 + 1, Protocol::Ike)).collect();
    let caps = &mut ec.caps;
    for (cap, v) in
        [(&mut caps.max_ike_sas, c.max_ike_sas), (&mut caps.max_child_sas, c.max_child_sas), (&mut caps.max_selectors, c.max_selectors)]
    {
        if let Some(v) = v {
            *cap = v as usize;
        }
    }
    ec.local_addrs = c.local_addrs.clone();
    ec.remote_addrs = c.remote_addrs.clone();
    ec.remote_port = cfg.ike_port;
    // The userspace dataplane only does UDP-encapsulated ESP: always move to 4500.
    ec.force_encap = true;
    ec.fragmentation = match c.fragmentation {
        config::Fragmentation::Yes => ikecfg::Fragmentation::Yes,
        config::Fragmentation::Accept => ikecfg::Fragmentation::Accept,
        config::Fragmentation::No => ikecfg::Fragmentation::No,
    };
    if let Some(n) = cfg.ike.fragment_size {
        ec.fragment_size = n as usize;
    }
    let rekey = c.ike_rekey_time();
    ec.ike_lifetimes = ikecfg::Lifetimes {
        soft_time: Some(rekey),
        hard_time: Some(c.ike_over_time()),
        jitter: c.ike_rand_time(),
        ..ikecfg::Lifetimes::unlimited()
    };
    if let Some((delay, timeout)) = c.dpd() {
        ec.dpd_interval = Some(delay);
        // Retransmissions of the liveness check (and every request) give up
        // after ~dpd_timeout: timeout * (1 + 1.5 + 2.25) = 4.75 * timeout.
        let first = timeout.mul_f64(1.0 / 4.75).max(Duration::from_millis(200));
        ec.retransmit = ikecfg::Retransmit { timeout: first, backoff: 1.5, tries: 3 };
    }
    for (cname, ch) in &c.children {
        let lt = ch.lifetimes();
        let esp: Vec<&str> = ch.esp_proposals.iter().map(|p| p.text.as_str()).collect();
        let mut cc = ikecfg::ChildConfig::new(cname, ch.local_ts.clone(), ch.remote_ts.clone(), &esp)
            .map_err(|e| format!("connection {name} child {cname}: {e}"))?;
        cc.esp_proposals = ch.esp_proposals.iter().enumerate().map(|(i, p)| p.to_proposal(i as u8 + 1, Protocol::Esp)).collect();
        cc.mode = match ch.mode {
            config::Mode::Tunnel => ikecfg::Mode::Tunnel,
            config::Mode::Transport => ikecfg::Mode::Transport,
        };
        let start = ch.start_action.unwrap_or(c.start_action);
        cc.start_action = match start {
            StartAction::None => ikecfg::StartAction::None,
            StartAction::Start => ikecfg::StartAction::Start,
            // The driver installs a trap in the dataplane (see `Driver::arm_traps`).
            StartAction::TrapIfFeasible => ikecfg::StartAction::Trap,
        };
        // A child that starts with the daemon comes back after DPD and a
        // peer's DELETE unless configured otherwise.
        let starts = start == StartAction::Start;
        cc.dpd_action = match ch.dpd_action {
            Some(config::DpdAction::Clear) => ikecfg::DpdAction::Clear,
            Some(config::DpdAction::Trap) => ikecfg::DpdAction::Trap,
            Some(config::DpdAction::Restart) => ikecfg::DpdAction::Restart,
            None if starts => ikecfg::DpdAction::Restart,
            None => ikecfg::DpdAction::Clear,
        };
        cc.close_action = match ch.close_action {
            Some(config::CloseAction::None) => ikecfg::CloseAction::None,
            Some(config::CloseAction::Trap) => ikecfg::CloseAction::Trap,
            Some(config::CloseAction::Start) => ikecfg::CloseAction::Start,
            None if starts => ikecfg::CloseAction::Start,
            None => ikecfg::CloseAction::None,
        };
        cc.lifetimes = ikecfg::Lifetimes {
            soft_time: Some(lt.rekey_time),
            hard_time: Some(lt.life_time),
            jitter: lt.rand_time,
            soft_bytes: lt.rekey_bytes,
            hard_bytes: lt.life_bytes,
            soft_packets: lt.rekey_packets,
            hard_packets: lt.life_packets,
        };
        ec.children.push(cc);
    }
    ec.reauth_time = c.reauth_time();
    ec.pools = c.pools.clone();
    ec.vips = c.vips.clone();
    // A connection that is meant to come back keeps trying by default.
    let comes_back = ec.children.iter().any(|c| {
        c.start_action == ikecfg::StartAction::Start
            || c.dpd_action == ikecfg::DpdAction::Restart
            || c.close_action == ikecfg::CloseAction::Start
    });
    ec.keyingtries = c.keyingtries.unwrap_or(if comes_back { 0 } else { 1 });
    ec.validate().map_err(|e| format!("connection {name}: {e}"))?;
    Ok(ec)
}

/// 32 bytes from the OS RNG (`getrandom(2)`). There is no fallback: the
/// daemon refuses to start (and an engine to be created) without it.
pub fn seed() -> anyhow::Result<[u8; 32]> {
    use rand_core::RngCore;
    let mut s = [0u8; 32];
    rand_core::OsRng.try_fill_bytes(&mut s).map_err(|e| anyhow::anyhow!("the OS random number generator failed: {e}"))?;
    Ok(s)
}

/// Start the driver thread of one connection.
pub fn spawn(env: Env, conn: ikecfg::ConnectionConfig, status: ConnectionStatus, autostart: bool) -> anyhow::Result<DriverHandle> {
    let (tx, rx) = crate::queue::channel(env.queues.clone());
    let name = conn.name.clone();
    let wake = Arc::new(tx.clone());
    let ready = Arc::new(AtomicBool::new(false));
    let engine_policy: Arc<dyn Policy> = match &env.decisions {
        Some(pool) => {
            let (weak, flag) = (Arc::downgrade(&wake), ready.clone());
            Arc::new(pool.handle(Arc::new(move || {
                // One wake-up per batch of answers; the driver clears the flag.
                if !flag.swap(true, Ordering::AcqRel) {
                    if let Some(tx) = weak.upgrade() {
                        let _ = tx.send(Cmd::PolicyReady);
                    }
                }
            })))
        }
        None => env.policy.clone(),
    };
    let engine = new_engine(&env, conn.clone(), engine_policy.clone()).map_err(|e| anyhow::anyhow!("connection {name}: {e}"))?;
    let status = Arc::new(Mutex::new(status));
    let st2 = status.clone();
    let spi_owner: Arc<str> = Arc::from(name.as_str());
    let thread = std::thread::Builder::new().name(format!("ike-{name}")).spawn(move || {
        let mut d = Driver {
            env,
            engine,
            name,
            conn,
            pending_conn: None,
            status: st2,
            children: HashMap::new(),
            up_waiters: Vec::new(),
            down_waiters: Vec::new(),
            rekeys: HashMap::new(),
            last_counters: Instant::now(),
            dirty: true,
            last_publish: Instant::now(),
            spi_gen: u64::MAX,
            spi_owner: spi_owner.clone(),
            traps: Vec::new(),
            engine_policy,
            ready,
            sa_vips: HashMap::new(),
        };
        d.run(rx, autostart);
    })?;
    Ok(DriverHandle { tx, status, thread: Some(thread), _wake: wake })
}

/// Whether a reload changed anything of a connection (the PSK is redacted
/// in `Debug`, so it is compared apart).
fn settings_differ(a: &ikecfg::ConnectionConfig, b: &ikecfg::ConnectionConfig) -> bool {
    a.psk.as_bytes() != b.psk.as_bytes() || format!("{a:?}") != format!("{b:?}")
}

fn new_engine(env: &Env, conn: ikecfg::ConnectionConfig, policy: Arc<dyn Policy>) -> Result<Engine, String> {
    // Cookies are the dispatcher's job (daemon-wide, `Env::admission`).
    let cfg = ikecfg::Config { connections: vec![conn], cookie_threshold: usize::MAX, ..Default::default() };
    let mut e = Engine::new(cfg, policy, seed().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    e.set_admission(env.admission.clone());
    e.set_spi_pool(env.spi_pool.clone());
    e.set_pools(env.pools.clone());
    e.set_eap_users(env.eap_users.clone());
    // Fresh OS entropy for every IKE SA; should getrandom ever fail after
    // start-up, the generator ratchets its own (OS-seeded) state.
    e.set_entropy(Box::new(|| seed().ok()));
    Ok(e)
}

struct Installed {
    spi_out: u32,
    last: ChildCounters,
}

struct Driver {
    env: Env,
    engine: Engine,
    name: String,
    conn: ikecfg::ConnectionConfig,
    pending_conn: Option<ikecfg::ConnectionConfig>,
    status: Arc<Mutex<ConnectionStatus>>,
    /// Installed Child SAs by inbound SPI.
    children: HashMap<u32, Installed>,
    /// `wisp up` callers waiting for the first Child SA of this IKE SA.
    up_waiters: Vec<(IkeSaId, Reply)>,
    /// `wisp down` callers waiting for these IKE SAs to be gone.
    down_waiters: Vec<(Vec<IkeSaId>, Reply)>,
    /// Rekey count per child name.
    rekeys: HashMap<String, u64>,
    last_counters: Instant,
    dirty: bool,
    last_publish: Instant,
    /// The engine's SPI generation last published to [`SpiTable`].
    spi_gen: u64,
    /// The connection's name as the [`SpiTable`] keeps it.
    spi_owner: Arc<str>,
    /// Dataplane traps of this connection's `start_action = trap` children: `(id, child)`.
    traps: Vec<(u64, String)>,
    /// The policy the engine asks (a `DecisionPool` handle, or inline).
    engine_policy: Arc<dyn Policy>,
    /// Set by the pool when answers the engine waits for are in.
    ready: Arc<AtomicBool>,
    /// Our virtual IPs by IKE SA (on the TUN device while an SA holds them).
    /// Our virtual IPs per IKE SA, with the DNS servers that came with them.
    sa_vips: HashMap<IkeSaId, (Vec<IpAddr>, Vec<IpAddr>)>,
}

/// Trap ids, unique across the daemon's drivers.
static NEXT_TRAP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

const TICK: Duration = Duration::from_secs(1);
/// Longest a status change waits before `wisp status` shows it.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);
/// Up to this many IKE SAs the snapshot is rebuilt on every change.
const PUBLISH_AT_ONCE_UP_TO: usize = 64;

impl Driver {
    fn run(&mut self, rx: DriverRx, autostart: bool) {
        let starts = self.conn.children.iter().any(|c| c.start_action == ikecfg::StartAction::Start);
        self.engine.set_unix_time(unix_now());
        if autostart && starts {
            let now = self.env.now();
            self.engine.start(now);
            self.set_state("connecting", None);
        }
        self.arm_traps();
        self.flush();
        loop {
            let now = self.env.now();
            // Certificates are checked against the wall clock (a vDSO read).
            self.engine.set_unix_time(unix_now());
            // poll_timeout is O(SAs): asked once per turn.
            let deadline = self.engine.poll_timeout();
            let mut wait = match deadline {
                Some(t) => t.saturating_sub(now).min(TICK),
                None => TICK,
            };
            if self.dirty && self.engine.ike_sa_count() > PUBLISH_AT_ONCE_UP_TO {
                wait = wait.min(PUBLISH_EVERY.saturating_sub(self.last_publish.elapsed()));
            }
            match rx.recv_timeout(wait) {
                Ok(Cmd::Shutdown { reply }) => {
                    self.shutdown(&rx);
                    let _ = reply.send(());
                    return;
                }
                Ok(cmd) => {
                    self.handle(cmd);
                    // New SAs (and their SPIs, used for dispatch) must be
                    // published before the peer's answer can arrive.
                    self.dirty = true;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.shutdown(&rx);
                    return;
                }
            }
            let now = self.env.now();
            if self.ready.swap(false, Ordering::AcqRel) {
                self.engine.policy_ready(now);
                self.dirty = true;
            }
            // Work a command scheduled lies in the future; due work was due
            // before it (poll_timeout is O(SAs): asked once per turn).
            if deadline.is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            if self.last_counters.elapsed() >= TICK {
                self.feed_counters();
                self.dirty = true;
            }
            self.flush();
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        let now = self.env.now();
        match cmd {
            Cmd::Datagram { mut local, remote, bytes } => {
                // Wildcard sockets do not tell which address a datagram came to:
                // use the connection's configured local address.
                if local.ip().is_unspecified() {
                    if let Some(&a) = self.conn.local_addrs.iter().find(|a| a.is_ipv4() == remote.is_ipv4()) {
                        local = SocketAddr::new(a, local.port());
                    }
                }
                self.engine.handle_datagram(now, local, remote, &bytes)
            }
            Cmd::Up { child, reply } => {
                let child = child.or_else(|| self.conn.children.first().map(|c| c.name.clone()));
                let Some(child) = child else {
                    let _ = reply.send(Err(format!("connection {} has no children", self.name)));
                    return;
                };
                if self.engine.child_installed(&child) {
                    let _ = reply.send(Ok(format!("connection {} child {child} already established", self.name)));
                    return;
                }
                match self.engine.initiate_child(now, &self.name, &child) {
                    Ok(ike) => {
                        self.up_waiters.push((ike, reply));
                        self.set_state("connecting", None);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(format!("connection {}: {e}", self.name)));
                    }
                }
            }
            Cmd::Down { reply } => {
                let ids = self.engine.ike_sas();
                if ids.is_empty() {
                    let _ = reply.send(Ok(format!("connection {} has no IKE SA", self.name)));
                    return;
                }
                for id in &ids {
                    let _ = self.engine.delete_ike(now, *id);
                }
                self.down_waiters.push((ids, reply));
            }
            Cmd::Rekey { ike, child, reply } => {
                let st = self.engine.status(now);
                let mut n = 0;
                let mut errs = Vec::new();
                for s in st.iter().filter(|s| s.state.is_established()) {
                    if ike {
                        match self.engine.rekey_ike(now, s.ike) {
                            Ok(()) => n += 1,
                            Err(e) => errs.push(e.to_string()),
                        }
                    } else {
                        for c in &s.children {
                            if child.as_deref().is_some_and(|w| w != c.name) || c.state != ChildSaState::Installed {
                                continue;
                            }
                            match self.engine.rekey_child(now, s.ike, c.spi_in) {
                                Ok(()) => n += 1,
                                Err(e) => errs.push(e.to_string()),
                            }
                        }
                    }
                }
                let what = if ike { "IKE SA" } else { "Child SA" };
                let r = if n == 0 && errs.is_empty() {
                    Err(format!("connection {}: no established {what} to rekey", self.name))
                } else if n == 0 {
                    Err(format!("connection {}: {}", self.name, errs.join("; ")))
                } else {
                    Ok(format!("connection {}: rekeying {n} {what}(s)", self.name))
                };
                let _ = reply.send(r);
            }
            Cmd::Reconfigure { conn, status } => {
                {
                    let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
                    s.local_addrs = status.local_addrs;
                    s.remote_addrs = status.remote_addrs;
                    s.local_id = status.local_id;
                    s.remote_id = status.remote_id;
                }
                self.pending_conn = Some(*conn);
                self.apply_pending();
            }
            Cmd::Limit { spi_in, event } => {
                if !self.children.contains_key(&spi_in) {
                    return;
                }
                let Some(ike) = self.ike_of_child(now, spi_in) else { return };
                let r = match event {
                    wisp_esp::LimitEvent::Soft(k) => {
                        tracing::info!(conn = %self.name, "Child SA {spi_in:08x}: soft {k:?} limit, rekeying");
                        self.engine.rekey_child(now, ike, spi_in)
                    }
                    wisp_esp::LimitEvent::Hard(k) => {
                        tracing::info!(conn = %self.name, "Child SA {spi_in:08x}: hard {k:?} limit, deleting");
                        self.engine.delete_child(now, ike, spi_in)
                    }
                };
                if let Err(e) = r {
                    tracing::debug!(conn = %self.name, "limit on {spi_in:08x}: {e}");
                }
            }
            Cmd::Acquire { id } => self.acquire(now, id),
            Cmd::Recheck { why } => self.recheck(now, &why),
            Cmd::PeerSeen { spi_in, from } => {
                if !self.children.contains_key(&spi_in) {
                    return;
                }
                let Some(ike) = self.ike_of_child(now, spi_in) else { return };
                match self.engine.peer_moved(ike, from) {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(
                        conn = %self.name, "ESP for {spi_in:08x} authenticated from {from}, not the peer's address: not following (no NAT in front of the peer, or we are behind one)"
                    ),
                    Err(e) => tracing::debug!(conn = %self.name, "peer move on {spi_in:08x}: {e}"),
                }
            }
            Cmd::Status { reply } => {
                let _ = reply.send(self.sa_status());
            }
            Cmd::PolicyReady => {}
            Cmd::Shutdown { .. } => {}
        }
    }

    /// Install a dataplane trap for every `start_action = trap` child (after
    /// removing this driver's old ones). A trap that cannot be installed
    /// falls back to initiating now, as `trap-if-feasible` promises.
    fn arm_traps(&mut self) {
        self.disarm_traps();
        let now = self.env.now();
        let children: Vec<_> = self.conn.children.iter().filter(|c| c.start_action == ikecfg::StartAction::Trap).cloned().collect();
        for c in children {
            self.trap(now, &c);
        }
    }

    /// Install a dataplane trap for child `c` (unless one is there).
    fn trap(&mut self, now: Duration, c: &ikecfg::ChildConfig) {
        if self.traps.iter().any(|(_, n)| *n == c.name) {
            return;
        }
        let id = NEXT_TRAP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Routed before the trap exists: its first packet may come at once.
        self.env.notices.trap(id, Some(&self.spi_owner));
        match self.env.dataplane.install_trap(id, &c.local_ts, &c.remote_ts) {
            Ok(()) => {
                tracing::info!(conn = %self.name, child = %c.name, "trap installed: traffic for the child's selectors starts it");
                self.traps.push((id, c.name.clone()));
            }
            Err(e) => {
                self.env.notices.trap(id, None);
                tracing::warn!(conn = %self.name, child = %c.name, "trap not installed ({e:#}): initiating now");
                if self.engine.initiate_child(now, &self.name, &c.name).is_ok() {
                    self.set_state("connecting", None);
                }
            }
        }
    }

    fn disarm_traps(&mut self) {
        for (id, _) in self.traps.drain(..) {
            self.env.notices.trap(id, None);
            let _ = self.env.dataplane.remove_trap(id);
        }
    }

    /// Traffic hit trap `id`: negotiate its child unless it is up or on its way.
    fn acquire(&mut self, now: Duration, id: u64) {
        let Some(child) = self.traps.iter().find(|(t, _)| *t == id).map(|(_, c)| c.clone()) else { return };
        let sas = self.engine.status(now);
        let busy = sas.iter().any(|s| !s.state.is_established() || s.children.iter().any(|c| c.name == child));
        if busy {
            return;
        }
        tracing::info!(conn = %self.name, child = %child, "traffic for a trapped child: initiating");
        match self.engine.initiate_child(now, &self.name, &child) {
            Ok(_) => self.set_state("connecting", None),
            Err(e) => tracing::warn!(conn = %self.name, child = %child, "acquire: {e}"),
        }
    }

    /// Re-check live SAs against the policy now in charge; what it refuses
    /// leaves the data plane when the events are flushed (right after this
    /// command), the DELETEs go out with them.
    fn recheck(&mut self, now: Duration, why: &str) {
        let started = Instant::now();
        let r = self.engine.recheck(now);
        if r.ike_checked == 0 {
            return;
        }
        tracing::info!(
            conn = %self.name, ike_checked = r.ike_checked, children_checked = r.children_checked,
            ike_revoked = r.ike_revoked.len(), children_revoked = r.children_revoked.len(),
            took_ms = started.elapsed().as_secs_f64() * 1e3, "live SAs re-checked after {why}"
        );
    }

    fn ike_of_child(&self, now: Duration, spi_in: u32) -> Option<IkeSaId> {
        self.engine.status(now).iter().find(|s| s.children.iter().any(|c| c.spi_in == spi_in)).map(|s| s.ike)
    }

    /// A changed connection config: without SAs, a fresh engine; with live
    /// SAs, the engine takes the new settings in place and every established
    /// IKE SA is reauthenticated make-before-break (new credentials, ids,
    /// proposals checked by a new IKE SA and its children before the old
    /// one is deleted: no packet lost).
    fn apply_pending(&mut self) {
        let Some(new) = self.pending_conn.as_ref() else { return };
        if !self.engine.ike_sas().is_empty() {
            if !settings_differ(&self.conn, new) {
                self.pending_conn = None;
                return;
            }
            let new = new.clone();
            self.pending_conn = None;
            if let Err(e) = self.engine.update_connection(new.clone()) {
                tracing::warn!(conn = %self.name, "new connection config refused: {e}");
                return;
            }
            self.conn = new;
            self.arm_traps();
            let now = self.env.now();
            let live: Vec<IkeSaId> = self.engine.status(now).iter().filter(|s| s.state.is_established()).map(|s| s.ike).collect();
            let mut n = 0;
            for ike in live {
                match self.engine.reauth_ike(now, ike) {
                    Ok(_) => n += 1,
                    Err(e) => tracing::warn!(conn = %self.name, ike = %ike, "reauthentication after reload not started: {e}"),
                }
            }
            tracing::info!(conn = %self.name, reauthenticating = n, "new connection config in effect; live IKE SAs reauthenticate with it");
            return;
        }
        if let Some(conn) = self.pending_conn.take() {
            match new_engine(&self.env, conn.clone(), self.engine_policy.clone()) {
                Ok(e) => {
                    self.engine = e;
                    // The new engine's first report is its whole SPI set.
                    self.spi_gen = u64::MAX;
                    self.conn = conn;
                    self.arm_traps();
                    tracing::info!(conn = %self.name, "new connection config in effect");
                }
                Err(e) => tracing::warn!(conn = %self.name, "new connection config refused: {e}"),
            }
        }
    }

    fn feed_counters(&mut self) {
        self.last_counters = Instant::now();
        let now = self.env.now();
        for (spi_in, inst) in self.children.iter_mut() {
            if let Some(c) = self.env.dataplane.child_counters(*spi_in, inst.spi_out) {
                let db = (c.bytes_in + c.bytes_out).saturating_sub(inst.last.bytes_in + inst.last.bytes_out);
                let dp = (c.packets_in + c.packets_out).saturating_sub(inst.last.packets_in + inst.last.packets_out);
                inst.last = c;
                if db > 0 || dp > 0 {
                    self.engine.child_traffic(now, *spi_in, db, dp);
                }
            }
        }
    }

    fn send(&self, t: &wisp_ike::engine::Transmit) {
        if t.non_esp_marker {
            if let Err(e) = self.env.dataplane.send_ike(t.local, t.remote, &t.bytes) {
                tracing::debug!(conn = %self.name, "send IKE to {}: {e}", t.remote);
            }
            return;
        }
        let sock = self
            .env
            .ike_sockets
            .iter()
            .find(|s| s.local_addr().is_ok_and(|a| a.ip() == t.local.ip()))
            .or_else(|| {
                self.env
                    .ike_sockets
                    .iter()
                    .find(|s| s.local_addr().is_ok_and(|a| a.ip().is_unspecified() && a.is_ipv4() == t.remote.is_ipv4()))
            })
            .or_else(|| self.env.ike_sockets.first());
        match sock {
            Some(s) => {
                if let Err(e) = s.send_to(&t.bytes, t.remote) {
                    tracing::debug!(conn = %self.name, "send IKE to {}: {e}", t.remote);
                }
            }
            None => tracing::warn!(conn = %self.name, "no IKE socket to send from"),
        }
    }

    fn flush(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            self.send(&t);
        }
        let mut any = false;
        let waiting = self.up_waiters.len() + self.down_waiters.len();
        while let Some(ev) = self.engine.poll_event() {
            any = true;
            self.on_event(ev);
        }
        if any {
            // Events may have queued more (e.g. a DELETE after a rekey).
            while let Some(t) = self.engine.poll_transmit() {
                self.send(&t);
            }
            self.apply_pending();
            self.dirty = true;
        }
        // Our SPIs route the peers' next datagrams: published at once, but
        // only when the set changed.
        let gen = self.engine.spi_generation();
        if gen != self.spi_gen {
            self.spi_gen = gen;
            self.env.spis.apply(&self.spi_owner, self.engine.take_spi_changes());
        }
        // The status snapshot is O(SAs): with many SAs at most every
        // PUBLISH_EVERY (a connection with thousands of peers would otherwise
        // rebuild it per datagram); at once with few, or when a `wisp
        // up`/`down` caller was answered.
        let answered = self.up_waiters.len() + self.down_waiters.len() != waiting;
        let few = self.engine.ike_sa_count() <= PUBLISH_AT_ONCE_UP_TO;
        if self.dirty && (few || answered || self.last_publish.elapsed() >= PUBLISH_EVERY) {
            self.publish();
            self.dirty = false;
            self.last_publish = Instant::now();
        }
    }

    fn install(&mut self, info: &ChildSaInfo, rekey_of: Option<(u32, u32)>) {
        // Make-before-break. The initiator of the rekey got the response, so the
        // peer already has the new inbound SA: switch outbound now. The
        // responder's peer may not have the response yet: add the new SA behind
        // the old one (inbound accepted at once, outbound keeps using the old SA
        // until the initiator deletes it).
        let r = match rekey_of {
            Some((oi, oo)) if info.initiator => self.env.dataplane.rekey_child(oi, oo, info),
            _ => self.env.dataplane.install_child(info),
        };
        match r {
            Ok(()) => {
                self.children.insert(info.spi_in, Installed { spi_out: info.spi_out, last: ChildCounters::default() });
                self.env.notices.child(info.spi_in, Some(&self.spi_owner));
            }
            Err(e) => {
                tracing::error!(conn = %self.name, child = %info.name, "dataplane install failed: {e:#}");
                let _ = self.engine.delete_child(self.env.now(), info.ike, info.spi_in);
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::TrapWanted { child, .. } => {
                if let Some(c) = self.conn.child(&child).cloned() {
                    self.trap(self.env.now(), &c);
                }
            }
            Event::IkeSaUp(info) => {
                self.vips_up(&info.vips.local, &info.vips.dns);
                if !info.vips.local.is_empty() {
                    self.sa_vips.insert(info.ike, (info.vips.local.clone(), info.vips.dns.clone()));
                }
                if !info.vips.local.is_empty() || !info.vips.remote.is_empty() {
                    let list = |v: &[IpAddr]| v.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(",");
                    tracing::info!(
                        conn = %self.name, ike = %info.ike, local_vips = %list(&info.vips.local),
                        remote_vips = %list(&info.vips.remote), dns = %list(&info.vips.dns), "virtual IPs"
                    );
                }
                let auth = info.peer_auth.as_ref().map_or("", |a| a.method.as_str());
                let cert = info.peer_auth.as_ref().and_then(|a| a.cert_subject.as_deref()).unwrap_or("-");
                tracing::info!(
                    conn = %self.name, ike = %info.ike, remote = %info.remote, peer = %info.remote_id,
                    algs = %info.algorithms, auth = %auth, cert = %cert, "IKE SA established"
                );
            }
            Event::PeerMoved { ike, remote, children } => {
                tracing::info!(conn = %self.name, ike = %ike, remote = %remote, "peer moved (NAT mapping changed): following");
                for (spi_in, spi_out) in children {
                    if let Err(e) = self.env.dataplane.update_peer(spi_in, spi_out, remote) {
                        tracing::warn!(conn = %self.name, "moving Child SA {spi_in:08x} to {remote}: {e:#}");
                    }
                }
            }
            Event::IkeSaRekeyed { old, new } => {
                tracing::info!(conn = %self.name, old = %old, new = %new.ike, "IKE SA rekeyed");
                if let Some(v) = self.sa_vips.remove(&old) {
                    self.sa_vips.insert(new.ike, v);
                }
                for (id, _) in self.up_waiters.iter_mut() {
                    if *id == old {
                        *id = new.ike;
                    }
                }
            }
            Event::IkeSaDown { ike, reason, .. } => {
                tracing::info!(conn = %self.name, ike = %ike, "IKE SA down: {reason}");
                if let Some((v, dns)) = self.sa_vips.remove(&ike) {
                    self.vips_down(&v, &dns);
                }
                if reason != DownReason::Rekeyed {
                    if let Some(i) = self.up_waiters.iter().position(|(id, _)| *id == ike) {
                        let (_, r) = self.up_waiters.remove(i);
                        let _ = r.send(Err(format!("connection {}: IKE SA {reason}", self.name)));
                    }
                    let msg = match &reason {
                        DownReason::LocalDelete | DownReason::RemoteDelete => None,
                        other => Some(other.to_string()),
                    };
                    if self.engine.ike_sas().is_empty() {
                        if !self.engine.pending_restarts().is_empty() {
                            self.set_state("connecting", msg);
                        } else {
                            self.set_state(if msg.is_some() { "failed" } else { "idle" }, msg);
                        }
                    }
                }
                let live = self.engine.ike_sas();
                let mut i = 0;
                while i < self.down_waiters.len() {
                    if self.down_waiters[i].0.iter().all(|id| !live.contains(id)) {
                        let (_, r) = self.down_waiters.remove(i);
                        let _ = r.send(Ok(format!("connection {} down", self.name)));
                    } else {
                        i += 1;
                    }
                }
            }
            Event::ChildSaUp(info) => {
                tracing::info!(
                    conn = %self.name, child = %info.name, spi_in = %format!("{:08x}", info.spi_in),
                    spi_out = %format!("{:08x}", info.spi_out), cipher = %info.algorithms.cipher,
                    "Child SA established"
                );
                self.install(&info, None);
                self.set_state("established", None);
                if let Some(i) = self.up_waiters.iter().position(|(id, _)| *id == info.ike) {
                    let (_, r) = self.up_waiters.remove(i);
                    let _ = r.send(Ok(format!(
                        "connection {} established: child {} SPIs {:08x}_i {:08x}_o {} {} === {}",
                        self.name,
                        info.name,
                        info.spi_in,
                        info.spi_out,
                        info.algorithms.cipher,
                        info.local_ts.iter().map(config::format_ts).collect::<Vec<_>>().join(","),
                        info.remote_ts.iter().map(config::format_ts).collect::<Vec<_>>().join(","),
                    )));
                }
            }
            Event::ChildSaRekeyed { old_spi_in, old_spi_out, new } => {
                tracing::info!(
                    conn = %self.name, child = %new.name,
                    "Child SA rekeyed {:08x}/{:08x} -> {:08x}/{:08x}", old_spi_in, old_spi_out, new.spi_in, new.spi_out
                );
                *self.rekeys.entry(new.name.clone()).or_default() += 1;
                self.install(&new, Some((old_spi_in, old_spi_out)));
            }
            Event::ChildSaDown { name, spi_in, spi_out, reason, .. } => {
                tracing::info!(conn = %self.name, child = %name, "Child SA {:08x} down: {reason}", spi_in);
                self.children.remove(&spi_in);
                self.env.notices.child(spi_in, None);
                if let Err(e) = self.env.dataplane.remove_child(spi_in, spi_out) {
                    tracing::warn!(conn = %self.name, "dataplane remove {spi_in:08x}: {e:#}");
                }
                if let DownReason::Revoked(_) = &reason {
                    tracing::warn!(conn = %self.name, child = %name, "Child SA {spi_in:08x} {reason}");
                    let state = self.status.lock().unwrap_or_else(|p| p.into_inner()).state.clone();
                    self.set_state(&state, Some(format!("child {name}: {reason}")));
                }
            }
            Event::Failure(f) => {
                let notify = f.notify.map(notify_name);
                let msg = match &notify {
                    Some(n) => format!("{n}: {f}"),
                    None => f.to_string(),
                };
                tracing::warn!(conn = %self.name, "{msg}");
                if let Some(ike) = f.ike {
                    if let Some(i) = self.up_waiters.iter().position(|(id, _)| *id == ike) {
                        let (_, r) = self.up_waiters.remove(i);
                        let _ = r.send(Err(format!("connection {}: {msg}", self.name)));
                    }
                }
                let established = self.engine.any_established();
                self.set_state(if established { "established" } else { "failed" }, Some(msg));
            }
            other => tracing::debug!(conn = %self.name, "engine event not handled here: {other:?}"),
        }
    }

    /// Our virtual IPs of a new IKE SA go on the TUN device (once per
    /// address); the first time, `[daemon] dns_hook` hears of them and the
    /// DNS servers.
    fn vips_up(&mut self, vips: &[IpAddr], dns: &[IpAddr]) {
        if vips.is_empty() {
            return;
        }
        let mut added = false;
        let mut held = self.env.tun_vips.lock().unwrap_or_else(|p| p.into_inner());
        for a in vips {
            let n = held.entry(*a).or_insert(0);
            if *n == 0 {
                added = true;
                match self.env.dataplane.add_address(*a) {
                    Ok(()) => tracing::info!(conn = %self.name, "virtual IP {a} on the TUN device"),
                    Err(e) => tracing::warn!(conn = %self.name, "adding virtual IP {a} to the TUN device: {e:#}"),
                }
            }
            *n += 1;
        }
        drop(held);
        if added {
            self.env.dns_hook.call("up", &self.name, vips, dns);
        }
    }

    /// The last IKE SA holding an address is gone: it comes off the TUN
    /// device, and `dns_hook` is told.
    fn vips_down(&mut self, vips: &[IpAddr], dns: &[IpAddr]) {
        let mut removed = false;
        let mut held = self.env.tun_vips.lock().unwrap_or_else(|p| p.into_inner());
        for a in vips {
            let Some(n) = held.get_mut(a) else { continue };
            *n -= 1;
            if *n == 0 {
                removed = true;
                held.remove(a);
                if let Err(e) = self.env.dataplane.remove_address(*a) {
                    tracing::warn!(conn = %self.name, "removing virtual IP {a} from the TUN device: {e:#}");
                }
            }
        }
        drop(held);
        if removed {
            self.env.dns_hook.call("down", &self.name, vips, dns);
        }
    }

    fn set_state(&self, state: &str, err: Option<String>) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.state = state.to_string();
        if err.is_some() {
            s.last_error = err;
        }
    }

    /// Publish what is cheap to keep current: the live-SA counts plugins
    /// query (one entry per peer identity), the connection's state and the
    /// parked decisions. O(SAs) without allocating per SA; the SAs
    /// themselves are listed on request ([`Cmd::Status`], [`Driver::sa_status`]).
    fn publish(&mut self) {
        let mut counts: HashMap<wisp_policy_api::Identity, SaCounts> = HashMap::new();
        for (id, children) in self.engine.peers() {
            if let Some(c) = counts.get_mut(id) {
                c.ike_sas += 1;
                c.child_sas += children as u32;
            } else {
                counts.insert(id.clone(), SaCounts { ike_sas: 1, child_sas: children as u32 });
            }
        }
        self.env.registry.publish(&self.name, counts);
        let established = self.engine.any_established();
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if established {
            s.state = "established".into();
        }
        s.decisions_waiting = self.engine.decisions_waiting() as u64;
        s.parked_dropped = self.engine.parked_dropped();
    }

    /// Every IKE SA of the connection with its Child SAs, for `wisp status`:
    /// O(SAs) with a few small allocations per SA (about 15 ms for 10,000),
    /// built only when asked.
    fn sa_status(&self) -> Vec<IkeSaStatus> {
        let now = self.env.now();
        self.engine
            .status(now)
            .iter()
            .map(|s| {
                let (lspi, rspi) = if s.initiator { (s.spi_i, s.spi_r) } else { (s.spi_r, s.spi_i) };
                IkeSaStatus {
                    local_spi: format!("{lspi:016x}"),
                    remote_spi: format!("{rspi:016x}"),
                    local: s.local.to_string(),
                    remote: s.remote.to_string(),
                    local_id: s.local_id.value.clone(),
                    remote_id: s.remote_id.as_ref().map(|i| i.value.clone()).unwrap_or_default(),
                    initiator: s.initiator,
                    state: s.state.name().to_string(),
                    algorithms: s.algorithms.clone(),
                    nat_detected: s.nat.local_behind_nat || s.nat.remote_behind_nat,
                    established_secs: s.established_for.as_secs(),
                    rekey_in_secs: s.rekey_in.map(|d| d.as_secs()),
                    remote_auth: s.peer_auth.as_ref().map(|a| a.method.clone()),
                    remote_cert: s.peer_auth.as_ref().and_then(|a| {
                        Some(crate::status::CertStatus::new(
                            a.cert_subject.clone()?,
                            a.cert_issuer.clone().unwrap_or_default(),
                            a.cert_not_after?,
                            unix_now(),
                        ))
                    }),
                    local_vips: s.vips.local.iter().map(|a| a.to_string()).collect(),
                    remote_vips: s.vips.remote.iter().map(|a| a.to_string()).collect(),
                    dns: s.vips.dns.iter().map(|a| a.to_string()).collect(),
                    children: s
                        .children
                        .iter()
                        .map(|c| {
                            let mut algs = c.algorithms.cipher.to_string();
                            algs.push_str(if c.algorithms.esn { "/ESN" } else { "/NO_ESN" });
                            if let Some(g) = c.algorithms.pfs_group {
                                algs.push('/');
                                algs.push_str(&ikecfg::transform_name(&wisp_policy_api::Transform {
                                    kind: wisp_policy_api::TransformType::KeyExchange,
                                    id: g,
                                    key_length: None,
                                }));
                            }
                            ChildSaStatus {
                                name: c.name.clone(),
                                state: c.state.name().to_string(),
                                mode: format!("{:?}", c.mode).to_uppercase(),
                                spi_in: format!("{:08x}", c.spi_in),
                                spi_out: format!("{:08x}", c.spi_out),
                                algorithms: algs,
                                local_ts: c.local_ts.iter().map(config::format_ts).collect(),
                                remote_ts: c.remote_ts.iter().map(config::format_ts).collect(),
                                established_secs: c.established_for.as_secs(),
                                rekey_in_secs: c.rekey_in.map(|d| d.as_secs()),
                                expire_in_secs: c.expire_in.map(|d| d.as_secs()),
                                rekeys: self.rekeys.get(&c.name).copied().unwrap_or(0),
                                ..Default::default()
                            }
                        })
                        .collect(),
                }
            })
            .collect()
    }

    fn shutdown(&mut self, rx: &DriverRx) {
        let now = self.env.now();
        let ids = self.engine.ike_sas();
        for id in &ids {
            let _ = self.engine.delete_ike(now, *id);
        }
        self.flush();
        // Give the peers a moment to answer the DELETEs (answers come in as
        // datagrams), but never hold shutdown up for long.
        let deadline = Instant::now() + Duration::from_millis(if ids.is_empty() { 0 } else { 1500 });
        while !self.engine.ike_sas().is_empty() && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(100));
            if let Ok(Cmd::Datagram { local, remote, bytes }) = rx.recv_timeout(left) {
                self.engine.handle_datagram(self.env.now(), local, remote, &bytes);
            }
            let now = self.env.now();
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            self.flush();
        }
        for (spi_in, inst) in self.children.drain() {
            self.env.notices.child(spi_in, None);
            let _ = self.env.dataplane.remove_child(spi_in, inst.spi_out);
        }
        self.disarm_traps();
        let vips: Vec<(Vec<IpAddr>, Vec<IpAddr>)> = self.sa_vips.drain().map(|(_, v)| v).collect();
        for (v, dns) in vips {
            self.vips_down(&v, &dns);
        }
        for (_, r) in self.up_waiters.drain(..) {
            let _ = r.send(Err("daemon shutting down".into()));
        }
        for (_, r) in self.down_waiters.drain(..) {
            let _ = r.send(Ok(format!("connection {} down (daemon shutting down)", self.name)));
        }
        self.env.registry.publish(&self.name, HashMap::new());
        self.env.spis.replace(&self.spi_owner, &[]);
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.state = "idle".into();
        s.ike_sas.clear();
    }
}

/// Which connection an IKE datagram from `remote` belongs to: the first whose
/// `remote_addrs` contains the address (several connections to the same peer
/// address are not distinguished; the first wins).
pub fn route(conns: &[Route], local: IpAddr, remote: IpAddr) -> Option<&str> {
    conns
        .iter()
        .filter_map(|r| Some((ikecfg::addr_fit(&r.local, &r.remote, local, remote)?, r)))
        .min_by_key(|(fit, _)| *fit)
        .map(|(_, r)| r.name.as_str())
}

/// A connection's addresses, for [`route`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub name: String,
    pub local: Vec<IpAddr>,
    pub remote: Vec<ikecfg::AddrMatch>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const CFG: &str = r#"
[connections.b]
local_addrs = ["10.99.0.1"]
remote_addrs = ["10.99.0.2"]
dpd_delay = "2s"
dpd_timeout = "9500ms"
start_action = "trap-if-feasible"
local.id = "a.wisp.test"
auth.psk = "0123456789abcdef"
[connections.b.children.net]
local_ts = ["10.98.1.0/24"]
remote_ts = ["10.98.2.0/24"]
esp_proposals = ["aes256gcm16-x25519", "chacha20poly1305"]
rekey_time = "3s"
rekey_bytes = "1M"
life_packets = 1000
"#;

    #[test]
    fn engine_connection_from_config() {
        let cfg = Config::parse(CFG, Path::new("t.toml")).unwrap();
        let ec = engine_conn(&cfg, "b", &cfg.connections["b"]).unwrap();
        assert!(ec.force_encap, "ESP is always UDP-encapsulated");
        let rid = ec.remote_id.exact().expect("no remote.id = the remote address, not any identity");
        assert_eq!(rid.value, "10.99.0.2");
        assert_eq!(rid.kind, wisp_policy_api::IdType::Ipv4Addr);
        assert_eq!(ec.local_id.value, "a.wisp.test");
        assert_eq!(ec.initiate_to(), Some("10.99.0.2".parse().unwrap()));
        assert_eq!(ec.dpd_interval, Some(Duration::from_secs(2)));
        // Retransmissions give up after ~dpd_timeout.
        let r = &ec.retransmit;
        let total: f64 = (0..r.tries).map(|i| r.timeout.as_secs_f64() * r.backoff.powi(i as i32)).sum();
        assert!((total - 9.5).abs() < 0.01, "{total}");
        let ch = &ec.children[0];
        assert_eq!(ch.start_action, ikecfg::StartAction::Trap);
        assert_eq!(ch.esp_proposals.len(), 2);
        assert_eq!(ch.esp_proposals[1].number, 2);
        assert_eq!(ch.lifetimes.soft_time, Some(Duration::from_secs(3)));
        assert_eq!(ch.lifetimes.hard_time, Some(Duration::from_millis(3300)));
        assert_eq!(ch.lifetimes.jitter, Duration::ZERO);
        assert_eq!(ch.lifetimes.soft_bytes, Some(1 << 20));
        assert_eq!(ch.lifetimes.hard_packets, Some(1000));
        assert!(!format!("{:?}", ec.psk).contains("0123456789abcdef"));
    }

    fn hdr(i: u64, r: u64, from_initiator: bool) -> Vec<u8> {
        let mut v = i.to_be_bytes().to_vec();
        v.extend_from_slice(&r.to_be_bytes());
        v.extend_from_slice(&[0, 0x20, 37, if from_initiator { 0x08 } else { 0 }]);
        v.extend_from_slice(&[0u8; 8]);
        v
    }

    #[test]
    fn notices_go_to_their_owner_only() {
        use crate::dp::Notice;
        let r = NoticeRoutes::default();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        r.child(0x1000, Some(&a));
        r.child(0x2000, Some(&b));
        r.trap(7, Some(&b));
        let limit = |spi_in| Notice::Limit { spi_in, event: wisp_esp::LimitEvent::Hard(wisp_esp::LimitKind::Packets) };
        assert_eq!(r.owner(&limit(0x1000)).as_deref(), Some("a"));
        assert_eq!(r.owner(&Notice::PeerSeen { spi_in: 0x2000, from: "10.0.0.9:4500".parse().unwrap() }).as_deref(), Some("b"));
        assert_eq!(r.owner(&Notice::Acquire { id: 7 }).as_deref(), Some("b"));
        assert_eq!(r.unrouted(), 0);
        r.child(0x1000, None);
        r.trap(7, None);
        assert_eq!(r.owner(&limit(0x1000)), None, "removed with its Child SA");
        assert_eq!(r.owner(&Notice::Acquire { id: 7 }), None);
        assert_eq!(r.owner(&limit(0x3000)), None);
        assert_eq!(r.unrouted(), 3, "each unowned notice counted");
    }

    #[test]
    fn spi_table_routes_by_our_spi() {
        let t = SpiTable::default();
        // a: we initiated (our SPI is SPIi); b: we responded (ours is SPIr).
        t.replace(&Arc::from("a"), &[(0x1111, true)]);
        t.replace(&Arc::from("b"), &[(0x3333, false)]);
        assert_eq!(t.lookup(&hdr(0x1111, 0x2222, false)).as_deref(), Some("a"), "b's answer to our request");
        assert_eq!(t.lookup(&hdr(0x9999, 0x3333, true)).as_deref(), Some("b"));
        assert_eq!(t.lookup(&hdr(0x9999, 0, true)), None, "a new IKE_SA_INIT: route by address");
        assert_eq!(t.lookup(&[1, 2, 3]), None);
        t.replace(&Arc::from("a"), &[]);
        assert_eq!(t.lookup(&hdr(0x1111, 0x2222, false)), None);
    }

    /// Finding (issue 10): the IKE SPI map held both SPIs of every SA, the
    /// peer's included, last writer winning across connections; a peer
    /// choosing another connection's SPI took over its routing.
    #[test]
    fn peer_chosen_ike_spi_does_not_reroute_another_connection() {
        let t = SpiTable::default();
        // Connection a: we responded, our SPIr 0xa0a0; its peer chose SPIi 0x5555.
        t.replace(&Arc::from("a"), &[(0xa0a0, false)]);
        // Connection b's peer chooses the same SPIi 0x5555, and then a's SPIr as its own.
        t.replace(&Arc::from("b"), &[(0xb0b0, false)]);
        assert_eq!(t.lookup(&hdr(0x5555, 0xa0a0, true)).as_deref(), Some("a"));
        assert_eq!(t.lookup(&hdr(0x5555, 0xb0b0, true)).as_deref(), Some("b"));
        // b's peer as original responder using a's SPI as "its" SPIr: we route by
        // our SPIi, which b's SA does not hold.
        assert_eq!(t.lookup(&hdr(0xb0b0, 0xa0a0, false)), None);
        assert_eq!(t.lookup(&hdr(0x5555, 0xa0a0, true)).as_deref(), Some("a"), "a unchanged");
    }

    #[test]
    fn recovery_settings_and_their_defaults() {
        let cfg = Config::parse(CFG, Path::new("t.toml")).unwrap();
        let ec = engine_conn(&cfg, "b", &cfg.connections["b"]).unwrap();
        // A trap child: nothing comes back by itself, one try.
        assert_eq!((ec.children[0].dpd_action, ec.children[0].close_action), (ikecfg::DpdAction::Clear, ikecfg::CloseAction::None));
        assert_eq!(ec.keyingtries, 1);
        // A child that starts with the daemon comes back after DPD and a peer's DELETE, forever.
        let start = CFG.replace("start_action = \"trap-if-feasible\"", "start_action = \"start\"");
        let cfg = Config::parse(&start, Path::new("t.toml")).unwrap();
        let ec = engine_conn(&cfg, "b", &cfg.connections["b"]).unwrap();
        assert_eq!((ec.children[0].dpd_action, ec.children[0].close_action), (ikecfg::DpdAction::Restart, ikecfg::CloseAction::Start));
        assert_eq!(ec.keyingtries, 0);
        // Explicit values (and strongSwan's older names) win.
        let set = start
            .replace("rekey_time = \"3s\"", "rekey_time = \"3s\"\ndpd_action = \"hold\"\nclose_action = \"clear\"")
            .replace("dpd_delay = \"2s\"", "dpd_delay = \"2s\"\nkeyingtries = 5");
        let cfg = Config::parse(&set, Path::new("t.toml")).unwrap();
        let ec = engine_conn(&cfg, "b", &cfg.connections["b"]).unwrap();
        assert_eq!((ec.children[0].dpd_action, ec.children[0].close_action), (ikecfg::DpdAction::Trap, ikecfg::CloseAction::None));
        assert_eq!(ec.keyingtries, 5);
        let bad = start.replace("rekey_time = \"3s\"", "rekey_time = \"3s\"\ndpd_action = \"reboot\"");
        let e = Config::parse(&bad, Path::new("t.toml")).unwrap_err().to_string();
        assert!(e.contains("reboot") && e.contains("dpd_action"), "{e}");
    }

    #[test]
    fn route_by_remote_address() {
        let r = |name: &str, local: &[&str], remote: &[&str]| Route {
            name: name.into(),
            local: local.iter().map(|a| a.parse().unwrap()).collect(),
            remote: remote.iter().map(|a| ikecfg::AddrMatch::parse(a).unwrap()).collect(),
        };
        let routes = vec![
            r("a", &[], &["10.0.0.1"]),
            r("any", &[], &["%any"]),
            r("b", &[], &["10.0.0.2", "10.0.0.3"]),
            r("blk", &[], &["10.0.0.0/24"]),
            r("only-v6", &[], &["%any6"]),
            r("on-second", &["192.0.2.2"], &["10.0.1.0-10.0.1.9"]),
        ];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let wild = ip("0.0.0.0");
        assert_eq!(route(&routes, wild, ip("10.0.0.3")), Some("b"), "a host beats a block and %any");
        assert_eq!(route(&routes, wild, ip("10.0.0.9")), Some("blk"), "a block beats %any");
        assert_eq!(route(&routes, wild, ip("10.7.0.9")), Some("any"));
        assert_eq!(route(&routes, wild, ip("2001:db8::1")), Some("only-v6"), "%any6 is more specific than %any");
        assert_eq!(route(&routes, ip("192.0.2.2"), ip("10.0.1.5")), Some("on-second"));
        assert_eq!(route(&routes, ip("192.0.2.1"), ip("10.0.1.5")), Some("any"), "local address not of that connection");
        assert_eq!(route(&routes[..1], wild, ip("10.0.0.9")), None);
    }
}
