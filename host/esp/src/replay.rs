//! Anti-replay window, RFC 6479 style: a ring of u64 words indexed by the
//! sequence number's bits, cleared a word at a time as the window slides.

/// Words in the ring bitmap.
const WORDS: usize = 32;
/// Bits in the ring.
const BITS: u64 = (WORDS as u64) * 64;
/// Window size in packets: one word is kept spare so the window never
/// aliases a word still being cleared (RFC 6479 §2).
pub const REPLAY_WINDOW: u64 = BITS - 64;

/// Anti-replay window over 64-bit sequence numbers (after ESN inference).
#[derive(Clone)]
pub struct ReplayWindow {
    top: u64,
    bitmap: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow").field("top", &self.top).finish()
    }
}

impl ReplayWindow {
    /// An empty window (nothing received; the first valid sequence number is 1).
    pub const fn new() -> Self {
        ReplayWindow { top: 0, bitmap: [0; WORDS] }
    }

    /// Highest sequence number accepted so far (0 = none).
    pub fn top(&self) -> u64 {
        self.top
    }

    #[inline]
    fn pos(seq: u64) -> (usize, u64) {
        let bit = seq % BITS;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    /// Would `seq` be accepted? (Does not change the window.)
    #[inline]
    pub fn check(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            return true;
        }
        if self.top - seq >= REPLAY_WINDOW {
            return false;
        }
        let (w, m) = Self::pos(seq);
        self.bitmap[w] & m == 0
    }

    /// Mark `seq` as received. Returns false (and changes nothing) if it
    /// would not pass [`check`](Self::check).
    #[inline]
    pub fn update(&mut self, seq: u64) -> bool {
        if !self.check(seq) {
            return false;
        }
        if seq > self.top {
            let cur = self.top / 64;
            let new = seq / 64;
            let n = (new - cur).min(WORDS as u64);
            for i in 1..=n {
                self.bitmap[((cur + i) % WORDS as u64) as usize] = 0;
            }
            self.top = seq;
        }
        let (w, m) = Self::pos(seq);
        self.bitmap[w] |= m;
        true
    }

    /// Infer the full 64-bit sequence number from its low 32 bits
    /// (RFC 4303 Appendix A2.2), relative to this window.
    pub fn infer_esn(&self, seq_lo: u32) -> u64 {
        let w = REPLAY_WINDOW as u32;
        let tl = self.top as u32;
        let th = (self.top >> 32) as u32;
        let hi = if tl >= w - 1 {
            if seq_lo >= tl - (w - 1) {
                th
            } else {
                // Ahead, in the next 2^32 block. At the very end of the
                // 64-bit space there is no next block: keep th (the packet
                // then falls left of the window or fails the ICV).
                th.checked_add(1).unwrap_or(th)
            }
        } else if seq_lo >= tl.wrapping_sub(w - 1) {
            // In the previous block's tail; in block 0 there is none.
            th.checked_sub(1).unwrap_or(th)
        } else {
            th
        };
        ((hi as u64) << 32) | seq_lo as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_never_valid() {
        let mut w = ReplayWindow::new();
        assert!(!w.check(0));
        assert!(!w.update(0));
    }

    #[test]
    fn in_order_and_duplicates() {
        let mut w = ReplayWindow::new();
        for s in 1..5000u64 {
            assert!(w.update(s), "{s}");
            assert!(!w.update(s), "dup {s}");
        }
    }

    #[test]
    fn window_edges() {
        let mut w = ReplayWindow::new();
        let top = 10_000u64;
        assert!(w.update(top));
        // Oldest still inside the window.
        let oldest = top - (REPLAY_WINDOW - 1);
        assert!(w.check(oldest));
        assert!(!w.check(oldest - 1), "just left of the window");
        assert!(w.update(oldest));
        assert!(!w.update(oldest));
        // Everything between is fresh exactly once.
        for s in oldest + 1..top {
            assert!(w.update(s), "{s}");
        }
        for s in oldest..=top {
            assert!(!w.check(s), "{s}");
        }
    }

    #[test]
    fn big_jump_clears_old_bits() {
        let mut w = ReplayWindow::new();
        for s in 1..=3000 {
            w.update(s);
        }
        // Jump far ahead: all old bits must be gone, in-window slots fresh.
        let top = 3000 + 10 * BITS + 7;
        assert!(w.update(top));
        for s in top - (REPLAY_WINDOW - 1)..top {
            assert!(w.check(s), "{s}");
        }
        // Jump by exactly one ring: the aliased slot must be fresh again.
        let mut w = ReplayWindow::new();
        assert!(w.update(100));
        assert!(w.update(100 + BITS));
        assert!(!w.check(100));
        assert!(w.check(100 + BITS - 1));
    }

    #[test]
    fn reorder_within_window() {
        let mut w = ReplayWindow::new();
        let mut seqs: Vec<u64> = (1..=1024).collect();
        // Deterministic shuffle.
        let mut x = 12345u64;
        for i in (1..seqs.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            seqs.swap(i, (x >> 33) as usize % (i + 1));
        }
        for s in &seqs {
            assert!(w.update(*s));
        }
        for s in &seqs {
            assert!(!w.check(*s));
        }
    }

    #[test]
    fn esn_inference() {
        let mut w = ReplayWindow::new();
        // Early: block 0, no previous block.
        assert_eq!(w.infer_esn(5), 5);
        assert_eq!(w.infer_esn(u32::MAX), u32::MAX as u64);
        // Top near the end of block 0.
        w.update(0xFFFF_FFF0);
        assert_eq!(w.infer_esn(0xFFFF_FFF5), 0xFFFF_FFF5);
        assert_eq!(w.infer_esn(3), (1u64 << 32) | 3, "wrapped ahead");
        assert_eq!(w.infer_esn(0xFFFF_FFF0 - 100), 0xFFFF_FFF0 - 100);
        // Top just past the boundary: late packets from block 0.
        w.update((1u64 << 32) | 2);
        assert_eq!(w.infer_esn(0xFFFF_FFFE), 0xFFFF_FFFE);
        assert_eq!(w.infer_esn(1), (1u64 << 32) | 1);
        assert_eq!(w.infer_esn(1000), (1u64 << 32) | 1000);
    }
}
