//! Drives a `wisp_ike::Engine` over real UDP sockets inside a namespace.
//!
//! A driver thread (moved into the namespace) owns the engine and two UDP
//! sockets, `local:500` and `local:4500`. It feeds received IKE datagrams to the
//! engine (stripping the 4-byte non-ESP marker on 4500; NAT keepalives and ESP
//! are counted and dropped: ESP is not this driver's job), sends the engine's
//! transmits (adding the marker when asked), runs its timers, forwards events to
//! the test, and executes closures the test sends ([`EngineDriver::call`]).

use crate::err;
use crate::netns::Netns;
use crate::util::Result;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wisp_ike::engine::Engine;
use wisp_ike::event::Event;

type Cmd = Box<dyn FnOnce(&mut Engine, Duration) + Send>;

/// Counters kept by the driver loop.
#[derive(Debug, Default)]
pub struct DriverStats {
    pub ike_in: AtomicU64,
    pub ike_out: AtomicU64,
    pub esp_in: AtomicU64,
    pub keepalive_in: AtomicU64,
}

/// Handle to a running driver. Dropping it stops the thread.
pub struct EngineDriver {
    cmds: Sender<Cmd>,
    events: Receiver<Event>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub stats: Arc<DriverStats>,
    /// Every event seen by [`EngineDriver::wait_event`] so far (in order).
    pub seen: Vec<Event>,
}

fn poll2(a: &UdpSocket, b: &UdpSocket, timeout: Duration) {
    let mut fds = [
        libc::pollfd { fd: a.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: b.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    let ms = timeout.as_millis().min(1000) as i32;
    // SAFETY: fds is a valid array of 2 pollfd for the duration of the call.
    unsafe {
        libc::poll(fds.as_mut_ptr(), 2, ms);
    }
}

impl EngineDriver {
    /// Start the driver in `ns`, bound to `local` ports 500 and 4500. `make`
    /// builds the engine on the driver thread.
    pub fn spawn(ns: &Netns, local: IpAddr, make: impl FnOnce() -> Engine + Send + 'static) -> Result<EngineDriver> {
        let (cmd_tx, cmd_rx) = channel::<Cmd>();
        let (ev_tx, ev_rx) = channel::<Event>();
        let (ready_tx, ready_rx) = channel::<Result<()>>();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(DriverStats::default());
        let (stop2, stats2) = (stop.clone(), stats.clone());
        let thread = ns.spawn(move || {
            let bind = |port| UdpSocket::bind(SocketAddr::new(local, port));
            let (s500, s4500) = match (bind(500), bind(4500)) {
                (Ok(a), Ok(b)) => (a, b),
                (a, b) => {
                    let _ = ready_tx.send(Err(err!("bind {local}:500/4500: {:?} {:?}", a.err(), b.err())));
                    return;
                }
            };
            let _ = s500.set_nonblocking(true);
            let _ = s4500.set_nonblocking(true);
            let mut engine = make();
            let _ = ready_tx.send(Ok(()));
            let epoch = Instant::now();
            let mut buf = vec![0u8; 65536];
            while !stop2.load(Ordering::Relaxed) {
                let now = epoch.elapsed();
                let wait = engine
                    .poll_timeout()
                    .map(|d| d.saturating_sub(now))
                    .unwrap_or(Duration::from_millis(10))
                    .min(Duration::from_millis(10));
                poll2(&s500, &s4500, wait);
                let now = epoch.elapsed();
                for (sock, port) in [(&s500, 500u16), (&s4500, 4500u16)] {
                    while let Ok((n, from)) = sock.recv_from(&mut buf) {
                        let d = &buf[..n];
                        let l = SocketAddr::new(local, port);
                        if port == 500 {
                            stats2.ike_in.fetch_add(1, Ordering::Relaxed);
                            engine.handle_datagram(now, l, from, d);
                        } else if n == 1 && d[0] == 0xff {
                            stats2.keepalive_in.fetch_add(1, Ordering::Relaxed);
                        } else if n >= 4 && d[..4] == [0, 0, 0, 0] {
                            stats2.ike_in.fetch_add(1, Ordering::Relaxed);
                            engine.handle_datagram(now, l, from, &d[4..]);
                        } else {
                            stats2.esp_in.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                while let Ok(cmd) = cmd_rx.try_recv() {
                    cmd(&mut engine, now);
                }
                if engine.poll_timeout().is_some_and(|d| d <= now) {
                    engine.handle_timeout(now);
                }
                while let Some(t) = engine.poll_transmit() {
                    let sock = if t.local.port() == 500 { &s500 } else { &s4500 };
                    let mut out = Vec::with_capacity(t.bytes.len() + 4);
                    if t.non_esp_marker {
                        out.extend_from_slice(&[0, 0, 0, 0]);
                    }
                    out.extend_from_slice(&t.bytes);
                    if sock.send_to(&out, t.remote).is_ok() {
                        stats2.ike_out.fetch_add(1, Ordering::Relaxed);
                    }
                }
                while let Some(ev) = engine.poll_event() {
                    let _ = ev_tx.send(ev);
                }
            }
        })?;
        ready_rx.recv().map_err(|_| err!("engine driver thread died"))??;
        Ok(EngineDriver { cmds: cmd_tx, events: ev_rx, stop, thread: Some(thread), stats, seen: Vec::new() })
    }

    /// Run `f` on the driver thread with the engine and the current `now`.
    pub fn call<T: Send + 'static>(&self, f: impl FnOnce(&mut Engine, Duration) -> T + Send + 'static) -> Result<T> {
        let (tx, rx) = channel();
        self.cmds
            .send(Box::new(move |e, now| {
                let _ = tx.send(f(e, now));
            }))
            .map_err(|_| err!("engine driver stopped"))?;
        rx.recv_timeout(Duration::from_secs(10)).map_err(|_| err!("engine driver did not answer"))
    }

    /// Wait for the next event matching `pred` (others are recorded in `seen`).
    pub fn wait_event(&mut self, timeout: Duration, mut pred: impl FnMut(&Event) -> bool) -> Result<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(ev) => {
                    self.seen.push(ev.clone());
                    if pred(&ev) {
                        return Ok(ev);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return Err(err!("no matching engine event within {timeout:?}; seen: {:#?}", self.seen)),
                Err(RecvTimeoutError::Disconnected) => return Err(err!("engine driver stopped")),
            }
        }
    }

    /// Collect events arriving within `d` (recorded in `seen` too).
    pub fn drain(&mut self, d: Duration) -> Vec<Event> {
        let deadline = Instant::now() + d;
        let mut v = Vec::new();
        while let Ok(ev) = self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.seen.push(ev.clone());
            v.push(ev);
        }
        v
    }
}

impl Drop for EngineDriver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
