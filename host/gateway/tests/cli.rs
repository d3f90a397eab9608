//! CLI tests that need no root: config checking and the offline plugin tools.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn wisp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wisp")).args(args).output().expect("run wisp")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn plugin(name: &str) -> PathBuf {
    let p = repo().join("build/plugins").join(format!("{name}.wasm"));
    assert!(p.is_file(), "{} missing: run scripts/build-plugins.sh", p.display());
    p
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn example_configs_are_valid() {
    for f in ["gateway-a.toml", "gateway-b.toml"] {
        let p = repo().join("examples").join(f);
        let o = wisp(&["check-config", p.to_str().unwrap()]);
        assert!(o.status.success(), "{f}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("ok (1 connection"), "{out}");
    }
}

const BASE: &str = r#"[connections.b]
local_addrs = ["10.99.0.1"]
remote_addrs = ["10.99.0.2"]
local.id = "a.wisp.test"
remote.id = "b.wisp.test"
auth.psk = "supersecret-psk-value"
[connections.b.children.net]
local_ts = ["10.98.1.0/24"]
remote_ts = ["10.98.2.0/24"]
"#;

fn check_text(text: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.toml");
    std::fs::write(&p, text).unwrap();
    let o = wisp(&["check-config", p.to_str().unwrap()]);
    // Error messages start with the file path.
    if !o.status.success() {
        assert!(stderr(&o).starts_with(p.to_str().unwrap()), "{}", stderr(&o));
    }
    o
}

#[test]
fn config_errors_name_file_line_and_field() {
    assert!(check_text(BASE).status.success());

    let o = check_text(&BASE.replace("10.98.2.0/24", "10.98.2.0/40"));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains(":9:"), "{e}");
    assert!(e.contains("connections.b.children.net.remote_ts"), "{e}");
    assert!(e.contains("prefix"), "{e}");

    let o = check_text(&format!("{BASE}esp_proposals = [\"aes128gcm16-md5\"]\n"));
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains(":10:") && e.contains("esp_proposals") && e.contains("md5"), "{e}");

    let o = check_text(&BASE.replace("remote.id", "remote.idd"));
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains(":5:") && e.contains("idd"), "{e}");

    let o = check_text(&BASE.replace("auth.psk = \"supersecret-psk-value\"", "auth.psk_file = \"nope.txt\""));
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains(":6:") && e.contains("connections.b.auth.psk_file") && e.contains("nope.txt"), "{e}");

    let o = check_text(&format!("log_level = \"loud\"\n{BASE}"));
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains(":1:") && e.contains("log_level"), "{e}");

    // The PSK never shows up, even in errors about its own table.
    let o = check_text(&BASE.replace("auth.psk = ", "auth.psk_file = \"x\"\nauth.psk = "));
    let e = stderr(&o);
    assert!(!o.status.success());
    assert!(e.contains("not both"), "{e}");
    assert!(!e.contains("supersecret"), "{e}");
}

#[test]
fn plugin_check_reports_name_version_and_rejects_garbage() {
    let p = plugin("default");
    let o = wisp(&["plugin", "check", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("sha256"), "{out}");
    assert!(out.contains("wisp:policy"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0garbage").unwrap();
    let o = wisp(&["plugin", "check", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bad.wasm"), "{}", stderr(&o));
}

#[test]
fn control_commands_without_daemon_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let o = wisp(&["status", "--control", sock.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));
}

#[test]
fn plugin_eval_runs_a_fixture_and_checks_its_expectation() {
    let p = plugin("default");
    let fx = repo().join("examples/fixtures/default-authorize-unlisted.json");
    let o = wisp(&["plugin", "eval", p.to_str().unwrap(), fx.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.contains("refuse") && out.contains("expectation: met"), "{out}");

    // The same decision with the opposite expectation must fail.
    let text = std::fs::read_to_string(&fx).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["expect"] = serde_json::json!({ "allow": true });
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, v.to_string()).unwrap();
    let o = wisp(&["plugin", "eval", p.to_str().unwrap(), wrong.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("NOT met"), "{out}");

    let o = wisp(&["plugin", "eval", p.to_str().unwrap(), "/nonexistent/fixture.json"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("fixture"), "{}", stderr(&o));
}
