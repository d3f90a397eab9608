//! Decision latency per plugin and decision kind, instance modes side by side,
//! and reload latency (rename -> new version answering).
//!
//! `cargo bench -p wisp-policy --bench decisions` (after scripts/build-plugins.sh).
//! Prints a Markdown table; BENCH.md holds a measured copy.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp_policy::api::*;
use wisp_policy::{check_with, load, DecisionRequest, InstanceMode, Limits, PluginConfig, PolicySlot, Setting, SettingValue};

fn plugins_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../build/plugins")
}

fn ctx(identity: Option<Identity>) -> PeerContext {
    PeerContext {
        connection: "site-a".into(),
        remote_address: "10.99.3.4".parse().unwrap(),
        remote_port: 4500,
        local_address: "10.99.0.1".parse().unwrap(),
        local_port: 4500,
        nat_detected: false,
        local_is_initiator: false,
        peer_identity: identity,
        trigger: Default::default(),
    }
}

fn t(kind: TransformType, id: u16, key_length: Option<u16>) -> Transform {
    Transform { kind, id, key_length }
}

fn ike_proposals() -> Vec<Proposal> {
    use TransformType::*;
    vec![
        Proposal {
            number: 1,
            protocol: Protocol::Ike,
            transforms: vec![t(Encryption, 12, Some(128)), t(Prf, 2, None), t(Integrity, 2, None), t(KeyExchange, 2, None)],
        },
        Proposal {
            number: 2,
            protocol: Protocol::Ike,
            transforms: vec![t(Encryption, 20, Some(256)), t(Prf, 5, None), t(KeyExchange, 31, None)],
        },
    ]
}

fn ts(a: &str, b: &str) -> TrafficSelector {
    TrafficSelector { ip_protocol: 0, start_port: 0, end_port: 65535, start_address: a.parse().unwrap(), end_address: b.parse().unwrap() }
}

fn requests() -> Vec<(&'static str, DecisionRequest)> {
    let alice = Identity { kind: IdType::Rfc822Addr, value: "alice@example.com".into() };
    vec![
        (
            "select-proposal",
            DecisionRequest::SelectProposal { ctx: ctx(None), kind: SaKind::Ike, offered: ike_proposals(), configured: ike_proposals() },
        ),
        ("order-proposals", DecisionRequest::OrderProposals { ctx: ctx(None), kind: SaKind::Ike, configured: ike_proposals() }),
        ("authorize", DecisionRequest::Authorize { ctx: ctx(Some(alice.clone())), auth: AuthInfo::psk(alice.clone()) }),
        (
            "narrow-selectors",
            DecisionRequest::NarrowSelectors {
                ctx: ctx(Some(alice)),
                request: SelectorRequest {
                    remote_proposed: vec![ts("0.0.0.0", "255.255.255.255")],
                    local_proposed: vec![ts("10.0.0.0", "10.255.255.255")],
                    remote_configured: vec![ts("10.99.0.0", "10.99.255.255")],
                    local_configured: vec![ts("10.0.1.0", "10.0.1.255"), ts("10.0.2.0", "10.0.2.255")],
                },
            },
        ),
    ]
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

struct Target {
    name: &'static str,
    settings: Vec<Setting>,
    memory: usize,
    iters_reuse: usize,
    iters_fresh: usize,
}

fn main() {
    let dir = plugins_dir();
    let allowed = Setting::new("allowed_ids", SettingValue::TextList(vec!["alice@example.com".into(), "gw.example.net".into()]));
    let peers = Setting::new(
        "peers",
        SettingValue::TextList(vec!["alice@example.com from 10.99.0.0/16, 192.0.2.0/24".into(), "gw.example.net".into()]),
    );
    let quick = std::env::var_os("WISP_BENCH_QUICK").is_some();
    let n = |full: usize| if quick { (full / 10).max(20) } else { full };
    let targets = [
        Target { name: "default", settings: vec![allowed], memory: 16 << 20, iters_reuse: n(20_000), iters_fresh: n(2_000) },
        Target { name: "allowlist", settings: vec![peers.clone()], memory: 16 << 20, iters_reuse: n(20_000), iters_fresh: n(2_000) },
        Target { name: "allowlist-py", settings: vec![peers.clone()], memory: 256 << 20, iters_reuse: n(2_000), iters_fresh: n(100) },
        Target { name: "allowlist-js", settings: vec![peers], memory: 256 << 20, iters_reuse: n(2_000), iters_fresh: n(100) },
    ];

    println!("## Decision latency (per call, includes instance checkout/instantiation, argument conversion and answer validation)\n");
    println!("| plugin | size | load (compile+validate) | memory at start | mode | decision | p50 | p99 | n |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for tg in &targets {
        let path = dir.join(format!("{}.wasm", tg.name));
        if !path.is_file() {
            println!("| {} | missing: run scripts/build-plugins.sh | | | | | | | |", tg.name);
            continue;
        }
        for mode in [InstanceMode::Reuse, InstanceMode::Fresh] {
            let config = PluginConfig {
                limits: Limits { memory: tg.memory, mode, ..Limits::default() },
                settings: tg.settings.clone(),
                // Compile each component once (Python/JS take seconds).
                cache_dir: Some(std::env::temp_dir().join("wisp-bench-cache")),
                ..PluginConfig::default()
            };
            let report = match check_with(&path, &config) {
                Ok(r) => r,
                Err(e) => {
                    println!("| {} | | | | {mode:?} | check failed: {e} | | | |", tg.name);
                    continue;
                }
            };
            let t0 = Instant::now();
            let plugin = match load(&path, &config) {
                Ok(p) => p,
                Err(e) => {
                    println!("| {} | | | | {mode:?} | load failed: {e} | | | |", tg.name);
                    continue;
                }
            };
            let load_time = t0.elapsed();
            let iters = if mode == InstanceMode::Reuse { tg.iters_reuse } else { tg.iters_fresh };
            for (kind, req) in requests() {
                // Warm up (and show what the plugin answers).
                let first = plugin.decide(&req);
                for _ in 0..(iters / 10).max(5) {
                    let _ = plugin.decide(&req);
                }
                let mut samples = Vec::with_capacity(iters);
                for _ in 0..iters {
                    let s = Instant::now();
                    let r = plugin.decide(&req);
                    samples.push(s.elapsed());
                    std::hint::black_box(r).ok();
                }
                samples.sort();
                let answer = match &first {
                    Ok(a) => format!("{a:?}").chars().take(24).collect::<String>(),
                    Err(e) => format!("{e}").chars().take(40).collect::<String>(),
                };
                println!(
                    "| {} | {:.1} MB | {} | {:.1} MiB | {mode:?} | {kind} ({answer}) | {} | {} | {iters} |",
                    tg.name,
                    report.size as f64 / 1e6,
                    us(load_time),
                    report.memory_at_start as f64 / (1 << 20) as f64,
                    us(pct(&samples, 0.50)),
                    us(pct(&samples, 0.99)),
                );
            }
        }
    }

    reload_bench(&dir);
}

fn install(src: &Path, dest: &Path) {
    let tmp = dest.with_file_name(".policy.wasm.tmp");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

fn reload_bench(dir: &Path) {
    let (v1, v2) = (dir.join("hostile-v1.wasm"), dir.join("hostile-v2.wasm"));
    if !v1.is_file() || !v2.is_file() {
        println!("\nreload: hostile-v1/v2 missing: run scripts/build-plugins.sh");
        return;
    }
    let tmp = std::env::temp_dir().join(format!("wisp-reload-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let path = tmp.join("policy.wasm");
    install(&v1, &path);
    let slot = Arc::new(PolicySlot::open_watched(&path, PluginConfig::default()).unwrap());
    let req = &requests()[0].1;
    let offered = match req {
        DecisionRequest::SelectProposal { offered, .. } => offered.len(),
        _ => unreachable!(),
    };
    let rounds = 20;
    let mut samples = Vec::new();
    for round in 0..rounds {
        let (src, want) = if round % 2 == 0 { (&v2, offered - 1) } else { (&v1, 0) };
        std::thread::sleep(Duration::from_millis(100));
        let start = Instant::now();
        install(src, &path);
        loop {
            if let Ok(wisp_policy::DecisionAnswer::Proposal(c)) = slot.current().decide(req) {
                if c.index == want {
                    break;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(10), "reload did not happen");
            std::thread::sleep(Duration::from_micros(200));
        }
        samples.push(start.elapsed());
    }
    samples.sort();
    println!(
        "\n## Reload latency (temp file + rename -> new version answering; includes the {} ms debounce, compile, validate, configure)\n",
        wisp_policy::DEBOUNCE.as_millis()
    );
    println!("| plugin | p50 | p99 | max | n |\n|---|---|---|---|---|");
    println!(
        "| hostile-v1 <-> hostile-v2 (70 KB Rust) | {} | {} | {} | {rounds} |",
        us(pct(&samples, 0.5)),
        us(pct(&samples, 0.99)),
        us(*samples.last().unwrap())
    );
    drop(slot);
    let _ = std::fs::remove_dir_all(&tmp);
}
