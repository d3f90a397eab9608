//! The policy's `assign-address` decision, enforced by the engine: a
//! policy may pick, per family, one of the connection's pools or an address
//! inside them; an address outside the pools, one leased to (or kept for)
//! another identity, a pool of the wrong family or not the connection's,
//! two picks for one family, and a refusal each refuse the address —
//! INTERNAL_ADDRESS_FAILURE at the client, a FailureReason naming the
//! policy and what it answered at the gateway, nothing leased — while a
//! valid answer is what the client gets. A deferred answer parks the
//! IKE_AUTH request with nothing leased and completes it when the answer is
//! in. Engines on an in-memory network (`engine_support::Net`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use wisp_ike::config::{identity, selector, AddrMatch, ChildConfig, Config, ConnectionConfig, IdMatch};
use wisp_ike::engine::Engine;
use wisp_ike::event::*;
use wisp_ike::native_policy::ConfigPolicy;
use wisp_ike::pool::{PoolConfig, Pools};
use wisp_policy_api::{
    AddressChoice, AddressFamily, AddressPick, AddressRequest, AuthInfo, PeerContext, Policy, PolicyError, Proposal, ProposalChoice,
    SaKind, SelectorPair, SelectorRequest,
};

mod engine_support;
use engine_support::Net;

const GW: &str = "10.0.0.1";
const IKE: [&str; 1] = ["aes256gcm16-prfsha256-x25519"];
const ESP: [&str; 1] = ["aes256gcm16"];
/// INTERNAL_ADDRESS_FAILURE.
const IAF: u16 = 36;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn client(id: &str, addr: &str, vips: &[&str]) -> Config {
    let mut c = ConnectionConfig::new("gw", identity(id), Some(identity("gw.example")), b"rw-secret", &IKE).unwrap();
    c.local_addrs = vec![ip(addr)];
    c.remote_addrs = vec![ip(GW).into()];
    c.vips = vips.iter().map(|a| ip(a)).collect();
    c.children.push(ChildConfig::new("net", vec![], vec![selector("10.1.0.0/16").unwrap()], &ESP).unwrap());
    Config { connections: vec![c], ..Config::default() }
}

/// The gateway: peers in 10.0.5.0/24 under rw.example, addresses from the
/// connection's pools rw, staff (IPv4) and rw6; the daemon also has a pool
/// `other` that is not this connection's.
fn gateway() -> (Config, Vec<PoolConfig>) {
    let mut c = ConnectionConfig::new("rw", identity("gw.example"), None, b"rw-secret", &IKE).unwrap();
    c.local_addrs = vec![ip(GW)];
    c.remote_addrs = vec![AddrMatch::parse("10.0.5.0/24").unwrap()];
    c.remote_id = IdMatch::parse("*.rw.example");
    c.pools = vec!["rw".into(), "staff".into(), "rw6".into()];
    c.children.push(ChildConfig::new("net", vec![selector("10.1.0.0/16").unwrap()], vec![], &ESP).unwrap());
    let pools = ["rw 10.3.0.0/24", "staff 10.4.0.0/24", "rw6 fd00:3::/120", "other 10.5.0.0/24"]
        .iter()
        .map(|p| {
            let (name, addrs) = p.split_once(' ').unwrap();
            PoolConfig::new(name, addrs).unwrap()
        })
        .collect();
    (Config { connections: vec![c], ..Config::default() }, pools)
}

type Rule = Box<dyn Fn(&AddressRequest) -> Result<AddressChoice, PolicyError> + Send + Sync>;

/// The gateway's policy: the config's, with `assign-address` answered by
/// `rule`; while `hold` is set, it answers `Deferred` (as the gateway's
/// decision pool does while a worker asks the plugin).
struct Assigner {
    inner: ConfigPolicy,
    rule: Rule,
    hold: AtomicBool,
    asked: AtomicUsize,
    requests: std::sync::Mutex<Vec<AddressRequest>>,
}

impl Policy for Assigner {
    fn describe(&self) -> String {
        "assigner 1.0".into()
    }
    fn select_proposal(
        &self,
        ctx: &PeerContext,
        kind: SaKind,
        offered: &[Proposal],
        configured: &[Proposal],
    ) -> Result<ProposalChoice, PolicyError> {
        self.inner.select_proposal(ctx, kind, offered, configured)
    }
    fn order_proposals(&self, ctx: &PeerContext, kind: SaKind, configured: &[Proposal]) -> Result<Vec<usize>, PolicyError> {
        self.inner.order_proposals(ctx, kind, configured)
    }
    fn authorize(&self, ctx: &PeerContext, auth: &AuthInfo) -> Result<(), PolicyError> {
        self.inner.authorize(ctx, auth)
    }
    fn narrow_selectors(&self, ctx: &PeerContext, request: &SelectorRequest) -> Result<SelectorPair, PolicyError> {
        self.inner.narrow_selectors(ctx, request)
    }
    fn assign_address(&self, _ctx: &PeerContext, request: &AddressRequest) -> Result<AddressChoice, PolicyError> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        self.requests.lock().unwrap().push(request.clone());
        if self.hold.load(Ordering::Relaxed) {
            return Err(PolicyError::Deferred { decider: self.describe() });
        }
        (self.rule)(request)
    }
}

fn assigner(rule: impl Fn(&AddressRequest) -> Result<AddressChoice, PolicyError> + Send + Sync + 'static) -> Arc<Assigner> {
    Arc::new(Assigner {
        inner: ConfigPolicy::default(),
        rule: Box::new(rule),
        hold: AtomicBool::new(false),
        asked: AtomicUsize::new(0),
        requests: Default::default(),
    })
}

fn address(a: &str) -> AddressChoice {
    AddressChoice { picks: vec![AddressPick::Address(ip(a))] }
}

fn pool(name: &str) -> AddressChoice {
    AddressChoice { picks: vec![AddressPick::Pool(name.into())] }
}

/// What the test policy answers, by the peer's identity (the host's
/// default for anyone else).
fn by_identity(request: &AddressRequest) -> Result<AddressChoice, PolicyError> {
    Ok(match request.auth.peer_identity.value.as_str() {
        "outside.rw.example" => address("10.9.9.9"),
        "taken.rw.example" | "kept.rw.example" => address("10.3.0.1"),
        "wrong-family.rw.example" => pool("rw6"),
        "not-ours.rw.example" => pool("other"),
        "twice.rw.example" => AddressChoice { picks: vec![AddressPick::Pool("rw".into()), AddressPick::Address(ip("10.4.0.9"))] },
        "refused.rw.example" => {
            return Err(PolicyError::Refused { decider: "assigner 1.0".into(), reason: "no address for refused.rw.example".into() })
        }
        "fixed.rw.example" => address("10.3.0.77"),
        "staff.rw.example" => pool("staff"),
        "dual.rw.example" => AddressChoice { picks: vec![AddressPick::Address(ip("fd00:3::99")), AddressPick::Pool("staff".into())] },
        _ => AddressChoice::default(),
    })
}

fn network(policy: Arc<Assigner>, clients: &[(&str, &str, &[&str])]) -> (Net, Arc<Pools>) {
    let (gw, pools) = gateway();
    let pools = Arc::new(Pools::new(pools));
    let mut net = Net::default();
    let mut g = Engine::new(gw, policy, [7; 32]).unwrap();
    g.set_pools(pools.clone());
    net.engines.insert(ip(GW), g);
    for (n, (id, addr, vips)) in clients.iter().enumerate() {
        net.add(addr, client(id, addr, vips), n as u8 + 10);
    }
    (net, pools)
}

fn last_ike_up<'a>(net: &'a Net, addr: &str) -> Option<&'a IkeSaInfo> {
    engine_support::ike_up(net.ev(addr)).into_iter().last()
}

fn online(pools: &Pools) -> usize {
    pools.status().iter().map(|p| p.online).sum()
}

fn host(a: IpAddr) -> wisp_policy_api::TrafficSelector {
    wisp_policy_api::TrafficSelector { ip_protocol: 0, start_port: 0, end_port: 65535, start_address: a, end_address: a }
}

/// `addr` connects and is refused an address: the client hears
/// INTERNAL_ADDRESS_FAILURE and gets no Child SA, the gateway names why
/// (returned) and keeps no IKE SA of it, nothing new is leased.
fn refused(net: &mut Net, pools: &Pools, addr: &str) -> String {
    let before = online(pools);
    let seen = net.failures(GW).len();
    net.initiate(addr);
    assert!(net.child_ups(addr).is_empty(), "{addr}: no Child SA");
    let f = net.failures(addr);
    assert!(f.iter().any(|f| f.notify == Some(IAF) && matches!(f.reason, FailureReason::NoVirtualIp { .. })), "{addr}: {f:?}");
    let g: Vec<&Failure> = net.failures(GW).into_iter().skip(seen).collect();
    let [f] = g.as_slice() else { panic!("{addr}: one gateway failure expected, got {g:?}") };
    assert_eq!(f.notify, Some(IAF), "{f:?}");
    assert!(matches!(f.reason, FailureReason::AddressRefused { .. }), "{f:?}");
    assert!(net.engines[&ip(GW)].status(net.now).iter().all(|s| s.remote.ip() != ip(addr)), "{addr}: IKE SA deleted");
    assert_eq!(online(pools), before, "{addr}: nothing leased");
    f.reason.to_string()
}

#[test]
fn answers_outside_the_configuration_are_refused_by_the_host() {
    let policy = assigner(by_identity);
    let v4: &[&str] = &["0.0.0.0"];
    let (mut net, pools) = network(
        policy.clone(),
        &[
            ("bob.rw.example", "10.0.5.1", v4),
            ("outside.rw.example", "10.0.5.2", v4),
            ("taken.rw.example", "10.0.5.3", v4),
            ("wrong-family.rw.example", "10.0.5.4", v4),
            ("not-ours.rw.example", "10.0.5.5", v4),
            ("twice.rw.example", "10.0.5.6", v4),
            ("refused.rw.example", "10.0.5.7", v4),
            ("kept.rw.example", "10.0.5.8", v4),
        ],
    );
    // Bob has no rule: the host's default, the first address of rw.
    net.initiate("10.0.5.1");
    assert_eq!(last_ike_up(&net, "10.0.5.1").unwrap().vips.local, vec![ip("10.3.0.1")]);

    assert_eq!(
        refused(&mut net, &pools, "10.0.5.2"),
        "policy assigner 1.0 assigned 10.9.9.9, outside pools rw (10.3.0.0/24), staff (10.4.0.0/24)"
    );
    assert_eq!(refused(&mut net, &pools, "10.0.5.3"), "policy assigner 1.0 assigned 10.3.0.1, already leased to Fqdn:bob.rw.example");
    assert_eq!(refused(&mut net, &pools, "10.0.5.4"), "policy assigner 1.0 picked pool rw6 (IPv6), but the peer asked for no IPv6 address");
    assert_eq!(
        refused(&mut net, &pools, "10.0.5.5"),
        "policy assigner 1.0 picked pool other, not one of the connection's pools (rw (10.3.0.0/24), staff (10.4.0.0/24), rw6 (fd00:3::/120))"
    );
    assert_eq!(refused(&mut net, &pools, "10.0.5.6"), "policy assigner 1.0 picked two IPv4 addresses (pool rw, address 10.4.0.9)");
    assert_eq!(refused(&mut net, &pools, "10.0.5.7"), "policy assigner 1.0 refused an address: no address for refused.rw.example");

    // Bob leaves: his address stays kept for him, and is not the policy's to give away.
    let now = net.now;
    let e = net.engine("10.0.5.1");
    for id in e.ike_sas() {
        e.delete_ike(now, id).unwrap();
    }
    net.run();
    assert_eq!((pools.status()[0].online, pools.status()[0].offline), (0, 1));
    assert_eq!(
        refused(&mut net, &pools, "10.0.5.8"),
        "policy assigner 1.0 assigned 10.3.0.1, kept for Fqdn:bob.rw.example (its offline lease)"
    );

    // What the policy was shown: the peer's authenticated facts, what it asked for, the connection's pools.
    let requests = policy.requests.lock().unwrap();
    let r = &requests[0];
    assert_eq!(r.auth.peer_identity.value, "bob.rw.example");
    assert_eq!((r.requested.len(), r.requested[0].family, r.requested[0].address), (1, AddressFamily::Ipv4, None));
    let shown: Vec<(String, String, u64)> = r.pools.iter().map(|p| (p.name.clone(), p.range.clone(), p.size)).collect();
    assert_eq!(
        shown,
        vec![
            ("rw".into(), "10.3.0.0/24".into(), 254),
            ("staff".into(), "10.4.0.0/24".into(), 254),
            ("rw6".into(), "fd00:3::/120".into(), 255)
        ]
    );
}

#[test]
fn valid_answers_are_what_the_client_gets() {
    let policy = assigner(by_identity);
    let (mut net, pools) = network(
        policy,
        &[
            ("fixed.rw.example", "10.0.5.1", &["0.0.0.0"]),
            ("staff.rw.example", "10.0.5.2", &["0.0.0.0"]),
            ("dual.rw.example", "10.0.5.3", &["0.0.0.0", "::"]),
            ("alice.rw.example", "10.0.5.4", &["10.3.0.200"]),
        ],
    );
    // A specific address: the client's side of its tunnel, and the gateway's view of the peer.
    net.initiate("10.0.5.1");
    let up = last_ike_up(&net, "10.0.5.1").unwrap_or_else(|| panic!("no IKE SA: {:?}", net.failures(GW)));
    assert_eq!(up.vips.local, vec![ip("10.3.0.77")]);
    assert_eq!(net.child_ups("10.0.5.1")[0].local_ts, vec![host(ip("10.3.0.77"))]);
    let g = net.child_ups(GW).into_iter().rev().find(|c| c.remote.ip() == ip("10.0.5.1")).unwrap();
    assert_eq!(g.remote_ts, vec![host(ip("10.3.0.77"))]);
    // A pool pick: the second pool, which the host's default would not have used.
    net.initiate("10.0.5.2");
    assert_eq!(last_ike_up(&net, "10.0.5.2").unwrap().vips.local, vec![ip("10.4.0.1")]);
    // Both families, picked in another order than asked: each where the policy said.
    net.initiate("10.0.5.3");
    assert_eq!(last_ike_up(&net, "10.0.5.3").unwrap().vips.local, vec![ip("10.4.0.2"), ip("fd00:3::99")]);
    // No opinion: the host's default.
    net.initiate("10.0.5.4");
    // (10.3.0.200 is not alice's lease; the next never-used address of rw follows the policy's 10.3.0.77.)
    assert_eq!(last_ike_up(&net, "10.0.5.4").unwrap().vips.local, vec![ip("10.3.0.78")]);
    assert!(net.failures(GW).is_empty(), "{:?}", net.failures(GW));
    assert_eq!(online(&pools), 5);
    // The exact address is leased like any other: it goes back when the SA goes, kept for its identity.
    let now = net.now;
    let e = net.engine("10.0.5.1");
    for id in e.ike_sas() {
        e.delete_ike(now, id).unwrap();
    }
    net.run();
    assert_eq!(online(&pools), 4);
    net.initiate("10.0.5.1");
    assert_eq!(last_ike_up(&net, "10.0.5.1").unwrap().vips.local, vec![ip("10.3.0.77")]);
}

#[test]
fn a_deferred_answer_parks_the_request_with_nothing_leased() {
    let policy = assigner(|_| Ok(address("10.3.0.42")));
    policy.hold.store(true, Ordering::Relaxed);
    let (mut net, pools) = network(policy.clone(), &[("alice.rw.example", "10.0.5.1", &["0.0.0.0"])]);
    net.initiate("10.0.5.1");
    // Asked once, answered "later": the IKE_AUTH request waits, nothing is leased or sent back.
    assert_eq!(policy.asked.load(Ordering::Relaxed), 1);
    assert_eq!(net.engines[&ip(GW)].decisions_waiting(), 1);
    assert_eq!(online(&pools), 0);
    assert!(last_ike_up(&net, "10.0.5.1").is_none());
    assert!(net.failures(GW).is_empty() && net.failures("10.0.5.1").is_empty());
    // The answer is in: the request runs again, asks the same question, and completes.
    policy.hold.store(false, Ordering::Relaxed);
    let now = net.now;
    net.engine(GW).policy_ready(now);
    net.run();
    assert_eq!(policy.asked.load(Ordering::Relaxed), 2);
    let requests = policy.requests.lock().unwrap();
    assert_eq!(requests[0], requests[1], "the same question, so a decision pool answers it from memory");
    let up = last_ike_up(&net, "10.0.5.1").unwrap_or_else(|| panic!("{:?}", net.failures(GW)));
    assert_eq!(up.vips.local, vec![ip("10.3.0.42")]);
    assert_eq!(net.child_ups("10.0.5.1").len(), 1);
    assert_eq!(net.engines[&ip(GW)].decisions_waiting(), 0);
    assert_eq!(online(&pools), 1);
}

#[test]
fn no_request_or_no_pools_asks_nothing() {
    let policy = assigner(|_| Ok(address("10.9.9.9")));
    let (mut net, _) = network(policy.clone(), &[("alice.rw.example", "10.0.5.1", &[])]);
    net.initiate("10.0.5.1");
    assert!(last_ike_up(&net, "10.0.5.1").is_some(), "{:?}", net.failures(GW));
    assert_eq!(policy.asked.load(Ordering::Relaxed), 0, "no CFG_REQUEST: not asked");
}
