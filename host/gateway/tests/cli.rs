//! CLI tests that need no root: config checking and the offline plugin tools.

use std::os::unix::fs::PermissionsExt as _;
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

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn example_configs_are_valid() {
    // git keeps only the executable bit: give the example PSK the mode wisp requires.
    chmod(&repo().join("examples/psk.txt"), 0o600);
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
    // It holds an inline PSK: owner-only, or it is refused.
    chmod(&p, 0o600);
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

#[test]
fn inline_psk_config_world_readable_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.toml");
    std::fs::write(&p, BASE).unwrap();
    for mode in [0o644, 0o640, 0o604] {
        chmod(&p, mode);
        let o = wisp(&["check-config", p.to_str().unwrap()]);
        let e = stderr(&o);
        assert!(!o.status.success(), "mode {mode:o} accepted");
        assert!(e.contains(p.to_str().unwrap()) && e.contains(&format!("{mode:04o}")), "{e}");
        assert!(e.contains(":6:") && e.contains("connections.b.auth.psk"), "{e}");
        assert!(!e.contains("supersecret"), "{e}");
    }
    chmod(&p, 0o600);
    assert!(wisp(&["check-config", p.to_str().unwrap()]).status.success());
    // Without an inline PSK the config itself may be world-readable.
    let psk = dir.path().join("psk.txt");
    std::fs::write(&psk, "file-psk-value-0123\n").unwrap();
    chmod(&psk, 0o600);
    std::fs::write(&p, BASE.replace("auth.psk = \"supersecret-psk-value\"", "auth.psk_file = \"psk.txt\"")).unwrap();
    chmod(&p, 0o644);
    let o = wisp(&["check-config", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn psk_file_group_readable_refused() {
    let dir = tempfile::tempdir().unwrap();
    let psk = dir.path().join("psk.txt");
    std::fs::write(&psk, "file-psk-value-0123\n").unwrap();
    let p = dir.path().join("w.toml");
    std::fs::write(&p, BASE.replace("auth.psk = \"supersecret-psk-value\"", "auth.psk_file = \"psk.txt\"")).unwrap();
    for mode in [0o640, 0o644, 0o660, 0o606] {
        chmod(&psk, mode);
        let o = wisp(&["check-config", p.to_str().unwrap()]);
        let e = stderr(&o);
        assert!(!o.status.success(), "PSK file mode {mode:o} accepted");
        assert!(e.contains(psk.to_str().unwrap()) && e.contains(&format!("{mode:04o}")), "{e}");
        assert!(e.contains(":6:") && e.contains("connections.b.auth.psk_file"), "{e}");
        assert!(!e.contains("file-psk-value"), "{e}");
    }
    for mode in [0o600, 0o400] {
        chmod(&psk, mode);
        let o = wisp(&["check-config", p.to_str().unwrap()]);
        assert!(o.status.success(), "mode {mode:o}: {}", stderr(&o));
    }
}

/// `(replace this, with that)` in BASE → the error names this field on this line.
fn assert_bound(from: &str, to: &str, line: usize, field: &str) {
    let o = check_text(&BASE.replace(from, to));
    let e = stderr(&o);
    assert!(!o.status.success(), "{to}: accepted");
    assert!(e.contains(&format!(":{line}:")) && e.contains(field), "{to}: {e}");
    assert!(e.contains("range") || e.contains("too large") || e.contains("at most") || e.contains("must not be 0"), "{to}: {e}");
}

#[test]
fn huge_rekey_time_rejected_with_field() {
    // 2^62 seconds once reached a `% 0` in the jitter code of the driver thread.
    let net = "remote_ts = [\"10.98.2.0/24\"]";
    assert_bound("auth.psk =", "rekey_time = 4611686018427387904\nauth.psk =", 6, "rekey_time");
    assert_bound("auth.psk =", "rekey_time = \"400d\"\nauth.psk =", 6, "connections.b.rekey_time");
    assert_bound("auth.psk =", "rekey_time = 0\nauth.psk =", 6, "connections.b.rekey_time");
    assert_bound("auth.psk =", "over_time = \"1000d\"\nauth.psk =", 6, "connections.b.over_time");
    assert_bound(net, &format!("{net}\nrekey_time = 9223372036854775807"), 10, "children.net.rekey_time");
    assert_bound(net, &format!("{net}\nlife_time = \"366d\""), 10, "connections.b.children.net.life_time");
    assert_bound(net, &format!("{net}\nrekey_bytes = 0"), 10, "connections.b.children.net.rekey_bytes");
    assert_bound(net, &format!("{net}\nlife_packets = \"4294967296G\""), 10, "connections.b.children.net.life_packets");
}

#[test]
fn huge_dpd_delay_rejected_with_field() {
    // dpd_delay × 5 (the default timeout) once overflowed a Duration.
    assert_bound("auth.psk =", "dpd_delay = 9223372036854775807\nauth.psk =", 6, "dpd_delay");
    assert_bound("auth.psk =", "dpd_delay = \"2d\"\nauth.psk =", 6, "connections.b.dpd_delay");
    assert_bound("auth.psk =", "dpd_delay = \"5s\"\ndpd_timeout = \"100ms\"\nauth.psk =", 7, "connections.b.dpd_timeout");
}

#[test]
fn daemon_wide_values_rejected_with_field() {
    let top = |extra: &str| format!("{extra}\n{BASE}");
    for (text, field) in [
        (top("[tun]\nmtu = 100"), "tun.mtu"),
        (top("[tun]\nmtu = 65000"), "tun.mtu"),
        (top("ike_port = 0"), "ike_port"),
        (top("[plugin]\ndeadline = \"1h\""), "plugin.deadline"),
        (top("[plugin]\nmemory = \"64G\""), "plugin.memory"),
    ] {
        let o = check_text(&text);
        let e = stderr(&o);
        assert!(!o.status.success(), "{text}: accepted");
        assert!(e.contains(field) && e.contains(":"), "{e}");
    }
    let many: String = (0..65).map(|i| format!("\"10.98.{i}.0/24\", ")).collect();
    let o = check_text(&BASE.replace("remote_ts = [\"10.98.2.0/24\"]", &format!("remote_ts = [{many}]")));
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("children.net.remote_ts") && e.contains("at most 64"), "{e}");
}
