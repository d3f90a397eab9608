//! `[daemon] dns_hook`: a program the user names, told about the DNS
//! servers a gateway handed us with our virtual IPs (`vips`), so that it can
//! write them where this host's resolver looks (resolv.conf, resolvconf,
//! systemd-resolved's `resolvectl`). wisp itself changes no resolver state.
//!
//! Called as `HOOK up` when our first virtual IP of a connection goes on the
//! TUN device, and `HOOK down` when the last comes off (a reauthentication
//! that keeps the address calls neither), with only these variables in its
//! environment:
//!
//! | variable | value |
//! |---|---|
//! | `WISP_CONNECTION` | the connection's name |
//! | `WISP_TUN` | the TUN device |
//! | `WISP_VIPS` | our virtual IPs, space-separated |
//! | `WISP_DNS` | the DNS servers, space-separated (may be empty) |
//! | `PATH` | `/usr/sbin:/usr/bin:/sbin:/bin` |
//!
//! Calls run one at a time, in order, on a thread of their own (the IKE
//! drivers never wait for one); each gets [`TIMEOUT`] and is killed after
//! it. At most [`QUEUE`] calls wait; more are dropped and counted. The
//! program must be a regular executable file that neither group nor others
//! may write, owned by root or by the user wisp runs as (it runs with
//! wisp's privileges).

use std::io::Read as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one call may run.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Calls waiting at most.
pub const QUEUE: usize = 64;
/// Output of a call kept for the log.
const OUTPUT: usize = 2048;

struct Call {
    path: PathBuf,
    action: &'static str,
    conn: String,
    vips: Vec<IpAddr>,
    dns: Vec<IpAddr>,
}

/// The hook and its worker.
pub struct DnsHook {
    path: Mutex<Option<PathBuf>>,
    tun: String,
    tx: SyncSender<Call>,
    dropped: AtomicU64,
    failed: Arc<AtomicU64>,
}

impl DnsHook {
    /// A hook for TUN device `tun` (none configured yet: calls do nothing).
    pub fn new(tun: &str, path: Option<PathBuf>) -> Arc<DnsHook> {
        let (tx, rx) = sync_channel::<Call>(QUEUE);
        let failed = Arc::new(AtomicU64::new(0));
        let f = failed.clone();
        let tun_name = tun.to_string();
        let spawned = std::thread::Builder::new().name("wisp-dns-hook".into()).spawn(move || {
            for call in rx {
                match run(&call, &tun_name) {
                    Ok(out) => {
                        tracing::info!(conn = %call.conn, hook = %call.path.display(), output = %out, "dns_hook {} done", call.action)
                    }
                    Err(e) => {
                        f.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(conn = %call.conn, hook = %call.path.display(), "dns_hook {}: {e}", call.action);
                    }
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!("dns_hook: no worker thread ({e}); the hook is not called");
        }
        Arc::new(DnsHook { path: Mutex::new(path), tun: tun.to_string(), tx, dropped: AtomicU64::new(0), failed })
    }

    /// The program to call (a reload may change it).
    pub fn set_path(&self, path: Option<PathBuf>) {
        *self.path.lock().unwrap_or_else(|p| p.into_inner()) = path;
    }

    /// Queues `HOOK action` for connection `conn`.
    pub fn call(&self, action: &'static str, conn: &str, vips: &[IpAddr], dns: &[IpAddr]) {
        let Some(path) = self.path.lock().unwrap_or_else(|p| p.into_inner()).clone() else { return };
        let call = Call { path, action, conn: conn.to_string(), vips: vips.to_vec(), dns: dns.to_vec() };
        match self.tx.try_send(call) {
            Ok(()) => {}
            Err(TrySendError::Full(c)) | Err(TrySendError::Disconnected(c)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(conn = %c.conn, tun = %self.tun, "dns_hook {}: {QUEUE} calls already wait, dropped", c.action);
            }
        }
    }

    /// Calls dropped (queue full) and calls that failed (exit status, timeout).
    pub fn counters(&self) -> (u64, u64) {
        (self.dropped.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

fn list(a: &[IpAddr]) -> String {
    a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ")
}

/// Runs one call: its output (stdout and stderr, cut to [`OUTPUT`]), or why it failed.
fn run(c: &Call, tun: &str) -> Result<String, String> {
    check_hook(&c.path)?;
    let mut child = std::process::Command::new(&c.path)
        .arg(c.action)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("WISP_CONNECTION", &c.conn)
        .env("WISP_TUN", tun)
        .env("WISP_VIPS", list(&c.vips))
        .env("WISP_DNS", list(&c.dns))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run: {e}"))?;
    // Drain both pipes on threads so that a chatty hook cannot block on them.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut r) = r {
                let mut buf = [0u8; 4096];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let room = OUTPUT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
            kept
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>));
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() >= TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {TIMEOUT:?}: killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for it: {e}")),
        }
    };
    let mut text = out.join().unwrap_or_default();
    text.extend(err.join().unwrap_or_default());
    let text = String::from_utf8_lossy(&text).trim().replace('\n', " | ");
    if status.success() {
        Ok(text)
    } else {
        Err(format!("{status}: {text}"))
    }
}

/// The rules for the program (see the module docs); the error says which
/// one is broken.
pub fn check_hook(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    if !path.is_absolute() {
        return Err(format!("{} is not an absolute path", path.display()));
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o111 == 0 {
        return Err(format!("{} is not executable (mode {mode:04o})", path.display()));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} has mode {mode:04o}: group or others may change what wisp runs: refused (chmod go-w {})",
            path.display(),
            path.display()
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!("{} is owned by uid {}, neither root nor wisp's user", path.display(), meta.uid()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn script(dir: &Path, body: &str, mode: u32) -> PathBuf {
        let p = dir.join("hook");
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    fn wait_for(f: &Path, want: &str) -> String {
        for _ in 0..250 {
            let s = std::fs::read_to_string(f).unwrap_or_default();
            if s.contains(want) {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::read_to_string(f).unwrap_or_default()
    }

    #[test]
    fn up_and_down_with_the_environment_only() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let p = script(
            d.path(),
            &format!("echo \"$1 $WISP_CONNECTION $WISP_TUN [$WISP_VIPS] [$WISP_DNS] home=$HOME\" >> {}", out.display()),
            0o755,
        );
        let h = DnsHook::new("wisp0", Some(p));
        let v: Vec<IpAddr> = vec!["10.4.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
        let dns: Vec<IpAddr> = vec!["10.2.0.53".parse().unwrap()];
        h.call("up", "office", &v, &dns);
        h.call("down", "office", &v, &dns);
        let s = wait_for(&out, "down");
        assert_eq!(s, "up office wisp0 [10.4.0.1 fd00::1] [10.2.0.53] home=\ndown office wisp0 [10.4.0.1 fd00::1] [10.2.0.53] home=\n");
        assert_eq!(h.counters(), (0, 0));
    }

    #[test]
    fn unsafe_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "true", 0o775);
        assert!(check_hook(&p).unwrap_err().contains("mode 0775"));
        let p = script(d.path(), "true", 0o644);
        assert!(check_hook(&p).unwrap_err().contains("not executable"));
        assert!(check_hook(Path::new("hook")).unwrap_err().contains("not an absolute path"));
        assert!(check_hook(d.path()).unwrap_err().contains("not a regular file"));
        let p = script(d.path(), "true", 0o700);
        assert!(check_hook(&p).is_ok());
    }

    #[test]
    fn failures_and_hangs_are_counted_not_waited_for() {
        let d = tempfile::tempdir().unwrap();
        let p = script(d.path(), "echo no >&2; exit 3", 0o755);
        let h = DnsHook::new("wisp0", Some(p));
        let t = Instant::now();
        h.call("up", "c", &[], &[]);
        assert!(t.elapsed() < Duration::from_millis(200), "the caller does not wait");
        for _ in 0..250 {
            if h.counters().1 == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(h.counters(), (0, 1));
        // A full queue drops and counts: a hook that sleeps, QUEUE + 5 calls.
        let p = script(d.path(), "sleep 0.5", 0o755);
        h.set_path(Some(p));
        for _ in 0..QUEUE + 5 {
            h.call("up", "c", &[], &[]);
        }
        assert!(h.counters().0 >= 4, "{:?}", h.counters());
    }
}
