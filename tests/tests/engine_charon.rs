//! The sans-IO `wisp_ike::Engine`, driven over real UDP in a network namespace,
//! against strongSwan 5.9.8 charon (issue 3, "real peer").
//!
//! For each role × IKE proposal: IKE and Child SA up; charon's `--list-sas`
//! shows the SPIs the engine reported; the Child SA keys the engine derived are
//! the ones charon logged (log level 4); then Child rekey, IKE rekey and delete,
//! each initiated from both sides. ESP traffic is not part of this test (no
//! data plane here): the gateway matrix covers it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use wisp_ike::config::{identity, selector, ChildConfig, Config, ConnectionConfig, Retransmit};
use wisp_ike::engine::Engine;
use wisp_ike::event::{ChildSaInfo, DownReason, Event, IkeSaId, Side};
use wisp_ike::native_policy::ConfigPolicy;
use wisp_testbed::charon::{Charon, CharonOptions};
use wisp_testbed::charon_log;
use wisp_testbed::ike_driver::EngineDriver;
use wisp_testbed::netns::Pair;
use wisp_testbed::sas::IkeSaInfo;
use wisp_testbed::swanctl::{ChildConf, Conn, PskSecret, SwanctlConf};
use wisp_testbed::{require_root, TestDir};

const PSK: &str = "engine-charon-psk";
const T: Duration = Duration::from_secs(15);

const AUTHENTICATION_FAILED: u16 = 24;
const NO_PROPOSAL_CHOSEN: u16 = 14;
const TS_UNACCEPTABLE: u16 = 38;

fn engine_config(ike: &str, esp: &str, psk: &str, local_ts: &str) -> Config {
    let mut c = ConnectionConfig::new("gw", identity("wisp.test"), Some(identity("charon.test")), psk.as_bytes(), &[ike])
        .expect("connection config");
    c.local_addrs = vec!["10.99.0.1".parse().unwrap()];
    c.remote_addrs = vec!["10.99.0.2".parse::<std::net::IpAddr>().unwrap().into()];
    c.retransmit = Retransmit { timeout: Duration::from_secs(1), backoff: 1.5, tries: 4 };
    c.children.push(
        ChildConfig::new("net", vec![selector(local_ts).unwrap()], vec![selector("10.2.0.0/24").unwrap()], &[esp]).expect("child config"),
    );
    Config { connections: vec![c], ..Default::default() }
}

fn swan(ike: &str, esp: &str, psk: &str) -> SwanctlConf {
    let mut child = ChildConf::new("net", "10.2.0.0/24", "10.1.0.0/24", esp);
    child.rand_time = Some("0".into());
    SwanctlConf {
        conns: vec![Conn::psk("gw", "10.99.0.2", "10.99.0.1", ike, "charon.test", "wisp.test", child)],
        secrets: vec![PskSecret { name: "1".into(), ids: vec!["wisp.test".into(), "charon.test".into()], secret: psk.into() }],
        ..Default::default()
    }
}

struct Bed {
    _pair: Pair,
    charon: Charon,
    eng: EngineDriver,
    _dir: TestDir,
}

fn bed(tag: &str, config: Config, swan_conf: &SwanctlConf) -> Bed {
    let pair = Pair::with_inner(tag, &["10.1.0.1/32"], &["10.2.0.1/32"]).unwrap();
    let dir = TestDir::new(tag).unwrap();
    let charon = Charon::start(&pair.right, dir.path(), &CharonOptions::with_keys()).unwrap();
    charon.load(swan_conf).unwrap();
    let local: IpAddr = "10.99.0.1".parse().unwrap();
    let eng = EngineDriver::spawn(&pair.left, local, move || {
        let policy = Arc::new(ConfigPolicy::new(&config));
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(std::process::id() as u64 ^ 0x5eed).to_le_bytes());
        Engine::new(config, policy, seed).expect("engine")
    })
    .unwrap();
    Bed { _pair: pair, charon, eng, _dir: dir }
}

fn child_up(ev: &Event) -> Option<ChildSaInfo> {
    match ev {
        Event::ChildSaUp(c) => Some(c.clone()),
        Event::ChildSaRekeyed { new, .. } => Some(new.clone()),
        _ => None,
    }
}

/// charon's single established IKE SA, with only installed children.
fn charon_ike(b: &Bed, pred: impl Fn(&IkeSaInfo) -> bool) -> IkeSaInfo {
    let sas = b
        .charon
        .wait_sas(T, |s| {
            let est: Vec<&IkeSaInfo> = s.iter().filter(|x| x.state == "ESTABLISHED").collect();
            est.len() == 1 && pred(est[0])
        })
        .unwrap();
    let mut ike = sas.into_iter().find(|x| x.state == "ESTABLISHED").unwrap();
    ike.children.retain(|c| c.state == "INSTALLED");
    ike
}

/// The engine's Child SA matches charon's: SPIs crossed, keys equal to the ones
/// charon logged for that SA (KEYMAT i→r / r→i depending on who initiated the
/// exchange that created it).
fn assert_child_matches(b: &Bed, c: &ChildSaInfo) {
    let ike = charon_ike(b, |i| i.children.iter().any(|x| x.spi_in == c.spi_out && x.state == "INSTALLED"));
    let cc = ike.children.iter().find(|x| x.spi_in == c.spi_out).unwrap();
    assert_eq!(cc.spi_out, c.spi_in, "charon's outbound SPI is the engine's inbound SPI");
    let keys = charon_log::child_keys(&b.charon.log());
    let k =
        keys.iter().find(|k| k.spi_in == c.spi_out).unwrap_or_else(|| panic!("charon logged no keys for SPI {:08x}: {keys:?}", c.spi_out));
    let (want_out, want_in) = if c.initiator { (&k.encr_i, &k.encr_r) } else { (&k.encr_r, &k.encr_i) };
    assert_eq!(c.key_out.as_bytes(), &want_out[..], "outbound key differs from charon's");
    assert_eq!(c.key_in.as_bytes(), &want_in[..], "inbound key differs from charon's");
    assert_eq!(c.key_out.as_bytes().len(), c.algorithms.cipher.keymat_len());
    assert!(cc.encap, "charon (kernel-libipsec) uses UDP encapsulation");
}

fn assert_ike_matches(b: &Bed, spi_i: u64, spi_r: u64, engine_initiator: bool) {
    let ike = charon_ike(b, |i| i.spi_i == spi_i);
    assert_eq!((ike.spi_i, ike.spi_r), (spi_i, spi_r));
    assert_eq!(ike.initiator, !engine_initiator);
    assert_eq!(ike.remote_port, 4500, "NAT-T port switch");
}

/// Full scenario for one role and proposal.
fn scenario(tag: &str, engine_initiates: bool, ike: &str, esp: &str) {
    let mut b = bed(tag, engine_config(ike, esp, PSK, "10.1.0.0/24"), &swan(ike, esp, PSK));

    // --- establish
    if engine_initiates {
        b.eng.call(|e, now| e.initiate(now, "gw")).unwrap().unwrap();
    } else {
        b.charon.initiate_child("net", 15).unwrap();
    }
    let up = b.eng.wait_event(T, |e| matches!(e, Event::IkeSaUp(_))).unwrap();
    let Event::IkeSaUp(info) = up else { unreachable!() };
    assert_eq!(info.initiator, engine_initiates);
    let child = b.eng.wait_event(T, |e| matches!(e, Event::ChildSaUp(_))).map(|e| child_up(&e).unwrap()).unwrap();
    assert_eq!(child.initiator, engine_initiates);
    assert!(child.nat.udp_encap);
    assert_ike_matches(&b, info.spi_i, info.spi_r, engine_initiates);
    assert_child_matches(&b, &child);
    let charon_view = charon_ike(&b, |_| true);
    let norm = |s: &str| s.replace('_', "").to_ascii_uppercase();
    assert_eq!(norm(&info.algorithms), norm(&charon_view.proposal()), "IKE algorithms agree");
    let ike_id: IkeSaId = info.ike;

    // --- Child rekey initiated by the engine
    let spi = child.spi_in;
    b.eng.call(move |e, now| e.rekey_child(now, ike_id, spi)).unwrap().unwrap();
    let c2 = b
        .eng
        .wait_event(T, |e| matches!(e, Event::ChildSaRekeyed { old_spi_in, .. } if *old_spi_in == spi))
        .map(|e| child_up(&e).unwrap())
        .unwrap();
    assert!(c2.initiator);
    assert_child_matches(&b, &c2);
    charon_ike(&b, |i| i.children.len() == 1 && i.children[0].spi_out == c2.spi_in);

    // --- Child rekey initiated by charon
    b.charon.rekey_child("net").unwrap();
    let spi2 = c2.spi_in;
    let c3 = b
        .eng
        .wait_event(T, |e| matches!(e, Event::ChildSaRekeyed { old_spi_in, .. } if *old_spi_in == spi2))
        .map(|e| child_up(&e).unwrap())
        .unwrap();
    assert!(!c3.initiator);
    assert_child_matches(&b, &c3);

    // --- IKE rekey initiated by the engine
    b.eng.call(move |e, now| e.rekey_ike(now, ike_id)).unwrap().unwrap();
    let ev = b.eng.wait_event(T, |e| matches!(e, Event::IkeSaRekeyed { .. })).unwrap();
    let Event::IkeSaRekeyed { new, .. } = ev else { unreachable!() };
    assert!(new.initiator, "engine initiated the IKE rekey");
    assert_ike_matches(&b, new.spi_i, new.spi_r, true);
    // Child SA survives on the new IKE SA.
    charon_ike(&b, |i| i.spi_i == new.spi_i && i.children.len() == 1 && i.children[0].spi_out == c3.spi_in);
    let ike_id = new.ike;

    // --- IKE rekey initiated by charon
    b.charon.rekey_ike("gw").unwrap();
    let ev = b.eng.wait_event(T, |e| matches!(e, Event::IkeSaRekeyed { old, .. } if *old == ike_id)).unwrap();
    let Event::IkeSaRekeyed { new: new2, .. } = ev else { unreachable!() };
    assert!(!new2.initiator);
    assert_ike_matches(&b, new2.spi_i, new2.spi_r, false);

    // --- delete from charon
    b.charon.terminate_ike("gw").unwrap();
    let cur = new2.ike;
    let ev = b.eng.wait_event(T, |e| matches!(e, Event::IkeSaDown { ike, .. } if *ike == cur)).unwrap();
    let Event::IkeSaDown { reason, .. } = ev else { unreachable!() };
    assert_eq!(reason, DownReason::RemoteDelete);
    assert!(b.eng.call(|e, now| e.status(now).is_empty()).unwrap(), "engine holds no SA after DELETE");

    // --- re-establish (other role) and delete from the engine
    if engine_initiates {
        b.charon.initiate_child("net", 15).unwrap();
    } else {
        b.eng.call(|e, now| e.initiate(now, "gw")).unwrap().unwrap();
    }
    let ev = b.eng.wait_event(T, |e| matches!(e, Event::IkeSaUp(_))).unwrap();
    let Event::IkeSaUp(info2) = ev else { unreachable!() };
    assert_eq!(info2.initiator, !engine_initiates);
    let c4 = b.eng.wait_event(T, |e| matches!(e, Event::ChildSaUp(_))).map(|e| child_up(&e).unwrap()).unwrap();
    assert_child_matches(&b, &c4);
    let id2 = info2.ike;
    b.eng.call(move |e, now| e.delete_ike(now, id2)).unwrap().unwrap();
    let ev = b.eng.wait_event(T, |e| matches!(e, Event::IkeSaDown { ike, .. } if *ike == id2)).unwrap();
    let Event::IkeSaDown { reason, .. } = ev else { unreachable!() };
    assert_eq!(reason, DownReason::LocalDelete);
    b.charon.wait_sas(T, |s| s.is_empty()).unwrap();
}

#[test]
fn engine_initiator_aes256gcm_vs_charon() {
    if !require_root("engine_initiator_aes256gcm_vs_charon") {
        return;
    }
    scenario("eia", true, "aes256gcm16-prfsha256-x25519", "aes256gcm16");
}

#[test]
fn engine_responder_aes256gcm_vs_charon() {
    if !require_root("engine_responder_aes256gcm_vs_charon") {
        return;
    }
    scenario("era", false, "aes256gcm16-prfsha256-x25519", "aes256gcm16");
}

#[test]
fn engine_initiator_chacha20_vs_charon() {
    if !require_root("engine_initiator_chacha20_vs_charon") {
        return;
    }
    scenario("eic", true, "chacha20poly1305-prfsha256-x25519", "chacha20poly1305");
}

#[test]
fn engine_responder_chacha20_vs_charon() {
    if !require_root("engine_responder_chacha20_vs_charon") {
        return;
    }
    scenario("erc", false, "chacha20poly1305-prfsha256-x25519", "chacha20poly1305");
}

/// A failure as both ends see it: the engine's Failure event (side + notify)
/// and the notify in charon's log.
fn failure(tag: &str, engine_initiates: bool, cfg: Config, sw: SwanctlConf, notify: u16, name: &str) {
    let mut b = bed(tag, cfg, &sw);
    if engine_initiates {
        b.eng.call(|e, now| e.initiate(now, "gw")).unwrap().unwrap();
    } else {
        assert!(b.charon.initiate_child("net", 10).is_err(), "charon must fail");
    }
    let ev = b.eng.wait_event(T, |e| matches!(e, Event::Failure(_))).unwrap();
    let Event::Failure(f) = ev else { unreachable!() };
    assert_eq!(f.notify, Some(notify), "engine failure: {f}");
    let want_side = if engine_initiates { Side::Remote } else { Side::Local };
    assert_eq!(f.side, want_side, "engine failure: {f}");
    assert!(!f.reason.to_string().is_empty());
    println!("engine reported: {f}");
    let log = b.charon.log();
    let charon_saw = if engine_initiates { charon_log::sent_notifies(&log) } else { charon_log::received_notifies(&log) };
    assert!(charon_saw.contains(&name.to_string()), "charon log lacks {name}: {charon_saw:?}");
    // No Child SA anywhere.
    assert!(b.charon.list_sas().unwrap().iter().all(|s| s.children.is_empty()));
    assert!(!b.eng.seen.iter().any(|e| matches!(e, Event::ChildSaUp(_))));
}

#[test]
fn engine_vs_charon_failures() {
    if !require_root("engine_vs_charon_failures") {
        return;
    }
    let (ike, esp) = ("aes256gcm16-prfsha256-x25519", "aes256gcm16");
    // wrong PSK, each side initiating
    failure(
        "efp",
        true,
        engine_config(ike, esp, "wrong", "10.1.0.0/24"),
        swan(ike, esp, PSK),
        AUTHENTICATION_FAILED,
        "AUTHENTICATION_FAILED",
    );
    failure(
        "efq",
        false,
        engine_config(ike, esp, "wrong", "10.1.0.0/24"),
        swan(ike, esp, PSK),
        AUTHENTICATION_FAILED,
        "AUTHENTICATION_FAILED",
    );
    // no common IKE proposal
    let other = "chacha20poly1305-prfsha384-ecp384";
    failure("efn", true, engine_config(other, esp, PSK, "10.1.0.0/24"), swan(ike, esp, PSK), NO_PROPOSAL_CHOSEN, "NO_PROPOSAL_CHOSEN");
    failure("efo", false, engine_config(other, esp, PSK, "10.1.0.0/24"), swan(ike, esp, PSK), NO_PROPOSAL_CHOSEN, "NO_PROPOSAL_CHOSEN");
    // traffic selectors outside what the responder allows
    failure("eft", true, engine_config(ike, esp, PSK, "10.7.0.0/24"), swan(ike, esp, PSK), TS_UNACCEPTABLE, "TS_UNACCEPTABLE");
    let mut sw = swan(ike, esp, PSK);
    sw.conns[0].children[0].local_ts = vec!["10.8.0.0/24".into()];
    failure("efu", false, engine_config(ike, esp, PSK, "10.1.0.0/24"), sw, TS_UNACCEPTABLE, "TS_UNACCEPTABLE");
}

/// INVALID_KE_PAYLOAD: the initiator's first group is x25519, the responder
/// accepts only ecp384; one round trip, then the IKE SA is up with ECP_384.
#[test]
fn engine_vs_charon_invalid_ke_round_trip() {
    if !require_root("engine_vs_charon_invalid_ke_round_trip") {
        return;
    }
    let (two, one) = ("aes128gcm16-prfsha256-x25519-ecp384", "aes128gcm16-prfsha256-ecp384");
    for engine_initiates in [true, false] {
        let (eng_p, swan_p) = if engine_initiates { (two, one) } else { (one, two) };
        let mut b = bed("ek", engine_config(eng_p, "aes128gcm16", PSK, "10.1.0.0/24"), &swan(swan_p, "aes128gcm16", PSK));
        if engine_initiates {
            b.eng.call(|e, now| e.initiate(now, "gw")).unwrap().unwrap();
        } else {
            b.charon.initiate_child("net", 15).unwrap();
        }
        let ev = b.eng.wait_event(T, |e| matches!(e, Event::IkeSaUp(_))).unwrap();
        let Event::IkeSaUp(info) = ev else { unreachable!() };
        assert!(info.algorithms.ends_with("ECP_384"), "{}", info.algorithms);
        let c = b.eng.wait_event(T, |e| matches!(e, Event::ChildSaUp(_))).map(|e| child_up(&e).unwrap()).unwrap();
        assert_child_matches(&b, &c);
        let ike = charon_ike(&b, |_| true);
        assert_eq!(ike.dh_group, "ECP_384");
        let log = b.charon.log();
        if engine_initiates {
            assert!(charon_log::sent_notifies(&log).contains(&"INVALID_KE_PAYLOAD".to_string()));
        } else {
            assert_eq!(charon_log::dh_group_requests(&log), vec![("CURVE_25519".to_string(), "ECP_384".to_string())]);
        }
    }
}
