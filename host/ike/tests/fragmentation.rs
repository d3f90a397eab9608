//! IKE fragmentation on send (RFC 7383): messages larger than the
//! connection's `fragment_size` go as SKF fragments once both sides
//! announced IKEV2_FRAGMENTATION_SUPPORTED, are retransmitted as a whole,
//! and a retransmitted fragmented request is answered once (on its
//! fragment 1).

mod engine_support;

use engine_support::*;
use wisp_ike::codec::{ExchangeType, Message, NotifyType, Payload};
use wisp_ike::config::{selector, Fragmentation};
use wisp_ike::engine::Transmit;

/// IP (IPv4) + UDP header bytes the `fragment_size` limit includes.
const IP_UDP: usize = 28;

fn pair(size_a: usize, size_b: usize, frag_a: Fragmentation, frag_b: Fragmentation) -> Pair {
    let (mut a, mut b) = default_pair_configs();
    // Four networks per side: IKE_AUTH of about 400 bytes both ways.
    let nets = |side: u8| (0..4).map(|i| selector(&format!("10.{side}.{i}.0/24")).unwrap()).collect::<Vec<_>>();
    a.connections[0].children[0].local_ts = nets(1);
    a.connections[0].children[0].remote_ts = nets(2);
    b.connections[0].children[0].local_ts = nets(2);
    b.connections[0].children[0].remote_ts = nets(1);
    a.connections[0].fragment_size = size_a;
    a.connections[0].fragmentation = frag_a;
    b.connections[0].fragment_size = size_b;
    b.connections[0].fragmentation = frag_b;
    Pair::new(a, b)
}

/// The datagrams of one exchange in one direction: (message id, SKF fragment number or 0 for whole).
fn parts(p: &Pair, to_b: bool, ex: ExchangeType) -> Vec<(u32, u16, usize)> {
    p.wire
        .iter()
        .filter(|(d, _)| *d == to_b)
        .filter_map(|(_, t)| {
            let m = Message::decode(&t.bytes).ok()?;
            if m.header.exchange != ex {
                return None;
            }
            let n = match m.payloads.last() {
                Some(Payload::Skf(f)) => f.fragment_number,
                _ => 0,
            };
            Some((m.header.message_id, n, datagram_len(t)))
        })
        .collect()
}

fn datagram_len(t: &Transmit) -> usize {
    t.bytes.len() + if t.non_esp_marker { 4 } else { 0 } + IP_UDP
}

fn announced(p: &Pair, to_b: bool) -> bool {
    p.wire.iter().filter(|(d, _)| *d == to_b).any(|(_, t)| {
        Message::decode(&t.bytes).is_ok_and(|m| {
            m.header.exchange == ExchangeType::IKE_SA_INIT
                && m.payloads.iter().any(|x| matches!(x, Payload::Notify(n) if n.notify_type == NotifyType::IKEV2_FRAGMENTATION_SUPPORTED))
        })
    })
}

#[test]
fn ike_auth_larger_than_fragment_size_goes_as_fragments_both_ways() {
    let mut p = pair(256, 256, Fragmentation::Yes, Fragmentation::Yes);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_a).len(), 1, "{:?}", p.ev_a);
    assert_eq!(child_ups(&p.ev_b).len(), 1, "{:?}", p.ev_b);
    for to_b in [true, false] {
        let auth = parts(&p, to_b, ExchangeType::IKE_AUTH);
        assert!(auth.len() >= 2, "IKE_AUTH {} in fragments: {auth:?}", if to_b { "request" } else { "response" });
        let numbers: Vec<u16> = auth.iter().map(|x| x.1).collect();
        assert_eq!(numbers, (1..=auth.len() as u16).collect::<Vec<_>>(), "numbered 1..n in order");
        assert!(auth.iter().all(|x| x.2 <= 256), "every datagram within fragment_size: {auth:?}");
        // IKE_SA_INIT is never fragmented (RFC 7383 2.5.3: only encrypted messages).
        assert!(parts(&p, to_b, ExchangeType::IKE_SA_INIT).iter().all(|x| x.1 == 0));
    }
    // Traffic after the handshake: a Child SA rekey, fragmented the same way.
    let c = child_ups(&p.ev_a)[0].clone();
    p.a.rekey_child(p.now, c.ike, c.spi_in).unwrap();
    p.run_until_quiet();
    assert_eq!(rekeyed(&p.ev_a).len(), 1, "{:?}", p.ev_a);
    assert_mirrored(&p);
}

#[test]
fn messages_that_fit_go_whole() {
    let mut p = pair(1280, 1280, Fragmentation::Yes, Fragmentation::Yes);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_a).len(), 1);
    for to_b in [true, false] {
        let auth = parts(&p, to_b, ExchangeType::IKE_AUTH);
        assert_eq!(auth.iter().map(|x| x.1).collect::<Vec<_>>(), vec![0], "one whole message: {auth:?}");
    }
}

#[test]
fn not_negotiated_or_accept_only_sends_whole() {
    // B does not announce: A may not fragment (and B must not answer the announcement).
    let mut p = pair(256, 256, Fragmentation::Yes, Fragmentation::No);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_a).len(), 1);
    assert!(announced(&p, true) && !announced(&p, false));
    assert!(parts(&p, true, ExchangeType::IKE_AUTH).iter().all(|x| x.1 == 0), "A sent whole");
    assert!(parts(&p, false, ExchangeType::IKE_AUTH).iter().all(|x| x.1 == 0), "B sent whole");

    // A does not announce: B must not announce back (RFC 7383 2.3) nor fragment.
    let mut p = pair(256, 256, Fragmentation::No, Fragmentation::Yes);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_a).len(), 1);
    assert!(!announced(&p, true) && !announced(&p, false), "no announcement either way");
    assert!(parts(&p, false, ExchangeType::IKE_AUTH).iter().all(|x| x.1 == 0));

    // B accepts only: it takes A's fragments and answers whole.
    let mut p = pair(256, 256, Fragmentation::Yes, Fragmentation::Accept);
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_b).len(), 1);
    assert!(announced(&p, false));
    assert!(parts(&p, true, ExchangeType::IKE_AUTH).len() >= 2, "A fragments");
    assert!(parts(&p, false, ExchangeType::IKE_AUTH).iter().all(|x| x.1 == 0), "B answers whole");
}

#[test]
fn lost_fragment_retransmits_the_whole_set_and_is_answered_once() {
    let mut p = pair(256, 256, Fragmentation::Yes, Fragmentation::Yes);
    // Lose fragment 2 of the first IKE_AUTH request.
    let mut lost = false;
    p.drop_if = Some(Box::new(move |to_b, t| {
        let Ok(m) = Message::decode(&t.bytes) else { return false };
        let hit = to_b
            && !lost
            && m.header.exchange == ExchangeType::IKE_AUTH
            && matches!(m.payloads.last(), Some(Payload::Skf(f)) if f.fragment_number == 2);
        lost |= hit;
        hit
    }));
    p.a.initiate(p.now, "ab").unwrap();
    p.run_until_quiet();
    assert_eq!(ike_up(&p.ev_a).len(), 1, "{:?}", p.ev_a);
    let req = parts(&p, true, ExchangeType::IKE_AUTH);
    let resp = parts(&p, false, ExchangeType::IKE_AUTH);
    let n = req.iter().filter(|x| x.1 == 1).count();
    assert_eq!(n, 2, "sent twice: {req:?}");
    assert_eq!(req.len() % 2, 0, "each send carries every fragment: {req:?}");
    let per_resp = resp.iter().filter(|x| x.1 == 1).count();
    assert_eq!(per_resp, 1, "B answered once (it only had the request once): {resp:?}");

    // Now B has answered: every fragment of a retransmitted request arrives;
    // only fragment 1 triggers the cached response again.
    let first_req: Vec<Transmit> = p
        .wire
        .iter()
        .filter(|(d, t)| *d && Message::decode(&t.bytes).is_ok_and(|m| m.header.exchange == ExchangeType::IKE_AUTH))
        .map(|(_, t)| t.clone())
        .take(req.len() / 2)
        .collect();
    let before = parts(&p, false, ExchangeType::IKE_AUTH).len();
    for t in &first_req {
        p.inject(true, t);
    }
    p.run_until_quiet();
    let after = parts(&p, false, ExchangeType::IKE_AUTH).len();
    assert_eq!(after - before, resp.len(), "the whole response once, not once per fragment");
}

#[test]
fn fragment_size_is_bounded() {
    let (mut a, _) = default_pair_configs();
    for (size, ok) in [(0, true), (255, false), (256, true), (1280, true), (65_535, true), (65_536, false)] {
        a.connections[0].fragment_size = size;
        assert_eq!(a.validate().is_ok(), ok, "fragment_size {size}");
    }
}
