//! Slow decisions never hold up other SAs: a responder whose policy takes
//! 100 ms per decision, decided on `DecisionPool` workers through
//! `AsyncPolicy`, keeps answering an established peer's liveness checks at
//! once while eight new peers wait for their decisions, in real time. The
//! same run with the slow policy called inline (what the engine did before)
//! is the baseline: there, every check waits behind the decisions.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp_ike::config::{identity, selector, AddrMatch, ChildConfig, Config, ConnectionConfig, IdMatch};
use wisp_ike::engine::Engine;
use wisp_ike::event::Event;
use wisp_ike::native_policy::ConfigPolicy;
use wisp_policy::DecisionPool;
use wisp_policy_api::{AuthInfo, PeerContext, Policy, PolicyError, Proposal, ProposalChoice, SaKind, SelectorPair, SelectorRequest};

const GW: &str = "10.0.0.1";
const IKE: [&str; 1] = ["aes256gcm16-prfsha256-x25519"];
const ESP: [&str; 1] = ["aes256gcm16"];
const DECISION: Duration = Duration::from_millis(100);
const NEW_PEERS: usize = 8;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A policy that thinks for 100 ms before each answer.
struct Slow(ConfigPolicy);

impl Policy for Slow {
    fn describe(&self) -> String {
        "slow".into()
    }
    fn select_proposal(&self, c: &PeerContext, k: SaKind, o: &[Proposal], cf: &[Proposal]) -> Result<ProposalChoice, PolicyError> {
        std::thread::sleep(DECISION);
        self.0.select_proposal(c, k, o, cf)
    }
    fn order_proposals(&self, c: &PeerContext, k: SaKind, cf: &[Proposal]) -> Result<Vec<usize>, PolicyError> {
        std::thread::sleep(DECISION);
        self.0.order_proposals(c, k, cf)
    }
    fn authorize(&self, c: &PeerContext, a: &AuthInfo) -> Result<(), PolicyError> {
        std::thread::sleep(DECISION);
        self.0.authorize(c, a)
    }
    fn narrow_selectors(&self, c: &PeerContext, r: &SelectorRequest) -> Result<SelectorPair, PolicyError> {
        std::thread::sleep(DECISION);
        self.0.narrow_selectors(c, r)
    }
}

fn gateway() -> Config {
    let mut c = ConnectionConfig::new("rw", identity("gw.example"), None, b"a-long-enough-psk", &IKE).unwrap();
    c.local_addrs = vec![ip(GW)];
    c.remote_addrs = vec![AddrMatch::parse("%any").unwrap()];
    c.remote_id = IdMatch::parse("%any");
    c.children.push(ChildConfig::new("net", vec![selector("10.1.0.0/16").unwrap()], vec![selector("10.8.0.0/16").unwrap()], &ESP).unwrap());
    Config { connections: vec![c], cookie_threshold: usize::MAX, ..Config::default() }
}

fn client(n: usize) -> (IpAddr, Config) {
    let addr = ip(&format!("10.0.1.{}", n + 1));
    let mut c =
        ConnectionConfig::new("gw", identity(&format!("peer{n}.example")), Some(identity("gw.example")), b"a-long-enough-psk", &IKE)
            .unwrap();
    c.local_addrs = vec![addr];
    c.remote_addrs = vec![ip(GW).into()];
    let inner = format!("10.8.{n}.0/24");
    c.children.push(ChildConfig::new("net", vec![selector(&inner).unwrap()], vec![selector("10.1.0.0/16").unwrap()], &ESP).unwrap());
    (addr, Config { connections: vec![c], ..Config::default() })
}

/// Engines on an in-memory network driven in real time by one thread (the
/// way one gateway driver thread runs its engine).
struct Net {
    engines: BTreeMap<IpAddr, Engine>,
    events: BTreeMap<IpAddr, Vec<Event>>,
    epoch: Instant,
    ready: Arc<AtomicBool>,
}

impl Net {
    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// One turn: answers in, timers, datagrams delivered.
    fn turn(&mut self) {
        let now = self.now();
        if self.ready.swap(false, Ordering::AcqRel) {
            self.engines.get_mut(&ip(GW)).unwrap().policy_ready(now);
        }
        for e in self.engines.values_mut() {
            if e.poll_timeout().is_some_and(|t| t <= now) {
                e.handle_timeout(now);
            }
        }
        let addrs: Vec<IpAddr> = self.engines.keys().copied().collect();
        for a in addrs {
            let out: Vec<_> = std::iter::from_fn(|| self.engines.get_mut(&a).unwrap().poll_transmit()).collect();
            let evs: Vec<_> = std::iter::from_fn(|| self.engines.get_mut(&a).unwrap().poll_event()).collect();
            self.events.entry(a).or_default().extend(evs);
            for t in out {
                let now = self.now();
                if let Some(dst) = self.engines.get_mut(&t.remote.ip()) {
                    dst.handle_datagram(now, t.remote, t.local, &t.bytes);
                }
            }
        }
    }

    fn children_up(&self, a: IpAddr) -> usize {
        self.events.get(&a).map_or(0, |v| v.iter().filter(|e| matches!(e, Event::ChildSaUp(_))).count())
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            self.turn();
            if done(self) {
                return true;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        false
    }
}

/// Set up one established peer, start `NEW_PEERS` more, and measure how long
/// the gateway takes to answer the first peer's liveness checks meanwhile.
/// Returns (the slowest answer, new peers up).
fn run(gw_policy: Arc<dyn Policy>, ready: Arc<AtomicBool>) -> (Duration, usize) {
    let mut engines = BTreeMap::new();
    engines.insert(ip(GW), Engine::new(gateway(), gw_policy, [7; 32]).unwrap());
    let peers: Vec<(IpAddr, Config)> = (0..=NEW_PEERS).map(client).collect();
    for (n, (addr, cfg)) in peers.iter().enumerate() {
        let p = Arc::new(ConfigPolicy::new(cfg));
        engines.insert(*addr, Engine::new(cfg.clone(), p, [n as u8 + 10; 32]).unwrap());
    }
    let mut net = Net { engines, events: BTreeMap::new(), epoch: Instant::now(), ready };
    let first = peers[0].0;
    let now = net.now();
    let ike = net.engines.get_mut(&first).unwrap().initiate(now, "gw").unwrap();
    assert!(net.run_until(Duration::from_secs(20), |n| n.children_up(first) == 1), "first peer did not come up");
    // The others all at once: 4 decisions each at the gateway.
    for (addr, _) in &peers[1..] {
        let now = net.now();
        net.engines.get_mut(addr).unwrap().initiate(now, "gw").unwrap();
    }
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    let mut checks = 0;
    while start.elapsed() < Duration::from_secs(30) && checks < 20 {
        let now = net.now();
        net.engines.get_mut(&first).unwrap().check_liveness(now, ike).unwrap();
        let asked = Instant::now();
        let answered = net.run_until(Duration::from_secs(5), |n| n.engines[&first].is_idle());
        assert!(answered, "liveness check not answered");
        slowest = slowest.max(asked.elapsed());
        checks += 1;
        net.run_until(Duration::from_millis(20), |_| false);
    }
    let up = |n: &Net| peers[1..].iter().filter(|(a, _)| n.children_up(*a) == 1).count();
    net.run_until(Duration::from_secs(30), |n| up(n) == NEW_PEERS);
    (slowest, up(&net))
}

#[test]
fn slow_decisions_delay_only_the_negotiations_waiting_on_them() {
    let ready = Arc::new(AtomicBool::new(false));
    let pool = DecisionPool::new(Arc::new(Slow(ConfigPolicy::new(&gateway()))), 2).unwrap();
    let r = ready.clone();
    let policy = Arc::new(pool.handle(Arc::new(move || r.store(true, Ordering::Release))));
    let (slowest, up) = run(policy, ready);
    eprintln!("deferred: slowest liveness answer {slowest:?} while {NEW_PEERS} peers negotiated; {up} up");
    assert_eq!(up, NEW_PEERS, "every new peer comes up");
    assert!(slowest < DECISION / 2, "a liveness check waited {slowest:?} behind others' decisions");
    let st = pool.stats();
    assert!(st.asked >= 4 * (NEW_PEERS as u64 + 1), "{st:?}");
    assert_eq!(st.refused, 0);
}

#[test]
fn baseline_an_inline_slow_policy_holds_up_every_sa() {
    let (slowest, up) = run(Arc::new(Slow(ConfigPolicy::new(&gateway()))), Arc::new(AtomicBool::new(false)));
    eprintln!("inline: slowest liveness answer {slowest:?}; {up} up");
    assert_eq!(up, NEW_PEERS);
    assert!(slowest >= DECISION, "the baseline did not block ({slowest:?}): the test above would prove nothing");
}

#[test]
fn questions_are_bounded_and_shared() {
    // One worker stuck on a slow answer: the same question from two engines
    // is asked once; beyond MAX_QUEUED distinct questions, refusals.
    let pool = DecisionPool::new(Arc::new(Slow(ConfigPolicy::new(&gateway()))), 1).unwrap();
    let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let w1 = woken.clone();
    let w2 = woken.clone();
    let a = pool.handle(Arc::new(move || {
        w1.fetch_add(1, Ordering::Relaxed);
    }));
    let b = pool.handle(Arc::new(move || {
        w2.fetch_add(1, Ordering::Relaxed);
    }));
    let ctx = |n: u32| ctx_of(&format!("c{}", n % 8), n);
    let auth = AuthInfo::psk(identity("peer.example"));
    assert!(a.authorize(&ctx(1), &auth).unwrap_err().is_deferred());
    assert!(b.authorize(&ctx(1), &auth).unwrap_err().is_deferred());
    assert!(a.authorize(&ctx(1), &auth).unwrap_err().is_deferred(), "asked again while queued");
    let t = Instant::now();
    while woken.load(Ordering::Relaxed) < 2 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(woken.load(Ordering::Relaxed), 2, "both engines told once");
    assert_eq!(a.authorize(&ctx(1), &auth), Ok(()));
    assert_eq!(b.authorize(&ctx(1), &auth), Ok(()));
    assert_eq!(pool.stats().asked, 1);
    // Forgetting answers (another policy version in charge) makes the next
    // ask a new question.
    pool.forget_answers();
    assert!(a.authorize(&ctx(1), &auth).unwrap_err().is_deferred());
    // Flood of distinct questions (8 connections): at most MAX_QUEUED wait,
    // the rest fail at once.
    let mut refused = 0;
    for n in 0..(wisp_policy::MAX_QUEUED as u32 + 100) {
        match a.authorize(&ctx(1000 + n), &auth) {
            Err(e) if e.is_deferred() => {}
            Err(PolicyError::Failed { detail, .. }) => {
                assert!(detail.contains("overloaded"), "{detail}");
                refused += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!((99..=101).contains(&refused), "{refused} refused");
    assert_eq!(pool.stats().refused, refused);
    drop(a);
    drop(b);
    let t = Instant::now();
    drop(pool);
    // Dropping the pool waits only for the decision a worker is in.
    assert!(t.elapsed() < Duration::from_secs(2), "drop took {:?}", t.elapsed());
}

fn ctx_of(conn: &str, n: u32) -> PeerContext {
    PeerContext {
        connection: conn.into(),
        remote_address: IpAddr::from(n.to_be_bytes()),
        remote_port: 500,
        local_address: ip(GW),
        local_port: 500,
        nat_detected: false,
        local_is_initiator: false,
        peer_identity: None,
        trigger: Default::default(),
    }
}

#[test]
fn a_flooded_connection_neither_starves_nor_crowds_out_another() {
    // One worker, 20 ms per decision: 60 questions of connection "busy"
    // wait, then one of "quiet". Served in turn, "quiet" is answered after
    // at most two decisions, not after sixty.
    struct Timed(Duration);
    impl Policy for Timed {
        fn describe(&self) -> String {
            "timed".into()
        }
        fn select_proposal(&self, _: &PeerContext, _: SaKind, _: &[Proposal], _: &[Proposal]) -> Result<ProposalChoice, PolicyError> {
            unreachable!()
        }
        fn order_proposals(&self, _: &PeerContext, _: SaKind, _: &[Proposal]) -> Result<Vec<usize>, PolicyError> {
            unreachable!()
        }
        fn authorize(&self, _: &PeerContext, _: &AuthInfo) -> Result<(), PolicyError> {
            std::thread::sleep(self.0);
            Ok(())
        }
        fn narrow_selectors(&self, _: &PeerContext, _: &SelectorRequest) -> Result<SelectorPair, PolicyError> {
            unreachable!()
        }
    }
    let pool = DecisionPool::new(Arc::new(Timed(Duration::from_millis(20))), 1).unwrap();
    let auth = AuthInfo::psk(identity("peer.example"));
    let quiet_done = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let busy = pool.handle(Arc::new(|| {}));
    let qd = quiet_done.clone();
    let quiet = pool.handle(Arc::new(move || {
        qd.lock().unwrap().get_or_insert_with(Instant::now);
    }));
    for n in 0..60 {
        assert!(busy.authorize(&ctx_of("busy", n), &auth).unwrap_err().is_deferred());
    }
    let asked = Instant::now();
    assert!(quiet.authorize(&ctx_of("quiet", 1), &auth).unwrap_err().is_deferred());
    while quiet_done.lock().unwrap().is_none() && asked.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let waited = quiet_done.lock().unwrap().expect("quiet answered") - asked;
    eprintln!("quiet connection answered after {waited:?} behind 60 queued decisions of another");
    assert!(waited < Duration::from_millis(200), "waited {waited:?}");
    assert_eq!(quiet.authorize(&ctx_of("quiet", 1), &auth), Ok(()));
    // One connection holds at most MAX_QUEUED_PER_CONNECTION waiting
    // questions: the rest of its flood is refused, another still gets in.
    let mut refused = 0;
    for n in 100..(100 + wisp_policy::MAX_QUEUED_PER_CONNECTION as u32 + 50) {
        if let Err(PolicyError::Failed { detail, .. }) = busy.authorize(&ctx_of("busy", n), &auth) {
            assert!(detail.contains("connection busy"), "{detail}");
            refused += 1;
        }
    }
    assert!(refused >= 50, "{refused} refused");
    assert!(quiet.authorize(&ctx_of("quiet", 2), &auth).unwrap_err().is_deferred());
}
