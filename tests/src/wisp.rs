//! The `wisp` gateway daemon in a namespace, and its CLI.
//!
//! The binary is located by [`wisp_bin`]: `$WISP_BIN` (set by `scripts/test.sh`),
//! else `$CARGO_TARGET_DIR/debug/wisp`, else `<workspace>/target/debug/wisp`.

use crate::err;
use crate::netns::Netns;
use crate::proc::Proc;
use crate::util::{tail, wait_for, Result};
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
    Err(err!("wisp binary not found (tried {tried:?}); build it with `cargo build -p wisp --bins` or set WISP_BIN"))
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
        write_private(&cfg, config)?;
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
            (sock.exists() && d.cli(&["status", "--json"]).map(|o| o.status.success()).unwrap_or(false)).then_some(true)
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
    pub fn wait_status(&self, timeout: Duration, mut pred: impl FnMut(&serde_json::Value) -> bool) -> Result<serde_json::Value> {
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

/// Write a file readable by its owner only (0600), as wisp requires for a
/// config holding an inline PSK and for PSK files. Replaces an existing file.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())
}

/// One `[connections.NAME.children.CHILD]` of a wisp config.
#[derive(Debug, Clone, Default)]
pub struct WispChild {
    pub name: String,
    pub local_ts: Vec<String>,
    pub remote_ts: Vec<String>,
    pub esp_proposals: Vec<String>,
    pub rekey_time: Option<String>,
    pub life_time: Option<String>,
    pub start_action: Option<String>,
    pub dpd_action: Option<String>,
    pub close_action: Option<String>,
}

impl WispChild {
    pub fn new(name: &str, local_ts: &str, remote_ts: &str, esp: &str) -> WispChild {
        WispChild {
            name: name.into(),
            local_ts: vec![local_ts.into()],
            remote_ts: vec![remote_ts.into()],
            esp_proposals: vec![esp.into()],
            ..Default::default()
        }
    }
}

/// One `[connections.NAME]` (PSK inline).
#[derive(Debug, Clone, Default)]
pub struct WispConn {
    pub name: String,
    pub local_addrs: Vec<String>,
    pub remote_addrs: Vec<String>,
    pub local_id: String,
    pub remote_id: String,
    pub psk: String,
    pub proposals: Vec<String>,
    pub rekey_time: Option<String>,
    pub over_time: Option<String>,
    pub reauth_time: Option<String>,
    pub dpd_delay: Option<String>,
    pub dpd_timeout: Option<String>,
    pub start_action: Option<String>,
    pub children: Vec<WispChild>,
    /// Further raw TOML lines of the connection (`local.certs = [...]`, ...).
    pub extra: Vec<String>,
}

/// A whole wisp gateway config (see `host/gateway/src/config.rs`).
#[derive(Debug, Clone, Default)]
pub struct WispConf {
    pub log_level: Option<String>,
    pub tun_name: Option<String>,
    pub tun_addrs: Vec<String>,
    /// Absolute path of the policy plugin; `None` = the gateway's default.
    pub plugin: Option<PathBuf>,
    /// `[plugin.settings]` as raw TOML lines (`key = value`).
    pub plugin_settings: Vec<String>,
    /// `[ike]` as raw TOML lines (`key = value`).
    pub ike_settings: Vec<String>,
    pub conns: Vec<WispConn>,
    /// Raw TOML appended at the end (`[pools.NAME]` tables, ...).
    pub tail: Vec<String>,
}

/// TOML string literal.
pub fn toml_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn toml_list(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|s| toml_str(s)).collect::<Vec<_>>().join(", "))
}

impl WispConf {
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        if let Some(l) = &self.log_level {
            let _ = writeln!(o, "log_level = {}", toml_str(l));
        }
        o.push_str("\n[tun]\n");
        if let Some(n) = &self.tun_name {
            let _ = writeln!(o, "name = {}", toml_str(n));
        }
        let _ = writeln!(o, "addrs = {}", toml_list(&self.tun_addrs));
        if self.plugin.is_some() || !self.plugin_settings.is_empty() {
            o.push_str("\n[plugin]\n");
            if let Some(p) = &self.plugin {
                let _ = writeln!(o, "path = {}", toml_str(&p.display().to_string()));
            }
            if !self.plugin_settings.is_empty() {
                o.push_str("[plugin.settings]\n");
                for l in &self.plugin_settings {
                    let _ = writeln!(o, "{l}");
                }
            }
        }
        if !self.ike_settings.is_empty() {
            o.push_str("\n[ike]\n");
            for l in &self.ike_settings {
                let _ = writeln!(o, "{l}");
            }
        }
        for c in &self.conns {
            let _ = writeln!(o, "\n[connections.{}]", c.name);
            let _ = writeln!(o, "local_addrs = {}", toml_list(&c.local_addrs));
            let _ = writeln!(o, "remote_addrs = {}", toml_list(&c.remote_addrs));
            let _ = writeln!(o, "proposals = {}", toml_list(&c.proposals));
            let opt = |o: &mut String, k: &str, v: &Option<String>| {
                if let Some(v) = v {
                    let _ = writeln!(o, "{k} = {}", toml_str(v));
                }
            };
            opt(&mut o, "rekey_time", &c.rekey_time);
            opt(&mut o, "over_time", &c.over_time);
            opt(&mut o, "reauth_time", &c.reauth_time);
            opt(&mut o, "dpd_delay", &c.dpd_delay);
            opt(&mut o, "dpd_timeout", &c.dpd_timeout);
            opt(&mut o, "start_action", &c.start_action);
            let _ = writeln!(o, "remote.id = {}", toml_str(&c.remote_id));
            if !c.local_id.is_empty() {
                let _ = writeln!(o, "local.id = {}", toml_str(&c.local_id));
            }
            if !c.psk.is_empty() {
                let _ = writeln!(o, "auth.psk = {}", toml_str(&c.psk));
            }
            for l in &c.extra {
                let _ = writeln!(o, "{l}");
            }
            for ch in &c.children {
                let _ = writeln!(o, "\n[connections.{}.children.{}]", c.name, ch.name);
                // No selectors: the key is left out (swanctl's `dynamic`).
                if !ch.local_ts.is_empty() {
                    let _ = writeln!(o, "local_ts = {}", toml_list(&ch.local_ts));
                }
                if !ch.remote_ts.is_empty() {
                    let _ = writeln!(o, "remote_ts = {}", toml_list(&ch.remote_ts));
                }
                let _ = writeln!(o, "esp_proposals = {}", toml_list(&ch.esp_proposals));
                opt(&mut o, "rekey_time", &ch.rekey_time);
                opt(&mut o, "life_time", &ch.life_time);
                opt(&mut o, "start_action", &ch.start_action);
                opt(&mut o, "dpd_action", &ch.dpd_action);
                opt(&mut o, "close_action", &ch.close_action);
            }
        }
        for l in &self.tail {
            let _ = writeln!(o, "{l}");
        }
        o
    }
}

/// `<repo>/build/plugins/<name>.wasm`, or an error telling how to build it.
pub fn plugin_path(name: &str) -> Result<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../build/plugins").join(format!("{name}.wasm"));
    if p.is_file() {
        Ok(p.canonicalize().unwrap_or(p))
    } else {
        Err(err!("{} missing: run scripts/build-plugins.sh", p.display()))
    }
}

/// Parse a hex SPI as printed by `wisp status --json` (`"0x1a2b"` or `"1a2b"`).
pub fn parse_hex_spi(s: &str) -> Option<u64> {
    let t = s.trim().trim_start_matches("0x").trim_start_matches("0X");
    u64::from_str_radix(t, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_gateway_toml() {
        let conf = WispConf {
            tun_addrs: vec!["10.1.0.1/32".into()],
            conns: vec![WispConn {
                name: "gw".into(),
                local_addrs: vec!["10.99.0.1".into()],
                remote_addrs: vec!["10.99.0.2".into()],
                local_id: "left".into(),
                remote_id: "right".into(),
                psk: "p\"w".into(),
                proposals: vec!["aes128gcm16-prfsha256-x25519".into()],
                dpd_delay: Some("1s".into()),
                children: vec![WispChild::new("net", "10.1.0.0/24", "10.2.0.0/24", "aes128gcm16")],
                ..Default::default()
            }],
            ..Default::default()
        };
        let s = conf.render();
        assert!(s.contains("[connections.gw.children.net]\nlocal_ts = [\"10.1.0.0/24\"]"), "{s}");
        assert!(s.contains("auth.psk = \"p\\\"w\""), "{s}");
        assert!(s.contains("dpd_delay = \"1s\""), "{s}");
        assert!(s.contains("addrs = [\"10.1.0.1/32\"]"), "{s}");
    }

    #[test]
    fn hex_spis() {
        assert_eq!(parse_hex_spi("0xdeadbeef"), Some(0xdeadbeef));
        assert_eq!(parse_hex_spi("7f0d3d472ea71680"), Some(0x7f0d3d472ea71680));
        assert_eq!(parse_hex_spi("zz"), None);
    }
}
