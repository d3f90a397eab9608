//! Reauthentication, make-before-break (RFC 7296 2.8.3).
//!
//! [`Engine::reauth_ike`] (or `reauth_time`) builds a new IKE SA to the
//! same peer with IKE_SA_INIT and IKE_AUTH (credentials checked again, with
//! the configuration in effect now), carrying the first child in IKE_AUTH
//! and the others in CREATE_CHILD_SA. No INITIAL_CONTACT is sent (the old
//! SA is still up), so the peer keeps both. Each new child is reported as
//! [`Event::ChildSaRekeyed`] of the old child with its name: the caller
//! sends with the new SA at once and keeps accepting the old one. Once the
//! new SA holds every child it could bring, the old IKE SA is deleted; its
//! children go down with [`DownReason::Rekeyed`]. A reauthentication that
//! fails leaves the old SA as it was and is tried again a minute later.

use std::time::Duration;

use crate::event::{DownReason, Event, Exchange, FailureReason, IkeSaId, Side};

use super::sa::{ChildState, IkeState, Task};
use super::{Engine, EngineError};

/// A failed reauthentication is tried again after this long.
const REAUTH_RETRY: Duration = Duration::from_secs(60);

impl Engine {
    /// Reauthenticate the established IKE SA `ike`; returns the new SA.
    /// Asking again while one is under way returns the one under way.
    pub fn reauth_ike(&mut self, now: Duration, ike: IkeSaId) -> Result<IkeSaId, EngineError> {
        self.tick(now);
        let old = self.sas.get(&ike).filter(|_| !self.zombies.contains_key(&ike)).ok_or(EngineError::UnknownIkeSa(ike))?;
        if old.state != IkeState::Established {
            return Err(EngineError::NotEstablished(ike));
        }
        if let Some(n) = old.reauth_by.filter(|n| self.sas.contains_key(n)) {
            return Ok(n);
        }
        let ci = old.conn;
        let conn = &self.config.connections[ci];
        let mut names: Vec<String> = Vec::new();
        for c in old.children.iter().filter(|c| matches!(c.state, ChildState::Installed | ChildState::Rekeying)) {
            if !names.contains(&c.name) && conn.child(&c.name).is_some() {
                names.push(c.name.clone());
            }
        }
        let remote_ip = old.remote.ip();
        let mut names = names.into_iter();
        let new = self.initiate_ike_to(now, ci, names.next(), remote_ip)?;
        if let Some(sa) = self.sas.get_mut(&new) {
            sa.reauth_of = Some(ike);
            sa.tasks.extend(names.map(Task::CreateChild));
        }
        if let Some(o) = self.sas.get_mut(&ike) {
            o.reauth_by = Some(new);
        }
        self.retime(ike);
        self.reauth_active = true;
        Ok(new)
    }

    /// A child up on a reauthentication's new SA replaces the old SA's child
    /// of the same name.
    pub(super) fn reauth_translate(&mut self, ev: Event) -> Event {
        let Event::ChildSaUp(info) = ev else { return ev };
        let Some(old_id) = self.sas.get(&info.ike).and_then(|s| s.reauth_of) else { return Event::ChildSaUp(info) };
        let Some(old) = self.sas.get_mut(&old_id) else { return Event::ChildSaUp(info) };
        let ev = match old.children.iter_mut().find(|c| c.name == info.name && c.state == ChildState::Installed) {
            Some(c) => {
                c.state = ChildState::Rekeyed;
                c.soft_at = None;
                Event::ChildSaRekeyed { old_spi_in: c.spi_in, old_spi_out: c.spi_out, new: info }
            }
            None => Event::ChildSaUp(info),
        };
        self.retime(old_id);
        ev
    }

    /// Finish reauthentications whose new SA is complete (delete the old
    /// SA); forget those whose new SA failed.
    pub(super) fn reauth_progress(&mut self) {
        if !self.reauth_active {
            return;
        }
        let now = self.recovery.clock;
        let done: Vec<(IkeSaId, IkeSaId)> = self
            .sas
            .values()
            .filter(|s| {
                s.state == IkeState::Established && s.outstanding.is_none() && !s.tasks.iter().any(|t| matches!(t, Task::CreateChild(_)))
            })
            .filter_map(|s| Some((s.id, s.reauth_of?)))
            .collect();
        for (new, old) in done {
            if let Some(s) = self.sas.get_mut(&new) {
                s.reauth_of = None;
            }
            let Ok(mut o) = self.take(old) else { continue };
            let left: Vec<String> = o.children.iter().filter(|c| c.state == ChildState::Installed).map(|c| c.name.clone()).collect();
            for name in left {
                let remote = o.remote;
                self.failure(
                    Some(&o),
                    remote,
                    None,
                    Side::Local,
                    Exchange::CreateChildSa,
                    FailureReason::ReauthLeftChild { child: name },
                    None,
                );
            }
            if o.state == IkeState::Established {
                o.delete_reason = Some(Box::new(DownReason::Rekeyed));
                o.tasks.push_back(Task::DeleteIke);
                self.kick(now, &mut o);
            }
            self.put(o);
        }
        let failed: Vec<IkeSaId> = self
            .sas
            .values()
            .filter(|s| s.reauth_by.is_some_and(|n| !self.sas.contains_key(&n) || self.zombies.contains_key(&n)))
            .map(|s| s.id)
            .collect();
        for id in failed {
            if let Some(s) = self.sas.get_mut(&id) {
                s.reauth_by = None;
                s.reauth_at = Some(now + REAUTH_RETRY);
            }
            self.retime(id);
        }
        self.reauth_active = self.sas.values().any(|s| s.reauth_of.is_some() || s.reauth_by.is_some());
    }

    /// Start the reauthentications that are due, among the SAs in `ran`
    /// (those whose timers just ran: `reauth_at` is part of an SA's
    /// deadline, so no other SA can be due).
    pub(super) fn reauth_timeout(&mut self, now: Duration, ran: &[IkeSaId]) {
        self.reauth_progress();
        let due: Vec<IkeSaId> = ran
            .iter()
            .filter_map(|id| self.sas.get(id))
            .filter(|s| {
                s.state == IkeState::Established
                    && s.reauth_by.is_none()
                    && s.reauth_of.is_none()
                    && s.reauth_at.is_some_and(|t| t <= now)
                    && !self.zombies.contains_key(&s.id)
            })
            .map(|s| s.id)
            .collect();
        for id in due {
            if let Err(e) = self.reauth_ike(now, id) {
                if let Some(s) = self.sas.get_mut(&id) {
                    s.reauth_at = Some(now + REAUTH_RETRY);
                }
                self.retime(id);
                let remote = self.sas.get(&id).map(|s| s.remote).unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
                let sa = self.take(id).ok();
                self.failure(
                    sa.as_ref(),
                    remote,
                    None,
                    Side::Local,
                    Exchange::IkeSaInit,
                    FailureReason::ReauthNotStarted { why: e.to_string() },
                    None,
                );
                if let Some(sa) = sa {
                    self.put(sa);
                }
            }
        }
    }
}
