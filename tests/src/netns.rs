//! Network namespaces and veth pairs, removed on drop.
//!
//! Commands run inside a namespace through `ip netns exec`; Rust code runs inside
//! one through [`Netns::run`] / [`Netns::enter_current_thread`], which `setns(2)` a
//! thread (only that thread moves; sockets it creates stay in the namespace and
//! may be used from any thread afterwards).

use crate::err;
use crate::util::{unique_name, Result};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};

/// A named network namespace (`ip netns add`), deleted on drop together with its
/// interfaces. Processes still inside it at drop are killed by pid.
pub struct Netns {
    name: String,
}

fn run_checked(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| err!("{what}: spawn: {e}"))?;
    if !out.status.success() {
        return Err(err!(
            "{what}: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip` by absolute path (never through `PATH`).
pub fn ip_program() -> std::path::PathBuf {
    ["/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip", "/bin/ip"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| std::path::PathBuf::from("/usr/sbin/ip"))
}

impl Netns {
    /// Create a namespace named by [`unique_name`]`(tag)`, with `lo` up.
    pub fn new(tag: &str) -> Result<Netns> {
        let name = unique_name(tag);
        let mut c = Command::new(ip_program());
        c.args(["netns", "add", &name]);
        run_checked(c, &format!("ip netns add {name}"))?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME <args>`; error with stderr on failure.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new(ip_program());
        c.arg("-n").arg(&self.name).args(args);
        run_checked(c, &format!("ip -n {} {}", self.name, args.join(" ")))
    }

    /// A `Command` that runs `prog` inside the namespace (`ip netns exec`).
    pub fn command(&self, prog: &str) -> Command {
        let mut c = Command::new(ip_program());
        c.args(["netns", "exec", &self.name, prog]);
        c
    }

    /// Run `prog args` inside the namespace, return stdout, error on non-zero exit.
    pub fn exec(&self, prog: &str, args: &[&str]) -> Result<String> {
        let mut c = self.command(prog);
        c.args(args);
        run_checked(c, &format!("[{}] {prog} {}", self.name, args.join(" ")))
    }

    /// Run inside the namespace, returning the raw output whatever the exit code.
    pub fn output(&self, prog: &str, args: &[&str]) -> Result<Output> {
        let mut c = self.command(prog);
        c.args(args).stdin(Stdio::null());
        c.output().map_err(|e| err!("[{}] {prog}: spawn: {e}", self.name))
    }

    /// Add an address (`10.1.0.1/32`) to `dev` in this namespace.
    pub fn addr_add(&self, dev: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "add", cidr, "dev", dev]).map(|_| ())
    }

    pub fn link_up(&self, dev: &str) -> Result<()> {
        self.ip(&["link", "set", dev, "up"]).map(|_| ())
    }

    /// Move the calling thread into this namespace (for the thread's lifetime).
    pub fn enter_current_thread(&self) -> Result<()> {
        let path = format!("/run/netns/{}", self.name);
        let f = std::fs::File::open(&path).map_err(|e| err!("open {path}: {e}"))?;
        // SAFETY: setns on a valid open namespace fd; affects only this thread.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(err!("setns {path}: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Run `f` on a fresh thread inside this namespace and return its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let h = self.spawn(f)?;
        h.join().map_err(|_| err!("thread in {} panicked", self.name))
    }

    /// Spawn a thread inside this namespace.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<std::thread::JoinHandle<T>> {
        let path = format!("/run/netns/{}", self.name);
        let file = std::fs::File::open(&path).map_err(|e| err!("open {path}: {e}"))?;
        let (tx, rx) = std::sync::mpsc::channel::<Result<()>>();
        let name = self.name.clone();
        let h = std::thread::Builder::new()
            .name(format!("ns-{name}"))
            .spawn(move || {
                // SAFETY: as in enter_current_thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                drop(file);
                if rc != 0 {
                    let _ = tx.send(Err(err!("setns {name}: {}", std::io::Error::last_os_error())));
                    // Still must return a T: park here is not possible; panic is
                    // reported as a join error by callers after the Err below.
                    panic!("setns failed");
                }
                let _ = tx.send(Ok(()));
                f()
            })
            .map_err(|e| err!("spawn thread: {e}"))?;
        rx.recv().map_err(|_| err!("thread for {} died", self.name))??;
        Ok(h)
    }

    /// Pids of processes whose network namespace is this one.
    pub fn pids(&self) -> Vec<i32> {
        let mut c = Command::new(ip_program());
        c.args(["netns", "pids", &self.name]);
        run_checked(c, "ip netns pids").unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Anything still inside was started by this test (the namespace is ours).
        for pid in self.pids() {
            // SAFETY: kill(2) by pid of a process inside our private namespace.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = Command::new(ip_program())
            .args(["netns", "del", &self.name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Create a veth pair: `a_if` in `a`, `b_if` in `b`. The interfaces are created
/// directly inside the namespaces (no name clash in the root namespace) and go
/// away with them.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) -> Result<()> {
    a.ip(&["link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name()])?;
    a.link_up(a_if)?;
    b.link_up(b_if)?;
    Ok(())
}

/// The usual topology: two gateway namespaces joined by a veth pair.
///
/// `left` has outer address 10.99.0.1/24 on `wv0`, `right` 10.99.0.2/24. Inner
/// ("protected network") addresses are added on `lo` by the caller, by
/// convention 10.1.x.y on the left and 10.2.x.y on the right.
pub struct Pair {
    pub left: Netns,
    pub right: Netns,
}

impl Pair {
    pub const LEFT_OUTER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
    pub const RIGHT_OUTER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
    pub const IFACE: &'static str = "wv0";

    pub fn new(tag: &str) -> Result<Pair> {
        let left = Netns::new(tag)?;
        let right = Netns::new(tag)?;
        veth(&left, Self::IFACE, &right, Self::IFACE)?;
        left.addr_add(Self::IFACE, "10.99.0.1/24")?;
        right.addr_add(Self::IFACE, "10.99.0.2/24")?;
        Ok(Pair { left, right })
    }

    /// Also add inner addresses (`/32` on `lo`) to each side.
    pub fn with_inner(tag: &str, left_inner: &[&str], right_inner: &[&str]) -> Result<Pair> {
        let p = Pair::new(tag)?;
        for a in left_inner {
            p.left.addr_add("lo", a)?;
        }
        for a in right_inner {
            p.right.addr_add("lo", a)?;
        }
        Ok(p)
    }
}
