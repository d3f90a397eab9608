//! The `wisp` gateway daemon in a namespace, and its CLI.
//!
//! The binary is located by [`wisp_bin`]: `$WISP_BIN` (set by `scripts/test.sh`),
//! else `$CARGO_TARGET_DIR/debug/wisp`, else `<workspace>/target/debug/wisp`.

use crate::netns::Netns;
use crate::proc::Proc;
use crate::util::{tail, wait_for, Result};
use crate::err;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Path of the `wisp` binary, or an error saying how to build it.
pub fn wisp_bin() -> Result<PathBuf> {
    let mut tried = Vec::new();
    if let Ok(p) = std::env::var("WISP_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p);
    }
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        let p = PathBuf::from(t).join("debug/wisp");
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p);
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let p = ws.join("target/debug/wisp");
    if p.is_file() {
        return Ok(p);
    }
    tried.push(p);
    // The test binary itself lives in <target>/debug/deps/: look next to it.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(p) = exe.parent().and_then(|d| d.parent()).map(|d| d.join("wisp")) {
            if p.is_file() {
                return Ok(p);
            }
            tried.push(p);
        }
    }
    Err(err!(
        "wisp binary not found (tried {tried:?}); build it with `cargo build -p wisp --bins` or set WISP_BIN"
    ))
}

/// A `wisp run` daemon inside a namespace, with its config, control socket and
/// log in `dir`. Stopped (SIGTERM → DELETE to peers) on drop.
pub struct WispDaemon {
    ns: String,
    dir: PathBuf,
    bin: PathBuf,
    proc: Proc,
}

impl WispDaemon {
    /// Write `config` to `dir/wisp.toml` and start `wisp run -c .. --control ..`.
    /// Waits for the control socket to answer `status`.
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> Result<WispDaemon> {
        let bin = wisp_bin()?;
        let cfg = dir.join("wisp.toml");
        std::fs::write(&cfg, config)?;
        Self::start_with(ns, dir, &bin)
    }

    /// Start again with the config already in `dir/wisp.toml` (restart tests).
    pub fn start_with(ns: &Netns, dir: &Path, bin: &Path) -> Result<WispDaemon> {
        let cfg = dir.join("wisp.toml");
        let sock = dir.join("wisp.sock");
        let _ = std::fs::remove_file(&sock);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("wisp.log"))?;
        let log2 = log.try_clone()?;
        let rust_log = std::env::var("WISP_TEST_LOG").unwrap_or_else(|_| "debug".into());
        let child = ns
            .command(&bin.display().to_string())
            .arg("run")
            .arg("-c")
            .arg(&cfg)
            .arg("--control")
            .arg(&sock)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| err!("spawn wisp: {e}"))?;
        let mut d = WispDaemon { ns: ns.name().into(), dir: dir.into(), bin: bin.into(), proc: Proc::new(child, "wisp") };
        let ok = wait_for(Duration::from_secs(15), || {
            if !d.proc.is_running() {
                return Some(false);
            }
            (sock.exists() && d.cli(&["status", "--json"]).map(|o| o.status.success()).unwrap_or(false))
                .then_some(true)
        });
        if ok != Some(true) {
            return Err(err!("wisp in {} did not come up; log:\n{}", d.ns, d.log_tail(40)));
        }
        Ok(d)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn control_path(&self) -> PathBuf {
        self.dir.join("wisp.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("wisp.log")).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.dir.join("wisp.log"), n)
    }

    /// `wisp <sub> --control SOCK <rest>` (the control socket is a filesystem
    /// socket, so this runs from the root namespace).
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        let (sub, rest) = args.split_first().ok_or_else(|| err!("wisp cli: no subcommand"))?;
        Command::new(&self.bin)
            .arg(sub)
            .arg("--control")
            .arg(self.control_path())
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err!("spawn wisp cli: {e}"))
    }

    /// Like [`WispDaemon::cli`], error (with output and daemon log) on failure.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let o = self.cli(args)?;
        if !o.status.success() {
            return Err(err!(
                "wisp {} failed ({}): {}{}\nlog:\n{}",
                args.join(" "),
                o.status,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
                self.log_tail(30)
            ));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// `wisp status --json`, parsed.
    pub fn status(&self) -> Result<serde_json::Value> {
        let out = self.cli_ok(&["status", "--json"])?;
        serde_json::from_str(&out).map_err(|e| err!("wisp status --json: {e}: {out}"))
    }

    /// Poll `status` until `pred` holds.
    pub fn wait_status(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let mut last = serde_json::Value::Null;
        wait_for(timeout, || match self.status() {
            Ok(v) if pred(&v) => Some(v),
            Ok(v) => {
                last = v;
                None
            }
            Err(_) => None,
        })
        .ok_or_else(|| err!("wisp status did not reach the expected state in {timeout:?}; last: {last:#}\nlog:\n{}", self.log_tail(40)))
    }

    pub fn kill_hard(&mut self) {
        self.proc.kill_hard();
    }

    pub fn stop(&mut self) {
        self.proc.stop(Duration::from_secs(5));
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }
}
