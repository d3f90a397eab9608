//! The IKE SAs' next deadlines, indexed: `poll_timeout` reads the earliest in
//! O(log n) and `handle_timeout` visits only the SAs that are due, instead of
//! computing every SA's deadline on every call (at 10,000 SAs that scan was a
//! quarter of the gateway's time).
//!
//! An SA's entry is set when it goes back into the table (`Engine::put`) and
//! dropped when it is taken out; the few places that change an SA in place
//! call `Engine::retime`. As a safety net every SA is looked at once per
//! [`SWEEP`] as well, so an entry that went stale can delay a timer by at
//! most that long.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::event::IkeSaId;

use super::Engine;

/// Every SA's deadline is recomputed at least this often.
pub const SWEEP: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Timers {
    by_due: BTreeSet<(Duration, IkeSaId)>,
    of: HashMap<IkeSaId, Duration>,
    /// When every SA is looked at next.
    pub next_sweep: Duration,
}

impl Timers {
    pub(super) fn set(&mut self, id: IkeSaId, due: Option<Duration>) {
        if let Some(old) = self.of.remove(&id) {
            self.by_due.remove(&(old, id));
        }
        if let Some(d) = due {
            self.of.insert(id, d);
            self.by_due.insert((d, id));
        }
    }

    pub(super) fn first(&self) -> Option<Duration> {
        self.by_due.first().map(|(d, _)| *d)
    }

    /// SAs whose indexed deadline is `now` or earlier.
    pub(super) fn due(&self, now: Duration) -> Vec<IkeSaId> {
        self.by_due.range(..=(now, IkeSaId(u64::MAX))).map(|(_, id)| *id).collect()
    }
}

impl Engine {
    /// Recompute the indexed deadline of SA `id` (after changing it in place).
    /// Its share in the per-connection counts is recounted too.
    pub(super) fn retime(&mut self, id: IkeSaId) {
        let due = self.sas.get(&id).and_then(|sa| self.sa_deadline(sa));
        self.timers.set(id, due);
        match self.sas.get(&id) {
            Some(sa) => self.tally.set(sa, self.zombies.contains_key(&id)),
            None => self.tally.drop_share(id),
        }
    }
}
