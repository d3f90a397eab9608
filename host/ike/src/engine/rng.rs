//! Deterministic random source seeded by the caller (SHA-256 in counter mode).
//! Reproducible for tests; a caller seeding from the OS RNG gets fresh values.

use sha2::{Digest, Sha256};
use zeroize::Zeroize;

pub struct Drbg {
    key: [u8; 32],
    counter: u64,
    buf: [u8; 32],
    pos: usize,
}

impl Drop for Drbg {
    fn drop(&mut self) {
        self.key.zeroize();
        self.buf.zeroize();
    }
}

impl Drbg {
    pub fn new(seed: [u8; 32]) -> Self {
        Drbg { key: seed, counter: 0, buf: [0; 32], pos: 32 }
    }

    fn refill(&mut self) {
        let mut h = Sha256::new();
        h.update(b"wisp-ike drbg");
        h.update(self.key);
        h.update(self.counter.to_be_bytes());
        self.counter = self.counter.wrapping_add(1);
        self.buf.copy_from_slice(&h.finalize());
        self.pos = 0;
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for b in out.iter_mut() {
            if self.pos == 32 {
                self.refill();
            }
            *b = self.buf[self.pos];
            self.pos += 1;
        }
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_be_bytes(b)
    }

    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        u32::from_be_bytes(b)
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

impl rand_core::RngCore for Drbg {
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
