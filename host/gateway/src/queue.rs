//! Bounded command queues in front of the engine drivers.
//!
//! Each driver thread reads one channel. What may wait in it is capped, by
//! kind, so that a slow plugin, a stuck engine or a flood never grows memory
//! without bound:
//!
//! - IKE datagrams and dataplane notices: at most [`DATAGRAM_SLOTS`] per
//!   connection, at most [`DATAGRAM_BYTES`] of datagram bytes per connection and
//!   [`GLOBAL_DATAGRAM_BYTES`] for the whole daemon. Beyond that they are dropped
//!   (never allocated) and counted.
//! - Control commands (`up`, `down`, `rekey`, reconfigure): at most
//!   [`COMMAND_SLOTS`]; beyond that the caller gets an error.
//! - `Shutdown` always gets through (one per driver).
//!
//! The counters show in `wisp status` per connection and daemon-wide.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use crate::driver::Cmd;
use crate::status::QueueStatus;

/// Datagrams + notices waiting for one driver.
pub const DATAGRAM_SLOTS: usize = 256;
/// Datagram bytes waiting for one driver.
pub const DATAGRAM_BYTES: usize = 1 << 20;
/// Datagram bytes waiting for all drivers together.
pub const GLOBAL_DATAGRAM_BYTES: usize = 16 << 20;
/// Control commands waiting for one driver.
pub const COMMAND_SLOTS: usize = 64;

/// Daemon-wide queue counters (all connections).
#[derive(Default)]
pub struct Global {
    bytes: AtomicUsize,
    dropped_datagrams: AtomicU64,
    dropped_notices: AtomicU64,
    refused_commands: AtomicU64,
    /// IKE datagrams for which no connection exists (not queued at all).
    unrouted: AtomicU64,
    /// Of those, IKE_SA_INIT requests whose addresses match no connection.
    unmatched_init: AtomicU64,
    /// The last such request: its source and when (for `wisp status` and
    /// the rate-limited warning).
    last_unmatched: std::sync::Mutex<Option<(std::net::SocketAddr, std::time::Instant)>>,
    last_warned: std::sync::Mutex<Option<std::time::Instant>>,
}

/// The warning about IKE_SA_INIT requests that match no connection is
/// logged at most this often (the counter counts them all).
const UNMATCHED_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Global {
    /// A datagram no connection takes. `init`: it is an IKE_SA_INIT request
    /// (no SA of ours), counted and remembered apart.
    pub fn count_unrouted(&self, remote: std::net::SocketAddr, init: bool) {
        self.unrouted.fetch_add(1, Relaxed);
        if !init {
            return;
        }
        let n = self.unmatched_init.fetch_add(1, Relaxed) + 1;
        let now = std::time::Instant::now();
        *self.last_unmatched.lock().unwrap_or_else(|p| p.into_inner()) = Some((remote, now));
        let mut w = self.last_warned.lock().unwrap_or_else(|p| p.into_inner());
        if w.is_none_or(|t| now.duration_since(t) >= UNMATCHED_WARN_EVERY) {
            *w = Some(now);
            tracing::warn!(
                "IKE_SA_INIT from {remote} matches no connection's local_addrs/remote_addrs ({n} such requests since start; logged at most every {}s)",
                UNMATCHED_WARN_EVERY.as_secs()
            );
        }
    }

    /// The source of the last IKE_SA_INIT that matched no connection, and
    /// how long ago it came.
    pub fn last_unmatched(&self) -> Option<(std::net::SocketAddr, std::time::Duration)> {
        self.last_unmatched.lock().unwrap_or_else(|p| p.into_inner()).map(|(a, t)| (a, t.elapsed()))
    }

    /// `(name, value)` pairs for `wisp status`.
    pub fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("ike_queue_bytes".into(), self.bytes.load(Relaxed) as u64),
            ("ike_queue_dropped".into(), self.dropped_datagrams.load(Relaxed)),
            ("notice_queue_dropped".into(), self.dropped_notices.load(Relaxed)),
            ("command_queue_refused".into(), self.refused_commands.load(Relaxed)),
            ("ike_unrouted".into(), self.unrouted.load(Relaxed)),
            ("ike_init_unmatched".into(), self.unmatched_init.load(Relaxed)),
        ]
    }
}

/// Per-connection counters, shared by the senders and the driver.
#[derive(Default)]
pub struct Stats {
    slots: AtomicUsize,
    bytes: AtomicUsize,
    commands: AtomicUsize,
    high_water: AtomicUsize,
    dropped_datagrams: AtomicU64,
    dropped_notices: AtomicU64,
    refused_commands: AtomicU64,
}

impl Stats {
    pub fn snapshot(&self) -> QueueStatus {
        QueueStatus {
            depth: self.slots.load(Relaxed) as u64,
            bytes: self.bytes.load(Relaxed) as u64,
            commands: self.commands.load(Relaxed) as u64,
            high_water: self.high_water.load(Relaxed) as u64,
            capacity: DATAGRAM_SLOTS as u64,
            dropped_datagrams: self.dropped_datagrams.load(Relaxed),
            dropped_notices: self.dropped_notices.load(Relaxed),
            refused_commands: self.refused_commands.load(Relaxed),
        }
    }
}

/// Why a command was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The driver has exited.
    Stopped,
    /// Its queue is full (the engine is busy, e.g. in a slow plugin).
    Full,
}

/// Take one slot of `counter` below `cap`; false when full.
fn take(counter: &AtomicUsize, cap: usize) -> bool {
    counter.fetch_update(Relaxed, Relaxed, |n| (n < cap).then_some(n + 1)).is_ok()
}

/// Take `n` bytes of `counter` below `cap`; false when they do not fit.
fn take_bytes(counter: &AtomicUsize, n: usize, cap: usize) -> bool {
    counter.fetch_update(Relaxed, Relaxed, |b| b.checked_add(n).filter(|t| *t <= cap)).is_ok()
}

/// The sending side of a driver's queue.
#[derive(Clone)]
pub struct DriverTx {
    tx: Sender<Cmd>,
    stats: Arc<Stats>,
    global: Arc<Global>,
}

/// The driver's side.
pub struct DriverRx {
    rx: Receiver<Cmd>,
    stats: Arc<Stats>,
    global: Arc<Global>,
}

pub fn channel(global: Arc<Global>) -> (DriverTx, DriverRx) {
    let (tx, rx) = mpsc::channel();
    let stats = Arc::new(Stats::default());
    (DriverTx { tx, stats: stats.clone(), global: global.clone() }, DriverRx { rx, stats, global })
}

impl DriverTx {
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Queue an IKE datagram, copying it only when it fits; counted drop otherwise.
    pub fn datagram(&self, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) -> Result<(), Refused> {
        let s = &self.stats;
        if !take(&s.slots, DATAGRAM_SLOTS) {
            s.dropped_datagrams.fetch_add(1, Relaxed);
            self.global.dropped_datagrams.fetch_add(1, Relaxed);
            return Err(Refused::Full);
        }
        if !take_bytes(&s.bytes, bytes.len(), DATAGRAM_BYTES) {
            s.slots.fetch_sub(1, Relaxed);
            s.dropped_datagrams.fetch_add(1, Relaxed);
            self.global.dropped_datagrams.fetch_add(1, Relaxed);
            return Err(Refused::Full);
        }
        if !take_bytes(&self.global.bytes, bytes.len(), GLOBAL_DATAGRAM_BYTES) {
            s.slots.fetch_sub(1, Relaxed);
            s.bytes.fetch_sub(bytes.len(), Relaxed);
            s.dropped_datagrams.fetch_add(1, Relaxed);
            self.global.dropped_datagrams.fetch_add(1, Relaxed);
            return Err(Refused::Full);
        }
        s.high_water.fetch_max(s.slots.load(Relaxed), Relaxed);
        let cmd = Cmd::Datagram { local, remote, bytes: bytes.to_vec() };
        self.tx.send(cmd).map_err(|e| {
            release(&e.0, s, &self.global);
            Refused::Stopped
        })
    }

    /// Queue any other command: notices share the datagram slots, control
    /// commands have their own, `Shutdown` is never refused.
    pub fn send(&self, cmd: Cmd) -> Result<(), Refused> {
        let s = &self.stats;
        match &cmd {
            Cmd::Datagram { local, remote, bytes } => return self.datagram(*local, *remote, bytes),
            Cmd::Limit { .. } | Cmd::PeerSeen { .. } | Cmd::Acquire { .. } | Cmd::PolicyReady => {
                if !take(&s.slots, DATAGRAM_SLOTS) {
                    s.dropped_notices.fetch_add(1, Relaxed);
                    self.global.dropped_notices.fetch_add(1, Relaxed);
                    return Err(Refused::Full);
                }
                s.high_water.fetch_max(s.slots.load(Relaxed), Relaxed);
            }
            Cmd::Shutdown { .. } => {}
            _ => {
                if !take(&s.commands, COMMAND_SLOTS) {
                    s.refused_commands.fetch_add(1, Relaxed);
                    self.global.refused_commands.fetch_add(1, Relaxed);
                    return Err(Refused::Full);
                }
            }
        }
        self.tx.send(cmd).map_err(|e| {
            release(&e.0, s, &self.global);
            Refused::Stopped
        })
    }
}

/// Give back what `cmd` held in the counters.
fn release(cmd: &Cmd, s: &Stats, g: &Global) {
    match cmd {
        Cmd::Datagram { bytes, .. } => {
            s.slots.fetch_sub(1, Relaxed);
            s.bytes.fetch_sub(bytes.len(), Relaxed);
            g.bytes.fetch_sub(bytes.len(), Relaxed);
        }
        Cmd::Limit { .. } | Cmd::PeerSeen { .. } | Cmd::Acquire { .. } | Cmd::PolicyReady => {
            s.slots.fetch_sub(1, Relaxed);
        }
        Cmd::Shutdown { .. } => {}
        _ => {
            s.commands.fetch_sub(1, Relaxed);
        }
    }
}

impl DriverRx {
    pub fn recv_timeout(&self, wait: Duration) -> Result<Cmd, RecvTimeoutError> {
        let cmd = self.rx.recv_timeout(wait)?;
        release(&cmd, &self.stats, &self.global);
        Ok(cmd)
    }
}

impl Drop for DriverRx {
    fn drop(&mut self) {
        // Whatever is still queued gives its bytes back to the daemon-wide budget.
        while let Ok(cmd) = self.rx.try_recv() {
            release(&cmd, &self.stats, &self.global);
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Stopped => "driver stopped",
            Refused::Full => "driver busy (command queue full)",
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::path::Path;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Condvar, Mutex};
    use std::time::Instant;

    use tokio::sync::oneshot;
    use wisp_policy_api::{AuthInfo, PeerContext, Policy, PolicyError, Proposal, ProposalChoice, SaKind, SelectorPair, SelectorRequest};

    use super::*;
    use crate::config::Config;
    use crate::driver::{self, Env};

    /// A policy whose every decision waits until the gate opens (a plugin
    /// stuck in a slow call), then answers permissively.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        cv: Condvar,
        calls: AtomicUsize,
    }

    impl Gate {
        fn wait(&self) {
            self.calls.fetch_add(1, Relaxed);
            let mut g = self.open.lock().unwrap();
            while !*g {
                g = self.cv.wait(g).unwrap();
            }
        }
        fn release(&self) {
            *self.open.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    impl Policy for Gate {
        fn describe(&self) -> String {
            "gate".into()
        }
        fn select_proposal(&self, _: &PeerContext, _: SaKind, _: &[Proposal], _: &[Proposal]) -> Result<ProposalChoice, PolicyError> {
            self.wait();
            Ok(ProposalChoice { index: 0, transforms: Vec::new() })
        }
        fn order_proposals(&self, _: &PeerContext, _: SaKind, c: &[Proposal]) -> Result<Vec<usize>, PolicyError> {
            self.wait();
            Ok((0..c.len()).collect())
        }
        fn authorize(&self, _: &PeerContext, _: &AuthInfo) -> Result<(), PolicyError> {
            self.wait();
            Ok(())
        }
        fn narrow_selectors(&self, _: &PeerContext, r: &SelectorRequest) -> Result<SelectorPair, PolicyError> {
            self.wait();
            Ok(SelectorPair { remote: r.remote_configured.clone(), local: r.local_configured.clone() })
        }
    }

    struct NullDataplane;
    impl crate::dp::Dataplane for NullDataplane {
        fn install_child(&self, _: &wisp_ike::event::ChildSaInfo) -> anyhow::Result<()> {
            Ok(())
        }
        fn rekey_child(&self, _: u32, _: u32, _: &wisp_ike::event::ChildSaInfo) -> anyhow::Result<()> {
            Ok(())
        }
        fn install_trap(
            &self,
            _: u64,
            _: &[wisp_policy_api::TrafficSelector],
            _: &[wisp_policy_api::TrafficSelector],
        ) -> anyhow::Result<()> {
            Ok(())
        }
        fn remove_trap(&self, _: u64) -> anyhow::Result<()> {
            Ok(())
        }
        fn update_peer(&self, _: u32, _: u32, _: SocketAddr) -> anyhow::Result<()> {
            Ok(())
        }
        fn remove_child(&self, _: u32, _: u32) -> anyhow::Result<()> {
            Ok(())
        }
        fn child_counters(&self, _: u32, _: u32) -> Option<crate::dp::ChildCounters> {
            None
        }
        fn send_ike(&self, _: SocketAddr, _: SocketAddr, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
        fn add_address(&self, _: std::net::IpAddr) -> anyhow::Result<()> {
            Ok(())
        }
        fn remove_address(&self, _: std::net::IpAddr) -> anyhow::Result<()> {
            Ok(())
        }
        fn counters(&self) -> Vec<(String, u64)> {
            Vec::new()
        }
        fn shutdown(&self) {}
    }

    const CFG: &str = r#"
[connections.stuck]
local_addrs = ["127.0.0.1"]
remote_addrs = ["127.0.0.2"]
remote.id = "peer.wisp.test"
auth.psk = "0123456789abcdef"
[connections.stuck.children.net]
local_ts = ["10.98.1.0/24"]
remote_ts = ["10.98.2.0/24"]
[connections.other]
local_addrs = ["127.0.0.1"]
remote_addrs = ["127.0.0.3"]
auth.psk = "0123456789abcdef"
[connections.other.children.net]
local_ts = ["10.97.1.0/24"]
remote_ts = ["10.97.2.0/24"]
"#;

    fn rss() -> usize {
        let s = std::fs::read_to_string("/proc/self/statm").unwrap();
        s.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4096
    }

    fn spawn(env: &Env, policy: Arc<Gate>, cfg: &Config, name: &str) -> driver::DriverHandle {
        let env = Env { policy, ..env.clone() };
        let c = &cfg.connections[name];
        let ec = driver::engine_conn(cfg, name, c).unwrap();
        driver::spawn(env, ec, crate::gateway::conn_status(name, c), false).unwrap()
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn flood_into_a_stuck_engine_is_bounded_and_counted() {
        let cfg = Config::parse(CFG, Path::new("t.toml")).unwrap();
        let env = Env {
            epoch: Instant::now(),
            policy: Arc::new(Gate::default()),
            registry: Arc::new(crate::policy::SaRegistry::default()),
            dataplane: Arc::new(NullDataplane),
            ike_sockets: Arc::new(vec![UdpSocket::bind("127.0.0.1:0").unwrap()]),
            spis: Arc::new(driver::SpiTable::default()),
            admission: Arc::new(std::sync::Mutex::new(wisp_ike::admission::Admission::new(
                wisp_ike::admission::AdmissionConfig::default(),
                [7; 32],
                Duration::ZERO,
            ))),
            spi_pool: Arc::new(wisp_ike::spi_pool::SpiPool::default()),
            queues: Arc::new(Global::default()),
            decisions: None,
            notices: Default::default(),
            pools: Arc::new(wisp_ike::pool::Pools::default()),
            eap_users: Default::default(),
            dns_hook: crate::dns_hook::DnsHook::new("wisp0", None),
            tun_vips: Default::default(),
        };
        let gate = Arc::new(Gate::default());
        let open = Arc::new(Gate::default());
        open.release();
        let stuck = spawn(&env, gate.clone(), &cfg, "stuck");
        let other = spawn(&env, open.clone(), &cfg, "other");

        // `up` makes the stuck driver call the policy, which never returns.
        let (up_tx, _up_rx) = oneshot::channel();
        stuck.tx.send(Cmd::Up { child: None, reply: up_tx }).unwrap();
        wait_until("the driver to enter the policy", || gate.calls.load(Relaxed) > 0);

        // 10,000 datagrams of 60,000 bytes (600 MB if queued) and 10,000 small ones.
        let (l, r): (SocketAddr, SocketAddr) = ("127.0.0.1:500".parse().unwrap(), "127.0.0.2:500".parse().unwrap());
        let before = rss();
        let big = vec![0x5au8; 60_000];
        let small = vec![0xa5u8; 100];
        let mut accepted = 0u64;
        for i in 0..20_000 {
            let b = if i < 10_000 { &big[..] } else { &small[..] };
            match stuck.tx.datagram(l, r, b) {
                Ok(()) => accepted += 1,
                Err(e) => assert_eq!(e, Refused::Full),
            }
        }
        let grown = rss().saturating_sub(before);
        let q = stuck.tx.stats().snapshot();
        println!("stuck engine: {accepted} of 20000 queued, {q:?}, RSS grew by {} KiB", grown / 1024);
        assert_eq!(q.depth, DATAGRAM_SLOTS as u64, "{q:?}");
        assert_eq!(accepted, DATAGRAM_SLOTS as u64);
        assert!(q.bytes <= DATAGRAM_BYTES as u64, "{q:?}");
        assert_eq!(q.dropped_datagrams, 20_000 - accepted);
        assert!(grown < 32 << 20, "memory grew by {grown} bytes while the engine was stuck");
        let global: std::collections::HashMap<String, u64> = env.queues.counters().into_iter().collect();
        assert_eq!(global["ike_queue_dropped"], 20_000 - accepted);
        assert_eq!(global["ike_queue_bytes"], q.bytes);

        // Notices and control commands are capped too.
        for i in 0..100 {
            assert_eq!(stuck.tx.send(Cmd::Acquire { id: i }), Err(Refused::Full));
        }
        let mut refused = 0;
        for _ in 0..100 {
            // The answers are not awaited (like `up` callers that timed out).
            let (t, r) = oneshot::channel();
            std::mem::forget(r);
            if stuck.tx.send(Cmd::Down { reply: t }) == Err(Refused::Full) {
                refused += 1;
            }
        }
        let q = stuck.tx.stats().snapshot();
        assert_eq!((q.dropped_notices, q.refused_commands, refused), (100, 100 - COMMAND_SLOTS as u64, 100 - COMMAND_SLOTS as u64));

        // The other connection keeps working meanwhile.
        let (t, mut rx) = oneshot::channel();
        other.tx.send(Cmd::Down { reply: t }).unwrap();
        wait_until("the other driver to answer", || matches!(rx.try_recv(), Ok(Ok(_))));
        other.tx.datagram(l, "127.0.0.3:500".parse().unwrap(), &small).unwrap();
        wait_until("the other driver to take its datagram", || other.tx.stats().snapshot().depth == 0);

        // Once the plugin returns, the backlog drains and the budget is given back.
        gate.release();
        wait_until("the stuck driver to drain", || {
            let q = stuck.tx.stats().snapshot();
            q.depth == 0 && q.bytes == 0 && q.commands == 0
        });
        assert_eq!(env.queues.counters().into_iter().find(|(k, _)| k == "ike_queue_bytes").unwrap().1, 0);
        for mut h in [stuck, other] {
            let (t, _r) = oneshot::channel();
            h.tx.send(Cmd::Shutdown { reply: t }).unwrap();
            h.thread.take().unwrap().join().unwrap();
        }
    }
}
