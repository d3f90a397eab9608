//! Two strongSwan charons in two namespaces: proves the test bed itself
//! (namespaces, charon launcher, swanctl.conf generation, list-sas and log
//! parsing, ping and TCP helpers) before wisp is involved.

use std::net::IpAddr;
use std::time::Duration;
use wisp_testbed::charon::{Charon, CharonOptions};
use wisp_testbed::charon_log;
use wisp_testbed::netns::Pair;
use wisp_testbed::swanctl::{ChildConf, Conn, PskSecret, SwanctlConf};
use wisp_testbed::traffic::{ping, tcp_transfer};
use wisp_testbed::{require_root, TestDir};

fn conf(left: bool, proposal: &str, esp: &str, psk: &str) -> SwanctlConf {
    let (la, ra, lid, rid, lts, rts) = if left {
        ("10.99.0.1", "10.99.0.2", "left", "right", "10.1.0.0/24", "10.2.0.0/24")
    } else {
        ("10.99.0.2", "10.99.0.1", "right", "left", "10.2.0.0/24", "10.1.0.0/24")
    };
    SwanctlConf {
        conns: vec![Conn::psk("gw", la, ra, proposal, lid, rid, ChildConf::new("net", lts, rts, esp))],
        secrets: vec![PskSecret { name: "1".into(), ids: vec!["left".into(), "right".into()], secret: psk.into() }],
        ..Default::default()
    }
}

struct Bed {
    pair: Pair,
    left: Charon,
    right: Charon,
    _dl: TestDir,
    _dr: TestDir,
}

fn bed(tag: &str) -> Bed {
    let pair = Pair::with_inner(tag, &["10.1.0.1/32"], &["10.2.0.1/32"]).unwrap();
    let dl = TestDir::new(&format!("{tag}-l")).unwrap();
    let dr = TestDir::new(&format!("{tag}-r")).unwrap();
    let left = Charon::start(&pair.left, dl.path(), &CharonOptions::with_keys()).unwrap();
    let right = Charon::start(&pair.right, dr.path(), &CharonOptions::with_keys()).unwrap();
    Bed { pair, left, right, _dl: dl, _dr: dr }
}

#[test]
fn charon_to_charon_establish_ping_tcp_rekey() {
    if !require_root("charon_to_charon_establish_ping_tcp_rekey") {
        return;
    }
    let b = bed("cc");
    b.left.load(&conf(true, "chacha20poly1305-prfsha256-x25519", "aes128gcm16-x25519", "pw")).unwrap();
    b.right.load(&conf(false, "chacha20poly1305-prfsha256-x25519", "aes128gcm16-x25519", "pw")).unwrap();
    b.left.initiate_child("net", 10).unwrap();

    // Both sides' views agree on SPIs and algorithms.
    let l = b.left.list_sas().unwrap();
    let r = b.right.list_sas().unwrap();
    assert_eq!(l.len(), 1, "{l:#?}");
    assert_eq!(r.len(), 1, "{r:#?}");
    assert!(l[0].initiator && !r[0].initiator);
    assert_eq!((l[0].spi_i, l[0].spi_r), (r[0].spi_i, r[0].spi_r));
    assert_eq!(l[0].proposal(), "CHACHA20_POLY1305/PRF_HMAC_SHA2_256/CURVE_25519");
    let (lc, rc) = (&l[0].children[0], &r[0].children[0]);
    assert_eq!((lc.spi_in, lc.spi_out), (rc.spi_out, rc.spi_in));
    // The first Child SA (IKE_AUTH) never has its own KE; PFS shows on rekey.
    assert_eq!(lc.proposal(), "AES_GCM_16_128");
    assert_eq!(lc.local_ts, vec!["10.1.0.0/24"]);

    // Keys logged at level 4 match between the two ends.
    let (ll, rl) = (b.left.log(), b.right.log());
    let lk = charon_log::child_keys(&ll);
    let rk = charon_log::child_keys(&rl);
    assert_eq!(lk.len(), 1);
    assert_eq!(rk.len(), 1);
    assert_eq!(lk[0].spi_in, lc.spi_in);
    assert_eq!(lk[0].encr_i, rk[0].encr_i);
    assert_eq!(lk[0].encr_r, rk[0].encr_r);
    assert_eq!(lk[0].encr_i.len(), 16 + 4, "AES-128-GCM key + salt");
    let (lik, rik) = (charon_log::ike_keys(&ll), charon_log::ike_keys(&rl));
    assert_eq!(lik.len(), 1);
    assert_eq!(lik[0].sk_d, rik[0].sk_d);
    assert_eq!(lik[0].sk_ei, rik[0].sk_ei);
    assert_eq!(lik[0].sk_ei.len(), 32 + 4, "ChaCha20 key + salt");

    // Traffic both ways.
    let p = ping(&b.pair.left, "10.1.0.1", "10.2.0.1", 5, 0.05).unwrap();
    assert_eq!(p.received, 5, "{p:?}");
    let p = ping(&b.pair.right, "10.2.0.1", "10.1.0.1", 5, 0.05).unwrap();
    assert_eq!(p.received, 5, "{p:?}");
    let a1: IpAddr = "10.1.0.1".parse().unwrap();
    let a2: IpAddr = "10.2.0.1".parse().unwrap();
    let t = tcp_transfer(&b.pair.right, a2, 5001, &b.pair.left, a1, 4 << 20, Duration::from_secs(20)).unwrap();
    assert!(t.intact() && t.bytes == 4 << 20, "{t:?}");
    let t = tcp_transfer(&b.pair.left, a1, 5002, &b.pair.right, a2, 4 << 20, Duration::from_secs(20)).unwrap();
    assert!(t.intact() && t.bytes == 4 << 20, "{t:?}");
    println!("charon<->charon TCP 4 MiB: {:.0} Mbit/s", t.mbit_per_s());
    let counted = b.left.list_sas().unwrap()[0].children[0].packets_out;
    assert!(counted >= 10, "charon counted {counted} packets out");

    // Child rekey from the responder, IKE rekey from the initiator.
    b.right.rekey_child("net").unwrap();
    let r2 = b
        .right
        .wait_sas(Duration::from_secs(10), |s| {
            s.len() == 1 && s[0].children.iter().all(|c| c.spi_in != rc.spi_in && c.state == "INSTALLED")
        })
        .unwrap();
    let new_child = r2[0].children[0].clone();
    assert_eq!(new_child.proposal(), "AES_GCM_16_128/CURVE_25519", "PFS on rekey");
    b.left.rekey_ike("gw").unwrap();
    let l3 = b.left.wait_sas(Duration::from_secs(10), |s| s.len() == 1 && s[0].spi_i != l[0].spi_i && s[0].state == "ESTABLISHED").unwrap();
    assert_eq!(l3[0].children[0].spi_out, new_child.spi_in, "child survives IKE rekey");
    let keys = charon_log::child_keys(&b.left.log());
    assert_eq!(keys.len(), 2, "a new Child SA was keyed by the rekey");
    assert_eq!(charon_log::ike_keys(&b.left.log()).len(), 2, "a new IKE SA was keyed");
    let p = ping(&b.pair.left, "10.1.0.1", "10.2.0.1", 3, 0.05).unwrap();
    assert_eq!(p.received, 3);

    // DELETE from the right: both sides clean.
    b.right.terminate_ike("gw").unwrap();
    b.left.wait_sas(Duration::from_secs(5), |s| s.is_empty()).unwrap();
}

#[test]
fn charon_to_charon_failures_are_logged() {
    if !require_root("charon_to_charon_failures_are_logged") {
        return;
    }
    let b = bed("cf");
    // Wrong PSK: the responder refuses, the initiator logs AUTHENTICATION_FAILED.
    b.left.load(&conf(true, "aes256gcm16-prfsha256-x25519", "aes256gcm16", "one")).unwrap();
    b.right.load(&conf(false, "aes256gcm16-prfsha256-x25519", "aes256gcm16", "two")).unwrap();
    assert!(b.left.initiate_child("net", 10).is_err());
    assert!(charon_log::received_notifies(&b.left.log()).contains(&"AUTHENTICATION_FAILED".to_string()));
    assert!(charon_log::sent_notifies(&b.right.log()).contains(&"AUTHENTICATION_FAILED".to_string()));

    // No common proposal.
    b.left.load(&conf(true, "aes128gcm16-prfsha256-x25519", "aes256gcm16", "pw")).unwrap();
    b.right.load(&conf(false, "chacha20poly1305-prfsha384-ecp384", "aes256gcm16", "pw")).unwrap();
    assert!(b.left.initiate_child("net", 10).is_err());
    assert!(charon_log::received_notifies(&b.left.log()).contains(&"NO_PROPOSAL_CHOSEN".to_string()));

    // TS unacceptable: the IKE SA comes up, the Child SA does not.
    let mut lc = conf(true, "aes128gcm16-prfsha256-x25519", "aes256gcm16", "pw");
    lc.conns[0].children[0].local_ts = vec!["10.7.0.0/24".into()];
    b.left.load(&lc).unwrap();
    b.right.load(&conf(false, "aes128gcm16-prfsha256-x25519", "aes256gcm16", "pw")).unwrap();
    assert!(b.left.initiate_child("net", 10).is_err());
    assert!(charon_log::received_notifies(&b.left.log()).contains(&"TS_UNACCEPTABLE".to_string()));

    // INVALID_KE_PAYLOAD: left proposes x25519 first, right accepts only ecp384.
    b.left.load(&conf(true, "aes128gcm16-prfsha256-x25519-ecp384", "aes256gcm16", "pw")).unwrap();
    b.right.load(&conf(false, "aes128gcm16-prfsha256-ecp384", "aes256gcm16", "pw")).unwrap();
    b.left.initiate_child("net", 10).unwrap();
    assert!(charon_log::received_notifies(&b.left.log()).contains(&"INVALID_KE_PAYLOAD".to_string()));
    assert_eq!(charon_log::dh_group_requests(&b.left.log()), vec![("CURVE_25519".into(), "ECP_384".into())]);
    let sas = b.left.list_sas().unwrap();
    assert!(sas.iter().any(|s| s.state == "ESTABLISHED" && s.dh_group == "ECP_384"), "{sas:#?}");
}
