//! Hostile plugins, one per test: each misbehaviour fails that one decision
//! closed with a typed error naming the plugin, and the host keeps working.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use wisp_policy::api::{AddressChoice, Policy, PolicyError, SaKind};
use wisp_policy::{load, DecisionError, DecisionKind, Limits, LoadError, PluginConfig};

fn config_with(limits: Limits) -> PluginConfig {
    PluginConfig { limits, ..PluginConfig::default() }
}

#[test]
fn unreachable_trap_fails_closed_and_host_goes_on() {
    let p = load(plugin("hostile-trap"), &PluginConfig::default()).unwrap();
    let err = p.try_select_proposal(&ctx(), SaKind::Child, &proposals(), &proposals()).unwrap_err();
    match &err {
        DecisionError::Trap { plugin, decision, detail } => {
            assert_eq!(plugin.name, "hostile-trap");
            assert_eq!(plugin.version, "1.0.0");
            assert_eq!(*decision, DecisionKind::SelectProposal);
            assert!(detail.contains("unreachable"), "trap detail: {detail}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // Through the engine-facing trait: Failed, carrying name and version.
    match p.select_proposal(&ctx(), SaKind::Child, &proposals(), &proposals()) {
        Err(PolicyError::Failed { decider, .. }) => assert!(decider.contains("hostile-trap 1.0.0"), "{decider}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    // The same plugin still answers its other decisions.
    p.try_authorize(&ctx(), &auth("alice.example.com")).unwrap();
    assert!(p.try_authorize(&ctx(), &auth("deny-mallory")).unwrap_err().is_refusal());
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) }, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The deadline is CPU time of the deciding thread (a descheduled thread is
/// not punished); the loop must be stopped before it burns 2x the deadline.
#[test]
fn infinite_loop_is_stopped_within_twice_the_deadline() {
    let deadline = Duration::from_millis(50);
    let p = load(plugin("hostile-spin"), &config_with(Limits { deadline, ..Limits::default() })).unwrap();
    for _ in 0..3 {
        let (cpu0, wall0) = (thread_cpu(), Instant::now());
        let err = p.try_select_proposal(&ctx(), SaKind::Ike, &proposals(), &proposals()).unwrap_err();
        let (cpu, wall) = (thread_cpu() - cpu0, wall0.elapsed());
        eprintln!("spin stopped after {cpu:?} CPU, {wall:?} wall");
        match &err {
            DecisionError::Timeout { plugin, deadline: d, .. } => {
                assert_eq!(plugin.name, "hostile-spin");
                assert_eq!(*d, deadline);
            }
            other => panic!("expected a timeout, got {other:?}"),
        }
        assert!(cpu >= deadline, "stopped after {cpu:?} of CPU, before the deadline");
        assert!(cpu < 2 * deadline, "burnt {cpu:?} of CPU, more than 2x the {deadline:?} deadline");
        assert!(wall < Limits::default().wall_deadline, "wall-clock cap not honoured: {wall:?}");
    }
    // Host and plugin keep working for the decisions that do not loop.
    let pair = p.try_narrow_selectors(&ctx(), &selector_request()).unwrap();
    assert_eq!(pair.remote, selector_request().remote_proposed);
}

/// The wall-clock cap stops a call even when its CPU budget is larger.
#[test]
fn wall_clock_cap_stops_a_loop_too() {
    let limits = Limits { deadline: Duration::from_secs(10), wall_deadline: Duration::from_millis(60), ..Limits::default() };
    let p = load(plugin("hostile-spin"), &config_with(limits)).unwrap();
    let started = Instant::now();
    match p.try_select_proposal(&ctx(), SaKind::Ike, &proposals(), &proposals()) {
        Err(DecisionError::Timeout { deadline, .. }) => assert_eq!(deadline, Duration::from_millis(60)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

/// A plugin blocked in a host call (WASI sleep) cannot be interrupted by the
/// epoch; the host cuts its sleeps to the call's wall-clock budget instead.
#[test]
fn hour_long_sleep_is_cut_to_the_wall_clock_cap() {
    let limits = Limits { wall_deadline: Duration::from_millis(100), ..Limits::default() };
    let p = load(plugin("hostile-sleep"), &config_with(limits)).unwrap();
    let started = Instant::now();
    match p.try_select_proposal(&ctx(), SaKind::Ike, &proposals(), &proposals()) {
        Err(DecisionError::Timeout { plugin, deadline, .. }) => {
            assert_eq!(plugin.name, "hostile-sleep");
            assert_eq!(deadline, Duration::from_millis(100));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(100) && took < Duration::from_secs(5), "took {took:?}");
    p.try_authorize(&ctx(), &auth("alice.example.com")).unwrap();
}

#[test]
fn memory_bomb_is_denied_at_the_cap() {
    let cap = 16 << 20;
    let p = load(plugin("hostile-bomb"), &config_with(Limits { memory: cap, ..Limits::default() })).unwrap();
    let err = p.try_select_proposal(&ctx(), SaKind::Child, &proposals(), &proposals()).unwrap_err();
    match &err {
        DecisionError::MemoryLimit { plugin, limit, .. } => {
            assert_eq!(plugin.name, "hostile-bomb");
            assert_eq!(*limit, cap);
        }
        other => panic!("expected the memory cap, got {other:?}"),
    }
    let created = p.instances_created();
    // The poisoned instance was dropped; the next decision gets a fresh one and works.
    p.try_authorize(&ctx(), &auth("alice.example.com")).unwrap();
    assert_eq!(p.instances_created(), created + 1);
    // A smaller cap is honoured too.
    let small = 4 << 20;
    let p = load(plugin("hostile-bomb"), &config_with(Limits { memory: small, ..Limits::default() })).unwrap();
    match p.try_select_proposal(&ctx(), SaKind::Child, &proposals(), &proposals()) {
        Err(DecisionError::MemoryLimit { limit, .. }) => assert_eq!(limit, small),
        other => panic!("expected the memory cap, got {other:?}"),
    }
}

#[test]
fn wrong_world_is_refused_naming_the_missing_export() {
    let err = load(plugin("hostile-wrong-world"), &PluginConfig::default()).unwrap_err();
    assert!(matches!(err, LoadError::MissingExport { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("wisp:policy/decisions@0.4.0"), "{msg}");
    assert!(msg.contains("hostile:other/calculator@1.0.0"), "message lists what it exports: {msg}");
}

#[test]
fn component_built_for_old_wit_is_refused_naming_its_version() {
    // Complete, well-behaved plugins, but built against the previous contracts:
    // wisp:policy@0.3.0 (no assign-address, auth-info without the EAP facts),
    // wisp:policy@0.2.0 (auth-info without issuer, SANs, serial, expiry) and
    // wisp:policy@0.1.0.
    for (file, built) in [("hostile-old-wit-v3", "0.3.0"), ("hostile-old-wit-v2", "0.2.0"), ("hostile-old-wit", "0.1.0")] {
        let err = load(plugin(file), &PluginConfig::default()).unwrap_err();
        assert!(matches!(err, LoadError::MissingExport { .. }), "{file}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&format!("built for wisp:policy@{built}, this host needs 0.4.0")), "{file}: {msg}");
        let report = wisp_policy::check(plugin(file)).unwrap_err().to_string();
        assert!(report.contains(&format!("built for wisp:policy@{built}")), "{file}: plugin check says it too: {report}");
    }
}

#[test]
fn missing_decision_functions_are_named() {
    let err = load(plugin("hostile-missing-export"), &PluginConfig::default()).unwrap_err();
    assert!(matches!(err, LoadError::MissingExport { .. }), "{err:?}");
    let msg = err.to_string();
    for f in ["select-proposal", "order-proposals", "authorize", "narrow-selectors", "assign-address"] {
        assert!(msg.contains(f), "{f} not named in: {msg}");
    }
    assert!(!msg.contains("`wisp:policy/decisions@0.4.0#info`"), "info is present: {msg}");
}

#[test]
fn random_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (seed, len) in [(1u64, 0usize), (2, 7), (3, 4096), (4, 100_000)] {
        let path = dir.path().join(format!("random-{seed}.wasm"));
        std::fs::write(&path, random_bytes(seed, len)).unwrap();
        let err = load(&path, &PluginConfig::default()).unwrap_err();
        assert!(matches!(err, LoadError::NotAComponent { .. }), "{len} random bytes: {err:?}");
    }
    // Random bytes behind a valid component header are refused by the parser.
    let mut bytes = b"\0asm\x0d\0\x01\0".to_vec();
    bytes.extend(random_bytes(5, 5000));
    let path = dir.path().join("header.wasm");
    std::fs::write(&path, bytes).unwrap();
    let err = load(&path, &PluginConfig::default()).unwrap_err();
    assert!(matches!(err, LoadError::NotAComponent { .. }), "{err:?}");
    // A core module is not a component, and the message says so.
    let path = dir.path().join("core.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    let err = load(&path, &PluginConfig::default()).unwrap_err();
    assert!(err.to_string().contains("core WebAssembly module"), "{err}");
}

#[test]
fn index_out_of_range_is_a_refusal() {
    let p = load(plugin("hostile-bad-index"), &PluginConfig::default()).unwrap();
    let err = p.try_select_proposal(&ctx(), SaKind::Child, &proposals(), &proposals()).unwrap_err();
    match &err {
        DecisionError::InvalidAnswer { plugin, detail, .. } => {
            assert_eq!(plugin.name, "hostile-bad-index");
            assert!(detail.contains("index 8 out of range (3 offered)"), "{detail}");
        }
        other => panic!("expected an invalid answer, got {other:?}"),
    }
    assert!(err.is_refusal());
    assert!(matches!(p.select_proposal(&ctx(), SaKind::Child, &proposals(), &proposals()), Err(PolicyError::Refused { .. })));
    // order-proposals repeating an index is refused as well.
    let err = p.try_order_proposals(&ctx(), SaKind::Ike, &proposals()).unwrap_err();
    assert!(matches!(&err, DecisionError::InvalidAnswer { detail, .. } if detail.contains("twice")), "{err:?}");
}

/// Captures tracing output of the current thread.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn selector_wider_than_offered_is_a_refusal_and_logged() {
    let buf = Buf::default();
    let w = buf.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || w.clone()).with_ansi(false).finish();
    let p = load(plugin("hostile-wide-selector"), &PluginConfig::default()).unwrap();
    let err = tracing::subscriber::with_default(subscriber, || p.try_narrow_selectors(&ctx(), &selector_request()).unwrap_err());
    match &err {
        DecisionError::InvalidAnswer { plugin, decision, detail } => {
            assert_eq!(plugin.name, "hostile-wide-selector");
            assert_eq!(*decision, DecisionKind::NarrowSelectors);
            assert!(detail.contains("not inside any proposed remote selector"), "{detail}");
        }
        other => panic!("expected an invalid answer, got {other:?}"),
    }
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("WARN") && log.contains("hostile-wide-selector 1.0.0"), "log: {log}");
    // The other decisions of that plugin are fine.
    assert_eq!(p.try_select_proposal(&ctx(), SaKind::Child, &proposals(), &proposals()).unwrap().index, 0);
}

/// `assign-address` answers outside the request's pools are refused by the
/// host's validation (typed, naming what was answered; a flood of picks is
/// cut short), and the plugin goes on answering.
#[test]
fn address_outside_the_pools_is_a_refusal() {
    // 100,000 picks take longer than the default deadline to lift in a debug build.
    let p = load(plugin("hostile-bad-address"), &config_with(Limits { deadline: Duration::from_secs(2), ..Limits::default() })).unwrap();
    for (who, want) in [
        ("outside", "assigned 10.9.9.9, outside pools rw (10.3.0.0/24)"),
        ("unknown-pool", "picked pool nope, not one of the connection's pools (rw (10.3.0.0/24), rw6 (fd00:3::/120))"),
        ("wrong-family", "picked pool rw6 (IPv6), but the peer asked for no IPv6 address"),
        ("twice", "picked two IPv4 addresses (address 10.3.0.1, address 10.3.0.1)"),
        ("many", "picked two IPv4 addresses (pool rw, pool rw)"),
    ] {
        let err = p.try_assign_address(&ctx(), &address_request(who)).unwrap_err();
        match &err {
            DecisionError::InvalidAnswer { plugin, decision, detail } => {
                assert_eq!((plugin.name.as_str(), *decision), ("hostile-bad-address", DecisionKind::AssignAddress));
                assert_eq!(detail, want, "{who}");
            }
            other => panic!("{who}: expected an invalid answer, got {other:?}"),
        }
        // Through the engine-facing trait: a refusal naming the plugin, which the
        // engine answers with INTERNAL_ADDRESS_FAILURE.
        match p.assign_address(&ctx(), &address_request(who)) {
            Err(PolicyError::Refused { decider, reason }) => {
                assert!(decider.starts_with("hostile-bad-address 1.0.0"), "{decider}");
                assert_eq!(reason, format!("invalid plugin answer: {want}"));
            }
            other => panic!("{who}: expected a refusal, got {other:?}"),
        }
    }
    // No opinion is an answer like any other.
    assert_eq!(p.try_assign_address(&ctx(), &address_request("alice")).unwrap(), AddressChoice::default());
    p.try_authorize(&ctx(), &auth("alice.example.com")).unwrap();
}

#[test]
fn settings_refused_by_configure_fail_the_load() {
    let cfg = PluginConfig {
        settings: vec![wisp_policy::Setting::new("refuse-settings", wisp_policy::SettingValue::Boolean(true))],
        ..PluginConfig::default()
    };
    let err = load(plugin("hostile-v1"), &cfg).unwrap_err();
    assert!(matches!(err, LoadError::Configure { .. }), "{err:?}");
    assert!(err.to_string().contains("told to refuse my settings"), "{err}");
}

#[test]
fn memory_cap_below_the_initial_memory_fails_the_load_clearly() {
    let err = load(plugin("hostile-v1"), &config_with(Limits { memory: 64 << 10, ..Limits::default() })).unwrap_err();
    assert!(matches!(err, LoadError::Instantiate { .. }), "{err:?}");
    assert!(err.to_string().contains("memory cap"), "{err}");
}

#[test]
fn deep_recursion_overflows_the_stack_and_fails_closed() {
    let p = load(plugin("hostile-recursion"), &PluginConfig::default()).unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let err = p.try_select_proposal(&ctx(), SaKind::Ike, &proposals(), &proposals()).unwrap_err();
        let took = started.elapsed();
        eprintln!("recursion stopped after {took:?}: {err}");
        match &err {
            DecisionError::Trap { plugin, detail, .. } => {
                assert_eq!(plugin.name, "hostile-recursion");
                assert!(detail.contains("call stack exhausted"), "{detail}");
            }
            other => panic!("expected a stack overflow trap, got {other:?}"),
        }
        assert!(took < Duration::from_millis(500), "overflowing 1 MiB of wasm stack took {took:?}");
        assert!(matches!(p.select_proposal(&ctx(), SaKind::Ike, &proposals(), &proposals()), Err(PolicyError::Failed { .. })));
    }
    // The host (this thread's own stack included) and the plugin's other decisions are fine.
    p.try_authorize(&ctx(), &auth("alice.example.com")).unwrap();
}

#[test]
fn log_flood_is_capped_per_call_and_counted() {
    let buf = Buf::default();
    let w = buf.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || w.clone()).with_ansi(false).finish();
    // A generous CPU budget: the cap, not the deadline, must stop the flood.
    let p = load(plugin("hostile-log-flood"), &config_with(Limits { deadline: Duration::from_secs(2), ..Limits::default() })).unwrap();
    let started = Instant::now();
    let r = tracing::subscriber::with_default(subscriber, || p.try_authorize(&ctx(), &auth("alice.example.com")));
    let took = started.elapsed();
    r.unwrap();
    let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let kept: Vec<&str> = log.lines().filter(|l| l.contains("wisp_policy::plugin") && !l.contains("plugin log lines dropped")).collect();
    let kept_bytes: usize = kept.iter().map(|l| l.len()).sum();
    eprintln!("20000 lines of 1 KiB: {} kept ({kept_bytes} bytes of log), {} dropped, {took:?}", kept.len(), p.log_lines_dropped());
    assert!(!kept.is_empty() && kept.len() as u32 <= wisp_policy::MAX_LOG_LINES_PER_CALL, "{} lines kept", kept.len());
    assert!(kept_bytes < wisp_policy::MAX_LOG_BYTES_PER_CALL + kept.len() * 200, "{kept_bytes} bytes of plugin log");
    assert_eq!(p.log_lines_dropped(), 20_000 - kept.len() as u64);
    let summary = log.lines().find(|l| l.contains("plugin log lines dropped")).expect("one warning with the count");
    assert!(summary.contains(&format!("dropped_lines={}", 20_000 - kept.len())) && summary.contains("hostile-log-flood"), "{summary}");
    assert_eq!(log.lines().filter(|l| l.contains("plugin log lines dropped")).count(), 1);
    assert!(took < Duration::from_secs(1), "the flood cost {took:?}");
    // The cap is per call: the next call logs again (and drops again).
    p.try_authorize(&ctx(), &auth("alice.example.com")).unwrap();
    assert_eq!(p.log_lines_dropped(), 2 * (20_000 - kept.len() as u64));
}

#[test]
fn huge_answers_fail_closed_with_bounded_memory() {
    let Some(out) = common::isolated("huge_answers_fail_closed_with_bounded_memory", || {
        let p =
            load(plugin("hostile-huge-answer"), &config_with(Limits { deadline: Duration::from_secs(2), ..Limits::default() })).unwrap();
        let (_, before) = memory_kib();
        let started = Instant::now();
        // 1,000,000 indices for 3 configured proposals.
        let err = p.try_order_proposals(&ctx(), SaKind::Ike, &proposals()).unwrap_err();
        assert!(matches!(&err, DecisionError::InvalidAnswer { detail, .. } if detail.contains("1000000 indices for 3")), "{err:?}");
        // 100,000 selectors.
        let err = p.try_narrow_selectors(&ctx(), &selector_request()).unwrap_err();
        assert!(
            matches!(&err, DecisionError::InvalidAnswer { detail, .. } if detail.contains("100000 remote selectors returned")),
            "{err:?}"
        );
        // A 4 MiB refusal reason is cut to MAX_REASON_LEN.
        match p.select_proposal(&ctx(), SaKind::Ike, &proposals(), &proposals()) {
            Err(PolicyError::Refused { reason, .. }) => assert!(reason.len() <= 512 + 3, "{} bytes of reason", reason.len()),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let took = started.elapsed();
        let (peak, _) = memory_kib();
        println!("PEAK_GROWTH_KIB={} TOOK_MS={}", peak.saturating_sub(before), took.as_millis());
        p.try_authorize(&ctx(), &auth("alice.example.com")).unwrap();
    }) else {
        return;
    };
    // The child's libtest may print the line right after its "test ... " prefix.
    let at = out.find("PEAK_GROWTH_KIB=").expect(&out);
    let line = out[at..].lines().next().unwrap();
    let growth: u64 = line.split_whitespace().next().unwrap()["PEAK_GROWTH_KIB=".len()..].parse().unwrap();
    eprintln!("{line}");
    // The guest's memory (16 MiB cap) bounds the answer, the host copy is of the same order.
    assert!(growth < 48 << 10, "peak memory grew by {growth} KiB for three huge answers");
}

#[test]
fn oversized_component_is_refused_before_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = std::fs::read(plugin("hostile-v1")).unwrap();
    let path = dir.path().join("big.wasm");
    let size = (wisp_policy::DEFAULT_MAX_SIZE + (1 << 20)) as usize;
    std::fs::write(&path, padded_component(&v1, size)).unwrap();
    let started = Instant::now();
    let err = load(&path, &PluginConfig::default()).unwrap_err();
    let took = started.elapsed();
    match &err {
        LoadError::TooLarge { path: p, size: s, limit } => {
            assert_eq!(p, &path);
            assert_eq!(*s, size as u64);
            assert_eq!(*limit, wisp_policy::DEFAULT_MAX_SIZE);
        }
        other => panic!("expected the size cap, got {other:?}"),
    }
    assert!(err.to_string().contains("big.wasm") && err.to_string().contains("max_size"), "{err}");
    assert!(took < Duration::from_millis(100), "refusing took {took:?} (the file must not be read or compiled)");
    // The same bytes are a valid component: only the cap refused them.
    let limits = Limits { max_size: 2 * size as u64, ..Limits::default() };
    let p = load(&path, &config_with(limits)).unwrap();
    assert_eq!(p.meta().size, size);
    // A smaller cap holds for a small file too, and for bytes handed over in memory.
    let limits = Limits { max_size: 1024, ..Limits::default() };
    let err = load(plugin("hostile-v1"), &config_with(limits.clone())).unwrap_err();
    assert!(matches!(err, LoadError::TooLarge { limit: 1024, .. }), "{err:?}");
    let err = wisp_policy::LoadedPlugin::load_bytes(&v1, &path, &config_with(limits), 1).unwrap_err();
    assert!(matches!(err, LoadError::TooLarge { limit: 1024, .. }), "{err:?}");
}

#[test]
fn plugin_file_writable_by_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wasm");
    std::fs::copy(plugin("hostile-v1"), &path).unwrap();
    for (mode, ok) in [(0o644, true), (0o600, true), (0o664, false), (0o646, false), (0o666, false), (0o620, false)] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let r = load(&path, &PluginConfig::default());
        if ok {
            r.unwrap_or_else(|e| panic!("mode {mode:o}: {e}"));
            continue;
        }
        let err = r.unwrap_err();
        assert!(matches!(err, LoadError::UnsafeMode { mode: m, .. } if m == mode), "mode {mode:o}: {err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()) && msg.contains(&format!("{mode:04o}")), "{msg}");
    }
}

/// Compiling happens on the watcher's thread: while a slow-to-compile new
/// version is being compiled, the old one stays in charge and decisions keep
/// their latency; the size cap bounds how slow a version can be.
#[test]
fn slow_to_compile_version_loads_off_the_decision_path() {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.wasm");
    std::fs::copy(plugin("hostile-v1"), &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let slot = Arc::new(wisp_policy::PolicySlot::open_watched(&path, PluginConfig::default()).unwrap());
    let slow = with_extra_core_module(&std::fs::read(plugin("hostile-v2")).unwrap(), &slow_core_module(96, 64 << 10));
    // Decisions run all along, measuring their latency and who answered.
    let stop = Arc::new(AtomicBool::new(false));
    let decider = {
        let (slot, stop) = (slot.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen: Vec<(Duration, String)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let p = slot.current();
                p.try_authorize(&ctx(), &auth("alice.example.com")).unwrap();
                seen.push((t.elapsed(), p.label().version.clone()));
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let tmp = dir.path().join("p.wasm.tmp");
    std::fs::write(&tmp, &slow).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    while slot.status().version != "2.0.0" {
        assert!(started.elapsed() < Duration::from_secs(120), "v2 never took charge: {:?}", slot.status().last_error);
        std::thread::sleep(Duration::from_millis(5));
    }
    let swap = started.elapsed();
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let seen = decider.join().unwrap();
    let during: Vec<Duration> = seen.iter().filter(|(_, v)| v == "1.0.0").map(|(d, _)| *d).skip(10).collect();
    let mut sorted = during.clone();
    sorted.sort();
    let (p50, max) = (sorted[sorted.len() / 2], *sorted.last().unwrap());
    eprintln!(
        "{} KiB component took {swap:?} to take charge; {} decisions by v1 meanwhile, p50 {p50:?}, max {max:?}",
        slow.len() >> 10,
        during.len()
    );
    assert!(swap > Duration::from_millis(300), "the slow component compiled in {swap:?}: not slow enough to show anything");
    assert!(seen.iter().any(|(_, v)| v == "2.0.0"), "decisions moved to v2");
    assert!(during.len() >= 20, "only {} decisions while compiling", during.len());
    assert!(max < swap / 4, "a decision waited {max:?} while the new version compiled for {swap:?}");
    assert!(p50 < Duration::from_millis(20), "p50 latency {p50:?} while compiling");
    // The size cap bounds compile time: below the component's size it is refused at once.
    let err = load(&path, &config_with(Limits { max_size: (slow.len() / 2) as u64, ..Limits::default() })).unwrap_err();
    assert!(matches!(err, LoadError::TooLarge { .. }), "{err:?}");
}
