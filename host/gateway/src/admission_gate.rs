//! The dispatcher's IKE_SA_INIT gate: every IKE_SA_INIT request is put to
//! the daemon-wide [`Admission`] before it is queued for a driver, so a
//! flood costs a header check, a hash and (with cookies on) one small
//! answer per datagram: no queue slot, no decode, no plugin call, no DH.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wisp_ike::admission::{is_init_request, Admission, AdmissionConfig, Verdict};

use crate::dp::Dataplane;

/// The sockets cookie answers leave by: each IKE socket with its bound
/// address, and the dataplane for the NAT-T port.
type Senders = (Vec<(SocketAddr, UdpSocket)>, Arc<dyn Dataplane>);

pub struct Gate {
    admission: Arc<Mutex<Admission>>,
    epoch: Instant,
    /// The IKE sockets (port 500) and the dataplane (NAT-T port), for cookie answers.
    senders: OnceLock<Senders>,
    cookie_send_errors: AtomicU64,
}

impl Gate {
    pub fn new(admission: Arc<Mutex<Admission>>, epoch: Instant) -> Gate {
        Gate { admission, epoch, senders: OnceLock::new(), cookie_send_errors: AtomicU64::new(0) }
    }

    /// Where cookie answers go out (set once the sockets exist).
    pub fn set_senders(&self, sockets: &[UdpSocket], dataplane: Arc<dyn Dataplane>) {
        // Each socket with its bound address, read once (not per answer).
        let socks = sockets.iter().filter_map(|s| Some((s.local_addr().ok()?, s.try_clone().ok()?))).collect();
        let _ = self.senders.set((socks, dataplane));
    }

    pub fn set_config(&self, cfg: AdmissionConfig) {
        self.lock().set_config(cfg);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Admission> {
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// `true`: hand the datagram on. IKE_SA_INIT requests are admitted,
    /// answered with a COOKIE, or dropped (counted) here.
    pub fn admit(&self, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) -> bool {
        if !is_init_request(bytes) {
            return true;
        }
        let verdict = self.lock().check_init(self.now(), remote, bytes);
        match verdict {
            Verdict::Admit => true,
            Verdict::Drop(r) => {
                tracing::trace!("IKE_SA_INIT from {remote} dropped: {r:?}");
                false
            }
            Verdict::Cookie(reply) => {
                if self.send(local, remote, &reply).is_err() {
                    self.cookie_send_errors.fetch_add(1, Relaxed);
                }
                false
            }
        }
    }

    fn send(&self, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
        let Some((socks, dp)) = self.senders.get() else {
            return Err(std::io::Error::other("no sockets yet"));
        };
        let sock =
            socks.iter().find(|(a, _)| a.port() == local.port() && (a.ip() == local.ip() || a.ip().is_unspecified())).map(|(_, s)| s);
        match sock {
            Some(s) => s.send_to(bytes, remote).map(|_| ()),
            // Not one of the port-500 sockets: it came in on the NAT-T port.
            None => dp.send_ike(local, remote, bytes),
        }
    }

    /// Counters for `wisp status` (`ike:` line / `"ike"` in JSON).
    pub fn counters(&self) -> Vec<(String, u64)> {
        let mut v = self.lock().stats(self.now()).list();
        v.push(("ike_cookie_send_errors".into(), self.cookie_send_errors.load(Relaxed)));
        v
    }
}
