//! Minimal network-namespace helpers for `wisp demo` (the test suites use the
//! richer `wisp-testbed` crate). Everything created is removed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// Absolute path of a system program from the usual directories, never
/// looked up through `PATH` (falls back to `/usr/sbin/NAME`, which then fails
/// clearly when spawned).
pub fn system_program(name: &str) -> std::path::PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| std::path::Path::new("/usr/sbin").join(name))
}

fn ip() -> Command {
    Command::new(system_program("ip"))
}

/// Run a command, error with its stderr on failure; returns stdout.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A named network namespace, deleted (with its processes killed) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> anyhow::Result<Netns> {
        run(ip().args(["netns", "add", name]))?;
        let ns = Netns { name: name.to_string() };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        run(ip().arg("-n").arg(&self.name).args(args))
    }

    /// A command running inside the namespace.
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = ip();
        let prog = if prog.contains('/') { std::path::PathBuf::from(prog) } else { system_program(prog) };
        c.args(["netns", "exec", &self.name]).arg(prog);
        c
    }

    fn pids(&self) -> Vec<i32> {
        run(ip().args(["netns", "pids", &self.name]))
            .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            // SAFETY: plain kill(2) on a pid that lives in our namespace.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = ip().args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// Join `a` and `b` with a veth pair (`a_if` in `a`, `b_if` in `b`), both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> anyhow::Result<()> {
    run(ip().args(["link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns", &b.name]))?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// A child process stopped with SIGTERM (then SIGKILL) on drop.
pub struct Daemon {
    pub child: Child,
    pub what: String,
}

impl Daemon {
    /// SIGTERM and wait up to `grace`; SIGKILL after that. Returns the exit code.
    pub fn stop(&mut self, grace: Duration) -> Option<i32> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return st.code();
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let t0 = Instant::now();
        while t0.elapsed() < grace {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}
