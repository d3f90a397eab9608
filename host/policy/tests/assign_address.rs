//! `assign-address` end to end through the real plugin host: the example
//! allow-list (`build/plugins/allowlist.wasm`, settings `peers` and
//! `leases`) decides on a `DecisionPool` worker, as in the gateway; the IKE
//! engine parks each IKE_AUTH until the answer is in, then leases what the
//! plugin picked from the daemon's pools. A plugin answer outside the pools
//! is refused by the host's validation: the client hears
//! INTERNAL_ADDRESS_FAILURE and nothing is leased. Real time, one thread
//! driving the engines (as a gateway driver does).

mod common;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp_ike::config::{identity, selector, AddrMatch, ChildConfig, Config, ConnectionConfig, IdMatch};
use wisp_ike::engine::Engine;
use wisp_ike::event::{Event, FailureReason};
use wisp_ike::native_policy::ConfigPolicy;
use wisp_ike::pool::{PoolConfig, Pools};
use wisp_policy::{load, DecisionPool, PluginConfig, Setting, SettingValue};

const GW: &str = "10.0.0.1";
const IKE: [&str; 1] = ["aes256gcm16-prfsha256-x25519"];
const ESP: [&str; 1] = ["aes256gcm16"];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn gateway() -> Config {
    let mut c = ConnectionConfig::new("rw", identity("gw.example"), None, b"a-long-enough-psk", &IKE).unwrap();
    c.local_addrs = vec![ip(GW)];
    c.remote_addrs = vec![AddrMatch::parse("10.0.5.0/24").unwrap()];
    c.remote_id = IdMatch::parse("*.rw.example");
    c.pools = vec!["rw".into(), "staff".into()];
    c.children.push(ChildConfig::new("net", vec![selector("10.1.0.0/16").unwrap()], vec![], &ESP).unwrap());
    Config { connections: vec![c], ..Config::default() }
}

fn client(id: &str, addr: IpAddr) -> Config {
    let mut c = ConnectionConfig::new("gw", identity(id), Some(identity("gw.example")), b"a-long-enough-psk", &IKE).unwrap();
    c.local_addrs = vec![addr];
    c.remote_addrs = vec![ip(GW).into()];
    c.vips = vec![ip("0.0.0.0")];
    c.children.push(ChildConfig::new("net", vec![], vec![selector("10.1.0.0/16").unwrap()], &ESP).unwrap());
    Config { connections: vec![c], ..Config::default() }
}

#[test]
fn the_plugin_picks_and_the_host_enforces() {
    let settings = vec![
        Setting::new("peers", SettingValue::TextList(vec!["alice.rw.example".into(), "bob.rw.example".into(), "carol.rw.example".into()])),
        Setting::new(
            "leases",
            SettingValue::TextList(vec![
                "alice.rw.example 10.3.0.7".into(),
                "bob.rw.example pool staff".into(),
                "carol.rw.example 10.9.9.9".into(),
            ]),
        ),
    ];
    let plugin = load(common::plugin("allowlist"), &PluginConfig { settings, ..PluginConfig::default() }).unwrap();
    let decider = plugin.label().to_string();
    let pool = DecisionPool::new(plugin, 1).unwrap();
    let ready = Arc::new(AtomicBool::new(false));
    let r = ready.clone();
    let policy = Arc::new(pool.handle(Arc::new(move || r.store(true, Ordering::Release))));

    let pools = Arc::new(Pools::new(vec![PoolConfig::new("rw", "10.3.0.0/24").unwrap(), PoolConfig::new("staff", "10.4.0.0/24").unwrap()]));
    let mut engines = BTreeMap::new();
    let mut gw = Engine::new(gateway(), policy, [7; 32]).unwrap();
    gw.set_pools(pools.clone());
    engines.insert(ip(GW), gw);
    let peers = [("alice.rw.example", ip("10.0.5.1")), ("bob.rw.example", ip("10.0.5.2")), ("carol.rw.example", ip("10.0.5.3"))];
    for (n, (id, addr)) in peers.iter().enumerate() {
        let cfg = client(id, *addr);
        let p = Arc::new(ConfigPolicy::new(&cfg));
        engines.insert(*addr, Engine::new(cfg, p, [n as u8 + 10; 32]).unwrap());
    }
    let epoch = Instant::now();
    let mut events: BTreeMap<IpAddr, Vec<Event>> = BTreeMap::new();
    for (_, addr) in &peers {
        engines.get_mut(addr).unwrap().initiate(epoch.elapsed(), "gw").unwrap();
    }
    let settled = |events: &BTreeMap<IpAddr, Vec<Event>>| {
        peers.iter().all(|(_, a)| {
            events.get(a).is_some_and(|v| v.iter().any(|e| matches!(e, Event::IkeSaUp(_) | Event::Failure(_) | Event::IkeSaDown { .. })))
        })
    };
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end && !settled(&events) {
        let now = epoch.elapsed();
        if ready.swap(false, Ordering::AcqRel) {
            engines.get_mut(&ip(GW)).unwrap().policy_ready(now);
        }
        for e in engines.values_mut() {
            if e.poll_timeout().is_some_and(|t| t <= now) {
                e.handle_timeout(now);
            }
        }
        let addrs: Vec<IpAddr> = engines.keys().copied().collect();
        for a in addrs {
            let out: Vec<_> = std::iter::from_fn(|| engines.get_mut(&a).unwrap().poll_transmit()).collect();
            events.entry(a).or_default().extend(std::iter::from_fn(|| engines.get_mut(&a).unwrap().poll_event()));
            for t in out {
                if let Some(dst) = engines.get_mut(&t.remote.ip()) {
                    dst.handle_datagram(epoch.elapsed(), t.remote, t.local, &t.bytes);
                }
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let vips = |a: IpAddr| {
        events.get(&a).into_iter().flatten().find_map(|e| match e {
            Event::IkeSaUp(i) => Some(i.vips.local.clone()),
            _ => None,
        })
    };
    assert_eq!(vips(peers[0].1), Some(vec![ip("10.3.0.7")]), "alice: {:?}", events.get(&ip(GW)));
    assert_eq!(vips(peers[1].1), Some(vec![ip("10.4.0.1")]), "bob: a pool pick");
    let carol: Vec<_> =
        events.get(&peers[2].1).into_iter().flatten().filter_map(|e| if let Event::Failure(f) = e { Some(f) } else { None }).collect();
    assert!(carol.iter().any(|f| f.notify == Some(36)), "carol hears INTERNAL_ADDRESS_FAILURE: {carol:?}");
    let gw_failures: Vec<_> = events[&ip(GW)].iter().filter_map(|e| if let Event::Failure(f) = e { Some(f) } else { None }).collect();
    let [f] = gw_failures.as_slice() else { panic!("one gateway failure expected: {gw_failures:?}") };
    assert!(matches!(f.reason, FailureReason::AddressRefused { .. }), "{f:?}");
    assert_eq!(
        f.reason.to_string(),
        format!("policy {decider} refused an address: invalid plugin answer: assigned 10.9.9.9, outside pools rw (10.3.0.0/24), staff (10.4.0.0/24)")
    );
    let online: Vec<(String, usize)> = pools.status().iter().map(|p| (p.name.clone(), p.online)).collect();
    assert_eq!(online, vec![("rw".to_string(), 1), ("staff".to_string(), 1)], "carol holds nothing");
    // The decisions went through the pool's worker, each asked of the plugin once.
    let st = pool.stats();
    assert!(st.asked >= 13 && st.remembered >= st.asked, "{st:?}");
}
