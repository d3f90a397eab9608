//! The ESP data path: TUN device ⇄ SPD/SAD ⇄ ESP-in-UDP on port 4500.
//!
//! # API (for the control side)
//!
//! ```text
//! let dp = Dataplane::start(DataplaneConfig { tun_name, mtu, listen, tun_addrs, keepalive, .. },
//!                           ike_sink,    // Fn(local, remote, &ike_bytes): IKE received on 4500,
//!                                        //   non-ESP marker already stripped
//!                           event_sink)? // Fn(DataplaneEvent): soft/hard limits, seq exhaustion
//! dp.install_child(ChildSaSpec { spi_in, spi_out, aead, esn, key_in, key_out,
//!                                local_ts, remote_ts, peer, limits })?;  // SAs + SPD + routes
//! dp.install_inbound(&new_spec)?;                       // optional: accept new SPI first
//! dp.replace_child(old_spi_in, old_spi_out, new_spec)?; // make-before-break rekey
//! dp.remove_child(spi_in, spi_out)?;                    // both directions, unused routes
//! dp.child_counters(spi_in, spi_out) / dp.counters() / dp.counters_list()
//! dp.send_ike(remote, &ike_bytes)?;  // prepends the non-ESP marker, sends from 4500
//! dp.shutdown();                      // stops the loops, removes routes (also on Drop)
//! ```
//!
//! * `Dataplane::start` must run in the network namespace the gateway
//!   serves: the TUN device and the UDP socket are created there, and the
//!   `ip` commands for routes later run there too (from any thread).
//! * Both sinks are called from the packet threads: they must not block
//!   (push into a channel). `ChildSaSpec` keys are [`wisp_esp::Keymat`]
//!   (`key || salt`, zeroized on drop).
//! * Outbound: TUN read (with offload a TSO super-packet, split by `tun-rs`
//!   into MTU-sized segments straight into the send batch) → SPD (first
//!   Child SA whose local selectors hold the source and remote selectors the
//!   destination) → seal in place → `sendmmsg` with UDP GSO runs.
//!   Inbound: `recvmmsg` (UDP GRO batches split by their segment size) →
//!   [`wisp_esp::classify`] → keepalive (counted) / IKE (to `ike_sink`) /
//!   ESP → SAD by SPI → open (replay, ICV) → the inner packet must match the
//!   SA's selectors (else dropped, counted as `policy`) → TUN write (with
//!   offload, TCP segments of one flow coalesced into one write).
//! * Tables are an `ArcSwap`: the packet threads read without locks; the
//!   control side clones, edits and swaps. `replace_child` inserts the new
//!   inbound SA and swaps the outbound entry in place in one store, so
//!   outbound switches atomically while the old inbound SA keeps accepting
//!   until `remove_child(old…)`.
//! * Routes: each remote selector range becomes CIDR routes `dev <tun>`;
//!   removed when no SA needs them. A selector range containing the peer's
//!   own address is not routed (it would swallow the ESP packets).
//!
//! Threads, not tokio tasks: two blocking loops (TUN→UDP, UDP→TUN) with
//! `poll(2)`, TUN offload and batched, segmented UDP keep the syscall count
//! per 64 KB of TCP to a handful; the daemon's tokio runtime only talks to
//! [`Dataplane`]. The TUN device: see [`tun`].

pub mod selectors;
mod spd;
mod sys;
pub mod tun;

pub use tun::TunKind;

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use wisp_esp::{
    Aead, Classified, CounterSnapshot, DropReason, InboundSa, Keymat, LimitEvent, Limits, OpenError, OutboundSa, SealError,
    ESP_OVERHEAD_MAX, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6, PAYLOAD_OFFSET,
};
use wisp_policy_api::TrafficSelector;

/// Dataplane settings.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// TUN device name (≤ 15 bytes); `%d` lets the kernel pick a number.
    pub tun_name: String,
    /// TUN MTU (inner packets). 1400 leaves room for IP/UDP/ESP on a 1500 path.
    pub mtu: u16,
    /// Addresses to put on the TUN device (e.g. the gateway's inner address).
    pub tun_addrs: Vec<(IpAddr, u8)>,
    /// UDP address for ESP and IKE-on-4500.
    pub listen: SocketAddr,
    /// Send a NAT keepalive (0xFF) to every peer this often.
    pub keepalive: Option<Duration>,
    /// Datagrams per recvmmsg/sendmmsg batch.
    pub batch: usize,
    /// TUN implementation (offload by default).
    pub tun_kind: TunKind,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            tun_name: "wisp%d".into(),
            mtu: 1400,
            tun_addrs: Vec::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], wisp_esp::NAT_T_PORT)),
            keepalive: Some(Duration::from_secs(20)),
            batch: 128,
            tun_kind: TunKind::Offload,
        }
    }
}

/// One Child SA pair to install.
#[derive(Debug, Clone)]
pub struct ChildSaSpec {
    /// Our SPI: the peer sends ESP with it.
    pub spi_in: u32,
    /// The peer's SPI: we send with it.
    pub spi_out: u32,
    pub aead: Aead,
    pub esn: bool,
    /// `key || salt` for packets we receive / send.
    pub key_in: Keymat,
    pub key_out: Keymat,
    /// Our side's selectors (inner sources we send, destinations we accept).
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// Outer address of the peer (normally port 4500).
    pub peer: SocketAddr,
    /// Byte/packet lifetimes, per direction; soft → event, hard → refuse.
    pub limits: Limits,
}

/// Something the control plane should act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataplaneEvent {
    /// A limit fired on the Child SA `(spi_in, spi_out)`: `Soft` → rekey,
    /// `Hard` → the SA refuses traffic (delete it). Sequence-number
    /// exhaustion is `LimitKind::Sequence`. Each is reported once per SA and
    /// direction.
    Limit { spi_in: u32, spi_out: u32, outbound: bool, event: LimitEvent },
    /// An authenticated, non-replayed ESP packet for `(spi_in, spi_out)`
    /// arrived from `from`, not from the SA's peer address: the peer's NAT
    /// mapping may have moved. Reported once per SA until
    /// [`Dataplane::update_peer`] (or a rekey) replaces the entry; the
    /// dataplane does not follow on its own.
    PeerSeen { spi_in: u32, spi_out: u32, from: SocketAddr },
    /// A packet from the TUN device matched the trap `id` and no Child SA
    /// (the packet was dropped). Raised at most every 2 s per trap.
    Acquire { id: u64 },
}

/// IKE received on the NAT-T port: `(local, remote, ike_message)`.
pub type IkeSink = Box<dyn Fn(SocketAddr, SocketAddr, &[u8]) + Send + Sync>;
/// Limit events.
pub type EventSink = Box<dyn Fn(DataplaneEvent) + Send + Sync>;

/// Dataplane errors (control-path calls).
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("key: {0}")]
    Key(#[from] wisp_esp::KeyLengthError),
    #[error("inbound SPI {0:08x} already installed")]
    DuplicateSpi(u32),
    #[error("no Child SA with outbound SPI {0:08x}")]
    NoSuchChild(u32),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Counters of one Child SA (both directions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChildCounters {
    pub spi_in: u32,
    pub spi_out: u32,
    /// Packets/bytes accepted and drops by reason (replay, auth, malformed,
    /// policy = inner packet outside the selectors, expired).
    pub inbound: CounterSnapshot,
    pub outbound: CounterSnapshot,
}

macro_rules! global_counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        #[derive(Default)]
        struct Global { $($name: AtomicU64),* }
        /// Dataplane-wide counters.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct GlobalCounters { $(#[doc = $doc] pub $name: u64),* }
        impl Global {
            fn snapshot(&self) -> GlobalCounters {
                GlobalCounters { $($name: self.$name.load(Relaxed)),* }
            }
        }
        impl GlobalCounters {
            /// `(name, value)` pairs.
            pub fn list(&self) -> Vec<(String, u64)> {
                vec![$((stringify!($name).to_string(), self.$name)),*]
            }
        }
    };
}

global_counters! {
    rx_datagrams: "UDP datagrams received on the NAT-T socket",
    rx_gro_batches: "socket reads that carried several coalesced datagrams (UDP GRO)",
    rx_keepalive: "NAT keepalives received",
    rx_ike: "IKE messages received on the NAT-T socket (handed to the control side)",
    rx_malformed: "datagrams that are neither keepalive, IKE nor ESP (or truncated)",
    rx_unknown_spi: "ESP packets for an SPI we do not have (after holding them briefly, see EARLY_HOLD)",
    rx_early_delivered: "ESP packets that came before their SA was installed, held and then delivered",
    rx_esp_dropped: "ESP packets dropped by an SA (replay/auth/malformed/policy/expired: see the SA)",
    rx_dummy: "dummy ESP packets (next header 59)",
    rx_delivered: "inner packets written to the TUN device",
    tun_write_errors: "TUN write failures",
    tx_tun_packets: "packets read from the TUN device (after splitting super-packets)",
    tx_tun_super: "TUN reads that carried a TSO/USO super-packet split into several",
    tun_read_errors: "TUN reads that failed or carried a malformed super-packet",
    tx_no_sa: "outbound packets matching no Child SA",
    tx_acquire: "on-demand negotiations asked for by a trap (start_action = trap)",
    tx_not_ip: "outbound packets that are not IPv4/IPv6",
    tx_expired: "outbound packets refused by an SA past a hard limit",
    tx_sent: "ESP datagrams sent",
    tx_send_errors: "ESP datagrams the socket refused",
    tx_keepalive: "NAT keepalives sent",
    tx_ike: "IKE messages sent on the NAT-T socket",
}

/// Snapshot of all counters.
#[derive(Debug, Clone, Default)]
pub struct DataplaneCounters {
    pub global: GlobalCounters,
    pub children: Vec<ChildCounters>,
}

struct InEntry {
    sa: Arc<InboundSa>,
    spi_out: u32,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    /// Where the peer's ESP is expected from; a validated packet from
    /// elsewhere is reported once (`PeerSeen`) until the entry is replaced.
    peer: SocketAddr,
    moved_reported: AtomicBool,
}

impl Clone for InEntry {
    /// The same SA (shared) with the same settings; a fresh report flag.
    fn clone(&self) -> Self {
        InEntry {
            sa: self.sa.clone(),
            spi_out: self.spi_out,
            local_ts: self.local_ts.clone(),
            remote_ts: self.remote_ts.clone(),
            peer: self.peer,
            moved_reported: AtomicBool::new(false),
        }
    }
}

#[derive(Clone)]
struct OutEntry {
    sa: Arc<OutboundSa>,
    spi_in: u32,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    peer: SocketAddr,
    dst: (libc::sockaddr_storage, libc::socklen_t),
}

// SAFETY: sockaddr_storage is plain data.
unsafe impl Send for OutEntry {}
// SAFETY: as above; shared references only read it.
unsafe impl Sync for OutEntry {}

/// An on-demand trap: traffic for these selectors with no SA for it asks
/// the control side to negotiate one (`DataplaneEvent::Acquire`).
struct Trap {
    id: u64,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    /// Milliseconds since the dataplane started when it last fired (0 = never).
    fired_ms: AtomicU64,
}

/// An acquire is raised at most this often per trap.
const ACQUIRE_EVERY: Duration = Duration::from_secs(2);

impl spd::SpdEntry for OutEntry {
    fn spi_in(&self) -> u32 {
        self.spi_in
    }
    fn local_ts(&self) -> &[TrafficSelector] {
        &self.local_ts
    }
    fn remote_ts(&self) -> &[TrafficSelector] {
        &self.remote_ts
    }
    fn peer_ip(&self) -> IpAddr {
        self.peer.ip()
    }
}

/// What the packet threads look up. Every map is persistent (see [`spd`]):
/// a clone shares its nodes, so publishing a change costs O(log n).
#[derive(Default, Clone)]
struct Tables {
    /// The SAD, inbound: our SPI → SA.
    inbound: imbl::HashMap<u32, Arc<InEntry>>,
    /// The outbound SPD (first match wins), indexed; also by inbound SPI.
    outbound: spd::Spd<OutEntry>,
    traps: Vec<Arc<Trap>>,
}

impl Tables {
    /// Swap the outbound entry of the Child SA with inbound SPI `old_spi_in`
    /// for `o` (appended if there is none) and add `i` unless present.
    /// Returns the outbound entry replaced.
    fn replace_outbound(&mut self, old_spi_in: u32, i: Arc<InEntry>, o: Arc<OutEntry>) -> Option<Arc<OutEntry>> {
        let new_in = i.sa.spi();
        if !self.inbound.contains_key(&new_in) {
            self.inbound.insert(new_in, i);
        }
        self.outbound.insert(Some(old_spi_in), o)
    }

    /// Remove both halves of the Child SA whose inbound SPI (ours) is
    /// `spi_in`. Returns the outbound entry removed.
    fn remove_child(&mut self, spi_in: u32) -> Option<Arc<OutEntry>> {
        self.inbound.remove(&spi_in);
        self.outbound.remove(spi_in).map(|(_, e)| e)
    }
}

struct Shared {
    tables: ArcSwap<Tables>,
    /// Serialises control-side table edits and route changes.
    control: Mutex<spd::Routes>,
    stop: AtomicBool,
    started: std::time::Instant,
    udp: UdpSocket,
    udp_v6: bool,
    local: SocketAddr,
    tun: tun::Tun,
    tun_name: String,
    udp_gro: bool,
    mtu: u16,
    /// Link, address and route changes (rtnetlink, in the namespace we started in).
    netlink: crate::netlink::Netlink,
    global: Global,
    ike_sink: IkeSink,
    event_sink: EventSink,
}

/// The running data path. Dropping it shuts it down.
pub struct Dataplane {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Dataplane {
    /// Create the TUN device and the UDP socket in the current network
    /// namespace and start the packet loops.
    pub fn start(cfg: DataplaneConfig, ike_sink: IkeSink, event_sink: EventSink) -> io::Result<Dataplane> {
        let tun = tun::Tun::open(&cfg.tun_name, cfg.tun_kind)?;
        let tun_name = tun.name().to_string();
        let netlink = crate::netlink::Netlink::start(&tun_name)?;
        netlink.link_up(cfg.mtu)?;
        if tun.offload() {
            // Bound how many segments one TSO super-packet may carry, so
            // one read always fits the send batch (the kernel segments
            // anything larger itself). Best effort: old kernels lack it.
            if let Err(e) = netlink.set_gso_max_segs(tun::MAX_SEGS as u32) {
                tracing::debug!("gso_max_segs: {e}");
            }
        }
        for (a, l) in &cfg.tun_addrs {
            netlink.add_addr(*a, *l)?;
        }
        let udp = UdpSocket::bind(cfg.listen)?;
        udp.set_nonblocking(true)?;
        sys::set_bufs(udp.as_raw_fd(), 4 << 20);
        let udp_gro = sys::enable_udp_gro(udp.as_raw_fd());
        tracing::info!(tun = %tun_name, kind = ?cfg.tun_kind, tun_offload = tun.offload(), udp_gro, "dataplane up");
        let local = udp.local_addr()?;
        let shared = Arc::new(Shared {
            tables: ArcSwap::from_pointee(Tables::default()),
            control: Mutex::new(spd::Routes::default()),
            stop: AtomicBool::new(false),
            started: std::time::Instant::now(),
            udp_v6: local.is_ipv6(),
            local,
            udp,
            tun,
            tun_name,
            udp_gro,
            mtu: cfg.mtu,
            netlink,
            global: Global::default(),
            ike_sink,
            event_sink,
        });
        let batch = cfg.batch.clamp(1, 256);
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(std::thread::Builder::new().name("wisp-dp-tx".into()).spawn(move || tx_loop(&s, batch))?);
        let s = shared.clone();
        threads.push(std::thread::Builder::new().name("wisp-dp-rx".into()).spawn(move || rx_loop(&s, batch))?);
        if let Some(every) = cfg.keepalive {
            let s = shared.clone();
            threads.push(std::thread::Builder::new().name("wisp-dp-ka".into()).spawn(move || keepalive_loop(&s, every))?);
        }
        Ok(Dataplane { shared, threads: Mutex::new(threads) })
    }

    /// Put `a` (a virtual IP we were assigned) on the TUN device as a host
    /// address: the kernel then sources tunnel traffic from it.
    pub fn add_address(&self, a: std::net::IpAddr) -> std::io::Result<()> {
        self.shared.netlink.add_addr(a, if a.is_ipv4() { 32 } else { 128 })
    }

    /// Take a virtual IP off the TUN device again.
    pub fn remove_address(&self, a: std::net::IpAddr) -> std::io::Result<()> {
        self.shared.netlink.del_addr(a, if a.is_ipv4() { 32 } else { 128 })
    }

    /// The TUN device's name.
    pub fn tun_name(&self) -> &str {
        &self.shared.tun_name
    }

    /// Whether TUN offload (TSO in, GRO out) and UDP GRO are active.
    pub fn offloads(&self) -> (bool, bool) {
        (self.shared.tun.offload(), self.shared.udp_gro)
    }

    /// The NAT-T socket's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, spd::Routes> {
        self.shared.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entries(&self, spec: &ChildSaSpec) -> Result<(Arc<InEntry>, Arc<OutEntry>), DataplaneError> {
        let inbound = InboundSa::new(spec.spi_in, spec.aead, &spec.key_in, spec.esn, spec.limits)?;
        let outbound = OutboundSa::new(spec.spi_out, spec.aead, &spec.key_out, spec.esn, spec.limits)?;
        Ok((
            Arc::new(InEntry {
                sa: Arc::new(inbound),
                spi_out: spec.spi_out,
                local_ts: spec.local_ts.clone(),
                remote_ts: spec.remote_ts.clone(),
                peer: spec.peer,
                moved_reported: AtomicBool::new(false),
            }),
            Arc::new(OutEntry {
                sa: Arc::new(outbound),
                spi_in: spec.spi_in,
                local_ts: spec.local_ts.clone(),
                remote_ts: spec.remote_ts.clone(),
                peer: spec.peer,
                dst: sys::to_sockaddr(spec.peer, self.shared.udp_v6),
            }),
        ))
    }

    /// Install a Child SA pair, its SPD entry and routes to its remote selectors.
    pub fn install_child(&self, spec: ChildSaSpec) -> Result<(), DataplaneError> {
        let (i, o) = self.entries(&spec)?;
        let mut routes = self.lock();
        let mut t = Tables::clone(&self.shared.tables.load());
        if t.inbound.contains_key(&spec.spi_in) {
            return Err(DataplaneError::DuplicateSpi(spec.spi_in));
        }
        t.inbound.insert(spec.spi_in, i);
        let replaced = t.outbound.insert(None, o.clone());
        self.shared.tables.store(Arc::new(t));
        let mut touched = BTreeSet::new();
        if let Some(old) = replaced {
            routes.entry(&*old, false, &mut touched);
        }
        routes.entry(&*o, true, &mut touched);
        self.sync_routes(&mut routes, touched)
    }

    /// Install only the inbound half of `spec` (step 1 of a make-before-break
    /// rekey where both ends must accept the new SPI before either sends
    /// with it). [`replace_child`](Self::replace_child) with the same spec
    /// completes it.
    pub fn install_inbound(&self, spec: &ChildSaSpec) -> Result<(), DataplaneError> {
        let (i, _) = self.entries(spec)?;
        let _routes = self.lock();
        let mut t = Tables::clone(&self.shared.tables.load());
        if t.inbound.contains_key(&spec.spi_in) {
            return Err(DataplaneError::DuplicateSpi(spec.spi_in));
        }
        t.inbound.insert(spec.spi_in, i);
        self.shared.tables.store(Arc::new(t));
        Ok(())
    }

    /// Make-before-break rekey: install `new`'s inbound SA (unless
    /// [`install_inbound`](Self::install_inbound) did already), then swap the
    /// outbound entry of the old Child SA for `new`'s in one atomic store. The
    /// old inbound SA keeps accepting until [`remove_child`](Self::remove_child).
    ///
    /// Outbound entries are found by the Child SA's inbound SPI (ours,
    /// unique); the outbound SPI is the peer's choice, and another peer may
    /// well have chosen the same (`old_spi_out` is only informative).
    pub fn replace_child(&self, old_spi_in: u32, old_spi_out: u32, new: ChildSaSpec) -> Result<(), DataplaneError> {
        let _ = old_spi_out;
        let (i, o) = self.entries(&new)?;
        let mut routes = self.lock();
        let mut t = Tables::clone(&self.shared.tables.load());
        let replaced = t.replace_outbound(old_spi_in, i, o.clone());
        self.shared.tables.store(Arc::new(t));
        let mut touched = BTreeSet::new();
        if let Some(old) = replaced {
            routes.entry(&*old, false, &mut touched);
        }
        routes.entry(&*o, true, &mut touched);
        self.sync_routes(&mut routes, touched)
    }

    /// Install (or replace) the on-demand trap `id`: its remote selectors are
    /// routed to the TUN device, and a packet matching the selectors while no
    /// Child SA does raises `DataplaneEvent::Acquire { id }`.
    pub fn install_trap(&self, id: u64, local_ts: Vec<TrafficSelector>, remote_ts: Vec<TrafficSelector>) -> Result<(), DataplaneError> {
        let mut routes = self.lock();
        let mut t = Tables::clone(&self.shared.tables.load());
        t.traps.retain(|x| x.id != id);
        let mut touched = BTreeSet::new();
        routes.trap(id, Some(&remote_ts), &mut touched);
        t.traps.push(Arc::new(Trap { id, local_ts, remote_ts, fired_ms: AtomicU64::new(0) }));
        self.shared.tables.store(Arc::new(t));
        self.sync_routes(&mut routes, touched)
    }

    /// Remove the trap `id` (and routes nothing else needs).
    pub fn remove_trap(&self, id: u64) -> Result<(), DataplaneError> {
        let mut routes = self.lock();
        let mut t = Tables::clone(&self.shared.tables.load());
        t.traps.retain(|x| x.id != id);
        self.shared.tables.store(Arc::new(t));
        let mut touched = BTreeSet::new();
        routes.trap(id, None, &mut touched);
        self.sync_routes(&mut routes, touched)
    }

    /// The peer of the Child SA `(spi_in, spi_out)` moved to `peer` (its NAT
    /// mapping changed): send there from now on and expect it from there.
    /// The SAs themselves (keys, sequence numbers, replay window, counters)
    /// are kept. Either half may be missing (already removed).
    pub fn update_peer(&self, spi_in: u32, spi_out: u32, peer: SocketAddr) -> Result<(), DataplaneError> {
        let mut routes = self.lock();
        let mut t = Tables::clone(&self.shared.tables.load());
        let mut found = false;
        if let Some(e) = t.inbound.get(&spi_in).cloned() {
            t.inbound.insert(spi_in, Arc::new(InEntry { peer, ..InEntry::clone(&e) }));
            found = true;
        }
        let mut touched = BTreeSet::new();
        if let Some(e) = t.outbound.get(spi_in).cloned() {
            let moved = Arc::new(OutEntry { peer, dst: sys::to_sockaddr(peer, self.shared.udp_v6), ..OutEntry::clone(&e) });
            t.outbound.insert(Some(spi_in), moved.clone());
            routes.entry(&*e, false, &mut touched);
            routes.entry(&*moved, true, &mut touched);
            found = true;
        }
        if !found {
            return Err(DataplaneError::NoSuchChild(spi_out));
        }
        self.shared.tables.store(Arc::new(t));
        self.sync_routes(&mut routes, touched)
    }

    /// Remove the inbound SA `spi_in` and the outbound SA `spi_out` (either
    /// may already be gone), and routes no remaining SA needs.
    pub fn remove_child(&self, spi_in: u32, spi_out: u32) -> Result<(), DataplaneError> {
        let mut routes = self.lock();
        let _ = spi_out;
        let mut t = Tables::clone(&self.shared.tables.load());
        let removed = t.remove_child(spi_in);
        self.shared.tables.store(Arc::new(t));
        let mut touched = BTreeSet::new();
        if let Some(old) = removed {
            routes.entry(&*old, false, &mut touched);
        }
        self.sync_routes(&mut routes, touched)
    }

    /// Bring the kernel's routes for the `touched` blocks in line with what
    /// the tables want (see [`spd::Routes`]).
    fn sync_routes(&self, routes: &mut spd::Routes, touched: BTreeSet<spd::Cidr>) -> Result<(), DataplaneError> {
        let mut result = Ok(());
        for b @ (net, len) in touched {
            let (want, have) = (routes.wanted(b), routes.installed.contains(&b));
            if !want && have {
                if let Err(e) = self.shared.netlink.del_route(net, len) {
                    tracing::warn!("removing route {}: {e}", sys::cidr_string(net, len));
                }
                routes.installed.remove(&b);
            } else if want && !have {
                match self.shared.netlink.replace_route(net, len) {
                    Ok(()) => {
                        routes.installed.insert(b);
                    }
                    Err(e) => result = Err(DataplaneError::Io(e)),
                }
            }
        }
        result
    }

    /// Counters of the Child SA `(spi_in, spi_out)` (whichever halves exist).
    pub fn child_counters(&self, spi_in: u32, spi_out: u32) -> Option<ChildCounters> {
        let t = self.shared.tables.load();
        let i = t.inbound.get(&spi_in);
        let o = t.outbound.get(spi_in);
        if i.is_none() && o.is_none() {
            return None;
        }
        Some(ChildCounters {
            spi_in,
            spi_out,
            inbound: i.map(|e| e.sa.counters().snapshot()).unwrap_or_default(),
            outbound: o.map(|e| e.sa.counters().snapshot()).unwrap_or_default(),
        })
    }

    /// All counters.
    pub fn counters(&self) -> DataplaneCounters {
        let t = self.shared.tables.load();
        let mut children: Vec<ChildCounters> = t
            .inbound
            .values()
            .map(|i| {
                let o = t.outbound.get(i.sa.spi());
                ChildCounters {
                    spi_in: i.sa.spi(),
                    spi_out: i.spi_out,
                    inbound: i.sa.counters().snapshot(),
                    outbound: o.map(|e| e.sa.counters().snapshot()).unwrap_or_default(),
                }
            })
            .collect();
        children.sort_by_key(|c| c.spi_in);
        DataplaneCounters { global: self.shared.global.snapshot(), children }
    }

    /// Offload state (`tun_offload`, `udp_gro`: 1 = on), global counters
    /// and per-reason drop totals over live SAs, as `(name, value)` pairs
    /// for `wisp status`.
    pub fn counters_list(&self) -> Vec<(String, u64)> {
        let c = self.counters();
        let (tun_offload, udp_gro) = self.offloads();
        let mut v = vec![("tun_offload".to_string(), tun_offload as u64), ("udp_gro".to_string(), udp_gro as u64)];
        v.extend(c.global.list());
        for r in DropReason::ALL {
            let n: u64 = c.children.iter().map(|ch| ch.inbound.drops(r) + ch.outbound.drops(r)).sum();
            v.push((format!("sa_drop_{}", r.name()), n));
        }
        v
    }

    /// Send an IKE message on the NAT-T socket to `remote`, with the non-ESP marker.
    pub fn send_ike(&self, remote: SocketAddr, ike: &[u8]) -> io::Result<()> {
        let mut buf = vec![0u8; ike.len() + wisp_esp::NON_ESP_MARKER_LEN];
        wisp_esp::frame_ike(ike, &mut buf);
        let to = map_dst(remote, self.shared.udp_v6);
        loop {
            match self.shared.udp.send_to(&buf, to) {
                Ok(_) => {
                    self.shared.global.tx_ike.fetch_add(1, Relaxed);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sys::poll_in(-1, 1)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Send one NAT keepalive to `remote` now.
    pub fn send_keepalive(&self, remote: SocketAddr) -> io::Result<()> {
        self.shared.udp.send_to(&wisp_esp::NAT_KEEPALIVE, map_dst(remote, self.shared.udp_v6))?;
        self.shared.global.tx_keepalive.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Stop the packet loops and remove every SA and route. Idempotent.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Relaxed);
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        let mut routes = self.lock();
        self.shared.tables.store(Arc::new(Tables::default()));
        let all = routes.clear();
        let _ = self.sync_routes(&mut routes, all);
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn map_dst(a: SocketAddr, v6_socket: bool) -> SocketAddr {
    match (a, v6_socket) {
        (SocketAddr::V4(v4), true) => SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port()),
        _ => a,
    }
}

/// Outbound: TUN → SPD → seal → UDP. With TUN offload one read may carry
/// a TSO super-packet; `tun-rs` splits it straight into the send batch's
/// slots (at the ESP payload offset), each segment is sealed in place and
/// the run goes out as one UDP GSO message.
fn tx_loop(s: &Shared, batch_size: usize) {
    let tun_fd = s.tun.fd();
    let udp = s.udp.as_raw_fd();
    let slot = s.mtu as usize + ESP_OVERHEAD_MAX + 64;
    // Room for a full batch plus one super-packet's segments.
    let per_read = if s.tun.offload() { tun::MAX_SEGS } else { 1 };
    let mut batch = sys::SendBatch::new(batch_size + per_read, slot);
    let mut scratch = vec![0u8; if s.tun.offload() { tun::SCRATCH } else { 0 }];
    let mut sizes = vec![0usize; per_read];
    let mut need_poll = true;
    while !s.stop.load(Relaxed) {
        if need_poll {
            match sys::poll_in(tun_fd, 100) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
        }
        let tables = s.tables.load();
        // The segments of a TSO super-packet share their flow: one SPD
        // lookup for the run.
        let mut last: Option<(selectors::Flow, &OutEntry)> = None;
        need_poll = false;
        while batch.free() >= per_read {
            let start = batch.count;
            let n = match s.tun.recv(&mut scratch, &mut batch.bufs[start..start + per_read], &mut sizes, PAYLOAD_OFFSET) {
                Ok(0) => {
                    need_poll = true;
                    break;
                }
                Ok(n) => n,
                Err(e) => {
                    s.global.tun_read_errors.fetch_add(1, Relaxed);
                    tracing::debug!("TUN read: {e}");
                    if e.raw_os_error().is_some() {
                        // An OS error, not a bad super-packet: back off.
                        need_poll = true;
                        break;
                    }
                    continue;
                }
            };
            s.global.tx_tun_packets.fetch_add(n as u64, Relaxed);
            if n > 1 {
                s.global.tx_tun_super.fetch_add(1, Relaxed);
            }
            for (k, &len) in sizes[..n].iter().enumerate() {
                let slot = start + k;
                if let Some((sealed, dst)) = seal_one(s, &tables, &mut last, &mut batch.bufs[slot], len) {
                    // Keep committed slots contiguous when a segment was dropped.
                    let next = batch.count;
                    if slot != next {
                        batch.bufs.swap(slot, next);
                    }
                    batch.push(sealed, dst);
                }
            }
        }
        drop(tables);
        if batch.count > 0 {
            let (sent, failed) = batch.flush(udp);
            s.global.tx_sent.fetch_add(sent as u64, Relaxed);
            s.global.tx_send_errors.fetch_add(failed as u64, Relaxed);
        }
    }
}

/// SPD lookup and seal of the inner packet at `buf[PAYLOAD_OFFSET..][..n]`.
/// Returns the ESP datagram length and destination, or `None` (counted).
fn seal_one<'t>(
    s: &Shared,
    tables: &'t Tables,
    last: &mut Option<(selectors::Flow, &'t OutEntry)>,
    buf: &mut [u8],
    n: usize,
) -> Option<(usize, (libc::sockaddr_storage, libc::socklen_t))> {
    let inner = &buf[PAYLOAD_OFFSET..PAYLOAD_OFFSET + n];
    let Some(flow) = selectors::parse(inner) else {
        s.global.tx_not_ip.fetch_add(1, Relaxed);
        return None;
    };
    let nh = if flow.src.is_ipv4() { NEXT_HEADER_IPV4 } else { NEXT_HEADER_IPV6 };
    let found = match *last {
        Some((f, e)) if f == flow => Some(e),
        _ => tables.outbound.find(&flow).map(|e| &**e),
    };
    let Some(e) = found else {
        s.global.tx_no_sa.fetch_add(1, Relaxed);
        if let Some(trap) = tables.traps.iter().find(|x| selectors::matches_outbound(&x.local_ts, &x.remote_ts, &flow)) {
            acquire(s, trap);
        }
        return None;
    };
    *last = Some((flow, e));
    match e.sa.seal_in_place(buf, n, nh) {
        Ok(sealed) => {
            if let Some(ev) = sealed.event {
                (s.event_sink)(DataplaneEvent::Limit { spi_in: e.spi_in, spi_out: e.sa.spi(), outbound: true, event: ev });
            }
            Some((sealed.len, e.dst))
        }
        Err(SealError::Expired { kind, first }) => {
            s.global.tx_expired.fetch_add(1, Relaxed);
            if first {
                (s.event_sink)(DataplaneEvent::Limit {
                    spi_in: e.spi_in,
                    spi_out: e.sa.spi(),
                    outbound: true,
                    event: LimitEvent::Hard(kind),
                });
            }
            None
        }
        Err(SealError::BufferTooSmall { .. }) => {
            s.global.tx_not_ip.fetch_add(1, Relaxed);
            None
        }
    }
}

/// Raise `Acquire` for `trap` unless it fired less than [`ACQUIRE_EVERY`] ago.
fn acquire(s: &Shared, trap: &Trap) {
    let now = (s.started.elapsed().as_millis() as u64).max(1);
    let last = trap.fired_ms.load(Relaxed);
    if last != 0 && now.saturating_sub(last) < ACQUIRE_EVERY.as_millis() as u64 {
        return;
    }
    if trap.fired_ms.compare_exchange(last, now, Relaxed, Relaxed).is_ok() {
        s.global.tx_acquire.fetch_add(1, Relaxed);
        (s.event_sink)(DataplaneEvent::Acquire { id: trap.id });
    }
}

/// Inner packets waiting for the TUN device, each `[headroom | packet]`
/// in its own preallocated buffer (room for GRO to append to it).
struct TunOut {
    bufs: Vec<Vec<u8>>,
    count: usize,
    gro: tun_rs::GROTable,
}

impl TunOut {
    fn new(n: usize) -> Self {
        TunOut { bufs: (0..n).map(|_| Vec::with_capacity(tun::SCRATCH + 64)).collect(), count: 0, gro: tun_rs::GROTable::default() }
    }
    fn push(&mut self, s: &Shared, inner: &[u8]) {
        let b = &mut self.bufs[self.count];
        b.clear();
        b.resize(tun::HEADROOM, 0);
        b.extend_from_slice(inner);
        self.count += 1;
        if self.count == self.bufs.len() {
            self.flush(s);
        }
    }
    fn flush(&mut self, s: &Shared) {
        if self.count == 0 {
            return;
        }
        let n = self.count;
        self.count = 0;
        let failed = s.tun.send(&mut self.gro, &mut self.bufs[..n], tun::HEADROOM);
        if failed > 0 {
            s.global.tun_write_errors.fetch_add(failed as u64, Relaxed);
        }
    }
}

/// ESP for an SPI we do not have yet is held this long (at most
/// [`EARLY_HOLD_MAX`] packets per receive loop, the oldest making room):
/// a peer answering IKE_AUTH or CREATE_CHILD_SA may send on the new Child
/// SA before our side has processed the answer and installed it.
const EARLY_HOLD: Duration = Duration::from_millis(250);
const EARLY_HOLD_MAX: usize = 32;
/// Larger packets are not held (bounds the hold at 128 KiB per loop).
const EARLY_HOLD_BYTES: usize = 4096;

/// Packets held for an SPI not installed yet: (when, SPI, bytes, source).
#[derive(Default)]
struct Early(std::collections::VecDeque<(Instant, u32, Vec<u8>, libc::sockaddr_storage)>);

impl Early {
    fn hold(&mut self, s: &Shared, spi: u32, pkt: &[u8], from: &libc::sockaddr_storage) {
        if pkt.len() > EARLY_HOLD_BYTES {
            s.global.rx_unknown_spi.fetch_add(1, Relaxed);
            return;
        }
        if self.0.len() >= EARLY_HOLD_MAX {
            s.global.rx_unknown_spi.fetch_add(1, Relaxed);
            self.0.pop_front();
        }
        self.0.push_back((Instant::now(), spi, pkt.to_vec(), *from));
    }

    /// Deliver what became deliverable, count what waited too long.
    fn retry(&mut self, s: &Shared, tables: &Tables, out: &mut TunOut) {
        if self.0.is_empty() {
            return;
        }
        let mut keep = std::collections::VecDeque::new();
        for (at, spi, mut pkt, from) in self.0.drain(..) {
            if tables.inbound.contains_key(&spi) {
                if let Some(r) = open_one(s, tables, &mut pkt, &from, None) {
                    s.global.rx_early_delivered.fetch_add(1, Relaxed);
                    out.push(s, &pkt[r]);
                }
            } else if at.elapsed() >= EARLY_HOLD {
                s.global.rx_unknown_spi.fetch_add(1, Relaxed);
            } else {
                keep.push_back((at, spi, pkt, from));
            }
        }
        self.0 = keep;
    }
}

/// Inbound: UDP (GRO batches split by their segment size) → classify →
/// SAD → open → selector check → TUN (coalesced with offload).
fn rx_loop(s: &Shared, batch_size: usize) {
    let udp = s.udp.as_raw_fd();
    // With UDP GRO one read may carry up to 64 KB of datagrams.
    let (msgs, size) = if s.udp_gro { (batch_size.div_ceil(8).max(4), 65536) } else { (batch_size, 16 * 1024) };
    let mut batch = sys::RecvBatch::new(msgs, size);
    let mut out = TunOut::new(batch_size.max(tun::MAX_SEGS));
    let mut early = Early::default();
    while !s.stop.load(Relaxed) {
        let n = match batch.recv(udp) {
            Ok(0) => {
                if !early.0.is_empty() {
                    let tables = s.tables.load();
                    early.retry(s, &tables, &mut out);
                    out.flush(s);
                }
                let _ = sys::poll_in(udp, if early.0.is_empty() { 100 } else { 10 });
                continue;
            }
            Ok(n) => n,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let tables = s.tables.load();
        for i in 0..n {
            let len = batch.lens[i];
            let seg = batch.segs[i].max(1);
            if len > seg {
                s.global.rx_gro_batches.fetch_add(1, Relaxed);
            }
            let from = batch.addrs[i];
            let mut off = 0;
            while off < len {
                let end = (off + seg).min(len);
                let pkt = &mut batch.bufs[i][off..end];
                off = end;
                s.global.rx_datagrams.fetch_add(1, Relaxed);
                if let Some(r) = open_one(s, &tables, pkt, &from, Some(&mut early)) {
                    out.push(s, &pkt[r]);
                }
            }
        }
        early.retry(s, &tables, &mut out);
        drop(tables);
        out.flush(s);
    }
}

/// One received datagram: keepalive / IKE (to the sink) / ESP. Returns
/// the range of an accepted inner packet within `pkt`.
fn open_one(s: &Shared, tables: &Tables, pkt: &mut [u8], from: &libc::sockaddr_storage, early: Option<&mut Early>) -> Option<Range<usize>> {
    match wisp_esp::classify(pkt) {
        Classified::Keepalive => {
            s.global.rx_keepalive.fetch_add(1, Relaxed);
            None
        }
        Classified::Ike => {
            s.global.rx_ike.fetch_add(1, Relaxed);
            if let Some(remote) = sys::from_sockaddr(from) {
                (s.ike_sink)(s.local, remote, &pkt[wisp_esp::NON_ESP_MARKER_LEN..]);
            }
            None
        }
        Classified::Malformed => {
            s.global.rx_malformed.fetch_add(1, Relaxed);
            None
        }
        Classified::Esp(spi) => {
            let Some(e) = tables.inbound.get(&spi) else {
                match early {
                    Some(h) => h.hold(s, spi, pkt, from),
                    None => {
                        s.global.rx_unknown_spi.fetch_add(1, Relaxed);
                    }
                }
                return None;
            };
            match e.sa.open(pkt) {
                Ok(o) => {
                    if let Some(ev) = o.event {
                        (s.event_sink)(DataplaneEvent::Limit { spi_in: spi, spi_out: e.spi_out, outbound: false, event: ev });
                    }
                    let ok =
                        selectors::parse(&pkt[o.range.clone()]).is_some_and(|f| selectors::matches_inbound(&e.local_ts, &e.remote_ts, &f));
                    if !ok {
                        e.sa.counters().count_drop(DropReason::Policy);
                        s.global.rx_esp_dropped.fetch_add(1, Relaxed);
                        return None;
                    }
                    s.global.rx_delivered.fetch_add(1, Relaxed);
                    if !sys::sockaddr_is(from, e.peer) && !e.moved_reported.swap(true, Relaxed) {
                        if let Some(from) = sys::from_sockaddr(from) {
                            (s.event_sink)(DataplaneEvent::PeerSeen { spi_in: spi, spi_out: e.spi_out, from });
                        }
                    }
                    Some(o.range)
                }
                Err(OpenError::Dummy) => {
                    s.global.rx_dummy.fetch_add(1, Relaxed);
                    None
                }
                Err(err) => {
                    s.global.rx_esp_dropped.fetch_add(1, Relaxed);
                    if let OpenError::Expired { kind, first: true } = err {
                        (s.event_sink)(DataplaneEvent::Limit {
                            spi_in: spi,
                            spi_out: e.spi_out,
                            outbound: false,
                            event: LimitEvent::Hard(kind),
                        });
                    }
                    None
                }
            }
        }
    }
}

fn keepalive_loop(s: &Shared, every: Duration) {
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    while !s.stop.load(Relaxed) {
        std::thread::sleep(step);
        waited += step;
        if waited < every {
            continue;
        }
        waited = Duration::ZERO;
        let peers: BTreeSet<SocketAddr> = s.tables.load().outbound.iter().map(|e| e.peer).collect();
        for p in peers {
            if s.udp.send_to(&wisp_esp::NAT_KEEPALIVE, map_dst(p, s.udp_v6)).is_ok() {
                s.global.tx_keepalive.fetch_add(1, Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod spi_ownership {
    use super::*;

    fn child(spi_in: u32, spi_out: u32, peer: &str, net: &str) -> (Arc<InEntry>, Arc<OutEntry>) {
        let km = Keymat::new(&[7u8; 36]);
        let peer: SocketAddr = peer.parse().unwrap();
        let ts = vec![crate::config::parse_ts(net).unwrap()];
        let i = InEntry {
            sa: Arc::new(InboundSa::new(spi_in, Aead::AesGcm256, &km, false, Limits::default()).unwrap()),
            spi_out,
            local_ts: ts.clone(),
            remote_ts: ts.clone(),
            peer,
            moved_reported: AtomicBool::new(false),
        };
        let o = OutEntry {
            sa: Arc::new(OutboundSa::new(spi_out, Aead::AesGcm256, &km, false, Limits::default()).unwrap()),
            spi_in,
            local_ts: ts.clone(),
            remote_ts: ts,
            peer,
            dst: sys::to_sockaddr(peer, false),
        };
        (Arc::new(i), Arc::new(o))
    }

    fn install(t: &mut Tables, (i, o): (Arc<InEntry>, Arc<OutEntry>)) {
        t.inbound.insert(i.sa.spi(), i);
        t.outbound.insert(None, o);
    }

    fn outbound_of(t: &Tables, spi_in: u32) -> Option<(u32, SocketAddr)> {
        t.outbound.get(spi_in).map(|e| (e.sa.spi(), e.peer))
    }

    /// Finding (issue 10): outbound entries were found by the outbound SPI,
    /// which the peer chooses; a peer choosing the SPI another connection
    /// sends with removed or replaced that connection's outbound SA.
    #[test]
    fn peer_choosing_another_connections_esp_spi_disturbs_nothing() {
        let mut t = Tables::default();
        install(&mut t, child(0x1000_0001, 0xcafe_0001, "192.0.2.1:4500", "10.1.0.0/16"));
        // Peer B picked the same SPI for its inbound SA (our outbound).
        install(&mut t, child(0x2000_0002, 0xcafe_0001, "192.0.2.2:4500", "10.2.0.0/16"));
        // B rekeys: its outbound entry (found by our inbound SPI) is swapped.
        let (ni, no) = child(0x2000_0003, 0xcafe_0001, "192.0.2.2:4500", "10.2.0.0/16");
        t.replace_outbound(0x2000_0002, ni, no);
        assert_eq!(outbound_of(&t, 0x1000_0001), Some((0xcafe_0001, "192.0.2.1:4500".parse().unwrap())), "A untouched by B's rekey");
        assert!(outbound_of(&t, 0x2000_0003).is_some());
        assert!(outbound_of(&t, 0x2000_0002).is_none());
        // B's old and new Child SAs go away.
        t.remove_child(0x2000_0002);
        t.remove_child(0x2000_0003);
        assert_eq!(outbound_of(&t, 0x1000_0001), Some((0xcafe_0001, "192.0.2.1:4500".parse().unwrap())), "A untouched by B's delete");
        assert!(t.inbound.contains_key(&0x1000_0001));
        assert_eq!(t.outbound.len(), 1);
        assert_eq!(t.inbound.len(), 1);
    }
}
