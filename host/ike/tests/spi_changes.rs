//! `Engine::take_spi_changes`: a caller that routes datagrams by our IKE
//! SPIs keeps an exact copy of `local_spis` from the changes alone, through
//! establishment, IKE rekeys, reauthentication, deletes and lingering
//! zombies; a backlog past `SPI_LOG_MAX` falls back to the whole set.

mod engine_support;

use std::collections::BTreeMap;
use std::time::Duration;

use engine_support::*;
use wisp_ike::engine::{Engine, SpiChange, SpiChanges, SPI_LOG_MAX};

#[derive(Default)]
struct Mirror {
    map: BTreeMap<u64, bool>,
    fulls: usize,
    deltas: usize,
}

impl Mirror {
    fn follow(&mut self, e: &mut Engine) {
        match e.take_spi_changes() {
            SpiChanges::All(all) => {
                self.fulls += 1;
                self.map = all.into_iter().collect();
            }
            SpiChanges::Changed(c) => {
                self.deltas += 1;
                for ch in c {
                    match ch {
                        SpiChange::Added { spi, we_initiated } => {
                            self.map.insert(spi, we_initiated);
                        }
                        SpiChange::Removed(spi) => {
                            self.map.remove(&spi);
                        }
                    }
                }
            }
        }
        let truth: BTreeMap<u64, bool> = e.local_spis().into_iter().collect();
        assert_eq!(self.map, truth, "the mirror built from changes is the engine's SPI set");
    }
}

#[test]
fn changes_mirror_the_spi_set_through_rekeys_reauth_and_deletes() {
    let mut p = Pair::default_pair();
    let (mut ma, mut mb) = (Mirror::default(), Mirror::default());
    ma.follow(&mut p.a);
    mb.follow(&mut p.b);
    p.a.initiate(p.now, "ab").unwrap();
    // Follow after every step of the handshake, not only at the end.
    for _ in 0..40 {
        p.run_for(Duration::from_millis(1));
        ma.follow(&mut p.a);
        mb.follow(&mut p.b);
    }
    p.run_until_quiet();
    ma.follow(&mut p.a);
    mb.follow(&mut p.b);
    assert_eq!(ma.map.len(), 1);
    let first = *ma.map.keys().next().unwrap();
    // IKE rekey from B: a new SPI on both sides, the old one gone (after
    // its zombie lingers).
    let id = p.b.ike_sas()[0];
    p.b.rekey_ike(p.now, id).unwrap();
    p.run_until_quiet();
    ma.follow(&mut p.a);
    mb.follow(&mut p.b);
    p.advance(Duration::from_secs(30));
    ma.follow(&mut p.a);
    mb.follow(&mut p.b);
    assert_eq!(ma.map.len(), 1);
    assert_ne!(*ma.map.keys().next().unwrap(), first, "the rekeyed SA has a new SPI");
    // Reauthentication from A: a second IKE SA, then the first goes.
    let id = p.a.ike_sas()[0];
    p.a.reauth_ike(p.now, id).unwrap();
    p.run_until_quiet();
    ma.follow(&mut p.a);
    mb.follow(&mut p.b);
    p.advance(Duration::from_secs(30));
    ma.follow(&mut p.a);
    mb.follow(&mut p.b);
    assert_eq!(ma.map.len(), 1);
    assert_eq!(ma.map.values().next(), Some(&true), "A initiated the reauthenticated SA");
    // Delete: nothing left.
    let id = p.a.ike_sas()[0];
    p.a.delete_ike(p.now, id).unwrap();
    p.run_until_quiet();
    p.advance(Duration::from_secs(30));
    ma.follow(&mut p.a);
    mb.follow(&mut p.b);
    assert!(ma.map.is_empty() && mb.map.is_empty());
    assert_eq!((ma.fulls, mb.fulls), (1, 1), "only the first report is the whole set");
    assert!(ma.deltas > 40);
}

#[test]
fn a_backlog_past_the_log_limit_hands_out_the_whole_set() {
    let (mut a, _) = default_pair_configs();
    a.connections[0].caps.max_ike_sas = 2 * SPI_LOG_MAX;
    a.connections[0].caps.max_child_sas = 2 * SPI_LOG_MAX;
    let policy = std::sync::Arc::new(wisp_ike::native_policy::ConfigPolicy::new(&a));
    let mut e = Engine::new(a, policy, [3; 32]).unwrap();
    let mut m = Mirror::default();
    m.follow(&mut e);
    let now = Duration::from_secs(1);
    for _ in 0..10 {
        e.initiate(now, "ab").unwrap();
    }
    m.follow(&mut e);
    assert_eq!((m.fulls, m.deltas), (1, 1));
    // Nobody asks for a while: the log stops at its limit.
    for _ in 0..SPI_LOG_MAX + 1 {
        e.initiate(now, "ab").unwrap();
    }
    m.follow(&mut e);
    assert_eq!(m.fulls, 2, "past the limit the next report is the whole set");
    assert_eq!(m.map.len(), SPI_LOG_MAX + 11);
    e.initiate(now, "ab").unwrap();
    m.follow(&mut e);
    assert_eq!((m.fulls, m.deltas), (2, 2), "and then changes again");
}
