//! Virtual IPs (RFC 7296 3.15): a gateway connection with `pools` answers
//! CFG_REQUEST with leases unique across its peers, narrows each peer's
//! Child SA to its address, refuses with INTERNAL_ADDRESS_FAILURE when the
//! pool is exhausted, keeps a lease for its identity, and releases it when
//! the IKE SA goes; a client connection with `vips` asks and takes the
//! address as its side of the tunnel. Engines on an in-memory network.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use wisp_ike::config::{identity, selector, AddrMatch, ChildConfig, Config, ConnectionConfig, IdMatch};
use wisp_ike::engine::Engine;
use wisp_ike::event::*;
use wisp_ike::native_policy::ConfigPolicy;
use wisp_ike::pool::{PoolConfig, Pools};

const GW: &str = "10.0.0.1";
const IKE: [&str; 1] = ["aes256gcm16-prfsha256-x25519"];
const ESP: [&str; 1] = ["aes256gcm16"];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A client asking for any IPv4 address; its own selectors are dynamic.
fn client(id: &str, addr: &str, vips: &[&str]) -> Config {
    let mut c = ConnectionConfig::new("gw", identity(id), Some(identity("gw.example")), b"rw-secret", &IKE).unwrap();
    c.local_addrs = vec![ip(addr)];
    c.remote_addrs = vec![ip(GW).into()];
    c.vips = vips.iter().map(|a| ip(a)).collect();
    c.children.push(ChildConfig::new("net", vec![], vec![selector("10.1.0.0/16").unwrap()], &ESP).unwrap());
    Config { connections: vec![c], ..Config::default() }
}

/// The gateway: any peer in 10.0.5.0/24 with an identity under rw.example,
/// addresses from `pools`, the peer's selectors dynamic (its address).
fn gateway(pools: &[&str]) -> Config {
    let mut c = ConnectionConfig::new("rw", identity("gw.example"), None, b"rw-secret", &IKE).unwrap();
    c.local_addrs = vec![ip(GW)];
    c.remote_addrs = vec![AddrMatch::parse("10.0.5.0/24").unwrap()];
    c.remote_id = IdMatch::parse("*.rw.example");
    c.pools = pools.iter().map(|s| s.to_string()).collect();
    c.children.push(ChildConfig::new("net", vec![selector("10.1.0.0/16").unwrap()], vec![], &ESP).unwrap());
    Config { connections: vec![c], ..Config::default() }
}

mod engine_support;
use engine_support::Net;

/// The gateway (with the daemon's pools) and its clients on one network.
fn network(gw: Config, pools: Vec<PoolConfig>, clients: Vec<(&str, Config)>) -> (Net, Arc<Pools>) {
    let pools = Arc::new(Pools::new(pools));
    let mut net = Net::default();
    let p = Arc::new(ConfigPolicy::new(&gw));
    let mut g = Engine::new(gw, p, [7; 32]).unwrap();
    g.set_pools(pools.clone());
    net.engines.insert(ip(GW), g);
    for (n, (addr, cfg)) in clients.into_iter().enumerate() {
        net.add(addr, cfg, n as u8 + 10);
    }
    (net, pools)
}

fn delete_all(net: &mut Net, addr: &str) {
    let now = net.now;
    let e = net.engine(addr);
    for id in e.ike_sas() {
        e.delete_ike(now, id).unwrap();
    }
    net.run();
}

fn last_ike_up<'a>(net: &'a Net, addr: &str) -> Option<&'a IkeSaInfo> {
    engine_support::ike_up(net.ev(addr)).into_iter().last()
}

fn host(a: IpAddr) -> wisp_policy_api::TrafficSelector {
    wisp_policy_api::TrafficSelector { ip_protocol: 0, start_port: 0, end_port: 65535, start_address: a, end_address: a }
}

#[test]
fn three_clients_get_three_addresses_and_a_fourth_is_refused() {
    let mut pool = PoolConfig::new("rw", "10.3.0.1-10.3.0.3").unwrap();
    pool.dns = vec![ip("10.1.0.53")];
    let peers = [("10.0.5.1", "alice.rw.example"), ("10.0.5.2", "bob.rw.example"), ("10.0.5.3", "carol.rw.example")];
    let mut clients: Vec<(&str, Config)> = peers.iter().map(|(a, id)| (*a, client(id, a, &["0.0.0.0"]))).collect();
    clients.push(("10.0.5.4", client("dave.rw.example", "10.0.5.4", &["0.0.0.0"])));
    let (mut net, pools) = network(gateway(&["rw"]), vec![pool], clients);
    let mut got = Vec::new();
    for (a, _) in &peers {
        net.initiate(a);
        let up = last_ike_up(&net, a).unwrap_or_else(|| panic!("{a}: no IKE SA"));
        assert_eq!(up.vips.local.len(), 1, "{a}: {:?}", up.vips);
        assert_eq!(up.vips.dns, vec![ip("10.1.0.53")], "{a}: DNS from the pool");
        let vip = up.vips.local[0];
        // The client's side of its tunnel is its address, the gateway's narrows the peer to it.
        let c = net.child_ups(a);
        assert_eq!(c.len(), 1, "{a}");
        assert_eq!(c[0].local_ts, vec![host(vip)], "{a}");
        let g = net.child_ups(GW).into_iter().rev().find(|c| c.remote.ip() == ip(a)).unwrap();
        assert_eq!(g.remote_ts, vec![host(vip)], "{a}");
        got.push(vip);
    }
    got.sort();
    assert_eq!(got, vec![ip("10.3.0.1"), ip("10.3.0.2"), ip("10.3.0.3")], "three distinct addresses");
    let st = net.engines[&ip(GW)].status(net.now);
    assert!(st.iter().all(|s| s.vips.remote.len() == 1), "{st:#?}");

    // The fourth: the pool is exhausted, said on both sides.
    net.initiate("10.0.5.4");
    assert!(net.child_ups("10.0.5.4").is_empty());
    let f = net.failures(GW);
    assert!(
        f.iter().any(|f| matches!(&f.reason, FailureReason::NoAddress { .. })
            && f.reason.to_string() == "address pool rw exhausted (3 of 3 addresses leased)"
            && f.notify == Some(36)),
        "{f:?}"
    );
    let f = net.failures("10.0.5.4");
    assert!(f.iter().any(|f| f.notify == Some(36)), "the client hears INTERNAL_ADDRESS_FAILURE: {f:?}");
    assert!(f.iter().any(|f| matches!(f.reason, FailureReason::NoVirtualIp { .. })), "{f:?}");
    // ... and the gateway does not keep its IKE SA.
    assert!(net.engines[&ip(GW)].status(net.now).iter().all(|s| s.remote.ip() != ip("10.0.5.4")));
    assert_eq!(pools.status()[0].online, 3);

    // Bob leaves: his lease goes offline, and dave (new) gets it.
    let bob = last_ike_up(&net, "10.0.5.2").unwrap().vips.local[0];
    delete_all(&mut net, "10.0.5.2");
    assert_eq!((pools.status()[0].online, pools.status()[0].offline), (2, 1));
    net.initiate("10.0.5.4");
    assert_eq!(last_ike_up(&net, "10.0.5.4").unwrap().vips.local, vec![bob]);
}

#[test]
fn a_lease_is_kept_for_its_identity_and_survives_ike_rekeys() {
    let (mut net, pools) = network(
        gateway(&["rw"]),
        vec![PoolConfig::new("rw", "10.3.0.0/24").unwrap()],
        vec![("10.0.5.1", client("alice.rw.example", "10.0.5.1", &["0.0.0.0"]))],
    );
    net.initiate("10.0.5.1");
    let first = last_ike_up(&net, "10.0.5.1").unwrap().vips.local.clone();
    assert_eq!(first, vec![ip("10.3.0.1")]);
    // Others connect meanwhile.
    net.add("10.0.5.2", client("bob.rw.example", "10.0.5.2", &["0.0.0.0"]), 50);
    net.initiate("10.0.5.2");
    assert_eq!(last_ike_up(&net, "10.0.5.2").unwrap().vips.local, vec![ip("10.3.0.2")]);
    // The gateway rekeys alice's IKE SA: still one lease, held by the new SA.
    let now = net.now;
    let g = net.engine(GW);
    let alice = g.status(now).into_iter().find(|s| s.remote.ip() == ip("10.0.5.1")).unwrap().ike;
    g.rekey_ike(now, alice).unwrap();
    net.run();
    net.now += Duration::from_secs(30);
    net.run();
    let st = net.engines[&ip(GW)].status(net.now);
    let a: Vec<_> = st.iter().filter(|s| s.remote.ip() == ip("10.0.5.1")).collect();
    assert_eq!(a.len(), 1, "{st:#?}");
    assert_ne!(a[0].ike, alice, "rekeyed");
    assert_eq!(a[0].vips.remote, first);
    let p = &pools.status()[0];
    assert_eq!(p.leases.iter().find(|l| l.0 == first[0]).map(|l| l.2), Some(1), "{p:?}");
    // Alice leaves and comes back: the same address.
    delete_all(&mut net, "10.0.5.1");
    assert_eq!((pools.status()[0].online, pools.status()[0].offline), (1, 1));
    net.initiate("10.0.5.1");
    assert_eq!(last_ike_up(&net, "10.0.5.1").unwrap().vips.local, first);
}

#[test]
fn without_pools_or_vips_nothing_changes_and_ipv6_is_leased_too() {
    // A gateway connection without pools ignores the request: the client says so.
    let (mut net, _) = network(gateway(&[]), vec![], vec![("10.0.5.1", client("alice.rw.example", "10.0.5.1", &["0.0.0.0"]))]);
    net.initiate("10.0.5.1");
    let f = net.failures("10.0.5.1");
    assert!(f.iter().any(|f| f.reason.to_string() == "peer assigned no virtual IP (requested 0.0.0.0)"), "{f:?}");
    // Both families from two pools, the v6 one with a subnet.
    let mut v6 = PoolConfig::new("rw6", "fd00:3::/120").unwrap();
    v6.dns = vec![ip("fd00:1::53")];
    let mut gw = gateway(&["rw", "rw6"]);
    gw.connections[0].children[0].local_ts.push(selector("fd00:1::/64").unwrap());
    let mut cl = client("alice.rw.example", "10.0.5.1", &["0.0.0.0", "::"]);
    cl.connections[0].children[0].remote_ts.push(selector("fd00:1::/64").unwrap());
    let (mut net, _) = network(gw, vec![PoolConfig::new("rw", "10.3.0.0/24").unwrap(), v6], vec![("10.0.5.1", cl)]);
    net.initiate("10.0.5.1");
    let up = last_ike_up(&net, "10.0.5.1").unwrap();
    assert_eq!(up.vips.local, vec![ip("10.3.0.1"), ip("fd00:3::1")], "{:?}", net.failures(GW));
    assert_eq!(up.vips.dns, vec![ip("fd00:1::53")]);
    let c = net.child_ups("10.0.5.1");
    assert_eq!(c[0].local_ts, vec![host(ip("10.3.0.1")), host(ip("fd00:3::1"))]);
}
