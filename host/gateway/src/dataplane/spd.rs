//! The outbound SPD, indexed, and the routes the installed SAs need,
//! counted.
//!
//! The SPD is an ordered list (first match wins), but a packet no longer
//! walks it: every entry is filed under the CIDR blocks its remote
//! selectors cover (`selectors::range_to_cidrs`), and a lookup masks the
//! destination with each prefix length in use, looks the block up, and
//! takes the earliest entry (by SPD position) that matches the whole flow.
//! A lookup costs one hash probe per prefix length in use plus the entries
//! filed under the blocks the destination falls in, whatever the number
//! of SAs; with a peer per /32 or per /24 that is one or two probes.
//!
//! The maps are persistent (`imbl`): cloning the tables to publish a
//! change (the packet threads read them through an `ArcSwap`) shares all
//! but the O(log n) nodes the change touched, where a `std` map was copied
//! whole on every install (10,000 SAs: the clone and the route recount
//! were half of the gateway's time while SAs were coming up).

use std::collections::{BTreeMap, BTreeSet, HashMap as StdHashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use imbl::{HashMap, OrdMap};

use super::selectors::{self, Flow};
use wisp_policy_api::TrafficSelector;

/// A CIDR block: network address (masked) and prefix length.
pub(super) type Cidr = (IpAddr, u8);

/// What the SPD needs of an entry.
pub(super) trait SpdEntry {
    fn spi_in(&self) -> u32;
    fn local_ts(&self) -> &[TrafficSelector];
    fn remote_ts(&self) -> &[TrafficSelector];
    fn peer_ip(&self) -> IpAddr;
}

/// Which prefix lengths have blocks filed under them (per family), so a
/// lookup probes only those.
#[derive(Clone)]
struct Lengths {
    count_v4: [u32; 33],
    count_v6: [u32; 129],
    v4: Vec<u8>,
    v6: Vec<u8>,
}

impl Default for Lengths {
    fn default() -> Self {
        Lengths { count_v4: [0; 33], count_v6: [0; 129], v4: Vec::new(), v6: Vec::new() }
    }
}

impl Lengths {
    fn add(&mut self, (net, len): Cidr, up: bool) {
        let (counts, present) = if net.is_ipv4() { (&mut self.count_v4[..], &mut self.v4) } else { (&mut self.count_v6[..], &mut self.v6) };
        let c = &mut counts[len as usize];
        if up {
            *c += 1;
            if *c == 1 {
                present.push(len);
                present.sort_unstable();
            }
        } else {
            *c = c.saturating_sub(1);
            if *c == 0 {
                present.retain(|l| *l != len);
            }
        }
    }
}

/// `a` with all but its first `len` bits cleared.
pub(super) fn mask(a: IpAddr, len: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - len.min(32)) };
            IpAddr::V4(Ipv4Addr::from(u32::from(v) & m))
        }
        IpAddr::V6(v) => {
            let m = if len == 0 { 0 } else { u128::MAX << (128 - len.min(128)) };
            IpAddr::V6(Ipv6Addr::from(u128::from(v) & m))
        }
    }
}

/// The CIDR blocks the remote selectors of an entry cover (deduplicated).
fn blocks(remote_ts: &[TrafficSelector]) -> BTreeSet<Cidr> {
    remote_ts.iter().flat_map(|ts| selectors::range_to_cidrs(ts.start_address, ts.end_address)).collect()
}

/// The (SPD position, entry) pairs filed under one block, by position.
type Filed<E> = Arc<Vec<(u64, Arc<E>)>>;

/// The outbound SPD: entries in SPD order, by inbound SPI, and by the
/// blocks their remote selectors cover. Cheap to clone.
pub(super) struct Spd<E> {
    /// SPD order: position → entry (smaller positions match first).
    by_pos: OrdMap<u64, Arc<E>>,
    /// The position of the Child SA with this inbound SPI (ours, unique).
    pos_of: HashMap<u32, u64>,
    /// Block → the (position, entry) pairs filed under it, by position.
    blocks: HashMap<Cidr, Filed<E>>,
    lengths: Arc<Lengths>,
    next_pos: u64,
}

impl<E> Clone for Spd<E> {
    fn clone(&self) -> Self {
        Spd {
            by_pos: self.by_pos.clone(),
            pos_of: self.pos_of.clone(),
            blocks: self.blocks.clone(),
            lengths: self.lengths.clone(),
            next_pos: self.next_pos,
        }
    }
}

impl<E> Default for Spd<E> {
    fn default() -> Self {
        Spd { by_pos: OrdMap::new(), pos_of: HashMap::new(), blocks: HashMap::new(), lengths: Arc::default(), next_pos: 0 }
    }
}

impl<E: SpdEntry> Spd<E> {
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_pos.len()
    }

    /// The entry of the Child SA whose inbound SPI is `spi_in`.
    pub(super) fn get(&self, spi_in: u32) -> Option<&Arc<E>> {
        self.pos_of.get(&spi_in).and_then(|p| self.by_pos.get(p))
    }

    /// Entries in SPD order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<E>> {
        self.by_pos.values()
    }

    /// The first entry (in SPD order) matching `flow`.
    pub(super) fn find(&self, flow: &Flow) -> Option<&Arc<E>> {
        let lengths = if flow.dst.is_ipv4() { &self.lengths.v4 } else { &self.lengths.v6 };
        let mut best: Option<(u64, &Arc<E>)> = None;
        for &len in lengths {
            let Some(filed) = self.blocks.get(&(mask(flow.dst, len), len)) else { continue };
            for (pos, e) in filed.iter() {
                if best.is_some_and(|(b, _)| *pos >= b) {
                    break;
                }
                if selectors::matches_outbound(e.local_ts(), e.remote_ts(), flow) {
                    best = Some((*pos, e));
                    break;
                }
            }
        }
        best.map(|(_, e)| e)
    }

    /// Append `e` at the end of the SPD, or put it in the place of the
    /// entry with inbound SPI `replacing` (make-before-break rekeys and peer
    /// moves keep the SPD order). Returns the entry it replaced.
    pub(super) fn insert(&mut self, replacing: Option<u32>, e: Arc<E>) -> Option<Arc<E>> {
        let old = replacing.and_then(|spi| self.remove(spi));
        let pos = match &old {
            Some((pos, _)) => *pos,
            None => {
                self.next_pos += 1;
                self.next_pos
            }
        };
        // One entry per inbound SPI: one already filed under it goes.
        let displaced = self.remove(e.spi_in());
        for b in blocks(e.remote_ts()) {
            let filed = self.blocks.entry(b).or_default();
            if filed.is_empty() {
                Arc::make_mut(&mut self.lengths).add(b, true);
            }
            let v = Arc::make_mut(filed);
            let at = v.partition_point(|(p, _)| *p < pos);
            v.insert(at, (pos, e.clone()));
        }
        self.pos_of.insert(e.spi_in(), pos);
        self.by_pos.insert(pos, e);
        old.map(|(_, e)| e).or(displaced.map(|(_, e)| e))
    }

    /// Remove the entry with inbound SPI `spi_in`: its position and entry.
    pub(super) fn remove(&mut self, spi_in: u32) -> Option<(u64, Arc<E>)> {
        let pos = self.pos_of.remove(&spi_in)?;
        let e = self.by_pos.remove(&pos)?;
        for b in blocks(e.remote_ts()) {
            let Some(filed) = self.blocks.get_mut(&b) else { continue };
            Arc::make_mut(filed).retain(|(p, _)| *p != pos);
            if filed.is_empty() {
                self.blocks.remove(&b);
                Arc::make_mut(&mut self.lengths).add(b, false);
            }
        }
        Some((pos, e))
    }
}

/// The routes the SPD and the traps need, kept by count, so that an
/// install or removal recomputes only the blocks it touches.
///
/// A block is routed to the TUN device when an SA's remote selectors cover
/// it and it does not contain that SA's own peer (it would swallow the ESP
/// packets), or a trap's remote selectors cover it and it contains no SA's
/// peer (a trap has no peer of its own).
#[derive(Default)]
pub(super) struct Routes {
    /// Installed in the kernel.
    pub(super) installed: BTreeSet<Cidr>,
    /// Block → number of SPD entries that want it.
    sa_blocks: StdHashMap<Cidr, u32>,
    /// Peer address → number of SPD entries with it.
    peers: BTreeMap<IpAddr, u32>,
    /// Trap id → its blocks.
    traps: BTreeMap<u64, BTreeSet<Cidr>>,
}

/// Whether a block contains `a`.
pub(super) fn contains((net, len): Cidr, a: IpAddr) -> bool {
    net.is_ipv4() == a.is_ipv4() && mask(a, len) == net
}

/// The lowest and highest address of a block.
fn bounds((net, len): Cidr) -> (IpAddr, IpAddr) {
    let hi = match net {
        IpAddr::V4(v) => IpAddr::V4(Ipv4Addr::from(u32::from(v) | u32::MAX.checked_shr(len as u32).unwrap_or(0))),
        IpAddr::V6(v) => IpAddr::V6(Ipv6Addr::from(u128::from(v) | u128::MAX.checked_shr(len as u32).unwrap_or(0))),
    };
    (net, hi)
}

impl Routes {
    /// Blocks an SPD entry wants routed.
    fn entry_blocks<E: SpdEntry>(e: &E) -> impl Iterator<Item = Cidr> {
        let peer = e.peer_ip();
        blocks(e.remote_ts()).into_iter().filter(move |b| !contains(*b, peer))
    }

    /// Count an SPD entry in (`up`) or out. Returns the blocks whose want may have changed.
    pub(super) fn entry<E: SpdEntry>(&mut self, e: &E, up: bool, touched: &mut BTreeSet<Cidr>) {
        for b in Self::entry_blocks(e) {
            let c = self.sa_blocks.entry(b).or_insert(0);
            if up {
                *c += 1;
            } else {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    self.sa_blocks.remove(&b);
                }
            }
            touched.insert(b);
        }
        let p = self.peers.entry(e.peer_ip()).or_insert(0);
        let was_new_or_gone = if up {
            *p += 1;
            *p == 1
        } else {
            *p = p.saturating_sub(1);
            *p == 0
        };
        if *p == 0 {
            self.peers.remove(&e.peer_ip());
        }
        if was_new_or_gone {
            // A peer coming or going may change what traps may route.
            touched.extend(self.traps.values().flatten().copied());
        }
    }

    /// Set (Some) or drop (None) the trap `id`'s remote selectors.
    pub(super) fn trap(&mut self, id: u64, remote_ts: Option<&[TrafficSelector]>, touched: &mut BTreeSet<Cidr>) {
        if let Some(old) = self.traps.remove(&id) {
            touched.extend(old);
        }
        if let Some(ts) = remote_ts {
            let b = blocks(ts);
            touched.extend(b.iter().copied());
            self.traps.insert(id, b);
        }
    }

    /// Want nothing any more; returns the blocks to re-check (all installed).
    pub(super) fn clear(&mut self) -> BTreeSet<Cidr> {
        let installed = std::mem::take(&mut self.installed);
        *self = Routes { installed, ..Default::default() };
        self.installed.clone()
    }

    /// Whether block `b` should be routed.
    pub(super) fn wanted(&self, b: Cidr) -> bool {
        if self.sa_blocks.contains_key(&b) {
            return true;
        }
        let (lo, hi) = bounds(b);
        self.traps.values().any(|t| t.contains(&b)) && self.peers.range(lo..=hi).next().is_none()
    }

    /// Every block that should be routed (for checks; O(entries)).
    #[cfg(test)]
    pub(super) fn all_wanted(&self) -> BTreeSet<Cidr> {
        self.sa_blocks.keys().chain(self.traps.values().flatten()).copied().filter(|b| self.wanted(*b)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E {
        spi: u32,
        local: Vec<TrafficSelector>,
        remote: Vec<TrafficSelector>,
        peer: IpAddr,
    }

    impl SpdEntry for E {
        fn spi_in(&self) -> u32 {
            self.spi
        }
        fn local_ts(&self) -> &[TrafficSelector] {
            &self.local
        }
        fn remote_ts(&self) -> &[TrafficSelector] {
            &self.remote
        }
        fn peer_ip(&self) -> IpAddr {
            self.peer
        }
    }

    fn ts(s: &str) -> TrafficSelector {
        crate::config::parse_ts(s).unwrap()
    }

    fn e(spi: u32, local: &str, remote: &[&str], peer: &str) -> Arc<E> {
        Arc::new(E { spi, local: vec![ts(local)], remote: remote.iter().map(|r| ts(r)).collect(), peer: peer.parse().unwrap() })
    }

    fn flow(src: &str, dst: &str, proto: u8, dport: Option<u16>) -> Flow {
        Flow { src: src.parse().unwrap(), dst: dst.parse().unwrap(), proto, sport: dport.map(|_| 40000), dport }
    }

    /// The reference: the first entry in SPD order that matches.
    fn scan(spd: &Spd<E>, f: &Flow) -> Option<u32> {
        spd.iter().find(|x| selectors::matches_outbound(&x.local, &x.remote, f)).map(|x| x.spi)
    }

    #[test]
    fn first_match_in_spd_order_across_prefix_lengths() {
        let mut spd = Spd::default();
        spd.insert(None, e(1, "10.0.0.0/8", &["10.9.0.0/16"], "192.0.2.1"));
        spd.insert(None, e(2, "10.0.0.0/8", &["10.9.1.0/24"], "192.0.2.2"));
        spd.insert(None, e(3, "10.0.0.0/8", &["0.0.0.0/0"], "192.0.2.3"));
        spd.insert(None, e(4, "10.0.0.0/8", &["10.9.1.7/32"], "192.0.2.4"));
        // Earlier entries win even when a later one is more specific.
        assert_eq!(spd.find(&flow("10.1.1.1", "10.9.1.7", 6, Some(80))).map(|x| x.spi), Some(1));
        assert_eq!(spd.find(&flow("10.1.1.1", "172.16.0.1", 6, Some(80))).map(|x| x.spi), Some(3));
        assert!(spd.find(&flow("192.168.1.1", "10.9.1.7", 6, Some(80))).is_none(), "source outside every local selector");
        spd.remove(1);
        assert_eq!(spd.find(&flow("10.1.1.1", "10.9.1.7", 6, Some(80))).map(|x| x.spi), Some(2));
        // A replacement keeps its place: 5 takes 2's position, ahead of 3 and 4.
        let old = spd.insert(Some(2), e(5, "10.0.0.0/8", &["10.9.1.0/24"], "192.0.2.2"));
        assert_eq!(old.map(|x| x.spi), Some(2));
        assert_eq!(spd.find(&flow("10.1.1.1", "10.9.1.7", 6, Some(80))).map(|x| x.spi), Some(5));
        assert!(spd.get(2).is_none());
        assert_eq!(spd.len(), 3);
        assert_eq!(spd.iter().map(|x| x.spi).collect::<Vec<_>>(), [5, 3, 4]);
    }

    #[test]
    fn ports_protocols_ranges_and_v6_as_a_scan_would() {
        let mut spd = Spd::default();
        let mut tcp80 = ts("10.8.0.0/16");
        tcp80.ip_protocol = 6;
        tcp80.start_port = 80;
        tcp80.end_port = 80;
        spd.insert(None, Arc::new(E { spi: 1, local: vec![ts("10.0.0.0/8")], remote: vec![tcp80], peer: "192.0.2.1".parse().unwrap() }));
        spd.insert(None, e(2, "10.0.0.0/8", &["10.8.0.3-10.8.0.9"], "192.0.2.2"));
        spd.insert(None, e(3, "fd00::/16", &["fd99::/64", "fd98::1-fd98::5"], "2001:db8::3"));
        spd.insert(None, e(4, "10.0.0.0/8", &["10.8.0.0/16"], "192.0.2.4"));
        let flows = [
            flow("10.1.1.1", "10.8.0.5", 6, Some(80)),
            flow("10.1.1.1", "10.8.0.5", 6, Some(81)),
            flow("10.1.1.1", "10.8.0.5", 1, None),
            flow("10.1.1.1", "10.8.0.10", 17, Some(53)),
            flow("10.1.1.1", "10.8.0.2", 6, Some(80)),
            flow("fd00::1", "fd99::77", 58, None),
            flow("fd00::1", "fd98::5", 17, Some(53)),
            flow("fd00::1", "fd98::6", 17, Some(53)),
            flow("10.1.1.1", "10.7.0.1", 6, Some(80)),
        ];
        let want = [Some(1), Some(2), Some(2), Some(4), Some(1), Some(3), Some(3), None, None];
        for (f, w) in flows.iter().zip(want) {
            assert_eq!(spd.find(f).map(|x| x.spi), w, "{f:?}");
            assert_eq!(scan(&spd, f), w, "reference scan for {f:?}");
        }
    }

    #[test]
    fn clones_are_snapshots() {
        let mut spd = Spd::default();
        spd.insert(None, e(1, "10.0.0.0/8", &["10.9.0.0/16"], "192.0.2.1"));
        let before = spd.clone();
        spd.remove(1);
        spd.insert(None, e(2, "10.0.0.0/8", &["10.9.0.0/16"], "192.0.2.2"));
        let f = flow("10.1.1.1", "10.9.0.1", 6, Some(22));
        assert_eq!(before.find(&f).map(|x| x.spi), Some(1));
        assert_eq!(spd.find(&f).map(|x| x.spi), Some(2));
    }

    #[test]
    fn routes_by_count_never_swallow_a_peer() {
        let mut r = Routes::default();
        let mut touched = BTreeSet::new();
        let a = e(1, "10.0.0.0/8", &["10.9.0.0/16"], "192.0.2.1");
        let b = e(2, "10.0.0.0/8", &["10.9.0.0/16", "192.0.2.0/24"], "192.0.2.2");
        r.entry(&*a, true, &mut touched);
        r.entry(&*b, true, &mut touched);
        let net = |s: &str| -> Cidr {
            let (a, l) = s.split_once('/').unwrap();
            (a.parse().unwrap(), l.parse().unwrap())
        };
        assert_eq!(r.all_wanted(), BTreeSet::from([net("10.9.0.0/16")]), "192.0.2.0/24 holds b's own peer");
        r.entry(&*a, false, &mut touched);
        assert!(r.wanted(net("10.9.0.0/16")), "b still wants it");
        r.entry(&*b, false, &mut touched);
        assert!(r.all_wanted().is_empty());
        // A trap routes its blocks unless some SA's peer is inside.
        r.trap(7, Some(&[ts("192.0.2.0/24"), ts("10.50.0.0/16")]), &mut touched);
        assert_eq!(r.all_wanted(), BTreeSet::from([net("192.0.2.0/24"), net("10.50.0.0/16")]));
        touched.clear();
        r.entry(&*a, true, &mut touched);
        assert!(touched.contains(&net("192.0.2.0/24")), "a new peer re-checks the trap blocks");
        assert!(!r.wanted(net("192.0.2.0/24")), "a's peer is in the trap block");
        assert!(r.wanted(net("10.50.0.0/16")));
        r.trap(7, None, &mut touched);
        assert_eq!(r.all_wanted(), BTreeSet::from([net("10.9.0.0/16")]));
    }
}
