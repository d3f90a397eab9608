//! Per-connection counts of the IKE SAs and Child SAs held, kept as SAs go
//! into and out of the table, so that the `max_ike_sas` / `max_child_sas`
//! checks (on every IKE_SA_INIT, IKE_AUTH and CREATE_CHILD_SA) cost O(1)
//! instead of a walk over every SA (at 10,000 SAs that walk was a tenth of
//! the gateway's time while SAs were coming up).
//!
//! An SA's share is recorded when it goes back into the table
//! (`Engine::put`, `Engine::retime`) and dropped when it is taken out. The
//! counts are an exact mirror of the table as long as every change in
//! place is followed by `retime`; the once-a-second sweep of `timers.rs`
//! recounts from scratch, and the cap checks use the counts only to say
//! "well below the cap" (at the cap they count exactly; see `revoke.rs`).

use std::collections::HashMap;

use crate::event::IkeSaId;

use super::sa::{ChildState, IkeSa, IkeState};

/// What one SA adds to its connection's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Share {
    conn: usize,
    /// Counts against `max_ike_sas`.
    ike: bool,
    /// Live Child SAs, against `max_child_sas`.
    children: usize,
}

#[derive(Default)]
pub(super) struct Tally {
    of: HashMap<IkeSaId, Share>,
    /// Per connection index: (IKE SAs, Child SAs).
    per_conn: Vec<(usize, usize)>,
}

/// Whether an SA holds a place under `max_ike_sas` (as `ike_cap_allows` counts).
pub(super) fn holds_ike_place(s: &IkeSa) -> bool {
    s.candidates.is_empty() && matches!(s.state, IkeState::Established | IkeState::InitSent | IkeState::AuthSent)
}

/// The live Child SAs of an SA (as `child_cap_allows` counts).
pub(super) fn live_children(s: &IkeSa) -> usize {
    s.children.iter().filter(|c| !matches!(c.state, ChildState::Rekeyed | ChildState::Deleting)).count()
}

impl Tally {
    /// Record SA `sa`'s share (`zombie`: it holds no place).
    pub(super) fn set(&mut self, sa: &IkeSa, zombie: bool) {
        let share = if zombie {
            None
        } else {
            Some(Share { conn: sa.conn, ike: holds_ike_place(sa), children: if sa.candidates.is_empty() { live_children(sa) } else { 0 } })
        };
        self.drop_share(sa.id);
        if let Some(s) = share.filter(|s| s.ike || s.children > 0) {
            if self.per_conn.len() <= s.conn {
                self.per_conn.resize(s.conn + 1, (0, 0));
            }
            let c = &mut self.per_conn[s.conn];
            c.0 += s.ike as usize;
            c.1 += s.children;
            self.of.insert(sa.id, s);
        }
    }

    /// Forget SA `id`'s share (it left the table).
    pub(super) fn drop_share(&mut self, id: IkeSaId) {
        if let Some(s) = self.of.remove(&id) {
            let c = &mut self.per_conn[s.conn];
            c.0 -= s.ike as usize;
            c.1 -= s.children;
        }
    }

    /// IKE SAs connection `ci` holds.
    pub(super) fn ike(&self, ci: usize) -> usize {
        self.per_conn.get(ci).map_or(0, |c| c.0)
    }

    /// Child SAs connection `ci` holds.
    pub(super) fn children(&self, ci: usize) -> usize {
        self.per_conn.get(ci).map_or(0, |c| c.1)
    }

    /// Recount from scratch.
    pub(super) fn rebuild<'a>(&mut self, sas: impl Iterator<Item = (&'a IkeSa, bool)>) {
        *self = Tally::default();
        for (sa, zombie) in sas {
            self.set(sa, zombie);
        }
    }
}
