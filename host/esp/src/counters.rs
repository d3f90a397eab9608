//! Per-SA counters (atomics, relaxed: they are statistics, not synchronisation).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Sequence number already seen or left of the replay window.
    Replay,
    /// ICV verification failed.
    Auth,
    /// Too short, bad length, bad padding, wrong SPI.
    Malformed,
    /// The decrypted inner packet is outside the SA's traffic selectors
    /// (counted by the dataplane through [`Counters::count_drop`]).
    Policy,
    /// The SA is past a hard limit (packets, bytes or sequence numbers).
    Expired,
}

impl DropReason {
    /// All reasons, for iteration.
    pub const ALL: [DropReason; 5] = [DropReason::Replay, DropReason::Auth, DropReason::Malformed, DropReason::Policy, DropReason::Expired];
    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Replay => "replay",
            DropReason::Auth => "auth",
            DropReason::Malformed => "malformed",
            DropReason::Policy => "policy",
            DropReason::Expired => "expired",
        }
    }
}

/// Live counters of one SA.
#[derive(Debug, Default)]
pub struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
    dummy: AtomicU64,
    drops: [AtomicU64; 5],
}

/// A copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Packets sealed (outbound) or accepted (inbound), dummies excluded.
    pub packets: u64,
    /// Inner (plaintext) bytes of those packets.
    pub bytes: u64,
    /// Dummy packets (next header 59) received and dropped.
    pub dummy: u64,
    /// Drops by reason.
    pub drop_replay: u64,
    /// ICV failures.
    pub drop_auth: u64,
    /// Malformed packets.
    pub drop_malformed: u64,
    /// Inner packets outside the selectors.
    pub drop_policy: u64,
    /// Past a hard limit.
    pub drop_expired: u64,
}

impl CounterSnapshot {
    /// Drops for one reason.
    pub fn drops(&self, r: DropReason) -> u64 {
        match r {
            DropReason::Replay => self.drop_replay,
            DropReason::Auth => self.drop_auth,
            DropReason::Malformed => self.drop_malformed,
            DropReason::Policy => self.drop_policy,
            DropReason::Expired => self.drop_expired,
        }
    }
    /// All drops.
    pub fn total_drops(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.drops(*r)).sum()
    }
}

impl Counters {
    #[inline]
    pub(crate) fn count_ok(&self, bytes: usize) {
        self.packets.fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes as u64, Relaxed);
    }
    #[inline]
    pub(crate) fn count_dummy(&self) {
        self.dummy.fetch_add(1, Relaxed);
    }
    /// Count a drop (the dataplane uses this for [`DropReason::Policy`]).
    #[inline]
    pub fn count_drop(&self, r: DropReason) {
        let i = match r {
            DropReason::Replay => 0,
            DropReason::Auth => 1,
            DropReason::Malformed => 2,
            DropReason::Policy => 3,
            DropReason::Expired => 4,
        };
        self.drops[i].fetch_add(1, Relaxed);
    }
    /// Packets counted so far.
    #[inline]
    pub fn packets(&self) -> u64 {
        self.packets.load(Relaxed)
    }
    /// Bytes counted so far.
    #[inline]
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }
    /// Copy the counters.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            packets: self.packets.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            dummy: self.dummy.load(Relaxed),
            drop_replay: self.drops[0].load(Relaxed),
            drop_auth: self.drops[1].load(Relaxed),
            drop_malformed: self.drops[2].load(Relaxed),
            drop_policy: self.drops[3].load(Relaxed),
            drop_expired: self.drops[4].load(Relaxed),
        }
    }
}
