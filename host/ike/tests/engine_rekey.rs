//! Child SA and IKE SA rekeying, both directions, simultaneous collisions
//! (RFC 7296 2.8.1), lifetimes, and everything again under loss/dup/reorder.

mod engine_support;

use std::time::Duration;

use engine_support::*;
use wisp_ike::event::*;

fn ike_a(p: &Pair) -> IkeSaId {
    p.a.ike_sas()[0]
}
fn ike_b(p: &Pair) -> IkeSaId {
    p.b.ike_sas()[0]
}

/// The pair's live Child SA keys match: use the latest ChildSaUp/Rekeyed event per inbound SPI.
fn latest_child(ev: &[Event], spi_in: u32) -> Option<&ChildSaInfo> {
    ev.iter().rev().find_map(|e| match e {
        Event::ChildSaUp(i) if i.spi_in == spi_in => Some(i),
        Event::ChildSaRekeyed { new, .. } if new.spi_in == spi_in => Some(new),
        _ => None,
    })
}

fn assert_live_keys_match(p: &Pair) {
    assert_mirrored(p);
    for (spi_in, _) in live_children(&p.a, p.now) {
        let a = latest_child(&p.ev_a, spi_in).expect("A announced its live child");
        let b = latest_child(&p.ev_b, a.spi_out).expect("B announced the mirrored child");
        assert_child_pair(a, b);
    }
}

fn rekey_child_from(p: &mut Pair, from_a: bool) {
    let (old_a, _) = live_children(&p.a, p.now)[0];
    let (old_b, _) = live_children(&p.b, p.now)[0];
    if from_a {
        let id = ike_a(p);
        p.a.rekey_child(p.now, id, old_a).unwrap();
    } else {
        let id = ike_b(p);
        p.b.rekey_child(p.now, id, old_b).unwrap();
    }
    p.run_until_quiet();
    let ra = rekeyed(&p.ev_a);
    let rb = rekeyed(&p.ev_b);
    assert_eq!(ra.last().unwrap().0, old_a);
    assert_eq!(rb.last().unwrap().0, old_b);
    assert_eq!(child_downs(&p.ev_a).last().unwrap(), &(old_a, DownReason::Rekeyed));
    assert_eq!(child_downs(&p.ev_b).last().unwrap(), &(old_b, DownReason::Rekeyed));
    assert_eq!(live_children(&p.a, p.now).len(), 1);
    assert_live_keys_match(p);
    let (new_a, _) = live_children(&p.a, p.now)[0];
    assert_ne!(new_a, old_a);
}

#[test]
fn child_rekey_initiator_and_responder() {
    let mut p = established();
    rekey_child_from(&mut p, true);
    rekey_child_from(&mut p, false);
    rekey_child_from(&mut p, true);
    assert!(failures(&p.ev_a).is_empty() && failures(&p.ev_b).is_empty(), "{:?} {:?}", failures(&p.ev_a), failures(&p.ev_b));
}

#[test]
fn child_rekey_with_pfs() {
    let (mut a, mut b) = default_pair_configs();
    for c in [&mut a, &mut b] {
        c.connections[0].children[0].esp_proposals =
            vec![wisp_ike::config::parse_proposal("aes128gcm16-x25519", wisp_policy_api::SaKind::Child).unwrap()];
    }
    let mut p = Pair::new(a, b);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(child_ups(&p.ev_a)[0].algorithms.pfs_group, None, "no KE in IKE_AUTH");
    rekey_child_from(&mut p, true);
    let (_, n) = rekeyed(&p.ev_a)[0];
    assert_eq!(n.algorithms.pfs_group, Some(31), "rekey used a fresh x25519 exchange");
    assert_eq!(n.key_out.as_bytes().len(), 20, "AES-128 + salt");
}

fn rekey_ike_from(p: &mut Pair, from_a: bool) {
    let before_a = ike_a(p);
    let before_b = ike_b(p);
    let children_a = live_children(&p.a, p.now);
    if from_a {
        p.a.rekey_ike(p.now, before_a).unwrap();
    } else {
        p.b.rekey_ike(p.now, before_b).unwrap();
    }
    p.run_until_quiet();
    p.advance(Duration::from_secs(20));
    assert_eq!(p.a.ike_sas().len(), 1, "old IKE SA gone on A: {:?}", p.a.status(p.now));
    assert_eq!(p.b.ike_sas().len(), 1);
    assert_ne!(ike_a(p), before_a);
    assert!(ike_downs(&p.ev_a).contains(&(before_a, DownReason::Rekeyed)));
    assert!(ike_downs(&p.ev_b).contains(&(before_b, DownReason::Rekeyed)));
    assert_eq!(live_children(&p.a, p.now), children_a, "Child SAs survive an IKE rekey untouched");
    assert_mirrored(p);
    let sa = &p.a.status(p.now)[0];
    assert_eq!(sa.initiator, from_a, "the rekey initiator is the new SA's original initiator");
}

#[test]
fn ike_rekey_both_directions_then_children_still_work() {
    let mut p = established();
    rekey_ike_from(&mut p, true);
    rekey_ike_from(&mut p, false);
    // The new IKE SA carries CREATE_CHILD_SA and Child rekeys.
    rekey_child_from(&mut p, true);
    let id = ike_b(&p);
    p.b.initiate_child(p.now, "ba", "net2").unwrap();
    p.run_until_quiet();
    assert_eq!(live_children(&p.a, p.now).len(), 2);
    assert_live_keys_match(&p);
    p.b.delete_ike(p.now, id).unwrap();
    p.run_until_quiet();
    assert!(p.a.status(p.now).is_empty());
    assert!(failures(&p.ev_a).is_empty() && failures(&p.ev_b).is_empty());
}

#[test]
fn simultaneous_child_rekey_resolves_to_one_sa() {
    for seed in 0..4u64 {
        let mut p = established();
        let (old_a, _) = live_children(&p.a, p.now)[0];
        let (old_b, _) = live_children(&p.b, p.now)[0];
        let (ia, ib) = (ike_a(&p), ike_b(&p));
        p.seed_faults(seed * 7919 + 1);
        p.faults.jitter_ms = if seed % 2 == 0 { 0 } else { 5 };
        p.a.rekey_child(p.now, ia, old_a).unwrap();
        p.b.rekey_child(p.now, ib, old_b).unwrap();
        p.run_until_quiet();
        let a = live_children(&p.a, p.now);
        assert_eq!(a.len(), 1, "seed {seed}: exactly one Child SA left on A: {a:?}");
        assert_ne!(a[0].0, old_a);
        assert_live_keys_match(&p);
        assert!(child_downs(&p.ev_a).iter().any(|(s, _)| *s == old_a));
        assert!(child_downs(&p.ev_b).iter().any(|(s, _)| *s == old_b));
        if seed % 2 == 0 {
            // Truly simultaneous: both exchanges completed, one redundant SA was deleted.
            assert_eq!(rekeyed(&p.ev_a).len(), 2, "seed {seed}");
            assert_eq!(rekeyed(&p.ev_b).len(), 2, "seed {seed}");
            assert_eq!(child_downs(&p.ev_a).len(), 2, "old + redundant: {:?}", child_downs(&p.ev_a));
        }
    }
}

#[test]
fn simultaneous_ike_rekey_resolves_to_one_sa() {
    for seed in 0..4u64 {
        let mut p = established();
        let children = live_children(&p.a, p.now);
        let (ia, ib) = (ike_a(&p), ike_b(&p));
        p.seed_faults(seed * 104729 + 3);
        p.faults.jitter_ms = if seed % 2 == 0 { 0 } else { 5 };
        p.a.rekey_ike(p.now, ia).unwrap();
        p.b.rekey_ike(p.now, ib).unwrap();
        p.run_until_quiet();
        p.advance(Duration::from_secs(20));
        assert_eq!(p.a.ike_sas().len(), 1, "seed {seed}: one IKE SA on A: {:#?}", p.a.status(p.now));
        assert_eq!(p.b.ike_sas().len(), 1, "seed {seed}: one IKE SA on B");
        assert_mirrored(&p);
        assert_eq!(live_children(&p.a, p.now), children, "children moved to the surviving SA");
        if seed % 2 == 0 {
            let rk = |ev: &[Event]| ev.iter().filter(|e| matches!(e, Event::IkeSaRekeyed { .. })).count();
            assert!(rk(&p.ev_a) >= 1 && rk(&p.ev_b) >= 1, "seed {seed}");
            assert_eq!(ike_downs(&p.ev_a).len(), 1, "seed {seed}: only the old SA is reported down: {:?}", ike_downs(&p.ev_a));
        }
        // The survivor works: rekey a child through it.
        rekey_child_from(&mut p, seed % 2 == 0);
    }
}

#[test]
fn lifetimes_rekey_and_expire_by_time() {
    let (mut a, mut b) = default_pair_configs();
    let lt = wisp_ike::config::Lifetimes {
        soft_time: Some(Duration::from_secs(100)),
        hard_time: Some(Duration::from_secs(150)),
        jitter: Duration::from_secs(10),
        ..wisp_ike::config::Lifetimes::unlimited()
    };
    a.connections[0].children[0].lifetimes = lt.clone();
    b.connections[0].children[0].lifetimes = wisp_ike::config::Lifetimes::unlimited();
    a.connections[0].ike_lifetimes = wisp_ike::config::Lifetimes {
        soft_time: Some(Duration::from_secs(250)),
        hard_time: Some(Duration::from_secs(400)),
        jitter: Duration::from_secs(20),
        ..wisp_ike::config::Lifetimes::unlimited()
    };
    b.connections[0].ike_lifetimes = wisp_ike::config::Lifetimes::unlimited();
    let mut p = Pair::new(a, b);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    let t0 = p.now;
    let first = child_ups(&p.ev_a)[0].spi_in;
    p.run_until(Duration::from_secs(120), |p| !rekeyed(&p.ev_a).is_empty());
    let at = p.now - t0;
    assert!(at >= Duration::from_secs(90) && at <= Duration::from_secs(101), "soft lifetime with jitter: {at:?}");
    assert_eq!(rekeyed(&p.ev_a)[0].0, first);
    // IKE soft lifetime: rekey around 230..250 s.
    p.run_until(Duration::from_secs(300), |p| p.ev_a.iter().any(|e| matches!(e, Event::IkeSaRekeyed { .. })));
    let at = p.now - t0;
    assert!(at >= Duration::from_secs(230) && at <= Duration::from_secs(251), "IKE soft lifetime: {at:?}");
    p.run_until_quiet();
    assert_live_keys_match(&p);
}

#[test]
fn hard_lifetime_deletes_child_without_rekey() {
    let (mut a, b) = default_pair_configs();
    a.connections[0].children[0].lifetimes =
        wisp_ike::config::Lifetimes { hard_time: Some(Duration::from_secs(60)), ..wisp_ike::config::Lifetimes::unlimited() };
    let mut p = Pair::new(a, b);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    p.advance(Duration::from_secs(61));
    p.run_until_quiet();
    assert_eq!(child_downs(&p.ev_a).len(), 1);
    assert_eq!(child_downs(&p.ev_b)[0].1, DownReason::RemoteDelete);
    assert!(live_children(&p.a, p.now).is_empty());
}

#[test]
fn byte_and_packet_lifetimes_from_data_plane() {
    let (mut a, b) = default_pair_configs();
    a.connections[0].children[0].lifetimes = wisp_ike::config::Lifetimes {
        soft_bytes: Some(1_000_000),
        hard_bytes: Some(2_000_000),
        hard_packets: Some(10_000),
        ..wisp_ike::config::Lifetimes::unlimited()
    };
    let mut p = Pair::new(a, b);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    let spi = child_ups(&p.ev_a)[0].spi_in;
    p.a.child_traffic(p.now, spi, 900_000, 100);
    p.run_until_quiet();
    assert!(rekeyed(&p.ev_a).is_empty(), "below the soft limit");
    p.a.child_traffic(p.now, spi, 200_000, 100);
    p.run_until_quiet();
    assert_eq!(rekeyed(&p.ev_a).len(), 1, "soft byte limit → rekey");
    let st = &p.a.status(p.now)[0].children;
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].bytes, 0, "counters start over on the new SA");
    let new_spi = st[0].spi_in;
    p.a.child_traffic(p.now, new_spi, 100, 10_000);
    p.run_until_quiet();
    assert!(child_downs(&p.ev_a).iter().any(|(s, _)| *s == new_spi), "hard packet limit → delete");
    assert!(live_children(&p.a, p.now).is_empty());
    assert_mirrored(&p);
}

/// The same scenario under loss, duplication and reordering ends in the same state.
#[test]
fn lossy_network_same_end_result() {
    for seed in 1..=6u64 {
        let mut p = Pair::default_pair();
        p.seed_faults(seed * 0x1234567 + 11);
        p.faults = Faults { drop_permille: 200, dup_permille: 200, jitter_ms: 30 };
        p.a.initiate(p.now, "ab").unwrap();
        p.run_until_quiet();
        assert_eq!(ike_up(&p.ev_a).len(), 1, "seed {seed}: {:?}", failures(&p.ev_a));
        assert_eq!(ike_up(&p.ev_b).len(), 1, "seed {seed}");
        p.a.initiate_child(p.now, "ab", "net2").unwrap();
        p.run_until_quiet();
        let (s, _) = live_children(&p.a, p.now)[0];
        let ia = ike_a(&p);
        p.a.rekey_child(p.now, ia, s).unwrap();
        p.run_until_quiet();
        let ib = ike_b(&p);
        p.b.rekey_ike(p.now, ib).unwrap();
        p.run_until_quiet();
        p.advance(Duration::from_secs(20));
        assert_eq!(p.a.ike_sas().len(), 1, "seed {seed}");
        assert_eq!(live_children(&p.a, p.now).len(), 2, "seed {seed}");
        assert_live_keys_match(&p);
        assert!(failures(&p.ev_a).is_empty(), "seed {seed}: {:?}", failures(&p.ev_a));
        assert!(failures(&p.ev_b).is_empty(), "seed {seed}: {:?}", failures(&p.ev_b));
        let ia = ike_a(&p);
        p.a.delete_ike(p.now, ia).unwrap();
        p.run_until_quiet();
        p.advance(Duration::from_secs(300));
        assert!(p.a.ike_sas().is_empty(), "seed {seed}");
        assert!(p.b.ike_sas().is_empty() || p.b.status(p.now).is_empty(), "seed {seed}: {:?}", p.b.status(p.now));
    }
}
