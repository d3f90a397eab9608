//! Policy decisions that take time (`PolicyError::Deferred`), on virtual
//! time: the engine parks only the negotiation that asked, runs it again
//! when the answer is in (`Engine::policy_ready`), and keeps serving every
//! other SA meanwhile. The real-time counterpart, with the gateway's
//! threaded `AsyncPolicy` and a 100 ms policy, is
//! `host/policy/tests/async_policy.rs`.

mod engine_support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use engine_support::*;
use wisp_ike::config::Config;
use wisp_ike::engine::{MAX_PARKED, PARK_TTL};
use wisp_ike::event::*;
use wisp_ike::native_policy::ConfigPolicy;

const DECISION: Duration = Duration::from_millis(100);

/// A pair whose `b` (`to_b`) or `a` decides through a 100 ms virtual policy.
fn pair(defer_a: bool, defer_b: bool, f: impl FnOnce(&mut Config, &mut Config)) -> Pair {
    let (mut a, mut b) = default_pair_configs();
    f(&mut a, &mut b);
    let da = VirtualDeferred::new(Arc::new(ConfigPolicy::new(&a)), DECISION);
    let db = VirtualDeferred::new(Arc::new(ConfigPolicy::new(&b)), DECISION);
    let pa: Arc<dyn wisp_policy_api::Policy> = if defer_a { da.clone() } else { Arc::new(ConfigPolicy::new(&a)) };
    let pb: Arc<dyn wisp_policy_api::Policy> = if defer_b { db.clone() } else { Arc::new(ConfigPolicy::new(&b)) };
    let mut p = Pair::with_policies(a, b, pa, pb);
    da.start_at(p.now);
    db.start_at(p.now);
    p.deferred_a = defer_a.then_some(da);
    p.deferred_b = defer_b.then_some(db);
    p
}

fn exchange_of(t: &wisp_ike::engine::Transmit) -> u8 {
    t.bytes[18]
}

fn is_response(t: &wisp_ike::engine::Transmit) -> bool {
    t.bytes[19] & 0x20 != 0
}

#[test]
fn a_deferring_responder_completes_the_handshake_once_per_decision() {
    let mut p = pair(false, true, |_, _| {});
    let start = p.now;
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_a).len(), 1, "{:?}", failures(&p.ev_a));
    assert_eq!(ike_up(&p.ev_b).len(), 1, "{:?}", failures(&p.ev_b));
    let (ca, cb) = (child_ups(&p.ev_a), child_ups(&p.ev_b));
    assert_eq!((ca.len(), cb.len()), (1, 1));
    assert_child_pair(ca[0], cb[0]);
    assert!(failures(&p.ev_b).is_empty(), "{:?}", failures(&p.ev_b));
    // IKE proposal, authorization, selectors, ESP proposal: asked once each,
    // one after the other.
    let d = p.deferred_b.as_ref().unwrap();
    assert_eq!(d.asked(), 4, "{:#?}", d.questions());
    let up_at = p.now - start;
    assert!(up_at >= 4 * DECISION, "up after {up_at:?}");
    assert_eq!(p.b.decisions_waiting(), 0);
    // b answered each request once: one IKE_SA_INIT and one IKE_AUTH response.
    let answers: Vec<u8> = p.wire.iter().filter(|(to_b, t)| !*to_b && is_response(t)).map(|(_, t)| exchange_of(t)).collect();
    assert_eq!(answers, vec![34, 35]);
    assert_mirrored(&p);
}

#[test]
fn a_deferring_initiator_orders_and_authorizes_later() {
    let mut p = pair(true, false, |_, _| {});
    let ike = p.a.initiate(p.now, "ab").unwrap();
    // Nothing sent until the proposal order is in.
    p.run_for(Duration::from_millis(50));
    assert!(p.wire.is_empty());
    assert!(p.a.decisions_waiting() > 0);
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_a).len(), 1, "{:?}", failures(&p.ev_a));
    assert_eq!(ike_up(&p.ev_a)[0].ike, ike);
    assert_eq!(child_ups(&p.ev_a).len(), 1);
    assert_eq!(child_ups(&p.ev_b).len(), 1);
    // IKE order, ESP order, authorization of the responder.
    assert_eq!(p.deferred_a.as_ref().unwrap().asked(), 3);
}

#[test]
fn rekeys_wait_for_their_decisions_and_complete() {
    let mut p = pair(true, true, |_, _| {});
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    let child = child_ups(&p.ev_a)[0].clone();
    p.a.rekey_child(p.now, child.ike, child.spi_in).unwrap();
    p.run_until_quiet();
    let r = rekeyed(&p.ev_a);
    assert_eq!(r.len(), 1, "{:?}", failures(&p.ev_a));
    assert_eq!(r[0].0, child.spi_in);
    assert_eq!(rekeyed(&p.ev_b).len(), 1, "{:?}", failures(&p.ev_b));
    p.a.rekey_ike(p.now, child.ike).unwrap();
    p.run_until_quiet();
    let ike_rekeys = |ev: &[Event]| ev.iter().filter(|e| matches!(e, Event::IkeSaRekeyed { .. })).count();
    assert_eq!((ike_rekeys(&p.ev_a), ike_rekeys(&p.ev_b)), (1, 1), "{:?} {:?}", failures(&p.ev_a), failures(&p.ev_b));
    assert!(failures(&p.ev_a).is_empty() && failures(&p.ev_b).is_empty());
}

#[test]
fn other_sas_are_served_while_a_negotiation_waits() {
    let mut p = pair(false, true, |a, _| a.connections[0].children[0].dpd_action = wisp_ike::config::DpdAction::Clear);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    let first = ike_up(&p.ev_a)[0].ike;
    // b's policy stops answering: a second IKE SA from a waits at b ...
    p.deferred_b.as_ref().unwrap().stalled.store(true, Ordering::Relaxed);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_for(Duration::from_millis(20));
    assert!(p.b.decisions_waiting() > 0);
    // ... while the first one's liveness check is answered at once.
    let mark = p.wire.len();
    p.a.check_liveness(p.now, first).unwrap();
    p.run_for(Duration::from_millis(5));
    let answered = p.wire[mark..].iter().any(|(to_b, t)| !*to_b && is_response(t) && exchange_of(t) == 37);
    assert!(answered, "b did not answer the INFORMATIONAL while a decision waited");
    // A child created inside the live IKE SA waits for its own decisions.
    p.a.initiate_child(p.now, "ab", "net2").unwrap();
    p.run_for(Duration::from_millis(20));
    assert_eq!(child_ups(&p.ev_b).len(), 1);
    // Answers resume: everything that waited completes.
    p.deferred_b.as_ref().unwrap().stalled.store(false, Ordering::Relaxed);
    p.b.policy_ready(p.now);
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_b).len(), 2, "{:?}", failures(&p.ev_b));
    assert_eq!(child_ups(&p.ev_b).len(), 3, "{:?}", failures(&p.ev_b));
    assert_eq!(p.b.decisions_waiting(), 0);
}

#[test]
fn a_retransmitted_request_is_parked_once_and_answered_once() {
    let mut p = pair(false, true, |a, _| {
        a.connections[0].retransmit = wisp_ike::config::Retransmit { timeout: Duration::from_millis(150), backoff: 1.0, tries: 20 };
    });
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_b).len(), 1);
    assert_eq!(child_ups(&p.ev_b).len(), 1);
    // a retransmitted while b decided (150 ms < 4 × 100 ms) ...
    let requests = p.wire.iter().filter(|(to_b, t)| *to_b && !is_response(t) && exchange_of(t) == 35).count();
    assert!(requests >= 2, "IKE_AUTH sent {requests} times");
    // ... yet each question went to the policy once, and b built one
    // IKE_AUTH answer (a retransmission after it gets the same bytes again).
    assert_eq!(p.deferred_b.as_ref().unwrap().asked(), 4, "{:#?}", p.deferred_b.as_ref().unwrap().questions());
    let mut answers: Vec<&[u8]> =
        p.wire.iter().filter(|(to_b, t)| !*to_b && is_response(t) && exchange_of(t) == 35).map(|(_, t)| &t.bytes[..]).collect();
    answers.dedup();
    assert_eq!(answers.len(), 1);
}

#[test]
fn a_policy_that_never_answers_costs_bounded_state_and_then_fails() {
    let mut p = pair(false, true, |_, b| b.cookie_threshold = 1_000_000);
    p.deferred_b.as_ref().unwrap().stalled.store(true, Ordering::Relaxed);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_for(Duration::from_millis(10));
    let init = p.wire.iter().find(|(to_b, t)| *to_b && exchange_of(t) == 34).unwrap().1.clone();
    assert_eq!(p.b.decisions_waiting(), 1);
    // A flood of distinct IKE_SA_INIT requests: at most MAX_PARKED wait.
    let flood = 3 * MAX_PARKED;
    for i in 0..flood as u64 {
        let mut t = init.clone();
        t.bytes[0..8].copy_from_slice(&(0x1000 + i).to_be_bytes());
        p.inject(true, &t);
    }
    assert_eq!(p.b.decisions_waiting(), MAX_PARKED);
    assert_eq!(p.b.parked_dropped(), (flood + 1 - MAX_PARKED) as u64);
    assert_eq!(p.b.ike_sa_count(), 0, "parked requests create no SA");
    // After PARK_TTL the parked work is gone.
    p.run_for(PARK_TTL + Duration::from_secs(1));
    assert_eq!(p.b.decisions_waiting(), 0);
    assert_eq!(p.b.ike_sa_count(), 0);
}

#[test]
fn parked_requests_count_towards_cookies() {
    let mut p = pair(false, true, |_, b| b.cookie_threshold = 4);
    p.deferred_b.as_ref().unwrap().stalled.store(true, Ordering::Relaxed);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_for(Duration::from_millis(10));
    let init = p.wire.iter().find(|(to_b, t)| *to_b && exchange_of(t) == 34).unwrap().1.clone();
    let mark = p.wire.len();
    for i in 0..50u64 {
        let mut t = init.clone();
        t.bytes[0..8].copy_from_slice(&(0x1000 + i).to_be_bytes());
        p.inject(true, &t);
    }
    p.run_for(Duration::from_millis(1));
    // Past the threshold, requests without a cookie are answered with one
    // instead of costing a decision.
    assert!(p.b.decisions_waiting() <= 4, "{} waiting", p.b.decisions_waiting());
    assert!(p.deferred_b.as_ref().unwrap().asked() <= 4);
    let cookies = p.wire[mark..].iter().filter(|(to_b, t)| !*to_b && exchange_of(t) == 34).count();
    assert!(cookies >= 46, "{cookies} COOKIE answers");
}

#[test]
fn an_initiation_whose_order_never_comes_fails_after_the_ttl() {
    let mut p = pair(true, false, |_, _| {});
    p.deferred_a.as_ref().unwrap().stalled.store(true, Ordering::Relaxed);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_for(PARK_TTL + Duration::from_secs(1));
    assert!(p.wire.is_empty());
    let f = failures(&p.ev_a);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].reason.to_string().contains("did not decide"), "{}", f[0].reason);
    assert_eq!(p.a.ike_sa_count(), 0);
    assert_eq!(p.a.decisions_waiting(), 0);
}

#[test]
fn a_recheck_with_deferred_answers_finishes_later() {
    let mut p = pair(false, true, |_, _| {});
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    let r = p.b.recheck(p.now);
    assert_eq!(r.ike_checked, 1);
    assert!(r.deferred >= 1, "{r:?}");
    assert!(p.b.decisions_waiting() > 0);
    p.run_until_quiet();
    assert_eq!(p.b.decisions_waiting(), 0);
    // Allowed: nothing went down.
    assert!(child_downs(&p.ev_b).is_empty());
    assert!(ike_downs(&p.ev_b).is_empty());
}
