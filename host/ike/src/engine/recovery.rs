//! Recovery: children the engine brings back by itself.
//!
//! A child is *managed* once the engine initiates it on its own: at
//! [`Engine::start`] (`start_action = start`), or after it went down in a way
//! its config asks to repair:
//!
//! | went down because | config | engine does |
//! |---|---|---|
//! | peer dead (DPD, retransmissions exhausted) | `dpd_action = restart` | initiate again now |
//! | peer dead | `dpd_action = trap` | [`Event::TrapWanted`] |
//! | peer's DELETE (child or IKE SA) | `close_action = start` | initiate again now |
//! | peer's DELETE | `close_action = trap` | [`Event::TrapWanted`] |
//! | hard lifetime, failed rekey | `start_action = start` | initiate again now |
//!
//! A managed initiation that fails (the IKE SA or the CREATE_CHILD_SA fails,
//! or its IKE SA is gone before the child came up) is tried again after 1 s,
//! 2 s, 4 s, ... (at most 60 s) until the connection's `keyingtries` are
//! used up (0: forever). Deleting locally, revocation by the policy and
//! rekeying never restart anything.
//!
//! The engine sees events as the caller polls them ([`Engine::poll_event`]);
//! restarts are timers like any other ([`Engine::poll_timeout`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::{CloseAction, DpdAction, StartAction};
use crate::event::{DownReason, Event, Exchange, Failure, FailureReason, IkeSaId, Side};

use super::sa::ChildState;
use super::{Engine, EngineError};

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// (connection, child) names: stable across reconfiguration.
type Key = (String, String);

#[derive(Default)]
pub(super) struct Recovery {
    /// The latest time the caller gave the engine.
    pub(super) clock: Duration,
    /// Managed children waiting for their next try: when, and which try.
    due: BTreeMap<Key, (Duration, u32)>,
    /// Managed initiations under way: the IKE SA carrying them, which try.
    inflight: BTreeMap<Key, (IkeSaId, u32)>,
}

fn backoff(attempt: u32) -> Duration {
    BACKOFF_FIRST.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(BACKOFF_MAX)
}

impl Engine {
    pub(super) fn tick(&mut self, now: Duration) {
        self.recovery.clock = self.recovery.clock.max(now);
    }

    /// The earliest managed retry.
    pub(super) fn recovery_deadline(&self) -> Option<Duration> {
        self.recovery.due.values().map(|(at, _)| *at).min()
    }

    /// Initiate `child` of `conn` as a managed child (try `attempt`).
    pub(super) fn managed_initiate(&mut self, now: Duration, conn: &str, child: &str, attempt: u32) {
        let key = (conn.to_string(), child.to_string());
        match self.initiate_child(now, conn, child) {
            Ok(ike) => {
                self.recovery.inflight.insert(key, (ike, attempt));
            }
            Err(EngineError::Limit(reason)) => {
                self.recovery_failed(key, attempt, &FailureReason::CannotInitiate { why: reason });
            }
            // No remote address, unknown child (config changed): nothing to retry.
            Err(e) => self.recovery_note(conn, FailureReason::NotBroughtBack { child: child.to_string(), why: e.to_string() }),
        }
    }

    /// Look at an event on its way to the caller.
    pub(super) fn observe(&mut self, ev: &Event) {
        match ev {
            Event::ChildSaUp(c) => {
                let key = (c.connection.clone(), c.name.clone());
                self.recovery.inflight.remove(&key);
                self.recovery.due.remove(&key);
            }
            Event::ChildSaDown { connection, name, reason, .. } => self.child_went_down(connection, name, reason),
            Event::Failure(f) => {
                if let Some(ike) = f.ike {
                    let failed: Vec<(Key, u32)> =
                        self.recovery.inflight.iter().filter(|(_, (i, _))| *i == ike).map(|(k, (_, a))| (k.clone(), *a)).collect();
                    for (key, attempt) in failed {
                        self.recovery.inflight.remove(&key);
                        self.recovery_failed(key, attempt, &f.reason);
                    }
                }
            }
            _ => {}
        }
    }

    fn child_went_down(&mut self, conn: &str, child: &str, reason: &DownReason) {
        let Some(cfg) = self.config.connections.iter().find(|c| c.name == conn).and_then(|c| c.child(child)) else { return };
        enum Act {
            Restart,
            Trap,
        }
        let act = match reason {
            DownReason::Timeout => match cfg.dpd_action {
                DpdAction::Restart => Some(Act::Restart),
                DpdAction::Trap => Some(Act::Trap),
                DpdAction::Clear => None,
            },
            DownReason::RemoteDelete => match cfg.close_action {
                CloseAction::Start => Some(Act::Restart),
                CloseAction::Trap => Some(Act::Trap),
                CloseAction::None => None,
            },
            DownReason::Expired | DownReason::Failed(_) if cfg.start_action == StartAction::Start => Some(Act::Restart),
            _ => None,
        };
        match act {
            Some(Act::Restart) => {
                let key = (conn.to_string(), child.to_string());
                if !self.recovery.inflight.contains_key(&key) && !self.child_is_up(conn, child) {
                    let at = self.recovery.clock;
                    self.recovery.due.insert(key, (at, 1));
                }
            }
            Some(Act::Trap) => self.events.push_back(Event::TrapWanted { connection: conn.to_string(), child: child.to_string() }),
            None => {}
        }
    }

    /// A managed try failed: schedule the next one or give up.
    fn recovery_failed(&mut self, key: Key, attempt: u32, why: &FailureReason) {
        let Some(c) = self.config.connections.iter().find(|c| c.name == key.0) else { return };
        if c.keyingtries != 0 && attempt >= c.keyingtries {
            let reason = FailureReason::GaveUp { child: key.1.clone(), attempt, keyingtries: c.keyingtries, why: Box::new(why.clone()) };
            self.recovery_note(&key.0, reason);
            return;
        }
        let at = self.recovery.clock + backoff(attempt);
        self.recovery.due.insert(key, (at, attempt + 1));
    }

    fn recovery_note(&mut self, conn: &str, reason: FailureReason) {
        let remote = self
            .config
            .connections
            .iter()
            .find(|c| c.name == conn)
            .and_then(|c| c.initiate_to())
            .map(|a| std::net::SocketAddr::new(a, 500))
            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        self.events.push_back(Event::Failure(Failure {
            ike: None,
            connection: Some(conn.to_string()),
            side: Side::Local,
            exchange: Exchange::IkeSaInit,
            reason,
            notify: None,
            remote,
        }));
    }

    fn child_is_up(&self, conn: &str, child: &str) -> bool {
        self.sas.iter().any(|(id, s)| {
            !self.zombies.contains_key(id)
                && self.config.connections[s.conn].name == conn
                && s.children.iter().any(|c| c.name == child && c.state != ChildState::Rekeyed && c.state != ChildState::Deleting)
        })
    }

    /// Timers: managed initiations whose IKE SA vanished without a word
    /// count as failed; due retries start.
    pub(super) fn recovery_timeout(&mut self, now: Duration) {
        let vanished: Vec<(Key, u32)> = self
            .recovery
            .inflight
            .iter()
            .filter(|(_, (ike, _))| !self.sas.contains_key(ike) || self.zombies.contains_key(ike))
            .map(|(k, (_, a))| (k.clone(), *a))
            .collect();
        for (key, attempt) in vanished {
            self.recovery.inflight.remove(&key);
            self.recovery_failed(key, attempt, &FailureReason::IkeSaGone);
        }
        let ready: Vec<(Key, u32)> =
            self.recovery.due.iter().filter(|(_, (at, _))| *at <= now).map(|(k, (_, a))| (k.clone(), *a)).collect();
        for ((conn, child), attempt) in ready {
            self.recovery.due.remove(&(conn.clone(), child.clone()));
            if self.child_is_up(&conn, &child) {
                continue;
            }
            self.managed_initiate(now, &conn, &child, attempt);
        }
    }

    /// Names of the children waiting for a managed retry, with the try number
    /// (for status and tests).
    pub fn pending_restarts(&self) -> Vec<(String, String, u32)> {
        self.recovery.due.iter().map(|((c, ch), (_, a))| (c.clone(), ch.clone(), *a)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_to_a_minute() {
        let s: Vec<u64> = (1..=9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(s, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(60));
    }
}
