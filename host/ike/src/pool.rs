//! Virtual IP address pools (RFC 7296 3.15: the addresses a responder hands
//! out in a CFG_REPLY), shared by every engine of a daemon.
//!
//! A pool is a range of addresses (from a CIDR block, network and — for
//! IPv4 — broadcast address left out, or an explicit `first-last` range).
//! Leases follow strongSwan's in-memory pools:
//!
//! - a lease belongs to an identity; while an IKE SA of that identity holds
//!   it, it is *online* (several SAs of one identity, e.g. the old and new
//!   IKE SA of a reauthentication, may hold the same address when the new
//!   one asks for it);
//! - when the last SA goes it becomes *offline*, still kept for that
//!   identity, which gets it back on its next connection;
//! - a new identity gets a never-used address first, then an address whose
//!   offline lease is the oldest; with every address online the pool is
//!   exhausted.
//!
//! Memory is bounded by the pool's size and [`MAX_OFFLINE`]: no per-address
//! storage for addresses never handed out, so a /64 costs nothing up front.
//! Deterministic: no clock, no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

use wisp_policy_api::{AddressFamily, AddressPool, Identity};

/// Offline leases kept per pool; beyond, the oldest is forgotten (its
/// address becomes free for anyone).
pub const MAX_OFFLINE: usize = 65_536;

/// One `[pools.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub name: String,
    /// The addresses as configured (`10.3.0.0/24`, `10.3.0.10-10.3.0.20`).
    pub addrs: String,
    /// First and last address handed out (same family, first <= last).
    pub first: IpAddr,
    pub last: IpAddr,
    /// DNS servers sent with a lease (INTERNAL_IP4_DNS / INTERNAL_IP6_DNS).
    pub dns: Vec<IpAddr>,
    /// Networks behind us sent with a lease (INTERNAL_IP4_SUBNET /
    /// INTERNAL_IP6_SUBNET): address and prefix length.
    pub subnets: Vec<(IpAddr, u8)>,
}

impl PoolConfig {
    /// `addrs` as swanctl takes it: a CIDR block (`10.3.0.0/24`; its
    /// network address, and for IPv4 its broadcast address, are not handed
    /// out unless the block is a /31, /32, /127 or /128) or a range
    /// `10.3.0.10-10.3.0.20`.
    pub fn new(name: &str, addrs: &str) -> Result<PoolConfig, String> {
        let (first, last) = wisp_policy_api::address::pool_bounds(addrs)?;
        Ok(PoolConfig { name: name.to_string(), addrs: addrs.trim().to_string(), first, last, dns: Vec::new(), subnets: Vec::new() })
    }

    pub fn is_ipv6(&self) -> bool {
        self.first.is_ipv6()
    }

    /// Number of addresses in the pool.
    pub fn size(&self) -> u128 {
        to_u128(self.last) - to_u128(self.first) + 1
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv6() == self.is_ipv6() && (to_u128(self.first)..=to_u128(self.last)).contains(&to_u128(a))
    }

    /// The pool as written: `first-last`.
    pub fn range(&self) -> String {
        format!("{}-{}", self.first, self.last)
    }

    /// The pool as a policy sees it (`assign-address`).
    pub fn for_policy(&self) -> AddressPool {
        AddressPool {
            name: self.name.clone(),
            family: if self.is_ipv6() { AddressFamily::Ipv6 } else { AddressFamily::Ipv4 },
            range: self.addrs.clone(),
            first: self.first,
            last: self.last,
            size: u64::try_from(self.size()).unwrap_or(u64::MAX),
        }
    }
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

/// An address leased to an identity, held by one IKE SA. Give it back with
/// [`Pools::release`] exactly once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    pub pool: String,
    pub addr: IpAddr,
    /// The identity it is leased to ([`id_key`]).
    pub owner: String,
}

/// Why no address could be leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolError {
    /// Every address of these pools is online.
    Exhausted { pools: Vec<String>, size: u128 },
    /// None of the pools named is configured with that family.
    NoPool { pools: Vec<String>, v6: bool },
    /// A specific address (chosen by the policy) is not in the pools or is held by another identity.
    Unavailable { addr: IpAddr, why: String },
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::Exhausted { pools, size } => {
                write!(f, "address pool {} exhausted ({size} of {size} addresses leased)", pools.join(", "))
            }
            PoolError::NoPool { pools, v6 } => {
                write!(f, "no {} pool among [{}]", if *v6 { "IPv6" } else { "IPv4" }, pools.join(", "))
            }
            PoolError::Unavailable { addr, why } => write!(f, "address {addr} cannot be leased: {why}"),
        }
    }
}

/// The key a lease is kept under: the identity's type and value.
pub fn id_key(id: &Identity) -> String {
    format!("{:?}:{}", id.kind, id.value)
}

#[derive(Debug)]
struct Pool {
    cfg: PoolConfig,
    /// Offsets below this have been handed out at some time.
    cursor: u128,
    /// Offsets below `cursor` that are neither online nor offline.
    free: BTreeSet<u128>,
    /// Online leases: offset → (owner, holders).
    online: HashMap<u128, (String, u32)>,
    /// Offline leases: owner → (offset, age stamp); `offline_age` orders them.
    offline: HashMap<String, (u128, u64)>,
    offline_age: BTreeMap<u64, String>,
    stamp: u64,
}

impl Pool {
    fn new(cfg: PoolConfig) -> Pool {
        Pool {
            cfg,
            cursor: 0,
            free: BTreeSet::new(),
            online: HashMap::new(),
            offline: HashMap::new(),
            offline_age: BTreeMap::new(),
            stamp: 0,
        }
    }

    fn addr(&self, off: u128) -> IpAddr {
        from_u128(to_u128(self.cfg.first) + off, self.cfg.is_ipv6())
    }

    fn offset(&self, a: IpAddr) -> Option<u128> {
        self.cfg.contains(a).then(|| to_u128(a) - to_u128(self.cfg.first))
    }

    fn take_offline(&mut self, owner: &str) -> Option<u128> {
        let (off, age) = self.offline.remove(owner)?;
        self.offline_age.remove(&age);
        Some(off)
    }

    fn go_online(&mut self, off: u128, owner: &str) -> IpAddr {
        self.online.entry(off).and_modify(|e| e.1 += 1).or_insert_with(|| (owner.to_string(), 1));
        self.addr(off)
    }

    /// An address for `owner`: `want` when it is this owner's (online or
    /// offline); else its offline lease; else never used; else free; else
    /// the oldest offline lease of another owner.
    fn acquire(&mut self, owner: &str, want: Option<IpAddr>) -> Option<IpAddr> {
        if let Some(off) = want.and_then(|a| self.offset(a)) {
            if self.online.get(&off).is_some_and(|(o, _)| o == owner) {
                return Some(self.go_online(off, owner));
            }
            if self.offline.get(owner).is_some_and(|(o, _)| *o == off) {
                self.take_offline(owner);
                return Some(self.go_online(off, owner));
            }
        }
        if let Some(off) = self.take_offline(owner) {
            return Some(self.go_online(off, owner));
        }
        if self.cursor < self.cfg.size() {
            let off = self.cursor;
            self.cursor += 1;
            return Some(self.go_online(off, owner));
        }
        if let Some(off) = self.free.pop_first() {
            return Some(self.go_online(off, owner));
        }
        let (_, other) = self.offline_age.pop_first()?;
        let (off, _) = self.offline.remove(&other)?;
        Some(self.go_online(off, owner))
    }

    /// A specific address, for `owner`: free, never used, or this owner's.
    fn acquire_exact(&mut self, owner: &str, a: IpAddr) -> Result<IpAddr, String> {
        let off = self.offset(a).ok_or_else(|| format!("not in pool {}", self.cfg.name))?;
        if let Some((o, _)) = self.online.get(&off) {
            if o != owner {
                return Err(format!("already leased to {o}"));
            }
            return Ok(self.go_online(off, owner));
        }
        if let Some(holder) = self.offline.iter().find(|(_, (o, _))| *o == off).map(|(h, _)| h.clone()) {
            if holder != owner {
                return Err(format!("kept for {holder} (its offline lease)"));
            }
            self.take_offline(owner);
            return Ok(self.go_online(off, owner));
        }
        if off >= self.cursor {
            // Never used: mark the offsets skipped as free.
            for o in self.cursor..off {
                self.free.insert(o);
            }
            self.cursor = off + 1;
        } else {
            self.free.remove(&off);
        }
        Ok(self.go_online(off, owner))
    }

    fn release(&mut self, a: IpAddr, owner: &str) -> bool {
        let Some(off) = self.offset(a) else { return false };
        let Some(entry) = self.online.get_mut(&off) else { return false };
        if entry.0 != owner {
            return false;
        }
        entry.1 -= 1;
        if entry.1 > 0 {
            return true;
        }
        self.online.remove(&off);
        // One offline lease per owner: an older one of the same owner is freed.
        if let Some(prev) = self.take_offline(owner) {
            self.free.insert(prev);
        }
        self.stamp += 1;
        self.offline.insert(owner.to_string(), (off, self.stamp));
        self.offline_age.insert(self.stamp, owner.to_string());
        while self.offline.len() > MAX_OFFLINE {
            let Some((_, o)) = self.offline_age.pop_first() else { break };
            if let Some((off, _)) = self.offline.remove(&o) {
                self.free.insert(off);
            }
        }
        true
    }
}

/// A pool's state, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    pub name: String,
    /// `first-last`.
    pub range: String,
    pub size: u128,
    pub online: usize,
    pub offline: usize,
    /// Online leases: address, owner (identity type:value), SAs holding it.
    pub leases: Vec<(IpAddr, String, u32)>,
}

/// Every configured pool and its leases. One per daemon, shared by all
/// engines ([`crate::engine::Engine::set_pools`]).
#[derive(Debug, Default)]
pub struct Pools {
    inner: Mutex<Vec<Pool>>,
}

impl Pools {
    pub fn new(cfgs: Vec<PoolConfig>) -> Pools {
        Pools { inner: Mutex::new(cfgs.into_iter().map(Pool::new).collect()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Pool>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// New pool settings (a reload): a pool whose range is unchanged keeps
    /// its leases (DNS and subnets take the new values); a changed or new
    /// pool starts empty, and leases of a removed or changed pool stay with
    /// their SAs until released (a release finds no pool and is a no-op).
    pub fn reconfigure(&self, cfgs: Vec<PoolConfig>) {
        let mut pools = self.lock();
        let mut old: Vec<Pool> = std::mem::take(&mut *pools);
        for c in cfgs {
            match old.iter().position(|p| p.cfg.name == c.name && p.cfg.first == c.first && p.cfg.last == c.last) {
                Some(i) => {
                    let mut p = old.swap_remove(i);
                    p.cfg = c;
                    pools.push(p);
                }
                None => pools.push(Pool::new(c)),
            }
        }
    }

    /// The configuration of pool `name`.
    pub fn config(&self, name: &str) -> Option<PoolConfig> {
        self.lock().iter().find(|p| p.cfg.name == name).map(|p| p.cfg.clone())
    }

    /// Lease an address of the family `v6` from the first of `names` that
    /// has one for `id` (see the module docs for the order); `want` is the
    /// address the peer asked for, honoured when it is already this identity's.
    pub fn acquire(&self, names: &[String], id: &Identity, v6: bool, want: Option<IpAddr>) -> Result<Lease, PoolError> {
        let owner = id_key(id);
        let mut pools = self.lock();
        let mut size = 0u128;
        let mut any = false;
        // First pass: this identity's own lease in any of the pools.
        for p in pools.iter_mut().filter(|p| names.contains(&p.cfg.name) && p.cfg.is_ipv6() == v6) {
            let mine = want.and_then(|a| p.offset(a)).is_some_and(|o| p.online.get(&o).is_some_and(|(w, _)| *w == owner))
                || p.offline.contains_key(&owner);
            if mine {
                if let Some(addr) = p.acquire(&owner, want) {
                    return Ok(Lease { pool: p.cfg.name.clone(), addr, owner });
                }
            }
        }
        for name in names {
            let Some(p) = pools.iter_mut().find(|p| &p.cfg.name == name && p.cfg.is_ipv6() == v6) else { continue };
            any = true;
            size += p.cfg.size();
            if let Some(addr) = p.acquire(&owner, want) {
                return Ok(Lease { pool: p.cfg.name.clone(), addr, owner });
            }
        }
        if !any {
            return Err(PoolError::NoPool { pools: names.to_vec(), v6 });
        }
        let pools = names.iter().filter(|n| self_has(&pools, n, v6)).cloned().collect();
        Err(PoolError::Exhausted { pools, size })
    }

    /// Lease exactly `addr` to `id` (an address a policy chose): it must lie
    /// in one of `names` and be free or already this identity's.
    pub fn acquire_exact(&self, names: &[String], id: &Identity, addr: IpAddr) -> Result<Lease, PoolError> {
        let owner = id_key(id);
        let mut pools = self.lock();
        let Some(p) = pools.iter_mut().find(|p| names.contains(&p.cfg.name) && p.cfg.contains(addr)) else {
            return Err(PoolError::Unavailable { addr, why: format!("not in the connection's pools [{}]", names.join(", ")) });
        };
        let addr = p.acquire_exact(&owner, addr).map_err(|why| PoolError::Unavailable { addr, why })?;
        Ok(Lease { pool: p.cfg.name.clone(), addr, owner })
    }

    /// One more SA holds `lease` (an IKE rekey's new SA, beside the old
    /// one until it goes): each holder releases it once. False when the
    /// lease is no longer online for its owner.
    pub fn retain(&self, lease: &Lease) -> bool {
        let mut pools = self.lock();
        let Some(p) = pools.iter_mut().find(|p| p.cfg.name == lease.pool) else { return false };
        let Some(off) = p.offset(lease.addr) else { return false };
        match p.online.get_mut(&off) {
            Some((o, n)) if *o == lease.owner => {
                *n += 1;
                true
            }
            _ => false,
        }
    }

    /// Give a lease back (its SA is gone). Returns false when the pool no
    /// longer holds it (reconfigured away, or released twice).
    pub fn release(&self, lease: &Lease) -> bool {
        let mut pools = self.lock();
        pools.iter_mut().find(|p| p.cfg.name == lease.pool).is_some_and(|p| p.release(lease.addr, &lease.owner))
    }

    pub fn status(&self) -> Vec<PoolStatus> {
        self.lock()
            .iter()
            .map(|p| {
                let mut leases: Vec<(IpAddr, String, u32)> = p.online.iter().map(|(o, (w, n))| (p.addr(*o), w.clone(), *n)).collect();
                leases.sort();
                PoolStatus {
                    name: p.cfg.name.clone(),
                    range: p.cfg.range(),
                    size: p.cfg.size(),
                    online: p.online.len(),
                    offline: p.offline.len(),
                    leases,
                }
            })
            .collect()
    }
}

fn self_has(pools: &[Pool], name: &str, v6: bool) -> bool {
    pools.iter().any(|p| p.cfg.name == name && p.cfg.is_ipv6() == v6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_policy_api::IdType;

    fn id(s: &str) -> Identity {
        Identity { kind: IdType::Fqdn, value: s.into() }
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_leaves_out_network_and_broadcast() {
        let p = PoolConfig::new("p", "10.3.0.0/24").unwrap();
        assert_eq!((p.first, p.last, p.size()), (ip("10.3.0.1"), ip("10.3.0.254"), 254));
        let p = PoolConfig::new("p", "10.3.0.4/31").unwrap();
        assert_eq!((p.first, p.last), (ip("10.3.0.4"), ip("10.3.0.5")));
        let p = PoolConfig::new("p", "fd00::/64").unwrap();
        assert_eq!((p.first, p.last), (ip("fd00::1"), ip("fd00::ffff:ffff:ffff:ffff")));
        let p = PoolConfig::new("p", "10.3.0.10 - 10.3.0.12").unwrap();
        assert_eq!(p.size(), 3);
        for bad in ["10.3.0.1/24", "10.3.0.9-10.3.0.1", "10.3.0.1-fd00::1", "10.3.0.0/33", "nonsense", "10.3.0.0"] {
            assert!(PoolConfig::new("p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn leases_are_unique_kept_for_their_identity_and_exhaust() {
        let pools = Pools::new(vec![PoolConfig::new("rw", "10.3.0.1-10.3.0.3").unwrap()]);
        let names = vec!["rw".to_string()];
        let a = pools.acquire(&names, &id("a"), false, None).unwrap();
        let b = pools.acquire(&names, &id("b"), false, None).unwrap();
        let c = pools.acquire(&names, &id("c"), false, None).unwrap();
        let mut got = vec![a.addr, b.addr, c.addr];
        got.dedup();
        assert_eq!(got, vec![ip("10.3.0.1"), ip("10.3.0.2"), ip("10.3.0.3")]);
        let e = pools.acquire(&names, &id("d"), false, None).unwrap_err();
        assert_eq!(e.to_string(), "address pool rw exhausted (3 of 3 addresses leased)");
        assert!(matches!(pools.acquire(&names, &id("d"), true, None), Err(PoolError::NoPool { v6: true, .. })));
        // b leaves and comes back: the same address.
        assert!(pools.release(&b));
        assert!(!pools.release(&b), "a second release is refused");
        let b2 = pools.acquire(&names, &id("b"), false, None).unwrap();
        assert_eq!(b2.addr, b.addr);
        // a leaves; d (new) takes a's offline lease, the oldest.
        assert!(pools.release(&a));
        let d = pools.acquire(&names, &id("d"), false, None).unwrap();
        assert_eq!(d.addr, a.addr);
        let st = &pools.status()[0];
        assert_eq!((st.online, st.offline, st.size), (3, 0, 3));
    }

    #[test]
    fn same_identity_holds_an_address_twice_only_when_asking_for_it() {
        let pools = Pools::new(vec![PoolConfig::new("rw", "10.3.0.0/29").unwrap()]);
        let names = vec!["rw".to_string()];
        let a = pools.acquire(&names, &id("a"), false, None).unwrap();
        // Reauthentication: the new IKE SA asks for the address it has.
        let a2 = pools.acquire(&names, &id("a"), false, Some(a.addr)).unwrap();
        assert_eq!(a2.addr, a.addr);
        // A second device with the same identity that asks for nothing: another address.
        let a3 = pools.acquire(&names, &id("a"), false, None).unwrap();
        assert_ne!(a3.addr, a.addr);
        // Asking for someone else's address does not get it.
        let b = pools.acquire(&names, &id("b"), false, Some(a.addr)).unwrap();
        assert_ne!(b.addr, a.addr);
        assert!(pools.release(&a));
        assert_eq!(pools.status()[0].leases.iter().find(|l| l.0 == a.addr).map(|l| l.2), Some(1), "still held by the new SA");
        assert!(pools.release(&a2));
        assert_eq!(pools.status()[0].offline, 1);
    }

    #[test]
    fn exact_addresses_only_inside_and_free() {
        let pools = Pools::new(vec![PoolConfig::new("rw", "10.3.0.0/24").unwrap()]);
        let names = vec!["rw".to_string()];
        let x = pools.acquire_exact(&names, &id("a"), ip("10.3.0.77")).unwrap();
        assert_eq!(x.addr, ip("10.3.0.77"));
        let e = pools.acquire_exact(&names, &id("b"), ip("10.3.0.77")).unwrap_err();
        assert_eq!(e.to_string(), "address 10.3.0.77 cannot be leased: already leased to Fqdn:a");
        let e = pools.acquire_exact(&names, &id("b"), ip("10.4.0.1")).unwrap_err();
        assert!(e.to_string().contains("not in the connection's pools"), "{e}");
        // Offsets skipped by the exact lease are handed out later, and 77 is not handed out twice.
        let mut seen = std::collections::HashSet::new();
        for i in 0..253 {
            let l = pools.acquire(&names, &id(&format!("n{i}")), false, None).unwrap();
            assert!(seen.insert(l.addr) && l.addr != x.addr, "{} twice", l.addr);
        }
        assert!(pools.acquire(&names, &id("late"), false, None).is_err());
    }

    #[test]
    fn exact_addresses_kept_offline_for_another_are_refused() {
        let pools = Pools::new(vec![PoolConfig::new("rw", "10.3.0.0/24").unwrap()]);
        let names = vec!["rw".to_string()];
        let a = pools.acquire(&names, &id("a"), false, None).unwrap();
        assert!(pools.release(&a));
        let e = pools.acquire_exact(&names, &id("b"), a.addr).unwrap_err();
        assert_eq!(e.to_string(), "address 10.3.0.1 cannot be leased: kept for Fqdn:a (its offline lease)");
        // Its owner gets it back exactly.
        assert_eq!(pools.acquire_exact(&names, &id("a"), a.addr).unwrap().addr, a.addr);
    }

    #[test]
    fn pools_as_a_policy_sees_them() {
        let p = PoolConfig::new("rw6", " fd00:3::/120 ").unwrap().for_policy();
        assert_eq!((p.name.as_str(), p.range.as_str(), p.size), ("rw6", "fd00:3::/120", 255));
        assert_eq!((p.first, p.last, p.family), (ip("fd00:3::1"), ip("fd00:3::ff"), AddressFamily::Ipv6));
        assert_eq!(PoolConfig::new("big", "fd00::/32").unwrap().for_policy().size, u64::MAX);
    }

    #[test]
    fn offline_leases_are_bounded() {
        let pools = Pools::new(vec![PoolConfig::new("big", "fd00::/64").unwrap()]);
        let names = vec!["big".to_string()];
        for i in 0..(MAX_OFFLINE + 10) {
            let l = pools.acquire(&names, &id(&format!("n{i}")), true, None).unwrap();
            pools.release(&l);
        }
        let st = &pools.status()[0];
        assert_eq!((st.online, st.offline), (0, MAX_OFFLINE));
    }

    #[test]
    fn reconfigure_keeps_unchanged_pools() {
        let pools = Pools::new(vec![PoolConfig::new("rw", "10.3.0.0/24").unwrap(), PoolConfig::new("x", "10.4.0.0/24").unwrap()]);
        let names = vec!["rw".to_string(), "x".to_string()];
        let a = pools.acquire(&names, &id("a"), false, None).unwrap();
        let mut rw = PoolConfig::new("rw", "10.3.0.0/24").unwrap();
        rw.dns = vec![ip("10.3.0.53")];
        pools.reconfigure(vec![rw, PoolConfig::new("x", "10.5.0.0/24").unwrap()]);
        assert_eq!(pools.status()[0].online, 1);
        assert_eq!(pools.config("rw").unwrap().dns, vec![ip("10.3.0.53")]);
        assert_eq!(pools.status()[1].range, "10.5.0.1-10.5.0.254");
        assert!(pools.release(&a));
    }
}
