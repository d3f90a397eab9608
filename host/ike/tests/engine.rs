//! Engine pair on a virtual clock: establishment, extra Child SA, delete,
//! liveness, retransmission and duplicate handling, NAT-T ports.

mod engine_support;

use std::time::Duration;

use engine_support::*;
use wisp_ike::event::*;

#[test]
fn establish_ike_and_first_child_keys_match() {
    let p = established();
    let ia = ike_up(&p.ev_a)[0];
    let ib = ike_up(&p.ev_b)[0];
    assert!(ia.initiator && !ib.initiator);
    assert_eq!((ia.spi_i, ia.spi_r), (ib.spi_i, ib.spi_r));
    assert_eq!(ia.algorithms, "AES_GCM_16_256/PRF_HMAC_SHA2_256/CURVE25519");
    assert_eq!(ia.remote_id.value, "b.example");
    assert_eq!(ib.remote_id.value, "a.example");
    let ca = child_ups(&p.ev_a);
    let cb = child_ups(&p.ev_b);
    assert_eq!((ca.len(), cb.len()), (1, 1));
    assert_child_pair(ca[0], cb[0]);
    assert_eq!(ca[0].name, "net");
    assert_eq!(ca[0].key_out.as_bytes().len(), 36, "AES-256 key + 4-byte salt");
    assert_eq!(ca[0].local_ts, vec![wisp_ike::config::selector("10.1.0.0/24").unwrap()]);
    // force_encap (default): both moved to 4500 and ESP is UDP-encapsulated.
    assert!(ca[0].nat.udp_encap && cb[0].nat.udp_encap);
    assert_eq!(ca[0].remote.port(), 4500);
    assert_eq!(cb[0].remote.port(), 4500);
    assert!(failures(&p.ev_a).is_empty() && failures(&p.ev_b).is_empty());
    assert_mirrored(&p);
    // Status snapshot shows the negotiated state.
    let s = p.a.status(p.now);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].state, wisp_ike::event::IkeSaState::Established);
    assert_eq!(s[0].children.len(), 1);
    assert!(s[0].rekey_in.is_some() && s[0].expire_in.is_some());
}

#[test]
fn ike_messages_move_to_4500_with_marker() {
    let p = established();
    // First IKE_SA_INIT on 500 without marker, IKE_AUTH on 4500 with marker.
    let (to_b, first) = &p.wire[0];
    assert!(*to_b);
    assert_eq!((first.local.port(), first.remote.port(), first.non_esp_marker), (500, 500, false));
    let auth = p.wire.iter().find(|(to_b, t)| *to_b && t.bytes[18] == 35).expect("IKE_AUTH sent");
    assert_eq!((auth.1.local.port(), auth.1.remote.port(), auth.1.non_esp_marker), (4500, 4500, true));
}

/// A pair that neither forces UDP encapsulation nor sits behind a NAT,
/// with its IKE SA and first Child SA established.
fn established_without_nat() -> Pair {
    let (mut a, mut b) = default_pair_configs();
    a.connections[0].force_encap = false;
    b.connections[0].force_encap = false;
    let mut p = Pair::new(a, b);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    p
}

#[test]
fn no_nat_no_encap_stays_on_500() {
    let p = established_without_nat();
    let ca = child_ups(&p.ev_a);
    assert_eq!(ca.len(), 1);
    assert!(!ca[0].nat.udp_encap && !ca[0].nat.local_behind_nat && !ca[0].nat.remote_behind_nat);
    assert!(p.wire.iter().all(|(_, t)| t.remote.port() == 500 && !t.non_esp_marker));
}

/// A pair without forced encapsulation where B has no fixed remote address,
/// A initiating: what a NAT in front of A needs.
fn nat_pair() -> Pair {
    let (mut a, mut b) = default_pair_configs();
    a.connections[0].force_encap = false;
    b.connections[0].force_encap = false;
    b.connections[0].remote_addrs.clear();
    let mut p = Pair::new(a, b);
    p.a.initiate(p.now, "ab").unwrap();
    p
}

#[test]
fn nat_detected_when_source_rewritten() {
    // A's datagrams appear to B from another address/port (a NAT in between);
    // B→A goes back to A's real address.
    let mut p = nat_pair();
    let nat = addr("192.0.2.7", 31000);
    let nat4500 = addr("192.0.2.7", 31001);
    let (mut ev_a, mut ev_b) = (Vec::new(), Vec::new());
    run_through_nat(&mut p, nat, nat4500, &mut ev_a, &mut ev_b);
    let ca = child_ups(&ev_a);
    let cb = child_ups(&ev_b);
    assert_eq!((ca.len(), cb.len()), (1, 1), "{ev_a:?} {ev_b:?}");
    assert!(ca[0].nat.local_behind_nat && !ca[0].nat.remote_behind_nat, "A learns it is behind a NAT");
    assert!(cb[0].nat.remote_behind_nat && !cb[0].nat.local_behind_nat, "B learns the peer is behind a NAT");
    assert!(ca[0].nat.udp_encap && cb[0].nat.udp_encap);
    assert_eq!(cb[0].remote, nat4500, "B follows the NAT mapping on 4500");
    assert_child_pair(ca[0], cb[0]);
}

/// Deliver everything both ways for a few rounds, A's datagrams rewritten
/// by a NAT to `nat` (port 500) / `nat4500` (port 4500).
fn run_through_nat(p: &mut Pair, nat: std::net::SocketAddr, nat4500: std::net::SocketAddr, ev_a: &mut Vec<Event>, ev_b: &mut Vec<Event>) {
    for _ in 0..20 {
        while let Some(t) = p.a.poll_transmit() {
            let src = if t.local.port() == 4500 { nat4500 } else { nat };
            p.b.handle_datagram(p.now, t.remote, src, &t.bytes);
        }
        while let Some(t) = p.b.poll_transmit() {
            let dst = addr(A_IP, if t.remote.port() == 4500 || t.remote == nat4500 { 4500 } else { 500 });
            p.a.handle_datagram(p.now, dst, t.local, &t.bytes);
        }
    }
    ev_a.extend(std::iter::from_fn(|| p.a.poll_event()));
    ev_b.extend(std::iter::from_fn(|| p.b.poll_event()));
}

#[test]
fn nat_rebinding_moves_the_peer_and_its_child_sas() {
    let mut p = nat_pair();
    let (mut ev_a, mut ev_b) = (Vec::new(), Vec::new());
    let (nat, nat4500) = (addr("192.0.2.7", 31000), addr("192.0.2.7", 31001));
    run_through_nat(&mut p, nat, nat4500, &mut ev_a, &mut ev_b);
    let cb = child_ups(&ev_b)[0].clone();
    assert_eq!(cb.remote, nat4500);
    let ike_b = p.b.ike_sas()[0];
    let ike_a = p.a.ike_sas()[0];
    assert!(!ev_b.iter().any(|e| matches!(e, Event::PeerMoved { .. })), "no move during setup: {ev_b:?}");

    // The NAT forgets the mapping; A's next request arrives from a new port.
    let moved = addr("192.0.2.7", 40222);
    p.a.rekey_child(p.now, ike_a, child_ups(&ev_a)[0].spi_in).unwrap();
    let (mut ev_a2, mut ev_b2) = (Vec::new(), Vec::new());
    run_through_nat(&mut p, nat, moved, &mut ev_a2, &mut ev_b2);
    let m: Vec<_> = ev_b2.iter().filter(|e| matches!(e, Event::PeerMoved { .. })).collect();
    assert_eq!(m.len(), 1, "{ev_b2:?}");
    let Event::PeerMoved { ike, remote, children } = m[0] else { unreachable!() };
    assert_eq!((*ike, *remote), (ike_b, moved));
    assert!(children.contains(&(cb.spi_in, cb.spi_out)), "{children:?}");
    assert!(!ev_a2.iter().any(|e| matches!(e, Event::PeerMoved { .. })), "A (behind the NAT) does not move: {ev_a2:?}");

    // ESP from yet another mapping, reported by the data plane: B (not behind
    // a NAT, peer behind one) follows; A (behind the NAT) refuses.
    let esp_src = addr("192.0.2.7", 40999);
    assert!(p.b.peer_moved(ike_b, esp_src).unwrap());
    let Some(Event::PeerMoved { remote, .. }) = p.b.poll_event() else { panic!("PeerMoved after peer_moved") };
    assert_eq!(remote, esp_src);
    assert!(!p.b.peer_moved(ike_b, esp_src).unwrap(), "same address again: no move");
    assert!(!p.a.peer_moved(ike_a, addr("198.51.100.9", 4500)).unwrap(), "a host behind a NAT does not follow");
    // B's next message goes to the new mapping.
    p.b.rekey_ike(p.now, ike_b).unwrap();
    let t = p.b.poll_transmit().expect("IKE rekey request");
    assert_eq!(t.remote, esp_src);
}

#[test]
fn peer_moved_refused_without_nat() {
    let mut p = established_without_nat();
    assert_eq!(child_ups(&p.ev_b).len(), 1);
    let ike = p.b.ike_sas()[0];
    assert!(!p.b.peer_moved(ike, addr("198.51.100.9", 4500)).unwrap());
    assert!(std::iter::from_fn(|| p.b.poll_event()).all(|e| !matches!(e, Event::PeerMoved { .. })));
}

#[test]
fn second_child_sa_via_create_child_sa() {
    let mut p = established();
    p.a.initiate_child(p.now, "ab", "net2").unwrap();
    p.run_until_quiet();
    let ca = child_ups(&p.ev_a);
    let cb = child_ups(&p.ev_b);
    assert_eq!((ca.len(), cb.len()), (2, 2));
    assert_eq!(ca[1].name, "net2");
    assert_child_pair(ca[1], cb[1]);
    assert_ne!(ca[0].spi_in, ca[1].spi_in);
    assert_ne!(ca[0].key_in.as_bytes(), ca[1].key_in.as_bytes());
    assert_mirrored(&p);
    // The responder can add one as well.
    p.b.initiate_child(p.now, "ba", "net2").unwrap();
    p.run_until_quiet();
    let ca = child_ups(&p.ev_a);
    let cb = child_ups(&p.ev_b);
    assert_eq!((ca.len(), cb.len()), (3, 3));
    assert_child_pair(cb[2], ca[2]);
    assert!(cb[2].initiator && !ca[2].initiator);
    assert_mirrored(&p);
}

#[test]
fn delete_child_then_ike() {
    let mut p = established();
    let ike_a = ike_up(&p.ev_a)[0].ike;
    let spi = child_ups(&p.ev_a)[0].spi_in;
    p.a.delete_child(p.now, ike_a, spi).unwrap();
    p.run_until_quiet();
    assert_eq!(child_downs(&p.ev_a), vec![(spi, DownReason::LocalDelete)]);
    let b_spi = child_ups(&p.ev_b)[0].spi_in;
    assert_eq!(child_downs(&p.ev_b), vec![(b_spi, DownReason::RemoteDelete)]);
    assert!(live_children(&p.a, p.now).is_empty() && live_children(&p.b, p.now).is_empty());
    // Now delete the IKE SA from the responder side.
    let ike_b = ike_up(&p.ev_b)[0].ike;
    p.b.delete_ike(p.now, ike_b).unwrap();
    p.run_until_quiet();
    assert_eq!(ike_downs(&p.ev_b), vec![(ike_b, DownReason::LocalDelete)]);
    assert_eq!(ike_downs(&p.ev_a), vec![(ike_a, DownReason::RemoteDelete)]);
    p.advance(Duration::from_secs(30));
    assert!(p.a.ike_sas().is_empty() && p.b.ike_sas().is_empty());
    assert!(p.a.poll_timeout().is_none() && p.b.poll_timeout().is_none(), "no timers left");
}

#[test]
fn delete_ike_takes_children_down_on_both_sides() {
    let mut p = established();
    p.a.initiate_child(p.now, "ab", "net2").unwrap();
    p.run_until_quiet();
    let ike_a = ike_up(&p.ev_a)[0].ike;
    p.a.delete_ike(p.now, ike_a).unwrap();
    p.run_until_quiet();
    assert_eq!(child_downs(&p.ev_a).len(), 2);
    assert_eq!(child_downs(&p.ev_b).len(), 2);
    assert_eq!(ike_downs(&p.ev_a).len(), 1);
    assert_eq!(ike_downs(&p.ev_b)[0].1, DownReason::RemoteDelete);
}

#[test]
fn liveness_check_answered_and_dead_peer_detected() {
    let (mut a, b) = default_pair_configs();
    a.connections[0].dpd_interval = Some(Duration::from_secs(30));
    let mut p = Pair::new(a, b);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    let ike_a = ike_up(&p.ev_a)[0].ike;
    let sent_before = p.wire.len();
    p.a.check_liveness(p.now, ike_a).unwrap();
    p.run_for(Duration::from_secs(5));
    assert_eq!(p.wire.len(), sent_before + 2, "one empty INFORMATIONAL and its answer");
    assert!(ike_downs(&p.ev_a).is_empty());
    // DPD fires by itself after the idle interval.
    let before = p.wire.len();
    p.run_for(Duration::from_secs(31));
    assert!(p.wire.len() >= before + 2, "DPD exchange after 30 s idle");
    // Peer disappears: DPD retransmits, then gives up.
    p.blackhole = true;
    p.run_for(Duration::from_secs(400));
    let downs = ike_downs(&p.ev_a);
    assert_eq!(downs, vec![(ike_a, DownReason::Timeout)]);
    let f = failures(&p.ev_a);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].side, Side::Remote);
    assert_eq!(f[0].exchange, Exchange::Informational);
    assert!(f[0].reason.to_string().contains("no response"), "{}", f[0].reason);
    assert_eq!(child_downs(&p.ev_a)[0].1, DownReason::Timeout);
}

#[test]
fn retransmit_exhaustion_with_backoff() {
    let mut p = Pair::default_pair();
    p.blackhole = true;
    let start = p.now;
    p.a.initiate(p.now, "ab").unwrap();
    p.run_for(Duration::from_secs(600));
    let sent: Vec<Duration> = Vec::new();
    let _ = sent;
    let inits = p.wire.iter().filter(|(to_b, _)| *to_b).count();
    assert_eq!(inits, 6, "default: 6 transmissions in total");
    let f = failures(&p.ev_a);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].exchange, Exchange::IkeSaInit);
    assert_eq!(f[0].side, Side::Remote);
    assert!(f[0].reason.to_string().contains("after 6 transmissions"), "{}", f[0].reason);
    // 4 s × 1.8^k backoff: 4 + 7.2 + 12.96 + 23.33 + 41.99 + 75.58 ≈ 165 s until give-up.
    let elapsed = p.now - start;
    assert!(elapsed >= Duration::from_secs(165), "{elapsed:?}");
    assert!(p.a.ike_sas().is_empty());
    assert!(ike_up(&p.ev_a).is_empty() && ike_downs(&p.ev_a).is_empty());
}

#[test]
fn duplicate_request_gets_cached_response_and_wrong_ids_are_ignored() {
    let mut p = established();
    // Replay A's IKE_AUTH request to B: B resends the identical response, no new events.
    let (_, auth_req) = p.wire.iter().find(|(to_b, t)| *to_b && t.bytes[18] == 35).cloned().unwrap();
    let (_, auth_resp) = p.wire.iter().find(|(to_b, t)| !*to_b && t.bytes[18] == 35).cloned().unwrap();
    let events_before = p.ev_b.len();
    p.inject(true, &auth_req);
    let resent = p.b.poll_transmit().expect("cached response resent");
    assert_eq!(resent.bytes, auth_resp.bytes);
    assert!(p.b.poll_event().is_none());
    assert_eq!(p.ev_b.len(), events_before);
    // The response delivered again to A (no request outstanding) is ignored.
    p.inject(false, &auth_resp);
    assert!(p.a.poll_transmit().is_none() && p.a.poll_event().is_none());
    // A response with a wrong SPI is ignored.
    let mut bad = auth_resp.clone();
    bad.bytes[0] ^= 0xff;
    p.inject(false, &bad);
    assert!(p.a.poll_transmit().is_none() && p.a.poll_event().is_none());
    // A tampered request (ICV fails) is dropped silently.
    let mut tampered = auth_req.clone();
    let n = tampered.bytes.len();
    tampered.bytes[n - 1] ^= 1;
    tampered.bytes[17] = 0; // also not the cached message
    p.inject(true, &tampered);
    assert!(p.b.poll_transmit().is_none());
    assert_mirrored(&p);
}

#[test]
fn transport_mode_negotiated() {
    let (mut a, mut b) = default_pair_configs();
    a.connections[0].children[0].mode = wisp_ike::config::Mode::Transport;
    b.connections[0].children[0].mode = wisp_ike::config::Mode::Transport;
    let mut p = Pair::new(a, b);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    let ca = child_ups(&p.ev_a);
    let cb = child_ups(&p.ev_b);
    assert_eq!(ca[0].mode, wisp_ike::config::Mode::Transport);
    assert_child_pair(ca[0], cb[0]);
}

#[test]
fn chacha20_and_ecp256_suite() {
    let (mut a, mut b) = default_pair_configs();
    for (c, _) in [(&mut a, 0), (&mut b, 1)] {
        c.connections[0].ike_proposals =
            vec![wisp_ike::config::parse_proposal("chacha20poly1305-prfsha512-ecp384", wisp_policy_api::SaKind::Ike).unwrap()];
        for ch in &mut c.connections[0].children {
            ch.esp_proposals = vec![wisp_ike::config::parse_proposal("chacha20poly1305", wisp_policy_api::SaKind::Child).unwrap()];
        }
    }
    let mut p = Pair::new(a, b);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_a)[0].algorithms, "CHACHA20_POLY1305/PRF_HMAC_SHA2_512/ECP_384");
    let ca = child_ups(&p.ev_a);
    assert_eq!(ca[0].algorithms.cipher, EspCipher::ChaCha20Poly1305);
    assert_child_pair(ca[0], child_ups(&p.ev_b)[0]);
}
