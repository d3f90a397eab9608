//! IKE_SA_INIT admission (RFC 7296 2.6, RFC 8019): daemon-wide attempt
//! accounting, cookies before any policy call or DH, half-open caps, cookie
//! secret rotation; and SPI ownership across connections. The responder
//! here is wired as the gateway wires it: [`Admission::check_init`] before
//! the engine sees an IKE_SA_INIT request, the engine counting its
//! half-open SAs in the same admission.

mod engine_support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine_support::*;
use wisp_ike::admission::{is_init_request, Admission, AdmissionConfig, DropReason, Verdict};
use wisp_ike::codec::{Message, NotifyType, Payload};
use wisp_ike::config::{identity, Config};
use wisp_ike::engine::Engine;
use wisp_ike::event::Event;

use wisp_ike::native_policy::ConfigPolicy;
use wisp_ike::spi_pool::SpiPool;
use wisp_policy_api::*;

/// Counts every policy call (each stands for the work a plugin call costs).
struct Counting {
    inner: ConfigPolicy,
    calls: AtomicUsize,
}

impl Policy for Counting {
    fn describe(&self) -> String {
        "counting".into()
    }
    fn select_proposal(&self, c: &PeerContext, k: SaKind, o: &[Proposal], cfg: &[Proposal]) -> Result<ProposalChoice, PolicyError> {
        self.calls.fetch_add(1, SeqCst);
        self.inner.select_proposal(c, k, o, cfg)
    }
    fn order_proposals(&self, c: &PeerContext, k: SaKind, o: &[Proposal]) -> Result<Vec<usize>, PolicyError> {
        self.calls.fetch_add(1, SeqCst);
        self.inner.order_proposals(c, k, o)
    }
    fn authorize(&self, c: &PeerContext, a: &AuthInfo) -> Result<(), PolicyError> {
        self.calls.fetch_add(1, SeqCst);
        self.inner.authorize(c, a)
    }
    fn narrow_selectors(&self, c: &PeerContext, r: &SelectorRequest) -> Result<SelectorPair, PolicyError> {
        self.calls.fetch_add(1, SeqCst);
        self.inner.narrow_selectors(c, r)
    }
}

const T0: Duration = Duration::from_secs(1000);

/// The responder B (any peer address) behind an admission, as the gateway runs it.
struct Responder {
    adm: Arc<Mutex<Admission>>,
    eng: Engine,
    policy: Arc<Counting>,
    /// COOKIE answers the gate sent.
    cookies: Vec<(SocketAddr, Vec<u8>)>,
    drops: Vec<DropReason>,
}

impl Responder {
    fn new(cfg: AdmissionConfig) -> Self {
        let (_, mut b) = default_pair_configs();
        b.connections[0].remote_addrs.clear();
        b.connections[0].remote_id = wisp_ike::config::IdMatch::Any;
        b.cookie_threshold = usize::MAX; // the admission does cookies
        let policy = Arc::new(Counting { inner: ConfigPolicy::new(&b), calls: AtomicUsize::new(0) });
        let mut eng = Engine::new(b, policy.clone(), [2; 32]).unwrap();
        let adm = Arc::new(Mutex::new(Admission::new(cfg, [5; 32], T0)));
        eng.set_admission(adm.clone());
        Responder { adm, eng, policy, cookies: Vec::new(), drops: Vec::new() }
    }

    /// The gateway's dispatcher: the gate, then the engine.
    fn deliver(&mut self, now: Duration, from: SocketAddr, bytes: &[u8]) -> Verdict {
        let local = addr(B_IP, 500);
        if is_init_request(bytes) {
            let v = self.adm.lock().unwrap().check_init(now, from, bytes);
            match &v {
                Verdict::Admit => self.eng.handle_datagram(now, local, from, bytes),
                Verdict::Cookie(c) => self.cookies.push((from, c.clone())),
                Verdict::Drop(r) => self.drops.push(*r),
            }
            v
        } else {
            self.eng.handle_datagram(now, local, from, bytes);
            Verdict::Admit
        }
    }

    fn calls(&self) -> usize {
        self.policy.calls.load(SeqCst)
    }

    fn half_open(&self) -> u64 {
        self.adm.lock().unwrap().stats(T0).half_open
    }

    /// Responses the engine produced (each non-cookie IKE_SA_INIT answer cost a DH).
    fn engine_answers(&mut self) -> Vec<Message> {
        let mut v = Vec::new();
        while let Some(t) = self.eng.poll_transmit() {
            v.push(Message::decode(&t.bytes).unwrap());
        }
        v
    }
}

/// A valid IKE_SA_INIT request of initiator A (x25519), with SPIi `spi`.
fn init_request(spi: u64) -> Vec<u8> {
    let (a, _) = default_pair_configs();
    let mut e = Engine::new(a, Arc::new(ConfigPolicy::new(&default_pair_configs().0)), [1; 32]).unwrap();
    e.initiate(T0, "ab").unwrap();
    let mut b = e.poll_transmit().unwrap().bytes;
    b[0..8].copy_from_slice(&spi.to_be_bytes());
    b
}

/// The same request with a low-order x25519 public value (all zero).
fn low_order_request(spi: u64) -> Vec<u8> {
    let mut m = Message::decode(&init_request(spi)).unwrap();
    for p in &mut m.payloads {
        if let Payload::Ke(k) = p {
            k.data = vec![0; k.data.len()];
        }
    }
    m.encode().unwrap()
}

fn with_cookie(req: &[u8], cookie_answer: &[u8]) -> Vec<u8> {
    let c = Message::decode(cookie_answer).unwrap().notify(NotifyType::COOKIE).unwrap().data.clone();
    let mut m = Message::decode(req).unwrap();
    m.payloads.insert(0, Payload::Notify(wisp_ike::codec::NotifyPayload::new(NotifyType::COOKIE, c)));
    m.encode().unwrap()
}

fn src(i: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0xc633_6400 + i)), 500)
}

fn lenient() -> AdmissionConfig {
    AdmissionConfig {
        cookie_threshold: 100_000,
        cookie_rate_threshold: 100_000,
        block_threshold: 100_000,
        init_limit_half_open: 100_000,
        ..AdmissionConfig::default()
    }
}

#[test]
fn cookies_engage_on_attempts_not_only_half_open() {
    let mut r = Responder::new(AdmissionConfig { cookie_rate_threshold: 50, ..lenient() });
    let now = T0 + Duration::from_millis(100);
    let mut admitted = 0;
    for i in 0..200u32 {
        if r.deliver(now, src(i), &init_request(0x1000 + i as u64)) == Verdict::Admit {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 50, "cookies from the 51st attempt within one second");
    assert_eq!(r.cookies.len(), 150);
    assert_eq!(r.eng.half_open_count(), 50, "far below the half-open threshold (100000)");
    assert_eq!(r.half_open(), 50);
    let stats = r.adm.lock().unwrap().stats(now);
    assert!(stats.cookies_required && stats.attempts == 200 && stats.cookies_sent == 150, "{stats:?}");
    // The rate decays: two quiet seconds later a cookie-less request is admitted.
    let later = now + Duration::from_secs(2);
    assert_eq!(r.deliver(later, src(999), &init_request(0x9999)), Verdict::Admit);
}

#[test]
fn failed_init_attempts_count_toward_cookies() {
    let mut r = Responder::new(AdmissionConfig { cookie_rate_threshold: 20, cookie_threshold: 5, ..lenient() });
    let now = T0;
    // Bad KE (low-order point): each costs the engine a DH and fails, no half-open SA.
    for i in 0..20u32 {
        assert_eq!(r.deliver(now, src(i), &low_order_request(0x2000 + i as u64)), Verdict::Admit);
    }
    assert_eq!(r.eng.half_open_count(), 0, "failed attempts leave no half-open SA");
    assert_eq!(r.half_open(), 0);
    let answers = r.engine_answers();
    assert_eq!(answers.len(), 20);
    assert!(answers.iter().all(|m| m.notify(NotifyType::INVALID_SYNTAX).is_some() || m.notifies().any(|n| n.notify_type.is_error())));
    // The 21st, valid and cookie-less, must bring a cookie first: the failures counted.
    let calls = r.calls();
    let v = r.deliver(now + Duration::from_millis(10), src(50), &init_request(0x3000));
    assert!(matches!(v, Verdict::Cookie(_)), "{v:?}");
    assert_eq!(r.calls(), calls, "no policy call for it");
    assert!(r.engine_answers().is_empty(), "no DH for it");
}

#[test]
fn cookie_checked_before_plugin_and_dh() {
    let mut r = Responder::new(AdmissionConfig { cookie_threshold: 0, ..lenient() });
    let now = T0;
    // A spoofed flood: 2,000 requests from 250 addresses, half of them low-order.
    for i in 0..2000u32 {
        let req = if i % 2 == 0 { init_request(0x4000 + i as u64) } else { low_order_request(0x4000 + i as u64) };
        let v = r.deliver(now, src(i % 250), &req);
        assert!(matches!(v, Verdict::Cookie(_)), "{v:?}");
    }
    assert_eq!(r.calls(), 0, "no plugin call for cookie-less requests");
    assert!(r.engine_answers().is_empty(), "the engine saw none of them: no DH, no state");
    assert!(r.eng.ike_sas().is_empty());
    assert_eq!(r.half_open(), 0);
    for (_, c) in &r.cookies {
        assert!(c.len() < 80, "a cookie answer is small ({} bytes): no amplification", c.len());
    }
    // A legitimate initiator does the cookie round trip and gets through.
    let (a, _) = default_pair_configs();
    let mut ini = Engine::new(a.clone(), Arc::new(ConfigPolicy::new(&a)), [3; 32]).unwrap();
    ini.initiate(now, "ab").unwrap();
    let a_addr = addr(A_IP, 500);
    let mut up = false;
    for _ in 0..20 {
        let mut sent = false;
        while let Some(t) = ini.poll_transmit() {
            sent = true;
            let before = r.cookies.len();
            r.deliver(now, a_addr, &t.bytes);
            if r.cookies.len() > before {
                let c = r.cookies.last().unwrap().1.clone();
                ini.handle_datagram(now, a_addr, addr(B_IP, 500), &c);
            }
            let answers: Vec<_> = std::iter::from_fn(|| r.eng.poll_transmit()).collect();
            for m in answers {
                ini.handle_datagram(now, m.remote, m.local, &m.bytes);
            }
        }
        while let Some(ev) = ini.poll_event() {
            if matches!(ev, Event::ChildSaUp(_)) {
                up = true;
            }
        }
        if !sent {
            break;
        }
    }
    assert!(up, "the legitimate peer establishes through the cookie round trip");
    assert!(r.calls() > 0);
    assert!(r.adm.lock().unwrap().stats(now).cookies_accepted >= 1);
    assert_eq!(r.half_open(), 0, "IKE_AUTH done: no longer half-open");
}

#[test]
fn half_open_cap_global_and_per_source() {
    let mut r = Responder::new(AdmissionConfig { block_threshold: 3, init_limit_half_open: 10, ..lenient() });
    let now = T0;
    let one = src(1);
    let verdicts: Vec<Verdict> = (0..5u64).map(|i| r.deliver(now, one, &init_request(0x5000 + i))).collect();
    assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Admit).count(), 3);
    assert_eq!(r.drops, vec![DropReason::HalfOpenSource; 2]);
    assert_eq!(r.eng.half_open_count(), 3);
    for i in 0..20u32 {
        r.deliver(now, src(100 + i), &init_request(0x6000 + i as u64));
    }
    assert_eq!(r.eng.half_open_count(), 10, "global cap");
    assert_eq!(r.drops.iter().filter(|d| **d == DropReason::HalfOpenGlobal).count(), 13);
    // The engine holds the caps itself too (a request that bypassed the gate).
    let calls = r.calls();
    r.eng.handle_datagram(now, addr(B_IP, 500), src(500), &init_request(0x7000));
    assert_eq!(r.eng.half_open_count(), 10);
    assert_eq!(r.calls(), calls, "refused before the policy is asked");
    // Half-open SAs expire and are uncounted; new requests get in again.
    let later = now + Duration::from_secs(31);
    r.eng.handle_timeout(later);
    assert_eq!(r.eng.half_open_count(), 0);
    assert_eq!(r.half_open(), 0);
    assert_eq!(r.adm.lock().unwrap().half_open_of(one.ip()), 0);
    assert_eq!(r.deliver(later, one, &init_request(0x8000)), Verdict::Admit);
    // Dropping an engine uncounts what it held.
    drop(std::mem::replace(&mut r.eng, Engine::new(Config::default(), r.policy.clone(), [9; 32]).unwrap()));
    assert_eq!(r.half_open(), 0);
}

#[test]
fn cookie_secret_rotates_previous_accepted_in_grace() {
    let cfg = AdmissionConfig {
        cookie_threshold: 0,
        cookie_secret_lifetime: Duration::from_secs(60),
        cookie_grace: Duration::from_secs(10),
        cookie_secret_uses: 1_000,
        ..lenient()
    };
    let mut adm = Admission::new(cfg.clone(), [6; 32], T0);
    let from = src(7);
    let req = init_request(0xabc);
    let Verdict::Cookie(c1) = adm.check_init(T0, from, &req) else { panic!() };
    let with1 = with_cookie(&req, &c1);
    assert_eq!(adm.check_init(T0 + Duration::from_secs(1), from, &with1), Verdict::Admit);
    // Rotated at 61 s: the previous secret's cookie is still good for 10 s.
    let t1 = T0 + Duration::from_secs(61);
    let Verdict::Cookie(c2) = adm.check_init(t1, from, &req) else { panic!() };
    assert_ne!(c1, c2, "new secret");
    assert_eq!(adm.stats(t1).secret_rotations, 1);
    assert_eq!(adm.check_init(t1 + Duration::from_secs(5), from, &with1), Verdict::Admit, "previous, within grace");
    // After the grace period only the current one works.
    let t2 = t1 + Duration::from_secs(11);
    assert!(matches!(adm.check_init(t2, from, &with1), Verdict::Cookie(_)), "previous, after grace");
    assert_eq!(adm.check_init(t2, from, &with_cookie(&req, &c2)), Verdict::Admit);
    // A cookie is bound to the address and the SPI.
    assert!(matches!(adm.check_init(t2, src(8), &with_cookie(&req, &c2)), Verdict::Cookie(_)));
    // Rotation by use count.
    let mut adm = Admission::new(AdmissionConfig { cookie_secret_uses: 3, ..cfg }, [6; 32], T0);
    for i in 0..10u32 {
        adm.check_init(T0, src(i), &req);
    }
    assert_eq!(adm.stats(T0).secret_rotations, 3);
    assert_eq!(adm.stats(T0).cookies_invalid, 0);
}

/// Finding (issue 10): tables keyed by SPIs the peer chooses. One responder
/// engine serves two connections; their peers are seeded alike, so they pick
/// the same IKE SPI and the same ESP SPI. Our SPIs stay distinct, and B's peer
/// deleting its SAs and sending traffic counters disturbs nothing of A.
#[test]
fn peer_choosing_another_connections_spis_disturbs_nothing() {
    let ike = ["aes256gcm16-prfsha256-x25519"];
    let esp = ["aes256gcm16"];
    let c_ip: IpAddr = "10.0.0.3".parse().unwrap();
    let mut r_a = conn("ra", "b", "a", b"psk-a-0123456789", &ike, &esp, "10.2.0.0/24", "10.1.0.0/24");
    r_a.remote_id = wisp_ike::config::IdMatch::Exact(identity("a.example"));
    let mut r_c = conn("rc", "b", "a", b"psk-c-0123456789", &ike, &esp, "10.2.0.0/24", "10.3.0.0/24");
    r_c.remote_addrs = vec![c_ip.into()];
    r_c.remote_id = wisp_ike::config::IdMatch::Exact(identity("c.example"));
    let rcfg = Config { connections: vec![r_a, r_c], ..Config::default() };
    let pool = Arc::new(SpiPool::default());
    let mut resp = Engine::new(rcfg.clone(), Arc::new(ConfigPolicy::new(&rcfg)), [2; 32]).unwrap();
    resp.set_spi_pool(pool.clone());

    let pa_cfg = Config {
        connections: vec![conn("ab", "a", "b", b"psk-a-0123456789", &ike, &esp, "10.1.0.0/24", "10.2.0.0/24")],
        ..Config::default()
    };
    let mut c = conn("cb", "a", "b", b"psk-c-0123456789", &ike, &esp, "10.3.0.0/24", "10.2.0.0/24");
    c.local_addrs = vec![c_ip];
    c.local_id = identity("c.example");
    let pc_cfg = Config { connections: vec![c], ..Config::default() };
    let mut pa = Engine::new(pa_cfg.clone(), Arc::new(ConfigPolicy::new(&pa_cfg)), [7; 32]).unwrap();
    let mut pc = Engine::new(pc_cfg.clone(), Arc::new(ConfigPolicy::new(&pc_cfg)), [7; 32]).unwrap();
    let now = T0;
    let r_addr = addr(B_IP, 500);

    fn pump(now: Duration, resp: &mut Engine, peers: &mut [(&mut Engine, IpAddr)]) {
        for _ in 0..50 {
            let mut moved = false;
            for (p, _) in peers.iter_mut() {
                while let Some(t) = p.poll_transmit() {
                    moved = true;
                    resp.handle_datagram(now, t.remote, t.local, &t.bytes);
                }
            }
            while let Some(t) = resp.poll_transmit() {
                moved = true;
                if let Some((p, _)) = peers.iter_mut().find(|(_, ip)| *ip == t.remote.ip()) {
                    p.handle_datagram(now, t.remote, t.local, &t.bytes);
                }
            }
            if !moved {
                return;
            }
        }
    }

    pa.initiate(now, "ab").unwrap();
    pc.initiate(now, "cb").unwrap();
    let a_ip = pa_cfg.connections[0].local_addrs[0];
    pump(now, &mut resp, &mut [(&mut pa, a_ip), (&mut pc, c_ip)]);
    let _ = r_addr;
    let st = resp.status(now);
    assert_eq!(st.len(), 2, "{st:?}");
    let sa_a = st.iter().find(|s| s.connection == "ra").unwrap().clone();
    let sa_c = st.iter().find(|s| s.connection == "rc").unwrap().clone();
    assert_eq!(sa_a.state, wisp_ike::event::IkeSaState::Established);
    assert_eq!(sa_c.state, wisp_ike::event::IkeSaState::Established);
    assert_eq!(sa_a.spi_i, sa_c.spi_i, "both peers chose the same IKE SPI");
    assert_ne!(sa_a.spi_r, sa_c.spi_r, "ours differ");
    let (ca, cc) = (sa_a.children[0].clone(), sa_c.children[0].clone());
    assert_eq!(ca.spi_out, cc.spi_out, "both peers chose the same ESP SPI");
    assert_ne!(ca.spi_in, cc.spi_in, "ours differ");
    assert_eq!(pool.len(), (2, 2));
    // Traffic counters by our SPI reach A's Child SA only.
    resp.child_traffic(now, ca.spi_in, 1000, 10);
    let bytes_of = |e: &Engine, spi: u32| e.status(now).iter().flat_map(|s| s.children.clone()).find(|c| c.spi_in == spi).map(|c| c.bytes);
    assert_eq!(bytes_of(&resp, ca.spi_in), Some(1000));
    assert_eq!(bytes_of(&resp, cc.spi_in), Some(0));
    // C's peer deletes everything: A's SAs stay as they were.
    let pc_ike = pc.ike_sas()[0];
    pc.delete_ike(now, pc_ike).unwrap();
    pump(now, &mut resp, &mut [(&mut pa, a_ip), (&mut pc, c_ip)]);
    let st = resp.status(now);
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].connection, "ra");
    assert_eq!((st[0].spi_i, st[0].spi_r), (sa_a.spi_i, sa_a.spi_r));
    assert_eq!((st[0].children[0].spi_in, st[0].children[0].spi_out), (ca.spi_in, ca.spi_out));
    // C's ESP SPI is free at once; its IKE SPI stays held by the skeleton
    // that answers a retransmitted DELETE for a while (10 s), then goes.
    assert_eq!(pool.len(), (2, 1), "C's ESP SPI released, its IKE SPI lingers");
    let now = now + Duration::from_secs(11);
    resp.handle_timeout(now);
    pa.handle_timeout(now);
    assert_eq!(resp.status(now).len(), 1);
    assert_eq!(pool.len(), (1, 1), "C's SPIs released, A's kept");
    // A still works: a liveness check round trip.
    let pa_ike = pa.ike_sas()[0];
    pa.check_liveness(now, pa_ike).unwrap();
    pump(now, &mut resp, &mut [(&mut pa, a_ip), (&mut pc, c_ip)]);
    assert_eq!(pa.status(now)[0].state, wisp_ike::event::IkeSaState::Established);
    assert!(pa.is_idle(), "the liveness check was answered");
}
