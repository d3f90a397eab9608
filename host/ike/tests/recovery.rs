//! Recovery on virtual time: `dpd_action`, `close_action`, `keyingtries`
//! with backoff, and `start_action = start` children brought back after
//! expiry (see `wisp_ike::engine`'s recovery module).

mod engine_support;

use std::sync::Arc;
use std::time::Duration;

use engine_support::*;
use wisp_ike::config::{CloseAction, Config, DpdAction, Retransmit, StartAction};
use wisp_ike::engine::Engine;
use wisp_ike::event::*;
use wisp_ike::native_policy::ConfigPolicy;

/// `a` initiates with DPD every 10 s; its child `net` gets `f` applied.
fn pair_with(f: impl FnOnce(&mut Config)) -> (Pair, Config) {
    let (mut a, b) = default_pair_configs();
    a.connections[0].dpd_interval = Some(Duration::from_secs(10));
    a.connections[0].keyingtries = 0;
    // Fast retransmissions: a try gives up after 1 + 1.5 + 2.25 s (+ 3.4 s wait).
    a.connections[0].retransmit = Retransmit { timeout: Duration::from_secs(1), backoff: 1.5, tries: 3 };
    f(&mut a);
    let p = Pair::new(a, b.clone());
    (p, b)
}

fn up(p: &mut Pair) {
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(child_ups(&p.ev_a).len(), 1);
}

/// IKE_SA_INIT requests `a` sent (first transmissions, by SPIi) since `from` in the wire log.
fn inits_sent(p: &Pair, from: usize) -> Vec<u64> {
    let mut spis: Vec<u64> = p.wire[from..]
        .iter()
        .filter(|(to_b, t)| *to_b && t.bytes.len() > 28 && t.bytes[18] == 34 && t.bytes[8..16] == [0; 8])
        .map(|(_, t)| u64::from_be_bytes(t.bytes[0..8].try_into().unwrap()))
        .collect();
    spis.dedup();
    spis
}

/// The peer comes back as a fresh process (no state).
fn restart_b(p: &mut Pair, b: &Config) {
    p.b = Engine::new(b.clone(), Arc::new(ConfigPolicy::new(b)), [9; 32]).unwrap();
    p.blackhole = false;
}

#[test]
fn dpd_restart_brings_the_tunnel_back_when_the_peer_returns() {
    let (mut p, b) = pair_with(|a| a.connections[0].children[0].dpd_action = DpdAction::Restart);
    up(&mut p);
    p.blackhole = true;
    let mark = p.wire.len();
    p.run_for(Duration::from_secs(300));
    assert_eq!(ike_downs(&p.ev_a).last().map(|d| d.1.clone()), Some(DownReason::Timeout));
    // While the peer is away: new initiations, spaced by the backoff.
    let tries = inits_sent(&p, mark);
    assert!(tries.len() >= 3, "restart attempts while the peer is dead: {tries:?}");
    restart_b(&mut p, &b);
    let back = p.run_until(Duration::from_secs(120), |p| child_ups(&p.ev_a).len() == 2);
    assert!(back, "tunnel not re-established after the peer returned: {:?}", failures(&p.ev_a));
    assert_eq!(live_children(&p.a, p.now).len(), 1);
    assert_eq!(live_children(&p.b, p.now).len(), 1);
    assert!(p.a.pending_restarts().is_empty());
}

#[test]
fn dpd_clear_leaves_it_down() {
    let (mut p, b) = pair_with(|_| {});
    up(&mut p);
    p.blackhole = true;
    p.run_for(Duration::from_secs(300));
    assert_eq!(ike_downs(&p.ev_a).len(), 1);
    let mark = p.wire.len();
    restart_b(&mut p, &b);
    p.run_for(Duration::from_secs(300));
    assert!(inits_sent(&p, mark).is_empty(), "dpd_action = clear initiated again");
    assert_eq!(child_ups(&p.ev_a).len(), 1);
}

#[test]
fn dpd_trap_asks_for_a_trap() {
    let (mut p, _) = pair_with(|a| a.connections[0].children[0].dpd_action = DpdAction::Trap);
    up(&mut p);
    p.blackhole = true;
    let mark = p.wire.len();
    p.run_for(Duration::from_secs(300));
    let traps: Vec<_> =
        p.ev_a.iter().filter(|e| matches!(e, Event::TrapWanted { connection, child } if connection == "ab" && child == "net")).collect();
    assert_eq!(traps.len(), 1, "{:?}", p.ev_a);
    assert!(inits_sent(&p, mark).is_empty(), "a trap waits for traffic");
}

#[test]
fn close_action_start_re_establishes_after_the_peers_delete() {
    let (mut p, _) = pair_with(|a| a.connections[0].children[0].close_action = CloseAction::Start);
    up(&mut p);
    let ike_b = ike_up(&p.ev_b)[0].ike;
    p.b.delete_ike(p.now, ike_b).unwrap();
    let back = p.run_until(Duration::from_secs(10), |p| child_ups(&p.ev_a).len() == 2);
    assert!(back, "{:?}", p.ev_a);
    assert!(ike_downs(&p.ev_a).iter().any(|d| d.1 == DownReason::RemoteDelete));
    // The peer deleting just the child (not the IKE SA) also brings it back,
    // inside the IKE SA that is still there.
    let spi = live_children(&p.b, p.now)[0].0;
    let ike_b = p.b.ike_sas()[0];
    p.b.delete_child(p.now, ike_b, spi).unwrap();
    let back = p.run_until(Duration::from_secs(10), |p| child_ups(&p.ev_a).len() == 3);
    assert!(back);
    assert_eq!(p.a.ike_sas().len(), 1, "the child came back in the surviving IKE SA");
}

#[test]
fn close_action_none_and_local_delete_restart_nothing() {
    let (mut p, _) = pair_with(|a| a.connections[0].children[0].dpd_action = DpdAction::Restart);
    up(&mut p);
    let ike_b = ike_up(&p.ev_b)[0].ike;
    p.b.delete_ike(p.now, ike_b).unwrap();
    let mark = p.wire.len();
    p.run_for(Duration::from_secs(60));
    assert!(inits_sent(&p, mark).is_empty(), "close_action = none");
    // With close_action = start, our own `down` still stays down.
    let (mut p, _) = pair_with(|a| a.connections[0].children[0].close_action = CloseAction::Start);
    up(&mut p);
    let ike_a = p.a.ike_sas()[0];
    p.a.delete_ike(p.now, ike_a).unwrap();
    let mark = p.wire.len();
    p.run_for(Duration::from_secs(60));
    assert!(inits_sent(&p, mark).is_empty(), "a local delete is not repaired");
}

#[test]
fn keyingtries_bound_the_retries_with_backoff() {
    let (mut p, _) = pair_with(|a| {
        a.connections[0].keyingtries = 3;
        a.connections[0].children[0].start_action = StartAction::Start;
    });
    p.blackhole = true;
    p.a.start(p.now);
    let t0 = p.now;
    let mut times = Vec::new();
    let mut seen = 0;
    for step in 1..=1200u32 {
        p.run_for(Duration::from_millis(500));
        // run_for stops early when nothing at all is pending.
        p.now = p.now.max(t0 + Duration::from_millis(500) * step);
        let n = inits_sent(&p, 0).len();
        if n > seen {
            times.push(p.now - t0);
            seen = n;
        }
    }
    assert_eq!(seen, 3, "three tries, then give up: {times:?}");
    let f = failures(&p.ev_a);
    assert!(f.iter().any(|f| f.reason.to_string().contains("giving up after 3 of keyingtries = 3")), "{f:?}");
    // Each try waits out its retransmissions, then 1 s, then 2 s more.
    let gap1 = times[1] - times[0];
    let gap2 = times[2] - times[1];
    assert!(gap2 > gap1 && gap2 - gap1 >= Duration::from_millis(500), "backoff grows: {times:?}");
    assert!(p.a.pending_restarts().is_empty());
    assert!(p.a.poll_timeout().is_none(), "nothing left to do");
}

#[test]
fn keyingtries_zero_keeps_trying_and_success_resets() {
    let (mut p, b) = pair_with(|a| a.connections[0].children[0].start_action = StartAction::Start);
    p.blackhole = true;
    p.a.start(p.now);
    p.run_for(Duration::from_secs(900));
    let n = inits_sent(&p, 0).len();
    assert!(n >= 6, "keyingtries = 0 keeps trying: {n}");
    let pending = p.a.pending_restarts();
    assert!(pending.len() == 1 || p.a.ike_sas().len() == 1, "{pending:?}");
    restart_b(&mut p, &b);
    assert!(p.run_until(Duration::from_secs(120), |p| child_ups(&p.ev_a).len() == 1));
    assert!(p.a.pending_restarts().is_empty());
}

#[test]
fn a_start_child_comes_back_after_its_hard_lifetime() {
    let (mut p, _) = pair_with(|a| {
        let c = &mut a.connections[0].children[0];
        c.start_action = StartAction::Start;
        c.lifetimes.soft_time = None;
        c.lifetimes.hard_time = Some(Duration::from_secs(60));
        c.lifetimes.jitter = Duration::ZERO;
        a.connections[0].dpd_interval = None;
    });
    p.a.start(p.now);
    p.run_until_quiet();
    assert_eq!(child_ups(&p.ev_a).len(), 1);
    assert!(p.run_until(Duration::from_secs(70), |p| child_downs(&p.ev_a).iter().any(|d| d.1 == DownReason::Expired)));
    assert!(p.run_until(Duration::from_secs(10), |p| child_ups(&p.ev_a).len() == 2), "{:?}", p.ev_a);
}
