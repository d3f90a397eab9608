//! Revocation of live SAs after a policy change, expiry of IKE SAs left in
//! the Rekeyed state, and the per-connection caps (issue 10, item 6).

mod engine_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine_support::*;
use wisp_ike::config::{selector, Config};
use wisp_ike::engine::EngineError;
use wisp_ike::event::*;
use wisp_ike::native_policy::ConfigPolicy;
use wisp_policy_api::{
    AuthInfo, PeerContext, Policy, PolicyError, Proposal, ProposalChoice, SaKind, SelectorPair, SelectorRequest, TrafficSelector,
};

/// What the switchable policy refuses on top of the config.
#[derive(Default)]
struct Rules {
    /// Identities `authorize` refuses.
    deny: Vec<String>,
    /// When the remote selectors proposed are exactly this one, narrow them to `.1`.
    shrink: Option<(TrafficSelector, TrafficSelector)>,
    authorize_calls: usize,
    /// Every decision fails (a trapping plugin).
    fail: bool,
}

/// The config's policy plus rules a test changes at run time, standing in
/// for a plugin reload.
struct Switchable {
    base: ConfigPolicy,
    rules: Arc<Mutex<Rules>>,
}

impl Policy for Switchable {
    fn describe(&self) -> String {
        "switchable v2".into()
    }
    fn select_proposal(
        &self,
        ctx: &PeerContext,
        kind: SaKind,
        offered: &[Proposal],
        configured: &[Proposal],
    ) -> Result<ProposalChoice, PolicyError> {
        self.base.select_proposal(ctx, kind, offered, configured)
    }
    fn order_proposals(&self, ctx: &PeerContext, kind: SaKind, configured: &[Proposal]) -> Result<Vec<usize>, PolicyError> {
        self.base.order_proposals(ctx, kind, configured)
    }
    fn authorize(&self, ctx: &PeerContext, auth: &AuthInfo) -> Result<(), PolicyError> {
        let mut r = self.rules.lock().unwrap();
        r.authorize_calls += 1;
        if r.fail {
            return Err(PolicyError::Failed { decider: self.describe(), detail: "authorize: trap: unreachable".into() });
        }
        if r.deny.contains(&auth.peer_identity.value) {
            return Err(PolicyError::Refused { decider: self.describe(), reason: format!("{} is no longer welcome", auth.peer_identity) });
        }
        self.base.authorize(ctx, auth)
    }
    fn narrow_selectors(&self, ctx: &PeerContext, request: &SelectorRequest) -> Result<SelectorPair, PolicyError> {
        let r = self.rules.lock().unwrap();
        if let Some((from, to)) = &r.shrink {
            if request.remote_proposed == [from.clone()] {
                return Ok(SelectorPair { remote: vec![to.clone()], local: request.local_proposed.clone() });
            }
        }
        self.base.narrow_selectors(ctx, request)
    }
}

/// The default pair with a switchable policy on B (the responder).
fn pair_with_rules(a: Config, b: Config) -> (Pair, Arc<Mutex<Rules>>) {
    let rules = Arc::new(Mutex::new(Rules::default()));
    let pa = Arc::new(ConfigPolicy::new(&a));
    let pb = Arc::new(Switchable { base: ConfigPolicy::new(&b), rules: rules.clone() });
    (Pair::with_policies(a, b, pa, pb), rules)
}

fn up(p: &mut Pair) {
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(live_children(&p.a, p.now).len(), 1, "{:?}", p.ev_a);
}

#[test]
fn recheck_deletes_sa_now_denied() {
    let (a, b) = default_pair_configs();
    let (mut p, rules) = pair_with_rules(a, b);
    up(&mut p);
    let (b_in, _) = live_children(&p.b, p.now)[0];
    // Same policy: nothing changes, but the peer was asked again.
    let calls = rules.lock().unwrap().authorize_calls;
    let r = p.b.recheck(p.now);
    assert_eq!((r.ike_checked, r.children_checked), (1, 1));
    assert!(r.ike_revoked.is_empty() && r.children_revoked.is_empty(), "{r:?}");
    assert_eq!(rules.lock().unwrap().authorize_calls, calls + 1, "authorize called again with the stored auth info");
    // The new policy denies A.
    rules.lock().unwrap().deny.push("a.example".into());
    let r = p.b.recheck(p.now);
    assert_eq!(r.ike_revoked.len(), 1, "{r:?}");
    // The Child SA is down at once (before any answer from the peer), with the reason.
    let mut downs = Vec::new();
    while let Some(e) = p.b.poll_event() {
        downs.push(e);
    }
    let cd = child_downs(&downs);
    assert_eq!(cd.len(), 1, "{downs:?}");
    assert_eq!(cd[0].0, b_in);
    let DownReason::Revoked(why) = &cd[0].1 else { panic!("{:?}", cd[0].1) };
    assert!(why.contains("a.example is no longer welcome") && why.contains("switchable v2"), "{why}");
    assert!(cd[0].1.to_string().starts_with("revoked after reload: "), "{}", cd[0].1);
    p.ev_b.extend(downs);
    // The DELETE reaches A, which removes everything; B's IKE SA goes down with the reason.
    p.run_until_quiet();
    assert!(p.a.ike_sas().is_empty(), "A still holds {:?}", p.a.status(p.now));
    assert!(p.b.ike_sas().is_empty(), "B still holds {:?}", p.b.status(p.now));
    assert!(matches!(child_downs(&p.ev_a).last(), Some((_, DownReason::RemoteDelete))), "{:?}", p.ev_a);
    assert!(matches!(ike_downs(&p.ev_a).last(), Some((_, DownReason::RemoteDelete))));
    assert!(
        matches!(ike_downs(&p.ev_b).last(), Some((_, DownReason::Revoked(w))) if w.contains("no longer welcome")),
        "{:?}",
        ike_downs(&p.ev_b)
    );
    assert_eq!(child_downs(&p.ev_b).len(), 1, "no second ChildSaDown for the revoked child");
}

#[test]
fn recheck_deletes_sa_now_denied_even_without_peer_answer() {
    let (a, b) = default_pair_configs();
    let (mut p, rules) = pair_with_rules(a, b);
    up(&mut p);
    rules.lock().unwrap().deny.push("a.example".into());
    p.blackhole = true;
    p.b.recheck(p.now);
    // The Child SAs go at once; the IKE SA waits for the DELETE's
    // retransmissions to run out (4 s x 1.8^n, 5 retransmits: about 165 s).
    assert!(live_children(&p.b, p.now).is_empty());
    p.advance(Duration::from_secs(60));
    assert_eq!(p.b.ike_sas().len(), 1, "still retransmitting the DELETE");
    p.advance(Duration::from_secs(140));
    assert!(p.b.ike_sas().is_empty(), "{:?}", p.b.status(p.now));
    assert!(
        matches!(ike_downs(&p.ev_b).last(), Some((_, DownReason::Revoked(_)))),
        "reason kept after the DELETE timed out: {:?}",
        ike_downs(&p.ev_b)
    );
}

/// A plugin that cannot decide (trap, deadline) never stops a live SA.
#[test]
fn recheck_keeps_sa_when_the_policy_fails_to_decide() {
    let (a, b) = default_pair_configs();
    let (mut p, rules) = pair_with_rules(a, b);
    up(&mut p);
    rules.lock().unwrap().fail = true;
    let r = p.b.recheck(p.now);
    assert!(r.ike_revoked.is_empty() && r.children_revoked.is_empty(), "{r:?}");
    assert_eq!(r.undecided, 1);
    p.run_until_quiet();
    assert_eq!(live_children(&p.b, p.now).len(), 1);
    assert!(
        failures(&p.ev_b).iter().any(|f| f.reason.to_string().contains("undecided, SA kept") && f.reason.to_string().contains("trap")),
        "{:?}",
        failures(&p.ev_b)
    );
}

#[test]
fn recheck_drops_child_whose_selectors_are_no_longer_allowed() {
    let (a, b) = default_pair_configs();
    let (mut p, rules) = pair_with_rules(a, b);
    up(&mut p);
    p.a.initiate_child(p.now, "ab", "net2").unwrap();
    p.run_until_quiet();
    assert_eq!(live_children(&p.b, p.now).len(), 2);
    let st = p.b.status(p.now);
    let net = st[0].children.iter().find(|c| c.name == "net").unwrap().spi_in;
    let net2 = st[0].children.iter().find(|c| c.name == "net2").unwrap().spi_in;
    // The new policy only allows a quarter of child net's remote range.
    rules.lock().unwrap().shrink = Some((selector("10.1.0.0/24").unwrap(), selector("10.1.0.0/26").unwrap()));
    let r = p.b.recheck(p.now);
    assert_eq!((r.ike_checked, r.children_checked), (1, 2));
    assert!(r.ike_revoked.is_empty());
    assert_eq!(r.children_revoked, vec![net]);
    p.run_until_quiet();
    let downs = child_downs(&p.ev_b);
    let (spi, reason) = downs.last().unwrap();
    assert_eq!(*spi, net);
    let DownReason::Revoked(why) = reason else { panic!("{reason:?}") };
    assert!(why.contains("child net") && why.contains("10.1.0.0/26"), "{why}");
    // A got the DELETE; the IKE SA and child net2 stay, mirrored.
    assert_eq!(live_children(&p.b, p.now).iter().map(|c| c.0).collect::<Vec<_>>(), vec![net2]);
    assert_eq!(live_children(&p.a, p.now).len(), 1);
    assert_mirrored(&p);
    assert!(matches!(child_downs(&p.ev_a).last(), Some((_, DownReason::RemoteDelete))));
    assert_eq!(p.b.ike_sas().len(), 1);
}

#[test]
fn rekeyed_ike_sa_expires_without_peer_delete() {
    let mut p = established();
    let old_b = p.b.ike_sas()[0];
    let id = p.a.ike_sas()[0];
    p.a.rekey_ike(p.now, id).unwrap();
    let rekeyed = |p: &Pair| p.b.status(p.now).iter().any(|s| s.state == wisp_ike::event::IkeSaState::Rekeyed);
    assert!(p.run_until(Duration::from_secs(5), rekeyed), "B never saw the rekey");
    // A's DELETE of the old SA (and every retransmission) is lost.
    p.blackhole = true;
    p.advance(Duration::from_secs(20));
    assert!(rekeyed(&p), "B keeps the old SA for the grace period");
    p.advance(Duration::from_secs(15));
    assert!(!rekeyed(&p), "B still holds the rekeyed SA 35 s later: {:?}", p.b.status(p.now));
    assert_eq!(p.b.ike_sas().len(), 1, "only the new IKE SA is left");
    assert!(ike_downs(&p.ev_b).contains(&(old_b, DownReason::Rekeyed)));
    assert_eq!(live_children(&p.b, p.now).len(), 1, "the Child SA moved to the new IKE SA stays");
}

#[test]
fn caps_on_ike_child_and_selectors() {
    // Child SAs: B accepts one per connection.
    let (a, mut b) = default_pair_configs();
    b.connections[0].caps.max_child_sas = 1;
    let mut p = Pair::new(a, b);
    up(&mut p);
    p.a.initiate_child(p.now, "ab", "net2").unwrap();
    p.run_until_quiet();
    assert_eq!(live_children(&p.b, p.now).len(), 1);
    let f = failures(&p.ev_b);
    assert!(f.iter().any(|f| f.reason.to_string().contains("max_child_sas = 1") && f.notify == Some(35)), "B: {f:?}");
    assert!(failures(&p.ev_a).iter().any(|f| f.notify == Some(35)), "A told NO_ADDITIONAL_SAS: {:?}", failures(&p.ev_a));
    // Our own initiation respects the cap too.
    let (mut a, b) = default_pair_configs();
    a.connections[0].caps.max_child_sas = 1;
    let mut p = Pair::new(a, b);
    up(&mut p);
    p.a.initiate_child(p.now, "ab", "net2").unwrap();
    p.run_until_quiet();
    assert_eq!(live_children(&p.a, p.now).len(), 1);
    assert!(failures(&p.ev_a).iter().any(|f| f.reason.to_string().contains("max_child_sas = 1")), "{:?}", failures(&p.ev_a));

    // IKE SAs: B accepts one for the connection; a second is refused, the first stays.
    let (a, mut b) = default_pair_configs();
    b.connections[0].caps.max_ike_sas = 1;
    let mut p = Pair::new(a, b);
    up(&mut p);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(p.b.ike_sas().len(), 1, "{:?}", p.b.status(p.now));
    assert!(
        failures(&p.ev_b).iter().any(|f| f.reason.to_string().contains("max_ike_sas = 1") && f.notify == Some(24)),
        "{:?}",
        failures(&p.ev_b)
    );
    assert_eq!(live_children(&p.b, p.now).len(), 1, "the first IKE SA and its child are untouched");
    let (mut a, b) = default_pair_configs();
    a.connections[0].caps.max_ike_sas = 1;
    let mut p = Pair::new(a, b);
    up(&mut p);
    match p.a.initiate(p.now, "ab") {
        Err(EngineError::Limit(m)) => assert!(m.contains("max_ike_sas = 1"), "{m}"),
        other => panic!("expected the cap, got {other:?}"),
    }

    // Selectors: A proposes two local selectors, B allows one per side.
    let (mut a, mut b) = default_pair_configs();
    a.connections[0].children[0].local_ts = vec![selector("10.1.0.0/25").unwrap(), selector("10.1.0.128/25").unwrap()];
    b.connections[0].caps.max_selectors = 1;
    let mut p = Pair::new(a.clone(), b);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert!(live_children(&p.b, p.now).is_empty());
    let f = failures(&p.ev_b);
    assert!(f.iter().any(|f| f.reason.to_string().contains("peer proposed 2 TSi traffic selectors") && f.notify == Some(38)), "{f:?}");
    // A config above its own cap is refused up front.
    a.connections[0].caps.max_selectors = 1;
    let err = a.connections[0].validate().unwrap_err().to_string();
    assert!(err.contains("max_selectors = 1"), "{err}");
}
