//! Full IKE SA + first Child SA establishments per second, in-process on one
//! core: both engines in this thread, PSK + x25519 + AES-GCM-256, with the
//! native ConfigPolicy and with the wasm default policy plugin
//! (build/plugins/default.wasm, built by scripts/build-plugins.sh); then
//! certificate authentication beside it (ECDSA P-256, Ed25519, RSA-2048 end
//! entities from one CA of the same type, made with strongSwan's `pki`):
//! each side signs once and verifies the peer's chain and signature.
//!
//! Prints a table and the share of time spent in DH (x25519 key generation +
//! shared secret, measured separately: 2 of each per handshake).
//!
//! `cargo bench -p wisp-ike --bench handshake`

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp_ike::config::{identity, selector, ChildConfig, Config, ConnectionConfig};
use wisp_ike::crypto::{DhGroup, DhKeyPair};
use wisp_ike::engine::Engine;
use wisp_ike::event::Event;
use wisp_ike::native_policy::ConfigPolicy;
use wisp_policy_api::Policy;

fn configs() -> (Config, Config) {
    let mk = |name: &str, me: &str, peer: &str, lts: &str, rts: &str, my_ip: &str, peer_ip: &str| {
        let mut c = ConnectionConfig::new(
            name,
            identity(&format!("{me}.example")),
            Some(identity(&format!("{peer}.example"))),
            b"bench-psk-0123456789",
            &["aes256gcm16-prfsha256-x25519"],
        )
        .unwrap();
        c.local_addrs = vec![my_ip.parse().unwrap()];
        c.remote_addrs = vec![peer_ip.parse::<std::net::IpAddr>().unwrap().into()];
        c.initial_contact = false;
        c.children.push(ChildConfig::new("net", vec![selector(lts).unwrap()], vec![selector(rts).unwrap()], &["aes256gcm16"]).unwrap());
        c
    };
    let a = Config { connections: vec![mk("ab", "a", "b", "10.1.0.0/24", "10.2.0.0/24", "10.0.0.1", "10.0.0.2")], ..Config::default() };
    let b = Config { connections: vec![mk("ba", "b", "a", "10.2.0.0/24", "10.1.0.0/24", "10.0.0.2", "10.0.0.1")], ..Config::default() };
    (a, b)
}

/// Establish `n` IKE SAs (each with its Child SA) between two engines; the
/// engines are recycled every 256 SAs so the per-SA state stays small.
fn run(n: usize, pa: Arc<dyn Policy>, pb: Arc<dyn Policy>) -> Duration {
    let (ca, cb) = configs();
    run_with(n, ca, cb, pa, pb)
}

fn run_with(n: usize, ca: Config, cb: Config, pa: Arc<dyn Policy>, pb: Arc<dyn Policy>) -> Duration {
    let mut seed = 0u8;
    let fresh = |seed: &mut u8| {
        *seed = seed.wrapping_add(2);
        let mut a = Engine::new(ca.clone(), pa.clone(), [*seed; 32]).unwrap();
        let mut b = Engine::new(cb.clone(), pb.clone(), [seed.wrapping_add(1); 32]).unwrap();
        a.set_unix_time(1_800_000_000);
        b.set_unix_time(1_800_000_000);
        (a, b)
    };
    let (mut a, mut b) = fresh(&mut seed);
    let now = Duration::from_secs(1);
    let start = Instant::now();
    let mut done = 0;
    while done < n {
        if done % 256 == 0 && done > 0 {
            (a, b) = fresh(&mut seed);
        }
        a.initiate(now, "ab").unwrap();
        let mut up = 0;
        for _ in 0..8 {
            while let Some(t) = a.poll_transmit() {
                b.handle_datagram(now, t.remote, t.local, &t.bytes);
            }
            while let Some(t) = b.poll_transmit() {
                a.handle_datagram(now, t.remote, t.local, &t.bytes);
            }
            while let Some(e) = a.poll_event() {
                if matches!(e, Event::ChildSaUp(_)) {
                    up += 1;
                }
            }
            while let Some(e) = b.poll_event() {
                if matches!(e, Event::ChildSaUp(_)) {
                    up += 1;
                }
            }
            if up == 2 {
                break;
            }
        }
        assert_eq!(up, 2, "handshake {done} did not complete");
        done += 1;
    }
    start.elapsed()
}

/// Time of the DH work in one handshake: 2 key generations + 2 shared secrets.
fn dh_per_handshake(iters: usize) -> Duration {
    let mut rng = rand_core::OsRng;
    let peer = DhKeyPair::generate(DhGroup::Curve25519, &mut rng);
    let start = Instant::now();
    for _ in 0..iters {
        let kp = DhKeyPair::generate(DhGroup::Curve25519, &mut rng);
        let s = kp.shared_secret(peer.public_value()).unwrap();
        std::hint::black_box(s);
    }
    start.elapsed() * 2 / iters as u32
}

/// Both sides with certificates of key type `kt` (`pki --gen` arguments)
/// from one CA: None when strongSwan's `pki` is not installed.
fn cert_configs(kt: &[&str], tag: &str) -> Option<(Config, Config)> {
    use std::process::Command;
    use wisp_ike::config::{LocalAuth, LocalCredential, RemoteAuth, TrustConfig};
    if !std::path::Path::new("/usr/bin/pki").is_file() {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("wisp-bench-certs-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = |args: &[&str]| -> Vec<u8> {
        let o = Command::new("/usr/bin/pki").args(args).output().expect("pki");
        assert!(o.status.success(), "pki {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    let f = |n: &str| dir.join(n).display().to_string();
    let gen = |n: &str| std::fs::write(dir.join(n), pki(&[&["--gen"], kt].concat())).unwrap();
    gen("ca-key");
    std::fs::write(dir.join("ca"), pki(&["--self", "--ca", "--in", &f("ca-key"), "--type", "priv", "--dn", "CN=bench CA"])).unwrap();
    let (mut a, mut b) = configs();
    for (c, me) in [(&mut a.connections[0], "a"), (&mut b.connections[0], "b")] {
        gen(me);
        let san = format!("{me}.example");
        let cert = pki(&[
            "--issue",
            "--in",
            &f(me),
            "--type",
            "priv",
            "--cakey",
            &f("ca-key"),
            "--cacert",
            &f("ca"),
            "--dn",
            &format!("CN={san}"),
            "--san",
            &san,
        ]);
        let key = wisp_ike::crypto::sig::PrivateKey::from_pem_or_der(&std::fs::read(dir.join(me)).unwrap()).unwrap();
        c.local_auth = LocalAuth::Pubkey(Arc::new(LocalCredential::new(key, vec![cert], false).unwrap()));
        c.remote_auth = RemoteAuth::Pubkey(Arc::new(TrustConfig::new(vec![std::fs::read(dir.join("ca")).unwrap()], Vec::new()).unwrap()));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Some((a, b))
}

fn plugin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../build/plugins/default.wasm")
}

fn main() {
    let n: usize = std::env::var("WISP_BENCH_HANDSHAKES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let dh = dh_per_handshake(2000);
    let (ca, cb) = configs();
    let native_a: Arc<dyn Policy> = Arc::new(ConfigPolicy::new(&ca));
    let native_b: Arc<dyn Policy> = Arc::new(ConfigPolicy::new(&cb));
    run(200, native_a.clone(), native_b.clone()); // warm-up
    let t_native = run(n, native_a, native_b);
    let mut rows = vec![("native ConfigPolicy", n, t_native)];

    let path = plugin_path();
    if path.exists() {
        let pc = wisp_policy::PluginConfig {
            settings: vec![wisp_policy::Setting::new("allow_any", wisp_policy::SettingValue::Boolean(true))],
            ..Default::default()
        };
        let slot_a = wisp_policy::PolicySlot::open(&path, pc.clone()).expect("load default.wasm");
        let slot_b = wisp_policy::PolicySlot::open(&path, pc).expect("load default.wasm");
        let (pa, pb): (Arc<dyn Policy>, Arc<dyn Policy>) = (Arc::new(slot_a), Arc::new(slot_b));
        run(200, pa.clone(), pb.clone());
        let t = run(n, pa, pb);
        rows.push(("wasm default.wasm", n, t));
    } else {
        println!("wasm variant skipped: {} missing (run scripts/build-plugins.sh)", path.display());
    }

    for (name, kt, tag) in [
        ("native, ECDSA P-256 certificates", &["--type", "ecdsa", "--size", "256"][..], "p256"),
        ("native, Ed25519 certificates", &["--type", "ed25519"][..], "ed25519"),
        ("native, RSA-2048 certificates", &["--type", "rsa", "--size", "2048"][..], "rsa"),
    ] {
        let Some((ca, cb)) = cert_configs(kt, tag) else {
            println!("certificate variants skipped: /usr/bin/pki missing (apt install strongswan-pki)");
            break;
        };
        let (pa, pb): (Arc<dyn Policy>, Arc<dyn Policy>) = (Arc::new(ConfigPolicy::new(&ca)), Arc::new(ConfigPolicy::new(&cb)));
        let m = (n / 2).max(100);
        run_with(100, ca.clone(), cb.clone(), pa.clone(), pb.clone());
        rows.push((name, m, run_with(m, ca, cb, pa, pb)));
    }

    println!("IKE SA + first Child SA establishments, both ends in one thread (x25519, AES-GCM-256; PSK unless named)");
    println!("| policy | handshakes | time | per handshake | handshakes/s | DH share |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, n, t) in rows {
        let per = t / n as u32;
        let rate = n as f64 / t.as_secs_f64();
        let share = dh.as_secs_f64() / per.as_secs_f64() * 100.0;
        println!("| {name} | {n} | {:.3} s | {:.1} µs | {:.0} | {:.0} % |", t.as_secs_f64(), per.as_secs_f64() * 1e6, rate, share);
    }
    println!("DH per handshake (2 x25519 keygen + 2 shared secrets): {:.1} µs", dh.as_secs_f64() * 1e6);
}
