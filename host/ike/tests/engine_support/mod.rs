//! In-memory initiator/responder pair on a virtual clock, with injectable loss,
//! duplication and reordering. Shared by the `engine*.rs` tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wisp_policy_api::{Answer, AskPolicy, Policy, PolicyError, Question};

use wisp_ike::config::{identity, selector, ChildConfig, Config, ConnectionConfig};
use wisp_ike::engine::{Engine, Transmit};
use wisp_ike::event::*;
use wisp_ike::native_policy::ConfigPolicy;

pub const A_IP: &str = "10.0.0.1";
pub const B_IP: &str = "10.0.0.2";

/// Connection from `me` to `peer` with one child `net` (and `net2`).
#[allow(clippy::too_many_arguments)] // a test helper: every field the tests vary
pub fn conn(name: &str, me: &str, peer: &str, psk: &[u8], ike: &[&str], esp: &[&str], local_ts: &str, remote_ts: &str) -> ConnectionConfig {
    let mut c =
        ConnectionConfig::new(name, identity(&format!("{me}.example")), Some(identity(&format!("{peer}.example"))), psk, ike).unwrap();
    c.local_addrs = vec![if me == "a" { A_IP } else { B_IP }.parse().unwrap()];
    c.remote_addrs = vec![if me == "a" { B_IP } else { A_IP }.parse::<std::net::IpAddr>().unwrap().into()];
    c.children.push(ChildConfig::new("net", vec![selector(local_ts).unwrap()], vec![selector(remote_ts).unwrap()], esp).unwrap());
    c.children.push(
        ChildConfig::new(
            "net2",
            vec![selector(&local_ts.replace("/24", "/25")).unwrap()],
            vec![selector(&remote_ts.replace("/24", "/25")).unwrap()],
            esp,
        )
        .unwrap(),
    );
    c
}

pub fn default_pair_configs() -> (Config, Config) {
    let ike = ["aes256gcm16-prfsha256-x25519"];
    let esp = ["aes256gcm16"];
    let a =
        Config { connections: vec![conn("ab", "a", "b", b"secret-psk", &ike, &esp, "10.1.0.0/24", "10.2.0.0/24")], ..Config::default() };
    let b =
        Config { connections: vec![conn("ba", "b", "a", b"secret-psk", &ike, &esp, "10.2.0.0/24", "10.1.0.0/24")], ..Config::default() };
    (a, b)
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Probability (per mille) a datagram is dropped.
    pub drop_permille: u32,
    /// Probability (per mille) a datagram is delivered twice.
    pub dup_permille: u32,
    /// Random extra delay up to this many ms (reorders datagrams).
    pub jitter_ms: u64,
}

/// A datagram filter of the pair: `(to_b, datagram)` → drop it.
pub type DropIf = Box<dyn FnMut(bool, &Transmit) -> bool>;

struct InFlight {
    to_b: bool,
    t: Transmit,
    at: Duration,
    seq: u64,
}

/// A policy that takes `delay` of virtual time per decision, the way the
/// gateway's asynchronous policy does in real time: a new question is
/// answered `Deferred` and its answer is ready `delay` later (one decision at
/// a time, like a single plugin worker). The pair calls
/// `policy_ready` on the engine when an answer comes in. `stalled` never
/// answers.
pub struct VirtualDeferred {
    inner: Arc<dyn Policy>,
    pub delay: Duration,
    pub stalled: std::sync::atomic::AtomicBool,
    state: Mutex<VdState>,
}

#[derive(Default)]
struct VdState {
    now: Duration,
    /// When the worker is free again.
    free_at: Duration,
    answers: HashMap<Question, (Duration, Answer)>,
    asked: usize,
}

impl VirtualDeferred {
    pub fn new(inner: Arc<dyn Policy>, delay: Duration) -> Arc<Self> {
        Arc::new(VirtualDeferred { inner, delay, stalled: Default::default(), state: Mutex::new(VdState::default()) })
    }

    /// Questions asked of the inner policy so far.
    pub fn asked(&self) -> usize {
        self.state.lock().unwrap().asked
    }

    /// The questions asked so far (for diagnostics).
    pub fn questions(&self) -> Vec<Question> {
        self.state.lock().unwrap().answers.keys().cloned().collect()
    }

    /// Start the clock at `now`.
    pub fn start_at(&self, now: Duration) {
        let mut s = self.state.lock().unwrap();
        s.now = now;
        s.free_at = now;
    }

    /// Move the clock; true when an answer became ready since `before`.
    fn set_now(&self, before: Duration, now: Duration) -> bool {
        let mut s = self.state.lock().unwrap();
        s.now = now;
        !self.stalled.load(std::sync::atomic::Ordering::Relaxed) && s.answers.values().any(|(at, _)| *at > before && *at <= now)
    }

    /// The next time an answer comes in.
    fn next_ready(&self, now: Duration) -> Option<Duration> {
        if self.stalled.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        self.state.lock().unwrap().answers.values().map(|(at, _)| *at).filter(|at| *at > now).min()
    }

    fn ask(&self, q: Question) -> Result<Answer, PolicyError> {
        let mut s = self.state.lock().unwrap();
        let now = s.now;
        if let Some((at, a)) = s.answers.get(&q) {
            if *at <= now && !self.stalled.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(a.clone());
            }
            return Err(PolicyError::Deferred { decider: self.describe() });
        }
        let start = s.free_at.max(now);
        let at = start + self.delay;
        s.free_at = at;
        s.asked += 1;
        let a = q.ask(&*self.inner);
        s.answers.insert(q, (at, a));
        Err(PolicyError::Deferred { decider: self.describe() })
    }
}

impl AskPolicy for VirtualDeferred {
    fn decider(&self) -> String {
        format!("virtual-deferred({})", self.inner.describe())
    }
    fn answer(&self, q: Question) -> Result<Answer, PolicyError> {
        self.ask(q)
    }
}

pub struct Pair {
    /// Set when `a`'s / `b`'s policy defers (told of answers by the pair).
    pub deferred_a: Option<Arc<VirtualDeferred>>,
    pub deferred_b: Option<Arc<VirtualDeferred>>,
    pub a: Engine,
    pub b: Engine,
    pub now: Duration,
    pub faults: Faults,
    /// Drop everything (peer gone) while set.
    pub blackhole: bool,
    pub ev_a: Vec<Event>,
    pub ev_b: Vec<Event>,
    /// Every datagram sent, in order (to_b, bytes).
    pub wire: Vec<(bool, Transmit)>,
    /// Drops the datagrams (to_b, datagram) it returns true for.
    pub drop_if: Option<DropIf>,
    flight: Vec<InFlight>,
    rng: u64,
    seq: u64,
}

impl Pair {
    pub fn new(a: Config, b: Config) -> Self {
        let pa = Arc::new(ConfigPolicy::new(&a));
        let pb = Arc::new(ConfigPolicy::new(&b));
        Self::with_policies(a, b, pa, pb)
    }

    pub fn with_policies(a: Config, b: Config, pa: Arc<dyn wisp_policy_api::Policy>, pb: Arc<dyn wisp_policy_api::Policy>) -> Self {
        Pair {
            deferred_a: None,
            deferred_b: None,
            a: Engine::new(a, pa, [1; 32]).unwrap(),
            b: Engine::new(b, pb, [2; 32]).unwrap(),
            now: Duration::from_secs(1000),
            faults: Faults::default(),
            blackhole: false,
            ev_a: Vec::new(),
            ev_b: Vec::new(),
            wire: Vec::new(),
            drop_if: None,
            flight: Vec::new(),
            rng: 0x9e3779b97f4a7c15,
            seq: 0,
        }
    }

    pub fn default_pair() -> Self {
        let (a, b) = default_pair_configs();
        Self::new(a, b)
    }

    fn rand(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545F4914F6CDD1D)
    }

    pub fn seed_faults(&mut self, seed: u64) {
        self.rng = seed | 1;
    }

    fn collect(&mut self) {
        let mut out = Vec::new();
        while let Some(t) = self.a.poll_transmit() {
            out.push((true, t));
        }
        while let Some(t) = self.b.poll_transmit() {
            out.push((false, t));
        }
        for (to_b, t) in out {
            self.wire.push((to_b, t.clone()));
            if self.blackhole || self.drop_if.as_mut().is_some_and(|f| f(to_b, &t)) {
                continue;
            }
            if self.faults.drop_permille > 0 && self.rand() % 1000 < self.faults.drop_permille as u64 {
                continue;
            }
            let copies = if self.faults.dup_permille > 0 && self.rand() % 1000 < self.faults.dup_permille as u64 { 2 } else { 1 };
            for _ in 0..copies {
                let j = if self.faults.jitter_ms > 0 { self.rand() % (self.faults.jitter_ms + 1) } else { 0 };
                self.seq += 1;
                self.flight.push(InFlight { to_b, t: t.clone(), at: self.now + Duration::from_millis(1 + j), seq: self.seq });
            }
        }
        while let Some(e) = self.a.poll_event() {
            self.ev_a.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.ev_b.push(e);
        }
    }

    /// Deliver a datagram to one side directly (bypassing faults).
    pub fn inject(&mut self, to_b: bool, t: &Transmit) {
        let e = if to_b { &mut self.b } else { &mut self.a };
        e.handle_datagram(self.now, t.remote, t.local, &t.bytes);
    }

    /// Run the network until nothing is pending or `limit` of virtual time passed.
    pub fn run_for(&mut self, limit: Duration) {
        self.run_until(limit, |_| false);
    }

    /// Run until `done` holds (checked after every step) or `limit` passed.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Pair) -> bool) -> bool {
        let end = self.now + limit;
        loop {
            self.collect();
            if done(self) {
                return true;
            }
            let mut next: Option<Duration> = self.flight.iter().map(|f| f.at).min();
            let ready = [&self.deferred_a, &self.deferred_b].into_iter().flatten().filter_map(|d| d.next_ready(self.now));
            for t in [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().chain(ready) {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
            let Some(next) = next else { return false };
            if next > end {
                self.now = end;
                return false;
            }
            let before = self.now;
            if next > self.now {
                self.now = next;
            }
            if self.deferred_a.as_ref().is_some_and(|d| d.set_now(before, self.now)) {
                self.a.policy_ready(self.now);
            }
            if self.deferred_b.as_ref().is_some_and(|d| d.set_now(before, self.now)) {
                self.b.policy_ready(self.now);
            }
            self.flight.sort_by_key(|f| (f.at, f.seq));
            let due: Vec<InFlight> = {
                let (d, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flight).into_iter().partition(|f| f.at <= self.now);
                self.flight = keep;
                d
            };
            for f in due {
                self.inject(f.to_b, &f.t);
            }
            if self.a.poll_timeout().is_some_and(|t| t <= self.now) {
                self.a.handle_timeout(self.now);
            }
            if self.b.poll_timeout().is_some_and(|t| t <= self.now) {
                self.b.handle_timeout(self.now);
            }
        }
    }

    /// Run until both sides have an established IKE SA with a Child SA up.
    pub fn run_until_quiet(&mut self) {
        // Quiet = no datagram in flight and no timer within 5 s (only lifetimes/DPD remain).
        let limit = self.now + Duration::from_secs(600);
        loop {
            self.collect();
            let ready = [&self.deferred_a, &self.deferred_b].into_iter().flatten().filter_map(|d| d.next_ready(self.now));
            let timer = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().chain(ready).min();
            let waiting = self.a.decisions_waiting() + self.b.decisions_waiting();
            if self.flight.is_empty() && self.a.is_idle() && self.b.is_idle() && waiting == 0 {
                return;
            }
            if self.now > limit {
                return;
            }
            let step = self.flight.iter().map(|f| f.at).chain(timer).min().unwrap();
            let horizon = step.saturating_sub(self.now) + Duration::from_millis(1);
            self.run_until(horizon, |_| false);
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.run_for(d);
    }
}

pub fn ike_up(ev: &[Event]) -> Vec<&IkeSaInfo> {
    ev.iter().filter_map(|e| if let Event::IkeSaUp(i) = e { Some(i) } else { None }).collect()
}

pub fn child_ups(ev: &[Event]) -> Vec<&ChildSaInfo> {
    ev.iter().filter_map(|e| if let Event::ChildSaUp(i) = e { Some(i) } else { None }).collect()
}

pub fn rekeyed(ev: &[Event]) -> Vec<(u32, &ChildSaInfo)> {
    ev.iter().filter_map(|e| if let Event::ChildSaRekeyed { old_spi_in, new, .. } = e { Some((*old_spi_in, new)) } else { None }).collect()
}

pub fn child_downs(ev: &[Event]) -> Vec<(u32, DownReason)> {
    ev.iter()
        .filter_map(|e| if let Event::ChildSaDown { spi_in, reason, .. } = e { Some((*spi_in, reason.clone())) } else { None })
        .collect()
}

pub fn ike_downs(ev: &[Event]) -> Vec<(IkeSaId, DownReason)> {
    ev.iter().filter_map(|e| if let Event::IkeSaDown { ike, reason, .. } = e { Some((*ike, reason.clone())) } else { None }).collect()
}

pub fn failures(ev: &[Event]) -> Vec<&Failure> {
    ev.iter().filter_map(|e| if let Event::Failure(f) = e { Some(f) } else { None }).collect()
}

/// Child SA pair consistency: a's outbound is b's inbound, with the same key.
pub fn assert_child_pair(a: &ChildSaInfo, b: &ChildSaInfo) {
    assert_eq!(a.spi_out, b.spi_in, "a sends with b's inbound SPI");
    assert_eq!(a.spi_in, b.spi_out, "b sends with a's inbound SPI");
    assert_eq!(a.key_out.as_bytes(), b.key_in.as_bytes(), "initiator's out key = responder's in key");
    assert_eq!(a.key_in.as_bytes(), b.key_out.as_bytes(), "responder's out key = initiator's in key");
    assert_ne!(a.key_in.as_bytes(), a.key_out.as_bytes(), "directions use different keys");
    assert_eq!(a.algorithms, b.algorithms);
    assert_eq!(a.local_ts, b.remote_ts);
    assert_eq!(a.remote_ts, b.local_ts);
    assert_eq!(a.mode, b.mode);
}

/// Live child SPIs (in, out) of the only IKE SA of an engine.
pub fn live_children(e: &Engine, now: Duration) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = e.status(now).iter().flat_map(|s| s.children.iter().map(|c| (c.spi_in, c.spi_out))).collect();
    v.sort();
    v
}

/// The two sides' Child SAs mirror each other.
pub fn assert_mirrored(p: &Pair) {
    let a = live_children(&p.a, p.now);
    let b = live_children(&p.b, p.now);
    let mut b_swapped: Vec<(u32, u32)> = b.iter().map(|(i, o)| (*o, *i)).collect();
    b_swapped.sort();
    assert_eq!(a, b_swapped, "Child SAs of both sides mirror each other");
    let sa = p.a.status(p.now);
    let sb = p.b.status(p.now);
    let mut ia: Vec<(u64, u64)> = sa.iter().map(|s| (s.spi_i, s.spi_r)).collect();
    let mut ib: Vec<(u64, u64)> = sb.iter().map(|s| (s.spi_i, s.spi_r)).collect();
    ia.sort();
    ib.sort();
    assert_eq!(ia, ib, "IKE SAs of both sides match");
}

pub fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// Establish the default pair: A initiates `ab`.
pub fn established() -> Pair {
    let mut p = Pair::default_pair();
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_a).len(), 1, "A up: {:?}", p.ev_a);
    assert_eq!(ike_up(&p.ev_b).len(), 1, "B up: {:?}", p.ev_b);
    p
}

/// Several engines on one in-memory network, by address (a gateway and
/// its clients): datagrams go to the engine holding the destination
/// address, in turns of 5 ms of virtual time, with due timers run.
pub struct Net {
    pub engines: std::collections::BTreeMap<IpAddr, Engine>,
    pub events: std::collections::BTreeMap<IpAddr, Vec<Event>>,
    pub now: Duration,
}

impl Default for Net {
    fn default() -> Self {
        Net { engines: Default::default(), events: Default::default(), now: Duration::from_secs(1) }
    }
}

impl Net {
    /// `cfg` at `addr`, with its own config as the policy.
    pub fn add(&mut self, addr: &str, cfg: Config, seed: u8) {
        let p = Arc::new(ConfigPolicy::new(&cfg));
        self.engines.insert(addr.parse().unwrap(), Engine::new(cfg, p, [seed; 32]).unwrap());
    }

    /// Deliver until nothing moves (at most 400 turns).
    pub fn run(&mut self) {
        for _ in 0..400 {
            let mut moved = false;
            let addrs: Vec<IpAddr> = self.engines.keys().copied().collect();
            for a in addrs {
                let out: Vec<_> = std::iter::from_fn(|| self.engines.get_mut(&a).unwrap().poll_transmit()).collect();
                let evs: Vec<_> = std::iter::from_fn(|| self.engines.get_mut(&a).unwrap().poll_event()).collect();
                self.events.entry(a).or_default().extend(evs);
                for t in out {
                    moved = true;
                    if let Some(dst) = self.engines.get_mut(&t.remote.ip()) {
                        dst.handle_datagram(self.now, t.remote, t.local, &t.bytes);
                    }
                }
            }
            if !moved {
                return;
            }
            self.now += Duration::from_millis(5);
            for e in self.engines.values_mut() {
                if e.poll_timeout().is_some_and(|t| t <= self.now) {
                    e.handle_timeout(self.now);
                }
            }
        }
    }

    pub fn engine(&mut self, addr: &str) -> &mut Engine {
        self.engines.get_mut(&addr.parse::<IpAddr>().unwrap()).unwrap()
    }

    /// `addr` initiates its connection `gw`; the network runs.
    pub fn initiate(&mut self, addr: &str) {
        let now = self.now;
        self.engine(addr).initiate(now, "gw").unwrap();
        self.run();
    }

    pub fn ev(&self, addr: &str) -> &[Event] {
        self.events.get(&addr.parse::<IpAddr>().unwrap()).map_or(&[], |v| v.as_slice())
    }

    pub fn child_ups(&self, addr: &str) -> Vec<&ChildSaInfo> {
        child_ups(self.ev(addr))
    }

    pub fn failures(&self, addr: &str) -> Vec<&Failure> {
        failures(self.ev(addr))
    }
}
