//! Reauthentication, make-before-break, on virtual time: by `reauth_time`
//! on either side, and after the PSK is rotated on both sides.

mod engine_support;

use std::time::Duration;

use engine_support::*;
use wisp_ike::config::CloseAction;
use wisp_ike::event::*;

/// Two children up, `a` initiated; `f` adjusts both configs first.
fn two_children(f: impl FnOnce(&mut wisp_ike::config::Config, &mut wisp_ike::config::Config)) -> Pair {
    let (mut a, mut b) = default_pair_configs();
    f(&mut a, &mut b);
    let mut p = Pair::new(a, b);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    p.a.initiate_child(p.now, "ab", "net2").unwrap();
    p.run_until_quiet();
    assert_eq!(child_ups(&p.ev_a).len(), 2);
    p
}

fn rekeyed_events(ev: &[Event]) -> Vec<(u32, String)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::ChildSaRekeyed { old_spi_in, new, .. } => Some((*old_spi_in, new.name.clone())),
            _ => None,
        })
        .collect()
}

/// After a make-before-break reauthentication by `by_a` (else `b`): one IKE
/// SA each side (a new one), both children replaced, mirrored, and the side
/// that reauthenticated reported the new children as rekeys of the old.
fn assert_reauthenticated(p: &Pair, old_a: IkeSaId, old_b: IkeSaId, by_a: bool) {
    assert_eq!(p.a.ike_sas().len(), 1, "{:?}", p.a.status(p.now));
    assert_eq!(p.b.ike_sas().len(), 1);
    assert_ne!(p.a.ike_sas()[0], old_a);
    assert_ne!(p.b.ike_sas()[0], old_b);
    assert_eq!(live_children(&p.a, p.now).len(), 2);
    assert_mirrored(p);
    let (ev, old) = if by_a { (&p.ev_a, old_a) } else { (&p.ev_b, old_b) };
    let mut names: Vec<String> = rekeyed_events(ev).into_iter().map(|(_, n)| n).collect();
    names.sort();
    assert_eq!(names, ["net", "net2"], "new children as rekeys of the old: {ev:?}");
    assert!(ike_downs(ev).contains(&(old, DownReason::Rekeyed)));
    // The old children left as replaced, never as failures or deletes.
    let downs = child_downs(ev);
    assert_eq!(downs.len(), 2);
    assert!(downs.iter().all(|d| d.1 == DownReason::Rekeyed), "{downs:?}");
}

#[test]
fn reauth_time_on_the_initiator() {
    let mut p = two_children(|a, _| a.connections[0].reauth_time = Some(Duration::from_secs(100)));
    let (old_a, old_b) = (p.a.ike_sas()[0], p.b.ike_sas()[0]);
    let inits = |p: &Pair| p.wire.iter().filter(|(to_b, t)| *to_b && t.bytes[18] == 34 && t.bytes[8..16] == [0; 8]).count();
    let before = inits(&p);
    p.run_for(Duration::from_secs(95));
    assert_eq!(inits(&p), before, "not before reauth_time");
    p.run_for(Duration::from_secs(20));
    assert!(inits(&p) > before);
    assert_reauthenticated(&p, old_a, old_b, true);
    // The peer's children went down as deleted by us, and came back new,
    // with no restart of its own even with close_action = start.
    assert_eq!(child_ups(&p.ev_b).len(), 4);
    // And it happens again after another reauth_time.
    let second = p.a.ike_sas()[0];
    p.run_for(Duration::from_secs(110));
    assert_ne!(p.a.ike_sas()[0], second);
    assert_eq!(p.a.ike_sas().len(), 1);
    assert_mirrored(&p);
}

#[test]
fn reauth_time_on_the_responder() {
    let mut p = two_children(|_, b| {
        b.connections[0].reauth_time = Some(Duration::from_secs(100));
        b.connections[0].children[0].close_action = CloseAction::Start;
    });
    let (old_a, old_b) = (p.a.ike_sas()[0], p.b.ike_sas()[0]);
    p.run_for(Duration::from_secs(130));
    assert_reauthenticated(&p, old_a, old_b, false);
    // a's close_action is none; b's new SA is initiated by b now.
    assert!(p.b.status(p.now)[0].initiator);
}

#[test]
fn close_action_start_does_not_fight_a_reauthentication() {
    let mut p = two_children(|a, b| {
        a.connections[0].reauth_time = Some(Duration::from_secs(100));
        b.connections[0].children[0].close_action = CloseAction::Start;
        b.connections[0].children[1].close_action = CloseAction::Start;
    });
    let (old_a, old_b) = (p.a.ike_sas()[0], p.b.ike_sas()[0]);
    p.run_for(Duration::from_secs(150));
    assert_reauthenticated(&p, old_a, old_b, true);
    assert!(p.b.pending_restarts().is_empty());
    assert_eq!(p.b.ike_sas().len(), 1, "b started nothing of its own");
}

#[test]
fn psk_rotated_on_both_sides_then_reauthenticated() {
    let mut p = two_children(|_, _| {});
    let (old_a, old_b) = (p.a.ike_sas()[0], p.b.ike_sas()[0]);
    for e in [&mut p.a, &mut p.b] {
        let mut c = e.config().connections[0].clone();
        c.psk = wisp_ike::config::Secret::new(b"the-new-psk".to_vec());
        e.update_connection(c).unwrap();
    }
    p.a.reauth_ike(p.now, old_a).unwrap();
    p.run_until_quiet();
    assert_reauthenticated(&p, old_a, old_b, true);
}

#[test]
fn a_failed_reauthentication_keeps_the_old_sa() {
    let mut p = two_children(|_, _| {});
    let (old_a, _) = (p.a.ike_sas()[0], p.b.ike_sas()[0]);
    // Only a has the new key: the new IKE SA fails AUTH.
    let mut c = p.a.config().connections[0].clone();
    c.psk = wisp_ike::config::Secret::new(b"only-a-has-it".to_vec());
    p.a.update_connection(c).unwrap();
    p.a.reauth_ike(p.now, old_a).unwrap();
    p.run_until_quiet();
    assert_eq!(p.a.ike_sas(), vec![old_a], "the old SA stays");
    assert_eq!(live_children(&p.a, p.now).len(), 2);
    assert!(failures(&p.ev_a).iter().any(|f| f.reason.to_string().contains("AUTHENTICATION_FAILED")), "{:?}", failures(&p.ev_a));
    assert!(rekeyed_events(&p.ev_a).is_empty());
    // Its children are still mirrored and rekey as before.
    assert_mirrored(&p);
    let spi = live_children(&p.a, p.now)[0].0;
    p.a.rekey_child(p.now, old_a, spi).unwrap();
    p.run_until_quiet();
    assert_eq!(rekeyed_events(&p.ev_a).len(), 1);
}
