//! Daemon-wide uniqueness of the SPIs we choose.
//!
//! Every engine of a daemon picks its own IKE SPIs and inbound ESP SPIs at
//! random; with a shared [`SpiPool`]
//! ([`Engine::set_spi_pool`](crate::engine::Engine::set_spi_pool)) no two
//! engines ever hold the same one, so tables keyed by our SPIs (IKE
//! dispatch, the inbound SAD) can never be confused between connections,
//! whatever SPIs the peers choose.

use std::collections::HashSet;
use std::sync::Mutex;

/// Our SPIs in use, daemon-wide. Thread-safe; share it in an `Arc`.
#[derive(Debug, Default)]
pub struct SpiPool {
    ike: Mutex<HashSet<u64>>,
    esp: Mutex<HashSet<u32>>,
}

impl SpiPool {
    /// Reserve the IKE SPI `spi`; `false` if it is taken.
    pub fn reserve_ike(&self, spi: u64) -> bool {
        self.ike.lock().unwrap_or_else(|p| p.into_inner()).insert(spi)
    }
    pub fn ike_taken(&self, spi: u64) -> bool {
        self.ike.lock().unwrap_or_else(|p| p.into_inner()).contains(&spi)
    }
    pub fn release_ike(&self, spi: u64) {
        self.ike.lock().unwrap_or_else(|p| p.into_inner()).remove(&spi);
    }
    /// Reserve the inbound ESP SPI `spi`; `false` if it is taken.
    pub fn reserve_esp(&self, spi: u32) -> bool {
        self.esp.lock().unwrap_or_else(|p| p.into_inner()).insert(spi)
    }
    pub fn release_esp(&self, spi: u32) {
        self.esp.lock().unwrap_or_else(|p| p.into_inner()).remove(&spi);
    }
    /// SPIs held now: `(ike, esp)`.
    pub fn len(&self) -> (usize, usize) {
        (self.ike.lock().unwrap_or_else(|p| p.into_inner()).len(), self.esp.lock().unwrap_or_else(|p| p.into_inner()).len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}
