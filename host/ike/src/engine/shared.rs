//! What an engine shares with the rest of a daemon: the admission state
//! (half-open IKE SAs, [`crate::admission`]), the SPI pool
//! ([`crate::spi_pool`]) and the entropy its generator is reseeded from.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::admission::Admission;
use crate::codec::Header;
use crate::spi_pool::SpiPool;

use super::rng::EntropySource;
use super::sa::IkeState;
use super::Engine;
use crate::event::IkeSaId;

/// Our inbound ESP SPIs held by this engine, mirrored into the daemon's pool.
#[derive(Default)]
pub(super) struct EspSpis {
    set: HashSet<u32>,
    pool: Option<Arc<SpiPool>>,
}

impl EspSpis {
    /// Take `spi`; `false` if this engine or (with a pool) another one holds it.
    pub(super) fn insert(&mut self, spi: u32) -> bool {
        if self.set.contains(&spi) || self.pool.as_ref().is_some_and(|p| !p.reserve_esp(spi)) {
            return false;
        }
        self.set.insert(spi)
    }

    pub(super) fn remove(&mut self, spi: &u32) -> bool {
        let had = self.set.remove(spi);
        if had {
            if let Some(p) = &self.pool {
                p.release_esp(*spi);
            }
        }
        had
    }
}

/// At most this many SPI changes wait for [`crate::engine::Engine::take_spi_changes`];
/// past it the next call hands out the whole set instead.
pub const SPI_LOG_MAX: usize = 4096;

/// Our IKE SPIs → IKE SA, mirrored into the daemon's pool.
#[derive(Default)]
pub(super) struct IkeSpis {
    pub(super) map: HashMap<u64, IkeSaId>,
    pool: Option<Arc<SpiPool>>,
    /// Bumped whenever an SPI comes or goes.
    pub(super) generation: u64,
    /// The changes since the last `take_spi_changes` (SPI, its SA or `None`
    /// when it went); `None` until the first call and after an overflow,
    /// which both mean "hand out the whole set".
    pub(super) log: Option<Vec<(u64, Option<IkeSaId>)>>,
}

impl IkeSpis {
    pub(super) fn get(&self, spi: &u64) -> Option<&IkeSaId> {
        self.map.get(spi)
    }

    /// Whether `spi` is free here and in the daemon's pool.
    pub(super) fn is_free(&self, spi: u64) -> bool {
        !self.map.contains_key(&spi) && !self.pool.as_ref().is_some_and(|p| p.ike_taken(spi))
    }

    pub(super) fn insert(&mut self, spi: u64, id: IkeSaId) -> Option<IkeSaId> {
        if let Some(p) = &self.pool {
            p.reserve_ike(spi);
        }
        self.generation += 1;
        self.note(spi, Some(id));
        self.map.insert(spi, id)
    }

    pub(super) fn remove(&mut self, spi: &u64) -> Option<IkeSaId> {
        let r = self.map.remove(spi);
        if r.is_some() {
            self.generation += 1;
            self.note(*spi, None);
            if let Some(p) = &self.pool {
                p.release_ike(*spi);
            }
        }
        r
    }

    fn note(&mut self, spi: u64, id: Option<IkeSaId>) {
        if let Some(log) = &mut self.log {
            if log.len() >= SPI_LOG_MAX {
                self.log = None;
            } else {
                log.push((spi, id));
            }
        }
    }
}

/// Daemon-wide pieces an engine may be given.
#[derive(Default)]
pub(super) struct SharedState {
    pub(super) admission: Option<Arc<Mutex<Admission>>>,
    /// Half-open IKE SAs of this engine counted in `admission`, with the
    /// source address they were counted for.
    pub(super) half_open: HashMap<IkeSaId, IpAddr>,
    pub(super) entropy: Option<EntropySource>,
}

fn lock(a: &Mutex<Admission>) -> std::sync::MutexGuard<'_, Admission> {
    a.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    /// Count this engine's half-open IKE SAs in a daemon-wide [`Admission`]
    /// and hold its caps: a new IKE_SA_INIT over a cap is dropped before any
    /// policy call or DH. The caller still consults
    /// [`Admission::check_init`] (cookies) before handing a request in.
    /// The engine's own cookie check ([`crate::config::Config::cookie_threshold`])
    /// keeps working; set it to `usize::MAX` when the admission does it.
    pub fn set_admission(&mut self, admission: Arc<Mutex<Admission>>) {
        self.release_all_half_open();
        self.shared.admission = Some(admission);
    }

    /// Pick our SPIs so that they are unique across every engine sharing
    /// `pool`. Call before the engine holds any SA.
    pub fn set_spi_pool(&mut self, pool: Arc<SpiPool>) {
        for spi in self.by_spi.map.keys() {
            pool.reserve_ike(*spi);
        }
        for spi in &self.spis_in.set {
            pool.reserve_esp(*spi);
        }
        self.by_spi.pool = Some(pool.clone());
        self.spis_in.pool = Some(pool);
    }

    /// Fresh entropy for every new IKE SA: the generator is reseeded from
    /// `source` whenever the engine allocates a new IKE SPI (initiator,
    /// responder, IKE rekey). Without one it ratchets its own state.
    pub fn set_entropy(&mut self, source: EntropySource) {
        self.shared.entropy = Some(source);
        self.reseed();
    }

    pub(super) fn reseed(&mut self) {
        let fresh = self.shared.entropy.as_mut().and_then(|f| f());
        self.rng.reseed(fresh);
    }

    /// An IKE_SA_INIT request: with an admission, only within its half-open
    /// caps, and counted there when it leaves a half-open SA behind.
    pub(super) fn init_request(&mut self, now: Duration, local: SocketAddr, remote: SocketAddr, bytes: &[u8], h: &Header) {
        let Some(adm) = self.shared.admission.clone() else {
            self.responder_init(now, local, remote, bytes, h);
            return;
        };
        let key = (h.spi_i, remote);
        if self.half_open_index.contains_key(&key) {
            // A retransmission: answered from the cache, nothing new.
            self.responder_init(now, local, remote, bytes, h);
            return;
        }
        if !lock(&adm).half_open_started(remote.ip()) {
            return;
        }
        self.responder_init(now, local, remote, bytes, h);
        match self.half_open_index.get(&key) {
            Some(&id) if self.sas.get(&id).is_some_and(|s| s.state == IkeState::InitResponded) => {
                self.shared.half_open.insert(id, remote.ip());
            }
            _ => lock(&adm).half_open_finished(remote.ip()),
        }
    }

    /// The SA `id` is no longer half-open (or gone): uncount it.
    pub(super) fn settle_half_open(&mut self, id: IkeSaId) {
        if !self.shared.half_open.contains_key(&id) {
            return;
        }
        if self.sas.get(&id).is_some_and(|s| s.state == IkeState::InitResponded && !self.zombies.contains_key(&id)) {
            return;
        }
        if let Some(ip) = self.shared.half_open.remove(&id) {
            if let Some(a) = &self.shared.admission {
                lock(a).half_open_finished(ip);
            }
        }
    }

    /// The SA `id` is being removed: uncount it if it was half-open.
    pub(super) fn forget_half_open(&mut self, id: IkeSaId) {
        if let Some(ip) = self.shared.half_open.remove(&id) {
            if let Some(a) = &self.shared.admission {
                lock(a).half_open_finished(ip);
            }
        }
    }

    fn release_all_half_open(&mut self) {
        if let Some(a) = &self.shared.admission {
            let mut a = lock(a);
            for (_, ip) in self.shared.half_open.drain() {
                a.half_open_finished(ip);
            }
        }
        self.shared.half_open.clear();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.release_all_half_open();
        for sa in self.sas.values_mut() {
            if let Some(v) = sa.vip.take() {
                for l in &v.leases {
                    self.pools.release(l);
                }
            }
        }
        let ike: Vec<u64> = self.by_spi.map.keys().copied().collect();
        for s in ike {
            self.by_spi.remove(&s);
        }
        let esp: Vec<u32> = self.spis_in.set.iter().copied().collect();
        for s in esp {
            self.spis_in.remove(&s);
        }
    }
}
