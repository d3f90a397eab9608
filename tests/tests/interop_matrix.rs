//! Interop matrix: the real `wisp` gateway against strongSwan 5.9.8 charon
//! (kernel-libipsec), each in its own fresh network namespace, real traffic in
//! both directions, charon's `swanctl --list-sas --raw` compared with
//! `wisp status --json`. See docs/INTEROP.md.
//!
//! Topology per case: wisp in the left namespace (outer 10.99.0.1, TUN with
//! 10.1.0.1/32 [+ 10.1.1.1/32]), charon in the right (outer 10.99.0.2, 10.2.0.1/32
//! [+ 10.2.1.1/32] on lo). Cases run 4 at a time (`WISP_MATRIX_JOBS`);
//! `WISP_MATRIX_FILTER=substr` selects cases.

use serde_json::Value;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};
use wisp_testbed::charon::{Charon, CharonOptions};
use wisp_testbed::charon_log;
use wisp_testbed::harness::{run_cases, table, Case, Outcome};
use wisp_testbed::netns::Pair;
use wisp_testbed::pki::{Ca, IssueOpts, KeyType};
use wisp_testbed::sas::{ChildSaInfo, IkeSaInfo};
use wisp_testbed::swanctl::{ChildConf, Conn, PskSecret, SwanctlConf};
use wisp_testbed::traffic::{ping, ping_until_ok, tcp_transfer, BgPing};
use wisp_testbed::wisp::{parse_hex_spi, plugin_path, WispChild, WispConf, WispConn, WispDaemon};
use wisp_testbed::{require_root, TestDir};

type R<T> = Result<T, String>;

const PSK: &str = "interop-psk-0123456789";
const WISP_ID: &str = "wisp.test";
const CHARON_ID: &str = "charon.test";
const W_OUT: &str = "10.99.0.1";
const C_OUT: &str = "10.99.0.2";
const W_OUT6: &str = "fd00:99::1";
const C_OUT6: &str = "fd00:99::2";

fn e<E: std::fmt::Display>(x: E) -> String {
    x.to_string()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Who {
    Wisp,
    Charon,
}

impl Who {
    fn tag(self) -> &'static str {
        match self {
            Who::Wisp => "wisp",
            Who::Charon => "charon",
        }
    }
}

/// Both sides' configuration for one case.
#[derive(Clone)]
struct Setup {
    wisp: WispConf,
    swan: SwanctlConf,
    charon: CharonOptions,
}

fn setup(ike: &str, esp: &str) -> Setup {
    // The shipped default policy: AEAD only, denies unless the peer is listed.
    let plugin = plugin_path("default").expect("default plugin");
    let wisp = WispConf {
        log_level: Some("debug".into()),
        tun_addrs: vec!["10.1.0.1/32".into()],
        plugin: Some(plugin),
        plugin_settings: vec![format!("allowed_ids = [\"{CHARON_ID}\"]")],
        conns: vec![WispConn {
            name: "gw".into(),
            local_addrs: vec![W_OUT.into()],
            remote_addrs: vec![C_OUT.into()],
            local_id: WISP_ID.into(),
            remote_id: CHARON_ID.into(),
            psk: PSK.into(),
            proposals: vec![ike.into()],
            children: vec![WispChild::new("net", "10.1.0.0/24", "10.2.0.0/24", esp)],
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut child = ChildConf::new("net", "10.2.0.0/24", "10.1.0.0/24", esp);
    child.rand_time = Some("0".into());
    let mut conn = Conn::psk("gw", C_OUT, W_OUT, ike, CHARON_ID, WISP_ID, child);
    conn.rand_time = Some("0".into());
    let swan = SwanctlConf {
        conns: vec![conn],
        secrets: vec![PskSecret { name: "1".into(), ids: vec![WISP_ID.into(), CHARON_ID.into()], secret: PSK.into() }],
        ..Default::default()
    };
    Setup { wisp, swan, charon: CharonOptions::default() }
}

/// One case's world: namespaces, charon, wisp; all torn down on drop.
struct Env {
    pair: Pair,
    charon: Charon,
    /// More charon peers (see [`extra_peer`]), started before wisp.
    extra: Vec<ExtraPeer>,
    wisp: Option<WispDaemon>,
    dw: TestDir,
    _dc: TestDir,
}

impl Env {
    fn new(tag: &str, s: &Setup, extra_inner: bool) -> R<Env> {
        Env::build(tag, s, extra_inner, false)
    }

    /// `outer6`: the veth also carries fd00:99::1 (wisp) ~ fd00:99::2 (charon).
    fn build(tag: &str, s: &Setup, extra_inner: bool, outer6: bool) -> R<Env> {
        Env::build_with_peers(tag, s, extra_inner, outer6, &[])
    }

    /// `peers`: numbers of extra charon peers (see [`extra_peer`]), with the
    /// case's PSK.
    fn build_with_peers(tag: &str, s: &Setup, extra_inner: bool, outer6: bool, peers: &[u8]) -> R<Env> {
        let mut right_inner = vec!["10.2.0.1/32"];
        if extra_inner {
            right_inner.push("10.2.1.1/32");
        }
        let pair = Pair::with_inner(tag, &[], &right_inner).map_err(e)?;
        if outer6 {
            for (ns, a) in [(&pair.left, W_OUT6), (&pair.right, C_OUT6)] {
                let out = ns.output("ip", &["addr", "add", &format!("{a}/64"), "dev", Pair::IFACE, "nodad"]).map_err(e)?;
                if !out.status.success() {
                    return Err(format!("{a}: {}", String::from_utf8_lossy(&out.stderr)));
                }
            }
        }
        let dw = TestDir::new(&format!("mx-{tag}-w")).map_err(e)?;
        let dc = TestDir::new(&format!("mx-{tag}-c")).map_err(e)?;
        let charon = Charon::start(&pair.right, dc.path(), &s.charon).map_err(e)?;
        charon.load(&s.swan).map_err(e)?;
        let extra = peers.iter().map(|&n| extra_peer(tag, &pair.left, n, PSK, &s.charon)).collect::<R<Vec<_>>>()?;
        let wisp = WispDaemon::start(&pair.left, dw.path(), &s.wisp.render()).map_err(e)?;
        Ok(Env { pair, charon, extra, wisp: Some(wisp), dw, _dc: dc })
    }

    fn wisp(&self) -> &WispDaemon {
        self.wisp.as_ref().expect("wisp running")
    }

    /// Context for failure messages: both logs' tails.
    fn ctx(&self) -> String {
        format!(
            "\n--- charon log ---\n{}\n--- wisp log ---\n{}",
            self.charon.log_tail(25),
            self.wisp.as_ref().map(|w| w.log_tail(25)).unwrap_or_default()
        )
    }

    /// Rekey the one Child SA (`old` is its inbound SPI) from `who`'s side and
    /// wait until both sides agree on the new one, which must carry the key
    /// exchange `group` (PFS); traffic must pass through it.
    fn rekey_child_with_pfs(&self, who: Who, old: u32, group: &str) -> R<IkeSaInfo> {
        match who {
            Who::Wisp => drop(self.wisp().cli_ok(&["rekey", "gw"]).map_err(e)?),
            Who::Charon => drop(self.charon.rekey_child("net").map_err(e)?),
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok((ike1, _)) = self.agreed() {
                if ike1.children.len() == 1 && ike1.children[0].spi_in != old {
                    let c = &ike1.children[0];
                    if c.dh_group.as_deref() != Some(group) {
                        return self.fail(format!("rekeyed child without PFS group {group}: {c:?}"));
                    }
                    self.traffic("10.1.0.1", "10.2.0.1", 64 << 10)?;
                    return Ok(ike1);
                }
            }
            if Instant::now() > deadline {
                return self.fail("PFS child rekey did not complete on both sides");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn fail<T>(&self, what: impl std::fmt::Display) -> R<T> {
        Err(format!("{what}{}", self.ctx()))
    }

    /// Bring the IKE SA and all children up from `who`.
    fn establish(&self, who: Who, children: &[&str]) -> R<()> {
        match who {
            Who::Wisp if children.len() <= 1 => {
                self.wisp().cli_ok(&["up", "gw", "--timeout", "20"]).map_err(e)?;
            }
            Who::Wisp => {
                for c in children {
                    self.wisp().cli_ok(&["up", &format!("gw/{c}"), "--timeout", "20"]).map_err(e)?;
                }
            }
            Who::Charon => {
                for c in children {
                    self.charon.initiate_child(c, 20).map_err(e)?;
                }
            }
        }
        self.wait_both(children.len()).map(|_| ())
    }

    /// Wait until both sides show one established IKE SA with `n` installed
    /// children and agree on it; returns the agreed view.
    fn wait_both(&self, n: usize) -> R<(IkeSaInfo, Value)> {
        self.wait_both_within(n, Duration::from_secs(15))
    }

    fn wait_both_within(&self, n: usize, limit: Duration) -> R<(IkeSaInfo, Value)> {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.agreed() {
                Ok((ike, w)) if ike.children.len() == n => return Ok((ike, w)),
                Ok((ike, _)) => last = format!("{} children, want {n}", ike.children.len()),
                Err(x) => last = x,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.fail(format!("sides did not converge: {last}"))
    }

    /// Compare charon's and wisp's current views; Ok when they agree.
    fn agreed(&self) -> R<(IkeSaInfo, Value)> {
        let sas = self.charon.list_sas().map_err(e)?;
        let est: Vec<&IkeSaInfo> = sas.iter().filter(|s| s.state == "ESTABLISHED").collect();
        if est.len() != 1 {
            return Err(format!("charon has {} established IKE SAs: {sas:?}", est.len()));
        }
        let mut ike = est[0].clone();
        ike.children.retain(|c| c.state == "INSTALLED");
        let st = self.wisp().status().map_err(e)?;
        let w = wisp_ike(&st)?;
        let w_init = w["initiator"].as_bool().ok_or("wisp: initiator missing")?;
        if w_init == ike.initiator {
            return Err(format!("both sides claim initiator={w_init}"));
        }
        let (w_spi_i, w_spi_r) = {
            let l = spi(&w["local_spi"])?;
            let r = spi(&w["remote_spi"])?;
            if w_init {
                (l, r)
            } else {
                (r, l)
            }
        };
        if (w_spi_i, w_spi_r) != (ike.spi_i, ike.spi_r) {
            return Err(format!("IKE SPIs differ: wisp {w_spi_i:016x}/{w_spi_r:016x}, charon {:016x}/{:016x}", ike.spi_i, ike.spi_r));
        }
        let w_alg = w["algorithms"].as_str().unwrap_or("");
        if norm(w_alg) != norm(&ike.proposal()) {
            return Err(format!("IKE algorithms differ: wisp {w_alg}, charon {}", ike.proposal()));
        }
        let wch: Vec<&Value> = w["children"]
            .as_array()
            .map(|a| a.iter().filter(|c| c["state"].as_str().map(installed).unwrap_or(false)).collect())
            .unwrap_or_default();
        if wch.len() != ike.children.len() {
            return Err(format!("children: wisp {} charon {}: {wch:?} / {:?}", wch.len(), ike.children.len(), ike.children));
        }
        for c in &ike.children {
            let m = wch
                .iter()
                .find(|wc| spi(&wc["spi_in"]).ok() == Some(c.spi_out as u64) && spi(&wc["spi_out"]).ok() == Some(c.spi_in as u64))
                .ok_or_else(|| format!("charon child {} {:08x}/{:08x} not in wisp status {wch:?}", c.name, c.spi_in, c.spi_out))?;
            let wa = m["algorithms"].as_str().unwrap_or("");
            if norm(wa) != norm(&c.proposal()) {
                return Err(format!("ESP algorithms differ: wisp {wa}, charon {}", c.proposal()));
            }
            // wisp writes a host selector as its address, charon with /32 (/128).
            let host = |v: Vec<String>| {
                v.into_iter()
                    .map(|s| match s.parse::<IpAddr>() {
                        Ok(a) => format!("{s}/{}", if a.is_ipv4() { 32 } else { 128 }),
                        Err(_) => s,
                    })
                    .collect::<Vec<_>>()
            };
            let wl = host(strs(&m["local_ts"]));
            let wr = host(strs(&m["remote_ts"]));
            if wl != c.remote_ts || wr != c.local_ts {
                return Err(format!("selectors differ: wisp {wl:?}<->{wr:?}, charon {:?}<->{:?}", c.local_ts, c.remote_ts));
            }
        }
        Ok((ike, st))
    }

    /// Ping both ways and a TCP transfer each way between `w` (wisp side) and
    /// `c` (charon side). The TCP streams must arrive complete with equal
    /// SHA-256. The 10 pings each way prove reachability: at least 5 must be
    /// answered (with 4 cases in parallel on a 2-core VM, CPU starvation drops
    /// an occasional ping; losses are reported in the note). Loss-free delivery
    /// is asserted where it is the point: the baseline and rekey cases.
    fn traffic(&self, w: &str, c: &str, bytes: u64) -> R<String> {
        ping_until_ok(&self.pair.left, w, c, 10).map_err(|x| format!("{x}{}", self.ctx()))?;
        let p1 = ping(&self.pair.left, w, c, 10, 0.05).map_err(e)?;
        let p2 = ping(&self.pair.right, c, w, 10, 0.05).map_err(e)?;
        if p1.received < 5 || p2.received < 5 {
            return self.fail(format!("ping loss: {p1:?} {p2:?}"));
        }
        let lost = if p1.lost() + p2.lost() > 0 { format!(", ping lost {}+{}/10", p1.lost(), p2.lost()) } else { String::new() };
        let (wa, ca): (IpAddr, IpAddr) = (w.parse().map_err(e)?, c.parse().map_err(e)?);
        let t1 = tcp_transfer(&self.pair.right, ca, port(), &self.pair.left, wa, bytes, Duration::from_secs(20))
            .map_err(|x| format!("tcp wisp->charon: {x}{}", self.ctx()))?;
        let t2 = tcp_transfer(&self.pair.left, wa, port(), &self.pair.right, ca, bytes, Duration::from_secs(20))
            .map_err(|x| format!("tcp charon->wisp: {x}{}", self.ctx()))?;
        if !t1.intact() || !t2.intact() || t1.bytes != bytes || t2.bytes != bytes {
            return self.fail(format!("tcp corrupted: {t1:?} {t2:?}"));
        }
        Ok(format!("tcp {:.0}/{:.0} Mbit/s{lost}", t1.mbit_per_s(), t2.mbit_per_s()))
    }
}

static PORT: AtomicU16 = AtomicU16::new(5100);
fn port() -> u16 {
    PORT.fetch_add(1, Ordering::Relaxed)
}

fn installed(s: &str) -> bool {
    let s = s.to_ascii_lowercase();
    s == "installed" || s == "established" || s == "up"
}

/// `AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE_25519` and
/// `AES_GCM_16_128/PRF_HMAC_SHA2_256/CURVE25519/NO_ESN` compare equal.
fn norm(s: &str) -> String {
    s.split('/')
        .map(|p| p.replace('_', "").to_ascii_uppercase())
        .filter(|p| p != "NOESN" && p != "NOEXTSEQ" && !p.is_empty())
        .collect::<Vec<_>>()
        .join("/")
}

fn spi(v: &Value) -> R<u64> {
    v.as_str().and_then(parse_hex_spi).or_else(|| v.as_u64()).ok_or_else(|| format!("bad SPI {v}"))
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default()
}

fn wisp_conn(st: &Value) -> R<&Value> {
    st["connections"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "gw"))
        .ok_or_else(|| format!("wisp status has no connection gw: {st}"))
}

/// The single established IKE SA of connection `gw` in wisp's status.
fn wisp_ike(st: &Value) -> R<&Value> {
    let c = wisp_conn(st)?;
    let sas: Vec<&Value> = c["ike_sas"]
        .as_array()
        .map(|a| a.iter().filter(|s| s["state"].as_str().map(installed).unwrap_or(false)).collect())
        .unwrap_or_default();
    if sas.len() != 1 {
        return Err(format!("wisp has {} established IKE SAs: {c}", sas.len()));
    }
    Ok(sas[0])
}

fn wisp_ike_count(st: &Value) -> usize {
    wisp_conn(st).ok().and_then(|c| c["ike_sas"].as_array().map(|a| a.len())).unwrap_or(0)
}

fn algos(ike: &IkeSaInfo) -> String {
    let esp: Vec<String> = ike.children.iter().map(ChildSaInfo::proposal).collect();
    format!("{} | {}", ike.proposal(), esp.join(","))
}

// ---------------------------------------------------------------- algorithms

const IKES: [&str; 3] = ["aes128gcm16-prfsha256-x25519", "aes256gcm16-prfsha384-ecp384", "chacha20poly1305-prfsha256-x25519"];
const ESPS: [&str; 3] = ["aes128gcm16", "aes256gcm16", "chacha20poly1305"];

fn algo_case(who: Who, ike: &str, esp: &str, pfs: bool) -> R<Outcome> {
    let group = ike.rsplit('-').next().unwrap_or("x25519");
    let esp_p = if pfs { format!("{esp}-{group}") } else { esp.to_string() };
    let s = setup(ike, &esp_p);
    let env = Env::new("mxa", &s, false)?;
    env.establish(who, &["net"])?;
    let (ike0, _) = env.wait_both(1)?;
    let first = algos(&ike0);
    let note = env.traffic("10.1.0.1", "10.2.0.1", 256 << 10)?;
    if !pfs {
        return Ok(Outcome { algorithms: first, note });
    }
    // PFS shows on CREATE_CHILD_SA: rekey the child from the initiator side.
    let ike1 = env.rekey_child_with_pfs(who, ike0.children[0].spi_in, charon_group(group))?;
    Ok(Outcome { algorithms: algos(&ike1), note: format!("{note}, PFS rekey ok") })
}

fn charon_group(g: &str) -> &'static str {
    match g {
        "ecp384" => "ECP_384",
        "ecp256" => "ECP_256",
        _ => "CURVE_25519",
    }
}

#[test]
fn matrix_algorithms() {
    if !require_root("matrix_algorithms") {
        return;
    }
    let mut cases: Vec<Case> = Vec::new();
    for who in [Who::Wisp, Who::Charon] {
        for ike in IKES {
            for esp in ESPS {
                for pfs in [false, true] {
                    let name = format!("{}-init {ike} / {esp}{}", who.tag(), if pfs { " +pfs" } else { "" });
                    cases.push((name, Box::new(move || algo_case(who, ike, esp, pfs))));
                }
            }
        }
    }
    report("interop matrix: algorithms (wisp <-> strongSwan 5.9.8)", cases);
}

/// charon left at `proposals = default` / `esp_proposals = default`: its
/// proposals list, inside one proposal, alternatives wisp does not implement
/// or its policy does not take (AES-CCM, SHA-1, MODP groups) next to ones it
/// does. A proposal is an OR within each transform type (RFC 7296 3.3): wisp
/// (its shipped default policy, configured with a proposal inside charon's
/// default) takes one acceptable transform of each type, in both roles.
fn default_proposals_case(who: Who, pfs: bool) -> R<Outcome> {
    let esp = if pfs { "aes128gcm16-x25519" } else { "aes128gcm16" };
    let mut s = setup("aes128gcm16-prfsha256-x25519", esp);
    s.swan.conns[0].proposals = vec!["default".into()];
    s.swan.conns[0].children[0].esp_proposals =
        vec![if pfs { "aes128gcm16-aes256gcm16-aes128ccm16-chacha20poly1305-x25519-ecp256-modp3072" } else { "default" }.into()];
    let env = Env::new("mxd", &s, false)?;
    env.establish(who, &["net"])?;
    let (ike, _) = env.wait_both(1)?;
    if !ike.proposal().replace('_', "").eq_ignore_ascii_case("AESGCM16128/PRFHMACSHA2256/CURVE25519") {
        return env.fail(format!("negotiated {} (wisp configured aes128gcm16-prfsha256-x25519)", ike.proposal()));
    }
    let note = env.traffic("10.1.0.1", "10.2.0.1", 128 << 10)?;
    if !pfs {
        return Ok(Outcome { algorithms: algos(&ike), note: format!("charon at proposals = default, {note}") });
    }
    // With PFS configured on wisp, a child rekey from either side carries the key exchange.
    let ike1 = env.rekey_child_with_pfs(who, ike.children[0].spi_in, "CURVE_25519")?;
    Ok(Outcome { algorithms: algos(&ike1), note: format!("charon ESP with CCM/MODP alternatives, {note}, PFS rekey ok") })
}

#[test]
fn matrix_default_proposals() {
    if !require_root("matrix_default_proposals") {
        return;
    }
    let mut cases: Vec<Case> = Vec::new();
    for who in [Who::Wisp, Who::Charon] {
        cases.push((
            format!("{}-init charon proposals = default / esp_proposals = default", who.tag()),
            Box::new(move || default_proposals_case(who, false)),
        ));
        cases.push((
            format!("{}-init charon proposals = default / ESP with alternatives +pfs", who.tag()),
            Box::new(move || default_proposals_case(who, true)),
        ));
    }
    report("interop matrix: charon at its default proposals (wisp <-> strongSwan 5.9.8)", cases);
}

fn report(title: &str, cases: Vec<Case>) {
    let start = Instant::now();
    let results = run_cases(cases);
    let t = table(title, &results, start.elapsed());
    println!("{t}");
    // `cargo test` captures stdout of passing tests; scripts/test.sh sets
    // WISP_MATRIX_REPORT so the tables also land in a file it prints at the end.
    if let Some(path) = std::env::var_os("WISP_MATRIX_REPORT") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&path) {
            let _ = f.write_all(t.as_bytes());
        }
    }
    assert!(!results.is_empty(), "no case ran (WISP_MATRIX_FILTER?)");
    assert!(results.iter().all(|r| r.passed()), "{t}");
}

// ---------------------------------------------------------------- lifecycle

fn invalid_ke_case(who: Who) -> R<Outcome> {
    // The initiator's first group is x25519; the responder only takes ecp384.
    let mut s = setup("aes128gcm16-prfsha256-ecp384", "aes128gcm16");
    match who {
        Who::Charon => {
            s.swan.conns[0].proposals = vec!["aes128gcm16-prfsha256-x25519-ecp384".into()];
        }
        Who::Wisp => {
            s.wisp.conns[0].proposals = vec!["aes128gcm16-prfsha256-x25519-ecp384".into()];
        }
    }
    let env = Env::new("mxk", &s, false)?;
    env.establish(who, &["net"])?;
    let (ike, _) = env.wait_both(1)?;
    if ike.dh_group != "ECP_384" {
        return env.fail(format!("expected ECP_384, got {}", ike.dh_group));
    }
    let log = env.charon.log();
    match who {
        Who::Charon => {
            let req = charon_log::dh_group_requests(&log);
            if req != vec![("CURVE_25519".to_string(), "ECP_384".to_string())] {
                return env.fail(format!("charon did not log the INVALID_KE_PAYLOAD round trip: {req:?}"));
            }
        }
        Who::Wisp => {
            if !charon_log::sent_notifies(&log).contains(&"INVALID_KE_PAYLOAD".to_string()) {
                return env.fail("charon did not send INVALID_KE_PAYLOAD");
            }
        }
    }
    let note = env.traffic("10.1.0.1", "10.2.0.1", 64 << 10)?;
    Ok(Outcome { algorithms: algos(&ike), note: format!("INVALID_KE x25519->ecp384, {note}") })
}

/// Short lifetimes on the side that must rekey; ping every 20 ms across two
/// rekeys: nothing lost.
fn rekey_case(by: Who, ike_sa: bool) -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    let life = "5s";
    match (by, ike_sa) {
        (Who::Wisp, false) => {
            s.wisp.conns[0].children[0].rekey_time = Some(life.into());
            s.wisp.conns[0].children[0].life_time = Some("60s".into());
        }
        (Who::Wisp, true) => {
            s.wisp.conns[0].rekey_time = Some(life.into());
            s.wisp.conns[0].over_time = Some("60s".into());
        }
        (Who::Charon, false) => {
            s.swan.conns[0].children[0].rekey_time = Some(life.into());
            s.swan.conns[0].children[0].life_time = Some("60s".into());
        }
        (Who::Charon, true) => {
            s.swan.conns[0].rekey_time = Some(life.into());
            s.swan.conns[0].over_time = Some("60s".into());
        }
    }
    let env = Env::new("mxr", &s, false)?;
    // The other side initiates, so the rekeying side is the responder of the
    // original exchange for one half of the cases.
    let init = if by == Who::Wisp { Who::Charon } else { Who::Wisp };
    env.establish(init, &["net"])?;
    let (ike0, _) = env.wait_both(1)?;
    ping_until_ok(&env.pair.left, "10.1.0.1", "10.2.0.1", 10).map_err(e)?;
    // 700 pings at 50 Hz (14 s) span two rekeys (at ~5 s and ~10 s); every
    // reply must arrive. Meanwhile record the distinct SAs both sides agree on.
    let mut bg = BgPing::start_count(&env.pair.left, "10.1.0.1", "10.2.0.1", 0.02, 700).map_err(e)?;
    let mut seen = std::collections::BTreeSet::new();
    // Short checksummed TCP transfers (128 KiB every 250 ms) while pinging:
    // light enough not to congest the path (saturating TCP makes the queues
    // drop pings, which would say nothing about rekeying).
    let done = std::sync::atomic::AtomicBool::new(false);
    let (wa, ca): (IpAddr, IpAddr) = ("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap());
    let tcp: R<(u32, u64)> = std::thread::scope(|sc| {
        let h = sc.spawn(|| -> R<(u32, u64)> {
            let (mut n, mut bytes) = (0u32, 0u64);
            while !done.load(Ordering::Relaxed) {
                let t = tcp_transfer(&env.pair.right, ca, port(), &env.pair.left, wa, 128 << 10, Duration::from_secs(20))
                    .map_err(|x| format!("tcp during rekey #{n}: {x}"))?;
                if !t.intact() || t.bytes != 128 << 10 {
                    return Err(format!("tcp during rekey corrupted: {t:?}"));
                }
                n += 1;
                bytes += t.bytes;
                std::thread::sleep(Duration::from_millis(250));
            }
            Ok((n, bytes))
        });
        while bg.running() {
            if let Ok((ike, _)) = env.agreed() {
                if ike_sa {
                    seen.insert(ike.spi_i);
                } else if let Some(c) = ike.children.first() {
                    seen.insert(c.spi_in as u64);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        done.store(true, Ordering::Relaxed);
        h.join().unwrap_or_else(|_| Err("tcp thread panicked".into()))
    });
    let st = bg.wait().map_err(e)?;
    let (transfers, _) = match tcp {
        Ok(x) => x,
        Err(x) => return env.fail(x),
    };
    if seen.len() < 3 {
        return env.fail(format!("only {} SAs seen (want initial + 2 rekeys)", seen.len()));
    }
    if st.lost() > 0 {
        return env.fail(format!("ping lost {} of {} across rekeys", st.lost(), st.sent));
    }
    let (ike1, _) = env.wait_both(1)?;
    if ike_sa && ike1.children[0].spi_in != ike0.children[0].spi_in {
        return env.fail("Child SA changed on IKE rekey");
    }
    let note = env.traffic("10.1.0.1", "10.2.0.1", 1 << 20)?;
    Ok(Outcome {
        algorithms: algos(&ike1),
        note: format!("{} SAs, {} pings 0 lost, {transfers} x 128 KiB TCP intact during; {note}", seen.len(), st.sent),
    })
}

/// The same 700 pings at 50 Hz with no rekey: the baseline the rekey cases
/// are held to (none lost).
fn steady_case() -> R<Outcome> {
    let s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    let env = Env::new("mxb", &s, false)?;
    env.establish(Who::Wisp, &["net"])?;
    let (ike, _) = env.wait_both(1)?;
    ping_until_ok(&env.pair.left, "10.1.0.1", "10.2.0.1", 10).map_err(e)?;
    let st = BgPing::start_count(&env.pair.left, "10.1.0.1", "10.2.0.1", 0.02, 700).map_err(e)?.wait().map_err(e)?;
    if st.lost() > 0 {
        return env.fail(format!("ping lost {} of {} without any rekey", st.lost(), st.sent));
    }
    Ok(Outcome { algorithms: algos(&ike), note: format!("{} pings 0 lost, no rekey", st.sent) })
}

/// IPv6 outer addresses (IPv4 inside): ESP-in-UDP over IPv6 with charon.
fn ipv6_outer_case(who: Who) -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    s.wisp.conns[0].local_addrs = vec![W_OUT6.into()];
    s.wisp.conns[0].remote_addrs = vec![C_OUT6.into()];
    s.swan.conns[0].local_addrs = vec![C_OUT6.into()];
    s.swan.conns[0].remote_addrs = vec![W_OUT6.into()];
    let env = Env::build(&format!("mx6{}", who.tag().chars().next().unwrap_or('x')), &s, false, true)?;
    env.establish(who, &["net"])?;
    let (ike, w) = env.wait_both(1)?;
    let shown = w.to_string();
    if !shown.contains(C_OUT6) {
        return env.fail(format!("wisp status does not name the IPv6 peer {C_OUT6}: {shown}"));
    }
    ping_until_ok(&env.pair.left, "10.1.0.1", "10.2.0.1", 10).map_err(e)?;
    let note = env.traffic("10.1.0.1", "10.2.0.1", 256 << 10)?;
    Ok(Outcome { algorithms: algos(&ike), note: format!("over {W_OUT6} ~ {C_OUT6}, {note}") })
}

/// `start_action = trap` on wisp: the first packet for charon's network starts it.
fn trap_case() -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    s.wisp.conns[0].start_action = Some("trap".into());
    let env = Env::new("mxt", &s, false)?;
    std::thread::sleep(Duration::from_millis(1000));
    if !env.charon.list_sas().map_err(e)?.is_empty() {
        return env.fail("an SA exists before any traffic");
    }
    let t0 = Instant::now();
    ping_until_ok(&env.pair.left, "10.1.0.1", "10.2.0.1", 40).map_err(e)?;
    let secs = t0.elapsed().as_secs_f64();
    let (ike, _) = env.wait_both(1)?;
    let note = env.traffic("10.1.0.1", "10.2.0.1", 64 << 10)?;
    Ok(Outcome { algorithms: algos(&ike), note: format!("first ping answered after {secs:.1}s, {note}") })
}

fn multi_child_case(who: Who) -> R<Outcome> {
    let mut s = setup("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    s.wisp.tun_addrs.push("10.1.1.1/32".into());
    s.wisp.conns[0].children[0].name = "net1".into();
    s.wisp.conns[0].children.push(WispChild::new("net2", "10.1.1.0/24", "10.2.1.0/24", "chacha20poly1305"));
    s.swan.conns[0].children[0].name = "net1".into();
    s.swan.conns[0].children.push(ChildConf::new("net2", "10.2.1.0/24", "10.1.1.0/24", "chacha20poly1305"));
    let env = Env::new("mxm", &s, true)?;
    env.establish(who, &["net1", "net2"])?;
    let (ike, _) = env.wait_both(2)?;
    let mut ts: Vec<String> = ike.children.iter().map(|c| c.local_ts.join(",")).collect();
    ts.sort();
    if ts != ["10.2.0.0/24", "10.2.1.0/24"] {
        return env.fail(format!("unexpected selectors {ts:?}"));
    }
    let n1 = env.traffic("10.1.0.1", "10.2.0.1", 128 << 10)?;
    let n2 = env.traffic("10.1.1.1", "10.2.1.1", 128 << 10)?;
    // Traffic stayed on its own SA: both children counted packets.
    let sas = env.charon.list_sas().map_err(e)?;
    for c in sas.iter().flat_map(|s| &s.children) {
        if c.packets_in == 0 || c.packets_out == 0 {
            return env.fail(format!("child {} carried no traffic: {c:?}", c.name));
        }
    }
    Ok(Outcome { algorithms: algos(&ike), note: format!("2 children; {n1}; {n2}") })
}

fn narrowing_case() -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    s.swan.conns[0].children[0].local_ts = vec!["10.2.0.0/16".into()];
    s.swan.conns[0].children[0].remote_ts = vec!["10.1.0.0/16".into()];
    let env = Env::new("mxn", &s, false)?;
    env.establish(Who::Charon, &["net"])?;
    let (ike, _) = env.wait_both(1)?;
    let c = &ike.children[0];
    if c.local_ts != ["10.2.0.0/24"] || c.remote_ts != ["10.1.0.0/24"] {
        return env.fail(format!("charon installed {:?} === {:?}, want narrowed /24s", c.local_ts, c.remote_ts));
    }
    let note = env.traffic("10.1.0.1", "10.2.0.1", 64 << 10)?;
    Ok(Outcome { algorithms: algos(&ike), note: format!("asked /16s, installed /24s, {note}") })
}

fn delete_case(by: Who) -> R<Outcome> {
    let s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    let env = Env::new("mxd", &s, false)?;
    let init = if by == Who::Wisp { Who::Charon } else { Who::Wisp };
    env.establish(init, &["net"])?;
    let (ike, _) = env.wait_both(1)?;
    env.traffic("10.1.0.1", "10.2.0.1", 64 << 10)?;
    match by {
        Who::Wisp => drop(env.wisp().cli_ok(&["down", "gw"]).map_err(e)?),
        Who::Charon => drop(env.charon.terminate_ike("gw").map_err(e)?),
    }
    env.charon.wait_sas(Duration::from_secs(10), |s| s.is_empty()).map_err(e)?;
    env.wisp().wait_status(Duration::from_secs(10), |st| wisp_ike_count(st) == 0).map_err(e)?;
    let p = ping(&env.pair.left, "10.1.0.1", "10.2.0.1", 2, 0.1).map_err(e)?;
    if p.received != 0 {
        return env.fail("traffic still flows after DELETE");
    }
    Ok(Outcome { algorithms: algos(&ike), note: format!("DELETE by {}, both sides empty", by.tag()) })
}

fn dpd_case() -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    s.wisp.conns[0].dpd_delay = Some("1s".into());
    s.wisp.conns[0].dpd_timeout = Some("4s".into());
    let mut env = Env::new("mxp", &s, false)?;
    env.establish(Who::Wisp, &["net"])?;
    let (ike, _) = env.wait_both(1)?;
    env.traffic("10.1.0.1", "10.2.0.1", 64 << 10)?;
    let t0 = Instant::now();
    env.charon.kill_hard();
    env.wisp().wait_status(Duration::from_secs(20), |st| wisp_ike_count(st) == 0).map_err(|x| format!("wisp DPD did not clean up: {x}"))?;
    Ok(Outcome { algorithms: algos(&ike), note: format!("charon SIGKILLed, wisp cleaned up in {:.1}s", t0.elapsed().as_secs_f64()) })
}

/// `dpd_action = restart` on wisp: charon is SIGKILLed, wisp's DPD clears
/// the SAs and keeps initiating (with backoff) until charon is back, then
/// the tunnel is up again without any command.
fn dpd_restart_case() -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    s.wisp.conns[0].dpd_delay = Some("1s".into());
    s.wisp.conns[0].dpd_timeout = Some("4s".into());
    s.wisp.conns[0].children[0].dpd_action = Some("restart".into());
    let mut env = Env::new("mxq", &s, false)?;
    env.establish(Who::Wisp, &["net"])?;
    let (ike0, _) = env.wait_both(1)?;
    env.traffic("10.1.0.1", "10.2.0.1", 64 << 10)?;
    let t0 = Instant::now();
    env.charon.kill_hard();
    env.wisp().wait_status(Duration::from_secs(20), |st| wisp_ike_count(st) == 0).map_err(|x| format!("wisp DPD did not clear: {x}"))?;
    let cleared = t0.elapsed().as_secs_f64();
    // Away for a few seconds: wisp's restarts go unanswered meanwhile.
    std::thread::sleep(Duration::from_secs(3));
    let dc = TestDir::new("mx-mxq-c2").map_err(e)?;
    env.charon = Charon::start(&env.pair.right, dc.path(), &CharonOptions::default()).map_err(e)?;
    env.charon.load(&s.swan).map_err(e)?;
    env._dc = dc;
    let t1 = Instant::now();
    let (ike1, _) = env.wait_both_within(1, Duration::from_secs(40))?;
    if ike1.spi_i == ike0.spi_i {
        return env.fail("the old IKE SA is back?");
    }
    if ike1.initiator {
        return env.fail("charon initiated; wisp was to restart the tunnel");
    }
    let back = t1.elapsed().as_secs_f64();
    let note = env.traffic("10.1.0.1", "10.2.0.1", 64 << 10)?;
    Ok(Outcome {
        algorithms: algos(&ike1),
        note: format!("charon killed: cleared in {cleared:.1}s; charon restarted: tunnel back {back:.1}s later by wisp; {note}"),
    })
}

/// Pings at 50 Hz across a make-before-break replacement of the IKE SA and
/// its child (`act` starts it; `done` tells it finished from the agreed
/// view); every ping must come back.
fn across_replacement(env: &Env, ike0: &IkeSaInfo, act: impl FnOnce() -> R<()>, what: &str) -> R<(IkeSaInfo, String)> {
    ping_until_ok(&env.pair.left, "10.1.0.1", "10.2.0.1", 10).map_err(e)?;
    let bg = BgPing::start_count(&env.pair.left, "10.1.0.1", "10.2.0.1", 0.02, 500).map_err(e)?;
    std::thread::sleep(Duration::from_secs(2));
    act()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let ike1 = loop {
        if let Ok((ike1, _)) = env.agreed() {
            if ike1.spi_i != ike0.spi_i && ike1.children.len() == 1 && ike1.children[0].spi_in != ike0.children[0].spi_in {
                break ike1;
            }
        }
        if Instant::now() > deadline {
            return env.fail(format!("{what}: no new IKE SA and child agreed on both sides"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let st = bg.wait().map_err(e)?;
    if st.lost() > 0 {
        return env.fail(format!("{what}: ping lost {} of {}", st.lost(), st.sent));
    }
    Ok((ike1, format!("{} pings 0 lost", st.sent)))
}

/// `reauth_time` on `who`: a new IKE SA (IKE_SA_INIT + IKE_AUTH) and child
/// before the old are deleted; no ping lost. charon needs
/// `make_before_break = yes` (5.9.8 reauthenticates break-before-make by default).
fn reauth_case(who: Who) -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    match who {
        Who::Wisp => s.wisp.conns[0].reauth_time = Some("6s".into()),
        Who::Charon => {
            s.swan.conns[0].reauth_time = Some("6s".into());
            s.swan.conns[0].rekey_time = Some("0".into());
            // over_time defaults to 10 % of reauth_time: the old SA would hit
            // its hard lifetime 0.6 s into the reauthentication.
            s.swan.conns[0].over_time = Some("30s".into());
            s.charon.extra.push("make_before_break = yes".into());
        }
    }
    let env = Env::new(&format!("mxa{}", who.tag().chars().next().unwrap_or('x')), &s, false)?;
    env.establish(if who == Who::Wisp { Who::Charon } else { Who::Wisp }, &["net"])?;
    let (ike0, _) = env.wait_both(1)?;
    let (ike1, note) = across_replacement(&env, &ike0, || Ok(()), "reauthentication")?;
    // A reauthentication is a new IKE SA initiated by the side that reauthenticated.
    let reauth_by_wisp = !ike1.initiator;
    if reauth_by_wisp != (who == Who::Wisp) {
        return env.fail(format!("the new IKE SA was initiated by the wrong side (charon initiator = {})", ike1.initiator));
    }
    Ok(Outcome { algorithms: algos(&ike1), note: format!("reauth by {} after 6 s: new IKE SA + child, {note}", who.tag()) })
}

/// The PSK is changed on both sides while traffic flows: charon's secret by
/// `swanctl --load-all`, wisp's by `wisp reload`; wisp reauthenticates its
/// live IKE SA with the new key (make-before-break), no ping lost.
fn psk_rotation_case() -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    let env = Env::new("mxk", &s, false)?;
    env.establish(Who::Wisp, &["net"])?;
    let (ike0, _) = env.wait_both(1)?;
    let new_psk = "rotated-psk-9876543210";
    s.swan.secrets[0].secret = new_psk.into();
    s.wisp.conns[0].psk = new_psk.into();
    let (ike1, note) = across_replacement(
        &env,
        &ike0,
        || {
            env.charon.load(&s.swan).map_err(e)?;
            std::fs::write(env.wisp().dir().join("wisp.toml"), s.wisp.render()).map_err(e)?;
            env.wisp().cli_ok(&["reload"]).map_err(e)?;
            Ok(())
        },
        "PSK rotation",
    )?;
    // charon verified wisp's AUTH again, now with the new secret (the only one it holds).
    let auths = env.charon.log().matches("authentication of 'wisp.test' with pre-shared key successful").count();
    if auths < 2 {
        return env.fail(format!("charon authenticated wisp {auths} time(s), want the first IKE SA and the reauthentication"));
    }
    Ok(Outcome { algorithms: algos(&ike1), note: format!("PSK rotated on both sides by reload, reauthenticated: {note}") })
}

fn restart_case() -> R<Outcome> {
    let s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    let mut env = Env::new("mxs", &s, false)?;
    env.establish(Who::Wisp, &["net"])?;
    let (ike0, _) = env.wait_both(1)?;
    let bin = env.wisp().bin().to_path_buf();
    if let Some(mut w) = env.wisp.take() {
        w.kill_hard(); // no DELETE: charon still holds the old SA
    }
    let w = WispDaemon::start_with(&env.pair.left, env.dw.path(), &bin).map_err(e)?;
    env.wisp = Some(w);
    env.wisp().cli_ok(&["up", "gw", "--timeout", "20"]).map_err(e)?;
    // INITIAL_CONTACT: charon drops the stale SA and keeps only the new one.
    let (ike1, _) = env.wait_both(1)?;
    if ike1.spi_i == ike0.spi_i {
        return env.fail("charon still shows the old IKE SA");
    }
    let note = env.traffic("10.1.0.1", "10.2.0.1", 64 << 10)?;
    Ok(Outcome { algorithms: algos(&ike1), note: format!("wisp SIGKILLed+restarted, charon converged, {note}") })
}

/// wisp dies and comes back as a responder: charon's DPD finds its IKE SA dead
/// and (dpd_action = restart) re-initiates; both end with one fresh SA.
fn restart_charon_recovers_case() -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    s.swan.conns[0].dpd_delay = Some("1s".into());
    s.swan.conns[0].children[0].dpd_action = Some("restart".into());
    let mut env = Env::new("mxt", &s, false)?;
    env.establish(Who::Charon, &["net"])?;
    let (ike0, _) = env.wait_both(1)?;
    let bin = env.wisp().bin().to_path_buf();
    if let Some(mut w) = env.wisp.take() {
        w.kill_hard();
    }
    let t0 = Instant::now();
    env.wisp = Some(WispDaemon::start_with(&env.pair.left, env.dw.path(), &bin).map_err(e)?);
    let deadline = Instant::now() + Duration::from_secs(40);
    let ike1 = loop {
        match env.agreed() {
            Ok((ike, _)) if ike.spi_i != ike0.spi_i && ike.children.len() == 1 => break ike,
            _ if Instant::now() > deadline => return env.fail("charon did not recover after wisp restart"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    let note = env.traffic("10.1.0.1", "10.2.0.1", 64 << 10)?;
    Ok(Outcome { algorithms: algos(&ike1), note: format!("charon DPD + restart after {secs:.1}s, {note}") })
}

/// IKE fragmentation (RFC 7383) both ways: `fragment_size = 256` on both
/// sides and four networks per side, so IKE_AUTH (about 350 bytes) and the
/// Child SA rekey with PFS of each side go in fragments; charon's log shows
/// it reassembled wisp's and split its own.
fn fragmentation_case(who: Who) -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16-x25519");
    s.wisp.ike_settings = vec!["fragment_size = 256".into()];
    s.charon.extra.push("fragment_size = 256".into());
    let nets = |side: u8| -> Vec<String> { [0, 4, 5, 6].iter().map(|i| format!("10.{side}.{i}.0/24")).collect() };
    let w = &mut s.wisp.conns[0].children[0];
    (w.local_ts, w.remote_ts) = (nets(1), nets(2));
    let c = &mut s.swan.conns[0].children[0];
    (c.local_ts, c.remote_ts) = (nets(2), nets(1));
    let env = Env::new("mxg", &s, false)?;
    // charon installs a route per selector pair from an address of its own inside each.
    for i in [4, 5, 6] {
        env.pair.right.addr_add("lo", &format!("10.2.{i}.1/32")).map_err(e)?;
    }
    env.establish(who, &["net"])?;
    let (ike0, _) = env.wait_both(1)?;
    let note = env.traffic("10.1.0.1", "10.2.0.1", 64 << 10)?;
    let ike1 = env.rekey_child_with_pfs(who, ike0.children[0].spi_in, "CURVE_25519")?;
    let log = env.charon.log();
    let reassembled = log.matches("reassembled fragmented IKE message").count();
    let split = log.matches("splitting IKE message").count();
    if reassembled < 2 || split < 2 {
        return env
            .fail(format!("charon reassembled {reassembled} and split {split} messages, want at least 2 each (IKE_AUTH and the rekey)"));
    }
    Ok(Outcome { algorithms: algos(&ike1), note: format!("charon reassembled {reassembled} of wisp's, split {split} of its own; {note}") })
}

#[test]
fn matrix_lifecycle() {
    if !require_root("matrix_lifecycle") {
        return;
    }
    let mut cases: Vec<Case> = Vec::new();
    for who in [Who::Wisp, Who::Charon] {
        cases.push((format!("invalid-ke, {} initiates", who.tag()), Box::new(move || invalid_ke_case(who))));
    }
    cases.push(("baseline: 700 pings, no rekey".into(), Box::new(steady_case)));
    for who in [Who::Wisp, Who::Charon] {
        cases.push((format!("child rekey by {} under ping", who.tag()), Box::new(move || rekey_case(who, false))));
        cases.push((format!("IKE rekey by {} under ping", who.tag()), Box::new(move || rekey_case(who, true))));
    }
    for who in [Who::Wisp, Who::Charon] {
        cases.push((format!("2 child SAs, {} initiates", who.tag()), Box::new(move || multi_child_case(who))));
    }
    cases.push(("TS narrowing /16 -> /24".into(), Box::new(narrowing_case)));
    for who in [Who::Wisp, Who::Charon] {
        cases.push((
            format!("IKE fragments both ways (fragment_size 256), {} initiates", who.tag()),
            Box::new(move || fragmentation_case(who)),
        ));
    }
    for who in [Who::Wisp, Who::Charon] {
        cases.push((format!("IPv6 outer, {} initiates", who.tag()), Box::new(move || ipv6_outer_case(who))));
    }
    cases.push(("trap on wisp, first packet starts it".into(), Box::new(trap_case)));
    for who in [Who::Wisp, Who::Charon] {
        cases.push((format!("DELETE by {}", who.tag()), Box::new(move || delete_case(who))));
    }
    cases.push(("charon killed -> wisp DPD".into(), Box::new(dpd_case)));
    cases.push(("charon killed+restarted -> wisp dpd_action=restart".into(), Box::new(dpd_restart_case)));
    for who in [Who::Wisp, Who::Charon] {
        cases.push((format!("reauth_time on {} under ping", who.tag()), Box::new(move || reauth_case(who))));
    }
    cases.push(("PSK rotated on both sides by reload under ping".into(), Box::new(psk_rotation_case)));
    cases.push(("wisp restarted -> wisp re-initiates".into(), Box::new(restart_case)));
    cases.push(("wisp restarted -> charon DPD re-initiates".into(), Box::new(restart_charon_recovers_case)));
    report("interop matrix: lifecycle", cases);
}

// ---------------------------------------------------------------- many peers

/// Extra charon peers beside the pair's: peer `n` (2, 3, ...) lives in its
/// own namespace joined to wisp's by `wv{n}`: wisp 10.99.{n}.1, charon
/// 10.99.{n}.2, inner 10.2.{n}.1/32, identity charon{n}.test.
struct ExtraPeer {
    ns: wisp_testbed::netns::Netns,
    charon: Charon,
    _dir: TestDir,
}

fn extra_peer(tag: &str, wisp_ns: &wisp_testbed::netns::Netns, n: u8, psk: &str, opts: &CharonOptions) -> R<ExtraPeer> {
    let ns = wisp_testbed::netns::Netns::new(&format!("{tag}{n}")).map_err(e)?;
    let w_if = format!("wv{n}");
    wisp_testbed::netns::veth(wisp_ns, &w_if, &ns, Pair::IFACE).map_err(e)?;
    wisp_ns.addr_add(&w_if, &format!("10.99.{n}.1/24")).map_err(e)?;
    ns.addr_add(Pair::IFACE, &format!("10.99.{n}.2/24")).map_err(e)?;
    ns.addr_add("lo", &format!("10.2.{n}.1/32")).map_err(e)?;
    let dir = TestDir::new(&format!("mx-{tag}-c{n}")).map_err(e)?;
    let charon = Charon::start(&ns, dir.path(), opts).map_err(e)?;
    charon.load(&peer_swan(n, psk)).map_err(e)?;
    Ok(ExtraPeer { ns, charon, _dir: dir })
}

/// charon{n}.test's config towards wisp at 10.99.{n}.1 (n = 0: the pair's charon).
fn peer_swan(n: u8, psk: &str) -> SwanctlConf {
    let id = format!("charon{n}.test");
    let mut child = ChildConf::new("net", &format!("10.2.{n}.0/24"), "10.1.0.0/24", "aes128gcm16");
    child.rand_time = Some("0".into());
    let mut conn = Conn::psk("gw", &format!("10.99.{n}.2"), &format!("10.99.{n}.1"), "aes128gcm16-prfsha256-x25519", &id, WISP_ID, child);
    conn.rand_time = Some("0".into());
    SwanctlConf {
        conns: vec![conn],
        secrets: vec![PskSecret { name: "1".into(), ids: vec![WISP_ID.into(), id], secret: psk.into() }],
        ..Default::default()
    }
}

/// The IKE SAs of wisp's connection `gw`: (remote address, remote id, state).
fn wisp_peers(st: &Value) -> R<Vec<(String, String, String)>> {
    let c = wisp_conn(st)?;
    Ok(c["ike_sas"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let f = |k: &str| s[k].as_str().unwrap_or("").to_string();
                    (f("remote"), f("remote_id"), f("state"))
                })
                .collect()
        })
        .unwrap_or_default())
}

/// Three charon peers at once on one `%any` connection with a `*.test`
/// remote.id: the plugin authorizes charon0 and charon2 and refuses charon3.
fn many_peers_any_case() -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    s.wisp.plugin_settings = vec!["allowed_ids = [\"charon0.test\", \"charon2.test\"]".into()];
    let w = &mut s.wisp.conns[0];
    w.local_addrs = vec![W_OUT.into(), "10.99.2.1".into(), "10.99.3.1".into()];
    w.remote_addrs = vec!["%any".into()];
    w.remote_id = "*.test".into();
    w.children = vec![WispChild::new("net", "10.1.0.0/24", "10.2.0.0/16", "aes128gcm16")];
    s.swan = peer_swan(0, PSK);
    // The pair's charon must hold 10.2.0.1 (Env::new adds it) and talk from 10.99.0.2.
    let env = Env::build_with_peers("mxp", &s, false, false, &[2, 3])?;
    let (p2, p3) = (&env.extra[0], &env.extra[1]);
    env.charon.initiate_child("net", 20).map_err(|x| format!("charon0: {x}{}", env.ctx()))?;
    p2.charon.initiate_child("net", 20).map_err(|x| format!("charon2: {x}{}", env.ctx()))?;
    if p3.charon.initiate_child("net", 10).is_ok() {
        return env.fail("charon3 (not in allowed_ids) got a tunnel");
    }
    let st = env.wisp().status().map_err(e)?;
    let mut peers = wisp_peers(&st)?;
    peers.sort();
    let want = vec![("10.99.0.2".to_string(), "charon0.test".to_string()), ("10.99.2.2".to_string(), "charon2.test".to_string())];
    let ip_of = |a: &str| a.rsplit_once(':').map_or(a, |(ip, _)| ip).to_string();
    let got: Vec<(String, String)> =
        peers.iter().filter(|p| p.2.eq_ignore_ascii_case("established")).map(|p| (ip_of(&p.0), p.1.clone())).collect();
    if got != want {
        return env.fail(format!("wisp's connection gw holds {peers:?}, want {want:?}"));
    }
    // Both tunnels carry traffic at the same time, each to its own peer.
    ping_until_ok(&env.pair.left, "10.1.0.1", "10.2.0.1", 10).map_err(|x| format!("to charon0: {x}{}", env.ctx()))?;
    ping_until_ok(&env.pair.left, "10.1.0.1", "10.2.2.1", 10).map_err(|x| format!("to charon2: {x}{}", env.ctx()))?;
    let a = ping(&env.pair.right, "10.2.0.1", "10.1.0.1", 10, 0.05).map_err(e)?;
    let b = ping(&p2.ns, "10.2.2.1", "10.1.0.1", 10, 0.05).map_err(e)?;
    if a.received < 5 || b.received < 5 {
        return env.fail(format!("ping loss: {a:?} {b:?}"));
    }
    let log = env.wisp().log();
    if !log.contains("charon3.test") || !log.contains("not authorized") {
        return env.fail("wisp's log does not say charon3.test was not authorized");
    }
    let sas = env.charon.list_sas().map_err(e)?;
    let algorithms = sas.first().map(algos).unwrap_or_default();
    Ok(Outcome {
        algorithms,
        note: format!("charon0 + charon2 up together on %any (pings {}/10, {}/10), charon3 refused by the plugin", a.received, b.received),
    })
}

/// A charon peer from an address inside a CIDR `remote_addrs`; then the same
/// peer against a block it is not in: refused, and visible in `wisp status`.
fn cidr_peer_case() -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    s.wisp.conns[0].remote_addrs = vec!["10.99.0.0/24".into()];
    let env = Env::new("mxr", &s, false)?;
    env.establish(Who::Charon, &["net"])?;
    let (ike, st) = env.wait_both(1)?;
    let shown = wisp_conn(&st)?["remote_addrs"].to_string();
    if !shown.contains("10.99.0.0/24") {
        return env.fail(format!("status shows remote_addrs {shown}"));
    }
    let note = env.traffic("10.1.0.1", "10.2.0.1", 64 << 10)?;
    drop(env);
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    s.wisp.conns[0].remote_addrs = vec!["10.99.5.0/24".into(), "10.99.0.3-10.99.0.9".into()];
    let env = Env::new("mxr", &s, false)?;
    if env.charon.initiate_child("net", 6).is_ok() {
        return env.fail("charon outside remote_addrs got a tunnel");
    }
    let st = env.wisp().status().map_err(e)?;
    let unmatched =
        st["daemon"].as_array().and_then(|a| a.iter().find(|kv| kv[0] == "ike_init_unmatched")).and_then(|kv| kv[1].as_u64()).unwrap_or(0);
    let last = st["last_unmatched_init"]["source"].as_str().unwrap_or("");
    if unmatched == 0 || !last.starts_with("10.99.0.2:") {
        return env.fail(format!("status does not show the unmatched IKE_SA_INIT: count {unmatched}, last {last:?}"));
    }
    Ok(Outcome {
        algorithms: algos(&ike),
        note: format!("10.99.0.2 in 10.99.0.0/24: {note}; outside the blocks: {unmatched} unmatched IKE_SA_INIT, last from {last}"),
    })
}

#[test]
fn matrix_many_peers() {
    if !require_root("matrix_many_peers") {
        return;
    }
    let cases: Vec<Case> = vec![
        ("3 charons on one %any connection, plugin authorizes 2".into(), Box::new(many_peers_any_case)),
        ("charon from a CIDR remote_addrs; outside it: unmatched".into(), Box::new(cidr_peer_case)),
    ];
    report("interop matrix: many peers on one connection", cases);
}

// ---------------------------------------------------------------- failures

#[derive(Clone, Copy, Debug)]
enum Fail {
    WrongPsk,
    NoProposal,
    TsUnacceptable,
    PluginDenial,
}

fn failure_case(f: Fail, who: Who) -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    let notify = match f {
        Fail::WrongPsk => {
            s.wisp.conns[0].psk = "not-the-psk-at-all".into();
            "AUTHENTICATION_FAILED"
        }
        Fail::NoProposal => {
            match who {
                // charon (responder) does not accept what wisp offers
                Who::Wisp => s.wisp.conns[0].proposals = vec!["aes256gcm16-prfsha384-ecp384".into()],
                // charon offers only a non-AEAD suite: wisp's config and the
                // default policy (AEAD only) both refuse it
                Who::Charon => s.swan.conns[0].proposals = vec!["aes128-sha256-modp2048".into()],
            }
            "NO_PROPOSAL_CHOSEN"
        }
        Fail::TsUnacceptable => {
            // the initiator asks for a network the responder does not serve
            match who {
                Who::Charon => s.swan.conns[0].children[0].local_ts = vec!["10.7.0.0/24".into()],
                Who::Wisp => s.wisp.conns[0].children[0].remote_ts = vec!["10.7.0.0/24".into()],
            }
            "TS_UNACCEPTABLE"
        }
        Fail::PluginDenial => {
            // the default policy authorizes only listed identities
            s.wisp.plugin_settings = vec!["allowed_ids = [\"someone-else.test\"]".into()];
            "AUTHENTICATION_FAILED"
        }
    };
    let env = Env::new("mxf", &s, false)?;
    let (wisp_said, last_error, reason) = initiation_fails(&env, who)?;
    if !reason.contains(notify) {
        return env.fail(format!("wisp did not report {notify}: up said {wisp_said:?}, last_error {last_error:?}"));
    }
    if f == Fail::PluginDenial && !reason.contains("allowed_ids") {
        return env.fail(format!("wisp did not report the plugin's reason: {reason:?}"));
    }
    let log = env.charon.log();
    let (sent, recv) = (charon_log::sent_notifies(&log), charon_log::received_notifies(&log));
    let charon_ok = match who {
        Who::Wisp => sent.contains(&notify.to_string()),
        Who::Charon => recv.contains(&notify.to_string()),
    };
    if !charon_ok {
        return env.fail(format!("charon log lacks {notify}: sent {sent:?} received {recv:?}"));
    }
    if let Ok(sas) = env.charon.list_sas() {
        if f != Fail::TsUnacceptable && !sas.is_empty() {
            return env.fail(format!("charon kept SAs after failure: {sas:?}"));
        }
        if sas.iter().any(|s| !s.children.is_empty()) {
            return env.fail(format!("charon installed a child after failure: {sas:?}"));
        }
    }
    let short = last_error.unwrap_or(wisp_said).lines().next().unwrap_or("").to_string();
    Ok(Outcome { algorithms: format!("- ({notify})"), note: format!("wisp: {}", short.chars().take(90).collect::<String>()) })
}

/// `who` initiates and must fail: what wisp said (its `up` output when it
/// initiated), its connection's last_error, and both together.
fn initiation_fails(env: &Env, who: Who) -> R<(String, Option<String>, String)> {
    let wisp_said = match who {
        Who::Wisp => match env.wisp().cli(&["up", "gw", "--timeout", "15"]) {
            Ok(o) if o.status.success() => return env.fail("wisp up succeeded but must fail"),
            Ok(o) => format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)),
            Err(x) => return Err(e(x)),
        },
        Who::Charon => {
            if env.charon.initiate_child("net", 15).is_ok() {
                return env.fail("charon initiate succeeded but must fail");
            }
            String::new()
        }
    };
    // wisp's reason: the `up` output and/or the connection's last_error.
    let st = env.wisp().wait_status(Duration::from_secs(5), |st| wisp_conn(st).map(|c| !c["last_error"].is_null()).unwrap_or(false));
    let last_error = st.as_ref().ok().and_then(|st| wisp_conn(st).ok()).and_then(|c| c["last_error"].as_str().map(String::from));
    let reason = format!("{wisp_said} {}", last_error.clone().unwrap_or_default());
    Ok((wisp_said, last_error, reason))
}

impl PartialEq for Fail {
    fn eq(&self, o: &Fail) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(o)
    }
}

#[test]
fn matrix_failures() {
    if !require_root("matrix_failures") {
        return;
    }
    let mut cases: Vec<Case> = Vec::new();
    for f in [Fail::WrongPsk, Fail::NoProposal, Fail::TsUnacceptable] {
        for who in [Who::Wisp, Who::Charon] {
            cases.push((format!("{f:?}, {} initiates", who.tag()), Box::new(move || failure_case(f, who))));
        }
    }
    cases.push(("PluginDenial, charon initiates".into(), Box::new(|| failure_case(Fail::PluginDenial, Who::Charon))));
    report("interop matrix: failures diagnosable on both sides", cases);
}

// ---------------------------------------------------------------- certificates

const W_DN: &str = "C=CH, O=wisp test, CN=wisp.test";
const C_DN: &str = "C=CH, O=wisp test, CN=charon.test";
/// What wisp's policy sees of C_DN: RFC 4514, RDNs reversed.
const C_DN_4514: &str = "CN=charon.test,O=wisp test,C=CH";

/// How a certificate case differs from the plain one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CertVariant {
    /// RFC 7427 signatures, FQDN identities from the SAN.
    Plain,
    /// charon with `signature_authentication = no`: the legacy AUTH methods (1, 9, 10).
    Legacy,
    /// Both certificates issued by an intermediate CA that only the sender
    /// holds the certificate of: each side must send it and the other build
    /// the path with it.
    Intermediate,
    /// DN identities (ID_DER_ASN1_DN) instead of FQDNs.
    DnIds,
    /// RSASSA-PSS signatures from wisp (`local.auth = rsa/pss`) and charon (`rsa/pss`).
    Pss,
    /// RSA-4096 certificates under two intermediate CAs, each side sending
    /// its whole chain (over 4 KB in IKE_AUTH) over a 1280-byte path that
    /// drops IP fragments: only IKE fragmentation (RFC 7383) gets it through.
    BigChain,
}

/// Ways a certificate authentication must fail, diagnosed on both sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CertFail {
    /// The peer's certificate is from a CA we do not trust.
    UnknownCa,
    /// The peer's certificate expired.
    Expired,
    /// The peer's certificate is on its CA's CRL.
    Revoked,
    /// The peer's identity is not in its certificate.
    IdNotInCert,
    /// The private key configured is not the certificate's: refused when
    /// the configuration is loaded, before anything is sent (wisp names
    /// the key; charon finds no private key for its identity). A signature
    /// that does not verify is refused by the engine (certificates.rs).
    WrongKey,
}

struct CertWorld {
    setup: Setup,
    _dir: TestDir,
    root: Ca,
}

/// Both sides with certificates of `kt` from one test CA (`pki`), wisp's
/// default policy allowing charon's identity.
fn cert_world(tag: &str, kt: KeyType, v: CertVariant) -> R<CertWorld> {
    let dir = TestDir::new(&format!("mx-{tag}-pki")).map_err(e)?;
    let root = Ca::root(dir.path(), "root", kt, "C=CH, O=wisp test, CN=wisp test root CA").map_err(e)?;
    let (inter, inter2) = match v {
        CertVariant::Intermediate => (Some(root.intermediate("sub", kt, "C=CH, O=wisp test, CN=wisp test sub CA").map_err(e)?), None),
        CertVariant::BigChain => {
            let s1 = root.intermediate("sub1", kt, "C=CH, O=wisp test, CN=wisp test sub CA 1").map_err(e)?;
            let s2 = s1.intermediate("sub2", kt, "C=CH, O=wisp test, CN=wisp test sub CA 2").map_err(e)?;
            (Some(s1), Some(s2))
        }
        _ => (None, None),
    };
    let issuer = inter2.as_ref().or(inter.as_ref()).unwrap_or(&root);
    let pss = v == CertVariant::Pss;
    let w = issuer.issue("wisp", kt, W_DN, &IssueOpts { sans: vec![WISP_ID.into()], pss, ..Default::default() }).map_err(e)?;
    let c = issuer.issue("charon", kt, C_DN, &IssueOpts { sans: vec![CHARON_ID.into()], pss, ..Default::default() }).map_err(e)?;
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    let p = |x: &std::path::Path| x.display().to_string();
    let (wid, cid, allowed) = match v {
        CertVariant::DnIds => (W_DN, C_DN, C_DN_4514),
        _ => (WISP_ID, CHARON_ID, CHARON_ID),
    };
    s.wisp.plugin_settings = vec![format!("allowed_ids = [\"{allowed}\"]")];
    let wc = &mut s.wisp.conns[0];
    wc.psk = String::new();
    wc.local_id = wid.into();
    wc.remote_id = cid.into();
    let mut certs = vec![p(&w.cert)];
    for i in [&inter2, &inter].into_iter().flatten() {
        certs.push(p(&i.cert));
    }
    wc.extra = vec![
        format!("local.certs = [{}]", certs.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ")),
        format!("local.key = {:?}", p(&w.key)),
        format!("remote.cacerts = [{:?}]", p(&root.cert)),
    ];
    if pss {
        wc.extra.push("local.auth = \"rsa/pss\"".into());
    }
    let sc = &mut s.swan.conns[0];
    sc.local_id = cid.into();
    sc.remote_id = wid.into();
    sc.local_auth = Some(if pss { "rsa/pss-sha256".into() } else { "pubkey".into() });
    sc.remote_auth = Some("pubkey".into());
    sc.local_certs = vec![p(&c.cert)];
    // charon sends intermediates it knows: give it the sub CA as a CA it
    // holds (wisp trusts only the root).
    sc.remote_cacerts = vec![p(&root.cert)];
    if let Some(i) = &inter {
        sc.extra.push(("send_cert".into(), "always".into()));
        let mut cas = vec![p(&root.cert), p(&i.cert)];
        cas.extend(inter2.iter().map(|c| p(&c.cert)));
        sc.remote_extra.push(("cacerts".into(), cas.join(",")));
        sc.remote_cacerts.clear();
    }
    s.swan.secrets.clear();
    s.swan.private_keys = vec![p(&c.key)];
    if v == CertVariant::Legacy {
        s.charon.extra.push("signature_authentication = no".into());
    }
    Ok(CertWorld { setup: s, _dir: dir, root })
}

/// The scheme charon logged for the authentication of `id` ("... with X successful").
fn charon_auth_scheme(log: &str, id: &str) -> Option<String> {
    let key = format!("authentication of '{id}' with ");
    log.lines().find_map(|l| {
        let rest = &l[l.find(&key)? + key.len()..];
        Some(rest.strip_suffix(" successful")?.to_string())
    })
}

fn cert_case(who: Who, kt: KeyType, v: CertVariant) -> R<Outcome> {
    let w = cert_world(&format!("mxc{}", port()), kt, v)?;
    let env = Env::new("mxc", &w.setup, false)?;
    if v == CertVariant::BigChain {
        // A 1280-byte path that drops IP fragments, both ways.
        for ns in [&env.pair.left, &env.pair.right] {
            for cmd in [
                vec!["ip", "link", "set", Pair::IFACE, "mtu", "1280"],
                vec!["nft", "add", "table", "ip", "nofrag"],
                vec!["nft", "add", "chain", "ip", "nofrag", "out", "{ type filter hook output priority 0 ; }"],
                vec!["nft", "add", "rule", "ip", "nofrag", "out", "ip", "frag-off", "&", "0x3fff", "!=", "0", "counter", "drop"],
            ] {
                let o = ns.output(cmd[0], &cmd[1..]).map_err(e)?;
                if !o.status.success() {
                    return env.fail(format!("{cmd:?}: {}", String::from_utf8_lossy(&o.stderr)));
                }
            }
        }
    }
    env.establish(who, &["net"])?;
    let (ike, st) = env.wait_both(1)?;
    let note = if v == CertVariant::BigChain {
        // Inner packets of the TUN's MTU would be IP fragments on this path: pings only.
        ping_until_ok(&env.pair.left, "10.1.0.1", "10.2.0.1", 10).map_err(|x| format!("{x}{}", env.ctx()))?;
        let log = env.charon.log();
        let (reassembled, split) =
            (log.matches("reassembled fragmented IKE message").count(), log.matches("splitting IKE message").count());
        if reassembled < 1 || split < 1 {
            return env.fail(format!("charon reassembled {reassembled} and split {split} IKE messages, want IKE_AUTH both ways"));
        }
        let size = log
            .lines()
            .find_map(|l| l.split("reassembled fragmented IKE message (").nth(1)?.split(' ').next()?.parse::<usize>().ok())
            .unwrap_or(0);
        if size < 4000 {
            return env.fail(format!("wisp's IKE_AUTH was {size} bytes, want over 4000"));
        }
        format!("IKE_AUTH {size} bytes from wisp in fragments, charon split its own; ping over a 1280-byte path without IP fragments")
    } else {
        env.traffic("10.1.0.1", "10.2.0.1", 64 << 10)?
    };
    let (wid, cid) = match v {
        CertVariant::DnIds => (W_DN, C_DN),
        _ => (WISP_ID, CHARON_ID),
    };
    // charon verified wisp's signature with the expected scheme.
    let log = env.charon.log();
    let Some(scheme) = charon_auth_scheme(&log, wid) else {
        return env.fail(format!("charon did not log the authentication of '{wid}'"));
    };
    let want = match (kt, v) {
        (KeyType::Rsa(_), CertVariant::Legacy) => "RSA signature",
        (KeyType::EcdsaP256, CertVariant::Legacy) => "ECDSA-256 signature",
        (KeyType::EcdsaP384, CertVariant::Legacy) => "ECDSA-384 signature",
        (KeyType::Rsa(_), CertVariant::Pss) => "RSA_EMSA_PSS",
        (KeyType::Rsa(_), _) => "RSA_EMSA_PKCS1_SHA2_256",
        (KeyType::EcdsaP256, _) => "ECDSA_WITH_SHA256_DER",
        (KeyType::EcdsaP384, _) => "ECDSA_WITH_SHA384_DER",
        (KeyType::Ed25519, _) => "ED25519",
    };
    if !scheme.contains(want) {
        return env.fail(format!("charon verified wisp with {scheme:?}, want {want}"));
    }
    // wisp verified charon's certificate and says how.
    let wi = wisp_ike(&st)?;
    let w_auth = wi["remote_auth"].as_str().unwrap_or("").to_string();
    let w_subject = wi["remote_cert"]["subject"].as_str().unwrap_or("").to_string();
    if w_subject != C_DN_4514 {
        return env.fail(format!("wisp shows peer certificate subject {w_subject:?}, want {C_DN_4514:?} (remote_auth {w_auth:?})"));
    }
    let legacy = v == CertVariant::Legacy;
    if v == CertVariant::Pss && !w_auth.contains("PSS") {
        return env.fail(format!("wisp verified charon with {w_auth:?}, want RSASSA-PSS"));
    }
    if legacy == w_auth.contains("RFC 7427") {
        return env.fail(format!("wisp verified charon with {w_auth:?} (legacy methods expected: {legacy})"));
    }
    let c_remote = ike.remote_id.clone();
    if c_remote != wid {
        return env.fail(format!("charon sees wisp as {c_remote:?}, want {wid:?}"));
    }
    let _ = (&w.root, cid);
    Ok(Outcome { algorithms: kt.name(), note: format!("charon: {scheme}; wisp: {w_auth}; {note}") })
}

fn cert_failure_case(f: CertFail, who: Who) -> R<Outcome> {
    let kt = KeyType::EcdsaP256;
    let mut w = cert_world(&format!("mxcf{}", port()), kt, CertVariant::Plain)?;
    let dir = w._dir.path().to_path_buf();
    let p = |x: &std::path::Path| x.display().to_string();
    // The initiator's credential is bad and the responder refuses it:
    // wisp initiates, charon refuses; charon initiates, wisp refuses.
    let bad_subject = match who {
        Who::Wisp => W_DN,
        Who::Charon => C_DN,
    };
    let bad_san = match who {
        Who::Wisp => WISP_ID,
        Who::Charon => CHARON_ID,
    };
    let (cert, key): (String, String) = match f {
        CertFail::UnknownCa => {
            let other = Ca::root(&dir, "other", kt, "C=CH, O=elsewhere, CN=unknown CA").map_err(e)?;
            let i = other.issue("bad", kt, bad_subject, &IssueOpts { sans: vec![bad_san.into()], ..Default::default() }).map_err(e)?;
            (p(&i.cert), p(&i.key))
        }
        CertFail::Expired => {
            let opts = IssueOpts {
                sans: vec![bad_san.into()],
                not_before: Some("01.01.20 00:00:00".into()),
                not_after: Some("01.01.21 00:00:00".into()),
                ..Default::default()
            };
            let i = w.root.issue("bad", kt, bad_subject, &opts).map_err(e)?;
            (p(&i.cert), p(&i.key))
        }
        CertFail::Revoked => {
            let i = w.root.issue("bad", kt, bad_subject, &IssueOpts { sans: vec![bad_san.into()], ..Default::default() }).map_err(e)?;
            let crl = w.root.crl("root", &[&i.cert]).map_err(e)?;
            // The refusing side gets the CRL (charon from its x509crl directory).
            match who {
                Who::Wisp => w.setup.swan.crls.push(p(&crl)),
                Who::Charon => w.setup.wisp.conns[0].extra.push(format!("remote.crls = [{:?}]", p(&crl))),
            }
            (p(&i.cert), p(&i.key))
        }
        CertFail::IdNotInCert => {
            let i = w
                .root
                .issue(
                    "bad",
                    kt,
                    "C=CH, O=wisp test, CN=somebody.else",
                    &IssueOpts { sans: vec!["somebody.else".into()], ..Default::default() },
                )
                .map_err(e)?;
            (p(&i.cert), p(&i.key))
        }
        CertFail::WrongKey => {
            let i = w.root.issue("bad", kt, bad_subject, &IssueOpts { sans: vec![bad_san.into()], ..Default::default() }).map_err(e)?;
            let other_key = dir.join("stray-key.pem");
            wisp_testbed::pki::gen_key(&other_key, kt).map_err(e)?;
            (p(&i.cert), p(&other_key))
        }
    };
    match who {
        Who::Wisp => {
            let wc = &mut w.setup.wisp.conns[0];
            wc.extra.retain(|l| !l.starts_with("local.certs") && !l.starts_with("local.key"));
            wc.extra.push(format!("local.certs = [{cert:?}]"));
            wc.extra.push(format!("local.key = {key:?}"));
        }
        Who::Charon => {
            w.setup.swan.conns[0].local_certs = vec![cert];
            w.setup.swan.private_keys = vec![key];
        }
    }
    if f == CertFail::WrongKey {
        return match who {
            Who::Wisp => match Env::new("mxcf", &w.setup, false) {
                Ok(env) => env.fail("wisp started with a private key that is not its certificate's"),
                Err(x) if x.contains("connections.gw.local.key") && x.contains("not the key of certificate") => {
                    let line = x.lines().find(|l| l.contains("not the key")).unwrap_or("").to_string();
                    Ok(Outcome { algorithms: "- (config refused)".into(), note: line.chars().take(140).collect() })
                }
                Err(x) => Err(format!("wisp failed otherwise: {x}")),
            },
            Who::Charon => {
                let env = Env::new("mxcf", &w.setup, false)?;
                if env.charon.initiate_child("net", 15).is_ok() {
                    return env.fail("charon initiate succeeded with a key that is not its certificate's");
                }
                if !env.charon.log().contains("no private key found") {
                    return env.fail("charon did not log 'no private key found'");
                }
                Ok(Outcome { algorithms: "- (charon: no private key)".into(), note: "charon refuses to sign; wisp saw no IKE_AUTH".into() })
            }
        };
    }
    let env = Env::new("mxcf", &w.setup, false)?;
    let (wisp_said, last_error, reason) = initiation_fails(&env, who)?;
    if !reason.contains("AUTHENTICATION_FAILED") {
        return env.fail(format!("wisp did not report AUTHENTICATION_FAILED: up said {wisp_said:?}, last_error {last_error:?}"));
    }
    // Where wisp refused (charon initiated), its reason names the check.
    if who == Who::Charon {
        let want = match f {
            CertFail::UnknownCa => "issuer",
            CertFail::Expired => "expired",
            CertFail::Revoked => "revoked",
            CertFail::IdNotInCert => "not in its certificate",
            CertFail::WrongKey => "does not verify",
        };
        if !reason.to_lowercase().contains(want) {
            return env.fail(format!("wisp's reason does not say {want:?}: {reason:?}"));
        }
    }
    let log = env.charon.log();
    let (sent, recv) = (charon_log::sent_notifies(&log), charon_log::received_notifies(&log));
    let charon_ok = match who {
        Who::Wisp => sent.contains(&"AUTHENTICATION_FAILED".to_string()),
        Who::Charon => recv.contains(&"AUTHENTICATION_FAILED".to_string()),
    };
    if !charon_ok {
        return env.fail(format!("charon log lacks AUTHENTICATION_FAILED: sent {sent:?} received {recv:?}"));
    }
    if let Ok(sas) = env.charon.list_sas() {
        if sas.iter().any(|s| !s.children.is_empty()) {
            return env.fail(format!("charon installed a child after failure: {sas:?}"));
        }
    }
    let short = last_error.unwrap_or(wisp_said).lines().next().unwrap_or("").to_string();
    Ok(Outcome { algorithms: "- (AUTHENTICATION_FAILED)".into(), note: format!("wisp: {}", short.chars().take(110).collect::<String>()) })
}

#[test]
fn matrix_certificates() {
    if !require_root("matrix_certificates") {
        return;
    }
    if !wisp_testbed::pki::available() {
        eprintln!("matrix_certificates: skipped, {} missing (apt install strongswan-pki; scripts/setup.sh does)", wisp_testbed::pki::PKI);
        return;
    }
    let mut cases: Vec<Case> = Vec::new();
    for kt in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Ed25519, KeyType::Rsa(3072)] {
        for who in [Who::Wisp, Who::Charon] {
            cases.push((format!("{}, {} initiates", kt.name(), who.tag()), Box::new(move || cert_case(who, kt, CertVariant::Plain))));
        }
    }
    for kt in [KeyType::Rsa(3072), KeyType::EcdsaP256] {
        for who in [Who::Wisp, Who::Charon] {
            cases.push((
                format!("{} legacy AUTH methods, {} initiates", kt.name(), who.tag()),
                Box::new(move || cert_case(who, kt, CertVariant::Legacy)),
            ));
        }
    }
    for who in [Who::Wisp, Who::Charon] {
        cases.push((
            format!("RSA-3072 RSASSA-PSS, {} initiates", who.tag()),
            Box::new(move || cert_case(who, KeyType::Rsa(3072), CertVariant::Pss)),
        ));
        cases.push((
            format!("intermediate CA sent by each side, {} initiates", who.tag()),
            Box::new(move || cert_case(who, KeyType::EcdsaP256, CertVariant::Intermediate)),
        ));
        cases.push((
            format!("DN identities, {} initiates", who.tag()),
            Box::new(move || cert_case(who, KeyType::EcdsaP256, CertVariant::DnIds)),
        ));
        cases.push((
            format!("RSA-4096 chain of 3 in IKE fragments, path MTU 1280 without IP fragments, {} initiates", who.tag()),
            Box::new(move || cert_case(who, KeyType::Rsa(4096), CertVariant::BigChain)),
        ));
    }
    for f in [CertFail::UnknownCa, CertFail::Expired, CertFail::Revoked, CertFail::IdNotInCert, CertFail::WrongKey] {
        for who in [Who::Wisp, Who::Charon] {
            cases.push((format!("{f:?}, {} initiates", who.tag()), Box::new(move || cert_failure_case(f, who))));
        }
    }
    report("interop matrix: certificates", cases);
}

// ---------------------------------------------------------------- road warriors

/// wisp's side of a road-warrior connection: addresses from `[pools.rw]`
/// (`addrs`), the peer's selectors dynamic (its virtual IP).
fn rw_wisp(s: &mut Setup, addrs: &str) {
    let w = &mut s.wisp.conns[0];
    w.extra.push("pools = [\"rw\"]".into());
    w.children[0].remote_ts.clear();
    s.wisp.tail = vec!["[pools.rw]".into(), format!("addrs = {addrs:?}"), "dns = [\"10.1.0.53\"]".into()];
}

/// charon as a road-warrior client: asks for any IPv4 address, its own
/// selectors dynamic.
fn rw_client(c: &mut Conn) {
    // (with `install_virtual_ip = yes` in CharonOptions: see rw_charon)
    c.extra.push(("vips".into(), "0.0.0.0".into()));
    c.children[0].local_ts.clear();
}

/// charon installs the virtual IP it gets (on its outbound interface).
fn rw_charon(o: &mut CharonOptions) {
    o.extra.push("install_virtual_ip = yes".into());
}

/// wisp's pool `rw` from `status`: (online, offline, leased addresses).
fn wisp_pool(st: &Value) -> (u64, u64, Vec<String>) {
    let p = st["pools"].as_array().and_then(|a| a.iter().find(|p| p["name"] == "rw")).cloned().unwrap_or_default();
    let leases =
        p["leases"].as_array().map(|a| a.iter().map(|l| l["address"].as_str().unwrap_or("").to_string()).collect()).unwrap_or_default();
    (p["online"].as_u64().unwrap_or(0), p["offline"].as_u64().unwrap_or(0), leases)
}

/// charon (`vips = 0.0.0.0`, certificates) connects to wisp: it gets the
/// pool's first address and DNS, pings from it, and the lease goes
/// offline when it disconnects.
fn rw_cert_case() -> R<Outcome> {
    let mut w = cert_world(&format!("mxw{}", port()), KeyType::EcdsaP256, CertVariant::Plain)?;
    rw_wisp(&mut w.setup, "10.3.0.0/24");
    rw_client(&mut w.setup.swan.conns[0]);
    rw_charon(&mut w.setup.charon);
    let env = Env::new("mxw", &w.setup, false)?;
    env.charon.initiate_child("net", 20).map_err(|x| format!("charon: {x}{}", env.ctx()))?;
    let sas = env.charon.list_sas().map_err(e)?;
    let vips = sas.first().map(|s| s.local_vips.clone()).unwrap_or_default();
    if vips != ["10.3.0.1"] {
        return env.fail(format!("charon holds virtual IPs {vips:?}, want [10.3.0.1]"));
    }
    let ts = sas[0].children.first().map(|c| c.local_ts.clone()).unwrap_or_default();
    if ts != ["10.3.0.1/32"] {
        return env.fail(format!("charon's side of the Child SA is {ts:?}, want 10.3.0.1/32"));
    }
    if !env.charon.log().contains("CPRP(ADDR DNS)") {
        return env.fail("charon did not get the address and the DNS server in a CFG_REPLY");
    }
    let st = env.wisp().status().map_err(e)?;
    let rv = strs(&wisp_ike(&st)?["remote_vips"]);
    if rv != ["10.3.0.1"] || wisp_pool(&st).0 != 1 {
        return env.fail(format!("wisp shows the peer's virtual IPs {rv:?}, pool {:?}", wisp_pool(&st)));
    }
    ping_until_ok(&env.pair.right, "10.3.0.1", "10.1.0.1", 10).map_err(|x| format!("from the virtual IP: {x}{}", env.ctx()))?;
    let p = ping(&env.pair.left, "10.1.0.1", "10.3.0.1", 10, 0.05).map_err(e)?;
    if p.received < 8 {
        return env.fail(format!("pings to the virtual IP: {p:?}"));
    }
    env.charon.terminate_ike("gw").map_err(e)?;
    let st = env
        .wisp()
        .wait_status(Duration::from_secs(10), |st| wisp_pool(st).0 == 0 && wisp_pool(st).1 == 1)
        .map_err(|x| format!("lease not released: {x}{}", env.ctx()))?;
    Ok(Outcome {
        algorithms: algos(&sas[0]),
        note: format!("charon got 10.3.0.1 + DNS, pings {}/10 to it; lease offline after disconnect {:?}", p.received, wisp_pool(&st)),
    })
}

/// charon asks for both families (`vips = 0.0.0.0, ::`): wisp leases one
/// address from each of two pools, and both carry pings.
fn rw_dual_case() -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    rw_wisp(&mut s, "10.3.0.0/24");
    s.wisp.tun_addrs.push("fd00:1::1/128".into());
    let w = &mut s.wisp.conns[0];
    w.extra = vec!["pools = [\"rw\", \"rw6\"]".into()];
    w.children[0].local_ts.push("fd00:1::/64".into());
    s.wisp.tail.extend(["[pools.rw6]".to_string(), "addrs = \"fd00:3::/120\"".into()]);
    rw_client(&mut s.swan.conns[0]);
    s.swan.conns[0].extra.retain(|(k, _)| k != "vips");
    s.swan.conns[0].extra.push(("vips".into(), "0.0.0.0,::".into()));
    s.swan.conns[0].children[0].remote_ts.push("fd00:1::/64".into());
    rw_charon(&mut s.charon);
    let env = Env::new("mxd", &s, false)?;
    env.charon.initiate_child("net", 20).map_err(|x| format!("charon: {x}{}", env.ctx()))?;
    let sas = env.charon.list_sas().map_err(e)?;
    let vips = sas.first().map(|s| s.local_vips.clone()).unwrap_or_default();
    if vips != ["10.3.0.1", "fd00:3::1"] {
        return env.fail(format!("charon holds virtual IPs {vips:?}, want 10.3.0.1 and fd00:3::1"));
    }
    ping_until_ok(&env.pair.right, "10.3.0.1", "10.1.0.1", 10).map_err(|x| format!("IPv4: {x}{}", env.ctx()))?;
    ping_until_ok(&env.pair.right, "fd00:3::1", "fd00:1::1", 10).map_err(|x| format!("IPv6: {x}{}", env.ctx()))?;
    let st = env.wisp().status().map_err(e)?;
    let rv = strs(&wisp_ike(&st)?["remote_vips"]);
    Ok(Outcome { algorithms: algos(&sas[0]), note: format!("charon got {vips:?} (wisp shows {rv:?}); pings over both families") })
}

/// Three charons at once get three distinct addresses of a 3-address pool;
/// a fourth is refused with INTERNAL_ADDRESS_FAILURE, said on both sides.
fn rw_exhausted_case() -> R<Outcome> {
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    let ids: Vec<String> = [0u8, 2, 3, 4].iter().map(|n| format!("\"charon{n}.test\"")).collect();
    s.wisp.plugin_settings = vec![format!("allowed_ids = [{}]", ids.join(", "))];
    rw_wisp(&mut s, "10.3.0.1-10.3.0.3");
    let w = &mut s.wisp.conns[0];
    w.local_addrs = vec![W_OUT.into(), "10.99.2.1".into(), "10.99.3.1".into(), "10.99.4.1".into()];
    w.remote_addrs = vec!["%any".into()];
    w.remote_id = "*.test".into();
    w.children[0].local_ts = vec!["10.1.0.0/24".into()];
    s.swan = peer_swan(0, PSK);
    rw_client(&mut s.swan.conns[0]);
    rw_charon(&mut s.charon);
    let env = Env::build_with_peers("mxx", &s, false, false, &[2, 3, 4])?;
    for (i, p) in env.extra.iter().enumerate() {
        let mut sw = peer_swan(i as u8 + 2, PSK);
        rw_client(&mut sw.conns[0]);
        p.charon.load(&sw).map_err(e)?;
    }
    let mut got = Vec::new();
    for (name, c) in [("charon0", &env.charon), ("charon2", &env.extra[0].charon), ("charon3", &env.extra[1].charon)] {
        c.initiate_child("net", 20).map_err(|x| format!("{name}: {x}{}", env.ctx()))?;
        let v = c.list_sas().map_err(e)?.first().map(|s| s.local_vips.clone()).unwrap_or_default();
        got.push(v.join(","));
    }
    let mut sorted = got.clone();
    sorted.sort();
    if sorted != ["10.3.0.1", "10.3.0.2", "10.3.0.3"] {
        return env.fail(format!("the three charons hold {got:?}"));
    }
    ping_until_ok(&env.extra[1].ns, &got[2], "10.1.0.1", 10).map_err(|x| format!("charon3: {x}{}", env.ctx()))?;
    let fourth = &env.extra[2].charon;
    if fourth.initiate_child("net", 10).is_ok() {
        return env.fail("a fourth charon got a tunnel from an exhausted pool");
    }
    let clog = fourth.log();
    if !clog.contains("INTERNAL_ADDRESS_FAILURE") {
        return env.fail(format!("charon4 does not say INTERNAL_ADDRESS_FAILURE:\n{}", fourth.log_tail(30)));
    }
    let wlog = env.wisp().log();
    if !wlog.contains("address pool rw exhausted (3 of 3 addresses leased)") {
        return env.fail("wisp's log does not say the pool is exhausted");
    }
    // wisp deletes the IKE SA it could not give an address.
    let st = env
        .wisp()
        .wait_status(Duration::from_secs(10), |st| wisp_peers(st).is_ok_and(|p| p.len() == 3))
        .map_err(|x| format!("charon4's IKE SA not deleted: {x}{}", env.ctx()))?;
    let (online, _, leases) = wisp_pool(&st);
    if online != 3 {
        return env.fail(format!("wisp: pool {:?}, peers {:?}", wisp_pool(&st), wisp_peers(&st)?));
    }
    Ok(Outcome {
        algorithms: "aes128gcm16".into(),
        note: format!("leases {leases:?}; charon4 refused: INTERNAL_ADDRESS_FAILURE, wisp: pool rw exhausted"),
    })
}

/// wisp as a client (`vips = ["0.0.0.0"]`) of a charon gateway with a pool:
/// the address goes on wisp's TUN device and carries its traffic; the
/// `dns_hook` hears `up` with the address and the DNS server, and `down`.
fn wisp_client_case() -> R<Outcome> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut s = setup("aes128gcm16-prfsha256-x25519", "aes128gcm16");
    let hook_dir = TestDir::new("mx-dns-hook").map_err(e)?;
    let said = hook_dir.path().join("said");
    let hook = hook_dir.path().join("hook");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho \"$1 $WISP_CONNECTION $WISP_TUN vips=$WISP_VIPS dns=$WISP_DNS\" >> {}\n", said.display()),
    )
    .map_err(e)?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).map_err(e)?;
    s.wisp.tail = vec!["[daemon]".into(), format!("dns_hook = {:?}", hook.display().to_string())];
    s.wisp.tun_addrs.clear();
    let w = &mut s.wisp.conns[0];
    w.extra.push("vips = [\"0.0.0.0\"]".into());
    w.children[0].local_ts.clear();
    let c = &mut s.swan.conns[0];
    c.extra.push(("pools".into(), "rw".into()));
    c.children[0].remote_ts.clear();
    s.swan.pools = vec![("rw".into(), vec![("addrs".into(), "10.4.0.0/24".into()), ("dns".into(), "10.2.0.53".into())])];
    let env = Env::new("mxv", &s, false)?;
    env.establish(Who::Wisp, &["net"])?;
    let st = env
        .wisp()
        .wait_status(Duration::from_secs(10), |st| wisp_ike(st).is_ok_and(|i| !strs(&i["local_vips"]).is_empty()))
        .map_err(|x| format!("no virtual IP in wisp's status: {x}{}", env.ctx()))?;
    let ike = wisp_ike(&st)?;
    let vips = strs(&ike["local_vips"]);
    let dns = strs(&ike["dns"]);
    if vips != ["10.4.0.1"] || dns != ["10.2.0.53"] {
        return env.fail(format!("wisp got virtual IPs {vips:?}, DNS {dns:?}"));
    }
    let sas = env.charon.list_sas().map_err(e)?;
    let rv = sas.first().map(|s| s.remote_vips.clone()).unwrap_or_default();
    if rv != ["10.4.0.1"] {
        return env.fail(format!("charon shows the peer's virtual IPs {rv:?}"));
    }
    let addrs = env.pair.left.output("ip", &["-o", "addr", "show", "dev", "wisp0"]).map_err(e)?;
    let addrs = String::from_utf8_lossy(&addrs.stdout).to_string();
    if !addrs.contains("10.4.0.1/32") {
        return env.fail(format!("the virtual IP is not on wisp's TUN device: {addrs}"));
    }
    // The kernel sources traffic into the tunnel from the virtual IP.
    ping_until_ok(&env.pair.left, "10.4.0.1", "10.2.0.1", 10).map_err(|x| format!("{x}{}", env.ctx()))?;
    let p = ping(&env.pair.right, "10.2.0.1", "10.4.0.1", 10, 0.05).map_err(e)?;
    if p.received < 8 {
        return env.fail(format!("pings to wisp's virtual IP: {p:?}"));
    }
    let heard = |want: &str| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if std::fs::read_to_string(&said).unwrap_or_default().contains(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    if !heard("up gw wisp0 vips=10.4.0.1 dns=10.2.0.53") {
        return env.fail(format!("dns_hook was not called up: {:?}", std::fs::read_to_string(&said).unwrap_or_default()));
    }
    env.wisp().cli_ok(&["down", "gw"]).map_err(e)?;
    std::thread::sleep(Duration::from_millis(500));
    let after = env.pair.left.output("ip", &["-o", "addr", "show", "dev", "wisp0"]).map_err(e)?;
    if String::from_utf8_lossy(&after.stdout).contains("10.4.0.1") {
        return env.fail("the virtual IP stayed on the TUN device after the IKE SA went");
    }
    if !heard("down gw wisp0 vips=10.4.0.1 dns=10.2.0.53") {
        return env.fail(format!("dns_hook was not called down: {:?}", std::fs::read_to_string(&said).unwrap_or_default()));
    }
    Ok(Outcome {
        algorithms: algos(&sas[0]),
        note: format!("wisp got 10.4.0.1 + DNS 10.2.0.53 on wisp0; pings {}/10; removed on down; dns_hook up and down", p.received),
    })
}

/// charon as a road warrior that authenticates by EAP-MSCHAPv2 (the
/// method of the native Windows, macOS/iOS and Android clients) after wisp
/// proved itself with its certificate (RFC 7296 2.16). With
/// `ask_identity`, charon's IKE identity is its address (as a Windows
/// client's is) and wisp asks for the user by EAP-Identity
/// (`remote.eap_id = %any`); without, the IKE identity is the user.
fn rw_eap_world(ask_identity: bool, password: &str) -> R<CertWorld> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut w = cert_world(&format!("mxe{}", port()), KeyType::EcdsaP256, CertVariant::Plain)?;
    rw_wisp(&mut w.setup, "10.3.0.0/24");
    let secrets = w._dir.path().join("eap.secrets");
    std::fs::write(&secrets, "alice = \"alice-Pa55 word\"\n\"bob@example.org\" = \"bob's\"\n").map_err(e)?;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).map_err(e)?;
    let ike_id = if ask_identity { C_OUT } else { "alice" };
    w.setup.wisp.plugin_settings = vec![format!("allowed_ids = [\"{ike_id}\"]")];
    let wc = &mut w.setup.wisp.conns[0];
    wc.extra.retain(|l| !l.starts_with("remote.cacerts"));
    wc.extra.push("remote.auth = \"eap-mschapv2\"".into());
    if ask_identity {
        wc.extra.push("remote.eap_id = \"%any\"".into());
    }
    wc.remote_id = ike_id.into();
    w.setup.wisp.tail.extend(["[secrets]".to_string(), format!("eap_file = {:?}", secrets.display().to_string())]);
    let sc = &mut w.setup.swan.conns[0];
    sc.local_id = ike_id.into();
    sc.local_auth = Some("eap-mschapv2".into());
    sc.local_certs.clear();
    sc.local_extra.push(("eap_id".into(), "alice".into()));
    rw_client(sc);
    w.setup.swan.private_keys.clear();
    w.setup.swan.eap_secrets = vec![("alice".into(), password.into())];
    rw_charon(&mut w.setup.charon);
    w.setup.charon.plugins.push_str(" eap-identity eap-mschapv2");
    Ok(w)
}

/// The EAP road warrior gets its address, pings from it, wisp shows the
/// EAP identity as the way it authenticated and leases to the user; the
/// lease goes offline when charon disconnects.
fn rw_eap_case(ask_identity: bool) -> R<Outcome> {
    let w = rw_eap_world(ask_identity, "alice-Pa55 word")?;
    let env = Env::new("mxe", &w.setup, false)?;
    env.charon.initiate_child("net", 20).map_err(|x| format!("charon: {x}{}", env.ctx()))?;
    let log = env.charon.log();
    if !log.contains("EAP_MSCHAPV2 succeeded") && !log.contains("EAP method EAP_MSCHAPV2 succeeded") {
        return env.fail("charon's log does not say EAP-MSCHAPv2 succeeded");
    }
    if ask_identity != log.contains("EAP_IDENTITY") {
        return env.fail(format!("charon's log {} EAP_IDENTITY", if ask_identity { "lacks" } else { "has" }));
    }
    let sas = env.charon.list_sas().map_err(e)?;
    let vips = sas.first().map(|s| s.local_vips.clone()).unwrap_or_default();
    if vips != ["10.3.0.1"] {
        return env.fail(format!("charon holds virtual IPs {vips:?}, want [10.3.0.1]"));
    }
    let st = env.wisp().status().map_err(e)?;
    let ike = wisp_ike(&st)?;
    let how = ike["remote_auth"].as_str().unwrap_or("").to_string();
    if how != "EAP-MSCHAPV2 as \"alice\"" {
        return env.fail(format!("wisp says the peer authenticated by {how:?}"));
    }
    let lease_ids: Vec<String> = st["pools"][0]["leases"]
        .as_array()
        .map(|a| a.iter().map(|l| l["identity"].as_str().unwrap_or("").to_string()).collect())
        .unwrap_or_default();
    if lease_ids != ["alice"] {
        return env.fail(format!("the lease is held by {lease_ids:?}, want the EAP user alice"));
    }
    ping_until_ok(&env.pair.right, "10.3.0.1", "10.1.0.1", 10).map_err(|x| format!("from the virtual IP: {x}{}", env.ctx()))?;
    env.charon.terminate_ike("gw").map_err(e)?;
    let st = env
        .wisp()
        .wait_status(Duration::from_secs(10), |st| wisp_pool(st).0 == 0 && wisp_pool(st).1 == 1)
        .map_err(|x| format!("lease not released: {x}{}", env.ctx()))?;
    Ok(Outcome {
        algorithms: algos(&sas[0]),
        note: format!(
            "{}; wisp: {how}, lease of alice, ping from 10.3.0.1; offline after disconnect {:?}",
            if ask_identity { "IDi = address, EAP-Identity asked" } else { "IDi = the user" },
            wisp_pool(&st)
        ),
    })
}

/// charon's EAP identity (`mallory.test`) is in none of its certificates,
/// so it sends none: wisp's TLS server refuses the handshake and says so.
fn rw_eap_tls_identity_case() -> R<Outcome> {
    let w = rw_eap_tls_world(Some("mallory.test"))?;
    let env = Env::new("mxu", &w.setup, false)?;
    let (_, last_error, reason) = initiation_fails(&env, Who::Charon)?;
    if !reason.contains("EAP-TLS failed: TLS handshake failed: peer sent no certificates") {
        return env.fail(format!("wisp's reason does not say the client sent no certificate: {reason:?}"));
    }
    if !env.charon.log().contains("EAP/FAIL N(AUTH_FAILED)") {
        return env.fail("charon did not get EAP-Failure with AUTHENTICATION_FAILED");
    }
    Ok(Outcome { algorithms: "- (EAP-Failure)".into(), note: format!("wisp: {}", last_error.unwrap_or_default()) })
}

/// A wrong password: charon gets the MS-CHAPv2 Failure (E=691), wisp says
/// why without quoting the password, no lease is made.
fn rw_eap_wrong_password_case() -> R<Outcome> {
    let w = rw_eap_world(true, "not the password")?;
    let env = Env::new("mxf", &w.setup, false)?;
    let (_, last_error, reason) = initiation_fails(&env, Who::Charon)?;
    if !reason.contains("EAP-MSCHAPV2 failed: EAP-MSCHAPv2: wrong password for \"alice\"") {
        return env.fail(format!("wisp's reason does not name the wrong password: {reason:?}"));
    }
    if reason.contains("not the password") {
        return env.fail("wisp's reason quotes the password");
    }
    // charon gives up on the MS-CHAPv2 Failure request (E=691), before EAP-Failure.
    if !env.charon.log().contains("ERROR_AUTHENTICATION_FAILURE") {
        return env.fail("charon's log lacks EAP-MSCHAPv2's ERROR_AUTHENTICATION_FAILURE");
    }
    let st = env.wisp().status().map_err(e)?;
    if wisp_pool(&st) != (0, 0, Vec::new()) {
        return env.fail(format!("a lease was made: {:?}", wisp_pool(&st)));
    }
    Ok(Outcome { algorithms: "- (E=691, AUTHENTICATION_FAILED)".into(), note: format!("wisp: {}", last_error.unwrap_or_default()) })
}

/// charon as an EAP-TLS road warrior (its client certificate, after
/// wisp's certificate AUTH); `eap_id`: charon's EAP identity when it is
/// not its IKE identity (wisp then asks with EAP-Identity).
fn rw_eap_tls_world(eap_id: Option<&str>) -> R<CertWorld> {
    let mut w = cert_world(&format!("mxt{}", port()), KeyType::EcdsaP256, CertVariant::Plain)?;
    rw_wisp(&mut w.setup, "10.3.0.0/24");
    w.setup.wisp.conns[0].extra.push("remote.auth = \"eap-tls\"".into());
    let sc = &mut w.setup.swan.conns[0];
    sc.local_auth = Some("eap-tls".into());
    if let Some(id) = eap_id {
        sc.local_extra.push(("eap_id".into(), id.into()));
        w.setup.wisp.conns[0].extra.push("remote.eap_id = \"%any\"".into());
    }
    rw_client(sc);
    rw_charon(&mut w.setup.charon);
    w.setup.charon.plugins.push_str(" eap-identity eap-tls");
    Ok(w)
}

/// charon authenticates by EAP-TLS (RFC 5216; strongSwan 5.9.8 speaks TLS
/// 1.2 here, its 1.3 EAP-TLS came with 5.9.10): it gets its address, wisp
/// shows the client certificate, the lease goes when charon does.
fn rw_eap_tls_case() -> R<Outcome> {
    let w = rw_eap_tls_world(None)?;
    let env = Env::new("mxt", &w.setup, false)?;
    env.charon.initiate_child("net", 20).map_err(|x| format!("charon: {x}{}", env.ctx()))?;
    let log = env.charon.log();
    if !log.contains("EAP method EAP_TLS succeeded, MSK established") {
        return env.fail("charon's log does not say EAP-TLS succeeded with an MSK");
    }
    let version = log.lines().find_map(|l| l.split_once("negotiated ").map(|(_, v)| v.trim().to_string())).unwrap_or_default();
    let sas = env.charon.list_sas().map_err(e)?;
    let vips = sas.first().map(|s| s.local_vips.clone()).unwrap_or_default();
    if vips != ["10.3.0.1"] {
        return env.fail(format!("charon holds virtual IPs {vips:?}, want [10.3.0.1]"));
    }
    let st = env.wisp().status().map_err(e)?;
    let ike = wisp_ike(&st)?;
    let how = ike["remote_auth"].as_str().unwrap_or("").to_string();
    if how != format!("EAP-TLS as {CHARON_ID:?}") {
        return env.fail(format!("wisp says the peer authenticated by {how:?}"));
    }
    let subject = ike["remote_cert"]["subject"].as_str().unwrap_or("").to_string();
    if !subject.contains("charon") {
        return env.fail(format!("wisp shows the client certificate {:?}", ike["remote_cert"]));
    }
    ping_until_ok(&env.pair.right, "10.3.0.1", "10.1.0.1", 10).map_err(|x| format!("from the virtual IP: {x}{}", env.ctx()))?;
    env.charon.terminate_ike("gw").map_err(e)?;
    env.wisp()
        .wait_status(Duration::from_secs(10), |st| wisp_pool(st).0 == 0 && wisp_pool(st).1 == 1)
        .map_err(|x| format!("lease not released: {x}{}", env.ctx()))?;
    Ok(Outcome {
        algorithms: algos(&sas[0]),
        note: format!("{version}; wisp: {how}, client certificate {subject}; ping from 10.3.0.1; lease released"),
    })
}

#[test]
fn matrix_road_warriors() {
    if !require_root("matrix_road_warriors") {
        return;
    }
    let cases: Vec<Case> = vec![
        ("charon vips=0.0.0.0 with certificates: lease, ping, release".into(), Box::new(rw_cert_case)),
        ("charon vips=0.0.0.0,:: gets one address of each family".into(), Box::new(rw_dual_case)),
        ("3 charons get 3 addresses, a 4th: pool exhausted".into(), Box::new(rw_exhausted_case)),
        ("wisp vips=0.0.0.0 against a charon pool".into(), Box::new(wisp_client_case)),
        ("charon EAP-MSCHAPv2 (IDi = the user) after wisp's certificate".into(), Box::new(|| rw_eap_case(false))),
        ("charon EAP-MSCHAPv2, EAP-Identity asked (remote.eap_id = %any)".into(), Box::new(|| rw_eap_case(true))),
        ("charon EAP-MSCHAPv2 with a wrong password: refused (E=691)".into(), Box::new(rw_eap_wrong_password_case)),
        ("charon EAP-TLS (TLS 1.2) with a client certificate".into(), Box::new(rw_eap_tls_case)),
        ("charon EAP-TLS without a certificate for its EAP identity: refused".into(), Box::new(rw_eap_tls_identity_case)),
    ];
    report("interop matrix: road warriors (virtual IPs)", cases);
}
