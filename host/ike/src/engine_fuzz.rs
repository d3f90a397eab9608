//! Body of the `engine_sequence` fuzz target (`host/ike/fuzz/`), also driven
//! on stable by `tests/fuzz_bodies.rs`.
//!
//! The input is a program for a small interpreter. It drives a real
//! initiator engine `a` and the engine under test, a responder `b`, on a
//! virtual clock. Every answer of `b` reaches `a`, so the initiator keeps
//! producing valid messages (IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA,
//! INFORMATIONAL) whatever garbage the program sent `b` before; the program
//! decides which of them reach `b` as sent, mutated, duplicated, from another
//! address, or not at all, interleaves raw datagrams and moves the clock.
//!
//! Panics only on a real bug: a panic inside the engine, or `b` breaking one
//! of the invariants checked after each step (bounded answers per datagram,
//! bounded SA count).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{identity, selector, ChildConfig, Config, ConnectionConfig};
use crate::engine::{Engine, Transmit};
use crate::event::Event;
use crate::native_policy::ConfigPolicy;

const A_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Most steps one input may run (keeps every execution short).
const MAX_STEPS: usize = 64;
/// Most datagrams `b` may queue in answer to one datagram or timer step.
const MAX_ANSWERS_PER_STEP: usize = 8;

fn conn(name: &str, me: &str, peer: &str, me_ip: Ipv4Addr, peer_ip: Ipv4Addr, local_ts: &str, remote_ts: &str) -> Option<ConnectionConfig> {
    let ike = ["aes256gcm16-prfsha256-x25519", "aes128gcm16-prfsha256-ecp256"];
    let esp = ["aes256gcm16", "chacha20poly1305"];
    let mut c =
        ConnectionConfig::new(name, identity(&format!("{me}.example")), Some(identity(&format!("{peer}.example"))), b"fuzz-psk", &ike)
            .ok()?;
    c.local_addrs = vec![IpAddr::V4(me_ip)];
    c.remote_addrs = vec![IpAddr::V4(peer_ip).into()];
    for (child, l, r) in
        [("net", local_ts.to_string(), remote_ts.to_string()), ("net2", local_ts.replace("/24", "/25"), remote_ts.replace("/24", "/25"))]
    {
        c.children.push(ChildConfig::new(child, vec![selector(&l).ok()?], vec![selector(&r).ok()?], &esp).ok()?);
    }
    Some(c)
}

fn engines() -> Option<(Engine, Engine)> {
    let a = Config { connections: vec![conn("ab", "a", "b", A_IP, B_IP, "10.1.0.0/24", "10.2.0.0/24")?], ..Config::default() };
    let b = Config { connections: vec![conn("ba", "b", "a", B_IP, A_IP, "10.2.0.0/24", "10.1.0.0/24")?], ..Config::default() };
    let pa = Arc::new(ConfigPolicy::new(&a));
    let pb = Arc::new(ConfigPolicy::new(&b));
    let ea = Engine::new(a, pa, [1; 32]).ok()?;
    let eb = Engine::new(b, pb, [2; 32]).ok()?;
    Some((ea, eb))
}

struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let end = (self.pos + n).min(self.data.len());
        let s = &self.data[self.pos..end];
        self.pos = end;
        s
    }
}

struct Sim {
    a: Engine,
    b: Engine,
    now: Duration,
    /// Datagrams `a` sent towards `b`, not yet delivered.
    to_b: VecDeque<Transmit>,
    /// The last datagram delivered to `b` (for duplicates).
    last: Option<Transmit>,
    /// `a`'s inbound Child SA SPIs (for rekey/delete requests).
    a_children: Vec<u32>,
    delivered: usize,
    children_up: usize,
}

impl Sim {
    fn pump_a(&mut self) {
        while let Some(t) = self.a.poll_transmit() {
            if self.to_b.len() < 64 {
                self.to_b.push_back(t);
            }
        }
        while let Some(e) = self.a.poll_event() {
            match e {
                Event::ChildSaUp(c) => {
                    self.children_up += 1;
                    self.a_children.push(c.spi_in);
                }
                Event::ChildSaRekeyed { old_spi_in, new, .. } => {
                    self.children_up += 1;
                    self.a_children.retain(|s| *s != old_spi_in);
                    self.a_children.push(new.spi_in);
                }
                Event::ChildSaDown { spi_in, .. } => self.a_children.retain(|s| *s != spi_in),
                _ => {}
            }
        }
    }

    /// Take `b`'s answers to `a` (unmodified), checking their number.
    fn pump_b(&mut self) {
        let mut n = 0;
        while let Some(t) = self.b.poll_transmit() {
            n += 1;
            assert!(n <= MAX_ANSWERS_PER_STEP, "responder queued more than {MAX_ANSWERS_PER_STEP} datagrams in one step");
            assert!(t.bytes.len() <= 65_535, "responder sent a datagram of {} bytes", t.bytes.len());
            self.a.handle_datagram(self.now, t.remote, t.local, &t.bytes);
        }
        while self.b.poll_event().is_some() {}
        self.pump_a();
        // every IKE SA of `b` came from a datagram (no growth from nothing)
        assert!(self.b.ike_sas().len() <= self.delivered + 1, "responder holds more IKE SAs than datagrams it received");
    }

    fn deliver(&mut self, t: &Transmit, remote: SocketAddr, bytes: &[u8]) {
        self.delivered += 1;
        self.b.handle_datagram(self.now, t.remote, remote, bytes);
        self.pump_b();
    }

    fn tick(&mut self, by: Duration) {
        self.now += by;
        for _ in 0..4 {
            let due = |e: &Engine, now| e.poll_timeout().is_some_and(|t| t <= now);
            if !due(&self.a, self.now) && !due(&self.b, self.now) {
                break;
            }
            if due(&self.a, self.now) {
                self.a.handle_timeout(self.now);
            }
            if due(&self.b, self.now) {
                self.b.handle_timeout(self.now);
            }
            self.pump_b();
        }
    }
}

/// Apply mutations read from `inp` to `bytes`: up to four edits, each a
/// position and an operation (bit flip, byte set, 16-bit field set to an edge
/// value, truncate, insert, remove).
fn mutate(inp: &mut Input<'_>, bytes: &mut Vec<u8>) {
    let n = inp.byte().unwrap_or(0) % 4 + 1;
    for _ in 0..n {
        let (Some(op), Some(pos)) = (inp.byte(), inp.u16()) else { return };
        if bytes.is_empty() {
            bytes.push(op);
            continue;
        }
        let i = pos as usize % bytes.len();
        match op % 6 {
            0 => bytes[i] ^= 1 << (op >> 5),
            1 => bytes[i] = inp.byte().unwrap_or(0),
            2 => {
                if i + 1 < bytes.len() {
                    let v: u16 = [0, 1, 3, 4, 8, 0x7fff, 0xfffe, 0xffff][(op >> 3) as usize % 8];
                    bytes[i..i + 2].copy_from_slice(&v.to_be_bytes());
                }
            }
            3 => bytes.truncate(i),
            4 => bytes.insert(i, inp.byte().unwrap_or(0)),
            _ => {
                bytes.remove(i);
            }
        }
    }
}

/// What one program reached (for the stable test's coverage checks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Datagrams delivered to the responder.
    pub delivered: usize,
    /// Child SAs the initiator saw come up (including rekeyed ones).
    pub children_up: usize,
}

/// Run one program (see the module documentation).
pub fn engine_sequence(data: &[u8]) -> Summary {
    let Some((a, b)) = engines() else { panic!("fuzz configuration rejected") };
    let mut sim = Sim {
        a,
        b,
        now: Duration::from_secs(1000),
        to_b: VecDeque::new(),
        last: None,
        a_children: Vec::new(),
        delivered: 0,
        children_up: 0,
    };
    sim.a.start(sim.now);
    if sim.a.initiate(sim.now, "ab").is_err() {
        panic!("initiate failed");
    }
    sim.pump_a();
    let a_addr = SocketAddr::new(IpAddr::V4(A_IP), 500);
    let mut inp = Input { data, pos: 0 };
    for _ in 0..MAX_STEPS {
        let Some(op) = inp.byte() else { break };
        match op % 10 {
            // the next valid message, as sent
            0..=2 => {
                if let Some(t) = sim.to_b.pop_front() {
                    sim.deliver(&t, t.local, &t.bytes);
                    sim.last = Some(t);
                }
            }
            // a mutated copy of the next valid message (the original stays queued)
            3 => {
                if let Some(t) = sim.to_b.front().cloned() {
                    let mut m = t.bytes.clone();
                    mutate(&mut inp, &mut m);
                    sim.deliver(&t, t.local, &m);
                }
            }
            // the last delivered message again (retransmission / replay)
            4 => {
                if let Some(t) = sim.last.clone() {
                    sim.deliver(&t, t.local, &t.bytes);
                }
            }
            // raw bytes, optionally behind a copy of the next message's header
            5 => {
                let len = inp.byte().unwrap_or(0) as usize * 2;
                let mut m = Vec::new();
                if let Some(t) = sim.to_b.front() {
                    if op & 0x10 != 0 {
                        m.extend_from_slice(&t.bytes[..t.bytes.len().min(28)]);
                    }
                }
                m.extend_from_slice(inp.bytes(len));
                if m.len() >= 28 && op & 0x20 != 0 {
                    let l = (m.len() as u32).to_be_bytes();
                    m[24..28].copy_from_slice(&l);
                }
                let t =
                    Transmit { local: a_addr, remote: SocketAddr::new(IpAddr::V4(B_IP), 500), bytes: Vec::new(), non_esp_marker: false };
                sim.deliver(&t, a_addr, &m);
            }
            // the next valid message from another address/port (NAT rebinding)
            6 => {
                if let Some(t) = sim.to_b.pop_front() {
                    let port = inp.u16().unwrap_or(4500);
                    let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 9, op >> 4)), port);
                    sim.deliver(&t, from, &t.bytes);
                    sim.last = Some(t);
                }
            }
            // drop the next valid message (the initiator will retransmit)
            7 => {
                sim.to_b.pop_front();
            }
            // advance the virtual clock and run due timers
            8 => {
                let secs = inp.byte().unwrap_or(1) as u64;
                let ms = if op & 0x10 != 0 { secs * 1000 } else { secs * 10 };
                sim.tick(Duration::from_millis(ms.max(1)));
            }
            // make the initiator start another exchange
            _ => {
                let which = inp.byte().unwrap_or(0);
                if let Some(&ike) = sim.a.ike_sas().first() {
                    let spi = sim.a_children.first().copied();
                    let now = sim.now;
                    let _ = match (which % 6, spi) {
                        (0, Some(s)) => sim.a.rekey_child(now, ike, s),
                        (1, _) => sim.a.rekey_ike(now, ike),
                        (2, Some(s)) => sim.a.delete_child(now, ike, s),
                        (3, _) => sim.a.check_liveness(now, ike),
                        (4, _) => sim.a.initiate_child(now, "ab", "net2").map(|_| ()),
                        _ => sim.a.delete_ike(now, ike),
                    };
                }
                sim.pump_a();
            }
        }
    }
    // Finally let both sides settle; the responder must not loop or explode.
    sim.tick(Duration::from_secs(60));
    sim.tick(Duration::from_secs(600));
    Summary { delivered: sim.delivered, children_up: sim.children_up }
}

/// A program that completes the handshake and exercises a rekey, DPD and a
/// delete without any mutation (used by the stable test to check that the
/// interpreter reaches the established state).
pub fn valid_program() -> Vec<u8> {
    // IKE_SA_INIT, IKE_AUTH delivered; then child rekey, DPD, IKE rekey,
    // child delete, each delivered.
    vec![0, 0, 9, 0, 0, 9, 3, 0, 9, 1, 0, 9, 2, 0, 8, 1]
}
