//! strongSwan charon in a network namespace.
//!
//! Each instance gets its own mount namespace with a tmpfs on `/run` (charon
//! writes `/run/charon.pid`), a generated `strongswan.conf` (via
//! `STRONGSWAN_CONF`) with an explicit plugin list (kernel-libipsec before
//! kernel-netlink: userspace ESP over a TUN, since this kernel has no ESP), a
//! private vici socket and a file log. See `../shared/interop/STRONGSWAN.md`.

use crate::err;
use crate::netns::Netns;
use crate::proc::Proc;
use crate::sas::{parse_list_sas, IkeSaInfo};
use crate::swanctl::SwanctlConf;
use crate::util::{tail, wait_for, Result};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const CHARON: &str = "/usr/lib/ipsec/charon";

/// The plugin list that works with kernel-libipsec here.
pub const PLUGINS: &str = "random nonce openssl aes sha1 sha2 hmac kdf gcm chapoly curve25519 x509 pubkey pem pkcs1 pkcs8 mgf1 revocation constraints kernel-libipsec kernel-netlink socket-default vici";

/// How to configure a charon instance.
#[derive(Debug, Clone)]
pub struct CharonOptions {
    pub plugins: String,
    /// filelog levels per subsystem, e.g. `("ike", 4)` (4 logs key material).
    pub log_levels: Vec<(String, i32)>,
    /// Raw lines inserted into the `charon { }` section, e.g.
    /// `retransmit_tries = 2`.
    pub extra: Vec<String>,
    /// Raw lines after the `charon { }` section (other sections of
    /// strongswan.conf, e.g. `libtls { version_max = 1.3 }`).
    pub top: Vec<String>,
}

impl Default for CharonOptions {
    fn default() -> Self {
        CharonOptions {
            plugins: PLUGINS.into(),
            log_levels: vec![
                ("default".into(), 1),
                ("ike".into(), 2),
                ("cfg".into(), 2),
                ("chd".into(), 2),
                ("enc".into(), 1),
                ("net".into(), 1),
                ("knl".into(), 1),
            ],
            extra: vec![
                // fail fast in tests: 1 s, 1.8 backoff, 3 tries
                "retransmit_timeout = 1".into(),
                "retransmit_tries = 3".into(),
            ],
            top: Vec::new(),
        }
    }
}

impl CharonOptions {
    /// Levels that dump IKE and Child SA keys (`ike = 4`, `chd = 4`).
    pub fn with_keys() -> Self {
        let mut o = Self::default();
        o.set_level("ike", 4);
        o.set_level("chd", 4);
        o
    }

    pub fn set_level(&mut self, group: &str, level: i32) {
        match self.log_levels.iter_mut().find(|(g, _)| g == group) {
            Some(e) => e.1 = level,
            None => self.log_levels.push((group.into(), level)),
        }
    }

    pub fn render(&self, dir: &Path) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "charon {{");
        let _ = writeln!(s, "  load = {}", self.plugins);
        if !self.extra.iter().any(|l| l.trim_start().starts_with("install_virtual_ip")) {
            let _ = writeln!(s, "  install_virtual_ip = no");
        }
        for l in &self.extra {
            let _ = writeln!(s, "  {l}");
        }
        let _ = writeln!(s, "  plugins {{");
        let _ = writeln!(s, "    vici {{\n      socket = unix://{}/charon.vici\n    }}", dir.display());
        let _ = writeln!(s, "  }}");
        let _ = writeln!(s, "  filelog {{\n    main {{");
        let _ = writeln!(s, "      path = {}/charon.log", dir.display());
        let _ = writeln!(s, "      time_format = %H:%M:%S\n      flush_line = yes\n      append = no");
        for (g, l) in &self.log_levels {
            let _ = writeln!(s, "      {g} = {l}");
        }
        let _ = writeln!(s, "    }}\n  }}");
        let _ = writeln!(s, "  syslog {{\n    identifier = charon-test\n    daemon {{\n      default = -1\n    }}\n  }}");
        let _ = writeln!(s, "}}");
        for l in &self.top {
            let _ = writeln!(s, "{l}");
        }
        s
    }
}

/// A running charon. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct Charon {
    ns: String,
    dir: PathBuf,
    proc: Proc,
}

impl Charon {
    /// Start charon inside `ns`, with its files in `dir` (must exist), and wait
    /// until its vici socket answers.
    pub fn start(ns: &Netns, dir: &Path, opts: &CharonOptions) -> Result<Charon> {
        let conf = dir.join("strongswan.conf");
        std::fs::write(&conf, opts.render(dir))?;
        let stdout = std::fs::File::create(dir.join("charon.stdout"))?;
        let stderr = stdout.try_clone()?;
        let script = format!("mount -t tmpfs tmpfs /run && exec env STRONGSWAN_CONF={} {CHARON}", conf.display());
        let child = ns
            .command("unshare")
            .args(["-m", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| err!("spawn charon: {e}"))?;
        let mut c = Charon { ns: ns.name().into(), dir: dir.into(), proc: Proc::new(child, "charon") };
        let sock = dir.join("charon.vici");
        let ready = wait_for(Duration::from_secs(10), || {
            if !c.proc.is_running() {
                return Some(false);
            }
            (sock.exists() && c.swanctl(&["--stats"]).map(|o| o.status.success()).unwrap_or(false)).then_some(true)
        });
        if ready != Some(true) {
            return Err(err!(
                "charon in {} did not come up\nstdout: {}\nlog: {}",
                c.ns,
                tail(&dir.join("charon.stdout"), 20),
                tail(&dir.join("charon.log"), 20)
            ));
        }
        Ok(c)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("charon.log")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log_path(), n)
    }

    pub fn vici_uri(&self) -> String {
        format!("unix://{}/charon.vici", self.dir.display())
    }

    /// Run `swanctl <op> <args> --uri <ours>` (from the root namespace: the vici
    /// socket is a filesystem socket). Returns the raw output.
    pub fn swanctl(&self, args: &[&str]) -> Result<Output> {
        let (op, rest) = args.split_first().ok_or_else(|| err!("swanctl: no operation"))?;
        Command::new("swanctl")
            .arg(op)
            .args(rest)
            .arg("--uri")
            .arg(self.vici_uri())
            .env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"))
            // Credentials (private/, x509crl/) from this charon's directory.
            .env("SWANCTL_DIR", &self.dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err!("spawn swanctl: {e}"))
    }

    /// Like [`Charon::swanctl`] but an error (with output and log tail) on failure.
    pub fn swanctl_ok(&self, args: &[&str]) -> Result<String> {
        let o = self.swanctl(args)?;
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        if !o.status.success() {
            return Err(err!(
                "swanctl {} failed ({})\n{}{}\ncharon log:\n{}",
                args.join(" "),
                o.status,
                out,
                String::from_utf8_lossy(&o.stderr),
                self.log_tail(30)
            ));
        }
        Ok(out)
    }

    /// Write `conf` as `swanctl.conf` and load it (connections and secrets).
    pub fn load(&self, conf: &SwanctlConf) -> Result<()> {
        let path = self.dir.join("swanctl.conf");
        std::fs::write(&path, conf.render())?;
        for (sub, files) in [("x509crl", &conf.crls), ("private", &conf.private_keys)] {
            let dir = self.dir.join(sub);
            std::fs::create_dir_all(&dir)?;
            for (i, c) in files.iter().enumerate() {
                std::fs::copy(c, dir.join(format!("{sub}{i}.pem")))?;
            }
        }
        let p = path.display().to_string();
        self.swanctl_ok(&["--load-all", "--file", &p]).map(|_| ())
    }

    /// `swanctl --initiate --child NAME` (blocks until done or `timeout_s`).
    pub fn initiate_child(&self, child: &str, timeout_s: u32) -> Result<String> {
        let t = timeout_s.to_string();
        self.swanctl_ok(&["--initiate", "--child", child, "--timeout", &t])
    }

    /// `swanctl --initiate --ike NAME` (IKE SA and all its children).
    pub fn initiate_ike(&self, ike: &str, timeout_s: u32) -> Result<String> {
        let t = timeout_s.to_string();
        self.swanctl_ok(&["--initiate", "--ike", ike, "--timeout", &t])
    }

    pub fn terminate_ike(&self, ike: &str) -> Result<String> {
        self.swanctl_ok(&["--terminate", "--ike", ike, "--timeout", "10"])
    }

    pub fn terminate_child(&self, child: &str) -> Result<String> {
        self.swanctl_ok(&["--terminate", "--child", child, "--timeout", "10"])
    }

    /// Rekey the Child SA `child` (name; all matching). Asynchronous in charon.
    pub fn rekey_child(&self, child: &str) -> Result<String> {
        self.swanctl_ok(&["--rekey", "--child", child])
    }

    pub fn rekey_ike(&self, ike: &str) -> Result<String> {
        self.swanctl_ok(&["--rekey", "--ike", ike])
    }

    /// `swanctl --list-sas --raw`, parsed.
    pub fn list_sas(&self) -> Result<Vec<IkeSaInfo>> {
        let out = self.swanctl_ok(&["--list-sas", "--raw"])?;
        parse_list_sas(&out)
    }

    /// Wait until `pred` holds for the SA list (polling every 50 ms).
    pub fn wait_sas(&self, timeout: Duration, mut pred: impl FnMut(&[IkeSaInfo]) -> bool) -> Result<Vec<IkeSaInfo>> {
        let mut last = Vec::new();
        let r = wait_for(timeout, || match self.list_sas() {
            Ok(s) if pred(&s) => Some(s),
            Ok(s) => {
                last = s;
                None
            }
            Err(_) => None,
        });
        r.ok_or_else(|| err!("charon SAs did not reach the expected state in {timeout:?}; last: {last:#?}\nlog:\n{}", self.log_tail(40)))
    }

    /// SIGKILL (no DELETE sent): the peer sees a dead gateway.
    pub fn kill_hard(&mut self) {
        self.proc.kill_hard();
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// Orderly shutdown (SIGTERM; charon deletes its SAs).
    pub fn stop(&mut self) {
        self.proc.stop(Duration::from_secs(3));
    }
}
