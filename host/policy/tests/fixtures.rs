//! Every decision fixture in `examples/fixtures/` against every plugin it names
//! (built by `scripts/build-plugins.sh` into `build/plugins/`), and the Python
//! and JavaScript allow-lists answering exactly like the Rust one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use wisp_policy::fixture::{eval_loaded, Answer, Fixture};
use wisp_policy::{load, LoadedPlugin, PluginConfig};

const PLUGINS: [&str; 7] = ["default", "allowlist", "allowlist-py", "allowlist-js", "time-window", "tenant-subnets", "sa-cap"];
const ALLOWLISTS: [&str; 3] = ["allowlist", "allowlist-py", "allowlist-js"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn wasm_path(name: &str) -> PathBuf {
    let p = repo().join("build/plugins").join(format!("{name}.wasm"));
    assert!(p.is_file(), "{} is missing: run scripts/build-plugins.sh", p.display());
    p
}

/// Each plugin is compiled once per test binary (tests that need the same
/// plugin wait for one compilation) and re-configured per fixture. Compiled
/// code is cached under `target/plugin-cache` across runs.
fn plugin(name: &str) -> Arc<LoadedPlugin> {
    type Slot = Arc<OnceLock<Arc<LoadedPlugin>>>;
    static CACHE: OnceLock<Mutex<HashMap<String, Slot>>> = OnceLock::new();
    let slot: Slot = CACHE.get_or_init(Default::default).lock().unwrap().entry(name.to_string()).or_default().clone();
    slot.get_or_init(|| {
        let path = wasm_path(name);
        let config = PluginConfig { cache_dir: Some(repo().join("target/plugin-cache")), ..PluginConfig::default() };
        if let Some(d) = &config.cache_dir {
            let _ = std::fs::create_dir_all(d);
        }
        load(&path, &config).unwrap_or_else(|e| panic!("loading {} failed: {e}", path.display()))
    })
    .clone()
}

fn fixtures() -> Vec<Fixture> {
    let dir = repo().join("examples/fixtures");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths.iter().map(|p| Fixture::load(p).unwrap_or_else(|e| panic!("{e}"))).collect()
}

/// Run every fixture naming `name` on it; fail listing every mismatch.
fn run_all_for(name: &str) {
    let p = plugin(name);
    let mut failures = Vec::new();
    let mut ran = 0;
    for f in fixtures().iter().filter(|f| f.plugins.iter().any(|x| x == name)) {
        ran += 1;
        match eval_loaded(&p, f) {
            Ok(answer) => {
                if let Err(why) = f.check(&answer) {
                    failures.push(format!("{}: {why}", f.name));
                }
            }
            Err(e) => failures.push(format!("{}: could not run: {e}", f.name)),
        }
    }
    assert!(ran >= 5, "only {ran} fixtures for {name}");
    assert!(failures.is_empty(), "{name}: {} of {ran} fixtures failed:\n{}", failures.len(), failures.join("\n"));
    eprintln!("{name}: {ran} fixtures pass");
}

#[test]
fn fixtures_parse_and_cover_every_plugin() {
    let all = fixtures();
    let mut per_plugin: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &all {
        for p in &f.plugins {
            assert!(PLUGINS.contains(&p.as_str()), "{}: unknown plugin '{p}'", f.name);
            *per_plugin.entry(p.as_str()).or_default() += 1;
        }
        // Fixtures of one allow-list are fixtures of all three.
        let named = ALLOWLISTS.iter().filter(|a| f.plugins.iter().any(|p| p == *a)).count();
        assert!(named == 0 || named == 3, "{}: names only some of the allow-lists", f.name);
    }
    for p in PLUGINS {
        assert!(per_plugin.get(p).copied().unwrap_or(0) >= 5, "plugin {p} has fewer than 5 fixtures");
    }
}

#[test]
fn default_plugin() {
    run_all_for("default");
}

#[test]
fn allowlist_rust() {
    run_all_for("allowlist");
}

#[test]
fn allowlist_python() {
    run_all_for("allowlist-py");
}

#[test]
fn allowlist_js() {
    run_all_for("allowlist-js");
}

#[test]
fn time_window() {
    run_all_for("time-window");
}

#[test]
fn tenant_subnets() {
    run_all_for("tenant-subnets");
}

#[test]
fn sa_cap() {
    run_all_for("sa-cap");
}

/// Python and JavaScript give exactly the Rust answer (reasons included) on
/// every allow-list fixture. `configure` errors are compared by kind: the host
/// prefixes them with the plugin's own name.
#[test]
fn python_and_js_agree_with_rust() {
    let rust = plugin("allowlist");
    let others = [("allowlist-py", plugin("allowlist-py")), ("allowlist-js", plugin("allowlist-js"))];
    let mut compared = 0;
    let mut diffs = Vec::new();
    for f in fixtures().iter().filter(|f| f.plugins.iter().any(|p| p == "allowlist")) {
        let want = eval_loaded(&rust, f).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        for (name, p) in &others {
            let got = eval_loaded(p, f).unwrap_or_else(|e| panic!("{}: {name}: {e}", f.name));
            let same = match (&want, &got) {
                (Answer::ConfigureFailed(_), Answer::ConfigureFailed(_)) => true,
                (a, b) => a == b,
            };
            if !same {
                diffs.push(format!("{}: rust says {want}, {name} says {got}", f.name));
            }
            compared += 1;
        }
    }
    assert!(compared >= 20, "only {compared} comparisons");
    assert!(diffs.is_empty(), "{} disagreements:\n{}", diffs.len(), diffs.join("\n"));
}

/// `eval` (the `wisp plugin eval` path) loads from the file and answers like
/// the shared-instance path.
#[test]
fn eval_from_files() {
    let fx = repo().join("examples/fixtures/allowlist-authorize-wrong-source.json");
    let answer = wisp_policy::fixture::eval_file(wasm_path("allowlist"), &fx).unwrap();
    match &answer {
        Answer::Refused(r) => assert!(r.contains("203.0.113.7"), "{r}"),
        other => panic!("expected a refusal, got {other}"),
    }
    assert_eq!(answer.to_json()["refuse"].as_str().map(|s| s.contains("allowed: 10.99.0.0/16")), Some(true));
    let fx = repo().join("examples/fixtures/time-window-weekend.json");
    let f = Fixture::load(&fx).unwrap();
    assert!(f.check(&wisp_policy::fixture::eval(wasm_path("time-window"), &f).unwrap()).is_ok());
}

/// Beyond the fixtures: a few hundred generated authorize and narrow-selectors
/// requests (seeded, reproducible), mixing families, case, CIDR edges, protocols
/// and ports; Python and JavaScript must answer exactly like Rust every time.
#[test]
fn generated_requests_agree_across_languages() {
    use std::net::IpAddr;
    use wisp_policy::api::{AuthInfo, IdType, Identity, PeerContext, SelectorRequest, TrafficSelector};
    use wisp_policy::fixture::decide;
    use wisp_policy::{DecisionRequest, Setting, SettingValue};

    // xorshift64*: deterministic, no dependency.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| -> usize {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    };
    let peers = vec![
        "alice@example.com from 10.99.0.0/16, 192.0.2.0/24".to_string(),
        "gw.example.net".to_string(),
        "CN=carol, O=Example from fd99::/64, 10.99.128.0/17".to_string(),
        "alice@example.com from 203.0.113.0/28".to_string(),
        "192.0.2.1 from 192.0.2.1".to_string(),
    ];
    let config = PluginConfig { settings: vec![Setting::new("peers", SettingValue::TextList(peers))], ..PluginConfig::default() };
    let names = ["allowlist", "allowlist-py", "allowlist-js"];
    let loaded: Vec<_> = names.iter().map(|n| plugin(n).reconfigure(&config, 1).unwrap()).collect();

    let ids = [
        (IdType::Rfc822Addr, "alice@example.com"),
        (IdType::Rfc822Addr, "ALICE@example.COM"),
        (IdType::Fqdn, "gw.example.net"),
        (IdType::Fqdn, "Gw.Example.Net"),
        (IdType::DerAsn1Dn, "CN=carol, O=Example"),
        (IdType::DerAsn1Dn, "cn=carol, o=example"),
        (IdType::Ipv4Addr, "192.0.2.1"),
        (IdType::KeyId, "00ff"),
        (IdType::Rfc822Addr, "mallory@example.com"),
    ];
    let addrs = [
        "10.99.0.0",
        "10.99.255.255",
        "10.100.0.0",
        "10.98.255.255",
        "192.0.2.1",
        "192.0.3.0",
        "203.0.113.15",
        "203.0.113.16",
        "fd99::",
        "fd99::ffff:ffff:ffff:ffff",
        "fd99:0:0:1::",
        "fd98::1:0:0:7",
        "::ffff:10.99.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "::",
    ];
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let v4 = ["10.0.0.0", "10.99.0.0", "10.99.1.0", "10.99.1.255", "10.99.2.0", "10.255.255.255", "192.0.2.0"];
    let v6 = ["fd00::", "fd99::", "fd99::ff", "fd99:0:0:1::", "fdff:ffff::"];
    let protos = [0u8, 0, 6, 17];
    let ports = [0u16, 53, 443, 1000, 2000, 65535];

    let sel = |next: &mut dyn FnMut(usize) -> usize| -> TrafficSelector {
        let pool: &[&str] = if next(3) == 0 { &v6 } else { &v4 };
        let (a, b) = (ip(pool[next(pool.len())]), ip(pool[next(pool.len())]));
        let (p1, p2) = (ports[next(ports.len())], ports[next(ports.len())]);
        TrafficSelector {
            ip_protocol: protos[next(protos.len())],
            start_port: p1.min(p2),
            end_port: if next(2) == 0 { 65535 } else { p1.max(p2) },
            start_address: a.min(b),
            end_address: a.max(b),
        }
    };
    let mut cases = 0;
    let mut diffs = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for round in 0..300 {
        let remote = ip(addrs[next(addrs.len())]);
        let (kind, value) = ids[next(ids.len())];
        let identity = Identity { kind, value: value.to_string() };
        let ctx = PeerContext {
            connection: "gen".into(),
            remote_address: remote,
            remote_port: 4500,
            local_address: if remote.is_ipv4() { ip("198.51.100.1") } else { ip("fd99::1") },
            local_port: 4500,
            nat_detected: next(2) == 0,
            local_is_initiator: false,
            peer_identity: Some(identity.clone()),
            trigger: Default::default(),
        };
        let req = if round % 2 == 0 {
            DecisionRequest::Authorize { ctx, auth: AuthInfo::psk(identity) }
        } else {
            let list = |next: &mut dyn FnMut(usize) -> usize| -> Vec<TrafficSelector> {
                let n = 1 + next(3);
                (0..n).map(|_| sel(next)).collect()
            };
            let request = SelectorRequest {
                remote_proposed: list(&mut next),
                local_proposed: list(&mut next),
                remote_configured: list(&mut next),
                local_configured: list(&mut next),
            };
            DecisionRequest::NarrowSelectors { ctx, request }
        };
        let answers: Vec<Answer> = loaded.iter().map(|p| decide(p, &req)).collect();
        let kind = match &answers[0] {
            Answer::Allow => "allow",
            Answer::Selectors(_) => "selectors",
            Answer::Refused(_) => "refused",
            _ => "other",
        };
        *seen.entry(kind).or_default() += 1;
        for (i, a) in answers.iter().enumerate().skip(1) {
            if *a != answers[0] {
                diffs.push(format!("case {round}: rust {} vs {} {}\n  request: {req:?}", answers[0], names[i], a));
            }
        }
        cases += 1;
    }
    assert!(diffs.is_empty(), "{} disagreements in {cases} cases:\n{}", diffs.len(), diffs.join("\n"));
    // The generator must exercise every outcome, or the comparison proves little.
    for k in ["allow", "selectors", "refused"] {
        assert!(seen.get(k).copied().unwrap_or(0) >= 20, "only {seen:?} outcomes in {cases} cases");
    }
    eprintln!("{cases} generated cases, outcomes {seen:?}: Python and JS agree with Rust");
}
