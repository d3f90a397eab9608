//! Load client for `scripts/bench-scale.sh` (not part of the daemon): one
//! `wisp_ike::engine::Engine` acting as thousands of initiators over real
//! UDP, from many local addresses, against one wisp gateway. Each IKE SA
//! carries one Child SA; the client keeps a window of negotiations in
//! flight and reports how fast they complete.
//!
//! ```text
//! wisp-load TARGET_IP SRC_PREFIX FIRST LAST TOTAL WINDOW PSK
//!   e.g. wisp-load 10.76.0.1 10.76.1. 1 100 10000 256 load-psk-0123456789
//! ```
//! Source address `SRC_PREFIX{i}` is connection `c{i}` with identity
//! `c{i}.load.test` and inner network `10.200.{i}.0/24`. Prints one line of
//! `key=value` results; then holds the SAs, answering the gateway's DPD
//! and rekeys, until stdin closes (so the script can measure the gateway
//! with them all up), prints a second line counting what happened to them
//! meanwhile (`held: rekeyed_ike=… rekeyed_child=… ike_down=N (by reason) …`),
//! and deletes nothing.
//!
//! With `WISP_LOAD_VIPS=1` every IKE SA is a road warrior of its own:
//! connection `v{n}` with identity `u{n}.load.test` (so that each gets an
//! address of its own), `vips = 0.0.0.0` and a dynamic local selector; the
//! result line adds `vips=` (SAs that got one) and `distinct_vips=`. With
//! `WISP_LOAD_VIPS=ids`, the same identities without virtual IPs (the
//! control that tells leasing's cost from that of 10,000 identities).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp_ike::config::{identity, selector, ChildConfig, Config, ConnectionConfig, Retransmit};
use wisp_ike::engine::Engine;
use wisp_ike::event::{Event, IkeSaId};
use wisp_ike::native_policy::ConfigPolicy;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 8 {
        eprintln!("usage: wisp-load TARGET_IP SRC_PREFIX FIRST LAST TOTAL WINDOW PSK");
        std::process::exit(2);
    }
    let target: IpAddr = a[1].parse().expect("target");
    let (first, last): (u32, u32) = (a[3].parse().expect("first"), a[4].parse().expect("last"));
    let total: usize = a[5].parse().expect("total");
    let window: usize = a[6].parse().expect("window");
    let psk = a[7].as_bytes();
    // `1`: an identity and a virtual IP per SA; `ids`: an identity per SA,
    // fixed selectors (the control for `1`).
    let mode = std::env::var("WISP_LOAD_VIPS").unwrap_or_default();
    let vips = mode == "1";
    let per_sa = vips || mode == "ids";
    let mut conns = Vec::new();
    let mut socks: HashMap<SocketAddr, UdpSocket> = HashMap::new();
    let conn = |name: &str, id: &str, src: IpAddr, local_ts: Vec<wisp_policy_api::TrafficSelector>| {
        let mut c = ConnectionConfig::new(name, identity(id), Some(identity("gw.load.test")), psk, &["aes128gcm16-prfsha256-x25519"])
            .expect("connection");
        c.local_addrs = vec![src];
        c.remote_addrs = vec![target.into()];
        c.initial_contact = false;
        c.caps.max_ike_sas = total + 1;
        c.caps.max_child_sas = total + 1;
        c.retransmit = Retransmit { timeout: Duration::from_secs(2), backoff: 1.5, tries: 4 };
        c.children.push(ChildConfig::new("n", local_ts, vec![selector("10.199.0.0/16").unwrap()], &["aes128gcm16"]).unwrap());
        c
    };
    let sources: Vec<IpAddr> = (first..=last).map(|i| format!("{}{i}", a[2]).parse().expect("source address")).collect();
    if per_sa {
        for n in 0..total {
            let ts = if vips { Vec::new() } else { vec![selector(&format!("10.200.{}.0/24", n % 256)).expect("selector")] };
            let mut c = conn(&format!("v{n}"), &format!("u{n}.load.test"), sources[n % sources.len()], ts);
            if vips {
                c.vips = vec![IpAddr::from([0, 0, 0, 0])];
            }
            conns.push(c);
        }
    }
    for (k, &src) in sources.iter().enumerate() {
        let i = first as usize + k;
        if !per_sa {
            let local_ts = selector(&format!("10.200.{}.0/24", i % 256)).expect("selector");
            conns.push(conn(&format!("c{i}"), &format!("c{i}.load.test"), src, vec![local_ts]));
        }
        for port in [500, 4500] {
            let at = SocketAddr::new(src, port);
            let s = UdpSocket::bind(at).unwrap_or_else(|e| panic!("bind {at}: {e}"));
            s.set_nonblocking(true).unwrap();
            socks.insert(at, s);
        }
    }
    let names: Vec<String> = conns.iter().map(|c| c.name.clone()).collect();
    let cfg = Config { connections: conns, ..Config::default() };
    let mut e = Engine::new(cfg.clone(), Arc::new(ConfigPolicy::new(&cfg)), [5; 32]).expect("engine");
    let fds: Vec<(SocketAddr, i32)> = socks.iter().map(|(a, s)| (*a, s.as_raw_fd())).collect();
    let mut pfds: Vec<libc::pollfd> = fds.iter().map(|(_, fd)| libc::pollfd { fd: *fd, events: libc::POLLIN, revents: 0 }).collect();
    let epoch = Instant::now();
    let now = || epoch.elapsed();
    let mut k = Tally::default();
    let mut started = 0usize;
    let mut buf = vec![0u8; 65536];
    let mut last_timer = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    while k.up + k.failed < total && Instant::now() < deadline {
        while k.pending.len() < window && started < total {
            let t = now();
            match e.initiate(t, &names[started % names.len()]) {
                Ok(id) => {
                    k.pending.insert(id, t);
                }
                Err(err) => {
                    eprintln!("initiate: {err}");
                    k.failed += 1;
                }
            }
            started += 1;
        }
        flush(&mut e, &socks, &mut k, now());
        pump(&mut e, &socks, &fds, &mut pfds, &mut buf, 2, now());
        if last_timer.elapsed() >= Duration::from_millis(50) {
            last_timer = Instant::now();
            let t = now();
            if e.poll_timeout().is_some_and(|d| d <= t) {
                e.handle_timeout(t);
            }
        }
    }
    let el = epoch.elapsed().as_secs_f64();
    let (up, failed) = (k.up, k.failed);
    let mut latencies = std::mem::take(&mut k.latencies);
    latencies.sort();
    let pct = |q: f64| {
        latencies.get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1))).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let vip_line = if vips { format!(" vips={} distinct_vips={}", k.vips, k.distinct_vips.len()) } else { String::new() };
    println!(
        "started={started} established={up} failed={failed} seconds={el:.2} rate={:.0}/s sources={} latency_ms_p50={:.1} latency_ms_p99={:.1}{vip_line}",
        up as f64 / el,
        sources.len(),
        pct(0.5),
        pct(0.99)
    );
    // Hold the SAs (answering DPD and rekeys) until stdin closes.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        while std::io::stdin().read(&mut sink).map(|n| n > 0).unwrap_or(false) {}
        let _ = tx.send(());
    });
    while rx.try_recv().is_err() {
        pump(&mut e, &socks, &fds, &mut pfds, &mut buf, 20, now());
        let t = now();
        if e.poll_timeout().is_some_and(|d| d <= t) {
            e.handle_timeout(t);
        }
        flush(&mut e, &socks, &mut k, t);
    }
    let reasons = |m: &BTreeMap<String, usize>| m.iter().map(|(r, n)| format!("{r}:{n}")).collect::<Vec<_>>().join(",");
    println!(
        "held: rekeyed_ike={} rekeyed_child={} ike_down={} ({}) child_down={} ({}) failures={}",
        k.rekeyed_ike,
        k.rekeyed_child,
        k.ike_down.values().sum::<usize>(),
        reasons(&k.ike_down),
        k.child_down.values().sum::<usize>(),
        reasons(&k.child_down),
        k.later_failures
    );
}

/// What the client counts: negotiations under way (with their start),
/// their outcomes, and what happens to the SAs afterwards.
#[derive(Default)]
struct Tally {
    pending: HashMap<IkeSaId, Duration>,
    up: usize,
    failed: usize,
    latencies: Vec<Duration>,
    rekeyed_ike: usize,
    rekeyed_child: usize,
    /// Down events by reason (`Rekeyed`, `Expired`, ...).
    ike_down: BTreeMap<String, usize>,
    child_down: BTreeMap<String, usize>,
    /// Failures of SAs no longer being established (rekeys, DPD answers).
    later_failures: usize,
    /// IKE SAs that came up with a virtual IP, and the addresses seen.
    vips: usize,
    distinct_vips: std::collections::HashSet<IpAddr>,
}

/// A reason's variant name, without its text.
fn kind(r: &wisp_ike::event::DownReason) -> String {
    let d = format!("{r:?}");
    d.split('(').next().unwrap_or("").to_string()
}

/// Wait up to `ms` for datagrams and hand every IKE message to the engine
/// (on 4500 only those with the non-ESP marker).
fn pump(
    e: &mut Engine,
    socks: &HashMap<SocketAddr, UdpSocket>,
    fds: &[(SocketAddr, i32)],
    pfds: &mut [libc::pollfd],
    buf: &mut [u8],
    ms: i32,
    now: Duration,
) {
    // SAFETY: `pfds` is a valid, exclusively borrowed array of pollfd for the whole call.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
    if r <= 0 {
        return;
    }
    for (i, p) in pfds.iter_mut().enumerate() {
        if p.revents & libc::POLLIN == 0 {
            continue;
        }
        p.revents = 0;
        let (local, _) = fds[i];
        let s = &socks[&local];
        while let Ok((n, from)) = s.recv_from(buf) {
            let off = if local.port() == 4500 { 4 } else { 0 };
            if off == 4 && (n < 4 || buf[..4] != [0; 4]) {
                continue; // ESP or keepalive: not ours to handle here
            }
            e.handle_datagram(now, local, from, &buf[off..n]);
        }
    }
}

fn flush(e: &mut Engine, socks: &HashMap<SocketAddr, UdpSocket>, k: &mut Tally, now: Duration) {
    while let Some(t) = e.poll_transmit() {
        let Some(s) = socks.get(&t.local) else { continue };
        if t.non_esp_marker {
            let mut m = vec![0u8; 4];
            m.extend_from_slice(&t.bytes);
            let _ = s.send_to(&m, t.remote);
        } else {
            let _ = s.send_to(&t.bytes, t.remote);
        }
    }
    while let Some(ev) = e.poll_event() {
        match ev {
            Event::ChildSaUp(c) => {
                if let Some(t0) = k.pending.remove(&c.ike) {
                    k.up += 1;
                    k.latencies.push(now.saturating_sub(t0));
                }
            }
            Event::Failure(f) if f.ike.is_some_and(|ike| k.pending.remove(&ike).is_some()) => {
                k.failed += 1;
                eprintln!("failed: {f}");
            }
            Event::IkeSaUp(info) if !info.vips.local.is_empty() => {
                k.vips += 1;
                k.distinct_vips.extend(info.vips.local.iter().copied());
            }
            Event::IkeSaRekeyed { .. } => k.rekeyed_ike += 1,
            Event::ChildSaRekeyed { .. } => k.rekeyed_child += 1,
            Event::IkeSaDown { reason, .. } => *k.ike_down.entry(kind(&reason)).or_default() += 1,
            Event::ChildSaDown { reason, .. } => *k.child_down.entry(kind(&reason)).or_default() += 1,
            Event::Failure(f) => {
                k.later_failures += 1;
                if k.later_failures <= 5 {
                    eprintln!("later failure: {f}");
                }
            }
            _ => {}
        }
    }
}
