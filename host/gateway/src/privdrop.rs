//! `[daemon] user`: run as an unprivileged user once the TUN device and the
//! sockets are open.
//!
//! What the daemon still needs after that, and how it gets it:
//!
//! - Routes (Child SAs, traps) and their removal at SIGTERM: rtnetlink
//!   requests, sent by the "wisp-netlink" thread, which alone keeps
//!   `CAP_NET_ADMIN` (see [`crate::netlink`]). Every other thread holds no
//!   capability at all. The TUN device goes away with its file descriptor.
//! - `wisp reload` re-reads the config, PSK and plugin files as that user:
//!   [`check_readable`] refuses to start when one of them would be unreadable
//!   (e.g. a root-owned 0600 PSK file), rather than failing at the first reload.
//!   Make them owned by the daemon's user (mode 0600 for secrets).
//! - The control socket stays open; its directory, when the daemon creates
//!   it, is owned by the user so the socket can be removed at exit.
//! - Nothing binds new privileged ports later (IKE and NAT-T sockets are
//!   bound once at start).

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nix::unistd::{Gid, Uid, User};

/// The user to become.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// Look the user up (before anything is opened: an unknown user is a start-up error).
pub fn resolve(name: &str) -> anyhow::Result<Target> {
    let u = User::from_name(name)
        .with_context(|| format!("looking up [daemon] user `{name}`"))?
        .ok_or_else(|| anyhow::anyhow!("[daemon] user `{name}` does not exist"))?;
    if u.uid.is_root() {
        anyhow::bail!("[daemon] user `{name}` is root: nothing to drop");
    }
    Ok(Target { name: u.name, uid: u.uid, gid: u.gid })
}

/// Could `t` read `path` (the file and the search permission on every
/// directory above it)?
fn readable_by(t: &Target, path: &Path) -> Result<(), String> {
    let abs = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let allowed = |m: &std::fs::Metadata, bit: u32| {
        let mode = m.permissions().mode();
        if m.uid() == t.uid.as_raw() {
            mode & (bit << 6) != 0
        } else if m.gid() == t.gid.as_raw() {
            mode & (bit << 3) != 0
        } else {
            mode & bit != 0
        }
    };
    for dir in abs.ancestors().skip(1) {
        let m = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !allowed(&m, 0o1) {
            return Err(format!("directory {} (owner uid {}, mode {:04o}) is not searchable", dir.display(), m.uid(), m.mode() & 0o7777));
        }
    }
    let m = std::fs::metadata(&abs).map_err(|e| format!("{}: {e}", abs.display()))?;
    if !allowed(&m, 0o4) {
        return Err(format!("{} (owner uid {}, mode {:04o}) is not readable", abs.display(), m.uid(), m.mode() & 0o7777));
    }
    Ok(())
}

/// Refuse to start when `wisp reload` would fail after the drop because a
/// file it re-reads is not readable by the target user.
pub fn check_readable(t: &Target, files: &[PathBuf]) -> anyhow::Result<()> {
    for f in files {
        if let Err(e) = readable_by(t, f) {
            anyhow::bail!(
                "[daemon] user = \"{}\": {e} by that user, so `wisp reload` could not re-read it after the privilege drop (make it owned by {}: chown {} FILE)",
                t.name,
                t.name,
                t.name
            );
        }
    }
    Ok(())
}

/// Become `t` (uid, gid, supplementary groups = its primary group only), then
/// narrow the netlink threads to `CAP_NET_ADMIN`. Checks every thread of the
/// process afterwards: a partial drop is an error.
pub fn drop_to(t: &Target) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("[daemon] user = \"{}\" needs the daemon to start as root", t.name);
    }
    // glibc applies these to every thread of the process (setxid broadcast).
    nix::unistd::setgroups(&[t.gid]).context("setgroups")?;
    nix::unistd::setresgid(t.gid, t.gid, t.gid).context("setresgid")?;
    nix::unistd::setresuid(t.uid, t.uid, t.uid).context("setresuid")?;
    let n = crate::netlink::restrict_all().context("keeping CAP_NET_ADMIN for the netlink thread")?;
    verify(t).context("after dropping privileges")?;
    tracing::info!(user = %t.name, uid = t.uid.as_raw(), netlink_threads = n, "privileges dropped: CAP_NET_ADMIN kept by the netlink thread only");
    Ok(())
}

/// One thread's `(comm, uids, gids, CapPrm, CapEff)`.
pub type ThreadCreds = (String, String, String, u64, u64);

/// Each thread's uid/gid and capabilities, from `/proc/self/task/*/status`.
pub fn threads() -> std::io::Result<Vec<ThreadCreds>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/task")? {
        let dir = e?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_string();
        let Ok(st) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        let field = |k: &str| st.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).unwrap_or_default();
        let hex = |k: &str| u64::from_str_radix(&field(k), 16).unwrap_or(u64::MAX);
        out.push((comm, field("Uid:"), field("Gid:"), hex("CapPrm:"), hex("CapEff:")));
    }
    Ok(out)
}

const NET_ADMIN: u64 = 1 << 12;

fn verify(t: &Target) -> anyhow::Result<()> {
    let want = |ids: &str, id: u32| ids.split_whitespace().all(|x| x == id.to_string());
    for (comm, uids, gids, prm, eff) in threads()? {
        if !want(&uids, t.uid.as_raw()) || !want(&gids, t.gid.as_raw()) {
            anyhow::bail!("thread {comm} still has uids {uids} gids {gids}");
        }
        let allowed = if comm == "wisp-netlink" { NET_ADMIN } else { 0 };
        if prm & !allowed != 0 || eff & !allowed != 0 {
            anyhow::bail!("thread {comm} still holds capabilities {prm:016x}/{eff:016x}");
        }
    }
    Ok(())
}
