//! Connections that match many peers: `remote_addrs` blocks, ranges and
//! `%any`, one IKE SA per peer in one connection, `remote.id` patterns, and
//! the responder's choice among connections (best address fit at
//! IKE_SA_INIT, refined by identity at IKE_AUTH). Several initiator engines
//! talk to one responder engine over an in-memory network.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use wisp_ike::config::{identity, selector, AddrMatch, ChildConfig, Config, ConnectionConfig, IdMatch};
use wisp_ike::engine::Engine;
use wisp_ike::event::*;
use wisp_ike::native_policy::ConfigPolicy;
use wisp_policy_api::{AuthInfo, PeerContext, Policy, PolicyError, Proposal, ProposalChoice, SaKind, SelectorPair, SelectorRequest};

const GW: &str = "10.0.0.1";
const IKE: [&str; 1] = ["aes256gcm16-prfsha256-x25519"];
const ESP: [&str; 1] = ["aes256gcm16"];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A road-warrior style initiator: `id`, at `addr`, asking for `remote_ts`
/// = the gateway's 10.1.0.0/16 and `local_ts` = its own `/32`.
fn client(id: &str, addr: &str, psk: &[u8], inner: &str) -> Config {
    let mut c = ConnectionConfig::new("gw", identity(id), Some(identity("gw.example")), psk, &IKE).unwrap();
    c.local_addrs = vec![ip(addr)];
    c.remote_addrs = vec![ip(GW).into()];
    c.children.push(ChildConfig::new("net", vec![selector(inner).unwrap()], vec![selector("10.1.0.0/16").unwrap()], &ESP).unwrap());
    Config { connections: vec![c], ..Config::default() }
}

/// A gateway connection accepting `remote_addrs` and `remote_id`, peers'
/// inner addresses anywhere in 10.8.0.0/16.
fn gw_conn(name: &str, remote_addrs: &[&str], remote_id: &str, psk: &[u8]) -> ConnectionConfig {
    let mut c = ConnectionConfig::new(name, identity("gw.example"), None, psk, &IKE).unwrap();
    c.local_addrs = vec![ip(GW)];
    c.remote_addrs = remote_addrs.iter().map(|a| AddrMatch::parse(a).unwrap()).collect();
    c.remote_id = IdMatch::parse(remote_id);
    c.children.push(ChildConfig::new("net", vec![selector("10.1.0.0/16").unwrap()], vec![selector("10.8.0.0/16").unwrap()], &ESP).unwrap());
    c
}

mod engine_support;
use engine_support::Net;

/// The gateway (deciding with `gw_policy`) and its clients on one network.
fn network(gw: Config, gw_policy: Arc<dyn Policy>, clients: Vec<(&str, Config)>) -> Net {
    let mut net = Net::default();
    net.engines.insert(ip(GW), Engine::new(gw, gw_policy, [7; 32]).unwrap());
    for (n, (addr, cfg)) in clients.into_iter().enumerate() {
        net.add(addr, cfg, n as u8 + 10);
    }
    net
}

fn gw_status(net: &Net) -> Vec<IkeSaStatus> {
    net.engines[&ip(GW)].status(net.now)
}

/// The native policy of the gateway config, plus a list of refused identities.
struct Refuse {
    inner: ConfigPolicy,
    refused: Vec<String>,
}

impl Policy for Refuse {
    fn describe(&self) -> String {
        "refuse-list".into()
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
        if self.refused.contains(&auth.peer_identity.value) {
            return Err(PolicyError::Refused {
                decider: self.describe(),
                reason: format!("{} is on the deny list", auth.peer_identity.value),
            });
        }
        self.inner.authorize(ctx, auth)
    }
    fn narrow_selectors(&self, ctx: &PeerContext, request: &SelectorRequest) -> Result<SelectorPair, PolicyError> {
        self.inner.narrow_selectors(ctx, request)
    }
}

#[test]
fn several_peers_in_one_block_share_one_connection() {
    let gw = Config { connections: vec![gw_conn("rw", &["10.0.5.0/24"], "*.rw.example", b"psk-rw")], ..Config::default() };
    let policy = Arc::new(Refuse { inner: ConfigPolicy::new(&gw), refused: vec!["mallory.rw.example".into()] });
    let peers = [
        ("10.0.5.1", "alice.rw.example", "10.8.1.1"),
        ("10.0.5.2", "bob.rw.example", "10.8.2.1"),
        ("10.0.5.77", "carol.rw.example", "10.8.3.1"),
    ];
    let mut clients: Vec<(&str, Config)> = peers.iter().map(|(a, id, inner)| (*a, client(id, a, b"psk-rw", inner))).collect();
    clients.push(("10.0.5.9", client("mallory.rw.example", "10.0.5.9", b"psk-rw", "10.8.9.1")));
    clients.push(("10.0.6.1", client("dave.rw.example", "10.0.6.1", b"psk-rw", "10.8.4.1")));
    clients.push(("10.0.5.3", client("erin.other.example", "10.0.5.3", b"psk-rw", "10.8.5.1")));
    let mut net = network(gw, policy, clients);
    for (a, _, _) in &peers {
        net.initiate(a);
    }
    // All three up, at the same time, on the one connection.
    let st = gw_status(&net);
    assert_eq!(st.len(), 3, "{st:#?}");
    for (a, id, inner) in &peers {
        let s = st.iter().find(|s| s.remote.ip() == ip(a)).unwrap_or_else(|| panic!("no IKE SA for {a}"));
        assert_eq!(s.connection, "rw");
        assert_eq!(s.state, wisp_ike::event::IkeSaState::Established);
        assert_eq!(s.remote_id.as_ref().map(|i| i.value.as_str()), Some(*id));
        // Each peer's Child SA carries only its own inner address.
        let c = net.child_ups(a);
        assert_eq!(c.len(), 1, "{a}");
        assert_eq!(c[0].local_ts, vec![selector(inner).unwrap()], "{a}");
    }
    // The plugin/policy refuses one identity the pattern allows.
    net.initiate("10.0.5.9");
    assert!(net.child_ups("10.0.5.9").is_empty());
    let f = net.failures(GW);
    assert!(f.iter().any(|f| f.reason.to_string().contains("mallory.rw.example") && f.reason.to_string().contains("deny list")), "{f:?}");
    // An address outside the block: no connection at IKE_SA_INIT.
    net.initiate("10.0.6.1");
    assert!(net.child_ups("10.0.6.1").is_empty());
    assert!(net.failures(GW).iter().any(|f| f.reason.to_string().contains("no connection configured for peer 10.0.6.1")));
    assert_eq!(net.failures("10.0.6.1")[0].notify, Some(14), "NO_PROPOSAL_CHOSEN");
    // An identity outside the pattern: AUTHENTICATION_FAILED.
    net.initiate("10.0.5.3");
    assert!(net.child_ups("10.0.5.3").is_empty());
    assert!(net.failures(GW).iter().any(|f| f.reason.to_string().contains("no connection accepts peer identity erin.other.example")));
    assert_eq!(gw_status(&net).len(), 3, "the refused peers hold no SA");
}

#[test]
fn identity_selects_among_connections_with_the_same_addresses() {
    // Two %any connections, told apart only by remote.id (and their PSKs).
    let gw = Config {
        connections: vec![
            gw_conn("alice", &["%any"], "alice.example", b"psk-of-alice"),
            gw_conn("bob", &["%any"], "bob.example", b"psk-of-bob"),
            gw_conn("rest", &["%any"], "*.example", b"psk-of-rest"),
        ],
        ..Config::default()
    };
    let policy = Arc::new(ConfigPolicy::new(&gw));
    let clients = vec![
        ("192.0.2.10", client("bob.example", "192.0.2.10", b"psk-of-bob", "10.8.2.1")),
        ("192.0.2.11", client("alice.example", "192.0.2.11", b"psk-of-alice", "10.8.1.1")),
        ("192.0.2.12", client("zed.example", "192.0.2.12", b"psk-of-rest", "10.8.3.1")),
        ("192.0.2.13", client("alice.example", "192.0.2.13", b"psk-of-bob", "10.8.4.1")),
    ];
    let mut net = network(gw, policy, clients);
    for a in ["192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13"] {
        net.initiate(a);
    }
    let st = gw_status(&net);
    let conn_of = |a: &str| st.iter().find(|s| s.remote.ip() == ip(a)).map(|s| s.connection.as_str());
    assert_eq!(conn_of("192.0.2.10"), Some("bob"));
    assert_eq!(conn_of("192.0.2.11"), Some("alice"), "the exact identity wins over the pattern of `rest`");
    assert_eq!(conn_of("192.0.2.12"), Some("rest"));
    // alice.example with bob's PSK: the `alice` connection is chosen by
    // identity, and its PSK does not verify.
    assert_eq!(conn_of("192.0.2.13"), None);
    assert!(net.failures(GW).iter().any(|f| f.reason.to_string().contains("PSK of connection alice")), "{:?}", net.failures(GW));
}

#[test]
fn the_best_address_fit_answers() {
    // A host entry beats a block, a block beats %any; ranges count their size.
    let gw = Config {
        connections: vec![
            gw_conn("any", &["%any"], "%any", b"psk-any"),
            gw_conn("block", &["10.0.7.0/24"], "%any", b"psk-block"),
            gw_conn("range", &["10.0.7.20-10.0.7.29"], "%any", b"psk-range"),
            gw_conn("host", &["10.0.7.21"], "%any", b"psk-host"),
        ],
        ..Config::default()
    };
    let policy = Arc::new(ConfigPolicy::new(&gw));
    let clients = vec![
        ("10.0.7.21", client("h.example", "10.0.7.21", b"psk-host", "10.8.0.21")),
        ("10.0.7.22", client("r.example", "10.0.7.22", b"psk-range", "10.8.0.22")),
        ("10.0.7.99", client("b.example", "10.0.7.99", b"psk-block", "10.8.0.99")),
        ("10.0.9.1", client("a.example", "10.0.9.1", b"psk-any", "10.8.9.1")),
    ];
    let mut net = network(gw, policy, clients);
    for a in ["10.0.7.21", "10.0.7.22", "10.0.7.99", "10.0.9.1"] {
        net.initiate(a);
    }
    let st = gw_status(&net);
    let conn_of = |a: &str| st.iter().find(|s| s.remote.ip() == ip(a)).map(|s| s.connection.clone());
    assert_eq!(conn_of("10.0.7.21").as_deref(), Some("host"));
    assert_eq!(conn_of("10.0.7.22").as_deref(), Some("range"));
    assert_eq!(conn_of("10.0.7.99").as_deref(), Some("block"));
    assert_eq!(conn_of("10.0.9.1").as_deref(), Some("any"));
}

#[test]
fn remote_id_patterns() {
    let m = IdMatch::parse("*.example.net");
    assert!(m.matches(&identity("gw.example.net")));
    assert!(m.matches(&identity("a.b.EXAMPLE.net")), "FQDNs compare case-insensitively");
    assert!(!m.matches(&identity("example.net")));
    assert!(!m.matches(&identity("gw.example.org")));
    assert!(!m.matches(&identity("alice@x.example.net")), "an RFC 822 identity is no FQDN");
    let m = IdMatch::parse("*@example.net");
    assert!(m.matches(&identity("alice@example.net")));
    assert!(!m.matches(&identity("alice@sub.example.net")));
    let m = IdMatch::parse("10.3.0.0/16");
    assert!(m.matches(&identity("10.3.200.1")));
    assert!(!m.matches(&identity("10.4.0.1")));
    assert!(!m.matches(&identity("host.example")));
    assert_eq!(IdMatch::parse("%any"), IdMatch::Any);
    assert!(matches!(IdMatch::parse("gw.example"), IdMatch::Exact(_)));
    // The glob has one backtrack point: a hostile pattern/identity pair stays linear-ish.
    let long = format!("{}b", "a".repeat(4000));
    let t = std::time::Instant::now();
    assert!(!IdMatch::parse(&"*a".repeat(100)).matches(&identity(&long)));
    assert!(t.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_connection_without_a_single_host_cannot_initiate() {
    let mut gw = Config { connections: vec![gw_conn("rw", &["10.0.5.0/24"], "%any", b"psk")], ..Config::default() };
    gw.connections[0].children[0].start_action = wisp_ike::config::StartAction::None;
    let policy = Arc::new(ConfigPolicy::new(&gw));
    let mut e = Engine::new(gw, policy, [1; 32]).unwrap();
    let err = e.initiate(Duration::from_secs(1), "rw").unwrap_err().to_string();
    assert!(err.contains("rw"), "{err}");
    let _ = SocketAddr::new(ip(GW), 500);
}
