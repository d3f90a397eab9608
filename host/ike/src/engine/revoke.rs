//! Revocation and caps: re-checking live SAs against the policy in charge
//! (after a reload), expiring IKE SAs left behind by a rekey, and the
//! per-connection caps on IKE SAs, Child SAs and traffic selectors.

use std::time::Duration;

use wisp_policy_api::{PolicyError, SelectorRequest, TrafficSelector};

use crate::codec::{self, ExchangeType, Payload, ProtocolId};
use crate::event::*;

use super::sa::*;
use super::*;

/// What [`Engine::recheck`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recheck {
    /// Established IKE SAs re-authorized.
    pub ike_checked: usize,
    /// Child SAs whose selectors were re-checked.
    pub children_checked: usize,
    /// IKE SAs the policy now refuses (deleted with all their Child SAs).
    pub ike_revoked: Vec<IkeSaId>,
    /// Child SAs (inbound SPI) the policy now refuses, in IKE SAs that stay.
    pub children_revoked: Vec<u32>,
    /// Checks the policy could not decide (trap, deadline, memory cap): the
    /// SA is kept (a broken plugin never stops a live SA) and a
    /// [`Event::Failure`] says why.
    pub undecided: usize,
    /// Checks whose answer is not in yet (an asynchronous policy): the SA is
    /// kept for now and checked again by [`Engine::policy_ready`].
    pub deferred: usize,
}

/// The answer of one re-check.
enum Verdict {
    Allowed,
    /// Refused (or an invalid answer): the SA goes.
    Refused(String),
    /// The policy failed to decide: the SA stays.
    Undecided(String),
    /// Not decided yet: asked again once answers are in.
    Deferred,
}

fn verdict(r: Result<(), PolicyError>, what: impl FnOnce(&PolicyError) -> String) -> Verdict {
    match r {
        Ok(()) => Verdict::Allowed,
        Err(e @ PolicyError::Refused { .. }) => Verdict::Refused(what(&e)),
        Err(e @ PolicyError::Failed { .. }) => Verdict::Undecided(what(&e)),
        Err(PolicyError::Deferred { .. }) => Verdict::Deferred,
    }
}

/// True when every selector of `installed` lies inside one of `allowed`.
fn covered(installed: &[TrafficSelector], allowed: &[TrafficSelector]) -> bool {
    installed.iter().all(|t| allowed.iter().any(|a| t.is_subset_of(a)))
}

impl Engine {
    /// Re-check every established IKE SA against the policy in charge (after a
    /// plugin or config reload): the peer is authorized again with what it
    /// authenticated with, and every Child SA's installed selectors must still
    /// be allowed by `narrow-selectors`. What is now refused goes down at once
    /// (its `ChildSaDown` events come out of this call, so the caller can
    /// remove it from the data plane before the peer answers) with reason
    /// [`DownReason::Revoked`]; the DELETE to the peer follows (retransmitted
    /// as usual), and the IKE SA's `IkeSaDown` when the peer answered it.
    pub fn recheck(&mut self, now: Duration) -> Recheck {
        let mut out = Recheck::default();
        let ids: Vec<IkeSaId> =
            self.sas.values().filter(|s| s.state == IkeState::Established && !self.zombies.contains_key(&s.id)).map(|s| s.id).collect();
        for id in ids {
            let Ok(mut sa) = self.take(id) else { continue };
            out.ike_checked += 1;
            match self.recheck_authorization(&sa) {
                Verdict::Allowed => {}
                Verdict::Refused(reason) => {
                    self.revoke_ike(now, &mut sa, reason);
                    out.ike_revoked.push(id);
                    self.put(sa);
                    continue;
                }
                Verdict::Undecided(reason) => {
                    out.undecided += 1;
                    self.undecided(&sa, reason);
                }
                Verdict::Deferred => {
                    out.deferred += 1;
                    self.recheck_waits();
                    self.put(sa);
                    continue;
                }
            }
            let mut revoked = Vec::new();
            let mut undecided = Vec::new();
            let mut deferred = 0;
            for c in sa.children.iter().filter(|c| matches!(c.state, ChildState::Installed | ChildState::Rekeying)) {
                out.children_checked += 1;
                match self.reselect(&sa, c) {
                    Verdict::Allowed => {}
                    Verdict::Refused(reason) => revoked.push((c.spi_in, reason)),
                    Verdict::Undecided(reason) => undecided.push(reason),
                    Verdict::Deferred => deferred += 1,
                }
            }
            out.undecided += undecided.len();
            if deferred > 0 {
                out.deferred += deferred;
                self.recheck_waits();
            }
            for reason in undecided {
                self.undecided(&sa, reason);
            }
            if !revoked.is_empty() {
                let spis: Vec<u32> = revoked.iter().map(|(s, _)| *s).collect();
                for (spi, reason) in revoked {
                    self.remove_child_now(&mut sa, spi, DownReason::Revoked(reason));
                }
                self.abandon_rekeys_of(&mut sa, &spis);
                sa.tasks.retain(|t| !matches!(t, Task::RekeyChild(s) | Task::DeleteChild(s) if spis.contains(s)));
                sa.tasks.push_front(Task::DeleteRemoved(spis.clone()));
                out.children_revoked.extend(spis);
                self.kick(now, &mut sa);
            }
            self.put(sa);
        }
        out
    }

    fn undecided(&mut self, sa: &IkeSa, reason: String) {
        let remote = sa.remote;
        self.failure(Some(sa), remote, None, Side::Local, Exchange::Informational, FailureReason::RecheckUndecided { why: reason }, None);
    }

    /// `authorize` again with what the peer authenticated with.
    fn recheck_authorization(&self, sa: &IkeSa) -> Verdict {
        let Some(auth) = &sa.auth else {
            // Established without a recorded authentication cannot happen;
            // refuse if it ever does.
            return Verdict::Refused("no record of how the peer authenticated".into());
        };
        let mut ctx = self.ctx(sa, sa.conn, sa.initiator);
        ctx.trigger = wisp_policy_api::DecisionTrigger::Recheck;
        verdict(self.policy.authorize(&ctx, auth), |e| format!("peer {} not authorized: {}", auth.peer_identity, policy_reason(e)))
    }

    /// `narrow-selectors` on the installed selectors of `c`: the answer must
    /// still contain them.
    fn reselect(&self, sa: &IkeSa, c: &Child) -> Verdict {
        let conn = &self.config.connections[sa.conn];
        let (remote_configured, local_configured) = match conn.child(&c.name) {
            Some(t) => (self.remote_ts_for(sa, &t.remote_ts), self.local_ts_for(sa, &t.local_ts)),
            None => (c.remote_ts.clone(), c.local_ts.clone()),
        };
        let req = SelectorRequest {
            remote_proposed: c.remote_ts.clone(),
            local_proposed: c.local_ts.clone(),
            remote_configured,
            local_configured,
        };
        let mut ctx = self.ctx(sa, sa.conn, sa.initiator);
        ctx.trigger = wisp_policy_api::DecisionTrigger::Recheck;
        match self.policy.narrow_selectors(&ctx, &req) {
            Ok(pair) if covered(&c.remote_ts, &pair.remote) && covered(&c.local_ts, &pair.local) => Verdict::Allowed,
            Ok(pair) => Verdict::Refused(format!(
                "child {} selectors {} === {} no longer allowed (policy {} narrows them to {} === {})",
                c.name,
                crate::native_policy::ts_list(&c.local_ts),
                crate::native_policy::ts_list(&c.remote_ts),
                self.policy.describe(),
                crate::native_policy::ts_list(&pair.local),
                crate::native_policy::ts_list(&pair.remote),
            )),
            Err(e) => verdict(Err(e), |e| format!("child {}: {}", c.name, policy_reason(e))),
        }
    }

    /// Take `sa` down for `reason`: its Child SAs at once, then the DELETE.
    fn revoke_ike(&mut self, now: Duration, sa: &mut IkeSa, reason: String) {
        let spis: Vec<u32> = sa.children.iter().map(|c| c.spi_in).collect();
        for spi in spis {
            self.remove_child_now(sa, spi, DownReason::Revoked(reason.clone()));
        }
        sa.delete_reason = Some(Box::new(DownReason::Revoked(reason)));
        sa.tasks.clear();
        sa.tasks.push_front(Task::DeleteIke);
        // A DELETE supersedes whatever request is outstanding.
        if let Some(o) = &sa.outstanding {
            if let Pending::CreateChild(n) = &o.pending {
                self.spis_in.remove(&n.spi_in);
            }
            if !matches!(o.pending, Pending::DeleteIke) {
                sa.outstanding = None;
            }
        }
        self.kick(now, sa);
    }

    /// Remove a Child SA from `sa` now and report it down.
    fn remove_child_now(&mut self, sa: &mut IkeSa, spi_in: u32, reason: DownReason) {
        let Some(i) = sa.child_idx(spi_in) else {
            return;
        };
        let c = sa.children.remove(i);
        self.child_gone(sa, c, reason);
    }

    /// Our outstanding rekey of a Child SA that was just revoked must not
    /// install its successor: its answer is then treated as an empty DELETE
    /// answer, and the SA the peer created for it is named in our DELETE.
    fn abandon_rekeys_of(&mut self, sa: &mut IkeSa, spis: &[u32]) {
        let Some(o) = &mut sa.outstanding else { return };
        let Pending::CreateChild(n) = &o.pending else {
            return;
        };
        if !n.rekey_of.is_some_and(|s| spis.contains(&s)) {
            return;
        }
        let new_spi = n.spi_in;
        self.spis_in.remove(&new_spi);
        o.pending = Pending::DeleteChildren(Vec::new());
        sa.tasks.push_front(Task::DeleteRemoved(vec![new_spi]));
    }

    /// Send the DELETE for Child SAs already removed locally.
    pub(super) fn send_delete_removed(&mut self, now: Duration, sa: &mut IkeSa, spis: Vec<u32>) {
        let p = vec![Payload::Delete(codec::DeletePayload {
            protocol: ProtocolId::ESP,
            spi_size: 4,
            spis: spis.iter().map(|s| s.to_be_bytes().to_vec()).collect(),
        })];
        self.send_request(now, sa, ExchangeType::INFORMATIONAL, p, Pending::DeleteChildren(Vec::new()));
    }

    /// A rekeyed IKE SA whose grace period is over (the peer never deleted it,
    /// or our DELETE got lost).
    pub(super) fn rekeyed_expired(&self, now: Duration, sa: &IkeSa) -> bool {
        sa.rekeyed_at.is_some_and(|t| t + self.config.rekeyed_grace <= now)
    }

    /// Whether connection `ci` may hold one more established IKE SA besides
    /// `sa` (those an INITIAL_CONTACT from the same peer replaces excepted).
    pub(super) fn ike_cap_allows(&self, sa: &IkeSa, ci: usize, initial_contact: bool) -> Result<(), String> {
        let conn = &self.config.connections[ci];
        // The tally counts every SA the scan below counts, and those it
        // leaves out (this SA, ones replaced by INITIAL_CONTACT): below the
        // cap by the tally is below the cap. At the cap the scan decides.
        if self.tally.ike(ci) < conn.caps.max_ike_sas {
            return Ok(());
        }
        let held = self
            .sas
            .values()
            .filter(|s| s.id != sa.id && s.conn == ci && s.candidates.is_empty() && !self.zombies.contains_key(&s.id))
            .filter(|s| matches!(s.state, IkeState::Established | IkeState::InitSent | IkeState::AuthSent))
            .filter(|s| !(initial_contact && s.state == IkeState::Established && s.remote_id == sa.remote_id))
            .count();
        if held >= conn.caps.max_ike_sas {
            return Err(format!("connection {} already holds {held} IKE SAs (max_ike_sas = {})", conn.name, conn.caps.max_ike_sas));
        }
        Ok(())
    }

    /// Whether connection `ci` may hold one more Child SA.
    pub(super) fn child_cap_allows(&self, ci: usize, extra_sa: Option<&IkeSa>) -> Result<(), String> {
        let conn = &self.config.connections[ci];
        let live = tally::live_children;
        let extra = extra_sa.filter(|s| s.conn == ci).map(live).unwrap_or(0);
        // The tally is the scan below kept up to date (checked against a
        // recount in debug builds); at the cap the scan decides.
        if self.tally.children(ci) + extra < conn.caps.max_child_sas {
            return Ok(());
        }
        let held: usize = self.sas.values().filter(|s| s.conn == ci && s.candidates.is_empty()).map(|s| live(s)).sum::<usize>() + extra;
        if held >= conn.caps.max_child_sas {
            return Err(format!("connection {} already holds {held} Child SAs (max_child_sas = {})", conn.name, conn.caps.max_child_sas));
        }
        Ok(())
    }

    /// Whether `n` traffic selectors on the `side` of a Child SA of connection
    /// `ci` are within its cap.
    pub(super) fn selector_cap_allows(&self, ci: usize, side: &str, n: usize) -> Result<(), String> {
        let conn = &self.config.connections[ci];
        if n > conn.caps.max_selectors {
            return Err(format!(
                "{n} {side} traffic selectors, connection {} allows {} (max_selectors)",
                conn.name, conn.caps.max_selectors
            ));
        }
        Ok(())
    }
}
