//! Proposal matching (RFC 7296 3.3) and the host's enforcement of the
//! configured proposals and PFS whatever the policy answers; rekeys asking the
//! policy again (issue 10, item 4).

mod engine_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine_support::*;
use wisp_ike::codec::NotifyType;
use wisp_ike::config::{selector, ChildConfig, Config};
use wisp_ike::event::*;
use wisp_ike::native_policy::ConfigPolicy;
use wisp_policy_api::{
    AuthInfo, DecisionTrigger, PeerContext, Policy, PolicyError, Proposal, ProposalChoice, SaKind, SelectorPair, SelectorRequest,
    TransformType,
};

/// One policy call as the engine made it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Select(SaKind, DecisionTrigger),
    Order(SaKind, DecisionTrigger),
    Authorize(DecisionTrigger),
    Narrow(DecisionTrigger),
}

/// What the scripted policy answers to `select_proposal`.
#[derive(Clone)]
enum SelectRule {
    /// Whatever ConfigPolicy says.
    Config,
    /// Always offered proposal 0, naming the transforms this returns.
    Name(fn(&Proposal) -> Vec<usize>),
}

/// ConfigPolicy with a call log and scripted answers.
struct Scripted {
    inner: ConfigPolicy,
    calls: Mutex<Vec<Call>>,
    select: SelectRule,
    refuse_rekey_authorize: bool,
    refuse_rekey_select: Option<SaKind>,
}

impl Scripted {
    fn new() -> Self {
        Scripted {
            inner: ConfigPolicy::default(),
            calls: Mutex::new(Vec::new()),
            select: SelectRule::Config,
            refuse_rekey_authorize: false,
            refuse_rekey_select: None,
        }
    }
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
    fn log(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }
    fn no(&self, why: &str) -> PolicyError {
        PolicyError::Refused { decider: "scripted".into(), reason: why.into() }
    }
}

impl Policy for Scripted {
    fn describe(&self) -> String {
        "scripted".into()
    }
    fn select_proposal(
        &self,
        ctx: &PeerContext,
        kind: SaKind,
        offered: &[Proposal],
        configured: &[Proposal],
    ) -> Result<ProposalChoice, PolicyError> {
        self.log(Call::Select(kind, ctx.trigger));
        if ctx.trigger == DecisionTrigger::Rekey && self.refuse_rekey_select == Some(kind) {
            return Err(self.no("no rekeys today"));
        }
        match self.select {
            // Naming applies to the IKE SA; Child SAs follow the configuration.
            SelectRule::Name(f) if kind == SaKind::Ike => Ok(ProposalChoice { index: 0, transforms: f(&offered[0]) }),
            _ => self.inner.select_proposal(ctx, kind, offered, configured),
        }
    }
    fn order_proposals(&self, ctx: &PeerContext, kind: SaKind, configured: &[Proposal]) -> Result<Vec<usize>, PolicyError> {
        self.log(Call::Order(kind, ctx.trigger));
        self.inner.order_proposals(ctx, kind, configured)
    }
    fn authorize(&self, ctx: &PeerContext, auth: &AuthInfo) -> Result<(), PolicyError> {
        self.log(Call::Authorize(ctx.trigger));
        if ctx.trigger == DecisionTrigger::Rekey && self.refuse_rekey_authorize {
            return Err(self.no("identity revoked"));
        }
        self.inner.authorize(ctx, auth)
    }
    fn narrow_selectors(&self, ctx: &PeerContext, request: &SelectorRequest) -> Result<SelectorPair, PolicyError> {
        self.log(Call::Narrow(ctx.trigger));
        self.inner.narrow_selectors(ctx, request)
    }
}

fn configs(ike_a: &[&str], esp_a: &[&str], ike_b: &[&str], esp_b: &[&str]) -> (Config, Config) {
    let a =
        Config { connections: vec![conn("ab", "a", "b", b"secret-psk", ike_a, esp_a, "10.1.0.0/24", "10.2.0.0/24")], ..Config::default() };
    let b =
        Config { connections: vec![conn("ba", "b", "a", b"secret-psk", ike_b, esp_b, "10.2.0.0/24", "10.1.0.0/24")], ..Config::default() };
    (a, b)
}

fn pair_with(a: Config, b: Config, pa: Arc<dyn Policy>, pb: Arc<dyn Policy>) -> Pair {
    Pair::with_policies(a, b, pa, pb)
}

fn failure_notifies(ev: &[Event]) -> Vec<Option<u16>> {
    failures(ev).iter().map(|f| f.notify).collect()
}

/// Index of the first transform of `kind` with `id` in `p`.
fn find(p: &Proposal, kind: TransformType, id: u16) -> usize {
    p.transforms.iter().position(|t| t.kind == kind && t.id == id).expect("transform offered")
}

#[test]
fn unsupported_alternatives_are_ignored_not_refused() {
    // A offers, inside ONE proposal per SA, alternatives wisp does not implement
    // (AES-GCM-12, AES-CBC with SHA-256, MODP-2048 next to Curve25519) and ones
    // B did not configure (SHA-1 PRF); B picks one acceptable transform of each type.
    let (a, b) = configs(
        &["aes128gcm12-aes256gcm16-prfsha1-prfsha256-modp2048-x25519"],
        &["aes128gcm12-aes256gcm16-esn-noesn"],
        &["aes256gcm16-prfsha256-x25519"],
        &["aes256gcm16"],
    );
    let mut p = Pair::new(a, b);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    let up = ike_up(&p.ev_b);
    assert_eq!(up.len(), 1, "B refused: {:?}", failures(&p.ev_b));
    assert_eq!(up[0].algorithms, "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE25519");
    assert_eq!(ike_up(&p.ev_a)[0].algorithms, up[0].algorithms);
    let (ca, cb) = (child_ups(&p.ev_a), child_ups(&p.ev_b));
    assert_eq!((ca.len(), cb.len()), (1, 1), "child refused: {:?}", failures(&p.ev_b));
    assert_child_pair(ca[0], cb[0]);
    assert!(!cb[0].algorithms.esn, "B configured no ESN; the ESN alternative is not taken");
}

#[test]
fn configured_proposals_are_a_ceiling_no_fallback() {
    // Every transform A offers is implemented, but B configured another cipher:
    // no fallback to "any supported transform", whatever B's policy would say.
    let (a, b) = configs(&["aes128gcm16-prfsha256-x25519"], &["aes256gcm16"], &["aes256gcm16-prfsha256-x25519"], &["aes256gcm16"]);
    let pb = Arc::new(Scripted { select: SelectRule::Name(|_| Vec::new()), ..Scripted::new() });
    let mut p = pair_with(a, b, Arc::new(ConfigPolicy::default()), pb.clone());
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert!(ike_up(&p.ev_b).is_empty() && ike_up(&p.ev_a).is_empty());
    assert_eq!(failure_notifies(&p.ev_b), vec![Some(NotifyType::NO_PROPOSAL_CHOSEN.0)]);
    assert!(!pb.calls().iter().any(|c| matches!(c, Call::Select(..))), "nothing within the ceiling: the policy is not asked");

    // The same for ESP: the IKE SA comes up, the Child SA does not.
    let (a, b) = configs(&["aes256gcm16-prfsha256-x25519"], &["aes128gcm16"], &["aes256gcm16-prfsha256-x25519"], &["aes256gcm16"]);
    let pb = Arc::new(Scripted { select: SelectRule::Name(|_| Vec::new()), ..Scripted::new() });
    let mut p = pair_with(a, b, Arc::new(ConfigPolicy::default()), pb);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_b).len(), 1);
    assert!(child_ups(&p.ev_b).is_empty() && child_ups(&p.ev_a).is_empty());
    assert_eq!(failure_notifies(&p.ev_b), vec![Some(NotifyType::NO_PROPOSAL_CHOSEN.0)]);
}

#[test]
fn children_proposals_not_pooled() {
    // B's child `net` (the one whose selectors match) takes AES-GCM-256 only; its
    // other child `other` takes ChaCha20-Poly1305. A asks for `net` with ChaCha:
    // refused, although another child of the connection would take the cipher.
    let (mut a, mut b) =
        configs(&["aes256gcm16-prfsha256-x25519"], &["chacha20poly1305"], &["aes256gcm16-prfsha256-x25519"], &["aes256gcm16"]);
    a.connections[0].children.truncate(1);
    b.connections[0].children = vec![
        ChildConfig::new("net", vec![selector("10.2.0.0/24").unwrap()], vec![selector("10.1.0.0/24").unwrap()], &["aes256gcm16"]).unwrap(),
        ChildConfig::new("other", vec![selector("10.9.0.0/24").unwrap()], vec![selector("10.8.0.0/24").unwrap()], &["chacha20poly1305"])
            .unwrap(),
    ];
    let mut p = Pair::new(a, b);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_b).len(), 1);
    assert!(child_ups(&p.ev_b).is_empty(), "child came up with a pooled proposal: {:?}", child_ups(&p.ev_b));
    assert_eq!(failure_notifies(&p.ev_b), vec![Some(NotifyType::NO_PROPOSAL_CHOSEN.0)]);
    assert!(failures(&p.ev_b)[0].reason.to_string().contains("child net"), "{}", failures(&p.ev_b)[0].reason);
}

#[test]
fn responder_refuses_child_without_ke_when_pfs_configured() {
    // B configured PFS for its children, A did not. IKE_AUTH's Child SA has no
    // key exchange of its own, so it comes up; every CREATE_CHILD_SA without KE
    // (a rekey, a new child) is refused.
    let (a, b) = configs(&["aes256gcm16-prfsha256-x25519"], &["aes256gcm16"], &["aes256gcm16-prfsha256-x25519"], &["aes256gcm16-x25519"]);
    let mut p = Pair::new(a, b);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(child_ups(&p.ev_b).len(), 1);
    let (old_a, _) = live_children(&p.a, p.now)[0];
    let ike = p.a.ike_sas()[0];
    p.a.rekey_child(p.now, ike, old_a).unwrap();
    p.run_until_quiet();
    assert!(rekeyed(&p.ev_b).is_empty() && rekeyed(&p.ev_a).is_empty(), "rekeyed without the key exchange");
    assert_eq!(failure_notifies(&p.ev_b), vec![Some(NotifyType::NO_PROPOSAL_CHOSEN.0)]);
    assert_eq!(failures(&p.ev_a).last().unwrap().notify, Some(NotifyType::NO_PROPOSAL_CHOSEN.0));
    assert_eq!(live_children(&p.a, p.now).len(), 1, "the old Child SA stays");

    p.a.initiate_child(p.now, "ab", "net2").unwrap();
    p.run_until_quiet();
    assert_eq!(child_ups(&p.ev_b).len(), 1, "new child without KE refused too");
    assert_eq!(failure_notifies(&p.ev_b).len(), 2);

    // With PFS on both sides, the rekey carries KE and works.
    let (a, b) =
        configs(&["aes256gcm16-prfsha256-x25519"], &["aes256gcm16-x25519"], &["aes256gcm16-prfsha256-x25519"], &["aes256gcm16-x25519"]);
    let mut p = Pair::new(a, b);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    let (old_a, _) = live_children(&p.a, p.now)[0];
    let ike = p.a.ike_sas()[0];
    p.a.rekey_child(p.now, ike, old_a).unwrap();
    p.run_until_quiet();
    let r = rekeyed(&p.ev_b);
    assert_eq!(r.len(), 1, "{:?}", failures(&p.ev_b));
    assert_eq!(r[0].1.algorithms.pfs_group, Some(31));
}

#[test]
fn plugin_answer_outside_configured_proposal_refused() {
    // B's policy names AES-GCM-128, offered by A but not configured on B: the
    // host refuses instead of following the plugin or falling back.
    let (a, b) =
        configs(&["aes128gcm16-aes256gcm16-prfsha256-x25519"], &["aes256gcm16"], &["aes256gcm16-prfsha256-x25519"], &["aes256gcm16"]);
    let pb = Arc::new(Scripted {
        select: SelectRule::Name(|p| {
            vec![p.transforms.iter().position(|t| t.kind == TransformType::Encryption && t.key_length == Some(128)).unwrap()]
        }),
        ..Scripted::new()
    });
    let mut p = pair_with(a, b, Arc::new(ConfigPolicy::default()), pb.clone());
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert!(ike_up(&p.ev_b).is_empty());
    let f = failures(&p.ev_b);
    assert_eq!(f[0].notify, Some(NotifyType::NO_PROPOSAL_CHOSEN.0));
    assert!(f[0].reason.to_string().contains("outside the configured proposals"), "{}", f[0].reason);
    assert_eq!(pb.calls().first(), Some(&Call::Select(SaKind::Ike, DecisionTrigger::Initial)));
}

#[test]
fn plugin_names_transforms_to_exclude_a_weak_alternative() {
    // B configured both PRFs (SHA-1 first), A offers both; the policy takes the
    // proposal but names PRF_HMAC_SHA2_256, and the host follows it.
    let (a, b) =
        configs(&["aes256gcm16-prfsha1-prfsha256-x25519"], &["aes256gcm16"], &["aes256gcm16-prfsha1-prfsha256-x25519"], &["aes256gcm16"]);
    let mut p = pair_with(a.clone(), b.clone(), Arc::new(ConfigPolicy::default()), Arc::new(ConfigPolicy::default()));
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_b)[0].algorithms, "AES_GCM_16_256/PRF_HMAC_SHA1/CURVE25519", "without naming, our order wins");

    let pb = Arc::new(Scripted { select: SelectRule::Name(|p| vec![find(p, TransformType::Prf, 5)]), ..Scripted::new() });
    let mut p = pair_with(a, b, Arc::new(ConfigPolicy::default()), pb);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_b)[0].algorithms, "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE25519");
    assert_eq!(ike_up(&p.ev_a)[0].algorithms, "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE25519");
}

#[test]
fn rekey_calls_policy_with_rekey_trigger() {
    let (a, b) = default_pair_configs();
    let (pa, pb) = (Arc::new(Scripted::new()), Arc::new(Scripted::new()));
    let mut p = pair_with(a, b, pa.clone(), pb.clone());
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(child_ups(&p.ev_b).len(), 1);
    let initial = pb.calls();
    assert!(initial.contains(&Call::Select(SaKind::Ike, DecisionTrigger::Initial)));
    assert!(initial.contains(&Call::Authorize(DecisionTrigger::Initial)));
    assert!(!initial.iter().any(|c| matches!(c, Call::Select(_, DecisionTrigger::Rekey) | Call::Authorize(DecisionTrigger::Rekey))));

    // Child SA rekey started by A: B selects the ESP proposal and narrows again.
    let (old_a, _) = live_children(&p.a, p.now)[0];
    let ike = p.a.ike_sas()[0];
    p.a.rekey_child(p.now, ike, old_a).unwrap();
    p.run_until_quiet();
    assert_eq!(rekeyed(&p.ev_b).len(), 1);
    let after: Vec<Call> = pb.calls()[initial.len()..].to_vec();
    assert_eq!(after, vec![Call::Narrow(DecisionTrigger::Rekey), Call::Select(SaKind::Child, DecisionTrigger::Rekey)]);
    assert!(pa.calls().contains(&Call::Order(SaKind::Child, DecisionTrigger::Rekey)));

    // IKE SA rekey started by A: B selects the IKE proposal and authorizes the
    // peer again; A authorizes before it starts.
    let n_b = pb.calls().len();
    let n_a = pa.calls().len();
    let ike = p.a.ike_sas()[0];
    p.a.rekey_ike(p.now, ike).unwrap();
    p.run_until_quiet();
    assert_eq!(p.ev_b.iter().filter(|e| matches!(e, Event::IkeSaRekeyed { .. })).count(), 1);
    assert_eq!(
        pb.calls()[n_b..].to_vec(),
        vec![Call::Select(SaKind::Ike, DecisionTrigger::Rekey), Call::Authorize(DecisionTrigger::Rekey)]
    );
    assert_eq!(pa.calls()[n_a..].to_vec(), vec![Call::Authorize(DecisionTrigger::Rekey), Call::Order(SaKind::Ike, DecisionTrigger::Rekey)]);

    // The rekeyed IKE SA still knows how its peer authenticated: rekey it again.
    p.advance(Duration::from_secs(1));
    p.run_until_quiet();
    let n_b = pb.calls().len();
    let live = p.a.ike_sas();
    assert_eq!(live.len(), 1, "the old IKE SA is gone");
    p.a.rekey_ike(p.now, live[0]).unwrap();
    p.run_until_quiet();
    assert!(pb.calls()[n_b..].contains(&Call::Authorize(DecisionTrigger::Rekey)));
    assert!(failures(&p.ev_b).is_empty(), "{:?}", failures(&p.ev_b));
}

#[test]
fn plugin_refusing_rekey_refuses_it() {
    // B's policy no longer authorizes A on an IKE SA rekey: AUTHENTICATION_FAILED,
    // the IKE SA is not replaced.
    let (a, b) = default_pair_configs();
    let pb = Arc::new(Scripted { refuse_rekey_authorize: true, ..Scripted::new() });
    let mut p = pair_with(a, b, Arc::new(ConfigPolicy::default()), pb);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    let ike = p.a.ike_sas()[0];
    p.a.rekey_ike(p.now, ike).unwrap();
    p.run_until_quiet();
    assert!(!p.ev_b.iter().chain(&p.ev_a).any(|e| matches!(e, Event::IkeSaRekeyed { .. })));
    assert_eq!(failure_notifies(&p.ev_b), vec![Some(NotifyType::AUTHENTICATION_FAILED.0)]);
    assert!(failures(&p.ev_b)[0].reason.to_string().contains("identity revoked"));
    assert_eq!(failures(&p.ev_a).last().unwrap().notify, Some(NotifyType::AUTHENTICATION_FAILED.0));

    // Our own policy refusing: A does not even send the rekey.
    let (a, b) = default_pair_configs();
    let pa = Arc::new(Scripted { refuse_rekey_authorize: true, ..Scripted::new() });
    let mut p = pair_with(a, b, pa, Arc::new(ConfigPolicy::default()));
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    let sent = p.wire.len();
    let ike = p.a.ike_sas()[0];
    p.a.rekey_ike(p.now, ike).unwrap();
    p.run_until_quiet();
    assert_eq!(p.wire.len(), sent, "a refused rekey is not sent");
    assert!(failures(&p.ev_a).last().unwrap().reason.to_string().contains("identity revoked"));

    // Child SA rekey refused by select-proposal: NO_PROPOSAL_CHOSEN, the old one stays.
    let (a, b) = default_pair_configs();
    let pb = Arc::new(Scripted { refuse_rekey_select: Some(SaKind::Child), ..Scripted::new() });
    let mut p = pair_with(a, b, Arc::new(ConfigPolicy::default()), pb);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    let (old_a, _) = live_children(&p.a, p.now)[0];
    let ike = p.a.ike_sas()[0];
    p.a.rekey_child(p.now, ike, old_a).unwrap();
    p.run_until_quiet();
    assert!(rekeyed(&p.ev_b).is_empty());
    assert_eq!(failure_notifies(&p.ev_b), vec![Some(NotifyType::NO_PROPOSAL_CHOSEN.0)]);
    assert_eq!(live_children(&p.a, p.now), live_children(&p.a, p.now).into_iter().filter(|c| c.0 == old_a).collect::<Vec<_>>());
}
