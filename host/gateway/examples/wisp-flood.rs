//! IKE_SA_INIT flood generator for `scripts/bench-flood.sh` (not part of the
//! daemon): sends spoofed-looking IKE_SA_INIT requests from many local
//! addresses at a fixed rate and counts the COOKIE answers that come back.
//!
//! ```text
//! wisp-flood TARGET_IP RATE_PER_SEC SECONDS SRC_PREFIX FIRST LAST
//!   e.g. wisp-flood 10.97.0.1 20000 10 10.97.1. 1 250
//! ```
//! Requests offer aes128gcm16-prfsha256-x25519; every other one carries a
//! low-order x25519 value (all zero), the rest a random 32-byte value; each
//! has its own SPIi and nonce.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp_ike::codec::{Message, Payload};
use wisp_ike::config::{identity, ChildConfig, Config, ConnectionConfig};
use wisp_ike::engine::Engine;
use wisp_ike::native_policy::ConfigPolicy;

fn template(target: IpAddr) -> Message {
    let mut c = ConnectionConfig::new("f", identity("flood.test"), None, b"0123456789abcdef", &["aes128gcm16-prfsha256-x25519"]).unwrap();
    c.remote_addrs = vec![target.into()];
    c.children.push(
        ChildConfig::new(
            "n",
            vec![wisp_ike::config::selector("10.0.0.0/8").unwrap()],
            vec![wisp_ike::config::selector("10.0.0.0/8").unwrap()],
            &["aes128gcm16"],
        )
        .unwrap(),
    );
    let cfg = Config { connections: vec![c], ..Config::default() };
    let mut e = Engine::new(cfg.clone(), Arc::new(ConfigPolicy::new(&cfg)), [3; 32]).unwrap();
    e.initiate(Duration::ZERO, "f").unwrap();
    Message::decode(&e.poll_transmit().unwrap().bytes).unwrap()
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 {
        eprintln!("usage: wisp-flood TARGET_IP RATE SECONDS SRC_PREFIX FIRST LAST");
        std::process::exit(2);
    }
    let target: IpAddr = a[1].parse().expect("target");
    let rate: u64 = a[2].parse().expect("rate");
    let secs: u64 = a[3].parse().expect("seconds");
    let (first, last): (u32, u32) = (a[5].parse().expect("first"), a[6].parse().expect("last"));
    let socks: Vec<UdpSocket> = (first..=last)
        .map(|i| {
            let s = UdpSocket::bind(format!("{}{i}:500", a[4])).expect("bind a source address");
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let to = SocketAddr::new(target, 500);
    // 4096 distinct requests, prepared up front; SPIs are patched per send.
    let tmpl = template(target);
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let msgs: Vec<Vec<u8>> = (0..4096)
        .map(|i| {
            let mut m = tmpl.clone();
            for p in &mut m.payloads {
                match p {
                    Payload::Ke(k) if i % 2 == 1 => k.data = vec![0; k.data.len()],
                    Payload::Ke(k) => rng.fill(&mut k.data),
                    Payload::Nonce(n) => rng.fill(n),
                    _ => {}
                }
            }
            m.encode().unwrap()
        })
        .collect();
    let start = Instant::now();
    let total = rate * secs;
    let (mut sent, mut send_err, mut cookies, mut other) = (0u64, 0u64, 0u64, 0u64);
    let mut buf = [0u8; 2048];
    let mut last_rx = Instant::now();
    while sent < total {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due.min(total) {
            let mut m = msgs[(sent % 4096) as usize].clone();
            m[0..8].copy_from_slice(&rng.next().to_be_bytes());
            if socks[(sent % socks.len() as u64) as usize].send_to(&m, to).is_err() {
                send_err += 1;
            }
            sent += 1;
        }
        if last_rx.elapsed() >= Duration::from_millis(20) {
            last_rx = Instant::now();
            for s in &socks {
                while let Ok(n) = s.recv(&mut buf) {
                    match Message::decode(&buf[..n]) {
                        Ok(m) if m.notify(wisp_ike::codec::NotifyType::COOKIE).is_some() => cookies += 1,
                        _ => other += 1,
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    // Late answers.
    let end = Instant::now() + Duration::from_millis(500);
    while Instant::now() < end {
        for s in &socks {
            while let Ok(n) = s.recv(&mut buf) {
                match Message::decode(&buf[..n]) {
                    Ok(m) if m.notify(wisp_ike::codec::NotifyType::COOKIE).is_some() => cookies += 1,
                    _ => other += 1,
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "sent={sent} send_errors={send_err} seconds={el:.1} rate={:.0}/s sources={} cookie_answers={cookies} other_answers={other}",
        sent as f64 / el,
        socks.len()
    );
}
