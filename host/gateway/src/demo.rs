//! `wisp demo`: two gateways in two network namespaces, end to end.
//!
//! 1. namespaces `wdemoa<pid>` / `wdemob<pid>` joined by a veth pair
//!    (10.99.0.1 ↔ 10.99.0.2; gateway A also has 10.99.0.3 for a second connection);
//! 2. a `wisp run` daemon in each, with the default plugin allowing the peer;
//! 3. `wisp up site` on A, ping 10.98.1.1 → 10.98.2.1 through the tunnel, `wisp status`;
//! 4. B's plugin settings are replaced (new config written to a temp file and
//!    renamed over the old one, then `wisp reload`) so that A is denied;
//! 5. B re-checks its live SAs against the new policy (`[plugin] on_change =
//!    "recheck"`, the default): the running tunnel goes down within a second
//!    (DELETE to A, routes removed), pings stop, and both gateways' `wisp
//!    status` say why; A's second connection (`site2`, from 10.99.0.3) is
//!    refused with AUTHENTICATION_FAILED;
//! 6. everything is removed on exit, also on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::control::{self, Request, Response};
use crate::netns::{self, Daemon, Netns};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupt() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

const PSK: &str = "wisp-demo-psk-not-for-production";

/// Config of gateway A (initiator). `plugin` is the policy component.
pub fn config_a(plugin: &Path, sock: &Path) -> String {
    format!(
        r#"# wisp demo: gateway A
log_level = "info"
control_socket = "{sock}"

[tun]
name = "wisp0"
addrs = ["10.98.1.1/24"]

[plugin]
path = "{plugin}"
[plugin.settings]
allowed_ids = ["b.wisp.test"]

[connections.site]
local_addrs = ["10.99.0.1"]
remote_addrs = ["10.99.0.2"]
proposals = ["aes128gcm16-prfsha256-x25519"]
dpd_delay = "5s"
local.id = "a.wisp.test"
remote.id = "b.wisp.test"
auth.psk = "{PSK}"
[connections.site.children.net]
local_ts = ["10.98.1.0/24"]
remote_ts = ["10.98.2.0/24"]
esp_proposals = ["aes128gcm16", "chacha20poly1305"]

[connections.site2]
local_addrs = ["10.99.0.3"]
remote_addrs = ["10.99.0.2"]
proposals = ["aes128gcm16-prfsha256-x25519"]
local.id = "a.wisp.test"
remote.id = "b.wisp.test"
auth.psk = "{PSK}"
[connections.site2.children.lab]
local_ts = ["10.97.1.0/24"]
remote_ts = ["10.97.2.0/24"]
esp_proposals = ["aes128gcm16"]
"#,
        sock = sock.display(),
        plugin = plugin.display()
    )
}

/// Config of gateway B (responder); `allowed` is the plugin's allow-list.
pub fn config_b(plugin: &Path, sock: &Path, allowed: &[&str]) -> String {
    let list = allowed.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    format!(
        r#"# wisp demo: gateway B
log_level = "info"
control_socket = "{sock}"

[tun]
name = "wisp0"
addrs = ["10.98.2.1/24"]

[plugin]
path = "{plugin}"
[plugin.settings]
allowed_ids = [{list}]

[connections.site]
local_addrs = ["10.99.0.2"]
remote_addrs = ["10.99.0.1"]
proposals = ["aes128gcm16-prfsha256-x25519"]
dpd_delay = "5s"
local.id = "b.wisp.test"
remote.id = "a.wisp.test"
auth.psk = "{PSK}"
[connections.site.children.net]
local_ts = ["10.98.2.0/24"]
remote_ts = ["10.98.1.0/24"]
esp_proposals = ["aes128gcm16", "chacha20poly1305"]

[connections.site2]
local_addrs = ["10.99.0.2"]
remote_addrs = ["10.99.0.3"]
proposals = ["aes128gcm16-prfsha256-x25519"]
local.id = "b.wisp.test"
remote.id = "a.wisp.test"
auth.psk = "{PSK}"
[connections.site2.children.lab]
local_ts = ["10.97.2.0/24"]
remote_ts = ["10.97.1.0/24"]
esp_proposals = ["aes128gcm16"]
"#,
        sock = sock.display(),
        plugin = plugin.display()
    )
}

/// Write `text` to `path` atomically (temp file + rename), like an editor,
/// with mode 0600 (the demo configs hold inline PSKs).
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

fn step(n: u32, what: &str) {
    println!("\n=== {n}. {what}");
}

fn call(sock: &Path, req: &Request, timeout: Duration) -> anyhow::Result<Result<String, String>> {
    Ok(match control::call(sock, req, Some(timeout))? {
        Response::Ok { message } => Ok(message),
        Response::Status { status } => Ok(status.render()),
        Response::Error { message } => Err(message),
    })
}

fn ping(ns: &Netns, src: &str, dst: &str, count: u32) -> anyhow::Result<(bool, String)> {
    let out = ns
        .cmd("ping")
        .args(["-c", &count.to_string(), "-i", "0.2", "-W", "1", "-I", src, dst])
        .stdin(Stdio::null())
        .output()
        .context("running ping")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok((out.status.success(), text))
}

fn start_gateway(ns: &Netns, exe: &Path, cfg: &Path, sock: &Path, log: &Path) -> anyhow::Result<Daemon> {
    let logf = std::fs::File::create(log)?;
    let child = ns
        .cmd(&exe.display().to_string())
        .arg("run")
        .arg("-c")
        .arg(cfg)
        .arg("--control")
        .arg(sock)
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .context("starting wisp run")?;
    let mut d = Daemon { child, what: format!("wisp in {}", ns.name) };
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        check_interrupt()?;
        if let Ok(Some(st)) = d.child.try_wait() {
            bail!("gateway in {} exited ({st}):\n{}", ns.name, std::fs::read_to_string(log).unwrap_or_default());
        }
        if sock.exists() && control::call(sock, &Request::Status, Some(Duration::from_secs(2))).is_ok() {
            return Ok(d);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    d.stop(Duration::from_secs(2));
    bail!("gateway in {} did not come up:\n{}", ns.name, std::fs::read_to_string(log).unwrap_or_default())
}

/// Run the demo. With `hold`, wait for Ctrl-C before cleaning up.
pub fn run(hold: bool) -> anyhow::Result<()> {
    if !netns::is_root() {
        bail!("the demo needs root (it creates network namespaces); try: sudo scripts/demo.sh");
    }
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
    let exe = std::env::current_exe().context("locating the wisp binary")?;
    let plugin = crate::config::default_plugin_path();
    if !plugin.exists() {
        bail!("default plugin {} not found: run scripts/build-plugins.sh (or set WISP_DEFAULT_PLUGIN)", plugin.display());
    }
    let plugin = plugin.canonicalize().unwrap_or(plugin);
    let id = std::process::id() % 100_000;
    let dir = PathBuf::from(format!("/tmp/wisp-demo-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let cleanup_dir = DirGuard(dir.clone());

    step(1, "two network namespaces joined by a veth pair");
    let a = Netns::new(&format!("wdemoa{id}"))?;
    let b = Netns::new(&format!("wdemob{id}"))?;
    netns::veth(&a, &format!("wdva{id}"), &b, &format!("wdvb{id}"))?;
    a.ip(&["addr", "add", "10.99.0.1/24", "dev", &format!("wdva{id}")])?;
    a.ip(&["addr", "add", "10.99.0.3/24", "dev", &format!("wdva{id}")])?;
    b.ip(&["addr", "add", "10.99.0.2/24", "dev", &format!("wdvb{id}")])?;
    println!("{}: 10.99.0.1, 10.99.0.3 (gateway A)   {}: 10.99.0.2 (gateway B)", a.name, b.name);

    step(2, "start gateway A and gateway B (default plugin, allow-list = the peer)");
    let (cfg_a, cfg_b) = (dir.join("gateway-a.toml"), dir.join("gateway-b.toml"));
    let (sock_a, sock_b) = (dir.join("a.sock"), dir.join("b.sock"));
    // The configs hold inline PSKs: the daemon refuses them unless 0600.
    write_atomic(&cfg_a, &config_a(&plugin, &sock_a))?;
    write_atomic(&cfg_b, &config_b(&plugin, &sock_b, &["a.wisp.test"]))?;
    let mut gw_b = start_gateway(&b, &exe, &cfg_b, &sock_b, &dir.join("b.log"))?;
    let mut gw_a = start_gateway(&a, &exe, &cfg_a, &sock_a, &dir.join("a.log"))?;
    println!("configs and logs in {}", dir.display());

    step(3, "wisp up site (on A)");
    let up = call(&sock_a, &Request::Up { name: "site".into(), timeout_secs: Some(20) }, Duration::from_secs(25))?;
    match &up {
        Ok(m) => println!("{m}"),
        Err(e) => bail!("tunnel did not come up: {e}\nA log:\n{}", tail(&dir.join("a.log"))),
    }
    check_interrupt()?;

    step(4, "ping 10.98.2.1 from 10.98.1.1 through the tunnel");
    let (ok, out) = ping(&a, "10.98.1.1", "10.98.2.1", 5)?;
    print!("{out}");
    if !ok {
        bail!("ping through the tunnel failed");
    }
    check_interrupt()?;

    step(5, "wisp status (on A)");
    match call(&sock_a, &Request::Status, Duration::from_secs(5))? {
        Ok(s) => print!("{s}"),
        Err(e) => bail!("status: {e}"),
    }

    step(6, "B's policy now denies a.wisp.test: new settings written (temp + rename), wisp reload");
    write_atomic(&cfg_b, &config_b(&plugin, &sock_b, &["someone-else.wisp.test"]))?;
    let reloaded = Instant::now();
    match call(&sock_b, &Request::Reload, Duration::from_secs(30))? {
        Ok(m) => println!("B: {m}"),
        Err(e) => bail!("reload on B failed: {e}"),
    }

    step(7, "B re-checks the live tunnel against the new policy: revoked, DELETE sent to A");
    let gone = wait_no_sa(&sock_a, Duration::from_secs(5))?;
    println!("A's tunnel to B is gone {} ms after the reload was requested", gone.saturating_duration_since(reloaded).as_millis());
    for (name, sock) in [("B", &sock_b), ("A", &sock_a)] {
        if let Ok(s) = call(sock, &Request::Status, Duration::from_secs(5))? {
            println!("wisp status ({name}):");
            print!("{s}");
        }
    }

    step(8, "no traffic passes any more, and a new negotiation (connection site2) is refused");
    let (ok, out) = ping(&a, "10.98.1.1", "10.98.2.1", 2)?;
    print!("{out}");
    if ok {
        bail!("pings still pass through the revoked tunnel");
    }
    match call(&sock_a, &Request::Up { name: "site2".into(), timeout_secs: Some(20) }, Duration::from_secs(25))? {
        Ok(m) => bail!("site2 came up although B's policy denies A: {m}"),
        Err(e) => println!("wisp up site2: {e}"),
    }

    if hold {
        println!("\nholding; Ctrl-C to clean up");
        while !INTERRUPTED.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    step(9, "clean up: SIGTERM to both gateways (DELETE to the peer), namespaces removed");
    let ca = gw_a.stop(Duration::from_secs(5));
    let cb = gw_b.stop(Duration::from_secs(5));
    println!("gateway A exited with {ca:?}, gateway B with {cb:?}");
    drop(a);
    drop(b);
    drop(cleanup_dir);
    println!("demo done");
    Ok(())
}

/// Waits until the gateway at `sock` holds no IKE SA; when that was seen.
fn wait_no_sa(sock: &Path, limit: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Response::Status { status }) = control::call(sock, &Request::Status, Some(Duration::from_secs(2))) {
            if status.connections.iter().all(|c| c.ike_sas.is_empty()) {
                return Ok(Instant::now());
            }
        }
        if Instant::now() > deadline {
            bail!("the revoked tunnel is still up after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

struct DirGuard(PathBuf);
impl Drop for DirGuard {
    fn drop(&mut self) {
        if std::env::var_os("WISP_DEMO_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
