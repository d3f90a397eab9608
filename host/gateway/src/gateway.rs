//! The gateway proper: connections and their engine drivers, the policy slot,
//! the IKE sockets and the dataplane, behind the operations the control socket
//! offers.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::driver::{self, Cmd, DriverHandle, Env};
use crate::policy::{SaRegistry, SwitchPolicy};
use crate::status::{ConnectionStatus, Status};

/// The running gateway.
pub struct Gateway {
    inner: Arc<Inner>,
}

/// Routing of received IKE datagrams to drivers.
#[derive(Default)]
pub struct Dispatch {
    spis: Arc<driver::SpiTable>,
    routes: RwLock<Vec<driver::Route>>,
    drivers: RwLock<BTreeMap<String, crate::queue::DriverTx>>,
    queues: Arc<crate::queue::Global>,
    /// IKE_SA_INIT admission, consulted before a request reaches a driver.
    gate: Option<crate::admission_gate::Gate>,
}

impl Dispatch {
    pub fn deliver(&self, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) {
        if let Some(g) = &self.gate {
            if !g.admit(local, remote, bytes) {
                return;
            }
        }
        let by_spi = self.spis.lookup(bytes);
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let Some(name) = by_spi.as_deref().or_else(|| driver::route(&routes, local.ip(), remote.ip())) else {
            // An IKE_SA_INIT request carries no SPIr (and we hold no SA for it).
            let init = bytes.len() >= 20 && bytes[8..16] == [0; 8] && bytes[18] == 34;
            tracing::debug!("IKE datagram from {remote}: no connection for this peer address");
            self.queues.count_unrouted(remote, init);
            return;
        };
        let drivers = self.drivers.read().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = drivers.get(name) {
            // Bounded: a full queue (busy engine, flood) drops and counts.
            let _ = tx.datagram(local, remote, bytes);
        }
    }
}

/// `[plugin] workers` when unset.
const DEFAULT_POLICY_WORKERS: usize = 4;
/// How long `status` waits for a driver to list its SAs.
const STATUS_WAIT: Duration = Duration::from_secs(2);

struct Inner {
    config: Mutex<Config>,
    drivers: Mutex<BTreeMap<String, DriverHandle>>,
    dispatch: Arc<Dispatch>,
    policy: Arc<SwitchPolicy>,
    registry: Arc<SaRegistry>,
    env: Env,
    /// `[plugin] on_change` of the config being applied.
    on_change: Mutex<crate::config::OnChange>,
}

impl Inner {
    /// Ask every driver to re-check its live SAs, per `[plugin] on_change`.
    fn recheck(&self, why: &str) {
        let on_change = *self.on_change.lock().unwrap_or_else(|p| p.into_inner());
        if on_change == crate::config::OnChange::Keep {
            tracing::info!("{why}: live SAs kept ([plugin] on_change = \"keep\")");
            return;
        }
        let drivers = self.dispatch.drivers.read().unwrap_or_else(|p| p.into_inner());
        for tx in drivers.values() {
            let _ = tx.send(Cmd::Recheck { why: why.to_string() });
        }
    }
}

pub(crate) fn conn_status(name: &str, c: &crate::config::Connection) -> ConnectionStatus {
    ConnectionStatus {
        name: name.to_string(),
        local_addrs: c.local_addrs.iter().map(|a| a.to_string()).collect(),
        remote_addrs: c.remote_addrs.iter().map(|a| a.to_string()).collect(),
        local_id: c.local_identity().value,
        remote_id: c.remote_id().unwrap_or_default(),
        state: "idle".into(),
        last_error: None,
        ike_sas: Vec::new(),
        sas_unavailable: None,
        queue: Default::default(),
        decisions_waiting: 0,
        parked_dropped: 0,
        local_cert: c.local.credential.as_ref().map(|cred| {
            crate::status::CertStatus::new(
                cred.cert.subject.clone(),
                cred.cert.issuer.clone(),
                cred.cert.not_after,
                crate::driver::unix_now(),
            )
        }),
    }
}

fn bind_ike_sockets(cfg: &Config) -> anyhow::Result<Vec<UdpSocket>> {
    let mut addrs: Vec<IpAddr> = Vec::new();
    for c in cfg.connections.values() {
        if c.local_addrs.is_empty() {
            let v6 = |a: &crate::config::AddrMatch| match a {
                crate::config::AddrMatch::AnyV6 => true,
                crate::config::AddrMatch::Range(a, _) => a.is_ipv6(),
                _ => false,
            };
            let any = if c.remote_addrs.first().is_some_and(v6) {
                IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::from(Ipv4Addr::UNSPECIFIED)
            };
            addrs.push(any);
        }
        addrs.extend(c.local_addrs.iter().copied());
    }
    if addrs.is_empty() {
        addrs.push(IpAddr::from(Ipv4Addr::UNSPECIFIED));
    }
    addrs.sort();
    addrs.dedup();
    // A wildcard of one family covers every specific address of it.
    let has_any4 = addrs.iter().any(|a| a.is_ipv4() && a.is_unspecified());
    let has_any6 = addrs.iter().any(|a| a.is_ipv6() && a.is_unspecified());
    addrs.retain(|a| a.is_unspecified() || !(if a.is_ipv4() { has_any4 } else { has_any6 }));
    addrs
        .into_iter()
        .map(|a| UdpSocket::bind(SocketAddr::new(a, cfg.ike_port)).with_context(|| format!("binding IKE socket {a} port {}", cfg.ike_port)))
        .collect()
}

impl Gateway {
    pub async fn start(cfg: Config) -> anyhow::Result<Gateway> {
        let registry = Arc::new(SaRegistry::default());
        let cfg2 = cfg.clone();
        let reg2 = registry.clone();
        // Compiling the plugin takes a while: off the reactor.
        let policy = tokio::task::spawn_blocking(move || SwitchPolicy::open(&cfg2, reg2)).await.context("plugin load task")??;
        let policy = Arc::new(policy);
        // No OS randomness, no daemon (and no time+pid fallback).
        let adm_seed = driver::seed().context("cannot start")?;
        let epoch = Instant::now();
        let admission = Arc::new(Mutex::new(wisp_ike::admission::Admission::new(cfg.ike.admission(), adm_seed, Duration::ZERO)));
        let gate = crate::admission_gate::Gate::new(admission.clone(), epoch);
        let dispatch = Arc::new(Dispatch { gate: Some(gate), ..Default::default() });
        let d2 = dispatch.clone();
        let sink: crate::dp::IkeSink = Box::new(move |l, r, b| d2.deliver(l, r, b));
        let d3 = dispatch.clone();
        let notice_routes = Arc::new(driver::NoticeRoutes::default());
        let routes2 = notice_routes.clone();
        let notices: crate::dp::NoticeSink = Box::new(move |n| {
            // To the driver holding the Child SA (or trap) only.
            let Some(owner) = routes2.owner(&n) else { return };
            let cmd = match n {
                crate::dp::Notice::Limit { spi_in, event } => Cmd::Limit { spi_in, event },
                crate::dp::Notice::PeerSeen { spi_in, from } => Cmd::PeerSeen { spi_in, from },
                crate::dp::Notice::Acquire { id } => Cmd::Acquire { id },
            };
            let drivers = d3.drivers.read().unwrap_or_else(|p| p.into_inner());
            if let Some(tx) = drivers.get(&*owner) {
                let _ = tx.send(cmd);
            }
        });
        let dataplane = crate::dataplane_glue::start(&cfg, sink, notices).await?;
        let sockets = bind_ike_sockets(&cfg)?;
        if let Some(g) = &dispatch.gate {
            g.set_senders(&sockets, dataplane.clone());
        }
        for s in &sockets {
            let s = s.try_clone()?;
            let d = dispatch.clone();
            std::thread::Builder::new().name("ike-rx".into()).spawn(move || {
                let local_bound = s.local_addr().ok();
                let mut buf = vec![0u8; 65536];
                loop {
                    match s.recv_from(&mut buf) {
                        Ok((n, remote)) => {
                            let local = local_bound.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 500)));
                            d.deliver(local, remote, &buf[..n]);
                        }
                        Err(e) => {
                            tracing::debug!("IKE socket: {e}");
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })?;
        }
        let env = Env {
            epoch,
            policy: policy.clone(),
            registry: registry.clone(),
            dataplane,
            ike_sockets: Arc::new(sockets),
            spis: dispatch.spis.clone(),
            admission,
            spi_pool: Arc::new(wisp_ike::spi_pool::SpiPool::default()),
            notices: notice_routes,
            pools: Arc::new(wisp_ike::pool::Pools::new(cfg.pool_configs.clone())),
            eap_users: cfg.eap_users.clone(),
            dns_hook: crate::dns_hook::DnsHook::new(&cfg.tun.name, cfg.daemon.dns_hook.clone()),
            tun_vips: Default::default(),
            queues: dispatch.queues.clone(),
            decisions: Some(Arc::new(
                wisp_policy::DecisionPool::new(policy.clone(), cfg.plugin.workers.unwrap_or(DEFAULT_POLICY_WORKERS))
                    .context("policy worker threads")?,
            )),
        };
        let gw = Gateway {
            inner: Arc::new(Inner {
                config: Mutex::new(cfg.clone()),
                drivers: Mutex::new(BTreeMap::new()),
                dispatch,
                policy,
                registry,
                env,
                on_change: Mutex::new(cfg.plugin.on_change),
            }),
        };
        gw.apply_connections(&cfg, true).map_err(|e| anyhow::anyhow!(e))?;
        gw.watch_policy_swaps();
        let p = gw.inner.policy.status();
        tracing::info!(plugin = %p.name, version = %p.version, sha256 = %p.sha256, "policy plugin loaded");
        Ok(gw)
    }

    /// Every policy version taking charge (the watcher saw the plugin file
    /// change, or a reload) re-checks live SAs, unless `[plugin] on_change = "keep"`.
    fn watch_policy_swaps(&self) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.policy.on_swap(Arc::new(move |label| {
            if let Some(inner) = weak.upgrade() {
                // Answers of the version before must not be reused.
                if let Some(pool) = &inner.env.decisions {
                    pool.forget_answers();
                }
                inner.recheck(&format!("plugin {label} took charge"));
            }
        }));
    }

    /// Create drivers for new connections, reconfigure changed ones, stop removed ones.
    fn apply_connections(&self, cfg: &Config, initial: bool) -> Result<String, String> {
        let mut engine_confs = BTreeMap::new();
        for (n, c) in &cfg.connections {
            engine_confs.insert(n.clone(), driver::engine_conn(cfg, n, c)?);
        }
        let mut drivers = self.inner.drivers.lock().unwrap_or_else(|p| p.into_inner());
        let removed: Vec<String> = drivers.keys().filter(|k| !cfg.connections.contains_key(*k)).cloned().collect();
        let mut msgs = Vec::new();
        for n in removed {
            if let Some(mut h) = drivers.remove(&n) {
                let (tx, _rx) = oneshot::channel();
                let _ = h.tx.send(Cmd::Shutdown { reply: tx });
                if let Some(t) = h.thread.take() {
                    let _ = t.join();
                }
                msgs.push(format!("removed {n}"));
            }
        }
        for (n, ec) in engine_confs {
            let c = &cfg.connections[&n];
            let st = conn_status(&n, c);
            match drivers.get(&n) {
                Some(h) => {
                    if let Err(e) = h.tx.send(Cmd::Reconfigure { conn: Box::new(ec), status: Box::new(st) }) {
                        msgs.push(format!("{n} not reconfigured: {e}"));
                    }
                }
                None => {
                    let h = driver::spawn(self.inner.env.clone(), ec, st, true).map_err(|e| format!("{e:#}"))?;
                    if !initial {
                        msgs.push(format!("added {n}"));
                    }
                    drivers.insert(n, h);
                }
            }
        }
        let routes: Vec<driver::Route> = cfg
            .connections
            .iter()
            .map(|(n, c)| driver::Route { name: n.clone(), local: c.local_addrs.clone(), remote: c.remote_addrs.clone() })
            .collect();
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[i + 1..] {
                if a.local == b.local && a.remote == b.remote {
                    tracing::warn!(
                        "connections {} and {} accept the same peer addresses: a peer's IKE_SA_INIT goes to {} (the first by name), \
                         which must then also accept its identity; wisp does not yet move a negotiation between connections at \
                         IKE_AUTH. One connection with a remote.id pattern (and the plugin authorizing identities) covers such peers.",
                        a.name,
                        b.name,
                        a.name
                    );
                }
            }
        }
        *self.inner.dispatch.routes.write().unwrap_or_else(|p| p.into_inner()) = routes;
        *self.inner.dispatch.drivers.write().unwrap_or_else(|p| p.into_inner()) =
            drivers.iter().map(|(n, h)| (n.clone(), h.tx.clone())).collect();
        Ok(msgs.join(", "))
    }

    fn send(&self, name: &str, cmd: Cmd) -> Result<(), String> {
        let drivers = self.inner.drivers.lock().unwrap_or_else(|p| p.into_inner());
        match drivers.get(name) {
            Some(h) => h.tx.send(cmd).map_err(|e| format!("connection {name}: {e}")),
            None => Err(format!("no connection named `{name}` (known: {})", drivers.keys().cloned().collect::<Vec<_>>().join(", "))),
        }
    }

    async fn ask(&self, name: &str, timeout: Duration, mk: impl FnOnce(driver::Reply) -> Cmd) -> Result<String, String> {
        let (tx, rx) = oneshot::channel();
        self.send(name, mk(tx))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(format!("connection {name}: driver dropped the request")),
            Err(_) => Err(format!("connection {name}: no result within {}s", timeout.as_secs())),
        }
    }

    pub async fn up(&self, name: &str, timeout: Duration) -> Result<String, String> {
        let (conn, child) = match name.split_once('/') {
            Some((c, ch)) => (c, Some(ch.to_string())),
            None => (name, None),
        };
        self.ask(conn, timeout, |reply| Cmd::Up { child, reply }).await
    }

    pub async fn down(&self, name: &str) -> Result<String, String> {
        self.ask(name, Duration::from_secs(15), |reply| Cmd::Down { reply }).await
    }

    pub async fn rekey(&self, name: &str, ike: bool, child: Option<&str>) -> Result<String, String> {
        let child = child.map(str::to_string);
        self.ask(name, Duration::from_secs(10), |reply| Cmd::Rekey { ike, child, reply }).await
    }

    /// The daemon's status. Each connection's SAs are listed by its driver
    /// (asked all at once, each given [`STATUS_WAIT`]); the rest is read
    /// without the drivers, so it is current even while one is stuck.
    pub async fn status(&self) -> Status {
        let dp = &self.inner.env.dataplane;
        let asked: Vec<(ConnectionStatus, Option<oneshot::Receiver<Vec<crate::status::IkeSaStatus>>>)> = {
            let drivers = self.inner.drivers.lock().unwrap_or_else(|p| p.into_inner());
            drivers
                .values()
                .map(|h| {
                    let mut s = h.status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    s.queue = h.tx.stats().snapshot();
                    let (tx, rx) = oneshot::channel();
                    let sent = h.tx.send(Cmd::Status { reply: tx }).is_ok();
                    (s, sent.then_some(rx))
                })
                .collect()
        };
        let mut connections = Vec::with_capacity(asked.len());
        for (mut s, rx) in asked {
            let listed = match rx {
                Some(rx) => tokio::time::timeout(STATUS_WAIT, rx).await.ok().and_then(Result::ok),
                None => None,
            };
            match listed {
                Some(sas) => s.ike_sas = sas,
                None => {
                    s.sas_unavailable =
                        Some(format!("the connection's driver did not list its SAs within {} s (busy or stuck)", STATUS_WAIT.as_secs()))
                }
            }
            connections.push(s);
        }
        for c in &mut connections {
            for ike in &mut c.ike_sas {
                for ch in &mut ike.children {
                    let (Ok(i), Ok(o)) = (u32::from_str_radix(&ch.spi_in, 16), u32::from_str_radix(&ch.spi_out, 16)) else {
                        continue;
                    };
                    if let Some(k) = dp.child_counters(i, o) {
                        ch.bytes_in = k.bytes_in;
                        ch.packets_in = k.packets_in;
                        ch.bytes_out = k.bytes_out;
                        ch.packets_out = k.packets_out;
                    }
                }
            }
        }
        let mut plugin = self.inner.policy.status();
        if let Some(pool) = &self.inner.env.decisions {
            let st = pool.stats();
            plugin.decisions = crate::status::DecisionStatus {
                workers: pool.workers(),
                asked: st.asked,
                remembered: st.remembered,
                refused: st.refused,
                queued: st.queued,
                running: st.running,
            };
        }
        Status {
            plugin,
            connections,
            dataplane: dp.counters(),
            ike: self.inner.dispatch.gate.as_ref().map(|g| g.counters()).unwrap_or_default(),
            daemon: {
                let mut d = self.inner.dispatch.queues.counters();
                d.push(("dataplane_notices_unrouted".into(), self.inner.env.notices.unrouted()));
                d
            },
            last_unmatched_init: self
                .inner
                .dispatch
                .queues
                .last_unmatched()
                .map(|(a, ago)| crate::status::Unmatched { source: a.to_string(), secs_ago: ago.as_secs() }),
            pools: self
                .inner
                .env
                .pools
                .status()
                .into_iter()
                .map(|p| crate::status::PoolStatus {
                    name: p.name,
                    range: p.range,
                    size: p.size.to_string(),
                    online: p.online,
                    offline: p.offline,
                    leases: p
                        .leases
                        .into_iter()
                        .map(|(a, who, n)| crate::status::LeaseStatus {
                            address: a.to_string(),
                            identity: who.split_once(':').map_or(who.clone(), |(_, v)| v.to_string()),
                            sas: n,
                        })
                        .collect(),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Apply a new config (already parsed): plugin (path, file, settings) and
    /// connections. Live SAs are kept. Runs on a blocking thread.
    pub fn reload(&self, cfg: Config) -> Result<String, String> {
        *self.inner.on_change.lock().unwrap_or_else(|p| p.into_inner()) = cfg.plugin.on_change;
        let plugin = self.inner.policy.reload(&cfg, self.inner.registry.clone())?;
        // Pools whose range is unchanged keep their leases.
        self.inner.env.pools.reconfigure(cfg.pool_configs.clone());
        self.inner.env.eap_users.replace(&cfg.eap_users);
        self.inner.env.dns_hook.set_path(cfg.daemon.dns_hook.clone());
        let conns = self.apply_connections(&cfg, false)?;
        if let Some(g) = &self.inner.dispatch.gate {
            g.set_config(cfg.ike.admission());
        }
        *self.inner.config.lock().unwrap_or_else(|p| p.into_inner()) = cfg;
        // A plugin swap re-checked already; a config reload re-checks anyway.
        self.inner.recheck("config reload");
        Ok(if conns.is_empty() { format!("reloaded: {plugin}") } else { format!("reloaded: {plugin}; {conns}") })
    }

    /// DELETE to every peer, remove SAs and routes.
    pub async fn shutdown(&self) {
        let handles: Vec<(String, DriverHandle)> = {
            let mut d = self.inner.drivers.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *d).into_iter().collect()
        };
        let mut waits = Vec::new();
        for (n, h) in &handles {
            let (tx, rx) = oneshot::channel();
            if h.tx.send(Cmd::Shutdown { reply: tx }).is_ok() {
                waits.push((n.clone(), rx));
            }
        }
        for (n, rx) in waits {
            if tokio::time::timeout(Duration::from_secs(5), rx).await.is_err() {
                tracing::warn!(conn = %n, "driver did not stop in time");
            }
        }
        let dp = self.inner.env.dataplane.clone();
        let _ = tokio::task::spawn_blocking(move || dp.shutdown()).await;
    }
}
