//! End to end: two `wisp` gateways in two network namespaces (wisp-testbed's
//! `Pair`: 10.99.0.1 ↔ 10.99.0.2), real traffic through the tunnel between
//! 10.98.1.1 (on A's TUN) and 10.98.2.1 (on B's TUN). Needs root.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use wisp_testbed::netns::{veth, Netns, Pair};
use wisp_testbed::traffic::{ping, tcp_transfer, BgPing};
use wisp_testbed::wisp::{plugin_path, write_private, WispChild, WispConf, WispConn, WispDaemon};
use wisp_testbed::{require_root, TestDir};

const PSK: &str = "e2e-test-psk-0123456789";
const A_IN: &str = "10.98.1.1";
const B_IN: &str = "10.98.2.1";
const MB: u64 = 1 << 20;

fn init() {
    // SAFETY (edition 2021: set_var is safe): tests only read WISP_BIN afterwards.
    std::env::set_var("WISP_BIN", env!("CARGO_BIN_EXE_wisp"));
}

struct Opts {
    esp: &'static str,
    psk_b: &'static str,
    allowed_by_b: &'static str,
    child_rekey: Option<&'static str>,
    dpd: Option<(&'static str, &'static str)>,
    /// `start_action` of A's connection `site`.
    start_a: Option<&'static str>,
    /// `site` runs over IPv6 outer addresses (fd00:99::1 ~ fd00:99::2).
    outer6: bool,
    /// `[plugin] on_change` of both gateways (none = the default, `recheck`).
    on_change: Option<&'static str>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            esp: "aes128gcm16",
            psk_b: PSK,
            allowed_by_b: "a.wisp.test",
            child_rekey: None,
            dpd: None,
            start_a: None,
            outer6: false,
            on_change: None,
        }
    }
}

fn conf(o: &Opts, a_side: bool) -> WispConf {
    let plugin = plugin_path("default").expect("default plugin");
    let (l, r, lid, rid, lts, rts, tun, allowed, psk) = if a_side {
        ("10.99.0.1", "10.99.0.2", "a.wisp.test", "b.wisp.test", "10.98.1.0/24", "10.98.2.0/24", A_IN, "b.wisp.test", PSK)
    } else {
        ("10.99.0.2", "10.99.0.1", "b.wisp.test", "a.wisp.test", "10.98.2.0/24", "10.98.1.0/24", B_IN, o.allowed_by_b, o.psk_b)
    };
    let (l, r) = match (o.outer6, a_side) {
        (false, _) => (l, r),
        (true, true) => ("fd00:99::1", "fd00:99::2"),
        (true, false) => ("fd00:99::2", "fd00:99::1"),
    };
    let mut child = WispChild::new("net", lts, rts, o.esp);
    // Only A rekeys (B keeps the 1 h default), so every rekey is A-initiated.
    if let (Some(rk), true) = (o.child_rekey, a_side) {
        child.rekey_time = Some(rk.into());
        child.life_time = Some("60s".into());
    }
    let mut conns = vec![WispConn {
        name: "site".into(),
        local_addrs: vec![l.into()],
        remote_addrs: vec![r.into()],
        local_id: lid.into(),
        remote_id: rid.into(),
        psk: psk.into(),
        proposals: vec!["aes128gcm16-prfsha256-x25519".into()],
        dpd_delay: o.dpd.map(|d| d.0.into()),
        dpd_timeout: o.dpd.map(|d| d.1.into()),
        start_action: o.start_a.filter(|_| a_side).map(Into::into),
        children: vec![child],
        ..Default::default()
    }];
    // A second connection from A's second address (10.99.0.3): "the next
    // negotiation" for policy checks while `site` keeps running.
    let (l2, r2, lts2, rts2) = if a_side {
        ("10.99.0.3", "10.99.0.2", "10.97.1.0/24", "10.97.2.0/24")
    } else {
        ("10.99.0.2", "10.99.0.3", "10.97.2.0/24", "10.97.1.0/24")
    };
    conns.push(WispConn {
        name: "site2".into(),
        local_addrs: vec![l2.into()],
        remote_addrs: vec![r2.into()],
        local_id: lid.into(),
        remote_id: rid.into(),
        psk: psk.into(),
        proposals: vec!["aes128gcm16-prfsha256-x25519".into()],
        children: vec![WispChild::new("lab", lts2, rts2, "aes128gcm16")],
        ..Default::default()
    });
    WispConf {
        log_level: Some("debug".into()),
        tun_name: Some("wisp0".into()),
        tun_addrs: vec![format!("{tun}/32")],
        plugin: Some(plugin),
        plugin_settings: vec![format!("allowed_ids = [\"{allowed}\"]")],
        conns,
        ..Default::default()
    }
}

/// The rendered config of one side, with `[plugin] on_change` when set.
fn render(o: &Opts, a_side: bool) -> String {
    let text = conf(o, a_side).render();
    match o.on_change {
        Some(v) => text.replace("[plugin]\n", &format!("[plugin]\non_change = \"{v}\"\n")),
        None => text,
    }
}

struct Setup {
    // Field order = drop order: daemons stop (DELETE) before namespaces go.
    a: WispDaemon,
    b: WispDaemon,
    dir_a: TestDir,
    _dir_b: TestDir,
    pair: Pair,
}

fn setup(tag: &str, o: &Opts) -> Setup {
    init();
    let pair = Pair::new(tag).expect("namespaces");
    pair.left.addr_add(Pair::IFACE, "10.99.0.3/24").expect("second address");
    if o.outer6 {
        for (ns, a) in [(&pair.left, "fd00:99::1/64"), (&pair.right, "fd00:99::2/64")] {
            let out = ns.output("ip", &["addr", "add", a, "dev", Pair::IFACE, "nodad"]).expect("ip");
            assert!(out.status.success(), "{a}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let dir_a = TestDir::new(&format!("{tag}a")).unwrap();
    let dir_b = TestDir::new(&format!("{tag}b")).unwrap();
    let b = WispDaemon::start(&pair.right, dir_b.path(), &render(o, false)).expect("gateway B");
    let a = WispDaemon::start(&pair.left, dir_a.path(), &render(o, true)).expect("gateway A");
    Setup { a, b, dir_a, _dir_b: dir_b, pair }
}

fn up(s: &Setup) {
    let out = s.a.cli_ok(&["up", "site"]).expect("wisp up site");
    assert!(out.contains("established"), "{out}");
}

fn child<'a>(st: &'a serde_json::Value, conn: &str) -> Vec<&'a serde_json::Value> {
    st["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == conn)
        .flat_map(|c| c["ike_sas"].as_array().into_iter().flatten())
        .flat_map(|i| i["children"].as_array().into_iter().flatten())
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ping_and_transfer(tag: &str, esp: &'static str, cipher: &str) -> Setup {
    let s = setup(tag, &Opts { esp, ..Default::default() });
    up(&s);
    let p = ping(&s.pair.left, A_IN, B_IN, 5, 0.2).unwrap();
    assert_eq!(p.received, 5, "ping through the tunnel: {p:?}\nA:\n{}", s.a.log_tail(30));
    let t = tcp_transfer(&s.pair.right, ip(B_IN), 5201, &s.pair.left, ip(A_IN), 100 * MB, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("transfer: {e}\nA:\n{}\nB:\n{}", s.a.log_tail(30), s.b.log_tail(30)));
    assert_eq!(t.bytes, 100 * MB);
    assert!(t.intact(), "checksum mismatch");
    println!("{tag}: 100 MB via {cipher} in {} ms = {:.0} Mbit/s", t.millis, t.mbit_per_s());
    let st = s.a.status().unwrap();
    let ch = child(&st, "site");
    assert_eq!(ch.len(), 1, "{st:#}");
    assert!(ch[0]["algorithms"].as_str().unwrap().starts_with(cipher), "{st:#}");
    assert!(ch[0]["bytes_out"].as_u64().unwrap() >= 100 * MB, "{st:#}");
    assert_eq!(ch[0]["local_ts"][0], "10.98.1.0/24");
    s
}

#[test]
fn tunnel_aes_gcm_ping_and_100mb_tcp() {
    if !require_root("tunnel_aes_gcm_ping_and_100mb_tcp") {
        return;
    }
    ping_and_transfer("gcm", "aes128gcm16", "AES_GCM_16_128");
}

#[test]
fn tunnel_chacha20_ping_and_100mb_tcp() {
    if !require_root("tunnel_chacha20_ping_and_100mb_tcp") {
        return;
    }
    let s = ping_and_transfer("cha", "chacha20poly1305", "CHACHA20_POLY1305");
    // Forced rekeys from the CLI: Child SA, then IKE SA (children move along).
    let before = s.a.status().unwrap();
    let out = s.a.cli_ok(&["rekey", "site"]).unwrap();
    assert!(out.contains("rekeying 1 Child SA"), "{out}");
    let st =
        s.a.wait_status(Duration::from_secs(10), |st| rekeys(st) >= 1 && child(st, "site").len() == 1).unwrap_or_else(|e| panic!("{e}"));
    assert_ne!(child(&st, "site")[0]["spi_in"], child(&before, "site")[0]["spi_in"]);
    let ike_spi = |st: &serde_json::Value| st["connections"][0]["ike_sas"][0]["local_spi"].clone();
    let out = s.a.cli_ok(&["rekey", "site", "--ike"]).unwrap();
    assert!(out.contains("rekeying 1 IKE SA"), "{out}");
    let old = ike_spi(&st);
    let st =
        s.a.wait_status(Duration::from_secs(10), |st| {
            st["connections"][0]["ike_sas"].as_array().is_some_and(|v| v.len() == 1) && ike_spi(st) != old
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(child(&st, "site").len(), 1, "child moved to the new IKE SA: {st:#}");
    assert_eq!(ping(&s.pair.left, A_IN, B_IN, 3, 0.2).unwrap().received, 3);
}

fn rekeys(st: &serde_json::Value) -> u64 {
    child(st, "site").iter().map(|c| c["rekeys"].as_u64().unwrap_or(0)).max().unwrap_or(0)
}

#[test]
fn child_rekey_every_2s_loses_nothing() {
    if !require_root("child_rekey_every_2s_loses_nothing") {
        return;
    }
    let s = setup("rky", &Opts { child_rekey: Some("2s"), ..Default::default() });
    up(&s);
    let spi0 = child(&s.a.status().unwrap(), "site")[0]["spi_in"].clone();
    // TCP kept busy for ~6 s across rekeys: every transfer arrives intact.
    let t0 = Instant::now();
    let mut total = 0;
    // A fresh port per round: the last round's server socket may still be closing.
    let mut port = 5202;
    while t0.elapsed() < Duration::from_secs(6) {
        port += 1;
        let t = tcp_transfer(&s.pair.right, ip(B_IN), port, &s.pair.left, ip(A_IN), 40 * MB, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("transfer across rekeys: {e}\nA:\n{}", s.a.log_tail(40)));
        assert!(t.intact(), "checksum mismatch across rekeys");
        total += t.bytes;
    }
    let r1 = rekeys(&s.a.status().unwrap());
    // A counted ping flood (500 × 10 ms) across further rekeys: nothing lost.
    let flood = BgPing::start_count(&s.pair.left, A_IN, B_IN, 0.01, 500).unwrap();
    let p = flood.wait().unwrap();
    let st = s.a.status().unwrap();
    let r2 = rekeys(&st);
    println!("rekey: {} MB TCP in {:?} across {r1} rekeys; ping {p:?} across {} more", total / MB, t0.elapsed(), r2 - r1);
    assert!(r1 >= 2, "expected several rekeys during TCP: {st:#}");
    assert!(r2 >= r1 + 2, "expected several rekeys during the ping flood: {st:#}");
    assert!(child(&st, "site").iter().all(|c| c["spi_in"] != spi0), "SPI unchanged: {st:#}");
    assert_eq!(p.sent, 500, "{p:?}");
    assert_eq!(p.lost(), 0, "ping flood lost packets across rekeys: {p:?}");
}

fn write_b_conf(s: &Setup, allowed: &'static str, on_change: Option<&'static str>) {
    // Like an editor: temp file + rename.
    let c = render(&Opts { allowed_by_b: allowed, on_change, ..Default::default() }, false);
    let tmp = s.b.dir().join("wisp.toml.tmp");
    write_private(&tmp, &c).unwrap();
    std::fs::rename(&tmp, s.b.dir().join("wisp.toml")).unwrap();
    let out = s.b.cli_ok(&["reload"]).unwrap();
    assert!(out.contains("settings applied"), "{out}");
}

fn conn_status<'a>(st: &'a serde_json::Value, conn: &str) -> &'a serde_json::Value {
    st["connections"].as_array().unwrap().iter().find(|c| c["name"] == conn).unwrap()
}

/// Issue 10, item 6: after `wisp reload` denies the peer, its live tunnel is
/// re-checked and taken down (DELETE sent, routes removed) within a second.
#[test]
fn reload_denying_peer_takes_tunnel_down_within_1s() {
    if !require_root("reload_denying_peer_takes_tunnel_down_within_1s") {
        return;
    }
    let s = setup("rvk", &Opts::default());
    up(&s);
    let p = ping(&s.pair.left, A_IN, B_IN, 3, 0.2).unwrap();
    assert_eq!(p.received, 3, "tunnel up before the reload: {p:?}");
    let flood = BgPing::start_count(&s.pair.left, A_IN, B_IN, 0.02, 150).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    write_b_conf(&s, "nobody.wisp.test", None);
    let reloaded = asked.elapsed();
    // DELETE reached the peer: A holds no SA any more.
    let gone = loop {
        let st = s.a.status().unwrap();
        if conn_status(&st, "site")["ike_sas"].as_array().unwrap().is_empty() {
            break asked.elapsed();
        }
        assert!(asked.elapsed() < Duration::from_secs(5), "A still holds the SA 5 s after the reload: {st:#}\nB:\n{}", s.b.log_tail(30));
        std::thread::sleep(Duration::from_millis(10));
    };
    println!("revocation: reload answered after {} ms, A's SA gone after {} ms", reloaded.as_millis(), gone.as_millis());
    assert!(gone < reloaded + Duration::from_secs(1), "A's SA gone {gone:?} after the reload request (reload itself took {reloaded:?})");
    // B shows why.
    let st = s.b.status().unwrap();
    let site = conn_status(&st, "site");
    assert!(site["ike_sas"].as_array().unwrap().is_empty(), "{st:#}");
    let why = site["last_error"].as_str().unwrap_or_default();
    assert!(why.contains("revoked after reload") && why.contains("a.wisp.test") && why.contains("not authorized"), "B status: {st:#}");
    // Pings stop: the flood lost everything after the revocation, a new ping gets nothing.
    let f = flood.wait().unwrap();
    assert!(f.lost() > 50, "{f:?}");
    let p = ping(&s.pair.left, A_IN, B_IN, 3, 0.2).unwrap();
    assert_eq!(p.received, 0, "pings pass after the revocation: {p:?}");
    // And the next negotiation is refused too.
    let o = s.a.cli(&["up", "site"]).unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("AUTHENTICATION_FAILED"), "{o:?}");
}

/// With `[plugin] on_change = "keep"`, a reload only applies to the next
/// negotiation: the live tunnel keeps carrying traffic.
#[test]
fn on_change_keep_leaves_tunnel_up() {
    if !require_root("on_change_keep_leaves_tunnel_up") {
        return;
    }
    let keep = Some("keep");
    let s = setup("keep", &Opts { on_change: keep, ..Default::default() });
    up(&s);
    let (left, right) = (&s.pair.left, &s.pair.right);
    // B's policy now denies A, while 100 MB are in flight.
    let t = std::thread::scope(|sc| {
        let h = sc.spawn(|| tcp_transfer(right, ip(B_IN), 5203, left, ip(A_IN), 100 * MB, Duration::from_secs(90)));
        std::thread::sleep(Duration::from_millis(300));
        write_b_conf(&s, "nobody.wisp.test", keep);
        h.join().unwrap()
    })
    .unwrap();
    assert!(t.intact() && t.bytes == 100 * MB, "transfer across reload");
    let st = s.b.status().unwrap();
    let n = st["plugin"]["load_number"].as_u64().unwrap();
    assert!(n >= 2, "{st:#}");
    assert_eq!(conn_status(&st, "site")["ike_sas"].as_array().unwrap().len(), 1, "{st:#}");
    // The next negotiation follows the new policy.
    let o = s.a.cli(&["up", "site2"]).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "site2 must be refused");
    assert!(err.contains("AUTHENTICATION_FAILED"), "{err}");
    // Another reload under a counted ping flood: nothing lost.
    let flood = BgPing::start_count(&s.pair.left, A_IN, B_IN, 0.01, 200).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    write_b_conf(&s, "nobody-else.wisp.test", keep);
    let p = flood.wait().unwrap();
    assert_eq!(p.lost(), 0, "ping across reload: {p:?}");
    assert!(s.b.status().unwrap()["plugin"]["load_number"].as_u64().unwrap() > n);
}

#[test]
fn dpd_notices_dead_peer() {
    if !require_root("dpd_notices_dead_peer") {
        return;
    }
    let mut s = setup("dpd", &Opts { dpd: Some(("1s", "3s")), ..Default::default() });
    up(&s);
    s.b.kill_hard();
    let t0 = Instant::now();
    let gone =
        s.a.wait_status(Duration::from_secs(10), |st| {
            st["connections"].as_array().unwrap().iter().all(|c| c["ike_sas"].as_array().unwrap().is_empty())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let took = t0.elapsed();
    println!("DPD: peer declared dead after {took:?} (delay 1s + timeout 3s)");
    assert!(took <= Duration::from_secs(6), "DPD took {took:?}");
    let c = gone["connections"].as_array().unwrap().iter().find(|c| c["name"] == "site").unwrap();
    assert!(c["last_error"].as_str().unwrap_or("").contains("not responding"), "{c:#}");
    let p = ping(&s.pair.left, A_IN, B_IN, 1, 0.2).unwrap();
    assert_eq!(p.received, 0);
}

#[test]
fn wrong_psk_reports_authentication_failed() {
    if !require_root("wrong_psk_reports_authentication_failed") {
        return;
    }
    let s = setup("psk", &Opts { psk_b: "a-different-psk-9876543210", ..Default::default() });
    let o = s.a.cli(&["up", "site"]).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("AUTHENTICATION_FAILED"), "{err}");
    let log = s.a.log() + &s.b.log();
    assert!(!log.contains(PSK) && !log.contains("a-different-psk"), "a PSK leaked into the logs");
    let st = s.a.status().unwrap();
    let site = st["connections"].as_array().unwrap().iter().find(|c| c["name"] == "site").unwrap();
    assert!(site["last_error"].as_str().unwrap_or("").contains("AUTHENTICATION_FAILED"), "{st:#}");

    // Fix B's PSK by reloading its config: the connection holds no SA, so the
    // new settings apply at once and the next `up` succeeds.
    std::fs::write(s.b.dir().join("wisp.toml"), conf(&Opts::default(), false).render()).unwrap();
    s.b.cli_ok(&["reload"]).unwrap();
    up(&s);
    assert_eq!(ping(&s.pair.left, A_IN, B_IN, 2, 0.2).unwrap().received, 2);
    // `wisp down` deletes the SAs on both ends and the route with them.
    let out = s.a.cli_ok(&["down", "site"]).unwrap();
    assert!(out.contains("down"), "{out}");
    assert!(child(&s.a.status().unwrap(), "site").is_empty());
    s.b.wait_status(Duration::from_secs(3), |st| child(st, "site").is_empty()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!s.pair.left.ip(&["route"]).unwrap().contains("10.98.2.0/24"), "route left behind");
}

#[test]
fn sigterm_sends_delete_and_exits_cleanly() {
    if !require_root("sigterm_sends_delete_and_exits_cleanly") {
        return;
    }
    let mut s = setup("trm", &Opts::default());
    up(&s);
    assert!(!child(&s.b.status().unwrap(), "site").is_empty());
    assert!(s.pair.left.ip(&["route"]).unwrap().contains("10.98.2.0/24"));
    s.a.stop();
    // B learned about it from the DELETE (no DPD configured).
    s.b.wait_status(Duration::from_secs(3), |st| child(st, "site").is_empty()).unwrap_or_else(|e| panic!("{e}"));
    assert!(!s.pair.left.ip(&["route"]).unwrap().contains("10.98.2.0/24"), "route left behind");
    let log = std::fs::read_to_string(s.dir_a.join("wisp.log")).unwrap();
    assert!(log.contains("wisp daemon stopped"), "{log}");
}

#[test]
fn stuck_plugin_does_not_stall_esp_or_the_control_socket() {
    if !require_root("stuck_plugin_does_not_stall_esp_or_the_control_socket") {
        return;
    }
    let s = setup("spn", &Opts::default());
    up(&s);
    // B swaps in a plugin whose select-proposal never returns (it runs into a
    // 2 s CPU deadline per decision).
    let mut c = conf(&Opts::default(), false);
    c.plugin = Some(plugin_path("hostile-spin").expect("hostile-spin plugin"));
    c.plugin_settings.clear();
    let text = c.render().replace("[plugin]\n", "[plugin]\ndeadline = \"2s\"\n");
    std::fs::write(s.b.dir().join("wisp.toml"), text).unwrap();
    let out = s.b.cli_ok(&["reload"]).unwrap();
    assert!(out.contains("loaded"), "{out}");
    let flood = BgPing::start_count(&s.pair.left, A_IN, B_IN, 0.01, 300).unwrap();
    let t0 = Instant::now();
    let (left, a) = (&s.pair.left, &s.a);
    let (up2, status_ms) = std::thread::scope(|sc| {
        let h = sc.spawn(|| a.cli(&["up", "site2", "--timeout", "20"]).unwrap());
        std::thread::sleep(Duration::from_millis(500));
        // While B's site2 driver is stuck in the plugin, B's control socket and
        // the other connection's ESP traffic go on.
        let t = Instant::now();
        let st = s.b.status().unwrap();
        let ms = t.elapsed().as_millis();
        assert_eq!(child(&st, "site").len(), 1);
        assert_eq!(ping(left, A_IN, B_IN, 3, 0.1).unwrap().received, 3);
        (h.join().unwrap(), ms)
    });
    let p = flood.wait().unwrap();
    let err = String::from_utf8_lossy(&up2.stderr);
    println!("stuck plugin: site2 refused after {:?}, B status answered in {status_ms} ms, ping {p:?}", t0.elapsed());
    assert!(!up2.status.success());
    assert!(err.contains("NO_PROPOSAL_CHOSEN"), "{err}");
    assert!(status_ms < 1000, "status took {status_ms} ms");
    assert_eq!(p.lost(), 0, "ESP stalled while the plugin was stuck: {p:?}");
}

#[test]
fn trap_negotiates_on_the_first_packet() {
    if !require_root("trap_negotiates_on_the_first_packet") {
        return;
    }
    let s = setup("etr", &Opts { start_a: Some("trap"), ..Default::default() });
    std::thread::sleep(Duration::from_millis(1500));
    let st = s.a.status().unwrap();
    assert!(child(&st, "site").is_empty(), "a trap negotiates nothing before traffic: {st:#}");
    let routes = s.pair.left.output("ip", &["route"]).unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(routes.contains("10.98.2.0/24 dev wisp0"), "the trap routes the remote selectors: {routes}");
    // The first packet is dropped and starts the negotiation; pings get
    // through as soon as the Child SA is in.
    let t = Instant::now();
    while ping(&s.pair.left, A_IN, B_IN, 1, 0.2).unwrap().received == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "no tunnel 10 s after the first packet\nA:\n{}", s.a.log_tail(30));
    }
    let p = ping(&s.pair.left, A_IN, B_IN, 5, 0.2).unwrap();
    assert_eq!(p.received, 5, "{p:?}");
    let st = s.a.status().unwrap();
    assert_eq!(child(&st, "site").len(), 1, "{st:#}");
    let acquires = st["dataplane"].as_array().into_iter().flatten().find(|kv| kv[0] == "tx_acquire").and_then(|kv| kv[1].as_u64());
    assert!(acquires.is_some_and(|n| n >= 1), "tx_acquire counted: {st:#}");
}

#[test]
fn ipv6_outer_addresses_carry_the_tunnel() {
    if !require_root("ipv6_outer_addresses_carry_the_tunnel") {
        return;
    }
    let s = setup("e6o", &Opts { outer6: true, ..Default::default() });
    up(&s);
    let p = ping(&s.pair.left, A_IN, B_IN, 5, 0.2).unwrap();
    assert_eq!(p.received, 5, "IPv4 inside IPv6 ESP-in-UDP: {p:?}\nA:\n{}", s.a.log_tail(30));
    let t = tcp_transfer(&s.pair.right, ip(B_IN), 5201, &s.pair.left, ip(A_IN), 20 * MB, Duration::from_secs(60)).unwrap();
    assert!(t.bytes == 20 * MB && t.intact(), "transfer over IPv6 outer addresses");
    let st = s.a.status().unwrap();
    let text = st.to_string();
    assert!(text.contains("fd00:99::2"), "status names the IPv6 peer: {st:#}");
    assert_eq!(child(&st, "site").len(), 1, "{st:#}");
    // The second connection (IPv4 outer) still negotiates on the same dual-stack socket.
    let out = s.a.cli_ok(&["up", "site2"]).expect("wisp up site2 over IPv4");
    assert!(out.contains("established"), "{out}");
}

/// Source NAT on `r` for UDP leaving `wr1`, to 10.99.0.1 with ports from `base`.
fn snat(r: &Netns, base: u16) {
    let rule = format!("add rule ip nat post oifname \"wr1\" meta l4proto udp snat to 10.99.0.1:{base}-{}", base + 999);
    for cmd in ["flush ruleset", "add table ip nat", "add chain ip nat post { type nat hook postrouting priority 100; }", &rule] {
        let out = r.output("nft", &[cmd]).expect("nft");
        assert!(out.status.success(), "nft {cmd}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

fn ike_remote(st: &serde_json::Value) -> Option<std::net::SocketAddr> {
    st["connections"]
        .as_array()?
        .iter()
        .flat_map(|c| c["ike_sas"].as_array().into_iter().flatten())
        .find_map(|i| i["remote"].as_str()?.parse().ok())
}

/// A behind a real NAT (nftables SNAT in a router namespace). The NAT then
/// forgets the mapping and picks new ports: B follows A's ESP to the new
/// mapping (RFC 7296 2.23) and the tunnel carries traffic again, with the
/// same Child SA, without renegotiating.
#[test]
fn nat_rebinding_keeps_the_tunnel() {
    if !require_root("nat_rebinding_keeps_the_tunnel") {
        return;
    }
    assert!(
        std::process::Command::new(wisp_gateway::netns::system_program("nft")).arg("--version").output().is_ok_and(|o| o.status.success()),
        "nft missing: scripts/setup.sh installs nftables and conntrack"
    );
    init();
    let (a, r, b) = (Netns::new("enta").unwrap(), Netns::new("entr").unwrap(), Netns::new("entb").unwrap());
    veth(&a, "wa0", &r, "wr0").unwrap();
    veth(&r, "wr1", &b, "wb0").unwrap();
    a.addr_add("wa0", "10.96.1.2/24").unwrap();
    a.ip(&["route", "add", "default", "via", "10.96.1.1"]).unwrap();
    r.addr_add("wr0", "10.96.1.1/24").unwrap();
    r.addr_add("wr1", "10.99.0.1/24").unwrap();
    r.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]).unwrap();
    b.addr_add("wb0", "10.99.0.2/24").unwrap();
    snat(&r, 30000);

    let o = Opts::default();
    let mut ca = conf(&o, true);
    ca.conns.truncate(1);
    ca.conns[0].local_addrs = vec!["10.96.1.2".into()];
    let mut cb = conf(&o, false);
    cb.conns.truncate(1);
    let (dir_a, dir_b) = (TestDir::new("enta").unwrap(), TestDir::new("entb").unwrap());
    let gb = WispDaemon::start(&b, dir_b.path(), &cb.render()).expect("gateway B");
    let ga = WispDaemon::start(&a, dir_a.path(), &ca.render()).expect("gateway A");
    let out = ga.cli_ok(&["up", "site"]).expect("wisp up through the NAT");
    assert!(out.contains("established"), "{out}");
    let p = ping(&a, A_IN, B_IN, 3, 0.2).unwrap();
    assert_eq!(p.received, 3, "{p:?}\nB:\n{}", gb.log_tail(30));
    let st = gb.status().unwrap();
    let before = ike_remote(&st).expect("B's IKE SA");
    assert!((30000..31000).contains(&before.port()), "B sees A through the NAT: {before}");
    let spis = |st: &serde_json::Value| child(st, "site").iter().map(|c| c["spi_in"].to_string()).collect::<Vec<_>>();
    let spis_before = spis(&st);
    assert_eq!(spis_before.len(), 1, "{st:#}");

    // The NAT loses its state and maps A to new ports from now on.
    snat(&r, 40000);
    let out = r.output("conntrack", &["-F"]).expect("conntrack");
    assert!(out.status.success(), "conntrack -F: {}", String::from_utf8_lossy(&out.stderr));
    let t = Instant::now();
    while ping(&a, A_IN, B_IN, 1, 0.2).unwrap().received == 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "no traffic 10 s after the NAT rebinding\nB:\n{}", gb.log_tail(40));
    }
    let p = ping(&a, A_IN, B_IN, 5, 0.2).unwrap();
    assert_eq!(p.received, 5, "{p:?}");
    let st = gb.status().unwrap();
    let after = ike_remote(&st).expect("B's IKE SA");
    assert!((40000..41000).contains(&after.port()), "B follows the new mapping: {after}\n{}", gb.log_tail(30));
    assert_eq!(spis(&st), spis_before, "same Child SA, nothing renegotiated");
    assert!(gb.log().contains("peer moved"), "B logs the move");
    drop((ga, gb));
}
