//! The engine's random source: ChaCha20 ([`rand_chacha::ChaCha20Rng`]), a
//! vetted CSPRNG, seeded by the caller. The engine reseeds it for every new
//! IKE SA ([`Drbg::reseed`]): with fresh entropy when the caller gave it an
//! entropy source (the gateway: the OS RNG), else by ratcheting its own
//! state (tests: reproducible from the 32-byte seed).

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// Fresh entropy for [`Drbg::reseed`] (e.g. 32 bytes from `getrandom`);
/// `None` when none could be had (the generator then ratchets its own state).
pub type EntropySource = Box<dyn FnMut() -> Option<[u8; 32]> + Send>;

pub struct Drbg {
    rng: ChaCha20Rng,
}

impl Drbg {
    pub fn new(seed: [u8; 32]) -> Self {
        Drbg { rng: ChaCha20Rng::from_seed(seed) }
    }

    /// A new key: SHA-256 over 32 bytes of the current stream and `fresh`
    /// (if any). The old key cannot be recovered from the new state.
    pub fn reseed(&mut self, fresh: Option<[u8; 32]>) {
        let mut cur = [0u8; 32];
        self.rng.fill_bytes(&mut cur);
        let mut h = Sha256::new();
        h.update(b"wisp-ike reseed");
        h.update(cur);
        if let Some(mut f) = fresh {
            h.update(f);
            f.zeroize();
        }
        cur.zeroize();
        let mut key: [u8; 32] = h.finalize().into();
        self.rng = ChaCha20Rng::from_seed(key);
        key.zeroize();
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        self.rng.fill_bytes(out)
    }

    pub fn u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    pub fn u32(&mut self) -> u32 {
        self.rng.next_u32()
    }

    pub fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.fill(&mut b);
        b
    }

    pub fn vec(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }

    /// Uniform-ish value in `[0, max]` milliseconds.
    pub fn below_ms(&mut self, max_ms: u64) -> u64 {
        if max_ms == 0 {
            0
        } else {
            self.u64() % (max_ms + 1)
        }
    }
}

impl RngCore for Drbg {
    fn next_u32(&mut self) -> u32 {
        self.u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.fill(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for Drbg {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_reseed_changes_it() {
        let (mut a, mut b) = (Drbg::new([7; 32]), Drbg::new([7; 32]));
        assert_eq!(a.bytes::<32>(), b.bytes::<32>());
        a.reseed(None);
        b.reseed(None);
        assert_eq!(a.u64(), b.u64(), "ratchet without entropy is deterministic");
        a.reseed(Some([1; 32]));
        b.reseed(Some([2; 32]));
        assert_ne!(a.bytes::<32>(), b.bytes::<32>(), "fresh entropy enters the state");
    }
}
