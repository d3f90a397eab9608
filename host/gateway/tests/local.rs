//! The daemon's local attack surface and identity defaults, tried for real
//! (root; skips otherwise): the control socket's mode and `SO_PEERCRED` check
//! against other uids, oversized requests on the live socket, the privilege
//! drop to `[daemon] user`, and a missing `remote.id`.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use wisp_testbed::netns::{Netns, Pair};
use wisp_testbed::traffic::ping;
use wisp_testbed::wisp::{plugin_path, write_private, WispChild, WispConf, WispConn, WispDaemon};
use wisp_testbed::{require_root, TestDir};

const PSK: &str = "local-test-psk-0123456789";
const NOBODY: u32 = 65534;

fn init() {
    std::env::set_var("WISP_BIN", env!("CARGO_BIN_EXE_wisp"));
}

/// `wisp ARGS` as uid/gid with these supplementary groups (set in the child
/// before exec; std's `uid()` would clear the groups).
fn wisp_as(uid: u32, gid: u32, groups: &[u32], args: &[&str]) -> Output {
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let mut c = Command::new(env!("CARGO_BIN_EXE_wisp"));
    c.args(args).stdin(Stdio::null());
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(gid, gid, gid) != 0
                || libc::setresuid(uid, uid, uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.output().expect("spawn wisp")
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Field order = drop order: the daemon stops before its namespace goes.
struct Lone {
    d: WispDaemon,
    _dir: TestDir,
    _ns: Netns,
}

/// A daemon with no connection (control socket only), in its own namespace.
fn lone_daemon(tag: &str, extra: &str) -> Lone {
    init();
    let ns = Netns::new(tag).expect("netns");
    let dir = TestDir::new(tag).unwrap();
    // Others must be able to reach the socket's directory for the uid checks to mean anything.
    chmod(dir.path(), 0o755);
    let cfg = format!("log_level = \"debug\"\n[tun]\nname = \"wisp0\"\n{extra}");
    let d = WispDaemon::start(&ns, dir.path(), &cfg).expect("daemon");
    Lone { d, _dir: dir, _ns: ns }
}

#[test]
fn control_socket_0600_refuses_a_non_root_uid() {
    if !require_root("control_socket_0600_refuses_a_non_root_uid") {
        return;
    }
    let l = lone_daemon("ctl6", "");
    let d = &l.d;
    let sock = d.control_path();
    assert_eq!(mode(&sock), 0o600, "control socket mode");
    let s = sock.to_str().unwrap();
    // Root is served; nobody cannot even connect.
    assert!(d.cli_ok(&["status"]).is_ok());
    let o = wisp_as(NOBODY, NOBODY, &[], &["status", "--control", s]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot connect") && e.contains("ermission denied"), "{e}");
}

#[test]
fn control_peercred_refuses_a_uid_outside_the_group() {
    if !require_root("control_peercred_refuses_a_uid_outside_the_group") {
        return;
    }
    // Group `daemon` (gid 1): nobody is not a member in the group database.
    let l = lone_daemon("ctlg", "[control]\ngroup = \"daemon\"\n");
    let d = &l.d;
    let sock = d.control_path();
    let m = std::fs::metadata(&sock).unwrap();
    assert_eq!((mode(&sock), m.uid(), m.gid()), (0o660, 0, 1), "socket 0660 root:daemon");
    let s = sock.to_str().unwrap();
    // A process that reaches the socket through a supplementary group its user
    // does not belong to: the file mode lets it connect, SO_PEERCRED refuses it.
    let o = wisp_as(NOBODY, NOBODY, &[1], &["status", "--control", s]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "uid {NOBODY} was served");
    assert!(e.contains("permission denied") && e.contains("65534"), "{e}");
    // Primary group = the control group: served.
    let o = wisp_as(NOBODY, 1, &[1], &["status", "--control", s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let st = d.status().unwrap();
    let refused = st["daemon"].as_array().unwrap().iter().find(|kv| kv[0] == "control_refused_peer").map(|kv| kv[1].clone());
    assert_eq!(refused, Some(serde_json::json!(1)), "{st:#}");
}

#[test]
fn control_request_over_64k_is_refused_by_the_daemon() {
    if !require_root("control_request_over_64k_is_refused_by_the_daemon") {
        return;
    }
    use std::io::{Read as _, Write as _};
    let l = lone_daemon("ctlb", "");
    let d = &l.d;
    let mut s = std::os::unix::net::UnixStream::connect(d.control_path()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // 1 MiB without a newline: the daemon answers after 64 KiB and closes
    // (our write then fails or stops short).
    let _ = s.write_all(&vec![b' '; 1 << 20]);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.contains("longer than 64 KiB"), "{answer}");
    // A client that sends nothing is cut off after the read timeout, and the daemon still serves others.
    let mut idle = std::os::unix::net::UnixStream::connect(d.control_path()).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let t = std::time::Instant::now();
    let mut answer = String::new();
    let _ = idle.read_to_string(&mut answer);
    assert!(answer.contains("in time") && t.elapsed() < Duration::from_secs(8), "{answer} after {:?}", t.elapsed());
    assert!(d.cli_ok(&["status"]).is_ok());
}

fn conn(name: &str, l: &str, r: &str, lid: &str, rid: &str, lts: &str, rts: &str) -> WispConn {
    WispConn {
        name: name.into(),
        local_addrs: vec![l.into()],
        remote_addrs: vec![r.into()],
        local_id: lid.into(),
        remote_id: rid.into(),
        psk: PSK.into(),
        proposals: vec!["aes128gcm16-prfsha256-x25519".into()],
        children: vec![WispChild::new("net", lts, rts, "aes128gcm16")],
        ..Default::default()
    }
}

fn gw(tun: &str, allowed: &str, c: WispConn) -> WispConf {
    WispConf {
        log_level: Some("debug".into()),
        tun_name: Some("wisp0".into()),
        tun_addrs: vec![format!("{tun}/32")],
        plugin: Some(plugin_path("default").expect("default plugin")),
        plugin_settings: vec![format!("allowed_ids = [{allowed}]")],
        conns: vec![c],
        ..Default::default()
    }
}

fn a_conf(local_id: &str) -> String {
    gw("10.98.1.1", "\"b.wisp.test\"", conn("site", "10.99.0.1", "10.99.0.2", local_id, "b.wisp.test", "10.98.1.0/24", "10.98.2.0/24"))
        .render()
}

fn b_conf() -> WispConf {
    gw(
        "10.98.2.1",
        "\"a.wisp.test\", \"10.99.0.1\"",
        conn("site", "10.99.0.2", "10.99.0.1", "b.wisp.test", "a.wisp.test", "10.98.2.0/24", "10.98.1.0/24"),
    )
}

#[test]
fn missing_remote_id_refuses_a_peer_with_another_identity() {
    if !require_root("missing_remote_id_refuses_a_peer_with_another_identity") {
        return;
    }
    init();
    let pair = Pair::new("rid").expect("namespaces");
    let (da, db) = (TestDir::new("rida").unwrap(), TestDir::new("ridb").unwrap());
    // B has no remote.id: the peer must identify as 10.99.0.1.
    let b_text = b_conf().render().replace("remote.id = \"a.wisp.test\"\n", "");
    assert!(!b_text.contains("remote.id"), "{b_text}");
    let b = WispDaemon::start(&pair.right, db.path(), &b_text).expect("gateway B");
    let a = WispDaemon::start(&pair.left, da.path(), &a_conf("a.wisp.test")).expect("gateway A");
    let st = b.status().unwrap();
    assert_eq!(st["connections"][0]["remote_id"], "10.99.0.1", "{st:#}");
    let o = a.cli(&["up", "site", "--timeout", "10"]).unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a peer identifying as a.wisp.test was accepted");
    assert!(e.contains("AUTHENTICATION_FAILED"), "{e}");
    assert!(b.log().contains("a.wisp.test"), "B should say which identity it refused");
    // The same peer identifying with its address is accepted.
    write_private(&a.dir().join("wisp.toml"), &a_conf("10.99.0.1")).unwrap();
    a.cli_ok(&["reload"]).unwrap();
    let out = a.cli_ok(&["up", "site"]).expect("up with the address identity");
    assert!(out.contains("established"), "{out}");
}

fn threads(pid: u64) -> Vec<(String, String, u64, u64)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let d = e.unwrap().path();
        let comm = std::fs::read_to_string(d.join("comm")).unwrap_or_default().trim().to_string();
        let st = std::fs::read_to_string(d.join("status")).unwrap_or_default();
        let f = |k: &str| st.lines().find_map(|l| l.strip_prefix(k)).unwrap_or("").trim().to_string();
        let hex = |k: &str| u64::from_str_radix(&f(k), 16).unwrap();
        v.push((comm, f("Uid:"), hex("CapPrm:"), hex("CapEff:")));
    }
    v
}

#[test]
fn privileges_dropped_keep_cap_net_admin() {
    if !require_root("privileges_dropped_keep_cap_net_admin") {
        return;
    }
    init();
    let pair = Pair::new("prv").expect("namespaces");
    let (da, db) = (TestDir::new("prva").unwrap(), TestDir::new("prvb").unwrap());
    chmod(db.path(), 0o755);
    let a = WispDaemon::start(&pair.left, da.path(), &a_conf("a.wisp.test")).expect("gateway A");
    // B runs as nobody: its config (inline PSK, 0600) must be nobody's for reload.
    let cfg = db.path().join("wisp.toml");
    let text = format!("{}\n[daemon]\nuser = \"nobody\"\n", b_conf().render());
    write_private(&cfg, &text).unwrap();
    // Still root's: refused at start, naming the file.
    let bin = Path::new(env!("CARGO_BIN_EXE_wisp"));
    let o = pair
        .right
        .command(bin.to_str().unwrap())
        .args(["run", "-c", cfg.to_str().unwrap(), "--control", db.path().join("x.sock").to_str().unwrap()])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("wisp.toml") && e.contains("nobody"), "{e}");
    std::os::unix::fs::chown(&cfg, Some(NOBODY), Some(NOBODY)).unwrap();
    let b = WispDaemon::start_with(&pair.right, db.path(), bin).expect("gateway B as nobody");
    let pid = b.status().unwrap()["pid"].as_u64().unwrap();
    let ts = threads(pid);
    println!("B threads: {ts:?}");
    let net_admin = 1u64 << 12;
    assert!(ts.iter().all(|(_, uid, _, _)| uid.split_whitespace().all(|u| u == "65534")), "{ts:?}");
    assert!(ts.iter().any(|(c, _, p, e)| c == "wisp-netlink" && *p == net_admin && *e == net_admin), "{ts:?}");
    assert!(ts.iter().all(|(c, _, p, e)| c == "wisp-netlink" || (*p == 0 && *e == 0)), "{ts:?}");
    // Routes are installed after the drop (by the netlink thread), traffic flows.
    let out = a.cli_ok(&["up", "site"]).expect("up");
    assert!(out.contains("established"), "{out}");
    assert!(pair.right.ip(&["route"]).unwrap().contains("10.98.1.0/24"));
    assert_eq!(ping(&pair.left, "10.98.1.1", "10.98.2.1", 3, 0.2).unwrap().received, 3);
    // Reload re-reads the (nobody-owned) config.
    let out = b.cli_ok(&["reload"]).expect("reload as nobody");
    assert!(out.contains("reloaded"), "{out}");
    // down removes the route (netlink, unprivileged process).
    a.cli_ok(&["down", "site"]).unwrap();
    b.wait_status(Duration::from_secs(5), |st| st["connections"][0]["ike_sas"].as_array().is_some_and(|v| v.is_empty())).unwrap();
    assert!(!pair.right.ip(&["route"]).unwrap().contains("10.98.1.0/24"), "route left behind");
    // SIGTERM: clean exit, TUN gone.
    let mut b = b;
    a.cli_ok(&["up", "site"]).unwrap();
    b.stop();
    assert!(b.log().contains("wisp daemon stopped"), "{}", b.log_tail(20));
    assert!(!pair.right.ip(&["route"]).unwrap().contains("10.98.1.0/24"), "route left behind at exit");
    assert!(pair.right.ip(&["link", "show", "wisp0"]).is_err(), "TUN device left behind");
}
