//! Hot reload: temp file + rename, broken versions, decisions across a swap.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use wisp_policy::api::SaKind;
use wisp_policy::{LoadError, PluginConfig, PolicySlot, ReloadOutcome};

/// v1 picks the first proposal, v2 the last.
/// The tests here time reloads (and one of them runs 1,000 decisions at
/// once): run them one at a time so that no test's load lands on another's
/// clock.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const V1_ANSWER: usize = 0;
const V2_ANSWER: usize = 2;

/// Writes `src` next to `dest` under a temporary name, then renames it over
/// `dest` (what editors and `cp`-then-`mv` deployments do).
fn install(src: &Path, dest: &Path) {
    let tmp = dest.with_file_name(".policy.wasm.tmp");
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
    start.elapsed()
}

#[test]
fn new_version_via_rename_is_active_within_a_second() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.wasm");
    install(&plugin("hostile-v1"), &path);
    let slot = PolicySlot::open_watched(&path, PluginConfig::default()).unwrap();
    let st = slot.status();
    assert_eq!((st.name.as_str(), st.version.as_str(), st.number), ("hostile-reload", "1.0.0", 1));
    assert!(st.watching);
    assert_eq!(slot.current().try_select_proposal(&ctx(), SaKind::Child, &proposals(), &proposals()).unwrap().index, V1_ANSWER);

    install(&plugin("hostile-v2"), &path);
    let took = wait_for("v2 to answer", Duration::from_secs(1), || {
        slot.current().try_select_proposal(&ctx(), SaKind::Child, &proposals(), &proposals()).unwrap().index == V2_ANSWER
    });
    eprintln!("rename -> v2 answering: {took:?}");
    let st = slot.status();
    assert_eq!((st.version.as_str(), st.number), ("2.0.0", 2));
    assert_eq!(st.sha256, wisp_policy::sha256_hex(&std::fs::read(plugin("hostile-v2")).unwrap()));
    assert!(st.last_error.is_none());
    // Order differs as well.
    assert_eq!(slot.current().try_order_proposals(&ctx(), SaKind::Ike, &proposals()).unwrap(), vec![2, 1, 0]);

    // Rewriting identical content does not make a new version.
    install(&plugin("hostile-v2"), &path);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(slot.status().number, 2);
    assert_eq!(slot.reload().unwrap(), ReloadOutcome::Unchanged);
}

#[test]
fn broken_new_version_leaves_the_old_one_in_charge() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.wasm");
    install(&plugin("hostile-v1"), &path);
    let slot = PolicySlot::open_watched(&path, PluginConfig::default()).unwrap();

    install(&plugin("hostile-wrong-world"), &path);
    wait_for("the failure to be reported", Duration::from_secs(2), || slot.status().last_error.is_some());
    let st = slot.status();
    assert_eq!((st.version.as_str(), st.number), ("1.0.0", 1), "v1 stays in charge");
    let failure = st.last_error.unwrap();
    assert!(matches!(failure.error, LoadError::MissingExport { .. }), "{:?}", failure.error);
    assert!(failure.error.to_string().contains("wisp:policy/decisions@0.4.0"));
    assert_eq!(slot.current().try_select_proposal(&ctx(), SaKind::Child, &proposals(), &proposals()).unwrap().index, V1_ANSWER);

    // Garbage is refused the same way, with its own reason.
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, random_bytes(42, 3000)).unwrap();
    install(&garbage, &path);
    wait_for(
        "the garbage to be reported",
        Duration::from_secs(2),
        || matches!(slot.status().last_error, Some(f) if matches!(f.error, LoadError::NotAComponent { .. })),
    );
    assert_eq!(slot.status().number, 1);
    assert_eq!(slot.current().try_select_proposal(&ctx(), SaKind::Child, &proposals(), &proposals()).unwrap().index, V1_ANSWER);

    // A good version afterwards takes over and clears the error.
    install(&plugin("hostile-v2"), &path);
    wait_for("v2", Duration::from_secs(2), || slot.status().version == "2.0.0");
    let st = slot.status();
    assert_eq!(st.number, 2, "failed attempts do not use up version numbers");
    assert!(st.last_error.is_none());
}

#[test]
fn decision_in_flight_finishes_on_its_version() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.wasm");
    install(&plugin("hostile-v1"), &path);
    let slot = PolicySlot::open(&path, PluginConfig::default()).unwrap();
    let held = slot.current();
    install(&plugin("hostile-v2"), &path);
    assert_eq!(slot.reload().unwrap(), ReloadOutcome::Loaded(2));
    assert_eq!(held.try_select_proposal(&ctx(), SaKind::Child, &proposals(), &proposals()).unwrap().index, V1_ANSWER);
    assert_eq!(slot.current().try_select_proposal(&ctx(), SaKind::Child, &proposals(), &proposals()).unwrap().index, V2_ANSWER);
    assert!(!slot.status().watching);
}

#[test]
fn thousand_concurrent_decisions_across_a_reload() {
    let _serial = serial();
    const THREADS: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.wasm");
    install(&plugin("hostile-v1"), &path);
    // 1000 threads on a small machine: a decision may wait long for a CPU, so
    // the wall-clock cap is lifted here (the CPU deadline still applies).
    let limits = wisp_policy::Limits { wall_deadline: Duration::from_secs(120), ..Default::default() };
    let config = PluginConfig { limits, ..PluginConfig::default() };
    let slot = Arc::new(PolicySlot::open_watched(&path, config).unwrap());
    let start = Arc::new(Barrier::new(THREADS + 1));
    let before_done = Arc::new(AtomicUsize::new(0));
    let swapped = Arc::new(AtomicBool::new(false));
    let props = Arc::new(proposals());

    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (slot, start, before_done, swapped, props) =
                (slot.clone(), start.clone(), before_done.clone(), swapped.clone(), props.clone());
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || {
                    let mut answers = Vec::new();
                    start.wait();
                    // One decision that runs while the reload is being prepared...
                    answers.push(slot.current().try_select_proposal(&ctx(), SaKind::Child, &props, &props).map(|c| c.index));
                    before_done.fetch_add(1, Ordering::SeqCst);
                    // ...and more until the swap is visible, then one after it.
                    while !swapped.load(Ordering::SeqCst) {
                        answers.push(slot.current().try_select_proposal(&ctx(), SaKind::Child, &props, &props).map(|c| c.index));
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    answers.push(slot.current().try_select_proposal(&ctx(), SaKind::Child, &props, &props).map(|c| c.index));
                    answers
                })
                .unwrap()
        })
        .collect();

    start.wait();
    install(&plugin("hostile-v2"), &path);
    wait_for("v2 in charge", Duration::from_secs(60), || slot.status().number == 2);
    swapped.store(true, Ordering::SeqCst);

    let (mut v1, mut v2, mut total) = (0usize, 0usize, 0usize);
    for h in handles {
        let answers = h.join().expect("decision thread panicked");
        let mut seen_v2 = false;
        for a in answers {
            total += 1;
            match a {
                Ok(V1_ANSWER) => {
                    assert!(!seen_v2, "a thread saw v1 again after v2 answered it");
                    v1 += 1
                }
                Ok(V2_ANSWER) => {
                    seen_v2 = true;
                    v2 += 1
                }
                other => panic!("decision failed or answered by neither version: {other:?}"),
            }
        }
        assert!(seen_v2, "every thread's last decision ran after the swap");
    }
    eprintln!("{total} decisions: {v1} answered by v1, {v2} by v2");
    assert_eq!(before_done.load(Ordering::SeqCst), THREADS);
    assert!(total >= 2 * THREADS);
    assert!(v1 > 0 && v2 >= THREADS);
    assert_eq!(v1 + v2, total);
}

#[test]
fn new_settings_make_a_new_version_and_bad_ones_are_refused() {
    let _serial = serial();
    use wisp_policy::{Setting, SettingValue};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.wasm");
    install(&plugin("hostile-v1"), &path);
    let slot = PolicySlot::open(&path, PluginConfig::default()).unwrap();
    assert_eq!(slot.set_settings(vec![Setting::new("a", SettingValue::Integer(1))]).unwrap(), 2);
    assert_eq!(slot.status().number, 2);
    let err = slot.set_settings(vec![Setting::new("refuse-settings", SettingValue::Boolean(true))]).unwrap_err();
    assert!(matches!(err, LoadError::Configure { .. }));
    let st = slot.status();
    assert_eq!(st.number, 2);
    assert!(st.last_error.is_some());
    assert_eq!(slot.current().try_select_proposal(&ctx(), SaKind::Child, &proposals(), &proposals()).unwrap().index, V1_ANSWER);
}
