//! The control protocol: JSON lines over a unix stream socket.
//!
//! The client writes one [`Request`] line; the daemon answers with one
//! [`Response`] line and closes. `up` answers only when the IKE SA and its first
//! Child SA are established or the negotiation failed (or the client's timeout).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _, AsyncReadExt as _};

use crate::status::Status;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Up { name: String, timeout_secs: Option<u64> },
    Down { name: String },
    Rekey { name: String, ike: bool, child: Option<String> },
    Status,
    Reload,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Ok { message: String },
    Status { status: Box<Status> },
    Error { message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the wisp daemon at {path}: {source} (is `wisp run` running? use --control PATH)")]
    Connect { path: String, source: std::io::Error },
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed answer from the daemon: {0}")]
    Malformed(String),
}

/// Send one request and wait for the answer.
pub fn call(path: &Path, req: &Request, timeout: Option<Duration>) -> Result<Response, ClientError> {
    let mut s = UnixStream::connect(path).map_err(|e| ClientError::Connect { path: path.display().to_string(), source: e })?;
    s.set_read_timeout(timeout)?;
    let mut line = serde_json::to_string(req).map_err(|e| ClientError::Malformed(e.to_string()))?;
    line.push('\n');
    // The daemon may answer (and close) before reading, e.g. "permission
    // denied": read its answer even when our write failed.
    let wrote = s.write_all(line.as_bytes());
    let mut r = BufReader::new(s);
    let mut answer = String::new();
    let read = r.read_line(&mut answer);
    if answer.is_empty() {
        wrote?;
        read?;
        return Err(ClientError::Malformed("daemon closed the connection without an answer".into()));
    }
    serde_json::from_str(&answer).map_err(|e| ClientError::Malformed(format!("{e}: {answer}")))
}

/// Longest request line the daemon reads (the newline included).
pub const MAX_REQUEST: usize = 64 * 1024;
/// A client must send its whole request line within this time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Control clients served at once; more are answered "busy" and closed.
pub const MAX_CLIENTS: usize = 16;

/// Who may use the control socket: root, the daemon's own user, and with
/// `[control] group` the members of that group (primary or listed in the
/// group database).
#[derive(Debug, Clone)]
pub struct Access {
    pub group: Option<nix::unistd::Group>,
    /// The daemon's effective uid when it checks (after any privilege drop).
    pub own_uid: u32,
}

impl Access {
    /// Resolve `[control] group`; an unknown group is an error.
    pub fn new(group: Option<&str>) -> anyhow::Result<Access> {
        let group = match group {
            Some(name) => Some(
                nix::unistd::Group::from_name(name)
                    .with_context(|| format!("looking up control group `{name}`"))?
                    .ok_or_else(|| anyhow::anyhow!("[control] group `{name}` does not exist"))?,
            ),
            None => None,
        };
        Ok(Access { group, own_uid: nix::unistd::geteuid().as_raw() })
    }

    /// May a peer with these credentials (from `SO_PEERCRED`) talk to us?
    pub fn allows(&self, uid: u32, gid: u32) -> Result<(), String> {
        if uid == 0 || uid == self.own_uid {
            return Ok(());
        }
        if let Some(g) = &self.group {
            if gid == g.gid.as_raw() || user_in_group(uid, g) {
                return Ok(());
            }
            return Err(format!("uid {uid} (gid {gid}) is neither root nor in group {}", g.name));
        }
        Err(format!("uid {uid} is not root (set [control] group to allow others)"))
    }
}

fn user_in_group(uid: u32, g: &nix::unistd::Group) -> bool {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else { return false };
    if g.mem.contains(&user.name) || user.gid == g.gid {
        return true;
    }
    false
}

/// Daemon-wide control socket counters, for `wisp status`.
#[derive(Default)]
pub struct Counters {
    pub refused_peer: AtomicU64,
    pub too_long: AtomicU64,
    pub timed_out: AtomicU64,
    pub busy: AtomicU64,
}

impl Counters {
    pub fn list(&self) -> Vec<(String, u64)> {
        vec![
            ("control_refused_peer".into(), self.refused_peer.load(Relaxed)),
            ("control_request_too_long".into(), self.too_long.load(Relaxed)),
            ("control_timed_out".into(), self.timed_out.load(Relaxed)),
            ("control_busy".into(), self.busy.load(Relaxed)),
        ]
    }
}

/// Why a request line was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The client closed without sending anything.
    Closed,
    TooLong,
    TimedOut,
    Io(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => f.write_str("client closed without a request"),
            ReadError::TooLong => write!(f, "request line longer than {} KiB: refused", MAX_REQUEST / 1024),
            ReadError::TimedOut => f.write_str("no complete request line in time: closed"),
            ReadError::Io(e) => write!(f, "reading the request: {e}"),
        }
    }
}

/// Read one request line: at most [`MAX_REQUEST`] bytes, within `timeout`
/// for the whole line (a client trickling bytes is cut off all the same).
pub async fn read_request<R: AsyncBufRead + Unpin>(r: R, timeout: Duration) -> Result<String, ReadError> {
    let mut buf = Vec::new();
    let mut limited = r.take(MAX_REQUEST as u64);
    let read = tokio::time::timeout(timeout, limited.read_until(b'\n', &mut buf)).await;
    match read {
        Err(_) => Err(ReadError::TimedOut),
        Ok(Err(e)) => Err(ReadError::Io(e.to_string())),
        Ok(Ok(0)) => Err(ReadError::Closed),
        Ok(Ok(_)) if buf.last() != Some(&b'\n') && buf.len() >= MAX_REQUEST => Err(ReadError::TooLong),
        Ok(Ok(_)) => String::from_utf8(buf).map_err(|_| ReadError::Io("request is not UTF-8".into())),
    }
}

/// Create the control socket at `path`: its directory (if missing) 0750, the
/// socket 0600, or 0660 with group `group`. An existing socket nobody listens
/// on is replaced; anything else at `path` is refused and left alone.
pub fn bind(path: &Path, group: Option<&nix::unistd::Group>, dir_owner: Option<nix::unistd::Uid>) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o750).create(dir).with_context(|| format!("creating {}", dir.display()))?;
            // The umask may have taken bits away; and say exactly what we mean.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
                .with_context(|| format!("chmod 0750 {}", dir.display()))?;
            let gid = group.map(|g| g.gid);
            if gid.is_some() || dir_owner.is_some() {
                // The daemon's user owns it (so it can remove its socket at
                // exit), the control group may enter it.
                nix::unistd::chown(dir, dir_owner, gid).with_context(|| format!("chown {}", dir.display()))?;
            }
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            // A stale socket from a crashed daemon, or a live one: refuse the latter.
            if UnixStream::connect(path).is_ok() {
                anyhow::bail!("another wisp daemon is listening on {}", path.display());
            }
            std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
        }
        Ok(m) => anyhow::bail!(
            "{} exists and is not a socket ({}): refusing to replace it (remove it or choose another control_socket)",
            path.display(),
            kind(&m.file_type())
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", path.display())),
    }
    // No moment where the socket is more open than it will be.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l = l.with_context(|| format!("binding control socket {}", path.display()))?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {mode:o} {}", path.display()))?;
    if let Some(g) = group {
        nix::unistd::chown(path, None, Some(g.gid)).with_context(|| format!("chown :{} {}", g.name, path.display()))?;
    }
    Ok(l)
}

fn kind(t: &std::fs::FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else if t.is_fifo() {
        "a FIFO"
    } else {
        "a device"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable() {
        let r = Request::Up { name: "b".into(), timeout_secs: Some(5) };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"cmd":"up","name":"b","timeout_secs":5}"#);
        let back: Request = serde_json::from_str(r#"{"cmd":"status"}"#).unwrap();
        assert_eq!(back, Request::Status);
        let e = Response::Error { message: "AUTHENTICATION_FAILED".into() };
        let s = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Response>(&s).unwrap(), e);
    }
}

#[cfg(test)]
mod server_tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test]
    async fn control_request_over_64k_is_refused() {
        let (mut client, server) = tokio::io::duplex(128 << 10);
        // 1 MiB without a newline: refused after reading at most 64 KiB.
        let big = vec![b'x'; 1 << 20];
        let writer = tokio::spawn(async move {
            let _ = client.write_all(&big).await;
            client
        });
        let mut r = tokio::io::BufReader::new(server);
        let e = read_request(&mut r, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e, ReadError::TooLong);
        assert!(e.to_string().contains("64 KiB"), "{e}");
        // The rest was never consumed: the writer is blocked on the full pipe.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!writer.is_finished(), "the daemon read past the cap");
        writer.abort();

        // Exactly at the cap (newline included) is fine.
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut line = serde_json::to_string(&Request::Status).unwrap();
        line.push_str(&" ".repeat(MAX_REQUEST - line.len() - 1));
        line.push('\n');
        client.write_all(line.as_bytes()).await.unwrap();
        let got = read_request(tokio::io::BufReader::new(server), Duration::from_secs(5)).await.unwrap();
        assert_eq!(serde_json::from_str::<Request>(&got).unwrap(), Request::Status);
    }

    #[tokio::test]
    async fn control_slowloris_times_out() {
        let (mut client, server) = tokio::io::duplex(1024);
        // A byte every 50 ms never makes a line within the 300 ms budget,
        // although every single read makes progress.
        let trickle = tokio::spawn(async move {
            for b in br#"{"cmd":"status"}"#.iter().cycle().take(200) {
                if client.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let t = std::time::Instant::now();
        let e = read_request(tokio::io::BufReader::new(server), Duration::from_millis(300)).await.unwrap_err();
        assert_eq!(e, ReadError::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        trickle.abort();
    }

    #[test]
    fn control_path_not_a_socket_is_not_unlinked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wisp.sock");
        std::fs::write(&p, "precious").unwrap();
        let e = bind(&p, None, None).unwrap_err().to_string();
        assert!(e.contains("not a socket") && e.contains("regular file"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "precious");
        // A symbolic link (even to a socket) is not followed or removed either.
        let target = dir.path().join("real.sock");
        let _l = UnixListener::bind(&target).unwrap();
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = bind(&link, None, None).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        // A directory neither.
        let d = dir.path().join("d.sock");
        std::fs::create_dir(&d).unwrap();
        assert!(bind(&d, None, None).unwrap_err().to_string().contains("directory"));
        assert!(d.is_dir());
    }

    #[test]
    fn control_socket_0600_in_new_dir_0750_stale_socket_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("run/wisp/wisp.sock");
        let l = bind(&p, None, None).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o750);
        // Live: refused, and still there.
        let e = bind(&p, None, None).unwrap_err().to_string();
        assert!(e.contains("another wisp daemon"), "{e}");
        drop(l);
        // Stale: replaced.
        let _l = bind(&p, None, None).unwrap();
        assert_eq!(mode(&p), 0o600);
    }

    #[test]
    fn control_peer_credentials_checked() {
        let root_only = Access { group: None, own_uid: 0 };
        assert!(root_only.allows(0, 0).is_ok());
        let e = root_only.allows(65534, 65534).unwrap_err();
        assert!(e.contains("65534"), "{e}");
        let dropped = Access { group: None, own_uid: 1234 };
        assert!(dropped.allows(1234, 1234).is_ok(), "the daemon's own user");
        assert!(dropped.allows(1235, 1234).is_err());
        let g =
            nix::unistd::Group { name: "wispctl".into(), passwd: Default::default(), gid: nix::unistd::Gid::from_raw(4242), mem: vec![] };
        let grp = Access { group: Some(g), own_uid: 0 };
        assert!(grp.allows(5000, 4242).is_ok(), "primary group");
        assert!(grp.allows(5000, 4243).unwrap_err().contains("wispctl"));
    }
}
