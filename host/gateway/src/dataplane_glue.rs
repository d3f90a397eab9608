//! Connects the engine drivers to the dataplane (`crate::dataplane`, owned by
//! the ESP side): translates the engine's Child SA events into dataplane specs.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use wisp_esp::{Aead, Keymat, Limits};
use wisp_ike::event::{ChildSaInfo, EspCipher};

use crate::config::Config;
use crate::dataplane::{self, ChildSaSpec, DataplaneConfig, DataplaneEvent};
use crate::dp::{ChildCounters, Dataplane, IkeSink, Notice, NoticeSink};
use wisp_policy_api::TrafficSelector;

/// The NAT-T socket: IPv4 only unless a connection has an IPv6 address, then
/// one dual-stack `[::]` socket (IPv4 peers appear as v4-mapped addresses).
/// Binding `[::]` only when needed keeps hosts with IPv6 disabled working.
fn natt_listen(cfg: &Config) -> SocketAddr {
    let v6 = cfg.connections.values().any(|c| {
        c.local_addrs.iter().any(|a| a.is_ipv6())
            || c.remote_addrs
                .iter()
                .any(|a| matches!(a, crate::config::AddrMatch::AnyV6 | crate::config::AddrMatch::Range(std::net::IpAddr::V6(_), _)))
    });
    if v6 {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, cfg.natt_port))
    } else {
        SocketAddr::from(([0, 0, 0, 0], cfg.natt_port))
    }
}

/// Start the dataplane for `cfg` in the current network namespace.
pub async fn start(cfg: &Config, sink: IkeSink, notices: NoticeSink) -> anyhow::Result<Arc<dyn Dataplane>> {
    let dcfg = DataplaneConfig {
        tun_name: cfg.tun.name.clone(),
        mtu: cfg.tun.mtu,
        tun_addrs: cfg.tun.addrs.iter().map(|a| (a.addr, a.prefix)).collect(),
        listen: natt_listen(cfg),
        tun_kind: match cfg.tun.io {
            crate::config::TunIo::Offload => dataplane::TunKind::Offload,
            crate::config::TunIo::Plain => dataplane::TunKind::Plain,
            crate::config::TunIo::TokioTun => dataplane::TunKind::TokioTun,
        },
        ..Default::default()
    };
    let ev: dataplane::EventSink = Box::new(move |e: DataplaneEvent| match e {
        DataplaneEvent::Limit { spi_in, event, .. } => notices(Notice::Limit { spi_in, event }),
        DataplaneEvent::PeerSeen { spi_in, from, .. } => notices(Notice::PeerSeen { spi_in, from }),
        DataplaneEvent::Acquire { id } => notices(Notice::Acquire { id }),
    });
    let dp = tokio::task::spawn_blocking(move || dataplane::Dataplane::start(dcfg, sink, ev))
        .await
        .context("dataplane start task")?
        .context("starting the dataplane (TUN device, UDP socket)")?;
    let (tun_offload, udp_gro) = dp.offloads();
    tracing::info!(tun = %dp.tun_name(), listen = %dp.local_addr(), tun_offload, udp_gro, "dataplane running");
    Ok(Arc::new(Esp(dp)))
}

struct Esp(dataplane::Dataplane);

fn spec(sa: &ChildSaInfo) -> anyhow::Result<ChildSaSpec> {
    let aead = match sa.algorithms.cipher {
        EspCipher::AesGcm16 { key_bits: 128 } => Aead::AesGcm128,
        EspCipher::AesGcm16 { key_bits: 256 } => Aead::AesGcm256,
        EspCipher::ChaCha20Poly1305 => Aead::ChaCha20Poly1305,
        other => anyhow::bail!("the dataplane does not implement {other}"),
    };
    let lt = &sa.lifetimes;
    let limits = Limits {
        soft_packets: lt.soft_packets.unwrap_or(u64::MAX),
        hard_packets: lt.hard_packets.unwrap_or(u64::MAX),
        soft_bytes: lt.soft_bytes.unwrap_or(u64::MAX),
        hard_bytes: lt.hard_bytes.unwrap_or(u64::MAX),
        ..Limits::default()
    };
    let peer = if sa.remote.port() == 500 { SocketAddr::new(sa.remote.ip(), 4500) } else { sa.remote };
    Ok(ChildSaSpec {
        spi_in: sa.spi_in,
        spi_out: sa.spi_out,
        aead,
        esn: sa.algorithms.esn,
        key_in: Keymat::new(sa.key_in.as_bytes()),
        key_out: Keymat::new(sa.key_out.as_bytes()),
        local_ts: sa.local_ts.clone(),
        remote_ts: sa.remote_ts.clone(),
        peer,
        limits,
    })
}

impl Dataplane for Esp {
    fn install_child(&self, sa: &ChildSaInfo) -> anyhow::Result<()> {
        Ok(self.0.install_child(spec(sa)?)?)
    }
    fn rekey_child(&self, old_spi_in: u32, old_spi_out: u32, new: &ChildSaInfo) -> anyhow::Result<()> {
        Ok(self.0.replace_child(old_spi_in, old_spi_out, spec(new)?)?)
    }
    fn install_trap(&self, id: u64, local_ts: &[TrafficSelector], remote_ts: &[TrafficSelector]) -> anyhow::Result<()> {
        Ok(self.0.install_trap(id, local_ts.to_vec(), remote_ts.to_vec())?)
    }
    fn remove_trap(&self, id: u64) -> anyhow::Result<()> {
        Ok(self.0.remove_trap(id)?)
    }
    fn update_peer(&self, spi_in: u32, spi_out: u32, peer: SocketAddr) -> anyhow::Result<()> {
        let peer = if peer.port() == 500 { SocketAddr::new(peer.ip(), 4500) } else { peer };
        Ok(self.0.update_peer(spi_in, spi_out, peer)?)
    }
    fn remove_child(&self, spi_in: u32, spi_out: u32) -> anyhow::Result<()> {
        Ok(self.0.remove_child(spi_in, spi_out)?)
    }
    fn child_counters(&self, spi_in: u32, spi_out: u32) -> Option<ChildCounters> {
        self.0.child_counters(spi_in, spi_out).map(|c| ChildCounters {
            bytes_in: c.inbound.bytes,
            packets_in: c.inbound.packets,
            bytes_out: c.outbound.bytes,
            packets_out: c.outbound.packets,
        })
    }
    fn send_ike(&self, _local: SocketAddr, remote: SocketAddr, ike: &[u8]) -> std::io::Result<()> {
        self.0.send_ike(remote, ike)
    }
    fn add_address(&self, a: std::net::IpAddr) -> anyhow::Result<()> {
        Ok(self.0.add_address(a)?)
    }
    fn remove_address(&self, a: std::net::IpAddr) -> anyhow::Result<()> {
        Ok(self.0.remove_address(a)?)
    }
    fn counters(&self) -> Vec<(String, u64)> {
        self.0.counters_list()
    }
    fn shutdown(&self) {
        self.0.shutdown()
    }
}
